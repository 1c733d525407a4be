"""`gradkern check`: the quick run passes here, covers every backend × dtype × check, and
fails when a kernel is wrong by a small relative amount."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import gradkern as gk
from gradkern import check, torchref, verify
from gradkern.cli import main as cli_main


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    path = tmp_path_factory.mktemp("check") / "matrix.json"
    rc = verify.main(["--quick", "--quiet", "--json", str(path)])
    return rc, json.loads(path.read_text())


def test_quick_check_passes_and_covers_the_matrix(quick_report):
    rc, rep = quick_report
    bad = [c for c in rep["cells"] if c["status"] in ("FAIL", "ERROR")]
    assert rc == 0, bad
    assert rep["ok"] and rep["failures"] == 0
    cells = {(c["check"], c["backend"], c["dtype"]): c for c in rep["cells"]}
    names = [c.name for c in verify.CHECKS]
    assert rep["checks"] == names
    for name in names:
        for backend in gk.backends.available():
            for dtype in ("float32", "float64"):
                assert (name, backend, dtype) in cells, (name, backend, dtype)
    assert len(cells) == len(names) * len(gk.backends.available()) * 2
    torch_ok, reason = torchref.available()
    for (name, _, dtype), c in cells.items():
        if name.startswith("fd/") and dtype == "float32":
            assert c["status"] == "n/a (float64 only)"
        elif name.startswith("torch/") and not torch_ok:
            assert c["status"] == f"skipped: {reason}"
        else:
            assert c["status"] == "pass", c
            assert 0 <= c["ratio"] <= 1 and c["compared"] > 0
            assert isinstance(c["abs_err"], float)


def test_json_is_strict_and_describes_the_run(quick_report):
    _, rep = quick_report
    json.dumps(rep, allow_nan=False)
    assert rep["quick"] is True
    assert rep["backends"] == gk.backends.available()
    assert set(rep["tolerances"]) == {"fd", "torch"}


@pytest.mark.parametrize("module", ["gradkern.check", "gradkern.verify"])
def test_module_help_and_main(module):
    """`python -m gradkern.check --help` (the shim kept for it) and `-m gradkern.verify`."""
    done = subprocess.run([sys.executable, "-m", module, "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for flag in ("--quick", "--json", "--backends"):
        assert flag in done.stdout


def test_the_shim_is_the_verify_package():
    assert check.main is verify.main and check.run is verify.run
    assert check.CHECKS is verify.CHECKS


def test_small_run_prints_the_matrix(capsys):
    assert verify.main(["--quick", "--quiet", "--backends", "numpy",
                       "--only", "kernel/dropout"]) == 0
    out = capsys.readouterr().out
    assert "| kernel/dropout" in out and "numpy float32" in out and "numpy float64" in out


def test_cli_delegates_flags(capsys):
    assert cli_main(["check", "--quick", "--quiet", "--backends", "numpy",
                     "--only", "kernel/dropout"]) == 0


def test_unknown_backend_is_an_error(capsys):
    assert verify.main(["--backends", "cuda"]) == 2
    assert "unknown backend" in capsys.readouterr().err


def _broken(method, rel):
    """A kernel method whose outputs are off by a factor (1 + rel)."""

    def wrong(out, *args, **kwargs):
        method(out, *args, **kwargs)
        out *= out.dtype.type(1 + rel)

    return wrong


@pytest.mark.parametrize("backend", gk.backends.available())
def test_broken_matmul_fails_the_check(backend, monkeypatch, tmp_path, capsys):
    """matmul_forward off by 1e-5 relative: beyond 16·u·S in float32 and float64."""
    be = gk.backends.get(backend)
    monkeypatch.setattr(be, "matmul_forward", _broken(be.matmul_forward, 1e-5))
    path = tmp_path / "m.json"
    rc = verify.main(["--quick", "--quiet", "--backends", backend, "--only", "kernel/matmul",
                     "--json", str(path)])
    assert rc == 1
    rep = json.loads(path.read_text())
    status = {(c["check"], c["dtype"]): c for c in rep["cells"]}
    for dtype in ("float32", "float64"):
        bad = status[("kernel/matmul_forward", dtype)]
        assert bad["status"] == "FAIL" and bad["ratio"] > 1, bad
        assert status[("kernel/matmul_backward", dtype)]["status"] == "pass"
    assert "FAILED kernel/matmul_forward" in capsys.readouterr().out


def test_broken_adam_fails_the_torch_referee(monkeypatch):
    """An Adam update 1e-4 too large, used by the NumPy backend's step driver: the PyTorch
    trajectories catch it in both dtypes."""
    if not torchref.available()[0]:
        pytest.skip(torchref.available()[1])
    be = gk.backends.get("numpy")

    def broken(real):
        def wrong(params, grads, m, v, hyper, step):
            before = params.copy()
            real(params, grads, m, v, hyper, step)
            params += (params - before) * params.dtype.type(1e-3)

        return wrong

    # the checked entry point, and the engine's own method behind it where there is one
    for name in ("adam_update", "_adam_update"):
        if hasattr(be, name):
            monkeypatch.setattr(be, name, broken(getattr(be, name)))
    cells = verify.run(["numpy"], quick=True, only=["torch/adam-"])
    assert [c.status for c in cells] == ["FAIL", "FAIL"], [c.where for c in cells]


def test_worst_keeps_the_largest_ratio_and_flags_nan():
    w = verify.Worst()
    w.add(np.array([1.0, 2.0]), np.array([1.0, 2.1]), np.array([1.0, 1.0]), "a")
    assert w.ratio == pytest.approx(0.1) and "a [1]" in w.where
    w.add(np.array([0.0]), np.array([0.0]), np.array([1.0]), "b")
    assert "a [1]" in w.where
    w.add(np.array([np.nan]), np.array([1.0]), np.array([1.0]), "nan")
    assert w.ratio == np.inf and "nan" in w.where
    assert w.compared == 4 and w.n_bad == 1
    # equal values agree, infinities and NaN against NaN included
    w2 = verify.Worst()
    w2.add(np.array([np.inf, -np.inf, np.nan]), np.array([np.inf, -np.inf, np.nan]), 0.0, "eq")
    assert w2.ratio == 0 and w2.n_bad == 0 and w2.ok
    w2.add(np.array([np.inf]), np.array([-np.inf]), 1.0, "signs")
    assert w2.ratio == np.inf and not w2.ok


def test_assert_close_is_the_policy():
    """tests/conftest's assert_close is verify's: k·u·S with u of x's dtype; NaN fails."""
    from conftest import assert_close

    assert assert_close is verify.assert_close
    u = np.finfo(np.float32).eps
    x = np.float32([1.0, 2.0])
    assert_close(x, [1.0, 2.0 + 15 * u * 2], [1.0, 2.0], 16)
    with pytest.raises(AssertionError, match="1 of 2 elements beyond 16·u·S"):
        assert_close(x, [1.0, 2.0 + 17 * u * 2], [1.0, 2.0], 16, "x")
    with pytest.raises(AssertionError, match="beyond"):
        assert_close(np.float64([np.nan]), [1.0], [1.0])
    with pytest.raises(AssertionError, match="shape"):
        assert_close(np.zeros(2), np.zeros(3), 1.0)


def test_without_torch_the_torch_rows_are_skipped(monkeypatch, tmp_path):
    """No PyTorch: every torch/* cell says 'skipped: <reason>' and the run still passes."""
    reason = "PyTorch not importable (ImportError: pretend)"
    monkeypatch.setattr(torchref, "available", lambda: (False, reason))
    path = tmp_path / "no-torch.json"
    rc = verify.main(["--quick", "--quiet", "--backends", "numpy", "--only", "torch/",
                     "--json", str(path)])
    assert rc == 0
    rep = json.loads(path.read_text())
    assert rep["torch"] == reason
    n_torch = sum(c.name.startswith("torch/") for c in verify.cli.CHECKS)
    assert len(rep["cells"]) == n_torch * 2
    assert {c["status"] for c in rep["cells"]} == {f"skipped: {reason}"}
