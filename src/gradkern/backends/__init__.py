"""The backend registry: backends by name, the default picked from what loads here.

A backend is one module `gradkern.backends.<name>_backend` exposing `BACKEND`, a subclass
of `Backend`. Modules are imported on first use; one that cannot load (no compiler, no
Numba) is reported by `status()` with its reason instead of breaking the package.
"""

from __future__ import annotations

import importlib
import os

from .base import Backend

# every known backend, fastest first: the order `auto` picks from
KNOWN: tuple[str, ...] = ("c", "numba", "numpy")

_instances: dict[str, Backend] = {}
_failures: dict[str, str] = {}


class BackendUnavailable(RuntimeError):
    """A known backend that cannot load here; `reason` says why."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"backend {name!r} is not available: {reason}")
        self.name = name
        self.reason = reason


def _load(name: str) -> Backend:
    if name in _instances:
        return _instances[name]
    if name in _failures:
        raise BackendUnavailable(name, _failures[name])
    try:
        module = importlib.import_module(f"{__name__}.{name}_backend")
        backend = module.BACKEND()
    except Exception as exc:  # any failure to load is a reason, not a crash
        _failures[name] = f"{type(exc).__name__}: {exc}"
        raise BackendUnavailable(name, _failures[name]) from exc
    _instances[name] = backend
    return backend


def get(name: str | Backend = "auto") -> Backend:
    """The backend of this name; 'auto' is $GRADKERN_BACKEND or the fastest available."""
    if isinstance(name, Backend):
        return name
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name, got {type(name).__name__}")
    if name == "auto":
        return get(default_name())
    if name not in KNOWN:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(KNOWN)} (or 'auto')")
    return _load(name)


def default_name() -> str:
    env = os.environ.get("GRADKERN_BACKEND", "").strip()
    if env and env != "auto":
        if env not in KNOWN:
            raise ValueError(
                f"GRADKERN_BACKEND={env!r} is not a backend; known: {', '.join(KNOWN)}"
            )
        return env
    names = available()
    if not names:  # numpy always loads; this would be a broken installation
        reasons = "; ".join(f"{k}: {v}" for k, v in status().items())
        raise RuntimeError(f"no backend loads: {reasons}")
    return names[0]


def available() -> list[str]:
    """Names of the backends that load here, fastest first."""
    out = []
    for name in KNOWN:
        try:
            _load(name)
        except BackendUnavailable:
            continue
        out.append(name)
    return out


def status() -> dict[str, str]:
    """Every known backend -> 'available' or the reason it is not."""
    out = {}
    for name in KNOWN:
        try:
            _load(name)
            out[name] = "available"
        except BackendUnavailable as exc:
            out[name] = exc.reason
    return out


def info(name: str) -> dict:
    """Details a backend reports about itself (threads, threading layer, compiler...)."""
    backend = get(name)
    describe = getattr(backend, "describe", None)
    return describe() if describe else {}


__all__ = ["Backend", "BackendUnavailable", "KNOWN", "available", "default_name", "get",
           "info", "status"]
