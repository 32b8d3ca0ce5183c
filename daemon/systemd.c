/* daemon/systemd — see systemd.h. */
#include "systemd.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

int lh_systemd_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return 0;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof sa.sun_path)
        return -EINVAL;
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@')
        sa.sun_path[0] = 0; /* abstract namespace */
    socklen_t sa_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, sa_len) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

static int parse_ulong(const char *s, unsigned long long *outp)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || s[0] == '-')
        return -1;
    *outp = v;
    return 0;
}

int lh_systemd_listen_fd(void)
{
    const char *spid = getenv("LISTEN_PID"), *sfds = getenv("LISTEN_FDS");
    unsigned long long pid, n;
    if (!spid || !sfds)
        return -1;
    int rc = -1;
    if (parse_ulong(spid, &pid) != 0 || parse_ulong(sfds, &n) != 0 || n > 64) {
        lh_log_error("socket activation: malformed LISTEN_PID=%s LISTEN_FDS=%s", spid, sfds);
        rc = -EINVAL;
        goto out;
    }
    if (pid != (unsigned long long)getpid() || n == 0)
        goto out; /* meant for another process */
    struct stat st;
    int fd = 3;
    int type = 0;
    socklen_t len = sizeof type;
    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode) ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) {
        lh_log_error("socket activation: fd 3 is not a stream socket");
        rc = -EINVAL;
        goto out;
    }
    for (unsigned long long i = 1; i < n; i++) {
        lh_log_warn("socket activation: ignoring extra fd %llu (one ListenStream= expected)", 3 + i);
        close((int)(3 + i));
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    rc = fd;
out:
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return rc;
}

uint64_t lh_systemd_watchdog_usec(void)
{
    unsigned long long usec, pid;
    if (parse_ulong(getenv("WATCHDOG_USEC"), &usec) != 0 || usec == 0)
        return 0;
    if (getenv("WATCHDOG_PID") && (parse_ulong(getenv("WATCHDOG_PID"), &pid) != 0 ||
                                   pid != (unsigned long long)getpid()))
        return 0;
    return usec;
}
