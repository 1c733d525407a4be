"""Shared fixtures: every test that takes `backend` runs on every backend that loads here.

Tolerances follow DESIGN.md §5: a result agrees with the float64 reference when
|x − ref| ≤ k·u·S elementwise, u the dtype's machine epsilon and S the error scale of
the computation (|A|·|B| for a matmul, the magnitudes involved for elementwise steps).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import gradkern as gk

BACKENDS = gk.backends.available()
DTYPES = ["float32", "float64"]


def pytest_report_header(config):
    lines = [f"gradkern backends: {gk.backends.status()}"]
    lines.append(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')!r}")
    return lines


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The name of a backend that loads here."""
    return request.param


@pytest.fixture(params=DTYPES)
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def eps_of(dtype) -> float:
    return float(np.finfo(np.dtype(dtype)).eps)


def assert_close(x, ref, scale, k: float = 16.0, what: str = ""):
    """|x − ref| ≤ k·u·scale elementwise, u the epsilon of x's dtype."""
    x = np.asarray(x)
    ref = np.asarray(ref, dtype=np.float64)
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), ref.shape)
    assert x.shape == ref.shape, f"{what}: shape {x.shape} != {ref.shape}"
    bound = k * eps_of(x.dtype) * scale + np.finfo(np.float64).tiny
    err = np.abs(x.astype(np.float64) - ref)
    bad = err > bound
    if bad.any():
        i = np.unravel_index(np.argmax(err / bound), err.shape)
        raise AssertionError(
            f"{what}: {bad.sum()} of {err.size} elements beyond {k}·u·S; worst at {i}: "
            f"got {x[i]!r}, ref {ref[i]!r}, |err| {err[i]:.3g} > bound {bound[i]:.3g}")
