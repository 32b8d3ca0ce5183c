/* kernels/rows — private to kernels/: query rows against the key and value rows of a KV cache
 * tile, read in place (F16 through F16C, or F32), for attention (attn.c) and LongHeads
 * (longheads.c): one row's scores and P·V, and the blocked forms that load each key row once
 * for two queries and each value row once for four.  All static inline, for the f16 flag to be
 * a constant at every call.
 *
 * Not a module: no .c, nothing outside kernels/ includes it.
 */
#ifndef LH_ROWS_H
#define LH_ROWS_H

#include <stddef.h>
#include <stdint.h>

#include "simd.h"

/* A prefetch cursor for the kernels below (NULL: none): over the steps of the kernel's loop, line
 * j of the size bytes at b[j % 4], `lines` lines a step, for the j < size / 64.  Given the next
 * four tiles in b[0..3], every tile is fetched a quarter at a time over the four tiles before it:
 * four streams in flight at once, which one core reads at ~20 GB/s where it reads tiles scattered
 * over a large cache one after the other at ~12, with or without prefetching the next one whole
 * (one core, 8 KiB tiles at random in 512 MiB, this machine).  Spread over the steps, the loads
 * behind the prefetches do not wait. */
typedef struct {
    const char *b[4];
    size_t j, n_lines, lines;
} lh_pf;

/* A cursor over the next four tiles of size bytes (b[k] NULL: none), spread over n_steps steps. */
static inline lh_pf pf_over(const char *const b[4], size_t size, size_t n_steps)
{
    lh_pf pf = {{b[0], b[1], b[2], b[3]}, 0, size / 64, 0};
    pf.lines = n_steps ? (pf.n_lines + n_steps - 1) / n_steps : pf.n_lines;
    return pf;
}

static inline __attribute__((always_inline)) void pf_step(lh_pf *pf)
{
    if (pf)
        for (size_t i = 0; i < pf->lines && pf->j < pf->n_lines; i++, pf->j++)
            if (pf->b[pf->j % 4])
                __builtin_prefetch(pf->b[pf->j % 4] + pf->j * 64);
}

#if defined(LH_HAVE_AVX2) && defined(__F16C__)
#define LH_HAVE_ROWS 1
/* Decode-shaped items (few rows: one query per head of a GQA group) read the cache in place, F16
 * or F32, every key and value row once per tile and then from L1/L2 for the other rows of the
 * item.  Copying or converting whole tiles first, or the 2x4 / 4x16 GEMM blocks built for prefill,
 * cost several times the arithmetic here (measured: the F32 cache read at ~4.6 GB/s on one thread
 * through lh_gemm_nt/nn, F16 in place at ~19).  hd % 8 == 0 (AVX2 loops) or hd % 16 == 0
 * (AVX-512 loops). */
static inline __attribute__((always_inline)) __m256 ld8(int f16, const void *p, size_t i)
{
    if (f16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
    return _mm256_loadu_ps((const float *)p + i);
}

#ifdef __AVX512F__
static inline __attribute__((always_inline)) __m512 ld16(int f16, const void *p, size_t i)
{
    if (f16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
    return _mm512_loadu_ps((const float *)p + i);
}

/* Horizontal sums of 16 vectors into one: pairs, then quads within 128-bit lanes, then across
 * lanes.  hs_pair(x, y) lanes: x0+x2, y0+y2, x1+x3, y1+y3; hs_quad of two pairs (x, y), (z, w):
 * the lane sums of x, y, z, w; hs_oct: lanes 0+2 and 1+3 of two quads; hs_final: the 16 sums. */
static inline __attribute__((always_inline)) __m512 hs_pair(__m512 x, __m512 y)
{
    return _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
}
static inline __attribute__((always_inline)) __m512 hs_quad(__m512 x, __m512 y)
{
    return _mm512_add_ps(_mm512_shuffle_ps(x, y, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(x, y, _MM_SHUFFLE(3, 2, 3, 2)));
}
static inline __attribute__((always_inline)) __m512 hs_oct(__m512 x, __m512 y)
{
    return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(3, 2, 3, 2)));
}
static inline __attribute__((always_inline)) __m512 hs_final(__m512 x, __m512 y)
{
    return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* Lane i: the sum of the lanes of ai, for 16 vectors (one shuffle tree, 15 adds). */
static inline __attribute__((always_inline)) __m512 hs16(__m512 a0, __m512 a1, __m512 a2,
                                                         __m512 a3, __m512 a4, __m512 a5,
                                                         __m512 a6, __m512 a7, __m512 a8,
                                                         __m512 a9, __m512 a10, __m512 a11,
                                                         __m512 a12, __m512 a13, __m512 a14,
                                                         __m512 a15)
{
    __m512 c0 = hs_quad(hs_pair(a0, a1), hs_pair(a2, a3));
    __m512 c1 = hs_quad(hs_pair(a4, a5), hs_pair(a6, a7));
    __m512 c2 = hs_quad(hs_pair(a8, a9), hs_pair(a10, a11));
    __m512 c3 = hs_quad(hs_pair(a12, a13), hs_pair(a14, a15));
    return hs_final(hs_oct(c0, c1), hs_oct(c2, c3));
}
#endif

/* s[j] = qr · K[j] for j < kt */
static inline __attribute__((always_inline)) void direct_scores(int f16, const float *qr,
                                                                const void *K, size_t kt,
                                                                size_t hd, float *s)
{
    size_t j = 0;
#ifdef __AVX512F__
    if (hd % 16 == 0) {
        /* 16 keys at a time: one accumulator per key, then a shuffle tree that leaves the 16
         * horizontal sums in one register (15 adds instead of 16 full reductions) */
        for (; j + 16 <= kt; j += 16) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
                   a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0,
                   a15 = a0;
            const size_t b = j * hd;
            if (hd == 64) {
                /* the query in four registers, each key row read front to back */
                __m512 q0 = _mm512_loadu_ps(qr), q1 = _mm512_loadu_ps(qr + 16);
                __m512 q2 = _mm512_loadu_ps(qr + 32), q3 = _mm512_loadu_ps(qr + 48);
#define KEY(i)                                                                                \
    do {                                                                                      \
        size_t o_ = b + (i) * 64;                                                             \
        __m512 x_ = _mm512_mul_ps(q0, ld16(f16, K, o_));                                      \
        x_ = _mm512_fmadd_ps(q1, ld16(f16, K, o_ + 16), x_);                                  \
        x_ = _mm512_fmadd_ps(q2, ld16(f16, K, o_ + 32), x_);                                  \
        a##i = _mm512_fmadd_ps(q3, ld16(f16, K, o_ + 48), x_);                                \
    } while (0)
                KEY(0); KEY(1); KEY(2); KEY(3); KEY(4); KEY(5); KEY(6); KEY(7);
                KEY(8); KEY(9); KEY(10); KEY(11); KEY(12); KEY(13); KEY(14); KEY(15);
#undef KEY
            } else {
                for (size_t d = 0; d < hd; d += 16) {
                    __m512 vq = _mm512_loadu_ps(qr + d);
#define KEY(i) a##i = _mm512_fmadd_ps(vq, ld16(f16, K, b + (i) * hd + d), a##i)
                    KEY(0); KEY(1); KEY(2); KEY(3); KEY(4); KEY(5); KEY(6); KEY(7);
                    KEY(8); KEY(9); KEY(10); KEY(11); KEY(12); KEY(13); KEY(14); KEY(15);
#undef KEY
                }
            }
            _mm512_storeu_ps(s + j, hs16(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12,
                                         a13, a14, a15));
        }
        for (; j < kt; j++) {
            __m512 a0 = _mm512_setzero_ps();
            for (size_t d = 0; d < hd; d += 16)
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(qr + d), ld16(f16, K, j * hd + d), a0);
            s[j] = _mm512_reduce_add_ps(a0);
        }
        return;
    }
#endif
    for (; j + 4 <= kt; j += 4) {
        size_t b = j * hd;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (size_t d = 0; d < hd; d += 8) {
            __m256 vq = _mm256_loadu_ps(qr + d);
            a0 = _mm256_fmadd_ps(vq, ld8(f16, K, b + d), a0);
            a1 = _mm256_fmadd_ps(vq, ld8(f16, K, b + hd + d), a1);
            a2 = _mm256_fmadd_ps(vq, ld8(f16, K, b + 2 * hd + d), a2);
            a3 = _mm256_fmadd_ps(vq, ld8(f16, K, b + 3 * hd + d), a3);
        }
        _mm_storeu_ps(s + j, lh_hsum4x256(a0, a1, a2, a3));
    }
    for (; j < kt; j++) {
        __m256 a0 = _mm256_setzero_ps();
        for (size_t d = 0; d < hd; d += 8)
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qr + d), ld8(f16, K, j * hd + d), a0);
        s[j] = lh_hsum256(a0);
    }
}

/* o += Σ_j p[j] V[j] for j < kt, up to 64 columns at a time held in registers */
static inline __attribute__((always_inline)) void direct_pv(int f16, const float *p, const void *V,
                                                            size_t kt, size_t hd, float *o)
{
    size_t d = 0;
#ifdef __AVX512F__
    if (hd % 16 == 0) {
        for (; d + 64 <= hd; d += 64) {
            /* two accumulator sets (even and odd keys) keep eight FMA chains in flight */
            __m512 o0 = _mm512_loadu_ps(o + d), o1 = _mm512_loadu_ps(o + d + 16);
            __m512 o2 = _mm512_loadu_ps(o + d + 32), o3 = _mm512_loadu_ps(o + d + 48);
            __m512 e0 = _mm512_setzero_ps(), e1 = e0, e2 = e0, e3 = e0;
            size_t j = 0;
            for (; j + 2 <= kt; j += 2) {
                __m512 vp = _mm512_set1_ps(p[j]), wp = _mm512_set1_ps(p[j + 1]);
                size_t b = j * hd + d, c = b + hd;
                o0 = _mm512_fmadd_ps(vp, ld16(f16, V, b), o0);
                o1 = _mm512_fmadd_ps(vp, ld16(f16, V, b + 16), o1);
                o2 = _mm512_fmadd_ps(vp, ld16(f16, V, b + 32), o2);
                o3 = _mm512_fmadd_ps(vp, ld16(f16, V, b + 48), o3);
                e0 = _mm512_fmadd_ps(wp, ld16(f16, V, c), e0);
                e1 = _mm512_fmadd_ps(wp, ld16(f16, V, c + 16), e1);
                e2 = _mm512_fmadd_ps(wp, ld16(f16, V, c + 32), e2);
                e3 = _mm512_fmadd_ps(wp, ld16(f16, V, c + 48), e3);
            }
            for (; j < kt; j++) {
                __m512 vp = _mm512_set1_ps(p[j]);
                size_t b = j * hd + d;
                o0 = _mm512_fmadd_ps(vp, ld16(f16, V, b), o0);
                o1 = _mm512_fmadd_ps(vp, ld16(f16, V, b + 16), o1);
                o2 = _mm512_fmadd_ps(vp, ld16(f16, V, b + 32), o2);
                o3 = _mm512_fmadd_ps(vp, ld16(f16, V, b + 48), o3);
            }
            _mm512_storeu_ps(o + d, _mm512_add_ps(o0, e0));
            _mm512_storeu_ps(o + d + 16, _mm512_add_ps(o1, e1));
            _mm512_storeu_ps(o + d + 32, _mm512_add_ps(o2, e2));
            _mm512_storeu_ps(o + d + 48, _mm512_add_ps(o3, e3));
        }
        for (; d < hd; d += 16) {
            __m512 o0 = _mm512_loadu_ps(o + d);
            for (size_t j = 0; j < kt; j++)
                o0 = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), ld16(f16, V, j * hd + d), o0);
            _mm512_storeu_ps(o + d, o0);
        }
        return;
    }
#endif
    for (; d + 32 <= hd; d += 32) {
        __m256 o0 = _mm256_loadu_ps(o + d), o1 = _mm256_loadu_ps(o + d + 8);
        __m256 o2 = _mm256_loadu_ps(o + d + 16), o3 = _mm256_loadu_ps(o + d + 24);
        for (size_t j = 0; j < kt; j++) {
            __m256 vp = _mm256_broadcast_ss(p + j);
            size_t b = j * hd + d;
            o0 = _mm256_fmadd_ps(vp, ld8(f16, V, b), o0);
            o1 = _mm256_fmadd_ps(vp, ld8(f16, V, b + 8), o1);
            o2 = _mm256_fmadd_ps(vp, ld8(f16, V, b + 16), o2);
            o3 = _mm256_fmadd_ps(vp, ld8(f16, V, b + 24), o3);
        }
        _mm256_storeu_ps(o + d, o0);
        _mm256_storeu_ps(o + d + 8, o1);
        _mm256_storeu_ps(o + d + 16, o2);
        _mm256_storeu_ps(o + d + 24, o3);
    }
    for (; d < hd; d += 8) {
        /* four chains: one would wait on the FMA latency every row (head_dim 8, 16) */
        __m256 o0 = _mm256_loadu_ps(o + d), o1 = _mm256_setzero_ps(), o2 = o1, o3 = o1;
        size_t j = 0;
        for (; j + 4 <= kt; j += 4) {
            size_t b = j * hd + d;
            o0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), ld8(f16, V, b), o0);
            o1 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j + 1), ld8(f16, V, b + hd), o1);
            o2 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j + 2), ld8(f16, V, b + 2 * hd), o2);
            o3 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j + 3), ld8(f16, V, b + 3 * hd), o3);
        }
        for (; j < kt; j++)
            o0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), ld8(f16, V, j * hd + d), o0);
        _mm256_storeu_ps(o + d, _mm256_add_ps(_mm256_add_ps(o0, o1), _mm256_add_ps(o2, o3)));
    }
}

#ifdef __AVX512F__
/* Two rows at once, head_dim 64: s0[j] = q0 · K[j], s1[j] = q1 · K[j], each key row loaded once
 * for both (a GQA group's rows share their keys).  Eight keys per step: 16 accumulators, the
 * two queries in 8 registers, then one shuffle tree for the 16 sums; pf advances once a step. */
static inline __attribute__((always_inline)) void scores2_64(int f16, const float *qa,
                                                             const float *qb, const void *K,
                                                             size_t kt, float *sa, float *sb,
                                                             lh_pf *pf)
{
    __m512 a0 = _mm512_loadu_ps(qa), a1 = _mm512_loadu_ps(qa + 16);
    __m512 a2 = _mm512_loadu_ps(qa + 32), a3 = _mm512_loadu_ps(qa + 48);
    __m512 b0 = _mm512_loadu_ps(qb), b1 = _mm512_loadu_ps(qb + 16);
    __m512 b2 = _mm512_loadu_ps(qb + 32), b3 = _mm512_loadu_ps(qb + 48);
    size_t j = 0;
    for (; j + 8 <= kt; j += 8) {
        __m512 x0, x1, x2, x3, x4, x5, x6, x7, y0, y1, y2, y3, y4, y5, y6, y7;
#define KEY2(i)                                                                               \
    do {                                                                                      \
        size_t o_ = (j + (i)) * 64;                                                           \
        __m512 k0 = ld16(f16, K, o_), k1 = ld16(f16, K, o_ + 16);                             \
        __m512 k2 = ld16(f16, K, o_ + 32), k3 = ld16(f16, K, o_ + 48);                        \
        x##i = _mm512_fmadd_ps(a3, k3, _mm512_fmadd_ps(a2, k2,                                \
               _mm512_fmadd_ps(a1, k1, _mm512_mul_ps(a0, k0))));                              \
        y##i = _mm512_fmadd_ps(b3, k3, _mm512_fmadd_ps(b2, k2,                                \
               _mm512_fmadd_ps(b1, k1, _mm512_mul_ps(b0, k0))));                              \
    } while (0)
        KEY2(0); KEY2(1); KEY2(2); KEY2(3); KEY2(4); KEY2(5); KEY2(6); KEY2(7);
#undef KEY2
        pf_step(pf);
        __m512 r = hs16(x0, x1, x2, x3, x4, x5, x6, x7, y0, y1, y2, y3, y4, y5, y6, y7);
        /* row a keys 0-7, row b 0-7 */
        _mm256_storeu_ps(sa + j, _mm512_castps512_ps256(r));
        _mm256_storeu_ps(sb + j, _mm512_extractf32x8_ps(r, 1));
    }
    for (; j < kt; j++) {
        size_t o = j * 64;
        __m512 k0 = ld16(f16, K, o), k1 = ld16(f16, K, o + 16);
        __m512 k2 = ld16(f16, K, o + 32), k3 = ld16(f16, K, o + 48);
        sa[j] = _mm512_reduce_add_ps(_mm512_fmadd_ps(a3, k3, _mm512_fmadd_ps(a2, k2,
                _mm512_fmadd_ps(a1, k1, _mm512_mul_ps(a0, k0)))));
        sb[j] = _mm512_reduce_add_ps(_mm512_fmadd_ps(b3, k3, _mm512_fmadd_ps(b2, k2,
                _mm512_fmadd_ps(b1, k1, _mm512_mul_ps(b0, k0)))));
    }
}

/* Four rows at once, head_dim 64: o_r += Σ_j p_r[j] V[j] for r = 0..3 (rows anywhere: four
 * pointers each), each value row loaded (and converted) once for the four; the 4 x 64 outputs
 * stay in 16 registers; pf advances once a value row. */
static inline __attribute__((always_inline)) void pv4_64p(int f16, const float *p0,
                                                          const float *p1, const float *p2,
                                                          const float *p3, const void *V,
                                                          size_t kt, float *o0, float *o1,
                                                          float *o2, float *o3, lh_pf *pf)
{
    /* sixteen named accumulators: an array here stayed on the stack (GCC -O2) */
#define LD4(r)                                                                                \
    __m512 c##r##0 = _mm512_loadu_ps(o##r), c##r##1 = _mm512_loadu_ps(o##r + 16),              \
           c##r##2 = _mm512_loadu_ps(o##r + 32), c##r##3 = _mm512_loadu_ps(o##r + 48)
    LD4(0);
    LD4(1);
    LD4(2);
    LD4(3);
#undef LD4
    for (size_t j = 0; j < kt; j++) {
        __m512 v0 = ld16(f16, V, j * 64), v1 = ld16(f16, V, j * 64 + 16);
        __m512 v2 = ld16(f16, V, j * 64 + 32), v3 = ld16(f16, V, j * 64 + 48);
#define ROW(r)                                                                                \
    do {                                                                                      \
        __m512 w_ = _mm512_set1_ps(p##r[j]);                                                  \
        c##r##0 = _mm512_fmadd_ps(w_, v0, c##r##0);                                           \
        c##r##1 = _mm512_fmadd_ps(w_, v1, c##r##1);                                           \
        c##r##2 = _mm512_fmadd_ps(w_, v2, c##r##2);                                           \
        c##r##3 = _mm512_fmadd_ps(w_, v3, c##r##3);                                           \
    } while (0)
        ROW(0);
        ROW(1);
        ROW(2);
        ROW(3);
#undef ROW
        pf_step(pf);
    }
#define ST4(r)                                                                                \
    do {                                                                                      \
        _mm512_storeu_ps(o##r, c##r##0);                                                      \
        _mm512_storeu_ps(o##r + 16, c##r##1);                                                 \
        _mm512_storeu_ps(o##r + 32, c##r##2);                                                 \
        _mm512_storeu_ps(o##r + 48, c##r##3);                                                 \
    } while (0)
    ST4(0);
    ST4(1);
    ST4(2);
    ST4(3);
#undef ST4
}

/* pv4_64p for four rows of p (stride ldp) and o (stride ldo) */
static inline __attribute__((always_inline)) void pv4_64(int f16, const float *p, size_t ldp,
                                                         const void *V, size_t kt, float *o,
                                                         size_t ldo)
{
    pv4_64p(f16, p, p + ldp, p + 2 * ldp, p + 3 * ldp, V, kt, o, o + ldo, o + 2 * ldo,
            o + 3 * ldo, NULL);
}
#endif
#endif /* LH_HAVE_AVX2 && __F16C__ */

#endif
