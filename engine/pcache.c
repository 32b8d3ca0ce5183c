/* engine/pcache — see pcache.h. */
#include "pcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define MAGIC 0x4548434143504c48ull /* "LHPCACHE" little-endian */
#define VERSION 4   /* 2: chunk representations in the KV type (F16 with an F16 cache); 3: in
                       tiles of 16 chunks, dimension-major; 4: BF16, in pairs of dimensions */
#define HDR_WORDS 16
#define HDR_SIZE (HDR_WORDS * 8)

enum { H_MAGIC, H_VERSION, H_MODEL, H_PREFIX, H_NTOK, H_ATTN, H_KVTYPE, H_CHUNK, H_WINDOW,
       H_NLAYER, H_NHEAD, H_NHEADKV, H_HEADDIM, H_PAYLOAD, H_SUM, H_HSUM };

struct lh_pcache {
    char *dir;
    const lh_model *m;
    uint64_t model_hash;
    size_t max_bytes;
};

/* ---- hashing: 8 bytes a step (multiply, rotate), the tail byte by byte ------------------------ */

static uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static uint64_t hash_update(uint64_t h, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = rotl(h ^ (w * 0x87c37b91114253d5ull), 31) * 0x4cf5ad432745937full;
    }
    for (; n; p++, n--)
        h = (h ^ *p) * 0x100000001b3ull;
    return h;
}

static uint64_t hash_final(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

#define HASH_SEED 0x6c6f6e6768656164ull

static uint64_t prefix_hash(const int32_t *t, size_t n)
{
    return hash_final(hash_update(HASH_SEED ^ n, t, n * sizeof *t));
}

static int model_hash(const char *path, uint64_t *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rc = 0;
    unsigned char *buf = malloc(1 << 20);
    if (!buf || fstat(fd, &st) != 0) {
        rc = buf ? -errno : -ENOMEM;
        goto out;
    }
    uint64_t size = (uint64_t)st.st_size, h = hash_update(HASH_SEED, &size, sizeof size);
    ssize_t r = pread(fd, buf, 1 << 20, 0);
    if (r < 0) {
        rc = -errno;
        goto out;
    }
    h = hash_update(h, buf, (size_t)r);
    if (size > (1u << 20)) {
        uint64_t span = size - (1u << 20);
        for (uint64_t i = 0; i < 64; i++) {
            off_t off = (off_t)((1u << 20) + span / 64 * i);
            r = pread(fd, buf, 4096, off);
            if (r < 0) {
                rc = -errno;
                goto out;
            }
            h = hash_update(h, buf, (size_t)r);
        }
    }
    *out = hash_final(h);
out:
    free(buf);
    close(fd);
    return rc;
}

/* ---- the files -------------------------------------------------------------------------------- */

static uint64_t params_hash(const lh_ctx *c)
{
    const lh_ctx_params *p = lh_ctx_params_get(c);
    uint64_t v[6] = {(uint64_t)p->attn, (uint64_t)p->kv_type,
                     p->attn == LH_ATTN_LONGHEADS ? p->chunk : 0,
                     p->attn == LH_ATTN_LONGHEADS ? p->window : 0,
                     p->attn == LH_ATTN_LONGHEADS ? (uint64_t)p->score : 0,
                     p->attn == LH_ATTN_LONGHEADS ? p->recent : 0};
    return hash_final(hash_update(HASH_SEED, v, sizeof v)) & 0xffffffffu;
}

static void fill_header(const lh_pcache *p, const lh_ctx *c, uint64_t *h, uint64_t prefix,
                        size_t n)
{
    const lh_ctx_params *cp = lh_ctx_params_get(c);
    const lh_hparams *hp = lh_model_hparams(lh_ctx_model(c));
    memset(h, 0, HDR_SIZE);
    h[H_MAGIC] = MAGIC;
    h[H_VERSION] = VERSION;
    h[H_MODEL] = p->model_hash;
    h[H_PREFIX] = prefix;
    h[H_NTOK] = n;
    h[H_ATTN] = (uint64_t)cp->attn;
    h[H_KVTYPE] = (uint64_t)cp->kv_type;
    h[H_CHUNK] = cp->attn == LH_ATTN_LONGHEADS ? cp->chunk : 0;
    h[H_WINDOW] = cp->attn == LH_ATTN_LONGHEADS ? cp->window : 0;
    h[H_NLAYER] = hp->n_layer;
    h[H_NHEAD] = hp->n_head;
    h[H_NHEADKV] = hp->n_head_kv;
    h[H_HEADDIM] = hp->head_dim;
    h[H_PAYLOAD] = lh_ctx_state_size(c, n);
}

static uint64_t header_sum(const uint64_t *h) { return hash_final(hash_update(HASH_SEED, h, H_HSUM * 8)); }

static void file_name(char *buf, size_t cap, const lh_pcache *p, const lh_ctx *c, size_t n,
                      uint64_t prefix)
{
    snprintf(buf, cap, "%s/%016" PRIx64 "-%08" PRIx64 "-%zu-%016" PRIx64 ".lhpc", p->dir,
             p->model_hash, params_hash(c), n, prefix);
}

int lh_pcache_open(lh_pcache **pp, const char *dir, const lh_model *m, size_t max_bytes)
{
    *pp = NULL;
    int rc;
    lh_pcache *p = calloc(1, sizeof *p);
    if (!p || !(p->dir = strdup(dir))) {
        rc = -ENOMEM;
        goto fail;
    }
    p->m = m;
    p->max_bytes = max_bytes;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        rc = -errno;
        lh_log_error("prompt cache %s: cannot create the directory: %s", dir, strerror(errno));
        goto fail;
    }
    if ((rc = model_hash(lh_model_path(m), &p->model_hash))) {
        lh_log_error("prompt cache: cannot read the model %s to hash it: %s", lh_model_path(m),
                     strerror(-rc));
        goto fail;
    }
    DIR *d = opendir(dir);
    if (!d) {
        rc = -errno;
        lh_log_error("prompt cache %s: %s", dir, strerror(errno));
        goto fail;
    }
    /* temporaries a crash left behind */
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, ".lhpc-", 6) == 0)
            unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
    *pp = p;
    return 0;
fail:
    lh_pcache_close(p);
    return rc;
}

void lh_pcache_close(lh_pcache *p)
{
    if (!p)
        return;
    free(p->dir);
    free(p);
}

uint64_t lh_pcache_model_hash(const lh_pcache *p) { return p->model_hash; }

/* The io callbacks: whole buffers through a file descriptor, checksummed on the way. */
typedef struct {
    int fd;
    uint64_t sum;
    int err;         /* errno of the failure */
    int short_read;  /* the file ended early */
} io;

static int io_write(void *ud, void *buf, size_t size)
{
    io *x = ud;
    x->sum = hash_update(x->sum, buf, size);
    const char *b = buf;
    while (size) {
        ssize_t w = write(x->fd, b, size > (1u << 30) ? (1u << 30) : size);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            x->err = w < 0 ? errno : EIO;
            return -x->err;
        }
        b += w;
        size -= (size_t)w;
    }
    return 0;
}

static int io_read(void *ud, void *buf, size_t size)
{
    io *x = ud;
    char *b = buf;
    size_t left = size;
    while (left) {
        ssize_t r = read(x->fd, b, left > (1u << 30) ? (1u << 30) : left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            x->err = r < 0 ? errno : 0;
            x->short_read = r == 0;
            return r < 0 ? -errno : -EIO;
        }
        b += r;
        left -= (size_t)r;
    }
    x->sum = hash_update(x->sum, buf, size);
    return 0;
}

typedef struct {
    size_t n;
    char name[256];
} cand;

static int cand_cmp(const void *a, const void *b)
{
    size_t x = ((const cand *)a)->n, y = ((const cand *)b)->n;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Tries one file: 0 loaded; 1 not usable (logged when it is bad; c untouched unless loading
 * began, then empty). */
static int try_load(lh_pcache *p, lh_ctx *c, const char *path, const int32_t *tokens, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 1;
    uint64_t h[HDR_WORDS], want[HDR_WORDS];
    const char *bad = NULL;
    int remove_it = 1, rc = 1;
    struct stat st;
    uint64_t prefix = prefix_hash(tokens, n);
    fill_header(p, c, want, prefix, n);
    ssize_t r = pread(fd, h, HDR_SIZE, 0);
    if (fstat(fd, &st) != 0 || r != HDR_SIZE)
        bad = "shorter than its header";
    else if (h[H_MAGIC] != MAGIC)
        bad = "not a prompt-cache file (bad magic)", remove_it = 0;
    else if (h[H_VERSION] != VERSION)
        bad = "another format version", remove_it = 0;
    else if (h[H_HSUM] != header_sum(h))
        bad = "header checksum mismatch";
    else if (h[H_MODEL] != p->model_hash)
        bad = "made for another model", remove_it = 0;
    else if (memcmp(h + H_PREFIX, want + H_PREFIX, (H_PAYLOAD + 1 - H_PREFIX) * 8) != 0)
        bad = "its tokens or parameters are not the ones its name says";
    else if ((uint64_t)st.st_size != HDR_SIZE + h[H_PAYLOAD])
        bad = "truncated (size differs from its header)";
    if (bad)
        goto out;
    /* the token ids first, before the context is touched: they must be the prompt's */
    int32_t *ids = malloc(n ? n * sizeof *ids : 1);
    if (!ids) {
        remove_it = 0;
        goto out;
    }
    r = pread(fd, ids, n * sizeof *ids, HDR_SIZE);
    int same = r == (ssize_t)(n * sizeof *ids) && memcmp(ids, tokens, n * sizeof *ids) == 0;
    free(ids);
    if (!same) {
        bad = "its token ids differ from its prefix hash";
        goto out;
    }
    io x = {.fd = fd, .sum = HASH_SEED};
    if (lseek(fd, HDR_SIZE, SEEK_SET) != HDR_SIZE) {
        remove_it = 0;
        goto out;
    }
    int e = lh_ctx_state_load(c, n, io_read, &x);
    if (e == 0 && hash_final(x.sum) != h[H_SUM]) {
        lh_ctx_truncate(c, 0);
        bad = "payload checksum mismatch (corrupted)";
    } else if (e != 0) {
        /* lh_ctx_state_load left the context empty */
        if (x.short_read)
            bad = "truncated while reading";
        else if (e == LH_E_FORMAT)
            bad = "a token id outside the vocabulary";
        else
            remove_it = 0; /* the KV file could not grow (logged), a read error: not the file's fault */
        if (!bad && x.err)
            lh_log_warn("prompt cache %s: read error: %s; ignored", path, strerror(x.err));
    } else {
        rc = 0;
        futimens(fd, NULL); /* used: last in line for eviction */
    }
out:
    close(fd);
    if (bad) {
        lh_log_warn("prompt cache %s: %s; ignored%s", path, bad, remove_it ? " and removed" : "");
        if (remove_it)
            unlink(path);
    }
    return rc;
}

size_t lh_pcache_load(lh_pcache *p, lh_ctx *c, const int32_t *tokens, size_t n, size_t min_n)
{
    char pre[64];
    snprintf(pre, sizeof pre, "%016" PRIx64 "-%08" PRIx64 "-", p->model_hash, params_hash(c));
    size_t n_ctx = lh_ctx_params_get(c)->n_ctx;
    DIR *d = opendir(p->dir);
    if (!d)
        return 0;
    cand *cs = NULL;
    size_t nc = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name), k;
        uint64_t ph;
        char tail[8];
        if (len < 5 || len >= sizeof cs->name || strncmp(e->d_name, pre, strlen(pre)) != 0 ||
            sscanf(e->d_name + strlen(pre), "%zu-%16" SCNx64 "%7s", &k, &ph, tail) != 3 ||
            strcmp(tail, ".lhpc") != 0 || k <= min_n || k > n || k >= n_ctx)
            continue;
        if (ph != prefix_hash(tokens, k))
            continue;
        if (nc == cap) {
            cap = cap ? 2 * cap : 8;
            cand *t = realloc(cs, cap * sizeof *cs);
            if (!t)
                break;
            cs = t;
        }
        cs[nc].n = k;
        snprintf(cs[nc].name, sizeof cs[nc].name, "%s", e->d_name);
        nc++;
    }
    closedir(d);
    if (nc > 1)
        qsort(cs, nc, sizeof *cs, cand_cmp);
    size_t got = 0;
    for (size_t i = 0; i < nc && !got; i++) {
        size_t plen = strlen(p->dir) + strlen(cs[i].name) + 2;
        char *path = malloc(plen);
        if (!path)
            break;
        snprintf(path, plen, "%s/%s", p->dir, cs[i].name);
        if (try_load(p, c, path, tokens, cs[i].n) == 0)
            got = cs[i].n;
        free(path);
    }
    free(cs);
    return got;
}

typedef struct {
    char name[256];
    off_t size;
    struct timespec mtime;
} entry;

static int older(const entry *a, const entry *b)
{
    return a->mtime.tv_sec < b->mtime.tv_sec ||
           (a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec < b->mtime.tv_nsec);
}

/* Lists the .lhpc files; returns the total bytes, *esp the entries (caller frees). */
static size_t list_files(const lh_pcache *p, entry **esp, size_t *np)
{
    *esp = NULL;
    *np = 0;
    DIR *d = opendir(p->dir);
    if (!d)
        return 0;
    size_t total = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        struct stat st;
        if (len < 6 || len >= sizeof(*esp)->name || strcmp(e->d_name + len - 5, ".lhpc") != 0 ||
            fstatat(dirfd(d), e->d_name, &st, 0) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (*np == cap) {
            cap = cap ? 2 * cap : 16;
            entry *t = realloc(*esp, cap * sizeof **esp);
            if (!t)
                break;
            *esp = t;
        }
        entry *x = &(*esp)[(*np)++];
        snprintf(x->name, sizeof x->name, "%s", e->d_name);
        x->size = st.st_size;
        x->mtime = st.st_mtim;
        total += (size_t)st.st_size;
    }
    closedir(d);
    return total;
}

size_t lh_pcache_disk_size(const lh_pcache *p)
{
    entry *es;
    size_t n, total = list_files(p, &es, &n);
    free(es);
    return total;
}

/* Removes least recently used files until the total is within max_bytes. */
static void evict(lh_pcache *p)
{
    entry *es;
    size_t n, total = list_files(p, &es, &n);
    while (total > p->max_bytes && n > 0) {
        size_t o = 0;
        for (size_t i = 1; i < n; i++)
            if (older(&es[i], &es[o]))
                o = i;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", p->dir, es[o].name);
        if (unlink(path) == 0)
            lh_log_info("prompt cache: removed %s (%lld bytes, least recently used) to stay "
                        "within %zu bytes", es[o].name, (long long)es[o].size, p->max_bytes);
        total -= (size_t)es[o].size;
        es[o] = es[--n];
    }
    free(es);
}

int lh_pcache_save(lh_pcache *p, lh_ctx *c, size_t n)
{
    n = lh_ctx_savable(c, n);
    if (n == 0)
        return 0;
    size_t size = HDR_SIZE + lh_ctx_state_size(c, n);
    if (size > p->max_bytes) {
        lh_log_info("prompt cache: a state of %zu tokens (%zu bytes) is larger than the cache's "
                    "%zu bytes; not saved", n, size, p->max_bytes);
        return 0;
    }
    const int32_t *tokens = lh_ctx_tokens(c);
    uint64_t prefix = prefix_hash(tokens, n);
    char path[4096], tmp[4096];
    file_name(path, sizeof path, p, c, n, prefix);
    if (utimensat(AT_FDCWD, path, NULL, 0) == 0)
        return 0; /* saved already: now the most recently used */
    snprintf(tmp, sizeof tmp, "%s/.lhpc-XXXXXX", p->dir);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        lh_log_error("prompt cache %s: cannot create a file: %s", p->dir, strerror(e));
        return -e;
    }
    uint64_t h[HDR_WORDS];
    fill_header(p, c, h, prefix, n);
    io x = {.fd = fd, .sum = HASH_SEED};
    int rc = 0;
    if (lseek(fd, HDR_SIZE, SEEK_SET) != HDR_SIZE)
        x.err = errno;
    else
        rc = lh_ctx_state_save(c, n, io_write, &x);
    if (!rc && !x.err) {
        h[H_SUM] = hash_final(x.sum);
        h[H_HSUM] = header_sum(h);
        if (pwrite(fd, h, HDR_SIZE, 0) != HDR_SIZE)
            x.err = errno ? errno : EIO;
    }
    if (!rc && !x.err && fdatasync(fd) != 0)
        x.err = errno;
    close(fd);
    if (rc || x.err) {
        int e = x.err ? x.err : (rc < 0 ? -rc : EIO);
        unlink(tmp);
        lh_log_error("prompt cache %s: saving %zu tokens (%zu bytes) failed: %s%s", p->dir, n, size,
                     strerror(e), e == ENOSPC ? " (ENOSPC: the disk is full)"
                     : e == EFBIG ? " (EFBIG: the file size limit)" : "");
        return -e;
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        lh_log_error("prompt cache %s: %s", path, strerror(e));
        return -e;
    }
    lh_log_info("prompt cache: saved %zu tokens (%zu bytes) to %s", n, size, path);
    evict(p);
    return 0;
}
