/* isa_avx2.h: AVX2 + FMA, 6 rows x 2 ymm. An ISA description (see isa_generic.h). */

#pragma GCC push_options
#pragma GCC target("avx2,fma")

#define ISA_NAME avx2
#define ISA_SUPPORTED() (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
#define MR 6
#define KC 256
#define MC 144
#define NC 2048
#define VMASK __m256i

#if !GK_F64
#define NR 16
#define VEC __m256
#define VLEN 8
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
#else
#define NR 8
#define VEC __m256d
#define VLEN 4
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
#endif
