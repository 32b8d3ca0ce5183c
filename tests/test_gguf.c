/* tests/test_gguf — the bundled model opens with the expected layout; the writer round-trips
 * every KV and tensor type; malformed files built in memory are refused cleanly (each case is
 * first shown to open when the defect is absent, so a refusal is the check's doing). */
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf_write.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static void *read_all(const char *path, size_t *sizep)
{
    *sizep = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *sizep = (size_t)n;
    return buf;
}

/* A tiny byte builder for hand-made (possibly malformed) files. */
typedef struct {
    uint8_t b[4096];
    size_t n;
} raw;

static void r_le(raw *r, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        r->b[r->n++] = (uint8_t)(v >> (8 * i));
}

static void r_str(raw *r, const char *s)
{
    size_t len = strlen(s);
    r_le(r, len, 8);
    memcpy(r->b + r->n, s, len);
    r->n += len;
}

static void r_pad(raw *r, size_t a)
{
    while (r->n % a)
        r->b[r->n++] = 0;
}

/* Knobs for the one hand-made file; defaults give a valid file with one KV and two F32 tensors. */
typedef struct {
    uint32_t version;
    uint64_t n_tensors, n_kv;   /* 0 = the real counts */
    uint32_t n_dims0;           /* n_dims of tensor "a" */
    uint64_t ne0[5];            /* its dims */
    uint32_t type0;
    uint64_t off1;              /* offset of tensor "b" */
    const char *name1;
    uint64_t key_len;           /* 0 = the real length of the key */
    size_t data_bytes;          /* bytes of tensor data written */
} spec;

static spec spec_default(void)
{
    spec s = {.version = 3, .n_dims0 = 2, .ne0 = {4, 2, 1, 1, 1}, .type0 = LH_TYPE_F32,
              .off1 = 32, .name1 = "b", .data_bytes = 64};
    return s;
}

/* header, KV "general.name" = "t", tensor "a" (ne0, type0) at offset 0, tensor name1 (F32 [8])
 * at off1, padding to 32, data_bytes of data. */
static void build(raw *r, const spec *s)
{
    r->n = 0;
    memcpy(r->b, "GGUF", 4);
    r->n = 4;
    r_le(r, s->version, 4);
    r_le(r, s->n_tensors ? s->n_tensors : 2, 8);
    r_le(r, s->n_kv ? s->n_kv : 1, 8);
    r_le(r, s->key_len ? s->key_len : 12, 8);
    memcpy(r->b + r->n, "general.name", 12);
    r->n += 12;
    r_le(r, LH_GGUF_STRING, 4);
    r_str(r, "t");
    r_str(r, "a");
    r_le(r, s->n_dims0, 4);
    for (uint32_t d = 0; d < s->n_dims0; d++)
        r_le(r, s->ne0[d], 8);
    r_le(r, s->type0, 4);
    r_le(r, 0, 8);
    r_str(r, s->name1);
    r_le(r, 1, 4);
    r_le(r, 8, 8);
    r_le(r, LH_TYPE_F32, 4);
    r_le(r, s->off1, 8);
    r_pad(r, 32);
    for (size_t i = 0; i < s->data_bytes; i++)
        r->b[r->n++] = (uint8_t)i;
}

static int open_spec(const spec *s)
{
    raw r;
    build(&r, s);
    lh_gguf *g = NULL;
    int rc = lh_gguf_open_mem(&g, r.b, r.n, "spec");
    if (rc == 0) {
        CU_ASSERT_PTR_NOT_NULL(g);
    } else {
        CU_ASSERT_PTR_NULL(g);
    }
    lh_gguf_close(g);
    return rc;
}

/* ---- the bundled model ------------------------------------------------------------------ */

static void test_model(void)
{
    lh_gguf *g = NULL;
    int rc = lh_gguf_open(&g, lh_test_model_path());
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(lh_gguf_version(g), 3);
    CU_ASSERT_EQUAL(lh_gguf_n_tensors(g), 48);
    for (size_t i = 0; i < lh_gguf_n_tensors(g); i++)
        CU_ASSERT_EQUAL(lh_gguf_tensor_at(g, i)->type, LH_TYPE_F32);
    CU_ASSERT_PTR_NULL(lh_gguf_tensor_at(g, 48));
    uint32_t u = 0;
    CU_ASSERT_EQUAL(lh_gguf_get_u32(g, "llama.embedding_length", &u), 0);
    CU_ASSERT_EQUAL(u, 64);
    CU_ASSERT_EQUAL(lh_gguf_get_u32(g, "no.such.key", &u), LH_E_NOTFOUND);
    const char *s;
    size_t len;
    CU_ASSERT_EQUAL(lh_gguf_get_str(g, "general.architecture", &s, &len), 0);
    CU_ASSERT(len == 5 && memcmp(s, "llama", 5) == 0);
    CU_ASSERT_EQUAL(lh_gguf_get_u32(g, "general.architecture", &u), LH_E_FORMAT);
    const lh_gguf_tensor *t = lh_gguf_find_tensor(g, "token_embd.weight");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(t->n_dims, 2);
    CU_ASSERT(t->ne[0] == 64 && t->ne[1] == 512 && t->ne[2] == 1 && t->ne[3] == 1);
    CU_ASSERT_EQUAL(t->n_elems, 64 * 512);
    CU_ASSERT_EQUAL(t->size, 64 * 512 * 4);
    CU_ASSERT_PTR_NULL(lh_gguf_find_tensor(g, "token_embd"));
    lh_gguf_vtype et;
    size_t n;
    CU_ASSERT_EQUAL(lh_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n), 0);
    CU_ASSERT(et == LH_GGUF_STRING && n == 512);
    CU_ASSERT_EQUAL(lh_gguf_arr_str(g, "tokenizer.ggml.tokens", 1, &s, &len), 0);
    CU_ASSERT(len == 3 && memcmp(s, "<s>", 3) == 0);
    CU_ASSERT_EQUAL(lh_gguf_arr_str(g, "tokenizer.ggml.tokens", 512, &s, &len), LH_E_FORMAT);
    int32_t tt;
    CU_ASSERT_EQUAL(lh_gguf_arr_i32(g, "tokenizer.ggml.token_type", 3, &tt), 0);
    CU_ASSERT_EQUAL(tt, 6); /* <0x00> is a byte token */
    lh_gguf_close(g);

    /* The same bytes in memory: the tensor data section starts at byte 14240 (14176 before the
     * two longheads.* keys were added). */
    size_t size;
    uint8_t *buf = read_all(lh_test_model_path(), &size);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    CU_ASSERT_EQUAL(lh_gguf_open_mem(&g, buf, size, "model-in-memory"), 0);
    if (g) {
        t = lh_gguf_tensor_at(g, 0);
        CU_ASSERT_EQUAL((const uint8_t *)t->data - buf, 14240);
        t = lh_gguf_find_tensor(g, "token_embd.weight");
        CU_ASSERT((const uint8_t *)t->data >= buf + 14240);
        CU_ASSERT((const uint8_t *)t->data + t->size <= buf + size);
    }
    lh_gguf_close(g);
    free(buf);
}

static void test_open_errors(void)
{
    lh_gguf *g = (lh_gguf *)1;
    CU_ASSERT(lh_gguf_open(&g, "/nonexistent/dir/x.gguf") < 0);
    CU_ASSERT_PTR_NULL(g);
    CU_ASSERT(lh_gguf_open(&g, "/") < 0);
    CU_ASSERT_EQUAL(lh_gguf_open_mem(&g, NULL, 0, "empty"), LH_E_FORMAT);
    lh_gguf_close(NULL);
}

/* ---- writer round-trip ------------------------------------------------------------------- */

static void test_writer_roundtrip(void)
{
    lh_gguf_writer *w = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_gguf_writer_new(&w), 0);
    const char *strs[] = {"", "a", "\xe2\x96\x81hello", "<0xFF>"};
    const float fs[] = {1.5f, -0.0f, 3.25e-7f, -65504.0f};
    const int32_t is[] = {0, -1, INT32_MAX, INT32_MIN, 6};
    CU_ASSERT_EQUAL(lh_gguf_writer_u32(w, "k.u32", 0xdeadbeefu), 0);
    CU_ASSERT_EQUAL(lh_gguf_writer_f32(w, "k.f32", -2.75f), 0);
    CU_ASSERT_EQUAL(lh_gguf_writer_bool(w, "k.true", 7), 0);
    CU_ASSERT_EQUAL(lh_gguf_writer_bool(w, "k.false", 0), 0);
    CU_ASSERT_EQUAL(lh_gguf_writer_str(w, "k.str", "hello, world"), 0);
    CU_ASSERT_EQUAL(lh_gguf_writer_str(w, "k.empty", ""), 0);
    CU_ASSERT_EQUAL(lh_gguf_writer_arr_str(w, "k.astr", strs, 4), 0);
    CU_ASSERT_EQUAL(lh_gguf_writer_arr_f32(w, "k.af32", fs, 4), 0);
    CU_ASSERT_EQUAL(lh_gguf_writer_arr_i32(w, "k.ai32", is, 5), 0);
    CU_ASSERT_EQUAL(lh_gguf_writer_arr_i32(w, "k.anone", NULL, 0), 0);
    CU_ASSERT_EQUAL(lh_gguf_writer_u32(w, "", 1), LH_E_FORMAT);

    /* tensors: odd shapes, every type, distinct bytes */
    enum { NT = 4 };
    const lh_type types[NT] = {LH_TYPE_F32, LH_TYPE_F16, LH_TYPE_BF16, LH_TYPE_Q8_0};
    const char *names[NT] = {"t.f32", "t.f16", "t.bf16", "t.q8_0"};
    const uint64_t ne[NT][3] = {{3, 5, 1}, {17, 1, 1}, {1, 3, 7}, {64, 3, 1}};
    const uint32_t nd[NT] = {2, 1, 3, 2};
    void *data[NT];
    size_t sizes[NT];
    for (int i = 0; i < NT; i++) {
        sizes[i] = lh_type_row_size(types[i], ne[i][0]) * ne[i][1] * ne[i][2];
        data[i] = malloc(sizes[i]);
        for (size_t j = 0; j < sizes[i]; j++)
            ((uint8_t *)data[i])[j] = (uint8_t)(j * 7 + i);
        CU_ASSERT_EQUAL(lh_gguf_writer_tensor(w, names[i], types[i], nd[i], ne[i], data[i]), 0);
    }
    CU_ASSERT_EQUAL(sizes[3], 2 * 34 * 3);
    /* the writer refuses what the reader would refuse */
    CU_ASSERT_EQUAL(lh_gguf_writer_tensor(w, "t.f32", LH_TYPE_F32, 1, ne[0], data[0]), LH_E_FORMAT);
    const uint64_t bad_q8[1] = {33};
    CU_ASSERT_EQUAL(lh_gguf_writer_tensor(w, "t.bad", LH_TYPE_Q8_0, 1, bad_q8, data[3]), LH_E_FORMAT);
    CU_ASSERT_EQUAL(lh_gguf_writer_tensor(w, "t.bad", (lh_type)23, 1, ne[0], data[0]), LH_E_FORMAT);

    void *buf = NULL;
    size_t size = 0;
    CU_ASSERT_EQUAL_FATAL(lh_gguf_writer_finish(w, &buf, &size), 0);
    lh_gguf_writer_free(w);
    lh_gguf_writer_free(NULL);

    lh_gguf *g = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_gguf_open_mem(&g, buf, size, "roundtrip"), 0);
    CU_ASSERT_EQUAL(lh_gguf_version(g), 3);
    uint32_t u;
    float f;
    int b;
    const char *s;
    size_t len, n;
    lh_gguf_vtype et;
    CU_ASSERT(lh_gguf_get_u32(g, "k.u32", &u) == 0 && u == 0xdeadbeefu);
    CU_ASSERT(lh_gguf_get_f32(g, "k.f32", &f) == 0 && f == -2.75f);
    CU_ASSERT(lh_gguf_get_bool(g, "k.true", &b) == 0 && b == 1);
    CU_ASSERT(lh_gguf_get_bool(g, "k.false", &b) == 0 && b == 0);
    CU_ASSERT(lh_gguf_get_str(g, "k.str", &s, &len) == 0 && len == 12 && memcmp(s, "hello, world", 12) == 0);
    CU_ASSERT(lh_gguf_get_str(g, "k.empty", &s, &len) == 0 && len == 0);
    CU_ASSERT_EQUAL(lh_gguf_get_f32(g, "k.u32", &f), LH_E_FORMAT);
    CU_ASSERT_EQUAL(lh_gguf_get_bool(g, "k.str", &b), LH_E_FORMAT);
    CU_ASSERT_EQUAL(lh_gguf_get_str(g, "k.u32", &s, &len), LH_E_FORMAT);
    CU_ASSERT(lh_gguf_get_arr(g, "k.astr", &et, &n) == 0 && et == LH_GGUF_STRING && n == 4);
    for (size_t i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL(lh_gguf_arr_str(g, "k.astr", i, &s, &len), 0);
        CU_ASSERT(len == strlen(strs[i]) && memcmp(s, strs[i], len) == 0);
    }
    CU_ASSERT(lh_gguf_get_arr(g, "k.af32", &et, &n) == 0 && et == LH_GGUF_FLOAT32 && n == 4);
    for (size_t i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL(lh_gguf_arr_f32(g, "k.af32", i, &f), 0);
        CU_ASSERT(memcmp(&f, &fs[i], 4) == 0);
    }
    CU_ASSERT(lh_gguf_get_arr(g, "k.ai32", &et, &n) == 0 && et == LH_GGUF_INT32 && n == 5);
    for (size_t i = 0; i < 5; i++) {
        int32_t v;
        CU_ASSERT(lh_gguf_arr_i32(g, "k.ai32", i, &v) == 0 && v == is[i]);
    }
    CU_ASSERT_EQUAL(lh_gguf_arr_f32(g, "k.ai32", 0, &f), LH_E_FORMAT);
    CU_ASSERT_EQUAL(lh_gguf_arr_str(g, "k.af32", 0, &s, &len), LH_E_FORMAT);
    CU_ASSERT(lh_gguf_get_arr(g, "k.anone", &et, &n) == 0 && n == 0);
    int32_t iv;
    CU_ASSERT_EQUAL(lh_gguf_arr_i32(g, "k.anone", 0, &iv), LH_E_FORMAT);
    CU_ASSERT_EQUAL(lh_gguf_arr_i32(g, "k.missing", 0, &iv), LH_E_NOTFOUND);

    CU_ASSERT_EQUAL(lh_gguf_n_tensors(g), NT);
    for (int i = 0; i < NT; i++) {
        const lh_gguf_tensor *t = lh_gguf_find_tensor(g, names[i]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(t);
        CU_ASSERT_PTR_EQUAL(t, lh_gguf_tensor_at(g, (size_t)i));
        CU_ASSERT_STRING_EQUAL(t->name, names[i]);
        CU_ASSERT_EQUAL(t->type, (uint32_t)types[i]);
        CU_ASSERT_EQUAL(t->n_dims, nd[i]);
        CU_ASSERT(t->ne[0] == ne[i][0] && t->ne[1] == ne[i][1] && t->ne[2] == ne[i][2] && t->ne[3] == 1);
        CU_ASSERT_EQUAL(t->n_elems, ne[i][0] * ne[i][1] * ne[i][2]);
        CU_ASSERT_EQUAL(t->size, sizes[i]);
        CU_ASSERT_EQUAL(((const uint8_t *)t->data - (const uint8_t *)buf) % 32, 0);
        CU_ASSERT(memcmp(t->data, data[i], sizes[i]) == 0);
        free(data[i]);
    }
    /* the file ends with the last tensor's padding to 32 */
    const lh_gguf_tensor *last = lh_gguf_tensor_at(g, NT - 1);
    size_t end = (size_t)((const uint8_t *)last->data + last->size - (const uint8_t *)buf);
    CU_ASSERT(end < size && size == (end + 31) / 32 * 32);
    lh_gguf_close(g);

    /* every truncation of this valid file that cuts into its contents is refused cleanly (ASan
     * checks the reads; each copy is exactly cut bytes long); cutting only trailing padding
     * leaves a valid file */
    for (size_t cut = 0; cut < size; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, buf, cut);
        g = (lh_gguf *)1;
        int rc = lh_gguf_open_mem(&g, copy, cut, "truncated");
        if (cut < end) {
            CU_ASSERT_EQUAL(rc, LH_E_FORMAT);
            CU_ASSERT_PTR_NULL(g);
        } else {
            CU_ASSERT_EQUAL(rc, 0);
        }
        if (rc == 0) {
            lh_gguf_close(g);
        }
        free(copy);
    }
    free(buf);
}

/* A quantised tensor one byte short is refused, and the one log line names the tensor and its
 * byte offset; every quantised type round-trips through the writer and reader. */
static void test_quant_truncated(void)
{
    static const lh_type ts[] = {LH_TYPE_Q4_0, LH_TYPE_Q4_1, LH_TYPE_Q5_0, LH_TYPE_Q5_1,
                                 LH_TYPE_Q2_K, LH_TYPE_Q3_K, LH_TYPE_Q4_K, LH_TYPE_Q5_K,
                                 LH_TYPE_Q6_K, LH_TYPE_IQ4_NL};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        lh_gguf_writer *w = NULL;
        CU_ASSERT_EQUAL_FATAL(lh_gguf_writer_new(&w), 0);
        const uint64_t ne[2] = {512, 3};
        size_t size = lh_type_row_size(ts[i], 512) * 3;
        uint8_t *data = malloc(size);
        for (size_t j = 0; j < size; j++)
            data[j] = (uint8_t)(j * 13 + i);
        CU_ASSERT_EQUAL(lh_gguf_writer_tensor(w, "blk.0.ffn_down.weight", ts[i], 2, ne, data), 0);
        void *buf = NULL;
        size_t n = 0;
        CU_ASSERT_EQUAL_FATAL(lh_gguf_writer_finish(w, &buf, &n), 0);
        lh_gguf_writer_free(w);
        lh_gguf *g = NULL;
        CU_ASSERT_EQUAL_FATAL(lh_gguf_open_mem(&g, buf, n, "q.gguf"), 0);
        const lh_gguf_tensor *t = lh_gguf_find_tensor(g, "blk.0.ffn_down.weight");
        CU_ASSERT_FATAL(t != NULL);
        CU_ASSERT_EQUAL(t->type, ts[i]);
        CU_ASSERT_EQUAL(t->size, size);
        CU_ASSERT(memcmp(t->data, data, size) == 0);
        size_t end = (size_t)((const uint8_t *)t->data + size - (const uint8_t *)buf);
        lh_gguf_close(g);

        char path[] = "/tmp/lh_test_gguf_log_XXXXXX";
        int fd = mkstemp(path);
        CU_ASSERT_FATAL(fd >= 0);
        close(fd);
        int level = lh_log_get_level();
        lh_log_set_level(LH_LOG_ERROR);
        CU_ASSERT_EQUAL(lh_log_set_file(path), 0);
        g = (lh_gguf *)1;
        CU_ASSERT_EQUAL(lh_gguf_open_mem(&g, buf, end - 1, "q.gguf"), LH_E_FORMAT);
        CU_ASSERT_PTR_NULL(g);
        lh_log_set_file(NULL);
        lh_log_set_level(level);
        char msg[1024] = {0};
        FILE *f = fopen(path, "r");
        CU_ASSERT_FATAL(f != NULL);
        size_t got = fread(msg, 1, sizeof msg - 1, f);
        fclose(f);
        unlink(path);
        CU_ASSERT(got > 0);
        CU_ASSERT(strstr(msg, "'blk.0.ffn_down.weight'") != NULL);
        CU_ASSERT(strstr(msg, "extends past the end") != NULL);
        CU_ASSERT(strstr(msg, "offset") != NULL);
        free(data);
        free(buf);
    }
}

static void test_writer_save(void)
{
    char path[] = "/tmp/lh_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    lh_gguf_writer *w = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_gguf_writer_new(&w), 0);
    const float v[3] = {1, 2, 3};
    const uint64_t ne[1] = {3};
    CU_ASSERT_EQUAL(lh_gguf_writer_u32(w, "general.alignment", 32), 0);
    CU_ASSERT_EQUAL(lh_gguf_writer_tensor(w, "x", LH_TYPE_F32, 1, ne, v), 0);
    CU_ASSERT_EQUAL(lh_gguf_writer_save(w, path), 0);
    lh_gguf_writer_free(w);
    lh_gguf *g = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_gguf_open(&g, path), 0);
    const lh_gguf_tensor *t = lh_gguf_find_tensor(g, "x");
    CU_ASSERT(t && memcmp(t->data, v, sizeof v) == 0);
    lh_gguf_close(g);
    unlink(path);
}

/* ---- malformed files --------------------------------------------------------------------- */

static void test_malformed(void)
{
    spec s = spec_default();
    CU_ASSERT_EQUAL_FATAL(open_spec(&s), 0); /* the baseline opens */
    {   /* and reads back as built */
        raw r;
        build(&r, &s);
        lh_gguf *g = NULL;
        CU_ASSERT_EQUAL_FATAL(lh_gguf_open_mem(&g, r.b, r.n, "spec"), 0);
        CU_ASSERT_EQUAL(lh_gguf_n_tensors(g), 2);
        const lh_gguf_tensor *b = lh_gguf_find_tensor(g, "b");
        CU_ASSERT(b && b->size == 32 && ((const uint8_t *)b->data)[0] == 32);
        lh_gguf_close(g);
    }

    raw r;
    lh_gguf *g = NULL;
    build(&r, &s);
    r.b[0] = 'X';   /* bad magic */
    CU_ASSERT_EQUAL(lh_gguf_open_mem(&g, r.b, r.n, "magic"), LH_E_FORMAT);

    s = spec_default();
    s.version = 2;  /* v2 has the same layout */
    CU_ASSERT_EQUAL(open_spec(&s), 0);
    s.version = 1;
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);
    s.version = 4;
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);
    s.version = 0x03000000; /* big-endian */
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);

    s = spec_default();
    s.n_tensors = UINT64_MAX / 2;  /* absurd counts: refused before allocating */
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);
    s.n_tensors = 3;               /* plausible but one more than present */
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);
    s = spec_default();
    s.n_kv = UINT64_MAX;
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);
    s.n_kv = 1000000000;
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);

    s = spec_default();
    s.key_len = 5000;              /* string length past the end */
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);
    s.key_len = UINT64_MAX;
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);

    s = spec_default();
    s.data_bytes = 63;             /* tensor "b" ends one byte past the file */
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);
    s.off1 = UINT64_MAX - 31;      /* offset + size would wrap */
    s.data_bytes = 64;
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);
    s.off1 = 64;                   /* aligned, past the end */
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);
    s.off1 = 36;                   /* misaligned, inside the file */
    s.data_bytes = 128;
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);
    s.off1 = 64;                   /* the same file, aligned: fine */
    CU_ASSERT_EQUAL(open_spec(&s), 0);

    s = spec_default();
    s.type0 = 12;                  /* Q4_K: known to ggml, not to this build */
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);
    s.type0 = 0xffffffffu;
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);
    s.type0 = LH_TYPE_Q8_0;        /* 4 columns: not a multiple of 32 */
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);

    s = spec_default();
    s.n_dims0 = 5;
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);
    s.n_dims0 = 4;
    s.ne0[2] = 1;
    s.ne0[3] = 1;
    CU_ASSERT_EQUAL(open_spec(&s), 0);
    s.ne0[1] = 0;                  /* zero dimension */
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);
    s.ne0[1] = UINT64_MAX;         /* negative as int64 */
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);
    s.ne0[0] = 1ull << 32;         /* product overflows int64 */
    s.ne0[1] = 1ull << 32;
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);
    s.ne0[0] = 1ull << 40;         /* fits int64 elements, but not size_t bytes (x4) */
    s.ne0[1] = 1ull << 22;
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);

    s = spec_default();
    s.name1 = "a";                 /* duplicate tensor name */
    CU_ASSERT_EQUAL(open_spec(&s), LH_E_FORMAT);
}

/* KVs of every kind written by hand: bad value types, bools, nested arrays, alignment. */
static int open_kv(const raw *kvs, uint64_t n_kv)
{
    raw r = {.n = 0};
    memcpy(r.b, "GGUF", 4);
    r.n = 4;
    r_le(&r, 3, 4);
    r_le(&r, 0, 8);
    r_le(&r, n_kv, 8);
    memcpy(r.b + r.n, kvs->b, kvs->n);
    r.n += kvs->n;
    lh_gguf *g = NULL;
    int rc = lh_gguf_open_mem(&g, r.b, r.n, "kv");
    lh_gguf_close(g);
    return rc;
}

static void test_malformed_kv(void)
{
    raw k;
    k.n = 0;
    r_str(&k, "x");
    r_le(&k, LH_GGUF_UINT64, 4);
    r_le(&k, 1, 8);
    CU_ASSERT_EQUAL(open_kv(&k, 1), 0);
    k.n -= 1;                      /* value cut short */
    CU_ASSERT_EQUAL(open_kv(&k, 1), LH_E_FORMAT);

    k.n = 0;
    r_str(&k, "x");
    r_le(&k, 13, 4);               /* no such value type */
    r_le(&k, 1, 8);
    CU_ASSERT_EQUAL(open_kv(&k, 1), LH_E_FORMAT);

    k.n = 0;
    r_str(&k, "x");
    r_le(&k, LH_GGUF_BOOL, 4);
    r_le(&k, 2, 1);                /* bool neither 0 nor 1 */
    CU_ASSERT_EQUAL(open_kv(&k, 1), LH_E_FORMAT);

    k.n = 0;                       /* duplicate key */
    r_str(&k, "x");
    r_le(&k, LH_GGUF_UINT8, 4);
    r_le(&k, 1, 1);
    r_str(&k, "x");
    r_le(&k, LH_GGUF_UINT8, 4);
    r_le(&k, 1, 1);
    CU_ASSERT_EQUAL(open_kv(&k, 2), LH_E_FORMAT);

    k.n = 0;                       /* array longer than the file */
    r_str(&k, "x");
    r_le(&k, LH_GGUF_ARRAY, 4);
    r_le(&k, LH_GGUF_UINT32, 4);
    r_le(&k, 3, 8);
    r_le(&k, 1, 4);
    r_le(&k, 2, 4);
    r_le(&k, 3, 4);
    CU_ASSERT_EQUAL(open_kv(&k, 1), 0);
    k.n -= 1;
    CU_ASSERT_EQUAL(open_kv(&k, 1), LH_E_FORMAT);
    k.n = 0;
    r_str(&k, "x");
    r_le(&k, LH_GGUF_ARRAY, 4);
    r_le(&k, LH_GGUF_STRING, 4);
    r_le(&k, UINT64_MAX / 8, 8);   /* absurd string-array length */
    r_str(&k, "s");
    CU_ASSERT_EQUAL(open_kv(&k, 1), LH_E_FORMAT);

    /* a nested array (array of two arrays of u8) is read and skipped; its getters refuse it */
    k.n = 0;
    r_str(&k, "nested");
    r_le(&k, LH_GGUF_ARRAY, 4);
    r_le(&k, LH_GGUF_ARRAY, 4);
    r_le(&k, 2, 8);
    for (int i = 0; i < 2; i++) {
        r_le(&k, LH_GGUF_UINT8, 4);
        r_le(&k, 2, 8);
        r_le(&k, 0x0101, 2);
    }
    r_str(&k, "after");
    r_le(&k, LH_GGUF_INT8, 4);
    r_le(&k, 0xff, 1);
    CU_ASSERT_EQUAL(open_kv(&k, 2), 0);
    {
        raw r = {.n = 0};
        memcpy(r.b, "GGUF", 4);
        r.n = 4;
        r_le(&r, 3, 4);
        r_le(&r, 0, 8);
        r_le(&r, 2, 8);
        memcpy(r.b + r.n, k.b, k.n);
        r.n += k.n;
        lh_gguf *g = NULL;
        CU_ASSERT_EQUAL_FATAL(lh_gguf_open_mem(&g, r.b, r.n, "nested"), 0);
        lh_gguf_vtype et;
        size_t n;
        int32_t v;
        uint32_t u;
        CU_ASSERT(lh_gguf_get_arr(g, "nested", &et, &n) == 0 && et == LH_GGUF_ARRAY && n == 2);
        CU_ASSERT_EQUAL(lh_gguf_arr_i32(g, "nested", 0, &v), LH_E_FORMAT);
        CU_ASSERT_EQUAL(lh_gguf_get_u32(g, "after", &u), LH_E_FORMAT); /* -1 does not fit */
        lh_gguf_close(g);
    }
    /* nesting deeper than the limit is refused, not recursed into without bound */
    k.n = 0;
    r_str(&k, "deep");
    r_le(&k, LH_GGUF_ARRAY, 4);
    for (int i = 0; i < 40; i++) {
        r_le(&k, LH_GGUF_ARRAY, 4);
        r_le(&k, 1, 8);
    }
    r_le(&k, LH_GGUF_UINT8, 4);
    r_le(&k, 0, 8);
    CU_ASSERT_EQUAL(open_kv(&k, 1), LH_E_FORMAT);

    /* general.alignment: must be a u32 power of two */
    k.n = 0;
    r_str(&k, "general.alignment");
    r_le(&k, LH_GGUF_UINT32, 4);
    r_le(&k, 64, 4);
    CU_ASSERT_EQUAL(open_kv(&k, 1), 0);
    k.n -= 4;
    r_le(&k, 48, 4);
    CU_ASSERT_EQUAL(open_kv(&k, 1), LH_E_FORMAT);
    k.n -= 4;
    r_le(&k, 0, 4);
    CU_ASSERT_EQUAL(open_kv(&k, 1), LH_E_FORMAT);
    k.n = 0;
    r_str(&k, "general.alignment");
    r_le(&k, LH_GGUF_UINT64, 4);
    r_le(&k, 32, 8);
    CU_ASSERT_EQUAL(open_kv(&k, 1), LH_E_FORMAT);

    /* an empty key */
    k.n = 0;
    r_str(&k, "");
    r_le(&k, LH_GGUF_UINT16, 4);
    r_le(&k, 0, 2);
    CU_ASSERT_EQUAL(open_kv(&k, 1), LH_E_FORMAT);
}

/* The alignment from general.alignment governs data start and offsets. */
static void test_alignment(void)
{
    raw r = {.n = 0};
    memcpy(r.b, "GGUF", 4);
    r.n = 4;
    r_le(&r, 3, 4);
    r_le(&r, 1, 8);
    r_le(&r, 1, 8);
    r_str(&r, "general.alignment");
    r_le(&r, LH_GGUF_UINT32, 4);
    r_le(&r, 256, 4);
    r_str(&r, "w");
    r_le(&r, 1, 4);
    r_le(&r, 4, 8);
    r_le(&r, LH_TYPE_F32, 4);
    r_le(&r, 0, 8);
    size_t start = (r.n + 255) / 256 * 256;
    r_pad(&r, 256);
    for (int i = 0; i < 16; i++)
        r.b[r.n++] = (uint8_t)(0x40 + i);
    lh_gguf *g = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_gguf_open_mem(&g, r.b, r.n, "align"), 0);
    const lh_gguf_tensor *t = lh_gguf_find_tensor(g, "w");
    CU_ASSERT((const uint8_t *)t->data == r.b + start);
    lh_gguf_close(g);
}

void lh_test_gguf(void)
{
    CU_pSuite s = CU_add_suite("gguf", NULL, NULL);
    CU_add_test(s, "bundled model", test_model);
    CU_add_test(s, "open errors", test_open_errors);
    CU_add_test(s, "writer round-trip + every truncation", test_writer_roundtrip);
    CU_add_test(s, "quantised tensors, one byte short", test_quant_truncated);
    CU_add_test(s, "writer save", test_writer_save);
    CU_add_test(s, "malformed header and tensors", test_malformed);
    CU_add_test(s, "malformed KVs", test_malformed_kv);
    CU_add_test(s, "general.alignment", test_alignment);
}
