/* tests/test_frame — the framing layer: frames split at every byte, exactly the limit and one
 * byte over it (refused before allocation), truncated input, zero-length frames, the writer. */
#include "test.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "log.h"

/* Builds header + payload of `size` bytes with a recognisable pattern. */
static uint8_t *make_frame(size_t size, uint8_t seed, size_t *lenp)
{
    uint8_t *b = malloc(size + LH_FRAME_HEADER_SIZE);
    lh_frame_header(b, size);
    for (size_t i = 0; i < size; i++)
        b[LH_FRAME_HEADER_SIZE + i] = (uint8_t)(seed + i * 7);
    *lenp = size + LH_FRAME_HEADER_SIZE;
    return b;
}

static int check_payload(const uint8_t *p, size_t size, uint8_t seed)
{
    for (size_t i = 0; i < size; i++)
        if (p[i] != (uint8_t)(seed + i * 7))
            return 0;
    return 1;
}

static void test_header_le(void)
{
    uint8_t h[4];
    lh_frame_header(h, 0x01020304u);
    CU_ASSERT(h[0] == 4 && h[1] == 3 && h[2] == 2 && h[3] == 1);
}

static void test_one_byte_at_a_time(void)
{
    /* three frames back to back (sizes 5, 0, 300), fed one byte per call */
    size_t sizes[3] = {5, 0, 300}, total = 0, lens[3];
    uint8_t *parts[3];
    for (int i = 0; i < 3; i++) {
        parts[i] = make_frame(sizes[i], (uint8_t)(i * 40 + 1), &lens[i]);
        total += lens[i];
    }
    uint8_t *stream = malloc(total);
    for (size_t i = 0, off = 0; i < 3; off += lens[i], i++)
        memcpy(stream + off, parts[i], lens[i]);
    lh_frame_reader r;
    lh_frame_reader_init(&r, 1000);
    int got = 0;
    for (size_t off = 0; off < total; off++) {
        size_t used;
        const uint8_t *f;
        size_t fsize;
        CU_ASSERT_EQUAL_FATAL(lh_frame_feed(&r, stream + off, 1, &used, &f, &fsize), 0);
        CU_ASSERT_EQUAL(used, 1);
        if (f) {
            CU_ASSERT_FATAL(got < 3);
            CU_ASSERT_EQUAL(fsize, sizes[got]);
            CU_ASSERT(check_payload(f, fsize, (uint8_t)(got * 40 + 1)));
            /* the frame completes exactly on its last byte */
            size_t end = 0;
            for (int i = 0; i <= got; i++)
                end += lens[i];
            CU_ASSERT_EQUAL(off + 1, end);
            got++;
        }
    }
    CU_ASSERT_EQUAL(got, 3);
    CU_ASSERT_EQUAL(lh_frame_pending(&r), 0);
    /* the same stream in one piece: three calls, one frame each */
    lh_frame_reader_deinit(&r);
    lh_frame_reader_init(&r, 1000);
    size_t off = 0;
    got = 0;
    while (off < total) {
        size_t used, fsize;
        const uint8_t *f;
        CU_ASSERT_EQUAL_FATAL(lh_frame_feed(&r, stream + off, total - off, &used, &f, &fsize), 0);
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        CU_ASSERT_EQUAL(fsize, sizes[got]);
        CU_ASSERT(check_payload(f, fsize, (uint8_t)(got * 40 + 1)));
        got++;
        off += used;
    }
    CU_ASSERT_EQUAL(got, 3);
    lh_frame_reader_deinit(&r);
    lh_frame_reader_deinit(&r); /* idempotent */
    for (int i = 0; i < 3; i++)
        free(parts[i]);
    free(stream);
}

static void test_limit(void)
{
    const size_t max = 4096;
    lh_frame_reader r;
    lh_frame_reader_init(&r, max);
    size_t len, used, fsize;
    const uint8_t *f;
    /* exactly the limit: accepted */
    uint8_t *b = make_frame(max, 9, &len);
    CU_ASSERT_EQUAL(lh_frame_feed(&r, b, len, &used, &f, &fsize), 0);
    CU_ASSERT_EQUAL(used, len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fsize, max);
    CU_ASSERT(check_payload(f, fsize, 9));
    free(b);
    /* one byte over: refused as soon as the 4th header byte arrives, nothing allocated for it */
    lh_frame_reader_deinit(&r);
    lh_frame_reader_init(&r, max);
    uint8_t hdr[4];
    lh_frame_header(hdr, max + 1);
    int rc = 0;
    for (int i = 0; i < 4 && rc == 0; i++) {
        rc = lh_frame_feed(&r, hdr + i, 1, &used, &f, &fsize);
        if (i < 3)
            CU_ASSERT_EQUAL(rc, 0);
    }
    CU_ASSERT_EQUAL(rc, LH_E_LIMIT);
    CU_ASSERT_EQUAL(lh_frame_announced(&r), max + 1);
    CU_ASSERT_EQUAL(r.cap, 0);
    CU_ASSERT_PTR_NULL(r.buf);
    lh_frame_reader_deinit(&r);
    /* a 4 GiB announcement: refused, never allocated */
    lh_frame_reader_init(&r, LH_FRAME_MAX_DEFAULT);
    uint8_t big[4] = {0xff, 0xff, 0xff, 0xff};
    CU_ASSERT_EQUAL(lh_frame_feed(&r, big, 4, &used, &f, &fsize), LH_E_LIMIT);
    CU_ASSERT_PTR_NULL(r.buf);
    lh_frame_reader_deinit(&r);
}

static void test_truncated(void)
{
    lh_frame_reader r;
    lh_frame_reader_init(&r, 1 << 16);
    size_t len, used, fsize;
    const uint8_t *f;
    uint8_t *b = make_frame(100, 3, &len);
    /* header only partly */
    CU_ASSERT_EQUAL(lh_frame_feed(&r, b, 2, &used, &f, &fsize), 0);
    CU_ASSERT_PTR_NULL(f);
    CU_ASSERT_EQUAL(lh_frame_pending(&r), 2);
    /* header and part of the payload */
    CU_ASSERT_EQUAL(lh_frame_feed(&r, b + 2, 50, &used, &f, &fsize), 0);
    CU_ASSERT_PTR_NULL(f);
    CU_ASSERT_EQUAL(lh_frame_pending(&r), 52);
    /* the rest completes it; then nothing is pending */
    CU_ASSERT_EQUAL(lh_frame_feed(&r, b + 52, len - 52, &used, &f, &fsize), 0);
    CU_ASSERT_PTR_NOT_NULL(f);
    CU_ASSERT_EQUAL(lh_frame_pending(&r), 0);
    lh_frame_reader_deinit(&r);
    free(b);
}

static void test_zero_length(void)
{
    lh_frame_reader r;
    lh_frame_reader_init(&r, 16);
    uint8_t z[8] = {0};
    size_t used, fsize = 99;
    const uint8_t *f;
    CU_ASSERT_EQUAL(lh_frame_feed(&r, z, sizeof z, &used, &f, &fsize), 0);
    CU_ASSERT_EQUAL(used, 4);
    CU_ASSERT_PTR_NOT_NULL(f);
    CU_ASSERT_EQUAL(fsize, 0);
    CU_ASSERT_EQUAL(lh_frame_feed(&r, z + 4, 4, &used, &f, &fsize), 0);
    CU_ASSERT_PTR_NOT_NULL(f);
    CU_ASSERT_EQUAL(fsize, 0);
    /* an empty feed yields nothing */
    CU_ASSERT_EQUAL(lh_frame_feed(&r, z, 0, &used, &f, &fsize), 0);
    CU_ASSERT_EQUAL(used, 0);
    CU_ASSERT_PTR_NULL(f);
    lh_frame_reader_deinit(&r);
}

static void test_write_socketpair(void)
{
    int sv[2];
    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    const char msg[] = "hello, frame";
    CU_ASSERT_EQUAL(lh_frame_write(sv[0], msg, sizeof msg - 1), 0);
    CU_ASSERT_EQUAL(lh_frame_write(sv[0], NULL, 0), 0);
    uint8_t buf[64];
    ssize_t n = read(sv[1], buf, sizeof buf);
    CU_ASSERT_EQUAL(n, (ssize_t)(4 + sizeof msg - 1 + 4));
    lh_frame_reader r;
    lh_frame_reader_init(&r, 64);
    size_t used, fsize;
    const uint8_t *f;
    CU_ASSERT_EQUAL(lh_frame_feed(&r, buf, (size_t)n, &used, &f, &fsize), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fsize, sizeof msg - 1);
    CU_ASSERT(memcmp(f, msg, fsize) == 0);
    CU_ASSERT_EQUAL(lh_frame_feed(&r, buf + used, (size_t)n - used, &used, &f, &fsize), 0);
    CU_ASSERT_PTR_NOT_NULL(f);
    CU_ASSERT_EQUAL(fsize, 0);
    lh_frame_reader_deinit(&r);
    /* writing to a closed peer reports EPIPE instead of killing us with SIGPIPE */
    close(sv[1]);
    CU_ASSERT_EQUAL(lh_frame_write(sv[0], msg, sizeof msg), -EPIPE);
    close(sv[0]);
}

void lh_test_frame(void)
{
    CU_pSuite s = CU_add_suite("frame", NULL, NULL);
    CU_add_test(s, "header is little-endian", test_header_le);
    CU_add_test(s, "frames fed one byte at a time", test_one_byte_at_a_time);
    CU_add_test(s, "exactly the limit, one byte over, 4 GiB", test_limit);
    CU_add_test(s, "truncated frame is pending", test_truncated);
    CU_add_test(s, "zero-length frames", test_zero_length);
    CU_add_test(s, "writer over a socketpair", test_write_socketpair);
}
