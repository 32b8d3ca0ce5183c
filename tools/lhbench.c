/* tools/lhbench — LongHeads layer attention (lh_lh_layer) against dense causal attention
 * (lh_attn_dense), per token, for decode and prefill at contexts of 1x, 8x, 32x, 128x and 512x
 * the attended length L.
 *
 *   build/longheads-lhbench [w L head_dim n_head n_head_kv f16|f32 max_mult rep|bound|bb
 *                            random|clustered]
 *   defaults: 64 512 64 12 12 f16 128 rep random
 *
 * Chunk score rep (the paper's) or bound (min/max of keys) scoring every chunk, or bb: bound with
 * branch and bound over the tree (the same selections); "visited" is the
 * chunks and tree nodes scored per selection (one query, one head) over the decode steps, against
 * the candidates flat scoring scores.  Data: random (every key uniform: bounds barely separate,
 * the worst case for branch and bound) or clustered (every chunk's keys a random centre plus 10%
 * noise, queries uniform: chunks differ, as topics do in text).  The whole prefill is not run
 * past 128x (minutes of flat rep scoring).
 *
 * Decode: the last w tokens of the context one at a time, mean per token (best of a few runs;
 * LongHeads is rewound with lh_lh_truncate to the chunk boundary).  One of those w steps completes
 * a chunk and builds its representations, so the mean is what decoding really costs.  Prefill: a slice of SLICE queries ending at ctx
 * (what a prefill at that depth costs per token, best of two), and for LongHeads also the whole
 * context fed in slices (its real prefill cost per token, chunk representations included).
 * Dense prefill of the whole context is quadratic and not run.  ratio = dense / longheads.
 * With rep, selection work is data-independent; with bound it depends on the data (see above).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attn.h"
#include "longheads.h"
#include "quant.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define SLICE 256

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 88172645463325252ull;

static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

static size_t arg(int argc, char **argv, int i, size_t def)
{
    return argc > i ? (size_t)strtoul(argv[i], NULL, 10) : def;
}

int main(int argc, char **argv)
{
    size_t w = arg(argc, argv, 1, 64), L = arg(argc, argv, 2, 512), d = arg(argc, argv, 3, 64);
    size_t nh = arg(argc, argv, 4, 12), nkv = arg(argc, argv, 5, 12);
    lh_type kvt = argc > 6 && strcmp(argv[6], "f32") == 0 ? LH_TYPE_F32 : LH_TYPE_F16;
    size_t max_mult = arg(argc, argv, 7, 128);
    int bb = argc > 8 && strcmp(argv[8], "bb") == 0;
    int bound = bb || (argc > 8 && strcmp(argv[8], "bound") == 0);
    int clustered = argc > 9 && strcmp(argv[9], "clustered") == 0;
    size_t n_thr = 1;
#ifdef _OPENMP
    n_thr = (size_t)omp_get_max_threads();
#endif
    size_t mults[] = { 1, 8, 32, 128, 512 };
    size_t ld = nh * d, elt = kvt == LH_TYPE_F16 ? 2 : 4;
    int rc = 1;
    float *q = malloc(SLICE * ld * sizeof(float)), *out = malloc(SLICE * ld * sizeof(float));
    float *row = malloc(d * sizeof(float)), *centre = malloc(d * sizeof(float));
    if (!q || !out || !row || !centre || w == 0 || L % w || L < 2 * w || nkv == 0 || nh % nkv) {
        fprintf(stderr, "lhbench: bad arguments or out of memory\n");
        goto done;
    }
    for (size_t i = 0; i < SLICE * ld; i++)
        q[i] = frand();

    printf("longheads-lhbench: w=%zu L=%zu (K=%zu) head_dim=%zu heads %zu/%zu kv %s, %zu threads, "
           "score %s, %s data\n", w, L, L / w, d, nh, nkv, kvt == LH_TYPE_F16 ? "f16" : "f32", n_thr,
           bb ? "bound, branch and bound" : bound ? "bound, flat" : "rep", clustered ? "clustered" : "random");
    printf("%8s %5s | %-30s | %-30s | %-9s | %s\n", "", "", "decode, us/token",
           "prefill slice of " "256" ", us/token", "LH whole", "decode: scored per selection");
    printf("%8s %5s | %9s %9s %9s | %9s %9s %9s | %9s | %7s %7s %7s\n", "context", "x L", "dense",
           "longheads", "ratio", "dense", "longheads", "ratio", "us/token", "chunks", "nodes",
           "of");
    for (size_t mi = 0; mi < sizeof mults / sizeof mults[0] && mults[mi] <= max_mult; mi++) {
        size_t ctx = mults[mi] * L;
        void *k = malloc(nkv * ctx * d * elt), *v = malloc(nkv * ctx * d * elt);
        lh_attn_shape sh = { nh, nkv, d, ctx, kvt };
        size_t scr_size = lh_attn_scratch_size(&sh, SLICE);
        void *scr = malloc(scr_size * n_thr);
        lh_lh *s = NULL;
        lh_lh_params p = { .n_layer = 1, .n_head = nh, .n_head_kv = nkv, .head_dim = d,
                           .n_rot = d, .rope = lh_ops_rope_plain(10000.0f),
                           .chunk = w, .window = L, .n_ctx = ctx, .kv_type = kvt,
                           .score = bound ? LH_LH_SCORE_BOUND : LH_LH_SCORE_REP,
                           .branch_and_bound = bb };
        if (!k || !v || !scr || lh_lh_new(&s, &p, SLICE) != 0) {
            fprintf(stderr, "lhbench: out of memory at context %zu\n", ctx);
            free(k);
            free(v);
            free(scr);
            goto done;
        }
        for (size_t i = 0; i < nkv * ctx; i++) {
            if (i % w == 0)
                for (size_t j = 0; j < d; j++)
                    centre[j] = frand();
            for (size_t j = 0; j < d; j++)
                row[j] = clustered ? centre[j] + 0.1f * frand() : frand();
            lh_quant_row(kvt, row, (char *)k + i * d * elt, d);
            for (size_t j = 0; j < d; j++)
                row[j] = frand();
            lh_quant_row(kvt, row, (char *)v + i * d * elt, d);
        }

        /* LongHeads: the whole context in slices (the queries repeat every SLICE tokens) */
        double t0 = now(), t_slice = 0, lh_whole = 0;
        if (mults[mi] <= 128) {
            for (size_t pos = 0; pos < ctx; pos += SLICE) {
                size_t n = ctx - pos < SLICE ? ctx - pos : SLICE;
                double ts = now();
                lh_lh_layer(s, 0, q, n, pos, k, v, out);
                t_slice = (now() - ts) / (double)n;
            }
            lh_whole = (now() - t0) / (double)ctx;
        } else {
            /* the state as a prefill leaves it, without timing the prefill: all but the last
             * slice in one unmeasured pass of single-query batches would be as slow, so feed
             * slices of the same queries */
            for (size_t pos = 0; pos + SLICE < ctx; pos += SLICE)
                lh_lh_layer(s, 0, q, SLICE, pos, k, v, out);
            size_t p0 = (ctx - 1) / SLICE * SLICE;
            double ts = now();
            lh_lh_layer(s, 0, q, ctx - p0, p0, k, v, out);
            t_slice = (now() - ts) / (double)(ctx - p0);
        }
        /* ... and the last slice again, rewound (its start is a chunk boundary) */
        size_t s0 = ctx - (ctx < SLICE ? ctx : SLICE), ns = ctx - s0;
        if (lh_lh_truncate(s, s0) == s0) {
            double ts = now();
            lh_lh_layer(s, 0, q, ns, s0, k, v, out);
            double t1 = (now() - ts) / (double)ns;
            t_slice = t1 < t_slice ? t1 : t_slice;
        }
        /* decode: the last w tokens one at a time (one of them completes a chunk and pays for
         * its representation, as in real decoding), rewound to their chunk boundary */
        size_t d0 = ctx - w;
        int reps = ctx <= 8 * L ? 5 : 2;
        double lh_dec = 1e30, de_dec = 1e30, de_slice = 1e30;
        lh_lh_stats_reset(s);
        for (int r = 0; r < reps && lh_lh_truncate(s, d0) == d0; r++) {
            double ts = now();
            for (size_t pos = d0; pos < ctx; pos++)
                lh_lh_layer(s, 0, q + (pos % SLICE) * ld, 1, pos, k, v, out);
            double t1 = (now() - ts) / (double)w;
            lh_dec = t1 < lh_dec ? t1 : lh_dec;
        }
        lh_lh_stats st;
        lh_lh_stats_get(s, &st);
        double per = st.n_select ? 1.0 / (double)st.n_select : 0;
        for (int r = 0; r < reps; r++) {
            double ts = now();
            for (size_t pos = d0; pos < ctx; pos++)
                lh_attn_dense(&sh, q + (pos % SLICE) * ld, 1, pos, k, v, out, scr, n_thr);
            double t1 = (now() - ts) / (double)w;
            de_dec = t1 < de_dec ? t1 : de_dec;
        }
        for (int r = 0; r < 2; r++) {
            double ts = now();
            lh_attn_dense(&sh, q, ns, s0, k, v, out, scr, n_thr);
            double t1 = (now() - ts) / (double)ns;
            de_slice = t1 < de_slice ? t1 : de_slice;
        }
        printf("%8zu %5zu | %9.1f %9.1f %8.2fx | %9.1f %9.1f %8.2fx | %9.1f | %7.1f %7.1f %7.1f\n",
               ctx, mults[mi], de_dec * 1e6, lh_dec * 1e6, de_dec / lh_dec, de_slice * 1e6,
               t_slice * 1e6, de_slice / t_slice, lh_whole * 1e6, st.n_chunk * per,
               st.n_node * per, st.n_cand * per);
        fflush(stdout);
        lh_lh_free(s);
        free(k);
        free(v);
        free(scr);
    }
    printf("state: %.0f bytes per token per layer of %s\n",
           lh_lh_bytes_per_token(&(lh_lh_params){ .n_layer = 1, .n_head = nh, .n_head_kv = nkv,
                                                 .head_dim = d, .chunk = w,
                                                 .score = bound ? LH_LH_SCORE_BOUND
                                                                : LH_LH_SCORE_REP }),
           bound ? "min/max bounds and their tree" : "chunk representations");
    rc = 0;
done:
    free(q);
    free(out);
    free(row);
    free(centre);
    return rc;
}
