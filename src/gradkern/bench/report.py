"""report.json (every raw figure), report.md (tables, plots embedded) and PNG plots."""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path

from .._markdown import table
from .scaling import fastest_regions, fit_scaling
from .workload import GRID, MNIST, PEERS

SCHEMA = "gradkern-bench/1"
BUSY = 0.05  # share of the CPU used by other processes above which a run is flagged
SLOW = 1.25  # speed-probe slowdown above which a run is flagged
KEY_FIELDS = ("impl", "threads", "dtype", "batch", "depth", "width", "workload")
KEY_DEFAULTS = {"workload": GRID}  # reports written before the MNIST row were all grid


def cell_key(c: dict) -> tuple:
    return tuple(c[k] if k in c else KEY_DEFAULTS[k] for k in KEY_FIELDS)


def why_short(reason: str) -> str:
    """A column's few words on why it holds no figure."""
    if "not importable" in reason:
        return "not installed"
    if "thread pool" in reason:
        return "other thread count"
    return "not measured"


def fmt_us(x: float | None) -> str:
    """µs with 4 significant digits at most, never in exponent form."""
    if x is None or not math.isfinite(x):
        return "—"
    if x >= 1000:
        return f"{x:.0f}"
    if x >= 100:
        return f"{x:.1f}"
    if x >= 10:
        return f"{x:.2f}"
    return f"{x:.3f}"


def fmt_num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}g}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}"


def fmt_mb(n: int | None) -> str:
    return "—" if n is None else f"{n / 2**20:.2f}"


# ------------------------------------------------------------------ derived figures

def derive(results: dict) -> dict:
    """Adds to each timed cell: fraction of each ceiling, speed relative to every peer;
    then the scaling fits and the fastest implementation of each cell, per thread count."""
    ceilings = defaultdict(dict)
    for c in results["ceilings"]:
        ceilings[c["threads"]][c["name"]] = c["gflops"]
    bandwidth = {b["threads"]: b["gbps"] for b in results.get("bandwidth", [])}
    timed = [c for c in results["cells"] if c.get("status") == "ok"]
    by_cell = defaultdict(dict)
    for c in timed:
        by_cell[cell_key(c)[1:]][c["impl"]] = c
    for c in timed:
        c["fraction_of"] = {name: c["gflops"] / g for name, g in ceilings[c["threads"]].items()}
        peers = by_cell[cell_key(c)[1:]]
        # > 1: this implementation is that many times faster than the peer
        c["speedup_vs"] = {p: peers[p]["median_us"] / c["median_us"]
                           for p in PEERS if p in peers and p != c["impl"]}
        c["roofline"] = roofline(c, ceilings[c["threads"]], bandwidth.get(c["threads"]))
    results["scaling"], results["fastest"] = {}, {}
    for threads in sorted({c["threads"] for c in timed}):
        sub = [c for c in timed if c["threads"] == threads and cell_key(c)[-1] == GRID]
        results["scaling"][str(threads)] = fit_scaling(sub)
        results["fastest"][str(threads)] = fastest_regions(sub)
    return results


def roofline(c: dict, ceilings: dict, gbps: float | None) -> dict:
    """The two lower bounds on a step's time and the measured time as a multiple of the
    larger: compute = FLOPs / the in-run GEMM peak, memory = the minimal bytes a step
    moves (workload.min_bytes) / the in-run streaming bandwidth."""
    gemm = next((g for n, g in ceilings.items() if n.endswith("gemm")), None)
    compute = c["flops"] / (gemm * 1e3) if gemm else None
    memory = c["bytes_min"] / (gbps * 1e3) if gbps and c.get("bytes_min") else None
    bounds = {k: v for k, v in (("compute", compute), ("memory", memory)) if v}
    if not bounds:
        return {"compute_us": compute, "memory_us": memory, "bound": None, "bound_us": None,
                "x_bound": None}
    bound = max(bounds, key=bounds.get)
    return {"compute_us": compute, "memory_us": memory, "bound": bound,
            "bound_us": bounds[bound], "x_bound": c["median_us"] / bounds[bound]}


# ------------------------------------------------------------------ JSON

def write_json(results: dict, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=_default))
    os.replace(tmp, path)


def _default(x):
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:
        pass
    return repr(x)


# ------------------------------------------------------------------ plots

def write_plots(results: dict, out: Path) -> tuple[list[str], str | None]:
    """PNG plots next to the report; (file names, note when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return [], f"matplotlib is not installed ({exc}): no plots in this report."
    cfg = results["config"]
    threads = cfg["threads"][0]
    cells = [c for c in results["cells"] if c.get("status") == "ok" and c["threads"] == threads
             and cell_key(c)[-1] == GRID]
    impls = [i for i in cfg["impls"] if any(c["impl"] == i for c in cells)]
    files = []
    t = {cell_key(c)[0:1] + cell_key(c)[3:6]: c for c in cells}  # (impl, batch, depth, width)
    styles = {name: {"marker": "os^vDx*"[k % 7]} for k, name in enumerate(impls)}

    # 1. µs/step against depth, one panel per width, one row per batch
    batches, widths, depths = cfg["batches"], cfg["widths"], cfg["depths"]
    fig, axes = plt.subplots(len(batches), len(widths), squeeze=False,
                             figsize=(3.2 * len(widths), 2.8 * len(batches)))
    for r, b in enumerate(batches):
        for k, w in enumerate(widths):
            ax = axes[r][k]
            for impl in impls:
                ds = [d for d in depths if (impl, b, d, w) in t]
                ax.plot(ds, [t[(impl, b, d, w)]["median_us"] for d in ds], label=impl,
                        **styles[impl])
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(depths, [str(d) for d in depths], fontsize=7)
            ax.minorticks_off()
            ax.set_title(f"width {w}, batch {b}", fontsize=9)
            ax.set_xlabel("depth (hidden layers)", fontsize=8)
            if k == 0:
                ax.set_ylabel("µs / step", fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Training step time against depth ({cfg['dtype']}, {threads} threads)")
    fig.tight_layout()
    fig.savefig(out / "step_time_vs_depth.png", dpi=110)
    plt.close(fig)
    files.append("step_time_vs_depth.png")

    # 2. GFLOP/s against width, per batch and a few depths, with the ceilings
    show_depths = sorted({depths[0], depths[len(depths) // 2], depths[-1]})
    ceil = {c["name"]: c["gflops"] for c in results["ceilings"] if c["threads"] == threads}
    fig, axes = plt.subplots(len(batches), len(show_depths), squeeze=False,
                             figsize=(3.6 * len(show_depths), 2.9 * len(batches)))
    for r, b in enumerate(batches):
        for k, d in enumerate(show_depths):
            ax = axes[r][k]
            for impl in impls:
                ws = [w for w in widths if (impl, b, d, w) in t]
                ax.plot(ws, [t[(impl, b, d, w)]["gflops"] for w in ws], label=impl,
                        **styles[impl])
            top = max(ceil.values(), default=0)
            for name, g in ceil.items():
                ax.axhline(g, ls="--", lw=0.8, color="gray")
                above = g == top  # the highest label above its line, the others below
                ax.text(widths[0], g * (1.08 if above else 0.92), f" {name} {g:.0f}",
                        fontsize=7, va="bottom" if above else "top", color="gray")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(widths, [str(w) for w in widths], fontsize=7)
            ax.set_title(f"depth {d}, batch {b}", fontsize=9)
            ax.set_xlabel("width", fontsize=8)
            if k == 0:
                ax.set_ylabel("GFLOP/s", fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Throughput against width ({cfg['dtype']}, {threads} threads)")
    fig.tight_layout()
    fig.savefig(out / "gflops_vs_width.png", dpi=110)
    plt.close(fig)
    files.append("gflops_vs_width.png")

    # 3. fraction of the GEMM ceiling, heat map per implementation, at the largest batch
    gemm_name = next((n for n in ceil if n.endswith("gemm")), None)
    if gemm_name:
        b = batches[-1]
        fig, axes = plt.subplots(1, len(impls), squeeze=False,
                                 figsize=(2.2 + 1.0 * len(widths) * len(impls) * 0.8, 3.4))
        im = None
        for k, impl in enumerate(impls):
            ax = axes[0][k]
            grid = [[t[(impl, b, d, w)]["fraction_of"][gemm_name] if (impl, b, d, w) in t
                     else float("nan") for w in widths] for d in depths]
            im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
            for i, row in enumerate(grid):
                for j, v in enumerate(row):
                    if math.isfinite(v):
                        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                                color="white" if v < 0.6 else "black")
            ax.set_xticks(range(len(widths)), [str(w) for w in widths], fontsize=7)
            ax.set_yticks(range(len(depths)), [str(d) for d in depths], fontsize=7)
            ax.set_xlabel("width", fontsize=8)
            if k == 0:
                ax.set_ylabel("depth", fontsize=8)
            ax.set_title(impl, fontsize=9)
        if im is not None:
            fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=f"fraction of {gemm_name}")
        fig.suptitle(f"Fraction of the {gemm_name} ceiling ({ceil[gemm_name]:.0f} GFLOP/s), "
                     f"batch {b}", fontsize=10)
        fig.savefig(out / "fraction_of_peak.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        files.append("fraction_of_peak.png")
    return files, None


# ------------------------------------------------------------------ Markdown

def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return table(header, rows, align=False).split("\n") + [""]


def headline_cells(cfg: dict) -> list[tuple[int, int, int]]:
    """(batch, depth, width): depth 4 (or the middle depth), the smallest and the largest
    width, the smallest batch -- the cells quoted in docs/performance.md."""
    depths = cfg["depths"]
    d = 4 if 4 in depths else depths[len(depths) // 2]
    return [(cfg["batches"][0], d, w) for w in sorted({cfg["widths"][0], cfg["widths"][-1]})]


def headline(results: dict, timed: dict) -> list[str]:
    cfg = results["config"]
    t = cfg["threads"][0]
    L = [f"## Headline ({t} threads, {cfg['dtype']})", ""]
    rows = []
    for b, d, w in headline_cells(cfg):
        row = [str(b), str(d), str(w)]
        for impl in cfg["impls"]:
            c = timed.get((impl, t, cfg["dtype"], b, d, w, GRID))
            row.append(f"{fmt_us(c['median_us'])} [{fmt_us(c['min_us'])}–{fmt_us(c['max_us'])}]"
                       if c else _missing(results, impl, t))
        rows.append(row)
    L += _table(["batch", "depth", "width"] + [f"{i} µs/step" for i in cfg["impls"]], rows)
    L.append("Median [min–max] over the runs. Every figure below is measured the same way.")
    L.append("")
    return L


def _missing(results: dict, impl: str, threads: int) -> str:
    """What a column shows where an implementation has no figure: why, when it was not
    measured; a dash otherwise (a failed check is listed under Agreement)."""
    for c in results["cells"]:
        if c["impl"] == impl and c["threads"] == threads and c.get("status") == "unavailable":
            return f"n/a: {why_short(c['reason'])}"
    return "—"


def mnist_section(results: dict, timed: dict) -> list[str]:
    """The MNIST-shaped Adam workload, its own row per engine."""
    cfg = results["config"]
    cells = [c for c in results["cells"] if cell_key(c)[-1] == MNIST]
    if not cells:
        return []
    L = [f"## MNIST-shaped workload: {cells[0]['network']}", ""]
    rows = []
    for t in cfg["threads"]:
        for impl in cfg["impls"]:
            c = next((c for c in cells if c["impl"] == impl and c["threads"] == t), None)
            if c is None or c.get("status") != "ok":
                why = (f"n/a: {why_short(c['reason'])}" if c and c.get("reason")
                       else (c or {}).get("status", "—"))
                rows.append([impl, str(t), why] + ["—"] * 5)
                continue
            r = c.get("roofline") or {}
            vs = ", ".join(f"{fmt_num(v)}× vs {p}" for p, v in c.get("speedup_vs", {}).items())
            rows.append([impl, str(t), fmt_us(c["median_us"]),
                         f"{fmt_us(c['min_us'])}–{fmt_us(c['max_us'])}", fmt_num(c["gflops"]),
                         fmt_num(r.get("x_bound")),
                         fmt_num(next((v for n, v in c.get("fraction_of", {}).items()
                                       if n.endswith("gemm")), None)), vs or "—"])
    L += _table(["impl", "threads", "µs/step", "min–max", "GFLOP/s", "× bound",
                 "fraction of sgemm", "speed-up"], rows)
    L.append("One timed epoch of K shuffled minibatches; µs per step = epoch / K. × bound: the "
             "step time over the larger roofline bound (see Roofline).")
    L.append("")
    return L


def roofline_section(results: dict, timed: dict, t: int, b: int) -> list[str]:
    cfg = results["config"]
    impls = cfg["impls"]
    L = [f"### Roofline, batch {b}, {t} thread{'s' if t > 1 else ''}", ""]
    rows = []
    for d in cfg["depths"]:
        for w in cfg["widths"]:
            cs = {i: timed.get((i, t, cfg["dtype"], b, d, w, GRID)) for i in impls}
            r = next((c["roofline"] for c in cs.values() if c and c.get("roofline")), None)
            if r is None:
                continue
            row = [str(d), str(w), fmt_us(r["compute_us"]), fmt_us(r["memory_us"]),
                   r["bound"] or "—"]
            row += [fmt_num(cs[i]["roofline"]["x_bound"]) if cs[i] else
                    _missing(results, i, t) for i in impls]
            rows.append(row)
    L += _table(["depth", "width", "compute µs", "memory µs", "bound"] +
                [f"{i} × bound" for i in impls], rows)
    return L


def write_markdown(results: dict, path: Path) -> None:
    cfg, m = results["config"], results["machine"]
    impls = cfg["impls"]
    gk = [i for i in impls if i not in PEERS]
    peers = [i for i in impls if i in PEERS]
    cells = results["cells"]
    timed = {cell_key(c): c for c in cells if c.get("status") == "ok"}
    L: list[str] = []
    L.append("# gradkern benchmark report")
    L.append("")
    cpu = m["cpu"]
    g = m["gradkern"]
    commit = (g.get("commit") or "unknown")[:12] + (" (uncommitted changes)" if g.get("dirty")
                                                    else "")
    L.append(f"Measured {results['created']} on **{cpu['model']}** ({cpu['usable_cpus']} usable "
             f"cores), gradkern {g['version']} at {commit}. dtype **{cfg['dtype']}**, threads "
             f"**{', '.join(map(str, cfg['threads']))}**, {len(cells)} timed runs in "
             f"{results['elapsed_s']:.0f} s.")
    L.append("")
    other = results.get("other_load")
    if other is not None:
        busy = [c for c in cells if (c.get("other_load") or 0) > BUSY]
        slow = [c for c in cells if (c.get("slowdown") or 1.0) > SLOW]
        la = results.get("load_average_before", [None])[0]
        line = (f"Other processes used {100 * other:.0f}% of the machine's CPU time during "
                f"this run (load average {fmt_num(la, 2)} at the start).")
        if other > BUSY or busy:
            line = (f"**Warning: the machine was shared.** {line} {len(busy)} of {len(cells)} "
                    f"runs kept more than {100 * BUSY:.0f}% of it after re-measuring (column "
                    "`other %` below); multithreaded kernels suffer most. Rerun on a quiet "
                    "machine before quoting those figures.")
        remeasured = sum(1 for c in cells if c.get("remeasured"))
        line += (f" {remeasured} runs were measured again; {len(slow)} of {len(cells)} kept "
                 f"a speed-probe slowdown above {SLOW} (column `slowdown` below).")
        L.append(line)
        L.append("")
    blas = m["blas"]
    lifted = m.get("blas_pin_lifted") or {}
    pin = ("lifted for this run: " + ", ".join(f"{k}={v}" for k, v in lifted.items()) +
           " removed from the environment of this process (the parent re-ran itself "
           "without it), so NumPy runs its native kernel") if lifted else (
        "pinned by the environment: " + ", ".join(f"{k}={v}" for k, v in m["env"].items()
                                                if k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
        if any(k in m["env"] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
        else "no OpenBLAS pin in the environment")
    bb = blas.get("numpy_build_blas", {})
    bname = bb.get("name") if isinstance(bb, dict) else bb
    bver = bb.get("version") if isinstance(bb, dict) else ""
    L.append(f"- BLAS behind NumPy: {bname} {bver}, kernel **{blas.get('kernel')}** ({pin}).")
    nb = m["numba"]
    if nb.get("available"):
        L.append(f"- Numba {nb['version']}, threading layer {nb['threading_layer']}.")
    tc = m["torch"]
    if tc.get("available"):
        L.append(f"- PyTorch {tc['version']}.")
    for t, pinned in results["threads"].items():
        after = pinned.get("after", {})
        engines = ", ".join(f"{k} {v}" for k, v in after.items() if k != "threadpools")
        pools = ", ".join(f"{k}={v}" for k, v in after.get("threadpools", {}).items())
        L.append(f"- Threads pinned to {t}: {engines}; BLAS/OpenMP pools {pools}.")
    for name in gk:
        info = m["backends"].get(name, {})
        if info:
            short = {k: v for k, v in info.items() if isinstance(v, (str, int, float))}
            L.append(f"- backend `{name}`: " + ", ".join(f"{k}: {v}" for k, v in short.items()))
    for note in results.get("notes", []):
        L.append(f"- Note: {note}")
    L.append("")
    k = next((c.get("steps_per_run") for c in cells if c.get("steps_per_run")), None)
    L.append("Network: depth d = d hidden layers, `x (B, w) -> [Dense(w->w), ReLU] × d -> "
             "Dense(w->10) -> MSE`, one step = forward, loss, backward and SGD (lr 0.01); "
             f"the timed unit is one epoch of {k or 'K'} shuffled minibatches of the same data "
             "for every engine, and µs per step is the epoch's time over that count. "
             "FLOPs per step (docs/design.md §5): 6·B·Σ nᵢnᵢ₊₁ − 2·B·n₀n₁. Peers: "
             "`numpy-plain` is the training loop a NumPy user writes by hand; `torch` is "
             "nn.Sequential + MSELoss + optim.SGD, eager, on the CPU; `jax` is the whole "
             "epoch jitted, `jax.lax.scan` over the minibatches, optax.")
    L.append("")

    L += headline(results, timed)

    # ceilings and compilation
    L.append("## Ceilings (measured in this run)")
    L.append("")
    rows = [[c["name"], c["what"], str(c["threads"]), f"{c['gflops']:.1f}",
             f"{c.get('gflops_median', c['gflops']):.1f}"] for c in results["ceilings"]]
    L += _table(["ceiling", "what", "threads", "GFLOP/s (best)", "GFLOP/s (median)"], rows)
    for bw in results.get("bandwidth", []):
        per = ", ".join(f"{n} thread{'s' if n != '1' else ''} {g:.1f}"
                        for n, g in bw.get("by_threads", {}).items())
        L.append(f"Streaming bandwidth ({bw['threads']} threads): **{bw['gbps']:.1f} GB/s**, "
                 f"{bw['what']} (best of: {per} GB/s).")
        L.append("")
    if not any(c["name"] == "fma" for c in results["ceilings"]):
        L.append("No FMA-throughput loop in this run (the C backend does not offer one here): "
                 "fractions of peak are of the GEMM ceiling alone.")
        L.append("")
    L.append("## Compilation and first calls (excluded from every figure)")
    L.append("")
    rows = []
    for t, comp in results["compile"].items():
        for name, c in comp.items():
            rows.append([name, t, f"{c['first_call_s']:.3f}", fmt_us(c["steady_step_s"] * 1e6),
                         f"{c['compile_s']:.3f}"])
    L += _table(["backend", "threads", "first call (s)", "steady step (µs)",
                 "compile / load (s)"], rows)

    # agreement
    L.append("## Agreement with the NumPy reference (checked before timing)")
    L.append("")
    checked = [c for c in cells if c.get("check", {}).get("ok") is not None]
    failed = [c for c in cells if c.get("status") == "failed check"]
    if not checked:
        L.append("Checks were not run (--no-check).")
    else:
        kern = [c for c in checked if c["check"].get("kernel_check") == "passed"]
        worst = max((c["check"].get("worst_kernel_ratio", 0.0) for c in kern), default=0.0)
        e2e = max((c["check"].get("grad_rel_err", 0.0) for c in checked), default=0.0)
        ep = [c for c in checked if c["check"].get("epoch_check") == "passed"]
        ep_worst = max((c["check"].get("epoch_ratio", 0.0) for c in ep), default=0.0)
        L.append(f"{len(checked) - len(failed)} of {len(checked)} runs agree. Kernel by kernel "
                 f"(docs/design.md §3, |x − ref| ≤ 16·u·S): {len(kern)} runs, worst error "
                 f"{worst:.2f} of its bound. End to end against the NumPy backend in float64: "
                 f"worst relative gradient error {e2e:.2g}. The timed epoch itself (losses "
                 f"and parameters after it, max |x − ref| ≤ 2e-4·max |ref| in float32): "
                 f"{len(ep)} runs, worst error {ep_worst:.2f} of its bound.")
        skipped = sorted({c["check"]["kernel_check"] for c in checked
                          if str(c["check"].get("kernel_check", "")).startswith("skipped")})
        for s in skipped:
            L.append(f"- kernel check {s}")
        for c in failed:
            L.append(f"- **{c['impl']} failed** at batch {c['batch']}, depth {c['depth']}, width "
                     f"{c['width']} (not timed): " + "; ".join(c["check"]["messages"][:3]))
    L.append("")
    L += mnist_section(results, timed)

    # the main tables, per thread count and batch
    for t in cfg["threads"]:
        for b in cfg["batches"]:
            L.append(f"## Step time, batch {b}, {t} thread{'s' if t > 1 else ''} "
                     "(µs per step, median)")
            L.append("")
            rows = []
            for d in cfg["depths"]:
                for w in cfg["widths"]:
                    row = [str(d), str(w)]
                    for i in impls:
                        c = timed.get((i, t, cfg["dtype"], b, d, w, GRID))
                        row.append(fmt_us(c["median_us"]) if c else _missing(results, i, t))
                    rows.append(row)
            L += _table(["depth", "width"] + impls, rows)
            L.append(f"### Throughput and speed-ups, batch {b}, {t} thread{'s' if t > 1 else ''}")
            L.append("")
            ceil_names = [c["name"] for c in results["ceilings"] if c["threads"] == t]
            header = ["depth", "width", "MB"] + [f"{i} GFLOP/s" for i in impls]
            header += [f"{i} % {ceil_names[0]}" for i in gk] if ceil_names else []
            header += [f"{i} × vs {p}" for i in gk for p in peers]
            rows = []
            for d in cfg["depths"]:
                for w in cfg["widths"]:
                    cs = {i: timed.get((i, t, cfg["dtype"], b, d, w, GRID)) for i in impls}
                    mem = next((c["memory_bytes"] for c in cs.values() if c and
                                c.get("memory_bytes")), None)
                    row = [str(d), str(w), fmt_mb(mem)]
                    row += [fmt_num(cs[i]["gflops"]) if cs[i] else "—" for i in impls]
                    if ceil_names:
                        row += [f"{100 * cs[i]['fraction_of'][ceil_names[0]]:.1f}" if cs[i]
                                else "—" for i in gk]
                    row += [fmt_num(cs[i]["speedup_vs"].get(p)) if cs[i] else "—"
                            for i in gk for p in peers]
                    rows.append(row)
            L += _table(header, rows)
            L += roofline_section(results, timed, t, b)
    L.append("MB: model + workspace held by the gradkern Buffers and optimizer state. "
             "`× vs peer` above 1 means faster than that peer. Roofline: compute µs = FLOPs / "
             "the sgemm ceiling; memory µs = the fewest bytes a step moves / the streaming "
             "bandwidth, both measured in this run; `× bound` is the step time over the larger "
             "of the two (1 would be at the machine's limit). Minimal bytes per step, s the "
             "element size: s·[(5 + 4·adam)·P + Σ_{i≥1} nᵢnᵢ₊₁ + B·(2n₀ + 4·Σ_{0<i<L} nᵢ + "
             "5n_L)], P the parameter count (docs/performance.md).")
    L.append("")

    # scaling
    L.append("## Scaling")
    L.append("")
    L.append("Exponents are slopes of log(step time) against log(depth) and against "
             "log(width); beside each, (FLOPs) is the slope of the FLOPs themselves, which a "
             "compute-bound implementation follows (near 1 in depth: the hidden layers cost "
             "6·B·w² each, less 2·B·w² for the first, plus the head; near 2 in width). "
             "Overhead pulls the measured exponents below these. "
             "Overhead fit: t = t₀ + FLOPs / r over the widths; the crossover width is where "
             "compute time equals the overhead t₀ (below it a step is overhead-bound). "
             "Figures are medians over the other grid axes.")
    L.append("")
    for t, sc in results["scaling"].items():
        rows = []
        for impl in impls:
            s = sc.get(impl)
            if not s:
                continue
            rows.append([impl, t, fmt_num(s["depth_exponent_median"]),
                         fmt_num(s["depth_flops_exponent_median"]),
                         fmt_num(s["width_exponent_median"]),
                         fmt_num(s["width_flops_exponent_median"]),
                         fmt_us(s["overhead_us_median"]),
                         fmt_num(s["crossover_width_median"], 3)])
        L += _table(["impl", "threads", "depth exponent", "(FLOPs)", "width exponent",
                     "(FLOPs)", "overhead t₀ (µs)", "crossover width"], rows)
        L.append(f"Crossover width per depth and batch ({t} threads; — means compute never "
                 "shows above the overhead in this grid):")
        L.append("")
        pairs = sorted({(o["batch"], o["depth"]) for s in sc.values() for o in s["overhead"]})
        rows = []
        for b, d in pairs:
            row = [str(b), str(d)]
            for impl in impls:
                o = next((o for o in sc.get(impl, {}).get("overhead", [])
                          if (o["batch"], o["depth"]) == (b, d)), None)
                row.append(fmt_num(o["crossover_width"], 3) if o and
                           o["crossover_width"] is not None else "—")
            rows.append(row)
        L += _table(["batch", "depth"] + impls, rows)
    for t, fastest in results["fastest"].items():
        for b in cfg["batches"]:
            L.append(f"Fastest implementation per cell, batch {b}, {t} threads (margin over the "
                     "runner-up):")
            L.append("")
            rows = []
            for d in cfg["depths"]:
                row = [str(d)]
                for w in cfg["widths"]:
                    f = fastest.get(f"b{b}_d{d}_w{w}")
                    margin = f"{f['margin']:.2f}×" if f and f["margin"] else "alone"
                    row.append(f"{f['fastest']} ({margin})" if f else "—")
                rows.append(row)
            L += _table(["depth \\ width"] + [str(w) for w in cfg["widths"]], rows)
            wins = defaultdict(int)
            for f in fastest.values():
                if f["batch"] == b:
                    wins[f["fastest"]] += 1
            L.append("Wins: " + ", ".join(f"{k} {v}" for k, v in sorted(wins.items(),
                                                                      key=lambda kv: -kv[1])))
            L.append("")

    # plots
    L.append("## Plots")
    L.append("")
    if results.get("plots"):
        for f in results["plots"]:
            L.append(f"![{f}]({f})")
            L.append("")
    else:
        L.append(results.get("plot_note") or "No plots.")
        L.append("")

    # every cell, long form: the tests parse this table against report.json
    L.append("## All runs")
    L.append("")
    rows = []
    for c in cells:
        key = [str(v) for v in cell_key(c)]
        if c.get("status") != "ok":
            rows.append(key + [c.get("status", "?")] + ["—"] * 9)
            continue
        rows.append(key + [fmt_us(c["median_us"]), fmt_us(c["q1_us"]),
                     fmt_us(c["q3_us"]), fmt_us(c["min_us"]), fmt_us(c["max_us"]),
                     f"{c['runs']}×{c['inner']}", fmt_num(c["gflops"]),
                     fmt_num(c.get("cpu_per_wall"), 2), _pct(c.get("other_load")),
                     fmt_num(c.get("slowdown"), 3)])
    L += _table([*KEY_FIELDS, "median µs", "q1 µs",
                 "q3 µs", "min µs", "max µs", "runs×epochs", "GFLOP/s", "cores busy",
                 "other %", "slowdown"], rows)
    L.append("cores busy: CPU time of this process (every thread, spinning ones too) over wall "
             "time while timing. other %: share of the machine's CPU time other processes "
             "took meanwhile, from the kernel's sampled accounting. slowdown: how much slower "
             "a fixed probe (small NumPy calls on one thread) ran just before and after the "
             "timing than at its best in this run — a VM loses speed to neighbours no "
             f"process list shows. A cell above {100 * BUSY:.0f}% or {SLOW} is measured again, "
             "all implementations together, up to --retries times, and the less disturbed "
             "measurement kept.")
    L.append("")

    L.append("## How to read this report")
    L.append("")
    L.append("- Every figure is a median over several runs after warm-up; a run is `steps` "
             "back-to-back training steps, its figure the run time divided by `steps`. "
             "q1/q3 and min/max give the spread. First calls (compilation) are excluded and "
             "listed above.")
    L.append("- GFLOP/s = FLOPs per step / median time. The fraction of a ceiling compares it "
             "with a large GEMM (and an FMA loop when available) measured in this same run, "
             "with the same threads.")
    L.append("- Compare only figures from one run: `gradkern bench --compare OLD.json NEW.json` "
             "gives cell-by-cell ratios when two runs must be compared.")
    L.append("- Raw figures, every sample and the full machine description are in "
             "`report.json`.")
    L.append("")
    path.write_text("\n".join(L))


def write_report(results: dict, out: Path, plots: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    derive(results)
    if plots:
        results["plots"], results["plot_note"] = write_plots(results, out)
    else:
        results["plots"], results["plot_note"] = [], "Plots were not requested (--no-plots)."
    write_json(results, out / "report.json")
    write_markdown(results, out / "report.md")
    return results
