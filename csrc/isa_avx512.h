/* isa_avx512.h: AVX-512 (F, DQ, BW, VL), 8 rows x 2 zmm; column edges under mask registers.
   An ISA description (see isa_generic.h); float also has transposing packs. */

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")

#define ISA_NAME avx512
#define ISA_SUPPORTED()                                                                    \
    (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")               \
     && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")           \
     && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
#define MR 8
#define KC 192
#define MC 256
#define NC 4096

#if !GK_F64
#define NR 32
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
#else
#define NR 16
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
#endif
