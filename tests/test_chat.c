/* tests/test_chat — chat templates: every template case of llama.cpp's
 * tests/test-chat-template.cpp (tests/data/chat_templates.inc says how it was taken) is
 * detected from its Jinja source and rendered to exactly llama.cpp's expected string; names
 * detect their family; a template nobody knows is refused; a conversation's rendering is a
 * prefix of the rendering with one more turn (what the daemon's prompt cache relies on). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
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

void lh_test_chat(void)
{
    CU_pSuite s = CU_add_suite("chat", NULL, NULL);
    CU_add_test(s, "llama.cpp's template cases render byte for byte", test_llama_cpp_cases);
    CU_add_test(s, "every family by name", test_names);
    CU_add_test(s, "unknown templates and bad messages", test_unknown_and_errors);
    CU_add_test(s, "a turn's prompt is a prefix of the next", test_prefix_property);
    CU_add_test(s, "stop strings", test_stops);
}
