"""Experiment: where the C step's time goes on the MNIST-shaped Adam workload (issue 15).

784-512-256-10 (Dense+ReLU, Dense+ReLU, Dense), cross-entropy, Adam lr 1e-3, batch B,
float32. Through the exported kernels on the very shapes of one step it times
    fwd1..3   X·W + b (+ReLU fused in the step, not here)     (B,784)x(784,512), ...
    dX2, dX3  dY·Wᵀ (the first layer needs none)              (B,512)x(256,512)ᵀ, ...
    dW1..3    Xᵀ·dY (+ db)                                    (784,B)x(B,512), ...
    loss      softmax cross-entropy forward and backward      (B,10)
    norm      Σ g² over the 535k-element flat gradient
    adam      the Adam update over the flat parameters
and the whole fused step (train_epoch of K minibatches / K). Median [min] of --repeats
interleaved runs. GRADKERN_C_EXT=/path/to/old.so loads another build; --ab OLD.so
alternates child processes of both builds for --rounds rounds.
Run: .venv/bin/python benchmarks/c_mnist_profile.py [--batch 128] [--threads 2]
     [--ab /tmp/old.so]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

LAYERS = ((784, 512), (512, 256), (256, 10))  # (in, out) of each dense layer


def run_interleaved(cases: dict, repeats: int) -> dict:
    """(median, min, max) seconds per call of every case, the cases' runs interleaved"""
    prepared = {}
    for k, f in cases.items():
        f()
        t0 = time.perf_counter()
        f()
        prepared[k] = (f, max(1, int(0.01 / max(time.perf_counter() - t0, 1e-7))))
    times = {k: [] for k in cases}
    for _ in range(repeats):
        for k, (f, inner) in prepared.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            times[k].append((time.perf_counter() - t0) / inner)
    return {k: (float(np.median(v)), float(min(v)), float(max(v))) for k, v in times.items()}


def profile(B: int, repeats: int) -> dict:
    import gradkern as gk
    from gradkern.backends import c_backend as cb

    fn, NULL, ptr = cb.FUNCS[np.dtype(np.float32)], cb.NULL, cb._ptr
    rng = np.random.default_rng(0)
    f32 = np.float32
    cases = {}
    keep = []
    work_n = max(max(int(fn.gemm_work(B, o, i)), int(fn.gemm_work(B, i, o)),
                     int(fn.gemm_work(i, o, B))) for i, o in LAYERS)
    work = np.zeros(work_n, f32)
    pwork = ptr(fn, work)
    for li, (i, o) in enumerate(LAYERS, start=1):
        X = rng.standard_normal((B, i)).astype(f32)
        W = (rng.standard_normal((i, o)) / np.sqrt(i)).astype(f32)
        b = np.zeros(o, f32)
        dY = rng.standard_normal((B, o)).astype(f32)
        out, dX = np.empty((B, o), f32), np.empty((B, i), f32)
        dW, db = np.empty((i, o), f32), np.empty(o, f32)
        keep.append((X, W, b, dY, out, dX, dW, db))
        pX, pW, pb, pdY = ptr(fn, X), ptr(fn, W), ptr(fn, b), ptr(fn, dY)
        pout, pdX, pdW, pdb = ptr(fn, out), ptr(fn, dX), ptr(fn, dW), ptr(fn, db)
        cases[f"fwd{li}"] = (lambda a=(pout, pX, pW, pb, o, i): fn.gemm(
            a[0], NULL, a[1], a[2], a[3], B, a[4], a[5], 0, 0, pwork, work.size))
        if li > 1:
            cases[f"dX{li}"] = (lambda a=(pdX, pdY, pW, o, i): fn.gemm(
                a[0], NULL, a[1], a[2], NULL, B, a[4], a[3], 0, 1, pwork, work.size))
        cases[f"dW{li}"] = (lambda a=(pdW, pdb, pX, pdY, o, i): fn.gemm(
            a[0], a[1], a[2], a[3], NULL, a[5], a[4], B, 1, 0, pwork, work.size))
    n_params = sum(i * o + o for i, o in LAYERS)
    flat_p = rng.standard_normal(n_params).astype(f32)
    flat_g = (rng.standard_normal(n_params) * 1e-3).astype(f32)
    m1, m2 = np.zeros(n_params, f32), np.zeros(n_params, f32)
    pp, pg, pm1, pm2 = ptr(fn, flat_p), ptr(fn, flat_g), ptr(fn, m1), ptr(fn, m2)
    opt = gk.optim.Adam(lr=1e-9)
    hyper = np.ascontiguousarray(opt.hyper, dtype=np.float64)
    ph = cb.ffi.cast("double *", hyper.ctypes.data)
    cases["norm"] = lambda: fn.sum_squares(pg, n_params)
    cases["adam"] = lambda: fn.adam_update(pp, pm1, pm2, pg, ph, 10, n_params)

    model = gk.Sequential([gk.Dense(512), gk.ReLU(), gk.Dense(256), gk.ReLU(), gk.Dense(10)],
                          input_size=784, loss="cross_entropy", dtype="float32", backend="c",
                          seed=0)
    K = 8
    Xe = rng.standard_normal((K * B, 784)).astype(f32)
    ye = rng.integers(0, 10, K * B).astype(np.int64)
    be, plan, bufs = model.backend, model.plan, model.bufs
    bufs.ensure_capacity(B)
    eopt = gk.optim.Adam(lr=1e-7)
    perm = np.arange(K * B, dtype=np.int64)
    seeds = np.zeros(K, np.uint64)
    losses, gnorms = np.zeros(K), np.zeros(K)

    def epoch():
        be.train_epoch(plan, bufs, Xe, ye, perm, B, eopt, seeds, 0.0, losses, gnorms)

    cases["step"] = epoch
    t = run_interleaved(cases, repeats)
    t["step"] = tuple(x / K for x in t["step"])
    flops = 6 * B * sum(i * o for i, o in LAYERS) - 2 * B * 784 * 512
    return {"B": B, "times": t, "flops": flops, "n_params": n_params}


def report(r: dict) -> None:
    t = r["times"]
    parts = {k: v for k, v in t.items() if k != "step"}
    print(f"# B {r['B']}, {r['n_params']} params; µs median [min] per call")
    for k, v in parts.items():
        print(f"{k:>6} {v[0] * 1e6:8.1f} [{v[1] * 1e6:7.1f}]")
    s = sum(v[0] for v in parts.values())
    print(f"{'Σparts':>6} {s * 1e6:8.1f}")
    print(f"{'step':>6} {t['step'][0] * 1e6:8.1f} [{t['step'][1] * 1e6:7.1f}]  "
          f"{r['flops'] / t['step'][0] / 1e9:.1f} GFLOP/s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--ab", default="", help="old .so: alternate child runs of both builds")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if args.ab:
        ab(args)
        return
    import gradkern as gk
    gk.set_threads(args.threads)
    r = profile(args.batch, args.repeats)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"# threads {args.threads}, load {os.getloadavg()[0]:.1f}, "
              f"ext {os.environ.get('GRADKERN_C_EXT') or 'installed'}")
        report(r)


def ab(args) -> None:
    """before (GRADKERN_C_EXT=args.ab) / after (installed), child processes alternated"""
    base = [sys.executable, __file__, "--json", "--batch", str(args.batch), "--threads",
            str(args.threads), "--repeats", str(args.repeats)]
    runs: dict = {"before": [], "after": []}
    for _ in range(args.rounds):
        for which in ("before", "after"):
            env = dict(os.environ)
            env.pop("GRADKERN_C_EXT", None)
            if which == "before":
                env["GRADKERN_C_EXT"] = args.ab
            res = subprocess.run(base, env=env, capture_output=True, text=True, check=True)
            runs[which].append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"# A/B µs, B {args.batch}, {args.rounds} alternating rounds of child processes, "
          f"threads {args.threads}; median [min-max] over rounds")
    for k in runs["after"][0]["times"]:
        b = [run["times"][k][0] * 1e6 for run in runs["before"]]
        a = [run["times"][k][0] * 1e6 for run in runs["after"]]
        mb, ma = float(np.median(b)), float(np.median(a))
        print(f"{k:>6} {mb:9.1f} [{min(b):.0f}-{max(b):.0f}] {ma:9.1f} "
              f"[{min(a):.0f}-{max(a):.0f}] {mb / ma:7.3f}")


if __name__ == "__main__":
    main()
