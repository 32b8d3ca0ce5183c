/* longheads.h — liblongheads, the client library of the longheads daemon (longheadsd).
 *
 * Connects to the daemon over its Unix socket, does the versioned handshake, and runs requests:
 * generate (a token stream delivered to a callback), cancel, info, tokenize, detokenize, score,
 * health.  Link with -llongheads (pkg-config longheads).
 *
 * Contract:
 * - Functions return 0, a negative -errno (system failure: connect, read, write), or a positive
 *   LH_CLIENT_E_* code.  lh_client_strerror() names any of them; after LH_CLIENT_E_SERVER,
 *   lh_client_last_error() has the daemon's message (what went wrong and what to do).
 * - The library never prints, never exits and never raises SIGPIPE.
 * - One lh_client is one connection.  Requests on it run one at a time (calls are serialised by
 *   the caller); lh_client_cancel() is the exception: it may be called from any thread, or from
 *   the generate callback, while lh_client_generate runs.
 * - Pointers handed to callbacks are valid only during the call.
 *
 * Socket path: the path given, else $LONGHEADS_SOCKET, else $XDG_RUNTIME_DIR/longheads.sock,
 * else /run/longheads/longheads.sock for root, else /tmp/longheads-$UID/longheads.sock.
 */
#ifndef LONGHEADS_H
#define LONGHEADS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LH_CLIENT_PROTOCOL_VERSION 1u

enum {
    LH_CLIENT_E_PROTOCOL = 1,  /* the daemon sent something this library cannot understand */
    LH_CLIENT_E_VERSION = 2,   /* the daemon speaks another protocol version */
    LH_CLIENT_E_SERVER = 3,    /* the daemon answered with an error: lh_client_last_error() */
    LH_CLIENT_E_CLOSED = 4,    /* the daemon closed the connection */
    LH_CLIENT_E_TIMEOUT = 5,   /* connect/handshake did not finish in time */
    LH_CLIENT_E_LIMIT = 6,     /* an output buffer is too small (the needed size is returned) */
    LH_CLIENT_E_ARGUMENT = 7,  /* an invalid argument (socket path too long, NULL text, ...) */
};

/* Error codes of the daemon (lh_client_last_error_code), as in longheads.proto ErrorCode. */
enum {
    LH_CLIENT_ERR_BAD_FRAME = 1, LH_CLIENT_ERR_BAD_MESSAGE = 2, LH_CLIENT_ERR_VERSION = 3,
    LH_CLIENT_ERR_HANDSHAKE = 4, LH_CLIENT_ERR_UNKNOWN_REQUEST = 5,
    LH_CLIENT_ERR_INVALID_ARGUMENT = 6, LH_CLIENT_ERR_LIMIT = 7, LH_CLIENT_ERR_BUSY = 8,
    LH_CLIENT_ERR_DUPLICATE_ID = 9, LH_CLIENT_ERR_TIMEOUT = 10, LH_CLIENT_ERR_SHUTTING_DOWN = 11,
    LH_CLIENT_ERR_PERMISSION = 12, LH_CLIENT_ERR_INTERNAL = 13,
};

typedef enum {
    LH_CLIENT_FINISH_NONE = 0, LH_CLIENT_FINISH_LENGTH = 1, LH_CLIENT_FINISH_STOP = 2,
    LH_CLIENT_FINISH_EOS = 3, LH_CLIENT_FINISH_CANCELLED = 4, LH_CLIENT_FINISH_ERROR = 5,
} lh_client_finish;

typedef enum {
    LH_CLIENT_ATTN_DEFAULT = 0, LH_CLIENT_ATTN_FULL = 1, LH_CLIENT_ATTN_LONGHEADS = 2,
} lh_client_attn;

/* How LongHeads scores chunks: the paper's representations, or the bound from the keys. */
typedef enum {
    LH_CLIENT_SCORE_DEFAULT = 0, LH_CLIENT_SCORE_REP = 1, LH_CLIENT_SCORE_BOUND = 2,
} lh_client_chunk_score;

typedef struct lh_client lh_client;

typedef struct {
    char desc[256];
    char path[512];
    char kv_type[8];
    char server_version[32];
    uint64_t n_params;
    uint32_t n_vocab, n_ctx_train, n_layer, n_embd, n_head, n_head_kv;
    uint32_t n_ctx, n_slots, max_prompt_tokens, max_frame;
    int32_t bos, eos;
    lh_client_attn attn_default;
    int attn_full_allowed, attn_longheads_allowed;
    uint32_t chunk_default, window_default;
    lh_client_chunk_score score_default;  /* LH_CLIENT_SCORE_DEFAULT from a daemon that does not say */
    uint32_t recent_default;   /* LongHeads: the last chunks every head keeps (0: not said) */
} lh_client_model_info;

/* Resolves the socket path as described above into buf (cap bytes).  Returns 0 or
 * LH_CLIENT_E_LIMIT. */
int lh_client_socket_path(const char *path, char *buf, size_t cap);

/* Connects and does the handshake, within timeout_ms (<= 0: 5000).  path NULL: the default. */
int lh_client_connect(lh_client **cp, const char *path, int timeout_ms);
/* As lh_client_connect; when the daemon refused the connection (LH_CLIENT_E_SERVER or
 * LH_CLIENT_E_VERSION: not allowed, too many connections, shutting down, another protocol
 * version) its message goes to err (err_size bytes, NUL-terminated; "" otherwise) and its code
 * (LH_CLIENT_ERR_*, 0 otherwise) to *err_codep.  err and err_codep may be NULL. */
int lh_client_connect_err(lh_client **cp, const char *path, int timeout_ms, char *err,
                          size_t err_size, int *err_codep);
/* Bounds every later wait for the daemon on c: a call (info, health, tokenize, detokenize,
 * score) returns LH_CLIENT_E_TIMEOUT when its reply has not come within timeout_ms, a generate
 * when no frame came for timeout_ms (a slow but progressing stream is not cut).  0: wait as long
 * as it takes (the default; the daemon's own per-request timeout still applies). */
void lh_client_set_timeout(lh_client *c, int timeout_ms);
/* Closes the connection and frees; NULL is accepted. */
void lh_client_close(lh_client *c);
/* The model the daemon announced in the handshake. */
const lh_client_model_info *lh_client_model(const lh_client *c);
/* The chat template the daemon renders lh_client_chat with ("llama3", "chatml (default: the
 * model has no chat template)"; "" from an older daemon). */
const char *lh_client_chat_template(const lh_client *c);

typedef struct {
    const char *prompt;        /* text (may be NULL or empty: just BOS) */
    size_t prompt_len;         /* bytes; (size_t)-1: strlen(prompt) */
    const int32_t *tokens;     /* when n_tokens > 0: the prompt as token ids, used as given */
    size_t n_tokens;
    uint32_t max_tokens;       /* 0: the daemon's default */
    float temperature;         /* 0: greedy */
    int32_t top_k;
    float top_p, min_p, repeat_penalty;
    int32_t repeat_last_n;
    uint64_t seed;
    int has_seed;              /* 0: a random seed is chosen */
    const char *const *stop;   /* n_stop stop strings */
    size_t n_stop;
    lh_client_attn attn;
    uint32_t chunk, window;    /* 0: the daemon's defaults */
    uint32_t timeout_ms;       /* 0: the daemon's per-request timeout */
    int special;               /* 1: special token texts in the prompt (<|eot_id|>, <s>) become
                                * those tokens (as lh_client_tokenize's LH_CLIENT_TOK_SPECIAL) */
    lh_client_chunk_score score;/* LongHeads chunk score (default: the daemon's) */
    uint32_t recent;           /* LongHeads: the last chunks every head keeps, the current one
                                * included (0: the daemon's default) */
} lh_client_gen_opts;

/* Defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05 (as ollama), repeat_penalty 1 (off,
 * as llama.cpp: so that temperature 0 is plain greedy),
 * random seed, everything else the daemon's default. */
void lh_client_gen_opts_default(lh_client_gen_opts *o);

typedef enum { LH_CLIENT_EV_PROGRESS = 1, LH_CLIENT_EV_TOKEN = 2 } lh_client_event_kind;

typedef struct {
    lh_client_event_kind kind;
    uint64_t n_done, n_total;  /* PROGRESS: prompt tokens in the cache / in all */
    int32_t token;             /* TOKEN: the id, or -1 for text flushed at the end */
    const char *text;          /* TOKEN: valid UTF-8, not NUL-terminated, may be empty; may contain
                                * NUL bytes (a <0x00> piece): use text_len, not strlen */
    size_t text_len;
} lh_client_event;

/* Return 0 to go on; non-zero cancels the request (as lh_client_cancel). */
typedef int (*lh_client_gen_cb)(const lh_client_event *ev, void *ud);

typedef struct {
    lh_client_finish finish;
    uint32_t n_prompt, n_reused, n_generated;
    double queue_ms, prefill_ms, decode_ms, prefill_tps, decode_tps;
    int error_code;            /* daemon error code when finish is LH_CLIENT_FINISH_ERROR */
    char error[256];
} lh_client_result;

/* Runs one generation; events go to cb (may be NULL).  Returns 0 when the daemon sent the final
 * frame (whatever its finish reason, in *res), else an error; LH_CLIENT_E_SERVER when the request
 * was refused before it started (then res->finish is LH_CLIENT_FINISH_ERROR too). */
int lh_client_generate(lh_client *c, const lh_client_gen_opts *o, lh_client_gen_cb cb, void *ud,
                       lh_client_result *res);
typedef struct {
    const char *role;          /* "system", "user" or "assistant" */
    const char *content;       /* NUL-terminated UTF-8 */
} lh_client_chat_msg;

/* Runs one chat turn: the whole conversation so far (earlier answers included, so that the
 * daemon's prompt cache reuses them), rendered by the daemon with the model's chat template and
 * continued as lh_client_generate does (o's prompt and tokens must be unset; its stop strings
 * are added to the template's end-of-turn markers).  Events and result as lh_client_generate;
 * cancel with lh_client_cancel. */
int lh_client_chat(lh_client *c, const lh_client_chat_msg *msgs, size_t n,
                   const lh_client_gen_opts *o, lh_client_gen_cb cb, void *ud,
                   lh_client_result *res);
/* Cancels the generation in progress on c, if any.  Thread-safe; async-signal-unsafe.  The
 * generate call then returns with finish LH_CLIENT_FINISH_CANCELLED.  Returns 0 or -errno. */
int lh_client_cancel(lh_client *c);

typedef struct {
    lh_client_model_info model;
    char socket_path[256];
} lh_client_info;
int lh_client_get_info(lh_client *c, lh_client_info *out);

typedef struct {
    char status[16];           /* "ok" or "draining" */
    double uptime_s;
    uint32_t n_connections, n_queued, n_active;
    uint64_t n_served;
} lh_client_health;
int lh_client_get_health(lh_client *c, lh_client_health *out);

#define LH_CLIENT_MAX_SLOTS 64
typedef struct {
    int busy;
    uint32_t n_cached, n_ctx;  /* tokens in its cache after its last request; capacity */
    lh_client_attn attn;
    uint32_t chunk, window;
    uint64_t kv_bytes;         /* bytes those cached tokens hold (KV cache, LongHeads state) */
    uint64_t kv_disk_bytes;    /* of kv_bytes, the KV cache in its file on disk (--kv-dir) */
    lh_client_chunk_score score;/* LongHeads slots */
    uint32_t recent;           /* LongHeads slots: the last chunks every head keeps */
} lh_client_slot;
typedef struct {
    lh_client_health health;
    uint64_t rss_bytes;        /* the daemon's resident memory */
    uint32_t n_slots;          /* slots[0 .. min(n_slots, LH_CLIENT_MAX_SLOTS)) are filled */
    lh_client_slot slots[LH_CLIENT_MAX_SLOTS];
} lh_client_status;
/* Health plus the slots (cached tokens, attention) and the daemon's memory. */
int lh_client_get_status(lh_client *c, lh_client_status *out);

/* Token ids of text into out[0..cap); *n_outp the count needed.  flags: LH_CLIENT_TOK_* (a
 * plain 1 is LH_CLIENT_TOK_BOS).  Returns LH_CLIENT_E_LIMIT when cap is too small (out holds
 * the first cap). */
enum {
    LH_CLIENT_TOK_BOS = 1,     /* BOS first, when the model's vocabulary uses one */
    LH_CLIENT_TOK_SPECIAL = 2, /* special token texts (<|eot_id|>, <s>) become those tokens */
};
int lh_client_tokenize(lh_client *c, const char *text, size_t len, int flags, int32_t *out,
                       size_t cap, size_t *n_outp);
/* Text of ids into buf (always NUL-terminated when cap > 0); *lenp the bytes needed. */
int lh_client_detokenize(lh_client *c, const int32_t *ids, size_t n, char *buf, size_t cap,
                         size_t *lenp);
/* Log-probabilities of text under the model: logprobs[i] = log p(token i+1 | tokens 0..i) with
 * token 0 = BOS; *n_outp the count (tokens - 1), *totalp their sum (may be NULL). */
int lh_client_score(lh_client *c, const char *text, size_t len, float *logprobs, size_t cap,
                    size_t *n_outp, double *totalp);
/* The same with an attention mode (LH_CLIENT_ATTN_DEFAULT: the daemon's) and LongHeads chunk
 * and window (0: the daemon's): a daemon serves a score from a slot with those settings, so the
 * daemon's own keep their prompt cache. */
int lh_client_score_attn(lh_client *c, const char *text, size_t len, lh_client_attn attn,
                         uint32_t chunk, uint32_t window, float *logprobs, size_t cap,
                         size_t *n_outp, double *totalp);
/* The attention settings of a score, each 0 / DEFAULT for the daemon's. */
typedef struct {
    lh_client_attn attn;
    uint32_t chunk, window;
    lh_client_chunk_score score;  /* LongHeads chunk score */
    uint32_t recent;              /* LongHeads: the last chunks every head keeps */
} lh_client_score_opts;
/* The same with every attention setting; o NULL: the daemon's defaults. */
int lh_client_score_ex(lh_client *c, const char *text, size_t len, const lh_client_score_opts *o,
                       float *logprobs, size_t cap, size_t *n_outp, double *totalp);

const char *lh_client_strerror(int err);
/* The daemon's last error message and code on this connection ("" and 0 if none). */
const char *lh_client_last_error(const lh_client *c);
int lh_client_last_error_code(const lh_client *c);

#ifdef __cplusplus
}
#endif

#endif
