/* models/add-longheads-keys.c — how models/stories260K.gguf got its longheads.* keys (run once;
 * not part of the build).  Copies every key (same order, same types) and every tensor (same
 * order, same bytes) of IN into OUT with the repo's GGUF reader and writer, then adds
 * longheads.window and longheads.chunk_size:
 *
 *   make all
 *   cc -std=c11 -D_GNU_SOURCE -Ikernels -Iengine models/add-longheads-keys.c build/libcore.a \
 *      -fopenmp -ldnnl -lm -lpthread -o /tmp/add-longheads-keys
 *   /tmp/add-longheads-keys IN.gguf OUT.gguf 512 64
 *
 * Only the key types stories260K uses are handled (u32, f32, string, arrays of string/f32/i32);
 * any other key is an error, so nothing is dropped silently. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_write.h"

static const char *const keys[] = {
    "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
    "tokenizer.ggml.model", "general.architecture", "general.name",
    "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id", "tokenizer.ggml.seperator_token_id",
    "tokenizer.ggml.padding_token_id", "llama.context_length", "llama.embedding_length",
    "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
    "llama.block_count", "llama.rope.dimension_count", "llama.attention.layer_norm_rms_epsilon",
};

static int copy_key(const lh_gguf *g, lh_gguf_writer *w, const char *k)
{
    uint32_t u;
    float f;
    const char *s;
    size_t len, n;
    lh_gguf_vtype et;
    if (lh_gguf_get_arr(g, k, &et, &n) == 0) {
        int rc = 0;
        if (et == LH_GGUF_STRING) {
            char **v = calloc(n, sizeof *v);
            for (size_t i = 0; i < n && !rc; i++) {
                rc = lh_gguf_arr_str(g, k, i, &s, &len);
                if (!rc && (v[i] = strndup(s, len)) && strlen(v[i]) != len)
                    rc = 1; /* an embedded NUL: the writer takes C strings */
            }
            if (!rc)
                rc = lh_gguf_writer_arr_str(w, k, (const char *const *)v, n);
            for (size_t i = 0; i < n; i++)
                free(v[i]);
            free(v);
        } else if (et == LH_GGUF_FLOAT32) {
            float *v = malloc(n * sizeof *v);
            for (size_t i = 0; i < n && !rc; i++)
                rc = lh_gguf_arr_f32(g, k, i, &v[i]);
            if (!rc)
                rc = lh_gguf_writer_arr_f32(w, k, v, n);
            free(v);
        } else if (et == LH_GGUF_INT32) {
            int32_t *v = malloc(n * sizeof *v);
            for (size_t i = 0; i < n && !rc; i++)
                rc = lh_gguf_arr_i32(g, k, i, &v[i]);
            if (!rc)
                rc = lh_gguf_writer_arr_i32(w, k, v, n);
            free(v);
        } else {
            rc = 1;
        }
        return rc;
    }
    if (lh_gguf_get_str(g, k, &s, &len) == 0) {
        char *v = strndup(s, len);
        int rc = lh_gguf_writer_str(w, k, v);
        free(v);
        return rc;
    }
    if (lh_gguf_get_u32(g, k, &u) == 0)
        return lh_gguf_writer_u32(w, k, u);
    if (lh_gguf_get_f32(g, k, &f) == 0)
        return lh_gguf_writer_f32(w, k, f);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: add-longheads-keys IN OUT WINDOW CHUNK\n");
        return 2;
    }
    lh_gguf *g;
    lh_gguf_writer *w;
    if (lh_gguf_open(&g, argv[1]) || lh_gguf_writer_new(&w))
        return 1;
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        if (copy_key(g, w, keys[i])) {
            fprintf(stderr, "cannot copy key %s\n", keys[i]);
            return 1;
        }
    }
    if (lh_gguf_writer_u32(w, "longheads.window", (uint32_t)atoi(argv[3])) ||
        lh_gguf_writer_u32(w, "longheads.chunk_size", (uint32_t)atoi(argv[4])))
        return 1;
    for (size_t i = 0; i < lh_gguf_n_tensors(g); i++) {
        const lh_gguf_tensor *t = lh_gguf_tensor_at(g, i);
        if (lh_gguf_writer_tensor(w, t->name, (lh_type)t->type, t->n_dims, t->ne, t->data))
            return 1;
    }
    int rc = lh_gguf_writer_save(w, argv[2]);
    lh_gguf_writer_free(w);
    lh_gguf_close(g);
    return rc ? 1 : 0;
}
