/* kernels/quant — tensor element types as GGUF/ggml number them, their block layouts, and
 * conversion of rows to F32.
 *
 * Invariants: a row of n elements of type t occupies lh_type_row_size(t, n) bytes and n must be a
 * multiple of lh_type_block(t). Types are numbered exactly as ggml numbers them, so a value read
 * from a GGUF file can be stored as is once lh_type_known() accepts it.
 * Nothing here allocates. Every function accepts any n >= 0.
 */
#ifndef LH_QUANT_H
#define LH_QUANT_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    LH_TYPE_F32  = 0,
    LH_TYPE_F16  = 1,
    LH_TYPE_Q8_0 = 8,
    LH_TYPE_BF16 = 30,
} lh_type;

#define LH_QK8_0 32
typedef struct {
    uint16_t d;            /* F16 scale */
    int8_t qs[LH_QK8_0];   /* value = d * qs[i] */
} lh_block_q8_0;           /* 34 bytes, as in ggml */

/* 1 when the type is one this build reads (F32, F16, BF16, Q8_0), 0 otherwise. */
int lh_type_known(uint32_t type);
/* A name for any ggml type number ("F32", "Q4_K", ... or "type 99"); never NULL. */
const char *lh_type_name(uint32_t type);
/* Elements per block (1 for F32/F16/BF16, 32 for Q8_0); 0 for an unknown type. */
size_t lh_type_block(uint32_t type);
/* Bytes per block; 0 for an unknown type. */
size_t lh_type_block_size(uint32_t type);
/* Bytes of a row of n elements (n a multiple of the block); 0 for an unknown type. */
size_t lh_type_row_size(uint32_t type, size_t n);

float lh_f16_to_f32(uint16_t h);
uint16_t lh_f32_to_f16(float f);       /* round to nearest even */
float lh_bf16_to_f32(uint16_t h);
uint16_t lh_f32_to_bf16(float f);      /* round to nearest even */

/* dst[0..n) = row src of type t converted to F32. */
void lh_dequant_row(lh_type t, const void *src, float *dst, size_t n);
/* dst = row src (F32) converted to type t (used by writers and tests). */
void lh_quant_row(lh_type t, const float *src, void *dst, size_t n);
/* Dot product of a row of type t with an F32 vector x, n elements. */
float lh_dot_row(lh_type t, const void *row, const float *x, size_t n);
/* y[r] = lh_dot_row(t, row r, x, n) for n_rows rows that start row_size bytes apart; F32/F16/BF16
 * rows are taken four at a time so that each load of x serves four rows (the decode GEMV). */
void lh_dot_rows(lh_type t, const void *rows, size_t row_size, const float *x, size_t n, float *y,
                 size_t n_rows);

#endif
