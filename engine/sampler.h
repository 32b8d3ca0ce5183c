/* engine/sampler — choose the next token from logits.
 *
 * Order (as llama.cpp applies them): repetition penalty over the last `repeat_last_n` tokens,
 * then, with temperature == 0, greedy argmax (lowest id on ties); otherwise top-k, temperature,
 * softmax, top-p, min-p, and a draw from a seeded xorshift generator.  The same seed and the
 * same logits give the same tokens.  Scratch for sorting is allocated in lh_sampler_new (sized
 * for n_vocab); lh_sampler_sample never allocates.  One sampler per request; not thread-safe.
 */
#ifndef LH_SAMPLER_H
#define LH_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    float temperature;     /* 0: greedy */
    int32_t top_k;         /* 0: off */
    float top_p;           /* 1: off */
    float min_p;           /* 0: off */
    float repeat_penalty;  /* 1: off */
    int32_t repeat_last_n; /* tokens looked back for the penalty (default 64) */
    uint64_t seed;
} lh_sampler_params;

typedef struct lh_sampler lh_sampler;

void lh_sampler_params_default(lh_sampler_params *p);
/* Returns 0, -EINVAL (out-of-range parameter: temperature < 0, top_p outside (0,1], min_p outside
 * [0,1], repeat_penalty <= 0), -ENOMEM. */
int lh_sampler_new(lh_sampler **sp, const lh_sampler_params *p, size_t n_vocab);
void lh_sampler_free(lh_sampler *s);
/* Record a token as part of the history (prompt tokens and generated ones). */
void lh_sampler_accept(lh_sampler *s, int32_t token);
/* Choose a token.  logits (n_vocab) may be modified. */
int32_t lh_sampler_sample(lh_sampler *s, float *logits);

#endif
