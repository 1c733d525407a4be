"""The reference backend: every kernel of the contract, written plainly in NumPy.

This file is the specification the compiled backends are checked against. Each kernel
writes into the arrays it is given (`out=` wherever NumPy allows) and allocates only
the temporaries NumPy needs.
"""

from __future__ import annotations

import math

import numpy as np

from ..contract import GOLDEN, LEAKY_SLOPE, MASK64, Act, Loss
from .base import Backend, unpack_adagrad, unpack_adam, unpack_rmsprop, unpack_sgd

try:  # scipy's erf is vectorized; math.erf is the same libm function, one element at a time
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover - scipy comes with scikit-learn
    _erf = np.vectorize(math.erf, otypes=[np.float64])

SQRT_HALF = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def erf(x: np.ndarray) -> np.ndarray:
    return _erf(x).astype(x.dtype, copy=False)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def dropout_uniform(seed: int, count: int) -> np.ndarray:
    """Uniform [0, 1) float64 of elements 0..count-1 for this seed (see dropout_forward)."""
    e = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = np.uint64(seed & MASK64) + e * np.uint64(GOLDEN)
        h = splitmix64(x)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)



def _sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) without overflow: exp of a non-positive number only (x's dtype)."""
    e = np.exp(-np.abs(x))
    return np.divide(np.where(x >= 0, 1.0, e), 1.0 + e).astype(x.dtype, copy=False)

class NumpyBackend(Backend):
    """Plain NumPy kernels; the Python plan driver of the base class. The arguments
    arrive checked (base.Backend): C-contiguous, of one dtype, of matching shapes."""

    name = "numpy"

    # out (B, OC) = inp (B, C) @ weight (C, OC) + bias (OC)
    def _matmul_forward(self, out, inp, weight, bias):
        np.matmul(inp, weight, out=out)
        out += bias

    # dinp (B, C) = dout (B, OC) @ weight.T ; dweight (C, OC) = inp.T @ dout ; dbias = Σ_rows dout
    def _matmul_backward(self, dinp, dweight, dbias, dout, inp, weight):
        if dinp is not None:
            np.matmul(dout, weight.T, out=dinp)
        np.matmul(inp.T, dout, out=dweight)
        np.sum(dout, axis=0, out=dbias)

    # out (B, N) = act(inp)
    def _activation_forward(self, kind, out, inp):
        if kind == Act.IDENTITY:
            out[...] = inp
        elif kind == Act.RELU:
            np.maximum(inp, 0, out=out)
        elif kind == Act.LEAKY_RELU:
            np.multiply(inp, np.where(inp > 0, 1.0, LEAKY_SLOPE).astype(inp.dtype), out=out)
        elif kind == Act.SIGMOID:
            out[...] = _sigmoid(inp)
        elif kind == Act.TANH:
            np.tanh(inp, out=out)
        elif kind == Act.GELU:  # erf form: x/2 (1 + erf(x/√2))
            np.multiply(0.5 * inp, 1.0 + erf(inp * SQRT_HALF), out=out)
        elif kind == Act.SILU:  # x σ(x)
            np.multiply(inp, _sigmoid(inp), out=out)
        else:
            raise ValueError(f"unknown activation code {kind}")

    # dinp (B, N) = dout * act'(inp); out = act(inp)
    def _activation_backward(self, kind, dinp, dout, inp, out):
        if kind == Act.IDENTITY:
            dinp[...] = dout
        elif kind == Act.RELU:
            np.multiply(dout, inp > 0, out=dinp)
        elif kind == Act.LEAKY_RELU:
            np.multiply(dout, np.where(inp > 0, 1.0, LEAKY_SLOPE).astype(inp.dtype), out=dinp)
        elif kind == Act.SIGMOID:  # σ' = σ (1 - σ)
            np.multiply(dout, out * (1 - out), out=dinp)
        elif kind == Act.TANH:  # tanh' = 1 - tanh²
            np.multiply(dout, 1 - out * out, out=dinp)
        elif kind == Act.GELU:  # gelu' = Φ(x) + x φ(x)
            cdf = 0.5 * (1.0 + erf(inp * SQRT_HALF))
            pdf = np.exp(-0.5 * inp * inp) * INV_SQRT_2PI
            np.multiply(dout, cdf + inp * pdf, out=dinp)
        elif kind == Act.SILU:  # silu' = σ(x) (1 + x (1 - σ(x)))
            s = _sigmoid(inp)
            np.multiply(dout, s * (1 + inp * (1 - s)), out=dinp)
        else:
            raise ValueError(f"unknown activation code {kind}")

    # pred, dpred (B, K); target (B, K) or labels (B,); weight (B,) or None
    def _loss_forward_backward(self, kind, dpred, pred, target, weight, delta):
        if weight is not None:
            return self._weighted_loss(kind, dpred, pred, target, weight, delta)
        if kind == Loss.MSE:  # mean over all elements
            np.subtract(pred, target, out=dpred)
            loss = float(np.mean(np.square(dpred, dtype=np.float64)))
            dpred *= pred.dtype.type(2.0 / pred.size)
            return loss
        if kind == Loss.CROSS_ENTROPY:  # softmax + NLL of integer labels, mean over rows
            rows = pred.shape[0]
            shifted = pred - pred.max(axis=1, keepdims=True)
            np.exp(shifted, out=dpred)
            sums = dpred.sum(axis=1, keepdims=True)
            picked = shifted[np.arange(rows), target]
            loss = float(np.mean(np.log(sums[:, 0].astype(np.float64)) - picked))
            dpred /= sums  # softmax
            dpred[np.arange(rows), target] -= 1
            dpred *= pred.dtype.type(1.0 / rows)
            return loss
        if kind == Loss.BINARY_CROSS_ENTROPY:  # from logits z: max(z,0) - z y + log(1 + e^-|z|)
            z = pred
            per = np.maximum(z, 0) - z * target + np.log1p(np.exp(-np.abs(z)))
            loss = float(np.mean(per, dtype=np.float64))
            self._activation_forward(Act.SIGMOID, dpred, z)
            dpred -= target
            dpred *= pred.dtype.type(1.0 / pred.size)
            return loss
        if kind in (Loss.L1, Loss.HUBER):  # mean over all elements
            per = self._robust(kind, dpred, pred, target, delta)
            loss = float(np.mean(per))
            dpred *= pred.dtype.type(1.0 / pred.size)
            return loss
        raise ValueError(f"unknown loss code {kind}")

    @staticmethod
    def _robust(kind, dpred, pred, target, delta):
        """l1 / huber elementwise: returns the float64 losses; dpred = d l / d pred.
        l1: |d|, gradient sign(d) (0 at 0, as torch; NaN stays NaN). huber (torch's
        HuberLoss): ½d² where |d| < delta, else delta·(|d| − ½delta); gradient d clipped
        to [−delta, delta]."""
        np.subtract(pred, target, out=dpred)
        d = dpred.astype(np.float64)
        a = np.abs(d)
        if kind == Loss.L1:
            np.sign(dpred, out=dpred)
            return a
        with np.errstate(invalid="ignore"):  # NaN compares false: it takes the linear branch
            per = np.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta))
        dt = pred.dtype.type
        np.clip(dpred, dt(-delta), dt(delta), out=dpred)
        return per

    def _weighted_loss(self, kind, dpred, pred, target, weight, delta):
        """Σ w_i l_i / Σ w_i over the rows, l_i the row's loss (its mean over K elements,
        or its NLL); dpred = w_i/Σw · d l_i / d pred. Weights summing to 0: loss 0,
        dpred 0 (nothing to learn from this batch)."""
        rows, k = pred.shape
        wsum = float(np.sum(weight, dtype=np.float64))
        if not wsum > 0:
            dpred[...] = 0
            return 0.0
        w64 = weight.astype(np.float64)
        if kind == Loss.CROSS_ENTROPY:
            shifted = pred - pred.max(axis=1, keepdims=True)
            np.exp(shifted, out=dpred)
            sums = dpred.sum(axis=1, keepdims=True)
            picked = shifted[np.arange(rows), target]
            per_row = np.log(sums[:, 0].astype(np.float64)) - picked
            dpred /= sums  # softmax
            dpred[np.arange(rows), target] -= 1
            dpred *= (w64 / wsum).astype(pred.dtype)[:, None]
            return float(np.dot(w64, per_row) / wsum)
        if kind == Loss.MSE:
            np.subtract(pred, target, out=dpred)
            per_row = np.mean(np.square(dpred, dtype=np.float64), axis=1)
            dpred *= (2.0 * w64 / (wsum * k)).astype(pred.dtype)[:, None]
        elif kind == Loss.BINARY_CROSS_ENTROPY:
            z = pred
            per = np.maximum(z, 0) - z * target + np.log1p(np.exp(-np.abs(z)))
            per_row = np.mean(per, axis=1, dtype=np.float64)
            self._activation_forward(Act.SIGMOID, dpred, z)
            dpred -= target
            dpred *= (w64 / (wsum * k)).astype(pred.dtype)[:, None]
        elif kind in (Loss.L1, Loss.HUBER):
            per_row = np.mean(self._robust(kind, dpred, pred, target, delta), axis=1)
            dpred *= (w64 / (wsum * k)).astype(pred.dtype)[:, None]
        else:
            raise ValueError(f"unknown loss code {kind}")
        return float(np.dot(w64, per_row) / wsum)

    # out, inp (B, N); gamma, beta, running stats, mean, var, rstd (N,)
    def _batchnorm_forward(self, out, mean, var, rstd, inp, gamma, beta,
                          running_mean, running_var, training, eps):
        if training:
            np.mean(inp, axis=0, out=mean)
            np.subtract(inp, mean, out=out)
            np.mean(np.square(out), axis=0, out=var)  # biased, as torch normalizes with it
            np.divide(1.0, np.sqrt(var + eps), out=rstd)
            out *= rstd
        else:
            np.subtract(inp, running_mean, out=out)
            out /= np.sqrt(running_var + eps)
        out *= gamma
        out += beta

    def _batchnorm_backward(self, dinp, dgamma, dbeta, dout, inp, mean, rstd, gamma):
        rows = inp.shape[0]
        xhat = (inp - mean) * rstd
        np.sum(dout, axis=0, out=dbeta)
        np.sum(dout * xhat, axis=0, out=dgamma)
        if dinp is not None:
            # dx = rstd/B · (B·dxhat − Σ dxhat − xhat · Σ dxhat·xhat), dxhat = dout·gamma
            dxhat = dout * gamma
            np.multiply(dxhat, rows, out=dinp)
            dinp -= dxhat.sum(axis=0)
            dinp -= xhat * (dxhat * xhat).sum(axis=0)
            dinp *= rstd / rows

    def _batchnorm_update_running(self, running_mean, running_var, mean, var, rows, momentum):
        unbiased = var * (rows / (rows - 1)) if rows > 1 else var
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * unbiased

    def _dropout_forward(self, out, mask, inp, p, seed):
        u = dropout_uniform(seed, mask.size).reshape(mask.shape)
        scale = mask.dtype.type(1.0 / (1.0 - p))
        np.multiply(u >= p, scale, out=mask)
        np.multiply(inp, mask, out=out)

    def _dropout_backward(self, dinp, dout, mask):
        np.multiply(dout, mask, out=dinp)

    def _sgd_update(self, params, grads, buf, hyper, step):  # buf None: no momentum
        lr, momentum, dampening, nesterov, wd = unpack_sgd(hyper)
        dt = params.dtype.type
        g = grads + dt(wd) * params if wd else grads
        if momentum:
            if step == 1:
                buf[...] = g
            else:
                buf *= dt(momentum)
                buf += dt(1 - dampening) * g
            g = g + dt(momentum) * buf if nesterov else buf
        params -= dt(lr) * g

    def _adam_update(self, params, grads, m, v, hyper, step):
        lr, beta1, beta2, eps, wd, decoupled = unpack_adam(hyper)
        dt = params.dtype.type
        g = grads
        if wd:
            if decoupled:
                params *= dt(1 - lr * wd)
            else:
                g = grads + dt(wd) * params
        m *= dt(beta1)
        m += dt(1 - beta1) * g
        v *= dt(beta2)
        v += dt(1 - beta2) * (g * g)
        bc1 = 1 - beta1**step
        bc2 = 1 - beta2**step
        denom = np.sqrt(v) / dt(math.sqrt(bc2))
        denom += dt(eps)
        params -= dt(lr / bc1) * (m / denom)

    def _rmsprop_update(self, params, grads, square_avg, momentum_buffer, grad_avg, hyper,
                        step):
        # torch's order: g (+ wd·p); v = alpha·v + (1 - alpha)·g²; centered: grad_avg
        # lerps toward g and v - grad_avg² is the variance; avg = sqrt(·) + eps
        lr, alpha, eps, wd, momentum, centered = unpack_rmsprop(hyper)
        dt = params.dtype.type
        g = grads + dt(wd) * params if wd else grads
        square_avg *= dt(alpha)
        square_avg += dt(1 - alpha) * (g * g)
        if centered:
            grad_avg += dt(1 - alpha) * (g - grad_avg)
            avg = np.sqrt(square_avg - grad_avg * grad_avg)
        else:
            avg = np.sqrt(square_avg)
        avg += dt(eps)
        if momentum > 0:
            momentum_buffer *= dt(momentum)
            momentum_buffer += g / avg
            params -= dt(lr) * momentum_buffer
        else:
            params -= dt(lr) * (g / avg)

    def _adagrad_update(self, params, grads, state_sum, hyper, step):
        # clr = lr / (1 + (step - 1)·lr_decay); sum += g²; p -= clr·g / (sqrt(sum) + eps)
        lr, lr_decay, wd, eps = unpack_adagrad(hyper)
        dt = params.dtype.type
        g = grads + dt(wd) * params if wd else grads
        clr = lr / (1 + (step - 1) * lr_decay)
        state_sum += g * g
        std = np.sqrt(state_sum)
        std += dt(eps)
        params -= dt(clr) * (g / std)


    def _sum_squares(self, x):
        x64 = x.astype(np.float64, copy=False)
        return float(np.dot(x64, x64))

    def _scale(self, x, factor):
        x *= x.dtype.type(factor)


BACKEND = NumpyBackend
