/* engine/model — see model.h.
 *
 * Memory: the weights are pointers into the GGUF mapping, in their file type (only the 1-D norm
 * vectors are copied to F32 at load: they are tiny and read every token).  Each lh_ctx owns
 * - the KV cache: per layer k and v, (n_head_kv, n_ctx, head_dim) of kv_type, in an anonymous
 *   mapping with MAP_NORESERVE so a 131072-token context costs only the pages actually used, or
 *   with kv_dir in a file mapping (engine/kvfile.h) grown before each slice and kept under
 *   kv_budget resident bytes;
 * - the activations of one slice of n_batch tokens and the per-thread attention scratch;
 * - the matmul objects (oneDNN primitives + panel scratch), one per distinct weight shape;
 * - the LongHeads state when attn == LH_ATTN_LONGHEADS.
 * All of it is sized in lh_ctx_new; lh_ctx_eval allocates nothing.
 *
 * RoPE: in full mode keys are cached rotated at their absolute position and queries rotated the
 * same way.  In LongHeads mode keys are cached rotated at their position inside their chunk
 * (pos mod w) and queries are handed to lh_lh_layer un-rotated: it rotates them per layout slot
 * (see longheads.h), so no key is ever rotated twice.
 */
#include "model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "attn.h"
#include "gguf.h"
#include "kvfile.h"
#include "log.h"
#include "longheads.h"
#include "matmul.h"
#include "ops.h"

typedef struct {
    const lh_gguf_tensor *t; /* (n_out, n_in) in file type */
} weight;

typedef struct {
    float *attn_norm;        /* (n_embd) */
    float *ffn_norm;         /* (n_embd) */
    weight wq, wk, wv, wo;   /* (n_head*hd, n_embd) (n_kv*hd, n_embd) x2 (n_embd, n_head*hd) */
    weight w_gate, w_up;     /* (n_ff, n_embd) */
    weight w_down;           /* (n_embd, n_ff) */
    /* optional biases (NULL when absent; qwen2 has bq, bk, bv) */
    float *bq, *bk, *bv;     /* (n_head*hd) (n_kv*hd) (n_kv*hd) */
    float *bo;               /* (n_embd) */
    float *b_gate, *b_up;    /* (n_ff) */
    float *b_down;           /* (n_embd) */
} layer;

struct lh_model {
    char *path;
    lh_gguf *gguf;
    lh_tok *tok;
    lh_hparams hp;
    weight tok_embd;         /* (n_vocab, n_embd) */
    weight output;           /* (n_vocab, n_embd); the embedding when tied */
    float *output_norm;      /* (n_embd) */
    float *output_bias;      /* (n_vocab) or NULL */
    float *rope_freqs;       /* (n_rot/2) or NULL: hp.rope.freq_factors */
    int32_t *eog;            /* (n_eog) ascending */
    size_t n_eog;
    layer *layers;           /* (n_layer) */
    size_t n_params;
    char desc[256];
};

/* A matmul for one weight shape; the context keeps one per distinct (type, n_in, n_out). */
typedef struct {
    uint32_t type;
    size_t n_in, n_out;
    lh_matmul *mm;
} mm_slot;

#define N_MM_SLOTS 16

struct lh_ctx {
    const lh_model *m;
    lh_ctx_params p;          /* defaults resolved */
    size_t n_past;
    int32_t *tokens;          /* (n_ctx) */
    void **k, **v;            /* (n_layer) each (n_head_kv, n_ctx, head_dim) of kv_type */
    size_t kv_layer_size;     /* bytes of one layer's k (or v) */
    lh_kvfile *kvf;           /* with kv_dir: the file k and v point into, else NULL */
    char *kv_dir;             /* p.kv_dir's copy */
    lh_attn_shape shape;
    lh_lh *lh;                /* LongHeads state, or NULL in full mode */
    float *rope_keys;         /* LongHeads: (chunk, n_rot) the keys' rotations, by pos mod chunk */
    mm_slot mms[N_MM_SLOTS];
    size_t n_mms;
    size_t n_threads;
    /* activations for one slice of up to n_batch tokens */
    float *x;                 /* (n_batch, n_embd) residual stream */
    float *xb;                /* (n_batch, n_embd) */
    float *q;                 /* (n_batch, n_head*hd) */
    float *kb, *vb;           /* (n_batch, n_kv*hd) */
    float *att;               /* (n_batch, n_head*hd) */
    float *hb, *hb2;          /* (n_batch, n_ff) */
    void *attn_scratch;       /* n_threads * lh_attn_scratch_size */
    lh_ctx_abort_fn abort_fn; /* checked between layers and inside them (aborted), or NULL */
    void *abort_ud;
};

/* ------------------------------------------------------------------------------------------ */
/* loading                                                                                      */

static int get_u32(const lh_model *m, const char *arch, const char *key, size_t *out, int required)
{
    char name[128];
    snprintf(name, sizeof name, "%s.%s", arch, key);
    uint32_t v;
    int rc = lh_gguf_get_u32(m->gguf, name, &v);
    if (rc == LH_E_NOTFOUND && !required)
        return 0;
    if (rc) {
        lh_log_error("%s: %s %s", m->path, name, rc == LH_E_NOTFOUND ? "is missing" : "is not an integer");
        return LH_E_FORMAT;
    }
    *out = v;
    return 0;
}

static int get_f32(const lh_model *m, const char *arch, const char *key, float *out)
{
    char name[128];
    snprintf(name, sizeof name, "%s.%s", arch, key);
    int rc = lh_gguf_get_f32(m->gguf, name, out);
    if (rc == LH_E_NOTFOUND)
        return 0;
    if (rc) {
        lh_log_error("%s: %s is not a float32", m->path, name);
        return LH_E_FORMAT;
    }
    return 0;
}

/* Finds a 2-D weight with dims [n_in, n_out]. */
static int find_weight(lh_model *m, const char *name, size_t n_in, size_t n_out, weight *w)
{
    const lh_gguf_tensor *t = lh_gguf_find_tensor(m->gguf, name);
    if (!t) {
        lh_log_error("%s: tensor '%s' is missing", m->path, name);
        return LH_E_FORMAT;
    }
    if (t->n_dims != 2 || t->ne[0] != n_in || t->ne[1] != n_out) {
        lh_log_error("%s: tensor '%s' has shape [%llu, %llu] (%u dims), expected [%zu, %zu]",
                     m->path, name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                     t->n_dims, n_in, n_out);
        return LH_E_FORMAT;
    }
    w->t = t;
    m->n_params += (size_t)t->n_elems;
    return 0;
}

/* Copies a 1-D vector of n elements (any supported type) to a new F32 array. */
static int load_vec(lh_model *m, const char *name, size_t n, float **outp)
{
    const lh_gguf_tensor *t = lh_gguf_find_tensor(m->gguf, name);
    if (!t) {
        lh_log_error("%s: tensor '%s' is missing", m->path, name);
        return LH_E_FORMAT;
    }
    if (t->n_elems != n || t->ne[0] != n) {
        lh_log_error("%s: tensor '%s' has %llu elements, expected %zu", m->path, name,
                     (unsigned long long)t->n_elems, n);
        return LH_E_FORMAT;
    }
    float *v = malloc(n * sizeof *v);
    if (!v)
        return -ENOMEM;
    lh_dequant_row((lh_type)t->type, t->data, v, n);
    *outp = v;
    m->n_params += n;
    return 0;
}

/* RoPE scaling as llama.cpp reads it (llama-model.cpp load_hparams, llama-context.cpp):
 * rope.scaling.type (default "linear") is none, linear or yarn; factor f from rope.scaling.factor
 * (or the older rope.scale_linear), freq_scale = 1/f (1 when f is 0 or absent, or the type is
 * none); under yarn ext_factor = 1 and the ramp is placed with rope.scaling.original_context_length
 * (default: the trained context) and betas 32 / 1; rope.scaling.attn_factor scales cos/sin. */
static int load_rope_scaling(lh_model *m, const char *arch)
{
    lh_hparams *hp = &m->hp;
    char key[128];
    const char *s = "linear";
    size_t len = 6;
    int rc;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    rc = lh_gguf_get_str(m->gguf, key, &s, &len);
    if (rc && rc != LH_E_NOTFOUND) {
        lh_log_error("%s: %s is not a string", m->path, key);
        return LH_E_FORMAT;
    }
    int none = len == 4 && memcmp(s, "none", 4) == 0;
    int linear = len == 6 && memcmp(s, "linear", 6) == 0;
    int yarn = len == 4 && memcmp(s, "yarn", 4) == 0;
    if (!none && !linear && !yarn) {
        lh_log_error("%s: rope scaling '%.*s' is not supported (none, linear, yarn)", m->path,
                     (int)(len > 32 ? 32 : len), s);
        return LH_E_UNSUPPORTED;
    }
    float factor = 0.0f, attn = 1.0f;
    size_t n_orig = hp->n_ctx_train;
    snprintf(key, sizeof key, "%s.rope.scaling.factor", arch);
    if (lh_gguf_get_f32(m->gguf, key, &factor) == LH_E_NOTFOUND)
        rc = get_f32(m, arch, "rope.scale_linear", &factor);
    else
        rc = get_f32(m, arch, "rope.scaling.factor", &factor);
    if (rc)
        return rc;
    if ((rc = get_f32(m, arch, "rope.scaling.attn_factor", &attn)) ||
        (rc = get_u32(m, arch, "rope.scaling.original_context_length", &n_orig, 0)))
        return rc;
    if (!(factor >= 0.0f) || factor > 1e6f || !(attn > 0.0f) || attn > 1e3f || n_orig == 0 ||
        n_orig > (1u << 24)) {
        lh_log_error("%s: bad rope scaling (factor %g, attn_factor %g, original context %zu)",
                     m->path, factor, attn, n_orig);
        return LH_E_FORMAT;
    }
    hp->rope.freq_scale = none || factor == 0.0f ? 1.0f : 1.0f / factor;
    hp->rope.ext_factor = yarn ? 1.0f : 0.0f;
    hp->rope.attn_factor = attn;
    hp->rope.n_ctx_orig = n_orig;
    return 0;
}

/* As load_vec, but an absent tensor leaves *outp NULL. */
static int load_vec_opt(lh_model *m, const char *name, size_t n, float **outp)
{
    *outp = NULL;
    if (!lh_gguf_find_tensor(m->gguf, name))
        return 0;
    return load_vec(m, name, n, outp);
}

static const struct {
    const char *name;
    lh_arch arch;
    int neox; /* RoPE pairs (i, i + n_rot/2) */
} archs[] = {
    { "llama", LH_ARCH_LLAMA, 0 },
    { "qwen2", LH_ARCH_QWEN2, 1 },
};

static int load_hparams(lh_model *m)
{
    const char *s;
    size_t len;
    const char *arch = NULL;
    lh_hparams *hp = &m->hp;
    if (lh_gguf_get_str(m->gguf, "general.architecture", &s, &len)) {
        lh_log_error("%s: general.architecture is missing", m->path);
        return LH_E_FORMAT;
    }
    for (size_t i = 0; i < sizeof archs / sizeof *archs; i++)
        if (strlen(archs[i].name) == len && memcmp(s, archs[i].name, len) == 0) {
            arch = archs[i].name;
            hp->arch = archs[i].arch;
            hp->rope_neox = archs[i].neox;
        }
    if (!arch) {
        lh_log_error("%s: architecture '%.*s' is not supported (supported: llama, qwen2)", m->path,
                     (int)(len > 64 ? 64 : len), s);
        return LH_E_UNSUPPORTED;
    }
    int rc;
    size_t n_expert = 0;
    if ((rc = get_u32(m, arch, "embedding_length", &hp->n_embd, 1)) ||
        (rc = get_u32(m, arch, "feed_forward_length", &hp->n_ff, 1)) ||
        (rc = get_u32(m, arch, "block_count", &hp->n_layer, 1)) ||
        (rc = get_u32(m, arch, "attention.head_count", &hp->n_head, 1)) ||
        (rc = get_u32(m, arch, "expert_count", &n_expert, 0)))
        return rc;
    if (n_expert > 0) {
        lh_log_error("%s: %s with %zu experts (mixture of experts) is not supported", m->path, arch,
                     n_expert);
        return LH_E_UNSUPPORTED;
    }
    hp->n_head_kv = hp->n_head;
    hp->n_ctx_train = 2048;
    hp->rope = lh_ops_rope_plain(10000.0f);
    hp->rms_eps = 1e-5f;
    if ((rc = get_u32(m, arch, "attention.head_count_kv", &hp->n_head_kv, 0)) ||
        (rc = get_u32(m, arch, "context_length", &hp->n_ctx_train, 0)) ||
        (rc = get_f32(m, arch, "rope.freq_base", &hp->rope.base)) ||
        (rc = get_f32(m, arch, "attention.layer_norm_rms_epsilon", &hp->rms_eps)))
        return rc;
    /* Bounds: everything below is used to size allocations. */
    if (hp->n_embd == 0 || hp->n_embd > 65536 || hp->n_ff == 0 || hp->n_ff > 262144 ||
        hp->n_layer == 0 || hp->n_layer > 512 || hp->n_head == 0 || hp->n_head > 1024 ||
        hp->n_head_kv == 0 || hp->n_head % hp->n_head_kv != 0 ||
        hp->n_ctx_train == 0 || hp->n_ctx_train > (1u << 24)) {
        lh_log_error("%s: inconsistent hyper-parameters (embd %zu, ff %zu, layers %zu, heads %zu/%zu, ctx %zu)",
                     m->path, hp->n_embd, hp->n_ff, hp->n_layer, hp->n_head, hp->n_head_kv,
                     hp->n_ctx_train);
        return LH_E_FORMAT;
    }
    /* head_dim: attention.key_length (Llama 3.x, Mistral write it), else n_embd / n_head; values
     * must have the same width (attention.value_length). */
    hp->head_dim = 0;
    size_t v_len = 0;
    if ((rc = get_u32(m, arch, "attention.key_length", &hp->head_dim, 0)) ||
        (rc = get_u32(m, arch, "attention.value_length", &v_len, 0)))
        return rc;
    if (hp->head_dim == 0) {
        if (hp->n_embd % hp->n_head != 0) {
            lh_log_error("%s: embedding_length %zu is not a multiple of head_count %zu and "
                         "attention.key_length is absent", m->path, hp->n_embd, hp->n_head);
            return LH_E_FORMAT;
        }
        hp->head_dim = hp->n_embd / hp->n_head;
    }
    if (hp->head_dim > 1024 || (v_len && v_len != hp->head_dim)) {
        lh_log_error("%s: attention.key_length %zu / value_length %zu: heads of at most 1024 with "
                     "equal key and value widths only", m->path, hp->head_dim, v_len);
        return LH_E_FORMAT;
    }
    hp->n_rot = hp->head_dim;
    if ((rc = get_u32(m, arch, "rope.dimension_count", &hp->n_rot, 0)))
        return rc;
    if (hp->n_rot == 0 || hp->n_rot > hp->head_dim || hp->n_rot % 2 != 0) {
        lh_log_error("%s: rope.dimension_count %zu does not fit head_dim %zu", m->path, hp->n_rot,
                     hp->head_dim);
        return LH_E_FORMAT;
    }
    if (!(hp->rope.base > 0) || !isfinite(hp->rope.base) || !(hp->rms_eps > 0) || hp->rms_eps > 1) {
        lh_log_error("%s: bad rope.freq_base %g or rms epsilon %g", m->path, hp->rope.base,
                     hp->rms_eps);
        return LH_E_FORMAT;
    }
    /* LongHeads defaults a model may carry (the project's passkey models do): ignored unless
     * they describe a valid layout. */
    uint32_t lw = 0, lL = 0;
    if (lh_gguf_get_u32(m->gguf, "longheads.chunk_size", &lw) == 0 &&
        lh_gguf_get_u32(m->gguf, "longheads.window", &lL) == 0 && lw > 0 && lL % lw == 0 &&
        lL >= 2 * lw && lL <= (1u << 20)) {
        hp->lh_chunk = lw;
        hp->lh_window = lL;
    }
    return load_rope_scaling(m, arch);
}

static int load_weights(lh_model *m)
{
    const lh_hparams *hp = &m->hp;
    size_t hd = hp->head_dim, q_dim = hp->n_head * hd, kv_dim = hp->n_head_kv * hd;
    int rc;
    const lh_gguf_tensor *emb = lh_gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!emb || emb->n_dims != 2 || emb->ne[0] != hp->n_embd || emb->ne[1] == 0 ||
        emb->ne[1] > (1u << 24)) {
        lh_log_error("%s: token_embd.weight is missing or not [%zu, n_vocab]", m->path, hp->n_embd);
        return LH_E_FORMAT;
    }
    m->hp.n_vocab = (size_t)emb->ne[1];
    if (lh_tok_n_vocab(m->tok) != m->hp.n_vocab) {
        lh_log_error("%s: the vocabulary has %zu tokens but token_embd.weight has %zu rows", m->path,
                     lh_tok_n_vocab(m->tok), m->hp.n_vocab);
        return LH_E_FORMAT;
    }
    if ((rc = find_weight(m, "token_embd.weight", hp->n_embd, hp->n_vocab, &m->tok_embd)))
        return rc;
    if (lh_gguf_find_tensor(m->gguf, "output.weight")) {
        if ((rc = find_weight(m, "output.weight", hp->n_embd, hp->n_vocab, &m->output)))
            return rc;
    } else {
        m->output = m->tok_embd; /* tied classifier */
    }
    if ((rc = load_vec(m, "output_norm.weight", hp->n_embd, &m->output_norm)) ||
        (rc = load_vec_opt(m, "output.bias", hp->n_vocab, &m->output_bias)))
        return rc;
    /* Llama 3.1+: one divisor per rotated pair, shared by all layers (llama.cpp: theta / ff). */
    if ((rc = load_vec_opt(m, "rope_freqs.weight", hp->n_rot / 2, &m->rope_freqs)))
        return rc;
    if (m->rope_freqs) {
        for (size_t i = 0; i < hp->n_rot / 2; i++)
            if (!(m->rope_freqs[i] > 0) || !isfinite(m->rope_freqs[i])) {
                lh_log_error("%s: rope_freqs.weight[%zu] = %g is not a positive number", m->path, i,
                             m->rope_freqs[i]);
                return LH_E_FORMAT;
            }
        m->hp.rope.freq_factors = m->rope_freqs;
    }
    int bias_required = hp->arch == LH_ARCH_QWEN2;
    m->layers = calloc(hp->n_layer, sizeof *m->layers);
    if (!m->layers)
        return -ENOMEM;
    for (size_t l = 0; l < hp->n_layer; l++) {
        layer *L = &m->layers[l];
        char name[96];
#define NAME(suffix) (snprintf(name, sizeof name, "blk.%zu." suffix, l), name)
        if ((rc = load_vec(m, NAME("attn_norm.weight"), hp->n_embd, &L->attn_norm)) ||
            (rc = load_vec(m, NAME("ffn_norm.weight"), hp->n_embd, &L->ffn_norm)) ||
            (rc = find_weight(m, NAME("attn_q.weight"), hp->n_embd, q_dim, &L->wq)) ||
            (rc = find_weight(m, NAME("attn_k.weight"), hp->n_embd, kv_dim, &L->wk)) ||
            (rc = find_weight(m, NAME("attn_v.weight"), hp->n_embd, kv_dim, &L->wv)) ||
            (rc = find_weight(m, NAME("attn_output.weight"), q_dim, hp->n_embd, &L->wo)) ||
            (rc = find_weight(m, NAME("ffn_gate.weight"), hp->n_embd, hp->n_ff, &L->w_gate)) ||
            (rc = find_weight(m, NAME("ffn_up.weight"), hp->n_embd, hp->n_ff, &L->w_up)) ||
            (rc = find_weight(m, NAME("ffn_down.weight"), hp->n_ff, hp->n_embd, &L->w_down)))
            return rc;
        if (bias_required && ((rc = load_vec(m, NAME("attn_q.bias"), q_dim, &L->bq)) ||
                              (rc = load_vec(m, NAME("attn_k.bias"), kv_dim, &L->bk)) ||
                              (rc = load_vec(m, NAME("attn_v.bias"), kv_dim, &L->bv))))
            return rc;
        if ((!L->bq && (rc = load_vec_opt(m, NAME("attn_q.bias"), q_dim, &L->bq))) ||
            (!L->bk && (rc = load_vec_opt(m, NAME("attn_k.bias"), kv_dim, &L->bk))) ||
            (!L->bv && (rc = load_vec_opt(m, NAME("attn_v.bias"), kv_dim, &L->bv))) ||
            (rc = load_vec_opt(m, NAME("attn_output.bias"), hp->n_embd, &L->bo)) ||
            (rc = load_vec_opt(m, NAME("ffn_gate.bias"), hp->n_ff, &L->b_gate)) ||
            (rc = load_vec_opt(m, NAME("ffn_up.bias"), hp->n_ff, &L->b_up)) ||
            (rc = load_vec_opt(m, NAME("ffn_down.bias"), hp->n_embd, &L->b_down)))
            return rc;
#undef NAME
    }
    return 0;
}

/* llama.cpp's end-of-generation set (llama-vocab.cpp) is the vocabulary's (lh_tok_is_eog: eos,
 * eot, eom and the tokens spelled <|eot_id|>, <|im_end|>, ...) plus the fill-in-the-middle
 * pad/rep/sep ids when the file names them. */
static const char *const eog_keys[] = {
    "tokenizer.ggml.fim_pad_token_id", "tokenizer.ggml.fim_rep_token_id",
    "tokenizer.ggml.fim_sep_token_id",
};

static int add_eog(lh_model *m, int32_t id, size_t *capp)
{
    for (size_t i = 0; i < m->n_eog; i++)
        if (m->eog[i] == id)
            return 0;
    if (m->n_eog == *capp) {
        size_t cap = *capp ? 2 * *capp : 8;
        int32_t *e = realloc(m->eog, cap * sizeof *e);
        if (!e)
            return -ENOMEM;
        m->eog = e;
        *capp = cap;
    }
    size_t i = m->n_eog++;
    for (; i > 0 && m->eog[i - 1] > id; i--)
        m->eog[i] = m->eog[i - 1];
    m->eog[i] = id;
    return 0;
}

static int load_eog(lh_model *m)
{
    size_t cap = 0, n_vocab = lh_tok_n_vocab(m->tok);
    int rc;
    for (size_t id = 0; id < n_vocab; id++)
        if (lh_tok_is_eog(m->tok, (int32_t)id) && (rc = add_eog(m, (int32_t)id, &cap)))
            return rc;
    for (size_t k = 0; k < sizeof eog_keys / sizeof *eog_keys; k++) {
        uint32_t id;
        /* like llama.cpp, an id past the vocabulary is ignored (it logs a warning) */
        if (lh_gguf_get_u32(m->gguf, eog_keys[k], &id) == 0 && id < n_vocab &&
            (rc = add_eog(m, (int32_t)id, &cap)))
            return rc;
    }
    return 0;
}

size_t lh_mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            break;
    fclose(f);
    return kb > SIZE_MAX / 1024 ? SIZE_MAX : (size_t)kb * 1024;
}

int lh_model_open(lh_model **mp, const char *path) { return lh_model_open_ex(mp, path, LH_WEIGHTS_AUTO); }

int lh_model_weights_loaded(const lh_model *m) { return lh_gguf_loaded(m->gguf); }

int lh_weights_hold_parse(const char *s, lh_weights_hold *out)
{
    static const char *names[] = { "auto", "map", "load" };
    for (int i = 0; i < 3; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (lh_weights_hold)i;
            return 0;
        }
    return LH_E_FORMAT;
}

int lh_model_open_ex(lh_model **mp, const char *path, lh_weights_hold hold)
{
    int rc;
    lh_model *m = calloc(1, sizeof *m);
    if (!m) {
        rc = -ENOMEM;
        goto fail;
    }
    m->path = strdup(path);
    if (!m->path) {
        rc = -ENOMEM;
        goto fail;
    }
    size_t load_max = hold == LH_WEIGHTS_MAP ? 0 : hold == LH_WEIGHTS_LOAD ? SIZE_MAX
                                                                          : lh_mem_available() / 2;
    if ((rc = lh_gguf_open_ex(&m->gguf, path, load_max)))
        goto fail;
    if ((rc = load_hparams(m)))
        goto fail;
    if ((rc = lh_tok_load(&m->tok, m->gguf)))
        goto fail;
    if ((rc = load_weights(m)) || (rc = load_eog(m)))
        goto fail;
    const lh_hparams *hp = &m->hp;
    const char *type = lh_type_name(m->layers[0].wq.t->type);
    snprintf(m->desc, sizeof m->desc,
             "%s, %zu layers, dim %zu, ff %zu, %zu heads (%zu kv), vocab %zu, %s, %.2fM params, trained ctx %zu",
             lh_model_arch_name(m), hp->n_layer, hp->n_embd, hp->n_ff, hp->n_head, hp->n_head_kv, hp->n_vocab, type,
             m->n_params / 1e6, hp->n_ctx_train);
    *mp = m;
    return 0;
fail:
    lh_model_close(m);
    return rc;
}

void lh_model_close(lh_model *m)
{
    if (!m)
        return;
    if (m->layers) {
        for (size_t l = 0; l < m->hp.n_layer; l++) {
            free(m->layers[l].attn_norm);
            free(m->layers[l].ffn_norm);
            free(m->layers[l].bq);
            free(m->layers[l].bk);
            free(m->layers[l].bv);
            free(m->layers[l].bo);
            free(m->layers[l].b_gate);
            free(m->layers[l].b_up);
            free(m->layers[l].b_down);
        }
        free(m->layers);
    }
    free(m->output_norm);
    free(m->output_bias);
    free(m->rope_freqs);
    free(m->eog);
    lh_tok_free(m->tok);
    lh_gguf_close(m->gguf);
    free(m->path);
    free(m);
}

const lh_hparams *lh_model_hparams(const lh_model *m) { return &m->hp; }
const lh_tok *lh_model_tok(const lh_model *m) { return m->tok; }
const char *lh_model_desc(const lh_model *m) { return m->desc; }
const char *lh_model_path(const lh_model *m) { return m->path; }
const lh_gguf *lh_model_gguf(const lh_model *m) { return m->gguf; }
size_t lh_model_n_params(const lh_model *m) { return m->n_params; }
const char *lh_model_arch_name(const lh_model *m) { return archs[m->hp.arch].name; }

int lh_model_is_eog(const lh_model *m, int32_t id)
{
    size_t lo = 0, hi = m->n_eog;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (m->eog[mid] == id)
            return 1;
        if (m->eog[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

size_t lh_model_eog_ids(const lh_model *m, const int32_t **idsp)
{
    *idsp = m->eog;
    return m->n_eog;
}

/* ------------------------------------------------------------------------------------------ */
/* contexts                                                                                     */

/* The default prefill slice (n_batch 0 means it too).  GEMMs of 256 rows: 1.5-1.9x the prefill
 * speed of 64 (stories110M F32, measured); 512 (llama.cpp's default micro-batch) for LongHeads
 * past the window, whose work items read each selected chunk once for all the slice's queries
 * that chose it: 128x L prefill 1.35-1.37x its 1x cost against 1.41-1.43x at 256
 * (longheads-bench, dim-512 model, alternating). */
#define DEFAULT_BATCH 512

void lh_ctx_params_default(lh_ctx_params *p)
{
    memset(p, 0, sizeof *p);
    p->n_batch = DEFAULT_BATCH;
    p->kv_type = LH_TYPE_F32;
    p->attn = LH_ATTN_FULL;
}

/* Anonymous, lazily committed memory for the KV cache. */
static void *map_zeroed(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static int add_matmul(lh_ctx *c, const weight *w)
{
    const lh_gguf_tensor *t = w->t;
    for (size_t i = 0; i < c->n_mms; i++)
        if (c->mms[i].type == t->type && c->mms[i].n_in == t->ne[0] && c->mms[i].n_out == t->ne[1])
            return 0;
    if (c->n_mms == N_MM_SLOTS)
        return -ENOMEM; /* cannot happen for llama: at most 7 shapes x 2 types */
    mm_slot *s = &c->mms[c->n_mms];
    int rc = lh_matmul_new(&s->mm, (lh_type)t->type, (size_t)t->ne[0], (size_t)t->ne[1], c->p.n_batch);
    if (rc)
        return rc;
    s->type = t->type;
    s->n_in = (size_t)t->ne[0];
    s->n_out = (size_t)t->ne[1];
    c->n_mms++;
    return 0;
}

/* y (n, n_out) = x (n, n_in) · Wᵀ through the context's matmul for that shape. */
static int matmul(lh_ctx *c, const weight *w, const float *x, size_t n, float *y)
{
    const lh_gguf_tensor *t = w->t;
    for (size_t i = 0; i < c->n_mms; i++) {
        mm_slot *s = &c->mms[i];
        if (s->type == t->type && s->n_in == t->ne[0] && s->n_out == t->ne[1]) {
            int rc = lh_matmul_run(s->mm, t->data, x, n, y);
            return rc == LH_MATMUL_STOPPED ? LH_E_CANCELLED : rc;   /* the abort, polled inside */
        }
    }
    return -EINVAL; /* every weight got a slot in lh_ctx_new */
}

/* Decode (n == 1): y_j = x · W_jᵀ for the k weights ws[j] in one parallel region
 * (lh_matmul_run_gemvs) when they share type and n_in; otherwise, and for prefill, one matmul
 * each. */
static int aborted(const lh_ctx *c);

/* The products of ws with the same x: one fused GEMV for a decode step, else one after the
 * other, with check the abort check (aborted) between them. */
static int matmuls(lh_ctx *c, const weight *const *ws, size_t k, const float *x, size_t n,
                   float *const *ys, int check)
{
    lh_matmul *ms[3];
    const void *data[3];
    int fuse = n == 1 && k <= 3;
    for (size_t j = 0; j < k && fuse; j++) {
        const lh_gguf_tensor *t = ws[j]->t;
        fuse = t->type == ws[0]->t->type && t->ne[0] == ws[0]->t->ne[0];
        ms[j] = NULL;
        for (size_t i = 0; i < c->n_mms && fuse; i++) {
            mm_slot *s = &c->mms[i];
            if (s->type == t->type && s->n_in == t->ne[0] && s->n_out == t->ne[1])
                ms[j] = s->mm;
        }
        data[j] = t->data;
        fuse = fuse && ms[j];
    }
    if (fuse)
        return lh_matmul_run_gemvs(ms, data, k, x, ys);
    int rc = 0;
    for (size_t j = 0; j < k && rc == 0; j++) {
        if (j > 0 && check && aborted(c))
            return LH_E_CANCELLED;
        rc = matmul(c, ws[j], x, n, ys[j]);
    }
    return rc;
}

static int resolve_params(const lh_model *m, lh_ctx_params *p)
{
    const lh_hparams *hp = &m->hp;
    if (p->n_ctx == 0)
        p->n_ctx = hp->n_ctx_train;
    if (p->n_batch == 0)
        p->n_batch = DEFAULT_BATCH;
    if (p->n_ctx > (1u << 22) || p->n_batch > 4096) {
        lh_log_error("context %zu tokens / batch %zu is past the limits (4194304 / 4096)", p->n_ctx,
                     p->n_batch);
        return -EINVAL;
    }
    if (p->kv_type != LH_TYPE_F32 && p->kv_type != LH_TYPE_F16) {
        lh_log_error("KV cache type %s is not supported (F32 or F16)", lh_type_name(p->kv_type));
        return -EINVAL;
    }
    if (p->kv_dir) {
        /* every (layer, k/v, head) segment of the file mapping starts on a page */
        size_t a = lh_kvfile_ctx_align(lh_type_row_size(p->kv_type, hp->head_dim));
        p->n_ctx = (p->n_ctx + a - 1) / a * a;
        if (p->n_ctx > (1u << 22))
            p->n_ctx -= a;
    }
    if (p->attn == LH_ATTN_LONGHEADS) {
        if (p->chunk == 0 && p->window == 0 && hp->lh_chunk) {
            p->chunk = hp->lh_chunk;
            p->window = hp->lh_window;
        }
        if (p->chunk == 0)
            p->chunk = 256;
        if (p->window == 0) {
            p->window = hp->n_ctx_train / p->chunk * p->chunk;
            if (p->window < 2 * p->chunk) {
                p->chunk = hp->n_ctx_train / 2;
                p->window = 2 * p->chunk;
            }
        }
        if (p->chunk == 0 || p->window % p->chunk != 0 || p->window < 2 * p->chunk) {
            lh_log_error("LongHeads needs a window that is a multiple of the chunk and at least two "
                         "chunks (chunk %zu, window %zu)", p->chunk, p->window);
            return -EINVAL;
        }
        if (p->recent >= p->window / p->chunk) {
            lh_log_error("LongHeads keeps at most window/chunk - 1 = %zu recent chunks besides the "
                         "first (chunk %zu, window %zu, recent %zu)", p->window / p->chunk - 1,
                         p->chunk, p->window, p->recent);
            return -EINVAL;
        }
        p->recent = lh_lh_recent(&(lh_lh_params){.chunk = p->chunk, .window = p->window,
                                                 .recent = p->recent});
    } else if (p->attn != LH_ATTN_FULL) {
        lh_log_error("unknown attention mode %d", (int)p->attn);
        return -EINVAL;
    }
    return 0;
}

/* The LongHeads geometry of a context (its resolved params and the model's shape). */
static lh_lh_params lh_params_of(const lh_ctx *c)
{
    const lh_hparams *hp = &c->m->hp;
    return (lh_lh_params){
        .n_layer = hp->n_layer, .n_head = hp->n_head, .n_head_kv = hp->n_head_kv,
        .head_dim = hp->head_dim, .n_rot = hp->n_rot, .rope = hp->rope, .chunk = c->p.chunk, .window = c->p.window,
        .n_ctx = c->p.n_ctx, .kv_type = c->p.kv_type,
        .score = c->p.score == LH_SCORE_BOUND ? LH_LH_SCORE_BOUND : LH_LH_SCORE_REP,
        .branch_and_bound = c->p.select == LH_SELECT_TREE, .recent = c->p.recent,
    };
}

int lh_ctx_new(lh_ctx **cp, const lh_model *m, const lh_ctx_params *params)
{
    int rc;
    const lh_hparams *hp = &m->hp;
    lh_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->m = m;
    c->p = *params;
    if ((rc = resolve_params(m, &c->p)))
        goto fail;
    const lh_ctx_params *p = &c->p;
#ifdef _OPENMP
    c->n_threads = (size_t)omp_get_max_threads();
#else
    c->n_threads = 1;
#endif
    c->shape = (lh_attn_shape){ .n_head = hp->n_head, .n_head_kv = hp->n_head_kv,
                                .head_dim = hp->head_dim, .n_ctx = p->n_ctx, .kv_type = p->kv_type };
    size_t hd = hp->head_dim, q_dim = hp->n_head * hd, kv_dim = hp->n_head_kv * hd, nb = p->n_batch;
    c->kv_layer_size = lh_type_row_size(p->kv_type, kv_dim) * p->n_ctx;
    c->tokens = malloc(p->n_ctx * sizeof *c->tokens);
    c->k = calloc(hp->n_layer, sizeof *c->k);
    c->v = calloc(hp->n_layer, sizeof *c->v);
    c->x = malloc(nb * hp->n_embd * sizeof(float));
    c->xb = malloc(nb * hp->n_embd * sizeof(float));
    c->q = malloc(nb * q_dim * sizeof(float));
    c->kb = malloc(nb * kv_dim * sizeof(float));
    c->vb = malloc(nb * kv_dim * sizeof(float));
    c->att = malloc(nb * q_dim * sizeof(float));
    c->hb = malloc(nb * hp->n_ff * sizeof(float));
    c->hb2 = malloc(nb * hp->n_ff * sizeof(float));
    if (!c->tokens || !c->k || !c->v || !c->x || !c->xb || !c->q || !c->kb || !c->vb || !c->att ||
        !c->hb || !c->hb2) {
        rc = -ENOMEM;
        goto fail;
    }
    if (p->kv_dir) {
        /* segments (layer, k/v, KV head) in the cache's own order: layer l's k is heads
         * 2l*n_kv .., its v 2l*n_kv + n_kv .. */
        if (!(c->kv_dir = strdup(p->kv_dir))) {
            rc = -ENOMEM;
            goto fail;
        }
        c->p.kv_dir = c->kv_dir;
        if ((rc = lh_kvfile_open(&c->kvf, p->kv_dir, 2 * hp->n_layer * hp->n_head_kv,
                                 lh_type_row_size(p->kv_type, hd), p->n_ctx, p->kv_budget)))
            goto fail;
        for (size_t l = 0; l < hp->n_layer; l++) {
            c->k[l] = lh_kvfile_seg(c->kvf, 2 * l * hp->n_head_kv);
            c->v[l] = lh_kvfile_seg(c->kvf, (2 * l + 1) * hp->n_head_kv);
        }
    } else {
        for (size_t l = 0; l < hp->n_layer; l++) {
            c->k[l] = map_zeroed(c->kv_layer_size);
            c->v[l] = map_zeroed(c->kv_layer_size);
            if (!c->k[l] || !c->v[l]) {
                rc = -ENOMEM;
                goto fail;
            }
        }
    }
    if (p->attn == LH_ATTN_FULL) {
        size_t ss = lh_attn_scratch_size(&c->shape, nb);
        c->attn_scratch = malloc(ss * c->n_threads + 64);
        if (!c->attn_scratch) {
            rc = -ENOMEM;
            goto fail;
        }
    } else {
        lh_lh_params lp = lh_params_of(c);
        if ((rc = lh_lh_new(&c->lh, &lp, nb)))
            goto fail;
        if (!(c->rope_keys = malloc(c->p.chunk * (hp->n_rot ? hp->n_rot : 1) * sizeof(float)))) {
            rc = -ENOMEM;
            goto fail;
        }
        lh_ops_rope_table(c->rope_keys, c->p.chunk, hp->n_rot, &hp->rope);
    }
    if ((rc = add_matmul(c, &m->output)))
        goto fail;
    for (size_t l = 0; l < hp->n_layer; l++) {
        const layer *L = &m->layers[l];
        const weight *ws[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
        for (size_t i = 0; i < sizeof ws / sizeof *ws; i++)
            if ((rc = add_matmul(c, ws[i])))
                goto fail;
    }
    *cp = c;
    return 0;
fail:
    if (rc == -ENOMEM && !c->kvf)
        lh_log_error("out of memory creating a context of %zu tokens", c->p.n_ctx);
    lh_ctx_free(c);
    return rc;
}

void lh_ctx_free(lh_ctx *c)
{
    if (!c)
        return;
    size_t n_layer = c->m->hp.n_layer;
    for (size_t l = 0; !c->kvf && c->k && l < n_layer; l++)
        if (c->k[l])
            munmap(c->k[l], c->kv_layer_size);
    for (size_t l = 0; !c->kvf && c->v && l < n_layer; l++)
        if (c->v[l])
            munmap(c->v[l], c->kv_layer_size);
    lh_kvfile_close(c->kvf);
    free(c->kv_dir);
    for (size_t i = 0; i < c->n_mms; i++)
        lh_matmul_free(c->mms[i].mm);
    lh_lh_free(c->lh);
    free(c->rope_keys);
    free(c->k);
    free(c->v);
    free(c->tokens);
    free(c->x);
    free(c->xb);
    free(c->q);
    free(c->kb);
    free(c->vb);
    free(c->att);
    free(c->hb);
    free(c->hb2);
    free(c->attn_scratch);
    free(c);
}

void lh_ctx_set_abort(lh_ctx *c, lh_ctx_abort_fn fn, void *ud)
{
    c->abort_fn = fn;
    c->abort_ud = ud;
    for (size_t i = 0; i < c->n_mms; i++)   /* long prefill products poll it too */
        lh_matmul_set_poll(c->mms[i].mm, fn, ud);
}

const lh_ctx_params *lh_ctx_params_get(const lh_ctx *c) { return &c->p; }

const lh_model *lh_ctx_model(const lh_ctx *c) { return c->m; }
size_t lh_ctx_n_past(const lh_ctx *c) { return c->n_past; }
const int32_t *lh_ctx_tokens(const lh_ctx *c) { return c->tokens; }

size_t lh_ctx_truncate(lh_ctx *c, size_t n_keep)
{
    if (n_keep > c->n_past)
        n_keep = c->n_past;
    if (c->lh)
        n_keep = lh_lh_truncate(c->lh, n_keep);
    c->n_past = n_keep;
    return n_keep;
}

lh_lh *lh_ctx_longheads(lh_ctx *c)
{
    return c->lh;
}

size_t lh_ctx_kv_bytes_per_token(const lh_ctx *c)
{
    const lh_hparams *hp = &c->m->hp;
    return 2 * hp->n_layer * lh_type_row_size(c->p.kv_type, hp->n_head_kv * hp->head_dim);
}

double lh_ctx_lh_bytes_per_token(const lh_ctx *c)
{
    if (!c->lh)
        return 0;
    lh_lh_params lp = lh_params_of(c);
    return lh_lh_bytes_per_token(&lp);
}

/* ------------------------------------------------------------------------------------------ */
/* forward                                                                                      */

/* y (n, dim) += b (dim) per row; nothing when the bias is absent. */
static void add_bias(float *y, const float *b, size_t n, size_t dim)
{
    if (!b)
        return;
    for (size_t i = 0; i < n; i++)
        lh_ops_add(y + i * dim, b, dim);
}

/* The pages of the KV cache rows pos0 .. pos0+n-1 (every layer, K and V, KV head) made resident
 * in one call each (MADV_POPULATE_WRITE, Linux 5.14) instead of one fault per page as the rows
 * are stored: the same pages, so the resident KV stays within kv_touched's bound.  Advice only:
 * an older kernel refuses it and the stores fault the pages in as before. */
static void populate_kv(const lh_ctx *c, size_t pos0, size_t n)
{
#ifdef MADV_POPULATE_WRITE
    const lh_hparams *hp = &c->m->hp;
    size_t row = lh_type_row_size(c->p.kv_type, hp->head_dim), page = 4096;
    for (size_t l = 0; l < hp->n_layer; l++)
        for (size_t h = 0; h < 2 * hp->n_head_kv; h++) {
            char *seg = (char *)(h < hp->n_head_kv ? c->k[l] : c->v[l]) +
                        h % hp->n_head_kv * c->p.n_ctx * row;
            uintptr_t a = (uintptr_t)(seg + pos0 * row) & ~(uintptr_t)(page - 1);
            uintptr_t e = (uintptr_t)(seg + (pos0 + n) * row);
            madvise((void *)a, e - a, MADV_POPULATE_WRITE);
        }
#else
    (void)c, (void)pos0, (void)n;
#endif
}

/* The abort check of forward: between layers and inside each, before the attention (slices of
 * more than one token) and after it, between the FFN's gate and up products (slices of more
 * than one token: a decode step fuses them) and after them, so that a cancel waits for one of
 * these stretches at most: on the 1B F16 file in a 512-token slice (traced in the daemon) the
 * Q/K/V products ~20 ms, the attention and output product, the gate, the up and the down
 * product 33-45 ms each; inside those products our own GEMMs poll it too (lh_ctx_set_abort).
 * A slice stopped anywhere leaves n_past unchanged, whatever rows of the slice the layers so far
 * stored: the caller resyncs LongHeads and the next slice overwrites them. */
static int aborted(const lh_ctx *c)
{
    return c->abort_fn && c->abort_fn(c->abort_ud);
}

/* One slice of n <= n_batch tokens at positions c->n_past ..; logits as in lh_ctx_eval for this
 * slice (NULL, last row only, or all n rows). */
static int forward(lh_ctx *c, const int32_t *tokens, size_t n, float *logits, int all)
{
    const lh_model *m = c->m;
    const lh_hparams *hp = &m->hp;
    const size_t D = hp->n_embd, hd = hp->head_dim, q_dim = hp->n_head * hd;
    const size_t kv_dim = hp->n_head_kv * hd, pos0 = c->n_past;
    const int longheads = c->p.attn == LH_ATTN_LONGHEADS;
    int rc;

    const lh_gguf_tensor *emb = m->tok_embd.t;
    size_t emb_row = lh_type_row_size(emb->type, D);
    for (size_t i = 0; i < n; i++)
        lh_dequant_row((lh_type)emb->type, (const char *)emb->data + (size_t)tokens[i] * emb_row,
                       c->x + i * D, D);

    if (!c->kvf && n >= 64)   /* a decode step touches a new page once in 32+ steps */
        populate_kv(c, pos0, n);
    for (size_t l = 0; l < hp->n_layer; l++) {
        const layer *L = &m->layers[l];
        lh_ops_rmsnorm(c->xb, c->x, L->attn_norm, n, D, hp->rms_eps);
        const weight *qkv[3] = {&L->wq, &L->wk, &L->wv};
        if ((rc = matmuls(c, qkv, 3, c->xb, n, (float *const[3]){c->q, c->kb, c->vb}, 0)))
            return rc;
        add_bias(c->q, L->bq, n, q_dim);
        add_bias(c->kb, L->bk, n, kv_dim);
        add_bias(c->vb, L->bv, n, kv_dim);
        /* rotations and the cache rows, token by token on all threads (a slice's worth was ~5% of
         * a LongHeads prefill on one thread, the cos/sin of each position most of it) */
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n >= 64)
#endif
        for (size_t i = 0; i < n; i++) {
            size_t pos = pos0 + i;
            float *qi = c->q + i * q_dim, *ki = c->kb + i * kv_dim;
            if (hp->rope_neox) {
                lh_ops_neox_to_pairs(qi, hp->n_head, hd, hp->n_rot);
                lh_ops_neox_to_pairs(ki, hp->n_head_kv, hd, hp->n_rot);
            }
            if (longheads) {   /* lh_ops_rope's bits, from the table */
                lh_ops_rope_apply(ki, hp->n_head_kv, hd, hp->n_rot,
                                  c->rope_keys + pos % c->p.chunk * hp->n_rot);
            } else {
                lh_ops_rope(qi, hp->n_head, hd, hp->n_rot, (double)pos, &hp->rope);
                lh_ops_rope(ki, hp->n_head_kv, hd, hp->n_rot, (double)pos, &hp->rope);
            }
            lh_attn_store(&c->shape, c->k[l], pos, ki);
            lh_attn_store(&c->shape, c->v[l], pos, c->vb + i * kv_dim);
        }
        if (n > 1 && aborted(c))
            return LH_E_CANCELLED;
        if (longheads)
            rc = lh_lh_layer(c->lh, l, c->q, n, pos0, c->k[l], c->v[l], c->att);
        else
            lh_attn_dense(&c->shape, c->q, n, pos0, c->k[l], c->v[l], c->att, c->attn_scratch,
                          c->n_threads), rc = 0;
        if (rc || (rc = matmul(c, &L->wo, c->att, n, c->xb)))
            return rc;
        add_bias(c->xb, L->bo, n, D);
        lh_ops_add(c->x, c->xb, n * D);
        if (aborted(c))
            return LH_E_CANCELLED;

        lh_ops_rmsnorm(c->xb, c->x, L->ffn_norm, n, D, hp->rms_eps);
        const weight *gu[2] = {&L->w_gate, &L->w_up};
        if ((rc = matmuls(c, gu, 2, c->xb, n, (float *const[2]){c->hb, c->hb2}, 1)))
            return rc;
        add_bias(c->hb, L->b_gate, n, hp->n_ff);
        add_bias(c->hb2, L->b_up, n, hp->n_ff);
        lh_ops_swiglu(c->hb, c->hb, c->hb2, n * hp->n_ff);
        if (aborted(c))
            return LH_E_CANCELLED;
        if ((rc = matmul(c, &L->w_down, c->hb, n, c->xb)))
            return rc;
        add_bias(c->xb, L->b_down, n, D);
        lh_ops_add(c->x, c->xb, n * D);
        if (l + 1 < hp->n_layer && aborted(c))
            return LH_E_CANCELLED;
    }

    if (logits) {
        size_t first = all ? 0 : n - 1, rows = all ? n : 1;
        lh_ops_rmsnorm(c->xb, c->x + first * D, m->output_norm, rows, D, hp->rms_eps);
        if ((rc = matmul(c, &m->output, c->xb, rows, logits)))
            return rc;
        add_bias(logits, m->output_bias, rows, hp->n_vocab);
    }
    memcpy(c->tokens + pos0, tokens, n * sizeof *tokens);
    c->n_past += n;
    return 0;
}

/* An upper bound of the KV bytes a slice of n tokens at pos0 may have made resident: its own rows
 * and the rows attention read, per segment: full attention reads every row; with LongHeads each
 * query head reads its K chunks (at most a page more than the chunk each). */
static size_t kv_touched(const lh_ctx *c, size_t pos0, size_t n)
{
    const lh_hparams *hp = &c->m->hp;
    size_t row = lh_type_row_size(c->p.kv_type, hp->head_dim), n_seg = 2 * hp->n_layer * hp->n_head_kv;
    double rows = (double)(pos0 + n), extra = 0;
    if (c->p.attn == LH_ATTN_LONGHEADS) {
        double group = (double)(hp->n_head / hp->n_head_kv), K = (double)(c->p.window / c->p.chunk);
        double sel = (double)n * group * (double)c->p.window;
        if (sel < rows) {
            rows = sel + (double)n;
            extra = (double)n * group * K * 4096.0;
        }
    }
    double b = (rows * (double)row + extra) * (double)n_seg;
    return b > (double)SIZE_MAX / 2 ? SIZE_MAX / 2 : (size_t)b;
}

size_t lh_ctx_kv_file_size(const lh_ctx *c) { return c->kvf ? lh_kvfile_file_size(c->kvf) : 0; }
size_t lh_ctx_kv_drops(const lh_ctx *c) { return c->kvf ? lh_kvfile_n_drops(c->kvf) : 0; }

size_t lh_ctx_savable(const lh_ctx *c, size_t n)
{
    if (n > c->n_past)
        n = c->n_past;
    return c->lh ? lh_lh_keepable(c->lh, n) : n;
}

size_t lh_ctx_state_size(const lh_ctx *c, size_t n)
{
    size_t total = n * sizeof(int32_t) + 2 * c->m->hp.n_layer * n *
                   lh_type_row_size(c->p.kv_type, c->m->hp.n_head_kv * c->m->hp.head_dim);
    return total + (c->lh ? lh_lh_state_size(c->lh, n) : 0);
}

/* The rows [0, n) of every (layer, k/v, head) segment through fn. */
static int kv_io(lh_ctx *c, size_t n, lh_ctx_io_fn fn, void *ud)
{
    const lh_hparams *hp = &c->m->hp;
    size_t row = lh_type_row_size(c->p.kv_type, hp->head_dim);
    int rc;
    for (size_t l = 0; l < hp->n_layer; l++)
        for (size_t kv = 0; kv < 2; kv++)
            for (size_t g = 0; g < hp->n_head_kv; g++) {
                char *seg = (char *)(kv ? c->v[l] : c->k[l]) + g * c->p.n_ctx * row;
                if (n && (rc = fn(ud, seg, n * row)))
                    return rc;
                if (c->kvf) /* written or read once: keep the mapping under its budget */
                    lh_kvfile_touch(c->kvf, n * row);
            }
    return 0;
}

int lh_ctx_state_save(lh_ctx *c, size_t n, lh_ctx_io_fn fn, void *ud)
{
    if (lh_ctx_savable(c, n) != n)
        return -EINVAL;
    int rc;
    if ((rc = fn(ud, c->tokens, n * sizeof *c->tokens)) || (rc = kv_io(c, n, fn, ud)))
        return rc;
    return c->lh ? lh_lh_state_save(c->lh, n, (lh_lh_io_fn)fn, ud) : 0;
}

int lh_ctx_state_load(lh_ctx *c, size_t n, lh_ctx_io_fn fn, void *ud)
{
    lh_ctx_truncate(c, 0);
    if (n >= c->p.n_ctx)
        return LH_E_LIMIT;
    int rc = c->kvf ? lh_kvfile_reserve(c->kvf, n) : 0;
    if (rc || (rc = fn(ud, c->tokens, n * sizeof *c->tokens)) || (rc = kv_io(c, n, fn, ud)) ||
        (c->lh && (rc = lh_lh_state_load(c->lh, n, (lh_lh_io_fn)fn, ud)))) {
        lh_ctx_truncate(c, 0);
        return rc;
    }
    for (size_t i = 0; i < n; i++)
        if (c->tokens[i] < 0 || (size_t)c->tokens[i] >= c->m->hp.n_vocab) {
            lh_ctx_truncate(c, 0);
            return LH_E_FORMAT;
        }
    c->n_past = n;
    return 0;
}

int lh_ctx_eval(lh_ctx *c, const int32_t *tokens, size_t n, float *logits, int all)
{
    const lh_hparams *hp = &c->m->hp;
    if (n == 0)
        return 0;
    if (n > c->p.n_ctx - c->n_past) {
        lh_log_error("context full: %zu tokens in the cache, %zu more do not fit in %zu", c->n_past,
                     n, c->p.n_ctx);
        return LH_E_LIMIT;
    }
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || (size_t)tokens[i] >= hp->n_vocab) {
            lh_log_error("token id %d at index %zu is outside the vocabulary (%zu)", tokens[i], i,
                         hp->n_vocab);
            return LH_E_FORMAT;
        }
    }
    for (size_t done = 0; done < n;) {
        size_t k = n - done < c->p.n_batch ? n - done : c->p.n_batch;
        int last = done + k == n;
        float *out = NULL;
        if (logits && all)
            out = logits + done * hp->n_vocab;
        else if (logits && last)
            out = logits;
        int rc = c->kvf ? lh_kvfile_reserve(c->kvf, c->n_past + k) : 0;
        if (rc)
            return rc;
        size_t n_before = c->n_past;
        rc = forward(c, tokens + done, k, out, all);
        if (c->kvf)
            lh_kvfile_touch(c->kvf, kv_touched(c, n_before, k));
        if (rc == LH_E_CANCELLED)
            lh_ctx_truncate(c, c->n_past);   /* layers that ran ahead are rewound */
        if (rc)
            return rc;
        done += k;
    }
    return 0;
}
