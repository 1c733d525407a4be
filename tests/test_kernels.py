"""Every kernel of every backend against the float64 NumPy reference (docs/design.md §3).

The cases and their bounds are gradkern.verify.kernels' — the ones `gradkern check` runs —
in their full (not --quick) form, one test per backend × dtype × kernel × case. The
hypothesis property tests (0/1/odd sizes, layouts) are in test_properties.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradkern as gk
from gradkern.verify import Context, Worst, c_tiles
from gradkern.verify.kernels import KERNELS, case_id

CTX = Context(quick=False, tiles=c_tiles())
CASES = [pytest.param(check, dtype, case, id=f"{check.name}-{dtype}-{case_id(case)}")
         for check in KERNELS for dtype in ("float32", "float64")
         for case in check.cases(CTX, dtype)]


@pytest.mark.parametrize("check,dtype,case", CASES)
def test_kernel_matches_reference(backend, check, dtype, case):
    w = Worst()
    with np.errstate(all="ignore"):
        check.run_case(CTX, gk.backends.get(backend), dtype, case, w)
    assert w.compared > 0
    assert w.ratio <= 1.0, f"{backend} {check.name} {dtype}: {w.n_bad} beyond bound; {w.where}"


def test_every_kernel_has_cases_around_the_tiles():
    """The shapes probe the C GEMM's tile edges as the library reports them."""
    names = {k.name for k in KERNELS}
    assert {"matmul_forward", "matmul_backward", "activation_forward", "activation_backward",
            "loss_forward_backward", "batchnorm_forward", "batchnorm_backward",
            "batchnorm_update_running", "dropout", "sgd_update", "adam_update",
            "rmsprop_update", "adagrad_update"} == names
    if "c" in gk.backends.available():
        c = gk.backends.get("c")
        for dtype in ("float32", "float64"):
            mr, nr, kc = c.tile(dtype)
            assert CTX.tile(dtype) == (mr, nr, kc)
            assert (mr + 1, kc - 1, nr - 1) in KERNELS[0].cases(CTX, dtype)


def test_dropout_masks_differ_by_seed(backend):
    be = gk.backends.get(backend)
    inp = np.ones((8, 64))
    m1, m2, out = np.empty_like(inp), np.empty_like(inp), np.empty_like(inp)
    be.dropout_forward(out, m1, inp, 0.5, 1)
    be.dropout_forward(out, m2, inp, 0.5, 2)
    assert (m1 != m2).any()


def test_a_kernel_off_by_a_little_fails_its_case():
    """The shared cases catch a matmul wrong by 1e-5 relative, in both dtypes."""
    ref = gk.backends.get("numpy")

    class Off:
        def matmul_forward(self, out, *args):
            ref.matmul_forward(out, *args)
            out *= out.dtype.type(1 + 1e-5)

    for dtype in ("float32", "float64"):
        w = Worst()
        KERNELS[0].run_case(CTX, Off(), dtype, (97, 101, 103), w)
        assert w.ratio > 1.0 and w.n_bad > 0
