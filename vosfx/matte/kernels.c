/* The refiner's per-pixel loops in C: the same arithmetic as the numba loops of
 * vosfx/matte/kernels.py (each function here is named after one there, and gives its float32
 * results bit for bit: the same operations in the same order, no contraction into fused
 * multiply-adds, float32 where numba computes float32 and double where it computes float64).
 * vosfx/matte/kernels.py compiles this file with the system's C compiler on first use
 * (vosfx/native.py) and calls it through ctypes, which releases the GIL for each call; where it
 * cannot, numba compiles the Python loops instead. Why C first: numba's compiler (LLVM) takes a
 * process from ~10 to ~156 MiB resident just to load the cached loops, this library ~1 MiB.
 *
 * Arrays are C-contiguous (the Python side makes them so): a (h, w, c) array's element
 * (y, x, k) is at [(y * w + x) * c + k]. The full-resolution loops take a band of rows
 * [start, stop), as the Python side cuts a frame for its thread pool; the loops over pixels
 * one by one take their count first, then the numba loop's arguments in its order. A return
 * of -1 means memory could not be allocated (nothing was written); 0 means done.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Several builds of the loops that are worth vectorising wider than the compiler's baseline
 * (x86-64: SSE2), one picked at load time for the CPU (GCC's and clang's target_clones, on
 * ELF systems with ifunc); elsewhere one build for the baseline. */
#if defined(__x86_64__) && defined(__ELF__) && defined(__linux__) && \
    ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8) || \
     (defined(__clang__) && __clang_major__ >= 14))
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

#define EXPORT __attribute__((visibility("default")))

/* Python's max(a, b) and min(a, b) as numba compiles them: b if b > a (b < a) else a. */
static inline float py_max(float a, float b) { return b > a ? b : a; }
static inline float py_min(float a, float b) { return b < a ? b : a; }

/* kernels.py _positions: bilinear sampling positions as cv2.resize's INTER_LINEAR, for the
 * outputs [first, first + count) of n_out: the source samples i0, i1 and the weight t of i1,
 * the source position (X + 0.5) * n_in / n_out - 0.5 clamped to the border samples. */
static void positions(int64_t n_out, int64_t n_in, int64_t first, int64_t count, int64_t *i0,
                      int64_t *i1, float *t)
{
    double step = (double)n_in / (double)n_out;
    for (int64_t n = 0; n < count; n++) {
        double f = ((double)(first + n) + 0.5) * step - 0.5;
        int64_t i = (int64_t)floor(f);
        double frac = f - (double)i;
        if (i < 0) {
            i = 0;
            frac = 0.0;
        }
        if (i >= n_in - 1) {
            i = n_in - 1;
            frac = 0.0;
        }
        i0[n] = i;
        i1[n] = i + 1 < n_in - 1 ? i + 1 : n_in - 1;
        t[n] = (float)frac;
    }
}

CLONES EXPORT void vosfx_guide_moments(int64_t pixels, const float *low, float *out)
{
    for (int64_t p = 0; p < pixels; p++) {
        float r = low[3 * p], g = low[3 * p + 1], b = low[3 * p + 2];
        float *o = out + 9 * p;
        o[0] = r;
        o[1] = g;
        o[2] = b;
        o[3] = r * r;
        o[4] = r * g;
        o[5] = r * b;
        o[6] = g * g;
        o[7] = g * b;
        o[8] = b * b;
    }
}

CLONES EXPORT void vosfx_alpha_moments(int64_t pixels, const float *low, const float *p,
                                       float *out)
{
    for (int64_t i = 0; i < pixels; i++) {
        float v = p[i];
        float *o = out + 4 * i;
        o[0] = v;
        o[1] = low[3 * i] * v;
        o[2] = low[3 * i + 1] * v;
        o[3] = low[3 * i + 2] * v;
    }
}

CLONES EXPORT void vosfx_inverse_covariance(int64_t pixels, const float *sums, float eps,
                                            float *out)
{
    for (int64_t p = 0; p < pixels; p++) {
        const float *s = sums + 9 * p;
        float mr = s[0], mg = s[1], mb = s[2];
        float rr = s[3] - mr * mr + eps;
        float rg = s[4] - mr * mg;
        float rb = s[5] - mr * mb;
        float gg = s[6] - mg * mg + eps;
        float gb = s[7] - mg * mb;
        float bb = s[8] - mb * mb + eps;
        float i0 = gg * bb - gb * gb;
        float i1 = gb * rb - rg * bb;
        float i2 = rg * gb - gg * rb;
        float inv_det = 1.0f / (rr * i0 + rg * i1 + rb * i2);
        float *o = out + 6 * p;
        o[0] = i0 * inv_det;
        o[1] = i1 * inv_det;
        o[2] = i2 * inv_det;
        o[3] = (rr * bb - rb * rb) * inv_det;
        o[4] = (rg * rb - rr * gb) * inv_det;
        o[5] = (rr * gg - rg * rg) * inv_det;
    }
}

CLONES EXPORT void vosfx_edge_coefficients(int64_t pixels, const float *sums,
                                           const float *means, const float *inv_cov, float *out)
{
    for (int64_t p = 0; p < pixels; p++) {
        const float *s = sums + 4 * p, *m = means + 3 * p, *v = inv_cov + 6 * p;
        float mp = s[0];
        float cr = s[1] - m[0] * mp;
        float cg = s[2] - m[1] * mp;
        float cb = s[3] - m[2] * mp;
        float ar = v[0] * cr + v[1] * cg + v[2] * cb;
        float ag = v[1] * cr + v[3] * cg + v[4] * cb;
        float ab = v[2] * cr + v[4] * cg + v[5] * cb;
        float *o = out + 4 * p;
        o[0] = ar;
        o[1] = ag;
        o[2] = ab;
        o[3] = -(ar * m[0] + ag * m[1] + ab * m[2]);
    }
}

/* kernels.py _apply_edge_detail, for a guide of element type T (uint8, uint16, float32). */
#define APPLY_EDGE_DETAIL(NAME, T)                                                              \
    EXPORT int NAME(const float *alpha, const T *guide, const float *coef, int64_t big_h,      \
                    int64_t big_w, int64_t h, int64_t w, float gscale, float wscale,           \
                    float threshold, float *out, int64_t start, int64_t stop)                   \
    {                                                                                          \
        int64_t rows = stop > start ? stop - start : 0;                                        \
        int64_t *x0 = malloc(sizeof(int64_t) * (size_t)(2 * big_w + 2 * rows + 2));            \
        float *tx = malloc(sizeof(float) * (size_t)(big_w + rows + 1));                        \
        float *row = malloc(sizeof(float) * (size_t)(4 * w + 1));                              \
        if (!x0 || !tx || !row) {                                                              \
            free(x0);                                                                          \
            free(tx);                                                                          \
            free(row);                                                                         \
            return -1;                                                                         \
        }                                                                                      \
        int64_t *x1 = x0 + big_w, *y0 = x1 + big_w, *y1 = y0 + rows;                           \
        float *ty = tx + big_w;                                                                \
        positions(big_w, w, 0, big_w, x0, x1, tx);                                             \
        positions(big_h, h, start, rows, y0, y1, ty);                                          \
        for (int64_t n = 0; n < rows; n++)                                                     \
            NAME##_row(alpha + (start + n) * big_w, guide + (start + n) * big_w * 3,           \
                       coef + y0[n] * w * 4, coef + y1[n] * w * 4, ty[n], w, big_w, x0, x1,    \
                       tx, gscale, wscale, threshold, row, out + (start + n) * big_w);         \
        free(x0);                                                                              \
        free(tx);                                                                              \
        free(row);                                                                             \
        return 0;                                                                              \
    }

#define APPLY_EDGE_DETAIL_ROW(NAME, T)                                                          \
    CLONES static void NAME##_row(const float *a_row, const T *g_row, const float *ci,         \
                                  const float *cj, float t_y, int64_t w, int64_t big_w,        \
                                  const int64_t *x0, const int64_t *x1, const float *tx,       \
                                  float gscale, float wscale, float threshold, float *row,     \
                                  float *o_row)                                                \
    {                                                                                          \
        for (int64_t k = 0; k < 4 * w; k++)                                                    \
            row[k] = ci[k] + t_y * (cj[k] - ci[k]);                                            \
        for (int64_t xx = 0; xx < big_w; xx++) {                                               \
            float a = a_row[xx];                                                               \
            float wt = wscale * a * (1.0f - a);                                                \
            if (wt > threshold) {                                                              \
                const float *r0 = row + 4 * x0[xx], *r1 = row + 4 * x1[xx];                    \
                float t = tx[xx];                                                              \
                float d = 0.0f;                                                                \
                for (int c = 0; c < 3; c++) {                                                  \
                    float ac = r0[c] + t * (r1[c] - r0[c]);                                    \
                    d += ac * ((float)g_row[3 * xx + c] * gscale);                             \
                }                                                                              \
                d += r0[3] + t * (r1[3] - r0[3]);                                              \
                o_row[xx] = py_min(py_max(a + wt * d, 0.0f), 1.0f);                           \
            } else {                                                                           \
                o_row[xx] = a;                                                                 \
            }                                                                                  \
        }                                                                                      \
    }

APPLY_EDGE_DETAIL_ROW(vosfx_apply_edge_detail_u8, uint8_t)
APPLY_EDGE_DETAIL_ROW(vosfx_apply_edge_detail_u16, uint16_t)
APPLY_EDGE_DETAIL_ROW(vosfx_apply_edge_detail_f32, float)
APPLY_EDGE_DETAIL(vosfx_apply_edge_detail_u8, uint8_t)
APPLY_EDGE_DETAIL(vosfx_apply_edge_detail_u16, uint16_t)
APPLY_EDGE_DETAIL(vosfx_apply_edge_detail_f32, float)

CLONES EXPORT void vosfx_scale_and_clip(int64_t n, float *x, float scale, float shift,
                                        float limit)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = py_min(py_max(scale * x[i] + shift, -limit), limit);
}

CLONES EXPORT void vosfx_sigmoid_from_exp(int64_t n, float *e)
{
    const float big = 16777216.0f; /* 2^24 */
    for (int64_t i = 0; i < n; i++) {
        float v = e[i];
        e[i] = v < big ? 1.0f / (1.0f + v) : 0.0f;
    }
}

CLONES static void blend_row(const float *a_row, const float *p_row, const float *wi,
                             const float *wj, float t_y, int64_t w, int64_t big_w,
                             const int64_t *x0, const int64_t *x1, const float *tx, float *row,
                             float *o_row)
{
    for (int64_t x = 0; x < w; x++)
        row[x] = wi[x] + t_y * (wj[x] - wi[x]);
    for (int64_t xx = 0; xx < big_w; xx++) {
        float r0 = row[x0[xx]];
        float wt = r0 + tx[xx] * (row[x1[xx]] - r0);
        float a = a_row[xx];
        o_row[xx] = a + wt * (p_row[xx] - a);
    }
}

EXPORT int vosfx_blend_toward(const float *alpha, const float *prev, const float *weight,
                              int64_t big_h, int64_t big_w, int64_t h, int64_t w, float *out,
                              int64_t start, int64_t stop)
{
    int64_t rows = stop > start ? stop - start : 0;
    int64_t *x0 = malloc(sizeof(int64_t) * (size_t)(2 * big_w + 2 * rows + 2));
    float *tx = malloc(sizeof(float) * (size_t)(big_w + rows + 1));
    float *row = malloc(sizeof(float) * (size_t)(w + 1));
    if (!x0 || !tx || !row) {
        free(x0);
        free(tx);
        free(row);
        return -1;
    }
    int64_t *x1 = x0 + big_w, *y0 = x1 + big_w, *y1 = y0 + rows;
    float *ty = tx + big_w;
    positions(big_w, w, 0, big_w, x0, x1, tx);
    positions(big_h, h, start, rows, y0, y1, ty);
    for (int64_t n = 0; n < rows; n++)
        blend_row(alpha + (start + n) * big_w, prev + (start + n) * big_w, weight + y0[n] * w,
                  weight + y1[n] * w, ty[n], w, big_w, x0, x1, tx, row,
                  out + (start + n) * big_w);
    free(x0);
    free(tx);
    free(row);
    return 0;
}
