/* Prompt points, persisted in the effect's hidden "points" string parameter so they live in the
 * host's project and take part in its undo: "frame obj label x y;" per point, x and y in
 * canonical coordinates (the host's pixel space at render scale 1, y up). */
#define _GNU_SOURCE
#include "vosfx_ofx.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


int vx_points_add(VxPoints *pts, VxPoint p) {
    if (pts->count >= VX_MAX_POINTS) return -1;
    if (pts->count == pts->cap) {
        int cap = pts->cap ? pts->cap * 2 : 16;
        VxPoint *items = vx_alloc((size_t)cap * sizeof *items);
        if (!items) return -1;
        if (pts->count) memcpy(items, pts->items, (size_t)pts->count * sizeof *items);
        vx_free(pts->items);
        pts->items = items;
        pts->cap = cap;
    }
    pts->items[pts->count++] = p;
    return 0;
}

void vx_points_remove(VxPoints *pts, int index) {
    if (index < 0 || index >= pts->count) return;
    memmove(pts->items + index, pts->items + index + 1,
            (size_t)(pts->count - index - 1) * sizeof *pts->items);
    pts->count--;
}

void vx_points_free(VxPoints *pts) {
    vx_free(pts->items);
    pts->items = NULL;
    pts->count = pts->cap = 0;
}

/* malformed entries are skipped: a hand-edited project must not stop the effect */
int vx_points_parse(const char *text, VxPoints *out) {
    out->count = 0;
    if (!text) return 0;
    VxNumbers previous = vx_numbers_begin(); /* "8.500" whatever the host's locale */
    int rc = 0;
    const char *p = text;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[128];
        if (len < sizeof item) {
            memcpy(item, p, len);
            item[len] = '\0';
            VxPoint pt;
            if (sscanf(item, "%d %d %d %lf %lf", &pt.frame, &pt.obj, &pt.label, &pt.x, &pt.y) ==
                    5 &&
                pt.obj >= 1 && pt.obj <= 255 && isfinite(pt.x) && isfinite(pt.y) &&
                fabs(pt.x) < 1e9 && fabs(pt.y) < 1e9) { /* "nan", "inf", 1e308: skipped */
                pt.label = pt.label ? 1 : 0;
                if (vx_points_add(out, pt) != 0) {
                    rc = -1;
                    break;
                }
            }
        }
        if (!end) break;
        p = end + 1;
    }
    vx_numbers_end(previous);
    return rc;
}

char *vx_points_format(const VxPoints *pts) {
    size_t cap = (size_t)pts->count * 64 + 1;
    char *s = vx_alloc(cap);
    if (!s) return NULL;
    size_t used = 0;
    s[0] = '\0';
    VxNumbers previous = vx_numbers_begin();
    for (int i = 0; i < pts->count; i++) {
        const VxPoint *q = &pts->items[i];
        int n = snprintf(s + used, cap - used, "%d %d %d %.3f %.3f;", q->frame, q->obj, q->label,
                         q->x, q->y);
        if (n < 0 || (size_t)n >= cap - used) break;
        used += (size_t)n;
    }
    vx_numbers_end(previous);
    return s;
}
