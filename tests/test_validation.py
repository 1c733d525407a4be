"""Bad input (docs/design.md §4): a clear TypeError or ValueError, and the model untouched."""

from __future__ import annotations

import numpy as np
import pytest

import gradkern as gk


def _snapshot(model):
    return {k: v.copy() for k, v in model.named_parameters().items()}


def _assert_untouched(model, snap):
    for k, v in model.named_parameters().items():
        np.testing.assert_array_equal(v, snap[k], err_msg=k)


@pytest.fixture
def clf(backend):
    return gk.MLP([4, 6, 3], loss="cross_entropy", backend=backend, batchnorm=True)


@pytest.fixture
def reg(backend):
    return gk.MLP([4, 6, 1], loss="mse", backend=backend)


GOOD_X = np.arange(40, dtype=np.float64).reshape(10, 4) / 40
GOOD_Y = np.arange(10) % 3

BAD_X = [
    (np.ones((10, 4), dtype=np.float16), TypeError, "float16"),
    (np.ones((10, 4), dtype=np.complex64), TypeError, "complex"),
    (np.ones((10, 4), dtype=bool), TypeError, "bool"),
    (np.array([[object()] * 4] * 10), TypeError, "object"),
    (np.array([["a"] * 4] * 10), TypeError, "numeric"),
    (np.ones(40), ValueError, r"2-D.*\(40,\)"),
    (np.ones((10, 4, 1)), ValueError, r"2-D.*\(10, 4, 1\)"),
    (np.ones((0, 4)), ValueError, "empty"),
    (np.ones((10, 0)), ValueError, "zero features"),
    (np.ones((10, 5)), ValueError, r"\(10, 5\).*\(N, 4\)"),
    (np.where(np.eye(10, 4) > 0, np.nan, 1.0), ValueError, "NaN"),
    (np.where(np.eye(10, 4) > 0, np.inf, 1.0), ValueError, "inf"),
]


@pytest.mark.parametrize("X,exc,match", BAD_X, ids=[m for _, _, m in BAD_X])
def test_bad_X_everywhere(clf, X, exc, match):
    snap = _snapshot(clf)
    opt = gk.optim.SGD(lr=0.1)
    for call in (lambda: clf.fit(X, GOOD_Y, epochs=1, progress=False),
                 lambda: clf.train_step(X, GOOD_Y, opt),
                 lambda: clf.gradients(X, GOOD_Y),
                 lambda: clf.evaluate(X, GOOD_Y),
                 lambda: clf.predict(X),
                 lambda: clf.predict_proba(X)):
        with pytest.raises(exc, match=match):
            call()
    _assert_untouched(clf, snap)
    assert int(opt.step[0]) == 0


def test_int_X_is_converted(clf):
    Xi = (GOOD_X * 40).astype(np.int32)
    np.testing.assert_array_equal(clf.predict(Xi), clf.predict(Xi.astype(np.float64)))


BAD_Y_CLF = [
    (np.arange(9) % 3, ValueError, r"\(9,\).*10 rows"),
    (np.array([0, 1, 2, 3] * 2 + [0, 1]), ValueError, r"\[0, 3\).*3"),
    (np.array([-1] + [0] * 9), ValueError, r"from -1"),
    (np.eye(10, 3), ValueError, "one-hot"),
    (np.full(10, 0.5), ValueError, "integer"),
    (np.ones(10, dtype=bool), TypeError, "bool"),
    (np.full(10, np.nan), ValueError, "NaN"),
]


@pytest.mark.parametrize("y,exc,match", BAD_Y_CLF, ids=[m for _, _, m in BAD_Y_CLF])
def test_bad_labels_are_checked_before_any_kernel(clf, y, exc, match):
    snap = _snapshot(clf)
    with pytest.raises(exc, match=match):
        clf.fit(GOOD_X, y, epochs=1, progress=False)
    with pytest.raises(exc, match=match):
        clf.train_step(GOOD_X, y, gk.optim.Adam())
    with pytest.raises(exc, match=match):
        clf.evaluate(GOOD_X, y)
    _assert_untouched(clf, snap)


def test_regression_target_N_is_reshaped_not_broadcast(reg):
    """(N,) against one output must mean (N, 1), never an (N, N) error matrix."""
    y = np.arange(10, dtype=float)
    loss_1d, g1 = reg.gradients(GOOD_X, y)
    loss_2d, g2 = reg.gradients(GOOD_X, y.reshape(-1, 1))
    assert loss_1d == loss_2d
    pred = reg.predict(GOOD_X).astype(np.float64)
    assert loss_1d == pytest.approx(np.mean((pred - y) ** 2), rel=1e-5)
    for (a, b), (c, d) in zip(g1, g2, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_regression_target_shape_mismatch(backend):
    m = gk.MLP([4, 6, 2], backend=backend)
    with pytest.raises(ValueError, match=r"\(10,\).*2 outputs"):
        m.fit(GOOD_X, np.ones(10), epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"\(10, 3\).*2 outputs"):
        m.gradients(GOOD_X, np.ones((10, 3)))


def test_bce_targets_in_unit_interval(backend):
    m = gk.MLP([4, 3, 1], loss="binary_cross_entropy", backend=backend)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.fit(GOOD_X, np.full(10, 2.0), epochs=1, progress=False)


def test_validation_data_checked_before_training(clf):
    snap = _snapshot(clf)
    with pytest.raises(ValueError, match="X_val"):
        clf.fit(GOOD_X, GOOD_Y, epochs=1, validation_data=(np.ones((3, 5)), [0, 1, 2]),
                progress=False)
    with pytest.raises(ValueError, match="pair"):
        clf.fit(GOOD_X, GOOD_Y, epochs=1, validation_data=GOOD_X, progress=False)
    _assert_untouched(clf, snap)


def test_early_stopping_monitor_checked_before_training(clf, reg):
    for model, stopper, match in (
            (clf, gk.EarlyStopping(monitor="val_loss"), "validation_data"),
            (reg, gk.EarlyStopping(monitor="val_accuracy"), "validation_data"),
    ):
        snap = _snapshot(model)
        with pytest.raises(ValueError, match=match):
            model.fit(GOOD_X, GOOD_Y, epochs=2, early_stopping=stopper, progress=False)
        _assert_untouched(model, snap)
    with pytest.raises(ValueError, match="classification"):
        reg.fit(GOOD_X, GOOD_Y.astype(float), epochs=2, progress=False,
                validation_data=(GOOD_X, GOOD_Y.astype(float)),
                early_stopping=gk.EarlyStopping(monitor="val_accuracy"))


@pytest.mark.parametrize("kwargs,exc", [
    ({"epochs": 0}, ValueError), ({"epochs": 1.5}, TypeError), ({"batch_size": 0}, ValueError),
    ({"optimizer": "adam"}, TypeError), ({"clip_norm": -1.0}, ValueError),
    ({"on_divergence": "ignore"}, ValueError), ({"batch_size": 1}, ValueError),
])
def test_bad_fit_arguments(clf, kwargs, exc):
    snap = _snapshot(clf)
    with pytest.raises(exc):
        clf.fit(GOOD_X, GOOD_Y, progress=False, **kwargs)
    _assert_untouched(clf, snap)


@pytest.mark.parametrize("args,kwargs,exc,match", [
    (([4],), {}, ValueError, "at least"),
    (([4, 0, 2],), {}, ValueError, ">= 1"),
    (([4, 2.5, 2],), {}, TypeError, "integer"),
    (([4, 3],), {"activation": "swish"}, ValueError, "unknown activation"),
    (([4, 3],), {"loss": "hinge"}, ValueError, "unknown loss"),
    (([4, 3],), {"dtype": "float16"}, TypeError, "float32"),
    (([4, 3],), {"backend": "cuda"}, ValueError, "known: c, numba, numpy"),
    (([4, 3],), {"init": "orthogonal"}, ValueError, "unknown init"),
    (([4, 3],), {"dropout": 1.0}, ValueError, "Dropout"),
    (([2**32, 2**32, 2**32],), {}, ValueError, "indexed"),
])
def test_bad_model_arguments(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        gk.MLP(*args, **kwargs)


def test_batchnorm_needs_two_rows(clf):
    with pytest.raises(ValueError, match="more than one row"):
        clf.train_step(GOOD_X[:1], GOOD_Y[:1], gk.optim.SGD(lr=0.1))
    # fit leaves a would-be 1-row last batch out instead of failing
    h = clf.fit(GOOD_X[:9], GOOD_Y[:9], epochs=1, batch_size=4, progress=False)
    assert np.isfinite(h["loss"][0])


def test_non_contiguous_and_readonly_inputs(clf):
    X = np.asfortranarray(GOOD_X)
    Xs = np.repeat(GOOD_X, 2, axis=0)[::2]
    Xr = GOOD_X.copy()
    Xr.setflags(write=False)
    ref = clf.predict_proba(GOOD_X)
    for variant in (X, Xs, Xr):
        np.testing.assert_array_equal(clf.predict_proba(variant), ref)
    loss, _ = clf.gradients(Xr, GOOD_Y)
    assert loss == clf.gradients(GOOD_X, GOOD_Y)[0]


def test_optimizer_bound_to_one_model(backend):
    a = gk.MLP([4, 6, 3], loss="cross_entropy", backend=backend)
    b = gk.MLP([4, 9, 3], loss="cross_entropy", backend=backend)
    opt = gk.optim.Adam()
    a.train_step(GOOD_X, GOOD_Y, opt)
    with pytest.raises(ValueError, match="another model"):
        b.train_step(GOOD_X, GOOD_Y, opt)


@pytest.mark.parametrize("make,exc", [
    (lambda: gk.optim.SGD(lr=-1), ValueError), (lambda: gk.optim.SGD(lr="a"), TypeError),
    (lambda: gk.optim.SGD(lr=0.1, nesterov=True), ValueError),
    (lambda: gk.optim.Adam(betas=(0.9, 1.0)), ValueError),
    (lambda: gk.optim.Adam(eps=float("nan")), ValueError),
    (lambda: gk.optim.Adam(eps=0), ValueError), (lambda: gk.optim.AdamW(eps=-1.0), ValueError),
])
def test_bad_optimizer_arguments(make, exc):
    with pytest.raises(exc):
        make()


def test_unknown_backend_lists_known():
    with pytest.raises(ValueError, match="known: c, numba, numpy"):
        gk.backends.get("tpu")


def test_env_backend_override(monkeypatch):
    monkeypatch.setenv("GRADKERN_BACKEND", "numpy")
    assert gk.MLP([2, 1]).backend_name == "numpy"
    monkeypatch.setenv("GRADKERN_BACKEND", "nope")
    with pytest.raises(ValueError, match="GRADKERN_BACKEND"):
        gk.MLP([2, 1])
