/* The conversation with the worker during a render: settings and points when they changed,
 * the render request, the frames it asks for, progress, and the matte or the error. */
#define _GNU_SOURCE
#include "vosfx_ofx.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VX_TIMEOUT_READY_MS 120000
#define VX_TIMEOUT_DEFAULT_S 900 /* first use may export the model to ONNX: minutes */
#define VX_TIMEOUT_MAX_S (7 * 24 * 3600) /* a week; INT_MAX ms is 24.8 days */

/* a growing text buffer for the JSON the worker reads */
typedef struct { char *s; size_t len, cap; int oom; } VxBuf;

static void vx_buf_add(VxBuf *b, const char *fmt, ...) __attribute__((format(VX_PRINTF, 2, 3)));
static void vx_buf_add(VxBuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = b->s ? vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap) : -1;
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 1024;
        if (n >= 0 && cap < b->len + (size_t)n + 1) cap = b->len + (size_t)n + 1;
        char *s = vx_alloc(cap);
        if (!s) {
            b->oom = 1;
            return;
        }
        if (b->s) memcpy(s, b->s, b->len + 1);
        else s[0] = '\0';
        vx_free(b->s);
        b->s = s;
        b->cap = cap;
    }
}

static void vx_buf_json_string(VxBuf *b, const char *s) {
    vx_buf_add(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') vx_buf_add(b, "\\%c", c);
        else if (c < 0x20) vx_buf_add(b, "\\u%04x", c);
        else vx_buf_add(b, "%c", c);
    }
    vx_buf_add(b, "\"");
}

/* ---- the conversation with the worker ---------------------------------------------------------- */


/* $VOSFX_OFX_TIMEOUT_S in whole seconds, at most VX_TIMEOUT_MAX_S (poll takes int
 * milliseconds: a larger value would overflow and a negative one wait for ever); anything
 * else (absent, 0, negative, not a number) is the default */
static int vx_timeout_ms(void) {
    const char *s = getenv("VOSFX_OFX_TIMEOUT_S");
    char *end = NULL;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || end == s || v <= 0) v = VX_TIMEOUT_DEFAULT_S;
    if (v > VX_TIMEOUT_MAX_S) v = VX_TIMEOUT_MAX_S;
    return (int)v * 1000;
}

static char *vx_config_json(VxInstance *in, const VxGeom *g) {
    VxBuf b = {0};
    static const char *const alphas[] = {"soft", "hard"};
    static const char *const edges[] = {"bilinear", "guided"};
    int alpha = vx_get_int(in, VXP_ALPHA), edge = vx_get_int(in, VXP_EDGE);
    VxNumbers previous = vx_numbers_begin(); /* JSON numbers: "0.5", never "0,5" */
    vx_buf_add(&b, "{\"clip\": {\"width\": %d, \"height\": %d, \"frames\": %d, \"fps\": %.6f}, ",
               g->full_w, g->full_h, (int)(g->last - g->first) + 1, g->fps > 0 ? g->fps : 24.0);
    vx_buf_add(&b, "\"model\": {\"name\": ");
    vx_buf_json_string(&b, vx_get_string(in, VXP_MODEL)[0] ? vx_get_string(in, VXP_MODEL)
                                                             : "sam2.1-tiny");
    vx_buf_add(&b, "}, \"refine\": {\"alpha\": \"%s\", \"threshold\": %.6g, \"softness\": %.6g, "
                   "\"edge\": \"%s\", \"shift_edge_px\": %.6g, \"feather_px\": %.6g, "
                   "\"choke\": %.6g, \"clip_black\": %.6g, \"clip_white\": %.6g, "
                   "\"fill_holes_px2\": %d, \"remove_specks_px2\": %d, "
                   "\"temporal_strength\": %.6g, \"non_overlap\": %s}, ",
               alphas[alpha == 1], vx_get_double(in, VXP_THRESHOLD),
               vx_get_double(in, VXP_SOFTNESS), edges[edge != 0], vx_get_double(in, VXP_SHIFT),
               vx_get_double(in, VXP_FEATHER), vx_get_double(in, VXP_CHOKE),
               vx_get_double(in, VXP_CLIP_BLACK), vx_get_double(in, VXP_CLIP_WHITE),
               vx_get_int(in, VXP_FILL), vx_get_int(in, VXP_SPECKS),
               vx_get_double(in, VXP_TEMPORAL), vx_get_int(in, VXP_NON_OVERLAP) ? "true" : "false");
    vx_buf_add(&b, "\"mask_obj\": %d}", vx_get_int(in, VXP_MASK_OBJ));
    vx_numbers_end(previous);
    if (b.oom) {
        vx_free(b.s);
        return NULL;
    }
    return b.s;
}

/* points at full size, top-left origin, frames as indices into the Source */
static char *vx_points_json(VxInstance *in, const VxGeom *g) {
    VxPoints pts = {0};
    vx_get_points(in, &pts);
    VxBuf b = {0};
    VxNumbers previous = vx_numbers_begin();
    vx_buf_add(&b, "{\"points\": [");
    int n = 0;
    for (int i = 0; i < pts.count; i++) {
        const VxPoint *p = &pts.items[i];
        if (p->frame < g->first || p->frame > g->last) continue;
        vx_buf_add(&b, "%s[%d, %d, %d, %.3f, %.3f]", n++ ? ", " : "", (int)(p->frame - g->first),
                   p->obj, p->label, (p->x - g->rod.x1) / g->par, g->rod.y2 - p->y);
    }
    vx_buf_add(&b, "]}");
    vx_numbers_end(previous);
    vx_points_free(&pts);
    if (b.oom) {
        vx_free(b.s);
        return NULL;
    }
    return b.s;
}

/* what a failed render does, for the messages: a final render stops (the host reports it), a
 * viewer shows the Source */
const char *vx_outcome(const VxInstance *in) {
    return in->final_render ? "The render stops at this frame, so that no frame without its "
                              "matte is delivered"
                            : "The image passes through";
}

/* an error the worker reported (its message names the setting or the cause) */
static int vx_worker_error(VxInstance *in, const char *text) {
    size_t n = strlen(text);
    vx_report(in, kOfxMessageError, "%s%s %s.", text, n && text[n - 1] == '.' ? "" : ".",
              vx_outcome(in));
    return VX_R_FAIL;
}

static int vx_worker_dead(VxInstance *in, const char *what) {
    char how[128], cause[320] = "", log[sizeof in->worker.log_path + 8];
    char path[sizeof in->worker.log_path];
    snprintf(path, sizeof path, "%s", in->worker.log_path);
    vx_printable(log, sizeof log, path, strlen(path));
    int status = vxw_stop(&in->worker, how, sizeof how);
    if (status > 0) { /* it exited with an error: its log's last word is the cause */
        char tail[300];
        vxw_log_tail(path, tail, sizeof tail);
        if (tail[0]) snprintf(cause, sizeof cause, ": %s", tail);
    }
    vx_free(in->sent_config), vx_free(in->sent_points);
    in->sent_config = in->sent_points = NULL;
    vx_report(in, kOfxMessageError,
              "the vosfx worker failed (%s; it %s%s). %s; the next render starts a new worker. "
              "Log: %s",
              what, how[0] ? how : "ended", cause, vx_outcome(in), log);
    return VX_R_FAIL;
}

/* wait for a reply to CONFIG / PROMPTS: OK, or ERROR (reported) */
static int vx_expect_ok(VxInstance *in, int timeout_ms) {
    VxMsg m;
    char text[VX_ERR_LEN], err[VX_ERR_LEN];
    for (;;) {
        if (vxw_recv(&in->worker, &m, text, sizeof text, timeout_ms, err, sizeof err) != 0)
            return vx_worker_dead(in, err);
        if (m.type == VX_OK) return VX_R_MATTE;
        if (m.type == VX_PROGRESS) continue;
        if (m.type == VX_ERROR) return vx_worker_error(in, text);
        return vx_worker_dead(in, "unexpected reply");
    }
}

static int vx_ensure_worker(VxInstance *in) {
    if (in->worker.running) return VX_R_MATTE;
    if (in->failed_start) return VX_R_FAIL; /* said once already (the message persists) */
    char err[VX_ERR_LEN];
    if (vxw_start(&in->worker, err, sizeof err) != 0) {
        in->failed_start = 1;
        vx_report(in, kOfxMessageError, "%s. %s.", err, vx_outcome(in));
        return VX_R_FAIL;
    }
    VxMsg m = {0};
    char text[256];
    int rc = vxw_recv(&in->worker, &m, text, sizeof text, VX_TIMEOUT_READY_MS, err, sizeof err);
    if (rc != 0 || m.type != VX_READY) {
        in->failed_start = 1;
        return vx_worker_dead(in, rc != 0 ? err : "its first message was not READY");
    }
    return VX_R_MATTE;
}

/* Settings the worker cannot take, refused here with the parameter named as the host shows
 * it (a NaN written into the JSON would end the worker; a string that is not UTF-8 too). */
static int vx_check_settings(VxInstance *in) {
    static const int doubles[] = {VXP_THRESHOLD, VXP_SOFTNESS, VXP_SHIFT,      VXP_FEATHER,
                                  VXP_CHOKE,     VXP_CLIP_BLACK, VXP_CLIP_WHITE, VXP_TEMPORAL};
    for (size_t i = 0; i < sizeof doubles / sizeof *doubles; i++) {
        double v = vx_get_double(in, doubles[i]);
        if (!isfinite(v)) {
            vx_report(in, kOfxMessageError, "%s: expected a number, found %s. %s.",
                      vx_param_labels[doubles[i]], isnan(v) ? "NaN" : v > 0 ? "+inf" : "-inf",
                      vx_outcome(in));
            return -1;
        }
    }
    if (!vx_utf8_valid(vx_get_string(in, VXP_MODEL))) {
        char shown[256];
        const char *model = vx_get_string(in, VXP_MODEL);
        vx_printable(shown, sizeof shown, model, strlen(model));
        vx_report(in, kOfxMessageError, "%s: expected UTF-8 text, found '%s'. %s.",
                  vx_param_labels[VXP_MODEL], shown, vx_outcome(in));
        return -1;
    }
    return 0;
}

/* no object to matte (the worker's text says why, or nothing): said as a warning kept up, not
 * an error; the matte is empty (alpha 0) */
static int vx_nothing_selected(VxInstance *in, const VxGeom *g, const char *why) {
    char text[VX_ERR_LEN];
    VxPoints pts = {0};
    vx_get_points(in, &pts);
    if (why[0])
        snprintf(text, sizeof text, "%s", why);
    else if (pts.count > 0) /* the effect sent none: all on frames the Source does not have */
        snprintf(text, sizeof text,
                 "none of the %d points is on a frame of the Source (%g to %g): click the "
                 "object on one of its frames. The matte is empty",
                 pts.count, g->first, g->last);
    else
        snprintf(text, sizeof text,
                 "no object is selected yet: click the object on the viewer (or connect a "
                 "Mask). The matte is empty");
    vx_points_free(&pts);
    if (!in->notice) vx_model_note(in, text);
    return VX_R_EMPTY;
}

/* sync settings and points, ask for frame t's matte, serve its frame requests */
int vx_conversation(VxInstance *in, const VxGeom *g, int index, const float *fp,
                    int *progress_started) {
    int timeout = vx_timeout_ms();
    if (vx_check_settings(in) != 0) return VX_R_FAIL;
    if (vx_ensure_worker(in) != VX_R_MATTE) return VX_R_FAIL;
    char err[VX_ERR_LEN];
    /* RGB16 frame + mask plane + fingerprint, or float alpha: 7 bytes a pixel at most, at the
     * larger of full size and the render scale */
    size_t npx = (size_t)g->full_w * g->full_h;
    if ((size_t)g->w * g->h > npx) npx = (size_t)g->w * g->h;
    if (vxw_reserve(&in->worker, npx * 8 + 4096 + VX_FP_BYTES, err, sizeof err) != 0)
        return vx_worker_dead(in, err);
    char *cfg = vx_config_json(in, g), *pts = vx_points_json(in, g);
    int r = VX_R_MATTE;
    if (!cfg || !pts) {
        vx_report(in, kOfxMessageError, "out of memory");
        r = VX_R_FAIL;
    }
    if (r == VX_R_MATTE && (!in->sent_config || strcmp(cfg, in->sent_config) != 0)) {
        if (vxw_send(&in->worker, VX_CONFIG, 0, 0, 0, 0, 0, 0, 0, cfg) != 0)
            r = vx_worker_dead(in, "cannot send the settings");
        else if ((r = vx_expect_ok(in, timeout)) == VX_R_MATTE) {
            vx_free(in->sent_config);
            in->sent_config = cfg;
            cfg = NULL;
        }
    }
    if (r == VX_R_MATTE && (!in->sent_points || strcmp(pts, in->sent_points) != 0)) {
        if (vxw_send(&in->worker, VX_PROMPTS, 0, 0, 0, 0, 0, 0, 0, pts) != 0)
            r = vx_worker_dead(in, "cannot send the points");
        else if ((r = vx_expect_ok(in, timeout)) == VX_R_MATTE) {
            vx_free(in->sent_points);
            in->sent_points = pts;
            pts = NULL;
        }
    }
    vx_free(cfg);
    vx_free(pts);
    if (r != VX_R_MATTE) return r;

    int with_mask = 0;
    OfxPropertySetHandle mp;
    if (in->mask && vx_effect->clipGetPropertySet(in->mask, &mp) == kOfxStatOK)
        vx_prop->propGetInt(mp, kOfxImageClipPropConnected, 0, &with_mask);
    memcpy(in->worker.shm, fp, VX_FP_BYTES);
    if (vxw_send(&in->worker, VX_RENDER, index, with_mask, vx_get_int(in, VXP_OUT_OBJ),
                 (uint32_t)g->w, (uint32_t)g->h, 0, VX_FP_BYTES, NULL) != 0)
        return vx_worker_dead(in, "cannot send the render request");
    int cancel = 0, missing = -1; /* missing: a frame the host gave no image for */
    for (;;) {
        VxMsg m;
        char text[VX_ERR_LEN];
        if (vxw_recv(&in->worker, &m, text, sizeof text, timeout, err, sizeof err) != 0)
            return vx_worker_dead(in, err);
        switch (m.type) {
        case VX_NEED: {
            if (cancel || vx_effect->abort(in->effect) || m.frame < 0 ||
                m.frame > (int)(g->last - g->first)) {
                if (vxw_send(&in->worker, VX_ABORT, m.frame, 0, 0, 0, 0, 0, 0, NULL) != 0)
                    return vx_worker_dead(in, "cannot answer a frame request");
                continue;
            }
            int fmt, has_mask, fp_bytes;
            size_t n = vx_pack_frame(in, g, m.frame, with_mask, &fmt, &has_mask, &fp_bytes);
            if (n == 0) { /* never tracked as black: the tracking stops, the render says why */
                missing = m.frame;
                if (vxw_send(&in->worker, VX_ABORT, m.frame, 0, 0, 0, 0, 0, 0, NULL) != 0)
                    return vx_worker_dead(in, "cannot answer a frame request");
                continue;
            }
            if (vxw_send(&in->worker, VX_FRAME, m.frame, has_mask, fp_bytes, (uint32_t)g->w,
                         (uint32_t)g->h, (uint32_t)fmt, n, NULL) != 0)
                return vx_worker_dead(in, "cannot send a frame");
            continue;
        }
        case VX_PROGRESS:
            if (vx_progress && m.b > 0) {
                if (!*progress_started) {
                    vx_progress->progressStart(in->effect, "vosfx: tracking");
                    *progress_started = 1;
                }
                if (vx_progress->progressUpdate(in->effect, (double)m.a / m.b) == kOfxStatReplyNo)
                    cancel = 1; /* the user pressed cancel on the host's progress bar */
            }
            continue;
        case VX_MATTE:
            if (m.format == VX_FMT_NONE) /* no usable prompt: the text says why */
                return vx_nothing_selected(in, g, text);
            if (m.format != VX_FMT_ALPHA_F32 || (int)m.width != g->w || (int)m.height != g->h ||
                m.shm_bytes < (uint64_t)g->w * g->h * 4)
                return vx_worker_dead(in, "a matte of the wrong size");
            if (m.b > 0) {
                /* said once, and left up (later mattes do not clear it) until the user edits */
                vx_report(in, kOfxMessageWarning,
                          "the Source changed upstream (frame %d is not the frame "
                          "tracked before: graded, replaced or re-timed). Its mattes were "
                          "dropped and tracking started again from the points.",
                          (int)(g->first + m.b - 1));
                in->notice = 1;
            } else if (!in->notice) {
                if (text[0]) vx_model_note(in, text); /* how the model runs, kept up */
                else vx_clear_report(in);
            }
            return VX_R_MATTE;
        case VX_ERROR:
            return vx_worker_error(in, text);
        case VX_CANCELLED:
            if (missing >= 0) {
                vx_report(in, kOfxMessageError,
                          "the host gave no Source image for frame %d, which the tracking of "
                          "frame %d needs. %s.",
                          (int)(g->first + missing), (int)(g->first + index), vx_outcome(in));
                return VX_R_FAIL;
            }
            return VX_R_ABORT;
        default:
            return vx_worker_dead(in, "unexpected message");
        }
    }
}
