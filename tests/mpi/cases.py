"""The tiny models and data the MPI scripts and tests/test_distributed.py share."""

from __future__ import annotations

import numpy as np

import gradkern as gk

BATCH = 8      # per rank: K = 2 ranks train global batches of 16
EPOCHS = 3
N_ROWS = 90    # 90 = 5·16 + 10: the last global batch gives rank 0 8 rows, rank 1 2


def data(case: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(N_ROWS, 5))
    if case == "bn":
        return X, rng.integers(0, 3, size=N_ROWS)
    return X, X @ rng.normal(size=(5, 2)) + 0.1 * rng.normal(size=(N_ROWS, 2))


def model_of(case: str, backend: str, dtype: str):
    if case == "bn":  # batch norm and dropout: per-rank statistics and masks
        return gk.MLP([5, 12, 3], activation="tanh", loss="cross_entropy", dtype=dtype,
                      backend=backend, seed=3, batchnorm=True, dropout=0.2)
    return gk.MLP([5, 16, 8, 2], activation="tanh", loss="mse", dtype=dtype,
                  backend=backend, seed=3)


def optimizer_of(case: str):
    if case == "adam":
        return gk.optim.Adam(lr=1e-2)
    return gk.optim.SGD(lr=0.05, momentum=0.9)


def equivalence_cases(backends) -> list[tuple[str, str, str]]:
    """(backend, dtype, case) of the K=2 vs one process comparison: SGD on every backend in
    float64 and (but Numba: one compile, float64 only) float32; Adam in float64."""
    out = [(b, "float64", "sgd") for b in backends]
    out += [(b, "float32", "sgd") for b in backends if b != "numba"]
    return out + [(b, "float64", "adam") for b in backends]


def bn_dtype(backend: str) -> str:
    return "float64" if backend == "numba" else "float32"
