"""The machine's ceilings, measured in the same run: a large GEMM and an FMA loop.

GEMM: C = A @ B through NumPy (so through the BLAS the report records), square n×n in the
run's dtype; 2·n³ flops. FMA loop: a kernel of independent fused multiply-adds that the C
backend offers, when it does (`fma_peak` in its module or describe()); without one the
report says so and uses the GEMM alone.

Streaming bandwidth, for the memory side of the roofline: a large array copied with
NumPy (`np.copyto`, which releases the GIL), split into one contiguous chunk per thread;
bytes counted as STREAM counts a copy, read + written (2 · size), best of several calls.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

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


STREAM_BYTES = 128 * 2**20  # per array: 4x the largest last-level cache here (32 MiB)


def stream_bandwidth(threads: int = 1, nbytes: int = STREAM_BYTES, repeats: int = 5) -> dict:
    """GB/s of a large copy (read + write), `threads` chunks copied in parallel."""
    threads = max(1, int(threads))
    n = nbytes // 8
    src = np.ones(n, dtype=np.float64)
    dst = np.zeros(n, dtype=np.float64)  # touched: no page faults in the timed copies
    edges = np.linspace(0, n, threads + 1).astype(int)
    chunks = [(dst[a:b], src[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]

    def one(pair):
        np.copyto(*pair)

    times = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, chunks))  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            list(pool.map(one, chunks))
            times.append(time.perf_counter() - t0)
    moved = 2.0 * n * 8
    return {"name": "stream", "what": f"NumPy copy of {nbytes / 2**20:.0f} MiB float64 arrays "
            f"in {threads} thread{'s' if threads > 1 else ''} (read + write counted)",
            "threads": threads, "bytes": int(moved), "gbps": moved / min(times) / 1e9,
            "gbps_median": moved / float(np.median(times)) / 1e9, "times_s": times}


def stream_ceiling(threads: int = 1) -> dict:
    """The best streaming bandwidth with 1..threads copying threads (on a shared VM a second
    thread can slow a copy down; the memory bound uses the best figure, which keeps it a
    lower bound on the time). Every figure is recorded."""
    runs = [stream_bandwidth(t) for t in range(1, max(1, threads) + 1)]
    best = max(runs, key=lambda r: r["gbps"])
    return {**best, "threads": threads, "copy_threads": best["threads"],
            "by_threads": {str(r["threads"]): r["gbps"] for r in runs}}
