"""The user-facing model API on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import gradkern as gk
from gradkern.cli import DEMO_SIZES


@pytest.fixture(scope="module")
def digits():
    return gk.datasets.load("digits", seed=0)


def test_digits_demo_model_reaches_097(backend, digits):
    d = digits
    model = gk.MLP([d.n_features, *DEMO_SIZES, d.n_outputs], loss="cross_entropy",
                   backend=backend, seed=0)
    h = model.fit(d.X_train, d.y_train, epochs=30, batch_size=64,
                  optimizer=gk.optim.Adam(lr=1e-3), validation_data=(d.X_test, d.y_test),
                  progress=False)
    result = model.evaluate(d.X_test, d.y_test)
    assert result["accuracy"] >= 0.97, result
    assert h["val_accuracy"][-1] == pytest.approx(result["accuracy"])
    assert len(h["loss"]) == len(h["seconds"]) == 30
    assert h["loss"][-1] < h["loss"][0] / 10


def test_predict_shapes_and_proba(backend):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4))
    ce = gk.MLP([4, 8, 3], loss="cross_entropy", backend=backend)
    p = ce.predict_proba(X)
    assert p.shape == (50, 3)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
    np.testing.assert_array_equal(ce.predict(X), p.argmax(1))
    bce = gk.MLP([4, 8, 1], loss="binary_cross_entropy", backend=backend)
    pb = bce.predict_proba(X)
    assert pb.shape == (50, 2)
    np.testing.assert_array_equal(bce.predict(X), (pb[:, 1] > 0.5).astype(int))
    reg = gk.MLP([4, 8, 1], loss="mse", backend=backend)
    assert reg.predict(X).shape == (50,)
    assert gk.MLP([4, 8, 2], loss="mse", backend=backend).predict(X).shape == (50, 2)
    with pytest.raises(ValueError, match="classification"):
        reg.predict_proba(X)


def test_predict_in_chunks_equals_one_batch(backend, monkeypatch):
    import gradkern.model as gm

    rng = np.random.default_rng(1)
    X = rng.standard_normal((37, 5))
    model = gk.MLP([5, 16, 2], loss="mse", backend=backend, batchnorm=True)
    whole = model.predict_raw(X)
    monkeypatch.setattr(gm, "PREDICT_CHUNK", 8)
    np.testing.assert_array_equal(model.predict_raw(X), whole)


def test_gradients_change_nothing(backend):
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((20, 4)), rng.integers(0, 3, 20)
    model = gk.MLP([4, 8, 3], loss="cross_entropy", backend=backend, batchnorm=True, dropout=0.2)
    before = {k: v.copy() for k, v in model.named_parameters().items()}
    loss1, g1 = model.gradients(X, y)
    loss2, g2 = model.gradients(X, y)
    assert loss1 == loss2
    for (a, b), (c, d) in zip(g1, g2, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    for k, v in model.named_parameters().items():
        np.testing.assert_array_equal(v, before[k])
    # layer order: Dense(4->8), BatchNorm(8) gamma/beta, Dense(8->3)
    assert [(a.shape, b.shape) for a, b in g1] == [((4, 8), (8,)), ((8,), (8,)), ((8, 3), (3,))]


def test_train_step_reduces_loss(backend):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((64, 6))
    y = (X[:, 0] > 0).astype(int)
    model = gk.MLP([6, 16, 2], loss="cross_entropy", backend=backend)
    opt = gk.optim.SGD(lr=0.5)
    losses = [model.train_step(X, y, opt) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    assert int(opt.step[0]) == 30


def test_get_set_weights_roundtrip_and_to_backend(backend):
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((40, 5)), rng.integers(0, 4, 40)
    model = gk.MLP([5, 12, 4], loss="cross_entropy", backend="numpy", seed=3)
    model.fit(X, y, epochs=5, batch_size=8, progress=False)
    ref = model.predict_proba(X)
    other = gk.MLP([5, 12, 4], loss="cross_entropy", backend=backend, seed=99)
    other.set_weights(model.get_weights())
    np.testing.assert_allclose(other.predict_proba(X), ref, atol=1e-5)
    assert model.to_backend(backend) is model
    assert model.backend_name == backend
    np.testing.assert_allclose(model.predict_proba(X), ref, atol=1e-5)
    np.testing.assert_array_equal(model.predict(X), ref.argmax(1))


def test_set_weights_rejects_and_keeps_model(backend):
    model = gk.MLP([3, 4, 2], backend=backend)
    before = model.get_weights()
    good = [(np.ones((3, 4)), np.zeros(4)), (np.ones((4, 2)), np.zeros(2))]
    bad_shape = [(np.ones((3, 4)), np.zeros(4)), (np.ones((2, 4)), np.zeros(2))]
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(4, 2\)"):
        model.set_weights(bad_shape)
    with pytest.raises(ValueError, match="NaN"):
        model.set_weights([good[0], (np.full((4, 2), np.nan), np.zeros(2))])
    with pytest.raises(ValueError, match="pairs"):
        model.set_weights(good[:1])
    for (a, b), (c, d) in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    model.set_weights(good)
    np.testing.assert_array_equal(model.get_weights()[0][0], np.ones((3, 4)))


@pytest.mark.parametrize("init", ["he_normal", "he_uniform", "xavier_normal", "xavier_uniform",
                                  "lecun_normal", "lecun_uniform"])
def test_initializers_have_their_variance(init):
    model = gk.MLP([400, 300, 2], init=init, backend="numpy", dtype="float64", seed=0)
    W = model.get_weights()[0][0]
    fan_in, fan_out = W.shape
    expect = {"he": 2 / fan_in, "xavier": 2 / (fan_in + fan_out), "lecun": 1 / fan_in}
    assert W.var() == pytest.approx(expect[init.split("_")[0]], rel=0.03)
    if init.endswith("uniform"):
        assert np.abs(W).max() <= np.sqrt(3 * expect[init.split("_")[0]])
    assert np.all(model.get_weights()[0][1] == 0)


def test_default_init_follows_activation():
    relu = gk.MLP([500, 400, 2], activation="relu", seed=0, backend="numpy", dtype="float64")
    tanh = gk.MLP([500, 400, 2], activation="tanh", seed=0, backend="numpy", dtype="float64")
    assert relu.get_weights()[0][0].var() == pytest.approx(2 / 500, rel=0.03)
    assert tanh.get_weights()[0][0].var() == pytest.approx(2 / 900, rel=0.03)


def test_early_stopping_restores_best(backend):
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((60, 4)), rng.standard_normal(60)  # pure noise: overfits
    Xv, yv = rng.standard_normal((30, 4)), rng.standard_normal(30)
    model = gk.MLP([4, 64, 1], backend=backend, seed=1)
    h = model.fit(X, y, epochs=200, batch_size=10, optimizer=gk.optim.Adam(lr=1e-2),
                  validation_data=(Xv, yv), early_stopping=3, progress=False)
    assert h.stopped_early
    assert h.epochs_run < 200
    best = int(np.argmin(h["val_loss"]))
    assert h.best_epoch == best + 1
    assert model.evaluate(Xv, yv)["loss"] == pytest.approx(h["val_loss"][best], rel=1e-5)


def test_history_and_progress(backend, capsys):
    rng = np.random.default_rng(6)
    X, y = rng.standard_normal((30, 3)), rng.integers(0, 2, 30)
    model = gk.MLP([3, 5, 2], loss="cross_entropy", backend=backend)
    seen = []
    h = model.fit(X, y, epochs=3, batch_size=8, progress=False,
                  on_epoch=lambda e, f: seen.append((e, sorted(f))))
    assert seen == [(e, ["loss", "seconds"]) for e in (1, 2, 3)]
    assert h.epochs_run == 3 and "val_loss" not in h
    assert capsys.readouterr().err == ""


def test_same_seed_same_everything(backend):
    rng = np.random.default_rng(7)
    X, y = rng.standard_normal((50, 4)), rng.integers(0, 3, 50)
    out = []
    for _ in range(2):
        m = gk.MLP([4, 10, 3], loss="cross_entropy", backend=backend, seed=5, dropout=0.2)
        m.fit(X, y, epochs=3, batch_size=7, progress=False)
        out.append(m.predict_proba(X))
    np.testing.assert_array_equal(out[0], out[1])
    m2 = gk.MLP([4, 10, 3], loss="cross_entropy", backend=backend, seed=6, dropout=0.2)
    m2.fit(X, y, epochs=3, batch_size=7, progress=False)
    assert not np.array_equal(m2.predict_proba(X), out[0])


def test_float64_models(backend):
    rng = np.random.default_rng(8)
    X, y = rng.standard_normal((30, 3)), rng.standard_normal((30, 2))
    m = gk.MLP([3, 6, 2], dtype="float64", backend=backend)
    m.fit(X, y, epochs=2, batch_size=10, progress=False)
    assert m.predict(X).dtype == np.float64
    assert all(w.dtype == np.float64 for pair in m.get_weights() for w in pair)


def test_flat_buffers_are_aligned_views():
    m = gk.MLP([5, 7, 3], backend="numpy")
    assert m.bufs.params.ctypes.data % 64 == 0
    for v in m.named_parameters().values():
        assert v.base is not None and np.shares_memory(v, m.bufs.params)
        assert v.ctypes.data % 64 == 0  # every tensor starts on a 64-byte boundary


def test_repr_and_count():
    m = gk.MLP([5, 7, 3], backend="numpy")
    assert m.count_params() == 5 * 7 + 7 + 7 * 3 + 3
    assert "Dense(5->7)" in repr(m)
