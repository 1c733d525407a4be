"""How step time grows with depth and width, fitted per implementation.

- Exponent in depth: slope of log t against log depth at fixed width and batch. Pure
  compute gives the slope of the FLOPs (reported beside it, `flops_exponent`): a little
  above 1, since FLOPs grow as 3d-1 (no input gradient for the first layer); a fixed
  per-step overhead pulls it below. `per_layer_us` is the slope of t against d.
- Exponent in width: slope of log t against log width at fixed depth and batch (the FLOPs
  give just under 2 once the matmuls dominate; near 0 while per-call overhead does).
- Overhead model: t = t0 + flops / r, fitted by least squares in relative error over the
  widths at fixed depth and batch. t0 is the per-step overhead, r the sustained rate;
  the crossover width is where the two terms are equal: below it a step is
  overhead-bound, above it compute-bound.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np


def loglog_slope(xs, ys) -> float | None:
    if len(xs) < 2:
        return None
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    return float(np.polyfit(lx, ly, 1)[0])


def overhead_fit(flops, times) -> tuple[float, float] | None:
    """(t0 seconds, rate flop/s) of t = t0 + flops/rate, least squares in relative error."""
    f = np.asarray(flops, float)
    t = np.asarray(times, float)
    if len(f) < 2:
        return None
    A = np.stack([np.ones_like(f), f], axis=1) / t[:, None]  # rows divided by t: relative
    coef, *_ = np.linalg.lstsq(A, np.ones_like(t), rcond=None)
    t0, inv_rate = float(coef[0]), float(coef[1])
    if inv_rate * f.max() <= 1e-9 * t.max():  # no compute term visible: all overhead
        return max(t0, 0.0), math.inf
    if t0 < 0:  # no overhead visible: refit through the origin
        t0, inv_rate = 0.0, float(np.sum(f / t) / np.sum((f / t) ** 2))
    return t0, 1.0 / inv_rate


def crossover_width(t0: float, rate: float, flops_of_width) -> float | None:
    """The width at which flops/rate equals t0 (bisection on a log scale)."""
    if not math.isfinite(rate) or t0 <= 0:
        return None if not math.isfinite(rate) else 0.0
    lo, hi = 1.0, 1 << 20
    if flops_of_width(hi) / rate < t0:
        return None
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if flops_of_width(mid) / rate < t0:
            lo = mid
        else:
            hi = mid
    return hi


def step_flops(depth: float, width: float, batch: int, n_out: int = 10) -> float:
    """docs/design.md §5 flops of the benchmark network, for a real-valued width."""
    sizes = [(width, width)] * depth + [(width, n_out)]
    total = sum(6 * batch * a * b for a, b in sizes)
    return total - 2 * batch * width * width


def fit_scaling(cells: list[dict]) -> dict:
    """Exponents, overhead fits and crossover widths per implementation (one thread count
    and dtype at a time: `cells` should hold one of each)."""
    by = defaultdict(dict)
    for c in cells:
        by[c["impl"]][(c["depth"], c["width"], c["batch"])] = c["median_us"] * 1e-6
    out = {}
    for impl, t in by.items():
        depths = sorted({k[0] for k in t})
        widths = sorted({k[1] for k in t})
        batches = sorted({k[2] for k in t})
        depth_exp, width_exp, overhead = [], [], []
        for w in widths:
            for b in batches:
                ds = [d for d in depths if (d, w, b) in t]
                s = loglog_slope(ds, [t[(d, w, b)] for d in ds])
                if s is not None:
                    # what pure compute would give: FLOPs grow as 3d-1, not d (the first
                    # layer has no input gradient), so slightly faster than linear
                    sf = loglog_slope(ds, [step_flops(d, w, b) for d in ds])
                    per_layer = float(np.polyfit(ds, [t[(d, w, b)] for d in ds], 1)[0])
                    depth_exp.append({"width": w, "batch": b, "exponent": s,
                                      "flops_exponent": sf, "per_layer_us": per_layer * 1e6})
        for d in depths:
            for b in batches:
                ws = [w for w in widths if (d, w, b) in t]
                s = loglog_slope(ws, [t[(d, w, b)] for w in ws])
                if s is not None:
                    local = [loglog_slope(ws[i:i + 2], [t[(d, w, b)] for w in ws[i:i + 2]])
                             for i in range(len(ws) - 1)]
                    sf = loglog_slope(ws, [step_flops(d, w, b) for w in ws])
                    width_exp.append({"depth": d, "batch": b, "exponent": s,
                                      "flops_exponent": sf,
                                      "local": dict(zip([f"{a}-{c}" for a, c in
                                                         zip(ws, ws[1:], strict=False)],
                                                        local, strict=True))})
                fit = overhead_fit([step_flops(d, w, b) for w in ws], [t[(d, w, b)] for w in ws])
                if fit is not None:
                    t0, rate = fit
                    wx = crossover_width(t0, rate, lambda w, d=d, b=b: step_flops(d, w, b))
                    overhead.append({"depth": d, "batch": b, "overhead_us": t0 * 1e6,
                                     "rate_gflops": rate / 1e9 if math.isfinite(rate) else None,
                                     "crossover_width": wx})
        out[impl] = {
            "depth_exponents": depth_exp,
            "width_exponents": width_exp,
            "overhead": overhead,
            "depth_exponent_median": _median([e["exponent"] for e in depth_exp]),
            "depth_flops_exponent_median": _median([e["flops_exponent"] for e in depth_exp]),
            "width_exponent_median": _median([e["exponent"] for e in width_exp]),
            "width_flops_exponent_median": _median([e["flops_exponent"] for e in width_exp]),
            "crossover_width_median": _median([o["crossover_width"] for o in overhead
                                               if o["crossover_width"] is not None]),
            "overhead_us_median": _median([o["overhead_us"] for o in overhead]),
        }
    return out


def fastest_regions(cells: list[dict]) -> dict:
    """Which implementation is fastest in each (batch, depth, width) cell, and by how much
    it beats the runner-up."""
    best: dict = defaultdict(list)
    for c in cells:
        best[(c["batch"], c["depth"], c["width"])].append((c["median_us"], c["impl"]))
    out = {}
    for key, entries in sorted(best.items()):
        entries.sort()
        winner = entries[0]
        margin = entries[1][0] / winner[0] if len(entries) > 1 else None
        out["b{}_d{}_w{}".format(*key)] = {"batch": key[0], "depth": key[1], "width": key[2],
                                            "fastest": winner[1], "margin": margin}
    return out


def _median(xs):
    xs = [x for x in xs if x is not None]
    return float(np.median(xs)) if xs else None
