"""Numba backend: µs per train_step against the NumPy backend, in one process.

The workload is `gradkern bench`'s (gradkern.bench.workload): depth hidden layers of
`width` units (Dense + ReLU), a Dense(width -> 10) head, softmax cross-entropy, SGD
lr 0.01, batch 64, float32. For each width it first checks that the loss and every
gradient tensor of numba (and of C, when it loads) agree with the numpy backend's, to
1024·u·max|tensor| (the products compound over depth, so this is looser than the
per-kernel 16·u·S of docs/design.md §3, which tests/test_kernels.py checks), then times
train_step: a warm-up, then the median over `--runs` runs of enough steps for ~0.2 s each.
The first numba call (compile, or load from the disk cache) is timed separately.

Run: .venv/bin/python benchmarks/numba_step_bench.py [--threads 2] [--widths 16 64 256 1024]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import gradkern as gk
from gradkern.bench.workload import GradkernRunner, PlainNumpyRunner, Workload

CLOCK = time.perf_counter


def median_us(step, runs: int, budget_s: float = 0.2) -> float:
    for _ in range(3):  # warm-up: caches, BLAS buffers, thread pools
        step()
    t0 = CLOCK()
    step()
    one = max(CLOCK() - t0, 1e-7)
    reps = max(1, int(budget_s / one))
    times = []
    for _ in range(runs):
        t0 = CLOCK()
        for _ in range(reps):
            step()
        times.append((CLOCK() - t0) / reps)
    return float(np.median(times)) * 1e6


def check_agreement(wl: Workload, runner: GradkernRunner, ref: GradkernRunner) -> float:
    """Max over the gradient tensors of |x - numpy| / (1024 u max|numpy|); must be <= 1."""
    loss, grads = runner.gradients()
    rloss, rgrads = ref.gradients()
    u = float(np.finfo(wl.dtype).eps)
    worst = 0.0
    for (dw, db), (rw, rb) in zip(grads, rgrads, strict=True):
        for x, r in ((dw, rw), (db, rb)):
            s = np.abs(r.astype(np.float64)).max() + 1e-30
            worst = max(worst, float(np.abs(x.astype(np.float64) - r).max() / (16 * u * s * 64)))
    if not abs(loss - rloss) <= 64 * u * max(1.0, abs(rloss)):
        raise AssertionError(f"loss {loss} != reference {rloss}")
    if worst > 1.0:
        raise AssertionError(f"gradients disagree with the numpy backend: {worst:.3g} x bound")
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256, 1024])
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time the main thread's CPU time (time.thread_time) instead of wall "
                         "time: robust on a shared, loaded machine, meaningful with --threads 1")
    args = ap.parse_args()
    if args.cpu_time:
        global CLOCK
        CLOCK = time.thread_time

    nb = gk.backends.get("numba")
    gk.set_threads(args.threads)  # numba, C (OpenMP) and every BLAS in the process
    others = [n for n in ("c",) if n in gk.backends.available()]

    # compile (or load from cache) on a tiny workload, timed apart from the steps
    wl0 = Workload(1, 4, 4, args.dtype)
    r0 = GradkernRunner("numba", wl0)
    t0 = time.perf_counter()
    r0.step()
    first = time.perf_counter() - t0
    info = nb.describe()
    print(f"numba {info['numba']}, threading layer {info['threading_layer']}, "
          f"threads {info['threads']}, disk cache {info['disk_cache']}")
    print(f"first train_step call (compile or cache load): {first * 1e3:.0f} ms")
    clock = "main-thread CPU time" if args.cpu_time else "wall time"
    print(f"depth {args.depth}, batch {args.batch}, {args.dtype}, SGD, {args.threads} threads; "
          f"µs/step ({clock}), median of {args.runs} runs; load average {os.getloadavg()[0]:.1f}")
    head = f"{'width':>6} {'numba':>10} {'numpy':>10} {'plain':>10}"
    head += "".join(f" {o:>10}" for o in others)
    head += f" {'numpy/nb':>9} {'plain/nb':>9}" + "".join(f" {'nb/' + o:>9}" for o in others)
    print(head)
    for w in args.widths:
        wl = Workload(args.depth, w, args.batch, args.dtype)
        runners = {n: GradkernRunner(n, wl) for n in ["numba", "numpy", *others]}
        check_agreement(wl, runners["numba"], runners["numpy"])
        for n in others:
            check_agreement(wl, runners[n], runners["numpy"])
        t = {n: median_us(r.step, args.runs) for n, r in runners.items()}
        t["plain"] = median_us(PlainNumpyRunner(wl).step, args.runs)
        row = f"{w:>6} {t['numba']:>10.1f} {t['numpy']:>10.1f} {t['plain']:>10.1f}"
        row += "".join(f" {t[o]:>10.1f}" for o in others)
        row += f" {t['numpy'] / t['numba']:>9.2f} {t['plain'] / t['numba']:>9.2f}"
        row += "".join(f" {t['numba'] / t[o]:>9.2f}" for o in others)
        print(row, flush=True)


if __name__ == "__main__":
    main()
