/* client/cli — `longheads`, the command-line client of longheadsd (in the style of ollama's).
 *
 *   longheads [--socket PATH] generate [options] [PROMPT | -p PROMPT | -f FILE | -]
 *   longheads [--socket PATH] chat [options] [QUESTION]
 *   longheads [--socket PATH] info | status | health | tokenize [TEXT|-f FILE|-] |
 *                             detokenize ID... | score [TEXT|-f FILE|-] | passkey [options]
 *
 * generate streams text to stdout as it arrives and ends it with a newline; while a long prompt
 * is evaluated a progress bar is drawn on stderr (only when stderr is a terminal).  Ctrl-C
 * cancels the request (the daemon stops within one prefill slice); a second Ctrl-C exits at
 * once.  chat keeps the conversation here and sends all of it every turn (the daemon's prompt
 * cache holds the earlier turns); in an interactive chat Ctrl-C cancels only the answer.
 * --json prints one JSON object per line, the final stats included.  Signals are taken by
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
#include "version.h"

#include <math.h>


static const char usage_text[] =
    "usage: longheads [--socket PATH] COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  generate [options] [PROMPT | -p PROMPT | -f FILE | -]   stream a completion to stdout\n"
    "      -n, --n-predict N      tokens to generate, 1..1000000000, -1 = until the end of the\n"
    "                             text (default: the daemon's, 256)\n"
    "      --temp T               temperature 0..100, 0 = greedy (default 0.8)\n"
    "      --top-k K              0..1000000 (default 40, 0 = off)\n"
    "      --top-p P              (0, 1] (default 0.95, 1 = off)\n"
    "      --min-p P              [0, 1] (default 0.05, 0 = off)\n"
    "      --repeat-penalty R     (0, 100] (default 1 = off)\n"
    "      --repeat-last-n N      tokens the penalty looks back (default 64)\n"
    "      --seed S               (default: random)\n"
    "      --stop STR             stop before STR (repeatable)\n"
    "      --attn full|longheads  attention mode (default: the daemon's, longheads)\n"
    "      --chunk N, --window N  LongHeads chunk size and window (default: the daemon's)\n"
    "      --score rep|bound      LongHeads chunk score (default: the daemon's)\n"
    "      --recent N             LongHeads: the last chunks every head keeps (default: the\n"
    "                             daemon's, 2)\n"
    "      --timeout MS           per-request timeout (default: the daemon's)\n"
    "      -p, --prompt TEXT      the prompt; -f, --file FILE reads it ('-': standard input)\n"
    "      --echo                 print the prompt before the completion\n"
    "      --special              <|eot_id|>, <s>... in the prompt become those tokens\n"
    "      --stats                print token counts and timings to stderr at the end\n"
    "      --json                 one JSON object per line: {\"token\",\"text\"}, progress, and\n"
    "                             the final {\"done\":true, \"finish\", counts, timings}\n"
    "  chat [options] [QUESTION | -p QUESTION | -f FILE]   talk with the model: interactive on\n"
    "                             a terminal (Ctrl-C cancels an answer, /bye quits, /clear\n"
    "                             forgets), one answer when a question is given\n"
    "      --system TEXT          a system message first; other options as for generate\n"
    "  info [--json]              the model and the effective settings (attention, chunk,\n"
    "                             window, context, limits, chat template)\n"
    "  status [--json]            uptime, requests, memory, and each slot's cached tokens\n"
    "  health [--json]            liveness, queue and connection counts (exit 0 when ok)\n"
    "  tokenize [--no-bos] [--special] [--json] [TEXT | -f FILE | -]\n"
    "                             token ids, one per line; --special: <|eot_id|>, <s>... in\n"
    "                             the text become those tokens\n"
    "  detokenize ID...           text of token ids\n"
    "  score [--attn A] [--chunk N] [--window N] [--score S] [--recent N] [--json]\n"
    "        [TEXT | -f FILE | -]\n"
    "                             log-probability of the text under the model\n"
    "  passkey [options]          the pass-key retrieval test (LongHeads paper): a key hidden\n"
    "                             at a random depth of filler text, asked for at the end\n"
    "      --lengths LIST         prompt lengths in tokens (default\n"
    "                             256,1024,4096,8192,16384,32768,131072)\n"
    "      --trials N, --seed S   prompts per length (default 20), seed (default 1)\n"
    "      --attn, --chunk, --window, --timeout   as for generate\n"
    "      --max-tokens N         answer tokens (default 8); -v: a line per trial\n"
    "  version                    this client's version (also --version)\n"
    "\n"
    "  --socket PATH              daemon socket (default: $LONGHEADS_SOCKET, else\n"
    "                             $XDG_RUNTIME_DIR/longheads.sock, /run/longheads/longheads.sock\n"
    "                             for root, /tmp/longheads-$UID/longheads.sock)\n"
    "The model (-m) and the context size (-c) are the daemon's: longheadsd -m MODEL -c N.\n"
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
static atomic_int g_chat_mode;   /* interactive chat: Ctrl-C cancels the answer, not the chat */
static atomic_int g_generating;  /* a chat answer is streaming */

static void *signal_thread(void *arg)
{
    sigset_t *set = arg;
    for (;;) {
        int sig;
        if (sigwait(set, &sig) != 0)
            continue;
        if (sig == SIGINT && atomic_load(&g_chat_mode)) {
            if (atomic_load(&g_generating)) {
                lh_client_cancel(g_client);
            } else {
                const char msg[] = "\n(/bye or Ctrl-D quits)\n>>> ";
                ssize_t w = write(1, msg, sizeof msg - 1);
                (void)w;
            }
            continue;
        }
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

/* ---- generate and chat --------------------------------------------------------------------- */

typedef struct {
    int bar;           /* stderr is a terminal: draw the prefill progress bar */
    int bar_drawn;
    int json;          /* one JSON object per event on stdout */
    size_t n_out;
    char last;         /* the last byte written */
    char *keep;        /* chat: the answer's text, kept for the history (may be NULL) */
    size_t n_keep, cap_keep;
} gen_state;

static void clear_bar(gen_state *st)
{
    if (st->bar_drawn) {
        fputs("\r\033[K", stderr);
        st->bar_drawn = 0;
    }
}

/* s (n bytes, UTF-8) as a JSON string. */
static void json_str(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static int on_event(const lh_client_event *ev, void *ud)
{
    gen_state *st = ud;
    if (ev->kind == LH_CLIENT_EV_PROGRESS) {
        if (st->json) {
            printf("{\"progress\":%llu,\"total\":%llu}\n", (unsigned long long)ev->n_done,
                   (unsigned long long)ev->n_total);
            fflush(stdout);
            return 0;
        }
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
    if (st->keep && ev->text_len) {
        if (st->n_keep + ev->text_len + 1 > st->cap_keep) {
            size_t cap = (st->n_keep + ev->text_len + 1) * 2;
            char *k = realloc(st->keep, cap);
            if (!k)
                return 1; /* out of memory: cancel */
            st->keep = k;
            st->cap_keep = cap;
        }
        memcpy(st->keep + st->n_keep, ev->text, ev->text_len);
        st->n_keep += ev->text_len;
        st->keep[st->n_keep] = 0;
    }
    if (st->json) {
        printf("{\"token\":%d,\"text\":", (int)ev->token);
        json_str(stdout, ev->text, ev->text_len);
        fputs("}\n", stdout);
        fflush(stdout);
    } else if (ev->text_len) {
        fwrite(ev->text, 1, ev->text_len, stdout);
        fflush(stdout);
        st->n_out += ev->text_len;
        st->last = ev->text[ev->text_len - 1];
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

/* The final stats line of --json. */
static void json_final(const lh_client_result *res, const char *error)
{
    printf("{\"done\":true,\"finish\":\"%s\",\"n_prompt\":%u,\"n_reused\":%u,\"n_generated\":%u,"
           "\"queue_ms\":%.3f,\"prefill_ms\":%.3f,\"decode_ms\":%.3f,\"prefill_tps\":%.3f,"
           "\"decode_tps\":%.3f",
           finish_name(res->finish), res->n_prompt, res->n_reused, res->n_generated,
           res->queue_ms, res->prefill_ms, res->decode_ms, res->prefill_tps, res->decode_tps);
    if (error && *error) {
        fputs(",\"error\":", stdout);
        json_str(stdout, error, strlen(error));
    }
    fputs("}\n", stdout);
    fflush(stdout);
}

/* A number for flag: in [lo, hi], else a message naming the flag and the range. */
static int parse_num(const char *flag, const char *s, double lo, double hi, double *outp)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "longheads: %s: '%s' is not a number in [%g, %g]\n", flag, s, lo, hi);
        return -1;
    }
    *outp = v;
    return 0;
}

/* s is a (*out = 0) or b (*out = 1): 0, else EXIT_USAGE after saying what flag takes. */
static int pick_word(const char *flag, const char *s, const char *a, const char *b, int *out)
{
    if (strcmp(s, a) != 0 && strcmp(s, b) != 0) {
        fprintf(stderr, "longheads: %s: '%s' is not %s or %s\n", flag, s, a, b);
        return EXIT_USAGE;
    }
    *out = strcmp(s, b) == 0;
    return 0;
}

int lh_cli_parse_attn(const char *s, lh_client_attn *out)
{
    int i;
    if (pick_word("--attn", s, "full", "longheads", &i))
        return EXIT_USAGE;
    *out = i ? LH_CLIENT_ATTN_LONGHEADS : LH_CLIENT_ATTN_FULL;
    return 0;
}

int lh_cli_parse_score(const char *s, lh_client_chunk_score *out)
{
    int i;
    if (pick_word("--score", s, "rep", "bound", &i))
        return EXIT_USAGE;
    *out = i ? LH_CLIENT_SCORE_BOUND : LH_CLIENT_SCORE_REP;
    return 0;
}

static int parse_int(const char *flag, const char *s, double lo, double hi, double *outp)
{
    if (parse_num(flag, s, lo, hi, outp))
        return -1;
    if (*outp != (double)(long long)*outp) {
        fprintf(stderr, "longheads: %s: '%s' is not a whole number\n", flag, s);
        return -1;
    }
    return 0;
}

/* What generate and chat share: the options and the prompt source. */
typedef struct {
    lh_client_gen_opts o;
    const char *stops[64];
    size_t n_stop;
    const char *file, *prompt, *system;
    int echo, stats, json;
} gen_cli;

/* Parses generate/chat options.  Returns 0, EXIT_USAGE (reported), or -1 for --help. */
static int parse_gen(gen_cli *g, int argc, char **argv, int chat)
{
    enum { O_TEMP = 256, O_TOPK, O_TOPP, O_MINP, O_REP, O_REPN, O_SEED, O_STOP, O_ATTN, O_CHUNK,
           O_WINDOW, O_TIMEOUT, O_ECHO, O_STATS, O_JSON, O_SYSTEM, O_SPECIAL, O_SCORE, O_RECENT };
    static const struct option opts[] = {
        {"max-tokens", required_argument, 0, 'n'}, {"n-predict", required_argument, 0, 'n'},
        {"temp", required_argument, 0, O_TEMP}, {"temperature", required_argument, 0, O_TEMP},
        {"top-k", required_argument, 0, O_TOPK}, {"top-p", required_argument, 0, O_TOPP},
        {"min-p", required_argument, 0, O_MINP}, {"repeat-penalty", required_argument, 0, O_REP},
        {"repeat-last-n", required_argument, 0, O_REPN}, {"seed", required_argument, 0, O_SEED},
        {"stop", required_argument, 0, O_STOP}, {"attn", required_argument, 0, O_ATTN},
        {"chunk", required_argument, 0, O_CHUNK}, {"window", required_argument, 0, O_WINDOW},
        {"score", required_argument, 0, O_SCORE}, {"recent", required_argument, 0, O_RECENT},
        {"timeout", required_argument, 0, O_TIMEOUT}, {"echo", no_argument, 0, O_ECHO},
        {"special", no_argument, 0, O_SPECIAL},
        {"stats", no_argument, 0, O_STATS}, {"json", no_argument, 0, O_JSON},
        {"file", required_argument, 0, 'f'}, {"prompt", required_argument, 0, 'p'},
        {"system", required_argument, 0, O_SYSTEM}, {"model", required_argument, 0, 'm'},
        {"ctx-size", required_argument, 0, 'c'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    memset(g, 0, sizeof *g);
    lh_client_gen_opts_default(&g->o);
    int c;
    double v;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "n:f:p:m:c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            if (strcmp(optarg, "-1") == 0) {
                g->o.max_tokens = UINT32_MAX; /* until the end of the text or of the context */
                break;
            }
            if (strcmp(optarg, "0") == 0) {
                fprintf(stderr, "longheads: -n 0 asks for no tokens; give 1 to 1000000000, or -1 "
                        "for \"until the end of the text\" (default: the daemon's, 256)\n");
                return EXIT_USAGE;
            }
            if (parse_int("-n", optarg, 1, 1e9, &v)) return EXIT_USAGE;
            g->o.max_tokens = (uint32_t)v;
            break;
        case O_TEMP: if (parse_num("--temp", optarg, 0, 100, &v)) return EXIT_USAGE; g->o.temperature = (float)v; break;
        case O_TOPK: if (parse_int("--top-k", optarg, 0, 1e6, &v)) return EXIT_USAGE; g->o.top_k = (int32_t)v; break;
        case O_TOPP:
            if (parse_num("--top-p", optarg, 0, 1, &v)) return EXIT_USAGE;
            if (v == 0) {
                fprintf(stderr, "longheads: --top-p: 0 keeps no token; give a number in (0, 1] "
                        "(1 = off)\n");
                return EXIT_USAGE;
            }
            g->o.top_p = (float)v;
            break;
        case O_MINP: if (parse_num("--min-p", optarg, 0, 1, &v)) return EXIT_USAGE; g->o.min_p = (float)v; break;
        case O_REP:
            if (parse_num("--repeat-penalty", optarg, 0, 100, &v)) return EXIT_USAGE;
            if (v == 0) {
                fprintf(stderr, "longheads: --repeat-penalty: give a number in (0, 100] (1 = off)\n");
                return EXIT_USAGE;
            }
            g->o.repeat_penalty = (float)v;
            break;
        case O_REPN: if (parse_int("--repeat-last-n", optarg, 0, 1e6, &v)) return EXIT_USAGE; g->o.repeat_last_n = (int32_t)v; break;
        case O_SEED: {
            char *end;
            errno = 0;
            g->o.seed = strtoull(optarg, &end, 0);
            if (errno || *end || end == optarg || optarg[0] == '-') {
                fprintf(stderr, "longheads: --seed: '%s' is not a number in [0, 2^64-1]\n", optarg);
                return EXIT_USAGE;
            }
            g->o.has_seed = 1;
            break;
        }
        case O_STOP:
            if (g->n_stop == sizeof g->stops / sizeof g->stops[0]) {
                fprintf(stderr, "longheads: --stop: at most 64 strings\n");
                return EXIT_USAGE;
            }
            g->stops[g->n_stop++] = optarg;
            break;
        case O_ATTN:
            if (lh_cli_parse_attn(optarg, &g->o.attn))
                return EXIT_USAGE;
            break;
        case O_SCORE:
            if (lh_cli_parse_score(optarg, &g->o.score))
                return EXIT_USAGE;
            break;
        case O_CHUNK: if (parse_int("--chunk", optarg, 1, 65536, &v)) return EXIT_USAGE; g->o.chunk = (uint32_t)v; break;
        case O_WINDOW: if (parse_int("--window", optarg, 2, 1 << 20, &v)) return EXIT_USAGE; g->o.window = (uint32_t)v; break;
        case O_RECENT: if (parse_int("--recent", optarg, 1, 65536, &v)) return EXIT_USAGE; g->o.recent = (uint32_t)v; break;
        case O_TIMEOUT: if (parse_int("--timeout", optarg, 0, 1e9, &v)) return EXIT_USAGE; g->o.timeout_ms = (uint32_t)v; break;
        case O_ECHO: g->echo = 1; break;
        case O_SPECIAL: g->o.special = 1; break;
        case O_STATS: g->stats = 1; break;
        case O_JSON: g->json = 1; break;
        case O_SYSTEM:
            if (!chat) {
                fprintf(stderr, "longheads: --system is an option of chat\n");
                return EXIT_USAGE;
            }
            g->system = optarg;
            break;
        case 'f': g->file = optarg; break;
        case 'p': g->prompt = optarg; break;
        case 'm':
        case 'c':
            fprintf(stderr, "longheads: %s is an option of the daemon, which loads the model "
                    "once for every client: longheadsd -m MODEL -c CONTEXT\n",
                    c == 'm' ? "-m/--model" : "-c/--ctx-size");
            return EXIT_USAGE;
        case 'h': return -1;
        default:
            if (optopt && optopt < 256)
                fprintf(stderr, "longheads: %s: unknown option -%c or it needs a value (see "
                        "longheads --help)\n", chat ? "chat" : "generate", optopt);
            else
                fprintf(stderr, "longheads: %s: unknown option %s or it needs a value (see "
                        "longheads --help)\n", chat ? "chat" : "generate", argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    g->o.stop = g->stops;
    g->o.n_stop = g->n_stop;
    return 0;
}

/* The prompt of generate: -p TEXT, -f FILE, '-', or the arguments.  A NUL byte is an error (the
 * wire carries text; it would end the prompt there). */
static int gen_text(const gen_cli *g, int argc, char **argv, char **textp, size_t *lenp)
{
    int rc;
    if (g->prompt && (g->file || argc)) {
        fprintf(stderr, "longheads: give the prompt once: -p TEXT, -f FILE or as arguments\n");
        return EXIT_USAGE;
    }
    if (g->prompt) {
        *lenp = strlen(g->prompt);
        *textp = strdup(g->prompt);
        return *textp ? 0 : EXIT_USAGE;
    }
    if ((rc = get_text(g->file, argc, argv, textp, lenp)) != 0)
        return rc;
    const char *nul = memchr(*textp, 0, *lenp);
    if (nul) {
        fprintf(stderr, "longheads: the prompt has a NUL byte at offset %zu of %zu (binary "
                "input?); remove it: the prompt is text\n", (size_t)(nul - *textp), *lenp);
        free(*textp);
        *textp = NULL;
        return EXIT_USAGE;
    }
    return 0;
}

/* The end of a generation or chat answer: newline, stats, errors.  Returns the exit status. */
static int gen_finish(lh_client *cl, const gen_cli *g, gen_state *st, int grc,
                      const lh_client_result *res)
{
    clear_bar(st);
    if (grc != 0 && grc != LH_CLIENT_E_SERVER) {
        fprintf(stderr, "longheads: the request failed: %s\n", lh_client_strerror(grc));
        return EXIT_REQUEST;
    }
    const char *err = grc == LH_CLIENT_E_SERVER ? lh_client_last_error(cl) : res->error;
    if (g->json) {
        json_final(res, res->finish == LH_CLIENT_FINISH_ERROR ? err : NULL);
    } else if (st->n_out && st->last != '\n') {
        /* the text ends with a newline, on a terminal and in a pipe alike */
        fputc('\n', stdout);
        st->last = '\n';
    }
    fflush(stdout);
    if (g->stats)
        fprintf(stderr,
                "finish: %s; prompt %u tokens (%u reused), generated %u; queue %.1f ms, "
                "prefill %.1f ms (%.1f tok/s), decode %.1f ms (%.1f tok/s)\n",
                finish_name(res->finish), res->n_prompt, res->n_reused, res->n_generated,
                res->queue_ms, res->prefill_ms, res->prefill_tps, res->decode_ms, res->decode_tps);
    if (grc == LH_CLIENT_E_SERVER || res->finish == LH_CLIENT_FINISH_ERROR) {
        fprintf(stderr, "longheads: %s\n", err);
        return EXIT_REQUEST;
    }
    if (res->finish == LH_CLIENT_FINISH_CANCELLED) {
        fprintf(stderr, "longheads: cancelled\n");
        return atomic_load(&g_interrupted) ? EXIT_INTERRUPTED : EXIT_REQUEST;
    }
    return 0;
}

static int cmd_generate(const char *sock, int argc, char **argv)
{
    gen_cli g;
    int rc = parse_gen(&g, argc, argv, 0);
    if (rc)
        return rc < 0 ? (usage(stdout), 0) : rc;
    char *text = NULL;
    size_t len = 0;
    if ((rc = gen_text(&g, argc - optind, argv + optind, &text, &len)) != 0)
        return rc;
    g.o.prompt = text;
    g.o.prompt_len = len;
    lh_client *cl = NULL;
    if ((rc = lh_cli_connect(&cl, sock)) != 0)
        goto out;
    start_signal_thread(cl);
    if (g.echo && !g.json) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    gen_state st = {.bar = isatty(2), .json = g.json};
    lh_client_result res;
    int grc = lh_client_generate(cl, &g.o, on_event, &st, &res);
    rc = gen_finish(cl, &g, &st, grc, &res);
out:
    lh_client_close(cl);
    free(text);
    return rc;
}

/* ---- chat ---------------------------------------------------------------------------------- */

typedef struct {
    lh_client_chat_msg *m;
    size_t n, cap;
} history;

static int history_add(history *h, const char *role, const char *content, size_t len)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        lh_client_chat_msg *m = realloc(h->m, cap * sizeof *m);
        if (!m)
            return -1;
        h->m = m;
        h->cap = cap;
    }
    char *c = malloc(len + 1);
    if (!c)
        return -1;
    memcpy(c, content, len);
    c[len] = 0;
    h->m[h->n].role = role;
    h->m[h->n].content = c;
    h->n++;
    return 0;
}

static void history_pop(history *h)
{
    if (h->n)
        free((char *)h->m[--h->n].content);
}

static void history_free(history *h)
{
    while (h->n)
        history_pop(h);
    free(h->m);
}

/* One turn: the history (ending with the user's message) goes to the daemon; the answer is
 * streamed to stdout and, unless cancelled or failed, appended to the history. */
static int chat_turn(lh_client *cl, const gen_cli *g, history *h, int *cancelledp)
{
    gen_state st = {.bar = isatty(2), .json = g->json, .keep = malloc(1), .cap_keep = 1};
    if (!st.keep)
        return EXIT_REQUEST;
    st.keep[0] = 0;
    lh_client_result res;
    atomic_store(&g_generating, 1);
    int grc = lh_client_chat(cl, h->m, h->n, &g->o, on_event, &st, &res);
    atomic_store(&g_generating, 0);
    *cancelledp = grc == 0 && res.finish == LH_CLIENT_FINISH_CANCELLED;
    int rc = 0;
    if (*cancelledp) {
        clear_bar(&st);
        if (g->json)
            json_final(&res, NULL);
        else
            fputs(st.n_out && st.last != '\n' ? "\n[answer cancelled]\n" : "[answer cancelled]\n",
                  stdout);
        fflush(stdout);
    } else {
        rc = gen_finish(cl, g, &st, grc, &res);
    }
    if (rc == 0 && !*cancelledp && history_add(h, "assistant", st.keep, st.n_keep) != 0)
        rc = EXIT_REQUEST;
    free(st.keep);
    return rc;
}

static int cmd_chat(const char *sock, int argc, char **argv)
{
    gen_cli g;
    int rc = parse_gen(&g, argc, argv, 1);
    if (rc)
        return rc < 0 ? (usage(stdout), 0) : rc;
    int no_question = argc - optind == 0 && !g.prompt && !g.file;
    int interactive = no_question && isatty(0);
    if (no_question && !interactive)
        g.file = "-"; /* `... | longheads chat`: the question comes on standard input */
    char *question = NULL;
    size_t qlen = 0;
    if (!interactive && (rc = gen_text(&g, argc - optind, argv + optind, &question, &qlen)) != 0)
        return rc;
    history h = {0};
    lh_client *cl = NULL;
    if ((rc = lh_cli_connect(&cl, sock)) != 0)
        goto out;
    atomic_store(&g_chat_mode, interactive);
    start_signal_thread(cl);
    if (g.system && history_add(&h, "system", g.system, strlen(g.system)) != 0) {
        rc = EXIT_REQUEST;
        goto out;
    }
    const char *tmpl = lh_client_chat_template(cl);
    if (!interactive) {
        if (strstr(tmpl, "default"))
            fprintf(stderr, "longheads: chat template: %s\n", tmpl);
        int cancelled;
        if (history_add(&h, "user", question, qlen) != 0) {
            rc = EXIT_REQUEST;
            goto out;
        }
        rc = chat_turn(cl, &g, &h, &cancelled);
        if (cancelled)
            rc = atomic_load(&g_interrupted) ? EXIT_INTERRUPTED : EXIT_REQUEST;
        goto out;
    }
    fprintf(stderr, "chatting with %s\nchat template: %s\n/bye or Ctrl-D quits, Ctrl-C cancels "
            "an answer, /clear forgets the conversation\n", lh_client_model(cl)->desc, tmpl);
    char line[65536];
    for (;;) {
        fputs(">>> ", stdout);
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin)) {
            if (ferror(stdin) && errno == EINTR) {
                clearerr(stdin);
                continue;
            }
            fputc('\n', stdout);
            break;
        }
        size_t n = strcspn(line, "\r\n");
        line[n] = 0;
        if (n == 0)
            continue;
        if (strcmp(line, "/bye") == 0 || strcmp(line, "/exit") == 0 || strcmp(line, "/quit") == 0)
            break;
        if (strcmp(line, "/clear") == 0) {
            history_free(&h);
            memset(&h, 0, sizeof h);
            if (g.system && history_add(&h, "system", g.system, strlen(g.system)) != 0)
                break;
            fputs("(conversation cleared)\n", stdout);
            continue;
        }
        if (line[0] == '/' && strchr(line, ' ') == NULL) {
            fprintf(stdout, "unknown command %s: /bye quits, /clear forgets the conversation\n",
                    line);
            continue;
        }
        if (history_add(&h, "user", line, n) != 0) {
            rc = EXIT_REQUEST;
            break;
        }
        int cancelled;
        rc = chat_turn(cl, &g, &h, &cancelled);
        if (cancelled)
            history_pop(&h); /* the turn did not happen */
        if (rc != 0 && rc != EXIT_REQUEST)
            break;
        rc = 0; /* a failed turn is reported; the chat goes on */
    }
out:
    history_free(&h);
    lh_client_close(cl);
    free(question);
    return rc;
}

/* ---- the small commands -------------------------------------------------------------------- */

/* --json as the only option of info, health and status. */
static int small_opts(const char *cmd, int argc, char **argv, int *jsonp)
{
    *jsonp = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            *jsonp = 1;
        } else {
            fprintf(stderr, "longheads: %s takes no argument '%s' (only --json)\n", cmd, argv[i]);
            return EXIT_USAGE;
        }
    }
    return 0;
}

static const char *attn_name(lh_client_attn a)
{
    return a == LH_CLIENT_ATTN_LONGHEADS ? "longheads" : a == LH_CLIENT_ATTN_FULL ? "full"
                                                                                   : "default";
}

static int cmd_info(const char *sock, int argc, char **argv)
{
    int json, rc = small_opts("info", argc, argv, &json);
    if (rc)
        return rc;
    lh_client *cl;
    if ((rc = lh_cli_connect(&cl, sock)) != 0)
        return rc;
    lh_client_info info;
    rc = lh_client_get_info(cl, &info);
    if (rc != 0) {
        fprintf(stderr, "longheads: info: %s %s\n", lh_client_strerror(rc), lh_client_last_error(cl));
        lh_client_close(cl);
        return EXIT_REQUEST;
    }
    const lh_client_model_info *m = &info.model;
    int lh = m->attn_default == LH_CLIENT_ATTN_LONGHEADS;
    if (json) {
        printf("{\"server_version\":");
        json_str(stdout, m->server_version, strlen(m->server_version));
        printf(",\"socket\":");
        json_str(stdout, info.socket_path, strlen(info.socket_path));
        printf(",\"model\":");
        json_str(stdout, m->path, strlen(m->path));
        printf(",\"description\":");
        json_str(stdout, m->desc, strlen(m->desc));
        printf(",\"n_params\":%llu,\"n_layer\":%u,\"n_embd\":%u,\"n_head\":%u,\"n_head_kv\":%u,"
               "\"n_vocab\":%u,\"n_ctx\":%u,\"n_ctx_train\":%u,\"n_slots\":%u,\"kv_type\":\"%s\","
               "\"attn\":\"%s\",\"chunk\":%u,\"window\":%u,\"score\":\"%s\",\"recent\":%u,"
               "\"attn_allowed\":[%s%s%s],"
               "\"max_prompt_tokens\":%u,\"max_frame\":%u,\"chat_template\":",
               (unsigned long long)m->n_params, m->n_layer, m->n_embd, m->n_head, m->n_head_kv,
               m->n_vocab, m->n_ctx, m->n_ctx_train, m->n_slots, m->kv_type,
               attn_name(m->attn_default), lh ? m->chunk_default : 0, lh ? m->window_default : 0,
               m->score_default == LH_CLIENT_SCORE_BOUND ? "bound" : "rep",
               lh ? m->recent_default : 0, m->attn_full_allowed ? "\"full\"" : "",
               m->attn_full_allowed && m->attn_longheads_allowed ? "," : "",
               m->attn_longheads_allowed ? "\"longheads\"" : "", m->max_prompt_tokens,
               m->max_frame);
        const char *t = lh_client_chat_template(cl);
        json_str(stdout, t, strlen(t));
        printf("}\n");
        lh_client_close(cl);
        return 0;
    }
    printf("daemon:        longheadsd %s on %s\n", m->server_version, info.socket_path);
    printf("model:         %s\n", m->path);
    printf("description:   %s\n", m->desc);
    printf("parameters:    %llu\n", (unsigned long long)m->n_params);
    printf("layers:        %u, embedding %u, heads %u (kv %u), vocabulary %u\n", m->n_layer,
           m->n_embd, m->n_head, m->n_head_kv, m->n_vocab);
    if (lh)
        printf("attention:     longheads, chunk %u, window %u, score %s, recent %u (each head "
               "attends to at most %u tokens; inside them it is full attention)\n",
               m->chunk_default, m->window_default,
               m->score_default == LH_CLIENT_SCORE_BOUND ? "bound" : "rep", m->recent_default,
               m->window_default);
    else
        printf("attention:     full (the whole context)\n");
    printf("               requests may choose:%s%s\n", m->attn_full_allowed ? " full" : "",
           m->attn_longheads_allowed ? " longheads" : "");
    printf("context:       %u tokens per slot, %u slot(s), KV %s (the file says it was trained "
           "at %u)\n", m->n_ctx, m->n_slots, m->kv_type, m->n_ctx_train);
    printf("limits:        prompt %u tokens, frame %u bytes\n", m->max_prompt_tokens, m->max_frame);
    printf("chat template: %s\n", lh_client_chat_template(cl));
    lh_client_close(cl);
    return 0;
}

static void print_bytes(double b)
{
    if (b >= 1024.0 * 1024 * 1024)
        printf("%.2f GiB", b / (1024.0 * 1024 * 1024));
    else if (b >= 1024.0 * 1024)
        printf("%.1f MiB", b / (1024.0 * 1024));
    else
        printf("%.0f KiB", b / 1024.0);
}

static int cmd_health(const char *sock, int argc, char **argv, int full)
{
    int json, rc = small_opts(full ? "status" : "health", argc, argv, &json);
    if (rc)
        return rc;
    lh_client *cl;
    if ((rc = lh_cli_connect(&cl, sock)) != 0)
        return rc;
    lh_client_status s;
    rc = lh_client_get_status(cl, &s);
    if (rc != 0) {
        fprintf(stderr, "longheads: %s: %s\n", full ? "status" : "health", lh_client_strerror(rc));
        lh_client_close(cl);
        return EXIT_REQUEST;
    }
    const lh_client_health *h = &s.health;
    const lh_client_model_info *m = lh_client_model(cl);
    rc = strcmp(h->status, "ok") == 0 ? 0 : EXIT_REQUEST;
    if (json) {
        printf("{\"status\":\"%s\",\"uptime_s\":%.3f,\"connections\":%u,\"queued\":%u,"
               "\"active\":%u,\"served\":%llu", h->status, h->uptime_s, h->n_connections,
               h->n_queued, h->n_active, (unsigned long long)h->n_served);
        if (full) {
            printf(",\"model\":");
            json_str(stdout, m->path, strlen(m->path));
            printf(",\"rss_bytes\":%llu,\"slots\":[", (unsigned long long)s.rss_bytes);
            for (uint32_t i = 0; i < s.n_slots && i < LH_CLIENT_MAX_SLOTS; i++) {
                const lh_client_slot *sl = &s.slots[i];
                printf("%s{\"busy\":%s,\"cached_tokens\":%u,\"n_ctx\":%u,\"attn\":\"%s\","
                       "\"chunk\":%u,\"window\":%u,\"recent\":%u,\"kv_bytes\":%llu,"
                       "\"kv_disk_bytes\":%llu}",
                       i ? "," : "", sl->busy ? "true" : "false", sl->n_cached, sl->n_ctx,
                       attn_name(sl->attn), sl->chunk, sl->window, sl->recent,
                       (unsigned long long)sl->kv_bytes, (unsigned long long)sl->kv_disk_bytes);
            }
            printf("]");
        }
        printf("}\n");
        lh_client_close(cl);
        return rc;
    }
    if (!full) {
        printf("%s: up %.1f s, %u connection(s), %u queued, %u active, %llu served\n", h->status,
               h->uptime_s, h->n_connections, h->n_queued, h->n_active,
               (unsigned long long)h->n_served);
        lh_client_close(cl);
        return rc;
    }
    printf("status:   %s, up %.0f s, %u connection(s), %u queued, %u active, %llu served\n",
           h->status, h->uptime_s, h->n_connections, h->n_queued, h->n_active,
           (unsigned long long)h->n_served);
    printf("model:    %s (%s)\n", m->path, m->desc);
    printf("memory:   ");
    print_bytes((double)s.rss_bytes);
    printf(" resident\n");
    for (uint32_t i = 0; i < s.n_slots && i < LH_CLIENT_MAX_SLOTS; i++) {
        const lh_client_slot *sl = &s.slots[i];
        printf("slot %u:   %s, %u of %u tokens cached (", i, sl->busy ? "busy" : "idle",
               sl->n_cached, sl->n_ctx);
        print_bytes((double)sl->kv_bytes);
        if (sl->kv_disk_bytes) { /* --kv-dir: the KV cache is in a file, not in memory */
            printf(", of which the KV cache ");
            print_bytes((double)sl->kv_disk_bytes);
            printf(" on disk");
        }
        if (sl->attn == LH_CLIENT_ATTN_LONGHEADS)
            printf("), longheads chunk %u window %u recent %u%s\n", sl->chunk, sl->window,
                   sl->recent, sl->score == LH_CLIENT_SCORE_BOUND ? " score bound" : "");
        else
            printf("), full attention\n");
    }
    lh_client_close(cl);
    return rc;
}

static int cmd_tokenize(const char *sock, int argc, char **argv, int score)
{
    const char *file = NULL;
    int add_bos = 1, special = 0, c, json = 0;
    lh_client_score_opts so = {LH_CLIENT_ATTN_DEFAULT, 0, 0, LH_CLIENT_SCORE_DEFAULT, 0};
    double v = 0;
    enum { O_NOBOS = 256, O_SPECIAL, O_JSON, O_ATTN, O_CHUNK, O_WINDOW, O_SCORE, O_RECENT };
    static const struct option opts[] = {{"no-bos", no_argument, 0, O_NOBOS},
                                         {"special", no_argument, 0, O_SPECIAL},
                                         {"json", no_argument, 0, O_JSON},
                                         {"attn", required_argument, 0, O_ATTN},
                                         {"chunk", required_argument, 0, O_CHUNK},
                                         {"window", required_argument, 0, O_WINDOW},
                                         {"score", required_argument, 0, O_SCORE},
                                         {"recent", required_argument, 0, O_RECENT},
                                         {"file", required_argument, 0, 'f'},
                                         {0, 0, 0, 0}};
    const char *cmd = score ? "score" : "tokenize";
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+f:", opts, NULL)) != -1) {
        if (c == O_NOBOS && !score) {
            add_bos = 0;
        } else if (c == O_SPECIAL && !score) {
            special = 1;
        } else if (c == O_JSON) {
            json = 1;
        } else if (c == 'f') {
            file = optarg;
        } else if (c == O_ATTN && score) {
            if (lh_cli_parse_attn(optarg, &so.attn))
                return EXIT_USAGE;
        } else if (c == O_SCORE && score) {
            if (lh_cli_parse_score(optarg, &so.score))
                return EXIT_USAGE;
        } else if (c == O_CHUNK && score) {
            if (parse_int("--chunk", optarg, 1, 65536, &v))
                return EXIT_USAGE;
            so.chunk = (uint32_t)v;
        } else if (c == O_WINDOW && score) {
            if (parse_int("--window", optarg, 2, 1 << 20, &v))
                return EXIT_USAGE;
            so.window = (uint32_t)v;
        } else if (c == O_RECENT && score) {
            if (parse_int("--recent", optarg, 1, 65536, &v))
                return EXIT_USAGE;
            so.recent = (uint32_t)v;
        } else {
            fprintf(stderr, "longheads: %s: unknown option %s (see longheads --help)\n", cmd,
                    argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    char *text;
    size_t len;
    gen_cli g;
    memset(&g, 0, sizeof g);
    g.file = file;
    int rc = gen_text(&g, argc - optind, argv + optind, &text, &len);
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
    int trc = score ? lh_client_score_ex(cl, text, len, &so, lp, cap, &n, &total)
                    : lh_client_tokenize(cl, text, len,
                                         (add_bos ? LH_CLIENT_TOK_BOS : 0) |
                                             (special ? LH_CLIENT_TOK_SPECIAL : 0),
                                         ids, cap, &n);
    if (trc != 0) {
        fprintf(stderr, "longheads: %s: %s%s%s\n", cmd,
                lh_client_strerror(trc), trc == LH_CLIENT_E_SERVER ? ": " : "",
                trc == LH_CLIENT_E_SERVER ? lh_client_last_error(cl) : "");
        rc = EXIT_REQUEST;
        goto out;
    }
    if (score && json) {
        printf("{\"tokens\":%zu,\"logprob\":%.6f,\"mean\":%.6f,\"perplexity\":%.4f}\n", n + 1,
               total, n ? total / (double)n : 0.0, n ? exp(-total / (double)n) : 0.0);
    } else if (score) {
        printf("tokens: %zu\nlogprob: %.6f\nmean: %.6f\nperplexity: %.4f\n", n + 1, total,
               n ? total / (double)n : 0.0, n ? exp(-total / (double)n) : 0.0);
    } else if (json) {
        printf("{\"tokens\":[");
        for (size_t i = 0; i < n; i++)
            printf("%s%d", i ? "," : "", ids[i]);
        printf("]}\n");
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
        } else if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-v") == 0) {
            printf("longheads %s\n", LH_VERSION);
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
    if (strcmp(cmd, "chat") == 0)
        return cmd_chat(sock, sub_argc, sub_argv);
    if (strcmp(cmd, "info") == 0)
        return cmd_info(sock, sub_argc, sub_argv);
    if (strcmp(cmd, "health") == 0)
        return cmd_health(sock, sub_argc, sub_argv, 0);
    if (strcmp(cmd, "status") == 0)
        return cmd_health(sock, sub_argc, sub_argv, 1);
    if (strcmp(cmd, "tokenize") == 0)
        return cmd_tokenize(sock, sub_argc, sub_argv, 0);
    if (strcmp(cmd, "score") == 0)
        return cmd_tokenize(sock, sub_argc, sub_argv, 1);
    if (strcmp(cmd, "detokenize") == 0)
        return cmd_detokenize(sock, sub_argc, sub_argv);
    if (strcmp(cmd, "passkey") == 0)
        return lh_cli_passkey(sock, sub_argc, sub_argv);
    if (strcmp(cmd, "version") == 0) {
        printf("longheads %s\n", LH_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "longheads: unknown command '%s'\n", cmd);
    usage(stderr);
    return EXIT_USAGE;
}
