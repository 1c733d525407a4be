"""The vanishing-gradient experiment: the physics at initialization, and its report.

Gradient norms are taken as `gradkern vanishing` takes them: float64, the first 256
training rows of digits, width 64, seed 0. Measured on every backend (seed 0), the
figures the margins below are set against:

    depth 16, first-layer / last-layer weight-gradient norm
    sigmoid, naive N(0, 0.01²)        7.3e-27     (bound 1e-4)
    sigmoid, Xavier                    3.0e-10
    sigmoid, naive + batchnorm         1.1         (lift 1.5e26 over no batchnorm)
    sigmoid, Xavier + batchnorm        0.72        (lift 2.4e9; bound 1e6)
    relu, He                           0.69        (bound: within 10×; seeds 0-5: 0.20-0.69)
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

import gradkern as gk
from gradkern import vanishing

DEPTH = 16


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These nets are small: one thread is faster, and steady on a busy machine."""
    before = gk.get_threads()
    gk.set_threads(1)
    yield
    gk.set_threads(before)


@pytest.fixture(scope="module")
def probe():
    data = gk.datasets.load("digits")
    return data.X_train[: vanishing.PROBE_ROWS], data.y_train[: vanishing.PROBE_ROWS]


_NORMS: dict[tuple, np.ndarray] = {}


def norms_at_init(probe, backend, activation, batchnorm, init, depth=DEPTH):
    key = (backend, activation, batchnorm, init, depth)
    if key not in _NORMS:
        _NORMS[key] = _norms_at_init(probe, backend, activation, batchnorm, init, depth)
    return _NORMS[key]


def _norms_at_init(probe, backend, activation, batchnorm, init, depth):
    model = vanishing.build_model(depth, activation, batchnorm, init, backend=backend)
    loss, norms = vanishing.gradient_norms(model, *probe)
    assert math.isfinite(loss) and len(norms) == depth + 1
    assert all(math.isfinite(n) and n > 0 for n in norms)
    return np.array(norms)


# ------------------------------------------------------------------ the physics

def test_sigmoid_naive_vanishes(probe, backend):
    norms = norms_at_init(probe, backend, "sigmoid", False, "naive")
    ratio = norms[0] / norms[-1]
    assert ratio < 1e-4, f"first/last = {ratio:.3g}"
    # and it shrinks on the way down, layer after layer
    assert np.all(np.diff(norms) > 0), norms


def test_relu_he_keeps_scale(probe, backend):
    norms = norms_at_init(probe, backend, "relu", False, "recommended")
    ratio = norms[0] / norms[-1]
    assert 0.1 <= ratio <= 10, f"first/last = {ratio:.3g}"
    assert norms.max() / norms.min() <= 10, norms


@pytest.mark.parametrize("init", ["naive", "recommended"])
def test_batchnorm_lifts_sigmoid(probe, backend, init):
    plain = norms_at_init(probe, backend, "sigmoid", False, init)
    normed = norms_at_init(probe, backend, "sigmoid", True, init)
    r_plain, r_bn = plain[0] / plain[-1], normed[0] / normed[-1]
    assert r_bn >= 1e6 * r_plain, f"with batchnorm {r_bn:.3g}, without {r_plain:.3g}"
    assert 0.1 <= r_bn <= 10, f"with batchnorm {r_bn:.3g}"


def test_backends_agree_at_init(probe):
    """The same network on every backend: the same gradient norms (float64)."""
    ref = norms_at_init(probe, "numpy", "sigmoid", True, "naive", depth=8)
    for name in gk.backends.available():
        got = norms_at_init(probe, name, "sigmoid", True, "naive", depth=8)
        np.testing.assert_allclose(got, ref, rtol=1e-9, err_msg=name)


# ------------------------------------------------------------------ the command

def _table_cells(md: str, heading: str) -> dict[tuple[str, str, str], list[str]]:
    """The Markdown table under `heading`: (activation, init, batchnorm) -> cells."""
    lines = md.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in vanishing.ACTIVATIONS:
            rows[(cells[0], cells[1].split()[0], cells[2])] = cells[3:]
    return rows


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("vanishing")
    assert vanishing.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    return out


def test_quick_writes_report(quick_report):
    for name in ("report.md", "report.json", "grad_norms.png", "ratio.png", "final_loss.png"):
        path = quick_report / name
        assert path.is_file() and path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    md = (quick_report / "report.md").read_text()
    for png in ("grad_norms.png", "ratio.png", "final_loss.png"):
        assert f"]({png})" in md


def test_quick_json_agrees_with_tables(quick_report):
    res = json.loads((quick_report / "report.json").read_text())
    assert res["schema"] == vanishing.SCHEMA
    cfg = res["config"]
    assert cfg["depths"] == list(vanishing.QUICK_DEPTHS)
    assert cfg["epochs"] == vanishing.QUICK_EPOCHS
    assert len(res["runs"]) == len(cfg["depths"]) * len(vanishing.settings())
    md = (quick_report / "report.md").read_text()
    ratios = _table_cells(md, "## Gradient norm ratio")
    firsts = _table_cells(md, "## First-layer gradient norm")
    trained = _table_cells(md, "## After training")
    assert len(ratios) == len(firsts) == len(trained) == len(vanishing.settings())
    for r in res["runs"]:
        key = (r["activation"], r["init"], "on" if r["batchnorm"] else "off")
        col = cfg["depths"].index(r["depth"])
        assert len(r["grad_norms"]) == r["depth"] + 1
        assert r["ratio"] == pytest.approx(r["grad_norms"][0] / r["grad_norms"][-1])
        assert float(ratios[key][col]) == pytest.approx(r["ratio"], rel=0.06), key
        assert float(firsts[key][col]) == pytest.approx(r["grad_norms"][0], rel=0.06), key
        if r["diverged"]:
            assert trained[key][col] == "diverged"
        else:
            loss, acc = trained[key][col].split(" / ")
            assert float(loss) == pytest.approx(r["train_loss"], abs=6e-4), key
            assert float(acc.rstrip("%")) == pytest.approx(100 * r["test_accuracy"], abs=0.6)


def test_quick_report_shows_the_physics(quick_report):
    """The quick run itself tells the story: sigmoid vanishes, batchnorm lifts it."""
    res = json.loads((quick_report / "report.json").read_text())
    by = {(r["activation"], r["batchnorm"], r["init"], r["depth"]): r for r in res["runs"]}
    assert by[("sigmoid", False, "naive", 16)]["ratio"] < 1e-4
    assert by[("sigmoid", True, "naive", 16)]["ratio"] > 0.1
    assert 0.1 <= by[("relu", False, "recommended", 16)]["ratio"] <= 10
    # a net whose first layers get no gradient learns nothing: chance-level loss
    assert by[("sigmoid", False, "naive", 16)]["train_loss"] > 0.95 * vanishing.CHANCE_LOSS
    assert by[("relu", False, "recommended", 16)]["train_loss"] < 0.6 * vanishing.CHANCE_LOSS


def test_report_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    argv = ["--quick", "--depths", "2", "--epochs", "1", "--out", str(tmp_path), "--no-progress"]
    assert vanishing.main(argv) == 0
    assert (tmp_path / "report.json").is_file()
    md = (tmp_path / "report.md").read_text()
    assert "matplotlib is not installed" in md
    assert "| sigmoid | naive | off |" in md
    assert not list(tmp_path.glob("*.png"))


def test_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        vanishing.main(["--help"])
    assert exc.value.code == 0
    assert "--quick" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        vanishing.main(["--depths", "0,4"])
    assert exc.value.code == 2
    assert vanishing.main(["--backend", "no-such-backend"]) == 2
    assert "unknown backend" in capsys.readouterr().err
