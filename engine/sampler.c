/* engine/sampler — see sampler.h. */
#include "sampler.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

typedef struct {
    float logit;
    int32_t id;
} cand;

struct lh_sampler {
    lh_sampler_params p;
    size_t n_vocab;
    cand *cands;          /* (n_vocab) scratch */
    int32_t *history;     /* ring of the last repeat_last_n tokens */
    size_t n_hist, hist_pos;
    uint64_t rng;
};

void lh_sampler_params_default(lh_sampler_params *p)
{
    p->temperature = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n = 64;
    p->seed = 0x853c49e6748fea9bULL;
}

int lh_sampler_new(lh_sampler **sp, const lh_sampler_params *p, size_t n_vocab)
{
    if (!(p->temperature >= 0) || !(p->top_p > 0 && p->top_p <= 1) ||
        !(p->min_p >= 0 && p->min_p <= 1) || !(p->repeat_penalty > 0) || p->top_k < 0 ||
        p->repeat_last_n < 0 || p->repeat_last_n > 1 << 20 || n_vocab == 0) {
        lh_log_error("sampler: parameter out of range (temperature %g, top_p %g, min_p %g, "
                     "repeat_penalty %g, top_k %d, repeat_last_n %d)", p->temperature, p->top_p,
                     p->min_p, p->repeat_penalty, p->top_k, p->repeat_last_n);
        return -EINVAL;
    }
    lh_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->cands = malloc(n_vocab * sizeof *s->cands);
    s->history = malloc(((size_t)p->repeat_last_n + 1) * sizeof *s->history);
    if (!s->cands || !s->history) {
        lh_sampler_free(s);
        return -ENOMEM;
    }
    /* splitmix64 of the seed, so nearby seeds give unrelated streams; never 0 for xorshift */
    uint64_t z = p->seed + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    s->rng = (z ^ (z >> 31)) | 1;
    *sp = s;
    return 0;
}

void lh_sampler_free(lh_sampler *s)
{
    if (!s)
        return;
    free(s->cands);
    free(s->history);
    free(s);
}

void lh_sampler_accept(lh_sampler *s, int32_t token)
{
    size_t cap = (size_t)s->p.repeat_last_n;
    if (cap == 0)
        return;
    s->history[s->hist_pos] = token;
    s->hist_pos = (s->hist_pos + 1) % cap;
    if (s->n_hist < cap)
        s->n_hist++;
}

static uint64_t next_u64(lh_sampler *s)
{
    uint64_t x = s->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return x * 0x2545f4914f6cdd1dULL;
}

/* uniform in [0, 1) with 53 random bits */
static double next_f64(lh_sampler *s) { return (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0); }

static int cmp_cand(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit < y->logit ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Reorders c[0..n) so that its k best candidates (by cmp_cand) come first, in any order:
 * quickselect with a three-way partition, so every round makes progress. */
static void select_top(cand *c, size_t n, size_t k)
{
    size_t lo = 0, hi = n; /* c[0..lo) are among the k best, c[hi..n) are not */
    while (lo < k && k < hi) {
        cand pivot = c[lo + (hi - lo) / 2];
        size_t lt = lo, i = lo, gt = hi; /* [lo,lt) better, [lt,i) equal, [gt,hi) worse */
        while (i < gt) {
            int r = cmp_cand(&c[i], &pivot);
            cand t = c[i];
            if (r < 0) {
                c[i++] = c[lt];
                c[lt++] = t;
            } else if (r > 0) {
                c[i] = c[--gt];
                c[gt] = t;
            } else {
                i++;
            }
        }
        if (k <= lt)
            hi = lt;
        else if (k >= gt)
            lo = gt;
        else
            return; /* the boundary falls inside the equal run */
    }
}

static void apply_repeat_penalty(lh_sampler *s, float *logits)
{
    if (s->p.repeat_penalty == 1.0f)
        return;
    /* each distinct token in the window is penalised once (llama.cpp's rule) */
    for (size_t i = 0; i < s->n_hist; i++) {
        int32_t t = s->history[i];
        if (t < 0 || (size_t)t >= s->n_vocab)
            continue;
        int seen = 0;
        for (size_t j = 0; j < i; j++)
            if (s->history[j] == t)
                seen = 1;
        if (seen)
            continue;
        logits[t] = logits[t] > 0 ? logits[t] / s->p.repeat_penalty : logits[t] * s->p.repeat_penalty;
    }
}

int32_t lh_sampler_sample(lh_sampler *s, float *logits)
{
    apply_repeat_penalty(s, logits);
    size_t n = s->n_vocab;
    if (s->p.temperature == 0.0f) {
        size_t best = 0;
        for (size_t i = 1; i < n; i++)
            if (logits[i] > logits[best])
                best = i;
        return (int32_t)best;
    }
    cand *c = s->cands;
    for (size_t i = 0; i < n; i++)
        c[i] = (cand){ logits[i], (int32_t)i };
    /* With top-k only the k best need sorting: partition them to the front first (an expected
     * O(n) quickselect), so a 32000-token vocabulary is not sorted for every token. */
    if (s->p.top_k > 0 && (size_t)s->p.top_k < n) {
        select_top(c, n, (size_t)s->p.top_k);
        n = (size_t)s->p.top_k;
    }
    qsort(c, n, sizeof *c, cmp_cand);
    /* temperature + softmax over the survivors (c[0] is the max) */
    double sum = 0;
    float mx = c[0].logit;
    for (size_t i = 0; i < n; i++) {
        c[i].logit = (float)exp((double)(c[i].logit - mx) / s->p.temperature);
        sum += c[i].logit;
    }
    for (size_t i = 0; i < n; i++)
        c[i].logit = (float)(c[i].logit / sum);
    /* top-p: the smallest prefix whose mass reaches top_p */
    if (s->p.top_p < 1.0f) {
        double cum = 0;
        for (size_t i = 0; i < n; i++) {
            cum += c[i].logit;
            if (cum >= s->p.top_p) {
                n = i + 1;
                break;
            }
        }
    }
    /* min-p: drop tokens below min_p times the top probability */
    if (s->p.min_p > 0) {
        float floor_p = s->p.min_p * c[0].logit;
        size_t keep = 1;
        while (keep < n && c[keep].logit >= floor_p)
            keep++;
        n = keep;
    }
    double mass = 0;
    for (size_t i = 0; i < n; i++)
        mass += c[i].logit;
    double r = next_f64(s) * mass, cum = 0;
    for (size_t i = 0; i < n; i++) {
        cum += c[i].logit;
        if (r < cum)
            return c[i].id;
    }
    return c[n - 1].id;
}
