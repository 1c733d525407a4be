"""One thread count for every engine: C (OpenMP), Numba and the BLAS behind NumPy."""

from __future__ import annotations

import os

from . import backends as _backends
from ._validate import check_int

_threads: int | None = None


def set_threads(n: int) -> int:
    """Use n threads in every loaded backend and in BLAS; returns n."""
    global _threads
    n = check_int(n, "threads")
    n = min(n, os.cpu_count() or n)
    for name in _backends.available():
        setter = getattr(_backends.get(name), "set_threads", None)
        if setter is not None:
            setter(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    except ImportError:  # threadpoolctl comes with scikit-learn; without it BLAS keeps its own
        pass
    _threads = n
    return n


def get_threads() -> int:
    """The count set by set_threads, else the number of cores."""
    return _threads or os.cpu_count() or 1
