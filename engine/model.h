/* engine/model — a LLaMA-family model from a GGUF file, and the contexts that run it.
 *
 * Lifetimes (llama2.c's split): lh_model holds the hyper-parameters, the tokenizer and the
 * weights (pointers into the GGUF mapping, kept in their file type), immutable after
 * lh_model_open and shareable by any number of contexts.  lh_ctx is one sequence being run:
 * its KV cache, LongHeads state and all scratch, sized once in lh_ctx_new so that lh_ctx_eval
 * never allocates.
 *
 * Architecture: token embedding, n_layer × [RMSNorm → Q,K,V (+ biases when the file has them;
 * qwen2 always) → RoPE (llama's adjacent-pair layout; qwen2's NeoX layout is permuted into it) with
 * the model's frequency factors and scaling → grouped-query attention (full or LongHeads) → output
 * projection (+ bias) → residual, RMSNorm → SwiGLU FFN (+ biases) → residual], final RMSNorm,
 * classifier (tied to the embedding when output.weight is absent; + output.bias when present).
 * Prefill runs a batch of tokens through matrix-matrix products; decode is the same path with
 * n = 1.
 */
#ifndef LH_MODEL_H
#define LH_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include "ops.h"
#include "quant.h"
#include "tokenizer.h"

/* The architectures: llama (Llama 1/2/3.x, Mistral 7B, TinyLlama, SmolLM, ...; optional
 * biases, tied output, Llama 3.1+'s rope_freqs) and qwen2 (Q/K/V biases, NeoX RoPE layout). */
typedef enum { LH_ARCH_LLAMA = 0, LH_ARCH_QWEN2 = 1 } lh_arch;

typedef struct {
    lh_arch arch;
    size_t n_vocab, n_embd, n_ff, n_layer, n_head, n_head_kv;
    size_t head_dim;       /* attention.key_length, else n_embd / n_head */
    size_t n_rot;          /* rope.dimension_count, else head_dim */
    size_t n_ctx_train;
    float rms_eps;
    lh_rope rope;          /* rope.freq_base, rope.scaling.{type,factor,attn_factor,
                            * original_context_length}, rope_freqs.weight (freq_factors points
                            * into the model: valid while it is open) */
    int rope_neox;         /* qwen2: rotated pairs are (i, i + n_rot/2); the forward permutes q and
                            * k into llama's adjacent pairs (lh_ops_neox_to_pairs) */
    size_t lh_chunk, lh_window; /* LongHeads defaults the file suggests (longheads.chunk_size,
                                 * longheads.window), 0 when absent */
} lh_hparams;

typedef enum { LH_ATTN_FULL = 0, LH_ATTN_LONGHEADS = 1 } lh_attn_mode;
/* How LongHeads scores chunks (kernels/longheads.h lh_lh_score): the paper's representations, or
 * the upper bound of q·k from the keys' min and max. */
typedef enum { LH_SCORE_REP = 0, LH_SCORE_BOUND = 1 } lh_score_mode;
/* How the bound score's top chunks are found (kernels/longheads.h branch_and_bound): by scoring
 * every chunk, or by branch and bound over a search tree; the same chunks either way. */
typedef enum { LH_SELECT_FLAT = 0, LH_SELECT_TREE = 1 } lh_select_mode;

typedef struct {
    size_t n_ctx;          /* KV capacity in tokens (default: n_ctx_train; up to >= 131072) */
    size_t n_batch;        /* max tokens per forward (prefill slice), default 512 */
    lh_type kv_type;       /* LH_TYPE_F32 (default; the front ends': F16) or LH_TYPE_F16 */
    lh_attn_mode attn;     /* default LH_ATTN_FULL */
    size_t chunk;          /* LongHeads w (0: the file's longheads.chunk_size, else 256, capped
                            * so that window/chunk >= 2) */
    size_t window;         /* LongHeads L (0: the file's longheads.window, else n_ctx_train
                            * rounded down to a multiple of chunk) */
    const char *kv_dir;    /* NULL: the KV cache in anonymous memory; else in an unnamed file in
                            * this directory (engine/kvfile.h; the context copies the string),
                            * and n_ctx is rounded up so that its segments start on pages */
    size_t kv_budget;      /* with kv_dir: resident bytes of the KV mapping before they are
                            * dropped (0: never) */
    size_t kv_disk_reserve;/* with kv_dir: bytes of its file system that lh_params_fit_ctx leaves
                            * to others (the daemon's prompt cache when it shares it) */
    lh_score_mode score;   /* LongHeads chunk score, default LH_SCORE_REP */
    lh_select_mode select; /* with LH_SCORE_BOUND, default LH_SELECT_FLAT */
    size_t recent;         /* LongHeads: the last chunks every head keeps, the current one
                            * included, 1 .. window/chunk - 1 (0: the paper's 2; resolved) */
} lh_ctx_params;

typedef struct lh_model lh_model;
typedef struct lh_ctx lh_ctx;

/* Loads and validates.  Returns 0, LH_E_FORMAT (logged: file, what is wrong),
 * LH_E_UNSUPPORTED (logged with its name: an architecture other than llama/qwen2, mixture of
 * experts, a RoPE scaling other than none/linear/yarn, a tensor type not handled), -errno. */
int lh_model_open(lh_model **mp, const char *path);   /* lh_model_open_ex(.., LH_WEIGHTS_AUTO) */

/* How the weights are held (the front ends' --mmap / --no-mmap, as llama.cpp's).  AUTO: read into
 * memory when the file is at most half of the memory available now (MemAvailable), else mapped;
 * MAP: the file mapped (starts faster, shares the page cache); LOAD: read into memory or fail.
 * Read into memory, a decode step streams the weights faster (engine/gguf.h). */
typedef enum { LH_WEIGHTS_AUTO = 0, LH_WEIGHTS_MAP, LH_WEIGHTS_LOAD } lh_weights_hold;
int lh_model_open_ex(lh_model **mp, const char *path, lh_weights_hold hold);
/* "auto", "load" or "map": 0, or LH_E_FORMAT (not logged). */
int lh_weights_hold_parse(const char *s, lh_weights_hold *out);
/* 1 when the weights were read into memory, 0 when the file is mapped. */
int lh_model_weights_loaded(const lh_model *m);
/* The memory available now (MemAvailable) in bytes, 0 when it cannot be read. */
size_t lh_mem_available(void);
void lh_model_close(lh_model *m);
const lh_hparams *lh_model_hparams(const lh_model *m);
const lh_tok *lh_model_tok(const lh_model *m);
/* A one-line description ("llama, 5 layers, dim 64, ... F32, 260K params") for logs and Info. */
const char *lh_model_desc(const lh_model *m);
const char *lh_model_path(const lh_model *m);
/* The file's metadata (keys the engine does not interpret, e.g. tokenizer.chat_template). */
const lh_gguf *lh_model_gguf(const lh_model *m);
size_t lh_model_n_params(const lh_model *m);
const char *lh_model_arch_name(const lh_model *m);

/* End of generation, as llama.cpp decides it: the vocabulary's set (lh_tok_is_eog: eos, eot, eom,
 * and the tokens spelled <|eot_id|>, <|im_end|>, <|endoftext|>, <end_of_turn>, ...) and the
 * fill-in-the-middle pad/rep/sep ids (tokenizer.ggml.fim_*_token_id).  Generation stops on any. */
int lh_model_is_eog(const lh_model *m, int32_t id);
/* The end-of-generation ids, ascending: *idsp gets the array, the count is returned. */
size_t lh_model_eog_ids(const lh_model *m, const int32_t **idsp);

void lh_ctx_params_default(lh_ctx_params *p);
/* Resolves the defaults in *p (when p is not const-qualified by the caller, pass a copy).
 * Returns 0, -EINVAL (bad chunk/window/n_ctx, logged), -ENOMEM. */
int lh_ctx_new(lh_ctx **cp, const lh_model *m, const lh_ctx_params *p);
void lh_ctx_free(lh_ctx *c);
const lh_ctx_params *lh_ctx_params_get(const lh_ctx *c);  /* with defaults resolved */
const lh_model *lh_ctx_model(const lh_ctx *c);             /* the model it was made for */
size_t lh_ctx_n_past(const lh_ctx *c);
/* Forget everything after the first n_keep tokens; returns how many were kept (LongHeads may
 * round down to a chunk boundary; see lh_lh_truncate). */
size_t lh_ctx_truncate(lh_ctx *c, size_t n_keep);
/* The tokens currently in the cache (for prompt reuse): pointer to n_past ids. */
const int32_t *lh_ctx_tokens(const lh_ctx *c);

/* Run n tokens at positions n_past .. n_past+n-1 (n may exceed n_batch: processed in slices).
 * logits: NULL, or (n_vocab) for the last token, or (n, n_vocab) when all != 0.
 * Returns 0, LH_E_LIMIT (context full: nothing run), LH_E_FORMAT (token id out of range),
 * LH_E_CANCELLED (stopped by the abort check, see lh_ctx_set_abort), and with kv_dir -ENOSPC,
 * -EFBIG or another -errno when the KV file cannot grow (logged; the slices before it are
 * kept). */
int lh_ctx_eval(lh_ctx *c, const int32_t *tokens, size_t n, float *logits, int all);

/* Lets a caller stop a long lh_ctx_eval inside a slice: fn(ud) is called after every layer of
 * every slice and four times inside each (before and after the attention, between the FFN's gate
 * and up products, after them; the first and third only in slices of more than one token; a
 * cheap check: an atomic load); when it
 * returns non-zero lh_ctx_eval returns LH_E_CANCELLED, keeping the tokens of the slices already
 * complete (lh_ctx_n_past says how many; with LongHeads it may round down to a chunk boundary,
 * as lh_ctx_truncate).  Our own prefill products (F16 weights, quantised ones) also call it
 * between groups of output rows (lh_matmul_set_poll, from this thread only), so with those types
 * a cancel takes effect within a few milliseconds of work, with F32/BF16 (oneDNN's products)
 * within about a fifth of a layer; a prefill can run in slices sized for throughput either way.
 * fn NULL: never stopped (the default). */
typedef int (*lh_ctx_abort_fn)(void *ud);
void lh_ctx_set_abort(lh_ctx *c, lh_ctx_abort_fn fn, void *ud);

/* Saving and restoring the state of a prefix (engine/pcache, the daemon's persistent prompt
 * cache).  fn writes (or reads) exactly size bytes: 0 or an error passed back. */
typedef int (*lh_ctx_io_fn)(void *ud, void *buf, size_t size);
/* The largest m <= min(n, n_past) whose state can be saved: with LongHeads a prefix that ends
 * inside a chunk whose queries are no longer held is rounded down to the chunk's start. */
size_t lh_ctx_savable(const lh_ctx *c, size_t n);
/* Bytes lh_ctx_state_save writes for n tokens: the token ids, every layer's keys and values of
 * those tokens (F32/F16 as cached), the LongHeads state (lh_lh_state_save). */
size_t lh_ctx_state_size(const lh_ctx *c, size_t n);
/* n must be savable (-EINVAL otherwise).  Returns 0 or fn's error. */
int lh_ctx_state_save(lh_ctx *c, size_t n, lh_ctx_io_fn fn, void *ud);
/* Replaces the context's content by n tokens read back (the same model and parameters; n <
 * n_ctx).  Returns 0, LH_E_LIMIT (n does not fit), -ENOSPC/-EFBIG/... (the KV file could not
 * grow; logged) or fn's error; on any error the context is left empty (n_past 0). */
int lh_ctx_state_load(lh_ctx *c, size_t n, lh_ctx_io_fn fn, void *ud);
/* With kv_dir: bytes the KV file occupies and how often its resident pages were dropped (the
 * budget); 0 and 0 in memory. */
size_t lh_ctx_kv_file_size(const lh_ctx *c);
size_t lh_ctx_kv_drops(const lh_ctx *c);
/* The LongHeads state of a context (kernels/longheads.h), NULL with full attention: for tests and
 * diagnostics (work counters, lh_lh_set_check). */
typedef struct lh_lh lh_lh;
lh_lh *lh_ctx_longheads(lh_ctx *c);

/* KV-cache and LongHeads-state bytes per token of context, for reporting. */
size_t lh_ctx_kv_bytes_per_token(const lh_ctx *c);
double lh_ctx_lh_bytes_per_token(const lh_ctx *c);

#endif
