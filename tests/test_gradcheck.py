"""Central finite differences (float64; eps 1e-6, atol 1e-5, rtol 1e-3) of every layer
kind, activation and loss, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import gradkern as gk
from gradkern.plan import ACTIVATION, BATCHNORM, LOSSES

EPS, ATOL, RTOL = 1e-6, 1e-5, 1e-3
KINK = 1e-3  # ReLU-family inputs are kept this far from 0


def _data(rng, rows, n_in, n_out, loss):
    X = rng.standard_normal((rows, n_in))
    if loss == "cross_entropy":
        y = rng.integers(0, n_out, size=rows)
    elif loss == "binary_cross_entropy":
        y = rng.uniform(0, 1, size=(rows, n_out))
    else:
        y = rng.standard_normal((rows, n_out))
    return X, y


def _away_from_kinks(model, X) -> bool:
    """True when every input of a ReLU-type activation is at least KINK from 0."""
    be, plan, bufs = model.backend, model.plan, model.bufs
    bufs.ensure_capacity(X.shape[0])
    be.forward(plan, bufs, X, training=True, seed=7)
    for i, L in enumerate(plan.layers):
        if L.kind == ACTIVATION and L.activation in (1, 2) and i > 0:
            if np.abs(bufs.out(i - 1, X.shape[0])).min() < KINK:
                return False
    return True


def finite_difference_check(model, X, y, seed=7, n_checks=60, rng=None):
    """Analytic gradient of the flat parameter buffer against central differences."""
    be, plan, bufs = model.backend, model.plan, model.bufs
    Xc, yc = model._check_Xy(X, y)
    bufs.ensure_capacity(Xc.shape[0])
    be.gradients(plan, bufs, Xc, yc, seed)
    analytic = bufs.grads.copy()
    live = np.concatenate([np.arange(o, o + v.size) for o, v in _param_ranges(model)])
    rng = rng or np.random.default_rng(0)
    picks = rng.choice(live, size=min(n_checks, live.size), replace=False)
    worst = 0.0
    for j in picks:
        keep = bufs.params[j]
        bufs.params[j] = keep + EPS
        up = be.gradients(plan, bufs, Xc, yc, seed)
        bufs.params[j] = keep - EPS
        down = be.gradients(plan, bufs, Xc, yc, seed)
        bufs.params[j] = keep
        numeric = (up - down) / (2 * EPS)
        err = abs(numeric - analytic[j])
        assert err <= ATOL + RTOL * abs(numeric), (
            f"param {j}: analytic {analytic[j]:.8g}, numeric {numeric:.8g}")
        worst = max(worst, err)
    return worst


def _param_ranges(model):
    """(offset, view) of every trainable tensor in the flat buffer."""
    base = model.bufs.params.ctypes.data
    out = []
    for a, b in model.plan.param_views(model.bufs.params):
        for v in (a, b):
            out.append(((v.ctypes.data - base) // v.itemsize, v))
    return out


def _model(backend, layers, n_in, loss, seed=0):
    return gk.Sequential(layers, input_size=n_in, loss=loss, dtype="float64", backend=backend,
                         seed=seed)


@pytest.mark.parametrize("act", gk.ACTIVATIONS)
def test_gradcheck_activations(backend, act):
    rng = np.random.default_rng(1)
    for seed in range(20):
        model = _model(backend, [gk.Dense(9), gk.Activation(act), gk.Dense(7),
                                 gk.Activation(act), gk.Dense(3)], 5, "mse", seed)
        X, y = _data(rng, 8, 5, 3, "mse")
        if _away_from_kinks(model, model._check_X(X)):
            break
    else:
        pytest.fail("no draw kept ReLU inputs away from the kink")
    finite_difference_check(model, X, y)


@pytest.mark.parametrize("loss", LOSSES)
def test_gradcheck_losses(backend, loss):
    rng = np.random.default_rng(2)
    model = _model(backend, [gk.Dense(6), gk.Activation("tanh"), gk.Dense(4)], 3, loss)
    X, y = _data(rng, 11, 3, 4, loss)
    finite_difference_check(model, X, y)


def test_gradcheck_batchnorm(backend):
    rng = np.random.default_rng(3)
    model = _model(backend, [gk.Dense(8), gk.BatchNorm(), gk.Activation("tanh"), gk.Dense(6),
                             gk.BatchNorm(), gk.Activation("sigmoid"), gk.Dense(3)], 4,
                   "cross_entropy")
    # non-trivial gamma and beta (they start at 1 and 0)
    for name, v in model.named_parameters().items():
        layer = model.plan.layers[int(name.split(".")[0])]
        if layer.kind == BATCHNORM and name.endswith("weight"):
            v[...] = rng.uniform(0.5, 1.5, v.shape)
        elif layer.kind == BATCHNORM and name.endswith("bias"):
            v[...] = rng.normal(0, 0.3, v.shape)
    X, y = _data(rng, 10, 4, 3, "cross_entropy")
    finite_difference_check(model, X, y, n_checks=80)


def test_gradcheck_dropout(backend):
    """With the seed fixed the mask is fixed, so dropout is differentiable like a product."""
    rng = np.random.default_rng(4)
    model = _model(backend, [gk.Dense(16), gk.Activation("tanh"), gk.Dropout(0.3), gk.Dense(2)],
                   3, "binary_cross_entropy")
    X, y = _data(rng, 9, 3, 2, "binary_cross_entropy")
    finite_difference_check(model, X, y)


def test_gradcheck_first_layer_activation_and_deep(backend):
    """An activation as first layer (nothing below it) and a deeper leaky-ReLU stack."""
    rng = np.random.default_rng(5)
    for seed in range(20):
        layers = [gk.Activation("sigmoid"), gk.Dense(7)]
        for _ in range(4):
            layers += [gk.Dense(7), gk.Activation("leaky_relu")]
        model = _model(backend, layers + [gk.Dense(2)], 4, "mse", seed)
        X, y = _data(rng, 6, 4, 2, "mse")
        if _away_from_kinks(model, model._check_X(X)):
            break
    finite_difference_check(model, X, y)
