/* kernels/matmul — y = x · Wᵀ with the weight W kept in its file type.
 *
 * W is (n_out, n_in): n_out rows of n_in elements of type `wtype` (ggml's layout: a GGUF 2-D
 * tensor with dims [ne0=n_in, ne1=n_out]). x is (n_rows, n_in) F32, y is (n_rows, n_out) F32.
 *
 * This is the only module that includes dnnl.h. A lh_matmul is created once per weight shape
 * (at model load) and reused for every call: the oneDNN primitive, its memory descriptors and any
 * scratch for converting W panels to F32 are made in lh_matmul_new, never during lh_matmul_run.
 * n_rows == 1 (decode) takes a hand-written GEMV over the rows of W (OpenMP over outputs);
 * n_rows > 1 (prefill) goes through oneDNN for F32 and BF16 W and through a hand-written blocked
 * GEMM for F16 W; quantised W (every other type) takes integer kernels at any n_rows (prefill:
 * 32-row interleaved panels unpacked per call, lh_q8p_*, where the build has AVX-512 VNNI and a
 * kernel for the type; otherwise the GEMV's kernels, four activation rows at a time).
 * BF16 W in prefill (and in lh_matmul_run_dnnl) multiplies x rounded to BF16 where the CPU has
 * AVX512_BF16 (oneDNN's bf16 matmul, as llama.cpp does): y moves by at most 2^-9 Σ|w_i·x_i|
 * beyond the F32 accumulation error.  F32/F16 W and every decode of a float type are exact
 * products with F32 sums.  The integer paths multiply x rounded to 8
 * bits per value (scale per 32 or 256 values), as llama.cpp does: y differs from the F32 product
 * by at most Σ|w_i|·step_i/2.  lh_matmul_run must be called from serial code (oneDNN and the
 * GEMV open their own parallel regions).
 * lh_matmul_ref is the plain scalar reference the tests compare against.
 */
#ifndef LH_MATMUL_H
#define LH_MATMUL_H

#include <stddef.h>
#include "quant.h"

typedef struct lh_matmul lh_matmul;

/* max_rows: the largest n_rows ever passed to lh_matmul_run. Returns 0, -ENOMEM, -EINVAL,
 * or LH_E_FORMAT-style positive codes are not used here: unsupported types give -EINVAL. */
int lh_matmul_new(lh_matmul **mp, lh_type wtype, size_t n_in, size_t n_out, size_t max_rows);
void lh_matmul_free(lh_matmul *m);
/* y (n_rows, n_out) = x (n_rows, n_in) · Wᵀ.  n_rows <= max_rows. Returns 0, -EIO on a
 * oneDNN failure (logged once), or LH_MATMUL_STOPPED when the poll (lh_matmul_set_poll) stopped
 * it: y then partly written. No allocation. */
int lh_matmul_run(lh_matmul *m, const void *w, const float *x, size_t n_rows, float *y);

/* A poll for long products: with n_rows > 1 our own GEMMs (F16 weights, and the quantised types
 * from 16 rows) call fn(ud) from the calling thread between groups of output rows (every few
 * milliseconds of work on a 1B model), and when it returns non-zero every thread skips the
 * groups left and lh_matmul_run returns LH_MATMUL_STOPPED.  oneDNN's products (F32, BF16) and
 * the GEMV run whole.  fn NULL (the default): never.  For cancelling a prefill within a product
 * instead of after it. */
#define LH_MATMUL_STOPPED 1
void lh_matmul_set_poll(lh_matmul *m, int (*fn)(void *), void *ud);

/* Decode of several matrices that share one activation row: ys[j] (n_out of ms[j]) = x (n_in) ·
 * W_jᵀ with W_j = ws[j], for j < n, as n calls of lh_matmul_run with n_rows 1 would give them
 * (the same kernels, bit for bit), but in one parallel region: one wake-up and one barrier of the
 * thread team instead of n, the threads' shares taken over all the rows (Q, K and V of a layer;
 * gate and up).  Every ms[j] has the same weight type and n_in (else -EINVAL, logged).  The
 * scratch of ms[0] serves all of them.  Returns 0 or -EINVAL; no allocation. */
int lh_matmul_run_gemvs(lh_matmul *const *ms, const void *const *ws, size_t n, const float *x,
                        float *const *ys);

/* The oneDNN path for any n_rows (1 included), bypassing the GEMV: what lh_matmul_run does for
 * n_rows > 1 with F32 and BF16 W (F16 and quantised W take hand-written GEMMs there; here they
 * go through dequantised F32 panels).  For benchmarks and tests that compare the paths. */
int lh_matmul_run_dnnl(lh_matmul *m, const void *w, const float *x, size_t n_rows, float *y);

/* Scalar reference: same contract, no oneDNN, no OpenMP, double accumulation. */
void lh_matmul_ref(lh_type wtype, const void *w, const float *x, size_t n_rows, size_t n_in,
                   size_t n_out, float *y);

/* Plain F32 C (m, n) = A (m, k) · Bᵀ where B is (n, k), both row-major with leading dimensions
 * lda, ldb, ldc; beta 0 or 1 (C += when 1).  Used by attention kernels for QKᵀ-style products on
 * small gathered blocks; a blocked, vectorised loop, safe to call inside a parallel region. */
void lh_gemm_nt(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b,
                size_t ldb, float *c, size_t ldc, float beta);
/* C (m, n) (+)= A (m, k) · B (k, n), row-major; same rules as lh_gemm_nt. */
void lh_gemm_nn(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b,
                size_t ldb, float *c, size_t ldc, float beta);

/* ---- the same products through oneDNN (issue 13: "each head's attention through oneDNN") ----
 * Measured against lh_gemm_nt / lh_gemm_nn by `longheads-kbench headmm` on LongHeads' per-head
 * shapes; the hand-written kernels above stay where they win (see kernels/matmul.c for the
 * figures).  Every object below is used by one thread at a time: make one per thread.  Inside our
 * own parallel region oneDNN runs single-threaded (it sees omp_in_parallel()).
 *
 * lh_gemm_dnnl: any shape.  Four matmul primitives (Bᵀ or B, beta 0 or 1) with every dimension
 * and stride a runtime value, created once at _new; each call makes (and frees) the three memory
 * objects its shape needs, which oneDNN's C API requires for runtime shapes. */
typedef struct lh_gemm_dnnl lh_gemm_dnnl;
int lh_gemm_dnnl_new(lh_gemm_dnnl **gp);
void lh_gemm_dnnl_free(lh_gemm_dnnl *g);
/* lh_gemm_nt (nt != 0) or lh_gemm_nn (nt == 0) through oneDNN; beta 0 or 1.  0 or -EIO/-ENOMEM. */
int lh_gemm_dnnl_run(lh_gemm_dnnl *g, int nt, size_t m, size_t n, size_t k, const float *a,
                     size_t lda, const float *b, size_t ldb, float *c, size_t ldc, float beta);
/* The same through dnnl_sgemm (oneDNN's BLAS-like entry point, no primitive). */
int lh_gemm_sgemm(int nt, size_t m, size_t n, size_t k, const float *a, size_t lda,
                  const float *b, size_t ldb, float *c, size_t ldc, float beta);

/* lh_headmm: one shape class, C (m, n) (+)= A (m, k) · op(B) with n, k, the leading dimensions and
 * beta fixed at _new and m (1 .. max_m) at run time: one primitive and one set of memory objects
 * per m made at _new, so _run allocates nothing (LongHeads' full chunks: n = w keys, k = d). */
typedef struct lh_headmm lh_headmm;
int lh_headmm_new(lh_headmm **hp, int nt, size_t max_m, size_t n, size_t k, size_t lda,
                  size_t ldb, size_t ldc, float beta);
void lh_headmm_free(lh_headmm *h);
int lh_headmm_run(lh_headmm *h, size_t m, const float *a, const float *b, float *c);

#endif
