/* tests/test.h — what every suite shares: CUnit, the registration hook, paths. */
#ifndef LH_TEST_H
#define LH_TEST_H

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <math.h>
#include <stddef.h>
#include <sys/types.h>

#include "client/longheads.h"

/* The bundled model (LH_MODEL, default models/stories260K.gguf). */
const char *lh_test_model_path(void);
/* Where the built binaries are (LH_BUILD, default build). */
const char *lh_test_build_dir(void);
/* 1 when running under ASan (LH_ASAN set): suites may shorten slow loops, never drop asserts. */
int lh_test_asan(void);
/* Starts LH_BUILD/longheadsd with the arguments args (NULL-terminated, after the program name),
 * its stderr to log (NULL: /dev/null), and waits up to 60 s until sock answers a handshake.
 * listen_fd >= 0 is handed over as socket activation (fd 3, LISTEN_FDS=1, LISTEN_PID); notify is
 * NOTIFY_SOCKET (NULL: unset).  Returns the daemon's pid, or -1 (it died or never answered). */
pid_t lh_test_daemon_start(const char *const *args, const char *sock, const char *log,
                           int listen_fd, const char *notify);
/* SIGTERM, then SIGKILL after 30 s.  Returns its exit status, 128 + the signal that ended it, or
 * -1 (pid <= 0, or it had to be killed). */
int lh_test_daemon_stop(pid_t pid);
/* A test that cannot run here (a tool or file missing) calls this and returns: it prints
 * "SKIP: <test>: reason" at once and in the run's summary, and the test is counted as skipped,
 * not as passed.  With LH_TEST_STRICT set a skip is a failure. */
void lh_test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Slot 0's status once it is idle (a reply is sent just before its request retires the slot):
 * polls for up to 2 s.  Returns 0, or -1 (no status, no slot, still busy). */
int lh_test_idle_slot0(lh_client *c, lh_client_slot *out);
/* max |a[i] - b[i]| */
double lh_test_max_abs_diff(const float *a, const float *b, size_t n);

/* Each tests/test_<module>.c defines `void lh_test_<module>(void)` which adds its suite(s) with
 * CU_add_suite/CU_add_test.  test_main.c declares and calls every one listed here (no weak
 * symbols): a suite named here whose file is missing is a link error, not a silent gap. */
#define LH_TEST_SUITES(X) \
    X(quant) X(matmul) X(ops) X(attn) X(longheads) \
    X(gguf) X(tokenizer) X(sampler) X(model) X(chat) X(frame) X(daemon) X(e2e) X(passkey) \
    X(qfiles) X(gen) X(params) X(kvfile)

#endif
