/* daemon/protocol — see protocol.h. */
#include "protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "longheads.pb-c.h"
#include "tokenizer.h"

#define MAX_STOP_STRINGS 16
#define MAX_STOP_LEN 256

static Longheads__ErrorCode wire_err(lh_err_code e)
{
    switch (e) {
    case LH_ERR_NONE: return LONGHEADS__ERROR_CODE__ERR_NONE;
    case LH_ERR_INVALID_ARGUMENT: return LONGHEADS__ERROR_CODE__ERR_INVALID_ARGUMENT;
    case LH_ERR_LIMIT: return LONGHEADS__ERROR_CODE__ERR_LIMIT;
    case LH_ERR_BUSY: return LONGHEADS__ERROR_CODE__ERR_BUSY;
    case LH_ERR_DUPLICATE_ID: return LONGHEADS__ERROR_CODE__ERR_DUPLICATE_ID;
    case LH_ERR_TIMEOUT: return LONGHEADS__ERROR_CODE__ERR_TIMEOUT;
    case LH_ERR_SHUTTING_DOWN: return LONGHEADS__ERROR_CODE__ERR_SHUTTING_DOWN;
    case LH_ERR_BAD_FRAME: return LONGHEADS__ERROR_CODE__ERR_BAD_FRAME;
    case LH_ERR_BAD_MESSAGE: return LONGHEADS__ERROR_CODE__ERR_BAD_MESSAGE;
    case LH_ERR_VERSION: return LONGHEADS__ERROR_CODE__ERR_VERSION;
    case LH_ERR_HANDSHAKE: return LONGHEADS__ERROR_CODE__ERR_HANDSHAKE;
    case LH_ERR_UNKNOWN_REQUEST: return LONGHEADS__ERROR_CODE__ERR_UNKNOWN_REQUEST;
    case LH_ERR_PERMISSION: return LONGHEADS__ERROR_CODE__ERR_PERMISSION;
    case LH_ERR_INTERNAL: break;
    }
    return LONGHEADS__ERROR_CODE__ERR_INTERNAL;
}

/* ---- requests ------------------------------------------------------------------------------ */

static char *dup_str(const char *s, size_t *lenp)
{
    size_t len = s ? strlen(s) : 0;
    char *d = malloc(len + 1);
    if (d) {
        memcpy(d, s ? s : "", len);
        d[len] = 0;
    }
    if (lenp)
        *lenp = len;
    return d;
}

/* Takes a string out of an unpacked message (free_unpacked skips it then): a 16 MB text is not
 * copied once more.  The shared empty default is copied instead. */
static char *take_str(char **field, size_t *lenp)
{
    char *s = *field;
    if (!s || s == protobuf_c_empty_string)
        return dup_str("", lenp);
    *field = NULL;
    *lenp = strlen(s);
    return s;
}

static int attn_arg(Longheads__AttnMode m, int *attnp)
{
    switch (m) {
    case LONGHEADS__ATTN_MODE__ATTN_DEFAULT: *attnp = -1; return 0;
    case LONGHEADS__ATTN_MODE__ATTN_FULL: *attnp = LH_ATTN_FULL; return 0;
    case LONGHEADS__ATTN_MODE__ATTN_LONGHEADS: *attnp = LH_ATTN_LONGHEADS; return 0;
    default: return -1;
    }
}

static int score_arg(Longheads__ChunkScore m, int *scorep)
{
    switch (m) {
    case LONGHEADS__CHUNK_SCORE__SCORE_DEFAULT: *scorep = -1; return 0;
    case LONGHEADS__CHUNK_SCORE__SCORE_REP: *scorep = LH_SCORE_REP; return 0;
    case LONGHEADS__CHUNK_SCORE__SCORE_BOUND: *scorep = LH_SCORE_BOUND; return 0;
    default: return -1;
    }
}

static Longheads__ChunkScore score_wire(lh_score_mode m)
{
    return m == LH_SCORE_BOUND ? LONGHEADS__CHUNK_SCORE__SCORE_BOUND
                               : LONGHEADS__CHUNK_SCORE__SCORE_REP;
}

/* Generate → lh_sched_args.  Returns LH_ERR_NONE or an error code with msg. */
static lh_err_code generate_args(const Longheads__GenerateRequest *g, lh_sched_args *a,
                                 char *msg, size_t msg_size)
{
    a->kind = LH_REQ_GENERATE;
    lh_sampler_params_default(&a->sp);
    a->sp.temperature = g->temperature;
    a->sp.top_k = g->top_k;
    a->sp.top_p = g->top_p == 0 ? 1.0f : g->top_p;
    a->sp.min_p = g->min_p;
    a->sp.repeat_penalty = g->repeat_penalty == 0 ? 1.0f : g->repeat_penalty;
    a->sp.repeat_last_n = g->repeat_last_n ? g->repeat_last_n : 64;
    a->sp.seed = g->seed;
    a->max_tokens = g->max_tokens;
    a->timeout_ms = g->timeout_ms;
    a->special = g->special;
    a->chunk = g->chunk;
    a->window = g->window;
    a->recent = g->recent;
    if (attn_arg(g->attn, &a->attn) != 0) {
        snprintf(msg, msg_size, "unknown attention mode %d (0 default, 1 full, 2 longheads)",
                 (int)g->attn);
        return LH_ERR_INVALID_ARGUMENT;
    }
    if (score_arg(g->chunk_score, &a->score) != 0) {
        snprintf(msg, msg_size, "unknown chunk score %d (0 default, 1 rep, 2 bound)",
                 (int)g->chunk_score);
        return LH_ERR_INVALID_ARGUMENT;
    }
    if (g->n_stop > MAX_STOP_STRINGS) {
        snprintf(msg, msg_size, "%zu stop strings; at most %d", g->n_stop, MAX_STOP_STRINGS);
        return LH_ERR_INVALID_ARGUMENT;
    }
    if (g->n_prompt_tokens) {
        a->tokens = malloc(g->n_prompt_tokens * sizeof *a->tokens);
        if (!a->tokens)
            goto oom;
        memcpy(a->tokens, g->prompt_tokens, g->n_prompt_tokens * sizeof *a->tokens);
        a->n_tokens = g->n_prompt_tokens;
    } else if (!(a->text = dup_str(g->prompt, &a->text_len))) {
        goto oom;
    }
    if (g->n_stop) {
        a->stop = calloc(g->n_stop, sizeof *a->stop);
        if (!a->stop)
            goto oom;
        for (size_t i = 0; i < g->n_stop; i++) {
            size_t len;
            if (!(a->stop[i] = dup_str(g->stop[i], &len)))
                goto oom;
            a->n_stop = i + 1;
            if (len == 0 || len > MAX_STOP_LEN) {
                snprintf(msg, msg_size, "stop string %zu has %zu bytes; 1 to %d allowed", i, len,
                         MAX_STOP_LEN);
                return LH_ERR_INVALID_ARGUMENT;
            }
        }
    }
    return LH_ERR_NONE;
oom:
    snprintf(msg, msg_size, "out of memory");
    return LH_ERR_INTERNAL;
}

/* Chat → lh_sched_args: Generate's options, the messages as the prompt. */
static lh_err_code chat_args(const Longheads__ChatRequest *ch, lh_sched_args *a, char *msg,
                             size_t msg_size)
{
    static const Longheads__GenerateRequest no_options = LONGHEADS__GENERATE_REQUEST__INIT;
    const Longheads__GenerateRequest *g = ch->options ? ch->options : &no_options;
    lh_err_code e;
    if ((g->prompt && g->prompt[0]) || g->n_prompt_tokens) {
        snprintf(msg, msg_size, "a chat's options carry no prompt: the messages are it");
        return LH_ERR_INVALID_ARGUMENT;
    }
    if (ch->n_messages == 0 || ch->n_messages > 100000) {
        snprintf(msg, msg_size, "a chat needs 1 to 100000 messages, not %zu", ch->n_messages);
        return LH_ERR_INVALID_ARGUMENT;
    }
    if ((e = generate_args(g, a, msg, msg_size)) != LH_ERR_NONE)
        return e;
    if (!(a->msgs = calloc(ch->n_messages, sizeof *a->msgs))) {
        snprintf(msg, msg_size, "out of memory");
        return LH_ERR_INTERNAL;
    }
    for (size_t i = 0; i < ch->n_messages; i++) {
        const Longheads__ChatMessage *cm = ch->messages[i];
        a->n_msgs = i + 1;
        if (!(a->msgs[i].role = dup_str(cm->role, NULL)) ||
            !(a->msgs[i].content = dup_str(cm->content, NULL))) {
            snprintf(msg, msg_size, "out of memory");
            return LH_ERR_INTERNAL;
        }
        if (!a->msgs[i].role[0]) {
            snprintf(msg, msg_size, "message %zu has no role (system, user or assistant)", i);
            return LH_ERR_INVALID_ARGUMENT;
        }
    }
    return LH_ERR_NONE;
}

static lh_err_code submit_args(Longheads__Request *req, lh_sched_args *a, char *msg,
                               size_t msg_size)
{
    switch (req->body_case) {
    case LONGHEADS__REQUEST__BODY_CHAT: return chat_args(req->chat, a, msg, msg_size);
    case LONGHEADS__REQUEST__BODY_GENERATE: return generate_args(req->generate, a, msg, msg_size);
    case LONGHEADS__REQUEST__BODY_TOKENIZE:
        a->kind = LH_REQ_TOKENIZE;
        a->add_bos = req->tokenize->add_bos;
        a->special = req->tokenize->special;
        if (!(a->text = take_str(&req->tokenize->text, &a->text_len)))
            break;
        return LH_ERR_NONE;
    case LONGHEADS__REQUEST__BODY_DETOKENIZE:
        a->kind = LH_REQ_DETOKENIZE;
        a->n_tokens = req->detokenize->n_tokens;
        a->tokens = malloc((a->n_tokens ? a->n_tokens : 1) * sizeof *a->tokens);
        if (!a->tokens)
            break;
        memcpy(a->tokens, req->detokenize->tokens, a->n_tokens * sizeof *a->tokens);
        return LH_ERR_NONE;
    case LONGHEADS__REQUEST__BODY_SCORE:
        a->kind = LH_REQ_SCORE;
        a->chunk = req->score->chunk;
        a->window = req->score->window;
        a->recent = req->score->recent;
        if (attn_arg(req->score->attn, &a->attn) != 0) {
            snprintf(msg, msg_size, "unknown attention mode %d (0 default, 1 full, 2 longheads)",
                     (int)req->score->attn);
            return LH_ERR_INVALID_ARGUMENT;
        }
        if (score_arg(req->score->chunk_score, &a->score) != 0) {
            snprintf(msg, msg_size, "unknown chunk score %d (0 default, 1 rep, 2 bound)",
                     (int)req->score->chunk_score);
            return LH_ERR_INVALID_ARGUMENT;
        }
        if (!(a->text = take_str(&req->score->text, &a->text_len)))
            break;
        return LH_ERR_NONE;
    default: break;
    }
    snprintf(msg, msg_size, "out of memory");
    return LH_ERR_INTERNAL;
}

int lh_proto_decode(const uint8_t *data, size_t size, lh_proto_request *r)
{
    memset(r, 0, sizeof *r);
    Longheads__Request *req = longheads__request__unpack(NULL, size, data);
    if (!req)
        return LH_ERR_BAD_MESSAGE;
    r->id = req->id;
    switch (req->body_case) {
    case LONGHEADS__REQUEST__BODY_HELLO:
        r->kind = LH_MSG_HELLO;
        r->protocol_version = req->hello->protocol_version;
        break;
    case LONGHEADS__REQUEST__BODY_CANCEL:
        r->kind = LH_MSG_CANCEL;
        r->target_id = req->cancel->target_id;
        break;
    case LONGHEADS__REQUEST__BODY_INFO: r->kind = LH_MSG_INFO; break;
    case LONGHEADS__REQUEST__BODY_HEALTH: r->kind = LH_MSG_HEALTH; break;
    case LONGHEADS__REQUEST__BODY_CHAT:
    case LONGHEADS__REQUEST__BODY_GENERATE:
    case LONGHEADS__REQUEST__BODY_TOKENIZE:
    case LONGHEADS__REQUEST__BODY_DETOKENIZE:
    case LONGHEADS__REQUEST__BODY_SCORE:
        r->kind = LH_MSG_SUBMIT;
        r->err = submit_args(req, &r->args, r->err_msg, sizeof r->err_msg);
        if (r->err != LH_ERR_NONE)
            lh_sched_args_deinit(&r->args);
        break;
    default: r->kind = LH_MSG_UNKNOWN; break;
    }
    longheads__request__free_unpacked(req, NULL);
    return 0;
}

void lh_proto_request_deinit(lh_proto_request *r)
{
    if (r)
        lh_sched_args_deinit(&r->args);
}

/* ---- responses ----------------------------------------------------------------------------- */

static uint8_t *pack(const Longheads__Response *resp, size_t room, size_t *lenp)
{
    size_t size = longheads__response__get_packed_size(resp);
    uint8_t *b = malloc(room + LH_FRAME_HEADER_SIZE + size);
    if (!b)
        return NULL;
    lh_frame_header(b + room, size);
    longheads__response__pack(resp, b + room + LH_FRAME_HEADER_SIZE);
    *lenp = LH_FRAME_HEADER_SIZE + size;
    return b;
}

/* A NUL-terminated copy of text (protobuf-c strings end at NUL). */
static char *cstr(const char *text, size_t len, char *stackbuf, size_t stack_size)
{
    char *s = len < stack_size ? stackbuf : malloc(len + 1);
    if (!s)
        return NULL;
    memcpy(s, text, len);
    s[len] = 0;
    return s;
}

uint8_t *lh_proto_event(const lh_sched_event *ev, size_t room, size_t *lenp)
{
    Longheads__Response resp = LONGHEADS__RESPONSE__INIT;
    resp.id = ev->id;
    Longheads__Progress progress = LONGHEADS__PROGRESS__INIT;
    Longheads__Token token = LONGHEADS__TOKEN__INIT;
    Longheads__Final fin = LONGHEADS__FINAL__INIT;
    Longheads__Error err = LONGHEADS__ERROR__INIT;
    Longheads__ScoreReply score = LONGHEADS__SCORE_REPLY__INIT;
    Longheads__TokenizeReply tok = LONGHEADS__TOKENIZE_REPLY__INIT;
    Longheads__DetokenizeReply detok = LONGHEADS__DETOKENIZE_REPLY__INIT;
    char stackbuf[512];
    char *text = NULL;
    switch (ev->kind) {
    case LH_EV_PROGRESS:
        progress.n_done = ev->n_done;
        progress.n_total = ev->n_total;
        resp.body_case = LONGHEADS__RESPONSE__BODY_PROGRESS;
        resp.progress = &progress;
        break;
    case LH_EV_TOKEN:
        text = cstr(ev->text, ev->text_len, stackbuf, sizeof stackbuf);
        if (!text)
            return NULL;
        token.id = ev->token;
        token.text = text;
        if (memchr(ev->text, 0, ev->text_len)) {
            token.text_bytes.data = (uint8_t *)ev->text;
            token.text_bytes.len = ev->text_len;
        }
        resp.body_case = LONGHEADS__RESPONSE__BODY_TOKEN;
        resp.token = &token;
        break;
    case LH_EV_FINAL:
        text = cstr(ev->text ? ev->text : "", ev->text_len, stackbuf, sizeof stackbuf);
        fin.reason = (Longheads__FinishReason)ev->finish;
        fin.text = text ? text : "";
        if (ev->text && memchr(ev->text, 0, ev->text_len)) {
            fin.text_bytes.data = (uint8_t *)ev->text;
            fin.text_bytes.len = ev->text_len;
        }
        fin.n_prompt = (uint32_t)ev->n_prompt;
        fin.n_reused = (uint32_t)ev->n_reused;
        fin.n_generated = (uint32_t)ev->n_generated;
        fin.queue_ms = ev->queue_ms;
        fin.prefill_ms = ev->prefill_ms;
        fin.decode_ms = ev->decode_ms;
        fin.prefill_tps = ev->prefill_ms > 0
                              ? (double)(ev->n_prompt - ev->n_reused) / (ev->prefill_ms * 1e-3) : 0;
        fin.decode_tps = ev->decode_ms > 0 ? (double)ev->n_generated / (ev->decode_ms * 1e-3) : 0;
        if (ev->finish == LH_FINISH_ERROR) {
            err.code = wire_err(ev->err);
            err.message = (char *)(ev->err_msg ? ev->err_msg : "error");
            fin.error = &err;
        }
        resp.body_case = LONGHEADS__RESPONSE__BODY_FINAL;
        resp.final = &fin;
        break;
    case LH_EV_SCORE:
        score.n_tokens = ev->n_tokens;
        score.tokens = (int32_t *)ev->tokens;
        score.n_logprobs = ev->n_tokens ? ev->n_tokens - 1 : 0;
        score.logprobs = (float *)ev->logprobs;
        score.total = ev->total;
        resp.body_case = LONGHEADS__RESPONSE__BODY_SCORE;
        resp.score = &score;
        break;
    case LH_EV_TOKENS:
        tok.n_tokens = ev->n_tokens;
        tok.tokens = (int32_t *)ev->tokens;
        resp.body_case = LONGHEADS__RESPONSE__BODY_TOKENIZE;
        resp.tokenize = &tok;
        break;
    case LH_EV_TEXT:
        detok.text.data = (uint8_t *)ev->text;
        detok.text.len = ev->text_len;
        resp.body_case = LONGHEADS__RESPONSE__BODY_DETOKENIZE;
        resp.detokenize = &detok;
        break;
    case LH_EV_ERROR:
        err.code = wire_err(ev->err);
        err.message = (char *)(ev->err_msg ? ev->err_msg : "error");
        resp.body_case = LONGHEADS__RESPONSE__BODY_ERROR;
        resp.error = &err;
        break;
    }
    uint8_t *b = pack(&resp, room, lenp);
    if (text && text != stackbuf)
        free(text);
    return b;
}

uint8_t *lh_proto_error(uint64_t id, lh_err_code code, const char *msg, size_t room,
                        size_t *lenp)
{
    Longheads__Response resp = LONGHEADS__RESPONSE__INIT;
    Longheads__Error err = LONGHEADS__ERROR__INIT;
    err.code = wire_err(code);
    err.message = (char *)msg;
    resp.id = id;
    resp.body_case = LONGHEADS__RESPONSE__BODY_ERROR;
    resp.error = &err;
    return pack(&resp, room, lenp);
}

static void fill_model_info(const lh_model *m, lh_sched *s, size_t max_frame,
                            Longheads__ModelInfo *mi, Longheads__AttnMode allowed[2])
{
    const lh_hparams *hp = lh_model_hparams(m);
    const lh_ctx_params *cp = lh_sched_ctx_params(s);
    const lh_sched_config *sc = lh_sched_config_get(s);
    const lh_tok *t = lh_model_tok(m);
    mi->desc = (char *)lh_model_desc(m);
    mi->path = (char *)lh_model_path(m);
    mi->n_params = lh_model_n_params(m);
    mi->n_vocab = (uint32_t)hp->n_vocab;
    mi->n_ctx_train = (uint32_t)hp->n_ctx_train;
    mi->n_layer = (uint32_t)hp->n_layer;
    mi->n_embd = (uint32_t)hp->n_embd;
    mi->n_head = (uint32_t)hp->n_head;
    mi->n_head_kv = (uint32_t)hp->n_head_kv;
    mi->n_ctx = (uint32_t)cp->n_ctx;
    mi->n_slots = (uint32_t)sc->n_slots;
    mi->bos = lh_tok_bos(t);
    mi->eos = lh_tok_eos(t);
    mi->attn_default = cp->attn == LH_ATTN_LONGHEADS ? LONGHEADS__ATTN_MODE__ATTN_LONGHEADS
                                                     : LONGHEADS__ATTN_MODE__ATTN_FULL;
    size_t n = 0;
    if (sc->allow_full)
        allowed[n++] = LONGHEADS__ATTN_MODE__ATTN_FULL;
    if (sc->allow_longheads)
        allowed[n++] = LONGHEADS__ATTN_MODE__ATTN_LONGHEADS;
    mi->n_attn_allowed = n;
    mi->chunk_score_default = score_wire(cp->score);
    mi->attn_allowed = allowed;
    mi->chunk_default = (uint32_t)cp->chunk;
    mi->window_default = (uint32_t)cp->window;
    mi->recent_default = (uint32_t)cp->recent;
    mi->max_prompt_tokens = (uint32_t)sc->max_prompt_tokens;
    mi->max_frame = (uint32_t)max_frame;
    mi->kv_type = cp->kv_type == LH_TYPE_F16 ? "f16" : "f32";
    const char *chat;
    lh_sched_chat_template(s, &chat);
    mi->chat_template = (char *)chat;
}

uint8_t *lh_proto_hello_reply(uint64_t id, const lh_model *m, lh_sched *s, size_t max_frame,
                              size_t room, size_t *lenp)
{
    Longheads__Response resp = LONGHEADS__RESPONSE__INIT;
    Longheads__HelloReply hr = LONGHEADS__HELLO_REPLY__INIT;
    Longheads__ModelInfo mi = LONGHEADS__MODEL_INFO__INIT;
    Longheads__AttnMode allowed[2];
    fill_model_info(m, s, max_frame, &mi, allowed);
    hr.protocol_version = LH_PROTOCOL_VERSION;
    hr.server_version = LH_SERVER_VERSION;
    hr.model = &mi;
    resp.id = id;
    resp.body_case = LONGHEADS__RESPONSE__BODY_HELLO;
    resp.hello = &hr;
    return pack(&resp, room, lenp);
}

uint8_t *lh_proto_info_reply(uint64_t id, const lh_model *m, lh_sched *s, size_t max_frame,
                             const char *socket_path, size_t room, size_t *lenp)
{
    Longheads__Response resp = LONGHEADS__RESPONSE__INIT;
    Longheads__InfoReply ir = LONGHEADS__INFO_REPLY__INIT;
    Longheads__ModelInfo mi = LONGHEADS__MODEL_INFO__INIT;
    Longheads__AttnMode allowed[2];
    fill_model_info(m, s, max_frame, &mi, allowed);
    ir.model = &mi;
    ir.server_version = LH_SERVER_VERSION;
    ir.socket_path = (char *)(socket_path ? socket_path : "");
    resp.id = id;
    resp.body_case = LONGHEADS__RESPONSE__BODY_INFO;
    resp.info = &ir;
    return pack(&resp, room, lenp);
}

uint8_t *lh_proto_health_reply(uint64_t id, const lh_proto_health *hh, lh_sched *s, size_t room,
                               size_t *lenp)
{
    lh_sched_stats st;
    lh_sched_get_stats(s, &st);
    Longheads__Response resp = LONGHEADS__RESPONSE__INIT;
    Longheads__HealthReply h = LONGHEADS__HEALTH_REPLY__INIT;
    h.status = (char *)hh->status;
    h.uptime_s = hh->uptime_s;
    h.n_connections = (uint32_t)hh->n_connections;
    h.n_queued = (uint32_t)st.n_queued;
    h.n_active = (uint32_t)st.n_active;
    h.n_served = st.n_served;
    h.rss_bytes = hh->rss_bytes;
    lh_sched_slot_status ss[64];
    Longheads__SlotStatus sp[64], *spp[64];
    size_t n_slots = lh_sched_get_slots(s, ss, 64);
    h.n_slots = n_slots < 64 ? n_slots : 64;
    h.slots = spp;
    for (size_t i = 0; i < h.n_slots; i++) {
        longheads__slot_status__init(&sp[i]);
        sp[i].busy = ss[i].busy;
        sp[i].n_cached = (uint32_t)ss[i].n_cached;
        sp[i].n_ctx = (uint32_t)ss[i].n_ctx;
        sp[i].attn = ss[i].attn == LH_ATTN_LONGHEADS ? LONGHEADS__ATTN_MODE__ATTN_LONGHEADS
                                                     : LONGHEADS__ATTN_MODE__ATTN_FULL;
        sp[i].chunk = (uint32_t)ss[i].chunk;
        sp[i].window = (uint32_t)ss[i].window;
        sp[i].kv_bytes = ss[i].kv_bytes;
        sp[i].kv_disk_bytes = ss[i].kv_disk_bytes;
        if (ss[i].attn == LH_ATTN_LONGHEADS) {
            sp[i].chunk_score = score_wire(ss[i].score);
            sp[i].recent = (uint32_t)ss[i].recent;
        }
        spp[i] = &sp[i];
    }
    resp.id = id;
    resp.body_case = LONGHEADS__RESPONSE__BODY_HEALTH;
    resp.health = &h;
    return pack(&resp, room, lenp);
}
