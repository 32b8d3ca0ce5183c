/* tools/tokbench — longheads-tokbench: encode speed of a vocabulary on a text.
 *
 *   longheads-tokbench -m VOCAB.gguf -f TEXT [-s BYTES] [-r REPEATS] [-o OUT] [-i IDS] [--special]
 *
 * The text is FILE repeated (whole copies, then a prefix) up to BYTES (default 1 MiB; 0: the file
 * as it is); -o writes that exact text, so that llama.cpp's llama-tokenize can be timed on the
 * same bytes; -i writes the ids as llama-tokenize --ids prints them ("[1, 2, 3]"), to compare
 * the two outputs.  Encodes it REPEATS times (default 5, no BOS) and prints the token count,
 * the best time and tokens/s.  Any GGUF with a vocabulary works (a model or a vocabulary-only file).
 * Exit status 0, 1 on an error, 2 on bad usage.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gguf.h"
#include "log.h"
#include "tokenizer.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int usage(void)
{
    fprintf(stderr, "usage: longheads-tokbench -m VOCAB.gguf -f TEXT [-s BYTES] [-r REPEATS] "
                    "[-o OUT] [-i IDS] [--special]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *file = NULL, *outp = NULL, *idsp = NULL;
    long size = 1 << 20, reps = 5;
    int flags = 0, c;
    static const struct option opts[] = {{"special", no_argument, 0, 'S'}, {0, 0, 0, 0}};
    while ((c = getopt_long(argc, argv, "m:f:s:r:o:i:", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'f': file = optarg; break;
        case 's': size = strtol(optarg, NULL, 10); break;
        case 'r': reps = strtol(optarg, NULL, 10); break;
        case 'o': outp = optarg; break;
        case 'i': idsp = optarg; break;
        case 'S': flags |= LH_TOK_SPECIAL; break;
        default: return usage();
        }
    }
    if (!model || !file || size < 0 || reps < 1)
        return usage();
    FILE *f = fopen(file, "rb");
    if (!f) {
        perror(file);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long flen = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (flen <= 0) {
        fprintf(stderr, "longheads-tokbench: %s is empty\n", file);
        fclose(f);
        return 1;
    }
    size_t len = size ? (size_t)size : (size_t)flen;
    char *src = malloc((size_t)flen), *text = malloc(len);
    int32_t *ids = malloc((len + 2) * sizeof *ids);
    lh_gguf *g = NULL;
    lh_tok *t = NULL;
    int rc = 1;
    if (!src || !text || !ids || fread(src, 1, (size_t)flen, f) != (size_t)flen) {
        fprintf(stderr, "longheads-tokbench: cannot read %s\n", file);
        goto out;
    }
    for (size_t i = 0; i < len; i += (size_t)flen)
        memcpy(text + i, src, len - i < (size_t)flen ? len - i : (size_t)flen);
    if (outp) {
        FILE *o = fopen(outp, "wb");
        if (!o || fwrite(text, 1, len, o) != len || fclose(o) != 0) {
            perror(outp);
            goto out;
        }
    }
    double t0 = now_s();
    if (lh_gguf_open(&g, model) != 0 || lh_tok_load(&t, g) != 0)
        goto out;
    double t_load = now_s() - t0, best = 1e30;
    size_t n = 0;
    for (long r = 0; r < reps; r++) {
        t0 = now_s();
        int e = lh_tok_encode(t, text, len, flags, ids, len + 2, &n);
        double dt = now_s() - t0;
        if (e != 0) {
            fprintf(stderr, "longheads-tokbench: encode failed (%d)\n", e);
            goto out;
        }
        best = dt < best ? dt : best;
    }
    if (idsp) {
        FILE *o = fopen(idsp, "w");
        if (!o) {
            perror(idsp);
            goto out;
        }
        fputc('[', o);
        for (size_t i = 0; i < n; i++)
            fprintf(o, i ? ", %d" : "%d", ids[i]);
        fputs("]\n", o);
        if (fclose(o) != 0) {
            perror(idsp);
            goto out;
        }
    }
    printf("%s (%s): %zu bytes -> %zu tokens; load %.3f s; encode best of %ld %.3f s = "
           "%.0f tokens/s, %.2f MB/s\n", model, lh_tok_kind(t), len, n, t_load, reps, best,
           (double)n / best, (double)len / best / 1e6);
    rc = 0;
out:
    fclose(f);
    lh_tok_free(t);
    lh_gguf_close(g);
    free(src);
    free(text);
    free(ids);
    return rc;
}
