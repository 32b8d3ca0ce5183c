/* engine/ppl — see ppl.h. */
#include "ppl.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "log.h"
#include "tokenizer.h"

/* -log p(target) from one row of logits, in llama-perplexity's arithmetic: float max, float
 * differences through expf, the sum in double. */
static double neg_log_prob(const float *row, size_t n_vocab, int32_t target)
{
    float mx = row[0];
    for (size_t j = 1; j < n_vocab; j++)
        mx = row[j] > mx ? row[j] : mx;
    double sum = 0;
    for (size_t j = 0; j < n_vocab; j++)
        sum += expf(row[j] - mx);
    return -((double)(row[target] - mx) - log(sum));
}

int lh_ppl_llama(const lh_model *m, const lh_ctx_params *cp, const char *text, size_t len,
                 size_t n_ctx, size_t max_chunks, lh_ppl_result *r)
{
    const lh_tok *tok = lh_model_tok(m);
    size_t n_vocab = lh_model_hparams(m)->n_vocab, n_tok = 0;
    int add_bos = lh_tok_add_bos(tok), rc;
    int32_t *toks = NULL, *chunk = NULL;
    float *logits = NULL; // (n_ctx, n_vocab)
    lh_ctx *c = NULL;
    lh_ctx_params p;
    if (cp)
        p = *cp;
    else
        lh_ctx_params_default(&p);
    *r = (lh_ppl_result){ 0 };
    if (n_ctx < 4) {
        lh_log_error("perplexity: a chunk of %zu tokens is too short (at least 4)", n_ctx);
        return LH_E_LIMIT;
    }
    /* The first pass counts, the second fills (a text tokenizes to at most len + 1 tokens, but
     * counting first keeps the allocation exact). */
    rc = lh_tok_encode(tok, text, len, add_bos, NULL, 0, &n_tok);
    if (rc && rc != LH_E_LIMIT)
        goto fail;
    if (n_tok < 2 * n_ctx) {
        lh_log_error("perplexity: the text is %zu tokens; a context of %zu needs at least %zu",
                     n_tok, n_ctx, 2 * n_ctx);
        rc = LH_E_LIMIT;
        goto fail;
    }
    rc = -ENOMEM;
    toks = malloc(n_tok * sizeof *toks);
    chunk = malloc(n_ctx * sizeof *chunk);
    if (!toks || !chunk || n_vocab > SIZE_MAX / sizeof(float) / n_ctx)
        goto fail;
    logits = malloc(n_ctx * n_vocab * sizeof *logits);
    if (!logits)
        goto fail;
    if ((rc = lh_tok_encode(tok, text, len, add_bos, toks, n_tok, &n_tok)))
        goto fail;
    p.n_ctx = n_ctx;
    if ((rc = lh_ctx_new(&c, m, &p)))
        goto fail;
    size_t n_chunks = n_tok / n_ctx, first = n_ctx / 2;
    if (max_chunks && max_chunks < n_chunks)
        n_chunks = max_chunks;
    r->n_tokens = n_tok;
    for (size_t i = 0; i < n_chunks; i++) {
        for (size_t k = 0; k < n_ctx; k++)
            chunk[k] = toks[i * n_ctx + k];
        if (add_bos)
            chunk[0] = lh_tok_bos(tok);
        lh_ctx_truncate(c, 0);
        if ((rc = lh_ctx_eval(c, chunk, n_ctx, logits, 1)))
            goto fail;
        for (size_t k = first; k + 1 < n_ctx; k++) {
            double v = neg_log_prob(logits + k * n_vocab, n_vocab, chunk[k + 1]);
            r->nll += v;
            r->nll2 += v * v;
            r->n_scored++;
        }
        r->n_chunks++;
    }
    r->ppl = exp(r->nll / (double)r->n_scored);
    rc = 0;
fail:
    lh_ctx_free(c);
    free(toks);
    free(chunk);
    free(logits);
    return rc;
}

double lh_ppl_stderr(const lh_ppl_result *r)
{
    if (r->n_scored < 2)
        return 0;
    double av = r->nll / (double)r->n_scored, av2 = r->nll2 / (double)r->n_scored - av * av;
    return av2 > 0 ? r->ppl * sqrt(av2 / (double)(r->n_scored - 1)) : 0;
}
