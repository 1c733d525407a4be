/* driver_real.c: the fused plan drivers, for one dtype. One C call runs a forward pass, a
   training step or a whole epoch; the semantics are those of the Python driver in
   backends/base.py (forward, backward, gradients, commit, train_step, train_epoch).

   Included by gradkern.c twice, after kernels_real.c, with REAL and F(name). The gk_model
   was checked once by gk_model_check_*; each call checks only what it is given. */

#define OPS(m, i, col) ((m)->ops[(i) * GK_OPS_COLS + (col)])
#define FARG(m, i, col) ((m)->fargs[(i) * GK_FARGS_COLS + (col)])

int F(gk_model_check)(const gk_model *m)
{
    if (m->n_layers < 1 || m->capacity < 1) return GK_ERR_PLAN;
    if (m->loss < 0 || m->loss >= GK_N_LOSSES) return GK_ERR_PLAN;
    if (!(m->delta > 0) || !isfinite(m->delta)) return GK_ERR_PLAN;
    if (!m->ops || !m->fargs || !m->out_off || !m->cache_off) return GK_ERR_PLAN;
    for (int64_t i = 0; i < m->n_layers; i++) {
        int64_t kind = OPS(m, i, GK_K_KIND), nin = OPS(m, i, GK_K_IN);
        int64_t nout = OPS(m, i, GK_K_OUT);
        if (nin < 1 || nout < 1) return GK_ERR_PLAN;
        if (i > 0 && nin != OPS(m, i - 1, GK_K_OUT)) return GK_ERR_PLAN;
        if (kind != GK_DENSE && nin != nout) return GK_ERR_PLAN;
        if (!in_range(m->out_off[i], m->capacity * nout, m->n_acts)) return GK_ERR_PLAN;
        int64_t pa = OPS(m, i, GK_K_PA), pb = OPS(m, i, GK_K_PB);
        if (kind == GK_DENSE) {
            if (!in_range(pa, nin * nout, m->n_params) || !in_range(pb, nout, m->n_params))
                return GK_ERR_PLAN;
        } else if (kind == GK_ACTIVATION) {
            int64_t act = OPS(m, i, GK_K_ACT);
            if (act < 0 || act >= GK_N_ACTS) return GK_ERR_PLAN;
        } else if (kind == GK_BATCHNORM) {
            if (!in_range(pa, nout, m->n_params) || !in_range(pb, nout, m->n_params)
                || !in_range(OPS(m, i, GK_K_SA), nout, m->n_state)
                || !in_range(OPS(m, i, GK_K_SB), nout, m->n_state)
                || !in_range(m->cache_off[i], 3 * nout, m->n_cache))
                return GK_ERR_PLAN;
            if (!(FARG(m, i, GK_F_EPS) > 0)) return GK_ERR_PLAN;
        } else if (kind == GK_DROPOUT) {
            double p = FARG(m, i, GK_F_P);
            if (!(p >= 0 && p < 1)) return GK_ERR_PLAN;
            if (p > 0 && !in_range(m->cache_off[i], m->capacity * nout, m->n_cache))
                return GK_ERR_PLAN;
        } else {
            return GK_ERR_PLAN;
        }
    }
    return GK_OK;
}

/* GEMM scratch for the largest product of any dense layer at full capacity */
int64_t F(gk_model_work)(const gk_model *m)
{
    int64_t need = 0;
    for (int64_t i = 0; i < m->n_layers; i++) {
        if (OPS(m, i, GK_K_KIND) != GK_DENSE) continue;
        int64_t B = m->capacity, C = OPS(m, i, GK_K_IN), OC = OPS(m, i, GK_K_OUT);
        int64_t w1 = F(gemm_work_max)(B, OC, C), w2 = F(gemm_work_max)(B, C, OC);
        int64_t w3 = F(gemm_work_max)(C, OC, B);
        need = w1 > need ? w1 : need;
        need = w2 > need ? w2 : need;
        need = w3 > need ? w3 : need;
    }
    return need;
}

static REAL *F(layer_out)(const gk_model *m, int64_t i)
{
    return (REAL *)m->acts + m->out_off[i];
}

static REAL *F(layer_dout)(const gk_model *m, int64_t i)
{
    return (REAL *)m->dacts + m->out_off[i];
}

/* The epilogue that fuses activation layer j into the GEMM next to it, or GK_EPI_NONE.
   Only the cheap activations: the point is to save a pass over memory, and the
   transcendental ones cost their arithmetic either way. */
static int F(fused_act)(const gk_model *m, int64_t j, int backward)
{
    if (j < 0 || j >= m->n_layers || OPS(m, j, GK_K_KIND) != GK_ACTIVATION) return GK_EPI_NONE;
    switch (OPS(m, j, GK_K_ACT)) {
    case GK_IDENTITY: return GK_EPI_IDENTITY;
    case GK_RELU: return backward ? GK_EPI_DRELU : GK_EPI_RELU;
    case GK_LEAKY_RELU: return backward ? GK_EPI_DLEAKY : GK_EPI_LEAKY;
    default: return GK_EPI_NONE;
    }
}

/* x (rows, n_in): every layer in turn; the output is layer_out(last) */
static int F(forward_rows)(const gk_model *m, const REAL *x, int64_t rows, int training,
                           uint64_t seed)
{
    REAL *params = (REAL *)m->params, *state = (REAL *)m->state, *cache = (REAL *)m->cache;
    REAL *work = (REAL *)m->work;
    const REAL *inp = x;
    for (int64_t i = 0; i < m->n_layers; i++) {
        int64_t kind = OPS(m, i, GK_K_KIND), nin = OPS(m, i, GK_K_IN);
        int64_t n = OPS(m, i, GK_K_OUT);
        int64_t pa = OPS(m, i, GK_K_PA), pb = OPS(m, i, GK_K_PB);
        REAL *out = F(layer_out)(m, i);
        int rc = GK_OK;
        if (kind == GK_DENSE) {
            int epi = F(fused_act)(m, i + 1, 0);  /* Dense then ReLU: one call, one pass */
            rc = F(gemm_epi)(out, NULL, inp, params + pa, params + pb, rows, n, nin, 0, 0,
                             work, m->work_size, epi, epi ? F(layer_out)(m, i + 1) : NULL,
                             NULL);
            if (epi) {
                if (rc != GK_OK) return rc;
                i++;
                out = F(layer_out)(m, i);
            }
        } else if (kind == GK_ACTIVATION) {
            rc = F(gk_activation_forward)(OPS(m, i, GK_K_ACT), out, inp, rows * n);
        } else if (kind == GK_BATCHNORM) {
            REAL *c = cache + m->cache_off[i];
            rc = F(gk_batchnorm_forward)(out, c, c + n, c + 2 * n, inp, params + pa,
                                         params + pb, state + OPS(m, i, GK_K_SA),
                                         state + OPS(m, i, GK_K_SB), training,
                                         FARG(m, i, GK_F_EPS), rows, n);
        } else {  /* dropout */
            double p = FARG(m, i, GK_F_P);
            if (training && p > 0)
                rc = F(gk_dropout_forward)(out, cache + m->cache_off[i], inp, p,
                                           layer_seed(seed, i), rows * n);
            else
                memmove(out, inp, (size_t)(rows * n) * sizeof(REAL));
        }
        if (rc != GK_OK) return rc;
        inp = out;
    }
    return GK_OK;
}

/* backpropagate the gradient in layer_dout(last) to every parameter gradient */
static int F(backward_rows)(const gk_model *m, const REAL *x, int64_t rows)
{
    REAL *params = (REAL *)m->params, *grads = (REAL *)m->grads, *cache = (REAL *)m->cache;
    REAL *work = (REAL *)m->work;
    for (int64_t i = m->n_layers - 1; i >= 0; i--) {
        int64_t kind = OPS(m, i, GK_K_KIND), nin = OPS(m, i, GK_K_IN);
        int64_t n = OPS(m, i, GK_K_OUT);
        int64_t pa = OPS(m, i, GK_K_PA), pb = OPS(m, i, GK_K_PB);
        REAL *dout = F(layer_dout)(m, i);
        const REAL *inp = i == 0 ? x : F(layer_out)(m, i - 1);
        REAL *dinp = i == 0 ? NULL : F(layer_dout)(m, i - 1);
        int rc = GK_OK;
        if (kind == GK_DENSE) {
            /* an activation below (with a layer below it to receive the gradient) rides on
               the input-gradient GEMM: dout(i-2) = (dout·Wᵀ) * act'(out(i-2)) */
            int epi = i >= 2 ? F(fused_act)(m, i - 1, 1) : GK_EPI_NONE;
            if (dinp)
                rc = F(gemm_epi)(dinp, NULL, dout, params + pa, NULL, rows, nin, n, 0, 1, work,
                                 m->work_size, epi, epi ? F(layer_dout)(m, i - 2) : NULL,
                                 epi ? F(layer_out)(m, i - 2) : NULL);
            if (rc == GK_OK)  /* dW = inpᵀ·dout, with db = Σ dout riding along */
                rc = F(gk_gemm)(grads + pa, grads + pb, inp, dout, NULL, nin, n, rows, 1, 0,
                                work, m->work_size);
            if (rc != GK_OK) return rc;
            if (epi) i--;  /* the activation below is done */
            continue;
        } else if (dinp == NULL && kind != GK_BATCHNORM) {
            continue;  /* nothing below to receive the gradient */
        } else if (kind == GK_ACTIVATION) {
            rc = F(gk_activation_backward)(OPS(m, i, GK_K_ACT), dinp, dout, inp,
                                           F(layer_out)(m, i), rows * n);
        } else if (kind == GK_BATCHNORM) {
            REAL *c = cache + m->cache_off[i];
            rc = F(gk_batchnorm_backward)(dinp, grads + pa, grads + pb, dout, inp, c,
                                          c + 2 * n, params + pa, rows, n);
        } else {  /* dropout */
            if (FARG(m, i, GK_F_P) > 0)
                rc = F(gk_dropout_backward)(dinp, dout, cache + m->cache_off[i], rows * n);
            else
                memmove(dinp, dout, (size_t)(rows * n) * sizeof(REAL));
        }
        if (rc != GK_OK) return rc;
    }
    return GK_OK;
}

static int F(gradients_rows)(const gk_model *m, double *loss, const REAL *x,
                             const REAL *target, const int64_t *labels, const REAL *weight,
                             int64_t rows, uint64_t seed)
{
    int64_t last = m->n_layers - 1, K = OPS(m, last, GK_K_OUT);
    if (m->loss == GK_CROSS_ENTROPY) {
        if (!labels) return GK_ERR_SHAPE;
        for (int64_t r = 0; r < rows; r++)
            if (labels[r] < 0 || labels[r] >= K) return GK_ERR_LABEL;
    } else if (!target) {
        return GK_ERR_SHAPE;
    }
    int rc = F(forward_rows)(m, x, rows, 1, seed);
    if (rc != GK_OK) return rc;
    rc = F(gk_loss_forward_backward)(m->loss, F(layer_dout)(m, last), loss,
                                     F(layer_out)(m, last), target, labels, weight, rows, K,
                                     m->delta);
    if (rc != GK_OK) return rc;
    return F(backward_rows)(m, x, rows);
}

/* an accepted step: running statistics, then the optimizer update */
static int F(commit)(const gk_model *m, const gk_optim *o, int64_t rows)
{
    REAL *state = (REAL *)m->state, *cache = (REAL *)m->cache;
    for (int64_t i = 0; i < m->n_layers; i++) {
        if (OPS(m, i, GK_K_KIND) != GK_BATCHNORM) continue;
        int64_t n = OPS(m, i, GK_K_OUT);
        REAL *c = cache + m->cache_off[i];
        F(gk_batchnorm_update_running)(state + OPS(m, i, GK_K_SA), state + OPS(m, i, GK_K_SB),
                                       c, c + n, rows, FARG(m, i, GK_F_MOMENTUM), n);
    }
    o->step[0] += 1;
    REAL *p = (REAL *)m->params, *b1 = (REAL *)o->buf1, *b2 = (REAL *)o->buf2;
    const REAL *g = (const REAL *)m->grads;
    switch (o->kind) {
    case GK_SGD: return F(gk_sgd_update)(p, b1, g, o->hyper, o->step[0], m->n_params);
    case GK_ADAM: return F(gk_adam_update)(p, b1, b2, g, o->hyper, o->step[0], m->n_params);
    case GK_RMSPROP:
        return F(gk_rmsprop_update)(p, b1, b2, (REAL *)o->buf3, g, o->hyper, o->step[0],
                                    m->n_params);
    case GK_ADAGRAD: return F(gk_adagrad_update)(p, b1, g, o->hyper, o->step[0], m->n_params);
    default: return GK_ERR_KIND;
    }
}

static int F(step_rows)(const gk_model *m, const gk_optim *o, double *loss, double *gnorm,
                        const REAL *x, const REAL *target, const int64_t *labels,
                        const REAL *weight, int64_t rows, uint64_t seed, double clip_norm)
{
    int rc = F(gradients_rows)(m, loss, x, target, labels, weight, rows, seed);
    if (rc != GK_OK) return rc;
    *gnorm = sqrt(F(gk_sum_squares)((const REAL *)m->grads, m->n_params));
    if (!(isfinite(*loss) && isfinite(*gnorm))) return GK_OK;  /* rejected: nothing changes */
    if (weight) {  /* weights summing to 0: nothing to learn, no update */
        double wsum = 0;
        for (int64_t r = 0; r < rows; r++) wsum += (double)weight[r];
        if (!(wsum > 0)) return GK_OK;
    }
    if (clip_norm > 0 && *gnorm > clip_norm)  /* torch.nn.utils.clip_grad_norm_ */
        F(gk_scale)((REAL *)m->grads, clip_norm / (*gnorm + 1e-6), m->n_params);
    return F(commit)(m, o, rows);
}

static int F(check_call)(const gk_model *m, int64_t rows)
{
    if (rows < 1 || rows > m->capacity) return GK_ERR_SHAPE;
    return GK_OK;
}

static int F(check_optim)(const gk_model *m, const gk_optim *o)
{
    if (!o || !o->hyper || !o->step || !o->buf1) return GK_ERR_SHAPE;
    if (o->kind < 0 || o->kind >= GK_N_OPTS) return GK_ERR_KIND;
    if (o->kind == GK_ADAM && !o->buf2) return GK_ERR_SHAPE;
    if (o->kind == GK_RMSPROP && ((o->hyper[GK_H_MOMENTUM] > 0 && !o->buf2) ||
                                  (o->hyper[GK_H_CENTERED] != 0 && !o->buf3)))
        return GK_ERR_SHAPE;
    (void)m;
    return GK_OK;
}

int F(gk_forward)(const gk_model *m, const REAL *x, int64_t rows, int64_t training,
                  uint64_t seed)
{
    int rc = F(check_call)(m, rows);
    if (rc != GK_OK) return rc;
    return F(forward_rows)(m, x, rows, training != 0, seed);
}

int F(gk_gradients)(const gk_model *m, double *loss, const REAL *x, const REAL *target,
                    const int64_t *labels, const REAL *weight, int64_t rows, uint64_t seed)
{
    int rc = F(check_call)(m, rows);
    if (rc != GK_OK) return rc;
    return F(gradients_rows)(m, loss, x, target, labels, weight, rows, seed);
}

int F(gk_train_step)(const gk_model *m, const gk_optim *o, double *loss, double *gnorm,
                     const REAL *x, const REAL *target, const int64_t *labels,
                     const REAL *weight, int64_t rows, uint64_t seed, double clip_norm)
{
    int rc = F(check_call)(m, rows);
    if (rc == GK_OK) rc = F(check_optim)(m, o);
    if (rc != GK_OK) return rc;
    return F(step_rows)(m, o, loss, gnorm, x, target, labels, weight, rows, seed, clip_norm);
}

int64_t F(gk_train_epoch)(const gk_model *m, const gk_optim *o, double *losses, double *gnorms,
                          const REAL *X, const REAL *target, const int64_t *labels,
                          const REAL *weights, int64_t n_rows, const int64_t *perm,
                          int64_t n_perm, int64_t batch_size, const uint64_t *seeds,
                          const double *lrs, double clip_norm)
{
    if (batch_size < 1 || n_perm < 0) return GK_ERR_SHAPE;
    int64_t first_rows = n_perm < batch_size ? n_perm : batch_size;
    if (n_perm > 0 && first_rows > m->capacity) return GK_ERR_SHAPE;
    int rc = F(check_optim)(m, o);
    if (rc != GK_OK) return rc;
    int64_t last = m->n_layers - 1, n_in = OPS(m, 0, GK_K_IN), K = OPS(m, last, GK_K_OUT);
    int ce = m->loss == GK_CROSS_ENTROPY;
    if (ce ? !labels || !m->lbuf : !target || !m->ybuf) return GK_ERR_SHAPE;
    if (!m->xbuf || (weights && !m->wbuf)) return GK_ERR_SHAPE;
    /* every index before the first step, so a bad one changes nothing */
    for (int64_t t = 0; t < n_perm; t++) {
        if (perm[t] < 0 || perm[t] >= n_rows) return GK_ERR_INDEX;
        if (ce && (labels[perm[t]] < 0 || labels[perm[t]] >= K)) return GK_ERR_LABEL;
    }
    REAL *xb = (REAL *)m->xbuf, *yb = (REAL *)m->ybuf, *wb = (REAL *)m->wbuf;
    int64_t n_batches = (n_perm + batch_size - 1) / batch_size;
    /* a per-step rate: the update reads a copy of hyper, never o->hyper itself */
    double hyper[GK_HYPER_COLS];
    gk_optim step_o = *o;
    if (lrs) {
        memcpy(hyper, o->hyper, sizeof hyper);
        step_o.hyper = hyper;
    }
    for (int64_t k = 0; k < n_batches; k++) {
        int64_t lo = k * batch_size, rows = n_perm - lo < batch_size ? n_perm - lo : batch_size;
        for (int64_t r = 0; r < rows; r++) {  /* gather the minibatch into the workspace */
            int64_t src = perm[lo + r];
            memcpy(xb + r * n_in, X + src * n_in, (size_t)n_in * sizeof(REAL));
            if (ce) m->lbuf[r] = labels[src];
            else memcpy(yb + r * K, target + src * K, (size_t)K * sizeof(REAL));
            if (weights) wb[r] = weights[src];
        }
        if (lrs) hyper[GK_H_LR] = lrs[k];
        double loss = 0, gnorm = 0;
        rc = F(step_rows)(m, &step_o, &loss, &gnorm, xb, ce ? NULL : yb, ce ? m->lbuf : NULL,
                          weights ? wb : NULL, rows, seeds[k], clip_norm);
        if (rc != GK_OK) return rc;
        losses[k] = loss;
        gnorms[k] = gnorm;
        if (!(isfinite(loss) && isfinite(gnorm))) return k;
    }
    return n_batches;
}

#undef OPS
#undef FARG
