/* tests/test_passkey — `longheads passkey` end to end: the real longheadsd on a temporary socket,
 * the CLI as a user runs it.
 *
 * With models/passkey-aligned.gguf (tools/train/train_passkey.py --align, trained at 256 tokens;
 * LH_PASSKEY_MODEL names another) the CI subset of the paper's table: LongHeads (chunk 32,
 * window 256) retrieves every key at 256 tokens and all but one (at least two thirds) at 4096,
 * 16x the trained length; full attention, the control, retrieves every key at 256 and at most
 * 10% at 4096 (at 2048 under ASan, where the dense kernel makes 4096 take minutes).  Replacing
 * LongHeads by full attention fails the 4096 assertion.  Without that file the suite runs on the
 * bundled model, which cannot retrieve keys: it checks the mechanics only (prompt sizes as the
 * daemon saw them, one line per length, reproducible keys and depths, refusals, exit statuses).
 */
#include "test.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/longheads.h"

#define PK_ALIGNED "models/passkey-aligned.gguf"

static char g_dir[64];
static char g_sock[128];
static char g_log[128];
static pid_t g_pid = -1;
static int g_trained;        /* the daemon serves the passkey model */

/* LH_PASSKEY_MODEL, else models/passkey-aligned.gguf */
static const char *pk_model(void)
{
    const char *p = getenv("LH_PASSKEY_MODEL");
    return p && *p ? p : PK_ALIGNED;
}

static int pk_start_daemon(const char *model, const char *ctx)
{
    const char *args[] = {"--model", model, "--socket", g_sock, "--ctx", ctx, "--timeout", "0",
                          "--log-file", g_log, NULL};
    g_pid = lh_test_daemon_start(args, g_sock, NULL, -1, NULL);
    return g_pid > 0 ? 0 : -1;
}

/* SIGTERM, then SIGKILL after 30 s; 0 when it exited with status 0. */
static int pk_stop_daemon(void)
{
    if (g_pid <= 0)
        return 0;
    int st = lh_test_daemon_stop(g_pid);
    g_pid = -1;
    return st == 0 ? 0 : -1;
}

static int suite_init(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/lh-passkey-XXXXXX");
    if (!mkdtemp(g_dir))
        return 1;
    snprintf(g_sock, sizeof g_sock, "%s/lh.sock", g_dir);
    snprintf(g_log, sizeof g_log, "%s/daemon.log", g_dir);
    g_trained = access(pk_model(), R_OK) == 0;
    /* 4096 tokens and the answer; the bundled model only needs the 256 of the mechanics */
    if (pk_start_daemon(g_trained ? pk_model() : lh_test_model_path(),
                        g_trained ? "4160" : "1024") != 0) {
        fprintf(stderr, "test_passkey: longheadsd did not start; see %s\n", g_log);
        pk_stop_daemon();
        return 1;
    }
    return 0;
}

static int suite_clean(void)
{
    int rc = pk_stop_daemon();
    if (rc != 0) {
        fprintf(stderr, "test_passkey: longheadsd did not exit cleanly (log: %s)\n", g_log);
        return 1;
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : 1;
}

/* Runs `longheads --socket g_sock passkey ARGS` (stderr dropped); returns its stdout (malloc'd)
 * and exit status in *statusp. */
static char *pk_run(const char *args, int *statusp)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s passkey %s 2>/dev/null",
             lh_test_build_dir(), g_sock, args);
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *s = malloc(cap);
    if (s) {
        n = fread(s, 1, cap - 1, p);
        s[n] = 0;
    }
    int st = pclose(p);
    *statusp = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return s;
}

/* The counts of the line `length N: C/T correct ...`; 0 found, -1 not. */
static int pk_result(const char *out, size_t length, int *correctp, int *trialsp)
{
    char want[48];
    snprintf(want, sizeof want, "length %zu: ", length);
    const char *p = out;
    while ((p = strstr(p, want)) != NULL) {
        if (p == out || p[-1] == '\n')
            return sscanf(p + strlen(want), "%d/%d correct", correctp, trialsp) == 2 ? 0 : -1;
        p++;
    }
    return -1;
}

static size_t count_lines(const char *out, const char *prefix)
{
    size_t n = 0, len = strlen(prefix);
    for (const char *p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        n += strncmp(p, prefix, len) == 0;
    return n;
}

/* ---- mechanics, any model ----------------------------------------------------------------- */

static void test_mechanics(void)
{
    int st;
    const int trials = 3;
    char args[256];
    snprintf(args, sizeof args, "--lengths 256 --trials %d --seed 7 -v --attn longheads "
             "--chunk 32 --window 256", trials);
    /* the daemon's log says what each request's prompt really was: read what this run adds */
    long log_off = 0;
    FILE *f = fopen(g_log, "r");
    if (f) {
        fseek(f, 0, SEEK_END);
        log_off = ftell(f);
        fclose(f);
    }
    char *out = pk_run(args, &st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(st, 0);
    int correct = -1, n = -1;
    CU_ASSERT_EQUAL(pk_result(out, 256, &correct, &n), 0);
    CU_ASSERT_EQUAL(n, trials);
    CU_ASSERT(correct >= 0 && correct <= trials);
    CU_ASSERT_EQUAL(count_lines(out, "length "), 1);
    CU_ASSERT_EQUAL(count_lines(out, "  trial "), (size_t)trials);
    CU_ASSERT_EQUAL(count_lines(out, "passkey: "), 2); /* the header and the summary */
    /* every trial: a 5-digit key, a depth in [0, 1], a prompt just under the target (the filler
     * comes in whole sentences of a few tokens) */
    size_t seen = 0;
    for (const char *p = strstr(out, "  trial "); p; p = strstr(p + 1, "  trial ")) {
        int t;
        double depth;
        char key[16];
        size_t n_tok;
        int got = sscanf(p, "  trial %d: depth %lf, key %15[0-9], prompt %zu tokens", &t, &depth,
                         key, &n_tok);
        CU_ASSERT_EQUAL(got, 4);
        if (got != 4)
            break;
        CU_ASSERT_EQUAL(strlen(key), 5);
        CU_ASSERT(depth >= 0 && depth <= 1);
        CU_ASSERT(n_tok <= 256 && n_tok >= 256 - 24);
        seen++;
    }
    CU_ASSERT_EQUAL(seen, (size_t)trials);
    /* the same count as the daemon's own log of each request (written just after the answer
     * is sent: wait for the last one) */
    size_t n_req = 0;
    for (int i = 0; i < 100 && n_req < (size_t)trials; i++) {
        if (i)
            usleep(100000);
        f = fopen(g_log, "r");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        fseek(f, log_off, SEEK_SET);
        char line[1024];
        n_req = 0;
        while (fgets(line, sizeof line, f)) {
            const char *p = strstr(line, ": generate, prompt ");
            size_t n_tok;
            if (p && sscanf(p, ": generate, prompt %zu tokens", &n_tok) == 1) {
                CU_ASSERT(n_tok <= 256 && n_tok >= 256 - 24);
                n_req++;
            }
        }
        fclose(f);
    }
    CU_ASSERT_EQUAL(n_req, (size_t)trials);
    /* the same seed, the same keys and depths */
    char *again = pk_run(args, &st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(again);
    CU_ASSERT_EQUAL(st, 0);
    const char *a = strstr(out, "  trial "), *b = strstr(again, "  trial ");
    CU_ASSERT(a && b);
    for (; a && b; a = strstr(a + 1, "  trial "), b = strstr(b + 1, "  trial ")) {
        /* "  trial 1: depth 0.80, key 22465, prompt 255 tokens (": the reuse may differ */
        size_t n_same = strcspn(a, "(");
        CU_ASSERT_EQUAL(strncmp(a, b, n_same), 0);
    }
    CU_ASSERT(!a && !b);
    free(again);
    free(out);
}

static void test_refusals(void)
{
    int st;
    /* longer than the daemon's context: refused before anything runs, naming the flag to use */
    char *out = pk_run("--lengths 256,100000 --trials 1", &st);
    CU_ASSERT_EQUAL(st, 1);
    CU_ASSERT_PTR_NULL(out ? strstr(out, "length 256") : NULL);
    free(out);
    /* shorter than the prompt without filler */
    out = pk_run("--lengths 8 --trials 1", &st);
    CU_ASSERT_EQUAL(st, 1);
    free(out);
    const char *bad[] = {"--trials 0", "--lengths 256,,512", "--lengths -5", "--attn sparse",
                         "--seed x", "extra", NULL};
    for (int i = 0; bad[i]; i++) {
        out = pk_run(bad[i], &st);
        CU_ASSERT_EQUAL(st, 1);
        free(out);
    }
    /* no daemon */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s/none.sock passkey --lengths 256 "
             "2>/dev/null >/dev/null", lh_test_build_dir(), g_dir);
    st = system(cmd);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 2);
}

/* ---- retrieval, the trained model ------------------------------------------------------------ */

static void test_retrieval(void)
{
    if (!g_trained) {
        lh_test_skip("%s is not there (tools/train/train_passkey.py)", pk_model());
        return;
    }
    const int trials = lh_test_asan() ? 3 : 6;
    char args[256];
    int st, c256 = -1, c4096 = -1, n = -1;

    snprintf(args, sizeof args, "--lengths 256,4096 --trials %d --seed 11 --attn longheads "
             "--chunk 32 --window 256", trials);
    char *out = pk_run(args, &st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    printf("\n%s", out);
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT(pk_result(out, 256, &c256, &n) == 0 && n == trials);
    CU_ASSERT(pk_result(out, 4096, &c4096, &n) == 0 && n == trials);
    CU_ASSERT_EQUAL(c256, trials);
    /* measured: 6/6 here, 20/20 in `make eval`; at least two thirds, one miss allowed */
    CU_ASSERT(c4096 >= 0 && 3 * c4096 >= 2 * trials && c4096 >= trials - 1);
    free(out);

    /* the control.  Measured with full attention: 0/20 at 2048, 3072, 4096 and 8192, but 5/20
     * at 1024 and 1/20 at 1536 (close enough to 256 to be found now and then).  Under ASan
     * 3 trials at 4096 took 150 s: there the control runs at 2048, twice. */
    size_t control = lh_test_asan() ? 2048 : 4096;
    int trials_full = lh_test_asan() ? 2 : trials, c_long = -1;
    snprintf(args, sizeof args, "--lengths 256,%zu --trials %d --seed 11 --attn full", control,
             trials_full);
    out = pk_run(args, &st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    printf("%s", out);
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT(pk_result(out, 256, &c256, &n) == 0 && n == trials_full);
    CU_ASSERT(pk_result(out, control, &c_long, &n) == 0 && n == trials_full);
    CU_ASSERT_EQUAL(c256, trials_full);
    CU_ASSERT(c_long >= 0 && 10 * c_long <= trials_full);
    free(out);
}

void lh_test_passkey(void)
{
    CU_pSuite s = CU_add_suite("passkey", suite_init, suite_clean);
    CU_add_test(s, "passkey: prompt sizes, one line per length, same seed same keys", test_mechanics);
    CU_add_test(s, "passkey: refusals and exit statuses", test_refusals);
    CU_add_test(s, "passkey: LongHeads retrieves at 16x the trained length, full attention not",
                test_retrieval);
}
