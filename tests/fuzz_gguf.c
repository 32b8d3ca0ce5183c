/* tests/fuzz_gguf — libFuzzer harness for the GGUF reader and the tokenizer (`make fuzz`).
 *
 * An input that starts with "GGUF" is opened as a file: every tensor and the common keys are
 * read, and when it carries a vocabulary, a tokenizer is loaded from it and used.  Any other
 * input is text for the bundled model's tokenizer (LH_MODEL, default models/stories260K.gguf):
 * decode(encode(text)) must give the text back byte for byte (texts holding U+2581 excepted:
 * SentencePiece turns it into a space by design).  Crashes, sanitizer reports and round-trip
 * failures abort.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer.h"

static lh_gguf *g_model;
static lh_tok *g_tok;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    lh_log_set_level(-1);
    const char *path = getenv("LH_MODEL");
    if (!path || !*path)
        path = "models/stories260K.gguf";
    if (lh_gguf_open(&g_model, path) != 0 || lh_tok_load(&g_tok, g_model) != 0) {
        fprintf(stderr, "fuzz_gguf: cannot load the tokenizer of %s\n", path);
        abort();
    }
    return 0;
}

static void use_tokenizer(const lh_tok *t, const char *text, size_t len, int check)
{
    size_t cap = 3 * len + 8, n, out_len;
    int32_t *ids = malloc(cap * sizeof *ids);
    char *buf = malloc(len + 8);
    if (!ids || !buf)
        goto out;
    if (lh_tok_encode(t, text, len, 1, ids, cap, &n) != 0)
        abort(); /* cap always suffices: at most one token per byte, plus the prefix and BOS */
    int rc = lh_tok_decode(t, ids, n, 1, buf, len + 8, &out_len);
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
            static const char text[] = "Once upon a time, caf\xc3\xa9 \xff <s>";
            use_tokenizer(t, text, sizeof text - 1, 0);
            lh_tok_free(t);
        }
        lh_gguf_close(g);
        return 0;
    }
    const char *text = (const char *)data;
    int check = memmem(text, size, "\xe2\x96\x81", 3) == NULL;
    use_tokenizer(g_tok, text, size, check);
    return 0;
}
