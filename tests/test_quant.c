/* tests/test_quant — type table, f16/bf16 conversions at every edge, row conversions and the
 * typed dot products against scalar/double references. */
#include "test.h"

#include <math.h>
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
    CU_ASSERT(lh_type_known(2) && lh_type_known(3) && lh_type_known(6) && lh_type_known(7));
    for (uint32_t t = 10; t <= 14; t++)
        CU_ASSERT(lh_type_known(t));
    /* Q8_1 / Q8_K are ggml's internal activation types, never in files; IQ*, TQ*, MXFP4 unread */
    CU_ASSERT(!lh_type_known(4) && !lh_type_known(9) && !lh_type_known(15) && !lh_type_known(16));
    CU_ASSERT(lh_type_known(20));   /* IQ4_NL: llama-quantize's Q2_K/Q3_K fallback */
    CU_ASSERT(!lh_type_known(23) && !lh_type_known(31) && !lh_type_known(39) && !lh_type_known(1000));
    CU_ASSERT_EQUAL(lh_type_block(LH_TYPE_Q8_0), 32);
    CU_ASSERT_EQUAL(lh_type_block(LH_TYPE_F16), 1);
    CU_ASSERT_EQUAL(lh_type_block(LH_TYPE_Q4_0), 32);
    CU_ASSERT_EQUAL(lh_type_block(LH_TYPE_Q5_1), 32);
    CU_ASSERT_EQUAL(lh_type_block(LH_TYPE_Q2_K), 256);
    CU_ASSERT_EQUAL(lh_type_block(LH_TYPE_Q6_K), 256);
    CU_ASSERT_EQUAL(lh_type_block(LH_TYPE_IQ4_NL), 32);
    CU_ASSERT_EQUAL(lh_type_block(23), 0);
    /* ggml's block sizes (ggml-common.h static_asserts) */
    static const struct { lh_type t; size_t size; } bs[] = {
        {LH_TYPE_Q4_0, 18}, {LH_TYPE_Q4_1, 20}, {LH_TYPE_Q5_0, 22}, {LH_TYPE_Q5_1, 24},
        {LH_TYPE_Q2_K, 84}, {LH_TYPE_Q3_K, 110}, {LH_TYPE_Q4_K, 144}, {LH_TYPE_Q5_K, 176},
        {LH_TYPE_Q6_K, 210}, {LH_TYPE_IQ4_NL, 18},
    };
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++)
        CU_ASSERT_EQUAL(lh_type_block_size(bs[i].t), bs[i].size);
    CU_ASSERT_EQUAL(sizeof(lh_block_q8K), 292);
    CU_ASSERT_EQUAL(lh_type_row_size(LH_TYPE_Q4_K, 768), 3 * 144);
    CU_ASSERT_EQUAL(lh_type_row_size(LH_TYPE_Q5_0, 64), 44);
    CU_ASSERT_EQUAL(sizeof(lh_block_q8_0), 34);
    CU_ASSERT_EQUAL(lh_type_block_size(LH_TYPE_Q8_0), 34);
    CU_ASSERT_EQUAL(lh_type_row_size(LH_TYPE_Q8_0, 96), 102);
    CU_ASSERT_EQUAL(lh_type_row_size(LH_TYPE_F32, 17), 68);
    CU_ASSERT_EQUAL(lh_type_row_size(LH_TYPE_F16, 17), 34);
    CU_ASSERT_EQUAL(lh_type_row_size(LH_TYPE_BF16, 3), 6);
    CU_ASSERT_EQUAL(lh_type_row_size(23, 256), 0);
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
    static const size_t ns[] = {1, 3, 17, 257, 32, 96, 288, 512, 4096};
    static const lh_type ts[] = {LH_TYPE_F32, LH_TYPE_F16, LH_TYPE_BF16, LH_TYPE_Q8_0,
                                 LH_TYPE_Q4_0, LH_TYPE_Q5_1, LH_TYPE_Q3_K, LH_TYPE_Q6_K};
    for (size_t ti = 0; ti < sizeof ts / sizeof ts[0]; ti++)
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

/* ---- ggml's quantised types ---------------------------------------------------------------- */

#define H_1 0x3c00      /* F16 1.0 */
#define H_HALF 0x3800   /* 0.5 */
#define H_QUARTER 0x3400
#define H_2 0x4000
#define H_M1 0xbc00     /* -1.0 */

/* Blocks written field by field, values worked out by hand from ggml's formulas. */
static void test_known_blocks(void)
{
    float y[256];
    {   /* Q4_0: d (q - 8), low nibbles are elements 0..15, high nibbles 16..31 */
        lh_block_q4_0 b;
        memset(&b, 0x88, sizeof b);   /* every q = 8: value 0 */
        b.d = H_HALF;
        b.qs[0] = 0x1f;               /* elem 0: (15-8)/2, elem 16: (1-8)/2 */
        b.qs[5] = 0x80;               /* elem 5: -4, elem 21: 0 */
        lh_dequant_row(LH_TYPE_Q4_0, &b, y, 32);
        CU_ASSERT(y[0] == 3.5f && y[16] == -3.5f && y[5] == -4.0f && y[21] == 0.0f && y[7] == 0);
    }
    {   /* Q4_1: d q + m */
        lh_block_q4_1 b;
        memset(&b, 0, sizeof b);
        b.d = H_QUARTER, b.m = H_M1;
        b.qs[3] = 0xa2;
        lh_dequant_row(LH_TYPE_Q4_1, &b, y, 32);
        CU_ASSERT(y[3] == -0.5f && y[19] == 1.5f && y[0] == -1.0f);
    }
    {   /* Q5_0: d (q - 16), bit j of qh is the fifth bit of element j */
        lh_block_q5_0 b;
        memset(&b, 0, sizeof b);
        b.d = H_1;
        b.qs[0] = 0x3f, b.qs[15] = 0x70;
        b.qh[0] = 0x01, b.qh[2] = 0x01, b.qh[3] = 0x80;   /* bits 0, 16, 31 */
        lh_dequant_row(LH_TYPE_Q5_0, &b, y, 32);
        CU_ASSERT(y[0] == 15 && y[16] == 3 && y[1] == -16 && y[17] == -16);
        CU_ASSERT(y[15] == -16 && y[31] == 7);
    }
    {   /* Q5_1: d q + m */
        lh_block_q5_1 b;
        memset(&b, 0, sizeof b);
        b.d = H_HALF, b.m = H_2;
        b.qs[2] = 0x51;
        b.qh[0] = 0x04;               /* bit 2: element 2 */
        lh_dequant_row(LH_TYPE_Q5_1, &b, y, 32);
        CU_ASSERT(y[2] == 10.5f && y[18] == 4.5f && y[3] == 2.0f);
    }
    {   /* Q2_K: d sc q - dmin m per 16; element 128h + 32s + l is bits 2s of qs[32h + l] */
        lh_block_q2_K b;
        memset(&b, 0, sizeof b);
        b.d = H_1, b.dmin = H_HALF;
        b.scales[0] = 0x32, b.scales[1] = 0x01, b.scales[2] = 0x14, b.scales[5] = 0xf7;
        b.scales[8] = 0x21;
        b.qs[0] = 0xe7;               /* elems 0, 32, 64, 96: 3, 1, 2, 3 */
        b.qs[16] = 0x12;              /* elem 16: 2, elem 80: 1 */
        b.qs[37] = 0x03;              /* elem 133: 3 */
        lh_dequant_row(LH_TYPE_Q2_K, &b, y, 256);
        CU_ASSERT(y[0] == 4.5f);      /* 1*2*3 - 0.5*3 */
        CU_ASSERT(y[32] == 3.5f);     /* 1*4*1 - 0.5*1 */
        CU_ASSERT(y[64] == 0 && y[96] == 0);
        CU_ASSERT(y[16] == 2.0f);     /* 1*1*2 - 0 */
        CU_ASSERT(y[80] == -0.5f);    /* 1*7*1 - 0.5*15 */
        CU_ASSERT(y[133] == 2.0f);    /* 1*1*3 - 0.5*2 */
    }
    {   /* Q3_K: d (sc - 32) (q - 4); hmask bit set adds 4; 6-bit scales split 4 + 2 */
        lh_block_q3_K b;
        memset(&b, 0, sizeof b);      /* every scale -32, every q -4 */
        b.d = H_HALF;
        b.scales[0] = 0x02, b.scales[8] = 0x02;   /* sub 0: 34 - 32 = 2 */
        b.scales[1] = 0xd0, b.scales[9] = 0x10;   /* sub 9: 0xd | 1 << 4 = 29 - 32 = -3 */
        b.qs[0] = 0x03, b.hmask[0] = 0x01;        /* elem 0: q 3 */
        b.qs[1] = 0x01;                           /* elem 1: q 1 - 4 */
        b.qs[48] = 0x02, b.hmask[16] = 0x10;      /* elem 144 = 32*4 + 16: q 2 */
        lh_dequant_row(LH_TYPE_Q3_K, &b, y, 256);
        CU_ASSERT(y[0] == 3.0f);      /* 0.5*2*3 */
        CU_ASSERT(y[1] == -3.0f);     /* 0.5*2*-3 */
        CU_ASSERT(y[144] == -3.0f);   /* 0.5*-3*2 */
        CU_ASSERT(y[255] == 64.0f);   /* 0.5*-32*-4 */
    }
    lh_block_q4_K b4;
    memset(&b4, 0, sizeof b4);
    b4.d = H_1, b4.dmin = H_HALF;
    b4.scales[0] = 10, b4.scales[4] = 3;          /* sub 0: sc 10, m 3 */
    b4.scales[9] = 0x41, b4.scales[1] = 0x80, b4.scales[5] = 0x40;   /* sub 5: sc 33, m 20 */
    b4.qs[0] = 0x07;
    b4.qs[65] = 0x90;                             /* elem 64*2 + 32 + 1 = 161: high nibble 9 */
    {   /* Q4_K: d sc q - dmin m per 32 */
        lh_dequant_row(LH_TYPE_Q4_K, &b4, y, 256);
        CU_ASSERT(y[0] == 68.5f);     /* 10*7 - 0.5*3 */
        CU_ASSERT(y[161] == 287.0f);  /* 33*9 - 0.5*20 */
        CU_ASSERT(y[32] == 0.0f && y[1] == -1.5f);
    }
    {   /* Q5_K: as Q4_K plus a fifth bit: elem 64k + 32 + l is bit 2k+1 of qh[l] */
        lh_block_q5_K b;
        memset(&b, 0, sizeof b);
        b.d = b4.d, b.dmin = b4.dmin;
        memcpy(b.scales, b4.scales, 12);
        memcpy(b.qs, b4.qs, 128);
        b.qh[1] = 0x20;
        lh_dequant_row(LH_TYPE_Q5_K, &b, y, 256);
        CU_ASSERT(y[0] == 68.5f && y[1] == -1.5f);
        CU_ASSERT(y[161] == 815.0f);  /* 33*(9+16) - 10 */
    }
    {   /* IQ4_NL: d * table[q] */
        lh_block_iq4_nl b;
        memset(&b, 0, sizeof b);      /* q 0: table -127 */
        b.d = H_HALF;
        b.qs[0] = 0xf8, b.qs[9] = 0x07;
        lh_dequant_row(LH_TYPE_IQ4_NL, &b, y, 32);
        CU_ASSERT(y[0] == 0.5f && y[16] == 56.5f && y[9] == -5.0f && y[25] == -63.5f);
    }
    {   /* Q6_K: d sc (q - 32), 16-element signed scales */
        lh_block_q6_K b;
        memset(&b, 0, sizeof b);
        b.d = H_QUARTER;
        b.scales[0] = 4, b.scales[3] = -8, b.scales[13] = 127;
        b.ql[0] = 0x05, b.qh[0] = 0x02;           /* elem 0: 5 | 32 */
        b.ql[48] = 0x0a, b.qh[16] = 0x04;         /* elem 48: 10 | 16 */
        b.ql[80] = 0xf0, b.qh[48] = 0x30;         /* elem 208: 15 | 48 */
        lh_dequant_row(LH_TYPE_Q6_K, &b, y, 256);
        CU_ASSERT(y[0] == 5.0f);      /* 0.25*4*5 */
        CU_ASSERT(y[48] == 12.0f);    /* 0.25*-8*-6 */
        CU_ASSERT(y[208] == 984.25f); /* 0.25*127*31 */
        CU_ASSERT(y[1] == -32.0f);    /* 0.25*4*-32 */
    }
}

static const lh_type qtypes[] = {LH_TYPE_Q4_0, LH_TYPE_Q4_1, LH_TYPE_Q5_0, LH_TYPE_Q5_1,
                                 LH_TYPE_Q8_0, LH_TYPE_Q2_K, LH_TYPE_Q3_K, LH_TYPE_Q4_K,
                                 LH_TYPE_Q5_K, LH_TYPE_Q6_K, LH_TYPE_IQ4_NL};
#define N_QTYPES (sizeof qtypes / sizeof qtypes[0])

static uint64_t fnv1a(const void *p, size_t n)
{
    const unsigned char *c = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * 0x100000001b3ull;
    return h;
}

/* A fixed 1024-value row: stretches of uniform, heavy-tailed, outlier and all-positive values. */
static void gold_row(float *x)
{
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 1024; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        float v = (float)(s >> 40) * (2.0f / 16777216.0f) - 1.0f;
        switch (i / 256) {
        case 0: x[i] = v; break;
        case 1: x[i] = v * v * v * 3.0f; break;
        case 2: x[i] = i % 7 == 0 ? v * 20.0f : v * 0.01f; break;
        default: x[i] = v * v + 0.125f; break;
        }
    }
}

/* lh_quant_row writes the bytes ggml's quantize_row_*_ref writes, and lh_dequant_row gives
 * dequantize_row_*'s floats, bit for bit.  The hashes are FNV-1a of the output of ggml's own
 * functions (libggml-base.so of llama.cpp, 2026-11, called on gold_row; the same comparison on
 * 400 random rows of five distributions and on random block bytes found no difference). */
static void test_vs_ggml(void)
{
    static const struct { lh_type t; uint64_t q, dq; } gold[] = {
        {LH_TYPE_Q4_0, 0x6d3e337ad42feb55ull, 0x153553186f5200c5ull},
        {LH_TYPE_Q4_1, 0xe2325ab903b69df2ull, 0xf2acc3914c021965ull},
        {LH_TYPE_Q5_0, 0x2d3dc3025f97b271ull, 0xb905552c1d72ae6cull},
        {LH_TYPE_Q5_1, 0xfe749646529932e7ull, 0xc4f8e5d0050324c4ull},
        {LH_TYPE_Q8_0, 0x0fb549c9c489c797ull, 0xa816a9b5c6afb5e2ull},
        {LH_TYPE_Q2_K, 0xea3f578afc44ebacull, 0xee8254e56027d0bbull},
        {LH_TYPE_Q3_K, 0xe9fcbe13b056c480ull, 0x020f9fbbe04dcd7eull},
        {LH_TYPE_Q4_K, 0x5ff81153379f85d0ull, 0xe524b338b9922bc3ull},
        {LH_TYPE_Q5_K, 0x322071f78d323b38ull, 0xede58a60b17fe86eull},
        {LH_TYPE_Q6_K, 0xc85557a35caf76a4ull, 0x6e043ea4a27c95e7ull},
        {LH_TYPE_IQ4_NL, 0x1cd9f1229384d261ull, 0xa36b9a56becbf15bull},   /* quantize_iq4_nl */
    };
    float x[1024], y[1024];
    static unsigned char q[2048];
    gold_row(x);
    for (size_t i = 0; i < sizeof gold / sizeof gold[0]; i++) {
        size_t rs = lh_type_row_size(gold[i].t, 1024);
        memset(q, 0, sizeof q);
        lh_quant_row(gold[i].t, x, q, 1024);
        lh_dequant_row(gold[i].t, q, y, 1024);
        uint64_t hq = fnv1a(q, rs), hd = fnv1a(y, sizeof y);
        if (hq != gold[i].q || hd != gold[i].dq)
            fprintf(stderr, "\n  %s: quant hash %016llx dequant hash %016llx\n",
                    lh_type_name(gold[i].t), (unsigned long long)hq, (unsigned long long)hd);
        CU_ASSERT_EQUAL(hq, gold[i].q);
        CU_ASSERT_EQUAL(hd, gold[i].dq);
    }
}

/* Quantise-dequantise keeps the row: RMS error relative to the RMS of uniform(-1, 1) values
 * below each type's bound (about 1.3x what it measures: the bounds fall with the bits, and a
 * wrong element order or scale is off by O(1)).  All-zero blocks come back as zeros. */
static void test_roundtrip(void)
{
    static const struct { lh_type t; double bound; } rt[] = {
        {LH_TYPE_Q4_0, 0.085}, {LH_TYPE_Q4_1, 0.078}, {LH_TYPE_Q5_0, 0.04}, {LH_TYPE_Q5_1, 0.038},
        {LH_TYPE_Q8_0, 0.005}, {LH_TYPE_Q2_K, 0.30}, {LH_TYPE_Q3_K, 0.165}, {LH_TYPE_Q4_K, 0.072},
        {LH_TYPE_Q5_K, 0.036}, {LH_TYPE_Q6_K, 0.017}, {LH_TYPE_IQ4_NL, 0.085},
    };
    size_t n = 256 * 6;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    void *q = malloc(n * 2);
    for (size_t ti = 0; ti < sizeof rt / sizeof rt[0]; ti++) {
        for (size_t i = 0; i < n; i++)
            x[i] = i < 256 ? 0.0f : frand(-1, 1);
        lh_quant_row(rt[ti].t, x, q, n);
        lh_dequant_row(rt[ti].t, q, y, n);
        double e2 = 0, x2 = 0;
        int zeros = 1;
        for (size_t i = 0; i < n; i++) {
            if (i < 256)
                zeros &= y[i] == 0;
            e2 += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
            x2 += (double)x[i] * x[i];
        }
        double rel = sqrt(e2 / x2);
        if (!(rel < rt[ti].bound) || !zeros)
            fprintf(stderr, "\n  %s: relative RMS error %.4f (bound %.3f), zeros %d\n",
                    lh_type_name(rt[ti].t), rel, rt[ti].bound, zeros);
        CU_ASSERT(rel < rt[ti].bound);
        CU_ASSERT(zeros);
    }
    free(x), free(y), free(q);
}

/* The activation quantisers: |x - d q| <= d/2 (+ for the 32-blocks the F16 rounding of d, as
 * ggml keeps it), block sums exact (d times the integer sum for the 32-blocks), and the largest
 * magnitude maps to ±127. */
static void test_q8_act(void)
{
    size_t n = 512;
    float x[512];
    for (size_t i = 0; i < n; i++)
        x[i] = frand(-2, 2) * (float)(1 + i / 100);
    x[300] = -40;
    lh_block_q8a a[16];
    lh_block_q8K k[2];
    CU_ASSERT_EQUAL(lh_q8_size(LH_TYPE_Q4_0, n), sizeof a);
    CU_ASSERT_EQUAL(lh_q8_size(LH_TYPE_Q6_K, n), sizeof k);
    CU_ASSERT_EQUAL(lh_q8_size(LH_TYPE_F16, n), 0);
    lh_q8_quant(LH_TYPE_Q4_0, x, a, n);
    lh_q8_quant(LH_TYPE_Q4_K, x, k, n);
    lh_block_q8a a1[16];
    float amax_f[16];
    lh_q8_quant(LH_TYPE_Q5_1, x, a1, n);
    for (size_t b = 0; b < 16; b++) {
        amax_f[b] = 0;
        for (int j = 0; j < 32; j++)
            amax_f[b] = fabsf(x[32 * b + j]) > amax_f[b] ? fabsf(x[32 * b + j]) : amax_f[b];
        CU_ASSERT(memcmp(a1[b].qs, a[b].qs, 32) == 0 && a1[b].d == a[b].d);
        /* d is amax/127 at F16 precision, as ggml keeps it */
        CU_ASSERT_EQUAL(a[b].d, lh_f16_to_f32(lh_f32_to_f16(amax_f[b] / 127.0f)));
    }
    int bad = 0;
    for (size_t b = 0; b < 16; b++) {
        int s = 0, amax = 0;
        for (int j = 0; j < 32; j++) {
            float v = x[32 * b + j];
            s += a[b].qs[j];
            amax = abs(a[b].qs[j]) > amax ? abs(a[b].qs[j]) : amax;
            /* half a step, plus the F16 rounding of d (2^-11 relative) times |q| <= 127 */
            bad += !(fabsf(v - a[b].d * a[b].qs[j]) <= (0.5001f + 127.0f / 2048) * a[b].d);
        }
        bad += a[b].ds != a[b].d * (float)s || amax != 127;
        /* for Q4_1/Q5_1, ggml's q8_1: the sum term itself rounded to F16 */
        bad += a1[b].ds != lh_f16_to_f32(lh_f32_to_f16(amax_f[b] / 127.0f * (float)s));
    }
    for (size_t b = 0; b < 2; b++) {
        int amax = 0;
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++) {
                int8_t qv = k[b].qs[16 * j + l];
                s += qv;
                amax = abs(qv) > amax ? abs(qv) : amax;
                bad += !(fabsf(x[256 * b + 16 * j + l] - k[b].d * qv) <= 0.5001f * fabsf(k[b].d));
            }
            bad += s != k[b].bsums[j];
        }
        bad += amax != 127;
    }
    CU_ASSERT(k[1].qs[300 - 256] == -127 || k[1].qs[300 - 256] == 127);
    CU_ASSERT_EQUAL(bad, 0);
    /* all zeros: d = 0, every q 0 */
    memset(x, 0, sizeof x);
    lh_q8_quant(LH_TYPE_Q2_K, x, k, 256);
    lh_q8_quant(LH_TYPE_Q8_0, x, a, 32);
    CU_ASSERT(k[0].d == 0 && k[0].qs[5] == 0 && k[0].bsums[3] == 0 && a[0].d == 0 && a[0].ds == 0);
}

/* lh_dot_rows4_q8: four rows st bytes apart (here 5 rows apart, so interleaved with others)
 * give lh_dot_rows_q8's result for each, bit for bit (the decode GEMV mixes the two forms
 * depending on how the rows were split between threads); types without a four-row kernel say
 * so and write nothing. */
static void test_rows4(void)
{
    const size_t n = 32 * 37, nr = 20;
    lh_type t = LH_TYPE_Q8_0;
    size_t rs = lh_type_row_size(t, n);
    float *w = malloc(n * sizeof *w), *x = malloc(n * sizeof *x), y1[20], y4[20];
    char *rows = malloc(rs * nr);
    void *xq = malloc(lh_q8_size(t, n));
    CU_ASSERT_FATAL(w && x && rows && xq);
    for (size_t r = 0; r < nr; r++) {
        for (size_t i = 0; i < n; i++)
            w[i] = frand(-1, 1) * (1 + (float)((i + r) % 13) / 4);
        lh_quant_row(t, w, rows + r * rs, n);
    }
    for (size_t i = 0; i < n; i++)
        x[i] = frand(-2, 2);
    lh_q8_quant(t, x, xq, n);
    lh_dot_rows_q8(t, rows, rs, xq, n, y1, nr);
    for (size_t r = 0; r < nr; r++)
        y4[r] = NAN;
    for (size_t r = 0; r < 5; r++)
        CU_ASSERT_EQUAL(lh_dot_rows4_q8(t, rows + r * rs, 5 * rs, xq, n, y4 + r, 5), 1);
    CU_ASSERT_EQUAL(memcmp(y1, y4, sizeof y1), 0);
    float z = NAN;
    CU_ASSERT_EQUAL(lh_dot_rows4_q8(LH_TYPE_Q4_0, rows, rs, xq, 32, &z, 1), 0);
    CU_ASSERT(isnan(z));
    free(w), free(x), free(rows), free(xq);
}

/* lh_dot_rows_q8 against the plain reference of the same math: the exact dequantised weights
 * times the dequantised 8-bit activations, summed in double.  Bound: 1e-5 of
 * Σ_i (|w_i| + max|w|) |a_i| — the kernels sum exact integers per block and then take a few
 * float roundings per block; the max|w| term covers the offset and min terms that the kernels
 * apply once per block (a cancellation of up to that size).  A wrong scale, nibble or bit is
 * off by a sizeable fraction of Σ|w_i||a_i|.  (Q4_1/Q5_1 take their min term from the F16 block
 * sum, as llama.cpp does; the reference uses that sum.)  The second check is against F32
 * activations (lh_dot_row): the 8-bit rounding moves each a_i by at most half its block's step,
 * so the bound is Σ_i |w_i| step_i / 2 (+ the same float slack and the F16 sum's share). */
static void test_fused(void)
{
    static const size_t nrs[] = {1, 3, 17, 257};
    static const size_t n32[] = {32, 64, 96, 768};
    static const size_t n256[] = {256, 512, 768};
    int bad = 0, bad_f32 = 0, checked = 0, reported = 0;
    for (size_t ti = 0; ti < N_QTYPES; ti++) {
        lh_type t = qtypes[ti];
        int k = lh_q8_kind(t) == LH_Q8A_256;
        CU_ASSERT(lh_q8_kind(t) != 0);
        const size_t *ns = k ? n256 : n32;
        size_t n_ns = k ? 3 : 4;
        for (size_t si = 0; si < n_ns; si++)
            for (size_t ri = 0; ri < 4; ri++) {
                size_t n = ns[si], nr = nrs[ri], rs = lh_type_row_size(t, n);
                if (nr == 257 && n > 256)
                    continue;   /* the large-row case once per type is enough */
                float *w = malloc(n * nr * sizeof *w), *x = malloc(n * sizeof *x);
                float *wd = malloc(n * sizeof *wd), *ad = malloc(n * sizeof *ad);
                float *step = malloc(n * sizeof *step), *y = malloc(nr * sizeof *y);
                char *rows = malloc(rs * nr);
                void *xq = malloc(lh_q8_size(t, n));
                for (size_t i = 0; i < n * nr; i++)
                    w[i] = frand(-1, 1) * (1 + (float)(i % 97) / 20);
                for (size_t i = 0; i < n; i++)
                    x[i] = frand(-1, 1) + (i % 5 == 0 ? 0.5f : 0.0f);
                for (size_t r = 0; r < nr; r++)
                    lh_quant_row(t, w + r * n, rows + r * rs, n);
                lh_q8_quant(t, x, xq, n);
                for (size_t i = 0; i < n; i++) {
                    if (k) {
                        const lh_block_q8K *b = (const lh_block_q8K *)xq + i / 256;
                        ad[i] = b->d * b->qs[i % 256];
                        step[i] = fabsf(b->d);
                    } else {
                        const lh_block_q8a *b = (const lh_block_q8a *)xq + i / 32;
                        ad[i] = b->d * b->qs[i % 32];
                        step[i] = b->d * (1 + 127.0f / 1024);   /* F16 d, see test_q8_act */
                    }
                }
                for (size_t i = 0; i < nr; i++)
                    y[i] = NAN;
                lh_dot_rows_q8(t, rows, rs, xq, n, y, nr);
                for (size_t r = 0; r < nr; r++) {
                    lh_dequant_row(t, rows + r * rs, wd, n);
                    double ref = 0, mag = 0, wmax = 0, qerr = 0;
                    for (size_t i = 0; i < n; i++)
                        wmax = fabs(wd[i]) > wmax ? fabs(wd[i]) : wmax;
                    for (size_t i = 0; i < n; i++) {
                        ref += (double)wd[i] * ad[i];
                        mag += (fabs(wd[i]) + wmax) * fabs(ad[i]);
                        qerr += fabs(wd[i]) * step[i] * 0.5;
                    }
                    if (t == LH_TYPE_Q4_1 || t == LH_TYPE_Q5_1) {
                        /* their min term m·Σa uses the block sum at F16, as llama.cpp's q8_1:
                         * the reference takes the same rounded sum */
                        const char *row = rows + r * rs;
                        for (size_t b = 0; b < n / 32; b++) {
                            const lh_block_q8a *ab = (const lh_block_q8a *)xq + b;
                            uint16_t mh = t == LH_TYPE_Q4_1 ? ((const lh_block_q4_1 *)row)[b].m
                                                            : ((const lh_block_q5_1 *)row)[b].m;
                            double m = lh_f16_to_f32(mh), sa = 0;
                            for (int j = 0; j < 32; j++)
                                sa += ad[32 * b + j];
                            ref += m * ((double)ab->ds - sa);
                        }
                    }
                    double tol = 1e-5 * mag + 1e-30;
                    bad += !(fabs(y[r] - ref) <= tol);
                    float yf = lh_dot_row(t, rows + r * rs, x, n);
                    bad_f32 += !(fabs(y[r] - yf) <= qerr * 1.001 + 2 * tol + fabs(y[r] - ref));
                    checked++;
                }
                if ((bad || bad_f32) && !reported) {
                    fprintf(stderr, "\n  fused %s n %zu rows %zu: %d bad, %d bad vs F32\n",
                            lh_type_name(t), n, nr, bad, bad_f32);
                    reported = 1;   /* the first failing case only */
                }
                free(w), free(x), free(wd), free(ad), free(step), free(y), free(rows), free(xq);
            }
    }
    CU_ASSERT(checked > 100);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(bad_f32, 0);
}

/* lh_gemm_q8 (several activation rows per weight row, for prefill) gives exactly lh_dot_rows_q8's
 * floats for every pair: the kernels keep the per-pair operations and their order. 7 activation
 * rows: one group of four and three single rows; ldy wider than the row count. */
static void test_gemm_q8(void)
{
    enum { NR = 5, NACT = 7, LDY = 9 };
    int bad = 0;
    for (size_t ti = 0; ti < N_QTYPES; ti++) {
        lh_type t = qtypes[ti];
        size_t n = lh_type_block(t) == 256 ? 512 : 96, rs = lh_type_row_size(t, n);
        size_t qs = lh_q8_size(t, n);
        float *w = malloc(NR * n * sizeof *w), *x = malloc(NACT * n * sizeof *x);
        char *rows = malloc(NR * rs), *xq = malloc(NACT * qs);
        float y[NACT * LDY], e[NR];
        for (size_t i = 0; i < NR * n; i++)
            w[i] = frand(-1, 1);
        for (size_t i = 0; i < NACT * n; i++)
            x[i] = frand(-1, 1);
        for (size_t r = 0; r < NR; r++)
            lh_quant_row(t, w + r * n, rows + r * rs, n);
        for (size_t a = 0; a < NACT; a++)
            lh_q8_quant(t, x + a * n, xq + a * qs, n);
        for (size_t i = 0; i < NACT * LDY; i++)
            y[i] = NAN;
        lh_gemm_q8(t, rows, rs, NR, xq, qs, NACT, n, y, LDY);
        int tb = 0;
        for (size_t a = 0; a < NACT; a++) {
            lh_dot_rows_q8(t, rows, rs, xq + a * qs, n, e, NR);
            for (size_t r = 0; r < NR; r++)
                tb += memcmp(&y[a * LDY + r], &e[r], sizeof e[r]) != 0;
            for (size_t r = NR; r < LDY; r++)
                tb += !isnan(y[a * LDY + r]);   /* nothing written past the rows */
        }
        if (tb)
            fprintf(stderr, "\n  gemm_q8 %s: %d differ\n", lh_type_name(t), tb);
        bad += tb;
        free(w), free(x), free(rows), free(xq);
    }
    CU_ASSERT_EQUAL(bad, 0);
}

/* lh_q8p_pack + lh_q8p_gemm (the 32-row interleaved panels of prefill) against lh_dot_rows_q8 on
 * the same quantised activations, for every type with a panel kernel: each (sub-)block's integer
 * sum is the same, only the float sum over blocks is in another order, so the bound is
 * test_fused's, 1e-5 of Σ_i (|w_i| + max|w|) |a_i| (a wrong level, scale, min or correction is
 * off by a sizeable fraction of it).  Odd shapes: 1, 5, 16, 19 and 32 rows (a partial panel is
 * zero-padded and nothing is written past n_rows), 1, 3 and 7 activation rows (groups of four and a tail),
 * several blocks.  Without a panel kernel in this build: a SKIP. */
static void test_panels(void)
{
    static const size_t nrs[] = {1, 5, 16, 19, 32};
    static const size_t nacts[] = {1, 3, 7};
    enum { NR = 32, LDY = 35 };
    int bad = 0, checked = 0, any = 0;
    for (size_t ti = 0; ti < N_QTYPES; ti++) {
        lh_type t = qtypes[ti];
        if (!lh_q8p_has(t))
            continue;
        any = 1;
        int k = lh_q8_kind(t) == LH_Q8A_256;
        size_t n = k ? 768 : 96, rs = lh_type_row_size(t, n), qs = lh_q8_size(t, n);
        size_t nc = lh_q8p_corr_count(t, n);
        CU_ASSERT_EQUAL(nc, k || t == LH_TYPE_Q4_1 || t == LH_TYPE_Q5_1 ? 0 : n / 32);
        float *w = malloc(NR * n * sizeof *w), *x = malloc(7 * n * sizeof *x);
        float *wd = malloc(n * sizeof *wd), *y = malloc(7 * LDY * sizeof *y), e[NR];
        char *rows = malloc(NR * rs), *xq = malloc(7 * qs);
        int32_t *corr = malloc((7 * nc + 1) * sizeof *corr);
        void *panel = NULL;
        CU_ASSERT_FATAL(posix_memalign(&panel, 64, lh_q8p_panel_size(t, n)) == 0);
        for (size_t i = 0; i < NR * n; i++)
            w[i] = frand(-1, 1) * (1 + (float)(i % 89) / 16);
        for (size_t i = 0; i < 7 * n; i++)
            x[i] = frand(-1, 1) + (i % 7 == 0 ? 0.4f : 0.0f);
        for (size_t r = 0; r < NR; r++)
            lh_quant_row(t, w + r * n, rows + r * rs, n);
        for (size_t a = 0; a < 7; a++) {
            lh_q8_quant(t, x + a * n, xq + a * qs, n);
            lh_q8p_corr(t, xq + a * qs, n, corr + a * nc);
        }
        for (size_t ri = 0; ri < 5; ri++)
            for (size_t ai = 0; ai < 3; ai++) {
                size_t nr = nrs[ri], na = nacts[ai];
                for (size_t i = 0; i < 7 * LDY; i++)
                    y[i] = NAN;
                lh_q8p_pack(t, rows, rs, nr, n, panel);
                lh_q8p_gemm(t, panel, nr, xq, qs, nc ? corr : NULL, nc, na, n, y, LDY);
                int tb = 0;
                for (size_t a = 0; a < 7; a++) {
                    lh_dot_rows_q8(t, rows, rs, xq + a * qs, n, e, nr);
                    for (size_t r = 0; r < LDY; r++) {
                        float v = y[a * LDY + r];
                        if (a >= na || r >= nr) {
                            tb += !isnan(v);   /* nothing written past the rows */
                            continue;
                        }
                        lh_dequant_row(t, rows + r * rs, wd, n);
                        double mag = 0, wmax = 0;
                        for (size_t i = 0; i < n; i++)
                            wmax = fabs(wd[i]) > wmax ? fabs(wd[i]) : wmax;
                        for (size_t i = 0; i < n; i++) {
                            float av;
                            if (k) {
                                const lh_block_q8K *b = (const lh_block_q8K *)(xq + a * qs) + i / 256;
                                av = b->d * b->qs[i % 256];
                            } else {
                                const lh_block_q8a *b = (const lh_block_q8a *)(xq + a * qs) + i / 32;
                                av = b->d * b->qs[i % 32];
                            }
                            mag += (fabs(wd[i]) + wmax) * fabs(av);
                        }
                        tb += !(fabs(v - e[r]) <= 1e-5 * mag + 1e-30);
                        checked++;
                    }
                }
                if (tb)
                    fprintf(stderr, "\n  panels %s rows %zu acts %zu: %d bad\n", lh_type_name(t), nr,
                            na, tb);
                bad += tb;
            }
        free(w), free(x), free(wd), free(y), free(rows), free(xq), free(corr), free(panel);
    }
    if (!any) {
        printf("SKIP: no panel kernels in this build (needs AVX-512 VNNI)\n");
        return;
    }
    CU_ASSERT(checked > 500);
    CU_ASSERT_EQUAL(bad, 0);
}

/* lh_q8_quant for the K-quants equals a plain copy of ggml's quantize_row_q8_K byte for byte
 * (the vector path must pick the FIRST value of largest magnitude, whose sign sets the sign of
 * every level: a tie between +m and -m is built in), d and the 16-element sums included. */
static void test_q8K_exact(void)
{
    enum { N = 4 * 256 };
    static float x[N];
    static lh_block_q8K got[4], want[4];
    for (size_t i = 0; i < N; i++)
        x[i] = frand(-3, 3) * (float)(1 + i % 7);
    x[10] = 50, x[200] = -50;              /* block 0: tie, the + comes first */
    x[256 + 3] = -60, x[256 + 255] = 60;   /* block 1: tie, the - comes first */
    for (size_t i = 512; i < 768; i++)     /* block 2: all zero */
        x[i] = 0;
    x[768 + 100] = 1e-30f;                 /* block 3: one tiny value */
    lh_q8_quant(LH_TYPE_Q4_K, x, got, N);
    memset(want, 0, sizeof want);
    for (int b = 0; b < 4; b++) {
        const float *xb = x + 256 * b;
        float max = 0, amax = 0;
        for (int j = 0; j < 256; j++)
            if (fabsf(xb[j]) > amax)
                amax = fabsf(xb[j]), max = xb[j];
        if (amax == 0)
            continue;
        float iscale = -127.f / max;
        for (int j = 0; j < 256; j++) {
            float v = iscale * xb[j];
            int q = (int)nearbyintf(v);   /* nearest, ties to even (the default mode) */
            want[b].qs[j] = (int8_t)(q < 127 ? q : 127);
        }
        for (int j = 0; j < 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++)
                sum += want[b].qs[16 * j + l];
            want[b].bsums[j] = (int16_t)sum;
        }
        want[b].d = 1 / iscale;
    }
    CU_ASSERT_EQUAL(got[0].qs[10], -127);
    CU_ASSERT_EQUAL(got[1].qs[3], -127);
    int bad = 0;
    for (int b = 0; b < 4; b++)
        bad += memcmp(got[b].qs, want[b].qs, 256) != 0 ||
               memcmp(got[b].bsums, want[b].bsums, sizeof want[b].bsums) != 0 ||
               memcmp(&got[b].d, &want[b].d, sizeof want[b].d) != 0;
    CU_ASSERT_EQUAL(bad, 0);
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
    CU_add_test(s, "quantised blocks by hand", test_known_blocks);
    CU_add_test(s, "quantise/dequantise as ggml, bit for bit", test_vs_ggml);
    CU_add_test(s, "quantise round trip", test_roundtrip);
    CU_add_test(s, "8-bit activations", test_q8_act);
    CU_add_test(s, "8-bit K activations as ggml, byte for byte", test_q8K_exact);
    CU_add_test(s, "fused 8-bit dot products", test_fused);
    CU_add_test(s, "four rows at a time == one at a time, bit for bit (Q8_0)", test_rows4);
    CU_add_test(s, "several activation rows at once, bit for bit", test_gemm_q8);
    CU_add_test(s, "32-row interleaved panels (prefill)", test_panels);
}
