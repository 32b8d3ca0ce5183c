/* kernels/attn — dense causal grouped-query attention over a KV cache (the "full" mode).
 *
 * Cache layout, per layer: k and v are (n_head_kv, n_ctx, head_dim), element type kv_type
 * (LH_TYPE_F32 or LH_TYPE_F16); keys are stored already rotated.  Queries q are
 * (n_q, n_head * head_dim), already rotated at their absolute positions pos0 .. pos0+n_q-1, and
 * query i attends to keys 0 .. pos0+i inclusive.  Query head h reads KV head h / (n_head/n_head_kv).
 * out is (n_q, n_head * head_dim).  Scale 1/sqrt(head_dim).
 *
 * Runs in parallel (OpenMP, n_threads): prefill over (KV head, query block) items, decode over
 * equal ranges of every KV head's key tiles (a head cut between threads is merged after a
 * barrier); every output element is written by exactly one thread.  Scratch is caller-provided:
 * lh_attn_scratch_size() bytes per thread, sized at load (the decode merge reads other threads'
 * scratch, so the n_threads regions must be one contiguous array, as lh_attn_dense receives it).
 */
#ifndef LH_ATTN_H
#define LH_ATTN_H

#include <stddef.h>
#include "quant.h"

typedef struct {
    size_t n_head, n_head_kv, head_dim;
    size_t n_ctx;          /* cache capacity (row stride of each KV head) */
    lh_type kv_type;       /* LH_TYPE_F32 or LH_TYPE_F16 */
} lh_attn_shape;

/* Bytes of scratch one thread needs for queries batches of up to max_q and contexts of n_ctx. */
size_t lh_attn_scratch_size(const lh_attn_shape *s, size_t max_q);

void lh_attn_dense(const lh_attn_shape *s, const float *q, size_t n_q, size_t pos0,
                   const void *k, const void *v, float *out, void *scratch, size_t n_threads);

/* Scalar reference of the same, no scratch, no threads. */
void lh_attn_dense_ref(const lh_attn_shape *s, const float *q, size_t n_q, size_t pos0,
                       const void *k, const void *v, float *out);

/* Store one token's n_head_kv*head_dim floats into row `pos` of a cache laid out as above. */
void lh_attn_store(const lh_attn_shape *s, void *cache, size_t pos, const float *x);

#endif
