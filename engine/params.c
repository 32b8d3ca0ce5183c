/* engine/params — see params.h. */
#include "params.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "log.h"

void lh_params_default(lh_ctx_params *cp)
{
    lh_ctx_params_default(cp);
    cp->attn = LH_ATTN_LONGHEADS;
    cp->n_ctx = 0;
    /* An F16 KV cache, as llama.cpp's default: half the memory (twice the context in the same
     * budget) and half the bytes a decode step reads at depth.  Prefill and decode both attend to
     * the rounded cache, so prefill of N tokens still equals N-1 and one decode step, and
     * LongHeads inside the window still equals full attention (tests/test_model.c). */
    cp->kv_type = LH_TYPE_F16;
}

size_t lh_params_bytes_per_token(const lh_model *m, const lh_ctx_params *cp)
{
    const lh_hparams *hp = lh_model_hparams(m);
    size_t kv = 2 * hp->n_layer * lh_type_row_size(cp->kv_type, hp->n_head_kv * hp->head_dim);
    size_t lh = 0;
    if (cp->attn == LH_ATTN_LONGHEADS) {
        /* one F32 representation per chunk, layer and query head, or for bound an F32 min and
         * max per chunk, layer and KV head, and with --select tree a search tree of twice as
         * many nodes as chunks (kernels/longheads.c) */
        size_t chunk = cp->chunk ? cp->chunk : hp->lh_chunk ? hp->lh_chunk : 256;
        size_t per_chunk = cp->score != LH_SCORE_BOUND ? hp->n_head
                           : (cp->select == LH_SELECT_TREE ? 6 : 2) * hp->n_head_kv;
        lh = (hp->n_layer * per_chunk * hp->head_dim * sizeof(float) + chunk - 1) / chunk;
    }
    return kv + lh + sizeof(int32_t);
}

size_t lh_params_mem_bytes_per_token(const lh_model *m, const lh_ctx_params *cp)
{
    if (!cp->kv_dir)
        return lh_params_bytes_per_token(m, cp);
    const lh_hparams *hp = lh_model_hparams(m);
    size_t kv = 2 * hp->n_layer * lh_type_row_size(cp->kv_type, hp->n_head_kv * hp->head_dim);
    return lh_params_bytes_per_token(m, cp) - kv;
}

/* The KV working set a context on disk keeps resident at least: a few windows, or 32 MiB. */
static size_t kv_min_resident(const lh_model *m, const lh_ctx_params *cp)
{
    const lh_hparams *hp = lh_model_hparams(m);
    size_t kv = 2 * hp->n_layer * lh_type_row_size(cp->kv_type, hp->n_head_kv * hp->head_dim);
    size_t win = cp->window ? cp->window : hp->lh_window ? hp->lh_window : hp->n_ctx_train;
    size_t min = 4 * win * kv * (hp->n_head / hp->n_head_kv);
    return min > ((size_t)32 << 20) ? min : (size_t)32 << 20;
}

size_t lh_params_default_budget(const lh_model *m)
{
    size_t avail = lh_mem_available() / 4 * 3;
    /* mapped weights are page cache, which MemAvailable counts as available; read into memory
     * they are already taken from it */
    size_t model_size = lh_model_weights_loaded(m) ? 0 : lh_model_n_params(m) * 4; /* at most: F32 */
    return avail > model_size ? avail - model_size : 0;
}

static void fmt_bytes(char *buf, size_t cap, double b)
{
    if (b >= 1024.0 * 1024 * 1024)
        snprintf(buf, cap, "%.1f GiB", b / (1024.0 * 1024 * 1024));
    else
        snprintf(buf, cap, "%.0f MiB", b / (1024.0 * 1024));
}

/* fit_ctx with the KV cache on disk: memory holds the per-token state that stays in memory
 * (chunk representations, token ids) and the KV working set; the disk holds the KV cache. */
static int fit_on_disk(const lh_model *m, lh_ctx_params *cp, size_t n_slots, size_t budget,
                       int auto_budget, size_t cap, char *report, size_t report_size)
{
    size_t mem_tok = lh_params_mem_bytes_per_token(m, cp);
    size_t kv_tok = lh_params_bytes_per_token(m, cp) - mem_tok;
    size_t kv_min = kv_min_resident(m, cp), per_slot = budget / n_slots;
    char b1[32], b2[32], b3[96];
    fmt_bytes(b2, sizeof b2, (double)budget);
    struct statvfs vfs;
    if (statvfs(cp->kv_dir, &vfs) != 0) {
        lh_log_error("kv-dir %s: %s", cp->kv_dir, strerror(errno));
        return LH_E_LIMIT;
    }
    double disk = (double)vfs.f_bavail * (double)vfs.f_frsize;
    /* b3: the free space, and what of it is kept for the prompt cache (kv_disk_reserve) */
    fmt_bytes(b3, sizeof b3, disk);
    const char *fix = "";
    if (cp->kv_disk_reserve) {
        char b5[32];
        fmt_bytes(b5, sizeof b5, (double)cp->kv_disk_reserve);
        size_t len = strlen(b3);
        snprintf(b3 + len, sizeof b3 - len, " (%s of it kept for the prompt cache)", b5);
        disk = disk > (double)cp->kv_disk_reserve ? disk - (double)cp->kv_disk_reserve : 0;
        fix = ", lower --prompt-cache-size";
    }
    size_t disk_fits = (size_t)(disk / (double)kv_tok / (double)n_slots);
    size_t mem_fits = per_slot > kv_min ? (per_slot - kv_min) / mem_tok : 0;
    if (cp->n_ctx == 0) {
        size_t n = mem_fits < disk_fits ? mem_fits : disk_fits;
        cp->n_ctx = n < cap ? n : cap;
        if (cp->n_ctx < 256) {
            lh_log_error("kv-dir %s: only %zu tokens of context per slot fit (memory budget %s, "
                         "%s free on disk, %zu slot(s)); raise --max-memory, free disk space%s or "
                         "lower --slots", cp->kv_dir, cp->n_ctx, b2, b3, n_slots, fix);
            return LH_E_LIMIT;
        }
    } else if (cp->n_ctx > mem_fits && !(auto_budget && budget == 0)) {
        lh_log_error("kv-dir %s: a context of %zu tokens x %zu slot(s) keeps %zu bytes per token in "
                     "memory and a KV working set of at least %zu bytes per slot, over the memory "
                     "budget of %s; lower --ctx (at most %zu fits) or raise --max-memory",
                     cp->kv_dir, cp->n_ctx, n_slots, mem_tok, kv_min, b2, mem_fits);
        return LH_E_LIMIT;
    } else if (cp->n_ctx > disk_fits) {
        fmt_bytes(b1, sizeof b1, (double)cp->n_ctx * (double)kv_tok * (double)n_slots);
        lh_log_error("kv-dir %s: a context of %zu tokens x %zu slot(s) needs up to %s of KV cache "
                     "on disk, %s free; lower --ctx (at most %zu fits)%s or free disk space",
                     cp->kv_dir, cp->n_ctx, n_slots, b1, b3, disk_fits, fix);
        return LH_E_LIMIT;
    }
    size_t in_mem = cp->n_ctx * mem_tok;
    cp->kv_budget = per_slot > in_mem + kv_min ? per_slot - in_mem : kv_min;
    if (auto_budget && budget == 0)
        cp->kv_budget = 0;
    if (report && report_size) {
        fmt_bytes(b1, sizeof b1, (double)cp->n_ctx * (double)kv_tok);
        char b4[32];
        fmt_bytes(b4, sizeof b4, (double)cp->kv_budget);
        snprintf(report, report_size, "context %zu tokens per slot x %zu slot(s), KV cache on disk "
                 "in %s (%zu bytes per token, at most %s per slot, %s free), %zu bytes per token in "
                 "memory; KV pages resident per slot at most %s; memory budget %s (%s)",
                 cp->n_ctx, n_slots, cp->kv_dir, kv_tok, b1, b3, mem_tok, b4, b2,
                 auto_budget ? "3/4 of the available memory; --max-memory sets it" : "--max-memory");
    }
    return 0;
}

int lh_params_fit_ctx(const lh_model *m, lh_ctx_params *cp, size_t n_slots, size_t max_memory,
                      char *report, size_t report_size)
{
    const lh_hparams *hp = lh_model_hparams(m);
    int auto_budget = max_memory == 0;
    size_t budget = auto_budget ? lh_params_default_budget(m) : max_memory;
    size_t per_tok = lh_params_bytes_per_token(m, cp);
    if (n_slots == 0)
        n_slots = 1;
    size_t auto_cap = cp->kv_dir ? LH_PARAMS_CTX_AUTO_DISK : LH_PARAMS_CTX_AUTO;
    size_t cap = hp->n_ctx_train > auto_cap ? hp->n_ctx_train : auto_cap;
    if (cap > (1u << 22))
        cap = 1u << 22;
    size_t fits = budget / n_slots / per_tok;
    char b1[32], b2[32];
    fmt_bytes(b2, sizeof b2, (double)budget);
    if (cp->kv_dir)
        return fit_on_disk(m, cp, n_slots, budget, auto_budget, cap, report, report_size);
    if (cp->n_ctx == 0) {
        if (auto_budget && budget == 0)
            fits = hp->n_ctx_train; /* nothing known about the machine: the model's own length */
        cp->n_ctx = fits < cap ? fits : cap;
        if (cp->n_ctx < 256) {
            lh_log_error("the memory budget %s holds only %zu tokens of context per slot (%zu "
                         "bytes each, %zu slot(s)); raise --max-memory or lower --slots", b2,
                         cp->n_ctx, per_tok, n_slots);
            return LH_E_LIMIT;
        }
    } else if (cp->n_ctx > fits && !(auto_budget && budget == 0)) {
        fmt_bytes(b1, sizeof b1, (double)cp->n_ctx * (double)per_tok * (double)n_slots);
        lh_log_error("a context of %zu tokens x %zu slot(s) needs up to %s (%zu bytes per token), "
                     "over the memory budget of %s; lower --ctx (at most %zu fits) or raise "
                     "--max-memory", cp->n_ctx, n_slots, b1, per_tok, b2, fits);
        return LH_E_LIMIT;
    }
    if (report && report_size) {
        fmt_bytes(b1, sizeof b1, (double)cp->n_ctx * (double)per_tok);
        snprintf(report, report_size, "context %zu tokens per slot x %zu slot(s): %zu bytes per "
                 "token, at most %s per slot, committed as it fills; memory budget %s (%s)",
                 cp->n_ctx, n_slots, per_tok, b1, b2,
                 auto_budget ? "3/4 of the available memory; --max-memory sets it" : "--max-memory");
    }
    return 0;
}

int lh_params_parse_bytes(const char *s, size_t *outp)
{
    if (!s || *s < '0' || *s > '9')
        return LH_E_FORMAT;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return LH_E_FORMAT;
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: break;
    }
    if (shift && *end == 'i')
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end || v == 0 || v > (SIZE_MAX >> shift))
        return LH_E_FORMAT;
    *outp = (size_t)(v << shift);
    return 0;
}

int lh_params_parse_size(const char *s, size_t lo, size_t hi, size_t *outp)
{
    if (!s || *s < '0' || *s > '9')
        return LH_E_FORMAT;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return LH_E_FORMAT;
    *outp = (size_t)v;
    return 0;
}

static int parse_float(const char *s, double lo, double hi, int lo_open, float *outp)
{
    if (!s || !*s)
        return LH_E_FORMAT;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi || (lo_open && v == lo))
        return LH_E_FORMAT;
    *outp = (float)v;
    return 0;
}

/* value is a (*out = 0) or b (*out = 1): 0, else LH_E_FORMAT. */
static int pick2(const char *value, const char *a, const char *b, int *out)
{
    if (strcmp(value, a) == 0)
        *out = 0;
    else if (strcmp(value, b) == 0)
        *out = 1;
    else
        return LH_E_FORMAT;
    return 0;
}

static int key_is(const char *key, const char *name)
{
    for (; *key && *name; key++, name++) {
        char k = *key == '_' ? '-' : *key;
        if (k != *name)
            return 0;
    }
    return *key == 0 && *name == 0;
}

int lh_params_set(lh_ctx_params *cp, lh_sampler_params *sp, const char *key, const char *value)
{
    size_t z;
    int i;
    int rc = LH_E_NOTFOUND;
    const char *range = "";
    if (cp) {
        if (key_is(key, "ctx") || key_is(key, "ctx-size")) {
            range = "an integer in 1..4194304";
            if (!(rc = lh_params_parse_size(value, 1, 1u << 22, &z)))
                cp->n_ctx = z;
        } else if (key_is(key, "batch")) {
            range = "an integer in 1..4096";
            if (!(rc = lh_params_parse_size(value, 1, 4096, &z)))
                cp->n_batch = z;
        } else if (key_is(key, "kv")) {
            range = "f32 or f16";
            rc = LH_E_FORMAT;
            if (strcmp(value, "f32") == 0 || strcmp(value, "F32") == 0)
                cp->kv_type = LH_TYPE_F32, rc = 0;
            else if (strcmp(value, "f16") == 0 || strcmp(value, "F16") == 0)
                cp->kv_type = LH_TYPE_F16, rc = 0;
        } else if (key_is(key, "attn")) {
            range = "full or longheads";
            if (!(rc = pick2(value, "full", "longheads", &i)))
                cp->attn = i ? LH_ATTN_LONGHEADS : LH_ATTN_FULL;
        } else if (key_is(key, "score")) {
            range = "rep or bound";
            if (!(rc = pick2(value, "rep", "bound", &i)))
                cp->score = i ? LH_SCORE_BOUND : LH_SCORE_REP;
        } else if (key_is(key, "select")) {
            range = "flat or tree";
            if (!(rc = pick2(value, "flat", "tree", &i)))
                cp->select = i ? LH_SELECT_TREE : LH_SELECT_FLAT;
        } else if (key_is(key, "chunk")) {
            range = "an integer in 1..65536";
            if (!(rc = lh_params_parse_size(value, 1, 65536, &z)))
                cp->chunk = z;
        } else if (key_is(key, "recent")) {
            range = "an integer in 1..65536";
            if (!(rc = lh_params_parse_size(value, 1, 65536, &z)))
                cp->recent = z;
        } else if (key_is(key, "window")) {
            range = "an integer in 2..1048576";
            if (!(rc = lh_params_parse_size(value, 2, 1u << 20, &z)))
                cp->window = z;
        } else if (key_is(key, "kv-dir")) {
            range = "a directory";
            rc = value && *value ? 0 : LH_E_FORMAT;
            if (!rc)
                cp->kv_dir = value;
        }
    }
    if (rc == LH_E_NOTFOUND && sp) {
        if (key_is(key, "temp") || key_is(key, "temperature")) {
            range = "a number >= 0";
            rc = parse_float(value, 0, 1e6, 0, &sp->temperature);
        } else if (key_is(key, "top-k")) {
            range = "an integer in 0..1000000";
            if (!(rc = lh_params_parse_size(value, 0, 1000000, &z)))
                sp->top_k = (int32_t)z;
        } else if (key_is(key, "top-p")) {
            range = "a number in (0, 1]";
            rc = parse_float(value, 0, 1, 1, &sp->top_p);
        } else if (key_is(key, "min-p")) {
            range = "a number in [0, 1]";
            rc = parse_float(value, 0, 1, 0, &sp->min_p);
        } else if (key_is(key, "repeat-penalty")) {
            range = "a number > 0";
            rc = parse_float(value, 0, 1e6, 1, &sp->repeat_penalty);
        } else if (key_is(key, "repeat-last-n")) {
            range = "an integer in 0..1048576";
            if (!(rc = lh_params_parse_size(value, 0, 1u << 20, &z)))
                sp->repeat_last_n = (int32_t)z;
        } else if (key_is(key, "seed")) {
            range = "an unsigned 64-bit integer";
            if (!(rc = lh_params_parse_size(value, 0, SIZE_MAX, &z)))
                sp->seed = (uint64_t)z;
        }
    }
    if (rc == LH_E_FORMAT)
        lh_log_error("%s: '%s' is not %s", key, value, range);
    return rc;
}
