/* kernels/log — the project's one logger and its error-code contract.
 *
 * Functions return int: 0 ok; negative -errno for failures the caller forwards; positive LH_E_*
 * for expected outcomes the caller handles.  The place that detects an error logs it once with
 * context; forwarders do not log again.  The client library never logs.
 *
 * Lines go to stderr (journald under systemd) as "longheads: <level>: message".  The daemon may
 * point the log at a file with lh_log_set_file and reopen it on SIGHUP.  Thread-safe: one
 * write(2) per line.
 */
#ifndef LH_LOG_H
#define LH_LOG_H

enum {
    LH_E_FORMAT = 1,      /* malformed input (file, frame, message, text) */
    LH_E_EOF = 2,         /* peer or input ended */
    LH_E_LIMIT = 3,       /* a configured limit would be exceeded */
    LH_E_CANCELLED = 4,   /* the request was cancelled */
    LH_E_NOTFOUND = 5,    /* a key, tensor or id is absent */
    LH_E_UNSUPPORTED = 6, /* valid, but not something this build handles */
};

typedef enum { LH_LOG_ERROR = 0, LH_LOG_WARN = 1, LH_LOG_INFO = 2, LH_LOG_DEBUG = 3 } lh_log_level;

void lh_log(lh_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define lh_log_error(...) lh_log(LH_LOG_ERROR, __VA_ARGS__)
#define lh_log_warn(...) lh_log(LH_LOG_WARN, __VA_ARGS__)
#define lh_log_info(...) lh_log(LH_LOG_INFO, __VA_ARGS__)

/* Messages above this level are dropped (default LH_LOG_INFO; tests set LH_LOG_ERROR or quieter
 * with lh_log_set_level(-1) to silence expected errors). */
void lh_log_set_level(int level);
int lh_log_get_level(void);
/* Send log lines to path (append) instead of stderr; NULL returns to stderr.  Returns 0 or -errno. */
int lh_log_set_file(const char *path);
/* Reopen the current log file (SIGHUP).  Returns 0 or -errno. */
int lh_log_reopen(void);

#endif
