/* daemon/scheduler — see scheduler.h. */
#include "scheduler.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <sys/stat.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "gen.h"
#include "log.h"
#include "tokenizer.h"

enum { CANCEL_NONE = 0, CANCEL_CLIENT, CANCEL_DISCONNECT, CANCEL_SHUTDOWN };

typedef struct slot {
    lh_ctx *ctx;
    lh_attn_mode attn;          /* what the slot was created for (requested values) */
    size_t chunk, window;
    lh_score_mode score;
    size_t recent;
    float *logits;              /* (n_batch, n_vocab) */
    size_t n_batch;
    struct req *busy;           /* the request using it, NULL if free */
    uint64_t last_used;
    double t_used;              /* when it was last released (idle release) */
    lh_sched_slot_status st;    /* under lock: what it held when its last request retired */
} slot;

typedef struct req {
    struct req *next;
    uint64_t owner, id, tag, seq;
    lh_sched_args a;
    atomic_int cancel;
    int active;
    slot *sl;
    int32_t *prompt;            /* (n_prompt) */
    size_t n_prompt, n_done, n_reused; /* score; a generation's come from gen */
    size_t n_slice;             /* adaptive prefill slice */
    lh_gen *gen;                /* generate: the engine's generation loop (decode, sampling,
                                 * UTF-8 hold-back, stop strings, end of generation) */
    float *lp;                  /* score: (n_prompt - 1) log-probabilities */
    double lp_total;
    double t_submit, t_start, t_prefill, t_decode, deadline;
} req;

typedef struct {
    uint64_t owner, tag;
    size_t n_inflight;
    int throttled;
} owner_rec;

struct lh_sched {
    const lh_model *model;
    const lh_tok *tok;
    lh_sched_config cfg;
    lh_ctx_params defaults;     /* resolved */
    slot *slots;
    size_t n_vocab;
    lh_sched_emit_fn emit;
    void *ud;
    pthread_t thread, prep_thread;
    int thread_started, prep_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;        /* the compute thread waits on it */
    pthread_cond_t prep_cond;   /* the prep thread waits on it */
    size_t max_piece;           /* longest token piece in bytes: bounds text per token */
    struct stat model_st;       /* the model file as loaded (change detection) */
    int model_st_ok;
    atomic_int model_warned;    /* both threads check the file */
    _Atomic int64_t heartbeat_ms; /* the compute thread's last sign of life (watchdog) */
    /* under lock */
    req *pending, *active;
    req *admitting;             /* off pending, not yet active: tokenizing, picking a slot, or a
                                 * quick job running on the prep thread.  Cancel, disconnect and
                                 * the duplicate-id check see these too. */
    size_t n_pending, n_active, n_admitting;
    int fatal;                  /* the model file changed under us: refuse everything */
    char fatal_msg[256];
    owner_rec *owners;
    size_t n_owners, cap_owners;
    uint64_t vclock, seq, n_served, use_clock;
    int stop, shutting_down;
    size_t rr;                  /* round-robin cursor over active requests */
    lh_pcache *pcache;          /* the persistent prompt cache, or NULL */
    lh_chat_tmpl chat;          /* the model's chat template family */
    char chat_desc[160];
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int64_t now_ms(void) { return (int64_t)(now_s() * 1e3); }

static int is_quick(const req *r)
{
    return r->a.kind == LH_REQ_TOKENIZE || r->a.kind == LH_REQ_DETOKENIZE;
}

void lh_sched_args_deinit(lh_sched_args *a)
{
    if (!a)
        return;
    free(a->text);
    free(a->tokens);
    for (size_t i = 0; i < a->n_stop; i++)
        free(a->stop[i]);
    free(a->stop);
    for (size_t i = 0; i < a->n_msgs; i++) {
        free((char *)a->msgs[i].role);
        free((char *)a->msgs[i].content);
    }
    free(a->msgs);
    a->msgs = NULL;
    a->n_msgs = 0;
    a->text = NULL;
    a->tokens = NULL;
    a->stop = NULL;
    a->n_stop = a->n_tokens = a->text_len = 0;
}

void lh_sched_config_default(lh_sched_config *c)
{
    memset(c, 0, sizeof *c);
    c->n_slots = 1;
    lh_ctx_params_default(&c->ctx);
    c->allow_full = c->allow_longheads = 1;
    c->max_queued = 64;
    c->max_per_owner = 16;
    c->timeout_s = 600;
    c->slice_ms = 20;
    c->max_tokens_default = 256;
    c->slot_idle_s = 300;
    c->cache_max_bytes = (size_t)4 << 30;
    c->cache_min_tokens = 1024;
}

const lh_ctx_params *lh_sched_ctx_params(const lh_sched *s) { return &s->defaults; }
const lh_sched_config *lh_sched_config_get(const lh_sched *s) { return &s->cfg; }

lh_chat_tmpl lh_sched_chat_template(const lh_sched *s, const char **descp)
{
    if (descp)
        *descp = s->chat_desc;
    return s->chat;
}

/* The model's chat template: its tokenizer.chat_template when we recognise it, else the default
 * (and the description says which case it is). */
static void find_chat_template(lh_sched *s)
{
    const char *src;
    size_t len;
    s->chat = LH_CHAT_DEFAULT;
    if (lh_gguf_get_str(lh_model_gguf(s->model), "tokenizer.chat_template", &src, &len) != 0) {
        snprintf(s->chat_desc, sizeof s->chat_desc, "%s (default: the model has no chat template)",
                 lh_chat_name(s->chat));
        return;
    }
    lh_chat_tmpl t = lh_chat_detect(src, len);
    if (t == LH_CHAT_UNKNOWN) {
        snprintf(s->chat_desc, sizeof s->chat_desc, "%s (default: the model's chat template is "
                 "not one this daemon recognises)", lh_chat_name(s->chat));
        lh_log_warn("the model's chat template is not one of the known families; chat uses %s",
                    lh_chat_name(s->chat));
        return;
    }
    s->chat = t;
    snprintf(s->chat_desc, sizeof s->chat_desc, "%s", lh_chat_name(t));
}

/* Chat: the messages rendered into r->a.text, and the template's end-of-turn markers appended
 * to the stop strings.  0 or -ENOMEM. */
static int render_chat(lh_sched *s, lh_sched_args *a)
{
    char *text;
    size_t len;
    int rc = lh_chat_render(s->chat, a->msgs, a->n_msgs, 1, &text, &len);
    if (rc != 0)
        return rc;
    free(a->text);
    a->text = text;
    a->text_len = len;
    const char *const *stops = lh_chat_stops(s->chat);
    size_t n = 0;
    while (stops[n])
        n++;
    char **ns = realloc(a->stop, (a->n_stop + n + 1) * sizeof *ns);
    if (!ns)
        return -ENOMEM;
    a->stop = ns;
    for (size_t i = 0; i < n; i++) {
        if (!(a->stop[a->n_stop] = strdup(stops[i])))
            return -ENOMEM;
        a->n_stop++;
    }
    return 0;
}

/* ---- owners (under lock) ------------------------------------------------------------------- */

static owner_rec *find_owner(lh_sched *s, uint64_t owner, int create)
{
    for (size_t i = 0; i < s->n_owners; i++)
        if (s->owners[i].owner == owner)
            return &s->owners[i];
    if (!create)
        return NULL;
    if (s->n_owners == s->cap_owners) {
        size_t cap = s->cap_owners ? s->cap_owners * 2 : 16;
        owner_rec *o = realloc(s->owners, cap * sizeof *o);
        if (!o)
            return NULL;
        s->owners = o;
        s->cap_owners = cap;
    }
    owner_rec *o = &s->owners[s->n_owners++];
    memset(o, 0, sizeof *o);
    o->owner = owner;
    return o;
}

static void drop_owner_if_idle(lh_sched *s, owner_rec *o)
{
    if (o->n_inflight == 0 && !o->throttled) {
        *o = s->owners[--s->n_owners];
    }
}

/* ---- events -------------------------------------------------------------------------------- */

static void emit_error(lh_sched *s, req *r, lh_err_code err, const char *msg)
{
    lh_sched_event ev = {.kind = LH_EV_ERROR, .owner = r->owner, .id = r->id, .err = err,
                         .err_msg = msg};
    s->emit(s->ud, &ev);
}

static const char *finish_name(lh_finish f)
{
    static const char *names[] = {"none", "length", "stop", "eos", "cancelled", "error"};
    return (unsigned)f < sizeof names / sizeof names[0] ? names[f] : "?";
}

static const char *kind_name(lh_req_kind k)
{
    static const char *names[] = {"generate", "score", "tokenize", "detokenize"};
    return names[k];
}

static const char *cancel_name(int c)
{
    static const char *names[] = {"", " (cancelled by the client)", " (client disconnected)",
                                  " (daemon shutting down)"};
    return names[c];
}

static void finish_generate(lh_sched *s, req *r, lh_finish finish, lh_err_code err,
                            const char *msg)
{
    double t = now_s();
    int why = finish == LH_FINISH_CANCELLED ? atomic_load(&r->cancel) : CANCEL_NONE;
    if (!r->t_start)
        r->t_start = t;
    if (r->t_start && !r->t_prefill)
        r->t_prefill = t; /* ended during the prefill */
    /* the text still held back (an incomplete UTF-8 tail as U+FFFD); none after a stop string */
    const char *text = "";
    size_t text_len = 0, n_reused = 0, n_done = 0, n_gen = 0;
    if (r->gen) {
        text = lh_gen_flush(r->gen, &text_len);
        n_reused = lh_gen_n_reused(r->gen);
        n_done = lh_gen_n_done(r->gen);
        n_gen = lh_gen_n_generated(r->gen);
    }
    lh_sched_event ev = {
        .kind = LH_EV_FINAL, .owner = r->owner, .id = r->id, .finish = finish, .text = text,
        .text_len = text_len, .n_prompt = r->n_prompt, .n_reused = n_reused,
        .n_generated = n_gen, .queue_ms = (r->t_start - r->t_submit) * 1e3,
        .prefill_ms = r->t_prefill ? (r->t_prefill - r->t_start) * 1e3 : (t - r->t_start) * 1e3,
        .decode_ms = r->t_prefill ? (t - r->t_prefill) * 1e3 : 0, .err = err, .err_msg = msg};
    s->emit(s->ud, &ev);
    double pf_s = ev.prefill_ms / 1e3, dec_s = ev.decode_ms / 1e3;
    lh_log_info("request %llu.%llu uid %u: generate, prompt %zu tokens (%zu reused), generated "
                "%zu; queue %.1f ms, prefill %.1f ms (%.0f tok/s), decode %.1f ms (%.1f tok/s); "
                "finish %s%s%s%s",
                (unsigned long long)r->owner, (unsigned long long)r->id, (unsigned)r->a.uid,
                r->n_prompt, n_reused, n_gen, ev.queue_ms, ev.prefill_ms,
                pf_s > 0 ? (double)(n_done - n_reused) / pf_s : 0.0, ev.decode_ms,
                dec_s > 0 ? (double)n_gen / dec_s : 0.0, finish_name(finish),
                cancel_name(why), msg ? ": " : "", msg ? msg : "");
}

/* The request's single terminal event for a cancellation, timeout or error. */
static void finish_req(lh_sched *s, req *r, lh_finish finish, lh_err_code err, const char *msg)
{
    if (r->a.kind == LH_REQ_GENERATE) {
        finish_generate(s, r, finish, err, msg);
        return;
    }
    if (finish == LH_FINISH_CANCELLED) {
        err = LH_ERR_INTERNAL;
        msg = "request cancelled";
    }
    emit_error(s, r, err, msg);
    lh_log_info("request %llu.%llu uid %u: %s, finish %s: %s", (unsigned long long)r->owner,
                (unsigned long long)r->id, (unsigned)r->a.uid, kind_name(r->a.kind),
                finish_name(finish), msg);
}

static void req_free(req *r)
{
    if (!r)
        return;
    lh_sched_args_deinit(&r->a);
    lh_gen_free(r->gen);
    free(r->prompt);
    free(r->lp);
    free(r);
}

/* ---- slots --------------------------------------------------------------------------------- */

static int slot_create(lh_sched *s, slot *sl, lh_attn_mode attn, size_t chunk, size_t window,
                       lh_score_mode score, size_t recent)
{
    lh_ctx_params p = s->cfg.ctx;
    p.attn = attn;
    p.chunk = chunk;
    p.window = window;
    p.score = score;
    p.recent = recent;
    lh_ctx_free(sl->ctx);
    sl->ctx = NULL;
    int rc = lh_ctx_new(&sl->ctx, s->model, &p);
    if (rc != 0)
        return rc;
    const lh_ctx_params *rp = lh_ctx_params_get(sl->ctx);
    if (!sl->logits || rp->n_batch > sl->n_batch) {
        free(sl->logits);
        sl->logits = malloc(rp->n_batch * s->n_vocab * sizeof *sl->logits);
        if (!sl->logits) {
            lh_ctx_free(sl->ctx);
            sl->ctx = NULL;
            return -ENOMEM;
        }
        sl->n_batch = rp->n_batch;
    }
    sl->attn = attn;
    sl->chunk = chunk;
    sl->window = window;
    sl->score = score;
    sl->recent = recent;
    return 0;
}

static int slot_matches(const slot *sl, lh_attn_mode attn, size_t chunk, size_t window,
                        lh_score_mode score, size_t recent)
{
    if (!sl->ctx || sl->attn != attn)
        return 0;
    return attn == LH_ATTN_FULL || (sl->chunk == chunk && sl->window == window &&
                                    sl->score == score && sl->recent == recent);
}

static size_t common_prefix(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    size_t n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

/* ---- the steps ----------------------------------------------------------------------------- */

/* The refusal of a prompt of n tokens over the limit: its length, the limit, the flag that
 * raises it. */
static void prompt_limit_msg(const lh_sched *s, size_t n, char *msg, size_t msg_size)
{
    size_t limit = s->cfg.max_prompt_tokens, n_ctx = s->defaults.n_ctx;
    if (limit + 1 < n_ctx)
        snprintf(msg, msg_size, "the prompt has %zu tokens; this daemon takes at most %zu "
                 "(--max-prompt-tokens; its context holds %zu)", n, limit, n_ctx);
    else
        snprintf(msg, msg_size, "the prompt has %zu tokens; this daemon takes at most %zu, its "
                 "context of %zu less one; start longheadsd with a larger -c/--ctx-size (and "
                 "--max-memory if the budget limits it)", n, limit, n_ctx);
}

/* Tokenizes the prompt (generate, score).  Returns 0 or sets *errp/msg. */
/* text (NULL: "") to tokens in *idsp, malloc'd (the caller frees it, also on failure): sized to
 * the text (every token covers at least one byte, plus BOS and the dummy-prefix space, plus one to
 * tell "more than max" apart), never more than max + 3, grown once when special tokens (which
 * restart SentencePiece's dummy prefix) need more than one token per byte.  Returns
 * lh_tok_encode's result (LH_E_LIMIT with *np the count needed when it is over max) or -ENOMEM. */
static int encode_sized(const lh_tok *tok, const char *text, size_t len, int flags, size_t max,
                        int32_t **idsp, size_t *np)
{
    size_t cap = (len < max ? len : max) + 3;
    int32_t *ids = malloc(cap * sizeof *ids);
    *idsp = ids;
    *np = 0;
    if (!ids)
        return -ENOMEM;
    if (!text)
        text = "";
    int rc = lh_tok_encode(tok, text, len, flags, ids, cap, np);
    if (rc == LH_E_LIMIT && *np <= max) {
        int32_t *more = realloc(ids, *np * sizeof *more);
        if (!more)
            return -ENOMEM;
        *idsp = more;
        rc = lh_tok_encode(tok, text, len, flags, more, *np, np);
    }
    return rc;
}

static int prepare_prompt(lh_sched *s, req *r, char *msg, size_t msg_size, lh_err_code *errp)
{
    size_t limit = s->cfg.max_prompt_tokens;
    if (r->a.n_msgs && render_chat(s, &r->a) != 0) {
        snprintf(msg, msg_size, "out of memory rendering the conversation");
        *errp = LH_ERR_INTERNAL;
        return -1;
    }
    if (r->a.n_tokens) {
        r->prompt = r->a.tokens;
        r->n_prompt = r->a.n_tokens;
        r->a.tokens = NULL;
        r->a.n_tokens = 0;
        for (size_t i = 0; i < r->n_prompt; i++) {
            if (r->prompt[i] < 0 || (size_t)r->prompt[i] >= s->n_vocab) {
                snprintf(msg, msg_size, "prompt token %zu is %d, outside the vocabulary [0, %zu)",
                         i, r->prompt[i], s->n_vocab);
                *errp = LH_ERR_INVALID_ARGUMENT;
                return -1;
            }
        }
    } else {
        int flags = r->a.kind == LH_REQ_SCORE || lh_tok_add_bos(s->tok) ? LH_TOK_BOS : 0;
        /* a rendered conversation: the template's markers (<|im_start|>, [INST], ...) are
         * control tokens of the model, not text (the user's own text is not protected from
         * this, as in llama.cpp's chat) */
        if (r->a.n_msgs || r->a.special)
            flags |= LH_TOK_SPECIAL;
        size_t n = 0;
        int rc = encode_sized(s->tok, r->a.text, r->a.text_len, flags, limit, &r->prompt, &n);
        if (rc == -ENOMEM) {
            snprintf(msg, msg_size, "out of memory tokenizing the prompt");
            *errp = LH_ERR_INTERNAL;
            return -1;
        }
        if (rc == LH_E_LIMIT) {
            prompt_limit_msg(s, n, msg, msg_size);
            *errp = LH_ERR_LIMIT;
            return -1;
        }
        if (rc != 0) {
            snprintf(msg, msg_size, "tokenizing the prompt failed (%d)", rc);
            *errp = LH_ERR_INTERNAL;
            return -1;
        }
        r->n_prompt = n;
    }
    if (r->n_prompt == 0) {
        /* an empty prompt is just BOS: generation needs a token to start from */
        r->prompt[0] = lh_tok_bos(s->tok);
        r->n_prompt = 1;
    }
    if (r->n_prompt > limit) {
        prompt_limit_msg(s, r->n_prompt, msg, msg_size);
        *errp = LH_ERR_LIMIT;
        return -1;
    }
    return 0;
}

/* Chooses and prepares a free slot for r.  Runs unlocked: only the compute thread assigns and
 * releases slots, so the free ones cannot change under it.  Returns the slot or NULL (msg set). */
static slot *pick_slot(lh_sched *s, req *r, char *msg, size_t msg_size, lh_err_code *errp)
{
    lh_attn_mode attn = r->a.attn < 0 ? s->cfg.ctx.attn : (lh_attn_mode)r->a.attn;
    size_t chunk = r->a.chunk ? r->a.chunk : s->cfg.ctx.chunk;
    size_t window = r->a.window ? r->a.window : s->cfg.ctx.window;
    lh_score_mode score = r->a.score < 0 ? s->cfg.ctx.score : (lh_score_mode)r->a.score;
    size_t recent = r->a.recent ? r->a.recent : s->cfg.ctx.recent;
    slot *best = NULL, *lru = NULL;
    size_t best_lcp = 0;
    for (size_t i = 0; i < s->cfg.n_slots; i++) {
        slot *sl = &s->slots[i];
        if (sl->busy)
            continue;
        if (!lru || sl->last_used < lru->last_used)
            lru = sl;
        if (!slot_matches(sl, attn, chunk, window, score, recent))
            continue;
        size_t lcp = common_prefix(lh_ctx_tokens(sl->ctx), lh_ctx_n_past(sl->ctx), r->prompt,
                                   r->n_prompt);
        if (!best || lcp > best_lcp) {
            best = sl;
            best_lcp = lcp;
        }
    }
    if (best)
        return best;
    if (!lru) {
        snprintf(msg, msg_size, "no free slot");
        *errp = LH_ERR_INTERNAL;
        return NULL;
    }
    int rc = slot_create(s, lru, attn, chunk, window, score, recent);
    if (rc != 0) {
        snprintf(msg, msg_size, "cannot create a context with attention %s, chunk %zu, window "
                 "%zu, recent %zu (%s); check the values against `longheads info`",
                 attn == LH_ATTN_FULL ? "full" : "longheads", chunk, window, recent,
                 rc == -EINVAL ? "invalid parameters" : "out of memory");
        *errp = rc == -EINVAL ? LH_ERR_INVALID_ARGUMENT : LH_ERR_INTERNAL;
        /* put the slot back to the defaults so that later requests find it usable */
        if (slot_create(s, lru, s->cfg.ctx.attn, s->cfg.ctx.chunk, s->cfg.ctx.window,
                        s->cfg.ctx.score, s->cfg.ctx.recent) != 0)
            lh_log_error("slot could not be recreated with the default parameters; it stays "
                         "unusable until the next request recreates it");
        return NULL;
    }
    lh_log_info("slot %zu recreated: attention %s, chunk %zu, window %zu, score %s, recent %zu",
                (size_t)(lru - s->slots), attn == LH_ATTN_FULL ? "full" : "longheads", chunk,
                window, score == LH_SCORE_BOUND ? "bound" : "rep",
                lh_ctx_params_get(lru->ctx)->recent);
    return lru;
}

/* Quick jobs that need no slot (tokenize, detokenize): emits the reply. */
static void run_quick(lh_sched *s, req *r)
{
    char msg[256];
    if (r->a.kind == LH_REQ_TOKENIZE) {
        size_t n = 0;
        int flags = (r->a.add_bos && lh_tok_add_bos(s->tok) ? LH_TOK_BOS : 0) |
                    (r->a.special ? LH_TOK_SPECIAL : 0);
        int32_t *ids;
        int rc = encode_sized(s->tok, r->a.text, r->a.text_len, flags, SIZE_MAX, &ids, &n);
        if (rc != 0) {
            if (rc == -ENOMEM)
                snprintf(msg, sizeof msg, "out of memory tokenizing %zu bytes; send the text in "
                         "smaller pieces", r->a.text_len);
            else
                snprintf(msg, sizeof msg, "tokenize failed (%d)", rc);
            lh_log_warn("request %llu.%llu: %s", (unsigned long long)r->owner,
                        (unsigned long long)r->id, msg);
            emit_error(s, r, rc == -ENOMEM ? LH_ERR_LIMIT : LH_ERR_INTERNAL, msg);
        } else {
            lh_sched_event ev = {.kind = LH_EV_TOKENS, .owner = r->owner, .id = r->id,
                                 .tokens = ids, .n_tokens = n};
            s->emit(s->ud, &ev);
        }
        free(ids);
        return;
    }
    /* detokenize */
    for (size_t i = 0; i < r->a.n_tokens; i++) {
        if (r->a.tokens[i] < 0 || (size_t)r->a.tokens[i] >= s->n_vocab) {
            snprintf(msg, sizeof msg, "token %zu is %d, outside the vocabulary [0, %zu)", i,
                     r->a.tokens[i], s->n_vocab);
            emit_error(s, r, LH_ERR_INVALID_ARGUMENT, msg);
            return;
        }
    }
    size_t len = 0, cap = 256;
    char *buf = NULL;
    int rc;
    for (;;) {
        free(buf);
        buf = malloc(cap);
        if (!buf) {
            rc = -ENOMEM;
            break;
        }
        rc = lh_tok_decode(s->tok, r->a.tokens, r->a.n_tokens, 0, buf, cap, &len);
        if (rc != LH_E_LIMIT || cap > len)
            break;
        cap = len + 1;
    }
    if (rc != 0) {
        emit_error(s, r, LH_ERR_INTERNAL, "detokenize failed");
    } else {
        lh_sched_event ev = {.kind = LH_EV_TEXT, .owner = r->owner, .id = r->id, .text = buf,
                             .text_len = len};
        s->emit(s->ud, &ev);
    }
    free(buf);
}

/* The smallest prefill slice: below it GEMMs turn into weight streaming (measured on
 * stories110M's shape, F32, noisy: 12 tok/s at 4 tokens a slice, 92 at 8, 529 at 64; 256 gives
 * 1.5-1.9x the speed of 64), and LongHeads past the window shares each selected chunk's reads
 * among the slice's queries (512, the engine's default batch: see lh_ctx_params_default).
 * Cancels and timeouts do not wait for a slice: lh_ctx_eval checks them between layers and
 * four times inside each. */
#define MIN_SLICE 512
static size_t min_slice(size_t n_batch) { return n_batch < MIN_SLICE ? n_batch : MIN_SLICE; }

/* Starts a generate/score request on its slot: the prompt cache, the generation loop.  0 or
 * error (msg, *errp set). */
static int start_on_slot(lh_sched *s, req *r, char *msg, size_t msg_size, lh_err_code *errp)
{
    lh_ctx *ctx = r->sl->ctx;
    size_t n_ctx = lh_ctx_params_get(ctx)->n_ctx;
    if (r->n_prompt >= n_ctx) {
        snprintf(msg, msg_size, "the prompt has %zu tokens but the context holds %zu (with room "
                 "for at least one generated token); shorten it or start the daemon with a "
                 "larger -c/--ctx-size", r->n_prompt, n_ctx);
        *errp = LH_ERR_LIMIT;
        return -1;
    }
    /* a cancel stops lh_ctx_eval between layers (prefill_abort), so slices are sized for
     * throughput: a batch of fewer than MIN_SLICE tokens reads every weight for little work */
    r->n_slice = min_slice(r->sl->n_batch);
    if (r->a.kind == LH_REQ_SCORE) {
        r->n_reused = r->n_done = lh_ctx_truncate(ctx, 0);
        r->lp = malloc((r->n_prompt > 1 ? r->n_prompt - 1 : 1) * sizeof *r->lp);
        if (!r->lp) {
            snprintf(msg, msg_size, "out of memory");
            *errp = LH_ERR_INTERNAL;
            return -1;
        }
        return 0;
    }
    /* generate: the engine's loop keeps the cached prefix (the prompt cache) and always
     * evaluates the last prompt token, whose logits give the first sample */
    const char **stop = calloc(r->a.n_stop ? r->a.n_stop : 1, sizeof *stop);
    if (!stop) {
        snprintf(msg, msg_size, "out of memory");
        *errp = LH_ERR_INTERNAL;
        return -1;
    }
    size_t n_stop = 0;
    for (size_t i = 0; i < r->a.n_stop; i++)
        if (r->a.stop[i] && r->a.stop[i][0])
            stop[n_stop++] = r->a.stop[i];
    lh_gen_params gp = {.max_tokens = r->a.max_tokens ? r->a.max_tokens
                                                      : s->cfg.max_tokens_default,
                        .stop = stop, .n_stop = n_stop, .sp = r->a.sp, .reuse = 1};
    if (s->pcache && r->n_prompt > s->cfg.cache_min_tokens) {
        /* the saved prefix, when it is longer than what the slot holds in memory */
        size_t lcp = common_prefix(lh_ctx_tokens(ctx), lh_ctx_n_past(ctx), r->prompt, r->n_prompt);
        size_t got = lh_pcache_load(s->pcache, ctx, r->prompt, r->n_prompt, lcp);
        if (got)
            lh_log_info("request %llu.%llu: %zu prompt tokens from the prompt cache",
                        (unsigned long long)r->owner, (unsigned long long)r->id, got);
    }
    int rc = lh_gen_new(&r->gen, ctx, s->tok, &gp, r->prompt, r->n_prompt);
    free(stop);
    if (rc != 0) {
        if (rc == -EINVAL)
            snprintf(msg, msg_size, "invalid sampling parameters (temperature >= 0, top-p in "
                     "(0, 1], min-p in [0, 1], repeat-penalty > 0)");
        else
            snprintf(msg, msg_size, "out of memory");
        *errp = rc == -EINVAL ? LH_ERR_INVALID_ARGUMENT : LH_ERR_INTERNAL;
        return -1;
    }
    return 0;
}

static void emit_progress(lh_sched *s, req *r, size_t n_done)
{
    lh_sched_event ev = {.kind = LH_EV_PROGRESS, .owner = r->owner, .id = r->id,
                         .n_done = n_done, .n_total = r->n_prompt};
    s->emit(s->ud, &ev);
}

static void score_slice(const lh_sched *s, req *r, const float *logits, size_t first, size_t n)
{
    for (size_t j = 0; j < n; j++) {
        size_t pos = first + j;
        if (pos + 1 >= r->n_prompt)
            break;
        double lp = lh_gen_logprob(logits + j * s->n_vocab, s->n_vocab, r->prompt[pos + 1]);
        r->lp[pos] = (float)lp;
        r->lp_total += lp;
    }
}

/* lh_ctx_eval's abort check during a prefill slice: the request was cancelled or timed out. */
static int prefill_abort(void *ud)
{
    req *r = ud;
    return atomic_load(&r->cancel) || (r->deadline && now_s() > r->deadline);
}

/* Adapts the prefill slice after one of n tokens took dt seconds so that one takes about
 * slice_ms: attention cost grows with the context, so later slices of a long prompt get
 * shorter. */
static void adapt_slice(const lh_sched *s, req *r, size_t n, double dt)
{
    double per = dt / (double)n, target = s->cfg.slice_ms * 1e-3;
    size_t want = per > 0 ? (size_t)(target / per) : r->sl->n_batch;
    if (want > 2 * n)
        want = 2 * n; /* grow at most 2x per slice: a misestimate costs one slice */
    if (want < min_slice(r->sl->n_batch))
        want = min_slice(r->sl->n_batch);
    if (want > r->sl->n_batch)
        want = r->sl->n_batch;
    r->n_slice = want;
}

/* One prefill slice of a Score request (all positions' logits).  1 when it finished. */
static int score_step(lh_sched *s, req *r, double t)
{
    lh_ctx *ctx = r->sl->ctx;
    size_t n = r->n_prompt - r->n_done;
    if (n > r->n_slice)
        n = r->n_slice;
    lh_ctx_set_abort(ctx, prefill_abort, r);
    int rc = lh_ctx_eval(ctx, r->prompt + r->n_done, n, r->sl->logits, 1);
    lh_ctx_set_abort(ctx, NULL, NULL);
    if (rc == LH_E_CANCELLED)
        return 0;   /* the next step finishes it (cancelled or timed out) */
    if (rc != 0) {
        finish_req(s, r, LH_FINISH_ERROR, rc == LH_E_LIMIT ? LH_ERR_LIMIT : LH_ERR_INTERNAL,
                   rc == LH_E_LIMIT ? "the context is full" : "evaluation failed");
        return 1;
    }
    score_slice(s, r, r->sl->logits, r->n_done, n);
    r->n_done += n;
    adapt_slice(s, r, n, now_s() - t);
    emit_progress(s, r, r->n_done);
    if (r->n_done < r->n_prompt)
        return 0;
    r->t_prefill = now_s();
    lh_sched_event ev = {.kind = LH_EV_SCORE, .owner = r->owner, .id = r->id,
                         .tokens = r->prompt, .n_tokens = r->n_prompt,
                         .logprobs = r->lp, .total = r->lp_total};
    s->emit(s->ud, &ev);
    lh_log_info("request %llu.%llu uid %u: score, %zu tokens, %.1f ms, logprob %.3f",
                (unsigned long long)r->owner, (unsigned long long)r->id,
                (unsigned)r->a.uid, r->n_prompt, (r->t_prefill - r->t_start) * 1e3,
                r->lp_total);
    return 1;
}

/* The client's message for a failed evaluation (the engine logged the details). */
static const char *eval_error(int rc)
{
    if (rc == -ENOSPC)
        return "the KV cache could not grow: no space left in --kv-dir (ENOSPC)";
    if (rc == -EFBIG)
        return "the KV cache could not grow: the file size limit (EFBIG)";
    if (rc == -ENOMEM)
        return "out of memory";
    return "evaluation failed";
}

/* After a generation ends, its prompt's state goes to the persistent prompt cache (the slot is
 * still the request's, so nothing runs on it meanwhile; the Final event has been sent). */
static void persist(lh_sched *s, req *r)
{
    if (!s->pcache || r->a.kind != LH_REQ_GENERATE || !r->gen || !r->sl || !r->sl->ctx ||
        r->n_prompt < s->cfg.cache_min_tokens || lh_gen_n_done(r->gen) < r->n_prompt)
        return;
    lh_pcache_save(s->pcache, r->sl->ctx, r->n_prompt);
}

/* One step of an active request: a prefill slice or one decoded token.  Returns 1 when it
 * finished (its terminal event emitted). */
static int step(lh_sched *s, req *r)
{
    lh_ctx *ctx = r->sl->ctx;
    int c = atomic_load(&r->cancel);
    double t = now_s();
    if (c) {
        finish_req(s, r, LH_FINISH_CANCELLED, LH_ERR_NONE, NULL);
        return 1;
    }
    if (r->deadline && t > r->deadline) {
        finish_req(s, r, LH_FINISH_ERROR, LH_ERR_TIMEOUT,
                   "the request exceeded its timeout; raise it (timeout) or shorten the prompt");
        return 1;
    }
    if (r->a.kind == LH_REQ_SCORE)
        return score_step(s, r, t);
    size_t n_before = lh_gen_n_done(r->gen);
    if (n_before < r->n_prompt) {
        int done = 0;
        lh_ctx_set_abort(ctx, prefill_abort, r);
        int rc = lh_gen_prefill(r->gen, r->n_slice, &done);
        lh_ctx_set_abort(ctx, NULL, NULL);
        if (rc == LH_E_CANCELLED)
            return 0;   /* the next step finishes it (cancelled or timed out) */
        if (rc != 0) {
            finish_req(s, r, LH_FINISH_ERROR, rc == LH_E_LIMIT ? LH_ERR_LIMIT : LH_ERR_INTERNAL,
                       rc == LH_E_LIMIT ? "the context is full" : eval_error(rc));
            return 1;
        }
        size_t n_after = lh_gen_n_done(r->gen);
        adapt_slice(s, r, n_after - n_before, now_s() - t);
        emit_progress(s, r, n_after);
        if (done)
            r->t_prefill = now_s();
        return 0;
    }
    /* decode: the engine takes the sampled token, hands out the text that may be shown,
     * evaluates the token and samples the next */
    int32_t tok;
    const char *text;
    size_t len;
    lh_gen_end end;
    int rc = lh_gen_step(r->gen, &tok, &text, &len, &end);
    if (tok >= 0) { /* taken (also when evaluating it then failed) */
        lh_sched_event ev = {.kind = LH_EV_TOKEN, .owner = r->owner, .id = r->id, .token = tok,
                             .text = text, .text_len = len};
        s->emit(s->ud, &ev);
    }
    if (rc != 0) {
        finish_generate(s, r, LH_FINISH_ERROR, LH_ERR_INTERNAL,
                        rc == -ENOMEM ? "out of memory" : eval_error(rc));
        return 1;
    }
    switch (end) {
    case LH_GEN_MORE: return 0;
    case LH_GEN_EOS: finish_generate(s, r, LH_FINISH_EOS, LH_ERR_NONE, NULL); return 1;
    case LH_GEN_STOP: finish_generate(s, r, LH_FINISH_STOP, LH_ERR_NONE, NULL); return 1;
    case LH_GEN_LENGTH: finish_generate(s, r, LH_FINISH_LENGTH, LH_ERR_NONE, NULL); return 1;
    }
    return 0;
}

/* ---- the compute thread -------------------------------------------------------------------- */

static void list_remove(req **head, req *r)
{
    for (req **pp = head; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            r->next = NULL;
            return;
        }
}

/* Under lock (and from the compute thread, which owns the contexts): what the slot holds, for
 * lh_sched_get_slots. */
static void slot_snapshot(slot *sl)
{
    lh_sched_slot_status *st = &sl->st;
    if (!sl->ctx) {
        memset(st, 0, sizeof *st);
        return;
    }
    const lh_ctx_params *p = lh_ctx_params_get(sl->ctx);
    st->n_cached = lh_ctx_n_past(sl->ctx);
    st->n_ctx = p->n_ctx;
    st->attn = p->attn;
    st->chunk = p->attn == LH_ATTN_LONGHEADS ? p->chunk : 0;
    st->window = p->attn == LH_ATTN_LONGHEADS ? p->window : 0;
    st->score = p->score;
    st->recent = p->attn == LH_ATTN_LONGHEADS ? p->recent : 0;
    st->kv_bytes = (size_t)((double)st->n_cached * ((double)lh_ctx_kv_bytes_per_token(sl->ctx) +
                                                    lh_ctx_lh_bytes_per_token(sl->ctx)));
    st->kv_disk_bytes = p->kv_dir ? st->n_cached * lh_ctx_kv_bytes_per_token(sl->ctx) : 0;
}

/* Under lock: a request ends; account it.  The caller frees it. */
static void retire(lh_sched *s, req *r)
{
    owner_rec *o = find_owner(s, r->owner, 0);
    if (o) {
        o->n_inflight--;
        drop_owner_if_idle(s, o);
    }
    if (r->sl) {
        r->sl->busy = NULL;
        r->sl->last_used = ++s->use_clock;
        r->sl->t_used = now_s();
        slot_snapshot(r->sl);
    }
    s->n_served++;
}

static int has_free_slot(const lh_sched *s)
{
    for (size_t i = 0; i < s->cfg.n_slots; i++)
        if (!s->slots[i].busy)
            return 1;
    return 0;
}

/* Under lock: the next queued request by tag of one kind (quick: tokenize/detokenize, served by
 * the prep thread; else generate/score, which need a free slot).  Cancelled or expired ones are
 * returned first so they end promptly. */
static req *next_pending(lh_sched *s, double t, int quick)
{
    req *best = NULL;
    int free_slot = quick || has_free_slot(s);
    for (req *r = s->pending; r; r = r->next) {
        if (is_quick(r) != quick)
            continue;
        if (atomic_load(&r->cancel) || (r->deadline && t > r->deadline))
            return r;
        if (!free_slot)
            continue;
        if (!best || r->tag < best->tag || (r->tag == best->tag && r->seq < best->seq))
            best = r;
    }
    return best;
}

static int owner_throttled(lh_sched *s, uint64_t owner)
{
    owner_rec *o = find_owner(s, owner, 0);
    return o && o->throttled;
}

/* Under lock: r leaves the queue and becomes visible as admitting. */
static void admit(lh_sched *s, req *r)
{
    list_remove(&s->pending, r);
    s->n_pending--;
    r->next = s->admitting;
    s->admitting = r;
    s->n_admitting++;
    if (r->tag > s->vclock)
        s->vclock = r->tag;
}

static void unadmit(lh_sched *s, req *r)
{
    list_remove(&s->admitting, r);
    s->n_admitting--;
}

/* Unlocked, before a request touches the model: is the mapped file still the one we loaded?
 * (Only when it is mapped: weights read into memory need no file.)
 * Replaced by rename or deleted: the old mapping stays valid, serve on (warn once).  Changed in
 * place (same inode, other size or mtime): the mapping may fault (SIGBUS) or hold other bytes:
 * refuse everything from now on; the server sees lh_sched_stats.fatal and stops.  Returns 0 or
 * -1 with msg set. */
static int check_model_file(lh_sched *s, char *msg, size_t msg_size)
{
    if (!s->model_st_ok)
        return 0;
    pthread_mutex_lock(&s->lock);
    int fatal = s->fatal;
    if (fatal)
        snprintf(msg, msg_size, "%s", s->fatal_msg);
    pthread_mutex_unlock(&s->lock);
    if (fatal)
        return -1;
    const char *path = lh_model_path(s->model);
    struct stat st;
    if (stat(path, &st) != 0 || st.st_dev != s->model_st.st_dev ||
        st.st_ino != s->model_st.st_ino) {
        if (!atomic_exchange(&s->model_warned, 1)) {
            lh_log_warn("model file %s was replaced or removed; serving the copy loaded at start "
                        "(restart the daemon to load the new file)", path);
        }
        return 0;
    }
    if (st.st_size == s->model_st.st_size && st.st_mtim.tv_sec == s->model_st.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == s->model_st.st_mtim.tv_nsec)
        return 0;
    snprintf(msg, msg_size, "the model file %s changed on disk while loaded (size %lld, was %lld); "
             "the daemon stops: restart it to load the new file", path, (long long)st.st_size,
             (long long)s->model_st.st_size);
    lh_log_error("%s", msg);
    pthread_mutex_lock(&s->lock);
    s->fatal = 1;
    s->shutting_down = 1;
    snprintf(s->fatal_msg, sizeof s->fatal_msg, "%s", msg);
    pthread_mutex_unlock(&s->lock);
    return -1;
}

/* Under lock, idle: give the memory of slots unused for slot_idle_s back to the system (their
 * prompt cache is lost; the next request recreates the context). */
static void release_idle_slots(lh_sched *s, double t)
{
    if (s->cfg.slot_idle_s <= 0)
        return;
    int freed = 0;
    for (size_t i = 0; i < s->cfg.n_slots; i++) {
        slot *sl = &s->slots[i];
        if (sl->busy || !sl->ctx || !sl->t_used || t - sl->t_used < s->cfg.slot_idle_s)
            continue;
        lh_ctx_free(sl->ctx);
        sl->ctx = NULL;
        sl->t_used = 0;
        freed = 1;
        lh_log_info("slot %zu idle for %.0f s: its KV cache was released", i,
                    s->cfg.slot_idle_s);
    }
    if (freed)
        malloc_trim(0); /* free pages inside the heap, not only at its top */
}

static void heartbeat(lh_sched *s) { atomic_store(&s->heartbeat_ms, now_ms()); }

static void cond_wait_ms(pthread_cond_t *c, pthread_mutex_t *m, long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += ms * 1000000L;
    while (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(c, m, &ts);
}

/* The prep thread: tokenize and detokenize requests, off the compute thread so that a 16 MB
 * Tokenize never delays a generation, and one at a time so that their scratch memory is bounded
 * by one request. */
static void *prep_main(void *arg)
{
    lh_sched *s = arg;
    char msg[512];
    pthread_mutex_lock(&s->lock);
    for (;;) {
        double t = now_s();
        req *r = next_pending(s, t, 1);
        if (!r) {
            if (s->stop)
                break;
            cond_wait_ms(&s->prep_cond, &s->lock, 1000);
            continue;
        }
        admit(s, r);
        pthread_mutex_unlock(&s->lock);
        r->t_start = now_s();
        if (atomic_load(&r->cancel))
            finish_req(s, r, LH_FINISH_CANCELLED, LH_ERR_NONE, NULL);
        else if (r->deadline && r->t_start > r->deadline)
            finish_req(s, r, LH_FINISH_ERROR, LH_ERR_TIMEOUT,
                       "the request timed out while queued; the daemon is busy");
        else if (check_model_file(s, msg, sizeof msg) != 0)
            finish_req(s, r, LH_FINISH_ERROR, LH_ERR_INTERNAL, msg);
        else
            run_quick(s, r);
        pthread_mutex_lock(&s->lock);
        unadmit(s, r);
        retire(s, r);
        pthread_mutex_unlock(&s->lock);
        req_free(r);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void *compute_main(void *arg)
{
    lh_sched *s = arg;
#ifdef _OPENMP
    if (s->cfg.n_threads > 0)
        omp_set_num_threads(s->cfg.n_threads);
#endif
    char msg[512];
    pthread_mutex_lock(&s->lock);
    for (;;) {
        double t = now_s();
        heartbeat(s);
        req *r = next_pending(s, t, 0);
        if (!r && s->stop && !s->active)
            break;
        if (r) {
            admit(s, r);
            pthread_mutex_unlock(&s->lock);
            int done = 1;
            r->t_start = now_s();
            lh_err_code err = LH_ERR_NONE;
            if (atomic_load(&r->cancel) || (r->deadline && r->t_start > r->deadline)) {
                /* its Final still reports the prompt's size (bounded: checked at submit) */
                if (!r->prompt)
                    prepare_prompt(s, r, msg, sizeof msg, &err);
                if (atomic_load(&r->cancel))
                    finish_req(s, r, LH_FINISH_CANCELLED, LH_ERR_NONE, NULL);
                else
                    finish_req(s, r, LH_FINISH_ERROR, LH_ERR_TIMEOUT,
                               "the request timed out while queued; the daemon is busy");
            } else if (check_model_file(s, msg, sizeof msg) != 0) {
                finish_req(s, r, LH_FINISH_ERROR, LH_ERR_INTERNAL, msg);
            } else if (prepare_prompt(s, r, msg, sizeof msg, &err) != 0 ||
                       !(r->sl = pick_slot(s, r, msg, sizeof msg, &err))) {
                finish_req(s, r, LH_FINISH_ERROR, err, msg);
            } else {
                r->sl->busy = r;
                if (start_on_slot(s, r, msg, sizeof msg, &err) != 0) {
                    finish_req(s, r, LH_FINISH_ERROR, err, msg);
                } else {
                    done = 0;
                    emit_progress(s, r, r->gen ? lh_gen_n_done(r->gen) : r->n_done);
                }
            }
            pthread_mutex_lock(&s->lock);
            unadmit(s, r);
            if (done) {
                retire(s, r);
                pthread_mutex_unlock(&s->lock);
                req_free(r);
                pthread_mutex_lock(&s->lock);
            } else {
                /* a cancel that came while it was admitting is in r->cancel: step() sees it */
                r->active = 1;
                r->next = s->active;
                s->active = r;
                s->n_active++;
            }
            continue;
        }
        /* round-robin over the active requests that may run */
        req *pick = NULL;
        size_t i = 0, n = s->n_active;
        for (size_t k = 0; k < n && !pick; k++) {
            size_t want = (s->rr + k) % n;
            i = 0;
            for (req *a = s->active; a; a = a->next, i++) {
                if (i != want)
                    continue;
                if (atomic_load(&a->cancel) || (a->deadline && t > a->deadline) ||
                    !owner_throttled(s, a->owner))
                    pick = a;
                break;
            }
            if (pick)
                s->rr = want + 1;
        }
        if (!pick) {
            if (!s->active)
                release_idle_slots(s, t);
            cond_wait_ms(&s->cond, &s->lock, 100);
            continue;
        }
        pthread_mutex_unlock(&s->lock);
        int done = step(s, pick);
        if (done)
            persist(s, pick);
        pthread_mutex_lock(&s->lock);
        if (done) {
            list_remove(&s->active, pick);
            s->n_active--;
            retire(s, pick);
            pthread_mutex_unlock(&s->lock);
            req_free(pick);
            pthread_mutex_lock(&s->lock);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- public -------------------------------------------------------------------------------- */

int lh_sched_new(lh_sched **sp, const lh_model *m, const lh_sched_config *cfg,
                 lh_sched_emit_fn emit, void *ud)
{
    *sp = NULL;
    int rc = 0;
    lh_sched *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->model = m;
    s->tok = lh_model_tok(m);
    s->cfg = *cfg;
    if (!s->cfg.n_slots)
        s->cfg.n_slots = 1;
    if (s->cfg.slice_ms <= 0)
        s->cfg.slice_ms = 20;
    if (!s->cfg.max_tokens_default)
        s->cfg.max_tokens_default = 256;
    s->n_vocab = lh_model_hparams(m)->n_vocab;
    s->emit = emit;
    s->ud = ud;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    pthread_cond_init(&s->prep_cond, NULL);
    heartbeat(s);
    for (size_t id = 0; id < s->n_vocab; id++) {
        size_t len = 0;
        if (lh_tok_piece(s->tok, (int32_t)id, &len) && len > s->max_piece)
            s->max_piece = len;
    }
    if (s->max_piece < 4)
        s->max_piece = 4; /* byte fallback of a 4-byte character, at least */
    /* read into memory (--weights load, or auto), the file is never read again: a change to it
     * cannot reach what is served */
    if (!lh_model_weights_loaded(m) && stat(lh_model_path(m), &s->model_st) == 0)
        s->model_st_ok = 1;
#ifdef _OPENMP
    /* the contexts size their per-thread scratch (attention) from omp_get_max_threads() when
     * they are created, here on the caller's thread: give it the compute thread's count */
    if (s->cfg.n_threads > 0)
        omp_set_num_threads(s->cfg.n_threads);
#endif
    s->slots = calloc(s->cfg.n_slots, sizeof *s->slots);
    if (!s->slots) {
        rc = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < s->cfg.n_slots; i++) {
        rc = slot_create(s, &s->slots[i], s->cfg.ctx.attn, s->cfg.ctx.chunk, s->cfg.ctx.window,
                         s->cfg.ctx.score, s->cfg.ctx.recent);
        if (rc != 0)
            goto fail;
    }
    s->defaults = *lh_ctx_params_get(s->slots[0].ctx);
    if (s->cfg.cache_dir && s->cfg.cache_max_bytes &&
        (rc = lh_pcache_open(&s->pcache, s->cfg.cache_dir, m, s->cfg.cache_max_bytes)))
        goto fail;
    for (size_t i = 0; i < s->cfg.n_slots; i++)
        slot_snapshot(&s->slots[i]);
    find_chat_template(s);
    if (!s->cfg.max_prompt_tokens || s->cfg.max_prompt_tokens >= s->defaults.n_ctx)
        s->cfg.max_prompt_tokens = s->defaults.n_ctx - 1;
    rc = -pthread_create(&s->thread, NULL, compute_main, s);
    if (rc != 0)
        goto fail;
    s->thread_started = 1;
    rc = -pthread_create(&s->prep_thread, NULL, prep_main, s);
    if (rc != 0)
        goto fail;
    s->prep_started = 1;
    *sp = s;
    return 0;
fail:
    lh_sched_free(s);
    return rc;
}

void lh_sched_free(lh_sched *s)
{
    if (!s)
        return;
    if (s->thread_started || s->prep_started) {
        lh_sched_shutdown(s, 1);
        pthread_mutex_lock(&s->lock);
        s->stop = 1;
        pthread_cond_broadcast(&s->cond);
        pthread_cond_broadcast(&s->prep_cond);
        pthread_mutex_unlock(&s->lock);
        if (s->thread_started)
            pthread_join(s->thread, NULL);
        if (s->prep_started)
            pthread_join(s->prep_thread, NULL);
    }
    for (size_t i = 0; s->slots && i < s->cfg.n_slots; i++) {
        lh_ctx_free(s->slots[i].ctx);
        free(s->slots[i].logits);
    }
    free(s->slots);
    lh_pcache_close(s->pcache);
    free(s->owners);
    pthread_cond_destroy(&s->cond);
    pthread_cond_destroy(&s->prep_cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static int find_inflight(lh_sched *s, uint64_t owner, uint64_t id, req **rp)
{
    for (req *r = s->pending; r; r = r->next)
        if (r->owner == owner && r->id == id)
            return *rp = r, 1;
    for (req *r = s->admitting; r; r = r->next)
        if (r->owner == owner && r->id == id)
            return *rp = r, 1;
    for (req *r = s->active; r; r = r->next)
        if (r->owner == owner && r->id == id)
            return *rp = r, 1;
    return 0;
}

int lh_sched_submit(lh_sched *s, uint64_t owner, uint64_t id, lh_sched_args *a, char *err,
                    size_t err_size)
{
    int rc = LH_ERR_NONE;
    req *r = NULL;
    err[0] = 0;
    if (a->kind == LH_REQ_GENERATE || a->kind == LH_REQ_SCORE) {
        if (a->attn >= 0 && ((a->attn == LH_ATTN_FULL && !s->cfg.allow_full) ||
                             (a->attn == LH_ATTN_LONGHEADS && !s->cfg.allow_longheads))) {
            snprintf(err, err_size, "attention mode %s is not allowed by this daemon (allow-attn)",
                     a->attn == LH_ATTN_FULL ? "full" : "longheads");
            rc = LH_ERR_INVALID_ARGUMENT;
            goto out;
        }
        if (a->attn > LH_ATTN_LONGHEADS) {
            snprintf(err, err_size, "unknown attention mode %d", a->attn);
            rc = LH_ERR_INVALID_ARGUMENT;
            goto out;
        }
    }
    if (a->kind == LH_REQ_GENERATE) {
        const lh_sampler_params *p = &a->sp;
        if (!(p->temperature >= 0 && p->temperature <= 1000) || !(p->top_p > 0 && p->top_p <= 1) ||
            !(p->min_p >= 0 && p->min_p <= 1) || !(p->repeat_penalty > 0 && p->repeat_penalty < 1000) ||
            p->top_k < 0 || p->repeat_last_n < 0) {
            snprintf(err, err_size, "sampling options out of range: temperature in [0, 1000], "
                     "top-p in (0, 1], min-p in [0, 1], repeat-penalty in (0, 1000), top-k and "
                     "repeat-last-n >= 0");
            rc = LH_ERR_INVALID_ARGUMENT;
            goto out;
        }
        if (a->text_len / s->max_piece > s->cfg.max_prompt_tokens) {
            /* no token covers more than max_piece bytes: too long without tokenizing it (which
             * would hold the compute thread for as long as the text is big) */
            snprintf(err, err_size, "the prompt has %zu bytes, more than the daemon's limit of "
                     "%zu tokens can hold (max-prompt-tokens)", a->text_len,
                     s->cfg.max_prompt_tokens);
            rc = LH_ERR_LIMIT;
            goto out;
        }
        if (a->n_tokens > s->cfg.max_prompt_tokens) {
            prompt_limit_msg(s, a->n_tokens, err, err_size);
            rc = LH_ERR_LIMIT;
            goto out;
        }
    }
    r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, err_size, "out of memory");
        rc = LH_ERR_INTERNAL;
        goto out;
    }
    r->owner = owner;
    r->id = id;
    r->a = *a;
    memset(a, 0, sizeof *a);
    r->t_submit = now_s();
    double to = s->cfg.timeout_s;
    if (r->a.timeout_ms && (to <= 0 || r->a.timeout_ms * 1e-3 < to))
        to = r->a.timeout_ms * 1e-3;
    r->deadline = to > 0 ? r->t_submit + to : 0;
    pthread_mutex_lock(&s->lock);
    req *dup;
    owner_rec *o;
    if (s->fatal) {
        snprintf(err, err_size, "%s", s->fatal_msg);
        rc = LH_ERR_SHUTTING_DOWN;
    } else if (s->shutting_down) {
        snprintf(err, err_size, "the daemon is shutting down; retry when it is back");
        rc = LH_ERR_SHUTTING_DOWN;
    } else if (s->n_pending >= s->cfg.max_queued) {
        snprintf(err, err_size, "%zu requests are queued (max-queued); retry later", s->n_pending);
        rc = LH_ERR_BUSY;
    } else if (find_inflight(s, owner, id, &dup)) {
        snprintf(err, err_size, "request id %llu is already in flight on this connection",
                 (unsigned long long)id);
        rc = LH_ERR_DUPLICATE_ID;
    } else if (!(o = find_owner(s, owner, 1))) {
        snprintf(err, err_size, "out of memory");
        rc = LH_ERR_INTERNAL;
    } else if (o->n_inflight >= s->cfg.max_per_owner) {
        snprintf(err, err_size, "%zu requests in flight on this connection (max-per-connection); "
                 "wait for one to finish", o->n_inflight);
        rc = LH_ERR_BUSY;
    } else {
        o->n_inflight++;
        r->tag = (o->tag > s->vclock ? o->tag : s->vclock) + 1;
        o->tag = r->tag;
        r->seq = ++s->seq;
        /* append (FIFO among equal tags is decided by seq anyway) */
        r->next = s->pending;
        s->pending = r;
        s->n_pending++;
        pthread_cond_signal(is_quick(r) ? &s->prep_cond : &s->cond);
        r = NULL;
    }
    pthread_mutex_unlock(&s->lock);
out:
    if (r) {
        req_free(r);
    } else {
        lh_sched_args_deinit(a);
    }
    return rc;
}

static void set_cancel(req *r, int why)
{
    int expected = CANCEL_NONE;
    atomic_compare_exchange_strong(&r->cancel, &expected, why);
}

void lh_sched_cancel(lh_sched *s, uint64_t owner, uint64_t id)
{
    pthread_mutex_lock(&s->lock);
    req *r;
    if (find_inflight(s, owner, id, &r)) {
        set_cancel(r, CANCEL_CLIENT);
        pthread_cond_signal(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
}

void lh_sched_cancel_owner(lh_sched *s, uint64_t owner)
{
    pthread_mutex_lock(&s->lock);
    for (req *r = s->pending; r; r = r->next)
        if (r->owner == owner)
            set_cancel(r, CANCEL_DISCONNECT);
    for (req *r = s->admitting; r; r = r->next)
        if (r->owner == owner)
            set_cancel(r, CANCEL_DISCONNECT);
    for (req *r = s->active; r; r = r->next)
        if (r->owner == owner)
            set_cancel(r, CANCEL_DISCONNECT);
    owner_rec *o = find_owner(s, owner, 0);
    if (o) {
        o->throttled = 0; /* let its requests run to their cancellation */
        drop_owner_if_idle(s, o);
    }
    pthread_cond_signal(&s->cond);
    pthread_cond_signal(&s->prep_cond);
    pthread_mutex_unlock(&s->lock);
}

void lh_sched_set_throttled(lh_sched *s, uint64_t owner, int on)
{
    pthread_mutex_lock(&s->lock);
    owner_rec *o = find_owner(s, owner, on);
    if (o) {
        o->throttled = on;
        if (!on)
            drop_owner_if_idle(s, o);
    }
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

void lh_sched_shutdown(lh_sched *s, int cancel)
{
    pthread_mutex_lock(&s->lock);
    s->shutting_down = 1;
    if (cancel) {
        for (req *r = s->pending; r; r = r->next)
            set_cancel(r, CANCEL_SHUTDOWN);
        for (req *r = s->admitting; r; r = r->next)
            set_cancel(r, CANCEL_SHUTDOWN);
        for (req *r = s->active; r; r = r->next)
            set_cancel(r, CANCEL_SHUTDOWN);
        for (size_t i = 0; i < s->n_owners; i++)
            s->owners[i].throttled = 0;
    }
    pthread_cond_signal(&s->cond);
    pthread_cond_signal(&s->prep_cond);
    pthread_mutex_unlock(&s->lock);
}

size_t lh_sched_get_slots(lh_sched *s, lh_sched_slot_status *out, size_t cap)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->cfg.n_slots;
    for (size_t i = 0; i < n && i < cap; i++) {
        out[i] = s->slots[i].st;
        out[i].busy = s->slots[i].busy != NULL;
    }
    pthread_mutex_unlock(&s->lock);
    return n;
}

void lh_sched_get_stats(lh_sched *s, lh_sched_stats *st)
{
    pthread_mutex_lock(&s->lock);
    st->n_queued = s->n_pending;
    st->n_active = s->n_active;
    st->n_admitting = s->n_admitting;
    st->n_inflight = s->n_pending + s->n_admitting + s->n_active;
    st->n_served = s->n_served;
    st->fatal = s->fatal;
    st->heartbeat_age_s = (double)(now_ms() - atomic_load(&s->heartbeat_ms)) * 1e-3;
    pthread_mutex_unlock(&s->lock);
}
