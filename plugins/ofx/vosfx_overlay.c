/* The overlay interact: points on the host's viewer. Click to add a point for the current
 * Object (Include, or Exclude per the Point parameter; Shift inverts it), drag a point to move
 * it, Ctrl+click a point to remove it. Points are the prompts of the frame they sit on and are
 * stored in the hidden "points" parameter (so the host saves them and can undo each edit).
 *
 * Drawing uses the host's OpenGL context; the few GL 1.x functions needed are looked up in the
 * host process at run time, so the bundle links no GL library (a host without GL on the
 * viewer, or a test host, simply gets no drawing). */
#define _GNU_SOURCE
#include "vosfx_ofx.h"

#include <math.h>
#include <string.h>

#ifdef _WIN32
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

/* the host program's own export first (a test host draws into a list), then OpenGL's */
static void *vx_gl(const char *name) {
    FARPROC f = GetProcAddress(GetModuleHandleW(NULL), name);
    HMODULE gl = f ? NULL : GetModuleHandleW(L"opengl32.dll");
    if (gl) f = GetProcAddress(gl, name);
    void *p;
    memcpy(&p, &f, sizeof p); /* a function's address as data, as dlsym gives it */
    return p;
}
#else
#include <dlfcn.h>

static void *vx_gl(const char *name) { return dlsym(RTLD_DEFAULT, name); }
#endif

typedef void (*VxGlColor3f)(float, float, float);
typedef void (*VxGlPointSize)(float);
typedef void (*VxGlBegin)(unsigned int);
typedef void (*VxGlVertex2d)(double, double);
typedef void (*VxGlEnd)(void);
#define VX_GL_POINTS 0x0000u
#define VX_GL_LINES 0x0001u

#define VX_PICK_PX 8.0 /* screen pixels within which a click hits a point */

static VxInstance *vx_overlay_instance(OfxPropertySetHandle inArgs) {
    void *effect = NULL;
    if (!inArgs || vx_prop->propGetPointer(inArgs, kOfxPropEffectInstance, 0, &effect) != kOfxStatOK)
        return NULL;
    return vx_instance((OfxImageEffectHandle)effect);
}

static int vx_nearest(const VxPoints *pts, int frame, double x, double y, double radius) {
    int best = -1;
    double best_d = radius * radius;
    for (int i = 0; i < pts->count; i++) {
        const VxPoint *p = &pts->items[i];
        if (p->frame != frame) continue;
        double d = (p->x - x) * (p->x - x) + (p->y - y) * (p->y - y);
        if (d <= best_d) best = i, best_d = d;
    }
    return best;
}

static void vx_pen(OfxPropertySetHandle inArgs, double *x, double *y, int *frame,
                   double *radius) {
    double pos[2] = {0, 0}, scale[2] = {1, 1}, t = 0;
    vx_prop->propGetDoubleN(inArgs, kOfxInteractPropPenPosition, 2, pos);
    vx_prop->propGetDoubleN(inArgs, kOfxInteractPropPixelScale, 2, scale);
    vx_prop->propGetDouble(inArgs, kOfxPropTime, 0, &t);
    *x = pos[0], *y = pos[1];
    *frame = (int)floor(t + 0.5);
    *radius = VX_PICK_PX * (scale[0] > 0 ? scale[0] : 1.0);
}

static OfxStatus vx_draw(VxInstance *in, OfxPropertySetHandle inArgs) {
    VxGlColor3f color = (VxGlColor3f)vx_gl("glColor3f");
    VxGlPointSize size = (VxGlPointSize)vx_gl("glPointSize");
    VxGlBegin begin = (VxGlBegin)vx_gl("glBegin");
    VxGlVertex2d vertex = (VxGlVertex2d)vx_gl("glVertex2d");
    VxGlEnd end = (VxGlEnd)vx_gl("glEnd");
    if (!color || !size || !begin || !vertex || !end) return kOfxStatReplyDefault; /* no GL */
    double t = 0, scale[2] = {1, 1};
    vx_prop->propGetDouble(inArgs, kOfxPropTime, 0, &t);
    vx_prop->propGetDoubleN(inArgs, kOfxInteractPropPixelScale, 2, scale);
    int frame = (int)floor(t + 0.5);
    VxPoints pts = {0};
    const VxPoints *show = &in->drag_pts;
    if (in->drag < 0) {
        vx_get_points(in, &pts);
        show = &pts;
    }
    int current = 1;
    vx_param->paramGetValue(in->p[VXP_OBJ], &current);
    for (int pass = 0; pass < 2; pass++) { /* a dark rim, then the colour */
        for (int i = 0; i < show->count; i++) {
            const VxPoint *p = &show->items[i];
            if (p->frame != frame) continue;
            float big = p->obj == current ? 1.5f : 1.0f;
            if (pass == 0) {
                color(0.f, 0.f, 0.f);
                size(11.f * big);
            } else {
                if (p->label) color(0.2f, 1.f, 0.3f);
                else color(1.f, 0.25f, 0.2f);
                size(7.f * big);
            }
            begin(VX_GL_POINTS);
            vertex(p->x, p->y);
            end();
            if (pass == 1 && !p->label) { /* exclude: a cross as well */
                double d = 6 * scale[0];
                begin(VX_GL_LINES);
                vertex(p->x - d, p->y - d), vertex(p->x + d, p->y + d);
                vertex(p->x - d, p->y + d), vertex(p->x + d, p->y - d);
                end();
            }
        }
    }
    vx_points_free(&pts);
    return kOfxStatOK;
}

static OfxStatus vx_pen_down(VxInstance *in, OfxPropertySetHandle inArgs) {
    double x, y, radius;
    int frame;
    vx_pen(inArgs, &x, &y, &frame, &radius);
    VxPoints pts = {0};
    if (vx_get_points(in, &pts) != 0) {
        vx_points_free(&pts);
        return kOfxStatFailed;
    }
    int hit = vx_nearest(&pts, frame, x, y, radius);
    OfxStatus st = kOfxStatOK;
    if (hit >= 0 && in->ctrl) {
        vx_points_remove(&pts, hit);
        if (vx_set_points(in, &pts, "Remove point") != 0) st = kOfxStatFailed;
    } else if (hit >= 0) { /* start dragging it; committed on pen up */
        vx_points_free(&in->drag_pts);
        in->drag_pts = pts;
        pts.items = NULL;
        pts.count = pts.cap = 0;
        in->drag = hit;
        in->pen_x = x, in->pen_y = y;
    } else if (in->ctrl) {
        /* Ctrl+click removes the point it hits; one that hits none adds nothing */
    } else if (pts.count >= VX_MAX_POINTS) {
        vx_say(in, kOfxMessageWarning,
               "the effect holds at most %d points (all frames and objects); this one was not "
               "added. Remove points (Ctrl+click, or Clear points on this frame) first.",
               VX_MAX_POINTS);
    } else {
        int obj = 1, label = 0;
        vx_param->paramGetValue(in->p[VXP_OBJ], &obj);
        vx_param->paramGetValue(in->p[VXP_LABEL], &label);
        VxPoint p = {frame, obj, (label == 0) != (in->shift != 0), x, y};
        if (vx_points_add(&pts, p) != 0 || vx_set_points(in, &pts, "Add point") != 0)
            st = kOfxStatFailed;
    }
    vx_points_free(&pts);
    return st;
}

static OfxStatus vx_pen_motion(VxInstance *in, OfxPropertySetHandle inArgs, const void *handle) {
    if (in->drag < 0 || in->drag >= in->drag_pts.count) return kOfxStatReplyDefault;
    double x, y, radius;
    int frame;
    vx_pen(inArgs, &x, &y, &frame, &radius);
    in->drag_pts.items[in->drag].x = x;
    in->drag_pts.items[in->drag].y = y;
    if (vx_interact) vx_interact->interactRedraw((OfxInteractHandle)handle);
    return kOfxStatOK;
}

static OfxStatus vx_pen_up(VxInstance *in, OfxPropertySetHandle inArgs) {
    if (in->drag < 0) return kOfxStatReplyDefault;
    double x, y, radius;
    int frame;
    vx_pen(inArgs, &x, &y, &frame, &radius);
    OfxStatus st = kOfxStatOK;
    if (in->drag < in->drag_pts.count) {
        in->drag_pts.items[in->drag].x = x;
        in->drag_pts.items[in->drag].y = y;
        if (vx_set_points(in, &in->drag_pts, "Move point") != 0) st = kOfxStatFailed;
    }
    in->drag = -1;
    vx_points_free(&in->drag_pts);
    return st;
}

static OfxStatus vx_key(VxInstance *in, OfxPropertySetHandle inArgs, int down) {
    int sym = 0;
    vx_prop->propGetInt(inArgs, kOfxPropKeySym, 0, &sym);
    if (sym == kOfxKey_Shift_L || sym == kOfxKey_Shift_R) in->shift = down;
    else if (sym == kOfxKey_Control_L || sym == kOfxKey_Control_R) in->ctrl = down;
    return kOfxStatReplyDefault; /* modifiers are the host's too */
}

OfxStatus vx_overlay_main(const char *action, const void *handle, OfxPropertySetHandle inArgs,
                          OfxPropertySetHandle outArgs) {
    (void)outArgs;
    if (!action || !vx_prop) return kOfxStatFailed;
    if (strcmp(action, kOfxActionDescribe) == 0 || strcmp(action, kOfxActionCreateInstance) == 0 ||
        strcmp(action, kOfxActionDestroyInstance) == 0)
        return kOfxStatOK; /* all state lives in the effect instance */
    VxInstance *in = vx_overlay_instance(inArgs);
    if (!in) return kOfxStatErrBadHandle;
    vx_reap_detached(); /* a studio that ended is not left a zombie */
    if (strcmp(action, kOfxInteractActionDraw) == 0) return vx_draw(in, inArgs);
    if (strcmp(action, kOfxInteractActionPenDown) == 0) return vx_pen_down(in, inArgs);
    if (strcmp(action, kOfxInteractActionPenMotion) == 0) return vx_pen_motion(in, inArgs, handle);
    if (strcmp(action, kOfxInteractActionPenUp) == 0) return vx_pen_up(in, inArgs);
    if (strcmp(action, kOfxInteractActionKeyDown) == 0) return vx_key(in, inArgs, 1);
    if (strcmp(action, kOfxInteractActionKeyUp) == 0) return vx_key(in, inArgs, 0);
    if (strcmp(action, kOfxInteractActionLoseFocus) == 0) {
        in->shift = in->ctrl = 0;
        return kOfxStatOK;
    }
    return kOfxStatReplyDefault;
}
