/* tools/kvbench — longheads-kvbench: decode speed with a long context, its KV cache in memory or
 * on disk (--kv-dir), without spending hours on a prefill.
 *
 *   longheads-kvbench -m MODEL [--fill N] [--decode T] [--kv f32|f16] [--attn full|longheads]
 *                     [--chunk W] [--window L] [--kv-dir DIR] [--max-memory BYTES]
 *                     [--threads T] [--seed S]
 *
 * The context's state for N tokens (token ids, every layer's keys and values, the LongHeads
 * chunk representations and pending queries) is made up: random ids, and keys, values and
 * representations of random sign and mantissa with magnitudes in [0.25, 1), written in through the prompt cache's loader
 * (lh_ctx_state_load) exactly as a saved state would be.  Then T tokens are decoded greedily one
 * at a time and timed.  The work per decoded token is the real one for that context length
 * (every layer's projections, the LongHeads selection over all N/w chunks, attention over the
 * selected chunks); only the values are not a real text's, so the chunks heads select are
 * scattered, which is the worst case for the pages a KV cache on disk must fault in.
 * With --kv-dir the memory budget (--max-memory, as the daemon's, for 1 slot) bounds the KV
 * pages kept resident.  Prints decode tok/s, the process's peak and current resident memory
 * (VmHWM, VmRSS) and how often the KV pages were dropped.
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

#include "log.h"
#include "model.h"
#include "params.h"
#include "quant.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    size_t call, n_kv_calls, n_vocab;
    lh_type kv_type;
    uint64_t rng;
} gen_state;

static uint32_t next_u32(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 32);
}

/* The made-up state, in lh_ctx_state_save's order: ids, then the KV segments, then floats. */
static int fill(void *ud, void *buf, size_t size)
{
    gen_state *g = ud;
    if (g->call == 0) {
        int32_t *t = buf;
        for (size_t i = 0; i < size / 4; i++)
            t[i] = (int32_t)(next_u32(&g->rng) % g->n_vocab);
    } else if (g->call <= g->n_kv_calls && g->kv_type == LH_TYPE_F16) {
        /* random sign and mantissa, exponent of [0.25, 1): two halves per draw */
        uint16_t *h = buf;
        for (size_t i = 0; i + 1 < size / 2; i += 2) {
            uint32_t r = next_u32(&g->rng);
            h[i] = (uint16_t)((r & 0x87ff) | 0x3400);
            h[i + 1] = (uint16_t)(((r >> 16) & 0x87ff) | 0x3400);
        }
    } else {
        /* random sign and mantissa, magnitude in [0.25, 1) */
        uint32_t *f = buf;
        for (size_t i = 0; i < size / 4; i++)
            f[i] = (next_u32(&g->rng) & 0x80ffffffu) | 0x3e800000u;
    }
    g->call++;
    return 0;
}

static size_t status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kb = 0, kl = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0)
            kb = (size_t)strtoull(line + kl + 1, NULL, 10);
    if (f)
        fclose(f);
    return kb;
}

int main(int argc, char **argv)
{
    const char *model = NULL;
    size_t n_fill = 262144, n_decode = 64, max_memory = 0;
    uint64_t seed = 1;
    lh_ctx_params cp;
    lh_params_default(&cp);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v || strncmp(a, "-", 1) != 0) {
            fprintf(stderr, "usage: see tools/kvbench.c\n");
            return 2;
        }
        i++;
        int bad = 0;
        if (strcmp(a, "-m") == 0)
            model = v;
        else if (strcmp(a, "--fill") == 0)
            bad = lh_params_parse_size(v, 1, 1u << 22, &n_fill);
        else if (strcmp(a, "--decode") == 0)
            bad = lh_params_parse_size(v, 1, 1u << 20, &n_decode);
        else if (strcmp(a, "--max-memory") == 0)
            bad = lh_params_parse_bytes(v, &max_memory);
        else if (strcmp(a, "--seed") == 0) {
            size_t z;
            bad = lh_params_parse_size(v, 1, SIZE_MAX, &z);
            seed = z;
        } else if (strcmp(a, "--threads") == 0) {
            size_t z;
            bad = lh_params_parse_size(v, 1, 4096, &z);
#ifdef _OPENMP
            if (!bad)
                omp_set_num_threads((int)z);
#endif
        } else
            bad = lh_params_set(&cp, NULL, a + 2, v) != 0;
        if (bad) {
            fprintf(stderr, "longheads-kvbench: bad value '%s' for %s\n", v, a);
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "longheads-kvbench: -m MODEL is required\n");
        return 2;
    }
    lh_model *m = NULL;
    lh_ctx *c = NULL;
    int rc = 1;
    float *logits = NULL;
    if (lh_model_open(&m, model) != 0)
        return 1;
    cp.n_ctx = n_fill + n_decode + 1;
    char report[640];
    if (lh_params_fit_ctx(m, &cp, 1, max_memory, report, sizeof report) != 0)
        goto out;
    printf("%s\n%s\n", lh_model_desc(m), report);
    if (lh_ctx_new(&c, m, &cp) != 0)
        goto out;
    const lh_hparams *hp = lh_model_hparams(m);
    const lh_ctx_params *p = lh_ctx_params_get(c);
    gen_state g = {.n_kv_calls = 2 * hp->n_layer * hp->n_head_kv, .n_vocab = hp->n_vocab,
                   .kv_type = p->kv_type, .rng = seed * 0x9e3779b97f4a7c15ull | 1};
    double t0 = now_s();
    int e = lh_ctx_state_load(c, n_fill, fill, &g);
    if (e != 0) {
        fprintf(stderr, "longheads-kvbench: filling the context failed (%d)\n", e);
        goto out;
    }
    double t1 = now_s();
    printf("filled %zu tokens (%.1f GiB of KV, %s) in %.1f s; VmRSS %zu MiB\n", n_fill,
           (double)n_fill * (double)lh_ctx_kv_bytes_per_token(c) / (1 << 30),
           p->kv_dir ? "on disk" : "in memory", t1 - t0, status_kb("VmRSS:") >> 10);
    logits = malloc(hp->n_vocab * sizeof *logits);
    if (!logits)
        goto out;
    int32_t tok = 1;
    double td = 0;
    for (size_t i = 0; i < n_decode; i++) {
        double a = now_s();
        if ((e = lh_ctx_eval(c, &tok, 1, logits, 0)) != 0) {
            fprintf(stderr, "longheads-kvbench: decode failed (%d)\n", e);
            goto out;
        }
        if (i > 0) /* the first token faults in what the fill dropped: reported apart */
            td += now_s() - a;
        else
            printf("first decoded token %.1f ms\n", (now_s() - a) * 1e3);
        size_t best = 0;
        for (size_t k = 1; k < hp->n_vocab; k++)
            if (logits[k] > logits[best])
                best = k;
        tok = (int32_t)best;
    }
    printf("decode: %zu tokens at context %zu..%zu: %.2f tok/s (%s, %s, chunk %zu, window %zu)\n",
           n_decode - 1, n_fill + 1, n_fill + n_decode, td > 0 ? (double)(n_decode - 1) / td : 0,
           p->kv_dir ? "KV on disk" : "KV in memory", lh_type_name(p->kv_type), p->chunk, p->window);
    printf("VmHWM %zu MiB, VmRSS %zu MiB, KV file %zu MiB, resident KV pages dropped %zu times\n",
           status_kb("VmHWM:") >> 10, status_kb("VmRSS:") >> 10, lh_ctx_kv_file_size(c) >> 20,
           lh_ctx_kv_drops(c));
    rc = 0;
out:
    free(logits);
    lh_ctx_free(c);
    lh_model_close(m);
    return rc;
}
