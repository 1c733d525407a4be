"""fit(..., validation_split=f): rows held out of training, stratified, seeded (issue 12 item 4)."""

from __future__ import annotations

import numpy as np
import pytest

import gradkern as gk
from gradkern.trainer import hold_out


def _clf(backend, seed=0, loss="cross_entropy", n_out=3):
    return gk.MLP([4, 8, n_out], loss=loss, backend=backend, seed=seed)


def _data(n=120, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    y = np.arange(n) % classes
    X[:, 0] += y  # learnable
    return X, y


def test_split_is_stratified_disjoint_and_seeded(backend):
    X, y = _data(n=130, classes=3)  # classes of 44, 43, 43 rows
    y = np.where(np.arange(130) < 20, 0, y)  # and unbalanced: 0 is the largest
    counts = np.bincount(y)
    model = _clf(backend, seed=5)
    train, val = hold_out(model, model.check_data(X, y)[1], 0.25)
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(130))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)  # original order kept
    np.testing.assert_array_equal(np.bincount(y[val]), np.floor(counts * 0.25 + 0.5))
    again = hold_out(_clf(backend, seed=5), y, 0.25)  # same seed: same rows
    np.testing.assert_array_equal(again[1], val)
    other = hold_out(_clf(backend, seed=6), y, 0.25)
    assert not np.array_equal(other[1], val)


def test_fit_validates_on_the_held_out_rows_only(backend):
    X, y = _data()
    model = _clf(backend, seed=1)
    train, val = hold_out(_clf(backend, seed=1), y, 0.2)  # the rows fit will hold out
    h = model.fit(X, y, epochs=3, batch_size=16, validation_split=0.2, progress=False)
    # the same epochs as fitting the training rows with the held-out rows as validation
    twin = _clf(backend, seed=1)
    hold_out(twin, y, 0.2)  # the split's draws advance the generator: replay them
    h2 = twin.fit(X[train], y[train], epochs=3, batch_size=16,
                  validation_data=(X[val], y[val]), progress=False)
    np.testing.assert_array_equal(h["loss"], h2["loss"])
    np.testing.assert_array_equal(h["val_loss"], h2["val_loss"])
    np.testing.assert_array_equal(model.get_weights()[0][0], twin.get_weights()[0][0])
    assert model.evaluate(X[val], y[val])["loss"] == pytest.approx(h["val_loss"][-1])
    assert all(a * 24 == round(a * 24) for a in h["val_accuracy"])  # 24 held-out rows


def test_early_stopping_on_the_split(backend):
    X, y = _data()
    model = _clf(backend)
    h = model.fit(X, y, epochs=40, batch_size=16, validation_split=0.2, early_stopping=2,
                  optimizer=gk.optim.Adam(lr=0.05), progress=False)
    assert "val_loss" in h and h.best_epoch is not None
    if h.stopped_early:
        assert h.epochs_run - h.best_epoch == 3


def test_regression_and_binary_splits(backend):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4))
    reg = gk.MLP([4, 8, 1], loss="mse", backend=backend)
    train, val = hold_out(reg, X[:, 0], 0.3)
    assert len(val) == 15 and len(train) == 35
    h = reg.fit(X, X[:, 0], epochs=2, validation_split=0.3, progress=False)
    assert len(h["val_r2"]) == 2
    yb = (np.arange(50) < 10).astype(float)  # 10 positives, 40 negatives
    bce = gk.MLP([4, 8, 1], loss="binary_cross_entropy", backend=backend)
    _, val = hold_out(bce, bce.check_data(X, yb)[1], 0.3)
    assert yb[val].sum() == 3 and len(val) == 15


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"validation_split": 0.0}, "fraction in \\(0, 1\\)"),
    ({"validation_split": 1.0}, "fraction in \\(0, 1\\)"),
    ({"validation_split": float("nan")}, "fraction in \\(0, 1\\)"),
    ({"validation_split": True}, "fraction in \\(0, 1\\)"),
    ({"validation_split": "0.1"}, "fraction in \\(0, 1\\)"),
    ({"validation_split": 0.2, "validation_data": "x"}, "not both"),
    ({"validation_split": 0.05}, "class 2 \\(5 rows\\) with no validation rows"),
    ({"validation_split": 0.95}, "with no training rows"),
])
def test_bad_splits_are_refused_and_change_nothing(backend, kwargs, match):
    X, y = _data(n=60)
    y = np.where(np.arange(60) < 55, y % 2, 2)  # class 2 has 5 rows
    model = _clf(backend)
    before = model.state_snapshot()
    with pytest.raises(ValueError, match=match):
        model.fit(X, y, epochs=1, progress=False, **kwargs)
    after = model.state_snapshot()
    np.testing.assert_array_equal(before[0], after[0])
    assert before[2] == after[2]  # the generator too


def test_regression_split_too_small_is_refused(backend):
    model = gk.MLP([4, 8, 1], loss="mse", backend=backend)
    X = np.ones((3, 4))
    with pytest.raises(ValueError, match="of 3 rows leaves no validation rows"):
        model.fit(X, np.zeros(3), epochs=1, validation_split=0.1, progress=False)


def test_train_command_early_stops_on_a_split_of_the_training_rows(capsys):
    from gradkern.cli import main

    assert main(["train", "--data", "iris", "--hidden", "8", "--epochs", "300", "--patience",
                 "3", "--lr", "0.01", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "on val_loss of a 0.1 split of the training rows" in out
    assert "the 30 test rows are used only for the test figures" in out
    test_line = next(line for line in out.splitlines() if line.startswith("test: "))
    acc = float(test_line.split("accuracy ")[1].split()[0])
    # the same run in process: the test split played no part in it
    d = gk.datasets.load("iris")
    model = gk.MLP([4, 8, 3], loss="cross_entropy", seed=0)
    h = model.fit(d.X_train, d.y_train, epochs=300, batch_size=64,
                  optimizer=gk.optim.Adam(lr=0.01), validation_split=0.1, early_stopping=3,
                  progress=False)
    assert h.stopped_early and f"early stop after epoch {h.epochs_run}:" in out
    assert model.evaluate(d.X_test, d.y_test)["accuracy"] == pytest.approx(acc, abs=5e-5)
