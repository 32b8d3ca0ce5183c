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

/* RoPE, llama's "normal" layout: within each head of head_dim floats, the pairs (2i, 2i+1) for
 * 2i < n_rot are rotated by angle pos * freq_scale * base^(-2i/n_rot).  x is (n_head, head_dim),
 * one token at position pos (pos may be any non-negative integer, also a remapped one). */
void lh_ops_rope(float *x, size_t n_head, size_t head_dim, size_t n_rot, double pos, float base,
                 float freq_scale);
void lh_ops_rope_ref(float *x, size_t n_head, size_t head_dim, size_t n_rot, double pos,
                     float base, float freq_scale);

/* A cos/sin table for positions 0..n_pos-1: cs is (n_pos, n_rot/2, 2) = {cos, sin}. */
void lh_ops_rope_table(float *cs, size_t n_pos, size_t n_rot, float base, float freq_scale);
/* Rotate n_head heads of x by the table row cs_row (n_rot/2 {cos,sin} pairs). */
void lh_ops_rope_apply(float *x, size_t n_head, size_t head_dim, size_t n_rot, const float *cs_row);

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
