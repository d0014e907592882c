/* One attention, softmax(q k^T * scale) v, with int8 scores and no score matrix in memory:
 * the bf16 tier's memory attention and Hiera's global attentions on x86 CPUs with AVX512_VNNI
 * and AVX512_BF16 and no AMX (AMD's Zen 4). vosfx/engine/int8_attention.py compiles it with
 * the system's C compiler on first use and calls vosfx_int8_attention through ctypes;
 * docs/onnx.md says why.
 *
 * The arithmetic is the bf16 tier's int8 scores (vosfx/engine/openvino_graphs.py,
 * int8_scores): the keys lose their mean over the tokens; each channel of the (scaled)
 * queries is multiplied by a power of two and the keys' same channel divided by it (the
 * scores unchanged, exactly), the power the nearest to the square root of the keys' largest
 * magnitude over the queries' in that channel, so that a channel far larger on one side
 * (trained models' outlier channels) shares its range with the other side instead of taking
 * the int8 steps of every other channel; then the keys are quantised to int8 with one scale
 * (their largest magnitude / 127), each block of queries (`blocks` near-equal blocks, as
 * split_attention cuts them) with its own; the scores are the int8 products times the two
 * scales. What differs is the order: for a group of query rows the keys are taken a chunk at
 * a time, the scores of the chunk stay in the cache, the exponentials are taken against the
 * chunk's own maximum of each row and rounded to uint8 (x 255), and multiplied into the values
 * (int8: each channel less its midrange over the keys, over its half range / 127; the
 * midrange added back at the end, the exponentials' weights summing to 1, so that a channel
 * far from 0 against its range keeps int8's steps of its range, not of its magnitude) by the
 * same int8 products as the scores: int32 sums a chunk, weighed by the chunk maximum's exponential against the row's
 * running maximum (rescaling what was summed so far when that rises, as flash attention does)
 * into float32 sums; the rows are divided by their exponentials' sum (float32, unrounded) at
 * the end. No (rows, keys) matrix is written: the OpenVINO graph wrote and read its float32
 * scores once per pass (the product, the exponentials, the sums), 470 M of them a frame at
 * 1024. The values' products in int8 run at twice the rate of bfloat16's (vdpbf16ps, which
 * the kernel used before); against the exact attention they add ~1 % to the int8 scores'
 * error (docs/benchmarks/onnx.md, thirty-first pass).
 *
 * Shapes: queries and keys of `depth` channels, a multiple of 4 up to 512 (the last 16 read
 * under a mask where depth is not a multiple of 16); values of `channels`, a multiple of 16.
 * Layouts: queries as int8 in tiles of SCORE_ROWS rows, [rows / 12][depth / 4][12][4] (a
 * tile's 4 channels t of its 12 rows together: one pointer and constant offsets for the
 * broadcasts); keys + 128 as uint8 in panels of 16 keys, [keys / 16][depth / 4][16][4] (one
 * vpdpbusd operand per 4 channels of 16 keys); values as int8 quads of keys,
 * [keys / 4][channels][4] (one vpdpbusd operand per 16 channels of 4 keys, the uint8
 * exponentials of a row's 4 keys broadcast as the other). The uint8 keys
 * add 128 * (the sum of a query row's int8 values) to each score; it is taken back out.
 * The products are written as inline assembly: GCC 12 kept its intrinsics' accumulators in
 * memory between the instructions (a third of the speed).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <pthread.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512bf16,fma")))
#define MAX_DEPTH 512  /* the channels of a query and a key: a multiple of 4 up to this */
#define SCORE_ROWS 12  /* query rows of a score tile (12 x 32 keys: 24 accumulators) */
#define VALUE_ROWS 6   /* query rows of a value tile (6 x 64 channels: 24 accumulators) */
#define GROUP 48       /* query rows that share a chunk of keys (a multiple of both) */
#define CHUNK 256      /* keys a chunk: its scores, GROUP x CHUNK float32, stay in L2 */
#define SLAB 1024      /* keys a slab of the keys' statistics */
#define MAX_THREADS 64
#define MAX_BALANCE 1024.0 /* the channels' powers of two stay within 1 / this and this */
#define TINY 1e-30f        /* the least range of a channel, a block, the keys */

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

/* the lanes of 16 channels from `ch` that are below `depth` */
static inline __mmask16 lanes_below(int ch, int depth) {
    return depth - ch >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (depth - ch)) - 1);
}

/* exp(x) for x <= 0 (the scores less their chunk's maximum): 2^n * p(r), r = x - n ln 2 in
 * [-ln2 / 2, ln2 / 2], p of degree 6 (relative error ~2e-7; the results are rounded to
 * uint8 against the chunk's maximum, 2e-3 of it). */
TARGET static inline __m512 exp_nonpositive(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* ---- the score tile: SCORE_ROWS query rows x 32 keys ---- */

#define ROWS12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define SCORE_ZERO(r) __m512i s##r##a = _mm512_setzero_si512(), s##r##b = _mm512_setzero_si512();
#define SCORE_STEP(r)                                                               \
    {                                                                               \
        __m512i x = _mm512_set1_epi32(*(const int32_t *)(q + 4 * (r)));             \
        __asm__("vpdpbusd %2, %1, %0" : "+v"(s##r##a) : "v"(k0), "v"(x));           \
        __asm__("vpdpbusd %2, %1, %0" : "+v"(s##r##b) : "v"(k1), "v"(x));           \
    }
#define SCORE_OUT(r) \
    score_out(s##r##a, s##r##b, offset[r], scale[r], live0, live1, s + (size_t)(r) * CHUNK, top + (r));

/* a row's 32 int32 products to float32 scores in s (keys past the last: -inf), its running
 * maximum over the chunk in *top */
TARGET static inline __attribute__((always_inline)) void score_out(
    __m512i a, __m512i b, int32_t offset, float scale, __mmask16 live0, __mmask16 live1, float *s,
    __m512 *top) {
    __m512i o = _mm512_set1_epi32(offset);
    __m512 k = _mm512_set1_ps(scale), none = _mm512_set1_ps(-INFINITY);
    __m512 x = _mm512_mask_mov_ps(none, live0, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(a, o)), k));
    __m512 y = _mm512_mask_mov_ps(none, live1, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(b, o)), k));
    _mm512_store_ps(s, x);
    _mm512_store_ps(s + 16, y);
    *top = _mm512_max_ps(*top, _mm512_max_ps(x, y));
}

/* q: a tile of SCORE_ROWS rows of int8 queries, [quads][SCORE_ROWS][4]; keys: two panels of
 * 16, [quads][16][4] each */
TARGET static void score_tile(const int8_t *q, const uint8_t *keys, int quads, const int32_t *offset,
                              const float *scale, __mmask16 live0, __mmask16 live1, float *s,
                              __m512 *top) {
    ROWS12(SCORE_ZERO)
    const uint8_t *second = keys + (size_t)quads * 64;
    for (int t = 0; t < quads; t++, q += 4 * SCORE_ROWS) {
        __m512i k0 = _mm512_loadu_si512(keys + t * 64), k1 = _mm512_loadu_si512(second + t * 64);
        ROWS12(SCORE_STEP)
    }
    ROWS12(SCORE_OUT)
}

/* ---- the value tiles: VALUE_ROWS rows x 16 to 64 channels ---- */

#define COLS1(X, r) X(r, 0)
#define COLS2(X, r) COLS1(X, r) X(r, 1)
#define COLS3(X, r) COLS2(X, r) X(r, 2)
#define COLS4(X, r) COLS3(X, r) X(r, 3)
#define ROWS6(X, W) X(0, W) X(1, W) X(2, W) X(3, W) X(4, W) X(5, W)
#define VALUE_ZERO(r, j) __m512i c##r##j = _mm512_setzero_si512();
#define VALUE_ADD(r, j)                                                                       \
    _mm512_storeu_ps(acc + (r) * channels + 16 * (j),                                         \
                     _mm512_fmadd_ps(_mm512_cvtepi32_ps(c##r##j), _mm512_set1_ps(fac[r]),     \
                                     _mm512_loadu_ps(acc + (r) * channels + 16 * (j))));
#define VALUE_FETCH(r, j) __m512i v##j = _mm512_loadu_si512(vt + 64 * (j));
#define VALUE_DOT(r, j) __asm__("vpdpbusd %2, %1, %0" : "+v"(c##r##j) : "v"(e##r), "v"(v##j));
#define ROW_ZERO(r, W) COLS##W(VALUE_ZERO, r)
#define ROW_ADD(r, W) COLS##W(VALUE_ADD, r)
#define ROW_STEP(r, W)                                                                  \
    __m512i e##r = _mm512_set1_epi32(*(const int32_t *)(p + (r) * CHUNK + 4 * t));      \
    COLS##W(VALUE_DOT, r)

/* acc (VALUE_ROWS rows, stride channels; 16 x W of them) += fac[row] x the int32 products of
 * p (uint8 exponentials, stride CHUNK; `quads` quads of keys) and v (int8, quads of keys,
 * [quads][channels][4]) */
#define VALUE_TILE(W)                                                                   \
    TARGET static void value_tile_##W(const uint8_t *p, int quads, const int8_t *v,     \
                                      int channels, const float *fac, float *acc) {     \
        ROWS6(ROW_ZERO, W)                                                              \
        for (int t = 0; t < quads; t++) {                                               \
            const int8_t *vt = v + (size_t)t * channels * 4;                            \
            COLS##W(VALUE_FETCH, 0)                                                     \
            ROWS6(ROW_STEP, W)                                                          \
        }                                                                               \
        ROWS6(ROW_ADD, W)                                                               \
    }
VALUE_TILE(1)
VALUE_TILE(2)
VALUE_TILE(3)
VALUE_TILE(4)

TARGET static void value_tile(int width, const uint8_t *p, int quads, const int8_t *v,
                              int channels, const float *fac, float *acc) {
    switch (width) {
    case 4: value_tile_4(p, quads, v, channels, fac, acc); break;
    case 3: value_tile_3(p, quads, v, channels, fac, acc); break;
    case 2: value_tile_2(p, quads, v, channels, fac, acc); break;
    default: value_tile_1(p, quads, v, channels, fac, acc);
    }
}

/* ---- one call ---- */

typedef struct {
    /* inputs */
    const float *q, *k, *v;
    float *out;
    int rows, keys, depth, channels, blocks, threads;
    float scale;
    /* prepared */
    int padded_rows, padded_keys, quads, width; /* width: depth rounded up to 16 */
    int8_t *q8;       /* [padded_rows / SCORE_ROWS][quads][SCORE_ROWS][4] */
    int32_t *offset;  /* [padded_rows] 128 * the sum of a row's int8 queries */
    float *row_scale; /* [padded_rows] a row's score scale: its block's x the keys' */
    uint8_t *k8;      /* [padded_keys / 16][quads][16][4], key + 128 */
    int8_t *v8;       /* [padded_keys / 4][channels][4] values / their channel's step */
    float *v_step;    /* [channels] a channel's half range / 127 */
    float *v_shift;   /* [channels] a channel's midrange, taken from its values */
    float *v_partial; /* [slabs][2][channels] the values' least and largest per slab */
    float *partial;   /* [slabs][3][width]: the keys' sums, minima, maxima per slab */
    float *q_partial; /* [blocks][width]: the queries' largest magnitudes per block */
    float *mean;      /* [width] */
    float *q_balance; /* [width] the queries' multipliers: the scale times the power of two */
    float *k_balance; /* [width] the keys': 1 / (the power of two x the keys' step) */
    float key_step;   /* the balanced keys' largest magnitude less their mean / 127 */
} call_t;

typedef struct {
    call_t *call;
    int thread;
    int phase;
    int failed;
} part_t;

/* the keys' per-channel sums, minima and maxima over each slab of SLAB tokens this thread
 * takes (slabs fixed whatever the threads, summed in order after: the same result on any
 * number of threads), 128 channels at a time (8 registers each of sums, minima and maxima),
 * each token's row read in order */
TARGET static void key_stats(call_t *c, int thread) {
    int slabs = (c->keys + SLAB - 1) / SLAB, w = c->width;
    for (int slab = thread; slab < slabs; slab += c->threads) {
        float *sum = c->partial + (size_t)slab * 3 * w, *lo = sum + w, *hi = lo + w;
        int first = slab * SLAB, last = first + SLAB < c->keys ? first + SLAB : c->keys;
        for (int part = 0; part < w; part += 128) {
            int n = (w - part) / 16 < 8 ? (w - part) / 16 : 8;
            __m512 total[8], low[8], high[8];
            for (int j = 0; j < n; j++) {
                total[j] = _mm512_setzero_ps();
                low[j] = _mm512_set1_ps(INFINITY), high[j] = _mm512_set1_ps(-INFINITY);
            }
            for (int i = first; i < last; i++) {
                const float *row = c->k + (size_t)i * c->depth;
                for (int j = 0; j < n; j++) {
                    int ch = part + 16 * j;
                    __m512 x = _mm512_maskz_loadu_ps(lanes_below(ch, c->depth), row + ch);
                    total[j] = _mm512_add_ps(total[j], x);
                    low[j] = _mm512_min_ps(low[j], x);
                    high[j] = _mm512_max_ps(high[j], x);
                }
            }
            for (int j = 0; j < n; j++) {
                _mm512_storeu_ps(sum + part + 16 * j, total[j]);
                _mm512_storeu_ps(lo + part + 16 * j, low[j]);
                _mm512_storeu_ps(hi + part + 16 * j, high[j]);
            }
        }
    }
}

/* the values' least and largest per channel over each slab of SLAB tokens this thread takes */
TARGET static void value_stats(call_t *c, int thread) {
    int slabs = (c->keys + SLAB - 1) / SLAB;
    for (int slab = thread; slab < slabs; slab += c->threads) {
        float *least = c->v_partial + (size_t)slab * 2 * c->channels, *largest = least + c->channels;
        int first = slab * SLAB, last = first + SLAB < c->keys ? first + SLAB : c->keys;
        for (int ch = 0; ch < c->channels; ch += 16) {
            __m512 lo = _mm512_set1_ps(INFINITY), hi = _mm512_set1_ps(-INFINITY);
            for (int i = first; i < last; i++) {
                __m512 y = _mm512_loadu_ps(c->v + (size_t)i * c->channels + ch);
                lo = _mm512_min_ps(lo, y), hi = _mm512_max_ps(hi, y);
            }
            _mm512_storeu_ps(least + ch, lo);
            _mm512_storeu_ps(largest + ch, hi);
        }
    }
}

/* the queries' largest magnitude per channel over each block this thread takes */
TARGET static void query_stats(call_t *c, int thread) {
    int n = c->rows / c->blocks, extra = c->rows % c->blocks, d = c->depth;
    for (int b = thread; b < c->blocks; b += c->threads) {
        int first = b * n + (b < extra ? b : extra), count = n + (b < extra);
        float *big = c->q_partial + (size_t)b * c->width;
        for (int ch = 0; ch < d; ch += 16) {
            __m512 m = _mm512_setzero_ps();
            for (int r = first; r < first + count; r++)
                m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_maskz_loadu_ps(lanes_below(ch, d), c->q + (size_t)r * d + ch)));
            _mm512_storeu_ps(big + ch, m);
        }
    }
}

/* the keys' mean, each channel's power of two, the keys' step (one thread, from the slabs'
 * and blocks' statistics: the same on any number of threads). The channels past `depth` up
 * to `width` were read as zeros: mean 0, power 1. */
static void balance_channels(call_t *c) {
    int slabs = (c->keys + SLAB - 1) / SLAB, w = c->width;
    double step = 0.0;
    for (int ch = 0; ch < w; ch++) {
        double total = 0.0;
        float lo = INFINITY, hi = -INFINITY, q_top = 0.0f;
        for (int slab = 0; slab < slabs; slab++) {
            const float *part = c->partial + (size_t)slab * 3 * w;
            total += part[ch];
            lo = fminf(lo, part[w + ch]);
            hi = fmaxf(hi, part[2 * w + ch]);
        }
        for (int b = 0; b < c->blocks; b++) q_top = fmaxf(q_top, c->q_partial[(size_t)b * w + ch]);
        double mean = total / c->keys, k_top = fmax(hi - mean, mean - lo), power = 1.0;
        /* a channel zero on one side only gets the least (or most) power */
        double ratio = fmax(k_top, TINY) / fmax((double)q_top * fabs(c->scale), TINY);
        if (isfinite(ratio)) power = ldexp(1.0, (int)floor(0.5 * log2(ratio) + 0.5));
        power = fmin(fmax(power, 1.0 / MAX_BALANCE), MAX_BALANCE);
        c->mean[ch] = (float)mean;
        c->q_balance[ch] = (float)(c->scale * power);
        c->k_balance[ch] = (float)(1.0 / power);
        step = fmax(step, k_top / power);
    }
    c->key_step = fmaxf((float)step, TINY) / 127.0f;
    for (int ch = 0; ch < w; ch++) c->k_balance[ch] /= c->key_step;
}

/* int8 queries of the blocks this thread takes, balanced: each block scaled by its largest
 * magnitude */
TARGET static void quantise_queries(call_t *c, int thread) {
    int n = c->rows / c->blocks, extra = c->rows % c->blocks, d = c->depth;
    int8_t row8[MAX_DEPTH + 16] __attribute__((aligned(64)));
    float mul[MAX_DEPTH + 16] __attribute__((aligned(64)));
    for (int b = thread; b < c->blocks; b += c->threads) {
        int first = b * n + (b < extra ? b : extra), count = n + (b < extra);
        __m512 big = _mm512_setzero_ps();
        for (int ch = 0; ch < d; ch += 16)
            big = _mm512_max_ps(big, _mm512_mul_ps(_mm512_abs_ps(_mm512_loadu_ps(c->q_balance + ch)),
                                                   _mm512_loadu_ps(c->q_partial + (size_t)b * c->width + ch)));
        float top = _mm512_reduce_max_ps(big);
        if (!(top > TINY)) top = TINY;
        for (int ch = 0; ch < d; ch += 16)
            _mm512_store_ps(mul + ch, _mm512_mul_ps(_mm512_loadu_ps(c->q_balance + ch), _mm512_set1_ps(127.0f / top)));
        for (int r = first; r < first + count; r++) {
            __m512i sum = _mm512_setzero_si512();
            for (int ch = 0; ch < d; ch += 16) {
                __m512 y = _mm512_maskz_loadu_ps(lanes_below(ch, d), c->q + (size_t)r * d + ch);
                __m512i x = _mm512_cvtps_epi32(_mm512_mul_ps(y, _mm512_load_ps(mul + ch)));
                sum = _mm512_add_epi32(sum, x);
                _mm_store_si128((__m128i *)(row8 + ch), _mm512_cvtsepi32_epi8(x));
            }
            /* the row's 4 channels t at [tile][t][its place in the tile] */
            int32_t *tile = (int32_t *)(c->q8 + (size_t)(r / SCORE_ROWS) * c->quads * SCORE_ROWS * 4);
            for (int t = 0; t < c->quads; t++) memcpy(tile + t * SCORE_ROWS + r % SCORE_ROWS, row8 + 4 * t, 4);
            c->offset[r] = 128 * _mm512_reduce_add_epi32(sum);
            c->row_scale[r] = top / 127.0f * c->key_step;
        }
    }
}

/* this thread's panels of keys as uint8 (key + 128) and quads of values as int8 */
TARGET static void pack(call_t *c, int thread) {
    int panels = c->padded_keys / 16, d = c->depth;
    int8_t rows[16][MAX_DEPTH + 16] __attribute__((aligned(64)));
    for (int pnl = thread; pnl < panels; pnl += c->threads) {
        for (int j = 0; j < 16; j++) {
            int i = pnl * 16 + j;
            for (int ch = 0; ch < d; ch += 16) {
                __m512i x = _mm512_setzero_si512();
                if (i < c->keys) {
                    __mmask16 m = lanes_below(ch, d);
                    __m512 y = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, c->k + (size_t)i * d + ch),
                                             _mm512_loadu_ps(c->mean + ch));
                    x = _mm512_maskz_cvtps_epi32(m, _mm512_mul_ps(y, _mm512_loadu_ps(c->k_balance + ch)));
                }
                _mm_store_si128((__m128i *)(rows[j] + ch), _mm512_cvtsepi32_epi8(x));
            }
        }
        /* the panel's 4 channels t of its 16 keys: one 64-byte operand each; int8 + 128 as
         * uint8 (the top bits flipped) */
        uint32_t *dst = (uint32_t *)(c->k8 + (size_t)pnl * c->quads * 64);
        for (int t = 0; t < c->quads; t++)
            for (int j = 0; j < 16; j++) {
                uint32_t w;
                memcpy(&w, rows[j] + 4 * t, 4);
                dst[t * 16 + j] = w ^ 0x80808080u;
            }
        /* the values of the panel's 4 quads of keys, each over its channel's step */
        for (int quad = pnl * 4; quad < pnl * 4 + 4; quad++) {
            int8_t *dst8 = c->v8 + (size_t)quad * c->channels * 4;
            for (int ch = 0; ch < c->channels; ch += 16) {
                int8_t b[4][16] __attribute__((aligned(16)));
                __m512 step = _mm512_loadu_ps(c->v_step + ch), shift = _mm512_loadu_ps(c->v_shift + ch);
                for (int j = 0; j < 4; j++) {
                    int i = 4 * quad + j;
                    __m512 x = _mm512_setzero_ps();
                    if (i < c->keys) x = _mm512_sub_ps(_mm512_loadu_ps(c->v + (size_t)i * c->channels + ch), shift);
                    _mm_store_si128((__m128i *)b[j], _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_div_ps(x, step))));
                }
                for (int l = 0; l < 16; l++)
                    for (int j = 0; j < 4; j++) dst8[(ch + l) * 4 + j] = b[j][l];
            }
        }
    }
}

/* the attention of this thread's groups of rows */
TARGET static int attend(call_t *c, int thread) {
    int channels = c->channels;
    float *s = aligned_alloc(64, sizeof(float) * GROUP * CHUNK);
    uint8_t *p = aligned_alloc(64, (size_t)GROUP * CHUNK);
    float fac[GROUP];
    float *acc = aligned_alloc(64, sizeof(float) * GROUP * (size_t)channels);
    if (!s || !p || !acc) {
        free(s), free(p), free(acc);
        return 1;
    }
    float top_so_far[GROUP], sum[GROUP];
    __m512 top[GROUP];
    const __m512i lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i keys = _mm512_set1_epi32(c->keys);
    int groups = (c->padded_rows + GROUP - 1) / GROUP;
    for (int g = thread; g < groups; g += c->threads) {
        int r0 = g * GROUP, rows = c->padded_rows - r0 < GROUP ? c->padded_rows - r0 : GROUP;
        memset(acc, 0, sizeof(float) * rows * channels);
        for (int r = 0; r < rows; r++) top_so_far[r] = -INFINITY, sum[r] = 0.0f;
        for (int k0 = 0; k0 < c->padded_keys; k0 += CHUNK) {
            int chunk = c->padded_keys - k0 < CHUNK ? c->padded_keys - k0 : CHUNK;
            for (int r = 0; r < rows; r++) top[r] = _mm512_set1_ps(-INFINITY);
            for (int rt = 0; rt < rows; rt += SCORE_ROWS)
                for (int kt = 0; kt < chunk; kt += 32) {
                    __m512i index = _mm512_add_epi32(_mm512_set1_epi32(k0 + kt), lanes);
                    __mmask16 live0 = _mm512_cmplt_epi32_mask(index, keys);
                    __mmask16 live1 = _mm512_cmplt_epi32_mask(_mm512_add_epi32(index, _mm512_set1_epi32(16)), keys);
                    score_tile(c->q8 + (size_t)(r0 + rt) * c->quads * 4, c->k8 + (size_t)(k0 + kt) / 16 * c->quads * 64,
                               c->quads, c->offset + r0 + rt, c->row_scale + r0 + rt, live0, live1,
                               s + (size_t)rt * CHUNK + kt, top + rt);
                }
            for (int r = 0; r < rows; r++) {
                float high = _mm512_reduce_max_ps(top[r]);
                if (high > top_so_far[r]) {
                    if (top_so_far[r] > -INFINITY) { /* what was summed so far, rescaled */
                        float fall = expf(top_so_far[r] - high);
                        sum[r] *= fall;
                        __m512 f = _mm512_set1_ps(fall);
                        for (int ch = 0; ch < channels; ch += 16) {
                            float *a = acc + (size_t)r * channels + ch;
                            _mm512_store_ps(a, _mm512_mul_ps(f, _mm512_load_ps(a)));
                        }
                    }
                    top_so_far[r] = high;
                }
                /* the chunk's exponentials against its own maximum, as uint8 (x 255); what they
                 * weigh against the running maximum, in fac */
                __m512 m = _mm512_set1_ps(high), total = _mm512_setzero_ps();
                const __m512 full = _mm512_set1_ps(255.0f);
                const float *sr = s + (size_t)r * CHUNK;
                uint8_t *pr = p + (size_t)r * CHUNK;
                for (int i = 0; i < chunk; i += 16) {
                    __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_load_ps(sr + i), m));
                    total = _mm512_add_ps(total, e);
                    _mm_store_si128((__m128i *)(pr + i),
                                    _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(e, full))));
                }
                float lift = high > -INFINITY ? expf(high - top_so_far[r]) : 0.0f;
                sum[r] += lift * _mm512_reduce_add_ps(total);
                fac[r] = lift / 255.0f;
            }
            for (int rt = 0; rt < rows; rt += VALUE_ROWS)
                for (int ch = 0; ch < channels; ch += 64) {
                    int width = (channels - ch) / 16 < 4 ? (channels - ch) / 16 : 4;
                    value_tile(width, p + (size_t)rt * CHUNK, chunk / 4,
                               c->v8 + ((size_t)k0 / 4 * channels + ch) * 4, channels,
                               fac + rt, acc + (size_t)rt * channels + ch);
                }
        }
        for (int r = 0; r < rows && r0 + r < c->rows; r++) {
            __m512 inv = _mm512_set1_ps(1.0f / sum[r]);
            for (int ch = 0; ch < channels; ch += 16)
                _mm512_storeu_ps(c->out + (size_t)(r0 + r) * channels + ch,
                                 _mm512_fmadd_ps(_mm512_mul_ps(inv, _mm512_load_ps(acc + (size_t)r * channels + ch)),
                                                 _mm512_loadu_ps(c->v_step + ch), _mm512_loadu_ps(c->v_shift + ch)));
        }
    }
    free(s), free(p), free(acc);
    return 0;
}

TARGET static void *run_part(void *arg) {
    part_t *part = arg;
    call_t *c = part->call;
    switch (part->phase) {
    case 0: key_stats(c, part->thread), value_stats(c, part->thread), query_stats(c, part->thread); break;
    case 1: quantise_queries(c, part->thread), pack(c, part->thread); break;
    default: part->failed = attend(c, part->thread);
    }
    return NULL;
}

/* runs `phase` on c->threads threads (this one the first); nonzero if a part failed */
static int run_phase(call_t *c, int phase) {
    pthread_t ids[MAX_THREADS];
    part_t parts[MAX_THREADS];
    int started = 1, failed = 0;
    for (int t = 0; t < c->threads; t++) parts[t] = (part_t){c, t, phase, 0};
    for (int t = 1; t < c->threads; t++) {
        if (pthread_create(&ids[t], NULL, run_part, &parts[t]) != 0) break;
        started++;
    }
    for (int t = started; t < c->threads; t++) run_part(&parts[t]); /* not started: here */
    run_part(&parts[0]);
    for (int t = 1; t < started; t++) pthread_join(ids[t], NULL);
    for (int t = 0; t < c->threads; t++) failed |= parts[t].failed;
    return failed;
}

TARGET static int attention(call_t *c) {
    int slabs = (c->keys + SLAB - 1) / SLAB;
    c->padded_rows = (int)round_up((size_t)c->rows, GROUP);
    c->padded_keys = (int)round_up((size_t)c->keys, CHUNK);
    c->quads = c->depth / 4;
    c->width = (int)round_up((size_t)c->depth, 16);
    c->q8 = aligned_alloc(64, round_up((size_t)c->padded_rows * c->depth, 64));
    c->offset = calloc((size_t)c->padded_rows, sizeof(int32_t));
    c->row_scale = calloc((size_t)c->padded_rows, sizeof(float));
    c->k8 = aligned_alloc(64, round_up((size_t)c->padded_keys * c->depth, 64));
    c->v8 = aligned_alloc(64, round_up((size_t)c->padded_keys * c->channels, 64));
    c->v_step = calloc(2 * (size_t)c->channels, sizeof(float)); /* with v_shift */
    c->v_shift = c->v_step ? c->v_step + c->channels : NULL;
    c->v_partial = calloc((size_t)slabs * 2 * c->channels, sizeof(float));
    c->partial = malloc(sizeof(float) * 3 * c->width * (size_t)slabs);
    c->q_partial = calloc((size_t)c->blocks * c->width, sizeof(float));
    c->mean = calloc((size_t)c->width * 3, sizeof(float)); /* with q_balance and k_balance */
    c->q_balance = c->mean ? c->mean + c->width : NULL;
    c->k_balance = c->mean ? c->mean + 2 * c->width : NULL;
    int status = 2;
    if (c->q8 && c->offset && c->row_scale && c->k8 && c->v8 && c->v_step && c->v_partial &&
        c->partial && c->q_partial && c->mean) {
        memset(c->q8, 0, (size_t)c->padded_rows * c->depth);
        run_phase(c, 0);
        balance_channels(c);
        for (int ch = 0; ch < c->channels; ch++) { /* each channel's midrange and half range */
            float least = INFINITY, largest = -INFINITY;
            for (int slab = 0; slab < slabs; slab++) {
                least = fminf(least, c->v_partial[(size_t)slab * 2 * c->channels + ch]);
                largest = fmaxf(largest, c->v_partial[(size_t)slab * 2 * c->channels + c->channels + ch]);
            }
            int finite = isfinite(least) && isfinite(largest);
            c->v_shift[ch] = finite ? 0.5f * least + 0.5f * largest : 0.0f;
            c->v_step[ch] = finite ? fmaxf(0.5f * largest - 0.5f * least, 1e-30f) / 127.0f : NAN; /* NaN out */
        }
        run_phase(c, 1);
        status = run_phase(c, 2) ? 2 : 0;
    }
    free(c->q8), free(c->offset), free(c->row_scale), free(c->k8), free(c->v8), free(c->v_step),
        free(c->v_partial);
    free(c->partial), free(c->q_partial), free(c->mean);
    return status;
}

static int cpu_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bf16");
}
#else
static int cpu_supported(void) { return 0; }
#endif

/* 1 where this CPU runs the kernel (x86 with AVX512 F/BW/VL/DQ, VNNI and BF16) */
int vosfx_int8_attention_supported(void) { return cpu_supported(); }

/* out (rows, channels) = softmax(q k^T * scale) v, float32 row-major; q (rows, depth),
 * k (keys, depth), v (keys, channels); depth a multiple of 4 up to 512, channels a multiple
 * of 16; `blocks` query blocks, each quantised with its own scale. Returns 0, 1 for a CPU or
 * shape it does not take, 2 where memory ran out. */
int vosfx_int8_attention(const float *q, const float *k, const float *v, float *out, int rows,
                         int keys, int depth, int channels, float scale, int blocks, int threads) {
    if (!cpu_supported() || depth <= 0 || depth % 4 || depth > 512 || channels <= 0 ||
        channels % 16 || rows <= 0 || keys <= 0 || blocks <= 0 || blocks > rows)
        return 1;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    call_t c = {0};
    c.q = q, c.k = k, c.v = v, c.out = out;
    c.rows = rows, c.keys = keys, c.depth = depth, c.channels = channels, c.blocks = blocks;
    c.scale = scale;
    c.threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    return attention(&c);
#else
    (void)q, (void)k, (void)v, (void)out, (void)scale;
    return 1;
#endif
}
