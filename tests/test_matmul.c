/* tests/test_matmul — lh_matmul_run (GEMV and oneDNN paths, every weight type, panel edges) and
 * the small GEMMs against scalar double-accumulating references. */
#include "test.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "matmul.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static uint64_t rng = 0xd1b54a32d192ed03ull;

static float frand(float lo, float hi)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 40) * (1.0 / 16777216.0));
}

static void test_ref_values(void)
{
    /* W = [[1, 2], [3, 4], [-1, 0.5]], x = [[1, 1], [2, -1]]: y = x·Wᵀ */
    float w[6] = {1, 2, 3, 4, -1, 0.5f}, x[4] = {1, 1, 2, -1}, y[6];
    lh_matmul_ref(LH_TYPE_F32, w, x, 2, 2, 3, y);
    float e[6] = {3, 7, -0.5f, 0, 2, -2.5f};
    CU_ASSERT(memcmp(y, e, sizeof e) == 0);
}

/* One shape, one type: every n_rows in `rows` against the reference.  The tolerance is relative
 * to Σ|w·x| of each output: float accumulation (oneDNN's or ours) over n_in <= 4096 terms stays
 * far below 1e-5 of it, while a wrong element, row or panel is off by O(1) of it.
 * The decode GEMV of a quantised type multiplies 8-bit activations (as llama.cpp does): each x_i
 * is moved by at most half its block's step amax/127, so that output gets the extra bound
 * Σ_i |w_i| step_i / 2, and its float slack is taken relative to Σ (|w_i| + max|w|) |x_i| (the
 * offset and min terms are applied once per block, see tests/test_quant.c).
 * BF16 weights in prefill (and through lh_matmul_run_dnnl) go to oneDNN's bf16 matmul with x
 * rounded to BF16: each x_i moves by at most 2^-9 |x_i| (round to nearest even, 8 significant
 * bits) and the bf16 products are exact in F32, so those outputs get 2^-9 Σ|w·x| on top of the
 * float slack. */
#define BF16_X_TOL (1.0 / 512)
static void check_matmul(lh_type t, size_t n_in, size_t n_out, size_t max_rows)
{
    /* 130: past the integer prefill of the 32-block types (K-quants stay on it) */
    static const size_t rows[] = {1, 2, 3, 17, 20, 130};
    float *wf = malloc(n_out * n_in * sizeof *wf), *x = malloc(max_rows * n_in * sizeof *x);
    float *y = malloc(max_rows * n_out * sizeof *y), *yr = malloc(max_rows * n_out * sizeof *yr);
    float *wd = malloc(n_in * sizeof *wd);
    size_t rs = lh_type_row_size(t, n_in);
    char *w = malloc(n_out * rs);
    double *mag = malloc(max_rows * n_out * sizeof *mag);
    double *qtol = malloc(max_rows * n_out * sizeof *qtol);   /* the 8-bit bound, see above */
    size_t qblk = lh_q8_kind(t) == LH_Q8A_256 ? 256 : 32;
    for (size_t i = 0; i < n_out * n_in; i++)
        wf[i] = frand(-1, 1);
    for (size_t i = 0; i < max_rows * n_in; i++)
        x[i] = frand(-1, 1);
    for (size_t o = 0; o < n_out; o++)
        lh_quant_row(t, wf + o * n_in, w + o * rs, n_in);
    for (size_t o = 0; o < n_out; o++) {
        lh_dequant_row(t, w + o * rs, wd, n_in);
        for (size_t r = 0; r < max_rows; r++) {
            double m = 0;
            for (size_t i = 0; i < n_in; i++)
                m += fabs((double)wd[i] * x[r * n_in + i]);
            mag[r * n_out + o] = m;
        }
        double wmax = 0;
        for (size_t i = 0; i < n_in; i++)
            wmax = fabs(wd[i]) > wmax ? fabs(wd[i]) : wmax;
        for (size_t r = 0; r < max_rows; r++) {
            const float *xr = x + r * n_in;
            double qe = 0, m2 = 0;
            float amax = 0;
            for (size_t i = 0; i < n_in; i++) {
                if (i % qblk == 0) {   /* the activation block's amax: its step is amax/127 */
                    amax = 0;
                    for (size_t j = i; j < i + qblk && j < n_in; j++)
                        amax = fabsf(xr[j]) > amax ? fabsf(xr[j]) : amax;
                }
                /* half a step; the 32-blocks keep d at F16 (2^-11 relative, times |q| <= 127) */
                qe += fabs(wd[i]) * amax / 127 * (qblk == 32 ? 0.5 + 127.0 / 2048 : 0.5);
                m2 += (fabs(wd[i]) + wmax) * fabs(xr[i]);
            }
            if (t == LH_TYPE_Q4_1 || t == LH_TYPE_Q5_1) {
                /* + their min term's block sums at F16 (as llama.cpp): |m| <= max|w| */
                double sx = 0;
                for (size_t i = 0; i < n_in; i++)
                    sx += fabs(xr[i]);
                qe += wmax * sx * (1.0 / 2048) * 1.01;
            }
            qtol[r * n_out + o] =
                lh_q8_kind(t) ? qe * 1.001 + 1.01e-5 * m2 : 1e-5 * mag[r * n_out + o];
        }
    }
    lh_matmul *mm = NULL;
    int rc = lh_matmul_new(&mm, t, n_in, n_out, max_rows);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    for (size_t ri = 0; ri < sizeof rows / sizeof rows[0]; ri++) {
        size_t nr = rows[ri];
        if (nr > max_rows)
            continue;
        for (size_t i = 0; i < nr * n_out; i++)
            y[i] = NAN;
        CU_ASSERT_EQUAL(lh_matmul_run(mm, w, x, nr, y), 0);
        lh_matmul_ref(t, w, x, nr, n_in, n_out, yr);
        int bad = 0;
        double xtol = t == LH_TYPE_BF16 && nr > 1 ? BF16_X_TOL : 0;
        for (size_t i = 0; i < nr * n_out; i++)
            bad += !(fabs((double)y[i] - yr[i]) <= qtol[i] + xtol * mag[i] + 1e-30);
        if (bad)
            fprintf(stderr, "\n  matmul %s %zux%zu rows %zu: %d bad\n", lh_type_name(t), n_out,
                    n_in, nr, bad);
        CU_ASSERT_EQUAL(bad, 0);
        if (nr <= 2 || lh_q8_kind(t)) {
            /* the oneDNN path (F32 activations, dequantised panels) also at 1 and 2 rows (what
             * kbench compares the GEMV with) and at every row count for quantised types */
            for (size_t i = 0; i < nr * n_out; i++)
                y[i] = NAN;
            CU_ASSERT_EQUAL(lh_matmul_run_dnnl(mm, w, x, nr, y), 0);
            bad = 0;
            xtol = t == LH_TYPE_BF16 ? BF16_X_TOL : 0;
            for (size_t i = 0; i < nr * n_out; i++)
                bad += !(fabs((double)y[i] - yr[i]) <= (1e-5 + xtol) * mag[i] + 1e-30);
            CU_ASSERT_EQUAL(bad, 0);
        }
    }
    lh_matmul_free(mm);
    free(wf), free(x), free(y), free(yr), free(wd), free(w), free(mag), free(qtol);
}

static void test_matmul_f32(void)
{
    check_matmul(LH_TYPE_F32, 1, 1, 3);
    check_matmul(LH_TYPE_F32, 3, 17, 20);
    check_matmul(LH_TYPE_F32, 17, 257, 20);
    check_matmul(LH_TYPE_F32, 257, 3, 20);
    check_matmul(LH_TYPE_F32, 64, 64, 1);   /* decode-only object */
}

/* n_in = 4096 makes a panel 128 rows, so n_out = 257 is two panels and a 1-row tail (the oneDNN
 * path, lh_matmul_run_dnnl); F16 prefill itself is gemm_f16 where there is AVX-512. */
static void test_matmul_f16(void)
{
    check_matmul(LH_TYPE_F16, 17, 3, 20);
    check_matmul(LH_TYPE_F16, 257, 17, 20);
    check_matmul(LH_TYPE_F16, 4096, 257, 17);
    check_matmul(LH_TYPE_F16, 257, 37, 130);   /* prefill GEMM: 5 token blocks, 12-row groups */
}

static void test_matmul_bf16(void)
{
    check_matmul(LH_TYPE_BF16, 3, 1, 3);
    check_matmul(LH_TYPE_BF16, 257, 17, 20);
    check_matmul(LH_TYPE_BF16, 4096, 257, 17);
}

/* The decode GEMV of the float types (kernels/matmul.c rows_dot: 32 elements a step, then one
 * masked tail step, 16-bit weights 16 per masked load; four rows at a time where the quarters of
 * a thread's piece of rows lie GEMV_GAP apart, one at a time otherwise): every tail length class
 * around the step sizes, n_out not a multiple of the 16-row blocks (single rows), and two shapes
 * on the thread team whose runs (64 rows and more) go four rows at a time, with a tail and rows
 * left over. */
static void test_matmul_gemv_tails(void)
{
    static const size_t n_ins[] = {1, 2, 15, 16, 31, 32, 33, 63, 64, 65, 95, 96, 97, 130, 160};
    static const lh_type types[] = {LH_TYPE_F32, LH_TYPE_F16, LH_TYPE_BF16};
    for (size_t t = 0; t < 3; t++) {
        for (size_t i = 0; i < sizeof n_ins / sizeof n_ins[0]; i++)
            check_matmul(types[t], n_ins[i], 19, 1);
        check_matmul(types[t], 2079, 67, 1);   /* 2079 * 67 >= the team threshold */
        check_matmul(types[t], 4097, 259, 1);
    }
}

/* The F16 decode GEMV's conversion: every F16 value but NaNs, each alone in its row at a position
 * that walks every lane of the 32-value steps and the tail (n_in = 50), against x = 1, on the
 * thread team four rows at a time: y must be the value exactly (lh_f16_to_f32), Inf, subnormals,
 * signed zeros included; and one row with a NaN gives a NaN. */
static void test_matmul_f16_values(void)
{
    const size_t n_in = 50, n_out = 65536;
    uint16_t *w = calloc(n_out * n_in, sizeof *w);
    float *x = malloc(n_in * sizeof *x), *y = malloc(n_out * sizeof *y);
    CU_ASSERT_FATAL(w && x && y);
    for (size_t i = 0; i < n_in; i++)
        x[i] = 1;
    for (size_t o = 0; o < n_out; o++) {
        uint16_t h = (uint16_t)o;
        int nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        w[o * n_in + o % n_in] = nan && o != 0x7e00 ? 0 : h; /* one NaN row: 0x7e00 */
    }
    lh_matmul *mm = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_matmul_new(&mm, LH_TYPE_F16, n_in, n_out, 1), 0);
    CU_ASSERT_EQUAL(lh_matmul_run(mm, w, x, 1, y), 0);
    size_t bad = 0;
    for (size_t o = 0; o < n_out; o++) {
        float want = lh_f16_to_f32(w[o * n_in + o % n_in]);
        int ok = o == 0x7e00 ? isnan(y[o]) : memcmp(&y[o], &want, sizeof want) == 0 ||
                 (want == 0 && y[o] == 0); /* -0 + 0 sums to +0 */
        if (!ok && bad++ < 4)
            fprintf(stderr, "\n  f16 %04zx: got %a want %a", o, y[o], want);
    }
    CU_ASSERT_EQUAL(bad, 0);
    lh_matmul_free(mm);
    free(w), free(x), free(y);
}

/* The F16 decode GEMV with an x near the top of F32's range (|x| = 1e22: an earlier kernel
 * scaled x by 2^56 and had to notice that): the reference's finite result, not an Inf. */
static void test_matmul_f16_big_x(void)
{
    const size_t n_in = 96, n_out = 40;
    uint16_t *w = malloc(n_out * n_in * sizeof *w);
    float *x = malloc(n_in * sizeof *x), *y = malloc(n_out * sizeof *y), *yr = malloc(n_out * sizeof *yr);
    float *row = malloc(n_in * sizeof *row);
    CU_ASSERT_FATAL(w && x && y && yr && row);
    for (size_t o = 0; o < n_out; o++) {
        for (size_t i = 0; i < n_in; i++)
            row[i] = frand(-1, 1);
        lh_quant_row(LH_TYPE_F16, row, w + o * n_in, n_in);
    }
    for (size_t i = 0; i < n_in; i++)
        x[i] = frand(-1, 1);
    x[7] = 1e22f;
    lh_matmul *mm = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_matmul_new(&mm, LH_TYPE_F16, n_in, n_out, 1), 0);
    CU_ASSERT_EQUAL(lh_matmul_run(mm, w, x, 1, y), 0);
    lh_matmul_ref(LH_TYPE_F16, w, x, 1, n_in, n_out, yr);
    size_t bad = 0;
    for (size_t o = 0; o < n_out; o++)
        bad += !isfinite(y[o]) || fabsf(y[o] - yr[o]) > 1e-5f * fabsf(yr[o]);
    CU_ASSERT_EQUAL(bad, 0);
    lh_matmul_free(mm);
    free(w), free(x), free(y), free(yr), free(row);
}

static void test_matmul_q8_0(void)
{
    check_matmul(LH_TYPE_Q8_0, 32, 1, 3);
    check_matmul(LH_TYPE_Q8_0, 96, 17, 20);
    check_matmul(LH_TYPE_Q8_0, 288, 257, 20);
    check_matmul(LH_TYPE_Q8_0, 4096, 257, 17);
}

/* Every other quantised type: the fused GEMV (1 row) and the panel-dequantising oneDNN path at
 * odd row counts; n_in = 2560 makes a panel 192 rows, so n_out = 257 is a panel and a 65-row tail. */
static void test_matmul_quant(void)
{
    static const lh_type legacy[] = {LH_TYPE_Q4_0, LH_TYPE_Q4_1, LH_TYPE_Q5_0, LH_TYPE_Q5_1,
                                     LH_TYPE_IQ4_NL};
    static const lh_type kq[] = {LH_TYPE_Q2_K, LH_TYPE_Q3_K, LH_TYPE_Q4_K, LH_TYPE_Q5_K,
                                 LH_TYPE_Q6_K};
    for (size_t i = 0; i < 5; i++) {
        check_matmul(legacy[i], 32, 1, 3);
        check_matmul(legacy[i], 96, 17, 130);
        check_matmul(legacy[i], 2560, 257, 17);
    }
    for (size_t i = 0; i < 5; i++) {
        check_matmul(kq[i], 256, 3, 130);
        check_matmul(kq[i], 768, 17, 20);
        check_matmul(kq[i], 2560, 257, 17);
    }
}

/* lh_matmul_run_gemvs: several matrices sharing x in one parallel region (decode's Q/K/V and
 * gate/up).  Each output must equal, bit for bit, what lh_matmul_run gives for that matrix alone
 * (the same row kernels; the threads' runs of rows may span two matrices), and for the float
 * types lie within the float bound of the reference (1e-5 of Σ|w·x|).  n_out 1, 17, 33 (single
 * thread: under the team threshold) and 33, 1, 97 (the team; runs of 4 blocks cross both
 * boundaries); n_in 2048 + one activation block. */
static void check_gemvs(lh_type t, size_t n_in, const size_t n_out[3])
{
    size_t rs = lh_type_row_size(t, n_in), tot = n_out[0] + n_out[1] + n_out[2];
    float *wf = malloc(n_in * sizeof *wf), *x = malloc(n_in * sizeof *x);
    float *wd = malloc(n_in * sizeof *wd), *y = malloc(tot * sizeof *y);
    float *y1 = malloc(tot * sizeof *y1), *yr = malloc(tot * sizeof *yr);
    char *w = malloc(tot * rs);
    for (size_t i = 0; i < n_in; i++)
        x[i] = frand(-1, 1);
    for (size_t o = 0; o < tot; o++) {
        for (size_t i = 0; i < n_in; i++)
            wf[i] = frand(-1, 1);
        lh_quant_row(t, wf, w + o * rs, n_in);
    }
    lh_matmul *ms[3] = {NULL, NULL, NULL};
    const void *ws[3];
    float *ys[3];
    for (size_t j = 0, off = 0; j < 3; off += n_out[j], j++) {
        CU_ASSERT_EQUAL_FATAL(lh_matmul_new(&ms[j], t, n_in, n_out[j], 1), 0);
        ws[j] = w + off * rs;
        ys[j] = y + off;
        CU_ASSERT_EQUAL(lh_matmul_run(ms[j], ws[j], x, 1, y1 + off), 0);
        lh_matmul_ref(t, ws[j], x, 1, n_in, n_out[j], yr + off);
    }
    for (size_t i = 0; i < tot; i++)
        y[i] = NAN;
    CU_ASSERT_EQUAL(lh_matmul_run_gemvs(ms, ws, 3, x, ys), 0);
    int bad = 0, far = 0;
    for (size_t o = 0; o < tot; o++) {
        bad += memcmp(&y[o], &y1[o], sizeof y[o]) != 0;
        if (!lh_q8_kind(t)) {
            lh_dequant_row(t, w + o * rs, wd, n_in);
            double mag = 0;
            for (size_t i = 0; i < n_in; i++)
                mag += fabs((double)wd[i] * x[i]);
            far += !(fabs((double)y[o] - yr[o]) <= 1e-5 * mag + 1e-30);
        }
    }
    if (bad || far)
        fprintf(stderr, "\n  gemvs %s n_in %zu n_out %zu/%zu/%zu: %d differ from single runs, "
                "%d outside the bound\n", lh_type_name(t), n_in, n_out[0], n_out[1], n_out[2],
                bad, far);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(far, 0);
    for (size_t j = 0; j < 3; j++)
        lh_matmul_free(ms[j]);
    free(wf), free(x), free(wd), free(w), free(y), free(y1), free(yr);
}

static void test_matmul_gemvs(void)
{
    static const size_t small[3] = {1, 17, 33}, team[3] = {33, 1, 97};
    static const lh_type types[] = {LH_TYPE_F32, LH_TYPE_F16, LH_TYPE_BF16, LH_TYPE_Q8_0,
                                    LH_TYPE_Q4_0, LH_TYPE_Q4_K, LH_TYPE_Q6_K};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        size_t n_in = 2048 + lh_type_block(types[i]) * (lh_type_block(types[i]) == 1 ? 32 : 1);
        check_gemvs(types[i], n_in, small);
        check_gemvs(types[i], n_in, team);
    }
    /* the float kernels' 32-element masked tail too */
    check_gemvs(LH_TYPE_F16, 2048 + 17, team);
    check_gemvs(LH_TYPE_BF16, 2048 + 17, team);
    /* matrices of different types or n_in cannot share one prepared x */
    lh_matmul *ms[2] = {NULL, NULL};
    CU_ASSERT_EQUAL_FATAL(lh_matmul_new(&ms[0], LH_TYPE_F16, 64, 4, 1), 0);
    CU_ASSERT_EQUAL_FATAL(lh_matmul_new(&ms[1], LH_TYPE_F32, 64, 4, 1), 0);
    uint16_t w0[256] = {0};
    float w1[256] = {0}, x[64] = {0}, y0[4], y1[4];
    const void *ws[2] = {w0, w1};
    float *ys[2] = {y0, y1};
    CU_ASSERT_EQUAL(lh_matmul_run_gemvs(ms, ws, 2, x, ys), -EINVAL);
    lh_matmul_free(ms[0]), lh_matmul_free(ms[1]);
}

static void test_matmul_errors(void)
{
    lh_matmul *m = (lh_matmul *)1;
    CU_ASSERT_EQUAL(lh_matmul_new(&m, LH_TYPE_Q8_0, 33, 4, 4), -EINVAL);   /* not whole blocks */
    CU_ASSERT_PTR_NULL(m);
    CU_ASSERT_EQUAL(lh_matmul_new(&m, LH_TYPE_Q4_K, 32, 4, 4), -EINVAL);  /* not a super-block */
    CU_ASSERT_EQUAL(lh_matmul_new(&m, (lh_type)23, 256, 4, 4), -EINVAL);  /* IQ4_XS: not read */
    CU_ASSERT_EQUAL(lh_matmul_new(&m, LH_TYPE_F32, 0, 4, 4), -EINVAL);
    CU_ASSERT_EQUAL_FATAL(lh_matmul_new(&m, LH_TYPE_F32, 8, 4, 4), 0);
    float w[32] = {0}, x[40] = {0}, y[20];
    CU_ASSERT_EQUAL(lh_matmul_run(m, w, x, 5, y), -EINVAL);
    lh_matmul_free(m);
    lh_matmul_free(NULL);
}

/* C = A·Bᵀ / A·B in double, honouring beta and strides. */
static void gemm_ref(int nt, size_t m, size_t n, size_t k, const float *a, size_t lda,
                     const float *b, size_t ldb, float *c, size_t ldc, float beta, double *mag)
{
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0, g = 0;
            for (size_t p = 0; p < k; p++) {
                double t = (double)a[i * lda + p] * (nt ? b[j * ldb + p] : b[p * ldb + j]);
                s += t;
                g += fabs(t);
            }
            c[i * ldc + j] = (float)(beta != 0 ? c[i * ldc + j] + s : s);
            mag[i * n + j] = g + (beta != 0 ? fabs(c[i * ldc + j]) : 0);
        }
}

/* What check_gemm runs: 0 the hand-written lh_gemm_nt/nn, 1 lh_gemm_dnnl_run (oneDNN matmul,
 * runtime shapes), 2 lh_gemm_sgemm (dnnl_sgemm). */
static int gemm_impl;
static lh_gemm_dnnl *gemm_dnnl;

static void check_gemm(int nt, size_t m, size_t n, size_t k, float beta)
{
    /* padded leading dimensions, so a kernel that assumes packed rows fails */
    size_t lda = k + 3, ldb = (nt ? k : n) + 5, ldc = n + 2;
    size_t brows = nt ? n : k;
    float *a = malloc((m * lda + 1) * sizeof *a), *b = malloc((brows * ldb + 1) * sizeof *b);
    float *c = malloc(m * ldc * sizeof *c), *cr = malloc(m * ldc * sizeof *cr);
    double *mag = malloc((m * n + 1) * sizeof *mag);
    for (size_t i = 0; i < m * lda; i++)
        a[i] = frand(-1, 1);
    for (size_t i = 0; i < brows * ldb; i++)
        b[i] = frand(-1, 1);
    for (size_t i = 0; i < m * ldc; i++)
        c[i] = cr[i] = beta != 0 ? frand(-1, 1) : NAN;   /* beta 0 must not read C */
    if (gemm_impl == 1) {
        CU_ASSERT_EQUAL(lh_gemm_dnnl_run(gemm_dnnl, nt, m, n, k, a, lda, b, ldb, c, ldc, beta), 0);
    } else if (gemm_impl == 2) {
        CU_ASSERT_EQUAL(lh_gemm_sgemm(nt, m, n, k, a, lda, b, ldb, c, ldc, beta), 0);
    } else if (nt)
        lh_gemm_nt(m, n, k, a, lda, b, ldb, c, ldc, beta);
    else
        lh_gemm_nn(m, n, k, a, lda, b, ldb, c, ldc, beta);
    gemm_ref(nt, m, n, k, a, lda, b, ldb, cr, ldc, beta, mag);
    int bad = 0;
    for (size_t i = 0; i < m; i++) {
        for (size_t j = 0; j < n; j++)
            /* float sums of k <= 300 products: < 1e-5 of Σ|a·b| */
            bad += !(fabs((double)c[i * ldc + j] - cr[i * ldc + j]) <= 1e-5 * mag[i * n + j] + 1e-30);
        for (size_t j = n; j < ldc; j++)   /* the padding between rows is untouched */
            bad += !(isnan(c[i * ldc + j]) ? isnan(cr[i * ldc + j]) : c[i * ldc + j] == cr[i * ldc + j]);
    }
    if (bad)
        fprintf(stderr, "\n  gemm_%s (impl %d) m %zu n %zu k %zu beta %g: %d bad\n",
                nt ? "nt" : "nn", gemm_impl, m, n, k, beta, bad);
    CU_ASSERT_EQUAL(bad, 0);
    free(a), free(b), free(c), free(cr), free(mag);
}

static void test_gemm(void)
{
    static const size_t d[] = {1, 3, 17, 257};
    for (int nt = 0; nt < 2; nt++)
        for (size_t i = 0; i < 4; i++)
            for (size_t j = 0; j < 4; j++)
                for (size_t l = 0; l < 4; l++) {
                    check_gemm(nt, d[i], d[j], d[l], 0);
                    if ((i + j + l) % 2 == 0)
                        check_gemm(nt, d[i], d[j], d[l], 1);
                }
    /* attention-like shapes: 16 queries × 64 keys × head_dim 128 and P·V */
    check_gemm(1, 16, 64, 128, 0);
    check_gemm(0, 16, 128, 64, 1);
    check_gemm(0, 5, 64, 300, 0);   /* k over the nn k-slice (256) */
}

/* The oneDNN versions of the per-head products (issue 13's measurement) on the same cases, and
 * the fixed-shape lh_headmm at every m against the reference. */
static void test_gemm_dnnl(void)
{
#ifdef _OPENMP
    /* lh_gemm_nt/nn themselves hand 16+ rows to dnnl_sgemm where it stays single-threaded: inside
     * an active parallel region (attention's) or with one thread, as here */
    int nt_save = omp_get_max_threads();
    omp_set_num_threads(1);
    test_gemm();
    omp_set_num_threads(nt_save);
#endif
    CU_ASSERT_FATAL(lh_gemm_dnnl_new(&gemm_dnnl) == 0);
    for (gemm_impl = 1; gemm_impl <= 2; gemm_impl++)
        test_gemm();
    gemm_impl = 0;
    lh_gemm_dnnl_free(gemm_dnnl);
    gemm_dnnl = NULL;
    lh_gemm_dnnl_free(NULL);

    /* LongHeads' full-chunk products: scores (m, 64) = Q (m, 17) Kᵀ; P·V (m, 17) += P (m, 64) V */
    for (int nt = 0; nt < 2; nt++) {
        size_t n = nt ? 64 : 17, k = nt ? 17 : 64, lda = k + 3, ldb = (nt ? k : n) + 1, ldc = n + 2;
        float beta = nt ? 0.0f : 1.0f;
        lh_headmm *h;
        CU_ASSERT_FATAL(lh_headmm_new(&h, nt, 7, n, k, lda, ldb, ldc, beta) == 0);
        size_t brows = nt ? n : k;
        float *a = malloc(7 * lda * sizeof *a), *b = malloc(brows * ldb * sizeof *b);
        float *c = malloc(7 * ldc * sizeof *c), *cr = malloc(7 * ldc * sizeof *cr);
        double *mag = malloc(7 * n * sizeof *mag);
        for (size_t i = 0; i < 7 * lda; i++)
            a[i] = frand(-1, 1);
        for (size_t i = 0; i < brows * ldb; i++)
            b[i] = frand(-1, 1);
        for (size_t m = 1; m <= 7; m += 3) {
            for (size_t i = 0; i < 7 * ldc; i++)
                c[i] = cr[i] = frand(-1, 1);
            CU_ASSERT_EQUAL(lh_headmm_run(h, m, a, b, c), 0);
            gemm_ref(nt, m, n, k, a, lda, b, ldb, cr, ldc, beta, mag);
            int bad = 0;
            for (size_t i = 0; i < 7; i++)
                for (size_t j = 0; j < ldc; j++) {
                    double e = fabs((double)c[i * ldc + j] - cr[i * ldc + j]);
                    /* rows past m and the padding are untouched */
                    bad += i < m && j < n ? !(e <= 1e-5 * mag[i * n + j] + 1e-30) : e != 0;
                }
            CU_ASSERT_EQUAL(bad, 0);
        }
        CU_ASSERT_EQUAL(lh_headmm_run(h, 8, a, b, c), -EINVAL);   /* over max_m */
        lh_headmm_free(h);
        free(a), free(b), free(c), free(cr), free(mag);
    }
    lh_headmm_free(NULL);
}

void lh_test_matmul(void)
{
    CU_pSuite s = CU_add_suite("matmul", NULL, NULL);
    CU_add_test(s, "reference values", test_ref_values);
    CU_add_test(s, "F32", test_matmul_f32);
    CU_add_test(s, "F16 (panels + tail)", test_matmul_f16);
    CU_add_test(s, "BF16 (panels + tail)", test_matmul_bf16);
    CU_add_test(s, "F32/F16/BF16 decode GEMV (every n_in tail)", test_matmul_gemv_tails);
    CU_add_test(s, "F16 decode GEMV: every F16 value converted exactly", test_matmul_f16_values);
    CU_add_test(s, "F16 decode GEMV: x near the top of F32's range", test_matmul_f16_big_x);
    CU_add_test(s, "fused decode GEMVs sharing x (lh_matmul_run_gemvs)", test_matmul_gemvs);
    CU_add_test(s, "Q8_0 (panels + tail)", test_matmul_q8_0);
    CU_add_test(s, "Q4_0 .. Q5_1, Q2_K .. Q6_K, IQ4_NL (GEMV, panels + tail)", test_matmul_quant);
    CU_add_test(s, "errors", test_matmul_errors);
    CU_add_test(s, "gemm nt/nn", test_gemm);
    CU_add_test(s, "gemm nt/nn through oneDNN", test_gemm_dnnl);
}
