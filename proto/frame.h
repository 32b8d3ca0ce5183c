/* proto/frame — the framing of the longheads protocol, shared by the daemon and the client.
 *
 * A frame is a u32 little-endian payload length followed by that many payload bytes (one
 * protobuf message, see longheads.proto).  A zero-length frame is valid framing (it carries an
 * empty message).
 *
 * lh_frame_reader accepts input in pieces of any size, down to one byte at a time, and hands
 * out whole frames.  The announced length is checked against the reader's max_size before any
 * payload buffer is allocated, so a peer cannot make us allocate more than max_size bytes.
 * The reader owns its buffer; a frame handed out stays valid until the next lh_frame_feed or
 * lh_frame_reader_deinit.  Not thread-safe (one reader per connection).
 */
#ifndef LH_FRAME_H
#define LH_FRAME_H

#include <stddef.h>
#include <stdint.h>

/* Must equal PROTOCOL_VERSION in longheads.proto; bump both together (see the rule there). */
#define LH_PROTOCOL_VERSION 1u
#define LH_FRAME_HEADER_SIZE 4u
#define LH_FRAME_MAX_DEFAULT (16u << 20)
/* The largest max_size a reader accepts: the length field is 32 bits. */
#define LH_FRAME_MAX_LIMIT 0xffffffffu

typedef struct {
    size_t max_size;     /* largest payload accepted */
    uint8_t hdr[LH_FRAME_HEADER_SIZE];
    size_t n_hdr;        /* header bytes received of the current frame */
    uint8_t *buf;        /* payload being received, (cap) bytes */
    size_t cap;
    size_t size;         /* payload size announced by the header */
    size_t n_have;       /* payload bytes received */
    int have_frame;      /* a complete frame was handed out; reset on the next feed */
} lh_frame_reader;

void lh_frame_reader_init(lh_frame_reader *r, size_t max_size);
void lh_frame_reader_deinit(lh_frame_reader *r);

/* Consume bytes from data[0..len) until one frame is complete or the input runs out; *usedp is
 * the number consumed (call again with the rest).  On a complete frame *framep points at the
 * payload and *sizep is its size (*framep is non-NULL even for a zero-length frame); otherwise
 * *framep is NULL.  Returns 0, LH_E_LIMIT (announced length over max_size: the stream cannot be
 * resynchronised, the caller closes it), -ENOMEM. */
int lh_frame_feed(lh_frame_reader *r, const uint8_t *data, size_t len, size_t *usedp,
                  const uint8_t **framep, size_t *sizep);

/* Bytes of an unfinished frame received so far (header included): non-zero at EOF means the
 * peer sent a truncated frame. */
size_t lh_frame_pending(const lh_frame_reader *r);
/* The length announced by the header of the frame being received (valid once 4 header bytes
 * arrived; used to report LH_E_LIMIT). */
size_t lh_frame_announced(const lh_frame_reader *r);

/* Write the 4-byte header for a payload of size bytes.  size must be <= LH_FRAME_MAX_LIMIT. */
void lh_frame_header(uint8_t hdr[LH_FRAME_HEADER_SIZE], size_t size);

/* Write one whole frame to a blocking fd (EINTR retried, partial writes continued, SIGPIPE
 * avoided with MSG_NOSIGNAL on sockets).  Returns 0, -EMSGSIZE (size > LH_FRAME_MAX_LIMIT),
 * -errno of the write. */
int lh_frame_write(int fd, const void *payload, size_t size);

#endif
