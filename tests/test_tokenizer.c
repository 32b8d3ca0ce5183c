/* tests/test_tokenizer — the bundled model's SentencePiece vocabulary (tok512): golden ids,
 * byte-exact round trips over mixed scripts and invalid UTF-8, byte fallback, control tokens
 * never produced from text, capacity limits; and a hand-built vocabulary whose merge order
 * (score, then leftmost) is checked directly. */
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf_write.h"
#include "tokenizer.h"

static lh_gguf *g_gguf;
static lh_tok *g_tok;

static int suite_init(void)
{
    if (lh_gguf_open(&g_gguf, lh_test_model_path()) != 0)
        return 1;
    return lh_tok_load(&g_tok, g_gguf) != 0;
}

static int suite_clean(void)
{
    lh_tok_free(g_tok);
    lh_gguf_close(g_gguf);
    g_tok = NULL;
    g_gguf = NULL;
    return 0;
}

/* encode into a malloc'd array; *np the count */
static int32_t *enc(const lh_tok *t, const char *s, size_t len, int bos, size_t *np)
{
    size_t cap = 3 * len + 8;
    int32_t *ids = malloc(cap * sizeof *ids);
    int rc = lh_tok_encode(t, s, len, bos, ids, cap, np);
    CU_ASSERT_EQUAL(rc, 0);
    return ids;
}

/* decode(encode(s)) == s byte for byte, with the dummy prefix stripped */
static void roundtrip(const lh_tok *t, const char *s, size_t len)
{
    size_t n, out_len;
    int32_t *ids = enc(t, s, len, 1, &n);
    char *buf = malloc(len + 16);
    CU_ASSERT_EQUAL(lh_tok_decode(t, ids, n, 1, buf, len + 16, &out_len), 0);
    CU_ASSERT_EQUAL(out_len, len);
    CU_ASSERT(out_len == len && memcmp(buf, s, len) == 0);
    CU_ASSERT_EQUAL(buf[out_len < len + 16 ? out_len : 0], '\0');
    free(buf);
    free(ids);
}

static int is_byte_token(const lh_tok *t, int32_t id, int byte)
{
    char want[8];
    snprintf(want, sizeof want, "<0x%02X>", byte);
    const char *raw = lh_tok_raw(t, id);
    return raw && strcmp(raw, want) == 0;
}

static void test_vocab(void)
{
    CU_ASSERT_EQUAL(lh_tok_n_vocab(g_tok), 512);
    CU_ASSERT_EQUAL(lh_tok_bos(g_tok), 1);
    CU_ASSERT_EQUAL(lh_tok_eos(g_tok), 2);
    CU_ASSERT_EQUAL(lh_tok_add_bos(g_tok), 1);
    CU_ASSERT_STRING_EQUAL(lh_tok_raw(g_tok, 1), "<s>");
    CU_ASSERT_PTR_NULL(lh_tok_raw(g_tok, 512));
    CU_ASSERT_PTR_NULL(lh_tok_raw(g_tok, -1));
    size_t len;
    CU_ASSERT_PTR_NULL(lh_tok_piece(g_tok, 512, &len));
    const char *p = lh_tok_piece(g_tok, 1, &len); /* control: nothing */
    CU_ASSERT(p && len == 0);
    p = lh_tok_piece(g_tok, 3 + 'A', &len);      /* <0x41> */
    CU_ASSERT(p && len == 1 && p[0] == 'A');
    p = lh_tok_piece(g_tok, 259, &len);          /* "\u2581t" */
    CU_ASSERT(p && len == 2 && memcmp(p, " t", 2) == 0);
}

static void test_golden(void)
{
    const char *s = "Once upon a time";
    int32_t ids[16];
    size_t n;
    CU_ASSERT_EQUAL(lh_tok_encode(g_tok, s, strlen(s), 1, ids, 16, &n), 0);
    const int32_t want[] = {1, 403, 407, 261, 378};
    CU_ASSERT_EQUAL_FATAL(n, 5);
    for (size_t i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(ids[i], want[i]);
    /* without BOS */
    CU_ASSERT_EQUAL(lh_tok_encode(g_tok, s, strlen(s), 0, ids, 16, &n), 0);
    CU_ASSERT(n == 4 && ids[0] == 403);
    char buf[64];
    size_t len;
    CU_ASSERT_EQUAL(lh_tok_decode(g_tok, want, 5, 1, buf, sizeof buf, &len), 0);
    CU_ASSERT_STRING_EQUAL(buf, "Once upon a time");
    CU_ASSERT_EQUAL(lh_tok_decode(g_tok, want, 5, 0, buf, sizeof buf, &len), 0);
    CU_ASSERT_STRING_EQUAL(buf, " Once upon a time");
    CU_ASSERT_EQUAL(len, 17);
}

static void test_golden_story(void)
{
    /* the golden story text encodes and decodes back byte for byte */
    FILE *f = fopen("tests/data/stories260K.golden.txt", "rb");
    if (!f) {
        lh_test_skip("tests/data/stories260K.golden.txt is missing (run from the repo root)");
        return;
    }
    char text[4096];
    size_t len = fread(text, 1, sizeof text, f);
    fclose(f);
    CU_ASSERT(len > 100);
    roundtrip(g_tok, text, len);
}

static void test_roundtrip_mixed(void)
{
    const char *cases[] = {
        "Hello \xe4\xb8\x96\xe7\x95\x8c, caf\xc3\xa9 na\xc3\xafve \xe2\x80\x94 ok",
        "  leading and trailing spaces  ",
        "tabs\tand\nnewlines\r\n",
        "emoji \xf0\x9f\x98\x80 and U+10FFFF \xf4\x8f\xbf\xbf",
        "a",
        " ",
        "Lily's mom said, \"Lily, let's go to the park.\"",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        roundtrip(g_tok, cases[i], strlen(cases[i]));

    /* CJK is not in tok512: each character becomes its three byte tokens */
    const char *cjk = "\xe4\xb8\x96";
    int32_t ids[8];
    size_t n;
    CU_ASSERT_EQUAL(lh_tok_encode(g_tok, cjk, 3, 0, ids, 8, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 4); /* "\u2581" then 3 bytes */
    CU_ASSERT(is_byte_token(g_tok, ids[1], 0xe4) && is_byte_token(g_tok, ids[2], 0xb8) &&
              is_byte_token(g_tok, ids[3], 0x96));
}

static void test_invalid_utf8(void)
{
    struct {
        const char *s;
        size_t len;
        int bad_byte; /* a byte that must come out as its own byte token */
    } cases[] = {
        {"a\xff" "b", 3, 0xff},                 /* lone 0xff */
        {"x\xe4\xb8", 3, 0xe4},                 /* truncated 3-byte sequence at the end */
        {"\xe4\xb8y", 3, 0xe4},                 /* truncated, followed by ASCII */
        {"\xc0\xaf", 2, 0xc0},                  /* overlong '/' */
        {"\xe0\x80\xaf", 3, 0xe0},              /* overlong 3-byte */
        {"\xed\xa0\x80", 3, 0xed},              /* surrogate U+D800 */
        {"\xf4\x90\x80\x80", 4, 0xf4},          /* beyond U+10FFFF */
        {"\x80\x80 z", 4, 0x80},                /* stray continuation bytes */
        {"ok\xe2\x96", 4, 0xe2},                /* half a U+2581 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        roundtrip(g_tok, cases[i].s, cases[i].len);
        size_t n;
        int32_t *ids = enc(g_tok, cases[i].s, cases[i].len, 0, &n);
        int found = 0;
        for (size_t j = 0; j < n; j++)
            found |= is_byte_token(g_tok, ids[j], cases[i].bad_byte);
        CU_ASSERT(found);
        free(ids);
    }
    /* every byte value on its own */
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        if (b == ' ')
            continue;
        roundtrip(g_tok, &c, 1);
    }
    /* all 256 bytes in one string */
    char all[256];
    for (int b = 0; b < 256; b++)
        all[b] = (char)b;
    roundtrip(g_tok, all, 256);
}

static void test_no_control_from_text(void)
{
    const char *s = "<s> hello </s><unk>";
    size_t n;
    int32_t *ids = enc(g_tok, s, strlen(s), 0, &n);
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_NOT_EQUAL(ids[i], 0);
        CU_ASSERT_NOT_EQUAL(ids[i], 1);
        CU_ASSERT_NOT_EQUAL(ids[i], 2);
    }
    free(ids);
    roundtrip(g_tok, s, strlen(s));
    /* "<0x41>" as text stays text, not the byte token */
    ids = enc(g_tok, "<0x41>", 6, 0, &n);
    CU_ASSERT(n > 1);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_NOT_EQUAL(ids[i], 3 + 0x41);
    free(ids);
}

static void test_empty(void)
{
    int32_t ids[4] = {-7, -7, -7, -7};
    size_t n = 99;
    CU_ASSERT_EQUAL(lh_tok_encode(g_tok, "", 0, 1, ids, 4, &n), 0);
    CU_ASSERT(n == 1 && ids[0] == 1);
    CU_ASSERT_EQUAL(lh_tok_encode(g_tok, "", 0, 0, ids, 4, &n), 0);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(lh_tok_encode(g_tok, NULL, 0, 0, NULL, 0, &n), 0);
    CU_ASSERT_EQUAL(n, 0);
    char buf[4] = "zzz";
    size_t len = 99;
    CU_ASSERT_EQUAL(lh_tok_decode(g_tok, NULL, 0, 1, buf, sizeof buf, &len), 0);
    CU_ASSERT(len == 0 && buf[0] == '\0');
}

static void test_decode_bytes(void)
{
    /* byte tokens forming U+00E9 and U+4E16, after BOS */
    const int32_t ids[] = {1, 3 + 0xc3, 3 + 0xa9, 3 + 0xe4, 3 + 0xb8, 3 + 0x96, 2};
    char buf[16];
    size_t len;
    CU_ASSERT_EQUAL(lh_tok_decode(g_tok, ids, 7, 1, buf, sizeof buf, &len), 0);
    CU_ASSERT_EQUAL(len, 5);
    CU_ASSERT_STRING_EQUAL(buf, "\xc3\xa9\xe4\xb8\x96");
    /* an id out of range */
    const int32_t bad[] = {403, 512};
    CU_ASSERT_EQUAL(lh_tok_decode(g_tok, bad, 2, 0, buf, sizeof buf, &len), LH_E_FORMAT);
    const int32_t neg[] = {-1};
    CU_ASSERT_EQUAL(lh_tok_decode(g_tok, neg, 1, 0, buf, sizeof buf, &len), LH_E_FORMAT);
}

static void test_limits(void)
{
    const char *s = "Once upon a time";
    int32_t ids[8] = {0};
    size_t n = 0;
    /* too small: LH_E_LIMIT, the full count, the first cap ids, nothing written past cap */
    ids[3] = -5;
    CU_ASSERT_EQUAL(lh_tok_encode(g_tok, s, strlen(s), 1, ids, 3, &n), LH_E_LIMIT);
    CU_ASSERT_EQUAL(n, 5);
    CU_ASSERT(ids[0] == 1 && ids[1] == 403 && ids[2] == 407 && ids[3] == -5);
    CU_ASSERT_EQUAL(lh_tok_encode(g_tok, s, strlen(s), 1, NULL, 0, &n), LH_E_LIMIT);
    CU_ASSERT_EQUAL(n, 5);
    CU_ASSERT_EQUAL(lh_tok_encode(g_tok, s, strlen(s), 1, ids, 5, &n), 0);

    const int32_t want[] = {1, 403, 407, 261, 378};
    char buf[32];
    size_t len;
    memset(buf, 'x', sizeof buf);
    CU_ASSERT_EQUAL(lh_tok_decode(g_tok, want, 5, 1, buf, 5, &len), LH_E_LIMIT);
    CU_ASSERT_EQUAL(len, 16);
    CU_ASSERT_STRING_EQUAL(buf, "Once");
    CU_ASSERT_EQUAL(buf[5], 'x');
    CU_ASSERT_EQUAL(lh_tok_decode(g_tok, want, 5, 1, buf, 16, &len), LH_E_LIMIT); /* no room for NUL */
    CU_ASSERT_EQUAL(lh_tok_decode(g_tok, want, 5, 1, buf, 17, &len), 0);
    CU_ASSERT_EQUAL(lh_tok_decode(g_tok, want, 5, 1, NULL, 0, &len), LH_E_LIMIT);
    CU_ASSERT_EQUAL(len, 16);
}

/* A long prompt (megabytes) encodes in n log n: it would take minutes if merging were n^2.
 * Each repetition starts with an invalid byte, which never merges, so every repetition must
 * tokenise exactly like the first. */
static void test_long(void)
{
    const char *unit = "\xff Once upon a time, there was a little girl named Lily. caf\xc3\xa9";
    size_t ulen = strlen(unit), reps = lh_test_asan() ? 4000 : 40000;
    size_t len = ulen * reps;
    char *text = malloc(len);
    for (size_t i = 0; i < reps; i++)
        memcpy(text + i * ulen, unit, ulen);
    size_t n, n_unit;
    int32_t *ids = enc(g_tok, text, len, 1, &n);
    int32_t *uids = enc(g_tok, unit, ulen, 1, &n_unit);
    /* BOS and the dummy prefix come once; then each repetition is <0xFF> and the body */
    size_t n_pre;
    int32_t *pre = enc(g_tok, "\xff", 1, 1, &n_pre);
    size_t head = n_pre - 1, period = n_unit - head;
    CU_ASSERT(period > 10 && pre[head] == uids[head]);
    CU_ASSERT_EQUAL(n, head + period * reps);
    int same = n == head + period * reps && memcmp(ids, uids, n_unit * sizeof *ids) == 0;
    for (size_t r = 1; r < reps && same; r++)
        same = memcmp(ids + head + r * period, uids + head, period * sizeof *ids) == 0;
    CU_ASSERT(same);
    char *buf = malloc(len + 1);
    size_t out_len;
    CU_ASSERT_EQUAL(lh_tok_decode(g_tok, ids, n, 1, buf, len + 1, &out_len), 0);
    CU_ASSERT(out_len == len && memcmp(buf, text, len) == 0);
    free(buf);
    free(pre);
    free(uids);
    free(ids);
    free(text);
}

/* The definition, slowly: repeatedly scan every adjacent pair for the best NORMAL piece
 * (highest score, leftmost), over spans of the escaped text.  Valid UTF-8 input only. */
static int32_t naive_find(const char *s, size_t len)
{
    static int32_t types[512];
    if (types[0] == 0)
        for (size_t id = 0; id < 512; id++)
            lh_gguf_arr_i32(g_gguf, "tokenizer.ggml.token_type", id, &types[id]);
    for (size_t id = 0; id < lh_tok_n_vocab(g_tok) && id < 512; id++) {
        const char *raw = lh_tok_raw(g_tok, (int32_t)id);
        if (types[id] == 1 && strlen(raw) == len && memcmp(raw, s, len) == 0)
            return (int32_t)id;
    }
    return -1;
}

static size_t naive_encode(const char *text, int32_t *out)
{
    char esc[512];
    size_t n = 0, start[256], len[256], n_sym = 0, n_out = 0;
    memcpy(esc, "\xe2\x96\x81", 3);
    n = 3;
    for (const char *p = text; *p; p++) {
        if (*p == ' ') {
            memcpy(esc + n, "\xe2\x96\x81", 3);
            n += 3;
        } else {
            esc[n++] = *p;
        }
    }
    for (size_t i = 0; i < n;) {
        uint8_t c = (uint8_t)esc[i];
        size_t l = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
        start[n_sym] = i;
        len[n_sym++] = l;
        i += l;
    }
    for (;;) {
        size_t best = SIZE_MAX;
        float best_score = 0;
        for (size_t i = 0; i + 1 < n_sym; i++) {
            int32_t id = naive_find(esc + start[i], len[i] + len[i + 1]);
            float sc;
            if (id < 0)
                continue;
            lh_gguf_arr_f32(g_gguf, "tokenizer.ggml.scores", (size_t)id, &sc);
            if (best == SIZE_MAX || sc > best_score) {
                best = i;
                best_score = sc;
            }
        }
        if (best == SIZE_MAX)
            break;
        len[best] += len[best + 1];
        memmove(start + best + 1, start + best + 2, (n_sym - best - 2) * sizeof *start);
        memmove(len + best + 1, len + best + 2, (n_sym - best - 2) * sizeof *len);
        n_sym--;
    }
    for (size_t i = 0; i < n_sym; i++) {
        int32_t id = naive_find(esc + start[i], len[i]);
        if (id >= 0)
            out[n_out++] = id;
        else
            for (size_t j = 0; j < len[i]; j++)
                out[n_out++] = 3 + (uint8_t)esc[start[i] + j];
    }
    return n_out;
}

static void test_against_naive(void)
{
    /* random strings over letters, spaces, punctuation and a few multi-byte characters */
    static const char *const alphabet[] = {
        "a", "e", "t", "h", "o", "n", "s", "i", "l", "d", "r", "y", " ", " ", " ", ".", ",",
        "'", "L", "O", "\xc3\xa9", "\xe4\xb8\x96", "\n",
    };
    uint32_t seed = 12345;
    int mismatches = 0;
    for (int iter = 0; iter < 300; iter++) {
        char text[128] = "";
        size_t tl = 0;
        seed = seed * 1664525u + 1013904223u;
        int m = 1 + (int)(seed >> 27);
        for (int k = 0; k < m; k++) {
            seed = seed * 1664525u + 1013904223u;
            const char *c = alphabet[(seed >> 16) % (sizeof alphabet / sizeof alphabet[0])];
            memcpy(text + tl, c, strlen(c));
            tl += strlen(c);
        }
        text[tl] = '\0';
        int32_t want[512], got[512];
        size_t n_want = naive_encode(text, want), n_got;
        CU_ASSERT_EQUAL(lh_tok_encode(g_tok, text, tl, 0, got, 512, &n_got), 0);
        if (n_got != n_want || memcmp(got, want, n_got * sizeof *got) != 0)
            mismatches++;
    }
    CU_ASSERT_EQUAL(mismatches, 0);
}

/* ---- hand-built vocabularies --------------------------------------------------------------- */

/* pieces/scores/types -> a GGUF in memory -> tokenizer */
static int load_vocab(const char *const *pieces, const float *scores, const int32_t *types,
                      size_t n, const char *model, lh_tok **tp, void **bufp, lh_gguf **gp)
{
    lh_gguf_writer *w = NULL;
    size_t size;
    lh_gguf_writer_new(&w);
    lh_gguf_writer_str(w, "tokenizer.ggml.model", model);
    lh_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", pieces, n);
    if (scores)
        lh_gguf_writer_arr_f32(w, "tokenizer.ggml.scores", scores, n);
    if (types)
        lh_gguf_writer_arr_i32(w, "tokenizer.ggml.token_type", types, n);
    lh_gguf_writer_finish(w, bufp, &size);
    lh_gguf_writer_free(w);
    *gp = NULL;
    *tp = NULL;
    int rc = lh_gguf_open_mem(gp, *bufp, size, "vocab");
    if (rc == 0)
        rc = lh_tok_load(tp, *gp);
    return rc;
}

static void test_merge_order(void)
{
    /* "abc": "ab" (score -1) and "bc" (score -0.5): "bc" wins, then "abc" is not reachable
     * from "a"+"bc" unless present; ties go leftmost. */
    const char *pieces[] = {"<unk>", "<s>", "</s>", "a", "b", "c", "ab", "bc", "\xe2\x96\x81",
                            ("\xe2\x96\x81" "a"), "<s>", "aa"};
    const float scores[] = {0, 0, 0, -5, -5, -5, -1, -0.5f, -5, -10, 0, -2};
    const int32_t types[] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 1};
    lh_tok *t;
    lh_gguf *g;
    void *buf;
    CU_ASSERT_EQUAL_FATAL(load_vocab(pieces, scores, types, 12, "llama", &t, &buf, &g), 0);
    int32_t ids[16];
    size_t n;
    /* dummy prefix "\u2581" then "abc": pairs ▁a(-10) ab(-1) bc(-0.5) -> bc, then ▁a -> [▁a, bc] */
    CU_ASSERT_EQUAL(lh_tok_encode(t, "abc", 3, 0, ids, 16, &n), 0);
    CU_ASSERT(n == 2 && ids[0] == 9 && ids[1] == 7);
    /* "aaa" without bos: ▁a(-10), aa(-2), aa(-2): the leftmost aa wins -> ▁ is then alone with
     * aa to its right (no piece "▁aa"), so [▁, aa, a] */
    CU_ASSERT_EQUAL(lh_tok_encode(t, "aaa", 3, 0, ids, 16, &n), 0);
    CU_ASSERT(n == 3 && ids[0] == 8 && ids[1] == 11 && ids[2] == 3);
    /* a character with no piece and no byte tokens becomes <unk> */
    CU_ASSERT_EQUAL(lh_tok_encode(t, "z", 1, 0, ids, 16, &n), 0);
    CU_ASSERT(n == 2 && ids[0] == 8 && ids[1] == 0);
    /* the control "<s>" never matches text; the user-defined duplicate "<s>" (type 4) does,
     * as in llama.cpp, which cuts user-defined tokens out of the text before anything else
     * (then the dummy prefix comes before the text that follows it) */
    CU_ASSERT_EQUAL(lh_tok_encode(t, "<s>", 3, 0, ids, 16, &n), 0);
    CU_ASSERT(n == 1 && ids[0] == 10);
    CU_ASSERT_EQUAL(lh_tok_encode(t, "<s>abc", 6, 0, ids, 16, &n), 0);
    CU_ASSERT(n == 3 && ids[0] == 10 && ids[1] == 9 && ids[2] == 7);
    lh_tok_free(t);
    lh_gguf_close(g);
    free(buf);
}

/* add_space_prefix = false: no dummy prefix, and decode keeps a leading space; add_bos_token
 * is reported as stored. */
static void test_flags(void)
{
    const char *pieces[] = {"<unk>", "<s>", "</s>", "a", "b", "ab", "\xe2\x96\x81",
                            ("\xe2\x96\x81" "a")};
    const float scores[] = {0, 0, 0, -5, -5, -1, -5, -2};
    const int32_t types[] = {2, 3, 3, 1, 1, 1, 1, 1};
    lh_gguf_writer *w = NULL;
    void *buf;
    size_t size;
    lh_gguf_writer_new(&w);
    lh_gguf_writer_str(w, "tokenizer.ggml.model", "llama");
    lh_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", pieces, 8);
    lh_gguf_writer_arr_f32(w, "tokenizer.ggml.scores", scores, 8);
    lh_gguf_writer_arr_i32(w, "tokenizer.ggml.token_type", types, 8);
    lh_gguf_writer_bool(w, "tokenizer.ggml.add_bos_token", 0);
    lh_gguf_writer_bool(w, "tokenizer.ggml.add_space_prefix", 0);
    lh_gguf_writer_finish(w, &buf, &size);
    lh_gguf_writer_free(w);
    lh_gguf *g = NULL;
    lh_tok *t = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_gguf_open_mem(&g, buf, size, "flags"), 0);
    CU_ASSERT_EQUAL_FATAL(lh_tok_load(&t, g), 0);
    CU_ASSERT_EQUAL(lh_tok_add_bos(t), 0);
    int32_t ids[8];
    size_t n;
    CU_ASSERT_EQUAL(lh_tok_encode(t, "ab", 2, 0, ids, 8, &n), 0);
    CU_ASSERT(n == 1 && ids[0] == 5);
    CU_ASSERT_EQUAL(lh_tok_encode(t, " a", 2, 1, ids, 8, &n), 0);
    CU_ASSERT(n == 2 && ids[0] == 1 && ids[1] == 7);
    char out[8];
    size_t len;
    CU_ASSERT_EQUAL(lh_tok_decode(t, ids, n, 1, out, sizeof out, &len), 0);
    CU_ASSERT_STRING_EQUAL(out, " a");
    lh_tok_free(t);
    lh_gguf_close(g);
    free(buf);
}

static void test_bad_vocab(void)
{
    const char *pieces[] = {"<unk>", "<s>", "</s>", "a"};
    const float scores[] = {0, 0, 0, 0};
    const int32_t types[] = {2, 3, 3, 1};
    lh_tok *t;
    lh_gguf *g;
    void *buf;
    CU_ASSERT_EQUAL(load_vocab(pieces, scores, types, 4, "llama", &t, &buf, &g), 0);
    lh_tok_free(t);
    lh_gguf_close(g);
    free(buf);
    CU_ASSERT_EQUAL(load_vocab(pieces, scores, types, 4, "bert", &t, &buf, &g), LH_E_UNSUPPORTED);
    CU_ASSERT_PTR_NULL(t);
    lh_gguf_close(g);
    free(buf);
    /* gpt2 needs merges */
    CU_ASSERT_EQUAL(load_vocab(pieces, scores, types, 4, "gpt2", &t, &buf, &g), LH_E_FORMAT);
    CU_ASSERT_PTR_NULL(t);
    lh_gguf_close(g);
    free(buf);

    /* array lengths that disagree */
    lh_gguf_writer *w = NULL;
    size_t size;
    lh_gguf_writer_new(&w);
    lh_gguf_writer_str(w, "tokenizer.ggml.model", "llama");
    lh_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", pieces, 4);
    lh_gguf_writer_arr_f32(w, "tokenizer.ggml.scores", scores, 3);
    lh_gguf_writer_finish(w, &buf, &size);
    lh_gguf_writer_free(w);
    CU_ASSERT_EQUAL_FATAL(lh_gguf_open_mem(&g, buf, size, "vocab"), 0);
    CU_ASSERT_EQUAL(lh_tok_load(&t, g), LH_E_FORMAT);
    lh_gguf_close(g);
    free(buf);

    /* bos id out of range; a byte token that is not <0xNN>; a missing model key */
    lh_gguf_writer_new(&w);
    lh_gguf_writer_str(w, "tokenizer.ggml.model", "llama");
    lh_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", pieces, 4);
    lh_gguf_writer_u32(w, "tokenizer.ggml.bos_token_id", 4);
    lh_gguf_writer_finish(w, &buf, &size);
    lh_gguf_writer_free(w);
    CU_ASSERT_EQUAL_FATAL(lh_gguf_open_mem(&g, buf, size, "vocab"), 0);
    CU_ASSERT_EQUAL(lh_tok_load(&t, g), LH_E_FORMAT);
    lh_gguf_close(g);
    free(buf);

    const int32_t bad_types[] = {2, 3, 3, 6};
    CU_ASSERT_EQUAL(load_vocab(pieces, scores, bad_types, 4, "llama", &t, &buf, &g), LH_E_FORMAT);
    lh_gguf_close(g);
    free(buf);

    lh_gguf_writer_new(&w);
    lh_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", pieces, 4);
    lh_gguf_writer_finish(w, &buf, &size);
    lh_gguf_writer_free(w);
    CU_ASSERT_EQUAL_FATAL(lh_gguf_open_mem(&g, buf, size, "vocab"), 0);
    CU_ASSERT_EQUAL(lh_tok_load(&t, g), LH_E_FORMAT);
    lh_gguf_close(g);
    free(buf);
    lh_tok_free(NULL);
}

/* ---- byte-level BPE (and the SentencePiece vocabularies of llama.cpp's test set) ------------ */

/* Vocabularies under $LH_BUILD/vocab (the Makefile decompresses tests/data/vocab/ there; the
 * byte-level ones are the llama-bpe .. starcoder entries). */
static const char *const VOCABS[] = {
    "llama-bpe", "qwen2", "gpt-2", "deepseek-llm", "deepseek-coder", "falcon", "mpt",
    "refact", "starcoder", "gpt-4o", "llama-spm", "phi-3",
};
#define N_VOCABS (sizeof VOCABS / sizeof VOCABS[0])
#define VEC_SEP "\n__ggml_vocab_test__\n"

typedef struct {
    lh_gguf *g;
    lh_tok *t;
} vocab;

static int vocab_open(vocab *v, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-%s.gguf", lh_test_build_dir(), name);
    v->g = NULL;
    v->t = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) { /* `make` (all) always writes them: missing is a failure, not a skip */
        printf("\n  %s is missing (make decompresses it from tests/data/vocab/)", path);
        CU_FAIL("vocabulary file missing");
        return -1;
    }
    fclose(f);
    CU_ASSERT_EQUAL_FATAL(lh_gguf_open(&v->g, path), 0);
    CU_ASSERT_EQUAL_FATAL(lh_tok_load(&v->t, v->g), 0);
    return 0;
}

static void vocab_close(vocab *v)
{
    lh_tok_free(v->t);
    lh_gguf_close(v->g);
}

static char *read_all(const char *path, size_t *lenp)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, len = 0, n;
    char *buf = malloc(cap + 1);
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            char *b = realloc(buf, 2 * cap + 1);
            if (!b) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf)
        buf[len] = '\0';
    *lenp = len;
    return buf;
}

/* Runs the cases of inp (separated by VEC_SEP) against the id lines of out.  Equal inputs count
 * once, as llama.cpp's test-tokenizer-0 keeps them in a map.  Returns passed; *totalp. */
static size_t run_vectors(const lh_tok *t, const char *inp_path, const char *out_path, int flags,
                          size_t *totalp, const char *label)
{
    size_t inp_len, out_len, passed = 0, total = 0;
    char *inp = read_all(inp_path, &inp_len), *out = read_all(out_path, &out_len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(inp);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    const char *starts[256];
    size_t lens[256], n = 0, sep_len = strlen(VEC_SEP);
    for (const char *p = inp, *end = inp + inp_len; p < end && n < 256;) {
        const char *e = memmem(p, (size_t)(end - p), VEC_SEP, sep_len);
        starts[n] = p;
        lens[n++] = e ? (size_t)(e - p) : (size_t)(end - p);
        p = e ? e + sep_len : end;
    }
    char *line = out;
    int32_t *ids = malloc(65536 * sizeof *ids);
    for (size_t i = 0; i < n; i++) {
        char *nl = strchr(line, '\n');
        CU_ASSERT_PTR_NOT_NULL_FATAL(nl);
        *nl = '\0';
        int dup = 0;
        for (size_t j = 0; j < i && !dup; j++)
            dup = lens[j] == lens[i] && memcmp(starts[j], starts[i], lens[i]) == 0;
        int32_t want[4096];
        size_t n_want = 0;
        for (char *q = line, *end; n_want < 4096; q = end) {
            long v = strtol(q, &end, 10);
            if (end == q)
                break;
            want[n_want++] = (int32_t)v;
        }
        line = nl + 1;
        if (dup)
            continue;
        total++;
        size_t n_got;
        int rc = lh_tok_encode(t, starts[i], lens[i], flags, ids, 65536, &n_got);
        if (rc == 0 && n_got == n_want && memcmp(ids, want, n_got * sizeof *ids) == 0) {
            passed++;
        } else {
            printf("\n  %s case %zu differs: %zu ids, want %zu (first %d/%d)", label, i, n_got,
                   n_want, n_got ? ids[0] : -1, n_want ? want[0] : -1);
        }
        /* byte-level BPE decodes back to the exact text (control tokens decode to nothing) */
        if (strcmp(lh_tok_kind(t), "bpe") == 0 && rc == 0 && !(flags & LH_TOK_SPECIAL)) {
            char *buf = malloc(lens[i] + 1);
            size_t dl;
            CU_ASSERT_EQUAL(lh_tok_decode(t, ids, n_got, 0, buf, lens[i] + 1, &dl), 0);
            CU_ASSERT(dl == lens[i] && memcmp(buf, starts[i], dl) == 0);
            free(buf);
        }
    }
    free(ids);
    free(inp);
    free(out);
    *totalp = total;
    return passed;
}

static void test_vectors(void)
{
    for (size_t k = 0; k < N_VOCABS; k++) {
        vocab v;
        if (vocab_open(&v, VOCABS[k]))
            continue;
        char out[256];
        snprintf(out, sizeof out, "tests/data/vocab/ggml-vocab-%s.gguf.out", VOCABS[k]);
        size_t total, passed = run_vectors(v.t, "tests/data/vocab/ggml-vocab.inp", out, 0, &total,
                                           VOCABS[k]);
        printf("\n  llama.cpp vectors %-15s %s %zu/%zu", VOCABS[k], lh_tok_kind(v.t), passed,
               total);
        CU_ASSERT(total >= 40);
        CU_ASSERT_EQUAL(passed, total);
        vocab_close(&v);
    }
    printf("\n");
}

static void test_hard(void)
{
    for (size_t k = 0; k < N_VOCABS; k++) {
        vocab v;
        if (vocab_open(&v, VOCABS[k]))
            continue;
        char out[256];
        snprintf(out, sizeof out, "tests/data/vocab/ggml-vocab-%s.gguf.hard.out", VOCABS[k]);
        size_t total, passed = run_vectors(v.t, "tests/data/vocab/hard.inp", out, 0, &total,
                                           VOCABS[k]);
        printf("\n  harder inputs     %-15s %s %zu/%zu", VOCABS[k], lh_tok_kind(v.t), passed,
               total);
        CU_ASSERT(total >= 30);
        CU_ASSERT_EQUAL(passed, total);
        vocab_close(&v);
    }
    printf("\n");
}

/* Chat templates, special-token look-alikes and near misses, encoded with LH_TOK_SPECIAL, against
 * llama-tokenize with parse_special (its default). */
static void test_special_vectors(void)
{
    for (size_t k = 0; k < N_VOCABS; k++) {
        vocab v;
        if (vocab_open(&v, VOCABS[k]))
            continue;
        char out[256];
        snprintf(out, sizeof out, "tests/data/vocab/ggml-vocab-%s.gguf.special.out", VOCABS[k]);
        size_t total, passed = run_vectors(v.t, "tests/data/vocab/special.inp", out,
                                           LH_TOK_SPECIAL, &total, VOCABS[k]);
        printf("\n  special tokens    %-15s %s %zu/%zu", VOCABS[k], lh_tok_kind(v.t), passed,
               total);
        CU_ASSERT(total >= 12);
        CU_ASSERT_EQUAL(passed, total);
        vocab_close(&v);
    }
    printf("\n");
}

/* A megabyte of text (24 copies of stories-long.txt + hard.inp; 2 under ASan) per vocabulary:
 * the id count and an FNV-1a hash of the ids equal those of llama-tokenize's output
 * (tests/data/vocab/bulk.sums). */
static void test_bulk(void)
{
    size_t la, lb, ls;
    char *a = read_all("tests/data/stories-long.txt", &la);
    char *b = read_all("tests/data/vocab/hard.inp", &lb);
    char *sums = read_all("tests/data/vocab/bulk.sums", &ls);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sums);
    int big = !lh_test_asan();
    size_t copies = big ? 24 : 2, unit = la + lb, len = copies * unit;
    char *text = malloc(len);
    int32_t *ids = malloc((len + 2) * sizeof *ids);
    for (size_t c = 0; c < copies; c++) {
        memcpy(text + c * unit, a, la);
        memcpy(text + c * unit + la, b, lb);
    }
    size_t checked = 0;
    for (char *line = strtok(sums, "\n"); line; line = strtok(NULL, "\n")) {
        char name[64];
        unsigned long long n_small, n_big, h_small, h_big;
        if (line[0] == '#' ||
            sscanf(line, "%63s %llu %llx %llu %llx", name, &n_small, &h_small, &n_big, &h_big) != 5)
            continue;
        vocab v;
        if (vocab_open(&v, name))
            continue;
        size_t n;
        CU_ASSERT_EQUAL(lh_tok_encode(v.t, text, len, 0, ids, len + 2, &n), 0);
        uint64_t h = 0xcbf29ce484222325ull;
        for (size_t i = 0; i < n; i++)
            for (int k = 0; k < 4; k++)
                h = (h ^ ((uint32_t)ids[i] >> (8 * k) & 0xff)) * 0x100000001b3ull;
        int ok = n == (big ? n_big : n_small) && h == (big ? h_big : h_small);
        printf("\n  %zu bytes         %-15s %zu ids %s", len, name, n, ok ? "same" : "DIFFERENT");
        CU_ASSERT(ok);
        checked++;
        vocab_close(&v);
    }
    printf("\n");
    CU_ASSERT_EQUAL(checked, N_VOCABS);
    free(ids);
    free(text);
    free(a);
    free(b);
    free(sums);
}

/* encode to a malloc'd array with flags */
static int32_t *encf(const lh_tok *t, const char *s, size_t len, int flags, size_t *np)
{
    size_t cap = len + 8;
    int32_t *ids = malloc(cap * sizeof *ids);
    CU_ASSERT_EQUAL(lh_tok_encode(t, s, len, flags, ids, cap, np), 0);
    return ids;
}

/* The token whose decoded piece is exactly the byte b, or -1. */
static int32_t byte_token(const lh_tok *t, uint8_t b)
{
    for (size_t id = 0; id < lh_tok_n_vocab(t); id++) {
        size_t len;
        const char *p = lh_tok_piece(t, (int32_t)id, &len);
        if (len == 1 && (uint8_t)p[0] == b && lh_tok_raw(t, (int32_t)id)[0] != '<')
            return (int32_t)id;
    }
    return -1;
}

static void test_bpe_invalid_utf8(void)
{
    static const struct {
        const char *s;
        size_t len;
    } cases[] = {
        {"a\xff" "b", 3}, {"x\xe4\xb8", 3}, {"\xe4\xb8y", 3}, {"\xc0\xaf", 2},
        {"\xe0\x80\xaf", 3}, {"\xed\xa0\x80", 3}, {"\xf4\x90\x80\x80", 4}, {"\x80\x80 z", 4},
        {"!!\xfe!!", 5}, {"  \xff  ", 5}, {"12\xff" "34", 5}, {"\xff\xfe\xfd", 3},
    };
    /* vocabularies with a token for each of the 256 byte characters (StarCoder, MPT and Falcon
     * lack some of the bytes that never occur in UTF-8, and DeepSeek has them as user-defined
     * tokens, which decode to their text: those cannot round-trip such bytes) */
    const char *names[] = {"llama-bpe", "gpt-2", "qwen2"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        vocab v;
        if (vocab_open(&v, names[k]))
            continue;
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            size_t n, len;
            int32_t *ids = encf(v.t, cases[i].s, cases[i].len, 0, &n);
            char buf[16];
            CU_ASSERT_EQUAL(lh_tok_decode(v.t, ids, n, 0, buf, sizeof buf, &len), 0);
            CU_ASSERT(len == cases[i].len && memcmp(buf, cases[i].s, len) == 0);
            free(ids);
        }
        /* an invalid byte ends the word before it and comes out as its own byte's token; the
         * valid text around it tokenizes as it does alone */
        size_t n, n_a, n_b;
        int32_t *ids = encf(v.t, "Hello\xffworld", 11, 0, &n);
        int32_t *a = encf(v.t, "Hello", 5, 0, &n_a), *b = encf(v.t, "world", 5, 0, &n_b);
        int32_t ff = byte_token(v.t, 0xff);
        CU_ASSERT(ff >= 0);
        CU_ASSERT_EQUAL_FATAL(n, n_a + 1 + n_b);
        CU_ASSERT(memcmp(ids, a, n_a * sizeof *ids) == 0);
        CU_ASSERT_EQUAL(ids[n_a], ff);
        CU_ASSERT(memcmp(ids + n_a + 1, b, n_b * sizeof *ids) == 0);
        free(ids);
        free(a);
        free(b);
        /* all 256 bytes, one string, round-trip */
        char all[256], back[300];
        for (int c = 0; c < 256; c++)
            all[c] = (char)c;
        size_t len;
        ids = encf(v.t, all, 256, 0, &n);
        CU_ASSERT_EQUAL(lh_tok_decode(v.t, ids, n, 0, back, sizeof back, &len), 0);
        CU_ASSERT(len == 256 && memcmp(back, all, 256) == 0);
        free(ids);
        vocab_close(&v);
    }
}

/* Expected ids from llama.cpp's llama-tokenize (parse_special on, --no-bos) */
static void test_bpe_special(void)
{
    vocab v;
    if (vocab_open(&v, "llama-bpe") == 0) {
        const char *s = "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>";
        size_t n;
        int32_t *ids = encf(v.t, s, strlen(s), LH_TOK_SPECIAL, &n);
        const int32_t want[] = {128006, 882, 128007, 271, 13347, 0, 128009};
        CU_ASSERT_EQUAL(n, 7);
        CU_ASSERT(n == 7 && memcmp(ids, want, sizeof want) == 0);
        free(ids);
        /* without the flag the same text is plain text: no control token comes out */
        ids = encf(v.t, s, strlen(s), 0, &n);
        CU_ASSERT(n > 7);
        for (size_t i = 0; i < n; i++)
            CU_ASSERT(ids[i] < 128000);
        char buf[128];
        size_t len;
        CU_ASSERT_EQUAL(lh_tok_decode(v.t, ids, n, 0, buf, sizeof buf, &len), 0);
        CU_ASSERT_STRING_EQUAL(buf, s);
        free(ids);
        /* control tokens decode to nothing */
        const int32_t ctl[] = {128000, 13347, 128009};
        CU_ASSERT_EQUAL(lh_tok_decode(v.t, ctl, 3, 0, buf, sizeof buf, &len), 0);
        CU_ASSERT_STRING_EQUAL(buf, "Hi");
        vocab_close(&v);
    }
    if (vocab_open(&v, "qwen2") == 0) {
        /* user-defined tokens (<tool_call>, type 4) are cut out of the text even without the
         * flag, as llama.cpp does; control ones (<|im_start|>) only with it */
        const char *s = "<|im_start|>x<tool_call>y";
        size_t n;
        int32_t *ids = encf(v.t, s, strlen(s), 0, &n);
        const int32_t want0[] = {27, 91, 318, 4906, 91, 29, 87, 151657, 88};
        CU_ASSERT(n == 9 && memcmp(ids, want0, sizeof want0) == 0);
        free(ids);
        ids = encf(v.t, s, strlen(s), LH_TOK_SPECIAL, &n);
        const int32_t want1[] = {151644, 87, 151657, 88};
        CU_ASSERT(n == 4 && memcmp(ids, want1, sizeof want1) == 0);
        free(ids);
        vocab_close(&v);
    }
    if (vocab_open(&v, "llama-spm") == 0) {
        /* SentencePiece with the flag: the dummy prefix starts each text after a special token */
        const char *s = "<s>Hello</s>world";
        size_t n;
        int32_t *ids = encf(v.t, s, strlen(s), LH_TOK_SPECIAL, &n);
        const int32_t want[] = {1, 15043, 2, 3186};
        CU_ASSERT(n == 4 && memcmp(ids, want, sizeof want) == 0);
        free(ids);
        ids = encf(v.t, s, strlen(s), 0, &n);
        for (size_t i = 0; i < n; i++)
            CU_ASSERT(ids[i] != 1 && ids[i] != 2);
        free(ids);
        vocab_close(&v);
    }
}

static void test_bpe_bos_eos(void)
{
    vocab v;
    if (vocab_open(&v, "llama-bpe") == 0) {
        CU_ASSERT_STRING_EQUAL(lh_tok_kind(v.t), "bpe");
        CU_ASSERT_EQUAL(lh_tok_n_vocab(v.t), 128256);
        CU_ASSERT_EQUAL(lh_tok_bos(v.t), 128000);
        CU_ASSERT_EQUAL(lh_tok_eos(v.t), 128001);
        CU_ASSERT_EQUAL(lh_tok_add_bos(v.t), 1);
        CU_ASSERT_EQUAL(lh_tok_add_eos(v.t), 0);
        CU_ASSERT_EQUAL(lh_tok_add_space_prefix(v.t), 0);
        CU_ASSERT(lh_tok_is_eog(v.t, 128001) && lh_tok_is_eog(v.t, 128009));
        CU_ASSERT(!lh_tok_is_eog(v.t, 128000) && !lh_tok_is_eog(v.t, 13347) &&
                  !lh_tok_is_eog(v.t, -1));
        size_t n;
        int32_t *ids = encf(v.t, "Hi", 2, LH_TOK_BOS | LH_TOK_EOS, &n);
        CU_ASSERT(n == 3 && ids[0] == 128000 && ids[1] == 13347 && ids[2] == 128001);
        free(ids);
        /* no dummy prefix: a leading space is kept by decode even with strip_lead */
        ids = encf(v.t, " Hi", 3, LH_TOK_BOS, &n);
        char buf[16];
        size_t len;
        CU_ASSERT_EQUAL(lh_tok_decode(v.t, ids, n, 1, buf, sizeof buf, &len), 0);
        CU_ASSERT_STRING_EQUAL(buf, " Hi");
        free(ids);
        vocab_close(&v);
    }
    if (vocab_open(&v, "qwen2") == 0) {
        CU_ASSERT_EQUAL(lh_tok_add_bos(v.t), 0);
        CU_ASSERT(lh_tok_is_eog(v.t, 151643) && lh_tok_is_eog(v.t, 151645));
        vocab_close(&v);
    }
    if (vocab_open(&v, "gpt-2") == 0) {
        CU_ASSERT_EQUAL(lh_tok_add_bos(v.t), 0);
        CU_ASSERT_EQUAL(lh_tok_bos(v.t), 50256);
        vocab_close(&v);
    }
}

/* A hand-built byte-level vocabulary: tokens, merges, pre-tokenizer. */
static int load_bpe(const char *const *tokens, size_t n, const int32_t *types,
                    const char *const *merges, size_t n_merges, const char *pre, lh_tok **tp,
                    void **bufp, lh_gguf **gp)
{
    lh_gguf_writer *w = NULL;
    size_t size;
    lh_gguf_writer_new(&w);
    lh_gguf_writer_str(w, "tokenizer.ggml.model", "gpt2");
    if (pre)
        lh_gguf_writer_str(w, "tokenizer.ggml.pre", pre);
    lh_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", tokens, n);
    if (types)
        lh_gguf_writer_arr_i32(w, "tokenizer.ggml.token_type", types, n);
    if (merges)
        lh_gguf_writer_arr_str(w, "tokenizer.ggml.merges", merges, n_merges);
    lh_gguf_writer_finish(w, bufp, &size);
    lh_gguf_writer_free(w);
    *gp = NULL;
    *tp = NULL;
    int rc = lh_gguf_open_mem(gp, *bufp, size, "bpe-vocab");
    if (rc == 0)
        rc = lh_tok_load(tp, *gp);
    return rc;
}

static void test_bpe_merge_order(void)
{
    /* 'Ġ' (U+0120) is the space byte, 'Ā' (U+0100) the NUL byte */
    const char *tokens[] = {"a", "b", "c", "ab", "bc", "abc", "\xc4\xa0", "\xc4\xa0" "a", "aa",
                            "\xc4\x80", "<|endoftext|>"};
    const int32_t types[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3};
    const char *merges[] = {"b c", "a b", "a bc", "\xc4\xa0 a", "a a", "ab c"};
    lh_tok *t;
    lh_gguf *g;
    void *buf;
    CU_ASSERT_EQUAL_FATAL(load_bpe(tokens, 11, types, merges, 6, "gpt-2", &t, &buf, &g), 0);
    int32_t ids[16];
    size_t n;
    /* "abc": bc (rank 0) before ab (rank 1), then a+bc (rank 2) */
    CU_ASSERT_EQUAL(lh_tok_encode(t, "abc", 3, 0, ids, 16, &n), 0);
    CU_ASSERT(n == 1 && ids[0] == 5);
    /* "aaa": equal ranks, leftmost first -> [aa, a] */
    CU_ASSERT_EQUAL(lh_tok_encode(t, "aaa", 3, 0, ids, 16, &n), 0);
    CU_ASSERT(n == 2 && ids[0] == 8 && ids[1] == 0);
    /* " a b": the gpt-2 expression keeps the space with the letters; "Ġb" is no merge */
    CU_ASSERT_EQUAL(lh_tok_encode(t, " a b", 4, 0, ids, 16, &n), 0);
    CU_ASSERT(n == 3 && ids[0] == 7 && ids[1] == 6 && ids[2] == 1);
    /* a NUL byte is spelled with its alphabet character; a byte with no token is dropped */
    CU_ASSERT_EQUAL(lh_tok_encode(t, "a\0z", 3, 0, ids, 16, &n), 0);
    CU_ASSERT(n == 2 && ids[0] == 0 && ids[1] == 9);
    char out[16];
    size_t len;
    const int32_t dec[] = {7, 9, 10, 4};
    CU_ASSERT_EQUAL(lh_tok_decode(t, dec, 4, 0, out, sizeof out, &len), 0);
    CU_ASSERT(len == 5 && memcmp(out, " a\0bc", 5) == 0);
    /* the control token's text stays text without LH_TOK_SPECIAL */
    CU_ASSERT_EQUAL(lh_tok_encode(t, "<|endoftext|>", 13, 0, ids, 16, &n), 0);
    for (size_t i = 0; i < n && i < 16; i++)
        CU_ASSERT_NOT_EQUAL(ids[i], 10);
    CU_ASSERT_EQUAL(lh_tok_encode(t, "a<|endoftext|>", 14, LH_TOK_SPECIAL, ids, 16, &n), 0);
    CU_ASSERT(n == 2 && ids[0] == 0 && ids[1] == 10);
    lh_tok_free(t);
    lh_gguf_close(g);
    free(buf);
}

/* What tokenizer.ggml.pre selects besides the expressions: Llama 3's family takes a word that is
 * a token as it is (ignore_merges) and adds BOS by default; the others merge and do not. */
static void test_bpe_presets(void)
{
    const char *tokens[] = {"a", "b", "c", "ab", "abc", "1", "2", "3", "4", "12", "123"};
    const char *merges[] = {"a b", "1 2", "12 3"};
    struct {
        const char *pre;
        int add_bos;
        int32_t abc[2];       /* "abc" */
        size_t n_abc;
        int32_t digits[4];    /* "1234" */
        size_t n_digits;
    } cases[] = {
        {"llama-bpe", 1, {4}, 1, {10, 8}, 2},     /* \p{N}{1,3}: 123|4 */
        {"qwen2", 0, {3, 2}, 2, {5, 6, 7, 8}, 4}, /* \p{N}: one digit per word */
        {"gpt-2", 0, {3, 2}, 2, {10, 8}, 2},      /* \p{N}+ then merges: 123, 4 */
        {"smollm", 0, {3, 2}, 2, {5, 6, 7, 8}, 4},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        lh_tok *t;
        lh_gguf *g;
        void *buf;
        CU_ASSERT_EQUAL_FATAL(load_bpe(tokens, 11, NULL, merges, 3, cases[k].pre, &t, &buf, &g), 0);
        CU_ASSERT_EQUAL(lh_tok_add_bos(t), cases[k].add_bos);
        int32_t ids[8];
        size_t n;
        CU_ASSERT_EQUAL(lh_tok_encode(t, "abc", 3, 0, ids, 8, &n), 0);
        CU_ASSERT(n == cases[k].n_abc && memcmp(ids, cases[k].abc, n * sizeof *ids) == 0);
        CU_ASSERT_EQUAL(lh_tok_encode(t, "1234", 4, 0, ids, 8, &n), 0);
        CU_ASSERT(n == cases[k].n_digits && memcmp(ids, cases[k].digits, n * sizeof *ids) == 0);
        lh_tok_free(t);
        lh_gguf_close(g);
        free(buf);
    }
}

static int log_has(const char *path, const char *what)
{
    size_t len;
    char *s = read_all(path, &len);
    int found = s && strstr(s, what) != NULL;
    free(s);
    return found;
}

static void test_bpe_bad(void)
{
    const char *tokens[] = {"a", "b", "ab"};
    lh_tok *t;
    lh_gguf *g;
    void *buf;
    char log_path[] = "/tmp/lh-tok-log-XXXXXX";
    int fd = mkstemp(log_path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    int level = lh_log_get_level();
    lh_log_set_level(LH_LOG_WARN);
    CU_ASSERT_EQUAL_FATAL(lh_log_set_file(log_path), 0);
    const char *bad[][2] = {{"a b", "ab"}, {"a b", " b"}, {"a b", "a "}, {"a b", ""}};
    const char *what[] = {"merges[1] = 'ab'", "merges[1] = ' b'", "merges[1] = 'a '",
                          "merges[1] = ''"};
    for (size_t i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL(load_bpe(tokens, 3, NULL, bad[i], 2, "gpt-2", &t, &buf, &g), LH_E_FORMAT);
        CU_ASSERT_PTR_NULL(t);
        CU_ASSERT(log_has(log_path, what[i]));
        lh_gguf_close(g);
        free(buf);
    }
    const char *good[] = {"a b"};
    CU_ASSERT_EQUAL(load_bpe(tokens, 3, NULL, good, 1, "no-such-pre", &t, &buf, &g),
                    LH_E_UNSUPPORTED);
    CU_ASSERT(log_has(log_path, "pre-tokenizer 'no-such-pre'"));
    lh_gguf_close(g);
    free(buf);
    CU_ASSERT_EQUAL(load_bpe(tokens, 3, NULL, NULL, 0, "gpt-2", &t, &buf, &g), LH_E_FORMAT);
    CU_ASSERT(log_has(log_path, "tokenizer.ggml.merges is missing"));
    lh_gguf_close(g);
    free(buf);
    /* no pre-tokenizer at all: llama.cpp's 'default', with a warning */
    CU_ASSERT_EQUAL(load_bpe(tokens, 3, NULL, good, 1, NULL, &t, &buf, &g), 0);
    CU_ASSERT(log_has(log_path, "tokenizer.ggml.pre is missing"));
    int32_t ids[4];
    size_t n;
    CU_ASSERT_EQUAL(lh_tok_encode(t, "ab", 2, 0, ids, 4, &n), 0);
    CU_ASSERT(n == 1 && ids[0] == 2);
    lh_tok_free(t);
    lh_gguf_close(g);
    free(buf);
    lh_log_set_file(NULL);
    lh_log_set_level(level);
    unlink(log_path);
}

static void test_bpe_long_one(const char *name)
{
    vocab v;
    if (vocab_open(&v, name))
        return;
    size_t len = lh_test_asan() ? 100000 : 1000000;
    char *text = malloc(len);
    const char *fill[] = {"a", "7", " ", "\xe4\xb8\x96", "ab ", "\n"};
    for (size_t k = 0; k < sizeof fill / sizeof fill[0]; k++) {
        size_t fl = strlen(fill[k]), used = len - len % fl;
        for (size_t i = 0; i < used; i += fl)
            memcpy(text + i, fill[k], fl);
        size_t n;
        int32_t *ids = malloc((used + 2) * sizeof *ids);
        CU_ASSERT_EQUAL(lh_tok_encode(v.t, text, used, 0, ids, used + 2, &n), 0);
        CU_ASSERT(n > 0 && n <= used);
        char *back = malloc(used + 1);
        size_t bl;
        CU_ASSERT_EQUAL(lh_tok_decode(v.t, ids, n, 0, back, used + 1, &bl), 0);
        CU_ASSERT(bl == used && memcmp(back, text, used) == 0);
        free(back);
        free(ids);
    }
    free(text);
    vocab_close(&v);
}

/* Megabyte inputs, among them single words of 100k+ characters, must encode in n log n (an n^2
 * merge loop takes minutes here); the results decode back byte for byte.  GPT-4o's expression
 * backtracks per letter: a megabyte-long word needs more than PCRE2's default JIT stack (the
 * retry with a larger one; llama.cpp's std::regex overflows the C stack there). */
static void test_bpe_long(void)
{
    const char *names[] = {"llama-bpe", "gpt-4o"};
    for (size_t k = 0; k < 2; k++)
        test_bpe_long_one(names[k]);
}

void lh_test_tokenizer(void)
{
    CU_pSuite s = CU_add_suite("tokenizer", suite_init, suite_clean);
    CU_add_test(s, "vocabulary", test_vocab);
    CU_add_test(s, "golden ids", test_golden);
    CU_add_test(s, "golden story round-trip", test_golden_story);
    CU_add_test(s, "mixed scripts round-trip", test_roundtrip_mixed);
    CU_add_test(s, "invalid UTF-8", test_invalid_utf8);
    CU_add_test(s, "control tokens never from text", test_no_control_from_text);
    CU_add_test(s, "empty", test_empty);
    CU_add_test(s, "decode byte tokens", test_decode_bytes);
    CU_add_test(s, "capacity limits", test_limits);
    CU_add_test(s, "long prompt", test_long);
    CU_add_test(s, "same as the naive definition", test_against_naive);
    CU_add_test(s, "merge order", test_merge_order);
    CU_add_test(s, "add_bos / add_space_prefix off", test_flags);
    CU_add_test(s, "bad vocabularies", test_bad_vocab);

    s = CU_add_suite("bpe", NULL, NULL);
    CU_add_test(s, "llama.cpp test vectors, every vocabulary", test_vectors);
    CU_add_test(s, "harder inputs vs llama-tokenize", test_hard);
    CU_add_test(s, "special tokens vs llama-tokenize", test_special_vectors);
    CU_add_test(s, "a megabyte vs llama-tokenize", test_bulk);
    CU_add_test(s, "invalid UTF-8 round-trips", test_bpe_invalid_utf8);
    CU_add_test(s, "special tokens only when asked", test_bpe_special);
    CU_add_test(s, "BOS/EOS flags and metadata", test_bpe_bos_eos);
    CU_add_test(s, "merge order and byte alphabet", test_bpe_merge_order);
    CU_add_test(s, "pre-tokenizer presets: ignore_merges, BOS, digits", test_bpe_presets);
    CU_add_test(s, "malformed merges, unknown pre-tokenizer", test_bpe_bad);
    CU_add_test(s, "long text (n log n)", test_bpe_long);
}
