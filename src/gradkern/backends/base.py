"""The kernel contract every backend implements, and the plan driver that composes it.

Kernels (DESIGN.md §3) take outputs first, then inputs, then options. Arrays are
C-contiguous, of the plan's dtype (float32 or float64), preallocated by the caller;
a kernel never allocates its outputs. Gradients are named d<name>.

The driver methods (`forward`, `gradients`, `train_step`, `train_epoch`) are written
here once, in Python, on top of the kernels. The NumPy backend uses them as they are;
compiled backends override them with one call per step or per epoch, and must give
the same results.

Running statistics of batch normalization are committed after a step has been accepted
(finite loss and gradient norm), together with the optimizer update, so that a rejected
step leaves every buffer of the model as it was. `gradients` changes no model state.
"""

from __future__ import annotations

import math

import numpy as np

from ..optim import (
    ADAM_KIND,
    H_BETA1,
    H_BETA2,
    H_DAMP,
    H_DECOUPLED,
    H_EPS,
    H_LR,
    H_MOM,
    H_NESTEROV,
    H_WD,
    SGD_KIND,
    Optimizer,
)
from ..plan import (
    ACTIVATION,
    BATCHNORM,
    DENSE,
    DROPOUT,
    F_EPS,
    F_MOM,
    F_P,
    K_ACT,
    K_PA,
    K_PB,
    K_SA,
    K_SB,
    Buffers,
    Plan,
)

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15  # splitmix64 increment
LAYER_MIX = 0xD1B54A32D192ED03


def require_elements(what: str, a) -> None:
    """A mean over nothing is refused, the same way on every backend."""
    if a.size == 0:
        raise ValueError(f"{what} of an empty batch (shape {a.shape}) is undefined")


def layer_seed(step_seed: int, layer: int) -> int:
    """The dropout seed of layer `layer` in the step seeded by `step_seed`."""
    return (step_seed + (layer + 1) * LAYER_MIX) & MASK64


class Backend:
    """Base class of every backend: the kernel contract plus a Python plan driver."""

    name = "base"

    # ------------------------------------------------------------------ kernels
    def matmul_forward(self, out, inp, weight, bias) -> None:
        """out (B, OC) = inp (B, C) @ weight (C, OC) + bias (OC,)."""
        raise NotImplementedError

    def matmul_backward(self, dinp, dweight, dbias, dout, inp, weight) -> None:
        """dinp (B, C) = dout @ weight.T (skipped when dinp is None);
        dweight (C, OC) = inp.T @ dout; dbias (OC,) = dout.sum(0). All overwritten."""
        raise NotImplementedError

    def activation_forward(self, kind: int, out, inp) -> None:
        """out (B, N) = act(inp); kind is an index into plan.ACTIVATIONS."""
        raise NotImplementedError

    def activation_backward(self, kind: int, dinp, dout, inp, out) -> None:
        """dinp (B, N) = dout * act'(inp); `out` is act(inp), for sigmoid and tanh."""
        raise NotImplementedError

    def loss_forward_backward(self, kind: int, dpred, pred, target) -> float:
        """Mean loss of pred (B, K) against target; dpred (B, K) = d loss / d pred.
        target: (B, K) floats for mse and binary_cross_entropy, (B,) int64 labels
        in [0, K) for cross_entropy (checked by the caller)."""
        raise NotImplementedError

    def batchnorm_forward(self, out, mean, var, rstd, inp, gamma, beta,
                          running_mean, running_var, training: bool, eps: float) -> None:
        """out (B, N) = gamma * (inp - mu) * rstd + beta.
        training: mu, biased var and rstd = 1/sqrt(var + eps) of this batch, written to
        mean, var, rstd (N,). inference: from running_mean and running_var; mean, var,
        rstd untouched."""
        raise NotImplementedError

    def batchnorm_backward(self, dinp, dgamma, dbeta, dout, inp, mean, rstd, gamma) -> None:
        """Gradients of training-mode batchnorm; dinp skipped when None."""
        raise NotImplementedError

    def batchnorm_update_running(self, running_mean, running_var, mean, var,
                                 rows: int, momentum: float) -> None:
        """running = (1 - momentum) * running + momentum * batch, the variance unbiased."""
        raise NotImplementedError

    def dropout_forward(self, out, mask, inp, p: float, seed: int) -> None:
        """Inverted dropout: mask (B, N) = 0 or 1/(1-p) from the counter hash
        splitmix64(seed + (e+1)·GOLDEN) of element e (row-major), kept when its top
        53 bits as a fraction are >= p; out = inp * mask."""
        raise NotImplementedError

    def dropout_backward(self, dinp, dout, mask) -> None:
        """dinp = dout * mask."""
        raise NotImplementedError

    def sgd_update(self, params, grads, buf, hyper, step: int) -> None:
        """torch.optim.SGD on flat buffers; step counts from 1 (1: buf starts as grad)."""
        raise NotImplementedError

    def adam_update(self, params, grads, m, v, hyper, step: int) -> None:
        """torch.optim.Adam / AdamW (hyper[H_DECOUPLED]) on flat buffers; step from 1."""
        raise NotImplementedError

    def sum_squares(self, x) -> float:
        """Σ x², accumulated in float64 (the gradient norm is its square root)."""
        x64 = x.astype(np.float64, copy=False)
        return float(np.dot(x64, x64))

    def scale(self, x, factor: float) -> None:
        """x *= factor, in place."""
        x *= x.dtype.type(factor)

    # ------------------------------------------------------------------ drivers
    def forward(self, plan: Plan, bufs: Buffers, x: np.ndarray, training: bool = False,
                seed: int = 0) -> np.ndarray:
        """Run every layer on x (B, C0); returns the view of the last layer's output."""
        rows = x.shape[0]
        if rows > bufs.capacity:
            raise ValueError(f"batch of {rows} rows exceeds the workspace ({bufs.capacity} rows)")
        inp = x
        for i, L in enumerate(plan.layers):
            out = bufs.out(i, rows)
            r, f = plan.ops[i], plan.fargs[i]
            if L.kind == DENSE:
                W = bufs.params[r[K_PA] : r[K_PA] + L.n_in * L.n_out].reshape(L.n_in, L.n_out)
                b = bufs.params[r[K_PB] : r[K_PB] + L.n_out]
                self.matmul_forward(out, inp, W, b)
            elif L.kind == ACTIVATION:
                self.activation_forward(int(r[K_ACT]), out, inp)
            elif L.kind == BATCHNORM:
                n = L.n_out
                c = bufs.cache_block(i, 3 * n)
                self.batchnorm_forward(
                    out, c[:n], c[n : 2 * n], c[2 * n :], inp,
                    bufs.params[r[K_PA] : r[K_PA] + n], bufs.params[r[K_PB] : r[K_PB] + n],
                    bufs.state[r[K_SA] : r[K_SA] + n], bufs.state[r[K_SB] : r[K_SB] + n],
                    training, float(f[F_EPS]),
                )
            elif L.kind == DROPOUT:
                if training and f[F_P] > 0:
                    mask = bufs.cache_block(i, rows * L.n_out).reshape(rows, L.n_out)
                    self.dropout_forward(out, mask, inp, float(f[F_P]), layer_seed(seed, i))
                else:
                    out[...] = inp
            inp = out
        return inp

    def backward(self, plan: Plan, bufs: Buffers, x: np.ndarray) -> None:
        """Backpropagate the gradient already in dout(last) down to every parameter."""
        rows = x.shape[0]
        for i in range(len(plan.layers) - 1, -1, -1):
            L = plan.layers[i]
            r, f = plan.ops[i], plan.fargs[i]
            dout = bufs.dout(i, rows)
            inp = x if i == 0 else bufs.out(i - 1, rows)
            dinp = None if i == 0 else bufs.dout(i - 1, rows)
            if L.kind == DENSE:
                k = L.n_in * L.n_out
                W = bufs.params[r[K_PA] : r[K_PA] + k].reshape(L.n_in, L.n_out)
                dW = bufs.grads[r[K_PA] : r[K_PA] + k].reshape(L.n_in, L.n_out)
                db = bufs.grads[r[K_PB] : r[K_PB] + L.n_out]
                self.matmul_backward(dinp, dW, db, dout, inp, W)
            elif dinp is None and L.kind != BATCHNORM:
                continue  # nothing below to receive the gradient
            elif L.kind == ACTIVATION:
                self.activation_backward(int(r[K_ACT]), dinp, dout, inp, bufs.out(i, rows))
            elif L.kind == BATCHNORM:
                n = L.n_out
                c = bufs.cache_block(i, 3 * n)
                self.batchnorm_backward(
                    dinp, bufs.grads[r[K_PA] : r[K_PA] + n], bufs.grads[r[K_PB] : r[K_PB] + n],
                    dout, inp, c[:n], c[2 * n :], bufs.params[r[K_PA] : r[K_PA] + n],
                )
            elif L.kind == DROPOUT:
                if f[F_P] > 0:
                    mask = bufs.cache_block(i, rows * L.n_out).reshape(rows, L.n_out)
                    self.dropout_backward(dinp, dout, mask)
                else:
                    dinp[...] = dout

    def gradients(self, plan: Plan, bufs: Buffers, x: np.ndarray, y: np.ndarray,
                  seed: int = 0) -> float:
        """Training-mode forward, loss and backward: fills bufs.grads, returns the loss."""
        rows = x.shape[0]
        pred = self.forward(plan, bufs, x, training=True, seed=seed)
        loss = self.loss_forward_backward(plan.loss_code, bufs.dout(len(plan.layers) - 1, rows),
                                          pred, y)
        self.backward(plan, bufs, x)
        return loss

    def commit(self, plan: Plan, bufs: Buffers, opt: Optimizer, rows: int) -> None:
        """Apply an accepted step: running statistics, then the optimizer update."""
        for i, L in enumerate(plan.layers):
            if L.kind == BATCHNORM:
                r, n = plan.ops[i], L.n_out
                c = bufs.cache_block(i, 3 * n)
                self.batchnorm_update_running(
                    bufs.state[r[K_SA] : r[K_SA] + n], bufs.state[r[K_SB] : r[K_SB] + n],
                    c[:n], c[n : 2 * n], rows, float(plan.fargs[i, F_MOM]),
                )
        opt.step[0] += 1
        step = int(opt.step[0])
        if opt.kind == SGD_KIND:
            self.sgd_update(bufs.params, bufs.grads, opt.buf1, opt.hyper, step)
        elif opt.kind == ADAM_KIND:
            self.adam_update(bufs.params, bufs.grads, opt.buf1, opt.buf2, opt.hyper, step)
        else:
            raise ValueError(f"unknown optimizer kind {opt.kind}")

    def train_step(self, plan: Plan, bufs: Buffers, x: np.ndarray, y: np.ndarray,
                   opt: Optimizer, seed: int = 0, clip_norm: float = 0.0) -> tuple[float, float]:
        """One step. Returns (loss, gradient norm before clipping). When either is not
        finite the step is rejected: nothing of the model or optimizer changes."""
        loss = self.gradients(plan, bufs, x, y, seed)
        gnorm = math.sqrt(self.sum_squares(bufs.grads))
        if not (math.isfinite(loss) and math.isfinite(gnorm)):
            return loss, gnorm
        if clip_norm > 0 and gnorm > clip_norm:
            self.scale(bufs.grads, clip_norm / (gnorm + 1e-6))  # torch.nn.utils.clip_grad_norm_
        self.commit(plan, bufs, opt, x.shape[0])
        return loss, gnorm

    def train_epoch(self, plan: Plan, bufs: Buffers, X: np.ndarray, Y: np.ndarray,
                    perm: np.ndarray, batch_size: int, opt: Optimizer, seeds: np.ndarray,
                    clip_norm: float, losses: np.ndarray, gnorms: np.ndarray) -> int:
        """Minibatches X[perm[k*bs:(k+1)*bs]] in order, one train_step each.
        seeds (n_batches,) uint64 dropout seeds; losses and gnorms (n_batches,) float64
        receive each step's figures. Returns the number of accepted steps: fewer than
        n_batches means step `returned` was rejected and the epoch stopped there."""
        n = perm.shape[0]
        n_batches = (n + batch_size - 1) // batch_size
        for k in range(n_batches):
            idx = perm[k * batch_size : (k + 1) * batch_size]
            loss, gnorm = self.train_step(plan, bufs, X[idx], Y[idx], opt, int(seeds[k]),
                                          clip_norm)
            losses[k], gnorms[k] = loss, gnorm
            if not (math.isfinite(loss) and math.isfinite(gnorm)):
                return k
        return n_batches


def unpack_sgd(hyper) -> tuple[float, float, float, bool, float]:
    return (float(hyper[H_LR]), float(hyper[H_MOM]), float(hyper[H_DAMP]),
            bool(hyper[H_NESTEROV]), float(hyper[H_WD]))


def unpack_adam(hyper) -> tuple[float, float, float, float, float, bool]:
    return (float(hyper[H_LR]), float(hyper[H_BETA1]), float(hyper[H_BETA2]),
            float(hyper[H_EPS]), float(hyper[H_WD]), bool(hyper[H_DECOUPLED]))
