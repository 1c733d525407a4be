"""What a per-step learning-rate schedule costs the fused C epoch: µs per minibatch with
OneCycleLR against a constant rate, side by side in one process.

One C call runs a whole epoch either way; the schedule adds the epoch's rates (computed
by `OneCycleLR.rates(n)` in one NumPy pass, as fit does; before that was vectorized it
stepped n times in Python, ~1.3 µs a step) and one float64 array passed to the driver
(`train_epoch(..., lrs=)`). Two figures per size: the driver alone (lrs computed
beforehand) and driver + rates (what fit pays). After a warm-up, `--rounds` rounds time
every mode once each in alternating order, and the median per mode is reported.

Workloads: ReLU MLP 32 -> W x 2 -> 10, float32, SGD(momentum 0.9), 4096 rows; W = 16
(a step is overhead) and W = 256.

Run: .venv/bin/python benchmarks/schedule_cost.py [--rounds 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import gradkern as gk

ROWS, FEATURES, CLASSES = 4096, 32, 10


def setup(width: int, batch: int):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((ROWS, FEATURES)).astype(np.float32)
    y = (X @ rng.standard_normal((FEATURES, CLASSES))).argmax(axis=1).astype(np.int64)
    model = gk.MLP([FEATURES, width, width, CLASSES], activation="relu", loss="cross_entropy",
                   backend="c", dtype="float32", seed=0)
    opt = gk.optim.SGD(lr=0.01, momentum=0.9)
    opt.bind(model.plan.n_params, model.dtype)
    model.bufs.ensure_capacity(batch)
    n_batches = ROWS // batch
    perm = np.arange(ROWS, dtype=np.int64)
    seeds = np.zeros(n_batches, dtype=np.uint64)
    losses, gnorms = np.zeros(n_batches), np.zeros(n_batches)
    return model, opt, X, y, perm, seeds, losses, gnorms, n_batches


def time_width(width: int, batch: int, rounds: int) -> dict[str, float]:
    """Median µs per minibatch of each mode."""
    model, opt, X, y, perm, seeds, losses, gnorms, nb = setup(width, batch)
    be = model.backend
    sched = gk.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05,
                                             total_steps=nb * (rounds + 2) * 3)
    fixed = sched.rates(nb)

    def epoch(lrs=None):
        with np.errstate(over="ignore", invalid="ignore"):
            be.train_epoch(model.plan, model.bufs, X, y, perm, batch, opt, seeds, 0.0,
                           losses, gnorms, **({} if lrs is None else {"lrs": lrs}))

    modes = {"constant": lambda: epoch(),
             "driver": lambda: epoch(fixed),
             "rates+driver": lambda: epoch(sched.rates(nb)),
             "rates": lambda: sched.rates(nb)}
    times = {k: [] for k in modes}
    for f in modes.values():  # warm-up
        f()
    order = list(modes)
    for r in range(rounds):
        for k in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            modes[k]()
            times[k].append((time.perf_counter() - t0) / nb * 1e6)
    return {k: float(np.median(v)) for k, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args(argv)
    gk.set_threads(a.threads)
    print(f"C backend, float32, batch {a.batch}, {ROWS} rows, {a.threads} thread(s), "
          f"median of {a.rounds} alternating rounds; µs per minibatch\n")
    print("| width | constant | OneCycleLR (driver) | OneCycleLR (rates + driver) | "
          "rates alone |")
    print("|---|---|---|---|---|")
    for width in (16, 256):
        med = time_width(width, a.batch, a.rounds)
        print(f"| {width} | {med['constant']:.2f} | {med['driver']:.2f} | "
              f"{med['rates+driver']:.2f} | {med['rates']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
