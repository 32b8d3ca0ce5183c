/* tools/mkmodel — longheads-mkmodel: writes a LLaMA GGUF with random weights N(0, 0.02), for
 * benchmarks (the figures in ../reference use the same shapes).
 *
 *   longheads-mkmodel -o FILE [--shape tiny|small|1b]
 *                     [--type f32|f16|bf16|q4_0|q4_1|q5_0|q5_1|q8_0|q2_k|q3_k|q4_k|q5_k|q6_k]
 *                     [--dim D --ff F --layers N --heads H --kv-heads K --vocab V]
 *                     [--ctx 131072] [--seed S]
 *
 * tiny = stories260K's shape, small = stories110M's, 1b = TinyLlama-1.1B's.  The vocabulary is a
 * valid llama/SentencePiece one: <unk> <s> </s>, the 256 byte tokens, then synthetic pieces
 * ("▁a", "▁b", ..., "▁ba", ...) with falling scores; norms are 1, matrices in --type (quantised
 * with ggml's reference quantisers, so the bytes are those llama-quantize would write from the
 * same F32 weights).  K-quants need dim and ff multiples of 256 (small and 1b; not tiny).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gguf_write.h"
#include "params.h"
#include "quant.h"

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static double uniform(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return ((rng * 0x2545f4914f6cdd1dULL) >> 11) * (1.0 / 9007199254740992.0);
}

static float normal(float sd)
{
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300)
        u1 = 1e-300;
    return (float)(sd * sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
}

/* Adds a (n_out, n_in) matrix [n_in, n_out] of random weights in type t. */
static int add_matrix(lh_gguf_writer *w, const char *name, lh_type t, size_t n_in, size_t n_out)
{
    size_t row = lh_type_row_size(t, n_in);
    char *data = malloc(row * n_out);
    float *tmp = malloc(n_in * sizeof *tmp);
    int rc = -1;
    if (!data || !tmp)
        goto out;
    for (size_t r = 0; r < n_out; r++) {
        for (size_t i = 0; i < n_in; i++)
            tmp[i] = normal(0.02f);
        lh_quant_row(t, tmp, data + r * row, n_in);
    }
    uint64_t ne[2] = { n_in, n_out };
    rc = lh_gguf_writer_tensor(w, name, t, 2, ne, data);
out:
    free(data);
    free(tmp);
    return rc;
}

static int add_ones(lh_gguf_writer *w, const char *name, size_t n)
{
    float *v = malloc(n * sizeof *v);
    if (!v)
        return -1;
    for (size_t i = 0; i < n; i++)
        v[i] = 1.0f;
    uint64_t ne[1] = { n };
    int rc = lh_gguf_writer_tensor(w, name, LH_TYPE_F32, 1, ne, v);
    free(v);
    return rc;
}

static int add_vocab(lh_gguf_writer *w, size_t n_vocab)
{
    char **toks = calloc(n_vocab, sizeof *toks);
    float *scores = calloc(n_vocab, sizeof *scores);
    int32_t *types = calloc(n_vocab, sizeof *types);
    int rc = -1;
    if (!toks || !scores || !types)
        goto out;
    for (size_t i = 0; i < n_vocab; i++) {
        char buf[32];
        if (i == 0)
            snprintf(buf, sizeof buf, "<unk>"), types[i] = 2;
        else if (i == 1)
            snprintf(buf, sizeof buf, "<s>"), types[i] = 3;
        else if (i == 2)
            snprintf(buf, sizeof buf, "</s>"), types[i] = 3;
        else if (i < 259)
            snprintf(buf, sizeof buf, "<0x%02X>", (unsigned)(i - 3)), types[i] = 6;
        else {
            /* "▁" + base-26 letters of (i - 259) */
            size_t k = i - 259, n = 0;
            char letters[16];
            do {
                letters[n++] = (char)('a' + k % 26);
                k /= 26;
            } while (k && n < sizeof letters);
            memcpy(buf, "\xe2\x96\x81", 3);
            for (size_t j = 0; j < n; j++)
                buf[3 + j] = letters[n - 1 - j];
            buf[3 + n] = 0;
            types[i] = 1;
            scores[i] = -(float)i;
        }
        toks[i] = strdup(buf);
        if (!toks[i])
            goto out;
    }
    rc = lh_gguf_writer_str(w, "tokenizer.ggml.model", "llama") ||
         lh_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, n_vocab) ||
         lh_gguf_writer_arr_f32(w, "tokenizer.ggml.scores", scores, n_vocab) ||
         lh_gguf_writer_arr_i32(w, "tokenizer.ggml.token_type", types, n_vocab) ||
         lh_gguf_writer_u32(w, "tokenizer.ggml.bos_token_id", 1) ||
         lh_gguf_writer_u32(w, "tokenizer.ggml.eos_token_id", 2) ||
         lh_gguf_writer_u32(w, "tokenizer.ggml.unknown_token_id", 0);
out:
    for (size_t i = 0; toks && i < n_vocab; i++)
        free(toks[i]);
    free(toks);
    free(scores);
    free(types);
    return rc;
}

int main(int argc, char **argv)
{
    const char *out = NULL, *shape = "tiny";
    lh_type type = LH_TYPE_F32;
    size_t dim = 0, ff = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0, ctx = 131072, seed = 1;
    for (int i = 1; i + 1 < argc + 1; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "longheads-mkmodel: %s needs a value\n", a);
            return 2;
        }
        i++;
        int bad = 0;
        if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--shape")) shape = v;
        else if (!strcmp(a, "--type")) {
            /* any type this build reads, by its ggml name in either case (q4_k, Q4_K, bf16) */
            bad = 1;
            for (uint32_t t = 0; t < 64 && bad; t++)
                if (lh_type_known(t) && !strcasecmp(v, lh_type_name(t)))
                    type = (lh_type)t, bad = 0;
        }
        else if (!strcmp(a, "--dim")) bad = lh_params_parse_size(v, 8, 65536, &dim);
        else if (!strcmp(a, "--ff")) bad = lh_params_parse_size(v, 1, 262144, &ff);
        else if (!strcmp(a, "--layers")) bad = lh_params_parse_size(v, 1, 512, &layers);
        else if (!strcmp(a, "--heads")) bad = lh_params_parse_size(v, 1, 1024, &heads);
        else if (!strcmp(a, "--kv-heads")) bad = lh_params_parse_size(v, 1, 1024, &kv_heads);
        else if (!strcmp(a, "--vocab")) bad = lh_params_parse_size(v, 260, 1u << 20, &vocab);
        else if (!strcmp(a, "--ctx")) bad = lh_params_parse_size(v, 1, 1u << 24, &ctx);
        else if (!strcmp(a, "--seed")) bad = lh_params_parse_size(v, 0, SIZE_MAX, &seed);
        else bad = 1;
        if (bad) {
            fprintf(stderr, "longheads-mkmodel: bad option %s %s\n", a, v);
            return 2;
        }
    }
    size_t sd = 64, sf = 172, sl = 5, sh = 8, sk = 4, sv = 512;
    if (!strcmp(shape, "small"))
        sd = 768, sf = 2048, sl = 12, sh = 12, sk = 12, sv = 32000;
    else if (!strcmp(shape, "1b"))
        sd = 2048, sf = 5632, sl = 22, sh = 32, sk = 4, sv = 32000;
    else if (strcmp(shape, "tiny")) {
        fprintf(stderr, "longheads-mkmodel: unknown shape %s (tiny, small, 1b)\n", shape);
        return 2;
    }
    dim = dim ? dim : sd, ff = ff ? ff : sf, layers = layers ? layers : sl;
    heads = heads ? heads : sh, kv_heads = kv_heads ? kv_heads : sk, vocab = vocab ? vocab : sv;
    if (!out || dim % heads || heads % kv_heads || dim % lh_type_block(type) || ff % lh_type_block(type)) {
        fprintf(stderr, "usage: longheads-mkmodel -o FILE [--shape tiny|small|1b] [--type f32|f16|bf16|q4_0|q4_1|\n"
                        "       q5_0|q5_1|q8_0|q2_k|q3_k|q4_k|q5_k|q6_k] ...\n"
                        "(dim must divide by heads, heads by kv-heads, dim and ff by the type's block)\n");
        return 2;
    }
    rng ^= seed * 0xbf58476d1ce4e5b9ULL;
    size_t hd = dim / heads;
    lh_gguf_writer *w = NULL;
    int rc = lh_gguf_writer_new(&w);
    rc = rc || lh_gguf_writer_str(w, "general.architecture", "llama") ||
         lh_gguf_writer_str(w, "general.name", "longheads random benchmark model") ||
         lh_gguf_writer_u32(w, "llama.context_length", (uint32_t)ctx) ||
         lh_gguf_writer_u32(w, "llama.embedding_length", (uint32_t)dim) ||
         lh_gguf_writer_u32(w, "llama.feed_forward_length", (uint32_t)ff) ||
         lh_gguf_writer_u32(w, "llama.block_count", (uint32_t)layers) ||
         lh_gguf_writer_u32(w, "llama.attention.head_count", (uint32_t)heads) ||
         lh_gguf_writer_u32(w, "llama.attention.head_count_kv", (uint32_t)kv_heads) ||
         lh_gguf_writer_u32(w, "llama.rope.dimension_count", (uint32_t)hd) ||
         lh_gguf_writer_f32(w, "llama.rope.freq_base", 10000.0f) ||
         lh_gguf_writer_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f) ||
         add_vocab(w, vocab) ||
         add_matrix(w, "token_embd.weight", type, dim, vocab) ||
         add_ones(w, "output_norm.weight", dim) ||
         add_matrix(w, "output.weight", type, dim, vocab);
    for (size_t l = 0; !rc && l < layers; l++) {
        char n[64];
#define N(s) (snprintf(n, sizeof n, "blk.%zu." s, l), n)
        rc = add_ones(w, N("attn_norm.weight"), dim) || add_ones(w, N("ffn_norm.weight"), dim) ||
             add_matrix(w, N("attn_q.weight"), type, dim, heads * hd) ||
             add_matrix(w, N("attn_k.weight"), type, dim, kv_heads * hd) ||
             add_matrix(w, N("attn_v.weight"), type, dim, kv_heads * hd) ||
             add_matrix(w, N("attn_output.weight"), type, heads * hd, dim) ||
             add_matrix(w, N("ffn_gate.weight"), type, dim, ff) ||
             add_matrix(w, N("ffn_up.weight"), type, dim, ff) ||
             add_matrix(w, N("ffn_down.weight"), type, ff, dim);
#undef N
    }
    rc = rc || lh_gguf_writer_save(w, out);
    lh_gguf_writer_free(w);
    if (rc) {
        fprintf(stderr, "longheads-mkmodel: could not write %s\n", out);
        return 1;
    }
    fprintf(stderr, "longheads-mkmodel: wrote %s (%s, %s)\n", out, shape, lh_type_name(type));
    return 0;
}
