/* tests/test_quant — type table, f16/bf16 conversions at every edge, row conversions and the
 * typed dot products against scalar/double references. */
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

#ifdef __F16C__
#include <immintrin.h>
#endif

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint32_t urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

static float frand(float lo, float hi)
{
    return lo + (hi - lo) * (float)((urand() >> 8) * (1.0 / 16777216.0));
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static void test_types(void)
{
    CU_ASSERT_STRING_EQUAL(lh_type_name(0), "F32");
    CU_ASSERT_STRING_EQUAL(lh_type_name(1), "F16");
    CU_ASSERT_STRING_EQUAL(lh_type_name(2), "Q4_0");
    CU_ASSERT_STRING_EQUAL(lh_type_name(8), "Q8_0");
    CU_ASSERT_STRING_EQUAL(lh_type_name(12), "Q4_K");
    CU_ASSERT_STRING_EQUAL(lh_type_name(14), "Q6_K");
    CU_ASSERT_STRING_EQUAL(lh_type_name(30), "BF16");
    CU_ASSERT_STRING_EQUAL(lh_type_name(4), "type 4");
    CU_ASSERT_STRING_EQUAL(lh_type_name(99), "type 99");
    CU_ASSERT_STRING_EQUAL(lh_type_name(0xffffffffu), "type 4294967295");
    CU_ASSERT(lh_type_known(0) && lh_type_known(1) && lh_type_known(8) && lh_type_known(30));
    CU_ASSERT(!lh_type_known(2) && !lh_type_known(12) && !lh_type_known(31) && !lh_type_known(1000));
    CU_ASSERT_EQUAL(lh_type_block(LH_TYPE_Q8_0), 32);
    CU_ASSERT_EQUAL(lh_type_block(LH_TYPE_F16), 1);
    CU_ASSERT_EQUAL(lh_type_block(14), 0);
    CU_ASSERT_EQUAL(sizeof(lh_block_q8_0), 34);
    CU_ASSERT_EQUAL(lh_type_block_size(LH_TYPE_Q8_0), 34);
    CU_ASSERT_EQUAL(lh_type_row_size(LH_TYPE_Q8_0, 96), 102);
    CU_ASSERT_EQUAL(lh_type_row_size(LH_TYPE_F32, 17), 68);
    CU_ASSERT_EQUAL(lh_type_row_size(LH_TYPE_F16, 17), 34);
    CU_ASSERT_EQUAL(lh_type_row_size(LH_TYPE_BF16, 3), 6);
    CU_ASSERT_EQUAL(lh_type_row_size(12, 256), 0);
}

static void test_f16_edges(void)
{
    CU_ASSERT_EQUAL(lh_f32_to_f16(1.0f), 0x3c00);
    CU_ASSERT_EQUAL(lh_f32_to_f16(-2.0f), 0xc000);
    CU_ASSERT_EQUAL(lh_f32_to_f16(0.0f), 0x0000);
    CU_ASSERT_EQUAL(lh_f32_to_f16(-0.0f), 0x8000);
    CU_ASSERT_EQUAL(lh_f32_to_f16(65504.0f), 0x7bff);           /* largest finite */
    CU_ASSERT_EQUAL(lh_f32_to_f16(65519.0f), 0x7bff);           /* just below the tie */
    CU_ASSERT_EQUAL(lh_f32_to_f16(65520.0f), 0x7c00);           /* tie rounds (even) to inf */
    CU_ASSERT_EQUAL(lh_f32_to_f16(1e10f), 0x7c00);
    CU_ASSERT_EQUAL(lh_f32_to_f16(-INFINITY), 0xfc00);
    CU_ASSERT_EQUAL(lh_f32_to_f16(ldexpf(1, -24)), 0x0001);     /* smallest subnormal */
    CU_ASSERT_EQUAL(lh_f32_to_f16(ldexpf(1, -25)), 0x0000);     /* tie to even: 0 */
    CU_ASSERT_EQUAL(lh_f32_to_f16(ldexpf(1.5f, -25)), 0x0001);
    CU_ASSERT_EQUAL(lh_f32_to_f16(ldexpf(3, -25)), 0x0002);     /* 1.5 ulp: tie to even 2 */
    CU_ASSERT_EQUAL(lh_f32_to_f16(ldexpf(1, -26)), 0x0000);
    CU_ASSERT_EQUAL(lh_f32_to_f16(ldexpf(1, -14)), 0x0400);     /* smallest normal */
    CU_ASSERT_EQUAL(lh_f32_to_f16(ldexpf(1023.5f, -24)), 0x0400); /* rounds up into normals */
    CU_ASSERT_EQUAL(lh_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00); /* tie, even stays */
    CU_ASSERT_EQUAL(lh_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02); /* tie, odd rounds up */
    CU_ASSERT_EQUAL(lh_f32_to_f16(1.0f + ldexpf(1, -11) + ldexpf(1, -20)), 0x3c01);
    uint16_t hn = lh_f32_to_f16(NAN);
    CU_ASSERT((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0);
    /* a NaN whose payload sits only in the low bits must not become inf */
    uint16_t hn2 = lh_f32_to_f16(from_bits(0x7f800001u));
    CU_ASSERT((hn2 & 0x7c00) == 0x7c00 && (hn2 & 0x3ff) != 0);

    CU_ASSERT_EQUAL(lh_f16_to_f32(0x3c00), 1.0f);
    CU_ASSERT_EQUAL(lh_f16_to_f32(0x0001), ldexpf(1, -24));
    CU_ASSERT_EQUAL(lh_f16_to_f32(0x03ff), ldexpf(1023, -24));
    CU_ASSERT_EQUAL(lh_f16_to_f32(0x7bff), 65504.0f);
    CU_ASSERT_EQUAL(to_bits(lh_f16_to_f32(0x8000)), 0x80000000u);
    CU_ASSERT_EQUAL(to_bits(lh_f16_to_f32(0x8001)), to_bits(-ldexpf(1, -24)));
    CU_ASSERT(isinf(lh_f16_to_f32(0x7c00)) && lh_f16_to_f32(0x7c00) > 0);
    CU_ASSERT(isinf(lh_f16_to_f32(0xfc00)) && lh_f16_to_f32(0xfc00) < 0);
    CU_ASSERT(isnan(lh_f16_to_f32(0x7e00)) && isnan(lh_f16_to_f32(0x7c01)));

    /* every half survives the round trip (NaNs stay NaN) */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = lh_f16_to_f32((uint16_t)h);
        uint16_t back = lh_f32_to_f16(f);
        if (isnan(f) ? !((back & 0x7c00) == 0x7c00 && (back & 0x3ff)) : back != h)
            bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
}

#ifdef __F16C__
/* The scalar code agrees bit for bit with the F16C instructions the row conversions use. */
static void test_f16_vs_hw(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float a = lh_f16_to_f32((uint16_t)h), b = _cvtsh_ss((unsigned short)h);
        if (to_bits(a) != to_bits(b) && !(isnan(a) && isnan(b)))
            bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
    bad = 0;
    for (int i = 0; i < 200000; i++) {
        /* random bit patterns, biased towards the f16 range (exponents 100..150) */
        uint32_t u = urand();
        if (i & 1)
            u = (u & 0x807fffffu) | ((100u + urand() % 51) << 23);
        float f = from_bits(u);
        uint16_t a = lh_f32_to_f16(f), b = _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
        if (isnan(f) ? !((a & 0x7c00) == 0x7c00 && (a & 0x3ff)) : a != b)
            bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
}
#endif

static void test_bf16(void)
{
    CU_ASSERT_EQUAL(lh_f32_to_bf16(1.0f), 0x3f80);
    CU_ASSERT_EQUAL(lh_f32_to_bf16(from_bits(0x3f808000u)), 0x3f80);   /* tie, even stays */
    CU_ASSERT_EQUAL(lh_f32_to_bf16(from_bits(0x3f818000u)), 0x3f82);   /* tie, odd rounds up */
    CU_ASSERT_EQUAL(lh_f32_to_bf16(from_bits(0x3f808001u)), 0x3f81);
    CU_ASSERT_EQUAL(lh_f32_to_bf16(INFINITY), 0x7f80);
    CU_ASSERT_EQUAL(lh_f32_to_bf16(from_bits(0x7f7fffffu)), 0x7f80);   /* FLT_MAX rounds to inf */
    uint16_t n = lh_f32_to_bf16(from_bits(0x7f800001u));
    CU_ASSERT((n & 0x7f80) == 0x7f80 && (n & 0x7f) != 0);
    CU_ASSERT_EQUAL(lh_bf16_to_f32(0xc040), -3.0f);
    CU_ASSERT_EQUAL(to_bits(lh_bf16_to_f32(0x0001)), 0x00010000u);       /* subnormal kept */
}

/* quant_row then dequant_row equals the element-wise scalar conversions, every type, odd n. */
static void test_rows(void)
{
    static const size_t ns[] = {1, 3, 17, 257};
    for (size_t s = 0; s < 4; s++) {
        size_t n = ns[s];
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
        uint16_t *h = malloc(n * sizeof *h);
        for (size_t i = 0; i < n; i++)
            x[i] = frand(-70000, 70000) * (i % 3 == 0 ? 1e-9f : 1);   /* overflow and subnormals */
        lh_quant_row(LH_TYPE_F16, x, h, n);
        lh_dequant_row(LH_TYPE_F16, h, y, n);
        int bad = 0;
        for (size_t i = 0; i < n; i++)
            bad += h[i] != lh_f32_to_f16(x[i]) || to_bits(y[i]) != to_bits(lh_f16_to_f32(h[i]));
        CU_ASSERT_EQUAL(bad, 0);
        lh_quant_row(LH_TYPE_BF16, x, h, n);
        lh_dequant_row(LH_TYPE_BF16, h, y, n);
        bad = 0;
        for (size_t i = 0; i < n; i++)
            bad += h[i] != lh_f32_to_bf16(x[i]) || to_bits(y[i]) != to_bits(lh_bf16_to_f32(h[i]));
        CU_ASSERT_EQUAL(bad, 0);
        lh_quant_row(LH_TYPE_F32, x, y, n);
        CU_ASSERT(memcmp(x, y, n * sizeof *x) == 0);
        free(x), free(y), free(h);
    }
}

static void test_q8_0(void)
{
    /* hand-checked block: amax 127 gives d = 1 exactly, qs = roundf(x) (halves away from 0) */
    float x[64] = {127, -63.5f, 0.5f, -0.5f, 1.49f, -126.6f};
    lh_block_q8_0 b[2];
    lh_quant_row(LH_TYPE_Q8_0, x, b, 64);
    CU_ASSERT_EQUAL(b[0].d, 0x3c00);
    CU_ASSERT_EQUAL(b[0].qs[0], 127);
    CU_ASSERT_EQUAL(b[0].qs[1], -64);
    CU_ASSERT_EQUAL(b[0].qs[2], 1);
    CU_ASSERT_EQUAL(b[0].qs[3], -1);
    CU_ASSERT_EQUAL(b[0].qs[4], 1);
    CU_ASSERT_EQUAL(b[0].qs[5], -127);
    CU_ASSERT_EQUAL(b[0].qs[6], 0);
    CU_ASSERT_EQUAL(b[1].d, 0);   /* an all-zero block: d = 0, qs = 0 */
    CU_ASSERT_EQUAL(b[1].qs[31], 0);
    /* d = amax/127 in F16: amax 2 gives f16(2/127) */
    float x2[32] = {0};
    x2[7] = -2;
    x2[8] = 1;
    lh_quant_row(LH_TYPE_Q8_0, x2, b, 32);
    CU_ASSERT_EQUAL(b[0].d, lh_f32_to_f16(2.0f / 127.0f));
    CU_ASSERT_EQUAL(b[0].qs[7], -127);
    CU_ASSERT_EQUAL(b[0].qs[8], 64);   /* 63.5 rounds away from zero */

    /* round trip within d/2 (+ the F16 rounding of d: 127 * 2^-11 d) */
    size_t n = 288;
    float *r = malloc(n * sizeof *r), *y = malloc(n * sizeof *y);
    lh_block_q8_0 *q = malloc(n / 32 * sizeof *q);
    for (size_t i = 0; i < n; i++)
        r[i] = frand(-3, 3) * (float)(1 + i / 32);
    lh_quant_row(LH_TYPE_Q8_0, r, q, n);
    lh_dequant_row(LH_TYPE_Q8_0, q, y, n);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        float d = lh_f16_to_f32(q[i / 32].d);
        bad += fabsf(y[i] - d * q[i / 32].qs[i % 32]) != 0;
        bad += fabsf(r[i] - y[i]) > 0.57f * d;
    }
    CU_ASSERT_EQUAL(bad, 0);
    free(r), free(y), free(q);
}

/* lh_dot_row against a double sum over the dequantised row, every type. */
static void test_dot(void)
{
    static const size_t ns[] = {1, 3, 17, 257, 32, 96, 288, 4096};
    static const lh_type ts[] = {LH_TYPE_F32, LH_TYPE_F16, LH_TYPE_BF16, LH_TYPE_Q8_0};
    for (size_t ti = 0; ti < 4; ti++)
        for (size_t s = 0; s < sizeof ns / sizeof ns[0]; s++) {
            size_t n = ns[s];
            if (n % lh_type_block(ts[ti]))
                continue;
            float *w = malloc(n * sizeof *w), *x = malloc(n * sizeof *x), *wd = malloc(n * 4);
            void *row = malloc(lh_type_row_size(ts[ti], n));
            for (size_t i = 0; i < n; i++)
                w[i] = frand(-1, 1), x[i] = frand(-1, 1);
            lh_quant_row(ts[ti], w, row, n);
            lh_dequant_row(ts[ti], row, wd, n);
            double ref = 0, mag = 0;
            for (size_t i = 0; i < n; i++) {
                ref += (double)wd[i] * x[i];
                mag += fabs((double)wd[i] * x[i]);
            }
            float got = lh_dot_row(ts[ti], row, x, n);
            /* float accumulation in 8-32 partial sums: well under 1e-6 of sum|w·x|. */
            CU_ASSERT(fabs(got - ref) <= 1e-6 * mag + 1e-30);
            free(w), free(x), free(wd), free(row);
        }
}

/* lh_dot_rows row by row equals lh_dot_row up to float reassociation, odd row counts and n. */
static void test_dot_rows(void)
{
    static const size_t ns[] = {3, 17, 257};
    static const size_t nrs[] = {1, 3, 4, 9};
    static const lh_type ts[] = {LH_TYPE_F32, LH_TYPE_F16, LH_TYPE_BF16};
    for (size_t ti = 0; ti < 3; ti++)
        for (size_t s = 0; s < 3; s++)
            for (size_t ri = 0; ri < 4; ri++) {
                size_t n = ns[s], nr = nrs[ri], rs = lh_type_row_size(ts[ti], n);
                float *w = malloc(n * nr * sizeof *w), *x = malloc(n * sizeof *x);
                float y[9];
                char *rows = malloc(rs * nr);
                for (size_t i = 0; i < n * nr; i++)
                    w[i] = frand(-1, 1);
                for (size_t i = 0; i < n; i++)
                    x[i] = frand(-1, 1);
                for (size_t r = 0; r < nr; r++)
                    lh_quant_row(ts[ti], w + r * n, rows + r * rs, n);
                lh_dot_rows(ts[ti], rows, rs, x, n, y, nr);
                int bad = 0;
                for (size_t r = 0; r < nr; r++) {
                    float e = lh_dot_row(ts[ti], rows + r * rs, x, n);
                    /* |w|,|x| <= 1, n <= 257: reassociation moves the sum by < 1e-5 */
                    bad += !(fabsf(y[r] - e) < 1e-5f);
                }
                CU_ASSERT_EQUAL(bad, 0);
                free(w), free(x), free(rows);
            }
}

void lh_test_quant(void)
{
    CU_pSuite s = CU_add_suite("quant", NULL, NULL);
    CU_add_test(s, "type table", test_types);
    CU_add_test(s, "f16 edges and round trip", test_f16_edges);
#ifdef __F16C__
    CU_add_test(s, "f16 scalar matches F16C", test_f16_vs_hw);
#endif
    CU_add_test(s, "bf16", test_bf16);
    CU_add_test(s, "rows", test_rows);
    CU_add_test(s, "q8_0 as ggml", test_q8_0);
    CU_add_test(s, "dot rows", test_dot);
    CU_add_test(s, "dot four rows at a time", test_dot_rows);
}
