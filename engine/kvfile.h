/* engine/kvfile — a context's KV cache in a file mapping on disk (--kv-dir), so that the context
 * is bounded by the disk and the memory by a budget, not by the KV cache's size.
 *
 * The cache is n_seg segments (model.c: one per layer, k or v, and KV head), each n_ctx rows of
 * row_size bytes, laid out in virtual memory exactly as the in-memory cache is (segment i at
 * base + i * n_ctx * row_size), so the attention kernels see no difference.  On disk the file
 * grows in blocks of block_tokens rows: block j holds rows [j*B, (j+1)*B) of every segment, one
 * after the other, at file offset j * n_seg * B * row_size, and each (segment, block) piece is
 * mapped MAP_SHARED|MAP_FIXED over a PROT_NONE reservation once its block exists.  So the file
 * is only as large as the tokens it holds, it grows with fallocate before any row of a block is
 * written (a full disk, or a file size limit, is an error for that request: -ENOSPC / -EFBIG,
 * logged with the directory, never a SIGBUS), and nothing ever maps a page past its end.
 *
 * The file is created with O_TMPFILE (or created and unlinked at once where O_TMPFILE is not
 * supported): it has no name, and its blocks go back to the file system when the context is
 * freed or the process exits, whatever way it exits.
 *
 * Memory: the mapped pages count in the process's resident set while they are mapped.  The
 * owner reports the bytes each evaluation may have touched (lh_kvfile_touch: written rows plus
 * the rows attention read); once that, or the growth of the process's file-backed resident set
 * since the last drop (/proc/self/statm: the kernel maps up to 64 KiB around every fault of a
 * file mapping, so scattered reads make more resident than they touch), passes the budget, every
 * resident page of the mapping is dropped (MADV_DONTNEED: dirty pages stay in the page cache and are written back by the
 * kernel; the next access faults them in again).  With LongHeads a query reads only its chunks,
 * so the working set after a drop stays at the window.  Not thread-safe: one owner (a context).
 */
#ifndef LH_KVFILE_H
#define LH_KVFILE_H

#include <stddef.h>

typedef struct lh_kvfile lh_kvfile;

/* Rows a context's n_ctx must be a multiple of so that every segment starts on a page:
 * page_size / gcd(page_size, row_size). */
size_t lh_kvfile_ctx_align(size_t row_size);

/* Creates the (empty) file in dir and reserves n_seg * n_ctx * row_size bytes of address space.
 * n_ctx must be a multiple of lh_kvfile_ctx_align(row_size).  budget: resident bytes of the
 * mapping before lh_kvfile_touch drops them (0: never).  Returns 0, -EINVAL (bad sizes), or
 * -errno (the directory cannot hold a file: logged with the directory). */
int lh_kvfile_open(lh_kvfile **fp, const char *dir, size_t n_seg, size_t row_size, size_t n_ctx,
                   size_t budget);
void lh_kvfile_close(lh_kvfile *f);

/* The start of segment i: (n_ctx, row_size) bytes, usable up to the rows reserved. */
void *lh_kvfile_seg(const lh_kvfile *f, size_t i);

/* Makes rows [0, n_rows) of every segment usable (allocates and maps the blocks they fall in).
 * Returns 0, -ENOSPC (the disk is full), -EFBIG (the file size limit), -ENOMEM (mapping), other
 * -errno: logged once with the directory, what was being allocated and the error's name.  A
 * failure leaves the rows already reserved usable. */
int lh_kvfile_reserve(lh_kvfile *f, size_t n_rows);
/* Rows currently usable. */
size_t lh_kvfile_rows(const lh_kvfile *f);

/* Accounts bytes the owner may have made resident; over the budget, drops the mapping's
 * resident pages. */
void lh_kvfile_touch(lh_kvfile *f, size_t bytes);

/* For reports and tests: bytes the file occupies (allocated blocks), how many times the resident
 * pages were dropped. */
size_t lh_kvfile_file_size(const lh_kvfile *f);
size_t lh_kvfile_n_drops(const lh_kvfile *f);

#endif
