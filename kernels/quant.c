/* kernels/quant — see quant.h.
 *
 * The scalar f16/bf16 conversions are bit-exact IEEE (round to nearest even, subnormals, inf,
 * NaN kept quiet); with F16C the row conversions use the hardware instructions, which give the
 * same bits (tests/test_quant.c checks all 65536 halves both ways against the scalar code).
 * Q8_0 quantisation follows ggml's reference exactly: d = amax/127, id = 1/d, qs = roundf(x*id),
 * d stored as F16.
 */
#include "quant.h"

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
    return type == LH_TYPE_F32 || type == LH_TYPE_F16 || type == LH_TYPE_BF16 ||
           type == LH_TYPE_Q8_0;
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
    case LH_TYPE_Q8_0: return LH_QK8_0;
    default: return 0;
    }
}

size_t lh_type_block_size(uint32_t type)
{
    switch (type) {
    case LH_TYPE_F32: return 4;
    case LH_TYPE_F16:
    case LH_TYPE_BF16: return 2;
    case LH_TYPE_Q8_0: return sizeof(lh_block_q8_0);
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
    }
    return 0;
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
