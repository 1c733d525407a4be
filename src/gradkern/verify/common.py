"""What every family of checks shares: the run's context, the two ways a cell does not
run, and the data helpers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import backends as _backends
from ..backends.numpy_backend import NumpyBackend

REF = NumpyBackend()  # the specification; never the registry's instance, which may be patched
DTYPES = ("float32", "float64")
# without the C library there is no register tile to probe: shapes go around a typical one
TYPICAL_TILE = (8, 16, 192)


class NotApplicable(Exception):
    """This check does not apply to this dtype or backend; the message says why."""


class Skipped(Exception):
    """This check cannot run here (PyTorch missing); the message says why."""


def c_tiles() -> dict:
    """(MR, NR, KC) of the C GEMM per dtype, read from the loaded library; {} without it."""
    try:
        c = _backends.get("c")
    except Exception:
        return {}
    return {dt: tuple(c.tile(dt)) for dt in DTYPES}


@dataclass
class Context:
    quick: bool
    tiles: dict = field(default_factory=dict)  # dtype -> (MR, NR, KC) of the C GEMM

    def tile(self, dtype: str) -> tuple[int, int, int]:
        return self.tiles.get(str(np.dtype(dtype)), TYPICAL_TILE)

    def rng(self, *key) -> np.random.Generator:
        """A generator seeded from the check's name: every run draws the same data."""
        return np.random.default_rng([sum(map(ord, str(k))) for k in key] or [0])


def rand(rng, shape, dtype, scale=1.0):
    return np.ascontiguousarray((rng.standard_normal(shape) * scale).astype(dtype))


def nan(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


def f64(a):
    return np.asarray(a).astype(np.float64)
