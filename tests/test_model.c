/* tests/test_model — the real stories260K model end to end: golden greedy output, prefill versus
 * one-at-a-time decode, LongHeads inside the window versus full attention, limits and errors. */
#include "test.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf_write.h"
#include "log.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

static lh_model *g_model;

static int suite_init(void) { return lh_model_open(&g_model, lh_test_model_path()) ? -1 : 0; }
static int suite_clean(void)
{
    lh_model_close(g_model);
    g_model = NULL;
    return 0;
}

static char *read_golden(void)
{
    FILE *f = fopen("tests/data/stories260K.golden.txt", "rb");
    if (!f)
        return NULL;
    char *buf = calloc(1, 8192);
    size_t n = buf ? fread(buf, 1, 8191, f) : 0;
    (void)n;
    fclose(f);
    return buf;
}

/* Greedy generation of up to n tokens after the prompt ids; appends decoded text to out. */
static size_t greedy(lh_ctx *c, const int32_t *prompt, size_t n_prompt, size_t n, int32_t *gen,
                     char *out, size_t cap)
{
    const lh_tok *tok = lh_model_tok(g_model);
    size_t n_vocab = lh_model_hparams(g_model)->n_vocab, len = 0, k = 0;
    float *logits = malloc(n_vocab * sizeof *logits);
    CU_ASSERT_FATAL(logits != NULL);
    CU_ASSERT_EQUAL_FATAL(lh_ctx_eval(c, prompt, n_prompt, logits, 0), 0);
    int32_t prev = prompt[n_prompt - 1];
    for (; k < n; k++) {
        size_t best = 0;
        for (size_t i = 1; i < n_vocab; i++)
            if (logits[i] > logits[best])
                best = i;
        int32_t next = (int32_t)best;
        if (lh_model_is_eog(g_model, next) || next == lh_tok_bos(tok))
            break;
        gen[k] = next;
        size_t plen;
        const char *p = lh_tok_piece(tok, next, &plen);
        if (prev == lh_tok_bos(tok) && plen && p[0] == ' ')
            p++, plen--;
        if (len + plen < cap) {
            memcpy(out + len, p, plen);
            len += plen;
            out[len] = 0;
        }
        prev = next;
        if (k + 1 < n)
            CU_ASSERT_EQUAL_FATAL(lh_ctx_eval(c, &next, 1, logits, 0), 0);
    }
    free(logits);
    return k;
}

static const int32_t golden_ids[40] = { 403, 407, 261, 378, 432, 383, 286, 261, 376, 298,
                                        315, 421, 395, 317, 426, 338, 401, 396, 267, 337,
                                        410, 408, 419, 292, 411, 322, 265, 282, 295, 433,
                                        426, 385, 328, 432, 358, 394, 261, 370, 432, 352 };

static void test_golden_from_bos(void)
{
    char *golden = read_golden();
    CU_ASSERT_FATAL(golden != NULL);
    lh_ctx_params p;
    lh_ctx_params_default(&p);
    p.n_ctx = 512;
    lh_ctx *c = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c, g_model, &p), 0);
    int32_t bos = 1, gen[256];
    char text[8192] = { 0 };
    size_t n = greedy(c, &bos, 1, 256, gen, text, sizeof text);
    CU_ASSERT_EQUAL(n, 256);
    CU_ASSERT_EQUAL(memcmp(gen, golden_ids, sizeof golden_ids), 0);
    CU_ASSERT_STRING_EQUAL(text, golden);
    lh_ctx_free(c);
    free(golden);
}

static void test_golden_with_prompt(void)
{
    char *golden = read_golden();
    CU_ASSERT_FATAL(golden != NULL);
    const lh_tok *tok = lh_model_tok(g_model);
    int32_t ids[16];
    size_t n_ids = 0;
    const char *prompt = "Once upon a time";
    CU_ASSERT_EQUAL_FATAL(lh_tok_encode(tok, prompt, strlen(prompt), 1, ids, 16, &n_ids), 0);
    CU_ASSERT_EQUAL_FATAL(n_ids, 5);
    lh_ctx_params p;
    lh_ctx_params_default(&p);
    p.n_ctx = 512;
    lh_ctx *c = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c, g_model, &p), 0);
    int32_t gen[100];
    char text[8192] = { 0 };
    size_t n = greedy(c, ids, n_ids, 100, gen, text, sizeof text);
    CU_ASSERT_EQUAL(n, 100);
    /* teacher-forcing the first four generated tokens continues with the same text */
    CU_ASSERT_EQUAL(memcmp(gen, golden_ids + 4, 36 * sizeof *gen), 0);
    CU_ASSERT_EQUAL(strncmp(text, golden + strlen(prompt), strlen(text)), 0);
    lh_ctx_free(c);
    free(golden);
}

/* Logits of every position fed as one prefill versus one token at a time. */
static void check_prefill_vs_decode_of(const lh_model *m, lh_ctx_params *p, size_t n, double tol)
{
    size_t V = lh_model_hparams(m)->n_vocab;
    int32_t *toks = malloc(n * sizeof *toks);
    float *a = malloc(n * V * sizeof *a), *b = malloc(V * sizeof *b);
    CU_ASSERT_FATAL(toks && a && b);
    for (size_t i = 0; i < n; i++)
        toks[i] = i == 0 ? 1 : (int32_t)(259 + (i * 7919) % 253);
    lh_ctx *c1 = NULL, *c2 = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c1, m, p), 0);
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c2, m, p), 0);
    CU_ASSERT_EQUAL_FATAL(lh_ctx_eval(c1, toks, n, a, 1), 0);
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_EQUAL_FATAL(lh_ctx_eval(c2, toks + i, 1, b, 0), 0);
        double d = lh_test_max_abs_diff(a + i * V, b, V);
        worst = d > worst ? d : worst;
    }
    CU_ASSERT(worst <= tol);
    if (worst > tol)
        printf("\n  prefill vs decode: max |dlogit| %.3g > %.3g (n %zu)\n", worst, tol, n);
    /* N-1 in one batch then one decode step equals the N-th row of the full prefill */
    lh_ctx_truncate(c2, 0);
    CU_ASSERT_EQUAL(lh_ctx_n_past(c2), 0);
    CU_ASSERT_EQUAL_FATAL(lh_ctx_eval(c2, toks, n - 1, NULL, 0), 0);
    CU_ASSERT_EQUAL_FATAL(lh_ctx_eval(c2, toks + n - 1, 1, b, 0), 0);
    CU_ASSERT(lh_test_max_abs_diff(a + (n - 1) * V, b, V) <= tol);
    lh_ctx_free(c1);
    lh_ctx_free(c2);
    free(toks);
    free(a);
    free(b);
}

static void check_prefill_vs_decode(lh_ctx_params *p, size_t n, double tol)
{
    check_prefill_vs_decode_of(g_model, p, n, tol);
}

static void test_prefill_equals_decode_full(void)
{
    lh_ctx_params p;
    lh_ctx_params_default(&p);
    p.n_ctx = 300;
    p.n_batch = 37; /* slices that do not divide the prompt */
    check_prefill_vs_decode(&p, 300, 1e-4);
    /* F16 keys: the batch (oneDNN) and single-row (GEMV) projections differ by ~1e-7, and that
     * is enough to flip the F16 rounding of a key element by one half-ulp (~5e-4 relative), so
     * the bound here is the F16 rounding, not the arithmetic. */
    p.kv_type = LH_TYPE_F16;
    check_prefill_vs_decode(&p, 200, 2e-2);
}

static void test_prefill_equals_decode_longheads(void)
{
    lh_ctx_params p;
    lh_ctx_params_default(&p);
    p.attn = LH_ATTN_LONGHEADS;
    p.chunk = 16;
    p.window = 64;
    p.n_batch = 29;
    p.n_ctx = lh_test_asan() ? 400 : 1100; /* far past the window: ~17x */
    check_prefill_vs_decode(&p, p.n_ctx, 1e-4);
}

/* Inside the window LongHeads must equal full attention. */
static void test_longheads_inside_window_equals_full(void)
{
    size_t V = lh_model_hparams(g_model)->n_vocab, n = 256;
    int32_t toks[256];
    for (size_t i = 0; i < n; i++)
        toks[i] = i == 0 ? 1 : (int32_t)(259 + (i * 31) % 253);
    float *a = malloc(n * V * sizeof *a), *b = malloc(n * V * sizeof *b);
    lh_ctx_params p;
    lh_ctx_params_default(&p);
    p.n_ctx = 512;
    lh_ctx *c1 = NULL, *c2 = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c1, g_model, &p), 0);
    p.attn = LH_ATTN_LONGHEADS;
    p.chunk = 32;
    p.window = 256;
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c2, g_model, &p), 0);
    CU_ASSERT_EQUAL_FATAL(lh_ctx_eval(c1, toks, n, a, 1), 0);
    CU_ASSERT_EQUAL_FATAL(lh_ctx_eval(c2, toks, n, b, 1), 0);
    /* The kernel-level test (test_longheads) holds attention outputs to 1e-5; through five layers
     * and a classifier with logits of magnitude ~10, float rounding of the two rotation paths
     * (rot(q,P)·rot(k,p) versus rot(q,P-rw)·rot(k,p-rw)) reaches ~3e-5 in the logits. */
    double d = lh_test_max_abs_diff(a, b, n * V);
    CU_ASSERT(d <= 1e-4);
    if (d > 1e-4)
        printf("\n  longheads inside window vs full: %.3g\n", d);
    lh_ctx_free(c1);
    lh_ctx_free(c2);
    free(a);
    free(b);
}

/* lh_ctx_set_abort: stopped after `after` layer checks. */
typedef struct {
    int calls, after;
} abort_state;

static int abort_after(void *ud)
{
    abort_state *a = ud;
    return ++a->calls > a->after;
}

/* Two contexts of m with the same parameters and a logits row for each (the abort tests run one
 * straight through and stop the other). */
static void two_ctxs(const lh_model *m, const lh_ctx_params *p, size_t V, lh_ctx **a, lh_ctx **b,
                     float **la, float **lb)
{
    *la = malloc(V * sizeof **la);
    *lb = malloc(V * sizeof **lb);
    CU_ASSERT_FATAL(*la && *lb);
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(a, m, p), 0);
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(b, m, p), 0);
}

/* A prefill stopped inside a slice keeps exactly the complete slices, and going on from there
 * gives the logits of an uninterrupted run (full attention and LongHeads past its window).  The
 * check runs 5 * n_layer - 1 times a slice (before and after each layer's attention, between
 * its gate and up products, after them, after each layer but the last); the stop comes at check
 * `at` of the fifth slice. */
static void check_abort(lh_attn_mode attn, size_t at)
{
    size_t V = lh_model_hparams(g_model)->n_vocab, n_layer = lh_model_hparams(g_model)->n_layer;
    size_t n = 300;
    int32_t toks[300];
    for (size_t i = 0; i < n; i++)
        toks[i] = (int32_t)(3 + (i * 7919) % (V - 3));
    lh_ctx_params p;
    lh_ctx_params_default(&p);
    p.attn = attn;
    p.chunk = 16;
    p.window = 64;
    p.n_batch = 32;
    p.n_ctx = n;
    lh_ctx *a = NULL, *b = NULL;
    float *la, *lb;
    two_ctxs(g_model, &p, V, &a, &b, &la, &lb);
    CU_ASSERT_EQUAL(lh_ctx_eval(a, toks, n, la, 0), 0);
    /* stop b inside the fifth slice (tokens 128..159): 4 slices of 32 complete */
    abort_state st = {0, (int)(4 * (5 * n_layer - 1) + at)};
    lh_ctx_set_abort(b, abort_after, &st);
    CU_ASSERT_EQUAL(lh_ctx_eval(b, toks, n, lb, 0), LH_E_CANCELLED);
    lh_ctx_set_abort(b, NULL, NULL);
    size_t kept = lh_ctx_n_past(b);
    CU_ASSERT(kept == 128 || (attn == LH_ATTN_LONGHEADS && kept % p.chunk == 0 && kept < 128));
    CU_ASSERT_EQUAL(lh_ctx_eval(b, toks + kept, n - kept, lb, 0), 0);
    CU_ASSERT_EQUAL(lh_ctx_n_past(b), n);
    float maxd = 0;
    for (size_t v = 0; v < V; v++) {
        float d = la[v] > lb[v] ? la[v] - lb[v] : lb[v] - la[v];
        maxd = d > maxd ? d : maxd;
    }
    CU_ASSERT(maxd < 1e-4f);
    lh_ctx_free(a);
    lh_ctx_free(b);
    free(la);
    free(lb);
}

static void test_abort_between_layers(void)
{
    size_t n_layer = lh_model_hparams(g_model)->n_layer;
    /* checks per slice: 5 a layer, none after the last.  Before the first attention, after it,
     * between the first gate and up products, after them, after the first layer, the last */
    size_t at[] = {0, 1, 2, 3, 4, 5 * n_layer - 2};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        check_abort(LH_ATTN_FULL, at[i]);
        check_abort(LH_ATTN_LONGHEADS, at[i]);
    }
}

/* Our own prefill products (F16 weights, quantised ones from 16 rows) poll the abort between
 * groups of output rows: a slice's calls outnumber the 5 * n_layer - 1 checks between them, and
 * a stop at any call, inside a product or between, keeps exactly the complete slices, from which
 * going on gives the logits of an uninterrupted run. */
static void test_abort_inside_products(void)
{
    const char *types[] = { "f16", "q8_0" };
    enum { N = 64, B = 32, L = 2, V = 300 };
    int32_t toks[N];
    for (size_t i = 0; i < N; i++)
        toks[i] = i == 0 ? 1 : (int32_t)(3 + (i * 37) % 297);
    for (int t = 0; t < 2; t++) {
        char path[128], cmd[1024];
        snprintf(path, sizeof path, "/tmp/lh-test-abort-%d-%s.gguf", (int)getpid(), types[t]);
        snprintf(cmd, sizeof cmd,
                 "%s/longheads-mkmodel -o %s --type %s --dim 64 --ff 192 --layers %d --heads 4 "
                 "--kv-heads 2 --vocab %d --ctx 256 --seed 5 2>/dev/null",
                 lh_test_build_dir(), path, types[t], L, V);
        CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
        lh_model *m = NULL;
        CU_ASSERT_EQUAL_FATAL(lh_model_open(&m, path), 0);
        lh_ctx_params p;
        lh_ctx_params_default(&p);
        p.n_ctx = N;
        p.n_batch = B;
        lh_ctx *a = NULL, *b = NULL;
        float *la, *lb;
        two_ctxs(m, &p, V, &a, &b, &la, &lb);
        /* the calls of the two slices, never stopping */
        abort_state st = {0, 1 << 30};
        lh_ctx_set_abort(a, abort_after, &st);
        CU_ASSERT_EQUAL(lh_ctx_eval(a, toks, N, la, 0), 0);
        lh_ctx_set_abort(a, NULL, NULL);
        int per_slice = st.calls / 2;
        CU_ASSERT(per_slice > 5 * L - 1);
        /* every stop inside the second slice */
        int bad = 0;
        for (int k = 0; k < per_slice; k++) {
            lh_ctx_truncate(b, 0);
            abort_state sb = {0, per_slice + k};
            lh_ctx_set_abort(b, abort_after, &sb);
            int rc = lh_ctx_eval(b, toks, N, lb, 0);
            lh_ctx_set_abort(b, NULL, NULL);
            size_t kept = lh_ctx_n_past(b);
            if (rc != LH_E_CANCELLED || kept != B ||
                lh_ctx_eval(b, toks + kept, N - kept, lb, 0) != 0) {
                bad++;
                continue;
            }
            for (size_t v = 0; v < V; v++)
                bad += fabsf(la[v] - lb[v]) >= 1e-4f;
        }
        CU_ASSERT_EQUAL(bad, 0);
        lh_ctx_free(a);
        lh_ctx_free(b);
        free(la);
        free(lb);
        lh_model_close(m);
        unlink(path);
    }
}

static void test_limits_and_errors(void)
{
    lh_ctx_params p;
    lh_ctx_params_default(&p);
    p.n_ctx = 8;
    lh_ctx *c = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c, g_model, &p), 0);
    int32_t toks[9] = { 1, 300, 301, 302, 303, 304, 305, 306, 307 };
    CU_ASSERT_EQUAL(lh_ctx_eval(c, toks, 9, NULL, 0), LH_E_LIMIT);
    CU_ASSERT_EQUAL(lh_ctx_n_past(c), 0);
    int32_t bad[2] = { 1, 512 };
    CU_ASSERT_EQUAL(lh_ctx_eval(c, bad, 2, NULL, 0), LH_E_FORMAT);
    bad[1] = -1;
    CU_ASSERT_EQUAL(lh_ctx_eval(c, bad, 2, NULL, 0), LH_E_FORMAT);
    CU_ASSERT_EQUAL(lh_ctx_eval(c, toks, 8, NULL, 0), 0);
    CU_ASSERT_EQUAL(lh_ctx_eval(c, toks, 1, NULL, 0), LH_E_LIMIT);
    CU_ASSERT_EQUAL(memcmp(lh_ctx_tokens(c), toks, 8 * sizeof *toks), 0);
    lh_ctx_free(c);
    /* bad LongHeads geometry */
    c = NULL;
    p.attn = LH_ATTN_LONGHEADS;
    p.chunk = 32;
    p.window = 48;
    CU_ASSERT_EQUAL(lh_ctx_new(&c, g_model, &p), -EINVAL);
    CU_ASSERT_PTR_NULL(c);
    p.window = 32;
    CU_ASSERT_EQUAL(lh_ctx_new(&c, g_model, &p), -EINVAL);
    /* a context of 131072 tokens fits (memory is committed lazily) */
    lh_ctx_params_default(&p);
    p.n_ctx = 131072;
    CU_ASSERT_EQUAL(lh_ctx_new(&c, g_model, &p), 0);
    CU_ASSERT_EQUAL(lh_ctx_kv_bytes_per_token(c), 2 * 5 * 4 * 8 * 4);
    lh_ctx_free(c);
    lh_ctx_free(NULL);
    lh_model_close(NULL);
}

static void test_hparams(void)
{
    const lh_hparams *hp = lh_model_hparams(g_model);
    CU_ASSERT_EQUAL(hp->n_embd, 64);
    CU_ASSERT_EQUAL(hp->n_ff, 172);
    CU_ASSERT_EQUAL(hp->n_layer, 5);
    CU_ASSERT_EQUAL(hp->n_head, 8);
    CU_ASSERT_EQUAL(hp->n_head_kv, 4);
    CU_ASSERT_EQUAL(hp->head_dim, 8);
    CU_ASSERT_EQUAL(hp->n_vocab, 512);
    CU_ASSERT_EQUAL(hp->n_ctx_train, 2048);
    CU_ASSERT_EQUAL(lh_model_n_params(g_model), 260032 + 64 * 512); /* + the tied copy */
    CU_ASSERT_EQUAL(lh_model_open(&(lh_model *){ NULL }, "/nonexistent/model.gguf") < 0, 1);
}

/* The same random weights written as F32, F16, BF16 and Q8_0 by longheads-mkmodel (one seed, so
 * every type quantises the same draws): the typed models' logits must follow the F32 model's
 * within the precision of the type, relative to the size of the logits. */
static void test_weight_types(void)
{
    const char *types[] = { "f32", "f16", "bf16", "q8_0" };
    const double rel_tol[] = { 0, 2e-3, 2e-2, 2e-2 };
    char path[4][128], cmd[4096];
    float *logits[4] = { NULL };
    int32_t toks[24];
    for (size_t i = 0; i < 24; i++)
        toks[i] = i == 0 ? 1 : (int32_t)(3 + (i * 37) % 297);
    for (int t = 0; t < 4; t++) {
        snprintf(path[t], sizeof path[t], "/tmp/lh-test-model-%d-%s.gguf", (int)getpid(), types[t]);
        snprintf(cmd, sizeof cmd,
                 "%s/longheads-mkmodel -o %s --type %s --dim 64 --ff 192 --layers 2 --heads 4 "
                 "--kv-heads 2 --vocab 300 --ctx 256 --seed 5 2>/dev/null",
                 lh_test_build_dir(), path[t], types[t]);
        CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
        lh_model *m = NULL;
        CU_ASSERT_EQUAL_FATAL(lh_model_open(&m, path[t]), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(lh_model_desc(m), t == 3 ? "Q8_0" : t == 2 ? "BF16" : t == 1 ? "F16" : "F32"));
        lh_ctx_params p;
        lh_ctx_params_default(&p);
        p.n_ctx = 64;
        p.n_batch = 7;
        lh_ctx *c = NULL;
        CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c, m, &p), 0);
        logits[t] = malloc(24 * 300 * sizeof(float));
        CU_ASSERT_EQUAL(lh_ctx_eval(c, toks, 23, logits[t], 1), 0);
        /* the last row through the decode path (GEMV over typed rows) */
        CU_ASSERT_EQUAL(lh_ctx_eval(c, toks + 23, 1, logits[t] + 23 * 300, 0), 0);
        lh_ctx_free(c);
        lh_model_close(m);
        unlink(path[t]);
    }
    double scale = 0;
    for (size_t i = 0; i < 24 * 300; i++)
        scale = fabs(logits[0][i]) > scale ? fabs(logits[0][i]) : scale;
    CU_ASSERT(scale > 0.01);
    for (int t = 1; t < 4; t++) {
        double d = lh_test_max_abs_diff(logits[0], logits[t], 24 * 300);
        CU_ASSERT(d > 0);             /* really another type */
        CU_ASSERT(d <= rel_tol[t] * scale);
        if (d > rel_tol[t] * scale)
            printf("\n  %s: max |dlogit| %.3g, scale %.3g\n", types[t], d, scale);
    }
    for (int t = 0; t < 4; t++)
        free(logits[t]);
}

/* --weights load and map: the model read into anonymous memory or mapped from the file gives
 * the same logits bit for bit, prefill and decode; each reports how it holds the weights, auto
 * reads a small file, and a bad name is refused. */
static void test_weights_load_or_map(void)
{
    const lh_weights_hold holds[] = { LH_WEIGHTS_MAP, LH_WEIGHTS_LOAD, LH_WEIGHTS_AUTO };
    float *logits[3] = { NULL };
    int32_t toks[40];
    for (size_t i = 0; i < 40; i++)
        toks[i] = i == 0 ? 1 : (int32_t)(3 + (i * 53) % 500);
    for (int h = 0; h < 3; h++) {
        lh_model *m = NULL;
        CU_ASSERT_EQUAL_FATAL(lh_model_open_ex(&m, lh_test_model_path(), holds[h]), 0);
        CU_ASSERT_EQUAL(lh_model_weights_loaded(m), holds[h] != LH_WEIGHTS_MAP);
        lh_ctx_params p;
        lh_ctx_params_default(&p);
        p.n_ctx = 64;
        lh_ctx *c = NULL;
        CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c, m, &p), 0);
        logits[h] = malloc(40 * 512 * sizeof(float));
        CU_ASSERT_FATAL(logits[h] != NULL);
        CU_ASSERT_EQUAL(lh_ctx_eval(c, toks, 39, logits[h], 1), 0);
        CU_ASSERT_EQUAL(lh_ctx_eval(c, toks + 39, 1, logits[h] + 39 * 512, 0), 0);
        lh_ctx_free(c);
        lh_model_close(m);
    }
    CU_ASSERT(memcmp(logits[0], logits[1], 40 * 512 * sizeof(float)) == 0);
    CU_ASSERT(memcmp(logits[0], logits[2], 40 * 512 * sizeof(float)) == 0);
    for (int h = 0; h < 3; h++)
        free(logits[h]);
    lh_weights_hold w;
    CU_ASSERT(lh_weights_hold_parse("load", &w) == 0 && w == LH_WEIGHTS_LOAD);
    CU_ASSERT(lh_weights_hold_parse("map", &w) == 0 && w == LH_WEIGHTS_MAP);
    CU_ASSERT(lh_weights_hold_parse("auto", &w) == 0 && w == LH_WEIGHTS_AUTO);
    CU_ASSERT(lh_weights_hold_parse("mmap", &w) == LH_E_FORMAT);
    lh_model *m = NULL;
    CU_ASSERT(lh_model_open_ex(&m, "/nonexistent/model.gguf", LH_WEIGHTS_LOAD) < 0);
}

/* Files that are valid GGUF but not a usable model: a clean error, nothing leaked. */
static void test_bad_models(void)
{
    struct { const char *arch; int with_dims; int with_vocab; int expect; } cases[] = {
        { "gpt2", 1, 1, LH_E_UNSUPPORTED },
        { "llama", 0, 1, LH_E_FORMAT },   /* no embedding_length */
        { "llama", 1, 0, LH_E_FORMAT },   /* no vocabulary */
        { "llama", 1, 1, LH_E_FORMAT },   /* hyper-parameters but no tensors */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        lh_gguf_writer *w = NULL;
        CU_ASSERT_EQUAL_FATAL(lh_gguf_writer_new(&w), 0);
        lh_gguf_writer_str(w, "general.architecture", cases[i].arch);
        if (cases[i].with_dims) {
            lh_gguf_writer_u32(w, "llama.embedding_length", 64);
            lh_gguf_writer_u32(w, "llama.feed_forward_length", 128);
            lh_gguf_writer_u32(w, "llama.block_count", 1);
            lh_gguf_writer_u32(w, "llama.attention.head_count", 8);
        }
        if (cases[i].with_vocab) {
            const char *toks[3] = { "<unk>", "<s>", "</s>" };
            float scores[3] = { 0, 0, 0 };
            int32_t types[3] = { 2, 3, 3 };
            lh_gguf_writer_str(w, "tokenizer.ggml.model", "llama");
            lh_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", toks, 3);
            lh_gguf_writer_arr_f32(w, "tokenizer.ggml.scores", scores, 3);
            lh_gguf_writer_arr_i32(w, "tokenizer.ggml.token_type", types, 3);
        }
        char path[128];
        snprintf(path, sizeof path, "/tmp/lh-test-bad-%d-%zu.gguf", (int)getpid(), i);
        CU_ASSERT_EQUAL_FATAL(lh_gguf_writer_save(w, path), 0);
        lh_gguf_writer_free(w);
        lh_model *m = NULL;
        CU_ASSERT_EQUAL(lh_model_open(&m, path), cases[i].expect);
        CU_ASSERT_PTR_NULL(m);
        unlink(path);
    }
}

/* A model may carry LongHeads defaults (the passkey models do: w=32, L=256); a context that asks
 * for LongHeads without a geometry takes them, one that gives its own keeps it. */
static void test_longheads_defaults_from_file(void)
{
    lh_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_model_open(&m, "models/passkey-aligned.gguf"), 0);
    CU_ASSERT_EQUAL(lh_model_hparams(m)->lh_chunk, 32);
    CU_ASSERT_EQUAL(lh_model_hparams(m)->lh_window, 256);
    lh_ctx_params p;
    lh_ctx_params_default(&p);
    p.attn = LH_ATTN_LONGHEADS;
    p.n_ctx = 1024;
    lh_ctx *c = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c, m, &p), 0);
    CU_ASSERT_EQUAL(lh_ctx_params_get(c)->chunk, 32);
    CU_ASSERT_EQUAL(lh_ctx_params_get(c)->window, 256);
    lh_ctx_free(c);
    p.chunk = 64;
    p.window = 128;
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c, m, &p), 0);
    CU_ASSERT_EQUAL(lh_ctx_params_get(c)->chunk, 64);
    CU_ASSERT_EQUAL(lh_ctx_params_get(c)->window, 128);
    lh_ctx_free(c);
    lh_model_close(m);
    /* the bundled model says the window it was trained at (512; its context_length of 2048 is a
     * converter default) and the chunk its perplexity table favours (models/README.md) */
    CU_ASSERT_EQUAL(lh_model_hparams(g_model)->lh_chunk, 64);
    CU_ASSERT_EQUAL(lh_model_hparams(g_model)->lh_window, 512);
}

/* ---- architectures: random-weight fixtures checked against llama.cpp -------------------------
 * tests/data/arch/ holds small random-weight models written with llama.cpp's gguf-py
 * (tools/make-arch-fixtures.py; README.md there says how) and expected.txt: per model the greedy
 * ids llama.cpp's llama-cli produces for the prompt and llama-perplexity's PPL on
 * tests/data/stories-long.txt (F32, -c 128 -b 128 --chunks 8). */

#define ARCH_DIR "tests/data/arch/"
#define ARCH_PROMPT "Once upon a time"
#define ARCH_N_GEN 64
#define ARCH_PPL_CTX 128
#define ARCH_PPL_CHUNKS 8

typedef struct {
    char name[64];
    double ppl;
    int32_t ids[ARCH_N_GEN];
    size_t n_ids;
} arch_expect;

/* One line of expected.txt: "<file> ppl=<float> ids=<id>,<id>,...". */
static int arch_expected(const char *name, arch_expect *e)
{
    FILE *f = fopen(ARCH_DIR "expected.txt", "r");
    char line[4096];
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f)) {
        if (line[0] == '#' || sscanf(line, "%63s ppl=%lf", e->name, &e->ppl) != 2 ||
            strcmp(e->name, name) != 0)
            continue;
        const char *p = strstr(line, "ids=");
        e->n_ids = 0;
        for (p = p ? p + 4 : NULL; p && *p && *p != '\n' && e->n_ids < ARCH_N_GEN;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p)
                break;
            e->ids[e->n_ids++] = (int32_t)v;
            p = *end == ',' ? end + 1 : end;
        }
        found = 1;
    }
    if (f)
        fclose(f);
    return found;
}

/* Greedy from the prompt (BOS first when the vocabulary adds one) until ARCH_N_GEN tokens or an end-of-generation token, as
 * llama-cli --temp 0 does; *min_marginp gets the smallest top-1 minus top-2 logit seen. */
static size_t arch_greedy(const lh_model *m, int32_t *gen, double *min_marginp)
{
    const lh_tok *tok = lh_model_tok(m);
    size_t V = lh_model_hparams(m)->n_vocab, n_prompt = 0, k = 0;
    int32_t prompt[64];
    CU_ASSERT_EQUAL_FATAL(lh_tok_encode(tok, ARCH_PROMPT, strlen(ARCH_PROMPT),
                                        lh_tok_add_bos(tok) ? LH_TOK_BOS : 0, prompt, 64,
                                        &n_prompt), 0);
    lh_ctx_params p;
    lh_ctx_params_default(&p);
    p.n_ctx = 128;
    lh_ctx *c = NULL;
    float *logits = malloc(V * sizeof *logits);
    CU_ASSERT_FATAL(logits != NULL);
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c, m, &p), 0);
    CU_ASSERT_EQUAL_FATAL(lh_ctx_eval(c, prompt, n_prompt, logits, 0), 0);
    *min_marginp = INFINITY;
    for (; k < ARCH_N_GEN; k++) {
        size_t best = 0, second = 1;
        for (size_t i = 1; i < V; i++) {
            if (logits[i] > logits[best])
                second = best, best = i;
            else if (i != best && logits[i] > logits[second])
                second = i;
        }
        double margin = (double)logits[best] - logits[second];
        *min_marginp = margin < *min_marginp ? margin : *min_marginp;
        if (lh_model_is_eog(m, (int32_t)best))
            break;
        gen[k] = (int32_t)best;
        if (k + 1 < ARCH_N_GEN)
            CU_ASSERT_EQUAL_FATAL(lh_ctx_eval(c, &gen[k], 1, logits, 0), 0);
    }
    lh_ctx_free(c);
    free(logits);
    return k;
}

/* llama-perplexity's quantity: the text (with BOS first when the vocabulary adds one) cut into
 * chunks of n_ctx tokens, each evaluated on its own with its first token replaced by BOS (again
 * only when the vocabulary adds one); the negative log-likelihood of the
 * second half of each chunk (positions n_ctx/2 .. n_ctx-2 predicting the next token);
 * PPL = exp(mean). */
static double arch_perplexity(const lh_model *m, size_t n_ctx, size_t n_chunks)
{
    const lh_tok *tok = lh_model_tok(m);
    size_t V = lh_model_hparams(m)->n_vocab, len = 0, n_tok = 0;
    FILE *f = fopen("tests/data/stories-long.txt", "rb");
    CU_ASSERT_FATAL(f != NULL);
    char *text = malloc(1 << 20);
    CU_ASSERT_FATAL(text != NULL);
    len = fread(text, 1, (1 << 20) - 1, f);
    fclose(f);
    size_t cap = n_ctx * n_chunks + 1;
    int32_t *toks = malloc(len * sizeof *toks + sizeof *toks);
    float *logits = malloc(n_ctx * V * sizeof *logits);
    CU_ASSERT_FATAL(toks && logits);
    int add_bos = lh_tok_add_bos(tok);
    CU_ASSERT_EQUAL_FATAL(lh_tok_encode(tok, text, len, add_bos ? LH_TOK_BOS : 0, toks, len + 1,
                                        &n_tok), 0);
    CU_ASSERT_FATAL(n_tok >= cap);
    lh_ctx_params p;
    lh_ctx_params_default(&p);
    p.n_ctx = n_ctx;
    lh_ctx *c = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c, m, &p), 0);
    double nll = 0;
    size_t count = 0;
    for (size_t ch = 0; ch < n_chunks; ch++) {
        int32_t *t = toks + ch * n_ctx, saved = t[0];
        if (add_bos)
            t[0] = lh_tok_bos(tok);
        lh_ctx_truncate(c, 0);
        CU_ASSERT_EQUAL_FATAL(lh_ctx_eval(c, t, n_ctx, logits, 1), 0);
        t[0] = saved;
        for (size_t j = n_ctx / 2; j + 1 < n_ctx; j++) {
            const float *row = logits + j * V;
            double mx = row[0], sum = 0;
            for (size_t i = 1; i < V; i++)
                mx = row[i] > mx ? row[i] : mx;
            for (size_t i = 0; i < V; i++)
                sum += exp((double)row[i] - mx);
            nll += log(sum) + mx - row[t[j + 1]];
            count++;
        }
    }
    lh_ctx_free(c);
    free(toks);
    free(logits);
    free(text);
    return exp(nll / (double)count);
}

static void check_arch_fixture(const char *name, const char *arch)
{
    char path[256];
    snprintf(path, sizeof path, ARCH_DIR "%s", name);
    lh_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_model_open(&m, path), 0);
    CU_ASSERT_STRING_EQUAL(lh_model_arch_name(m), arch);
    arch_expect e;
    CU_ASSERT_FATAL(arch_expected(name, &e));
    int32_t gen[ARCH_N_GEN];
    double margin;
    size_t n = arch_greedy(m, gen, &margin);
    CU_ASSERT_EQUAL(n, e.n_ids);
    CU_ASSERT(n == e.n_ids && memcmp(gen, e.ids, n * sizeof *gen) == 0);
    /* decisive: a float-rounding difference between implementations cannot flip a choice */
    CU_ASSERT(margin > 1e-3);
    double ppl = arch_perplexity(m, ARCH_PPL_CTX, ARCH_PPL_CHUNKS);
    double rel = fabs(ppl - e.ppl) / e.ppl;
    CU_ASSERT(rel < 1e-3);
    if (n != e.n_ids || memcmp(gen, e.ids, n * sizeof *gen) != 0 || rel >= 1e-3) {
        printf("\n  %s: ppl=%.4f (llama.cpp %.4f, rel %.2g), min margin %.3g, ids=", name, ppl,
               e.ppl, rel, margin);
        for (size_t i = 0; i < n; i++)
            printf("%s%d", i ? "," : "", gen[i]);
        printf("\n");
    }
    lh_model_close(m);
}

static void test_arch_llama_rope_freqs(void) { check_arch_fixture("llama-rope-freqs.gguf", "llama"); }
static void test_arch_qwen2_bias(void) { check_arch_fixture("qwen2-bias.gguf", "qwen2"); }
static void test_arch_llama_yarn(void) { check_arch_fixture("llama-yarn.gguf", "llama"); }

/* LongHeads on the new RoPE variants: inside its window it must equal full attention (keys are
 * cached rotated at their position inside their chunk and queries rotated per layout slot: any
 * rotation path that ignored the frequency factors, the YaRN ramp or the NeoX permutation would
 * break the equality), and past the window prefill must equal decode. */
static void test_arch_longheads(void)
{
    static const char *names[] = { "llama-rope-freqs.gguf", "qwen2-bias.gguf", "llama-yarn.gguf" };
    for (size_t f = 0; f < 3; f++) {
        char path[256];
        snprintf(path, sizeof path, ARCH_DIR "%s", names[f]);
        lh_model *m = NULL;
        CU_ASSERT_EQUAL_FATAL(lh_model_open(&m, path), 0);
        size_t V = lh_model_hparams(m)->n_vocab, n = 128;
        int32_t toks[128];
        for (size_t i = 0; i < n; i++)
            toks[i] = i == 0 ? 1 : (int32_t)(259 + (i * 31) % 253);
        float *a = malloc(n * V * sizeof *a), *b = malloc(n * V * sizeof *b);
        CU_ASSERT_FATAL(a && b);
        lh_ctx_params p;
        lh_ctx_params_default(&p);
        p.n_ctx = 256;
        lh_ctx *c1 = NULL, *c2 = NULL;
        CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c1, m, &p), 0);
        p.attn = LH_ATTN_LONGHEADS;
        p.chunk = 16;
        p.window = 128;
        CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c2, m, &p), 0);
        CU_ASSERT_EQUAL_FATAL(lh_ctx_eval(c1, toks, n, a, 1), 0);
        CU_ASSERT_EQUAL_FATAL(lh_ctx_eval(c2, toks, n, b, 1), 0);
        double scale = 0;
        for (size_t i = 0; i < n * V; i++)
            scale = fabs(a[i]) > scale ? fabs(a[i]) : scale;
        double d = lh_test_max_abs_diff(a, b, n * V);
        CU_ASSERT(d <= 1e-5 * scale);
        if (d > 1e-5 * scale)
            printf("\n  %s: longheads inside window vs full: %.3g (logits up to %.3g)\n", names[f],
                   d, scale);
        lh_ctx_free(c1);
        lh_ctx_free(c2);
        free(a);
        free(b);
        /* 8x past a window of 32 */
        p.chunk = 8;
        p.window = 32;
        p.n_batch = 13;
        p.n_ctx = 256;
        check_prefill_vs_decode_of(m, &p, 256, 1e-3);
        lh_model_close(m);
    }
}

/* A tiny model (dim 8, 2 heads of hd, ff 16, vocab 10 with Llama 3 / Qwen style end tokens)
 * written in memory: the arch's keys, then `extra` (u32 unless a string or float is given), then
 * the tensors (all zero; biases when bias != 0; rope_freqs of n_freqs values `freq`). */
typedef struct {
    const char *key;
    const char *str;
    float f;
    uint32_t u;
    int is_f32;
} tiny_kv;

static int tiny_model(const char *arch, size_t hd, const tiny_kv *extra, size_t n_extra, int bias,
                      size_t n_freqs, float freq, lh_model **mp)
{
    static const char *toks[] = { "<unk>", "<s>", "</s>", "<|eot_id|>", "<|im_end|>", "a", "b",
                                  "<|eom_id|>", "<|endoftext|>", "c" };
    static float zeros[16 * 16], freqs[64];
    float scores[10] = { 0 };
    int32_t types[10] = { 2, 3, 3, 3, 3, 1, 1, 3, 3, 1 };
    lh_gguf_writer *w = NULL;
    char key[96], path[128];
    if (lh_gguf_writer_new(&w))
        return -ENOMEM;
    lh_gguf_writer_str(w, "general.architecture", arch);
#define K(s) (snprintf(key, sizeof key, "%s." s, arch), key)
    lh_gguf_writer_u32(w, K("embedding_length"), 8);
    lh_gguf_writer_u32(w, K("feed_forward_length"), 16);
    lh_gguf_writer_u32(w, K("block_count"), 1);
    lh_gguf_writer_u32(w, K("attention.head_count"), 2);
    if (hd != 4)
        lh_gguf_writer_u32(w, K("attention.key_length"), (uint32_t)hd);
#undef K
    for (size_t i = 0; i < n_extra; i++) {
        if (extra[i].str)
            lh_gguf_writer_str(w, extra[i].key, extra[i].str);
        else if (extra[i].is_f32)
            lh_gguf_writer_f32(w, extra[i].key, extra[i].f);
        else
            lh_gguf_writer_u32(w, extra[i].key, extra[i].u);
    }
    lh_gguf_writer_str(w, "tokenizer.ggml.model", "llama");
    lh_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", toks, 10);
    lh_gguf_writer_arr_f32(w, "tokenizer.ggml.scores", scores, 10);
    lh_gguf_writer_arr_i32(w, "tokenizer.ggml.token_type", types, 10);
    lh_gguf_writer_u32(w, "tokenizer.ggml.eom_token_id", 7);
    uint64_t qd = 2 * hd;
    const struct { const char *name; uint64_t ne0, ne1; int dims; } ts[] = {
        { "token_embd.weight", 8, 10, 2 }, { "output_norm.weight", 8, 1, 1 },
        { "blk.0.attn_norm.weight", 8, 1, 1 }, { "blk.0.ffn_norm.weight", 8, 1, 1 },
        { "blk.0.attn_q.weight", 8, qd, 2 }, { "blk.0.attn_k.weight", 8, qd, 2 },
        { "blk.0.attn_v.weight", 8, qd, 2 }, { "blk.0.attn_output.weight", qd, 8, 2 },
        { "blk.0.ffn_gate.weight", 8, 16, 2 }, { "blk.0.ffn_up.weight", 8, 16, 2 },
        { "blk.0.ffn_down.weight", 16, 8, 2 }, { "blk.0.attn_q.bias", qd, 1, 1 },
        { "blk.0.attn_k.bias", qd, 1, 1 }, { "blk.0.attn_v.bias", qd, 1, 1 },
    };
    for (size_t t = 0; t < sizeof ts / sizeof *ts; t++) {
        if (!bias && strstr(ts[t].name, ".bias"))
            continue;
        uint64_t ne[2] = { ts[t].ne0, ts[t].ne1 };
        lh_gguf_writer_tensor(w, ts[t].name, LH_TYPE_F32, (uint32_t)ts[t].dims, ne, zeros);
    }
    if (n_freqs) {
        uint64_t ne[1] = { n_freqs };
        for (size_t i = 0; i < n_freqs; i++)
            freqs[i] = freq;
        lh_gguf_writer_tensor(w, "rope_freqs.weight", LH_TYPE_F32, 1, ne, freqs);
    }
    snprintf(path, sizeof path, "/tmp/lh-test-arch-%d.gguf", (int)getpid());
    int rc = lh_gguf_writer_save(w, path);
    lh_gguf_writer_free(w);
    if (rc == 0)
        rc = lh_model_open(mp, path);
    unlink(path);
    return rc;
}

/* End of generation: eos, eot/eom ids from the metadata and the tokens llama.cpp recognises by
 * their text. */
static void test_arch_eog(void)
{
    const int32_t *ids;
    size_t n = lh_model_eog_ids(g_model, &ids);
    CU_ASSERT_EQUAL(n, 1); /* stories260K: </s> only */
    CU_ASSERT(n >= 1 && ids[0] == 2);
    CU_ASSERT(lh_model_is_eog(g_model, 2));
    CU_ASSERT(!lh_model_is_eog(g_model, 1));
    CU_ASSERT(!lh_model_is_eog(g_model, 100));
    CU_ASSERT(!lh_model_is_eog(g_model, -1));

    lh_model *m = NULL;
    tiny_kv keys[] = { { .key = "tokenizer.ggml.eot_token_id", .u = 9 },
                       { .key = "tokenizer.ggml.fim_pad_token_id", .u = 6 } };
    CU_ASSERT_EQUAL_FATAL(tiny_model("llama", 4, keys, 2, 0, 0, 0, &m), 0);
    /* eos 2 (the default), eot 9, eom 7 and fim pad 6 from the keys, and by their text 3, 4, 7,
     * 8 */
    static const int32_t want[] = { 2, 3, 4, 6, 7, 8, 9 };
    n = lh_model_eog_ids(m, &ids);
    CU_ASSERT_EQUAL(n, 7);
    CU_ASSERT(n == 7 && memcmp(ids, want, sizeof want) == 0);
    CU_ASSERT(!lh_model_is_eog(m, 5) && !lh_model_is_eog(m, 1) && lh_model_is_eog(m, 9));
    lh_model_close(m);

    /* the fixtures' cut-down Llama 3 and Qwen2 vocabularies: 800 pieces, then the specials */
    CU_ASSERT_EQUAL_FATAL(lh_model_open(&m, ARCH_DIR "llama-rope-freqs.gguf"), 0);
    /* <|begin_of_text|> <|end_of_text|> <|start_header_id|> <|end_header_id|> <|eot_id|> */
    CU_ASSERT(!lh_model_is_eog(m, 800) && lh_model_is_eog(m, 801) && !lh_model_is_eog(m, 802) &&
              !lh_model_is_eog(m, 803) && lh_model_is_eog(m, 804) && !lh_model_is_eog(m, 0));
    lh_model_close(m);
    CU_ASSERT_EQUAL_FATAL(lh_model_open(&m, ARCH_DIR "qwen2-bias.gguf"), 0);
    /* <|endoftext|> <|im_start|> <|im_end|> */
    CU_ASSERT(lh_model_is_eog(m, 800) && !lh_model_is_eog(m, 801) && lh_model_is_eog(m, 802));
    lh_model_close(m);
}

/* The metadata that shapes the architecture, read as llama.cpp reads it; what is not supported is
 * refused with its name. */
static void test_arch_metadata(void)
{
    lh_model *m = NULL;
    const lh_hparams *hp;
    /* refusals */
    CU_ASSERT_EQUAL(tiny_model("gemma3", 4, NULL, 0, 0, 0, 0, &m), LH_E_UNSUPPORTED);
    tiny_kv moe = { .key = "llama.expert_count", .u = 8 };
    CU_ASSERT_EQUAL(tiny_model("llama", 4, &moe, 1, 0, 0, 0, &m), LH_E_UNSUPPORTED);
    tiny_kv longrope = { .key = "llama.rope.scaling.type", .str = "longrope" };
    CU_ASSERT_EQUAL(tiny_model("llama", 4, &longrope, 1, 0, 0, 0, &m), LH_E_UNSUPPORTED);
    CU_ASSERT_EQUAL(tiny_model("qwen2", 4, NULL, 0, 0, 0, 0, &m), LH_E_FORMAT); /* no biases */
    CU_ASSERT_EQUAL(tiny_model("llama", 4, NULL, 0, 0, 3, 1.0f, &m), LH_E_FORMAT); /* 3 != 2 factors */
    CU_ASSERT_EQUAL(tiny_model("llama", 4, NULL, 0, 0, 2, 0.0f, &m), LH_E_FORMAT); /* factor 0 */
    tiny_kv vlen = { .key = "llama.attention.value_length", .u = 6 };
    CU_ASSERT_EQUAL(tiny_model("llama", 8, &vlen, 1, 0, 0, 0, &m), LH_E_FORMAT);
    tiny_kv negf = { .key = "llama.rope.scaling.factor", .f = -2.0f, .is_f32 = 1 };
    CU_ASSERT_EQUAL(tiny_model("llama", 4, &negf, 1, 0, 0, 0, &m), LH_E_FORMAT);
    CU_ASSERT_PTR_NULL(m);

    /* qwen2: biases, NeoX; plain RoPE by default */
    CU_ASSERT_EQUAL_FATAL(tiny_model("qwen2", 4, NULL, 0, 1, 0, 0, &m), 0);
    hp = lh_model_hparams(m);
    CU_ASSERT_EQUAL(hp->arch, LH_ARCH_QWEN2);
    CU_ASSERT(hp->rope_neox);
    CU_ASSERT_PTR_NOT_NULL(strstr(lh_model_desc(m), "qwen2"));
    CU_ASSERT_EQUAL(hp->rope.freq_scale, 1.0f);
    CU_ASSERT_EQUAL(hp->rope.ext_factor, 0.0f);
    lh_model_close(m);

    /* linear scaling, the old key too; "none" ignores the factor */
    tiny_kv lin[] = { { .key = "llama.rope.scaling.type", .str = "linear" },
                      { .key = "llama.rope.scaling.factor", .f = 2.0f, .is_f32 = 1 } };
    CU_ASSERT_EQUAL_FATAL(tiny_model("llama", 4, lin, 2, 0, 0, 0, &m), 0);
    CU_ASSERT_EQUAL(lh_model_hparams(m)->rope.freq_scale, 0.5f);
    CU_ASSERT_EQUAL(lh_model_hparams(m)->rope.ext_factor, 0.0f);
    CU_ASSERT(!lh_model_hparams(m)->rope_neox);
    lh_model_close(m);
    tiny_kv old = { .key = "llama.rope.scale_linear", .f = 4.0f, .is_f32 = 1 };
    CU_ASSERT_EQUAL_FATAL(tiny_model("llama", 4, &old, 1, 0, 0, 0, &m), 0);
    CU_ASSERT_EQUAL(lh_model_hparams(m)->rope.freq_scale, 0.25f);
    lh_model_close(m);
    tiny_kv none[] = { { .key = "llama.rope.scaling.type", .str = "none" },
                       { .key = "llama.rope.scaling.factor", .f = 4.0f, .is_f32 = 1 } };
    CU_ASSERT_EQUAL_FATAL(tiny_model("llama", 4, none, 2, 0, 0, 0, &m), 0);
    CU_ASSERT_EQUAL(lh_model_hparams(m)->rope.freq_scale, 1.0f);
    lh_model_close(m);

    /* YaRN: ext_factor 1, attn_factor and the original context from the file */
    tiny_kv yarn[] = { { .key = "llama.rope.scaling.type", .str = "yarn" },
                       { .key = "llama.rope.scaling.factor", .f = 8.0f, .is_f32 = 1 },
                       { .key = "llama.rope.scaling.attn_factor", .f = 0.5f, .is_f32 = 1 },
                       { .key = "llama.rope.scaling.original_context_length", .u = 32 },
                       { .key = "llama.rope.freq_base", .f = 500000.0f, .is_f32 = 1 } };
    CU_ASSERT_EQUAL_FATAL(tiny_model("llama", 4, yarn, 5, 0, 2, 2.0f, &m), 0);
    hp = lh_model_hparams(m);
    CU_ASSERT_EQUAL(hp->rope.freq_scale, 0.125f);
    CU_ASSERT_EQUAL(hp->rope.ext_factor, 1.0f);
    CU_ASSERT_EQUAL(hp->rope.attn_factor, 0.5f);
    CU_ASSERT_EQUAL(hp->rope.n_ctx_orig, 32);
    CU_ASSERT_EQUAL(hp->rope.base, 500000.0f);
    CU_ASSERT(hp->rope.freq_factors && hp->rope.freq_factors[1] == 2.0f);
    lh_model_close(m);

    /* attention.key_length: heads of 8 in a model of dim 8 with 2 heads (q is 16 wide); runs */
    CU_ASSERT_EQUAL_FATAL(tiny_model("llama", 8, NULL, 0, 1, 0, 0, &m), 0);
    hp = lh_model_hparams(m);
    CU_ASSERT_EQUAL(hp->head_dim, 8);
    CU_ASSERT_EQUAL(hp->n_rot, 8);
    lh_ctx_params p;
    lh_ctx_params_default(&p);
    p.n_ctx = 16;
    lh_ctx *c = NULL;
    float logits[10];
    int32_t toks[3] = { 1, 5, 6 };
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c, m, &p), 0);
    CU_ASSERT_EQUAL(lh_ctx_eval(c, toks, 3, logits, 0), 0);
    lh_ctx_free(c);
    lh_model_close(m);
}

void lh_test_model(void)
{
    CU_pSuite s = CU_add_suite("model", suite_init, suite_clean);
    CU_add_test(s, "hyper-parameters", test_hparams);
    CU_add_test(s, "golden 256 tokens from BOS", test_golden_from_bos);
    CU_add_test(s, "golden continuation of a prompt", test_golden_with_prompt);
    CU_add_test(s, "prefill equals decode (full, F32 and F16 KV)", test_prefill_equals_decode_full);
    CU_add_test(s, "prefill equals decode (longheads, 17x window)", test_prefill_equals_decode_longheads);
    CU_add_test(s, "longheads inside the window equals full", test_longheads_inside_window_equals_full);
    CU_add_test(s, "limits and errors", test_limits_and_errors);
    CU_add_test(s, "a prefill stopped inside a slice resumes exactly", test_abort_between_layers);
    CU_add_test(s, "a prefill stopped inside a product resumes exactly (F16, Q8_0)",
                test_abort_inside_products);
    CU_add_test(s, "F16, BF16 and Q8_0 weights follow F32", test_weight_types);
    CU_add_test(s, "weights read into memory == mapped", test_weights_load_or_map);
    CU_add_test(s, "unusable models are refused", test_bad_models);
    CU_add_test(s, "LongHeads defaults from the file", test_longheads_defaults_from_file);
    CU_add_test(s, "arch: llama with rope_freqs, tied output = llama.cpp", test_arch_llama_rope_freqs);
    CU_add_test(s, "arch: qwen2 with biases = llama.cpp", test_arch_qwen2_bias);
    CU_add_test(s, "arch: llama with yarn scaling = llama.cpp", test_arch_llama_yarn);
    CU_add_test(s, "arch: LongHeads with factors, yarn, NeoX", test_arch_longheads);
    CU_add_test(s, "arch: end of generation tokens", test_arch_eog);
    CU_add_test(s, "arch: metadata and refusals", test_arch_metadata);
}
