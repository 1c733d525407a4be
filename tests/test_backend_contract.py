"""Every backend is an engine behind the one checked adapter, `backends.base.Backend`
(issue 11, item 3), as thinc checks its Ops subclasses:

- a registered backend class defines no public method the contract does not declare
  (the kernels, the drivers, and the documented optional extras of `base.EXTRAS`);
- it overrides none of the checked public methods: validation lives once, in the base;
- every engine implements every computation method (`_<kernel>`) itself;
- the adapter refuses bad arguments the same way on every backend, before the engine runs;
- the C backend keeps its per-model structs itself, nothing on the user's objects.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import pickle

import numpy as np
import pytest

import gradkern as gk
from gradkern.backends import KNOWN, base
from gradkern.backends.base import DRIVERS, EXTRAS, KERNELS, Backend
from gradkern.optim import SGD, Adam


def _classes():
    """(name, class) of every known backend whose module imports here."""
    out = []
    for name in KNOWN:
        try:
            module = importlib.import_module(f"gradkern.backends.{name}_backend")
        except ImportError:
            continue
        out.append((name, module.BACKEND))
    return out


CLASSES = _classes()
IDS = [n for n, _ in CLASSES]


def _public_methods(cls) -> set[str]:
    """Public callables a class defines itself or inherits from anything but Backend."""
    names = set()
    for klass in cls.__mro__:
        if klass in (Backend, object):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            if inspect.isfunction(value) or isinstance(value, (staticmethod, classmethod)):
                names.add(name)
    return names


def test_the_contract_lists_are_consistent():
    assert set(KERNELS).isdisjoint(DRIVERS) and set(EXTRAS).isdisjoint(KERNELS + DRIVERS)
    for name in KERNELS + DRIVERS:
        assert inspect.isfunction(getattr(Backend, name)), name
        assert inspect.isfunction(getattr(Backend, "_" + name)), "_" + name
        assert getattr(Backend, name).__doc__, f"Backend.{name} has no docstring"
    for name in EXTRAS:  # optional: declared by name and meaning, implemented by engines
        assert not hasattr(Backend, name), name
    assert len(CLASSES) >= 1 and "numpy" in IDS


@pytest.mark.parametrize("name,cls", CLASSES, ids=IDS)
def test_no_public_method_outside_the_contract(name, cls):
    extra = _public_methods(cls) - set(KERNELS) - set(DRIVERS) - set(EXTRAS)
    assert not extra, (f"{cls.__name__} defines public methods the contract lacks: "
                       f"{sorted(extra)}; declare them in backends/base.py (EXTRAS, or the "
                       "contract itself) or make them private")


@pytest.mark.parametrize("name,cls", CLASSES, ids=IDS)
def test_checked_methods_are_not_overridden(name, cls):
    """The public kernel and driver methods are the adapter's: an engine re-validating (or
    skipping validation) would override them."""
    overridden = [m for m in KERNELS + DRIVERS if getattr(cls, m) is not getattr(Backend, m)]
    assert not overridden, f"{cls.__name__} overrides the checked {overridden}"


@pytest.mark.parametrize("name,cls", CLASSES, ids=IDS)
def test_every_engine_implements_every_computation_method(name, cls):
    missing = [f"_{m}" for m in KERNELS if getattr(cls, f"_{m}") is getattr(Backend, f"_{m}")]
    assert not missing, f"{cls.__name__} does not implement {missing}"
    for m in KERNELS:  # the same arguments as the public method
        public = list(inspect.signature(getattr(Backend, m)).parameters)
        engine = list(inspect.signature(getattr(cls, f"_{m}")).parameters)
        assert engine == public, (m, engine, public)
    for m in DRIVERS:  # a fused driver keeps the Python driver's signature
        ours = list(inspect.signature(getattr(cls, f"_{m}")).parameters)
        assert ours == list(inspect.signature(getattr(Backend, f"_{m}")).parameters), m


def test_the_detector_sees_an_undeclared_method():
    class Rogue(gk.backends.get("numpy").__class__):
        def warp_speed(self):
            return 9

        def matmul_forward(self, out, inp, weight, bias):  # re-validating: not allowed
            return super().matmul_forward(out, inp, weight, bias)

    assert _public_methods(Rogue) - set(KERNELS) - set(DRIVERS) - set(EXTRAS) == {"warp_speed"}
    assert Rogue.matmul_forward is not Backend.matmul_forward


# ------------------------------------------------------------------ one validation for all
def _setup(backend, loss="cross_entropy", dtype="float32"):
    model = gk.Sequential([gk.Dense(6), gk.ReLU(), gk.Dense(3)], input_size=4, loss=loss,
                          dtype=dtype, backend=backend, seed=0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 4)).astype(dtype)
    y = (np.arange(10) % 3 if loss == "cross_entropy"
         else rng.standard_normal((10, 3)).astype(dtype))
    return gk.backends.get(backend), model.plan, model.bufs, X, y


def _bad_calls(be, plan, bufs, X, y):
    """(label, call, exception, match) of arguments every backend refuses alike."""
    f = plan.dtype.type
    out = np.full((4, 3), np.nan, plan.dtype)
    seeds, losses, gnorms = np.zeros(3, np.uint64), np.zeros(3), np.zeros(3)
    opt = SGD(lr=0.1)
    return [
        ("x width", lambda: be.train_step(plan, bufs, X[:, :3], y, opt), ValueError, "shape"),
        ("x rows", lambda: be.gradients(plan, bufs, X[:0], y[:0]), ValueError, "no rows"),
        ("x complex", lambda: be.forward(plan, bufs, X.astype(complex)), TypeError, "complex"),
        ("labels rows", lambda: be.train_step(plan, bufs, X, y[:-1], opt), ValueError,
         "labels"),
        ("float labels", lambda: be.gradients(plan, bufs, X, y + 0.5), TypeError, "integers"),
        ("perm range", lambda: be.train_epoch(plan, bufs, X, y, np.array([0, 1, 99]), 2, opt,
                                              seeds, 0.0, losses, gnorms),
         ValueError, "permutation.*|out of range"),
        ("negative perm", lambda: be.train_epoch(plan, bufs, X, y, np.array([0, -1]), 2, opt,
                                                 seeds, 0.0, losses, gnorms),
         ValueError, "out of range"),
        ("late bad label", lambda: be.train_epoch(plan, bufs, X, np.r_[y[:-1], 3],
                                                  np.arange(10), 4, opt, seeds, 0.0, losses,
                                                  gnorms), ValueError, "label out of range"),
        ("short losses", lambda: be.train_epoch(plan, bufs, X, y, np.arange(10), 4, opt,
                                                seeds, 0.0, losses[:2], gnorms),
         ValueError, "losses"),
        ("int losses", lambda: be.train_epoch(plan, bufs, X, y, np.arange(10), 4, opt, seeds,
                                              0.0, np.zeros(3, np.int64), gnorms),
         TypeError, "losses"),
        ("batch_size", lambda: be.train_epoch(plan, bufs, X, y, np.arange(10), 0, opt, seeds,
                                              0.0, losses, gnorms), ValueError, "batch_size"),
        ("empty perm", lambda: be.train_epoch(plan, bufs, X, y, np.arange(0), 4, opt, seeds,
                                              0.0, losses, gnorms), ValueError, "non-empty"),
        ("other optimizer state", lambda: be.train_step(plan, bufs, X, y, _bound_elsewhere()),
         TypeError, "optimizer state"),
        ("other plan", lambda: be.forward(_other_plan(), bufs, X), ValueError, "another plan"),
        ("out dtype", lambda: be.activation_forward(1, out, np.ones((4, 3))), TypeError,
         "expected"),
        ("out read-only", lambda: be.activation_forward(1, _readonly(out), out), ValueError,
         "read-only"),
        ("out fortran", lambda: be.matmul_forward(np.asfortranarray(np.ones((3, 4), f)),
                                                  np.ones((3, 2), f), np.ones((2, 4), f),
                                                  np.ones(4, f)), ValueError, "contiguous"),
        ("act code", lambda: be.activation_forward(99, out, out.copy()), ValueError,
         "unknown activation code"),
        ("loss code", lambda: be.loss_forward_backward(7, out, out.copy(), out.copy()),
         ValueError, "unknown loss code"),
        ("hyper", lambda: be.sgd_update(np.zeros(4, f), np.zeros(4, f), None, np.zeros(3), 1),
         ValueError, "hyper"),
        ("step 0", lambda: be.sgd_update(np.zeros(4, f), np.zeros(4, f), None, opt.hyper, 0),
         ValueError, "count from 1"),
        ("momentum buffer", lambda: be.sgd_update(np.zeros(4, f), np.zeros(4, f), None,
                                                  SGD(lr=0.1, momentum=0.9).hyper, 1),
         ValueError, "momentum buffer"),
        ("step label", lambda: be.train_step(plan, bufs, X, np.r_[y[:-1], -1], opt),
         ValueError, "label"),
        ("kernel label", lambda: be.loss_forward_backward(1, out, out.copy(), np.array(
            [0, 1, 2, 3])), ValueError, "label"),
    ]


def _bound_elsewhere():
    o = Adam()
    o.bind(7, np.dtype(np.float32))
    return o


def _other_plan():
    return gk.Sequential([gk.Dense(5), gk.Dense(3)], input_size=4, loss="cross_entropy",
                         dtype="float32", backend="numpy", seed=0).plan


def _readonly(a):
    r = a.copy()
    r.flags.writeable = False
    return r


def test_bad_arguments_are_refused_alike_on_every_backend_untouched(backend):
    be, plan, bufs, X, y = _setup(backend)
    be.gradients(plan, bufs, X, y)  # the engine's structures exist
    before = [a.copy() for a in (bufs.params, bufs.grads, bufs.state)]
    for label, call, exc, match in _bad_calls(be, plan, bufs, X, y):
        with pytest.raises(exc, match=match):
            call()
        for a, b in zip(before, (bufs.params, bufs.grads, bufs.state), strict=True):
            assert np.array_equal(a, b), f"{backend}: {label} changed the model"


def test_inputs_of_other_layouts_and_int_dtypes_are_converted_alike(backend):
    be, plan, bufs, X, y = _setup(backend, loss="mse", dtype="float64")
    ref = be.gradients(plan, bufs, X, y, seed=1)
    g = bufs.grads.copy()
    Xi = np.round(X * 4)
    ref_i = be.gradients(plan, bufs, Xi, y, seed=1)
    assert be.gradients(plan, bufs, np.asfortranarray(Xi).astype(np.int64), y[:, ::-1][:, ::-1],
                        seed=1) == ref_i
    assert be.gradients(plan, bufs, X.tolist(), y, seed=1) == ref
    assert np.array_equal(bufs.grads, g)


# ------------------------------------------------------------------ no state on user objects
def test_c_backend_keeps_its_structs_itself():
    if "c" not in gk.backends.available():
        pytest.skip("C backend not available")
    be, plan, bufs, X, y = _setup("c")
    opt = Adam(lr=1e-2)
    keys_b, keys_o = set(vars(bufs)), set(vars(opt)) | {"buf1", "buf2", "_owner"}
    be.train_step(plan, bufs, X, y, opt)
    shared = bufs.shared(4)
    be.forward(plan, shared, X[:4])
    assert set(vars(bufs)) == keys_b and set(vars(opt)) <= keys_o  # nothing of the backend
    st = be._models.get(bufs)
    assert st is not None and st.matches(plan, bufs) and be._optims.get(opt) is not None
    assert be._models.get(shared) is not st  # a per-thread workspace has its own struct
    # pickled and restored, the copy trains identically and gets structs of its own
    b2, o2 = pickle.loads(pickle.dumps((bufs, opt)))
    assert be._models.get(b2) is None and be._optims.get(o2) is None
    assert be.train_step(b2.plan, b2, X, y, o2) == be.train_step(plan, bufs, X, y, opt)
    assert np.array_equal(b2.params, bufs.params)
    # collected with their objects
    n_models, n_optims = len(be._models), len(be._optims)
    del b2, o2, shared
    gc.collect()
    assert len(be._models) == n_models - 2 and len(be._optims) == n_optims - 1


def test_the_base_module_exports_what_others_import():
    assert callable(base.layer_seed) and callable(base.require_elements)
