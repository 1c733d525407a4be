"""Data sets: scikit-learn's bundled ones, synthetic generators, and a user's files.

Every loader returns a `Dataset` split reproducibly by seed into train and test, with
features standardized by the training split's mean and standard deviation.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BUNDLED = ("digits", "breast_cancer", "wine", "iris", "diabetes")
SYNTHETIC = ("regression", "spirals")


@dataclass
class Dataset:
    """A train/test split; task is 'classification' or 'regression'."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    task: str
    n_classes: int = 0
    feature_names: tuple[str, ...] = ()

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_outputs(self) -> int:
        """Network outputs the task needs: classes, or 1 per regression target."""
        if self.task == "classification":
            return self.n_classes
        return 1 if self.y_train.ndim == 1 else self.y_train.shape[1]

    @property
    def loss(self) -> str:
        return "cross_entropy" if self.task == "classification" else "mse"

    def __repr__(self) -> str:
        extra = f", {self.n_classes} classes" if self.task == "classification" else ""
        return (f"Dataset({self.name!r}, {self.task}{extra}, train {self.X_train.shape}, "
                f"test {self.X_test.shape})")


def split(X: np.ndarray, y: np.ndarray, test_size: float = 0.2, seed: int = 0,
          stratify: bool = True) -> tuple[np.ndarray, ...]:
    """Shuffle and split; classification labels are split per class (stratified)."""
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    if stratify and y.ndim == 1 and y.dtype.kind in "iu":
        test_idx = []
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            test_idx.append(idx[: int(round(len(idx) * test_size))])
        test = np.sort(np.concatenate(test_idx))
        train = np.setdiff1d(np.arange(n), test)
        train, test = rng.permutation(train), rng.permutation(test)
    else:
        perm = rng.permutation(n)
        k = max(1, int(round(n * test_size)))
        test, train = perm[:k], perm[k:]
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"cannot split {n} rows with test_size={test_size}")
    return X[train], y[train], X[test], y[test]


def standardize(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero mean, unit variance by the training split (constant columns left centered)."""
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0
    return (X_train - mean) / std, (X_test - mean) / std


def _finish(name, X, y, task, test_size, seed, scale=True, feature_names=()) -> Dataset:
    X = np.asarray(X, dtype=np.float64)
    if task == "classification":
        classes, y = np.unique(y, return_inverse=True)
        y = y.astype(np.int64)
        n_classes = len(classes)
    else:
        y = np.asarray(y, dtype=np.float64)
        n_classes = 0
    Xtr, ytr, Xte, yte = split(X, y, test_size, seed)
    if scale:
        Xtr, Xte = standardize(Xtr, Xte)
    if task == "regression":  # standardize targets too: MSE then reads in units of std
        mu, sd = ytr.mean(axis=0), ytr.std(axis=0)
        sd = np.where(sd == 0, 1.0, sd)
        ytr, yte = (ytr - mu) / sd, (yte - mu) / sd
    return Dataset(name, Xtr, ytr, Xte, yte, task, n_classes, tuple(feature_names))


def load(name: str, test_size: float = 0.2, seed: int = 0) -> Dataset:
    """A bundled (digits, breast_cancer, wine, iris, diabetes) or synthetic
    (regression, spirals) data set, or a path to a .csv or .npz file."""
    if name in BUNDLED:
        try:
            from sklearn import datasets as skd
        except ImportError:
            raise ImportError(f"data set {name!r} comes from scikit-learn: "
                              "pip install 'gradkern[sklearn]'") from None
        bunch = getattr(skd, f"load_{name}")()
        task = "regression" if name == "diabetes" else "classification"
        names = tuple(str(f) for f in getattr(bunch, "feature_names", ()))
        return _finish(name, bunch.data, bunch.target, task, test_size, seed,
                       feature_names=names)
    if name == "regression":
        X, y = make_regression(seed=seed)
        return _finish(name, X, y, "regression", test_size, seed)
    if name == "spirals":
        X, y = two_spirals(seed=seed)
        return _finish(name, X, y, "classification", test_size, seed)
    path = Path(name)
    if path.suffix in (".csv", ".npz"):
        return load_file(path, test_size=test_size, seed=seed)
    raise ValueError(f"unknown data set {name!r}; known: {', '.join(BUNDLED + SYNTHETIC)}, "
                     "or a path to a .csv or .npz file")


def make_regression(n: int = 1000, n_features: int = 8, noise: float = 0.1,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """y = a smooth nonlinear function of X plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    w = rng.normal(size=n_features)
    y = np.sin(X @ w / math.sqrt(n_features)) + 0.5 * X[:, 0] * X[:, 1 % n_features]
    return X, y + noise * rng.normal(size=n)


def two_spirals(n: int = 1000, noise: float = 0.2, turns: float = 1.5,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals in the plane, labels 0 and 1."""
    rng = np.random.default_rng(seed)
    m = n // 2
    t = np.sqrt(rng.uniform(0, 1, size=m)) * turns * 2 * math.pi
    a = np.stack([t * np.cos(t), t * np.sin(t)], axis=1)
    X = np.concatenate([a, -a]) + noise * rng.normal(size=(2 * m, 2))
    y = np.concatenate([np.zeros(m, dtype=np.int64), np.ones(m, dtype=np.int64)])
    return X, y


def _infer_task(y: np.ndarray) -> str:
    if y.dtype.kind in "iub":
        return "classification"
    if y.dtype.kind in "OUS":
        return "classification"
    if np.all(y == np.round(y)) and len(np.unique(y)) <= max(2, min(50, len(y) // 10)):
        return "classification"
    return "regression"


def load_file(path, target: str | int | None = None, test_size: float = 0.2, seed: int = 0,
              task: str | None = None) -> Dataset:
    """A user's .csv (header row; target column by name, else the last) or .npz (X, y)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such data file: {path}")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "X" not in z or "y" not in z:
                raise ValueError(f"{path} must hold arrays 'X' and 'y'; it has {list(z.keys())}")
            X, y = z["X"], z["y"]
        names: tuple[str, ...] = ()
    elif path.suffix == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        if len(rows) < 2:
            raise ValueError(f"{path} needs a header row and at least one data row")
        header, body = rows[0], rows[1:]
        if target is None:
            t = len(header) - 1
        elif isinstance(target, int):
            t = target
        elif target in header:
            t = header.index(target)
        else:
            raise ValueError(f"target column {target!r} not in {path}: columns are {header}")
        try:
            X = np.array([[float(v) for j, v in enumerate(r) if j != t] for r in body])
        except ValueError as exc:
            raise ValueError(f"{path}: feature columns must be numbers ({exc})") from None
        col = [r[t] for r in body]
        try:
            y = np.array([float(v) for v in col])
            if np.all(y == np.round(y)) and _infer_task(y) == "classification":
                y = y.astype(np.int64)
        except ValueError:
            y = np.array(col)
        names = tuple(h for j, h in enumerate(header) if j != t)
    else:
        raise ValueError(f"unsupported data file {path}: use .csv or .npz")
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise ValueError(f"{path}: X of shape {X.shape} does not match y of shape {y.shape}")
    if X.dtype.kind not in "iuf" or not np.isfinite(X.astype(np.float64)).all():
        raise ValueError(f"{path}: features must be finite numbers")
    task = task or _infer_task(y)
    return _finish(path.stem, X, y, task, test_size, seed, feature_names=names)
