"""The machine's ceilings, measured in the same run: a large GEMM and an FMA loop.

GEMM: C = A @ B through NumPy (so through the BLAS the report records), square n×n in the
run's dtype; 2·n³ flops. FMA loop: a kernel of independent fused multiply-adds that the C
backend offers, when it does (`fma_peak` in its module or describe()); without one the
report says so and uses the GEMM alone.
"""

from __future__ import annotations

import time

import numpy as np

GEMM_N = 2048


def gemm_ceiling(dtype: str = "float32", n: int = GEMM_N, repeats: int = 7) -> dict:
    """GFLOP/s of an n×n×n matmul through NumPy: best and median of several calls."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dt)
    b = rng.standard_normal((n, n)).astype(dt)
    c = np.empty((n, n), dtype=dt)
    np.matmul(a, b, out=c)  # warm-up: threads started, pages touched
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - t0)
    flops = 2.0 * n**3
    name = {"float32": "sgemm", "float64": "dgemm"}[dt.name]
    return {"name": name, "what": f"NumPy matmul {n}x{n}x{n} {dt.name}", "n": n,
            "gflops": flops / min(times) / 1e9,
            "gflops_median": flops / float(np.median(times)) / 1e9, "times_s": times}


def fma_ceiling(dtype: str = "float32", threads: int = 1) -> dict | None:
    """GFLOP/s of the C backend's FMA-throughput loop, or None when it offers none."""
    from .. import backends

    if "c" not in backends.available():
        return None
    backend = backends.get("c")
    probe = getattr(backend, "fma_peak", None)
    if probe is None:
        return None
    try:
        result = probe(dtype=dtype, threads=threads)
    except TypeError:
        result = probe()
    if isinstance(result, dict):
        gflops = float(result.get("gflops", result.get("GFLOP/s", float("nan"))))
        extra = {k: v for k, v in result.items() if isinstance(v, (int, float, str))}
    else:
        gflops, extra = float(result), {}
    isa = extra.get("isa")
    what = "C backend FMA-throughput loop" + (f" ({isa})" if isa else "")
    return {**extra, "name": "fma", "what": what, "gflops": gflops}
