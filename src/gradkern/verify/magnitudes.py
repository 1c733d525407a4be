"""The running-error scale S of a forward/backward pass and of optimizer steps: the S of
the k·u·S bound (tolerance.py) for the PyTorch referee, where one bound covers a whole
model and several steps.
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_X
from ..contract import LEAKY_SLOPE, Act, Layer, Loss, Opt
from .tolerance import K_TORCH

# the public names of a layer's tensors (as Model.named_parameters): W/gamma -> weight
_TORCH_NAME = {"W": "weight", "b": "bias", "gamma": "weight", "beta": "bias"}


def named_views(plan, flat) -> dict[str, np.ndarray]:
    """Views of a params-shaped flat array (params, grads, optimizer state) by parameter
    name: '0.weight', '0.bias', '1.weight' (a batchnorm's gamma), ..."""
    return {f"{i}.{_TORCH_NAME[k]}": v for i in range(len(plan.layers))
            for k, v in plan.params_of(i, flat).items()}


def derivatives(act: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(f'(x), f''(x)) of an activation, float64 (f'' = 0 for the piecewise-linear)."""
    if act == Act.IDENTITY:
        return np.ones_like(x), np.zeros_like(x)
    if act == Act.RELU:
        return (x > 0).astype(np.float64), np.zeros_like(x)
    if act == Act.LEAKY_RELU:
        return np.where(x > 0, 1.0, LEAKY_SLOPE), np.zeros_like(x)
    if act == Act.SIGMOID:
        s = 0.5 * (1 + np.tanh(0.5 * x))
        return s * (1 - s), s * (1 - s) * (1 - 2 * s)
    if act == Act.TANH:
        t = np.tanh(x)
        return 1 - t * t, -2 * t * (1 - t * t)
    if act == Act.GELU:  # Φ(x) + x φ(x); second derivative φ(x)(2 − x²)
        from ..backends.numpy_backend import INV_SQRT_2PI, SQRT_HALF, erf

        pdf = np.exp(-0.5 * x * x) * INV_SQRT_2PI
        return 0.5 * (1 + erf(x * SQRT_HALF)) + x * pdf, pdf * (2 - x * x)
    if act == Act.SILU:  # σ (1 + x (1 − σ)); second derivative σ' (2 + x (1 − 2σ))
        s = 0.5 * (1 + np.tanh(0.5 * x))
        ds = s * (1 - s)
        return s * (1 + x * (1 - s)), ds * (2 + x * (1 - 2 * s))
    raise ValueError(f"Magnitudes has no derivative for activation code {int(act)}")


class Magnitudes:
    """The running-error scale S of a forward/backward pass, for the float32 bound.

    Every quantity q computed in floating point is wrong by at most k·u·S(q) for a small
    k, where S is what the same computation gives on magnitudes: |W|·S(x) + S(W)·|x| for a
    product, |f'(x)|·S(x) + |f(x)| for an activation, subtractions turned into additions,
    plus |q| itself for its own rounding. S of a parameter starts at 0 (both sides start
    from the same bits) and grows with every update (see `step`). The values come from a
    float64 twin of the model on the NumPy backend (the Python driver).

    One correlation is used: a Dense bias that feeds a BatchNorm shifts a whole column,
    which the normalization removes exactly, so its S does not enter the forward pass
    (only the running mean sees it). Under Adam that bias's gradient is rounding noise
    and it takes steps of ±lr in any implementation; S tracks that (S/|g| is huge), so
    the bound for it becomes of the order of lr.
    """

    def __init__(self, model64, u: float):
        self.m = model64
        self.u = u
        self.S = {k: np.zeros_like(v, dtype=np.float64)
                  for k, v in model64.named_parameters().items()}

    # -- one pass ----------------------------------------------------------------
    def pass_(self, X, y, seed: int, training: bool = True, param_errors: bool = True) -> dict:
        """Runs gradients (training) or forward (inference) on the twin; returns S of the
        loss ('loss'), the output ('out') and every gradient by parameter name.
        param_errors=False takes the parameters as exact (see `train_step`)."""
        m, u = self.m, self.u
        S = self.S if param_errors else {k: np.zeros_like(v) for k, v in self.S.items()}
        plan, bufs, be = m.plan, m.bufs, m.backend
        X = check_X(X, m.input_size, m.dtype)
        rows = X.shape[0]
        bufs.ensure_capacity(rows)
        P = m.named_parameters()
        if training:
            yc = m.check_data(X, y)[1]
            loss = be.gradients(plan, bufs, X, yc, seed)
        else:
            be.forward(plan, bufs, X, training=False)
        layers = plan.layers
        ins, Sins, extra = [], [], []
        x, Sx = X, np.abs(X)
        for i, L in enumerate(layers):
            out = bufs.out(i, rows)
            ins.append(x)
            Sins.append(Sx)
            if L.kind == Layer.DENSE:
                W, b = P[f"{i}.weight"], P[f"{i}.bias"]
                feeds_bn = i + 1 < len(layers) and layers[i + 1].kind == Layer.BATCHNORM
                Sb = 0.0 if feeds_bn else S[f"{i}.bias"]
                So = Sx @ np.abs(W) + np.abs(x) @ S[f"{i}.weight"] + np.abs(b) + Sb + np.abs(out)
                extra.append(None)
            elif L.kind == Layer.ACTIVATION:
                d1, d2 = derivatives(L.activation, x)
                So = np.abs(d1) * Sx + np.abs(out)
                extra.append((d1, d2))
            elif L.kind == Layer.BATCHNORM:
                g, bt = P[f"{i}.weight"], P[f"{i}.bias"]
                if training:
                    c = bufs.cache_of(i, rows)
                    mean, var, rstd = c["mean"].copy(), c["var"].copy(), c["rstd"].copy()
                    xc = x - mean
                    xhat = xc * rstd
                    mS = Sx.mean(axis=0)
                    Svar = 2 * (np.abs(xc) * (Sx + mS)).mean(axis=0) + var
                    Srstd = 0.5 * rstd * Svar / (var + L.eps) + rstd
                    Sxhat = rstd * (Sx + mS) + np.abs(xc) * Srstd + np.abs(xhat)
                    extra.append((xhat, rstd, Sxhat, Srstd, mS, Svar))
                else:
                    rm, rv = P[f"{i}.running_mean"], P[f"{i}.running_var"]
                    r = 1.0 / np.sqrt(rv + L.eps)
                    xhat = (x - rm) * r
                    Sxhat = (r * (Sx + np.abs(rm) + S[f"{i}.running_mean"])
                             + np.abs(xhat) * 0.5 * (S[f"{i}.running_var"] + rv) / (rv + L.eps)
                             + np.abs(xhat))
                    extra.append(None)
                So = np.abs(g) * Sxhat + np.abs(xhat) * S[f"{i}.weight"] + np.abs(bt) \
                    + S[f"{i}.bias"] + np.abs(out)
            else:  # dropout
                if training and L.p > 0:
                    mask = bufs.cache_of(i, rows)["mask"].copy()
                    So = mask * Sx
                    extra.append(mask)
                else:
                    So = Sx.copy()
                    extra.append(None)
            x, Sx = out.copy(), So
        result = {"out": Sx, "out_value": x,
                  "bn": {i: e for i, e in enumerate(extra) if layers[i].kind == Layer.BATCHNORM}}
        if not training:
            return result
        # ---- loss and its gradient
        pred, Sp = x, Sx
        last = len(layers) - 1
        if plan.loss_code == Loss.MSE:
            d = pred - yc
            result["loss"] = float(np.mean(2 * np.abs(d) * Sp + d * d))
            Sd = 2.0 / pred.size * (Sp + np.abs(pred) + np.abs(yc))
        elif plan.loss_code == Loss.CROSS_ENTROPY:
            z = pred - pred.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            onehot = np.zeros_like(p)
            onehot[np.arange(rows), yc] = 1.0
            rowS = Sp.max(axis=1, keepdims=True)
            lse = np.log(np.exp(z).sum(axis=1))
            result["loss"] = float(np.mean(2 * rowS[:, 0] + np.abs(lse)
                                           + np.abs(z[np.arange(rows), yc]) + np.abs(pred).max(1)))
            Sd = (p + onehot + 2 * p * rowS) / rows
        elif plan.loss_code in (Loss.L1, Loss.HUBER):  # |d|, huber: ½d² or delta·|d|
            d = np.abs(pred - yc)
            scale = Sp + np.abs(pred) + np.abs(yc)
            result["loss"] = float(np.mean(scale * (1.0 + np.minimum(d, plan.delta))))
            Sd = scale / pred.size
        else:
            s = 0.5 * (1 + np.tanh(0.5 * pred))
            per = np.maximum(pred, 0) + np.abs(pred * yc) + np.log1p(np.exp(-np.abs(pred)))
            result["loss"] = float(np.mean(Sp + per))
            Sd = (s + yc + s * (1 - s) * Sp) / pred.size
        # ---- backward
        dS = Sd
        for i in range(last, -1, -1):
            L = layers[i]
            dout = bufs.dout(i, rows)
            x, Sx = ins[i], Sins[i]
            dinp = None if i == 0 else bufs.dout(i - 1, rows)
            if L.kind == Layer.DENSE:
                W = P[f"{i}.weight"]
                result[f"{i}.weight"] = Sx.T @ np.abs(dout) + np.abs(x).T @ dS
                result[f"{i}.bias"] = dS.sum(axis=0)
                dS = dS @ np.abs(W).T + np.abs(dout) @ S[f"{i}.weight"].T
                if dinp is not None:
                    dS = dS + np.abs(dinp)
            elif L.kind == Layer.ACTIVATION:
                d1, d2 = extra[i]
                flip = 0.0
                if L.activation in (Act.RELU, Act.LEAKY_RELU):
                    # within k·u·S of the kink the slope may flip: an error of |dout|
                    near = np.abs(x) <= K_TORCH * u * Sx
                    flip = np.where(near, np.abs(dout) / (K_TORCH * u), 0.0)
                dS = np.abs(d1) * dS + np.abs(dout) * np.abs(d2) * Sx + flip
                if dinp is not None:
                    dS = dS + np.abs(dinp)
            elif L.kind == Layer.BATCHNORM:
                g = P[f"{i}.weight"]
                xhat, rstd, Sxhat, Srstd, _, _ = extra[i]
                dxhat = dout * g
                D = np.abs(g) * dS + S[f"{i}.weight"] * np.abs(dout) + np.abs(dxhat)
                result[f"{i}.weight"] = (dS * np.abs(xhat) + np.abs(dout) * Sxhat).sum(axis=0)
                result[f"{i}.bias"] = dS.sum(axis=0)
                ax = np.abs(xhat)
                inner = (D + D.mean(axis=0) + ax * (D * ax).mean(axis=0)
                         + Sxhat * np.abs(dxhat * xhat).mean(axis=0)
                         + ax * (np.abs(dxhat) * Sxhat).mean(axis=0))
                dS = rstd * inner
                if dinp is not None:
                    dS = dS + np.abs(dinp) * (1 + Srstd / rstd)
            else:
                mask = extra[i]
                if mask is not None:
                    dS = mask * dS
        result["loss_value"] = loss
        return result

    # -- an optimizer step -------------------------------------------------------
    def step(self, opt64, grads_S: dict, X_rows: int) -> None:
        """Advance S of every parameter and running statistic through one update that the
        twin has just applied (its state is in opt64 and the twin's buffers)."""
        m, S = self.m, self.S
        P = m.named_parameters()
        G = named_views(m.plan, m.bufs.grads)
        h = opt64.hparams()
        lr, wd = h["lr"], h["weight_decay"]
        st = self._opt_state.setdefault(id(opt64), {k: (np.zeros_like(v), np.zeros_like(v),
                                                        np.zeros_like(v))
                                                    for k, v in G.items()})
        step = int(opt64.step[0])
        for k in G:
            g, Sg, p = G[k], grads_S[k], P[k]
            Sp = S[k]
            Sm, Sv, Sa = st[k]
            if opt64.kind in (Opt.RMSPROP, Opt.ADAGRAD):
                Sm, Sv, Sa, Sp = self._scaled_step(opt64, h, k, g, Sg, Sp, Sm, Sv, Sa, step)
            elif opt64.kind == Opt.ADAM:
                b1, b2, eps = h["beta1"], h["beta2"], h["eps"]
                decoupled = bool(h["decoupled"])
                Sge = Sg + (wd * Sp if wd and not decoupled else 0.0)
                ge = g + (wd * self._p_before[k] if wd and not decoupled else 0.0)
                Sm = b1 * Sm + (1 - b1) * Sge + np.abs(self._m(opt64, k))
                Sv = b2 * Sv + (1 - b2) * 2 * np.abs(ge) * Sge + self._v(opt64, k)
                bc1, bc2 = 1 - b1**step, 1 - b2**step
                v = self._v(opt64, k)
                sv = np.sqrt(v)
                denom = sv / math.sqrt(bc2) + eps
                with np.errstate(divide="ignore", invalid="ignore"):
                    Sden = np.where(sv > 0, Sv / (2 * sv), np.sqrt(Sv * self.u) / self.u) \
                        / math.sqrt(bc2) + denom
                mm = np.abs(self._m(opt64, k))
                Supd = lr / bc1 * (Sm / denom + mm * Sden / denom**2) + lr / bc1 * mm / denom
                if wd and decoupled:
                    Sp = (1 - lr * wd) * Sp + np.abs(self._p_before[k])
                Sp = Sp + Supd + np.abs(p)
            else:
                mom, damp = h["momentum"], h["dampening"]
                nesterov = bool(h["nesterov"])
                Sge = Sg + wd * Sp + np.abs(g) + wd * np.abs(self._p_before[k])
                if mom:
                    buf = np.abs(self._m(opt64, k))
                    Sm = Sge.copy() if step == 1 else mom * Sm + (1 - damp) * Sge + buf
                    Sdir = Sge + mom * Sm if nesterov else Sm
                else:
                    Sdir = Sge
                Sp = Sp + lr * Sdir + np.abs(p)
            S[k] = Sp
            st[k] = (Sm, Sv, Sa)
        # running statistics (their update happened with the same step)
        for i, L in enumerate(m.plan.layers):
            if L.kind != Layer.BATCHNORM:
                continue
            mom = L.momentum
            _, _, _, _, mS, Svar = self._bn_extra[i]
            prev = m.plan.layers[i - 1] if i > 0 else None
            Sbias = S[f"{i - 1}.bias"] if prev is not None and prev.kind == Layer.DENSE else 0.0
            unb = X_rows / (X_rows - 1) if X_rows > 1 else 1.0
            S[f"{i}.running_mean"] = ((1 - mom) * S[f"{i}.running_mean"] + mom * (mS + Sbias)
                                      + np.abs(P[f"{i}.running_mean"]))
            S[f"{i}.running_var"] = ((1 - mom) * S[f"{i}.running_var"] + mom * unb * Svar
                                     + np.abs(P[f"{i}.running_var"]))

    def _sqrt_S(self, x, Sx):
        """S of sqrt(x) given S of x (x >= 0): Sx / (2 sqrt x), or sqrt(u Sx)/u at 0."""
        sx = np.sqrt(np.maximum(x, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            return sx, np.where(sx > 0, Sx / (2 * sx), np.sqrt(Sx * self.u) / self.u) + sx

    def _scaled_step(self, opt64, h, k, g, Sg, Sp, Sm, Sv, Sa, step):
        """RMSprop and Adagrad: p -= lr·g/(sqrt(v) + eps). S of the gradient with weight
        decay, of the average / sum of squares v (and of grad_avg when centered, of the
        momentum buffer), of the quotient and of the parameter. Returns (Sm, Sv, Sa, Sp):
        S of the momentum buffer, of v, of grad_avg, of p."""
        lr, wd, eps = h["lr"], h["weight_decay"], h["eps"]
        p, pb = self.m.named_parameters()[k], self._p_before[k]
        ge = g + (wd * pb if wd else 0.0)
        Sge = Sg + (wd * Sp + np.abs(ge) if wd else 0.0)
        v = self._m(opt64, k)  # square_avg or sum: buf1
        if opt64.kind == Opt.ADAGRAD:
            Sv = Sv + 2 * np.abs(ge) * Sge + v
            var, Svar = v, Sv
            lr = lr / (1 + (step - 1) * h["lr_decay"])
        else:
            a = h["alpha"]
            Sv = a * Sv + (1 - a) * 2 * np.abs(ge) * Sge + v
            var, Svar = v, Sv
            if h["centered"]:
                ga = self._views(opt64.buf3)[k]
                Sa = a * Sa + (1 - a) * Sge + np.abs(ga)
                var = v - ga * ga
                Svar = Sv + 2 * np.abs(ga) * Sa + ga * ga + np.abs(var)
        sv, Ssv = self._sqrt_S(var, Svar)
        denom = sv + eps
        Sden = Ssv + denom
        q = ge / denom
        Sq = Sge / denom + np.abs(ge) * Sden / denom**2 + np.abs(q)
        if opt64.kind == Opt.RMSPROP and h["momentum"] > 0:
            Sm = h["momentum"] * Sm + Sq + np.abs(self._v(opt64, k))  # buf2: momentum_buffer
            Supd = lr * Sm
        else:
            Supd = lr * Sq
        return Sm, Sv, Sa, Sp + Supd + np.abs(p)

    _opt_state: dict

    def _m(self, opt, k):
        return self._views(opt.buf1)[k]

    def _v(self, opt, k):
        return self._views(opt.buf2)[k]

    def _views(self, flat) -> dict:
        return named_views(self.m.plan, flat)

    def train_step(self, X, y, opt64) -> None:
        """One step of the twin with S carried along.

        The gradient's S is taken at exact parameters: feeding S of the parameters back
        into the next gradient compounds worst cases step after step (under Adam one
        near-zero gradient makes S of its parameter ~lr/u, which then swamps every later
        bound). Rounding differences of the parameters change later gradients only at
        second order over ten small steps; S of the parameters themselves still grows
        with every update."""
        self._opt_state = getattr(self, "_opt_state", {})
        X = check_X(X, self.m.input_size, self.m.dtype)
        res = self.pass_(X, y, seed=0, training=True, param_errors=False)
        self._bn_extra = res["bn"]  # S of this pass's batch statistics
        self._p_before = {k: v.copy() for k, v in self.m.named_parameters().items()}
        self.m.train_step(X, y, opt64)
        self.step(opt64, res, X.shape[0])
