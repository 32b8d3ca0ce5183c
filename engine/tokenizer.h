/* engine/tokenizer — the SentencePiece-style `llama` vocabulary stored in GGUF
 * (tokenizer.ggml.model = "llama": .tokens, .scores, .token_type, bos/eos/unk ids,
 * add_bos_token / add_space_prefix flags).
 *
 * Encode: optional dummy-prefix space, spaces become U+2581, the text is split into UTF-8
 * characters, each mapped to its piece (or to byte-fallback pieces <0xNN> when absent), then the
 * adjacent pair whose merged piece has the highest score is merged repeatedly (leftmost on ties)
 * until no merge exists.  Only NORMAL (type 1) pieces take part in merges and lookups, so control
 * and user-defined tokens are never produced from plain text.
 * Invalid UTF-8 in the input: each byte that does not start a valid UTF-8 sequence is encoded as
 * its own byte-fallback token <0xNN>, so decode(encode(s)) == s for every byte string s (when the
 * vocabulary has all 256 byte tokens).
 * Decode: U+2581 becomes a space, <0xNN> becomes the raw byte, control tokens (BOS/EOS/UNK)
 * produce nothing; the leading space of the first piece after BOS is dropped when
 * add_space_prefix is on (lh_tok_decode with `strip_lead`).
 *
 * The lh_tok owns copies of everything it needs; it does not reference the GGUF after load.
 * Read-only after load: safe to share between threads.
 */
#ifndef LH_TOKENIZER_H
#define LH_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include "gguf.h"

typedef struct lh_tok lh_tok;

/* Returns 0, LH_E_FORMAT (missing/inconsistent vocabulary, logged with the file name),
 * LH_E_UNSUPPORTED (tokenizer model other than "llama"), -ENOMEM. */
int lh_tok_load(lh_tok **tp, const lh_gguf *g);
void lh_tok_free(lh_tok *t);

size_t lh_tok_n_vocab(const lh_tok *t);
int32_t lh_tok_bos(const lh_tok *t);
int32_t lh_tok_eos(const lh_tok *t);
int lh_tok_add_bos(const lh_tok *t);

/* Encode len bytes of text.  add_bos: prepend BOS.  Output ids into out[0..cap); *n_outp gets
 * the number of tokens the full encoding needs even when it exceeds cap (then LH_E_LIMIT is
 * returned and out holds the first cap).  Returns 0, LH_E_LIMIT, -ENOMEM. */
int lh_tok_encode(const lh_tok *t, const char *text, size_t len, int add_bos, int32_t *out,
                  size_t cap, size_t *n_outp);

/* The bytes of one token as decode produces them (after U+2581 -> space, <0xNN> -> byte);
 * *lenp is its length.  Control tokens give "" .  An id out of range gives NULL. */
const char *lh_tok_piece(const lh_tok *t, int32_t id, size_t *lenp);
/* The raw vocabulary string of a token (for display), NULL if out of range. */
const char *lh_tok_raw(const lh_tok *t, int32_t id);

/* Decode n ids to bytes in buf (cap bytes; always NUL-terminated when cap > 0); *lenp the byte
 * count the whole decoding needs.  strip_lead: drop one leading space of the first piece (the
 * dummy prefix).  Returns 0, LH_E_LIMIT (truncated), LH_E_FORMAT (an id out of range). */
int lh_tok_decode(const lh_tok *t, const int32_t *ids, size_t n, int strip_lead, char *buf,
                  size_t cap, size_t *lenp);

#endif
