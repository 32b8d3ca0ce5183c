/* tools/ppl — longheads-ppl: perplexity of a text file, per bucket of positions.
 *
 *   longheads-ppl -m MODEL -f FILE [--attn full|longheads] [--chunk W] [--window L] [--score S]
 *                 [--bucket B] [--max-tokens N] [--ctx N] [--kv f32|f16] [--batch B]
 *   longheads-ppl -m MODEL -f FILE --mode llama -c N [--chunks K] [--kv f32|f16] [--batch B]
 *
 * The file is tokenized with BOS and run through one context in slices of --batch tokens; the
 * negative log-likelihood of every token given all before it is accumulated per bucket of B
 * positions (default 512).  Prints one line per bucket, `tokens A-B ppl X`, then
 * `overall ppl X`.  The context size defaults to the token count.  The attention defaults to
 * LongHeads (the model file's chunk and window), as everywhere else; --attn full compares.
 *
 * --mode llama scores exactly what `llama-perplexity -c N [--chunks K]` scores (engine/ppl.h:
 * chunks of N tokens, each from a fresh context starting with BOS, the second half of each
 * scored) with full attention, and prints llama-perplexity's last line,
 * `Final estimate: PPL = X +/- Y`, so that the two figures can be compared directly.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "log.h"
#include "longheads.h"
#include "model.h"
#include "params.h"
#include "ppl.h"
#include "tokenizer.h"
#include "version.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: longheads-ppl -m MODEL -f FILE [--attn full|longheads] [--chunk W] [--window L]\n"
               "         [--score rep|bound] [--select flat|tree] [--recent R]\n"
               "         [--bucket B] [--max-tokens N] [--ctx N] [--kv f32|f16] [--batch B] [--threads T]\n"
               "       longheads-ppl -m MODEL -f FILE --mode llama -c N [--chunks K] [--kv f32|f16]\n"
               "         (scores what llama-perplexity -c N --chunks K scores)\n");
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *file = NULL;
    size_t bucket = 512, max_tokens = 1u << 22, llama_ctx = 0, llama_chunks = 0;
    int llama_mode = 0;
    lh_ctx_params cp;
    lh_params_default(&cp); /* LongHeads with the model's chunk and window, like the daemon */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--version") == 0) {
            printf("longheads-ppl %s\n", LH_VERSION);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (strcmp(a, "-m") == 0)
            model_path = v;
        else if (strcmp(a, "-f") == 0)
            file = v;
        else if (strcmp(a, "--bucket") == 0)
            bad = lh_params_parse_size(v, 1, 1u << 24, &bucket);
        else if (strcmp(a, "--mode") == 0) {
            if (strcmp(v, "llama") == 0)
                llama_mode = 1;
            else if (strcmp(v, "bucket") != 0)
                bad = 1;
        } else if (strcmp(a, "-c") == 0)
            bad = lh_params_parse_size(v, 4, 1u << 22, &llama_ctx);
        else if (strcmp(a, "--chunks") == 0)
            bad = lh_params_parse_size(v, 1, 1u << 30, &llama_chunks);
        else if (strcmp(a, "--max-tokens") == 0)
            bad = lh_params_parse_size(v, 2, 1u << 22, &max_tokens);
        else if (strcmp(a, "--threads") == 0) {
            size_t t = 1;
            bad = lh_params_parse_size(v, 1, 1024, &t);
#ifdef _OPENMP
            omp_set_num_threads((int)t);
#endif
        } else if (strncmp(a, "--", 2) == 0) {
            bad = lh_params_set(&cp, NULL, a + 2, v);
            if (bad == LH_E_NOTFOUND)
                fprintf(stderr, "longheads-ppl: unknown option %s\n", a);
        } else
            bad = 1;
        if (bad) {
            fprintf(stderr, "longheads-ppl: bad value for %s: %s\n", a, v);
            return 2;
        }
    }
    if (!model_path || !file || (llama_mode && !llama_ctx)) {
        usage(stderr);
        return 2;
    }
    int rc = 1;
    lh_model *m = NULL;
    lh_ctx *c = NULL;
    char *text = NULL;
    int32_t *toks = NULL;
    float *logits = NULL;
    double *nll = NULL;
    size_t *cnt = NULL;
    FILE *f = fopen(file, "rb");
    if (!f) {
        fprintf(stderr, "longheads-ppl: %s: %s\n", file, strerror(errno));
        goto out;
    }
    fseek(f, 0, SEEK_END);
    long flen = ftell(f);
    fseek(f, 0, SEEK_SET);
    text = malloc(flen > 0 ? (size_t)flen : 1);
    size_t len = text ? fread(text, 1, (size_t)(flen > 0 ? flen : 0), f) : 0;
    fclose(f);
    if (!text || lh_model_open(&m, model_path))
        goto out;
    if (llama_mode) {
        lh_ppl_result r;
        cp.attn = LH_ATTN_FULL;
        if (lh_ppl_llama(m, &cp, text, len, llama_ctx, llama_chunks, &r))
            goto out;
        printf("tokens %zu, %zu chunks of %zu, %zu scored\n", r.n_tokens, r.n_chunks, llama_ctx,
               r.n_scored);
        printf("Final estimate: PPL = %.4f +/- %.5f\n", r.ppl, lh_ppl_stderr(&r));
        rc = 0;
        goto out;
    }
    const lh_tok *tok = lh_model_tok(m);
    size_t n_vocab = lh_model_hparams(m)->n_vocab, n = 0;
    toks = malloc(max_tokens * sizeof *toks);
    if (!toks)
        goto out;
    int erc = lh_tok_encode(tok, text, len, 1, toks, max_tokens, &n);
    if (erc && erc != LH_E_LIMIT)
        goto out;
    if (n > max_tokens)
        n = max_tokens;
    if (n < 2) {
        fprintf(stderr, "longheads-ppl: %s has fewer than 2 tokens\n", file);
        goto out;
    }
    if (cp.n_ctx == 0)
        cp.n_ctx = n;
    if (cp.n_ctx < n)
        n = cp.n_ctx;
    if (lh_ctx_new(&c, m, &cp))
        goto out;
    size_t nb = lh_ctx_params_get(c)->n_batch, n_buckets = (n + bucket - 1) / bucket;
    logits = malloc(nb * n_vocab * sizeof *logits);
    nll = calloc(n_buckets, sizeof *nll);
    cnt = calloc(n_buckets, sizeof *cnt);
    if (!logits || !nll || !cnt)
        goto out;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t done = 0; done < n - 1;) {
        size_t k = n - 1 - done < nb ? n - 1 - done : nb;
        if (lh_ctx_eval(c, toks + done, k, logits, 1))
            goto out;
        for (size_t i = 0; i < k; i++) {
            const float *row = logits + i * n_vocab;
            double mx = row[0], sum = 0;
            for (size_t j = 1; j < n_vocab; j++)
                mx = row[j] > mx ? row[j] : mx;
            for (size_t j = 0; j < n_vocab; j++)
                sum += exp(row[j] - mx);
            size_t target_pos = done + i + 1;
            nll[target_pos / bucket] += -(row[toks[target_pos]] - mx - log(sum));
            cnt[target_pos / bucket]++;
        }
        done += k;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double all = 0;
    size_t all_n = 0;
    for (size_t b = 0; b < n_buckets; b++) {
        if (!cnt[b])
            continue;
        size_t hi = (b + 1) * bucket < n ? (b + 1) * bucket : n;
        printf("tokens %zu-%zu ppl %.4f\n", b * bucket, hi - 1, exp(nll[b] / cnt[b]));
        all += nll[b];
        all_n += cnt[b];
    }
    printf("overall ppl %.4f\n", exp(all / all_n));
    /* before the summary, which stays the last line (tools/eval.sh reads it) */
    lh_lh *lh = lh_ctx_longheads(c);
    lh_lh_stats st;
    if (lh && (lh_lh_stats_get(lh, &st), st.n_select))
        fprintf(stderr, "longheads-ppl: per selection past the window (%zu): %.1f of %.1f candidate "
                "chunks and %.1f tree nodes scored\n", st.n_select,
                (double)st.n_chunk / (double)st.n_select, (double)st.n_cand / (double)st.n_select,
                (double)st.n_node / (double)st.n_select);
    const lh_ctx_params *rp = lh_ctx_params_get(c);
    double secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    fprintf(stderr, "longheads-ppl: %zu tokens, attn %s", n,
            rp->attn == LH_ATTN_LONGHEADS ? "longheads" : "full");
    if (rp->attn == LH_ATTN_LONGHEADS)
        fprintf(stderr, " (chunk %zu, window %zu, recent %zu%s)", rp->chunk, rp->window,
                rp->recent, rp->score == LH_SCORE_BOUND ? ", score bound" : "");
    fprintf(stderr, ", %.2f s (%.0f tok/s)\n", secs, n / secs);
    rc = 0;
out:
    lh_ctx_free(c);
    lh_model_close(m);
    free(text);
    free(toks);
    free(logits);
    free(nll);
    free(cnt);
    return rc;
}
