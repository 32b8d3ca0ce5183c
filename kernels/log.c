/* kernels/log — see log.h. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_level = LH_LOG_INFO;
static int g_fd = 2;
static char *g_path;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *level_name(lh_log_level level)
{
    switch (level) {
    case LH_LOG_ERROR: return "error";
    case LH_LOG_WARN: return "warning";
    case LH_LOG_INFO: return "info";
    default: return "debug";
    }
}

void lh_log(lh_log_level level, const char *fmt, ...)
{
    if ((int)level > g_level)
        return;
    char line[2048];
    int n = snprintf(line, sizeof line, "longheads: %s: ", level_name(level));
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    pthread_mutex_lock(&g_lock);
    ssize_t w = write(g_fd, line, len);
    (void)w;
    pthread_mutex_unlock(&g_lock);
}

void lh_log_set_level(int level) { g_level = level; }
int lh_log_get_level(void) { return g_level; }

static int open_log(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    return fd < 0 ? -errno : fd;
}

int lh_log_set_file(const char *path)
{
    int rc = 0;
    pthread_mutex_lock(&g_lock);
    if (!path) {
        if (g_fd != 2)
            close(g_fd);
        g_fd = 2;
        free(g_path);
        g_path = NULL;
        goto out;
    }
    char *copy = strdup(path);
    if (!copy) {
        rc = -ENOMEM;
        goto out;
    }
    int fd = open_log(path);
    if (fd < 0) {
        free(copy);
        rc = fd;
        goto out;
    }
    if (g_fd != 2)
        close(g_fd);
    g_fd = fd;
    free(g_path);
    g_path = copy;
out:
    pthread_mutex_unlock(&g_lock);
    return rc;
}

int lh_log_reopen(void)
{
    int rc = 0;
    pthread_mutex_lock(&g_lock);
    if (g_path) {
        int fd = open_log(g_path);
        if (fd < 0) {
            rc = fd;
        } else {
            close(g_fd);
            g_fd = fd;
        }
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}
