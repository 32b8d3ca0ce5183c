/* tests/test_ops — every optimised op in kernels/ops against its scalar reference on odd sizes,
 * plus fixed values that pin the references themselves to the formulas in ops.h. */
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

static const size_t sizes[] = {1, 3, 17, 257};
#define N_SIZES (sizeof sizes / sizeof sizes[0])

static uint64_t rng = 0x9e3779b97f4a7c15ull;

/* uniform in [lo, hi) */
static float frand(float lo, float hi)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 40) * (1.0 / 16777216.0));
}

static void fill(float *x, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = frand(lo, hi);
}

/* max |a-b| / max(1, |b|) */
static double max_rel(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(1.0, fabs((double)b[i]));
        if (d != d)
            return INFINITY;
        m = d > m ? d : m;
    }
    return m;
}

static void test_rmsnorm(void)
{
    for (size_t s = 0; s < N_SIZES; s++) {
        size_t n = sizes[s], rows = 3;
        float *x = malloc(rows * n * sizeof *x), *w = malloc(n * sizeof *w);
        float *a = malloc(rows * n * sizeof *a), *b = malloc(rows * n * sizeof *b);
        fill(x, rows * n, -4, 4);
        fill(w, n, 0.5f, 1.5f);
        lh_ops_rmsnorm(a, x, w, rows, n, 1e-5f);
        lh_ops_rmsnorm_ref(b, x, w, rows, n, 1e-5f);
        /* float partial sums of n <= 257 squares vs a double sum: ~1e-6 relative. */
        CU_ASSERT(max_rel(a, b, rows * n) < 1e-5);
        free(x), free(w), free(a), free(b);
    }
    /* the reference itself: x = (3, 4), w = 1: mean square 12.5 */
    float x[2] = {3, 4}, w[2] = {1, 2}, o[2];
    lh_ops_rmsnorm_ref(o, x, w, 1, 2, 0);
    CU_ASSERT_DOUBLE_EQUAL(o[0], 3 / sqrt(12.5), 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(o[1], 8 / sqrt(12.5), 1e-6);
    /* many rows, large enough to take the threaded path */
    size_t rows = 300, n = 257;
    float *xs = malloc(rows * n * sizeof *xs), *ws = malloc(n * sizeof *ws);
    float *a = malloc(rows * n * sizeof *a), *b = malloc(rows * n * sizeof *b);
    fill(xs, rows * n, -2, 2);
    fill(ws, n, -1, 1);
    lh_ops_rmsnorm(a, xs, ws, rows, n, 1e-6f);
    lh_ops_rmsnorm_ref(b, xs, ws, rows, n, 1e-6f);
    CU_ASSERT(max_rel(a, b, rows * n) < 1e-5);
    free(xs), free(ws), free(a), free(b);
}

static void test_rope_values(void)
{
    /* head_dim 4, n_rot 4, base 100: pair 0 turns by pos, pair 1 by pos/10 */
    float x[4] = {1, 0, 0, 1};
    lh_rope plain = lh_ops_rope_plain(100.0f);
    lh_ops_rope_ref(x, 1, 4, 4, 3.0, &plain);
    CU_ASSERT_DOUBLE_EQUAL(x[0], cos(3.0), 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(x[1], sin(3.0), 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(x[2], -sin(0.3), 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(x[3], cos(0.3), 1e-6);
    /* freq_scale 0.5 halves the angle; n_rot 2 of head_dim 4 leaves the rest alone */
    float y[4] = {1, 0, 0.25f, -0.5f};
    lh_rope half = plain;
    half.freq_scale = 0.5f;
    lh_ops_rope(y, 1, 4, 2, 3.0, &half);
    CU_ASSERT_DOUBLE_EQUAL(y[0], cos(1.5), 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(y[1], sin(1.5), 1e-6);
    CU_ASSERT_EQUAL(y[2], 0.25f);
    CU_ASSERT_EQUAL(y[3], -0.5f);
}

/* The RoPE variants the models use: plain, Llama 3.1 frequency factors, linear scaling, YaRN
 * (with factors too).  factors must hold 64 floats. */
static lh_rope rope_variant(int v, float *factors)
{
    lh_rope r = lh_ops_rope_plain(10000.0f);
    for (size_t i = 0; i < 64; i++)
        factors[i] = 1.0f + (float)(i % 7) * 1.3f;
    if (v == 1 || v == 4)
        r.freq_factors = factors;
    if (v == 2)
        r.freq_scale = 0.25f;
    if (v >= 3) {
        r.freq_scale = 1.0f / 6.0f;
        r.ext_factor = 1.0f;
        r.attn_factor = 0.9f;
        r.n_ctx_orig = 4096;
        r.base = 500000.0f;
    }
    return r;
}

static void test_rope_vs_ref(void)
{
    static const size_t dims[][2] = {{2, 2}, {6, 6}, {34, 16}, {34, 34}, {64, 64}, {128, 128}};
    static const double poss[] = {0, 1, 17, 4097, 131071};
    float factors[64];
    for (int v = 0; v < 5; v++) {
        lh_rope r = rope_variant(v, factors);
        for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
            for (size_t p = 0; p < sizeof poss / sizeof poss[0]; p++) {
                size_t hd = dims[d][0], nr = dims[d][1], nh = 3;
                float *a = malloc(nh * hd * sizeof *a), *b = malloc(nh * hd * sizeof *b);
                fill(a, nh * hd, -1, 1);
                memcpy(b, a, nh * hd * sizeof *a);
                lh_ops_rope(a, nh, hd, nr, poss[p], &r);
                lh_ops_rope_ref(b, nh, hd, nr, poss[p], &r);
                /* both take angles in double; the optimised one rounds cos/sin to float first:
                 * a few float ulps on |x| <= 1.  (YaRN's ramp: the two forms of the mixed angle
                 * differ by double rounding, ~1e-16 * pos rad.) */
                CU_ASSERT(lh_test_max_abs_diff(a, b, nh * hd) < 2e-6);

                /* the table path gives the same rotation */
                size_t npos = (size_t)poss[p] + 1;
                if (npos <= 4098) {
                    float *cs = malloc(npos * (nr / 2) * 2 * sizeof *cs);
                    float *c = malloc(nh * hd * sizeof *c);
                    fill(c, nh * hd, -1, 1);
                    memcpy(a, c, nh * hd * sizeof *a);
                    lh_ops_rope_table(cs, npos, nr, &r);
                    lh_ops_rope_apply(c, nh, hd, nr, cs + (npos - 1) * (nr / 2) * 2);
                    lh_ops_rope_ref(a, nh, hd, nr, poss[p], &r);
                    CU_ASSERT(lh_test_max_abs_diff(a, c, nh * hd) < 2e-6);
                    free(cs), free(c);
                }
                free(a), free(b);
            }
    }
}

/* The scaled form (LongHeads' query rotation) is bit for bit scaling, then lh_ops_rope_apply: the
 * vector pairs, the scalar pairs past them and the dimensions past n_rot. */
static void test_rope_apply_scaled(void)
{
    static const size_t dims[][2] = {{64, 64}, {20, 12}, {10, 6}, {16, 2}, {8, 0}};
    lh_rope r = lh_ops_rope_plain(10000.0f);
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
        size_t hd = dims[d][0], nr = dims[d][1];
        float cs[64 * 2], src[64], want[64], got[64];
        lh_ops_rope_table(cs, 2, nr, &r);
        fill(src, hd, -1, 1);
        for (size_t i = 0; i < hd; i++)
            want[i] = src[i] * 0.125f;
        lh_ops_rope_apply(want, 1, hd, nr, cs + nr);   /* position 1 */
        lh_ops_rope_apply_scaled(got, src, 0.125f, hd, nr, cs + nr);
        CU_ASSERT(memcmp(got, want, hd * sizeof *got) == 0);
        memcpy(got, src, hd * sizeof *got);             /* in place */
        lh_ops_rope_apply_scaled(got, got, 0.125f, hd, nr, cs + nr);
        CU_ASSERT(memcmp(got, want, hd * sizeof *got) == 0);
    }
}

/* Frequency factors and YaRN against values worked out by hand. */
static void test_rope_factors_yarn(void)
{
    /* factors: pair 1's frequency (1/10 with base 100, n_rot 4) divided by 4 -> pos/40 */
    float ff[2] = {1.0f, 4.0f};
    lh_rope r = lh_ops_rope_plain(100.0f);
    r.freq_factors = ff;
    float x[4] = {1, 0, 1, 0};
    lh_ops_rope(x, 1, 4, 4, 8.0, &r);
    CU_ASSERT_DOUBLE_EQUAL(x[0], cos(8.0), 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(x[2], cos(0.2), 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(x[3], sin(0.2), 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(lh_ops_rope_theta(&r, 4, 1), 1.0 / 40, 1e-12);

    /* YaRN, factor 4, base 10000, n_rot 64, original context 4096: pairs turning more than 32
     * times over 4096 positions (i <= floor(64 ln(4096/(64 pi))/(2 ln 1e4)) = 10) keep their
     * frequency; pairs turning less than once (i >= ceil(64 ln(4096/(2 pi))/(2 ln 1e4)) = 23) are
     * interpolated (frequency / 4); in between the mix is linear; magnitudes scale by
     * 1 + 0.1 ln 4. */
    lh_rope y = lh_ops_rope_plain(10000.0f);
    y.freq_scale = 0.25f;
    y.ext_factor = 1.0f;
    y.n_ctx_orig = 4096;
    double th8 = pow(10000.0, -16.0 / 64), th23 = pow(10000.0, -46.0 / 64);
    double th15 = pow(10000.0, -30.0 / 64), mix15 = 1 - (15.0 - 10) / (23 - 10);
    CU_ASSERT_DOUBLE_EQUAL(lh_ops_rope_theta(&y, 64, 0), 1.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(lh_ops_rope_theta(&y, 64, 8), th8, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(lh_ops_rope_theta(&y, 64, 23), th23 * 0.25, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(lh_ops_rope_theta(&y, 64, 15), th15 * (0.25 * (1 - mix15) + mix15), 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(lh_ops_rope_mscale(&y), 1 + 0.1 * log(4.0), 1e-6);
    float z[64] = {0};
    z[46] = 1.0f; /* pair 23 */
    lh_ops_rope_ref(z, 1, 64, 64, 100.0, &y);
    CU_ASSERT_DOUBLE_EQUAL(z[46], cos(100 * th23 * 0.25) * (1 + 0.1 * log(4.0)), 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(z[47], sin(100 * th23 * 0.25) * (1 + 0.1 * log(4.0)), 1e-6);
    /* linear scaling alone has no magnitude change */
    y.ext_factor = 0;
    CU_ASSERT_DOUBLE_EQUAL(lh_ops_rope_mscale(&y), 1.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(lh_ops_rope_theta(&y, 64, 0), 0.25, 1e-12);
}

/* NeoX layout -> pairs: applying RoPE after the permutation equals NeoX RoPE (pairs (i, i+h))
 * followed by the permutation, and q·k is unchanged by it. */
static void test_neox_to_pairs(void)
{
    size_t hd = 24, nr = 16, nh = 2, half = nr / 2;
    lh_rope r = lh_ops_rope_plain(10000.0f);
    float q[48], a[48], b[48];
    fill(q, nh * hd, -1, 1);
    memcpy(a, q, sizeof q);
    lh_ops_neox_to_pairs(a, nh, hd, nr);
    lh_ops_rope(a, nh, hd, nr, 37.0, &r);
    memcpy(b, q, sizeof q);
    for (size_t h = 0; h < nh; h++) /* NeoX RoPE written out */
        for (size_t i = 0; i < half; i++) {
            double th = 37.0 * pow(10000.0, -2.0 * (double)i / (double)nr);
            float x0 = b[h * hd + i], x1 = b[h * hd + i + half];
            b[h * hd + i] = (float)(x0 * cos(th) - x1 * sin(th));
            b[h * hd + i + half] = (float)(x0 * sin(th) + x1 * cos(th));
        }
    lh_ops_neox_to_pairs(b, nh, hd, nr);
    CU_ASSERT(lh_test_max_abs_diff(a, b, nh * hd) < 1e-6);
    CU_ASSERT_EQUAL(a[hd - 1], q[hd - 1]); /* past n_rot: untouched */
    CU_ASSERT_EQUAL(a[2], b[2]);
}

/* RoPE is relative: rot(q, P)·rot(k, p) depends on P - p only (what LongHeads relies on). */
static void test_rope_relative(void)
{
    lh_rope r = lh_ops_rope_plain(10000.0f);
    size_t hd = 64;
    float q[64], k[64], q1[64], k1[64], q2[64], k2[64];
    fill(q, hd, -1, 1);
    fill(k, hd, -1, 1);
    memcpy(q1, q, sizeof q), memcpy(k1, k, sizeof k);
    memcpy(q2, q, sizeof q), memcpy(k2, k, sizeof k);
    lh_ops_rope(q1, 1, hd, hd, 100000, &r);
    lh_ops_rope(k1, 1, hd, hd, 99000, &r);
    lh_ops_rope(q2, 1, hd, hd, 1500, &r);
    lh_ops_rope(k2, 1, hd, hd, 500, &r);
    double d1 = 0, d2 = 0, d0 = 0;
    for (size_t i = 0; i < hd; i++) {
        d1 += (double)q1[i] * k1[i];
        d2 += (double)q2[i] * k2[i];
        d0 += (double)q[i] * k[i];
    }
    CU_ASSERT_DOUBLE_EQUAL(d1, d2, 1e-4);
    CU_ASSERT(fabs(d1 - d0) > 1e-3);   /* and the rotation did something */
}

static void test_swiglu(void)
{
    for (size_t s = 0; s < N_SIZES; s++) {
        size_t n = sizes[s];
        float *g = malloc(n * sizeof *g), *u = malloc(n * sizeof *u);
        float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
        fill(g, n, -20, 20);
        fill(u, n, -3, 3);
        if (n > 3)
            g[0] = -100, g[1] = 100, g[2] = 0;
        lh_ops_swiglu(a, g, u, n);
        lh_ops_swiglu_ref(b, g, u, n);
        /* vector exp is ~2 ulp, plus a division and a multiply: 1e-5 relative is generous. */
        CU_ASSERT(max_rel(a, b, n) < 1e-5);
        free(g), free(u), free(a), free(b);
    }
    float g = 1, u = 2, o;
    lh_ops_swiglu_ref(&o, &g, &u, 1);
    CU_ASSERT_DOUBLE_EQUAL(o, 2 / (1 + exp(-1.0)), 1e-6);
    /* big enough for the threaded path */
    size_t n = 100003;
    float *gs = malloc(n * sizeof *gs), *us = malloc(n * sizeof *us);
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    fill(gs, n, -10, 10);
    fill(us, n, -1, 1);
    lh_ops_swiglu(a, gs, us, n);
    lh_ops_swiglu_ref(b, gs, us, n);
    CU_ASSERT(max_rel(a, b, n) < 1e-5);
    free(gs), free(us), free(a), free(b);
}

static void test_softmax(void)
{
    for (size_t s = 0; s < N_SIZES; s++) {
        size_t n = sizes[s];
        float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
        fill(a, n, -30, 30);
        if (n > 3)
            a[1] = -INFINITY, a[n - 1] = 80;   /* a masked entry, a dominant one */
        memcpy(b, a, n * sizeof *a);
        lh_ops_softmax(a, n);
        lh_ops_softmax_ref(b, n);
        /* probabilities in [0,1]: vector exp and float sums give ~1e-7 absolute. */
        CU_ASSERT(lh_test_max_abs_diff(a, b, n) < 1e-6);
        double sum = 0;
        for (size_t i = 0; i < n; i++)
            sum += a[i];
        CU_ASSERT_DOUBLE_EQUAL(sum, 1.0, 1e-5);
        if (n > 3)
            CU_ASSERT_EQUAL(a[1], 0.0f);
        free(a), free(b);
    }
    float x[3] = {0, (float)log(2.0), (float)log(5.0)};
    lh_ops_softmax(x, 3);
    CU_ASSERT_DOUBLE_EQUAL(x[0], 0.125, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(x[1], 0.25, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(x[2], 0.625, 1e-6);
}

/* lh_ops_exp_sum goes 16 lanes at a time where it can and 8 at a time in its tail: every stored
 * exp is the same bits either way (16 values at once against the same values as two 8-value
 * calls), over the whole range, the clamps, infinities and NaN. */
static void test_exp_lanes(void)
{
    float a[16], b[16];
    size_t differ = 0;
    for (int it = 0; it < 20000; it++) {
        fill(a, 16, -100, 100);
        if (it % 7 == 0)
            a[it % 16] = (it % 3) ? INFINITY : NAN;
        if (it % 11 == 0)
            a[(it + 5) % 16] = -INFINITY;
        memcpy(b, a, sizeof a);
        lh_ops_exp_sum(a, 16, 0.0f);
        lh_ops_exp_sum(b, 8, 0.0f);
        lh_ops_exp_sum(b + 8, 8, 0.0f);
        differ += memcmp(a, b, sizeof a) != 0;
    }
    CU_ASSERT_EQUAL(differ, 0);
}

/* lh_ops_rope_apply_scaled goes 8 pairs at a time where it can and 4 at a time after: a 16-value
 * head rotated at once is the same bits as its two halves rotated with their halves of the
 * table. */
static void test_rope_lanes(void)
{
    float src[16], cs[16], a[16], b[16];
    size_t differ = 0;
    for (int it = 0; it < 20000; it++) {
        fill(src, 16, -50, 50);
        fill(cs, 16, -1, 1);
        float scale = it % 2 ? 1.0f : 0.125f + (float)(it % 13) * 0.01f;
        lh_ops_rope_apply_scaled(a, src, scale, 16, 16, cs);
        lh_ops_rope_apply_scaled(b, src, scale, 8, 8, cs);
        lh_ops_rope_apply_scaled(b + 8, src + 8, scale, 8, 8, cs + 8);
        differ += memcmp(a, b, sizeof a) != 0;
    }
    CU_ASSERT_EQUAL(differ, 0);
}

static void test_add(void)
{
    for (size_t s = 0; s < N_SIZES; s++) {
        size_t n = sizes[s];
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *e = malloc(n * sizeof *e);
        fill(x, n, -1, 1);
        fill(y, n, -1, 1);
        for (size_t i = 0; i < n; i++)
            e[i] = y[i] + x[i];
        lh_ops_add(y, x, n);
        CU_ASSERT(memcmp(y, e, n * sizeof *e) == 0);   /* one rounding each: exact */
        free(x), free(y), free(e);
    }
}

void lh_test_ops(void)
{
    CU_pSuite s = CU_add_suite("ops", NULL, NULL);
    CU_add_test(s, "rmsnorm", test_rmsnorm);
    CU_add_test(s, "rope fixed values", test_rope_values);
    CU_add_test(s, "rope and table vs ref", test_rope_vs_ref);
    CU_add_test(s, "rope is relative", test_rope_relative);
    CU_add_test(s, "rope frequency factors and yarn", test_rope_factors_yarn);
    CU_add_test(s, "neox layout to pairs", test_neox_to_pairs);
    CU_add_test(s, "swiglu", test_swiglu);
    CU_add_test(s, "softmax", test_softmax);
    CU_add_test(s, "exp: 16 lanes == 8 lanes, bit for bit", test_exp_lanes);
    CU_add_test(s, "add", test_add);
    /* last: its fill() draws would shift the random inputs of the tests above (the NeoX test
     * compares one value exactly) */
    CU_add_test(s, "rope apply scaled == scale then rope", test_rope_apply_scaled);
    CU_add_test(s, "rope apply: 16 lanes == 8 lanes, bit for bit", test_rope_lanes);
}
