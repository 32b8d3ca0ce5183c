/* daemon/scheduler (lh_sched_*; not sched.h, which would shadow the system <sched.h> under
 * -Idaemon) — the compute side of longheadsd: request queue, fairness, slots (KV caches),
 * prefill in slices, decoding, cancellation, prompt reuse.
 *
 * One compute thread owns the model's contexts.  The poll loop (server.c) hands it requests
 * with lh_sched_submit and gets results back through the emit callback, which the compute
 * thread calls without holding any lock; the event and everything it points to are valid only
 * during the call.  This module knows nothing of sockets or protobuf: owners are opaque ids
 * (server.c uses connection ids), errors are lh_err_code values.
 *
 * Tokenize and detokenize run on a second, "prep" thread, one at a time: a huge Tokenize never
 * delays a generation and its scratch memory is bounded by one request.  A request taken off the
 * queue is "admitting" (tokenized, given a slot, or run by the prep thread) until it is active or
 * done; cancel, disconnect and the duplicate-id check see admitting requests too.
 *
 * The model file is checked (stat) before each request: changed in place, every request is
 * refused from then on and lh_sched_stats.fatal tells the server to stop.
 *
 * Generate and Chat run on the engine's one generation loop (engine/gen.h: sampling, UTF-8-safe
 * text, stop strings, end of generation, the prompt cache's common prefix), driven one slice or
 * one token per step; this module only schedules it.  Score's prefill and log-probabilities
 * (lh_gen_logprob) stay here.
 *
 * Work is done in steps, and no step is longer than about one prefill slice: a prefill slice
 * (its size adapted so that it takes about slice_ms), one decoded token, one tokenization.
 * Between steps the thread admits queued requests, finishes cancelled or expired ones, and
 * round-robins over the active requests (one per slot), so Cancel — or a disconnect — takes
 * effect within one slice, and N slots interleave N generations.
 *
 * Fairness: queued requests are admitted in order of a virtual tag, tag = max(clock, the
 * owner's last tag) + 1, so an owner that queues many requests does not starve others
 * (round-robin between owners, FIFO within one).  A throttled owner (its client reads slowly)
 * is skipped until it is unthrottled; its requests keep their slots.
 *
 * Slots: each slot is an lh_ctx with its own attention parameters.  A request goes to a free slot
 * with the same attention parameters, preferring the longest common prefix between the prompt
 * and the slot's cached tokens (the prompt cache: editors resend the same file).  When no free
 * slot matches, the least recently used free slot is recreated with the request's parameters
 * (its cache is lost).  Modes not in the allowed set are refused at submit.
 *
 * Every accepted request ends with exactly one LH_EV_FINAL (generate), LH_EV_SCORE,
 * LH_EV_TOKENS, LH_EV_TEXT or LH_EV_ERROR event, also when cancelled or at shutdown.
 */
#ifndef LH_SCHEDULER_H
#define LH_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "chat.h"
#include "model.h"
#include "pcache.h"
#include "sampler.h"

/* The daemon's one error space (the scheduler's and the server's); daemon/protocol.c maps it to
 * the wire's ErrorCode, once, at the edge. */
typedef enum {
    LH_ERR_NONE = 0,
    LH_ERR_INVALID_ARGUMENT,
    LH_ERR_LIMIT,
    LH_ERR_BUSY,
    LH_ERR_DUPLICATE_ID,
    LH_ERR_TIMEOUT,
    LH_ERR_SHUTTING_DOWN,
    LH_ERR_INTERNAL,
    /* the connection's, from server.c */
    LH_ERR_BAD_FRAME,        /* framing broken (over the size limit); the connection closes */
    LH_ERR_BAD_MESSAGE,      /* the frame is not a valid Request */
    LH_ERR_VERSION,          /* Hello with another protocol version; the connection closes */
    LH_ERR_HANDSHAKE,        /* a request before Hello, or Hello twice */
    LH_ERR_UNKNOWN_REQUEST,  /* no request type this daemon knows */
    LH_ERR_PERMISSION,       /* the peer's uid/gid is not allowed; the connection closes */
} lh_err_code;

typedef enum {
    LH_FINISH_NONE = 0, LH_FINISH_LENGTH, LH_FINISH_STOP, LH_FINISH_EOS, LH_FINISH_CANCELLED,
    LH_FINISH_ERROR,
} lh_finish;

typedef enum { LH_REQ_GENERATE, LH_REQ_SCORE, LH_REQ_TOKENIZE, LH_REQ_DETOKENIZE } lh_req_kind;

/* A request as the daemon understands it.  lh_sched_submit takes ownership of the heap parts
 * (text, tokens, stop and its strings) whatever it returns; lh_sched_args_deinit frees them. */
typedef struct {
    lh_req_kind kind;
    char *text;              /* prompt / text to tokenize or score (may be NULL) */
    size_t text_len;
    int32_t *tokens;         /* prompt as ids (generate) or ids to detokenize */
    size_t n_tokens;
    int add_bos;             /* tokenize only */
    int special;             /* tokenize, generate: special token texts become those tokens */
    uint32_t max_tokens;     /* 0: config default */
    lh_sampler_params sp;
    char **stop;
    size_t n_stop;
    int attn;                /* -1: default, else lh_attn_mode */
    size_t chunk, window;    /* 0: default */
    int score;               /* -1: default, else lh_score_mode */
    size_t recent;           /* LongHeads recent chunks, 0: default */
    uint32_t timeout_ms;     /* 0: config timeout; otherwise the smaller wins */
    uid_t uid;               /* for the request's log line */
    lh_chat_msg *msgs;       /* generate: when n_msgs > 0, the prompt is these messages rendered
                              * with the model's chat template (strings owned, like text) */
    size_t n_msgs;
} lh_sched_args;

void lh_sched_args_deinit(lh_sched_args *a);

typedef struct {
    size_t n_slots;              /* default 1 */
    lh_ctx_params ctx;           /* default context parameters of every slot */
    int allow_full, allow_longheads;
    size_t max_prompt_tokens;    /* 0: the context size */
    size_t max_queued;           /* queued (not yet started) requests, all owners; default 64 */
    size_t max_per_owner;        /* requests in flight per owner; default 16 */
    double timeout_s;            /* per request, queueing included; 0: none */
    double slice_ms;             /* target duration of a prefill slice; default 20 */
    uint32_t max_tokens_default; /* default 256 */
    int n_threads;               /* OpenMP threads of the compute thread; 0: the runtime's */
    double slot_idle_s;          /* a slot unused this long gives its KV cache back; 0: never;
                                  * default 300 */
    const char *cache_dir;       /* the persistent prompt cache (engine/pcache.h), or NULL: after
                                  * a generation whose prompt has at least cache_min_tokens, the
                                  * prompt's state is saved there; a new request whose prompt
                                  * starts with a saved prefix longer than the slot's cached one
                                  * loads it first (borrowed string) */
    size_t cache_max_bytes;      /* disk bound of the prompt cache (0: off) */
    size_t cache_min_tokens;     /* default 1024 */
} lh_sched_config;

void lh_sched_config_default(lh_sched_config *c);

typedef enum {
    LH_EV_PROGRESS, LH_EV_TOKEN, LH_EV_FINAL, LH_EV_SCORE, LH_EV_TOKENS, LH_EV_TEXT, LH_EV_ERROR,
} lh_ev_kind;

typedef struct {
    lh_ev_kind kind;
    uint64_t owner, id;
    size_t n_done, n_total;          /* PROGRESS */
    int32_t token;                   /* TOKEN */
    const char *text;                /* TOKEN, FINAL (held-back text), TEXT: valid UTF-8 except
                                      * for TEXT (detokenize gives raw bytes) */
    size_t text_len;
    const int32_t *tokens;           /* TOKENS, SCORE */
    size_t n_tokens;
    const float *logprobs;           /* SCORE: n_tokens - 1 values */
    double total;                    /* SCORE */
    lh_finish finish;                /* FINAL */
    size_t n_prompt, n_reused, n_generated;
    double queue_ms, prefill_ms, decode_ms;
    lh_err_code err;                 /* FINAL with LH_FINISH_ERROR, ERROR */
    const char *err_msg;
} lh_sched_event;

typedef void (*lh_sched_emit_fn)(void *ud, const lh_sched_event *ev);

typedef struct lh_sched lh_sched;

/* Creates the slots (contexts) and starts the compute thread.  Returns 0, -EINVAL (bad context
 * parameters, logged by the engine), -ENOMEM, -errno (thread). */
int lh_sched_new(lh_sched **sp, const lh_model *m, const lh_sched_config *cfg,
                 lh_sched_emit_fn emit, void *ud);
/* Cancels everything still in flight (their final events are emitted), stops the thread, frees.
 * NULL is accepted. */
void lh_sched_free(lh_sched *s);

/* The default context parameters, resolved (n_ctx, chunk, window as the engine set them). */
const lh_ctx_params *lh_sched_ctx_params(const lh_sched *s);
const lh_sched_config *lh_sched_config_get(const lh_sched *s);
/* The chat template family requests with messages are rendered with, and a description for
 * people ("llama3", "chatml (default: the model has none)"). */
lh_chat_tmpl lh_sched_chat_template(const lh_sched *s, const char **descp);

/* Queues a request.  Returns 0, or an lh_err_code with a message for the client in err (the
 * request was not accepted: no event will follow).  Takes ownership of a's heap parts. */
int lh_sched_submit(lh_sched *s, uint64_t owner, uint64_t id, lh_sched_args *a, char *err,
                    size_t err_size);
/* Cancels one request of owner (ignored when unknown or finished). */
void lh_sched_cancel(lh_sched *s, uint64_t owner, uint64_t id);
/* Cancels every request of owner and forgets it (the connection went away). */
void lh_sched_cancel_owner(lh_sched *s, uint64_t owner);
/* Pauses (on != 0) or resumes the owner's requests (backpressure). */
void lh_sched_set_throttled(lh_sched *s, uint64_t owner, int on);
/* Refuse new requests from now on (LH_ERR_SHUTTING_DOWN); with cancel, cancel all in flight. */
void lh_sched_shutdown(lh_sched *s, int cancel);

typedef struct {
    size_t n_queued, n_active, n_admitting, n_inflight;
    uint64_t n_served;
    int fatal;                /* the model file changed in place: the daemon must stop */
    double heartbeat_age_s;   /* seconds since the compute thread last went round its loop */
} lh_sched_stats;
void lh_sched_get_stats(lh_sched *s, lh_sched_stats *st);

typedef struct {
    int busy;
    size_t n_cached;        /* tokens cached after the last request the slot ran */
    size_t n_ctx;
    lh_attn_mode attn;
    size_t chunk, window;
    lh_score_mode score;
    size_t recent;          /* LongHeads slots: the last chunks every head keeps */
    size_t kv_bytes;        /* n_cached x the context's bytes per token */
    size_t kv_disk_bytes;   /* with --kv-dir: the KV cache's part of kv_bytes, which lives in its
                             * file on disk (only a budget's worth of its pages is resident) */
} lh_sched_slot_status;
/* Fills out[0 .. min(cap, slots)); returns the number of slots. */
size_t lh_sched_get_slots(lh_sched *s, lh_sched_slot_status *out, size_t cap);

#endif
