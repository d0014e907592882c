/* Internal declarations shared by the effect's C files. */
#ifndef VOSFX_OFX_H
#define VOSFX_OFX_H

#include <locale.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#ifndef _WIN32
#include <sys/types.h>
#endif
#ifdef __APPLE__
#include <xlocale.h>
#endif

#include "vosfx_ofx_api.h"
#include "vosfx_ofx_proto.h"

/* printf-style checks of our own formats, as the C library in use reads them (mingw-w64 built
 * with __USE_MINGW_ANSI_STDIO: the GNU forms, %zu included) */
#ifdef __MINGW_PRINTF_FORMAT
#define VX_PRINTF __MINGW_PRINTF_FORMAT
#else
#define VX_PRINTF printf
#endif

#define VX_PLUGIN_ID "org.vosfx.matte"
#define VX_ERR_LEN 1024

/* ---- host suites (fetched in setHost / load) ---- */
extern OfxHost *vx_host;
extern const OfxPropertySuiteV1 *vx_prop;
extern const OfxImageEffectSuiteV1 *vx_effect;
extern const OfxParameterSuiteV1 *vx_param;
extern const OfxMemorySuiteV1 *vx_mem;
extern const OfxMultiThreadSuiteV1 *vx_thread;
extern const OfxMessageSuiteV1 *vx_msg1;
extern const OfxMessageSuiteV2 *vx_msg2;
extern const OfxInteractSuiteV1 *vx_interact;
extern const OfxProgressSuiteV1 *vx_progress;

/* ---- the worker process (vosfx_worker.c on POSIX, vosfx_worker_win.c on Windows) ---- */
typedef struct VxWorker {
    int running;         /* 0: not running */
#ifdef _WIN32
    void *process;       /* HANDLE; NULL where none is given (Wine starting a Unix worker) */
    void *job;           /* HANDLE: the worker ends with the host */
    uintptr_t listener;  /* SOCKET: 127.0.0.1, until the worker connected */
    uintptr_t sock;      /* SOCKET: the connection, once the token was checked */
    void *shm_file;      /* HANDLE of the file the shared memory maps */
    void *shm_map;       /* HANDLE of the mapping */
    char token[65];      /* hex; the worker sends it first */
    char dir[512];       /* the worker's folder (its cwd): the shared file and the log */
#else
    pid_t pid;
    int sock;            /* our end of the socket pair */
    int shm_fd;
#endif
    unsigned char *shm;  /* mapped shared memory */
    size_t shm_size;
    char log_path[512];
} VxWorker;

/* a worker that is not running, nothing open */
void vxw_init(VxWorker *w);
/* start the worker; 0 on success, else -1 with a message in err */
int vxw_start(VxWorker *w, char *err, size_t errlen);
/* make the shared memory at least nbytes long; 0 or -1 */
int vxw_reserve(VxWorker *w, size_t nbytes, char *err, size_t errlen);
int vxw_send(VxWorker *w, uint32_t type, int32_t frame, int32_t a, int32_t b, uint32_t width,
             uint32_t height, uint32_t format, uint64_t shm_bytes, const char *text);
/* receive one message; text (NUL-terminated, truncated to textcap) may be NULL.
 * 0 on success, -1 on EOF/error/timeout (err says which) */
int vxw_recv(VxWorker *w, VxMsg *m, char *text, size_t textcap, int timeout_ms, char *err,
             size_t errlen);
/* the platform's channel (vosfx_channel.c builds the messages on them): n bytes written
 * whole, 0 or -1; n bytes read whole within timeout_ms, 0 or -1 with err saying why */
int vxw_write(VxWorker *w, const void *buf, size_t n);
int vxw_read(VxWorker *w, void *buf, size_t n, int timeout_ms, char *err, size_t errlen);
/* ask the worker to quit, wait a moment, then terminate it; describe how it ended; returns
 * its exit status, or -1 (killed by a signal, or not reaped) */
int vxw_stop(VxWorker *w, char *how, size_t howlen);
/* the last line of the worker's log that says something (a Python error: "ModuleNotFoundError:
 * No module named 'vosfx'"), printable and bounded by cap; "" when none */
void vxw_log_tail(const char *path, char *out, size_t cap);
/* spawn a detached command (the studio); 0 or -1. Reaped once it ends: vx_reap_detached at
 * every action; vx_forget_detached on unload */
int vx_spawn_detached(const char *const *argv, char *err, size_t errlen);
void vx_reap_detached(void);
void vx_forget_detached(void);
/* the command that runs vosfx, read from the bundle's config (NULL-terminated, static) */
const char *const *vx_vosfx_command(char *err, size_t errlen);

/* ---- a lock for process-wide state, statically initialised ---- */
#ifdef _WIN32
typedef struct VxLock {
    void *srw; /* an SRWLOCK */
} VxLock;
#define VX_LOCK_INIT {0}
#else
#include <pthread.h>
typedef pthread_mutex_t VxLock;
#define VX_LOCK_INIT PTHREAD_MUTEX_INITIALIZER
#endif
void vx_lock_take(VxLock *lock);
void vx_lock_give(VxLock *lock);

/* ---- the bundle's config (vosfx_config.c), read once per process ---- */
#define VX_MAX_ARGS 32 /* 'vosfx' lines, and 'worker' lines */
#define VX_MAX_ENV 16  /* 'env' lines */
typedef struct VxConfig {
    const char *const *vosfx;  /* "vosfx ARG" lines, NULL-terminated */
    const char *const *worker; /* "worker ARG" lines */
    const char *const *env;    /* "env NAME=VALUE" lines */
} VxConfig;
/* 0 with the config, or -1 with a message in err */
int vx_config(VxConfig *cfg, char *err, size_t errlen);
/* the worker's command into argv (room for VX_MAX_ARGS + 1 words): the config's worker lines,
 * or its vosfx lines and "ofx-worker"; returns the number of words (the platform adds its
 * channel's arguments and the NULL) */
int vx_worker_argv(const VxConfig *cfg, const char **argv);
/* platform parts: the config file's path (UTF-8), a file opened by its UTF-8 path */
int vx_config_path(char *out, size_t cap);
FILE *vx_fopen(const char *path, const char *mode);

/* ---- points (persisted in a string parameter) ---- */
typedef struct VxPoint {
    int frame;  /* OFX time of the frame */
    int obj;
    int label;  /* 1 include, 0 exclude */
    double x, y; /* canonical coordinates */
} VxPoint;

typedef struct VxPoints {
    VxPoint *items;
    int count, cap;
} VxPoints;

#define VX_MAX_POINTS 4096 /* per effect instance, all frames and objects */
/* malformed entries (and coordinates that are not finite) are skipped; -1 past VX_MAX_POINTS */
int vx_points_parse(const char *text, VxPoints *out);
/* serialise into a newly allocated string (vx_free it) */
char *vx_points_format(const VxPoints *pts);
int vx_points_add(VxPoints *pts, VxPoint p);
void vx_points_remove(VxPoints *pts, int index);
void vx_points_free(VxPoints *pts);

void *vx_alloc(size_t n);
void vx_free(void *p);

/* whether s is well-formed UTF-8 (what hosts, JSON and the worker take as text) */
int vx_utf8_valid(const char *s);
/* src[0..n) as one printable line in dst (cap bytes): control characters as spaces, bytes
 * that are not UTF-8 as '?', cut on a character boundary with "..." when too long */
void vx_printable(char *dst, size_t cap, const char *src, size_t n);

/* Numbers written or read between these two are in the C locale on this thread, whatever the
 * host set: Qt hosts call setlocale(LC_ALL, "") on Linux, and a German LANG would make printf
 * write "0,5" into the saved points and the worker's JSON. vx_numbers_end(vx_numbers_begin()) */
#ifdef _WIN32
typedef struct VxNumbers {
    int config;        /* _configthreadlocale's previous setting */
    char numeric[128]; /* the thread's LC_NUMERIC before */
} VxNumbers;
#else
typedef locale_t VxNumbers;
#endif
VxNumbers vx_numbers_begin(void);
void vx_numbers_end(VxNumbers previous);

/* ---- parameters ---- */
enum {
    VXP_MODE, VXP_OUT_OBJ, VXP_OBJ, VXP_LABEL, VXP_CLEAR_FRAME, VXP_CLEAR_ALL, VXP_POINTS,
    VXP_MASK_OBJ, VXP_OPACITY, VXP_MODEL, VXP_ALPHA, VXP_THRESHOLD, VXP_SOFTNESS, VXP_EDGE,
    VXP_SHIFT, VXP_FEATHER, VXP_CHOKE, VXP_CLIP_BLACK, VXP_CLIP_WHITE, VXP_FILL, VXP_SPECKS,
    VXP_TEMPORAL, VXP_NON_OVERLAP,
    VXP_STUDIO, VXP_STUDIO_SRC, VXP_COUNT
};
extern const char *const vx_param_names[VXP_COUNT];
/* the labels the host shows (messages name parameters by them) */
extern const char *const vx_param_labels[VXP_COUNT];

enum { VX_MODE_MATTE, VX_MODE_STRAIGHT, VX_MODE_PREMULT, VX_MODE_OVERLAY };

typedef struct VxInstance {
    OfxImageEffectHandle effect;
    OfxImageClipHandle src, mask, out;
    OfxParamSetHandle params;
    OfxParamHandle p[VXP_COUNT];
    OfxMutexHandle lock;
    VxWorker worker;
    char *sent_config;  /* the last CONFIG / PROMPTS the running worker accepted */
    char *sent_points;
    int failed_start;   /* the last start failed: say so once per parameter change */
    /* open sequence renders the host called interactive (kOfxPropIsInteractive 1) or not */
    int interactive_seqs, final_seqs;
    int final_render;   /* the render in progress delivers frames: a failure fails it */
    int notice;         /* the persistent message is a note (the Source changed), no error */
    /* the worker's word on how the model runs (with each matte), as last shown: kept up, not
     * posted again while it stands (without persistent messages: said once) */
    char model_note[VX_ERR_LEN];
    /* overlay state */
    int drag;           /* index into drag_pts being dragged, -1 none */
    VxPoints drag_pts;
    int shift, ctrl;
    double pen_x, pen_y;
} VxInstance;

VxInstance *vx_instance(OfxImageEffectHandle effect);
OfxStatus vx_overlay_main(const char *action, const void *handle, OfxPropertySetHandle inArgs,
                          OfxPropertySetHandle outArgs);
/* the effect's persistent message ("vosfx Matte: " and the text), or a message where the
 * host has none */
void vx_report(VxInstance *in, const char *type, const char *fmt, ...)
    __attribute__((format(VX_PRINTF, 3, 4)));
/* a message said once (not kept up: a click the effect cannot take) */
void vx_say(VxInstance *in, const char *type, const char *fmt, ...)
    __attribute__((format(VX_PRINTF, 3, 4)));
void vx_lock(VxInstance *in);
void vx_unlock(VxInstance *in);
/* read the points parameter; 0 or -1 */
int vx_get_points(VxInstance *in, VxPoints *out);
int vx_set_points(VxInstance *in, const VxPoints *pts, const char *undo_name);

/* ---- images (vosfx_image.c) ---- */
typedef struct VxImg {
    OfxPropertySetHandle handle;
    unsigned char *data;
    OfxRectI b;
    int rowbytes, depth, nc; /* bytes per channel; channels */
} VxImg;

/* the Source's frame area at the render scale, in pixel coordinates (x1, y1 inclusive) */
typedef struct VxGeom {
    int x1, y1, w, h;       /* at render scale */
    int full_w, full_h;     /* at render scale 1: the worker's frame size */
    OfxRectD rod;           /* canonical */
    double par, sx, sy;
    double first, last;     /* the Source's frame range (OFX times) */
    double fps;
} VxGeom;

int vx_img_open(OfxImageClipHandle clip, OfxTime t, const OfxRectD *region, VxImg *im);
void vx_img_close(VxImg *im);
void vx_write(VxImg *im, int x, int y, const float v[4]);
/* 0, -1 (no frame area), -2 (wider or taller than VX_MAX_SIDE) */
int vx_geometry(VxInstance *in, OfxTime t, double sx, double sy, VxGeom *g);
#define VX_MAX_SIDE 32768 /* pixels: the shared memory and the worker's frames stay bounded */
/* frame index into the shared memory: pixels, Mask plane, fingerprint; returns the bytes, or
 * 0 when the host has no Source image for it */
size_t vx_pack_frame(VxInstance *in, const VxGeom *g, int index, int with_mask, int *format,
                     int *has_mask, int *fp_bytes);
#define VX_FP_FLOATS (VX_FP_CELLS * VX_FP_CELLS * 3)
/* the fingerprint of the Source frame im (vosfx_ofx_proto.h) over g's frame area */
void vx_fingerprint(const VxImg *im, const VxGeom *g, float out[VX_FP_FLOATS]);
/* the output over the render window: alpha (top-down, g->w x g->h, rows stride floats apart;
 * stride 0: alpha[0] everywhere in the frame area) or NULL (pass-through) */
void vx_composite(VxImg *out, const VxImg *src, const float *alpha, const VxGeom *g,
                  OfxRectI win, int mode, float opacity, int stride);

/* ---- the worker conversation (vosfx_conversation.c) ---- */
/* a matte; the Source as it is (outside the clip); failed (reported); cancelled; no object
 * selected (an empty matte: alpha 0) */
enum { VX_R_MATTE, VX_R_PASS, VX_R_FAIL, VX_R_ABORT, VX_R_EMPTY };
/* sync settings and points, ask for frame index's matte (fp: the rendered Source's
 * fingerprint), serve the frame requests */
int vx_conversation(VxInstance *in, const VxGeom *g, int index, const float *fp,
                    int *progress_started);
void vx_clear_report(VxInstance *in);
/* how the model runs (a GPU asked for and absent, a tier in a slower form: the engine's
 * warnings, sent with a matte) as a warning kept up while it stands */
void vx_model_note(VxInstance *in, const char *text);
/* what a failed render does, for the messages (final render or viewer) */
const char *vx_outcome(const VxInstance *in);

/* ---- parameter values ---- */
int vx_get_int(VxInstance *in, int p);
double vx_get_double(VxInstance *in, int p);
const char *vx_get_string(VxInstance *in, int p);

#endif
