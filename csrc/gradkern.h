/* gradkern C API: the one declaration of every C function the Python wrapper calls.

   This header holds no preprocessor lines: the cffi build reads it verbatim as its cdef
   (after the generated enum), and csrc/gradkern.c includes it after <stdint.h> and the
   generated gk_contract.h.

   Conventions (docs/design.md §2): outputs first, then inputs, then sizes; every size and index
   is int64_t; arrays are C-contiguous and of one dtype, float (_f32) or double (_f64).
   Legend: B = batch rows, C = input features, OC = output features, N = features of an
   elementwise layer, K = classes or targets per row, P = flat parameter count.

   Functions that can fail return an int: GK_OK (0) or a negative GK_ERR_* code. C checks
   every index it is given (class labels, permutation entries, plan offsets) before use. */

/* The enum of every code and column (GK_RELU, GK_K_KIND, GK_F_EPS, GK_H_LR, GK_ERR_*,
   GK_ISA_*, GK_OPS_COLS, ...) is not written here: _build_c.py generates it from
   src/gradkern/contract.py (contract.c_declarations()), puts it in the cdef before this
   header, and writes gk_contract.h (the enum and the GK_LEAKY, GK_GOLDEN, GK_LAYER_MIX
   constants), which gradkern.c includes before this one. */

/* the contract's non-integer constants as the library was compiled with them */
typedef struct gk_constants {
    double leaky_slope;   /* GK_LEAKY */
    uint64_t golden;      /* GK_GOLDEN */
    uint64_t layer_mix;   /* GK_LAYER_MIX */
} gk_constants;
gk_constants gk_contract_constants(void);

/* ---- runtime: instruction set, threads, build facts ---- */
int gk_isa(void);                  /* the instruction set in use */
int gk_set_isa(int isa);           /* choose one (tests); returns the one in use afterwards */
int gk_best_isa(void);             /* the best this CPU supports */
int gk_openmp(void);               /* 1 when built with OpenMP */
void gk_set_threads(int n);         /* threads asked for; used capped by the processors */
int gk_get_threads(void);          /* threads a parallel kernel uses now */
void gk_after_fork_child(void);    /* call in a fork()ed child: serial from then on */
int gk_single_threaded(void);      /* 1 after gk_after_fork_child */
const char *gk_build_info(void);   /* compiler and flags */
int gk_tile_f32(int64_t *mr, int64_t *nr, int64_t *kc);  /* register tile of the ISA in use */
int gk_tile_f64(int64_t *mr, int64_t *nr, int64_t *kc);

/* ---- GEMM: c (M, N) = op(a) (M, K) @ op(b) (K, N) [+ bias (N,)] ----
   trans_a = 0: a stored (M, K); 1: a stored (K, M).  trans_b = 0: b stored (K, N); 1: (N, K).
   colsum_b, when not NULL, receives Σ_k op(b)[k, :] (N,): the bias gradient of X^T·dY.
   work: scratch of work_size elements, at least gk_gemm_work_f32/_f64(M, N, K) of them. */
int64_t gk_gemm_work_f32(int64_t m, int64_t n, int64_t k);
int64_t gk_gemm_work_f64(int64_t m, int64_t n, int64_t k);
int gk_gemm_f32(float *c, float *colsum_b, const float *a, const float *b, const float *bias,
                int64_t m, int64_t n, int64_t k, int64_t trans_a, int64_t trans_b,
                float *work, int64_t work_size);
int gk_gemm_f64(double *c, double *colsum_b, const double *a, const double *b,
                const double *bias, int64_t m, int64_t n, int64_t k, int64_t trans_a,
                int64_t trans_b, double *work, int64_t work_size);

/* ---- dense layer ---- */
/* out (B, OC) = inp (B, C) @ weight (C, OC) + bias (OC) */
int gk_matmul_forward_f32(float *out, const float *inp, const float *weight, const float *bias,
                          int64_t B, int64_t C, int64_t OC, float *work, int64_t work_size);
int gk_matmul_forward_f64(double *out, const double *inp, const double *weight,
                          const double *bias, int64_t B, int64_t C, int64_t OC,
                          double *work, int64_t work_size);
/* dinp (B, C) = dout @ weight^T (skipped when dinp is NULL); dweight (C, OC) = inp^T @ dout;
   dbias (OC) = Σ_rows dout */
int gk_matmul_backward_f32(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, int64_t B, int64_t C,
                           int64_t OC, float *work, int64_t work_size);
int gk_matmul_backward_f64(double *dinp, double *dweight, double *dbias, const double *dout,
                           const double *inp, const double *weight, int64_t B, int64_t C,
                           int64_t OC, double *work, int64_t work_size);

/* ---- activations: out, inp, dinp, dout (n elements) ---- */
int gk_activation_forward_f32(int64_t kind, float *out, const float *inp, int64_t n);
int gk_activation_forward_f64(int64_t kind, double *out, const double *inp, int64_t n);
int gk_activation_backward_f32(int64_t kind, float *dinp, const float *dout, const float *inp,
                               const float *out, int64_t n);
int gk_activation_backward_f64(int64_t kind, double *dinp, const double *dout,
                               const double *inp, const double *out, int64_t n);

/* ---- losses: dpred, pred (B, K); target (B, K) floats or labels (B,) int64 in [0, K);
   weight (B,) per-row sample weights, finite and >= 0, or NULL: the loss is then
   Σ w_i l_i / Σ w_i (0, with dpred 0, when they sum to 0); delta > 0: huber's ---- */
int gk_loss_forward_backward_f32(int64_t kind, float *dpred, double *loss, const float *pred,
                                 const float *target, const int64_t *labels,
                                 const float *weight, int64_t B, int64_t K, double delta);
int gk_loss_forward_backward_f64(int64_t kind, double *dpred, double *loss, const double *pred,
                                 const double *target, const int64_t *labels,
                                 const double *weight, int64_t B, int64_t K, double delta);

/* ---- batchnorm: out, inp (B, N); mean, var, rstd, gamma, beta, running stats (N) ---- */
int gk_batchnorm_forward_f32(float *out, float *mean, float *var, float *rstd, const float *inp,
                             const float *gamma, const float *beta, const float *running_mean,
                             const float *running_var, int64_t training, double eps, int64_t B,
                             int64_t N);
int gk_batchnorm_forward_f64(double *out, double *mean, double *var, double *rstd,
                             const double *inp, const double *gamma, const double *beta,
                             const double *running_mean, const double *running_var,
                             int64_t training, double eps, int64_t B, int64_t N);
/* dinp (skipped when NULL), dgamma, dbeta */
int gk_batchnorm_backward_f32(float *dinp, float *dgamma, float *dbeta, const float *dout,
                              const float *inp, const float *mean, const float *rstd,
                              const float *gamma, int64_t B, int64_t N);
int gk_batchnorm_backward_f64(double *dinp, double *dgamma, double *dbeta, const double *dout,
                              const double *inp, const double *mean, const double *rstd,
                              const double *gamma, int64_t B, int64_t N);
int gk_batchnorm_update_running_f32(float *running_mean, float *running_var, const float *mean,
                                    const float *var, int64_t rows, double momentum, int64_t N);
int gk_batchnorm_update_running_f64(double *running_mean, double *running_var,
                                    const double *mean, const double *var, int64_t rows,
                                    double momentum, int64_t N);

/* ---- dropout: out, mask, inp, dinp, dout (n elements) ---- */
int gk_dropout_forward_f32(float *out, float *mask, const float *inp, double p, uint64_t seed,
                           int64_t n);
int gk_dropout_forward_f64(double *out, double *mask, const double *inp, double p,
                           uint64_t seed, int64_t n);
int gk_dropout_backward_f32(float *dinp, const float *dout, const float *mask, int64_t n);
int gk_dropout_backward_f64(double *dinp, const double *dout, const double *mask, int64_t n);

/* ---- optimizers on flat buffers (P elements); hyper (GK_HYPER_COLS); step from 1 ---- */
int gk_sgd_update_f32(float *params, float *buf, const float *grads, const double *hyper,
                      int64_t step, int64_t P);
int gk_sgd_update_f64(double *params, double *buf, const double *grads, const double *hyper,
                      int64_t step, int64_t P);
int gk_adam_update_f32(float *params, float *m, float *v, const float *grads,
                       const double *hyper, int64_t step, int64_t P);
int gk_adam_update_f64(double *params, double *m, double *v, const double *grads,
                       const double *hyper, int64_t step, int64_t P);
/* torch.optim.RMSprop; momentum_buffer is read only with momentum > 0, grad_avg only when
   centered (either may be NULL otherwise) */
int gk_rmsprop_update_f32(float *params, float *square_avg, float *momentum_buffer,
                          float *grad_avg, const float *grads, const double *hyper,
                          int64_t step, int64_t P);
int gk_rmsprop_update_f64(double *params, double *square_avg, double *momentum_buffer,
                          double *grad_avg, const double *grads, const double *hyper,
                          int64_t step, int64_t P);
/* torch.optim.Adagrad; state_sum: the running sum of squared gradients */
int gk_adagrad_update_f32(float *params, float *state_sum, const float *grads,
                          const double *hyper, int64_t step, int64_t P);
int gk_adagrad_update_f64(double *params, double *state_sum, const double *grads,
                          const double *hyper, int64_t step, int64_t P);
double gk_sum_squares_f32(const float *x, int64_t n);   /* Σ x², in double, fixed order */
double gk_sum_squares_f64(const double *x, int64_t n);
void gk_scale_f32(float *x, double factor, int64_t n);
void gk_scale_f64(double *x, double factor, int64_t n);

/* ---- fused drivers over a plan ----
   A gk_model is filled once per (plan, buffers, capacity) by the wrapper and checked by
   gk_model_check_*; pointers are to the dtype of the _f32/_f64 function that uses it. */
typedef struct gk_model {
    int64_t n_layers;
    const int64_t *ops;        /* (n_layers, GK_OPS_COLS) */
    const double *fargs;       /* (n_layers, GK_FARGS_COLS) */
    const int64_t *out_off;    /* (n_layers,) element offsets into acts and dacts */
    const int64_t *cache_off;  /* (n_layers,) element offsets into cache */
    int64_t loss;
    int64_t capacity;          /* rows the workspace holds */
    void *params; void *grads; void *state;
    void *acts; void *dacts; void *cache;
    int64_t n_params, n_state, n_acts, n_cache;   /* element counts of those arrays */
    void *xbuf; void *ybuf; int64_t *lbuf;          /* gathered minibatch (train_epoch) */
    void *work; int64_t work_size;                  /* GEMM scratch */
    double delta;              /* the huber loss's delta (> 0) */
    void *wbuf;                /* gathered sample weights (capacity, train_epoch) */
} gk_model;

typedef struct gk_optim {
    int64_t kind;              /* an optimizer code: GK_SGD, GK_ADAM, GK_RMSPROP, GK_ADAGRAD */
    const double *hyper;       /* (GK_HYPER_COLS) */
    int64_t *step;             /* (1,) incremented by each accepted step */
    /* n_params each, as contract.OPT_STATE lays them out: SGD momentum; Adam m, v;
       RMSprop square_avg, momentum_buffer, grad_avg; Adagrad sum. NULL when unused. */
    void *buf1; void *buf2; void *buf3;
} gk_optim;

/* checks every offset of the plan against the buffer sizes; GK_OK or GK_ERR_PLAN */
int gk_model_check_f32(const gk_model *m);
int gk_model_check_f64(const gk_model *m);
/* GEMM scratch (elements) the drivers need for this plan and capacity */
int64_t gk_model_work_f32(const gk_model *m);
int64_t gk_model_work_f64(const gk_model *m);

/* x (rows, n_in) -> the last layer's output in acts; training: batch statistics, dropout */
int gk_forward_f32(const gk_model *m, const float *x, int64_t rows, int64_t training,
                   uint64_t seed);
int gk_forward_f64(const gk_model *m, const double *x, int64_t rows, int64_t training,
                   uint64_t seed);
/* training forward, loss, backward: fills grads; target floats (rows, n_out) or labels;
   weight (rows,) sample weights or NULL */
int gk_gradients_f32(const gk_model *m, double *loss, const float *x, const float *target,
                     const int64_t *labels, const float *weight, int64_t rows, uint64_t seed);
int gk_gradients_f64(const gk_model *m, double *loss, const double *x, const double *target,
                     const int64_t *labels, const double *weight, int64_t rows,
                     uint64_t seed);
/* one step; loss and gnorm (before clipping) out; a non-finite one rejects the step;
   weights summing to 0 make it a no-op (no update, no step counted) */
int gk_train_step_f32(const gk_model *m, const gk_optim *o, double *loss, double *gnorm,
                      const float *x, const float *target, const int64_t *labels,
                      const float *weight, int64_t rows, uint64_t seed, double clip_norm);
int gk_train_step_f64(const gk_model *m, const gk_optim *o, double *loss, double *gnorm,
                      const double *x, const double *target, const int64_t *labels,
                      const double *weight, int64_t rows, uint64_t seed, double clip_norm);
/* minibatches X[perm[k*bs:(k+1)*bs]]; X (n_rows, n_in), target (n_rows, n_out) or labels
   (n_rows,); weights (n_rows,) or NULL; seeds, losses, gnorms (n_batches,); lrs
   (n_batches,) the learning rate of each step in place of hyper's, or NULL (o->hyper is
   never written). Returns accepted steps, or GK_ERR_*. */
int64_t gk_train_epoch_f32(const gk_model *m, const gk_optim *o, double *losses,
                           double *gnorms, const float *X, const float *target,
                           const int64_t *labels, const float *weights, int64_t n_rows,
                           const int64_t *perm, int64_t n_perm, int64_t batch_size,
                           const uint64_t *seeds, const double *lrs, double clip_norm);
int64_t gk_train_epoch_f64(const gk_model *m, const gk_optim *o, double *losses,
                           double *gnorms, const double *X, const double *target,
                           const int64_t *labels, const double *weights, int64_t n_rows,
                           const int64_t *perm, int64_t n_perm, int64_t batch_size,
                           const uint64_t *seeds, const double *lrs, double clip_norm);

/* ---- the machine's ceiling: independent FMA chains in the ISA in use, iters iterations on
   each of `threads` threads; returns the floating-point operations done (2 per lane) ---- */
double gk_fma_loop_f32(int64_t iters, int threads);
double gk_fma_loop_f64(int64_t iters, int threads);

/* ---- test only: in the sanitizer build, mallocs n floats and writes one past the end (the
   planted bug `make sanitize` must catch); elsewhere does nothing and returns -1 ---- */
int gk_test_oob_write(int64_t n);
int gk_sanitized(void);            /* 1 in the sanitizer build */
