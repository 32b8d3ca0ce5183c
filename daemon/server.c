/* daemon/server — see server.h. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "anet.h"
#include "conn.h"
#include "frame.h"
#include "log.h"
#include "protocol.h"
#include "systemd.h"

#define OUT_HIGH (256u << 10)   /* throttle the connection's requests above this */
#define OUT_LOW (64u << 10)     /* and resume below this */
#define OUT_HARD (8u << 20)     /* stop reading requests from it above this */

typedef struct out_msg {
    struct out_msg *next;
    uint64_t conn;
    size_t len;
    uint8_t data[];
} out_msg;

struct lh_server {
    lh_server_config cfg;
    const lh_model *model;
    lh_sched *sched;
    char *path;                 /* socket path (for Info), owned */
    int created;                /* we created the socket file: remove it at exit */
    int lfd, efd;
    lh_conn **conns;
    size_t n_conns;
    uint64_t next_conn;
    uid_t *allow_uid;
    gid_t *allow_gid;
    pthread_mutex_t out_lock;
    out_msg *out_head, *out_tail;  /* under out_lock */
    atomic_int stop_requests, reopen_requested; /* lh_server_request_*: any thread */
    int stops_seen;
    double accept_paused_until;    /* out of fds: the listener is not polled until then */
    double next_fd_log;            /* rate limit of the out-of-fds log line */
    unsigned long n_fd_refusals;   /* accept failures since the last such line */
    int wd_stalled;                /* the watchdog is being withheld (compute thread stuck) */
    int exit_rc;
    double t_start, drain_deadline, cancel_deadline;
    int draining, cancelled;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void lh_server_config_default(lh_server_config *c)
{
    memset(c, 0, sizeof *c);
    c->listen_fd = -1;
    c->max_conns = 64;
    c->max_frame = LH_FRAME_MAX_DEFAULT;
    c->drain_s = 10;
    c->signal_fd = -1;
    c->handshake_s = 10;
    c->frame_s = 30;
    c->socket_mode = 0660;
    c->socket_gid = -1;
}

static void wake(lh_server *srv)
{
    int saved = errno; /* may run in a signal handler */
    uint64_t one = 1;
    ssize_t w = write(srv->efd, &one, sizeof one);
    (void)w;
    errno = saved;
}

void lh_server_request_stop(lh_server *srv)
{
    atomic_fetch_add(&srv->stop_requests, 1);
    wake(srv);
}

void lh_server_request_reopen(lh_server *srv)
{
    atomic_store(&srv->reopen_requested, 1);
    wake(srv);
}

const char *lh_server_socket_file(const lh_server *srv)
{
    return srv && srv->created ? srv->path : NULL;
}

/* ---- encoding ------------------------------------------------------------------------------ */

/* A frame from protocol.c in a new out_msg: the encoders reserve the room for its header. */
#define OUT_ROOM offsetof(out_msg, data)
static out_msg *as_msg(uint8_t *block, uint64_t conn_id, size_t len)
{
    out_msg *m = (out_msg *)(void *)block;
    if (m) {
        m->next = NULL;
        m->conn = conn_id;
        m->len = len;
    }
    return m;
}

static void outbox_push(lh_server *srv, out_msg *m)
{
    pthread_mutex_lock(&srv->out_lock);
    if (srv->out_tail)
        srv->out_tail->next = m;
    else
        srv->out_head = m;
    srv->out_tail = m;
    pthread_mutex_unlock(&srv->out_lock);
    wake(srv);
}

/* The scheduler's emit callback: runs on the compute thread. */
static void on_event(void *ud, const lh_sched_event *ev)
{
    lh_server *srv = ud;
    size_t len = 0;
    uint8_t *block = lh_proto_event(ev, OUT_ROOM, &len);
    out_msg *m = as_msg(block, ev->owner, len);
    if (!m && ev->kind == LH_EV_TOKEN)
        return; /* out of memory: the piece is lost, the final frame still comes */
    if (!m) {
        lh_log_error("connection %llu: out of memory encoding a response; closing it",
                     (unsigned long long)ev->owner);
        /* an empty message with len 0 tells the loop to close the connection */
        m = malloc(sizeof *m);
        if (!m)
            return;
        m->next = NULL;
        m->conn = ev->owner;
        m->len = 0;
    }
    outbox_push(srv, m);
}

/* ---- connections --------------------------------------------------------------------------- */

static lh_conn *find_conn(lh_server *srv, uint64_t id)
{
    for (size_t i = 0; i < srv->n_conns; i++)
        if (srv->conns[i]->id == id)
            return srv->conns[i];
    return NULL;
}

/* Queues a frame from protocol.c (block: OUT_ROOM bytes, then len bytes of frame; freed). */
static void send_frame(lh_conn *c, uint8_t *block, size_t len)
{
    if (!block || lh_conn_queue(c, block + OUT_ROOM, len) != 0) {
        lh_log_error("connection %llu: out of memory queueing a response; closing it",
                     (unsigned long long)c->id);
        c->closing = 1;
        c->out_off = c->out_len = 0;
    }
    free(block);
}

static void send_error(lh_conn *c, uint64_t id, lh_err_code code, const char *msg)
{
    size_t len = 0;
    uint8_t *b = lh_proto_error(id, code, msg, OUT_ROOM, &len);
    send_frame(c, b, len);
}

static void conn_free(lh_server *srv, size_t i)
{
    lh_conn *c = srv->conns[i];
    if (c->hello)
        lh_sched_cancel_owner(srv->sched, c->id);
    lh_log_info("connection %llu closed (uid %u)", (unsigned long long)c->id, (unsigned)c->uid);
    lh_conn_free(c);
    srv->conns[i] = srv->conns[--srv->n_conns];
    srv->accept_paused_until = 0; /* an fd came free: try accepting again */
}

/* ---- requests ------------------------------------------------------------------------------ */

/* The daemon's resident memory in bytes (0 when /proc cannot tell). */
static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, rss = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%llu %llu", &size, &rss) != 2)
        rss = 0;
    fclose(f);
    return (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void submit(lh_server *srv, lh_conn *c, uint64_t id, lh_sched_args *a)
{
    char msg[512];
    a->uid = c->uid;
    int rc = lh_sched_submit(srv->sched, c->id, id, a, msg, sizeof msg);
    if (rc != LH_ERR_NONE)
        send_error(c, id, (lh_err_code)rc, msg);
}

static void handle_request(lh_server *srv, lh_conn *c, lh_proto_request *req)
{
    char msg[512];
    size_t len = 0;
    if (!c->hello) {
        if (req->kind != LH_MSG_HELLO) {
            send_error(c, req->id, LH_ERR_HANDSHAKE,
                       "the first request on a connection must be Hello (protocol version "
                       "handshake); is this a longheads client?");
            c->closing = 1;
            return;
        }
        if (req->protocol_version != LH_PROTOCOL_VERSION) {
            snprintf(msg, sizeof msg, "this daemon speaks protocol version %u, the client %u; "
                     "use a client library from the same longheads release",
                     LH_PROTOCOL_VERSION, req->protocol_version);
            lh_log_warn("connection %llu: %s", (unsigned long long)c->id, msg);
            send_error(c, req->id, LH_ERR_VERSION, msg);
            c->closing = 1;
            return;
        }
        c->hello = 1;
        uint8_t *b = lh_proto_hello_reply(req->id, srv->model, srv->sched, srv->cfg.max_frame,
                                          OUT_ROOM, &len);
        send_frame(c, b, len);
        return;
    }
    switch (req->kind) {
    case LH_MSG_HELLO:
        send_error(c, req->id, LH_ERR_HANDSHAKE, "Hello was already sent on this connection");
        return;
    case LH_MSG_SUBMIT:
        if (req->err != LH_ERR_NONE) {
            send_error(c, req->id, req->err, req->err_msg);
            return;
        }
        submit(srv, c, req->id, &req->args);
        memset(&req->args, 0, sizeof req->args); /* the scheduler owns its heap parts now */
        return;
    case LH_MSG_CANCEL:
        lh_sched_cancel(srv->sched, c->id, req->target_id);
        return;
    case LH_MSG_INFO: {
        uint8_t *b = lh_proto_info_reply(req->id, srv->model, srv->sched, srv->cfg.max_frame,
                                         srv->path, OUT_ROOM, &len);
        send_frame(c, b, len);
        return;
    }
    case LH_MSG_HEALTH: {
        lh_proto_health h = {.status = srv->draining ? "draining" : "ok",
                             .uptime_s = now_s() - srv->t_start, .n_connections = srv->n_conns,
                             .rss_bytes = rss_bytes()};
        uint8_t *b = lh_proto_health_reply(req->id, &h, srv->sched, OUT_ROOM, &len);
        send_frame(c, b, len);
        return;
    }
    case LH_MSG_UNKNOWN:
        snprintf(msg, sizeof msg, "request %llu has no request type this daemon knows (protocol "
                 "%u); the client may be newer than the daemon", (unsigned long long)req->id,
                 LH_PROTOCOL_VERSION);
        send_error(c, req->id, LH_ERR_UNKNOWN_REQUEST, msg);
        return;
    }
}

/* lh_conn_read's callback: one complete frame. */
static void on_frame(void *ud, lh_conn *c, const uint8_t *f, size_t size)
{
    lh_server *srv = ud;
    lh_proto_request req;
    if (lh_proto_decode(f, size, &req) != 0) {
        lh_log_warn("connection %llu: a %zu-byte frame is not a valid Request",
                    (unsigned long long)c->id, size);
        send_error(c, 0, LH_ERR_BAD_MESSAGE,
                   "the frame does not hold a valid Request message; check the client uses "
                   "longheads.proto");
        if (!c->hello)
            c->closing = 1; /* not a longheads client: don't keep reading garbage */
        return;
    }
    handle_request(srv, c, &req);
    lh_proto_request_deinit(&req);
}

/* Reads what the connection has; handles complete frames.  Returns -1 when it must close now. */
static int conn_read(lh_server *srv, lh_conn *c)
{
    int rc = lh_conn_read(c, on_frame, srv, now_s());
    if (rc == -EPIPE)
        return -1;
    if (rc != 0) { /* broken framing: say why, then close once it is sent */
        char msg[256];
        if (rc == LH_E_LIMIT)
            snprintf(msg, sizeof msg, "frame of %zu bytes is over the daemon's limit of %zu "
                     "(max-frame); closing", lh_frame_announced(&c->rd), srv->cfg.max_frame);
        else
            snprintf(msg, sizeof msg, "out of memory reading a frame; closing");
        lh_log_warn("connection %llu: %s", (unsigned long long)c->id, msg);
        send_error(c, 0, rc == LH_E_LIMIT ? LH_ERR_BAD_FRAME : LH_ERR_INTERNAL, msg);
    }
    return 0;
}

static void update_throttle(lh_server *srv, lh_conn *c)
{
    size_t pending = c->out_len - c->out_off;
    if (!c->throttled && pending > OUT_HIGH) {
        c->throttled = 1;
        lh_sched_set_throttled(srv->sched, c->id, 1);
    } else if (c->throttled && pending < OUT_LOW) {
        c->throttled = 0;
        lh_sched_set_throttled(srv->sched, c->id, 0);
    }
}

static int peer_allowed(const lh_server *srv, uid_t uid, gid_t gid)
{
    if (!srv->cfg.n_allow_uid && !srv->cfg.n_allow_gid)
        return 1;
    if (uid == 0 || uid == geteuid())
        return 1;
    for (size_t i = 0; i < srv->cfg.n_allow_uid; i++)
        if (srv->allow_uid[i] == uid)
            return 1;
    for (size_t i = 0; i < srv->cfg.n_allow_gid; i++)
        if (srv->allow_gid[i] == gid)
            return 1;
    return 0;
}

/* Refuses a fresh connection with one error frame, best effort, and closes it. */
static void refuse(int fd, lh_err_code code, const char *msg)
{
    size_t len = 0;
    uint8_t *b = lh_proto_error(0, code, msg, 0, &len);
    if (b)
        lh_anet_send_once(fd, b, len);
    free(b);
    close(fd);
}

static void accept_conns(lh_server *srv)
{
    for (int i = 0; i < 64; i++) {
        int fd = -1;
        lh_anet_peer cr;
        int arc = lh_anet_accept(srv->lfd, &fd, &cr);
        if (arc != 0) {
            int e = -arc;
            if (e == EAGAIN)
                return;
            /* EMFILE, ENFILE, ENOBUFS, ENOMEM: the pending connection stays in the backlog and
             * the listener stays readable; polling it again at once would spin.  Stop polling it
             * until a connection closes or a second passes, and say so at most every 10 s. */
            double t = now_s();
            srv->accept_paused_until = t + 1.0;
            srv->n_fd_refusals++;
            if (t >= srv->next_fd_log) {
                lh_log_warn("accept: %s (%zu connection(s) open; %lu failure(s) since the last "
                            "message); not accepting for 1 s or until a connection closes",
                            strerror(e), srv->n_conns, srv->n_fd_refusals);
                srv->n_fd_refusals = 0;
                srv->next_fd_log = t + 10;
            }
            return;
        }
        uint64_t id = ++srv->next_conn;
        if (!peer_allowed(srv, cr.uid, cr.gid)) {
            lh_log_warn("connection %llu from uid %u gid %u pid %d refused: not in allow-uid / "
                        "allow-gid", (unsigned long long)id, (unsigned)cr.uid, (unsigned)cr.gid,
                        (int)cr.pid);
            refuse(fd, LH_ERR_PERMISSION,
                   "this user may not use the daemon; ask its administrator to add your uid or "
                   "gid to allow-uid / allow-gid");
            continue;
        }
        size_t n_uid = 0;
        for (size_t k = 0; k < srv->n_conns; k++)
            n_uid += srv->conns[k]->uid == cr.uid;
        if (!srv->draining && srv->n_conns < srv->cfg.max_conns &&
            n_uid >= srv->cfg.max_conns_per_uid) {
            lh_log_warn("connection %llu from uid %u refused: it has %zu connections "
                        "(max-connections-per-uid)", (unsigned long long)id, (unsigned)cr.uid,
                        n_uid);
            refuse(fd, LH_ERR_BUSY,
                   "too many connections from this user (max-connections-per-uid); close some "
                   "or retry later");
            continue;
        }
        if (srv->n_conns >= srv->cfg.max_conns || srv->draining) {
            lh_log_warn("connection %llu from uid %u refused: %s", (unsigned long long)id,
                        (unsigned)cr.uid, srv->draining ? "shutting down" : "too many connections");
            refuse(fd, srv->draining ? LH_ERR_SHUTTING_DOWN
                                     : LH_ERR_BUSY,
                   srv->draining ? "the daemon is shutting down"
                                 : "too many connections (max-connections); retry later");
            continue;
        }
        lh_conn *c = NULL;
        lh_conn **nc = realloc(srv->conns, (srv->n_conns + 1) * sizeof *nc);
        if (nc)
            srv->conns = nc;
        if (!nc || lh_conn_new(&c, id, fd, &cr, srv->cfg.max_frame, now_s()) != 0) {
            lh_log_error("connection %llu: out of memory", (unsigned long long)id);
            close(fd);
            continue;
        }
        srv->conns[srv->n_conns++] = c;
        lh_log_info("connection %llu from uid %u gid %u pid %d", (unsigned long long)id,
                    (unsigned)cr.uid, (unsigned)cr.gid, (int)cr.pid);
    }
}

static void drain_outbox(lh_server *srv)
{
    uint64_t v;
    while (read(srv->efd, &v, sizeof v) > 0) {
    }
    pthread_mutex_lock(&srv->out_lock);
    out_msg *m = srv->out_head;
    srv->out_head = srv->out_tail = NULL;
    pthread_mutex_unlock(&srv->out_lock);
    while (m) {
        out_msg *next = m->next;
        lh_conn *c = find_conn(srv, m->conn);
        if (c && !c->closing) {
            if (m->len == 0 || lh_conn_queue(c, m->data, m->len) != 0) {
                c->closing = 1;
                c->out_off = c->out_len = 0;
            }
        }
        free(m);
        m = next;
    }
}

/* ---- socket -------------------------------------------------------------------------------- */

/* ---- lifecycle ----------------------------------------------------------------------------- */

int lh_server_new(lh_server **sp, const lh_server_config *cfg, const lh_model *m,
                  const lh_sched_config *sc)
{
    *sp = NULL;
    int rc = 0;
    lh_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return -ENOMEM;
    srv->cfg = *cfg;
    if (!srv->cfg.max_conns)
        srv->cfg.max_conns = 64;
    if (!srv->cfg.max_frame || srv->cfg.max_frame > LH_FRAME_MAX_LIMIT)
        srv->cfg.max_frame = LH_FRAME_MAX_DEFAULT;
    if (!srv->cfg.max_conns_per_uid)
        srv->cfg.max_conns_per_uid = srv->cfg.max_conns > 1 ? srv->cfg.max_conns / 2 : 1;
    if (!srv->cfg.socket_mode)
        srv->cfg.socket_mode = 0660;
    srv->model = m;
    srv->lfd = srv->efd = -1;
    srv->t_start = now_s();
    pthread_mutex_init(&srv->out_lock, NULL);
    if (cfg->n_allow_uid) {
        srv->allow_uid = malloc(cfg->n_allow_uid * sizeof *srv->allow_uid);
        if (!srv->allow_uid)
            goto oom;
        memcpy(srv->allow_uid, cfg->allow_uid, cfg->n_allow_uid * sizeof *srv->allow_uid);
    }
    if (cfg->n_allow_gid) {
        srv->allow_gid = malloc(cfg->n_allow_gid * sizeof *srv->allow_gid);
        if (!srv->allow_gid)
            goto oom;
        memcpy(srv->allow_gid, cfg->allow_gid, cfg->n_allow_gid * sizeof *srv->allow_gid);
    }
    srv->cfg.allow_uid = srv->allow_uid;
    srv->cfg.allow_gid = srv->allow_gid;
    srv->cfg.socket_path = NULL;
    if (cfg->socket_path && !(srv->path = strdup(cfg->socket_path)))
        goto oom;
    srv->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (srv->efd < 0) {
        rc = -errno;
        goto fail;
    }
    if (cfg->listen_fd >= 0) {
        srv->lfd = cfg->listen_fd;
        if (!srv->path) {
            struct sockaddr_un sa;
            socklen_t len = sizeof sa;
            if (getsockname(srv->lfd, (struct sockaddr *)&sa, &len) == 0 && sa.sun_path[0] &&
                len > offsetof(struct sockaddr_un, sun_path))
                srv->path = strndup(sa.sun_path, len - offsetof(struct sockaddr_un, sun_path));
        }
    } else {
        if (!srv->path) {
            lh_log_error("no socket path");
            rc = -EINVAL;
            goto fail;
        }
        if ((rc = lh_anet_unix_listen(srv->path, srv->cfg.socket_mode, srv->cfg.socket_gid, &srv->lfd))
            != 0)
            goto fail;
        srv->created = 1;
    }
    if ((rc = lh_sched_new(&srv->sched, m, sc, on_event, srv)) != 0)
        goto fail;
    *sp = srv;
    return 0;
oom:
    rc = -ENOMEM;
fail:
    lh_server_free(srv);
    return rc;
}

static void close_listener(lh_server *srv)
{
    if (srv->lfd < 0)
        return;
    close(srv->lfd);
    srv->lfd = -1;
    if (srv->created && srv->path)
        unlink(srv->path);
    srv->created = 0;
}

void lh_server_free(lh_server *srv)
{
    if (!srv)
        return;
    /* the scheduler first: its thread may still emit into the outbox */
    lh_sched_free(srv->sched);
    srv->sched = NULL;
    while (srv->n_conns) {
        lh_conn *c = srv->conns[srv->n_conns - 1];
        c->hello = 0;
        conn_free(srv, srv->n_conns - 1);
    }
    free(srv->conns);
    close_listener(srv);
    if (srv->efd >= 0)
        close(srv->efd);
    for (out_msg *m = srv->out_head; m;) {
        out_msg *n = m->next;
        free(m);
        m = n;
    }
    pthread_mutex_destroy(&srv->out_lock);
    free(srv->allow_uid);
    free(srv->allow_gid);
    free(srv->path);
    free(srv);
}

/* The signals main routed to the signalfd: handled here, in the loop, not in a handler. */
static void read_signals(lh_server *srv)
{
    struct signalfd_siginfo si;
    while (read(srv->cfg.signal_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP) {
            atomic_store(&srv->reopen_requested, 1);
        } else {
            lh_log_info("signal %u (%s) from pid %u", si.ssi_signo, strsignal((int)si.ssi_signo),
                        si.ssi_pid);
            atomic_fetch_add(&srv->stop_requests, 1);
        }
    }
}

static void notify_status(lh_server *srv)
{
    lh_sched_stats st;
    lh_sched_get_stats(srv->sched, &st);
    char line[160];
    snprintf(line, sizeof line, "STATUS=%s: %zu connection(s), %zu active, %zu queued, %llu served",
             srv->draining ? "draining" : "serving", srv->n_conns, st.n_active, st.n_queued,
             (unsigned long long)st.n_served);
    lh_systemd_notify(line);
}

int lh_server_run(lh_server *srv)
{
    uint64_t wd_usec = lh_systemd_watchdog_usec();
    double wd_every = wd_usec ? (double)wd_usec * 1e-6 / 2 : 0, next_wd = 0, next_status = 0;
    struct pollfd *pfds = NULL;
    size_t cap_pfds = 0;
    int rc = 0;
    lh_log_info("serving on %s", srv->path ? srv->path : "(inherited socket)");
    for (;;) {
        double t = now_s();
        lh_sched_stats st;
        lh_sched_get_stats(srv->sched, &st);
        if (st.fatal && !srv->exit_rc) {
            /* the model file changed in place: stop now, cancelling what runs */
            lh_log_error("stopping: the model file changed under the daemon");
            srv->exit_rc = -EIO;
            atomic_fetch_add(&srv->stop_requests, 2);
        }
        if (atomic_exchange(&srv->reopen_requested, 0)) {
            int e = lh_log_reopen();
            if (e != 0)
                lh_log_error("reopening the log file: %s", strerror(-e));
            else
                lh_log_info("log reopened");
        }
        int stops = atomic_load(&srv->stop_requests);
        if (stops > srv->stops_seen) {
            int first = srv->stops_seen == 0;
            srv->stops_seen = stops;
            if (first) {
                srv->draining = 1;
                srv->drain_deadline = t + srv->cfg.drain_s;
                close_listener(srv);
                lh_sched_shutdown(srv->sched, 0);
                lh_systemd_notify("STOPPING=1\nSTATUS=draining");
                lh_log_info("stopping: draining in-flight requests for up to %.0f s",
                            srv->cfg.drain_s);
            }
            if (!first || stops > 1)
                srv->drain_deadline = t;
        }
        if (srv->draining) {
            if (!srv->cancelled && t >= srv->drain_deadline && st.n_inflight) {
                lh_log_info("stopping: cancelling %zu request(s)", st.n_inflight);
                lh_sched_shutdown(srv->sched, 1);
                srv->cancelled = 1;
                srv->cancel_deadline = t + 5;
            }
            int flushed = 1;
            for (size_t i = 0; i < srv->n_conns; i++)
                if (srv->conns[i]->out_len > srv->conns[i]->out_off)
                    flushed = 0;
            pthread_mutex_lock(&srv->out_lock);
            int outbox_empty = srv->out_head == NULL;
            pthread_mutex_unlock(&srv->out_lock);
            if (!st.n_inflight && flushed && outbox_empty)
                break;
            if (srv->cancelled && t > srv->cancel_deadline)
                break;
        }
        if (wd_every && t >= next_wd) {
            /* fed by the compute thread's progress, not by this loop: a stuck forward pass or a
             * deadlock there stops the pings and systemd restarts the daemon */
            if (st.heartbeat_age_s < 2 * wd_every) {
                lh_systemd_notify("WATCHDOG=1");
                if (srv->wd_stalled)
                    lh_log_info("compute thread is making progress again");
                srv->wd_stalled = 0;
            } else if (!srv->wd_stalled) {
                srv->wd_stalled = 1;
                lh_log_error("compute thread has made no progress for %.1f s; withholding the "
                             "watchdog ping", st.heartbeat_age_s);
            }
            next_wd = t + wd_every;
        }
        /* per-connection timeouts: no Hello in time, a frame that does not complete in time */
        for (size_t i = 0; i < srv->n_conns; i++) {
            lh_conn *c = srv->conns[i];
            const char *why = NULL;
            if (!c->hello && t - c->t_open > srv->cfg.handshake_s)
                why = "no Hello within the handshake timeout";
            else if (c->t_frame && t - c->t_frame > srv->cfg.frame_s)
                why = "a frame did not complete within the frame timeout";
            if (!why)
                continue;
            lh_log_warn("connection %llu (uid %u): %s; closing", (unsigned long long)c->id,
                        (unsigned)c->uid, why);
            if (!c->hello && !c->t_frame && c->out_len == c->out_off) {
                /* best effort: say why to a client that is merely slow (nothing else pending) */
                size_t len = 0;
                uint8_t *b = lh_proto_error(0, LH_ERR_HANDSHAKE, "no Hello within the daemon's "
                                            "handshake timeout; closing", 0, &len);
                if (b)
                    lh_anet_send_once(c->fd, b, len);
                free(b);
            }
            conn_free(srv, i);
            i--;
        }
        if (t >= next_status) {
            notify_status(srv);
            next_status = t + 5;
        }
        size_t need = srv->n_conns + 3;
        if (need > cap_pfds) {
            struct pollfd *np = realloc(pfds, need * 2 * sizeof *np);
            if (!np) {
                lh_log_error("out of memory in the poll loop");
                rc = -ENOMEM;
                break;
            }
            pfds = np;
            cap_pfds = need * 2;
        }
        size_t n = 0;
        pfds[n++] = (struct pollfd){.fd = srv->efd, .events = POLLIN};
        int accepting = srv->lfd >= 0 && t >= srv->accept_paused_until;
        pfds[n++] = (struct pollfd){.fd = accepting ? srv->lfd : -1, .events = POLLIN};
        pfds[n++] = (struct pollfd){.fd = srv->cfg.signal_fd, .events = POLLIN};
        for (size_t i = 0; i < srv->n_conns; i++) {
            lh_conn *c = srv->conns[i];
            size_t pending = c->out_len - c->out_off;
            short ev = 0;
            if (!c->closing && pending < OUT_HARD)
                ev |= POLLIN;
            if (pending)
                ev |= POLLOUT;
            pfds[n++] = (struct pollfd){.fd = c->fd, .events = ev};
        }
        int timeout = srv->draining ? 50 : 1000;
        if (srv->n_conns && timeout > 250)
            timeout = 250; /* connection timeouts are checked at this granularity */
        if (!accepting && srv->lfd >= 0 && timeout > 100)
            timeout = 100;
        if (wd_every && wd_every * 1000 < timeout)
            timeout = (int)(wd_every * 1000);
        int k = poll(pfds, n, timeout);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            lh_log_error("poll: %s", strerror(errno));
            break;
        }
        /* conns may be added by accept and removed by close below: walk the snapshot by id */
        size_t n_snap = srv->n_conns;
        uint64_t *ids = n_snap ? malloc(n_snap * sizeof *ids) : NULL;
        short *revs = n_snap ? malloc(n_snap * sizeof *revs) : NULL;
        if (n_snap && (!ids || !revs)) {
            free(ids);
            free(revs);
            continue;
        }
        for (size_t i = 0; i < n_snap; i++) {
            ids[i] = srv->conns[i]->id;
            revs[i] = pfds[i + 3].revents;
        }
        if (pfds[2].revents & POLLIN)
            read_signals(srv);
        if (pfds[0].revents & POLLIN)
            drain_outbox(srv);
        for (size_t i = 0; i < n_snap; i++) {
            lh_conn *c = find_conn(srv, ids[i]);
            if (!c)
                continue;
            int dead = 0;
            if (revs[i] & POLLIN)
                dead = conn_read(srv, c) != 0;
            else if (revs[i] & (POLLHUP | POLLERR))
                dead = 1;
            if (!dead && c->out_len > c->out_off)
                dead = lh_conn_write(c) != 0;
            if (!dead && c->closing && c->out_len == c->out_off)
                dead = 1;
            if (dead) {
                for (size_t j = 0; j < srv->n_conns; j++)
                    if (srv->conns[j] == c) {
                        conn_free(srv, j);
                        break;
                    }
            } else {
                update_throttle(srv, c);
            }
        }
        free(ids);
        free(revs);
        /* output that arrived for connections not in the snapshot's POLLOUT set */
        for (size_t i = 0; i < srv->n_conns; i++) {
            lh_conn *c = srv->conns[i];
            if (c->out_len > c->out_off && lh_conn_write(c) != 0) {
                conn_free(srv, i);
                i--;
                continue;
            }
            update_throttle(srv, c);
        }
        if (accepting && srv->lfd >= 0 && (pfds[1].revents & POLLIN))
            accept_conns(srv);
    }
    free(pfds);
    close_listener(srv);
    lh_log_info("stopped");
    return rc ? rc : srv->exit_rc;
}
