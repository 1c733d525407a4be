/* gradkern.c: the C backend of gradkern, built as one translation unit.

   Layout: shared helpers and the runtime (instruction set, threads) first; then the GEMM
   and streaming kernels once per instruction set (each inside a `#pragma GCC target`
   region, so one build runs fast here and safely on older CPUs), then the elementwise
   kernels and the fused drivers once per dtype. The templates (*_real.c) are included
   with REAL and name macros set; they are not compiled on their own.

   Build macros: GK_SANITIZE (sanitizer build: enables the planted test bug),
   GK_BUILD_INFO (compiler and flags, a string). */

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#define GK_X86 1
#include <immintrin.h>
#else
#define GK_X86 0
#endif

#include "gradkern.h"

#ifndef GK_BUILD_INFO
#define GK_BUILD_INFO "unknown"
#endif

/* ---------------------------------------------------------------- constants */

#define GK_LEAKY 0.01
#define GK_SQRT_HALF 0.70710678118654752440
#define GK_INV_SQRT_2PI 0.39894228040143267794
#define GK_GOLDEN 0x9E3779B97F4A7C15ULL     /* splitmix64 increment */
#define GK_LAYER_MIX 0xD1B54A32D192ED03ULL  /* per-layer dropout seed offset */
#define GK_SUM_PARTS 64                     /* fixed parts of a reduction */
#define GK_PAR_STREAM (1 << 20)             /* streaming kernels go parallel from here */
/* fused GEMM epilogues: an activation after the product (forward) or its gradient (backward) */
enum { GK_EPI_NONE = 0, GK_EPI_IDENTITY, GK_EPI_RELU, GK_EPI_LEAKY, GK_EPI_DRELU, GK_EPI_DLEAKY };
/* GEMM: below SMALL_MNK multiply-adds, no packing; from PAR_MNK, all threads */
#define SMALL_MNK (48 * 48 * 48)
#define PAR_MNK (96.0 * 96.0 * 96.0)

/* ---------------------------------------------------------------- helpers */

static inline int64_t round_up64(int64_t n, int64_t multiple)
{
    return (n + multiple - 1) / multiple * multiple;
}

/* [off, off + len) inside [0, size) */
static inline int in_range(int64_t off, int64_t len, int64_t size)
{
    return off >= 0 && len >= 0 && off <= size && len <= size - off;
}

static inline uint64_t splitmix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* the dropout seed of layer i in the step seeded by `seed` (base.layer_seed) */
static inline uint64_t layer_seed(uint64_t seed, int64_t i)
{
    return seed + (uint64_t)(i + 1) * GK_LAYER_MIX;
}

/* ---------------------------------------------------------------- runtime */

/* Threads. g_threads is what gk_set_threads asked for (0: not set, OpenMP's default, i.e.
   $OMP_NUM_THREADS). Neither is trusted as is: every count used, for running or for sizing
   a workspace, is capped by the processors this process may run on (libgomp's
   omp_get_num_procs counts the sched affinity mask), so OMP_NUM_THREADS=100000 neither
   starts 100000 threads nor sizes a workspace for them.

   g_single is set in a fork()ed child (gk_after_fork_child, which the Python wrapper
   registers with os.register_at_fork): libgomp's thread pool does not survive fork, and
   entering any parallel region in the child -- even one with num_threads(1) or a false
   if() clause, which still waits for the parent's docked threads -- hangs for ever. From
   then on every kernel takes its serial path and never reaches a `#pragma omp parallel`.
   Results do not depend on the thread count, so the child computes exactly what the
   parent would. */
static int g_threads = 0;
static volatile int g_single = 0;

int gk_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* the processors this process may use (at least 1), counted once: omp_get_num_procs asks
   the kernel for the affinity mask on every call */
static int g_procs = 0;
static int gk_procs(void)
{
#ifdef _OPENMP
    if (g_procs < 1) {
        int procs = omp_get_num_procs();
        g_procs = procs > 1 ? procs : 1;
    }
    return g_procs;
#else
    return 1;
#endif
}

/* the most threads any kernel may use from now on: the ceiling workspaces are sized for */
static int gk_max_threads(void)
{
    return g_single ? 1 : gk_procs();
}

void gk_set_threads(int n)
{
    g_threads = n < 1 ? 1 : n;
}

/* threads a parallel kernel uses now: the count asked for, capped by the processors;
   1 in a forked child */
int gk_get_threads(void)
{
#ifdef _OPENMP
    if (g_single) return 1;
    int want = g_threads > 0 ? g_threads : omp_get_max_threads();
    int procs = gk_procs();
    return want < 1 ? 1 : want > procs ? procs : want;
#else
    return 1;
#endif
}

void gk_after_fork_child(void)
{
    g_single = 1;
}

int gk_single_threaded(void)
{
    return g_single;
}

static inline int gk_thread_num(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}


const char *gk_build_info(void)
{
    return GK_BUILD_INFO;
}

static int g_isa = -1;
/* GEMMs of at least this many multiply-adds use all threads ($GRADKERN_PAR_MNK overrides,
   for tuning on a given machine) */
static double g_par_mnk = PAR_MNK;
static int g_env_read = 0;

/* $GRADKERN_PAR_MNK, read once before the first GEMM or workspace size: only a whole,
   finite, positive number counts; anything else keeps the default (the wrapper warns) */
static void read_env(void)
{
    if (g_env_read) return;
    const char *par = getenv("GRADKERN_PAR_MNK");
    if (par && *par) {
        char *end = NULL;
        double v = strtod(par, &end);
        if (end && *end == '\0' && isfinite(v) && v > 0) g_par_mnk = v;
    }
    g_env_read = 1;
}

int gk_best_isa(void)
{
#if GK_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return GK_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return GK_ISA_AVX2;
#endif
    return GK_ISA_GENERIC;
}

int gk_set_isa(int isa)
{
    int best = gk_best_isa();
    read_env();
    g_isa = isa < GK_ISA_GENERIC ? GK_ISA_GENERIC : isa > best ? best : isa;
    return g_isa;
}

int gk_isa(void)
{
    if (g_isa < 0) {  /* first use: the best here, or GRADKERN_ISA=generic|avx2|avx512 */
        const char *env = getenv("GRADKERN_ISA");
        int want = GK_ISA_AVX512;
        if (env && strcmp(env, "generic") == 0) want = GK_ISA_GENERIC;
        if (env && strcmp(env, "avx2") == 0) want = GK_ISA_AVX2;
        gk_set_isa(want);
    }
    return g_isa;
}

/* ---------------------------------------------------------------- GEMM and streaming kernels */

#define GK_CAT3_(a, b, c) a##_##b##_##c
#define GK_CAT3(a, b, c) GK_CAT3_(a, b, c)
#define G(name) GK_CAT3(name, ISA_NAME, DT_NAME)

/* -- generic C: a 4 x 8 tile of scalars that the compiler may vectorize -- */
#define ISA_NAME generic
#define VLEN 1
#define VMASK int
#define MAKE_MASK(count) ((count) > 0)
#define VZERO() ((REAL)0)
#define VLOAD(p) (*(p))
#define VLOADM(m, p) ((m) ? *(p) : (REAL)0)
#define VSTOREM(p, m, v) ((m) ? (void)(*(p) = (v)) : (void)0)
#define VBCAST(x) (x)
#define VFMA(a, b, acc) ((a) * (b) + (acc))
#define VADD(a, b) ((a) + (b))
#define MR 4
#define NR 8
#define KC 256
#define MC 128
#define NC 2048
#define REAL float
#define VEC float
#define DT_NAME f32
#define SQRT sqrtf
#include "gemm_real.c"
#include "vec_real.c"
#undef REAL
#undef VEC
#undef DT_NAME
#undef SQRT
#define REAL double
#define VEC double
#define DT_NAME f64
#define SQRT sqrt
#include "gemm_real.c"
#include "vec_real.c"
#include "isa_undef.h"  /* end of one ISA's instantiation */

#if GK_X86
/* -- AVX2 + FMA: 6 rows x 2 ymm -- */
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define ISA_NAME avx2
#define REAL float
#define DT_NAME f32
#define SQRT sqrtf
#define VEC __m256
#define VLEN 8
#define VMASK __m256i
#define MAKE_MASK(count) \
    _mm256_cmpgt_epi32(_mm256_set1_epi32((int)((count) < 0 ? 0 : (count) > 8 ? 8 : (count))), \
                       _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define VZERO() _mm256_setzero_ps()
#define VLOAD(p) _mm256_loadu_ps(p)
#define VLOADM(m, p) _mm256_maskload_ps((p), (m))
#define VSTOREM(p, m, v) _mm256_maskstore_ps((p), (m), (v))
#define VBCAST(x) _mm256_set1_ps(x)
#define VFMA(a, b, acc) _mm256_fmadd_ps((a), (b), (acc))
#define VADD(a, b) _mm256_add_ps((a), (b))
#define MR 6
#define NR 16
#define KC 256
#define MC 144
#define NC 2048
#include "gemm_real.c"
#include "vec_real.c"
#undef REAL
#undef DT_NAME
#undef SQRT
#undef VEC
#undef VLEN
#undef VMASK
#undef MAKE_MASK
#undef VZERO
#undef VLOAD
#undef VLOADM
#undef VSTOREM
#undef VBCAST
#undef VFMA
#undef VADD
#undef NR
#define REAL double
#define DT_NAME f64
#define SQRT sqrt
#define VEC __m256d
#define VLEN 4
#define VMASK __m256i
#define MAKE_MASK(count) \
    _mm256_cmpgt_epi64(_mm256_set1_epi64x((count) < 0 ? 0 : (count) > 4 ? 4 : (count)), \
                       _mm256_setr_epi64x(0, 1, 2, 3))
#define VZERO() _mm256_setzero_pd()
#define VLOAD(p) _mm256_loadu_pd(p)
#define VLOADM(m, p) _mm256_maskload_pd((p), (m))
#define VSTOREM(p, m, v) _mm256_maskstore_pd((p), (m), (v))
#define VBCAST(x) _mm256_set1_pd(x)
#define VFMA(a, b, acc) _mm256_fmadd_pd((a), (b), (acc))
#define VADD(a, b) _mm256_add_pd((a), (b))
#define NR 8
#include "gemm_real.c"
#include "vec_real.c"
#include "isa_undef.h"  /* end of one ISA's instantiation */
#pragma GCC pop_options

/* -- AVX-512: 8 rows x 2 zmm; column edges under mask registers -- */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")
#define ISA_NAME avx512
#define REAL float
#define DT_NAME f32
#define SQRT sqrtf
#define VEC __m512
#define VLEN 16
#define VMASK __mmask16
#define MAKE_MASK(count) \
    ((count) >= 16 ? (__mmask16)0xFFFF : (count) <= 0 ? (__mmask16)0 \
                                                     : (__mmask16)((1u << (count)) - 1))
#define VZERO() _mm512_setzero_ps()
#define VLOAD(p) _mm512_loadu_ps(p)
#define VLOADM(m, p) _mm512_maskz_loadu_ps((m), (p))
#define VSTOREM(p, m, v) _mm512_mask_storeu_ps((p), (m), (v))
#define VBCAST(x) _mm512_set1_ps(x)
#define VFMA(a, b, acc) _mm512_fmadd_ps((a), (b), (acc))
#define VADD(a, b) _mm512_add_ps((a), (b))
#define MR 8
#define NR 32
#define KC 192
#define MC 256
#define NC 4096

/* 16 rows of 16 floats (r[i] = row i) -> 16 columns (r[k] = column k), in 64 shuffles:
   32-bit, 64-bit and two 128-bit interleaving stages. */
static inline __attribute__((always_inline)) void transpose16_avx512_f32(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
        __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

/* The transposing pack of a full panel: dst[k*W + r] = src[r*rs + k] for r < W (W a multiple
   of 16), k < kc rounded down to 16, in 16 x 16 register blocks. Returns the k done; the
   caller packs the rest. This is what makes dY·Wᵀ as fast as X·W. */
#define GK_PACK_T_FAST pack_t_avx512_f32
static int64_t pack_t_avx512_f32(float *restrict dst, const float *restrict src, int64_t rs,
                                 int64_t kc, int64_t W)
{
    int64_t k16 = kc / 16 * 16;
    for (int64_t r0 = 0; r0 < W; r0 += 16)
        for (int64_t k0 = 0; k0 < k16; k0 += 16) {
            __m512 v[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) v[i] = _mm512_loadu_ps(src + (r0 + i) * rs + k0);
            transpose16_avx512_f32(v);
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) _mm512_storeu_ps(dst + (k0 + i) * W + r0, v[i]);
        }
    return k16;
}

/* The transposing pack of an A block (broadcast operand, rows contiguous along k) into
   MR = 8 row panels: dst[p*8*kc + k*8 + r] = src[(8p + r)*rs + k], two panels at a time
   through the 16 x 16 transpose. Returns the rows done (a multiple of 16); the caller
   packs the rest. */
#define GK_PACK_A_T_FAST pack_a_t_avx512_f32
static int64_t pack_a_t_avx512_f32(float *restrict dst, const float *restrict src, int64_t rs,
                                   int64_t rows, int64_t kc)
{
    int64_t r16 = rows / 16 * 16, k16 = kc / 16 * 16;
    for (int64_t r0 = 0; r0 < r16; r0 += 16) {
        float *d0 = dst + r0 * kc, *d1 = d0 + 8 * kc;  /* panels r0/8 and r0/8 + 1 */
        for (int64_t k0 = 0; k0 < k16; k0 += 16) {
            __m512 v[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) v[i] = _mm512_loadu_ps(src + (r0 + i) * rs + k0);
            transpose16_avx512_f32(v);
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) {
                _mm256_storeu_ps(d0 + (k0 + i) * 8, _mm512_castps512_ps256(v[i]));
                _mm256_storeu_ps(d1 + (k0 + i) * 8, _mm512_extractf32x8_ps(v[i], 1));
            }
        }
        for (int64_t r = 0; r < 16; r++) {
            float *d = (r < 8 ? d0 : d1) + (r & 7);
            const float *srow = src + (r0 + r) * rs;
            for (int64_t k = k16; k < kc; k++) d[k * 8] = srow[k];
        }
    }
    return r16;
}
#include "gemm_real.c"
#undef GK_PACK_T_FAST
#undef GK_PACK_A_T_FAST
#include "vec_real.c"
#undef REAL
#undef DT_NAME
#undef SQRT
#undef VEC
#undef VLEN
#undef VMASK
#undef MAKE_MASK
#undef VZERO
#undef VLOAD
#undef VLOADM
#undef VSTOREM
#undef VBCAST
#undef VFMA
#undef VADD
#undef NR
#undef KC
#define REAL double
#define DT_NAME f64
#define SQRT sqrt
#define VEC __m512d
#define VLEN 8
#define VMASK __mmask8
#define MAKE_MASK(count) \
    ((count) >= 8 ? (__mmask8)0xFF : (count) <= 0 ? (__mmask8)0 : (__mmask8)((1u << (count)) - 1))
#define VZERO() _mm512_setzero_pd()
#define VLOAD(p) _mm512_loadu_pd(p)
#define VLOADM(m, p) _mm512_maskz_loadu_pd((m), (p))
#define VSTOREM(p, m, v) _mm512_mask_storeu_pd((p), (m), (v))
#define VBCAST(x) _mm512_set1_pd(x)
#define VFMA(a, b, acc) _mm512_fmadd_pd((a), (b), (acc))
#define VADD(a, b) _mm512_add_pd((a), (b))
#define NR 16
#define KC 192
#include "gemm_real.c"
#include "vec_real.c"
#include "isa_undef.h"  /* end of one ISA's instantiation */
#pragma GCC pop_options
#endif /* GK_X86 */

#undef G

/* register tile and KC of the ISA in use, for tests that probe the edges */
static void tile_of(int isa, int dbl, int64_t *mr, int64_t *nr, int64_t *kc)
{
    if (isa == GK_ISA_AVX512) { *mr = 8; *nr = dbl ? 16 : 32; *kc = 192; }
    else if (isa == GK_ISA_AVX2) { *mr = 6; *nr = dbl ? 8 : 16; *kc = 256; }
    else { *mr = 4; *nr = 8; *kc = 256; }
}

int gk_tile_f32(int64_t *mr, int64_t *nr, int64_t *kc)
{
    tile_of(gk_isa(), 0, mr, nr, kc);
    return GK_OK;
}

int gk_tile_f64(int64_t *mr, int64_t *nr, int64_t *kc)
{
    tile_of(gk_isa(), 1, mr, nr, kc);
    return GK_OK;
}

/* ---------------------------------------------------------------- per dtype: API, kernels, drivers */

#define F(name) name##_f32
#define SFX(name) name##_f32
#define REAL float
#define EXP expf
#define FABS fabsf
#define TANH tanhf
#define ERF erff
#define SQRT sqrtf
#include "dispatch_real.c"
#include "kernels_real.c"
#include "driver_real.c"
#undef F
#undef SFX
#undef REAL
#undef EXP
#undef FABS
#undef TANH
#undef ERF
#undef SQRT

#define F(name) name##_f64
#define SFX(name) name##_f64
#define REAL double
#define EXP exp
#define FABS fabs
#define TANH tanh
#define ERF erf
#define SQRT sqrt
#include "dispatch_real.c"
#include "kernels_real.c"
#include "driver_real.c"
#undef F
#undef SFX
#undef REAL
#undef EXP
#undef FABS
#undef TANH
#undef ERF
#undef SQRT

/* ---------------------------------------------------------------- test only */

int gk_sanitized(void)
{
#ifdef GK_SANITIZE
    return 1;
#else
    return 0;
#endif
}

/* The planted bug that proves the sanitizer job works: one float written past a heap
   block. Compiled only into the sanitizer build; elsewhere a no-op. */
int gk_test_oob_write(int64_t n)
{
#ifdef GK_SANITIZE
    volatile float *x = (volatile float *)malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!x) return -2;
    x[n > 0 ? n : 1] = 1.0f;  /* out of bounds, on purpose */
    free((void *)x);
    return 0;
#else
    (void)n;
    return -1;
#endif
}
