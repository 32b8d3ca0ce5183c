/* client/longheads — liblongheads; see longheads.h.  The protobuf types stay in this file. */
#include "longheads.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "longheads.pb-c.h"

_Static_assert(LH_CLIENT_PROTOCOL_VERSION == LH_PROTOCOL_VERSION, "protocol versions differ");

/* The daemon's replies are bounded by its own limits; this only guards against a broken peer. */
#define CLIENT_MAX_FRAME (64u << 20)

struct lh_client {
    int fd;
    lh_frame_reader rd;
    uint8_t in[65536];
    size_t in_off, in_len;
    pthread_mutex_t wlock;       /* serialises writes: cancel may come from another thread */
    uint64_t next_id;
    _Atomic uint64_t gen_id;     /* id of the generate in progress, 0 if none */
    atomic_int cancel_sent;
    lh_client_model_info model;
    char chat_template[160];     /* ModelInfo.chat_template of the handshake */
    char err[256];
    int err_code;
    int timeout_ms;              /* lh_client_set_timeout; 0: none */
};

void lh_client_set_timeout(lh_client *c, int timeout_ms)
{
    if (c)
        c->timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
}

/* The deadline of one wait for the daemon (-1: none). */
static int64_t wait_deadline(const lh_client *c);

const char *lh_client_strerror(int err)
{
    switch (err) {
    case 0: return "success";
    case LH_CLIENT_E_PROTOCOL: return "protocol error: the daemon sent something unexpected";
    case LH_CLIENT_E_VERSION: return "the daemon speaks another protocol version";
    case LH_CLIENT_E_SERVER: return "the daemon reported an error";
    case LH_CLIENT_E_CLOSED: return "the daemon closed the connection";
    case LH_CLIENT_E_TIMEOUT: return "timed out";
    case LH_CLIENT_E_LIMIT: return "output buffer too small";
    case LH_CLIENT_E_ARGUMENT: return "invalid argument";
    default: break;
    }
    if (err < 0)
        return strerror(-err);
    return "unknown error";
}

const char *lh_client_last_error(const lh_client *c) { return c ? c->err : ""; }
int lh_client_last_error_code(const lh_client *c) { return c ? c->err_code : 0; }
const lh_client_model_info *lh_client_model(const lh_client *c) { return &c->model; }
const char *lh_client_chat_template(const lh_client *c) { return c->chat_template; }

int lh_client_socket_path(const char *path, char *buf, size_t cap)
{
    int n;
    const char *env = getenv("LONGHEADS_SOCKET");
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (path && *path)
        n = snprintf(buf, cap, "%s", path);
    else if (env && *env)
        n = snprintf(buf, cap, "%s", env);
    else if (xdg && *xdg)
        n = snprintf(buf, cap, "%s/longheads.sock", xdg);
    else if (geteuid() == 0)
        n = snprintf(buf, cap, "/run/longheads/longheads.sock");
    else
        n = snprintf(buf, cap, "/tmp/longheads-%u/longheads.sock", (unsigned)geteuid());
    return n < 0 || (size_t)n >= cap ? LH_CLIENT_E_LIMIT : 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_error(lh_client *c, const Longheads__Error *e)
{
    c->err_code = e ? (int)e->code : 0;
    snprintf(c->err, sizeof c->err, "%s", e && e->message ? e->message : "");
}

static int send_request(lh_client *c, Longheads__Request *req)
{
    size_t size = longheads__request__get_packed_size(req);
    uint8_t stackbuf[512];
    uint8_t *buf = size <= sizeof stackbuf ? stackbuf : malloc(size);
    if (!buf)
        return -ENOMEM;
    longheads__request__pack(req, buf);
    pthread_mutex_lock(&c->wlock);
    int rc = lh_frame_write(c->fd, buf, size);
    pthread_mutex_unlock(&c->wlock);
    if (buf != stackbuf)
        free(buf);
    return rc == -EPIPE || rc == -ECONNRESET ? LH_CLIENT_E_CLOSED : rc;
}

/* Next response, waiting at most until deadline (ms, CLOCK_MONOTONIC; < 0: forever). */
static int recv_response(lh_client *c, int64_t deadline, Longheads__Response **rp)
{
    *rp = NULL;
    for (;;) {
        if (c->in_off < c->in_len) {
            size_t used, size;
            const uint8_t *f;
            int rc = lh_frame_feed(&c->rd, c->in + c->in_off, c->in_len - c->in_off, &used, &f,
                                   &size);
            c->in_off += used;
            if (rc != 0)
                return rc < 0 ? rc : LH_CLIENT_E_PROTOCOL;
            if (f) {
                *rp = longheads__response__unpack(NULL, size, f);
                return *rp ? 0 : LH_CLIENT_E_PROTOCOL;
            }
            continue;
        }
        if (deadline >= 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0)
                return LH_CLIENT_E_TIMEOUT;
            struct pollfd p = {.fd = c->fd, .events = POLLIN};
            int n = poll(&p, 1, (int)(left > 1000000 ? 1000000 : left));
            if (n < 0 && errno != EINTR)
                return -errno;
            if (n <= 0)
                continue;
        }
        ssize_t n = read(c->fd, c->in, sizeof c->in);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == ECONNRESET ? LH_CLIENT_E_CLOSED : -errno;
        }
        if (n == 0)
            return lh_frame_pending(&c->rd) ? LH_CLIENT_E_PROTOCOL : LH_CLIENT_E_CLOSED;
        c->in_off = 0;
        c->in_len = (size_t)n;
    }
}

static int64_t wait_deadline(const lh_client *c)
{
    return c->timeout_ms > 0 ? now_ms() + c->timeout_ms : -1;
}

static void copy_model(lh_client_model_info *m, const Longheads__ModelInfo *p)
{
    memset(m, 0, sizeof *m);
    if (!p)
        return;
    snprintf(m->desc, sizeof m->desc, "%s", p->desc ? p->desc : "");
    snprintf(m->path, sizeof m->path, "%s", p->path ? p->path : "");
    snprintf(m->kv_type, sizeof m->kv_type, "%s", p->kv_type ? p->kv_type : "");
    m->n_params = p->n_params;
    m->n_vocab = p->n_vocab;
    m->n_ctx_train = p->n_ctx_train;
    m->n_layer = p->n_layer;
    m->n_embd = p->n_embd;
    m->n_head = p->n_head;
    m->n_head_kv = p->n_head_kv;
    m->n_ctx = p->n_ctx;
    m->n_slots = p->n_slots;
    m->max_prompt_tokens = p->max_prompt_tokens;
    m->max_frame = p->max_frame;
    m->bos = p->bos;
    m->eos = p->eos;
    m->attn_default = (lh_client_attn)p->attn_default;
    for (size_t i = 0; i < p->n_attn_allowed; i++) {
        if (p->attn_allowed[i] == LONGHEADS__ATTN_MODE__ATTN_FULL)
            m->attn_full_allowed = 1;
        if (p->attn_allowed[i] == LONGHEADS__ATTN_MODE__ATTN_LONGHEADS)
            m->attn_longheads_allowed = 1;
    }
    m->chunk_default = p->chunk_default;
    m->window_default = p->window_default;
    m->score_default = (lh_client_chunk_score)p->chunk_score_default;
    m->recent_default = p->recent_default;
}

static int connect_fd(const char *path, int64_t deadline, int *fdp)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return LH_CLIENT_E_ARGUMENT;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        if (errno != EINPROGRESS && errno != EAGAIN) {
            rc = -errno;
            goto fail;
        }
        for (;;) {
            int64_t left = deadline - now_ms();
            if (left <= 0) {
                rc = LH_CLIENT_E_TIMEOUT;
                goto fail;
            }
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int n = poll(&p, 1, (int)left);
            if (n < 0 && errno != EINTR) {
                rc = -errno;
                goto fail;
            }
            if (n > 0)
                break;
        }
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
            rc = err ? -err : -errno;
            goto fail;
        }
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        rc = -errno;
        goto fail;
    }
    *fdp = fd;
    return 0;
fail:
    close(fd);
    return rc;
}

int lh_client_connect(lh_client **cp, const char *path, int timeout_ms)
{
    return lh_client_connect_err(cp, path, timeout_ms, NULL, 0, NULL);
}

int lh_client_connect_err(lh_client **cp, const char *path, int timeout_ms, char *err,
                          size_t err_size, int *err_codep)
{
    *cp = NULL;
    if (err && err_size)
        err[0] = 0;
    if (err_codep)
        *err_codep = 0;
    char sock[sizeof ((struct sockaddr_un *)0)->sun_path + 1];
    if (lh_client_socket_path(path, sock, sizeof sock) != 0)
        return LH_CLIENT_E_ARGUMENT;
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 5000);
    lh_client *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->fd = -1;
    c->next_id = 1;
    pthread_mutex_init(&c->wlock, NULL);
    lh_frame_reader_init(&c->rd, CLIENT_MAX_FRAME);
    Longheads__Response *resp = NULL;
    int rc = connect_fd(sock, deadline, &c->fd);
    if (rc != 0)
        goto fail;
    Longheads__Request req = LONGHEADS__REQUEST__INIT;
    Longheads__Hello hello = LONGHEADS__HELLO__INIT;
    hello.protocol_version = LH_CLIENT_PROTOCOL_VERSION;
    hello.client_name = "liblongheads";
    req.id = c->next_id++;
    req.body_case = LONGHEADS__REQUEST__BODY_HELLO;
    req.hello = &hello;
    rc = send_request(c, &req);
    /* a daemon that refuses (not allowed, busy) writes its Error and closes at once, maybe before
     * our Hello arrives: a failed write still leaves its Error to read */
    int rrc = recv_response(c, rc == 0 ? deadline : now_ms() + 200, &resp);
    if (rc == 0 || (rrc == 0 && resp->body_case == LONGHEADS__RESPONSE__BODY_ERROR))
        rc = rrc;
    if (rc != 0)
        goto fail;
    if (resp->body_case == LONGHEADS__RESPONSE__BODY_ERROR) {
        set_error(c, resp->error);
        rc = resp->error && resp->error->code == LONGHEADS__ERROR_CODE__ERR_VERSION
                 ? LH_CLIENT_E_VERSION : LH_CLIENT_E_SERVER;
        goto fail;
    }
    if (resp->body_case != LONGHEADS__RESPONSE__BODY_HELLO || !resp->hello) {
        rc = LH_CLIENT_E_PROTOCOL;
        goto fail;
    }
    if (resp->hello->protocol_version != LH_CLIENT_PROTOCOL_VERSION) {
        rc = LH_CLIENT_E_VERSION;
        goto fail;
    }
    copy_model(&c->model, resp->hello->model);
    const Longheads__ModelInfo *hm = resp->hello->model;
    snprintf(c->chat_template, sizeof c->chat_template, "%s",
             hm && hm->chat_template ? hm->chat_template : "");
    snprintf(c->model.server_version, sizeof c->model.server_version, "%s",
             resp->hello->server_version ? resp->hello->server_version : "");
    longheads__response__free_unpacked(resp, NULL);
    *cp = c;
    return 0;
fail:
    if (resp)
        longheads__response__free_unpacked(resp, NULL);
    /* the daemon's message outlives c: it says why (allow-uid, max-connections, version) */
    if (err && err_size)
        snprintf(err, err_size, "%s", c->err);
    if (err_codep)
        *err_codep = c->err_code;
    lh_client_close(c);
    return rc;
}

void lh_client_close(lh_client *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    lh_frame_reader_deinit(&c->rd);
    pthread_mutex_destroy(&c->wlock);
    free(c);
}

void lh_client_gen_opts_default(lh_client_gen_opts *o)
{
    memset(o, 0, sizeof *o);
    o->temperature = 0.8f;
    o->top_k = 40;
    o->top_p = 0.95f;
    o->min_p = 0.05f;
    o->repeat_penalty = 1.0f;
    o->repeat_last_n = 64;
}

static uint64_t random_seed(void)
{
    uint64_t s = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &s, sizeof s) != (ssize_t)sizeof s)
            s = 0;
        close(fd);
    }
    if (!s) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s = (uint64_t)ts.tv_nsec * 6364136223846793005ull ^ (uint64_t)ts.tv_sec ^ (uint64_t)getpid();
    }
    return s;
}

int lh_client_cancel(lh_client *c)
{
    if (!c)
        return 0;
    uint64_t id = atomic_load(&c->gen_id);
    if (!id || atomic_exchange(&c->cancel_sent, 1))
        return 0;
    Longheads__Request req = LONGHEADS__REQUEST__INIT;
    Longheads__CancelRequest cancel = LONGHEADS__CANCEL_REQUEST__INIT;
    cancel.target_id = id;
    req.id = 0; /* a cancel is never answered; its id does not matter */
    req.body_case = LONGHEADS__REQUEST__BODY_CANCEL;
    req.cancel = &cancel;
    int rc = send_request(c, &req);
    return rc > 0 ? 0 : rc;
}

static void fill_result(lh_client_result *res, const Longheads__Final *f)
{
    res->finish = (lh_client_finish)f->reason;
    res->n_prompt = f->n_prompt;
    res->n_reused = f->n_reused;
    res->n_generated = f->n_generated;
    res->queue_ms = f->queue_ms;
    res->prefill_ms = f->prefill_ms;
    res->decode_ms = f->decode_ms;
    res->prefill_tps = f->prefill_tps;
    res->decode_tps = f->decode_tps;
    if (f->error) {
        res->error_code = (int)f->error->code;
        snprintf(res->error, sizeof res->error, "%s", f->error->message ? f->error->message : "");
    }
}

/* The options of a generation (without its prompt) into g. */
static void fill_gen(Longheads__GenerateRequest *g, const lh_client_gen_opts *o)
{
    g->max_tokens = o->max_tokens;
    g->temperature = o->temperature;
    g->top_k = o->top_k;
    g->top_p = o->top_p;
    g->min_p = o->min_p;
    g->repeat_penalty = o->repeat_penalty;
    g->repeat_last_n = o->repeat_last_n;
    g->seed = o->has_seed ? o->seed : random_seed();
    g->n_stop = o->n_stop;
    g->stop = (char **)o->stop;
    g->attn = (Longheads__AttnMode)o->attn;
    g->chunk = o->chunk;
    g->window = o->window;
    g->timeout_ms = o->timeout_ms;
    g->special = o->special != 0;
    g->chunk_score = (Longheads__ChunkScore)o->score;
    g->recent = o->recent;
}

static int run_stream(lh_client *c, Longheads__Request *req, lh_client_gen_cb cb, void *ud,
                      lh_client_result *res);

int lh_client_chat(lh_client *c, const lh_client_chat_msg *msgs, size_t n,
                   const lh_client_gen_opts *o, lh_client_gen_cb cb, void *ud,
                   lh_client_result *res)
{
    memset(res, 0, sizeof *res);
    if (!o || !n || !msgs || o->prompt || o->n_tokens)
        return LH_CLIENT_E_ARGUMENT;
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return LH_CLIENT_E_ARGUMENT;
    Longheads__GenerateRequest g = LONGHEADS__GENERATE_REQUEST__INIT;
    fill_gen(&g, o);
    Longheads__ChatMessage *cm = calloc(n, sizeof *cm);
    Longheads__ChatMessage **cmp = calloc(n, sizeof *cmp);
    if (!cm || !cmp) {
        free(cm);
        free(cmp);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        longheads__chat_message__init(&cm[i]);
        cm[i].role = (char *)msgs[i].role;
        cm[i].content = (char *)msgs[i].content;
        cmp[i] = &cm[i];
    }
    Longheads__ChatRequest ch = LONGHEADS__CHAT_REQUEST__INIT;
    ch.n_messages = n;
    ch.messages = cmp;
    ch.options = &g;
    Longheads__Request req = LONGHEADS__REQUEST__INIT;
    req.body_case = LONGHEADS__REQUEST__BODY_CHAT;
    req.chat = &ch;
    int rc = run_stream(c, &req, cb, ud, res);
    free(cm);
    free(cmp);
    return rc;
}

int lh_client_generate(lh_client *c, const lh_client_gen_opts *o, lh_client_gen_cb cb, void *ud,
                       lh_client_result *res)
{
    memset(res, 0, sizeof *res);
    if (!o || (o->prompt_len && !o->prompt && !o->n_tokens))
        return LH_CLIENT_E_ARGUMENT;
    Longheads__GenerateRequest g = LONGHEADS__GENERATE_REQUEST__INIT;
    char *prompt = NULL;
    int rc = 0;
    if (o->n_tokens) {
        g.n_prompt_tokens = o->n_tokens;
        g.prompt_tokens = (int32_t *)o->tokens;
    } else if (o->prompt) {
        size_t len = o->prompt_len == (size_t)-1 ? strlen(o->prompt) : o->prompt_len;
        /* protobuf-c strings end at a NUL: a prompt with one would be cut there, silently */
        if (memchr(o->prompt, 0, len))
            return LH_CLIENT_E_ARGUMENT;
        prompt = malloc(len + 1);
        if (!prompt)
            return -ENOMEM;
        memcpy(prompt, o->prompt, len);
        prompt[len] = 0;
        g.prompt = prompt;
    }
    fill_gen(&g, o);
    Longheads__Request req = LONGHEADS__REQUEST__INIT;
    req.body_case = LONGHEADS__REQUEST__BODY_GENERATE;
    req.generate = &g;
    rc = run_stream(c, &req, cb, ud, res);
    free(prompt);
    return rc;
}

/* Sends a Generate or Chat and delivers its stream to cb until the Final (or an Error). */
static int run_stream(lh_client *c, Longheads__Request *req_in, lh_client_gen_cb cb, void *ud,
                      lh_client_result *res)
{
    int rc = 0;
    Longheads__Request req = *req_in;
    req.id = c->next_id++;
    c->err[0] = 0;
    c->err_code = 0;
    atomic_store(&c->cancel_sent, 0);
    atomic_store(&c->gen_id, req.id);
    rc = send_request(c, &req);
    if (rc != 0)
        goto out;
    for (;;) {
        Longheads__Response *r;
        if ((rc = recv_response(c, wait_deadline(c), &r)) != 0)
            goto out;
        if (r->id != req.id) { /* not ours (e.g. an error about a cancel): skip */
            longheads__response__free_unpacked(r, NULL);
            continue;
        }
        int done = 0, stop = 0;
        lh_client_event ev = {0};
        switch (r->body_case) {
        case LONGHEADS__RESPONSE__BODY_PROGRESS:
            ev.kind = LH_CLIENT_EV_PROGRESS;
            ev.n_done = r->progress->n_done;
            ev.n_total = r->progress->n_total;
            stop = cb ? cb(&ev, ud) : 0;
            break;
        case LONGHEADS__RESPONSE__BODY_TOKEN:
            ev.kind = LH_CLIENT_EV_TOKEN;
            ev.token = r->token->id;
            if (r->token->text_bytes.len) {
                ev.text = (const char *)r->token->text_bytes.data;
                ev.text_len = r->token->text_bytes.len;
            } else {
                ev.text = r->token->text ? r->token->text : "";
                ev.text_len = strlen(ev.text);
            }
            stop = cb ? cb(&ev, ud) : 0;
            break;
        case LONGHEADS__RESPONSE__BODY_FINAL:
            ev.kind = LH_CLIENT_EV_TOKEN;
            ev.token = -1;
            if (r->final->text_bytes.len) {
                ev.text = (const char *)r->final->text_bytes.data;
                ev.text_len = r->final->text_bytes.len;
            } else {
                ev.text = r->final->text ? r->final->text : "";
                ev.text_len = strlen(ev.text);
            }
            if (ev.text_len && cb)
                cb(&ev, ud);
            fill_result(res, r->final);
            if (r->final->error)
                set_error(c, r->final->error);
            done = 1;
            break;
        case LONGHEADS__RESPONSE__BODY_ERROR:
            set_error(c, r->error);
            res->finish = LH_CLIENT_FINISH_ERROR;
            res->error_code = c->err_code;
            snprintf(res->error, sizeof res->error, "%s", c->err);
            rc = LH_CLIENT_E_SERVER;
            done = 1;
            break;
        default:
            rc = LH_CLIENT_E_PROTOCOL;
            done = 1;
            break;
        }
        longheads__response__free_unpacked(r, NULL);
        if (done)
            break;
        if (stop) {
            int crc = lh_client_cancel(c);
            if (crc != 0) {
                rc = crc;
                break;
            }
        }
    }
out:
    atomic_store(&c->gen_id, 0);
    return rc;
}

/* Sends req and waits for the reply to it; an Error reply becomes LH_CLIENT_E_SERVER. */
static int call(lh_client *c, Longheads__Request *req, Longheads__Response__BodyCase want,
                Longheads__Response **rp)
{
    *rp = NULL;
    req->id = c->next_id++;
    c->err[0] = 0;
    c->err_code = 0;
    int rc = send_request(c, req);
    if (rc != 0)
        return rc;
    int64_t deadline = wait_deadline(c);
    for (;;) {
        Longheads__Response *r;
        if ((rc = recv_response(c, deadline, &r)) != 0)
            return rc;
        if (r->id != req->id || r->body_case == LONGHEADS__RESPONSE__BODY_PROGRESS) {
            longheads__response__free_unpacked(r, NULL);
            continue;
        }
        if (r->body_case == LONGHEADS__RESPONSE__BODY_ERROR) {
            set_error(c, r->error);
            longheads__response__free_unpacked(r, NULL);
            return LH_CLIENT_E_SERVER;
        }
        if (r->body_case != want) {
            longheads__response__free_unpacked(r, NULL);
            return LH_CLIENT_E_PROTOCOL;
        }
        *rp = r;
        return 0;
    }
}

int lh_client_get_info(lh_client *c, lh_client_info *out)
{
    memset(out, 0, sizeof *out);
    Longheads__Request req = LONGHEADS__REQUEST__INIT;
    Longheads__InfoRequest info = LONGHEADS__INFO_REQUEST__INIT;
    req.body_case = LONGHEADS__REQUEST__BODY_INFO;
    req.info = &info;
    Longheads__Response *r;
    int rc = call(c, &req, LONGHEADS__RESPONSE__BODY_INFO, &r);
    if (rc != 0)
        return rc;
    copy_model(&out->model, r->info->model);
    snprintf(out->model.server_version, sizeof out->model.server_version, "%s",
             r->info->server_version ? r->info->server_version : "");
    snprintf(out->socket_path, sizeof out->socket_path, "%s",
             r->info->socket_path ? r->info->socket_path : "");
    longheads__response__free_unpacked(r, NULL);
    return 0;
}

/* Sends a Health request; its reply into *rp (the caller frees it). */
static int call_health(lh_client *c, Longheads__Response **rp)
{
    Longheads__Request req = LONGHEADS__REQUEST__INIT;
    Longheads__HealthRequest h = LONGHEADS__HEALTH_REQUEST__INIT;
    req.body_case = LONGHEADS__REQUEST__BODY_HEALTH;
    req.health = &h;
    return call(c, &req, LONGHEADS__RESPONSE__BODY_HEALTH, rp);
}

static void copy_health(lh_client_health *out, const Longheads__HealthReply *hr)
{
    snprintf(out->status, sizeof out->status, "%s", hr->status ? hr->status : "");
    out->uptime_s = hr->uptime_s;
    out->n_connections = hr->n_connections;
    out->n_queued = hr->n_queued;
    out->n_active = hr->n_active;
    out->n_served = hr->n_served;
}

int lh_client_get_health(lh_client *c, lh_client_health *out)
{
    memset(out, 0, sizeof *out);
    Longheads__Response *r;
    int rc = call_health(c, &r);
    if (rc != 0)
        return rc;
    copy_health(out, r->health);
    longheads__response__free_unpacked(r, NULL);
    return 0;
}

int lh_client_get_status(lh_client *c, lh_client_status *out)
{
    memset(out, 0, sizeof *out);
    Longheads__Response *r;
    int rc = call_health(c, &r);
    if (rc != 0)
        return rc;
    const Longheads__HealthReply *hr = r->health;
    copy_health(&out->health, hr);
    out->rss_bytes = hr->rss_bytes;
    out->n_slots = hr->n_slots;
    for (size_t i = 0; i < hr->n_slots && i < LH_CLIENT_MAX_SLOTS; i++) {
        const Longheads__SlotStatus *ss = hr->slots[i];
        lh_client_slot *d = &out->slots[i];
        d->busy = ss->busy;
        d->n_cached = ss->n_cached;
        d->n_ctx = ss->n_ctx;
        d->attn = (lh_client_attn)ss->attn;
        d->chunk = ss->chunk;
        d->window = ss->window;
        d->kv_bytes = ss->kv_bytes;
        d->kv_disk_bytes = ss->kv_disk_bytes;
        d->score = (lh_client_chunk_score)ss->chunk_score;
        d->recent = ss->recent;
    }
    longheads__response__free_unpacked(r, NULL);
    return 0;
}

static char *dup_text(const char *text, size_t len)
{
    if (len == (size_t)-1)
        len = strlen(text);
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, text, len);
        s[len] = 0;
    }
    return s;
}

int lh_client_tokenize(lh_client *c, const char *text, size_t len, int flags, int32_t *out,
                       size_t cap, size_t *n_outp)
{
    *n_outp = 0;
    if (!text)
        return LH_CLIENT_E_ARGUMENT;
    char *s = dup_text(text, len);
    if (!s)
        return -ENOMEM;
    Longheads__Request req = LONGHEADS__REQUEST__INIT;
    Longheads__TokenizeRequest t = LONGHEADS__TOKENIZE_REQUEST__INIT;
    t.text = s;
    t.add_bos = (flags & LH_CLIENT_TOK_BOS) != 0;
    t.special = (flags & LH_CLIENT_TOK_SPECIAL) != 0;
    req.body_case = LONGHEADS__REQUEST__BODY_TOKENIZE;
    req.tokenize = &t;
    Longheads__Response *r;
    int rc = call(c, &req, LONGHEADS__RESPONSE__BODY_TOKENIZE, &r);
    free(s);
    if (rc != 0)
        return rc;
    size_t n = r->tokenize->n_tokens;
    if (cap > 0 && n > 0) /* out may be NULL when only the count is wanted */
        memcpy(out, r->tokenize->tokens, (n < cap ? n : cap) * sizeof *out);
    *n_outp = n;
    longheads__response__free_unpacked(r, NULL);
    return n > cap ? LH_CLIENT_E_LIMIT : 0;
}

int lh_client_detokenize(lh_client *c, const int32_t *ids, size_t n, char *buf, size_t cap,
                         size_t *lenp)
{
    *lenp = 0;
    Longheads__Request req = LONGHEADS__REQUEST__INIT;
    Longheads__DetokenizeRequest d = LONGHEADS__DETOKENIZE_REQUEST__INIT;
    d.n_tokens = n;
    d.tokens = (int32_t *)ids;
    req.body_case = LONGHEADS__REQUEST__BODY_DETOKENIZE;
    req.detokenize = &d;
    Longheads__Response *r;
    int rc = call(c, &req, LONGHEADS__RESPONSE__BODY_DETOKENIZE, &r);
    if (rc != 0)
        return rc;
    size_t len = r->detokenize->text.len;
    if (cap) {
        size_t k = len < cap - 1 ? len : cap - 1;
        memcpy(buf, r->detokenize->text.data, k);
        buf[k] = 0;
    }
    *lenp = len;
    longheads__response__free_unpacked(r, NULL);
    return len >= cap ? LH_CLIENT_E_LIMIT : 0;
}

int lh_client_score(lh_client *c, const char *text, size_t len, float *logprobs, size_t cap,
                    size_t *n_outp, double *totalp)
{
    return lh_client_score_ex(c, text, len, NULL, logprobs, cap, n_outp, totalp);
}

int lh_client_score_attn(lh_client *c, const char *text, size_t len, lh_client_attn attn,
                         uint32_t chunk, uint32_t window, float *logprobs, size_t cap,
                         size_t *n_outp, double *totalp)
{
    lh_client_score_opts o = {attn, chunk, window, LH_CLIENT_SCORE_DEFAULT, 0};
    return lh_client_score_ex(c, text, len, &o, logprobs, cap, n_outp, totalp);
}

int lh_client_score_ex(lh_client *c, const char *text, size_t len, const lh_client_score_opts *o,
                       float *logprobs, size_t cap, size_t *n_outp, double *totalp)
{
    static const lh_client_score_opts defaults;
    if (!o)
        o = &defaults;
    *n_outp = 0;
    if (!text)
        return LH_CLIENT_E_ARGUMENT;
    char *s = dup_text(text, len);
    if (!s)
        return -ENOMEM;
    Longheads__Request req = LONGHEADS__REQUEST__INIT;
    Longheads__ScoreRequest sc = LONGHEADS__SCORE_REQUEST__INIT;
    sc.text = s;
    sc.attn = (Longheads__AttnMode)o->attn;
    sc.chunk = o->chunk;
    sc.window = o->window;
    sc.chunk_score = (Longheads__ChunkScore)o->score;
    sc.recent = o->recent;
    req.body_case = LONGHEADS__REQUEST__BODY_SCORE;
    req.score = &sc;
    Longheads__Response *r;
    int rc = call(c, &req, LONGHEADS__RESPONSE__BODY_SCORE, &r);
    free(s);
    if (rc != 0)
        return rc;
    size_t n = r->score->n_logprobs;
    memcpy(logprobs, r->score->logprobs, (n < cap ? n : cap) * sizeof *logprobs);
    *n_outp = n;
    if (totalp)
        *totalp = r->score->total;
    longheads__response__free_unpacked(r, NULL);
    return n > cap ? LH_CLIENT_E_LIMIT : 0;
}
