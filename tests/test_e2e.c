/* tests/test_e2e — the real longheadsd (LH_BUILD/longheadsd) on a temporary socket, driven
 * through liblongheads, the `longheads` CLI and raw frames: golden text, longheads-run parity
 * (text and token-id prompts, greedy and seeded), 8 concurrent clients,
 * cancel mid-prefill and mid-decode (latency measured and printed), a client killed mid-stream,
 * malformed input, prompt reuse, stop strings across tokens, socket activation + sd_notify,
 * SIGTERM drain, `systemd-analyze verify` of the units; then, each on its own daemon: ERR_BUSY,
 * handshake and frame timeouts, duplicate ids, backpressure, --allow-uid/ERR_PERMISSION with
 * --socket-mode/--socket-group, SIGHUP, the fd limit, a model file truncated or changed, big
 * Tokenize requests beside a short Generate, out of memory; and the client library against a
 * scripted fake daemon (NUL bytes in token text, call timeouts). */
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/longheads.h"
#include "frame.h"
#include "longheads.pb-c.h"

static char g_dir[64];       /* temporary directory of this run */
static char g_sock[100];
static pid_t g_pid = -1;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char *slurp(const char *path, size_t *lenp)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *s = malloc(1 << 20);
    size_t n = fread(s, 1, (1 << 20) - 1, f);
    s[n] = 0;
    fclose(f);
    if (lenp)
        *lenp = n;
    return s;
}

/* Starts longheadsd with extra args on g_sock; waits until it answers.  listen_fd >= 0: socket
 * activation (the fd becomes 3, LISTEN_FDS=1, LISTEN_PID=the daemon's pid). */
static pid_t start_daemon_fd(const char *const *extra, int listen_fd, const char *notify)
{
    char log[128];
    snprintf(log, sizeof log, "%s/daemon.log", g_dir);
    const char *args[40];
    int n = 0;
    args[n++] = "--model";
    args[n++] = lh_test_model_path();
    if (listen_fd < 0) {
        args[n++] = "--socket";
        args[n++] = g_sock;
    }
    for (int i = 0; extra && extra[i] && n < 39; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    return lh_test_daemon_start(args, g_sock, log, listen_fd, notify);
}

static pid_t start_daemon(const char *const *extra) { return start_daemon_fd(extra, -1, NULL); }

/* SIGTERM, then the exit status (or -1 after 30 s, then SIGKILL). */
static int stop_daemon(pid_t pid) { return lh_test_daemon_stop(pid); }

static int suite_init(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/lh-e2e-XXXXXX");
    if (!mkdtemp(g_dir))
        return 1;
    snprintf(g_sock, sizeof g_sock, "%s/lh.sock", g_dir);
    const char *extra[] = {"--slots", "2", "--ctx", "4096", "--max-frame", "65536", NULL};
    g_pid = start_daemon(extra);
    if (g_pid < 0) {
        fprintf(stderr, "test_e2e: longheadsd did not start; see %s/daemon.log\n", g_dir);
        return 1;
    }
    return 0;
}

static int suite_clean(void)
{
    int rc = stop_daemon(g_pid);
    if (rc != 0)
        fprintf(stderr, "test_e2e: longheadsd exited with %d (log: %s/daemon.log)\n", rc, g_dir);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (rc == 0 && system(cmd) != 0)
        return 1;
    return rc == 0 ? 0 : 1;
}

/* Runs a shell command, returns its stdout. */
static char *run_capture(const char *cmd, int *statusp)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    char *s = malloc(1 << 20);
    size_t n = fread(s, 1, (1 << 20) - 1, p);
    s[n] = 0;
    int st = pclose(p);
    if (statusp)
        *statusp = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return s;
}

static pid_t aux_start(const char *name, const char *const *extra);
static int aux_end(pid_t pid);

/* ---- golden via the CLI --------------------------------------------------------------------- */

static void test_cli_golden(void)
{
    char cmd[1024];
    size_t glen;
    char *golden = slurp("tests/data/stories260K.golden.txt", &glen);
    CU_ASSERT_PTR_NOT_NULL_FATAL(golden);
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s generate -n 256 --temp 0",
             lh_test_build_dir(), g_sock);
    int st;
    char *out = run_capture(cmd, &st);
    CU_ASSERT_EQUAL(st, 0);
    /* the CLI ends its text with a newline (piped too); the golden file has none */
    size_t olen = strlen(out);
    CU_ASSERT(olen == glen + 1 && out[glen] == '\n' && strncmp(out, golden, glen) == 0);
    free(out);
    /* "Once upon a time": the same text as the one-shot tool */
    snprintf(cmd, sizeof cmd, "%s/longheads-run -m %s -p 'Once upon a time' -n 256 --temp 0 "
             "2>/dev/null", lh_test_build_dir(), lh_test_model_path());
    char *ref = run_capture(cmd, &st);
    CU_ASSERT_EQUAL(st, 0);
    snprintf(cmd, sizeof cmd, "LONGHEADS_SOCKET=%s %s/longheads generate -n 256 --temp 0 "
             "'Once upon a time'", g_sock, lh_test_build_dir());
    out = run_capture(cmd, &st);
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT(strlen(ref) > 100);
    olen = strlen(out);
    CU_ASSERT(olen == strlen(ref) + 1 && out[olen - 1] == '\n' && strncmp(out, ref, olen - 1) == 0);
    free(out);
    free(ref);
    /* info, health, tokenize; an unreachable socket is exit status 2 */
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s info", lh_test_build_dir(), g_sock);
    out = run_capture(cmd, &st);
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "stories260K"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s health", lh_test_build_dir(), g_sock);
    out = run_capture(cmd, &st);
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT(strncmp(out, "ok:", 3) == 0);
    free(out);
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s tokenize 'Once upon'", lh_test_build_dir(),
             g_sock);
    out = run_capture(cmd, &st);
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT(strncmp(out, "1\n", 2) == 0);
    free(out);
    /* --special: "</s>" in the text is EOS (id 2) only when asked */
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s tokenize --no-bos --special '</s>Once'",
             lh_test_build_dir(), g_sock);
    out = run_capture(cmd, &st);
    CU_ASSERT(st == 0 && strncmp(out, "2\n", 2) == 0);
    free(out);
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s tokenize --no-bos '</s>Once'",
             lh_test_build_dir(), g_sock);
    out = run_capture(cmd, &st);
    CU_ASSERT(st == 0 && strlen(out) > 4 && !strstr(out, "\n2\n") && strncmp(out, "2\n", 2) != 0);
    free(out);
    /* generate --special: the prompt's "</s>" is one token (EOS) only when asked */
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s generate --special -n 1 --temp 0 --json "
             "'Once</s> upon' | tail -n 1", lh_test_build_dir(), g_sock);
    out = run_capture(cmd, &st);
    CU_ASSERT(st == 0 && strstr(out, "\"n_prompt\":5,") != NULL);
    free(out);
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s generate -n 1 --temp 0 --json "
             "'Once</s> upon' | tail -n 1", lh_test_build_dir(), g_sock);
    out = run_capture(cmd, &st);
    CU_ASSERT(st == 0 && strstr(out, "\"n_prompt\":7,") != NULL);
    free(out);
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s/nope.sock health 2>/dev/null",
             lh_test_build_dir(), g_dir);
    out = run_capture(cmd, &st);
    CU_ASSERT_EQUAL(st, 2);
    free(out);
    free(golden);
}

/* ---- library streams ------------------------------------------------------------------------ */

typedef struct {
    char text[8192];
    size_t len;
    size_t n_tokens, n_progress;
    int cancel_after;      /* cancel from the callback after this many tokens (0: never) */
    double t_cancel;
    lh_client *c;          /* for cancel from another thread */
    /* written by the generating thread, polled by the test's main thread: atomics, not
     * volatile (ThreadSanitizer-clean) */
    atomic_int saw_prefill;
    _Atomic size_t last_done, last_total, n_tokens_seen;
} stream;

static int collect(const lh_client_event *ev, void *ud)
{
    stream *s = ud;
    if (ev->kind == LH_CLIENT_EV_PROGRESS) {
        s->n_progress++;
        s->last_done = ev->n_done;
        s->last_total = ev->n_total;
        if (ev->n_done >= 64 && ev->n_done < ev->n_total)
            s->saw_prefill = 1; /* well into the prompt, past any reused prefix */
        return 0;
    }
    if (s->len + ev->text_len < sizeof s->text) {
        memcpy(s->text + s->len, ev->text, ev->text_len);
        s->len += ev->text_len;
        s->text[s->len] = 0;
    }
    if (ev->token >= 0) {
        s->n_tokens++;
        atomic_store(&s->n_tokens_seen, s->n_tokens);
    }
    if (s->cancel_after && s->n_tokens == (size_t)s->cancel_after) {
        s->t_cancel = now_s();
        return 1;
    }
    return 0;
}

static int greedy(lh_client *c, const char *prompt, uint32_t n, stream *s, lh_client_result *res)
{
    lh_client_gen_opts o;
    lh_client_gen_opts_default(&o);
    o.prompt = prompt;
    o.prompt_len = (size_t)-1;
    o.max_tokens = n;
    o.temperature = 0;
    return lh_client_generate(c, &o, collect, s, res);
}

/* The passkey path: `longheads passkey` tokenizes through the daemon and generates from the
 * token ids; that gives byte for byte longheads-run's text for the same prompt (one generation
 * loop, engine/gen.c), greedy and seeded. */
static void test_token_prompt_parity(void)
{
    lh_client *c;
    CU_ASSERT_EQUAL_FATAL(lh_client_connect(&c, g_sock, 10000), 0);
    const char *prompt = "Once upon a time";
    int32_t ids[64];
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(lh_client_tokenize(c, prompt, strlen(prompt), LH_CLIENT_TOK_BOS, ids, 64,
                                             &n), 0);
    CU_ASSERT_FATAL(n > 2);
    static const struct { float temp; uint64_t seed; const char *arg; } runs[] = {
        {0.0f, 0, "--temp 0"}, {0.9f, 7, "--temp 0.9 --seed 7"}};
    for (size_t k = 0; k < 2; k++) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "%s/longheads-run -m %s -p '%s' -n 64 %s 2>/dev/null",
                 lh_test_build_dir(), lh_test_model_path(), prompt, runs[k].arg);
        int st;
        char *ref = run_capture(cmd, &st);
        CU_ASSERT_EQUAL(st, 0);
        lh_client_gen_opts o;
        lh_client_gen_opts_default(&o);
        o.tokens = ids;
        o.n_tokens = n;
        o.max_tokens = 64;
        o.temperature = runs[k].temp;
        o.seed = runs[k].seed;
        o.has_seed = 1;
        static stream s;
        memset(&s, 0, sizeof s);
        lh_client_result res;
        CU_ASSERT_EQUAL(lh_client_generate(c, &o, collect, &s, &res), 0);
        CU_ASSERT_EQUAL(res.finish, LH_CLIENT_FINISH_LENGTH);
        CU_ASSERT(strlen(ref) > 40);
        CU_ASSERT_STRING_EQUAL(s.text, ref);
        free(ref);
    }
    lh_client_close(c);
}

typedef struct {
    stream s;
    lh_client_result res;
    int rc;
    uint32_t n;
} worker;

static void *gen_worker(void *arg)
{
    worker *w = arg;
    lh_client *c;
    w->rc = lh_client_connect(&c, g_sock, 10000);
    if (w->rc != 0)
        return NULL;
    w->rc = greedy(c, "", w->n, &w->s, &w->res);
    lh_client_close(c);
    return NULL;
}

static void test_eight_clients(void)
{
    size_t glen;
    char *golden = slurp("tests/data/stories260K.golden.txt", &glen);
    CU_ASSERT_PTR_NOT_NULL_FATAL(golden);
    enum { N = 8 };
    static worker w[N];
    pthread_t t[N];
    memset(w, 0, sizeof w);
    for (int i = 0; i < N; i++) {
        w[i].n = 256 - 16 * (uint32_t)i; /* different lengths: streams end at different times */
        pthread_create(&t[i], NULL, gen_worker, &w[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(w[i].rc, 0);
        CU_ASSERT_EQUAL(w[i].res.finish, LH_CLIENT_FINISH_LENGTH);
        CU_ASSERT_EQUAL(w[i].res.n_generated, w[i].n);
        CU_ASSERT_EQUAL(w[i].s.n_tokens, w[i].n);
        /* each stream is a prefix of the golden text: complete, in order, not mixed */
        CU_ASSERT(w[i].s.len > 0 && memcmp(w[i].s.text, golden, w[i].s.len) == 0);
        if (i == 0)
            CU_ASSERT_STRING_EQUAL(w[i].s.text, golden);
    }
    free(golden);
}

/* A long prompt: n words of varied text (full attention; stays under --ctx 4096). */
static char *long_prompt(size_t n_words)
{
    static const char *words[] = {"the", "little", "dog", "ran", "to", "the", "park", "and",
                                  "saw", "a", "big", "red", "ball", "Lily", "was", "happy"};
    char *s = malloc(n_words * 8 + 1);
    size_t off = 0;
    for (size_t i = 0; i < n_words; i++)
        off += (size_t)sprintf(s + off, "%s%s", i ? " " : "", words[(i * 7 + i / 16) % 16]);
    return s;
}

typedef struct {
    lh_client *c;
    const char *prompt;
    stream *s;
    lh_client_result res;
    int rc;
    _Atomic double t_final;
} long_job;

static void *long_worker(void *arg)
{
    long_job *j = arg;
    j->rc = greedy(j->c, j->prompt, 8, j->s, &j->res);
    j->t_final = now_s();
    return NULL;
}

static void *long_worker_n(void *arg)
{
    long_job *j = arg;
    j->rc = greedy(j->c, j->prompt, 1500, j->s, &j->res);
    j->t_final = now_s();
    return NULL;
}

static void test_cancel(void)
{
    lh_client *c;
    CU_ASSERT_EQUAL_FATAL(lh_client_connect(&c, g_sock, 10000), 0);
    size_t glen;
    char *golden = slurp("tests/data/stories260K.golden.txt", &glen);
    /* mid-prefill, from another thread: a prompt of ~1100 tokens (~550 under ASan), long
     * enough for many 20 ms slices on this small model */
    char *prompt = long_prompt(lh_test_asan() ? 400 : 800);
    static stream s;
    memset(&s, 0, sizeof s);
    long_job j = {.c = c, .prompt = prompt, .s = &s};
    pthread_t t;
    pthread_create(&t, NULL, long_worker, &j);
    double t0 = now_s();
    while (!s.saw_prefill && !j.t_final && now_s() - t0 < 60)
        usleep(200);
    CU_ASSERT(s.saw_prefill);
    double t_cancel = now_s();
    size_t done_at_cancel = s.last_done, total = s.last_total;
    CU_ASSERT_EQUAL(lh_client_cancel(c), 0);
    pthread_join(t, NULL);
    double lat_prefill = (j.t_final - t_cancel) * 1e3;
    CU_ASSERT_EQUAL(j.rc, 0);
    CU_ASSERT_EQUAL(j.res.finish, LH_CLIENT_FINISH_CANCELLED);
    CU_ASSERT_EQUAL(j.res.n_generated, 0);
    CU_ASSERT(done_at_cancel < total);
    /* the bound: one prefill slice (--slice-ms 20) plus delivery; ASan slows everything */
    double bound = lh_test_asan() ? 250 : 50;
    printf("\n    cancel latency mid-prefill: %.1f ms (prompt %zu tokens, %zu evaluated when "
           "cancelled; bound %.0f ms)\n", lat_prefill, total, done_at_cancel, bound);
    CU_ASSERT(lat_prefill < bound);
    /* the next request on the same connection works */
    stream s2;
    memset(&s2, 0, sizeof s2);
    lh_client_result res;
    CU_ASSERT_EQUAL(greedy(c, "", 40, &s2, &res), 0);
    CU_ASSERT_EQUAL(res.finish, LH_CLIENT_FINISH_LENGTH);
    CU_ASSERT(s2.len > 0 && memcmp(s2.text, golden, s2.len) == 0);
    /* mid-decode, from the callback */
    memset(&s2, 0, sizeof s2);
    s2.cancel_after = 20;
    CU_ASSERT_EQUAL(greedy(c, "", 1000, &s2, &res), 0);
    double lat_decode = (now_s() - s2.t_cancel) * 1e3;
    CU_ASSERT_EQUAL(res.finish, LH_CLIENT_FINISH_CANCELLED);
    CU_ASSERT(res.n_generated >= 20 && res.n_generated < 1000);
    CU_ASSERT(memcmp(s2.text, golden, s2.len) == 0);
    printf("    cancel latency mid-decode: %.1f ms (%u tokens generated)\n", lat_decode,
           res.n_generated);
    CU_ASSERT(lat_decode < bound);
    /* and again the connection serves */
    memset(&s2, 0, sizeof s2);
    CU_ASSERT_EQUAL(greedy(c, "Once upon a time", 10, &s2, &res), 0);
    CU_ASSERT_EQUAL(res.finish, LH_CLIENT_FINISH_LENGTH);
    lh_client_close(c);
    free(prompt);
    free(golden);
}

static void test_prompt_reuse_and_stop(void)
{
    lh_client *c;
    CU_ASSERT_EQUAL_FATAL(lh_client_connect(&c, g_sock, 10000), 0);
    char *prompt = long_prompt(300);
    stream s;
    lh_client_result r1, r2;
    memset(&s, 0, sizeof s);
    CU_ASSERT_EQUAL(greedy(c, prompt, 16, &s, &r1), 0);
    char first[8192];
    snprintf(first, sizeof first, "%s", s.text);
    memset(&s, 0, sizeof s);
    CU_ASSERT_EQUAL(greedy(c, prompt, 16, &s, &r2), 0);
    /* the same prompt again: everything but the last token comes from the cache (2 slots, but
     * the one that holds the prompt is preferred) and the text is the same */
    CU_ASSERT_EQUAL(r2.n_prompt, r1.n_prompt);
    CU_ASSERT_EQUAL(r2.n_reused, r2.n_prompt - 1);
    CU_ASSERT_STRING_EQUAL(s.text, first);
    printf("\n    prompt reuse: %u of %u prompt tokens reused\n", r2.n_reused, r2.n_prompt);
    /* a stop string spanning tokens: " little girl" is two tokens */
    lh_client_gen_opts o;
    lh_client_gen_opts_default(&o);
    const char *stops[] = {"little girl"};
    o.temperature = 0;
    o.max_tokens = 100;
    o.stop = stops;
    o.n_stop = 1;
    memset(&s, 0, sizeof s);
    CU_ASSERT_EQUAL(lh_client_generate(c, &o, collect, &s, &r1), 0);
    CU_ASSERT_EQUAL(r1.finish, LH_CLIENT_FINISH_STOP);
    CU_ASSERT_STRING_EQUAL(s.text, "Once upon a time, there was a ");
    /* score and detokenize through the library */
    float lp[64];
    size_t n;
    double total;
    CU_ASSERT_EQUAL(lh_client_score(c, "Once upon a time", (size_t)-1, lp, 64, &n, &total), 0);
    CU_ASSERT_EQUAL(n, 4);
    CU_ASSERT(total < 0 && total > -40);
    int32_t ids[16];
    CU_ASSERT_EQUAL(lh_client_tokenize(c, "Once upon a time", (size_t)-1, 1, ids, 16, &n), 0);
    char buf[64];
    size_t len;
    CU_ASSERT_EQUAL(lh_client_detokenize(c, ids + 1, n - 1, buf, sizeof buf, &len), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "Once upon a time"));
    /* an invalid option is refused with a message */
    o.top_p = 2;
    CU_ASSERT_EQUAL(lh_client_generate(c, &o, collect, &s, &r1), LH_CLIENT_E_SERVER);
    CU_ASSERT_EQUAL(lh_client_last_error_code(c), LH_CLIENT_ERR_INVALID_ARGUMENT);
    CU_ASSERT(strlen(lh_client_last_error(c)) > 10);
    lh_client_close(c);
    free(prompt);
}

/* ---- a client killed mid-stream ------------------------------------------------------------- */

static void test_client_killed(void)
{
    int p[2];
    CU_ASSERT_EQUAL_FATAL(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        char bin[512];
        snprintf(bin, sizeof bin, "%s/longheads", lh_test_build_dir());
        execl(bin, bin, "--socket", g_sock, "generate", "-n", "3000", "--temp", "0", (char *)0);
        _exit(127);
    }
    close(p[1]);
    char buf[64];
    ssize_t n = read(p[0], buf, sizeof buf); /* it is streaming */
    CU_ASSERT(n > 0);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(p[0]);
    /* the daemon frees the request and keeps serving */
    lh_client *c;
    CU_ASSERT_EQUAL_FATAL(lh_client_connect(&c, g_sock, 10000), 0);
    lh_client_health h;
    double t0 = now_s();
    do {
        CU_ASSERT_EQUAL(lh_client_get_health(c, &h), 0);
        if (h.n_active == 0 && h.n_queued == 0)
            break;
        usleep(10000);
    } while (now_s() - t0 < 10);
    CU_ASSERT_EQUAL(h.n_active, 0);
    stream s;
    memset(&s, 0, sizeof s);
    lh_client_result res;
    CU_ASSERT_EQUAL(greedy(c, "", 10, &s, &res), 0);
    CU_ASSERT_EQUAL(res.finish, LH_CLIENT_FINISH_LENGTH);
    lh_client_close(c);
}

/* ---- malformed input ------------------------------------------------------------------------ */

static int raw_connect(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", g_sock);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {.tv_sec = 20};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void send_req(int fd, const Longheads__Request *r)
{
    uint8_t buf[1024];
    size_t n = longheads__request__get_packed_size(r);
    longheads__request__pack(r, buf);
    CU_ASSERT_EQUAL(lh_frame_write(fd, buf, n), 0);
}

/* Next response on a raw connection; NULL at EOF. */
static Longheads__Response *recv_resp(int fd)
{
    lh_frame_reader rd;
    lh_frame_reader_init(&rd, 1 << 20);
    Longheads__Response *r = NULL;
    uint8_t b;
    for (;;) {
        ssize_t n = read(fd, &b, 1); /* one byte at a time: never read past this frame */
        if (n <= 0)
            break;
        size_t used, size;
        const uint8_t *f;
        if (lh_frame_feed(&rd, &b, 1, &used, &f, &size) != 0)
            break;
        if (f) {
            r = longheads__response__unpack(NULL, size, f);
            break;
        }
    }
    lh_frame_reader_deinit(&rd);
    return r;
}

static int expect_error(int fd, Longheads__ErrorCode code, uint64_t id)
{
    Longheads__Response *r = recv_resp(fd);
    int ok = r && r->body_case == LONGHEADS__RESPONSE__BODY_ERROR && r->error->code == code &&
             r->id == id && r->error->message && strlen(r->error->message) > 10;
    if (r)
        longheads__response__free_unpacked(r, NULL);
    return ok;
}

static int at_eof(int fd)
{
    char b;
    return read(fd, &b, 1) == 0;
}

static void hello(int fd, uint32_t version)
{
    Longheads__Request req = LONGHEADS__REQUEST__INIT;
    Longheads__Hello h = LONGHEADS__HELLO__INIT;
    h.protocol_version = version;
    req.id = 1;
    req.body_case = LONGHEADS__REQUEST__BODY_HELLO;
    req.hello = &h;
    send_req(fd, &req);
}

static void test_malformed(void)
{
    /* a well-behaved client streams throughout; it must finish intact */
    static worker bystander;
    memset(&bystander, 0, sizeof bystander);
    bystander.n = 200;
    pthread_t t;
    pthread_create(&t, NULL, gen_worker, &bystander);

    /* garbage bytes: "GET " announces a ~540 MB frame -> BAD_FRAME, closed */
    int fd = raw_connect();
    CU_ASSERT_FATAL(fd >= 0);
    const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    CU_ASSERT(write(fd, http, sizeof http - 1) > 0);
    CU_ASSERT(expect_error(fd, LONGHEADS__ERROR_CODE__ERR_BAD_FRAME, 0));
    CU_ASSERT(at_eof(fd));
    close(fd);
    /* one byte over the limit (--max-frame 65536), after a good handshake */
    fd = raw_connect();
    hello(fd, LH_PROTOCOL_VERSION);
    Longheads__Response *r = recv_resp(fd);
    CU_ASSERT(r && r->body_case == LONGHEADS__RESPONSE__BODY_HELLO);
    if (r)
        longheads__response__free_unpacked(r, NULL);
    uint8_t hdr[4];
    lh_frame_header(hdr, 65537);
    CU_ASSERT(write(fd, hdr, 4) == 4);
    CU_ASSERT(expect_error(fd, LONGHEADS__ERROR_CODE__ERR_BAD_FRAME, 0));
    CU_ASSERT(at_eof(fd));
    close(fd);
    /* truncated frame, then the client goes away */
    fd = raw_connect();
    lh_frame_header(hdr, 100);
    CU_ASSERT(write(fd, hdr, 4) == 4);
    CU_ASSERT(write(fd, "0123456789", 10) == 10);
    close(fd);
    /* a valid frame with an invalid message: error, the connection stays usable */
    fd = raw_connect();
    hello(fd, LH_PROTOCOL_VERSION);
    r = recv_resp(fd);
    if (r)
        longheads__response__free_unpacked(r, NULL);
    const uint8_t bad[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    CU_ASSERT_EQUAL(lh_frame_write(fd, bad, sizeof bad), 0);
    CU_ASSERT(expect_error(fd, LONGHEADS__ERROR_CODE__ERR_BAD_MESSAGE, 0));
    /* an unknown request type (field 15, which this protocol does not define) */
    const uint8_t unknown[] = {0x08, 0x07, 0x7a, 0x00}; /* id = 7, field 15 (bytes, empty) */
    CU_ASSERT_EQUAL(lh_frame_write(fd, unknown, sizeof unknown), 0);
    CU_ASSERT(expect_error(fd, LONGHEADS__ERROR_CODE__ERR_UNKNOWN_REQUEST, 7));
    /* a zero-length frame is an empty Request: no body */
    CU_ASSERT_EQUAL(lh_frame_write(fd, NULL, 0), 0);
    CU_ASSERT(expect_error(fd, LONGHEADS__ERROR_CODE__ERR_UNKNOWN_REQUEST, 0));
    /* still serving this connection */
    Longheads__Request req = LONGHEADS__REQUEST__INIT;
    Longheads__HealthRequest hr = LONGHEADS__HEALTH_REQUEST__INIT;
    req.id = 9;
    req.body_case = LONGHEADS__REQUEST__BODY_HEALTH;
    req.health = &hr;
    send_req(fd, &req);
    r = recv_resp(fd);
    CU_ASSERT(r && r->id == 9 && r->body_case == LONGHEADS__RESPONSE__BODY_HEALTH);
    if (r)
        longheads__response__free_unpacked(r, NULL);
    close(fd);
    /* a wrong protocol version: ERR_VERSION, closed */
    fd = raw_connect();
    hello(fd, 99);
    CU_ASSERT(expect_error(fd, LONGHEADS__ERROR_CODE__ERR_VERSION, 1));
    CU_ASSERT(at_eof(fd));
    close(fd);
    /* a request before Hello: ERR_HANDSHAKE, closed */
    fd = raw_connect();
    send_req(fd, &req);
    CU_ASSERT(expect_error(fd, LONGHEADS__ERROR_CODE__ERR_HANDSHAKE, 9));
    CU_ASSERT(at_eof(fd));
    close(fd);

    pthread_join(t, NULL);
    CU_ASSERT_EQUAL(bystander.rc, 0);
    CU_ASSERT_EQUAL(bystander.res.finish, LH_CLIENT_FINISH_LENGTH);
    CU_ASSERT_EQUAL(bystander.s.n_tokens, 200);
    /* the daemon is alive */
    CU_ASSERT_EQUAL(kill(g_pid, 0), 0);
}

/* ---- socket activation, sd_notify, SIGTERM ------------------------------------------------- */

static void test_socket_activation(void)
{
    /* the test plays systemd: it owns the listening socket and the notify socket */
    char path[100], npath[100];
    snprintf(path, sizeof path, "%s/act.sock", g_dir);
    snprintf(npath, sizeof npath, "%s/notify.sock", g_dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX}, na = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    snprintf(na.sun_path, sizeof na.sun_path, "%s", npath);
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    CU_ASSERT_FATAL(bind(lfd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(lfd, 16) == 0);
    int nfd = socket(AF_UNIX, SOCK_DGRAM, 0);
    CU_ASSERT_FATAL(bind(nfd, (struct sockaddr *)&na, sizeof na) == 0);
    char saved[100];
    snprintf(saved, sizeof saved, "%s", g_sock);
    snprintf(g_sock, sizeof g_sock, "%s", path);
    pid_t pid = start_daemon_fd(NULL, lfd, npath);
    close(lfd);
    CU_ASSERT_FATAL(pid > 0);
    /* READY=1 came (after the model was loaded: we could already connect) */
    int ready = 0;
    char msg[512];
    struct pollfd pf = {.fd = nfd, .events = POLLIN};
    while (!ready && poll(&pf, 1, 5000) > 0) {
        ssize_t n = recv(nfd, msg, sizeof msg - 1, 0);
        if (n <= 0)
            break;
        msg[n] = 0;
        ready = strstr(msg, "READY=1") != NULL;
    }
    CU_ASSERT(ready);
    lh_client *c;
    CU_ASSERT_EQUAL_FATAL(lh_client_connect(&c, path, 10000), 0);
    stream s;
    memset(&s, 0, sizeof s);
    lh_client_result res;
    CU_ASSERT_EQUAL(greedy(c, "", 30, &s, &res), 0);
    CU_ASSERT_EQUAL(res.finish, LH_CLIENT_FINISH_LENGTH);
    /* SIGTERM while a generation runs: it is drained (finishes; cancelled if it outlives the
     * drain timeout), STOPPING=1, exit 0 */
    static stream ds;
    memset(&ds, 0, sizeof ds);
    long_job j = {.c = c, .prompt = "", .s = &ds};
    pthread_t t;
    pthread_create(&t, NULL, long_worker_n, &j);
    double t0 = now_s();
    while (atomic_load(&ds.n_tokens_seen) < 5 && !j.t_final && now_s() - t0 < 30)
        usleep(1000);
    size_t at_term = atomic_load(&ds.n_tokens_seen);
    kill(pid, SIGTERM);
    pthread_join(t, NULL);
    CU_ASSERT_EQUAL(j.rc, 0);
    /* drained, not cancelled: the generation (well under the 10 s drain timeout) ran to its
     * natural end after the signal */
    CU_ASSERT(j.res.finish == LH_CLIENT_FINISH_LENGTH || j.res.finish == LH_CLIENT_FINISH_EOS);
    CU_ASSERT(j.res.n_generated > at_term + 10);
    CU_ASSERT_EQUAL(j.res.n_generated, ds.n_tokens);
    lh_client_close(c);
    int stopping = 0;
    while (!stopping && poll(&pf, 1, 5000) > 0) {
        ssize_t n = recv(nfd, msg, sizeof msg - 1, 0);
        if (n <= 0)
            break;
        msg[n] = 0;
        stopping = strstr(msg, "STOPPING=1") != NULL;
    }
    CU_ASSERT(stopping);
    int st = -1;
    for (int i = 0; i < 300; i++) {
        int w;
        if (waitpid(pid, &w, WNOHANG) == pid) {
            st = WIFEXITED(w) ? WEXITSTATUS(w) : 128 + WTERMSIG(w);
            break;
        }
        usleep(100000);
    }
    if (st < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    CU_ASSERT_EQUAL(st, 0);
    close(nfd);
    snprintf(g_sock, sizeof g_sock, "%s", saved);
}

static void test_second_daemon_refused(void)
{
    /* the socket is live: a second daemon on it must refuse, not steal it */
    char bin[512], cmd[1200];
    snprintf(bin, sizeof bin, "%s/longheadsd", lh_test_build_dir());
    snprintf(cmd, sizeof cmd, "%s --model %s --socket %s 2>/dev/null", bin, lh_test_model_path(),
             g_sock);
    int st = system(cmd);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    lh_client *c;
    CU_ASSERT_EQUAL(lh_client_connect(&c, g_sock, 10000), 0);
    lh_client_close(c);
    struct stat sb;
    CU_ASSERT(stat(g_sock, &sb) == 0 && (sb.st_mode & 0777) == 0660);
}

static void test_systemd_verify(void)
{
    if (system("command -v systemd-analyze >/dev/null 2>&1") != 0) {
        lh_test_skip("systemd-analyze is not installed");
        return;
    }
    char cmd[2048];
    char cwd[512];
    CU_ASSERT_PTR_NOT_NULL_FATAL(getcwd(cwd, sizeof cwd));
    snprintf(cmd, sizeof cmd,
             "set -e; d=%s/units; mkdir -p $d/bin; ln -sf %s/%s/longheadsd $d/bin/longheadsd; "
             "sed 's|@PREFIX@|'$d'|g' contrib/systemd/longheadsd.service.in > $d/longheadsd.service; "
             "cp contrib/systemd/longheadsd.socket $d/; "
             "systemd-analyze verify $d/longheadsd.service $d/longheadsd.socket",
             g_dir, lh_test_build_dir()[0] == '/' ? "" : cwd, lh_test_build_dir());
    int st = system(cmd);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* the service must not own the socket unit's directory: RuntimeDirectory= would delete the
     * socket on every stop/restart */
    char *unit = slurp("contrib/systemd/longheadsd.service.in", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(unit);
    CU_ASSERT_PTR_NULL(strstr(unit, "\nRuntimeDirectory="));
    CU_ASSERT_PTR_NOT_NULL(strstr(unit, "--config-optional /etc/longheads/longheadsd.conf"));
    free(unit);
    /* the sysusers.d file creates the socket's group */
    if (system("command -v systemd-sysusers >/dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof cmd, "set -e; r=%s/sysroot; mkdir -p $r/etc; systemd-sysusers "
                 "--root=$r - < contrib/systemd/longheads.sysusers.conf >/dev/null 2>&1; "
                 "grep -q '^longheads:' $r/etc/group", g_dir);
        st = system(cmd);
        CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
}

/* The unit's config file is read (--config-optional), and a missing one is not an error. */
static void test_config_optional(void)
{
    char conf[128];
    snprintf(conf, sizeof conf, "%s/longheadsd.conf", g_dir);
    FILE *f = fopen(conf, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs("# as /etc/longheads/longheadsd.conf\nslots = 3\n", f);
    fclose(f);
    const char *extra[] = {"--config-optional", conf, NULL};
    pid_t pid = aux_start("conf", extra);
    CU_ASSERT_FATAL(pid > 0);
    lh_client *c;
    CU_ASSERT_FATAL(lh_client_connect(&c, g_sock, 5000) == 0);
    CU_ASSERT_EQUAL(lh_client_model(c)->n_slots, 3);
    lh_client_close(c);
    CU_ASSERT_EQUAL(aux_end(pid), 0);
    unlink(conf);
    pid = aux_start("conf", extra);
    CU_ASSERT(pid > 0);
    CU_ASSERT_EQUAL(aux_end(pid), 0);
}

/* ---- limits, timeouts, permissions, signals, faults (each on its own daemon) ----------------- */

/* Starts a daemon with extra args on <g_dir>/<name>.sock; g_sock points at it until aux_end. */
static char g_saved_sock[100];

static pid_t aux_start(const char *name, const char *const *extra)
{
    snprintf(g_saved_sock, sizeof g_saved_sock, "%s", g_sock);
    snprintf(g_sock, sizeof g_sock, "%s/%s.sock", g_dir, name);
    return start_daemon(extra);
}

static int aux_end(pid_t pid)
{
    int st = stop_daemon(pid);
    snprintf(g_sock, sizeof g_sock, "%s", g_saved_sock);
    return st;
}

static int wait_exit(pid_t pid, double max_s)
{
    for (int i = 0; i < (int)(max_s * 100); i++) {
        int w;
        if (waitpid(pid, &w, WNOHANG) == pid)
            return WIFEXITED(w) ? WEXITSTATUS(w) : 128 + WTERMSIG(w);
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static int hello_ok(int fd)
{
    hello(fd, LH_PROTOCOL_VERSION);
    Longheads__Response *r = recv_resp(fd);
    int ok = r && r->body_case == LONGHEADS__RESPONSE__BODY_HELLO;
    if (r)
        longheads__response__free_unpacked(r, NULL);
    return ok;
}

static size_t pack_gen(uint8_t *buf, uint64_t id, uint32_t max_tokens)
{
    Longheads__Request req = LONGHEADS__REQUEST__INIT;
    Longheads__GenerateRequest g = LONGHEADS__GENERATE_REQUEST__INIT;
    g.max_tokens = max_tokens;
    g.temperature = 0;
    req.id = id;
    req.body_case = LONGHEADS__REQUEST__BODY_GENERATE;
    req.generate = &g;
    size_t n = longheads__request__get_packed_size(&req);
    lh_frame_header(buf, n);
    longheads__request__pack(&req, buf + LH_FRAME_HEADER_SIZE);
    return n + LH_FRAME_HEADER_SIZE;
}

static void test_busy_duplicate_timeouts(void)
{
    const char *extra[] = {"--max-connections", "4", "--max-connections-per-uid", "4",
                           "--handshake-timeout", "1", "--frame-timeout", "1",
                           "--max-per-connection", "1", "--ctx", "4096", NULL};
    pid_t pid = aux_start("busy", extra);
    CU_ASSERT_FATAL(pid > 0);
    /* three idle sockets and one that dribbles a Hello, a byte at a time, too slowly */
    int idle[4];
    for (int i = 0; i < 4; i++)
        idle[i] = raw_connect();
    CU_ASSERT(idle[3] >= 0 && write(idle[3], "\x02", 1) == 1);
    usleep(100000);
    /* every slot is taken: a well-behaved client is refused, with the daemon's reason */
    lh_client *c = NULL;
    char why[256];
    int code = 0;
    int rc = lh_client_connect_err(&c, g_sock, 5000, why, sizeof why, &code);
    CU_ASSERT_EQUAL(rc, LH_CLIENT_E_SERVER);
    CU_ASSERT_EQUAL(code, LH_CLIENT_ERR_BUSY);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "max-connections"));
    /* ... but only until the handshake timeout frees them */
    double t0 = now_s();
    for (int i = 0; i < 3; i++)
        CU_ASSERT(write(idle[3], "\x00", 1) == 1 || 1); /* dribbling does not extend it */
    int got = 0;
    while (now_s() - t0 < 5 && !got) {
        got = lh_client_connect(&c, g_sock, 1000) == 0;
        if (!got)
            usleep(50000);
    }
    double waited = now_s() - t0;
    printf("\n    4 idle/dribbling sockets held the daemon for %.2f s more (handshake timeout 1 s)\n",
           waited);
    CU_ASSERT(got);
    CU_ASSERT(waited < 2.5);
    for (int i = 0; i < 3; i++) { /* told why, then closed */
        CU_ASSERT(expect_error(idle[i], LONGHEADS__ERROR_CODE__ERR_HANDSHAKE, 0));
        CU_ASSERT(at_eof(idle[i]));
        close(idle[i]);
    }
    CU_ASSERT(at_eof(idle[3])); /* mid-frame: closed without a word */
    close(idle[3]);
    if (got)
        lh_client_close(c);
    /* a frame that does not complete in time closes the connection (after a good Hello) */
    int fd = raw_connect();
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(hello_ok(fd));
    uint8_t hdr[4];
    lh_frame_header(hdr, 50);
    CU_ASSERT(write(fd, hdr, 4) == 4);
    t0 = now_s();
    int eof = 0;
    while (!eof && now_s() - t0 < 5) {
        if (write(fd, "x", 1) != 1)
            break;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 200) > 0)
            eof = at_eof(fd);
    }
    CU_ASSERT(eof || now_s() - t0 < 5);
    CU_ASSERT(now_s() - t0 < 2.5);
    close(fd);
    /* one connection: a generate in flight, then a second one (max-per-connection 1: BUSY) and
     * the same id again (DUPLICATE_ID), in one write so that the first is surely in flight; the
     * first still ends with exactly one Final */
    fd = raw_connect();
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(hello_ok(fd));
    uint8_t buf[256];
    size_t n = pack_gen(buf, 2, 2000);
    n += pack_gen(buf + n, 3, 5);
    n += pack_gen(buf + n, 2, 5);
    CU_ASSERT(write(fd, buf, n) == (ssize_t)n);
    int busy3 = 0, dup2 = 0, finals2 = 0, tokens2 = 0, other = 0, gen2 = -1;
    for (;;) {
        Longheads__Response *r = recv_resp(fd);
        if (!r)
            break;
        if (r->body_case == LONGHEADS__RESPONSE__BODY_ERROR && r->id == 3 &&
            r->error->code == LONGHEADS__ERROR_CODE__ERR_BUSY)
            busy3++;
        else if (r->body_case == LONGHEADS__RESPONSE__BODY_ERROR && r->id == 2 &&
                 r->error->code == LONGHEADS__ERROR_CODE__ERR_DUPLICATE_ID &&
                 strstr(r->error->message, "2"))
            dup2++;
        else if (r->body_case == LONGHEADS__RESPONSE__BODY_FINAL && r->id == 2) {
            finals2++;
            gen2 = (int)r->final->n_generated;
        }
        else if (r->body_case == LONGHEADS__RESPONSE__BODY_TOKEN && r->id == 2)
            tokens2++;
        else if (r->body_case != LONGHEADS__RESPONSE__BODY_PROGRESS)
            other++;
        int fin = r->body_case == LONGHEADS__RESPONSE__BODY_FINAL;
        longheads__response__free_unpacked(r, NULL);
        if (fin)
            break;
    }
    CU_ASSERT_EQUAL(busy3, 1);
    CU_ASSERT_EQUAL(dup2, 1);
    CU_ASSERT_EQUAL(finals2, 1);
    CU_ASSERT(tokens2 > 100);
    CU_ASSERT_EQUAL(tokens2, gen2);
    CU_ASSERT_EQUAL(other, 0);
    close(fd);
    CU_ASSERT_EQUAL(aux_end(pid), 0);
}

/* Backpressure: a client that does not read gets its generation paused, not buffered without
 * bound; once it reads, everything arrives. */
static void test_backpressure(void)
{
    int fd = raw_connect();
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(hello_ok(fd));
    /* tokenize replies (~25 KB each) fill the socket buffer and 256 KiB of daemon output */
    char *text = long_prompt(9000); /* < 65536 bytes: --max-frame of the main daemon */
    size_t tl = strlen(text);
    CU_ASSERT_FATAL(tl < 60000);
    Longheads__Request req = LONGHEADS__REQUEST__INIT;
    Longheads__TokenizeRequest tr = LONGHEADS__TOKENIZE_REQUEST__INIT;
    tr.text = text;
    req.body_case = LONGHEADS__REQUEST__BODY_TOKENIZE;
    req.tokenize = &tr;
    uint8_t *buf = malloc(tl + 64);
    enum { N_TOK = 60 };
    for (int i = 0; i < N_TOK; i++) {
        req.id = 100 + (uint64_t)i;
        size_t n = longheads__request__pack(&req, buf);
        CU_ASSERT(lh_frame_write(fd, buf, n) == 0);
        /* mostly under max-per-connection (refusals are fine: small frames); sanitizers
         * tokenize ~10x slower */
        usleep(lh_test_asan() ? 200000 : 20000);
    }
    usleep(500000); /* every tokenize answered: the generation gets a place */
    uint8_t g[64];
    size_t gn = pack_gen(g, 7, 50);
    CU_ASSERT(write(fd, g, gn) == (ssize_t)gn);
    usleep(400000);
    /* the generation is paused: still active, seen from another connection */
    lh_client *c;
    CU_ASSERT_FATAL(lh_client_connect(&c, g_sock, 5000) == 0);
    lh_client_health h;
    CU_ASSERT_EQUAL(lh_client_get_health(c, &h), 0);
    CU_ASSERT_EQUAL(h.n_active, 1);
    /* now read everything: all replies, then the whole generation */
    int n_tok = 0, n_busy = 0, n_gen = 0, fin = 0;
    while (!fin || n_tok + n_busy < N_TOK) { /* tokenize replies may follow the Final */
        Longheads__Response *r = recv_resp(fd);
        if (!r)
            break;
        if (r->body_case == LONGHEADS__RESPONSE__BODY_TOKENIZE)
            n_tok++;
        else if (r->body_case == LONGHEADS__RESPONSE__BODY_ERROR)
            n_busy++;
        else if (r->body_case == LONGHEADS__RESPONSE__BODY_TOKEN && r->id == 7)
            n_gen++;
        else if (r->body_case == LONGHEADS__RESPONSE__BODY_FINAL && r->id == 7)
            fin = r->final->reason == LONGHEADS__FINISH_REASON__FINISH_LENGTH;
        longheads__response__free_unpacked(r, NULL);
    }
    printf("\n    backpressure: %d tokenize replies (+%d refused busy) queued unread; the "
           "generation was paused (n_active %u) and then completed\n", n_tok, n_busy,
           h.n_active);
    CU_ASSERT(fin);
    CU_ASSERT_EQUAL(n_gen, 50);
    CU_ASSERT_EQUAL(n_tok + n_busy, N_TOK);
    CU_ASSERT(n_tok > 12);
    lh_client_close(c);
    close(fd);
    free(buf);
    free(text);
}

/* --allow-uid with --socket-mode/--socket-group: an allowed uid gets in, another gets the
 * daemon's ERR_PERMISSION text (also from the CLI), a uid outside the group cannot open it. */
static int connect_as(uid_t uid, gid_t gid, int *codep, char *why, size_t why_size)
{
    int p[2];
    if (pipe(p) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        int res[2] = {-100, 0};
        char msg[256] = "";
        if (setgroups(0, NULL) == 0 && setgid(gid) == 0 && setuid(uid) == 0) {
            lh_client *c;
            res[0] = lh_client_connect_err(&c, g_sock, 5000, msg, sizeof msg, &res[1]);
            if (res[0] == 0)
                lh_client_close(c);
        }
        if (write(p[1], res, sizeof res) < 0 || write(p[1], msg, sizeof msg) < 0)
            _exit(1);
        _exit(0);
    }
    close(p[1]);
    int res[2] = {-200, 0};
    char msg[256] = "";
    if (read(p[0], res, sizeof res) != (ssize_t)sizeof res || read(p[0], msg, sizeof msg) < 0)
        res[0] = -300;
    close(p[0]);
    waitpid(pid, NULL, 0);
    *codep = res[1];
    snprintf(why, why_size, "%s", msg);
    return res[0];
}

static void test_allow_uid_socket_mode(void)
{
    if (geteuid() != 0) {
        lh_test_skip("needs root to act as other uids");
        return;
    }
    CU_ASSERT_FATAL(chmod(g_dir, 0711) == 0);
    const char *extra[] = {"--allow-uid", "4242", "--socket-mode", "0660", "--socket-group",
                           "4243", NULL};
    pid_t pid = aux_start("perm", extra);
    CU_ASSERT_FATAL(pid > 0);
    struct stat sb;
    CU_ASSERT(stat(g_sock, &sb) == 0 && (sb.st_mode & 0777) == 0660 && sb.st_gid == 4243);
    int code;
    char why[256];
    /* allowed uid, through the socket's group */
    CU_ASSERT_EQUAL(connect_as(4242, 4243, &code, why, sizeof why), 0);
    /* a uid the allow-list refuses: the daemon's reason reaches the caller */
    CU_ASSERT_EQUAL(connect_as(4244, 4243, &code, why, sizeof why), LH_CLIENT_E_SERVER);
    CU_ASSERT_EQUAL(code, LH_CLIENT_ERR_PERMISSION);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "allow-uid"));
    /* outside the group: the socket's mode keeps it out */
    CU_ASSERT_EQUAL(connect_as(4244, 4244, &code, why, sizeof why), -EACCES);
    /* the CLI prints the daemon's text, not a generic one.  It runs from a copy in g_dir (0711)
     * with its library beside it (rpath $ORIGIN): the checkout may sit in a directory other uids
     * cannot enter. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp %s/longheads %s/liblongheads.so.1 %s/ && chmod 755 %s/longheads "
             "%s/liblongheads.so.1", lh_test_build_dir(), lh_test_build_dir(), g_dir, g_dir, g_dir);
    CU_ASSERT_FATAL(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "setpriv --reuid 4244 --regid 4243 --clear-groups %s/longheads "
             "--socket %s health 2>&1", g_dir, g_sock);
    int st;
    char *out = run_capture(cmd, &st);
    CU_ASSERT_EQUAL(st, 2);
    CU_ASSERT_PTR_NOT_NULL(out && strstr(out, "allow-uid"));
    free(out);
    CU_ASSERT_EQUAL(aux_end(pid), 0);
    chmod(g_dir, 0700);
}

/* SIGHUP reopens the log file (logrotate), and does not kill the daemon. */
static void test_sighup(void)
{
    char log[128], rotated[140];
    snprintf(log, sizeof log, "%s/hup.log", g_dir);
    snprintf(rotated, sizeof rotated, "%s.1", log);
    const char *extra[] = {"--log-file", log, NULL};
    pid_t pid = aux_start("hup", extra);
    CU_ASSERT_FATAL(pid > 0);
    CU_ASSERT_EQUAL(rename(log, rotated), 0);
    CU_ASSERT_EQUAL(kill(pid, SIGHUP), 0);
    char *s = NULL;
    for (int i = 0; i < 200; i++) {
        free(s);
        s = slurp(log, NULL);
        if (s && strstr(s, "log reopened"))
            break;
        usleep(10000);
    }
    CU_ASSERT(s && strstr(s, "log reopened"));
    free(s);
    lh_client *c;
    CU_ASSERT_EQUAL(lh_client_connect(&c, g_sock, 5000), 0);
    lh_client_close(c);
    CU_ASSERT_EQUAL(kill(pid, 0), 0);
    CU_ASSERT_EQUAL(aux_end(pid), 0);
}

static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static size_t count_lines(const char *path, const char *needle)
{
    char *s = slurp(path, NULL);
    size_t n = 0;
    for (char *p = s; p && (p = strstr(p, needle)); p++)
        n++;
    free(s);
    return n;
}

/* The chunk score and the recent chunks are wired through: a daemon started with --score bound
 * --recent 3 says so in its info, serves requests with its defaults and with either score or
 * another recent count asked for, and each gives byte for byte the text longheads-run gives with
 * those settings (the prompt, 2500 bytes of stories, runs past the 512-token window, where the
 * settings choose different chunks and the texts differ); the slot then reports what it ran. */
static void test_score_option(void)
{
    char path[128], cmd[1024];
    snprintf(path, sizeof path, "%s/score-prompt.txt", g_dir);
    size_t len = 0;
    char *all = slurp("tests/data/stories-long.txt", &len);
    CU_ASSERT_FATAL(all != NULL && len > 2500);
    all[2500] = 0;
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(all, f);
    fclose(f);
    const char *extra[] = {"--score", "bound", "--recent", "3", "--ctx", "2048", NULL};
    pid_t pid = aux_start("score", extra);
    CU_ASSERT_FATAL(pid > 0);
    lh_client *c;
    CU_ASSERT_EQUAL_FATAL(lh_client_connect(&c, g_sock, 10000), 0);
    CU_ASSERT_EQUAL(lh_client_model(c)->score_default, LH_CLIENT_SCORE_BOUND);
    CU_ASSERT_EQUAL(lh_client_model(c)->recent_default, 3);
    static const struct {
        lh_client_chunk_score score;
        const char *arg;
        uint32_t recent;
    } runs[] = {
        {LH_CLIENT_SCORE_DEFAULT, "bound", 0}, {LH_CLIENT_SCORE_REP, "rep", 0},
        {LH_CLIENT_SCORE_BOUND, "bound", 0}, {LH_CLIENT_SCORE_BOUND, "bound", 2}};
    char *text[4] = {0};
    for (size_t k = 0; k < 4; k++) {
        snprintf(cmd, sizeof cmd, "%s/longheads-run -m %s -f %s -n 48 --temp 0 --ctx 2048 "
                 "--score %s --recent %u 2>/dev/null", lh_test_build_dir(), lh_test_model_path(),
                 path, runs[k].arg, runs[k].recent ? runs[k].recent : 3);
        int st;
        char *ref = run_capture(cmd, &st);
        CU_ASSERT_EQUAL(st, 0);
        lh_client_gen_opts o;
        lh_client_gen_opts_default(&o);
        o.prompt = all;
        o.prompt_len = 2500;
        o.max_tokens = 48;
        o.temperature = 0;
        o.score = runs[k].score;
        o.recent = runs[k].recent;
        static stream s;
        memset(&s, 0, sizeof s);
        lh_client_result res;
        CU_ASSERT_EQUAL(lh_client_generate(c, &o, collect, &s, &res), 0);
        CU_ASSERT(strlen(ref) > 40);
        CU_ASSERT_STRING_EQUAL(s.text, ref);
        text[k] = strdup(s.text);
        free(ref);
    }
    CU_ASSERT_STRING_EQUAL(text[0], text[2]);
    CU_ASSERT(strcmp(text[1], text[2]) != 0);
    CU_ASSERT(strcmp(text[3], text[2]) != 0);
    lh_client_status st;
    CU_ASSERT_EQUAL(lh_client_get_status(c, &st), 0);
    size_t n_two = 0;   /* the slot the last request ran on */
    for (uint32_t i = 0; i < st.n_slots && i < LH_CLIENT_MAX_SLOTS; i++)
        n_two += st.slots[i].attn == LH_CLIENT_ATTN_LONGHEADS && st.slots[i].recent == 2;
    CU_ASSERT(n_two >= 1);
    /* a Score request takes the same settings: the daemon's defaults spelled out give the same
     * log-probabilities bit for bit, another score or recent count others */
    static const lh_client_score_opts sos[4] = {
        {LH_CLIENT_ATTN_DEFAULT, 0, 0, LH_CLIENT_SCORE_DEFAULT, 0},
        {LH_CLIENT_ATTN_LONGHEADS, 0, 0, LH_CLIENT_SCORE_BOUND, 3},
        {LH_CLIENT_ATTN_DEFAULT, 0, 0, LH_CLIENT_SCORE_DEFAULT, 2},
        {LH_CLIENT_ATTN_DEFAULT, 0, 0, LH_CLIENT_SCORE_REP, 0}};
    double tot[4];
    size_t n_lp[4];
    float *lp = malloc(4096 * sizeof *lp);
    CU_ASSERT_FATAL(lp != NULL);
    for (size_t k = 0; k < 4; k++)
        CU_ASSERT_EQUAL(lh_client_score_ex(c, all, 2500, &sos[k], lp, 4096, &n_lp[k], &tot[k]),
                        0);
    CU_ASSERT(n_lp[0] > 600 && n_lp[0] == n_lp[1] && n_lp[0] == n_lp[2]);
    CU_ASSERT(tot[0] == tot[1]);
    CU_ASSERT(tot[2] != tot[0]);
    CU_ASSERT(tot[3] != tot[0]);
    free(lp);
    for (size_t k = 0; k < 4; k++)
        free(text[k]);
    free(all);
    lh_client_close(c);
    CU_ASSERT_EQUAL(aux_end(pid), 0);
}

/* Out of file descriptors: the daemon neither spins nor floods its log, and serves again once
 * connections close. */
static void test_fd_exhaustion(void)
{
    char log[128];
    snprintf(log, sizeof log, "%s/fd.log", g_dir);
    const char *extra[] = {"--log-file", log, "--handshake-timeout", "60",
                           "--max-connections", "200", "--max-connections-per-uid", "200",
                           NULL};
    struct rlimit old, low;
    CU_ASSERT_FATAL(getrlimit(RLIMIT_NOFILE, &old) == 0);
    low = old;
    low.rlim_cur = 32;
    CU_ASSERT_FATAL(setrlimit(RLIMIT_NOFILE, &low) == 0);
    pid_t pid = aux_start("fd", extra);
    setrlimit(RLIMIT_NOFILE, &old);
    CU_ASSERT_FATAL(pid > 0);
    enum { N = 60 };
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = raw_connect();
    usleep(300000);
    size_t lines0 = count_lines(log, "accept:");
    double cpu0 = proc_cpu_s(pid), t0 = now_s();
    usleep(2000000);
    double cpu = (proc_cpu_s(pid) - cpu0) / (now_s() - t0);
    size_t lines = count_lines(log, "accept:") - lines0;
    printf("\n    at the fd limit (ulimit -n 32, %d connects): daemon CPU %.1f%%, %zu accept log "
           "line(s) in 2 s (%zu in all)\n", N, cpu * 100, lines, lines0 + lines);
    CU_ASSERT(cpu < 0.10);
    CU_ASSERT(lines <= 1);
    CU_ASSERT(lines0 + lines >= 1);
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    /* serves again */
    lh_client *c = NULL;
    t0 = now_s();
    int ok = 0;
    while (!ok && now_s() - t0 < 10) {
        ok = lh_client_connect(&c, g_sock, 2000) == 0;
        if (!ok)
            usleep(100000);
    }
    CU_ASSERT(ok);
    if (ok) {
        stream s;
        memset(&s, 0, sizeof s);
        lh_client_result res;
        CU_ASSERT_EQUAL(greedy(c, "", 10, &s, &res), 0);
        CU_ASSERT_EQUAL(res.finish, LH_CLIENT_FINISH_LENGTH);
        lh_client_close(c);
    }
    CU_ASSERT_EQUAL(aux_end(pid), 0);
}

static int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    int rc = in && out ? 0 : -1;
    char buf[65536];
    size_t n;
    while (rc == 0 && (n = fread(buf, 1, sizeof buf, in)) > 0)
        rc = fwrite(buf, 1, n, out) == n ? 0 : -1;
    if (in)
        fclose(in);
    if (out && fclose(out) != 0)
        rc = -1;
    return rc;
}

typedef struct {
    lh_client *c;
    stream s;
    lh_client_result res;
    int rc;
} gen_job;

static void *gen_long(void *arg)
{
    gen_job *j = arg;
    j->rc = greedy(j->c, "", 4000, &j->s, &j->res);
    return NULL;
}

/* Starts the daemon with args, a long generation on it (j, thread t) and, 20 ms in, truncates
 * the model file to 4096 bytes: the daemon's pid. */
static pid_t truncate_under_generation(const char **args, const char *model, gen_job *j,
                                       pthread_t *t)
{
    pid_t pid = start_daemon(args);
    CU_ASSERT_FATAL(pid > 0);
    memset(j, 0, sizeof *j);
    CU_ASSERT_FATAL(lh_client_connect(&j->c, g_sock, 5000) == 0);
    pthread_create(t, NULL, gen_long, j);
    usleep(20000);
    CU_ASSERT_EQUAL(truncate(model, 4096), 0);
    return pid;
}

/* The model file mapped (--mmap) and truncated under a running generation: a logged error, the
 * socket removed, exit status 1 (not a silent SIGBUS); changed in place between requests: the
 * request is refused with the reason and the daemon stops the same way.  Read into memory (the
 * default for a file this small): the same truncation changes nothing, the generation completes
 * and the next request is served. */
static void test_model_file_changed(void)
{
    char model[128], log[128];
    snprintf(model, sizeof model, "%s/copy.gguf", g_dir);
    snprintf(log, sizeof log, "%s/bus.log", g_dir);
    CU_ASSERT_FATAL(copy_file(lh_test_model_path(), model) == 0);
    char saved[100];
    snprintf(saved, sizeof saved, "%s", g_sock);
    snprintf(g_sock, sizeof g_sock, "%s/bus.sock", g_dir);
    /* start_daemon passes --model LH_MODEL first; a later --model wins */
    const char *loaded[] = {"--model", model, "--ctx", "4096", "--log-file", log, NULL};
    pid_t pid;
    {
        static gen_job jl;
        pthread_t tl;
        pid = truncate_under_generation(loaded, model, &jl, &tl);
        pthread_join(tl, NULL);
        CU_ASSERT_EQUAL(jl.rc, 0);
        CU_ASSERT(jl.res.finish == LH_CLIENT_FINISH_LENGTH || jl.res.finish == LH_CLIENT_FINISH_EOS);
        CU_ASSERT(jl.s.n_tokens > 0);
        stream s2;
        memset(&s2, 0, sizeof s2);
        lh_client_result r2;
        CU_ASSERT_EQUAL(greedy(jl.c, "", 10, &s2, &r2), 0);
        CU_ASSERT(s2.n_tokens > 0 && r2.finish != LH_CLIENT_FINISH_ERROR);
        lh_client_close(jl.c);
        CU_ASSERT_EQUAL(stop_daemon(pid), 0);
        CU_ASSERT_FATAL(copy_file(lh_test_model_path(), model) == 0);
    }
    const char *extra[] = {"--model", model, "--ctx", "4096", "--log-file", log, "--mmap", NULL};
    static gen_job j;
    pthread_t t;
    pid = truncate_under_generation(extra, model, &j, &t);
    int st = wait_exit(pid, 20);
    pthread_join(t, NULL);
    lh_client_close(j.c);
    char *s = slurp(log, NULL);
    printf("\n    model truncated mid-generation: exit status %d after %zu tokens streamed\n", st,
           j.s.n_tokens);
    CU_ASSERT_EQUAL(st, 1);
    CU_ASSERT(s && (strstr(s, "SIGBUS") || strstr(s, "Bus error") ||
                    strstr(s, "changed on disk")));
    free(s);
    struct stat sb;
    CU_ASSERT(stat(g_sock, &sb) != 0 && errno == ENOENT);
    /* changed in place between requests (a byte appended: nothing faults) */
    CU_ASSERT_FATAL(copy_file(lh_test_model_path(), model) == 0);
    pid = start_daemon(extra);
    CU_ASSERT_FATAL(pid > 0);
    lh_client *c;
    CU_ASSERT_FATAL(lh_client_connect(&c, g_sock, 5000) == 0);
    FILE *f = fopen(model, "ab");
    CU_ASSERT_FATAL(f != NULL);
    fputc('x', f);
    fclose(f);
    stream ss;
    memset(&ss, 0, sizeof ss);
    lh_client_result res;
    int grc = greedy(c, "", 10, &ss, &res);
    CU_ASSERT(grc == 0 || grc == LH_CLIENT_E_SERVER);
    CU_ASSERT_EQUAL(res.finish, LH_CLIENT_FINISH_ERROR);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.error, "changed on disk"));
    lh_client_close(c);
    CU_ASSERT_EQUAL(wait_exit(pid, 20), 1);
    CU_ASSERT(stat(g_sock, &sb) != 0 && errno == ENOENT);
    snprintf(g_sock, sizeof g_sock, "%s", saved);
}

/* Big Tokenize requests do not hold up a short generation. */
typedef struct {
    char *text;
    size_t len;
    int rc;
    size_t n;
} tok_job;

static void *tok_worker(void *arg)
{
    tok_job *j = arg;
    lh_client *c;
    j->rc = lh_client_connect(&c, g_sock, 10000);
    if (j->rc == 0) {
        j->rc = lh_client_tokenize(c, j->text, j->len, 1, NULL, 0, &j->n);
        lh_client_close(c);
    }
    return NULL;
}

static void test_big_tokenize_vs_generate(void)
{
    /* 8 x 1 MB here (about 4 s of tokenizing on one core); LH_TEST_BIG_KB=16384 for 16 MB */
    size_t kb = lh_test_asan() ? 256 : 1024;
    if (getenv("LH_TEST_BIG_KB"))
        kb = (size_t)atoi(getenv("LH_TEST_BIG_KB"));
    char maxf[32];
    snprintf(maxf, sizeof maxf, "%zu", (kb << 10) + 4096);
    const char *extra[] = {"--max-frame", maxf, NULL};
    pid_t pid = aux_start("big", extra);
    CU_ASSERT_FATAL(pid > 0);
    enum { N = 8 };
    size_t len = kb << 10;
    char *text = malloc(len + 1);
    CU_ASSERT_FATAL(text != NULL);
    for (size_t i = 0; i < len; i++)
        text[i] = "the little dog ran to the park "[i % 31];
    text[len] = 0;
    static tok_job jobs[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = (tok_job){.text = text, .len = len};
        pthread_create(&t[i], NULL, tok_worker, &jobs[i]);
    }
    usleep(300000); /* the frames are in (or arriving) and tokenizing */
    lh_client *c;
    CU_ASSERT_FATAL(lh_client_connect(&c, g_sock, 10000) == 0);
    stream s;
    memset(&s, 0, sizeof s);
    lh_client_result res;
    double t0 = now_s();
    CU_ASSERT_EQUAL(greedy(c, "Once upon a time", 3, &s, &res), 0);
    double dt = now_s() - t0;
    lh_client_close(c);
    lh_client_health h = {0};
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    double t_all = now_s() - t0;
    char st_path[64], line[256];
    long hwm = -1;
    snprintf(st_path, sizeof st_path, "/proc/%d/status", (int)pid);
    FILE *sf = fopen(st_path, "r");
    while (sf && fgets(line, sizeof line, sf))
        if (sscanf(line, "VmHWM: %ld", &hwm) == 1)
            break;
    if (sf)
        fclose(sf);
    printf("\n    %d x %zu KB Tokenize: a 3-token Generate took %.3f s (all tokenizes done after "
           "%.1f s; daemon peak RSS %ld MiB)\n", N, kb, dt, t_all, hwm / 1024);
    (void)h;
    CU_ASSERT_EQUAL(res.finish, LH_CLIENT_FINISH_LENGTH);
    CU_ASSERT(dt < 1.0);
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(jobs[i].rc, LH_CLIENT_E_LIMIT); /* cap 0: only the count */
        CU_ASSERT(jobs[i].n > len / 8);
    }
    free(text);
    CU_ASSERT_EQUAL(aux_end(pid), 0);
}

/* A request that cannot get memory is refused with an error; the daemon stays up and serves. */
static void test_out_of_memory(void)
{
    if (lh_test_asan()) {
        lh_test_skip("an address-space limit and the sanitizers' shadow memory do not mix");
        return;
    }
    const char *extra[] = {"--max-frame", "17000000", NULL};
    struct rlimit old, low;
    CU_ASSERT_FATAL(getrlimit(RLIMIT_AS, &old) == 0);
    low = old;
    low.rlim_cur = 640ul << 20; /* the daemon needs ~250-400 MB of address space idle */
    CU_ASSERT_FATAL(setrlimit(RLIMIT_AS, &low) == 0);
    pid_t pid = aux_start("oom", extra);
    setrlimit(RLIMIT_AS, &old);
    CU_ASSERT_FATAL(pid > 0);
    size_t len = 16u << 20;
    char *text = malloc(len + 1);
    CU_ASSERT_FATAL(text != NULL);
    for (size_t i = 0; i < len; i++)
        text[i] = "the little dog ran to the park "[i % 31];
    text[len] = 0;
    lh_client *c;
    CU_ASSERT_FATAL(lh_client_connect(&c, g_sock, 10000) == 0);
    size_t n = 0;
    int rc = lh_client_tokenize(c, text, len, 1, NULL, 0, &n);
    printf("\n    16 MB Tokenize under a 640 MB address-space limit: %s: %s\n",
           lh_client_strerror(rc), lh_client_last_error(c));
    CU_ASSERT_EQUAL(rc, LH_CLIENT_E_SERVER);
    CU_ASSERT(strlen(lh_client_last_error(c)) > 5);
    stream s;
    memset(&s, 0, sizeof s);
    lh_client_result res;
    CU_ASSERT_EQUAL(greedy(c, "Once upon a time", 10, &s, &res), 0);
    CU_ASSERT_EQUAL(res.finish, LH_CLIENT_FINISH_LENGTH);
    lh_client_close(c);
    free(text);
    CU_ASSERT_EQUAL(aux_end(pid), 0);
}

/* ---- the client library against a scripted fake daemon -------------------------------------- */

typedef struct {
    int lfd;
    int mode; /* 0: answer a generate with a NUL-bearing token; 1: never answer after Hello */
} fake;

static void fake_send(int fd, const Longheads__Response *r)
{
    uint8_t buf[1024];
    size_t n = longheads__response__get_packed_size(r);
    longheads__response__pack(r, buf);
    lh_frame_write(fd, buf, n);
}

static void *fake_main(void *arg)
{
    fake *f = arg;
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    lh_frame_reader rd;
    lh_frame_reader_init(&rd, 1 << 20);
    uint8_t b;
    int n_req = 0;
    while (read(fd, &b, 1) == 1) {
        size_t used, size;
        const uint8_t *fr;
        if (lh_frame_feed(&rd, &b, 1, &used, &fr, &size) != 0)
            break;
        if (!fr)
            continue;
        Longheads__Request *q = longheads__request__unpack(NULL, size, fr);
        if (!q)
            break;
        Longheads__Response r = LONGHEADS__RESPONSE__INIT;
        r.id = q->id;
        if (n_req++ == 0) {
            Longheads__HelloReply h = LONGHEADS__HELLO_REPLY__INIT;
            Longheads__ModelInfo mi = LONGHEADS__MODEL_INFO__INIT;
            h.protocol_version = LH_PROTOCOL_VERSION;
            h.model = &mi;
            r.body_case = LONGHEADS__RESPONSE__BODY_HELLO;
            r.hello = &h;
            fake_send(fd, &r);
        } else if (f->mode == 0 && q->body_case == LONGHEADS__REQUEST__BODY_GENERATE) {
            Longheads__Token t = LONGHEADS__TOKEN__INIT;
            t.id = 3;
            t.text = "a";
            t.text_bytes.data = (uint8_t *)"a\0b";
            t.text_bytes.len = 3;
            r.body_case = LONGHEADS__RESPONSE__BODY_TOKEN;
            r.token = &t;
            fake_send(fd, &r);
            Longheads__Final fin = LONGHEADS__FINAL__INIT;
            fin.reason = LONGHEADS__FINISH_REASON__FINISH_LENGTH;
            fin.n_generated = 1;
            fin.text = "";
            fin.text_bytes.data = (uint8_t *)"\0z";
            fin.text_bytes.len = 2;
            r.body_case = LONGHEADS__RESPONSE__BODY_FINAL;
            r.final = &fin;
            fake_send(fd, &r);
        }
        longheads__request__free_unpacked(q, NULL);
    }
    lh_frame_reader_deinit(&rd);
    close(fd);
    return NULL;
}

static void test_client_fake_daemon(void)
{
    char path[100];
    snprintf(path, sizeof path, "%s/fake.sock", g_dir);
    for (int mode = 0; mode < 2; mode++) {
        unlink(path);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
        fake f = {.lfd = socket(AF_UNIX, SOCK_STREAM, 0), .mode = mode};
        CU_ASSERT_FATAL(bind(f.lfd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
                        listen(f.lfd, 4) == 0);
        pthread_t t;
        pthread_create(&t, NULL, fake_main, &f);
        lh_client *c;
        CU_ASSERT_FATAL(lh_client_connect(&c, path, 5000) == 0);
        if (mode == 0) {
            /* a token whose text holds a NUL byte arrives whole (its length is carried) */
            stream s;
            memset(&s, 0, sizeof s);
            lh_client_result res;
            CU_ASSERT_EQUAL(greedy(c, "x", 1, &s, &res), 0);
            CU_ASSERT_EQUAL(s.len, 5);
            CU_ASSERT(memcmp(s.text, "a\0b\0z", 5) == 0);
            CU_ASSERT_EQUAL(res.finish, LH_CLIENT_FINISH_LENGTH);
        } else {
            /* a daemon that never answers: every call gives up at the timeout */
            lh_client_set_timeout(c, 200);
            lh_client_health h;
            double t0 = now_s();
            CU_ASSERT_EQUAL(lh_client_get_health(c, &h), LH_CLIENT_E_TIMEOUT);
            stream s;
            memset(&s, 0, sizeof s);
            lh_client_result res;
            CU_ASSERT_EQUAL(greedy(c, "x", 1, &s, &res), LH_CLIENT_E_TIMEOUT);
            double dt = now_s() - t0;
            CU_ASSERT(dt > 0.35 && dt < 2);
        }
        lh_client_close(c);
        pthread_join(t, NULL);
        close(f.lfd);
    }
    unlink(path);
}

void lh_test_e2e(void)
{
    CU_pSuite s = CU_add_suite("e2e", suite_init, suite_clean);
    CU_add_test(s, "CLI: golden text, longheads-run parity, info/health/tokenize", test_cli_golden);
    CU_add_test(s, "--score bound / per-request score: info says it, texts equal longheads-run's",
                test_score_option);
    CU_add_test(s, "token-id prompts (the passkey path) give longheads-run's text",
                test_token_prompt_parity);
    CU_add_test(s, "8 clients at once get complete streams", test_eight_clients);
    CU_add_test(s, "cancel mid-prefill and mid-decode", test_cancel);
    CU_add_test(s, "prompt reuse, stop strings, score, refusals", test_prompt_reuse_and_stop);
    CU_add_test(s, "client killed mid-stream", test_client_killed);
    CU_add_test(s, "malformed input", test_malformed);
    CU_add_test(s, "a second daemon does not steal the socket", test_second_daemon_refused);
    CU_add_test(s, "socket activation, sd_notify, SIGTERM drain", test_socket_activation);
    CU_add_test(s, "systemd-analyze verify; unit layout; sysusers.d", test_systemd_verify);
    CU_add_test(s, "the unit's config file is read (--config-optional)", test_config_optional);
    CU_add_test(s, "ERR_BUSY, handshake/frame timeouts, duplicate id",
                test_busy_duplicate_timeouts);
    CU_add_test(s, "backpressure pauses a generation the client does not read",
                test_backpressure);
    CU_add_test(s, "--allow-uid, --socket-mode/--socket-group, ERR_PERMISSION text",
                test_allow_uid_socket_mode);
    CU_add_test(s, "SIGHUP reopens the log", test_sighup);
    CU_add_test(s, "out of fds: no spin, no log flood, serves again", test_fd_exhaustion);
    CU_add_test(s, "model file truncated or changed: mapped, logged + exit 1; read in, served on",
                test_model_file_changed);
    CU_add_test(s, "8 big Tokenize requests do not delay a short Generate",
                test_big_tokenize_vs_generate);
    CU_add_test(s, "a request that cannot get memory is refused; the daemon stays up",
                test_out_of_memory);
    CU_add_test(s, "client: NUL bytes in token text, timeouts on every call",
                test_client_fake_daemon);
}
