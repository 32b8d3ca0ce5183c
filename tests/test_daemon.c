/* tests/test_daemon — the scheduler (daemon/scheduler.c) driven directly, with its emit callback
 * acting inside the windows that are hard to hit from a socket: a cancel, a disconnect and a
 * duplicate id that arrive while a request is being admitted (off the queue, not yet active),
 * the Final of a request cancelled while queued, and a model file changed in place. */
#include "test.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chat.h"
#include "model.h"
#include "scheduler.h"
#include "tokenizer.h"

enum { MAX_EV = 4096 };

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    lh_sched *s;
    /* what arrived */
    size_t n_final[16], n_error[16], n_tokens_ev[16], n_result[16];
    lh_sched_event last_final[16];
    char last_err[16][256];
    /* actions taken from inside the callback, on the first PROGRESS of act_id */
    uint64_t act_owner, act_id;
    int act_cancel, act_cancel_owner, act_dup, act_stall, acted;
    int dup_rc;
    char dup_msg[256];
} rec;

static void on_ev(void *ud, const lh_sched_event *ev)
{
    rec *r = ud;
    int act = 0;
    pthread_mutex_lock(&r->lock);
    size_t id = ev->id < 16 ? (size_t)ev->id : 15;
    switch (ev->kind) {
    case LH_EV_PROGRESS:
        act = !r->acted && ev->owner == r->act_owner && ev->id == r->act_id;
        if (act)
            r->acted = 1;
        break;
    case LH_EV_TOKEN: r->n_tokens_ev[id]++; break;
    case LH_EV_FINAL:
        r->n_final[id]++;
        r->last_final[id] = *ev;
        r->last_final[id].text = NULL;
        r->last_final[id].err_msg = NULL;
        snprintf(r->last_err[id], sizeof r->last_err[id], "%s", ev->err_msg ? ev->err_msg : "");
        break;
    case LH_EV_ERROR:
        r->n_error[id]++;
        snprintf(r->last_err[id], sizeof r->last_err[id], "%s", ev->err_msg ? ev->err_msg : "");
        break;
    default: r->n_result[id]++; break;
    }
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    if (!act)
        return;
    /* the request is off the queue and not yet active: exactly the window of the lost cancel */
    if (r->act_dup) {
        lh_sched_args a;
        memset(&a, 0, sizeof a);
        a.kind = LH_REQ_GENERATE;
        a.attn = -1;
        lh_sampler_params_default(&a.sp);
        a.sp.temperature = 0;
        a.max_tokens = 4;
        r->dup_rc = lh_sched_submit(r->s, ev->owner, ev->id, &a, r->dup_msg, sizeof r->dup_msg);
    }
    if (r->act_cancel)
        lh_sched_cancel(r->s, ev->owner, ev->id);
    if (r->act_cancel_owner)
        lh_sched_cancel_owner(r->s, ev->owner);
    if (r->act_stall)
        usleep(1200000); /* the compute thread is stuck (as in a hung forward pass) */
}

/* Waits until request id has n terminal events (Final, Error or a result). */
static int wait_done(rec *r, uint64_t id, size_t n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 30;
    pthread_mutex_lock(&r->lock);
    int ok = 1;
    while (r->n_final[id] + r->n_error[id] + r->n_result[id] < n)
        if (pthread_cond_timedwait(&r->cond, &r->lock, &ts) == ETIMEDOUT) {
            ok = 0;
            break;
        }
    pthread_mutex_unlock(&r->lock);
    return ok;
}

static int submit_gen(lh_sched *s, uint64_t owner, uint64_t id, const char *prompt,
                      uint32_t max_tokens)
{
    lh_sched_args a;
    memset(&a, 0, sizeof a);
    a.kind = LH_REQ_GENERATE;
    a.attn = -1;
    a.text = strdup(prompt);
    a.text_len = strlen(prompt);
    lh_sampler_params_default(&a.sp);
    a.sp.temperature = 0;
    a.max_tokens = max_tokens;
    char msg[256];
    return lh_sched_submit(s, owner, id, &a, msg, sizeof msg);
}

static lh_model *g_model;

static int suite_init(void) { return lh_model_open(&g_model, lh_test_model_path()) != 0; }
static int suite_clean(void)
{
    lh_model_close(g_model);
    return 0;
}

static lh_sched *new_sched(rec *r, const lh_model *m, size_t n_slots)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    lh_sched_config c;
    lh_sched_config_default(&c);
    c.n_slots = n_slots;
    c.ctx.n_ctx = 1024;
    lh_sched *s = NULL;
    if (lh_sched_new(&s, m, &c, on_ev, r) != 0)
        return NULL;
    r->s = s;
    return s;
}

static void free_sched(rec *r)
{
    lh_sched_free(r->s);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
}

static void test_cancel_while_admitting(void)
{
    static rec r;
    lh_sched *s = new_sched(&r, g_model, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    r.act_owner = 1;
    r.act_id = 3;
    r.act_cancel = 1;
    r.act_dup = 1;
    CU_ASSERT_EQUAL(submit_gen(s, 1, 3, "Once upon a time", 900), LH_ERR_NONE);
    CU_ASSERT(wait_done(&r, 3, 1));
    usleep(50000); /* a wrongly accepted duplicate would end here too */
    pthread_mutex_lock(&r.lock);
    CU_ASSERT(r.acted);
    /* the duplicate was seen while admitting, and refused */
    CU_ASSERT_EQUAL(r.dup_rc, LH_ERR_DUPLICATE_ID);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.dup_msg, "3"));
    /* the cancel was not lost: one Final, cancelled, long before 900 tokens */
    CU_ASSERT_EQUAL(r.n_final[3], 1);
    CU_ASSERT_EQUAL(r.last_final[3].finish, LH_FINISH_CANCELLED);
    CU_ASSERT(r.last_final[3].n_generated < 900);
    CU_ASSERT_EQUAL(r.last_final[3].n_prompt, 5);
    pthread_mutex_unlock(&r.lock);
    free_sched(&r);
}

static void test_disconnect_while_admitting(void)
{
    static rec r;
    lh_sched *s = new_sched(&r, g_model, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    r.act_owner = 2;
    r.act_id = 4;
    r.act_cancel_owner = 1;
    CU_ASSERT_EQUAL(submit_gen(s, 2, 4, "Once upon a time", 900), LH_ERR_NONE);
    CU_ASSERT(wait_done(&r, 4, 1));
    pthread_mutex_lock(&r.lock);
    CU_ASSERT(r.acted);
    CU_ASSERT_EQUAL(r.n_final[4], 1);
    CU_ASSERT_EQUAL(r.last_final[4].finish, LH_FINISH_CANCELLED);
    CU_ASSERT(r.last_final[4].n_generated < 900);
    pthread_mutex_unlock(&r.lock);
    lh_sched_stats st;
    for (int i = 0; i < 1000; i++) { /* retired just after its Final */
        lh_sched_get_stats(s, &st);
        if (st.n_inflight == 0)
            break;
        usleep(1000);
    }
    CU_ASSERT_EQUAL(st.n_inflight, 0);
    free_sched(&r);
}

static void test_cancel_queued_final(void)
{
    static rec r;
    lh_sched *s = new_sched(&r, g_model, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    /* owner 1 holds the only slot, paused (as a slow reader is), so owner 2's request queues */
    lh_sched_set_throttled(s, 1, 1);
    CU_ASSERT_EQUAL(submit_gen(s, 1, 1, "", 500), LH_ERR_NONE);
    lh_sched_stats st;
    for (int i = 0; i < 2000; i++) {
        lh_sched_get_stats(s, &st);
        if (st.n_active == 1)
            break;
        usleep(1000);
    }
    CU_ASSERT_EQUAL(st.n_active, 1);
    CU_ASSERT_EQUAL(submit_gen(s, 2, 2, "Once upon a time", 10), LH_ERR_NONE);
    usleep(20000);
    lh_sched_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.n_queued, 1);
    lh_sched_cancel(s, 2, 2);
    CU_ASSERT(wait_done(&r, 2, 1));
    pthread_mutex_lock(&r.lock);
    CU_ASSERT_EQUAL(r.last_final[2].finish, LH_FINISH_CANCELLED);
    /* BOS + "Once upon a time" (4 tokens): reported although it never ran */
    CU_ASSERT_EQUAL(r.last_final[2].n_prompt, 5);
    CU_ASSERT_EQUAL(r.last_final[2].n_generated, 0);
    pthread_mutex_unlock(&r.lock);
    /* a request timeout: queued behind the paused one, it expires there */
    lh_sched_args a;
    memset(&a, 0, sizeof a);
    a.kind = LH_REQ_GENERATE;
    a.attn = -1;
    lh_sampler_params_default(&a.sp);
    a.timeout_ms = 50;
    char msg[256];
    CU_ASSERT_EQUAL(lh_sched_submit(s, 3, 6, &a, msg, sizeof msg), LH_ERR_NONE);
    CU_ASSERT(wait_done(&r, 6, 1));
    pthread_mutex_lock(&r.lock);
    CU_ASSERT_EQUAL(r.last_final[6].finish, LH_FINISH_ERROR);
    CU_ASSERT_EQUAL(r.last_final[6].err, LH_ERR_TIMEOUT);
    CU_ASSERT(r.last_final[6].queue_ms >= 50);
    pthread_mutex_unlock(&r.lock);
    lh_sched_cancel(s, 1, 1);
    lh_sched_set_throttled(s, 1, 0);
    CU_ASSERT(wait_done(&r, 1, 1));
    free_sched(&r);
}

static void test_limits_at_submit(void)
{
    static rec r;
    lh_sched *s = new_sched(&r, g_model, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    /* a prompt far larger than max-prompt-tokens can hold is refused without tokenizing it */
    size_t big = 8u << 20;
    lh_sched_args a;
    memset(&a, 0, sizeof a);
    a.kind = LH_REQ_GENERATE;
    a.attn = -1;
    a.text = malloc(big + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a.text);
    memset(a.text, 'a', big);
    a.text[big] = 0;
    a.text_len = big;
    lh_sampler_params_default(&a.sp);
    char msg[256];
    CU_ASSERT_EQUAL(lh_sched_submit(s, 1, 1, &a, msg, sizeof msg), LH_ERR_LIMIT);
    /* refused on its byte count (the message the tokenized count would give names tokens; a
     * timing bound here failed under the sanitizers on a loaded machine) */
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "the prompt has 8388608 bytes"));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "max-prompt-tokens"));
    /* duplicate ids while queued/active; the live request is unaffected */
    lh_sched_set_throttled(s, 1, 1);
    CU_ASSERT_EQUAL(submit_gen(s, 1, 5, "", 50), LH_ERR_NONE);
    CU_ASSERT_EQUAL(submit_gen(s, 1, 5, "", 50), LH_ERR_DUPLICATE_ID);
    lh_sched_set_throttled(s, 1, 0);
    CU_ASSERT(wait_done(&r, 5, 1));
    pthread_mutex_lock(&r.lock);
    CU_ASSERT_EQUAL(r.n_final[5], 1);
    CU_ASSERT_EQUAL(r.last_final[5].finish, LH_FINISH_LENGTH);
    CU_ASSERT_EQUAL(r.last_final[5].n_generated, 50);
    pthread_mutex_unlock(&r.lock);
    free_sched(&r);
}

static void test_model_changed_in_place(void)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/lh-sched-XXXXXX");
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    FILE *in = fopen(lh_test_model_path(), "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(in);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        CU_ASSERT_EQUAL(write(fd, buf, n), (ssize_t)n);
    fclose(in);
    lh_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_model_open_ex(&m, path, LH_WEIGHTS_MAP), 0);
    static rec r;
    lh_sched *s = new_sched(&r, m, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(submit_gen(s, 1, 1, "Once", 4), LH_ERR_NONE);
    CU_ASSERT(wait_done(&r, 1, 1));
    CU_ASSERT_EQUAL(r.last_final[1].finish, LH_FINISH_LENGTH);
    /* changed in place: a byte appended (truncating would fault the mapping) */
    CU_ASSERT_EQUAL(write(fd, "x", 1), 1);
    close(fd);
    CU_ASSERT_EQUAL(submit_gen(s, 1, 2, "Once", 4), LH_ERR_NONE);
    CU_ASSERT(wait_done(&r, 2, 1));
    pthread_mutex_lock(&r.lock);
    CU_ASSERT_EQUAL(r.last_final[2].finish, LH_FINISH_ERROR);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.last_err[2], "changed on disk"));
    pthread_mutex_unlock(&r.lock);
    lh_sched_stats st;
    lh_sched_get_stats(s, &st);
    CU_ASSERT_EQUAL(st.fatal, 1);
    CU_ASSERT_EQUAL(submit_gen(s, 1, 3, "Once", 4), LH_ERR_SHUTTING_DOWN);
    free_sched(&r);
    lh_model_close(m);
    unlink(path);
}

static void test_slot_idle_release(void)
{
    static rec r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.lock, NULL);
    pthread_cond_init(&r.cond, NULL);
    lh_sched_config c;
    lh_sched_config_default(&c);
    c.ctx.n_ctx = 1024;
    c.slot_idle_s = 0.2;
    CU_ASSERT_EQUAL_FATAL(lh_sched_new(&r.s, g_model, &c, on_ev, &r), 0);
    CU_ASSERT_EQUAL(submit_gen(r.s, 1, 1, "Once upon a time", 8), LH_ERR_NONE);
    CU_ASSERT(wait_done(&r, 1, 1));
    /* the same prompt right away reuses the cache ... */
    CU_ASSERT_EQUAL(submit_gen(r.s, 1, 2, "Once upon a time", 8), LH_ERR_NONE);
    CU_ASSERT(wait_done(&r, 2, 1));
    CU_ASSERT_EQUAL(r.last_final[2].n_reused, 4);
    /* ... but after the idle timeout the slot's KV cache is gone (released, recreated) */
    usleep(600000);
    CU_ASSERT_EQUAL(submit_gen(r.s, 1, 3, "Once upon a time", 8), LH_ERR_NONE);
    CU_ASSERT(wait_done(&r, 3, 1));
    CU_ASSERT_EQUAL(r.last_final[3].finish, LH_FINISH_LENGTH);
    CU_ASSERT_EQUAL(r.last_final[3].n_reused, 0);
    free_sched(&r);
}

/* The watchdog's heartbeat comes from the compute thread's progress: fresh while idle, stale
 * while that thread is stuck. */
static void test_heartbeat(void)
{
    static rec r;
    lh_sched *s = new_sched(&r, g_model, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    usleep(300000);
    lh_sched_stats st;
    lh_sched_get_stats(s, &st);
    CU_ASSERT(st.heartbeat_age_s < 0.25); /* idle, it still goes round every 100 ms */
    r.act_owner = 1;
    r.act_id = 1;
    r.act_stall = 1;
    CU_ASSERT_EQUAL(submit_gen(s, 1, 1, "Once", 4), LH_ERR_NONE);
    usleep(900000);
    lh_sched_get_stats(s, &st);
    CU_ASSERT(st.heartbeat_age_s > 0.6);
    CU_ASSERT(wait_done(&r, 1, 1));
    usleep(300000);
    lh_sched_get_stats(s, &st);
    CU_ASSERT(st.heartbeat_age_s < 0.25);
    free_sched(&r);
}

/* A Chat request's rendered prompt is tokenized with special tokens matched, so the template's
 * markers become the model's control tokens (one <|im_start|> token, not "<", "|", "im", ...).
 * On the Qwen2 fixture (byte-level BPE with <|im_start|>/<|im_end|> as control tokens, no chat
 * template: chatml): the Final's prompt size equals the special-matching encoding of the
 * rendering, which is shorter than the plain one. */
#define QWEN2_FIXTURE "tests/data/arch/qwen2-bias.gguf"
static void test_chat_special_tokens(void)
{
    lh_model *m = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_model_open(&m, QWEN2_FIXTURE), 0);
    static rec r;
    CU_ASSERT_PTR_NOT_NULL_FATAL(new_sched(&r, m, 1));
    const char *desc = NULL;
    lh_chat_tmpl t = lh_sched_chat_template(r.s, &desc);
    CU_ASSERT_EQUAL(t, LH_CHAT_CHATML);
    lh_chat_msg msgs[2] = {{"system", "Be brief."}, {"user", "Hello there"}};
    char *text = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(lh_chat_render(t, msgs, 2, 1, &text, &len), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "<|im_start|>"));
    const lh_tok *tok = lh_model_tok(m);
    int32_t ids[512];
    size_t n_special = 0, n_plain = 0;
    CU_ASSERT_EQUAL(lh_tok_encode(tok, text, len, LH_TOK_SPECIAL, ids, 512, &n_special), 0);
    int32_t im_start = ids[0];
    CU_ASSERT_EQUAL(lh_tok_encode(tok, text, len, 0, ids, 512, &n_plain), 0);
    CU_ASSERT(n_special + 10 < n_plain);  /* 5 markers, each several tokens as plain text */
    CU_ASSERT(im_start >= 800);           /* the fixture's special tokens come after 800 */
    free(text);

    lh_sched_args a;
    memset(&a, 0, sizeof a);
    a.kind = LH_REQ_GENERATE;
    a.attn = -1;
    lh_sampler_params_default(&a.sp);
    a.sp.temperature = 0;
    a.max_tokens = 4;
    a.msgs = calloc(2, sizeof *a.msgs);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a.msgs);
    a.n_msgs = 2;
    for (size_t i = 0; i < 2; i++) {
        a.msgs[i].role = strdup(msgs[i].role);
        a.msgs[i].content = strdup(msgs[i].content);
    }
    char msg[256];
    CU_ASSERT_EQUAL(lh_sched_submit(r.s, 1, 1, &a, msg, sizeof msg), LH_ERR_NONE);
    CU_ASSERT(wait_done(&r, 1, 1));
    CU_ASSERT_EQUAL(r.n_final[1], 1);
    CU_ASSERT_NOT_EQUAL(r.last_final[1].finish, LH_FINISH_ERROR);
    CU_ASSERT_EQUAL(r.last_final[1].n_prompt, n_special);
    free_sched(&r);
    lh_model_close(m);
}

void lh_test_daemon(void)
{
    CU_pSuite s = CU_add_suite("daemon", suite_init, suite_clean);
    CU_add_test(s, "a cancel and a duplicate id while admitting are not lost",
                test_cancel_while_admitting);
    CU_add_test(s, "a disconnect while admitting cancels", test_disconnect_while_admitting);
    CU_add_test(s, "Final of a request cancelled while queued has n_prompt; queue timeout", test_cancel_queued_final);
    CU_add_test(s, "huge prompt refused at submit; duplicate id refused", test_limits_at_submit);
    CU_add_test(s, "model file changed in place: refused, fatal", test_model_changed_in_place);
    CU_add_test(s, "an idle slot gives its KV cache back", test_slot_idle_release);
    CU_add_test(s, "the watchdog heartbeat follows the compute thread", test_heartbeat);
    CU_add_test(s, "a Chat prompt is tokenized with the template's markers as special tokens",
                test_chat_special_tokens);
}
