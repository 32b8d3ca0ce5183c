/* tests/test_attn — dense causal GQA attention (flash tiles, threads) against the scalar
 * reference; the reference itself against hand-computed cases; the cache store. */
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attn.h"

static uint64_t rng = 0x853c49e6748fea9bull;

static float frand(float lo, float hi)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 40) * (1.0 / 16777216.0));
}

/* A cache of n_ctx rows filled (through lh_attn_store) for positions 0..n_fill-1. */
static void *make_cache(const lh_attn_shape *s, size_t n_fill, float amp)
{
    size_t esz = s->kv_type == LH_TYPE_F16 ? 2 : 4, w = s->n_head_kv * s->head_dim;
    void *c = malloc(s->n_head_kv * s->n_ctx * s->head_dim * esz);
    float *row = malloc(w * sizeof *row);
    memset(c, 0xff, s->n_head_kv * s->n_ctx * s->head_dim * esz);   /* NaN beyond the filled part */
    for (size_t p = 0; p < n_fill; p++) {
        for (size_t i = 0; i < w; i++)
            row[i] = frand(-amp, amp);
        lh_attn_store(s, c, p, row);
    }
    free(row);
    return c;
}

static void check_dense(size_t n_head, size_t n_head_kv, size_t hd, lh_type kvt, size_t n_q,
                        size_t pos0, size_t n_threads)
{
    lh_attn_shape s = {n_head, n_head_kv, hd, pos0 + n_q + 7, kvt};
    /* keys with amplitude 3 make the softmax peaky enough that a wrong mask or a wrong KV head
     * moves the output by O(0.1) */
    void *k = make_cache(&s, pos0 + n_q, 3), *v = make_cache(&s, pos0 + n_q, 1);
    size_t w = n_head * hd;
    float *q = malloc(n_q * w * sizeof *q), *o = malloc(n_q * w * sizeof *o);
    float *r = malloc(n_q * w * sizeof *r);
    for (size_t i = 0; i < n_q * w; i++)
        q[i] = frand(-1, 1);
    size_t ssz = lh_attn_scratch_size(&s, n_q + 5);
    void *scratch = malloc(ssz * n_threads);
    lh_attn_dense(&s, q, n_q, pos0, k, v, o, scratch, n_threads);
    lh_attn_dense_ref(&s, q, n_q, pos0, k, v, r);
    /* outputs are convex combinations of |v| <= 1: float scores, the vector exp (~2 ulp) and
     * float accumulation over <= a few hundred keys stay below 2e-5 absolute. */
    double err = lh_test_max_abs_diff(o, r, n_q * w);
    if (!(err < 2e-5))
        fprintf(stderr, "\n  attn h %zu kv %zu hd %zu %s n_q %zu pos0 %zu thr %zu: err %g\n",
                n_head, n_head_kv, hd, lh_type_name(kvt), n_q, pos0, n_threads, err);
    CU_ASSERT(err < 2e-5);
    free(k), free(v), free(q), free(o), free(r), free(scratch);
}

static void test_ref_values(void)
{
    /* one head, head_dim 2, keys (0,0) and (2,0) scaled by 1/sqrt(2): query (1,0) at pos 1 */
    lh_attn_shape s = {1, 1, 2, 4, LH_TYPE_F32};
    float k[8] = {0, 0, 2, 0}, v[8] = {1, 0, 0, 1}, q[4] = {1, 0, 1, 0}, o[4];
    lh_attn_dense_ref(&s, q, 2, 0, k, v, o);
    /* token 0 sees only key 0 */
    CU_ASSERT_DOUBLE_EQUAL(o[0], 1, 1e-7);
    CU_ASSERT_DOUBLE_EQUAL(o[1], 0, 1e-7);
    /* token 1: weights ∝ 1, e^(2/√2) */
    double e = exp(2 / sqrt(2.0));
    CU_ASSERT_DOUBLE_EQUAL(o[2], 1 / (1 + e), 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(o[3], e / (1 + e), 1e-6);
    /* the optimised one on the same case */
    char scratch[1 << 16];
    float o2[4];
    CU_ASSERT_FATAL(lh_attn_scratch_size(&s, 2) <= sizeof scratch);
    lh_attn_dense(&s, q, 2, 0, k, v, o2, scratch, 1);
    CU_ASSERT(lh_test_max_abs_diff(o, o2, 4) < 1e-6);
}

static void test_dense_f32(void)
{
    static const size_t hds[] = {1, 3, 17, 64};
    for (size_t i = 0; i < 4; i++) {
        check_dense(2, 2, hds[i], LH_TYPE_F32, 1, 0, 1);
        check_dense(2, 2, hds[i], LH_TYPE_F32, 3, 0, 2);
        check_dense(2, 2, hds[i], LH_TYPE_F32, 17, 5, 3);
    }
    check_dense(4, 4, 64, LH_TYPE_F32, 1, 256, 2);       /* decode past two key tiles */
    check_dense(4, 4, 64, LH_TYPE_F32, 40, 257, 2);      /* batch at pos0 > 0 */
    check_dense(2, 2, 17, LH_TYPE_F32, 150, 3, 2);       /* 3 query blocks of 50 (64 at most) */
}

static void test_dense_f16(void)
{
    check_dense(2, 2, 17, LH_TYPE_F16, 1, 0, 1);
    check_dense(2, 2, 64, LH_TYPE_F16, 17, 3, 2);
    check_dense(3, 1, 32, LH_TYPE_F16, 33, 200, 2);
    check_dense(8, 2, 64, LH_TYPE_F16, 1, 300, 4);      /* 2 rows per item: F16 read in place */
    check_dense(4, 4, 64, LH_TYPE_F16, 1, 700, 2);      /* decode, 1 row: F16 read in place */
    check_dense(2, 2, 8, LH_TYPE_F16, 2, 129, 1);       /* 2 rows, head_dim 8 */
}

static void test_dense_gqa(void)
{
    check_dense(6, 2, 17, LH_TYPE_F32, 1, 0, 2);         /* group 3 */
    check_dense(6, 2, 17, LH_TYPE_F32, 19, 130, 2);
    check_dense(6, 2, 16, LH_TYPE_F32, 50, 70, 2);       /* group 3: blocks of 17 queries */
    check_dense(8, 2, 64, LH_TYPE_F32, 1, 500, 8);       /* group 4, split for 8 threads */
    check_dense(8, 1, 32, LH_TYPE_F32, 5, 129, 16);      /* one KV head, many threads */
    check_dense(4, 2, 3, LH_TYPE_F32, 257, 0, 3);        /* a long batch from position 0 */
    /* the cache read in place (up to 8 rows per item, head_dim % 8 == 0), F32 and F16 */
    check_dense(16, 2, 64, LH_TYPE_F32, 1, 300, 1);      /* group 8, one thread: 8 rows */
    check_dense(8, 2, 64, LH_TYPE_F32, 2, 129, 1);       /* 2 queries x group 4 */
    check_dense(32, 4, 64, LH_TYPE_F16, 1, 1000, 2);     /* TinyLlama's group of 8 */
    check_dense(12, 12, 64, LH_TYPE_F32, 1, 2000, 2);    /* stories110M's heads, 16 key tiles */
}

/* Decode splits the key tiles of all KV heads evenly over the threads; a KV head cut between two
 * threads is finished by a log-sum-exp merge of their partial states. */
static void test_dense_split(void)
{
    check_dense(3, 3, 64, LH_TYPE_F16, 1, 700, 2);       /* 3 KV heads on 2 threads: one cut */
    check_dense(3, 3, 64, LH_TYPE_F32, 1, 700, 2);
    check_dense(2, 2, 16, LH_TYPE_F32, 3, 300, 3);       /* 3 queries, masked last tile, cuts */
    check_dense(1, 1, 64, LH_TYPE_F32, 1, 2000, 4);      /* one head cut in four */
    check_dense(1, 1, 64, LH_TYPE_F32, 1, 100, 4);       /* fewer tiles than threads */
    check_dense(4, 1, 24, LH_TYPE_F16, 2, 1500, 3);      /* head_dim 24: the AVX2 loops */
    check_dense(8, 2, 64, LH_TYPE_F16, 1, 333, 5);       /* group 4, five threads */
    /* head_dim 64: rows in pairs for the scores and fours for P·V, and the rows left over */
    check_dense(6, 2, 64, LH_TYPE_F32, 1, 300, 2);       /* group 3 */
    check_dense(12, 2, 64, LH_TYPE_F16, 1, 300, 2);      /* group 6 */
    check_dense(5, 1, 64, LH_TYPE_F32, 1, 130, 1);       /* group 5, a tile of 3 keys */
}

static void test_store_scratch(void)
{
    lh_attn_shape s = {4, 2, 3, 5, LH_TYPE_F16};
    uint16_t c[2 * 5 * 3];
    memset(c, 0, sizeof c);
    float x[6] = {1, -2, 0.1f, 65504, 1e-7f, -0.0f};
    lh_attn_store(&s, c, 4, x);
    for (size_t h = 0; h < 2; h++)
        for (size_t d = 0; d < 3; d++)
            CU_ASSERT_EQUAL(c[(h * 5 + 4) * 3 + d], lh_f32_to_f16(x[h * 3 + d]));
    CU_ASSERT_EQUAL(c[(0 * 5 + 3) * 3], 0);   /* other rows untouched */
    lh_attn_shape sf = {4, 2, 3, 5, LH_TYPE_F32};
    float cf[2 * 5 * 3] = {0};
    lh_attn_store(&sf, cf, 1, x);
    CU_ASSERT(memcmp(cf + 1 * 3, x, 3 * sizeof *x) == 0);
    CU_ASSERT(memcmp(cf + (5 + 1) * 3, x + 3, 3 * sizeof *x) == 0);
    /* scratch does not grow with the context */
    lh_attn_shape a = {32, 8, 128, 1024, LH_TYPE_F16}, b = a;
    b.n_ctx = 131072;
    CU_ASSERT_EQUAL(lh_attn_scratch_size(&a, 64), lh_attn_scratch_size(&b, 64));
    CU_ASSERT(lh_attn_scratch_size(&a, 64) < 1u << 20);
}

void lh_test_attn(void)
{
    CU_pSuite s = CU_add_suite("attn", NULL, NULL);
    CU_add_test(s, "reference values", test_ref_values);
    CU_add_test(s, "dense F32", test_dense_f32);
    CU_add_test(s, "dense F16", test_dense_f16);
    CU_add_test(s, "dense GQA", test_dense_gqa);
    CU_add_test(s, "dense decode split over threads", test_dense_split);
    CU_add_test(s, "store and scratch size", test_store_scratch);
}
