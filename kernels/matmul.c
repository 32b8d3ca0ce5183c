/* kernels/matmul — see matmul.h.
 *
 * Prefill (n_rows > 1) of F32 and BF16 W runs one oneDNN matmul primitive created at _new with a
 * RUNTIME M dimension, so one primitive serves every n_rows in 1..max_rows.  oneDNN reads M from
 * the memory descriptors it is given at execution, so _new also makes one (buffer-less) src and dst
 * memory object per M; _run only points them at the caller's arrays.  A slice of exactly
 * max_rows (every full slice of a prefill) takes a second primitive made with M fixed, which
 * oneDNN runs far faster than its runtime-M kernel (see make_prim's caller).  The weights are Wᵀ as
 * oneDNN sees them: dims {n_in, n_out}, format `ba` (W row-major is exactly Wᵀ column-major), so F32
 * weights are used in place, and so are BF16 weights where the CPU has AVX512_BF16: oneDNN's bf16
 * matmul (vdpbf16ps, F32 accumulation) on x rounded to BF16 (round_bf16: the file's weights
 * unchanged, each activation within 2^-9 of itself, as llama.cpp does for BF16).  F16 W (where
 * there is AVX-512) takes gemm_f16, our own blocked GEMM that converts each W row once per call.
 * Otherwise (lh_matmul_run_dnnl for the other types, BF16 without AVX512_BF16, F16 without AVX-512)
 * W is converted, a panel of rows at a time, into F32 scratch made at _new, and each panel is one
 * execution writing a column slice of y (a strided dst).  Scratchpad mode is `user`: its buffer too
 * is allocated at _new.
 *
 * Decode (n_rows == 1) is a GEMV: every output is a dot product of one W row with x, runs of rows
 * claimed by the threads from a shared counter (gemv_multi, which also serves several matrices
 * sharing x in one parallel region: lh_matmul_run_gemvs); for F32/F16/BF16 W one sequential row
 * stream per run, AVX-512.  A oneDNN call for M = 1 costs more in fixed overhead and packing than
 * the whole GEMV for our shapes (tools/kbench measures both).  For the quantised types (Q4_0 ..
 * Q6_K, IQ4_NL, Q8_0) x is first quantised to 8 bits per value in blocks (lh_q8_quant, into
 * scratch made at _new) and the rows are fused integer dot products (lh_dot_rows_q8), as in
 * llama.cpp; prefill takes the same integer kernels, four activation rows per unpacked weight
 * block (gemm_q8, lh_gemm_q8), at every slice length (lh_matmul_run_dnnl, the dequantised-panel
 * path through oneDNN, stays for tests and benchmarks).  No W is ever converted whole: oneDNN sees
 * one panel at a time.
 */
#include "matmul.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <dnnl.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "log.h"
#include "simd.h"

/* The float-type GEMV and the F16 GEMM below are written for AVX-512 (F, BW, VL) with F16C. */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__F16C__)
#define LH_HAVE_AVX512 1
#endif
/* The decode GEMV takes four rows at a time only where they lie this many bytes apart (see the
 * float kernels' comment) */
#define GEMV_GAP 65536

/* Rows [o0, o1) of size rs go as four quarters side by side, rows o, o + q, o + 2q, o + 3q for
 * o in [o0, o0 + q), then the 4q .. rest one at a time: q, or 0 where the quarters would lie
 * closer than GEMV_GAP (all one at a time). */
static size_t gemv_quarter(size_t o0, size_t o1, size_t rs)
{
    size_t q = (o1 - o0) / 4;
    return q * rs >= GEMV_GAP ? q : 0;
}

/* F16 GEMM: k chunk and W rows per register tile (see gemm_f16) */
#define GF_KC 256
#define GF_MR 12

/* A converted panel of W is this many bytes of F32 (a size oneDNN handles at full speed while the
 * conversion of the next panel stays cheap). */
#define PANEL_BYTES (2u << 20)

struct lh_matmul {
    lh_type wtype;
    size_t n_in, n_out, max_rows;
    size_t row_size;              /* bytes of one W row in its file type */
    size_t panel;                 /* W rows per panel (== n_out for F32) */
    size_t n_panel_full, tail;    /* n_out = n_panel_full * panel + tail */

    dnnl_engine_t eng;
    dnnl_stream_t stream;
    dnnl_primitive_t prim, prim_tail;    /* full panel (or all of W), tail panel */
    dnnl_primitive_t prim_max;           /* F32 / BF16 in place: M fixed at max_rows (faster) */
    dnnl_memory_t scratch_max_mem;       /* (its weights memory: w_mem, the same descriptor) */
    void *scratchpad_max;
    dnnl_memory_t w_mem, w_tail_mem;     /* weights: file F32 in place or panel scratch */
    dnnl_memory_t *src_mem;              /* [max_rows + 1], index M */
    dnnl_memory_t *dst_mem, *dst_tail_mem; /* [max_rows + 1], index M */
    dnnl_memory_t scratch_mem, scratch_tail_mem;
    void *scratchpad, *scratchpad_tail;
    float *wpanel;                       /* (panel, n_in) F32 when wtype != F32 */
    void *xq;                            /* (max_rows, q8_size) the quantised activation rows
                                            for the fused integer paths of quantised types;
                                            NULL otherwise */
    size_t q8_size;                      /* bytes of one quantised activation row */
    /* prefill over 32-row panels (lh_q8p_*), when the build has a kernel for wtype: */
    void *panels;                        /* (n_thr, panel_size) one panel per thread */
    size_t panel_size, n_thr;            /* n_thr: threads the per-thread scratch (panels,
                                            wpk) is made for */
    int32_t *xcorr;                      /* (max_rows, n_corr) activation corrections */
    size_t n_corr;
    int (*poll)(void *);                 /* lh_matmul_set_poll, or NULL */
    void *poll_ud;
    uint16_t *xbf;                       /* (max_rows, n_in) x rounded to BF16 for the BF16
                                            prefill (bf16_dnnl); NULL otherwise */
    int bf16_dnnl;                       /* BF16 W: oneDNN bf16 x bf16 -> f32 on W in place */
    /* F16 prefill (gemm_f16, where there is AVX-512) */
    int f16_gemm;
    float *xpk;                          /* (ceil(max_rows / 32), k_pad, 32) x transposed */
    float *wpk;                          /* (n_thr, k_pad / KC, 12, KC) W rows as F32 */
};

/* The panels from this many activation rows: unpacking a panel costs about what 16 rows of its
 * products do.  tools/kbench qgemm, one thread, TinyLlama shapes (KB_M=rows): at 4 and 8 rows
 * the four-row path takes half the time (2048x2048 Q4_K 0.3 vs 0.7 ms at 4 rows), at 16 they are
 * even, at 32 the panels take 0.5-0.7 of it, at 256 a quarter to a third. */
#define Q8P_MIN_ROWS 16

#define DNNL_CHECK(call)                                                                      \
    do {                                                                                      \
        dnnl_status_t st_ = (call);                                                           \
        if (st_ != dnnl_success) {                                                            \
            lh_log_error("matmul: %s failed: oneDNN status %d", #call, (int)st_);            \
            goto fail;                                                                        \
        }                                                                                     \
    } while (0)

/* ---- small F32 GEMMs for attention ---------------------------------------------------------- */

#ifdef LH_HAVE_AVX2
static inline __m256i tail_mask(size_t r)
{
    /* lanes 0..r-1 set (r <= 8) */
    static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(m + 8 - r));
}

/* C[0..mr)[0..nr) (+)= A rows · B rows, a 2 x 4 block; rows past mr/nr repeat the last valid one
 * (their results are dropped), so one register-resident kernel serves every edge. */
static void nt_block(size_t mr, size_t nr, size_t k, const float *a, size_t lda, const float *b,
                     size_t ldb, float *c, size_t ldc, float beta)
{
    const float *a0 = a, *a1 = a + (mr > 1 ? lda : 0);
    const float *b0 = b, *b1 = b + (nr > 1 ? 1 : 0) * ldb, *b2 = b + (nr > 2 ? 2 : nr - 1) * ldb,
                *b3 = b + (nr > 3 ? 3 : nr - 1) * ldb;
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c03 = c00;
    __m256 c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    size_t p = 0;
    for (; p + 8 <= k; p += 8) {
        __m256 va0 = _mm256_loadu_ps(a0 + p), va1 = _mm256_loadu_ps(a1 + p);
        __m256 vb = _mm256_loadu_ps(b0 + p);
        c00 = _mm256_fmadd_ps(va0, vb, c00);
        c10 = _mm256_fmadd_ps(va1, vb, c10);
        vb = _mm256_loadu_ps(b1 + p);
        c01 = _mm256_fmadd_ps(va0, vb, c01);
        c11 = _mm256_fmadd_ps(va1, vb, c11);
        vb = _mm256_loadu_ps(b2 + p);
        c02 = _mm256_fmadd_ps(va0, vb, c02);
        c12 = _mm256_fmadd_ps(va1, vb, c12);
        vb = _mm256_loadu_ps(b3 + p);
        c03 = _mm256_fmadd_ps(va0, vb, c03);
        c13 = _mm256_fmadd_ps(va1, vb, c13);
    }
    if (p < k) {
        __m256i msk = tail_mask(k - p);
        __m256 va0 = _mm256_maskload_ps(a0 + p, msk), va1 = _mm256_maskload_ps(a1 + p, msk);
        __m256 vb = _mm256_maskload_ps(b0 + p, msk);
        c00 = _mm256_fmadd_ps(va0, vb, c00);
        c10 = _mm256_fmadd_ps(va1, vb, c10);
        vb = _mm256_maskload_ps(b1 + p, msk);
        c01 = _mm256_fmadd_ps(va0, vb, c01);
        c11 = _mm256_fmadd_ps(va1, vb, c11);
        vb = _mm256_maskload_ps(b2 + p, msk);
        c02 = _mm256_fmadd_ps(va0, vb, c02);
        c12 = _mm256_fmadd_ps(va1, vb, c12);
        vb = _mm256_maskload_ps(b3 + p, msk);
        c03 = _mm256_fmadd_ps(va0, vb, c03);
        c13 = _mm256_fmadd_ps(va1, vb, c13);
    }
    float r[2][4];
    _mm_storeu_ps(r[0], lh_hsum4x256(c00, c01, c02, c03));
    _mm_storeu_ps(r[1], lh_hsum4x256(c10, c11, c12, c13));
    for (size_t i = 0; i < mr; i++)
        for (size_t j = 0; j < nr; j++)
            c[i * ldc + j] = beta != 0 ? c[i * ldc + j] + r[i][j] : r[i][j];
}
#endif

/* From this many rows of A on, lh_gemm_nt / lh_gemm_nn hand the product to oneDNN's dnnl_sgemm
 * (AVX-512 JIT kernels, single-threaded inside our parallel regions: OpenMP does not nest).
 * Measured with `longheads-kbench headmm` (one head on one thread, LongHeads' per-chunk products:
 * scores (M, 64 keys, d) then P·V (M, d, 64 keys), L = 512 and 4096; µs hand / sgemm):
 *   d = 64: M = 1 5.0 / 4.8, M = 4 11.1 / 9.9, M = 16 42.6 / 38.0, M = 64 167 / 99 (L = 512);
 *           M = 64 at L = 4096 1457 / 834;
 *   d = 8:  M = 1 2.0 / 3.7, M = 4 4.1 / 6.7, M = 16 14.3 / 12.1, M = 64 59.3 / 28.9 (L = 512).
 * So the hand-written kernels keep the few-row products (decode: one query, a GQA group) where
 * oneDNN's fixed cost per call is not repaid, and oneDNN takes prefill blocks (1.7-2x faster at
 * M = 64).  A oneDNN matmul primitive (runtime shapes, or one per shape class with runtime M)
 * measured slower than dnnl_sgemm at every shape, and slower than the hand-written kernels for
 * M <= 16; the figures are in the kbench table.  dnnl_sgemm cannot fail on valid arguments; if it
 * ever did, the hand-written kernel computes the product instead (no log: we may be inside a
 * parallel region).  Only from inside an active parallel region (or with one thread): called
 * from serial code (a region skipped by its if clause for a small batch), oneDNN would open its
 * own team for the product and allocate on every call (counted: one malloc per call with two
 * threads, none inside our region). */
#define SGEMM_MIN_M 16

static int sgemm(char tb, size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b,
                 size_t ldb, float *c, size_t ldc, float beta)
{
#ifdef _OPENMP
    int single = omp_in_parallel() || omp_get_max_threads() == 1;
#else
    int single = 0;   /* oneDNN's own OpenMP would not know it is meant to stay serial */
#endif
    return single && m >= SGEMM_MIN_M && n > 0 && k > 0 &&
           dnnl_sgemm('N', tb, (dnnl_dim_t)m, (dnnl_dim_t)n, (dnnl_dim_t)k, 1.0f, a,
                      (dnnl_dim_t)lda, b, (dnnl_dim_t)ldb, beta, c,
                      (dnnl_dim_t)ldc) == dnnl_success;
}

void lh_gemm_nt(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b,
                size_t ldb, float *c, size_t ldc, float beta)
{
    if (sgemm('T', m, n, k, a, lda, b, ldb, c, ldc, beta))
        return;
#ifdef LH_HAVE_AVX2
    /* B rows are streamed once per pair of A rows; the caller's blocks are small enough (a tile of
     * keys × head_dim) to stay in L1/L2, so no further blocking. */
    for (size_t i = 0; i < m; i += 2) {
        size_t mr = m - i < 2 ? m - i : 2;
        for (size_t j = 0; j < n; j += 4) {
            size_t nr = n - j < 4 ? n - j : 4;
            nt_block(mr, nr, k, a + i * lda, lda, b + j * ldb, ldb, c + i * ldc + j, ldc, beta);
        }
    }
#else
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            float s = 0;
            for (size_t p = 0; p < k; p++)
                s += a[i * lda + p] * b[j * ldb + p];
            c[i * ldc + j] = beta != 0 ? c[i * ldc + j] + s : s;
        }
#endif
}

#ifdef LH_HAVE_AVX2
/* C[0..mr)[0..nr) (+)= A[0..mr)[0..k) · B[0..k)[0..nr), a 4 x 16 block; nr <= 16 via masks, A rows
 * past mr repeat the last one (results dropped). */
static void nn_block(size_t mr, size_t nr, size_t k, const float *a, size_t lda, const float *b,
                     size_t ldb, float *c, size_t ldc, int accumulate)
{
    const float *a0 = a, *a1 = a + (mr > 1 ? 1 : 0) * lda, *a2 = a + (mr > 2 ? 2 : mr - 1) * lda,
                *a3 = a + (mr > 3 ? 3 : mr - 1) * lda;
    __m256i m0 = tail_mask(nr < 8 ? nr : 8), m1 = tail_mask(nr > 8 ? nr - 8 : 0);
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00;
    __m256 c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    if (mr == 1) {
        /* one row (decode attention: P·V for a single query): no wasted broadcasts */
        for (size_t p = 0; p < k; p++) {
            __m256 va = _mm256_broadcast_ss(a0 + p);
            c00 = _mm256_fmadd_ps(va, _mm256_maskload_ps(b + p * ldb, m0), c00);
            c01 = _mm256_fmadd_ps(va, _mm256_maskload_ps(b + p * ldb + 8, m1), c01);
        }
    } else if (nr == 16) {
        for (size_t p = 0; p < k; p++) {
            __m256 b0 = _mm256_loadu_ps(b + p * ldb), b1 = _mm256_loadu_ps(b + p * ldb + 8);
            __m256 va = _mm256_broadcast_ss(a0 + p);
            c00 = _mm256_fmadd_ps(va, b0, c00);
            c01 = _mm256_fmadd_ps(va, b1, c01);
            va = _mm256_broadcast_ss(a1 + p);
            c10 = _mm256_fmadd_ps(va, b0, c10);
            c11 = _mm256_fmadd_ps(va, b1, c11);
            va = _mm256_broadcast_ss(a2 + p);
            c20 = _mm256_fmadd_ps(va, b0, c20);
            c21 = _mm256_fmadd_ps(va, b1, c21);
            va = _mm256_broadcast_ss(a3 + p);
            c30 = _mm256_fmadd_ps(va, b0, c30);
            c31 = _mm256_fmadd_ps(va, b1, c31);
        }
    } else {
        for (size_t p = 0; p < k; p++) {
            __m256 b0 = _mm256_maskload_ps(b + p * ldb, m0);
            __m256 b1 = _mm256_maskload_ps(b + p * ldb + 8, m1);
            __m256 va = _mm256_broadcast_ss(a0 + p);
            c00 = _mm256_fmadd_ps(va, b0, c00);
            c01 = _mm256_fmadd_ps(va, b1, c01);
            va = _mm256_broadcast_ss(a1 + p);
            c10 = _mm256_fmadd_ps(va, b0, c10);
            c11 = _mm256_fmadd_ps(va, b1, c11);
            va = _mm256_broadcast_ss(a2 + p);
            c20 = _mm256_fmadd_ps(va, b0, c20);
            c21 = _mm256_fmadd_ps(va, b1, c21);
            va = _mm256_broadcast_ss(a3 + p);
            c30 = _mm256_fmadd_ps(va, b0, c30);
            c31 = _mm256_fmadd_ps(va, b1, c31);
        }
    }
    __m256 acc[4][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
    for (size_t i = 0; i < mr; i++) {
        float *ci = c + i * ldc;
        __m256 r0 = acc[i][0], r1 = acc[i][1];
        if (accumulate) {
            r0 = _mm256_add_ps(r0, _mm256_maskload_ps(ci, m0));
            r1 = _mm256_add_ps(r1, _mm256_maskload_ps(ci + 8, m1));
        }
        _mm256_maskstore_ps(ci, m0, r0);
        _mm256_maskstore_ps(ci + 8, m1, r1);
    }
}
#endif

void lh_gemm_nn(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b,
                size_t ldb, float *c, size_t ldc, float beta)
{
    if (sgemm('N', m, n, k, a, lda, b, ldb, c, ldc, beta))
        return;
#ifdef LH_HAVE_AVX2
    /* k is cut into slices of KC so a 16-column strip of B (KC x 16 floats = 16 KiB) stays in L1
     * while every 4-row block of A passes over it. */
    enum { KC = 256 };
    if (k == 0) {
        if (beta == 0)
            for (size_t i = 0; i < m; i++)
                memset(c + i * ldc, 0, n * sizeof *c);
        return;
    }
    for (size_t p0 = 0; p0 < k; p0 += KC) {
        size_t kc = k - p0 < KC ? k - p0 : KC;
        int accumulate = p0 > 0 || beta != 0;
        for (size_t j = 0; j < n; j += 16) {
            size_t nr = n - j < 16 ? n - j : 16;
            for (size_t i = 0; i < m; i += 4) {
                size_t mr = m - i < 4 ? m - i : 4;
                nn_block(mr, nr, kc, a + i * lda + p0, lda, b + p0 * ldb + j, ldb,
                         c + i * ldc + j, ldc, accumulate);
            }
        }
    }
#else
    for (size_t i = 0; i < m; i++) {
        float *ci = c + i * ldc;
        if (beta == 0)
            memset(ci, 0, n * sizeof *ci);
        for (size_t p = 0; p < k; p++) {
            float av = a[i * lda + p];
            const float *bp = b + p * ldb;
            for (size_t j = 0; j < n; j++)
                ci[j] += av * bp[j];
        }
    }
#endif
}

/* ---- reference ------------------------------------------------------------------------------ */

/* Each W row through the exact dequantiser (lh_dequant_row: ggml's values bit for bit), then a
 * double sum.  A reference, so it allocates its one row of scratch. */
void lh_matmul_ref(lh_type wtype, const void *w, const float *x, size_t n_rows, size_t n_in,
                   size_t n_out, float *y)
{
    size_t rs = lh_type_row_size(wtype, n_in);
    float *wd = malloc((n_in ? n_in : 1) * sizeof *wd);
    if (!wd) {
        for (size_t i = 0; i < n_rows * n_out; i++)
            y[i] = NAN;
        return;
    }
    for (size_t o = 0; o < n_out; o++) {
        lh_dequant_row(wtype, (const char *)w + o * rs, wd, n_in);
        for (size_t r = 0; r < n_rows; r++) {
            double s = 0;
            for (size_t i = 0; i < n_in; i++)
                s += (double)wd[i] * x[r * n_in + i];
            y[r * n_out + o] = (float)s;
        }
    }
    free(wd);
}

/* ---- oneDNN prefill + GEMV decode ----------------------------------------------------------- */

static void free_mems(dnnl_memory_t *mems, size_t n)
{
    if (!mems)
        return;
    for (size_t i = 0; i < n; i++)
        if (mems[i])
            dnnl_memory_destroy(mems[i]);
    free(mems);
}

/* ---- per-head products through oneDNN (see matmul.h) ----------------------------------------- */

/* A row-major view: dims (d0, d1) with strides (s0, s1), any of them DNNL_RUNTIME_DIM_VAL. */
static dnnl_status_t md2(dnnl_memory_desc_t *md, dnnl_dim_t d0, dnnl_dim_t d1, dnnl_dim_t s0,
                         dnnl_dim_t s1)
{
    dnnl_dims_t dims = {d0, d1}, strides = {s0, s1};
    return dnnl_memory_desc_init_by_strides(md, 2, dims, dnnl_f32, strides);
}

/* op(B) as oneDNN's (k, n) weights: Bᵀ of a row-major (n, k) B has strides (1, ldb), B itself
 * (ldb, 1). */
static dnnl_status_t b_md(dnnl_memory_desc_t *md, int nt, dnnl_dim_t k, dnnl_dim_t n,
                          dnnl_dim_t ldb)
{
    return nt ? md2(md, k, n, 1, ldb) : md2(md, k, n, ldb, 1);
}

/* A matmul primitive for C (m, n) (+)= A (m, k) · op(B); any argument may be a runtime value. */
static int gemm_prim(dnnl_engine_t eng, int nt, dnnl_dim_t m, dnnl_dim_t n, dnnl_dim_t k,
                     dnnl_dim_t lda, dnnl_dim_t ldb, dnnl_dim_t ldc, float beta,
                     dnnl_primitive_t *primp)
{
    int rc = -EIO;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_memory_desc_t amd, bmd, cmd;
    dnnl_matmul_desc_t desc;
    DNNL_CHECK(md2(&amd, m, k, lda, 1));
    DNNL_CHECK(b_md(&bmd, nt, k, n, ldb));
    DNNL_CHECK(md2(&cmd, m, n, ldc, 1));
    DNNL_CHECK(dnnl_matmul_desc_init(&desc, &amd, &bmd, NULL, &cmd));
    DNNL_CHECK(dnnl_primitive_attr_create(&attr));
    if (beta != 0) {   /* C += : oneDNN's sum post-op */
        DNNL_CHECK(dnnl_post_ops_create(&po));
        DNNL_CHECK(dnnl_post_ops_append_sum(po, 1.0f));
        DNNL_CHECK(dnnl_primitive_attr_set_post_ops(attr, po));
    }
    DNNL_CHECK(dnnl_primitive_desc_create(&pd, &desc, attr, eng, NULL));
    DNNL_CHECK(dnnl_primitive_create(primp, pd));
    rc = 0;
fail:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (po)
        dnnl_post_ops_destroy(po);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    return rc;
}

static int run3(dnnl_primitive_t prim, dnnl_stream_t stream, dnnl_memory_t a, dnnl_memory_t b,
                dnnl_memory_t c)
{
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}};
    DNNL_CHECK(dnnl_primitive_execute(prim, stream, 3, args));
    DNNL_CHECK(dnnl_stream_wait(stream));
    return 0;
fail:
    return -EIO;
}

/* k == 0 (or nothing to do): C = 0 for beta 0, unchanged for beta 1 */
static int gemm_empty(size_t m, size_t n, float *c, size_t ldc, float beta)
{
    if (beta == 0)
        for (size_t i = 0; i < m; i++)
            memset(c + i * ldc, 0, n * sizeof *c);
    return 0;
}

struct lh_gemm_dnnl {
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    dnnl_primitive_t prim[2][2];   /* [nt][beta != 0], every dimension and stride at run time */
};

void lh_gemm_dnnl_free(lh_gemm_dnnl *g)
{
    if (!g)
        return;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            if (g->prim[i][j])
                dnnl_primitive_destroy(g->prim[i][j]);
    if (g->stream)
        dnnl_stream_destroy(g->stream);
    if (g->eng)
        dnnl_engine_destroy(g->eng);
    free(g);
}

int lh_gemm_dnnl_new(lh_gemm_dnnl **gp)
{
    int rc = -EIO;
    const dnnl_dim_t R = DNNL_RUNTIME_DIM_VAL;
    lh_gemm_dnnl *g = calloc(1, sizeof *g);
    *gp = NULL;
    if (!g)
        return -ENOMEM;
    DNNL_CHECK(dnnl_engine_create(&g->eng, dnnl_cpu, 0));
    DNNL_CHECK(dnnl_stream_create(&g->stream, g->eng, dnnl_stream_default_flags));
    for (int nt = 0; nt < 2; nt++)
        for (int acc = 0; acc < 2; acc++)
            if ((rc = gemm_prim(g->eng, nt, R, R, R, R, R, R, (float)acc, &g->prim[nt][acc])))
                goto fail;
    *gp = g;
    return 0;
fail:
    lh_gemm_dnnl_free(g);
    return rc ? rc : -EIO;
}

int lh_gemm_dnnl_run(lh_gemm_dnnl *g, int nt, size_t m, size_t n, size_t k, const float *a,
                     size_t lda, const float *b, size_t ldb, float *c, size_t ldc, float beta)
{
    if (m == 0 || n == 0 || k == 0)
        return gemm_empty(m, n, c, ldc, beta);
    int rc = -EIO;
    dnnl_memory_t ma = NULL, mb = NULL, mc = NULL;
    dnnl_memory_desc_t amd, bmd, cmd;
    DNNL_CHECK(md2(&amd, (dnnl_dim_t)m, (dnnl_dim_t)k, (dnnl_dim_t)lda, 1));
    DNNL_CHECK(b_md(&bmd, nt, (dnnl_dim_t)k, (dnnl_dim_t)n, (dnnl_dim_t)ldb));
    DNNL_CHECK(md2(&cmd, (dnnl_dim_t)m, (dnnl_dim_t)n, (dnnl_dim_t)ldc, 1));
    DNNL_CHECK(dnnl_memory_create(&ma, &amd, g->eng, (void *)a));
    DNNL_CHECK(dnnl_memory_create(&mb, &bmd, g->eng, (void *)b));
    DNNL_CHECK(dnnl_memory_create(&mc, &cmd, g->eng, c));
    rc = run3(g->prim[nt != 0][beta != 0], g->stream, ma, mb, mc);
fail:
    if (ma)
        dnnl_memory_destroy(ma);
    if (mb)
        dnnl_memory_destroy(mb);
    if (mc)
        dnnl_memory_destroy(mc);
    return rc;
}

int lh_gemm_sgemm(int nt, size_t m, size_t n, size_t k, const float *a, size_t lda,
                  const float *b, size_t ldb, float *c, size_t ldc, float beta)
{
    if (m == 0 || n == 0 || k == 0)
        return gemm_empty(m, n, c, ldc, beta);
    DNNL_CHECK(dnnl_sgemm('N', nt ? 'T' : 'N', (dnnl_dim_t)m, (dnnl_dim_t)n, (dnnl_dim_t)k, 1.0f,
                          a, (dnnl_dim_t)lda, b, (dnnl_dim_t)ldb, beta, c, (dnnl_dim_t)ldc));
    return 0;
fail:
    return -EIO;
}

struct lh_headmm {
    size_t max_m;
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    dnnl_primitive_t prim;     /* m at run time */
    dnnl_memory_t b_mem;       /* fixed shape, data handle set per call */
    dnnl_memory_t *a_mem, *c_mem;   /* [max_m + 1], index m */
};

void lh_headmm_free(lh_headmm *h)
{
    if (!h)
        return;
    free_mems(h->a_mem, h->max_m + 1);
    free_mems(h->c_mem, h->max_m + 1);
    if (h->b_mem)
        dnnl_memory_destroy(h->b_mem);
    if (h->prim)
        dnnl_primitive_destroy(h->prim);
    if (h->stream)
        dnnl_stream_destroy(h->stream);
    if (h->eng)
        dnnl_engine_destroy(h->eng);
    free(h);
}

int lh_headmm_new(lh_headmm **hp, int nt, size_t max_m, size_t n, size_t k, size_t lda,
                  size_t ldb, size_t ldc, float beta)
{
    int rc = -EIO;
    dnnl_memory_desc_t md;
    lh_headmm *h = calloc(1, sizeof *h);
    *hp = NULL;
    if (!h)
        return -ENOMEM;
    h->max_m = max_m;
    h->a_mem = calloc(max_m + 1, sizeof *h->a_mem);
    h->c_mem = calloc(max_m + 1, sizeof *h->c_mem);
    if (!h->a_mem || !h->c_mem || !n || !k) {
        rc = !n || !k ? -EINVAL : -ENOMEM;
        goto fail;
    }
    DNNL_CHECK(dnnl_engine_create(&h->eng, dnnl_cpu, 0));
    DNNL_CHECK(dnnl_stream_create(&h->stream, h->eng, dnnl_stream_default_flags));
    if ((rc = gemm_prim(h->eng, nt, DNNL_RUNTIME_DIM_VAL, (dnnl_dim_t)n, (dnnl_dim_t)k,
                        (dnnl_dim_t)lda, (dnnl_dim_t)ldb, (dnnl_dim_t)ldc, beta, &h->prim)))
        goto fail;
    rc = -EIO;
    DNNL_CHECK(b_md(&md, nt, (dnnl_dim_t)k, (dnnl_dim_t)n, (dnnl_dim_t)ldb));
    DNNL_CHECK(dnnl_memory_create(&h->b_mem, &md, h->eng, DNNL_MEMORY_NONE));
    for (size_t m = 1; m <= max_m; m++) {
        DNNL_CHECK(md2(&md, (dnnl_dim_t)m, (dnnl_dim_t)k, (dnnl_dim_t)lda, 1));
        DNNL_CHECK(dnnl_memory_create(&h->a_mem[m], &md, h->eng, DNNL_MEMORY_NONE));
        DNNL_CHECK(md2(&md, (dnnl_dim_t)m, (dnnl_dim_t)n, (dnnl_dim_t)ldc, 1));
        DNNL_CHECK(dnnl_memory_create(&h->c_mem[m], &md, h->eng, DNNL_MEMORY_NONE));
    }
    *hp = h;
    return 0;
fail:
    lh_headmm_free(h);
    return rc;
}

int lh_headmm_run(lh_headmm *h, size_t m, const float *a, const float *b, float *c)
{
    if (m == 0)
        return 0;
    if (m > h->max_m)
        return -EINVAL;
    DNNL_CHECK(dnnl_memory_set_data_handle(h->a_mem[m], (void *)a));
    DNNL_CHECK(dnnl_memory_set_data_handle(h->b_mem, (void *)b));
    DNNL_CHECK(dnnl_memory_set_data_handle(h->c_mem[m], c));
    return run3(h->prim, h->stream, h->a_mem[m], h->b_mem, h->c_mem[m]);
fail:
    return -EIO;
}

void lh_matmul_free(lh_matmul *m)
{
    if (!m)
        return;
    free_mems(m->src_mem, m->max_rows + 1);
    free_mems(m->dst_mem, m->max_rows + 1);
    free_mems(m->dst_tail_mem, m->max_rows + 1);
    if (m->w_mem)
        dnnl_memory_destroy(m->w_mem);
    if (m->w_tail_mem)
        dnnl_memory_destroy(m->w_tail_mem);
    if (m->scratch_mem)
        dnnl_memory_destroy(m->scratch_mem);
    if (m->scratch_tail_mem)
        dnnl_memory_destroy(m->scratch_tail_mem);
    if (m->prim)
        dnnl_primitive_destroy(m->prim);
    if (m->prim_tail)
        dnnl_primitive_destroy(m->prim_tail);
    if (m->prim_max)
        dnnl_primitive_destroy(m->prim_max);
    if (m->scratch_max_mem)
        dnnl_memory_destroy(m->scratch_max_mem);
    free(m->scratchpad_max);
    if (m->stream)
        dnnl_stream_destroy(m->stream);
    if (m->eng)
        dnnl_engine_destroy(m->eng);
    free(m->scratchpad);
    free(m->scratchpad_tail);
    free(m->wpanel);
    free(m->xq);
    free(m->panels);
    free(m->xcorr);
    free(m->xbf);
    free(m->xpk);
    free(m->wpk);
    free(m);
}

/* The primitive for output columns of width n_cols (dst row stride n_out), with M fixed or at
 * run time (DNNL_RUNTIME_DIM_VAL); also its weights memory (unless wmemp is NULL) and its user
 * scratchpad. */
static int make_prim(lh_matmul *m, size_t n_cols, dnnl_dim_t M, dnnl_primitive_t *primp,
                     dnnl_memory_t *wmemp, dnnl_memory_t *spmemp, void **spp)
{
    /* src and weights: bf16 for the BF16 path (W in place), f32 otherwise; dst always f32 */
    dnnl_data_type_t dt = m->bf16_dnnl ? dnnl_bf16 : dnnl_f32;
    int rc = -EIO;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_memory_desc_t src_md, w_md, dst_md;
    dnnl_dims_t src_dims = {M, (dnnl_dim_t)m->n_in};
    dnnl_dims_t src_strides = {(dnnl_dim_t)m->n_in, 1};
    dnnl_dims_t w_dims = {(dnnl_dim_t)m->n_in, (dnnl_dim_t)n_cols};
    dnnl_dims_t w_strides = {1, (dnnl_dim_t)m->n_in};
    dnnl_dims_t dst_dims = {M, (dnnl_dim_t)n_cols};
    dnnl_dims_t dst_strides = {(dnnl_dim_t)m->n_out, 1};
    dnnl_matmul_desc_t desc;
    DNNL_CHECK(dnnl_memory_desc_init_by_strides(&src_md, 2, src_dims, dt, src_strides));
    DNNL_CHECK(dnnl_memory_desc_init_by_strides(&w_md, 2, w_dims, dt, w_strides));
    DNNL_CHECK(dnnl_memory_desc_init_by_strides(&dst_md, 2, dst_dims, dnnl_f32, dst_strides));
    DNNL_CHECK(dnnl_matmul_desc_init(&desc, &src_md, &w_md, NULL, &dst_md));
    DNNL_CHECK(dnnl_primitive_attr_create(&attr));
    DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    DNNL_CHECK(dnnl_primitive_desc_create(&pd, &desc, attr, m->eng, NULL));
    DNNL_CHECK(dnnl_primitive_create(primp, pd));
    if (wmemp)   /* NULL: the primitive shares a weights memory made with an earlier one */
        DNNL_CHECK(dnnl_memory_create(wmemp, &w_md, m->eng, DNNL_MEMORY_NONE));
    const dnnl_memory_desc_t *sp_md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t sp_size = sp_md ? dnnl_memory_desc_get_size(sp_md) : 0;
    if (sp_size > 0) {
        if (posix_memalign(spp, 64, sp_size) != 0) {
            *spp = NULL;
            rc = -ENOMEM;
            goto fail;
        }
        DNNL_CHECK(dnnl_memory_create(spmemp, sp_md, m->eng, *spp));
    }
    rc = 0;
fail:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    return rc;
}

/* One buffer-less memory object per M in 1..max_rows for a (M, n_cols) block with row stride ld. */
static int make_mems(lh_matmul *m, size_t n_cols, size_t ld, dnnl_data_type_t dt,
                     dnnl_memory_t **memsp)
{
    int rc = -ENOMEM;
    dnnl_memory_t *mems = calloc(m->max_rows + 1, sizeof *mems);
    if (!mems)
        goto fail;
    *memsp = mems;
    rc = -EIO;
    for (size_t r = 1; r <= m->max_rows; r++) {
        dnnl_memory_desc_t md;
        dnnl_dims_t dims = {(dnnl_dim_t)r, (dnnl_dim_t)n_cols};
        dnnl_dims_t strides = {(dnnl_dim_t)ld, 1};
        DNNL_CHECK(dnnl_memory_desc_init_by_strides(&md, 2, dims, dt, strides));
        DNNL_CHECK(dnnl_memory_create(&mems[r], &md, m->eng, DNNL_MEMORY_NONE));
    }
    rc = 0;
fail:
    return rc;
}

/* The per-thread panels and activation corrections of the panel prefill path (gemm_q8). */
static int make_panels(lh_matmul *m)
{
    if (!lh_q8p_has(m->wtype) || m->max_rows < Q8P_MIN_ROWS)
        return 0;
#ifdef _OPENMP
    m->n_thr = (size_t)omp_get_max_threads();
#else
    m->n_thr = 1;
#endif
    m->panel_size = lh_q8p_panel_size(m->wtype, m->n_in);
    m->n_corr = lh_q8p_corr_count(m->wtype, m->n_in);
    if (m->panel_size > SIZE_MAX / m->n_thr ||
        posix_memalign(&m->panels, 64, m->panel_size * m->n_thr) != 0) {
        m->panels = NULL;
        return -ENOMEM;
    }
    if (m->n_corr && !(m->xcorr = malloc(m->max_rows * m->n_corr * sizeof *m->xcorr)))
        return -ENOMEM;
    return 0;
}

int lh_matmul_new(lh_matmul **mp, lh_type wtype, size_t n_in, size_t n_out, size_t max_rows)
{
    int rc = -EINVAL;
    lh_matmul *m = NULL;
    *mp = NULL;
    if (!lh_type_known(wtype) || n_in == 0 || n_out == 0 || max_rows == 0 ||
        n_in % lh_type_block(wtype) != 0 || n_in > INT32_MAX || n_out > INT32_MAX ||
        max_rows > INT32_MAX) {
        lh_log_error("matmul: unsupported shape %zu x %zu of %s (max_rows %zu)", n_out, n_in,
                     lh_type_name(wtype), max_rows);
        goto fail;
    }
    rc = -ENOMEM;
    m = calloc(1, sizeof *m);
    if (!m)
        goto fail;
    m->wtype = wtype;
    m->n_in = n_in;
    m->n_out = n_out;
    m->max_rows = max_rows;
    m->row_size = lh_type_row_size(wtype, n_in);
    /* BF16 weights go to oneDNN's bf16 matmul as they are in the file (vdpbf16ps) where the CPU
     * has AVX512_BF16; elsewhere (emulated bf16 would be slow) through F32 panels. */
    m->bf16_dnnl = wtype == LH_TYPE_BF16 &&
                   (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core_bf16) ==
                       dnnl_cpu_isa_avx512_core_bf16;
    if (wtype == LH_TYPE_F32 || m->bf16_dnnl) {
        m->panel = n_out;
    } else {
        size_t p = PANEL_BYTES / (n_in * sizeof(float));
        p = p < 16 ? 16 : p & ~(size_t)15;
        m->panel = p < n_out ? p : n_out;
    }
    m->n_panel_full = n_out / m->panel;
    m->tail = n_out % m->panel;
    if (m->bf16_dnnl) {
        if (n_in > SIZE_MAX / sizeof(uint16_t) / max_rows ||
            posix_memalign((void **)&m->xbf, 64, max_rows * n_in * sizeof(uint16_t)) != 0) {
            m->xbf = NULL;
            goto fail;
        }
    } else if (wtype != LH_TYPE_F32) {
        if (posix_memalign((void **)&m->wpanel, 64, m->panel * n_in * sizeof(float)) != 0) {
            m->wpanel = NULL;
            goto fail;
        }
    }
    if (lh_q8_kind(wtype)) {
        m->q8_size = lh_q8_size(wtype, n_in);
        if (m->q8_size > SIZE_MAX / max_rows ||
            posix_memalign(&m->xq, 64, m->q8_size * max_rows) != 0) {
            m->xq = NULL;
            goto fail;
        }
        if ((rc = make_panels(m)) != 0)
            goto fail;
        rc = -ENOMEM;
    }
#ifdef LH_HAVE_AVX512
    if (wtype == LH_TYPE_F16 && max_rows > 1) {
        size_t k_pad = (n_in + GF_KC - 1) / GF_KC * GF_KC, n_tb = (max_rows + 31) / 32;
        m->f16_gemm = 1;
        m->n_thr = 1;
#ifdef _OPENMP
        m->n_thr = (size_t)omp_get_max_threads();
#endif
        if (k_pad > SIZE_MAX / sizeof(float) / 32 / n_tb ||
            k_pad > SIZE_MAX / sizeof(float) / GF_MR / m->n_thr ||
            posix_memalign((void **)&m->xpk, 64, n_tb * k_pad * 32 * sizeof(float)) != 0 ||
            posix_memalign((void **)&m->wpk, 64, m->n_thr * k_pad * GF_MR * sizeof(float)) != 0)
            goto fail;
    }
#endif
    rc = -EIO;
    DNNL_CHECK(dnnl_engine_create(&m->eng, dnnl_cpu, 0));
    DNNL_CHECK(dnnl_stream_create(&m->stream, m->eng, dnnl_stream_default_flags));
    if ((rc = make_prim(m, m->panel, DNNL_RUNTIME_DIM_VAL, &m->prim, &m->w_mem, &m->scratch_mem,
                        &m->scratchpad)) != 0)
        goto fail;
    /* a slice of max_rows (every full prefill slice: the daemon slices by n_batch) through a
     * primitive with M fixed: oneDNN's kernel for a runtime M is far slower here (1b F32
     * pp512, alternating: 69-72 against 96-102 tok/s; small F32 897-916 against 985-1046) */
    if ((wtype == LH_TYPE_F32 || m->bf16_dnnl) && max_rows > 1 &&
        (rc = make_prim(m, m->panel, (dnnl_dim_t)max_rows, &m->prim_max, NULL,
                        &m->scratch_max_mem, &m->scratchpad_max)) != 0)
        goto fail;
    if ((rc = make_mems(m, n_in, n_in, m->bf16_dnnl ? dnnl_bf16 : dnnl_f32, &m->src_mem)) != 0)
        goto fail;
    if ((rc = make_mems(m, m->panel, n_out, dnnl_f32, &m->dst_mem)) != 0)
        goto fail;
    if (m->tail) {
        if ((rc = make_prim(m, m->tail, DNNL_RUNTIME_DIM_VAL, &m->prim_tail, &m->w_tail_mem,
                            &m->scratch_tail_mem, &m->scratchpad_tail)) != 0)
            goto fail;
        if ((rc = make_mems(m, m->tail, n_out, dnnl_f32, &m->dst_tail_mem)) != 0)
            goto fail;
    }
    *mp = m;
    return 0;
fail:
    if (rc == -ENOMEM)
        lh_log_error("matmul: out of memory for %zu x %zu", n_out, n_in);
    lh_matmul_free(m);
    return rc;
}

#ifdef LH_HAVE_AVX512
/* ---- the decode GEMV for F32 / F16 / BF16 weights (AVX-512) --------------------------------
 *
 * Decode reads every weight once, so this loop must run at memory speed.  Each thread takes
 * contiguous runs of rows (gemv_multi) and splits each run's rows of one matrix into four
 * quarters walked side by side: rows o, o + q, o + 2q, o + 3q (q = a quarter of the piece), four
 * sequential streams at least GEMV_GAP bytes apart, sharing each load of x.  Which streams, and
 * how far apart, decided the speed (1b F16 decode, AMD EPYC with AVX512_VP2INTERSECT, 2 threads;
 * the bench's --roofline pass: one decode step, then one read pass over the same weights,
 * alternating, so both see the same bandwidth; variants alternating step by step inside one
 * process, six rounds of 96-128 steps per comparison):
 * - four rows a quarter of the piece apart (this one) against one row at a time (the kernel
 *   before): 1-23% more tokens per second in each of 24 rounds, 0.89-1.08 of the read pass
 *   against 0.78-1.05 (both the higher where the bandwidth was low; in other rounds, with the
 *   pass at 68-72 GB/s, four rows read 0.69-0.92 of it); on the stories110M shape 2-12% more,
 *   four rounds of four;
 * - four ADJACENT rows (at n_in = 2048 F16 they are 4 KiB apart, as in lh_dot_rows, the kernel
 *   before that): about half the speed of one row; the four rows 4 rows apart (16 KiB): 2-20%
 *   slower than one row; 16 rows apart (64 KiB): 0-6% slower; the quarters of the whole region
 *   (megabytes apart): the same as this one; eight rows an eighth apart: 1-8% slower than four;
 *   each row whole but the four quarters' rows taken in turn: 0.52-0.61 of the read pass.  So
 *   four far-apart streams advancing together, and below GEMV_GAP one row at a time.
 * (Software prefetch 0.5-32 KiB ahead measured no faster, and slower on an earlier CPU.)
 *
 * A row goes 32 elements per step into two accumulators (16 lanes each: eight independent FMA
 * chains with four rows cover the FMA latency), then a masked tail step; the same order whether
 * the row is one of four or alone, so a row's result never depends on how the rows were split
 * between threads or runs.  x (n_in F32, in L1/L2) is re-read for every group of four rows.
 *
 * A step yields two 16-lane F32 vectors of weights, A and B, for elements i..i+15 and
 * i+16..i+31, against x + i and x + i + 16; 16-bit weights are read 16 at a time (256 bits) and
 * widened to 32-bit lanes.  F32: loaded as they are.  BF16: zero-extended and shifted left by 16
 * (exact).  F16: vcvtph2ps (F16C, exact for every value, whatever MXCSR says).  So every product
 * is exact in F32's range before it is added; the sums are F32 FMAs in another order than the
 * reference, within the float accumulation bound the tests state (1e-5 of Σ|w·x| at
 * n_in <= 4096).  The tail (n_in % 32) is a masked load that reads nothing past the row.
 *
 * How the 16-bit weights are read decided the speed on the two CPUs this was measured on (both
 * AMD EPYC with AVX-512, 2 threads, 1b shape, tg32, alternating builds).  The earlier kernel
 * loaded 32 values in one 512-bit load and split them into even and odd lanes (BF16: a shift and
 * a mask; F16: shifts and a mask), against a copy of x deinterleaved to match.  On the first CPU
 * that measured best (BF16 47-48 GB/s over 1 GiB, F16 41 GB/s against vcvtph2ps's 29-35).  On
 * the second (with AVX512_VP2INTERSECT) the same kernels decoded at 12.6-12.9 tok/s (BF16) and
 * 11.1-11.5 (F16), against 21.1-22.8 and 19.0-20.3 with 256-bit loads widened as above, in
 * natural order; llama.cpp 14.7 and ~19.  The widening form is the one kept for both types.
 * F16 had an integer conversion instead of vcvtph2ps (sign-extend, shift, mask: the value times
 * 2^-112 against x times 2^56, rows with Inf or NaN recomputed), which the first CPU needed; on
 * this one, four rows at a time, the two measured the same (1b: vcvtph2ps 0.91-1.02 of the
 * read pass, the integer conversion 0.91-1.03, six rounds; stories110M shape: vcvtph2ps faster
 * in three of four), and vcvtph2ps needs none of the scaling, so it went. */

static inline __attribute__((always_inline)) void wstep(lh_type t, const char *row, size_t i,
                                                         __mmask32 k, __m512 *a, __m512 *b)
{
    if (t == LH_TYPE_F32) {
        /* four 256-bit loads: none crosses a cache line where the row is 32-byte aligned */
        const float *p = (const float *)row + i;
        __m256 h0 = _mm256_maskz_loadu_ps((__mmask8)k, p);
        __m256 h1 = _mm256_maskz_loadu_ps((__mmask8)(k >> 8), p + 8);
        __m256 h2 = _mm256_maskz_loadu_ps((__mmask8)(k >> 16), p + 16);
        __m256 h3 = _mm256_maskz_loadu_ps((__mmask8)(k >> 24), p + 24);
        *a = _mm512_insertf32x8(_mm512_castps256_ps512(h0), h1, 1);
        *b = _mm512_insertf32x8(_mm512_castps256_ps512(h2), h3, 1);
        return;
    }
    const uint16_t *p = (const uint16_t *)row + i;
    __m256i ha = _mm256_maskz_loadu_epi16((__mmask16)k, p);
    __m256i hb = _mm256_maskz_loadu_epi16((__mmask16)(k >> 16), p + 16);
    if (t == LH_TYPE_F16) {
        *a = _mm512_cvtph_ps(ha);
        *b = _mm512_cvtph_ps(hb);
    } else {
        *a = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(ha), 16));
        *b = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(hb), 16));
    }
}

/* One step (elements i .. i+31, mask k) of R rows (1 or 4, a constant) at row + j*st. */
static inline __attribute__((always_inline)) void rstep(lh_type t, int R, const char *row,
                                                         size_t st, const float *x, size_t i,
                                                         __mmask32 k, __m512 *a0, __m512 *b0,
                                                         __m512 *a1, __m512 *b1, __m512 *a2,
                                                         __m512 *b2, __m512 *a3, __m512 *b3)
{
    __m512 x0 = _mm512_maskz_loadu_ps((__mmask16)k, x + i);
    __m512 x1 = _mm512_maskz_loadu_ps((__mmask16)(k >> 16), x + i + 16), wa, wb;
    wstep(t, row, i, k, &wa, &wb);
    *a0 = _mm512_fmadd_ps(wa, x0, *a0);
    *b0 = _mm512_fmadd_ps(wb, x1, *b0);
    if (R == 1)
        return;
    wstep(t, row + st, i, k, &wa, &wb);
    *a1 = _mm512_fmadd_ps(wa, x0, *a1);
    *b1 = _mm512_fmadd_ps(wb, x1, *b1);
    wstep(t, row + 2 * st, i, k, &wa, &wb);
    *a2 = _mm512_fmadd_ps(wa, x0, *a2);
    *b2 = _mm512_fmadd_ps(wb, x1, *b2);
    wstep(t, row + 3 * st, i, k, &wa, &wb);
    *a3 = _mm512_fmadd_ps(wa, x0, *a3);
    *b3 = _mm512_fmadd_ps(wb, x1, *b3);
}

/* y[j*ys] = Σ (row + j*st) · x over n elements, for j < R (1 or 4, a constant). */
static inline __attribute__((always_inline)) void rows_dot(lh_type t, int R, const char *row,
                                                            size_t st, const float *x, size_t n,
                                                            float *y, size_t ys)
{
    __m512 a0 = _mm512_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        rstep(t, R, row, st, x, i, ~(__mmask32)0, &a0, &b0, &a1, &b1, &a2, &b2, &a3, &b3);
    if (i < n)
        rstep(t, R, row, st, x, i, (__mmask32)(0xffffffffu >> (32 - (n - i))), &a0, &b0, &a1,
              &b1, &a2, &b2, &a3, &b3);
    y[0] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
    if (R == 1)
        return;
    y[ys] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
    y[2 * ys] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
    y[3 * ys] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
}

/* y[o] for o in [o0, o1): the quarters four rows at a time where they lie GEMV_GAP apart, the
 * rest one row at a time (the same arithmetic per row). */
static inline __attribute__((always_inline)) void rows_float(lh_type t, const char *w, size_t rs,
                                                              size_t o0, size_t o1,
                                                              const float *x, size_t n, float *y)
{
    size_t q = gemv_quarter(o0, o1, rs), o = o0;
    if (q) {
        for (; o < o0 + q; o++)
            rows_dot(t, 4, w + o * rs, q * rs, x, n, y + o, q);
        o = o0 + 4 * q;
    }
    for (; o < o1; o++)
        rows_dot(t, 1, w + o * rs, 0, x, n, y + o, 0);
}
/* one instance per type, so wstep's branches go at compile time */
static void rows_f32(const char *w, size_t rs, size_t o0, size_t o1, const float *x, size_t n,
                     float *y)
{
    rows_float(LH_TYPE_F32, w, rs, o0, o1, x, n, y);
}
static void rows_f16(const char *w, size_t rs, size_t o0, size_t o1, const float *x, size_t n,
                     float *y)
{
    rows_float(LH_TYPE_F16, w, rs, o0, o1, x, n, y);
}
static void rows_bf16(const char *w, size_t rs, size_t o0, size_t o1, const float *x, size_t n,
                      float *y)
{
    rows_float(LH_TYPE_BF16, w, rs, o0, o1, x, n, y);
}
#endif

/* ---- the decode driver: one or several GEMVs sharing x, one parallel region ------------ */

/* x as the row kernels of m's type take it: quantised to 8 bits (returned: m->xq) for the
 * quantised types, NULL (x itself) for the others. */
static const void *gemv_prep(lh_matmul *m, const float *x)
{
    if (m->xq)
        lh_q8_quant(m->wtype, x, m->xq, m->n_in);
    return m->xq;
}

/* y[o] for o in [o0, o1) of one W, x prepared by gemv_prep (of a matmul of the same type and
 * n_in). */
static void gemv_rows(lh_type t, size_t rs, const void *w, const float *x, const void *xq,
                      size_t n_in, size_t o0, size_t o1, float *y)
{
#ifdef LH_HAVE_AVX512
    const char *wc = (const char *)w;
    if (t == LH_TYPE_F32) {
        rows_f32(wc, rs, o0, o1, x, n_in, y);
        return;
    }
    if (t == LH_TYPE_F16) {
        rows_f16(wc, rs, o0, o1, x, n_in, y);
        return;
    }
    if (t == LH_TYPE_BF16) {
        rows_bf16(wc, rs, o0, o1, x, n_in, y);
        return;
    }
#endif
    /* quantised rows: four far-apart rows at a time where the type has a four-row kernel (the
     * float kernels above say why), the same bits per row.  Q8_0 decode, alternating
     * processes: 1b 38.4-40.1 -> 49.5-50.7 tok/s (0.64-0.68 -> 0.83-0.88 of the read pass),
     * and at a lower bandwidth 33.2-33.9 -> 37.1-38.6; small 293-296 -> 336-340. */
    size_t q = gemv_quarter(o0, o1, rs);
    if (xq && q &&
        lh_dot_rows4_q8(t, (const char *)w + o0 * rs, q * rs, xq, n_in, y + o0, q)) {
        for (size_t o = o0 + 1; o < o0 + q; o++)
            lh_dot_rows4_q8(t, (const char *)w + o * rs, q * rs, xq, n_in, y + o, q);
        o0 += 4 * q;
    }
    for (size_t o = o0; o < o1; o += 16) {
        size_t nr = o1 - o < 16 ? o1 - o : 16;
        if (xq)
            lh_dot_rows_q8(t, (const char *)w + o * rs, rs, xq, n_in, y + o, nr);
        else
            lh_dot_rows(t, (const char *)w + o * rs, rs, x, n_in, y + o, nr);
    }
}

/* The rows of all the matrices, taken end to end, in blocks of GEMV_BLK rows (rows of one type
 * and n_in are equal in bytes).  Threads claim runs of blocks from a shared counter, each run
 * 1/(2 x threads) of what is left (with two threads a quarter of the rows first), at least
 * GEMV_MIN_RUN blocks (256 KB of F16 at n_in 2048), so that a thread that started late or was
 * slowed (the team's wake-up, the other core's share of the memory bus, another process) takes
 * fewer rows instead of keeping the other waiting at the end of the region; each run is one
 * sequential stream, which the hardware prefetcher follows (see above).  On a loaded machine
 * (load 7-9, 1b F16 and BF16 decode) this measured the same as equal static halves; the fused
 * regions are what measured faster there (see lh_matmul_run_gemvs). */
#define GEMV_BLK 16
#define GEMV_MIN_RUN 4

static void gemv_multi(lh_matmul *const *ms, const void *const *ws, size_t n_mat, const float *x,
                       float *const *ys)
{
    const void *xq = gemv_prep(ms[0], x);
    size_t n_blk = 0, n_w = 0;
    for (size_t j = 0; j < n_mat; j++) {
        n_blk += (ms[j]->n_out + GEMV_BLK - 1) / GEMV_BLK;
        n_w += ms[j]->n_out * ms[j]->n_in;
    }
    lh_type t = ms[0]->wtype;
    size_t n_in = ms[0]->n_in, rs = ms[0]->row_size;
    atomic_size_t next;     /* the first block not yet claimed */
    atomic_init(&next, 0);
    /* small products stay on one thread: waking the team costs more than they take */
    OMP(omp parallel if (n_w >= 131072))
    {
        size_t nth = 1;
#ifdef _OPENMP
        nth = (size_t)omp_get_num_threads();
#endif
        for (;;) {
            size_t b0 = atomic_load_explicit(&next, memory_order_relaxed), run;
            do {
                if (b0 >= n_blk)
                    break;
                run = (n_blk - b0 + 2 * nth - 1) / (2 * nth);
                run = run < GEMV_MIN_RUN ? GEMV_MIN_RUN : run;
                run = run < n_blk - b0 ? run : n_blk - b0;
            } while (!atomic_compare_exchange_weak_explicit(&next, &b0, b0 + run,
                                                            memory_order_relaxed,
                                                            memory_order_relaxed));
            if (b0 >= n_blk)
                break;
            /* blocks [b0, b0 + run) may span the end of one W and the start of the next */
            size_t b1 = b0 + run, base = 0;
            for (size_t j = 0; j < n_mat && b0 < b1; j++) {
                size_t n_out = ms[j]->n_out, nb = (n_out + GEMV_BLK - 1) / GEMV_BLK;
                if (b0 < base + nb) {
                    size_t e = b1 < base + nb ? b1 : base + nb;
                    size_t o0 = (b0 - base) * GEMV_BLK, o1 = (e - base) * GEMV_BLK;
                    gemv_rows(t, rs, ws[j], x, xq, n_in, o0, o1 < n_out ? o1 : n_out,
                              ys[j]);
                    b0 = e;
                }
                base += nb;
            }
        }
    }
}

/* Inside a product's loop over groups of output rows: 1 when this group is to be skipped, the
 * poll having said stop (now, seen by the calling thread every POLL_EVERY groups of its share,
 * or earlier, seen by any thread in *stop). */
#define POLL_EVERY 4
static inline int stopped(const lh_matmul *m, int *stop, size_t g)
{
    if (__atomic_load_n(stop, __ATOMIC_RELAXED))
        return 1;
#ifdef _OPENMP
    if (omp_get_thread_num() != 0)
        return 0;
#endif
    if (m->poll && g % POLL_EVERY == 0 && m->poll(m->poll_ud)) {
        __atomic_store_n(stop, 1, __ATOMIC_RELAXED);
        return 1;
    }
    return 0;
}

void lh_matmul_set_poll(lh_matmul *m, int (*fn)(void *), void *ud)
{
    m->poll = fn;
    m->poll_ud = ud;
}

#ifdef LH_HAVE_AVX512
/* ---- the F16 prefill GEMM (AVX-512) -----------------------------------------------------------
 *
 * oneDNN 2.6 has no F16 matmul on this CPU, and converting W to F32 panels for it costs two
 * synchronisations of the thread team per panel and a repacking of x per panel.  Here one
 * parallel region does the whole product: x is transposed once into blocks of 32 tokens
 * (xpk: for each k the 32 tokens' values, one zmm pair), then each thread takes a contiguous
 * range of 12-row groups of W, converts the group's rows to F32 once (vcvtph2ps, exact) into
 * per-thread scratch laid out in chunks of GF_KC (so the 12 rows are at constant offsets from one
 * pointer), and runs the 12 x 32 register tile (24 zmm accumulators: 12 weights broadcast
 * against 32 tokens, over all of k) for every token block.  W is read once from memory; each
 * group's F32 copy (12 x n_in x 4 bytes) stays in L2 while the token blocks pass over it.
 * Every product is exact in F32 (F16 values are exact in F32); sums are F32 FMAs in k order, so
 * the result is within the float accumulation bound of the reference (1e-5 of Σ|w·x| in the
 * tests).  Padding (tokens past n_rows, rows past n_out, k past n_in) is zeros and never
 * stored. */
/* rows [o0, o0 + nr) of F16 W (nr <= 12) as F32 into wp (k_pad / KC, 12, KC), zero padded. */
static void gf_pack_w(const char *w, size_t rs, size_t nr, size_t k, size_t k_pad, float *wp)
{
    for (size_t c = 0; c < k_pad / GF_KC; c++) {
        float *wc = wp + c * GF_MR * GF_KC;
        size_t k0 = c * GF_KC;
        for (size_t r = 0; r < GF_MR; r++) {
            const uint16_t *src = (const uint16_t *)(w + (r < nr ? r : 0) * rs);
            for (size_t i = 0; i < GF_KC; i += 16) {
                size_t left = k0 + i < k ? k - k0 - i : 0;
                __mmask16 msk = r >= nr ? 0 : left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
                __m256i h = _mm256_maskz_loadu_epi16(msk, src + (msk ? k0 + i : 0));
                _mm512_store_ps(wc + r * GF_KC + i, _mm512_cvtph_ps(h));
            }
        }
    }
}

/* y[t0 + i][o0 + r] for r < nr, i < nt: the 12 x 32 tile over all k chunks. */
static void gf_tile(size_t n_chunk, const float *wp, const float *xp, float *y, size_t ldy,
                    size_t nr, size_t nt)
{
#define GF_Z(r) __m512 a##r = _mm512_setzero_ps(), b##r = a##r;
    GF_Z(0) GF_Z(1) GF_Z(2) GF_Z(3) GF_Z(4) GF_Z(5) GF_Z(6) GF_Z(7) GF_Z(8) GF_Z(9) GF_Z(10)
    GF_Z(11)
#undef GF_Z
    for (size_t c = 0; c < n_chunk; c++) {
        const float *wc = wp + c * GF_MR * GF_KC, *xc = xp + c * GF_KC * 32;
        for (size_t k = 0; k < GF_KC; k++) {
            __m512 x0 = _mm512_load_ps(xc + k * 32), x1 = _mm512_load_ps(xc + k * 32 + 16);
#define GF_R(r)                                                                               \
    {                                                                                         \
        __m512 bw = _mm512_set1_ps(wc[(r) * GF_KC + k]);                                      \
        a##r = _mm512_fmadd_ps(bw, x0, a##r);                                                 \
        b##r = _mm512_fmadd_ps(bw, x1, b##r);                                                 \
    }
            GF_R(0) GF_R(1) GF_R(2) GF_R(3) GF_R(4) GF_R(5) GF_R(6) GF_R(7) GF_R(8) GF_R(9)
            GF_R(10) GF_R(11)
#undef GF_R
        }
    }
    /* The tile goes out token by token: the nr outputs of a token are contiguous in y, one
     * masked store each (a store per output and token, strided by the row of y, measured 15% of
     * the tile's time at n_in = 768). */
    float buf[GF_MR * 32] __attribute__((aligned(64)));
#define GF_S(r)                                                                               \
    _mm512_store_ps(buf + (r) * 32, a##r);                                                    \
    _mm512_store_ps(buf + (r) * 32 + 16, b##r);
    GF_S(0) GF_S(1) GF_S(2) GF_S(3) GF_S(4) GF_S(5) GF_S(6) GF_S(7) GF_S(8) GF_S(9) GF_S(10)
    GF_S(11)
#undef GF_S
    __mmask16 km = (__mmask16)((1u << nr) - 1);
    __m512i idx = _mm512_setr_epi32(0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 0, 0,
                                    0, 0);
    for (size_t i = 0; i < nt; i++) {
        __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), km, idx, buf + i, 4);
        _mm512_mask_storeu_ps(y + i * ldy, km, v);
    }
}

/* dst[j * 32 + i] = src[i * ld + j] for 16 x 16 (rows i >= n_rows and columns outside kmask
 * give zeros and are not read): four rounds of shuffles. */
static inline void gf_tr16(const float *src, size_t ld, size_t n_rows, __mmask16 kmask, float *dst)
{
    __m512 r[16], t[16];
    for (size_t i = 0; i < 16; i++)
        r[i] = i < n_rows ? _mm512_maskz_loadu_ps(kmask, src + i * ld) : _mm512_setzero_ps();
    for (size_t i = 0; i < 16; i += 2) {   /* per 128-bit lane L: rows i, i+1 interleaved */
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (size_t g = 0; g < 16; g += 4) {   /* r[g + c], lane L: rows g..g+3 at column 4L + c */
        r[g] = _mm512_shuffle_ps(t[g], t[g + 2], 0x44);
        r[g + 1] = _mm512_shuffle_ps(t[g], t[g + 2], 0xee);
        r[g + 2] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0x44);
        r[g + 3] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0xee);
    }
    for (size_t c = 0; c < 4; c++) {       /* lanes L of r[c], r[4+c], r[8+c], r[12+c] */
        __m512 v0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);
        __m512 w0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
        __m512 v1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
        __m512 w1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
        _mm512_store_ps(dst + (0 + c) * 32, _mm512_shuffle_f32x4(v0, v1, 0x88));
        _mm512_store_ps(dst + (4 + c) * 32, _mm512_shuffle_f32x4(w0, w1, 0x88));
        _mm512_store_ps(dst + (8 + c) * 32, _mm512_shuffle_f32x4(v0, v1, 0xdd));
        _mm512_store_ps(dst + (12 + c) * 32, _mm512_shuffle_f32x4(w0, w1, 0xdd));
    }
}

static int gemm_f16(lh_matmul *m, const void *w, const float *x, size_t n_rows, float *y)
{
    int stop = 0;
    size_t k = m->n_in, n_out = m->n_out, rs = m->row_size;
    size_t k_pad = (k + GF_KC - 1) / GF_KC * GF_KC, n_chunk = k_pad / GF_KC;
    size_t n_tb = (n_rows + 31) / 32, n_grp = (n_out + GF_MR - 1) / GF_MR;
    float *xp = m->xpk;
    OMP(omp parallel num_threads(m->n_thr))
    {
        size_t tid = 0;
#ifdef _OPENMP
        tid = (size_t)omp_get_thread_num();
#endif
        /* x transposed per 32-token block: xp[(b * k_pad + kk) * 32 + i] = x[b * 32 + i][kk],
         * zeros past n_rows and n_in */
        OMP(omp for schedule(static))
        for (size_t bc = 0; bc < n_tb * n_chunk; bc++) {
            size_t b = bc / n_chunk, k0 = bc % n_chunk * GF_KC;
            size_t kn = k - k0 < GF_KC ? k - k0 : GF_KC;
            size_t nt = n_rows - b * 32 < 32 ? n_rows - b * 32 : 32;
            const float *src = x + b * 32 * k + k0;
            float *dst = xp + (b * k_pad + k0) * 32;
            /* 16 x 16 blocks transposed in registers (scalar copies measured 7% of a 3072 x 768
             * x 256 product and gathers 29% of a 256 x 2048 one) */
            for (size_t kk = 0; kk < GF_KC; kk += 16) {
                size_t left = kk < kn ? kn - kk : 0;
                __mmask16 kmask = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
                for (size_t h = 0; h < 2; h++) {
                    if (nt > h * 16 && left > 0) {
                        gf_tr16(src + h * 16 * k + kk, k, nt - h * 16, kmask,
                                dst + kk * 32 + h * 16);
                    } else {
                        for (size_t j = 0; j < 16; j++)
                            _mm512_store_ps(dst + (kk + j) * 32 + h * 16, _mm512_setzero_ps());
                    }
                }
            }
        }
        float *wp = m->wpk + tid * k_pad * GF_MR;
        OMP(omp for schedule(static))
        for (size_t g = 0; g < n_grp; g++) {
            if (stopped(m, &stop, g))
                continue;
            size_t o0 = g * GF_MR, nr = n_out - o0 < GF_MR ? n_out - o0 : GF_MR;
            gf_pack_w((const char *)w + o0 * rs, rs, nr, k, k_pad, wp);
            for (size_t b = 0; b < n_tb; b++) {
                size_t nt = n_rows - b * 32 < 32 ? n_rows - b * 32 : 32;
                gf_tile(n_chunk, wp, xp + b * k_pad * 32, y + b * 32 * n_out + o0, n_out, nr, nt);
            }
        }
    }
    return stop ? LH_MATMUL_STOPPED : 0;
}
#endif

/* Prefill for quantised weights: every activation row quantised to 8 bits once (as for the
 * GEMV).  Where the build has a panel kernel for the type (AVX-512 VNNI: every quantised
 * type), each thread unpacks 32 W rows at a time into its panel (lh_q8p_pack:
 * one byte per level, 4 levels of each of 16 rows per 64-byte line) and multiplies it with
 * every activation row of the slice (lh_q8p_gemm: one vpdpbusd per line and activation row, a
 * 32 x 4 register block, no horizontal sums); the unpacking is done once per 32 rows per call,
 * against n_rows rows of work.  Otherwise blocks of 16 W rows against ACT_BLOCK activation rows at a time with the fused
 * integer dot products (lh_gemm_q8: each W block unpacked once per four activation rows).  Both
 * are llama.cpp's own method for these types (its results carry the same 8-bit activation
 * rounding) and stream W once per call (or per ACT_BLOCK rows) instead of converting it to F32
 * for oneDNN. */
#define ACT_BLOCK 64
/* Single-thread CPU time at 2048 x 5632 (tools/kbench's shape), lh_gemm_q8 vs dequantised
 * panels through oneDNN: at 64 rows the integer path wins for every type (Q4_K 13.8 vs 36.5 ms,
 * Q6_K 13.9 vs 41.9, Q3_K 13.1 vs 41.4, Q8_0 17.6 vs 31.9, Q4_0 17.0 vs 34.8, Q5_1 19.0 vs
 * 38.2); at 512 rows the K-quants still win (Q4_K 111 vs 134, Q2_K 98 vs 134) while the 32-block
 * types lose a little (Q4_0 137 vs 133, Q5_1 153 vs 135).  But at the model level, with 256-row
 * slices on 2 threads (make bench, side by side with llama.cpp in one run), the integer path
 * won for them too: stories110M-shape Q4_0 pp512 658 -> 767 tok/s, TinyLlama-shape Q8_0 48 -> 84
 * (the panel conversion is single-pass scalar and oneDNN waits on it).  So every quantised type
 * takes an integer path. */
static int gemm_q8(const lh_matmul *m, const void *w, const float *x, size_t n_rows, float *y)
{
    int stop = 0;
    size_t n_out = m->n_out, n_in = m->n_in, rs = m->row_size, qs = m->q8_size;
    lh_type t = m->wtype;
    char *xq = m->xq;
    size_t nc = m->n_corr;
    int32_t *corr = m->xcorr;
    int panels = m->panels && n_rows >= Q8P_MIN_ROWS;
    OMP(omp parallel for schedule(static))
    for (size_t r = 0; r < n_rows; r++) {
        lh_q8_quant(t, x + r * n_in, xq + r * qs, n_in);
        if (corr && panels)
            lh_q8p_corr(t, xq + r * qs, n_in, corr + r * nc);
    }
    if (panels) {
        size_t n_grp = (n_out + LH_Q8P_ROWS - 1) / LH_Q8P_ROWS;
        OMP(omp parallel num_threads(m->n_thr))
        {
#ifdef _OPENMP
            char *panel = (char *)m->panels + (size_t)omp_get_thread_num() * m->panel_size;
#else
            char *panel = m->panels;
#endif
            OMP(omp for schedule(static))
            for (size_t g = 0; g < n_grp; g++) {
                if (stopped(m, &stop, g))
                    continue;
                size_t o = g * LH_Q8P_ROWS, nr = n_out - o < LH_Q8P_ROWS ? n_out - o : LH_Q8P_ROWS;
                lh_q8p_pack(t, (const char *)w + o * rs, rs, nr, n_in, panel);
                lh_q8p_gemm(t, panel, nr, xq, qs, corr, nc, n_rows, n_in, y + o, n_out);
            }
        }
        return stop ? LH_MATMUL_STOPPED : 0;
    }
    size_t n_blk = (n_out + 15) / 16;
    for (size_t r0 = 0; r0 < n_rows; r0 += ACT_BLOCK) {
        size_t r1 = n_rows - r0 < ACT_BLOCK ? n_rows : r0 + ACT_BLOCK;
        OMP(omp parallel for schedule(static))
        for (size_t b = 0; b < n_blk; b++) {
            size_t o = b * 16, nr = n_out - o < 16 ? n_out - o : 16;
            lh_gemm_q8(t, (const char *)w + o * rs, rs, nr, xq + r0 * qs, qs, r1 - r0, n_in,
                       y + r0 * n_out + o, n_out);
        }
    }
    return 0;
}

static int exec(lh_matmul *m, dnnl_primitive_t prim, dnnl_memory_t wmem, const void *wdata,
                dnnl_memory_t smem, dnnl_memory_t dmem, float *ydata, dnnl_memory_t spmem,
                const float *x)
{
    DNNL_CHECK(dnnl_memory_set_data_handle(wmem, (void *)wdata));
    DNNL_CHECK(dnnl_memory_set_data_handle(smem, (void *)x));
    DNNL_CHECK(dnnl_memory_set_data_handle(dmem, ydata));
    dnnl_exec_arg_t args[4] = {
        {DNNL_ARG_SRC, smem}, {DNNL_ARG_WEIGHTS, wmem}, {DNNL_ARG_DST, dmem},
        {DNNL_ARG_SCRATCHPAD, spmem},
    };
    DNNL_CHECK(dnnl_primitive_execute(prim, m->stream, spmem ? 4 : 3, args));
    DNNL_CHECK(dnnl_stream_wait(m->stream));
    return 0;
fail:
    return -EIO;
}

/* x (n values) rounded to BF16 (nearest even), split over threads: the activations of the BF16
 * prefill.  Each x_i moves by at most 2^-9 |x_i| (and values below 2^-126 flush to zero in
 * vdpbf16ps), so an output moves by at most 2^-9 Σ|w_i x_i| plus the F32 accumulation error,
 * the bound tests/test_matmul.c checks.  llama.cpp rounds its activations the same way for BF16
 * weights. */
static void round_bf16(const float *x, uint16_t *xb, size_t n)
{
#define RB_BLK 4096
    size_t n_blk = (n + RB_BLK - 1) / RB_BLK;
    OMP(omp parallel for schedule(static) if (n >= 8 * RB_BLK))
    for (size_t b = 0; b < n_blk; b++) {
        size_t i = b * RB_BLK, e = n - i < RB_BLK ? n : i + RB_BLK;
#if defined(LH_HAVE_AVX512) && defined(__AVX512BF16__)
        for (; i + 16 <= e; i += 16)
            _mm256_storeu_si256((__m256i *)(xb + i),
                                (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
#endif
        for (; i < e; i++)
            xb[i] = lh_f32_to_bf16(x[i]);
    }
#undef RB_BLK
}

/* rows [r0, r0+n) of W to F32 in the panel scratch, split over threads. */
static void convert_panel(lh_matmul *m, const void *w, size_t r0, size_t n)
{
    const char *base = (const char *)w + r0 * m->row_size;
    size_t n_in = m->n_in, rs = m->row_size;
    lh_type t = m->wtype;
    float *dst = m->wpanel;
    OMP(omp parallel for schedule(static))
    for (size_t r = 0; r < n; r++)
        lh_dequant_row(t, base + r * rs, dst + r * n_in, n_in);
}

int lh_matmul_run(lh_matmul *m, const void *w, const float *x, size_t n_rows, float *y)
{
    if (n_rows == 0)
        return 0;
    if (n_rows > m->max_rows) {
        lh_log_error("matmul: %zu rows > max_rows %zu", n_rows, m->max_rows);
        return -EINVAL;
    }
    if (n_rows == 1) {
        gemv_multi(&m, &w, 1, x, &y);
        return 0;
    }
    if (m->xq)
        return gemm_q8(m, w, x, n_rows, y);
#ifdef LH_HAVE_AVX512
    if (m->f16_gemm)
        return gemm_f16(m, w, x, n_rows, y);
#endif
    return lh_matmul_run_dnnl(m, w, x, n_rows, y);
}

int lh_matmul_run_gemvs(lh_matmul *const *ms, const void *const *ws, size_t n, const float *x,
                        float *const *ys)
{
    for (size_t j = 1; j < n; j++)
        if (ms[j]->wtype != ms[0]->wtype || ms[j]->n_in != ms[0]->n_in) {
            lh_log_error("matmul: fused GEMVs of %s x %zu and %s x %zu", lh_type_name(ms[0]->wtype),
                         ms[0]->n_in, lh_type_name(ms[j]->wtype), ms[j]->n_in);
            return -EINVAL;
        }
    if (n)
        gemv_multi(ms, ws, n, x, ys);
    return 0;
}

int lh_matmul_run_dnnl(lh_matmul *m, const void *w, const float *x, size_t n_rows, float *y)
{
    if (n_rows == 0)
        return 0;
    if (n_rows > m->max_rows) {
        lh_log_error("matmul: %zu rows > max_rows %zu", n_rows, m->max_rows);
        return -EINVAL;
    }
    int rc = 0;
    dnnl_memory_t smem = m->src_mem[n_rows];
    int fixed = n_rows == m->max_rows && m->prim_max;
    dnnl_primitive_t prim = fixed ? m->prim_max : m->prim;
    dnnl_memory_t spmem = fixed ? m->scratch_max_mem : m->scratch_mem;
    if (m->wtype == LH_TYPE_F32)
        return exec(m, prim, m->w_mem, w, smem, m->dst_mem[n_rows], y, spmem, x);
    if (m->bf16_dnnl) {
        round_bf16(x, m->xbf, n_rows * m->n_in);
        return exec(m, prim, m->w_mem, w, smem, m->dst_mem[n_rows], y, spmem,
                    (const float *)m->xbf);
    }
    for (size_t p = 0; p < m->n_panel_full && rc == 0; p++) {
        size_t r0 = p * m->panel;
        convert_panel(m, w, r0, m->panel);
        rc = exec(m, m->prim, m->w_mem, m->wpanel, smem, m->dst_mem[n_rows], y + r0,
                  m->scratch_mem, x);
    }
    if (m->tail && rc == 0) {
        size_t r0 = m->n_panel_full * m->panel;
        convert_panel(m, w, r0, m->tail);
        rc = exec(m, m->prim_tail, m->w_tail_mem, m->wpanel, smem, m->dst_tail_mem[n_rows],
                  y + r0, m->scratch_tail_mem, x);
    }
    return rc;
}
