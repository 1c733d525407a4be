"""`gradkern bench`: how training cost grows with depth and width, measured.

    gradkern bench --quick --out DIR        # small grid, well under a minute
    gradkern bench --out DIR                # the full grid (about 10-15 minutes on 2 cores)
    gradkern bench --compare OLD.json NEW.json

Every available backend, the plain NumPy loop, PyTorch (eager) and JAX (the whole epoch
jitted under lax.scan) train the same network on the same shuffled minibatches; each is
checked against the NumPy reference, then timed after warm-up. The report (report.md,
report.json, PNG plots) gives µs per step, GFLOP/s, fractions of the machine's ceilings
measured in the same run, a roofline per cell (compute and memory bounds), speed-ups
against the peers, the MNIST-shaped Adam workload as its own row, and the scaling fits.
PyTorch and JAX are optional (`pip install 'gradkern[peers]'`); without them their columns
say why they are missing. See docs/performance.md for how to read it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .._args import int_list
from .machine import BLAS_PIN_VARS, LIFTED_MARK, all_cores, blas_pin_env

__all__ = ["main"]




def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gradkern bench",
        description="Time training steps (forward, loss, backward, SGD; an epoch of shuffled "
                    "minibatches per timed call) over a grid of depths, widths and batches, "
                    "on every backend and against plain NumPy, PyTorch and jitted JAX, plus "
                    "an MNIST-shaped Adam workload; write report.md, report.json and plots.")
    g = p.add_argument_group("grid")
    g.add_argument("--quick", action="store_true",
                   help="small grid (depths 1,4; widths 16,256; batch 64), well under a minute")
    g.add_argument("--depths", type=int_list, help="hidden layers, comma-separated "
                   "(default 1,2,4,8,16,32)")
    g.add_argument("--widths", type=int_list,
                   help="units per hidden layer (default 16,64,256,1024)")
    g.add_argument("--batches", type=int_list, help="batch sizes (default 64,256)")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    i = p.add_argument_group("implementations")
    i.add_argument("--backends", type=_names,
                   help="gradkern backends, comma-separated (default: every available one)")
    i.add_argument("--no-torch", action="store_true", help="no PyTorch peer")
    i.add_argument("--no-plain", action="store_true", help="no plain NumPy peer")
    i.add_argument("--no-jax", action="store_true", help="no JAX peer")
    i.add_argument("--no-mnist", action="store_true",
                   help="no MNIST-shaped workload (784-512-256-10, cross-entropy, Adam, B=128)")
    i.add_argument("--epoch-batches", type=int, default=None, metavar="K",
                   help="minibatches per timed epoch (default 8)")
    t = p.add_argument_group("timing")
    t.add_argument("--threads", type=int, default=None,
                   help=f"threads for every engine (default: all cores, here {all_cores()})")
    t.add_argument("--single-thread", action="store_true",
                   help="also run the grid with 1 thread")
    t.add_argument("--max-seconds", type=float, default=None,
                   help="timing budget per implementation and cell (default 2.0, --quick 0.1)")
    t.add_argument("--budget-minutes", type=float, default=None,
                   help="bound the whole sweep: per-cell budgets shrink to fit (default 13 for "
                        "the full grid, none otherwise)")
    t.add_argument("--retries", type=int, default=2,
                   help="passes that measure again, side by side, the cells during which other "
                        "processes took more than 5%% of the CPU (default 2; 0 to disable)")
    t.add_argument("--settle", type=float, default=0.25, metavar="SECONDS",
                   help="sleep before timing each implementation, so that BLAS and OpenMP "
                        "threads still spinning from the previous one go idle (default 0.25)")
    t.add_argument("--no-check", action="store_true",
                   help="skip the agreement check before timing (not recommended)")
    t.add_argument("--seed", type=int, default=0)
    blas = t.add_mutually_exclusive_group()
    blas.add_argument("--native-blas", dest="native_blas", action="store_true", default=True,
                      help="(default) when OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE pin OpenBLAS, "
                           "re-run this command in a child process without them, so NumPy uses "
                           "the kernel native to this CPU; the report says so")
    blas.add_argument("--keep-blas-env", dest="native_blas", action="store_false",
                      help="keep the environment's OpenBLAS pin (the tests use this)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="bench-report", help="report directory (default %(default)s)")
    o.add_argument("--no-plots", action="store_true")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    c = p.add_argument_group("comparing two runs")
    c.add_argument("--compare", nargs=2, metavar=("OLD.json", "NEW.json"),
                   help="ratio table of two report.json files, cell by cell")
    c.add_argument("--threshold", type=float, default=0.10,
                   help="flag a cell whose time grew by more than this fraction (default 0.10)")
    c.add_argument("--fail-on-regression", action="store_true",
                   help="exit with status 1 when a regression is flagged")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `gradkern bench`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from ..cli import writable_dir

    if args.compare:
        from . import compare

        out = args.out if "--out" in argv else None
        if out:
            writable_dir(out, "--out")
        return compare.main(args.compare[0], args.compare[1], args.threshold, out,
                            args.fail_on_regression)
    writable_dir(args.out, "--out")  # before the run: it must not end unable to write
    pins = blas_pin_env()
    if args.native_blas and pins and LIFTED_MARK not in os.environ:
        return _rerun_without(pins, argv)
    return run(args, argv)


def _rerun_without(pins: dict[str, str], argv: list[str]) -> int:
    """Run `python -m gradkern.bench argv` with the OpenBLAS pin removed: NumPy reads it
    once, when it loads, so only a new process can lift it. Only this command's child
    process sees the change."""
    env = dict(os.environ)
    for k in BLAS_PIN_VARS:
        env.pop(k, None)
    env[LIFTED_MARK] = json.dumps(pins)
    print("gradkern bench: lifting " + ", ".join(f"{k}={v}" for k, v in pins.items()) +
          " for this benchmark process (--keep-blas-env keeps it)", file=sys.stderr, flush=True)
    return subprocess.call([sys.executable, "-m", "gradkern.bench", *argv], env=env)


def _budget(args: argparse.Namespace) -> float | None:
    if args.budget_minutes is not None:
        return args.budget_minutes * 60 if args.budget_minutes > 0 else None
    full = not (args.quick or args.depths or args.widths or args.batches)
    return 13 * 60.0 if full else None


def run(args: argparse.Namespace, argv: list[str]) -> int:
    from .report import write_report
    from .sweep import (
        FULL_BATCHES,
        FULL_DEPTHS,
        FULL_WIDTHS,
        QUICK_BATCHES,
        QUICK_DEPTHS,
        QUICK_WIDTHS,
        Config,
        resolve_impls,
        sweep,
    )
    from .workload import EPOCH_BATCHES, JAX, PLAIN, TORCH

    quick = args.quick
    threads = args.threads or all_cores()
    if threads < 1:
        print("gradkern bench: --threads must be at least 1", file=sys.stderr)
        return 2
    if args.epoch_batches is not None and args.epoch_batches < 1:
        print("gradkern bench: --epoch-batches must be at least 1", file=sys.stderr)
        return 2
    cfg = Config(
        depths=args.depths or (QUICK_DEPTHS if quick else FULL_DEPTHS),
        widths=args.widths or (QUICK_WIDTHS if quick else FULL_WIDTHS),
        batches=args.batches or (QUICK_BATCHES if quick else FULL_BATCHES),
        backends=args.backends or (),
        peers=tuple(p for p, skip in ((PLAIN, args.no_plain), (TORCH, args.no_torch),
                                      (JAX, args.no_jax)) if not skip),
        mnist=not args.no_mnist,
        epoch_batches=args.epoch_batches or EPOCH_BATCHES,
        dtype=args.dtype,
        threads=(threads, 1) if args.single_thread and threads != 1 else (threads,),
        max_seconds=args.max_seconds or (0.1 if quick else 2.0),
        budget_s=_budget(args),
        retries=max(0, args.retries),
        settle_s=max(0.0, args.settle),
        check=not args.no_check,
        seed=args.seed,
        progress=not args.no_progress,
    )
    try:
        resolve_impls(cfg)
    except Exception as exc:  # an unknown or unavailable backend: say which and why
        print(f"gradkern bench: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    results = {"schema": "gradkern-bench/1",
               "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
               "argv": argv}
    results.update(sweep(cfg))
    from .machine import machine_info

    results["machine"] = machine_info(list(cfg.backends))  # after the sweep: layers are up
    results["config"] = {"depths": list(cfg.depths), "widths": list(cfg.widths),
                         "batches": list(cfg.batches), "dtype": cfg.dtype,
                         "threads": list(cfg.threads), "impls": cfg.impls(),
                         "backends": list(cfg.backends), "peers": list(cfg.peers),
                         "max_seconds": cfg.max_seconds, "budget_s": cfg.budget_s,
                         "retries": cfg.retries, "settle_s": cfg.settle_s,
                         "check": cfg.check, "seed": cfg.seed,
                         "quick": quick, "network": "x (B, w) -> [Dense(w->w), relu] x depth "
                         "-> Dense(w->10), mse, SGD(lr=0.01)",
                         "unit": f"one epoch of {cfg.epoch_batches} shuffled minibatches per "
                         "timed call; figures per step",
                         "epoch_batches": cfg.epoch_batches, "mnist": cfg.mnist}
    results["unavailable"] = dict(cfg.unavailable)
    results["notes"] = cfg.notes
    write_report(results, out, plots=not args.no_plots)
    failed = [c for c in results["cells"] if c.get("status") == "failed check"]
    print(f"gradkern bench: wrote {out / 'report.md'} and {out / 'report.json'} "
          f"({len(results['cells'])} runs, {len(failed)} failed checks, "
          f"{results['elapsed_s']:.0f} s)")
    return 1 if failed else 0
