/* kernels/attn — see attn.h.
 *
 * Work is split into items (KV head, slice of its query heads, block of up to QB queries); the
 * rows of an item (its query heads × its queries) share every K/V tile they read, which is where
 * grouped-query attention saves memory traffic.  Items are dealt round-robin (schedule(static, 1))
 * because causal blocks late in a batch cost more than early ones.  When there are fewer items
 * than threads (decode with few KV heads), the query-head slice is narrowed to make more items.
 *
 * Each item walks its keys in tiles of KT (flash attention): S = Q·Kᵀ with lh_gemm_nt, causal
 * mask, online softmax (running max m and sum l per row, the accumulator rescaled by e^(m_old -
 * m_new) whenever the max grows), O += P·V with lh_gemm_nn.  F16 tiles are converted to F32 first.
 * Scratch per thread is therefore O(rows × (head_dim + KT) + KT × head_dim), independent of n_ctx.
 */
#include "attn.h"
#include "ops.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "matmul.h"
#include "simd.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define QB 16    /* queries per item */
#define KT 128   /* keys per tile */

static size_t max_rows(const lh_attn_shape *s, size_t max_q)
{
    size_t group = s->n_head_kv ? s->n_head / s->n_head_kv : 1;
    size_t qb = max_q < QB ? (max_q ? max_q : 1) : QB;
    return group * qb;
}

/* floats, each region rounded up to a multiple of 16 floats (64 bytes) */
static size_t up16(size_t n) { return (n + 15) & ~(size_t)15; }

size_t lh_attn_scratch_size(const lh_attn_shape *s, size_t max_q)
{
    size_t r = max_rows(s, max_q), hd = s->head_dim;
    size_t n = up16(r * hd) * 2 + up16(r * KT) + up16(r) * 2;
    if (s->kv_type == LH_TYPE_F16)
        n += up16(KT * hd) * 2;
    return n * sizeof(float) + 64;
}

#if defined(LH_HAVE_AVX2) && defined(__F16C__)
/* Few rows (decode: one query per head of a GQA group): the cache is read in place, F16 or F32,
 * every key and value row once per tile and then from L1 for the other rows of the item.
 * Copying or converting whole tiles first, or the 2x4 / 4x16 GEMM blocks built for prefill,
 * cost several times the arithmetic here (measured: the F32 cache read at ~4.6 GB/s on one
 * thread through lh_gemm_nt/nn, F16 in place at ~19).  hd % 8 == 0. */
static inline __attribute__((always_inline)) __m256 ld8(int f16, const void *p, size_t i)
{
    if (f16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
    return _mm256_loadu_ps((const float *)p + i);
}

/* s[j] = qr · K[j] for j < kt */
static inline __attribute__((always_inline)) void direct_scores(int f16, const float *qr,
                                                                const void *K, size_t kt,
                                                                size_t hd, float *s)
{
    size_t j = 0;
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

/* o += Σ_j p[j] V[j] for j < kt, 32 columns at a time held in registers */
static inline __attribute__((always_inline)) void direct_pv(int f16, const float *p, const void *V,
                                                            size_t kt, size_t hd, float *o)
{
    size_t d = 0;
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
        __m256 o0 = _mm256_loadu_ps(o + d);
        for (size_t j = 0; j < kt; j++)
            o0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), ld8(f16, V, j * hd + d), o0);
        _mm256_storeu_ps(o + d, o0);
    }
}

static void f16_scores(const float *qr, const void *K, size_t kt, size_t hd, float *s)
{
    direct_scores(1, qr, K, kt, hd, s);
}
static void f32_scores(const float *qr, const void *K, size_t kt, size_t hd, float *s)
{
    direct_scores(0, qr, K, kt, hd, s);
}
static void f16_pv(const float *p, const void *V, size_t kt, size_t hd, float *o)
{
    direct_pv(1, p, V, kt, hd, o);
}
static void f32_pv(const float *p, const void *V, size_t kt, size_t hd, float *o)
{
    direct_pv(0, p, V, kt, hd, o);
}
#define LH_HAVE_DIRECT 1
/* rows per item up to which the cache is read in place (a GQA group of 8 at decode) */
#define DIRECT_ROWS 8
#endif

/* One item: rows r = g * nq + qi for query heads h0 .. h0+ng-1 (all reading KV head kvh) and
 * queries q0 .. q0+nq-1 of the batch. */
static void attn_item(const lh_attn_shape *s, const float *q, size_t pos0, size_t kvh, size_t h0,
                      size_t ng, size_t q0, size_t nq, const void *k, const void *v, float *out,
                      float *scratch)
{
    size_t hd = s->head_dim, nh = s->n_head, R = ng * nq;
    size_t ld_q = nh * hd;
    float *Q = scratch;                 /* (R, hd), pre-scaled */
    float *O = Q + up16(R * hd);        /* (R, hd) */
    float *S = O + up16(R * hd);        /* (R, KT) */
    float *m = S + up16(R * KT);        /* (R) running max */
    float *l = m + up16(R);             /* (R) running sum */
    float *Kt = l + up16(R);            /* (KT, hd) F32 tiles when the cache is F16 */
    float *Vt = Kt + up16(KT * hd);
    float scale = 1.0f / sqrtf((float)hd);
    int f16 = s->kv_type == LH_TYPE_F16;

    for (size_t g = 0; g < ng; g++)
        for (size_t qi = 0; qi < nq; qi++) {
            const float *src = q + (q0 + qi) * ld_q + (h0 + g) * hd;
            float *dst = Q + (g * nq + qi) * hd;
            for (size_t d = 0; d < hd; d++)
                dst[d] = src[d] * scale;
        }
    for (size_t r = 0; r < R; r++) {
        m[r] = -INFINITY;
        l[r] = 0;
    }
    memset(O, 0, R * hd * sizeof *O);

    size_t n_keys = pos0 + q0 + nq;          /* keys 0 .. pos0+q0+nq-1 for the last query */
    size_t full_keys = pos0 + q0 + 1;        /* every row sees keys below this */
    size_t esz = f16 ? sizeof(uint16_t) : sizeof(float);
    const char *kh = (const char *)k + kvh * s->n_ctx * hd * esz;
    const char *vh = (const char *)v + kvh * s->n_ctx * hd * esz;

    int direct = 0;   /* the cache read in place by *_scores / *_pv */
#ifdef LH_HAVE_DIRECT
    direct = R <= DIRECT_ROWS && hd % 8 == 0;
#endif
    for (size_t j0 = 0; j0 < n_keys; j0 += KT) {
        size_t kt = n_keys - j0 < KT ? n_keys - j0 : KT;
        const float *Kp = NULL, *Vp = NULL;
        if (direct) {
#ifdef LH_HAVE_DIRECT
            const char *kp = kh + j0 * hd * esz;
            for (size_t r = 0; r < R; r++)
                (f16 ? f16_scores : f32_scores)(Q + r * hd, kp, kt, hd, S + r * KT);
#endif
        } else if (f16) {
            lh_dequant_row(LH_TYPE_F16, kh + j0 * hd * esz, Kt, kt * hd);
            lh_dequant_row(LH_TYPE_F16, vh + j0 * hd * esz, Vt, kt * hd);
            Kp = Kt;
            Vp = Vt;
        } else {
            Kp = (const float *)kh + j0 * hd;
            Vp = (const float *)vh + j0 * hd;
        }
        if (!direct)
            lh_gemm_nt(R, kt, hd, Q, hd, Kp, hd, S, KT, 0);
        int masked = j0 + kt > full_keys;
        for (size_t r = 0; r < R; r++) {
            float *sr = S + r * KT;
            size_t lim = kt;   /* valid keys of this tile for row r */
            if (masked) {
                size_t last = pos0 + q0 + r % nq;   /* the row's last key */
                lim = last + 1 <= j0 ? 0 : (last + 1 - j0 < kt ? last + 1 - j0 : kt);
            }
            if (lim == 0) {
                for (size_t j = 0; j < kt; j++)
                    sr[j] = 0;   /* contributes nothing to P·V */
                continue;
            }
            float mx = lh_ops_max(sr, lim, m[r]);
            float corr = expf(m[r] - mx);   /* 0 on the first tile (m = -inf) */
            float sum = lh_ops_exp_sum(sr, lim, mx);
            size_t j = lim;
            for (; j < kt; j++)
                sr[j] = 0;
            m[r] = mx;
            l[r] = l[r] * corr + sum;
            if (corr != 1.0f) {
                float *o = O + r * hd;
                for (size_t d = 0; d < hd; d++)
                    o[d] *= corr;
            }
        }
        if (direct) {
#ifdef LH_HAVE_DIRECT
            const char *vp = vh + j0 * hd * esz;
            for (size_t r = 0; r < R; r++)
                (f16 ? f16_pv : f32_pv)(S + r * KT, vp, kt, hd, O + r * hd);
#endif
        } else {
            lh_gemm_nn(R, hd, kt, S, KT, Vp, hd, O, hd, 1);
        }
    }

    for (size_t g = 0; g < ng; g++)
        for (size_t qi = 0; qi < nq; qi++) {
            size_t r = g * nq + qi;
            float inv = 1.0f / l[r];
            float *dst = out + (q0 + qi) * ld_q + (h0 + g) * hd;
            for (size_t d = 0; d < hd; d++)
                dst[d] = O[r * hd + d] * inv;
        }
}

void lh_attn_dense(const lh_attn_shape *s, const float *q, size_t n_q, size_t pos0,
                   const void *k, const void *v, float *out, void *scratch, size_t n_threads)
{
    if (n_q == 0)
        return;
    size_t group = s->n_head / s->n_head_kv;
    size_t n_qb = (n_q + QB - 1) / QB, qb = (n_q + n_qb - 1) / n_qb;   /* even blocks */
    n_threads = n_threads ? n_threads : 1;
    /* heads per item: the whole group, halved while that leaves threads idle */
    size_t ng = group;
    while (ng % 2 == 0 && s->n_head_kv * (group / ng) * n_qb < n_threads)
        ng /= 2;
    size_t n_gs = group / ng;
    size_t n_items = s->n_head_kv * n_gs * n_qb;
    size_t ssz = lh_attn_scratch_size(s, n_q) / sizeof(float) * sizeof(float);
    /* Waking a team costs microseconds, and on a loaded machine a preempted spinning thread costs
     * milliseconds: only go parallel when the products are worth it (~64k multiply-adds). */
    int big = (double)n_q * (double)(pos0 + n_q) * (double)(s->n_head * s->head_dim) >= 65536.0;
    (void)big; /* unused without -fopenmp */
    /* Later query blocks first, so the round-robin deal starts with the costliest items. */
    OMP(omp parallel num_threads(n_threads) if (big))
    {
        size_t t = 0;
#ifdef _OPENMP
        t = (size_t)omp_get_thread_num();
#endif
        char *base = (char *)scratch + t * ssz;
        float *sc = (float *)(base + ((64 - (uintptr_t)base % 64) % 64));
        OMP(omp for schedule(static, 1))
        for (size_t it = 0; it < n_items; it++) {
            size_t b = n_qb - 1 - it / (s->n_head_kv * n_gs);
            size_t rest = it % (s->n_head_kv * n_gs);
            size_t kvh = rest / n_gs, gs = rest % n_gs;
            size_t q0 = b * qb, nq = n_q - q0 < qb ? n_q - q0 : qb;
            attn_item(s, q, pos0, kvh, kvh * group + gs * ng, ng, q0, nq, k, v, out, sc);
        }
    }
}

static float kv_at(const lh_attn_shape *s, const void *c, size_t kvh, size_t pos, size_t d)
{
    size_t i = (kvh * s->n_ctx + pos) * s->head_dim + d;
    if (s->kv_type == LH_TYPE_F16)
        return lh_f16_to_f32(((const uint16_t *)c)[i]);
    return ((const float *)c)[i];
}

void lh_attn_dense_ref(const lh_attn_shape *s, const float *q, size_t n_q, size_t pos0,
                       const void *k, const void *v, float *out)
{
    size_t hd = s->head_dim, nh = s->n_head, group = nh / s->n_head_kv;
    double scale = 1.0 / sqrt((double)hd);
    for (size_t i = 0; i < n_q; i++)
        for (size_t h = 0; h < nh; h++) {
            size_t kvh = h / group, n_keys = pos0 + i + 1;
            const float *qh = q + i * nh * hd + h * hd;
            double mx = -INFINITY;
            for (size_t j = 0; j < n_keys; j++) {
                double sc = 0;
                for (size_t d = 0; d < hd; d++)
                    sc += (double)qh[d] * kv_at(s, k, kvh, j, d);
                mx = sc * scale > mx ? sc * scale : mx;
            }
            double sum = 0;
            float *o = out + i * nh * hd + h * hd;
            double acc[hd > 0 ? hd : 1];
            for (size_t d = 0; d < hd; d++)
                acc[d] = 0;
            for (size_t j = 0; j < n_keys; j++) {
                double sc = 0;
                for (size_t d = 0; d < hd; d++)
                    sc += (double)qh[d] * kv_at(s, k, kvh, j, d);
                double p = exp(sc * scale - mx);
                sum += p;
                for (size_t d = 0; d < hd; d++)
                    acc[d] += p * kv_at(s, v, kvh, j, d);
            }
            for (size_t d = 0; d < hd; d++)
                o[d] = (float)(acc[d] / sum);
        }
}

void lh_attn_store(const lh_attn_shape *s, void *cache, size_t pos, const float *x)
{
    size_t hd = s->head_dim;
    for (size_t h = 0; h < s->n_head_kv; h++) {
        size_t off = (h * s->n_ctx + pos) * hd;
        if (s->kv_type == LH_TYPE_F16)
            lh_quant_row(LH_TYPE_F16, x + h * hd, (uint16_t *)cache + off, hd);
        else
            memcpy((float *)cache + off, x + h * hd, hd * sizeof(float));
    }
}
