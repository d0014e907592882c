/* The effect <-> worker channel (the Python side is vosfx/ofx/protocol.py; keep both equal).
 * A fixed 48-byte header over a Unix socket pair, optional UTF-8 text after it, pixels at
 * offset 0 of a shared-memory file both processes map. Requests and replies alternate. */
#ifndef VOSFX_OFX_PROTO_H
#define VOSFX_OFX_PROTO_H

#include <stdint.h>

#define VX_MAGIC 0x31584F56u /* "VOX1" little-endian */

enum {
    /* effect -> worker */
    VX_CONFIG = 1, VX_PROMPTS = 2, VX_RENDER = 3, VX_FRAME = 4, VX_ABORT = 5, VX_QUIT = 6,
    /* worker -> effect */
    VX_READY = 101, VX_OK = 102, VX_ERROR = 103, VX_NEED = 104, VX_PROGRESS = 105,
    VX_MATTE = 106, VX_CANCELLED = 107
};

enum { VX_FMT_NONE = 0, VX_FMT_RGB8 = 1, VX_FMT_RGB16 = 2, VX_FMT_ALPHA_F32 = 3 };

/* The Source fingerprint, to notice a Source changed upstream (graded, replaced, re-timed):
 * the mean RGB (clamped to [0, 1], as the model sees it) of VX_FP_CELLS x VX_FP_CELLS cells
 * of the frame area, each over VX_FP_SAMPLES x VX_FP_SAMPLES pixels sampled at fixed fractions
 * of the frame, so a proxy image and the full-size one give nearly the same cells. float32,
 * cells top-down, RGB interleaved, VX_FP_BYTES long. RENDER carries the rendered frame's at
 * offset 0 of the shared memory (shm_bytes = VX_FP_BYTES); FRAME carries the sent frame's after
 * its pixels and Mask plane (b = VX_FP_BYTES). A MATTE with b = 1 + k says the worker found
 * the Source's frame k changed, dropped its mattes and tracked again from the prompts. */
#define VX_FP_CELLS 16
#define VX_FP_SAMPLES 16
#define VX_FP_BYTES (VX_FP_CELLS * VX_FP_CELLS * 3 * 4)

typedef struct VxMsg {
    uint32_t magic;
    uint32_t type;
    int32_t frame;
    int32_t a;
    int32_t b;
    uint32_t width;
    uint32_t height;
    uint32_t format;
    uint32_t text_len;
    uint32_t reserved;
    uint64_t shm_bytes;
} VxMsg;

/* the layout is part of the protocol: 48 bytes, no padding */
typedef char vx_msg_size_check[(sizeof(VxMsg) == 48) ? 1 : -1];

#endif
