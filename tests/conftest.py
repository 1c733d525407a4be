"""Shared fixtures: every test that takes `backend` runs on every backend that loads here.

Tolerances are gradkern.verify.tolerance's (docs/design.md §3): a result agrees with the float64
reference when |x − ref| ≤ k·u·S elementwise, u the dtype's machine epsilon and S the
error scale of the computation (|A|·|B| for a matmul, the magnitudes involved for
elementwise steps).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import gradkern as gk
from gradkern.verify import tolerance

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


# the tolerance policy is gradkern.verify.tolerance's (docs/design.md §3): one for the tests,
# `gradkern check` and the benchmarks
assert_close = tolerance.assert_close
eps_of = tolerance.eps_of
