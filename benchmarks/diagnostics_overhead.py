"""What `fit(..., diagnostics=...)` costs: step time with and without it, in one process.

The workload the issue names: ReLU MLP 64 -> 256 × 8 -> 10, softmax cross-entropy,
float32, SGD(lr=0.01, momentum=0.9), batch 64, 4096 synthetic rows (64 steps an epoch).
For each available backend and each mode (off, diagnostics=True: one record per epoch,
diagnostics=N: one record every N steps), `fit` runs `--epochs` epochs per timing; after
a warm-up of every mode, `--rounds` rounds time every mode once each, in a shuffled
order so that drift in the machine's load falls on all modes alike, and the median per
mode is reported. Overhead = median(mode) / median(off) - 1.

The cost of one record (Recorder.record: a gradient pass on the probe batch, the norms,
the activation statistics) is also timed on its own, which predicts the overhead as
record time / (steps between records × step time), a figure that noise cannot fake.

Run: .venv/bin/python benchmarks/diagnostics_overhead.py [--threads 1] [--rounds 7]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import gradkern as gk
from gradkern.diagnostics import Recorder

ROWS, FEATURES, CLASSES, WIDTH, DEPTH, BATCH = 4096, 64, 10, 256, 8, 64


def synthetic(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian inputs labelled by a random linear teacher: learnable, not trivial."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((ROWS, FEATURES)).astype(np.float32)
    y = (X @ rng.standard_normal((FEATURES, CLASSES))).argmax(axis=1)
    return X, y


def make_model(backend: str) -> gk.MLP:
    return gk.MLP([FEATURES] + [WIDTH] * DEPTH + [CLASSES], activation="relu",
                  loss="cross_entropy", dtype="float32", backend=backend, seed=0)


def time_fit(model, opt, X, y, epochs: int, diagnostics) -> float:
    t0 = time.perf_counter()
    hist = model.fit(X, y, epochs=epochs, batch_size=BATCH, optimizer=opt, progress=False,
                     diagnostics=diagnostics)
    seconds = time.perf_counter() - t0
    if diagnostics is not False:
        assert hist.diagnostics, "diagnostics were asked for and not recorded"
    return seconds


def time_record(model, X, y, reps: int = 30) -> float:
    """Median seconds of one Recorder.record on a BATCH-row probe, as fit takes it."""
    Xc, yc = model._check_Xy(X[:BATCH], y[:BATCH])
    rec = Recorder(model)
    for _ in range(3):
        rec.record(model, Xc, yc, 1, 1)
    times = []
    for k in range(reps):
        t0 = time.perf_counter()
        rec.record(model, Xc, yc, 1, k + 2)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_backend(name: str, modes: dict, X, y, epochs: int, rounds: int,
                  rng: np.random.Generator) -> dict:
    model = make_model(name)
    opt = gk.optim.SGD(lr=0.01, momentum=0.9)
    for diag in modes.values():  # warm-up: compilation, caches, thread pools
        time_fit(model, opt, X, y, 1, diag)
    times: dict[str, list[float]] = {label: [] for label in modes}
    for _ in range(rounds):
        for label in rng.permutation(list(modes)):
            times[label].append(time_fit(model, opt, X, y, epochs, modes[label]))
    record_s = time_record(model, X, y)
    return {label: float(np.median(t)) for label, t in times.items()} | {"record": record_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", nargs="+", default=gk.backends.available())
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for every engine (default 1: steadiest on a shared machine)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per timed fit")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--every", type=int, nargs="+", default=[32, 8],
                    help="the N of diagnostics=N modes (default 32 8)")
    args = ap.parse_args()
    gk.set_threads(args.threads)
    X, y = synthetic()
    steps_per_epoch = ROWS // BATCH
    modes: dict = {"off": False, "True": True}
    modes |= {f"N={n}": n for n in args.every}
    rng = np.random.default_rng(0)
    print(f"ReLU MLP {FEATURES} -> {WIDTH} x {DEPTH} -> {CLASSES}, float32, batch {BATCH}, "
          f"{ROWS} rows ({steps_per_epoch} steps/epoch), {args.threads} thread(s), "
          f"{args.epochs} epoch(s) per fit, median of {args.rounds} interleaved rounds")
    print()
    print("| backend | diagnostics | ms / epoch | µs / step | overhead (measured) | "
          "one record | overhead (predicted) |")
    print("|---|---|---|---|---|---|---|")
    for name in args.backends:
        res = bench_backend(name, modes, X, y, args.epochs, args.rounds, rng)
        base = res["off"]
        step_s = base / (args.epochs * steps_per_epoch)
        for label, diag in modes.items():
            sec = res[label]
            if diag is False:
                measured, predicted = "—", "—"
            else:
                every = steps_per_epoch if diag is True else diag
                measured = f"{100 * (sec / base - 1):+.1f}%"
                predicted = f"{100 * res['record'] / (every * step_s):.1f}%"
            print(f"| {name} | {label} | {1e3 * sec / args.epochs:.1f} | "
                  f"{1e6 * sec / (args.epochs * steps_per_epoch):.0f} | {measured} | "
                  f"{1e6 * res['record']:.0f} µs | {predicted} |", flush=True)


if __name__ == "__main__":
    main()
