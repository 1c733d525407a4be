"""gradkern bench: the quick report, the comparison of two runs, and the instrument's parts."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

import gradkern.bench as bench
import gradkern.bench.sweep as sweep_module
import gradkern.bench.workload as workload_module
from gradkern.backends.numpy_backend import NumpyBackend
from gradkern.bench.ceilings import stream_bandwidth
from gradkern.bench.check import check_runner, reference_epoch, reference_gradients
from gradkern.bench.machine import LIFTED_MARK, all_cores
from gradkern.bench.report import KEY_FIELDS, cell_key, fmt_us, roofline
from gradkern.bench.scaling import crossover_width, fit_scaling, overhead_fit, step_flops
from gradkern.bench.timing import plan_repeats
from gradkern.bench.workload import (
    GradkernRunner,
    PlainNumpyRunner,
    Workload,
    build_plan,
    make_runner,
    min_bytes,
)
from gradkern.contract import Layer

# JAX has tests of its own below (CI has no JAX); the MNIST-shaped row has a tiny one
QUICK = ["--quick", "--no-torch", "--no-jax", "--no-mnist", "--keep-blas-env", "--no-progress",
         "--max-seconds", "0.05", "--retries", "0", "--settle", "0.02", "--epoch-batches", "2"]
TINY = ["--depths", "1", "--widths", "8", "--batches", "8", "--backends", "numpy", "--no-torch",
        "--keep-blas-env", "--no-progress", "--no-plots", "--max-seconds", "0.01", "--retries",
        "0", "--settle", "0", "--epoch-batches", "2"]


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
    assert "jax" not in cfg["impls"] and cfg["mnist"] is False
    assert "numpy" in cfg["backends"]
    bw, = data["bandwidth"]
    assert bw["gbps"] > 0 and bw["threads"] == cfg["threads"][0]
    keys = {cell_key(c) for c in data["cells"]}
    expected = {(i, t, cfg["dtype"], b, d, w, "grid") for i in cfg["impls"]
                for t in cfg["threads"] for b in cfg["batches"] for d in cfg["depths"]
                for w in cfg["widths"]}
    assert keys == expected and len(data["cells"]) == len(expected)
    for c in data["cells"]:
        assert c["status"] == "ok", c
        assert c["check"]["ok"] is True and c["check"]["epoch_check"] == "passed"
        assert c["steps_per_run"] == 2 and c["bytes_min"] > 0
        r = c["roofline"]
        assert r["bound_us"] == max(r["compute_us"], r["memory_us"]) > 0
        assert r["x_bound"] == pytest.approx(c["median_us"] / r["bound_us"])
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
        assert r["runs×epochs"] == f"{c['runs']}×{c['inner']}"
    cfg = data["config"]
    t, b = cfg["threads"][0], cfg["batches"][0]
    wide = md_table(md, f"## Step time, batch {b}, {t} thread")
    for r in wide:
        for impl in cfg["impls"]:
            c = cells[(impl, str(t), cfg["dtype"], str(b), r["depth"], r["width"], "grid")]
            assert r[impl] == fmt_us(c["median_us"])
    roof = md_table(md, f"### Roofline, batch {b}, {t} thread")
    assert len(roof) == len(wide)
    for r in roof:
        for impl in cfg["impls"]:
            c = cells[(impl, str(t), cfg["dtype"], str(b), r["depth"], r["width"], "grid")]
            assert r[f"{impl} × bound"] == f"{c['roofline']['x_bound']:.3g}"
            assert r["bound"] == c["roofline"]["bound"]


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
    # reports written before the workload field (as these) are grid cells
    assert "| numpy | 2 | float32 | 64 | 1 | 16 | grid | 100.0 | 150.0 | 1.5 | REGRESSION |" in md


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
            "--no-torch", "--no-jax", "--no-mnist", "--keep-blas-env", "--no-progress",
            "--no-plots", "--max-seconds", "0.01", "--epoch-batches", "2", "--out", str(out)]
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
    assert plan.loss == "mse"
    wl = Workload(1, 8, 4, workload="mnist")
    assert wl.sizes == [784, 512, 256, 10] and (wl.loss, wl.optimizer) == ("cross_entropy",
                                                                           "adam")
    assert (wl.depth, wl.width) == (2, 512)


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


@pytest.mark.parametrize("kind", ["grid", "mnist"])
def test_plain_numpy_epoch_matches_the_backend_epoch(kind):
    wl = Workload(2, 32, 16, dtype="float64", workload=kind, sizes=None if kind == "grid"
                  else [20, 16, 12, 10], n_batches=3)
    a, b = make_runner("numpy", wl), make_runner("numpy-plain", wl)
    for perm in wl.perms:  # three shuffles, the same for both
        np.testing.assert_allclose(a.epoch(perm), b.epoch(perm), rtol=1e-12)
    for (W, bb), (W2, b2) in zip(a.params(), b.params(), strict=True):
        np.testing.assert_allclose(W, W2, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(bb, b2, rtol=1e-12, atol=1e-14)


def test_every_engine_gets_the_same_shuffled_minibatches():
    wl = Workload(1, 8, 4, n_batches=3)
    assert wl.X.shape == (12, 8) and wl.Y.shape == (12, 10)
    assert len({tuple(p) for p in wl.perms}) == len(wl.perms)
    for p in wl.perms:
        assert sorted(p) == list(range(12))
    np.testing.assert_array_equal(wl.x, wl.X[wl.perms[0][:4]])
    r = make_runner("numpy-plain", wl)
    seen = []
    r.epoch = seen.append
    for _ in range(4):
        r.run()
    assert [s is p for s, p in zip(seen, wl.perms + wl.perms[:1], strict=True)] == [True] * 4


def test_epoch_check_catches_a_wrong_update():
    wl = Workload(1, 16, 8, n_batches=2)
    ref, ref_epoch = reference_gradients(wl), reference_epoch(wl)
    assert check_runner(make_runner("numpy-plain", wl), wl, ref, ref_epoch=ref_epoch).ok

    class Sloppy(PlainNumpyRunner):  # gradients right, the learning rate 10 % off
        def _update(self, grads):
            super()._update([(1.1 * dW, 1.1 * db) for dW, db in grads])

    res = check_runner(Sloppy(wl), wl, ref, ref_epoch=ref_epoch)
    assert not res.ok and res.epoch_check == "failed" and res.grad_rel_err < 1e-5
    assert any("epoch parameters" in m for m in res.messages)


def test_roofline_bounds_by_hand():
    # 3-4-2: P = 3·4 + 4 + 4·2 + 2 = 26, weights behind the input gradient 4·2 = 8,
    # activations per row 2·3 + 4·4 + 5·2 = 32
    assert min_bytes([3, 4, 2], 5, 4) == 4 * (5 * 26 + 8 + 5 * 32)
    assert min_bytes([3, 4, 2], 5, 4, adam=True) == 4 * (9 * 26 + 8 + 5 * 32)
    cell = {"flops": 2e9, "bytes_min": 4e9, "median_us": 100e3}
    r = roofline(cell, {"sgemm": 100.0, "fma": 300.0}, 10.0)  # 20 ms compute, 400 ms memory
    assert r["compute_us"] == pytest.approx(20e3) and r["memory_us"] == pytest.approx(400e3)
    assert r["bound"] == "memory" and r["x_bound"] == pytest.approx(0.25)
    r = roofline(cell, {"sgemm": 100.0}, 1000.0)
    assert r["bound"] == "compute" and r["x_bound"] == pytest.approx(5.0)
    assert roofline(cell, {}, None)["x_bound"] is None
    bw = stream_bandwidth(threads=2, nbytes=2**20, repeats=2)
    assert bw["gbps"] > 0 and bw["bytes"] == 2 * 2**20


def test_a_missing_peer_keeps_a_column_that_says_why(tmp_path, monkeypatch):
    real = sweep_module.peer_missing
    monkeypatch.setattr(sweep_module, "peer_missing", lambda name: (
        "jax is not importable here (ModuleNotFoundError: No module named 'jax')"
        if name == "jax" else real(name)))
    out = tmp_path / "r"
    assert bench.main(TINY + ["--no-mnist", "--out", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    assert "jax" in data["config"]["impls"] and "jax" in data["unavailable"]
    cell, = [c for c in data["cells"] if c["impl"] == "jax"]
    assert cell["status"] == "unavailable" and "not importable" in cell["reason"]
    md = (out / "report.md").read_text()
    row, = md_table(md, "## Step time, batch 8")
    assert row["jax"] == "n/a: not installed" and row["numpy"] != "n/a: not installed"
    assert "`jax` is not measured: jax is not importable" in md


def test_mnist_shaped_adam_row(tmp_path, monkeypatch):
    """Its own row for every engine; a tiny stand-in for 784-512-256-10 keeps it fast."""
    monkeypatch.setattr(workload_module, "MNIST_SIZES", (12, 16, 8, 10))
    out = tmp_path / "r"
    assert bench.main(TINY + ["--no-jax", "--out", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    rows = [c for c in data["cells"] if c["workload"] == "mnist"]
    assert {c["impl"] for c in rows} == {"numpy", "numpy-plain"}
    for c in rows:
        assert c["status"] == "ok" and c["batch"] == 128 and (c["depth"], c["width"]) == (2, 16)
        assert c["check"]["epoch_check"] == "passed"
        assert c["check"]["worst_kernel"] or c["kind"] == "peer"
        assert c["network"].startswith("12-16-8-10, ReLU, cross_entropy, Adam")
        assert c["bytes_min"] == min_bytes([12, 16, 8, 10], 128, 4, adam=True)
    md = (out / "report.md").read_text()
    assert {r["impl"] for r in md_table(md, "## MNIST-shaped workload")} == {"numpy",
                                                                             "numpy-plain"}
    t = str(data["config"]["threads"][0])
    assert "b128_d2_w16" not in data["fastest"][t]  # scaling fits and winners: the grid only
    assert set(data["fastest"][t]) == {"b8_d1_w8"}


# ---- JAX: skipped where it is not installed (CI) ------------------------------------------

@pytest.mark.parametrize("kind", ["grid", "mnist"])
def test_jax_epoch_passes_its_agreement_check(kind, monkeypatch):
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    info = workload_module.init_jax(all_cores())
    assert info["threads"] == all_cores()
    wl = Workload(2, 24, 8, workload=kind, sizes=None if kind == "grid" else [20, 16, 12, 10],
                  n_batches=3)
    ref, ref_epoch = reference_gradients(wl), reference_epoch(wl)
    res = check_runner(make_runner("jax", wl), wl, ref, ref_epoch=ref_epoch)
    assert res.ok and res.epoch_check == "passed", res.messages
    assert 0 < res.epoch_ratio <= 1
    # the same check fails a JAX epoch with another learning rate
    monkeypatch.setattr(workload_module, "LR", 0.015)
    monkeypatch.setattr(workload_module, "ADAM_LR", 1.5e-3)
    res = check_runner(make_runner("jax", wl), wl, ref, ref_epoch=ref_epoch)
    assert not res.ok and res.epoch_check == "failed"


def test_jax_thread_pool_is_sized_to_the_run(tmp_path):
    """XLA sizes its pool from the CPU affinity when it starts: narrowed to 1 core for the
    start only (in a subprocess: JAX starts once per process)."""
    pytest.importorskip("jax")
    if all_cores() < 2:
        pytest.skip("needs 2 usable cores")
    import subprocess
    import sys

    code = ("import os, json; from gradkern.bench.workload import init_jax; "
            "before = sorted(os.sched_getaffinity(0)); info = init_jax(1); "
            "print(json.dumps([info, before == sorted(os.sched_getaffinity(0))]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    info, restored = json.loads(r.stdout.strip().splitlines()[-1])
    assert restored and info["threads"] == 1 and "narrowed to 1" in info["how"]
    assert "--xla_cpu_multi_thread_eigen=false" in info["XLA_FLAGS"]


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
