/* kernels/attn — see attn.h.
 *
 * Work is split into items (KV head, slice of its query heads, block of up to qb_max()
 * queries); the rows of an item (its query heads × its queries) share every K/V tile they read,
 * which is where grouped-query attention saves memory traffic.
 *
 * Each item walks its keys in tiles of KT (flash attention): S = Q·Kᵀ, causal mask, online
 * softmax (running max m and sum l per row, the accumulator rescaled by e^(m_old - m_new)
 * whenever the max grows), O += P·V.  Scratch per thread is therefore O(rows × (head_dim + KT) +
 * KT × head_dim), independent of n_ctx.
 *
 * Two ways through the tiles:
 *  - decode (up to DIRECT_ROWS rows per KV head: one or a few queries times a GQA group,
 *    head_dim % 8 == 0, AVX2+F16C): direct_decode reads the cache in place, F16 or F32, each KV
 *    head once for its whole group, and cuts the key tiles of all heads into one equal range per
 *    thread (flash-decoding; a head cut between threads is merged by log-sum-exp);
 *  - otherwise (prefill): items dealt round-robin (schedule(static, 1)), because causal blocks
 *    late in a batch cost more than early ones, the products through lh_gemm_nt / lh_gemm_nn
 *    (F16 tiles converted to F32 first).  When there are fewer items than threads, the query-head
 *    slice is narrowed to make more items.
 */
#include "attn.h"
#include "ops.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "matmul.h"
#include "rows.h"
#include "simd.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* Queries per item: blocks of about 64 rows (query heads × queries), at least 16 queries.  Rows
 * past 16 go to oneDNN's sgemm inside lh_gemm_nt/nn, which is most efficient on tall blocks:
 * 64 queries per item instead of 16 took 12% off a 64-query F32 prefill slice (12 heads of 64);
 * GQA groups of 8 (128 rows at 16 queries) gained nothing from more. */
#define QB_ROWS 64
#define QB_MIN 16
static size_t qb_max(size_t group)
{
    size_t qb = QB_ROWS / (group ? group : 1);
    return qb < QB_MIN ? QB_MIN : qb;
}
#define KT 128   /* keys per tile */
/* rows per item up to which decode reads the cache in place (a GQA group of 8 at decode) */
#define DIRECT_ROWS 8

static size_t max_rows(const lh_attn_shape *s, size_t max_q)
{
    size_t group = s->n_head_kv ? s->n_head / s->n_head_kv : 1;
    size_t QB = qb_max(group), qb = max_q < QB ? (max_q ? max_q : 1) : QB;
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
    /* decode: two partial (m, l, O) states of up to DIRECT_ROWS rows */
    n += 2 * up16((r < DIRECT_ROWS ? r : DIRECT_ROWS) * (hd + 2));
    return n * sizeof(float) + 64;
}

#if defined(LH_HAVE_AVX2) && defined(__F16C__)
/* Rows 0..R-1 of a decode item over key tiles t0 .. t1-1 of its KV head, continuing the online
 * softmax state (m, l, O).  Row r is query r % nq (last key pos0 + r % nq).  The rows share every
 * tile: it is read from memory by the first row and from cache by the others.  With several rows
 * the tiles are cut to 8 KiB of keys (and as much of values) so that what the other rows read
 * again is in L1; with head_dim 64 the rows go in pairs (scores) and fours (P·V) through loops
 * that load each key and value row once for all of them: a GQA group of 8 (F16) went from 0.34
 * to 0.25 ms per 32 heads x 2048 keys on one thread. */
static void direct_tiles(const lh_attn_shape *s, size_t R, size_t nq, size_t pos0, const char *kh,
                         const char *vh, size_t t0, size_t t1, const float *Q, float *S, float *m,
                         float *l, float *O)
{
    size_t hd = s->head_dim, n_keys = pos0 + nq;
    int f16 = s->kv_type == LH_TYPE_F16;
    size_t esz = f16 ? sizeof(uint16_t) : sizeof(float);
    size_t st = KT;
    if (R > 1) {
        st = 8192 / (hd * esz) / 16 * 16;
        st = st < 16 ? 16 : st > KT ? KT : st;
    }
    size_t j_end = t1 * KT < n_keys ? t1 * KT : n_keys;
    for (size_t j0 = t0 * KT; j0 < j_end; j0 += st) {
        size_t kt = j_end - j0 < st ? j_end - j0 : st;
        const char *kp = kh + j0 * hd * esz, *vp = vh + j0 * hd * esz;
        size_t r = 0;   /* rows done by the blocked loops */
#ifdef __AVX512F__
        if (hd == 64)
            for (; r + 2 <= R; r += 2)
                f16 ? scores2_64(1, Q + r * hd, Q + (r + 1) * hd, kp, kt, S + r * KT,
                                 S + (r + 1) * KT, NULL)
                    : scores2_64(0, Q + r * hd, Q + (r + 1) * hd, kp, kt, S + r * KT,
                                 S + (r + 1) * KT, NULL);
#endif
        for (; r < R; r++)
            f16 ? direct_scores(1, Q + r * hd, kp, kt, hd, S + r * KT)
                : direct_scores(0, Q + r * hd, kp, kt, hd, S + r * KT);
        for (r = 0; r < R; r++) {
            float *sr = S + r * KT;
            size_t last = pos0 + r % nq;   /* the row's last key */
            size_t lim = last + 1 <= j0 ? 0 : (last + 1 - j0 < kt ? last + 1 - j0 : kt);
            if (lim == 0) {
                for (size_t j = 0; j < kt; j++)
                    sr[j] = 0;   /* contributes nothing to P·V */
                continue;
            }
            float mx = lh_ops_max(sr, lim, m[r]);
            float corr = expf(m[r] - mx);   /* 0 on the first tile (m = -inf) */
            float sum = lh_ops_exp_sum(sr, lim, mx);
            for (size_t j = lim; j < kt; j++)
                sr[j] = 0;
            m[r] = mx;
            l[r] = l[r] * corr + sum;
            if (corr != 1.0f) {
                float *o = O + r * hd;
                for (size_t d = 0; d < hd; d++)
                    o[d] *= corr;
            }
        }
        r = 0;
#ifdef __AVX512F__
        if (hd == 64)
            for (; r + 4 <= R; r += 4)
                f16 ? pv4_64(1, S + r * KT, KT, vp, kt, O + r * hd, hd)
                    : pv4_64(0, S + r * KT, KT, vp, kt, O + r * hd, hd);
#endif
        for (; r < R; r++)
            f16 ? direct_pv(1, S + r * KT, vp, kt, hd, O + r * hd)
                : direct_pv(0, S + r * KT, vp, kt, hd, O + r * hd);
    }
}
#define LH_HAVE_DIRECT 1
#endif

/* Load rows r = g * nq + qi (query heads h0 .. h0+ng-1, queries q0 .. q0+nq-1) pre-scaled into Q
 * and reset the online-softmax state. */
static void rows_begin(const lh_attn_shape *s, const float *q, size_t h0, size_t ng, size_t q0,
                       size_t nq, float *Q, float *m, float *l, float *O)
{
    size_t hd = s->head_dim, ld_q = s->n_head * hd, R = ng * nq;
    float scale = 1.0f / sqrtf((float)hd);
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
}

/* out rows of the same item = O / l */
static void rows_end(const lh_attn_shape *s, size_t h0, size_t ng, size_t q0, size_t nq,
                     const float *l, const float *O, float *out)
{
    size_t hd = s->head_dim, ld_q = s->n_head * hd;
    for (size_t g = 0; g < ng; g++)
        for (size_t qi = 0; qi < nq; qi++) {
            size_t r = g * nq + qi;
            float inv = 1.0f / l[r];
            float *dst = out + (q0 + qi) * ld_q + (h0 + g) * hd;
            for (size_t d = 0; d < hd; d++)
                dst[d] = O[r * hd + d] * inv;
        }
}

/* One item: rows r = g * nq + qi for query heads h0 .. h0+ng-1 (all reading KV head kvh) and
 * queries q0 .. q0+nq-1 of the batch, through lh_gemm_nt / lh_gemm_nn on tiles. */
static void attn_item(const lh_attn_shape *s, const float *q, size_t pos0, size_t kvh, size_t h0,
                      size_t ng, size_t q0, size_t nq, const void *k, const void *v, float *out,
                      float *scratch)
{
    size_t hd = s->head_dim, R = ng * nq;
    float *Q = scratch;                 /* (R, hd), pre-scaled */
    float *O = Q + up16(R * hd);        /* (R, hd) */
    float *S = O + up16(R * hd);        /* (R, KT) */
    float *m = S + up16(R * KT);        /* (R) running max */
    float *l = m + up16(R);             /* (R) running sum */
    float *Kt = l + up16(R);            /* (KT, hd) F32 tiles when the cache is F16 */
    float *Vt = Kt + up16(KT * hd);
    int f16 = s->kv_type == LH_TYPE_F16;

    rows_begin(s, q, h0, ng, q0, nq, Q, m, l, O);
    size_t n_keys = pos0 + q0 + nq;          /* keys 0 .. pos0+q0+nq-1 for the last query */
    size_t full_keys = pos0 + q0 + 1;        /* every row sees keys below this */
    size_t esz = f16 ? sizeof(uint16_t) : sizeof(float);
    const char *kh = (const char *)k + kvh * s->n_ctx * hd * esz;
    const char *vh = (const char *)v + kvh * s->n_ctx * hd * esz;

    for (size_t j0 = 0; j0 < n_keys; j0 += KT) {
        size_t kt = n_keys - j0 < KT ? n_keys - j0 : KT;
        const float *Kp, *Vp;
        if (f16) {
            lh_dequant_row(LH_TYPE_F16, kh + j0 * hd * esz, Kt, kt * hd);
            lh_dequant_row(LH_TYPE_F16, vh + j0 * hd * esz, Vt, kt * hd);
            Kp = Kt;
            Vp = Vt;
        } else {
            Kp = (const float *)kh + j0 * hd;
            Vp = (const float *)vh + j0 * hd;
        }
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
        lh_gemm_nn(R, hd, kt, S, KT, Vp, hd, O, hd, 1);
    }
    rows_end(s, h0, ng, q0, nq, l, O, out);
}

/* Waking a team costs microseconds, and on a loaded machine a preempted spinning thread costs
 * milliseconds: only go parallel when the products are worth it (~64k multiply-adds). */
static int worth_threads(const lh_attn_shape *s, size_t n_q, size_t pos0)
{
    return (double)n_q * (double)(pos0 + n_q) * (double)(s->n_head * s->head_dim) >= 65536.0;
}

static float *thread_scratch(void *scratch, size_t ssz, size_t t)
{
    char *base = (char *)scratch + t * ssz;
    return (float *)(base + ((64 - (uintptr_t)base % 64) % 64));
}

#ifdef LH_HAVE_DIRECT
/* Decode (flash-decoding): an item is one KV head with all its query heads and all n_q queries
 * (R = group * n_q rows), so each KV head is read once for its whole group.  The items' key
 * tiles, item after item, are cut into n_threads equal contiguous ranges: thread t takes units
 * [t*U/T, (t+1)*U/T) of the U = n_head_kv * n_tiles.  An item wholly inside one range is finished
 * there; the (at most two) items a range cuts leave their partial state (m, l, O) in that
 * thread's two slots, and after a barrier each cut item's partials are merged by log-sum-exp:
 * M = max m_i, l = Σ l_i e^(m_i - M), O = Σ O_i e^(m_i - M) / l.  So both threads stream the
 * cache to the end whatever the number of KV heads (one KV head or three on two threads). */
static size_t unit_lo(size_t t, size_t U, size_t T) { return t * U / T; }

static void direct_decode(const lh_attn_shape *s, const float *q, size_t n_q, size_t pos0,
                          const void *k, const void *v, float *out, void *scratch, size_t ssz,
                          size_t n_threads)
{
    size_t hd = s->head_dim, group = s->n_head / s->n_head_kv, R = group * n_q;
    size_t n_keys = pos0 + n_q, NT = (n_keys + KT - 1) / KT, U = s->n_head_kv * NT;
    size_t esz = s->kv_type == LH_TYPE_F16 ? sizeof(uint16_t) : sizeof(float);
    size_t slot = up16(R * (hd + 2));   /* one partial: m (R), l (R), O (R, hd) */
    int big = worth_threads(s, n_q, pos0);
    (void)big, (void)n_threads; /* unused without -fopenmp */
    OMP(omp parallel num_threads(n_threads) if (big))
    {
        size_t t = 0, T = 1;
#ifdef _OPENMP
        t = (size_t)omp_get_thread_num();
        T = (size_t)omp_get_num_threads();
#endif
        float *Q = thread_scratch(scratch, ssz, t);  /* (R, hd) pre-scaled */
        float *O = Q + up16(R * hd);                 /* (R, hd) */
        float *S = O + up16(R * hd);                 /* (R, KT) */
        float *m = S + up16(R * KT);                 /* (R) */
        float *l = m + up16(R);                      /* (R) */
        float *part = l + up16(R);                   /* 2 slots of `slot` floats */
        size_t u0 = unit_lo(t, U, T), u1 = unit_lo(t + 1, U, T);
        for (size_t b = u0 / NT; u0 < u1 && b <= (u1 - 1) / NT; b++) {
            size_t tb = u0 > b * NT ? u0 - b * NT : 0, te = u1 < (b + 1) * NT ? u1 - b * NT : NT;
            rows_begin(s, q, b * group, group, 0, n_q, Q, m, l, O);
            direct_tiles(s, R, n_q, pos0, (const char *)k + b * s->n_ctx * hd * esz,
                         (const char *)v + b * s->n_ctx * hd * esz, tb, te, Q, S, m, l, O);
            if (tb == 0 && te == NT) {
                rows_end(s, b * group, group, 0, n_q, l, O, out);
            } else {
                float *p = part + (b == u0 / NT ? 0 : slot);
                memcpy(p, m, R * sizeof *m);
                memcpy(p + R, l, R * sizeof *l);
                memcpy(p + 2 * R, O, R * hd * sizeof *O);
            }
        }
        OMP(omp barrier)
        /* merge the cut items, one thread per item */
        for (size_t b = t; b < s->n_head_kv; b += T) {
            size_t n_parts = 0;
            for (size_t i = 0; i < T; i++)
                n_parts += unit_lo(i, U, T) < (b + 1) * NT && unit_lo(i + 1, U, T) > b * NT;
            if (n_parts < 2)
                continue;
            for (size_t r = 0; r < R; r++) {
                m[r] = -INFINITY;
                l[r] = 0;
            }
            memset(O, 0, R * hd * sizeof *O);
            for (size_t i = 0; i < T; i++) {
                size_t a0 = unit_lo(i, U, T), a1 = unit_lo(i + 1, U, T);
                if (!(a0 < (b + 1) * NT && a1 > b * NT))
                    continue;
                const float *p = thread_scratch(scratch, ssz, i) + (part - Q) +
                                 (b == a0 / NT ? 0 : slot);
                for (size_t r = 0; r < R; r++) {
                    float mi = p[r], li = p[R + r];
                    if (li == 0)
                        continue;   /* no visible key in that part */
                    float mx = mi > m[r] ? mi : m[r];
                    float ca = expf(m[r] - mx), cb = expf(mi - mx);
                    l[r] = l[r] * ca + li * cb;
                    m[r] = mx;
                    float *o = O + r * hd;
                    const float *oi = p + 2 * R + r * hd;
                    for (size_t d = 0; d < hd; d++)
                        o[d] = o[d] * ca + oi[d] * cb;
                }
            }
            rows_end(s, b * group, group, 0, n_q, l, O, out);
        }
    }
}
#endif

void lh_attn_dense(const lh_attn_shape *s, const float *q, size_t n_q, size_t pos0,
                   const void *k, const void *v, float *out, void *scratch, size_t n_threads)
{
    if (n_q == 0)
        return;
    size_t group = s->n_head / s->n_head_kv;
    n_threads = n_threads ? n_threads : 1;
    size_t ssz = lh_attn_scratch_size(s, n_q) / sizeof(float) * sizeof(float);
#ifdef LH_HAVE_DIRECT
    if (group * n_q <= DIRECT_ROWS && s->head_dim % 8 == 0) {
        direct_decode(s, q, n_q, pos0, k, v, out, scratch, ssz, n_threads);
        return;
    }
#endif
    size_t QB = qb_max(group);
    size_t n_qb = (n_q + QB - 1) / QB, qb = (n_q + n_qb - 1) / n_qb;   /* even blocks */
    /* heads per item: the whole group, halved while that leaves threads idle */
    size_t ng = group;
    while (ng % 2 == 0 && s->n_head_kv * (group / ng) * n_qb < n_threads)
        ng /= 2;
    size_t n_gs = group / ng;
    size_t n_items = s->n_head_kv * n_gs * n_qb;
    int big = worth_threads(s, n_q, pos0);
    (void)big; /* unused without -fopenmp */
    /* Later query blocks first, so the round-robin deal starts with the costliest items. */
    OMP(omp parallel num_threads(n_threads) if (big))
    {
        size_t t = 0;
#ifdef _OPENMP
        t = (size_t)omp_get_thread_num();
#endif
        float *sc = thread_scratch(scratch, ssz, t);
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
