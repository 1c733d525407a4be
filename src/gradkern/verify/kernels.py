"""Every kernel of the contract against the float64 NumPy reference, case by case.

A `KernelCheck` is a list of cases (shapes, and the activation, loss or optimizer they
run) and a function that checks one case into a `Worst`. `gradkern check` runs all the
cases of a kernel as one cell; tests/test_kernels.py runs each case as its own test.
Shapes: 1, odd sizes, primes, and one short of / at / one past the C GEMM's register
tile (MR, NR) and depth block (KC), read from the loaded library. Bounds: k·u·S
(`tolerance`), S the natural error scale of each output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..contract import Act, Loss, names
from .common import REF, Context, f64, nan, rand
from .tolerance import K_ACT, K_MATMUL, K_STATS, Worst, eps_of

BN_EPS = 1e-5


@dataclass(frozen=True)
class KernelCheck:
    name: str
    cases: Callable  # (ctx, dtype) -> list of cases
    run_case: Callable  # (ctx, backend object, dtype, case, Worst) -> None

    def __call__(self, ctx: Context, be, dtype: str) -> Worst:
        w = Worst()
        for case in self.cases(ctx, dtype):
            self.run_case(ctx, be, dtype, case, w)
        return w


def case_id(case) -> str:
    """A short test id: 'relu-13x17', '97x101x103', 'adamw-n1000'."""
    parts = []
    for c in case if isinstance(case, tuple) else (case,):
        if isinstance(c, tuple):
            parts.append("x".join(map(str, c)))
        elif hasattr(c, "name") and not isinstance(c, str):
            parts.append(c.name.lower())
        else:
            parts.append(str(c))
    return "-".join(parts)


# ============================================================================ shapes
def matmul_shapes(ctx: Context, dtype: str) -> list[tuple[int, int, int]]:
    """(B, C, OC): ones, odd sizes, primes, and one past / one short of each tile edge."""
    mr, nr, kc = ctx.tile(dtype)
    shapes = [(1, 1, 1), (1, 7, 3), (3, 1, 5), (5, 3, 1), (7, 13, 17),
              (mr - 1, kc + 1, nr + 1), (mr + 1, kc - 1, nr - 1), (mr, kc, nr),
              (2 * mr + 1, 2 * nr - 1, 3), (97, 101, 103)]
    if not ctx.quick:
        rng = ctx.rng("matmul shapes", dtype)
        shapes += [(2 * mr - 1, 2 * kc + 1, 2 * nr + 1), (257, kc + 1, nr - 1),
                   (1, kc + 1, 1), (129, 31, 257),
                   (16, 16, 16), (15, 17, 31), (33, 65, 47), (64, 48, 96)]
        shapes += [tuple(int(v) for v in rng.integers(1, 200, 3)) for _ in range(6)]
    return list(dict.fromkeys(shapes))


def elementwise_shapes(ctx: Context, dtype: str) -> list[tuple[int, int]]:
    """(B, N): ones, odd sizes, and widths around the vector length of the C kernels."""
    _, nr, _ = ctx.tile(dtype)
    shapes = [(1, 1), (1, 7), (7, 1), (13, 17), (3, nr - 1), (5, nr + 1), (33, 2 * nr + 1)]
    if not ctx.quick:
        rng = ctx.rng("elementwise shapes", dtype)
        shapes += [(64, 33), (129, 16), (2, 4 * nr - 1), (37, 29), (41, 23)]
        shapes += [tuple(int(v) for v in rng.integers(1, 80, 2)) for _ in range(4)]
    return list(dict.fromkeys(shapes))


def loss_shapes(ctx: Context) -> list[tuple[int, int]]:
    shapes = [(1, 1), (1, 3), (7, 1), (33, 10), (64, 5)]
    return shapes if ctx.quick else shapes + [(129, 17), (2, 33), (100, 1)]


def bn_shapes(ctx: Context) -> list[tuple[int, int]]:
    shapes = [(2, 1), (3, 7), (64, 33), (129, 16)]
    return shapes if ctx.quick else shapes + [(2, 31), (17, 1), (250, 9)]


# ============================================================================ matmul
def _matmul_forward(ctx, be, dtype, shape, w: Worst) -> None:
    B, C, OC = shape
    u = eps_of(dtype)
    rng = ctx.rng("matmul_forward", dtype, shape)
    inp, W, b = rand(rng, (B, C), dtype), rand(rng, (C, OC), dtype), rand(rng, OC, dtype)
    out = nan((B, OC), dtype)
    be.matmul_forward(out, inp, W, b)
    ref = np.empty((B, OC))
    REF.matmul_forward(ref, f64(inp), f64(W), f64(b))
    S = np.abs(f64(inp)) @ np.abs(f64(W)) + np.abs(f64(b))
    w.add(out, ref, K_MATMUL * u * S, f"out {B}x{C}x{OC}")


def _matmul_backward(ctx, be, dtype, shape, w: Worst) -> None:
    B, C, OC = shape
    u = eps_of(dtype)
    rng = ctx.rng("matmul_backward", dtype, shape)
    inp, W = rand(rng, (B, C), dtype), rand(rng, (C, OC), dtype)
    dout = rand(rng, (B, OC), dtype)
    dinp, dW, db = nan((B, C), dtype), nan((C, OC), dtype), nan(OC, dtype)
    be.matmul_backward(dinp, dW, db, dout, inp, W)
    r_dinp, r_dW, r_db = np.empty((B, C)), np.empty((C, OC)), np.empty(OC)
    REF.matmul_backward(r_dinp, r_dW, r_db, f64(dout), f64(inp), f64(W))
    a_i, a_w, a_d = np.abs(f64(inp)), np.abs(f64(W)), np.abs(f64(dout))
    tag = f"{B}x{C}x{OC}"
    w.add(dinp, r_dinp, K_MATMUL * u * (a_d @ a_w.T), f"dinp {tag}")
    w.add(dW, r_dW, K_MATMUL * u * (a_i.T @ a_d), f"dweight {tag}")
    w.add(db, r_db, K_MATMUL * u * a_d.sum(0), f"dbias {tag}")
    # the first layer skips dinp: the weight gradients must be the same bits
    dW2, db2 = nan((C, OC), dtype), nan(OC, dtype)
    be.matmul_backward(None, dW2, db2, dout, inp, W)
    w.require(np.array_equal(dW2, dW) and np.array_equal(db2, db),
              f"dinp=None changes dweight {tag}")


# ============================================================================ activations
def _activation_inputs(rng, shape, dtype):
    inp = rand(rng, shape, dtype, scale=3.0)
    special = np.array([0.0, -0.0, 1e-3, -1e-3, 40.0, -40.0, 1e-30, -1e-30], dtype=dtype)
    flat = inp.reshape(-1)
    n = min(flat.size, special.size)
    flat[:n] = special[:n]
    return inp


def _activation_cases(ctx, dtype):
    return [(act, shape) for act in Act for shape in elementwise_shapes(ctx, dtype)]


def _activation_forward(ctx, be, dtype, case, w: Worst) -> None:
    act, shape = case
    u = eps_of(dtype)
    rng = ctx.rng("activation_forward", act.name, dtype, shape)
    inp = _activation_inputs(rng, shape, dtype)
    out = nan(shape, dtype)
    be.activation_forward(int(act), out, inp)
    ref = np.empty(shape)
    REF.activation_forward(int(act), ref, f64(inp))
    # a few ulps of the result; gelu's x·Φ(x) also of x (cancellation for x < 0)
    S = np.abs(ref) + np.abs(f64(inp)) * (act == Act.GELU)
    w.add(out, ref, K_ACT * u * S, f"{act.name.lower()} {shape}")


def _activation_backward(ctx, be, dtype, case, w: Worst) -> None:
    act, shape = case
    u = eps_of(dtype)
    rng = ctx.rng("activation_backward", act.name, dtype, shape)
    inp = _activation_inputs(rng, shape, dtype)
    out = np.empty(shape, dtype=dtype)
    REF.activation_forward(int(act), out, inp)  # the same `out` for backend and reference
    dout = rand(rng, shape, dtype)
    dinp = nan(shape, dtype)
    be.activation_backward(int(act), dinp, dout, inp, out)
    ref = np.empty(shape)
    REF.activation_backward(int(act), ref, f64(dout), f64(inp), f64(out))
    S = np.abs(f64(dout)) * (1.0 + np.abs(f64(inp)))
    w.add(dinp, ref, K_MATMUL * u * S, f"{act.name.lower()} {shape}")


# ============================================================================ losses
HUBER_DELTA = 0.8  # pred ~ 4·N(0,1): both of huber's branches are taken
def _loss_cases(ctx, dtype):
    # each loss unweighted, and with per-row sample weights (one of them 0)
    return [(loss, shape, weighted) for loss in Loss for shape in loss_shapes(ctx)
            for weighted in (False, True)]


def _loss(ctx, be, dtype, case, w: Worst) -> None:
    loss, (rows, k), weighted = case
    name = names(Loss)[loss] + (" weighted" if weighted else "")
    u = eps_of(dtype)
    rng = ctx.rng("loss", name, dtype, rows, k)
    pred = rand(rng, (rows, k), dtype, scale=4.0)
    if loss == Loss.CROSS_ENTROPY:
        target = rng.integers(0, k, size=rows).astype(np.int64)
        tref = target
    elif loss == Loss.BINARY_CROSS_ENTROPY:
        target = rng.uniform(0, 1, size=(rows, k)).astype(dtype)
        tref = f64(target)
    else:
        target = rand(rng, (rows, k), dtype)
        tref = f64(target)
    weight = wref = None
    if weighted:  # weights in [0, 2], the first row's 0; the ratios w_i / Σw enter dpred
        weight = rng.uniform(0, 2, rows).astype(dtype)
        weight[0] = 0
        if not weight.any():
            weight[:] = 1
        wref = f64(weight)
    dpred = nan((rows, k), dtype)
    value = be.loss_forward_backward(int(loss), dpred, pred, target, weight, HUBER_DELTA)
    dref = np.empty((rows, k))
    vref = REF.loss_forward_backward(int(loss), dref, f64(pred), tref, wref, HUBER_DELTA)
    tag = f"{name} {rows}x{k}"
    w.require(isinstance(value, float), f"{tag}: returned {type(value).__name__}")
    # the value: relative to itself, or to the largest logit (softmax's shift)
    scale = max(abs(vref), np.abs(f64(pred)).max() + 1.0)
    w.add_scalar(value, vref, K_STATS * u * scale, f"{tag} loss")
    # S: the magnitudes of the terms each dpred subtracts, and never more than
    # |dpred| + 1/(B·K)
    if loss == Loss.CROSS_ENTROPY:  # (softmax − onehot) / B
        S = np.abs(dref) + 2.0 / rows
    elif loss in (Loss.MSE, Loss.HUBER, Loss.L1):  # 2 (pred − target) / (B·K), clip(..)/(B·K)
        S = 2.0 * (np.abs(f64(pred)) + np.abs(tref)) / pred.size
    else:  # (σ(z) − target) / (B·K)
        S = (1.0 + np.abs(tref)) / pred.size
    if weighted:  # each row scaled by B·w_i/Σw, rounded once more
        S = S * (rows * wref / wref.sum())[:, None] + np.abs(dref)
    else:
        S = np.minimum(S, np.abs(dref) + 1.0 / pred.size)
    w.add(dpred, dref, K_MATMUL * u * S, f"{tag} dpred")


# ============================================================================ batchnorm
def _bn_case(rng, rows, n, dtype):
    inp = rand(rng, (rows, n), dtype, scale=2.0) + np.dtype(dtype).type(0.5)
    gamma, beta = rand(rng, n, dtype), rand(rng, n, dtype)
    rmean = rand(rng, n, dtype)
    rvar = (np.abs(rand(rng, n, dtype)) + 0.5).astype(dtype)
    return inp, gamma, beta, rmean, rvar


def _bn_cases(ctx, dtype):
    return bn_shapes(ctx)


def _batchnorm_forward(ctx, be, dtype, shape, w: Worst) -> None:
    rows, n = shape
    u = eps_of(dtype)
    rng = ctx.rng("batchnorm_forward", dtype, shape)
    inp, gamma, beta, rmean, rvar = _bn_case(rng, rows, n, dtype)
    mean, var, rstd = nan(n, dtype), nan(n, dtype), nan(n, dtype)
    out = nan((rows, n), dtype)
    be.batchnorm_forward(out, mean, var, rstd, inp, gamma, beta, rmean, rvar, True, BN_EPS)
    i64, g64, b64 = f64(inp), f64(gamma), f64(beta)
    m_ref, v_ref, s_ref, o_ref = np.empty(n), np.empty(n), np.empty(n), np.empty((rows, n))
    REF.batchnorm_forward(o_ref, m_ref, v_ref, s_ref, i64, g64, b64, None, None, True, BN_EPS)
    sx = np.abs(i64).max(axis=0)
    tag = f"{rows}x{n}"
    w.add(mean, m_ref, K_MATMUL * u * sx, f"mean {tag}")
    w.add(var, v_ref, K_STATS * u * (v_ref + sx**2), f"var {tag}")
    w.add(rstd, s_ref, K_STATS * u * s_ref, f"rstd {tag}")
    # rstd can be large for near-constant columns: scale by what enters each output
    xhat_scale = (np.abs(i64) + sx) * s_ref
    w.add(out, o_ref, K_STATS * u * (np.abs(g64) * xhat_scale + np.abs(b64)), f"train out {tag}")
    # inference: running statistics; the batch cache stays as it was
    before = (mean.copy(), var.copy(), rstd.copy())
    be.batchnorm_forward(out, mean, var, rstd, inp, gamma, beta, rmean, rvar, False, BN_EPS)
    w.require(all(np.array_equal(a, b) for a, b in zip(before, (mean, var, rstd), strict=True)),
              f"inference wrote the cache {tag}")
    o_inf = np.empty((rows, n))
    REF.batchnorm_forward(o_inf, None, None, None, i64, g64, b64, f64(rmean), f64(rvar),
                          False, BN_EPS)
    S = np.abs(g64) * (np.abs(i64) + np.abs(f64(rmean))) / np.sqrt(f64(rvar) + BN_EPS)
    w.add(out, o_inf, K_MATMUL * u * (S + np.abs(b64)), f"inference out {tag}")


def _batchnorm_backward(ctx, be, dtype, shape, w: Worst) -> None:
    rows, n = shape
    u = eps_of(dtype)
    rng = ctx.rng("batchnorm_backward", dtype, shape)
    inp, gamma, _, _, _ = _bn_case(rng, rows, n, dtype)
    # the batch statistics as the reference computes them, rounded to dtype
    m_ref, v_ref, s_ref = np.empty(n), np.empty(n), np.empty(n)
    REF.batchnorm_forward(np.empty((rows, n)), m_ref, v_ref, s_ref, f64(inp), f64(gamma),
                          np.zeros(n), None, None, True, BN_EPS)
    mean, rstd = m_ref.astype(dtype), s_ref.astype(dtype)
    dout = rand(rng, (rows, n), dtype)
    dinp, dgamma, dbeta = nan((rows, n), dtype), nan(n, dtype), nan(n, dtype)
    be.batchnorm_backward(dinp, dgamma, dbeta, dout, inp, mean, rstd, gamma)
    i64, d64, g64 = f64(inp), f64(dout), f64(gamma)
    di, dg, db = np.empty((rows, n)), np.empty(n), np.empty(n)
    REF.batchnorm_backward(di, dg, db, d64, i64, f64(mean), f64(rstd), g64)
    sx = np.abs(i64).max(axis=0)
    xs = (np.abs(i64) + sx) * f64(rstd)  # what enters each xhat
    tag = f"{rows}x{n}"
    w.add(dbeta, db, K_MATMUL * u * np.abs(d64).sum(0), f"dbeta {tag}")
    w.add(dgamma, dg, K_STATS * u * (np.abs(d64) * xs).sum(0), f"dgamma {tag}")
    s_dx = f64(rstd) * np.abs(g64) * (
        np.abs(d64) + (np.abs(d64) * (1 + xs * xs)).sum(0) / rows * (1 + xs))
    w.add(dinp, di, K_STATS * u * s_dx, f"dinp {tag}")
    dg2, db2 = nan(n, dtype), nan(n, dtype)
    be.batchnorm_backward(None, dg2, db2, dout, inp, mean, rstd, gamma)
    w.require(np.array_equal(dg2, dgamma) and np.array_equal(db2, dbeta),
              f"dinp=None changes dgamma {tag}")


def _bn_running_cases(ctx, dtype):
    return bn_shapes(ctx) + [(1, 5)]


def _batchnorm_update_running(ctx, be, dtype, shape, w: Worst) -> None:
    rows, n = shape
    u = eps_of(dtype)
    rng = ctx.rng("batchnorm_update_running", dtype, shape)
    _, _, _, rmean, rvar = _bn_case(rng, rows, n, dtype)
    mean = rand(rng, n, dtype)
    var = (np.abs(rand(rng, n, dtype)) + 0.1).astype(dtype)
    for mom in (0.1, 0.01, 1.0):
        rm, rv = rmean.copy(), rvar.copy()
        be.batchnorm_update_running(rm, rv, mean, var, rows, mom)
        r_rm, r_rv = f64(rmean), f64(rvar)
        REF.batchnorm_update_running(r_rm, r_rv, f64(mean), f64(var), rows, mom)
        unb = rows / (rows - 1) if rows > 1 else 1.0
        tag = f"{rows}x{n} momentum {mom}"
        w.add(rm, r_rm, K_MATMUL * u * (np.abs(f64(rmean)) + np.abs(f64(mean))), f"mean {tag}")
        w.add(rv, r_rv, K_MATMUL * u * (f64(rvar) + unb * f64(var)), f"var {tag}")


# ============================================================================ dropout
DROPOUT_P = (0.0, 0.1, 0.5, 0.9)


def _dropout_cases(ctx, dtype):
    return [(shape, p) for shape in elementwise_shapes(ctx, dtype) for p in DROPOUT_P]


def _dropout(ctx, be, dtype, case, w: Worst) -> None:
    """Masks are a counter hash of the seed: bit-identical to the reference's, and so are
    the products (one rounding each)."""
    shape, p = case
    rng = ctx.rng("dropout", dtype, shape, p)
    seed = int(rng.integers(0, 2**63))
    inp = rand(rng, shape, dtype)
    mask, out = nan(shape, dtype), nan(shape, dtype)
    be.dropout_forward(out, mask, inp, p, seed)
    r_mask, r_out = np.empty(shape, dtype), np.empty(shape, dtype)
    REF.dropout_forward(r_out, r_mask, inp, p, seed)
    tag = f"{shape} p={p}"
    w.require(np.array_equal(mask, r_mask), f"mask differs from the reference's {tag}")
    w.require(np.array_equal(out, r_out), f"out differs from the reference's {tag}")
    kept = r_mask != 0
    scale = 1 / (1 - p)
    w.add(r_mask[kept], np.full(int(kept.sum()), scale), eps_of(dtype) * scale,
          f"kept mask entries are 1/(1-p) {tag}")
    if inp.size >= 900:  # the fraction kept, to within ~4 standard deviations
        w.require(abs(kept.mean() - (1 - p)) < 0.06, f"kept fraction {kept.mean():.3f} {tag}")
    dout = rand(rng, shape, dtype)
    dinp = nan(shape, dtype)
    be.dropout_backward(dinp, dout, mask)
    w.require(np.array_equal(dinp, dout * r_mask), f"dinp is not dout·mask {tag}")


# ============================================================================ optimizers
def _optimizers(family: str) -> dict:
    from ..optim import SGD, Adagrad, Adam, AdamW, RMSprop

    return {
        "sgd": {"plain": lambda: SGD(lr=0.1),
                "momentum+dampening+wd":
                    lambda: SGD(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2),
                "nesterov+wd": lambda: SGD(lr=0.05, momentum=0.9, nesterov=True,
                                           weight_decay=1e-3)},
        "adam": {"adam": lambda: Adam(lr=1e-2),
                 "adam+wd": lambda: Adam(lr=1e-2, weight_decay=1e-2),
                 "adamw": lambda: AdamW(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1),
                 "adamw-default-betas": lambda: AdamW(lr=1e-2, weight_decay=0.1)},
        "rmsprop": {"rmsprop": lambda: RMSprop(lr=1e-2),
                    "centered+momentum+wd": lambda: RMSprop(lr=1e-2, alpha=0.9,
                                                            weight_decay=1e-2, momentum=0.9,
                                                            centered=True),
                    "momentum": lambda: RMSprop(lr=1e-2, momentum=0.5)},
        "adagrad": {"adagrad": lambda: Adagrad(lr=0.1),
                    "lr_decay+wd+init": lambda: Adagrad(lr=0.1, lr_decay=0.05,
                                                        weight_decay=1e-2,
                                                        initial_accumulator_value=0.1)},
    }[family]


OPT_STEPS = 10


def _opt_cases(family):
    def cases(ctx, dtype):
        sizes = [1, 7, 15, 16, 17, 33, 1000] + ([] if ctx.quick else [4097, 65537])
        labels = list(_optimizers(family))
        if ctx.quick and family == "adam":
            labels = labels[:3]
        return [(label, n) for label in labels for n in sizes]

    return cases


def _optimizer(family):
    def run_case(ctx, be, dtype, case, w: Worst) -> None:
        label, n = case
        u = eps_of(dtype)
        make = _optimizers(family)[label]
        rng = ctx.rng(family, label, dtype, n)
        opt, ref_opt = make(), make()
        opt.bind(n, np.dtype(dtype))
        ref_opt.bind(n, np.float64)
        params = rand(rng, n, dtype)
        ref = f64(params)
        for step in range(1, OPT_STEPS + 1):
            grads = rand(rng, n, dtype)
            if family == "sgd":
                be.sgd_update(params, grads, opt.buf1, opt.hyper, step)
                REF.sgd_update(ref, f64(grads), ref_opt.buf1, ref_opt.hyper, step)
            elif family == "rmsprop":  # unused slots are empty: passed as None
                def slots(o):
                    return [b if b.size else None for b in (o.buf1, o.buf2, o.buf3)]
                be.rmsprop_update(params, grads, *slots(opt), opt.hyper, step)
                REF.rmsprop_update(ref, f64(grads), *slots(ref_opt), ref_opt.hyper, step)
            elif family == "adagrad":
                be.adagrad_update(params, grads, opt.buf1, opt.hyper, step)
                REF.adagrad_update(ref, f64(grads), ref_opt.buf1, ref_opt.hyper, step)
            else:
                be.adam_update(params, grads, opt.buf1, opt.buf2, opt.hyper, step)
                REF.adam_update(ref, f64(grads), ref_opt.buf1, ref_opt.buf2, ref_opt.hyper,
                                step)
            # every update moves p by at most ~lr·(|g| + momentum terms), each with a few u
            S = np.abs(ref) + 10 * opt.lr * step
            w.add(params, ref, K_STATS * u * S, f"{label} n={n} after {step} steps")
        w.add(opt.buf1, ref_opt.buf1, K_STATS * u * (np.abs(ref_opt.buf1) + 10 * OPT_STEPS),
              f"{label} n={n} state buf1")

    return run_case


KERNELS: tuple[KernelCheck, ...] = (
    KernelCheck("matmul_forward", matmul_shapes, _matmul_forward),
    KernelCheck("matmul_backward", matmul_shapes, _matmul_backward),
    KernelCheck("activation_forward", _activation_cases, _activation_forward),
    KernelCheck("activation_backward", _activation_cases, _activation_backward),
    KernelCheck("loss_forward_backward", _loss_cases, _loss),
    KernelCheck("batchnorm_forward", _bn_cases, _batchnorm_forward),
    KernelCheck("batchnorm_backward", _bn_cases, _batchnorm_backward),
    KernelCheck("batchnorm_update_running", _bn_running_cases, _batchnorm_update_running),
    KernelCheck("dropout", _dropout_cases, _dropout),
    KernelCheck("sgd_update", _opt_cases("sgd"), _optimizer("sgd")),
    KernelCheck("adam_update", _opt_cases("adam"), _optimizer("adam")),
    KernelCheck("rmsprop_update", _opt_cases("rmsprop"), _optimizer("rmsprop")),
    KernelCheck("adagrad_update", _opt_cases("adagrad"), _optimizer("adagrad")),
)
