/* tests/test_e2e — the real longheadsd (LH_BUILD/longheadsd) on a temporary socket, driven
 * through liblongheads, the `longheads` CLI and raw frames: golden text, 8 concurrent clients,
 * cancel mid-prefill and mid-decode (latency measured and printed), a client killed mid-stream,
 * malformed input, prompt reuse, stop strings across tokens, socket activation + sd_notify,
 * SIGTERM drain, and `systemd-analyze verify` of the units. */
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    char bin[512], log[128];
    snprintf(bin, sizeof bin, "%s/longheadsd", lh_test_build_dir());
    snprintf(log, sizeof log, "%s/daemon.log", g_dir);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0)
            dup2(fd, 2);
        const char *argv[32];
        int n = 0;
        argv[n++] = bin;
        argv[n++] = "--model";
        argv[n++] = lh_test_model_path();
        if (listen_fd < 0) {
            argv[n++] = "--socket";
            argv[n++] = g_sock;
        }
        for (int i = 0; extra && extra[i] && n < 30; i++)
            argv[n++] = extra[i];
        argv[n] = NULL;
        if (listen_fd >= 0) {
            dup2(listen_fd, 3);
            char pidbuf[32];
            snprintf(pidbuf, sizeof pidbuf, "%d", (int)getpid());
            setenv("LISTEN_PID", pidbuf, 1);
            setenv("LISTEN_FDS", "1", 1);
        }
        if (notify)
            setenv("NOTIFY_SOCKET", notify, 1);
        else
            unsetenv("NOTIFY_SOCKET");
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 600; i++) { /* up to 60 s: the model loads under ASan on a busy box */
        lh_client *c;
        if (lh_client_connect(&c, g_sock, 1000) == 0) {
            lh_client_close(c);
            return pid;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return -1;
        usleep(100000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static pid_t start_daemon(const char *const *extra) { return start_daemon_fd(extra, -1, NULL); }

/* SIGTERM, then the exit status (or -1 after 30 s, then SIGKILL). */
static int stop_daemon(pid_t pid)
{
    if (pid <= 0)
        return -1;
    kill(pid, SIGTERM);
    for (int i = 0; i < 300; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(100000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

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
    volatile int saw_prefill;
    volatile size_t last_done, last_total;
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
    if (ev->token >= 0)
        s->n_tokens++;
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
    volatile double t_final;
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
    while (ds.n_tokens < 5 && !j.t_final && now_s() - t0 < 30)
        usleep(1000);
    kill(pid, SIGTERM);
    pthread_join(t, NULL);
    CU_ASSERT_EQUAL(j.rc, 0);
    CU_ASSERT(j.res.finish == LH_CLIENT_FINISH_LENGTH || j.res.finish == LH_CLIENT_FINISH_EOS ||
              j.res.finish == LH_CLIENT_FINISH_CANCELLED);
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
        printf("\n    skipped: systemd-analyze is not installed\n");
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
}

void lh_test_e2e(void)
{
    CU_pSuite s = CU_add_suite("e2e", suite_init, suite_clean);
    CU_add_test(s, "CLI: golden text, longheads-run parity, info/health/tokenize", test_cli_golden);
    CU_add_test(s, "8 clients at once get complete streams", test_eight_clients);
    CU_add_test(s, "cancel mid-prefill and mid-decode", test_cancel);
    CU_add_test(s, "prompt reuse, stop strings, score, refusals", test_prompt_reuse_and_stop);
    CU_add_test(s, "client killed mid-stream", test_client_killed);
    CU_add_test(s, "malformed input", test_malformed);
    CU_add_test(s, "a second daemon does not steal the socket", test_second_daemon_refused);
    CU_add_test(s, "socket activation, sd_notify, SIGTERM drain", test_socket_activation);
    CU_add_test(s, "systemd-analyze verify", test_systemd_verify);
}
