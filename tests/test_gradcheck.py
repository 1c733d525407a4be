"""Central finite differences (float64; eps 1e-6, atol 1e-5, rtol 1e-3) of every layer
kind, activation and loss, on every backend.

The models and bounds are gradkern.verify.finite_diff's — the fd/* rows of `gradkern
check` — in their full form (80 parameters per model, the deep leaky-ReLU stack too).
"""

from __future__ import annotations

import numpy as np
import pytest

import gradkern as gk
from gradkern.verify import Context, NotApplicable, Worst
from gradkern.verify.finite_diff import FD_CHECKS, away_from_kinks, fd_data, finite_differences
from gradkern.verify.tolerance import FD_RTOL

CTX = Context(quick=False)


@pytest.mark.parametrize("name", list(FD_CHECKS))
def test_finite_differences(backend, name):
    w = FD_CHECKS[name](CTX, backend, "float64")
    assert w.compared >= 80
    assert w.ratio <= 1.0, w.where


def test_finite_differences_are_float64_only(backend):
    with pytest.raises(NotApplicable, match="float64 only"):
        FD_CHECKS["dense"](CTX, backend, "float32")


def test_kinks_are_detected():
    """A ReLU whose input sits on the kink is refused; the same model away from it is not."""
    model = gk.Sequential([gk.Activation("relu"), gk.Dense(2)], input_size=3, loss="mse",
                          dtype="float64", backend="numpy", seed=0)
    X = np.array([[1.0, -2.0, 0.5], [0.3, 1e-4, -1.0]])
    assert not away_from_kinks(model, X)
    X[1, 1] = 0.2
    assert away_from_kinks(model, X)


def test_a_wrong_gradient_fails(backend):
    """A gradient off by 1.5·rtol relative is caught: the check is not vacuous."""
    rng = np.random.default_rng(0)
    model = gk.Sequential([gk.Dense(4), gk.Activation("tanh"), gk.Dense(2)], input_size=3,
                          loss="mse", dtype="float64", backend=backend, seed=0)
    X, y = fd_data(rng, 7, 3, 2, "mse")
    be = model.backend

    class Off:
        def __getattr__(self, name):
            return getattr(be, name)

        def gradients(self, plan, bufs, X, y, seed):
            loss = be.gradients(plan, bufs, X, y, seed)
            bufs.grads *= 1 + 1.5 * FD_RTOL
            return loss

    model.backend = Off()
    try:
        w = finite_differences(model, X, y, n_checks=30, worst=Worst())
    finally:
        model.backend = be
    assert w.ratio > 1.0
