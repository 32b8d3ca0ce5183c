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
 *   - the last R chunks cc-R+1 .. cc (`recent`, the paper's R = 2: chunk cc - 1 and the current
 *     chunk cc, causal up to t itself), always: the local context that language modelling needs,
 *     and the current chunk has no representation yet (it is incomplete), while right after a
 *     chunk boundary it holds almost nothing;
 *   - the other K - 1 - R slots: the complete chunks 1 .. cc-R whose representation c scores
 *     highest against the UN-rotated query (q·c).  The representation is built from locally
 *     rotated keys (see below), and an un-rotated query compares content without a position bias.
 *     Ties go to the earlier chunk.  (With K == 2 only chunk 0 and the current chunk fit: R = 1 by
 *     default, the previous chunk is dropped rather than the sink.)
 * More recent chunks than the paper's two (recent = 4, beyond the paper) were better on every
 * model here: stories260K (w = 64, L = 512, 35 buckets of 512 of tests/data/stories-long.txt)
 * perplexity 2.492 -> 2.430 with rep (19 buckets more than 2% better, none worse; R = 3: 2.440,
 * R = 5: 2.430) and 2.520 -> 2.428 with the bound; the plain passkey model with the bound misses
 * fewer keys (below), rep and the aligned model are unchanged.  The default stays the paper's.
 * Selection is per query head: with grouped-query attention the heads sharing a KV head still
 * choose independently, that is the point of the method.
 *
 * Chunk representation (per layer, head and complete chunk, computed once and cached): the
 * chunk's queries and keys rotated by their local positions pos mod w attend bidirectionally
 * inside the chunk; the mean of the w outputs is the summary s (what the chunk is about in value
 * space); c = sum_j softmax_j(s·k_j/sqrt(d)) k_j is then a point in key space weighted towards the
 * keys that summary finds most relevant, so q·c approximates how strongly q would attend there.
 * Local positions make c independent of where the chunk sits in the context.  c is stored in
 * BF16 whatever the cache's type, and scored against the query rounded to BF16 the same way
 * (rep_bf16): one vdpbf16ps does 32 products where an F32 FMA does 16, so selection per query
 * and layer at 128x L (dim-512 8-layer model, w = 64, L = 512, rdtsc, both threads) went from
 * 17-20 K to ~11 K cycles together with the AVX-512 top-k; the scores carry ~3 significant
 * digits, and they only rank chunks.  (Before: the cache's type, F16 with the default cache,
 * which had already halved the bytes against F32: decode at 65536 tokens 274-339 against 243-254
 * tokens/s.)  The oracle rounds its representations and queries the same way.
 *
 * Bound score (LH_LH_SCORE_BOUND, beyond the paper, after Quest: Tang et al. 2024, arXiv
 * 2406.10774): per layer, KV head and complete chunk the element-wise min and max of its cached
 * (locally rotated) keys; the score of the chunk for a query q is sum_i max(q_i min_i, q_i max_i),
 * an upper bound of q·k over its keys.  The average a representation takes can drown the one key
 * that matters (the plain passkey model: rep finds the key 40-80% of the time); a bound cannot
 * miss a chunk whose best key scores high.  Which rotation of q: the UN-rotated query, as for rep.
 * The exact one is unknowable before selecting (a chunk's layout slot, hence the distance, depends
 * on which other chunks are chosen), and on the pretrained data the choice hardly matters for the
 * passkey while the un-rotated query was best for perplexity: tried (tuning seed 1000, 10 trials at
 * 1024/4096/16384 on passkey-plain; stories260K perplexity at 2048/4096/8192/16384) the query
 * rotated by its local position t mod w plus 0, 1, 2, 4 and 6 chunks: passkey 9-10/10 for all;
 * perplexity at 8192 2.84, 2.86, 2.92 for 0, 1, 2 chunks against 2.81 un-rotated (rep 2.63).
 * Relative to a key stored at local position j the un-rotated query sits at distance -j, inside
 * one chunk.  Chunk 0 and the last R chunks are kept exactly as with rep, and ties go to the
 * earlier chunk.
 * Against rep (stories260K, tests/data/stories-long.txt, 35 buckets of 512): with the paper's
 * R = 2 overall perplexity 2.520 vs 2.492, 7 buckets more than 2% worse (worst +6.8%); with
 * R = 4 (both scores) 2.428 vs 2.430, no bucket more than 0.6% worse, and R = 3 2.449 vs 2.440
 * (worst +1.7%).  So most of the bound's loss was its choice of the slots next to the local
 * context: with 5 free slots it fills them with chunks whose keys reach far out (box corners),
 * which rep does not; with the two nearest chunks given to every head it no longer matters.  The
 * same on the passkey: with the key line's chunks forced into every bound selection (an oracle,
 * measured on a branch) passkey-plain still missed 9 of 200 at 1024 tokens, the same trials as
 * the bound alone, with the other slots the most recent chunks 3 of 200: the bound already found
 * the key; its other picks distracted.  Mixing the scores instead (rep's 4 best plus the bound's
 * best where it beats rep's picks' bounds by > 1 logit, 1 / sqrt(d) scale) met the perplexity
 * (worst +1.9%) but missed more keys on untuned seeds (seeds 22, 23: 17 and 18 of 20 at 4096); not
 * kept.  Tighter bounds do not select better there: min/max per sub-block of w/n keys, a chunk
 * scoring its best sub-block (still an upper bound, n times the memory), gave for n = 2, 4, 8, 16,
 * 32, 64 (64: the exact best q·k) 14, 9, 7, 6, 7, 13 buckets over 2% (overall 2.535 .. 2.508); an
 * upper bound of the chunk's attention mass (log-sum-exp over sub-blocks), keys re-rotated to one
 * common distance, and w=32 were worse too (measured on a branch, not kept).  Passkey-plain,
 * bound, 20 trials at 1024/4096/8192/16384/32768, seeds never tuned on: R = 2: seed 1 (make
 * eval) 20 19 19 20 18, seed 11 20 20 19 20 20, seed 12 20 19 20 19 20, seed 13 20 20 20 18 20,
 * seeds 21-23 each >= 19 (the model misses 1 of 20 with full attention inside its window); rep at
 * seed 11: 16 13 12 12 11.  R = 4: seed 7 (200 trials) 197/192/199 at 1024/4096/8192 against
 * 191/188/192 with R = 2, seeds 24-26 (fresh) 19 19 20 20 19, 20 20 20 19 20, 19 20 20 20 20; rep
 * with R = 4 unchanged (118/133 of 200 at 1024/4096, 122/131 with R = 2).
 *
 * Exact sub-linear selection: bounds compose, the min of mins and the max of maxes bound a group,
 * so a tree of groups can be searched best-first: a node is opened only while its bound could
 * still place one of its chunks among the K-1-R best under the flat order (higher score, then
 * earlier chunk), so the result equals scoring every chunk (tested against flat on random data,
 * ties, repeated chunks and the passkey model).  It pays only where the box around a GROUP stays
 * near its chunks' boxes, and in head_dim 8..64 the box around two unlike chunks is already far
 * looser than either.  The first tree grouped aligned runs of 2^k chunks (neighbours in the
 * text): it scored more nodes than flat scoring scores chunks on every data tried (stories260K,
 * 17697 tokens: 30 of 140 candidate chunks plus 117 nodes per selection; passkey-plain, 3000
 * tokens: 30 of 48 plus 52; its filler prompt at 303 and 1203 candidates: 548 and 2154 chunks
 * and nodes).  Neighbours in a text differ; what repeats is far apart (a filler sentence, a
 * recurring form).  So the tree now groups
 * chunks by their boxes (kd_build: median splits of the boxes' centres, rebuilt every KD_STEP
 * chunks, the newer ones scored flat), and the tie rule prunes a group of equal copies behind its
 * first.  Per selection on the passkey prompt (passkey-plain, w = 32, L = 256, longheads-ppl
 * --select tree): 35, 58, 79 and 102 chunks and nodes scored against 33, 123, 483 and 1923
 * candidates (2 k, 7.8 k, 31 k and 123 k tokens); its whole prefill at 123 k tokens 9.9 s against
 * 13.7 s flat.  On stories260K 34 of 140 chunks plus 90 nodes (the text varies: little to prune,
 * and the heap and the rebuilds cost more than they save: 3.6-8.8 k against 4.7-22.8 k tokens/s
 * flat over two runs each); on lhbench's random and clustered keys about every chunk and node.
 * So flat scoring stays the default (branch_and_bound = 0, `--select flat`), and `--select tree`
 * is there for long repetitive contexts.
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
 * Cost and shape of the work: new chunk representations first (one thread per head), then work
 * items in parallel: a KV head with the query heads of its group and whole blocks of the batch
 * (a block: the batch's queries of one chunk), as many rows (query head x query) as the scratch
 * holds (max_rows: scores of 2 MiB), cut smaller only to give every thread an item.  An item
 * selects for every row (the block's queries of a head scored together against
 * the representation tiles, rep_scores), then reads every chunk in the
 * union of its rows' selections once: the rows that chose it, each query rotated for the slot it
 * holds in that row's layout, go through it in pairs (scores) and fours (P·V) with kernels that
 * read the cache in place (kernels/rows.h).  Rows share chunks across blocks and across the
 * heads of a GQA group: at 128x L on random weights (dim 512, 8 heads / 4 KV, w = 64, K = 8) an
 * item of 2 heads x 256 queries held 4096 (row, chunk) pairs over ~350 distinct chunks.  Against
 * the earlier shape (one head and one block at a time, each chunk's rows gathered for
 * lh_gemm_nt / lh_gemm_nn, F16 converted first) a 128x prefill went from 0.45 to 0.39 ms per
 * token and 1x from 0.31 to 0.29 (longheads-bench, the dim-512 model).  A row's arithmetic does
 * not depend on the other rows of its item, so where a batch is cut never changes a result.
 * Scratch per thread depends on w, L, n_ctx / w and max_rows, never on the batch size.
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
#include "rows.h"
#include "simd.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* A tree node waiting in the branch-and-bound frontier: its bound and the first candidate under
 * it (the earliest chunk it could give, for the tie rule). */
typedef struct {
    float b;
    uint32_t node, first;
} bb_ent;

/* A chunk and its sort key while a search tree is built. */
typedef struct {
    float key;
    uint32_t c;
} kd_key;

struct lh_lh {
    lh_lh_params p;
    size_t max_q;
    size_t n_keep;          /* K = L / w */
    size_t n_recent;        /* R: the last chunks every selection keeps (lh_lh_recent) */
    size_t n_top;           /* K - 1 - R: the slots filled by score from chunks 1 .. cc-R */
    size_t n_chunk;         /* n_ctx / w: chunks that can ever complete */
    size_t ld_q;            /* n_head * head_dim */
    uint16_t *rep;          /* (n_layer, n_head) x rep_chunks(s) x head_dim chunk
                               representations in BF16, in tiles of REP_T chunks (rep_at) */
    float *ring;            /* (n_layer, w, n_head * head_dim) un-rotated queries of the last
                               w tokens processed, slot pos mod w */
    size_t *n_done;         /* (n_layer) tokens processed per layer */
    float *rope;            /* (L, n_rot/2, 2) {cos, sin} for positions 0 .. L-1 */
    size_t n_thread;
    size_t max_rows;        /* rows (query head, query) of one work item of lh_lh_layer */
    size_t scr_floats;      /* floats of scratch per thread */
    float *scr;             /* (n_thread, scr_floats) */
    size_t *sel;            /* (n_thread, sel_size) per thread: selections, their union and
                               the rows' offsets (scratch_of) */
    /* bound score only */
    float *bmin, *bmax;     /* (n_layer, n_head_kv, n_chunk, head_dim) element-wise min / max of
                               each complete chunk's keys */
    /* the search tree of each layer and KV head (kd_build; branch and bound only) */
    size_t kd_cap;          /* nodes per tree: 2 n_chunk */
    float *kmin, *kmax;     /* (n_layer, n_head_kv, kd_cap, head_dim) each node's min / max */
    uint32_t *kinfo;        /* (n_layer, n_head_kv, kd_cap, 2) each node's right child (its left
                               is the next node; 0: a leaf) and the first chunk under it (a
                               leaf's chunk) */
    size_t *n_kd;           /* (n_layer, n_head_kv) the tree holds chunks 1 .. n_kd-1 (0: none) */
    kd_key *kd_scr;         /* (n_chunk) build scratch */
    bb_ent *heap;           /* (n_thread, kd_cap) branch-and-bound frontier (with the trees) */
    size_t *stat;           /* (n_thread, 8): lh_lh_stats counters, one cache line each */
    int check;              /* lh_lh_set_check */
};

/* Chunk representations are kept in BF16 in tiles of REP_T chunks, by pairs of dimensions inside
 * a tile: element i of chunk c at rep_at(d, c, i).  One vector load is then dimensions 2k and
 * 2k+1 of 16 chunks, and scoring a block of queries is one vdpbf16ps per (query, tile, pair) with
 * the query's pair broadcast, into one register per (query, tile): no horizontal sums, no packing
 * and no conversion pass (rep_scores). */
#define REP_T 16

/* Scores of one work item: R = max_rows is at most ITEM_FLOATS / L (x->sc 2 MiB), and at least
 * w.  Larger items share more chunk reads: with 2 heads x 512 queries (1024 rows) a 128x L
 * prefill on the dim-512 model ran at 1.35-1.37x its 1x cost, with 512 rows (1 MiB, within L2)
 * at 1.41-1.43x (longheads-bench, alternating). */
#define ITEM_FLOATS (1u << 19)

/* Views into one thread's scratch (R = max_rows). */
typedef struct {
    float *kb, *vb;         /* (w, head_dim) F16 keys / values converted to F32 */
    uint32_t *qp;           /* (w, head_dim / 2) a block's queries for rep_scores (on kb: the
                               representations are made before any selection) */
    float *qr;              /* (R, head_dim) queries rotated for one chunk */
    float *sc;              /* (R, L) attention rows of an item; (w, w) when building reps */
    float *ss;              /* (w, n_chunk) selection scores of a block of queries */
    float *or;              /* (R, head_dim) the item's outputs */
    float *vec;             /* (2*w + head_dim): small vectors when building reps */
    float *qb;              /* (head_dim) a query rotated for the bound score */
    size_t *sel;            /* (R, K) selection of each row of an item */
    size_t *cur;            /* (max(n_chunk + 1, R)) merge cursors, or per-chunk counts (all 0
                               between items) */
    size_t *uc, *un;        /* (R*K) union of the selections: chunk, number of rows */
    size_t *ur, *us;        /* (R*K) per (chunk, row) entry: row and its slot */
    size_t *rq, *rp;        /* (R) per row: offset of its query in q and out; rotation of its
                               query for slot 0 (slot m: m*w less) */
    bb_ent *heap;           /* (kd_cap) with the search trees only, else NULL */
    size_t *stat;           /* (8) this thread's counters */
} scratch;

static size_t n_keep_of(const lh_lh_params *p) { return p->window / p->chunk; }

/* Bytes of one element of the KV cache. */
static size_t kv_elt(const lh_lh_params *p) { return lh_type_row_size(p->kv_type, 1); }

static int params_ok(const lh_lh_params *p)
{
    return p->chunk > 0 && p->window % p->chunk == 0 && p->window >= 2 * p->chunk &&
           p->n_layer > 0 && p->n_head > 0 && p->n_head_kv > 0 &&
           p->n_head % p->n_head_kv == 0 && p->head_dim > 0 && p->head_dim % 2 == 0 &&
           p->n_rot % 2 == 0 &&
           p->n_rot <= p->head_dim && p->n_ctx > 0 &&
           (p->kv_type == LH_TYPE_F32 || p->kv_type == LH_TYPE_F16) &&
           (p->score == LH_LH_SCORE_REP || p->score == LH_LH_SCORE_BOUND) &&
           p->recent < p->window / p->chunk;
}

size_t lh_lh_recent(const lh_lh_params *p)
{
    if (p->recent)
        return p->recent;
    return p->chunk && p->window / p->chunk == 2 ? 1 : 2;
}

/* Chunks of the representations of one (layer, head): n_chunk rounded up to whole tiles. */
static size_t rep_chunks(const lh_lh *s) { return (s->n_chunk + REP_T - 1) / REP_T * REP_T; }

/* Element offset of the representations of (layer, head) in s->rep. */
static size_t rep_base(const lh_lh *s, size_t layer, size_t h)
{
    return (layer * s->p.n_head + h) * rep_chunks(s) * s->p.head_dim;
}

/* Element i of chunk c from a rep_base: inside a tile, dimensions 2k and 2k+1 of its REP_T chunks
 * are 32 BF16 values, chunk by chunk (what one vdpbf16ps multiplies with a query's pair). */
static size_t rep_at(size_t d, size_t c, size_t i)
{
    return c / REP_T * REP_T * d + (i & ~(size_t)1) * REP_T + c % REP_T * 2 + (i & 1);
}

/* A representation's or a query's value as selection scores it: BF16, rounded to nearest even,
 * and 0 below 2^-50 in magnitude.  Then every product of two is a multiple of 2^-114 and so is
 * every sum of them: no partial sum is ever subnormal, and vdpbf16ps (which treats subnormals in
 * its own way) gives exactly what rep_score_ref's FMAs give. */
static uint16_t rep_bf16(float x)
{
    return fabsf(x) < 0x1p-50f ? 0 : lh_f32_to_bf16(x);   /* (a NaN is not below: stays NaN) */
}

static size_t cur_size(const lh_lh *s)
{
    return s->n_chunk + 1 > s->max_rows ? s->n_chunk + 1 : s->max_rows;
}

static size_t sel_size(const lh_lh *s)
{
    return 5 * s->max_rows * s->n_keep + cur_size(s) + 2 * s->max_rows;
}

static scratch scratch_of(const lh_lh *s, size_t tid)
{
    size_t w = s->p.chunk, d = s->p.head_dim, R = s->max_rows;
    float *f = s->scr + tid * s->scr_floats;
    scratch x;
    x.kb = f;
    x.vb = x.kb + w * d;
    x.qp = (uint32_t *)x.kb;
    x.qr = x.vb + w * d;
    x.sc = x.qr + R * d;
    x.ss = x.sc + R * s->p.window;
    x.or = x.ss + w * s->n_chunk;
    x.vec = x.or + R * d;
    x.qb = x.vec + 2 * w + d;
    x.heap = s->heap ? s->heap + tid * s->kd_cap : NULL;
    x.stat = s->stat + tid * 8;
    size_t wk = R * s->n_keep;
    x.sel = s->sel + tid * sel_size(s);
    x.cur = x.sel + wk;
    x.uc = x.cur + cur_size(s);
    x.un = x.uc + wk;
    x.ur = x.un + wk;
    x.us = x.ur + wk;
    x.rq = x.us + wk;
    x.rp = x.rq + R;
    return x;
}

int lh_lh_new(lh_lh **sp, const lh_lh_params *p, size_t max_q)
{
    *sp = NULL;
    if (!params_ok(p)) {
        lh_log_error("longheads: bad parameters (chunk %zu, window %zu, recent %zu, heads %zu/%zu, "
                     "head_dim %zu, n_rot %zu, kv type %d)", p->chunk, p->window, p->recent,
                     p->n_head, p->n_head_kv, p->head_dim, p->n_rot, (int)p->kv_type);
        return -EINVAL;
    }
    lh_lh *s = calloc(1, sizeof *s);
    if (!s)
        goto fail;
    s->p = *p;
    s->max_q = max_q;
    s->n_keep = n_keep_of(p);
    s->n_recent = lh_lh_recent(p);
    s->n_top = s->n_keep - 1 - s->n_recent;
    s->n_chunk = p->n_ctx / p->chunk;
    s->ld_q = p->n_head * p->head_dim;
#ifdef _OPENMP
    s->n_thread = (size_t)omp_get_max_threads();
#else
    s->n_thread = 1;
#endif
    size_t w = p->chunk, d = p->head_dim, R = (p->n_head / p->n_head_kv) * (max_q ? max_q : 1);
    if (R > ITEM_FLOATS / p->window)
        R = ITEM_FLOATS / p->window;
    s->max_rows = R = R < w ? w : R;
    s->scr_floats = 2 * w * d + 2 * R * d + R * p->window + w * s->n_chunk + 2 * w + 2 * d;
    /* Counts come from the model's configuration; keep the products honest anyway. */
    size_t n_rep = p->n_layer * p->n_head;
    if (s->n_chunk && n_rep > SIZE_MAX / sizeof(float) / d / (s->n_chunk + REP_T))
        goto fail;
    if (p->score == LH_LH_SCORE_BOUND) {
        size_t n_t = p->n_layer * p->n_head_kv, nc = s->n_chunk ? s->n_chunk : 1;
        s->kd_cap = 2 * nc;
        /* calloc: the pages are committed only as chunks complete */
        s->bmin = calloc(n_t * nc * d, sizeof(float));
        s->bmax = calloc(n_t * nc * d, sizeof(float));
        s->n_kd = calloc(n_t, sizeof(size_t));
        if (!s->bmin || !s->bmax || !s->n_kd)
            goto fail;
        if (p->branch_and_bound) {   /* the search trees: without them select_bound is flat */
            s->kmin = calloc(n_t * s->kd_cap * d, sizeof(float));
            s->kmax = calloc(n_t * s->kd_cap * d, sizeof(float));
            s->kinfo = calloc(n_t * s->kd_cap * 2, sizeof(uint32_t));
            s->kd_scr = calloc(nc, sizeof(kd_key));
            s->heap = calloc(s->n_thread * s->kd_cap, sizeof(bb_ent));
            if (!s->kmin || !s->kmax || !s->kinfo || !s->kd_scr || !s->heap)
                goto fail;
        }
        s->rep = calloc(1, sizeof(float));
    } else {
        s->rep = calloc(n_rep * rep_chunks(s) * d + 1, sizeof(uint16_t));
    }
    s->stat = calloc(s->n_thread * 8, sizeof(size_t));
    s->ring = calloc(p->n_layer * w * s->ld_q, sizeof(float));
    s->n_done = calloc(p->n_layer, sizeof(size_t));
    s->rope = calloc(p->window * (p->n_rot ? p->n_rot : 1), sizeof(float));
    s->scr = calloc(s->n_thread * s->scr_floats, sizeof(float));
    s->sel = calloc(s->n_thread * sel_size(s), sizeof(size_t));
    if (!s->rep || !s->ring || !s->n_done || !s->rope || !s->scr || !s->sel || !s->stat)
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
    free(s->bmin);
    free(s->bmax);
    free(s->kmin);
    free(s->kmax);
    free(s->kinfo);
    free(s->n_kd);
    free(s->kd_scr);
    free(s->heap);
    free(s->stat);
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
    if (s->p.score == LH_LH_SCORE_BOUND) {
        /* The bounds need only the cached keys: any prefix of what every layer has is kept. */
        size_t keep = n_past;
        for (size_t l = 0; l < s->p.n_layer; l++)
            keep = s->n_done[l] < keep ? s->n_done[l] : keep;
        for (size_t l = 0; l < s->p.n_layer; l++) {
            /* a search tree holding a dropped chunk goes (kd_update builds the next) */
            for (size_t g = 0; g < s->p.n_head_kv; g++)
                if (s->n_kd[l * s->p.n_head_kv + g] > keep / s->p.chunk)
                    s->n_kd[l * s->p.n_head_kv + g] = 0;
            s->n_done[l] = keep;
        }
        return keep;
    }
    /* Layers normally agree; if a forward was cut short they do not, and the answer must suit
     * every layer (lh_lh_keepable iterates to the fixed point). */
    size_t keep = lh_lh_keepable(s, n_past);
    for (size_t l = 0; l < s->p.n_layer; l++)
        s->n_done[l] = keep;
    return keep;
}

double lh_lh_bytes_per_token(const lh_lh_params *p)
{
    if (!p->chunk)
        return 0;
    if (p->score == LH_LH_SCORE_BOUND) /* min and max of the chunks; search trees twice that */
        return (p->branch_and_bound ? 6.0 : 2.0) * (double)p->n_layer * (double)p->n_head_kv *
               (double)p->head_dim * sizeof(float) / (double)p->chunk;
    return (double)p->n_layer * (double)p->n_head * (double)p->head_dim * sizeof(uint16_t) /
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
static void rotate_scaled(const lh_lh *s, float *restrict dst, const float *restrict src,
                          size_t pos, float scale)
{
    /* in one pass: this runs for every (row, chunk) pair attended to, and a separate scalar
     * scaling loop took ~14% of attend_rows */
    lh_ops_rope_apply_scaled(dst, src, scale, s->p.head_dim, s->p.n_rot,
                             s->rope + pos * s->p.n_rot);
}

/* Representation of chunk c for head h (KV head g) into s->rep (head_dim values, rounded by
 * rep_bf16).  qraw(j) is the un-rotated query of position c*w + j: from the batch when
 * it is in it, else from the ring. */
static void build_rep(const lh_lh *s, const scratch *x, size_t layer, size_t h, size_t g,
                      size_t c, const float *q, size_t pos0, const void *k, const void *v)
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
    float *pj = x->vec + w, *sv = x->vec + 2 * w;
    float *restrict abar = x->vec;   /* restrict: the column sums vectorise */
    const float *restrict at = att;
    for (size_t j = 0; j < w; j++)
        abar[j] = 0;
    for (size_t i = 0; i < w; i++)
        for (size_t j = 0; j < w; j++)
            abar[j] += at[i * w + j];
    for (size_t j = 0; j < w; j++)
        abar[j] /= (float)w;
    lh_gemm_nn(1, d, w, abar, w, vc, d, sv, d, 0.0f);
    lh_gemm_nt(1, w, d, sv, d, kc, d, pj, w, 0.0f);
    for (size_t j = 0; j < w; j++)
        pj[j] *= scale;
    lh_ops_softmax(pj, w);
    lh_gemm_nn(1, d, w, pj, w, kc, d, sv, d, 0.0f);   /* sv is free again */
    uint16_t *rep = s->rep + rep_base(s, layer, h);
    for (size_t i = 0; i < d; i++)
        rep[rep_at(d, c, i)] = rep_bf16(sv[i]);
}

/* ---- bound score: min/max tree and branch and bound ------------------------------------------ */

/* Element offset of chunk c's min / max (KV head g of layer) in bmin / bmax. */
static size_t box_off(const lh_lh *s, size_t layer, size_t g, size_t c)
{
    return ((layer * s->p.n_head_kv + g) * s->n_chunk + c) * s->p.head_dim;
}

static void fold(float *mn, float *mx, const float *a, const float *b, size_t d)
{
    for (size_t i = 0; i < d; i++) {
        mn[i] = a[i] < mn[i] ? a[i] : mn[i];
        mx[i] = b[i] > mx[i] ? b[i] : mx[i];
    }
}

/* Chunk c of KV head g has completed in this layer: its keys' min and max. */
static void box_add(lh_lh *s, size_t layer, size_t g, size_t c, const void *k, float *buf)
{
    size_t w = s->p.chunk, d = s->p.head_dim;
    const float *kc = kv_rows(&s->p, k, g, c * w, w, buf);
    size_t o = box_off(s, layer, g, c);
    float *mn = s->bmin + o, *mx = s->bmax + o;
    memcpy(mn, kc, d * sizeof(float));
    memcpy(mx, kc, d * sizeof(float));
    for (size_t j = 1; j < w; j++)
        fold(mn, mx, kc + j * d, kc + j * d, d);
}

/* ---- the search tree (branch and bound) ----
 * Chunks far apart in the text can be alike (a repeated filler, a recurring structure), and the
 * box around alike chunks is nearly as tight as each of theirs, where the box around neighbours
 * in the text is far looser than either (see "Exact sub-linear selection" at the top).  So the
 * tree groups chunks by their boxes, not by position: each node splits its chunks at the median
 * of their boxes' centres in the dimension where those centres spread most (a kd-tree), down to
 * single chunks; a node's min / max are its two children's folded.  It is rebuilt from the boxes
 * (kd_update) whenever the complete chunks reach the next multiple of KD_STEP, so it depends on
 * that count only, never on the batches that got there; chunks completed since are scored flat.
 * A build is O(n log^2 n) for n chunks (a sort per level), every KD_STEP chunks. */
#define KD_STEP 32

static int kd_cmp(const void *a, const void *b)
{
    const kd_key *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->c < y->c ? -1 : x->c > y->c;
}

/* Node (tree t, preorder index *next) over the n chunks in e; returns its index. */
static uint32_t kd_node(lh_lh *s, size_t layer, size_t g, kd_key *e, size_t n, uint32_t *next)
{
    size_t d = s->p.head_dim, t0 = (layer * s->p.n_head_kv + g) * s->kd_cap;
    uint32_t me = (*next)++;
    float *mn = s->kmin + (t0 + me) * d, *mx = s->kmax + (t0 + me) * d;
    uint32_t *inf = s->kinfo + (t0 + me) * 2;
    if (n == 1) {
        size_t o = box_off(s, layer, g, e[0].c);
        memcpy(mn, s->bmin + o, d * sizeof(float));
        memcpy(mx, s->bmax + o, d * sizeof(float));
        inf[0] = 0;
        inf[1] = e[0].c;
        return me;
    }
    /* the dimension where the centres spread most (min + max: twice the centre, same order) */
    size_t bd = 0;
    float best = -1;
    for (size_t i = 0; i < d; i++) {
        float lo = INFINITY, hi = -INFINITY;
        for (size_t j = 0; j < n; j++) {
            size_t o = box_off(s, layer, g, e[j].c) + i;
            float c = s->bmin[o] + s->bmax[o];
            lo = c < lo ? c : lo;
            hi = c > hi ? c : hi;
        }
        if (hi - lo > best) {
            best = hi - lo;
            bd = i;
        }
    }
    for (size_t j = 0; j < n; j++) {
        size_t o = box_off(s, layer, g, e[j].c) + bd;
        e[j].key = s->bmin[o] + s->bmax[o];
    }
    qsort(e, n, sizeof *e, kd_cmp);
    size_t h = n / 2;
    uint32_t l = kd_node(s, layer, g, e, h, next);
    uint32_t r = kd_node(s, layer, g, e + h, n - h, next);
    const uint32_t *il = s->kinfo + (t0 + l) * 2, *ir = s->kinfo + (t0 + r) * 2;
    memcpy(mn, s->kmin + (t0 + l) * d, d * sizeof(float));
    memcpy(mx, s->kmax + (t0 + l) * d, d * sizeof(float));
    fold(mn, mx, s->kmin + (t0 + r) * d, s->kmax + (t0 + r) * d, d);
    inf[0] = r;
    inf[1] = il[1] < ir[1] ? il[1] : ir[1];
    return me;
}

/* The trees of layer for its first n_complete chunks: rebuilt where they are not the tree of
 * chunks 1 .. KD_STEP * floor(n_complete / KD_STEP) - 1 (chunk 0 is never a candidate). */
static void kd_update(lh_lh *s, size_t layer, size_t n_complete)
{
    size_t want = n_complete / KD_STEP * KD_STEP;
    for (size_t g = 0; g < s->p.n_head_kv; g++) {
        size_t *nk = &s->n_kd[layer * s->p.n_head_kv + g];
        if (*nk == want)
            continue;
        *nk = 0;
        if (want < 2)
            continue;
        for (size_t c = 1; c < want; c++)
            s->kd_scr[c - 1] = (kd_key){0, (uint32_t)c};
        uint32_t next = 0;
        kd_node(s, layer, g, s->kd_scr, want - 1, &next);
        *nk = want;
    }
}

/* sum_i max(q_i mn_i, q_i mx_i) >= q·k for every k with mn <= k <= mx element-wise.  The one
 * function for chunks and tree nodes: every term of a node is >= the same term of a chunk under
 * it and rounding is monotone, so with the same order of additions a node's float bound is >= each
 * of its chunks' float bounds, which is what makes the pruning exact. */
static float bound_dot(const float *q, const float *mn, const float *mx, size_t d)
{
    size_t i = 0;
    float acc = 0;
#if defined(LH_HAVE_AVX2)
    __m256 a = _mm256_setzero_ps();
    for (; i + 8 <= d; i += 8) {
        __m256 vq = _mm256_loadu_ps(q + i);
        a = _mm256_add_ps(a, _mm256_max_ps(_mm256_mul_ps(vq, _mm256_loadu_ps(mn + i)),
                                           _mm256_mul_ps(vq, _mm256_loadu_ps(mx + i))));
    }
    acc = lh_hsum256(a);
#endif
    for (; i < d; i++) {
        float lo = q[i] * mn[i], hi = q[i] * mx[i];
        acc += hi > lo ? hi : lo;
    }
    return acc;
}

size_t lh_lh_bound_pos(const lh_lh_params *p, size_t t)
{
    (void)p;
    (void)t;
    return 0;   /* the un-rotated query: see "Bound score" at the top */
}

/* (sc, c) goes before (ts, tc) in the order flat scoring keeps: higher score, then earlier chunk. */
static int beats(float sc, size_t c, float ts, size_t tc)
{
    return sc > ts || (sc == ts && c < tc);
}

static void top_insert(float *ts, size_t *top, size_t *np, size_t m, float sc, size_t c)
{
    size_t n = *np;
    if (n == m && !beats(sc, c, ts[m - 1], top[m - 1]))
        return;
    size_t i = n < m ? n++ : n - 1;
    while (i > 0 && beats(sc, c, ts[i - 1], top[i - 1])) {
        ts[i] = ts[i - 1];
        top[i] = top[i - 1];
        i--;
    }
    ts[i] = sc;
    top[i] = c;
    *np = n;
}

/* Max-heap of frontier nodes by (bound, earlier first candidate). */
static int heap_before(const bb_ent *a, const bb_ent *b) { return beats(a->b, a->first, b->b, b->first); }

static void heap_push(bb_ent *h, size_t *np, bb_ent e)
{
    size_t i = (*np)++;
    while (i > 0 && heap_before(&e, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = e;
}

static bb_ent heap_pop(bb_ent *h, size_t *np)
{
    bb_ent top = h[0], e = h[--(*np)];
    size_t n = *np, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && heap_before(&h[c + 1], &h[c]))
            c++;
        if (!heap_before(&h[c], &e))
            break;
        h[i] = h[c];
        i = c;
    }
    if (n)
        h[i] = e;
    return top;
}

static void finish_sel(size_t R, size_t cc, size_t n, size_t *sel);

/* Selection (what select_from_scores gives for the bound scores of chunks 1 .. cc-R) for the
 * query qb, already rotated by lh_lh_bound_pos, of KV head g; ts is scratch (K floats).  The
 * chunks after the search tree's are scored first, flat; then the tree best first: a node is
 * expanded only while its bound could still place a chunk under it among the K-1-R best, with the
 * tie rule of flat scoring (earlier chunk first: a node carries the first chunk under it), so the
 * result is the same, visiting only the chunks and nodes whose bounds could matter.  A node may
 * hold chunks past cc-R (a prefill batch completes chunks before its later queries select): they
 * are skipped as leaves, and their min / max only loosen the bound. */
static void select_bound(const lh_lh *s, size_t layer, size_t g, const float *qb, size_t cc,
                         float *ts, bb_ent *heap, size_t *stat, size_t *sel)
{
    size_t m = s->n_top, n = 0, d = s->p.head_dim, hn = 0;
    size_t *top = sel + 1, last = cc - s->n_recent;   /* candidates 1 .. last */
    size_t tg = layer * s->p.n_head_kv + g, nk = s->n_kd[tg], t0 = tg * s->kd_cap;
    stat[0]++;
    stat[1] += last;
    if (m && last >= 1) {
        for (size_t c = nk > 1 ? nk : 1; c <= last; c++) {
            size_t o = box_off(s, layer, g, c);
            stat[2]++;
            top_insert(ts, top, &n, m, bound_dot(qb, s->bmin + o, s->bmax + o, d), c);
        }
        /* the root, then the children of popped nodes; chunks are scored as they are reached */
        uint32_t todo[2] = {0, 0};
        size_t n_todo = nk > 1 ? 1 : 0;
        for (;;) {
            for (size_t u = 0; u < n_todo; u++) {
                const uint32_t *inf = s->kinfo + (t0 + todo[u]) * 2;
                if (inf[1] > last)
                    continue;
                const float *mn = s->kmin + (t0 + todo[u]) * d, *mx = s->kmax + (t0 + todo[u]) * d;
                float b = bound_dot(qb, mn, mx, d);
                if (!inf[0]) {
                    stat[2]++;
                    top_insert(ts, top, &n, m, b, inf[1]);   /* a leaf: its chunk */
                    continue;
                }
                stat[3]++;
                if (n == m && !beats(b, inf[1], ts[m - 1], top[m - 1]))
                    continue;
                heap_push(heap, &hn, (bb_ent){ b, todo[u], inf[1] });
            }
            bb_ent e;
            do {
                if (!hn)
                    goto done;
                e = heap_pop(heap, &hn);
                if (n == m && e.b < ts[m - 1])
                    goto done;   /* the best bound left cannot place a chunk: nor can the rest */
            } while (n == m && !beats(e.b, e.first, ts[m - 1], top[m - 1]));
            n_todo = 2;
            todo[0] = e.node + 1;
            todo[1] = s->kinfo[(t0 + e.node) * 2];
        }
    }
done:
    finish_sel(s->n_recent, cc, n, sel);
}

/* Selection for a query in chunk cc >= K given score(c) for the candidates c = 1 .. cc-R
 * (score[c - 1]): fills sel (K entries, ascending).  The m = K-1-R best are kept in sel[1 ..] sorted by
 * descending score (top_insert); candidates arrive in ascending chunk order, so ties go to the
 * earlier chunk.  score doubles as the store of the running top scores: entry i is only rewritten
 * once candidate i+1 has been read, and it is scratch to every caller. */
#if defined(LH_HAVE_AVX2)
/* The same top-m of the n_cand candidates 1 .. cc-R as the scan below, for many candidates and
 * m <= 16, in two passes that branch far less (the scan's cost was its mispredicted branches: ~20
 * insertions per selection at random places, a quarter of a prefill at 128x L).  Pass 1,
 * branch-free: the maxima of 16 disjoint groups of scores; their m-th largest T has m distinct
 * candidates scoring >= it, so every one of the m best scores >= T.  Pass 2: the scan's insertion
 * over the candidates scoring >= T only, in ascending chunk order, which keeps the m best of a
 * superset of them: the same list, ties included.  Returns n (== m), or 0 when T rules out too many
 * (NaN scores): the caller scans instead; score is not written. */
#ifdef __AVX512F__
/* The AVX-512 form: 16 scores a compare, and pass 2 collects the candidates >= T (ascending, at
 * most 32; more: 0, the caller scans) with their chunks, then takes the largest m times, the
 * earliest on ties: the same list as the insertion (~25% less time per selection than the
 * 8-wide insertion form, 1022 candidates, m = 5, scores in L2). */
static size_t select_threshold(size_t m, size_t n_cand, const float *score, size_t *top)
{
    size_t i = 0;
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 g0 = ninf, g1 = ninf, g2 = ninf, g3 = ninf;
    for (; i + 64 <= n_cand; i += 64) {
        g0 = _mm512_max_ps(g0, _mm512_loadu_ps(score + i));
        g1 = _mm512_max_ps(g1, _mm512_loadu_ps(score + i + 16));
        g2 = _mm512_max_ps(g2, _mm512_loadu_ps(score + i + 32));
        g3 = _mm512_max_ps(g3, _mm512_loadu_ps(score + i + 48));
    }
    for (; i + 16 <= n_cand; i += 16)
        g0 = _mm512_max_ps(g0, _mm512_loadu_ps(score + i));
    if (i < n_cand)
        g1 = _mm512_max_ps(g1, _mm512_mask_loadu_ps(ninf, (__mmask16)((1u << (n_cand - i)) - 1),
                                                    score + i));
    /* groups: the 16 lanes.  The m-th largest: the largest left, all its copies removed at once,
     * until m are gone (the same value as one removal per pass) */
    __m512 gv = _mm512_max_ps(_mm512_max_ps(g0, g1), _mm512_max_ps(g2, g3));
    float th = -INFINITY;
    for (size_t gone = 0; gone < m;) {
        th = _mm512_reduce_max_ps(gv);
        __mmask16 eq = _mm512_cmp_ps_mask(gv, _mm512_set1_ps(th), _CMP_EQ_OQ);
        if (!eq)
            return 0;   /* NaN */
        gone += (size_t)__builtin_popcount(eq);
        gv = _mm512_mask_mov_ps(gv, eq, ninf);
    }
    const __m512 vt = _mm512_set1_ps(th);
    const __m512i chunk1 = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
    float cs[32 + 16] = {0};   /* (the masked loads below read only what was stored) */
    int32_t ci[32 + 16];
    size_t nc = 0;
    for (i = 0; i < n_cand; i += 16) {
        __mmask16 k = i + 16 <= n_cand ? (__mmask16)0xffff : (__mmask16)((1u << (n_cand - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(k, score + i);
        __mmask16 ge = _mm512_mask_cmp_ps_mask(k, v, vt, _CMP_GE_OQ);
        if (ge) {
            _mm512_storeu_ps(cs + nc, _mm512_maskz_compress_ps(ge, v));
            _mm512_storeu_si512(ci + nc, _mm512_maskz_compress_epi32(
                                             ge, _mm512_add_epi32(chunk1, _mm512_set1_epi32((int)i))));
            nc += (size_t)__builtin_popcount(ge);
            if (nc > 32)
                return 0;
        }
    }
    if (nc < m)
        return 0;
    __mmask16 k0 = (__mmask16)(nc >= 16 ? 0xffff : (1u << nc) - 1);
    __mmask16 k1 = (__mmask16)(nc >= 32 ? 0xffff : nc > 16 ? (1u << (nc - 16)) - 1 : 0);
    __m512 s0 = _mm512_mask_loadu_ps(ninf, k0, cs), s1 = _mm512_mask_loadu_ps(ninf, k1, cs + 16);
    for (size_t r = 0; r < m; r++) {
        float mx = _mm512_reduce_max_ps(_mm512_max_ps(s0, s1));
        __m512 vm = _mm512_set1_ps(mx);
        __mmask16 e0 = _mm512_cmp_ps_mask(s0, vm, _CMP_EQ_OQ);
        if (e0) {
            unsigned l = (unsigned)__builtin_ctz(e0);
            top[r] = (size_t)ci[l];
            s0 = _mm512_mask_mov_ps(s0, (__mmask16)(1u << l), ninf);
        } else {
            unsigned l = (unsigned)__builtin_ctz(_mm512_cmp_ps_mask(s1, vm, _CMP_EQ_OQ));
            top[r] = (size_t)ci[16 + l];
            s1 = _mm512_mask_mov_ps(s1, (__mmask16)(1u << l), ninf);
        }
    }
    return m;
}
#else
static size_t select_threshold(size_t m, size_t n_cand, const float *score, size_t *top)
{
    size_t nv = n_cand & ~(size_t)15, n = 0;
    __m256 a0 = _mm256_set1_ps(-INFINITY), a1 = a0;
    for (size_t i = 0; i < nv; i += 16) {
        a0 = _mm256_max_ps(a0, _mm256_loadu_ps(score + i));
        a1 = _mm256_max_ps(a1, _mm256_loadu_ps(score + i + 8));
    }
    float gm[16], ts[16], th = -INFINITY;
    _mm256_storeu_ps(gm, a0);
    _mm256_storeu_ps(gm + 8, a1);
    for (size_t r = 0; r < m; r++) {   /* the m-th largest, by m passes of max-and-remove */
        size_t b = 0;
        for (size_t j = 1; j < 16; j++)
            b = gm[j] > gm[b] ? j : b;
        th = gm[b];
        gm[b] = -INFINITY;
    }
    __m256 vt = _mm256_set1_ps(th);
    for (size_t i = 0; i < n_cand; i += 8) {
        unsigned bits;
        if (i + 8 <= n_cand)
            bits = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(score + i), vt,
                                                              _CMP_GE_OQ));
        else
            for (size_t j = bits = 0; i + j < n_cand; j++)
                bits |= (unsigned)(score[i + j] >= th) << j;
        for (; bits; bits &= bits - 1) {
            size_t idx = i + (size_t)__builtin_ctz(bits);
            top_insert(ts, top, &n, m, score[idx], idx + 1);
        }
    }
    return n == m ? n : 0;
}
#endif
#endif

static void select_from_scores(const lh_lh *s, size_t cc, float *score, size_t *sel)
{
    size_t m = s->n_top, R = s->n_recent, n = 0, last = cc - R;   /* candidates 1 .. last */
    size_t *top = sel + 1;
    float *ts = score;
#if defined(LH_HAVE_AVX2)
    if (m && m <= 16 && last >= 128 && (n = select_threshold(m, last, score, top)) == m) {
        finish_sel(R, cc, n, sel);
        return;
    }
    n = 0;
#endif
    for (size_t c = 1; m && c <= last; c++) {
#if defined(LH_HAVE_AVX2)
        /* Once the list is full almost every candidate falls below its last entry: skip eight at
         * a time while none beats it (the compare is the scalar test's, NaN included; entries
         * past m are never written, so the loads see the scores). */
        if (n == m) {
            __m256 th = _mm256_set1_ps(ts[m - 1]);
            while (c + 7 <= last &&
                   !_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(score + c - 1), th,
                                                     _CMP_GT_OQ)))
                c += 8;
            if (c > last)
                break;
        }
#endif
        top_insert(ts, top, &n, m, score[c - 1], c);
    }
    finish_sel(R, cc, n, sel);
}

/* sel[1 .. n] hold the chosen candidates: sorts them and adds chunk 0 and the last R chunks
 * cc-R+1 .. cc. */
static void finish_sel(size_t R, size_t cc, size_t n, size_t *sel)
{
    size_t *top = sel + 1;
    for (size_t i = 1; i < n; i++) {
        size_t c = top[i], j = i;
        while (j > 0 && top[j - 1] > c) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = c;
    }
    sel[0] = 0;
    for (size_t i = 0; i < R; i++)
        sel[1 + n + i] = cc + 1 - R + i;
}

/* One query against the rows of one chunk, straight from the cache (kernels/rows.h): a padded
 * GEMM would waste half (QKᵀ) to three quarters (PV) of its multiply-adds on a single row and F16
 * would need a conversion pass first.  tools/lhbench: decode ~2x faster. */
static inline float elem(int f16, const void *kv, size_t i)
{
    return f16 ? lh_f16_to_f32(((const uint16_t *)kv)[i]) : ((const float *)kv)[i];
}

/* s[j] = q · row j, for the n rows of d elements (F16 or F32) starting at element off of kv */
static void dots(int f16, size_t d, const float *q, const void *kv, size_t off, size_t n, float *s)
{
#ifdef LH_HAVE_ROWS
    if (d % 8 == 0) {
        const char *b = (const char *)kv + off * (f16 ? sizeof(uint16_t) : sizeof(float));
        f16 ? direct_scores(1, q, b, n, d, s) : direct_scores(0, q, b, n, d, s);
        return;
    }
#endif
    for (size_t j = 0; j < n; j++) {
        float acc = 0;
        for (size_t i = 0; i < d; i++)
            acc += q[i] * elem(f16, kv, off + j * d + i);
        s[j] = acc;
    }
}

/* Asks for the n rows of KV head g from pos into the cache ahead of their use: past the window
 * the selected chunks are scattered over a cache far larger than the caches, and a decode step
 * otherwise waits on every chunk's first lines in turn. */
static void prefetch_rows(const lh_lh_params *p, const void *kv, size_t g, size_t pos, size_t n)
{
    size_t elt = kv_elt(p);
    const char *b = (const char *)kv + (g * p->n_ctx + pos) * p->head_dim * elt;
    size_t size = n * p->head_dim * elt;
    for (size_t o = 0; o < size; o += 64)
        __builtin_prefetch(b + o);
}

/* o += sum_j pr[j] · row j, for the n rows of head_dim starting at element off of kv */
static void row_pv(const lh_lh_params *p, const float *pr, const void *kv, size_t off, size_t n,
                   float *o)
{
    size_t d = p->head_dim;
    int f16 = p->kv_type == LH_TYPE_F16;
#ifdef LH_HAVE_ROWS
    if (d % 8 == 0) {
        const char *b = (const char *)kv + off * (f16 ? sizeof(uint16_t) : sizeof(float));
        f16 ? direct_pv(1, pr, b, n, d, o) : direct_pv(0, pr, b, n, d, o);
        return;
    }
#endif
    for (size_t i = 0; i < d; i++) {
        float acc = o[i];
        for (size_t j = 0; j < n; j++)
            acc += pr[j] * elem(f16, kv, off + j * d + i);
        o[i] = acc;
    }
}

/* sa[j] = qa · key j and sb[j] = qb · key j for the n keys of head_dim at kc (in the cache's type,
 * read in place); qb == qa, sb == sa for one row.  The arithmetic of a row's scores depends on
 * head_dim and n only, never on the other row: a query's attention does not depend on which
 * queries share an item (batches cut elsewhere, a restored prompt cache and a fresh prefill give
 * the same bits). */
static void chunk_qk(const lh_lh_params *p, const float *qa, const float *qb, const char *kc,
                     size_t n, float *sa, float *sb, lh_pf *pf)
{
    int f16 = p->kv_type == LH_TYPE_F16;
    size_t d = p->head_dim;
#if defined(LH_HAVE_ROWS) && defined(__AVX512F__)
    if (d == 64) {   /* each key row loaded once for both */
        f16 ? scores2_64(1, qa, qb, kc, n, sa, sb, pf) : scores2_64(0, qa, qb, kc, n, sa, sb, pf);
        return;
    }
#endif
    for (size_t i = 0; i < n / 8; i++)   /* this call's share of the prefetch, at once */
        pf_step(pf);
    dots(f16, d, qa, kc, 0, n, sa);
    if (sb != sa)
        dots(f16, d, qb, kc, 0, n, sb);
}

/* o[i] += sum_j pr[i][j] · value j for i < 4, the n values of head_dim at vc; rows past n_live
 * repeat row 0 (same pointers: the same sums stored twice).  Per row the same arithmetic whatever
 * the other rows, as in chunk_qk. */
static void chunk_pv(const lh_lh_params *p, const float *const *pr, const char *vc, size_t n,
                     float *const *o, size_t n_live, lh_pf *pf)
{
#if defined(LH_HAVE_ROWS) && defined(__AVX512F__)
    if (p->head_dim == 64) {   /* each value row loaded once for the four */
        p->kv_type == LH_TYPE_F16
            ? pv4_64p(1, pr[0], pr[1], pr[2], pr[3], vc, n, o[0], o[1], o[2], o[3], pf)
            : pv4_64p(0, pr[0], pr[1], pr[2], pr[3], vc, n, o[0], o[1], o[2], o[3], pf);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        pf_step(pf);
    for (size_t i = 0; i < n_live; i++)
        row_pv(p, pr[i], vc, 0, n, o[i]);
}

/* The nb queries q_j (stride ldq) as selection scores them: qp[j * d/2 + k] holds rep_bf16 of
 * dimensions 2k (low half) and 2k+1 (high half). */
static void rep_queries(const float *q, size_t ldq, size_t nb, size_t d, uint32_t *qp)
{
    size_t hd2 = d / 2;
    for (size_t j = 0; j < nb; j++) {
        const float *qj = q + j * ldq;
        uint32_t *pj = qp + j * hd2;
        size_t i = 0;
#ifdef __AVX512F__
        /* rep_bf16, 16 values at a time */
        const __m512i one = _mm512_set1_epi32(1), rnd = _mm512_set1_epi32(0x7fff);
        const __m512i abs = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
        const __m512 tiny = _mm512_set1_ps(0x1p-50f);
        for (; i + 16 <= d; i += 16) {
            __m512 x = _mm512_loadu_ps(qj + i);
            __m512i u = _mm512_castps_si512(x);
            __m512i r = _mm512_srli_epi32(
                _mm512_add_epi32(_mm512_add_epi32(u, rnd),
                                 _mm512_and_si512(_mm512_srli_epi32(u, 16), one)), 16);
            __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, abs), inf);
            r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
            r = _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(_mm512_abs_ps(x), tiny, _CMP_NLT_UQ), r);
            _mm256_storeu_si256((__m256i *)(pj + i / 2), _mm512_cvtepi32_epi16(r));
        }
#endif
        for (; i < d; i += 2)
            pj[i / 2] = (uint32_t)rep_bf16(qj[i]) | (uint32_t)rep_bf16(qj[i + 1]) << 16;
    }
}

#ifdef __AVX512F__
/* Lanes lo .. hi-1 of tile t (chunks t*REP_T ..) of v to out[c - c0], the lanes within [c0, c1);
 * moved down to lane 0 first when the tile starts before c0. */
static inline __attribute__((always_inline)) void rep_store(float *out, size_t t, size_t c0,
                                                            size_t c1, __m512 v)
{
    size_t first = t * REP_T, lo = first < c0 ? c0 : first;
    size_t hi = first + REP_T < c1 ? first + REP_T : c1;
    __mmask16 low = (__mmask16)((1u << (hi - lo)) - 1);
    if (lo != first)
        v = _mm512_maskz_compress_ps((__mmask16)(low << (lo - first)), v);
    _mm512_mask_storeu_ps(out + (lo - c0), low, v);
}

/* acc += the products of a query's pair of dimensions (q: the pair in every lane) with the same
 * pair of 16 chunks (r), the high dimension's product added first, then the low one's: one
 * vdpbf16ps, or (without AVX512_BF16) the same two roundings as two FMAs of exact products. */
static inline __attribute__((always_inline)) __m512 rep_dp(__m512 acc, __m512i q, __m512i r)
{
#ifdef __AVX512BF16__
    return _mm512_dpbf16_ps(acc, (__m512bh)q, (__m512bh)r);
#else
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    acc = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(q, hi)),
                          _mm512_castsi512_ps(_mm512_and_si512(r, hi)), acc);
    return _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(q, 16)),
                           _mm512_castsi512_ps(_mm512_slli_epi32(r, 16)), acc);
#endif
}

/* Pair k of tile t: dimensions 2k and 2k+1 of its REP_T chunks. */
#define REP_LD(t) _mm512_loadu_si512(rb + (t) * REP_T * d + k * 2 * REP_T)

/* The scores of a tile group: out[j * ldo + c - c0] = q_j · rep_c for the R <= 8 queries of qp
 * (rep_queries, stride hd2 = d/2) and the chunks c of tiles t0 .. t0+T-1 (T <= 3) inside [c0, c1),
 * from the representations at rb (a rep_base).  Per score one chain over the pairs k = 0 ..
 * d/2-1, as rep_score_ref: the bits do not depend on R, T or which queries share a call (a batch
 * cut elsewhere, a decode step and a prefill score alike).  R x T accumulators, named (an array
 * of them stayed in memory, GCC -O2); R and T constants at every call. */
static inline __attribute__((always_inline)) void rep_tiles(size_t R, size_t T, const uint32_t *qp,
                                                            const uint16_t *rb, size_t d,
                                                            size_t t0, size_t c0, size_t c1,
                                                            float *out, size_t ldo)
{
    size_t hd2 = d / 2;
#define DECL(r) __m512 a##r##0 = _mm512_setzero_ps(), a##r##1 = a##r##0, a##r##2 = a##r##0
    DECL(0); DECL(1); DECL(2); DECL(3); DECL(4); DECL(5); DECL(6); DECL(7);
#undef DECL
    for (size_t k = 0; k < hd2; k++) {
        __m512i k0 = REP_LD(t0);
        __m512i k1 = T > 1 ? REP_LD(t0 + 1) : k0, k2 = T > 2 ? REP_LD(t0 + 2) : k0;
#define ROW(r)                                                                                \
    if (R > r) {                                                                              \
        __m512i b_ = _mm512_set1_epi32((int)qp[r * hd2 + k]);                                 \
        a##r##0 = rep_dp(a##r##0, b_, k0);                                                    \
        if (T > 1)                                                                            \
            a##r##1 = rep_dp(a##r##1, b_, k1);                                                \
        if (T > 2)                                                                            \
            a##r##2 = rep_dp(a##r##2, b_, k2);                                                \
    }
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5) ROW(6) ROW(7)
#undef ROW
    }
#define STORE(r)                                                                              \
    if (R > r) {                                                                              \
        rep_store(out + r * ldo, t0, c0, c1, a##r##0);                                        \
        if (T > 1)                                                                            \
            rep_store(out + r * ldo, t0 + 1, c0, c1, a##r##1);                                \
        if (T > 2)                                                                            \
            rep_store(out + r * ldo, t0 + 2, c0, c1, a##r##2);                                \
    }
    STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7)
#undef STORE
}

/* One query against eight tiles: eight independent chains (decode). */
static inline __attribute__((always_inline)) void rep_tiles8(const uint32_t *qp, const uint16_t *rb,
                                                             size_t d, size_t t0, size_t c0,
                                                             size_t c1, float *out)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (size_t k = 0; k < d / 2; k++) {
        __m512i b = _mm512_set1_epi32((int)qp[k]);
        a0 = rep_dp(a0, b, REP_LD(t0));
        a1 = rep_dp(a1, b, REP_LD(t0 + 1));
        a2 = rep_dp(a2, b, REP_LD(t0 + 2));
        a3 = rep_dp(a3, b, REP_LD(t0 + 3));
        a4 = rep_dp(a4, b, REP_LD(t0 + 4));
        a5 = rep_dp(a5, b, REP_LD(t0 + 5));
        a6 = rep_dp(a6, b, REP_LD(t0 + 6));
        a7 = rep_dp(a7, b, REP_LD(t0 + 7));
    }
    rep_store(out, t0, c0, c1, a0);
    rep_store(out, t0 + 1, c0, c1, a1);
    rep_store(out, t0 + 2, c0, c1, a2);
    rep_store(out, t0 + 3, c0, c1, a3);
    rep_store(out, t0 + 4, c0, c1, a4);
    rep_store(out, t0 + 5, c0, c1, a5);
    rep_store(out, t0 + 6, c0, c1, a6);
    rep_store(out, t0 + 7, c0, c1, a7);
}
#undef REP_LD
#endif

/* rep_tiles' arithmetic, one score at a time (other CPUs, and lh_lh_set_check's reference): from
 * 0, per pair of dimensions the high one's product added, then the low one's, each rounded (the
 * products of two BF16 values are exact in F32, so an FMA rounds once, as vdpbf16ps does). */
static float rep_score_ref(const uint32_t *qp, const uint16_t *rb, size_t d, size_t c)
{
    float acc = 0.0f;
    for (size_t k = 0; k < d / 2; k++) {
        acc = fmaf(lh_bf16_to_f32((uint16_t)(qp[k] >> 16)), lh_bf16_to_f32(rb[rep_at(d, c, 2 * k + 1)]), acc);
        acc = fmaf(lh_bf16_to_f32((uint16_t)qp[k]), lh_bf16_to_f32(rb[rep_at(d, c, 2 * k)]), acc);
    }
    return acc;
}

#ifdef __AVX512F__
/* rep_tiles for the (R, T) shapes rep_scores uses */
static void rep_tiles_any(size_t R, size_t T, const uint32_t *qp, const uint16_t *rb, size_t d,
                          size_t t0, size_t c0, size_t c1, float *out, size_t ldo)
{
#define SHAPE(R_, T_)                                                                         \
    if (R == R_ && T == T_) {                                                                 \
        rep_tiles(R_, T_, qp, rb, d, t0, c0, c1, out, ldo);                                   \
        return;                                                                               \
    }
    SHAPE(8, 3) SHAPE(4, 3) SHAPE(1, 3) SHAPE(8, 1) SHAPE(4, 1) SHAPE(1, 1)
#undef SHAPE
    if (R == 1 && T == 8)
        rep_tiles8(qp, rb, d, t0, c0, c1, out);
}
#endif

/* out[j * ldo + c - c0] = q_j · rep_c for the nb queries q_j (stride ldq) and the chunks c0 .. c1-1
 * of (layer, head), the queries rounded as the representations are (rep_queries into qp: nb x
 * d/2): a prefill block's queries eight at a time against three tiles (24 accumulators, each
 * tile load shared by eight queries), a decode query against eight tiles (eight independent
 * chains).  stat (lh_lh_set_check): every score is compared with rep_score_ref and every
 * rounded query value with rep_bf16, and stat[4] counts those that differ in any bit. */
static void rep_scores(const lh_lh *s, size_t layer, size_t h, size_t nb, const float *q,
                       size_t ldq, uint32_t *qp, size_t c0, size_t c1, float *out, size_t ldo,
                       size_t *stat)
{
    size_t d = s->p.head_dim, hd2 = d / 2;
    const uint16_t *rb = s->rep + rep_base(s, layer, h);
    if (c1 <= c0)
        return;
    rep_queries(q, ldq, nb, d, qp);
#ifdef __AVX512F__
    size_t t_end = (c1 + REP_T - 1) / REP_T, T = nb == 1 ? 8 : 3;
    for (size_t t0 = c0 / REP_T; t0 < t_end; t0 += T) {
        size_t nt = t_end - t0 < T ? t_end - t0 : T;
        for (size_t j = 0; j < nb;) {
            size_t R = nb - j >= 8 ? 8 : nb - j >= 4 ? 4 : 1;
            if (nt == T)
                rep_tiles_any(R, T, qp + j * hd2, rb, d, t0, c0, c1, out + j * ldo, ldo);
            else
                for (size_t t = t0; t < t0 + nt; t++)
                    rep_tiles_any(R, 1, qp + j * hd2, rb, d, t, c0, c1, out + j * ldo, ldo);
            j += R;
        }
    }
#else
    for (size_t j = 0; j < nb; j++)
        for (size_t c = c0; c < c1; c++)
            out[j * ldo + c - c0] = rep_score_ref(qp + j * hd2, rb, d, c);
#endif
    if (stat)
        for (size_t j = 0; j < nb; j++) {
            for (size_t i = 0; i < d; i++)
                stat[4] += (uint16_t)(qp[j * hd2 + i / 2] >> (i % 2 * 16)) != rep_bf16(q[j * ldq + i]);
            for (size_t c = c0; c < c1; c++) {
                float want = rep_score_ref(qp + j * hd2, rb, d, c);
                stat[4] += memcmp(&want, out + j * ldo + c - c0, sizeof want) != 0;
            }
        }
}

/* A work item of lh_lh_layer: KV head g, its query heads h0 .. h0+hp-1 and queries i0 .. i0+qn-1
 * of the batch.  Row r is query i0 + r / hp of head h0 + r % hp (query-major: inside the window
 * the rows that hold a chunk are then one contiguous run). */
typedef struct {
    size_t g, h0, hp, i0, qn;
} item;

static size_t row_t(const item *it, size_t pos0, size_t r) { return pos0 + it->i0 + r / it->hp; }

/* Slots of the layout of the query at t: chunks 0 .. cc inside the window, else K. */
static size_t n_slots(const lh_lh *s, size_t t)
{
    return t < s->p.window ? t / s->p.chunk + 1 : s->n_keep;
}

/* Query and output of row r: (head, query) -> element offset in q and out (same layout). */
static size_t row_off(const lh_lh *s, const item *it, size_t r)
{
    return (it->i0 + r / it->hp) * s->ld_q + (it->h0 + r % it->hp) * s->p.head_dim;
}

/* The selection of every row into x->sel (stride K, ascending, the last its own chunk): the
 * queries of one head and one chunk (a block) are scored together. */
static void select_rows(const lh_lh *s, const scratch *x, size_t layer, const item *it,
                        const float *q, size_t pos0)
{
    const lh_lh_params *p = &s->p;
    size_t w = p->chunk, d = p->head_dim, L = p->window, K = s->n_keep, ldq = s->ld_q;
    size_t hp = it->hp, ldsel = hp * K;   /* one query to the next, same head */
    size_t R = s->n_recent;   /* candidates 1 .. cc-R */
    int bound = p->score == LH_LH_SCORE_BOUND;
    for (size_t hh = 0; hh < hp; hh++) {
        size_t h = it->h0 + hh, g = it->g;
        for (size_t j = 0; j < it->qn;) {
            size_t i = it->i0 + j, t = pos0 + i, cc = t / w;
            size_t nb = (cc + 1) * w - t;       /* queries of this item in chunk cc */
            if (nb > it->qn - j)
                nb = it->qn - j;
            const float *qb = q + i * ldq + h * d;
            size_t *sel = x->sel + (j * hp + hh) * K;
            if (t < L) {
                /* identity layout: chunks 0 .. cc at their own slots */
                for (size_t jj = 0; jj < nb; jj++)
                    for (size_t c = 0; c <= cc; c++)
                        sel[jj * ldsel + c] = c;
            } else if (bound && !p->branch_and_bound && !s->check) {
                /* every candidate's bound, chunk-major so that each min/max pair is read once
                 * for the block; q un-rotated (lh_lh_bound_pos is 0) */
                size_t o = box_off(s, layer, g, 0);
                for (size_t c = 1; s->n_top && c + R <= cc; c++)
                    for (size_t jj = 0; jj < nb; jj++)
                        x->ss[jj * s->n_chunk + c - 1] =
                            bound_dot(qb + jj * ldq, s->bmin + o + c * d, s->bmax + o + c * d, d);
                for (size_t jj = 0; jj < nb; jj++)
                    select_from_scores(s, cc, x->ss + jj * s->n_chunk, sel + jj * ldsel);
                x->stat[0] += nb;
                x->stat[1] += nb * (cc - R);
                x->stat[2] += s->n_top ? nb * (cc - R) : 0;
            } else if (bound) {
                for (size_t jj = 0; jj < nb; jj++) {
                    size_t *sj = sel + jj * ldsel;
                    rotate_scaled(s, x->qb, qb + jj * ldq, lh_lh_bound_pos(p, t + jj), 1.0f);
                    select_bound(s, layer, g, x->qb, cc, x->ss, x->heap, x->stat, sj);
                    if (s->check) {
                        /* flat: bound scores of chunks 0 .. cc-R after the K floats select_bound
                         * used */
                        float *sc = x->ss + K;
                        for (size_t c = 0; c + R <= cc; c++) {
                            size_t o = box_off(s, layer, g, c);
                            sc[c] = bound_dot(x->qb, s->bmin + o, s->bmax + o, d);
                        }
                        select_from_scores(s, cc, sc + 1, x->uc);
                        x->stat[4] += memcmp(x->uc, sj, K * sizeof(size_t)) != 0;
                    }
                }
            } else {
                /* the block's queries against the representations of chunks 1 .. cc-R */
                if (s->n_top)
                    rep_scores(s, layer, h, nb, qb, ldq, x->qp, 1, cc - R + 1, x->ss, s->n_chunk,
                               s->check ? x->stat : NULL);
                for (size_t jj = 0; jj < nb; jj++)
                    select_from_scores(s, cc, x->ss + jj * s->n_chunk, sel + jj * ldsel);
                x->stat[0] += nb;
                x->stat[1] += nb * (cc - R);
                x->stat[2] += s->n_top ? nb * (cc - R) : 0;
            }
            j += nb;
        }
    }
}

/* The chunks uc[u+1 .. u+4] of the head's cache at h (chunk stride cb bytes) into b, NULL past
 * the n_u of the union. */
static const char *const *next4(const char *h, const size_t *uc, size_t u, size_t n_u, size_t cb,
                                const char **b)
{
    for (size_t k = 0; k < 4; k++)
        b[k] = u + 1 + k < n_u ? h + uc[u + 1 + k] * cb : NULL;
    return b;
}

/* Attention of an item's rows to their selected chunks (select_rows).  Each chunk in the union of
 * the selections of all rows (several blocks of queries, every query head of the KV head) is read
 * (and converted) once: the rows that chose it, each query rotated for the slot it has in its own
 * layout, form one QKᵀ and one PV product.  Rows of one KV head share its cache, so the query
 * heads of a group read a chunk they both chose once, and so do the blocks of a batch: on random
 * selections at 128x L (K = 8, w = 64, two heads, 256 queries) that is ~40% of the reads of one
 * block and one head at a time.  A chunk that the rows holding it hold at one slot and in
 * consecutive rows (chunk 0, and every chunk inside the window) is done in place. */
static void attend_rows(const lh_lh *s, const scratch *x, const item *it, size_t pos0,
                        const float *q, const void *k, const void *v, float *out)
{
    size_t w = s->p.chunk, d = s->p.head_dim, ld = s->p.window, K = s->n_keep, g = it->g;
    size_t n_rows = it->hp * it->qn, t_end = pos0 + it->i0 + it->qn, c_max = (t_end - 1) / w;
    float scale = 1.0f / sqrtf((float)d);
    const size_t *sel = x->sel;
    size_t *cur = x->cur, *uc = x->uc, *un = x->un, *ur = x->ur, *us = x->us;
    size_t n_u = 0, n_e = 0;

    /* Union of the selections in ascending chunk order; for every chunk the rows that chose it
     * (in row order) and the slot it has in each.  Few rows: merge the sorted lists (~n_u * rows
     * steps); more: a counting sort over chunks 0 .. c_max (entries + c_max steps). */
    if (n_rows > 1 && n_rows * n_rows * K > c_max) {
        for (size_t r = 0; r < n_rows; r++)
            for (size_t m = 0, ns = n_slots(s, row_t(it, pos0, r)); m < ns; m++)
                cur[sel[r * K + m]]++;
        for (size_t c = 0; c <= c_max; c++)
            if (cur[c]) {
                uc[n_u] = c;
                un[n_u++] = cur[c];
                size_t n_c = cur[c];
                cur[c] = n_e;     /* from here: the next free entry of chunk c */
                n_e += n_c;
            }
        for (size_t r = 0; r < n_rows; r++)
            for (size_t m = 0, ns = n_slots(s, row_t(it, pos0, r)); m < ns; m++) {
                size_t e = cur[sel[r * K + m]]++;
                ur[e] = r;
                us[e] = m;
            }
        for (size_t u = 0; u < n_u; u++)
            cur[uc[u]] = 0;
    } else {
        for (size_t r = 0; r < n_rows; r++)
            cur[r] = 0;
        for (;;) {
            size_t c = SIZE_MAX;
            for (size_t r = 0; r < n_rows; r++)
                if (cur[r] < n_slots(s, row_t(it, pos0, r)) && sel[r * K + cur[r]] < c)
                    c = sel[r * K + cur[r]];
            if (c == SIZE_MAX)
                break;
            uc[n_u] = c;
            un[n_u] = 0;
            for (size_t r = 0; r < n_rows; r++)
                if (cur[r] < n_slots(s, row_t(it, pos0, r)) && sel[r * K + cur[r]] == c) {
                    ur[n_e] = r;
                    us[n_e++] = cur[r]++;
                    un[n_u]++;
                }
            n_u++;
        }
        for (size_t r = 0; r < n_rows; r++)
            cur[r] = 0;   /* the counting sort's invariant */
    }

    for (size_t r = 0; r < n_rows; r++) {
        size_t t = row_t(it, pos0, r);
        x->rq[r] = row_off(s, it, r);
        x->rp[r] = (n_slots(s, t) - 1) * w + t % w;   /* P: the query's layout position */
    }

    /* Scores.  Row r of x->sc is its query's layout: slot m at columns m*w .. m*w+w-1.  Every
     * key of a chunk is scored (chunk_qk), as far as the cache goes, written or not: what lies
     * past a row's own key is masked by its softmax, and each key's score is its own lanes. */
    const size_t n_ctx = s->p.n_ctx, elt = kv_elt(&s->p);
    const char *kh = (const char *)k + g * n_ctx * d * elt, *vh = (const char *)v + g * n_ctx * d * elt;
    const char *nb4[4];
    /* decode: every selected chunk's keys and values, all requests in flight at once; prefill: the
     * cursors below, four chunks ahead (pf, NULL in decode: it would fetch the same lines again) */
    int decode = it->qn == 1;
    if (decode)
        for (size_t u = 0; u < n_u; u++) {
            size_t nk = t_end - uc[u] * w < w ? t_end - uc[u] * w : w;
            prefetch_rows(&s->p, k, g, uc[u] * w, nk);
            prefetch_rows(&s->p, v, g, uc[u] * w, nk);
        }
    for (size_t u = 0, e = 0; u < n_u; e += un[u], u++) {
        size_t c = uc[u], n_c = un[u], nk = n_ctx - c * w < w ? n_ctx - c * w : w;
        /* query position P = last*w + t mod w, slot m starts at m*w: rotate by the difference */
        for (size_t j = 0; j < n_c; j++) {
            size_t r = ur[e + j];
            rotate_scaled(s, x->qr + j * d, q + x->rq[r], x->rp[r] - us[e + j] * w, scale);
        }
        const char *kc = kh + c * w * d * elt;
        /* the next four chunks' keys are fetched over this one's steps, a quarter each (past
         * the window the chunks lie scattered over a cache far larger than the caches) */
        lh_pf pf = pf_over(next4(kh, uc, u, n_u, w * d * elt, nb4), w * d * elt,
                           (n_c + 1) / 2 * (nk / 8));
        for (size_t j = 0; j < n_c; j += 2) {
            size_t j1 = j + 1 < n_c ? j + 1 : j;   /* an odd row is paired with itself */
            chunk_qk(&s->p, x->qr + j * d, x->qr + j1 * d, kc, nk,
                     x->sc + ur[e + j] * ld + us[e + j] * w, x->sc + ur[e + j1] * ld + us[e + j1] * w,
                     decode ? NULL : &pf);
        }
    }
    for (size_t r = 0; r < n_rows; r++) {
        float *row = x->sc + r * ld;
        size_t t = row_t(it, pos0, r), ns = n_slots(s, t);
        size_t n = (ns - 1) * w + t % w + 1;   /* keys up to and including its own */
        lh_ops_softmax(row, n);
        for (size_t j = n; j < ns * w; j++)
            row[j] = 0.0f;
    }

    /* x->or = sum over the union of P · V (values up to the item's last query: every row's
     * probabilities past its own key are 0, which adds nothing), then copied out */
    float *o = x->or;
    memset(o, 0, n_rows * d * sizeof(float));
    for (size_t u = 0, e = 0; u < n_u; e += un[u], u++) {
        size_t c = uc[u], n_c = un[u], nk = t_end - c * w < w ? t_end - c * w : w;
        const char *vc = vh + c * w * d * elt;
        lh_pf pf = pf_over(next4(vh, uc, u, n_u, w * d * elt, nb4), w * d * elt,
                           (n_c + 3) / 4 * nk);   /* as for the keys */
        for (size_t j = 0; j < n_c; j += 4) {
            size_t jj[4];
            for (size_t i = 0; i < 4; i++)
                jj[i] = j + i < n_c ? j + i : j;   /* missing rows repeat the first */
            const float *pr[4];
            float *orow[4];
            for (size_t i = 0; i < 4; i++) {
                pr[i] = x->sc + ur[e + jj[i]] * ld + us[e + jj[i]] * w;
                orow[i] = o + ur[e + jj[i]] * d;
            }
            chunk_pv(&s->p, pr, vc, nk, orow, n_c - j < 4 ? n_c - j : 4, decode ? NULL : &pf);
        }
    }
    for (size_t r = 0; r < n_rows; r++)
        memcpy(out + x->rq[r], o + r * d, d * sizeof(float));
}

/* Representations of the chunks of head h that complete in this batch (rep score only). */
static void head_reps(const lh_lh *s, size_t tid, size_t layer, size_t h, const float *q,
                      size_t n_q, size_t pos0, const void *k, const void *v)
{
    size_t w = s->p.chunk, g = h / (s->p.n_head / s->p.n_head_kv);
    scratch x = scratch_of(s, tid);
    for (size_t c = pos0 / w; c < (pos0 + n_q) / w; c++)
        build_rep(s, &x, layer, h, g, c, q, pos0, k, v);
}

/* The next smaller divisor of n below m (m > 1). */
static size_t smaller_divisor(size_t n, size_t m)
{
    for (m--; m > 1 && n % m; m--)
        ;
    return m;
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
    /* The chunks' min / max and the search trees are per KV head and read by all heads of its
     * group: made first, serially (a min/max pass over the new keys, and a tree every KD_STEP
     * chunks: far less work than the attention). */
    int bound = s->p.score == LH_LH_SCORE_BOUND;
    if (bound) {
        for (size_t c = pos0 / s->p.chunk; c < (pos0 + n_q) / s->p.chunk; c++)
            for (size_t g = 0; g < s->p.n_head_kv; g++)
                box_add(s, layer, g, c, k, s->scr);
        if (s->kmin)
            kd_update(s, layer, (pos0 + n_q) / s->p.chunk);
    }
    /* Work items: a KV head with all query heads of its group and as many queries as the scratch
     * holds rows (s->max_rows), split further (fewer heads, then fewer queries) until there is an
     * item for every thread.  Each item writes only its rows of out; new representations are
     * made first, one head per thread.  Tiny batches (a few thousand multiply-adds per head) stay
     * serial: waking the team costs more than the work, and far more when the cores are shared
     * (the unit tests' shapes). */
    size_t n_kv = s->p.n_head_kv, grp = s->p.n_head / n_kv, hp = grp, w = s->p.chunk;
    size_t n_thr = s->n_thread, c0 = pos0 / w, n_blk = (pos0 + n_q - 1) / w - c0 + 1;
    size_t blk = n_q < w ? n_q : w;   /* the most queries of a block */
    while (hp > 1 && (n_kv * (grp / hp) < n_thr || hp * blk > s->max_rows))
        hp = smaller_divisor(grp, hp);
    /* items hold whole blocks (a chunk's queries of the batch): the queries a block scores
     * together do not depend on where the batch was cut beyond it */
    size_t n_hi = n_kv * (grp / hp), bpi = s->max_rows / hp / w;
    bpi = bpi ? bpi : 1;
    size_t n_qp = (n_blk + bpi - 1) / bpi;
    if (n_hi * n_qp < n_thr) {
        n_qp = (n_thr + n_hi - 1) / n_hi < n_blk ? (n_thr + n_hi - 1) / n_hi : n_blk;
        bpi = (n_blk + n_qp - 1) / n_qp;
        n_qp = (n_blk + bpi - 1) / bpi;
    }
    long n_item = (long)(n_hi * n_qp), n_head = (long)s->p.n_head;
    size_t n_key = pos0 + n_q < s->p.window ? pos0 + n_q : s->p.window;
    int big = (double)n_q * (double)s->p.n_head * (double)n_key * (double)s->p.head_dim >= 65536.0;
    (void)big;
    OMP(omp parallel num_threads((int)n_thr) if(big))
    {
        size_t tid = 0;
#ifdef _OPENMP
        tid = (size_t)omp_get_thread_num();
#endif
        if (!bound) {
            OMP(omp for schedule(static))
            for (long h = 0; h < n_head; h++)
                head_reps(s, tid, layer, (size_t)h, q, n_q, pos0, k, v);
        }
        OMP(omp for schedule(dynamic, 1))
        for (long ix = 0; ix < n_item; ix++) {
            size_t hi = (size_t)ix / n_qp, b0 = (size_t)ix % n_qp * bpi;
            size_t b1 = b0 + bpi < n_blk ? b0 + bpi : n_blk;
            size_t i0 = b0 ? (c0 + b0) * w - pos0 : 0, i1 = b1 < n_blk ? (c0 + b1) * w - pos0 : n_q;
            item it = { hi / (grp / hp), hi / (grp / hp) * grp + hi % (grp / hp) * hp, hp, i0,
                        i1 - i0 };
            scratch x = scratch_of(s, tid);
            select_rows(s, &x, layer, &it, q, pos0);
            attend_rows(s, &x, &it, pos0, q, k, v, out);
        }
    }

    /* Keep the last w queries of every head for chunks that complete in a later batch. */
    if (!bound) {
        float *ring = s->ring + layer * w * s->ld_q;
        size_t p_from = n_q > w ? pos0 + n_q - w : pos0;
        for (size_t pos = p_from; pos < pos0 + n_q; pos++)
            memcpy(ring + (pos % w) * s->ld_q, q + (pos - pos0) * s->ld_q,
                   s->ld_q * sizeof(float));
    }
    s->n_done[layer] = pos0 + n_q;
    return 0;
}

/* The scores of chunks 0 .. n-1 (score[c]) for head `head`'s query at t, flat; qb (head_dim)
 * receives the query as the bound rotates it. */
static void flat_scores(const lh_lh *s, size_t layer, size_t head, const float *q_head, size_t t,
                        size_t n, float *score, float *qb)
{
    size_t d = s->p.head_dim, g = head / (s->p.n_head / s->p.n_head_kv);
    if (s->p.score == LH_LH_SCORE_BOUND) {
        rotate_scaled(s, qb, q_head, lh_lh_bound_pos(&s->p, t), 1.0f);
        for (size_t c = 0; c < n; c++) {
            size_t o = box_off(s, layer, g, c);
            score[c] = bound_dot(qb, s->bmin + o, s->bmax + o, d);
        }
        return;
    }
    rep_scores(s, layer, head, 1, q_head, s->p.head_dim, (uint32_t *)qb, 0, n, score, n, NULL);
}

static size_t select_any(const lh_lh *s, size_t layer, size_t head, const float *q_head, size_t t,
                         size_t *chunks, size_t cap, int flat)
{
    size_t w = s->p.chunk, d = s->p.head_dim, K = s->n_keep, cc = t / w;
    if (layer >= s->p.n_layer || head >= s->p.n_head || cap < K ||
        (cc + 1 > s->n_recent && (cc + 1 - s->n_recent) * w > s->n_done[layer]))
        return 0;
    if (t < s->p.window) {
        for (size_t c = 0; c <= cc; c++)
            chunks[c] = c;
        return cc + 1;
    }
    float *score = malloc((cc + K + d) * sizeof(float));
    if (!score)
        return 0;
    float *qb = score + cc + K;
    if (!flat && s->p.score == LH_LH_SCORE_BOUND) {
        bb_ent *heap = malloc(s->kd_cap * sizeof *heap);
        size_t stat[8] = {0};
        if (!heap) {
            free(score);
            return 0;
        }
        rotate_scaled(s, qb, q_head, lh_lh_bound_pos(&s->p, t), 1.0f);
        select_bound(s, layer, head / (s->p.n_head / s->p.n_head_kv), qb, cc, score, heap, stat,
                     chunks);
        free(heap);
    } else {
        flat_scores(s, layer, head, q_head, t, cc - s->n_recent + 1, score, qb);
        select_from_scores(s, cc, score + 1, chunks);
    }
    free(score);
    return K;
}

size_t lh_lh_select(const lh_lh *s, size_t layer, size_t head, const float *q_head, size_t t,
                    size_t *chunks, size_t cap)
{
    return select_any(s, layer, head, q_head, t, chunks, cap, 0);
}

size_t lh_lh_select_flat(const lh_lh *s, size_t layer, size_t head, const float *q_head, size_t t,
                         size_t *chunks, size_t cap)
{
    return select_any(s, layer, head, q_head, t, chunks, cap, 1);
}

size_t lh_lh_scores(const lh_lh *s, size_t layer, size_t head, const float *q_head, size_t t,
                    float *scores, size_t cap)
{
    if (layer >= s->p.n_layer || head >= s->p.n_head)
        return 0;
    size_t n = s->n_done[layer] / s->p.chunk;
    n = n < cap ? n : cap;
    float *qb = malloc(s->p.head_dim * sizeof(float));
    if (!qb)
        return 0;
    flat_scores(s, layer, head, q_head, t, n, scores, qb);
    free(qb);
    return n;
}

void lh_lh_stats_get(const lh_lh *s, lh_lh_stats *st)
{
    memset(st, 0, sizeof *st);
    for (size_t i = 0; i < s->n_thread; i++) {
        const size_t *c = s->stat + i * 8;
        st->n_select += c[0];
        st->n_cand += c[1];
        st->n_chunk += c[2];
        st->n_node += c[3];
        st->n_mismatch += c[4];
    }
}

void lh_lh_set_check(lh_lh *s, int on)
{
    s->check = on;
}

void lh_lh_stats_reset(lh_lh *s)
{
    memset(s->stat, 0, s->n_thread * 8 * sizeof(size_t));
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
    size_t n_chunk = n_tok / w, R = lh_lh_recent(p);
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
    int bound = p->score == LH_LH_SCORE_BOUND;
    for (size_t h = 0; h < nh && !bound; h++)
        for (size_t c = 0; c < n_chunk; c++) {
            double *r = rep + (h * n_chunk + c) * d;
            ref_rep(p, q_all, h, c, k, v, r, qbuf, sc, sv);
            for (size_t i = 0; i < d; i++)
                r[i] = lh_bf16_to_f32(rep_bf16((float)r[i]));   /* stored as selection reads it */
        }

    for (size_t t = pos0; t < n_tok; t++) {
        for (size_t h = 0; h < nh; h++) {
            size_t g = h / (nh / p->n_head_kv), cc = t / w, n_s = 0;
            const float *q = q_all + t * nh * d + h * d;
            if (t < L) {
                for (size_t c = 0; c <= cc; c++)
                    sel[n_s++] = c;
            } else {
                /* candidates 1 .. cc-R by q·c (un-rotated q), or by the bound for q rotated by
                 * lh_lh_bound_pos: sum_i max(q_i min_i, q_i max_i) over the chunk's keys; K-1-R
                 * best, earlier chunk on ties; then the last R chunks */
                if (bound) {
                    memcpy(qbuf, q, d * sizeof(float));
                    lh_ops_rope_ref(qbuf, 1, d, p->n_rot, (double)lh_lh_bound_pos(p, t), &p->rope);
                }
                for (size_t c = 1; c + R <= cc; c++) {
                    cs[c] = 0;
                    for (size_t i = 0; i < d && bound; i++) {
                        double mn = ref_kv(p, k, g, c * w, i), mx = mn;
                        for (size_t j = 1; j < w; j++) {
                            double x = ref_kv(p, k, g, c * w + j, i);
                            mn = x < mn ? x : mn;
                            mx = x > mx ? x : mx;
                        }
                        cs[c] += fmax(qbuf[i] * mn, qbuf[i] * mx);
                    }
                    for (size_t i = 0; i < d && !bound; i++)   /* q rounded as rep_queries does */
                        cs[c] += (double)lh_bf16_to_f32(rep_bf16(q[i])) * rep[(h * n_chunk + c) * d + i];
                    taken[c] = 0;
                }
                taken[0] = 1;
                sel[n_s++] = 0;
                for (size_t r = 0; r + 1 + R < K; r++) {
                    size_t best = 0;
                    for (size_t c = 1; c + R <= cc; c++)
                        if (!taken[c] && (best == 0 || cs[c] > cs[best]))
                            best = c;
                    taken[best] = 1;
                    sel[n_s++] = best;
                }
                for (size_t c = cc + 1 - R; c <= cc; c++)
                    sel[n_s++] = c;
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

/* The fixed point over the layers (at most one more round: a chunk boundary always suits). */
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
 * apart, and holds `unit` bytes per `group` complete chunks (per_token: per token), a group begun
 * counting whole, at the start of each row.  A new per-chunk array (e.g. per-chunk key bounds) is
 * one more line here. */
typedef struct {
    char *base;
    size_t n_rows, row_stride, unit, group;
    int per_token;
} state_array;

#define MAX_STATE_ARRAYS 8

static size_t state_arrays(const lh_lh *s, state_array *a)
{
    size_t n = 0, d = s->p.head_dim;
    /* rep: (n_layer, n_head) rows of tiles of REP_T chunks; not kept with the bound score */
    if (!s->bmin) {
        size_t e = sizeof(uint16_t);
        a[n++] = (state_array){(char *)s->rep, s->p.n_layer * s->p.n_head,
                               rep_chunks(s) * d * e, REP_T * d * e, REP_T, 0};
    } else {
        /* bound score: the chunks' key min / max (the search trees are rebuilt from them after
         * a load, kd_update) */
        size_t rows = s->p.n_layer * s->p.n_head_kv, stride = s->n_chunk * d * sizeof(float);
        a[n++] = (state_array){(char *)s->bmin, rows, stride, d * sizeof(float), 1, 0};
        a[n++] = (state_array){(char *)s->bmax, rows, stride, d * sizeof(float), 1, 0};
    }
    return n;
}

static size_t ring_size(const lh_lh *s) { return s->p.n_layer * s->p.chunk * s->ld_q * sizeof(float); }

/* Bytes of a state array's row for n tokens. */
static size_t state_len(const lh_lh *s, const state_array *a, size_t n)
{
    return a->unit * (a->per_token ? n : (n / s->p.chunk + a->group - 1) / a->group);
}

size_t lh_lh_state_size(const lh_lh *s, size_t n)
{
    state_array a[MAX_STATE_ARRAYS];
    size_t na = state_arrays(s, a), total = ring_size(s);
    for (size_t i = 0; i < na; i++)
        total += a[i].n_rows * state_len(s, &a[i], n);
    return total;
}

static int state_io(const lh_lh *s, size_t n, lh_lh_io_fn fn, void *ud)
{
    state_array a[MAX_STATE_ARRAYS];
    size_t na = state_arrays(s, a);
    int rc;
    for (size_t i = 0; i < na; i++) {
        size_t len = state_len(s, &a[i], n);
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
    if (s->bmin)
        for (size_t l = 0; l < s->p.n_layer; l++)
            for (size_t g = 0; g < s->p.n_head_kv; g++)
                s->n_kd[l * s->p.n_head_kv + g] = 0;   /* kd_update builds them again */
    return rc;
}
