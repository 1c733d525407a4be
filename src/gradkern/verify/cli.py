"""`gradkern check`: every backend cross-checked, in both dtypes, on this machine.

Three families of checks (docs/correctness.md), each one row of the printed matrix:

- fd/*      central finite differences (`finite_diff`), float64 only.
- kernel/*  every kernel of the contract against the float64 NumPy reference (`kernels`).
- torch/*   the same model in torch.nn with the same weights (`torch_ref`); the
            learning-rate schedulers against torch.optim.lr_scheduler (`schedulers`).

Each cell (check × backend × dtype) reports its worst error as a ratio to its bound
(`tolerance`) and as an absolute error; a ratio above 1 fails the cell and the command
exits 1.

    python -m gradkern.check [--quick] [--json PATH] [--backends c,numba] [--only torch]
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import backends as _backends
from .common import DTYPES, Context, NotApplicable, Skipped, c_tiles
from .finite_diff import FD_CHECKS
from .kernels import KERNELS
from .report import Cell, finite, json_default, matrix, report, torch_version
from .schedulers import scheduler_epochs, scheduler_rates
from .torch_ref import (
    torch_adagrad,
    torch_adam,
    torch_adamw,
    torch_batchnorm_eval,
    torch_batchnorm_train,
    torch_gradients,
    torch_rmsprop,
    torch_sgd,
    torch_weighted,
)


# ============================================================================ the matrix
@dataclass(frozen=True)
class Check:
    name: str
    run: Callable  # (ctx, backend name, dtype) -> Worst
    kernel: bool = False  # run receives the backend object instead of its name


def _kernel(name, fn):
    return Check(f"kernel/{name}", fn, kernel=True)


CHECKS: tuple[Check, ...] = (
    *(Check(f"fd/{name}", fn) for name, fn in FD_CHECKS.items()),
    *(_kernel(k.name, k) for k in KERNELS),
    Check("torch/loss+gradients", torch_gradients),
    Check("torch/weighted-loss", torch_weighted),
    Check("torch/batchnorm-train", torch_batchnorm_train),
    Check("torch/batchnorm-eval", torch_batchnorm_eval),
    Check("torch/sgd-10-steps", torch_sgd),
    Check("torch/adam-10-steps", torch_adam),
    Check("torch/adamw-10-steps", torch_adamw),
    Check("torch/rmsprop-10-steps", torch_rmsprop),
    Check("torch/adagrad-10-steps", torch_adagrad),
    Check("torch/scheduler-rates", scheduler_rates),
    Check("torch/scheduler-3-epochs", scheduler_epochs),
)


def run_cell(check: Check, ctx: Context, backend: str, dtype: str) -> Cell:
    t0 = time.perf_counter()
    try:
        target = _backends.get(backend) if check.kernel else backend
        with np.errstate(all="ignore"):
            w = check.run(ctx, target, dtype)
    except NotApplicable as exc:
        return Cell(check.name, backend, dtype, str(exc), seconds=time.perf_counter() - t0)
    except Skipped as exc:
        return Cell(check.name, backend, dtype, str(exc), seconds=time.perf_counter() - t0)
    except Exception as exc:  # a crash is a failure, reported with its cause
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        return Cell(check.name, backend, dtype, "ERROR",
                    where=f"{type(exc).__name__}: {exc} ({tb.filename}:{tb.lineno})",
                    seconds=time.perf_counter() - t0)
    status = "pass" if w.ratio <= 1.0 and w.compared > 0 else "FAIL"
    if w.compared == 0:
        w.where = "nothing was compared"
    return Cell(check.name, backend, dtype, status, w.ratio, w.err, w.where, w.compared,
                time.perf_counter() - t0)


def run(backends: list[str], quick: bool = False, only: list[str] | None = None,
        dtypes=DTYPES, progress: Callable[[Cell], None] | None = None) -> list[Cell]:
    """Every check × backend × dtype; returns the cells in that order."""
    ctx = Context(quick=quick, tiles=c_tiles())
    checks = [c for c in CHECKS if not only or any(o in c.name for o in only)]
    cells = []
    with _torch_single_thread():
        for check in checks:
            for backend in backends:
                for dtype in dtypes:
                    cell = run_cell(check, ctx, backend, dtype)
                    cells.append(cell)
                    if progress:
                        progress(cell)
    return cells


@contextlib.contextmanager
def _torch_single_thread():
    """The torch twins are tiny: one thread avoids its pool's overhead and contention with
    the backends' threads. The previous setting is restored afterwards."""
    try:
        import torch
    except Exception:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ============================================================================ command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gradkern check",
        description="Cross-check every backend in float32 and float64: finite differences, "
                    "every kernel against the float64 NumPy reference, and (when PyTorch is "
                    "importable) the same model in torch.nn. Prints a pass/fail matrix with "
                    "each cell's worst error / bound and absolute error; exits 1 on any "
                    "failure.")
    p.add_argument("--quick", action="store_true",
                   help="fewer shapes, parameters and cases (well under a minute)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the matrix as JSON")
    p.add_argument("--backends", default=None,
                   help="comma-separated backends (default: every available one)")
    p.add_argument("--only", default=None,
                   help="comma-separated substrings: run only the checks whose name has one "
                        "(e.g. kernel/,torch/)")
    p.add_argument("--quiet", action="store_true", help="no per-cell progress lines")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not faulthandler.is_enabled():  # a crashing kernel names the check it was in
        faulthandler.enable()
    status = _backends.status()
    if args.backends:
        names = [b.strip() for b in args.backends.split(",") if b.strip()]
        unknown = [b for b in names if b not in status]
        if unknown:
            print(f"gradkern check: unknown backend(s) {', '.join(unknown)}; known: "
                  f"{', '.join(status)}", file=sys.stderr)
            return 2
        missing = [b for b in names if status[b] != "available"]
        if missing:
            for b in missing:
                print(f"gradkern check: backend {b!r} is not available: {status[b]}",
                      file=sys.stderr)
            return 2
    else:
        names = [b for b, s in status.items() if s == "available"]
    only = [o.strip() for o in args.only.split(",") if o.strip()] if args.only else None
    if args.only is not None:
        unknown = [o for o in only or [""] if not any(o and o in c.name for c in CHECKS)]
        if unknown:
            raise ValueError(f"--only {','.join(unknown) or repr(args.only)}: matches no "
                             f"check; checks are {', '.join(c.name for c in CHECKS)}")
    if args.json:  # before the run: a whole run must not end in a path it cannot write
        from ..cli import writable_file

        writable_file(args.json, "--json")

    from .. import torchref

    ok, reason = torchref.available()
    print(f"gradkern check{' --quick' if args.quick else ''}: backends {', '.join(names)}; "
          f"dtypes {', '.join(DTYPES)}; PyTorch: {torch_version() if ok else reason}")
    for b, s in status.items():
        if s != "available" and b not in names:
            print(f"  (backend {b} not checked: {s})")

    def progress(cell: Cell) -> None:
        if not args.quiet:
            print(f"  {cell.check:<34} {cell.backend:<6} {cell.dtype:<8} {cell.short():<28} "
                  f"{cell.seconds:6.2f}s", flush=True)

    t0 = time.perf_counter()
    cells = run(names, quick=args.quick, only=only, progress=progress)
    seconds = time.perf_counter() - t0
    print()
    print(matrix(cells))
    print()
    print("cell: ok|FAIL  worst error/bound  (worst absolute error); n/a: does not apply to "
          "the dtype")
    failed = [c for c in cells if c.failed]
    for c in failed:
        print(f"FAILED {c.check} [{c.backend} {c.dtype}]: ratio {c.ratio}, {c.where}")
    print(f"{len(cells)} cells, {len(failed)} failed, {seconds:.1f} s")
    if args.json:
        rep = report(cells, args.quick, names, seconds)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(finite(rep), f, indent=1, default=json_default, allow_nan=False)
            f.write("\n")
        print(f"wrote {args.json}")
    return 1 if failed else 0
