/* proto/frame — see frame.h. */
#include "frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"

void lh_frame_reader_init(lh_frame_reader *r, size_t max_size)
{
    memset(r, 0, sizeof *r);
    if (max_size > LH_FRAME_MAX_LIMIT)
        max_size = LH_FRAME_MAX_LIMIT;
    r->max_size = max_size;
}

void lh_frame_reader_deinit(lh_frame_reader *r)
{
    if (!r)
        return;
    free(r->buf);
    r->buf = NULL;
    r->cap = 0;
    r->n_hdr = r->size = r->n_have = 0;
    r->have_frame = 0;
}

static void reset_frame(lh_frame_reader *r)
{
    r->n_hdr = 0;
    r->size = 0;
    r->n_have = 0;
    r->have_frame = 0;
}

int lh_frame_feed(lh_frame_reader *r, const uint8_t *data, size_t len, size_t *usedp,
                  const uint8_t **framep, size_t *sizep)
{
    size_t used = 0;
    *framep = NULL;
    *sizep = 0;
    if (r->have_frame)
        reset_frame(r);
    while (r->n_hdr < LH_FRAME_HEADER_SIZE && used < len)
        r->hdr[r->n_hdr++] = data[used++];
    if (r->n_hdr < LH_FRAME_HEADER_SIZE)
        goto out;
    if (r->n_have == 0 && r->size == 0) {
        size_t size = lh_frame_announced(r);
        if (size > r->max_size) {
            *usedp = used;
            return LH_E_LIMIT;
        }
        if (size > r->cap) {
            /* Grow to what this frame needs (bounded by max_size above); keep small buffers. */
            uint8_t *nb = realloc(r->buf, size);
            if (!nb) {
                *usedp = used;
                return -ENOMEM;
            }
            r->buf = nb;
            r->cap = size;
        }
        r->size = size;
    }
    size_t want = r->size - r->n_have;
    size_t take = len - used < want ? len - used : want;
    if (take) {
        memcpy(r->buf + r->n_have, data + used, take);
        r->n_have += take;
        used += take;
    }
    if (r->n_have == r->size) {
        static const uint8_t empty[1];
        *framep = r->size ? r->buf : empty;
        *sizep = r->size;
        r->have_frame = 1;
    }
out:
    *usedp = used;
    return 0;
}

size_t lh_frame_pending(const lh_frame_reader *r)
{
    if (r->have_frame)
        return 0;
    return r->n_hdr + r->n_have;
}

size_t lh_frame_announced(const lh_frame_reader *r)
{
    return (size_t)r->hdr[0] | (size_t)r->hdr[1] << 8 | (size_t)r->hdr[2] << 16 |
           (size_t)r->hdr[3] << 24;
}

void lh_frame_header(uint8_t hdr[LH_FRAME_HEADER_SIZE], size_t size)
{
    hdr[0] = (uint8_t)(size & 0xff);
    hdr[1] = (uint8_t)(size >> 8 & 0xff);
    hdr[2] = (uint8_t)(size >> 16 & 0xff);
    hdr[3] = (uint8_t)(size >> 24 & 0xff);
}

int lh_frame_write(int fd, const void *payload, size_t size)
{
    if (size > LH_FRAME_MAX_LIMIT)
        return -EMSGSIZE;
    uint8_t hdr[LH_FRAME_HEADER_SIZE];
    lh_frame_header(hdr, size);
    struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)payload, size}};
    int n_iov = size ? 2 : 1;
    struct iovec *v = iov;
    while (n_iov > 0) {
        struct msghdr msg = {.msg_iov = v, .msg_iovlen = (size_t)n_iov};
        ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK)
            n = writev(fd, v, n_iov);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        size_t left = (size_t)n;
        while (n_iov > 0 && left >= v->iov_len) {
            left -= v->iov_len;
            v++;
            n_iov--;
        }
        if (n_iov > 0) {
            v->iov_base = (uint8_t *)v->iov_base + left;
            v->iov_len -= left;
        }
    }
    return 0;
}
