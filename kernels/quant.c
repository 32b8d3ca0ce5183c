/* kernels/quant — see quant.h.
 *
 * The scalar f16/bf16 conversions are bit-exact IEEE (round to nearest even, subnormals, inf,
 * NaN kept quiet); with F16C the row conversions use the hardware instructions, which give the
 * same bits (tests/test_quant.c checks all 65536 halves both ways against the scalar code).
 * Q8_0 quantisation follows ggml's reference exactly: d = amax/127, id = 1/d, qs = roundf(x*id),
 * d stored as F16.
 */
#include "quant.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "simd.h"
#ifdef __F16C__
#include <immintrin.h>
#endif

/* ---- type table ----------------------------------------------------------------------------- */

/* ggml's numbering; gaps are numbers ggml retired (Q4_2, Q4_3, the repacked Q4_0_x_y ...). */
static const char *const type_names[] = {
    [0] = "F32",      [1] = "F16",      [2] = "Q4_0",     [3] = "Q4_1",     [6] = "Q5_0",
    [7] = "Q5_1",     [8] = "Q8_0",     [9] = "Q8_1",     [10] = "Q2_K",    [11] = "Q3_K",
    [12] = "Q4_K",    [13] = "Q5_K",    [14] = "Q6_K",    [15] = "Q8_K",    [16] = "IQ2_XXS",
    [17] = "IQ2_XS",  [18] = "IQ3_XXS", [19] = "IQ1_S",   [20] = "IQ4_NL",  [21] = "IQ3_S",
    [22] = "IQ2_S",   [23] = "IQ4_XS",  [24] = "I8",      [25] = "I16",     [26] = "I32",
    [27] = "I64",     [28] = "F64",     [29] = "IQ1_M",   [30] = "BF16",    [34] = "TQ1_0",
    [35] = "TQ2_0",   [39] = "MXFP4",
};

int lh_type_known(uint32_t type)
{
    return lh_type_block(type) != 0;
}

const char *lh_type_name(uint32_t type)
{
    /* Unnamed numbers get "type N"; a small ring of buffers keeps a few such names valid at once
     * (logging two types in one message). */
    static _Thread_local char buf[4][16];
    static _Thread_local unsigned next;
    if (type < sizeof type_names / sizeof type_names[0] && type_names[type])
        return type_names[type];
    char *b = buf[next++ % 4];
    snprintf(b, sizeof buf[0], "type %u", type);
    return b;
}

size_t lh_type_block(uint32_t type)
{
    switch (type) {
    case LH_TYPE_F32:
    case LH_TYPE_F16:
    case LH_TYPE_BF16: return 1;
    case LH_TYPE_Q4_0:
    case LH_TYPE_Q4_1:
    case LH_TYPE_Q5_0:
    case LH_TYPE_Q5_1:
    case LH_TYPE_Q8_0:
    case LH_TYPE_IQ4_NL: return 32;
    case LH_TYPE_Q2_K:
    case LH_TYPE_Q3_K:
    case LH_TYPE_Q4_K:
    case LH_TYPE_Q5_K:
    case LH_TYPE_Q6_K: return LH_QK_K;
    default: return 0;
    }
}

size_t lh_type_block_size(uint32_t type)
{
    switch (type) {
    case LH_TYPE_F32: return 4;
    case LH_TYPE_F16:
    case LH_TYPE_BF16: return 2;
    case LH_TYPE_Q4_0: return sizeof(lh_block_q4_0);
    case LH_TYPE_Q4_1: return sizeof(lh_block_q4_1);
    case LH_TYPE_Q5_0: return sizeof(lh_block_q5_0);
    case LH_TYPE_Q5_1: return sizeof(lh_block_q5_1);
    case LH_TYPE_Q8_0: return sizeof(lh_block_q8_0);
    case LH_TYPE_Q2_K: return sizeof(lh_block_q2_K);
    case LH_TYPE_Q3_K: return sizeof(lh_block_q3_K);
    case LH_TYPE_Q4_K: return sizeof(lh_block_q4_K);
    case LH_TYPE_Q5_K: return sizeof(lh_block_q5_K);
    case LH_TYPE_Q6_K: return sizeof(lh_block_q6_K);
    case LH_TYPE_IQ4_NL: return sizeof(lh_block_iq4_nl);
    default: return 0;
    }
}

size_t lh_type_row_size(uint32_t type, size_t n)
{
    size_t blk = lh_type_block(type);
    return blk ? n / blk * lh_type_block_size(type) : 0;
}

/* ---- scalar conversions --------------------------------------------------------------------- */

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float lh_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in float */
        float v = (float)mant * 5.9604644775390625e-8f;
        return bits_f32(f32_bits(v) | sign);
    }
    if (exp == 31)
        return bits_f32(sign | 0x7f800000u | (mant << 13));
    return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t lh_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t exp = (x >> 23) & 0xff, mant = x & 0x7fffff;
    if (exp == 0xff) {
        if (mant == 0)
            return sign | 0x7c00;
        return sign | 0x7e00 | (uint16_t)(mant >> 13);   /* quiet NaN, top payload bits */
    }
    int e = (int)exp - 127 + 15;
    if (e >= 31)
        return sign | 0x7c00;
    if (e <= 0) {
        if (e < -10)
            return sign;   /* below half the smallest subnormal: rounds to zero */
        uint32_t m = mant | 0x800000;
        unsigned shift = (unsigned)(14 - e);
        uint32_t res = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (res & 1)))
            res++;   /* may carry into the exponent: the smallest normal, as it should */
        return sign | (uint16_t)res;
    }
    uint32_t res = ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (res & 1)))
        res++;     /* a carry out of the mantissa bumps the exponent, up to inf */
    return sign | (uint16_t)res;
}

float lh_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t lh_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000)
        return (uint16_t)((x >> 16) | 0x40);   /* NaN stays NaN, quiet */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

/* The scalar conversion, or the one-instruction hardware one where there is F16C (same bits). */
static inline float f16_fast(uint16_t h)
{
#ifdef __F16C__
    return _cvtsh_ss(h);
#else
    return lh_f16_to_f32(h);
#endif
}

/* ---- ggml's quantised types: dequantisation --------------------------------------------------
 *
 * Each function performs the float operations of ggml's dequantize_row_* in the same order
 * (products of an int converted to float with the F16 scales, no FMA), so the values match ggml's
 * bit for bit; tests/test_quant.c builds blocks by hand and checks the values. */

static void dequant_q4_0(const lh_block_q4_0 *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, y += 32) {
        float d = f16_fast(b[i].d);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((b[i].qs[j] & 0x0f) - 8) * d;
            y[j + 16] = (float)((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void dequant_q4_1(const lh_block_q4_1 *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, y += 32) {
        float d = f16_fast(b[i].d), m = f16_fast(b[i].m);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(b[i].qs[j] & 0x0f) * d + m;
            y[j + 16] = (float)(b[i].qs[j] >> 4) * d + m;
        }
    }
}

static inline uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void dequant_q5_0(const lh_block_q5_0 *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, y += 32) {
        float d = f16_fast(b[i].d);
        uint32_t qh = le32(b[i].qh);
        for (int j = 0; j < 16; j++) {
            int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
            y[j] = (float)(((b[i].qs[j] & 0x0f) | h0 << 4) - 16) * d;
            y[j + 16] = (float)(((b[i].qs[j] >> 4) | h1 << 4) - 16) * d;
        }
    }
}

static void dequant_q5_1(const lh_block_q5_1 *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, y += 32) {
        float d = f16_fast(b[i].d), m = f16_fast(b[i].m);
        uint32_t qh = le32(b[i].qh);
        for (int j = 0; j < 16; j++) {
            int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
            y[j] = (float)((b[i].qs[j] & 0x0f) | h0 << 4) * d + m;
            y[j + 16] = (float)((b[i].qs[j] >> 4) | h1 << 4) * d + m;
        }
    }
}

static void dequant_q2_K(const lh_block_q2_K *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++) {
        float d = f16_fast(b[i].d), dmin = f16_fast(b[i].dmin);
        const uint8_t *q = b[i].qs;
        int is = 0;
        for (int h = 0; h < 2; h++, q += 32)
            for (int shift = 0; shift < 8; shift += 2)
                for (int half = 0; half < 2; half++) {
                    uint8_t sc = b[i].scales[is++];
                    float dl = d * (float)(sc & 0x0f), ml = dmin * (float)(sc >> 4);
                    for (int l = 0; l < 16; l++)
                        *y++ = dl * (float)((q[16 * half + l] >> shift) & 3) - ml;
                }
    }
}

/* The 16 6-bit scales of a Q3_K block, offset removed (-32 .. 31). */
static inline void q3_K_scales(const uint8_t *s, int8_t *sc)
{
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? s[j] & 0x0f : s[j - 8] >> 4;
        int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        sc[j] = (int8_t)((lo | hi << 4) - 32);
    }
}

static void dequant_q3_K(const lh_block_q3_K *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++) {
        float d = f16_fast(b[i].d);
        int8_t sc[16];
        q3_K_scales(b[i].scales, sc);
        const uint8_t *q = b[i].qs, *hm = b[i].hmask;
        int is = 0;
        uint8_t m = 1;
        for (int h = 0; h < 2; h++, q += 32)
            for (int shift = 0; shift < 8; shift += 2, m <<= 1)
                for (int half = 0; half < 2; half++) {
                    float dl = d * (float)sc[is++];
                    for (int l = 16 * half; l < 16 * half + 16; l++)
                        *y++ = dl * (float)(((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
                }
    }
}

/* Scale and min of 32-element sub-block j (0..7) of a Q4_K/Q5_K block. */
static inline void scale_min_k4(int j, const uint8_t *q, int *sc, int *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void dequant_q4_K(const lh_block_q4_K *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++) {
        float d = f16_fast(b[i].d), dmin = f16_fast(b[i].dmin);
        const uint8_t *q = b[i].qs;
        for (int k = 0; k < 4; k++, q += 32) {
            int sc, m;
            scale_min_k4(2 * k, b[i].scales, &sc, &m);
            float d1 = d * (float)sc, m1 = dmin * (float)m;
            scale_min_k4(2 * k + 1, b[i].scales, &sc, &m);
            float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)(q[l] & 0x0f) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

static void dequant_q5_K(const lh_block_q5_K *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++) {
        float d = f16_fast(b[i].d), dmin = f16_fast(b[i].dmin);
        const uint8_t *q = b[i].qs, *qh = b[i].qh;
        for (int k = 0; k < 4; k++, q += 32) {
            int sc, m;
            scale_min_k4(2 * k, b[i].scales, &sc, &m);
            float d1 = d * (float)sc, m1 = dmin * (float)m;
            scale_min_k4(2 * k + 1, b[i].scales, &sc, &m);
            float d2 = d * (float)sc, m2 = dmin * (float)m;
            uint8_t u1 = (uint8_t)(1u << (2 * k)), u2 = (uint8_t)(2u << (2 * k));
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)((q[l] & 0x0f) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)((q[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

static void dequant_q6_K(const lh_block_q6_K *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++) {
        float d = f16_fast(b[i].d);
        const uint8_t *ql = b[i].ql, *qh = b[i].qh;
        const int8_t *sc = b[i].scales;
        for (int h = 0; h < 2; h++, y += 128, ql += 64, qh += 32, sc += 8)
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0x0f) | ((qh[l] >> 0) & 3) << 4) - 32;
                int q2 = ((ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4) - 32;
                int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                y[l] = d * (float)sc[is] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
    }
}

/* IQ4_NL: 16 non-uniform int8 levels (ggml's kvalues_iq4nl). */
const int8_t lh_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                    1,    13,   25,  38,  53,  69,  89,  113};

static void dequant_iq4_nl(const lh_block_iq4_nl *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, y += 32) {
        float d = f16_fast(b[i].d);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)lh_iq4nl_values[b[i].qs[j] & 0x0f];
            y[j + 16] = d * (float)lh_iq4nl_values[b[i].qs[j] >> 4];
        }
    }
}

/* ---- ggml's quantised types: reference quantisation -----------------------------------------
 *
 * What ggml's quantize_row_*_ref computes (and llama-quantize writes when it has no importance
 * matrix), rewritten: the same searches over candidate scales, the same float operations in the
 * same order, so files we write are the files llama.cpp would write. */

#define GROUP_MAX_EPS 1e-15f

/* Round to nearest, ties to even, for |f| <= 2^22: the float-add trick ggml uses (kept rather than
 * lrintf so that out-of-range values wrap the same way). */
static inline int nearest_int(float f)
{
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* The element of x[0..n) largest in magnitude (the first of equals), its magnitude in *amaxp
 * (unless NULL): the reference quantisers scale by it, keeping its sign. */
static float signed_absmax(const float *x, int n, float *amaxp)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amaxp)
        *amaxp = amax;
    return max;
}

static void quant_q4_0(const float *x, lh_block_q4_0 *b, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += 32) {
        float max = signed_absmax(x, 32, NULL);
        float d = max / -8, id = d != 0 ? 1.0f / d : 0.0f;
        b[i].d = lh_f32_to_f16(d);
        for (int j = 0; j < 16; j++) {
            /* the cast truncates toward zero after the +8.5 shift, as ggml's does */
            int q0 = imin(15, (int8_t)(x[j] * id + 8.5f));
            int q1 = imin(15, (int8_t)(x[j + 16] * id + 8.5f));
            b[i].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

static void quant_q4_1(const float *x, lh_block_q4_1 *b, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += 32) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < 32; j++) {
            if (x[j] < min)
                min = x[j];
            if (x[j] > max)
                max = x[j];
        }
        float d = (max - min) / 15, id = d != 0 ? 1.0f / d : 0.0f;
        b[i].d = lh_f32_to_f16(d);
        b[i].m = lh_f32_to_f16(min);
        for (int j = 0; j < 16; j++) {
            int q0 = imin(15, (int8_t)((x[j] - min) * id + 0.5f));
            int q1 = imin(15, (int8_t)((x[j + 16] - min) * id + 0.5f));
            b[i].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

static void quant_q5_0(const float *x, lh_block_q5_0 *b, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += 32) {
        float max = signed_absmax(x, 32, NULL);
        float d = max / -16, id = d != 0 ? 1.0f / d : 0.0f;
        b[i].d = lh_f32_to_f16(d);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            uint8_t q0 = (uint8_t)imin(31, (int8_t)(x[j] * id + 16.5f));
            uint8_t q1 = (uint8_t)imin(31, (int8_t)(x[j + 16] * id + 16.5f));
            b[i].qs[j] = (uint8_t)((q0 & 0x0f) | (q1 & 0x0f) << 4);
            qh |= (uint32_t)((q0 & 0x10u) >> 4) << j;
            qh |= (uint32_t)((q1 & 0x10u) >> 4) << (j + 16);
        }
        put_le32(b[i].qh, qh);
    }
}

static void quant_q5_1(const float *x, lh_block_q5_1 *b, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += 32) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < 32; j++) {
            if (x[j] < min)
                min = x[j];
            if (x[j] > max)
                max = x[j];
        }
        float d = (max - min) / 31, id = d != 0 ? 1.0f / d : 0.0f;
        b[i].d = lh_f32_to_f16(d);
        b[i].m = lh_f32_to_f16(min);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            uint8_t q0 = (uint8_t)((x[j] - min) * id + 0.5f);
            uint8_t q1 = (uint8_t)((x[j + 16] - min) * id + 0.5f);
            b[i].qs[j] = (uint8_t)((q0 & 0x0f) | (q1 & 0x0f) << 4);
            qh |= (uint32_t)((q0 & 0x10u) >> 4) << j;
            qh |= (uint32_t)((q1 & 0x10u) >> 4) << (j + 16);
        }
        put_le32(b[i].qh, qh);
    }
}

/* Scale for n signed levels -nmax .. nmax-1 minimising the weighted error (weights x², the only
 * rmse_type the reference quantisers use); L gets the levels + nmax. */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L)
{
    float amax;
    float max = signed_absmax(x, n, &amax);
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++)
            L[i] = 0;
        return 0.f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0)
            continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
            float w = x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Q3_K's per-16 scale: start from -nmax/max, then move single levels while the x²-weighted fit
 * improves (at most 5 passes). L gets levels + nmax. */
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L)
{
    float amax;
    float max = signed_absmax(x, n, &amax);
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++)
            L[i] = 0;
        return 0.f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * (float)L[i] * (float)L[i];
                int new_l = imax(-nmax, imin(nmax - 1, nearest_int(x[i] * sl2 / slx)));
                if (new_l != L[i]) {
                    slx += w * x[i] * (float)new_l;
                    sl2 += w * (float)new_l * (float)new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed)
            break;
    }
    for (int i = 0; i < n; i++)
        L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Scale and min (x ≈ scale * L - min, L in 0..nmax) for an asymmetric sub-block: a weighted
 * least-squares fit tried at nstep + 1 candidate scales; *the_min gets the (positive) min. */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                              float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                              int use_mad)
{
    float min = x[0], max = x[0];
    float sum_w = weights[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0)
        min = 0;
    if (max == min) {
        for (int i = 0; i < n; i++)
            L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)imax(0, imin(nmax, l));
        float diff = scale * (float)L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = imax(0, imin(nmax, nearest_int(iscale * (x[i] - min))));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * (float)l;
            sum_l2 += w * (float)l * (float)l;
            sum_xl += w * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Packs 256 2-bit levels: element 128h + 32s + l goes to bits 2s of qs[32h + l]. */
static void pack_2bit(const uint8_t *L, uint8_t *qs)
{
    for (int j = 0; j < LH_QK_K; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | L[j + l + 32] << 2 | L[j + l + 64] << 4 |
                                      L[j + l + 96] << 6);
}

static void quant_q2_K(const float *x, lh_block_q2_K *b, size_t nb)
{
    uint8_t L[LH_QK_K], Laux[16];
    float weights[16], mins[16], scales[16];
    const float q4scale = 15.f;
    for (size_t i = 0; i < nb; i++, x += LH_QK_K) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 16; j++) {
            for (int l = 0; l < 16; l++)
                weights[l] = fabsf(x[16 * j + l]);
            scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux,
                                         -0.5f, 0.1f, 15, 1);
            if (scales[j] > max_scale)
                max_scale = scales[j];
            if (mins[j] > max_min)
                max_min = mins[j];
        }
        if (max_scale > 0) {
            float iscale = q4scale / max_scale;
            for (int j = 0; j < 16; j++)
                b[i].scales[j] = (uint8_t)nearest_int(iscale * scales[j]);
            b[i].d = lh_f32_to_f16(max_scale / q4scale);
        } else {
            memset(b[i].scales, 0, 16);
            b[i].d = lh_f32_to_f16(0.f);
        }
        if (max_min > 0) {
            float iscale = q4scale / max_min;
            for (int j = 0; j < 16; j++)
                b[i].scales[j] |= (uint8_t)(nearest_int(iscale * mins[j]) << 4);
            b[i].dmin = lh_f32_to_f16(max_min / q4scale);
        } else {
            b[i].dmin = lh_f32_to_f16(0.f);
        }
        for (int j = 0; j < 16; j++) {
            float d = lh_f16_to_f32(b[i].d) * (float)(b[i].scales[j] & 0x0f);
            if (d == 0)
                continue;
            float dm = lh_f16_to_f32(b[i].dmin) * (float)(b[i].scales[j] >> 4);
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (uint8_t)imax(0, imin(3, nearest_int((x[16 * j + l] + dm) / d)));
        }
        pack_2bit(L, b[i].qs);
    }
}

static void quant_q3_K(const float *x, lh_block_q3_K *b, size_t nb)
{
    int8_t L[LH_QK_K];
    float scales[16];
    for (size_t i = 0; i < nb; i++, x += LH_QK_K) {
        float max_scale = 0, amax = 0;
        for (int j = 0; j < 16; j++) {
            scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
            float a = fabsf(scales[j]);
            if (a > amax) {
                amax = a;
                max_scale = scales[j];
            }
        }
        memset(b[i].scales, 0, 12);
        if (max_scale != 0) {
            float iscale = -32.f / max_scale;
            for (int j = 0; j < 16; j++) {
                int8_t l8 = (int8_t)nearest_int(iscale * scales[j]);
                int l = imax(-32, imin(31, l8)) + 32;
                if (j < 8)
                    b[i].scales[j] = (uint8_t)(l & 0x0f);
                else
                    b[i].scales[j - 8] |= (uint8_t)((l & 0x0f) << 4);
                b[i].scales[j % 4 + 8] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
            }
            b[i].d = lh_f32_to_f16(1 / iscale);
        } else {
            b[i].d = lh_f32_to_f16(0.f);
        }
        int8_t sc[16];
        q3_K_scales(b[i].scales, sc);
        for (int j = 0; j < 16; j++) {
            float d = lh_f16_to_f32(b[i].d) * (float)sc[j];
            if (d == 0)
                continue;
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (int8_t)(imax(-4, imin(3, nearest_int(x[16 * j + l] / d))) + 4);
        }
        /* high bit of element 32k + l into bit k of hmask[l] */
        memset(b[i].hmask, 0, 32);
        for (int j = 0; j < LH_QK_K; j++)
            if (L[j] > 3) {
                b[i].hmask[j % 32] |= (uint8_t)(1u << (j / 32));
                L[j] = (int8_t)(L[j] - 4);
            }
        pack_2bit((const uint8_t *)L, b[i].qs);
    }
}

/* Packs 8 6-bit scales and mins the way scale_min_k4 reads them. */
static void pack_scale_min_k4(const float *scales, const float *mins, float max_scale,
                              float max_min, uint8_t *q)
{
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; j++) {
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            q[j] = ls;
            q[j + 4] = lm;
        } else {
            q[j + 4] = (uint8_t)((ls & 0x0f) | (lm & 0x0f) << 4);
            q[j - 4] |= (uint8_t)((ls >> 4) << 6);
            q[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
}

/* Q4_K (nmax 15) and Q5_K (nmax 31): per 32-element sub-block scales and mins, then levels. */
static void quant_k4_k5(const float *x, uint16_t *dp, uint16_t *dminp, uint8_t *scq, uint8_t *L,
                        int nmax)
{
    uint8_t Laux[32];
    float weights[32], mins[8], scales[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++)
            weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = nmax == 15
            ? make_qkx2_quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f,
                               20, 0)
            : make_qkx2_quants(32, 31, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.5f,
                               0.1f, 15, 0);
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    memset(scq, 0, 12);
    pack_scale_min_k4(scales, mins, max_scale, max_min, scq);
    *dp = lh_f32_to_f16(max_scale / 63.f);
    *dminp = lh_f32_to_f16(max_min / 63.f);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        scale_min_k4(j, scq, &sc, &m);
        float d = lh_f16_to_f32(*dp) * (float)sc;
        if (d == 0)
            continue;
        float dm = lh_f16_to_f32(*dminp) * (float)m;
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = (uint8_t)imax(0, imin(nmax, nearest_int((x[32 * j + l] + dm) / d)));
    }
}

static void quant_q4_K(const float *x, lh_block_q4_K *b, size_t nb)
{
    uint8_t L[LH_QK_K];
    for (size_t i = 0; i < nb; i++, x += LH_QK_K) {
        quant_k4_k5(x, &b[i].d, &b[i].dmin, b[i].scales, L, 15);
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < 32; l++)
                b[i].qs[32 * k + l] = (uint8_t)(L[64 * k + l] | L[64 * k + 32 + l] << 4);
    }
}

static void quant_q5_K(const float *x, lh_block_q5_K *b, size_t nb)
{
    uint8_t L[LH_QK_K];
    for (size_t i = 0; i < nb; i++, x += LH_QK_K) {
        quant_k4_k5(x, &b[i].d, &b[i].dmin, b[i].scales, L, 31);
        memset(b[i].qh, 0, 32);
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < 32; l++) {
                int l1 = L[64 * k + l], l2 = L[64 * k + 32 + l];
                if (l1 > 15) {
                    l1 -= 16;
                    b[i].qh[l] |= (uint8_t)(1u << (2 * k));
                }
                if (l2 > 15) {
                    l2 -= 16;
                    b[i].qh[l] |= (uint8_t)(2u << (2 * k));
                }
                b[i].qs[32 * k + l] = (uint8_t)(l1 | l2 << 4);
            }
    }
}

static void quant_q6_K(const float *x, lh_block_q6_K *b, size_t nb)
{
    int8_t L[LH_QK_K];
    float scales[16];
    for (size_t i = 0; i < nb; i++, x += LH_QK_K) {
        float max_scale = 0, max_abs_scale = 0;
        for (int j = 0; j < 16; j++) {
            scales[j] = make_qx_quants(16, 32, x + 16 * j, L + 16 * j);
            float a = fabsf(scales[j]);
            if (a > max_abs_scale) {
                max_abs_scale = a;
                max_scale = scales[j];
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        float iscale = -128.f / max_scale;
        b[i].d = lh_f32_to_f16(1 / iscale);
        for (int j = 0; j < 16; j++)
            b[i].scales[j] = (int8_t)imin(127, nearest_int(iscale * scales[j]));
        for (int j = 0; j < 16; j++) {
            float d = lh_f16_to_f32(b[i].d) * (float)b[i].scales[j];
            if (d == 0)
                continue;
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (int8_t)(imax(-32, imin(31, nearest_int(x[16 * j + l] / d))) + 32);
        }
        for (int h = 0; h < 2; h++) {
            const int8_t *Lh = L + 128 * h;
            uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((Lh[l] & 0x0f) | (Lh[l + 64] & 0x0f) << 4);
                ql[l + 32] = (uint8_t)((Lh[l + 32] & 0x0f) | (Lh[l + 96] & 0x0f) << 4);
                qh[l] = (uint8_t)((Lh[l] >> 4) | (Lh[l + 32] >> 4) << 2 | (Lh[l + 64] >> 4) << 4 |
                                  (Lh[l + 96] >> 4) << 6);
            }
        }
    }
}

/* Index of the level of val[0..n) (ascending) nearest to x; ties go up. */
static int best_index_int8(int n, const int8_t *val, float x)
{
    if (x <= (float)val[0])
        return 0;
    if (x >= (float)val[n - 1])
        return n - 1;
    int ml = 0, mu = n - 1;
    while (mu - ml > 1) {
        int mav = (ml + mu) / 2;
        if (x < (float)val[mav])
            mu = mav;
        else
            ml = mav;
    }
    return x - (float)val[mu - 1] < (float)val[mu] - x ? mu - 1 : mu;
}

/* ggml's quantize_iq4_nl without an importance matrix (weights x², 15 candidate scales around
 * max/127, then the levels for the best scale). */
static void quant_iq4_nl(const float *x, lh_block_iq4_nl *b, size_t nb)
{
    const int8_t *values = lh_iq4nl_values;
    const int ntry = 7;
    uint8_t L[32];
    float weight[32];
    for (size_t i = 0; i < nb; i++, x += 32) {
        float scale;
        memset(b[i].qs, 0, 16);
        for (int j = 0; j < 32; j++)
            weight[j] = x[j] * x[j];
        float amax;
        float max = signed_absmax(x, 32, &amax);
        if (amax < GROUP_MAX_EPS) {
            scale = 0;
        } else {
            float d = -max / (float)values[0];
            float id = 1 / d;
            float sumqx = 0, sumq2 = 0;
            for (int j = 0; j < 32; j++) {
                float q = (float)values[best_index_int8(16, values, id * x[j])];
                float w = weight[j];
                sumqx += w * q * x[j];
                sumq2 += w * q * q;
            }
            d = sumqx / sumq2;
            float best = d * sumqx;
            for (int itry = -ntry; itry <= ntry; itry++) {
                id = (float)(itry + values[0]) / max;
                sumqx = sumq2 = 0;
                for (int j = 0; j < 32; j++) {
                    float q = (float)values[best_index_int8(16, values, id * x[j])];
                    float w = weight[j];
                    sumqx += w * q * x[j];
                    sumq2 += w * q * q;
                }
                if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                    d = sumqx / sumq2;
                    best = d * sumqx;
                }
            }
            scale = d;
        }
        b[i].d = lh_f32_to_f16(scale);
        float id = scale != 0 ? 1 / scale : 0;
        for (int j = 0; j < 32; j++)
            L[j] = (uint8_t)best_index_int8(16, values, id * x[j]);
        for (int j = 0; j < 16; j++)
            b[i].qs[j] = (uint8_t)(L[j] | L[16 + j] << 4);
    }
}

/* ---- rows ----------------------------------------------------------------------------------- */

static void dequant_q8_0(const lh_block_q8_0 *b, float *dst, size_t n)
{
    for (size_t i = 0; i < n / LH_QK8_0; i++) {
        float d = f16_fast(b[i].d);
        float *o = dst + i * LH_QK8_0;
#ifdef LH_HAVE_AVX2
        __m256 vd = _mm256_set1_ps(d);
        for (size_t j = 0; j < LH_QK8_0; j += 8) {
            __m128i q = _mm_loadl_epi64((const __m128i *)(b[i].qs + j));
            __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
            _mm256_storeu_ps(o + j, _mm256_mul_ps(v, vd));
        }
#else
        for (size_t j = 0; j < LH_QK8_0; j++)
            o[j] = d * (float)b[i].qs[j];
#endif
    }
}

void lh_dequant_row(lh_type t, const void *src, float *dst, size_t n)
{
    size_t i = 0;
    switch (t) {
    case LH_TYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        return;
    case LH_TYPE_F16: {
        const uint16_t *s = src;
#if defined(LH_HAVE_AVX2) && defined(__F16C__)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
#endif
        for (; i < n; i++)
            dst[i] = lh_f16_to_f32(s[i]);
        return;
    }
    case LH_TYPE_BF16: {
        const uint16_t *s = src;
#ifdef LH_HAVE_AVX2
        for (; i + 8 <= n; i += 8) {
            __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
        }
#endif
        for (; i < n; i++)
            dst[i] = lh_bf16_to_f32(s[i]);
        return;
    }
    case LH_TYPE_Q8_0:
        dequant_q8_0(src, dst, n);
        return;
    case LH_TYPE_Q4_0: dequant_q4_0(src, dst, n / 32); return;
    case LH_TYPE_Q4_1: dequant_q4_1(src, dst, n / 32); return;
    case LH_TYPE_Q5_0: dequant_q5_0(src, dst, n / 32); return;
    case LH_TYPE_Q5_1: dequant_q5_1(src, dst, n / 32); return;
    case LH_TYPE_Q2_K: dequant_q2_K(src, dst, n / LH_QK_K); return;
    case LH_TYPE_Q3_K: dequant_q3_K(src, dst, n / LH_QK_K); return;
    case LH_TYPE_Q4_K: dequant_q4_K(src, dst, n / LH_QK_K); return;
    case LH_TYPE_Q5_K: dequant_q5_K(src, dst, n / LH_QK_K); return;
    case LH_TYPE_Q6_K: dequant_q6_K(src, dst, n / LH_QK_K); return;
    case LH_TYPE_IQ4_NL: dequant_iq4_nl(src, dst, n / 32); return;
    }
}

void lh_quant_row(lh_type t, const float *src, void *dst, size_t n)
{
    switch (t) {
    case LH_TYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        return;
    case LH_TYPE_F16: {
        uint16_t *d = dst;
        size_t i = 0;
#if defined(LH_HAVE_AVX2) && defined(__F16C__)
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i *)(d + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
        for (; i < n; i++)
            d[i] = lh_f32_to_f16(src[i]);
        return;
    }
    case LH_TYPE_BF16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++)
            d[i] = lh_f32_to_bf16(src[i]);
        return;
    }
    case LH_TYPE_Q8_0: {
        lh_block_q8_0 *b = dst;
        for (size_t i = 0; i < n / LH_QK8_0; i++) {
            const float *x = src + i * LH_QK8_0;
            float amax = 0;
            for (size_t j = 0; j < LH_QK8_0; j++) {
                float a = fabsf(x[j]);
                amax = a > amax ? a : amax;
            }
            float d = amax / 127.0f;
            float id = d != 0 ? 1.0f / d : 0.0f;
            b[i].d = lh_f32_to_f16(d);
            for (size_t j = 0; j < LH_QK8_0; j++)
                b[i].qs[j] = (int8_t)roundf(x[j] * id);
        }
        return;
    }
    case LH_TYPE_Q4_0: quant_q4_0(src, dst, n / 32); return;
    case LH_TYPE_Q4_1: quant_q4_1(src, dst, n / 32); return;
    case LH_TYPE_Q5_0: quant_q5_0(src, dst, n / 32); return;
    case LH_TYPE_Q5_1: quant_q5_1(src, dst, n / 32); return;
    case LH_TYPE_Q2_K: quant_q2_K(src, dst, n / LH_QK_K); return;
    case LH_TYPE_Q3_K: quant_q3_K(src, dst, n / LH_QK_K); return;
    case LH_TYPE_Q4_K: quant_q4_K(src, dst, n / LH_QK_K); return;
    case LH_TYPE_Q5_K: quant_q5_K(src, dst, n / LH_QK_K); return;
    case LH_TYPE_Q6_K: quant_q6_K(src, dst, n / LH_QK_K); return;
    case LH_TYPE_IQ4_NL: quant_iq4_nl(src, dst, n / 32); return;
    }
}

/* ---- dot ------------------------------------------------------------------------------------ */

static float dot_f32(const float *w, const float *x, size_t n)
{
    size_t i = 0;
    float s = 0;
#ifdef LH_HAVE_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    s = lh_hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
    for (; i < n; i++)
        s += w[i] * x[i];
    return s;
}

static float dot_f16(const uint16_t *w, const float *x, size_t n)
{
    size_t i = 0;
    float s = 0;
#if defined(LH_HAVE_AVX2) && defined(__F16C__)
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
#define H8(off) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + (off))))
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(H8(0), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(H8(8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(H8(16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(H8(24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8)
        a0 = _mm256_fmadd_ps(H8(0), _mm256_loadu_ps(x + i), a0);
#undef H8
    s = lh_hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
    for (; i < n; i++)
        s += lh_f16_to_f32(w[i]) * x[i];
    return s;
}

static float dot_bf16(const uint16_t *w, const float *x, size_t n)
{
    size_t i = 0;
    float s = 0;
#ifdef LH_HAVE_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
#define B8(off) _mm256_castsi256_ps(_mm256_slli_epi32( \
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + i + (off)))), 16))
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(B8(0), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(B8(8), _mm256_loadu_ps(x + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8)
        a0 = _mm256_fmadd_ps(B8(0), _mm256_loadu_ps(x + i), a0);
#undef B8
    s = lh_hsum256(_mm256_add_ps(a0, a1));
#endif
    for (; i < n; i++)
        s += lh_bf16_to_f32(w[i]) * x[i];
    return s;
}

static float dot_q8_0(const lh_block_q8_0 *b, const float *x, size_t n)
{
    size_t nb = n / LH_QK8_0;
#ifdef LH_HAVE_AVX2
    /* Per block: the 32 products summed in a vector, then scaled by d into the total. */
    __m256 acc = _mm256_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        const float *xb = x + i * LH_QK8_0;
        __m256i q = _mm256_loadu_si256((const __m256i *)b[i].qs);
        __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
        __m256 q0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
        __m256 q1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
        __m256 q2 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
        __m256 q3 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
        __m256 s0 = _mm256_mul_ps(q0, _mm256_loadu_ps(xb));
        __m256 s1 = _mm256_mul_ps(q1, _mm256_loadu_ps(xb + 8));
        s0 = _mm256_fmadd_ps(q2, _mm256_loadu_ps(xb + 16), s0);
        s1 = _mm256_fmadd_ps(q3, _mm256_loadu_ps(xb + 24), s1);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_fast(b[i].d)), _mm256_add_ps(s0, s1), acc);
    }
    return lh_hsum256(acc);
#else
    float s = 0;
    for (size_t i = 0; i < nb; i++) {
        float bs = 0;
        for (size_t j = 0; j < LH_QK8_0; j++)
            bs += (float)b[i].qs[j] * x[i * LH_QK8_0 + j];
        s += lh_f16_to_f32(b[i].d) * bs;
    }
    return s;
#endif
}

float lh_dot_row(lh_type t, const void *row, const float *x, size_t n)
{
    switch (t) {
    case LH_TYPE_F32: return dot_f32(row, x, n);
    case LH_TYPE_F16: return dot_f16(row, x, n);
    case LH_TYPE_BF16: return dot_bf16(row, x, n);
    case LH_TYPE_Q8_0: return dot_q8_0(row, x, n);
    default: break;
    }
    /* other quantised types: 256 elements at a time through the exact dequantiser */
    size_t blk = lh_type_block(t), bs = lh_type_block_size(t);
    if (!blk)
        return 0;
    float w[LH_QK_K], s = 0;
    for (size_t i = 0; i < n; i += LH_QK_K) {
        size_t m = n - i < LH_QK_K ? n - i : LH_QK_K;
        lh_dequant_row(t, (const char *)row + i / blk * bs, w, m);
        s += dot_f32(w, x + i, m);
    }
    return s;
}

#ifdef LH_HAVE_AVX2
/* Four rows of F32 / F16 / BF16 against x: 8 elements of x loaded once, four FMAs. */
static inline __m256 load8(lh_type t, const char *row, size_t i)
{
    if (t == LH_TYPE_F32)
        return _mm256_loadu_ps((const float *)row + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + i));
#ifdef __F16C__
    if (t == LH_TYPE_F16)
        return _mm256_cvtph_ps(h);
#endif
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static inline float elem(lh_type t, const char *row, size_t i)
{
    if (t == LH_TYPE_F32)
        return ((const float *)row)[i];
    if (t == LH_TYPE_F16)
        return lh_f16_to_f32(((const uint16_t *)row)[i]);
    return lh_bf16_to_f32(((const uint16_t *)row)[i]);
}

static inline void dot4(lh_type t, const char *r0, size_t rs, const float *x, size_t n, float *y)
{
    const char *r1 = r0 + rs, *r2 = r1 + rs, *r3 = r2 + rs;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 vx = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(load8(t, r0, i), vx, a0);
        a1 = _mm256_fmadd_ps(load8(t, r1, i), vx, a1);
        a2 = _mm256_fmadd_ps(load8(t, r2, i), vx, a2);
        a3 = _mm256_fmadd_ps(load8(t, r3, i), vx, a3);
    }
    float s[4];
    _mm_storeu_ps(s, lh_hsum4x256(a0, a1, a2, a3));
    for (; i < n; i++) {
        s[0] += elem(t, r0, i) * x[i];
        s[1] += elem(t, r1, i) * x[i];
        s[2] += elem(t, r2, i) * x[i];
        s[3] += elem(t, r3, i) * x[i];
    }
    memcpy(y, s, sizeof s);
}
#endif

void lh_dot_rows(lh_type t, const void *rows, size_t row_size, const float *x, size_t n, float *y,
                 size_t n_rows)
{
    const char *w = rows;
    size_t r = 0;
#ifdef LH_HAVE_AVX2
#ifdef __F16C__
    int blocked = t == LH_TYPE_F32 || t == LH_TYPE_F16 || t == LH_TYPE_BF16;
#else
    int blocked = t == LH_TYPE_F32 || t == LH_TYPE_BF16;
#endif
    if (blocked) {
        /* one instance per type, so load8's branch is resolved at compile time */
        for (; r + 4 <= n_rows; r += 4) {
            if (t == LH_TYPE_F32)
                dot4(LH_TYPE_F32, w + r * row_size, row_size, x, n, y + r);
            else if (t == LH_TYPE_F16)
                dot4(LH_TYPE_F16, w + r * row_size, row_size, x, n, y + r);
            else
                dot4(LH_TYPE_BF16, w + r * row_size, row_size, x, n, y + r);
        }
    }
#endif
    for (; r < n_rows; r++)
        y[r] = lh_dot_row(t, w + r * row_size, x, n);
}

/* ---- quantised activations and the fused dot products -----------------------------------------
 *
 * As ggml does, the decode GEMV quantises the F32 activation row once (8 bits per value with a
 * float scale per 32 or 256 elements) and then takes integer dot products against the weight
 * blocks: exact integer sums inside each (sub-)block, one float multiply-add per block.  Offsets
 * and mins (Q4_0's -8, Q4_K's -dmin·m, ...) are applied once per block through the activation's
 * block sums instead of per element.  u8 × s8 products go through AVX-512 VNNI (vpdpbusd on 256-bit
 * registers; for Q4_K, Q5_K and Q6_K in decode on 512-bit ones, vdot_q4_K_z and its siblings, with
 * the same bits) where the build has it, AVX2 maddubs otherwise (no saturation is possible: the
 * weight side is at most 63 except Q8_0's, whose pairs are at most 2·128·127 < 32768). */

int lh_q8_kind(lh_type t)
{
    switch (t) {
    case LH_TYPE_Q4_0:
    case LH_TYPE_Q4_1:
    case LH_TYPE_Q5_0:
    case LH_TYPE_Q5_1:
    case LH_TYPE_Q8_0:
    case LH_TYPE_IQ4_NL: return LH_Q8A_32;
    case LH_TYPE_Q2_K:
    case LH_TYPE_Q3_K:
    case LH_TYPE_Q4_K:
    case LH_TYPE_Q5_K:
    case LH_TYPE_Q6_K: return LH_Q8A_256;
    default: return 0;
    }
}

size_t lh_q8_size(lh_type t, size_t n)
{
    switch (lh_q8_kind(t)) {
    case LH_Q8A_32: return n / 32 * sizeof(lh_block_q8a);
    case LH_Q8A_256: return n / LH_QK_K * sizeof(lh_block_q8K);
    default: return 0;
    }
}

/* As ggml's quantize_row_q8_0 / q8_1 (what llama.cpp applies to activations): the multiplier is
 * 127/amax, values round to nearest even, and the scale d = amax/127 is kept at F16 precision,
 * so the 8-bit values and scales are llama.cpp's own. */
static void q8a_quant(const float *x, lh_block_q8a *b, size_t nb, int s_f16)
{
    for (size_t i = 0; i < nb; i++, x += 32) {
#ifdef LH_HAVE_AVX2
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        const __m256 sign = _mm256_set1_ps(-0.0f);
        __m256 am = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                  _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        float amax = lh_hmax256(am);
        float id = amax != 0 ? 127.0f / amax : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        /* cvtps rounds to nearest even, as nearest_int does in the scalar path */
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, vid));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, vid));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, vid));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, vid));
        __m256i s = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)b[i].qs, p);
        int sum = _mm_cvtsi128_si32(s4);
#else
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
        float id = amax != 0 ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            b[i].qs[j] = (int8_t)nearest_int(x[j] * id);
            sum += b[i].qs[j];
        }
#endif
        float d = amax / 127.0f;
        b[i].d = f16_fast(lh_f32_to_f16(d));
        /* Q4_1/Q5_1 (ggml's q8_1): the sum term F16 as well, from the unrounded d; the offset
         * types use d·Σq exactly, as ggml's signed (q - 8) products amount to */
        b[i].ds = s_f16 ? f16_fast(lh_f32_to_f16(d * (float)sum)) : b[i].d * (float)sum;
    }
}

/* ggml's quantize_row_q8_K: the signed value of largest magnitude maps to -127 (so no value is
 * -128), 16-element sums kept for the min and offset terms. */
static void q8K_quant(const float *x, lh_block_q8K *b, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += LH_QK_K) {
#if defined(__AVX512F__) && defined(__AVX512BW__)
        /* the same operations 16 at a time: the first value of largest magnitude, products
         * rounded to nearest even (as nearest_int), capped at 127 */
        __m512 v[16], am = _mm512_setzero_ps();
        for (int j = 0; j < 16; j++) {
            v[j] = _mm512_loadu_ps(x + 16 * j);
            am = _mm512_max_ps(am, _mm512_abs_ps(v[j]));
        }
        float amax = _mm512_reduce_max_ps(am);
        if (amax == 0) {
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        float max = 0;
        for (int j = 0; j < 16; j++) {
            __mmask16 k = _mm512_cmp_ps_mask(_mm512_abs_ps(v[j]), _mm512_set1_ps(amax), _CMP_EQ_OQ);
            if (k) {
                max = x[16 * j + __builtin_ctz(k)];
                break;
            }
        }
        float iscale = -127.f / max;
        __m512 vs = _mm512_set1_ps(iscale);
        for (int j = 0; j < 16; j++) {
            __m512i q = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(vs, v[j])), _mm512_set1_epi32(127));
            _mm_storeu_si128((__m128i *)(b[i].qs + 16 * j), _mm512_cvtsepi32_epi8(q));
            b[i].bsums[j] = (int16_t)_mm512_reduce_add_epi32(q);
        }
        b[i].d = 1 / iscale;
#else
        float amax;
        float max = signed_absmax(x, LH_QK_K, &amax);
        if (amax == 0) {
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        float iscale = -127.f / max;
        for (int j = 0; j < LH_QK_K; j++)
            b[i].qs[j] = (int8_t)imin(127, nearest_int(iscale * x[j]));
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++)
                s += b[i].qs[16 * j + l];
            b[i].bsums[j] = (int16_t)s;
        }
        b[i].d = 1 / iscale;
#endif
    }
}

void lh_q8_quant(lh_type t, const float *x, void *xq, size_t n)
{
    switch (lh_q8_kind(t)) {
    case LH_Q8A_32: q8a_quant(x, xq, n / 32, t == LH_TYPE_Q4_1 || t == LH_TYPE_Q5_1); break;
    case LH_Q8A_256: q8K_quant(x, xq, n / LH_QK_K); break;
    default: break;
    }
}

#ifdef LH_HAVE_AVX2
/* acc + Σ of 4 adjacent u8 × s8 products per int32 lane. */
static inline __m256i dot_us(__m256i acc, __m256i u, __m256i s)
{
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(acc, u, s);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

/* Σ over pairs of u8 × s8, each 16-bit pair sum times the scale of its 128-bit half (lo: bytes
 * 0..15, hi: 16..31), as int32 lanes. */
static inline __m256i dot_us_scaled(__m256i u, __m256i s, int lo, int hi)
{
    __m256i sc = _mm256_set_m128i(_mm_set1_epi16((short)hi), _mm_set1_epi16((short)lo));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), sc);
}

/* 16 nibbles -> 32 bytes: low nibbles first, then high nibbles (the Q4_0..Q5_1 element order). */
static inline __m256i nibbles32(const uint8_t *q)
{
    __m128i v = _mm_loadu_si128((const __m128i *)q);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0f));
}

/* 32 bits -> 32 bytes, byte j = 0x10 where bit j is set (the fifth bit of Q5_0/Q5_1). */
static inline __m256i bits32_x10(uint32_t x)
{
#if defined(__AVX512BW__) && defined(__AVX512VL__)
    return _mm256_maskz_mov_epi8((__mmask32)x, _mm256_set1_epi8(0x10));   /* one masked move */
#else
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x),
                                    _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                     2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201ll);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit), _mm256_set1_epi8(0x10));
#endif
}

static float vdot_q4_0(const lh_block_q4_0 *w, const lh_block_q8a *a, size_t nb)
{
    __m256 acc = _mm256_setzero_ps();
    float off = 0;
    for (size_t i = 0; i < nb; i++) {
        __m256i p = dot_us(_mm256_setzero_si256(), nibbles32(w[i].qs),
                           _mm256_loadu_si256((const __m256i *)a[i].qs));
        float dd = f16_fast(w[i].d) * a[i].d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(p), acc);
        off += f16_fast(w[i].d) * a[i].ds;
    }
    return lh_hsum256(acc) - 8 * off;
}

static float vdot_q4_1(const lh_block_q4_1 *w, const lh_block_q8a *a, size_t nb)
{
    __m256 acc = _mm256_setzero_ps();
    float off = 0;
    for (size_t i = 0; i < nb; i++) {
        __m256i p = dot_us(_mm256_setzero_si256(), nibbles32(w[i].qs),
                           _mm256_loadu_si256((const __m256i *)a[i].qs));
        float dd = f16_fast(w[i].d) * a[i].d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(p), acc);
        off += f16_fast(w[i].m) * a[i].ds;
    }
    return lh_hsum256(acc) + off;
}

static float vdot_q5_0(const lh_block_q5_0 *w, const lh_block_q8a *a, size_t nb)
{
    __m256 acc = _mm256_setzero_ps();
    float off = 0;
    for (size_t i = 0; i < nb; i++) {
        __m256i u = _mm256_or_si256(nibbles32(w[i].qs), bits32_x10(le32(w[i].qh)));
        __m256i p = dot_us(_mm256_setzero_si256(), u, _mm256_loadu_si256((const __m256i *)a[i].qs));
        float dd = f16_fast(w[i].d) * a[i].d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(p), acc);
        off += f16_fast(w[i].d) * a[i].ds;
    }
    return lh_hsum256(acc) - 16 * off;
}

static float vdot_q5_1(const lh_block_q5_1 *w, const lh_block_q8a *a, size_t nb)
{
    __m256 acc = _mm256_setzero_ps();
    float off = 0;
    for (size_t i = 0; i < nb; i++) {
        __m256i u = _mm256_or_si256(nibbles32(w[i].qs), bits32_x10(le32(w[i].qh)));
        __m256i p = dot_us(_mm256_setzero_si256(), u, _mm256_loadu_si256((const __m256i *)a[i].qs));
        float dd = f16_fast(w[i].d) * a[i].d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(p), acc);
        off += f16_fast(w[i].m) * a[i].ds;
    }
    return lh_hsum256(acc) + off;
}

/* One Q8_0 block of a row against its activation block (levels x, scale ad), into acc. */
static inline __attribute__((always_inline)) void q8_0_step(const lh_block_q8_0 *w, __m256i x,
                                                             float ad, __m256 *acc)
{
    __m256i q = _mm256_loadu_si256((const __m256i *)w->qs);
    /* |w| × (x with w's sign): u8 × s8 with the same products */
    __m256i p = dot_us(_mm256_setzero_si256(), _mm256_sign_epi8(q, q), _mm256_sign_epi8(x, q));
    *acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_fast(w->d) * ad), _mm256_cvtepi32_ps(p), *acc);
}

static float vdot_q8_0(const lh_block_q8_0 *w, const lh_block_q8a *a, size_t nb)
{
    __m256 acc = _mm256_setzero_ps();
    for (size_t i = 0; i < nb; i++)
        q8_0_step(w + i, _mm256_loadu_si256((const __m256i *)a[i].qs), a[i].d, &acc);
    return lh_hsum256(acc);
}

/* vdot_q8_0 of four rows (w0 + j*st bytes) against one activation row: each row's arithmetic is
 * vdot_q8_0's, so its result is the same bits; the activation loads serve all four. */
static void vdot_q8_0_r4(const char *w0, size_t st, const lh_block_q8a *a, size_t nb, float *y,
                         size_t ys)
{
    const lh_block_q8_0 *w[4];
    for (int j = 0; j < 4; j++)
        w[j] = (const lh_block_q8_0 *)(w0 + j * st);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (size_t i = 0; i < nb; i++) {
        __m256i x = _mm256_loadu_si256((const __m256i *)a[i].qs);
        q8_0_step(w[0] + i, x, a[i].d, &acc0);
        q8_0_step(w[1] + i, x, a[i].d, &acc1);
        q8_0_step(w[2] + i, x, a[i].d, &acc2);
        q8_0_step(w[3] + i, x, a[i].d, &acc3);
    }
    y[0] = lh_hsum256(acc0);
    y[ys] = lh_hsum256(acc1);
    y[2 * ys] = lh_hsum256(acc2);
    y[3 * ys] = lh_hsum256(acc3);
}

static float vdot_iq4_nl(const lh_block_iq4_nl *w, const lh_block_q8a *a, size_t nb)
{
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)lh_iq4nl_values));
    __m256 acc = _mm256_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        __m256i v = _mm256_shuffle_epi8(table, nibbles32(w[i].qs));   /* the int8 levels */
        __m256i x = _mm256_loadu_si256((const __m256i *)a[i].qs);
        __m256i p = dot_us(_mm256_setzero_si256(), _mm256_sign_epi8(v, v), _mm256_sign_epi8(x, v));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_fast(w[i].d) * a[i].d), _mm256_cvtepi32_ps(p), acc);
    }
    return lh_hsum256(acc);
}

/* Shuffle masks that broadcast one int16 of a 128-bit lane to the whole lane: for the scale
 * vectors of the K-quants (scales are unpacked once per super-block into int16 lanes, then
 * each 32-element step picks its pair with one shuffle, no trip through scalar registers). */
static inline __m256i pick16(int lo, int hi)
{
    /* [lo][hi] for the pairs used: (j, j) for j < 8 and (2j, 2j + 1) for j < 4; a table, so the
     * shuffles take a memory operand instead of rebuilding constants under register pressure */
    static const uint8_t tab[8][8][32] = {
#define B(l, h) {2 * (l), 2 * (l) + 1, 2 * (l), 2 * (l) + 1, 2 * (l), 2 * (l) + 1, 2 * (l), 2 * (l) + 1, \
                 2 * (l), 2 * (l) + 1, 2 * (l), 2 * (l) + 1, 2 * (l), 2 * (l) + 1, 2 * (l), 2 * (l) + 1, \
                 2 * (h), 2 * (h) + 1, 2 * (h), 2 * (h) + 1, 2 * (h), 2 * (h) + 1, 2 * (h), 2 * (h) + 1, \
                 2 * (h), 2 * (h) + 1, 2 * (h), 2 * (h) + 1, 2 * (h), 2 * (h) + 1, 2 * (h), 2 * (h) + 1}
#define ROW(l) {B(l, 0), B(l, 1), B(l, 2), B(l, 3), B(l, 4), B(l, 5), B(l, 6), B(l, 7)}
        ROW(0), ROW(1), ROW(2), ROW(3), ROW(4), ROW(5), ROW(6), ROW(7),
#undef ROW
#undef B
    };
    return _mm256_loadu_si256((const __m256i *)tab[lo][hi]);
}

static inline float hsum128(__m128 s)
{
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Scales (lo) and mins (hi) of a Q4_K/Q5_K block as 8 + 8 bytes (scale_min_k4 on 32-bit words). */
static inline __m128i k4_scales_mins(const uint8_t *q)
{
    /* three separate word loads: a 12-byte memcpy into an array goes through the stack */
    uint32_t u0, u1, u2;
    memcpy(&u0, q, 4);
    memcpy(&u1, q + 4, 4);
    memcpy(&u2, q + 8, 4);
    const uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
    uint32_t s03 = u0 & k1, m03 = u1 & k1;
    uint32_t s47 = (u2 & k2) | (((u0 >> 6) & k3) << 4);
    uint32_t m47 = ((u2 >> 4) & k2) | (((u1 >> 6) & k3) << 4);
    return _mm_setr_epi32((int)s03, (int)s47, (int)m03, (int)m47);
}

/* Σ_j m_j (bsums[2j] + bsums[2j+1]) as 4 int32 lanes, for the mins of Q4_K/Q5_K. */
static inline __m128i k4_min_terms(__m128i sm, const int16_t *bsums)
{
    __m256i bs = _mm256_loadu_si256((const __m256i *)bsums);
    __m128i pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    return _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_srli_si128(sm, 8)), pairs);
}

/* The 64 products of sub-blocks 2k and 2k+1 of a Q4_K/Q5_K block: the unsigned weights lo (first
 * 32 values) and hi (next 32) times the activations x, each half weighted by its scale (slo, shi:
 * the block's scales picked for 2k and 2k+1), summed into 8 int32 lanes. */
static inline __m256i k4_madd64(__m256i lo, __m256i hi, __m256i slo, __m256i shi, const int8_t *x)
{
    __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)x));
    __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x + 32)));
    return _mm256_add_epi32(_mm256_madd_epi16(plo, slo), _mm256_madd_epi16(phi, shi));
}

static __attribute__((unused)) float vdot_q4_K(const lh_block_q4_K *w, const lh_block_q8K *a,
                                                size_t nb)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256 acc = _mm256_setzero_ps();
    __m128 accm = _mm_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        __m128i sm = k4_scales_mins(w[i].scales);
        float da = a[i].d;
        accm = _mm_fmadd_ps(_mm_set1_ps(f16_fast(w[i].dmin) * da),
                            _mm_cvtepi32_ps(k4_min_terms(sm, a[i].bsums)), accm);
        __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
        __m256i isum = _mm256_setzero_si256();
        LH_UNROLL
        for (int k = 0; k < 4; k++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(w[i].qs + 32 * k));
            __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            isum = _mm256_add_epi32(isum, k4_madd64(lo, hi,
                                                    _mm256_shuffle_epi8(sc, pick16(2 * k, 2 * k)),
                                                    _mm256_shuffle_epi8(sc, pick16(2 * k + 1, 2 * k + 1)),
                                                    a[i].qs + 64 * k));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_fast(w[i].d) * da), _mm256_cvtepi32_ps(isum), acc);
    }
    return lh_hsum256(acc) - hsum128(accm);
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
/* vdot_q4_K and vdot_q5_K on 512-bit registers, for the decode GEMV (both block types: d, dmin,
 * scales, then Q5_K's qh, then qs; q5 says which): half a block (64 bytes of levels, sub-blocks
 * 4h .. 4h+3) per step.  Its low nibbles are sub-blocks 4h and 4h+2, its high nibbles 4h+1 and
 * 4h+3 (Q5_K: their fifth bits from qh shifted by their own counts), so each meets the
 * activations of two sub-blocks (two 32-byte loads) in one vpdpbusd: 16 int32 lanes of 4
 * products, lanes 0-7 one sub-block, 8-15 the other.  A lane is at most 4 x 31 x 128 < 2^15, so
 * vpmaddwd against the lane's scale in the low half of a 32-bit lane (high half 0) multiplies it
 * exactly.  Lane l + 8 holds the sub-blocks of lane l's other half, so adding the two 256-bit
 * halves gives exactly the 256-bit kernels' 8 integer lanes, and the float part is theirs: the
 * same bits (lh_gemm_q8's four-row kernels and the short prefill slices stay equal to it), with
 * fewer than half the instructions per block. */
static inline __attribute__((always_inline)) float vdot_k45_z(const char *w, size_t bs, int q5,
                                                              const lh_block_q8K *a, size_t nb)
{
    const size_t o_sc = offsetof(lh_block_q4_K, scales);
    const size_t o_qs = q5 ? offsetof(lh_block_q5_K, qs) : offsetof(lh_block_q4_K, qs);
    const __m512i m4 = _mm512_set1_epi8(0x0f), m1 = _mm512_set1_epi8(1);
    /* which of the 16 scale/min lanes (scales 0-7, then mins) each half of a product takes */
    const __m512i p02 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    __m256 acc = _mm256_setzero_ps();
    __m128 accm = _mm_setzero_ps();
    for (size_t i = 0; i < nb; i++, w += bs) {
        uint16_t d, dmin;
        memcpy(&d, w, 2);
        memcpy(&dmin, w + 2, 2);
        __m128i sm = k4_scales_mins((const uint8_t *)w + o_sc);
        float da = a[i].d;
        accm = _mm_fmadd_ps(_mm_set1_ps(f16_fast(dmin) * da),
                            _mm_cvtepi32_ps(k4_min_terms(sm, a[i].bsums)), accm);
        __m512i sc = _mm512_cvtepu8_epi32(sm);
        __m256i qh = q5 ? _mm256_loadu_si256((const __m256i *)(w + offsetof(lh_block_q5_K, qh)))
                        : _mm256_setzero_si256();
        __m512i isum = _mm512_setzero_si512();
        LH_UNROLL
        for (int h = 0; h < 2; h++) {
            __m512i q = _mm512_loadu_si512((const void *)(w + o_qs + 64 * h));
            __m512i lo = _mm512_and_si512(q, m4), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
            if (q5) {   /* low nibbles take qh bits 4h, 4h+2; high ones 4h+1, 4h+3 */
                __m512i bl = _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_srli_epi16(qh, 4 * h)),
                    _mm256_srli_epi16(qh, 4 * h + 2), 1);
                lo = _mm512_or_si512(lo, _mm512_slli_epi16(_mm512_and_si512(bl, m1), 4));
                hi = _mm512_or_si512(hi, _mm512_slli_epi16(
                                             _mm512_and_si512(_mm512_srli_epi16(bl, 1), m1), 4));
            }
            const int8_t *xh = a[i].qs + 128 * h;
            __m512i al = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)xh)),
                _mm256_loadu_si256((const __m256i *)(xh + 64)), 1);
            __m512i ah = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(xh + 32))),
                _mm256_loadu_si256((const __m256i *)(xh + 96)), 1);
            __m512i pl = _mm512_add_epi32(p02, _mm512_set1_epi32(4 * h));
            __m512i ph = _mm512_add_epi32(pl, _mm512_set1_epi32(1));
            __m512i dl = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, al);
            __m512i dh = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi, ah);
            isum = _mm512_add_epi32(isum, _mm512_madd_epi16(dl, _mm512_permutexvar_epi32(pl, sc)));
            isum = _mm512_add_epi32(isum, _mm512_madd_epi16(dh, _mm512_permutexvar_epi32(ph, sc)));
        }
        __m256i i8 = _mm256_add_epi32(_mm512_castsi512_si256(isum), _mm512_extracti64x4_epi64(isum, 1));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_fast(d) * da), _mm256_cvtepi32_ps(i8), acc);
    }
    return lh_hsum256(acc) - hsum128(accm);
}
static float vdot_q4_K_z(const lh_block_q4_K *w, const lh_block_q8K *a, size_t nb)
{
    return vdot_k45_z((const char *)w, sizeof *w, 0, a, nb);
}
static float vdot_q5_K_z(const lh_block_q5_K *w, const lh_block_q8K *a, size_t nb)
{
    return vdot_k45_z((const char *)w, sizeof *w, 1, a, nb);
}
#define VDOT_Q4_K_ROW vdot_q4_K_z
#define VDOT_Q5_K_ROW vdot_q5_K_z
#else
#define VDOT_Q4_K_ROW vdot_q4_K
#define VDOT_Q5_K_ROW vdot_q5_K
#endif

static __attribute__((unused)) float vdot_q5_K(const lh_block_q5_K *w, const lh_block_q8K *a,
                                                size_t nb)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f), m1 = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps();
    __m128 accm = _mm_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        __m128i sm = k4_scales_mins(w[i].scales);
        float da = a[i].d;
        accm = _mm_fmadd_ps(_mm_set1_ps(f16_fast(w[i].dmin) * da),
                            _mm_cvtepi32_ps(k4_min_terms(sm, a[i].bsums)), accm);
        __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
        __m256i qh = _mm256_loadu_si256((const __m256i *)w[i].qh);
        __m256i isum = _mm256_setzero_si256();
        LH_UNROLL
        for (int k = 0; k < 4; k++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(w[i].qs + 32 * k));
            __m256i hl = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m1), 4);
            __m256i hh = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k + 1), m1), 4);
            __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m4), hl);
            __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), hh);
            isum = _mm256_add_epi32(isum, k4_madd64(lo, hi,
                                                    _mm256_shuffle_epi8(sc, pick16(2 * k, 2 * k)),
                                                    _mm256_shuffle_epi8(sc, pick16(2 * k + 1, 2 * k + 1)),
                                                    a[i].qs + 64 * k));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_fast(w[i].d) * da), _mm256_cvtepi32_ps(isum), acc);
    }
    return lh_hsum256(acc) - hsum128(accm);
}

/* Q2_K, Q3_K, Q6_K: 16 scales of 16 elements; sc16[h] holds scales 8h .. 8h+7 as int16 in both
 * 128-bit lanes, and the 32 elements 128h + 32j .. +31 take scales 8h + 2j (lane 0) and
 * 8h + 2j + 1 (lane 1). */
static float vdot_q2_K(const lh_block_q2_K *w, const lh_block_q8K *a, size_t nb)
{
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m128i m4 = _mm_set1_epi8(0x0f);
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        __m128i raw = _mm_loadu_si128((const __m128i *)w[i].scales);
        __m128i scb = _mm_and_si128(raw, m4), mb = _mm_and_si128(_mm_srli_epi16(raw, 4), m4);
        float da = a[i].d;
        __m256i mins = _mm256_madd_epi16(_mm256_cvtepu8_epi16(mb),
                                         _mm256_loadu_si256((const __m256i *)a[i].bsums));
        accm = _mm256_fmadd_ps(_mm256_set1_ps(f16_fast(w[i].dmin) * da), _mm256_cvtepi32_ps(mins), accm);
        __m256i isum = _mm256_setzero_si256();
        LH_UNROLL
        for (int h = 0; h < 2; h++) {
            __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(h ? _mm_srli_si128(scb, 8) : scb));
            __m256i q = _mm256_loadu_si256((const __m256i *)(w[i].qs + 32 * h));
            const int8_t *x = a[i].qs + 128 * h;
            LH_UNROLL
            for (int j = 0; j < 4; j++) {
                __m256i u = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m3);
                __m256i p = _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)(x + 32 * j)));
                p = _mm256_madd_epi16(p, _mm256_shuffle_epi8(sc, pick16(2 * j, 2 * j + 1)));
                isum = _mm256_add_epi32(isum, p);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_fast(w[i].d) * da), _mm256_cvtepi32_ps(isum), acc);
    }
    return lh_hsum256(acc) - lh_hsum256(accm);
}

/* The 16 6-bit scales of a Q3_K block as bytes 0..63 (32 is zero), from 32-bit words. */
static inline __m128i q3_K_scales_vec(const uint8_t *s)
{
    uint32_t a0, a1, t;
    memcpy(&a0, s, 4);
    memcpy(&a1, s + 4, 4);
    memcpy(&t, s + 8, 4);
    const uint32_t k1 = 0x03030303, k2 = 0x0f0f0f0f;
    return _mm_setr_epi32((int)((a0 & k2) | (((t >> 0) & k1) << 4)),
                          (int)((a1 & k2) | (((t >> 2) & k1) << 4)),
                          (int)(((a0 >> 4) & k2) | (((t >> 4) & k1) << 4)),
                          (int)(((a1 >> 4) & k2) | (((t >> 6) & k1) << 4)));
}

static float vdot_q3_K(const lh_block_q3_K *w, const lh_block_q8K *a, size_t nb)
{
    const __m256i m3 = _mm256_set1_epi8(3), m1 = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        __m128i scb = _mm_sub_epi8(q3_K_scales_vec(w[i].scales), _mm_set1_epi8(32));
        /* the -4 of every level: 4 Σ_j sc_j bsums_j, taken off the integer sum */
        __m256i corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scb),
                                         _mm256_loadu_si256((const __m256i *)a[i].bsums));
        __m256i isum = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 2));
        __m256i hm = _mm256_loadu_si256((const __m256i *)w[i].hmask);
        LH_UNROLL
        for (int h = 0; h < 2; h++) {
            __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(h ? _mm_srli_si128(scb, 8) : scb));
            __m256i q = _mm256_loadu_si256((const __m256i *)(w[i].qs + 32 * h));
            const int8_t *x = a[i].qs + 128 * h;
            LH_UNROLL
            for (int j = 0; j < 4; j++) {
                __m256i lo = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m3);
                __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + j), m1);
                __m256i u = _mm256_or_si256(lo, _mm256_slli_epi16(hb, 2));   /* q + 4 */
                __m256i p = _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)(x + 32 * j)));
                p = _mm256_madd_epi16(p, _mm256_shuffle_epi8(sc, pick16(2 * j, 2 * j + 1)));
                isum = _mm256_add_epi32(isum, p);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_fast(w[i].d) * a[i].d), _mm256_cvtepi32_ps(isum), acc);
    }
    return lh_hsum256(acc);
}

static __attribute__((unused)) float vdot_q6_K(const lh_block_q6_K *w, const lh_block_q8K *a,
                                                size_t nb)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        __m128i scb = _mm_loadu_si128((const __m128i *)w[i].scales);
        /* the -32 of every level: 32 Σ_j sc_j bsums_j */
        __m256i corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scb),
                                         _mm256_loadu_si256((const __m256i *)a[i].bsums));
        __m256i isum = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 5));
        LH_UNROLL
        for (int h = 0; h < 2; h++) {
            __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(h ? _mm_srli_si128(scb, 8) : scb));
            __m256i l0 = _mm256_loadu_si256((const __m256i *)(w[i].ql + 64 * h));
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(w[i].ql + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(w[i].qh + 32 * h));
            const int8_t *x = a[i].qs + 128 * h;
            __m256i u1 = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                         _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
            __m256i u2 = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4));
            __m256i u3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4));
            __m256i u4 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4));
            __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(u1, _mm256_loadu_si256((const __m256i *)x)),
                                           _mm256_shuffle_epi8(sc, pick16(0, 1)));
            __m256i p2 = _mm256_madd_epi16(_mm256_maddubs_epi16(u2, _mm256_loadu_si256((const __m256i *)(x + 32))),
                                           _mm256_shuffle_epi8(sc, pick16(2, 3)));
            __m256i p3 = _mm256_madd_epi16(_mm256_maddubs_epi16(u3, _mm256_loadu_si256((const __m256i *)(x + 64))),
                                           _mm256_shuffle_epi8(sc, pick16(4, 5)));
            __m256i p4 = _mm256_madd_epi16(_mm256_maddubs_epi16(u4, _mm256_loadu_si256((const __m256i *)(x + 96))),
                                           _mm256_shuffle_epi8(sc, pick16(6, 7)));
            isum = _mm256_add_epi32(isum, _mm256_add_epi32(_mm256_add_epi32(p1, p2), _mm256_add_epi32(p3, p4)));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_fast(w[i].d) * a[i].d), _mm256_cvtepi32_ps(isum), acc);
    }
    return lh_hsum256(acc);
}
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
/* vdot_q6_K on 512-bit registers: the 32-element groups j and j+1 of a half block share a vector
 * (their activations are one 64-byte load), one vpdpbusd each pair; a lane is at most
 * 4 x 63 x 128 < 2^15, so vpmaddwd against its (signed) scale in the low half of a 32-bit lane
 * scales it exactly, and the two 256-bit halves added give vdot_q6_K's 8 integer lanes: the same
 * bits. */
static float vdot_q6_K_z(const lh_block_q6_K *w, const lh_block_q8K *a, size_t nb)
{
    const __m512i m4 = _mm512_set1_epi8(0x0f), m3 = _mm512_set1_epi8(3);
    const __m512i lo16 = _mm512_set1_epi32(0xffff);
    /* lane l of the pair (j, j+1) takes scale 2j + l / 4 (16 elements a scale, 4 a lane) */
    const __m512i p0 = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    __m256 acc = _mm256_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        __m128i scb = _mm_loadu_si128((const __m128i *)w[i].scales);
        __m256i corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scb),
                                         _mm256_loadu_si256((const __m256i *)a[i].bsums));
        __m512i sc = _mm512_and_si512(_mm512_cvtepi8_epi32(scb), lo16);
        __m512i isum = _mm512_setzero_si512();
        LH_UNROLL
        for (int h = 0; h < 2; h++) {
            __m512i l01 = _mm512_loadu_si512((const void *)(w[i].ql + 64 * h));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(w[i].qh + 32 * h));
            __m512i qz = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
            __m512i u12 = _mm512_or_si512(_mm512_and_si512(l01, m4),
                                          _mm512_slli_epi16(_mm512_and_si512(qz, m3), 4));
            __m512i u34 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l01, 4), m4),
                                          _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qz, 4), m3), 4));
            const int8_t *x = a[i].qs + 128 * h;
            __m512i d12 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u12, _mm512_loadu_si512((const void *)x));
            __m512i d34 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u34, _mm512_loadu_si512((const void *)(x + 64)));
            __m512i i12 = _mm512_add_epi32(p0, _mm512_set1_epi32(8 * h));
            __m512i i34 = _mm512_add_epi32(p0, _mm512_set1_epi32(8 * h + 4));
            isum = _mm512_add_epi32(isum, _mm512_madd_epi16(d12, _mm512_permutexvar_epi32(i12, sc)));
            isum = _mm512_add_epi32(isum, _mm512_madd_epi16(d34, _mm512_permutexvar_epi32(i34, sc)));
        }
        __m256i i8 = _mm256_add_epi32(_mm512_castsi512_si256(isum), _mm512_extracti64x4_epi64(isum, 1));
        i8 = _mm256_add_epi32(_mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 5)), i8);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_fast(w[i].d) * a[i].d), _mm256_cvtepi32_ps(i8), acc);
    }
    return lh_hsum256(acc);
}
#define VDOT_Q6_K_ROW vdot_q6_K_z
#else
#define VDOT_Q6_K_ROW vdot_q6_K
#endif

/* ---- several activation rows per weight row (prefill) ----------------------------------------
 *
 * The same arithmetic as the single-row kernels, per (weight row, activation row) pair in the same
 * order, so the results are bit-identical to lh_dot_rows_q8; the weight block is unpacked once for
 * NA activation rows. */
#define NA 4

static void vdot_q4_K_x4(const lh_block_q4_K *w, const lh_block_q8K *const *a, size_t nb, float *y)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256 acc[NA];
    __m128 accm[NA];
    for (int r = 0; r < NA; r++)
        acc[r] = _mm256_setzero_ps(), accm[r] = _mm_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        __m128i sm = k4_scales_mins(w[i].scales);
        __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
        float wd = f16_fast(w[i].d), wm = f16_fast(w[i].dmin);
        __m256i isum[NA];
        LH_UNROLL
        for (int r = 0; r < NA; r++) {
            accm[r] = _mm_fmadd_ps(_mm_set1_ps(wm * a[r][i].d),
                                   _mm_cvtepi32_ps(k4_min_terms(sm, a[r][i].bsums)), accm[r]);
            isum[r] = _mm256_setzero_si256();
        }
        LH_UNROLL
        for (int k = 0; k < 4; k++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(w[i].qs + 32 * k));
            __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            __m256i slo = _mm256_shuffle_epi8(sc, pick16(2 * k, 2 * k));
            __m256i shi = _mm256_shuffle_epi8(sc, pick16(2 * k + 1, 2 * k + 1));
            LH_UNROLL
            for (int r = 0; r < NA; r++)
                isum[r] = _mm256_add_epi32(isum[r], k4_madd64(lo, hi, slo, shi, a[r][i].qs + 64 * k));
        }
        LH_UNROLL
        for (int r = 0; r < NA; r++)
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(wd * a[r][i].d), _mm256_cvtepi32_ps(isum[r]), acc[r]);
    }
    for (int r = 0; r < NA; r++)
        y[r] = lh_hsum256(acc[r]) - hsum128(accm[r]);
}

static void vdot_q4_0_x4(const lh_block_q4_0 *w, const lh_block_q8a *const *a, size_t nb, float *y)
{
    __m256 acc[NA];
    float off[NA];
    for (int r = 0; r < NA; r++)
        acc[r] = _mm256_setzero_ps(), off[r] = 0;
    for (size_t i = 0; i < nb; i++) {
        __m256i u = nibbles32(w[i].qs);
        float wd = f16_fast(w[i].d);
        LH_UNROLL
        for (int r = 0; r < NA; r++) {
            __m256i p = dot_us(_mm256_setzero_si256(), u, _mm256_loadu_si256((const __m256i *)a[r][i].qs));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(wd * a[r][i].d), _mm256_cvtepi32_ps(p), acc[r]);
            off[r] += wd * a[r][i].ds;
        }
    }
    for (int r = 0; r < NA; r++)
        y[r] = lh_hsum256(acc[r]) - 8 * off[r];
}

static void vdot_q8_0_x4(const lh_block_q8_0 *w, const lh_block_q8a *const *a, size_t nb, float *y)
{
    __m256 acc[NA];
    for (int r = 0; r < NA; r++)
        acc[r] = _mm256_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)w[i].qs);
        __m256i aq = _mm256_sign_epi8(q, q);
        float wd = f16_fast(w[i].d);
        LH_UNROLL
        for (int r = 0; r < NA; r++) {
            __m256i x = _mm256_loadu_si256((const __m256i *)a[r][i].qs);
            __m256i p = dot_us(_mm256_setzero_si256(), aq, _mm256_sign_epi8(x, q));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(wd * a[r][i].d), _mm256_cvtepi32_ps(p), acc[r]);
        }
    }
    for (int r = 0; r < NA; r++)
        y[r] = lh_hsum256(acc[r]);
}

static void vdot_q5_K_x4(const lh_block_q5_K *w, const lh_block_q8K *const *a, size_t nb, float *y)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f), m1 = _mm256_set1_epi8(1);
    __m256 acc[NA];
    __m128 accm[NA];
    for (int r = 0; r < NA; r++)
        acc[r] = _mm256_setzero_ps(), accm[r] = _mm_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        __m128i sm = k4_scales_mins(w[i].scales);
        __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
        float wd = f16_fast(w[i].d), wm = f16_fast(w[i].dmin);
        __m256i qh = _mm256_loadu_si256((const __m256i *)w[i].qh);
        __m256i isum[NA];
        LH_UNROLL
        for (int r = 0; r < NA; r++) {
            accm[r] = _mm_fmadd_ps(_mm_set1_ps(wm * a[r][i].d),
                                   _mm_cvtepi32_ps(k4_min_terms(sm, a[r][i].bsums)), accm[r]);
            isum[r] = _mm256_setzero_si256();
        }
        LH_UNROLL
        for (int k = 0; k < 4; k++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(w[i].qs + 32 * k));
            __m256i hl = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m1), 4);
            __m256i hh = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k + 1), m1), 4);
            __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m4), hl);
            __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), hh);
            __m256i slo = _mm256_shuffle_epi8(sc, pick16(2 * k, 2 * k));
            __m256i shi = _mm256_shuffle_epi8(sc, pick16(2 * k + 1, 2 * k + 1));
            LH_UNROLL
            for (int r = 0; r < NA; r++)
                isum[r] = _mm256_add_epi32(isum[r], k4_madd64(lo, hi, slo, shi, a[r][i].qs + 64 * k));
        }
        LH_UNROLL
        for (int r = 0; r < NA; r++)
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(wd * a[r][i].d), _mm256_cvtepi32_ps(isum[r]), acc[r]);
    }
    for (int r = 0; r < NA; r++)
        y[r] = lh_hsum256(acc[r]) - hsum128(accm[r]);
}

static void vdot_q6_K_x4(const lh_block_q6_K *w, const lh_block_q8K *const *a, size_t nb, float *y)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3);
    __m256 acc[NA];
    for (int r = 0; r < NA; r++)
        acc[r] = _mm256_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        __m128i scb = _mm_loadu_si128((const __m128i *)w[i].scales);
        __m256i sc16 = _mm256_cvtepi8_epi16(scb);
        float wd = f16_fast(w[i].d);
        __m256i isum[NA];
        LH_UNROLL
        for (int r = 0; r < NA; r++) {
            __m256i corr = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)a[r][i].bsums));
            isum[r] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 5));
        }
        LH_UNROLL
        for (int h = 0; h < 2; h++) {
            __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(h ? _mm_srli_si128(scb, 8) : scb));
            __m256i l0 = _mm256_loadu_si256((const __m256i *)(w[i].ql + 64 * h));
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(w[i].ql + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(w[i].qh + 32 * h));
            __m256i u1 = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                         _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
            __m256i u2 = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4));
            __m256i u3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4));
            __m256i u4 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4));
            __m256i s1 = _mm256_shuffle_epi8(sc, pick16(0, 1)), s2 = _mm256_shuffle_epi8(sc, pick16(2, 3));
            __m256i s3 = _mm256_shuffle_epi8(sc, pick16(4, 5)), s4 = _mm256_shuffle_epi8(sc, pick16(6, 7));
            LH_UNROLL
            for (int r = 0; r < NA; r++) {
                const int8_t *x = a[r][i].qs + 128 * h;
                __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(u1, _mm256_loadu_si256((const __m256i *)x)), s1);
                __m256i p2 = _mm256_madd_epi16(_mm256_maddubs_epi16(u2, _mm256_loadu_si256((const __m256i *)(x + 32))), s2);
                __m256i p3 = _mm256_madd_epi16(_mm256_maddubs_epi16(u3, _mm256_loadu_si256((const __m256i *)(x + 64))), s3);
                __m256i p4 = _mm256_madd_epi16(_mm256_maddubs_epi16(u4, _mm256_loadu_si256((const __m256i *)(x + 96))), s4);
                isum[r] = _mm256_add_epi32(isum[r], _mm256_add_epi32(_mm256_add_epi32(p1, p2), _mm256_add_epi32(p3, p4)));
            }
        }
        LH_UNROLL
        for (int r = 0; r < NA; r++)
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(wd * a[r][i].d), _mm256_cvtepi32_ps(isum[r]), acc[r]);
    }
    for (int r = 0; r < NA; r++)
        y[r] = lh_hsum256(acc[r]);
}

static void vdot_q2_K_x4(const lh_block_q2_K *w, const lh_block_q8K *const *a, size_t nb, float *y)
{
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m128i m4 = _mm_set1_epi8(0x0f);
    __m256 acc[NA], accm[NA];
    for (int r = 0; r < NA; r++)
        acc[r] = _mm256_setzero_ps(), accm[r] = _mm256_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        __m128i raw = _mm_loadu_si128((const __m128i *)w[i].scales);
        __m128i scb = _mm_and_si128(raw, m4), mb = _mm_and_si128(_mm_srli_epi16(raw, 4), m4);
        __m256i mb16 = _mm256_cvtepu8_epi16(mb);
        float wd = f16_fast(w[i].d), wm = f16_fast(w[i].dmin);
        __m256i isum[NA];
        LH_UNROLL
        for (int r = 0; r < NA; r++) {
            __m256i mins = _mm256_madd_epi16(mb16, _mm256_loadu_si256((const __m256i *)a[r][i].bsums));
            accm[r] = _mm256_fmadd_ps(_mm256_set1_ps(wm * a[r][i].d), _mm256_cvtepi32_ps(mins), accm[r]);
            isum[r] = _mm256_setzero_si256();
        }
        LH_UNROLL
        for (int h = 0; h < 2; h++) {
            __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(h ? _mm_srli_si128(scb, 8) : scb));
            __m256i q = _mm256_loadu_si256((const __m256i *)(w[i].qs + 32 * h));
            LH_UNROLL
            for (int j = 0; j < 4; j++) {
                __m256i u = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m3);
                __m256i s = _mm256_shuffle_epi8(sc, pick16(2 * j, 2 * j + 1));
                LH_UNROLL
                for (int r = 0; r < NA; r++) {
                    const int8_t *x = a[r][i].qs + 128 * h + 32 * j;
                    __m256i p = _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)x));
                    isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(p, s));
                }
            }
        }
        LH_UNROLL
        for (int r = 0; r < NA; r++)
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(wd * a[r][i].d), _mm256_cvtepi32_ps(isum[r]), acc[r]);
    }
    for (int r = 0; r < NA; r++)
        y[r] = lh_hsum256(acc[r]) - lh_hsum256(accm[r]);
}

static void vdot_q3_K_x4(const lh_block_q3_K *w, const lh_block_q8K *const *a, size_t nb, float *y)
{
    const __m256i m3 = _mm256_set1_epi8(3), m1 = _mm256_set1_epi8(1);
    __m256 acc[NA];
    for (int r = 0; r < NA; r++)
        acc[r] = _mm256_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        __m128i scb = _mm_sub_epi8(q3_K_scales_vec(w[i].scales), _mm_set1_epi8(32));
        __m256i sc16 = _mm256_cvtepi8_epi16(scb);
        float wd = f16_fast(w[i].d);
        __m256i isum[NA];
        LH_UNROLL
        for (int r = 0; r < NA; r++) {
            __m256i corr = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)a[r][i].bsums));
            isum[r] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 2));
        }
        __m256i hm = _mm256_loadu_si256((const __m256i *)w[i].hmask);
        LH_UNROLL
        for (int h = 0; h < 2; h++) {
            __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(h ? _mm_srli_si128(scb, 8) : scb));
            __m256i q = _mm256_loadu_si256((const __m256i *)(w[i].qs + 32 * h));
            LH_UNROLL
            for (int j = 0; j < 4; j++) {
                __m256i lo = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m3);
                __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + j), m1);
                __m256i u = _mm256_or_si256(lo, _mm256_slli_epi16(hb, 2));
                __m256i s = _mm256_shuffle_epi8(sc, pick16(2 * j, 2 * j + 1));
                LH_UNROLL
                for (int r = 0; r < NA; r++) {
                    const int8_t *x = a[r][i].qs + 128 * h + 32 * j;
                    __m256i p = _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)x));
                    isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(p, s));
                }
            }
        }
        LH_UNROLL
        for (int r = 0; r < NA; r++)
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(wd * a[r][i].d), _mm256_cvtepi32_ps(isum[r]), acc[r]);
    }
    for (int r = 0; r < NA; r++)
        y[r] = lh_hsum256(acc[r]);
}

/* Q4_1, Q5_0, Q5_1: unsigned levels u (nibbles, plus the fifth bit), an offset per block through
 * the activation's d·Σq: y = Σ d_w d_a Σ u·q  +  c · Σ_blocks o_w · ds, with o_w the block's min
 * (c = 1) or d_w (c = -16). */
#define X4_OFFSET(name, block_t, UNPACK, OFFW, C)                                             \
    static void name(const block_t *w, const lh_block_q8a *const *a, size_t nb, float *y)     \
    {                                                                                         \
        __m256 acc[NA];                                                                       \
        float off[NA];                                                                        \
        for (int r = 0; r < NA; r++)                                                          \
            acc[r] = _mm256_setzero_ps(), off[r] = 0;                                         \
        for (size_t i = 0; i < nb; i++) {                                                     \
            __m256i u = UNPACK;                                                               \
            float wd = f16_fast(w[i].d), wo = OFFW;                                           \
            LH_UNROLL                                                                         \
            for (int r = 0; r < NA; r++) {                                                    \
                __m256i p = dot_us(_mm256_setzero_si256(), u,                                 \
                                   _mm256_loadu_si256((const __m256i *)a[r][i].qs));          \
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(wd * a[r][i].d),                      \
                                         _mm256_cvtepi32_ps(p), acc[r]);                      \
                off[r] += wo * a[r][i].ds;                                                    \
            }                                                                                 \
        }                                                                                     \
        for (int r = 0; r < NA; r++)                                                          \
            y[r] = lh_hsum256(acc[r]) + C * off[r];                                           \
    }
X4_OFFSET(vdot_q4_1_x4, lh_block_q4_1, nibbles32(w[i].qs), f16_fast(w[i].m), 1)
X4_OFFSET(vdot_q5_0_x4, lh_block_q5_0,
          _mm256_or_si256(nibbles32(w[i].qs), bits32_x10(le32(w[i].qh))), wd, -16)
X4_OFFSET(vdot_q5_1_x4, lh_block_q5_1,
          _mm256_or_si256(nibbles32(w[i].qs), bits32_x10(le32(w[i].qh))), f16_fast(w[i].m), 1)
#undef X4_OFFSET

static void vdot_iq4_nl_x4(const lh_block_iq4_nl *w, const lh_block_q8a *const *a, size_t nb,
                           float *y)
{
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)lh_iq4nl_values));
    __m256 acc[NA];
    for (int r = 0; r < NA; r++)
        acc[r] = _mm256_setzero_ps();
    for (size_t i = 0; i < nb; i++) {
        __m256i v = _mm256_shuffle_epi8(table, nibbles32(w[i].qs));
        __m256i av = _mm256_sign_epi8(v, v);
        float wd = f16_fast(w[i].d);
        LH_UNROLL
        for (int r = 0; r < NA; r++) {
            __m256i x = _mm256_loadu_si256((const __m256i *)a[r][i].qs);
            __m256i p = dot_us(_mm256_setzero_si256(), av, _mm256_sign_epi8(x, v));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(wd * a[r][i].d), _mm256_cvtepi32_ps(p), acc[r]);
        }
    }
    for (int r = 0; r < NA; r++)
        y[r] = lh_hsum256(acc[r]);
}

#endif

#ifndef LH_HAVE_AVX2
/* The scalar fused path (builds without AVX2): each weight block dequantised with the exact
 * dequantisers, times the dequantised activation block. */
static float sdot_q8(lh_type t, const void *row, const void *xq, size_t n)
{
    float w[LH_QK_K];
    size_t bs = lh_type_block_size(t), blk = lh_type_block(t);
    float s = 0;
    if (t == LH_TYPE_Q4_1 || t == LH_TYPE_Q5_1) {
        /* levels times activations in integers, the min through the F16 block sum, as the
         * vector kernels (and llama.cpp) do */
        const lh_block_q8a *a = xq;
        for (size_t i = 0; i < n / 32; i++) {
            const uint8_t *qs, *qhp = NULL;
            uint16_t d, m;
            if (t == LH_TYPE_Q4_1) {
                const lh_block_q4_1 *b = (const lh_block_q4_1 *)row + i;
                qs = b->qs, d = b->d, m = b->m;
            } else {
                const lh_block_q5_1 *b = (const lh_block_q5_1 *)row + i;
                qs = b->qs, d = b->d, m = b->m, qhp = b->qh;
            }
            uint32_t qh = qhp ? le32(qhp) : 0;
            int isum = 0;
            for (int j = 0; j < 16; j++) {
                int q0 = (qs[j] & 0x0f) | (int)((qh >> j) & 1) << 4;
                int q1 = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
                isum += q0 * a[i].qs[j] + q1 * a[i].qs[j + 16];
            }
            s += lh_f16_to_f32(d) * a[i].d * (float)isum + lh_f16_to_f32(m) * a[i].ds;
        }
    } else if (lh_q8_kind(t) == LH_Q8A_32) {
        const lh_block_q8a *a = xq;
        for (size_t i = 0; i < n / 32; i++) {
            lh_dequant_row(t, (const char *)row + i * bs, w, 32);
            float bsum = 0;
            for (int j = 0; j < 32; j++)
                bsum += w[j] * (float)a[i].qs[j];
            s += bsum * a[i].d;
        }
    } else {
        const lh_block_q8K *a = xq;
        for (size_t i = 0; i < n / LH_QK_K; i++) {
            lh_dequant_row(t, (const char *)row + i * bs, w, blk);
            float bsum = 0;
            for (int j = 0; j < LH_QK_K; j++)
                bsum += w[j] * (float)a[i].qs[j];
            s += bsum * a[i].d;
        }
    }
    return s;
}
#endif

int lh_dot_rows4_q8(lh_type t, const void *rows, size_t st, const void *xq, size_t n, float *y,
                    size_t ys)
{
#ifdef LH_HAVE_AVX2
    if (t == LH_TYPE_Q8_0) {
        vdot_q8_0_r4(rows, st, xq, n / lh_type_block(t), y, ys);
        return 1;
    }
#else
    (void)t, (void)rows, (void)st, (void)xq, (void)n, (void)y, (void)ys;
#endif
    return 0;
}

void lh_dot_rows_q8(lh_type t, const void *rows, size_t row_size, const void *xq, size_t n,
                    float *y, size_t n_rows)
{
    const char *r = rows;
#ifdef LH_HAVE_AVX2
    size_t nb = n / lh_type_block(t);
    /* one loop per type, so each kernel is inlined into a loop of its own */
#define ROWS(fn)                                                                              \
    for (size_t i = 0; i < n_rows; i++, r += row_size)                                       \
        y[i] = fn((const void *)r, xq, nb);                                                   \
    break
    switch (t) {
    case LH_TYPE_Q4_0: ROWS(vdot_q4_0);
    case LH_TYPE_Q4_1: ROWS(vdot_q4_1);
    case LH_TYPE_Q5_0: ROWS(vdot_q5_0);
    case LH_TYPE_Q5_1: ROWS(vdot_q5_1);
    case LH_TYPE_Q8_0: ROWS(vdot_q8_0);
    case LH_TYPE_IQ4_NL: ROWS(vdot_iq4_nl);
    case LH_TYPE_Q2_K: ROWS(vdot_q2_K);
    case LH_TYPE_Q3_K: ROWS(vdot_q3_K);
    case LH_TYPE_Q4_K: ROWS(VDOT_Q4_K_ROW);
    case LH_TYPE_Q5_K: ROWS(VDOT_Q5_K_ROW);
    case LH_TYPE_Q6_K: ROWS(VDOT_Q6_K_ROW);
    default:
        for (size_t i = 0; i < n_rows; i++)
            y[i] = 0;
        break;
    }
#undef ROWS
#else
    for (size_t i = 0; i < n_rows; i++, r += row_size)
        y[i] = lh_q8_kind(t) ? sdot_q8(t, r, xq, n) : 0;
#endif
}

void lh_gemm_q8(lh_type t, const void *rows, size_t row_size, size_t n_rows, const void *xq,
                size_t xq_stride, size_t n_act, size_t n, float *y, size_t ldy)
{
    const char *xa = xq;
    size_t a = 0;
#ifdef LH_HAVE_AVX2
    /* NA activation rows at a time (kept in L1) against each of the n_rows weight rows */
#define X4(fn, act_t)                                                                         \
    for (; a + NA <= n_act; a += NA) {                                                        \
        const act_t *acts[NA];                                                                \
        for (int j = 0; j < NA; j++)                                                          \
            acts[j] = (const void *)(xa + (a + j) * xq_stride);                               \
        for (size_t r = 0; r < n_rows; r++) {                                                 \
            float out[NA];                                                                    \
            fn((const void *)((const char *)rows + r * row_size), acts, nb, out);             \
            for (int j = 0; j < NA; j++)                                                      \
                y[(a + j) * ldy + r] = out[j];                                                \
        }                                                                                     \
    }                                                                                         \
    break
    size_t nb = lh_type_block(t) ? n / lh_type_block(t) : 0;
    switch (t) {
    case LH_TYPE_Q4_0: X4(vdot_q4_0_x4, lh_block_q8a);
    case LH_TYPE_Q4_1: X4(vdot_q4_1_x4, lh_block_q8a);
    case LH_TYPE_Q5_0: X4(vdot_q5_0_x4, lh_block_q8a);
    case LH_TYPE_Q5_1: X4(vdot_q5_1_x4, lh_block_q8a);
    case LH_TYPE_Q8_0: X4(vdot_q8_0_x4, lh_block_q8a);
    case LH_TYPE_IQ4_NL: X4(vdot_iq4_nl_x4, lh_block_q8a);
    case LH_TYPE_Q2_K: X4(vdot_q2_K_x4, lh_block_q8K);
    case LH_TYPE_Q3_K: X4(vdot_q3_K_x4, lh_block_q8K);
    case LH_TYPE_Q4_K: X4(vdot_q4_K_x4, lh_block_q8K);
    case LH_TYPE_Q5_K: X4(vdot_q5_K_x4, lh_block_q8K);
    case LH_TYPE_Q6_K: X4(vdot_q6_K_x4, lh_block_q8K);
    default: break;
    }
#undef X4
#endif
    for (; a < n_act; a++)
        lh_dot_rows_q8(t, rows, row_size, xa + a * xq_stride, n, y + a * ldy, n_rows);
}

/* ---- interleaved panels of 32 weight rows (prefill, AVX-512 VNNI) ----------------------------
 *
 * lh_gemm_q8 above still takes one weight row at a time and reduces 8 lanes per block.  Here 32
 * weight rows are first unpacked (lh_q8p_pack, once per matmul call per 32 rows) into a panel in
 * which every 128-byte line pair holds 4 consecutive levels of each of the 32 rows, as unsigned
 * bytes (row r at byte 4r).  One vpdpbusd of a 64-byte line with 4 activation bytes broadcast to
 * all lanes adds 4 products to each of 16 rows' sums, so a block's integer dot products for 32
 * rows come out in two registers with no horizontal sums, and every line serves LH_Q8P_NA
 * activation rows (a 32 x 4 register block: 8 loads of 64 bytes per 8 vpdpbusd).
 *
 * Level offsets (Q4_0's -8, Q5_0's -16, the +128 that makes Q8_0/IQ4_NL levels unsigned) are
 * integer corrections -off·Σa per activation block (lh_q8p_corr) that start each block's sum;
 * the K-quants' integer scales multiply each sub-block's sum (vpmulld), and their min/offset
 * terms are Σ_j mn_j · bsums_j over the activation's 16-element sums (vpdpwssd).  So every
 * block's (or super-block's) integer sum is exactly the one the single-row kernels form; only the
 * float accumulation over blocks differs in order (one float per block and row instead of 8
 * lanes), which is within the bound test_fused states for lh_dot_rows_q8. */

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define LH_HAVE_Q8P 1
#endif

/* Elements per panel block: 32 (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) or 256 (Q2_K .. Q6_K); 0:
 * no panel kernel for the type. */
static size_t q8p_block(lh_type t)
{
#ifdef LH_HAVE_Q8P
    /* every quantised type: its block (32 or 256); the float types have none */
    size_t blk = lh_type_block(t);
    return blk > 1 ? blk : 0;
#else
    (void)t;
    return 0;
#endif
}

/* Q4_1 and Q5_1 (value = d·u + m): their min term is m · the activation block's F16 sum ds, as
 * in the single-row kernels (and ggml's q8_1), a third line pair of F32 per block. */
static int q8p_min(lh_type t) { return t == LH_TYPE_Q4_1 || t == LH_TYPE_Q5_1; }

/* Sub-blocks of a K-quant super-block with their own integer scale: 8 of 32 (Q4_K, Q5_K) or 16
 * of 16 elements. */
static int q8p_nsub(lh_type t) { return t == LH_TYPE_Q4_K || t == LH_TYPE_Q5_K ? 8 : 16; }

/* Bytes of one panel block, in 128-byte line pairs (32 rows x 4 bytes): the levels (block/4
 * line pairs), then for 32-blocks the 32 F32 scales; for K-quants NSUB line pairs of int32
 * scales, 8 of int16 pairs (the min/offset multipliers of bsums 2k, 2k+1), 32 F32 d and 32 F32
 * dm (the min/offset term's float factor). */
#define LP 128
static size_t q8p_block_bytes(lh_type t)
{
    size_t b = q8p_block(t);
    if (b == 32)
        return 8 * LP + LP + (q8p_min(t) ? LP : 0);
    return 64 * LP + (size_t)q8p_nsub(t) * LP + 8 * LP + 2 * LP;
}

int lh_q8p_has(lh_type t) { return q8p_block(t) != 0; }

size_t lh_q8p_panel_size(lh_type t, size_t n)
{
    size_t b = q8p_block(t);
    return b ? n / b * q8p_block_bytes(t) : 0;
}

size_t lh_q8p_corr_count(lh_type t, size_t n)
{
    return q8p_block(t) == 32 && !q8p_min(t) ? n / 32 : 0;
}

/* The level offset of a 32-block type (value = d·(u - off) with u the unsigned level). */
static int q8p_off(lh_type t)
{
    switch (t) {
    case LH_TYPE_Q4_0: return 8;
    case LH_TYPE_Q5_0: return 16;
    default: return 128;   /* Q8_0, IQ4_NL: signed levels + 128 */
    }
}

void lh_q8p_corr(lh_type t, const void *xq, size_t n, int32_t *corr)
{
    if (q8p_block(t) != 32 || q8p_min(t))
        return;
    const lh_block_q8a *a = xq;
    int off = q8p_off(t);
    for (size_t i = 0; i < n / 32; i++) {
        int s = 0;
        for (int j = 0; j < 32; j++)
            s += a[i].qs[j];
        corr[i] = -off * s;
    }
}

#ifdef LH_HAVE_Q8P
/* One 32-block of one row as unsigned levels u[32] and its scale (and *m, Q4_1/Q5_1's min). */
static inline float q8p_unpack32(lh_type t, const void *row, size_t i, uint8_t *u, float *m)
{
    __m256i v;
    float d;
    switch (t) {
    case LH_TYPE_Q4_1: {
        const lh_block_q4_1 *b = (const lh_block_q4_1 *)row + i;
        v = nibbles32(b->qs);
        d = f16_fast(b->d), *m = f16_fast(b->m);
        break;
    }
    case LH_TYPE_Q5_1: {
        const lh_block_q5_1 *b = (const lh_block_q5_1 *)row + i;
        v = _mm256_or_si256(nibbles32(b->qs), bits32_x10(le32(b->qh)));
        d = f16_fast(b->d), *m = f16_fast(b->m);
        break;
    }
    case LH_TYPE_Q4_0: {
        const lh_block_q4_0 *b = (const lh_block_q4_0 *)row + i;
        v = nibbles32(b->qs);
        d = f16_fast(b->d);
        break;
    }
    case LH_TYPE_Q5_0: {
        const lh_block_q5_0 *b = (const lh_block_q5_0 *)row + i;
        v = _mm256_or_si256(nibbles32(b->qs), bits32_x10(le32(b->qh)));
        d = f16_fast(b->d);
        break;
    }
    case LH_TYPE_Q8_0: {
        const lh_block_q8_0 *b = (const lh_block_q8_0 *)row + i;
        v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)b->qs), _mm256_set1_epi8((char)0x80));
        d = f16_fast(b->d);
        break;
    }
    default: {   /* IQ4_NL */
        const lh_block_iq4_nl *b = (const lh_block_iq4_nl *)row + i;
        const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)lh_iq4nl_values));
        v = _mm256_xor_si256(_mm256_shuffle_epi8(table, nibbles32(b->qs)), _mm256_set1_epi8((char)0x80));
        d = f16_fast(b->d);
        break;
    }
    }
    _mm256_storeu_si256((__m256i *)u, v);   /* signed levels + 128 == levels ^ 0x80 */
    return d;
}

/* One K-quant super-block as unsigned levels u[256], integer scales sc[nsub], the multipliers
 * mn[16] of the activation's 16-element sums, and the float factors: the block's share of the
 * dot product = d · Σ_j sc_j Σ_{sub j} u·a  +  dm · Σ_j mn_j bsums_j  (times the activation's d). */
static inline void q8p_unpackK(lh_type t, const void *row, size_t i, uint8_t *u, int32_t *sc,
                               int16_t *mn, float *d, float *dm)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3), m1 = _mm256_set1_epi8(1);
    switch (t) {
    case LH_TYPE_Q4_K:
    case LH_TYPE_Q5_K: {
        const uint8_t *scales, *qs, *qhp = NULL;
        uint16_t hd, hdmin;
        if (t == LH_TYPE_Q4_K) {
            const lh_block_q4_K *b = (const lh_block_q4_K *)row + i;
            scales = b->scales, qs = b->qs, hd = b->d, hdmin = b->dmin;
        } else {
            const lh_block_q5_K *b = (const lh_block_q5_K *)row + i;
            scales = b->scales, qs = b->qs, qhp = b->qh, hd = b->d, hdmin = b->dmin;
        }
        __m256i qh = qhp ? _mm256_loadu_si256((const __m256i *)qhp) : _mm256_setzero_si256();
        LH_UNROLL
        for (int k = 0; k < 4; k++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * k));
            __m256i hl = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m1), 4);
            __m256i hh = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k + 1), m1), 4);
            _mm256_storeu_si256((__m256i *)(u + 64 * k), _mm256_or_si256(_mm256_and_si256(q, m4), hl));
            _mm256_storeu_si256((__m256i *)(u + 64 * k + 32),
                                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), hh));
        }
        for (int j = 0; j < 8; j++) {
            int s, m;
            scale_min_k4(j, scales, &s, &m);
            sc[j] = s;
            mn[2 * j] = mn[2 * j + 1] = (int16_t)m;
        }
        *d = f16_fast(hd);
        *dm = -f16_fast(hdmin);
        return;
    }
    case LH_TYPE_Q6_K: {
        const lh_block_q6_K *b = (const lh_block_q6_K *)row + i;
        LH_UNROLL
        for (int h = 0; h < 2; h++) {
            __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
            uint8_t *y = u + 128 * h;
            _mm256_storeu_si256((__m256i *)y, _mm256_or_si256(_mm256_and_si256(l0, m4),
                                _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4)));
            _mm256_storeu_si256((__m256i *)(y + 32), _mm256_or_si256(_mm256_and_si256(l1, m4),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4)));
            _mm256_storeu_si256((__m256i *)(y + 64), _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4)));
            _mm256_storeu_si256((__m256i *)(y + 96), _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4)));
        }
        for (int j = 0; j < 16; j++) {
            sc[j] = b->scales[j];
            mn[j] = (int16_t)(32 * b->scales[j]);   /* the -32 of every level */
        }
        *d = f16_fast(b->d);
        *dm = -*d;
        return;
    }
    case LH_TYPE_Q3_K: {
        const lh_block_q3_K *b = (const lh_block_q3_K *)row + i;
        int8_t s8[16];
        q3_K_scales(b->scales, s8);
        __m256i hm = _mm256_loadu_si256((const __m256i *)b->hmask);
        LH_UNROLL
        for (int h = 0; h < 2; h++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
            LH_UNROLL
            for (int c = 0; c < 4; c++) {
                __m256i lo = _mm256_and_si256(_mm256_srli_epi16(q, 2 * c), m3);
                __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + c), m1);
                _mm256_storeu_si256((__m256i *)(u + 128 * h + 32 * c),
                                    _mm256_or_si256(lo, _mm256_slli_epi16(hb, 2)));   /* level + 4 */
            }
        }
        for (int j = 0; j < 16; j++) {
            sc[j] = s8[j];
            mn[j] = (int16_t)(4 * s8[j]);
        }
        *d = f16_fast(b->d);
        *dm = -*d;
        return;
    }
    default: {   /* Q2_K */
        const lh_block_q2_K *b = (const lh_block_q2_K *)row + i;
        LH_UNROLL
        for (int h = 0; h < 2; h++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
            LH_UNROLL
            for (int c = 0; c < 4; c++)
                _mm256_storeu_si256((__m256i *)(u + 128 * h + 32 * c),
                                    _mm256_and_si256(_mm256_srli_epi16(q, 2 * c), m3));
        }
        for (int j = 0; j < 16; j++) {
            sc[j] = b->scales[j] & 0x0f;
            mn[j] = (int16_t)(b->scales[j] >> 4);
        }
        *d = f16_fast(b->d);
        *dm = -f16_fast(b->dmin);
        return;
    }
    }
}
#endif

void lh_q8p_pack(lh_type t, const void *rows, size_t row_size, size_t n_rows, size_t n,
                 void *panel)
{
#ifdef LH_HAVE_Q8P
    size_t blk = q8p_block(t);
    if (!blk)
        return;
    size_t nb = n / blk, bb = q8p_block_bytes(t), nr = n_rows < LH_Q8P_ROWS ? n_rows : LH_Q8P_ROWS;
    uint8_t *p = panel;
    /* the levels of the 32 rows of one block, row-major; a 64-byte line of the panel is 4 bytes of
     * each of 16 rows, gathered (rows past n_rows stay 0, as do their scales) */
    _Alignas(64) uint8_t u[LH_Q8P_ROWS * LH_QK_K];
    if (nr < LH_Q8P_ROWS) {
        memset(p, 0, nb * bb);
        memset(u, 0, sizeof u);
    }
    const __m512i rix = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                                             12, 13, 14, 15),
                                           _mm512_set1_epi32((int)(blk / 4)));
    const __m512i hix = _mm512_set1_epi32((int)(16 * blk / 4));
    int nsub = q8p_nsub(t);
    for (size_t i = 0; i < nb; i++) {
        uint8_t *pb = p + i * bb;
        for (size_t r = 0; r < nr; r++) {
            const char *row = (const char *)rows + r * row_size;
            if (blk == 32) {
                float m = 0, d = q8p_unpack32(t, row, i, u + 32 * r, &m);
                memcpy(pb + 8 * LP + 4 * r, &d, 4);
                if (q8p_min(t))
                    memcpy(pb + 9 * LP + 4 * r, &m, 4);
            } else {
                int32_t sc[16];
                int16_t mn[16];
                float d, dm;
                q8p_unpackK(t, row, i, u + LH_QK_K * r, sc, mn, &d, &dm);
                uint8_t *ps = pb + 64 * LP, *pm = ps + LP * nsub, *pd = pm + 8 * LP;
                for (int j = 0; j < nsub; j++)
                    memcpy(ps + LP * j + 4 * r, &sc[j], 4);
                for (int k = 0; k < 8; k++)
                    memcpy(pm + LP * k + 4 * r, &mn[2 * k], 4);
                memcpy(pd + 4 * r, &d, 4);
                memcpy(pd + LP + 4 * r, &dm, 4);
            }
        }
        for (size_t s = 0; s < blk / 4; s++) {
            __m512i ix = _mm512_add_epi32(rix, _mm512_set1_epi32((int)s));
            _mm512_store_si512((void *)(pb + LP * s), _mm512_i32gather_epi32(ix, (const void *)u, 4));
            if (nr > 16)
                _mm512_store_si512((void *)(pb + LP * s + 64),
                                   _mm512_i32gather_epi32(_mm512_add_epi32(ix, hix), (const void *)u, 4));
        }
    }
#else
    (void)t, (void)rows, (void)row_size, (void)n_rows, (void)n, (void)panel;
#endif
}

#ifdef LH_HAVE_Q8P
#define LH_Q8P_NA 4

static inline __m512i bcast32(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* 32 panel rows (two registers) × NA activation rows, 32-blocks; has_min: Q4_1/Q5_1's min term
 * (then no corrections). */
static inline __attribute__((always_inline)) void q8p_kernel32(const uint8_t *p, size_t nb,
                                                               const lh_block_q8a *const *a,
                                                               const int32_t *const *corr,
                                                               __m512 (*f)[2], const int has_min)
{
    for (int r = 0; r < LH_Q8P_NA; r++)
        f[r][0] = f[r][1] = _mm512_setzero_ps();
    for (size_t i = 0; i < nb; i++, p += 9 * LP + (has_min ? LP : 0)) {
        __m512i acc[LH_Q8P_NA][2];
        LH_UNROLL
        for (int r = 0; r < LH_Q8P_NA; r++)
            acc[r][0] = acc[r][1] = has_min ? _mm512_setzero_si512() : _mm512_set1_epi32(corr[r][i]);
        LH_UNROLL
        for (int s = 0; s < 8; s++) {
            __m512i w0 = _mm512_load_si512((const void *)(p + LP * s));
            __m512i w1 = _mm512_load_si512((const void *)(p + LP * s + 64));
            LH_UNROLL
            for (int r = 0; r < LH_Q8P_NA; r++) {
                __m512i x = bcast32(a[r][i].qs + 4 * s);
                acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], w0, x);
                acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], w1, x);
            }
        }
        __m512 d0 = _mm512_load_ps((const void *)(p + 8 * LP));
        __m512 d1 = _mm512_load_ps((const void *)(p + 8 * LP + 64));
        LH_UNROLL
        for (int r = 0; r < LH_Q8P_NA; r++) {
            __m512 da = _mm512_set1_ps(a[r][i].d);
            f[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][0]), _mm512_mul_ps(d0, da), f[r][0]);
            f[r][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][1]), _mm512_mul_ps(d1, da), f[r][1]);
        }
        if (has_min) {
            __m512 m0 = _mm512_load_ps((const void *)(p + 9 * LP));
            __m512 m1 = _mm512_load_ps((const void *)(p + 9 * LP + 64));
            LH_UNROLL
            for (int r = 0; r < LH_Q8P_NA; r++) {
                __m512 ds = _mm512_set1_ps(a[r][i].ds);
                f[r][0] = _mm512_fmadd_ps(m0, ds, f[r][0]);
                f[r][1] = _mm512_fmadd_ps(m1, ds, f[r][1]);
            }
        }
    }
}

/* 32 panel rows × NA activation rows, K-quant super-blocks of NSUB sub-blocks. */
static inline __attribute__((always_inline)) void q8p_kernelK(const uint8_t *p, size_t nb,
                                                              const lh_block_q8K *const *a,
                                                              __m512 (*f)[2], const int nsub)
{
    const int spb = 64 / nsub;   /* line pairs per sub-block */
    const size_t bb = 64 * LP + (size_t)nsub * LP + 8 * LP + 2 * LP;
    for (int r = 0; r < LH_Q8P_NA; r++)
        f[r][0] = f[r][1] = _mm512_setzero_ps();
    for (size_t i = 0; i < nb; i++, p += bb) {
        const uint8_t *ps = p + 64 * LP, *pm = ps + LP * nsub, *pd = pm + 8 * LP;
        __m512i tot[LH_Q8P_NA][2];
        LH_UNROLL
        for (int r = 0; r < LH_Q8P_NA; r++)
            tot[r][0] = tot[r][1] = _mm512_setzero_si512();
        for (int j = 0; j < nsub; j++) {
            __m512i acc[LH_Q8P_NA][2];
            LH_UNROLL
            for (int r = 0; r < LH_Q8P_NA; r++)
                acc[r][0] = acc[r][1] = _mm512_setzero_si512();
            LH_UNROLL
            for (int s = 0; s < spb; s++) {
                const uint8_t *pl = p + LP * (j * spb + s);
                __m512i w0 = _mm512_load_si512((const void *)pl);
                __m512i w1 = _mm512_load_si512((const void *)(pl + 64));
                LH_UNROLL
                for (int r = 0; r < LH_Q8P_NA; r++) {
                    __m512i x = bcast32(a[r][i].qs + 4 * (j * spb + s));
                    acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], w0, x);
                    acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], w1, x);
                }
            }
            __m512i sc0 = _mm512_load_si512((const void *)(ps + LP * j));
            __m512i sc1 = _mm512_load_si512((const void *)(ps + LP * j + 64));
            LH_UNROLL
            for (int r = 0; r < LH_Q8P_NA; r++) {
                tot[r][0] = _mm512_add_epi32(tot[r][0], _mm512_mullo_epi32(acc[r][0], sc0));
                tot[r][1] = _mm512_add_epi32(tot[r][1], _mm512_mullo_epi32(acc[r][1], sc1));
            }
        }
        __m512 d0 = _mm512_load_ps((const void *)pd), d1 = _mm512_load_ps((const void *)(pd + 64));
        LH_UNROLL
        for (int r = 0; r < LH_Q8P_NA; r++) {
            __m512 da = _mm512_set1_ps(a[r][i].d);
            f[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot[r][0]), _mm512_mul_ps(d0, da), f[r][0]);
            f[r][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot[r][1]), _mm512_mul_ps(d1, da), f[r][1]);
        }
        __m512i mn[LH_Q8P_NA][2];
        LH_UNROLL
        for (int r = 0; r < LH_Q8P_NA; r++)
            mn[r][0] = mn[r][1] = _mm512_setzero_si512();
        LH_UNROLL
        for (int k = 0; k < 8; k++) {
            __m512i m0 = _mm512_load_si512((const void *)(pm + LP * k));
            __m512i m1 = _mm512_load_si512((const void *)(pm + LP * k + 64));
            LH_UNROLL
            for (int r = 0; r < LH_Q8P_NA; r++) {
                __m512i x = bcast32(a[r][i].bsums + 2 * k);
                mn[r][0] = _mm512_dpwssd_epi32(mn[r][0], m0, x);
                mn[r][1] = _mm512_dpwssd_epi32(mn[r][1], m1, x);
            }
        }
        __m512 e0 = _mm512_load_ps((const void *)(pd + LP)), e1 = _mm512_load_ps((const void *)(pd + LP + 64));
        LH_UNROLL
        for (int r = 0; r < LH_Q8P_NA; r++) {
            __m512 da = _mm512_set1_ps(a[r][i].d);
            f[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mn[r][0]), _mm512_mul_ps(e0, da), f[r][0]);
            f[r][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mn[r][1]), _mm512_mul_ps(e1, da), f[r][1]);
        }
    }
}
#endif

void lh_q8p_gemm(lh_type t, const void *panel, size_t n_rows, const void *xq, size_t xq_stride,
                 const int32_t *corr, size_t corr_stride, size_t n_act, size_t n, float *y,
                 size_t ldy)
{
#ifdef LH_HAVE_Q8P
    size_t blk = q8p_block(t);
    if (!blk || n_rows == 0)
        return;
    size_t nb = n / blk, nr = n_rows < LH_Q8P_ROWS ? n_rows : LH_Q8P_ROWS;
    __mmask16 m0 = (__mmask16)((1u << (nr < 16 ? nr : 16)) - 1);
    __mmask16 m1 = (__mmask16)((1u << (nr > 16 ? nr - 16 : 0)) - 1);
    const char *xa = xq;
    for (size_t a0 = 0; a0 < n_act; a0 += LH_Q8P_NA) {
        /* activation rows past n_act repeat the last one; their results are dropped */
        const void *ap[LH_Q8P_NA];
        const int32_t *cp[LH_Q8P_NA];
        size_t na = n_act - a0 < LH_Q8P_NA ? n_act - a0 : LH_Q8P_NA;
        for (size_t r = 0; r < LH_Q8P_NA; r++) {
            size_t ar = a0 + (r < na ? r : na - 1);
            ap[r] = xa + ar * xq_stride;
            cp[r] = corr ? corr + ar * corr_stride : NULL;
        }
        __m512 f[LH_Q8P_NA][2];
        if (blk == 32 && q8p_min(t))
            q8p_kernel32(panel, nb, (const lh_block_q8a *const *)ap, cp, f, 1);
        else if (blk == 32)
            q8p_kernel32(panel, nb, (const lh_block_q8a *const *)ap, cp, f, 0);
        else if (q8p_nsub(t) == 8)
            q8p_kernelK(panel, nb, (const lh_block_q8K *const *)ap, f, 8);
        else
            q8p_kernelK(panel, nb, (const lh_block_q8K *const *)ap, f, 16);
        for (size_t r = 0; r < na; r++) {
            _mm512_mask_storeu_ps(y + (a0 + r) * ldy, m0, f[r][0]);
            _mm512_mask_storeu_ps(y + (a0 + r) * ldy + 16, m1, f[r][1]);
        }
    }
#else
    (void)t, (void)panel, (void)n_rows, (void)xq, (void)xq_stride, (void)corr, (void)corr_stride;
    (void)n_act, (void)n, (void)y, (void)ldy;
#endif
}
#undef LP
