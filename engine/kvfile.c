/* engine/kvfile — see kvfile.h. */
#include "kvfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"

/* At most this many blocks: bounds the number of mappings (n_seg per block). */
#define MAX_BLOCKS 64
/* A block's piece of one segment is at least this many bytes (the growth step). */
#define MIN_PIECE (64u << 10)

struct lh_kvfile {
    char *dir;
    int fd;
    size_t n_seg, row_size, n_ctx;
    size_t block;            /* rows per block (a multiple of the alignment) */
    size_t n_blocks_mapped;  /* blocks allocated and mapped */
    char *base;              /* (n_seg, n_ctx, row_size) reservation */
    size_t map_size;
    size_t budget, touched, n_drops;
    size_t rss_base;         /* the process's file-backed resident bytes after the last drop */
};

static size_t page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

static size_t gcd(size_t a, size_t b)
{
    while (b) {
        size_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

size_t lh_kvfile_ctx_align(size_t row_size)
{
    size_t pg = page_size();
    return row_size ? pg / gcd(pg, row_size) : 1;
}

/* The process's resident file-backed and shared pages in bytes (/proc/self/statm's third
 * field): the KV mapping's resident pages are among them, with the model's. */
static size_t file_rss(void)
{
    FILE *fp = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, res = 0, shared = 0;
    int n = fp ? fscanf(fp, "%llu %llu %llu", &size, &res, &shared) : 0;
    if (fp)
        fclose(fp);
    return n == 3 ? (size_t)shared * page_size() : 0;
}

/* An unnamed file in dir: O_TMPFILE, else a created-and-unlinked one. */
static int open_unnamed(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
        return fd;
    size_t n = strlen(dir) + 32;
    char *path = malloc(n);
    if (!path) {
        errno = ENOMEM;
        return -1;
    }
    snprintf(path, n, "%s/lh-kv-XXXXXX", dir);
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0)
        unlink(path);
    int e = errno;
    free(path);
    errno = e;
    return fd;
}

int lh_kvfile_open(lh_kvfile **fp, const char *dir, size_t n_seg, size_t row_size, size_t n_ctx,
                   size_t budget)
{
    *fp = NULL;
    size_t align = lh_kvfile_ctx_align(row_size);
    if (!dir || n_seg == 0 || row_size == 0 || n_ctx == 0 || n_ctx % align != 0 ||
        n_ctx > SIZE_MAX / row_size / n_seg)
        return -EINVAL;
    int rc;
    lh_kvfile *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    f->fd = -1;
    f->base = MAP_FAILED;
    f->n_seg = n_seg;
    f->row_size = row_size;
    f->n_ctx = n_ctx;
    f->budget = budget;
    /* rows per block: a multiple of the alignment, a piece of at least MIN_PIECE bytes, and at
     * most MAX_BLOCKS blocks */
    size_t b = (n_ctx + MAX_BLOCKS - 1) / MAX_BLOCKS;
    size_t min_rows = (MIN_PIECE + row_size - 1) / row_size;
    if (b < min_rows)
        b = min_rows;
    b = (b + align - 1) / align * align;
    f->block = b < n_ctx ? b : n_ctx;
    f->map_size = n_seg * n_ctx * row_size;
    if (!(f->dir = strdup(dir))) {
        rc = -ENOMEM;
        goto fail;
    }
    f->fd = open_unnamed(dir);
    if (f->fd < 0) {
        rc = -errno;
        lh_log_error("kv-dir %s: cannot create the KV-cache file: %s", dir, strerror(errno));
        goto fail;
    }
    f->base = mmap(NULL, f->map_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (f->base == MAP_FAILED) {
        rc = -ENOMEM;
        lh_log_error("kv-dir %s: cannot reserve %zu bytes of address space for the KV cache", dir,
                     f->map_size);
        goto fail;
    }
    f->rss_base = file_rss();
    *fp = f;
    return 0;
fail:
    lh_kvfile_close(f);
    return rc;
}

void lh_kvfile_close(lh_kvfile *f)
{
    if (!f)
        return;
    if (f->base != MAP_FAILED)
        munmap(f->base, f->map_size);
    if (f->fd >= 0)
        close(f->fd);
    free(f->dir);
    free(f);
}

void *lh_kvfile_seg(const lh_kvfile *f, size_t i) { return f->base + i * f->n_ctx * f->row_size; }

size_t lh_kvfile_rows(const lh_kvfile *f)
{
    size_t r = f->n_blocks_mapped * f->block;
    return r < f->n_ctx ? r : f->n_ctx;
}

size_t lh_kvfile_file_size(const lh_kvfile *f) { return lh_kvfile_rows(f) * f->row_size * f->n_seg; }
size_t lh_kvfile_n_drops(const lh_kvfile *f) { return f->n_drops; }

/* Allocates block j on disk and maps its n_seg pieces. */
static int add_block(lh_kvfile *f, size_t j)
{
    size_t row0 = j * f->block;
    size_t rows = f->n_ctx - row0 < f->block ? f->n_ctx - row0 : f->block;
    size_t piece = rows * f->row_size;
    off_t off = (off_t)(row0 * f->row_size * f->n_seg);
    off_t len = (off_t)(piece * f->n_seg);
    int e = 0;
    if (fallocate(f->fd, 0, off, len) != 0) {
        e = errno;
        if (e == EOPNOTSUPP) /* a file system without fallocate: glibc writes the blocks */
            e = posix_fallocate(f->fd, off, len);
    }
    if (e) {
        /* keep the file at the blocks that are mapped (a partial allocation is given back) */
        if (ftruncate(f->fd, off) != 0) {
            /* nothing more to do: the size only matters for disk use */
        }
        lh_log_error("kv-dir %s: cannot grow the KV-cache file to %lld bytes (%zu tokens): %s "
                     "(%s)", f->dir, (long long)(off + len), row0 + rows, strerror(e),
                     e == ENOSPC ? "ENOSPC: the disk is full"
                     : e == EFBIG ? "EFBIG: the file size limit" : "allocation failed");
        return -e;
    }
    for (size_t i = 0; i < f->n_seg; i++) {
        char *at = f->base + i * f->n_ctx * f->row_size + row0 * f->row_size;
        void *p = mmap(at, piece, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, f->fd,
                       off + (off_t)(i * piece));
        if (p == MAP_FAILED) {
            e = errno;
            /* undo this block's pieces: back to the reservation */
            for (size_t k = 0; k < i; k++)
                mmap(f->base + k * f->n_ctx * f->row_size + row0 * f->row_size, piece, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
            if (ftruncate(f->fd, off) != 0) {
                /* as above */
            }
            lh_log_error("kv-dir %s: cannot map the KV-cache file (%zu tokens): %s", f->dir,
                         row0 + rows, strerror(e));
            return e == ENOMEM ? -ENOMEM : -e;
        }
    }
    f->n_blocks_mapped = j + 1;
    return 0;
}

int lh_kvfile_reserve(lh_kvfile *f, size_t n_rows)
{
    if (n_rows > f->n_ctx)
        return -EINVAL;
    size_t need = (n_rows + f->block - 1) / f->block;
    while (f->n_blocks_mapped < need) {
        int rc = add_block(f, f->n_blocks_mapped);
        if (rc)
            return rc;
    }
    return 0;
}

void lh_kvfile_touch(lh_kvfile *f, size_t bytes)
{
    if (!f->budget)
        return;
    /* Two measures, either one triggers: the owner's upper bound of what it touched, and what
     * the process's file-backed resident set grew by (the kernel maps up to 64 KiB around each
     * page fault of a file mapping, so scattered chunk reads make more resident than they read;
     * other slots' growth counts too, which only makes drops earlier). */
    f->touched = bytes > SIZE_MAX - f->touched ? SIZE_MAX : f->touched + bytes;
    size_t rss = f->touched > f->budget ? 0 : file_rss();
    if (f->touched <= f->budget && (rss <= f->rss_base || rss - f->rss_base <= f->budget))
        return;
    if (lh_kvfile_rows(f))
        madvise(f->base, f->map_size, MADV_DONTNEED);
    f->touched = 0;
    f->rss_base = file_rss();
    f->n_drops++;
}
