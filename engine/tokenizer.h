/* engine/tokenizer — the vocabularies stored in GGUF files, as llama.cpp reads them:
 *
 *   tokenizer.ggml.model = "llama"  SentencePiece-style (.tokens, .scores, .token_type)
 *   tokenizer.ggml.model = "gpt2"   byte-level BPE (.tokens, .merges, .token_type, .pre)
 *
 * plus bos/eos/unk ids, add_bos_token / add_eos_token / add_space_prefix flags.  Any other model
 * is refused with its name (LH_E_UNSUPPORTED), and so is a BPE vocabulary whose pre-tokenizer
 * (tokenizer.ggml.pre) is not one of those listed in tokenizer.c.
 *
 * SentencePiece ("llama") encode: optional dummy-prefix space, spaces become U+2581, the text is
 * split into UTF-8 characters, each mapped to its piece (or to byte-fallback pieces <0xNN> when
 * absent), then the adjacent pair whose merged piece has the highest score is merged repeatedly
 * (leftmost on ties) until no merge exists.  Only NORMAL (type 1) pieces take part in merges and
 * lookups.
 * Invalid UTF-8 in the input: each byte that does not start a valid UTF-8 sequence is encoded as
 * its own byte-fallback token <0xNN>, so decode(encode(s)) == s for every byte string s (when the
 * vocabulary has all 256 byte tokens).
 *
 * Byte-level BPE ("gpt2") encode: the text is cut into words by the pre-tokenizer's regular
 * expressions (PCRE2, Unicode categories, applied one after the other, each splitting the pieces
 * the previous one left, as llama.cpp does); each word's bytes are spelled with the GPT-2
 * byte-to-unicode alphabet (one character per byte) and merged pairwise, lowest merge rank first
 * (leftmost on ties); each final symbol is its token.
 * Invalid UTF-8: a byte that does not start a valid sequence matches no regular expression, so
 * it ends the word before it and sits in a word of invalid bytes of its own, spelled with its
 * byte's character: decode(encode(s)) == s for every byte string s when the vocabulary has a
 * NORMAL token for each of the 256 byte characters (GPT-2, Llama 3, Qwen2 do; StarCoder, MPT,
 * Falcon lack some of the bytes that never occur in UTF-8, and those are dropped, as llama.cpp
 * drops them).  llama.cpp replaces an invalid byte by U+FFFD instead, which loses it; on valid
 * UTF-8 both give the same tokens.
 *
 * Special tokens: the text of a user-defined token (type 4) found in the text always becomes that
 * token, and with LH_TOK_SPECIAL so does that of every control and unknown token (longest tokens
 * first, as llama.cpp's tokenizer_st_partition and parse_special); without the flag, control
 * tokens never come from text.  After such a token a SentencePiece vocabulary puts the dummy
 * prefix again before the text that follows.
 *
 * Decode: SentencePiece pieces turn U+2581 into a space and <0xNN> into the raw byte; byte-level
 * pieces map each character back to its byte, so a token sequence decodes to the exact bytes it
 * was encoded from; user-defined tokens give their text; control tokens (BOS/EOS/...) give
 * nothing.  The leading space of the first piece after BOS is dropped when add_space_prefix is
 * on (lh_tok_decode with `strip_lead`).
 *
 * The lh_tok owns copies of everything it needs; it does not reference the GGUF after load.
 * Read-only after load: safe to share between threads (each encode call has its own scratch).
 */
#ifndef LH_TOKENIZER_H
#define LH_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include "gguf.h"

typedef struct lh_tok lh_tok;

/* lh_tok_encode flags.  LH_TOK_BOS is 1 so that callers passing a 0/1 add_bos keep working. */
enum {
    LH_TOK_BOS = 1,      /* prepend BOS (when the vocabulary has one) */
    LH_TOK_SPECIAL = 2,  /* match control/user-defined token texts in the input */
    LH_TOK_EOS = 4,      /* append EOS (when the vocabulary has one) */
};

/* Returns 0, LH_E_FORMAT (missing/inconsistent vocabulary or malformed merges, logged with the
 * file name and the offending entry), LH_E_UNSUPPORTED (a tokenizer model other than "llama" or
 * "gpt2", or an unknown pre-tokenizer, logged with its name), -ENOMEM. */
int lh_tok_load(lh_tok **tp, const lh_gguf *g);
void lh_tok_free(lh_tok *t);

size_t lh_tok_n_vocab(const lh_tok *t);
int32_t lh_tok_bos(const lh_tok *t);      /* -1 if none */
int32_t lh_tok_eos(const lh_tok *t);      /* -1 if none */
int lh_tok_add_bos(const lh_tok *t);      /* the vocabulary wants BOS prepended */
int lh_tok_add_eos(const lh_tok *t);      /* the vocabulary wants EOS appended */
/* The vocabulary adds a dummy-prefix space (SentencePiece): the first piece after BOS starts
 * with a space that is not part of the text. */
int lh_tok_add_space_prefix(const lh_tok *t);
/* "spm" or "bpe" */
const char *lh_tok_kind(const lh_tok *t);
/* End of generation, as llama.cpp decides it: EOS, tokenizer.ggml.eot_token_id /
 * eom_token_id, and the tokens spelled <|eot_id|>, <|im_end|>, <|end|>, <|endoftext|>,
 * <|eom_id|>, <end_of_turn>, <EOT>, <|end_of_text|> ... */
int lh_tok_is_eog(const lh_tok *t, int32_t id);

/* Encode len bytes of text.  flags: LH_TOK_* (a plain 0/1 means without/with BOS).  Output ids
 * into out[0..cap); *n_outp gets the number of tokens the full encoding needs even when it
 * exceeds cap (then LH_E_LIMIT is returned and out holds the first cap).  The encoding has at
 * most len + 3 tokens (BOS, dummy prefix, EOS), except on SentencePiece vocabularies whose
 * special tokens restart the dummy prefix: size from *n_outp and encode again on LH_E_LIMIT.
 * Returns 0, LH_E_LIMIT, -ENOMEM. */
int lh_tok_encode(const lh_tok *t, const char *text, size_t len, int flags, int32_t *out,
                  size_t cap, size_t *n_outp);

/* The bytes of one token as decode produces them (after U+2581 -> space, <0xNN> -> byte, or
 * the byte-level alphabet -> bytes); *lenp is its length.  Control tokens give "" .  An id out of
 * range gives NULL. */
const char *lh_tok_piece(const lh_tok *t, int32_t id, size_t *lenp);
/* The raw vocabulary string of a token (for display), NULL if out of range. */
const char *lh_tok_raw(const lh_tok *t, int32_t id);

/* Decode n ids to bytes in buf (cap bytes; always NUL-terminated when cap > 0); *lenp the byte
 * count the whole decoding needs.  strip_lead: drop one leading space of the first piece (the
 * dummy prefix, only when the vocabulary adds one).  Returns 0, LH_E_LIMIT (truncated),
 * LH_E_FORMAT (an id out of range). */
int lh_tok_decode(const lh_tok *t, const int32_t *ids, size_t n, int strip_lead, char *buf,
                  size_t cap, size_t *lenp);

#endif
