"""Data sets: bundled, synthetic and a user's files, split and standardized reproducibly."""

from __future__ import annotations

import numpy as np
import pytest

import gradkern as gk


@pytest.mark.parametrize("name,task,n_classes", [
    ("digits", "classification", 10), ("breast_cancer", "classification", 2),
    ("wine", "classification", 3), ("iris", "classification", 3), ("diabetes", "regression", 0),
    ("spirals", "classification", 2), ("regression", "regression", 0)])
def test_load(name, task, n_classes):
    d = gk.datasets.load(name, seed=3)
    assert d.task == task and d.n_classes == n_classes
    assert d.X_train.shape[1] == d.X_test.shape[1]
    np.testing.assert_allclose(d.X_train.mean(0), 0, atol=1e-9)
    assert abs(d.X_test.shape[0] / (d.X_train.shape[0] + d.X_test.shape[0]) - 0.2) < 0.02
    again = gk.datasets.load(name, seed=3)
    np.testing.assert_array_equal(d.X_train, again.X_train)
    other = gk.datasets.load(name, seed=4)
    assert not np.array_equal(d.X_train, other.X_train)
    if task == "classification":  # stratified: every class on both sides
        assert set(np.unique(d.y_test)) == set(range(n_classes))


def test_user_files(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((50, 3)), rng.integers(0, 2, 50)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    d = gk.datasets.load(str(tmp_path / "d.npz"))
    assert d.task == "classification" and d.n_features == 3
    (tmp_path / "d.csv").write_text("x1,x2,x3,label\n" + "\n".join(
        f"{a},{b},{c},{t}" for (a, b, c), t in zip(X, y, strict=True)))
    d2 = gk.datasets.load(str(tmp_path / "d.csv"))
    np.testing.assert_allclose(d2.X_train, d.X_train)
    assert d2.feature_names == ("x1", "x2", "x3")
    np.savez(tmp_path / "bad.npz", A=X)
    with pytest.raises(ValueError, match="'X' and 'y'"):
        gk.datasets.load(str(tmp_path / "bad.npz"))
    with pytest.raises(ValueError, match="not in"):
        gk.datasets.load_file(tmp_path / "d.csv", target="nope")


def test_spirals_are_learnable_by_a_deep_net():
    d = gk.datasets.load("spirals")
    m = gk.MLP([2, 64, 64, 2], loss="cross_entropy", backend="numpy")
    m.fit(d.X_train, d.y_train, epochs=60, batch_size=32, optimizer=gk.optim.Adam(lr=3e-3),
          progress=False)
    assert m.evaluate(d.X_test, d.y_test)["accuracy"] > 0.9
