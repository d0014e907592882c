/* vosfx Matte: an OpenFX image effect that mattes its Source with SAM 2 through a vosfx worker
 * process (vosfx_worker.c). This file: the plug-in entry points, description, parameters,
 * instances and the render. The overlay (points on the viewer) is in vosfx_overlay.c.
 *
 * Coordinates: OFX images are bottom-up with pixel coordinates at the render scale; the worker
 * works top-down at full size (render scale 1). Points are stored in canonical coordinates. */
#define _GNU_SOURCE
#include "vosfx_ofx.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

OfxHost *vx_host;
const OfxPropertySuiteV1 *vx_prop;
const OfxImageEffectSuiteV1 *vx_effect;
const OfxParameterSuiteV1 *vx_param;
const OfxMemorySuiteV1 *vx_mem;
const OfxMultiThreadSuiteV1 *vx_thread;
const OfxMessageSuiteV1 *vx_msg1;
const OfxMessageSuiteV2 *vx_msg2;
const OfxInteractSuiteV1 *vx_interact;
const OfxProgressSuiteV1 *vx_progress;

static pthread_mutex_t vx_fallback_lock = PTHREAD_MUTEX_INITIALIZER;

#define VX_TIMEOUT_READY_MS 120000
#define VX_TIMEOUT_DEFAULT_S 900 /* first use may export the model to ONNX: minutes */

const char *const vx_param_names[VXP_COUNT] = {
    "outputMode", "outputObject", "object", "pointLabel", "clearFrame", "clearAll", "points",
    "maskObject", "overlayOpacity", "model", "alpha", "threshold", "softness", "edge",
    "shiftEdge", "feather", "choke", "fillHoles", "removeSpecks", "temporal", "nonOverlap",
    "pickInStudio", "studioSource"};

/* ---- small helpers ------------------------------------------------------------------------ */

void *vx_alloc(size_t n) {
    void *p = NULL;
    if (n == 0) n = 1;
    if (vx_mem) {
        if (vx_mem->memoryAlloc(NULL, n, &p) != kOfxStatOK) return NULL;
        return p;
    }
    return malloc(n);
}

void vx_free(void *p) {
    if (!p) return;
    if (vx_mem) vx_mem->memoryFree(p);
    else free(p);
}

void vx_lock(VxInstance *in) {
    if (vx_thread && in->lock) vx_thread->mutexLock(in->lock);
    else pthread_mutex_lock(&vx_fallback_lock);
}

void vx_unlock(VxInstance *in) {
    if (vx_thread && in->lock) vx_thread->mutexUnLock(in->lock);
    else pthread_mutex_unlock(&vx_fallback_lock);
}

/* errors and notes to the user through the host's message suite (persistent when it can, so a
 * scrub does not pop a dialog per frame) */
void vx_report(VxInstance *in, const char *type, const char *fmt, ...) {
    char text[VX_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    void *handle = in ? (void *)in->effect : NULL;
    if (vx_msg2 && handle && strcmp(type, kOfxMessageMessage) != 0 &&
        strcmp(type, kOfxMessageLog) != 0)
        vx_msg2->setPersistentMessage(handle, type, "vosfx", "%s", text);
    else if (vx_msg2)
        vx_msg2->message(handle, type, "vosfx", "%s", text);
    else if (vx_msg1)
        vx_msg1->message(handle, type, "vosfx", "%s", text);
}

static void vx_clear_report(VxInstance *in) {
    if (vx_msg2 && in) vx_msg2->clearPersistentMessage(in->effect);
}

VxInstance *vx_instance(OfxImageEffectHandle effect) {
    OfxPropertySetHandle props;
    void *data = NULL;
    if (!effect || vx_effect->getPropertySet(effect, &props) != kOfxStatOK) return NULL;
    if (vx_prop->propGetPointer(props, kOfxPropInstanceData, 0, &data) != kOfxStatOK) return NULL;
    return data;
}

static int vx_get_int(VxInstance *in, int p) {
    int v = 0;
    vx_param->paramGetValue(in->p[p], &v);
    return v;
}

static double vx_get_double(VxInstance *in, int p) {
    double v = 0;
    vx_param->paramGetValue(in->p[p], &v);
    return v;
}

static const char *vx_get_string(VxInstance *in, int p) {
    char *v = NULL;
    if (vx_param->paramGetValue(in->p[p], &v) != kOfxStatOK || !v) return "";
    return v;
}

int vx_get_points(VxInstance *in, VxPoints *out) {
    return vx_points_parse(vx_get_string(in, VXP_POINTS), out);
}

int vx_set_points(VxInstance *in, const VxPoints *pts, const char *undo_name) {
    char *text = vx_points_format(pts);
    if (!text) return -1;
    vx_param->paramEditBegin(in->params, undo_name);
    OfxStatus st = vx_param->paramSetValue(in->p[VXP_POINTS], text);
    vx_param->paramEditEnd(in->params);
    vx_free(text);
    return st == kOfxStatOK ? 0 : -1;
}

/* a growing text buffer for the JSON the worker reads */
typedef struct { char *s; size_t len, cap; int oom; } VxBuf;

static void vx_buf_add(VxBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
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

/* ---- description --------------------------------------------------------------------------- */

static OfxStatus vx_describe(OfxImageEffectHandle effect) {
    OfxPropertySetHandle p;
    if (vx_effect->getPropertySet(effect, &p) != kOfxStatOK) return kOfxStatErrBadHandle;
    vx_prop->propSetString(p, kOfxPropLabel, 0, "vosfx Matte");
    vx_prop->propSetString(p, kOfxPropShortLabel, 0, "vosfx Matte");
    vx_prop->propSetString(p, kOfxImageEffectPluginPropGrouping, 0, "vosfx");
    vx_prop->propSetString(p, kOfxPropPluginDescription, 0,
                           "Mattes of objects you click, tracked through the clip with SAM 2 by "
                           "a vosfx worker process (https://github.com/vosfx).");
    vx_prop->propSetString(p, kOfxImageEffectPropSupportedContexts, 0,
                           kOfxImageEffectContextFilter);
    vx_prop->propSetString(p, kOfxImageEffectPropSupportedContexts, 1,
                           kOfxImageEffectContextGeneral);
    vx_prop->propSetString(p, kOfxImageEffectPropSupportedPixelDepths, 0, kOfxBitDepthByte);
    vx_prop->propSetString(p, kOfxImageEffectPropSupportedPixelDepths, 1, kOfxBitDepthShort);
    vx_prop->propSetString(p, kOfxImageEffectPropSupportedPixelDepths, 2, kOfxBitDepthFloat);
    vx_prop->propSetInt(p, kOfxImageEffectPluginPropSingleInstance, 0, 0);
    /* one render at a time per instance: the worker is one conversation */
    vx_prop->propSetString(p, kOfxImageEffectPluginRenderThreadSafety, 0,
                           kOfxImageEffectRenderInstanceSafe);
    vx_prop->propSetInt(p, kOfxImageEffectPluginPropHostFrameThreading, 0, 0);
    vx_prop->propSetInt(p, kOfxImageEffectPropSupportsTiles, 0, 0); /* the model sees whole frames */
    vx_prop->propSetInt(p, kOfxImageEffectPropSupportsMultiResolution, 0, 0);
    vx_prop->propSetInt(p, kOfxImageEffectPropTemporalClipAccess, 0, 1); /* earlier frames */
    vx_prop->propSetInt(p, kOfxImageEffectPropSupportsMultipleClipDepths, 0, 0);
    vx_prop->propSetPointer(p, kOfxImageEffectPluginPropOverlayInteractV1, 0,
                            (void *)vx_overlay_main);
    return kOfxStatOK;
}

static OfxPropertySetHandle vx_define(OfxParamSetHandle set, const char *type, int which,
                                      const char *label, const char *hint) {
    OfxPropertySetHandle p = NULL;
    if (vx_param->paramDefine(set, type, vx_param_names[which], &p) != kOfxStatOK) return NULL;
    vx_prop->propSetString(p, kOfxPropLabel, 0, label);
    vx_prop->propSetString(p, kOfxParamPropHint, 0, hint);
    vx_prop->propSetString(p, kOfxParamPropScriptName, 0, vx_param_names[which]);
    if (strcmp(type, kOfxParamTypePushButton) != 0)
        vx_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);
    return p;
}

static void vx_define_choice(OfxParamSetHandle set, int which, const char *label,
                             const char *hint, const char *const *options, int def) {
    OfxPropertySetHandle p = vx_define(set, kOfxParamTypeChoice, which, label, hint);
    if (!p) return;
    for (int i = 0; options[i]; i++) vx_prop->propSetString(p, kOfxParamPropChoiceOption, i, options[i]);
    vx_prop->propSetInt(p, kOfxParamPropDefault, 0, def);
}

static void vx_define_int(OfxParamSetHandle set, int which, const char *label, const char *hint,
                          int def, int lo, int hi) {
    OfxPropertySetHandle p = vx_define(set, kOfxParamTypeInteger, which, label, hint);
    if (!p) return;
    vx_prop->propSetInt(p, kOfxParamPropDefault, 0, def);
    vx_prop->propSetInt(p, kOfxParamPropMin, 0, lo);
    vx_prop->propSetInt(p, kOfxParamPropMax, 0, hi);
    vx_prop->propSetInt(p, kOfxParamPropDisplayMin, 0, lo);
    vx_prop->propSetInt(p, kOfxParamPropDisplayMax, 0, hi < 100 ? hi : 100);
}

static void vx_define_double(OfxParamSetHandle set, int which, const char *label,
                             const char *hint, double def, double lo, double hi) {
    OfxPropertySetHandle p = vx_define(set, kOfxParamTypeDouble, which, label, hint);
    if (!p) return;
    vx_prop->propSetDouble(p, kOfxParamPropDefault, 0, def);
    vx_prop->propSetDouble(p, kOfxParamPropMin, 0, lo);
    vx_prop->propSetDouble(p, kOfxParamPropMax, 0, hi);
    vx_prop->propSetDouble(p, kOfxParamPropDisplayMin, 0, lo);
    vx_prop->propSetDouble(p, kOfxParamPropDisplayMax, 0, hi);
}

static OfxStatus vx_describe_in_context(OfxImageEffectHandle effect) {
    OfxPropertySetHandle c;
    if (vx_effect->clipDefine(effect, kOfxImageEffectSimpleSourceClipName, &c) != kOfxStatOK)
        return kOfxStatErrBadHandle;
    vx_prop->propSetString(c, kOfxImageEffectPropSupportedComponents, 0, kOfxImageComponentRGBA);
    vx_prop->propSetString(c, kOfxImageEffectPropSupportedComponents, 1, kOfxImageComponentRGB);
    vx_prop->propSetInt(c, kOfxImageEffectPropTemporalClipAccess, 0, 1);
    vx_prop->propSetInt(c, kOfxImageEffectPropSupportsTiles, 0, 0);
    if (vx_effect->clipDefine(effect, "Mask", &c) == kOfxStatOK) {
        vx_prop->propSetString(c, kOfxImageEffectPropSupportedComponents, 0,
                               kOfxImageComponentAlpha);
        vx_prop->propSetString(c, kOfxImageEffectPropSupportedComponents, 1,
                               kOfxImageComponentRGBA);
        vx_prop->propSetInt(c, kOfxImageClipPropOptional, 0, 1);
        vx_prop->propSetInt(c, kOfxImageClipPropIsMask, 0, 1);
        vx_prop->propSetInt(c, kOfxImageEffectPropTemporalClipAccess, 0, 1);
        vx_prop->propSetInt(c, kOfxImageEffectPropSupportsTiles, 0, 0);
    }
    if (vx_effect->clipDefine(effect, kOfxImageEffectOutputClipName, &c) != kOfxStatOK)
        return kOfxStatErrBadHandle;
    vx_prop->propSetString(c, kOfxImageEffectPropSupportedComponents, 0, kOfxImageComponentRGBA);
    vx_prop->propSetInt(c, kOfxImageEffectPropSupportsTiles, 0, 0);

    OfxParamSetHandle set;
    if (vx_effect->getParamSet(effect, &set) != kOfxStatOK) return kOfxStatErrBadHandle;
    static const char *const modes[] = {"Matte", "Source + alpha (straight)",
                                        "Source + alpha (premultiplied)", "Overlay", NULL};
    vx_define_choice(set, VXP_MODE, "Output", "What the effect outputs", modes, VX_MODE_STRAIGHT);
    vx_define_int(set, VXP_OUT_OBJ, "Output object",
                  "0: all objects merged; n: only object n", 0, 0, 255);
    vx_define_int(set, VXP_OBJ, "Object", "Object that new points on the viewer belong to", 1, 1,
                  255);
    static const char *const labels[] = {"Include", "Exclude", NULL};
    vx_define_choice(set, VXP_LABEL, "Point",
                     "New points include or exclude (Shift+click: the other one; "
                     "Ctrl+click on a point: remove it)",
                     labels, 0);
    vx_define(set, kOfxParamTypePushButton, VXP_CLEAR_FRAME, "Clear points on this frame",
              "Remove every point on the current frame");
    vx_define(set, kOfxParamTypePushButton, VXP_CLEAR_ALL, "Clear all points",
              "Remove every point on every frame");
    OfxPropertySetHandle p = vx_define(set, kOfxParamTypeString, VXP_POINTS, "Points",
                                       "frame obj label x y; per point (canonical coordinates)");
    if (p) {
        vx_prop->propSetInt(p, kOfxParamPropSecret, 0, 1);
        vx_prop->propSetString(p, kOfxParamPropDefault, 0, "");
        vx_prop->propSetString(p, kOfxParamPropStringMode, 0, kOfxParamStringIsSingleLine);
    }
    vx_define_int(set, VXP_MASK_OBJ, "Mask input object",
                  "Object that the Mask input prompts, on every frame where it is not empty", 1,
                  1, 255);
    vx_define_double(set, VXP_OPACITY, "Overlay opacity", "Tint strength in Overlay output", 0.5,
                     0, 1);
    p = vx_define(set, kOfxParamTypeString, VXP_MODEL, "Model", "A model id of `vosfx models list`");
    if (p) vx_prop->propSetString(p, kOfxParamPropDefault, 0, "sam2.1-tiny");
    static const char *const alphas[] = {"soft", "hard", NULL};
    vx_define_choice(set, VXP_ALPHA, "Alpha", "Soft (calibrated) or hard edges", alphas, 0);
    vx_define_double(set, VXP_THRESHOLD, "Threshold", "Logit threshold", 0, -50, 50);
    vx_define_double(set, VXP_SOFTNESS, "Softness", "Sigmoid temperature of soft alpha", 1, 0.01,
                     100);
    static const char *const edges[] = {"bilinear", "guided", NULL};
    vx_define_choice(set, VXP_EDGE, "Edge", "Edge refinement", edges, 1);
    vx_define_double(set, VXP_SHIFT, "Shift edge (px)", "Grow (+) or shrink (-)", 0, -256, 256);
    vx_define_double(set, VXP_FEATHER, "Feather (px)", "Soften the edge", 0, 0, 256);
    vx_define_double(set, VXP_CHOKE, "Choke", "Contract the soft edge (0 off, 1 hard)", 0, 0, 1);
    vx_define_int(set, VXP_FILL, "Fill holes (px²)", "Fill holes up to this area", 0, 0,
                  1000000000);
    vx_define_int(set, VXP_SPECKS, "Remove specks (px²)", "Remove specks up to this area", 0, 0,
                  1000000000);
    vx_define_double(set, VXP_TEMPORAL, "Temporal smoothing", "Reduce chatter; 0 off", 0, 0, 1);
    p = vx_define(set, kOfxParamTypeBoolean, VXP_NON_OVERLAP, "Non-overlapping objects",
                  "Objects never share alpha where they meet");
    if (p) vx_prop->propSetInt(p, kOfxParamPropDefault, 0, 1);
    vx_define(set, kOfxParamTypePushButton, VXP_STUDIO, "Pick in vosfx studio",
              "Open vosfx studio on the source file (set 'Source file' when the host gives "
              "none)");
    p = vx_define(set, kOfxParamTypeString, VXP_STUDIO_SRC, "Source file",
                  "The clip's media file, for vosfx studio");
    if (p) vx_prop->propSetString(p, kOfxParamPropStringMode, 0, kOfxParamStringIsFilePath);
    return kOfxStatOK;
}

/* ---- instances ------------------------------------------------------------------------------ */

static OfxStatus vx_create_instance(OfxImageEffectHandle effect) {
    VxInstance *in = vx_alloc(sizeof *in);
    if (!in) return kOfxStatErrMemory;
    memset(in, 0, sizeof *in);
    in->effect = effect;
    in->worker.sock = in->worker.shm_fd = -1;
    in->drag = -1;
    OfxPropertySetHandle props;
    if (vx_effect->getPropertySet(effect, &props) != kOfxStatOK ||
        vx_effect->getParamSet(effect, &in->params) != kOfxStatOK ||
        vx_effect->clipGetHandle(effect, kOfxImageEffectSimpleSourceClipName, &in->src, NULL) !=
            kOfxStatOK ||
        vx_effect->clipGetHandle(effect, kOfxImageEffectOutputClipName, &in->out, NULL) !=
            kOfxStatOK) {
        vx_free(in);
        return kOfxStatErrBadHandle;
    }
    if (vx_effect->clipGetHandle(effect, "Mask", &in->mask, NULL) != kOfxStatOK) in->mask = NULL;
    for (int i = 0; i < VXP_COUNT; i++) {
        if (vx_param->paramGetHandle(in->params, vx_param_names[i], &in->p[i], NULL) !=
            kOfxStatOK) {
            vx_free(in);
            return kOfxStatErrBadHandle;
        }
    }
    if (vx_thread && vx_thread->mutexCreate(&in->lock, 0) != kOfxStatOK) in->lock = NULL;
    vx_prop->propSetPointer(props, kOfxPropInstanceData, 0, in);
    return kOfxStatOK;
}

static OfxStatus vx_destroy_instance(OfxImageEffectHandle effect) {
    VxInstance *in = vx_instance(effect);
    if (!in) return kOfxStatErrBadHandle;
    vxw_stop(&in->worker, NULL, 0);
    vx_free(in->sent_config);
    vx_free(in->sent_points);
    vx_points_free(&in->drag_pts);
    if (vx_thread && in->lock) vx_thread->mutexDestroy(in->lock);
    OfxPropertySetHandle props;
    if (vx_effect->getPropertySet(effect, &props) == kOfxStatOK)
        vx_prop->propSetPointer(props, kOfxPropInstanceData, 0, NULL);
    vx_free(in);
    return kOfxStatOK;
}

static void vx_studio(VxInstance *in, OfxTime time) {
    const char *src = vx_get_string(in, VXP_STUDIO_SRC);
    if (!src[0]) {
        vx_report(in, kOfxMessageWarning,
                  "Pick in vosfx studio is unavailable: this host does not give the source "
                  "file's path. Enter it in 'Source file' (or open `vosfx studio FILE`).");
        return;
    }
    char err[VX_ERR_LEN];
    const char *const *cmd = vx_vosfx_command(err, sizeof err);
    if (!cmd) {
        vx_report(in, kOfxMessageError, "%s", err);
        return;
    }
    double range[2] = {0, 0};
    OfxPropertySetHandle cp;
    if (vx_effect->clipGetPropertySet(in->src, &cp) == kOfxStatOK)
        vx_prop->propGetDoubleN(cp, kOfxImageEffectPropFrameRange, 2, range);
    char start[32], end[32], frame[32];
    snprintf(start, sizeof start, "%d", 0);
    snprintf(end, sizeof end, "%d", (int)(range[1] - range[0]) + 1);
    snprintf(frame, sizeof frame, "%d", (int)floor(time - range[0] + 0.5));
    const char *argv[48];
    int n = 0;
    for (int i = 0; cmd[i] && n < 40; i++) argv[n++] = cmd[i];
    argv[n++] = "studio";
    argv[n++] = src; /* one argv entry: never parsed by a shell */
    argv[n++] = "--start";
    argv[n++] = start;
    argv[n++] = "--end";
    argv[n++] = end;
    argv[n++] = "--frame";
    argv[n++] = frame;
    argv[n] = NULL;
    if (vx_spawn_detached(argv, err, sizeof err) != 0)
        vx_report(in, kOfxMessageError, "vosfx studio: %s", err);
}

static OfxStatus vx_instance_changed(OfxImageEffectHandle effect, OfxPropertySetHandle inArgs) {
    VxInstance *in = vx_instance(effect);
    if (!in) return kOfxStatErrBadHandle;
    char *type = NULL, *name = NULL;
    double time = 0;
    vx_prop->propGetString(inArgs, kOfxPropType, 0, &type);
    vx_prop->propGetString(inArgs, kOfxPropName, 0, &name);
    vx_prop->propGetDouble(inArgs, kOfxPropTime, 0, &time);
    if (!type || !name || strcmp(type, "OfxTypeParameter") != 0) return kOfxStatReplyDefault;
    if (strcmp(name, vx_param_names[VXP_CLEAR_ALL]) == 0) {
        VxPoints none = {0};
        vx_set_points(in, &none, "Clear all points");
        return kOfxStatOK;
    }
    if (strcmp(name, vx_param_names[VXP_CLEAR_FRAME]) == 0) {
        VxPoints pts = {0};
        vx_get_points(in, &pts);
        int frame = (int)floor(time + 0.5);
        for (int i = pts.count - 1; i >= 0; i--)
            if (pts.items[i].frame == frame) vx_points_remove(&pts, i);
        vx_set_points(in, &pts, "Clear points on this frame");
        vx_points_free(&pts);
        return kOfxStatOK;
    }
    if (strcmp(name, vx_param_names[VXP_STUDIO]) == 0) {
        vx_studio(in, time);
        return kOfxStatOK;
    }
    in->failed_start = 0; /* a change: try the worker again, say again what is wrong */
    return kOfxStatReplyDefault;
}

static OfxStatus vx_clip_preferences(OfxImageEffectHandle effect, OfxPropertySetHandle outArgs) {
    VxInstance *in = vx_instance(effect);
    if (!in) return kOfxStatErrBadHandle;
    int mode = vx_get_int(in, VXP_MODE);
    const char *premult = mode == VX_MODE_PREMULT    ? kOfxImagePreMultiplied
                          : mode == VX_MODE_STRAIGHT ? kOfxImageUnPreMultiplied
                                                     : kOfxImageOpaque;
    vx_prop->propSetString(outArgs, kOfxImageEffectPropPreMultiplication, 0, premult);
    vx_prop->propSetString(outArgs, "OfxImageClipPropComponents_Output", 0,
                           kOfxImageComponentRGBA);
    vx_prop->propSetString(outArgs, "OfxImageClipPropComponents_Source", 0,
                           kOfxImageComponentRGBA);
    return kOfxStatOK;
}

static OfxStatus vx_regions_of_interest(OfxImageEffectHandle effect, OfxPropertySetHandle inArgs,
                                        OfxPropertySetHandle outArgs) {
    VxInstance *in = vx_instance(effect);
    if (!in) return kOfxStatErrBadHandle;
    double time = 0;
    vx_prop->propGetDouble(inArgs, kOfxPropTime, 0, &time);
    OfxRectD rod;
    if (vx_effect->clipGetRegionOfDefinition(in->src, time, &rod) == kOfxStatOK)
        vx_prop->propSetDoubleN(outArgs, "OfxImageClipPropRoI_Source", 4, &rod.x1);
    if (in->mask && vx_effect->clipGetRegionOfDefinition(in->mask, time, &rod) == kOfxStatOK)
        vx_prop->propSetDoubleN(outArgs, "OfxImageClipPropRoI_Mask", 4, &rod.x1);
    return kOfxStatOK; /* whole frames: the model never sees a tile */
}

/* ---- images ---------------------------------------------------------------------------------- */

typedef struct VxImg {
    OfxPropertySetHandle handle;
    unsigned char *data;
    OfxRectI b;
    int rowbytes, depth, nc; /* bytes per channel; channels */
} VxImg;

static int vx_img_open(OfxImageClipHandle clip, OfxTime t, const OfxRectD *region, VxImg *im) {
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

static void vx_img_close(VxImg *im) {
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

static inline float vx_clamp01(float v) { return v < 0.f ? 0.f : v > 1.f ? 1.f : v; }

static inline void vx_write(VxImg *im, int x, int y, const float v[4]) {
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

/* the Source's frame area at the render scale, in pixel coordinates (x1, y1 inclusive) */
typedef struct VxGeom {
    int x1, y1, w, h;       /* at render scale */
    int full_w, full_h;     /* at render scale 1: the worker's frame size */
    OfxRectD rod;           /* canonical */
    double par, sx, sy;
    double first, last;     /* the Source's frame range (OFX times) */
    double fps;
} VxGeom;

static int vx_geometry(VxInstance *in, OfxTime t, double sx, double sy, VxGeom *g) {
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
    g->full_w = (int)floor((g->rod.x2 - g->rod.x1) / g->par + 0.5);
    g->full_h = (int)floor(g->rod.y2 - g->rod.y1 + 0.5);
    g->x1 = (int)floor(g->rod.x1 * g->sx / g->par + 0.5);
    g->y1 = (int)floor(g->rod.y1 * g->sy + 0.5);
    g->w = (int)floor(g->full_w * g->sx + 0.5);
    g->h = (int)floor(g->full_h * g->sy + 0.5);
    if (g->full_w <= 0 || g->full_h <= 0 || g->w <= 0 || g->h <= 0 || g->full_w > 32768 ||
        g->full_h > 32768)
        return -1;
    return 0;
}

/* ---- the conversation with the worker ---------------------------------------------------------- */

enum { VX_R_MATTE, VX_R_PASS, VX_R_FAIL, VX_R_ABORT };

static int vx_timeout_ms(void) {
    const char *s = getenv("VOSFX_OFX_TIMEOUT_S");
    int v = s ? atoi(s) : 0;
    return (v > 0 ? v : VX_TIMEOUT_DEFAULT_S) * 1000;
}

static char *vx_config_json(VxInstance *in, const VxGeom *g) {
    VxBuf b = {0};
    static const char *const alphas[] = {"soft", "hard"};
    static const char *const edges[] = {"bilinear", "guided"};
    int alpha = vx_get_int(in, VXP_ALPHA), edge = vx_get_int(in, VXP_EDGE);
    vx_buf_add(&b, "{\"clip\": {\"width\": %d, \"height\": %d, \"frames\": %d, \"fps\": %.6f}, ",
               g->full_w, g->full_h, (int)(g->last - g->first) + 1, g->fps > 0 ? g->fps : 24.0);
    vx_buf_add(&b, "\"model\": {\"name\": ");
    vx_buf_json_string(&b, vx_get_string(in, VXP_MODEL)[0] ? vx_get_string(in, VXP_MODEL)
                                                             : "sam2.1-tiny");
    vx_buf_add(&b, "}, \"refine\": {\"alpha\": \"%s\", \"threshold\": %.6g, \"softness\": %.6g, "
                   "\"edge\": \"%s\", \"shift_edge_px\": %.6g, \"feather_px\": %.6g, "
                   "\"choke\": %.6g, \"fill_holes_px2\": %d, \"remove_specks_px2\": %d, "
                   "\"temporal_strength\": %.6g, \"non_overlap\": %s}, ",
               alphas[alpha == 1], vx_get_double(in, VXP_THRESHOLD),
               vx_get_double(in, VXP_SOFTNESS), edges[edge != 0], vx_get_double(in, VXP_SHIFT),
               vx_get_double(in, VXP_FEATHER), vx_get_double(in, VXP_CHOKE),
               vx_get_int(in, VXP_FILL), vx_get_int(in, VXP_SPECKS),
               vx_get_double(in, VXP_TEMPORAL), vx_get_int(in, VXP_NON_OVERLAP) ? "true" : "false");
    vx_buf_add(&b, "\"mask_obj\": %d}", vx_get_int(in, VXP_MASK_OBJ));
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
    vx_buf_add(&b, "{\"points\": [");
    int n = 0;
    for (int i = 0; i < pts.count; i++) {
        const VxPoint *p = &pts.items[i];
        if (p->frame < g->first || p->frame > g->last) continue;
        vx_buf_add(&b, "%s[%d, %d, %d, %.3f, %.3f]", n++ ? ", " : "", (int)(p->frame - g->first),
                   p->obj, p->label, (p->x - g->rod.x1) / g->par, g->rod.y2 - p->y);
    }
    vx_buf_add(&b, "]}");
    vx_points_free(&pts);
    if (b.oom) {
        vx_free(b.s);
        return NULL;
    }
    return b.s;
}

/* one source frame (and its Mask plane) into the shared memory, top-down; returns bytes */
static size_t vx_pack_frame(VxInstance *in, const VxGeom *g, int index, int with_mask,
                            int *format, int *has_mask) {
    OfxTime t = g->first + index;
    VxImg im;
    size_t npx = (size_t)g->w * g->h;
    unsigned char *dst = in->worker.shm;
    *has_mask = 0;
    *format = VX_FMT_RGB8;
    if (vx_img_open(in->src, t, &g->rod, &im) != 0) {
        memset(dst, 0, npx * 3); /* the host has no image there: black */
    } else {
        *format = im.depth == 1 ? VX_FMT_RGB8 : VX_FMT_RGB16;
        for (int r = 0; r < g->h; r++) {
            int y = g->y1 + g->h - 1 - r;
            for (int c = 0; c < g->w; c++) {
                float v[4];
                vx_read(&im, g->x1 + c, y, v);
                size_t o = ((size_t)r * g->w + c) * 3;
                if (*format == VX_FMT_RGB8) {
                    for (int k = 0; k < 3; k++) dst[o + k] = (unsigned char)(vx_clamp01(v[k]) * 255.f + .5f);
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
    if (!with_mask) return rgb_bytes;
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
    return rgb_bytes + npx;
}

static int vx_worker_dead(VxInstance *in, const char *what) {
    char how[128];
    char log[sizeof in->worker.log_path];
    snprintf(log, sizeof log, "%s", in->worker.log_path);
    vxw_stop(&in->worker, how, sizeof how);
    vx_free(in->sent_config), vx_free(in->sent_points);
    in->sent_config = in->sent_points = NULL;
    vx_report(in, kOfxMessageError,
              "vosfx worker failed (%s; it %s). The image passes through; the next render "
              "starts a new worker. Log: %s",
              what, how[0] ? how : "ended", log);
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
        if (m.type == VX_ERROR) {
            vx_report(in, kOfxMessageError, "vosfx: %s", text);
            return VX_R_FAIL;
        }
        return vx_worker_dead(in, "unexpected reply");
    }
}

static int vx_ensure_worker(VxInstance *in) {
    if (in->worker.pid > 0) return VX_R_MATTE;
    if (in->failed_start) return VX_R_FAIL; /* said once already; waits for a change */
    char err[VX_ERR_LEN];
    if (vxw_start(&in->worker, err, sizeof err) != 0) {
        in->failed_start = 1;
        vx_report(in, kOfxMessageError, "vosfx Matte: %s. The image passes through.", err);
        return VX_R_FAIL;
    }
    VxMsg m;
    char text[256];
    if (vxw_recv(&in->worker, &m, text, sizeof text, VX_TIMEOUT_READY_MS, err, sizeof err) != 0 ||
        m.type != VX_READY) {
        in->failed_start = 1;
        return vx_worker_dead(in, m.type == VX_READY ? err : "it did not start");
    }
    return VX_R_MATTE;
}

/* sync settings and points, ask for frame t's matte, serve its frame requests */
static int vx_conversation(VxInstance *in, const VxGeom *g, int index, int *progress_started) {
    int timeout = vx_timeout_ms();
    if (vx_ensure_worker(in) != VX_R_MATTE) return VX_R_FAIL;
    char err[VX_ERR_LEN];
    /* RGB16 frame + mask plane, or float alpha: 7 bytes a pixel at most, at full size */
    if (vxw_reserve(&in->worker, (size_t)g->full_w * g->full_h * 8 + 4096, err, sizeof err) != 0)
        return vx_worker_dead(in, err);
    char *cfg = vx_config_json(in, g), *pts = vx_points_json(in, g);
    int r = VX_R_MATTE;
    if (!cfg || !pts) {
        vx_report(in, kOfxMessageError, "vosfx Matte: out of memory");
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
    if (vxw_send(&in->worker, VX_RENDER, index, with_mask, vx_get_int(in, VXP_OUT_OBJ),
                 (uint32_t)g->w, (uint32_t)g->h, 0, 0, NULL) != 0)
        return vx_worker_dead(in, "cannot send the render request");
    int cancel = 0;
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
            int fmt, has_mask;
            size_t n = vx_pack_frame(in, g, m.frame, with_mask, &fmt, &has_mask);
            if (vxw_send(&in->worker, VX_FRAME, m.frame, has_mask, 0, (uint32_t)g->w,
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
            if (m.format == VX_FMT_NONE) return VX_R_PASS; /* no prompts yet */
            if (m.format != VX_FMT_ALPHA_F32 || (int)m.width != g->w || (int)m.height != g->h ||
                m.shm_bytes < (uint64_t)g->w * g->h * 4)
                return vx_worker_dead(in, "a matte of the wrong size");
            vx_clear_report(in);
            return VX_R_MATTE;
        case VX_ERROR:
            vx_report(in, kOfxMessageError, "vosfx: %s", text);
            return VX_R_FAIL;
        case VX_CANCELLED:
            return VX_R_ABORT;
        default:
            return vx_worker_dead(in, "unexpected message");
        }
    }
}

/* ---- render ------------------------------------------------------------------------------------ */

static OfxStatus vx_render(OfxImageEffectHandle effect, OfxPropertySetHandle inArgs) {
    VxInstance *in = vx_instance(effect);
    if (!in) return kOfxStatErrBadHandle;
    OfxTime t = 0;
    OfxRectI win;
    double scale[2] = {1, 1};
    vx_prop->propGetDouble(inArgs, kOfxPropTime, 0, &t);
    vx_prop->propGetIntN(inArgs, kOfxImageEffectPropRenderWindow, 4, &win.x1);
    vx_prop->propGetDoubleN(inArgs, kOfxImageEffectPropRenderScale, 2, scale);

    VxImg out, src;
    int rs = vx_img_open(in->out, t, NULL, &out);
    if (rs != 0) return rs == -2 ? kOfxStatErrImageFormat : kOfxStatFailed;
    if (vx_img_open(in->src, t, NULL, &src) != 0) {
        /* no source: transparent black, as the spec asks of a missing input */
        float zero[4] = {0, 0, 0, 0};
        for (int y = win.y1; y < win.y2; y++)
            for (int x = win.x1; x < win.x2; x++) vx_write(&out, x, y, zero);
        vx_img_close(&out);
        return kOfxStatOK;
    }
    vx_lock(in);
    VxGeom g;
    int result = VX_R_FAIL, progress_started = 0;
    if (vx_geometry(in, t, scale[0], scale[1], &g) != 0)
        vx_report(in, kOfxMessageError, "vosfx Matte: the Source has no usable frame area");
    else if (t < g.first - 0.5 || t > g.last + 0.5)
        result = VX_R_PASS;
    else
        result = vx_conversation(in, &g, (int)floor(t - g.first + 0.5), &progress_started);
    if (progress_started) vx_progress->progressEnd(in->effect);

    int mode = vx_get_int(in, VXP_MODE);
    float opacity = (float)vx_get_double(in, VXP_OPACITY);
    static const float tint[3] = {255 / 255.f, 64 / 255.f, 64 / 255.f}; /* vosfx's object 1 */
    const float *alpha = result == VX_R_MATTE ? (const float *)in->worker.shm : NULL;
    for (int y = win.y1; y < win.y2; y++) {
        int r = g.y1 + g.h - 1 - y;
        for (int x = win.x1; x < win.x2; x++) {
            float v[4];
            vx_read(&src, x, y, v);
            if (alpha) {
                int c = x - g.x1;
                float a = (r >= 0 && r < g.h && c >= 0 && c < g.w) ? alpha[(size_t)r * g.w + c]
                                                                  : 0.f;
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
            vx_write(&out, x, y, v);
        }
    }
    vx_unlock(in);
    vx_img_close(&src);
    vx_img_close(&out);
    return kOfxStatOK; /* failures pass the image through and were reported */
}

static OfxStatus vx_purge(OfxImageEffectHandle effect) {
    VxInstance *in = vx_instance(effect);
    if (!in) return kOfxStatErrBadHandle;
    vx_lock(in);
    vxw_stop(&in->worker, NULL, 0); /* the worker holds the caches; the host asked to free them */
    vx_free(in->sent_config), vx_free(in->sent_points);
    in->sent_config = in->sent_points = NULL;
    vx_unlock(in);
    return kOfxStatOK;
}

/* ---- entry points ------------------------------------------------------------------------------- */

static OfxStatus vx_load(void) {
    if (!vx_host) return kOfxStatErrMissingHostFeature;
    vx_prop = vx_host->fetchSuite(vx_host->host, kOfxPropertySuite, 1);
    vx_effect = vx_host->fetchSuite(vx_host->host, kOfxImageEffectSuite, 1);
    vx_param = vx_host->fetchSuite(vx_host->host, kOfxParameterSuite, 1);
    vx_mem = vx_host->fetchSuite(vx_host->host, kOfxMemorySuite, 1);
    vx_thread = vx_host->fetchSuite(vx_host->host, kOfxMultiThreadSuite, 1);
    vx_msg2 = vx_host->fetchSuite(vx_host->host, kOfxMessageSuite, 2);
    vx_msg1 = vx_host->fetchSuite(vx_host->host, kOfxMessageSuite, 1);
    vx_interact = vx_host->fetchSuite(vx_host->host, kOfxInteractSuite, 1);
    vx_progress = vx_host->fetchSuite(vx_host->host, kOfxProgressSuite, 1);
    if (!vx_prop || !vx_effect || !vx_param) return kOfxStatErrMissingHostFeature;
    return kOfxStatOK;
}

static OfxStatus vx_main(const char *action, const void *handle, OfxPropertySetHandle inArgs,
                         OfxPropertySetHandle outArgs) {
    OfxImageEffectHandle effect = (OfxImageEffectHandle)handle;
    if (!action) return kOfxStatErrBadHandle;
    if (strcmp(action, kOfxActionLoad) == 0) return vx_load();
    if (!vx_prop || !vx_effect || !vx_param) return kOfxStatFailed; /* not loaded */
    if (strcmp(action, kOfxActionUnload) == 0) return kOfxStatOK;
    if (!effect) return kOfxStatErrBadHandle;
    if (strcmp(action, kOfxActionDescribe) == 0) return vx_describe(effect);
    if (strcmp(action, kOfxImageEffectActionDescribeInContext) == 0)
        return vx_describe_in_context(effect);
    if (strcmp(action, kOfxActionCreateInstance) == 0) return vx_create_instance(effect);
    if (strcmp(action, kOfxActionDestroyInstance) == 0) return vx_destroy_instance(effect);
    if (strcmp(action, kOfxImageEffectActionRender) == 0)
        return inArgs ? vx_render(effect, inArgs) : kOfxStatErrBadHandle;
    if (strcmp(action, kOfxActionInstanceChanged) == 0)
        return inArgs ? vx_instance_changed(effect, inArgs) : kOfxStatErrBadHandle;
    if (strcmp(action, kOfxImageEffectActionGetClipPreferences) == 0)
        return outArgs ? vx_clip_preferences(effect, outArgs) : kOfxStatErrBadHandle;
    if (strcmp(action, kOfxImageEffectActionGetRegionsOfInterest) == 0)
        return inArgs && outArgs ? vx_regions_of_interest(effect, inArgs, outArgs)
                                 : kOfxStatErrBadHandle;
    if (strcmp(action, kOfxActionPurgeCaches) == 0) return vx_purge(effect);
    return kOfxStatReplyDefault;
}

static void vx_set_host(OfxHost *host) { vx_host = host; }

static OfxPlugin vx_plugin = {kOfxImageEffectPluginApi, kOfxImageEffectPluginApiVersion,
                              VX_PLUGIN_ID, 1, 0, vx_set_host, vx_main};

VX_OFX_EXPORT int OfxGetNumberOfPlugins(void) { return 1; }

VX_OFX_EXPORT OfxPlugin *OfxGetPlugin(int nth) { return nth == 0 ? &vx_plugin : NULL; }
