/* engine/ppl — perplexity scored exactly the way llama.cpp's llama-perplexity scores it, so that
 * a figure from longheads-ppl --llama-compat and one from llama-perplexity on the same file, text,
 * -c and --chunks are the same measurement.
 *
 * What is scored (llama-perplexity's default mode, stride 0):
 *   - the whole text is tokenized once, BOS first when the vocabulary adds BOS;
 *   - it needs at least 2 * n_ctx tokens; the chunks are tokens [i*n_ctx, (i+1)*n_ctx) for
 *     i < n_chunks = min(--chunks, n_tokens / n_ctx) (the tail past the last whole chunk is
 *     never scored);
 *   - each chunk runs in a fresh context, with its first token replaced by BOS when the vocabulary
 *     adds BOS, with full causal attention inside the chunk only;
 *   - only the second half is scored: the logits at positions first = n_ctx/2 .. n_ctx-2 predict
 *     the tokens at first+1 .. n_ctx-1, so n_ctx - n_ctx/2 - 1 tokens per chunk;
 *   - -log p = max + log(sum_j expf(l_j - max)) - l_target (float logits, the sum in double),
 *     and ppl = exp(sum / count) over all scored tokens.
 * Nothing here is LongHeads-specific: the context parameters passed in are used as given (pass
 * attn full to match llama.cpp).
 */
#ifndef LH_PPL_H
#define LH_PPL_H

#include <stddef.h>
#include "model.h"

typedef struct {
    double ppl;       /* exp(nll / n_scored) */
    double nll;       /* sum of -log p over the scored tokens */
    double nll2;      /* sum of (-log p)^2 (for llama-perplexity's "+/-") */
    size_t n_tokens;  /* tokens of the whole text (BOS included) */
    size_t n_chunks;  /* chunks scored */
    size_t n_scored;  /* tokens scored */
} lh_ppl_result;

/* Scores len bytes of text with chunks of n_ctx tokens, at most max_chunks of them (0: all whole
 * chunks).  cp: context settings (its n_ctx is replaced by the chunk size; NULL: defaults).
 * Returns 0, LH_E_LIMIT (fewer than 2 * n_ctx tokens, or n_ctx < 4: logged), LH_E_FORMAT
 * (text the tokenizer refuses), -EINVAL, -ENOMEM. */
int lh_ppl_llama(const lh_model *m, const lh_ctx_params *cp, const char *text, size_t len,
                 size_t n_ctx, size_t max_chunks, lh_ppl_result *r);

/* The llama-perplexity "+/-" figure for a result: ppl * sqrt(var(-log p) / (count - 1)). */
double lh_ppl_stderr(const lh_ppl_result *r);

#endif
