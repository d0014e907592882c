/* The bundle's config: which command runs vosfx (Contents/Resources/vosfx_worker.cfg), and
 * the last words of a worker's log. Portable C: the file's path and opening it by a UTF-8 name
 * are the platform files' (vx_config_path, vx_fopen in vosfx_worker.c / vosfx_worker_win.c).
 */
#define _GNU_SOURCE
#include "vosfx_ofx.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VX_CFG_LINE 2047 /* bytes in a cfg line, its line break left out */

static char vx_cfg_store[8192];
static const char *vx_cfg_vosfx[VX_MAX_ARGS + 1];
static const char *vx_cfg_worker[VX_MAX_ARGS + 1];
static const char *vx_cfg_env[VX_MAX_ENV + 1];
static int vx_cfg_loaded;

static VxLock vx_cfg_lock = VX_LOCK_INIT;

static int vx_load_config_locked(char *err, size_t errlen);

/* read once per process (instances on several threads may ask at the same time) */
static int vx_load_config(char *err, size_t errlen) {
    vx_lock_take(&vx_cfg_lock);
    int r = vx_cfg_loaded ? 0 : vx_load_config_locked(err, errlen);
    vx_lock_give(&vx_cfg_lock);
    return r;
}

/* a cfg line that cannot be taken: the file and line named, the line's bytes never echoed raw */
static int vx_cfg_error(char *err, size_t errlen, const char *path, int lineno, const char *fmt,
                        ...) __attribute__((format(VX_PRINTF, 5, 6)));
static int vx_cfg_error(char *err, size_t errlen, const char *path, int lineno, const char *fmt,
                        ...) {
    char what[512], shown[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    vx_printable(shown, sizeof shown, path, strlen(path));
    snprintf(err, errlen, "the effect's config %s, line %d: %s", shown, lineno, what);
    return -1;
}

static int vx_load_config_locked(char *err, size_t errlen) {
    char path[4200];
    if (vx_config_path(path, sizeof path) != 0) {
        snprintf(err, errlen, "cannot locate the vosfx.ofx.bundle folder");
        return -1;
    }
    FILE *f = vx_fopen(path, "r");
    if (!f) {
        char shown[512];
        vx_printable(shown, sizeof shown, path, strlen(path));
        snprintf(err, errlen,
                 "vosfx is not set up for this effect: %s is missing (run `vosfx plugins "
                 "install ofx` with the Python environment that has vosfx)",
                 shown);
        return -1;
    }
    size_t used = 0;
    int nv = 0, nw = 0, ne = 0, lineno = 0, rc = 0;
    char line[VX_CFG_LINE + 2]; /* the longest line, its line break, the NUL */
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        if (n == sizeof line - 1 && line[n - 1] != '\n' && !feof(f)) {
            rc = vx_cfg_error(err, errlen, path, lineno, "longer than %d bytes", VX_CFG_LINE);
            break;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                         line[n - 1] == '\t'))
            line[--n] = '\0'; /* trailing blanks are no part of an argument */
        if (n == 0 || line[0] == '#') continue;
        if (!vx_utf8_valid(line)) {
            rc = vx_cfg_error(err, errlen, path, lineno, "not UTF-8 text");
            break;
        }
        const char *val = NULL;
        int kind = 0;
        if (strncmp(line, "vosfx ", 6) == 0) val = line + 6, kind = 1;
        else if (strncmp(line, "worker ", 7) == 0) val = line + 7, kind = 2;
        else if (strncmp(line, "env ", 4) == 0) val = line + 4, kind = 3;
        if (!val || !val[0]) {
            rc = vx_cfg_error(err, errlen, path, lineno,
                              "expected 'vosfx ARG', 'worker ARG', 'env NAME=VALUE' or "
                              "'# comment'");
            break;
        }
        if (kind == 3 && (val[0] == '=' || !strchr(val, '='))) {
            rc = vx_cfg_error(err, errlen, path, lineno, "expected 'env NAME=VALUE'");
            break;
        }
        int *count = kind == 1 ? &nv : kind == 2 ? &nw : &ne;
        int most = kind == 3 ? VX_MAX_ENV : VX_MAX_ARGS;
        if (*count >= most) {
            rc = vx_cfg_error(err, errlen, path, lineno, "more than %d '%s' lines", most,
                              kind == 1 ? "vosfx" : kind == 2 ? "worker" : "env");
            break;
        }
        size_t len = strlen(val) + 1;
        if (used + len > sizeof vx_cfg_store) {
            rc = vx_cfg_error(err, errlen, path, lineno, "the file holds more than %zu bytes of "
                              "arguments", sizeof vx_cfg_store);
            break;
        }
        char *copy = vx_cfg_store + used;
        memcpy(copy, val, len);
        used += len;
        if (kind == 1) vx_cfg_vosfx[nv++] = copy;
        else if (kind == 2) vx_cfg_worker[nw++] = copy;
        else vx_cfg_env[ne++] = copy;
    }
    if (rc == 0 && ferror(f)) rc = vx_cfg_error(err, errlen, path, lineno + 1, "unreadable");
    fclose(f);
    vx_cfg_vosfx[nv] = vx_cfg_worker[nw] = vx_cfg_env[ne] = NULL;
    if (rc != 0) {
        vx_cfg_vosfx[0] = vx_cfg_worker[0] = vx_cfg_env[0] = NULL;
        return -1;
    }
    if (nv == 0 && nw == 0) {
        char shown[512];
        vx_printable(shown, sizeof shown, path, strlen(path));
        snprintf(err, errlen, "%s names no vosfx command (expected lines 'vosfx ARG')", shown);
        return -1;
    }
    vx_cfg_loaded = 1;
    return 0;
}

const char *const *vx_vosfx_command(char *err, size_t errlen) {
    if (vx_load_config(err, errlen) != 0) return NULL;
    if (!vx_cfg_vosfx[0]) {
        snprintf(err, errlen, "the effect's config names no 'vosfx' command");
        return NULL;
    }
    return vx_cfg_vosfx;
}


void vxw_log_tail(const char *path, char *out, size_t cap) {
    out[0] = '\0';
    if (!path[0] || strcmp(path, "/dev/null") == 0 || strcmp(path, "NUL") == 0) return;
    FILE *f = vx_fopen(path, "rb");
    if (!f) return;
    char buf[4096];
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        fseek(f, size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0, SEEK_SET);
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* the last line that says something: not blank, not the worker's closing statistics */
    size_t end = n;
    while (end > 0) {
        while (end > 0 && (buf[end - 1] == '\n' || buf[end - 1] == '\r' || buf[end - 1] == ' '))
            end--;
        size_t start = end;
        while (start > 0 && buf[start - 1] != '\n') start--;
        if (end > start && strncmp(buf + start, "vosfx-ofx: stats:", 17) != 0) {
            vx_printable(out, cap, buf + start, end - start);
            return;
        }
        end = start;
    }
}


int vx_config(VxConfig *cfg, char *err, size_t errlen) {
    if (vx_load_config(err, errlen) != 0) return -1;
    cfg->vosfx = vx_cfg_vosfx;
    cfg->worker = vx_cfg_worker;
    cfg->env = vx_cfg_env;
    return 0;
}

int vx_worker_argv(const VxConfig *cfg, const char **argv) {
    int n = 0;
    if (cfg->worker[0]) {
        for (int i = 0; cfg->worker[i]; i++) argv[n++] = cfg->worker[i];
    } else {
        for (int i = 0; cfg->vosfx[i]; i++) argv[n++] = cfg->vosfx[i];
        argv[n++] = "ofx-worker";
    }
    return n;
}
