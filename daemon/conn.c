/* daemon/conn — see conn.h. */
#include "conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

int lh_conn_new(lh_conn **cp, uint64_t id, int fd, const lh_anet_peer *peer, size_t max_frame,
                double now)
{
    lh_conn *c = calloc(1, sizeof *c);
    *cp = c;
    if (!c)
        return -ENOMEM;
    c->id = id;
    c->fd = fd;
    c->uid = peer->uid;
    c->gid = peer->gid;
    c->pid = peer->pid;
    c->max_frame = max_frame;
    c->t_open = now;
    lh_frame_reader_init(&c->rd, max_frame);
    return 0;
}

void lh_conn_free(lh_conn *c)
{
    if (!c)
        return;
    close(c->fd);
    lh_frame_reader_deinit(&c->rd);
    free(c->out);
    free(c);
}

size_t lh_conn_pending(const lh_conn *c) { return c->out_len - c->out_off; }

int lh_conn_queue(lh_conn *c, const uint8_t *data, size_t len)
{
    if (c->out_off && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + len > c->out_cap) {
        /* compact first, then grow */
        if (c->out_off) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        if (c->out_len + len > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap : 4096;
            while (cap < c->out_len + len)
                cap *= 2;
            uint8_t *nb = realloc(c->out, cap);
            if (!nb)
                return -ENOMEM;
            c->out = nb;
            c->out_cap = cap;
        }
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    return 0;
}

int lh_conn_write(lh_conn *c)
{
    if (c->out_off < c->out_len) {
        size_t done = 0;
        int rc = lh_anet_write(c->fd, c->out + c->out_off, c->out_len - c->out_off, &done);
        c->out_off += done;
        if (rc != 0)
            return -1;
        if (c->out_off < c->out_len)
            return 0; /* the socket is full: the rest when it is writable */
    }
    c->out_off = c->out_len = 0;
    if (c->out_cap > (1u << 20)) { /* give back a buffer grown by a burst */
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    return 0;
}

static int read_frames(lh_conn *c, lh_conn_frame_fn on_frame, void *ud)
{
    uint8_t buf[65536];
    for (int rounds = 0; rounds < 16 && !c->closing; rounds++) {
        ssize_t n = lh_anet_read(c->fd, buf, sizeof buf);
        if (n == -EAGAIN)
            return 0;
        if (n < 0)
            return -EPIPE;
        if (n == 0) {
            if (lh_frame_pending(&c->rd))
                lh_log_warn("connection %llu: closed in the middle of a frame (%zu bytes of it "
                            "received)", (unsigned long long)c->id, lh_frame_pending(&c->rd));
            return -EPIPE;
        }
        size_t off = 0;
        while (off < (size_t)n && !c->closing) {
            size_t used, size;
            const uint8_t *f;
            int rc = lh_frame_feed(&c->rd, buf + off, (size_t)n - off, &used, &f, &size);
            off += used;
            if (rc != 0) {
                c->closing = 1;
                return rc == LH_E_LIMIT ? LH_E_LIMIT : -ENOMEM;
            }
            if (f)
                on_frame(ud, c, f, size);
        }
    }
    return 0;
}

int lh_conn_read(lh_conn *c, lh_conn_frame_fn on_frame, void *ud, double now)
{
    int rc = read_frames(c, on_frame, ud);
    /* the frame timeout runs from the first byte of a frame until its last */
    if (!lh_frame_pending(&c->rd)) {
        c->t_frame = 0;
        if (c->rd.cap > (64u << 10)) { /* give back the buffer of a big frame */
            lh_frame_reader_deinit(&c->rd);
            lh_frame_reader_init(&c->rd, c->max_frame);
        }
    } else if (!c->t_frame) {
        c->t_frame = now;
    }
    return rc;
}
