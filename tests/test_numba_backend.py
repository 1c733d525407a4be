"""Numba-specific checks: the fused drivers give exactly what the Python plan driver gives
with the same kernels, the optimizers match the NumPy reference bit for bit, the parallel
passes match the serial ones, and the backend reports itself and its absence clearly.

The shared suites (test_kernels.py, test_drivers.py) check numba against the reference
within docs/design.md §3 tolerances; these tests are stricter where exactness is promised.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import gradkern as gk
from gradkern.backends.base import Backend
from gradkern.contract import Layer
from gradkern.optim import SGD, Adam, AdamW
from gradkern.plan import Buffers, LayerSpec, Plan

numba_backend = pytest.importorskip("gradkern.backends.numba_backend")
NB = numba_backend.NumbaBackend()


class _PythonDriver(numba_backend.NumbaBackend):
    """Numba's jitted kernels under base.Backend's Python plan driver (not the fused one)."""

    _forward = Backend._forward
    _gradients = Backend._gradients
    _train_step = Backend._train_step
    _train_epoch = Backend._train_epoch


PY = _PythonDriver()
REF = gk.backends.get("numpy")
DTYPES = [np.float32, np.float64]


def _plan(dtype, loss="cross_entropy", n_in=6, n_out=4) -> Plan:
    """Dense, batchnorm, every activation and dropout in one plan."""
    layers = [
        LayerSpec(Layer.BATCHNORM, n_in, n_in),  # batchnorm first: its dinp is skipped
        LayerSpec(Layer.DENSE, n_in, 16),
        LayerSpec(Layer.BATCHNORM, 16, 16, eps=1e-3, momentum=0.2),
        LayerSpec(Layer.ACTIVATION, 16, 16, 2),  # leaky_relu
        LayerSpec(Layer.DROPOUT, 16, 16, p=0.3),
        LayerSpec(Layer.DENSE, 16, 12),
        LayerSpec(Layer.ACTIVATION, 12, 12, 5),  # gelu
        LayerSpec(Layer.DENSE, 12, 12),
        LayerSpec(Layer.ACTIVATION, 12, 12, 3),  # sigmoid
        LayerSpec(Layer.DROPOUT, 12, 12, p=0.0),
        LayerSpec(Layer.DENSE, 12, 10),
        LayerSpec(Layer.ACTIVATION, 10, 10, 4),  # tanh
        LayerSpec(Layer.DENSE, 10, n_out),
    ]
    return Plan(layers, loss, dtype)


def _setup(dtype, loss="cross_entropy", rows=24, seed=0):
    plan = _plan(dtype, loss)
    rng = np.random.default_rng(seed)
    bufs = Buffers(plan, rows)
    bufs.params[...] = rng.standard_normal(plan.n_params) * 0.5
    bufs.state[...] = np.abs(rng.standard_normal(plan.n_state)) + 0.5
    x = rng.standard_normal((rows, plan.n_in)).astype(dtype)
    if loss == "cross_entropy":
        y = rng.integers(0, plan.n_out, size=rows).astype(np.int64)
    elif loss == "binary_cross_entropy":
        y = rng.integers(0, 2, size=(rows, plan.n_out)).astype(dtype)
    else:
        y = rng.standard_normal((rows, plan.n_out)).astype(dtype)
    return plan, bufs, x, y


def _clone(bufs: Buffers) -> Buffers:
    other = Buffers(bufs.plan, bufs.capacity)
    other.params[...] = bufs.params
    other.state[...] = bufs.state
    return other


def _eq(a, b, what=""):
    np.testing.assert_array_equal(a, b, err_msg=what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "binary_cross_entropy"])
def test_fused_gradients_equal_python_driver(dtype, loss):
    """The jitted forward/gradients walk the plan exactly as Backend's Python driver does."""
    plan, bufs, x, y = _setup(dtype, loss)
    other = _clone(bufs)
    _eq(NB.forward(plan, bufs, x), PY.forward(plan, other, x), "inference forward")
    _eq(NB.forward(plan, bufs, x, training=True, seed=7),
        PY.forward(plan, other, x, training=True, seed=7), "training forward")
    loss_f = NB.gradients(plan, bufs, x, y, seed=11)
    loss_p = PY.gradients(plan, other, x, y, seed=11)
    assert loss_f == loss_p
    _eq(bufs.grads, other.grads, "grads")
    _eq(bufs.cache[: plan.cache_fixed], other.cache[: plan.cache_fixed], "batchnorm cache")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make_opt,clip", [(lambda: SGD(lr=0.1, momentum=0.9, nesterov=True,
                                                          weight_decay=1e-3), 0.0),
                                           (lambda: Adam(lr=1e-2, weight_decay=1e-3), 0.5),
                                           (lambda: AdamW(lr=1e-2), 1e6)],
                         ids=["sgd", "adam_clipped", "adamw"])
def test_fused_train_step_and_epoch_equal_python_driver(dtype, make_opt, clip):
    plan, bufs, x, y = _setup(dtype, rows=20)
    other = _clone(bufs)
    opt_f, opt_p = make_opt(), make_opt()
    for o in (opt_f, opt_p):
        o.bind(plan.n_params, plan.dtype)
    for k in range(3):
        lf = NB.train_step(plan, bufs, x, y, opt_f, seed=k, clip_norm=clip)
        lp = PY.train_step(plan, other, x, y, opt_p, seed=k, clip_norm=clip)
        assert lf == lp
    # an epoch: 20 rows in batches of 8 -> 8, 8, 4
    perm = np.random.default_rng(5).permutation(20).astype(np.int64)
    seeds = np.arange(3, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    out_f, out_p = (np.zeros(3), np.zeros(3)), (np.zeros(3), np.zeros(3))
    assert NB.train_epoch(plan, bufs, x, y, perm, 8, opt_f, seeds, clip, *out_f) == 3
    assert PY.train_epoch(plan, other, x, y, perm, 8, opt_p, seeds, clip, *out_p) == 3
    _eq(out_f[0], out_p[0], "losses")
    _eq(out_f[1], out_p[1], "gnorms")
    _eq(bufs.params, other.params, "params")
    _eq(bufs.state, other.state, "running statistics")
    _eq(opt_f.buf1, opt_p.buf1, "optimizer state")
    assert int(opt_f.step[0]) == int(opt_p.step[0]) == 6


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_step_close_to_numpy_reference(dtype):
    """The whole step against the NumPy backend in float64. SGD, not Adam: Adam turns the
    rounding noise of a mathematically zero gradient (the bias before a batchnorm) into
    steps of size lr, which no two implementations share."""
    plan, bufs, x, y = _setup(dtype, "mse")
    plan64 = _plan(np.float64, "mse")
    ref = Buffers(plan64, x.shape[0])
    for (a, b), (ra, rb) in zip(plan.param_views(bufs.params), plan64.param_views(ref.params),
                                strict=True):
        ra[...], rb[...] = a, b
    ref.state[...] = bufs.state
    opt, opt_ref = SGD(lr=0.1, momentum=0.9), SGD(lr=0.1, momentum=0.9)
    opt.bind(plan.n_params, dtype)
    opt_ref.bind(plan64.n_params, np.float64)
    for k in range(2):
        loss, gnorm = NB.train_step(plan, bufs, x, y, opt, seed=k)
        rloss, rgnorm = REF.train_step(plan64, ref, x.astype(np.float64),
                                       y.astype(np.float64), opt_ref, seed=k)
        tol = 1e-4 if dtype == np.float32 else 1e-12
        assert abs(loss - rloss) <= tol * abs(rloss)
        assert abs(gnorm - rgnorm) <= tol * abs(rgnorm)
    for (a, b), (ra, rb) in zip(plan.param_views(bufs.params), plan64.param_views(ref.params),
                                strict=True):
        np.testing.assert_allclose(a, ra, rtol=0, atol=tol * 10)
        np.testing.assert_allclose(b, rb, rtol=0, atol=tol * 10)
    np.testing.assert_allclose(bufs.state, ref.state, rtol=tol * 10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizers_bit_identical_to_numpy(dtype):
    """Same expression order as the reference, no fastmath: equal to the last bit, on the
    serial and the parallel (prange) path alike."""
    rng = np.random.default_rng(0)
    makers = [lambda: SGD(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2),
              lambda: SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
              lambda: Adam(lr=1e-2, weight_decay=1e-2), lambda: AdamW(lr=1e-2, weight_decay=0.1)]
    n = 3 * numba_backend.CHUNK + 7
    for make in makers:
        for par_min in (1, 1 << 62):  # every pass parallel, or none
            a, b = make(), make()
            a.bind(n, dtype)
            b.bind(n, dtype)
            p = rng.standard_normal(n).astype(dtype)
            q = p.copy()
            for step in range(1, 4):
                g = rng.standard_normal(n).astype(dtype)
                if a.kind == 0:
                    numba_backend._sgd(p, g, a.buf1, a.hyper, step, par_min)
                    REF.sgd_update(q, g, b.buf1, b.hyper, step)
                else:
                    numba_backend._adam(p, g, a.buf1, a.buf2, a.hyper, step, par_min)
                    REF.adam_update(q, g, b.buf1, b.buf2, b.hyper, step)
            _eq(p, q, f"{type(a).__name__} par_min={par_min}")
    # the public kernels (contract signature) too
    a, b = Adam(lr=1e-2), Adam(lr=1e-2)
    a.bind(100, dtype)
    b.bind(100, dtype)
    p = rng.standard_normal(100).astype(dtype)
    q, g = p.copy(), rng.standard_normal(100).astype(dtype)
    NB.adam_update(p, g, a.buf1, a.buf2, a.hyper, 1)
    REF.adam_update(q, g, b.buf1, b.buf2, b.hyper, 1)
    _eq(p, q)


def test_parallel_passes_equal_serial():
    """prange over fixed chunks: the step is bit-identical whatever par_min picks."""
    plan, bufs, x, y = _setup(np.float32)
    other = _clone(bufs)
    be_ser, be_par = numba_backend.NumbaBackend(), numba_backend.NumbaBackend()
    be_ser.par_min, be_par.par_min = 1 << 62, 1
    o1, o2 = Adam(lr=1e-2), Adam(lr=1e-2)
    for k in range(2):
        assert be_ser.train_step(plan, bufs, x, y, o1, k, 0.1) == \
            be_par.train_step(plan, other, x, y, o2, k, 0.1)
    _eq(bufs.params, other.params)
    big = np.random.default_rng(1).standard_normal(3 * numba_backend.CHUNK + 17)
    assert numba_backend._sum_squares(big, 1) == numba_backend._sum_squares(big, 1 << 62)
    assert abs(NB.sum_squares(big) - float(big @ big)) <= 1e-12 * float(big @ big)


def test_repeat_is_bit_identical():
    results = []
    for _ in range(2):
        plan, bufs, x, y = _setup(np.float32, rows=24)
        opt = SGD(lr=0.1, momentum=0.9)
        losses, gnorms = np.zeros(3), np.zeros(3)
        perm = np.arange(24, dtype=np.int64)[::-1].copy()
        NB.train_epoch(plan, bufs, x, y, perm, 8, opt, np.arange(3, dtype=np.uint64), 0.0,
                       losses, gnorms)
        results.append((bufs.params.copy(), losses, gnorms))
    for a, b in zip(results[0], results[1], strict=True):
        _eq(a, b)


def test_rejected_step_changes_nothing():
    plan, bufs, x, y = _setup(np.float64, "mse")
    opt = Adam(lr=1e-2)
    NB.train_step(plan, bufs, x, y, opt)  # non-trivial optimizer state
    before = (bufs.params.copy(), bufs.state.copy(), opt.buf1.copy(), opt.buf2.copy())
    y_bad = y.copy()
    y_bad[3, 1] = np.inf
    loss, gnorm = NB.train_step(plan, bufs, x, y_bad, opt)
    assert not np.isfinite(loss)
    after = (bufs.params, bufs.state, opt.buf1, opt.buf2)
    for a, b in zip(before, after, strict=True):
        _eq(a, b)
    assert int(opt.step[0]) == 1
    # in an epoch: stops at the bad batch and says how many steps were taken
    y_bad2 = y.copy()
    y_bad2[13] = np.nan  # row 13 is in the second batch of 8
    losses, gnorms = np.zeros(3), np.zeros(3)
    done = NB.train_epoch(plan, bufs, x, y_bad2, np.arange(24, dtype=np.int64), 8, opt,
                          np.zeros(3, np.uint64), 0.0, losses, gnorms)
    assert done == 1
    assert np.isfinite(losses[0]) and not np.isfinite(losses[1])
    assert int(opt.step[0]) == 2


def test_bad_inputs_raise_before_running():
    plan, bufs, x, y = _setup(np.float32)
    opt = SGD(lr=0.1)
    with pytest.raises(ValueError, match="label out of range"):
        NB.gradients(plan, bufs, x, np.full(x.shape[0], plan.n_out, dtype=np.int64))
    with pytest.raises(ValueError, match="shape"):
        NB.train_step(plan, bufs, x[:, :-1], y, opt)
    with pytest.raises(ValueError, match="labels"):
        NB.train_step(plan, bufs, x, y[:-1], opt)
    with pytest.raises(ValueError, match="out of range"):
        NB.train_epoch(plan, bufs, x, y, np.array([0, 1, 99], dtype=np.int64), 2, opt,
                       np.zeros(2, np.uint64), 0.0, np.zeros(2), np.zeros(2))
    assert int(opt.step[0]) == 0


def test_kernel_methods_refuse_mismatched_arrays_untouched():
    """The jitted loops index without bounds checks: the methods check first."""
    f = np.float32
    out = np.full((4, 3), np.nan, f)
    cases = [
        lambda: NB.activation_forward(1, out, np.ones((5, 3), f)),
        lambda: NB.activation_forward(1, out, np.ones((4, 3), np.float64)),
        lambda: NB.activation_forward(1, np.asfortranarray(out), np.ones((4, 3), f)),
        lambda: NB.activation_backward(1, out, np.ones((4, 3), f), np.ones((4, 4), f), out),
        lambda: NB.matmul_forward(out, np.ones((4, 2), f), np.ones((3, 3), f), np.ones(3, f)),
        lambda: NB.matmul_backward(out, np.zeros((3, 2), f), np.zeros(2, f),
                                   np.ones((5, 2), f), np.ones((4, 3), f), np.ones((3, 2), f)),
        lambda: NB.dropout_backward(out, np.ones((4, 3), f), np.ones((2, 3), f)),
        lambda: NB.batchnorm_backward(out, np.zeros(3, f), np.zeros(3, f), np.ones((4, 3), f),
                                      np.ones((4, 3), f), np.ones(2, f), np.ones(3, f),
                                      np.ones(3, f)),
        lambda: NB.sgd_update(out.reshape(-1), np.ones(11, f), None, SGD(lr=0.1).hyper, 1),
        lambda: NB.adam_update(out.reshape(-1), np.ones(12, f), np.zeros(12, f),
                               np.zeros(11, f), Adam().hyper, 1),
        lambda: NB.loss_forward_backward(1, out, np.ones((4, 3), f), np.zeros(5, np.int64)),
        lambda: NB.activation_forward(9, out, np.ones((4, 3), f)),
    ]
    for i, call in enumerate(cases):
        with pytest.raises((ValueError, TypeError)):
            call()
        assert np.isnan(out).all(), f"case {i} wrote into out before refusing"


def test_inputs_of_other_dtypes_and_layouts_are_converted():
    plan, bufs, x, y = _setup(np.float32, "mse")
    other = _clone(bufs)
    a = NB.gradients(plan, bufs, x, y)
    xf = np.asfortranarray(x.astype(np.float64))
    b = NB.gradients(plan, other, xf, y.astype(np.float64))
    assert a == b
    _eq(bufs.grads, other.grads)
    # workspace grows for a larger batch instead of overrunning it
    big = np.concatenate([x, x])
    assert NB.forward(plan, bufs, big).shape == (2 * x.shape[0], plan.n_out)


def test_describe_and_threads():
    info = NB.describe()
    for key in ("numba", "threading_layer", "threads", "max_threads", "first_call_seconds"):
        assert key in info
    assert info["threading_layer"] in ("omp", "tbb", "workqueue")
    assert ("warning" in info) == (info["threading_layer"] == "workqueue")
    n0 = info["threads"]
    try:
        assert NB.set_threads(1) == 1
        assert NB.describe()["threads"] == 1
        assert NB.set_threads(10_000) == info["max_threads"]
    finally:
        NB.set_threads(n0)
    NB.train_step(*_setup(np.float32)[:4], SGD(lr=0.1))
    assert NB.describe()["first_call_seconds"]


def test_registered():
    assert gk.backends.get("numba").name == "numba"
    assert numba_backend.BACKEND is numba_backend.NumbaBackend
    assert gk.backends.status()["numba"] == "available"


def test_without_numba_the_package_still_works():
    """numba made unimportable: the backend reports why, numpy trains, nothing else
    in the package imported numba."""
    code = """
import sys
sys.modules['numba'] = None  # import numba -> ImportError
import gradkern as gk
st = gk.backends.status()
assert st['numba'].startswith('ImportError') and "'numba'" in st['numba'], st
assert 'numba' not in gk.backends.available()
import numpy as np
gk.backends.get('numpy')
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    code2 = """
import sys, gradkern, gradkern.backends, gradkern.plan, gradkern.optim
import gradkern.backends.numpy_backend
assert 'numba' not in sys.modules, 'something outside the numba backend imported numba'
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
