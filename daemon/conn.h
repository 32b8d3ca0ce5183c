/* daemon/conn — one client connection of longheadsd: its socket, the frame reader that turns
 * bytes into complete frames (proto/frame.h), and the output buffer that holds what the socket
 * has not taken yet.  The poll loop (server.c) owns the connections; this module does their
 * I/O and knows nothing of the protocol's messages or the scheduler.
 *
 * Timeouts are the server's policy; the connection only records when it was opened and when
 * the frame now arriving started (t_frame, 0 when none is partial).
 */
#ifndef LH_CONN_H
#define LH_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "anet.h"
#include "frame.h"

typedef struct lh_conn {
    uint64_t id;
    int fd;
    uid_t uid;
    gid_t gid;
    pid_t pid;
    lh_frame_reader rd;
    size_t max_frame;
    double t_open;              /* accepted at (handshake timeout) */
    double t_frame;             /* a partial frame started arriving at, or 0 (frame timeout) */
    int hello;                  /* handshake done */
    int closing;                /* close once the output is flushed */
    int throttled;
    uint8_t *out;               /* unsent output: out[out_off .. out_len) */
    size_t out_off, out_len, out_cap;
} lh_conn;

/* A connection on fd (taken: lh_conn_free closes it), accepted at now.  0 or -ENOMEM (fd left
 * open). */
int lh_conn_new(lh_conn **cp, uint64_t id, int fd, const lh_anet_peer *peer, size_t max_frame,
                double now);
/* Closes the socket and frees; NULL accepted. */
void lh_conn_free(lh_conn *c);

/* Output not yet written, in bytes. */
size_t lh_conn_pending(const lh_conn *c);
/* Appends len bytes to the output.  0 or -ENOMEM. */
int lh_conn_queue(lh_conn *c, const uint8_t *data, size_t len);
/* Writes what the socket takes.  0, or -1 when the connection must close now. */
int lh_conn_write(lh_conn *c);

/* Reads what is there (up to 16 reads of 64 KiB, stopping when the connection starts closing)
 * and hands each complete frame to on_frame (valid during the call).  Returns 0; -EPIPE when
 * it must close now (end of stream, a read error); LH_E_LIMIT (a frame over max_frame) or
 * -ENOMEM (no memory for a frame): the connection is then closing, and the caller says why. */
typedef void (*lh_conn_frame_fn)(void *ud, lh_conn *c, const uint8_t *frame, size_t size);
int lh_conn_read(lh_conn *c, lh_conn_frame_fn on_frame, void *ud, double now);

#endif
