"""Experiment: our C GEMM against NumPy's (OpenBLAS) on the three products of backprop.

For each shape (batch B, width C = OC) it checks every product against float64 first
(|x − ref| ≤ 16·u·|A|·|B|, docs/design.md §3), then times each one (median of several runs after
a warm-up) through the C backend's kernels and through np.matmul on the same arrays:
    forward  out = X·W + b          (B, C) x (C, OC)
    dinp     dY·Wᵀ                  (B, OC) x (OC, C)
    dW       Xᵀ·dY (+ db = Σ dY)    (C, B) x (B, OC)
and prints GFLOP/s and the ratio ours / NumPy.

OPENBLAS_CORETYPE is lifted for this process (before NumPy loads) so OpenBLAS runs its best
kernel for this CPU; pass --keep-coretype to leave it. Threads: --threads (default 2) for
both. Run: .venv/bin/python benchmarks/c_gemm_bench.py [--shapes 64x1024,256x1024]
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

CLOCK = time.perf_counter
SETTLE = 0.3  # seconds of quiet before each timing


def median_time(fn, repeats: int, inner: int) -> float:
    # OpenBLAS's threads busy-wait for a while after each call; on 2 cores they would
    # take the cores from whatever is timed next. Let them go to sleep first.
    time.sleep(SETTLE)
    fn()
    fn()  # warm-up: threads started, pages and caches touched
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        for _ in range(inner):
            fn()
        times.append((CLOCK() - t0) / inner)
    return float(np.median(times))


def check(name, got, ref, scale, dtype):
    u = np.finfo(dtype).eps
    err = np.abs(got.astype(np.float64) - ref)
    bound = 16 * u * scale + 1e-300
    if (err > bound).any():
        raise SystemExit(f"{name}: wrong, max err/bound {(err / bound).max():.3g}")


def make_cases(fn, NULL, work, pwork, inputs, outputs, arrays, results, B, C, OC):
    """(name, our call, NumPy's call) for the three products of one shape."""
    pX, pW, pb, pdY = inputs
    pout, pdinp, pdW, pdb = outputs
    X, Wt, b, dY = arrays
    out, dinp, dW, db = results
    return [
        ("forward", lambda: fn.gemm(pout, NULL, pX, pW, pb, B, OC, C, 0, 0, pwork, work.size),
         lambda: (np.matmul(X, Wt, out=out), np.add(out, b, out=out))),
        ("dinp", lambda: fn.gemm(pdinp, NULL, pdY, pW, NULL, B, C, OC, 0, 1, pwork, work.size),
         lambda: np.matmul(dY, Wt.T, out=dinp)),
        ("dW+db", lambda: fn.gemm(pdW, pdb, pX, pdY, NULL, C, OC, B, 1, 0, pwork, work.size),
         lambda: (np.matmul(X.T, dY, out=dW), np.sum(dY, axis=0, out=db))),
    ]


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
        for p in threadpool_info():
            if p.get("internal_api") == "openblas":
                return (f"OpenBLAS {p.get('version')} {p.get('architecture')} "
                        f"x{p.get('num_threads')}")
    except ImportError:
        pass
    return "unknown BLAS"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="64x1024,256x1024", help="BxWIDTH,...")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--keep-coretype", action="store_true")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: process CPU time (all threads), steadier on a loaded machine; "
                         "GFLOP/s are then per busy core-second")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    dt = np.dtype(args.dtype)
    gk.set_threads(args.threads)
    c = gk.backends.get("c")
    info = c.describe()
    tile = info["tile_f32"] if dt == np.float32 else info["tile_f64"]
    print(f"# clock {args.clock}, load {os.getloadavg()[0]:.1f} | C: {info['isa']} tile {tile} "
          f"threads {info['threads']} | "
          f"NumPy: {blas_info()} | OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}")
    print(f"{'shape':>10} {'product':>8} {'ours GF/s':>10} {'numpy GF/s':>11} {'ratio':>6}")
    rng = np.random.default_rng(0)
    for spec in args.shapes.split(","):
        B, W = map(int, spec.split("x"))
        C = OC = W
        X = rng.standard_normal((B, C)).astype(dt)
        Wt = rng.standard_normal((C, OC)).astype(dt)
        b = rng.standard_normal(OC).astype(dt)
        dY = rng.standard_normal((B, OC)).astype(dt)
        out, dinp = np.empty((B, OC), dt), np.empty((B, C), dt)
        dW, db = np.empty((C, OC), dt), np.empty(OC, dt)
        # correctness first
        x64, w64, d64 = X.astype(np.float64), Wt.astype(np.float64), dY.astype(np.float64)
        c.matmul_forward(out, X, Wt, b)
        check("forward", out, x64 @ w64 + b, np.abs(x64) @ np.abs(w64) + np.abs(b), dt)
        c.matmul_backward(dinp, dW, db, dY, X, Wt)
        check("dinp", dinp, d64 @ w64.T, np.abs(d64) @ np.abs(w64).T, dt)
        check("dW", dW, x64.T @ d64, np.abs(x64).T @ np.abs(d64), dt)
        check("db", db, d64.sum(0), np.abs(d64).sum(0), dt)
        # then time; the C calls go straight to the GEMM entry point (no Python checks)
        fn = gk.backends.c_backend.FUNCS[dt]

        def ptr(a, fn=fn):
            return gk.backends.c_backend._ptr(fn, a)

        work = np.zeros(max(fn.gemm_work(B, OC, C), fn.gemm_work(B, C, OC),
                            fn.gemm_work(C, OC, B)), dt)
        pX, pW, pb, pdY = ptr(X), ptr(Wt), ptr(b), ptr(dY)
        pout, pdinp, pdW, pdb, pwork = ptr(out), ptr(dinp), ptr(dW), ptr(db), ptr(work)
        NULL = gk.backends.c_backend.NULL
        cases = make_cases(fn, NULL, work, pwork, (pX, pW, pb, pdY), (pout, pdinp, pdW, pdb),
                           (X, Wt, b, dY), (out, dinp, dW, db), B, C, OC)
        flops = 2.0 * B * C * OC
        total_ours = total_np = 0.0
        for name, ours, ref in cases:
            inner = max(1, int(2e8 / flops))
            t_ours = median_time(ours, args.repeats, inner)
            t_np = median_time(ref, args.repeats, inner)
            total_ours += t_ours
            total_np += t_np
            print(f"{spec:>10} {name:>8} {flops / t_ours / 1e9:10.1f} {flops / t_np / 1e9:11.1f} "
                  f"{t_np / t_ours:6.2f}")
        print(f"{spec:>10} {'all 3':>8} {3 * flops / total_ours / 1e9:10.1f} "
              f"{3 * flops / total_np / 1e9:11.1f} {total_np / total_ours:6.2f}")


if __name__ == "__main__":
    main()
