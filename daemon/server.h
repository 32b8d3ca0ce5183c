/* daemon/server — longheadsd's I/O: one poll loop over the listening Unix socket and the
 * connections, per-peer limits and backpressure.  The pieces it drives: anet.c (socket
 * helpers), conn.c (a connection's frame reader and output buffer), protocol.c (requests
 * decoded and responses encoded: the only daemon file that sees protobuf types).  Compute
 * happens on the scheduler's thread (scheduler.h); its events come back through a locked outbox
 * and an eventfd, are encoded as frames there and queued on the connection, so a slow client
 * never blocks the compute thread and a long prefill never blocks I/O.
 *
 * Backpressure: a connection whose unsent output exceeds 256 KiB is throttled (the scheduler
 * pauses its requests) until it drops below 64 KiB; above 8 MiB the daemon also stops reading
 * from it.  A peer that disconnects has all its requests cancelled.
 *
 * Per-peer limits: a connection must complete its Hello within handshake_s and every frame it
 * starts within frame_s (idle or dribbling sockets cannot hold connection slots); one uid may hold
 * at most max_conns_per_uid connections.  Out of file descriptors, the listener is not polled
 * (no busy loop) until a connection closes or a second passes; the condition is logged at most
 * every 10 s.
 *
 * Signals: main blocks them before any thread starts and hands a signalfd (signal_fd); the poll
 * loop reads it: SIGTERM/SIGINT stop (twice: cancel at once), SIGHUP reopens the log file.
 *
 * The watchdog (WATCHDOG=1) is fed only while the compute thread makes progress, so a stuck
 * generation is seen by systemd.  A model file changed in place (lh_sched_stats.fatal) stops the
 * daemon: in-flight requests are cancelled, the socket removed, lh_server_run returns -EIO.
 *
 * Shutdown (SIGTERM, or lh_server_request_stop): the listening socket is closed and removed,
 * new requests are refused with ERR_SHUTTING_DOWN, in-flight requests get drain_s seconds to
 * finish and are then cancelled (a second stop request cancels at once); lh_server_run returns
 * once every final frame is written or 5 s after the cancel.
 */
#ifndef LH_SERVER_H
#define LH_SERVER_H

#include <stddef.h>
#include <sys/types.h>

#include "model.h"
#include "scheduler.h"

typedef struct {
    const char *socket_path;  /* created (see lh_server_new) unless listen_fd >= 0 */
    int listen_fd;            /* an inherited listening socket (systemd), or -1 */
    size_t max_conns;         /* default 64 */
    size_t max_frame;         /* largest request frame accepted; default LH_FRAME_MAX_DEFAULT */
    const uid_t *allow_uid;   /* when either list is non-empty, only these uids/gids (and root, */
    size_t n_allow_uid;       /* and the daemon's own uid) may connect */
    const gid_t *allow_gid;
    size_t n_allow_gid;
    double drain_s;           /* default 10 */
    int signal_fd;            /* signalfd of SIGTERM, SIGINT, SIGHUP, or -1 */
    double handshake_s;       /* Hello must arrive within this; default 10 */
    double frame_s;           /* a started frame must complete within this; default 30 */
    size_t max_conns_per_uid; /* 0: max_conns / 2 (at least 1) */
    unsigned socket_mode;     /* mode of a created socket; default 0660 */
    long socket_gid;          /* group of a created socket, or -1 (the daemon's) */
} lh_server_config;

void lh_server_config_default(lh_server_config *c);

typedef struct lh_server lh_server;

/* Creates the socket (path length checked; the parent directory is created 0700 when missing; an
 * existing path is removed only if it is a socket nobody listens on; mode 0660 through the umask)
 * and the scheduler.  Returns 0, -EADDRINUSE (a daemon already listens; logged), -ENAMETOOLONG,
 * -EEXIST (a non-socket file is in the way), -errno. */
int lh_server_new(lh_server **sp, const lh_server_config *cfg, const lh_model *m,
                  const lh_sched_config *sc);
/* Runs the poll loop until a stop completes.  Returns 0 or -errno (poll failed). */
int lh_server_run(lh_server *srv);
/* Thread- and async-signal-safe: begin the shutdown (twice: cancel at once). */
void lh_server_request_stop(lh_server *srv);
/* Async-signal-safe: reopen the log file (SIGHUP). */
void lh_server_request_reopen(lh_server *srv);
/* The socket file this server created (removed at exit), or NULL (inherited socket). */
const char *lh_server_socket_file(const lh_server *srv);
/* Closes everything (the socket file is removed when this server created it); NULL accepted. */
void lh_server_free(lh_server *srv);

#endif
