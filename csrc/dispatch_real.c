/* dispatch_real.c: the public GEMM, dense-layer and streaming entry points of one dtype,
   each calling the kernels of the instruction set in use (gk_isa) through its row of the
   dispatch table. Included by gradkern.c twice, with REAL, F(name) and SFX(name)
   (name##_f32 or name##_f64). */

/* the kernels of the ISA in use, for this dtype */
static inline const SFX(gk_kernels) *F(kern)(void)
{
    return g_isas[gk_isa()].SFX(kern);
}

/* scratch for any ISA, any thread count up to the processors here (never the thread count
   asked for: that may be anything), either trans_a and trans_b; G(work) caps it by the work
   too */
static int64_t F(gemm_work_max)(int64_t m, int64_t n, int64_t k)
{
    int threads = gk_max_threads();
    read_env();  /* the parallel threshold, before it is used to size anything */
    int64_t need = 0;
    for (int isa = 0; isa < GK_N_ISAS; isa++) {
        if (!g_isas[isa].name) continue;
        int64_t w = g_isas[isa].SFX(kern)->work(m, n, k, 1, 1, threads);
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
    return F(kern)()->gemm(c, colsum_b, a, b, bias, m, n, k, trans_a, trans_b, work,
                           work_size, epi, eout, eaux);
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
    return F(kern)()->sum_squares(x, n);
}

void F(gk_scale)(REAL *x, double factor, int64_t n)
{
    F(kern)()->scale(x, (REAL)factor, n);
}

int F(gk_sgd_update)(REAL *params, REAL *buf, const REAL *grads, const double *hyper,
                     int64_t step, int64_t P)
{
    if (step < 1 || P < 0) return GK_ERR_SHAPE;
    F(kern)()->sgd_update(params, buf, grads, hyper, step, P);
    return GK_OK;
}

int F(gk_adam_update)(REAL *params, REAL *m, REAL *v, const REAL *grads, const double *hyper,
                      int64_t step, int64_t P)
{
    if (step < 1 || P < 0) return GK_ERR_SHAPE;
    F(kern)()->adam_update(params, m, v, grads, hyper, step, P);
    return GK_OK;
}

int F(gk_rmsprop_update)(REAL *params, REAL *square_avg, REAL *momentum_buffer, REAL *grad_avg,
                         const REAL *grads, const double *hyper, int64_t step, int64_t P)
{
    if (step < 1 || P < 0 || !square_avg) return GK_ERR_SHAPE;
    if ((hyper[GK_H_MOMENTUM] > 0 && !momentum_buffer) || (hyper[GK_H_CENTERED] != 0 && !grad_avg))
        return GK_ERR_SHAPE;
    F(kern)()->rmsprop_update(params, square_avg, momentum_buffer, grad_avg, grads, hyper, step,
                              P);
    return GK_OK;
}

int F(gk_adagrad_update)(REAL *params, REAL *state_sum, const REAL *grads, const double *hyper,
                         int64_t step, int64_t P)
{
    if (step < 1 || P < 0 || !state_sum) return GK_ERR_SHAPE;
    F(kern)()->adagrad_update(params, state_sum, grads, hyper, step, P);
    return GK_OK;
}

double F(gk_fma_loop)(int64_t iters, int threads)
{
    double flops = 0;
    double (*loop)(int64_t) = F(kern)()->fma_loop;
    int most = gk_max_threads();  /* the processors here; 1 in a forked child */
    if (threads > most) threads = most;
    if (threads <= 1) return loop(iters);  /* no parallel region: fork-safe */
#pragma omp parallel num_threads(threads) reduction(+ : flops)
    flops += loop(iters);
    return flops;
}
