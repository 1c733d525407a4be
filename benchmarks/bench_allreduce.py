"""The cost of data-parallel training on this machine, and a model of it on a cluster
(docs/distributed.md).

    python benchmarks/bench_allreduce.py [--quick] [--json PATH]

launches itself under `mpiexec -n 1` and `-n 2` (loopback, one thread per rank) and, for
models of depth 4 and widths 16..1024 (float32, per-rank batch 64), measures per step:
the Allreduce of the packed gradient buffer, the distributed step (fit(comm=...)), and the
fused single-process epoch (fit without comm) per step. Then it prints the ring-allreduce
model: T_comm(K) = 2(K-1)·alpha + 2(K-1)/K · bytes / bandwidth, speed-up of K nodes with
per-rank batch B = K·T1 / (T1 + T_comm(K)), T1 the measured single-process step.
The machine is shared: read ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WIDTHS = (16, 64, 256, 1024)
BATCH = 64
NETS = {"10 Gb/s Ethernet (alpha 25 us)": (25e-6, 10e9 / 8),
        "100 Gb/s InfiniBand (alpha 2 us)": (2e-6, 100e9 / 8)}
KS = (2, 4, 8, 16, 32, 64)


def _sizes(w: int) -> list[int]:
    return [w, w, w, w, w, 10]


def worker(quick: bool) -> dict:
    from mpi4py import MPI

    import gradkern as gk

    gk.set_threads(1)
    comm = MPI.COMM_WORLD
    K = comm.Get_size()
    out = {}
    for w in WIDTHS:
        model = gk.MLP(_sizes(w), loss="cross_entropy", dtype="float32", seed=0)
        P = model.plan.n_params
        buf = np.zeros(P + 3, dtype=np.float32)
        reps = 20 if quick else (200 if w <= 256 else 50)
        comm.Barrier()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            times.append(time.perf_counter() - t)
        steps = (10 if quick else 40) if w >= 256 else (50 if quick else 300)
        rng = np.random.default_rng(0)
        X = rng.normal(size=(steps * BATCH * K, w)).astype(np.float32)
        y = rng.integers(0, 10, size=X.shape[0])
        dist, fused = [], []
        for _ in range(3):
            m = gk.MLP(_sizes(w), loss="cross_entropy", dtype="float32", seed=0)
            m.fit(X[: BATCH * K], y[: BATCH * K], epochs=1, batch_size=BATCH, comm=comm,
                  progress=False, optimizer=gk.optim.SGD(lr=0.01))  # warm-up (compiles)
            comm.Barrier()
            t = time.perf_counter()
            m.fit(X, y, epochs=1, batch_size=BATCH, comm=comm, progress=False,
                  optimizer=gk.optim.SGD(lr=0.01))
            dist.append((time.perf_counter() - t) / steps)
            f = gk.MLP(_sizes(w), loss="cross_entropy", dtype="float32", seed=0)
            Xf = X[: steps * BATCH]
            f.fit(Xf[:BATCH], y[:BATCH], epochs=1, batch_size=BATCH, progress=False,
                  optimizer=gk.optim.SGD(lr=0.01))
            comm.Barrier()
            t = time.perf_counter()
            f.fit(Xf, y[: steps * BATCH], epochs=1, batch_size=BATCH, progress=False,
                  optimizer=gk.optim.SGD(lr=0.01))
            fused.append((time.perf_counter() - t) / steps)
        out[w] = {"params": P, "bytes": 4 * (P + 3), "allreduce_us": 1e6 * float(np.median(times)),
                  "dist_step_us": 1e6 * float(np.median(dist)),
                  "fused_step_us": 1e6 * float(np.median(fused)), "backend": model.backend_name}
    return out


def ring(alpha: float, bw: float, nbytes: int, K: int) -> float:
    return 2 * (K - 1) * alpha + 2 * (K - 1) / K * nbytes / bw


def report(runs: dict) -> str:
    lines = ["## Measured (loopback, 1 thread per rank, float32, depth 4, batch 64 per rank)",
             "",
             "| width | params | buffer | K | allreduce µs | distributed step µs | "
             "fused step µs | allreduce / step | distributed overhead µs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for K, res in sorted(runs.items()):
        for w in WIDTHS:
            r = res[str(w)]
            lines.append(f"| {w} | {r['params']} | {r['bytes'] / 1024:.1f} KiB | {K} | "
                         f"{r['allreduce_us']:.1f} | {r['dist_step_us']:.1f} | "
                         f"{r['fused_step_us']:.1f} | "
                         f"{r['allreduce_us'] / r['dist_step_us']:.1%} | "
                         f"{r['dist_step_us'] - r['fused_step_us']:.1f} |")
    one = runs[min(runs)]
    for net, (alpha, bw) in NETS.items():
        lines += ["", f"## Model: speed-up of K nodes, {net}, per-rank batch B "
                  "(T1 = the fused step measured here, ×4 for B = 256)", "",
                  "| width | B | T1 µs | " + " | ".join(f"K={K}" for K in KS) + " |",
                  "|---|---|---|" + "---|" * len(KS)]
        for w in WIDTHS:
            r = one[str(w)]
            for B, mult in ((64, 1), (256, 4)):
                t1 = r["fused_step_us"] * 1e-6 * mult
                cells = [f"{K * t1 / (t1 + ring(alpha, bw, r['bytes'], K)):.1f}" for K in KS]
                lines.append(f"| {w} | {B} | {t1 * 1e6:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        res = worker(args.quick)
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_rank() == 0:
            Path(args.worker).write_text(json.dumps(res))
        return 0
    mpiexec = Path(sys.executable).parent / "mpiexec"
    runs = {}
    for K in (1, 2):
        path = Path(f"/tmp/bench_allreduce_{os.getpid()}_{K}.json")
        cmd = [str(mpiexec), "-n", str(K), sys.executable, __file__, "--worker", str(path)]
        subprocess.run(cmd + (["--quick"] if args.quick else []), check=True, timeout=900)
        runs[K] = json.loads(path.read_text())
        path.unlink()
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    print(report(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
