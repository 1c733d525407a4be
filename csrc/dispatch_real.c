/* dispatch_real.c: the public GEMM, dense-layer and streaming entry points of one dtype,
   each handing the work to the instruction set chosen at load (gk_set_isa). Included by
   gradkern.c twice, with REAL, F(name) and SFX(name) (name##_f32 or name##_f64). */

static int64_t F(gemm_work_isa)(int isa, int64_t m, int64_t n, int64_t k, int64_t trans_b,
                                int threads)
{
    switch (isa) {
#if GK_X86
    case GK_ISA_AVX512: return SFX(work_avx512)(m, n, k, trans_b, threads);
    case GK_ISA_AVX2: return SFX(work_avx2)(m, n, k, trans_b, threads);
#endif
    default: return SFX(work_generic)(m, n, k, trans_b, threads);
    }
}

/* scratch for any ISA, any thread count up to the processors here (never the thread count
   asked for: that may be anything), either trans_b; G(work) caps it by the work too */
static int64_t F(gemm_work_max)(int64_t m, int64_t n, int64_t k)
{
    int threads = gk_max_threads();
    read_env();  /* the parallel threshold, before it is used to size anything */
    int64_t need = 0;
    for (int isa = GK_ISA_GENERIC; isa <= GK_ISA_AVX512; isa++) {
        int64_t w = F(gemm_work_isa)(isa, m, n, k, 1, threads);
        need = w > need ? w : need;
    }
    return need;
}

int64_t F(gk_gemm_work)(int64_t m, int64_t n, int64_t k)
{
    if (m < 0 || n < 0 || k < 0) return GK_ERR_SHAPE;
    return F(gemm_work_max)(m, n, k);
}

/* the GEMM with a fused epilogue (GK_EPI_*, writing eout from each finished tile) */
static int F(gemm_epi)(REAL *c, REAL *colsum_b, const REAL *a, const REAL *b, const REAL *bias,
                       int64_t m, int64_t n, int64_t k, int64_t trans_a, int64_t trans_b,
                       REAL *work, int64_t work_size, int epi, REAL *eout, const REAL *eaux)
{
    if (m < 0 || n < 0 || k < 0 || work_size < 0) return GK_ERR_SHAPE;
    switch (gk_isa()) {
#if GK_X86
    case GK_ISA_AVX512:
        return SFX(gemm_avx512)(c, colsum_b, a, b, bias, m, n, k, trans_a, trans_b, work,
                                work_size, epi, eout, eaux);
    case GK_ISA_AVX2:
        return SFX(gemm_avx2)(c, colsum_b, a, b, bias, m, n, k, trans_a, trans_b, work,
                              work_size, epi, eout, eaux);
#endif
    default:
        return SFX(gemm_generic)(c, colsum_b, a, b, bias, m, n, k, trans_a, trans_b, work,
                                 work_size, epi, eout, eaux);
    }
}

int F(gk_gemm)(REAL *c, REAL *colsum_b, const REAL *a, const REAL *b, const REAL *bias,
               int64_t m, int64_t n, int64_t k, int64_t trans_a, int64_t trans_b, REAL *work,
               int64_t work_size)
{
    return F(gemm_epi)(c, colsum_b, a, b, bias, m, n, k, trans_a, trans_b, work, work_size,
                       GK_EPI_NONE, NULL, NULL);
}

/* out (B, OC) = inp (B, C) @ weight (C, OC) + bias (OC) */
int F(gk_matmul_forward)(REAL *out, const REAL *inp, const REAL *weight, const REAL *bias,
                         int64_t B, int64_t C, int64_t OC, REAL *work, int64_t work_size)
{
    return F(gk_gemm)(out, NULL, inp, weight, bias, B, OC, C, 0, 0, work, work_size);
}

/* dinp (B, C) = dout (B, OC) @ weight^T; dweight (C, OC) = inp^T @ dout; dbias = Σ_rows dout.
   The bias gradient rides along the weight-gradient GEMM, which reads dout anyway. */
int F(gk_matmul_backward)(REAL *dinp, REAL *dweight, REAL *dbias, const REAL *dout,
                          const REAL *inp, const REAL *weight, int64_t B, int64_t C, int64_t OC,
                          REAL *work, int64_t work_size)
{
    int rc = GK_OK;
    if (dinp) rc = F(gk_gemm)(dinp, NULL, dout, weight, NULL, B, C, OC, 0, 1, work, work_size);
    if (rc != GK_OK) return rc;
    return F(gk_gemm)(dweight, dbias, inp, dout, NULL, C, OC, B, 1, 0, work, work_size);
}

double F(gk_sum_squares)(const REAL *x, int64_t n)
{
    switch (gk_isa()) {
#if GK_X86
    case GK_ISA_AVX512: return SFX(sum_squares_avx512)(x, n);
    case GK_ISA_AVX2: return SFX(sum_squares_avx2)(x, n);
#endif
    default: return SFX(sum_squares_generic)(x, n);
    }
}

void F(gk_scale)(REAL *x, double factor, int64_t n)
{
    switch (gk_isa()) {
#if GK_X86
    case GK_ISA_AVX512: SFX(scale_avx512)(x, (REAL)factor, n); return;
    case GK_ISA_AVX2: SFX(scale_avx2)(x, (REAL)factor, n); return;
#endif
    default: SFX(scale_generic)(x, (REAL)factor, n);
    }
}

int F(gk_sgd_update)(REAL *params, REAL *buf, const REAL *grads, const double *hyper,
                     int64_t step, int64_t P)
{
    if (step < 1 || P < 0) return GK_ERR_SHAPE;
    switch (gk_isa()) {
#if GK_X86
    case GK_ISA_AVX512: SFX(sgd_update_avx512)(params, buf, grads, hyper, step, P); break;
    case GK_ISA_AVX2: SFX(sgd_update_avx2)(params, buf, grads, hyper, step, P); break;
#endif
    default: SFX(sgd_update_generic)(params, buf, grads, hyper, step, P);
    }
    return GK_OK;
}

int F(gk_adam_update)(REAL *params, REAL *m, REAL *v, const REAL *grads, const double *hyper,
                      int64_t step, int64_t P)
{
    if (step < 1 || P < 0) return GK_ERR_SHAPE;
    switch (gk_isa()) {
#if GK_X86
    case GK_ISA_AVX512: SFX(adam_update_avx512)(params, m, v, grads, hyper, step, P); break;
    case GK_ISA_AVX2: SFX(adam_update_avx2)(params, m, v, grads, hyper, step, P); break;
#endif
    default: SFX(adam_update_generic)(params, m, v, grads, hyper, step, P);
    }
    return GK_OK;
}

double F(gk_fma_loop)(int64_t iters, int threads)
{
    double flops = 0;
    int isa = gk_isa();
    int most = gk_max_threads();  /* the processors here; 1 in a forked child */
    if (threads > most) threads = most;
    if (threads <= 1) {  /* no parallel region: fork-safe */
        switch (isa) {
#if GK_X86
        case GK_ISA_AVX512: return SFX(fma_loop_avx512)(iters);
        case GK_ISA_AVX2: return SFX(fma_loop_avx2)(iters);
#endif
        default: return SFX(fma_loop_generic)(iters);
        }
    }
#pragma omp parallel num_threads(threads) reduction(+ : flops)
    {
        switch (isa) {
#if GK_X86
        case GK_ISA_AVX512: flops += SFX(fma_loop_avx512)(iters); break;
        case GK_ISA_AVX2: flops += SFX(fma_loop_avx2)(iters); break;
#endif
        default: flops += SFX(fma_loop_generic)(iters);
        }
    }
    return flops;
}
