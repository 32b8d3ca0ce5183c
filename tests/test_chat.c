/* tests/test_chat — chat templates: every template case of llama.cpp's
 * tests/test-chat-template.cpp (tests/data/chat_templates.inc says how it was taken) is
 * detected from its Jinja source and rendered to exactly llama.cpp's expected string; names
 * detect their family; a template nobody knows is refused; a conversation's rendering is a
 * prefix of the rendering with one more turn (what the daemon's prompt cache relies on).
 *
 * Suite "out-of-the-box": the real longheadsd with no settings but a socket: LongHeads with the
 * model's window by default and a context past the trained length; Chat turns reuse the cache;
 * a cancelled turn leaves the chat usable; Score keeps the daemon's attention (and honours the
 * request's); status lists the slots; a prompt over the limit names its length, the limit and
 * the flag. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chat.h"
#include "client/longheads.h"
#include "test.h"

typedef struct {
    const char *name, *tmpl, *expected;
} tmpl_case;

static const tmpl_case cases[] = {
#include "data/chat_templates.inc"
};

/* The conversation of test-chat-template.cpp. */
static const lh_chat_msg conv[] = {
    {"system", "You are a helpful assistant"},
    {"user", "Hello"},
    {"assistant", "Hi there"},
    {"user", "Who are you"},
    {"assistant", "   I am an assistant   "},
    {"user", "Another question"},
};

static void test_llama_cpp_cases(void)
{
    size_t n_ok = 0, n = sizeof cases / sizeof cases[0];
    CU_ASSERT(n >= 30);
    for (size_t i = 0; i < n; i++) {
        lh_chat_tmpl t = lh_chat_detect(cases[i].tmpl, strlen(cases[i].tmpl));
        char *out = NULL;
        size_t len = 0;
        int rc = t == LH_CHAT_UNKNOWN ? -EINVAL
                                      : lh_chat_render(t, conv, sizeof conv / sizeof conv[0], 1,
                                                       &out, &len);
        int ok = rc == 0 && len == strlen(cases[i].expected) &&
                 memcmp(out, cases[i].expected, len) == 0;
        if (!ok)
            printf("\n    %s: detected %s, rc %d\n    expected [%s]\n    got      [%s]\n",
                   cases[i].name, lh_chat_name(t), rc, cases[i].expected, out ? out : "");
        CU_ASSERT(ok);
        n_ok += ok;
        free(out);
    }
    CU_ASSERT_EQUAL(n_ok, n);
}

static void test_names(void)
{
    for (int t = 0; t < LH_CHAT_N; t++) {
        const char *name = lh_chat_name((lh_chat_tmpl)t);
        CU_ASSERT_STRING_NOT_EQUAL(name, "unknown");
        CU_ASSERT_EQUAL(lh_chat_detect(name, strlen(name)), t);
        char *out = NULL;
        CU_ASSERT_EQUAL(lh_chat_render((lh_chat_tmpl)t, conv, 2, 1, &out, NULL), 0);
        CU_ASSERT(out && strstr(out, "Hello"));
        free(out);
    }
    CU_ASSERT_EQUAL(lh_chat_detect("mistral", 7), LH_CHAT_LLAMA2); /* pre-v1 mistral */
    CU_ASSERT_EQUAL(lh_chat_detect("chatml-but-longer", 6), LH_CHAT_CHATML); /* len counts */
    CU_ASSERT_STRING_EQUAL(lh_chat_name(LH_CHAT_UNKNOWN), "unknown");
    CU_ASSERT_STRING_EQUAL(lh_chat_name(LH_CHAT_N), "unknown");
}

static void test_unknown_and_errors(void)
{
    const char *src = "{% for m in messages %}{{ m.content }}{% endfor %}";
    CU_ASSERT_EQUAL(lh_chat_detect(src, strlen(src)), LH_CHAT_UNKNOWN);
    CU_ASSERT_EQUAL(lh_chat_detect("", 0), LH_CHAT_UNKNOWN);
    CU_ASSERT_EQUAL(lh_chat_detect(NULL, 0), LH_CHAT_UNKNOWN);
    char *out = (char *)1;
    CU_ASSERT_EQUAL(lh_chat_render(LH_CHAT_UNKNOWN, conv, 1, 1, &out, NULL), -EINVAL);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_EQUAL(lh_chat_render(LH_CHAT_N, conv, 1, 1, &out, NULL), -EINVAL);
    lh_chat_msg bad = {"user", NULL};
    CU_ASSERT_EQUAL(lh_chat_render(LH_CHAT_CHATML, &bad, 1, 1, &out, NULL), -EINVAL);
    size_t len = 99;
    CU_ASSERT_EQUAL(lh_chat_render(LH_CHAT_CHATML, NULL, 0, 0, &out, &len), 0);
    CU_ASSERT(out && len == 0 && out[0] == 0);
    free(out);
}

/* Turn k's prompt (messages 0..k, add_assistant) followed by the answer must be a prefix of turn
 * k+1's: otherwise every turn re-evaluates the whole conversation. */
static void test_prefix_property(void)
{
    static const lh_chat_tmpl fams[] = {LH_CHAT_CHATML, LH_CHAT_LLAMA2_SYS, LH_CHAT_LLAMA3,
                                        LH_CHAT_MISTRAL_V7, LH_CHAT_PHI3, LH_CHAT_ZEPHYR,
                                        LH_CHAT_GEMMA, LH_CHAT_DEEPSEEK};
    for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++) {
        char *a = NULL, *b = NULL;
        size_t la = 0, lb = 0;
        CU_ASSERT_EQUAL(lh_chat_render(fams[f], conv, 2, 1, &a, &la), 0);
        CU_ASSERT_EQUAL(lh_chat_render(fams[f], conv, 4, 1, &b, &lb), 0);
        int ok = a && b && la < lb && memcmp(a, b, la) == 0;
        if (!ok)
            printf("\n    %s: [%s] is not a prefix of [%s]\n", lh_chat_name(fams[f]), a, b);
        CU_ASSERT(ok);
        free(a);
        free(b);
    }
}

static void test_stops(void)
{
    const char *const *s = lh_chat_stops(LH_CHAT_CHATML);
    CU_ASSERT(s[0] && strcmp(s[0], "<|im_end|>") == 0);
    CU_ASSERT(lh_chat_stops(LH_CHAT_LLAMA3)[0] && strcmp(lh_chat_stops(LH_CHAT_LLAMA3)[0], "<|eot_id|>") == 0);
    CU_ASSERT_PTR_NULL(lh_chat_stops(LH_CHAT_UNKNOWN)[0]);
}

/* ---- the daemon ------------------------------------------------------------------------------ */

static char d_dir[64], d_sock[128], d_log[160];
static pid_t d_pid = -1;

/* longheadsd on d_sock with the given extra arguments (NULL-terminated); waits until it answers. */
static pid_t daemon_start(const char *const *extra)
{
    const char *args[24];
    int n = 0;
    args[n++] = "-m";
    args[n++] = lh_test_model_path();
    args[n++] = "--socket";
    args[n++] = d_sock;
    for (int i = 0; extra && extra[i] && n < 23; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    return lh_test_daemon_start(args, d_sock, d_log, -1, NULL);
}

static void daemon_stop(pid_t pid) { lh_test_daemon_stop(pid); }

static int ootb_init(void)
{
    snprintf(d_dir, sizeof d_dir, "/tmp/lh-ootb-XXXXXX");
    if (!mkdtemp(d_dir))
        return -1;
    snprintf(d_sock, sizeof d_sock, "%s/d.sock", d_dir);
    snprintf(d_log, sizeof d_log, "%s/daemon.log", d_dir);
    d_pid = daemon_start(NULL);
    return d_pid > 0 ? 0 : -1;
}

static int ootb_clean(void)
{
    daemon_stop(d_pid);
    unlink(d_log);
    rmdir(d_dir);
    return 0;
}

typedef struct {
    char text[8192];
    size_t len;
    int cancel_after;      /* > 0: cancel after this many tokens */
    int n_tok;
} collect;

static int on_ev(const lh_client_event *ev, void *ud)
{
    collect *c = ud;
    if (ev->kind != LH_CLIENT_EV_TOKEN)
        return 0;
    if (c->len + ev->text_len < sizeof c->text) {
        memcpy(c->text + c->len, ev->text, ev->text_len);
        c->len += ev->text_len;
        c->text[c->len] = 0;
    }
    return c->cancel_after > 0 && ++c->n_tok >= c->cancel_after;
}

static void test_defaults(void)
{
    lh_client *c;
    CU_ASSERT_EQUAL_FATAL(lh_client_connect(&c, d_sock, 5000), 0);
    const lh_client_model_info *m = lh_client_model(c);
    CU_ASSERT_EQUAL(m->attn_default, LH_CLIENT_ATTN_LONGHEADS);
    CU_ASSERT_EQUAL(m->chunk_default, 64);   /* the bundled file's longheads.* keys */
    CU_ASSERT_EQUAL(m->window_default, 512);
    /* the context the memory holds, past the trained length, at most the automatic cap */
    CU_ASSERT(m->n_ctx > m->n_ctx_train && m->n_ctx <= 132096);
    if (m->n_ctx != 132096)
        printf("\n    note: the memory budget gave a context of %u tokens\n", m->n_ctx);
    CU_ASSERT_EQUAL(m->max_prompt_tokens, m->n_ctx - 1);
    CU_ASSERT(strncmp(lh_client_chat_template(c), "chatml (default", 15) == 0);
    lh_client_close(c);
    /* the start-up log reports the budget */
    FILE *f = fopen(d_log, "r");
    char buf[8192] = "";
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    buf[n] = 0;
    if (f)
        fclose(f);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "memory budget"));
}

static void test_chat_turns(void)
{
    lh_client *c;
    CU_ASSERT_EQUAL_FATAL(lh_client_connect(&c, d_sock, 5000), 0);
    lh_client_gen_opts o;
    lh_client_gen_opts_default(&o);
    o.temperature = 0;
    o.max_tokens = 24;
    lh_client_chat_msg msgs[4] = {{"user", "Tell me a story about a cat."}};
    static collect a1, a2, a3;
    memset(&a1, 0, sizeof a1);
    lh_client_result r1, r2, r3;
    CU_ASSERT_EQUAL_FATAL(lh_client_chat(c, msgs, 1, &o, on_ev, &a1, &r1), 0);
    CU_ASSERT_EQUAL(r1.finish, LH_CLIENT_FINISH_LENGTH);
    CU_ASSERT(a1.len > 0);
    /* the same first turn through Generate of the rendered text gives the same answer */
    lh_client_gen_opts og = o;
    og.prompt = "<|im_start|>user\nTell me a story about a cat.<|im_end|>\n<|im_start|>assistant\n";
    og.prompt_len = (size_t)-1;
    static collect ag;
    memset(&ag, 0, sizeof ag);
    lh_client_result rg;
    CU_ASSERT_EQUAL(lh_client_generate(c, &og, on_ev, &ag, &rg), 0);
    CU_ASSERT_STRING_EQUAL(ag.text, a1.text);
    CU_ASSERT_EQUAL(rg.n_prompt, r1.n_prompt);
    /* turn 2: the whole conversation; the first turn and its answer come from the cache */
    msgs[1] = (lh_client_chat_msg){"assistant", a1.text};
    msgs[2] = (lh_client_chat_msg){"user", "What happened next?"};
    memset(&a2, 0, sizeof a2);
    CU_ASSERT_EQUAL_FATAL(lh_client_chat(c, msgs, 3, &o, on_ev, &a2, &r2), 0);
    CU_ASSERT(a2.len > 0);
    CU_ASSERT(r2.n_prompt > r1.n_prompt + r1.n_generated);
    printf("\n    turn 1: prompt %u; turn 2: prompt %u, %u reused\n", r1.n_prompt, r2.n_prompt,
           r2.n_reused);
    CU_ASSERT(r2.n_reused >= r1.n_prompt);
    /* a cancelled turn: the Final says so, and the next turn works */
    memset(&a3, 0, sizeof a3);
    a3.cancel_after = 2;
    lh_client_gen_opts long_o = o;
    long_o.max_tokens = 1000000; /* so that the cancel, not the length, ends it */
    CU_ASSERT_EQUAL(lh_client_chat(c, msgs, 3, &long_o, on_ev, &a3, &r3), 0);
    CU_ASSERT_EQUAL(r3.finish, LH_CLIENT_FINISH_CANCELLED);
    memset(&a3, 0, sizeof a3);
    CU_ASSERT_EQUAL(lh_client_chat(c, msgs, 3, &o, on_ev, &a3, &r3), 0);
    CU_ASSERT_EQUAL(r3.finish, LH_CLIENT_FINISH_LENGTH);
    CU_ASSERT_STRING_EQUAL(a3.text, a2.text);
    /* bad conversations are refused by the library or the daemon, not crashed on */
    lh_client_chat_msg bad[1] = {{"", "x"}};
    CU_ASSERT_EQUAL(lh_client_chat(c, bad, 1, &o, NULL, NULL, &r3), LH_CLIENT_E_SERVER);
    CU_ASSERT_EQUAL(lh_client_last_error_code(c), LH_CLIENT_ERR_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(lh_client_chat(c, msgs, 0, &o, NULL, NULL, &r3), LH_CLIENT_E_ARGUMENT);
    lh_client_close(c);
}

static void test_score_attention(void)
{
    lh_client *c;
    CU_ASSERT_EQUAL_FATAL(lh_client_connect(&c, d_sock, 5000), 0);
    lh_client_gen_opts o;
    lh_client_gen_opts_default(&o);
    o.temperature = 0;
    o.max_tokens = 4;
    o.prompt = "Once upon a time, there was a little dog named Max. Max liked to run in the park.";
    o.prompt_len = (size_t)-1;
    lh_client_result r;
    CU_ASSERT_EQUAL_FATAL(lh_client_generate(c, &o, NULL, NULL, &r), 0);
    float lp[256];
    size_t n;
    double total;
    /* the daemon's attention: the slot (and its cache) stays as it is */
    CU_ASSERT_EQUAL(lh_client_score(c, "The cat sat on the mat.", (size_t)-1, lp, 256, &n, &total), 0);
    lh_client_slot sl = {0};
    CU_ASSERT_EQUAL_FATAL(lh_test_idle_slot0(c, &sl), 0);
    CU_ASSERT_EQUAL(sl.attn, LH_CLIENT_ATTN_LONGHEADS);
    CU_ASSERT_EQUAL(sl.chunk, 64);
    CU_ASSERT(sl.n_cached > 0 && sl.kv_bytes > 0);
    CU_ASSERT_EQUAL(sl.kv_disk_bytes, 0); /* all in memory: no --kv-dir */
    CU_ASSERT_EQUAL(lh_client_generate(c, &o, NULL, NULL, &r), 0);
    CU_ASSERT(r.n_reused > 0); /* the score ran on the same LongHeads slot: nothing recreated */
    /* the request's attention is honoured: full attention recreates the slot as full */
    double total_full;
    CU_ASSERT_EQUAL(lh_client_score_attn(c, "The cat sat on the mat.", (size_t)-1,
                                         LH_CLIENT_ATTN_FULL, 0, 0, lp, 256, &n, &total_full), 0);
    CU_ASSERT_EQUAL_FATAL(lh_test_idle_slot0(c, &sl), 0);
    CU_ASSERT_EQUAL(sl.attn, LH_CLIENT_ATTN_FULL);
    /* inside the window LongHeads is full attention */
    CU_ASSERT(fabs(total - total_full) < 1e-3);
    lh_client_status st;
    CU_ASSERT_EQUAL(lh_client_get_status(c, &st), 0);
    CU_ASSERT(st.rss_bytes > 0);
    CU_ASSERT_EQUAL(st.n_slots, 1);
    CU_ASSERT_STRING_EQUAL(st.health.status, "ok");
    lh_client_close(c);
}

static void test_prompt_limit(void)
{
    /* a second daemon with a small context */
    char sock[sizeof d_sock];
    snprintf(sock, sizeof sock, "%s", d_sock);
    snprintf(d_sock, sizeof d_sock, "%s/small.sock", d_dir);
    const char *extra[] = {"-c", "300", NULL};
    pid_t pid = daemon_start(extra);
    CU_ASSERT_FATAL(pid > 0);
    lh_client *c;
    CU_ASSERT_EQUAL_FATAL(lh_client_connect(&c, d_sock, 5000), 0);
    CU_ASSERT_EQUAL(lh_client_model(c)->n_ctx, 300);
    char prompt[8192] = "";
    for (int i = 0; i < 100; i++)
        strcat(prompt, "The dog ran. ");
    lh_client_gen_opts o;
    lh_client_gen_opts_default(&o);
    o.prompt = prompt;
    o.prompt_len = (size_t)-1;
    o.max_tokens = 2;
    lh_client_result r;
    int rc = lh_client_generate(c, &o, NULL, NULL, &r);
    const char *msg = rc == LH_CLIENT_E_SERVER ? lh_client_last_error(c) : r.error;
    CU_ASSERT(rc == LH_CLIENT_E_SERVER || r.finish == LH_CLIENT_FINISH_ERROR);
    printf("\n    %s\n", msg);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "the prompt has 602 tokens"));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "at most 299"));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "-c/--ctx-size"));
    lh_client_close(c);
    daemon_stop(pid);
    snprintf(d_sock, sizeof d_sock, "%s", sock);
}

/* Runs cmd with sh; its stdout and stderr (2>&1 is added) into a static buffer. */
static const char *sh_out(const char *cmd, int *statusp)
{
    static char buf[65536];
    char full[4096];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    size_t n = p ? fread(buf, 1, sizeof buf - 1, p) : 0;
    buf[n] = 0;
    int st = p ? pclose(p) : -1;
    *statusp = st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return buf;
}

static void test_cli(void)
{
    char cmd[1024];
    const char *b = lh_test_build_dir(), *out;
    int st;
    /* -n 0 is an error naming the flag; a value out of range names the flag and the range */
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s generate -n 0 hi", b, d_sock);
    out = sh_out(cmd, &st);
    CU_ASSERT_EQUAL(st, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "-n 0"));
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s generate --top-p 2 hi", b, d_sock);
    out = sh_out(cmd, &st);
    CU_ASSERT_EQUAL(st, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "--top-p: '2' is not a number in [0, 1]"));
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s chat --temp -1 hi", b, d_sock);
    out = sh_out(cmd, &st);
    CU_ASSERT_EQUAL(st, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "--temp"));
    /* a NUL byte in the prompt is refused, not cut */
    snprintf(cmd, sizeof cmd, "printf 'Once\\000upon' | %s/longheads --socket %s generate -", b,
             d_sock);
    out = sh_out(cmd, &st);
    CU_ASSERT_EQUAL(st, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "NUL byte at offset 4"));
    /* piped text ends with a newline; -n -1 runs to the end of the text */
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s generate -n 5 --temp 0 -p 'Once upon' "
             "2>/dev/null", b, d_sock);
    out = sh_out(cmd, &st);
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT(strlen(out) > 2 && out[strlen(out) - 1] == '\n');
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s generate -n -1 --temp 0 --stats "
             "'Once upon a time'", b, d_sock);
    out = sh_out(cmd, &st);
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT(strstr(out, "finish: eos") || strstr(out, "finish: length"));
    /* --json: one object per line, the last the final stats */
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s generate --json -n 3 --temp 0 'Once' "
             "2>/dev/null", b, d_sock);
    out = sh_out(cmd, &st);
    CU_ASSERT_EQUAL(st, 0);
    int lines = 0, ok = 1;
    const char *last = out;
    for (const char *l = out; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l)) {
        ok &= l[0] == '{';
        last = l;
        lines++;
    }
    CU_ASSERT(ok && lines >= 4);
    CU_ASSERT(strncmp(last, "{\"done\":true,\"finish\":\"length\",", 30) == 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "{\"token\":"));
    /* status and info, in words and in JSON */
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s status", b, d_sock);
    out = sh_out(cmd, &st);
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT(strstr(out, "slot 0:") && strstr(out, "tokens cached") && strstr(out, "resident"));
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s status --json", b, d_sock);
    out = sh_out(cmd, &st);
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT(strstr(out, "\"cached_tokens\":") && strstr(out, "\"rss_bytes\":"));
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s info", b, d_sock);
    out = sh_out(cmd, &st);
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "attention:     longheads, chunk 64, window 512"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "chat template: chatml (default"));
    /* chat, one shot */
    snprintf(cmd, sizeof cmd, "%s/longheads --socket %s chat -n 8 --temp 0 'Hello' 2>/dev/null",
             b, d_sock);
    out = sh_out(cmd, &st);
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT(strlen(out) > 1 && out[strlen(out) - 1] == '\n');
    /* --version everywhere */
    static const char *const bins[] = {"longheads", "longheadsd", "longheads-run", "longheads-ppl"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(cmd, sizeof cmd, "%s/%s --version", b, bins[i]);
        out = sh_out(cmd, &st);
        CU_ASSERT_EQUAL(st, 0);
        CU_ASSERT(strncmp(out, bins[i], strlen(bins[i])) == 0 && strstr(out, " 0."));
    }
}

void lh_test_chat(void)
{
    CU_pSuite d = CU_add_suite("out-of-the-box", ootb_init, ootb_clean);
    CU_add_test(d, "defaults: LongHeads at the model's window, a large context", test_defaults);
    CU_add_test(d, "chat turns reuse the cache; a cancelled turn", test_chat_turns);
    CU_add_test(d, "score keeps the daemon's attention and honours the request's",
                test_score_attention);
    CU_add_test(d, "a prompt over the limit names its length, the limit, the flag",
                test_prompt_limit);
    CU_add_test(d, "the CLI: flags, errors, --json, status, newline, --version", test_cli);

    CU_pSuite s = CU_add_suite("chat", NULL, NULL);
    CU_add_test(s, "llama.cpp's template cases render byte for byte", test_llama_cpp_cases);
    CU_add_test(s, "every family by name", test_names);
    CU_add_test(s, "unknown templates and bad messages", test_unknown_and_errors);
    CU_add_test(s, "a turn's prompt is a prefix of the next", test_prefix_property);
    CU_add_test(s, "stop strings", test_stops);
}
