/* engine/params — one parser for the run-time settings that every front end shares (the
 * one-shot tools' flags, the daemon's config file): context and sampler parameters by name.
 *
 *   key            value                      sets
 *   ctx, ctx-size  tokens                     lh_ctx_params.n_ctx
 *   batch          tokens                     lh_ctx_params.n_batch
 *   kv             f32 | f16                  lh_ctx_params.kv_type
 *   attn           full | longheads           lh_ctx_params.attn
 *   chunk          tokens                     lh_ctx_params.chunk  (LongHeads w)
 *   window         tokens                     lh_ctx_params.window (LongHeads L)
 *   kv-dir         directory                  lh_ctx_params.kv_dir (borrowed: the string must
 *                                             outlive the params)
 *   score          rep | bound                lh_ctx_params.score  (LongHeads chunk score)
 *   temp           float >= 0                 lh_sampler_params.temperature
 *   top-k          int >= 0                   lh_sampler_params.top_k
 *   top-p          float in (0, 1]            lh_sampler_params.top_p
 *   min-p          float in [0, 1]            lh_sampler_params.min_p
 *   repeat-penalty float > 0                  lh_sampler_params.repeat_penalty
 *   repeat-last-n  int >= 0                   lh_sampler_params.repeat_last_n
 *   seed           uint64                     lh_sampler_params.seed
 * Underscores in keys are accepted for dashes.  Either params pointer may be NULL (its keys are
 * then unknown).
 *
 * The front ends' defaults (longheadsd, longheads-run, longheads-ppl) are not the engine's:
 * an F16 KV cache (as llama.cpp's), LongHeads attention with the chunk and window the model file suggests (inside the window it is
 * exactly full attention, so short prompts lose nothing), and a context as large as the memory
 * budget allows, up to LH_PARAMS_CTX_AUTO tokens (the KV cache is committed as it fills, so a
 * large context costs nothing until it is used).
 */
#ifndef LH_PARAMS_H
#define LH_PARAMS_H

#include "model.h"
#include "sampler.h"

/* 131072 + 1024: a 131072-token prompt fits with room for its answer (the passkey test's
 * longest length), and every power-of-two chunk up to 1024 divides it. */
#define LH_PARAMS_CTX_AUTO 132096u
/* With the KV cache on disk (kv_dir) the context is bounded by the disk: 1048576 + 4096 (a
 * million-token prompt and its answer), when the disk and the memory budget hold it. */
#define LH_PARAMS_CTX_AUTO_DISK 1052672u

/* The engine's defaults, then kv_type = F16, attn = LongHeads and n_ctx = 0 ("fit":
 * lh_params_fit_ctx). */
void lh_params_default(lh_ctx_params *cp);

/* Bytes of memory one token of context costs with cp on m (KV cache, LongHeads chunk
 * representations, the token id), for the budget and for reports. */
size_t lh_params_bytes_per_token(const lh_model *m, const lh_ctx_params *cp);

/* The part of it that stays in memory: all of it, or with kv_dir all but the KV cache. */
size_t lh_params_mem_bytes_per_token(const lh_model *m, const lh_ctx_params *cp);

/* The default memory budget: 3/4 of the memory available now (MemAvailable), less the model
 * file when it is mapped (read into memory it is already taken); 0 when it cannot be read. */
size_t lh_params_default_budget(const lh_model *m);

/* Resolves cp->n_ctx for n_slots contexts within max_memory bytes (0: the default budget).
 * n_ctx == 0: the largest context up to max(LH_PARAMS_CTX_AUTO, the model's trained length)
 * that fits; an explicit n_ctx must fit.  With cp->kv_dir the KV cache goes to disk: memory holds
 * the rest (lh_params_mem_bytes_per_token) and at least a KV working set of a few windows per
 * slot, the disk (free space in kv_dir now) the KV cache; the automatic context goes up to
 * LH_PARAMS_CTX_AUTO_DISK, and cp->kv_budget gets what is left of the slot's share for resident
 * KV pages.  report (may be NULL) gets one line for the log: the
 * context, its bytes per token and at most, and the budget.  Returns 0 or LH_E_LIMIT (logged:
 * what does not fit and the flags that change it). */
int lh_params_fit_ctx(const lh_model *m, lh_ctx_params *cp, size_t n_slots, size_t max_memory,
                      char *report, size_t report_size);

/* Parses a byte size: an integer with an optional K, M, G or T suffix (powers of 1024, an
 * optional trailing "B" or "iB"): 0 or LH_E_FORMAT (not logged). */
int lh_params_parse_bytes(const char *s, size_t *outp);

/* Returns 0, LH_E_NOTFOUND (unknown key, not logged), LH_E_FORMAT (bad value, logged with the
 * key and the accepted range). */
int lh_params_set(lh_ctx_params *cp, lh_sampler_params *sp, const char *key, const char *value);

/* Parses an unsigned decimal integer in [lo, hi]: 0 or LH_E_FORMAT (not logged). */
int lh_params_parse_size(const char *s, size_t lo, size_t hi, size_t *outp);

#endif
