"""A cell of the matrix (check × backend × dtype), the printed Markdown matrix and the
JSON report of `gradkern check`."""

from __future__ import annotations

import math
import platform
from dataclasses import asdict, dataclass

import numpy as np

from .. import backends as _backends
from .._markdown import table
from . import tolerance as tol
from .common import DTYPES


@dataclass
class Cell:
    check: str
    backend: str
    dtype: str
    status: str  # "pass", "FAIL", "ERROR", "n/a", "skipped"
    ratio: float | None = None
    abs_err: float | None = None
    where: str = ""
    compared: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status in ("FAIL", "ERROR")

    def short(self) -> str:
        if self.status in ("pass", "FAIL"):
            word = "ok" if self.status == "pass" else "FAIL"
            return f"{word} {self.ratio:.2g} ({self.abs_err:.1e})"
        return self.status


def matrix(cells: list[Cell]) -> str:
    """The Markdown matrix: one row per check, one column per backend × dtype."""
    cols = list(dict.fromkeys((c.backend, c.dtype) for c in cells))
    rows: dict[str, dict] = {}
    for c in cells:
        rows.setdefault(c.check, {})[(c.backend, c.dtype)] = c.short()
    headers = ["check"] + [f"{b} {d}" for b, d in cols]
    return table(headers, [[name] + [r.get(k, "") for k in cols] for name, r in rows.items()])


def torch_version() -> str:
    import torch

    return f"torch {torch.__version__}"


def _safe_info(name: str) -> dict:
    try:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in _backends.info(name).items()}
    except Exception as exc:
        return {"unavailable": str(exc)}


def report(cells: list[Cell], quick: bool, backends: list[str], seconds: float) -> dict:
    from .. import __version__, torchref

    ok, reason = torchref.available()
    failed = [c for c in cells if c.failed]
    return {
        "gradkern": __version__,
        "quick": quick,
        "ok": not failed,
        "failures": len(failed),
        "seconds": round(seconds, 2),
        "backends": backends,
        "backend_status": _backends.status(),
        "dtypes": list(DTYPES),
        "checks": list(dict.fromkeys(c.check for c in cells)),
        "torch": reason if not ok else torch_version(),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "numpy": np.__version__, "c": _safe_info("c")},
        "tolerances": {"fd": {"eps": tol.FD_EPS, "atol": tol.FD_ATOL, "rtol": tol.FD_RTOL,
                              "kink": tol.KINK},
                       "torch": {"float64_rtol": tol.TORCH_RTOL64, "float32_k": tol.K_TORCH}},
        "cells": [asdict(c) for c in cells],
    }


def json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def finite(o):
    """Strict JSON: a non-finite float becomes the string 'inf' or 'nan'."""
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, dict):
        return {k: finite(v) for k, v in o.items()}
    if isinstance(o, list):
        return [finite(v) for v in o]
    return o
