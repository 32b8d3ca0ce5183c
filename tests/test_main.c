/* tests/test_main — runs every CUnit suite, or those named on the command line:
 *   build/test_main            all suites
 *   build/test_main gguf ops   only the suites whose names start with "gguf" or "ops"
 */
#include "test.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "client/longheads.h"

#define DECLARE(name) void lh_test_##name(void);
LH_TEST_SUITES(DECLARE)
#undef DECLARE

const char *lh_test_model_path(void)
{
    const char *p = getenv("LH_MODEL");
    return p && *p ? p : "models/stories260K.gguf";
}

const char *lh_test_build_dir(void)
{
    const char *p = getenv("LH_BUILD");
    return p && *p ? p : "build";
}

static char g_skips[8192];
static size_t g_skips_len;
static unsigned g_n_skipped;

void lh_test_skip(const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    CU_pTest t = CU_get_current_test();
    const char *name = t && t->pName ? t->pName : "?";
    printf("\n    SKIP: %s: %s\n", name, why);
    g_n_skipped++;
    if (g_skips_len < sizeof g_skips) {
        int n = snprintf(g_skips + g_skips_len, sizeof g_skips - g_skips_len,
                         "  SKIP: %s: %s\n", name, why);
        if (n > 0)
            g_skips_len += (size_t)n;
    }
    if (getenv("LH_TEST_STRICT"))
        CU_FAIL("skipped under LH_TEST_STRICT");
}

int lh_test_asan(void) { return getenv("LH_ASAN") != NULL; }

pid_t lh_test_daemon_start(const char *const *args, const char *sock, const char *log,
                           int listen_fd, const char *notify)
{
    char bin[512];
    snprintf(bin, sizeof bin, "%s/longheadsd", lh_test_build_dir());
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = log ? open(log, O_WRONLY | O_CREAT | O_APPEND, 0600) : open("/dev/null", O_WRONLY);
        if (fd >= 0)
            dup2(fd, 2);
        const char *argv[48];
        int n = 0;
        argv[n++] = bin;
        for (int i = 0; args && args[i] && n < 47; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        if (listen_fd >= 0) {
            dup2(listen_fd, 3);
            char pidbuf[32];
            snprintf(pidbuf, sizeof pidbuf, "%d", (int)getpid());
            setenv("LISTEN_PID", pidbuf, 1);
            setenv("LISTEN_FDS", "1", 1);
        }
        if (notify)
            setenv("NOTIFY_SOCKET", notify, 1);
        else
            unsetenv("NOTIFY_SOCKET");
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 600; i++) { /* up to 60 s: the model loads under ASan on a busy box */
        lh_client *c;
        if (lh_client_connect(&c, sock, 1000) == 0) {
            lh_client_close(c);
            return pid;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return -1;
        usleep(100000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

int lh_test_idle_slot0(lh_client *c, lh_client_slot *out)
{
    lh_client_status st;
    for (int i = 0; i < 200; i++) {
        if (lh_client_get_status(c, &st) != 0 || st.n_slots < 1)
            return -1;
        *out = st.slots[0];
        if (!out->busy)
            return 0;
        usleep(10000);
    }
    return -1;
}

int lh_test_daemon_stop(pid_t pid)
{
    if (pid <= 0)
        return -1;
    kill(pid, SIGTERM);
    for (int i = 0; i < 300; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(100000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

double lh_test_max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || d != d)
            m = d != d ? INFINITY : d;
    }
    return m;
}

int main(int argc, char **argv)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    /* Expected errors (malformed files, bad frames) are logged by the code under test; keep the
     * output readable unless LH_TEST_LOG is set. */
    if (!getenv("LH_TEST_LOG"))
        lh_log_set_level(-1);
#define REGISTER(name) lh_test_##name();
    LH_TEST_SUITES(REGISTER)
#undef REGISTER
    if (argc > 1) {
        /* deactivate the suites not asked for */
        for (CU_pSuite s = CU_get_registry()->pSuite; s; s = s->pNext) {
            int want = 0;
            for (int i = 1; i < argc; i++)
                if (strncmp(s->pName, argv[i], strlen(argv[i])) == 0)
                    want = 1;
            CU_set_suite_active(s, want ? CU_TRUE : CU_FALSE);
        }
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    unsigned ran = CU_get_number_of_tests_run();
    unsigned tests_failed = CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    if (g_n_skipped) {
        /* CUnit counts a skipped test as run and passed: say what really happened */
        printf("\n%u test(s) SKIPPED (not passed); %u passed, %u failed:\n%s", g_n_skipped,
               ran - tests_failed >= g_n_skipped ? ran - tests_failed - g_n_skipped : 0,
               tests_failed, g_skips);
    }
    if (ran == 0) {
        fprintf(stderr, "test_main: no test ran\n");
        return 1;
    }
    return failed ? 1 : 0;
}
