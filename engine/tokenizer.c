/* engine/tokenizer — see tokenizer.h.
 *
 * Encoding works on spans of one escaped copy of the text (dummy prefix added, ' ' replaced by
 * U+2581).  The text is cut into symbols, one per UTF-8 character (or one per invalid byte), kept
 * in a doubly linked list.  Every adjacent pair whose concatenation is a NORMAL piece goes into a
 * max-heap keyed by (score, then leftmost position).  Popping the best pair merges the right
 * symbol into the left one and pushes the two new pairs it forms with its neighbours; a popped
 * pair whose symbols changed since it was pushed is stale and skipped (symbols only ever grow,
 * so comparing the pair's recorded length with the current lengths detects it).  That is
 * O(n log n) for n characters.  Because a merge only happens when the merged span is a piece, a
 * final symbol is either a piece or a single character/byte that is not one; the latter is
 * spelled with byte-fallback tokens.
 *
 * Piece lookup is an open-addressing hash table over the NORMAL pieces built at load; a span
 * longer than the longest piece is never looked up.
 */
#include "tokenizer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* token_type values as llama.cpp/GGUF number them */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* Longest vocabulary string accepted (bytes); real vocabularies stay far below it. */
#define TOK_MAX_PIECE 1024

struct lh_tok {
    size_t n_vocab;
    char *blob;           /* every raw piece, then every decoded piece, NUL-terminated */
    size_t *raw_off;      /* (n_vocab) raw piece offset in blob */
    size_t *raw_len;      /* (n_vocab) */
    size_t *dec_off;      /* (n_vocab) decoded piece offset in blob */
    size_t *dec_len;      /* (n_vocab) */
    float *scores;        /* (n_vocab) */
    uint8_t *types;       /* (n_vocab) token_type, clamped to 0..255 */
    int32_t byte_id[256]; /* <0xNN> token of each byte, -1 if absent */
    int32_t *hash;        /* (hash_cap) NORMAL piece ids, -1 = empty */
    size_t hash_cap;
    size_t max_piece;     /* longest NORMAL piece in bytes */
    int32_t bos, eos, unk;
    int add_bos, add_space;
};

static uint64_t hash_bytes(const void *s, size_t len)
{
    const uint8_t *p = s;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* The NORMAL piece spelled (s, len), or -1. */
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
    int rc;
    *tp = NULL;

    rc = lh_gguf_get_str(g, "tokenizer.ggml.model", &s, &len);
    if (rc) {
        lh_log_error("%s: tokenizer.ggml.model is %s", name, rc == LH_E_NOTFOUND ? "missing" : "not a string");
        return LH_E_FORMAT;
    }
    if (len != 5 || memcmp(s, "llama", 5) != 0) {
        lh_log_error("%s: tokenizer model '%.*s' is not supported (only 'llama')",
                     name, (int)(len > 64 ? 64 : len), s);
        return LH_E_UNSUPPORTED;
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
    t->n_vocab = n;
    t->raw_off = malloc(n * sizeof *t->raw_off);
    t->raw_len = malloc(n * sizeof *t->raw_len);
    t->dec_off = malloc(n * sizeof *t->dec_off);
    t->dec_len = malloc(n * sizeof *t->dec_len);
    t->scores = malloc(n * sizeof *t->scores);
    t->types = malloc(n);
    t->hash_cap = 16;
    while (t->hash_cap < 2 * n)
        t->hash_cap *= 2;
    t->hash = malloc(t->hash_cap * sizeof *t->hash);
    if (!t->raw_off || !t->raw_len || !t->dec_off || !t->dec_len || !t->scores || !t->types || !t->hash)
        goto oom;
    memset(t->hash, 0xff, t->hash_cap * sizeof *t->hash);
    memset(t->byte_id, 0xff, sizeof t->byte_id);

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
        d[dn] = '\0';
        t->dec_off[i] = pos;
        t->dec_len[i] = dn;
        pos += len + 1;

        if (type == TT_NORMAL && len > 0) {
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

    if ((rc = get_id(g, "tokenizer.ggml.bos_token_id", n, 1, &t->bos, name)) ||
        (rc = get_id(g, "tokenizer.ggml.eos_token_id", n, 2, &t->eos, name)) ||
        (rc = get_id(g, "tokenizer.ggml.unknown_token_id", n, 0, &t->unk, name)) ||
        (rc = get_flag(g, "tokenizer.ggml.add_bos_token", 1, &t->add_bos, name)) ||
        (rc = get_flag(g, "tokenizer.ggml.add_space_prefix", 1, &t->add_space, name)))
        goto fail;
    *tp = t;
    return 0;
oom:
    lh_log_error("%s: out of memory loading a vocabulary of %zu tokens", name, n);
    rc = -ENOMEM;
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
    free(t);
}

size_t lh_tok_n_vocab(const lh_tok *t) { return t->n_vocab; }
int32_t lh_tok_bos(const lh_tok *t) { return t->bos; }
int32_t lh_tok_eos(const lh_tok *t) { return t->eos; }
int lh_tok_add_bos(const lh_tok *t) { return t->add_bos; }

/* ---- encode ----------------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 when the byte at s does not
 * start one (stray continuation byte, overlong form, surrogate, beyond U+10FFFF, truncated). */
static size_t utf8_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t len;
    uint32_t min, cp;
    if (c < 0x80)
        return 1;
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
    return len;
}

typedef struct {
    int32_t prev, next;   /* neighbours in the list, -1 at the ends */
    uint32_t len;         /* bytes of the span; 0 once merged away */
    int32_t id;           /* the piece the span spells, -1 if none */
    size_t start;         /* offset in the escaped text */
} symbol;

typedef struct {
    int32_t left, right;
    float score;
    uint32_t len;         /* left.len + right.len when pushed */
} bigram;

/* a is better than b: higher score, then further left */
static int better(const bigram *a, const bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct {
    bigram *v;
    size_t n, cap;
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
        if (!better(&b, &h->v[p]))
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
        if (c + 1 < h->n && better(&h->v[c + 1], &h->v[c]))
            c++;
        if (!better(&h->v[c], &last))
            break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n > 0)
        h->v[i] = last;
    return top;
}

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

static void emit(int32_t *out, size_t cap, size_t *np, int32_t id)
{
    if (*np < cap)
        out[*np] = id;
    (*np)++;
}

int lh_tok_encode(const lh_tok *t, const char *text, size_t len, int add_bos, int32_t *out,
                  size_t cap, size_t *n_outp)
{
    char *esc = NULL;
    symbol *sym = NULL;
    heap h = {0};
    size_t n_out = 0;
    int rc = 0;
    *n_outp = 0;
    if (add_bos && t->bos >= 0)
        emit(out, cap, &n_out, t->bos);
    if (len == 0)
        goto done;
    /* escaped text: at most 3 bytes per input byte plus the dummy prefix */
    if (len > (SIZE_MAX - 3) / 3 || len >= INT32_MAX / 3) {
        rc = LH_E_LIMIT;
        goto fail;
    }
    esc = malloc(3 * len + 3);
    sym = malloc((len + 1) * sizeof *sym);
    if (!esc || !sym) {
        rc = -ENOMEM;
        goto fail;
    }
    size_t n_esc = 0;
    if (t->add_space) {
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
            emit(out, cap, &n_out, sym[i].id);
            continue;
        }
        for (uint32_t j = 0; j < sym[i].len; j++) {
            int32_t b = t->byte_id[(uint8_t)esc[sym[i].start + j]];
            emit(out, cap, &n_out, b >= 0 ? b : t->unk);
        }
    }
done:
    *n_outp = n_out;
    rc = n_out > cap ? LH_E_LIMIT : 0;
fail:
    free(esc);
    free(sym);
    free(h.v);
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
