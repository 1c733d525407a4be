"""Experiment: A/B of the C GEMM and streaming kernels of two builds in ONE process.

The old build (a copy of a previous _gradkern_c*.so) is loaded beside the installed one
under another module name; both are called on the same arrays, their timed runs alternated
(old, new, old, new, ...), so a neighbour slowing the machine hits both alike. Per kernel
at the shapes of a training step (forward X·W, input gradient dY·Wᵀ, weight gradient Xᵀ·dY
with db, the gradient norm Σg², plain SGD): median and min of --repeats runs, and the ratio.
Results are compared too (bit-identical unless the build changed an order of summation).
Run: .venv/bin/python benchmarks/c_kernel_ab.py OLD.so [--shapes 64x256,256x256,64x1024]
     [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np


def load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(f"{name}._gradkern_c", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_calls(ffi, lib, outputs, inputs, pk, nw, ph, B, w, P, outs, tag) -> dict:
    """the five kernels of one build on one shape, as calls without arguments"""
    po, pdx, pdw, pdb, pp = outputs
    px, pw, pb, pdy, pg = inputs
    N = ffi.NULL

    def norm():
        outs[tag + "norm"] = lib.gk_sum_squares_f32(pg, P)

    return {
        "fwd": lambda: lib.gk_gemm_f32(po, N, px, pw, pb, B, w, w, 0, 0, pk, nw),
        "dX": lambda: lib.gk_gemm_f32(pdx, N, pdy, pw, N, B, w, w, 0, 1, pk, nw),
        "dW": lambda: lib.gk_gemm_f32(pdw, pdb, px, pdy, N, w, w, B, 1, 0, pk, nw),
        "norm": norm,
        "sgd": lambda: lib.gk_sgd_update_f32(pp, N, pg, ph, 1, P),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("--shapes", default="64x256,256x256,64x1024,256x1024")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--params", type=int, default=0, help="flat size of norm/sgd (0: w*w)")
    args = ap.parse_args()
    from gradkern.backends import c_backend as cb
    mods = {"old": load(args.old, "gk_old"), "new": cb._ext}
    for m in mods.values():
        m.lib.gk_set_threads(args.threads)
    rng = np.random.default_rng(0)
    f32 = np.float32
    print(f"# threads {args.threads}; µs median [min] of {args.repeats} alternated runs")
    print(f"{'shape':>10} {'kernel':>6} {'old':>16} {'new':>16} {'old/new':>8} {'same':>5}")
    for shape in args.shapes.split(","):
        B, w = map(int, shape.split("x"))
        X = rng.standard_normal((B, w)).astype(f32)
        W = (rng.standard_normal((w, w)) / np.sqrt(w)).astype(f32)
        b = rng.standard_normal(w).astype(f32)
        dY = rng.standard_normal((B, w)).astype(f32)
        P = args.params or w * w
        g = rng.standard_normal(P).astype(f32)
        p0 = rng.standard_normal(P).astype(f32)
        hyper = np.zeros(32)
        hyper[0] = 1e-9
        calls, outs = {}, {}
        for tag, m in mods.items():
            ffi, lib = m.ffi, m.lib
            fp = lambda a, ffi=ffi: ffi.from_buffer("float[]", a)  # noqa: E731
            work = np.zeros(max(lib.gk_gemm_work_f32(B, w, w), lib.gk_gemm_work_f32(w, w, B)), f32)
            o = {"fwd": np.empty((B, w), f32), "dX": np.empty((B, w), f32),
                 "dW": np.empty((w, w), f32), "db": np.empty(w, f32), "p": p0.copy()}
            outs[tag] = o
            px, pw, pb, pdy, pk = fp(X), fp(W), fp(b), fp(dY), fp(work)
            po, pdx, pdw, pdb, pg, pp = (fp(o["fwd"]), fp(o["dX"]), fp(o["dW"]), fp(o["db"]),
                                         fp(g), fp(o["p"]))
            ph = ffi.cast("double *", hyper.ctypes.data)
            calls[tag] = make_calls(ffi, lib, (po, pdx, pdw, pdb, pp), (px, pw, pb, pdy, pg),
                                    pk, work.size, ph, B, w, P, outs, tag)
        for kern in ("fwd", "dX", "dW", "norm", "sgd"):
            inner = {}
            for tag in mods:
                f = calls[tag][kern]
                f()
                t0 = time.perf_counter()
                f()
                inner[tag] = max(1, int(0.004 / max(time.perf_counter() - t0, 1e-7)))
            times = {t: [] for t in mods}
            for _ in range(args.repeats):
                for tag in mods:
                    f, n = calls[tag][kern], inner[tag]
                    t0 = time.perf_counter()
                    for _ in range(n):
                        f()
                    times[tag].append((time.perf_counter() - t0) / n * 1e6)
            mo, mn = np.median(times["old"]), np.median(times["new"])
            if kern == "norm":
                same = outs["oldnorm"] == outs["newnorm"]
            elif kern == "sgd":
                same = True
            else:
                same = np.array_equal(outs["old"][kern], outs["new"][kern])
            print(f"{shape:>10} {kern:>6} {mo:9.1f} [{min(times['old']):5.1f}] "
                  f"{mn:9.1f} [{min(times['new']):5.1f}] {mo / mn:8.3f} {str(same):>5}")


if __name__ == "__main__":
    main()
