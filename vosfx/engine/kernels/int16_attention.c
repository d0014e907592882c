/* One attention, softmax(q k^T * scale) v, with its scores from 16-bit integer products and no
 * score matrix in memory: the default (fp32) path's memory attention on x86 CPUs whose
 * AVX512_VNNI word products (vpdpwssd: 32 multiply-adds an instruction) run as fast as their
 * float32 FMAs (16), AMD's Zen 4 and Zen 5; vosfx/engine/int16_attention.py compiles it on
 * first use, measures that rate (vosfx_int16_gain) and calls vosfx_int16_attention through
 * ctypes; docs/onnx.md says why. On CPUs with AMX (Intel's Xeons, whose word products run
 * no faster than their FMAs) the scores have a second form, FORM_AMX: bfloat16 triples on
 * AMX's tiles (the AMX section below), and so is the values' product there; the rest of the
 * kernel is the same. A third form, FORM_AMX_BF16, is that form with hi.hi alone (bfloat16
 * products, ~2^-9 of each, float32 sums): the bf16 tier's attentions on those CPUs
 * (vosfx/engine/amx_attention.py), a third of the tiles' products.
 *
 * The arithmetic. The keys lose their mean over the tokens (the softmax cancels the shift this
 * gives each query's scores); each channel of the queries is multiplied by a power of two and
 * the same channel of the keys divided by it (the scores unchanged, exactly), the power the
 * nearest to the fourth root of the keys' variance over the queries' mean square in that
 * channel, so that a channel far larger on one side than on the other (an outlier channel)
 * does not take the other channels' precision; and each key and each query is scaled to
 * 16-bit integers by its own factor: the largest that keeps its Euclidean norm under
 * NORM_LIMIT and every element inside int16. A query's int32 dot product with a key is then
 * bounded by the product of the two norms (Cauchy-Schwarz), under 2^31, and so is every
 * partial sum on the way: the integer sums are exact, whatever the depth, and the only
 * rounding is each element's to an integer, ~2^-16 of its vector's norm (the scores to ~1e-5
 * of |q| |k|, against float32's ~1e-7 from its own rounding). The scores are the int32 sums
 * times the query's and the key's steps. The rest is float32: for a group of query rows the
 * keys are taken a chunk at a time (the chunk's scores stay in the cache), the exponentials
 * taken against each row's running maximum (flash attention: what was summed so far is
 * rescaled when it rises), multiplied into the float32 values by FMAs and summed; each row
 * is divided by its exponentials' sum at the end. A channel whose values all lie on one side
 * of 0 is summed less its midrange over the keys, added back at the end (the softmax's
 * weights sum to 1: only the rounding changes), so that values far from 0 against their
 * range (an offset a channel carries) are summed to float32's rounding of their range, not
 * of their magnitude (over 8,192 keys at 100x their spread from 0: 4e-6 of the spread where
 * the plain sums gave 6e-4, numpy's float32 5e-5); a channel on both sides is at most its
 * range from 0 already and is summed as it is (a shift would round its small outputs to the
 * shift's precision).
 *
 * Shapes: queries and keys of `depth` channels, a multiple of 2 up to 512; values of
 * `channels`, a multiple of 16. Layouts: queries as int16 in tiles of SCORE_ROWS rows,
 * [rows / 12][depth / 2][12][2] (a pair of a row's channels is one 32-bit broadcast); keys as
 * int16 in panels of 16 keys, [keys / 16][depth / 2][16][2] (one vpdpwssd operand per pair of
 * channels of 16 keys); the values (less their shifts) as float32 rows. The products are
 * inline assembly, as in int8_attention.c (GCC 12 kept intrinsics' accumulators in memory).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")))
/* AMX's intrinsics came with GCC 11 and clang 12: an older compiler builds the kernel without
 * its AMX form (emulated in tests, where the tiles' instructions are not needed) */
#if defined(VOSFX_EMULATE_AMX) || (defined(__clang__) && __clang_major__ >= 12) || \
    (!defined(__clang__) && __GNUC__ >= 11)
#define HAS_AMX 1
#define TARGET_AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,amx-tile,amx-bf16")))
#else
#define HAS_AMX 0
#define TARGET_AMX TARGET
#endif
#define MAX_DEPTH 512     /* the channels of a query and a key: a multiple of 2 up to this */
#define SCORE_ROWS 12     /* query rows of a score tile (12 x 32 keys: 24 accumulators) */
#define VALUE_ROWS 6      /* query rows of a value tile (6 x 64 channels: 24 accumulators) */
#define GROUP 48          /* query rows that share a chunk of keys (a multiple of both) */
#define AMX_GROUP 96      /* the AMX form's (a multiple of its 32-row blocks and VALUE_ROWS) */
#define CHUNK 256         /* keys a chunk: its scores, GROUP x CHUNK float32, stay in L2 */
#define AMX_DEPTH 32      /* the AMX form's channels are padded to a multiple of this */
#define SLAB 1024         /* keys or queries a slab of their channels' sums */
#define NORM_LIMIT 46000.0f /* 46000 + 0.5 sqrt(512) rounding, squared: under 2^31 */
#define MAX_THREADS 64
#define MAX_BALANCE 1024.0f /* the channels' powers of two stay within 1 / this and this */
/* the kernel's forms of its scores' products: the default (fp32) path's two, and the AMX form
 * in bfloat16 alone (hi.hi: the bf16 tier's, ~2^-9 of each product) */
enum { FORM_AVX512 = 1, FORM_AMX = 2, FORM_AMX_BF16 = 3 };

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

/* the lanes of 16 channels from `ch` that are below `depth` */
static inline __mmask16 lanes_below(int ch, int depth) {
    return depth - ch >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (depth - ch)) - 1);
}

/* exp(x) for x <= 0: 2^n * p(r), r = x - n ln 2 in [-ln2 / 2, ln2 / 2], p of degree 6
 * (relative error ~2e-7, float32's own) */
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

/* one row of `depth` floats (less `mean` where given, times `balance` channel by channel) as
 * int16 in `out` (MAX_DEPTH + 32 slots); returns the factor it was multiplied by (0 for a row
 * of zeros) */
TARGET static float to_int16(const float *row, const float *mean, const float *balance, int depth,
                             int16_t *out) {
    __m512 squares = _mm512_setzero_ps(), big = _mm512_setzero_ps();
    for (int ch = 0; ch < depth; ch += 16) {
        __mmask16 m = lanes_below(ch, depth);
        __m512 x = _mm512_maskz_loadu_ps(m, row + ch);
        if (mean) x = _mm512_maskz_sub_ps(m, x, _mm512_loadu_ps(mean + ch));
        x = _mm512_mul_ps(x, _mm512_loadu_ps(balance + ch));
        squares = _mm512_fmadd_ps(x, x, squares);
        big = _mm512_max_ps(big, _mm512_abs_ps(x));
    }
    float norm = sqrtf(_mm512_reduce_add_ps(squares)), top = _mm512_reduce_max_ps(big);
    float factor = 0.0f;
    if (norm > 0.0f && top > 0.0f && isfinite(norm)) {
        factor = NORM_LIMIT / norm;
        if (factor * top > 32767.0f) factor = 32767.0f / top;
    }
    __m512 f = _mm512_set1_ps(factor);
    for (int ch = 0; ch < depth; ch += 16) {
        __mmask16 m = lanes_below(ch, depth);
        __m512 x = _mm512_maskz_loadu_ps(m, row + ch);
        if (mean) x = _mm512_maskz_sub_ps(m, x, _mm512_loadu_ps(mean + ch));
        x = _mm512_mul_ps(x, _mm512_loadu_ps(balance + ch));
        _mm256_storeu_si256((__m256i *)(out + ch), _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(x, f))));
    }
    return factor;
}

/* ---- the score tile: SCORE_ROWS query rows x 32 keys ---- */

#define ROWS12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define SCORE_ZERO(r) __m512i s##r##a = _mm512_setzero_si512(), s##r##b = _mm512_setzero_si512();
#define SCORE_STEP(r)                                                               \
    {                                                                               \
        __m512i x = _mm512_set1_epi32(*(const int32_t *)(q + 2 * (r)));             \
        __asm__("vpdpwssd %2, %1, %0" : "+v"(s##r##a) : "v"(k0), "v"(x));           \
        __asm__("vpdpwssd %2, %1, %0" : "+v"(s##r##b) : "v"(k1), "v"(x));           \
    }
#define SCORE_OUT(r) \
    score_out(s##r##a, s##r##b, step[r], ka, kb, live0, live1, s + (size_t)(r) * CHUNK, top + (r));

/* a row's 32 int32 sums to float32 scores in s (keys past the last: -inf), its maximum over
 * the chunk so far in *top */
TARGET static inline __attribute__((always_inline)) void score_out(
    __m512i a, __m512i b, float step, __m512 ka, __m512 kb, __mmask16 live0, __mmask16 live1,
    float *s, __m512 *top) {
    __m512 k = _mm512_set1_ps(step), none = _mm512_set1_ps(-INFINITY);
    __m512 x = _mm512_mask_mov_ps(none, live0, _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), k), ka));
    __m512 y = _mm512_mask_mov_ps(none, live1, _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(b), k), kb));
    _mm512_store_ps(s, x);
    _mm512_store_ps(s + 16, y);
    *top = _mm512_max_ps(*top, _mm512_max_ps(x, y));
}

/* q: a tile of SCORE_ROWS rows of int16 queries, [pairs][SCORE_ROWS][2]; keys: two panels of
 * 16, [pairs][16][2] each; key_step: the 32 keys' steps */
TARGET static void score_tile(const int16_t *q, const int16_t *keys, int pairs, const float *step,
                              const float *key_step, __mmask16 live0, __mmask16 live1, float *s,
                              __m512 *top) {
    ROWS12(SCORE_ZERO)
    const int16_t *second = keys + (size_t)pairs * 32;
    for (int t = 0; t < pairs; t++, q += 2 * SCORE_ROWS) {
        __m512i k0 = _mm512_loadu_si512(keys + t * 32), k1 = _mm512_loadu_si512(second + t * 32);
        ROWS12(SCORE_STEP)
    }
    __m512 ka = _mm512_loadu_ps(key_step), kb = _mm512_loadu_ps(key_step + 16);
    ROWS12(SCORE_OUT)
}

/* ---- the value tiles: VALUE_ROWS rows x 16 to 64 channels, float32 ---- */

#define COLS1(X, r) X(r, 0)
#define COLS2(X, r) COLS1(X, r) X(r, 1)
#define COLS3(X, r) COLS2(X, r) X(r, 2)
#define COLS4(X, r) COLS3(X, r) X(r, 3)
#define ROWS6(X, W) X(0, W) X(1, W) X(2, W) X(3, W) X(4, W) X(5, W)
#define VALUE_LOAD(r, j) __m512 c##r##j = _mm512_loadu_ps(acc + (r) * channels + 16 * (j));
#define VALUE_STORE(r, j) _mm512_storeu_ps(acc + (r) * channels + 16 * (j), c##r##j);
#define VALUE_FETCH(r, j) __m512 v##j = _mm512_loadu_ps(vi + 16 * (j));
#define VALUE_FMA(r, j) c##r##j = _mm512_fmadd_ps(e##r, v##j, c##r##j);
#define ROW_LOAD(r, W) COLS##W(VALUE_LOAD, r)
#define ROW_STORE(r, W) COLS##W(VALUE_STORE, r)
#define ROW_STEP(r, W)                                      \
    __m512 e##r = _mm512_set1_ps(p[(r) * CHUNK + i]);       \
    COLS##W(VALUE_FMA, r)

/* acc (VALUE_ROWS rows, stride channels; 16 x W of them) += p (exponentials, stride CHUNK;
 * `count` keys) x v (float32, stride channels) */
#define VALUE_TILE(W)                                                                     \
    TARGET static void value_tile_##W(const float *p, int count, const float *v,          \
                                      int channels, float *acc) {                         \
        ROWS6(ROW_LOAD, W)                                                                \
        for (int i = 0; i < count; i++) {                                                 \
            const float *vi = v + (size_t)i * channels;                                   \
            COLS##W(VALUE_FETCH, 0)                                                       \
            ROWS6(ROW_STEP, W)                                                            \
        }                                                                                 \
        ROWS6(ROW_STORE, W)                                                               \
    }
VALUE_TILE(1)
VALUE_TILE(2)
VALUE_TILE(3)
VALUE_TILE(4)

TARGET static void value_tile(int width, const float *p, int count, const float *v, int channels,
                              float *acc) {
    switch (width) {
    case 4: value_tile_4(p, count, v, channels, acc); break;
    case 3: value_tile_3(p, count, v, channels, acc); break;
    case 2: value_tile_2(p, count, v, channels, acc); break;
    default: value_tile_1(p, count, v, channels, acc);
    }
}

/* ---- the AMX form: the scores from bfloat16 triples on AMX's tiles ---- */

/* Each balanced query and key (less the keys' mean) is split into two bfloat16s, hi (the
 * float rounded to 8 bits of mantissa) and lo (what is left, rounded likewise): x = hi + lo
 * to ~2^-17 of x. A score is hi.hi + hi.lo + lo.hi summed in float32 by TDPBF16PS (the
 * lo.lo term, ~2^-16 of the products, left out): ~1e-5 of |q| |k|, the int16 form's
 * rounding. Queries row-major [padded_rows][padded depth], keys in panels of 16,
 * [padded_keys / 16][padded depth / 2][16][2] (a B tile's rows: pairs of channels of 16
 * keys), depth padded with zeros to AMX_DEPTH. A block of 32 queries x 32 keys is four
 * accumulator tiles (0-3), the queries' two A tiles (4, 5) and the keys' two B tiles (6, 7):
 * per 32 channels 8 tile loads and 12 products. The values' product takes the same arithmetic
 * where the values' channels are a multiple of 32: each chunk's exponentials split as the
 * queries are (they lie in [0, 1]), the values (less their shifts, as the FMAs take them)
 * split as the keys are, a chunk's panels of 16 channels of pairs of keys; each 32 rows x 32
 * channels block of the chunk's sums is added into the float32 accumulators (~1e-5 of the
 * values' range, the scores' rounding, where the AVX-512 form's float32 FMAs give ~1e-7). With VOSFX_EMULATE_AMX the tile instructions
 * are C loops on memory (Intel's definition of each), so that the form's layouts and
 * arithmetic are tested on CPUs without AMX. */

#ifdef VOSFX_EMULATE_AMX
typedef struct {
    float c[4][16][16];
    float even[4][16][16], odd[4][16][16]; /* tiles 4-7: a row's bfloat16s 2i and 2i + 1 as
                                            * float32 (exact) */
} emulated_tiles_t;
static __thread emulated_tiles_t emulated;

static float bf16_to_float(uint16_t x) {
    uint32_t bits = (uint32_t)x << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void emulated_load(int t, const void *base, size_t stride) {
    for (int r = 0; r < 16; r++) {
        const uint16_t *row = (const uint16_t *)((const char *)base + r * stride);
        for (int i = 0; i < 16; i++) {
            emulated.even[t - 4][r][i] = bf16_to_float(row[2 * i]);
            emulated.odd[t - 4][r][i] = bf16_to_float(row[2 * i + 1]);
        }
    }
}

static void emulated_store(int t, void *base, size_t stride) {
    for (int r = 0; r < 16; r++) memcpy((char *)base + r * stride, emulated.c[t][r], 64);
}

/* TDPBF16PS: c[m][n] += a[m][2k] b[k][2n] + a[m][2k + 1] b[k][2n + 1], k over the 16 pairs,
 * in that order (each product of two bfloat16s is exact in float32, so a fused multiply-add
 * a compiler may make of it rounds the same) */
TARGET static void emulated_product(int c, int a, int b) {
    const float(*x0)[16] = emulated.even[a - 4], (*x1)[16] = emulated.odd[a - 4];
    const float(*y0)[16] = emulated.even[b - 4], (*y1)[16] = emulated.odd[b - 4];
    for (int m = 0; m < 16; m++) {
        float row[16];
        memcpy(row, emulated.c[c][m], sizeof(row));
        for (int k = 0; k < 16; k++)
            for (int n = 0; n < 16; n++) {
                row[n] += x0[m][k] * y0[k][n];
                row[n] += x1[m][k] * y1[k][n];
            }
        memcpy(emulated.c[c][m], row, sizeof(row));
    }
}
#define TILE_CONFIGURE() ((void)0)
#define TILE_RELEASE() ((void)0)
#define TILE_ZERO(t) memset(emulated.c[t], 0, sizeof(emulated.c[t]))
#define TILE_LOAD(t, base, stride) emulated_load(t, base, stride)
#define TILE_STORE(t, base, stride) emulated_store(t, base, stride)
#define TILE_PRODUCT(c, a, b) emulated_product(c, a, b)
#elif HAS_AMX
/* the tiles' shapes (palette 1): eight of 16 rows x 64 bytes */
TARGET_AMX static void tile_configure(void) {
    struct {
        uint8_t palette, start_row, reserved[14];
        uint16_t bytes[16];
        uint8_t rows[16];
    } __attribute__((packed, aligned(64))) config = {0};
    config.palette = 1;
    for (int t = 0; t < 8; t++) config.bytes[t] = 64, config.rows[t] = 16;
    _tile_loadconfig(&config);
}
#define TILE_CONFIGURE() tile_configure()
#define TILE_RELEASE() _tile_release()
#define TILE_ZERO(t) _tile_zero(t)
#define TILE_LOAD(t, base, stride) _tile_loadd(t, base, stride)
#define TILE_STORE(t, base, stride) _tile_stored(t, base, stride)
#define TILE_PRODUCT(c, a, b) _tile_dpbf16ps(c, a, b)
#else /* never run: amx_granted() says no */
#define TILE_CONFIGURE() ((void)0)
#define TILE_RELEASE() ((void)0)
#define TILE_ZERO(t) ((void)0)
#define TILE_LOAD(t, base, stride) ((void)(base), (void)(stride))
#define TILE_STORE(t, base, stride) ((void)(base), (void)(stride))
#define TILE_PRODUCT(c, a, b) ((void)0)
#endif

/* a block of 32 x 32 scores: the accumulators 0-3 += the queries' A tiles 4, 5 times the keys'
 * B tiles 6, 7 */
#define BLOCK_PRODUCTS()          \
    do {                          \
        TILE_PRODUCT(0, 4, 6);    \
        TILE_PRODUCT(1, 4, 7);    \
        TILE_PRODUCT(2, 5, 6);    \
        TILE_PRODUCT(3, 5, 7);    \
    } while (0)

/* 16 floats as bfloat16s rounded to nearest even (hi), and what is left likewise (lo) */
TARGET static inline void split_bf16(__m512 x, __m256i *hi, __m256i *lo) {
    __m512i bits = _mm512_castps_si512(x);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i top = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))), 16);
    __m512 rest = _mm512_sub_ps(x, _mm512_castsi512_ps(_mm512_slli_epi32(top, 16)));
    __m512i bits2 = _mm512_castps_si512(rest);
    __m512i odd2 = _mm512_and_si512(_mm512_srli_epi32(bits2, 16), _mm512_set1_epi32(1));
    __m512i low = _mm512_srli_epi32(_mm512_add_epi32(bits2, _mm512_add_epi32(odd2, _mm512_set1_epi32(0x7FFF))), 16);
    *hi = _mm512_cvtepi32_epi16(top);
    *lo = _mm512_cvtepi32_epi16(low);
}

/* one row of `depth` floats (less `mean` where given, times `balance` where given) as bfloat16
 * hi and lo parts in `hi`, `lo` (`padded` slots each, zeros past depth) */
TARGET static void to_bf16_pair(const float *row, const float *mean, const float *balance, int depth,
                                int padded, uint16_t *hi, uint16_t *lo) {
    for (int ch = 0; ch < padded; ch += 16) {
        __m512 x = _mm512_setzero_ps();
        if (ch < depth) {
            __mmask16 m = lanes_below(ch, depth);
            x = _mm512_maskz_loadu_ps(m, row + ch);
            if (mean) x = _mm512_maskz_sub_ps(m, x, _mm512_loadu_ps(mean + ch));
            if (balance) x = _mm512_mul_ps(x, _mm512_loadu_ps(balance + ch));
        }
        __m256i h, l;
        split_bf16(x, &h, &l);
        _mm256_storeu_si256((__m256i *)(hi + ch), h);
        _mm256_storeu_si256((__m256i *)(lo + ch), l);
    }
}

/* ---- one call ---- */

typedef struct {
    /* inputs */
    const float *q, *k, *v;
    float *out;
    int rows, keys, depth, channels, threads;
    float scale;
    int form;         /* FORM_AVX512, FORM_AMX or FORM_AMX_BF16 */
    int amx, single;  /* the form's products on AMX's tiles; hi.hi alone (FORM_AMX_BF16) */
    /* prepared */
    int group;        /* query rows that share a chunk of keys: GROUP, AMX_GROUP */
    int padded_rows, padded_keys, pairs;
    /* the AVX-512 form's */
    int16_t *q16;     /* [padded_rows / SCORE_ROWS][pairs][SCORE_ROWS][2] */
    float *q_step;    /* [padded_rows] scale / a row's factor */
    int16_t *k16;     /* [padded_keys / 16][pairs][16][2] */
    float *k_step;    /* [padded_keys] 1 / a key's factor (0 past the last) */
    /* the AMX form's */
    int padded_depth; /* depth rounded up to AMX_DEPTH */
    uint16_t *q_hi, *q_lo; /* [padded_rows][padded_depth] bfloat16 */
    uint16_t *k_hi, *k_lo; /* [padded_keys / 16][padded_depth / 2][16][2] bfloat16 */
    float *partial;   /* [key slabs][2][depth rounded up to 16]: the keys' sums and squares
                       * per slab, then [query slabs][depth rounded up to 16]: the queries'
                       * squares */
    float *mean;      /* [depth rounded up to 16] */
    float *q_balance; /* [depth rounded up to 16] the queries' channels' powers of two */
    float *k_balance; /* [depth rounded up to 16] their inverses, the keys' */
    /* the values less a shift a channel (added back at the end) */
    float *v_range;   /* [key slabs][2][channels]: the values' least and largest per slab */
    float *v_shift;   /* [channels]: the midrange of a channel whose values lie on one side of
                       * 0, else 0 */
    int shifted;      /* a channel's shift is not 0 */
    float *v_shifted; /* [keys][channels] float32 where one is, for the FMAs' values' product */
    int amx_values;   /* the AMX form's values' product on the tiles (channels a multiple of 32) */
    uint16_t *v_hi, *v_lo; /* [padded_keys / CHUNK][channels / 16][CHUNK / 2][16][2] bfloat16,
                            * a chunk's panels of 16 channels, in place of v_centred */
} call_t;

typedef struct {
    call_t *call;
    int thread;
    int phase;
    int failed;
} part_t;

/* rows first..last of x (depth channels a row): each channel's sum and sum of squares (where
 * `sum`, `squares` are given) */
TARGET static void channel_sums(const float *x, int depth, int first, int last, float *sum,
                                float *squares) {
    int w = (int)round_up((size_t)depth, 16);
    for (int part = 0; part < w; part += 128) {
        int n = (w - part) / 16 < 8 ? (w - part) / 16 : 8;
        __m512 total[8], square[8];
        for (int j = 0; j < n; j++) total[j] = square[j] = _mm512_setzero_ps();
        for (int i = first; i < last; i++) {
            const float *row = x + (size_t)i * depth;
            for (int j = 0; j < n; j++) {
                int ch = part + 16 * j;
                __m512 y = _mm512_maskz_loadu_ps(lanes_below(ch, depth), row + ch);
                total[j] = _mm512_add_ps(total[j], y);
                if (squares) square[j] = _mm512_fmadd_ps(y, y, square[j]);
            }
        }
        for (int j = 0; j < n; j++) {
            if (sum) _mm512_storeu_ps(sum + part + 16 * j, total[j]);
            if (squares) _mm512_storeu_ps(squares + part + 16 * j, square[j]);
        }
    }
}

/* rows first..last of x (`channels` a row, a multiple of 16): each channel's least and largest */
TARGET static void channel_range(const float *x, int channels, int first, int last, float *least,
                                 float *largest) {
    for (int ch = 0; ch < channels; ch += 16) {
        __m512 lo = _mm512_set1_ps(INFINITY), hi = _mm512_set1_ps(-INFINITY);
        for (int i = first; i < last; i++) {
            __m512 y = _mm512_loadu_ps(x + (size_t)i * channels + ch);
            lo = _mm512_min_ps(lo, y), hi = _mm512_max_ps(hi, y);
        }
        _mm512_storeu_ps(least + ch, lo);
        _mm512_storeu_ps(largest + ch, hi);
    }
}

/* the keys' per-channel sums and squares and the values' ranges over each slab of SLAB tokens,
 * and the queries' squares over each slab of SLAB rows, this thread takes (slabs fixed whatever the threads,
 * summed in order after: the same mean and powers of two on any number of threads) */
TARGET static void channel_stats(call_t *c, int thread) {
    int key_slabs = (c->keys + SLAB - 1) / SLAB, row_slabs = (c->rows + SLAB - 1) / SLAB;
    int w = (int)round_up((size_t)c->depth, 16);
    for (int slab = thread; slab < key_slabs + row_slabs; slab += c->threads) {
        if (slab < key_slabs) {
            float *sum = c->partial + (size_t)slab * 2 * w;
            int first = slab * SLAB, last = first + SLAB < c->keys ? first + SLAB : c->keys;
            channel_sums(c->k, c->depth, first, last, sum, sum + w);
            float *range = c->v_range + (size_t)slab * 2 * c->channels;
            channel_range(c->v, c->channels, first, last, range, range + c->channels);
        } else {
            float *squares = c->partial + ((size_t)key_slabs * 2 + slab - key_slabs) * w;
            int first = (slab - key_slabs) * SLAB;
            int last = first + SLAB < c->rows ? first + SLAB : c->rows;
            channel_sums(c->q, c->depth, first, last, NULL, squares);
        }
    }
}

/* the keys' mean, each channel's power of two, and the values' shifts from the slabs' sums and
 * ranges (one thread) */
static void balance_channels(call_t *c) {
    int key_slabs = (c->keys + SLAB - 1) / SLAB, row_slabs = (c->rows + SLAB - 1) / SLAB;
    int w = (int)round_up((size_t)c->depth, 16);
    for (int ch = 0; ch < w; ch++) {
        double total = 0.0, k_squares = 0.0, q_squares = 0.0;
        for (int slab = 0; slab < key_slabs; slab++) {
            total += c->partial[(size_t)slab * 2 * w + ch];
            k_squares += c->partial[(size_t)slab * 2 * w + w + ch];
        }
        for (int slab = 0; slab < row_slabs; slab++)
            q_squares += c->partial[((size_t)key_slabs * 2 + slab) * w + ch];
        double mean = total / c->keys, variance = k_squares / c->keys - mean * mean;
        double ratio = variance / (q_squares / c->rows), power = 1.0;
        if (ch < c->depth && variance > 0.0 && q_squares > 0.0 && isfinite(ratio)) {
            power = ldexp(1.0, (int)lround(0.25 * log2(ratio)));
            power = fmin(fmax(power, 1.0 / MAX_BALANCE), MAX_BALANCE);
        }
        c->mean[ch] = ch < c->depth ? (float)mean : 0.0f;
        c->q_balance[ch] = (float)power;
        c->k_balance[ch] = (float)(1.0 / power);
    }
    for (int ch = 0; ch < c->channels; ch++) {
        float least = INFINITY, largest = -INFINITY;
        for (int slab = 0; slab < key_slabs; slab++) {
            least = fminf(least, c->v_range[(size_t)slab * 2 * c->channels + ch]);
            largest = fmaxf(largest, c->v_range[(size_t)slab * 2 * c->channels + c->channels + ch]);
        }
        int one_sided = least > 0.0f || largest < 0.0f;
        c->v_shift[ch] = one_sided && isfinite(least) && isfinite(largest) ? 0.5f * least + 0.5f * largest : 0.0f;
        c->shifted |= c->v_shift[ch] != 0.0f;
    }
}

/* this thread's tiles of queries as int16, each row balanced, by its own factor */
TARGET static void quantise_queries(call_t *c, int thread) {
    int16_t row[MAX_DEPTH + 32] __attribute__((aligned(64)));
    int tiles = c->padded_rows / SCORE_ROWS;
    for (int tile = thread; tile < tiles; tile += c->threads) {
        int32_t *dst = (int32_t *)(c->q16 + (size_t)tile * c->pairs * SCORE_ROWS * 2);
        for (int j = 0; j < SCORE_ROWS; j++) {
            int r = tile * SCORE_ROWS + j;
            float factor = 0.0f;
            if (r < c->rows)
                factor = to_int16(c->q + (size_t)r * c->depth, NULL, c->q_balance, c->depth, row);
            else
                memset(row, 0, sizeof(row));
            c->q_step[r] = factor > 0.0f ? c->scale / factor : 0.0f;
            for (int t = 0; t < c->pairs; t++) memcpy(dst + t * SCORE_ROWS + j, row + 2 * t, 4);
        }
    }
}

/* this thread's panels of keys as int16, each key less the mean, balanced, by its own factor */
TARGET static void pack_keys(call_t *c, int thread) {
    int16_t row[MAX_DEPTH + 32] __attribute__((aligned(64)));
    int panels = c->padded_keys / 16;
    for (int pnl = thread; pnl < panels; pnl += c->threads) {
        int32_t *dst = (int32_t *)(c->k16 + (size_t)pnl * c->pairs * 32);
        for (int j = 0; j < 16; j++) {
            int i = pnl * 16 + j;
            float factor = 0.0f;
            if (i < c->keys)
                factor = to_int16(c->k + (size_t)i * c->depth, c->mean, c->k_balance, c->depth, row);
            else
                memset(row, 0, sizeof(row));
            c->k_step[i] = factor > 0.0f ? 1.0f / factor : 0.0f;
            for (int t = 0; t < c->pairs; t++) memcpy(dst + t * 16 + j, row + 2 * t, 4);
        }
    }
}

/* this thread's rows of queries as bfloat16 hi and lo parts, balanced (the AMX form) */
static void split_queries(call_t *c, int thread) {
    int tiles = c->padded_rows / 16;
    for (int tile = thread; tile < tiles; tile += c->threads)
        for (int r = tile * 16; r < tile * 16 + 16; r++) {
            uint16_t *hi = c->q_hi + (size_t)r * c->padded_depth, *lo = c->q_lo + (size_t)r * c->padded_depth;
            if (r < c->rows)
                to_bf16_pair(c->q + (size_t)r * c->depth, NULL, c->q_balance, c->depth, c->padded_depth, hi, lo);
            else
                memset(hi, 0, 2 * (size_t)c->padded_depth), memset(lo, 0, 2 * (size_t)c->padded_depth);
        }
}

/* this thread's panels of 16 keys as bfloat16 hi and lo parts, less the mean, balanced, in
 * pairs of channels (the AMX form) */
static void split_keys(call_t *c, int thread) {
    uint16_t hi[MAX_DEPTH + 32] __attribute__((aligned(64))), lo[MAX_DEPTH + 32] __attribute__((aligned(64)));
    int panels = c->padded_keys / 16, pairs = c->padded_depth / 2;
    for (int pnl = thread; pnl < panels; pnl += c->threads) {
        uint32_t *dst_hi = (uint32_t *)(c->k_hi + (size_t)pnl * 16 * c->padded_depth);
        uint32_t *dst_lo = (uint32_t *)(c->k_lo + (size_t)pnl * 16 * c->padded_depth);
        for (int j = 0; j < 16; j++) {
            int i = pnl * 16 + j;
            if (i < c->keys)
                to_bf16_pair(c->k + (size_t)i * c->depth, c->mean, c->k_balance, c->depth, c->padded_depth, hi, lo);
            else
                memset(hi, 0, sizeof(hi)), memset(lo, 0, sizeof(lo));
            for (int t = 0; t < pairs; t++) {
                memcpy(dst_hi + t * 16 + j, hi + 2 * t, 4);
                memcpy(dst_lo + t * 16 + j, lo + 2 * t, 4);
            }
        }
    }
}

/* 16 floats' bfloat16 parts (a, b: two keys' 16 channels) as 16 pairs [16][2] at dst */
TARGET static inline void store_pairs(__m256i a, __m256i b, uint16_t *dst) {
    __m512i pairs = _mm512_or_si512(_mm512_cvtepu16_epi32(a), _mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
    _mm512_storeu_si512(dst, pairs);
}

/* this thread's chunks of values as bfloat16 hi and lo parts, less their shifts, in a chunk's
 * panels of 16 channels of pairs of keys (the AMX form's values' product: the keys' layout,
 * the channels its columns) */
TARGET static void split_values(call_t *c, int thread) {
    int chunks = c->padded_keys / CHUNK, channels = c->channels;
    for (int ci = thread; ci < chunks; ci += c->threads) {
        size_t at = (size_t)ci * CHUNK * channels;
        for (int t = 0; t < CHUNK / 2; t++) {
            int i = ci * CHUNK + 2 * t;
            for (int ch = 0; ch < channels; ch += 16) {
                __m512 shift = _mm512_loadu_ps(c->v_shift + ch), x0 = _mm512_setzero_ps(), x1 = x0;
                if (i < c->keys) x0 = _mm512_sub_ps(_mm512_loadu_ps(c->v + (size_t)i * channels + ch), shift);
                if (i + 1 < c->keys) x1 = _mm512_sub_ps(_mm512_loadu_ps(c->v + (size_t)(i + 1) * channels + ch), shift);
                __m256i h0, l0, h1, l1;
                split_bf16(x0, &h0, &l0);
                split_bf16(x1, &h1, &l1);
                size_t to = at + (size_t)ch * CHUNK + (size_t)t * 32;
                store_pairs(h0, h1, c->v_hi + to);
                if (!c->single) store_pairs(l0, l1, c->v_lo + to);
            }
        }
    }
}

/* this thread's slabs of values less their shifts (the FMAs' values' product) */
TARGET static void shift_values(call_t *c, int thread) {
    int slabs = (c->keys + SLAB - 1) / SLAB;
    for (int slab = thread; slab < slabs; slab += c->threads) {
        int last = (slab + 1) * SLAB < c->keys ? (slab + 1) * SLAB : c->keys;
        for (int i = slab * SLAB; i < last; i++)
            for (int ch = 0; ch < c->channels; ch += 16) {
                size_t at = (size_t)i * c->channels + ch;
                _mm512_storeu_ps(c->v_shifted + at, _mm512_sub_ps(_mm512_loadu_ps(c->v + at), _mm512_loadu_ps(c->v_shift + ch)));
            }
    }
}

TARGET_AMX static void tile_release(void) { TILE_RELEASE(); }

/* 32 rows x 32 columns of hi.hi + hi.lo + lo.hi (`single`: hi.hi alone) into out (`width`
 * floats a row): the rows' bfloat16 parts a_hi, a_lo row-major (`depth` a row, a multiple of
 * 32), the columns' b_hi, b_lo in two panels of 16, [depth / 2][16][2] each (the keys' and
 * the weights' layout) */
TARGET_AMX static void amx_block(const uint16_t *a_hi, const uint16_t *a_lo, const uint16_t *b_hi,
                                 const uint16_t *b_lo, size_t depth, float *out, size_t width, int single) {
    size_t row_bytes = 2 * depth;
    TILE_ZERO(0);
    TILE_ZERO(1);
    TILE_ZERO(2);
    TILE_ZERO(3);
    for (size_t ch = 0; ch < depth; ch += 32) {
        /* A tiles: 16 rows x 32 channels; B tiles: 16 pairs of channels x 16 columns */
        TILE_LOAD(4, a_hi + ch, row_bytes);
        TILE_LOAD(5, a_hi + 16 * depth + ch, row_bytes);
        if (single) { /* hi . hi alone */
            TILE_LOAD(6, b_hi + ch * 16, 64);
            TILE_LOAD(7, b_hi + 16 * depth + ch * 16, 64);
            BLOCK_PRODUCTS();
            continue;
        }
        TILE_LOAD(6, b_lo + ch * 16, 64);
        TILE_LOAD(7, b_lo + 16 * depth + ch * 16, 64);
        BLOCK_PRODUCTS(); /* hi . lo */
        TILE_LOAD(6, b_hi + ch * 16, 64);
        TILE_LOAD(7, b_hi + 16 * depth + ch * 16, 64);
        BLOCK_PRODUCTS(); /* hi . hi */
        TILE_LOAD(4, a_lo + ch, row_bytes);
        TILE_LOAD(5, a_lo + 16 * depth + ch, row_bytes);
        BLOCK_PRODUCTS(); /* lo . hi */
    }
    TILE_STORE(0, out, 4 * width);
    TILE_STORE(1, out + 16, 4 * width);
    TILE_STORE(2, out + 16 * width, 4 * width);
    TILE_STORE(3, out + 16 * width + 16, 4 * width);
}

/* the scores of `rows` query rows from r0 (a multiple of 32) against the chunk of keys from k0
 * (`chunk` a multiple of 32) into s (stride CHUNK): the tiles' float32 sums times the scale,
 * keys past the last -inf; each row's maximum in top */
TARGET_AMX static void amx_scores(call_t *c, int r0, int rows, int k0, int chunk, float *s, __m512 *top) {
    size_t depth = (size_t)c->padded_depth;
    for (int rt = 0; rt < rows; rt += 32)
        for (int kt = 0; kt < chunk; kt += 32) {
            size_t q = (size_t)(r0 + rt) * depth, k = (size_t)(k0 + kt) * depth;
            amx_block(c->q_hi + q, c->q_lo + q, c->k_hi + k, c->k_lo + k, depth,
                      s + (size_t)rt * CHUNK + kt, CHUNK, c->single);
        }
    const __m512i lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512 scale = _mm512_set1_ps(c->scale), none = _mm512_set1_ps(-INFINITY);
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < chunk; i += 16) {
            __mmask16 live = _mm512_cmplt_epi32_mask(_mm512_add_epi32(_mm512_set1_epi32(k0 + i), lanes),
                                                     _mm512_set1_epi32(c->keys));
            float *x = s + (size_t)r * CHUNK + i;
            __m512 y = _mm512_mask_mov_ps(none, live, _mm512_mul_ps(_mm512_load_ps(x), scale));
            _mm512_store_ps(x, y);
            top[r] = _mm512_max_ps(top[r], y);
        }
}

/* acc (`rows` rows from a multiple of 32, `channels` a row) += the chunk's exponentials (p_hi,
 * p_lo: bfloat16 parts, CHUNK a row) times its values (the chunk of keys from k0) on the
 * tiles: hi.hi + hi.lo + lo.hi, as the scores */
TARGET_AMX static void amx_values(call_t *c, int rows, int k0, const uint16_t *p_hi, const uint16_t *p_lo,
                                  float *acc) {
    float block[32 * 32] __attribute__((aligned(64)));
    size_t chunk = (size_t)k0 * c->channels;
    for (int ch = 0; ch < c->channels; ch += 32) {
        const uint16_t *b_hi = c->v_hi + chunk + (size_t)ch * CHUNK, *b_lo = c->v_lo + chunk + (size_t)ch * CHUNK;
        for (int rt = 0; rt < rows; rt += 32) {
            amx_block(p_hi + (size_t)rt * CHUNK, p_lo + (size_t)rt * CHUNK, b_hi, b_lo, CHUNK, block, 32, c->single);
            for (int r = 0; r < 32; r++) {
                float *a = acc + (size_t)(rt + r) * c->channels + ch;
                _mm512_store_ps(a, _mm512_add_ps(_mm512_load_ps(a), _mm512_load_ps(block + 32 * r)));
                _mm512_store_ps(a + 16, _mm512_add_ps(_mm512_load_ps(a + 16), _mm512_load_ps(block + 32 * r + 16)));
            }
        }
    }
}

/* the attention of this thread's groups of rows */
TARGET static int attend(call_t *c, int thread) {
    int channels = c->channels, group = c->group;
    const float *values = c->v_shifted ? c->v_shifted : c->v; /* the FMAs' values (less the shifts) */
    float *s = aligned_alloc(64, sizeof(float) * group * CHUNK);
    float *acc = aligned_alloc(64, sizeof(float) * group * (size_t)channels);
    /* the exponentials' bfloat16 parts, where the tiles take the values' product */
    uint16_t *p_hi = c->amx_values ? aligned_alloc(64, sizeof(uint16_t) * 2 * group * CHUNK) : NULL;
    uint16_t *p_lo = p_hi ? p_hi + (size_t)group * CHUNK : NULL;
    if (!s || !acc || (c->amx_values && !p_hi)) {
        free(s), free(acc), free(p_hi);
        return 1;
    }
    float top_so_far[AMX_GROUP], sum[AMX_GROUP];
    __m512 top[AMX_GROUP];
    const __m512i lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i keys = _mm512_set1_epi32(c->keys);
    int groups = (c->padded_rows + group - 1) / group;
    for (int g = thread; g < groups; g += c->threads) {
        int r0 = g * group, rows = c->padded_rows - r0 < group ? c->padded_rows - r0 : group;
        memset(acc, 0, sizeof(float) * rows * channels);
        for (int r = 0; r < rows; r++) top_so_far[r] = -INFINITY, sum[r] = 0.0f;
        for (int k0 = 0; k0 < c->padded_keys; k0 += CHUNK) {
            int chunk = c->padded_keys - k0 < CHUNK ? c->padded_keys - k0 : CHUNK;
            int live = c->keys - k0 < chunk ? c->keys - k0 : chunk;
            for (int r = 0; r < rows; r++) top[r] = _mm512_set1_ps(-INFINITY);
            if (c->amx) amx_scores(c, r0, rows, k0, chunk, s, top);
            else for (int rt = 0; rt < rows; rt += SCORE_ROWS)
                for (int kt = 0; kt < chunk; kt += 32) {
                    __m512i index = _mm512_add_epi32(_mm512_set1_epi32(k0 + kt), lanes);
                    __mmask16 live0 = _mm512_cmplt_epi32_mask(index, keys);
                    __mmask16 live1 = _mm512_cmplt_epi32_mask(_mm512_add_epi32(index, _mm512_set1_epi32(16)), keys);
                    score_tile(c->q16 + (size_t)(r0 + rt) * c->pairs * 2, c->k16 + (size_t)(k0 + kt) * c->pairs * 2,
                               c->pairs, c->q_step + r0 + rt, c->k_step + k0 + kt, live0, live1,
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
                /* the chunk's exponentials against the running maximum, in place of the scores */
                __m512 m = _mm512_set1_ps(top_so_far[r]), total = _mm512_setzero_ps();
                float *sr = s + (size_t)r * CHUNK;
                for (int i = 0; i < chunk; i += 16) {
                    __m512 x = _mm512_load_ps(sr + i); /* keys past the last: -inf, weight 0 */
                    __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
                    __m512 e = _mm512_maskz_mov_ps(live, exp_nonpositive(_mm512_sub_ps(x, m)));
                    total = _mm512_add_ps(total, e);
                    if (p_hi) {
                        __m256i h, l;
                        split_bf16(e, &h, &l);
                        _mm256_store_si256((__m256i *)(p_hi + (size_t)r * CHUNK + i), h);
                        if (!c->single) /* hi.hi alone reads no lo parts */
                            _mm256_store_si256((__m256i *)(p_lo + (size_t)r * CHUNK + i), l);
                    } else {
                        _mm512_store_ps(sr + i, e);
                    }
                }
                sum[r] += _mm512_reduce_add_ps(total);
            }
            if (p_hi) amx_values(c, rows, k0, p_hi, p_lo, acc);
            else for (int rt = 0; rt < rows; rt += VALUE_ROWS)
                for (int ch = 0; ch < channels; ch += 64) {
                    int width = (channels - ch) / 16 < 4 ? (channels - ch) / 16 : 4;
                    value_tile(width, s + (size_t)rt * CHUNK, live, values + (size_t)k0 * channels + ch,
                               channels, acc + (size_t)rt * channels + ch);
                }
        }
        for (int r = 0; r < rows && r0 + r < c->rows; r++) {
            __m512 inv = _mm512_set1_ps(1.0f / sum[r]);
            for (int ch = 0; ch < channels; ch += 16) {
                __m512 y = _mm512_mul_ps(inv, _mm512_load_ps(acc + (size_t)r * channels + ch));
                y = _mm512_add_ps(y, _mm512_loadu_ps(c->v_shift + ch)); /* the shifts back */
                _mm512_storeu_ps(c->out + (size_t)(r0 + r) * channels + ch, y);
            }
        }
    }
    free(s), free(acc), free(p_hi);
    return 0;
}

TARGET_AMX static void *run_part(void *arg) {
    part_t *part = arg;
    call_t *c = part->call;
    switch (part->phase) {
    case 0: channel_stats(c, part->thread); break;
    case 1:
        if (c->amx) split_queries(c, part->thread), split_keys(c, part->thread);
        else quantise_queries(c, part->thread), pack_keys(c, part->thread);
        if (c->amx_values) split_values(c, part->thread);
        else if (c->v_shifted) shift_values(c, part->thread);
        break;
    default:
        if (c->amx) TILE_CONFIGURE(); /* the tiles' shapes are each thread's */
        part->failed = attend(c, part->thread);
        if (c->amx) tile_release();
    }
    return NULL;
}

/* runs `phase` on c->threads threads (this one the first); nonzero if a part failed */
/* fn on each of n arguments (`args`, `size` bytes apart): the first on this thread, the others
 * on threads of their own (one that cannot start: here, before the first) */
static void run_threads(int n, void *(*fn)(void *), void *args, size_t size) {
    pthread_t ids[MAX_THREADS];
    int started = 1;
    for (int t = 1; t < n; t++) {
        if (pthread_create(&ids[t], NULL, fn, (char *)args + t * size) != 0) break;
        started++;
    }
    for (int t = started; t < n; t++) fn((char *)args + t * size); /* not started: here */
    fn(args);
    for (int t = 1; t < started; t++) pthread_join(ids[t], NULL);
}

static int run_phase(call_t *c, int phase) {
    part_t parts[MAX_THREADS];
    int failed = 0;
    for (int t = 0; t < c->threads; t++) parts[t] = (part_t){c, t, phase, 0};
    run_threads(c->threads, run_part, parts, sizeof(part_t));
    for (int t = 0; t < c->threads; t++) failed |= parts[t].failed;
    return failed;
}

static int attention(call_t *c) {
    int key_slabs = (c->keys + SLAB - 1) / SLAB, row_slabs = (c->rows + SLAB - 1) / SLAB;
    int w = (int)round_up((size_t)c->depth, 16);
    int amx = c->amx = c->form != FORM_AVX512;
    c->single = c->form == FORM_AMX_BF16;
    c->group = amx ? AMX_GROUP : GROUP;
    c->padded_rows = (int)round_up((size_t)c->rows, (size_t)c->group);
    c->padded_keys = (int)round_up((size_t)c->keys, CHUNK);
    c->pairs = c->depth / 2;
    c->padded_depth = (int)round_up((size_t)c->depth, AMX_DEPTH);
    size_t q_bytes = round_up((size_t)c->padded_rows * (amx ? c->padded_depth : c->depth) * 2, 64);
    size_t k_bytes = round_up((size_t)c->padded_keys * (amx ? c->padded_depth : c->depth) * 2, 64);
    int ready;
    if (amx) {
        size_t v_bytes = sizeof(uint16_t) * c->padded_keys * (size_t)c->channels;
        c->q_hi = aligned_alloc(64, q_bytes), c->q_lo = aligned_alloc(64, q_bytes);
        c->k_hi = aligned_alloc(64, k_bytes), c->k_lo = aligned_alloc(64, k_bytes);
        ready = c->q_hi && c->q_lo && c->k_hi && c->k_lo;
        c->amx_values = c->channels % 32 == 0; /* two panels of 16 a block of columns */
        if (c->amx_values) {
            c->v_hi = aligned_alloc(64, v_bytes), c->v_lo = aligned_alloc(64, v_bytes);
            ready = ready && c->v_hi && c->v_lo;
        }
    } else {
        c->q16 = aligned_alloc(64, q_bytes), c->k16 = aligned_alloc(64, k_bytes);
        c->q_step = calloc((size_t)c->padded_rows, sizeof(float));
        c->k_step = calloc((size_t)c->padded_keys, sizeof(float));
        ready = c->q16 && c->q_step && c->k16 && c->k_step;
    }
    c->v_range = malloc(sizeof(float) * (size_t)c->channels * (2 * (size_t)key_slabs + 1));
    c->v_shift = c->v_range ? c->v_range + 2 * (size_t)key_slabs * c->channels : NULL;
    c->partial = malloc(sizeof(float) * w * ((size_t)key_slabs * 2 + row_slabs));
    c->mean = calloc((size_t)w * 3, sizeof(float));
    c->q_balance = c->mean ? c->mean + w : NULL;
    c->k_balance = c->mean ? c->mean + 2 * w : NULL;
    int status = 2;
    if (ready && c->partial && c->mean && c->v_range) {
        run_phase(c, 0);
        balance_channels(c);
        if (c->shifted && !c->amx_values) c->v_shifted = malloc(sizeof(float) * (size_t)c->keys * c->channels);
        if (c->v_shifted || !c->shifted || c->amx_values) {
            run_phase(c, 1);
            status = run_phase(c, 2) ? 2 : 0;
        }
    }
    free(c->q16), free(c->q_step), free(c->k16), free(c->k_step), free(c->partial), free(c->mean);
    free(c->q_hi), free(c->q_lo), free(c->k_hi), free(c->k_lo);
    free(c->v_hi), free(c->v_lo), free(c->v_range), free(c->v_shifted);
    return status;
}

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#define CHAINS12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define FMA_ZERO(i) __m512 f##i = _mm512_setzero_ps();
#define FMA_STEP(i) __asm__ volatile("vfmadd231ps %2, %1, %0" : "+v"(f##i) : "v"(a), "v"(b));
#define DOT_ZERO(i) __m512i d##i = _mm512_setzero_si512();
#define DOT_STEP(i) __asm__ volatile("vpdpwssd %2, %1, %0" : "+v"(d##i) : "v"(x), "v"(y));
#define FMA_SINK(i) sink += _mm512_reduce_add_ps(f##i);
#define DOT_SINK(i) sink += (float)_mm512_reduce_add_epi32(d##i);

/* seconds for `n` x 12 independent float32 FMAs / word dot products (512-bit) */
TARGET static double fma_time(long n) {
    CHAINS12(FMA_ZERO)
    __m512 a = _mm512_set1_ps(1.0f), b = _mm512_set1_ps(0.0f);
    volatile float sink = 0.0f;
    double t = seconds();
    for (long i = 0; i < n; i++) { CHAINS12(FMA_STEP) }
    t = seconds() - t;
    CHAINS12(FMA_SINK)
    return t;
}

TARGET static double dot_time(long n) {
    CHAINS12(DOT_ZERO)
    __m512i x = _mm512_set1_epi16(1), y = _mm512_set1_epi16(0);
    volatile float sink = 0.0f;
    double t = seconds();
    for (long i = 0; i < n; i++) { CHAINS12(DOT_STEP) }
    t = seconds() - t;
    CHAINS12(DOT_SINK)
    return t;
}

/* seconds for `n` x 4 tile products (TDPBF16PS, 16 x 16 x 32 multiply-adds each) on four
 * accumulator tiles */
TARGET_AMX static double tile_time(long n) {
    static const uint16_t zeros[16 * 32] __attribute__((aligned(64)));
    TILE_CONFIGURE();
    TILE_ZERO(0);
    TILE_ZERO(1);
    TILE_ZERO(2);
    TILE_ZERO(3);
    TILE_LOAD(4, zeros, 64);
    TILE_LOAD(5, zeros, 64);
    TILE_LOAD(6, zeros, 64);
    TILE_LOAD(7, zeros, 64);
    double t = seconds();
    for (long i = 0; i < n; i++) BLOCK_PRODUCTS();
    t = seconds() - t;
    TILE_RELEASE();
    return t;
}

/* 1 where the CPU has AMX's tiles and bfloat16 products and Linux lets this process use
 * them (the tiles' state is granted per process: arch_prctl ARCH_REQ_XCOMP_PERM for
 * XFEATURE_XTILEDATA); asked once */
static int amx_granted(void) {
#ifdef VOSFX_EMULATE_AMX
    return 1;
#elif !HAS_AMX
    return 0;
#else
    static int verdict = -1;
    if (verdict < 0) {
        unsigned a, b, c, d;
        int has = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 22 & 1) && (d >> 24 & 1);
#ifdef __linux__
        verdict = has && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
        verdict = 0;
#endif
    }
    return verdict;
#endif
}

/* 1 where this CPU runs the kernel's `form` (x86 with AVX512 F/BW/VL/DQ and VNNI; for
 * FORM_AMX also AMX-TILE and AMX-BF16, granted) */
static int cpu_supported(int form) {
    __builtin_cpu_init();
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                 __builtin_cpu_supports("avx512vnni");
    if (form == FORM_AVX512) return avx512;
    return (form == FORM_AMX || form == FORM_AMX_BF16) && avx512 && amx_granted();
}

/* the multiply-adds a second of `form`'s score products over those of float32 FMAs on this
 * core (the AMX form's a third of its tiles': three products a score), each the best of 5
 * runs of ~0.2 ms (0 where the CPU lacks the instructions) */
double vosfx_int16_gain(int form) {
    if (!cpu_supported(form)) return 0.0;
    double best_fma = 1e30, best_dot = 1e30;
#ifdef VOSFX_EMULATE_AMX
    long tiles = 2; /* C loops: ~1000x slower than the instructions */
#else
    long tiles = 400;
#endif
    fma_time(2000); /* the 512-bit units awake */
    for (int run = 0; run < 6; run++) {
        double f = fma_time(4000), d = form == FORM_AVX512 ? dot_time(4000) : tile_time(tiles);
        if (run == 0) continue; /* the tiles' first use */
        best_fma = f < best_fma ? f : best_fma;
        best_dot = d < best_dot ? d : best_dot;
    }
    if (best_dot <= 0.0) return 0.0;
    if (form != FORM_AVX512) /* 4 x 8192 multiply-adds a step, against 12 x 16 */
        return (4.0 * 8192 * tiles / best_dot / (form == FORM_AMX ? 3.0 : 1.0)) / (12.0 * 16 * 4000 / best_fma);
    return 2.0 * best_fma / best_dot;
}
#else
static int cpu_supported(int form) { (void)form; return 0; }
double vosfx_int16_gain(int form) { (void)form; return 0.0; }
#endif

/* ---- the AMX form's linear products: out = x w (+ bias) from bfloat16 triples ---- */

/* A linear layer's product on AMX's tiles with the scores' arithmetic: each input row and each
 * weight split into bfloat16 hi and lo, an output hi.hi + hi.lo + lo.hi summed in float32
 * (~1e-6 of |x| |w| from the exact product, float32's order; no scaling: no factor a row).
 * The weights (depth x outputs, row-major: ONNX MatMul's second operand) are packed once
 * (vosfx_amx_linear_pack) as the keys are: outputs in panels of 16, [padded outputs / 16]
 * [padded depth / 2][16][2], the hi parts then the lo, depth padded with zeros to AMX_DEPTH and
 * outputs to 32. A thread takes `block` input rows at a time (a multiple of 32 up to
 * LINEAR_ROWS: the caller measures which is fastest here), splits them, and runs each 32
 * outputs' weights against the rows' 32-row blocks. */
#define LINEAR_ROWS 256

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* x as bfloat16 hi and lo, rounded to nearest even as split_bf16 does */
static void split_scalar(float x, uint16_t *hi, uint16_t *lo) {
    uint32_t bits, top, rest_bits;
    memcpy(&bits, &x, 4);
    top = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    uint32_t back = top << 16;
    float high, rest;
    memcpy(&high, &back, 4);
    rest = x - high;
    memcpy(&rest_bits, &rest, 4);
    *hi = (uint16_t)top;
    *lo = (uint16_t)((rest_bits + 0x7FFFu + ((rest_bits >> 16) & 1u)) >> 16);
}

/* the packed weights' size in uint16s */
size_t vosfx_amx_linear_packed_size(int depth, int outputs) {
    if (depth <= 0 || outputs <= 0) return 0;
    return 2 * round_up((size_t)depth, AMX_DEPTH) * round_up((size_t)outputs, 32);
}

/* w (depth x outputs, row-major) into `packed` (vosfx_amx_linear_packed_size uint16s);
 * returns 0, 1 for a shape it does not take */
int vosfx_amx_linear_pack(const float *w, int depth, int outputs, uint16_t *packed) {
    if (depth <= 0 || outputs <= 0) return 1;
    size_t pd = round_up((size_t)depth, AMX_DEPTH), po = round_up((size_t)outputs, 32);
    uint16_t *hi = packed, *lo = packed + pd * po;
    for (size_t n = 0; n < po; n++)
        for (size_t k = 0; k < pd; k++) {
            float x = n < (size_t)outputs && k < (size_t)depth ? w[k * (size_t)outputs + n] : 0.0f;
            size_t at = (n / 16) * 16 * pd + (k / 2) * 32 + (n % 16) * 2 + k % 2;
            split_scalar(x, hi + at, lo + at);
        }
    return 0;
}

typedef struct {
    const float *x, *bias;
    const uint16_t *w;
    float *out;
    int rows, depth, outputs, threads, block;
    size_t pd, po;
} linear_t;

typedef struct {
    linear_t *call;
    int thread, failed;
} linear_part_t;

/* this thread's blocks of c->block rows */
TARGET_AMX static void *linear_part(void *arg) {
    linear_part_t *part = arg;
    linear_t *c = part->call;
    size_t pd = c->pd, po = c->po, row_bytes = 2 * pd;
    uint16_t *a_hi = aligned_alloc(64, round_up(2 * (size_t)c->block * pd * 2, 64));
    float block[32 * 32] __attribute__((aligned(64)));
    if (!a_hi) {
        part->failed = 1;
        return NULL;
    }
    uint16_t *a_lo = a_hi + (size_t)c->block * pd;
    const uint16_t *w_hi = c->w, *w_lo = c->w + pd * po;
    TILE_CONFIGURE();
    int blocks = (c->rows + c->block - 1) / c->block;
    for (int b = part->thread; b < blocks; b += c->threads) {
        int r0 = b * c->block, rows = c->rows - r0 < c->block ? c->rows - r0 : c->block;
        int padded = (int)round_up((size_t)rows, 32);
        for (int r = 0; r < padded; r++) {
            uint16_t *hi = a_hi + (size_t)r * pd, *lo = a_lo + (size_t)r * pd;
            if (r < rows)
                to_bf16_pair(c->x + (size_t)(r0 + r) * c->depth, NULL, NULL, c->depth, (int)pd, hi, lo);
            else
                memset(hi, 0, row_bytes), memset(lo, 0, row_bytes);
        }
        for (size_t n0 = 0; n0 < po; n0 += 32) {
            const uint16_t *bh = w_hi + n0 * pd, *bl = w_lo + n0 * pd;
            for (int rt = 0; rt < padded; rt += 32) {
                amx_block(a_hi + (size_t)rt * pd, a_lo + (size_t)rt * pd, bh, bl, pd, block, 32, 0);
                for (int r = 0; r < 32 && rt + r < rows; r++) {
                    float *row = c->out + (size_t)(r0 + rt + r) * c->outputs;
                    for (int j = 0; j < 32 && n0 + j < (size_t)c->outputs; j += 16) {
                        __mmask16 m = lanes_below((int)n0 + j, c->outputs);
                        __m512 y = _mm512_load_ps(block + r * 32 + j);
                        if (c->bias) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, c->bias + n0 + j));
                        _mm512_mask_storeu_ps(row + n0 + j, m, y);
                    }
                }
            }
        }
    }
    TILE_RELEASE();
    free(a_hi);
    return NULL;
}

/* out (rows x outputs) = x (rows x depth) w (+ bias, `outputs` floats, where given), float32
 * row-major, w packed by vosfx_amx_linear_pack; on `threads` threads, `block` rows at a time
 * (a multiple of 32 up to LINEAR_ROWS: the same outputs whichever). Returns 0, 1 for a CPU or
 * shape it does not take (the AMX form not run here), 2 where memory ran out. */
int vosfx_amx_linear(const float *x, int rows, int depth, const uint16_t *w, int outputs,
                     const float *bias, float *out, int threads, int block) {
    if (!cpu_supported(FORM_AMX) || rows <= 0 || depth <= 0 || outputs <= 0 || block < 32 ||
        block > LINEAR_ROWS || block % 32)
        return 1;
    linear_t c = {x, bias, w, out, rows, depth, outputs, 1, block,
                  round_up((size_t)depth, AMX_DEPTH), round_up((size_t)outputs, 32)};
    int blocks = (rows + block - 1) / block;
    c.threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    c.threads = c.threads < blocks ? c.threads : blocks;
    linear_part_t parts[MAX_THREADS];
    int failed = 0;
    for (int t = 0; t < c.threads; t++) parts[t] = (linear_part_t){&c, t, 0};
    run_threads(c.threads, linear_part, parts, sizeof(linear_part_t));
    for (int t = 0; t < c.threads; t++) failed |= parts[t].failed;
    return failed ? 2 : 0;
}
#else
size_t vosfx_amx_linear_packed_size(int depth, int outputs) { (void)depth, (void)outputs; return 0; }
int vosfx_amx_linear_pack(const float *w, int depth, int outputs, uint16_t *packed) {
    (void)w, (void)depth, (void)outputs, (void)packed;
    return 1;
}
int vosfx_amx_linear(const float *x, int rows, int depth, const uint16_t *w, int outputs,
                     const float *bias, float *out, int threads, int block) {
    (void)x, (void)rows, (void)depth, (void)w, (void)outputs, (void)bias, (void)out, (void)threads;
    (void)block;
    return 1;
}
#endif

/* 1 where this CPU runs the kernel's `form`: 1 (the AVX-512 form), 2 or 3 (AMX) */
int vosfx_int16_attention_supported(int form) { return cpu_supported(form); }

/* out (rows, channels) = softmax(q k^T * scale) v, float32 row-major; q (rows, depth),
 * k (keys, depth), v (keys, channels); depth a multiple of 2 up to 512, channels a multiple
 * of 16; `form` the scores' products' (1 AVX-512 words, 2 AMX's bfloat16 triples, 3 AMX's
 * bfloat16 alone: the bf16 tier's). Returns
 * 0, 1 for a CPU or shape it does not take, 2 where memory ran out. */
int vosfx_int16_attention(const float *q, const float *k, const float *v, float *out, int rows,
                          int keys, int depth, int channels, float scale, int threads, int form) {
    if (!cpu_supported(form) || depth <= 0 || depth % 2 || depth > 512 || channels <= 0 ||
        channels % 16 || rows <= 0 || keys <= 0)
        return 1;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    call_t c = {0};
    c.q = q, c.k = k, c.v = v, c.out = out;
    c.rows = rows, c.keys = keys, c.depth = depth, c.channels = channels;
    c.scale = scale;
    c.form = form;
    c.threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    return attention(&c);
#else
    (void)q, (void)k, (void)v, (void)out, (void)scale;
    return 1;
#endif
}
