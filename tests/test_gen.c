/* tests/test_gen — the engine's one generation loop: the bundled model's golden text through
 * lh_gen_run (from BOS, and continuing a prompt), a stop string spanning tokens ends the text
 * before it, a stop prefix that does not complete is released, UTF-8 split across tokens is held
 * back and invalid bytes become U+FFFD, the prompt cache is reused with the same result, bad
 * arguments are refused, the prompt in bounded slices gives the same text and the context's abort
 * hook stops a slice, and the log-probability helper. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen.h"
#include "model.h"
#include "test.h"
#include "tokenizer.h"

static lh_model *g_model;

static int suite_init(void) { return lh_model_open(&g_model, lh_test_model_path()); }
static int suite_clean(void)
{
    lh_model_close(g_model);
    return 0;
}

typedef struct {
    char s[16384];
    size_t n;
} sink;

static void on_text(void *ud, const char *t, size_t n)
{
    sink *k = ud;
    if (k->n + n < sizeof k->s) {
        memcpy(k->s + k->n, t, n);
        k->n += n;
        k->s[k->n] = 0;
    }
}

static char *golden(size_t *lenp)
{
    FILE *f = fopen("tests/data/stories260K.golden.txt", "rb");
    if (!f)
        return NULL;
    char *s = calloc(1, 1 << 16);
    *lenp = fread(s, 1, (1 << 16) - 1, f);
    fclose(f);
    return s;
}

/* Runs a greedy generation of prompt text (NULL: BOS only) on a fresh context; returns the
 * text in *k and the end. */
static lh_gen_end run(const char *prompt, size_t max_tokens, const char *const *stop,
                      size_t n_stop, sink *k, lh_ctx *reuse_ctx, size_t *n_reusedp)
{
    const lh_tok *tok = lh_model_tok(g_model);
    int32_t ids[512];
    size_t n = 0;
    if (prompt) {
        CU_ASSERT_EQUAL(lh_tok_encode(tok, prompt, strlen(prompt), 1, ids, 512, &n), 0);
    } else {
        ids[n++] = lh_tok_bos(tok);
    }
    lh_ctx_params cp;
    lh_ctx_params_default(&cp);
    lh_ctx *c = reuse_ctx;
    if (!c) {
        CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c, g_model, &cp), 0);
    }
    lh_gen_params gp = {.max_tokens = max_tokens, .stop = stop, .n_stop = n_stop, .reuse = 1};
    lh_sampler_params_default(&gp.sp);
    gp.sp.temperature = 0;
    lh_gen *g = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_gen_new(&g, c, tok, &gp, ids, n), 0);
    memset(k, 0, sizeof *k);
    lh_gen_end end = LH_GEN_MORE;
    CU_ASSERT_EQUAL(lh_gen_run(g, on_text, k, &end), 0);
    if (n_reusedp)
        *n_reusedp = lh_gen_n_reused(g);
    lh_gen_free(g);
    if (!reuse_ctx)
        lh_ctx_free(c);
    return end;
}

static void test_golden(void)
{
    size_t glen;
    char *gold = golden(&glen);
    CU_ASSERT_PTR_NOT_NULL_FATAL(gold);
    static sink k;
    CU_ASSERT_EQUAL(run(NULL, 256, NULL, 0, &k, NULL, NULL), LH_GEN_LENGTH);
    CU_ASSERT_EQUAL(k.n, glen);
    CU_ASSERT_STRING_EQUAL(k.s, gold);
    /* a prompt: the continuation of "Once upon a time" is the golden text after it */
    CU_ASSERT_EQUAL(run("Once upon a time", 40, NULL, 0, &k, NULL, NULL), LH_GEN_LENGTH);
    CU_ASSERT(k.n > 20 && strncmp(gold + 16, k.s, k.n) == 0);
    free(gold);
}

static void test_stop_strings(void)
{
    size_t glen;
    char *gold = golden(&glen);
    CU_ASSERT_PTR_NOT_NULL_FATAL(gold);
    /* a stop string that spans tokens: the text ends right before its first occurrence */
    const char *stop[] = {"little girl named"};
    const char *at = strstr(gold, stop[0]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    static sink k;
    CU_ASSERT_EQUAL(run(NULL, 256, stop, 1, &k, NULL, NULL), LH_GEN_STOP);
    CU_ASSERT_EQUAL(k.n, (size_t)(at - gold));
    CU_ASSERT(strncmp(k.s, gold, k.n) == 0);
    /* a stop string whose beginning appears but never completes: nothing is lost */
    const char *never[] = {"little girl named Zzz"};
    CU_ASSERT_EQUAL(run(NULL, 256, never, 1, &k, NULL, NULL), LH_GEN_LENGTH);
    CU_ASSERT_STRING_EQUAL(k.s, gold);
    free(gold);
}

static void test_text_stage(void)
{
    const lh_tok *tok = lh_model_tok(g_model);
    lh_ctx_params cp;
    lh_ctx_params_default(&cp);
    lh_ctx *c = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c, g_model, &cp), 0);
    const char *stop[] = {"END"};
    lh_gen_params gp = {.max_tokens = 4, .stop = stop, .n_stop = 1};
    lh_sampler_params_default(&gp.sp);
    int32_t bos = lh_tok_bos(tok);
    lh_gen *g = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_gen_new(&g, c, tok, &gp, &bos, 1), 0);
    const char *t;
    size_t n;
    int st;
    /* "é" (c3 a9) split across two tokens: nothing, then the whole character */
    CU_ASSERT_EQUAL(lh_gen_feed(g, "a\xc3", 2, &t, &n, &st), 0);
    CU_ASSERT(n == 1 && t[0] == 'a' && !st);
    CU_ASSERT_EQUAL(lh_gen_feed(g, "\xa9", 1, &t, &n, &st), 0);
    CU_ASSERT(n == 2 && memcmp(t, "\xc3\xa9", 2) == 0);
    /* an invalid byte becomes U+FFFD; the byte after it starts afresh */
    CU_ASSERT_EQUAL(lh_gen_feed(g, "\xff" "b", 2, &t, &n, &st), 0);
    CU_ASSERT(n == 4 && memcmp(t, "\xef\xbf\xbd" "b", 4) == 0);
    /* "EN" may start the stop string: held back; "X" releases it */
    CU_ASSERT_EQUAL(lh_gen_feed(g, "xEN", 3, &t, &n, &st), 0);
    CU_ASSERT(n == 1 && t[0] == 'x');
    CU_ASSERT_EQUAL(lh_gen_feed(g, "X", 1, &t, &n, &st), 0);
    CU_ASSERT(n == 3 && memcmp(t, "ENX", 3) == 0);
    /* the stop string across two pieces: the text before it, then nothing more */
    CU_ASSERT_EQUAL(lh_gen_feed(g, "yE", 2, &t, &n, &st), 0);
    CU_ASSERT(n == 1 && t[0] == 'y' && !st);
    CU_ASSERT_EQUAL(lh_gen_feed(g, "NDz", 3, &t, &n, &st), 0);
    CU_ASSERT(n == 0 && st);
    CU_ASSERT_EQUAL(lh_gen_feed(g, "more", 4, &t, &n, &st), 0);
    CU_ASSERT_EQUAL(n, 0);
    lh_gen_flush(g, &n);
    CU_ASSERT_EQUAL(n, 0);
    lh_gen_free(g);
    /* an incomplete character at the end is flushed as U+FFFD */
    CU_ASSERT_EQUAL_FATAL(lh_gen_new(&g, c, tok, &gp, &bos, 1), 0);
    CU_ASSERT_EQUAL(lh_gen_feed(g, "q\xe2\x82", 3, &t, &n, &st), 0);
    CU_ASSERT(n == 1 && t[0] == 'q');
    t = lh_gen_flush(g, &n);
    CU_ASSERT(n == 3 && memcmp(t, "\xef\xbf\xbd", 3) == 0);
    lh_gen_free(g);
    lh_ctx_free(c);
}

static void test_reuse_and_errors(void)
{
    lh_ctx_params cp;
    lh_ctx_params_default(&cp);
    lh_ctx *c = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c, g_model, &cp), 0);
    static sink a, b;
    size_t reused = 99;
    run("Once upon a time, there was a cat", 20, NULL, 0, &a, c, &reused);
    CU_ASSERT_EQUAL(reused, 0);
    run("Once upon a time, there was a cat", 20, NULL, 0, &b, c, &reused);
    CU_ASSERT(reused > 5);
    CU_ASSERT_STRING_EQUAL(a.s, b.s);
    const lh_tok *tok = lh_model_tok(g_model);
    lh_gen_params gp = {0};
    lh_sampler_params_default(&gp.sp);
    lh_gen *g = (lh_gen *)1;
    int32_t bos = lh_tok_bos(tok);
    CU_ASSERT_EQUAL(lh_gen_new(&g, c, tok, &gp, &bos, 0), -EINVAL);
    CU_ASSERT_PTR_NULL(g);
    const char *empty[] = {""};
    gp.stop = empty;
    gp.n_stop = 1;
    CU_ASSERT_EQUAL(lh_gen_new(&g, c, tok, &gp, &bos, 1), -EINVAL);
    gp.n_stop = 0;
    size_t big = lh_ctx_params_get(c)->n_ctx;
    int32_t *ids = calloc(big, sizeof *ids);
    CU_ASSERT_EQUAL(lh_gen_new(&g, c, tok, &gp, ids, big), -EINVAL);
    free(ids);
    lh_ctx_free(c);
}

static int abort_always(void *ud)
{
    (*(int *)ud)++;
    return 1;
}

/* The daemon's way: the prompt in bounded slices (never more than asked for, done only after
 * the last), then one step at a time, gives the same text as lh_gen_run; the context's abort
 * hook stops a slice with LH_E_CANCELLED and nothing counted as done. */
static void test_slices_and_abort(void)
{
    const char *prompt = "Once upon a time, there was a little girl named Lily. She liked to play";
    static sink whole, sliced;
    run(prompt, 30, NULL, 0, &whole, NULL, NULL);
    CU_ASSERT(whole.n > 20);

    const lh_tok *tok = lh_model_tok(g_model);
    int32_t ids[512];
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(lh_tok_encode(tok, prompt, strlen(prompt), 1, ids, 512, &n), 0);
    CU_ASSERT_FATAL(n > 14);
    lh_ctx_params cp;
    lh_ctx_params_default(&cp);
    lh_ctx *c = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&c, g_model, &cp), 0);
    lh_gen_params gp = {.max_tokens = 30, .reuse = 1};
    lh_sampler_params_default(&gp.sp);
    gp.sp.temperature = 0;
    lh_gen *g = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_gen_new(&g, c, tok, &gp, ids, n), 0);
    int done = 0, calls = 0;
    while (!done) {
        size_t before = lh_gen_n_done(g);
        CU_ASSERT_EQUAL_FATAL(lh_gen_prefill(g, 7, &done), 0);
        size_t got = lh_gen_n_done(g) - before;
        CU_ASSERT(got == 7 || (done && got >= 1 && got <= 7));
        calls++;
    }
    CU_ASSERT_EQUAL(calls, (int)((n + 6) / 7));
    CU_ASSERT_EQUAL(lh_gen_n_done(g), n);
    memset(&sliced, 0, sizeof sliced);
    lh_gen_end end = LH_GEN_MORE;
    while (end == LH_GEN_MORE) {
        int32_t t;
        const char *text;
        size_t len;
        CU_ASSERT_EQUAL_FATAL(lh_gen_step(g, &t, &text, &len, &end), 0);
        on_text(&sliced, text, len);
    }
    size_t len;
    const char *tail = lh_gen_flush(g, &len);
    on_text(&sliced, tail, len);
    CU_ASSERT_EQUAL(end, LH_GEN_LENGTH);
    CU_ASSERT_EQUAL(lh_gen_n_generated(g), 30);
    CU_ASSERT_STRING_EQUAL(sliced.s, whole.s);
    lh_gen_free(g);

    /* the abort hook: the slice stops, the generation has nothing more done */
    CU_ASSERT_EQUAL_FATAL(lh_ctx_truncate(c, 0), 0);
    CU_ASSERT_EQUAL_FATAL(lh_gen_new(&g, c, tok, &gp, ids, n), 0);
    int n_checks = 0;
    lh_ctx_set_abort(c, abort_always, &n_checks);
    CU_ASSERT_EQUAL(lh_gen_prefill(g, 0, &done), LH_E_CANCELLED);
    lh_ctx_set_abort(c, NULL, NULL);
    CU_ASSERT(n_checks >= 1);
    CU_ASSERT_EQUAL(done, 0);
    CU_ASSERT_EQUAL(lh_gen_n_done(g), 0);
    /* what the daemon does with a generation cancelled in its prefill: flush (no text yet) */
    size_t n_tail = 99;
    CU_ASSERT_STRING_EQUAL(lh_gen_flush(g, &n_tail), "");
    CU_ASSERT_EQUAL(n_tail, 0);
    lh_gen_free(g);
    lh_ctx_free(c);
}

static void test_logprob(void)
{
    float l[5] = {1, 2, 3, -1, 0.5f};
    double s = 0;
    for (int i = 0; i < 5; i++)
        s += exp(lh_gen_logprob(l, 5, i));
    CU_ASSERT(fabs(s - 1) < 1e-12);
    double z = exp(1) + exp(2) + exp(3) + exp(-1) + exp(0.5);
    CU_ASSERT(fabs(lh_gen_logprob(l, 5, 2) - (3 - log(z))) < 1e-9);
}

void lh_test_gen(void)
{
    CU_pSuite s = CU_add_suite("gen", suite_init, suite_clean);
    CU_add_test(s, "golden text through the one loop", test_golden);
    CU_add_test(s, "stop strings across tokens", test_stop_strings);
    CU_add_test(s, "UTF-8 hold-back, U+FFFD, stop prefixes", test_text_stage);
    CU_add_test(s, "prompt cache reuse, bad arguments", test_reuse_and_errors);
    CU_add_test(s, "prefill in bounded slices, step by step; the abort hook",
                test_slices_and_abort);
    CU_add_test(s, "log-probability", test_logprob);
}
