/* engine/gen — see gen.h. */
#include "gen.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct lh_gen {
    lh_ctx *ctx;
    const lh_tok *tok;
    lh_sampler *sampler;
    size_t max_tokens, n_vocab, n_batch;
    char **stop;
    size_t n_stop;
    int32_t *prompt;            /* (n_prompt) */
    size_t n_prompt, n_reused, n_done, n_gen;
    float *logits;              /* (n_vocab) */
    int32_t cur, prev;          /* the sampled token not yet taken; the one before it */
    int ended;
    /* text: an incomplete UTF-8 sequence, then checked text not yet handed out */
    unsigned char raw[4];
    size_t n_raw;
    char *pend;
    size_t n_pend, cap_pend, n_out; /* n_out: bytes of pend handed out by the last call */
};

static const char REPL[] = "\xef\xbf\xbd"; /* U+FFFD */

void lh_gen_free(lh_gen *g)
{
    if (!g)
        return;
    lh_sampler_free(g->sampler);
    for (size_t i = 0; i < g->n_stop; i++)
        free(g->stop[i]);
    free(g->stop);
    free(g->prompt);
    free(g->logits);
    free(g->pend);
    free(g);
}

int lh_gen_new(lh_gen **gp, lh_ctx *ctx, const lh_tok *tok, const lh_gen_params *p,
               const int32_t *prompt, size_t n)
{
    *gp = NULL;
    size_t n_ctx = lh_ctx_params_get(ctx)->n_ctx;
    if (n == 0 || n >= n_ctx) {
        lh_log_error("generation: the prompt has %zu tokens; 1 to %zu fit the context", n,
                     n_ctx - 1);
        return -EINVAL;
    }
    int rc = -ENOMEM;
    lh_gen *g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    g->ctx = ctx;
    g->tok = tok;
    g->max_tokens = p->max_tokens;
    g->n_vocab = lh_tok_n_vocab(tok);
    g->n_batch = lh_ctx_params_get(ctx)->n_batch;
    g->prompt = malloc(n * sizeof *g->prompt);
    g->logits = malloc(g->n_vocab * sizeof *g->logits);
    g->stop = calloc(p->n_stop ? p->n_stop : 1, sizeof *g->stop);
    if (!g->prompt || !g->logits || !g->stop)
        goto fail;
    memcpy(g->prompt, prompt, n * sizeof *prompt);
    g->n_prompt = n;
    for (size_t i = 0; i < p->n_stop; i++) {
        if (!p->stop[i] || !p->stop[i][0]) {
            rc = -EINVAL;
            goto fail;
        }
        if (!(g->stop[i] = strdup(p->stop[i])))
            goto fail;
        g->n_stop = i + 1;
    }
    if ((rc = lh_sampler_new(&g->sampler, &p->sp, g->n_vocab)) != 0)
        goto fail;
    for (size_t i = 0; i < n; i++)
        lh_sampler_accept(g->sampler, prompt[i]);
    size_t keep = 0;
    if (p->reuse) {
        const int32_t *cached = lh_ctx_tokens(ctx);
        size_t nc = lh_ctx_n_past(ctx);
        while (keep < nc && keep < n && cached[keep] == prompt[keep])
            keep++;
        if (keep >= n)
            keep = n - 1;
    }
    g->n_reused = g->n_done = lh_ctx_truncate(ctx, keep);
    *gp = g;
    return 0;
fail:
    lh_gen_free(g);
    return rc;
}

size_t lh_gen_n_prompt(const lh_gen *g) { return g->n_prompt; }
size_t lh_gen_n_reused(const lh_gen *g) { return g->n_reused; }
size_t lh_gen_n_done(const lh_gen *g) { return g->n_done; }
size_t lh_gen_n_generated(const lh_gen *g) { return g->n_gen; }

int lh_gen_prefill(lh_gen *g, size_t max_n, int *donep)
{
    *donep = 0;
    if (g->n_done < g->n_prompt) {
        size_t n = g->n_prompt - g->n_done;
        if (max_n == 0)
            max_n = g->n_batch;
        if (n > max_n)
            n = max_n;
        int last = g->n_done + n == g->n_prompt;
        int rc = lh_ctx_eval(g->ctx, g->prompt + g->n_done, n, last ? g->logits : NULL, 0);
        if (rc != 0)
            return rc;
        g->n_done += n;
        if (!last)
            return 0;
        g->prev = g->prompt[g->n_prompt - 1];
        g->cur = lh_sampler_sample(g->sampler, g->logits);
        lh_sampler_accept(g->sampler, g->cur);
    }
    *donep = 1;
    return 0;
}

/* ---- text ----------------------------------------------------------------------------------- */

/* Length of the UTF-8 sequence at p (n bytes available): > 0 complete and valid, 0 valid so far
 * but incomplete, -1 invalid (its first byte is replaced). */
static int utf8_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0], lo = 0x80, hi = 0xbf;
    int len;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else
        return -1;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n)
            return 0;
        if (p[i] < (i == 1 ? lo : 0x80) || p[i] > (i == 1 ? hi : 0xbf))
            return -1;
    }
    return len;
}

static int pend_put(lh_gen *g, const void *p, size_t n)
{
    if (g->n_pend + n + 1 > g->cap_pend) {
        size_t cap = g->cap_pend ? g->cap_pend : 64;
        while (cap < g->n_pend + n + 1)
            cap *= 2;
        char *np = realloc(g->pend, cap);
        if (!np)
            return -ENOMEM;
        g->pend = np;
        g->cap_pend = cap;
    }
    memcpy(g->pend + g->n_pend, p, n);
    g->n_pend += n;
    g->pend[g->n_pend] = 0;
    return 0;
}

/* bytes → raw: every complete character moves to pend, an invalid byte becomes U+FFFD, an
 * incomplete tail waits in raw for the next token. */
static int text_add(lh_gen *g, const char *bytes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        g->raw[g->n_raw++] = (unsigned char)bytes[i];
        for (;;) {
            if (!g->n_raw)
                break;
            int k = utf8_len(g->raw, g->n_raw);
            if (k == 0)
                break;
            int rc = k < 0 ? pend_put(g, REPL, 3) : pend_put(g, g->raw, (size_t)k);
            if (rc)
                return rc;
            size_t used = k < 0 ? 1 : (size_t)k;
            memmove(g->raw, g->raw + used, g->n_raw - used);
            g->n_raw -= used;
        }
    }
    return 0;
}

/* How much of pend may be handed out; *stopp when a stop string starts at the result. */
static size_t text_ready(const lh_gen *g, int *stopp)
{
    *stopp = 0;
    if (!g->n_pend)
        return 0;
    size_t first = g->n_pend;
    for (size_t i = 0; i < g->n_stop; i++) {
        const char *hit = memmem(g->pend, g->n_pend, g->stop[i], strlen(g->stop[i]));
        if (hit && (size_t)(hit - g->pend) < first)
            first = (size_t)(hit - g->pend), *stopp = 1;
        else if (hit && (size_t)(hit - g->pend) == first)
            *stopp = 1;
    }
    if (*stopp)
        return first;
    size_t hold = 0; /* the longest tail of pend that begins some stop string */
    for (size_t i = 0; i < g->n_stop; i++) {
        size_t sl = strlen(g->stop[i]);
        for (size_t k = sl - 1; k > hold; k--)
            if (k <= g->n_pend && memcmp(g->pend + g->n_pend - k, g->stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return g->n_pend - hold;
}

/* Drops the n_out bytes handed out by the previous call. */
static void consume(lh_gen *g)
{
    if (!g->n_out || !g->pend) /* nothing handed out, or no text yet */
        return;
    memmove(g->pend, g->pend + g->n_out, g->n_pend - g->n_out);
    g->n_pend -= g->n_out;
    g->pend[g->n_pend] = 0;
    g->n_out = 0;
}

int lh_gen_feed(lh_gen *g, const char *bytes, size_t n, const char **textp, size_t *lenp,
                int *stopp)
{
    consume(g);
    *textp = "";
    *lenp = 0;
    *stopp = 0;
    if (g->ended == LH_GEN_STOP)
        return 0;
    int rc = text_add(g, bytes, n);
    if (rc)
        return rc;
    size_t ready = text_ready(g, stopp);
    *textp = g->pend ? g->pend : "";
    *lenp = g->n_out = ready;
    if (*stopp) {
        g->ended = LH_GEN_STOP;
        g->n_pend = ready;
    }
    return 0;
}

int lh_gen_step(lh_gen *g, int32_t *tokenp, const char **textp, size_t *lenp, lh_gen_end *endp)
{
    *tokenp = -1;
    *textp = "";
    *lenp = 0;
    *endp = LH_GEN_MORE;
    consume(g);
    if (g->ended || g->n_done < g->n_prompt) {
        *endp = g->ended ? (lh_gen_end)g->ended : LH_GEN_MORE;
        return g->ended ? 0 : -EINVAL; /* stepping before the prefill is done is a bug */
    }
    /* any end-of-generation token of the model (eos, eot, eom, the vocabulary's set), or BOS */
    if (lh_model_is_eog(lh_ctx_model(g->ctx), g->cur) || g->cur == lh_tok_bos(g->tok)) {
        g->ended = *endp = LH_GEN_EOS;
        return 0;
    }
    size_t len = 0;
    const char *piece = lh_tok_piece(g->tok, g->cur, &len);
    if (!piece)
        piece = "", len = 0;
    if (g->prev == lh_tok_bos(g->tok) && len && piece[0] == ' ' &&
        lh_tok_add_space_prefix(g->tok))
        piece++, len--; /* the dummy-prefix space of the first word (SentencePiece only) */
    int rc = text_add(g, piece, len);
    if (rc)
        return rc;
    *tokenp = g->cur;
    g->n_gen++;
    int stop;
    size_t ready = text_ready(g, &stop);
    *textp = g->pend ? g->pend : "";
    *lenp = ready;
    g->n_out = ready;
    if (stop) {
        g->ended = *endp = LH_GEN_STOP;
        g->n_pend = ready; /* the stop string and what follows are dropped */
        return 0;
    }
    if ((g->max_tokens && g->n_gen >= g->max_tokens) ||
        lh_ctx_n_past(g->ctx) + 1 >= lh_ctx_params_get(g->ctx)->n_ctx) {
        g->ended = *endp = LH_GEN_LENGTH;
        return 0;
    }
    rc = lh_ctx_eval(g->ctx, &g->cur, 1, g->logits, 0);
    if (rc == LH_E_LIMIT) {
        g->ended = *endp = LH_GEN_LENGTH;
        return 0;
    }
    if (rc)
        return rc;
    g->prev = g->cur;
    g->cur = lh_sampler_sample(g->sampler, g->logits);
    lh_sampler_accept(g->sampler, g->cur);
    return 0;
}

const char *lh_gen_flush(lh_gen *g, size_t *lenp)
{
    consume(g);
    if (g->ended == LH_GEN_STOP) {
        *lenp = 0;
        return "";
    }
    if (g->n_raw && pend_put(g, REPL, 3) == 0)
        g->n_raw = 0;
    *lenp = g->n_pend;
    g->n_out = g->n_pend;
    return g->pend ? g->pend : "";
}

int lh_gen_run(lh_gen *g, lh_gen_text_fn on_text, void *ud, lh_gen_end *endp)
{
    int done = 0, rc;
    while (!done)
        if ((rc = lh_gen_prefill(g, 0, &done)) != 0)
            return rc;
    lh_gen_end end = LH_GEN_MORE;
    while (end == LH_GEN_MORE) {
        int32_t tok;
        const char *text;
        size_t len;
        if ((rc = lh_gen_step(g, &tok, &text, &len, &end)) != 0)
            return rc;
        if (len && on_text)
            on_text(ud, text, len);
    }
    size_t len;
    const char *tail = lh_gen_flush(g, &len);
    if (len && on_text)
        on_text(ud, tail, len);
    if (endp)
        *endp = end;
    return 0;
}

double lh_gen_logprob(const float *logits, size_t n_vocab, int32_t target)
{
    float mx = logits[0];
    for (size_t v = 1; v < n_vocab; v++)
        mx = logits[v] > mx ? logits[v] : mx;
    double sum = 0;
    for (size_t v = 0; v < n_vocab; v++)
        sum += exp((double)(logits[v] - mx));
    return (double)(logits[target] - mx) - log(sum);
}
