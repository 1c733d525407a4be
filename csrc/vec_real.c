/* vec_real.c: the streaming kernels over flat buffers, for one instruction set and dtype.

   Included by gradkern.c next to gemm_real.c (same REAL and G(name)), so that the compiler
   vectorizes them for the ISA of the region. The arithmetic follows the NumPy reference
   operation by operation (no contraction into FMA: the build passes -ffp-contract=off), so
   the updates agree with it to the last bit in most elements. */

/* Σ x² in double. Fixed partition into GK_SUM_PARTS parts, each summed in 8 lanes, the
   parts then added in order: the same result whatever the thread count. */
static double G(sum_squares)(const REAL *x, int64_t n)
{
    double part[GK_SUM_PARTS];
    int parts = n >= GK_PAR_STREAM ? GK_SUM_PARTS : 1;
#pragma omp parallel for schedule(static) num_threads(gk_get_threads()) \
    if (parts > 1 && gk_get_threads() > 1)
    for (int p = 0; p < parts; p++) {
        int64_t lo = n * p / parts, hi = n * (p + 1) / parts;
        double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t i = lo;
        for (; i + 8 <= hi; i += 8)
            for (int l = 0; l < 8; l++) lane[l] += (double)x[i + l] * (double)x[i + l];
        for (; i < hi; i++) lane[0] += (double)x[i] * (double)x[i];
        part[p] = ((lane[0] + lane[1]) + (lane[2] + lane[3]))
                  + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    }
    double s = 0;
    for (int p = 0; p < parts; p++) s += part[p];
    return s;
}

static void G(scale)(REAL *x, REAL f, int64_t n)
{
#pragma omp parallel for schedule(static) num_threads(gk_get_threads()) \
    if (n >= GK_PAR_STREAM && gk_get_threads() > 1)
    for (int64_t i = 0; i < n; i++) x[i] *= f;
}

/* torch.optim.SGD: g = grad + wd·p; buf = mom·buf + (1 - damp)·g (buf = g at step 1);
   g = g + mom·buf (Nesterov) or buf; p -= lr·g */
static void G(sgd_update)(REAL *params, REAL *buf, const REAL *grads, const double *hyper,
                          int64_t step, int64_t n)
{
    REAL lr = (REAL)hyper[GK_H_LR], mom = (REAL)hyper[GK_H_MOM];
    REAL damp1 = (REAL)(1.0 - hyper[GK_H_DAMP]), wd = (REAL)hyper[GK_H_WD];
    int has_wd = hyper[GK_H_WD] != 0, has_mom = hyper[GK_H_MOM] != 0;
    int nesterov = hyper[GK_H_NESTEROV] != 0;
#pragma omp parallel for schedule(static) num_threads(gk_get_threads()) \
    if (n >= GK_PAR_STREAM && gk_get_threads() > 1)
    for (int64_t i = 0; i < n; i++) {
        REAL g = grads[i];
        if (has_wd) g = g + wd * params[i];
        if (has_mom) {
            REAL bi = step == 1 ? g : buf[i] * mom + damp1 * g;
            buf[i] = bi;
            g = nesterov ? g + mom * bi : bi;
        }
        params[i] = params[i] - lr * g;
    }
}

/* torch.optim.Adam / AdamW: m, v moments; p -= lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps) */
static void G(adam_update)(REAL *params, REAL *m, REAL *v, const REAL *grads,
                           const double *hyper, int64_t step, int64_t n)
{
    double lr = hyper[GK_H_LR], b1 = hyper[GK_H_BETA1], b2 = hyper[GK_H_BETA2];
    double wd = hyper[GK_H_WD];
    int decoupled = hyper[GK_H_DECOUPLED] != 0, has_wd = wd != 0;
    REAL decay = (REAL)(1.0 - lr * wd), wd_r = (REAL)wd;
    REAL beta1 = (REAL)b1, beta2 = (REAL)b2, one_b1 = (REAL)(1.0 - b1), one_b2 = (REAL)(1.0 - b2);
    double bc1 = 1.0 - pow(b1, (double)step), bc2 = 1.0 - pow(b2, (double)step);
    REAL sqrt_bc2 = (REAL)sqrt(bc2), eps = (REAL)hyper[GK_H_EPS], step_size = (REAL)(lr / bc1);
#pragma omp parallel for schedule(static) num_threads(gk_get_threads()) \
    if (n >= GK_PAR_STREAM && gk_get_threads() > 1)
    for (int64_t i = 0; i < n; i++) {
        REAL p = params[i], g = grads[i];
        if (has_wd) {
            if (decoupled) p = p * decay;
            else g = g + wd_r * p;
        }
        REAL mi = m[i] * beta1 + one_b1 * g;
        REAL vi = v[i] * beta2 + one_b2 * (g * g);
        m[i] = mi;
        v[i] = vi;
        REAL denom = SQRT(vi) / sqrt_bc2 + eps;
        params[i] = p - step_size * (mi / denom);
    }
}
