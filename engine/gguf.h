/* engine/gguf — read-only GGUF (v2, v3) files over mmap, validated before anything is used.
 *
 * lh_gguf_open maps the file and checks everything: magic, version (2 or 3; v1 is refused),
 * KV and tensor counts against the bytes left, every string length, KV value types, array
 * lengths, n_dims <= 4, positive dims whose products cannot overflow, tensor types (F32, F16,
 * BF16, Q8_0; others refused by name), offsets aligned to general.alignment, tensor extents inside
 * the file, unique tensor names.  A failure logs once: the file name, the byte offset and what is
 * wrong, and returns LH_E_FORMAT (or -errno for I/O).  After a successful open every pointer
 * handed out points into the mapping and stays valid until lh_gguf_close.
 *
 * lh_gguf_open_mem does the same over caller memory (tests build malformed files in memory).
 *
 * lh_gguf_open_ex can read the file into anonymous memory instead (transparent
 * huge pages asked for, read-only once read) and asks the kernel to drop its page cache of it:
 * the same bytes, but a decode step streams its weights faster from there than from the file's
 * page cache.  Measured on the 2-core development machine, alternating: the F16 GEMV kernel
 * alone over 1 GiB of rows 49.2-51.7 GB/s from anonymous memory against 41.6-42.1 from the
 * mapped file (three rounds each); TinyLlama-1.1B F16 tg64 (longheads-bench --weights load|map,
 * three runs each) best 20.6 against 19.0 tok/s.  The mapping starts faster and shares the
 * page cache with other processes.
 */
#ifndef LH_GGUF_H
#define LH_GGUF_H

#include <stddef.h>
#include <stdint.h>
#include "quant.h"
#include "log.h"

typedef enum {
    LH_GGUF_UINT8 = 0, LH_GGUF_INT8 = 1, LH_GGUF_UINT16 = 2, LH_GGUF_INT16 = 3,
    LH_GGUF_UINT32 = 4, LH_GGUF_INT32 = 5, LH_GGUF_FLOAT32 = 6, LH_GGUF_BOOL = 7,
    LH_GGUF_STRING = 8, LH_GGUF_ARRAY = 9, LH_GGUF_UINT64 = 10, LH_GGUF_INT64 = 11,
    LH_GGUF_FLOAT64 = 12
} lh_gguf_vtype;

typedef struct {
    const char *name;        /* NUL-terminated copy owned by the lh_gguf */
    uint32_t type;           /* lh_type */
    uint32_t n_dims;
    uint64_t ne[4];          /* ne[0] is the fastest-moving dimension; unused dims are 1 */
    uint64_t n_elems;
    size_t size;             /* bytes */
    const void *data;        /* inside the mapping, aligned */
} lh_gguf_tensor;

typedef struct lh_gguf lh_gguf;

int lh_gguf_open(lh_gguf **gp, const char *path);   /* lh_gguf_open_ex(.., 0): mapped */

/* As lh_gguf_open, the file read into memory when it has at most load_max bytes (0: always
 * mapped, SIZE_MAX: always read in), else mapped; reading in can also fail with -ENOMEM
 * (logged) where the memory cannot be had. */
int lh_gguf_open_ex(lh_gguf **gp, const char *path, size_t load_max);
/* 1 when the file was read into memory, 0 when it is mapped or caller memory. */
int lh_gguf_loaded(const lh_gguf *g);
int lh_gguf_open_mem(lh_gguf **gp, const void *data, size_t size, const char *name);
void lh_gguf_close(lh_gguf *g);

uint32_t lh_gguf_version(const lh_gguf *g);
/* The name given at open (path, or the name passed to lh_gguf_open_mem), for messages. */
const char *lh_gguf_name(const lh_gguf *g);
size_t lh_gguf_n_tensors(const lh_gguf *g);
const lh_gguf_tensor *lh_gguf_tensor_at(const lh_gguf *g, size_t i);
const lh_gguf_tensor *lh_gguf_find_tensor(const lh_gguf *g, const char *name); /* NULL if absent */

/* Scalar getters: 0 on success, LH_E_NOTFOUND if the key is absent, LH_E_FORMAT if it has
 * another type (integer getters accept any integer type whose value fits). */
int lh_gguf_get_u32(const lh_gguf *g, const char *key, uint32_t *outp);
int lh_gguf_get_f32(const lh_gguf *g, const char *key, float *outp);
int lh_gguf_get_bool(const lh_gguf *g, const char *key, int *outp);
/* String: pointer into the mapping and its length (not NUL-terminated). */
int lh_gguf_get_str(const lh_gguf *g, const char *key, const char **sp, size_t *lenp);
/* Array: element type and count; then element access. */
int lh_gguf_get_arr(const lh_gguf *g, const char *key, lh_gguf_vtype *etypep, size_t *np);
int lh_gguf_arr_str(const lh_gguf *g, const char *key, size_t i, const char **sp, size_t *lenp);
int lh_gguf_arr_f32(const lh_gguf *g, const char *key, size_t i, float *outp);
int lh_gguf_arr_i32(const lh_gguf *g, const char *key, size_t i, int32_t *outp);

#endif
