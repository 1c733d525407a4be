"""The epoch driver's optional arguments, on every backend and dtype (issue 13 item 1's
plumbing, issue 12 item 3's): `lrs` (a learning rate per step, fused: no Python call per
step in the compiled drivers) and `weights` (per-row sample weights), plus `weight=` of
train_step / gradients. Omitting them changes nothing; bad ones are refused before any
step, leaving the model as it was."""

from __future__ import annotations

import numpy as np
import pytest

import gradkern as gk
from gradkern.contract import Hyper
from gradkern.optim import SGD, Adam

N, BS = 22, 8  # three batches, the last one short
NB = (N + BS - 1) // BS


def _setup(backend, dtype, loss="cross_entropy", dropout=0.0):
    layers = [gk.Dense(6), gk.ReLU()]
    if dropout:
        layers.append(gk.Dropout(dropout))
    layers.append(gk.Dense(3))
    model = gk.Sequential(layers, input_size=5, loss=loss, dtype=dtype, backend=backend,
                          seed=3)
    rng = np.random.default_rng(7)
    X = rng.standard_normal((N, 5)).astype(dtype)
    y = (rng.integers(0, 3, N) if loss == "cross_entropy"
         else rng.standard_normal((N, 3)).astype(dtype))
    return model, X, y, rng.permutation(N)


def _epoch(model, X, y, perm, opt, **kw):
    be = gk.backends.get(model.backend.name)
    losses, gnorms = np.zeros(NB), np.zeros(NB)
    seeds = np.arange(1, NB + 1, dtype=np.uint64)
    done = be.train_epoch(model.plan, model.bufs, X, y, perm, BS, opt, seeds, 0.0, losses,
                          gnorms, **kw)
    return done, losses, gnorms


def _opts():
    return [SGD(lr=0.1, momentum=0.9), Adam(lr=0.01)]


@pytest.mark.parametrize("which", [0, 1], ids=["sgd", "adam"])
def test_constant_lrs_is_the_constant_rate(backend, dtype, which):
    runs = []
    for lrs in (None, "const"):
        model, X, y, perm = _setup(backend, dtype, dropout=0.2)
        opt = _opts()[which]
        hyper = opt.hyper.copy()
        kw = {} if lrs is None else {"lrs": np.full(NB, opt.lr)}
        done, losses, gnorms = _epoch(model, X, y, perm, opt, **kw)
        assert done == NB
        np.testing.assert_array_equal(opt.hyper, hyper)  # the epoch leaves hyper as it was
        runs.append((model.bufs.params.copy(), losses, gnorms, int(opt.step[0])))
    (p0, l0, g0, s0), (p1, l1, g1, s1) = runs
    np.testing.assert_array_equal(p0, p1)  # bit-identical
    np.testing.assert_array_equal(l0, l1)
    np.testing.assert_array_equal(g0, g1)
    assert s0 == s1 == NB


@pytest.mark.parametrize("which", [0, 1], ids=["sgd", "adam"])
def test_varying_lrs_is_steps_with_the_rate_set_by_hand(backend, dtype, which):
    lrs = np.array([0.05, 0.2, 0.0]) if which == 0 else np.array([1e-3, 3e-2, 1e-2])
    model, X, y, perm = _setup(backend, dtype, dropout=0.2)
    opt = _opts()[which]
    lr0 = opt.lr
    done, losses, gnorms = _epoch(model, X, y, perm, opt, lrs=lrs)
    assert done == NB and opt.lr == lr0 and opt.hyper[Hyper.LR] == lr0

    ref, X, y, perm = _setup(backend, dtype, dropout=0.2)
    ropt = _opts()[which]
    be = gk.backends.get(backend)
    for k in range(NB):
        idx = perm[k * BS : (k + 1) * BS]
        ropt.lr = lrs[k]
        loss, gnorm = be.train_step(ref.plan, ref.bufs, X[idx], y[idx], ropt, seed=k + 1)
        assert loss == losses[k] and gnorm == gnorms[k]
    np.testing.assert_array_equal(model.bufs.params, ref.bufs.params)
    np.testing.assert_array_equal(opt.buf1, ropt.buf1)
    assert int(opt.step[0]) == int(ropt.step[0]) == NB


@pytest.mark.parametrize("bad,match", [
    (np.array([0.1, -0.1, 0.1]), "negative"),
    (np.array([0.1, np.nan, 0.1]), "NaN"),
    (np.array([0.1, 0.1, np.inf]), "infinite"),
    (np.array([0.1, 0.1]), "too few"),
])
def test_bad_lrs_refused_before_any_step(backend, bad, match):
    model, X, y, perm = _setup(backend, "float32")
    opt = SGD(lr=0.1, momentum=0.9)
    before = model.bufs.params.copy()
    with pytest.raises(ValueError, match=match):
        _epoch(model, X, y, perm, opt, lrs=bad)
    np.testing.assert_array_equal(model.bufs.params, before)
    assert int(opt.step[0]) == 0


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "binary_cross_entropy"])
def test_epoch_weights_are_the_steps_weights(backend, dtype, loss):
    """The fused epoch gathers each batch's weights exactly as train_step(weight=) takes them."""
    model, X, y, perm = _setup(backend, dtype, loss=loss)
    if loss == "binary_cross_entropy":
        y = (y > 0).astype(dtype)
    w = np.random.default_rng(2).uniform(0.0, 3.0, N).astype(dtype)
    opt = Adam(lr=0.01)
    done, losses, gnorms = _epoch(model, X, y, perm, opt, weights=w)
    assert done == NB

    ref, *_ = _setup(backend, dtype, loss=loss)
    ropt = Adam(lr=0.01)
    be = gk.backends.get(backend)
    for k in range(NB):
        idx = perm[k * BS : (k + 1) * BS]
        loss_k, gnorm_k = be.train_step(ref.plan, ref.bufs, X[idx], y[idx], ropt,
                                        seed=k + 1, weight=w[idx])
        assert loss_k == losses[k] and gnorm_k == gnorms[k]
    np.testing.assert_array_equal(model.bufs.params, ref.bufs.params)


def test_unit_weights_match_unweighted(backend, dtype):
    from gradkern.verify.tolerance import eps_of
    model, X, y, perm = _setup(backend, dtype)
    be = gk.backends.get(backend)
    l0 = be.gradients(model.plan, model.bufs, X, y)
    g0 = model.bufs.grads.copy()
    l1 = be.gradients(model.plan, model.bufs, X, y, weight=np.ones(N, dtype))
    g1 = model.bufs.grads.copy()
    u = eps_of(dtype)
    assert abs(l0 - l1) <= 16 * u * abs(l0)
    np.testing.assert_allclose(g1, g0, rtol=0, atol=16 * u * np.abs(g0).max())


def test_zero_weight_batch_is_a_no_op(backend, dtype):
    """Weights summing to 0: loss 0 and no update (no step counted); the epoch goes on."""
    model, X, y, perm = _setup(backend, dtype)
    be = gk.backends.get(backend)
    opt = SGD(lr=0.1, momentum=0.9, weight_decay=0.1)  # decay would move even a 0 gradient
    before = model.bufs.params.copy()
    loss, gnorm = be.train_step(model.plan, model.bufs, X[:4], y[:4], opt,
                                weight=np.zeros(4, dtype))
    assert loss == 0.0 and gnorm == 0.0
    np.testing.assert_array_equal(model.bufs.params, before)
    assert int(opt.step[0]) == 0
    assert be.gradients(model.plan, model.bufs, X[:4], y[:4], weight=np.zeros(4, dtype)) == 0
    assert not model.bufs.grads.any()

    w = np.ones(N, dtype)
    w[perm[BS : 2 * BS]] = 0  # the second batch weighs nothing
    done, losses, _ = _epoch(model, X, y, perm, opt, weights=w)
    assert done == NB and losses[1] == 0.0 and losses[0] > 0 and losses[2] > 0
    assert int(opt.step[0]) == NB - 1


@pytest.mark.parametrize("bad,match", [
    (lambda w: -w, "negative"),
    (lambda w: np.where(np.arange(w.size) == 3, np.nan, w), "NaN"),
    (lambda w: w[:-1], "shape"),
    (lambda w: np.full(w.size, 1e300), "NaN or inf"),  # inf once it is float32
])
def test_bad_weights_refused_before_any_step(backend, bad, match):
    model, X, y, perm = _setup(backend, "float32")
    be = gk.backends.get(backend)
    opt = SGD(lr=0.1, momentum=0.9)
    before = model.bufs.params.copy()
    w = bad(np.ones(N))
    with pytest.raises(ValueError, match=match):
        _epoch(model, X, y, perm, opt, weights=w)
    with pytest.raises(ValueError, match=match):
        be.train_step(model.plan, model.bufs, X, y, opt, weight=w)
    with pytest.raises(ValueError, match=match):
        be.gradients(model.plan, model.bufs, X, y, weight=w)
    np.testing.assert_array_equal(model.bufs.params, before)
    assert int(opt.step[0]) == 0
