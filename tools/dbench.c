/* tools/dbench — longheads-dbench: what a client of longheadsd gets, measured through the socket.
 * The engine-level longheads-bench times lh_ctx_eval; this one times whole requests to a running
 * daemon, so the daemon's threads, wait policy, prefill slicing and protocol are all included.
 *
 *   longheads-dbench [--socket PATH] [--prompt N] [--gen T] [--reps R] [--attn full|longheads]
 *
 * Each repetition sends a Generate with a prompt of N random token ids (a fresh draw each time,
 * so the daemon's prompt cache cannot reuse more than the BOS), greedy, at most T tokens, and
 * records: time to first token as the client sees it (request sent -> first Token frame), and
 * the Final frame's prefill and decode tokens/s.  One untimed warm-up request first; the best of
 * R is printed (min time, max rate: the least disturbed run), plus the median.  Random weights
 * may emit EOS early: the generated count is printed, and decode figures of a run with fewer than
 * 8 tokens are left out.  Lines: "ttft_ms X", "prefill_tps X", "decode_tps X" (best), then a
 * comment with the medians.  Exit status 0, 1 on a failure, 2 on bad usage.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/longheads.h"   /* not kernels/longheads.h */

#define MAX_REPS 50

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x853c49e6748fea9bULL;

static uint32_t next_u32(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

typedef struct {
    double t0, t_first;
} timing;

static int on_event(const lh_client_event *ev, void *ud)
{
    timing *t = ud;
    if (ev->kind == LH_CLIENT_EV_TOKEN && t->t_first == 0)
        t->t_first = now_s();
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv)
{
    const char *sock = NULL;
    size_t n_prompt = 512, n_gen = 64, reps = 3;
    lh_client_attn attn = 0;
    int have_attn = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "usage: longheads-dbench [--socket PATH] [--prompt N] [--gen T] "
                            "[--reps R] [--attn full|longheads]\n");
            return 2;
        }
        i++;
        if (!strcmp(a, "--socket"))
            sock = v;
        else if (!strcmp(a, "--prompt"))
            n_prompt = strtoul(v, NULL, 10);
        else if (!strcmp(a, "--gen"))
            n_gen = strtoul(v, NULL, 10);
        else if (!strcmp(a, "--reps"))
            reps = strtoul(v, NULL, 10);
        else if (!strcmp(a, "--attn")) {
            have_attn = 1;
            if (!strcmp(v, "full"))
                attn = LH_CLIENT_ATTN_FULL;
            else if (!strcmp(v, "longheads"))
                attn = LH_CLIENT_ATTN_LONGHEADS;
            else
                have_attn = -1;
        } else
            have_attn = -1;
        if (have_attn < 0 || n_prompt < 2 || n_prompt > (1u << 22) || n_gen < 1 ||
            n_gen > 65536 || reps < 1 || reps > MAX_REPS) {
            fprintf(stderr, "longheads-dbench: bad option %s %s (prompt 2.., gen 1.., reps 1..%d)\n",
                    a, v, MAX_REPS);
            return 2;
        }
    }
    lh_client *c = NULL;
    int rc = lh_client_connect(&c, sock, 10000);
    if (rc) {
        fprintf(stderr, "longheads-dbench: cannot connect: %s\n", lh_client_strerror(rc));
        return 1;
    }
    const lh_client_model_info *mi = lh_client_model(c);
    int32_t *toks = malloc(n_prompt * sizeof *toks);
    if (!toks || mi->n_vocab < 4) {
        lh_client_close(c);
        free(toks);
        return 1;
    }
    printf("# daemon: %s; prompt %zu random tokens, up to %zu generated, greedy, best of %zu "
           "after a warm-up\n", mi->desc, n_prompt, n_gen, reps);
    double ttft[MAX_REPS], pp[MAX_REPS], tg[MAX_REPS];
    size_t n_tg = 0, n_ok = 0;
    int ret = 1;
    for (size_t r = 0; r <= reps; r++) {
        toks[0] = mi->bos;
        for (size_t i = 1; i < n_prompt; i++)
            toks[i] = (int32_t)(3 + next_u32() % (mi->n_vocab - 3));
        lh_client_gen_opts o;
        lh_client_gen_opts_default(&o);
        o.tokens = toks;
        o.n_tokens = n_prompt;
        o.max_tokens = (uint32_t)n_gen;
        o.temperature = 0;
        if (have_attn)
            o.attn = attn;
        lh_client_result res;
        timing t = {now_s(), 0};
        rc = lh_client_generate(c, &o, on_event, &t, &res);
        if (rc || res.finish == LH_CLIENT_FINISH_ERROR) {
            fprintf(stderr, "longheads-dbench: generate failed: %s\n",
                    rc ? lh_client_strerror(rc) : res.error);
            goto out;
        }
        if (r == 0)
            continue;   /* warm-up */
        ttft[n_ok] = t.t_first > 0 ? (t.t_first - t.t0) * 1e3 : -1;
        pp[n_ok] = res.prefill_tps;
        n_ok++;
        if (res.n_generated >= 8)
            tg[n_tg++] = res.decode_tps;
        printf("# rep %zu: ttft %.1f ms, prompt %u (%u reused), prefill %.1f tok/s, generated %u, "
               "decode %.1f tok/s\n", r, ttft[n_ok - 1], res.n_prompt, res.n_reused,
               res.prefill_tps, res.n_generated, res.decode_tps);
    }
    double best_ttft = ttft[0], best_pp = 0, best_tg = 0;
    for (size_t i = 0; i < n_ok; i++) {
        best_ttft = ttft[i] < best_ttft ? ttft[i] : best_ttft;
        best_pp = pp[i] > best_pp ? pp[i] : best_pp;
    }
    for (size_t i = 0; i < n_tg; i++)
        best_tg = tg[i] > best_tg ? tg[i] : best_tg;
    printf("ttft_ms %.1f\nprefill_tps %.1f\n", best_ttft, best_pp);
    if (n_tg)
        printf("decode_tps %.1f\n", best_tg);
    else
        printf("# decode: every run ended (EOS) before 8 tokens\n");
    printf("# medians: ttft %.1f ms, prefill %.1f tok/s, decode %.1f tok/s\n",
           median(ttft, n_ok), median(pp, n_ok), median(tg, n_tg));
    ret = 0;
out:
    free(toks);
    lh_client_close(c);
    return ret;
}
