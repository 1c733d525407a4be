"""Central finite differences (float64; eps 1e-6, atol 1e-5, rtol 1e-3) of every layer
kind, activation and loss, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import gradkern as gk
from gradkern.check import away_from_kinks, fd_data, finite_differences
from gradkern.plan import BATCHNORM, LOSSES

# the machinery `gradkern check` runs: central differences of the loss for parameters
# drawn at random; a parameter passes when |analytic − numeric| ≤ 1e-5 + 1e-3·|numeric|
_data = fd_data
_away_from_kinks = away_from_kinks


def finite_difference_check(model, X, y, n_checks=60):
    worst = finite_differences(model, X, y, n_checks=n_checks)
    assert worst.compared == min(n_checks, model.count_params())
    assert worst.ratio <= 1.0, worst.where


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
