/* tools/stress — longheads-stress: a load test of longheadsd from outside, speaking the protocol
 * (proto/longheads.proto + proto/frame.c) as any client would.
 *
 *   longheads-stress [--daemon BIN] [--model GGUF] [--slots N] [--conns N] [--requests M]
 *                    [--rounds R] [--cancel PCT] [--drop PCT] [--seed S] [-- daemon args...]
 *
 * Starts BIN (default build/longheadsd) on a temporary socket, then runs R rounds (default 2) of
 * N connections (default 16) x M requests (default 20) each, one request at a time per
 * connection, with a mix of prompt lengths (empty to ~500 tokens), greedy and seeded sampling,
 * PCT% (default 10) cancelled at a random moment (before the first token included) and PCT%
 * (default 5) whose connection is dropped mid-stream (the connection is then reopened).
 *
 * Every stream is checked: exactly one Final per request that was not dropped, no frame with an
 * id that is not the request's, the Token count equal to Final.n_generated, the text equal to a
 * lone run of the same request (greedy and seeded alike; a prefix of it when cancelled).
 * Printed per round: requests/s, p50/p99 time to first token, finish reasons, errors by code,
 * lost and garbled streams, and the daemon's RSS before, after each round.  Exit status 0 when
 * nothing was lost or garbled, the daemon never restarted, and the RSS after the last round is
 * within 5% (+4 MiB) of the RSS after the first; 1 otherwise; 2 on bad usage.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "longheads.pb-c.h"

#define MAX_TOKENS 48
#define N_PROMPTS 4
#define N_SEEDS 4
#define N_COMBO (N_PROMPTS * (1 + N_SEEDS))

static char g_sock[108];
static const char *g_prompts[N_PROMPTS];

typedef struct {
    char *text;       /* the lone run's output */
    size_t len;
    uint32_t n_gen;
    int finish;
} ref;
static ref g_ref[N_COMBO];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* ---- the wire -------------------------------------------------------------------------------- */

typedef struct {
    int fd;
    lh_frame_reader rd;
    uint8_t in[65536];
    size_t off, len;
} wire;

static int wire_open(wire *w)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", g_sock);
    w->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (w->fd < 0 || connect(w->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (w->fd >= 0)
            close(w->fd);
        w->fd = -1;
        return -1;
    }
    struct timeval tv = {.tv_sec = 120}; /* a lost Final shows as a timeout, not a hang */
    setsockopt(w->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    lh_frame_reader_init(&w->rd, 1u << 24);
    w->off = w->len = 0;
    return 0;
}

static void wire_close(wire *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    lh_frame_reader_deinit(&w->rd);
}

static int wire_send(wire *w, const Longheads__Request *r)
{
    uint8_t buf[8192];
    size_t n = longheads__request__get_packed_size(r);
    if (n > sizeof buf)
        return -1;
    longheads__request__pack(r, buf);
    return lh_frame_write(w->fd, buf, n);
}

static Longheads__Response *wire_recv(wire *w)
{
    for (;;) {
        if (w->off < w->len) {
            size_t used, size;
            const uint8_t *f;
            if (lh_frame_feed(&w->rd, w->in + w->off, w->len - w->off, &used, &f, &size) != 0)
                return NULL;
            w->off += used;
            if (f)
                return longheads__response__unpack(NULL, size, f);
            continue;
        }
        ssize_t n = read(w->fd, w->in, sizeof w->in);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return NULL;
        w->off = 0;
        w->len = (size_t)n;
    }
}

static int wire_hello(wire *w)
{
    Longheads__Request req = LONGHEADS__REQUEST__INIT;
    Longheads__Hello h = LONGHEADS__HELLO__INIT;
    h.protocol_version = LH_PROTOCOL_VERSION;
    h.client_name = "longheads-stress";
    req.id = 1;
    req.body_case = LONGHEADS__REQUEST__BODY_HELLO;
    req.hello = &h;
    if (wire_send(w, &req) != 0)
        return -1;
    Longheads__Response *r = wire_recv(w);
    int ok = r && r->body_case == LONGHEADS__RESPONSE__BODY_HELLO;
    if (r)
        longheads__response__free_unpacked(r, NULL);
    return ok ? 0 : -1;
}

static int send_generate(wire *w, uint64_t id, int combo)
{
    Longheads__Request req = LONGHEADS__REQUEST__INIT;
    Longheads__GenerateRequest g = LONGHEADS__GENERATE_REQUEST__INIT;
    int p = combo % N_PROMPTS, sd = combo / N_PROMPTS; /* sd 0: greedy */
    g.prompt = (char *)g_prompts[p];
    g.max_tokens = MAX_TOKENS;
    g.temperature = sd ? 0.8f : 0;
    g.top_k = sd ? 40 : 0;
    g.top_p = sd ? 0.95f : 1;
    g.seed = (uint64_t)sd * 7919;
    req.id = id;
    req.body_case = LONGHEADS__REQUEST__BODY_GENERATE;
    req.generate = &g;
    return wire_send(w, &req);
}

/* ---- one request ------------------------------------------------------------------------------ */

enum { ACT_NONE, ACT_CANCEL, ACT_DROP };

typedef struct {
    int finish;             /* FinishReason, or -1 (dropped / lost) */
    int err_code;           /* Error frame or Final error */
    int lost, garbled;
    double ttft;            /* -1: no token */
} outcome;

static void run_request(wire *w, uint64_t id, int combo, int act, uint32_t act_at, outcome *o)
{
    memset(o, 0, sizeof *o);
    o->finish = -1;
    o->ttft = -1;
    double t0 = now_s();
    if (send_generate(w, id, combo) != 0) {
        o->lost = 1;
        return;
    }
    if (act == ACT_CANCEL && act_at == 0) {
        Longheads__Request req = LONGHEADS__REQUEST__INIT;
        Longheads__CancelRequest c = LONGHEADS__CANCEL_REQUEST__INIT;
        c.target_id = id;
        req.body_case = LONGHEADS__REQUEST__BODY_CANCEL;
        req.cancel = &c;
        wire_send(w, &req);
    }
    char text[8192];
    size_t len = 0;
    uint32_t n_tok = 0;
    int n_final = 0;
    for (;;) {
        Longheads__Response *r = wire_recv(w);
        if (!r) {
            o->lost = 1; /* the daemon closed or stopped answering */
            return;
        }
        int done = 0;
        if (r->id != id) {
            o->garbled = 1; /* a frame of another request */
        } else if (r->body_case == LONGHEADS__RESPONSE__BODY_TOKEN) {
            if (!n_tok)
                o->ttft = now_s() - t0;
            n_tok++;
            const char *s = r->token->text ? r->token->text : "";
            size_t sl = strlen(s);
            if (len + sl < sizeof text) {
                memcpy(text + len, s, sl);
                len += sl;
            }
            if (act == ACT_CANCEL && n_tok == act_at) {
                Longheads__Request req = LONGHEADS__REQUEST__INIT;
                Longheads__CancelRequest c = LONGHEADS__CANCEL_REQUEST__INIT;
                c.target_id = id;
                req.body_case = LONGHEADS__REQUEST__BODY_CANCEL;
                req.cancel = &c;
                wire_send(w, &req);
            }
            if (act == ACT_DROP && n_tok == act_at) {
                longheads__response__free_unpacked(r, NULL);
                wire_close(w); /* dropped mid-stream: the caller reconnects */
                return;
            }
        } else if (r->body_case == LONGHEADS__RESPONSE__BODY_FINAL) {
            n_final++;
            o->finish = (int)r->final->reason;
            if (r->final->error)
                o->err_code = (int)r->final->error->code;
            const char *s = r->final->text ? r->final->text : "";
            size_t sl = strlen(s);
            if (len + sl < sizeof text) {
                memcpy(text + len, s, sl);
                len += sl;
            }
            if (r->final->n_generated != n_tok)
                o->garbled = 1;
            done = 1;
        } else if (r->body_case == LONGHEADS__RESPONSE__BODY_ERROR) {
            o->finish = LONGHEADS__FINISH_REASON__FINISH_ERROR;
            o->err_code = (int)r->error->code;
            done = 1;
        } else if (r->body_case != LONGHEADS__RESPONSE__BODY_PROGRESS) {
            o->garbled = 1;
        }
        longheads__response__free_unpacked(r, NULL);
        if (done)
            break;
    }
    const ref *rf = &g_ref[combo];
    if (o->finish == LONGHEADS__FINISH_REASON__FINISH_LENGTH ||
        o->finish == LONGHEADS__FINISH_REASON__FINISH_EOS) {
        if (len != rf->len || memcmp(text, rf->text, len) != 0 || n_tok != rf->n_gen)
            o->garbled = 1; /* not what a lone run gives */
    } else if (o->finish == LONGHEADS__FINISH_REASON__FINISH_CANCELLED) {
        if (len > rf->len || memcmp(text, rf->text, len) != 0)
            o->garbled = 1;
    }
}

/* ---- a round ------------------------------------------------------------------------------ */

typedef struct {
    int conn;
    int n_req, cancel_pct, drop_pct;
    uint64_t seed;
    /* results */
    int n_done, n_lost, n_garbled, n_dropped, n_cancel_sent;
    int finish[8];
    int err[16];
    double *ttft;
    int n_ttft;
} worker;

static void *worker_main(void *arg)
{
    worker *k = arg;
    wire w = {.fd = -1};
    uint64_t s = k->seed | 1;
    k->ttft = malloc((size_t)k->n_req * sizeof *k->ttft);
    for (int i = 0; i < k->n_req; i++) {
        if (w.fd < 0 && (wire_open(&w) != 0 || wire_hello(&w) != 0)) {
            wire_close(&w);
            k->n_lost++;
            usleep(10000);
            continue;
        }
        int combo = (int)(rnd(&s) % N_COMBO);
        int pct = (int)(rnd(&s) % 100), act = ACT_NONE;
        if (pct < k->cancel_pct)
            act = ACT_CANCEL;
        else if (pct < k->cancel_pct + k->drop_pct)
            act = ACT_DROP;
        uint32_t at = (uint32_t)(rnd(&s) % MAX_TOKENS) + (act == ACT_DROP);
        uint64_t id = (uint64_t)k->conn * 1000000u + (uint64_t)i + 2;
        outcome o;
        run_request(&w, id, combo, act, at, &o);
        if (act == ACT_DROP && w.fd < 0 && !o.lost) {
            k->n_dropped++;
            continue;
        }
        if (act == ACT_CANCEL)
            k->n_cancel_sent++;
        if (o.lost) {
            k->n_lost++;
            wire_close(&w);
            continue;
        }
        k->n_done++;
        k->n_garbled += o.garbled;
        if (o.finish >= 0 && o.finish < 8)
            k->finish[o.finish]++;
        if (o.err_code > 0 && o.err_code < 16)
            k->err[o.err_code]++;
        if (o.ttft >= 0)
            k->ttft[k->n_ttft++] = o.ttft;
    }
    wire_close(&w);
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static const char *finish_names[] = {"none", "length", "stop", "eos", "cancelled", "error"};
static const char *err_names[] = {"none", "bad_frame", "bad_message", "version", "handshake",
                                  "unknown_request", "invalid_argument", "limit", "busy",
                                  "duplicate_id", "timeout", "shutting_down", "permission",
                                  "internal"};

static int run_round(int round, int n_conn, int n_req, int cancel_pct, int drop_pct,
                     uint64_t seed, int *lostp, int *garbledp)
{
    worker *ws = calloc((size_t)n_conn, sizeof *ws);
    pthread_t *ts = calloc((size_t)n_conn, sizeof *ts);
    double t0 = now_s();
    for (int i = 0; i < n_conn; i++) {
        ws[i] = (worker){.conn = i + 1, .n_req = n_req, .cancel_pct = cancel_pct,
                         .drop_pct = drop_pct, .seed = seed * 1000003u + (uint64_t)i * 7 + 1};
        pthread_create(&ts[i], NULL, worker_main, &ws[i]);
    }
    for (int i = 0; i < n_conn; i++)
        pthread_join(ts[i], NULL);
    double dt = now_s() - t0;
    int done = 0, lost = 0, garbled = 0, dropped = 0, cancels = 0, finish[8] = {0}, err[16] = {0};
    int n_tt = 0;
    for (int i = 0; i < n_conn; i++)
        n_tt += ws[i].n_ttft;
    double *tt = malloc((size_t)(n_tt ? n_tt : 1) * sizeof *tt);
    n_tt = 0;
    for (int i = 0; i < n_conn; i++) {
        done += ws[i].n_done;
        lost += ws[i].n_lost;
        garbled += ws[i].n_garbled;
        dropped += ws[i].n_dropped;
        cancels += ws[i].n_cancel_sent;
        for (int k = 0; k < 8; k++)
            finish[k] += ws[i].finish[k];
        for (int k = 0; k < 16; k++)
            err[k] += ws[i].err[k];
        memcpy(tt + n_tt, ws[i].ttft, (size_t)ws[i].n_ttft * sizeof *tt);
        n_tt += ws[i].n_ttft;
        free(ws[i].ttft);
    }
    qsort(tt, (size_t)n_tt, sizeof *tt, cmp_d);
    printf("round %d: %d conns x %d requests in %.1f s: %.1f req/s; TTFT p50 %.1f ms, p99 %.1f "
           "ms\n", round, n_conn, n_req, dt, (done + dropped) / dt,
           n_tt ? tt[n_tt / 2] * 1e3 : 0.0, n_tt ? tt[(size_t)(n_tt * 0.99)] * 1e3 : 0.0);
    printf("  complete streams %d (cancel sent on %d), dropped mid-stream %d, lost %d, "
           "garbled %d\n  finish:", done, cancels, dropped, lost, garbled);
    for (int k = 0; k < 6; k++)
        if (finish[k])
            printf(" %s %d", finish_names[k], finish[k]);
    printf("\n  errors by code:");
    int any = 0;
    for (int k = 1; k < 14; k++)
        if (err[k]) {
            printf(" %s %d", err_names[k], err[k]);
            any = 1;
        }
    printf("%s\n", any ? "" : " none");
    free(tt);
    free(ws);
    free(ts);
    *lostp += lost;
    *garbledp += garbled;
    return 0;
}

/* The lone-run references: each combination once, on one connection, nothing else running. */
static int make_refs(void)
{
    wire w = {.fd = -1};
    if (wire_open(&w) != 0 || wire_hello(&w) != 0)
        return -1;
    for (int c = 0; c < N_COMBO; c++) {
        if (send_generate(&w, 1000 + (uint64_t)c, c) != 0)
            return -1;
        char text[8192];
        size_t len = 0;
        for (;;) {
            Longheads__Response *r = wire_recv(&w);
            if (!r)
                return -1;
            int fin = r->body_case == LONGHEADS__RESPONSE__BODY_FINAL;
            const char *s = r->body_case == LONGHEADS__RESPONSE__BODY_TOKEN ? r->token->text
                            : fin ? r->final->text : NULL;
            if (s && len + strlen(s) < sizeof text) {
                memcpy(text + len, s, strlen(s));
                len += strlen(s);
            }
            if (fin) {
                g_ref[c].n_gen = r->final->n_generated;
                g_ref[c].finish = (int)r->final->reason;
            }
            int err = r->body_case == LONGHEADS__RESPONSE__BODY_ERROR;
            longheads__response__free_unpacked(r, NULL);
            if (err)
                return -1;
            if (fin)
                break;
        }
        g_ref[c].text = malloc(len + 1);
        memcpy(g_ref[c].text, text, len);
        g_ref[c].text[len] = 0;
        g_ref[c].len = len;
    }
    wire_close(&w);
    return 0;
}

static char *words(size_t n)
{
    static const char *w[] = {"the", "little", "dog", "ran", "to", "the", "park", "and", "saw",
                              "a", "big", "red", "ball", "Lily", "was", "happy"};
    char *s = malloc(n * 8 + 1);
    size_t off = 0;
    for (size_t i = 0; i < n; i++)
        off += (size_t)sprintf(s + off, "%s%s", i ? " " : "", w[(i * 7 + i / 16) % 16]);
    s[off] = 0;
    return s;
}

int main(int argc, char **argv)
{
    const char *daemon = "build/longheadsd", *model = "models/stories260K.gguf";
    int slots = 1, n_conn = 16, n_req = 20, rounds = 2, cancel_pct = 10, drop_pct = 5;
    uint64_t seed = 1;
    int extra_at = argc;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            extra_at = i + 1;
            break;
        }
        if (i + 1 >= argc)
            goto usage;
        const char *v = argv[++i];
        if (strcmp(a, "--daemon") == 0)
            daemon = v;
        else if (strcmp(a, "--model") == 0)
            model = v;
        else if (strcmp(a, "--slots") == 0)
            slots = atoi(v);
        else if (strcmp(a, "--conns") == 0)
            n_conn = atoi(v);
        else if (strcmp(a, "--requests") == 0)
            n_req = atoi(v);
        else if (strcmp(a, "--rounds") == 0)
            rounds = atoi(v);
        else if (strcmp(a, "--cancel") == 0)
            cancel_pct = atoi(v);
        else if (strcmp(a, "--drop") == 0)
            drop_pct = atoi(v);
        else if (strcmp(a, "--seed") == 0)
            seed = strtoull(v, NULL, 10);
        else
            goto usage;
    }
    if (slots < 1 || n_conn < 1 || n_req < 1 || rounds < 1 || cancel_pct < 0 || drop_pct < 0 ||
        cancel_pct + drop_pct > 100)
        goto usage;
    signal(SIGPIPE, SIG_IGN);
    g_prompts[0] = "";
    g_prompts[1] = "Once upon a time";
    g_prompts[2] = words(40);
    g_prompts[3] = words(380);
    char dir[] = "/tmp/lh-stress-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    snprintf(g_sock, sizeof g_sock, "%s/s.sock", dir);
    char slots_s[16], conns_s[16];
    snprintf(slots_s, sizeof slots_s, "%d", slots);
    snprintf(conns_s, sizeof conns_s, "%d", n_conn + 8);
    pid_t pid = fork();
    if (pid == 0) {
        const char *av[64];
        int n = 0;
        av[n++] = daemon;
        av[n++] = "--model";
        av[n++] = model;
        av[n++] = "--socket";
        av[n++] = g_sock;
        av[n++] = "--slots";
        av[n++] = slots_s;
        av[n++] = "--max-connections";
        av[n++] = conns_s;
        av[n++] = "--max-connections-per-uid";
        av[n++] = conns_s;
        av[n++] = "--quiet";
        for (int i = extra_at; i < argc && n < 62; i++)
            av[n++] = argv[i];
        av[n] = NULL;
        execv(daemon, (char *const *)av);
        _exit(127);
    }
    wire w = {.fd = -1};
    for (int i = 0; i < 600 && wire_open(&w) != 0; i++)
        usleep(100000);
    wire_close(&w);
    int rc = 1;
    if (make_refs() != 0) {
        fprintf(stderr, "longheads-stress: the lone reference runs failed\n");
        goto out;
    }
    printf("longheads-stress: %s --slots %d, %d conns x %d requests x %d rounds, %d%% cancelled, "
           "%d%% dropped, %d prompt/sampling combinations (greedy and seeded), %d tokens each\n",
           daemon, slots, n_conn, n_req, rounds, cancel_pct, drop_pct, N_COMBO, MAX_TOKENS);
    long rss0 = rss_kb(pid), rss1 = -1, rss_last = -1;
    printf("daemon RSS before: %ld KiB\n", rss0);
    int lost = 0, garbled = 0;
    for (int r = 1; r <= rounds; r++) {
        run_round(r, n_conn, n_req, cancel_pct, drop_pct, seed + (uint64_t)r, &lost, &garbled);
        usleep(200000);
        rss_last = rss_kb(pid);
        if (r == 1)
            rss1 = rss_last;
        printf("daemon RSS after round %d: %ld KiB\n", r, rss_last);
    }
    int st, restarted = waitpid(pid, &st, WNOHANG) == pid;
    int rss_ok = rss1 > 0 && rss_last <= rss1 + rss1 / 20 + 4096;
    printf("summary: lost %d, garbled %d, daemon %s, RSS last/first round %+.1f%%: %s\n", lost,
           garbled, restarted ? "DIED" : "up (0 restarts)",
           rss1 > 0 ? 100.0 * (double)(rss_last - rss1) / (double)rss1 : 0.0,
           !lost && !garbled && !restarted && rss_ok ? "PASS" : "FAIL");
    rc = !lost && !garbled && !restarted && rss_ok ? 0 : 1;
out:
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    unlink(g_sock);
    rmdir(dir);
    return rc;
usage:
    fprintf(stderr, "usage: longheads-stress [--daemon BIN] [--model GGUF] [--slots N] [--conns N] "
                    "[--requests M] [--rounds R] [--cancel PCT] [--drop PCT] [--seed S] "
                    "[-- daemon args]\n");
    return 2;
}
