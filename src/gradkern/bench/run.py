"""The sweep: every implementation on every cell of the grid, checked, then timed."""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field

from .. import backends
from . import ceilings
from .check import check_runner, reference_gradients
from .machine import OtherLoad, ThreadPin
from .timing import time_steps
from .workload import PEERS, TORCH, Workload, make_runner, torch_available

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
    check: bool = True
    seed: int = 0
    progress: bool = True
    notes: list[str] = field(default_factory=list)

    def impls(self) -> list[str]:
        return list(self.backends) + list(self.peers)

    def n_cells(self) -> int:
        return len(self.depths) * len(self.widths) * len(self.batches)


def resolve_impls(cfg: Config) -> Config:
    """Fill in the available backends; drop PyTorch when it cannot be imported."""
    if not cfg.backends:
        cfg.backends = tuple(backends.available())
    for name in cfg.backends:
        backends.get(name)  # raises with the reason when it is not available
    if TORCH in cfg.peers and not torch_available():
        cfg.peers = tuple(p for p in cfg.peers if p != TORCH)
        cfg.notes.append("PyTorch is not importable here: no PyTorch peer in this run.")
    return cfg


def compile_times(cfg: Config) -> dict:
    """First call of each gradkern backend on a tiny network, against its steady step:
    the difference is compilation (or loading), excluded from every other figure."""
    wl = Workload(1, 16, 16, cfg.dtype, cfg.seed)
    out = {}
    for name in cfg.backends:
        runner = make_runner(name, wl)
        t = time_steps(runner.step, max_seconds=0.2)
        out[name] = {"first_call_s": t.first_call_s, "steady_step_s": t.median_us * 1e-6,
                     "compile_s": max(0.0, t.first_call_s - t.median_us * 1e-6),
                     "cell": wl.key()}
    return out


def sweep(cfg: Config) -> dict:
    """Run the grid at each thread count. Returns the raw results (see report.json)."""
    import numpy as np

    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        tqdm = None
    if TORCH in cfg.peers:
        import torch  # noqa: F401  -- loaded before pinning, so its threads get pinned too

    impls = cfg.impls()
    results = {"cells": [], "ceilings": [], "compile": {}, "threads": {}}
    total = len(cfg.threads) * cfg.n_cells() * len(impls)
    bar = tqdm(total=total, unit="run", disable=not cfg.progress or tqdm is None,
               dynamic_ncols=True) if tqdm else None
    t_start = time.perf_counter()
    runs_left = total
    results["load_average_before"] = os.getloadavg()
    whole = OtherLoad().start()
    for n_threads in cfg.threads:
        pinned = ThreadPin(n_threads).apply()
        results["threads"][str(n_threads)] = pinned
        gemm = ceilings.gemm_ceiling(cfg.dtype)
        gemm["threads"] = n_threads
        results["ceilings"].append(gemm)
        fma = ceilings.fma_ceiling(cfg.dtype, n_threads)
        if fma is not None:
            fma["threads"] = n_threads
            results["ceilings"].append(fma)
        results["compile"][str(n_threads)] = compile_times(cfg)
        for batch in cfg.batches:
            for depth in cfg.depths:
                for width in cfg.widths:
                    wl = Workload(depth, width, batch, cfg.dtype, cfg.seed)
                    ref = reference_gradients(wl) if cfg.check else None
                    for impl in impls:
                        if bar is not None:
                            bar.set_description(f"t{n_threads} b{batch} d{depth} w{width} {impl}")
                        seconds = cfg.max_seconds
                        if cfg.budget_s is not None:
                            # what is left, shared evenly; checks and warm-ups take the rest
                            left = cfg.budget_s - (time.perf_counter() - t_start)
                            seconds = max(0.02, min(seconds, 0.5 * left / runs_left))
                        results["cells"].append(_one(impl, wl, ref, n_threads, cfg, seconds))
                        runs_left -= 1
                        if bar is not None:
                            bar.update(1)
                    del wl, ref
                    gc.collect()
        results["threads"][str(n_threads)]["after"] = ThreadPin.report()
    if bar is not None:
        bar.close()
    results["elapsed_s"] = time.perf_counter() - t_start
    results["other_load"] = whole.stop()
    results["load_average_after"] = os.getloadavg()
    results["numpy"] = np.__version__
    return results


def _one(impl: str, wl: Workload, ref, n_threads: int, cfg: Config, seconds: float) -> dict:
    runner = make_runner(impl, wl)
    cell = {"impl": impl, "kind": runner.kind, "threads": n_threads, **wl.key(),
            "flops": wl.flops, "n_params": int(sum(W.size + b.size for W, b in
                                                 wl.plan.param_views(wl.params0))),
            "memory_bytes": None}
    if runner.kind == "gradkern":
        cell["memory_bytes"] = runner.nbytes()
    if cfg.check:
        t0 = time.perf_counter()
        res = check_runner(runner, wl, ref)
        cell["check_s"] = time.perf_counter() - t0
        cell["check"] = res.as_dict()
        if not res.ok:
            cell["status"] = "failed check"
            return cell
    else:
        cell["check"] = {"ok": None, "kernel_check": "not run (--no-check)"}
    meter = OtherLoad().start()
    t0 = time.perf_counter()
    timing = time_steps(runner.step, seconds)
    cell["max_seconds"] = seconds
    cell["timing_s"] = time.perf_counter() - t0
    cell.update(timing.summary())
    cell["other_load"] = meter.stop()
    cell["status"] = "ok"
    cell["gflops"] = wl.flops / (cell["median_us"] * 1e-6) / 1e9
    del runner
    return cell
