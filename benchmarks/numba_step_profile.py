"""Experiment: where a Numba training step's time goes (issue 15, "Numba within 1.5x of C").

For a cell of `gradkern bench` (GRID: Dense(w->w)+ReLU x depth, Dense(w->10), MSE, SGD;
or MNIST: 784-512-256-10, cross-entropy, Adam), float32, it times with the backend's own
buffers:
    step     the fused epoch (train_epoch of K minibatches) / K
    grads    _gradients (forward, loss, backward) of one minibatch
    gemms    the same np.dot products in jitted code, nothing else
    npgemm   the same products with NumPy's np.dot (NumPy's own OpenBLAS)
    norm     the sum of squares of the flat gradient
    update   the optimizer pass over the flat parameters
    c        the C backend's fused step, when it loads
Runs of the parts are interleaved (a noisy neighbour hits all alike); each figure is the
median of --repeats runs, with the min and max. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are
unset for this process only, as `gradkern bench` does.

Run: NUMBA_CACHE_DIR=... .venv/bin/python benchmarks/numba_step_profile.py
         [--cells 1024x4x64,1024x1x64,256x4x64,256x4x256,mnist] [--repeats 7]
         [--parts step,c]
A/B of two versions: run it alternately in processes whose PYTHONPATH puts each copy of
the package first (each with its own NUMBA_CACHE_DIR).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if "--keep-coretype" not in sys.argv:
    os.environ.pop("OPENBLAS_CORETYPE", None)
    os.environ.pop("OPENBLAS_L2_SIZE", None)

import numpy as np  # noqa: E402


def run_interleaved(cases: dict, repeats: int, target: float = 0.02) -> dict:
    prepared = {}
    for k, f in cases.items():
        f()
        t0 = time.perf_counter()
        f()
        prepared[k] = (f, max(1, int(target / max(time.perf_counter() - t0, 1e-7))))
    times = {k: [] for k in cases}
    for _ in range(repeats):
        for k, (f, inner) in prepared.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            times[k].append((time.perf_counter() - t0) / inner * 1e6)
    return {k: (float(np.median(v)), float(min(v)), float(max(v))) for k, v in times.items()}


def _probe():
    from numba import njit

    @njit
    def probe(out, inp, W, dW, dinp, need_dinp):  # matmul_forward / _backward's products
        np.dot(inp, W, out)
        if need_dinp:
            np.dot(out, W.T, dinp)
        np.dot(inp.T, out, dW)
    return probe


_gemm_probe = None


def cell_cases(spec: str):
    global _gemm_probe
    _gemm_probe = _gemm_probe or _probe()
    import gradkern.backends.numba_backend as nb
    from gradkern.bench.workload import MNIST, GradkernRunner, Workload

    if spec == "mnist":
        wl = Workload(0, 0, 128, workload=MNIST)
    else:
        w, d, b = (int(v) for v in spec.split("x"))
        wl = Workload(d, w, b)
    r = GradkernRunner("numba", wl)
    plan, bufs, opt = r.plan, r.bufs, r.opt
    be = r.backend
    perm = wl.perms[0]
    x, y = wl.x, wl.y
    cases = {"step": lambda: r.epoch(perm)}
    cases["grads"] = lambda: be.gradients(plan, bufs, x, y)
    views = plan.param_views(bufs.params)
    rng = np.random.default_rng(0)
    shapes = [W.shape for W, _ in views]
    Ws = [np.ascontiguousarray(W) for W, _ in views]
    acts = [rng.standard_normal((wl.batch, s[0])).astype(wl.dtype) for s in shapes]
    outs = [np.empty((wl.batch, s[1]), wl.dtype) for s in shapes]
    dWs = [np.empty(s, wl.dtype) for s in shapes]
    dinps = [np.empty_like(a) for a in acts]

    def gemms():
        for i in range(len(Ws)):
            _gemm_probe(outs[i], acts[i], Ws[i], dWs[i], dinps[i], i > 0)

    def npgemms():
        for i in range(len(Ws)):
            np.dot(acts[i], Ws[i], outs[i])
            if i > 0:
                np.dot(outs[i], Ws[i].T, dinps[i])
            np.dot(acts[i].T, outs[i], dWs[i])

    cases["gemms"] = gemms
    cases["npgemm"] = npgemms
    cases["norm"] = lambda: nb.sum_squares(bufs.grads)
    g = np.zeros_like(bufs.grads)
    p = bufs.params.copy()
    if opt.kind == 0:
        cases["update"] = lambda: nb.sgd_update(p, g, opt.buf1, opt.hyper, 1)
    else:
        cases["update"] = lambda: nb.adam_update(p, g, opt.buf1, opt.buf2, opt.hyper, 1)
    try:
        rc = GradkernRunner("c", wl)
        cases["c"] = lambda: rc.epoch(perm)
    except Exception:  # noqa: BLE001 - no C build: that column is left out
        pass
    return wl, cases


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", default="1024x4x64,1024x1x64,256x4x64,256x4x256,mnist")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", default="", help="time only these parts (e.g. step,c)")
    ap.add_argument("--keep-coretype", action="store_true")
    args = ap.parse_args()
    import gradkern as gk
    gk.set_threads(args.threads)
    for spec in args.cells.split(","):
        wl, cases = cell_cases(spec)
        if args.parts:
            cases = {k: f for k, f in cases.items() if k in args.parts.split(",")}
        k = wl.n_batches
        res = run_interleaved(cases, args.repeats)
        for name in ("step", "c"):
            if name in res:
                res[name] = tuple(v / k for v in res[name])
        print(f"{spec:>10}: " + "  ".join(f"{n} {m:.0f} [{lo:.0f}-{hi:.0f}]"
                                          for n, (m, lo, hi) in res.items()), flush=True)


if __name__ == "__main__":
    main()
