/* tests/test_sampler — greedy, top-k, top-p, min-p, temperature, repetition penalty, seeds. */
#include "test.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"

#define V 17

static void fill(float *l)
{
    /* a fixed, non-monotonic distribution; token 5 is the argmax, token 11 second */
    for (int i = 0; i < V; i++)
        l[i] = (float)((i * 7) % V) * 0.1f;
    l[5] = 3.0f;
    l[11] = 2.5f;
}

static lh_sampler *make(float temp, int top_k, float top_p, float min_p, float rep, uint64_t seed)
{
    lh_sampler_params p;
    lh_sampler_params_default(&p);
    p.temperature = temp, p.top_k = top_k, p.top_p = top_p, p.min_p = min_p;
    p.repeat_penalty = rep, p.seed = seed;
    lh_sampler *s = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_sampler_new(&s, &p, V), 0);
    return s;
}

static void test_greedy(void)
{
    float l[V];
    lh_sampler *s = make(0, 0, 1, 0, 1, 1);
    fill(l);
    CU_ASSERT_EQUAL(lh_sampler_sample(s, l), 5);
    /* ties go to the lowest id */
    for (int i = 0; i < V; i++)
        l[i] = 1.0f;
    CU_ASSERT_EQUAL(lh_sampler_sample(s, l), 0);
    lh_sampler_free(s);
}

static void test_seed_reproducible(void)
{
    int32_t a[64], b[64], c[64];
    float l[V];
    lh_sampler *s1 = make(1.5f, 0, 1, 0, 1, 42), *s2 = make(1.5f, 0, 1, 0, 1, 42),
               *s3 = make(1.5f, 0, 1, 0, 1, 43);
    for (int i = 0; i < 64; i++) {
        fill(l), a[i] = lh_sampler_sample(s1, l);
        fill(l), b[i] = lh_sampler_sample(s2, l);
        fill(l), c[i] = lh_sampler_sample(s3, l);
    }
    CU_ASSERT_EQUAL(memcmp(a, b, sizeof a), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(a, c, sizeof a), 0);
    /* a high temperature over 64 draws visits more than the top two tokens */
    int seen[V] = { 0 }, distinct = 0;
    for (int i = 0; i < 64; i++)
        distinct += !seen[a[i]]++;
    CU_ASSERT(distinct > 2);
    lh_sampler_free(s1);
    lh_sampler_free(s2);
    lh_sampler_free(s3);
}

static void test_filters(void)
{
    float l[V];
    /* top-k 1, top-p tiny and min-p 1 each leave only the argmax */
    lh_sampler *k1 = make(2.0f, 1, 1, 0, 1, 7), *p0 = make(2.0f, 0, 0.01f, 0, 1, 7),
               *m1 = make(2.0f, 0, 1, 1.0f, 1, 7), *k2 = make(5.0f, 2, 1, 0, 1, 7);
    int seen11 = 0;
    for (int i = 0; i < 200; i++) {
        fill(l);
        CU_ASSERT_EQUAL(lh_sampler_sample(k1, l), 5);
        fill(l);
        CU_ASSERT_EQUAL(lh_sampler_sample(p0, l), 5);
        fill(l);
        CU_ASSERT_EQUAL(lh_sampler_sample(m1, l), 5);
        fill(l);
        int32_t t = lh_sampler_sample(k2, l);
        CU_ASSERT(t == 5 || t == 11);
        seen11 += t == 11;
    }
    CU_ASSERT(seen11 > 50 && seen11 < 150); /* p(11) = e^-0.1/(1+e^-0.1) = 0.475 at T=5 */
    lh_sampler_free(k1);
    lh_sampler_free(p0);
    lh_sampler_free(m1);
    lh_sampler_free(k2);
}

static void test_temperature_frequencies(void)
{
    /* two tokens with logits 0 and ln 3 at T = 1: p = 0.25 / 0.75 */
    lh_sampler *s = make(1.0f, 0, 1, 0, 1, 99);
    int n1 = 0, N = 4000;
    for (int i = 0; i < N; i++) {
        float l[V];
        for (int j = 0; j < V; j++)
            l[j] = -1e9f;
        l[0] = 0;
        l[1] = logf(3.0f);
        n1 += lh_sampler_sample(s, l) == 1;
    }
    CU_ASSERT(fabs(n1 / (double)N - 0.75) < 0.03);
    lh_sampler_free(s);
}

static void test_repeat_penalty(void)
{
    float l[V];
    lh_sampler *s = make(0, 0, 1, 0, 1.5f, 1);
    fill(l);
    CU_ASSERT_EQUAL(lh_sampler_sample(s, l), 5);
    lh_sampler_accept(s, 5);
    lh_sampler_accept(s, 5); /* penalised once, not twice: 3.0/1.5 = 2.0 < 2.5 */
    fill(l);
    CU_ASSERT_EQUAL(lh_sampler_sample(s, l), 11);
    lh_sampler_free(s);
}

static void test_bad_params(void)
{
    lh_sampler_params p;
    lh_sampler *s = NULL;
    lh_sampler_params_default(&p);
    p.temperature = -1;
    CU_ASSERT_EQUAL(lh_sampler_new(&s, &p, V), -EINVAL);
    lh_sampler_params_default(&p);
    p.top_p = 0;
    CU_ASSERT_EQUAL(lh_sampler_new(&s, &p, V), -EINVAL);
    lh_sampler_params_default(&p);
    p.min_p = 1.5f;
    CU_ASSERT_EQUAL(lh_sampler_new(&s, &p, V), -EINVAL);
    lh_sampler_params_default(&p);
    p.repeat_penalty = 0;
    CU_ASSERT_EQUAL(lh_sampler_new(&s, &p, V), -EINVAL);
    CU_ASSERT_PTR_NULL(s);
    lh_sampler_free(NULL);
}

/* top-k over a large vocabulary (the partial selection path) keeps exactly the k best */
static void test_top_k_large(void)
{
    enum { N = 5003 };
    lh_sampler_params p;
    lh_sampler_params_default(&p);
    p.temperature = 50.0f, p.top_k = 7, p.top_p = 1, p.min_p = 0, p.seed = 3;
    lh_sampler *s = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_sampler_new(&s, &p, N), 0);
    float *l = malloc(N * sizeof *l);
    int seen[N] = { 0 };
    for (int it = 0; it < 700; it++) {
        for (int i = 0; i < N; i++)
            l[i] = (float)(i % 1000) * 0.001f; /* many ties */
        int32_t t = lh_sampler_sample(s, l);
        CU_ASSERT(t >= 0 && t < N);
        seen[t]++;
    }
    /* the 7 best: the five ids with logit 0.999, then the two lowest ids with 0.998 (ties go to
     * the lower id); at temperature 50 all of them are drawn and nothing else is */
    const int best[7] = { 999, 1999, 2999, 3999, 4999, 998, 1998 };
    int drawn = 0;
    for (int i = 0; i < 7; i++) {
        CU_ASSERT(seen[best[i]] > 0);
        drawn += seen[best[i]];
    }
    CU_ASSERT_EQUAL(drawn, 700);
    free(l);
    lh_sampler_free(s);
}

void lh_test_sampler(void)
{
    CU_pSuite s = CU_add_suite("sampler", NULL, NULL);
    CU_add_test(s, "greedy", test_greedy);
    CU_add_test(s, "same seed, same tokens", test_seed_reproducible);
    CU_add_test(s, "top-k, top-p, min-p", test_filters);
    CU_add_test(s, "temperature frequencies", test_temperature_frequencies);
    CU_add_test(s, "repetition penalty", test_repeat_penalty);
    CU_add_test(s, "bad parameters", test_bad_params);
    CU_add_test(s, "top-k over a large vocabulary", test_top_k_large);
}
