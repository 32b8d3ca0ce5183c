/* engine/pcache — the persistent prompt cache: a context's state for a token prefix (the ids, the
 * KV cache, the LongHeads state; lh_ctx_state_save) in a file, so that a prompt resent after a
 * restart starts from the longest saved prefix instead of a new prefill.
 *
 * Files: one per saved prefix, in one directory, named
 *     <model hash>-<params hash>-<n tokens>-<prefix hash>.lhpc   (hex, hex, decimal, hex)
 * so that a lookup reads only names until a candidate's prefix hash equals the prompt's.  Each
 * file is a 128-byte header of 16 little-endian u64 (magic "LHPCACHE", version, model hash,
 * prefix hash, token count, attention mode, KV type, chunk, window, layers, heads, KV heads,
 * head_dim, payload bytes, payload checksum, header checksum) and the payload.  Nothing in a file
 * is trusted: a bad magic, version or header checksum, another model or other parameters than
 * the context's, a size other than the header says (truncated), a payload checksum that does not
 * match after loading, token ids that are not the prompt's: one log line, the context is left
 * empty (never half-loaded), and the file is removed when its name claims it is ours but its
 * content is not (a file of another model or version is only skipped).
 *
 * Model hash: 64-bit hash of the model file's size, its first MiB (the GGUF header: metadata,
 * vocabulary and tensor table, with every tensor's type, shape and data offset, for the models
 * here) and 64 samples of 4 KiB spread evenly over the rest.  A file that differs from another
 * only outside those bytes would collide; re-hashing gigabytes at every start was not worth it.
 *
 * Bounded disk use: after each save the directory's .lhpc files are summed and the least
 * recently used (file mtime; a load touches it) are removed until the total is within max_bytes;
 * a state larger than max_bytes is not saved.  Saves write a temporary name and rename it, so a
 * crash leaves no partial .lhpc (leftover temporaries are removed at open).  One daemon per
 * directory.  Not thread-safe: one owner (the scheduler's compute thread).
 */
#ifndef LH_PCACHE_H
#define LH_PCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

typedef struct lh_pcache lh_pcache;

/* Opens (creates) the cache directory for model m.  Returns 0, -errno (logged). */
int lh_pcache_open(lh_pcache **pp, const char *dir, const lh_model *m, size_t max_bytes);
void lh_pcache_close(lh_pcache *p);
uint64_t lh_pcache_model_hash(const lh_pcache *p);

/* Loads into c the longest saved prefix of tokens[0, n) made for c's parameters, if it is
 * longer than min_n tokens.  Returns the tokens loaded (0: none, c untouched — or, when a file
 * was found bad while loading, c left empty). */
size_t lh_pcache_load(lh_pcache *p, lh_ctx *c, const int32_t *tokens, size_t n, size_t min_n);

/* Saves the state of c's first n tokens (rounded down by lh_ctx_savable); when that prefix is
 * saved already, only marks it used.  Then evicts.  Returns 0, or -errno (logged; a full disk
 * is ENOSPC, a file size limit EFBIG: nothing is left behind). */
int lh_pcache_save(lh_pcache *p, lh_ctx *c, size_t n);

/* The bytes of .lhpc files in the directory now. */
size_t lh_pcache_disk_size(const lh_pcache *p);

#endif
