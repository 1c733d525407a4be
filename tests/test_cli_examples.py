"""The command line and the examples, run as a user runs them."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradkern as gk
from gradkern.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_backends_command(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    for name in gk.backends.KNOWN:
        assert f"| {name}" in out
    assert "default (auto)" in out


def test_train_command_digits_reaches_097(capsys, tmp_path):
    path = tmp_path / "digits.st"
    assert main(["train", "--data", "digits", "--quiet", "--save", str(path)]) == 0
    out = capsys.readouterr().out
    acc = float(out.split("accuracy ")[1].split()[0].rstrip(","))
    assert acc >= 0.97, out
    d = gk.datasets.load("digits")
    assert gk.load(path).evaluate(d.X_test, d.y_test)["accuracy"] == pytest.approx(acc, abs=1e-4)


def test_train_command_csv_and_errors(capsys, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    lines = ["a,b,target,c"] + [f"{r[0]},{r[1]},{t},{r[2]}" for r, t in zip(X, y, strict=True)]
    (tmp_path / "d.csv").write_text("\n".join(lines))
    assert main(["train", "--data", str(tmp_path / "d.csv"), "--target", "target",
                 "--epochs", "60", "--hidden", "16", "--lr", "0.01", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "regression" in out
    assert float(out.split("r2 ")[1].split()[0]) > 0.9
    assert main(["train", "--data", "nope"]) == 2
    assert "unknown data set" in capsys.readouterr().err
    assert main(["train", "--backend", "gpu", "--epochs", "1"]) == 2


def test_demo_command_prints_table(capsys, tmp_path):
    # the scikit-learn and PyTorch rows and the plot: tests/test_demo.py
    assert main(["demo", "--epochs", "2", "--quiet", "--no-compare", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| backend" in out and "speed vs numpy" in out
    for name in gk.backends.available():
        assert f"| {name} " in out


def test_console_script_help():
    exe = Path(sys.executable).with_name("gradkern")
    for cmd in ([], ["train"], ["demo"], ["backends"], ["bench"], ["check"], ["vanishing"]):
        r = subprocess.run([str(exe), *cmd, "--help"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 and "usage" in r.stdout


def test_seed_example_gives_intended_result(backend):
    """The article's y = 2x example: the result its code meant to compute."""
    mod = runpy.run_path(str(ROOT / "examples" / "seed_linear_regression.py"))
    pred = mod["main"](backend)
    # the intended computation, by hand: W, b from 0.5; 100 full-batch steps of
    # W -= 0.01 * Xᵀ(Xw + b − y)/N (half the MSE gradient at lr 0.01 = MSE at lr 0.005)
    X, y = np.arange(1.0, 5.0), 2 * np.arange(1.0, 5.0)
    w = b = 0.5
    for _ in range(100):
        r = X * w + b - y
        w, b = w - 0.01 * np.mean(X * r), b - 0.01 * np.mean(r)
    np.testing.assert_allclose(pred, X * w + b, rtol=1e-12)
    assert np.abs(pred - y).max() < 0.55  # 100 steps of lr 0.005 are not yet converged


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_every_example_runs(script):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / script)], capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
