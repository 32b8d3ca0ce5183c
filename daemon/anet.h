/* daemon/anet — Unix-socket helpers for longheadsd (redis's anet.c in spirit): creating the
 * listening socket carefully, accepting with the peer's credentials, and the non-blocking
 * reads and writes a poll loop needs.  Knows nothing of connections, frames or the protocol.
 * Errors are logged here once, with the path and the reason, and returned as -errno.
 */
#ifndef LH_ANET_H
#define LH_ANET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Creates a listening Unix stream socket at path (non-blocking, close-on-exec): the path length
 * is checked against sockaddr_un; a missing parent directory is created 0700; an existing path
 * is removed only if it is a socket nobody listens on; the socket is bound with mode 0600, given
 * to group gid (>= 0), set to mode, and only then listens.  Returns 0 and *fdp, -ENAMETOOLONG,
 * -EEXIST (a non-socket file is in the way), -EADDRINUSE (a daemon listens), -ENOTDIR, -errno. */
int lh_anet_unix_listen(const char *path, unsigned mode, long gid, int *fdp);

typedef struct {
    pid_t pid;
    uid_t uid;   /* (uid_t)-1 when SO_PEERCRED failed (logged) */
    gid_t gid;
} lh_anet_peer;

/* Accepts one connection (non-blocking, close-on-exec) and reads its credentials.  Returns 0
 * and *fdp, or -errno: -EAGAIN (none pending; also for EINTR and ECONNABORTED), or the accept
 * failure (EMFILE, ENFILE, ENOBUFS, ENOMEM: the caller decides what to do about it). */
int lh_anet_accept(int lfd, int *fdp, lh_anet_peer *peer);

/* Reads what is there into buf (cap bytes).  Returns the bytes read (> 0), 0 at end of stream,
 * -EAGAIN when nothing is there, -errno on failure.  EINTR is retried. */
ssize_t lh_anet_read(int fd, void *buf, size_t cap);
/* Writes as much of p (n bytes) as the socket takes now, without SIGPIPE.  *donep gets the
 * bytes written.  Returns 0 (all written, or the socket is full), -errno on failure. */
int lh_anet_write(int fd, const void *p, size_t n, size_t *donep);
/* Best effort, one non-blocking send (a refusal before closing): errors are ignored. */
void lh_anet_send_once(int fd, const void *p, size_t n);

#endif
