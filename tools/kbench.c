/* tools/kbench — kernel timings side by side, with ratios, in one run:
 *   matmul: oneDNN vs the hand-written GEMV vs the scalar reference, decode (M = 1) and prefill
 *           (M = 64, 512), F32 / F16 / Q8_0 / Q4_K weights, a few LLaMA-like shapes, and what
 *           lh_matmul_run itself takes (for quantised weights up to 128 rows: the integer
 *           prefill path, see kernels/matmul.c);
 *   attention: dense per-token cost (decode and a 64-token prefill slice) at several context
 *           lengths, F32 and F16 KV, against the scalar reference where that is affordable.
 *
 *   GEMV: decode (M = 1) for every weight type at TinyLlama-1.1B's shapes, ms and GB/s of weights,
 *           then one layer's GEMVs that share x (Q/K/V, gate/up) as separate calls and as one
 *           fused call (lh_matmul_run_gemvs).
 *   qgemm: prefill (M = 256, or KB_M=rows from the environment) of every quantised type at
 *           TinyLlama-1.1B's shapes, lh_matmul_run (the 32-row interleaved panels from 16 rows)
 *           against the four-row fused path, GMAC/s.
 *
 * Usage: longheads-kbench [max_ctx | gemv | qgemm | attn [max_ctx] | headmm]   (default 16384;
 * attention contexts 1k, 4k, then x4 up to max_ctx; `gemv`: the GEMV table only; `qgemm`: the
 * quantised prefill table only; `attn`: the attention table only; `headmm`: LongHeads' per-head
 * products, hand-written against oneDNN, only).  The default run takes about a minute on two
 * cores; `headmm` about 15 s.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "attn.h"
#include "log.h"
#include "matmul.h"
#include "quant.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (2.0 / 16777216.0) - 1.0);
}

/* Seconds per call of fn: the best of calls made until min_s have passed (at least 3, after one
 * warm-up call); min_s == 0: one cold call (the slow references).  The best, not the mean: on a
 * shared machine the mean measures the neighbours. */
typedef int (*bench_fn)(void *arg);
static double timeit(bench_fn fn, void *arg, double min_s)
{
    double t0 = now();
    if (fn(arg) != 0)
        return -1;
    double best = now() - t0;
    if (min_s == 0)
        return best;
    double start = now();
    for (int n = 0; n < 3 || now() - start < min_s; n++) {
        t0 = now();
        fn(arg);
        double t = now() - t0;
        best = t < best ? t : best;
    }
    return best;
}

typedef struct {
    lh_matmul *m;
    lh_type t;
    const void *w;
    const float *x;
    float *y;
    size_t rows, n_in, n_out;
} mm_arg;

static int run_gemv(void *p)
{
    mm_arg *a = p;
    for (size_t r = 0; r < a->rows; r++) {
        int rc = lh_matmul_run(a->m, a->w, a->x + r * a->n_in, 1, a->y + r * a->n_out);
        if (rc)
            return rc;
    }
    return 0;
}

static int run_run(void *p)
{
    mm_arg *a = p;
    return lh_matmul_run(a->m, a->w, a->x, a->rows, a->y);
}

static int run_dnnl(void *p)
{
    mm_arg *a = p;
    return lh_matmul_run_dnnl(a->m, a->w, a->x, a->rows, a->y);
}

static int run_ref(void *p)
{
    mm_arg *a = p;
    lh_matmul_ref(a->t, a->w, a->x, a->rows, a->n_in, a->n_out, a->y);
    return 0;
}

static int bench_matmul(void)
{
    static const size_t shapes[][2] = {{768, 768}, {2048, 768}, {768, 2048}};   /* n_out, n_in */
    static const lh_type types[] = {LH_TYPE_F32, LH_TYPE_F16, LH_TYPE_Q8_0, LH_TYPE_Q4_K};
    static const size_t rows[] = {1, 64, 512};
    size_t max_rows = 512;
    printf("matmul  y = x·Wᵀ   (times per call; GEMV for M > 1 = one GEMV per row)\n");
    printf("%-5s %-11s %4s %11s %11s %11s %10s %10s %11s\n", "type", "n_out×n_in", "M", "oneDNN",
           "GEMV", "scalar-ref", "GEMV/dnnl", "ref/best", "matmul_run");
    for (size_t si = 0; si < 3; si++) {
        size_t n_out = shapes[si][0], n_in = shapes[si][1];
        float *wf = malloc(n_out * n_in * sizeof *wf), *x = malloc(max_rows * n_in * sizeof *x);
        float *y = malloc(max_rows * n_out * sizeof *y);
        void *w = malloc(n_out * n_in * sizeof(float));
        if (!wf || !x || !y || !w)
            return -ENOMEM;
        for (size_t i = 0; i < n_out * n_in; i++)
            wf[i] = frand();
        for (size_t i = 0; i < max_rows * n_in; i++)
            x[i] = frand();
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            lh_type t = types[ti];
            size_t rs = lh_type_row_size(t, n_in);
            for (size_t o = 0; o < n_out; o++)
                lh_quant_row(t, wf + o * n_in, (char *)w + o * rs, n_in);
            lh_matmul *m;
            int rc = lh_matmul_new(&m, t, n_in, n_out, max_rows);
            if (rc)
                return rc;
            for (size_t ri = 0; ri < 3; ri++) {
                mm_arg a = {m, t, w, x, y, rows[ri], n_in, n_out};
                double td = timeit(run_dnnl, &a, 0.05);
                double tg = timeit(run_gemv, &a, rows[ri] > 64 ? 0 : 0.05);
                double tm = rows[ri] == 1 ? tg : timeit(run_run, &a, 0.05);
                /* the scalar reference only where it takes well under a second */
                double tr = rows[ri] == 1 || (rows[ri] == 64 && si == 0) ? timeit(run_ref, &a, 0.0) : -1;
                double best = td < tg ? td : tg;
                char shape[32], ref[32], rr[32];
                snprintf(shape, sizeof shape, "%zux%zu", n_out, n_in);
                if (tr > 0) {
                    snprintf(ref, sizeof ref, "%8.3f ms", tr * 1e3);
                    snprintf(rr, sizeof rr, "%9.1fx", tr / best);
                } else {
                    snprintf(ref, sizeof ref, "%11s", "-");
                    snprintf(rr, sizeof rr, "%10s", "-");
                }
                printf("%-5s %-11s %4zu %8.3f ms %8.3f ms %11s %9.2fx %10s %8.3f ms\n",
                       lh_type_name(t), shape, rows[ri], td * 1e3, tg * 1e3, ref, tg / td, rr,
                       tm * 1e3);
                fflush(stdout);
            }
            lh_matmul_free(m);
        }
        free(wf), free(x), free(y), free(w);
    }
    return 0;
}

#ifdef _OPENMP
/* Q8_0 rows against the F32 activation (the pre-quantised-activation kernel), split over threads
 * like the GEMV: the comparison that decided Q8_0 takes the 8-bit activation path. */
static int run_q8_f32x(void *p)
{
    mm_arg *a = p;
    size_t rs = lh_type_row_size(LH_TYPE_Q8_0, a->n_in), n_blk = (a->n_out + 15) / 16;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < n_blk; b++) {
        size_t o = b * 16, nr = a->n_out - o < 16 ? a->n_out - o : 16;
        lh_dot_rows(LH_TYPE_Q8_0, (const char *)a->w + o * rs, rs, a->x, a->n_in, a->y + o, nr);
    }
    return 0;
}
#endif

/* Decode GEMV (M = 1) for every weight type at TinyLlama-1.1B's shapes: time per call and the
 * weight bytes streamed per second (the figure to hold against the memory bandwidth). */
static int bench_gemv(void)
{
    static const size_t shapes[][2] = {{2048, 2048}, {5632, 2048}, {2048, 5632}};   /* n_out, n_in */
    static const lh_type types[] = {LH_TYPE_F32, LH_TYPE_F16, LH_TYPE_BF16, LH_TYPE_Q8_0,
                                    LH_TYPE_Q4_0, LH_TYPE_Q4_1, LH_TYPE_Q5_0, LH_TYPE_Q5_1,
                                    LH_TYPE_IQ4_NL, LH_TYPE_Q2_K, LH_TYPE_Q3_K, LH_TYPE_Q4_K,
                                    LH_TYPE_Q5_K, LH_TYPE_Q6_K};
    size_t nt = sizeof types / sizeof types[0];
    printf("GEMV (decode, M = 1)  ms per call and GB/s of weight bytes\n%-8s", "type");
    for (size_t si = 0; si < 3; si++) {
        char shape[32];
        snprintf(shape, sizeof shape, "%zux%zu", shapes[si][0], shapes[si][1]);
        printf(" %20s", shape);
    }
    printf("\n");
    size_t max = 5632 * 2048;
    float *wf = malloc(max * sizeof *wf), *x = malloc(5632 * sizeof *x), *y = malloc(5632 * sizeof *y);
    void *w = malloc(max * sizeof(float));
    if (!wf || !x || !y || !w)
        return -ENOMEM;
    for (size_t i = 0; i < max; i++)
        wf[i] = frand() * 0.02f;
    for (size_t i = 0; i < 5632; i++)
        x[i] = frand();
    for (size_t ti = 0; ti <= nt; ti++) {
        int f32x = ti == nt;   /* the extra row: Q8_0 with F32 activations */
#ifndef _OPENMP
        if (f32x)
            break;
#endif
        lh_type t = f32x ? LH_TYPE_Q8_0 : types[ti];
        printf("%-8s", f32x ? "Q8_0/f32" : lh_type_name(t));
        for (size_t si = 0; si < 3; si++) {
            size_t n_out = shapes[si][0], n_in = shapes[si][1], rs = lh_type_row_size(t, n_in);
            for (size_t o = 0; o < n_out; o++)
                lh_quant_row(t, wf + o * n_in, (char *)w + o * rs, n_in);
            lh_matmul *m;
            int rc = lh_matmul_new(&m, t, n_in, n_out, 1);
            if (rc)
                return rc;
            mm_arg a = {m, t, w, x, y, 1, n_in, n_out};
#ifdef _OPENMP
            double tg = timeit(f32x ? run_q8_f32x : run_gemv, &a, 0.2);
#else
            double tg = timeit(run_gemv, &a, 0.2);
#endif
            printf(" %8.3f ms %6.1f GB/s", tg * 1e3, (double)(rs * n_out) / tg * 1e-9);
            fflush(stdout);
            lh_matmul_free(m);
        }
        printf("\n");
    }
    printf("\n");
    free(wf), free(x), free(y), free(w);
    return 0;
}

/* The decode GEMVs of one TinyLlama-1.1B layer that share x: Q/K/V (2048, 256, 256 rows) and
 * gate/up (5632, 5632 rows), n_in 2048, as separate lh_matmul_run calls (one parallel region
 * each) and as one lh_matmul_run_gemvs call (one region). */
typedef struct {
    lh_matmul *ms[3];
    const void *ws[3];
    float *ys[3];
    const float *x;
    size_t n;
} gemvs_arg;

static int run_gemvs_sep(void *p)
{
    gemvs_arg *a = p;
    for (size_t j = 0; j < a->n; j++)
        if (lh_matmul_run(a->ms[j], a->ws[j], a->x, 1, a->ys[j]))
            return -1;
    return 0;
}

static int run_gemvs_fused(void *p)
{
    gemvs_arg *a = p;
    return lh_matmul_run_gemvs(a->ms, a->ws, a->n, a->x, a->ys);
}

static int bench_gemvs(void)
{
    static const size_t groups[2][3] = {{2048, 256, 256}, {5632, 5632, 0}};
    static const char *const names[2] = {"Q/K/V", "gate/up"};
    static const lh_type types[] = {LH_TYPE_F32, LH_TYPE_F16, LH_TYPE_BF16, LH_TYPE_Q8_0};
    const size_t n_in = 2048, max = 2 * 5632 * n_in;
    char *w = malloc(max * sizeof(float));
    float *x = malloc(n_in * sizeof *x), *y = malloc(2 * 5632 * sizeof *y);
    float *row = malloc(n_in * sizeof *row);
    if (!w || !x || !y || !row)
        return -ENOMEM;
    for (size_t i = 0; i < n_in; i++)
        x[i] = frand();
    printf("GEMVs sharing x (one decode layer, n_in 2048): separate calls vs one fused call\n");
    printf("%-8s %-8s %12s %12s %8s\n", "type", "group", "separate", "fused", "ratio");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        lh_type t = types[ti];
        size_t rs = lh_type_row_size(t, n_in);
        for (size_t o = 0; o < max / n_in; o++) {
            for (size_t i = 0; i < n_in; i++)
                row[i] = frand() * 0.02f;
            lh_quant_row(t, row, w + o * rs, n_in);
        }
        for (size_t g = 0; g < 2; g++) {
            gemvs_arg a = {.x = x};
            size_t off = 0;
            int rc = 0;
            for (size_t j = 0; j < 3 && groups[g][j] && rc == 0; j++, a.n++) {
                rc = lh_matmul_new(&a.ms[j], t, n_in, groups[g][j], 1);
                a.ws[j] = w + off * rs;
                a.ys[j] = y + off;
                off += groups[g][j];
            }
            double ts = rc ? -1 : timeit(run_gemvs_sep, &a, 0.3);
            double tf = rc ? -1 : timeit(run_gemvs_fused, &a, 0.3);
            for (size_t j = 0; j < 3; j++)
                lh_matmul_free(a.ms[j]);
            if (rc)
                return rc;
            printf("%-8s %-8s %9.3f ms %9.3f ms %7.2fx\n", lh_type_name(t), names[g], ts * 1e3,
                   tf * 1e3, ts / tf);
            fflush(stdout);
        }
    }
    printf("\n");
    free(w), free(x), free(y), free(row);
    return 0;
}

typedef struct {
    lh_attn_shape s;
    const float *q;
    size_t n_q, pos0;
    const void *k, *v;
    float *out;
    void *scratch;
    size_t n_threads;
} at_arg;

static int run_attn(void *p)
{
    at_arg *a = p;
    lh_attn_dense(&a->s, a->q, a->n_q, a->pos0, a->k, a->v, a->out, a->scratch, a->n_threads);
    return 0;
}

static int run_attn_ref(void *p)
{
    at_arg *a = p;
    lh_attn_dense_ref(&a->s, a->q, a->n_q, a->pos0, a->k, a->v, a->out);
    return 0;
}

static int bench_attn(size_t max_ctx, size_t n_threads)
{
    /* a 768-wide model (12 heads of 64: stories110M), TinyLlama-1.1B's GQA (32 query heads over 4
     * KV heads of 64) and a GQA one with heads of 128 (32 over 8) */
    static const size_t heads[][3] = {{12, 12, 64}, {32, 4, 64}, {32, 8, 128}};
    static const lh_type kvts[] = {LH_TYPE_F32, LH_TYPE_F16};
    size_t n_batch = 64;
    printf("\ndense attention, per token (decode: 1 query at the end of the context; prefill: a\n"
           "slice of %zu queries ending there), %zu threads\n", n_batch, n_threads);
    printf("%-5s %-10s %7s %12s %9s %12s %12s %10s\n", "kv", "heads", "ctx", "decode", "KV GB/s",
           "prefill/tok", "ref decode", "ref/dense");
    for (size_t hi = 0; hi < sizeof heads / sizeof *heads; hi++)
        for (size_t ki = 0; ki < 2; ki++) {
            lh_attn_shape s = {heads[hi][0], heads[hi][1], heads[hi][2], max_ctx, kvts[ki]};
            size_t esz = kvts[ki] == LH_TYPE_F16 ? 2 : 4;
            size_t kv_w = s.n_head_kv * s.head_dim, q_w = s.n_head * s.head_dim;
            void *k = malloc(max_ctx * kv_w * esz), *v = malloc(max_ctx * kv_w * esz);
            float *row = malloc(kv_w * sizeof *row), *q = malloc(n_batch * q_w * sizeof *q);
            float *out = malloc(n_batch * q_w * sizeof *out);
            size_t ssz = lh_attn_scratch_size(&s, n_batch);
            void *scratch = malloc(ssz * n_threads);
            if (!k || !v || !row || !q || !out || !scratch)
                return -ENOMEM;
            for (size_t p = 0; p < max_ctx; p++) {
                for (size_t i = 0; i < kv_w; i++)
                    row[i] = frand();
                lh_attn_store(&s, k, p, row);
                for (size_t i = 0; i < kv_w; i++)
                    row[i] = frand();
                lh_attn_store(&s, v, p, row);
            }
            for (size_t i = 0; i < n_batch * q_w; i++)
                q[i] = frand();
            for (size_t ctx = 1024; ctx <= max_ctx; ctx *= 4) {
                at_arg dec = {s, q, 1, ctx - 1, k, v, out, scratch, n_threads};
                at_arg pre = {s, q, n_batch, ctx - n_batch, k, v, out, scratch, n_threads};
                double td = timeit(run_attn, &dec, 0.05);
                double tp = timeit(run_attn, &pre, 0.05) / (double)n_batch;
                double tr = ctx <= 1024 ? timeit(run_attn_ref, &dec, 0.0) : -1;
                char hs[16], ref[32], rr[32];
                snprintf(hs, sizeof hs, "%zu/%zu×%zu", s.n_head, s.n_head_kv, s.head_dim);
                if (tr > 0) {
                    snprintf(ref, sizeof ref, "%9.3f ms", tr * 1e3);
                    snprintf(rr, sizeof rr, "%9.1fx", tr / td);
                } else {
                    snprintf(ref, sizeof ref, "%12s", "-");
                    snprintf(rr, sizeof rr, "%10s", "-");
                }
                /* decode reads every K and V row of the context once */
                double kv_bytes = 2.0 * (double)ctx * (double)kv_w * (double)esz;
                printf("%-5s %-10s %7zu %9.3f ms %9.1f %9.3f ms %12s %10s\n",
                       lh_type_name(s.kv_type), hs, ctx, td * 1e3, kv_bytes / td * 1e-9, tp * 1e3,
                       ref, rr);
                fflush(stdout);
            }
            free(k), free(v), free(row), free(q), free(out), free(scratch);
        }
    return 0;
}

/* ---- LongHeads' per-head products: hand-written kernels against oneDNN ---------------------- */

enum { HM_HAND, HM_DNNL, HM_HEADMM, HM_SGEMM, HM_N };
static const char *const hm_names[HM_N] = {"lh_gemm", "dnnl rt", "dnnl fixed", "sgemm"};

typedef struct {
    int impl, whole;
    size_t n_head, group, d, L, M, w;
    const float *q;        /* (n_head, M, d) */
    const float *k, *v;    /* (n_kv, L, d): each KV head's gathered chunks */
    float *s, *o;          /* per thread: (M, L) scores, (M, d) outputs */
    lh_gemm_dnnl **g;      /* [thread] */
    lh_headmm **hnt, **hnn; /* [thread] the two shape classes */
    int rc;
} hm_arg;

/* C (m, n) (+)= A · op(B) through the chosen implementation, on thread t */
static int hm_gemm(const hm_arg *a, size_t t, int nt, size_t m, size_t n, size_t k, const float *x,
                   size_t lda, const float *b, size_t ldb, float *c, size_t ldc, float beta)
{
    switch (a->impl) {
    case HM_DNNL:
        return lh_gemm_dnnl_run(a->g[t], nt, m, n, k, x, lda, b, ldb, c, ldc, beta);
    case HM_HEADMM:
        return lh_headmm_run(nt ? a->hnt[t] : a->hnn[t], m, x, b, c);
    case HM_SGEMM:
        return lh_gemm_sgemm(nt, m, n, k, x, lda, b, ldb, c, ldc, beta);
    default:
        if (nt)
            lh_gemm_nt(m, n, k, x, lda, b, ldb, c, ldc, beta);
        else
            lh_gemm_nn(m, n, k, x, lda, b, ldb, c, ldc, beta);
        return 0;
    }
}

/* Heads 0 .. n_head-1 of a layer: scores of its M queries against its L gathered keys, then P·V
 * (the softmax between them is the same for every implementation and left out).  Per chunk of w
 * keys (what LongHeads runs: each chunk's queries are rotated for that chunk's slot) or, `whole`,
 * as one product over the L keys.  OpenMP over heads, the products single-threaded inside. */
static int run_hm(void *p)
{
    hm_arg *a = p;
    int rc = 0;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (a->n_head > 1)
#endif
    for (long hl = 0; hl < (long)a->n_head; hl++) {
        size_t h = (size_t)hl, t = 0;
#ifdef _OPENMP
        t = (size_t)omp_get_thread_num();
#endif
        size_t d = a->d, L = a->L, M = a->M, step = a->whole ? L : a->w;
        const float *q = a->q + h * M * d;
        const float *k = a->k + h / a->group * L * d, *v = a->v + h / a->group * L * d;
        float *s = a->s + t * M * L, *o = a->o + t * M * d;
        int r = 0;
        for (size_t j = 0; j < L && !r; j += step)
            r = hm_gemm(a, t, 1, M, step, d, q, d, k + j * d, d, s + j, L, 0.0f);
        for (size_t i = 0; i < M; i++)
            memset(o + i * d, 0, d * sizeof *o);
        for (size_t j = 0; j < L && !r; j += step)
            r = hm_gemm(a, t, 0, M, d, step, s + j, L, v + j * d, d, o, d, 1.0f);
        if (r)
            rc = r;   /* benign race: any failure is reported */
    }
    return rc;
}

static int bench_headmm(size_t n_threads)
{
    /* stories260K (8 heads over 4 KV heads of 8), stories110M (12 of 64), TinyLlama-1.1B (32 over
     * 4 KV heads of 64); chunks of w = 64 keys */
    static const struct { const char *name; size_t nh, nkv, d; } shapes[] = {
        {"260K", 8, 4, 8}, {"110M", 12, 12, 64}, {"1.1B", 32, 4, 64}};
    static const size_t Ls[] = {512, 4096}, Ms[] = {1, 4, 16, 64};
    const size_t w = 64;
    int rc = 0;
    printf("\nLongHeads per-head products, one head on one thread (as each thread runs its\n"
           "heads inside the OpenMP region over heads; oneDNN single-threaded there): scores\n"
           "Q (M, d) Kᵀ over L gathered keys, then P·V, per chunk of %zu keys (as LongHeads runs\n"
           "them) or as one product over all L (whole); µs per head, best of runs.  dnnl rt: a\n"
           "runtime-shape oneDNN matmul (memory objects made per call); dnnl fixed: one primitive\n"
           "per shape class with runtime M (nothing made per call); sgemm: dnnl_sgemm; lh_gemm:\n"
           "lh_gemm_nt/nn as they dispatch (hand-written kernels below 16 rows, sgemm from 16)\n",
           w);
    printf("%-5s %5s %3s %-6s", "model", "L", "M", "gran");
    for (int i = 0; i < HM_N; i++)
        printf(" %11s", hm_names[i]);
    printf(" %9s\n", "dnnl/lh");
    lh_gemm_dnnl **g = calloc(n_threads, sizeof *g);
    lh_headmm **hnt = calloc(n_threads, sizeof *hnt), **hnn = calloc(n_threads, sizeof *hnn);
    if (!g || !hnt || !hnn)
        return -ENOMEM;
    for (size_t t = 0; t < n_threads && !rc; t++)
        rc = lh_gemm_dnnl_new(&g[t]);
    for (size_t si = 0; si < 3 && !rc; si++)
        for (size_t li = 0; li < 2 && !rc; li++)
            for (size_t mi = 0; mi < 4 && !rc; mi++)
                for (int whole = 0; whole < 2 && !rc; whole++) {
                    size_t nh = shapes[si].nh, nkv = shapes[si].nkv, d = shapes[si].d;
                    size_t L = Ls[li], M = Ms[mi], step = whole ? L : w;
                    float *q = malloc(nh * M * d * sizeof *q), *k = malloc(nkv * L * d * sizeof *k);
                    float *v = malloc(nkv * L * d * sizeof *v);
                    float *s = malloc(n_threads * M * L * sizeof *s);
                    float *o = malloc(n_threads * M * d * sizeof *o);
                    if (!q || !k || !v || !s || !o)
                        return -ENOMEM;
                    for (size_t i = 0; i < nh * M * d; i++)
                        q[i] = frand();
                    for (size_t i = 0; i < nkv * L * d; i++)
                        k[i] = frand(), v[i] = frand();
                    for (size_t t = 0; t < n_threads && !rc; t++) {
                        rc = lh_headmm_new(&hnt[t], 1, M, step, d, d, d, L, 0.0f);
                        if (!rc)
                            rc = lh_headmm_new(&hnn[t], 0, M, d, step, L, d, d, 1.0f);
                    }
                    hm_arg a = {0, whole, 1, nh / nkv, d, L, M, w, q, k, v, s, o, g, hnt, hnn, 0};
                    double ts[HM_N], best = 0;
                    printf("%-5s %5zu %3zu %-6s", shapes[si].name, L, M, whole ? "whole" : "chunk");
                    for (int i = 0; i < HM_N && !rc; i++) {
                        a.impl = i;
                        ts[i] = timeit(run_hm, &a, 0.1);
                        if (ts[i] < 0)
                            rc = -EIO;
                        if (i > 0 && (best == 0 || ts[i] < best))
                            best = ts[i];
                        printf(" %11.1f", ts[i] * 1e6);
                    }
                    printf(" %8.2fx\n", ts[0] > 0 ? best / ts[0] : 0);
                    fflush(stdout);
                    for (size_t t = 0; t < n_threads; t++) {
                        lh_headmm_free(hnt[t]), lh_headmm_free(hnn[t]);
                        hnt[t] = hnn[t] = NULL;
                    }
                    free(q), free(k), free(v), free(s), free(o);
                }
    for (size_t t = 0; t < n_threads; t++)
        lh_gemm_dnnl_free(g[t]);
    free(g), free(hnt), free(hnn);
    return rc;
}

/* The four-row fused path (lh_gemm_q8, what prefill took before the panels), as kernels/matmul.c
 * ran it: activation rows quantised once, then 16 W rows x 64 activation rows at a time. */
typedef struct {
    lh_type t;
    const void *w;
    const float *x;
    float *y;
    void *xq;
    size_t rows, n_in, n_out;
} q8_arg;

static int run_q8_rows4(void *p)
{
    q8_arg *a = p;
    size_t rs = lh_type_row_size(a->t, a->n_in), qs = lh_q8_size(a->t, a->n_in);
    char *xq = a->xq;
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < a->rows; r++)
        lh_q8_quant(a->t, a->x + r * a->n_in, xq + r * qs, a->n_in);
    size_t n_blk = (a->n_out + 15) / 16;
    for (size_t r0 = 0; r0 < a->rows; r0 += 64) {
        size_t r1 = a->rows - r0 < 64 ? a->rows : r0 + 64;
#pragma omp parallel for schedule(static)
        for (size_t b = 0; b < n_blk; b++) {
            size_t o = b * 16, nr = a->n_out - o < 16 ? a->n_out - o : 16;
            lh_gemm_q8(a->t, (const char *)a->w + o * rs, rs, nr, xq + r0 * qs, qs, r1 - r0,
                       a->n_in, a->y + r0 * a->n_out + o, a->n_out);
        }
    }
    return 0;
}

/* Prefill of quantised weights (M = 256, the daemon's slice) at TinyLlama-1.1B's shapes:
 * lh_matmul_run (the 32-row panels where the type has them) against the four-row fused path,
 * ms per call and integer multiply-adds per second. */
static int bench_qgemm(void)
{
    static const size_t shapes[][2] = {{2048, 2048}, {5632, 2048}, {2048, 5632}};   /* n_out, n_in */
    static const lh_type types[] = {LH_TYPE_Q4_0, LH_TYPE_Q5_0, LH_TYPE_Q8_0, LH_TYPE_IQ4_NL,
                                    LH_TYPE_Q2_K, LH_TYPE_Q3_K, LH_TYPE_Q4_K, LH_TYPE_Q5_K,
                                    LH_TYPE_Q6_K, LH_TYPE_Q4_1, LH_TYPE_Q5_1};
    const size_t M = getenv("KB_M") ? (size_t)atoi(getenv("KB_M")) : 256;
    printf("quantised prefill, M = %zu  (ms per call, GMAC/s; rows4 = lh_gemm_q8, run = "
           "lh_matmul_run)\n%-7s", M, "type");
    for (size_t si = 0; si < 3; si++) {
        char shape[32];
        snprintf(shape, sizeof shape, "%zux%zu", shapes[si][0], shapes[si][1]);
        printf(" %34s", shape);
    }
    printf("\n");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        lh_type t = types[ti];
        printf("%-7s", lh_type_name(t));
        for (size_t si = 0; si < 3; si++) {
            size_t n_out = shapes[si][0], n_in = shapes[si][1], rs = lh_type_row_size(t, n_in);
            float *wf = malloc(n_in * sizeof *wf), *x = malloc(M * n_in * sizeof *x);
            float *y = malloc(M * n_out * sizeof *y);
            char *w = malloc(rs * n_out);
            void *xq = malloc(lh_q8_size(t, n_in) * M);
            lh_matmul *m = NULL;
            int rc = !wf || !x || !y || !w || !xq ? -ENOMEM : lh_matmul_new(&m, t, n_in, n_out, M);
            if (rc) {
                free(wf), free(x), free(y), free(w), free(xq);
                return rc;
            }
            for (size_t o = 0; o < n_out; o++) {
                for (size_t i = 0; i < n_in; i++)
                    wf[i] = frand();
                lh_quant_row(t, wf, w + o * rs, n_in);
            }
            for (size_t i = 0; i < M * n_in; i++)
                x[i] = frand();
            mm_arg a = {m, t, w, x, y, M, n_in, n_out};
            q8_arg q = {t, w, x, y, xq, M, n_in, n_out};
            double tr = timeit(run_run, &a, 0.3), t4 = timeit(run_q8_rows4, &q, 0.3);
            double mac = (double)M * (double)n_in * (double)n_out * 1e-9;
            printf("  rows4 %6.1f (%4.0f) run %6.1f (%4.0f)", t4 * 1e3, mac / t4, tr * 1e3, mac / tr);
            fflush(stdout);
            lh_matmul_free(m);
            free(wf), free(x), free(y), free(w), free(xq);
        }
        printf("\n");
    }
    printf("\n");
    return 0;
}

int main(int argc, char **argv)
{
    size_t max_ctx = 16384;
    int gemv_only = argc > 1 && !strcmp(argv[1], "gemv");
    int attn_only = argc > 1 && !strcmp(argv[1], "attn");   /* attn [max_ctx] */
    int qgemm_only = argc > 1 && !strcmp(argv[1], "qgemm");
    int headmm_only = argc > 1 && !strcmp(argv[1], "headmm");
    if (headmm_only) {
#ifdef _OPENMP
        omp_set_num_threads(1);   /* oneDNN as it runs inside our region over heads */
#endif
        int hrc = bench_headmm(1);
        if (hrc)
            fprintf(stderr, "kbench: failed: %d\n", hrc);
        return hrc ? 1 : 0;
    }
    const char *ctx_arg = attn_only ? (argc > 2 ? argv[2] : NULL)
                                    : (gemv_only || qgemm_only ? NULL : argv[1]);
    if (argc > 1 && ctx_arg) {
        char *end;
        unsigned long long v = strtoull(ctx_arg, &end, 10);
        if (*end || v < 1024 || v > (1ull << 20)) {
            fprintf(stderr,
                    "usage: %s [max_ctx: 1024 .. 1048576 | gemv | qgemm | attn [max_ctx] | "
                    "headmm]\n", argv[0]);
            return 2;
        }
        max_ctx = (size_t)v;
    }
    size_t n_threads = 1;
#ifdef _OPENMP
    n_threads = (size_t)omp_get_max_threads();
#endif
    printf("longheads-kbench: %zu threads\n\n", n_threads);
    int rc = attn_only || qgemm_only ? 0 : bench_gemv();
    if (rc == 0 && !attn_only && !qgemm_only)
        rc = bench_gemvs();
    if (rc == 0 && !gemv_only && !attn_only)
        rc = bench_qgemm();
    if (rc == 0 && !gemv_only && !qgemm_only && !attn_only)
        rc = bench_matmul();
    if (rc == 0 && !gemv_only && !qgemm_only)
        rc = bench_attn(max_ctx, n_threads);
    if (rc) {
        fprintf(stderr, "kbench: failed: %d\n", rc);
        return 1;
    }
    return 0;
}
