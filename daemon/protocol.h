/* daemon/protocol — the edge between the wire (proto/longheads.proto, protobuf-c) and the
 * daemon: the only daemon file that sees protobuf types.  A Request frame becomes an
 * lh_proto_request (Generate, Chat, Score, Tokenize and Detokenize as lh_sched_args, ready for
 * lh_sched_submit); scheduler events, errors and the Hello/Info/Health replies become Response
 * frames.  Error codes are the daemon's lh_err_code, mapped to the wire's ErrorCode here once.
 *
 * Frames come back malloc'd with `room` bytes reserved in front of the frame for the caller's
 * bookkeeping (server.c puts its outbox link there): the block is room + *lenp bytes, the
 * frame (u32 LE length header + message) starts at offset room.  The caller frees the block.
 */
#ifndef LH_PROTOCOL_H
#define LH_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "scheduler.h"

#define LH_SERVER_VERSION "0.1.0"

typedef enum {
    LH_MSG_HELLO,       /* protocol_version */
    LH_MSG_SUBMIT,      /* args: generate, chat, score, tokenize, detokenize */
    LH_MSG_CANCEL,      /* target_id */
    LH_MSG_INFO,
    LH_MSG_HEALTH,
    LH_MSG_UNKNOWN,     /* a request type this daemon does not know (a newer client) */
} lh_msg_kind;

typedef struct {
    lh_msg_kind kind;
    uint64_t id;
    uint32_t protocol_version;  /* HELLO */
    uint64_t target_id;         /* CANCEL */
    lh_sched_args args;         /* SUBMIT (owned: lh_proto_request_deinit or lh_sched_submit) */
    lh_err_code err;            /* SUBMIT: arguments refused (then args is empty), with err_msg */
    char err_msg[512];
} lh_proto_request;

/* Decodes one frame's payload.  Returns 0 (req filled; check req->err for refused arguments),
 * LH_ERR_BAD_MESSAGE (not a Request message). */
int lh_proto_decode(const uint8_t *data, size_t size, lh_proto_request *req);
void lh_proto_request_deinit(lh_proto_request *req);

/* The encoders: a frame as described above, or NULL when out of memory. */
uint8_t *lh_proto_event(const lh_sched_event *ev, size_t room, size_t *lenp);
uint8_t *lh_proto_error(uint64_t id, lh_err_code code, const char *msg, size_t room,
                        size_t *lenp);
/* Hello's reply and Info's: the model and the effective settings.  socket_path: Info only. */
uint8_t *lh_proto_hello_reply(uint64_t id, const lh_model *m, lh_sched *s, size_t max_frame,
                              size_t room, size_t *lenp);
uint8_t *lh_proto_info_reply(uint64_t id, const lh_model *m, lh_sched *s, size_t max_frame,
                             const char *socket_path, size_t room, size_t *lenp);

typedef struct {
    const char *status;       /* "ok", "draining" */
    double uptime_s;
    size_t n_connections;
    uint64_t rss_bytes;
} lh_proto_health;
/* Health's reply: h plus the scheduler's counters and slots. */
uint8_t *lh_proto_health_reply(uint64_t id, const lh_proto_health *h, lh_sched *s, size_t room,
                               size_t *lenp);

#endif
