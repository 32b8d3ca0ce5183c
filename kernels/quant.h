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
    LH_TYPE_Q4_0 = 2,
    LH_TYPE_Q4_1 = 3,
    LH_TYPE_Q5_0 = 6,
    LH_TYPE_Q5_1 = 7,
    LH_TYPE_Q8_0 = 8,
    LH_TYPE_Q2_K = 10,
    LH_TYPE_Q3_K = 11,
    LH_TYPE_Q4_K = 12,
    LH_TYPE_Q5_K = 13,
    LH_TYPE_Q6_K = 14,
    LH_TYPE_IQ4_NL = 20,   /* llama-quantize's fallback for Q2_K/Q3_K rows not a multiple of 256 */
    LH_TYPE_BF16 = 30,
} lh_type;

/* ---- block layouts, byte for byte ggml's (ggml-common.h); all F16 fields are IEEE halves ---- */

#define LH_QK8_0 32
typedef struct {
    uint16_t d;            /* F16 scale */
    int8_t qs[LH_QK8_0];   /* value = d * qs[i] */
} lh_block_q8_0;           /* 34 bytes, as in ggml */

#define LH_QK4 32          /* Q4_0, Q4_1, Q5_0, Q5_1 */
typedef struct {
    uint16_t d;
    uint8_t qs[16];        /* element j: low nibble of qs[j]; element 16 + j: high nibble */
} lh_block_q4_0;           /* value = d * (q - 8); 18 bytes */
typedef struct {
    uint16_t d, m;
    uint8_t qs[16];
} lh_block_q4_1;           /* value = d * q + m; 20 bytes */
typedef struct {
    uint16_t d;
    uint8_t qh[4];         /* bit j of the little-endian u32: fifth bit of element j */
    uint8_t qs[16];
} lh_block_q5_0;           /* value = d * (q - 16); 22 bytes */
typedef struct {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[16];
} lh_block_q5_1;           /* value = d * q + m; 24 bytes */

typedef struct {
    uint16_t d;
    uint8_t qs[16];        /* nibbles index a fixed table of 16 int8 levels (lh_iq4nl_values) */
} lh_block_iq4_nl;         /* value = d * table[q]; 18 bytes */
extern const int8_t lh_iq4nl_values[16];

/* K-quants: super-blocks of 256 elements. */
#define LH_QK_K 256
typedef struct {
    uint8_t scales[16];    /* sub-block j of 16: scale (low nibble), min (high nibble) */
    uint8_t qs[64];        /* 2 bits: element 128h + 32s + l is bits 2s.. of qs[32h + l] */
    uint16_t d, dmin;
} lh_block_q2_K;           /* value = d * sc * q - dmin * m; 84 bytes */
typedef struct {
    uint8_t hmask[32];     /* third bit of element 32k + l: bit k of hmask[l] (set: q >= 0) */
    uint8_t qs[64];        /* low 2 bits, as Q2_K */
    uint8_t scales[12];    /* 16 6-bit scales, offset by 32 */
    uint16_t d;
} lh_block_q3_K;           /* value = d * (sc - 32) * (q - 4); 110 bytes */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];    /* 8 6-bit scales and 8 6-bit mins (get_scale_min_k4 packing) */
    uint8_t qs[128];       /* element 64k + l: low nibble of qs[32k + l]; 64k + 32 + l: high */
} lh_block_q4_K;           /* value = d * sc * q - dmin * m per 32-element sub-block; 144 bytes */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[32];        /* fifth bit: element 64k + l is bit 2k of qh[l], 64k + 32 + l 2k+1 */
    uint8_t qs[128];
} lh_block_q5_K;           /* 176 bytes */
typedef struct {
    uint8_t ql[128];       /* low 4 bits */
    uint8_t qh[64];        /* high 2 bits */
    int8_t scales[16];     /* one signed scale per 16 elements */
    uint16_t d;
} lh_block_q6_K;           /* value = d * sc * (q - 32); 210 bytes */

/* ---- quantised activations, for the fused dot products (ours, not ggml's layout) ---------- */

/* A 32-element block of the activation row: value = d * qs[i]; ds = d * (float)Σ qs (the block
 * sum, for the offset and min terms of Q4_0/Q5_0/Q4_1/Q5_1). Pairs with every 32-block weight
 * type. */
typedef struct {
    float d, ds;
    int8_t qs[32];
} lh_block_q8a;            /* 40 bytes */
/* A 256-element block (ggml's block_q8_K): value = d * qs[i]; bsums[j] = Σ qs[16j .. 16j+15]. */
typedef struct {
    float d;
    int8_t qs[LH_QK_K];
    int16_t bsums[LH_QK_K / 16];
} lh_block_q8K;            /* 292 bytes */

/* 1 when the type is one this build reads (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K ..
 * Q6_K, IQ4_NL), 0 otherwise. */
int lh_type_known(uint32_t type);
/* A name for any ggml type number ("F32", "Q4_K", ... or "type 99"); never NULL. */
const char *lh_type_name(uint32_t type);
/* Elements per block (1 for F32/F16/BF16, 32 for Q4_0 .. Q8_0, 256 for the K-quants); 0 for an
 * unknown type. */
size_t lh_type_block(uint32_t type);
/* Bytes per block; 0 for an unknown type. */
size_t lh_type_block_size(uint32_t type);
/* Bytes of a row of n elements (n a multiple of the block); 0 for an unknown type. */
size_t lh_type_row_size(uint32_t type, size_t n);

float lh_f16_to_f32(uint16_t h);
uint16_t lh_f32_to_f16(float f);       /* round to nearest even */
float lh_bf16_to_f32(uint16_t h);
uint16_t lh_f32_to_bf16(float f);      /* round to nearest even */

/* dst[0..n) = row src of type t converted to F32.  For the quantised types the values are those
 * of ggml's dequantize_row_* bit for bit (the same float operations in the same order, no
 * contraction into FMA: the build is ISO C, where GCC keeps -ffp-contract=off). */
void lh_dequant_row(lh_type t, const void *src, float *dst, size_t n);
/* dst = row src (F32) converted to type t (used by writers and tests).  Quantised types follow
 * ggml's reference quantisers (quantize_row_*_ref: what llama-quantize writes without an
 * importance matrix; for IQ4_NL, whose _ref differs, quantize_iq4_nl without one, which is what
 * llama-quantize calls). */
void lh_quant_row(lh_type t, const float *src, void *dst, size_t n);
/* Dot product of a row of type t with an F32 vector x, n elements (the F32 activation is used as
 * is: for quantised types this dequantises a block at a time; the decode GEMV uses
 * lh_dot_rows_q8 instead). */
float lh_dot_row(lh_type t, const void *row, const float *x, size_t n);
/* y[r] = lh_dot_row(t, row r, x, n) for n_rows rows that start row_size bytes apart; F32/F16/BF16
 * rows are taken four at a time so that each load of x serves four rows (the decode GEMV). */
void lh_dot_rows(lh_type t, const void *rows, size_t row_size, const float *x, size_t n, float *y,
                 size_t n_rows);


/* ---- fused dequantise-and-dot over quantised activations (the decode GEMV) ---------------- */

/* The activation type a weight type multiplies in lh_dot_rows_q8: LH_Q8A_32 (lh_block_q8a) for
 * Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/IQ4_NL, LH_Q8A_256 (lh_block_q8K) for the K-quants, 0 for F32/F16/BF16 and
 * unknown types (those take F32 activations). */
enum { LH_Q8A_32 = 1, LH_Q8A_256 = 2 };
int lh_q8_kind(lh_type t);
/* Bytes of the quantised form of an n-element activation row for weight type t (0 when t takes
 * F32 activations). */
size_t lh_q8_size(lh_type t, size_t n);
/* xq = x (n elements, F32) quantised for weight type t as llama.cpp quantises activations:
 * 8-bit values per 32-block (ggml's quantize_row_q8_0: x·127/amax rounded to nearest even,
 * d = amax/127 at F16 precision) or 256-block (quantize_row_q8_K: float d), and block sums. */
void lh_q8_quant(lh_type t, const float *x, void *xq, size_t n);
/* y[r] = Σ_i w_r[i] · xq[i] for n_rows rows of type t starting row_size bytes apart, with exact
 * integer sums inside each (sub-)block and float scaling (AVX-512 VNNI / AVX2 / scalar). */
void lh_dot_rows_q8(lh_type t, const void *rows, size_t row_size, const void *xq, size_t n,
                    float *y, size_t n_rows);
/* Four rows at rows + j*st (j < 4) into y[j*ys], each equal to lh_dot_rows_q8's for it bit for
 * bit; 1, or 0 (nothing done) for a type without a four-row kernel (so far: all but Q8_0). */
int lh_dot_rows4_q8(lh_type t, const void *rows, size_t st, const void *xq, size_t n, float *y,
                    size_t ys);
/* The same for n_act quantised activation rows (xq_stride bytes apart): y[a * ldy + r] =
 * lh_dot_rows_q8's y[r] for activation a, bit for bit; several activation rows share each
 * unpacked weight block where a kernel for that exists (prefill). */
void lh_gemm_q8(lh_type t, const void *rows, size_t row_size, size_t n_rows, const void *xq,
                size_t xq_stride, size_t n_act, size_t n, float *y, size_t ldy);

/* ---- prefill over 32-row interleaved panels (AVX-512 VNNI builds) --------------------------- */

#define LH_Q8P_ROWS 32     /* weight rows per panel */

/* 1 when this build has a panel kernel for t (AVX-512 VNNI: every quantised type, Q4_0 .. Q5_1,
 * Q8_0, IQ4_NL, Q2_K .. Q6_K); 0 otherwise (then lh_gemm_q8 serves prefill). */
int lh_q8p_has(lh_type t);
/* Bytes of one panel: 32 rows of n elements of type t unpacked to one byte per level,
 * interleaved 4 levels per row per 128-byte line pair, with their scales (0 when !lh_q8p_has(t)).
 * The panel must be 64-byte aligned. */
size_t lh_q8p_panel_size(lh_type t, size_t n);
/* panel = rows 0..n_rows-1 (n_rows <= 32, row_size bytes apart) of type t; rows n_rows..31 are
 * zero.  The levels are the file's, unchanged: no rounding. */
void lh_q8p_pack(lh_type t, const void *rows, size_t row_size, size_t n_rows, size_t n,
                 void *panel);
/* int32 corrections per quantised activation row for the 32-block types with an offset (n / 32
 * of them; 0 for Q4_1/Q5_1, whose min goes through the activation's ds, and the K-quants): corr[i] = -off · Σ qs of block i, with off the level offset of
 * the panel's unsigned levels (Q4_0 8, Q5_0 16, Q8_0 and IQ4_NL 128). */
size_t lh_q8p_corr_count(lh_type t, size_t n);
void lh_q8p_corr(lh_type t, const void *xq, size_t n, int32_t *corr);
/* y[a * ldy + r] = Σ_i w_r[i] · xq_a[i] for the panel's first n_rows rows (r < n_rows <= 32) and
 * n_act quantised activation rows xq_stride bytes apart, with their corrections corr_stride
 * int32s apart (NULL for the K-quants).  Every (sub-)block's integer sum is exact and equal to
 * lh_dot_rows_q8's; the float sum over blocks is in another order, so y equals lh_dot_rows_q8's
 * within the bound of its test (tests/test_quant.c, test_fused), not bit for bit. */
void lh_q8p_gemm(lh_type t, const void *panel, size_t n_rows, const void *xq, size_t xq_stride,
                 const int32_t *corr, size_t corr_stride, size_t n_act, size_t n, float *y,
                 size_t ldy);

#endif
