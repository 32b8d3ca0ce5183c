/* kernels/longheads — LongHeads attention (Lu et al. 2024, arXiv 2402.10685): every query head
 * selects its own chunks of the context and attends only to them, laid out contiguously with
 * fresh positions, so that no head ever sees a distance longer than the window it was trained on.
 *
 * Terms: chunk size w (`chunk`), attended length per head L (`window`, a multiple of w),
 * K = L / w chunks per head.  Chunk c holds positions [c*w, (c+1)*w).
 *
 * Cache contract (shared with the model): per layer, k and v are (n_head_kv, n_ctx, head_dim) of
 * kv_type, and every key is stored rotated by its LOCAL position pos mod w.  Queries are passed
 * UN-rotated; this module rotates them as each layout slot requires (RoPE is relative:
 * rot(q,P)·rot(k,p) = rot(q,P-p0)·rot(k,p-p0)), so no key is ever re-rotated.
 *
 * State (lh_lh, one per sequence), rep score: for every layer, query head and complete chunk, the
 * chunk representation c (head_dim BF16 values whatever kv_type, scored against the query
 * rounded to BF16; the reference rounds both the same way; head_dim must be even); and for every
 * layer the un-rotated queries of the tokens of the current partial chunk (needed to build its
 * representation once it completes).
 * Bound score: for every layer, KV head and complete chunk the element-wise min and max
 * (head_dim floats each) of its locally rotated keys; with branch_and_bound (or check mode) also
 * a search tree over them per layer and KV head (chunks grouped by their min/max, longheads.c).
 * Both depend on the cached keys only (rebuildable from them) and need no queries, so truncation
 * keeps any prefix.
 * Scratch for every thread is sized in lh_lh_new; lh_lh_layer never allocates.
 */
#ifndef LH_LONGHEADS_H
#define LH_LONGHEADS_H

#include <stddef.h>
#include "ops.h"
#include "quant.h"

/* How a complete candidate chunk is scored against a query (longheads.c says why each). */
typedef enum {
    LH_LH_SCORE_REP = 0,   /* the paper's: q · the chunk's representation */
    LH_LH_SCORE_BOUND = 1, /* an upper bound of q·k over the chunk's keys, from their element-wise
                            * min and max (Quest); top-k by scoring every chunk, or exactly by
                            * branch and bound */
} lh_lh_score;

typedef struct {
    size_t n_layer;
    size_t n_head, n_head_kv, head_dim, n_rot;
    lh_rope rope;        /* the model's RoPE (frequency factors, scaling), borrowed */
    size_t chunk;        /* w */
    size_t window;       /* L, a multiple of w, L >= 2*w */
    size_t n_ctx;        /* cache capacity in tokens */
    lh_type kv_type;     /* LH_TYPE_F32 or LH_TYPE_F16 */
    lh_lh_score score;   /* default (0) LH_LH_SCORE_REP */
    int branch_and_bound; /* bound: 1 = top-k by branch and bound over a search tree, 0
                           * (default) = score every candidate; the same selections
                           * (longheads.c: which is faster where) */
    size_t recent;       /* the last chunks every selection keeps, the current one included:
                          * 1 .. K-1, or 0 (default) for the paper's 2 (1 when K == 2) */
} lh_lh_params;

/* Work counters, summed over threads since lh_lh_new or the last lh_lh_stats_reset. */
typedef struct {
    size_t n_select;     /* selections made (query, head) past the window */
    size_t n_cand;       /* candidate chunks they had (what flat scoring scores) */
    size_t n_chunk;      /* chunks actually scored */
    size_t n_node;       /* search-tree nodes scored (groups of chunks; bound only) */
    size_t n_mismatch;   /* with lh_lh_set_check: selections that differed from flat scoring
                            (bound), representation scores and rounded query values that
                            differed from the scalar reference in any bit (rep) */
} lh_lh_stats;

typedef struct lh_lh lh_lh;

/* max_q: the largest batch lh_lh_layer will see.  Returns 0, -EINVAL (bad params: w == 0,
 * L % w != 0, L < 2w, recent > K-1), -ENOMEM. */
int lh_lh_new(lh_lh **sp, const lh_lh_params *p, size_t max_q);
void lh_lh_free(lh_lh *s);

/* The state now describes the first n_past tokens only. Returns the number of tokens that can be
 * kept (<= n_past): chunk representations of chunks that end at or before it survive, and the
 * pending queries of a partial chunk survive only if they are still held; otherwise the result is
 * rounded down to a chunk boundary and the caller must re-evaluate from there. */
size_t lh_lh_truncate(lh_lh *s, size_t n_past);

/* One layer, one batch of n_q consecutive tokens at positions pos0 .. pos0+n_q-1 (pos0 equal to
 * the number of tokens already processed for this layer).  q (n_q, n_head*head_dim) un-rotated;
 * their keys and values are already in k/v.  First builds the representations of chunks this
 * batch completes, then, for each query t: if t < L ordinary causal attention at absolute
 * positions, else the per-head selection and attention described in longheads.c.
 * out (n_q, n_head*head_dim).  Returns 0, or -EINVAL (logged) when layer is out of range, pos0
 * is not the number of tokens this layer has processed (truncate first) or the batch would pass
 * n_ctx. */
int lh_lh_layer(lh_lh *s, size_t layer, const float *q, size_t n_q, size_t pos0,
                const void *k, const void *v, float *out);

/* The oracle: a plain scalar implementation written straight from the description, with no
 * cached state: q_all (n_tok, n_head*head_dim) are the un-rotated queries of ALL tokens 0..n_tok-1
 * of this layer, k/v the cache as above; computes outputs for tokens pos0..n_tok-1 into out
 * ((n_tok-pos0), n_head*head_dim). */
void lh_lh_layer_ref(const lh_lh_params *p, const float *q_all, size_t n_tok, size_t pos0,
                     const void *k, const void *v, float *out);

/* The chunks (ascending, layout order) that query head `head` of `layer` attends to for a query at
 * position t whose un-rotated query for that head is q_head (head_dim floats), from the cached
 * representations: exactly what lh_lh_layer uses.  For t < L that is 0 .. t/w.  Needs the
 * representations of chunks up to t/w - R (R = lh_lh_recent), i.e. (t/w - R + 1)*w tokens
 * processed in that layer.
 * Returns the number of chunks written (K for t >= L), or 0 when cap < K or the layer has not got
 * that far.  For tests and diagnostics (which heads look where); allocates, not for the forward. */
size_t lh_lh_select(const lh_lh *s, size_t layer, size_t head, const float *q_head, size_t t,
                    size_t *chunks, size_t cap);

/* The same selection by scoring every candidate chunk (no branch and bound): what lh_lh_select
 * must equal.  For rep the two are the same code. */
size_t lh_lh_select_flat(const lh_lh *s, size_t layer, size_t head, const float *q_head, size_t t,
                         size_t *chunks, size_t cap);

/* The score of every complete chunk 0 .. n-1 for that query as selection sees it (rep: q·c;
 * bound: the bound for the query rotated by lh_lh_bound_pos), into scores (cap floats).  Returns
 * n (the complete chunks of that layer, at most cap), 0 on bad arguments.  For tests. */
size_t lh_lh_scores(const lh_lh *s, size_t layer, size_t head, const float *q_head, size_t t,
                    float *scores, size_t cap);

/* The last chunks every selection keeps (the current one included): p->recent, or the paper's 2
 * (1 when K == 2) for 0. */
size_t lh_lh_recent(const lh_lh_params *p);

/* The position the query at t is rotated by for the bound score (longheads.c says which and why). */
size_t lh_lh_bound_pos(const lh_lh_params *p, size_t t);

void lh_lh_stats_get(const lh_lh *s, lh_lh_stats *st);
/* on != 0, bound score: lh_lh_layer selects through the branch-and-bound search (over the search
 * trees with branch_and_bound; without them it scores every candidate) and also by flat scoring,
 * and counts the selections that differ (n_mismatch), to check branch and bound on real data.
 * Rep score: every representation score is recomputed by the scalar reference, every query value
 * rounded for scoring by the scalar rounding, and those that differ are counted (n_mismatch).
 * For tests: slow. */
void lh_lh_set_check(lh_lh *s, int on);
void lh_lh_stats_reset(lh_lh *s);

/* Bytes of state per token of context (chunk representations, or the chunks' min/max and
 * their search trees), for reporting. */
double lh_lh_bytes_per_token(const lh_lh_params *p);

/* ---- saving and restoring the state (the daemon's persistent prompt cache, engine/pcache) ---- */

/* The largest m <= n whose state can be saved or kept: what lh_lh_truncate(s, n) would keep,
 * without changing anything. */
size_t lh_lh_keepable(const lh_lh *s, size_t n);
/* Writes (or reads) exactly size bytes; 0 or an error code that is passed back. */
typedef int (*lh_lh_io_fn)(void *ud, void *buf, size_t size);
/* Bytes lh_lh_state_save writes for the first n tokens. */
size_t lh_lh_state_size(const lh_lh *s, size_t n);
/* The state of the first n tokens: every per-chunk array for the n / w complete chunks (the
 * chunk representations, ...) and the ring of pending queries.  n must be keepable (-EINVAL
 * otherwise).  Returns 0 or fn's error. */
int lh_lh_state_save(const lh_lh *s, size_t n, lh_lh_io_fn fn, void *ud);
/* The inverse, into a state made with the same parameters (n <= n_ctx); afterwards every layer
 * has processed n tokens.  On an error from fn the state is emptied (0 tokens). */
int lh_lh_state_load(lh_lh *s, size_t n, lh_lh_io_fn fn, void *ud);

#endif
