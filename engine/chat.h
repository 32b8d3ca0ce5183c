/* engine/chat — chat messages (role, content) rendered into one prompt with a model's chat
 * template, without a Jinja engine.
 *
 * A GGUF model may carry its template as Jinja source (tokenizer.chat_template).  Instead of
 * evaluating it, lh_chat_detect recognises which of the common template families the source is
 * (by marker strings only that family uses, as llama.cpp's llama-chat.cpp does) and
 * lh_chat_render writes that family's format directly.  A name ("chatml", "llama3", ...) is
 * accepted wherever a source is.  Models without a template (the bundled stories260K) get
 * LH_CHAT_DEFAULT, and the caller says so.
 *
 * The renderings equal llama.cpp's for every family here: tests/test_chat.c checks them against
 * the expected strings of llama.cpp's tests/test-chat-template.cpp.
 *
 * Invariants: messages are rendered in order, role names are used as given (families that have
 * fixed role words map "user", "assistant" and "system" and skip roles they do not know, as
 * llama.cpp does); the rendering of a conversation is a prefix of the rendering of the same
 * conversation with more messages appended (so a daemon's prompt cache reuses earlier turns),
 * except for the families that move the system prompt into the first user turn (gemma, orion),
 * which only keep that property once the first user turn exists.
 * Ownership: lh_chat_render returns a malloc'd string the caller frees.
 */
#ifndef LH_CHAT_H
#define LH_CHAT_H

#include <stddef.h>

typedef enum {
    LH_CHAT_UNKNOWN = -1,
    LH_CHAT_CHATML = 0, LH_CHAT_LLAMA2, LH_CHAT_LLAMA2_SYS, LH_CHAT_LLAMA2_SYS_BOS,
    LH_CHAT_LLAMA2_SYS_STRIP, LH_CHAT_MISTRAL_V1, LH_CHAT_MISTRAL_V3, LH_CHAT_MISTRAL_V3_TEKKEN,
    LH_CHAT_MISTRAL_V7, LH_CHAT_MISTRAL_V7_TEKKEN, LH_CHAT_PHI3, LH_CHAT_PHI4, LH_CHAT_FALCON3,
    LH_CHAT_ZEPHYR, LH_CHAT_MONARCH, LH_CHAT_GEMMA, LH_CHAT_ORION, LH_CHAT_OPENCHAT,
    LH_CHAT_VICUNA, LH_CHAT_VICUNA_ORCA, LH_CHAT_DEEPSEEK, LH_CHAT_DEEPSEEK2, LH_CHAT_DEEPSEEK3,
    LH_CHAT_COMMAND_R, LH_CHAT_LLAMA3, LH_CHAT_CHATGLM3, LH_CHAT_CHATGLM4, LH_CHAT_GLMEDGE,
    LH_CHAT_MINICPM, LH_CHAT_EXAONE3, LH_CHAT_EXAONE4, LH_CHAT_GRANITE, LH_CHAT_GIGACHAT,
    LH_CHAT_MEGREZ, LH_CHAT_YANDEX, LH_CHAT_BAILING, LH_CHAT_BAILING_THINK, LH_CHAT_BAILING2,
    LH_CHAT_SEED_OSS,
    LH_CHAT_N
} lh_chat_tmpl;

/* The template used when a model has none: chatml (plain text markers any model can read). */
#define LH_CHAT_DEFAULT LH_CHAT_CHATML

typedef struct {
    const char *role;     /* "system", "user", "assistant" (NUL-terminated) */
    const char *content;  /* NUL-terminated UTF-8 */
} lh_chat_msg;

/* The family of a template given as Jinja source or as a name (len bytes, not necessarily
 * NUL-terminated).  Returns the family or LH_CHAT_UNKNOWN. */
lh_chat_tmpl lh_chat_detect(const char *src, size_t len);
/* The family's name ("chatml", "llama2-sys", ...); "unknown" for anything else. */
const char *lh_chat_name(lh_chat_tmpl t);

/* Renders n messages; add_assistant appends the opening of the assistant's turn (what the model
 * continues from).  *outp (malloc'd, NUL-terminated) and *lenp.  Returns 0, -EINVAL (unknown
 * family, NULL role/content), -ENOMEM. */
int lh_chat_render(lh_chat_tmpl t, const lh_chat_msg *msgs, size_t n, int add_assistant,
                   char **outp, size_t *lenp);

/* Text that ends the assistant's turn in family t (its end-of-turn marker as text, and the
 * opening of the next user turn), for use as stop strings: a NULL-terminated list. */
const char *const *lh_chat_stops(lh_chat_tmpl t);

#endif
