/* tests/fuzz_gguf — libFuzzer harness for the GGUF reader and the tokenizers (`make fuzz`).
 *
 * An input that starts with "GGUF" is opened as a file: every tensor and the common keys are
 * read, and when it carries a vocabulary (SentencePiece or byte-level BPE, merges and
 * pre-tokenizer included), a tokenizer is loaded from it and used.  Any other input is text:
 * its first byte chooses the tokenizer and the flags, the rest is encoded by
 *   - the bundled model's SentencePiece tokenizer (LH_MODEL, default models/stories260K.gguf),
 *   - the byte-level BPE vocabularies llama-bpe, qwen2 and gpt-2 (three pre-tokenizer shapes)
 *     from LH_FUZZ_VOCAB_DIR (default build/vocab, where `make` decompresses them),
 * with or without LH_TOK_SPECIAL.  Without it, decode(encode(text)) must give the text back byte
 * for byte (SentencePiece texts holding U+2581 excepted: it turns into a space by design; these
 * BPE vocabularies have all 256 byte characters).  Crashes, sanitizer reports and round-trip
 * failures abort.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer.h"

#define N_BPE 3
static lh_gguf *g_model, *g_bpe_gguf[N_BPE];
static lh_tok *g_tok, *g_bpe[N_BPE];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lh_tok *load(const char *path, lh_gguf **gp)
{
    lh_tok *t = NULL;
    if (lh_gguf_open(gp, path) != 0 || lh_tok_load(&t, *gp) != 0) {
        fprintf(stderr, "fuzz_gguf: cannot load the tokenizer of %s\n", path);
        abort();
    }
    return t;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    lh_log_set_level(-1);
    const char *path = getenv("LH_MODEL");
    g_tok = load(path && *path ? path : "models/stories260K.gguf", &g_model);
    static const char *const names[N_BPE] = {"llama-bpe", "qwen2", "gpt-2"};
    const char *dir = getenv("LH_FUZZ_VOCAB_DIR");
    for (int i = 0; i < N_BPE; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/ggml-vocab-%s.gguf", dir && *dir ? dir : "build/vocab", names[i]);
        g_bpe[i] = load(p, &g_bpe_gguf[i]);
    }
    return 0;
}

static void use_tokenizer(const lh_tok *t, const char *text, size_t len, int flags, int check)
{
    size_t cap = 3 * len + 8, n, out_len;
    int32_t *ids = malloc(cap * sizeof *ids);
    char *buf = malloc(len + 8);
    if (!ids || !buf)
        goto out;
    int rc = lh_tok_encode(t, text, len, flags, ids, cap, &n);
    if (rc != 0 || n > len + 2 + ((flags & LH_TOK_SPECIAL) ? len : 0))
        abort(); /* cap always suffices: at most one token per byte, plus the prefix and BOS */
    /* a smaller capacity gives the same count and the same first tokens */
    if (n > 1) {
        size_t n2;
        int32_t *few = malloc((n / 2) * sizeof *few);
        if (few && (lh_tok_encode(t, text, len, flags, few, n / 2, &n2) != LH_E_LIMIT ||
                    n2 != n || memcmp(few, ids, (n / 2) * sizeof *few) != 0))
            abort();
        free(few);
    }
    rc = lh_tok_decode(t, ids, n, 1, buf, len + 8, &out_len);
    if (check && (rc != 0 || out_len != len || memcmp(buf, text, len) != 0))
        abort();
    for (size_t i = 0; i < n; i++) {
        size_t plen;
        if (!lh_tok_piece(t, ids[i], &plen) || !lh_tok_raw(t, ids[i]))
            abort();
    }
out:
    free(ids);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size >= 4 && memcmp(data, "GGUF", 4) == 0) {
        lh_gguf *g = NULL;
        if (lh_gguf_open_mem(&g, data, size, "fuzz") != 0)
            return 0;
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < lh_gguf_n_tensors(g); i++) {
            const lh_gguf_tensor *t = lh_gguf_tensor_at(g, i);
            if (lh_gguf_find_tensor(g, t->name) != t)
                abort();
            if (t->size)
                sink ^= ((const uint8_t *)t->data)[0] ^ ((const uint8_t *)t->data)[t->size - 1];
        }
        (void)sink;
        uint32_t u;
        float f;
        int b;
        const char *s;
        size_t len, n;
        lh_gguf_vtype et;
        lh_gguf_get_u32(g, "general.alignment", &u);
        lh_gguf_get_f32(g, "llama.rope.freq_base", &f);
        lh_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b);
        lh_gguf_get_str(g, "general.architecture", &s, &len);
        if (lh_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) == 0 && n > 0) {
            lh_gguf_arr_str(g, "tokenizer.ggml.tokens", n - 1, &s, &len);
            lh_gguf_arr_f32(g, "tokenizer.ggml.scores", n - 1, &f);
            int32_t v;
            lh_gguf_arr_i32(g, "tokenizer.ggml.token_type", n - 1, &v);
        }
        lh_tok *t = NULL;
        if (lh_tok_load(&t, g) == 0) {
            static const char text[] =
                "Once upon a time, caf\xc3\xa9 \xff <s> <|endoftext|>  12345\n";
            use_tokenizer(t, text, sizeof text - 1, LH_TOK_BOS, 0);
            use_tokenizer(t, text, sizeof text - 1, LH_TOK_SPECIAL | LH_TOK_EOS, 0);
            lh_tok_free(t);
        }
        lh_gguf_close(g);
        return 0;
    }
    if (size == 0)
        return 0;
    /* first byte: bits 0-1 the tokenizer (SentencePiece, then the BPE ones), bit 2 special */
    int which = data[0] & 3, special = data[0] & 4;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    const lh_tok *t = which == 0 ? g_tok : g_bpe[which - 1];
    int check = !special && (which != 0 || memmem(text, len, "\xe2\x96\x81", 3) == NULL);
    /* SentencePiece: user-defined tokens (none in stories260K) would decode to their text */
    use_tokenizer(t, text, len, LH_TOK_BOS | (special ? LH_TOK_SPECIAL : 0), check);
    return 0;
}
