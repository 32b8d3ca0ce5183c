/* client/cli — `longheads`, the command-line client of longheadsd (in the style of ollama's).
 *
 *   longheads [--socket PATH] generate [options] [PROMPT | -f FILE | -]
 *   longheads [--socket PATH] info | health | tokenize [TEXT|-f FILE|-] | detokenize ID... |
 *                             score [TEXT|-f FILE|-] | passkey [options]
 *
 * generate streams text to stdout as it arrives; while a long prompt is evaluated a progress
 * bar is drawn on stderr (only when stderr is a terminal).  Ctrl-C cancels the request (the
 * daemon stops within one prefill slice); a second Ctrl-C exits at once.  Signals are taken by
 * a dedicated sigwait thread so that the cancel (a socket write under a mutex) never runs in a
 * signal handler.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "longheads.h"

#include <math.h>


static const char usage_text[] =
    "usage: longheads [--socket PATH] COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  generate [options] [PROMPT | -f FILE | -]   stream a completion to stdout\n"
    "      -n, --max-tokens N     tokens to generate (default: the daemon's, 256)\n"
    "      --temp T               temperature, 0 = greedy (default 0.8)\n"
    "      --top-k K              (default 40, 0 = off)\n"
    "      --top-p P              (default 0.95, 1 = off)\n"
    "      --min-p P              (default 0.05, 0 = off)\n"
    "      --repeat-penalty R     (default 1 = off)\n"
    "      --repeat-last-n N      tokens the penalty looks back (default 64)\n"
    "      --seed S               (default: random)\n"
    "      --stop STR             stop before STR (repeatable)\n"
    "      --attn full|longheads  attention mode (default: the daemon's)\n"
    "      --chunk N, --window N  LongHeads chunk size and window (default: the daemon's)\n"
    "      --timeout MS           per-request timeout (default: the daemon's)\n"
    "      --echo                 print the prompt before the completion\n"
    "      --stats                print token counts and timings to stderr at the end\n"
    "      -f FILE                read the prompt from FILE ('-': standard input)\n"
    "  info                       the model and limits of the daemon\n"
    "  health                     liveness, queue and connection counts\n"
    "  tokenize [--no-bos] [--special] [TEXT | -f FILE | -]\n"
    "                             token ids, one per line; --special: <|eot_id|>, <s>... in\n"
    "                             the text become those tokens\n"
    "  detokenize ID...           text of token ids\n"
    "  score [TEXT | -f FILE | -] log-probability of the text under the model\n"
    "  passkey [options]          the pass-key retrieval test (LongHeads paper): a key hidden\n"
    "                             at a random depth of filler text, asked for at the end\n"
    "      --lengths LIST         prompt lengths in tokens (default\n"
    "                             256,1024,4096,8192,16384,32768,131072)\n"
    "      --trials N, --seed S   prompts per length (default 20), seed (default 1)\n"
    "      --attn, --chunk, --window, --timeout   as for generate\n"
    "      --max-tokens N         answer tokens (default 8); -v: a line per trial\n"
    "\n"
    "  --socket PATH              daemon socket (default: $LONGHEADS_SOCKET, else\n"
    "                             $XDG_RUNTIME_DIR/longheads.sock, /run/longheads/longheads.sock\n"
    "                             for root, /tmp/longheads-$UID/longheads.sock)\n"
    "\n"
    "exit status: 0 ok, 1 usage error, 2 cannot connect to the daemon, 3 the request failed,\n"
    "             130 cancelled with Ctrl-C\n";

static void usage(FILE *f) { fputs(usage_text, f); }


/* ---- reading the prompt -------------------------------------------------------------------- */

static int read_all(FILE *f, char **textp, size_t *lenp)
{
    size_t cap = 4096, len = 0;
    char *s = malloc(cap);
    if (!s)
        return -ENOMEM;
    for (;;) {
        if (len == cap) {
            char *ns = realloc(s, cap * 2);
            if (!ns) {
                free(s);
                return -ENOMEM;
            }
            s = ns;
            cap *= 2;
        }
        size_t n = fread(s + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        free(s);
        return -EIO;
    }
    *textp = s;
    *lenp = len;
    return 0;
}

/* The text argument: FILE (-f), '-' for stdin, or the remaining arguments joined by spaces. */
static int get_text(const char *file, int argc, char **argv, char **textp, size_t *lenp)
{
    if (file || (argc == 1 && strcmp(argv[0], "-") == 0)) {
        FILE *f = (!file || strcmp(file, "-") == 0) ? stdin : fopen(file, "rb");
        if (!f) {
            fprintf(stderr, "longheads: cannot open %s: %s\n", file, strerror(errno));
            return EXIT_USAGE;
        }
        int rc = read_all(f, textp, lenp);
        if (f != stdin)
            fclose(f);
        if (rc != 0) {
            fprintf(stderr, "longheads: cannot read %s: %s\n", file ? file : "stdin",
                    strerror(-rc));
            return EXIT_USAGE;
        }
        return 0;
    }
    size_t len = 0;
    for (int i = 0; i < argc; i++)
        len += strlen(argv[i]) + 1;
    char *s = malloc(len + 1);
    if (!s)
        return EXIT_USAGE;
    s[0] = 0;
    size_t off = 0;
    for (int i = 0; i < argc; i++) {
        size_t n = strlen(argv[i]);
        if (i)
            s[off++] = ' ';
        memcpy(s + off, argv[i], n);
        off += n;
    }
    s[off] = 0;
    *textp = s;
    *lenp = off;
    return 0;
}

/* ---- connection and signals ---------------------------------------------------------------- */

int lh_cli_connect(lh_client **cp, const char *sock)
{
    char why[256];
    int code;
    int rc = lh_client_connect_err(cp, sock, 5000, why, sizeof why, &code);
    if (rc != 0) {
        char path[512];
        if (lh_client_socket_path(sock, path, sizeof path) != 0)
            snprintf(path, sizeof path, "(too long)");
        /* the daemon's own words when it refused us (allow-uid, busy, version) */
        fprintf(stderr, "longheads: cannot connect to the daemon at %s: %s\n", path,
                why[0] ? why : lh_client_strerror(rc));
        if (rc == -ENOENT || rc == -ECONNREFUSED)
            fprintf(stderr, "longheads: is longheadsd running? start it with `longheadsd "
                            "--model MODEL.gguf` or `make run`, or pass --socket PATH\n");
        return EXIT_CONNECT;
    }
    return 0;
}

static lh_client *g_client;
static atomic_int g_interrupted;

static void *signal_thread(void *arg)
{
    sigset_t *set = arg;
    for (;;) {
        int sig;
        if (sigwait(set, &sig) != 0)
            continue;
        if (atomic_fetch_add(&g_interrupted, 1) > 0) {
            /* second Ctrl-C: leave now */
            const char msg[] = "\nlongheads: interrupted\n";
            ssize_t w = write(2, msg, sizeof msg - 1);
            (void)w;
            _exit(EXIT_INTERRUPTED);
        }
        lh_client_cancel(g_client);
    }
    return NULL;
}

static void start_signal_thread(lh_client *c)
{
    static sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    g_client = c;
    pthread_t t;
    if (pthread_create(&t, NULL, signal_thread, &set) == 0)
        pthread_detach(t);
}

/* ---- generate ------------------------------------------------------------------------------ */

typedef struct {
    int bar;           /* stderr is a terminal: draw the prefill progress bar */
    int bar_drawn;
    size_t n_out;
} gen_state;

static void clear_bar(gen_state *st)
{
    if (st->bar_drawn) {
        fputs("\r\033[K", stderr);
        st->bar_drawn = 0;
    }
}

static int on_event(const lh_client_event *ev, void *ud)
{
    gen_state *st = ud;
    if (ev->kind == LH_CLIENT_EV_PROGRESS) {
        if (!st->bar || ev->n_total < 512 || ev->n_total == 0)
            return 0;
        int width = 40, done = (int)((double)ev->n_done / (double)ev->n_total * width);
        fprintf(stderr, "\rprompt [");
        for (int i = 0; i < width; i++)
            fputc(i < done ? '#' : ' ', stderr);
        fprintf(stderr, "] %llu/%llu", (unsigned long long)ev->n_done,
                (unsigned long long)ev->n_total);
        st->bar_drawn = 1;
        return 0;
    }
    clear_bar(st);
    if (ev->text_len) {
        fwrite(ev->text, 1, ev->text_len, stdout);
        fflush(stdout);
        st->n_out += ev->text_len;
    }
    return 0;
}

static const char *finish_name(lh_client_finish f)
{
    switch (f) {
    case LH_CLIENT_FINISH_LENGTH: return "length";
    case LH_CLIENT_FINISH_STOP: return "stop";
    case LH_CLIENT_FINISH_EOS: return "eos";
    case LH_CLIENT_FINISH_CANCELLED: return "cancelled";
    case LH_CLIENT_FINISH_ERROR: return "error";
    default: return "none";
    }
}

static int parse_num(const char *s, double lo, double hi, double *outp)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "longheads: bad number '%s' (expected %g..%g)\n", s, lo, hi);
        return -1;
    }
    *outp = v;
    return 0;
}

static int cmd_generate(const char *sock, int argc, char **argv)
{
    enum { O_TEMP = 256, O_TOPK, O_TOPP, O_MINP, O_REP, O_REPN, O_SEED, O_STOP, O_ATTN, O_CHUNK,
           O_WINDOW, O_TIMEOUT, O_ECHO, O_STATS };
    static const struct option opts[] = {
        {"max-tokens", required_argument, 0, 'n'}, {"temp", required_argument, 0, O_TEMP},
        {"top-k", required_argument, 0, O_TOPK}, {"top-p", required_argument, 0, O_TOPP},
        {"min-p", required_argument, 0, O_MINP}, {"repeat-penalty", required_argument, 0, O_REP},
        {"repeat-last-n", required_argument, 0, O_REPN}, {"seed", required_argument, 0, O_SEED},
        {"stop", required_argument, 0, O_STOP}, {"attn", required_argument, 0, O_ATTN},
        {"chunk", required_argument, 0, O_CHUNK}, {"window", required_argument, 0, O_WINDOW},
        {"timeout", required_argument, 0, O_TIMEOUT}, {"echo", no_argument, 0, O_ECHO},
        {"stats", no_argument, 0, O_STATS}, {"file", required_argument, 0, 'f'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    lh_client_gen_opts o;
    lh_client_gen_opts_default(&o);
    const char *stops[64];
    size_t n_stop = 0;
    const char *file = NULL;
    int echo = 0, stats = 0, c;
    double v;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+n:f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'n': if (parse_num(optarg, 0, 1e9, &v)) return EXIT_USAGE; o.max_tokens = (uint32_t)v; break;
        case O_TEMP: if (parse_num(optarg, 0, 100, &v)) return EXIT_USAGE; o.temperature = (float)v; break;
        case O_TOPK: if (parse_num(optarg, 0, 1e9, &v)) return EXIT_USAGE; o.top_k = (int32_t)v; break;
        case O_TOPP: if (parse_num(optarg, 0, 1, &v)) return EXIT_USAGE; o.top_p = (float)v; break;
        case O_MINP: if (parse_num(optarg, 0, 1, &v)) return EXIT_USAGE; o.min_p = (float)v; break;
        case O_REP: if (parse_num(optarg, 0, 100, &v)) return EXIT_USAGE; o.repeat_penalty = (float)v; break;
        case O_REPN: if (parse_num(optarg, 0, 1e9, &v)) return EXIT_USAGE; o.repeat_last_n = (int32_t)v; break;
        case O_SEED: {
            char *end;
            errno = 0;
            o.seed = strtoull(optarg, &end, 0);
            if (errno || *end || end == optarg) {
                fprintf(stderr, "longheads: bad seed '%s'\n", optarg);
                return EXIT_USAGE;
            }
            o.has_seed = 1;
            break;
        }
        case O_STOP:
            if (n_stop == sizeof stops / sizeof stops[0]) {
                fprintf(stderr, "longheads: too many --stop strings\n");
                return EXIT_USAGE;
            }
            stops[n_stop++] = optarg;
            break;
        case O_ATTN:
            if (strcmp(optarg, "full") == 0)
                o.attn = LH_CLIENT_ATTN_FULL;
            else if (strcmp(optarg, "longheads") == 0)
                o.attn = LH_CLIENT_ATTN_LONGHEADS;
            else {
                fprintf(stderr, "longheads: --attn takes full or longheads\n");
                return EXIT_USAGE;
            }
            break;
        case O_CHUNK: if (parse_num(optarg, 0, 1 << 30, &v)) return EXIT_USAGE; o.chunk = (uint32_t)v; break;
        case O_WINDOW: if (parse_num(optarg, 0, 1 << 30, &v)) return EXIT_USAGE; o.window = (uint32_t)v; break;
        case O_TIMEOUT: if (parse_num(optarg, 0, 1e9, &v)) return EXIT_USAGE; o.timeout_ms = (uint32_t)v; break;
        case O_ECHO: echo = 1; break;
        case O_STATS: stats = 1; break;
        case 'f': file = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    char *text = NULL;
    size_t len = 0;
    int rc = get_text(file, argc - optind, argv + optind, &text, &len);
    if (rc != 0)
        return rc;
    o.prompt = text;
    o.prompt_len = len;
    o.stop = stops;
    o.n_stop = n_stop;
    lh_client *cl = NULL;
    if ((rc = lh_cli_connect(&cl, sock)) != 0)
        goto out;
    start_signal_thread(cl);
    if (echo) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    gen_state st = {.bar = isatty(2)};
    lh_client_result res;
    int grc = lh_client_generate(cl, &o, on_event, &st, &res);
    clear_bar(&st);
    if (grc != 0) {
        if (grc == LH_CLIENT_E_SERVER)
            fprintf(stderr, "longheads: %s\n", lh_client_last_error(cl));
        else
            fprintf(stderr, "longheads: generate failed: %s\n", lh_client_strerror(grc));
        rc = EXIT_REQUEST;
        goto out;
    }
    /* a terminal gets its prompt back on a fresh line; piped output stays byte-exact */
    if (st.n_out && isatty(1))
        fputc('\n', stdout);
    fflush(stdout);
    if (stats)
        fprintf(stderr,
                "finish: %s; prompt %u tokens (%u reused), generated %u; queue %.1f ms, "
                "prefill %.1f ms (%.1f tok/s), decode %.1f ms (%.1f tok/s)\n",
                finish_name(res.finish), res.n_prompt, res.n_reused, res.n_generated,
                res.queue_ms, res.prefill_ms, res.prefill_tps, res.decode_ms, res.decode_tps);
    if (res.finish == LH_CLIENT_FINISH_ERROR) {
        fprintf(stderr, "longheads: %s\n", res.error);
        rc = EXIT_REQUEST;
    } else if (res.finish == LH_CLIENT_FINISH_CANCELLED) {
        fprintf(stderr, "longheads: cancelled\n");
        rc = atomic_load(&g_interrupted) ? EXIT_INTERRUPTED : EXIT_REQUEST;
    }
out:
    lh_client_close(cl);
    free(text);
    return rc;
}

/* ---- the small commands -------------------------------------------------------------------- */

static int cmd_info(const char *sock)
{
    lh_client *cl;
    int rc = lh_cli_connect(&cl, sock);
    if (rc != 0)
        return rc;
    lh_client_info info;
    rc = lh_client_get_info(cl, &info);
    if (rc != 0) {
        fprintf(stderr, "longheads: info: %s %s\n", lh_client_strerror(rc), lh_client_last_error(cl));
        lh_client_close(cl);
        return EXIT_REQUEST;
    }
    const lh_client_model_info *m = &info.model;
    printf("daemon:        longheadsd %s on %s\n", m->server_version, info.socket_path);
    printf("model:         %s\n", m->path);
    printf("description:   %s\n", m->desc);
    printf("parameters:    %llu\n", (unsigned long long)m->n_params);
    printf("layers:        %u, embedding %u, heads %u (kv %u), vocabulary %u\n", m->n_layer,
           m->n_embd, m->n_head, m->n_head_kv, m->n_vocab);
    printf("context:       %u tokens per slot, %u slot(s), KV %s (trained at %u)\n", m->n_ctx,
           m->n_slots, m->kv_type, m->n_ctx_train);
    printf("attention:     default %s; allowed:%s%s; chunk %u, window %u\n",
           m->attn_default == LH_CLIENT_ATTN_LONGHEADS ? "longheads" : "full",
           m->attn_full_allowed ? " full" : "", m->attn_longheads_allowed ? " longheads" : "",
           m->chunk_default, m->window_default);
    printf("limits:        prompt %u tokens, frame %u bytes\n", m->max_prompt_tokens, m->max_frame);
    lh_client_close(cl);
    return 0;
}

static int cmd_health(const char *sock)
{
    lh_client *cl;
    int rc = lh_cli_connect(&cl, sock);
    if (rc != 0)
        return rc;
    lh_client_health h;
    rc = lh_client_get_health(cl, &h);
    lh_client_close(cl);
    if (rc != 0) {
        fprintf(stderr, "longheads: health: %s\n", lh_client_strerror(rc));
        return EXIT_REQUEST;
    }
    printf("%s: up %.1f s, %u connection(s), %u queued, %u active, %llu served\n", h.status,
           h.uptime_s, h.n_connections, h.n_queued, h.n_active, (unsigned long long)h.n_served);
    return strcmp(h.status, "ok") == 0 ? 0 : EXIT_REQUEST;
}

static int cmd_tokenize(const char *sock, int argc, char **argv, int score)
{
    const char *file = NULL;
    int add_bos = 1, special = 0, c;
    static const struct option opts[] = {{"no-bos", no_argument, 0, 'B'},
                                         {"special", no_argument, 0, 'S'},
                                         {"file", required_argument, 0, 'f'},
                                         {0, 0, 0, 0}};
    optind = 1;
    while ((c = getopt_long(argc, argv, "+f:", opts, NULL)) != -1) {
        if (c == 'B')
            add_bos = 0;
        else if (c == 'S' && !score)
            special = 1;
        else if (c == 'f')
            file = optarg;
        else
            return EXIT_USAGE;
    }
    char *text;
    size_t len;
    int rc = get_text(file, argc - optind, argv + optind, &text, &len);
    if (rc != 0)
        return rc;
    lh_client *cl = NULL;
    size_t cap = len + 16, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    float *lp = malloc(cap * sizeof *lp);
    if (!ids || !lp) {
        rc = EXIT_USAGE;
        goto out;
    }
    if ((rc = lh_cli_connect(&cl, sock)) != 0)
        goto out;
    double total = 0;
    int trc = score ? lh_client_score(cl, text, len, lp, cap, &n, &total)
                    : lh_client_tokenize(cl, text, len,
                                         (add_bos ? LH_CLIENT_TOK_BOS : 0) |
                                             (special ? LH_CLIENT_TOK_SPECIAL : 0),
                                         ids, cap, &n);
    if (trc != 0) {
        fprintf(stderr, "longheads: %s: %s%s%s\n", score ? "score" : "tokenize",
                lh_client_strerror(trc), trc == LH_CLIENT_E_SERVER ? ": " : "",
                trc == LH_CLIENT_E_SERVER ? lh_client_last_error(cl) : "");
        rc = EXIT_REQUEST;
        goto out;
    }
    if (score) {
        printf("tokens: %zu\nlogprob: %.6f\nmean: %.6f\nperplexity: %.4f\n", n + 1, total,
               n ? total / (double)n : 0.0, n ? exp(-total / (double)n) : 0.0);
    } else {
        for (size_t i = 0; i < n; i++)
            printf("%d\n", ids[i]);
    }
out:
    lh_client_close(cl);
    free(ids);
    free(lp);
    free(text);
    return rc;
}

static int cmd_detokenize(const char *sock, int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "longheads: detokenize needs token ids\n");
        return EXIT_USAGE;
    }
    size_t n = (size_t)argc - 1;
    int32_t *ids = malloc(n * sizeof *ids);
    if (!ids)
        return EXIT_USAGE;
    for (size_t i = 0; i < n; i++) {
        char *end;
        long v = strtol(argv[i + 1], &end, 10);
        if (*end || end == argv[i + 1] || v < 0 || v > INT32_MAX) {
            fprintf(stderr, "longheads: bad token id '%s'\n", argv[i + 1]);
            free(ids);
            return EXIT_USAGE;
        }
        ids[i] = (int32_t)v;
    }
    lh_client *cl;
    int rc = lh_cli_connect(&cl, sock);
    if (rc != 0) {
        free(ids);
        return rc;
    }
    size_t cap = 64 * n + 1, len;
    char *buf = malloc(cap);
    int trc = buf ? lh_client_detokenize(cl, ids, n, buf, cap, &len) : -ENOMEM;
    if (trc != 0) {
        fprintf(stderr, "longheads: detokenize: %s %s\n", lh_client_strerror(trc),
                lh_client_last_error(cl));
        rc = EXIT_REQUEST;
    } else {
        fwrite(buf, 1, len, stdout);
        fputc('\n', stdout);
    }
    free(buf);
    free(ids);
    lh_client_close(cl);
    return rc;
}

int main(int argc, char **argv)
{
    const char *sock = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
            sock = argv[++i];
        else if (strncmp(argv[i], "--socket=", 9) == 0)
            sock = argv[i] + 9;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "longheads: unknown option %s\n", argv[i]);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[i];
    int sub_argc = argc - i;
    char **sub_argv = argv + i;
    /* --socket may also follow the command */
    for (int j = 1; j < sub_argc; j++) {
        if (strcmp(sub_argv[j], "--socket") == 0 && j + 1 < sub_argc) {
            sock = sub_argv[j + 1];
            memmove(sub_argv + j, sub_argv + j + 2, (size_t)(sub_argc - j - 2) * sizeof *sub_argv);
            sub_argc -= 2;
            sub_argv[sub_argc] = NULL;
            j--;
        } else if (strcmp(sub_argv[j], "--") == 0) {
            break;
        }
    }
    if (strcmp(cmd, "generate") == 0 || strcmp(cmd, "run") == 0)
        return cmd_generate(sock, sub_argc, sub_argv);
    if (strcmp(cmd, "info") == 0)
        return cmd_info(sock);
    if (strcmp(cmd, "health") == 0)
        return cmd_health(sock);
    if (strcmp(cmd, "tokenize") == 0)
        return cmd_tokenize(sock, sub_argc, sub_argv, 0);
    if (strcmp(cmd, "score") == 0)
        return cmd_tokenize(sock, sub_argc, sub_argv, 1);
    if (strcmp(cmd, "detokenize") == 0)
        return cmd_detokenize(sock, sub_argc, sub_argv);
    if (strcmp(cmd, "passkey") == 0)
        return lh_cli_passkey(sock, sub_argc, sub_argv);
    if (strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "longheads: unknown command '%s'\n", cmd);
    usage(stderr);
    return EXIT_USAGE;
}
