"""Experiment: where a C training step's time goes at widths >= 256 (issue 15 item 3).

For depth d (Dense(w->w)+ReLU x d, then Dense(w->10), MSE, plain SGD), batch B, float32,
it times, through the exported kernels on the very shapes of one step:
    fwd    out = X·W + b            (B, w) x (w, w)        one per dense layer
    dX     dY·Wᵀ                    (B, w) x (w, w)ᵀ       every layer but the first
    dW     Xᵀ·dY (+ db)             (w, B) x (B, w)        one per dense layer
    norm   Σ g² over the flat gradient
    sgd    p -= lr·g over the flat parameters
and the whole fused step (train_epoch of K minibatches / K), each against NumPy's sgemm
(OpenBLAS, pin lifted for this process) on the same products. Every figure is the median
of --repeats timed runs after a warm-up; runs of the parts are interleaved with each other
so a noisy neighbour hits all of them alike.

GRADKERN_C_EXT=/path/to/old.so loads another build: run this twice (or --ab OLD.so, which
interleaves two child processes) to compare builds.
Run: .venv/bin/python benchmarks/c_step_profile.py [--cells 256x4,1024x1,1024x4]
     [--batches 64,256] [--threads 2] [--ab /tmp/old.so]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

if "--keep-coretype" not in sys.argv:
    os.environ.pop("OPENBLAS_CORETYPE", None)
    os.environ.pop("OPENBLAS_L2_SIZE", None)

import numpy as np  # noqa: E402


def timer(fn, target: float = 0.01) -> tuple:
    """(fn, inner) with inner calls lasting about `target` seconds."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    return fn, max(1, int(target / one))


def run_interleaved(cases: dict, repeats: int) -> dict:
    """median seconds per call of every case, the cases' runs interleaved"""
    prepared = {k: timer(f) for k, f in cases.items()}
    times = {k: [] for k in cases}
    for _ in range(repeats):
        for k, (f, inner) in prepared.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            times[k].append((time.perf_counter() - t0) / inner)
    return {k: (float(np.median(v)), float(min(v)), float(max(v))) for k, v in times.items()}


def cell(w: int, depth: int, B: int, repeats: int) -> dict:
    import gradkern as gk
    from gradkern.backends import c_backend as cb
    from gradkern.bench.workload import Workload

    fn, NULL, ptr = cb.FUNCS[np.dtype(np.float32)], cb.NULL, cb._ptr
    rng = np.random.default_rng(0)
    f32 = np.float32
    X = rng.standard_normal((B, w)).astype(f32)
    W = (rng.standard_normal((w, w)) / np.sqrt(w)).astype(f32)
    b = np.zeros(w, f32)
    dY = rng.standard_normal((B, w)).astype(f32)
    out, dX = np.empty((B, w), f32), np.empty((B, w), f32)
    dW, db = np.empty((w, w), f32), np.empty(w, f32)
    work = np.zeros(max(int(fn.gemm_work(B, w, w)), int(fn.gemm_work(w, w, B)), 1), f32)
    pX, pW, pb, pdY = ptr(fn, X), ptr(fn, W), ptr(fn, b), ptr(fn, dY)
    pout, pdX, pdW, pdb, pwork = ptr(fn, out), ptr(fn, dX), ptr(fn, dW), ptr(fn, db), ptr(fn, work)
    wl = Workload(depth, w, B, "float32")
    n_params = sum(a * c + c for a, c in zip(wl.sizes[:-1], wl.sizes[1:], strict=True))
    flat_p = rng.standard_normal(n_params).astype(f32)
    flat_g = rng.standard_normal(n_params).astype(f32)
    pp, pg = ptr(fn, flat_p), ptr(fn, flat_g)
    hyper = np.zeros(32)
    hyper[0] = 1e-9
    ph = cb.ffi.cast("double *", hyper.ctypes.data)

    model = gk.Sequential([layer for _ in range(depth) for layer in (gk.Dense(w), gk.ReLU())]
                          + [gk.Dense(10)], input_size=w, loss="mse", dtype="float32",
                          backend="c", seed=0)
    K = 8
    Xe = rng.standard_normal((K * B, w)).astype(f32)
    Ye = rng.standard_normal((K * B, 10)).astype(f32)
    be, plan, bufs = model.backend, model.plan, model.bufs
    bufs.ensure_capacity(B)
    opt = gk.optim.SGD(lr=1e-6)
    perm = np.arange(K * B, dtype=np.int64)
    seeds = np.zeros(K, np.uint64)
    losses, gnorms = np.zeros(K), np.zeros(K)

    def epoch():
        be.train_epoch(plan, bufs, Xe, Ye, perm, B, opt, seeds, 0.0, losses, gnorms)

    WT = W.T
    c_cases = {
        "fwd": lambda: fn.gemm(pout, NULL, pX, pW, pb, B, w, w, 0, 0, pwork, work.size),
        "dX": lambda: fn.gemm(pdX, NULL, pdY, pW, NULL, B, w, w, 0, 1, pwork, work.size),
        "dW": lambda: fn.gemm(pdW, pdb, pX, pdY, NULL, w, w, B, 1, 0, pwork, work.size),
        "norm": lambda: fn.sum_squares(pg, n_params),
        "sgd": lambda: fn.sgd_update(pp, NULL, pg, ph, 1, n_params),
        "step": epoch,
    }
    np_cases = {
        "np_fwd": lambda: np.matmul(X, W, out=out),
        "np_dX": lambda: np.matmul(dY, WT, out=dX),
        "np_dW": lambda: np.matmul(X.T, dY, out=dW),
    }
    # OpenBLAS's threads spin after each call and would take the cores from OpenMP's:
    # NumPy's products are timed apart, after they have gone to sleep
    t = run_interleaved(c_cases, repeats)
    time.sleep(0.3)
    t.update(run_interleaved(np_cases, repeats))
    time.sleep(0.3)
    t["step"] = tuple(x / K for x in t["step"])
    d = depth  # d hidden w x w layers + the head (w x 10), which is cheap
    parts = {"fwd": d * t["fwd"][0], "dX": (d - 1) * t["dX"][0], "dW": d * t["dW"][0],
             "norm": t["norm"][0], "sgd": t["sgd"][0]}
    np_parts = d * t["np_fwd"][0] + (d - 1) * t["np_dX"][0] + d * t["np_dW"][0]
    return {"cell": f"{w}x{depth}", "B": B, "times": t, "parts": parts, "np_gemms": np_parts,
            "flops": wl.flops}


def report(rows: list) -> None:
    print(f"{'cell':>8} {'B':>4} {'step µs':>9} {'Σparts':>8} {'fwd':>7} {'dX':>7} {'dW':>7} "
          f"{'norm':>6} {'sgd':>6} | {'np fwd':>7} {'np dX':>7} {'np dW':>7} {'GF/s':>6} "
          f"{'np-gemm-only µs':>15}")
    for r in rows:
        t, p = r["times"], r["parts"]
        print(f"{r['cell']:>8} {r['B']:4d} {t['step'][0] * 1e6:9.1f} "
              f"{sum(p.values()) * 1e6:8.1f} {t['fwd'][0] * 1e6:7.1f} {t['dX'][0] * 1e6:7.1f} "
              f"{t['dW'][0] * 1e6:7.1f} {t['norm'][0] * 1e6:6.1f} {t['sgd'][0] * 1e6:6.1f} | "
              f"{t['np_fwd'][0] * 1e6:7.1f} {t['np_dX'][0] * 1e6:7.1f} "
              f"{t['np_dW'][0] * 1e6:7.1f} {r['flops'] / t['step'][0] / 1e9:6.1f} "
              f"{r['np_gemms'] * 1e6:15.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", default="256x4,1024x1,1024x4")
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print one JSON line (for --ab)")
    ap.add_argument("--ab", default="", help="old .so: interleave child runs of both builds")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--keep-coretype", action="store_true")
    args = ap.parse_args()
    if args.ab:
        ab(args)
        return
    import gradkern as gk
    gk.set_threads(args.threads)
    rows = []
    for c in args.cells.split(","):
        w, d = map(int, c.split("x"))
        for B in map(int, args.batches.split(",")):
            rows.append(cell(w, d, B, args.repeats))
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"# threads {args.threads}, float32, load {os.getloadavg()[0]:.1f}, "
              f"ext {os.environ.get('GRADKERN_C_EXT') or 'installed'}")
        report(rows)


def ab(args) -> None:
    """before (GRADKERN_C_EXT=args.ab) / after (installed build), child processes
    alternated for --rounds rounds; per cell the median step of each, the ratio, spread"""
    base = [sys.executable, __file__, "--json", "--cells", args.cells, "--batches",
            args.batches, "--threads", str(args.threads), "--repeats", str(args.repeats)]
    runs: dict = {"before": [], "after": []}
    for _ in range(args.rounds):
        for which in ("before", "after"):
            env = dict(os.environ)
            env.pop("GRADKERN_C_EXT", None)
            if which == "before":
                env["GRADKERN_C_EXT"] = args.ab
            res = subprocess.run(base, env=env, capture_output=True, text=True, check=True)
            runs[which].append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"# A/B step µs, {args.rounds} alternating rounds of child processes, "
          f"threads {args.threads}; median [min-max] over rounds")
    print(f"{'cell':>8} {'B':>4} {'before':>22} {'after':>22} {'before/after':>12}")
    for i, r in enumerate(runs["after"][0]):
        b = [run[i]["times"]["step"][0] * 1e6 for run in runs["before"]]
        a = [run[i]["times"]["step"][0] * 1e6 for run in runs["after"]]
        mb, ma = float(np.median(b)), float(np.median(a))
        print(f"{r['cell']:>8} {r['B']:4d} {mb:9.1f} [{min(b):.0f}-{max(b):.0f}] "
              f"{ma:9.1f} [{min(a):.0f}-{max(a):.0f}] {mb / ma:12.3f}")


if __name__ == "__main__":
    main()
