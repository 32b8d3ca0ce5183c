/* kernels/ops — the elementwise and row-wise pieces of a LLaMA forward pass, each with a plain
 * scalar reference (`_ref`) that the tests compare the optimised version against.
 *
 * All functions work in place or on caller storage; none allocates; all are safe to call from
 * serial code (they may open their own OpenMP region when the work is large) and the `_ref`
 * versions from anywhere.
 */
#ifndef LH_OPS_H
#define LH_OPS_H

#include <stddef.h>

/* out[i] = x[i] / sqrt(mean(x²) + eps) * w[i], for each of n_rows rows of n floats. */
void lh_ops_rmsnorm(float *out, const float *x, const float *w, size_t n_rows, size_t n, float eps);
void lh_ops_rmsnorm_ref(float *out, const float *x, const float *w, size_t n_rows, size_t n, float eps);

/* How a model turns positions into RoPE angles: llama.cpp's rope_ext parameters.  Pair i of
 * n_rot/2 has the base frequency theta_i = base^(-2i/n_rot) / freq_factors[i]; then
 *   linear scaling:  angle = pos * freq_scale * theta_i
 *   YaRN (ext_factor != 0): angle = pos * theta_i * (freq_scale * (1 - mix_i) + mix_i), where
 *     mix_i = ext_factor * ramp(i), ramp 1 for the fast pairs (i <= lo: extrapolated, unscaled)
 *     falling linearly to 0 at i >= hi (interpolated); lo/hi are the pairs that turn beta_fast /
 *     beta_slow times over n_ctx_orig positions (floor/ceil, clamped to [0, n_rot-1]);
 *   and the rotated pair is multiplied by mscale = attn_factor, times 1 + 0.1 ln(1/freq_scale)
 *     under YaRN (both q and k are scaled, so attention logits grow by mscale²).
 * freq_factors is borrowed: it must outlive every user of the struct. */
typedef struct {
    float base;                 /* rope.freq_base, 10000 */
    float freq_scale;           /* 1/rope.scaling.factor under linear or YaRN scaling, else 1 */
    const float *freq_factors;  /* (n_rot/2) or NULL (Llama 3.1+'s rope_freqs.weight) */
    float ext_factor;           /* 1 under YaRN, else 0 */
    float attn_factor;          /* 1 unless rope.scaling.attn_factor says otherwise */
    float beta_fast, beta_slow; /* YaRN's ramp ends, 32 and 1 */
    size_t n_ctx_orig;          /* YaRN: rope.scaling.original_context_length */
} lh_rope;

/* Plain RoPE with this base: no scaling, no factors. */
lh_rope lh_ops_rope_plain(float base);
/* The angle per unit position of pair i (pair i turns by pos * result) and the magnitude scale;
 * exactly what lh_ops_rope and lh_ops_rope_table use. */
double lh_ops_rope_theta(const lh_rope *r, size_t n_rot, size_t i);
float lh_ops_rope_mscale(const lh_rope *r);

/* RoPE, llama's "normal" layout: within each head of head_dim floats, the pairs (2i, 2i+1) for
 * 2i < n_rot are rotated by the angle of pair i at position pos (see lh_rope).  x is
 * (n_head, head_dim), one token at position pos (any non-negative value, also a remapped one).
 * The _ref version computes each angle in the form llama.cpp's rope_yarn does (interpolated and
 * extrapolated angle, mixed), per head, in double. */
void lh_ops_rope(float *x, size_t n_head, size_t head_dim, size_t n_rot, double pos, const lh_rope *r);
void lh_ops_rope_ref(float *x, size_t n_head, size_t head_dim, size_t n_rot, double pos,
                     const lh_rope *r);

/* A cos/sin table (mscale included) for positions 0..n_pos-1: cs is (n_pos, n_rot/2, 2). */
void lh_ops_rope_table(float *cs, size_t n_pos, size_t n_rot, const lh_rope *r);
/* Rotate n_head heads of x by the table row cs_row (n_rot/2 {cos,sin} pairs). */
void lh_ops_rope_apply(float *x, size_t n_head, size_t head_dim, size_t n_rot, const float *cs_row);
/* One head: dst = src * scale, then rotated as lh_ops_rope_apply does (the same operations, in one
 * pass); dst may be src. */
void lh_ops_rope_apply_scaled(float *dst, const float *src, float scale, size_t head_dim,
                              size_t n_rot, const float *cs_row);

/* GPT-NeoX layout (Qwen2) to llama's: within each head, y[2i] = x[i], y[2i+1] = x[i + n_rot/2]
 * for i < n_rot/2, the rest unchanged.  Applied to q and k alike it preserves every q·k, and turns
 * NeoX RoPE (pairs (i, i + n_rot/2)) into the adjacent-pair RoPE above.  n_rot <= 1024. */
void lh_ops_neox_to_pairs(float *x, size_t n_head, size_t head_dim, size_t n_rot);

/* SwiGLU: out[i] = silu(gate[i]) * up[i], n floats. */
void lh_ops_swiglu(float *out, const float *gate, const float *up, size_t n);
void lh_ops_swiglu_ref(float *out, const float *gate, const float *up, size_t n);

/* In-place softmax over n floats (max-subtracted, sums to 1). */
void lh_ops_softmax(float *x, size_t n);
void lh_ops_softmax_ref(float *x, size_t n);

/* The largest of start and x[0..n). */
float lh_ops_max(const float *x, size_t n, float start);
/* x[i] = exp(x[i] - mx) for i < n; returns their sum (the inner step of every softmax). */
float lh_ops_exp_sum(float *x, size_t n, float mx);

/* y[i] += x[i] */
void lh_ops_add(float *y, const float *x, size_t n);

#endif
