/* A test host for OpenFX image effects: loads a built bundle exactly as a host does (dlopen of
 * Contents/<arch>/<name>.ofx, OfxGetNumberOfPlugins / OfxGetPlugin, setHost, load, describe,
 * describe in context, create instance, ...) and drives it from a script of commands, one per
 * line: "<expected status or *> <command> <args...>". A status that differs from the
 * expectation, an image or memory block the plug-in did not give back, or a malformed
 * command ends the run with exit status 1.
 *
 * It implements the property, image effect, parameter, memory, multithread, message (v1 and
 * v2), interact and progress suites over plain C structures, with the OFX declarations of
 * plugins/ofx/vosfx_ofx_api.h. Source frames are raw 8-bit RGB files (top-down) that the
 * Python tests write; rendered outputs are written as raw float32 RGBA, top-down.
 *
 * Commands (see tests/ofx/test_ofx.py for scripts):
 *   nosuite NAME VERSION        fetchSuite answers NULL for it (before load)
 *   load BUNDLE_DIR             dlopen + entry points + setHost + OfxActionLoad
 *   describe | describe_context CONTEXT
 *   frames DIR W H N FIRST FPS  source clip: DIR/%05d.rgb (index from 0)
 *   mask DIR                    the Mask clip connected: DIR/%05d.a (W*H bytes; absent: empty)
 *   depth byte|short|float      pixel depth of Source and Output
 *   create | destroy | unload
 *   set_int|set_double|set_string NAME VALUE     a user edit (+ instanceChanged)
 *   press NAME TIME             a push button
 *   print_param NAME
 *   overlay | pen_down T X Y | pen_motion T X Y | pen_up T X Y | key_down SYM | key_up SYM
 *   draw T                      prints the vertices drawn (GL calls land in this program)
 *   render T OUTFILE [SCALE]    clip preferences, regions of interest, begin sequence render,
 *                               render, end sequence render; writes OUTFILE
 *   render_mode interactive|final|unset   how render describes itself: interactive (a viewer:
 *                               kOfxPropIsInteractive 1 on the sequence actions and
 *                               kOfxImageEffectPropInteractiveRenderStatus 1 on render; the
 *                               default), final (a delivery: both 0), unset (a host that
 *                               calls render alone and sets neither property)
 *   background 0|1              kOfxImageEffectHostPropIsBackground (before load)
 *   abort_after N               abort() answers 1 from its Nth call on (0: never)
 *   fail_source 0|1             clipGetImage on Source fails
 *   fail_frame N                clipGetImage on Source fails for frame index N only (-1: none)
 *   poison X Y VALUE            float depth: Source pixel X, Y (pixels, top-left origin) has
 *                               VALUE (nan, inf, -inf, any number) in R, G and B
 *   action NAME                 any action on the instance, no arguments
 *   expect_message TEXT | no_message | clear_messages
 *   kill_children SIGNAL        signal this process's children (the worker)
 *   children                    prints how many child processes are alive
 *   zombies                     prints how many child processes have ended, not reaped
 *   open_fd PATH                opens PATH without close-on-exec, as a host's own files are
 *   child_fds                   prints each live child's open descriptors: CHILDFD PID FD TARGET
 *   child_env NAME              prints NAME in each live child's environment: CHILDENV NAME=V
 *   rss                         prints this process's resident memory (kB)
 *   sleep MS
 */
#define _GNU_SOURCE
#include "vosfx_ofx_api.h"

#include <ctype.h>
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _WIN32 /* mingw-w64 (winpthreads), run under Wine by the tests */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#define HOST_EXPORT __declspec(dllexport)
#define BUNDLE_ARCH "Win64"
#else
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#define HOST_EXPORT
#define BUNDLE_ARCH "Linux-x86-64"
#endif

#define MAXV 8
#define MAXP 128

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "HOST ERROR: ");
    vfprintf(stdout, fmt, ap);
    fprintf(stdout, "\n");
    va_end(ap);
    fflush(stdout);
    exit(1);
}

/* ---- property sets ---------------------------------------------------------------------- */

enum { T_NONE, T_INT, T_DBL, T_STR, T_PTR };
typedef struct Prop {
    char name[96];
    int type, n;
    int i[MAXV];
    double d[MAXV];
    char *s[MAXV];
    void *p[MAXV];
} Prop;

#define PSET_MAGIC 0x50534554
struct OfxPropertySetStruct {
    int magic;
    int n;
    Prop props[MAXP];
    int strict; /* 1: unknown names are an error on set (descriptors we declare fully) */
};
typedef struct OfxPropertySetStruct PSet;

static PSet *pset_new(void) {
    PSet *p = calloc(1, sizeof *p);
    p->magic = PSET_MAGIC;
    return p;
}

static void pset_free(PSet *p) {
    if (!p) return;
    for (int k = 0; k < p->n; k++)
        for (int j = 0; j < MAXV; j++) free(p->props[k].s[j]);
    p->magic = 0;
    free(p);
}

static Prop *pfind(PSet *p, const char *name, int create, int type) {
    for (int k = 0; k < p->n; k++)
        if (strcmp(p->props[k].name, name) == 0) return &p->props[k];
    if (!create || p->n >= MAXP) return NULL;
    Prop *q = &p->props[p->n++];
    memset(q, 0, sizeof *q);
    snprintf(q->name, sizeof q->name, "%s", name);
    q->type = type;
    return q;
}

static int bad_set(PSet *p) { return !p || p->magic != PSET_MAGIC; }

#define SETTER(fn, T, field, conv)                                                           \
    static OfxStatus fn(OfxPropertySetHandle h, const char *name, int index, T value) {       \
        if (bad_set(h)) return kOfxStatErrBadHandle;                                         \
        if (!name || index < 0 || index >= MAXV) return kOfxStatErrBadIndex;                 \
        Prop *q = pfind(h, name, 1, conv);                                                   \
        if (!q) return kOfxStatErrUnknown;                                                   \
        if (q->type != conv) return kOfxStatErrValue;                                        \
        field;                                                                               \
        if (index >= q->n) q->n = index + 1;                                                 \
        return kOfxStatOK;                                                                   \
    }
SETTER(ps_set_ptr, void *, q->p[index] = value, T_PTR)
SETTER(ps_set_dbl, double, q->d[index] = value, T_DBL)
SETTER(ps_set_int, int, q->i[index] = value, T_INT)
static OfxStatus ps_set_str(OfxPropertySetHandle h, const char *name, int index, const char *v) {
    if (bad_set(h)) return kOfxStatErrBadHandle;
    if (!name || !v || index < 0 || index >= MAXV) return kOfxStatErrBadIndex;
    Prop *q = pfind(h, name, 1, T_STR);
    if (!q) return kOfxStatErrUnknown;
    if (q->type != T_STR) return kOfxStatErrValue;
    free(q->s[index]);
    q->s[index] = strdup(v);
    if (index >= q->n) q->n = index + 1;
    return kOfxStatOK;
}
static OfxStatus ps_set_ptrN(OfxPropertySetHandle h, const char *n, int c, void *const *v) {
    for (int k = 0; k < c; k++) {
        OfxStatus s = ps_set_ptr(h, n, k, v[k]);
        if (s) return s;
    }
    return kOfxStatOK;
}
static OfxStatus ps_set_strN(OfxPropertySetHandle h, const char *n, int c, const char *const *v) {
    for (int k = 0; k < c; k++) {
        OfxStatus s = ps_set_str(h, n, k, v[k]);
        if (s) return s;
    }
    return kOfxStatOK;
}
static OfxStatus ps_set_dblN(OfxPropertySetHandle h, const char *n, int c, const double *v) {
    for (int k = 0; k < c; k++) {
        OfxStatus s = ps_set_dbl(h, n, k, v[k]);
        if (s) return s;
    }
    return kOfxStatOK;
}
static OfxStatus ps_set_intN(OfxPropertySetHandle h, const char *n, int c, const int *v) {
    for (int k = 0; k < c; k++) {
        OfxStatus s = ps_set_int(h, n, k, v[k]);
        if (s) return s;
    }
    return kOfxStatOK;
}

static OfxStatus ps_lookup(OfxPropertySetHandle h, const char *name, int index, int type,
                           Prop **out) {
    if (bad_set(h)) return kOfxStatErrBadHandle;
    if (!name) return kOfxStatErrUnknown;
    Prop *q = pfind(h, name, 0, type);
    if (!q) return kOfxStatErrUnknown;
    if (q->type != type) return kOfxStatErrValue;
    if (index < 0 || index >= q->n) return kOfxStatErrBadIndex;
    *out = q;
    return kOfxStatOK;
}
static OfxStatus ps_get_ptr(OfxPropertySetHandle h, const char *name, int index, void **v) {
    Prop *q;
    OfxStatus s = ps_lookup(h, name, index, T_PTR, &q);
    if (!s) *v = q->p[index];
    return s;
}
static OfxStatus ps_get_str(OfxPropertySetHandle h, const char *name, int index, char **v) {
    Prop *q;
    OfxStatus s = ps_lookup(h, name, index, T_STR, &q);
    if (!s) *v = q->s[index];
    return s;
}
static OfxStatus ps_get_dbl(OfxPropertySetHandle h, const char *name, int index, double *v) {
    Prop *q;
    OfxStatus s = ps_lookup(h, name, index, T_DBL, &q);
    if (!s) *v = q->d[index];
    return s;
}
static OfxStatus ps_get_int(OfxPropertySetHandle h, const char *name, int index, int *v) {
    Prop *q;
    OfxStatus s = ps_lookup(h, name, index, T_INT, &q);
    if (!s) *v = q->i[index];
    return s;
}
static OfxStatus ps_get_ptrN(OfxPropertySetHandle h, const char *n, int c, void **v) {
    for (int k = 0; k < c; k++) {
        OfxStatus s = ps_get_ptr(h, n, k, &v[k]);
        if (s) return s;
    }
    return kOfxStatOK;
}
static OfxStatus ps_get_strN(OfxPropertySetHandle h, const char *n, int c, char **v) {
    for (int k = 0; k < c; k++) {
        OfxStatus s = ps_get_str(h, n, k, &v[k]);
        if (s) return s;
    }
    return kOfxStatOK;
}
static OfxStatus ps_get_dblN(OfxPropertySetHandle h, const char *n, int c, double *v) {
    for (int k = 0; k < c; k++) {
        OfxStatus s = ps_get_dbl(h, n, k, &v[k]);
        if (s) return s;
    }
    return kOfxStatOK;
}
static OfxStatus ps_get_intN(OfxPropertySetHandle h, const char *n, int c, int *v) {
    for (int k = 0; k < c; k++) {
        OfxStatus s = ps_get_int(h, n, k, &v[k]);
        if (s) return s;
    }
    return kOfxStatOK;
}
static OfxStatus ps_reset(OfxPropertySetHandle h, const char *name) {
    if (bad_set(h)) return kOfxStatErrBadHandle;
    return pfind(h, name, 0, 0) ? kOfxStatOK : kOfxStatErrUnknown;
}
static OfxStatus ps_dim(OfxPropertySetHandle h, const char *name, int *count) {
    if (bad_set(h)) return kOfxStatErrBadHandle;
    Prop *q = pfind(h, name, 0, 0);
    if (!q) return kOfxStatErrUnknown;
    *count = q->n;
    return kOfxStatOK;
}

static const OfxPropertySuiteV1 prop_suite = {
    ps_set_ptr, ps_set_str, ps_set_dbl, ps_set_int, ps_set_ptrN, ps_set_strN,
    ps_set_dblN, ps_set_intN, ps_get_ptr, ps_get_str, ps_get_dbl, ps_get_int,
    ps_get_ptrN, ps_get_strN, ps_get_dblN, ps_get_intN, ps_reset, ps_dim};

/* ---- host state: effect, clips, params, images ------------------------------------------------- */

#define EFFECT_MAGIC 0x45464654
#define CLIP_MAGIC 0x434c4950
#define PARAM_MAGIC 0x5041524d
#define PARAMSET_MAGIC 0x50534554 + 1

typedef struct Param {
    int magic;
    char name[64];
    char type[64];
    PSet *props;
    int i;
    double d;
    char *s;
} Param;

struct OfxParamSetStruct {
    int magic;
    int n;
    Param *params[64];
    PSet *props;
    int editing;
};

struct OfxParamStruct { Param p; }; /* handles point at Param */

struct OfxImageClipStruct {
    int magic;
    char name[32];
    PSet *props;
    int is_output;
};

struct OfxImageEffectStruct {
    int magic;
    PSet *props;
    struct OfxParamSetStruct params;
    struct OfxImageClipStruct *clips[8];
    int nclips;
};
typedef struct OfxImageEffectStruct Effect;
typedef struct OfxImageClipStruct Clip;

static struct {
    int w, h, n, first;
    double fps;
    char dir[1024], maskdir[1024];
    const char *depth;
    int bytes; /* per channel */
    int fail_source, abort_after, abort_calls;
    int fail_frame; /* Source index whose image the host cannot give (-1: none) */
    int poison_x, poison_y; /* a Source pixel of value poison (-1: none) */
    float poison;
    int images_out;        /* images given out and not yet released */
    long mem_blocks;       /* memory suite blocks outstanding */
    long image_mem_blocks; /* image memory suite blocks outstanding */
    char last_message[4096];
    int messages;
    long gl_vertices;
    double render_scale;
    /* the output image of the render in progress */
    unsigned char *out_data;
    int out_w, out_h;
    char nosuite[8][64];
    int nosuite_ver[8], n_nosuite;
    int progress_calls;
    int source_fetches; /* clipGetImage calls on Source during the current render */
    double fetch_ms;    /* time the host spent making those images (not the effect's) */
    int mode;           /* MODE_*: what render says of itself */
    int background;     /* kOfxImageEffectHostPropIsBackground */
} H = {.depth = kOfxBitDepthFloat, .bytes = 4, .render_scale = 1.0, .fail_frame = -1,
       .poison_x = -1};

static PSet *host_props;
enum { MODE_INTERACTIVE, MODE_FINAL, MODE_UNSET };

static Clip *clip_new(const char *name) {
    Clip *c = calloc(1, sizeof *c);
    c->magic = CLIP_MAGIC;
    snprintf(c->name, sizeof c->name, "%s", name);
    c->props = pset_new();
    ps_set_str(c->props, kOfxPropName, 0, name);
    ps_set_str(c->props, kOfxPropType, 0, kOfxTypeClip);
    c->is_output = strcmp(name, kOfxImageEffectOutputClipName) == 0;
    return c;
}

static Effect *effect_new(const char *type) {
    Effect *e = calloc(1, sizeof *e);
    e->magic = EFFECT_MAGIC;
    e->props = pset_new();
    e->params.magic = PARAMSET_MAGIC;
    e->params.props = pset_new();
    ps_set_str(e->props, kOfxPropType, 0, type);
    return e;
}

static void effect_free(Effect *e) {
    if (!e) return;
    for (int k = 0; k < e->params.n; k++) {
        pset_free(e->params.params[k]->props);
        free(e->params.params[k]->s);
        free(e->params.params[k]);
    }
    pset_free(e->params.props);
    for (int k = 0; k < e->nclips; k++) {
        pset_free(e->clips[k]->props);
        free(e->clips[k]);
    }
    pset_free(e->props);
    e->magic = 0;
    free(e);
}

static int bad_effect(OfxImageEffectHandle e) { return !e || e->magic != EFFECT_MAGIC; }
static int bad_clip(OfxImageClipHandle c) { return !c || c->magic != CLIP_MAGIC; }

static Clip *find_clip(Effect *e, const char *name) {
    for (int k = 0; k < e->nclips; k++)
        if (strcmp(e->clips[k]->name, name) == 0) return e->clips[k];
    return NULL;
}

/* ---- image effect suite ----------------------------------------------------------------------- */

static OfxStatus ie_get_props(OfxImageEffectHandle e, OfxPropertySetHandle *p) {
    if (bad_effect(e) || !p) return kOfxStatErrBadHandle;
    *p = e->props;
    return kOfxStatOK;
}
static OfxStatus ie_get_params(OfxImageEffectHandle e, OfxParamSetHandle *p) {
    if (bad_effect(e) || !p) return kOfxStatErrBadHandle;
    *p = &e->params;
    return kOfxStatOK;
}
static OfxStatus ie_clip_define(OfxImageEffectHandle e, const char *name, OfxPropertySetHandle *p) {
    if (bad_effect(e) || !name || !p) return kOfxStatErrBadHandle;
    if (find_clip(e, name)) return kOfxStatErrExists;
    if (e->nclips >= 8) return kOfxStatErrMemory;
    Clip *c = clip_new(name);
    e->clips[e->nclips++] = c;
    *p = c->props;
    return kOfxStatOK;
}
static OfxStatus ie_clip_get(OfxImageEffectHandle e, const char *name, OfxImageClipHandle *c,
                             OfxPropertySetHandle *p) {
    if (bad_effect(e) || !name || !c) return kOfxStatErrBadHandle;
    Clip *k = find_clip(e, name);
    if (!k) return kOfxStatErrUnknown;
    *c = k;
    if (p) *p = k->props;
    return kOfxStatOK;
}
static OfxStatus ie_clip_props(OfxImageClipHandle c, OfxPropertySetHandle *p) {
    if (bad_clip(c) || !p) return kOfxStatErrBadHandle;
    *p = c->props;
    return kOfxStatOK;
}

static int clip_connected(Clip *c) {
    int v = 0;
    ps_get_int(c->props, kOfxImageClipPropConnected, 0, &v);
    return v;
}

static int read_file(const char *path, unsigned char *buf, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    return got == n ? 0 : -1;
}

/* an image property set whose data is freed on release */
static PSet *image_new(int w, int h, int nc, const char *comps) {
    PSet *img = pset_new();
    size_t rowbytes = (size_t)w * nc * H.bytes;
    void *data = calloc((size_t)h, rowbytes);
    ps_set_ptr(img, kOfxImagePropData, 0, data);
    int bounds[4] = {0, 0, w, h};
    ps_set_intN(img, kOfxImagePropBounds, 4, bounds);
    ps_set_intN(img, kOfxImagePropRegionOfDefinition, 4, bounds);
    ps_set_int(img, kOfxImagePropRowBytes, 0, (int)rowbytes);
    ps_set_str(img, kOfxImageEffectPropPixelDepth, 0, H.depth);
    ps_set_str(img, kOfxImageEffectPropComponents, 0, comps);
    ps_set_dbl(img, kOfxImagePropPixelAspectRatio, 0, 1.0);
    double scale[2] = {H.render_scale, H.render_scale};
    ps_set_dblN(img, kOfxImageEffectPropRenderScale, 2, scale);
    ps_set_str(img, kOfxPropType, 0, kOfxTypeImage);
    ps_set_str(img, "OfxImagePropField", 0, "OfxFieldNone");
    ps_set_str(img, "OfxImagePropUniqueIdentifier", 0, "img");
    return img;
}

static void put_channel(void *data, size_t index, float v) {
    if (H.bytes == 1) ((unsigned char *)data)[index] = (unsigned char)(v * 255.f + .5f);
    else if (H.bytes == 2) ((unsigned short *)data)[index] = (unsigned short)(v * 65535.f + .5f);
    else ((float *)data)[index] = v;
}

static float get_channel(const void *data, size_t index) {
    if (H.bytes == 1) return ((const unsigned char *)data)[index] / 255.f;
    if (H.bytes == 2) return ((const unsigned short *)data)[index] / 65535.f;
    return ((const float *)data)[index];
}

static double now_ms(void);
static OfxStatus ie_get_image_(OfxImageClipHandle c, OfxTime t, const OfxRectD *region,
                               OfxPropertySetHandle *out);
static OfxStatus ie_get_image(OfxImageClipHandle c, OfxTime t, const OfxRectD *region,
                              OfxPropertySetHandle *out) {
    double t0 = now_ms();
    OfxStatus s = ie_get_image_(c, t, region, out);
    H.fetch_ms += now_ms() - t0;
    return s;
}

static OfxStatus ie_get_image_(OfxImageClipHandle c, OfxTime t, const OfxRectD *region,
                               OfxPropertySetHandle *out) {
    (void)region;
    if (bad_clip(c) || !out) return kOfxStatErrBadHandle;
    int w = (int)floor(H.w * H.render_scale + .5), h = (int)floor(H.h * H.render_scale + .5);
    if (c->is_output) {
        if (!H.out_data) return kOfxStatFailed; /* only during render */
        PSet *img = image_new(w, h, 4, kOfxImageComponentRGBA);
        void *data;
        ps_get_ptr(img, kOfxImagePropData, 0, &data);
        free(data);
        ps_set_ptr(img, kOfxImagePropData, 0, H.out_data);
        ps_set_int(img, "HostOwnsData", 0, 1);
        H.images_out++;
        *out = img;
        return kOfxStatOK;
    }
    if (!clip_connected(c)) return kOfxStatFailed;
    int index = (int)floor(t + .5) - H.first;
    if (index < 0 || index >= H.n) return kOfxStatFailed;
    int is_mask = strcmp(c->name, "Mask") == 0;
    if (!is_mask) H.source_fetches++;
    if (!is_mask && (H.fail_source || index == H.fail_frame)) return kOfxStatFailed;
    size_t npx = (size_t)H.w * H.h;
    unsigned char *raw = malloc(npx * 3);
    char path[1200];
    if (is_mask) {
        snprintf(path, sizeof path, "%s/%05d.a", H.maskdir, index);
        memset(raw, 0, npx);
        read_file(path, raw, npx); /* absent: an empty mask */
    } else {
        snprintf(path, sizeof path, "%s/%05d.rgb", H.dir, index);
        if (read_file(path, raw, npx * 3) != 0) {
            free(raw);
            return kOfxStatFailed;
        }
    }
    int nc = is_mask ? 1 : 4;
    PSet *img = image_new(w, h, nc, is_mask ? kOfxImageComponentAlpha : kOfxImageComponentRGBA);
    void *data;
    ps_get_ptr(img, kOfxImagePropData, 0, &data);
    for (int y = 0; y < h; y++) {
        int sy = (int)((h - 1 - y) / H.render_scale); /* bottom-up; nearest sample */
        if (sy >= H.h) sy = H.h - 1;
        for (int x = 0; x < w; x++) {
            int sx = (int)(x / H.render_scale);
            if (sx >= H.w) sx = H.w - 1;
            size_t o = ((size_t)y * w + x) * nc;
            if (is_mask) {
                put_channel(data, o, raw[(size_t)sy * H.w + sx] / 255.f);
            } else {
                const unsigned char *s = raw + ((size_t)sy * H.w + sx) * 3;
                int poisoned = H.bytes == 4 && sx == H.poison_x && sy == H.poison_y;
                for (int k = 0; k < 3; k++)
                    put_channel(data, o + k, poisoned ? H.poison : s[k] / 255.f);
                put_channel(data, o + 3, 1.f);
            }
        }
    }
    free(raw);
    H.images_out++;
    *out = img;
    return kOfxStatOK;
}

static OfxStatus ie_release_image(OfxPropertySetHandle img) {
    if (bad_set(img)) return kOfxStatErrBadHandle;
    int host_owns = 0;
    ps_get_int(img, "HostOwnsData", 0, &host_owns);
    void *data = NULL;
    ps_get_ptr(img, kOfxImagePropData, 0, &data);
    if (!host_owns) free(data);
    pset_free(img);
    H.images_out--;
    return kOfxStatOK;
}

static OfxStatus ie_clip_rod(OfxImageClipHandle c, OfxTime t, OfxRectD *rod) {
    (void)t;
    if (bad_clip(c) || !rod) return kOfxStatErrBadHandle;
    if (!c->is_output && !clip_connected(c)) return kOfxStatFailed;
    rod->x1 = rod->y1 = 0;
    rod->x2 = H.w;
    rod->y2 = H.h;
    return kOfxStatOK;
}

static int ie_abort(OfxImageEffectHandle e) {
    (void)e;
    H.abort_calls++;
    return H.abort_after > 0 && H.abort_calls >= H.abort_after;
}

typedef struct ImageMem { int magic, locks; void *data; } ImageMem;
static OfxStatus ie_mem_alloc(OfxImageEffectHandle e, size_t n, OfxImageMemoryHandle *h) {
    (void)e;
    ImageMem *m = calloc(1, sizeof *m);
    m->magic = 0x494d454d;
    m->data = malloc(n ? n : 1);
    H.image_mem_blocks++;
    *h = (OfxImageMemoryHandle)m;
    return kOfxStatOK;
}
static OfxStatus ie_mem_free(OfxImageMemoryHandle h) {
    ImageMem *m = (ImageMem *)h;
    if (!m || m->magic != 0x494d454d) return kOfxStatErrBadHandle;
    free(m->data);
    m->magic = 0;
    free(m);
    H.image_mem_blocks--;
    return kOfxStatOK;
}
static OfxStatus ie_mem_lock(OfxImageMemoryHandle h, void **p) {
    ImageMem *m = (ImageMem *)h;
    if (!m || m->magic != 0x494d454d) return kOfxStatErrBadHandle;
    m->locks++;
    *p = m->data;
    return kOfxStatOK;
}
static OfxStatus ie_mem_unlock(OfxImageMemoryHandle h) {
    ImageMem *m = (ImageMem *)h;
    if (!m || m->magic != 0x494d454d) return kOfxStatErrBadHandle;
    if (m->locks) m->locks--;
    return kOfxStatOK;
}

static const OfxImageEffectSuiteV1 effect_suite = {
    ie_get_props, ie_get_params, ie_clip_define, ie_clip_get, ie_clip_props,
    ie_get_image, ie_release_image, ie_clip_rod, ie_abort, ie_mem_alloc,
    ie_mem_free, ie_mem_lock, ie_mem_unlock};

/* ---- parameter suite ------------------------------------------------------------------------ */

static int bad_pset(OfxParamSetHandle s) { return !s || s->magic != PARAMSET_MAGIC; }
static Param *as_param(OfxParamHandle h) {
    Param *p = (Param *)h;
    return p && p->magic == PARAM_MAGIC ? p : NULL;
}

static Param *find_param(OfxParamSetHandle s, const char *name) {
    for (int k = 0; k < s->n; k++)
        if (strcmp(s->params[k]->name, name) == 0) return s->params[k];
    return NULL;
}

static OfxStatus pa_define(OfxParamSetHandle s, const char *type, const char *name,
                           OfxPropertySetHandle *props) {
    if (bad_pset(s) || !type || !name) return kOfxStatErrBadHandle;
    if (find_param(s, name)) return kOfxStatErrExists;
    static const char *const known[] = {kOfxParamTypeInteger, kOfxParamTypeDouble,
                                        kOfxParamTypeBoolean, kOfxParamTypeChoice,
                                        kOfxParamTypeString, kOfxParamTypeGroup,
                                        kOfxParamTypePushButton, NULL};
    int ok = 0;
    for (int k = 0; known[k]; k++) ok |= strcmp(known[k], type) == 0;
    if (!ok) return kOfxStatErrUnknown;
    if (s->n >= 64) return kOfxStatErrMemory;
    Param *p = calloc(1, sizeof *p);
    p->magic = PARAM_MAGIC;
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->type, sizeof p->type, "%s", type);
    p->props = pset_new();
    ps_set_str(p->props, kOfxParamPropType, 0, type);
    ps_set_str(p->props, kOfxPropName, 0, name);
    s->params[s->n++] = p;
    if (props) *props = p->props;
    return kOfxStatOK;
}

static OfxStatus pa_get_handle(OfxParamSetHandle s, const char *name, OfxParamHandle *h,
                               OfxPropertySetHandle *props) {
    if (bad_pset(s) || !name || !h) return kOfxStatErrBadHandle;
    Param *p = find_param(s, name);
    if (!p) return kOfxStatErrUnknown;
    *h = (OfxParamHandle)p;
    if (props) *props = p->props;
    return kOfxStatOK;
}
static OfxStatus pa_set_props(OfxParamSetHandle s, OfxPropertySetHandle *props) {
    if (bad_pset(s) || !props) return kOfxStatErrBadHandle;
    *props = s->props;
    return kOfxStatOK;
}
static OfxStatus pa_props(OfxParamHandle h, OfxPropertySetHandle *props) {
    Param *p = as_param(h);
    if (!p || !props) return kOfxStatErrBadHandle;
    *props = p->props;
    return kOfxStatOK;
}

static int is_int_type(const char *t) {
    return !strcmp(t, kOfxParamTypeInteger) || !strcmp(t, kOfxParamTypeBoolean) ||
           !strcmp(t, kOfxParamTypeChoice);
}

static OfxStatus param_get(Param *p, va_list ap) {
    if (is_int_type(p->type)) *va_arg(ap, int *) = p->i;
    else if (!strcmp(p->type, kOfxParamTypeDouble)) *va_arg(ap, double *) = p->d;
    else if (!strcmp(p->type, kOfxParamTypeString)) *va_arg(ap, char **) = p->s ? p->s : "";
    else return kOfxStatErrBadHandle; /* buttons and groups have no value */
    return kOfxStatOK;
}
static OfxStatus pa_get_value(OfxParamHandle h, ...) {
    Param *p = as_param(h);
    if (!p) return kOfxStatErrBadHandle;
    va_list ap;
    va_start(ap, h);
    OfxStatus s = param_get(p, ap);
    va_end(ap);
    return s;
}
static OfxStatus pa_get_value_at(OfxParamHandle h, OfxTime t, ...) {
    Param *p = as_param(h);
    if (!p) return kOfxStatErrBadHandle;
    va_list ap;
    va_start(ap, t);
    OfxStatus s = param_get(p, ap);
    va_end(ap);
    return s;
}
static OfxStatus pa_unsupported_t(OfxParamHandle h, OfxTime t, ...) {
    (void)h, (void)t;
    return kOfxStatErrUnsupported;
}
static OfxStatus pa_unsupported_tt(OfxParamHandle h, OfxTime a, OfxTime b, ...) {
    (void)h, (void)a, (void)b;
    return kOfxStatErrUnsupported;
}

static int plugin_edits;
static OfxStatus param_set(Param *p, va_list ap) {
    if (is_int_type(p->type)) p->i = va_arg(ap, int);
    else if (!strcmp(p->type, kOfxParamTypeDouble)) p->d = va_arg(ap, double);
    else if (!strcmp(p->type, kOfxParamTypeString)) {
        const char *v = va_arg(ap, const char *);
        free(p->s);
        p->s = strdup(v ? v : "");
    } else return kOfxStatErrBadHandle;
    plugin_edits++;
    return kOfxStatOK;
}
static OfxStatus pa_set_value(OfxParamHandle h, ...) {
    Param *p = as_param(h);
    if (!p) return kOfxStatErrBadHandle;
    va_list ap;
    va_start(ap, h);
    OfxStatus s = param_set(p, ap);
    va_end(ap);
    return s;
}
static OfxStatus pa_set_value_at(OfxParamHandle h, OfxTime t, ...) {
    Param *p = as_param(h);
    if (!p) return kOfxStatErrBadHandle;
    va_list ap;
    va_start(ap, t);
    OfxStatus s = param_set(p, ap);
    va_end(ap);
    return s;
}
static OfxStatus pa_num_keys(OfxParamHandle h, unsigned int *n) {
    if (!as_param(h) || !n) return kOfxStatErrBadHandle;
    *n = 0;
    return kOfxStatOK;
}
static OfxStatus pa_key_time(OfxParamHandle h, unsigned int k, OfxTime *t) {
    (void)h, (void)k, (void)t;
    return kOfxStatErrBadIndex;
}
static OfxStatus pa_key_index(OfxParamHandle h, OfxTime t, int d, int *i) {
    (void)h, (void)t, (void)d, (void)i;
    return kOfxStatFailed;
}
static OfxStatus pa_delete_key(OfxParamHandle h, OfxTime t) {
    (void)h, (void)t;
    return kOfxStatErrBadIndex;
}
static OfxStatus pa_delete_all(OfxParamHandle h) { return as_param(h) ? kOfxStatOK : kOfxStatErrBadHandle; }
static OfxStatus pa_copy(OfxParamHandle a, OfxParamHandle b, OfxTime o, const OfxRangeD *r) {
    (void)a, (void)b, (void)o, (void)r;
    return kOfxStatErrUnsupported;
}
static int edit_depth, edits_total;
static OfxStatus pa_edit_begin(OfxParamSetHandle s, const char *name) {
    if (bad_pset(s) || !name) return kOfxStatErrBadHandle;
    edit_depth++;
    edits_total++;
    return kOfxStatOK;
}
static OfxStatus pa_edit_end(OfxParamSetHandle s) {
    if (bad_pset(s)) return kOfxStatErrBadHandle;
    if (edit_depth == 0) return kOfxStatFailed;
    edit_depth--;
    return kOfxStatOK;
}

static const OfxParameterSuiteV1 param_suite = {
    pa_define, pa_get_handle, pa_set_props, pa_props, pa_get_value, pa_get_value_at,
    pa_unsupported_t, pa_unsupported_tt, pa_set_value, pa_set_value_at, pa_num_keys,
    pa_key_time, pa_key_index, pa_delete_key, pa_delete_all, pa_copy, pa_edit_begin,
    pa_edit_end};

/* ---- memory, threads, messages, interact, progress ---------------------------------------------- */

static OfxStatus me_alloc(void *handle, size_t n, void **data) {
    (void)handle;
    if (!data) return kOfxStatErrBadHandle;
    *data = malloc(n ? n : 1);
    if (!*data) return kOfxStatErrMemory;
    H.mem_blocks++;
    return kOfxStatOK;
}
static OfxStatus me_free(void *data) {
    if (!data) return kOfxStatErrBadHandle;
    free(data);
    H.mem_blocks--;
    return kOfxStatOK;
}
static const OfxMemorySuiteV1 memory_suite = {me_alloc, me_free};

static OfxStatus mt_run(OfxThreadFunctionV1 f, unsigned int n, void *arg) {
    for (unsigned int k = 0; k < n; k++) f(k, n, arg);
    return kOfxStatOK;
}
static OfxStatus mt_cpus(unsigned int *n) {
    *n = 1;
    return kOfxStatOK;
}
static OfxStatus mt_index(unsigned int *i) {
    *i = 0;
    return kOfxStatOK;
}
static int mt_spawned(void) { return 0; }
static long mutexes;
static OfxStatus mt_mcreate(OfxMutexHandle *m, int count) {
    (void)count;
    pthread_mutex_t *p = malloc(sizeof *p);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(p, &a);
    pthread_mutexattr_destroy(&a);
    *m = (OfxMutexHandle)p;
    mutexes++;
    return kOfxStatOK;
}
static OfxStatus mt_mdestroy(const OfxMutexHandle m) {
    if (!m) return kOfxStatErrBadHandle;
    pthread_mutex_destroy((pthread_mutex_t *)m);
    free(m);
    mutexes--;
    return kOfxStatOK;
}
static OfxStatus mt_lock(const OfxMutexHandle m) {
    return m && !pthread_mutex_lock((pthread_mutex_t *)m) ? kOfxStatOK : kOfxStatErrBadHandle;
}
static OfxStatus mt_unlock(const OfxMutexHandle m) {
    return m && !pthread_mutex_unlock((pthread_mutex_t *)m) ? kOfxStatOK : kOfxStatErrBadHandle;
}
static OfxStatus mt_trylock(const OfxMutexHandle m) {
    return m && !pthread_mutex_trylock((pthread_mutex_t *)m) ? kOfxStatOK : kOfxStatFailed;
}
static const OfxMultiThreadSuiteV1 thread_suite = {mt_run,      mt_cpus,    mt_index,
                                                   mt_spawned,  mt_mcreate, mt_mdestroy,
                                                   mt_lock,     mt_unlock,  mt_trylock};

static OfxStatus msg_v(void *handle, const char *type, const char *id, const char *fmt,
                       va_list ap) {
    (void)handle;
    char text[4096];
    vsnprintf(text, sizeof text, fmt, ap);
    snprintf(H.last_message, sizeof H.last_message, "%s", text);
    H.messages++;
    printf("MESSAGE %s %s: %s\n", type ? type : "?", id ? id : "?", text);
    return kOfxStatOK;
}
static OfxStatus msg_message(void *handle, const char *type, const char *id, const char *fmt,
                             ...) {
    va_list ap;
    va_start(ap, fmt);
    OfxStatus s = msg_v(handle, type, id, fmt, ap);
    va_end(ap);
    return s;
}
static OfxStatus msg_clear(void *handle) {
    (void)handle;
    H.last_message[0] = '\0';
    printf("MESSAGE cleared\n");
    return kOfxStatOK;
}
static const OfxMessageSuiteV1 message_v1 = {msg_message};
static const OfxMessageSuiteV2 message_v2 = {msg_message, msg_message, msg_clear};

static int redraws;
static OfxStatus ia_swap(OfxInteractHandle h) {
    (void)h;
    return kOfxStatOK;
}
static OfxStatus ia_redraw(OfxInteractHandle h) {
    (void)h;
    redraws++;
    return kOfxStatOK;
}
static PSet *overlay_props;
static OfxStatus ia_props(OfxInteractHandle h, OfxPropertySetHandle *p) {
    (void)h;
    if (!overlay_props || !p) return kOfxStatErrBadHandle;
    *p = overlay_props;
    return kOfxStatOK;
}
static const OfxInteractSuiteV1 interact_suite = {ia_swap, ia_redraw, ia_props};

static OfxStatus pr_start(void *e, const char *label) {
    (void)e, (void)label;
    H.progress_calls++;
    return kOfxStatOK;
}
static OfxStatus pr_update(void *e, double v) {
    (void)e;
    H.progress_calls++;
    return v >= 0 && v <= 1.0001 ? kOfxStatOK : kOfxStatErrValue;
}
static OfxStatus pr_end(void *e) {
    (void)e;
    return kOfxStatOK;
}
static const OfxProgressSuiteV1 progress_suite = {pr_start, pr_update, pr_end};

/* GL 1.x entry points the overlay looks up in the host process (exported with -rdynamic; on
 * Windows, from the program's export table) */
HOST_EXPORT void glColor3f(float r, float g, float b) { (void)r, (void)g, (void)b; }
HOST_EXPORT void glPointSize(float s) { (void)s; }
HOST_EXPORT void glBegin(unsigned int mode) { (void)mode; }
HOST_EXPORT void glVertex2d(double x, double y) {
    H.gl_vertices++;
    printf("VERTEX %.1f %.1f\n", x, y);
}
HOST_EXPORT void glEnd(void) {}

static const void *fetch_suite(OfxPropertySetHandle host, const char *name, int version) {
    if (host != host_props || !name) return NULL;
    for (int k = 0; k < H.n_nosuite; k++)
        if (!strcmp(H.nosuite[k], name) && H.nosuite_ver[k] == version) return NULL;
    if (!strcmp(name, kOfxPropertySuite) && version == 1) return &prop_suite;
    if (!strcmp(name, kOfxImageEffectSuite) && version == 1) return &effect_suite;
    if (!strcmp(name, kOfxParameterSuite) && version == 1) return &param_suite;
    if (!strcmp(name, kOfxMemorySuite) && version == 1) return &memory_suite;
    if (!strcmp(name, kOfxMultiThreadSuite) && version == 1) return &thread_suite;
    if (!strcmp(name, kOfxMessageSuite) && version == 1) return &message_v1;
    if (!strcmp(name, kOfxMessageSuite) && version == 2) return &message_v2;
    if (!strcmp(name, kOfxInteractSuite) && version == 1) return &interact_suite;
    if (!strcmp(name, kOfxProgressSuite) && version == 1) return &progress_suite;
    return NULL;
}

/* ---- driving the plug-in ------------------------------------------------------------------------ */

#ifdef _WIN32
static HMODULE lib;
#else
static void *lib;
#endif
static OfxPlugin *plugin;
static OfxHost host;
static Effect *desc, *ctx_desc, *inst;
static const char *context = kOfxImageEffectContextFilter;
static OfxPluginEntryPoint *overlay_main;
static int overlay_alive;

static OfxStatus call(const char *action, const void *handle, PSet *in, PSet *out) {
    OfxStatus s = plugin->mainEntry(action, handle, in, out);
    if (H.images_out != 0) die("%s: %d images not released", action, H.images_out);
    if (edit_depth != 0) die("%s: paramEditBegin without paramEditEnd", action);
    return s;
}

static OfxStatus cmd_load(const char *dir) {
    char path[1400];
    snprintf(path, sizeof path, "%s/Contents/" BUNDLE_ARCH "/vosfx.ofx", dir);
#ifdef _WIN32
    wchar_t wide[1400]; /* the script's UTF-8, as a host's own (wide) paths */
    if (!MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, wide, 1400))
        die("load %s: not UTF-8", path);
    lib = LoadLibraryW(wide);
    if (!lib) die("LoadLibrary %s: error %lu", path, (unsigned long)GetLastError());
    OfxGetNumberOfPluginsFn count;
    OfxGetPluginFn get;
    FARPROC fc = GetProcAddress(lib, "OfxGetNumberOfPlugins"), fg = GetProcAddress(lib, "OfxGetPlugin");
    memcpy(&count, &fc, sizeof count);
    memcpy(&get, &fg, sizeof get);
#else
    lib = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
    if (!lib) die("dlopen %s: %s", path, dlerror());
    OfxGetNumberOfPluginsFn count = (OfxGetNumberOfPluginsFn)dlsym(lib, "OfxGetNumberOfPlugins");
    OfxGetPluginFn get = (OfxGetPluginFn)dlsym(lib, "OfxGetPlugin");
#endif
    if (!count || !get) die("the binary lacks OfxGetNumberOfPlugins / OfxGetPlugin");
    int n = count();
    if (n != 1) die("expected 1 plug-in, found %d", n);
    if (get(1) != NULL) die("OfxGetPlugin(1) should be NULL");
    plugin = get(0);
    if (!plugin || strcmp(plugin->pluginApi, kOfxImageEffectPluginApi) != 0 ||
        plugin->apiVersion != 1)
        die("plug-in 0 is not an image effect of API version 1");
    printf("PLUGIN %s %u.%u\n", plugin->pluginIdentifier, plugin->pluginVersionMajor,
           plugin->pluginVersionMinor);
    host_props = pset_new();
    ps_set_str(host_props, kOfxPropName, 0, "org.vosfx.testhost");
    ps_set_str(host_props, kOfxPropLabel, 0, "vosfx test host");
    ps_set_int(host_props, kOfxImageEffectHostPropIsBackground, 0, H.background);
    ps_set_int(host_props, kOfxImageEffectPropSupportsOverlays, 0, 1);
    ps_set_int(host_props, kOfxImageEffectPropSupportsMultiResolution, 0, 1);
    ps_set_int(host_props, kOfxImageEffectPropSupportsTiles, 0, 1);
    ps_set_int(host_props, kOfxImageEffectPropTemporalClipAccess, 0, 1);
    ps_set_str(host_props, kOfxImageEffectPropSupportedContexts, 0, kOfxImageEffectContextFilter);
    ps_set_str(host_props, kOfxImageEffectPropSupportedContexts, 1, kOfxImageEffectContextGeneral);
    host.host = host_props;
    host.fetchSuite = fetch_suite;
    plugin->setHost(&host);
    return call(kOfxActionLoad, NULL, NULL, NULL);
}

static void instantiate_params(Effect *from, Effect *to) {
    for (int k = 0; k < from->params.n; k++) {
        Param *d = from->params.params[k];
        OfxPropertySetHandle props;
        pa_define(&to->params, d->type, d->name, &props);
        Param *p = find_param(&to->params, d->name);
        for (int j = 0; j < p->props->n; j++) /* pa_define's own strings: replaced below */
            for (int v = 0; v < MAXV; v++) free(p->props->props[j].s[v]);
        for (int j = 0; j < d->props->n; j++) p->props->props[j] = d->props->props[j];
        p->props->n = d->props->n;
        for (int j = 0; j < p->props->n; j++)
            for (int v = 0; v < MAXV; v++)
                if (p->props->props[j].s[v]) p->props->props[j].s[v] = strdup(d->props->props[j].s[v]);
        char *sdef = NULL;
        if (is_int_type(p->type)) ps_get_int(p->props, kOfxParamPropDefault, 0, &p->i);
        else if (!strcmp(p->type, kOfxParamTypeDouble))
            ps_get_dbl(p->props, kOfxParamPropDefault, 0, &p->d);
        else if (!strcmp(p->type, kOfxParamTypeString)) {
            ps_get_str(p->props, kOfxParamPropDefault, 0, &sdef);
            p->s = strdup(sdef ? sdef : "");
        }
    }
}

static void clip_instance_props(Clip *c, int connected) {
    ps_set_int(c->props, kOfxImageClipPropConnected, 0, connected);
    ps_set_str(c->props, kOfxImageEffectPropPixelDepth, 0, H.depth);
    ps_set_str(c->props, kOfxImageEffectPropComponents, 0,
               strcmp(c->name, "Mask") ? kOfxImageComponentRGBA : kOfxImageComponentAlpha);
    ps_set_str(c->props, kOfxImageEffectPropPreMultiplication, 0, kOfxImageOpaque);
    ps_set_dbl(c->props, kOfxImagePropPixelAspectRatio, 0, 1.0);
    ps_set_dbl(c->props, kOfxImageEffectPropFrameRate, 0, H.fps);
    double range[2] = {H.first, H.first + H.n - 1};
    ps_set_dblN(c->props, kOfxImageEffectPropFrameRange, 2, range);
}

static OfxStatus cmd_create(void) {
    if (!ctx_desc) die("create before describe_context");
    inst = effect_new(kOfxTypeImageEffectInstance);
    ps_set_str(inst->props, kOfxImageEffectPropContext, 0, context);
    ps_set_ptr(inst->props, kOfxPropInstanceData, 0, NULL);
    ps_set_int(inst->props, kOfxPropIsInteractive, 0, 1);
    double size[2] = {H.w, H.h};
    ps_set_dblN(inst->props, kOfxImageEffectPropProjectSize, 2, size);
    ps_set_dbl(inst->props, kOfxImageEffectInstancePropEffectDuration, 0, H.n);
    ps_set_dbl(inst->props, kOfxImageEffectPropFrameRate, 0, H.fps);
    instantiate_params(ctx_desc, inst);
    for (int k = 0; k < ctx_desc->nclips; k++) {
        Clip *c = clip_new(ctx_desc->clips[k]->name);
        int connected = strcmp(c->name, "Mask") ? 1 : H.maskdir[0] != 0;
        clip_instance_props(c, connected);
        inst->clips[inst->nclips++] = c;
    }
    return call(kOfxActionCreateInstance, inst, NULL, NULL);
}

static OfxStatus instance_changed(const char *name, double t, const char *reason) {
    PSet *in = pset_new();
    ps_set_str(in, kOfxPropType, 0, "OfxTypeParameter");
    ps_set_str(in, kOfxPropName, 0, name);
    ps_set_str(in, kOfxPropChangeReason, 0, reason);
    ps_set_dbl(in, kOfxPropTime, 0, t);
    double scale[2] = {1, 1};
    ps_set_dblN(in, kOfxImageEffectPropRenderScale, 2, scale);
    call(kOfxActionBeginInstanceChanged, inst, in, NULL);
    OfxStatus s = call(kOfxActionInstanceChanged, inst, in, NULL);
    call(kOfxActionEndInstanceChanged, inst, in, NULL);
    pset_free(in);
    return s;
}

static OfxStatus cmd_set(const char *kind, const char *name, const char *value) {
    if (!inst) die("set before create");
    Param *p = find_param(&inst->params, name);
    if (!p) die("no parameter %s", name);
    if (!strcmp(kind, "set_int")) p->i = atoi(value);
    else if (!strcmp(kind, "set_double")) p->d = atof(value);
    else {
        free(p->s);
        p->s = strdup(value);
    }
    return instance_changed(name, H.first, kOfxChangeUserEdited);
}

static void write_output(const char *path, int w, int h) {
    FILE *f = fopen(path, "wb");
    if (!f) die("cannot write %s", path);
    float *row = malloc((size_t)w * 4 * sizeof *row);
    for (int r = 0; r < h; r++) { /* top-down */
        int y = h - 1 - r;
        for (int x = 0; x < w * 4; x++)
            row[x] = get_channel(H.out_data, (size_t)y * w * 4 + x);
        fwrite(row, sizeof *row, (size_t)w * 4, f);
    }
    free(row);
    fclose(f);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static OfxStatus cmd_render(double t, const char *outpath, double scale) {
    if (!inst) die("render before create");
    H.render_scale = scale;
    PSet *out = pset_new();
    OfxStatus s = call(kOfxImageEffectActionGetClipPreferences, inst, NULL, out);
    if (s != kOfxStatOK && s != kOfxStatReplyDefault) die("clip preferences: status %d", s);
    char *premult = NULL;
    ps_get_str(out, kOfxImageEffectPropPreMultiplication, 0, &premult);
    printf("PREMULT %s\n", premult ? premult : "-");
    pset_free(out);
    PSet *in = pset_new();
    ps_set_dbl(in, kOfxPropTime, 0, t);
    double sc[2] = {scale, scale};
    ps_set_dblN(in, kOfxImageEffectPropRenderScale, 2, sc);
    double rod[4] = {0, 0, H.w, H.h};
    ps_set_dblN(in, kOfxImageEffectPropRegionOfInterest, 4, rod);
    out = pset_new();
    s = call(kOfxImageEffectActionGetRegionsOfInterest, inst, in, out);
    double roi[4] = {0};
    if (s == kOfxStatOK && ps_get_dblN(out, "OfxImageClipPropRoI_Source", 4, roi) == kOfxStatOK)
        printf("ROI %.0f %.0f %.0f %.0f\n", roi[0], roi[1], roi[2], roi[3]);
    pset_free(out);
    pset_free(in);

    int w = (int)floor(H.w * scale + .5), h = (int)floor(H.h * scale + .5);
    H.out_w = w, H.out_h = h;
    H.out_data = calloc((size_t)w * h * 4, H.bytes);
    /* fill with a sentinel so untouched pixels show */
    for (size_t k = 0; k < (size_t)w * h * 4; k++) put_channel(H.out_data, k, H.bytes == 4 ? -1.f : 0.f);
    /* a one-frame sequence around the render, as hosts do (unless the mode is "unset") */
    int interactive = H.mode == MODE_INTERACTIVE;
    PSet *seq = NULL;
    if (H.mode != MODE_UNSET) {
        seq = pset_new();
        double range[2] = {t, t};
        ps_set_dblN(seq, kOfxImageEffectPropFrameRange, 2, range);
        ps_set_dbl(seq, kOfxImageEffectPropFrameStep, 0, 1.0);
        ps_set_int(seq, kOfxPropIsInteractive, 0, interactive);
        ps_set_dblN(seq, kOfxImageEffectPropRenderScale, 2, sc);
        ps_set_int(seq, kOfxImageEffectPropSequentialRenderStatus, 0, 0);
        ps_set_int(seq, kOfxImageEffectPropInteractiveRenderStatus, 0, interactive);
        s = call(kOfxImageEffectActionBeginSequenceRender, inst, seq, NULL);
        if (s != kOfxStatOK && s != kOfxStatReplyDefault) die("begin sequence render: status %d", s);
    }
    in = pset_new();
    ps_set_dbl(in, kOfxPropTime, 0, t);
    ps_set_str(in, kOfxImageEffectPropFieldToRender, 0, "OfxFieldNone");
    int win[4] = {0, 0, w, h};
    ps_set_intN(in, kOfxImageEffectPropRenderWindow, 4, win);
    ps_set_dblN(in, kOfxImageEffectPropRenderScale, 2, sc);
    if (H.mode != MODE_UNSET) {
        ps_set_int(in, kOfxImageEffectPropSequentialRenderStatus, 0, 0);
        ps_set_int(in, kOfxImageEffectPropInteractiveRenderStatus, 0, interactive);
    }
    H.abort_calls = 0;
    H.source_fetches = 0;
    H.fetch_ms = 0;
    H.progress_calls = 0;
    double t0 = now_ms();
    s = call(kOfxImageEffectActionRender, inst, in, NULL);
    double ms = now_ms() - t0;
    pset_free(in);
    if (seq) {
        OfxStatus e = call(kOfxImageEffectActionEndSequenceRender, inst, seq, NULL);
        if (e != kOfxStatOK && e != kOfxStatReplyDefault) die("end sequence render: status %d", e);
        pset_free(seq);
    }
    printf("RENDER %.0f %.3f ms status %d fetches %d progress %d host_ms %.3f\n", t, ms, s,
           H.source_fetches, H.progress_calls, H.fetch_ms);
    if (outpath && strcmp(outpath, "-") != 0) write_output(outpath, w, h);
    free(H.out_data);
    H.out_data = NULL;
    H.render_scale = 1.0;
    return s;
}

static PSet *pen_args(double t, double x, double y) {
    PSet *in = pset_new();
    ps_set_ptr(in, kOfxPropEffectInstance, 0, inst);
    ps_set_dbl(in, kOfxPropTime, 0, t);
    double one[2] = {1, 1}, pos[2] = {x, y}, vp[2] = {H.w, H.h};
    ps_set_dblN(in, kOfxImageEffectPropRenderScale, 2, one);
    ps_set_dblN(in, kOfxInteractPropPixelScale, 2, one);
    ps_set_dblN(in, kOfxInteractPropPenPosition, 2, pos);
    int ipos[2] = {(int)x, (int)y};
    ps_set_intN(in, "OfxInteractPropPenViewportPosition", 2, ipos);
    ps_set_dbl(in, kOfxInteractPropPenPressure, 0, 1.0);
    ps_set_dblN(in, kOfxInteractPropViewportSize, 2, vp);
    return in;
}

static OfxStatus cmd_overlay(void) {
    void *entry = NULL;
    if (ps_get_ptr(desc->props, kOfxImageEffectPluginPropOverlayInteractV1, 0, &entry) !=
            kOfxStatOK ||
        !entry)
        die("the effect declares no overlay interact");
    overlay_main = (OfxPluginEntryPoint *)entry;
    PSet *idesc = pset_new();
    OfxStatus s = overlay_main(kOfxActionDescribe, idesc, NULL, NULL);
    pset_free(idesc);
    if (s != kOfxStatOK && s != kOfxStatReplyDefault) return s;
    overlay_props = pset_new();
    ps_set_ptr(overlay_props, kOfxPropEffectInstance, 0, inst);
    s = overlay_main(kOfxActionCreateInstance, overlay_props, NULL, NULL);
    overlay_alive = 1;
    return s;
}

static OfxStatus cmd_pen(const char *action, double t, double x, double y) {
    if (!overlay_main) die("pen event before overlay");
    PSet *in = pen_args(t, x, y);
    plugin_edits = 0;
    OfxStatus s = overlay_main(action, overlay_props, in, NULL);
    pset_free(in);
    if (edit_depth != 0) die("%s: paramEditBegin without paramEditEnd", action);
    /* a host answers a plug-in's parameter edit with instanceChanged */
    if (plugin_edits) instance_changed("points", t, kOfxChangePluginEdited);
    return s;
}

static OfxStatus cmd_key(const char *action, int sym) {
    PSet *in = pen_args(H.first, 0, 0);
    ps_set_int(in, kOfxPropKeySym, 0, sym);
    ps_set_str(in, kOfxPropKeyString, 0, "");
    OfxStatus s = overlay_main(action, overlay_props, in, NULL);
    pset_free(in);
    return s;
}

#ifndef _WIN32 /* /proc: the commands that use these die on Windows */
/* the pids of this process's children: alive (zombie 0) or ended and not reaped (zombie 1) */
static int child_pids(int zombie, int *pids, int cap) {
    DIR *d = opendir("/proc");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t got = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[got] = '\0';
        char *close_paren = strrchr(buf, ')');
        char state;
        int ppid;
        if (!close_paren || sscanf(close_paren + 2, "%c %d", &state, &ppid) != 2) continue;
        if (ppid != getpid() || (state == 'Z') != zombie) continue;
        if (n < cap) pids[n++] = atoi(e->d_name);
    }
    if (d) closedir(d);
    return n;
}

/* this process's live children, counted, each sent ``sig`` unless 0 */
static int count_children(int sig) {
    int pids[256];
    int n = child_pids(0, pids, 256);
    for (int i = 0; sig && i < n; i++) kill(pids[i], sig);
    return n;
}

static int count_zombies(void) {
    int pids[256];
    return child_pids(1, pids, 256);
}

/* CHILDFD PID FD TARGET per open descriptor of each live child, or CHILDENV NAME=VALUE */
static OfxStatus child_info(const char *env_name) {
    int pids[64];
    int n = child_pids(0, pids, 64);
    for (int k = 0; k < n; k++) {
        char path[300];
        if (env_name) {
            snprintf(path, sizeof path, "/proc/%d/environ", pids[k]);
            FILE *f = fopen(path, "rb");
            char buf[65536];
            size_t got = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
            if (f) fclose(f);
            buf[got] = '\0';
            size_t len = strlen(env_name);
            int found = 0;
            for (size_t i = 0; i < got; i += strlen(buf + i) + 1)
                if (!strncmp(buf + i, env_name, len) && buf[i + len] == '=') {
                    printf("CHILDENV %s\n", buf + i);
                    found = 1;
                }
            if (!found) printf("CHILDENV %s unset\n", env_name);
            continue;
        }
        snprintf(path, sizeof path, "/proc/%d/fd", pids[k]);
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char link[600], target[1024];
            snprintf(link, sizeof link, "%s/%s", path, e->d_name);
            ssize_t got = readlink(link, target, sizeof target - 1);
            target[got > 0 ? got : 0] = '\0';
            printf("CHILDFD %d %s %s\n", pids[k], e->d_name, target);
        }
        if (d) closedir(d);
    }
    return kOfxStatOK;
}

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

#endif

static void cmd_unload_checks(void) {
    printf("LEAKS memory_suite=%ld image_memory=%ld mutexes=%ld images=%d\n", H.mem_blocks,
           H.image_mem_blocks, mutexes, H.images_out);
    if (H.mem_blocks || H.image_mem_blocks || mutexes || H.images_out)
        die("the plug-in did not give back what it took");
}

static OfxStatus run(char *cmd, char **a, int na) {
    if (!strcmp(cmd, "nosuite")) {
        snprintf(H.nosuite[H.n_nosuite], 64, "%s", a[0]);
        H.nosuite_ver[H.n_nosuite++] = atoi(a[1]);
        return 0;
    }
    if (!strcmp(cmd, "load")) return cmd_load(a[0]);
    if (!strcmp(cmd, "describe")) {
        desc = effect_new(kOfxTypeImageEffect);
        return call(kOfxActionDescribe, desc, NULL, NULL);
    }
    if (!strcmp(cmd, "describe_context")) {
        context = !strcmp(a[0], "general") ? kOfxImageEffectContextGeneral
                                           : kOfxImageEffectContextFilter;
        ctx_desc = effect_new(kOfxTypeImageEffect);
        PSet *in = pset_new();
        ps_set_str(in, kOfxImageEffectPropContext, 0, context);
        OfxStatus s = call(kOfxImageEffectActionDescribeInContext, ctx_desc, in, NULL);
        pset_free(in);
        printf("PARAMS %d CLIPS %d\n", ctx_desc->params.n, ctx_desc->nclips);
        return s;
    }
    if (!strcmp(cmd, "frames")) {
        snprintf(H.dir, sizeof H.dir, "%s", a[0]);
        H.w = atoi(a[1]), H.h = atoi(a[2]), H.n = atoi(a[3]), H.first = atoi(a[4]);
        H.fps = atof(a[5]);
        return 0;
    }
    if (!strcmp(cmd, "mask")) {
        snprintf(H.maskdir, sizeof H.maskdir, "%s", a[0]);
        return 0;
    }
    if (!strcmp(cmd, "depth")) {
        H.depth = !strcmp(a[0], "byte")    ? kOfxBitDepthByte
                  : !strcmp(a[0], "short") ? kOfxBitDepthShort
                                           : kOfxBitDepthFloat;
        H.bytes = !strcmp(a[0], "byte") ? 1 : !strcmp(a[0], "short") ? 2 : 4;
        return 0;
    }
    if (!strcmp(cmd, "create")) return cmd_create();
    if (!strncmp(cmd, "set_", 4)) {
        char value[2048] = ""; /* the rest of the line, spaces kept (single spaces) */
        for (int k = 1; k < na; k++) {
            if (k > 1) strncat(value, " ", sizeof value - strlen(value) - 1);
            strncat(value, a[k], sizeof value - strlen(value) - 1);
        }
        return cmd_set(cmd, a[0], value);
    }
    if (!strcmp(cmd, "press")) return instance_changed(a[0], atof(a[1]), kOfxChangeUserEdited);
    if (!strcmp(cmd, "print_param")) {
        Param *p = find_param(&inst->params, a[0]);
        if (!p) die("no parameter %s", a[0]);
        printf("PARAM %s = %s\n", a[0], p->s ? p->s : "");
        return 0;
    }
    if (!strcmp(cmd, "overlay")) return cmd_overlay();
    if (!strcmp(cmd, "pen_down")) return cmd_pen(kOfxInteractActionPenDown, atof(a[0]), atof(a[1]), atof(a[2]));
    if (!strcmp(cmd, "pen_motion")) return cmd_pen(kOfxInteractActionPenMotion, atof(a[0]), atof(a[1]), atof(a[2]));
    if (!strcmp(cmd, "pen_up")) return cmd_pen(kOfxInteractActionPenUp, atof(a[0]), atof(a[1]), atof(a[2]));
    if (!strcmp(cmd, "key_down")) return cmd_key(kOfxInteractActionKeyDown, (int)strtol(a[0], NULL, 0));
    if (!strcmp(cmd, "key_up")) return cmd_key(kOfxInteractActionKeyUp, (int)strtol(a[0], NULL, 0));
    if (!strcmp(cmd, "draw")) {
        PSet *in = pen_args(atof(a[0]), 0, 0);
        H.gl_vertices = 0;
        OfxStatus s = overlay_main(kOfxInteractActionDraw, overlay_props, in, NULL);
        pset_free(in);
        printf("DRAW vertices=%ld\n", H.gl_vertices);
        return s;
    }
    if (!strcmp(cmd, "render")) return cmd_render(atof(a[0]), na > 1 ? a[1] : "-", na > 2 ? atof(a[2]) : 1.0);
    if (!strcmp(cmd, "render_mode")) {
        H.mode = !strcmp(a[0], "final")   ? MODE_FINAL
                 : !strcmp(a[0], "unset") ? MODE_UNSET
                 : !strcmp(a[0], "interactive") ? MODE_INTERACTIVE
                                                : (die("render_mode %s?", a[0]), 0);
        return 0;
    }
    if (!strcmp(cmd, "background")) {
        H.background = atoi(a[0]);
        return 0;
    }
    if (!strcmp(cmd, "abort_after")) {
        H.abort_after = atoi(a[0]);
        return 0;
    }
    if (!strcmp(cmd, "fail_source")) {
        H.fail_source = atoi(a[0]);
        return 0;
    }
    if (!strcmp(cmd, "action")) return call(a[0], inst, NULL, NULL);
    if (!strcmp(cmd, "action_null")) return call(a[0], NULL, NULL, NULL);
    if (!strcmp(cmd, "expect_message")) {
        char want[1024] = "";
        for (int k = 0; k < na; k++) {
            strcat(want, k ? " " : "");
            strncat(want, a[k], sizeof want - strlen(want) - 2);
        }
        if (!strstr(H.last_message, want)) die("expected a message with '%s', last: '%s'", want, H.last_message);
        return 0;
    }
    if (!strcmp(cmd, "no_message")) {
        if (H.last_message[0]) die("unexpected message '%s'", H.last_message);
        return 0;
    }
    if (!strcmp(cmd, "clear_messages")) {
        H.last_message[0] = '\0';
        return 0;
    }
#ifdef _WIN32
    if (!strcmp(cmd, "children") || !strcmp(cmd, "zombies") || !strcmp(cmd, "open_fd") ||
        !strcmp(cmd, "child_fds") || !strcmp(cmd, "child_env") || !strcmp(cmd, "rss") ||
        !strcmp(cmd, "kill_children"))
        die("%s: this test host reads /proc, POSIX only", cmd);
    if (!strcmp(cmd, "sleep")) {
        Sleep((DWORD)atoi(a[0]));
        return 0;
    }
#else
    if (!strcmp(cmd, "kill_children")) {
        printf("KILLED %d\n", count_children(atoi(a[0])));
        return 0;
    }
    if (!strcmp(cmd, "children")) {
        printf("CHILDREN %d\n", count_children(0));
        return 0;
    }
    if (!strcmp(cmd, "zombies")) {
        printf("ZOMBIES %d\n", count_zombies());
        return 0;
    }
    if (!strcmp(cmd, "open_fd")) { /* kept open to the end, as a host's files are */
        int fd = open(a[0], O_RDONLY);
        if (fd < 0) die("open_fd %s: %s", a[0], strerror(errno));
        fd = fcntl(fd, F_DUPFD, 10); /* above the worker's own numbers (the original leaks) */
        printf("OPENED %d\n", fd);
        return 0;
    }
    if (!strcmp(cmd, "child_fds")) return child_info(NULL);
    if (!strcmp(cmd, "child_env")) return child_info(a[0]);
    if (!strcmp(cmd, "rss")) {
        printf("RSS %ld kB\n", rss_kb());
        return 0;
    }
    if (!strcmp(cmd, "sleep")) {
        usleep((useconds_t)atoi(a[0]) * 1000);
        return 0;
    }
#endif
    if (!strcmp(cmd, "fail_frame")) {
        H.fail_frame = atoi(a[0]);
        return 0;
    }
    if (!strcmp(cmd, "poison")) {
        H.poison_x = atoi(a[0]), H.poison_y = atoi(a[1]);
        H.poison = strtof(a[2], NULL); /* "nan", "inf", "-inf" */
        return 0;
    }
    if (!strcmp(cmd, "locale")) { /* the host's locale, as Qt hosts set it from LANG */
        if (!setlocale(LC_ALL, a[0])) die("no locale %s", a[0]);
        return 0;
    }
    if (!strcmp(cmd, "destroy")) {
        if (overlay_alive) {
            overlay_main(kOfxActionDestroyInstance, overlay_props, NULL, NULL);
            pset_free(overlay_props);
            overlay_props = NULL;
            overlay_alive = 0;
        }
        OfxStatus s = call(kOfxActionDestroyInstance, inst, NULL, NULL);
        effect_free(inst);
        inst = NULL;
        return s;
    }
    if (!strcmp(cmd, "unload")) {
        OfxStatus s = call(kOfxActionUnload, NULL, NULL, NULL);
        cmd_unload_checks();
        effect_free(desc);
        effect_free(ctx_desc);
        desc = ctx_desc = NULL;
        pset_free(host_props);
        host_props = NULL;
#ifdef _WIN32
        FreeLibrary(lib);
#else
        dlclose(lib);
#endif
        lib = NULL;
        return s;
    }
    die("unknown command %s", cmd);
    return 0;
}

int main(int argc, char **argv) {
    FILE *script = argc > 1 ? fopen(argv[1], "r") : stdin;
    if (!script) die("cannot open %s", argv[1]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    char line[4096];
    int lineno = 0;
    while (fgets(line, sizeof line, script)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        char *words[32];
        int n = 0;
        for (char *tok = strtok(line, " \t"); tok && n < 32; tok = strtok(NULL, " \t"))
            words[n++] = tok;
        if (n == 0 || words[0][0] == '#') continue;
        if (n < 2) die("line %d: expected '<status|*> <command> ...'", lineno);
        OfxStatus s = run(words[1], words + 2, n - 2);
        printf("STATUS %s %d\n", words[1], s);
        if (strcmp(words[0], "*") != 0 && atoi(words[0]) != s)
            die("line %d: %s returned %d, expected %s", lineno, words[1], s, words[0]);
    }
    if (script != stdin) fclose(script);
    if (inst) die("the script ended with a live instance");
    printf("DONE\n");
    return 0;
}
