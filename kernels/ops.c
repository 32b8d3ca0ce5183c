/* kernels/ops — see ops.h.
 *
 * Each optimised op is the scalar reference's arithmetic reordered for 8-lane AVX2 (sums are
 * accumulated in 8 partial sums, so results differ from the reference by float rounding only);
 * without AVX2 the optimised entry points run the same scalar loops.  RoPE angles are computed in
 * double: at positions near 128k a float angle would already be off by ~0.01 rad.
 */
#include "ops.h"

#include <math.h>
#include <stdint.h>

#include "simd.h"

/* Below this many floats of work an op stays on the calling thread: a parallel region costs a few
 * microseconds, more than a decode-sized row takes. */
#define PAR_MIN 65536

/* ---- RMSNorm ------------------------------------------------------------------------------ */

void lh_ops_rmsnorm_ref(float *out, const float *x, const float *w, size_t n_rows, size_t n, float eps)
{
    for (size_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * n;
        float *o = out + r * n;
        double ss = 0;
        for (size_t i = 0; i < n; i++)
            ss += (double)xr[i] * xr[i];
        float scale = (float)(1.0 / sqrt(ss / (double)(n ? n : 1) + eps));
        for (size_t i = 0; i < n; i++)
            o[i] = xr[i] * scale * w[i];
    }
}

static void rmsnorm_row(float *o, const float *x, const float *w, size_t n, float eps)
{
    size_t i = 0;
    float ss = 0;
#ifdef LH_HAVE_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
        a0 = _mm256_fmadd_ps(v0, v0, a0);
        a1 = _mm256_fmadd_ps(v1, v1, a1);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 v0 = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(v0, v0, a0);
    }
    ss = lh_hsum256(_mm256_add_ps(a0, a1));
#endif
    for (; i < n; i++)
        ss += x[i] * x[i];
    float scale = 1.0f / sqrtf(ss / (float)(n ? n : 1) + eps);
    i = 0;
#ifdef LH_HAVE_AVX2
    __m256 vs = _mm256_set1_ps(scale);
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs),
                                              _mm256_loadu_ps(w + i)));
#endif
    for (; i < n; i++)
        o[i] = x[i] * scale * w[i];
}

void lh_ops_rmsnorm(float *out, const float *x, const float *w, size_t n_rows, size_t n, float eps)
{
    OMP(omp parallel for schedule(static) if (n_rows > 1 && n_rows * n >= PAR_MIN))
    for (size_t r = 0; r < n_rows; r++)
        rmsnorm_row(out + r * n, x + r * n, w, n, eps);
}

/* ---- RoPE --------------------------------------------------------------------------------- */

lh_rope lh_ops_rope_plain(float base)
{
    return (lh_rope){ .base = base, .freq_scale = 1.0f, .freq_factors = NULL, .ext_factor = 0.0f,
                      .attn_factor = 1.0f, .beta_fast = 32.0f, .beta_slow = 1.0f, .n_ctx_orig = 0 };
}

/* The pair whose frequency turns it n_turns times over n_ctx_orig positions, as a real index:
 * solve n_ctx_orig * base^(-2i/n_rot) = 2 pi n_turns for i. */
static double yarn_pair(size_t n_rot, size_t n_ctx_orig, double n_turns, double base)
{
    return (double)n_rot * log((double)n_ctx_orig / (n_turns * 2 * M_PI)) / (2 * log(base));
}

/* YaRN's weight of extrapolation for pair i: 1 up to pair lo, 0 from pair hi on, linear between. */
static double yarn_ramp(const lh_rope *r, size_t n_rot, size_t i)
{
    double lo = floor(yarn_pair(n_rot, r->n_ctx_orig, r->beta_fast, r->base));
    double hi = ceil(yarn_pair(n_rot, r->n_ctx_orig, r->beta_slow, r->base));
    lo = lo > 0 ? lo : 0;
    hi = hi < (double)n_rot - 1 ? hi : (double)n_rot - 1;
    double y = ((double)i - lo) / (hi - lo > 0.001 ? hi - lo : 0.001);
    y = y < 0 ? 0 : y > 1 ? 1 : y;
    return 1 - y;
}

double lh_ops_rope_theta(const lh_rope *r, size_t n_rot, size_t i)
{
    double th = pow((double)r->base, -(double)(2 * i) / (double)n_rot);
    if (r->freq_factors)
        th /= (double)r->freq_factors[i];
    double mix = r->ext_factor != 0.0f ? r->ext_factor * yarn_ramp(r, n_rot, i) : 0.0;
    return th * ((double)r->freq_scale * (1 - mix) + mix);
}

float lh_ops_rope_mscale(const lh_rope *r)
{
    double m = r->attn_factor;
    if (r->ext_factor != 0.0f)
        m *= 1.0 + 0.1 * log(1.0 / (double)r->freq_scale);
    return (float)m;
}

void lh_ops_rope_ref(float *x, size_t n_head, size_t head_dim, size_t n_rot, double pos,
                     const lh_rope *r)
{
    for (size_t h = 0; h < n_head; h++) {
        float *xh = x + h * head_dim;
        for (size_t i = 0; 2 * i + 1 < n_rot && 2 * i + 1 < head_dim; i++) {
            double ff = r->freq_factors ? r->freq_factors[i] : 1.0;
            double extrap = pos * pow((double)r->base, -2.0 * (double)i / (double)n_rot) / ff;
            double interp = extrap * r->freq_scale, th = interp, ms = r->attn_factor;
            if (r->ext_factor != 0.0f) {
                double mix = yarn_ramp(r, n_rot, i) * r->ext_factor;
                th = interp * (1 - mix) + extrap * mix;
                ms *= 1.0 + 0.1 * log(1.0 / r->freq_scale);
            }
            double c = cos(th) * ms, s = sin(th) * ms;
            double x0 = xh[2 * i], x1 = xh[2 * i + 1];
            xh[2 * i] = (float)(x0 * c - x1 * s);
            xh[2 * i + 1] = (float)(x0 * s + x1 * c);
        }
    }
}

void lh_ops_rope_table(float *cs, size_t n_pos, size_t n_rot, const lh_rope *r)
{
    size_t half = n_rot / 2;
    double ms = lh_ops_rope_mscale(r);
    for (size_t i = 0; i < half; i++) {
        double f = lh_ops_rope_theta(r, n_rot, i);
        for (size_t p = 0; p < n_pos; p++) {
            double th = (double)p * f;
            cs[(p * half + i) * 2] = (float)(cos(th) * ms);
            cs[(p * half + i) * 2 + 1] = (float)(sin(th) * ms);
        }
    }
}

void lh_ops_rope_apply_scaled(float *dst, const float *src, float scale, size_t head_dim,
                              size_t n_rot, const float *cs_row)
{
    size_t n = (n_rot < head_dim ? n_rot : head_dim) & ~(size_t)1, j = 0;
#ifdef LH_HAVE_AVX2
#ifdef __AVX512F__
    /* 8 pairs per vector, the same operations lane by lane as the loop below */
    __m512 vsc16 = _mm512_set1_ps(scale);
    for (; j + 16 <= n; j += 16) {
        __m512 v = _mm512_mul_ps(_mm512_loadu_ps(src + j), vsc16);
        __m512 t = _mm512_loadu_ps(cs_row + j);
        __m512 c = _mm512_moveldup_ps(t), s = _mm512_movehdup_ps(t);
        __m512 sw = _mm512_permute_ps(v, 0xB1);
        _mm512_storeu_ps(dst + j, _mm512_fmaddsub_ps(v, c, _mm512_mul_ps(sw, s)));
    }
#endif
    /* 4 pairs per vector: even lanes x0*c - x1*s, odd lanes x1*c + x0*s (addsub). */
    __m256 vsc = _mm256_set1_ps(scale);
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(src + j), vsc);
        __m256 t = _mm256_loadu_ps(cs_row + j);
        __m256 c = _mm256_moveldup_ps(t), s = _mm256_movehdup_ps(t);
        __m256 sw = _mm256_permute_ps(v, 0xB1);
        _mm256_storeu_ps(dst + j, _mm256_fmaddsub_ps(v, c, _mm256_mul_ps(sw, s)));
    }
#endif
    for (; j < n; j += 2) {
        float c = cs_row[j], s = cs_row[j + 1];
        float x0 = src[j] * scale, x1 = src[j + 1] * scale;
        dst[j] = x0 * c - x1 * s;
        dst[j + 1] = x0 * s + x1 * c;
    }
    for (; j < head_dim; j++)
        dst[j] = src[j] * scale;
}

void lh_ops_rope_apply(float *x, size_t n_head, size_t head_dim, size_t n_rot, const float *cs_row)
{
    /* times 1 is exact: the same bits as rotating in place without a scale */
    for (size_t h = 0; h < n_head; h++)
        lh_ops_rope_apply_scaled(x + h * head_dim, x + h * head_dim, 1.0f, head_dim, n_rot, cs_row);
}

void lh_ops_rope(float *x, size_t n_head, size_t head_dim, size_t n_rot, double pos, const lh_rope *r)
{
    /* One table row for this position, shared by all heads (the reference recomputes it per
     * head).  n_rot is a head dimension: a few hundred at most. */
    float cs[1024];
    size_t half = (n_rot < head_dim ? n_rot : head_dim) / 2;
    if (half > sizeof cs / sizeof cs[0] / 2) {
        lh_ops_rope_ref(x, n_head, head_dim, n_rot, pos, r);
        return;
    }
    double ms = lh_ops_rope_mscale(r);
    for (size_t i = 0; i < half; i++) {
        double th = pos * lh_ops_rope_theta(r, n_rot, i);
        cs[2 * i] = (float)(cos(th) * ms);
        cs[2 * i + 1] = (float)(sin(th) * ms);
    }
    lh_ops_rope_apply(x, n_head, head_dim, 2 * half, cs);
}

void lh_ops_neox_to_pairs(float *x, size_t n_head, size_t head_dim, size_t n_rot)
{
    float tmp[1024];
    size_t half = (n_rot < head_dim ? n_rot : head_dim) / 2;
    if (half > sizeof tmp / sizeof tmp[0] / 2)
        half = sizeof tmp / sizeof tmp[0] / 2; /* the model refuses such heads at load */
    for (size_t h = 0; h < n_head; h++) {
        float *xh = x + h * head_dim;
        for (size_t i = 0; i < half; i++) {
            tmp[2 * i] = xh[i];
            tmp[2 * i + 1] = xh[half + i];
        }
        for (size_t j = 0; j < 2 * half; j++)
            xh[j] = tmp[j];
    }
}

/* ---- SwiGLU ------------------------------------------------------------------------------- */

void lh_ops_swiglu_ref(float *out, const float *gate, const float *up, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double g = gate[i];
        out[i] = (float)(g / (1.0 + exp(-g)) * up[i]);
    }
}

static void swiglu_span(float *out, const float *gate, const float *up, size_t n)
{
    size_t i = 0;
#ifdef LH_HAVE_AVX2
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 e = lh_exp256(_mm256_sub_ps(_mm256_setzero_ps(), g));
        __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
    }
#endif
    for (; i < n; i++)
        out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void lh_ops_swiglu(float *out, const float *gate, const float *up, size_t n)
{
    if (n < PAR_MIN) {
        swiglu_span(out, gate, up, n);
        return;
    }
    size_t n_blk = (n + 4095) / 4096;
    OMP(omp parallel for schedule(static))
    for (size_t b = 0; b < n_blk; b++) {
        size_t i0 = b * 4096, len = n - i0 < 4096 ? n - i0 : 4096;
        swiglu_span(out + i0, gate + i0, up + i0, len);
    }
}

/* ---- softmax ------------------------------------------------------------------------------ */

void lh_ops_softmax_ref(float *x, size_t n)
{
    if (n == 0)
        return;
    double mx = x[0];
    for (size_t i = 1; i < n; i++)
        if (x[i] > mx)
            mx = x[i];
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += exp((double)x[i] - mx);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(exp((double)x[i] - mx) / sum);
}

float lh_ops_max(const float *x, size_t n, float start)
{
    size_t i = 0;
    float mx = start;
#ifdef LH_HAVE_AVX2
    if (n >= 8) {
        __m256 vm = _mm256_set1_ps(start);
        for (; i + 8 <= n; i += 8)
            vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
        mx = lh_hmax256(vm);
    }
#endif
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    return mx;
}

float lh_ops_exp_sum(float *x, size_t n, float mx)
{
    float sum = 0;
    size_t i = 0;
#ifdef LH_HAVE_AVX2
    __m256 vmx = _mm256_set1_ps(mx), vs = _mm256_setzero_ps();
#ifdef __AVX512F__
    /* exp 16 lanes at a time, the sums still 8 lanes at a time in the same order: the same bits
     * as the loop below (attention rows: ~2x the speed) */
    __m512 vmx16 = _mm512_set1_ps(mx);
    for (; i + 16 <= n; i += 16) {
        __m512 e = lh_exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), vmx16));
        _mm512_storeu_ps(x + i, e);
        vs = _mm256_add_ps(vs, _mm512_castps512_ps256(e));
        vs = _mm256_add_ps(vs, _mm512_extractf32x8_ps(e, 1));
    }
#endif
    for (; i + 8 <= n; i += 8) {
        __m256 e = lh_exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
        _mm256_storeu_ps(x + i, e);
        vs = _mm256_add_ps(vs, e);
    }
    sum = lh_hsum256(vs);
#endif
    for (; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    return sum;
}

void lh_ops_softmax(float *x, size_t n)
{
    if (n == 0)
        return;
    float inv = 1.0f / lh_ops_exp_sum(x, n, lh_ops_max(x, n, -INFINITY));
    size_t i = 0;
#ifdef LH_HAVE_AVX2
    __m256 vi = _mm256_set1_ps(inv);
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vi));
#endif
    for (; i < n; i++)
        x[i] *= inv;
}

/* ---- add ---------------------------------------------------------------------------------- */

void lh_ops_add(float *y, const float *x, size_t n)
{
    size_t i = 0;
#ifdef LH_HAVE_AVX2
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
#endif
    for (; i < n; i++)
        y[i] += x[i];
}
