"""Every kernel of every backend against the float64 NumPy reference (DESIGN.md §5)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradkern as gk
from conftest import assert_close
from gradkern.backends.numpy_backend import NumpyBackend
from gradkern.optim import SGD, Adam, AdamW
from gradkern.plan import ACTIVATIONS, LOSSES

REF = NumpyBackend()
# shapes (B, C, OC): ones, odd sizes, primes, and sizes around common register tiles
MATMUL_SHAPES = [(1, 1, 1), (1, 7, 3), (3, 1, 5), (5, 3, 1), (7, 13, 17), (16, 16, 16),
                 (15, 17, 31), (33, 65, 47), (64, 48, 96), (97, 101, 103), (129, 31, 257)]


def _rand(rng, shape, dtype, scale=1.0):
    return np.ascontiguousarray((rng.standard_normal(shape) * scale).astype(dtype))


def _f64(*arrays):
    return [a.astype(np.float64) for a in arrays]


@pytest.mark.parametrize("shape", MATMUL_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matmul_forward(backend, dtype, shape, rng):
    B, C, OC = shape
    be = gk.backends.get(backend)
    inp, w, b = _rand(rng, (B, C), dtype), _rand(rng, (C, OC), dtype), _rand(rng, OC, dtype)
    out = np.full((B, OC), np.nan, dtype=dtype)
    be.matmul_forward(out, inp, w, b)
    i64, w64, b64 = _f64(inp, w, b)
    assert_close(out, i64 @ w64 + b64, np.abs(i64) @ np.abs(w64) + np.abs(b64), 16,
                 f"{backend} matmul_forward {shape}")


@pytest.mark.parametrize("shape", MATMUL_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matmul_backward(backend, dtype, shape, rng):
    B, C, OC = shape
    be = gk.backends.get(backend)
    inp, w, dout = _rand(rng, (B, C), dtype), _rand(rng, (C, OC), dtype), _rand(rng, (B, OC), dtype)
    dinp = np.full((B, C), np.nan, dtype=dtype)
    dw = np.full((C, OC), np.nan, dtype=dtype)
    db = np.full(OC, np.nan, dtype=dtype)
    be.matmul_backward(dinp, dw, db, dout, inp, w)
    i64, w64, d64 = _f64(inp, w, dout)
    assert_close(dinp, d64 @ w64.T, np.abs(d64) @ np.abs(w64).T, 16, f"{backend} dinp")
    assert_close(dw, i64.T @ d64, np.abs(i64).T @ np.abs(d64), 16, f"{backend} dweight")
    assert_close(db, d64.sum(0), np.abs(d64).sum(0), 16, f"{backend} dbias")
    # dinp may be skipped (first layer): the weight gradients must not change
    dw2, db2 = np.zeros_like(dw), np.zeros_like(db)
    be.matmul_backward(None, dw2, db2, dout, inp, w)
    np.testing.assert_array_equal(dw2, dw)
    np.testing.assert_array_equal(db2, db)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activation_forward_backward(backend, dtype, act, rng):
    be = gk.backends.get(backend)
    code = ACTIVATIONS.index(act)
    inp = _rand(rng, (37, 29), dtype, scale=3.0)
    inp[0, :6] = np.array([0.0, -0.0, 1e-3, -1e-3, 40.0, -40.0], dtype=dtype)
    out = np.full_like(inp, np.nan)
    be.activation_forward(code, out, inp)
    ref = np.empty(inp.shape)
    REF.activation_forward(code, ref, inp.astype(np.float64))
    assert_close(out, ref, np.abs(ref) + np.abs(inp.astype(np.float64)) * (act == "gelu"), 8,
                 f"{backend} {act} forward")
    dout = _rand(rng, inp.shape, dtype)
    dinp = np.full_like(inp, np.nan)
    be.activation_backward(code, dinp, dout, inp, out)
    dref = np.empty(inp.shape)
    REF.activation_backward(code, dref, dout.astype(np.float64), inp.astype(np.float64), ref)
    scale = np.abs(dout.astype(np.float64)) * (1.0 + np.abs(inp.astype(np.float64)))
    assert_close(dinp, dref, scale, 16, f"{backend} {act} backward")


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("rows,k", [(1, 1), (1, 3), (7, 1), (33, 10), (64, 5)])
def test_loss_forward_backward(backend, dtype, loss, rows, k, rng):
    be = gk.backends.get(backend)
    code = LOSSES.index(loss)
    pred = _rand(rng, (rows, k), dtype, scale=4.0)
    if loss == "cross_entropy":
        target = rng.integers(0, k, size=rows).astype(np.int64)
        tref = target
    elif loss == "binary_cross_entropy":
        target = rng.uniform(0, 1, size=(rows, k)).astype(dtype)
        tref = target.astype(np.float64)
    else:
        target = _rand(rng, (rows, k), dtype)
        tref = target.astype(np.float64)
    dpred = np.full_like(pred, np.nan)
    value = be.loss_forward_backward(code, dpred, pred, target)
    dref = np.empty(pred.shape)
    vref = REF.loss_forward_backward(code, dref, pred.astype(np.float64), tref)
    assert isinstance(value, float)
    per_row = np.abs(pred.astype(np.float64)).max() + 1.0
    assert math.isclose(value, vref, rel_tol=64 * np.finfo(dtype).eps,
                        abs_tol=64 * np.finfo(dtype).eps * per_row)
    assert_close(dpred, dref, np.abs(dref) + 1.0 / pred.size, 16, f"{backend} {loss} dpred")


@pytest.mark.parametrize("rows,n", [(2, 1), (3, 7), (64, 33), (129, 16)])
def test_batchnorm_kernels(backend, dtype, rows, n, rng):
    be = gk.backends.get(backend)
    inp = _rand(rng, (rows, n), dtype, scale=2.0) + dtype.type(0.5)
    gamma, beta = _rand(rng, n, dtype), _rand(rng, n, dtype)
    rmean, rvar = _rand(rng, n, dtype), (np.abs(_rand(rng, n, dtype)) + 0.5).astype(dtype)
    mean, var, rstd = (np.full(n, np.nan, dtype=dtype) for _ in range(3))
    out = np.full_like(inp, np.nan)
    be.batchnorm_forward(out, mean, var, rstd, inp, gamma, beta, rmean, rvar, True, 1e-5)
    i64, g64, b64 = _f64(inp, gamma, beta)
    m_ref, v_ref, s_ref = (np.empty(n) for _ in range(3))
    o_ref = np.empty(inp.shape)
    REF.batchnorm_forward(o_ref, m_ref, v_ref, s_ref, i64, g64, b64, None, None, True, 1e-5)
    scale_x = np.abs(i64).max(axis=0)
    assert_close(mean, m_ref, scale_x, 16, "mean")
    assert_close(var, v_ref, v_ref + scale_x**2, 64, "var")
    assert_close(rstd, s_ref, s_ref, 64, "rstd")
    # rstd can be large for near-constant columns: scale by what enters each output
    xhat_scale = (np.abs(i64) + scale_x) * s_ref
    assert_close(out, o_ref, np.abs(g64) * xhat_scale + np.abs(b64), 64, "bn forward")

    dout = _rand(rng, inp.shape, dtype)
    dinp = np.full_like(inp, np.nan)
    dgamma, dbeta = np.full(n, np.nan, dtype), np.full(n, np.nan, dtype)
    be.batchnorm_backward(dinp, dgamma, dbeta, dout, inp, mean, rstd, gamma)
    d64 = dout.astype(np.float64)
    di_ref, dg_ref, db_ref = np.empty(inp.shape), np.empty(n), np.empty(n)
    REF.batchnorm_backward(di_ref, dg_ref, db_ref, d64, i64, m_ref, s_ref, g64)
    assert_close(dbeta, db_ref, np.abs(d64).sum(0), 16, "dbeta")
    assert_close(dgamma, dg_ref, (np.abs(d64) * xhat_scale).sum(0), 64, "dgamma")
    s_dx = s_ref * np.abs(g64) * (np.abs(d64) + (np.abs(d64) * (1 + xhat_scale * xhat_scale)).sum(0)
                                   / rows * (1 + xhat_scale))
    assert_close(dinp, di_ref, s_dx, 64, "bn dinp")

    # inference mode uses the running statistics and leaves the cache alone
    before = mean.copy()
    be.batchnorm_forward(out, mean, var, rstd, inp, gamma, beta, rmean, rvar, False, 1e-5)
    np.testing.assert_array_equal(mean, before)
    o_inf = (i64 - rmean.astype(np.float64)) / np.sqrt(rvar.astype(np.float64) + 1e-5) * g64 + b64
    assert_close(out, o_inf, np.abs(g64) * (np.abs(i64) + np.abs(rmean)) / np.sqrt(rvar + 1e-5)
                 + np.abs(b64), 16, "bn inference")

    # running statistics: momentum 0.1, unbiased variance
    rm, rv = rmean.copy(), rvar.copy()
    be.batchnorm_update_running(rm, rv, mean, var, rows, 0.1)
    unbiased = v_ref * rows / (rows - 1)
    assert_close(rm, 0.9 * rmean + 0.1 * m_ref, np.abs(rmean) + scale_x, 16, "running_mean")
    assert_close(rv, 0.9 * rvar + 0.1 * unbiased, rvar + unbiased + scale_x**2, 64, "running_var")


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_dropout_kernels(backend, dtype, p, rng):
    """Masks come from a counter hash of the seed: every backend draws the same mask."""
    be = gk.backends.get(backend)
    inp = _rand(rng, (41, 23), dtype)
    mask, out = np.full_like(inp, np.nan), np.full_like(inp, np.nan)
    be.dropout_forward(out, mask, inp, p, 987654321)
    rmask, rout = np.empty_like(inp), np.empty_like(inp)
    REF.dropout_forward(rout, rmask, inp, p, 987654321)
    np.testing.assert_array_equal(mask, rmask)
    np.testing.assert_array_equal(out, rout)
    kept = mask != 0
    np.testing.assert_allclose(mask[kept], 1 / (1 - p), rtol=np.finfo(dtype).eps)
    assert abs(kept.mean() - (1 - p)) < 0.06
    dout = _rand(rng, inp.shape, dtype)
    dinp = np.full_like(inp, np.nan)
    be.dropout_backward(dinp, dout, mask)
    np.testing.assert_array_equal(dinp, dout * mask)


def test_dropout_masks_differ_by_seed(backend):
    be = gk.backends.get(backend)
    inp = np.ones((8, 64))
    m1, m2, out = np.empty_like(inp), np.empty_like(inp), np.empty_like(inp)
    be.dropout_forward(out, m1, inp, 0.5, 1)
    be.dropout_forward(out, m2, inp, 0.5, 2)
    assert (m1 != m2).any()


OPTIMIZERS = [
    ("sgd", lambda: SGD(lr=0.1)),
    ("sgd_momentum_wd", lambda: SGD(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
    ("sgd_nesterov", lambda: SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("adam", lambda: Adam(lr=1e-2)),
    ("adam_wd", lambda: Adam(lr=1e-2, weight_decay=1e-2)),
    ("adamw", lambda: AdamW(lr=1e-2, weight_decay=0.1)),
]


@pytest.mark.parametrize("name,make", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_optimizer_updates(backend, dtype, name, make, rng):
    """Five updates on flat buffers against the float64 reference."""
    be = gk.backends.get(backend)
    n = 1000
    opt, ref_opt = make(), make()
    opt.bind(n, dtype)
    ref_opt.bind(n, np.float64)
    params = _rand(rng, n, dtype)
    ref_params = params.astype(np.float64)
    for step in range(1, 6):
        grads = _rand(rng, n, dtype)
        if opt.kind == 0:
            be.sgd_update(params, grads, opt.buf1, opt.hyper, step)
            REF.sgd_update(ref_params, grads.astype(np.float64), ref_opt.buf1, ref_opt.hyper, step)
        else:
            be.adam_update(params, grads, opt.buf1, opt.buf2, opt.hyper, step)
            REF.adam_update(ref_params, grads.astype(np.float64), ref_opt.buf1, ref_opt.buf2,
                            ref_opt.hyper, step)
    # each update moves p by at most ~lr·(|g| + momentum terms): scale by |p| + 10·lr·step
    assert_close(params, ref_params, np.abs(ref_params) + 10 * opt.lr * 5, 64, f"{backend} {name}")
