/* tools/run — longheads-run: the engine, one shot, no daemon.
 *
 *   longheads-run -m MODEL [-p PROMPT | -f FILE] [-n N|-1] [--temp T] [--seed S] [--top-k K]
 *                 [--top-p P] [--min-p P] [--repeat-penalty R] [--attn full|longheads] [--score S]
 *                 [--chunk W] [--window L] [--ctx N] [--kv f32|f16] [--batch B] [--threads T]
 *
 * Prints the generated text (not the prompt) to stdout as it is produced, timings to stderr.
 * With no prompt, generation starts from BOS alone.  Generation stops after N tokens (default
 * 256; -1: until the end of the text or of the context) or when the model produces EOS or BOS
 * (llama2.c's rule), through the engine's one generation loop (engine/gen.h).  Exit status 0,
 * 1 on an error (message on stderr), 2 on bad usage.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "gen.h"
#include "log.h"
#include "model.h"
#include "params.h"
#include "sampler.h"
#include "tokenizer.h"
#include "version.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: longheads-run -m MODEL [-p PROMPT | -f FILE] [-n N|-1] [--temp T] [--seed S]\n"
            "         [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R] [--repeat-last-n N]\n"
            "         [--attn full|longheads] [--chunk W] [--window L] [--score rep|bound]\n"
            "         [--select flat|tree] [--recent R]\n"
            "         [-c|--ctx N] [--kv f32|f16] [--batch B] [--threads T] [--version]\n"
            "         [--weights auto|load|map]  (the model read into memory or mapped; auto: read\n"
            "         when at most half the available memory)\n"
            "Prints the generated text to stdout, timings to stderr. No prompt: start from BOS.\n"
            "Defaults: LongHeads attention with the model file's chunk and window (inside the\n"
            "window it is full attention), a context as large as 3/4 of the free memory holds\n"
            "(up to 132096 tokens, committed as it fills).\n");
}

static char *read_file(const char *path, size_t *lenp)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "longheads-run: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap)
            break;
        char *nb = realloc(buf, cap *= 2);
        if (!nb)
            free(buf);
        buf = nb;
    }
    fclose(f);
    *lenp = len;
    return buf;
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *prompt = "", *file = NULL;
    size_t n_gen = 256;
    int rc = 1;
    lh_weights_hold hold = LH_WEIGHTS_AUTO;
    lh_ctx_params cp;
    lh_sampler_params sp;
    lh_params_default(&cp); /* LongHeads, the context the memory holds (as the daemon) */
    lh_sampler_params_default(&sp);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--version") == 0) {
            printf("longheads-run %s\n", LH_VERSION);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "longheads-run: %s needs a value\n", a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0) {
            model_path = v;
        } else if (strcmp(a, "-p") == 0 || strcmp(a, "--prompt") == 0) {
            prompt = v;
        } else if (strcmp(a, "-f") == 0 || strcmp(a, "--file") == 0) {
            file = v;
        } else if (strcmp(a, "-c") == 0) {
            if (lh_params_set(&cp, NULL, "ctx", v))
                return 2;
        } else if (strcmp(a, "-n") == 0) {
            if (strcmp(v, "-1") == 0) {
                n_gen = 0; /* until EOS or the context is full */
            } else if (lh_params_parse_size(v, 1, 1u << 24, &n_gen)) {
                fprintf(stderr, "longheads-run: -n: '%s' is not a token count in [1, 16777216] "
                        "or -1 (until the end of the text)\n", v);
                return 2;
            }
        } else if (strcmp(a, "--weights") == 0) {
            if (lh_weights_hold_parse(v, &hold)) {
                fprintf(stderr, "longheads-run: --weights: '%s' is not auto, load or map\n", v);
                return 2;
            }
        } else if (strcmp(a, "--threads") == 0 || strcmp(a, "-t") == 0) {
            size_t t;
            if (lh_params_parse_size(v, 1, 1024, &t)) {
                fprintf(stderr, "longheads-run: --threads: '%s' is not a thread count\n", v);
                return 2;
            }
#ifdef _OPENMP
            omp_set_num_threads((int)t);
#endif
        } else if (strncmp(a, "--", 2) == 0) {
            int prc = lh_params_set(&cp, &sp, a + 2, v);
            if (prc == LH_E_NOTFOUND)
                fprintf(stderr, "longheads-run: unknown option %s\n", a);
            if (prc)
                return 2;
        } else {
            fprintf(stderr, "longheads-run: unknown argument %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!model_path) {
        usage(stderr);
        return 2;
    }

    lh_model *m = NULL;
    lh_ctx *c = NULL;
    lh_gen *g = NULL;
    int32_t *toks = NULL;
    char *text = NULL;
    size_t text_len = strlen(prompt);
    if (file && !(text = read_file(file, &text_len)))
        goto out;
    if (lh_model_open_ex(&m, model_path, hold))
        goto out;
    const lh_tok *tok = lh_model_tok(m);
    if (lh_params_fit_ctx(m, &cp, 1, 0, NULL, 0))
        goto out;
    size_t cap = cp.n_ctx, n_prompt = 0;
    toks = malloc(cap * sizeof *toks);
    if (!toks)
        goto out;
    /* BOS when the vocabulary asks for it (Qwen2's does not), or to start from nothing */
    int bos = lh_tok_add_bos(tok) || text_len == 0 ? LH_TOK_BOS : 0;
    int erc = lh_tok_encode(tok, text ? text : prompt, text_len, bos, toks, cap, &n_prompt);
    if (erc == LH_E_LIMIT) {
        fprintf(stderr, "longheads-run: the prompt is %zu tokens, past the context of %zu; raise "
                "it with -c/--ctx N\n", n_prompt, cap);
        goto out;
    } else if (erc) {
        goto out;
    } else if (n_prompt == 0) {
        fprintf(stderr, "longheads-run: nothing to start from: an empty prompt and no BOS token\n");
        goto out;
    }
    if (lh_ctx_new(&c, m, &cp))
        goto out;
    /* the engine's one generation loop (engine/gen.h), the same one the tests drive */
    lh_gen_params gp = {.max_tokens = n_gen, .sp = sp};
    if (lh_gen_new(&g, c, tok, &gp, toks, n_prompt))
        goto out;
    double t0 = now_s();
    for (int done = 0; !done;)
        if (lh_gen_prefill(g, 0, &done))
            goto out;
    double t1 = now_s();
    lh_gen_end end = LH_GEN_MORE;
    while (end == LH_GEN_MORE) {
        int32_t tk;
        const char *piece;
        size_t plen;
        if (lh_gen_step(g, &tk, &piece, &plen, &end))
            goto out;
        fwrite(piece, 1, plen, stdout);
        fflush(stdout);
    }
    size_t tail_len;
    const char *tail = lh_gen_flush(g, &tail_len);
    fwrite(tail, 1, tail_len, stdout);
    fflush(stdout);
    size_t n_done = lh_gen_n_generated(g);
    double t2 = now_s();
    const lh_ctx_params *rp = lh_ctx_params_get(c);
    fprintf(stderr,
            "\nlongheads-run: %s\n  attn %s", lh_model_desc(m),
            rp->attn == LH_ATTN_LONGHEADS ? "longheads" : "full");
    if (rp->attn == LH_ATTN_LONGHEADS)
        fprintf(stderr, " (chunk %zu, window %zu, recent %zu, score %s)", rp->chunk, rp->window,
                rp->recent, rp->score == LH_SCORE_BOUND ? "bound" : "rep");
    fprintf(stderr, ", ctx %zu, kv %s\n  prefill %zu tokens in %.3f s (%.1f tok/s), "
            "generated %zu tokens in %.3f s (%.1f tok/s)\n",
            rp->n_ctx, lh_type_name(rp->kv_type), n_prompt, t1 - t0,
            n_prompt / (t1 - t0 > 0 ? t1 - t0 : 1e-9), n_done, t2 - t1,
            n_done / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
    rc = 0;
out:
    if (rc)
        fprintf(stderr, "longheads-run: failed (see the message above)\n");
    lh_gen_free(g);
    lh_ctx_free(c);
    lh_model_close(m);
    free(toks);
    free(text);
    return rc;
}
