"""Experiment: one training step of the C backend against the NumPy backend and the plain
NumPy loop (gradkern.bench.workload), and the per-minibatch overhead of the fused epoch.

Workload: depth 4 (Dense+ReLU ×4, then Dense -> 10, cross-entropy, SGD lr 0.01), batch 64,
float32, 2 threads everywhere. The C step is checked against the NumPy backend's gradients
before anything is timed. Times are the median of several repeats after a warm-up.
Run: .venv/bin/python benchmarks/c_step_bench.py [--widths 16,64,256,1024] [--batch 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if "--keep-coretype" not in sys.argv:
    os.environ.pop("OPENBLAS_CORETYPE", None)

import numpy as np  # noqa: E402

import gradkern as gk  # noqa: E402
from gradkern.bench.workload import GradkernRunner, PlainNumpyRunner, Workload  # noqa: E402
from gradkern.optim import SGD  # noqa: E402


def median_time(fn, budget: float = 0.4, repeats: int = 7) -> float:
    # OpenBLAS's threads busy-wait for a while after each call; on 2 cores they would
    # take the cores from whatever is timed next. Let them go to sleep first.
    time.sleep(0.3)
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(budget / repeats / one))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return float(np.median(times))


def check(wl: Workload) -> None:
    c, ref = GradkernRunner("c", wl), GradkernRunner("numpy", wl)
    loss, grads = c.gradients()
    rloss, rgrads = ref.gradients()
    scale = max(float(np.abs(g).max()) for pair in rgrads for g in pair)
    err = max(float(np.abs(g.astype(np.float64) - r).max())
              for pair, rpair in zip(grads, rgrads, strict=True)
              for g, r in zip(pair, rpair, strict=True))
    if abs(loss - rloss) > 1e-4 * max(1.0, abs(rloss)) or err > 2e-4 * scale:
        raise SystemExit(f"C gradients disagree with NumPy: loss {loss} vs {rloss}, err {err}")


def epoch_overhead(width: int = 16, batch: int = 8, n: int = 4096) -> tuple[float, float, float]:
    """(µs per minibatch of the fused epoch, µs of the same step called straight into C on
    a batch already gathered, µs through Backend.train_step) on a tiny network, so that
    the difference of the first two is the epoch driver's own cost per minibatch: the
    gather of the rows plus the loop."""
    from gradkern.backends import c_backend as cb

    model = gk.Sequential([gk.Dense(width), gk.ReLU(), gk.Dense(2)], input_size=width,
                          loss="cross_entropy", dtype="float32", backend="c")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, width)).astype(np.float32)
    y = rng.integers(0, 2, n)
    be, plan, bufs = model.backend, model.plan, model.bufs
    bufs.ensure_capacity(batch)
    opt = SGD(lr=0.01)
    nb = n // batch
    perm = rng.permutation(n).astype(np.int64)
    seeds = np.zeros(nb, np.uint64)
    losses, gnorms = np.zeros(nb), np.zeros(nb)
    t_epoch = median_time(lambda: be.train_epoch(plan, bufs, X, y, perm, batch, opt, seeds, 0.0,
                                                 losses, gnorms)) / nb
    # the same step straight into C: nb calls in a loop, less the loop's own cost
    xb, yb = X[:batch].copy(), y[:batch].astype(np.int64)
    fn, st, ost = cb.FUNCS[plan.dtype], be._model(plan, bufs), be._optim(opt)
    px, py, out = cb._ptr(fn, xb), cb._i64ptr(yb), st.out

    def direct():
        for _ in range(nb):
            fn.train_step(st.m, ost.o, out, out + 1, px, cb.NULL, py, batch, 0, 0.0)

    def empty():
        for _ in range(nb):
            pass

    t_direct = (median_time(direct) - median_time(empty)) / nb
    t_step = median_time(lambda: be.train_step(plan, bufs, xb, yb, opt))
    return t_epoch * 1e6, t_direct * 1e6, t_step * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", default="16,64,256,1024")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep-coretype", action="store_true")
    args = ap.parse_args()
    gk.set_threads(args.threads)
    print(f"# {gk.backends.info('c')['isa']}, threads {args.threads}, depth {args.depth}, "
          f"batch {args.batch}, float32; load {os.getloadavg()[0]:.1f}")
    print(f"{'width':>6} {'c µs':>9} {'numpy-be µs':>11} {'plain µs':>9} {'c GF/s':>7} "
          f"{'vs numpy-be':>11} {'vs plain':>8}")
    for w in map(int, args.widths.split(",")):
        wl = Workload(args.depth, w, args.batch, "float32")
        check(wl)
        runners = {"c": GradkernRunner("c", wl), "numpy": GradkernRunner("numpy", wl),
                   "plain": PlainNumpyRunner(wl)}
        t = {k: median_time(r.step) for k, r in runners.items()}
        print(f"{w:6d} {t['c'] * 1e6:9.1f} {t['numpy'] * 1e6:11.1f} {t['plain'] * 1e6:9.1f} "
              f"{wl.flops / t['c'] / 1e9:7.1f} {t['numpy'] / t['c']:11.1f} "
              f"{t['plain'] / t['c']:8.1f}")
    per_batch, direct, per_step = epoch_overhead()
    print(f"# fused epoch, Dense(16)+ReLU+Dense(2), batch 8: {per_batch:.2f} µs per minibatch; "
          f"the same step called straight into C: {direct:.2f} µs (epoch driver overhead "
          f"{per_batch - direct:.2f} µs per minibatch); through Backend.train_step: "
          f"{per_step:.2f} µs")


if __name__ == "__main__":
    main()
