/* Images: reading the host's images (any depth, RGBA/RGB/Alpha, bottom-up, any bounds), the
 * Source's frame geometry, packing frames for the worker (top-down RGB at the render scale) and
 * compositing the output. */
#define _GNU_SOURCE
#include "vosfx_ofx.h"

#include <math.h>
#include <string.h>

/* ---- images ---------------------------------------------------------------------------------- */



int vx_img_open(OfxImageClipHandle clip, OfxTime t, const OfxRectD *region, VxImg *im) {
    memset(im, 0, sizeof *im);
    if (!clip || vx_effect->clipGetImage(clip, t, region, &im->handle) != kOfxStatOK) return -1;
    char *depth = NULL, *comps = NULL;
    void *data = NULL;
    vx_prop->propGetPointer(im->handle, kOfxImagePropData, 0, &data);
    vx_prop->propGetIntN(im->handle, kOfxImagePropBounds, 4, &im->b.x1);
    vx_prop->propGetInt(im->handle, kOfxImagePropRowBytes, 0, &im->rowbytes);
    vx_prop->propGetString(im->handle, kOfxImageEffectPropPixelDepth, 0, &depth);
    vx_prop->propGetString(im->handle, kOfxImageEffectPropComponents, 0, &comps);
    im->data = data;
    im->depth = !depth                                  ? 0
                : strcmp(depth, kOfxBitDepthByte) == 0  ? 1
                : strcmp(depth, kOfxBitDepthShort) == 0 ? 2
                : strcmp(depth, kOfxBitDepthFloat) == 0 ? 4
                                                        : 0;
    im->nc = !comps                                            ? 0
             : strcmp(comps, kOfxImageComponentRGBA) == 0  ? 4
             : strcmp(comps, kOfxImageComponentRGB) == 0   ? 3
             : strcmp(comps, kOfxImageComponentAlpha) == 0 ? 1
                                                           : 0;
    if (!im->data || !im->depth || !im->nc || im->b.x2 < im->b.x1 || im->b.y2 < im->b.y1) {
        vx_effect->clipReleaseImage(im->handle);
        im->handle = NULL;
        return -2; /* an image this effect cannot read */
    }
    return 0;
}

void vx_img_close(VxImg *im) {
    if (im->handle) vx_effect->clipReleaseImage(im->handle);
    im->handle = NULL;
}

static inline void *vx_px(const VxImg *im, int x, int y) {
    return im->data + (ptrdiff_t)(y - im->b.y1) * im->rowbytes +
           (ptrdiff_t)(x - im->b.x1) * im->nc * im->depth;
}

static inline int vx_inside(const VxImg *im, int x, int y) {
    return x >= im->b.x1 && x < im->b.x2 && y >= im->b.y1 && y < im->b.y2;
}

/* rgba in [0, 1] (float images as they are); black transparent outside the bounds; RGB is
 * opaque; an Alpha image reads as grey with that alpha */
static inline void vx_read(const VxImg *im, int x, int y, float o[4]) {
    o[0] = o[1] = o[2] = o[3] = 0.f;
    if (!vx_inside(im, x, y)) return;
    const void *p = vx_px(im, x, y);
    float v[4] = {0, 0, 0, 1};
    for (int c = 0; c < im->nc; c++) {
        v[c] = im->depth == 1   ? ((const unsigned char *)p)[c] / 255.f
               : im->depth == 2 ? ((const unsigned short *)p)[c] / 65535.f
                                : ((const float *)p)[c];
    }
    if (im->nc == 1) {
        o[0] = o[1] = o[2] = o[3] = v[0];
        return;
    }
    memcpy(o, v, sizeof v);
}

/* [0, 1]; NaN is 0 (every comparison with it is false), +-inf the nearer end: the integer
 * conversions after it are then always defined */
static inline float vx_clamp01(float v) { return v > 0.f ? (v < 1.f ? v : 1.f) : 0.f; }

void vx_write(VxImg *im, int x, int y, const float v[4]) {
    if (!vx_inside(im, x, y)) return;
    void *p = vx_px(im, x, y);
    const float *src = im->nc == 1 ? v + 3 : v;
    for (int c = 0; c < im->nc; c++) {
        if (im->depth == 1)
            ((unsigned char *)p)[c] = (unsigned char)(vx_clamp01(src[c]) * 255.f + 0.5f);
        else if (im->depth == 2)
            ((unsigned short *)p)[c] = (unsigned short)(vx_clamp01(src[c]) * 65535.f + 0.5f);
        else
            ((float *)p)[c] = src[c];
    }
}



int vx_geometry(VxInstance *in, OfxTime t, double sx, double sy, VxGeom *g) {
    OfxPropertySetHandle cp;
    memset(g, 0, sizeof *g);
    if (vx_effect->clipGetRegionOfDefinition(in->src, t, &g->rod) != kOfxStatOK) return -1;
    g->par = 1.0;
    double range[2] = {0, 0};
    if (vx_effect->clipGetPropertySet(in->src, &cp) == kOfxStatOK) {
        vx_prop->propGetDouble(cp, kOfxImagePropPixelAspectRatio, 0, &g->par);
        vx_prop->propGetDoubleN(cp, kOfxImageEffectPropFrameRange, 2, range);
        vx_prop->propGetDouble(cp, kOfxImageEffectPropFrameRate, 0, &g->fps);
    }
    if (!(g->par > 0)) g->par = 1.0;
    g->first = range[0];
    g->last = range[1] >= range[0] ? range[1] : range[0];
    g->sx = sx > 0 ? sx : 1.0;
    g->sy = sy > 0 ? sy : 1.0;
    double fw = floor((g->rod.x2 - g->rod.x1) / g->par + 0.5);
    double fh = floor(g->rod.y2 - g->rod.y1 + 0.5);
    if (fw > VX_MAX_SIDE || fh > VX_MAX_SIDE) { /* checked before any conversion to int */
        return -2; /* the message reads the size from rod and par */
    }
    if (!(fw >= 1 && fh >= 1) || !(fabs(g->rod.x1) < 1e9 && fabs(g->rod.y1) < 1e9))
        return -1; /* NaN or an empty area too */
    g->full_w = (int)fw;
    g->full_h = (int)fh;
    if (!(fw * g->sx <= 4.0 * VX_MAX_SIDE && fh * g->sy <= 4.0 * VX_MAX_SIDE)) return -1;
    g->x1 = (int)floor(g->rod.x1 * g->sx / g->par + 0.5);
    g->y1 = (int)floor(g->rod.y1 * g->sy + 0.5);
    g->w = (int)floor(g->full_w * g->sx + 0.5);
    g->h = (int)floor(g->full_h * g->sy + 0.5);
    if (g->w <= 0 || g->h <= 0) return -1;
    return 0;
}


/* 256 x 256 samples at fixed fractions of the frame area, whatever the render scale: at most
 * 65536 pixels read (well under a millisecond), against a matte's tens of milliseconds */
void vx_fingerprint(const VxImg *im, const VxGeom *g, float out[VX_FP_FLOATS]) {
    enum { N = VX_FP_CELLS * VX_FP_SAMPLES };
    int xs[N];
    for (int i = 0; i < N; i++) xs[i] = g->x1 + (int)((i + 0.5) * g->w / N);
    memset(out, 0, sizeof(float) * VX_FP_FLOATS);
    for (int j = 0; j < N; j++) {
        int y = g->y1 + g->h - 1 - (int)((j + 0.5) * g->h / N); /* sample row j, top-down */
        float *cells = out + (size_t)(j / VX_FP_SAMPLES) * VX_FP_CELLS * 3;
        for (int i = 0; i < N; i++) {
            float v[4];
            vx_read(im, xs[i], y, v);
            float *o = cells + (i / VX_FP_SAMPLES) * 3;
            for (int k = 0; k < 3; k++) o[k] += vx_clamp01(v[k]); /* NaN: 0 */
        }
    }
    for (int k = 0; k < VX_FP_FLOATS; k++) out[k] /= (float)(VX_FP_SAMPLES * VX_FP_SAMPLES);
}

/* one source frame (its Mask plane, its fingerprint) into the shared memory, top-down; returns
 * bytes, 0 when the host gives no Source image for it */
size_t vx_pack_frame(VxInstance *in, const VxGeom *g, int index, int with_mask,
                            int *format, int *has_mask, int *fp_bytes) {
    OfxTime t = g->first + index;
    VxImg im;
    size_t npx = (size_t)g->w * g->h;
    unsigned char *dst = in->worker.shm;
    float fp[VX_FP_FLOATS];
    *has_mask = 0;
    *format = VX_FMT_RGB8;
    if (vx_img_open(in->src, t, &g->rod, &im) != 0) {
        return 0; /* the host has no image there: never tracked as black */
    } else {
        vx_fingerprint(&im, g, fp);
        *format = im.depth == 1 ? VX_FMT_RGB8 : VX_FMT_RGB16;
        for (int r = 0; r < g->h; r++) {
            int y = g->y1 + g->h - 1 - r;
            size_t row = (size_t)r * g->w * 3;
            int c = 0;
            if (im.depth == 1 && im.nc >= 3 && y >= im.b.y1 && y < im.b.y2) {
                /* 8-bit rows inside the image: copy RGB as is (the common case) */
                for (; c < g->w && g->x1 + c < im.b.x1; c++) memset(dst + row + 3 * c, 0, 3);
                for (; c < g->w && g->x1 + c < im.b.x2; c++)
                    memcpy(dst + row + 3 * c, vx_px(&im, g->x1 + c, y), 3);
            }
            for (; c < g->w; c++) {
                float v[4];
                vx_read(&im, g->x1 + c, y, v);
                size_t o = row + (size_t)c * 3;
                if (*format == VX_FMT_RGB8) {
                    for (int k = 0; k < 3; k++)
                        dst[o + k] = (unsigned char)(vx_clamp01(v[k]) * 255.f + .5f);
                } else {
                    unsigned short *d16 = (unsigned short *)dst;
                    for (int k = 0; k < 3; k++)
                        d16[o + k] = (unsigned short)(vx_clamp01(v[k]) * 65535.f + .5f);
                }
            }
        }
        vx_img_close(&im);
    }
    size_t rgb_bytes = npx * 3 * (*format == VX_FMT_RGB8 ? 1 : 2);
    *fp_bytes = VX_FP_BYTES;
    if (!with_mask) {
        memcpy(dst + rgb_bytes, fp, sizeof fp); /* memcpy: the offset may be unaligned */
        return rgb_bytes + sizeof fp;
    }
    OfxRectD mrod;
    if (vx_effect->clipGetRegionOfDefinition(in->mask, t, &mrod) != kOfxStatOK) mrod = g->rod;
    unsigned char *m = dst + rgb_bytes;
    if (vx_img_open(in->mask, t, &mrod, &im) != 0) {
        memset(m, 0, npx);
    } else {
        for (int r = 0; r < g->h; r++) {
            int y = g->y1 + g->h - 1 - r;
            for (int c = 0; c < g->w; c++) {
                float v[4];
                vx_read(&im, g->x1 + c, y, v);
                m[(size_t)r * g->w + c] = v[3] >= 0.5f ? 255 : 0;
            }
        }
        vx_img_close(&im);
    }
    *has_mask = 1;
    memcpy(m + npx, fp, sizeof fp);
    return rgb_bytes + npx + sizeof fp;
}

/* One output pixel from the source pixel v (RGBA in [0, 1] or float) and the matte a. */
static inline void vx_mode(float v[4], float a, int mode, float opacity) {
    static const float tint[3] = {255 / 255.f, 64 / 255.f, 64 / 255.f}; /* vosfx's object 1 */
    if (mode == VX_MODE_MATTE) {
        v[0] = v[1] = v[2] = v[3] = a;
    } else if (mode == VX_MODE_STRAIGHT) {
        v[3] = a;
    } else if (mode == VX_MODE_PREMULT) {
        v[0] *= a, v[1] *= a, v[2] *= a, v[3] = a;
    } else {
        float w = a * opacity;
        for (int k = 0; k < 3; k++) v[k] += (tint[k] - v[k]) * w;
    }
}

/* Source and Output of the same depth and RGBA (what the effect asks for): one loop per pixel
 * type, no per-channel depth switch. T: the channel type, FULL: its 1.0 (1 for float). */
#define VX_COMPOSITE_RGBA(NAME, T, FULL, STORE)                                                   \
    static void NAME(VxImg *out, const VxImg *src, const float *alpha, const VxGeom *g,          \
                     OfxRectI win, int mode, float opacity, int stride) {                         \
        for (int y = win.y1; y < win.y2; y++) {                                                   \
            int r = g->y1 + g->h - 1 - y;                                                         \
            const float *arow = (alpha && r >= 0 && r < g->h) ? alpha + (size_t)r * stride : NULL; \
            int src_row = y >= src->b.y1 && y < src->b.y2;                                        \
            for (int x = win.x1; x < win.x2; x++) {                                               \
                float v[4] = {0, 0, 0, 0};                                                        \
                if (src_row && x >= src->b.x1 && x < src->b.x2) {                                 \
                    const T *s = (const T *)vx_px(src, x, y);                                     \
                    for (int k = 0; k < 4; k++) v[k] = s[k] / (float)(FULL);                      \
                }                                                                                 \
                if (alpha) {                                                                      \
                    int c = x - g->x1;                                                            \
                    vx_mode(v, (arow && c >= 0 && c < g->w) ? arow[stride ? c : 0] : 0.f, mode,   \
                            opacity);                                                             \
                }                                                                                 \
                T *o = (T *)vx_px(out, x, y);                                                     \
                for (int k = 0; k < 4; k++) o[k] = STORE(v[k]);                                   \
            }                                                                                     \
        }                                                                                         \
    }
#define VX_STORE8(f) ((unsigned char)(vx_clamp01(f) * 255.f + 0.5f))
#define VX_STORE16(f) ((unsigned short)(vx_clamp01(f) * 65535.f + 0.5f))
#define VX_STOREF(f) (f)
VX_COMPOSITE_RGBA(vx_composite8, unsigned char, 255, VX_STORE8)
VX_COMPOSITE_RGBA(vx_composite16, unsigned short, 65535, VX_STORE16)
VX_COMPOSITE_RGBA(vx_compositef, float, 1, VX_STOREF)

void vx_composite(VxImg *out, const VxImg *src, const float *alpha, const VxGeom *g,
                  OfxRectI win, int mode, float opacity, int stride) {
    /* the window, clipped to the output's bounds (the host may ask for more) */
    if (win.x1 < out->b.x1) win.x1 = out->b.x1;
    if (win.y1 < out->b.y1) win.y1 = out->b.y1;
    if (win.x2 > out->b.x2) win.x2 = out->b.x2;
    if (win.y2 > out->b.y2) win.y2 = out->b.y2;
    if (out->nc == 4 && src->nc == 4 && out->depth == src->depth) {
        if (out->depth == 1) vx_composite8(out, src, alpha, g, win, mode, opacity, stride);
        else if (out->depth == 2) vx_composite16(out, src, alpha, g, win, mode, opacity, stride);
        else vx_compositef(out, src, alpha, g, win, mode, opacity, stride);
        return;
    }
    for (int y = win.y1; y < win.y2; y++) { /* any other combination, pixel by pixel */
        int r = g->y1 + g->h - 1 - y;
        for (int x = win.x1; x < win.x2; x++) {
            float v[4];
            vx_read(src, x, y, v);
            if (alpha) {
                int c = x - g->x1;
                int in_frame = r >= 0 && r < g->h && c >= 0 && c < g->w;
                vx_mode(v, in_frame ? alpha[stride ? (size_t)r * stride + c : 0] : 0.f, mode,
                        opacity);
            }
            vx_write(out, x, y, v);
        }
    }
}
