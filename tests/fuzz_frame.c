/* tests/fuzz_frame — libFuzzer harness for what the daemon does with bytes from a socket
 * (`make fuzz`): the frame reader fed in pieces of varying size, then protobuf-c's unpack of a
 * Request and of every request body type.
 *
 * Input layout: byte 0 picks the feeding pattern (piece sizes), byte 1 the reader's max_size
 * (small limits exercise LH_E_LIMIT), the rest is the stream.  Every complete frame is unpacked
 * as a Request (its fields read as server.c reads them), and the raw stream is also unpacked as
 * each body type directly.  Allocation is bounded: every unpack goes through an allocator that
 * aborts when a message makes protobuf-c allocate more than 64 KiB + 32 bytes per input byte
 * (a small message must not make the daemon allocate a large amount).  Crashes, sanitizer
 * reports and that abort are findings.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "log.h"
#include "longheads.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    size_t used, limit;
} budget;

static void *b_alloc(void *ud, size_t n)
{
    budget *b = ud;
    b->used += n;
    if (b->used > b->limit) {
        fprintf(stderr, "fuzz_frame: unpack allocated %zu bytes (limit %zu)\n", b->used, b->limit);
        abort();
    }
    return malloc(n);
}

static void b_free(void *ud, void *p)
{
    (void)ud;
    free(p);
}

static volatile size_t g_sink;

static void touch_str(const char *s)
{
    if (s)
        g_sink += strlen(s);
}

/* Reads the fields the daemon reads, so that a bad pointer or length shows. */
static void use_request(const Longheads__Request *r)
{
    g_sink += r->id;
    switch (r->body_case) {
    case LONGHEADS__REQUEST__BODY_HELLO:
        g_sink += r->hello->protocol_version;
        touch_str(r->hello->client_name);
        break;
    case LONGHEADS__REQUEST__BODY_GENERATE: {
        const Longheads__GenerateRequest *g = r->generate;
        touch_str(g->prompt);
        for (size_t i = 0; i < g->n_prompt_tokens; i++)
            g_sink += (size_t)g->prompt_tokens[i];
        for (size_t i = 0; i < g->n_stop; i++)
            touch_str(g->stop[i]);
        g_sink += g->max_tokens + (size_t)g->attn + g->chunk + g->window + g->timeout_ms;
        break;
    }
    case LONGHEADS__REQUEST__BODY_CANCEL: g_sink += r->cancel->target_id; break;
    case LONGHEADS__REQUEST__BODY_TOKENIZE: touch_str(r->tokenize->text); break;
    case LONGHEADS__REQUEST__BODY_DETOKENIZE:
        for (size_t i = 0; i < r->detokenize->n_tokens; i++)
            g_sink += (size_t)r->detokenize->tokens[i];
        break;
    case LONGHEADS__REQUEST__BODY_SCORE: touch_str(r->score->text); break;
    default: break;
    }
}

#define UNPACK_ALL(X)                                                                            \
    X(longheads__hello, Longheads__Hello)                                                        \
    X(longheads__generate_request, Longheads__GenerateRequest)                                   \
    X(longheads__cancel_request, Longheads__CancelRequest)                                       \
    X(longheads__info_request, Longheads__InfoRequest)                                           \
    X(longheads__health_request, Longheads__HealthRequest)                                       \
    X(longheads__tokenize_request, Longheads__TokenizeRequest)                                   \
    X(longheads__detokenize_request, Longheads__DetokenizeRequest)                               \
    X(longheads__score_request, Longheads__ScoreRequest)

static void unpack_bodies(const uint8_t *p, size_t n)
{
    budget b = {0, (64u << 10) + 32 * n};
    ProtobufCAllocator a = {b_alloc, b_free, &b};
#define TRY(prefix, T)                                                                           \
    {                                                                                            \
        b.used = 0;                                                                              \
        T *m = prefix##__unpack(&a, n, p);                                                       \
        if (m)                                                                                   \
            prefix##__free_unpacked(m, &a);                                                      \
    }
    UNPACK_ALL(TRY)
#undef TRY
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned pattern = data[0];
    /* the reader allocates a frame's buffer when its header arrives: a 64 KiB ceiling keeps
     * executions fast (the limit logic is the same at 16 MiB) */
    size_t max_size = data[1] < 16 ? (size_t)data[1] * 7 : 65536;
    const uint8_t *s = data + 2;
    size_t n = size - 2;
    lh_frame_reader rd;
    lh_frame_reader_init(&rd, max_size);
    size_t off = 0, step = 0;
    while (off < n) {
        /* piece sizes: 1, 2, 3, ... cycling by the pattern byte, or everything at once */
        size_t piece = pattern == 0 ? n - off : 1 + (step++ * (pattern | 1)) % 97;
        if (piece > n - off)
            piece = n - off;
        size_t fed = 0;
        while (fed < piece) {
            size_t used, fsize;
            const uint8_t *f;
            int rc = lh_frame_feed(&rd, s + off + fed, piece - fed, &used, &f, &fsize);
            if (rc != 0) {
                if (rc == LH_E_LIMIT && lh_frame_announced(&rd) <= max_size)
                    abort(); /* LH_E_LIMIT only for frames over the limit */
                goto done;
            }
            if (used == 0 && !f)
                abort(); /* no progress */
            fed += used;
            if (f) {
                if (fsize > max_size)
                    abort();
                budget b = {0, (64u << 10) + 32 * fsize};
                ProtobufCAllocator a = {b_alloc, b_free, &b};
                Longheads__Request *r = longheads__request__unpack(&a, fsize, f);
                if (r) {
                    use_request(r);
                    longheads__request__free_unpacked(r, &a);
                }
            }
        }
        off += piece;
    }
done:
    lh_frame_reader_deinit(&rd);
    unpack_bodies(s, n);
    return 0;
}
