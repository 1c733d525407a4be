"""Experiment: prange in the optimizer / gradient-norm passes, or one thread, inside a step.

Inside one train_step the matmuls run on BLAS's threads (OpenBLAS pthreads) and a
prange runs on numba's (OpenMP). Both pools spin for a while after their work, so
alternating them on 2 cores may oversubscribe. This times train_step of the bench
workload (depth 4, batch 64, float32) with backend.par_min at 2**62 (passes serial)
against 2**17 (prange from 131072 elements), SGD and Adam, interleaved A/B runs,
min and median µs/step.
Run: .venv/bin/python benchmarks/numba_par_bench.py
"""

import time

import numpy as np

import gradkern as gk
from gradkern.bench.workload import Workload
from gradkern.optim import SGD, Adam
from gradkern.plan import Buffers


def time_step(be, plan, bufs, x, y, opt, reps):
    t0 = time.perf_counter()
    for _ in range(reps):
        be.train_step(plan, bufs, x, y, opt)
    return (time.perf_counter() - t0) / reps * 1e6


def main():
    be = gk.backends.get("numba")
    gk.set_threads(2)
    for width in (256, 512, 1024):
        wl = Workload(4, width, 64)
        for make in (lambda: SGD(lr=1e-3), lambda: Adam(lr=1e-4)):
            res = {}
            bufs = Buffers(wl.plan, 64)
            bufs.params[...] = wl.params0
            opt = make()
            opt.bind(wl.plan.n_params, wl.plan.dtype)
            reps = max(3, int(2e8 / (wl.flops + 1)))
            for par_min in (1 << 62, 1 << 17):
                be.par_min = par_min
                time_step(be, wl.plan, bufs, wl.x, wl.y, opt, 3)
            for _ in range(5):
                for par_min in (1 << 62, 1 << 17):
                    be.par_min = par_min
                    res.setdefault(par_min, []).append(
                        time_step(be, wl.plan, bufs, wl.x, wl.y, opt, reps))
            name = type(opt).__name__
            print(f"width {width:5d} {name:4s} n_params {wl.plan.n_params:8d}: "
                  f"serial min {min(res[1 << 62]):9.1f} med {np.median(res[1 << 62]):9.1f} | "
                  f"prange min {min(res[1 << 17]):9.1f} med {np.median(res[1 << 17]):9.1f} us",
                  flush=True)


if __name__ == "__main__":
    main()
