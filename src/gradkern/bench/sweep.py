"""The sweep: every implementation on every cell of the grid, checked, then timed."""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field

from .. import backends
from . import ceilings
from .check import check_runner, reference_epoch, reference_gradients
from .machine import OtherLoad, SpeedProbe, ThreadPin
from .report import BUSY, SLOW
from .timing import time_steps
from .workload import (
    EPOCH_BATCHES,
    GRID,
    JAX,
    MNIST,
    MNIST_BATCH,
    PEERS,
    TORCH,
    Workload,
    init_jax,
    jax_threads,
    make_runner,
    peer_missing,
)

FULL_DEPTHS = (1, 2, 4, 8, 16, 32)
FULL_WIDTHS = (16, 64, 256, 1024)
FULL_BATCHES = (64, 256)
QUICK_DEPTHS = (1, 4)
QUICK_WIDTHS = (16, 256)
QUICK_BATCHES = (64,)


@dataclass
class Config:
    depths: tuple[int, ...] = FULL_DEPTHS
    widths: tuple[int, ...] = FULL_WIDTHS
    batches: tuple[int, ...] = FULL_BATCHES
    backends: tuple[str, ...] = ()  # gradkern backends; empty: every available one
    peers: tuple[str, ...] = PEERS
    dtype: str = "float32"
    threads: tuple[int, ...] = (1,)
    max_seconds: float = 1.0
    budget_s: float | None = None  # whole sweep; per-cell timing budgets shrink to fit it
    retries: int = 2  # passes re-measuring the cells that other processes disturbed
    settle_s: float = 0.25  # sleep before timing: spinning BLAS/OpenMP threads go idle
    probe: SpeedProbe | None = None  # machine speed before/after each timing (set by sweep)
    check: bool = True
    seed: int = 0
    progress: bool = True
    mnist: bool = True  # the MNIST-shaped Adam workload as its own row
    mnist_sizes: tuple[int, ...] | None = None  # None: 784-512-256-10 (the tests shrink it)
    mnist_batch: int = MNIST_BATCH
    epoch_batches: int = EPOCH_BATCHES  # K minibatches per timed epoch
    notes: list[str] = field(default_factory=list)
    unavailable: dict = field(default_factory=dict)  # peer -> why it is not measured

    def impls(self) -> list[str]:
        """Every implementation with a column, the unavailable peers included."""
        return list(self.backends) + list(self.peers)

    def keys(self) -> list[tuple[str, int, int, int]]:
        """(workload, batch, depth, width) of every cell, the MNIST-shaped row last."""
        out = [(GRID, b, d, w) for b in self.batches for d in self.depths for w in self.widths]
        if self.mnist:
            wl = Workload(1, 1, 1, self.dtype, workload=MNIST, sizes=self.mnist_sizes,
                          n_batches=1)
            out.append((MNIST, self.mnist_batch, wl.depth, wl.width))
        return out

    def n_cells(self) -> int:
        return len(self.keys())


def resolve_impls(cfg: Config) -> Config:
    """Fill in the available backends; a peer that cannot be imported keeps its column,
    which says why (cfg.unavailable)."""
    if not cfg.backends:
        cfg.backends = tuple(backends.available())
    for name in cfg.backends:
        backends.get(name)  # raises with the reason when it is not available
    for peer in cfg.peers:
        why = peer_missing(peer)
        if why is not None and peer not in cfg.unavailable:
            cfg.unavailable[peer] = why
            cfg.notes.append(f"`{peer}` is not measured: {why}.")
    return cfg


def _unavailable(cfg: Config, impl: str, n_threads: int) -> str | None:
    if impl in cfg.unavailable:
        return cfg.unavailable[impl]
    if impl == JAX and jax_threads() not in (None, n_threads):
        return (f"XLA's CPU thread pool is sized once per process, when JAX starts: "
                f"{jax_threads()} threads in this run, not {n_threads}")
    return None


def compile_times(cfg: Config) -> dict:
    """First call of each gradkern backend on a tiny network, against its steady step:
    the difference is compilation (or loading), excluded from every other figure."""
    wl = Workload(1, 16, 16, cfg.dtype, cfg.seed, n_batches=cfg.epoch_batches)
    out = {}
    for name in cfg.backends:
        runner = make_runner(name, wl)
        t = time_steps(runner.run, max_seconds=0.2)
        epoch_s = t.median_us * 1e-6
        out[name] = {"first_call_s": t.first_call_s, "steady_epoch_s": epoch_s,
                     "steady_step_s": epoch_s / runner.steps_per_run,
                     "compile_s": max(0.0, t.first_call_s - epoch_s), "cell": wl.key()}
    return out


class _Sweep:
    """The state of one sweep: progress bar, time budget, runs still to do."""

    def __init__(self, cfg: Config, total: int):
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm is a dependency
            tqdm = None
        self.cfg = cfg
        self.impls = cfg.impls()
        self.bar = (tqdm(total=total, unit="run", disable=not cfg.progress, dynamic_ncols=True)
                    if tqdm else None)
        self.t_start = time.perf_counter()
        self.runs_left = total

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def seconds(self) -> float:
        """Timing budget of the next run: --max-seconds, or less to fit --budget-minutes."""
        cfg = self.cfg
        if cfg.budget_s is None:
            return cfg.max_seconds
        # what is left of the budget, shared evenly; checks and warm-ups take the rest
        left = cfg.budget_s - self.elapsed()
        return max(0.02, min(cfg.max_seconds, 0.5 * left / max(self.runs_left, 1)))

    def add_runs(self, n: int) -> None:
        self.runs_left += n
        if self.bar is not None:
            self.bar.total += n
            self.bar.refresh()

    def measure(self, n_threads: int, workload: str, batch: int, depth: int, width: int,
                check: bool) -> list[dict]:
        """Every implementation on one cell, one after the other."""
        cfg = self.cfg
        wl = Workload(depth, width, batch, cfg.dtype, cfg.seed, workload=workload,
                      sizes=cfg.mnist_sizes if workload == MNIST else None,
                      n_batches=cfg.epoch_batches)
        ref = (reference_gradients(wl), reference_epoch(wl)) if check else None
        cells = []
        for impl in self.impls:
            if self.bar is not None:
                where = "mnist" if workload == MNIST else f"d{depth} w{width}"
                self.bar.set_description(f"t{n_threads} b{batch} {where} {impl}")
            cells.append(_one(impl, wl, ref, n_threads, cfg, self.seconds(), check))
            self.runs_left -= 1
            if self.bar is not None:
                self.bar.update(1)
        del wl, ref
        gc.collect()
        return cells

    def grid(self, n_threads: int) -> list[dict]:
        cfg = self.cfg
        grid = {key: self.measure(n_threads, *key, cfg.check) for key in cfg.keys()}
        # a cell measured while a neighbour took CPU time, or while the speed probe ran
        # slower than its best in this run, is measured again, all of its implementations
        # together (side by side); the less disturbed measurement is kept
        for attempt in range(cfg.retries):
            _mark_slowdown(grid)
            busy = [k for k, cells in grid.items() if _disturbed(cells)]
            if not busy:
                break
            if cfg.budget_s is not None and self.elapsed() > cfg.budget_s:
                cfg.notes.append(f"{len(busy)} disturbed cells were not measured again: the "
                                 "time budget was spent.")
                break
            self.add_runs(len(busy) * len(self.impls))
            for key in busy:
                again = self.measure(n_threads, *key, check=False)
                for new, old in zip(again, grid[key], strict=True):
                    if new.get("status") == "unavailable":
                        continue
                    new["check"] = old.get("check")  # the same configuration, checked before
                    new["remeasured"] = attempt + 1
                    new["discarded"] = old.get("discarded", []) + [
                        {"median_us": old.get("median_us"), "other_load": old.get("other_load")}]
                _mark_slowdown(grid, extra=again)
                if _badness(again) < _badness(grid[key]):
                    grid[key] = again
        _mark_slowdown(grid)
        return [c for cells in grid.values() for c in cells]

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def sweep(cfg: Config) -> dict:
    """Run the grid at each thread count. Returns the raw results (see report.json)."""
    import numpy as np

    results = {"cells": [], "ceilings": [], "bandwidth": [], "compile": {}, "threads": {}}
    if TORCH in cfg.peers and TORCH not in cfg.unavailable:
        import torch  # noqa: F401  -- loaded before pinning, so its threads get pinned too
    if JAX in cfg.peers and JAX not in cfg.unavailable:
        results["jax"] = init_jax(cfg.threads[0], cfg.dtype)
        cfg.notes.append(f"JAX {results['jax']['jax']}: XLA's CPU thread pool sized to "
                         f"{results['jax']['threads']} threads ({results['jax']['how']}; "
                         f"XLA_FLAGS={results['jax']['XLA_FLAGS'] or 'unset'}).")
    if cfg.probe is None and cfg.retries > 0:
        cfg.probe = SpeedProbe()
    run = _Sweep(cfg, len(cfg.threads) * cfg.n_cells() * len(cfg.impls()))
    results["load_average_before"] = os.getloadavg()
    whole = OtherLoad().start()
    for n_threads in cfg.threads:
        pinned = ThreadPin(n_threads).apply()
        results["threads"][str(n_threads)] = pinned
        time.sleep(cfg.settle_s)
        gemm = ceilings.gemm_ceiling(cfg.dtype)
        gemm["threads"] = n_threads
        results["ceilings"].append(gemm)
        time.sleep(cfg.settle_s)
        fma = ceilings.fma_ceiling(cfg.dtype, n_threads)
        if fma is not None:
            fma["threads"] = n_threads
            results["ceilings"].append(fma)
        time.sleep(cfg.settle_s)
        results["bandwidth"].append(ceilings.stream_ceiling(n_threads))
        results["compile"][str(n_threads)] = compile_times(cfg)
        results["cells"] += run.grid(n_threads)
        results["threads"][str(n_threads)]["after"] = ThreadPin.report()
    run.close()
    results["elapsed_s"] = run.elapsed()
    results["other_load"] = whole.stop()
    results["load_average_after"] = os.getloadavg()
    results["numpy"] = np.__version__
    return results


def _busy(cells: list[dict]) -> float:
    """The largest share of CPU time other processes took while these cells were timed."""
    return max((c.get("other_load") or 0.0) for c in cells)


def _mark_slowdown(grid: dict, extra: list[dict] = ()) -> None:
    """cell["slowdown"]: how much slower the speed probe ran around this timing than its
    best anywhere in the run (1.0 = the machine at full speed)."""
    cells = [c for cs in grid.values() for c in cs] + list(extra)
    probed = [c for c in cells if c.get("probe")]
    if not probed:
        return
    best = {k: min(c["probe"][k] for c in probed) for k in probed[0]["probe"]}
    for c in probed:
        c["slowdown"] = max(c["probe"][k] / best[k] for k in best)


def _disturbed(cells: list[dict]) -> bool:
    return _busy(cells) > BUSY or max(c.get("slowdown", 1.0) for c in cells) > SLOW


def _badness(cells: list[dict]) -> float:
    """How far a cell's measurement is from an undisturbed one (0: not at all)."""
    return _busy(cells) + max(c.get("slowdown", 1.0) for c in cells) - 1.0


def _one(impl: str, wl: Workload, ref, n_threads: int, cfg: Config, seconds: float,
         check: bool) -> dict:
    cell = {"impl": impl, "kind": "gradkern" if impl in cfg.backends else "peer",
            "threads": n_threads, **wl.key(), "network": wl.describe(),
            "steps_per_run": wl.n_batches, "flops": wl.flops, "bytes_min": wl.bytes_min,
            "n_params": int(sum(W.size + b.size for W, b in wl.plan.param_views(wl.params0))),
            "memory_bytes": None}
    why = _unavailable(cfg, impl, n_threads)
    if why is not None:
        cell.update(status="unavailable", reason=why)
        return cell
    runner = make_runner(impl, wl)
    if runner.kind == "gradkern":
        cell["memory_bytes"] = runner.nbytes()
    if check:
        t0 = time.perf_counter()
        res = check_runner(runner, wl, ref[0], ref_epoch=ref[1])
        cell["check_s"] = time.perf_counter() - t0
        cell["check"] = res.as_dict()
        if not res.ok:
            cell["status"] = "failed check"
            return cell
    elif not cfg.check:
        cell["check"] = {"ok": None, "kernel_check": "not run (--no-check)"}
    # BLAS and OpenMP threads still spinning from the check go idle first
    time.sleep(cfg.settle_s)
    probe = cfg.probe.measure() if cfg.probe else None
    meter = OtherLoad().start()
    t0, cpu0 = time.perf_counter(), time.process_time()
    timing = time_steps(runner.run, seconds)
    wall = time.perf_counter() - t0
    cell["max_seconds"] = seconds
    cell["timing_s"] = wall
    # cores this process kept busy while timing (every thread, spinning ones included):
    # about 1 for a single-threaded step, up to the thread count for a parallel one
    cell["cpu_per_wall"] = (time.process_time() - cpu0) / wall
    # the timed unit is an epoch of K steps: every figure below is per step
    summary = timing.summary()
    k = runner.steps_per_run
    for name in ("median_us", "min_us", "max_us", "q1_us", "q3_us"):
        summary[name] /= k
    summary["samples_us"] = [x / k for x in summary["samples_us"]]
    cell.update(summary)
    cell["other_load"] = meter.stop()
    if probe is not None:
        after = cfg.probe.measure()
        cell["probe"] = {k: max(probe[k], after[k]) for k in probe}
    cell["status"] = "ok"
    cell["gflops"] = wl.flops / (cell["median_us"] * 1e-6) / 1e9
    del runner
    return cell
