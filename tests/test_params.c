/* tests/test_params — the front ends' settings: LongHeads by default, the automatic context
 * from a memory budget (cap, floor, an explicit context that does not fit), byte sizes, and the
 * llama.cpp spelling ctx-size. */
#include <stdio.h>
#include <string.h>

#include "model.h"
#include "params.h"
#include "test.h"

static lh_model *g_model;

static int suite_init(void) { return lh_model_open(&g_model, lh_test_model_path()); }
static int suite_clean(void)
{
    lh_model_close(g_model);
    return 0;
}

static void test_defaults(void)
{
    lh_ctx_params p;
    lh_params_default(&p);
    CU_ASSERT_EQUAL(p.attn, LH_ATTN_LONGHEADS);
    CU_ASSERT_EQUAL(p.kv_type, LH_TYPE_F16); /* llama.cpp's default KV type */
    CU_ASSERT_EQUAL(p.n_ctx, 0);
    CU_ASSERT_EQUAL(p.chunk, 0); /* the model's */
    CU_ASSERT_EQUAL(p.window, 0);
    CU_ASSERT_EQUAL(lh_params_set(&p, NULL, "ctx-size", "4096"), 0);
    CU_ASSERT_EQUAL(p.n_ctx, 4096);
    CU_ASSERT_EQUAL(lh_params_set(&p, NULL, "ctx_size", "0"), LH_E_FORMAT);
    CU_ASSERT_EQUAL(p.select, LH_SELECT_FLAT);
    CU_ASSERT_EQUAL(lh_params_set(&p, NULL, "select", "tree"), 0);
    CU_ASSERT_EQUAL(p.select, LH_SELECT_TREE);
    CU_ASSERT_EQUAL(lh_params_set(&p, NULL, "select", "heap"), LH_E_FORMAT);
    CU_ASSERT_EQUAL(p.recent, 0); /* the paper's 2 */
    CU_ASSERT_EQUAL(lh_params_set(&p, NULL, "recent", "4"), 0);
    CU_ASSERT_EQUAL(p.recent, 4);
    CU_ASSERT_EQUAL(lh_params_set(&p, NULL, "recent", "0"), LH_E_FORMAT);
}

/* recent resolves to the paper's 2 and must leave chunk 0 a slot: stories260K's files say w = 64,
 * L = 512 (K = 8), so 7 is the most. */
static void test_recent(void)
{
    lh_ctx_params p;
    lh_params_default(&p);
    p.n_ctx = 1024;
    lh_ctx *c = NULL;
    CU_ASSERT_FATAL(lh_ctx_new(&c, g_model, &p) == 0);
    CU_ASSERT_EQUAL(lh_ctx_params_get(c)->recent, 2);
    lh_ctx_free(c);
    c = NULL;
    p.recent = 7;
    CU_ASSERT_FATAL(lh_ctx_new(&c, g_model, &p) == 0);
    CU_ASSERT_EQUAL(lh_ctx_params_get(c)->recent, 7);
    lh_ctx_free(c);
    c = NULL;
    p.recent = 8;
    CU_ASSERT_NOT_EQUAL(lh_ctx_new(&c, g_model, &p), 0);
    CU_ASSERT_PTR_NULL(c);
}

static void test_fit(void)
{
    lh_ctx_params p;
    lh_params_default(&p);
    /* stories260K: KV 2 x 5 layers x 32 halves (F16), LongHeads 5 x 8 x 8 floats / 64, the id */
    size_t bpt = lh_params_bytes_per_token(g_model, &p);
    CU_ASSERT_EQUAL(bpt, 640 + 20 + 4);
    char rep[512];
    CU_ASSERT_EQUAL(lh_params_fit_ctx(g_model, &p, 1, (size_t)1 << 40, rep, sizeof rep), 0);
    CU_ASSERT_EQUAL(p.n_ctx, LH_PARAMS_CTX_AUTO); /* plenty of memory: the cap */
    CU_ASSERT_PTR_NOT_NULL(strstr(rep, "132096 tokens"));
    CU_ASSERT_PTR_NOT_NULL(strstr(rep, "--max-memory"));
    p.n_ctx = 0;
    CU_ASSERT_EQUAL(lh_params_fit_ctx(g_model, &p, 2, 2u << 20, NULL, 0), 0);
    CU_ASSERT_EQUAL(p.n_ctx, (2u << 20) / 2 / bpt); /* two slots share the budget */
    p.n_ctx = 0;
    CU_ASSERT_EQUAL(lh_params_fit_ctx(g_model, &p, 1, 100000, NULL, 0), LH_E_LIMIT); /* < 256 */
    p.n_ctx = 100000;
    CU_ASSERT_EQUAL(lh_params_fit_ctx(g_model, &p, 1, 1u << 20, NULL, 0), LH_E_LIMIT);
    p.n_ctx = 500;
    CU_ASSERT_EQUAL(lh_params_fit_ctx(g_model, &p, 1, 1u << 20, NULL, 0), 0);
    CU_ASSERT_EQUAL(p.n_ctx, 500);
    /* the bound score: a min and max per chunk, layer and KV head (5 x 4 x 2 x 8 floats / 64),
     * three times that with the search trees */
    p.score = LH_SCORE_BOUND;
    CU_ASSERT_EQUAL(lh_params_bytes_per_token(g_model, &p), 640 + 20 + 4);
    p.select = LH_SELECT_TREE;
    CU_ASSERT_EQUAL(lh_params_bytes_per_token(g_model, &p), 640 + 60 + 4);
    p.score = LH_SCORE_REP;
    p.select = LH_SELECT_FLAT;
    /* full attention has no chunk representations */
    p.attn = LH_ATTN_FULL;
    CU_ASSERT_EQUAL(lh_params_bytes_per_token(g_model, &p), 644);
    p.kv_type = LH_TYPE_F32; /* an F32 KV cache takes twice the bytes */
    CU_ASSERT_EQUAL(lh_params_bytes_per_token(g_model, &p), 1284);
    /* the default budget is what /proc/meminfo offers, less the model */
    CU_ASSERT(lh_params_default_budget(g_model) > 0);
}

static void test_bytes(void)
{
    size_t z = 0;
    CU_ASSERT(lh_params_parse_bytes("512M", &z) == 0 && z == (size_t)512 << 20);
    CU_ASSERT(lh_params_parse_bytes("8G", &z) == 0 && z == (size_t)8 << 30);
    CU_ASSERT(lh_params_parse_bytes("8GiB", &z) == 0 && z == (size_t)8 << 30);
    CU_ASSERT(lh_params_parse_bytes("64k", &z) == 0 && z == 65536);
    CU_ASSERT(lh_params_parse_bytes("1000", &z) == 0 && z == 1000);
    CU_ASSERT_EQUAL(lh_params_parse_bytes("0", &z), LH_E_FORMAT);
    CU_ASSERT_EQUAL(lh_params_parse_bytes("-1G", &z), LH_E_FORMAT);
    CU_ASSERT_EQUAL(lh_params_parse_bytes("8X", &z), LH_E_FORMAT);
    CU_ASSERT_EQUAL(lh_params_parse_bytes("", &z), LH_E_FORMAT);
    CU_ASSERT_EQUAL(lh_params_parse_bytes("99999999999T", &z), LH_E_FORMAT);
}

void lh_test_params(void)
{
    CU_pSuite s = CU_add_suite("params", suite_init, suite_clean);
    CU_add_test(s, "front-end defaults: LongHeads, automatic context", test_defaults);
    CU_add_test(s, "the context a memory budget holds", test_fit);
    CU_add_test(s, "byte sizes", test_bytes);
    CU_add_test(s, "recent: the paper's 2 by default, at most window/chunk - 1", test_recent);
}
