/* The effect's end of the worker channel: messages (vosfx_ofx_proto.h) written and read whole.
 * Portable C over the platform files' vxw_write / vxw_read (vosfx_worker.c: a socket pair;
 * vosfx_worker_win.c: a 127.0.0.1 connection). */
#define _GNU_SOURCE
#include "vosfx_ofx.h"

#include <stdio.h>
#include <string.h>

int vxw_send(VxWorker *w, uint32_t type, int32_t frame, int32_t a, int32_t b, uint32_t width,
             uint32_t height, uint32_t format, uint64_t shm_bytes, const char *text) {
    VxMsg m = {VX_MAGIC, type, frame, a, b, width, height, format,
               text ? (uint32_t)strlen(text) : 0u, 0u, shm_bytes};
    if (vxw_write(w, &m, sizeof m) != 0) return -1;
    if (m.text_len && vxw_write(w, text, m.text_len) != 0) return -1;
    return 0;
}

int vxw_recv(VxWorker *w, VxMsg *m, char *text, size_t textcap, int timeout_ms, char *err,
             size_t errlen) {
    if (vxw_read(w, m, sizeof *m, timeout_ms, err, errlen) != 0) return -1;
    if (m->magic != VX_MAGIC || m->text_len > (1u << 24)) {
        snprintf(err, errlen, "the vosfx worker sent a malformed message");
        return -1;
    }
    uint32_t left = m->text_len;
    size_t kept = 0;
    char chunk[1024];
    while (left > 0) {
        uint32_t take = left < sizeof chunk ? left : (uint32_t)sizeof chunk;
        if (vxw_read(w, chunk, take, timeout_ms, err, errlen) != 0) return -1;
        if (text && kept + 1 < textcap) {
            size_t room = textcap - 1 - kept;
            size_t c = take < room ? take : room;
            memcpy(text + kept, chunk, c);
            kept += c;
        }
        left -= take;
    }
    if (text && textcap) text[kept] = '\0';
    if (m->shm_bytes > w->shm_size) {
        snprintf(err, errlen, "the vosfx worker points past the shared memory");
        return -1;
    }
    return 0;
}
