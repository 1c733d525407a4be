"""`gradkern demo`: gradkern's backends beside scikit-learn's MLPClassifier and PyTorch, measured
in one run, with a PNG of the learning curves next to the table (issue 12 item 6)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import gradkern as gk
from gradkern.cli import DEMO_SIZES, demo_table, main
from gradkern.verify.tolerance import TORCH_TEST_RTOL

HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_demo_rows_and_learning_curves(tmp_path, capsys):
    name = gk.backends.available()[0]
    assert main(["demo", "--epochs", "2", "--quiet", "--backends", name,
                 "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert f"| {name} " in out and "| scikit-learn " in out and "MLPClassifier" in out
    assert ("| PyTorch " in out) == HAS_TORCH
    table = (tmp_path / "d" / "demo.md").read_text()
    assert table.strip() in out
    png = tmp_path / "d" / "learning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(png)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300


def test_demo_figures_are_measured_for_every_engine():
    name = gk.backends.available()[0]
    results, _ = demo_table(epochs=2, backends=[name], progress=False)
    engines = [r["backend"] for r in results]
    assert engines[0] == name and engines[1].startswith("scikit-learn")
    assert len(engines) == 3 if HAS_TORCH else 2
    for r in results:
        assert 0.5 < r["test_accuracy"] <= 1.0, r  # two epochs of Adam learn digits
        assert r["seconds_per_epoch"] > 0 and len(r["curve"]) == 2
        assert all(np.isfinite(r["curve"])) and r["curve"][1] < r["curve"][0]
    if HAS_TORCH:
        # the same weights and one batch: PyTorch's gradients are ours
        d = gk.datasets.load("digits")
        m = gk.MLP([64, *DEMO_SIZES, 10], loss="cross_entropy", backend=name, seed=0)
        _, grads = m.gradients(d.X_train[:64], d.y_train[:64])
        scale = max(float(np.abs(a).max()) for pair in grads for a in pair)
        assert results[2]["max_grad_diff"] <= TORCH_TEST_RTOL[np.dtype(np.float32)] * scale
        # and the same data order: its first epoch's loss is ours
        assert results[2]["curve"][0] == pytest.approx(results[0]["curve"][0], rel=1e-3)


def test_demo_refuses_a_bad_out_before_any_work(tmp_path, capsys):
    (tmp_path / "f").write_text("a file")
    assert main(["demo", "--epochs", "1", "--quiet", "--out", str(tmp_path / "f")]) == 2
    cap = capsys.readouterr()
    assert cap.err.startswith("gradkern: error: --out") and "not a folder" in cap.err
    assert cap.out == ""
