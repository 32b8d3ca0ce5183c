/* kernels/simd — private to kernels/: the few AVX2 helpers that several kernels share (a vector
 * expf, horizontal sums) and the OMP() pragma wrapper, so that every kernel builds with and
 * without -fopenmp and with and without AVX2 (the scalar paths need nothing from here).
 *
 * Not a module: no .c, nothing outside kernels/ includes it.
 */
#ifndef LH_SIMD_H
#define LH_SIMD_H

/* `OMP(omp parallel for ...)`: the pragma under -fopenmp, nothing otherwise (so -Wall does not
 * warn about unknown pragmas in serial builds). */
#ifdef _OPENMP
#define OMP(x) _Pragma(#x)
#else
#define OMP(x)
#endif

/* Full unrolling of a short constant loop in a kernel (shift counts and shuffle masks then become
 * immediates and constants). */
#if defined(__GNUC__) && !defined(__clang__)
#define LH_UNROLL _Pragma("GCC unroll 8")
#elif defined(__clang__)
#define LH_UNROLL _Pragma("unroll")
#else
#define LH_UNROLL
#endif

#if defined(__AVX2__) && defined(__FMA__)
#define LH_HAVE_AVX2 1
#include <immintrin.h>

static inline float lh_hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float lh_hmax256(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Four horizontal sums at once: returns {hsum(a), hsum(b), hsum(c), hsum(d)}. */
static inline __m128 lh_hsum4x256(__m256 a, __m256 b, __m256 c, __m256 d)
{
    __m256 ab = _mm256_hadd_ps(a, b);   /* a01 a23 b01 b23 | a45 a67 b45 b67 */
    __m256 cd = _mm256_hadd_ps(c, d);
    __m256 abcd = _mm256_hadd_ps(ab, cd); /* a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7 */
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

/* The constants of lh_exp256 and lh_exp512, written once so that the two widths stay the same
 * operations on the same values (tests/test_ops.c checks them bit for bit). */
#define LH_EXP_HI 88.7f
#define LH_EXP_LO (-87.3f)
#define LH_EXP_LOG2E 1.44269504088896341f
#define LH_EXP_LN2_HI 0.693359375f         /* ln 2 = LN2_HI + LN2_LO (Cody-Waite) */
#define LH_EXP_LN2_LO (-2.12194440e-4f)
#define LH_EXP_P0 1.9875691500e-4f         /* the polynomial, highest degree first */
#define LH_EXP_P1 1.3981999507e-3f
#define LH_EXP_P2 8.3334519073e-3f
#define LH_EXP_P3 4.1665795894e-2f
#define LH_EXP_P4 1.6666665459e-1f
#define LH_EXP_P5 5.0000001201e-1f

/* e^x for 8 lanes, relative error ~2 ulp over the normal range (Cody-Waite range reduction to
 * |r| <= ln2/2, then a degree-6 minimax polynomial, then scaling by 2^n through the exponent
 * bits).  x < -87.3 (including -inf) gives 0, x > 88.7 gives +inf, NaN stays NaN. */
static inline __m256 lh_exp256(__m256 x)
{
    const __m256 hi = _mm256_set1_ps(LH_EXP_HI), lo = _mm256_set1_ps(LH_EXP_LO);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    __m256 over = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(LH_EXP_LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LH_EXP_LN2_HI), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LH_EXP_LN2_LO), r);
    __m256 p = _mm256_set1_ps(LH_EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(LH_EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(LH_EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(LH_EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(LH_EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(LH_EXP_P5));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* 2^n split as 2^(n/2) * 2^(n - n/2) so that n = 128 (x near 88.7) does not overflow the
     * exponent field before the final multiply. */
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i n1 = _mm256_srai_epi32(ni, 1);
    __m256i n2 = _mm256_sub_epi32(ni, n1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
    __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    y = _mm256_andnot_ps(under, y);
    y = _mm256_blendv_ps(y, _mm256_set1_ps(__builtin_inff()), over);
    return _mm256_blendv_ps(y, x, nan);
}

#ifdef __AVX512F__
/* lh_exp256 on 16 lanes: the same operations lane by lane, so the same bits. */
static inline __m512 lh_exp512(__m512 x)
{
    const __m512 hi = _mm512_set1_ps(LH_EXP_HI), lo = _mm512_set1_ps(LH_EXP_LO);
    __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    __mmask16 over = _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    __m512 xc = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(LH_EXP_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LH_EXP_LN2_HI), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LH_EXP_LN2_LO), r);
    __m512 p = _mm512_set1_ps(LH_EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(LH_EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(LH_EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(LH_EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(LH_EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(LH_EXP_P5));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i ni = _mm512_cvtps_epi32(n);
    __m512i n1 = _mm512_srai_epi32(ni, 1);
    __m512i n2 = _mm512_sub_epi32(ni, n1);
    __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, _mm512_set1_epi32(127)), 23));
    __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, _mm512_set1_epi32(127)), 23));
    __m512 y = _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
    y = _mm512_maskz_mov_ps((__mmask16)~under, y);
    y = _mm512_mask_mov_ps(y, over, _mm512_set1_ps(__builtin_inff()));
    return _mm512_mask_mov_ps(y, nan, x);
}
#endif
#endif

#endif
