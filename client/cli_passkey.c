/* client/cli_passkey — `longheads passkey`: the pass-key retrieval test of the LongHeads paper
 * (Lu et al. 2024, arXiv 2402.10685; after Mohtashami & Jaggi's landmark attention),
 * run end to end through the daemon.
 *
 *   longheads [--socket PATH] passkey [--lengths 256,1024,...] [--trials N] [--seed S]
 *             [--attn full|longheads] [--chunk W] [--window L] [--score S] [--recent R]
 *             [--max-tokens N]
 *             [--timeout MS] [-v]
 *
 * The prompt, as text (sentences joined by single spaces):
 *   INTRO  filler sentence x n (the five below, cycled)  with  KEYLINE  between two of them
 *   QUESTION
 * INTRO    "There is an important info hidden inside a lot of irrelevant text. Find it and
 *           memorize it. I will quiz you about the important information there."
 * filler   "The grass is green." "The sky is blue." "The sun is yellow." "Here we go."
 *          "There and back again."
 * KEYLINE  "The pass key is K. Remember it. K is the pass key."
 * QUESTION "What is the pass key? The pass key is"
 * The pass key K is five decimal digits drawn uniformly from 00000..99999 (leading zeros kept),
 * as the paper's 5-digit integer.  The key line goes at a sentence boundary chosen uniformly
 * among the n + 1 boundaries of the filler; its depth is reported as boundary / n (0: right after
 * the intro, 1: right before the question).  n is the largest filler count whose whole prompt,
 * BOS included and counted by the daemon's own tokenizer (Tokenize request), is at most the
 * target length; the prompt is then sent as those token ids, so the model sees exactly what was
 * counted.  Keys and depths come from a generator seeded by --seed and the length, so a run is
 * reproducible and every attention mode sees the same trials at a given length.
 *
 * The answer: greedy decoding (temperature 0) of at most --max-tokens tokens (default 8); leading
 * white space is skipped and the digits up to the first non-digit must equal K exactly.
 *
 * Output on stdout, one line per length:
 *   length N: C/T correct (depths of the misses 0.12 0.85); 12.3 s, prefill 4567 tok/s
 * (prefill: the prompt tokens computed, reused ones left out, per second of prefill), then a
 * summary line.  -v adds a line per trial.  While a prompt is evaluated a progress line is
 * drawn on stderr when it is a terminal.  Exit status as the other commands: 0 every trial ran
 * (whatever the score), 1 usage, 2 no daemon, 3 a request failed.
 */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "longheads.h"


#define PK_MAX_LENGTHS 64
#define PK_MAX_TRIALS 100000

static const char pk_intro[] =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.";
static const char *const pk_filler[] = {"The grass is green.", "The sky is blue.",
                                        "The sun is yellow.", "Here we go.",
                                        "There and back again."};
#define PK_N_FILLER (sizeof pk_filler / sizeof pk_filler[0])
static const char pk_question[] = "What is the pass key? The pass key is";

/* ---- the seeded generator (splitmix64: tiny, and the same sequence on every platform) ------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) (n > 0), without modulo bias. */
static uint64_t rng_below(uint64_t *s, uint64_t n)
{
    uint64_t lim = UINT64_MAX - UINT64_MAX % n, x;
    do
        x = rng_next(s);
    while (x >= lim);
    return x % n;
}

/* ---- prompt text ---------------------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
} strbuf;

static int sb_put(strbuf *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *nb = realloc(b->buf, cap);
        if (!nb)
            return -ENOMEM;
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n + 1);
    b->len += n;
    return 0;
}

/* The prompt with n_fill filler sentences and the key line after the first `at` of them. */
static int build_prompt(strbuf *b, size_t n_fill, size_t at, const char *key)
{
    char line[128];
    snprintf(line, sizeof line, " The pass key is %s. Remember it. %s is the pass key.", key, key);
    b->len = 0;
    int rc = sb_put(b, pk_intro);
    for (size_t i = 0; rc == 0 && i <= n_fill; i++) {
        if (i == at)
            rc = sb_put(b, line);
        if (rc == 0 && i < n_fill && (rc = sb_put(b, " ")) == 0)
            rc = sb_put(b, pk_filler[i % PK_N_FILLER]);
    }
    if (rc == 0 && (rc = sb_put(b, " ")) == 0)
        rc = sb_put(b, pk_question);
    return rc;
}

/* ---- one run -------------------------------------------------------------------------------- */

typedef struct {
    lh_client *cl;
    lh_client_gen_opts o;       /* attention, timeout, max tokens; the prompt set per trial */
    int verbose, progress;      /* progress: stderr is a terminal */
    strbuf text;
    int32_t *ids;               /* (cap_ids): the tokens of the current prompt */
    size_t cap_ids;
    char answer[256];
    size_t answer_len;
    size_t length, trial, n_trials;  /* for the progress line */
    int progress_drawn;
} pk_run;

static void report_request(pk_run *r, const char *what, int rc)
{
    if (rc == LH_CLIENT_E_SERVER)
        fprintf(stderr, "longheads: passkey: %s: %s\n", what, lh_client_last_error(r->cl));
    else
        fprintf(stderr, "longheads: passkey: %s: %s\n", what, lh_client_strerror(rc));
}

/* Tokens of the prompt (n_fill, at, key), BOS included, into r->ids; *np their count.
 * 0 or EXIT_REQUEST (reported). */
static int count_tokens(pk_run *r, size_t n_fill, size_t at, const char *key, size_t *np)
{
    if (build_prompt(&r->text, n_fill, at, key) != 0) {
        fprintf(stderr, "longheads: passkey: out of memory for a prompt of %zu sentences\n", n_fill);
        return EXIT_REQUEST;
    }
    for (;;) {
        size_t n = 0;
        int rc = lh_client_tokenize(r->cl, r->text.buf, r->text.len, 1, r->ids, r->cap_ids, &n);
        if (rc == 0) {
            *np = n;
            return 0;
        }
        if (rc != LH_CLIENT_E_LIMIT || n <= r->cap_ids) {
            report_request(r, "tokenize", rc);
            return EXIT_REQUEST;
        }
        int32_t *ids = realloc(r->ids, n * sizeof *ids);
        if (!ids) {
            fprintf(stderr, "longheads: passkey: out of memory for %zu tokens\n", n);
            return EXIT_REQUEST;
        }
        r->ids = ids;
        r->cap_ids = n;
    }
}

/* The largest filler count whose prompt is at most `length` tokens, into *n_fillp.  The count
 * grows with the filler by about the same number of tokens per sentence, so each probe
 * interpolates between the best count known to fit (lo) and the smallest known not to (hi),
 * falling back to bisection; a few Tokenize requests even at 131072 tokens.
 * 0, EXIT_USAGE (the fixed parts alone are longer), EXIT_REQUEST. */
static int fit_filler(pk_run *r, size_t length, const char *key, size_t *n_fillp)
{
    size_t n0, n5, n;
    int rc;
    if ((rc = count_tokens(r, 0, 0, key, &n0)) != 0)
        return rc;
    if (n0 > length) {
        fprintf(stderr, "longheads: passkey: length %zu is shorter than the prompt without filler "
                        "(%zu tokens)\n", length, n0);
        return EXIT_USAGE;
    }
    if ((rc = count_tokens(r, PK_N_FILLER, 0, key, &n5)) != 0)
        return rc;
    double per = n5 > n0 ? (double)(n5 - n0) / PK_N_FILLER : 1.0; /* tokens per sentence */
    size_t lo = 0, n_lo = n0, hi = SIZE_MAX;
    if (n5 <= length) {
        lo = PK_N_FILLER;
        n_lo = n5;
    } else {
        hi = PK_N_FILLER;
    }
    while (hi == SIZE_MAX || hi - lo > 1) {
        size_t guess = lo + (size_t)((double)(length - n_lo) / per);
        if (guess <= lo)
            guess = lo + 1;
        if (hi != SIZE_MAX && guess >= hi)
            guess = lo + (hi - lo) / 2;
        if ((rc = count_tokens(r, guess, 0, key, &n)) != 0)
            return rc;
        if (n <= length) {
            lo = guess;
            n_lo = n;
        } else {
            hi = guess;
            if (n > n_lo && guess > lo)     /* refine the slope from the two sides */
                per = (double)(n - n_lo) / (double)(guess - lo);
        }
    }
    *n_fillp = lo;
    return 0;
}

static int on_event(const lh_client_event *ev, void *ud)
{
    pk_run *r = ud;
    if (ev->kind == LH_CLIENT_EV_PROGRESS) {
        if (r->progress && ev->n_total >= 512) {
            fprintf(stderr, "\r\033[Klength %zu, trial %zu/%zu: prompt %llu/%llu tokens", r->length,
                    r->trial + 1, r->n_trials, (unsigned long long)ev->n_done,
                    (unsigned long long)ev->n_total);
            r->progress_drawn = 1;
        }
        return 0;
    }
    size_t room = sizeof r->answer - 1 - r->answer_len;
    size_t n = ev->text_len < room ? ev->text_len : room;
    memcpy(r->answer + r->answer_len, ev->text, n);
    r->answer_len += n;
    r->answer[r->answer_len] = 0;
    return 0;
}

static void clear_progress(pk_run *r)
{
    if (r->progress_drawn) {
        fputs("\r\033[K", stderr);
        r->progress_drawn = 0;
    }
}

/* The digits up to the first non-digit, after leading white space, equal key exactly. */
static int answer_matches(const char *answer, const char *key)
{
    const char *p = answer;
    while (*p == ' ' || *p == '\t' || *p == '\n')
        p++;
    size_t n = 0;
    while (p[n] >= '0' && p[n] <= '9')
        n++;
    return n == strlen(key) && memcmp(p, key, n) == 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* All trials at one length; prints its line.  *correctp the hits.  The generator is seeded from
 * (seed, length): a length gets the same keys and depths whatever other lengths are run, so two
 * attention modes can be compared trial by trial. */
static int run_length(pk_run *r, size_t length, uint64_t seed, size_t *correctp)
{
    uint64_t rng = seed ^ ((uint64_t)length * 0xd1b54a32d192ed03ull);
    char key[8];
    size_t n_fill, correct = 0, n_miss = 0;
    double *miss = malloc(r->n_trials * sizeof *miss);
    double t0 = now_s(), prefill_ms = 0, prefilled = 0;
    int rc = 0;
    if (!miss) {
        fprintf(stderr, "longheads: passkey: out of memory\n");
        return EXIT_REQUEST;
    }
    r->length = length;
    /* every key has five digits, so one fit serves all trials; each trial still checks its own
     * count below (a tokenizer may join a digit with its neighbours differently) */
    snprintf(key, sizeof key, "%05u", 0u);
    if ((rc = fit_filler(r, length, key, &n_fill)) != 0)
        goto out;
    for (size_t t = 0; t < r->n_trials; t++) {
        snprintf(key, sizeof key, "%05u", (unsigned)rng_below(&rng, 100000));
        size_t at = (size_t)rng_below(&rng, (uint64_t)n_fill + 1), n_tok, nf = n_fill;
        for (;;) {
            if ((rc = count_tokens(r, nf, at < nf ? at : nf, key, &n_tok)) != 0)
                goto out;
            if (n_tok <= length || nf == 0)
                break;
            nf--;
        }
        if (n_tok > length) {
            fprintf(stderr, "longheads: passkey: the prompt with key %s is %zu tokens, over %zu\n",
                    key, n_tok, length);
            rc = EXIT_USAGE;
            goto out;
        }
        if (at > nf)
            at = nf;
        double depth = nf ? (double)at / (double)nf : 0.0;
        r->trial = t;
        r->answer_len = 0;
        r->answer[0] = 0;
        r->o.tokens = r->ids;
        r->o.n_tokens = n_tok;
        lh_client_result res;
        double tt = now_s();
        int grc = lh_client_generate(r->cl, &r->o, on_event, r, &res);
        clear_progress(r);
        if (grc != 0 || res.finish == LH_CLIENT_FINISH_ERROR ||
            res.finish == LH_CLIENT_FINISH_CANCELLED) {
            if (grc != 0)
                report_request(r, "generate", grc);
            else
                fprintf(stderr, "longheads: passkey: generate: %s\n",
                        res.finish == LH_CLIENT_FINISH_ERROR ? res.error : "cancelled");
            rc = EXIT_REQUEST;
            goto out;
        }
        int ok = answer_matches(r->answer, key);
        correct += (size_t)ok;
        if (!ok)
            miss[n_miss++] = depth;
        prefill_ms += res.prefill_ms;
        prefilled += (double)(res.n_prompt - res.n_reused);
        if (r->verbose) {
            /* the answer on one line: control characters as '?' */
            for (char *p = r->answer; *p; p++)
                if ((unsigned char)*p < 0x20)
                    *p = '?';
            printf("  trial %zu: depth %.2f, key %s, prompt %zu tokens (%u reused), answer \"%s\" "
                   "%s, %.1f s\n", t + 1, depth, key, n_tok, res.n_reused, r->answer,
                   ok ? "ok" : "MISS", now_s() - tt);
            fflush(stdout);
        }
    }
    printf("length %zu: %zu/%zu correct (", length, correct, r->n_trials);
    if (n_miss == 0)
        printf("no misses");
    else
        printf("depths of the misses");
    for (size_t i = 0; i < n_miss; i++)
        printf(" %.2f", miss[i]);
    printf("); %.1f s", now_s() - t0);
    if (prefill_ms > 0)
        printf(", prefill %.0f tok/s", prefilled / (prefill_ms / 1000.0));
    printf("\n");
    fflush(stdout);
    *correctp = correct;
out:
    free(miss);
    return rc;
}

/* ---- the command ---------------------------------------------------------------------------- */

static const char passkey_usage[] =
    "usage: longheads passkey [options]\n"
    "  --lengths LIST          prompt lengths in tokens, BOS included\n"
    "                          (default 256,1024,4096,8192,16384,32768,131072)\n"
    "  --trials N              prompts per length, random key and depth (default 20)\n"
    "  --seed S                seed of the keys and depths (default 1)\n"
    "  --attn full|longheads   attention (default: the daemon's)\n"
    "  --chunk W, --window L   LongHeads chunk size and window (default: the daemon's)\n"
    "  --score rep|bound       LongHeads chunk score (default: the daemon's)\n"
    "  --recent N              LongHeads: the last chunks every head keeps (default: the\n"
    "                          daemon's, 2)\n"
    "  --max-tokens N          tokens generated for the answer (default 8)\n"
    "  --timeout MS            per-request timeout (default: the daemon's)\n"
    "  -v, --verbose           one line per trial\n";

static int parse_u64(const char *what, const char *s, uint64_t lo, uint64_t hi, uint64_t *outp)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi) {
        fprintf(stderr, "longheads: passkey: bad %s '%s' (expected %llu..%llu)\n", what, s,
                (unsigned long long)lo, (unsigned long long)hi);
        return -1;
    }
    *outp = v;
    return 0;
}

static int parse_lengths(const char *s, size_t *out, size_t *np)
{
    size_t n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(p, &end, 10);
        if (errno || end == p || *p == '-' || v < 1 || v > (1ull << 30) || n == PK_MAX_LENGTHS ||
            (*end && *end != ',')) {
            fprintf(stderr, "longheads: passkey: bad --lengths '%s' (at most %d comma-separated "
                            "token counts, 1..%llu)\n", s, PK_MAX_LENGTHS, 1ull << 30);
            return -1;
        }
        out[n++] = (size_t)v;
        if (!*end)
            break;
        p = end + 1;
    }
    *np = n;
    return 0;
}

int lh_cli_passkey(const char *sock, int argc, char **argv)
{
    enum { O_LENGTHS = 256, O_TRIALS, O_SEED, O_ATTN, O_CHUNK, O_WINDOW, O_MAXTOK, O_TIMEOUT,
           O_SCORE, O_RECENT };
    static const struct option opts[] = {
        {"lengths", required_argument, 0, O_LENGTHS}, {"trials", required_argument, 0, O_TRIALS},
        {"seed", required_argument, 0, O_SEED}, {"attn", required_argument, 0, O_ATTN},
        {"chunk", required_argument, 0, O_CHUNK}, {"window", required_argument, 0, O_WINDOW},
        {"score", required_argument, 0, O_SCORE}, {"recent", required_argument, 0, O_RECENT},
        {"max-tokens", required_argument, 0, O_MAXTOK},
        {"timeout", required_argument, 0, O_TIMEOUT}, {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    size_t lengths[PK_MAX_LENGTHS], n_lengths = 0;
    static const size_t default_lengths[] = {256, 1024, 4096, 8192, 16384, 32768, 131072};
    uint64_t trials = 20, seed = 1, v;
    pk_run r;
    memset(&r, 0, sizeof r);
    lh_client_gen_opts_default(&r.o);
    r.o.temperature = 0;
    r.o.max_tokens = 8;
    r.o.has_seed = 1;
    r.o.seed = 1;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+vh", opts, NULL)) != -1) {
        switch (c) {
        case O_LENGTHS:
            if (parse_lengths(optarg, lengths, &n_lengths))
                return EXIT_USAGE;
            break;
        case O_TRIALS:
            if (parse_u64("--trials", optarg, 1, PK_MAX_TRIALS, &trials))
                return EXIT_USAGE;
            break;
        case O_SEED:
            if (parse_u64("--seed", optarg, 0, UINT64_MAX, &seed))
                return EXIT_USAGE;
            break;
        case O_ATTN:
            if (lh_cli_parse_attn(optarg, &r.o.attn))
                return EXIT_USAGE;
            break;
        case O_SCORE:
            if (lh_cli_parse_score(optarg, &r.o.score))
                return EXIT_USAGE;
            break;
        case O_RECENT:
            if (parse_u64("--recent", optarg, 1, 65536, &v))
                return EXIT_USAGE;
            r.o.recent = (uint32_t)v;
            break;
        case O_CHUNK:
        case O_WINDOW:
            if (parse_u64(c == O_CHUNK ? "--chunk" : "--window", optarg, 0, 1u << 30, &v))
                return EXIT_USAGE;
            *(c == O_CHUNK ? &r.o.chunk : &r.o.window) = (uint32_t)v;
            break;
        case O_MAXTOK:
            if (parse_u64("--max-tokens", optarg, 1, 1024, &v))
                return EXIT_USAGE;
            r.o.max_tokens = (uint32_t)v;
            break;
        case O_TIMEOUT:
            if (parse_u64("--timeout", optarg, 0, UINT32_MAX, &v))
                return EXIT_USAGE;
            r.o.timeout_ms = (uint32_t)v;
            break;
        case 'v': r.verbose = 1; break;
        case 'h': fputs(passkey_usage, stdout); return 0;
        default: fputs(passkey_usage, stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "longheads: passkey: unexpected argument '%s'\n%s", argv[optind],
                passkey_usage);
        return EXIT_USAGE;
    }
    if (n_lengths == 0) {
        n_lengths = sizeof default_lengths / sizeof default_lengths[0];
        memcpy(lengths, default_lengths, sizeof default_lengths);
    }
    r.n_trials = (size_t)trials;
    r.progress = isatty(2);
    r.cap_ids = 4096; /* grown to the longest prompt by count_tokens */
    r.ids = malloc(r.cap_ids * sizeof *r.ids);
    if (!r.ids) {
        fprintf(stderr, "longheads: passkey: out of memory\n");
        return EXIT_REQUEST;
    }

    int rc = lh_cli_connect(&r.cl, sock);
    if (rc != 0) {
        free(r.ids);
        return rc;
    }
    const lh_client_model_info *m = lh_client_model(r.cl);
    /* refuse before running anything: a length the daemon cannot hold with its answer */
    for (size_t i = 0; i < n_lengths; i++) {
        if (lengths[i] > m->max_prompt_tokens || lengths[i] + r.o.max_tokens > m->n_ctx) {
            fprintf(stderr, "longheads: passkey: length %zu does not fit the daemon (context %u "
                            "tokens, prompts up to %u); start longheadsd with --ctx %zu or more\n",
                    lengths[i], m->n_ctx, m->max_prompt_tokens, lengths[i] + r.o.max_tokens);
            rc = EXIT_USAGE;
            goto out;
        }
    }
    lh_client_attn attn = r.o.attn ? r.o.attn : m->attn_default;
    printf("passkey: model %s (trained at %u tokens), attention %s", m->path, m->n_ctx_train,
           attn == LH_CLIENT_ATTN_LONGHEADS ? "longheads" : "full");
    if (attn == LH_CLIENT_ATTN_LONGHEADS) {
        uint32_t w = r.o.chunk ? r.o.chunk : m->chunk_default;
        uint32_t l = r.o.window ? r.o.window : m->window_default;
        char ws[16] = "default", ls[16] = "default";
        if (w)
            snprintf(ws, sizeof ws, "%u", w);
        if (l)
            snprintf(ls, sizeof ls, "%u", l);
        lh_client_chunk_score sc = r.o.score ? r.o.score : m->score_default;
        uint32_t nr = r.o.recent ? r.o.recent : m->recent_default;
        printf(" (chunk %s, window %s, recent %u%s)", ws, ls, nr,
               sc == LH_CLIENT_SCORE_BOUND ? ", score bound" : "");
    }
    printf(", %zu trial(s) per length, seed %llu\n", r.n_trials, (unsigned long long)seed);
    fflush(stdout);

    size_t total = 0, total_correct = 0;
    double t0 = now_s();
    for (size_t i = 0; i < n_lengths; i++) {
        size_t correct = 0;
        if ((rc = run_length(&r, lengths[i], seed, &correct)) != 0)
            goto out;
        total += r.n_trials;
        total_correct += correct;
    }
    printf("passkey: %zu/%zu correct over %zu length(s); %.1f s\n", total_correct, total,
           n_lengths, now_s() - t0);
out:
    clear_progress(&r);
    lh_client_close(r.cl);
    free(r.text.buf);
    free(r.ids);
    return rc;
}
