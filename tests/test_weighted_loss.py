"""Weighted losses (issue 12 item 3): sample_weight and class_weight in fit, computed in
every backend's loss kernel, checked against PyTorch on every backend and dtype at the
design's bounds (the `gradkern check` row torch/weighted-loss), and bad weights refused
before anything changes."""

from __future__ import annotations

import numpy as np
import pytest

import gradkern as gk
from gradkern.trainer import sample_weights
from gradkern.verify.common import Context


def test_weighted_losses_match_torch(backend, dtype):
    pytest.importorskip("torch")
    from gradkern.verify.torch_ref import torch_weighted
    w = torch_weighted(Context(quick=True), backend, str(dtype))
    assert w.compared > 0 and w.ratio <= 1.0, w


def _data(n=60, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    y = rng.choice(classes, n, p=[0.6, 0.3, 0.1][:classes] if classes == 3 else None)
    return X, y


def test_balanced_class_weight_is_scikit_learns():
    from sklearn.utils.class_weight import compute_class_weight
    X, y = _data()
    model = gk.MLP([4, 3], loss="cross_entropy", backend="numpy")
    ref = compute_class_weight("balanced", classes=np.unique(y), y=y)
    np.testing.assert_allclose(sample_weights(model, y, class_weight="balanced"), ref[y])
    sw = np.linspace(0.5, 2.0, y.size)
    got = sample_weights(model, y, sample_weight=sw, class_weight={2: 5.0})
    np.testing.assert_allclose(got, sw * np.where(y == 2, 5.0, 1.0))
    binary = gk.MLP([4, 1], loss="binary_cross_entropy", backend="numpy")
    yb = (y > 0).astype(float).reshape(-1, 1)
    ref = compute_class_weight("balanced", classes=np.array([0, 1]), y=yb[:, 0])
    np.testing.assert_allclose(sample_weights(binary, yb, class_weight="balanced"),
                               ref[yb[:, 0].astype(int)])


def test_uniform_weights_train_as_unweighted(backend):
    """A constant weight cancels in Σw·l/Σw: the same training, to rounding."""
    X, y = _data()
    runs = []
    for sw in (None, np.full(y.size, 2.5)):
        m = gk.MLP([4, 8, 3], loss="cross_entropy", dtype="float64", backend=backend, seed=0)
        h = m.fit(X, y, epochs=3, batch_size=16, progress=False, sample_weight=sw)
        runs.append((m.bufs.params.copy(), h["loss"]))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(runs[1][1], runs[0][1], rtol=1e-9)


def test_weights_change_what_is_learned(backend):
    """Rows of weight 0 are not learned from: a model fit on the other rows only, in the
    same order (shuffle=False), is the same model."""
    X, y = _data()
    keep = np.arange(y.size) < 32  # two whole batches of 16, then two of weight 0
    sw = keep.astype(float)
    a = gk.MLP([4, 8, 3], loss="cross_entropy", dtype="float64", backend=backend, seed=0)
    ha = a.fit(X, y, epochs=2, batch_size=16, shuffle=False, progress=False, sample_weight=sw,
               optimizer=gk.optim.SGD(lr=0.1, momentum=0.9))
    b = gk.MLP([4, 8, 3], loss="cross_entropy", dtype="float64", backend=backend, seed=0)
    b.fit(X[keep], y[keep], epochs=2, batch_size=16, shuffle=False, progress=False,
          optimizer=gk.optim.SGD(lr=0.1, momentum=0.9))
    np.testing.assert_allclose(a.bufs.params, b.bufs.params, rtol=1e-12, atol=1e-14)
    assert np.isfinite(ha["loss"]).all()


def test_class_weight_moves_predictions_to_the_weighted_class(backend):
    X, y = _data(n=90)
    kw = dict(epochs=30, batch_size=32, progress=False, optimizer=gk.optim.Adam(lr=0.05))
    plain = gk.MLP([4, 3], loss="cross_entropy", backend=backend, seed=0)
    plain.fit(X, y, **kw)
    heavy = gk.MLP([4, 3], loss="cross_entropy", backend=backend, seed=0)
    heavy.fit(X, y, class_weight={2: 20.0}, **{**kw, "optimizer": gk.optim.Adam(lr=0.05)})
    assert (heavy.predict(X) == 2).sum() > (plain.predict(X) == 2).sum()


@pytest.mark.parametrize("bad,exc,match", [
    (lambda n: -np.ones(n), ValueError, "negative"),
    (lambda n: np.where(np.arange(n) == 5, np.nan, 1.0), ValueError, "NaN"),
    (lambda n: np.ones(n + 1), ValueError, "shape"),
    (lambda n: np.array(["a"] * n), TypeError, "dtype"),
])
def test_bad_sample_weight_refused_and_nothing_changes(backend, bad, exc, match):
    X, y = _data()
    model = gk.MLP([4, 8, 3], loss="cross_entropy", backend=backend, seed=0)
    before = model.get_weights()
    rng_state = model.rng.bit_generator.state
    with pytest.raises(exc, match=match):
        model.fit(X, y, epochs=1, progress=False, sample_weight=bad(y.size))
    for (W0, b0), (W1, b1) in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(W0, W1)
        np.testing.assert_array_equal(b0, b1)
    assert model.rng.bit_generator.state == rng_state


@pytest.mark.parametrize("cw,exc,match", [
    ("balance", ValueError, "balanced"),
    ({7: 1.0}, ValueError, "class label"),
    ({0: -1.0}, ValueError, ">= 0"),
    ({0: float("nan")}, ValueError, ">= 0"),
    ([1.0, 2.0], TypeError, "dict"),
])
def test_bad_class_weight_refused(cw, exc, match):
    X, y = _data()
    model = gk.MLP([4, 3], loss="cross_entropy", backend="numpy")
    with pytest.raises(exc, match=match):
        model.fit(X, y, epochs=1, progress=False, class_weight=cw)


def test_class_weight_needs_a_classification_loss():
    X, _ = _data()
    model = gk.MLP([4, 1], loss="mse", backend="numpy")
    with pytest.raises(ValueError, match="classification"):
        model.fit(X, X[:, 0], epochs=1, progress=False, class_weight="balanced")


def test_history_loss_is_the_weighted_mean(backend):
    """One epoch without updates (lr 0): History's loss is np.average of the rows' losses."""
    X, y = _data()
    sw = np.random.default_rng(1).uniform(0, 3, y.size)
    model = gk.MLP([4, 6, 3], loss="cross_entropy", dtype="float64", backend=backend, seed=0)
    h = model.fit(X, y, epochs=1, batch_size=16, progress=False, sample_weight=sw,
                  optimizer=gk.optim.SGD(lr=0.0))
    logits = model.predict_raw(X)
    z = logits - logits.max(1, keepdims=True)
    per = np.log(np.exp(z).sum(1)) - z[np.arange(y.size), y]
    assert h["loss"][0] == pytest.approx(np.average(per, weights=sw), rel=1e-12)


def test_estimators_take_sample_weight_and_class_weight(backend):
    from gradkern.sklearn import MLPClassifier, MLPRegressor
    X, y = _data(n=80)
    labels = np.array(["x", "y", "z"])[y]
    kw = dict(hidden_layer_sizes=(8,), max_iter=5, backend=backend, random_state=0)
    sw = np.random.default_rng(0).uniform(0.5, 2.0, y.size)
    a = MLPClassifier(**kw).fit(X, labels, sample_weight=sw)
    b = MLPClassifier(**kw).fit(X, labels)
    assert not np.array_equal(a.coefs_[0], b.coefs_[0])
    c = MLPClassifier(class_weight="balanced", **kw).fit(X, labels)
    d = MLPClassifier(class_weight={"x": 1.0, "y": 1.0, "z": 1.0}, **kw).fit(X, labels)
    np.testing.assert_allclose(d.coefs_[0], b.coefs_[0], rtol=1e-5, atol=1e-6)
    assert not np.array_equal(c.coefs_[0], b.coefs_[0])
    MLPClassifier(early_stopping=True, **kw).fit(X, labels, sample_weight=sw)
    MLPRegressor(**kw).fit(X, X[:, 0], sample_weight=sw)
    for bad in (-sw, sw[:-1], np.where(np.arange(y.size) == 3, np.nan, sw)):
        with pytest.raises(ValueError):
            MLPClassifier(**kw).fit(X, labels, sample_weight=bad)
