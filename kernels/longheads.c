/* kernels/longheads — LongHeads: "LongHeads: Multi-Head Attention is Secretly a Long Context
 * Processor", Yi Lu, Xin Zhou, Wei He, Jun Zhao, Tao Ji, Tao Gui, Qi Zhang, Xuanjing Huang
 * (2024), arXiv:2402.10685.
 *
 * Why it works: a pretrained model has only ever seen relative distances below its training
 * length, and attention is mostly sparse.  So instead of stretching positions, every head keeps
 * its attended length at L = K*w tokens by picking K chunks of w tokens out of an arbitrarily long
 * context, and different heads pick different chunks, so the layer as a whole still covers it.
 *
 * Which chunks (query at position t >= L, current chunk cc = t / w, always cc >= K):
 *   - chunk 0, always: the attention sink; softmax needs somewhere to put weight that is not
 *     "about" anything, and the first tokens are where the pretrained model puts it;
 *   - chunk cc - 1 and the current chunk cc (causal up to t itself), always: the local context
 *     that language modelling needs, and the current chunk has no representation yet (it is
 *     incomplete), while right after a chunk boundary it holds almost nothing;
 *   - the other K - 3 slots: the complete chunks 1 .. cc-2 whose representation c scores highest
 *     against the UN-rotated query (q·c).  The representation is built from locally rotated keys
 *     (see below), and an un-rotated query compares content without a position bias.  Ties go to
 *     the earlier chunk.  (With K == 2 only chunk 0 and the current chunk fit; the previous chunk
 *     is dropped rather than the sink.)
 * Selection is per query head: with grouped-query attention the heads sharing a KV head still
 * choose independently, that is the point of the method.
 *
 * Chunk representation (per layer, head and complete chunk, computed once and cached): the
 * chunk's queries and keys rotated by their local positions pos mod w attend bidirectionally
 * inside the chunk; the mean of the w outputs is the summary s (what the chunk is about in value
 * space); c = sum_j softmax_j(s·k_j/sqrt(d)) k_j is then a point in key space weighted towards the
 * keys that summary finds most relevant, so q·c approximates how strongly q would attend there.
 * Local positions make c independent of where the chunk sits in the context.
 *
 * Positions: the selected chunks are laid out contiguously in chunk order, keys at layout
 * positions 0, 1, 2, ... and the query at the position of its own key, (K-1)*w + t mod w, so no
 * distance ever exceeds L - 1, the largest the model was trained on.  The cache holds every key
 * rotated once by its local position (pos mod w); RoPE is relative, rot(q,P)·rot(k,p) =
 * rot(q,P-p0)·rot(k,p-p0), so for the chunk at layout slot r (layout positions r*w + j) it is
 * enough to rotate the query by P - r*w once per slot and dot it with the stored keys: no key is
 * ever re-rotated or copied.  For t < L the layout is the identity (chunk c at slot c, P = t),
 * which by the same identity IS causal attention at absolute positions: inside the window
 * LongHeads equals full attention.  Every query attends to its own key, in prefill and decode
 * alike (the official prefill leaves it out while its decode keeps it; we keep it in both so that
 * prefill and decode agree).
 *
 * Cost and shape of the work: heads run in parallel (OpenMP over query heads, static), each
 * thread building its head's new chunk representations and then walking the batch one chunk of
 * queries at a time (a block: at most w queries, one current chunk).  Within a block every chunk
 * that any query selected is read once: the queries that chose it, each rotated for the slot it
 * holds in that query's own layout, go through one lh_gemm_nt (scores) and one lh_gemm_nn (P·V).
 * Chunks every query holds at the same slot (chunk 0, the previous and the current one, and inside
 * the window all of them) need no gathering.  Measured (tools/lhbench): this beat grouping
 * consecutive queries with identical selections, which on random data are rarely identical and
 * then degenerate to one matrix-vector product per query and chunk, re-reading each chunk.
 * Scratch per thread depends only on w, L and n_ctx / w, never on the batch size.
 */
#include "longheads.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "matmul.h"
#include "ops.h"
#include "simd.h"

#ifdef _OPENMP
#include <omp.h>
#endif

struct lh_lh {
    lh_lh_params p;
    size_t max_q;
    size_t n_keep;          /* K = L / w */
    size_t n_chunk;         /* n_ctx / w: chunks that can ever complete */
    size_t ld_q;            /* n_head * head_dim */
    float *rep;             /* (n_layer, n_head, n_chunk, head_dim) chunk representations */
    float *ring;            /* (n_layer, w, n_head * head_dim) un-rotated queries of the last
                               w tokens processed, slot pos mod w */
    size_t *n_done;         /* (n_layer) tokens processed per layer */
    float *rope;            /* (L, n_rot/2, 2) {cos, sin} for positions 0 .. L-1 */
    size_t n_thread;
    size_t scr_floats;      /* floats of scratch per thread */
    float *scr;             /* (n_thread, scr_floats) */
    size_t *sel;            /* (n_thread, 5*w*K + w) selections and their union */
};

/* Views into one thread's scratch. */
typedef struct {
    float *kb, *vb;         /* (w, head_dim) F16 keys / values converted to F32 */
    float *qr;              /* (w, head_dim) queries rotated for one chunk of a block */
    float *sc;              /* (w, L) attention rows of a block; (w, w) when building reps */
    float *ss;              /* (w, n_chunk) selection scores of a block of queries */
    float *tmp;             /* (w, w) gathered scores / probabilities */
    float *ot;              /* (w, head_dim) gathered outputs */
    float *vec;             /* (2*w + head_dim): small vectors when building reps */
    size_t *sel;            /* (w, K) selection of each query of a block */
    size_t *cur;            /* (w) merge cursors */
    size_t *uc, *un;        /* (w*K) union of the selections: chunk, number of rows */
    size_t *ur, *us;        /* (w*K) per (chunk, row) entry: row and its slot */
} scratch;

static size_t n_keep_of(const lh_lh_params *p) { return p->window / p->chunk; }

static int params_ok(const lh_lh_params *p)
{
    return p->chunk > 0 && p->window % p->chunk == 0 && p->window >= 2 * p->chunk &&
           p->n_layer > 0 && p->n_head > 0 && p->n_head_kv > 0 &&
           p->n_head % p->n_head_kv == 0 && p->head_dim > 0 && p->n_rot % 2 == 0 &&
           p->n_rot <= p->head_dim && p->n_ctx > 0 &&
           (p->kv_type == LH_TYPE_F32 || p->kv_type == LH_TYPE_F16);
}

static scratch scratch_of(const lh_lh *s, size_t tid)
{
    size_t w = s->p.chunk, d = s->p.head_dim;
    float *f = s->scr + tid * s->scr_floats;
    scratch x;
    x.kb = f;
    x.vb = x.kb + w * d;
    x.qr = x.vb + w * d;
    x.sc = x.qr + w * d;
    x.ss = x.sc + w * s->p.window;
    x.tmp = x.ss + w * s->n_chunk;
    x.ot = x.tmp + w * w;
    x.vec = x.ot + w * d;
    size_t wk = w * s->n_keep;
    x.sel = s->sel + tid * (5 * wk + w);
    x.cur = x.sel + wk;
    x.uc = x.cur + w;
    x.un = x.uc + wk;
    x.ur = x.un + wk;
    x.us = x.ur + wk;
    return x;
}

int lh_lh_new(lh_lh **sp, const lh_lh_params *p, size_t max_q)
{
    *sp = NULL;
    if (!params_ok(p)) {
        lh_log_error("longheads: bad parameters (chunk %zu, window %zu, heads %zu/%zu, head_dim "
                     "%zu, n_rot %zu, kv type %d)", p->chunk, p->window, p->n_head, p->n_head_kv,
                     p->head_dim, p->n_rot, (int)p->kv_type);
        return -EINVAL;
    }
    lh_lh *s = calloc(1, sizeof *s);
    if (!s)
        goto fail;
    s->p = *p;
    s->max_q = max_q;
    s->n_keep = n_keep_of(p);
    s->n_chunk = p->n_ctx / p->chunk;
    s->ld_q = p->n_head * p->head_dim;
#ifdef _OPENMP
    s->n_thread = (size_t)omp_get_max_threads();
#else
    s->n_thread = 1;
#endif
    size_t w = p->chunk, d = p->head_dim;
    s->scr_floats = 4 * w * d + w * p->window + w * s->n_chunk + w * w + 2 * w + d;
    /* Counts come from the model's configuration; keep the products honest anyway. */
    size_t n_rep = p->n_layer * p->n_head;
    if (s->n_chunk && n_rep > SIZE_MAX / sizeof(float) / d / s->n_chunk)
        goto fail;
    s->rep = calloc(n_rep * (s->n_chunk ? s->n_chunk : 1) * d, sizeof(float));
    s->ring = calloc(p->n_layer * w * s->ld_q, sizeof(float));
    s->n_done = calloc(p->n_layer, sizeof(size_t));
    s->rope = calloc(p->window * (p->n_rot ? p->n_rot : 1), sizeof(float));
    s->scr = calloc(s->n_thread * s->scr_floats, sizeof(float));
    s->sel = calloc(s->n_thread * (5 * w * s->n_keep + w), sizeof(size_t));
    if (!s->rep || !s->ring || !s->n_done || !s->rope || !s->scr || !s->sel)
        goto fail;
    lh_ops_rope_table(s->rope, p->window, p->n_rot, &p->rope);
    *sp = s;
    return 0;
fail:
    lh_log_error("longheads: out of memory for the state of %zu layers x %zu heads, n_ctx %zu",
                 p->n_layer, p->n_head, p->n_ctx);
    lh_lh_free(s);
    return -ENOMEM;
}

void lh_lh_free(lh_lh *s)
{
    if (!s)
        return;
    free(s->rep);
    free(s->ring);
    free(s->n_done);
    free(s->rope);
    free(s->scr);
    free(s->sel);
    free(s);
}

/* The largest prefix of `want` (<= nd tokens processed) whose partial chunk's queries are among
 * the last w processed, which is all the ring keeps. */
static size_t keepable(size_t want, size_t nd, size_t w)
{
    if (want > nd)
        want = nd;
    size_t base = want - want % w;
    if (want % w && base + w < nd)
        return base;
    return want;
}

size_t lh_lh_truncate(lh_lh *s, size_t n_past)
{
    /* Layers normally agree; if a forward was cut short they do not, and the answer must suit
     * every layer, so iterate to the fixed point (at most one more round: a chunk boundary always
     * suits). */
    size_t keep = n_past;
    int changed;
    do {
        changed = 0;
        for (size_t l = 0; l < s->p.n_layer; l++) {
            size_t k = keepable(keep, s->n_done[l], s->p.chunk);
            if (k < keep) {
                keep = k;
                changed = 1;
            }
        }
    } while (changed);
    for (size_t l = 0; l < s->p.n_layer; l++)
        s->n_done[l] = keep;
    return keep;
}

double lh_lh_bytes_per_token(const lh_lh_params *p)
{
    if (!p->chunk)
        return 0;
    return (double)p->n_layer * (double)p->n_head * (double)p->head_dim * sizeof(float) /
           (double)p->chunk;
}

/* Rows pos .. pos+n-1 of KV head g as F32: the cache itself for F32, converted into buf for F16. */
static const float *kv_rows(const lh_lh_params *p, const void *kv, size_t g, size_t pos, size_t n,
                            float *buf)
{
    size_t off = (g * p->n_ctx + pos) * p->head_dim;
    if (p->kv_type == LH_TYPE_F32)
        return (const float *)kv + off;
    lh_dequant_row(LH_TYPE_F16, (const uint16_t *)kv + off, buf, n * p->head_dim);
    return buf;
}

/* dst = rot(src, pos) / sqrt(d): folding the softmax scale into the query saves a pass. */
static void rotate_scaled(const lh_lh *s, float *dst, const float *src, size_t pos, float scale)
{
    size_t d = s->p.head_dim;
    for (size_t i = 0; i < d; i++)
        dst[i] = src[i] * scale;
    lh_ops_rope_apply(dst, 1, d, s->p.n_rot, s->rope + pos * s->p.n_rot);
}

/* Representation of chunk c for head h (KV head g) into rep (head_dim floats).  qraw(j) is the
 * un-rotated query of position c*w + j: from the batch when it is in it, else from the ring. */
static void build_rep(const lh_lh *s, const scratch *x, size_t layer, size_t h, size_t g,
                      size_t c, const float *q, size_t pos0, const void *k, const void *v,
                      float *rep)
{
    size_t w = s->p.chunk, d = s->p.head_dim;
    float scale = 1.0f / sqrtf((float)d);
    const float *ring = s->ring + layer * w * s->ld_q;
    const float *kc = kv_rows(&s->p, k, g, c * w, w, x->kb);
    const float *vc = kv_rows(&s->p, v, g, c * w, w, x->vb);
    for (size_t j = 0; j < w; j++) {
        size_t pos = c * w + j;
        const float *src = pos >= pos0 ? q + (pos - pos0) * s->ld_q + h * d
                                       : ring + (pos % w) * s->ld_q + h * d;
        rotate_scaled(s, x->qr + j * d, src, j, scale);
    }
    float *att = x->sc; /* (w, w) */
    lh_gemm_nt(w, w, d, x->qr, d, kc, d, att, w, 0.0f);
    for (size_t i = 0; i < w; i++)
        lh_ops_softmax(att + i * w, w);
    /* mean_i sum_j att[i][j] v_j = sum_j (mean_i att[i][j]) v_j: one vector-matrix product. */
    float *abar = x->vec, *pj = x->vec + w, *sv = x->vec + 2 * w;
    for (size_t j = 0; j < w; j++)
        abar[j] = 0;
    for (size_t i = 0; i < w; i++)
        for (size_t j = 0; j < w; j++)
            abar[j] += att[i * w + j];
    for (size_t j = 0; j < w; j++)
        abar[j] /= (float)w;
    lh_gemm_nn(1, d, w, abar, w, vc, d, sv, d, 0.0f);
    lh_gemm_nt(1, w, d, sv, d, kc, d, pj, w, 0.0f);
    for (size_t j = 0; j < w; j++)
        pj[j] *= scale;
    lh_ops_softmax(pj, w);
    lh_gemm_nn(1, d, w, pj, w, kc, d, rep, d, 0.0f);
}

/* Selection for a query in chunk cc >= K given score(c) for the candidates c = 1 .. cc-2
 * (score[c - 1]): fills sel (K entries, ascending).  The K-3 best are kept in sel[1 ..] sorted by
 * descending score; candidates arrive in ascending chunk order, so "strictly greater" makes ties go
 * to the earlier chunk.  score doubles as the store of the running top scores: entry i is only
 * rewritten once candidate i+1 has been read, and it is scratch to every caller. */
static void select_from_scores(size_t n_keep, size_t cc, float *score, size_t *sel)
{
    size_t m = n_keep >= 3 ? n_keep - 3 : 0, n = 0;
    size_t *top = sel + 1;
    float *ts = score;
    for (size_t c = 1; m && c + 1 < cc; c++) {
        float sc = score[c - 1];
        if (n == m && !(sc > ts[n - 1]))
            continue;
        size_t i = n < m ? n++ : n - 1;
        while (i > 0 && sc > ts[i - 1]) {
            ts[i] = ts[i - 1];
            top[i] = top[i - 1];
            i--;
        }
        ts[i] = sc;
        top[i] = c;
    }
    /* ascending chunk order */
    for (size_t i = 1; i < n; i++) {
        size_t c = top[i], j = i;
        while (j > 0 && top[j - 1] > c) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = c;
    }
    sel[0] = 0;
    if (n_keep == 2) {
        sel[1] = cc;
        return;
    }
    sel[1 + n] = cc - 1;
    sel[2 + n] = cc;
}

/* One query against one chunk, straight from the cache (decode, and chunks only one query of a
 * block chose): a padded GEMM would waste half (QKᵀ) to three quarters (PV) of its multiply-adds
 * on a single row and F16 would need a conversion pass first.  tools/lhbench: decode ~2x faster. */
#if defined(LH_HAVE_AVX2) && defined(__F16C__)
static inline __m256 load8(int f16, const void *kv, size_t i)
{
    if (f16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)kv + i)));
    return _mm256_loadu_ps((const float *)kv + i);
}
#endif

static inline float elem(int f16, const void *kv, size_t i)
{
    return f16 ? lh_f16_to_f32(((const uint16_t *)kv)[i]) : ((const float *)kv)[i];
}

/* s[j] = q · row j, for the n rows of head_dim starting at element off of kv */
static void row_qk(const lh_lh_params *p, const float *q, const void *kv, size_t off, size_t n,
                   float *s)
{
    size_t d = p->head_dim, j = 0, d8 = 0;
    int f16 = p->kv_type == LH_TYPE_F16;
#if defined(LH_HAVE_AVX2) && defined(__F16C__)
    d8 = d & ~(size_t)7;
    for (; j + 4 <= n; j += 4) {
        size_t r = off + j * d;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (size_t i = 0; i < d8; i += 8) {
            __m256 vq = _mm256_loadu_ps(q + i);
            a0 = _mm256_fmadd_ps(vq, load8(f16, kv, r + i), a0);
            a1 = _mm256_fmadd_ps(vq, load8(f16, kv, r + d + i), a1);
            a2 = _mm256_fmadd_ps(vq, load8(f16, kv, r + 2 * d + i), a2);
            a3 = _mm256_fmadd_ps(vq, load8(f16, kv, r + 3 * d + i), a3);
        }
        _mm_storeu_ps(s + j, lh_hsum4x256(a0, a1, a2, a3));
        for (size_t i = d8; i < d; i++)
            for (size_t u = 0; u < 4; u++)
                s[j + u] += q[i] * elem(f16, kv, r + u * d + i);
    }
#endif
    for (; j < n; j++) {
        size_t r = off + j * d;
        float acc = 0;
#if defined(LH_HAVE_AVX2) && defined(__F16C__)
        __m256 a = _mm256_setzero_ps();
        for (size_t i = 0; i < d8; i += 8)
            a = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load8(f16, kv, r + i), a);
        acc = lh_hsum256(a);
#endif
        for (size_t i = d8; i < d; i++)
            acc += q[i] * elem(f16, kv, r + i);
        s[j] = acc;
    }
}

/* o += sum_j pr[j] · row j, for the n rows of head_dim starting at element off of kv */
static void row_pv(const lh_lh_params *p, const float *pr, const void *kv, size_t off, size_t n,
                   float *o)
{
    size_t d = p->head_dim, i = 0;
    int f16 = p->kv_type == LH_TYPE_F16;
#if defined(LH_HAVE_AVX2) && defined(__F16C__)
    for (; i + 32 <= d; i += 32) {
        __m256 o0 = _mm256_loadu_ps(o + i), o1 = _mm256_loadu_ps(o + i + 8);
        __m256 o2 = _mm256_loadu_ps(o + i + 16), o3 = _mm256_loadu_ps(o + i + 24);
        for (size_t j = 0; j < n; j++) {
            __m256 vp = _mm256_broadcast_ss(pr + j);
            size_t r = off + j * d + i;
            o0 = _mm256_fmadd_ps(vp, load8(f16, kv, r), o0);
            o1 = _mm256_fmadd_ps(vp, load8(f16, kv, r + 8), o1);
            o2 = _mm256_fmadd_ps(vp, load8(f16, kv, r + 16), o2);
            o3 = _mm256_fmadd_ps(vp, load8(f16, kv, r + 24), o3);
        }
        _mm256_storeu_ps(o + i, o0);
        _mm256_storeu_ps(o + i + 8, o1);
        _mm256_storeu_ps(o + i + 16, o2);
        _mm256_storeu_ps(o + i + 24, o3);
    }
    for (; i + 8 <= d; i += 8) {
        __m256 o0 = _mm256_loadu_ps(o + i);
        for (size_t j = 0; j < n; j++)
            o0 = _mm256_fmadd_ps(_mm256_broadcast_ss(pr + j), load8(f16, kv, off + j * d + i), o0);
        _mm256_storeu_ps(o + i, o0);
    }
#endif
    for (; i < d; i++) {
        float acc = o[i];
        for (size_t j = 0; j < n; j++)
            acc += pr[j] * elem(f16, kv, off + j * d + i);
        o[i] = acc;
    }
}

/* A block of nb consecutive queries of one chunk (rows of q with stride ldq), the first at offset
 * o0 in it; query i attends to the n_s chunks sel[i*n_s ..] (ascending, the last its own chunk,
 * causal).  Each chunk in the union of the selections is read (and converted) once for the block:
 * the queries that chose it, each rotated for the slot it has in its own layout, form one QKᵀ and
 * one PV product, so the work is ~n_s small GEMMs over gathered rows instead of one per query, and
 * queries that share chunks share the reads.  A chunk every query holds at the same slot (always the
 * case for chunk 0, the previous and the current chunk, and inside the window for all) is done in
 * place without gathering.  Writes nb rows of head_dim into out (stride ldo). */
static void attend_block(const lh_lh *s, const scratch *x, const float *q, size_t ldq, size_t nb,
                         size_t o0, const size_t *sel, size_t n_s, size_t g, const void *k,
                         const void *v, float *out, size_t ldo)
{
    size_t w = s->p.chunk, d = s->p.head_dim, ld = s->p.window, last = n_s - 1;
    float scale = 1.0f / sqrtf((float)d);
    size_t *cur = x->cur, *uc = x->uc, *un = x->un, *ur = x->ur, *us = x->us;
    size_t n_u = 0, n_e = 0;

    /* Union of the selections in ascending order, merging the sorted lists; for every chunk the
     * rows that chose it and the slot it has in each. */
    for (size_t i = 0; i < nb; i++)
        cur[i] = 0;
    for (;;) {
        size_t c = SIZE_MAX;
        for (size_t i = 0; i < nb; i++)
            if (cur[i] < n_s && sel[i * n_s + cur[i]] < c)
                c = sel[i * n_s + cur[i]];
        if (c == SIZE_MAX)
            break;
        uc[n_u] = c;
        un[n_u] = 0;
        for (size_t i = 0; i < nb; i++)
            if (cur[i] < n_s && sel[i * n_s + cur[i]] == c) {
                ur[n_e] = i;
                us[n_e++] = cur[i]++;
                un[n_u]++;
            }
        n_u++;
    }

    /* Scores.  Row i of x->sc is query i's layout: slot r at columns r*w .. r*w+w-1.  Only the
     * current chunk (the last slot of every row) is partial: keys up to the last query's own. */
    size_t cc = sel[last];
    for (size_t u = 0, e = 0; u < n_u; e += un[u], u++) {
        size_t c = uc[u], n_c = un[u], nk = c == cc ? o0 + nb : w;
        int direct = n_c == nb;
        for (size_t j = 1; direct && j < n_c; j++)
            direct = us[e + j] == us[e];
        /* query position P = last*w + o0 + i, slot r starts at r*w: rotate by the difference */
        for (size_t j = 0; j < n_c; j++) {
            size_t i = ur[e + j];
            rotate_scaled(s, x->qr + j * d, q + i * ldq, (last - us[e + j]) * w + o0 + i, scale);
        }
        if (n_c == 1) {
            row_qk(&s->p, x->qr, k, (g * s->p.n_ctx + c * w) * d, nk,
                   x->sc + ur[e] * ld + us[e] * w);
            continue;
        }
        const float *kc = kv_rows(&s->p, k, g, c * w, nk, x->kb);
        if (direct) {
            lh_gemm_nt(nb, nk, d, x->qr, d, kc, d, x->sc + us[e] * w, ld, 0.0f);
            continue;
        }
        lh_gemm_nt(n_c, nk, d, x->qr, d, kc, d, x->tmp, w, 0.0f);
        for (size_t j = 0; j < n_c; j++)
            memcpy(x->sc + ur[e + j] * ld + us[e + j] * w, x->tmp + j * w, nk * sizeof(float));
    }
    size_t n_cols = last * w + o0 + nb;
    for (size_t i = 0; i < nb; i++) {
        float *row = x->sc + i * ld;
        size_t n = last * w + o0 + i + 1;   /* keys up to and including its own */
        lh_ops_softmax(row, n);
        for (size_t j = n; j < n_cols; j++)
            row[j] = 0.0f;
    }

    /* out = sum over the union of P · V, one product per chunk */
    for (size_t i = 0; i < nb; i++)
        memset(out + i * ldo, 0, d * sizeof(float));
    for (size_t u = 0, e = 0; u < n_u; e += un[u], u++) {
        size_t c = uc[u], n_c = un[u], nk = c == cc ? o0 + nb : w;
        int direct = n_c == nb;
        for (size_t j = 1; direct && j < n_c; j++)
            direct = us[e + j] == us[e];
        if (n_c == 1) {
            row_pv(&s->p, x->sc + ur[e] * ld + us[e] * w, v, (g * s->p.n_ctx + c * w) * d, nk,
                   out + ur[e] * ldo);
            continue;
        }
        const float *vc = kv_rows(&s->p, v, g, c * w, nk, x->vb);
        if (direct) {
            lh_gemm_nn(nb, d, nk, x->sc + us[e] * w, ld, vc, d, out, ldo, 1.0f);
            continue;
        }
        for (size_t j = 0; j < n_c; j++)
            memcpy(x->tmp + j * w, x->sc + ur[e + j] * ld + us[e + j] * w, nk * sizeof(float));
        lh_gemm_nn(n_c, d, nk, x->tmp, w, vc, d, x->ot, d, 0.0f);
        for (size_t j = 0; j < n_c; j++)
            lh_ops_add(out + ur[e + j] * ldo, x->ot + j * d, d);
    }
}

/* Everything one head does for one batch: new chunk representations, then attention. */
static void layer_head(const lh_lh *s, size_t tid, size_t layer, size_t h, const float *q,
                       size_t n_q, size_t pos0, const void *k, const void *v, float *out)
{
    const lh_lh_params *p = &s->p;
    size_t w = p->chunk, d = p->head_dim, L = p->window, K = s->n_keep, ldq = s->ld_q;
    size_t g = h / (p->n_head / p->n_head_kv);
    scratch x = scratch_of(s, tid);
    float *rep = s->rep + (layer * p->n_head + h) * s->n_chunk * d;

    for (size_t c = pos0 / w; c < (pos0 + n_q) / w; c++)
        build_rep(s, &x, layer, h, g, c, q, pos0, k, v, rep + c * d);

    for (size_t i = 0; i < n_q;) {
        size_t t = pos0 + i, cc = t / w;
        size_t nb = (cc + 1) * w - t;       /* queries of this batch in chunk cc */
        if (nb > n_q - i)
            nb = n_q - i;
        const float *qb = q + i * ldq + h * d;
        float *ob = out + i * ldq + h * d;
        size_t n_s = K;
        if (t < L) {
            /* identity layout: chunks 0 .. cc at their own slots, for every query */
            n_s = cc + 1;
            for (size_t j = 0; j < nb; j++)
                for (size_t c = 0; c <= cc; c++)
                    x.sel[j * n_s + c] = c;
        } else {
            if (K > 3)
                lh_gemm_nt(nb, cc - 2, d, qb, ldq, rep + d, d, x.ss, s->n_chunk, 0.0f);
            for (size_t j = 0; j < nb; j++)
                select_from_scores(K, cc, x.ss + j * s->n_chunk, x.sel + j * K);
        }
        attend_block(s, &x, qb, ldq, nb, t % w, x.sel, n_s, g, k, v, ob, ldq);
        i += nb;
    }

    /* Keep the last w queries of this head for chunks that complete in a later batch. */
    float *ring = s->ring + layer * w * ldq;
    size_t p_from = n_q > w ? pos0 + n_q - w : pos0;
    for (size_t pos = p_from; pos < pos0 + n_q; pos++)
        memcpy(ring + (pos % w) * ldq + h * d, q + (pos - pos0) * ldq + h * d, d * sizeof(float));
}

int lh_lh_layer(lh_lh *s, size_t layer, const float *q, size_t n_q, size_t pos0,
                const void *k, const void *v, float *out)
{
    if (layer >= s->p.n_layer || pos0 != s->n_done[layer] || n_q > s->p.n_ctx - pos0) {
        lh_log_error("longheads: layer %zu batch of %zu at %zu does not follow the %zu tokens "
                     "processed (n_ctx %zu)", layer, n_q, pos0,
                     layer < s->p.n_layer ? s->n_done[layer] : 0, s->p.n_ctx);
        return -EINVAL;
    }
    if (n_q == 0)
        return 0;
    /* One thread per head: selections are per head, so a thread never waits on another and
     * writes only its head's columns of out, rep and ring.  lh_gemm_* run serially inside.
     * Tiny batches (a few thousand multiply-adds per head) stay serial: waking the team costs
     * more than the work, and far more when the cores are shared (the unit tests' shapes). */
    long n_head = (long)s->p.n_head;
    int n_thr = (int)s->n_thread;
    size_t n_key = pos0 + n_q < s->p.window ? pos0 + n_q : s->p.window;
    int big = (double)n_q * (double)s->p.n_head * (double)n_key * (double)s->p.head_dim >= 65536.0;
    (void)n_thr;
    (void)big;
    OMP(omp parallel for schedule(static) num_threads(n_thr) if(big))
    for (long h = 0; h < n_head; h++) {
        size_t tid = 0;
#ifdef _OPENMP
        tid = (size_t)omp_get_thread_num();
#endif
        layer_head(s, tid, layer, (size_t)h, q, n_q, pos0, k, v, out);
    }
    s->n_done[layer] = pos0 + n_q;
    return 0;
}

size_t lh_lh_select(const lh_lh *s, size_t layer, size_t head, const float *q_head, size_t t,
                    size_t *chunks, size_t cap)
{
    size_t w = s->p.chunk, d = s->p.head_dim, K = s->n_keep, cc = t / w;
    if (layer >= s->p.n_layer || head >= s->p.n_head || cap < K ||
        (cc >= 1 && (cc - 1) * w > s->n_done[layer]))
        return 0;
    if (t < s->p.window) {
        for (size_t c = 0; c <= cc; c++)
            chunks[c] = c;
        return cc + 1;
    }
    const float *rep = s->rep + (layer * s->p.n_head + head) * s->n_chunk * d;
    float *score = malloc((cc - 2 ? cc - 2 : 1) * sizeof(float));
    if (!score)
        return 0;
    lh_gemm_nt(1, cc - 2, d, q_head, d, rep + d, d, score, cc - 2, 0.0f);
    select_from_scores(K, cc, score, chunks);
    free(score);
    return K;
}

/* ---- the oracle ---------------------------------------------------------------------------- */

static double ref_kv(const lh_lh_params *p, const void *kv, size_t g, size_t pos, size_t i)
{
    size_t off = (g * p->n_ctx + pos) * p->head_dim + i;
    if (p->kv_type == LH_TYPE_F16)
        return lh_f16_to_f32(((const uint16_t *)kv)[off]);
    return ((const float *)kv)[off];
}

static void ref_softmax(double *x, size_t n)
{
    double mx = x[0], sum = 0;
    for (size_t i = 1; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    for (size_t i = 0; i < n; i++)
        sum += (x[i] = exp(x[i] - mx));
    for (size_t i = 0; i < n; i++)
        x[i] /= sum;
}

/* c for chunk c of head h, from scratch. */
static void ref_rep(const lh_lh_params *p, const float *q_all, size_t h, size_t c, const void *k,
                    const void *v, double *rep, float *qbuf, double *a, double *sv)
{
    size_t w = p->chunk, d = p->head_dim, g = h / (p->n_head / p->n_head_kv);
    double scale = 1.0 / sqrt((double)d);
    for (size_t i = 0; i < d; i++)
        sv[i] = 0;
    for (size_t qi = 0; qi < w; qi++) {
        memcpy(qbuf, q_all + (c * w + qi) * p->n_head * d + h * d, d * sizeof(float));
        lh_ops_rope_ref(qbuf, 1, d, p->n_rot, (double)qi, &p->rope);
        for (size_t j = 0; j < w; j++) {
            a[j] = 0;
            for (size_t i = 0; i < d; i++)
                a[j] += qbuf[i] * ref_kv(p, k, g, c * w + j, i);
            a[j] *= scale;
        }
        ref_softmax(a, w);
        for (size_t j = 0; j < w; j++)
            for (size_t i = 0; i < d; i++)
                sv[i] += a[j] * ref_kv(p, v, g, c * w + j, i) / (double)w;
    }
    for (size_t j = 0; j < w; j++) {
        a[j] = 0;
        for (size_t i = 0; i < d; i++)
            a[j] += sv[i] * ref_kv(p, k, g, c * w + j, i);
        a[j] *= scale;
    }
    ref_softmax(a, w);
    for (size_t i = 0; i < d; i++) {
        rep[i] = 0;
        for (size_t j = 0; j < w; j++)
            rep[i] += a[j] * ref_kv(p, k, g, c * w + j, i);
    }
}

void lh_lh_layer_ref(const lh_lh_params *p, const float *q_all, size_t n_tok, size_t pos0,
                     const void *k, const void *v, float *out)
{
    size_t w = p->chunk, d = p->head_dim, L = p->window, K = L / w, nh = p->n_head;
    size_t n_chunk = n_tok / w;
    double scale = 1.0 / sqrt((double)d);
    double *rep = malloc((nh * n_chunk + 1) * d * sizeof(double));
    double *sc = malloc((L + w + d) * sizeof(double));
    double *cs = malloc((n_chunk + 1) * sizeof(double));
    double *sv = malloc(d * sizeof(double));
    float *qbuf = malloc(d * sizeof(float));
    size_t *sel = malloc((K + 1) * sizeof(size_t));
    int *taken = calloc(n_chunk + 1, sizeof(int));
    if (!rep || !sc || !cs || !sv || !qbuf || !sel || !taken) {
        for (size_t i = 0; i < (n_tok - pos0) * nh * d; i++)
            out[i] = NAN;
        goto out;
    }
    for (size_t h = 0; h < nh; h++)
        for (size_t c = 0; c < n_chunk; c++)
            ref_rep(p, q_all, h, c, k, v, rep + (h * n_chunk + c) * d, qbuf, sc, sv);

    for (size_t t = pos0; t < n_tok; t++) {
        for (size_t h = 0; h < nh; h++) {
            size_t g = h / (nh / p->n_head_kv), cc = t / w, n_s = 0;
            const float *q = q_all + t * nh * d + h * d;
            if (t < L) {
                for (size_t c = 0; c <= cc; c++)
                    sel[n_s++] = c;
            } else {
                /* candidates 1 .. cc-2 by q·c (un-rotated q); K-3 best, earlier chunk on ties */
                for (size_t c = 1; c + 1 < cc; c++) {
                    cs[c] = 0;
                    for (size_t i = 0; i < d; i++)
                        cs[c] += (double)q[i] * rep[(h * n_chunk + c) * d + i];
                    taken[c] = 0;
                }
                taken[0] = 1;
                sel[n_s++] = 0;
                for (size_t r = 0; K >= 3 && r < K - 3; r++) {
                    size_t best = 0;
                    for (size_t c = 1; c + 1 < cc; c++)
                        if (!taken[c] && (best == 0 || cs[c] > cs[best]))
                            best = c;
                    taken[best] = 1;
                    sel[n_s++] = best;
                }
                if (K >= 3)
                    sel[n_s++] = cc - 1;
                sel[n_s++] = cc;
                for (size_t i = 1; i < n_s; i++)   /* by position */
                    for (size_t j = i; j > 0 && sel[j - 1] > sel[j]; j--) {
                        size_t tmp = sel[j];
                        sel[j] = sel[j - 1];
                        sel[j - 1] = tmp;
                    }
            }
            /* layout: slot r holds chunk sel[r] at positions r*w ..; the query sits at its own
             * key's position P; keys carry local rotations, so rotate q by P - r*w. */
            size_t P = (n_s - 1) * w + t % w, n_key = 0;
            for (size_t r = 0; r < n_s; r++) {
                memcpy(qbuf, q, d * sizeof(float));
                lh_ops_rope_ref(qbuf, 1, d, p->n_rot, (double)(P - r * w), &p->rope);
                size_t nk = r + 1 == n_s ? t % w + 1 : w;
                for (size_t j = 0; j < nk; j++) {
                    double dot = 0;
                    for (size_t i = 0; i < d; i++)
                        dot += qbuf[i] * ref_kv(p, k, g, sel[r] * w + j, i);
                    sc[n_key++] = dot * scale;
                }
            }
            ref_softmax(sc, n_key);
            float *o = out + (t - pos0) * nh * d + h * d;
            for (size_t i = 0; i < d; i++) {
                double acc = 0;
                size_t kk = 0;
                for (size_t r = 0; r < n_s; r++) {
                    size_t nk = r + 1 == n_s ? t % w + 1 : w;
                    for (size_t j = 0; j < nk; j++)
                        acc += sc[kk++] * ref_kv(p, v, g, sel[r] * w + j, i);
                }
                o[i] = (float)acc;
            }
        }
    }
out:
    free(rep);
    free(sc);
    free(cs);
    free(sv);
    free(qbuf);
    free(sel);
    free(taken);
}

/* ---- saving and restoring the state ---------------------------------------------------------- */

size_t lh_lh_keepable(const lh_lh *s, size_t n)
{
    size_t keep = n;
    int changed;
    do {
        changed = 0;
        for (size_t l = 0; l < s->p.n_layer; l++) {
            size_t k = keepable(keep, s->n_done[l], s->p.chunk);
            if (k < keep) {
                keep = k;
                changed = 1;
            }
        }
    } while (changed);
    return keep;
}

/* The state a save holds, as a table: each array of the state is n_rows rows, row_stride bytes
 * apart, and holds `unit` bytes per complete chunk (per_token: per token) at the start of each
 * row.  A new per-chunk array (e.g. per-chunk key bounds) is one more line here. */
typedef struct {
    char *base;
    size_t n_rows, row_stride, unit;
    int per_token;
} state_array;

#define MAX_STATE_ARRAYS 8

static size_t state_arrays(const lh_lh *s, state_array *a)
{
    size_t n = 0, d = s->p.head_dim, nc = s->n_chunk;
    /* rep: (n_layer, n_head, n_chunk, head_dim) */
    a[n++] = (state_array){(char *)s->rep, s->p.n_layer * s->p.n_head, nc * d * sizeof(float),
                           d * sizeof(float), 0};
    return n;
}

static size_t ring_size(const lh_lh *s) { return s->p.n_layer * s->p.chunk * s->ld_q * sizeof(float); }

size_t lh_lh_state_size(const lh_lh *s, size_t n)
{
    state_array a[MAX_STATE_ARRAYS];
    size_t na = state_arrays(s, a), total = ring_size(s);
    for (size_t i = 0; i < na; i++)
        total += a[i].n_rows * a[i].unit * (a[i].per_token ? n : n / s->p.chunk);
    return total;
}

static int state_io(const lh_lh *s, size_t n, lh_lh_io_fn fn, void *ud)
{
    state_array a[MAX_STATE_ARRAYS];
    size_t na = state_arrays(s, a);
    int rc;
    for (size_t i = 0; i < na; i++) {
        size_t len = a[i].unit * (a[i].per_token ? n : n / s->p.chunk);
        for (size_t r = 0; len && r < a[i].n_rows; r++)
            if ((rc = fn(ud, a[i].base + r * a[i].row_stride, len)))
                return rc;
    }
    return fn(ud, s->ring, ring_size(s));
}

int lh_lh_state_save(const lh_lh *s, size_t n, lh_lh_io_fn fn, void *ud)
{
    if (n > s->p.n_ctx || lh_lh_keepable(s, n) != n)
        return -EINVAL;
    return state_io(s, n, fn, ud);
}

int lh_lh_state_load(lh_lh *s, size_t n, lh_lh_io_fn fn, void *ud)
{
    if (n > s->p.n_ctx)
        return -EINVAL;
    int rc = state_io(s, n, fn, ud);
    for (size_t l = 0; l < s->p.n_layer; l++)
        s->n_done[l] = rc ? 0 : n;
    return rc;
}
