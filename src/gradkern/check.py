"""`gradkern check`: every backend cross-checked, in both dtypes, on this machine.

Three families of checks (DESIGN.md §5), each one row of the printed matrix:

- fd/*      central finite differences of the loss against the analytic gradient of
            every parameter, float64 only (eps 1e-6; |err| <= 1e-5 + 1e-3·|numeric|).
- kernel/*  every kernel of the contract against the float64 NumPy reference on shapes
            with 1, odd sizes, primes and sizes around the C backend's register tile;
            |x − ref| <= k·u·S, S the natural error scale (|A|·|B| for a matmul).
- torch/*   the same model in torch.nn with the same weights: loss, every gradient,
            ten steps of SGD / Adam / AdamW, batch normalization in training and
            inference mode. float64 to 1e-7·S, float32 to 16·u·S, where S is the
            running-error magnitude of the computation (see `Magnitudes`).

Each cell (check × backend × dtype) reports its worst error as a ratio to its bound and
as an absolute error; a ratio above 1 fails the cell and the command exits 1.

    python -m gradkern.check [--quick] [--json PATH] [--backends c,numba] [--only torch]
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import math
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from . import backends as _backends
from .backends.numpy_backend import NumpyBackend
from .plan import ACTIVATION, ACTIVATIONS, BATCHNORM, DENSE, K_PA, K_PB, LOSSES

REF = NumpyBackend()  # the specification; never the registry's instance, which may be patched
DTYPES = ("float32", "float64")

# finite differences (DESIGN.md §5)
FD_EPS, FD_ATOL, FD_RTOL = 1e-6, 1e-5, 1e-3
KINK = 1e-3  # ReLU-family inputs are kept this far from 0
# PyTorch referee: float64 relative tolerance; float32 uses K_TORCH·u·S
TORCH_RTOL64 = 1e-7
K_TORCH = 16.0
TORCH_STEPS = 10


class NotApplicable(Exception):
    """This check does not apply to this dtype or backend; the message says why."""


class Skipped(Exception):
    """This check cannot run here (PyTorch missing); the message says why."""


# ============================================================================ results
@dataclass
class Worst:
    """The worst comparison of a cell: error / bound, the error, and where it was."""

    ratio: float = 0.0
    err: float = 0.0
    where: str = ""
    compared: int = 0

    def add(self, got, ref, bound, where: str) -> None:
        """Compare arrays elementwise: |got − ref| against bound (same shape)."""
        got = np.asarray(got, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), ref.shape)
        if got.shape != ref.shape:
            self._set(math.inf, math.inf, f"{where}: shape {got.shape} != {ref.shape}")
            return
        self.compared += ref.size
        if ref.size == 0:
            return
        err = np.abs(got - ref)
        err = np.where(np.isnan(err) & ~(np.isnan(got) & np.isnan(ref)), np.inf, err)
        err = np.where(np.isnan(got) & np.isnan(ref), 0.0, err)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(err == 0, 0.0, err / np.maximum(bound, np.finfo(np.float64).tiny))
        i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        if ratio[i] > self.ratio or self.where == "":
            idx = ",".join(map(str, i))
            self._set(float(ratio[i]), float(err[i]),
                      f"{where} [{idx}]: got {got[i]:.9g}, ref {ref[i]:.9g}, "
                      f"bound {bound[i]:.3g}")

    def add_scalar(self, got: float, ref: float, bound: float, where: str) -> None:
        self.add(np.array([got]), np.array([ref]), np.array([bound]), where)

    def _set(self, ratio: float, err: float, where: str) -> None:
        if ratio >= self.ratio:
            self.ratio, self.err, self.where = ratio, err, where


@dataclass
class Cell:
    check: str
    backend: str
    dtype: str
    status: str  # "pass", "FAIL", "ERROR", "n/a", "skipped"
    ratio: float | None = None
    abs_err: float | None = None
    where: str = ""
    compared: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status in ("FAIL", "ERROR")

    def short(self) -> str:
        if self.status in ("pass", "FAIL"):
            word = "ok" if self.status == "pass" else "FAIL"
            return f"{word} {self.ratio:.2g} ({self.abs_err:.1e})"
        return self.status


@dataclass
class Context:
    quick: bool
    tiles: dict = field(default_factory=dict)  # dtype -> (MR, NR, KC) of the C GEMM

    def rng(self, *key) -> np.random.Generator:
        """A generator seeded from the check's name: every run draws the same data."""
        return np.random.default_rng([sum(map(ord, str(k))) for k in key] or [0])


# ============================================================================ helpers
def _u(dtype) -> float:
    return float(np.finfo(np.dtype(dtype)).eps)


def _rand(rng, shape, dtype, scale=1.0):
    return np.ascontiguousarray((rng.standard_normal(shape) * scale).astype(dtype))


def _nan(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


def _f64(a):
    return np.asarray(a).astype(np.float64)


def c_tiles() -> dict:
    """(MR, NR, KC) of the C GEMM per dtype, or typical AVX-512 tiles when C is absent."""
    try:
        info = _backends.info("c")
        return {"float32": tuple(info["tile_f32"]), "float64": tuple(info["tile_f64"])}
    except Exception:
        return {"float32": (8, 32, 192), "float64": (8, 16, 192)}


def matmul_shapes(ctx: Context, dtype: str) -> list[tuple[int, int, int]]:
    """(B, C, OC): ones, odd sizes, primes, and one past / one short of each tile edge."""
    mr, nr, kc = ctx.tiles.get(dtype, (8, 16, 192))
    shapes = [(1, 1, 1), (1, 7, 3), (3, 1, 5), (5, 3, 1), (7, 13, 17),
              (mr - 1, kc + 1, nr + 1), (mr + 1, kc - 1, nr - 1), (mr, kc, nr),
              (2 * mr + 1, 2 * nr - 1, 3), (97, 101, 103)]
    if not ctx.quick:
        rng = ctx.rng("matmul shapes", dtype)
        shapes += [(2 * mr - 1, 2 * kc + 1, 2 * nr + 1), (257, kc + 1, nr - 1),
                   (1, kc + 1, 1), (129, 31, 257)]
        shapes += [tuple(int(v) for v in rng.integers(1, 200, 3)) for _ in range(6)]
    return shapes


def elementwise_shapes(ctx: Context, dtype: str) -> list[tuple[int, int]]:
    """(B, N): ones, odd sizes, and widths around the vector length of the C kernels."""
    _, nr, _ = ctx.tiles.get(dtype, (8, 16, 192))
    shapes = [(1, 1), (1, 7), (7, 1), (13, 17), (3, nr - 1), (5, nr + 1), (33, 2 * nr + 1)]
    if not ctx.quick:
        rng = ctx.rng("elementwise shapes", dtype)
        shapes += [(64, 33), (129, 16), (2, 4 * nr - 1)]
        shapes += [tuple(int(v) for v in rng.integers(1, 80, 2)) for _ in range(4)]
    return shapes


# ============================================================================ kernels
def kernel_matmul_forward(ctx: Context, be, dtype: str) -> Worst:
    w, u = Worst(), _u(dtype)
    rng = ctx.rng("matmul_forward", dtype)
    for B, C, OC in matmul_shapes(ctx, dtype):
        inp, W, b = _rand(rng, (B, C), dtype), _rand(rng, (C, OC), dtype), _rand(rng, OC, dtype)
        out = _nan((B, OC), dtype)
        be.matmul_forward(out, inp, W, b)
        ref = np.empty((B, OC))
        REF.matmul_forward(ref, _f64(inp), _f64(W), _f64(b))
        S = np.abs(_f64(inp)) @ np.abs(_f64(W)) + np.abs(_f64(b))
        w.add(out, ref, 16 * u * S, f"out {B}x{C}x{OC}")
    return w


def kernel_matmul_backward(ctx: Context, be, dtype: str) -> Worst:
    w, u = Worst(), _u(dtype)
    rng = ctx.rng("matmul_backward", dtype)
    for B, C, OC in matmul_shapes(ctx, dtype):
        inp, W = _rand(rng, (B, C), dtype), _rand(rng, (C, OC), dtype)
        dout = _rand(rng, (B, OC), dtype)
        dinp, dW, db = _nan((B, C), dtype), _nan((C, OC), dtype), _nan(OC, dtype)
        be.matmul_backward(dinp, dW, db, dout, inp, W)
        r_dinp, r_dW, r_db = np.empty((B, C)), np.empty((C, OC)), np.empty(OC)
        REF.matmul_backward(r_dinp, r_dW, r_db, _f64(dout), _f64(inp), _f64(W))
        a_i, a_w, a_d = np.abs(_f64(inp)), np.abs(_f64(W)), np.abs(_f64(dout))
        tag = f"{B}x{C}x{OC}"
        w.add(dinp, r_dinp, 16 * u * (a_d @ a_w.T), f"dinp {tag}")
        w.add(dW, r_dW, 16 * u * (a_i.T @ a_d), f"dweight {tag}")
        w.add(db, r_db, 16 * u * a_d.sum(0), f"dbias {tag}")
        # the first layer skips dinp: the weight gradients must be the same bits
        dW2, db2 = _nan((C, OC), dtype), _nan(OC, dtype)
        be.matmul_backward(None, dW2, db2, dout, inp, W)
        same = np.array_equal(dW2, dW) and np.array_equal(db2, db)
        w.add_scalar(0.0 if same else math.inf, 0.0, 1.0, f"dinp=None changes dweight {tag}")
    return w


def _activation_inputs(rng, shape, dtype):
    inp = _rand(rng, shape, dtype, scale=3.0)
    special = np.array([0.0, -0.0, 1e-3, -1e-3, 40.0, -40.0, 1e-30, -1e-30], dtype=dtype)
    flat = inp.reshape(-1)
    n = min(flat.size, special.size)
    flat[:n] = special[:n]
    return inp


def kernel_activation_forward(ctx: Context, be, dtype: str) -> Worst:
    w, u = Worst(), _u(dtype)
    for code, name in enumerate(ACTIVATIONS):
        rng = ctx.rng("activation_forward", name, dtype)
        for shape in elementwise_shapes(ctx, dtype):
            inp = _activation_inputs(rng, shape, dtype)
            out = _nan(shape, dtype)
            be.activation_forward(code, out, inp)
            ref = np.empty(shape)
            REF.activation_forward(code, ref, _f64(inp))
            # a few ulps of the result; gelu's x·Φ(x) also of x (cancellation for x < 0)
            S = np.abs(ref) + np.abs(_f64(inp)) * (name == "gelu")
            w.add(out, ref, 8 * u * S, f"{name} {shape}")
    return w


def kernel_activation_backward(ctx: Context, be, dtype: str) -> Worst:
    w, u = Worst(), _u(dtype)
    for code, name in enumerate(ACTIVATIONS):
        rng = ctx.rng("activation_backward", name, dtype)
        for shape in elementwise_shapes(ctx, dtype):
            inp = _activation_inputs(rng, shape, dtype)
            out = np.empty(shape, dtype=dtype)
            REF.activation_forward(code, out, inp)  # the same `out` for backend and reference
            dout = _rand(rng, shape, dtype)
            dinp = _nan(shape, dtype)
            be.activation_backward(code, dinp, dout, inp, out)
            ref = np.empty(shape)
            REF.activation_backward(code, ref, _f64(dout), _f64(inp), _f64(out))
            S = np.abs(_f64(dout)) * (1.0 + np.abs(_f64(inp)))
            w.add(dinp, ref, 16 * u * S, f"{name} {shape}")
    return w


def kernel_loss(ctx: Context, be, dtype: str) -> Worst:
    w, u = Worst(), _u(dtype)
    shapes = [(1, 1), (1, 3), (7, 1), (33, 10), (64, 5)]
    if not ctx.quick:
        shapes += [(129, 17), (2, 33), (100, 1)]
    for code, name in enumerate(LOSSES):
        rng = ctx.rng("loss", name, dtype)
        for rows, k in shapes:
            pred = _rand(rng, (rows, k), dtype, scale=4.0)
            if name == "cross_entropy":
                target = rng.integers(0, k, size=rows).astype(np.int64)
                tref = target
            elif name == "binary_cross_entropy":
                target = rng.uniform(0, 1, size=(rows, k)).astype(dtype)
                tref = _f64(target)
            else:
                target = _rand(rng, (rows, k), dtype)
                tref = _f64(target)
            dpred = _nan((rows, k), dtype)
            value = be.loss_forward_backward(code, dpred, pred, target)
            dref = np.empty((rows, k))
            vref = REF.loss_forward_backward(code, dref, _f64(pred), tref)
            if not isinstance(value, float):
                w.add_scalar(math.inf, 0, 1, f"{name}: returned {type(value).__name__}")
            scale = abs(vref) + np.abs(_f64(pred)).max() + 1.0
            w.add_scalar(value, vref, 64 * u * scale, f"{name} loss {rows}x{k}")
            # S: the magnitudes of the terms each dpred subtracts
            if name == "cross_entropy":  # (softmax − onehot) / B
                S = np.abs(dref) + 2.0 / rows
            elif name == "mse":  # 2 (pred − target) / (B·K)
                S = 2.0 * (np.abs(_f64(pred)) + np.abs(tref)) / pred.size
            else:  # (σ(z) − target) / (B·K)
                S = (1.0 + np.abs(tref)) / pred.size
            w.add(dpred, dref, 16 * u * S, f"{name} dpred {rows}x{k}")
    return w


def _bn_case(rng, rows, n, dtype):
    inp = _rand(rng, (rows, n), dtype, scale=2.0) + np.dtype(dtype).type(0.5)
    gamma, beta = _rand(rng, n, dtype), _rand(rng, n, dtype)
    rmean = _rand(rng, n, dtype)
    rvar = (np.abs(_rand(rng, n, dtype)) + 0.5).astype(dtype)
    return inp, gamma, beta, rmean, rvar


def _bn_shapes(ctx):
    shapes = [(2, 1), (3, 7), (64, 33), (129, 16)]
    if not ctx.quick:
        shapes += [(2, 31), (17, 1), (250, 9)]
    return shapes


def kernel_batchnorm_forward(ctx: Context, be, dtype: str) -> Worst:
    w, u = Worst(), _u(dtype)
    rng = ctx.rng("batchnorm_forward", dtype)
    for rows, n in _bn_shapes(ctx):
        inp, gamma, beta, rmean, rvar = _bn_case(rng, rows, n, dtype)
        mean, var, rstd = _nan(n, dtype), _nan(n, dtype), _nan(n, dtype)
        out = _nan((rows, n), dtype)
        be.batchnorm_forward(out, mean, var, rstd, inp, gamma, beta, rmean, rvar, True, 1e-5)
        i64, g64, b64 = _f64(inp), _f64(gamma), _f64(beta)
        m_ref, v_ref, s_ref, o_ref = np.empty(n), np.empty(n), np.empty(n), np.empty((rows, n))
        REF.batchnorm_forward(o_ref, m_ref, v_ref, s_ref, i64, g64, b64, None, None, True, 1e-5)
        sx = np.abs(i64).max(axis=0)
        tag = f"{rows}x{n}"
        w.add(mean, m_ref, 16 * u * sx, f"mean {tag}")
        w.add(var, v_ref, 64 * u * (v_ref + sx**2), f"var {tag}")
        w.add(rstd, s_ref, 64 * u * s_ref, f"rstd {tag}")
        xhat_scale = (np.abs(i64) + sx) * s_ref
        w.add(out, o_ref, 64 * u * (np.abs(g64) * xhat_scale + np.abs(b64)), f"train out {tag}")
        # inference: running statistics; the batch cache stays as it was
        before = (mean.copy(), var.copy(), rstd.copy())
        be.batchnorm_forward(out, mean, var, rstd, inp, gamma, beta, rmean, rvar, False, 1e-5)
        same = all(np.array_equal(a, b) for a, b in zip(before, (mean, var, rstd), strict=True))
        w.add_scalar(0.0 if same else math.inf, 0.0, 1.0, f"inference wrote the cache {tag}")
        o_inf = np.empty((rows, n))
        REF.batchnorm_forward(o_inf, None, None, None, i64, g64, b64, _f64(rmean), _f64(rvar),
                              False, 1e-5)
        S = np.abs(g64) * (np.abs(i64) + np.abs(_f64(rmean))) / np.sqrt(_f64(rvar) + 1e-5)
        w.add(out, o_inf, 16 * u * (S + np.abs(b64)), f"inference out {tag}")
    return w


def kernel_batchnorm_backward(ctx: Context, be, dtype: str) -> Worst:
    w, u = Worst(), _u(dtype)
    rng = ctx.rng("batchnorm_backward", dtype)
    for rows, n in _bn_shapes(ctx):
        inp, gamma, _, _, _ = _bn_case(rng, rows, n, dtype)
        # the batch statistics as the reference computes them, rounded to dtype
        m_ref, v_ref, s_ref = np.empty(n), np.empty(n), np.empty(n)
        REF.batchnorm_forward(np.empty((rows, n)), m_ref, v_ref, s_ref, _f64(inp), _f64(gamma),
                              np.zeros(n), None, None, True, 1e-5)
        mean, rstd = m_ref.astype(dtype), s_ref.astype(dtype)
        dout = _rand(rng, (rows, n), dtype)
        dinp, dgamma, dbeta = _nan((rows, n), dtype), _nan(n, dtype), _nan(n, dtype)
        be.batchnorm_backward(dinp, dgamma, dbeta, dout, inp, mean, rstd, gamma)
        i64, d64, g64 = _f64(inp), _f64(dout), _f64(gamma)
        di, dg, db = np.empty((rows, n)), np.empty(n), np.empty(n)
        REF.batchnorm_backward(di, dg, db, d64, i64, _f64(mean), _f64(rstd), g64)
        sx = np.abs(i64).max(axis=0)
        xs = (np.abs(i64) + sx) * _f64(rstd)  # what enters each xhat
        tag = f"{rows}x{n}"
        w.add(dbeta, db, 16 * u * np.abs(d64).sum(0), f"dbeta {tag}")
        w.add(dgamma, dg, 64 * u * (np.abs(d64) * xs).sum(0), f"dgamma {tag}")
        s_dx = _f64(rstd) * np.abs(g64) * (
            np.abs(d64) + (np.abs(d64) * (1 + xs * xs)).sum(0) / rows * (1 + xs))
        w.add(dinp, di, 64 * u * s_dx, f"dinp {tag}")
        dg2, db2 = _nan(n, dtype), _nan(n, dtype)
        be.batchnorm_backward(None, dg2, db2, dout, inp, mean, rstd, gamma)
        same = np.array_equal(dg2, dgamma) and np.array_equal(db2, dbeta)
        w.add_scalar(0.0 if same else math.inf, 0.0, 1.0, f"dinp=None changes dgamma {tag}")
    return w


def kernel_batchnorm_update_running(ctx: Context, be, dtype: str) -> Worst:
    w, u = Worst(), _u(dtype)
    rng = ctx.rng("batchnorm_update_running", dtype)
    for rows, n in _bn_shapes(ctx) + [(1, 5)]:
        _, _, _, rmean, rvar = _bn_case(rng, rows, n, dtype)
        mean = _rand(rng, n, dtype)
        var = (np.abs(_rand(rng, n, dtype)) + 0.1).astype(dtype)
        for mom in (0.1, 0.01, 1.0):
            rm, rv = rmean.copy(), rvar.copy()
            be.batchnorm_update_running(rm, rv, mean, var, rows, mom)
            r_rm, r_rv = _f64(rmean), _f64(rvar)
            REF.batchnorm_update_running(r_rm, r_rv, _f64(mean), _f64(var), rows, mom)
            unb = rows / (rows - 1) if rows > 1 else 1.0
            tag = f"{rows}x{n} momentum {mom}"
            w.add(rm, r_rm, 16 * u * (np.abs(_f64(rmean)) + np.abs(_f64(mean))), f"mean {tag}")
            w.add(rv, r_rv, 16 * u * (_f64(rvar) + unb * _f64(var)), f"var {tag}")
    return w


def kernel_dropout(ctx: Context, be, dtype: str) -> Worst:
    """Masks are a counter hash of the seed: bit-identical to the reference's."""
    w, u = Worst(), _u(dtype)
    rng = ctx.rng("dropout", dtype)
    for shape in elementwise_shapes(ctx, dtype):
        for p in (0.0, 0.1, 0.5, 0.9):
            seed = int(rng.integers(0, 2**63))
            inp = _rand(rng, shape, dtype)
            mask, out = _nan(shape, dtype), _nan(shape, dtype)
            be.dropout_forward(out, mask, inp, p, seed)
            r_mask, r_out = np.empty(shape, dtype), np.empty(shape, dtype)
            REF.dropout_forward(r_out, r_mask, inp, p, seed)
            tag = f"{shape} p={p}"
            w.add_scalar(0.0 if np.array_equal(mask, r_mask) else math.inf, 0.0, 1.0,
                         f"mask differs from the reference's {tag}")
            exact = _f64(inp) * _f64(r_mask)
            w.add(out, exact, u * np.abs(exact), f"out {tag}")  # one rounding
            dout = _rand(rng, shape, dtype)
            dinp = _nan(shape, dtype)
            be.dropout_backward(dinp, dout, mask)
            exact = _f64(dout) * _f64(r_mask)
            w.add(dinp, exact, u * np.abs(exact), f"dinp {tag}")
    return w


def _optimizers():
    from .optim import SGD, Adam, AdamW

    return {
        "sgd": [("plain", lambda: SGD(lr=0.1)),
                ("momentum+dampening+wd",
                 lambda: SGD(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
                ("nesterov+wd", lambda: SGD(lr=0.05, momentum=0.9, nesterov=True,
                                            weight_decay=1e-3))],
        "adam": [("adam", lambda: Adam(lr=1e-2)),
                 ("adam+wd", lambda: Adam(lr=1e-2, weight_decay=1e-2)),
                 ("adamw", lambda: AdamW(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1))],
    }


def _kernel_optimizer(family: str, ctx: Context, be, dtype: str) -> Worst:
    w, u = Worst(), _u(dtype)
    sizes = [1, 7, 15, 16, 17, 33, 1000] + ([] if ctx.quick else [4097, 65537])
    steps = 10
    for label, make in _optimizers()[family]:
        rng = ctx.rng(family, label, dtype)
        for n in sizes:
            opt, ref_opt = make(), make()
            opt.bind(n, np.dtype(dtype))
            ref_opt.bind(n, np.float64)
            params = _rand(rng, n, dtype)
            ref = _f64(params)
            for step in range(1, steps + 1):
                grads = _rand(rng, n, dtype)
                if family == "sgd":
                    be.sgd_update(params, grads, opt.buf1, opt.hyper, step)
                    REF.sgd_update(ref, _f64(grads), ref_opt.buf1, ref_opt.hyper, step)
                else:
                    be.adam_update(params, grads, opt.buf1, opt.buf2, opt.hyper, step)
                    REF.adam_update(ref, _f64(grads), ref_opt.buf1, ref_opt.buf2,
                                    ref_opt.hyper, step)
            # every update moves p by at most ~lr·(|g| + momentum terms), each with a few u
            S = np.abs(ref) + 10 * opt.lr * steps
            w.add(params, ref, 64 * u * S, f"{label} n={n} after {steps} steps")
            w.add(opt.buf1, ref_opt.buf1, 64 * u * (np.abs(ref_opt.buf1) + 10 * steps),
                  f"{label} n={n} state buf1")
    return w


def kernel_sgd_update(ctx, be, dtype):
    return _kernel_optimizer("sgd", ctx, be, dtype)


def kernel_adam_update(ctx, be, dtype):
    return _kernel_optimizer("adam", ctx, be, dtype)


# ============================================================================ finite differences
def _fd_model(backend: str, layers, n_in: int, loss: str, seed: int = 0):
    from .model import Sequential

    return Sequential(layers, input_size=n_in, loss=loss, dtype="float64", backend=backend,
                      seed=seed)


def fd_data(rng, rows, n_in, n_out, loss):
    X = rng.standard_normal((rows, n_in))
    if loss == "cross_entropy":
        y = rng.integers(0, n_out, size=rows)
    elif loss == "binary_cross_entropy":
        y = rng.uniform(0, 1, size=(rows, n_out))
    else:
        y = rng.standard_normal((rows, n_out))
    return X, y


def away_from_kinks(model, X, seed: int = 7) -> bool:
    """True when every input of a ReLU-family activation is at least KINK from 0."""
    be, plan, bufs = model.backend, model.plan, model.bufs
    X = model._check_X(X)
    bufs.ensure_capacity(X.shape[0])
    out = be.forward(plan, bufs, X, training=True, seed=seed)  # noqa: F841 - fills bufs
    for i, L in enumerate(plan.layers):
        if L.kind == ACTIVATION and ACTIVATIONS[L.activation] in ("relu", "leaky_relu"):
            below = X if i == 0 else bufs.out(i - 1, X.shape[0])
            if np.abs(below).min() < KINK:
                return False
    return True


def finite_differences(model, X, y, seed: int = 7, n_checks: int = 60,
                       rng: np.random.Generator | None = None, worst: Worst | None = None,
                       label: str = "") -> Worst:
    """Analytic gradient of the flat parameter buffer against central differences.

    Returns the worst |numeric − analytic| / (atol + rtol·|numeric|); n_checks parameters
    are drawn at random from the live ones (padding between tensors is skipped)."""
    worst = worst if worst is not None else Worst()
    be, plan, bufs = model.backend, model.plan, model.bufs
    Xc, yc = model._check_Xy(X, y)
    bufs.ensure_capacity(Xc.shape[0])
    be.gradients(plan, bufs, Xc, yc, seed)
    analytic = bufs.grads.copy()
    base = bufs.params.ctypes.data
    names, live = [], []
    for k, (a, b) in enumerate(plan.param_views(bufs.params)):
        for v, nm in ((a, "W" if a.ndim == 2 else "gamma"), (b, "b" if a.ndim == 2 else "beta")):
            off = (v.ctypes.data - base) // v.itemsize
            live.append(np.arange(off, off + v.size))
            names += [f"{nm}{k}"] * v.size
    live = np.concatenate(live)
    rng = rng or np.random.default_rng(0)
    picks = rng.choice(live.size, size=min(n_checks, live.size), replace=False)
    for q in picks:
        j = live[q]
        keep = bufs.params[j]
        bufs.params[j] = keep + FD_EPS
        up = be.gradients(plan, bufs, Xc, yc, seed)
        bufs.params[j] = keep - FD_EPS
        down = be.gradients(plan, bufs, Xc, yc, seed)
        bufs.params[j] = keep
        numeric = (up - down) / (2 * FD_EPS)
        worst.add_scalar(analytic[j], numeric, FD_ATOL + FD_RTOL * abs(numeric),
                         f"{label} {names[q]} (flat {j})")
    be.gradients(plan, bufs, Xc, yc, seed)  # leave the buffers as the analytic pass left them
    return worst


def _fd_only_float64(dtype):
    if dtype != "float64":
        raise NotApplicable("n/a (float64 only)")


def _fd_n(ctx):
    return 24 if ctx.quick else 80


def fd_dense(ctx: Context, backend: str, dtype: str) -> Worst:
    _fd_only_float64(dtype)
    from .layers import Dense

    w = Worst()
    rng = ctx.rng("fd dense")
    for sizes in ([5, 7, 3], [1, 1], [4, 9, 6, 2]):
        layers = [Dense(s) for s in sizes[1:]]
        model = _fd_model(backend, layers, sizes[0], "mse")
        X, y = fd_data(rng, 9, sizes[0], sizes[-1], "mse")
        finite_differences(model, X, y, n_checks=_fd_n(ctx), rng=rng, worst=w,
                           label=f"dense {sizes}")
    return w


def fd_activations(ctx: Context, backend: str, dtype: str) -> Worst:
    _fd_only_float64(dtype)
    from .layers import Activation, Dense

    w = Worst()
    for act in ACTIVATIONS:
        rng = ctx.rng("fd activation", act)
        for seed in range(40):
            layers = [Activation(act), Dense(9), Activation(act), Dense(7), Activation(act),
                      Dense(3)]
            model = _fd_model(backend, layers, 5, "mse", seed)
            X, y = fd_data(rng, 8, 5, 3, "mse")
            if away_from_kinks(model, X):
                break
        else:
            raise RuntimeError(f"no draw kept {act} inputs {KINK} away from the kink")
        finite_differences(model, X, y, n_checks=_fd_n(ctx), rng=rng, worst=w, label=act)
    return w


def fd_losses(ctx: Context, backend: str, dtype: str) -> Worst:
    _fd_only_float64(dtype)
    from .layers import Activation, Dense

    w = Worst()
    for loss in LOSSES:
        rng = ctx.rng("fd loss", loss)
        for n_out in (1, 4):
            if loss == "cross_entropy" and n_out == 1:
                n_out = 2
            model = _fd_model(backend, [Dense(6), Activation("tanh"), Dense(n_out)], 3, loss)
            X, y = fd_data(rng, 11, 3, n_out, loss)
            finite_differences(model, X, y, n_checks=_fd_n(ctx), rng=rng, worst=w,
                               label=f"{loss} K={n_out}")
    return w


def fd_batchnorm(ctx: Context, backend: str, dtype: str) -> Worst:
    _fd_only_float64(dtype)
    from .layers import Activation, BatchNorm, Dense

    w = Worst()
    rng = ctx.rng("fd batchnorm")
    model = _fd_model(backend, [Dense(8), BatchNorm(), Activation("tanh"), Dense(6),
                                BatchNorm(), Activation("sigmoid"), Dense(3)], 4, "cross_entropy")
    for name, v in model.named_parameters().items():  # gamma, beta away from 1 and 0
        layer = model.plan.layers[int(name.split(".")[0])]
        if layer.kind == BATCHNORM and name.endswith("weight"):
            v[...] = rng.uniform(0.5, 1.5, v.shape)
        elif layer.kind == BATCHNORM and name.endswith("bias"):
            v[...] = rng.normal(0, 0.3, v.shape)
    X, y = fd_data(rng, 10, 4, 3, "cross_entropy")
    finite_differences(model, X, y, n_checks=_fd_n(ctx) + 20, rng=rng, worst=w,
                       label="batchnorm")
    return w


def fd_dropout(ctx: Context, backend: str, dtype: str) -> Worst:
    """With the seed fixed the mask is fixed: dropout is differentiable like a product."""
    _fd_only_float64(dtype)
    from .layers import Activation, Dense, Dropout

    w = Worst()
    rng = ctx.rng("fd dropout")
    for p in (0.3, 0.7):
        model = _fd_model(backend, [Dense(16), Activation("tanh"), Dropout(p), Dense(2)], 3,
                          "binary_cross_entropy")
        X, y = fd_data(rng, 9, 3, 2, "binary_cross_entropy")
        finite_differences(model, X, y, seed=12345, n_checks=_fd_n(ctx), rng=rng, worst=w,
                           label=f"dropout p={p}")
    return w


# ============================================================================ PyTorch
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
        X = m._check_X(X)
        rows = X.shape[0]
        bufs.ensure_capacity(rows)
        P = m.named_parameters()
        if training:
            yc = m._check_Xy(X, y)[1]
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
            if L.kind == DENSE:
                W, b = P[f"{i}.weight"], P[f"{i}.bias"]
                feeds_bn = i + 1 < len(layers) and layers[i + 1].kind == BATCHNORM
                Sb = 0.0 if feeds_bn else S[f"{i}.bias"]
                So = Sx @ np.abs(W) + np.abs(x) @ S[f"{i}.weight"] + np.abs(b) + Sb + np.abs(out)
                extra.append(None)
            elif L.kind == ACTIVATION:
                d1, d2 = _derivatives(L.activation, x)
                So = np.abs(d1) * Sx + np.abs(out)
                extra.append((d1, d2))
            elif L.kind == BATCHNORM:
                g, bt = P[f"{i}.weight"], P[f"{i}.bias"]
                if training:
                    n = L.n_out
                    c = bufs.cache_block(i, 3 * n)
                    mean, var, rstd = c[:n].copy(), c[n : 2 * n].copy(), c[2 * n :].copy()
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
                    mask = bufs.cache_block(i, rows * L.n_out).reshape(rows, L.n_out).copy()
                    So = mask * Sx
                    extra.append(mask)
                else:
                    So = Sx.copy()
                    extra.append(None)
            x, Sx = out.copy(), So
        result = {"out": Sx, "out_value": x,
                  "bn": {i: e for i, e in enumerate(extra) if layers[i].kind == BATCHNORM}}
        if not training:
            return result
        # ---- loss and its gradient
        pred, Sp = x, Sx
        last = len(layers) - 1
        if m.loss == "mse":
            d = pred - yc
            result["loss"] = float(np.mean(2 * np.abs(d) * Sp + d * d))
            Sd = 2.0 / pred.size * (Sp + np.abs(pred) + np.abs(yc))
        elif m.loss == "cross_entropy":
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
            if L.kind == DENSE:
                W = P[f"{i}.weight"]
                result[f"{i}.weight"] = Sx.T @ np.abs(dout) + np.abs(x).T @ dS
                result[f"{i}.bias"] = dS.sum(axis=0)
                dS = dS @ np.abs(W).T + np.abs(dout) @ S[f"{i}.weight"].T
                if dinp is not None:
                    dS = dS + np.abs(dinp)
            elif L.kind == ACTIVATION:
                d1, d2 = extra[i]
                flip = 0.0
                if ACTIVATIONS[L.activation] in ("relu", "leaky_relu"):
                    # within k·u·S of the kink the slope may flip: an error of |dout|
                    near = np.abs(x) <= K_TORCH * u * Sx
                    flip = np.where(near, np.abs(dout) / (K_TORCH * u), 0.0)
                dS = np.abs(d1) * dS + np.abs(dout) * np.abs(d2) * Sx + flip
                if dinp is not None:
                    dS = dS + np.abs(dinp)
            elif L.kind == BATCHNORM:
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
        from .optim import (
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
        )

        m, S = self.m, self.S
        P = m.named_parameters()
        G = dict(m._grad_views())
        h = opt64.hyper
        lr, wd = float(h[H_LR]), float(h[H_WD])
        st = self._opt_state.setdefault(id(opt64), {k: (np.zeros_like(v), np.zeros_like(v))
                                                    for k, v in G.items()})
        step = int(opt64.step[0])
        for k in G:
            g, Sg, p = G[k], grads_S[k], P[k]
            Sp = S[k]
            Sm, Sv = st[k]
            if opt64.kind == ADAM_KIND:
                b1, b2, eps = float(h[H_BETA1]), float(h[H_BETA2]), float(h[H_EPS])
                decoupled = bool(h[H_DECOUPLED])
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
                mom, damp = float(h[H_MOM]), float(h[H_DAMP])
                nesterov = bool(h[H_NESTEROV])
                Sge = Sg + wd * Sp + np.abs(g) + wd * np.abs(self._p_before[k])
                if mom:
                    buf = np.abs(self._m(opt64, k))
                    Sm = Sge.copy() if step == 1 else mom * Sm + (1 - damp) * Sge + buf
                    Sdir = Sge + mom * Sm if nesterov else Sm
                else:
                    Sdir = Sge
                Sp = Sp + lr * Sdir + np.abs(p)
            S[k] = Sp
            st[k] = (Sm, Sv)
        # running statistics (their update happened with the same step)
        for i, L in enumerate(m.plan.layers):
            if L.kind != BATCHNORM:
                continue
            mom = L.momentum
            _, _, _, _, mS, Svar = self._bn_extra[i]
            prev = m.plan.layers[i - 1] if i > 0 else None
            Sbias = S[f"{i - 1}.bias"] if prev is not None and prev.kind == DENSE else 0.0
            unb = X_rows / (X_rows - 1) if X_rows > 1 else 1.0
            S[f"{i}.running_mean"] = ((1 - mom) * S[f"{i}.running_mean"] + mom * (mS + Sbias)
                                      + np.abs(P[f"{i}.running_mean"]))
            S[f"{i}.running_var"] = ((1 - mom) * S[f"{i}.running_var"] + mom * unb * Svar
                                     + np.abs(P[f"{i}.running_var"]))

    _opt_state: dict

    def _m(self, opt, k):
        return self._views(opt.buf1)[k]

    def _v(self, opt, k):
        return self._views(opt.buf2)[k]

    def _views(self, flat) -> dict:
        out = {}
        for i, L in enumerate(self.m.plan.layers):
            r = self.m.plan.ops[i]
            if L.kind == DENSE:
                k = L.n_in * L.n_out
                out[f"{i}.weight"] = flat[r[K_PA] : r[K_PA] + k].reshape(L.n_in, L.n_out)
                out[f"{i}.bias"] = flat[r[K_PB] : r[K_PB] + L.n_out]
            elif L.kind == BATCHNORM:
                out[f"{i}.weight"] = flat[r[K_PA] : r[K_PA] + L.n_out]
                out[f"{i}.bias"] = flat[r[K_PB] : r[K_PB] + L.n_out]
        return out

    def train_step(self, X, y, opt64) -> None:
        """One step of the twin with S carried along.

        The gradient's S is taken at exact parameters: feeding S of the parameters back
        into the next gradient compounds worst cases step after step (under Adam one
        near-zero gradient makes S of its parameter ~lr/u, which then swamps every later
        bound). Rounding differences of the parameters change later gradients only at
        second order over ten small steps; S of the parameters themselves still grows
        with every update."""
        self._opt_state = getattr(self, "_opt_state", {})
        X = self.m._check_X(X)
        res = self.pass_(X, y, seed=0, training=True, param_errors=False)
        self._bn_extra = res["bn"]  # S of this pass's batch statistics
        self._p_before = {k: v.copy() for k, v in self.m.named_parameters().items()}
        self.m.train_step(X, y, opt64)
        self.step(opt64, res, X.shape[0])


def _derivatives(code: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(f'(x), f''(x)) of activation `code`, float64 (f'' = 0 for the piecewise-linear)."""
    name = ACTIVATIONS[code]
    if name == "identity":
        return np.ones_like(x), np.zeros_like(x)
    if name == "relu":
        return (x > 0).astype(np.float64), np.zeros_like(x)
    if name == "leaky_relu":
        return np.where(x > 0, 1.0, 0.01), np.zeros_like(x)
    if name == "sigmoid":
        s = 0.5 * (1 + np.tanh(0.5 * x))
        return s * (1 - s), s * (1 - s) * (1 - 2 * s)
    if name == "tanh":
        t = np.tanh(x)
        return 1 - t * t, -2 * t * (1 - t * t)
    # gelu: Φ(x) + x φ(x); second derivative φ(x)(2 − x²)
    from .backends.numpy_backend import INV_SQRT_2PI, SQRT_HALF, erf

    pdf = np.exp(-0.5 * x * x) * INV_SQRT_2PI
    return 0.5 * (1 + erf(x * SQRT_HALF)) + x * pdf, pdf * (2 - x * x)


def _torch():
    from . import torchref

    ok, reason = torchref.available()
    if not ok:
        raise Skipped(f"skipped: {reason}")
    import torch

    return torch, torchref


def _twin64(model):
    """A float64 copy of `model` on the NumPy backend, with the same weights and state."""
    from .model import Sequential

    twin = Sequential(model.layers, input_size=model.input_size, loss=model.loss,
                      dtype="float64", backend="numpy", seed=model.seed)
    src = model.named_parameters()
    for k, v in twin.named_parameters().items():
        v[...] = src[k]
    twin._rng.bit_generator.state = model._rng.bit_generator.state
    return twin


def _tol(dtype: str, u: float) -> float:
    return TORCH_RTOL64 if dtype == "float64" else K_TORCH * u


def torch_model(backend, dtype, loss="cross_entropy", act="tanh", bn=True, dropout=0.0,
                seed=3):
    """The small MLP every PyTorch comparison uses (6 inputs, hidden 12 and 9)."""
    from .model import MLP

    return MLP([6, 12, 9, 4 if loss == "cross_entropy" else 2], activation=act, loss=loss,
               dtype=dtype, backend=backend, batchnorm=bn, dropout=dropout, seed=seed)


def torch_data(loss, rng, rows=24):
    X = rng.standard_normal((rows, 6))
    if loss == "cross_entropy":
        return X, rng.integers(0, 4, rows)
    if loss == "binary_cross_entropy":
        return X, rng.integers(0, 2, (rows, 2)).astype(float)
    return X, rng.standard_normal((rows, 2))


def _perturb_bn(model, rng):
    """gamma, beta and running statistics away from 1, 0, 0, 1."""
    for name, v in model.named_parameters().items():
        layer = model.plan.layers[int(name.split(".")[0])]
        if layer.kind != BATCHNORM:
            continue
        if name.endswith("weight"):
            v[...] = rng.uniform(0.5, 1.5, v.shape)
        elif name.endswith("bias"):
            v[...] = rng.normal(0, 0.3, v.shape)
        elif name.endswith("running_mean"):
            v[...] = rng.normal(0, 0.5, v.shape)
        elif name.endswith("running_var"):
            v[...] = rng.uniform(0.5, 2.0, v.shape)


def _torch_gradients(ctx, backend, dtype, bn: bool) -> Worst:
    torch, torchref = _torch()
    w, u = Worst(), _u(dtype)
    tol = _tol(dtype, u)
    acts = ("tanh", "relu", "gelu") if ctx.quick else ACTIVATIONS
    for loss in LOSSES:
        for act in acts:
            rng = ctx.rng("torch gradients", loss, act, bn)
            model = torch_model(backend, dtype, loss, act, bn, dropout=0.0 if bn else 0.2)
            if bn:
                _perturb_bn(model, rng)
            X, y = torch_data(loss, rng)
            X = X.astype(dtype)
            seed = model._peek_seed()  # the dropout masks gradients() draws
            loss_ours, grads = model.named_gradients(X, y)
            mag = Magnitudes(_twin64(model), u).pass_(X, y, seed)
            net, loss_fn = torchref.build(model, seed=seed)
            net.train()
            out = net(torch.from_numpy(X))
            loss_t = loss_fn(out, torchref.targets(model, y))
            loss_t.backward()
            tag = f"{loss}/{act}"
            w.add_scalar(loss_ours, loss_t.item(), tol * mag["loss"], f"{tag} loss")
            for k, g in torchref.named_grads(net).items():
                w.add(grads[k], g, tol * mag[k], f"{tag} grad {k}")
    return w


def torch_gradients(ctx, backend, dtype):
    return _torch_gradients(ctx, backend, dtype, bn=False)


def torch_batchnorm_train(ctx, backend, dtype):
    """Training mode: loss and every gradient through batch statistics (gamma, beta and
    running statistics perturbed). Running statistics after training steps are compared
    in the torch/*-10-steps rows."""
    return _torch_gradients(ctx, backend, dtype, bn=True)


def _trajectory(ctx, backend, dtype, label, make, bn, w: Worst, eval_after: bool = True):
    """TORCH_STEPS steps of ours, of torch and of the float64 twin carrying S; then the
    weights, running statistics and inference-mode outputs are compared."""
    torch, torchref = _torch()
    u = _u(dtype)
    tol = _tol(dtype, u)
    rng = ctx.rng("torch steps", label, bn, dtype)
    model = torch_model(backend, dtype, "cross_entropy", "tanh", bn, dropout=0.0)
    if bn:
        _perturb_bn(model, rng)
    net, loss_fn = torchref.build(model)
    mag = Magnitudes(_twin64(model), u)
    opt, topt = make(), None
    opt64 = make()
    topt = torchref.torch_optimizer(opt, net.parameters())
    for _ in range(TORCH_STEPS):
        X, y = torch_data("cross_entropy", rng)
        X = X.astype(dtype)
        model.train_step(X, y, opt)
        net.train()
        topt.zero_grad()
        loss_fn(net(torch.from_numpy(X)), torchref.targets(model, y)).backward()
        topt.step()
        mag.train_step(X, y, opt64)
    theirs = torchref.named_state(net)
    ours = model.named_parameters()
    kind = "bn" if bn else "plain"
    for k, v in theirs.items():
        w.add(ours[k], v, tol * mag.S[k], f"{label} {kind} {k} after {TORCH_STEPS} steps")
    if eval_after:
        X, _ = torch_data("cross_entropy", rng)
        X = X.astype(dtype)
        net.eval()
        with torch.no_grad():
            ref = net(torch.from_numpy(X)).numpy()
        Sout = mag.pass_(X, None, 0, training=False)["out"]
        w.add(model.predict_raw(X), ref, tol * Sout, f"{label} {kind} inference outputs")
    return w


def torch_sgd(ctx, backend, dtype):
    from .optim import SGD

    w = Worst()
    cases = [("sgd momentum+wd", lambda: SGD(lr=0.05, momentum=0.9, weight_decay=1e-2)),
             ("sgd nesterov+wd", lambda: SGD(lr=0.05, momentum=0.9, nesterov=True,
                                             weight_decay=1e-3)),
             ("sgd dampening", lambda: SGD(lr=0.1, momentum=0.5, dampening=0.3))]
    for label, make in cases[:2] if ctx.quick else cases:
        for bn in (False, True):
            _trajectory(ctx, backend, dtype, label, make, bn, w)
    return w


def torch_adam(ctx, backend, dtype):
    from .optim import Adam

    w = Worst()
    for bn in (False, True):
        _trajectory(ctx, backend, dtype, "adam+wd", lambda: Adam(lr=1e-2, weight_decay=1e-2),
                    bn, w)
    return w


def torch_adamw(ctx, backend, dtype):
    from .optim import AdamW

    w = Worst()
    for bn in (False, True):
        _trajectory(ctx, backend, dtype, "adamw",
                    lambda: AdamW(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1), bn, w)
    return w


def torch_batchnorm_eval(ctx, backend, dtype):
    """Inference mode with non-trivial running statistics, before any training."""
    torch, torchref = _torch()
    w, u = Worst(), _u(dtype)
    tol = _tol(dtype, u)
    for act in ("tanh", "relu", "sigmoid"):
        rng = ctx.rng("torch bn eval", act, dtype)
        model = torch_model(backend, dtype, "mse", act, True, dropout=0.0)
        _perturb_bn(model, rng)
        X = rng.standard_normal((31, 6)).astype(dtype)
        net, _ = torchref.build(model)
        net.eval()
        with torch.no_grad():
            ref = net(torch.from_numpy(X)).numpy()
        Sout = Magnitudes(_twin64(model), u).pass_(X, None, 0, training=False)["out"]
        w.add(model.predict_raw(X), ref, tol * Sout, f"{act} inference outputs")
    return w


# ============================================================================ the matrix
@dataclass(frozen=True)
class Check:
    name: str
    run: Callable  # (ctx, backend name, dtype) -> Worst
    kernel: bool = False  # run receives the backend object instead of its name


def _kernel(name, fn):
    return Check(f"kernel/{name}", fn, kernel=True)


CHECKS: tuple[Check, ...] = (
    Check("fd/dense", fd_dense),
    Check("fd/activations", fd_activations),
    Check("fd/losses", fd_losses),
    Check("fd/batchnorm", fd_batchnorm),
    Check("fd/dropout", fd_dropout),
    _kernel("matmul_forward", kernel_matmul_forward),
    _kernel("matmul_backward", kernel_matmul_backward),
    _kernel("activation_forward", kernel_activation_forward),
    _kernel("activation_backward", kernel_activation_backward),
    _kernel("loss_forward_backward", kernel_loss),
    _kernel("batchnorm_forward", kernel_batchnorm_forward),
    _kernel("batchnorm_backward", kernel_batchnorm_backward),
    _kernel("batchnorm_update_running", kernel_batchnorm_update_running),
    _kernel("dropout", kernel_dropout),
    _kernel("sgd_update", kernel_sgd_update),
    _kernel("adam_update", kernel_adam_update),
    Check("torch/loss+gradients", torch_gradients),
    Check("torch/batchnorm-train", torch_batchnorm_train),
    Check("torch/batchnorm-eval", torch_batchnorm_eval),
    Check("torch/sgd-10-steps", torch_sgd),
    Check("torch/adam-10-steps", torch_adam),
    Check("torch/adamw-10-steps", torch_adamw),
)


def run_cell(check: Check, ctx: Context, backend: str, dtype: str) -> Cell:
    t0 = time.perf_counter()
    try:
        target = _backends.get(backend) if check.kernel else backend
        with np.errstate(all="ignore"):
            w = check.run(ctx, target, dtype)
    except NotApplicable as exc:
        return Cell(check.name, backend, dtype, str(exc), seconds=time.perf_counter() - t0)
    except Skipped as exc:
        return Cell(check.name, backend, dtype, str(exc), seconds=time.perf_counter() - t0)
    except Exception as exc:  # a crash is a failure, reported with its cause
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        return Cell(check.name, backend, dtype, "ERROR",
                    where=f"{type(exc).__name__}: {exc} ({tb.filename}:{tb.lineno})",
                    seconds=time.perf_counter() - t0)
    status = "pass" if w.ratio <= 1.0 and w.compared > 0 else "FAIL"
    if w.compared == 0:
        w.where = "nothing was compared"
    return Cell(check.name, backend, dtype, status, w.ratio, w.err, w.where, w.compared,
                time.perf_counter() - t0)


def run(backends: list[str], quick: bool = False, only: list[str] | None = None,
        dtypes=DTYPES, progress: Callable[[Cell], None] | None = None) -> list[Cell]:
    """Every check × backend × dtype; returns the cells in that order."""
    ctx = Context(quick=quick, tiles=c_tiles())
    checks = [c for c in CHECKS if not only or any(o in c.name for o in only)]
    cells = []
    with _torch_single_thread():
        for check in checks:
            for backend in backends:
                for dtype in dtypes:
                    cell = run_cell(check, ctx, backend, dtype)
                    cells.append(cell)
                    if progress:
                        progress(cell)
    return cells


@contextlib.contextmanager
def _torch_single_thread():
    """The torch twins are tiny: one thread avoids its pool's overhead and contention with
    the backends' threads. The previous setting is restored afterwards."""
    try:
        import torch
    except Exception:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def matrix(cells: list[Cell]) -> str:
    """The Markdown matrix: one row per check, one column per backend × dtype."""
    cols = []
    for c in cells:
        key = (c.backend, c.dtype)
        if key not in cols:
            cols.append(key)
    rows: dict[str, dict] = {}
    for c in cells:
        rows.setdefault(c.check, {})[(c.backend, c.dtype)] = c.short()
    headers = ["check"] + [f"{b} {d}" for b, d in cols]
    body = [[name] + [r.get(k, "") for k in cols] for name, r in rows.items()]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(headers)]
    line = lambda cs: "| " + " | ".join(c.ljust(w) for c, w in zip(cs, widths, strict=True)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep] + [line(b) for b in body])


def report(cells: list[Cell], quick: bool, backends: list[str], seconds: float) -> dict:
    from . import __version__, torchref

    ok, reason = torchref.available()
    failed = [c for c in cells if c.failed]
    return {
        "gradkern": __version__,
        "quick": quick,
        "ok": not failed,
        "failures": len(failed),
        "seconds": round(seconds, 2),
        "backends": backends,
        "backend_status": _backends.status(),
        "dtypes": list(DTYPES),
        "checks": list(dict.fromkeys(c.check for c in cells)),
        "torch": reason if not ok else _torch_version(),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "numpy": np.__version__, "c": _safe_info("c")},
        "tolerances": {"fd": {"eps": FD_EPS, "atol": FD_ATOL, "rtol": FD_RTOL, "kink": KINK},
                       "torch": {"float64_rtol": TORCH_RTOL64, "float32_k": K_TORCH}},
        "cells": [asdict(c) for c in cells],
    }


def _torch_version() -> str:
    import torch

    return f"torch {torch.__version__}"


def _safe_info(name: str) -> dict:
    try:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in _backends.info(name).items()}
    except Exception as exc:
        return {"unavailable": str(exc)}


# ============================================================================ command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gradkern check",
        description="Cross-check every backend in float32 and float64: finite differences, "
                    "every kernel against the float64 NumPy reference, and (when PyTorch is "
                    "importable) the same model in torch.nn. Prints a pass/fail matrix with "
                    "each cell's worst error / bound and absolute error; exits 1 on any "
                    "failure.")
    p.add_argument("--quick", action="store_true",
                   help="fewer shapes, parameters and cases (well under a minute)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the matrix as JSON")
    p.add_argument("--backends", default=None,
                   help="comma-separated backends (default: every available one)")
    p.add_argument("--only", default=None,
                   help="comma-separated substrings: run only the checks whose name has one "
                        "(e.g. kernel/,torch/)")
    p.add_argument("--quiet", action="store_true", help="no per-cell progress lines")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not faulthandler.is_enabled():  # a crashing kernel names the check it was in
        faulthandler.enable()
    status = _backends.status()
    if args.backends:
        names = [b.strip() for b in args.backends.split(",") if b.strip()]
        unknown = [b for b in names if b not in status]
        if unknown:
            print(f"gradkern check: unknown backend(s) {', '.join(unknown)}; known: "
                  f"{', '.join(status)}", file=sys.stderr)
            return 2
        missing = [b for b in names if status[b] != "available"]
        if missing:
            for b in missing:
                print(f"gradkern check: backend {b!r} is not available: {status[b]}",
                      file=sys.stderr)
            return 2
    else:
        names = [b for b, s in status.items() if s == "available"]
    only = [o.strip() for o in args.only.split(",") if o.strip()] if args.only else None
    if args.only is not None:
        unknown = [o for o in only or [""] if not any(o and o in c.name for c in CHECKS)]
        if unknown:
            raise ValueError(f"--only {','.join(unknown) or repr(args.only)}: matches no "
                             f"check; checks are {', '.join(c.name for c in CHECKS)}")
    if args.json:  # before the run: a whole run must not end in a path it cannot write
        from .cli import writable_file

        writable_file(args.json, "--json")

    from . import torchref

    ok, reason = torchref.available()
    print(f"gradkern check{' --quick' if args.quick else ''}: backends {', '.join(names)}; "
          f"dtypes {', '.join(DTYPES)}; PyTorch: {_torch_version() if ok else reason}")
    for b, s in status.items():
        if s != "available" and b not in names:
            print(f"  (backend {b} not checked: {s})")

    def progress(cell: Cell) -> None:
        if not args.quiet:
            print(f"  {cell.check:<34} {cell.backend:<6} {cell.dtype:<8} {cell.short():<28} "
                  f"{cell.seconds:6.2f}s", flush=True)

    t0 = time.perf_counter()
    cells = run(names, quick=args.quick, only=only, progress=progress)
    seconds = time.perf_counter() - t0
    print()
    print(matrix(cells))
    print()
    print("cell: ok|FAIL  worst error/bound  (worst absolute error); n/a: does not apply to "
          "the dtype")
    failed = [c for c in cells if c.failed]
    for c in failed:
        print(f"FAILED {c.check} [{c.backend} {c.dtype}]: ratio {c.ratio}, {c.where}")
    print(f"{len(cells)} cells, {len(failed)} failed, {seconds:.1f} s")
    if args.json:
        rep = report(cells, args.quick, names, seconds)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(_finite(rep), f, indent=1, default=_json_default, allow_nan=False)
            f.write("\n")
        print(f"wrote {args.json}")
    return 1 if failed else 0


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _finite(o):
    """Strict JSON: a non-finite float becomes the string 'inf' or 'nan'."""
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_finite(v) for v in o]
    return o


if __name__ == "__main__":
    from gradkern.cli import run_guarded

    sys.exit(run_guarded(main))
