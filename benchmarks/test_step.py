"""One training step (forward, loss, backward, SGD update), checked, then timed."""

from __future__ import annotations

import time

from gradkern.bench.check import check_runner
from gradkern.bench.machine import blas_info
from gradkern.bench.workload import Workload, make_runner

SETTLE_S = 0.25


def test_train_step(benchmark, impl, depth, width, batch, bench_dtype, pinned_threads):
    wl = Workload(depth, width, batch, bench_dtype)
    runner = make_runner(impl, wl)
    res = check_runner(runner, wl)  # correct before fast: agreement with NumPy first
    assert res.ok, f"{impl} disagrees with the NumPy reference: " + "; ".join(res.messages)
    runner.step()  # first call apart: compilation never lands in a timing

    benchmark.group = f"{bench_dtype} batch {batch} depth {depth} width {width}"
    benchmark.extra_info.update({
        "impl": impl, "kind": runner.kind, "dtype": bench_dtype,
        "depth": depth, "width": width, "batch": batch,
        "shapes": [list(W.shape) for W, _ in wl.plan.param_views(wl.params0)],
        "flops": wl.flops, "n_params": wl.plan.n_params,
        "memory_bytes": runner.nbytes() or None,
        "threads": pinned_threads["threads"],
        "blas_kernel": blas_info().get("kernel"),
        "check": {"kernel_check": res.kernel_check, "worst_kernel_ratio": res.worst_kernel_ratio,
                  "grad_rel_err": res.grad_rel_err},
    })
    # the check ran BLAS calls whose threads busy-wait a while: let them go idle first
    time.sleep(SETTLE_S)
    benchmark(runner.step)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # absent under --benchmark-disable
        median_s = stats.stats.median
        benchmark.extra_info["median_us"] = median_s * 1e6
        benchmark.extra_info["gflops"] = wl.flops / median_s / 1e9


def test_flops_formula():
    """docs/design.md §5 by hand for depth 2, width 32, batch 16: dense 32x32, 32x32, 32x10."""
    wl = Workload(2, 32, 16)
    expected = 6 * 16 * (32 * 32 + 32 * 32 + 32 * 10) - 2 * 16 * 32 * 32
    assert wl.flops == expected
