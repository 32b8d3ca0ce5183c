/* tools/bench — longheads-bench: the model-level benchmark.  Whole forward passes (lh_ctx_eval)
 * on a real model file, timed side by side in one run, reported per token and as ratios.
 *
 * Context table (the default): for every context N = m × L (m in --mults, default 1,8,32,128):
 * a fresh context, a prefill of N tokens (timed as a whole: per token = total / N), then D
 * decode steps at that depth (one token each, logits computed as a real decoder does; D defaults
 * to the chunk size w so that exactly one chunk completes and pays for its representations);
 * LongHeads and full attention back to back.  Full attention is quadratic in prefill: it runs up
 * to --full-max (default 32) × L only, and the table says so.  Ratios: LH N / LH 1x, full N /
 * full 1x, full / LH at the same N.  Then the memory: KV-cache and chunk-representation bytes per
 * token, a context of 131072 tokens created in both modes, and (--long N) a LongHeads prefill of
 * N tokens with the resident memory it leaves.
 *
 *   longheads-bench -m MODEL [--window L] [--chunk W] [--mults 1,8,32,128] [--full-max M]
 *                   [--decode D] [--reps R] [--kv f32|f16] [--batch B] [--long N]
 *
 * llama-bench-like mode (--pp and/or --tg given), what llama-bench's -p/-n/-d measure: for each
 * --depth D (a context filled with D tokens once, that fill reported as "fillD" tokens/s, one
 * run), prompt processing of each N tokens at that depth ("pp512", "pp512@16384") and generation
 * of T tokens one at a time after it ("tg64", "tg64@16384"), in one attention mode; one line per
 * test "NAME TOKENS/S", plus "weight_bytes_per_token" (what a decode step reads from the weights)
 * and "kv_bytes_per_token" for the roofline line of tools/bench.sh.  --roofline N: after the
 * tests, N decode steps (at the last depth), each followed by one read pass over exactly the bytes
 * a step reads from the weights, where the model holds them, with the same threads: the pass's
 * rate ("roofline_read_gbs"), the steps' ("roofline_tg") and the share of the read speed the
 * decode reaches ("roofline_share", read time / decode time).  Alternating one step with one
 * pass keeps the machine's bandwidth, which drifts over seconds here, the same for both sides.
 *
 *   longheads-bench -m MODEL [--pp 512,4096] [--tg 64] [--depth 0,4096] [--attn full|longheads]
 *                   [--reps R] [--kv f32|f16] [--batch B] [--window L] [--chunk W]
 *                   [--roofline N]
 *
 * Timings are the best of --reps runs (default 3; after one untimed warm-up) up to 8 × L
 * (decode rewound with lh_ctx_truncate, prefill from 0); past that prefill runs once and decode
 * twice, so a busy machine inflates exactly the figures at large N: the ratios err
 * against LongHeads, not for it.  Tokens are random ids (fixed seed): the work per token does not
 * depend on them.  Exit status 0, 1 on an error, 2 on bad usage.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "gguf.h"
#include "log.h"
#include "model.h"
#include "params.h"

#define MAX_LIST 8
#define LONG_CTX 131072

typedef struct {
    const char *model;
    lh_ctx_params cp;        /* kv_type, n_batch, chunk, window (attn set per run) */
    size_t mults[MAX_LIST], n_mults;
    size_t full_max;
    size_t n_decode;         /* 0: the chunk size */
    size_t reps;
    size_t long_n;
    /* llama-bench-like mode */
    size_t pp[MAX_LIST], n_pp;
    size_t tg;
    size_t depth[MAX_LIST], n_depth;
    lh_attn_mode attn;
    lh_weights_hold weights; /* as the daemon's --weights (default auto) */
    int mean;                /* --stat mean: llama-bench's statistic, not the best run */
    size_t roofline;         /* --roofline N: N decode steps alternating with read passes */
} opts;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Resident memory of this process in bytes (VmRSS), 0 when /proc is not there. */
static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kb = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %zu kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

static double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

static uint64_t rng = 0x2545f4914f6cdd1dULL;

/* n random token ids in [3, n_vocab): past <unk>, <s> and </s>. */
static void random_tokens(int32_t *t, size_t n, size_t n_vocab)
{
    for (size_t i = 0; i < n; i++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        t[i] = (int32_t)(3 + rng % (n_vocab - 3));
    }
}

/* "1,8,32" → list; 0 or LH_E_FORMAT. */
static int parse_list(const char *s, size_t lo, size_t hi, size_t *out, size_t *np)
{
    char buf[128];
    size_t n = 0;
    if (strlen(s) >= sizeof buf)
        return LH_E_FORMAT;
    strcpy(buf, s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == MAX_LIST || lh_params_parse_size(tok, lo, hi, &out[n]))
            return LH_E_FORMAT;
        n++;
    }
    if (n == 0)
        return LH_E_FORMAT;
    *np = n;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* measurements                                                                                 */

/* Prefill of tokens[0..n) into c from where it stands: seconds, or < 0 on an error. */
static double time_prefill(lh_ctx *c, const int32_t *tokens, size_t n, float *logits)
{
    double t0 = now_s();
    if (lh_ctx_eval(c, tokens, n, logits, 0))
        return -1;
    return now_s() - t0;
}

/* n decode steps from the current position (one token each, logits every step): seconds. */
static double time_decode(lh_ctx *c, const int32_t *tokens, size_t n, float *logits)
{
    double t0 = now_s();
    for (size_t i = 0; i < n; i++)
        if (lh_ctx_eval(c, &tokens[i], 1, logits, 0))
            return -1;
    return now_s() - t0;
}

/* The runs' summary as a time: the best (shortest) run, or with mean the time whose rate is the
 * mean of the runs' rates (llama-bench's avg_ts: n / sum(1/t_i)).  < 0 when n == 0. */
static double summary(double best, double inv_sum, size_t n, int mean)
{
    if (n == 0)
        return -1;
    return mean ? (double)n / inv_sum : best;
}

/* Best (or with mean: mean rate, see summary) of reps decode runs of n tokens starting at depth
 * `at` (rewound each time): seconds per token.  The context must hold at least `at` tokens. */
static double best_decode(lh_ctx *c, size_t at, const int32_t *tokens, size_t n, size_t reps,
                          int mean, float *logits)
{
    double best = -1, inv = 0;
    size_t runs = 0;
    for (size_t r = 0; r < reps; r++) {
        if (lh_ctx_truncate(c, at) != at)
            break; /* LongHeads could not rewind exactly: keep what was measured */
        double t = time_decode(c, tokens, n, logits);
        if (t < 0)
            return -1;
        if (best < 0 || t < best)
            best = t;
        inv += 1.0 / t;
        runs++;
    }
    double t = summary(best, inv, runs, mean);
    return t < 0 ? -1 : t / (double)n;
}

typedef struct {
    double prefill, decode;  /* seconds per token; < 0: not run */
    double rss;              /* bytes of resident memory the context added by the end */
} point;

/* The 1x point measured again beside a larger one, alternating with it: this host's memory
 * bandwidth drifts by a third over minutes, so two points measured minutes apart give a ratio of
 * the drift.  c: a LongHeads context of L + n_dec tokens. */
typedef struct {
    lh_ctx *c;
    size_t L;
    double pf_sum;      /* 1x prefill, seconds per token, summed over pf_n runs */
    size_t pf_n;
    double dec;         /* 1x decode, best seconds per token */
} beside;

static int beside_prefill(beside *b, const int32_t *tokens, float *logits)
{
    if (lh_ctx_truncate(b->c, 0) != 0)
        return -1;
    double t = time_prefill(b->c, tokens, b->L, logits);
    if (t < 0)
        return -1;
    b->pf_sum += t / (double)b->L;
    b->pf_n++;
    return 0;
}

/* One context of N tokens in one mode: fresh context, prefill, decode.  With b, the 1x point is
 * measured in between: a 1x prefill after each prefill (a long one is cut into segments of 8 L
 * tokens, one 1x prefill after each: the same lh_ctx_eval calls a server makes for a long
 * prompt in pieces) and a 1x decode run after each decode run.  0 or -1 (logged). */
static int run_point(const lh_model *m, const opts *o, lh_attn_mode attn, size_t N, size_t n_dec,
                     const int32_t *tokens, float *logits, point *pt, beside *b)
{
    lh_ctx_params cp = o->cp;
    cp.attn = attn;
    cp.n_ctx = N + n_dec;
    lh_ctx *c = NULL;
    size_t rss0 = rss_bytes();
    if (lh_ctx_new(&c, m, &cp))
        return -1;
    /* short prefills are repeated (rewound to 0), long ones run once */
    size_t reps = N <= 8 * cp.window ? o->reps : 1;
    double best = -1;
    for (size_t r = 0; r < reps; r++) {
        if (r > 0 && lh_ctx_truncate(c, 0) != 0)
            break;
        double t = 0;
        for (size_t at = 0, seg = b ? 8 * b->L : N; at < N; at += seg) {
            size_t n = N - at < seg ? N - at : seg;
            double ts = time_prefill(c, tokens + at, n, logits);
            if (ts < 0 || (b && beside_prefill(b, tokens, logits)))
                goto fail;
            t += ts;
        }
        if (best < 0 || t < best)
            best = t;
    }
    pt->prefill = best / (double)N;
    size_t dreps = N <= 8 * cp.window ? o->reps : (o->reps < 2 ? o->reps : 2);
    pt->decode = -1;
    for (size_t r = 0; r < dreps; r++) {
        double t = best_decode(c, N, tokens + N, n_dec, 1, 0, logits);
        double t1 = b ? best_decode(b->c, b->L, tokens + b->L, n_dec, 1, 0, logits) : 0;
        if (t < 0 || t1 < 0)
            goto fail;
        if (pt->decode < 0 || t < pt->decode)
            pt->decode = t;
        if (b && (b->dec < 0 || t1 < b->dec))
            b->dec = t1;
    }
    pt->rss = (double)rss_bytes() - (double)rss0;
    lh_ctx_free(c);
    return 0;
fail:
    fprintf(stderr, "longheads-bench: %s at %zu tokens failed\n",
            attn == LH_ATTN_LONGHEADS ? "longheads" : "full", N);
    lh_ctx_free(c);
    return -1;
}

static void fmt_ms(char *buf, size_t cap, double s)
{
    if (s < 0)
        snprintf(buf, cap, "%8s", "-");
    else
        snprintf(buf, cap, "%8.3f", s * 1e3);
}

static void fmt_ratio(char *buf, size_t cap, double a, double b)
{
    if (a < 0 || b <= 0)
        snprintf(buf, cap, "%7s", "-");
    else
        snprintf(buf, cap, "%6.2fx", a / b);
}

static int context_table(const lh_model *m, const opts *o)
{
    const lh_hparams *hp = lh_model_hparams(m);
    int rc = 1;
    lh_ctx *probe = NULL, *big = NULL;
    int32_t *tokens = NULL;
    float *logits = malloc(hp->n_vocab * sizeof *logits);
    point lhp[MAX_LIST], fup[MAX_LIST];
    beside b1 = { NULL, 0, 0, 0, -1 };

    /* resolve L and w once (the context's own defaults) */
    lh_ctx_params cp = o->cp;
    cp.attn = LH_ATTN_LONGHEADS;
    cp.n_ctx = 0;
    if (!logits || lh_ctx_new(&probe, m, &cp))
        goto out;
    const lh_ctx_params *rp = lh_ctx_params_get(probe);
    opts ro = *o;
    ro.cp.chunk = rp->chunk;
    ro.cp.window = rp->window;
    size_t L = rp->window, w = rp->chunk, n_dec = o->n_decode ? o->n_decode : w;
    size_t max_n = 0;
    for (size_t i = 0; i < o->n_mults; i++)
        max_n = o->mults[i] * L > max_n ? o->mults[i] * L : max_n;
    tokens = malloc((max_n + n_dec) * sizeof *tokens);
    if (!tokens)
        goto out;
    random_tokens(tokens, max_n + n_dec, hp->n_vocab);

    int n_thr = 1;
#ifdef _OPENMP
    n_thr = omp_get_max_threads();
#endif
    printf("longheads-bench: %s\n", lh_model_desc(m));
    printf("  LongHeads L=%zu w=%zu (K=%zu chunks per head), kv %s, batch %zu, %d threads; "
           "decode %zu tokens at each depth\n",
           L, w, L / w, lh_type_name(rp->kv_type), rp->n_batch, n_thr, n_dec);
    printf("  times: best of %zu up to 8x L; past it prefill runs once, decode twice (best)\n",
           o->reps);

    /* warm-up: the weights' pages and the matmul primitives' first run */
    point warm;
    if (run_point(m, &ro, LH_ATTN_LONGHEADS, L, n_dec, tokens, logits, &warm, NULL))
        goto out;

    printf("\n%8s %4s | %-41s | %-41s | %s\n", "", "", "prefill, ms/token", "decode, ms/token",
           "ctx RSS MiB");
    printf("%8s %4s | %8s %8s %7s %7s %7s | %8s %8s %7s %7s %7s | %6s %6s\n", "context", "xL",
           "LH", "full", "LH/1x", "fu/1x", "fu/LH", "LH", "full", "LH/1x", "fu/1x", "fu/LH", "LH",
           "full");
    fflush(stdout);
    size_t i1 = SIZE_MAX;  /* the 1x entry, if listed */
    for (size_t i = 0; i < o->n_mults; i++)
        if (o->mults[i] == 1)
            i1 = i;
    size_t ib = 0;   /* the largest context: the goal, against 1x measured beside it */
    for (size_t i = 0; i < o->n_mults; i++)
        if (o->mults[i] > o->mults[ib])
            ib = i;
    b1.L = L;
    if (i1 != SIZE_MAX && ib != i1) {
        lh_ctx_params bp1 = ro.cp;
        bp1.attn = LH_ATTN_LONGHEADS;
        bp1.n_ctx = L + n_dec;
        if (lh_ctx_new(&b1.c, m, &bp1))
            goto out;
    }
    for (size_t i = 0; i < o->n_mults; i++) {
        size_t N = o->mults[i] * L;
        if (run_point(m, &ro, LH_ATTN_LONGHEADS, N, n_dec, tokens, logits, &lhp[i],
                      i == ib && b1.c ? &b1 : NULL))
            goto out;
        fup[i] = (point){ -1, -1, 0 };
        if (o->mults[i] <= o->full_max &&
            run_point(m, &ro, LH_ATTN_FULL, N, n_dec, tokens, logits, &fup[i], NULL))
            goto out;
        const point *l1 = i1 != SIZE_MAX ? &lhp[i1] : NULL, *f1 = i1 != SIZE_MAX ? &fup[i1] : NULL;
        char a[8][32];
        fmt_ms(a[0], 32, lhp[i].prefill);
        fmt_ms(a[1], 32, fup[i].prefill);
        fmt_ms(a[2], 32, lhp[i].decode);
        fmt_ms(a[3], 32, fup[i].decode);
        char r[6][32];
        fmt_ratio(r[0], 32, lhp[i].prefill, l1 && i >= i1 ? l1->prefill : -1);
        fmt_ratio(r[1], 32, fup[i].prefill, f1 && i >= i1 ? f1->prefill : -1);
        fmt_ratio(r[2], 32, fup[i].prefill, lhp[i].prefill);
        fmt_ratio(r[3], 32, lhp[i].decode, l1 && i >= i1 ? l1->decode : -1);
        fmt_ratio(r[4], 32, fup[i].decode, f1 && i >= i1 ? f1->decode : -1);
        fmt_ratio(r[5], 32, fup[i].decode, lhp[i].decode);
        char frss[16];
        if (fup[i].prefill < 0)
            snprintf(frss, sizeof frss, "%6s", "-");
        else
            snprintf(frss, sizeof frss, "%6.1f", mib(fup[i].rss));
        printf("%8zu %4zu | %s %s %s %s %s | %s %s %s %s %s | %6.1f %s\n", N, o->mults[i], a[0],
               a[1], r[0], r[1], r[2], a[2], a[3], r[3], r[4], r[5], mib(lhp[i].rss), frss);
        fflush(stdout);
    }
    for (size_t i = 0; i < o->n_mults; i++)
        if (o->mults[i] > o->full_max) {
            printf("  full attention runs up to %zux L only (--full-max): its prefill is quadratic "
                   "in the context\n", o->full_max);
            break;
        }
    /* the goal, on the largest context, against 1x measured beside it */
    if (b1.c && b1.pf_n && b1.dec > 0) {
        double p1 = b1.pf_sum / (double)b1.pf_n;
        double rp_ = lhp[ib].prefill / p1, rd = lhp[ib].decode / b1.dec;
        printf("  goal: LongHeads per-token cost at %zux <= 1.3x its cost at 1x, the 1x point "
               "measured beside it (prefill: mean of %zu 1x runs between its %zu-token segments, "
               "%.3f ms/token; decode: best of runs alternating with it, %.3f ms/token): prefill "
               "%.2fx (%s), decode %.2fx (%s)\n", o->mults[ib], b1.pf_n, 8 * L, p1 * 1e3,
               b1.dec * 1e3, rp_, rp_ <= 1.3 ? "met" : "NOT met", rd,
               rd <= 1.3 ? "met" : "NOT met");
    }

    /* memory */
    lh_ctx_params bp = ro.cp;
    bp.n_ctx = LONG_CTX;
    bp.attn = LH_ATTN_FULL;
    size_t kvb = lh_ctx_kv_bytes_per_token(probe);
    double lhb = lh_ctx_lh_bytes_per_token(probe);
    printf("\nmemory: KV cache %zu bytes/token (%.1f MiB at %d tokens); LongHeads chunk "
           "representations %.1f bytes/token (%.1f%% on top of the KV cache)\n", kvb,
           mib((double)kvb * LONG_CTX), LONG_CTX, lhb, 100.0 * lhb / (double)kvb);
    for (int mode = 0; mode < 2; mode++) {
        bp.attn = mode ? LH_ATTN_LONGHEADS : LH_ATTN_FULL;
        size_t r0 = rss_bytes();
        double t0 = now_s();
        if (lh_ctx_new(&big, m, &bp)) {
            printf("  a context of %d tokens (%s) could NOT be created\n", LONG_CTX,
                   mode ? "longheads" : "full");
            goto out;
        }
        printf("  a context of %d tokens (%s): created in %.1f ms, resident %.1f MiB after "
               "creation (the KV cache is committed as it fills)\n", LONG_CTX,
               mode ? "longheads" : "full", (now_s() - t0) * 1e3,
               mib((double)rss_bytes() - (double)r0));
        lh_ctx_free(big);
        big = NULL;
    }
    if (o->long_n) {
        int32_t *lt = malloc(o->long_n * sizeof *lt);
        bp.attn = LH_ATTN_LONGHEADS;
        bp.n_ctx = o->long_n;
        size_t r0 = rss_bytes();
        if (!lt || lh_ctx_new(&big, m, &bp)) {
            free(lt);
            goto out;
        }
        random_tokens(lt, o->long_n, hp->n_vocab);
        double t = time_prefill(big, lt, o->long_n - n_dec, logits);
        double td = t < 0 ? -1 : time_decode(big, lt + o->long_n - n_dec, n_dec, logits);
        free(lt);
        if (t < 0 || td < 0)
            goto out;
        double r = (double)rss_bytes() - (double)r0;
        printf("  LongHeads, %zu tokens: prefill %.1f s (%.3f ms/token), decode at the end %.3f "
               "ms/token; resident %.1f MiB (%.0f bytes/token; KV + reps would be %.0f)\n",
               o->long_n, t, t * 1e3 / (double)(o->long_n - n_dec), td * 1e3 / (double)n_dec,
               mib(r), r / (double)o->long_n, (double)kvb + lhb);
    }
    rc = 0;
out:
    lh_ctx_free(b1.c);
    lh_ctx_free(big);
    lh_ctx_free(probe);
    free(tokens);
    free(logits);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* llama-bench-like tests                                                                       */

/* The bytes of tensor t a decode step reads: every weight once (the GEMVs stream them), the
 * embedding as one row unless it is also the classifier. */
static size_t token_bytes(const lh_gguf *g, const lh_gguf_tensor *t)
{
    int tied = lh_gguf_find_tensor(g, "output.weight") == NULL;
    if (t->n_dims == 2 && !strcmp(t->name, "token_embd.weight") && !tied)
        return t->size / t->ne[1];
    return t->size;
}

/* Bytes a decode step reads from the weights (token_bytes over every tensor): what the roofline
 * line divides by. */
static double weight_bytes_per_token(const lh_gguf *g)
{
    double b = 0;
    for (size_t i = 0; i < lh_gguf_n_tensors(g); i++)
        b += (double)token_bytes(g, lh_gguf_tensor_at(g, i));
    return b;
}

/* XOR of the 64-byte words of p[0..n) (n % 64 == 0) into eight named accumulators (an array
 * of them was kept in memory by gcc -O2: a third slower), a pure read stream, integer so that no
 * value of the weights can slow it, returned so that the reads stay.  256-bit loads even with
 * AVX-512: over the 1b F16 file's weights, two threads, they read 62-68 GB/s where 512-bit loads
 * read 25-51 (and longheads-bwprobe's float sum 56-66 over its own buffer). */
#define XOR8(V, LOAD, XOR)                                                                        \
    for (; i + 8 * sizeof(V) <= n; i += 8 * sizeof(V)) {                                          \
        const V *q = (const V *)(p + i);                                                          \
        a0 = XOR(a0, LOAD(q)), a1 = XOR(a1, LOAD(q + 1)), a2 = XOR(a2, LOAD(q + 2));              \
        a3 = XOR(a3, LOAD(q + 3)), a4 = XOR(a4, LOAD(q + 4)), a5 = XOR(a5, LOAD(q + 5));          \
        a6 = XOR(a6, LOAD(q + 6)), a7 = XOR(a7, LOAD(q + 7));                                     \
    }                                                                                             \
    for (; i < n; i += sizeof(V))                                                                 \
        a0 = XOR(a0, LOAD((const V *)(p + i)));                                                   \
    a0 = XOR(XOR(XOR(a0, a1), XOR(a2, a3)), XOR(XOR(a4, a5), XOR(a6, a7)))

static uint64_t read_xor(const unsigned char *p, size_t n)
{
    size_t i = 0;
#if defined(__AVX2__)
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
            a7 = a0;
    XOR8(__m256i, _mm256_loadu_si256, _mm256_xor_si256);
    uint64_t w[4];
    _mm256_storeu_si256((void *)w, a0);
    return w[0] ^ w[1] ^ w[2] ^ w[3];
#else
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
#define LD64(q) (*(const uint64_t *)(q))
#define XOR64(a, b) ((a) ^ (b))
    XOR8(uint64_t, LD64, XOR64);
    return a0;
#endif
}

/* One pass over exactly the bytes a decode step reads from the weights (token_bytes of every
 * tensor, where the model holds them), split evenly over the threads as the GEMVs split them:
 * seconds.  Whole 64-byte words: each tensor's bytes rounded down to them. */
static double read_pass(const lh_gguf *g, volatile uint64_t *sink)
{
    size_t n_t = lh_gguf_n_tensors(g), total = 0;
    for (size_t i = 0; i < n_t; i++)
        total += token_bytes(g, lh_gguf_tensor_at(g, i)) / 64;
    uint64_t x = 0;
    double t0 = now_s();
#pragma omp parallel reduction(^ : x)
    {
        size_t th = 0, nt = 1;
#ifdef _OPENMP
        th = (size_t)omp_get_thread_num();
        nt = (size_t)omp_get_num_threads();
#endif
        /* this thread's words [w0, w1) of the tensors' words in file order */
        size_t w0 = total * th / nt, w1 = total * (th + 1) / nt, at = 0;
        for (size_t i = 0; i < n_t && at < w1; i++) {
            const lh_gguf_tensor *t = lh_gguf_tensor_at(g, i);
            size_t n = token_bytes(g, t) / 64, a = at > w0 ? at : w0;
            size_t b = at + n < w1 ? at + n : w1;
            if (b > a)
                x ^= read_xor((const unsigned char *)t->data + (a - at) * 64, (b - a) * 64);
            at += n;
        }
    }
    double dt = now_s() - t0;
    *sink ^= x;
    return dt;
}

/* Best (or with mean: mean rate) of reps prefills of n tokens at depth d (rewound to d each
 * time, one untimed warm-up): seconds, or < 0 on an error. */
static double best_prefill_at(lh_ctx *c, size_t d, const int32_t *tokens, size_t n, size_t reps,
                              int mean, float *logits)
{
    double best = -1, inv = 0;
    for (size_t r = 0; r <= reps; r++) {   /* r == 0: warm-up */
        if (lh_ctx_truncate(c, d) != d)
            return -1;
        double t = time_prefill(c, tokens, n, logits);
        if (t < 0)
            return -1;
        if (r > 0 && (best < 0 || t < best))
            best = t;
        if (r > 0)
            inv += 1.0 / t;
    }
    return summary(best, inv, reps, mean);
}

static int llama_tests(const lh_model *m, const opts *o)
{
    const lh_hparams *hp = lh_model_hparams(m);
    int rc = 1;
    lh_ctx *c = NULL;
    int32_t *tokens = NULL;
    float *logits = malloc(hp->n_vocab * sizeof *logits);
    size_t max_d = 0, max_t = o->tg;
    for (size_t i = 0; i < o->n_pp; i++)
        max_t = o->pp[i] > max_t ? o->pp[i] : max_t;
    for (size_t i = 0; i < o->n_depth; i++)
        max_d = o->depth[i] > max_d ? o->depth[i] : max_d;
    max_t = o->roofline > max_t ? o->roofline : max_t;
    lh_ctx_params cp = o->cp;
    cp.attn = o->attn;
    cp.n_ctx = max_d + max_t;
    tokens = malloc((max_d + max_t) * sizeof *tokens);
    if (!logits || !tokens || lh_ctx_new(&c, m, &cp))
        goto out;
    random_tokens(tokens, max_d + max_t, hp->n_vocab);
    const lh_ctx_params *rp = lh_ctx_params_get(c);
    int n_thr = 1;
#ifdef _OPENMP
    n_thr = omp_get_max_threads();
#endif
    printf("# %s\n# attn %s, kv %s, batch %zu, %d threads; %s of %zu after a warm-up\n",
           lh_model_desc(m), rp->attn == LH_ATTN_LONGHEADS ? "longheads" : "full",
           lh_type_name(rp->kv_type), rp->n_batch, n_thr, o->mean ? "mean rate" : "best",
           o->reps);
    const lh_gguf *g = lh_model_gguf(m);
    printf("weight_bytes_per_token %.0f\nkv_bytes_per_token %zu\n", weight_bytes_per_token(g),
           lh_ctx_kv_bytes_per_token(c));
    /* depths in the order given; each is filled once from empty (that fill is itself reported,
     * one run, as "fillD"), then every pp test runs at that depth and the tg test after it */
    for (size_t i = 0; i < o->n_depth; i++) {
        size_t d = o->depth[i];
        char at[32] = "";
        if (d)
            snprintf(at, sizeof at, "@%zu", d);
        lh_ctx_truncate(c, 0);
        if (d) {
            double t = time_prefill(c, tokens, d, logits);
            if (t < 0 || lh_ctx_n_past(c) != d)
                goto out;
            printf("fill%zu %.1f\n", d, (double)d / t);
            fflush(stdout);
        }
        for (size_t j = 0; j < o->n_pp; j++) {
            double t = best_prefill_at(c, d, tokens + d, o->pp[j], o->reps, o->mean, logits);
            if (t < 0)
                goto out;
            printf("pp%zu%s %.1f\n", o->pp[j], at, (double)o->pp[j] / t);
            fflush(stdout);
        }
        if (!o->tg)
            continue;
        if (best_decode(c, d, tokens + d, o->tg, 1, 0, logits) < 0)   /* warm-up */
            goto out;
        double s = best_decode(c, d, tokens + d, o->tg, o->reps, o->mean, logits);
        if (s < 0)
            goto out;
        printf("tg%zu%s %.1f\n", o->tg, at, 1.0 / s);
        fflush(stdout);
    }
    if (o->roofline) {
        /* decode steps and read passes over the same bytes, alternating one by one, so that the
         * machine's bandwidth, which drifts over seconds here, is the same for both sides */
        size_t d = o->depth[o->n_depth - 1];
        if (lh_ctx_truncate(c, d) != d)
            goto out;
        volatile uint64_t sink = 0;
        double td = 0, tr = 0;
        read_pass(g, &sink);   /* warm-up */
        for (size_t i = 0; i < o->roofline; i++) {
            double t = time_decode(c, tokens + d + i, 1, logits);
            if (t < 0)
                goto out;
            td += t;
            tr += read_pass(g, &sink);
        }
        printf("roofline_read_gbs %.1f\nroofline_tg %.1f\nroofline_share %.3f\n",
               weight_bytes_per_token(g) * (double)o->roofline / tr / 1e9,
               (double)o->roofline / td, tr / td);
        fflush(stdout);
    }
    rc = 0;
out:
    if (rc)
        fprintf(stderr, "longheads-bench: a test failed (see the message above)\n");
    lh_ctx_free(c);
    free(tokens);
    free(logits);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: longheads-bench -m MODEL [--window L] [--chunk W] [--mults 1,8,32,128]\n"
            "         [--full-max M] [--decode D] [--reps R] [--kv f32|f16] [--batch B] [--long N]\n"
            "       longheads-bench -m MODEL [--pp N,..] [--tg T] [--depth D,..]\n"
            "         [--attn full|longheads] [--reps R] [--kv f32|f16] [--batch B]\n"
            "         [--stat best|mean]  (mean: the mean of the runs' rates, llama-bench's avg_ts)\n"
            "         [--roofline N]  (N decode steps, each followed by a read pass over the\n"
            "                          bytes it read from the weights: the share of bandwidth)\n"
            "       both: [--weights auto|load|map] (default auto, as the daemon)\n"
            "Per-token prefill and decode times, LongHeads against full attention, with ratios;\n"
            "with --pp/--tg: tokens/s in the manner of llama-bench.\n");
}

int main(int argc, char **argv)
{
    opts o;
    memset(&o, 0, sizeof o);
    lh_ctx_params_default(&o.cp);
    {
        lh_ctx_params d; /* the daemon's KV type (F16), so that the figures are what users get */
        lh_params_default(&d);
        o.cp.kv_type = d.kv_type;
    }
    o.cp.window = 512;
    o.cp.chunk = 64;
    o.mults[0] = 1, o.mults[1] = 8, o.mults[2] = 32, o.mults[3] = 128, o.n_mults = 4;
    o.full_max = 32;
    o.reps = 3;
    o.depth[0] = 0, o.n_depth = 1;
    o.attn = LH_ATTN_FULL;
    int llama_mode = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "longheads-bench: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            o.model = v;
        else if (!strcmp(a, "--mults"))
            bad = parse_list(v, 1, 4096, o.mults, &o.n_mults);
        else if (!strcmp(a, "--full-max"))
            bad = lh_params_parse_size(v, 0, 4096, &o.full_max);
        else if (!strcmp(a, "--decode"))
            bad = lh_params_parse_size(v, 1, 4096, &o.n_decode);
        else if (!strcmp(a, "--reps"))
            bad = lh_params_parse_size(v, 1, 100, &o.reps);
        else if (!strcmp(a, "--long"))
            bad = lh_params_parse_size(v, 4096, 1u << 22, &o.long_n);
        else if (!strcmp(a, "--pp"))
            bad = parse_list(v, 1, 1u << 20, o.pp, &o.n_pp), llama_mode = 1;
        else if (!strcmp(a, "--tg"))
            bad = lh_params_parse_size(v, 1, 1u << 16, &o.tg), llama_mode = 1;
        else if (!strcmp(a, "--depth"))
            bad = parse_list(v, 0, 1u << 20, o.depth, &o.n_depth);
        else if (!strcmp(a, "--weights"))
            bad = lh_weights_hold_parse(v, &o.weights);
        else if (!strcmp(a, "--roofline"))
            bad = lh_params_parse_size(v, 1, 4096, &o.roofline), llama_mode = 1;
        else if (!strcmp(a, "--stat"))
            bad = strcmp(v, "best") && strcmp(v, "mean"), o.mean = !strcmp(v, "mean");
        else if (!strcmp(a, "--attn") || !strcmp(a, "--kv") || !strcmp(a, "--batch") ||
                 !strcmp(a, "--chunk") || !strcmp(a, "--window")) {
            lh_ctx_params cp = o.cp;
            int prc = lh_params_set(&cp, NULL, a + 2, v);
            if (prc)
                return 2;  /* lh_params_set logged the accepted range */
            if (!strcmp(a, "--attn"))
                o.attn = cp.attn;   /* the others must not reset it */
            o.cp = cp;
            o.cp.attn = LH_ATTN_FULL;
        } else {
            fprintf(stderr, "longheads-bench: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "longheads-bench: bad value for %s: '%s'\n", a, v);
            return 2;
        }
    }
    if (!o.model) {
        usage(stderr);
        return 2;
    }
    lh_model *m = NULL;
    if (lh_model_open_ex(&m, o.model, o.weights)) {
        fprintf(stderr, "longheads-bench: cannot open %s (see the message above)\n", o.model);
        return 1;
    }
    int rc = llama_mode ? llama_tests(m, &o) : context_table(m, &o);
    lh_model_close(m);
    return rc;
}
