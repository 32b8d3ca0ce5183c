/* engine/gen — one generation loop: prompt → prefill in slices → sample → UTF-8-safe text →
 * stop string / EOS / length.  Driven one step at a time, so that a scheduler can interleave
 * requests and cancel between steps, or run to the end with lh_gen_run (the tools, the tests).
 *
 * Text rules (the daemon's protocol promises them): the text handed out is valid UTF-8 (a token
 * that ends mid-character is held back until the character completes; invalid bytes become
 * U+FFFD); text that may be the start of a stop string is held back until it is known not to
 * be, and a stop string found ends the generation before it (it is never handed out); the
 * leading space of the first piece after BOS (SentencePiece's dummy prefix) is dropped; EOS or
 * BOS ends the generation (llama2.c's rule) and is not counted.
 *
 * Users: the daemon's scheduler (Generate and Chat, one step per turn of its loop),
 * longheads-run, the tests; so they all give the same text for the same request.
 *
 * Ownership: the caller owns the context (its KV cache outlives the generation: the prompt
 * cache) and the tokenizer; lh_gen copies the prompt and the stop strings.  Text pointers stay
 * valid until the next call on the same lh_gen.
 */
#ifndef LH_GEN_H
#define LH_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "sampler.h"

typedef struct lh_gen lh_gen;

typedef struct {
    size_t max_tokens;          /* 0: until EOS or the context is full */
    const char *const *stop;    /* n_stop non-empty strings */
    size_t n_stop;
    lh_sampler_params sp;
    int reuse;                  /* keep the context's cached tokens that start the prompt */
} lh_gen_params;

typedef enum {
    LH_GEN_MORE = 0,   /* not finished */
    LH_GEN_EOS,        /* the model produced an end-of-generation token (or BOS) */
    LH_GEN_STOP,       /* a stop string was produced */
    LH_GEN_LENGTH,     /* max_tokens produced, or the context is full */
} lh_gen_end;

/* A generation of prompt (n tokens, n >= 1) on ctx.  With p->reuse, the longest common prefix
 * of the cache and the prompt is kept (the last prompt token is always evaluated: its logits
 * give the first sample).  Returns 0, -EINVAL (empty prompt, prompt not shorter than the
 * context, empty stop string), -ENOMEM. */
int lh_gen_new(lh_gen **gp, lh_ctx *ctx, const lh_tok *tok, const lh_gen_params *p,
               const int32_t *prompt, size_t n);
void lh_gen_free(lh_gen *g);

size_t lh_gen_n_prompt(const lh_gen *g);
size_t lh_gen_n_reused(const lh_gen *g);     /* prompt tokens taken from the cache */
size_t lh_gen_n_done(const lh_gen *g);       /* prompt tokens in the cache so far */
size_t lh_gen_n_generated(const lh_gen *g);

/* Evaluates up to max_n more prompt tokens (0: the context's batch).  *donep = 1 once the whole
 * prompt is in (then the first token has been sampled).  A scheduler bounds max_n to keep its
 * slices short and stops a slice early with the context's abort hook (lh_ctx_set_abort): then
 * LH_E_CANCELLED, nothing more counted as done, and the generation can only be freed (the
 * context keeps the complete slices for the prompt cache).  Returns 0 or the engine's error
 * (LH_E_LIMIT, LH_E_FORMAT, LH_E_CANCELLED, -errno). */
int lh_gen_prefill(lh_gen *g, size_t max_n, int *donep);

/* One decode step after the prefill: takes the sampled token; if it does not end the generation,
 * its text joins the stream, the token is evaluated and the next one sampled.  *tokenp: the
 * token (-1 when none was taken: EOS); *textp and *lenp: text that may be shown now (often empty);
 * *endp: why it ended, or LH_GEN_MORE.  Returns 0 or the engine's error (-ENOMEM, ...). */
int lh_gen_step(lh_gen *g, int32_t *tokenp, const char **textp, size_t *lenp, lh_gen_end *endp);

/* The text stage alone: n bytes as if a token had produced them (tests; callers with text from
 * elsewhere).  *textp and *lenp: what may be shown now; *stopp = 1 when a stop string completed
 * (the generation has then ended with LH_GEN_STOP).  Returns 0 or -ENOMEM. */
int lh_gen_feed(lh_gen *g, const char *bytes, size_t n, const char **textp, size_t *lenp,
                int *stopp);

/* After the end (any reason but STOP): the text still held back, an incomplete character as
 * U+FFFD.  After a stop string: "" (the text before it was already handed out). */
const char *lh_gen_flush(lh_gen *g, size_t *lenp);

/* The whole loop: prefill, then steps until the end; on_text (may be NULL) gets each piece of
 * text as it may be shown, the flushed tail included.  Returns 0 or an error as above. */
typedef void (*lh_gen_text_fn)(void *ud, const char *text, size_t len);
int lh_gen_run(lh_gen *g, lh_gen_text_fn on_text, void *ud, lh_gen_end *endp);

/* log p(target) under logits (n_vocab), in double precision (Score, perplexity). */
double lh_gen_logprob(const float *logits, size_t n_vocab, int32_t target);

#endif
