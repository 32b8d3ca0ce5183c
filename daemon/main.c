/* daemon/main — longheadsd: options and config file, model loading, signals, systemd.
 *
 * Settings come from, in increasing precedence: built-in defaults, the config file (--config
 * FILE: `key = value` lines, `#` comments, keys are the long option names without `--`), the
 * command line.  The socket: --socket, else an inherited systemd socket (LISTEN_FDS), else
 * $XDG_RUNTIME_DIR/longheads.sock, else /run/longheads/longheads.sock for root, else
 * /tmp/longheads-$UID/longheads.sock (its directory created 0700).
 * Signals: SIGTERM/SIGINT drain (twice: cancel now), SIGHUP reopens the log file, SIGPIPE is
 * ignored (writes use MSG_NOSIGNAL anyway).  The three are blocked with pthread_sigmask before
 * any thread (compute, OpenMP) starts, so no handler runs on a random thread, and are read from a
 * signalfd by the poll loop (a SIGTERM that comes while the model loads waits in the signalfd and
 * stops the daemon as soon as it serves, with nothing to drain).
 * SIGBUS (the mapped model file truncated under us) is caught on whichever thread faults: one log
 * line, the socket file removed, exit status 1 — never a silent death.
 */
#include <errno.h>
#include <limits.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "model.h"
#include "params.h"
#include "scheduler.h"
#include "server.h"
#include "systemd.h"
#include "version.h"

#define MAX_ALLOW 64
/* the OpenMP spin bound the daemon is started with (see main): the unit, `make run`, tools/bench.sh
 * and the tests set GOMP_SPINCOUNT to this */
#define LH_DAEMON_SPINCOUNT "10000"

typedef struct {
    char *model;
    char *socket;
    char *log_file;
    char *kv_dir;               /* --kv-dir */
    char *cache_dir;            /* --prompt-cache (default: the kv-dir) */
    lh_sched_config sc;
    lh_server_config srv;
    uid_t allow_uid[MAX_ALLOW];
    gid_t allow_gid[MAX_ALLOW];
    int verbose;
    size_t max_memory;          /* bytes for the slots' contexts; 0: 3/4 of the available memory */
    lh_weights_hold weights;    /* --weights, --mmap, --no-mmap */
} options;

static const char usage_text[] =
    "usage: longheadsd [options]\n"
    "Keeps a LLaMA-family model resident and serves generation over a Unix socket.\n"
    "\n"
    "  -m, --model PATH         GGUF model (default: the bundled stories260K)\n"
    "  --socket PATH            listening socket (default: $XDG_RUNTIME_DIR/longheads.sock,\n"
    "                           /run/longheads/longheads.sock for root,\n"
    "                           /tmp/longheads-$UID/longheads.sock otherwise)\n"
    "  --config FILE            read `key = value` settings (keys: these option names)\n"
    "  --config-optional FILE   the same, but a missing FILE is not an error (systemd unit)\n"
    "  --threads N              compute threads (default: all cores)\n"
    "  --weights auto|load|map  load: read the model into memory (decode streams it faster);\n"
    "                           map: map the file (starts faster, shares the page cache);\n"
    "                           auto: load when it is at most half the available memory\n"
    "                           (default auto; --no-mmap = load, --mmap = map)\n"
    "  --slots N                KV-cache slots = requests run concurrently (default 1)\n"
    "  -c, --ctx-size N         context tokens per slot (default: as many as --max-memory\n"
    "                           holds, up to 132096: a 131072-token prompt and its\n"
    "                           answer; committed as it fills)\n"
    "  --max-memory BYTES       budget for the slots' contexts, K/M/G suffixes (default: 3/4\n"
    "                           of the available memory)\n"
    "  --batch N                largest prefill slice in tokens (default 512)\n"
    "  --kv f32|f16             KV-cache type (default f16)\n"
    "  --attn full|longheads    default attention (default longheads: inside the window it\n"
    "                           is full attention, past it each head picks its chunks)\n"
    "  --chunk N, --window N    default LongHeads chunk size and window (default: the model\n"
    "                           file's longheads.* keys, else the trained length)\n"
    "  --score rep|bound        default LongHeads chunk score (default rep: the paper's chunk\n"
    "                           representations; bound: an upper bound of q·k from the keys)\n"
    "  --select flat|tree       how the bound score finds its top chunks: scoring every one\n"
    "                           (default) or branch and bound over a search tree (the same\n"
    "                           chunks; fewer scored where chunks repeat, as filler does)\n"
    "  --recent N               the last chunks every LongHeads head keeps, the current one\n"
    "                           included (default 2, the paper's; the others by score)\n"
    "  --allow-attn LIST        modes requests may ask for: full,longheads (default both)\n"
    "  --slice-ms MS            target duration of one prefill slice (default 20)\n"
    "  --max-tokens N           default tokens per generation (default 256)\n"
    "  --max-connections N      (default 64)\n"
    "  --max-prompt-tokens N    (default: the context size - 1)\n"
    "  --max-frame BYTES        largest request frame (default 16777216)\n"
    "  --max-queued N           queued requests, all clients (default 64)\n"
    "  --max-per-connection N   requests in flight per connection (default 16)\n"
    "  --timeout SECONDS        per-request timeout, queueing included (default 600, 0 none)\n"
    "  --drain-timeout SECONDS  on SIGTERM, time given to running requests (default 10)\n"
    "  --allow-uid LIST         only these uids (and root, and the daemon's uid) may connect\n"
    "  --allow-gid LIST         ... or members of these gids\n"
    "  --socket-mode MODE       permissions of the created socket, octal (default 0660)\n"
    "  --socket-group GROUP     group of the created socket (name or gid; default the daemon's)\n"
    "  --max-connections-per-uid N  (default: max-connections / 2)\n"
    "  --handshake-timeout S    a connection must send Hello within S seconds (default 10)\n"
    "  --frame-timeout S        a started request frame must complete within S (default 30)\n"
    "  --slot-idle S            an idle slot gives its KV cache back after S (default 300, 0 never)\n"
    "  --kv-dir DIR             keep the slots' KV caches in unnamed files in DIR, grown as they\n"
    "                           fill (a full disk fails that request: ENOSPC), their resident\n"
    "                           pages kept within --max-memory; the context may then reach\n"
    "                           1052672 tokens (default: in memory)\n"
    "  --prompt-cache DIR       save each long prompt's state (KV cache, LongHeads state, tokens)\n"
    "                           in DIR and start a resent prompt from it, also after a restart\n"
    "                           (default: the --kv-dir when given, else off)\n"
    "  --prompt-cache-size BYTES  disk bound of the prompt cache; least recently used files go\n"
    "                           first (default 4G; 0: off)\n"
    "  --prompt-cache-min N     save prompts of at least N tokens (default 1024)\n"
    "  --log-file PATH          log there instead of stderr (reopened on SIGHUP)\n"
    "  --verbose, --quiet       more or less logging\n"
    "  --version, --help\n";

/* The socket file to remove if the process dies of SIGBUS (set once it exists). */
static char g_sock_file[128];

static void on_sigbus(int sig, siginfo_t *si, void *uctx)
{
    (void)uctx;
    /* lh_log formats and writes with one write(2): acceptable in a handler we never return from */
    lh_log_error("fatal: %s at address %p: the model file was truncated or changed while mapped; "
                 "exiting (restart the daemon to load the file as it is now)", strsignal(sig),
                 si ? si->si_addr : NULL);
    if (g_sock_file[0])
        unlink(g_sock_file);
    _exit(1);
}

static int set_str(char **dst, const char *v)
{
    char *s = strdup(v);
    if (!s)
        return -ENOMEM;
    free(*dst);
    *dst = s;
    return 0;
}

static int parse_size(const char *key, const char *v, size_t lo, size_t hi, size_t *outp)
{
    if (lh_params_parse_size(v, lo, hi, outp) != 0) {
        lh_log_error("%s: '%s' is not a number in [%zu, %zu]", key, v, lo, hi);
        return LH_E_FORMAT;
    }
    return 0;
}

static int parse_seconds(const char *key, const char *v, double *outp)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !(d >= 0 && d < 1e7)) {
        lh_log_error("%s: '%s' is not a number of seconds", key, v);
        return LH_E_FORMAT;
    }
    *outp = d;
    return 0;
}

static int parse_ids(const char *key, const char *v, unsigned *out, size_t *np)
{
    *np = 0;
    const char *p = v;
    while (*p) {
        char *end;
        errno = 0;
        unsigned long x = strtoul(p, &end, 10);
        if (errno || end == p || x > UINT_MAX - 1 || *np == MAX_ALLOW) {
            lh_log_error("%s: '%s' is not a comma-separated list of at most %d ids", key, v,
                         MAX_ALLOW);
            return LH_E_FORMAT;
        }
        out[(*np)++] = (unsigned)x;
        p = end;
        if (*p == ',')
            p++;
        else if (*p) {
            lh_log_error("%s: unexpected '%c' in '%s'", key, *p, v);
            return LH_E_FORMAT;
        }
    }
    return 0;
}

/* One setting by name.  Returns 0, LH_E_NOTFOUND (unknown key), LH_E_FORMAT (logged). */
static int set_option(options *o, const char *key, const char *v)
{
    size_t z;
    int rc;
    if (strcmp(key, "model") == 0)
        return set_str(&o->model, v);
    if (strcmp(key, "socket") == 0)
        return set_str(&o->socket, v);
    if (strcmp(key, "log-file") == 0)
        return set_str(&o->log_file, v);
    if (strcmp(key, "kv-dir") == 0)
        return set_str(&o->kv_dir, v);
    if (strcmp(key, "weights") == 0) {
        if (lh_weights_hold_parse(v, &o->weights) == 0)
            return 0;
        lh_log_error("weights: '%s' is not auto, load or map", v);
        return LH_E_FORMAT;
    }
    if (strcmp(key, "prompt-cache") == 0)
        return set_str(&o->cache_dir, v);
    if (strcmp(key, "prompt-cache-size") == 0) {
        if (strcmp(v, "0") == 0) {
            o->sc.cache_max_bytes = 0;
            return 0;
        }
        if (lh_params_parse_bytes(v, &o->sc.cache_max_bytes) != 0) {
            lh_log_error("prompt-cache-size: '%s' is not a byte size (e.g. 8G, 512M, 0)", v);
            return LH_E_FORMAT;
        }
        return 0;
    }
    if (strcmp(key, "prompt-cache-min") == 0)
        return parse_size(key, v, 1, 1u << 24, &o->sc.cache_min_tokens);
    if (strcmp(key, "threads") == 0) {
        if ((rc = parse_size(key, v, 0, 4096, &z)) == 0)
            o->sc.n_threads = (int)z;
        return rc;
    }
    if (strcmp(key, "slots") == 0)
        return parse_size(key, v, 1, 256, &o->sc.n_slots);
    if (strcmp(key, "allow-attn") == 0) {
        o->sc.allow_full = strstr(v, "full") != NULL;
        o->sc.allow_longheads = strstr(v, "longheads") != NULL;
        if (!o->sc.allow_full && !o->sc.allow_longheads) {
            lh_log_error("allow-attn: '%s' names neither full nor longheads", v);
            return LH_E_FORMAT;
        }
        return 0;
    }
    if (strcmp(key, "slice-ms") == 0)
        return parse_seconds(key, v, &o->sc.slice_ms);
    if (strcmp(key, "max-tokens") == 0) {
        if ((rc = parse_size(key, v, 1, 1u << 30, &z)) == 0)
            o->sc.max_tokens_default = (uint32_t)z;
        return rc;
    }
    if (strcmp(key, "max-connections") == 0)
        return parse_size(key, v, 1, 1u << 16, &o->srv.max_conns);
    if (strcmp(key, "max-prompt-tokens") == 0)
        return parse_size(key, v, 1, SIZE_MAX / 8, &o->sc.max_prompt_tokens);
    if (strcmp(key, "max-frame") == 0)
        return parse_size(key, v, 64, 0xffffffffu, &o->srv.max_frame);
    if (strcmp(key, "max-queued") == 0)
        return parse_size(key, v, 1, 1u << 20, &o->sc.max_queued);
    if (strcmp(key, "max-per-connection") == 0)
        return parse_size(key, v, 1, 1u << 20, &o->sc.max_per_owner);
    if (strcmp(key, "timeout") == 0)
        return parse_seconds(key, v, &o->sc.timeout_s);
    if (strcmp(key, "drain-timeout") == 0)
        return parse_seconds(key, v, &o->srv.drain_s);
    if (strcmp(key, "max-memory") == 0) {
        if (lh_params_parse_bytes(v, &o->max_memory) != 0) {
            lh_log_error("max-memory: '%s' is not a byte size (e.g. 8G, 512M)", v);
            return LH_E_FORMAT;
        }
        return 0;
    }
    if (strcmp(key, "allow-uid") == 0)
        return parse_ids(key, v, (unsigned *)o->allow_uid, &o->srv.n_allow_uid);
    if (strcmp(key, "allow-gid") == 0)
        return parse_ids(key, v, (unsigned *)o->allow_gid, &o->srv.n_allow_gid);
    if (strcmp(key, "socket-mode") == 0) {
        char *end;
        errno = 0;
        unsigned long m = strtoul(v, &end, 8);
        if (errno || end == v || *end || m == 0 || m > 0777) {
            lh_log_error("socket-mode: '%s' is not an octal mode in (0, 0777]", v);
            return LH_E_FORMAT;
        }
        o->srv.socket_mode = (unsigned)m;
        return 0;
    }
    if (strcmp(key, "socket-group") == 0) {
        struct group *g = getgrnam(v);
        char *end;
        errno = 0;
        unsigned long id = g ? g->gr_gid : strtoul(v, &end, 10);
        if (!g && (errno || end == v || *end || id >= UINT_MAX)) {
            lh_log_error("socket-group: no group named '%s'", v);
            return LH_E_FORMAT;
        }
        o->srv.socket_gid = (long)id;
        return 0;
    }
    if (strcmp(key, "max-connections-per-uid") == 0)
        return parse_size(key, v, 1, 1u << 16, &o->srv.max_conns_per_uid);
    if (strcmp(key, "handshake-timeout") == 0)
        return parse_seconds(key, v, &o->srv.handshake_s);
    if (strcmp(key, "frame-timeout") == 0)
        return parse_seconds(key, v, &o->srv.frame_s);
    if (strcmp(key, "slot-idle") == 0)
        return parse_seconds(key, v, &o->sc.slot_idle_s);
    /* ctx, batch, kv, attn, chunk, window, score, select, recent: the engine's shared parser */
    rc = lh_params_set(&o->sc.ctx, NULL, key, v);
    return rc;
}

static int load_config(options *o, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        lh_log_error("config %s: %s", path, strerror(errno));
        return -errno;
    }
    char line[4096];
    int rc = 0, lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *s = line;
        s[strcspn(s, "\r\n")] = 0;
        char *hash = strchr(s, '#');
        if (hash)
            *hash = 0;
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            lh_log_error("config %s:%d: expected key = value", path, lineno);
            rc = LH_E_FORMAT;
            break;
        }
        char *k = s, *v = eq + 1, *ke = eq;
        while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
            ke--;
        *ke = 0;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t vl = strlen(v);
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            v[--vl] = 0;
        for (char *p = k; *p; p++)
            if (*p == '_')
                *p = '-';
        int r = set_option(o, k, v);
        if (r == LH_E_NOTFOUND) {
            lh_log_error("config %s:%d: unknown key '%s' (see longheadsd --help)", path, lineno, k);
            r = LH_E_FORMAT;
        }
        if (r != 0) {
            if (r == LH_E_FORMAT)
                lh_log_error("config %s:%d: bad value for %s", path, lineno, k);
            rc = r;
            break;
        }
    }
    fclose(f);
    return rc;
}

/* The bundled model: next to the binary in a build tree (../models) or installed
 * (../share/longheads). */
static char *default_model(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    static const char *rel[] = {"/../models/stories260K.gguf",
                                "/../share/longheads/stories260K.gguf"};
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            for (size_t i = 0; i < 2; i++) {
                char path[PATH_MAX + 64];
                snprintf(path, sizeof path, "%s%s", exe, rel[i]);
                if (access(path, R_OK) == 0)
                    return realpath(path, NULL);
            }
        }
    }
    return strdup("models/stories260K.gguf");
}

static char *default_socket(void)
{
    char buf[512];
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (xdg && *xdg)
        snprintf(buf, sizeof buf, "%s/longheads.sock", xdg);
    else if (geteuid() == 0)
        snprintf(buf, sizeof buf, "/run/longheads/longheads.sock");
    else
        snprintf(buf, sizeof buf, "/tmp/longheads-%u/longheads.sock", (unsigned)geteuid());
    return strdup(buf);
}

int main(int argc, char **argv)
{
    /* Threading policy.  libgomp reads its wait policy once, when it loads, before main: it
     * must come from the environment the daemon is started with, and the daemon does not
     * restart itself to change it (its process stays one exec of longheadsd).  Measured
     * (tests/test_e2e.c cancel latency; tools/bench.sh speed; 2 cores shared with a load of
     * ~10, so noisy): libgomp's default spin (~1-3 ms after each parallel region) took cancel
     * latency mid-prefill to 40-230 ms and prefill to a third, decode to a quarter of PASSIVE;
     * PASSIVE gave 1-3 ms but sleeps between the back-to-back regions of a forward pass (on an
     * idle machine decode ~20% slower than spinning); a bounded spin of GOMP_SPINCOUNT=10000
     * (~40 us) gave 6-9 ms and PASSIVE's prefill speed while keeping workers awake across a
     * forward pass.  So the systemd unit (Environment=), `make run`, `make bench` and the tests
     * start it with that bounded spin; started by hand without either variable it says so once. */
    int omp_policy_unset = !getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT");
    options o;
    memset(&o, 0, sizeof o);
    lh_sched_config_default(&o.sc);
    lh_params_default(&o.sc.ctx); /* LongHeads, the context the memory budget holds */
    lh_server_config_default(&o.srv);
    lh_model *m = NULL;
    lh_server *srv = NULL;
    int rc = 1, listen_fd = -1, sig_fd = -1;
    /* the config file first, so that the command line overrides it */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("longheadsd %s\n", LH_VERSION);
            return 0;
        }
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc && load_config(&o, argv[++i]) != 0)
            goto out;
        if (strcmp(argv[i], "--config-optional") == 0 && i + 1 < argc &&
            access(argv[++i], F_OK) == 0 && load_config(&o, argv[i]) != 0)
            goto out;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--config") == 0 || strcmp(a, "--config-optional") == 0) {
            i++;
            continue;
        }
        if (strcmp(a, "--verbose") == 0) {
            lh_log_set_level(LH_LOG_DEBUG);
            continue;
        }
        if (strcmp(a, "--quiet") == 0) {
            lh_log_set_level(LH_LOG_WARN);
            continue;
        }
        if (strcmp(a, "--mmap") == 0 || strcmp(a, "--no-mmap") == 0) {  /* llama.cpp's names */
            o.weights = a[2] == 'm' ? LH_WEIGHTS_MAP : LH_WEIGHTS_LOAD;
            continue;
        }
        /* the short forms people know from llama.cpp */
        const char *shrt = strcmp(a, "-m") == 0 ? "model" : strcmp(a, "-c") == 0 ? "ctx" : NULL;
        if (strncmp(a, "--", 2) != 0 && !shrt) {
            fprintf(stderr, "longheadsd: unexpected argument '%s'\n%s", a, usage_text);
            goto out;
        }
        char key[64];
        const char *eq = shrt ? NULL : strchr(a, '='), *v;
        if (shrt) {
            if (i + 1 >= argc) {
                fprintf(stderr, "longheadsd: %s needs a value\n", a);
                goto out;
            }
            snprintf(key, sizeof key, "%s", shrt);
            v = argv[++i];
        } else if (eq) {
            snprintf(key, sizeof key, "%.*s", (int)(eq - a - 2), a + 2);
            v = eq + 1;
        } else {
            if (i + 1 >= argc) {
                fprintf(stderr, "longheadsd: %s needs a value\n", a);
                goto out;
            }
            snprintf(key, sizeof key, "%s", a + 2);
            v = argv[++i];
        }
        int r = set_option(&o, key, v);
        if (r == LH_E_NOTFOUND) {
            fprintf(stderr, "longheadsd: unknown option --%s\n%s", key, usage_text);
            goto out;
        }
        if (r != 0)
            goto out;
    }
    if (o.log_file && lh_log_set_file(o.log_file) != 0) {
        fprintf(stderr, "longheadsd: cannot open log file %s: %s\n", o.log_file, strerror(errno));
        goto out;
    }
    /* before any thread exists: every thread inherits the mask, the loop reads the signalfd */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    sig_fd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sig_fd < 0) {
        lh_log_error("signalfd: %s", strerror(errno));
        goto out;
    }
    signal(SIGPIPE, SIG_IGN);
    /* a file size limit (ulimit -f) makes growing a KV or prompt-cache file fail with EFBIG, an
     * error for that request, instead of killing the daemon */
    signal(SIGXFSZ, SIG_IGN);
    struct sigaction sb = {.sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO | SA_RESETHAND};
    sigemptyset(&sb.sa_mask);
    sigaction(SIGBUS, &sb, NULL);

    listen_fd = lh_systemd_listen_fd();
    if (listen_fd < -1)
        goto out;
    if (!o.socket && listen_fd < 0 && !(o.socket = default_socket()))
        goto out;
    if (!o.model && !(o.model = default_model()))
        goto out;
    lh_systemd_notify("STATUS=loading the model");
    int e = lh_model_open_ex(&m, o.model, o.weights);
    if (e != 0) {
        lh_log_error("cannot load the model %s (%d%s%s)", o.model, e, e < 0 ? ": " : "",
                     e < 0 ? strerror(-e) : "");
        goto out;
    }
    lh_log_info("model %s: %s; weights %s", o.model, lh_model_desc(m),
                lh_model_weights_loaded(m) ? "read into memory" : "mapped from the file");
    if (omp_policy_unset)
        lh_log_warn("OpenMP threads use libgomp's default spin; start the daemon with "
                    "GOMP_SPINCOUNT=" LH_DAEMON_SPINCOUNT " in its environment (as the systemd unit "
                    "and `make run` do) for cancels within a few ms and full speed");
    o.sc.ctx.kv_dir = o.kv_dir;
    o.sc.cache_dir = o.cache_dir ? o.cache_dir : o.kv_dir;
    if (o.sc.cache_dir && o.sc.cache_max_bytes)
        lh_log_info("prompt cache in %s: prompts of %zu tokens or more, at most %zu bytes on disk",
                    o.sc.cache_dir, o.sc.cache_min_tokens, o.sc.cache_max_bytes);
    /* The prompt cache on the KV files' file system: the context is sized to leave it its
     * --prompt-cache-size (all of it, although files it already holds are counted twice: what
     * it holds is no longer free, and may be evicted) */
    struct stat kv_st, pc_st;
    if (o.kv_dir && o.sc.cache_dir && o.sc.cache_max_bytes && stat(o.kv_dir, &kv_st) == 0 &&
        stat(o.sc.cache_dir, &pc_st) == 0 && kv_st.st_dev == pc_st.st_dev)
        o.sc.ctx.kv_disk_reserve = o.sc.cache_max_bytes;
    char fit[768];
    if (lh_params_fit_ctx(m, &o.sc.ctx, o.sc.n_slots, o.max_memory, fit, sizeof fit) != 0)
        goto out;
    lh_log_info("%s", fit);
    o.srv.socket_path = listen_fd >= 0 && !o.socket ? NULL : o.socket;
    o.srv.listen_fd = listen_fd;
    o.srv.allow_uid = o.allow_uid;
    o.srv.allow_gid = o.allow_gid;
    o.srv.signal_fd = sig_fd;
    if (listen_fd >= 0 && o.socket)
        lh_log_info("socket-activated: --socket %s only names the inherited socket", o.socket);
    e = lh_server_new(&srv, &o.srv, m, &o.sc);
    if (e != 0) {
        if (e == -EINVAL)
            lh_log_error("cannot set up the daemon: invalid context parameters");
        else if (e != -EADDRINUSE && e != -ENAMETOOLONG && e != -EEXIST)
            lh_log_error("cannot set up the daemon: %s", strerror(-e));
        goto out;
    }
    listen_fd = -1; /* the server owns it now */
    if (lh_server_socket_file(srv))
        snprintf(g_sock_file, sizeof g_sock_file, "%s", lh_server_socket_file(srv));
    lh_systemd_notify("READY=1\nSTATUS=serving");
    rc = lh_server_run(srv) == 0 ? 0 : 1;
    g_sock_file[0] = 0;
out:
    lh_server_free(srv);
    if (listen_fd >= 0)
        close(listen_fd);
    lh_model_close(m);
    if (sig_fd >= 0)
        close(sig_fd);
    free(o.model);
    free(o.socket);
    free(o.log_file);
    free(o.kv_dir);
    free(o.cache_dir);
    return rc;
}
