"""Input checks for every public entry point (docs/design.md §4), run before any kernel."""

from __future__ import annotations

import numpy as np

MAX_ELEMENTS = 2**62  # far above memory; products beyond it would overflow int64 indexing


def _as_array(a, what: str) -> np.ndarray:
    """a as a plain ndarray. Subclasses are converted too: np.matrix stays 2-D under
    indexing (y[:, 0] of a matrix is (N, 1), which broadcasts in the loss)."""
    if type(a) is np.ndarray:
        return a
    try:
        return np.asarray(a)
    except Exception as exc:
        raise TypeError(f"{what} could not be read as an array: {exc}") from None


def _check_kind(a: np.ndarray, what: str, allow_int: bool = True) -> None:
    k = a.dtype.kind
    if k == "b":
        raise TypeError(f"{what} has dtype bool; pass numbers (0/1 as int or float)")
    if k == "c":
        raise TypeError(f"{what} has complex dtype {a.dtype}; gradkern trains on real numbers")
    if k in "OUSV":
        raise TypeError(f"{what} has dtype {a.dtype}; pass a numeric array")
    if a.dtype == np.float16:
        raise TypeError(f"{what} has dtype float16, which gradkern does not train in; "
                        "convert to float32")
    if k in "iu" and not allow_int:
        raise TypeError(f"{what} has integer dtype {a.dtype}")
    if k not in "iuf":
        raise TypeError(f"{what} has unsupported dtype {a.dtype}")


def check_X_shape(a: np.ndarray, n_features: int, what: str = "X") -> None:
    """An X of numbers, 2-D, non-empty, with the model's number of features (any storage:
    check_X's arrays and stream_X's memory maps share it)."""
    _check_kind(a, what)
    if a.ndim != 2:
        raise ValueError(f"{what} must be 2-D (samples, features), got shape {a.shape}"
                         + ("; use X.reshape(-1, 1) for one feature" if a.ndim == 1 else ""))
    if a.shape[0] == 0:
        raise ValueError(f"{what} is empty: shape {a.shape}")
    if a.shape[1] == 0:
        raise ValueError(f"{what} has zero features: shape {a.shape}")
    if a.shape[1] != n_features:
        raise ValueError(f"{what} has shape {a.shape} but the model expects "
                         f"(N, {n_features}) inputs")


def check_X(X, n_features: int, dtype: np.dtype, what: str = "X") -> np.ndarray:
    """X as a C-contiguous (N, n_features) array of dtype, or a clear error."""
    a = _as_array(X, what)
    check_X_shape(a, n_features, what)
    out = np.ascontiguousarray(a, dtype=dtype)
    if not np.isfinite(out).all():
        raise ValueError(f"{what} contains NaN or inf")
    return out


def check_y(y, rows: int, loss: str, n_out: int, dtype: np.dtype, what: str = "y",
            x_shape: tuple | None = None) -> np.ndarray:
    """Targets in the layout the loss kernel wants, or a clear error.

    cross_entropy: (N,) int64 labels in [0, n_out). mse, binary_cross_entropy:
    (N, n_out) floats; a (N,) target against a single output is reshaped to (N, 1)
    explicitly, never broadcast.
    """
    a = _as_array(y, what)
    _check_kind(a, what)
    xs = f" (X has shape {x_shape})" if x_shape is not None else ""
    if a.ndim == 0 or a.ndim > 2:
        raise ValueError(f"{what} must be 1-D or 2-D, got shape {a.shape}")
    if a.shape[0] != rows:
        raise ValueError(f"{what} has shape {a.shape} but X has {rows} rows{xs}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"{what} contains NaN or inf")
    if loss == "cross_entropy":
        if a.ndim == 2:
            if a.shape[1] != 1:
                raise ValueError(f"cross_entropy takes integer class labels of shape ({rows},), "
                                 f"got {what} of shape {a.shape} (one-hot? pass y.argmax(1))")
            a = a[:, 0]
        if a.dtype.kind == "f":
            if not np.all(a == np.round(a)):
                raise ValueError(f"cross_entropy needs integer class labels; {what} has "
                                 "non-integer values")
        labels = a.astype(np.int64)
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= n_out:
            raise ValueError(f"class labels must lie in [0, {n_out}) for a model with {n_out} "
                             f"outputs; {what} has labels from {lo} to {hi}")
        return np.ascontiguousarray(labels)
    # mse and binary_cross_entropy: one target per output
    if a.ndim == 1:
        if n_out != 1:
            raise ValueError(f"{what} has shape {a.shape} but the model has {n_out} outputs; "
                             f"pass targets of shape ({rows}, {n_out})")
        a = a.reshape(rows, 1)
    elif a.shape[1] != n_out:
        raise ValueError(f"{what} has shape {a.shape} but the model has {n_out} outputs; "
                         f"expected ({rows}, {n_out})")
    out = np.ascontiguousarray(a, dtype=dtype)
    if loss == "binary_cross_entropy" and (out.min() < 0 or out.max() > 1):
        raise ValueError(f"binary_cross_entropy targets must lie in [0, 1]; {what} has values "
                         f"from {out.min()} to {out.max()}")
    return out


def check_int(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def check_sizes(sizes) -> list[int]:
    try:
        sizes = list(sizes)
    except TypeError:
        raise TypeError(f"layer sizes must be a list of integers, got {sizes!r}") from None
    if len(sizes) < 2:
        raise ValueError(f"layer sizes need at least an input and an output size, got {sizes}")
    out = [check_int(s, f"layer size {i}") for i, s in enumerate(sizes)]
    total = 0
    for a, b in zip(out, out[1:], strict=False):
        total += a * b
        if a * b >= MAX_ELEMENTS or total >= MAX_ELEMENTS:
            raise ValueError(f"layer sizes {out} describe more parameters than can be indexed")
    return out
