/* engine/tokenizer — see tokenizer.h.
 *
 * SentencePiece encoding works on spans of one escaped copy of the text (dummy prefix added,
 * ' ' replaced by U+2581).  The text is cut into symbols, one per UTF-8 character (or one per
 * invalid byte), kept in a doubly linked list.  Every adjacent pair whose concatenation is a
 * NORMAL piece goes into a max-heap keyed by (score, then leftmost position).  Popping the best
 * pair merges the right symbol into the left one and pushes the two new pairs it forms with its
 * neighbours; a popped pair whose symbols changed since it was pushed is stale and skipped
 * (symbols only ever grow, so comparing the pair's recorded length with the current lengths
 * detects it).  That is O(n log n) for n characters.  Because a merge only happens when the
 * merged span is a piece, a final symbol is either a piece or a single character/byte that is
 * not one; the latter is spelled with byte-fallback tokens.
 *
 * Byte-level BPE uses the same list-and-heap scheme per word, keyed by merge rank (lowest first,
 * then leftmost), over the word spelled in the byte alphabet.  Merge ranks live in a hash table
 * keyed by (left bytes + right bytes, length of the left part), so a lookup hashes the span once
 * and never builds a string.  Words come from the pre-tokenizer's regular expressions, applied
 * recursively: expression k splits each piece that expression k-1 produced into its matches and
 * the gaps between them, and the pieces of the last expression are the words (llama.cpp's
 * unicode_regex_split does the same with offsets).  The expressions are llama.cpp's (themselves
 * the pre_tokenizer regexes of each model's tokenizer.json), written for PCRE2 with one
 * deliberate change: \s is spelled as the explicit Unicode White_Space set, which is what
 * llama.cpp's own tables call whitespace (PCRE2's \s adds U+180E).  Where llama.cpp matches a
 * literal range with std::wregex after replacing non-ASCII whitespace by U+000B, the range is
 * written without the whitespace characters it contains, which gives the same words.
 *
 * The categories (\p{L}, \p{N}, \p{P}) are PCRE2's: Debian 12's 10.42 knows Unicode 14, while
 * llama.cpp's generated tables follow a later version, so characters assigned since may be cut
 * differently.  Llama 3's case-insensitive (?i:'s|...) is written '[sS]|... as llama.cpp does
 * (PCRE2's (?i) would also fold U+017F into 's').
 *
 * Special tokens are cut out before all that, one token at a time, longest first, each split
 * at every occurrence in the text still left (llama.cpp's tokenizer_st_partition); a pass over
 * the text first notes which bytes and byte pairs occur, so that tokens that cannot occur are
 * not searched for.
 *
 * Piece lookup is an open-addressing hash table built at load: the NORMAL pieces for
 * SentencePiece, every token for BPE (llama.cpp's text_to_token; the last of duplicates wins).
 * A span longer than the longest piece is never looked up.
 */
#include "tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* token_type values as llama.cpp/GGUF number them */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };
enum { KIND_SPM, KIND_BPE };
enum { STRIP_LEFT = 1, STRIP_RIGHT = 2 };

/* Longest vocabulary string accepted (bytes); real vocabularies stay far below it. */
#define TOK_MAX_PIECE 1024
#define MAX_RE 6

/* ---- pre-tokenizers ----------------------------------------------------------------------- */

/* Unicode White_Space (llama.cpp's unicode_set_whitespace), for use inside a class */
#define WS                                                                                  \
    "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}"      \
    "\\x{3000}"
#define S_ "[" WS "]"
#define NOT_S "[^" WS "]"

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S) */
#define RE_GPT2                                                                             \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|" S_ "+(?!" NOT_S ")"
/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 * \s*[\r\n]+|\s+(?!\S)|\s+  (NUM is {1,3} for Llama 3, a single digit for Qwen2) */
#define RE_LLAMA3_LIKE(NUM)                                                                      \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" \
    "\\p{N}" NUM "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|" S_ "*[\\r\\n]+|" S_ "+(?!" NOT_S ")|" S_ "+"
/* DeepSeek's literal ranges: letters of the cased scripts; ASCII/fullwidth/CJK punctuation;
 * CJK + Korean (without the whitespace characters inside U+0800..U+4E00, see above) */
#define RE_DS_LATIN                                                                               \
    S_ "?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}"           \
    "\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}"       \
    "\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}" \
    "\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}" \
    "\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-"     \
    "\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}"       \
    "\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}"       \
    "\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}"      \
    "\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}"      \
    "\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}"        \
    "\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}"      \
    "\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}"       \
    "\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-"      \
    "\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}"       \
    "\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}"           \
    "\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}"       \
    "\\x{1E900}-\\x{1E943}]+"
#define RE_DS_PUNCT                                                                         \
    S_ "?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3001}-\\x{3002}]+"
#define RE_DS_CJK                                                                               \
    "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{167F}\\x{1681}-\\x{1FFF}\\x{200B}-\\x{2027}\\x{202A}-"     \
    "\\x{202E}\\x{2030}-\\x{205E}\\x{2060}-\\x{2FFF}\\x{3001}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"

/* GPT-4o (o200k) and Tekken: a word is an optional non-letter, then letters as upper* lower+ or
 * upper+ lower*, where "upper" means any letter but a-z and "lower" any letter but A-Z
 * (llama.cpp's rewrite of the \p{Lu}..\p{Ll} classes, which it cannot express; marks are not
 * letters there) */
#define RE_CASED(CONTR)                                                                         \
    "[^\\r\\n\\p{L}\\p{N}]?(?:(?=\\p{L})[^a-z])*(?:(?=\\p{L})[^A-Z])+" CONTR                    \
    "|[^\\r\\n\\p{L}\\p{N}]?(?:(?=\\p{L})[^a-z])+(?:(?=\\p{L})[^A-Z])*" CONTR
#define CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
#define RE_CASED_REST(NUM)                                                                      \
    "|\\p{N}" NUM "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n/]*|" S_ "*[\\r\\n]+|" S_ "+(?!" NOT_S ")|" S_ "+"

typedef struct {
    const char *names;          /* the tokenizer.ggml.pre values, '|'-separated */
    int ignore_merges;          /* a word that is a token is that token (tiktoken-style) */
    int add_bos;                /* default of tokenizer.ggml.add_bos_token */
    const char *re[MAX_RE];
} pretok;

static const pretok PRETOKS[] = {
    {"llama3|llama-v3|llama-bpe|falcon3|falcon-h1|pixtral|midm-2.0|lfm2", 1, 1,
     {RE_LLAMA3_LIKE("{1,3}")}},
    {"dbrx|smaug-bpe", 0, 0, {RE_LLAMA3_LIKE("{1,3}")}},
    {"qwen2|deepseek-r1-qwen|stablelm2|megrez|hunyuan|grok-2", 0, 0, {RE_LLAMA3_LIKE("")}},
    {"gpt-2|phi-2|jina-es|jina-de|gigachat|jina-v2-es|jina-v2-de|a.x-4.0|mellum|mpt|olmo|jais|"
     "trillion|granite-docling|exaone4", 0, 0, {RE_GPT2}},
    {"starcoder|refact|command-r|smollm|codeshell|exaone|minerva-7b", 0, 0, {"\\p{N}", RE_GPT2}},
    {"deepseek-llm", 0, 0,
     {"[\\r\\n]", RE_DS_LATIN, RE_DS_PUNCT, S_ "+\\z", RE_DS_CJK, "\\p{N}+"}},
    {"deepseek-coder", 0, 0,
     {"[\\r\\n]", S_ "?\\p{L}+", S_ "?\\p{P}+", RE_DS_CJK, "\\p{N}"}},
    {"falcon", 0, 0, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"}},
    {"default", 0, 0, {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}},
    {"gpt-4o|llama4|minimax-m2", 0, 0, {RE_CASED(CONTRACTIONS) RE_CASED_REST("{1,3}")}},
    {"tekken", 1, 1, {RE_CASED("") RE_CASED_REST("")}},
};

static const pretok *find_pretok(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof PRETOKS / sizeof PRETOKS[0]; i++) {
        for (const char *p = PRETOKS[i].names; *p;) {
            const char *e = strchr(p, '|');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            if (n == len && memcmp(p, name, len) == 0)
                return &PRETOKS[i];
            p += n + (e != NULL);
        }
    }
    return NULL;
}

/* Texts that end generation (llama.cpp's list); such tokens are treated as control tokens. */
static const char *const EOG_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>",
    "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
};

typedef struct {
    uint32_t off;         /* left + right bytes in merge_blob */
    uint32_t left_len;
    uint32_t len;
} merge;

struct lh_tok {
    int kind;             /* KIND_SPM, KIND_BPE */
    size_t n_vocab;
    char *blob;           /* every raw piece, then every decoded piece, NUL-terminated */
    size_t *raw_off;      /* (n_vocab) raw piece offset in blob */
    size_t *raw_len;      /* (n_vocab) */
    size_t *dec_off;      /* (n_vocab) decoded piece offset in blob */
    size_t *dec_len;      /* (n_vocab) */
    float *scores;        /* (n_vocab) */
    uint8_t *types;       /* (n_vocab) token_type, clamped to 0..255 */
    int32_t byte_id[256]; /* <0xNN> token of each byte, -1 if absent (SentencePiece) */
    int32_t *hash;        /* (hash_cap) piece ids, -1 = empty */
    size_t hash_cap;
    size_t max_piece;     /* longest piece in the hash, bytes */
    int32_t bos, eos, unk;
    int add_bos, add_eos, add_space;
    int32_t *special;     /* (n_special) control/unknown/user-defined ids, longest text first */
    uint8_t *strip;       /* (n_vocab) STRIP_*: whitespace a matched special token swallows */
    size_t n_special;
    int32_t *eog;         /* (n_eog) sorted */
    size_t n_eog;

    /* byte-level BPE */
    const pretok *pre;
    pcre2_code *re[MAX_RE];
    size_t n_re;
    merge *merges;        /* (n_merges) by rank */
    size_t n_merges;
    char *merge_blob;
    int32_t *mhash;       /* (mhash_cap) merge ranks, -1 = empty */
    size_t mhash_cap;
    char byte_chr[256][2];     /* the alphabet: UTF-8 of the character standing for each byte */
    uint8_t byte_chr_len[256];
    int16_t chr_byte[0x144];   /* the byte each alphabet code point stands for, -1 if none */
};

static uint64_t hash_bytes(const void *s, size_t len)
{
    const uint8_t *p = s;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* The piece spelled (s, len) (NORMAL pieces for SentencePiece, any token for BPE), or -1. */
static int32_t lookup(const lh_tok *t, const char *s, size_t len)
{
    if (len == 0 || len > t->max_piece)
        return -1;
    for (size_t h = hash_bytes(s, len) & (t->hash_cap - 1);; h = (h + 1) & (t->hash_cap - 1)) {
        int32_t id = t->hash[h];
        if (id < 0)
            return -1;
        if (t->raw_len[id] == len && memcmp(t->blob + t->raw_off[id], s, len) == 0)
            return id;
    }
}

static uint64_t merge_hash(const char *s, size_t left_len, size_t len)
{
    return hash_bytes(s, len) ^ ((uint64_t)left_len * 0x9e3779b97f4a7c15ull);
}

/* The rank of merging the spans (s, left_len) and (s + left_len, len - left_len), or -1. */
static int32_t merge_rank(const lh_tok *t, const char *s, size_t left_len, size_t len)
{
    size_t mask = t->mhash_cap - 1;
    for (size_t h = merge_hash(s, left_len, len) & mask;; h = (h + 1) & mask) {
        int32_t r = t->mhash[h];
        if (r < 0)
            return -1;
        const merge *m = &t->merges[r];
        if (m->len == len && m->left_len == left_len && memcmp(t->merge_blob + m->off, s, len) == 0)
            return r;
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The byte a "<0xNN>" piece stands for, or -1. */
static int byte_piece(const char *s, size_t len)
{
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    int hi = hexval(s[3]), lo = hexval(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 when the byte at s does not
 * start one (stray continuation byte, overlong form, surrogate, beyond U+10FFFF, truncated).
 * *cpp gets the code point. */
static size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cpp)
{
    uint8_t c = s[0];
    size_t len;
    uint32_t min, cp;
    if (c < 0x80) {
        *cpp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, min = 0x80, cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, min = 0x800, cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, min = 0x10000, cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    *cpp = cp;
    return len;
}

static size_t utf8_len(const uint8_t *s, size_t n)
{
    uint32_t cp;
    return utf8_next(s, n, &cp);
}

static int get_id(const lh_gguf *g, const char *key, size_t n_vocab, int32_t def, int32_t *idp,
                  const char *name)
{
    uint32_t v;
    int rc = lh_gguf_get_u32(g, key, &v);
    if (rc == LH_E_NOTFOUND) {
        *idp = def >= 0 && (size_t)def < n_vocab ? def : -1;
        return 0;
    }
    if (rc || v >= n_vocab) {
        lh_log_error("%s: %s is not a token id below %zu", name, key, n_vocab);
        return LH_E_FORMAT;
    }
    *idp = (int32_t)v;
    return 0;
}

static int get_flag(const lh_gguf *g, const char *key, int def, int *outp, const char *name)
{
    int rc = lh_gguf_get_bool(g, key, outp);
    if (rc == LH_E_NOTFOUND) {
        *outp = def;
        return 0;
    }
    if (rc)
        lh_log_error("%s: %s is not a bool", name, key);
    return rc;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c *= 2;
    return c;
}

/* GPT-2's byte alphabet: printable Latin-1 bytes stand for themselves, the others (controls,
 * space, 0x7f-0xa0, 0xad) for U+0100 onwards in byte order. */
static void init_alphabet(lh_tok *t)
{
    int n = 0;
    memset(t->chr_byte, 0xff, sizeof t->chr_byte);
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
        int cp = printable ? b : 256 + n++;
        if (cp < 0x80) {
            t->byte_chr[b][0] = (char)cp;
            t->byte_chr_len[b] = 1;
        } else {
            t->byte_chr[b][0] = (char)(0xc0 | cp >> 6);
            t->byte_chr[b][1] = (char)(0x80 | (cp & 0x3f));
            t->byte_chr_len[b] = 2;
        }
        t->chr_byte[cp] = (int16_t)b;
    }
}

/* tokenizer.ggml.merges: "left right", rank = index; the first of duplicates wins. */
static int load_merges(lh_tok *t, const lh_gguf *g, const char *name)
{
    static const char K_MERGES[] = "tokenizer.ggml.merges";
    lh_gguf_vtype et;
    size_t n, total = 0;
    const char *s;
    size_t len;
    if (lh_gguf_get_arr(g, K_MERGES, &et, &n) || et != LH_GGUF_STRING || n > INT32_MAX) {
        lh_log_error("%s: %s is missing or not an array of strings (a gpt2 vocabulary needs its "
                     "merges)", name, K_MERGES);
        return LH_E_FORMAT;
    }
    for (size_t i = 0; i < n; i++) {
        lh_gguf_arr_str(g, K_MERGES, i, &s, &len);
        const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        if (!sp || sp == s + len - 1 || len > 2 * TOK_MAX_PIECE + 1) {
            lh_log_error("%s: %s[%zu] = '%.*s' is not two tokens separated by a space", name,
                         K_MERGES, i, (int)(len > 64 ? 64 : len), s);
            return LH_E_FORMAT;
        }
        total += len - 1;
    }
    if (total > UINT32_MAX) {
        lh_log_error("%s: %s holds more than 4 GiB", name, K_MERGES);
        return LH_E_FORMAT;
    }
    t->merges = malloc((n ? n : 1) * sizeof *t->merges);
    t->merge_blob = malloc(total ? total : 1);
    t->mhash_cap = pow2_at_least(2 * n);
    t->mhash = malloc(t->mhash_cap * sizeof *t->mhash);
    if (!t->merges || !t->merge_blob || !t->mhash)
        return -ENOMEM;
    memset(t->mhash, 0xff, t->mhash_cap * sizeof *t->mhash);
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        lh_gguf_arr_str(g, K_MERGES, i, &s, &len);
        size_t left = (size_t)((const char *)memchr(s + 1, ' ', len - 1) - s);
        merge *m = &t->merges[i];
        m->off = (uint32_t)pos;
        m->left_len = (uint32_t)left;
        m->len = (uint32_t)(len - 1);
        memcpy(t->merge_blob + pos, s, left);
        memcpy(t->merge_blob + pos + left, s + left + 1, len - left - 1);
        const char *k = t->merge_blob + pos;
        pos += len - 1;
        size_t mask = t->mhash_cap - 1, h = merge_hash(k, left, m->len) & mask;
        int dup = 0;
        for (; t->mhash[h] >= 0 && !dup; h = (h + 1) & mask) {
            const merge *o = &t->merges[t->mhash[h]];
            dup = o->len == m->len && o->left_len == m->left_len &&
                  memcmp(t->merge_blob + o->off, k, m->len) == 0;
        }
        if (!dup)
            t->mhash[h] = (int32_t)i;
    }
    t->n_merges = n;
    return 0;
}

static int compile_pretok(lh_tok *t, const char *name)
{
    for (size_t i = 0; i < MAX_RE && t->pre->re[i]; i++) {
        int err;
        PCRE2_SIZE off;
        t->re[i] = pcre2_compile((PCRE2_SPTR)t->pre->re[i], PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &err, &off, NULL);
        if (!t->re[i]) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof msg);
            lh_log_error("%s: pre-tokenizer expression %zu does not compile with this PCRE2 "
                         "(offset %zu): %s", name, i, (size_t)off, (const char *)msg);
            return LH_E_UNSUPPORTED;
        }
        /* without JIT the interpreter gives the same matches, only slower */
        pcre2_jit_compile(t->re[i], PCRE2_JIT_COMPLETE);
        t->n_re = i + 1;
    }
    return 0;
}

static int cmp_special(const void *a, const void *b, void *ctx)
{
    const lh_tok *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->raw_len[x] != t->raw_len[y])
        return t->raw_len[x] > t->raw_len[y] ? -1 : 1;
    return (x > y) - (x < y);
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The end-of-generation set, and the special-token list for LH_TOK_SPECIAL / user-defined
 * tokens (control, unknown and user-defined, longest text first). */
static int build_sets(lh_tok *t, const lh_gguf *g, const char *name)
{
    int32_t eot = -1, eom = -1;
    int rc;
    if ((rc = get_id(g, "tokenizer.ggml.eot_token_id", t->n_vocab, -1, &eot, name)) ||
        (rc = get_id(g, "tokenizer.ggml.eom_token_id", t->n_vocab, -1, &eom, name)))
        return rc;
    size_t n_eog = 0, n_special = 0;
    t->eog = malloc((sizeof EOG_TEXTS / sizeof EOG_TEXTS[0] + 3) * sizeof *t->eog);
    if (!t->eog)
        return -ENOMEM;
    for (size_t k = 0; k < sizeof EOG_TEXTS / sizeof EOG_TEXTS[0]; k++) {
        int32_t id = -1;
        size_t kl = strlen(EOG_TEXTS[k]);
        /* the last token spelled so, as llama.cpp's text-to-id map keeps it */
        for (size_t i = 0; i < t->n_vocab; i++)
            if (t->raw_len[i] == kl && memcmp(t->blob + t->raw_off[i], EOG_TEXTS[k], kl) == 0)
                id = (int32_t)i;
        if (id >= 0)
            t->eog[n_eog++] = id;
    }
    int32_t extra[3] = {t->eos, eot, eom};
    for (size_t k = 0; k < 3; k++)
        if (extra[k] >= 0)
            t->eog[n_eog++] = extra[k];
    qsort(t->eog, n_eog, sizeof *t->eog, cmp_i32);
    size_t w = 0;
    for (size_t i = 0; i < n_eog; i++)
        if (w == 0 || t->eog[w - 1] != t->eog[i])
            t->eog[w++] = t->eog[i];
    t->n_eog = w;
    /* llama.cpp treats those spelled like end-of-generation (and eot/eom) as control tokens */
    for (size_t i = 0; i < t->n_eog; i++) {
        int32_t id = t->eog[i];
        if (id != t->eos && t->types[id] != TT_CONTROL) {
            t->types[id] = TT_CONTROL;
            t->dec_len[id] = 0;
            t->blob[t->dec_off[id]] = '\0';
        }
    }

    for (size_t i = 0; i < t->n_vocab; i++)
        n_special += (t->types[i] == TT_CONTROL || t->types[i] == TT_USER ||
                      t->types[i] == TT_UNKNOWN) && t->raw_len[i] > 0;
    t->special = malloc((n_special ? n_special : 1) * sizeof *t->special);
    if (!t->special)
        return -ENOMEM;
    for (size_t i = 0; i < t->n_vocab; i++)
        if ((t->types[i] == TT_CONTROL || t->types[i] == TT_USER || t->types[i] == TT_UNKNOWN) &&
            t->raw_len[i] > 0)
            t->special[t->n_special++] = (int32_t)i;
    qsort_r(t->special, t->n_special, sizeof *t->special, cmp_special, t);

    /* llama.cpp's per-model attribute: Phi-3's special tokens swallow the whitespace after them
     * (except <unk>, <s>, <|endoftext|>), chosen by general.name */
    if (!(t->strip = calloc(t->n_vocab, 1)))
        return -ENOMEM;
    const char *s;
    size_t len;
    char lower[256];
    if (lh_gguf_get_str(g, "general.name", &s, &len) == 0 && len < sizeof lower) {
        for (size_t i = 0; i < len; i++)
            lower[i] = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] - 'A' + 'a') : s[i];
        lower[len] = '\0';
        if (strstr(lower, "phi-3") || strstr(lower, "phi3")) {
            static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
            for (size_t i = 0; i < t->n_special; i++) {
                int32_t id = t->special[i];
                const char *raw = t->blob + t->raw_off[id];
                int kept = 0;
                for (size_t k = 0; k < 3; k++)
                    kept |= strcmp(raw, keep[k]) == 0;
                t->strip[id] = kept ? 0 : STRIP_RIGHT;
            }
        }
    }
    return 0;
}

int lh_tok_load(lh_tok **tp, const lh_gguf *g)
{
    static const char K_TOKENS[] = "tokenizer.ggml.tokens";
    static const char K_SCORES[] = "tokenizer.ggml.scores";
    static const char K_TYPES[] = "tokenizer.ggml.token_type";
    const char *name = lh_gguf_name(g);
    lh_tok *t = NULL;
    const char *s;
    size_t len, n = 0, n_other;
    lh_gguf_vtype et;
    int rc, kind;
    const pretok *pre = NULL;
    *tp = NULL;

    rc = lh_gguf_get_str(g, "tokenizer.ggml.model", &s, &len);
    if (rc) {
        lh_log_error("%s: tokenizer.ggml.model is %s", name, rc == LH_E_NOTFOUND ? "missing" : "not a string");
        return LH_E_FORMAT;
    }
    if (len == 5 && memcmp(s, "llama", 5) == 0) {
        kind = KIND_SPM;
    } else if (len == 4 && memcmp(s, "gpt2", 4) == 0) {
        kind = KIND_BPE;
    } else {
        lh_log_error("%s: tokenizer model '%.*s' is not supported (only 'llama' and 'gpt2')",
                     name, (int)(len > 64 ? 64 : len), s);
        return LH_E_UNSUPPORTED;
    }
    if (kind == KIND_BPE) {
        rc = lh_gguf_get_str(g, "tokenizer.ggml.pre", &s, &len);
        if (rc == LH_E_NOTFOUND) {
            lh_log_warn("%s: tokenizer.ggml.pre is missing: using the 'default' pre-tokenizer, as "
                        "llama.cpp does (words may be cut differently from the model's training)",
                        name);
            s = "default", len = 7;
        } else if (rc) {
            lh_log_error("%s: tokenizer.ggml.pre is not a string", name);
            return LH_E_FORMAT;
        }
        if (!(pre = find_pretok(s, len))) {
            lh_log_error("%s: pre-tokenizer '%.*s' (tokenizer.ggml.pre) is not supported; known: "
                         "llama-bpe, qwen2, gpt-2, default, deepseek-llm, deepseek-coder, smollm, "
                         "starcoder, falcon, gpt-4o, tekken and their aliases", name,
                         (int)(len > 64 ? 64 : len), s);
            return LH_E_UNSUPPORTED;
        }
    }
    if (lh_gguf_get_arr(g, K_TOKENS, &et, &n) || et != LH_GGUF_STRING || n == 0 || n > INT32_MAX) {
        lh_log_error("%s: %s is missing, empty, too long or not an array of strings", name, K_TOKENS);
        return LH_E_FORMAT;
    }
    int have_scores = 0, have_types = 0;
    rc = lh_gguf_get_arr(g, K_SCORES, &et, &n_other);
    if (rc != LH_E_NOTFOUND) {
        if (rc || n_other != n || (et != LH_GGUF_FLOAT32 && et != LH_GGUF_FLOAT64)) {
            lh_log_error("%s: %s must be %zu floats", name, K_SCORES, n);
            return LH_E_FORMAT;
        }
        have_scores = 1;
    }
    rc = lh_gguf_get_arr(g, K_TYPES, &et, &n_other);
    if (rc != LH_E_NOTFOUND) {
        if (rc || n_other != n) {
            lh_log_error("%s: %s must be %zu integers", name, K_TYPES, n);
            return LH_E_FORMAT;
        }
        have_types = 1;
    }

    t = calloc(1, sizeof *t);
    if (!t)
        goto oom;
    t->kind = kind;
    t->pre = pre;
    t->n_vocab = n;
    t->raw_off = malloc(n * sizeof *t->raw_off);
    t->raw_len = malloc(n * sizeof *t->raw_len);
    t->dec_off = malloc(n * sizeof *t->dec_off);
    t->dec_len = malloc(n * sizeof *t->dec_len);
    t->scores = malloc(n * sizeof *t->scores);
    t->types = malloc(n);
    t->hash_cap = pow2_at_least(2 * n);
    t->hash = malloc(t->hash_cap * sizeof *t->hash);
    if (!t->raw_off || !t->raw_len || !t->dec_off || !t->dec_len || !t->scores || !t->types || !t->hash)
        goto oom;
    memset(t->hash, 0xff, t->hash_cap * sizeof *t->hash);
    memset(t->byte_id, 0xff, sizeof t->byte_id);
    init_alphabet(t);

    /* First pass: validate and size the blob (raw + decoded; decoded is never longer). */
    size_t blob_size = 0;
    for (size_t i = 0; i < n; i++) {
        if (lh_gguf_arr_str(g, K_TOKENS, i, &s, &len) || len > TOK_MAX_PIECE) {
            lh_log_error("%s: token %zu is longer than %d bytes", name, i, TOK_MAX_PIECE);
            rc = LH_E_FORMAT;
            goto fail;
        }
        int32_t type = TT_NORMAL;
        if (have_types && lh_gguf_arr_i32(g, K_TYPES, i, &type)) {
            lh_log_error("%s: %s[%zu] is not a 32-bit integer", name, K_TYPES, i);
            rc = LH_E_FORMAT;
            goto fail;
        }
        float score = 0;
        if (have_scores)
            lh_gguf_arr_f32(g, K_SCORES, i, &score);
        if (score != score) {
            lh_log_error("%s: %s[%zu] is NaN", name, K_SCORES, i);
            rc = LH_E_FORMAT;
            goto fail;
        }
        t->types[i] = type < 0 || type > 255 ? 0 : (uint8_t)type;
        t->scores[i] = score;
        blob_size += 2 * (len + 1);
    }
    t->blob = malloc(blob_size);
    if (!t->blob)
        goto oom;

    /* Second pass: copy raw pieces, build the decoded forms and the lookup tables. */
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        lh_gguf_arr_str(g, K_TOKENS, i, &s, &len);
        t->raw_off[i] = pos;
        t->raw_len[i] = len;
        memcpy(t->blob + pos, s, len);
        t->blob[pos + len] = '\0';
        pos += len + 1;

        char *d = t->blob + pos;
        size_t dn = 0;
        int type = t->types[i];
        if (kind == KIND_BPE) {
            if (type == TT_NORMAL) {
                /* each alphabet character back to its byte; anything else is kept as it is */
                for (size_t j = 0; j < len;) {
                    uint32_t cp;
                    size_t cl = utf8_next((const uint8_t *)s + j, len - j, &cp);
                    if (cl && cp < 0x144 && t->chr_byte[cp] >= 0) {
                        d[dn++] = (char)t->chr_byte[cp];
                    } else {
                        cl = cl ? cl : 1;
                        memcpy(d + dn, s + j, cl);
                        dn += cl;
                    }
                    j += cl;
                }
            } else if (type == TT_USER) {
                memcpy(d, s, len);
                dn = len;
            } /* control, unknown, byte, unused, undefined: nothing (llama.cpp) */
        } else {
            int byte = byte_piece(s, len);
            if (type == TT_BYTE || (!have_types && byte >= 0)) {
                if (byte < 0) {
                    lh_log_error("%s: byte token %zu is not of the form <0xNN>", name, i);
                    rc = LH_E_FORMAT;
                    goto fail;
                }
                d[dn++] = (char)byte;
                if (t->byte_id[byte] < 0)
                    t->byte_id[byte] = (int32_t)i;
            } else if (type == TT_NORMAL || type == TT_USER || type == 0) {
                for (size_t j = 0; j < len; j++) {
                    if (j + 3 <= len && memcmp(s + j, "\xe2\x96\x81", 3) == 0) {
                        d[dn++] = ' ';
                        j += 2;
                    } else {
                        d[dn++] = s[j];
                    }
                }
            } /* control, unknown, unused: nothing */
        }
        d[dn] = '\0';
        t->dec_off[i] = pos;
        t->dec_len[i] = dn;
        pos += len + 1;

        if ((kind == KIND_BPE || type == TT_NORMAL) && len > 0) {
            /* the last of duplicate pieces wins, as in llama.cpp */
            size_t h = hash_bytes(s, len) & (t->hash_cap - 1);
            for (; t->hash[h] >= 0; h = (h + 1) & (t->hash_cap - 1)) {
                int32_t o = t->hash[h];
                if (t->raw_len[o] == len && memcmp(t->blob + t->raw_off[o], s, len) == 0)
                    break;
            }
            t->hash[h] = (int32_t)i;
            if (len > t->max_piece)
                t->max_piece = len;
        }
    }

    if (kind == KIND_BPE) {
        if ((rc = load_merges(t, g, name)) || (rc = compile_pretok(t, name)))
            goto fail_rc;
    }
    /* defaults as llama.cpp's: SentencePiece 1/2/0 and BOS added; BPE 11/11/none and BOS added
     * only for the Llama 3 family */
    int spm = kind == KIND_SPM;
    if ((rc = get_id(g, "tokenizer.ggml.bos_token_id", n, spm ? 1 : 11, &t->bos, name)) ||
        (rc = get_id(g, "tokenizer.ggml.eos_token_id", n, spm ? 2 : 11, &t->eos, name)) ||
        (rc = get_id(g, "tokenizer.ggml.unknown_token_id", n, spm ? 0 : -1, &t->unk, name)) ||
        (rc = get_flag(g, "tokenizer.ggml.add_bos_token", spm ? 1 : pre->add_bos, &t->add_bos,
                       name)) ||
        (rc = get_flag(g, "tokenizer.ggml.add_eos_token", 0, &t->add_eos, name)) ||
        (rc = get_flag(g, "tokenizer.ggml.add_space_prefix", spm, &t->add_space, name)) ||
        (rc = build_sets(t, g, name)))
        goto fail_rc;
    *tp = t;
    return 0;
oom:
    rc = -ENOMEM;
fail_rc:
    if (rc == -ENOMEM)
        lh_log_error("%s: out of memory loading a vocabulary of %zu tokens", name, n);
fail:
    lh_tok_free(t);
    return rc;
}

void lh_tok_free(lh_tok *t)
{
    if (!t)
        return;
    free(t->blob);
    free(t->raw_off);
    free(t->raw_len);
    free(t->dec_off);
    free(t->dec_len);
    free(t->scores);
    free(t->types);
    free(t->hash);
    free(t->special);
    free(t->strip);
    free(t->eog);
    for (size_t i = 0; i < t->n_re; i++)
        pcre2_code_free(t->re[i]);
    free(t->merges);
    free(t->merge_blob);
    free(t->mhash);
    free(t);
}

size_t lh_tok_n_vocab(const lh_tok *t) { return t->n_vocab; }
int32_t lh_tok_bos(const lh_tok *t) { return t->bos; }
int32_t lh_tok_eos(const lh_tok *t) { return t->eos; }
int lh_tok_add_bos(const lh_tok *t) { return t->add_bos; }
int lh_tok_add_eos(const lh_tok *t) { return t->add_eos; }
int lh_tok_add_space_prefix(const lh_tok *t) { return t->add_space; }
const char *lh_tok_kind(const lh_tok *t) { return t->kind == KIND_BPE ? "bpe" : "spm"; }

int lh_tok_is_eog(const lh_tok *t, int32_t id)
{
    return id >= 0 && bsearch(&id, t->eog, t->n_eog, sizeof *t->eog, cmp_i32) != NULL;
}

/* ---- encode ----------------------------------------------------------------------------------- */

typedef struct {
    int32_t *out;
    size_t cap, n;        /* n counts every token, also those beyond cap */
} sink;

static void emit(sink *o, int32_t id)
{
    if (o->n < o->cap)
        o->out[o->n] = id;
    o->n++;
}

typedef struct {
    int32_t prev, next;   /* neighbours in the list, -1 at the ends */
    uint32_t len;         /* bytes of the span; 0 once merged away */
    int32_t id;           /* SentencePiece: the piece the span spells, -1 if none */
    size_t start;         /* offset in the escaped/spelled text */
} symbol;

typedef struct {
    int32_t left, right;
    float score;          /* SentencePiece: higher first */
    int32_t rank;         /* BPE: lower first */
    uint32_t len;         /* left.len + right.len when pushed */
} bigram;

/* a is better than b: SentencePiece higher score / BPE lower rank, then further left */
static int better(const bigram *a, const bigram *b, int bpe)
{
    if (bpe)
        return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct {
    bigram *v;
    size_t n, cap;
    int bpe;
} heap;

static int heap_push(heap *h, bigram b)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        bigram *q = realloc(h->v, cap * sizeof *q);
        if (!q)
            return -ENOMEM;
        h->v = q;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!better(&b, &h->v[p], h->bpe))
            break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = b;
    return 0;
}

static bigram heap_pop(heap *h)
{
    bigram top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && better(&h->v[c + 1], &h->v[c], h->bpe))
            c++;
        if (!better(&h->v[c], &last, h->bpe))
            break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n > 0)
        h->v[i] = last;
    return top;
}

/* ---- SentencePiece ---- */

static int try_pair(const lh_tok *t, const char *text, const symbol *sym, int32_t l, int32_t r,
                    heap *h)
{
    if (l < 0 || r < 0 || sym[l].len == 0 || sym[r].len == 0)
        return 0;
    size_t len = (size_t)sym[l].len + sym[r].len;
    int32_t id = lookup(t, text + sym[l].start, len);
    if (id < 0)
        return 0;
    bigram b = {.left = l, .right = r, .score = t->scores[id], .len = (uint32_t)len};
    return heap_push(h, b);
}

/* One stretch of text (no special tokens in it), with the dummy prefix when add_prefix. */
static int spm_encode(const lh_tok *t, const char *text, size_t len, int add_prefix, sink *o)
{
    char *esc = NULL;
    symbol *sym = NULL;
    heap h = {0};
    int rc = 0;
    esc = malloc(3 * len + 3);
    sym = malloc((len + 1) * sizeof *sym);
    if (!esc || !sym) {
        rc = -ENOMEM;
        goto fail;
    }
    size_t n_esc = 0;
    if (len == 0 && !add_prefix)
        goto fail;
    if (add_prefix) {
        memcpy(esc, "\xe2\x96\x81", 3);
        n_esc = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(esc + n_esc, "\xe2\x96\x81", 3);
            n_esc += 3;
        } else {
            esc[n_esc++] = text[i];
        }
    }

    /* one symbol per character; an invalid byte is its own symbol that never merges */
    int32_t n_sym = 0;
    for (size_t i = 0; i < n_esc;) {
        size_t cl = utf8_len((const uint8_t *)esc + i, n_esc - i);
        symbol *y = &sym[n_sym];
        y->prev = n_sym - 1;
        y->next = n_sym + 1;
        y->start = i;
        if (cl == 0) {
            y->len = 1;
            y->id = -2; /* invalid: byte fallback, no merges */
            i += 1;
        } else {
            y->len = (uint32_t)cl;
            y->id = lookup(t, esc + i, cl);
            i += cl;
        }
        n_sym++;
    }
    sym[n_sym - 1].next = -1;

    for (int32_t i = 0; i + 1 < n_sym; i++) {
        if (sym[i].id == -2 || sym[i + 1].id == -2)
            continue;
        if ((rc = try_pair(t, esc, sym, i, i + 1, &h)))
            goto fail;
    }
    while (h.n > 0) {
        bigram b = heap_pop(&h);
        symbol *l = &sym[b.left], *r = &sym[b.right];
        if (l->len == 0 || r->len == 0 || (size_t)l->len + r->len != b.len)
            continue; /* stale */
        l->len += r->len;
        l->id = lookup(t, esc + l->start, l->len);
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0)
            sym[r->next].prev = b.left;
        if ((l->prev >= 0 && sym[l->prev].id != -2 &&
             (rc = try_pair(t, esc, sym, l->prev, b.left, &h))) ||
            (l->next >= 0 && sym[l->next].id != -2 &&
             (rc = try_pair(t, esc, sym, b.left, l->next, &h))))
            goto fail;
    }

    for (int32_t i = 0; i >= 0; i = sym[i].next) {
        if (sym[i].id >= 0) {
            emit(o, sym[i].id);
            continue;
        }
        for (uint32_t j = 0; j < sym[i].len; j++) {
            int32_t b = t->byte_id[(uint8_t)esc[sym[i].start + j]];
            emit(o, b >= 0 ? b : t->unk);
        }
    }
fail:
    free(esc);
    free(sym);
    free(h.v);
    return rc;
}

/* ---- byte-level BPE ---- */

typedef struct {
    const lh_tok *t;
    sink *o;
    pcre2_match_data *md;
    pcre2_match_context *mc;   /* made with a larger JIT stack only if a match needs one */
    pcre2_jit_stack *js;
    char *enc;                 /* (enc_cap) the word in the byte alphabet */
    size_t enc_cap;
    symbol *sym;               /* (sym_cap) */
    size_t sym_cap;
    heap h;
} bpe_work;

static int bpe_try(bpe_work *w, int32_t l, int32_t r)
{
    const symbol *sym = w->sym;
    if (l < 0 || r < 0)
        return 0;
    size_t len = (size_t)sym[l].len + sym[r].len;
    int32_t rank = merge_rank(w->t, w->enc + sym[l].start, sym[l].len, len);
    if (rank < 0)
        return 0;
    bigram b = {.left = l, .right = r, .rank = rank, .len = (uint32_t)len};
    return heap_push(&w->h, b);
}

/* One word: spell it in the byte alphabet, merge by rank, emit its tokens. */
static int bpe_word(bpe_work *w, const char *s, size_t len)
{
    const lh_tok *t = w->t;
    if (2 * len > w->enc_cap) {
        char *e = realloc(w->enc, 2 * len);
        if (!e)
            return -ENOMEM;
        w->enc = e;
        w->enc_cap = 2 * len;
    }
    if (len > w->sym_cap) {
        symbol *y = realloc(w->sym, len * sizeof *y);
        if (!y)
            return -ENOMEM;
        w->sym = y;
        w->sym_cap = len;
    }
    symbol *sym = w->sym;
    size_t n_enc = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t b = (uint8_t)s[i];
        sym[i].prev = (int32_t)i - 1;
        sym[i].next = i + 1 < len ? (int32_t)i + 1 : -1;
        sym[i].start = n_enc;
        sym[i].len = t->byte_chr_len[b];
        memcpy(w->enc + n_enc, t->byte_chr[b], t->byte_chr_len[b]);
        n_enc += t->byte_chr_len[b];
    }
    if (t->pre->ignore_merges) {
        int32_t id = lookup(t, w->enc, n_enc);
        if (id >= 0) {
            emit(w->o, id);
            return 0;
        }
    }
    int rc;
    w->h.n = 0;
    for (size_t i = 0; i + 1 < len; i++)
        if ((rc = bpe_try(w, (int32_t)i, (int32_t)i + 1)))
            return rc;
    while (w->h.n > 0) {
        bigram b = heap_pop(&w->h);
        symbol *l = &sym[b.left], *r = &sym[b.right];
        if (l->len == 0 || r->len == 0 || (size_t)l->len + r->len != b.len)
            continue; /* stale: one side changed since the pair was pushed */
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0)
            sym[r->next].prev = b.left;
        if ((rc = bpe_try(w, l->prev, b.left)) || (rc = bpe_try(w, b.left, l->next)))
            return rc;
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) {
        const char *p = w->enc + sym[i].start;
        int32_t id = lookup(t, p, sym[i].len);
        if (id >= 0) {
            emit(w->o, id);
            continue;
        }
        /* a merge whose result is no token: its characters one by one (llama.cpp drops
         * those that are not tokens either) */
        for (size_t j = 0; j < sym[i].len;) {
            size_t cl = (uint8_t)p[j] < 0x80 ? 1 : 2;
            int32_t c = lookup(t, p + j, cl);
            if (c >= 0)
                emit(w->o, c);
            j += cl;
        }
    }
    return 0;
}

/* Words of s by expressions level.. : the matches of expression `level` and the gaps between
 * them, each cut further by the next expression; the last level's pieces are words. */
static int bpe_split(bpe_work *w, size_t level, const char *s, size_t len)
{
    const lh_tok *t = w->t;
    if (len == 0)
        return 0;
    if (level == t->n_re)
        return bpe_word(w, s, len);
    size_t pos = 0, search = 0;
    int rc;
    while (search < len) {
        int m = pcre2_match(t->re[level], (PCRE2_SPTR)s, len, search, 0, w->md, w->mc);
        if (m == PCRE2_ERROR_NOMATCH)
            break;
        if (m == PCRE2_ERROR_JIT_STACKLIMIT && !w->js) {
            if (!(w->mc = pcre2_match_context_create(NULL)) ||
                !(w->js = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, NULL)))
                return -ENOMEM;
            pcre2_jit_stack_assign(w->mc, NULL, w->js);
            continue;
        }
        if (m < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(m, msg, sizeof msg);
            lh_log_error("tokenizer: pre-tokenizer expression %zu failed on a %zu-byte piece: %s",
                         level, len, (const char *)msg);
            return -ENOMEM;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
        size_t a = ov[0], b = ov[1];
        if (b <= a) { /* an empty match cuts nothing: look again one character further */
            size_t cl = utf8_len((const uint8_t *)s + a, len - a);
            search = a + (cl ? cl : 1);
            continue;
        }
        if (a > pos && (rc = bpe_split(w, level + 1, s + pos, a - pos)))
            return rc;
        if ((rc = bpe_split(w, level + 1, s + a, b - a)))
            return rc;
        pos = search = b;
    }
    return pos < len ? bpe_split(w, level + 1, s + pos, len - pos) : 0;
}

/* ---- special tokens ---- */

typedef struct {
    size_t off, len;
    int32_t id;           /* a special token, or -1 for text */
} frag;

static int frag_add(frag **v, size_t *n, size_t *cap, size_t off, size_t len, int32_t id)
{
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 16;
        frag *q = realloc(*v, c * sizeof *q);
        if (!q)
            return -ENOMEM;
        *v = q;
        *cap = c;
    }
    (*v)[(*n)++] = (frag){off, len, id};
    return 0;
}

static int is_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* Cuts the special tokens out of the text, longest token first (llama.cpp's
 * tokenizer_st_partition): user-defined ones always, control and unknown ones when `all`. */
static int partition(const lh_tok *t, const char *text, size_t len, int all, frag **fp,
                     size_t *np)
{
    frag *v = NULL, *nv = NULL;
    size_t n = 0, cap = 0, nn, ncap;
    int rc;
    /* which bytes and byte pairs occur: most special tokens are then skipped without a search
     * (DeepSeek has 2385 user-defined "[PAD...]" tokens) */
    uint64_t *seen = calloc(65536 / 64 + 256 / 64, sizeof *seen);
    if (!seen)
        return -ENOMEM;
    uint64_t *seen1 = seen + 65536 / 64;
    for (size_t i = 0; i < len; i++) {
        unsigned b0 = (uint8_t)text[i], pair = b0 << 8 | (i + 1 < len ? (uint8_t)text[i + 1] : 0);
        seen1[b0 / 64] |= 1ull << (b0 % 64);
        seen[pair / 64] |= 1ull << (pair % 64);
    }
    if ((rc = frag_add(&v, &n, &cap, 0, len, -1)))
        goto fail;
    for (size_t k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        if (!all && t->types[id] != TT_USER)
            continue;
        const char *p = t->blob + t->raw_off[id];
        size_t pl = t->raw_len[id], i;
        unsigned b0 = (uint8_t)p[0], pair = b0 << 8 | (pl > 1 ? (uint8_t)p[1] : 0);
        if (pl > len || !(seen1[b0 / 64] >> (b0 % 64) & 1) ||
            (pl > 1 && !(seen[pair / 64] >> (pair % 64) & 1)))
            continue;
        for (i = 0; i < n; i++)
            if (v[i].id < 0 && v[i].len >= pl && memmem(text + v[i].off, v[i].len, p, pl))
                break;
        if (i == n)
            continue; /* nowhere */
        nv = NULL, nn = 0, ncap = 0;
        for (i = 0; i < n; i++) {
            if (v[i].id >= 0) {
                if ((rc = frag_add(&nv, &nn, &ncap, v[i].off, v[i].len, v[i].id)))
                    goto fail;
                continue;
            }
            size_t cur = v[i].off, end = v[i].off + v[i].len;
            const char *q;
            while (end - cur >= pl && (q = memmem(text + cur, end - cur, p, pl))) {
                size_t at = (size_t)(q - text), left = at;
                if (t->strip[id] & STRIP_LEFT)
                    while (left > cur && is_space(text[left - 1]))
                        left--;
                if ((left > cur && (rc = frag_add(&nv, &nn, &ncap, cur, left - cur, -1))) ||
                    (rc = frag_add(&nv, &nn, &ncap, at, pl, id)))
                    goto fail;
                cur = at + pl;
                if (t->strip[id] & STRIP_RIGHT)
                    while (cur < end && is_space(text[cur]))
                        cur++;
            }
            if (cur < end && (rc = frag_add(&nv, &nn, &ncap, cur, end - cur, -1)))
                goto fail;
        }
        free(v);
        v = nv, n = nn, cap = ncap;
        nv = NULL;
    }
    free(seen);
    *fp = v;
    *np = n;
    return 0;
fail:
    free(seen);
    free(v);
    free(nv);
    return rc;
}

int lh_tok_encode(const lh_tok *t, const char *text, size_t len, int flags, int32_t *out,
                  size_t cap, size_t *n_outp)
{
    sink o = {out, cap, 0};
    frag one = {0, len, -1}, *frags = &one;
    size_t n_frag = len > 0;
    bpe_work w = {.t = t, .o = &o, .h = {.bpe = 1}};
    int rc = 0;
    *n_outp = 0;
    if ((flags & LH_TOK_BOS) && t->bos >= 0)
        emit(&o, t->bos);
    if (len > (SIZE_MAX - 3) / 3 || len >= INT32_MAX / 3) {
        rc = LH_E_LIMIT;
        goto fail;
    }
    if (len > 0 && t->n_special > 0 &&
        (rc = partition(t, text, len, flags & LH_TOK_SPECIAL, &frags, &n_frag)))
        goto fail;
    if (t->kind == KIND_SPM) {
        int after_special = 1; /* the dummy prefix goes before text that starts or follows one */
        for (size_t i = 0; i < n_frag; i++) {
            if (frags[i].id >= 0) {
                emit(&o, frags[i].id);
                after_special = 1;
                continue;
            }
            if ((rc = spm_encode(t, text + frags[i].off, frags[i].len,
                                 t->add_space && after_special, &o)))
                goto fail;
            after_special = 0;
        }
    } else {
        if (!(w.md = pcre2_match_data_create(1, NULL))) {
            rc = -ENOMEM;
            goto fail;
        }
        for (size_t i = 0; i < n_frag; i++) {
            if (frags[i].id >= 0)
                emit(&o, frags[i].id);
            else if ((rc = bpe_split(&w, 0, text + frags[i].off, frags[i].len)))
                goto fail;
        }
    }
    if ((flags & LH_TOK_EOS) && t->eos >= 0)
        emit(&o, t->eos);
    *n_outp = o.n;
    rc = o.n > cap ? LH_E_LIMIT : 0;
fail:
    if (frags != &one)
        free(frags);
    if (w.md)
        pcre2_match_data_free(w.md);
    if (w.mc)
        pcre2_match_context_free(w.mc);
    if (w.js)
        pcre2_jit_stack_free(w.js);
    free(w.enc);
    free(w.sym);
    free(w.h.v);
    return rc;
}

/* ---- decode ----------------------------------------------------------------------------------- */

const char *lh_tok_piece(const lh_tok *t, int32_t id, size_t *lenp)
{
    if (id < 0 || (size_t)id >= t->n_vocab)
        return NULL;
    *lenp = t->dec_len[id];
    return t->blob + t->dec_off[id];
}

const char *lh_tok_raw(const lh_tok *t, int32_t id)
{
    if (id < 0 || (size_t)id >= t->n_vocab)
        return NULL;
    return t->blob + t->raw_off[id];
}

int lh_tok_decode(const lh_tok *t, const int32_t *ids, size_t n, int strip_lead, char *buf,
                  size_t cap, size_t *lenp)
{
    size_t total = 0;
    int first = 1, rc = 0;
    *lenp = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *p = lh_tok_piece(t, ids[i], &len);
        if (!p) {
            rc = LH_E_FORMAT; /* the caller's input: reported, not logged */
            break;
        }
        if (len == 0)
            continue;
        if (first && strip_lead && t->add_space && p[0] == ' ') {
            p++;
            len--;
        }
        first = 0;
        for (size_t j = 0; j < len; j++, total++)
            if (cap > 0 && total < cap - 1)
                buf[total] = p[j];
    }
    if (cap > 0)
        buf[total < cap - 1 ? total : cap - 1] = '\0';
    *lenp = total;
    if (rc == 0 && total > (cap > 0 ? cap - 1 : 0))
        rc = LH_E_LIMIT;
    return rc;
}
