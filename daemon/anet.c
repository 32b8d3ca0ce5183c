/* daemon/anet — see anet.h. */
#include "anet.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

static int make_parent_dir(const char *path)
{
    char dir[sizeof ((struct sockaddr_un *)0)->sun_path];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = 0;
    struct stat st;
    if (lstat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            lh_log_error("socket directory %s is not a directory", dir);
            return -ENOTDIR;
        }
        return 0;
    }
    if (errno != ENOENT || mkdir(dir, 0700) != 0) {
        int e = errno;
        lh_log_error("cannot create socket directory %s: %s", dir, strerror(e));
        return -e;
    }
    return 0;
}

int lh_anet_unix_listen(const char *path, unsigned mode, long gid, int *fdp)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof sa.sun_path) {
        lh_log_error("socket path '%s' is %zu bytes; at most %zu fit in sockaddr_un", path, len,
                     sizeof sa.sun_path - 1);
        return -ENAMETOOLONG;
    }
    memcpy(sa.sun_path, path, len + 1);
    int rc = make_parent_dir(path);
    if (rc != 0)
        return rc;
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            lh_log_error("%s exists and is not a socket; not touching it", path);
            return -EEXIST;
        }
        /* remove a stale socket only when nothing answers on it */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0)
            return -errno;
        int live = connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
        close(probe);
        if (live) {
            lh_log_error("another daemon is listening on %s; stop it or use --socket", path);
            return -EADDRINUSE;
        }
        if (unlink(path) != 0 && errno != ENOENT) {
            int e = errno;
            lh_log_error("cannot remove stale socket %s: %s", path, strerror(e));
            return -e;
        }
        lh_log_info("removed stale socket %s", path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    /* srw------- from the start: no window with a wider mode or the wrong group; then the group,
     * then the mode, and only then listen */
    mode_t old = umask(0177);
    rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    int e = errno, bound = rc == 0;
    umask(old);
    if (rc == 0 && gid >= 0 && chown(path, (uid_t)-1, (gid_t)gid) != 0) {
        e = errno;
        lh_log_error("cannot give socket %s to group %ld (socket-group): %s", path, gid,
                     strerror(e));
        rc = -1;
    } else if (rc == 0 && chmod(path, (mode_t)(mode & 0777)) != 0) {
        e = errno;
        lh_log_error("cannot set mode %04o on socket %s (socket-mode): %s", mode & 0777, path,
                     strerror(e));
        rc = -1;
    } else if (rc != 0 || listen(fd, 128) != 0) {
        e = rc != 0 ? e : errno;
        lh_log_error("cannot listen on %s: %s", path, strerror(e));
        rc = -1;
    }
    if (rc != 0) {
        if (bound)
            unlink(path);
        close(fd);
        return -e;
    }
    *fdp = fd;
    return 0;
}

int lh_anet_accept(int lfd, int *fdp, lh_anet_peer *peer)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR || e == ECONNABORTED)
            return -EAGAIN;
        return -e;
    }
    struct ucred cr = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
    socklen_t len = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0)
        lh_log_warn("SO_PEERCRED: %s", strerror(errno));
    peer->pid = cr.pid;
    peer->uid = cr.uid;
    peer->gid = cr.gid;
    *fdp = fd;
    return 0;
}

ssize_t lh_anet_read(int fd, void *buf, size_t cap)
{
    for (;;) {
        ssize_t n = recv(fd, buf, cap, 0);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return -EAGAIN;
        return -errno;
    }
}

int lh_anet_write(int fd, const void *p, size_t n, size_t *donep)
{
    size_t done = 0;
    int rc = 0;
    while (done < n) {
        ssize_t w = send(fd, (const char *)p + done, n - done, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                rc = -errno;
            break;
        }
        done += (size_t)w;
    }
    *donep = done;
    return rc;
}

void lh_anet_send_once(int fd, const void *p, size_t n)
{
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
}
