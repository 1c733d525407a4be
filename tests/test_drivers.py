"""The plan drivers (forward, gradients, train_step, train_epoch) of every backend
against the NumPy reference driver, in both dtypes."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradkern as gk
from gradkern.contract import Layer
from gradkern.optim import SGD, Adam, AdamW
from gradkern.verify.tolerance import DRIVER_RTOL, assert_group_close, group_scale

# (name, layers, n_in, loss)
PLANS = [
    ("relu_ce", [gk.Dense(32), gk.ReLU(), gk.Dense(16), gk.ReLU(), gk.Dense(5)], 12,
     "cross_entropy"),
    ("tanh_mse", [gk.Dense(17), gk.Tanh(), gk.Dense(3)], 7, "mse"),
    ("gelu_bce", [gk.Dense(24), gk.GELU(), gk.Dense(24), gk.Sigmoid(), gk.Dense(2)], 9,
     "binary_cross_entropy"),
    ("bn_dropout", [gk.Dense(33), gk.BatchNorm(), gk.LeakyReLU(), gk.Dropout(0.25), gk.Dense(20),
                    gk.BatchNorm(), gk.ReLU(), gk.Dense(4)], 10, "cross_entropy"),
    ("linear", [gk.Dense(1)], 3, "mse"),
]
TOL = DRIVER_RTOL  # max |x − ref| ≤ TOL·max |ref| over a tensor group (verify.tolerance)


def _targets(rng, rows, model):
    if model.loss == "cross_entropy":
        return rng.integers(0, model.n_outputs, size=rows)
    if model.loss == "binary_cross_entropy":
        return rng.integers(0, 2, size=(rows, model.n_outputs)).astype(float)
    return rng.standard_normal((rows, model.n_outputs))


def _pair(backend, plan_spec, dtype, seed=0):
    _, layers, n_in, loss = plan_spec
    mk = lambda b: gk.Sequential(layers, input_size=n_in, loss=loss, dtype=dtype,  # noqa: E731
                                 backend=b, seed=seed)
    return mk(backend), mk("numpy")


def _agree(x, ref, dtype, what, scale=None):
    """max |x − ref| ≤ TOL·scale; scale defaults to max |ref|. Pass the scale of the whole
    gradient for tensors that are mathematically zero (a bias before batch normalization)."""
    assert_group_close(x, ref, TOL[np.dtype(dtype)], scale, what)


@pytest.mark.parametrize("spec", PLANS, ids=[p[0] for p in PLANS])
def test_forward_and_gradients_match_reference(backend, dtype, spec):
    rng = np.random.default_rng(0)
    model, ref = _pair(backend, spec, dtype)
    X = rng.standard_normal((29, model.input_size))
    y = _targets(rng, 29, model)
    _agree(model.predict_raw(X), ref.predict_raw(X), dtype, "predict_raw")
    loss, grads = model.gradients(X, y)
    rloss, rgrads = ref.gradients(X, y)
    assert math.isclose(loss, rloss, rel_tol=TOL[np.dtype(dtype)] * 10, abs_tol=1e-12)
    scale = group_scale(g for pair in rgrads for g in pair)
    for (dw, db), (rw, rb) in zip(grads, rgrads, strict=True):
        _agree(dw, rw, dtype, "dW", scale)
        _agree(db, rb, dtype, "db", scale)


OPTS = [lambda: SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
        lambda: Adam(lr=3e-3, weight_decay=1e-3), lambda: AdamW(lr=3e-3)]


@pytest.mark.parametrize("spec", PLANS, ids=[p[0] for p in PLANS])
@pytest.mark.parametrize("make_opt", OPTS, ids=["sgd_nesterov", "adam", "adamw"])
def test_fit_matches_reference(backend, dtype, spec, make_opt):
    """Three epochs of minibatches (the fused epoch driver where a backend has one)."""
    rng = np.random.default_rng(1)
    model, ref = _pair(backend, spec, dtype)
    X = rng.standard_normal((70, model.input_size))
    y = _targets(rng, 70, model)
    h_opt = make_opt()
    h = model.fit(X, y, epochs=3, batch_size=16, optimizer=h_opt, progress=False,
                  clip_norm=5.0)
    hr = ref.fit(X, y, epochs=3, batch_size=16, optimizer=make_opt(), progress=False,
                 clip_norm=5.0)
    np.testing.assert_allclose(h["loss"], hr["loss"], rtol=TOL[np.dtype(dtype)] * 50)
    # The bias of a Dense layer feeding a BatchNorm has a gradient that is zero up to
    # rounding (the normalization subtracts it again); Adam scales that noise up to full
    # steps, so under Adam it (and the running mean it shifts) differs between backends
    # without changing any output. Skip those under Adam; SGD keeps the noise small.
    layers = model.plan.layers
    dead = set()
    if isinstance(h_opt, Adam):
        for i in range(len(layers) - 1):
            if layers[i].kind == Layer.DENSE and layers[i + 1].kind == Layer.BATCHNORM:
                dead |= {f"{i}.bias", f"{i + 1}.running_mean"}
    ref_params = ref.named_parameters()
    scale = group_scale(ref_params.values())
    for k, v in model.named_parameters().items():
        if k not in dead:
            _agree(v, ref_params[k], dtype, k, scale)


def test_train_step_matches_epoch_driver(backend, dtype):
    """fit's one-call epoch gives what the same minibatches give one train_step at a time."""
    spec = PLANS[3]
    rng = np.random.default_rng(2)
    a, _ = _pair(backend, spec, dtype)
    b, _ = _pair(backend, spec, dtype)
    X = rng.standard_normal((48, a.input_size))
    y = _targets(rng, 48, a)
    opt_a, opt_b = Adam(lr=1e-2), Adam(lr=1e-2)
    a.fit(X, y, epochs=1, batch_size=16, optimizer=opt_a, shuffle=False, progress=False)
    # replicate fit's generator use: the permutation is skipped without shuffle, seeds drawn
    seeds = b._rng.integers(0, 2**64, size=3, dtype=np.uint64)
    opt_b.bind(b.plan.n_params, b.dtype)
    b.bufs.ensure_capacity(16)
    Xc, yc = b._check_Xy(X, y)
    for k in range(3):
        b.backend.train_step(b.plan, b.bufs, Xc[16 * k : 16 * k + 16], yc[16 * k : 16 * k + 16],
                             opt_b, int(seeds[k]), 0.0)
    for (w, bb), (rw, rb) in zip(a.get_weights(), b.get_weights(), strict=True):
        _agree(w, rw, dtype, "W")
        _agree(bb, rb, dtype, "b")
    assert int(opt_a.step[0]) == int(opt_b.step[0]) == 3


def test_same_seed_is_bit_identical(backend, dtype):
    rng = np.random.default_rng(3)
    spec = PLANS[3]
    runs = []
    for _ in range(2):
        model, _ = _pair(backend, spec, dtype, seed=42)
        X = rng.standard_normal((40, model.input_size)) if not runs else X  # noqa: F821
        y = _targets(np.random.default_rng(9), 40, model)
        model.fit(X, y, epochs=2, batch_size=8, optimizer=Adam(lr=1e-2), progress=False)
        runs.append(np.concatenate([p.ravel() for p in model.named_parameters().values()]))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_rejected_step_changes_nothing(backend, dtype):
    """A non-finite loss stops the step before the update: weights, running statistics,
    optimizer state and the data-order generator stay as they were."""
    spec = PLANS[3]
    model, _ = _pair(backend, spec, dtype)
    rng = np.random.default_rng(4)
    X = rng.standard_normal((16, model.input_size))
    y = _targets(rng, 16, model)
    opt = SGD(lr=0.1, momentum=0.9)
    model.train_step(X, y, opt)  # one good step: optimizer state is non-trivial
    W_last = model.named_parameters()["7.weight"]
    W_last[0, 0] = np.finfo(dtype).max  # logits overflow to inf -> loss is not finite
    before = {k: v.copy() for k, v in model.named_parameters().items()}
    opt_before = opt.snapshot()
    rng_state = model._rng.bit_generator.state
    with pytest.raises(gk.TrainingDiverged):
        model.train_step(X, y, opt)
    assert model._rng.bit_generator.state == rng_state  # the step's seed is given back
    with pytest.raises(gk.TrainingDiverged):
        model.fit(X, y, epochs=2, batch_size=8, optimizer=opt, progress=False)
    for k, v in model.named_parameters().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    np.testing.assert_array_equal(opt.buf1, opt_before[0])
    assert int(opt.step[0]) == int(opt_before[2][0]) == 1
    del rng_state


def test_divergence_restore_option(backend):
    model, _ = _pair(backend, PLANS[1], "float32")
    rng = np.random.default_rng(5)
    X = rng.standard_normal((32, model.input_size)) * 100
    y = rng.standard_normal((32, 3)) * 1e18
    with pytest.warns(RuntimeWarning, match="diverged"):
        h = model.fit(X, y, epochs=50, batch_size=8, optimizer=SGD(lr=10.0), progress=False,
                      on_divergence="restore")
    assert h.diverged is not None
    assert all(np.isfinite(v).all() for v in model.named_parameters().values())


def test_clip_norm_bounds_the_update(backend):
    """With plain SGD the update is lr·g, so a clipped step moves the weights by at most lr·c."""
    model, _ = _pair(backend, PLANS[1], "float64")
    rng = np.random.default_rng(6)
    X = rng.standard_normal((16, model.input_size))
    y = rng.standard_normal((16, 3)) * 50
    before = np.concatenate([w.ravel() for pair in model.get_weights() for w in pair])
    model.fit(X, y, epochs=1, batch_size=16, optimizer=SGD(lr=0.1), clip_norm=0.5,
              progress=False)
    after = np.concatenate([w.ravel() for pair in model.get_weights() for w in pair])
    moved = np.linalg.norm(after - before)
    assert moved <= 0.1 * 0.5 * (1 + 1e-9)
    assert moved > 0.1 * 0.5 * 0.99  # the raw gradient was far larger, so it was clipped
