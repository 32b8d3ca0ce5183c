/* tests/test_model — the real stories260K model end to end: golden greedy output, prefill versus
 * one-at-a-time decode, LongHeads inside the window versus full attention, limits and errors. */
#include "test.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
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
        if (next == lh_tok_eos(tok) || next == lh_tok_bos(tok))
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
static void check_prefill_vs_decode(lh_ctx_params *p, size_t n, double tol)
{
    size_t V = lh_model_hparams(g_model)->n_vocab;
    int32_t *toks = malloc(n * sizeof *toks);
    float *a = malloc(n * V * sizeof *a), *b = malloc(V * sizeof *b);
    CU_ASSERT_FATAL(toks && a && b);
    for (size_t i = 0; i < n; i++)
        toks[i] = i == 0 ? 1 : (int32_t)(259 + (i * 7919) % 253);
    lh_ctx *c1 = NULL, *c2 = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c1, g_model, p), 0);
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c2, g_model, p), 0);
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

/* A prefill stopped between layers keeps exactly the complete slices, and going on from there
 * gives the logits of an uninterrupted run (full attention and LongHeads past its window). */
static void check_abort(lh_attn_mode attn)
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
    float *la = malloc(V * sizeof *la), *lb = malloc(V * sizeof *lb);
    CU_ASSERT_FATAL(la && lb);
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&a, g_model, &p), 0);
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&b, g_model, &p), 0);
    CU_ASSERT_EQUAL(lh_ctx_eval(a, toks, n, la, 0), 0);
    /* stop b inside the fifth slice (tokens 128..159): 4 slices of 32 complete */
    abort_state st = {0, (int)(4 * (n_layer - 1) + 2)};
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
    check_abort(LH_ATTN_FULL);
    check_abort(LH_ATTN_LONGHEADS);
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
    /* the bundled model carries none: its defaults come from its context length */
    CU_ASSERT_EQUAL(lh_model_hparams(g_model)->lh_chunk, 0);
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
    CU_add_test(s, "a prefill stopped between layers resumes exactly", test_abort_between_layers);
    CU_add_test(s, "F16, BF16 and Q8_0 weights follow F32", test_weight_types);
    CU_add_test(s, "unusable models are refused", test_bad_models);
    CU_add_test(s, "LongHeads defaults from the file", test_longheads_defaults_from_file);
}
