/* daemon/systemd — the parts of the systemd protocols longheadsd speaks, without libsystemd:
 * sd_notify (READY=1, STATUS=, WATCHDOG=1, STOPPING=1 to $NOTIFY_SOCKET, abstract sockets
 * included), socket activation ($LISTEN_PID/$LISTEN_FDS, first fd 3) and the watchdog interval
 * ($WATCHDOG_USEC, $WATCHDOG_PID).  Without systemd every function is a harmless no-op.
 */
#ifndef LH_SYSTEMD_H
#define LH_SYSTEMD_H

#include <stdint.h>

/* Sends state (e.g. "READY=1\nSTATUS=serving") to $NOTIFY_SOCKET.  Returns 0 (sent or no
 * socket to send to) or -errno. */
int lh_systemd_notify(const char *state);
/* The listening socket passed by systemd, or -1 when the daemon was not socket-activated.
 * Checks LISTEN_PID against getpid(), takes the first fd (3) and checks it is a stream socket;
 * unsets the variables so children do not inherit them.  More than one fd: the rest are closed
 * (logged).  Returns the fd, -1, or -EINVAL (logged) when the variables are malformed. */
int lh_systemd_listen_fd(void);
/* The watchdog interval in microseconds when the service manager asked for WATCHDOG=1 pings
 * (WatchdogSec=), else 0. */
uint64_t lh_systemd_watchdog_usec(void);

#endif
