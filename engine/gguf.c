/* engine/gguf — see gguf.h.
 *
 * The file is parsed once, front to back, by a cursor that never reads past the end: every
 * fixed-size read checks the bytes left first, every length or count read from the file is
 * compared with the bytes that remain before it is used, and every count that sizes an
 * allocation is first bounded by the smallest number of bytes one element can occupy (so a file
 * of n bytes can never make us allocate much more than n bytes of bookkeeping).  All numbers are
 * decoded as little-endian byte by byte, so the reader neither depends on host byte order nor
 * on the alignment of the mapping (lh_gguf_open_mem accepts any caller pointer).
 *
 * Keys and tensor names are found through open-addressing hash tables built at load; the same
 * tables detect duplicates.
 */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_ARRAY_DEPTH 8

/* The fewest bytes one header entry can occupy: a KV is a key (u64 length + at least one byte),
 * a u32 value type and a value of at least one byte; a tensor info is a name (u64 length + at
 * least one byte), u32 n_dims, u32 type and a u64 offset. */
#define GGUF_MIN_KV_SIZE (8 + 1 + 4 + 1)
#define GGUF_MIN_TENSOR_INFO_SIZE (8 + 1 + 4 + 4 + 8)
/* An array element of type ARRAY is at least its u32 type and u64 count. */
#define GGUF_MIN_ARRAY_SIZE (4 + 8)

typedef struct {
    const uint8_t *key;      /* inside the data, not NUL-terminated */
    size_t key_len;
    uint32_t type;           /* lh_gguf_vtype */
    uint32_t etype;          /* arrays: element type */
    uint64_t n;              /* arrays: element count */
    size_t val_off;          /* scalars: the value; arrays: the first element */
    size_t *str_off;         /* string arrays: offset of each element's u64 length */
} gguf_kv;

struct lh_gguf {
    char *name;              /* file name for messages */
    const uint8_t *data;     /* the whole file */
    size_t size;
    void *map;               /* mmap'd region (NULL for lh_gguf_open_mem): the file, or with
                                lh_gguf_open_ex's load_max anonymous memory holding its bytes */
    int loaded;              /* map is anonymous memory (read in) */
    size_t map_size;
    uint32_t version;
    uint32_t alignment;
    size_t data_off;         /* start of the tensor data section */
    size_t n_kv;
    gguf_kv *kv;             /* (n_kv) */
    size_t kv_hcap;
    uint32_t *kv_hash;       /* (kv_hcap) index + 1, 0 = empty */
    size_t n_tensors;
    lh_gguf_tensor *tensors; /* (n_tensors) */
    char *names;             /* every tensor name, NUL-terminated, back to back */
    size_t t_hcap;
    uint32_t *t_hash;        /* (t_hcap) index + 1, 0 = empty */
};

/* ---- the cursor ------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t size;
    size_t pos;
    const char *name;
} cursor;

static int bad(const cursor *c, size_t off, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The one place a format error is logged. */
static int bad(const cursor *c, size_t off, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lh_log_error("%s: byte %zu: %s", c->name, off, msg);
    return LH_E_FORMAT;
}

static size_t left(const cursor *c) { return c->size - c->pos; }

static uint64_t le_u(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int rd_u(cursor *c, size_t n, uint64_t *vp, const char *what)
{
    *vp = 0;
    if (left(c) < n)
        return bad(c, c->pos, "file ends inside %s (%zu bytes needed, %zu left)", what, n, left(c));
    *vp = le_u(c->p + c->pos, n);
    c->pos += n;
    return 0;
}

static int rd_u32(cursor *c, uint32_t *vp, const char *what)
{
    uint64_t v = 0;
    int rc = rd_u(c, 4, &v, what);
    if (rc == 0)
        *vp = (uint32_t)v;
    return rc;
}

static int rd_u64(cursor *c, uint64_t *vp, const char *what)
{
    return rd_u(c, 8, vp, what);
}

/* A GGUF string: u64 length then the bytes.  *offp gets the offset of the bytes. */
static int rd_str(cursor *c, size_t *offp, size_t *lenp, const char *what)
{
    size_t at = c->pos;
    uint64_t len;
    int rc = rd_u64(c, &len, what);
    *offp = *lenp = 0;
    if (rc)
        return rc;
    if (len > left(c))
        return bad(c, at, "%s has length %llu but only %zu bytes are left", what,
                   (unsigned long long)len, left(c));
    *offp = c->pos;
    *lenp = (size_t)len;
    c->pos += (size_t)len;
    return 0;
}

static const char *vtype_name(uint32_t t)
{
    static const char *const names[] = {
        "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool",
        "string", "array", "uint64", "int64", "float64",
    };
    return t < sizeof names / sizeof names[0] ? names[t] : "invalid";
}

/* Bytes of a fixed-size value type; 0 for string, array and invalid types. */
static size_t vtype_size(uint32_t t)
{
    switch (t) {
    case LH_GGUF_UINT8: case LH_GGUF_INT8: case LH_GGUF_BOOL: return 1;
    case LH_GGUF_UINT16: case LH_GGUF_INT16: return 2;
    case LH_GGUF_UINT32: case LH_GGUF_INT32: case LH_GGUF_FLOAT32: return 4;
    case LH_GGUF_UINT64: case LH_GGUF_INT64: case LH_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static int vtype_valid(uint32_t t) { return t <= LH_GGUF_FLOAT64; }

/* Shows a name from the file in a message: printable ASCII only, cut at 64 bytes. */
static const char *show(const uint8_t *s, size_t len, char *buf, size_t cap)
{
    size_t j = 0;
    for (size_t i = 0; i < len && j + 5 < cap; i++) {
        if (i == 64) {
            memcpy(buf + j, "...", 3);
            j += 3;
            break;
        }
        buf[j++] = s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '?';
    }
    buf[j] = '\0';
    return buf;
}

/* Skips the value of an array element or checks a scalar value, at any nesting depth. */
static int skip_array(cursor *c, const char *key, int depth, uint32_t *etypep, uint64_t *np,
                      size_t **str_offp);

static int check_value(cursor *c, uint32_t type, const char *key, int depth)
{
    size_t at = c->pos;
    if (type == LH_GGUF_STRING) {
        size_t off, len;
        return rd_str(c, &off, &len, "a string value");
    }
    if (type == LH_GGUF_ARRAY)
        return skip_array(c, key, depth + 1, NULL, NULL, NULL);
    size_t sz = vtype_size(type);
    if (left(c) < sz)
        return bad(c, at, "file ends inside the %s value of key '%s'", vtype_name(type), key);
    if (type == LH_GGUF_BOOL && c->p[c->pos] > 1)
        return bad(c, at, "bool value %u of key '%s' is neither 0 nor 1", c->p[c->pos], key);
    c->pos += sz;
    return 0;
}

static int skip_array(cursor *c, const char *key, int depth, uint32_t *etypep, uint64_t *np,
                      size_t **str_offp)
{
    size_t at = c->pos;
    uint32_t etype;
    uint64_t n;
    int rc;
    if (depth > GGUF_MAX_ARRAY_DEPTH)
        return bad(c, at, "arrays of key '%s' are nested more than %d deep", key,
                   GGUF_MAX_ARRAY_DEPTH);
    if ((rc = rd_u32(c, &etype, "an array element type")) || (rc = rd_u64(c, &n, "an array length")))
        return rc;
    if (!vtype_valid(etype))
        return bad(c, at, "array of key '%s' has invalid element type %u", key, etype);
    size_t min = etype == LH_GGUF_STRING ? 8 : etype == LH_GGUF_ARRAY ? GGUF_MIN_ARRAY_SIZE
                                                                       : vtype_size(etype);
    if (n > left(c) / min)
        return bad(c, at + 4, "array of key '%s' has %llu elements of type %s, more than the %zu "
                   "bytes left can hold", key, (unsigned long long)n, vtype_name(etype), left(c));
    size_t *str_off = NULL;
    if (etype == LH_GGUF_STRING && str_offp && n > 0) {
        str_off = malloc((size_t)n * sizeof *str_off);
        if (!str_off) {
            lh_log_error("%s: out of memory indexing array '%s'", c->name, key);
            return -ENOMEM;
        }
    }
    if (etype == LH_GGUF_BOOL || etype == LH_GGUF_STRING || etype == LH_GGUF_ARRAY) {
        for (uint64_t i = 0; i < n; i++) {
            if (str_off)
                str_off[i] = c->pos;
            if ((rc = check_value(c, etype, key, depth))) {
                free(str_off);
                return rc;
            }
        }
    } else {
        c->pos += (size_t)n * min;
    }
    if (etypep)
        *etypep = etype;
    if (np)
        *np = n;
    if (str_offp)
        *str_offp = str_off;
    return 0;
}

/* ---- hash tables over (bytes, length) ----------------------------------------------------- */

static uint64_t hash_bytes(const void *s, size_t len)
{
    const uint8_t *p = s;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static size_t table_cap(size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    return cap;
}

static const uint8_t *kv_key(const lh_gguf *g, size_t i, size_t *lenp)
{
    *lenp = g->kv[i].key_len;
    return g->kv[i].key;
}

static const uint8_t *tensor_key(const lh_gguf *g, size_t i, size_t *lenp)
{
    *lenp = strlen(g->tensors[i].name);
    return (const uint8_t *)g->tensors[i].name;
}

typedef const uint8_t *(*key_fn)(const lh_gguf *g, size_t i, size_t *lenp);

/* Index of the entry named (s, len), or SIZE_MAX. */
static size_t table_find(const lh_gguf *g, const uint32_t *tab, size_t cap, key_fn key,
                         const void *s, size_t len)
{
    if (!tab)
        return SIZE_MAX;
    for (size_t h = hash_bytes(s, len) & (cap - 1);; h = (h + 1) & (cap - 1)) {
        if (tab[h] == 0)
            return SIZE_MAX;
        size_t klen;
        const uint8_t *k = key(g, tab[h] - 1, &klen);
        if (klen == len && memcmp(k, s, len) == 0)
            return tab[h] - 1;
    }
}

/* Inserts entry i; returns the index of an existing entry with the same name, or SIZE_MAX. */
static size_t table_insert(const lh_gguf *g, uint32_t *tab, size_t cap, key_fn key, size_t i)
{
    size_t len;
    const uint8_t *s = key(g, i, &len);
    size_t h = hash_bytes(s, len) & (cap - 1);
    for (; tab[h]; h = (h + 1) & (cap - 1)) {
        size_t klen;
        const uint8_t *k = key(g, tab[h] - 1, &klen);
        if (klen == len && memcmp(k, s, len) == 0)
            return tab[h] - 1;
    }
    tab[h] = (uint32_t)(i + 1);
    return SIZE_MAX;
}

/* ---- parsing -------------------------------------------------------------------------------- */

static int parse_kvs(lh_gguf *g, cursor *c, uint64_t n_kv)
{
    int rc = 0;
    char buf[80];
    g->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
    g->kv_hcap = table_cap((size_t)n_kv);
    g->kv_hash = calloc(g->kv_hcap, sizeof *g->kv_hash);
    if (!g->kv || !g->kv_hash) {
        lh_log_error("%s: out of memory for %llu keys", g->name, (unsigned long long)n_kv);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        size_t at = c->pos, off, len;
        if ((rc = rd_str(c, &off, &len, "a key")))
            return rc;
        if (len == 0)
            return bad(c, at, "key %zu is empty", i);
        kv->key = c->p + off;
        kv->key_len = len;
        g->n_kv = i + 1;
        show(kv->key, len, buf, sizeof buf);
        size_t dup = table_insert(g, g->kv_hash, g->kv_hcap, kv_key, i);
        if (dup != SIZE_MAX)
            return bad(c, at, "key '%s' appears twice", buf);
        size_t type_at = c->pos;
        if ((rc = rd_u32(c, &kv->type, "a value type")))
            return rc;
        if (!vtype_valid(kv->type))
            return bad(c, type_at, "key '%s' has invalid value type %u", buf, kv->type);
        if (kv->type == LH_GGUF_ARRAY) {
            size_t arr_at = c->pos;
            if ((rc = skip_array(c, buf, 1, &kv->etype, &kv->n, &kv->str_off)))
                return rc;
            kv->val_off = arr_at + GGUF_MIN_ARRAY_SIZE;
        } else {
            kv->val_off = c->pos;
            if ((rc = check_value(c, kv->type, buf, 0)))
                return rc;
        }
    }
    return 0;
}

static int is_pow2(uint64_t v) { return v && (v & (v - 1)) == 0; }

static int parse_tensors(lh_gguf *g, cursor *c, uint64_t n_tensors)
{
    int rc;
    char buf[80];
    size_t *name_off = NULL, *info_at = NULL, names_size = 0;
    uint64_t *offsets = NULL;
    g->tensors = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->tensors);
    name_off = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *name_off);
    info_at = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *info_at);
    offsets = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *offsets);
    if (!g->tensors || !name_off || !info_at || !offsets) {
        lh_log_error("%s: out of memory for %llu tensors", g->name, (unsigned long long)n_tensors);
        rc = -ENOMEM;
        goto fail;
    }
    /* Pass 1: the tensor infos, checked on their own. */
    for (size_t i = 0; i < n_tensors; i++) {
        lh_gguf_tensor *t = &g->tensors[i];
        size_t at = c->pos, len;
        info_at[i] = at;
        if ((rc = rd_str(c, &name_off[i], &len, "a tensor name")))
            goto fail;
        if (len == 0) {
            rc = bad(c, at, "tensor %zu has an empty name", i);
            goto fail;
        }
        show(c->p + name_off[i], len, buf, sizeof buf);
        if (memchr(c->p + name_off[i], 0, len)) {
            rc = bad(c, at, "tensor name '%s' contains a NUL byte", buf);
            goto fail;
        }
        names_size += len + 1; /* bounded by the file size: cannot overflow */
        size_t dims_at = c->pos;
        if ((rc = rd_u32(c, &t->n_dims, "a tensor's n_dims")))
            goto fail;
        if (t->n_dims > 4) {
            rc = bad(c, dims_at, "tensor '%s' has %u dimensions (at most 4)", buf, t->n_dims);
            goto fail;
        }
        uint64_t n_elems = 1;
        for (int d = 0; d < 4; d++)
            t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            size_t ne_at = c->pos;
            if ((rc = rd_u64(c, &t->ne[d], "a tensor dimension")))
                goto fail;
            if (t->ne[d] == 0 || t->ne[d] > INT64_MAX) {
                rc = bad(c, ne_at, "tensor '%s' dimension %u is %lld (must be positive)", buf, d,
                         (long long)t->ne[d]);
                goto fail;
            }
            if (n_elems > (uint64_t)INT64_MAX / t->ne[d]) {
                rc = bad(c, ne_at, "tensor '%s' has more elements than a 64-bit count holds", buf);
                goto fail;
            }
            n_elems *= t->ne[d];
        }
        t->n_elems = n_elems;
        size_t type_at = c->pos;
        if ((rc = rd_u32(c, &t->type, "a tensor type")))
            goto fail;
        if (!lh_type_known(t->type)) {
            const char *tn = lh_type_name(t->type);
            if (strncmp(tn, "type ", 5) == 0)
                rc = bad(c, type_at, "tensor '%s' has unknown type %u", buf, t->type);
            else
                rc = bad(c, type_at, "tensor '%s' has type %s, which this build does not read",
                         buf, tn);
            goto fail;
        }
        size_t blk = lh_type_block(t->type);
        if (t->ne[0] % blk != 0) {
            rc = bad(c, dims_at, "tensor '%s' of type %s has %llu columns, not a multiple of its "
                     "block of %zu", buf, lh_type_name(t->type), (unsigned long long)t->ne[0], blk);
            goto fail;
        }
        /* size = (ne0 / blk) * block_size * ne1 * ne2 * ne3, checked at every step */
        uint64_t size = t->ne[0] / blk, bs = lh_type_block_size(t->type);
        int ovf = size > SIZE_MAX / bs;
        size *= bs;
        for (int d = 1; d < 4 && !ovf; d++) {
            ovf = size > SIZE_MAX / t->ne[d];
            size *= t->ne[d];
        }
        if (ovf) {
            rc = bad(c, dims_at, "tensor '%s' has a byte size that does not fit in memory", buf);
            goto fail;
        }
        t->size = (size_t)size;
        if ((rc = rd_u64(c, &offsets[i], "a tensor offset")))
            goto fail;
    }

    /* The data section starts at the next multiple of the alignment. */
    size_t pad = (g->alignment - c->pos % g->alignment) % g->alignment;
    if (n_tensors > 0 && pad > left(c)) {
        rc = bad(c, c->pos, "file ends before the tensor data section (padding of %zu bytes to "
                 "alignment %u)", pad, g->alignment);
        goto fail;
    }
    g->data_off = n_tensors > 0 ? c->pos + pad : c->pos;
    size_t data_size = g->size - g->data_off;

    /* Pass 2: names copied, extents resolved, duplicates refused. */
    g->names = malloc(names_size ? names_size : 1);
    g->t_hcap = table_cap((size_t)n_tensors);
    g->t_hash = calloc(g->t_hcap, sizeof *g->t_hash);
    if (!g->names || !g->t_hash) {
        lh_log_error("%s: out of memory for %llu tensor names", g->name, (unsigned long long)n_tensors);
        rc = -ENOMEM;
        goto fail;
    }
    char *np = g->names;
    for (size_t i = 0; i < n_tensors; i++) {
        lh_gguf_tensor *t = &g->tensors[i];
        size_t len = (size_t)le_u(c->p + info_at[i], 8);
        memcpy(np, c->p + name_off[i], len);
        np[len] = '\0';
        t->name = np;
        np += len + 1;
        g->n_tensors = i + 1;
        show((const uint8_t *)t->name, len, buf, sizeof buf);
        if (table_insert(g, g->t_hash, g->t_hcap, tensor_key, i) != SIZE_MAX) {
            rc = bad(c, info_at[i], "tensor name '%s' appears twice", buf);
            goto fail;
        }
        uint64_t offset = offsets[i];
        size_t off_at = info_at[i] + 8 + len + 4 + 8 * (size_t)t->n_dims + 4;
        if (offset % g->alignment != 0) {
            rc = bad(c, off_at, "tensor '%s' has offset %llu, not a multiple of the alignment %u",
                     buf, (unsigned long long)offset, g->alignment);
            goto fail;
        }
        if (offset > data_size || t->size > data_size - offset) {
            rc = bad(c, off_at, "tensor '%s' (offset %llu, %zu bytes) extends past the end of the "
                     "file (%zu bytes of tensor data)", buf, (unsigned long long)offset, t->size,
                     data_size);
            goto fail;
        }
        t->data = g->data + g->data_off + offset;
    }
    rc = 0;
fail:
    free(name_off);
    free(info_at);
    free(offsets);
    return rc;
}

static int find_kv(const lh_gguf *g, const char *key)
{
    size_t i = table_find(g, g->kv_hash, g->kv_hcap, kv_key, key, strlen(key));
    return i == SIZE_MAX ? -1 : (int)i;
}

static int parse(lh_gguf *g)
{
    cursor c = {.p = g->data, .size = g->size, .pos = 0, .name = g->name};
    uint32_t version;
    uint64_t n_tensors, n_kv;
    int rc;
    if (g->size < 4 || memcmp(g->data, GGUF_MAGIC, 4) != 0)
        return bad(&c, 0, "not a GGUF file (bad magic)");
    c.pos = 4;
    if ((rc = rd_u32(&c, &version, "the version")))
        return rc;
    if (version == 1)
        return bad(&c, 4, "GGUF version 1 is not supported (only versions 2 and 3)");
    if (version != 2 && version != 3) {
        if ((version & 0xffff) == 0 && version >> 24 >= 1 && version >> 24 <= 3)
            return bad(&c, 4, "GGUF version %u looks byte-swapped: big-endian files are not "
                       "supported", version);
        return bad(&c, 4, "GGUF version %u is not supported (only versions 2 and 3)", version);
    }
    g->version = version;
    if ((rc = rd_u64(&c, &n_tensors, "the tensor count")) || (rc = rd_u64(&c, &n_kv, "the KV count")))
        return rc;
    /* Both counts bounded by what the rest of the file could hold, before any allocation;
     * the hash tables store index + 1 in 32 bits. */
    if (n_kv > left(&c) / GGUF_MIN_KV_SIZE || n_kv >= UINT32_MAX / 2)
        return bad(&c, 16, "KV count %llu cannot fit in the %zu bytes left",
                   (unsigned long long)n_kv, left(&c));
    if (n_tensors > (left(&c) - n_kv * GGUF_MIN_KV_SIZE) / GGUF_MIN_TENSOR_INFO_SIZE ||
        n_tensors >= UINT32_MAX / 2)
        return bad(&c, 8, "tensor count %llu cannot fit in the %zu bytes left",
                   (unsigned long long)n_tensors, left(&c));
    if ((rc = parse_kvs(g, &c, n_kv)))
        return rc;

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int ai = find_kv(g, "general.alignment");
    if (ai >= 0) {
        const gguf_kv *kv = &g->kv[ai];
        size_t at = (size_t)(kv->key - g->data) - 8;
        if (kv->type != LH_GGUF_UINT32)
            return bad(&c, at, "general.alignment has type %s (must be uint32)", vtype_name(kv->type));
        uint32_t a = (uint32_t)le_u(g->data + kv->val_off, 4);
        if (!is_pow2(a))
            return bad(&c, at, "general.alignment %u is not a power of two", a);
        g->alignment = a;
    }
    return parse_tensors(g, &c, n_tensors);
}

/* ---- open / close ---------------------------------------------------------------------------- */

static int gguf_new(lh_gguf **gp, const char *name)
{
    lh_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->name = strdup(name ? name : "(memory)"))) {
        free(g);
        lh_log_error("%s: out of memory", name ? name : "(memory)");
        return -ENOMEM;
    }
    *gp = g;
    return 0;
}

int lh_gguf_open_mem(lh_gguf **gp, const void *data, size_t size, const char *name)
{
    lh_gguf *g = NULL;
    *gp = NULL;
    int rc = gguf_new(&g, name);
    if (rc)
        return rc;
    static const uint8_t empty[1];
    g->data = data && size ? data : empty;
    g->size = data ? size : 0;
    if ((rc = parse(g)))
        goto fail;
    *gp = g;
    return 0;
fail:
    lh_gguf_close(g);
    return rc;
}

/* The file's size bytes into anonymous memory, read-only once read: 0 or -errno (logged). */
static int load_file(lh_gguf *g, int fd, const char *path)
{
    size_t huge = (size_t)2 << 20, sz = (g->size + huge - 1) & ~(huge - 1);
    void *a = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED) {
        lh_log_error("%s: cannot allocate %zu bytes to load it into (--mmap maps it instead)",
                     path, g->size);
        return -ENOMEM;
    }
#ifdef MADV_HUGEPAGE
    madvise(a, sz, MADV_HUGEPAGE);   /* advice only: without it the copy still works */
#endif
    for (size_t off = 0; off < g->size;) {
        size_t want = g->size - off < ((size_t)64 << 20) ? g->size - off : (size_t)64 << 20;
        ssize_t n = pread(fd, (char *)a + off, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            lh_log_error("%s: read failed at byte %zu: %s", path, off,
                         n < 0 ? strerror(e) : "the file got shorter");
            munmap(a, sz);
            return -e;
        }
        off += (size_t)n;
    }
    mprotect(a, sz, PROT_READ);
#ifdef POSIX_FADV_DONTNEED
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);   /* the page cache's copy is not needed */
#endif
    g->map = a;
    g->map_size = sz;
    g->data = a;
    g->loaded = 1;
    return 0;
}

int lh_gguf_loaded(const lh_gguf *g) { return g->loaded; }

int lh_gguf_open(lh_gguf **gp, const char *path) { return lh_gguf_open_ex(gp, path, 0); }

int lh_gguf_open_ex(lh_gguf **gp, const char *path, size_t load_max)
{
    lh_gguf *g = NULL;
    int fd = -1, rc;
    struct stat st;
    *gp = NULL;
    if ((rc = gguf_new(&g, path)))
        return rc;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        rc = -errno;
        lh_log_error("%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        lh_log_error("%s: not a regular file", path);
        goto fail;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        rc = -EFBIG;
        lh_log_error("%s: too large to map", path);
        goto fail;
    }
    g->size = (size_t)st.st_size;
    static const uint8_t empty[1];
    g->data = empty;
    if (g->size > 0 && g->size <= load_max) {
        if ((rc = load_file(g, fd, path)))
            goto fail;
    } else if (g->size > 0) {
        void *m = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            rc = -errno;
            lh_log_error("%s: cannot map %zu bytes: %s", path, g->size, strerror(errno));
            goto fail;
        }
        g->map = m;
        g->map_size = g->size;
        g->data = m;
    }
    close(fd);
    fd = -1;
    if ((rc = parse(g)))
        goto fail;
    *gp = g;
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    lh_gguf_close(g);
    return rc;
}

void lh_gguf_close(lh_gguf *g)
{
    if (!g)
        return;
    if (g->map)
        munmap(g->map, g->map_size);
    for (size_t i = 0; i < g->n_kv; i++)
        free(g->kv[i].str_off);
    free(g->kv);
    free(g->kv_hash);
    free(g->tensors);
    free(g->names);
    free(g->t_hash);
    free(g->name);
    free(g);
}

/* ---- getters -------------------------------------------------------------------------------- */

uint32_t lh_gguf_version(const lh_gguf *g) { return g->version; }
const char *lh_gguf_name(const lh_gguf *g) { return g->name; }
size_t lh_gguf_n_tensors(const lh_gguf *g) { return g->n_tensors; }

const lh_gguf_tensor *lh_gguf_tensor_at(const lh_gguf *g, size_t i)
{
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const lh_gguf_tensor *lh_gguf_find_tensor(const lh_gguf *g, const char *name)
{
    size_t i = table_find(g, g->t_hash, g->t_hcap, tensor_key, name, strlen(name));
    return i == SIZE_MAX ? NULL : &g->tensors[i];
}

/* An integer value of type t at p, as a signed 128-bit-free pair: *negp set when negative. */
static int read_int(uint32_t t, const uint8_t *p, uint64_t *magp, int *negp)
{
    size_t sz = vtype_size(t);
    int is_signed = t == LH_GGUF_INT8 || t == LH_GGUF_INT16 || t == LH_GGUF_INT32 ||
                    t == LH_GGUF_INT64;
    int is_unsigned = t == LH_GGUF_UINT8 || t == LH_GGUF_UINT16 || t == LH_GGUF_UINT32 ||
                      t == LH_GGUF_UINT64;
    if (!is_signed && !is_unsigned)
        return LH_E_FORMAT;
    uint64_t v = le_u(p, sz);
    *negp = 0;
    if (is_signed && (v >> (8 * sz - 1)) & 1) {
        /* sign-extend, then take the magnitude without overflowing */
        uint64_t ext = sz == 8 ? v : v | ~((UINT64_C(1) << (8 * sz)) - 1);
        *magp = ~ext + 1;
        *negp = 1;
    } else {
        *magp = v;
    }
    return 0;
}

static float read_f32(const uint8_t *p)
{
    uint32_t u = (uint32_t)le_u(p, 4);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static double read_f64(const uint8_t *p)
{
    uint64_t u = le_u(p, 8);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

int lh_gguf_get_u32(const lh_gguf *g, const char *key, uint32_t *outp)
{
    int i = find_kv(g, key);
    if (i < 0)
        return LH_E_NOTFOUND;
    const gguf_kv *kv = &g->kv[i];
    uint64_t mag;
    int neg;
    if (read_int(kv->type, g->data + kv->val_off, &mag, &neg) || (neg && mag) || mag > UINT32_MAX)
        return LH_E_FORMAT;
    *outp = (uint32_t)mag;
    return 0;
}

int lh_gguf_get_f32(const lh_gguf *g, const char *key, float *outp)
{
    int i = find_kv(g, key);
    if (i < 0)
        return LH_E_NOTFOUND;
    const gguf_kv *kv = &g->kv[i];
    if (kv->type == LH_GGUF_FLOAT32)
        *outp = read_f32(g->data + kv->val_off);
    else if (kv->type == LH_GGUF_FLOAT64)
        *outp = (float)read_f64(g->data + kv->val_off);
    else
        return LH_E_FORMAT;
    return 0;
}

int lh_gguf_get_bool(const lh_gguf *g, const char *key, int *outp)
{
    int i = find_kv(g, key);
    if (i < 0)
        return LH_E_NOTFOUND;
    if (g->kv[i].type != LH_GGUF_BOOL)
        return LH_E_FORMAT;
    *outp = g->data[g->kv[i].val_off] != 0;
    return 0;
}

int lh_gguf_get_str(const lh_gguf *g, const char *key, const char **sp, size_t *lenp)
{
    int i = find_kv(g, key);
    if (i < 0)
        return LH_E_NOTFOUND;
    const gguf_kv *kv = &g->kv[i];
    if (kv->type != LH_GGUF_STRING)
        return LH_E_FORMAT;
    *lenp = (size_t)le_u(g->data + kv->val_off, 8);
    *sp = (const char *)g->data + kv->val_off + 8;
    return 0;
}

int lh_gguf_get_arr(const lh_gguf *g, const char *key, lh_gguf_vtype *etypep, size_t *np)
{
    int i = find_kv(g, key);
    if (i < 0)
        return LH_E_NOTFOUND;
    const gguf_kv *kv = &g->kv[i];
    if (kv->type != LH_GGUF_ARRAY)
        return LH_E_FORMAT;
    *etypep = (lh_gguf_vtype)kv->etype;
    *np = (size_t)kv->n;
    return 0;
}

/* The array under key, checked to hold index i. */
static const gguf_kv *arr_at(const lh_gguf *g, const char *key, size_t i, int *rcp)
{
    int k = find_kv(g, key);
    if (k < 0) {
        *rcp = LH_E_NOTFOUND;
        return NULL;
    }
    const gguf_kv *kv = &g->kv[k];
    if (kv->type != LH_GGUF_ARRAY || i >= kv->n) {
        *rcp = LH_E_FORMAT;
        return NULL;
    }
    return kv;
}

int lh_gguf_arr_str(const lh_gguf *g, const char *key, size_t i, const char **sp, size_t *lenp)
{
    int rc;
    const gguf_kv *kv = arr_at(g, key, i, &rc);
    if (!kv)
        return rc;
    if (kv->etype != LH_GGUF_STRING)
        return LH_E_FORMAT;
    size_t off = kv->str_off[i];
    *lenp = (size_t)le_u(g->data + off, 8);
    *sp = (const char *)g->data + off + 8;
    return 0;
}

int lh_gguf_arr_f32(const lh_gguf *g, const char *key, size_t i, float *outp)
{
    int rc;
    const gguf_kv *kv = arr_at(g, key, i, &rc);
    if (!kv)
        return rc;
    if (kv->etype == LH_GGUF_FLOAT32)
        *outp = read_f32(g->data + kv->val_off + 4 * i);
    else if (kv->etype == LH_GGUF_FLOAT64)
        *outp = (float)read_f64(g->data + kv->val_off + 8 * i);
    else
        return LH_E_FORMAT;
    return 0;
}

int lh_gguf_arr_i32(const lh_gguf *g, const char *key, size_t i, int32_t *outp)
{
    int rc;
    const gguf_kv *kv = arr_at(g, key, i, &rc);
    if (!kv)
        return rc;
    uint64_t mag;
    int neg;
    size_t sz = vtype_size(kv->etype);
    if (sz == 0 || read_int(kv->etype, g->data + kv->val_off + sz * i, &mag, &neg))
        return LH_E_FORMAT;
    if (neg ? mag > (uint64_t)INT32_MAX + 1 : mag > INT32_MAX)
        return LH_E_FORMAT;
    *outp = neg ? (int32_t)(-(int64_t)mag) : (int32_t)mag;
    return 0;
}
