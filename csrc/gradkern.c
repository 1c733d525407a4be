/* gradkern.c: the C backend of gradkern, built as one translation unit.

   Layout: shared helpers and the runtime (threads) first; then the GEMM and streaming
   kernels once per instruction set -- each ISA is one description, isa_<name>.h (tile
   sizes, vector macros, name, CPU test), instantiated for both dtypes by isa_instance.h --
   and the dispatch table holding them, one row per ISA; then the public entry points
   (dispatch_real.c, calling through the table), the elementwise kernels and the fused
   drivers once per dtype. The templates (*_real.c) are included with REAL and name macros
   set; they are not compiled on their own. gk_contract.h is generated at build time from
   src/gradkern/contract.py (see _build_c.py) and holds the enum and shared constants.

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

#include "gk_contract.h"  /* generated from contract.py: the enum, GK_LEAKY, GK_GOLDEN, ... */
#include "gradkern.h"

#ifndef GK_BUILD_INFO
#define GK_BUILD_INFO "unknown"
#endif

/* ---------------------------------------------------------------- constants */

/* the contract's codes and constants (GK_LEAKY, GK_GOLDEN, GK_LAYER_MIX) are in gk_contract.h */

#define GK_SQRT_HALF 0.70710678118654752440
#define GK_INV_SQRT_2PI 0.39894228040143267794
#define GK_SUM_PARTS 64                     /* fixed parts of a reduction */
#define GK_PAR_STREAM (1 << 20)             /* streaming kernels go parallel from here */
/* the optimizers with a square root and divisions per element (Adam, RMSprop, Adagrad) are
   bound by that arithmetic, not by memory: two threads pay from far fewer elements */
#define GK_PAR_HEAVY (1 << 15)
#define GK_STREAM_CHUNK 8192               /* least elements of a chunk handed out */
#define GK_PAR_SUM (1 << 17)                /* the norm: its fixed parts from here */
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

/* ---------------------------------------------------------------- GEMM and streaming kernels */

#define GK_CAT2_(a, b) a##_##b
#define GK_CAT2(a, b) GK_CAT2_(a, b)
#define GK_CAT3_(a, b, c) a##_##b##_##c
#define GK_CAT3(a, b, c) GK_CAT3_(a, b, c)
#define G(name) GK_CAT3(name, ISA_NAME, DT_NAME)

/* What one ISA provides for one dtype (REAL T): its register tile and its kernels. */
#define GK_KERNELS(T)                                                                        \
    struct {                                                                                 \
        int64_t mr, nr, kc;                                                                  \
        int64_t (*work)(int64_t m, int64_t n, int64_t k, int64_t trans_a, int64_t trans_b,  \
                        int threads);                                                        \
        int (*gemm)(T *c, T *colsum, const T *a, const T *b, const T *bias, int64_t m,       \
                    int64_t n, int64_t k, int64_t trans_a, int64_t trans_b, T *work,          \
                    int64_t work_size, int epi, T *eout, const T *eaux);                     \
        double (*sum_squares)(const T *x, int64_t n);                                        \
        void (*scale)(T *x, T f, int64_t n);                                                 \
        void (*sgd_update)(T *params, T *buf, const T *grads, const double *hyper,           \
                           int64_t step, int64_t n);                                          \
        void (*adam_update)(T *params, T *m, T *v, const T *grads, const double *hyper,      \
                            int64_t step, int64_t n);                                         \
        void (*rmsprop_update)(T *params, T *sq, T *mb, T *ga, const T *grads,               \
                               const double *hyper, int64_t step, int64_t n);                 \
        void (*adagrad_update)(T *params, T *sum, const T *grads, const double *hyper,       \
                               int64_t step, int64_t n);                                      \
        double (*fma_loop)(int64_t iters);                                                   \
    }
typedef GK_KERNELS(float) gk_kernels_f32;
typedef GK_KERNELS(double) gk_kernels_f64;

/* Each ISA: its description (isa_*.h) instantiated by isa_instance.h. The x86 ones are
   compiled inside `#pragma GCC target` regions, so one build runs fast here and safely on
   older CPUs. */
#define GK_ISA_HEADER "isa_generic.h"
#include "isa_instance.h"
#if GK_X86
#define GK_ISA_HEADER "isa_avx2.h"
#include "isa_instance.h"
#define GK_ISA_HEADER "isa_avx512.h"
#include "isa_instance.h"
#endif

#undef G

/* The dispatch table: one row per ISA, indexed by its contract.Isa code; filled at compile
   time, read by every public entry point through the row of the ISA in use (gk_isa). */
typedef struct gk_isa_row {
    const char *name;  /* as $GRADKERN_ISA spells it */
    int (*supported)(void);
    const gk_kernels_f32 *kern_f32;
    const gk_kernels_f64 *kern_f64;
} gk_isa_row;

#define GK_ISA(name) {#name, isa_supported_##name, &kernels_##name##_f32, &kernels_##name##_f64}
static const gk_isa_row g_isas[] = {
    [GK_ISA_GENERIC] = GK_ISA(generic),
#if GK_X86
    [GK_ISA_AVX2] = GK_ISA(avx2),
    [GK_ISA_AVX512] = GK_ISA(avx512),
#endif
};
#undef GK_ISA
#define GK_N_ISAS ((int)(sizeof g_isas / sizeof g_isas[0]))

int gk_best_isa(void)
{
#if GK_X86
    __builtin_cpu_init();
#endif
    for (int isa = GK_N_ISAS - 1; isa > GK_ISA_GENERIC; isa--)
        if (g_isas[isa].name && g_isas[isa].supported()) return isa;
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
    if (g_isa < 0) {  /* first use: the best here, or $GRADKERN_ISA by name */
        const char *env = getenv("GRADKERN_ISA");
        int want = GK_N_ISAS - 1;
        for (int isa = 0; env && isa < GK_N_ISAS; isa++)
            if (g_isas[isa].name && strcmp(env, g_isas[isa].name) == 0) want = isa;
        gk_set_isa(want);
    }
    return g_isa;
}

/* register tile and KC of the ISA in use, for tests that probe the edges */
int gk_tile_f32(int64_t *mr, int64_t *nr, int64_t *kc)
{
    const gk_kernels_f32 *k = g_isas[gk_isa()].kern_f32;
    *mr = k->mr, *nr = k->nr, *kc = k->kc;
    return GK_OK;
}

int gk_tile_f64(int64_t *mr, int64_t *nr, int64_t *kc)
{
    const gk_kernels_f64 *k = g_isas[gk_isa()].kern_f64;
    *mr = k->mr, *nr = k->nr, *kc = k->kc;
    return GK_OK;
}

gk_constants gk_contract_constants(void)
{
    gk_constants c = {GK_LEAKY, GK_GOLDEN, GK_LAYER_MIX};
    return c;
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
