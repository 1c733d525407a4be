/* kernels_real.c: the elementwise kernels of the contract, for one dtype.

   Included by gradkern.c twice, with REAL, F(name) (the public _f32/_f64 name), the libm
   functions EXP, LOG, LOG1P, TANH, ERF, SQRT of that dtype, and V(name) (the dispatched
   streaming kernels of vec_real.c). Each kernel mirrors numpy_backend.py operation by
   operation; where it does better (sums in double) the difference is within a few u.
   Legend: B rows, N features, K classes, n = B*N elements. */

/* ---------------------------------------------------------------- activations */

/* sigmoid without overflow: exp of a non-positive number only */
static inline REAL F(sigmoid1)(REAL x)
{
    REAL e = EXP(-FABS(x));
    return (x >= 0 ? (REAL)1 : e) / ((REAL)1 + e);
}

/* out (n) = act(inp) */
int F(gk_activation_forward)(int64_t kind, REAL *out, const REAL *inp, int64_t n)
{
    switch (kind) {
    case GK_IDENTITY:
        if (out != inp) memmove(out, inp, (size_t)n * sizeof(REAL));
        return GK_OK;
    case GK_RELU:  /* np.maximum(x, 0): NaN stays NaN (x > 0 ? x : 0 would make it 0) */
        for (int64_t i = 0; i < n; i++) out[i] = inp[i] <= 0 ? (REAL)0 : inp[i];
        return GK_OK;
    case GK_LEAKY_RELU:
        for (int64_t i = 0; i < n; i++) out[i] = inp[i] * (inp[i] > 0 ? (REAL)1 : (REAL)GK_LEAKY);
        return GK_OK;
    case GK_SIGMOID:
        for (int64_t i = 0; i < n; i++) out[i] = F(sigmoid1)(inp[i]);
        return GK_OK;
    case GK_TANH:
        for (int64_t i = 0; i < n; i++) out[i] = TANH(inp[i]);
        return GK_OK;
    case GK_GELU:  /* x/2 (1 + erf(x/√2)) */
        for (int64_t i = 0; i < n; i++)
            out[i] = ((REAL)0.5 * inp[i]) * ((REAL)1 + ERF(inp[i] * (REAL)GK_SQRT_HALF));
        return GK_OK;
    case GK_SILU:  /* x σ(x) */
        for (int64_t i = 0; i < n; i++) out[i] = inp[i] * F(sigmoid1)(inp[i]);
        return GK_OK;
    }
    return GK_ERR_KIND;
}

/* dinp (n) = dout * act'(inp); out = act(inp) serves sigmoid and tanh */
int F(gk_activation_backward)(int64_t kind, REAL *dinp, const REAL *dout, const REAL *inp,
                              const REAL *out, int64_t n)
{
    switch (kind) {
    case GK_IDENTITY:
        if (dinp != dout) memmove(dinp, dout, (size_t)n * sizeof(REAL));
        return GK_OK;
    case GK_RELU:
        for (int64_t i = 0; i < n; i++) dinp[i] = inp[i] > 0 ? dout[i] : (REAL)0 * dout[i];
        return GK_OK;
    case GK_LEAKY_RELU:
        for (int64_t i = 0; i < n; i++)
            dinp[i] = dout[i] * (inp[i] > 0 ? (REAL)1 : (REAL)GK_LEAKY);
        return GK_OK;
    case GK_SIGMOID:  /* σ' = σ (1 - σ) */
        for (int64_t i = 0; i < n; i++) dinp[i] = dout[i] * (out[i] * ((REAL)1 - out[i]));
        return GK_OK;
    case GK_TANH:     /* tanh' = 1 - tanh² */
        for (int64_t i = 0; i < n; i++) dinp[i] = dout[i] * ((REAL)1 - out[i] * out[i]);
        return GK_OK;
    case GK_GELU:     /* gelu' = Φ(x) + x φ(x) */
        for (int64_t i = 0; i < n; i++) {
            REAL x = inp[i];
            REAL cdf = (REAL)0.5 * ((REAL)1 + ERF(x * (REAL)GK_SQRT_HALF));
            REAL pdf = EXP((REAL)-0.5 * x * x) * (REAL)GK_INV_SQRT_2PI;
            dinp[i] = dout[i] * (cdf + x * pdf);
        }
        return GK_OK;
    case GK_SILU:     /* silu' = σ(x) (1 + x (1 - σ(x))) */
        for (int64_t i = 0; i < n; i++) {
            REAL s = F(sigmoid1)(inp[i]);
            dinp[i] = dout[i] * (s * ((REAL)1 + inp[i] * ((REAL)1 - s)));
        }
        return GK_OK;
    }
    return GK_ERR_KIND;
}

/* ---------------------------------------------------------------- losses */

/* l1 / huber of one difference d: the loss in double (NaN takes huber's linear branch) */
static inline double F(robust1)(int64_t kind, REAL d, double delta)
{
    double a = fabs((double)d);
    if (kind == GK_L1) return a;
    return a < delta ? 0.5 * a * a : delta * (a - 0.5 * delta);
}

/* and its gradient in REAL: l1 sign(d) (0 at 0, as torch; NaN stays NaN), huber d clipped
   to [-delta, delta] (NaN stays NaN) */
static inline REAL F(drobust1)(int64_t kind, REAL d, REAL dl)
{
    if (kind == GK_L1) return d > 0 ? (REAL)1 : (d < 0 ? (REAL)-1 : d * (REAL)0);
    return d > dl ? dl : (d < -dl ? -dl : d);
}

/* The weighted mean Σ w_r l_r / Σ w_r of the rows' losses l_r (a row's mean over its K
   elements, or its NLL); dpred = w_r / Σw · d l_r / d pred. Weights summing to 0 (they are
   finite and >= 0): loss 0 and dpred 0. Labels were checked by the caller. */
static int F(loss_weighted)(int64_t kind, REAL *dpred, double *loss, const REAL *pred,
                            const REAL *target, const int64_t *labels, const REAL *weight,
                            int64_t B, int64_t K, double delta)
{
    double wsum = 0;
    for (int64_t r = 0; r < B; r++) wsum += (double)weight[r];
    if (!(wsum > 0)) {
        for (int64_t i = 0; i < B * K; i++) dpred[i] = 0;
        *loss = 0;
        return GK_OK;
    }
    double s = 0;
    for (int64_t r = 0; r < B; r++) {
        const REAL *z = pred + r * K, *t = target ? target + r * K : NULL;
        REAL *d = dpred + r * K;
        double w = (double)weight[r], row = 0;
        if (kind == GK_CROSS_ENTROPY) {
            REAL mx = z[0];
            for (int64_t j = 1; j < K; j++) mx = z[j] > mx ? z[j] : mx;
            for (int64_t j = 0; j < K; j++) d[j] = z[j] - mx;
            REAL picked = d[labels[r]];
            for (int64_t j = 0; j < K; j++) d[j] = EXP(d[j]);
            double sum = 0;
            for (int64_t j = 0; j < K; j++) sum += d[j];
            row = log(sum) - (double)picked;
            REAL scale = (REAL)(w / (sum * wsum));
            for (int64_t j = 0; j < K; j++) d[j] *= scale;
            d[labels[r]] -= (REAL)(w / wsum);
        } else if (kind == GK_MSE) {
            REAL f = (REAL)(2.0 * w / (wsum * (double)K));
            for (int64_t j = 0; j < K; j++) {
                REAL e = z[j] - t[j];
                row += (double)e * (double)e;
                d[j] = e * f;
            }
            row /= (double)K;
        } else if (kind == GK_BINARY_CROSS_ENTROPY) {
            REAL f = (REAL)(w / (wsum * (double)K));
            for (int64_t j = 0; j < K; j++) {
                REAL zj = z[j], y = t[j];
                row += (double)(zj > 0 ? zj : 0) - (double)zj * (double)y
                       + log1p(exp(-fabs((double)zj)));
                d[j] = (F(sigmoid1)(zj) - y) * f;
            }
            row /= (double)K;
        } else if (kind == GK_L1 || kind == GK_HUBER) {
            REAL f = (REAL)(w / (wsum * (double)K)), dl = (REAL)delta;
            for (int64_t j = 0; j < K; j++) {
                REAL e = z[j] - t[j];
                row += F(robust1)(kind, e, delta);
                d[j] = F(drobust1)(kind, e, dl) * f;
            }
            row /= (double)K;
        } else {
            return GK_ERR_KIND;
        }
        s += w * row;
    }
    *loss = s / wsum;
    return GK_OK;
}

/* loss = mean over rows or elements (weight NULL), or the weighted mean over the rows;
   dpred (B, K) = d loss / d pred. target (B, K) for the regression losses and
   binary_cross_entropy; labels (B) in [0, K) for cross_entropy, all checked before
   anything is written. */
int F(gk_loss_forward_backward)(int64_t kind, REAL *dpred, double *loss, const REAL *pred,
                                const REAL *target, const int64_t *labels, const REAL *weight,
                                int64_t B, int64_t K, double delta)
{
    int64_t n = B * K;
    if (kind < 0 || kind >= GK_N_LOSSES) return GK_ERR_KIND;
    if (kind == GK_CROSS_ENTROPY) {
        if (!labels) return GK_ERR_SHAPE;
        for (int64_t r = 0; r < B; r++)
            if (labels[r] < 0 || labels[r] >= K) return GK_ERR_LABEL;
    } else if (!target) {
        return GK_ERR_SHAPE;
    }
    if (weight) return F(loss_weighted)(kind, dpred, loss, pred, target, labels, weight, B, K,
                                        delta);
    if (kind == GK_MSE) {
        double s = 0;
        REAL f = (REAL)(2.0 / (double)n);
        for (int64_t i = 0; i < n; i++) {
            REAL d = pred[i] - target[i];
            s += (double)d * (double)d;
            dpred[i] = d * f;
        }
        *loss = s / (double)n;
        return GK_OK;
    }
    if (kind == GK_CROSS_ENTROPY) {
        for (int64_t r = 0; r < B; r++)
            if (labels[r] < 0 || labels[r] >= K) return GK_ERR_LABEL;
        double s = 0;
        for (int64_t r = 0; r < B; r++) {
            const REAL *z = pred + r * K;
            REAL *d = dpred + r * K;
            REAL mx = z[0];
            for (int64_t j = 1; j < K; j++) mx = z[j] > mx ? z[j] : mx;
            for (int64_t j = 0; j < K; j++) d[j] = z[j] - mx;  /* shifted logits */
            REAL picked = d[labels[r]];
            for (int64_t j = 0; j < K; j++) d[j] = EXP(d[j]);
            double sum = 0;  /* a separate loop: the sum stays in a register */
            for (int64_t j = 0; j < K; j++) sum += d[j];
            s += log(sum) - (double)picked;
            /* softmax / B, minus 1/B at the label: one multiply per element */
            REAL scale = (REAL)(1.0 / (sum * (double)B));
            for (int64_t j = 0; j < K; j++) d[j] *= scale;
            d[labels[r]] -= (REAL)(1.0 / (double)B);
        }
        *loss = s / (double)B;
        return GK_OK;
    }
    if (kind == GK_BINARY_CROSS_ENTROPY) {  /* from logits z: max(z,0) - z y + log(1 + e^-|z|) */
        double s = 0;
        REAL f = (REAL)(1.0 / (double)n);
        for (int64_t i = 0; i < n; i++) {
            REAL z = pred[i], y = target[i];
            s += (double)(z > 0 ? z : 0) - (double)z * (double)y + log1p(exp(-fabs((double)z)));
            dpred[i] = (F(sigmoid1)(z) - y) * f;
        }
        *loss = s / (double)n;
        return GK_OK;
    }
    if (kind == GK_L1 || kind == GK_HUBER) {  /* mean over all elements */
        double s = 0;
        REAL f = (REAL)(1.0 / (double)n), dl = (REAL)delta;
        for (int64_t i = 0; i < n; i++) {
            REAL e = pred[i] - target[i];
            s += F(robust1)(kind, e, delta);
            dpred[i] = F(drobust1)(kind, e, dl) * f;
        }
        *loss = s / (double)n;
        return GK_OK;
    }
    return GK_ERR_KIND;
}

/* ---------------------------------------------------------------- batchnorm */

/* out (B, N) = gamma (inp - mu) rstd + beta. training: mean, biased var and
   rstd = 1/sqrt(var + eps) of this batch, written to mean, var, rstd (N); inference: from
   the running statistics, mean/var/rstd untouched. Column sums in double. */
int F(gk_batchnorm_forward)(REAL *out, REAL *mean, REAL *var, REAL *rstd, const REAL *inp,
                            const REAL *gamma, const REAL *beta, const REAL *running_mean,
                            const REAL *running_var, int64_t training, double eps, int64_t B,
                            int64_t N)
{
    if (training) {
        if (B < 1) return GK_ERR_SHAPE;
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t r = 0; r < B; r++) s += inp[r * N + j];
            mean[j] = (REAL)(s / (double)B);
        }
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t r = 0; r < B; r++) {
                REAL d = inp[r * N + j] - mean[j];
                s += (double)d * (double)d;
            }
            var[j] = (REAL)(s / (double)B);
            rstd[j] = (REAL)1 / SQRT(var[j] + (REAL)eps);
        }
        for (int64_t r = 0; r < B; r++)
            for (int64_t j = 0; j < N; j++)
                out[r * N + j] = (inp[r * N + j] - mean[j]) * rstd[j] * gamma[j] + beta[j];
    } else {
        for (int64_t r = 0; r < B; r++)
            for (int64_t j = 0; j < N; j++)
                out[r * N + j] = (inp[r * N + j] - running_mean[j])
                                 / SQRT(running_var[j] + (REAL)eps) * gamma[j] + beta[j];
    }
    return GK_OK;
}

/* dbeta = Σ dout; dgamma = Σ dout·xhat; dinp = rstd/B (B·dxhat − Σ dxhat − xhat Σ dxhat·xhat),
   dxhat = dout·gamma, xhat = (inp - mean) rstd. dinp skipped when NULL. */
int F(gk_batchnorm_backward)(REAL *dinp, REAL *dgamma, REAL *dbeta, const REAL *dout,
                             const REAL *inp, const REAL *mean, const REAL *rstd,
                             const REAL *gamma, int64_t B, int64_t N)
{
    for (int64_t j = 0; j < N; j++) {
        double sb = 0, sg = 0;
        for (int64_t r = 0; r < B; r++) {
            REAL xhat = (inp[r * N + j] - mean[j]) * rstd[j];
            sb += dout[r * N + j];
            sg += (double)dout[r * N + j] * (double)xhat;
        }
        dbeta[j] = (REAL)sb;
        dgamma[j] = (REAL)sg;
        if (dinp) {
            /* Σ dxhat = gamma Σ dout; Σ dxhat·xhat = gamma Σ dout·xhat */
            REAL sum_dxhat = (REAL)(sb * (double)gamma[j]);
            REAL sum_dxhat_xhat = (REAL)(sg * (double)gamma[j]);
            REAL f = rstd[j] / (REAL)B;
            for (int64_t r = 0; r < B; r++) {
                REAL xhat = (inp[r * N + j] - mean[j]) * rstd[j];
                REAL dxhat = dout[r * N + j] * gamma[j];
                dinp[r * N + j] = ((REAL)B * dxhat - sum_dxhat - xhat * sum_dxhat_xhat) * f;
            }
        }
    }
    return GK_OK;
}

/* running = (1 - momentum) running + momentum batch, the variance unbiased by B/(B-1) */
int F(gk_batchnorm_update_running)(REAL *running_mean, REAL *running_var, const REAL *mean,
                                   const REAL *var, int64_t rows, double momentum, int64_t N)
{
    REAL keep = (REAL)(1.0 - momentum), mom = (REAL)momentum;
    REAL unbias = rows > 1 ? (REAL)((double)rows / (double)(rows - 1)) : (REAL)1;
    for (int64_t j = 0; j < N; j++) {
        running_mean[j] = running_mean[j] * keep + mom * mean[j];
        running_var[j] = running_var[j] * keep + mom * (var[j] * unbias);
    }
    return GK_OK;
}

/* ---------------------------------------------------------------- dropout */

/* mask (n) = 0 or 1/(1-p): element e kept when the top 53 bits of
   splitmix64(seed + (e+1)·GOLDEN), as a fraction, are >= p; out = inp * mask */
int F(gk_dropout_forward)(REAL *out, REAL *mask, const REAL *inp, double p, uint64_t seed,
                          int64_t n)
{
    REAL scale = (REAL)(1.0 / (1.0 - p));
    for (int64_t e = 0; e < n; e++) {
        uint64_t h = splitmix64(seed + (uint64_t)(e + 1) * GK_GOLDEN);
        double u = (double)(h >> 11) * (1.0 / 9007199254740992.0);
        mask[e] = u >= p ? scale : (REAL)0;
        out[e] = inp[e] * mask[e];
    }
    return GK_OK;
}

int F(gk_dropout_backward)(REAL *dinp, const REAL *dout, const REAL *mask, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dinp[i] = dout[i] * mask[i];
    return GK_OK;
}
