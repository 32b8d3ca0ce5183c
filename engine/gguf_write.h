/* engine/gguf_write — builds a GGUF v3 file in memory (tools, tests): KVs in the order they are
 * added, then tensor infos, then the tensor data aligned to 32 bytes.  Apart from the reader
 * (gguf.h), which never writes.  Bad arguments (empty key, duplicate tensor, a dimension that is
 * not positive, a row not a multiple of the type's block) are logged and refused.
 *
 * Ownership: the writer copies keys, values and tensor data; lh_gguf_writer_finish hands out a
 * malloc'd buffer the caller frees.
 */
#ifndef LH_GGUF_WRITE_H
#define LH_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

typedef struct lh_gguf_writer lh_gguf_writer;
int lh_gguf_writer_new(lh_gguf_writer **wp);
void lh_gguf_writer_free(lh_gguf_writer *w);
int lh_gguf_writer_u32(lh_gguf_writer *w, const char *key, uint32_t v);
int lh_gguf_writer_f32(lh_gguf_writer *w, const char *key, float v);
int lh_gguf_writer_bool(lh_gguf_writer *w, const char *key, int v);
int lh_gguf_writer_str(lh_gguf_writer *w, const char *key, const char *v);
int lh_gguf_writer_arr_str(lh_gguf_writer *w, const char *key, const char *const *v, size_t n);
int lh_gguf_writer_arr_f32(lh_gguf_writer *w, const char *key, const float *v, size_t n);
int lh_gguf_writer_arr_i32(lh_gguf_writer *w, const char *key, const int32_t *v, size_t n);
/* data of lh_type_row_size(type, ne[0]) * ne[1] * ... bytes is copied. */
int lh_gguf_writer_tensor(lh_gguf_writer *w, const char *name, lh_type type, uint32_t n_dims,
                          const uint64_t *ne, const void *data);
/* Serialise: *bufp (malloc'd, caller frees) of *sizep bytes; or write to a file. */
int lh_gguf_writer_finish(lh_gguf_writer *w, void **bufp, size_t *sizep);
int lh_gguf_writer_save(lh_gguf_writer *w, const char *path);

#endif
