/* tests/test_kvfile — the KV cache on disk (engine/kvfile, --kv-dir) and the persistent prompt
 * cache (engine/pcache, --prompt-cache), on the bundled stories260K:
 * - a context whose KV cache lives in a file, under a budget small enough that its resident pages
 *   are dropped many times, gives bit-identical logits to the in-memory one (LongHeads F32 and
 *   F16, full attention), and its file never has a name and is gone when the context is freed;
 * - a file that cannot grow is an error for that evaluation, never a SIGBUS: RLIMIT_FSIZE (which
 *   needs no mount and works as root: growing past it fails with EFBIG, SIGXFSZ ignored) stands
 *   in for a full disk (ENOSPC takes the same path); after the limit is lifted it evaluates on;
 *   where this process may mount, a full 8 MiB tmpfs gives the real ENOSPC (else a skip);
 * - the prompt cache: save, load into a fresh context, identical logits afterwards; the longest
 *   saved prefix wins; corrupted, truncated and foreign files are ignored with one log line;
 *   eviction keeps the directory within its bound;
 * - through the daemon: a prompt resent after a restart reuses the saved state (reported reused
 *   count) with the same text; a corrupted file after a restart is ignored with a log line; a KV
 *   file that cannot grow fails that request with a named error and the daemon serves on.
 */
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "log.h"
#include "longheads.h"
#include "model.h"
#include "params.h"
#include "pcache.h"
#include "tokenizer.h"
#include "../client/longheads.h"

static lh_model *g_model;
static char g_dir[64];
static int32_t *g_toks;     /* the start of tests/data/stories-long.txt, BOS first */
static size_t g_n_toks;

static int suite_init(void)
{
    if (lh_model_open(&g_model, lh_test_model_path()))
        return -1;
    snprintf(g_dir, sizeof g_dir, "/tmp/lh-kvfile-XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    FILE *f = fopen("tests/data/stories-long.txt", "rb");
    if (!f)
        return -1;
    char *text = malloc(1 << 20);
    size_t len = fread(text, 1, (1 << 20) - 1, f);
    fclose(f);
    g_toks = malloc((len + 2) * sizeof *g_toks);
    int rc = lh_tok_encode(lh_model_tok(g_model), text, len, LH_TOK_BOS, g_toks, len + 2, &g_n_toks);
    free(text);
    return rc || g_n_toks < 4000 ? -1 : 0;
}

static int suite_clean(void)
{
    lh_model_close(g_model);
    free(g_toks);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void mkdir_in(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", g_dir, name);
    mkdir(out, 0700);
}

/* Entries of dir other than . and .. (with suffix: only names ending so). */
static size_t n_entries(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t len = strlen(e->d_name), sl = suffix ? strlen(suffix) : 0;
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            (!suffix || (len >= sl && strcmp(e->d_name + len - sl, suffix) == 0)))
            n++;
    }
    if (d)
        closedir(d);
    return n;
}

/* This process's open files that live in dir (deleted or not). */
static size_t n_fds_into(const char *dir)
{
    DIR *d = opendir("/proc/self/fd");
    size_t n = 0, dl = strlen(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char p[300], t[512];
        snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
        ssize_t k = readlink(p, t, sizeof t - 1);
        if (k > 0) {
            t[k] = 0;
            if (strncmp(t, dir, dl) == 0 && t[dl] == '/')
                n++;
        }
    }
    if (d)
        closedir(d);
    return n;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return calloc(1, 1);
    char *s = calloc(1, 1 << 20);
    size_t n = fread(s, 1, (1 << 20) - 1, f);
    s[n] = 0;
    fclose(f);
    return s;
}

static lh_ctx *ctx_new(lh_attn_mode attn, lh_type kv, size_t n_ctx, const char *kv_dir,
                       size_t budget)
{
    lh_ctx_params p;
    lh_ctx_params_default(&p);
    p.attn = attn;
    p.kv_type = kv;
    p.n_ctx = n_ctx;
    p.kv_dir = kv_dir;
    p.kv_budget = budget;
    lh_ctx *c = NULL;
    CU_ASSERT_EQUAL(lh_ctx_new(&c, g_model, &p), 0);
    return c;
}

/* ---- the KV cache on disk ------------------------------------------------------------------- */

static void identical_case(lh_attn_mode attn, lh_type kv, size_t n_prompt, size_t n_decode)
{
    char dir[128];
    mkdir_in(dir, sizeof dir, "kv");
    size_t n_vocab = lh_model_hparams(g_model)->n_vocab;
    lh_ctx *mem = ctx_new(attn, kv, 4096, NULL, 0);
    /* a budget of 256 KiB: the resident pages are dropped over and over */
    lh_ctx *disk = ctx_new(attn, kv, 4096, dir, 256 << 10);
    CU_ASSERT_FATAL(mem && disk);
    CU_ASSERT_EQUAL(lh_ctx_params_get(disk)->n_ctx, 4096);
    CU_ASSERT(n_fds_into(dir) >= 1);  /* the KV file is open ... */
    CU_ASSERT_EQUAL(n_entries(dir, NULL), 0); /* ... and has no name */
    float *a = malloc(n_prompt * n_vocab * sizeof *a), *b = malloc(n_prompt * n_vocab * sizeof *b);
    CU_ASSERT_FATAL(a && b);
    CU_ASSERT_EQUAL(lh_ctx_eval(mem, g_toks, n_prompt, a, 1), 0);
    CU_ASSERT_EQUAL(lh_ctx_eval(disk, g_toks, n_prompt, b, 1), 0);
    CU_ASSERT_EQUAL(memcmp(a, b, n_prompt * n_vocab * sizeof *a), 0);
    size_t same = 1;
    for (size_t i = 0; i < n_decode; i++) {
        int32_t t = g_toks[n_prompt + i];
        CU_ASSERT_EQUAL(lh_ctx_eval(mem, &t, 1, a, 0), 0);
        CU_ASSERT_EQUAL(lh_ctx_eval(disk, &t, 1, b, 0), 0);
        same &= memcmp(a, b, n_vocab * sizeof *a) == 0;
    }
    CU_ASSERT(same);
    CU_ASSERT(lh_ctx_kv_drops(disk) > 0);
    CU_ASSERT(lh_ctx_kv_file_size(disk) >= (n_prompt + n_decode) * lh_ctx_kv_bytes_per_token(disk));
    CU_ASSERT_EQUAL(lh_ctx_kv_file_size(mem), 0);
    printf("\n    %s %s: %zu + %zu tokens bit-identical; KV file %zu bytes, resident pages dropped "
           "%zu times", attn == LH_ATTN_FULL ? "full" : "longheads", lh_type_name(kv), n_prompt,
           n_decode, lh_ctx_kv_file_size(disk), lh_ctx_kv_drops(disk));
    lh_ctx_free(disk);
    CU_ASSERT_EQUAL(n_fds_into(dir), 0); /* freed: nothing of it is left */
    CU_ASSERT_EQUAL(n_entries(dir, NULL), 0);
    lh_ctx_free(mem);
    free(a);
    free(b);
}

static void test_identical(void)
{
    size_t n = lh_test_asan() ? 1200 : 3000;
    identical_case(LH_ATTN_LONGHEADS, LH_TYPE_F32, n, 40);
    identical_case(LH_ATTN_LONGHEADS, LH_TYPE_F16, n, 40);
    identical_case(LH_ATTN_FULL, LH_TYPE_F32, 1200, 20);
}

static void test_cannot_grow(void)
{
    char dir[128], logp[160];
    mkdir_in(dir, sizeof dir, "kvfull");
    snprintf(logp, sizeof logp, "%s/grow.log", g_dir);
    /* stories260K: 40 segments of 32-byte rows, grown 2048 rows at a time (2.5 MiB) */
    lh_ctx *c = ctx_new(LH_ATTN_LONGHEADS, LH_TYPE_F32, 8192, dir, 0);
    CU_ASSERT_FATAL(c != NULL);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 3u << 20;
    void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
    int level = lh_log_get_level();
    lh_log_set_level(LH_LOG_ERROR);
    CU_ASSERT_EQUAL(lh_log_set_file(logp), 0);
    CU_ASSERT_EQUAL(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc1 = lh_ctx_eval(c, g_toks, 2000, NULL, 0);
    int rc2 = lh_ctx_eval(c, g_toks + 2000, 200, NULL, 0);
    setrlimit(RLIMIT_FSIZE, &old);
    lh_log_set_file(NULL);
    lh_log_set_level(level);
    signal(SIGXFSZ, old_sig);
    CU_ASSERT_EQUAL(rc1, 0);
    CU_ASSERT_EQUAL(rc2, -EFBIG);
    CU_ASSERT_EQUAL(lh_ctx_n_past(c), 2000);
    char *log = slurp(logp);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "EFBIG"));
    CU_ASSERT_PTR_NOT_NULL(strstr(log, dir));
    printf("\n    log: %s", log);
    free(log);
    /* the limit lifted: it grows and evaluates on */
    CU_ASSERT_EQUAL(lh_ctx_eval(c, g_toks + 2000, 200, NULL, 0), 0);
    CU_ASSERT_EQUAL(lh_ctx_n_past(c), 2200);
    lh_ctx_free(c);
}

/* The real thing where this process may mount (root with CAP_SYS_ADMIN): a full tmpfs of 8 MiB
 * gives ENOSPC; elsewhere a skip (test_cannot_grow covers the same path with EFBIG). */
static void test_disk_full(void)
{
    char dir[128], filler[160];
    mkdir_in(dir, sizeof dir, "tmpfs");
    if (mount("tmpfs", dir, "tmpfs", 0, "size=8m") != 0) {
        lh_test_skip("cannot mount a tmpfs here (%s): the EFBIG test covers this path",
                     strerror(errno));
        return;
    }
    lh_ctx *c = ctx_new(LH_ATTN_LONGHEADS, LH_TYPE_F32, 4096, dir, 0);
    CU_ASSERT_FATAL(c != NULL);
    CU_ASSERT_EQUAL(lh_ctx_eval(c, g_toks, 2000, NULL, 0), 0); /* block 0: 2.5 MiB */
    snprintf(filler, sizeof filler, "%s/filler", dir);
    FILE *f = fopen(filler, "wb");
    static char mib[1 << 20];
    for (int i = 0; f && i < 5; i++)
        fwrite(mib, 1, sizeof mib, f);
    if (f)
        fclose(f);
    int level = lh_log_get_level();
    lh_log_set_level(-1);
    int rc = lh_ctx_eval(c, g_toks + 2000, 200, NULL, 0);
    lh_log_set_level(level);
    CU_ASSERT_EQUAL(rc, -ENOSPC);
    CU_ASSERT_EQUAL(lh_ctx_n_past(c), 2000);
    unlink(filler);
    CU_ASSERT_EQUAL(lh_ctx_eval(c, g_toks + 2000, 200, NULL, 0), 0); /* room again */
    lh_ctx_free(c);
    CU_ASSERT_EQUAL(umount2(dir, MNT_DETACH), 0);
}

/* With kv_dir the context is sized by the disk and the in-memory part: a million tokens on a
 * budget that holds fewer than 132096 tokens in memory (664 bytes per token with the default F16
 * KV cache: 126,334). */
static void test_fit(void)
{
    char dir[128];
    mkdir_in(dir, sizeof dir, "fit");
    lh_ctx_params mem, disk;
    lh_params_default(&mem);
    lh_params_default(&disk);
    disk.kv_dir = dir;
    size_t budget = (size_t)80 << 20;
    CU_ASSERT_EQUAL(lh_params_fit_ctx(g_model, &mem, 1, budget, NULL, 0), 0);
    CU_ASSERT(mem.n_ctx < LH_PARAMS_CTX_AUTO);
    char report[640];
    CU_ASSERT_EQUAL(lh_params_fit_ctx(g_model, &disk, 1, budget, report, sizeof report), 0);
    CU_ASSERT_EQUAL(disk.n_ctx, LH_PARAMS_CTX_AUTO_DISK);
    CU_ASSERT(disk.kv_budget >= ((size_t)32 << 20) && disk.kv_budget < budget);
    CU_ASSERT(disk.n_ctx * lh_params_mem_bytes_per_token(g_model, &disk) + disk.kv_budget <= budget);
    printf("\n    in memory: %zu tokens; on disk: %s", mem.n_ctx, report);
    /* an explicit context whose in-memory part does not fit is refused */
    lh_params_default(&disk);
    disk.kv_dir = dir;
    disk.n_ctx = 1u << 22;
    int level = lh_log_get_level();
    lh_log_set_level(-1);
    CU_ASSERT_EQUAL(lh_params_fit_ctx(g_model, &disk, 1, (size_t)40 << 20, NULL, 0), LH_E_LIMIT);
    lh_log_set_level(level);

    /* the prompt cache's share of the disk (kv_disk_reserve) is not given to the KV cache: all
     * but 320 MiB kept leaves ~524288 tokens of 640 B (free space may move a little meanwhile) */
    struct statvfs vfs;
    CU_ASSERT_EQUAL_FATAL(statvfs(dir, &vfs), 0);
    size_t free_b = (size_t)vfs.f_bavail * vfs.f_frsize;
    if (free_b < ((size_t)1 << 30)) {
        lh_test_skip("the prompt cache's disk reserve needs 1 GiB free in %s (%zu MiB)", dir,
                     free_b >> 20);
        return;
    }
    lh_params_default(&disk);
    disk.kv_dir = dir;
    disk.kv_disk_reserve = free_b - ((size_t)320 << 20);
    CU_ASSERT_EQUAL(lh_params_fit_ctx(g_model, &disk, 1, (size_t)1 << 30, report, sizeof report), 0);
    CU_ASSERT(disk.n_ctx > 400000 && disk.n_ctx < 650000);
    CU_ASSERT_PTR_NOT_NULL(strstr(report, "kept for the prompt cache"));
    /* a reserve past the free space: a clear error that names the flag */
    char logp[160];
    snprintf(logp, sizeof logp, "%s/fit.log", g_dir);
    lh_params_default(&disk);
    disk.kv_dir = dir;
    disk.kv_disk_reserve = free_b * 2;
    lh_log_set_level(LH_LOG_ERROR);
    CU_ASSERT_EQUAL(lh_log_set_file(logp), 0);
    CU_ASSERT_EQUAL(lh_params_fit_ctx(g_model, &disk, 1, (size_t)1 << 30, NULL, 0), LH_E_LIMIT);
    lh_log_set_file(NULL);
    lh_log_set_level(level);
    char *log = slurp(logp);
    CU_ASSERT_PTR_NOT_NULL(log && strstr(log, "--prompt-cache-size"));
    free(log);
}

/* ---- the prompt cache ----------------------------------------------------------------------- */

/* Evaluates the same n tokens in a and b one at a time; 1 when every logit is identical. */
static int same_next(lh_ctx *a, lh_ctx *b, const int32_t *t, size_t n)
{
    size_t n_vocab = lh_model_hparams(g_model)->n_vocab;
    float *la = malloc(n_vocab * sizeof *la), *lb = malloc(n_vocab * sizeof *lb);
    int same = 1;
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_EQUAL(lh_ctx_eval(a, t + i, 1, la, 0), 0);
        CU_ASSERT_EQUAL(lh_ctx_eval(b, t + i, 1, lb, 0), 0);
        same &= memcmp(la, lb, n_vocab * sizeof *la) == 0;
    }
    free(la);
    free(lb);
    return same;
}

/* The one .lhpc file in dir (path into out), or 0. */
static int the_file(const char *dir, char *out, size_t cap)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;
    while (d && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len > 5 && strcmp(e->d_name + len - 5, ".lhpc") == 0) {
            snprintf(out, cap, "%s/%s", dir, e->d_name);
            found++;
        }
    }
    if (d)
        closedir(d);
    return found == 1;
}

static void flip_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    unsigned char b = 0;
    CU_ASSERT(pread(fd, &b, 1, off) == 1);
    b ^= 0x5a;
    CU_ASSERT(pwrite(fd, &b, 1, off) == 1);
    close(fd);
}

static void test_pcache_engine(void)
{
    char dir[128], path[512], logp[160];
    mkdir_in(dir, sizeof dir, "pc");
    snprintf(logp, sizeof logp, "%s/pc.log", g_dir);
    const size_t N = 1500; /* not a multiple of the chunk (64): the pending queries travel too */
    lh_pcache *pc = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_pcache_open(&pc, dir, g_model, (size_t)1 << 30), 0);
    lh_ctx *a = ctx_new(LH_ATTN_LONGHEADS, LH_TYPE_F32, 4096, NULL, 0);
    lh_ctx *b = ctx_new(LH_ATTN_LONGHEADS, LH_TYPE_F32, 4096, NULL, 0);
    lh_ctx *full = ctx_new(LH_ATTN_FULL, LH_TYPE_F32, 4096, NULL, 0);
    CU_ASSERT_FATAL(a && b && full);
    CU_ASSERT_EQUAL(lh_ctx_eval(a, g_toks, N, NULL, 0), 0);
    CU_ASSERT_EQUAL(lh_pcache_save(pc, a, N), 0);
    CU_ASSERT_FATAL(the_file(dir, path, sizeof path));
    /* a fresh context starts from it and continues exactly as the one that computed it */
    CU_ASSERT_EQUAL(lh_pcache_load(pc, b, g_toks, N, 0), N);
    CU_ASSERT_EQUAL(lh_ctx_n_past(b), N);
    CU_ASSERT_EQUAL(memcmp(lh_ctx_tokens(b), g_toks, N * sizeof *g_toks), 0);
    CU_ASSERT(same_next(a, b, g_toks + N, 80));
    /* the longest saved prefix of a longer prompt; nothing for another prompt, another
     * attention or a prefix no longer than the caller already holds */
    CU_ASSERT_EQUAL(lh_pcache_load(pc, b, g_toks, N + 300, 0), N);
    CU_ASSERT_EQUAL(lh_pcache_load(pc, b, g_toks, N, N), 0);
    int32_t *other = malloc(N * sizeof *other);
    memcpy(other, g_toks, N * sizeof *other);
    other[700] = other[700] == 5 ? 6 : 5;
    CU_ASSERT_EQUAL(lh_pcache_load(pc, b, other, N, 0), 0);
    free(other);
    CU_ASSERT_EQUAL(lh_pcache_load(pc, full, g_toks, N, 0), 0);
    CU_ASSERT_EQUAL(lh_ctx_n_past(full), 0);

    /* a has decoded 80 tokens past N: the queries of N's partial chunk are gone from its ring,
     * so a save of N now rounds down to the chunk's start */
    const size_t NS = N - N % 64;
    CU_ASSERT_EQUAL(lh_ctx_savable(a, N), NS);

    int level = lh_log_get_level();
    lh_log_set_level(LH_LOG_WARN);
    CU_ASSERT_EQUAL(lh_log_set_file(logp), 0);
    /* corrupted payload: detected after loading, the context emptied, the file removed */
    struct stat st;
    stat(path, &st);
    flip_byte(path, st.st_size / 2);
    CU_ASSERT_EQUAL(lh_pcache_load(pc, b, g_toks, N, 0), 0);
    CU_ASSERT_EQUAL(lh_ctx_n_past(b), 0);
    CU_ASSERT_EQUAL(n_entries(dir, ".lhpc"), 0);
    /* truncated */
    CU_ASSERT_EQUAL(lh_pcache_save(pc, a, N), 0);
    CU_ASSERT_FATAL(the_file(dir, path, sizeof path));
    stat(path, &st);
    CU_ASSERT_EQUAL(truncate(path, st.st_size - 100), 0);
    CU_ASSERT_EQUAL(lh_pcache_load(pc, b, g_toks, N, 0), 0);
    CU_ASSERT_EQUAL(lh_ctx_n_past(b), 0);
    /* a corrupted header */
    CU_ASSERT_EQUAL(lh_pcache_save(pc, a, N), 0);
    CU_ASSERT_FATAL(the_file(dir, path, sizeof path));
    flip_byte(path, 40);
    CU_ASSERT_EQUAL(lh_pcache_load(pc, b, g_toks, N, 0), 0);
    /* a foreign file under a valid name: skipped, left alone */
    CU_ASSERT_EQUAL(lh_pcache_save(pc, a, N), 0);
    CU_ASSERT_FATAL(the_file(dir, path, sizeof path));
    FILE *f = fopen(path, "wb");
    for (int i = 0; i < 4096; i++)
        fputc("not a cache file "[i % 17], f);
    fclose(f);
    CU_ASSERT_EQUAL(lh_pcache_load(pc, b, g_toks, N, 0), 0);
    CU_ASSERT_EQUAL(n_entries(dir, ".lhpc"), 1);
    unlink(path);
    lh_log_set_file(NULL);
    lh_log_set_level(level);
    char *log = slurp(logp);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "payload checksum mismatch"));
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "truncated"));
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "header checksum mismatch"));
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "bad magic"));
    printf("\n    logged:\n%s", log);
    free(log);
    lh_pcache_close(pc);

    /* eviction: a bound that holds one state keeps the newest */
    size_t one = lh_ctx_state_size(a, N) + 128;
    CU_ASSERT_EQUAL_FATAL(lh_pcache_open(&pc, dir, g_model, one + one / 2), 0);
    CU_ASSERT_EQUAL(lh_pcache_save(pc, a, 1024), 0);
    CU_ASSERT_EQUAL(n_entries(dir, ".lhpc"), 1);
    CU_ASSERT_EQUAL(lh_pcache_save(pc, a, N), 0);
    CU_ASSERT_EQUAL(n_entries(dir, ".lhpc"), 1);
    CU_ASSERT(lh_pcache_disk_size(pc) <= one + one / 2);
    CU_ASSERT_EQUAL(lh_pcache_load(pc, b, g_toks, N, 0), NS);
    /* from a chunk boundary, too, it goes on exactly as a context that computed the prefix */
    lh_ctx *fresh = ctx_new(LH_ATTN_LONGHEADS, LH_TYPE_F32, 4096, NULL, 0);
    CU_ASSERT_FATAL(fresh != NULL);
    CU_ASSERT_EQUAL(lh_ctx_eval(fresh, g_toks, NS, NULL, 0), 0);
    CU_ASSERT(same_next(fresh, b, g_toks + NS, 80));
    lh_ctx_free(fresh);
    lh_pcache_close(pc);
    lh_ctx_free(a);
    lh_ctx_free(b);
    lh_ctx_free(full);
}

/* ---- through the daemon --------------------------------------------------------------------- */

typedef struct {
    char text[16384];
    size_t len;
} sink;

static int collect(const lh_client_event *ev, void *ud)
{
    sink *s = ud;
    if (ev->kind == LH_CLIENT_EV_TOKEN && s->len + ev->text_len < sizeof s->text) {
        memcpy(s->text + s->len, ev->text, ev->text_len);
        s->len += ev->text_len;
        s->text[s->len] = 0;
    }
    return 0;
}

static int gen(const char *sock, const char *prompt, sink *s, lh_client_result *r)
{
    lh_client *c = NULL;
    int rc = lh_client_connect(&c, sock, 10000);
    if (rc)
        return rc;
    lh_client_gen_opts o;
    lh_client_gen_opts_default(&o);
    o.prompt = prompt;
    o.prompt_len = (size_t)-1;
    o.max_tokens = 24;
    o.temperature = 0;
    memset(s, 0, sizeof *s);
    rc = lh_client_generate(c, &o, collect, s, r);
    lh_client_close(c);
    return rc;
}

/* A prompt of about n_words words of story text. */
static char *story(size_t n_words)
{
    static const char *w[] = {"Once", "upon", "a", "time", "there", "was", "a", "little", "girl",
                              "named", "Lily.", "She", "liked", "to", "play", "with", "her",
                              "red", "ball", "in", "the", "park", "every", "day."};
    char *s = malloc(n_words * 8 + 1);
    size_t off = 0;
    for (size_t i = 0; i < n_words; i++)
        off += (size_t)sprintf(s + off, "%s%s", i ? " " : "", w[(i * 5 + i / 24) % 24]);
    return s;
}

/* The bound score's per-chunk key bounds travel too: a context restored from a save selects
 * exactly as the one that computed the prefix, by flat scoring and by branch and bound over the
 * rebuilt search trees (the check mode runs both and counts every selection where they differ); a rep
 * save is not loaded into a bound context. */
static void test_pcache_bound(void)
{
    char dir[128];
    mkdir_in(dir, sizeof dir, "pcb");
    const size_t N = 2200;   /* 34 chunks of 64: a search tree over 32 (one every 32 chunks) */
    lh_pcache *pc = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_pcache_open(&pc, dir, g_model, (size_t)1 << 30), 0);
    lh_ctx_params p;
    lh_ctx_params_default(&p);
    p.attn = LH_ATTN_LONGHEADS;
    p.kv_type = LH_TYPE_F32;
    p.n_ctx = 4096;
    p.score = LH_SCORE_BOUND;
    p.select = LH_SELECT_TREE;   /* so that the check mode searches the rebuilt trees */
    lh_ctx *a = NULL, *b = NULL;
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&a, g_model, &p), 0);
    CU_ASSERT_EQUAL_FATAL(lh_ctx_new(&b, g_model, &p), 0);
    lh_ctx *rep = ctx_new(LH_ATTN_LONGHEADS, LH_TYPE_F32, 4096, NULL, 0);
    CU_ASSERT_FATAL(rep != NULL);
    CU_ASSERT_EQUAL(lh_ctx_eval(rep, g_toks, N, NULL, 0), 0);
    CU_ASSERT_EQUAL(lh_pcache_save(pc, rep, N), 0);
    CU_ASSERT_EQUAL(lh_pcache_load(pc, b, g_toks, N, 0), 0);
    CU_ASSERT_EQUAL(lh_ctx_eval(a, g_toks, N, NULL, 0), 0);
    CU_ASSERT_EQUAL(lh_pcache_save(pc, a, N), 0);
    CU_ASSERT_EQUAL(lh_pcache_load(pc, b, g_toks, N, 0), N);
    lh_lh *lb = lh_ctx_longheads(b);
    CU_ASSERT_FATAL(lb != NULL);
    lh_lh_set_check(lb, 1);
    lh_lh_stats_reset(lb);
    CU_ASSERT(same_next(a, b, g_toks + N, 80));
    lh_lh_stats st;
    lh_lh_stats_get(lb, &st);
    CU_ASSERT(st.n_select > 0);
    CU_ASSERT(st.n_node > 0);   /* the rebuilt trees were searched */
    CU_ASSERT_EQUAL(st.n_mismatch, 0);
    printf("\n    restored bound state: %zu selections, %zu differ from flat scoring ", st.n_select,
           st.n_mismatch);
    lh_ctx_free(a);
    lh_ctx_free(b);
    lh_ctx_free(rep);
    lh_pcache_close(pc);
}

static void test_daemon_restart(void)
{
    char dir[128], sock[160], logp[160], path[512];
    mkdir_in(dir, sizeof dir, "dcache");
    snprintf(sock, sizeof sock, "%s/d.sock", g_dir);
    snprintf(logp, sizeof logp, "%s/d.log", g_dir);
    const char *args[] = {"--model", lh_test_model_path(), "--socket", sock, "--ctx", "4096",
                          "--kv-dir", dir, "--prompt-cache-min", "256", "--max-memory", "256M",
                          NULL};
    char *prompt = story(1200);
    sink s1, s2;
    lh_client_result r1, r2;
    pid_t pid = lh_test_daemon_start(args, sock, logp, -1, NULL);
    CU_ASSERT_FATAL(pid > 0);
    CU_ASSERT_EQUAL(gen(sock, prompt, &s1, &r1), 0);
    CU_ASSERT_EQUAL(r1.finish, LH_CLIENT_FINISH_LENGTH);
    CU_ASSERT_EQUAL(r1.n_reused, 0);
    /* the status says the slot's KV cache is on disk (640 B per token: 2 x 5 layers x 32 x F16) */
    lh_client *c = NULL;
    lh_client_slot sl;
    CU_ASSERT_EQUAL_FATAL(lh_client_connect(&c, sock, 10000), 0);
    CU_ASSERT_EQUAL_FATAL(lh_test_idle_slot0(c, &sl), 0);
    CU_ASSERT(sl.n_cached > 0);
    CU_ASSERT_EQUAL(sl.kv_disk_bytes, (uint64_t)sl.n_cached * 2 * 5 * 32 * 2);
    CU_ASSERT(sl.kv_bytes > sl.kv_disk_bytes);
    lh_client_close(c);
    CU_ASSERT_EQUAL(lh_test_daemon_stop(pid), 0);
    CU_ASSERT_EQUAL(n_entries(dir, ".lhpc"), 1);
    CU_ASSERT_EQUAL(n_entries(dir, NULL), 1); /* the KV files left no trace */

    /* restarted: the same prompt starts from the saved state, and says the same */
    pid = lh_test_daemon_start(args, sock, logp, -1, NULL);
    CU_ASSERT_FATAL(pid > 0);
    CU_ASSERT_EQUAL(gen(sock, prompt, &s2, &r2), 0);
    CU_ASSERT_EQUAL(r2.n_prompt, r1.n_prompt);
    CU_ASSERT(r2.n_reused + 64 >= r2.n_prompt && r2.n_reused < r2.n_prompt);
    CU_ASSERT_STRING_EQUAL(s2.text, s1.text);
    printf("\n    restart: prompt %u tokens, %u reused from the prompt cache; prefill %.1f ms, "
           "first run %.1f ms", r2.n_prompt, r2.n_reused, r2.prefill_ms, r1.prefill_ms);
    CU_ASSERT_EQUAL(lh_test_daemon_stop(pid), 0);

    /* corrupted while the daemon was down: ignored with a log line, the same text */
    CU_ASSERT_FATAL(the_file(dir, path, sizeof path));
    struct stat st;
    stat(path, &st);
    flip_byte(path, st.st_size - 1000);
    pid = lh_test_daemon_start(args, sock, logp, -1, NULL);
    CU_ASSERT_FATAL(pid > 0);
    CU_ASSERT_EQUAL(gen(sock, prompt, &s2, &r2), 0);
    CU_ASSERT_EQUAL(r2.n_reused, 0);
    CU_ASSERT_STRING_EQUAL(s2.text, s1.text);
    CU_ASSERT_EQUAL(lh_test_daemon_stop(pid), 0);
    char *log = slurp(logp);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "payload checksum mismatch"));
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "from the prompt cache"));
    free(log);
    free(prompt);
}

static void test_daemon_cannot_grow(void)
{
    char dir[128], sock[160], logp[160];
    mkdir_in(dir, sizeof dir, "dfull");
    snprintf(sock, sizeof sock, "%s/f.sock", g_dir);
    snprintf(logp, sizeof logp, "%s/f.log", g_dir);
    const char *args[] = {"--model", lh_test_model_path(), "--socket", sock, "--ctx", "8192",
                          "--kv-dir", dir, "--prompt-cache-size", "0", "--max-memory", "256M",
                          NULL};
    /* the daemon inherits a file size limit of 3 MiB: its KV file can hold one block (2048
     * tokens); this process keeps its own limit */
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 3u << 20;
    CU_ASSERT_EQUAL(setrlimit(RLIMIT_FSIZE, &lim), 0);
    pid_t pid = lh_test_daemon_start(args, sock, logp, -1, NULL);
    setrlimit(RLIMIT_FSIZE, &old);
    CU_ASSERT_FATAL(pid > 0);
    char *prompt = story(3000);
    sink s;
    lh_client_result r;
    CU_ASSERT_EQUAL(gen(sock, prompt, &s, &r), 0);
    CU_ASSERT_EQUAL(r.finish, LH_CLIENT_FINISH_ERROR);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error, "EFBIG"));
    printf("\n    the request's error: %s", r.error);
    /* it serves on */
    CU_ASSERT_EQUAL(gen(sock, "Once upon a time", &s, &r), 0);
    CU_ASSERT_EQUAL(r.finish, LH_CLIENT_FINISH_LENGTH);
    CU_ASSERT(s.len > 0);
    CU_ASSERT_EQUAL(lh_test_daemon_stop(pid), 0);
    char *log = slurp(logp);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "EFBIG"));
    free(log);
    free(prompt);
}

void lh_test_kvfile(void)
{
    CU_pSuite s = CU_add_suite("kvfile", suite_init, suite_clean);
    CU_add_test(s, "KV cache on disk: bit-identical logits under a tiny budget; no file left",
                test_identical);
    CU_add_test(s, "a KV file that cannot grow: EFBIG for that eval, named in the log",
                test_cannot_grow);
    CU_add_test(s, "a full disk (a tmpfs of 8 MiB, where mounting is allowed): ENOSPC",
                test_disk_full);
    CU_add_test(s, "with --kv-dir the context is sized by the disk: a million tokens",
                test_fit);
    CU_add_test(s, "prompt cache: round trip, longest prefix, bad files ignored, eviction",
                test_pcache_engine);
    CU_add_test(s, "prompt cache with the bound score: bounds restored, tree rebuilt exactly",
                test_pcache_bound);
    CU_add_test(s, "daemon: prompt cache across a restart; a corrupted file after one",
                test_daemon_restart);
    CU_add_test(s, "daemon: a KV file that cannot grow fails the request, serves on",
                test_daemon_cannot_grow);
}
