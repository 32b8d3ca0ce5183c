/* engine/params — see params.h. */
#include "params.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

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
    int rc = LH_E_NOTFOUND;
    const char *range = "";
    if (cp) {
        if (key_is(key, "ctx")) {
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
            rc = LH_E_FORMAT;
            if (strcmp(value, "full") == 0)
                cp->attn = LH_ATTN_FULL, rc = 0;
            else if (strcmp(value, "longheads") == 0)
                cp->attn = LH_ATTN_LONGHEADS, rc = 0;
        } else if (key_is(key, "chunk")) {
            range = "an integer in 1..65536";
            if (!(rc = lh_params_parse_size(value, 1, 65536, &z)))
                cp->chunk = z;
        } else if (key_is(key, "window")) {
            range = "an integer in 2..1048576";
            if (!(rc = lh_params_parse_size(value, 2, 1u << 20, &z)))
                cp->window = z;
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
