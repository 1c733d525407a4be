"""gradkern bench: the quick report, the comparison of two runs, and the instrument's parts."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

import gradkern.bench as bench
from gradkern.backends.numpy_backend import NumpyBackend
from gradkern.bench.check import check_runner, reference_gradients
from gradkern.bench.machine import LIFTED_MARK
from gradkern.bench.report import KEY_FIELDS, cell_key, fmt_us
from gradkern.bench.scaling import crossover_width, fit_scaling, overhead_fit, step_flops
from gradkern.bench.timing import plan_repeats
from gradkern.bench.workload import GradkernRunner, Workload, build_plan, make_runner
from gradkern.contract import Layer

QUICK = ["--quick", "--no-torch", "--keep-blas-env", "--no-progress", "--max-seconds", "0.05",
         "--retries", "0", "--settle", "0.02"]


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    status = bench.main(QUICK + ["--out", str(out)])
    return status, out


def md_table(md: str, heading: str) -> list[dict]:
    """The rows of the first table after `heading`, as dicts keyed by the header."""
    lines = md[md.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    header = [h.strip() for h in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (v.strip() for v in line.strip("|").split("|")),
                             strict=True)))
    return rows


def test_quick_writes_report_files(quick_report):
    status, out = quick_report
    assert status == 0
    for name in ("report.md", "report.json"):
        assert (out / name).stat().st_size > 0
    data = json.loads((out / "report.json").read_text())
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert data["plots"] == [] and "matplotlib" in data["plot_note"]
    else:
        assert set(data["plots"]) == {"step_time_vs_depth.png", "gflops_vs_width.png",
                                      "fraction_of_peak.png"}
        for name in data["plots"]:
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"![{name}]({name})" in (out / "report.md").read_text()


def test_quick_json_has_every_cell(quick_report):
    _, out = quick_report
    data = json.loads((out / "report.json").read_text())
    cfg = data["config"]
    assert "torch" not in cfg["impls"] and "numpy-plain" in cfg["impls"]
    assert "numpy" in cfg["backends"]
    keys = {cell_key(c) for c in data["cells"]}
    expected = {(i, t, cfg["dtype"], b, d, w) for i in cfg["impls"] for t in cfg["threads"]
                for b in cfg["batches"] for d in cfg["depths"] for w in cfg["widths"]}
    assert keys == expected and len(data["cells"]) == len(expected)
    for c in data["cells"]:
        assert c["status"] == "ok", c
        assert c["check"]["ok"] is True
        assert c["min_us"] <= c["median_us"] <= c["max_us"]
        assert len(c["samples_us"]) == c["runs"] >= 3
        assert math.isclose(c["gflops"], c["flops"] / c["median_us"] / 1e3, rel_tol=1e-9)
        assert c["fraction_of"]["sgemm"] == pytest.approx(
            c["gflops"] / next(x["gflops"] for x in data["ceilings"] if x["name"] == "sgemm"))
        if c["kind"] == "gradkern":
            assert c["check"]["kernel_check"] in ("passed",) or \
                c["check"]["kernel_check"].startswith("skipped")
            assert c["memory_bytes"] > 0
            assert c["speedup_vs"]["numpy-plain"] > 0
    m = data["machine"]
    assert m["blas"]["kernel"] and m["gradkern"]["version"]
    assert "threads" in data and str(cfg["threads"][0]) in data["threads"]
    assert data["scaling"][str(cfg["threads"][0])]["numpy"]["depth_exponents"]
    assert data["ceilings"][0]["gflops"] > 0


def test_quick_markdown_agrees_with_json(quick_report):
    _, out = quick_report
    data = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    cells = {tuple(str(v) for v in cell_key(c)): c for c in data["cells"]}
    rows = md_table(md, "## All runs")
    assert len(rows) == len(cells)
    for r in rows:
        c = cells[tuple(r[k] for k in KEY_FIELDS)]
        assert r["median µs"] == fmt_us(c["median_us"])
        assert r["min µs"] == fmt_us(c["min_us"]) and r["max µs"] == fmt_us(c["max_us"])
        assert r["runs×steps"] == f"{c['runs']}×{c['inner']}"
    cfg = data["config"]
    t, b = cfg["threads"][0], cfg["batches"][0]
    wide = md_table(md, f"## Step time, batch {b}, {t} thread")
    for r in wide:
        for impl in cfg["impls"]:
            c = cells[(impl, str(t), cfg["dtype"], str(b), r["depth"], r["width"])]
            assert r[impl] == fmt_us(c["median_us"])


def test_compare_ratios(tmp_path):
    def report(medians):
        cells = []
        for (impl, width), med in medians.items():
            cells.append({"impl": impl, "threads": 2, "dtype": "float32", "batch": 64,
                          "depth": 1, "width": width, "status": "ok", "median_us": med,
                          "min_us": med * 0.98, "max_us": med * 1.02})
        return {"cells": cells, "machine": {"cpu": {"model": "x"}}}

    old = report({("numpy", 16): 100.0, ("numpy", 64): 200.0, ("c", 16): 50.0,
                  ("c", 64): 80.0})
    new = report({("numpy", 16): 150.0, ("numpy", 64): 100.0, ("c", 16): 52.0,
                  ("c", 1024): 9.0})
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    argv = ["--compare", str(tmp_path / "old.json"), str(tmp_path / "new.json"),
            "--out", str(tmp_path / "cmp")]
    assert bench.main(argv) == 0
    assert bench.main(argv + ["--fail-on-regression"]) == 1
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    by = {(r["impl"], r["width"]): r for r in result["rows"]}
    assert set(by) == {("numpy", 16), ("numpy", 64), ("c", 16)}
    assert by[("numpy", 16)]["ratio"] == pytest.approx(1.5)
    assert by[("numpy", 16)]["verdict"] == "REGRESSION"
    assert by[("numpy", 64)]["ratio"] == pytest.approx(0.5)
    assert by[("numpy", 64)]["verdict"] == "faster"
    assert by[("c", 16)]["ratio"] == pytest.approx(1.04) and by[("c", 16)]["verdict"] == ""
    assert result["regressions"] == 1
    assert [r["width"] for r in result["only_old"]] == [64]
    assert [r["width"] for r in result["only_new"]] == [1024]
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| numpy | 2 | float32 | 64 | 1 | 16 | 100.0 | 150.0 | 1.5 | REGRESSION |" in md


def test_compare_a_run_with_itself(quick_report, tmp_path):
    _, out = quick_report
    path = str(out / "report.json")
    assert bench.main(["--compare", path, path, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "compare.json").read_text())
    assert result["rows"] and all(r["ratio"] == 1.0 for r in result["rows"])
    assert result["regressions"] == 0


def test_compare_rejects_a_file_that_is_not_a_report(tmp_path, capsys):
    (tmp_path / "x.json").write_text("{}")
    assert bench.main(["--compare", str(tmp_path / "x.json"), str(tmp_path / "x.json")]) == 2
    assert "not a gradkern bench report" in capsys.readouterr().out


def test_blas_pin_is_lifted_in_a_child_process_only(monkeypatch):
    """The default re-runs the command without OPENBLAS_CORETYPE; this process keeps it.
    (subprocess.call is replaced: no benchmark runs and no pin is lifted here.)"""
    calls = []
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.delenv(LIFTED_MARK, raising=False)
    monkeypatch.setattr(bench.subprocess, "call",
                        lambda cmd, env: calls.append((cmd, env)) or 0)
    assert bench.main(["--quick", "--out", "x"]) == 0
    (cmd, env), = calls
    assert cmd[1:3] == ["-m", "gradkern.bench"] and cmd[3:] == ["--quick", "--out", "x"]
    assert "OPENBLAS_CORETYPE" not in env
    assert json.loads(env[LIFTED_MARK]) == {"OPENBLAS_CORETYPE": "Haswell"}
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell"

    ran = []
    monkeypatch.setattr(bench, "run", lambda args, argv: ran.append(argv) or 0)
    assert bench.main(["--quick", "--keep-blas-env"]) == 0
    assert ran and len(calls) == 1


def test_disturbed_cells_are_measured_again_side_by_side(tmp_path, monkeypatch):
    """A cell during which other processes took the CPU is timed again, all of its
    implementations together, and the quieter measurement kept."""
    import gradkern.bench.sweep as sweep_module

    loads = iter([0.0] * 2 + [0.5, 0.0] + [0.0] * 2)  # cells w8, w16 (2 impls each), redo w16

    class FakeLoad:
        def start(self):
            return self

        def stop(self):
            return next(loads, 0.0)

    class SteadyProbe:  # the machine at full speed throughout
        def measure(self):
            return {"serial_us": 1.0, "gemm_us": 1.0}

    monkeypatch.setattr(sweep_module, "OtherLoad", FakeLoad)
    monkeypatch.setattr(sweep_module, "SpeedProbe", SteadyProbe)
    out = tmp_path / "r"
    argv = ["--depths", "1", "--widths", "8,16", "--batches", "8", "--backends", "numpy",
            "--no-torch", "--keep-blas-env", "--no-progress", "--no-plots", "--max-seconds",
            "0.01", "--out", str(out)]
    assert bench.main(argv) == 0
    data = json.loads((out / "report.json").read_text())
    by = {(c["impl"], c["width"]): c for c in data["cells"]}
    assert len(by) == len(data["cells"]) == 4
    assert "remeasured" not in by[("numpy", 8)]
    for impl in ("numpy", "numpy-plain"):
        c = by[(impl, 16)]
        assert c["remeasured"] == 1 and c["other_load"] == 0.0
        assert len(c["discarded"]) == 1 and c["check"]["ok"] is True
    assert by[("numpy", 16)]["discarded"][0]["other_load"] == 0.5


# ---- the instrument's parts ---------------------------------------------------------------

def test_depth_is_the_number_of_hidden_layers():
    plan = build_plan(depth=3, width=8)
    dense = [(L.n_in, L.n_out) for L in plan.layers if L.kind == Layer.DENSE]
    assert dense == [(8, 8), (8, 8), (8, 8), (8, 10)]
    assert plan.loss == "cross_entropy"


def test_check_passes_every_implementation_and_catches_a_wrong_kernel():
    wl = Workload(2, 32, 16)
    ref = reference_gradients(wl)
    for name in ["numpy", "numpy-plain"]:
        res = check_runner(make_runner(name, wl), wl, ref)
        assert res.ok, res.messages

    class OffByOne(NumpyBackend):  # a weight gradient off in one element by 0.1%
        def _matmul_backward(self, dinp, dweight, dbias, dout, inp, weight):
            super()._matmul_backward(dinp, dweight, dbias, dout, inp, weight)
            dweight[0, 0] *= 1.001

    runner = GradkernRunner("numpy", wl)
    runner.backend = OffByOne()
    res = check_runner(runner, wl, ref)
    assert not res.ok and res.kernel_check == "failed"
    assert any("matmul_backward.dweight" in m for m in res.messages)


def test_plain_numpy_step_matches_the_backend_step():
    wl = Workload(2, 32, 16, dtype="float64")
    a, b = make_runner("numpy", wl), make_runner("numpy-plain", wl)
    for _ in range(3):
        assert a.step() == pytest.approx(b.step(), rel=1e-12)
    ws = [W for W, _ in wl.plan.param_views(a.bufs.params)]
    for W, W2 in zip(ws, b.Ws, strict=True):
        np.testing.assert_allclose(W, W2, rtol=1e-12, atol=1e-14)


def test_repeats_fit_the_budget():
    runs, inner = plan_repeats(20e-6, 1.0)  # fast steps: many per run
    assert runs * inner * 20e-6 <= 1.0 and inner * 20e-6 >= 0.005
    runs, inner = plan_repeats(0.4, 1.0)  # slow steps: at least 3 runs of one step
    assert (runs, inner) == (3, 1)


def test_scaling_fit_recovers_overhead_and_exponents():
    t0, rate = 50e-6, 100e9  # 50 µs per step, then 100 GFLOP/s
    cells = []
    for d in (1, 2, 4, 8):
        for w in (16, 64, 256, 1024):
            t = t0 + step_flops(d, w, 64) / rate
            cells.append({"impl": "x", "depth": d, "width": w, "batch": 64, "median_us": t * 1e6})
    fit = fit_scaling(cells)["x"]
    o = next(o for o in fit["overhead"] if o["depth"] == 4)
    assert o["overhead_us"] == pytest.approx(50, rel=1e-6)
    assert o["rate_gflops"] == pytest.approx(100, rel=1e-6)
    w = crossover_width(t0, rate, lambda w: step_flops(4, w, 64))
    assert step_flops(4, w, 64) / rate == pytest.approx(t0, rel=1e-6)
    assert o["crossover_width"] == pytest.approx(w, rel=1e-6)
    big = next(e for e in fit["depth_exponents"] if e["width"] == 1024)
    assert big["exponent"] == pytest.approx(big["flops_exponent"], rel=0.02)  # compute-bound
    small = next(e for e in fit["depth_exponents"] if e["width"] == 16)
    assert small["exponent"] < 0.5  # overhead-bound: depth barely matters
    assert overhead_fit([1.0, 2.0], [3.0, 3.0])[1] == math.inf  # flat: all overhead
