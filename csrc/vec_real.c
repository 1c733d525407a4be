/* vec_real.c: the streaming kernels over flat buffers, for one instruction set and dtype.

   Included by gradkern.c next to gemm_real.c (same REAL and G(name)), so that the compiler
   vectorizes them for the ISA of the region. The arithmetic follows the NumPy reference
   operation by operation (no contraction into FMA: the build passes -ffp-contract=off), so
   the updates agree with it to the last bit in most elements.

   Each kernel works on a range [lo, hi); large buffers are split into chunks handed out to
   the OpenMP threads, small ones run without entering a parallel region (which alone
   costs about 0.5 µs). */

/* Σ x² over [lo, hi) in double, in 32 lanes then a fixed tree. 32 lanes are four vectors
   of independent sums (on AVX-512; eight on AVX2): with 8 lanes the loop waited on the
   latency of one chain of adds and read 3.5 G elements/s, a tenth of a step at width 256. */
#define GK_SSQ_LANES 32
static double G(sum_squares_range)(const REAL *x, int64_t lo, int64_t hi)
{
    /* GCC vectors of 8 (the compiler would not vectorize the lanes written as scalars):
       lane 8a + j sums the elements i = lo + 8a + j (mod 32) */
    typedef double v8d __attribute__((vector_size(64)));
    typedef REAL v8r __attribute__((vector_size(8 * sizeof(REAL))));
    v8d acc[GK_SSQ_LANES / 8];
    for (int a = 0; a < GK_SSQ_LANES / 8; a++) acc[a] = (v8d){0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = lo;
    for (; i + GK_SSQ_LANES <= hi; i += GK_SSQ_LANES)
#pragma GCC unroll 4
        for (int a = 0; a < GK_SSQ_LANES / 8; a++) {
            v8r t;
            memcpy(&t, x + i + 8 * a, sizeof t);
            v8d d = __builtin_convertvector(t, v8d);
            acc[a] += d * d;
        }
    double lane[GK_SSQ_LANES];
    memcpy(lane, acc, sizeof lane);
    for (; i < hi; i++) lane[0] += (double)x[i] * (double)x[i];
    for (int w = GK_SSQ_LANES / 2; w >= 1; w /= 2)  /* pairwise: lane l += lane l + w */
        for (int l = 0; l < w; l++) lane[l] += lane[l + w];
    return lane[0];
}
#undef GK_SSQ_LANES

/* Σ x² in double. A fixed partition into GK_SUM_PARTS parts whose sums are added in order:
   the same result whatever the thread count. */
static double G(sum_squares)(const REAL *x, int64_t n)
{
    if (n < GK_PAR_SUM) return G(sum_squares_range)(x, 0, n);
    double part[GK_SUM_PARTS];
    int threads = gk_get_threads();
    if (threads > GK_SUM_PARTS) threads = GK_SUM_PARTS;
    if (threads <= 1) {  /* the same parts, without entering a parallel region (fork-safe) */
        for (int p = 0; p < GK_SUM_PARTS; p++)
            part[p] = G(sum_squares_range)(x, n * p / GK_SUM_PARTS, n * (p + 1) / GK_SUM_PARTS);
    } else {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
        for (int p = 0; p < GK_SUM_PARTS; p++)
            part[p] = G(sum_squares_range)(x, n * p / GK_SUM_PARTS,
                                           n * (p + 1) / GK_SUM_PARTS);
    }
    double s = 0;
    for (int p = 0; p < GK_SUM_PARTS; p++) s += part[p];
    return s;
}

static void G(scale_range)(REAL *x, REAL f, int64_t lo, int64_t hi)
{
    for (int64_t i = lo; i < hi; i++) x[i] *= f;
}

/* torch.optim.SGD: g = grad + wd·p; buf = mom·buf + (1 - damp)·g (buf = g at step 1);
   g = g + mom·buf (Nesterov) or buf; p -= lr·g */
static void G(sgd_range)(REAL *params, REAL *buf, const REAL *grads, const double *hyper,
                         int64_t step, int64_t lo, int64_t hi)
{
    REAL lr = (REAL)hyper[GK_H_LR], mom = (REAL)hyper[GK_H_MOMENTUM];
    REAL damp1 = (REAL)(1.0 - hyper[GK_H_DAMPENING]);
    REAL wd = (REAL)hyper[GK_H_WEIGHT_DECAY];
    int has_wd = hyper[GK_H_WEIGHT_DECAY] != 0, has_mom = hyper[GK_H_MOMENTUM] != 0;
    int nesterov = hyper[GK_H_NESTEROV] != 0;
    if (!has_wd && !has_mom) {  /* plain SGD: one multiply-subtract per element */
        for (int64_t i = lo; i < hi; i++) params[i] = params[i] - lr * grads[i];
        return;
    }
    for (int64_t i = lo; i < hi; i++) {
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
static void G(adam_range)(REAL *params, REAL *m, REAL *v, const REAL *grads,
                          const double *hyper, int64_t step, int64_t lo, int64_t hi)
{
    double lr = hyper[GK_H_LR], b1 = hyper[GK_H_BETA1], b2 = hyper[GK_H_BETA2];
    double wd = hyper[GK_H_WEIGHT_DECAY];
    int decoupled = hyper[GK_H_DECOUPLED] != 0, has_wd = wd != 0;
    REAL decay = (REAL)(1.0 - lr * wd), wd_r = (REAL)wd;
    REAL beta1 = (REAL)b1, beta2 = (REAL)b2, one_b1 = (REAL)(1.0 - b1), one_b2 = (REAL)(1.0 - b2);
    double bc1 = 1.0 - pow(b1, (double)step), bc2 = 1.0 - pow(b2, (double)step);
    REAL sqrt_bc2 = (REAL)sqrt(bc2), eps = (REAL)hyper[GK_H_EPS], step_size = (REAL)(lr / bc1);
    for (int64_t i = lo; i < hi; i++) {
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

/* torch.optim.RMSprop: g = grad + wd·p; sq = alpha·sq + (1 - alpha)·g²; centered:
   ga = ga + (1 - alpha)·(g - ga), avg = sqrt(sq - ga²) + eps, else avg = sqrt(sq) + eps;
   momentum: mb = mom·mb + g/avg, p -= lr·mb; else p -= lr·(g/avg).
   mb and ga are read only when momentum > 0 and centered (they may be NULL otherwise). */
static void G(rmsprop_range)(REAL *params, REAL *sq, REAL *mb, REAL *ga, const REAL *grads,
                             const double *hyper, int64_t step, int64_t lo, int64_t hi)
{
    REAL lr = (REAL)hyper[GK_H_LR], alpha = (REAL)hyper[GK_H_ALPHA];
    REAL one_a = (REAL)(1.0 - hyper[GK_H_ALPHA]), eps = (REAL)hyper[GK_H_EPS];
    REAL wd = (REAL)hyper[GK_H_WEIGHT_DECAY], mom = (REAL)hyper[GK_H_MOMENTUM];
    int has_wd = hyper[GK_H_WEIGHT_DECAY] != 0, has_mom = hyper[GK_H_MOMENTUM] > 0;
    int centered = hyper[GK_H_CENTERED] != 0;
    (void)step;
    for (int64_t i = lo; i < hi; i++) {
        REAL g = grads[i];
        if (has_wd) g = g + wd * params[i];
        REAL v = sq[i] * alpha + one_a * (g * g);
        sq[i] = v;
        REAL avg;
        if (centered) {
            REAL m = ga[i] + one_a * (g - ga[i]);
            ga[i] = m;
            avg = SQRT(v - m * m) + eps;
        } else {
            avg = SQRT(v) + eps;
        }
        if (has_mom) {
            REAL b = mb[i] * mom + g / avg;
            mb[i] = b;
            params[i] = params[i] - lr * b;
        } else {
            params[i] = params[i] - lr * (g / avg);
        }
    }
}

/* torch.optim.Adagrad: g = grad + wd·p; sum += g²; p -= clr·g/(sqrt(sum) + eps) with
   clr = lr / (1 + (step - 1)·lr_decay) */
static void G(adagrad_range)(REAL *params, REAL *sum, const REAL *grads, const double *hyper,
                             int64_t step, int64_t lo, int64_t hi)
{
    REAL clr = (REAL)(hyper[GK_H_LR] / (1.0 + (double)(step - 1) * hyper[GK_H_LR_DECAY]));
    REAL eps = (REAL)hyper[GK_H_EPS], wd = (REAL)hyper[GK_H_WEIGHT_DECAY];
    int has_wd = hyper[GK_H_WEIGHT_DECAY] != 0;
    for (int64_t i = lo; i < hi; i++) {
        REAL g = grads[i];
        if (has_wd) g = g + wd * params[i];
        REAL s = sum[i] + g * g;
        sum[i] = s;
        params[i] = params[i] - clr * (g / (SQRT(s) + eps));
    }
}

/* run body(lo, hi) over [0, n): directly when n < min_, else in chunks of at least
   GK_STREAM_CHUNK elements (at most GK_SUM_PARTS of them) handed out dynamically to the
   threads (elementwise, so the split changes no result; 64 chunks of a 40k-element Adam
   pass cost more in hand-outs between the cores than the second thread saved) */
#define GK_STREAM_FROM(n, min_, body)                                          \
    do {                                                                       \
        int threads_ = (n) >= (min_) ? gk_get_threads() : 1;                   \
        if (threads_ > GK_SUM_PARTS) threads_ = GK_SUM_PARTS;                  \
        int64_t parts_ = (n) / GK_STREAM_CHUNK;                                \
        if (parts_ > GK_SUM_PARTS) parts_ = GK_SUM_PARTS;                      \
        if (parts_ < threads_) parts_ = threads_;                              \
        if (threads_ <= 1) {  /* no parallel region at all: fork-safe */       \
            int64_t lo = 0, hi = (n);                                          \
            body;                                                              \
        } else {                                                               \
            _Pragma("omp parallel for schedule(dynamic, 1) num_threads(threads_)") \
            for (int64_t q_ = 0; q_ < parts_; q_++) {                          \
                int64_t lo = (n) * q_ / parts_;                                \
                int64_t hi = (n) * (q_ + 1) / parts_;                          \
                body;                                                          \
            }                                                                  \
        }                                                                      \
    } while (0)
#define GK_STREAM(n, body) GK_STREAM_FROM(n, GK_PAR_STREAM, body)

static void G(scale)(REAL *x, REAL f, int64_t n)
{
    GK_STREAM(n, G(scale_range)(x, f, lo, hi));
}

static void G(sgd_update)(REAL *params, REAL *buf, const REAL *grads, const double *hyper,
                          int64_t step, int64_t n)
{
    GK_STREAM(n, G(sgd_range)(params, buf, grads, hyper, step, lo, hi));
}

static void G(adam_update)(REAL *params, REAL *m, REAL *v, const REAL *grads,
                           const double *hyper, int64_t step, int64_t n)
{
    GK_STREAM_FROM(n, GK_PAR_HEAVY, G(adam_range)(params, m, v, grads, hyper, step, lo, hi));
}

static void G(rmsprop_update)(REAL *params, REAL *sq, REAL *mb, REAL *ga, const REAL *grads,
                              const double *hyper, int64_t step, int64_t n)
{
    GK_STREAM_FROM(n, GK_PAR_HEAVY,
                   G(rmsprop_range)(params, sq, mb, ga, grads, hyper, step, lo, hi));
}

static void G(adagrad_update)(REAL *params, REAL *sum, const REAL *grads, const double *hyper,
                              int64_t step, int64_t n)
{
    GK_STREAM_FROM(n, GK_PAR_HEAVY, G(adagrad_range)(params, sum, grads, hyper, step, lo, hi));
}

#undef GK_STREAM
#undef GK_STREAM_FROM
