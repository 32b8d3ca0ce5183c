/* engine/gguf_write — see gguf_write.h. */
#include "gguf_write.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GGUF_MAGIC "GGUF"

typedef struct {
    uint8_t *p;
    size_t len, cap;
} bytes;

typedef struct {
    char *name;
    uint32_t type, n_dims;
    uint64_t ne[4];
    size_t size;
    void *data;
} wtensor;

struct lh_gguf_writer {
    bytes kv;            /* the serialised KV section */
    size_t n_kv;
    wtensor *tensors;    /* (n_tensors) */
    size_t n_tensors, cap_tensors;
};

#define WRITER_ALIGNMENT 32

static int put(bytes *b, const void *p, size_t n)
{
    if (n > SIZE_MAX - b->len)
        return -ENOMEM;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap = cap > SIZE_MAX / 2 ? b->len + n : cap * 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q)
            return -ENOMEM;
        b->p = q;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

static int put_le(bytes *b, uint64_t v, size_t n)
{
    uint8_t tmp[8];
    for (size_t i = 0; i < n; i++)
        tmp[i] = (uint8_t)(v >> (8 * i));
    return put(b, tmp, n);
}

static int put_str(bytes *b, const char *s, size_t len)
{
    int rc = put_le(b, len, 8);
    return rc ? rc : put(b, s, len);
}

int lh_gguf_writer_new(lh_gguf_writer **wp)
{
    *wp = calloc(1, sizeof **wp);
    return *wp ? 0 : -ENOMEM;
}

void lh_gguf_writer_free(lh_gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    free(w->tensors);
    free(w->kv.p);
    free(w);
}

/* Appends key and type; on any later failure the caller rolls kv.len back to `mark`. */
static int kv_head(lh_gguf_writer *w, const char *key, uint32_t type, size_t *markp)
{
    *markp = w->kv.len;
    if (!key || !*key) {
        lh_log_error("gguf writer: empty key");
        return LH_E_FORMAT;
    }
    int rc = put_str(&w->kv, key, strlen(key));
    return rc ? rc : put_le(&w->kv, type, 4);
}

static int kv_done(lh_gguf_writer *w, size_t mark, int rc)
{
    if (rc)
        w->kv.len = mark;
    else
        w->n_kv++;
    return rc;
}

static int f32_bits(float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    return (int)u;
}

int lh_gguf_writer_u32(lh_gguf_writer *w, const char *key, uint32_t v)
{
    size_t mark;
    int rc = kv_head(w, key, LH_GGUF_UINT32, &mark);
    if (!rc)
        rc = put_le(&w->kv, v, 4);
    return kv_done(w, mark, rc);
}

int lh_gguf_writer_f32(lh_gguf_writer *w, const char *key, float v)
{
    size_t mark;
    int rc = kv_head(w, key, LH_GGUF_FLOAT32, &mark);
    if (!rc)
        rc = put_le(&w->kv, (uint32_t)f32_bits(v), 4);
    return kv_done(w, mark, rc);
}

int lh_gguf_writer_bool(lh_gguf_writer *w, const char *key, int v)
{
    size_t mark;
    int rc = kv_head(w, key, LH_GGUF_BOOL, &mark);
    if (!rc)
        rc = put_le(&w->kv, v ? 1 : 0, 1);
    return kv_done(w, mark, rc);
}

int lh_gguf_writer_str(lh_gguf_writer *w, const char *key, const char *v)
{
    size_t mark;
    int rc = kv_head(w, key, LH_GGUF_STRING, &mark);
    if (!rc)
        rc = put_str(&w->kv, v, strlen(v));
    return kv_done(w, mark, rc);
}

static int arr_head(lh_gguf_writer *w, const char *key, uint32_t etype, size_t n, size_t *markp)
{
    int rc = kv_head(w, key, LH_GGUF_ARRAY, markp);
    if (!rc)
        rc = put_le(&w->kv, etype, 4);
    if (!rc)
        rc = put_le(&w->kv, n, 8);
    return rc;
}

int lh_gguf_writer_arr_str(lh_gguf_writer *w, const char *key, const char *const *v, size_t n)
{
    size_t mark;
    int rc = arr_head(w, key, LH_GGUF_STRING, n, &mark);
    for (size_t i = 0; i < n && !rc; i++)
        rc = put_str(&w->kv, v[i], strlen(v[i]));
    return kv_done(w, mark, rc);
}

int lh_gguf_writer_arr_f32(lh_gguf_writer *w, const char *key, const float *v, size_t n)
{
    size_t mark;
    int rc = arr_head(w, key, LH_GGUF_FLOAT32, n, &mark);
    for (size_t i = 0; i < n && !rc; i++)
        rc = put_le(&w->kv, (uint32_t)f32_bits(v[i]), 4);
    return kv_done(w, mark, rc);
}

int lh_gguf_writer_arr_i32(lh_gguf_writer *w, const char *key, const int32_t *v, size_t n)
{
    size_t mark;
    int rc = arr_head(w, key, LH_GGUF_INT32, n, &mark);
    for (size_t i = 0; i < n && !rc; i++)
        rc = put_le(&w->kv, (uint32_t)v[i], 4);
    return kv_done(w, mark, rc);
}

int lh_gguf_writer_tensor(lh_gguf_writer *w, const char *name, lh_type type, uint32_t n_dims,
                          const uint64_t *ne, const void *data)
{
    if (!name || !*name || n_dims > 4 || !lh_type_known((uint32_t)type)) {
        lh_log_error("gguf writer: tensor '%s': bad name, type or n_dims", name ? name : "");
        return LH_E_FORMAT;
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        if (strcmp(w->tensors[i].name, name) == 0) {
            lh_log_error("gguf writer: tensor '%s' added twice", name);
            return LH_E_FORMAT;
        }
    }
    wtensor t = {.type = (uint32_t)type, .n_dims = n_dims, .ne = {1, 1, 1, 1}};
    uint64_t size = 0;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] == 0 || ne[d] > INT64_MAX) {
            lh_log_error("gguf writer: tensor '%s': dimension %u is not positive", name, d);
            return LH_E_FORMAT;
        }
        t.ne[d] = ne[d];
    }
    size_t blk = lh_type_block((uint32_t)type);
    if (t.ne[0] % blk != 0 || t.ne[0] > SIZE_MAX) {
        lh_log_error("gguf writer: tensor '%s': %llu columns, not a multiple of the block %zu",
                     name, (unsigned long long)t.ne[0], blk);
        return LH_E_FORMAT;
    }
    size = lh_type_row_size((uint32_t)type, (size_t)t.ne[0]);
    for (int d = 1; d < 4; d++) {
        if (size > SIZE_MAX / t.ne[d]) {
            lh_log_error("gguf writer: tensor '%s' is too large", name);
            return LH_E_FORMAT;
        }
        size *= t.ne[d];
    }
    t.size = (size_t)size;
    if (w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? 2 * w->cap_tensors : 16;
        wtensor *q = realloc(w->tensors, cap * sizeof *q);
        if (!q)
            return -ENOMEM;
        w->tensors = q;
        w->cap_tensors = cap;
    }
    t.name = strdup(name);
    t.data = malloc(t.size ? t.size : 1);
    if (!t.name || !t.data) {
        free(t.name);
        free(t.data);
        return -ENOMEM;
    }
    memcpy(t.data, data, t.size);
    w->tensors[w->n_tensors++] = t;
    return 0;
}

static size_t align_up(size_t v) { return (v + WRITER_ALIGNMENT - 1) / WRITER_ALIGNMENT * WRITER_ALIGNMENT; }

int lh_gguf_writer_finish(lh_gguf_writer *w, void **bufp, size_t *sizep)
{
    static const uint8_t zeros[WRITER_ALIGNMENT];
    bytes b = {0};
    int rc = put(&b, GGUF_MAGIC, 4);
    if (!rc) rc = put_le(&b, 3, 4);
    if (!rc) rc = put_le(&b, w->n_tensors, 8);
    if (!rc) rc = put_le(&b, w->n_kv, 8);
    if (!rc) rc = put(&b, w->kv.p, w->kv.len);
    size_t off = 0;
    for (size_t i = 0; i < w->n_tensors && !rc; i++) {
        const wtensor *t = &w->tensors[i];
        rc = put_str(&b, t->name, strlen(t->name));
        if (!rc) rc = put_le(&b, t->n_dims, 4);
        for (uint32_t d = 0; d < t->n_dims && !rc; d++)
            rc = put_le(&b, t->ne[d], 8);
        if (!rc) rc = put_le(&b, t->type, 4);
        if (!rc) rc = put_le(&b, off, 8);
        off = align_up(off + t->size);
    }
    if (!rc && w->n_tensors)
        rc = put(&b, zeros, align_up(b.len) - b.len);
    for (size_t i = 0; i < w->n_tensors && !rc; i++) {
        rc = put(&b, w->tensors[i].data, w->tensors[i].size);
        if (!rc)
            rc = put(&b, zeros, align_up(b.len) - b.len);
    }
    if (rc) {
        free(b.p);
        lh_log_error("gguf writer: out of memory");
        return -ENOMEM;
    }
    *bufp = b.p;
    *sizep = b.len;
    return 0;
}

int lh_gguf_writer_save(lh_gguf_writer *w, const char *path)
{
    void *buf = NULL;
    size_t size = 0;
    int rc = lh_gguf_writer_finish(w, &buf, &size);
    if (rc)
        return rc;
    FILE *f = fopen(path, "wb");
    if (!f) {
        rc = -errno;
        lh_log_error("%s: cannot create: %s", path, strerror(errno));
        goto out;
    }
    if (fwrite(buf, 1, size, f) != size) {
        rc = -(errno ? errno : EIO);
        lh_log_error("%s: write failed: %s", path, strerror(-rc));
    }
    if (fclose(f) != 0 && rc == 0) {
        rc = -errno;
        lh_log_error("%s: close failed: %s", path, strerror(errno));
    }
out:
    free(buf);
    return rc;
}
