/* engine/chat — see chat.h. */
#include "chat.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[LH_CHAT_N] = {
    [LH_CHAT_CHATML] = "chatml", [LH_CHAT_LLAMA2] = "llama2", [LH_CHAT_LLAMA2_SYS] = "llama2-sys",
    [LH_CHAT_LLAMA2_SYS_BOS] = "llama2-sys-bos", [LH_CHAT_LLAMA2_SYS_STRIP] = "llama2-sys-strip",
    [LH_CHAT_MISTRAL_V1] = "mistral-v1", [LH_CHAT_MISTRAL_V3] = "mistral-v3",
    [LH_CHAT_MISTRAL_V3_TEKKEN] = "mistral-v3-tekken", [LH_CHAT_MISTRAL_V7] = "mistral-v7",
    [LH_CHAT_MISTRAL_V7_TEKKEN] = "mistral-v7-tekken", [LH_CHAT_PHI3] = "phi3",
    [LH_CHAT_PHI4] = "phi4", [LH_CHAT_FALCON3] = "falcon3", [LH_CHAT_ZEPHYR] = "zephyr",
    [LH_CHAT_MONARCH] = "monarch", [LH_CHAT_GEMMA] = "gemma", [LH_CHAT_ORION] = "orion",
    [LH_CHAT_OPENCHAT] = "openchat", [LH_CHAT_VICUNA] = "vicuna",
    [LH_CHAT_VICUNA_ORCA] = "vicuna-orca", [LH_CHAT_DEEPSEEK] = "deepseek",
    [LH_CHAT_DEEPSEEK2] = "deepseek2", [LH_CHAT_DEEPSEEK3] = "deepseek3",
    [LH_CHAT_COMMAND_R] = "command-r", [LH_CHAT_LLAMA3] = "llama3",
    [LH_CHAT_CHATGLM3] = "chatglm3", [LH_CHAT_CHATGLM4] = "chatglm4",
    [LH_CHAT_GLMEDGE] = "glmedge", [LH_CHAT_MINICPM] = "minicpm", [LH_CHAT_EXAONE3] = "exaone3",
    [LH_CHAT_EXAONE4] = "exaone4", [LH_CHAT_GRANITE] = "granite", [LH_CHAT_GIGACHAT] = "gigachat",
    [LH_CHAT_MEGREZ] = "megrez", [LH_CHAT_YANDEX] = "yandex", [LH_CHAT_BAILING] = "bailing",
    [LH_CHAT_BAILING_THINK] = "bailing-think", [LH_CHAT_BAILING2] = "bailing2",
    [LH_CHAT_SEED_OSS] = "seed_oss",
};

const char *lh_chat_name(lh_chat_tmpl t)
{
    return t >= 0 && t < LH_CHAT_N ? names[t] : "unknown";
}

/* ---- detection ------------------------------------------------------------------------------ */

typedef struct {
    const char *s;
    size_t len;
} text;

static int has(text t, const char *needle)
{
    size_t n = strlen(needle);
    if (n > t.len)
        return 0;
    for (size_t i = 0; i + n <= t.len; i++)
        if (t.s[i] == needle[0] && memcmp(t.s + i, needle, n) == 0)
            return 1;
    return 0;
}

lh_chat_tmpl lh_chat_detect(const char *src, size_t len)
{
    if (!src)
        return LH_CHAT_UNKNOWN;
    for (int i = 0; i < LH_CHAT_N; i++)
        if (strlen(names[i]) == len && memcmp(names[i], src, len) == 0)
            return (lh_chat_tmpl)i;
    text t = {src, len};
    /* The order matters: several families share markers, and the more specific test comes
     * first (phi4's <|im_sep|> inside chatml's <|im_start|>, mistral's variants inside [INST]). */
    if (has(t, "<|im_start|>")) {
        if (has(t, "<|im_sep|>"))
            return LH_CHAT_PHI4;
        if (has(t, "<end_of_utterance>"))
            return LH_CHAT_UNKNOWN; /* SmolVLM: <|im_start|> is its BOS, not chatml */
        return LH_CHAT_CHATML;
    }
    if ((len >= 7 && memcmp(src, "mistral", 7) == 0) || has(t, "[INST]")) {
        if (has(t, "[SYSTEM_PROMPT]"))
            return LH_CHAT_MISTRAL_V7;
        if (has(t, "' [INST] ' + system_message") || has(t, "[AVAILABLE_TOOLS]")) {
            if (has(t, " [INST]"))
                return LH_CHAT_MISTRAL_V1;
            if (has(t, "\"[INST]\""))
                return LH_CHAT_MISTRAL_V3_TEKKEN;
            return LH_CHAT_MISTRAL_V3;
        }
        if (has(t, "content.strip()"))
            return LH_CHAT_LLAMA2_SYS_STRIP;
        if (has(t, "bos_token + '[INST]"))
            return LH_CHAT_LLAMA2_SYS_BOS;
        if (has(t, "<<SYS>>"))
            return LH_CHAT_LLAMA2_SYS;
        return LH_CHAT_LLAMA2;
    }
    if (has(t, "<|assistant|>") && has(t, "<|end|>"))
        return LH_CHAT_PHI3;
    if (has(t, "[gMASK]<sop>"))
        return LH_CHAT_CHATGLM4;
    if (has(t, "<|assistant|>") && has(t, "<|user|>"))
        return has(t, "</s>") ? LH_CHAT_FALCON3 : LH_CHAT_GLMEDGE;
    if (has(t, "<|{{ item['role'] }}|>") && has(t, "<|begin_of_image|>"))
        return LH_CHAT_GLMEDGE;
    if (has(t, "<|user|>") && has(t, "<|endoftext|>"))
        return LH_CHAT_ZEPHYR;
    if (has(t, "bos_token + message['role']"))
        return LH_CHAT_MONARCH;
    if (has(t, "<start_of_turn>"))
        return LH_CHAT_GEMMA;
    if (has(t, "'\\n\\nAssistant: ' + eos_token"))
        return LH_CHAT_ORION;
    if (has(t, "GPT4 Correct "))
        return LH_CHAT_OPENCHAT;
    if (has(t, "USER: ") && has(t, "ASSISTANT: "))
        return has(t, "SYSTEM: ") ? LH_CHAT_VICUNA_ORCA : LH_CHAT_VICUNA;
    if (has(t, "### Instruction:") && has(t, "<|EOT|>"))
        return LH_CHAT_DEEPSEEK;
    if (has(t, "<|START_OF_TURN_TOKEN|>") && has(t, "<|USER_TOKEN|>"))
        return LH_CHAT_COMMAND_R;
    if (has(t, "<|start_header_id|>") && has(t, "<|end_header_id|>"))
        return LH_CHAT_LLAMA3;
    if (has(t, "[gMASK]sop"))
        return LH_CHAT_CHATGLM3;
    if (has(t, "<\xe7\x94\xa8\xe6\x88\xb7>")) /* <用户> */
        return LH_CHAT_MINICPM;
    if (has(t, "'Assistant: ' + message['content'] + eos_token"))
        return LH_CHAT_DEEPSEEK2;
    if (has(t, "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>") && has(t, "<\xef\xbd\x9c" "User\xef\xbd\x9c>") &&
        has(t, "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"))
        return LH_CHAT_DEEPSEEK3;
    if (has(t, "[|system|]") && has(t, "[|assistant|]") && has(t, "[|endofturn|]"))
        return has(t, "[|tool|]") ? LH_CHAT_EXAONE4 : LH_CHAT_EXAONE3;
    if (has(t, "<|start_of_role|>"))
        return LH_CHAT_GRANITE;
    if (has(t, "message['role'] + additional_special_tokens[0] + message['content'] + "
               "additional_special_tokens[1]"))
        return LH_CHAT_GIGACHAT;
    if (has(t, "<|role_start|>"))
        return LH_CHAT_MEGREZ;
    if (has(t, " \xd0\x90\xd1\x81\xd1\x81\xd0\xb8\xd1\x81\xd1\x82\xd0\xb5\xd0\xbd\xd1\x82:")) /* " Ассистент:" */
        return LH_CHAT_YANDEX;
    if (has(t, "<role>ASSISTANT</role>")) {
        if (has(t, "'HUMAN'"))
            return LH_CHAT_BAILING;
        if (has(t, "\"HUMAN\"") && has(t, "<think>"))
            return LH_CHAT_BAILING_THINK;
        if (has(t, "<role>HUMAN</role>") && has(t, "<|role_end|>"))
            return LH_CHAT_BAILING2;
    }
    if (has(t, "<seed:bos>"))
        return LH_CHAT_SEED_OSS;
    return LH_CHAT_UNKNOWN;
}

/* ---- rendering ------------------------------------------------------------------------------ */

typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

static void put_n(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void put(sbuf *b, const char *s) { put_n(b, s, strlen(s)); }

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* s without leading and trailing ASCII white space. */
static void put_trim(sbuf *b, const char *s)
{
    size_t n = strlen(s);
    while (n && is_space(*s))
        s++, n--;
    while (n && is_space(s[n - 1]))
        n--;
    put_n(b, s, n);
}

static int is(const char *role, const char *name) { return strcmp(role, name) == 0; }

/* The two mistral families with [INST] turns that open before a system prompt or a user turn. */
static void render_mistral(sbuf *b, lh_chat_tmpl t, const lh_chat_msg *m, size_t n)
{
    const char *lead = t == LH_CHAT_MISTRAL_V1 ? " " : "";
    const char *trail = t == LH_CHAT_MISTRAL_V3_TEKKEN ? "" : " ";
    int in_turn = 0;
    for (size_t i = 0; i < n; i++) {
        if (!in_turn) {
            put(b, lead);
            put(b, "[INST]");
            put(b, trail);
            in_turn = 1;
        }
        if (is(m[i].role, "system")) {
            put(b, m[i].content);
            put(b, "\n\n");
        } else if (is(m[i].role, "user")) {
            put(b, m[i].content);
            put(b, lead);
            put(b, "[/INST]");
        } else {
            put(b, trail);
            if (t == LH_CHAT_MISTRAL_V3)
                put_trim(b, m[i].content);
            else
                put(b, m[i].content);
            put(b, "</s>");
            in_turn = 0;
        }
    }
}

static void render_llama2(sbuf *b, lh_chat_tmpl t, const lh_chat_msg *m, size_t n)
{
    int with_sys = t != LH_CHAT_LLAMA2, strip = t == LH_CHAT_LLAMA2_SYS_STRIP;
    int in_turn = 1; /* the first [INST] is written here; BOS is the tokenizer's */
    put(b, "[INST] ");
    for (size_t i = 0; i < n; i++) {
        if (!in_turn) {
            put(b, t == LH_CHAT_LLAMA2_SYS_BOS ? "<s>[INST] " : "[INST] ");
            in_turn = 1;
        }
        sbuf c = {0};
        if (strip)
            put_trim(&c, m[i].content);
        else
            put(&c, m[i].content);
        const char *content = c.s ? c.s : "";
        if (is(m[i].role, "system")) {
            put(b, with_sys ? "<<SYS>>\n" : "");
            put(b, content);
            put(b, with_sys ? "\n<</SYS>>\n\n" : "\n");
        } else if (is(m[i].role, "user")) {
            put(b, content);
            put(b, " [/INST]");
        } else {
            put(b, content);
            put(b, "</s>");
            in_turn = 0;
        }
        b->oom |= c.oom;
        free(c.s);
    }
}

/* "<role>ROLE</role>" with user as HUMAN and other roles upper-cased (bailing). */
static void put_bailing_role(sbuf *b, const char *role)
{
    put(b, "<role>");
    if (is(role, "user")) {
        put(b, "HUMAN");
    } else {
        for (const char *p = role; *p; p++) {
            char c = *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
            put_n(b, &c, 1);
        }
    }
    put(b, "</role>");
}

/* Templates where every message is prefix + role + middle + content + suffix. */
static int render_uniform(sbuf *b, lh_chat_tmpl t, const lh_chat_msg *m, size_t n, int add)
{
    const char *pre, *mid, *suf, *open;
    int trim = 0;
    switch (t) {
    case LH_CHAT_CHATML: pre = "<|im_start|>"; mid = "\n"; suf = "<|im_end|>\n"; open = "<|im_start|>assistant\n"; break;
    case LH_CHAT_PHI3: pre = "<|"; mid = "|>\n"; suf = "<|end|>\n"; open = "<|assistant|>\n"; break;
    case LH_CHAT_PHI4: pre = "<|im_start|>"; mid = "<|im_sep|>"; suf = "<|im_end|>"; open = "<|im_start|>assistant<|im_sep|>"; break;
    case LH_CHAT_FALCON3: pre = "<|"; mid = "|>\n"; suf = "\n"; open = "<|assistant|>\n"; break;
    case LH_CHAT_ZEPHYR: pre = "<|"; mid = "|>\n"; suf = "<|endoftext|>\n"; open = "<|assistant|>\n"; break;
    case LH_CHAT_LLAMA3: pre = "<|start_header_id|>"; mid = "<|end_header_id|>\n\n"; suf = "<|eot_id|>"; open = "<|start_header_id|>assistant<|end_header_id|>\n\n"; trim = 1; break;
    case LH_CHAT_GLMEDGE: pre = "<|"; mid = "|>\n"; suf = ""; open = "<|assistant|>"; break;
    case LH_CHAT_CHATGLM4: pre = "<|"; mid = "|>\n"; suf = ""; open = "<|assistant|>\n"; break;
    case LH_CHAT_CHATGLM3: pre = "<|"; mid = "|>\n "; suf = ""; open = "<|assistant|>"; break;
    case LH_CHAT_MEGREZ: pre = "<|role_start|>"; mid = "<|role_end|>"; suf = "<|turn_end|>"; open = "<|role_start|>assistant<|role_end|>"; break;
    case LH_CHAT_GRANITE: pre = "<|start_of_role|>"; mid = "<|end_of_role|>"; suf = "<|end_of_text|>\n"; open = "<|start_of_role|>assistant<|end_of_role|>"; break;
    default: return 0;
    }
    if (t == LH_CHAT_CHATGLM4)
        put(b, "[gMASK]<sop>");
    if (t == LH_CHAT_CHATGLM3)
        put(b, "[gMASK]sop");
    for (size_t i = 0; i < n; i++) {
        put(b, pre);
        put(b, m[i].role);
        put(b, mid);
        if (t == LH_CHAT_GRANITE && is(m[i].role, "assistant_tool_call"))
            put(b, "<|tool_call|>");
        if (trim)
            put_trim(b, m[i].content);
        else
            put(b, m[i].content);
        put(b, suf);
    }
    if (add)
        put(b, open);
    return 1;
}

/* Templates with a fixed wording per role: {system, user, assistant} x {before, after} content,
 * then the opening of the assistant's turn.  NULL: the role is skipped. */
typedef struct {
    const char *sys[2], *user[2], *ass[2], *open;
    int trim;           /* 1: every content trimmed; 2: only the assistant's */
} role_words;

static int render_roles(sbuf *b, lh_chat_tmpl t, const lh_chat_msg *m, size_t n, int add)
{
    role_words w;
    memset(&w, 0, sizeof w);
    switch (t) {
    case LH_CHAT_VICUNA:
        w = (role_words){{"", "\n\n"}, {"USER: ", "\n"}, {"ASSISTANT: ", "</s>\n"}, "ASSISTANT:", 0};
        break;
    case LH_CHAT_VICUNA_ORCA:
        w = (role_words){{"SYSTEM: ", "\n"}, {"USER: ", "\n"}, {"ASSISTANT: ", "</s>\n"}, "ASSISTANT:", 0};
        break;
    case LH_CHAT_DEEPSEEK:
        w = (role_words){{"", ""}, {"### Instruction:\n", "\n"}, {"### Response:\n", "\n<|EOT|>\n"},
                         "### Response:\n", 0};
        break;
    case LH_CHAT_DEEPSEEK2:
        w = (role_words){{"", "\n\n"}, {"User: ", "\n\n"},
                         {"Assistant: ", "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"},
                         "Assistant:", 0};
        break;
    case LH_CHAT_DEEPSEEK3:
        w = (role_words){{"", "\n\n"}, {"<\xef\xbd\x9c" "User\xef\xbd\x9c>", ""},
                         {"<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>",
                          "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"},
                         "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>", 0};
        break;
    case LH_CHAT_COMMAND_R:
        w = (role_words){{"<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>", "<|END_OF_TURN_TOKEN|>"},
                         {"<|START_OF_TURN_TOKEN|><|USER_TOKEN|>", "<|END_OF_TURN_TOKEN|>"},
                         {"<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>", "<|END_OF_TURN_TOKEN|>"},
                         "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>", 1};
        break;
    case LH_CHAT_EXAONE3:
    case LH_CHAT_EXAONE4:
        w = (role_words){{"[|system|]", "[|endofturn|]\n"}, {"[|user|]", "\n"},
                         {"[|assistant|]", "[|endofturn|]\n"}, "[|assistant|]", 1};
        break;
    case LH_CHAT_YANDEX:
        w = (role_words){{NULL, NULL},
                         {" \xd0\x9f\xd0\xbe\xd0\xbb\xd1\x8c\xd0\xb7\xd0\xbe\xd0\xb2\xd0\xb0\xd1\x82"
                          "\xd0\xb5\xd0\xbb\xd1\x8c: ", "\n\n"},   /* " Пользователь: " */
                         {" \xd0\x90\xd1\x81\xd1\x81\xd0\xb8\xd1\x81\xd1\x82\xd0\xb5\xd0\xbd\xd1\x82: ",
                          "\n\n"},                                 /* " Ассистент: " */
                         " \xd0\x90\xd1\x81\xd1\x81\xd0\xb8\xd1\x81\xd1\x82\xd0\xb5\xd0\xbd\xd1\x82:[SEP]", 0};
        break;
    case LH_CHAT_SEED_OSS:
        w = (role_words){{"<seed:bos>system\n", "<seed:eos>"}, {"<seed:bos>user\n", "<seed:eos>"},
                         {"<seed:bos>assistant\n", "<seed:eos>"}, "<seed:bos>assistant\n", 2};
        break;
    default:
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        const char *const *rw = is(m[i].role, "system") ? w.sys
                                : is(m[i].role, "user") ? w.user
                                : is(m[i].role, "assistant") ? w.ass : NULL;
        if (t == LH_CHAT_EXAONE4 && is(m[i].role, "tool")) {
            static const char *const tool[2] = {"[|tool|]", "[|endofturn|]\n"};
            rw = tool;
        }
        if (!rw || !rw[0])
            continue;
        put(b, rw[0]);
        if (w.trim == 1 || (w.trim == 2 && rw == w.ass))
            put_trim(b, m[i].content);
        else
            put(b, m[i].content);
        put(b, rw[1]);
    }
    if (add)
        put(b, w.open);
    return 1;
}

int lh_chat_render(lh_chat_tmpl t, const lh_chat_msg *m, size_t n, int add, char **outp,
                   size_t *lenp)
{
    *outp = NULL;
    if (lenp)
        *lenp = 0;
    if (t < 0 || t >= LH_CHAT_N || (n && !m))
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!m[i].role || !m[i].content)
            return -EINVAL;
    sbuf b = {0};
    put(&b, ""); /* an empty conversation is "" and not NULL */
    if (render_uniform(&b, t, m, n, add) || render_roles(&b, t, m, n, add)) {
        /* done */
    } else if (t == LH_CHAT_MISTRAL_V7 || t == LH_CHAT_MISTRAL_V7_TEKKEN) {
        const char *sp = t == LH_CHAT_MISTRAL_V7 ? " " : "";
        for (size_t i = 0; i < n; i++) {
            if (is(m[i].role, "system")) {
                put(&b, "[SYSTEM_PROMPT]");
                put(&b, sp);
                put(&b, m[i].content);
                put(&b, "[/SYSTEM_PROMPT]");
            } else if (is(m[i].role, "user")) {
                put(&b, "[INST]");
                put(&b, sp);
                put(&b, m[i].content);
                put(&b, "[/INST]");
            } else {
                put(&b, sp);
                put(&b, m[i].content);
                put(&b, "</s>");
            }
        }
    } else if (t == LH_CHAT_MISTRAL_V1 || t == LH_CHAT_MISTRAL_V3 || t == LH_CHAT_MISTRAL_V3_TEKKEN) {
        render_mistral(&b, t, m, n);
    } else if (t >= LH_CHAT_LLAMA2 && t <= LH_CHAT_LLAMA2_SYS_STRIP) {
        render_llama2(&b, t, m, n);
    } else if (t == LH_CHAT_MONARCH) {
        for (size_t i = 0; i < n; i++) {
            put(&b, i ? "<s>" : ""); /* the first BOS is the tokenizer's */
            put(&b, m[i].role);
            put(&b, "\n");
            put(&b, m[i].content);
            put(&b, "</s>\n");
        }
        if (add)
            put(&b, "<s>assistant\n");
    } else if (t == LH_CHAT_GEMMA || t == LH_CHAT_ORION) {
        /* no system role: the system prompt goes in front of the next user turn */
        sbuf sys = {0};
        for (size_t i = 0; i < n; i++) {
            if (is(m[i].role, "system")) {
                if (t == LH_CHAT_GEMMA)
                    put_trim(&sys, m[i].content);
                else
                    put(&sys, m[i].content);
                continue;
            }
            int user = is(m[i].role, "user");
            if (t == LH_CHAT_GEMMA) {
                put(&b, "<start_of_turn>");
                put(&b, is(m[i].role, "assistant") ? "model" : m[i].role);
                put(&b, "\n");
                if (sys.len && !is(m[i].role, "assistant")) {
                    put(&b, sys.s);
                    put(&b, "\n\n");
                    sys.len = 0;
                }
                put_trim(&b, m[i].content);
                put(&b, "<end_of_turn>\n");
            } else if (user) {
                put(&b, "Human: ");
                if (sys.len) {
                    put(&b, sys.s);
                    put(&b, "\n\n");
                    sys.len = 0;
                }
                put(&b, m[i].content);
                put(&b, "\n\nAssistant: </s>");
            } else {
                put(&b, m[i].content);
                put(&b, "</s>");
            }
        }
        b.oom |= sys.oom;
        free(sys.s);
        if (add && t == LH_CHAT_GEMMA)
            put(&b, "<start_of_turn>model\n");
    } else if (t == LH_CHAT_OPENCHAT) {
        for (size_t i = 0; i < n; i++) {
            if (is(m[i].role, "system")) {
                put(&b, m[i].content);
            } else {
                put(&b, "GPT4 Correct ");
                char c0 = m[i].role[0];
                if (c0 >= 'a' && c0 <= 'z')
                    c0 = (char)(c0 - 'a' + 'A');
                if (c0)
                    put_n(&b, &c0, 1);
                put(&b, m[i].role[0] ? m[i].role + 1 : "");
                put(&b, ": ");
                put(&b, m[i].content);
            }
            put(&b, "<|end_of_turn|>");
        }
        if (add)
            put(&b, "GPT4 Correct Assistant:");
    } else if (t == LH_CHAT_MINICPM) {
        for (size_t i = 0; i < n; i++) {
            if (is(m[i].role, "user")) {
                put(&b, "<\xe7\x94\xa8\xe6\x88\xb7>"); /* <用户> */
                put_trim(&b, m[i].content);
                put(&b, "<AI>");
            } else {
                put_trim(&b, m[i].content);
            }
        }
    } else if (t == LH_CHAT_GIGACHAT) {
        size_t i = 0;
        put(&b, "<s>");
        if (n && is(m[0].role, "system")) {
            put(&b, m[0].content);
            put(&b, "<|message_sep|>");
            i = 1;
        }
        for (; i < n; i++) {
            if (is(m[i].role, "user")) {
                put(&b, "user<|role_sep|>");
                put(&b, m[i].content);
                put(&b, "<|message_sep|>available functions<|role_sep|>[]<|message_sep|>");
            } else if (is(m[i].role, "assistant")) {
                put(&b, "assistant<|role_sep|>");
                put(&b, m[i].content);
                put(&b, "<|message_sep|>");
            }
        }
        if (add)
            put(&b, "assistant<|role_sep|>");
    } else if (t == LH_CHAT_BAILING || t == LH_CHAT_BAILING_THINK || t == LH_CHAT_BAILING2) {
        if (t == LH_CHAT_BAILING2 && !(n && is(m[0].role, "system")))
            put(&b, "<role>SYSTEM</role>detailed thinking off<|role_end|>");
        for (size_t i = 0; i < n; i++) {
            put_bailing_role(&b, m[i].role);
            put(&b, m[i].content);
            if (t == LH_CHAT_BAILING2)
                put(&b, "<|role_end|>");
        }
        if (add) {
            put(&b, "<role>ASSISTANT</role>");
            if (t == LH_CHAT_BAILING_THINK)
                put(&b, "<think>");
        }
    } else {
        free(b.s);
        return -EINVAL;
    }
    if (b.oom) {
        free(b.s);
        return -ENOMEM;
    }
    *outp = b.s;
    if (lenp)
        *lenp = b.len;
    return 0;
}

const char *const *lh_chat_stops(lh_chat_tmpl t)
{
    static const char *const none[] = {NULL};
    static const char *const chatml[] = {"<|im_end|>", "<|im_start|>", NULL};
    static const char *const inst[] = {"</s>", "[INST]", NULL};
    static const char *const phi3[] = {"<|end|>", "<|user|>", NULL};
    static const char *const zephyr[] = {"<|endoftext|>", "<|user|>", NULL};
    static const char *const gemma[] = {"<end_of_turn>", "<start_of_turn>", NULL};
    static const char *const llama3[] = {"<|eot_id|>", "<|start_header_id|>", NULL};
    static const char *const vicuna[] = {"</s>", "USER:", NULL};
    static const char *const deepseek[] = {"<|EOT|>", "### Instruction:", NULL};
    static const char *const command_r[] = {"<|END_OF_TURN_TOKEN|>", NULL};
    static const char *const openchat[] = {"<|end_of_turn|>", "GPT4 Correct User:", NULL};
    static const char *const granite[] = {"<|end_of_text|>", "<|start_of_role|>", NULL};
    static const char *const glm[] = {"<|user|>", "<|observation|>", NULL};
    static const char *const exaone[] = {"[|endofturn|]", NULL};
    static const char *const megrez[] = {"<|turn_end|>", NULL};
    static const char *const seed[] = {"<seed:eos>", NULL};
    switch (t) {
    case LH_CHAT_CHATML: case LH_CHAT_PHI4: return chatml;
    case LH_CHAT_LLAMA2: case LH_CHAT_LLAMA2_SYS: case LH_CHAT_LLAMA2_SYS_BOS:
    case LH_CHAT_LLAMA2_SYS_STRIP: case LH_CHAT_MISTRAL_V1: case LH_CHAT_MISTRAL_V3:
    case LH_CHAT_MISTRAL_V3_TEKKEN: case LH_CHAT_MISTRAL_V7: case LH_CHAT_MISTRAL_V7_TEKKEN:
        return inst;
    case LH_CHAT_PHI3: case LH_CHAT_FALCON3: return phi3;
    case LH_CHAT_ZEPHYR: return zephyr;
    case LH_CHAT_GEMMA: return gemma;
    case LH_CHAT_LLAMA3: return llama3;
    case LH_CHAT_VICUNA: case LH_CHAT_VICUNA_ORCA: return vicuna;
    case LH_CHAT_DEEPSEEK: return deepseek;
    case LH_CHAT_COMMAND_R: return command_r;
    case LH_CHAT_OPENCHAT: return openchat;
    case LH_CHAT_GRANITE: return granite;
    case LH_CHAT_CHATGLM3: case LH_CHAT_CHATGLM4: case LH_CHAT_GLMEDGE: return glm;
    case LH_CHAT_EXAONE3: case LH_CHAT_EXAONE4: return exaone;
    case LH_CHAT_MEGREZ: return megrez;
    case LH_CHAT_SEED_OSS: return seed;
    default: return none;
    }
}
