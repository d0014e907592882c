/* vosfx Matte: an OpenFX image effect that mattes its Source with SAM 2 through a vosfx worker
 * process (vosfx_worker.c). This file: the plug-in entry points, description, parameters,
 * instances and the render. The overlay (points on the viewer) is in vosfx_overlay.c.
 *
 * Coordinates: OFX images are bottom-up with pixel coordinates at the render scale; the worker
 * works top-down at full size (render scale 1). Points are stored in canonical coordinates. */
#define _GNU_SOURCE
#include "vosfx_ofx.h"

#include <math.h>
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

static VxLock vx_fallback_lock = VX_LOCK_INIT;


const char *const vx_param_names[VXP_COUNT] = {
    "outputMode", "outputObject", "object", "pointLabel", "clearFrame", "clearAll", "points",
    "maskObject", "overlayOpacity", "model", "alpha", "threshold", "softness", "edge",
    "shiftEdge", "feather", "choke", "clipBlack", "clipWhite", "fillHoles", "removeSpecks",
    "temporal", "nonOverlap", "pickInStudio", "studioSource"};

const char *const vx_param_labels[VXP_COUNT] = {
    "Output", "Output object", "Object", "Point", "Clear points on this frame",
    "Clear all points", "Points", "Mask input object", "Overlay opacity", "Model", "Alpha",
    "Threshold", "Softness", "Edge", "Shift edge (px)", "Feather (px)", "Choke", "Clip black",
    "Clip white", "Fill holes (px²)", "Remove specks (px²)", "Temporal smoothing",
    "Non-overlapping objects", "Pick in vosfx studio", "Source file"};

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

int vx_utf8_valid(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int more = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2
                 : (c & 0xF8) == 0xF0 ? 3 : -1;
        if (more < 0 || (more == 1 && c < 0xC2) || (c == 0xF4 && p[1] > 0x8F) || c > 0xF4)
            return 0; /* a stray continuation byte, an overlong form, past U+10FFFF */
        if (c == 0xE0 && p[1] < 0xA0) return 0; /* overlong */
        if (c == 0xED && p[1] > 0x9F) return 0; /* UTF-16 surrogates */
        if (c == 0xF0 && p[1] < 0x90) return 0; /* overlong */
        for (int k = 1; k <= more; k++)
            if ((p[k] & 0xC0) != 0x80) return 0;
        p += 1 + more;
    }
    return 1;
}

void vx_printable(char *dst, size_t cap, const char *src, size_t n) {
    if (!cap) return;
    size_t o = 0;
    for (size_t i = 0; i < n && src[i];) {
        unsigned char c = (unsigned char)src[i];
        size_t len = 1;
        char one[5] = {0};
        if (c < 0x20 || c == 0x7F) one[0] = ' ';
        else if (c < 0x80) one[0] = (char)c;
        else {
            len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
            if (len > 1 && i + len <= n) {
                memcpy(one, src + i, len);
                if (!vx_utf8_valid(one)) len = 1, one[0] = '?', one[1] = '\0';
            } else len = 1, one[0] = '?';
        }
        size_t k = strlen(one);
        if (o + k + 4 > cap) { /* no room for it and "...": end the line there */
            if (o + 4 <= cap) memcpy(dst + o, "...", 3), o += 3;
            break;
        }
        memcpy(dst + o, one, k);
        o += k;
        i += len;
    }
    dst[o] = '\0';
}

#ifdef _WIN32
/* Windows: this thread's own locale for the moment (the host's other threads keep theirs) */
VxNumbers vx_numbers_begin(void) {
    VxNumbers previous;
    previous.config = _configthreadlocale(_ENABLE_PER_THREAD_LOCALE);
    const char *now = setlocale(LC_NUMERIC, NULL);
    snprintf(previous.numeric, sizeof previous.numeric, "%s", now ? now : "C");
    setlocale(LC_NUMERIC, "C");
    return previous;
}

void vx_numbers_end(VxNumbers previous) {
    setlocale(LC_NUMERIC, previous.numeric);
    if (previous.config != -1) _configthreadlocale(previous.config);
}
#else
static locale_t vx_c_numeric;
static pthread_once_t vx_c_numeric_once = PTHREAD_ONCE_INIT;

static void vx_make_c_numeric(void) { vx_c_numeric = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

VxNumbers vx_numbers_begin(void) {
    pthread_once(&vx_c_numeric_once, vx_make_c_numeric);
    return vx_c_numeric ? uselocale(vx_c_numeric) : (locale_t)0;
}

void vx_numbers_end(VxNumbers previous) {
    if (previous) uselocale(previous);
}
#endif

void vx_lock(VxInstance *in) {
    if (vx_thread && in->lock) vx_thread->mutexLock(in->lock);
    else vx_lock_take(&vx_fallback_lock);
}

void vx_unlock(VxInstance *in) {
    if (vx_thread && in->lock) vx_thread->mutexUnLock(in->lock);
    else vx_lock_give(&vx_fallback_lock);
}

/* errors and notes to the user through the host's message suite (persistent when it can, so a
 * scrub does not pop a dialog per frame) */
static void vx_post(VxInstance *in, const char *type, int persistent, const char *fmt,
                    va_list ap) {
    char text[VX_ERR_LEN];
    vsnprintf(text, sizeof text, fmt, ap);
    /* the effect's name once, as the host shows it; the message id is an id, not shown */
    void *handle = in ? (void *)in->effect : NULL;
    if (vx_msg2 && handle && persistent && strcmp(type, kOfxMessageMessage) != 0 &&
        strcmp(type, kOfxMessageLog) != 0) {
        vx_msg2->setPersistentMessage(handle, type, VX_PLUGIN_ID, "vosfx Matte: %s", text);
        in->notice = 0; /* replaced; the caller marks a note as one */
        in->model_note[0] = '\0';
    }
    else if (vx_msg2)
        vx_msg2->message(handle, type, VX_PLUGIN_ID, "vosfx Matte: %s", text);
    else if (vx_msg1)
        vx_msg1->message(handle, type, VX_PLUGIN_ID, "vosfx Matte: %s", text);
}

void vx_report(VxInstance *in, const char *type, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vx_post(in, type, 1, fmt, ap);
    va_end(ap);
}

void vx_say(VxInstance *in, const char *type, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vx_post(in, type, 0, fmt, ap);
    va_end(ap);
}

void vx_clear_report(VxInstance *in) {
    if (vx_msg2 && in) vx_msg2->clearPersistentMessage(in->effect);
    if (in) {
        in->notice = 0;
        if (vx_msg2) in->model_note[0] = '\0'; /* a dialog said once is not said again */
    }
}

void vx_model_note(VxInstance *in, const char *text) {
    if (strcmp(in->model_note, text) == 0) return; /* up already (or said once) */
    vx_report(in, kOfxMessageWarning, "%s", text);
    snprintf(in->model_note, sizeof in->model_note, "%s", text);
}

VxInstance *vx_instance(OfxImageEffectHandle effect) {
    OfxPropertySetHandle props;
    void *data = NULL;
    if (!effect || vx_effect->getPropertySet(effect, &props) != kOfxStatOK) return NULL;
    if (vx_prop->propGetPointer(props, kOfxPropInstanceData, 0, &data) != kOfxStatOK) return NULL;
    return data;
}

int vx_get_int(VxInstance *in, int p) {
    int v = 0;
    vx_param->paramGetValue(in->p[p], &v);
    return v;
}

double vx_get_double(VxInstance *in, int p) {
    double v = 0;
    vx_param->paramGetValue(in->p[p], &v);
    return v;
}

const char *vx_get_string(VxInstance *in, int p) {
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
                                      const char *hint) {
    OfxPropertySetHandle p = NULL;
    if (vx_param->paramDefine(set, type, vx_param_names[which], &p) != kOfxStatOK) return NULL;
    vx_prop->propSetString(p, kOfxPropLabel, 0, vx_param_labels[which]);
    vx_prop->propSetString(p, kOfxParamPropHint, 0, hint);
    vx_prop->propSetString(p, kOfxParamPropScriptName, 0, vx_param_names[which]);
    if (strcmp(type, kOfxParamTypePushButton) != 0)
        vx_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);
    return p;
}

static void vx_define_choice(OfxParamSetHandle set, int which,
                             const char *hint, const char *const *options, int def) {
    OfxPropertySetHandle p = vx_define(set, kOfxParamTypeChoice, which, hint);
    if (!p) return;
    for (int i = 0; options[i]; i++) vx_prop->propSetString(p, kOfxParamPropChoiceOption, i, options[i]);
    vx_prop->propSetInt(p, kOfxParamPropDefault, 0, def);
}

static void vx_define_int(OfxParamSetHandle set, int which, const char *hint,
                          int def, int lo, int hi) {
    OfxPropertySetHandle p = vx_define(set, kOfxParamTypeInteger, which, hint);
    if (!p) return;
    vx_prop->propSetInt(p, kOfxParamPropDefault, 0, def);
    vx_prop->propSetInt(p, kOfxParamPropMin, 0, lo);
    vx_prop->propSetInt(p, kOfxParamPropMax, 0, hi);
    vx_prop->propSetInt(p, kOfxParamPropDisplayMin, 0, lo);
    vx_prop->propSetInt(p, kOfxParamPropDisplayMax, 0, hi < 100 ? hi : 100);
}

static void vx_define_double(OfxParamSetHandle set, int which,
                             const char *hint, double def, double lo, double hi) {
    OfxPropertySetHandle p = vx_define(set, kOfxParamTypeDouble, which, hint);
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
    vx_define_choice(set, VXP_MODE, "What the effect outputs", modes, VX_MODE_STRAIGHT);
    vx_define_int(set, VXP_OUT_OBJ,
                  "0: all objects merged; n: only object n", 0, 0, 255);
    vx_define_int(set, VXP_OBJ, "Object that new points on the viewer belong to", 1, 1,
                  255);
    static const char *const labels[] = {"Include", "Exclude", NULL};
    vx_define_choice(set, VXP_LABEL,
                     "New points include or exclude (Shift+click: the other one; "
                     "Ctrl+click on a point: remove it)",
                     labels, 0);
    vx_define(set, kOfxParamTypePushButton, VXP_CLEAR_FRAME,
              "Remove every point on the current frame");
    vx_define(set, kOfxParamTypePushButton, VXP_CLEAR_ALL,
              "Remove every point on every frame");
    OfxPropertySetHandle p = vx_define(set, kOfxParamTypeString, VXP_POINTS,
                                       "frame obj label x y; per point (canonical coordinates)");
    if (p) {
        vx_prop->propSetInt(p, kOfxParamPropSecret, 0, 1);
        vx_prop->propSetString(p, kOfxParamPropDefault, 0, "");
        vx_prop->propSetString(p, kOfxParamPropStringMode, 0, kOfxParamStringIsSingleLine);
    }
    vx_define_int(set, VXP_MASK_OBJ,
                  "Object that the Mask input prompts, on every frame where it is not empty", 1,
                  1, 255);
    vx_define_double(set, VXP_OPACITY, "Tint strength in Overlay output", 0.5,
                     0, 1);
    p = vx_define(set, kOfxParamTypeString, VXP_MODEL, "A model id of `vosfx models list`");
    if (p) vx_prop->propSetString(p, kOfxParamPropDefault, 0, "sam2.1-tiny");
    static const char *const alphas[] = {"soft", "hard", NULL};
    vx_define_choice(set, VXP_ALPHA, "Soft (calibrated) or hard edges", alphas, 0);
    vx_define_double(set, VXP_THRESHOLD, "Logit threshold", 0, -50, 50);
    vx_define_double(set, VXP_SOFTNESS, "Sigmoid temperature of soft alpha", 1, 0.01,
                     100);
    static const char *const edges[] = {"bilinear", "guided", NULL};
    vx_define_choice(set, VXP_EDGE, "Edge refinement", edges, 1);
    vx_define_double(set, VXP_SHIFT, "Grow (+) or shrink (-)", 0, -256, 256);
    vx_define_double(set, VXP_FEATHER, "Soften the edge", 0, 0, 256);
    vx_define_double(set, VXP_CHOKE, "Contract the soft edge (0 off, 1 hard)", 0, 0, 1);
    vx_define_double(set, VXP_CLIP_BLACK,
                     "Alpha at or below this becomes 0 (below Clip white)", 0, 0, 1);
    vx_define_double(set, VXP_CLIP_WHITE,
                     "Alpha at or above this becomes 1 (above Clip black)", 1, 0, 1);
    vx_define_int(set, VXP_FILL, "Fill holes up to this area", 0, 0,
                  1000000000);
    vx_define_int(set, VXP_SPECKS, "Remove specks up to this area", 0, 0,
                  1000000000);
    vx_define_double(set, VXP_TEMPORAL, "Reduce chatter; 0 off", 0, 0, 1);
    p = vx_define(set, kOfxParamTypeBoolean, VXP_NON_OVERLAP,
                  "Objects never share alpha where they meet");
    if (p) vx_prop->propSetInt(p, kOfxParamPropDefault, 0, 1);
    vx_define(set, kOfxParamTypePushButton, VXP_STUDIO,
              "Open vosfx studio on the source file (set 'Source file' when the host gives "
              "none)");
    p = vx_define(set, kOfxParamTypeString, VXP_STUDIO_SRC,
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
    vxw_init(&in->worker);
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
    const char *argv[56];
    int n = 0;
    for (int i = 0; cmd[i] && n < 40; i++) argv[n++] = cmd[i];
    argv[n++] = "studio";
    argv[n++] = "--start";
    argv[n++] = start;
    argv[n++] = "--end";
    argv[n++] = end;
    argv[n++] = "--frame";
    argv[n++] = frame;
    const char *model = vx_get_string(in, VXP_MODEL);
    if (model[0]) { /* the effect's model: the studio shows the masks the renders will give */
        argv[n++] = "--model";
        argv[n++] = model;
    }
    /* one argv entry, never parsed by a shell; after "--", so a file named "-x" or "--help"
     * is the clip, not an option */
    argv[n++] = "--";
    argv[n++] = src;
    argv[n] = NULL;
    if (vx_spawn_detached(argv, err, sizeof err) != 0)
        vx_report(in, kOfxMessageError, "Pick in vosfx studio: %s", err);
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
    if (in->notice) vx_clear_report(in); /* "the Source changed" was seen: the user is at work */
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

/* ---- render ------------------------------------------------------------------------------------ */

/* Sequence renders: hosts say on begin and end whether the sequence is interactive (a viewer)
 * or a proper sequence render (a delivery: Resolve's Deliver page, Nuke's Write, Natron's
 * render). Counted, not a flag: a host may nest a viewer sequence in a render's or the reverse. */
static OfxStatus vx_sequence(OfxImageEffectHandle effect, OfxPropertySetHandle inArgs, int step) {
    VxInstance *in = vx_instance(effect);
    if (!in) return kOfxStatErrBadHandle;
    int interactive = -1;
    if (vx_prop->propGetInt(inArgs, kOfxPropIsInteractive, 0, &interactive) != kOfxStatOK)
        return kOfxStatOK; /* the host did not say: the render decides alone */
    vx_lock(in);
    int *n = interactive ? &in->interactive_seqs : &in->final_seqs;
    *n += step;
    if (*n < 0) *n = 0; /* an end without its begin */
    vx_unlock(in);
    return kOfxStatOK;
}

/* Does this render deliver frames (a failure must fail it) or feed a viewer (show the Source
 * and the message)? Final when the host is a background (render-only) host or a sequence it
 * called not interactive is open; interactive when the render says it answers a user in a
 * GUI (kOfxImageEffectPropInteractiveRenderStatus) or an interactive sequence is open; final
 * when the host says neither: a viewer then shows the failure, a delivery never hides one. */
static int vx_is_final_render(VxInstance *in, OfxPropertySetHandle inArgs) {
    int v = 0;
    if (vx_prop->propGetInt(vx_host->host, kOfxImageEffectHostPropIsBackground, 0, &v) ==
            kOfxStatOK &&
        v)
        return 1;
    if (in->final_seqs > 0) return 1;
    v = 0;
    if (vx_prop->propGetInt(inArgs, kOfxImageEffectPropInteractiveRenderStatus, 0, &v) ==
            kOfxStatOK &&
        v)
        return 0;
    return in->interactive_seqs > 0 ? 0 : 1;
}

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
    vx_lock(in);
    in->final_render = vx_is_final_render(in, inArgs);
    OfxStatus status = kOfxStatOK;
    if (vx_img_open(in->src, t, NULL, &src) != 0) {
        /* no Source image: transparent black, as the spec asks of a missing input; inside
         * the Source's frames that is the host's failure, and a delivery must not hide it */
        VxGeom g;
        int inside = vx_geometry(in, t, scale[0], scale[1], &g) != -1 && t >= g.first - 0.5 &&
                     t <= g.last + 0.5;
        if (inside) {
            vx_report(in, kOfxMessageError,
                      "the host gave no Source image for frame %g. %s.", t,
                      in->final_render ? "The render stops at this frame, so that no frame "
                                         "without its matte is delivered"
                                       : "The output is transparent black");
            if (in->final_render) status = kOfxStatFailed;
        }
        vx_unlock(in);
        float zero[4] = {0, 0, 0, 0};
        for (int y = win.y1; y < win.y2; y++)
            for (int x = win.x1; x < win.x2; x++) vx_write(&out, x, y, zero);
        vx_img_close(&out);
        return status;
    }
    VxGeom g;
    int result = VX_R_FAIL, progress_started = 0;
    int geometry = vx_geometry(in, t, scale[0], scale[1], &g);
    if (geometry == -2) {
        vx_report(in, kOfxMessageError,
                  "the Source is %.0f x %.0f pixels; the effect mattes frames up to %d pixels "
                  "wide and high. %s.",
                  (g.rod.x2 - g.rod.x1) / g.par, g.rod.y2 - g.rod.y1, VX_MAX_SIDE,
                  vx_outcome(in));
    } else if (geometry != 0) {
        vx_report(in, kOfxMessageError, "the Source has no usable frame area (%g x %g). %s.",
                  g.rod.x2 - g.rod.x1, g.rod.y2 - g.rod.y1, vx_outcome(in));
    } else if (t < g.first - 0.5 || t > g.last + 0.5) {
        result = VX_R_PASS;
    } else {
        float fp[VX_FP_FLOATS];
        vx_fingerprint(&src, &g, fp);
        result = vx_conversation(in, &g, (int)floor(t - g.first + 0.5), fp, &progress_started);
    }
    if (progress_started) vx_progress->progressEnd(in->effect);

    double opacity = vx_get_double(in, VXP_OPACITY);
    if (!(opacity >= 0)) opacity = 0; /* NaN as well */
    if (opacity > 1) opacity = 1;
    if (in->final_render && result != VX_R_MATTE && result != VX_R_PASS &&
        result != VX_R_EMPTY) {
        /* A delivery: the host stops and reports the render, and caches nothing of this frame
         * (kOfxStatFailed: "plugin to post message"; kOfxStatErrFatal would ask for a restart
         * of the host). The output is transparent black, never the bare Source. */
        if (result == VX_R_ABORT)
            vx_report(in, kOfxMessageError, "tracking for frame %g was cancelled. %s.", t,
                      vx_outcome(in));
        float zero[4] = {0, 0, 0, 0};
        for (int y = win.y1; y < win.y2; y++)
            for (int x = win.x1; x < win.x2; x++) vx_write(&out, x, y, zero);
        status = kOfxStatFailed;
    } else if (result == VX_R_EMPTY) {
        /* nothing selected: an empty matte in every mode (the Overlay shows the Source) */
        static const float none = 0.f;
        vx_composite(&out, &src, &none, &g, win, vx_get_int(in, VXP_MODE), (float)opacity, 0);
    } else {
        /* a viewer: failures pass the image through and were reported; a cancel is silent */
        const float *alpha = result == VX_R_MATTE ? (const float *)in->worker.shm : NULL;
        vx_composite(&out, &src, alpha, &g, win, vx_get_int(in, VXP_MODE), (float)opacity,
                     g.w);
    }
    vx_unlock(in);
    vx_img_close(&src);
    vx_img_close(&out);
    return status;
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
    if (strcmp(action, kOfxActionUnload) == 0) {
        vx_reap_detached();
        vx_forget_detached();
        return kOfxStatOK;
    }
    if (!effect) return kOfxStatErrBadHandle;
    vx_reap_detached(); /* a studio that ended is not left a zombie */
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
    if (strcmp(action, kOfxImageEffectActionBeginSequenceRender) == 0)
        return inArgs ? vx_sequence(effect, inArgs, +1) : kOfxStatErrBadHandle;
    if (strcmp(action, kOfxImageEffectActionEndSequenceRender) == 0)
        return inArgs ? vx_sequence(effect, inArgs, -1) : kOfxStatErrBadHandle;
    return kOfxStatReplyDefault;
}

static void vx_set_host(OfxHost *host) { vx_host = host; }

static OfxPlugin vx_plugin = {kOfxImageEffectPluginApi, kOfxImageEffectPluginApiVersion,
                              VX_PLUGIN_ID, 1, 0, vx_set_host, vx_main};

VX_OFX_EXPORT int OfxGetNumberOfPlugins(void) { return 1; }

VX_OFX_EXPORT OfxPlugin *OfxGetPlugin(int nth) { return nth == 0 ? &vx_plugin : NULL; }
