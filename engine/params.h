/* engine/params — one parser for the run-time settings that every front end shares (the
 * one-shot tools' flags, the daemon's config file): context and sampler parameters by name.
 *
 *   key            value                      sets
 *   ctx            tokens                     lh_ctx_params.n_ctx
 *   batch          tokens                     lh_ctx_params.n_batch
 *   kv             f32 | f16                  lh_ctx_params.kv_type
 *   attn           full | longheads           lh_ctx_params.attn
 *   chunk          tokens                     lh_ctx_params.chunk  (LongHeads w)
 *   window         tokens                     lh_ctx_params.window (LongHeads L)
 *   temp           float >= 0                 lh_sampler_params.temperature
 *   top-k          int >= 0                   lh_sampler_params.top_k
 *   top-p          float in (0, 1]            lh_sampler_params.top_p
 *   min-p          float in [0, 1]            lh_sampler_params.min_p
 *   repeat-penalty float > 0                  lh_sampler_params.repeat_penalty
 *   repeat-last-n  int >= 0                   lh_sampler_params.repeat_last_n
 *   seed           uint64                     lh_sampler_params.seed
 * Underscores in keys are accepted for dashes.  Either params pointer may be NULL (its keys are
 * then unknown).
 */
#ifndef LH_PARAMS_H
#define LH_PARAMS_H

#include "model.h"
#include "sampler.h"

/* Returns 0, LH_E_NOTFOUND (unknown key, not logged), LH_E_FORMAT (bad value, logged with the
 * key and the accepted range). */
int lh_params_set(lh_ctx_params *cp, lh_sampler_params *sp, const char *key, const char *value);

/* Parses an unsigned decimal integer in [lo, hi]: 0 or LH_E_FORMAT (not logged). */
int lh_params_parse_size(const char *s, size_t lo, size_t hi, size_t *outp);

#endif
