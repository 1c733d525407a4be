"""Data sets: scikit-learn's bundled ones, synthetic generators, and a user's files.

Every loader returns a `Dataset` split reproducibly by seed into train and test, with
features standardized by the training split's mean and standard deviation.
"""

from __future__ import annotations

import csv
import math
import struct
import zipfile
import zlib
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
    # the preprocessing applied, to apply again to raw rows (see `preprocessing`)
    x_mean: np.ndarray | None = None  # X = (raw - x_mean) / x_scale
    x_scale: np.ndarray | None = None
    y_mean: np.ndarray | None = None  # regression: y = (raw - y_mean) / y_scale
    y_scale: np.ndarray | None = None
    classes: np.ndarray | None = None  # classification: label i is classes[i]
    target_name: str | None = None
    train_index: np.ndarray | None = None  # the rows of the source in each split
    test_index: np.ndarray | None = None

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

    def preprocessing(self) -> dict:
        """The preprocessing as plain JSON-able data (what `gradkern train` saves in a
        checkpoint's metadata): features (names, or none), x_mean, x_scale, task, and
        classes (the original labels, str or int) or y_mean, y_scale (regression), target."""
        out: dict = {"task": self.task, "features": list(self.feature_names),
                     "target": self.target_name}
        n = self.n_features
        out["x_mean"] = [float(v) for v in (np.zeros(n) if self.x_mean is None
                                            else self.x_mean)]
        out["x_scale"] = [float(v) for v in (np.ones(n) if self.x_scale is None
                                             else self.x_scale)]
        if self.task == "classification":
            classes = np.arange(self.n_classes) if self.classes is None else self.classes
            out["classes"] = [c.item() if isinstance(c, np.generic) else c for c in classes]
        else:
            k = self.n_outputs
            out["y_mean"] = [float(v) for v in np.ravel(np.zeros(k) if self.y_mean is None
                                                        else self.y_mean)]
            out["y_scale"] = [float(v) for v in np.ravel(np.ones(k) if self.y_scale is None
                                                         else self.y_scale)]
        return out

    def __repr__(self) -> str:
        extra = f", {self.n_classes} classes" if self.task == "classification" else ""
        return (f"Dataset({self.name!r}, {self.task}{extra}, train {self.X_train.shape}, "
                f"test {self.X_test.shape})")


def split(X: np.ndarray, y: np.ndarray, test_size: float = 0.2, seed: int = 0,
          stratify: bool = True) -> tuple[np.ndarray, ...]:
    """Shuffle and split; classification labels are split per class (stratified)."""
    train, test = split_indices(y, test_size, seed, stratify)
    return X[train], y[train], X[test], y[test]


def split_indices(y: np.ndarray, test_size: float = 0.2, seed: int = 0,
                  stratify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The (train, test) row indices `split` uses, in the order it uses them."""
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    rng = np.random.default_rng(seed)
    n = y.shape[0]
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
    return train, test


def standardize(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero mean, unit variance by the training split (constant columns left centered)."""
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0
    return (X_train - mean) / std, (X_test - mean) / std


def _finish(name, X, y, task, test_size, seed, scale=True, feature_names=(),
            target_name=None) -> Dataset:
    X = np.asarray(X, dtype=np.float64)
    classes = mu = sd = None
    if task == "classification":
        classes, y = np.unique(y, return_inverse=True)
        y = y.astype(np.int64)
        n_classes = len(classes)
    else:
        y = np.asarray(y, dtype=np.float64)
        n_classes = 0
    train, test = split_indices(y, test_size, seed)
    Xtr, ytr, Xte, yte = X[train], y[train], X[test], y[test]
    mean = np.zeros(X.shape[1])
    std = np.ones(X.shape[1])
    if scale:
        mean = Xtr.mean(axis=0)
        std = Xtr.std(axis=0)
        std[std == 0] = 1.0
        Xtr, Xte = (Xtr - mean) / std, (Xte - mean) / std
    if task == "regression":  # standardize targets too: MSE then reads in units of std
        mu, sd = ytr.mean(axis=0), ytr.std(axis=0)
        sd = np.where(sd == 0, 1.0, sd)
        ytr, yte = (ytr - mu) / sd, (yte - mu) / sd
    return Dataset(name, Xtr, ytr, Xte, yte, task, n_classes, tuple(feature_names),
                   x_mean=mean, x_scale=std, y_mean=mu, y_scale=sd, classes=classes,
                   target_name=target_name, train_index=train, test_index=test)


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


TASKS = ("classification", "regression")
_EXACT_INT = 2.0 ** 53  # float labels beyond this are not exact integers


def _read_npz(path: Path, names: tuple[str, ...] = ("X", "y")) -> tuple[np.ndarray, ...]:
    """The arrays `names` (X and y) of an .npz, each checked against its member's size before
    it is read: a header that lies about its shape is refused instead of allocating what it
    claims. Other members are not read."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = {Path(n).stem: zf.getinfo(n) for n in zf.namelist() if n.endswith(".npy")}
            if any(n not in members for n in names):
                what = "arrays 'X' and 'y'" if len(names) > 1 else f"an array {names[0]!r}"
                raise _Refused(f"{path} must hold {what}; it has {sorted(members)}")
            for name in names:
                info = members[name]
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    data_size = info.file_size - f.tell()
                if dtype.hasobject:
                    raise _Refused(f"{path}: array {name!r} holds Python objects")
                nbytes = math.prod(shape) * dtype.itemsize
                if nbytes != data_size:  # checked before anything of that size is allocated
                    raise _Refused(f"{path}: array {name!r} declares shape {shape} of {dtype} "
                                   f"({nbytes:,} bytes) but holds {data_size:,} bytes")
        with np.load(path, allow_pickle=False) as z:
            return tuple(z[n] for n in names)
    except _Refused as exc:
        raise ValueError(str(exc)) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, KeyError,
            ValueError, struct.error, SyntaxError, NotImplementedError) as exc:
        raise ValueError(f"{path} is not a readable .npz file ({exc})") from None


class _Refused(ValueError):
    """A readable .npz whose content this loader refuses (message names the file)."""


def _read_csv(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows and each row's line number; blank lines skipped, every row as wide
    as the header."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows, lines = [], []
            for row in reader:
                if row:  # a blank line
                    rows.append(row)
                    lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
                         ) from None
    except csv.Error as exc:
        raise ValueError(f"{path}: line {reader.line_num}: {exc}") from None
    if len(rows) < 2:
        raise ValueError(f"{path} needs a header row and at least one data row")
    header = rows[0]
    for row, line in zip(rows[1:], lines[1:], strict=True):
        if len(row) != len(header):
            raise ValueError(f"{path}: line {line} has {len(row)} fields, the header has "
                             f"{len(header)}")
    return header, rows[1:], lines[1:]


def _target_index(path: Path, header: list[str], target) -> int:
    n = len(header)
    if target is None:
        return n - 1
    if isinstance(target, (int, np.integer)) and not isinstance(target, (bool, np.bool_)):
        if not -n <= target < n:
            raise ValueError(f"target column {int(target)} out of range: {path} has {n} "
                             f"columns ({-n}..{n - 1})")
        return int(target) % n  # negative: counted from the end, as Python does
    if not isinstance(target, str):
        raise TypeError(f"target must be a column name or index, got {type(target).__name__}")
    if target not in header:
        raise ValueError(f"target column {target!r} not in {path}: columns are {header}")
    if header.count(target) > 1:
        raise ValueError(f"target column {target!r} appears {header.count(target)} times in "
                         f"{path}; give its index instead")
    return header.index(target)


def _number_columns(path: Path, header, body, lines, columns) -> np.ndarray:
    """The CSV body's columns (indices into header) as a float64 (rows, columns) array; a
    cell that is not a finite number is an error naming its line and column."""
    X = np.empty((len(body), len(columns)))
    for i, (row, line) in enumerate(zip(body, lines, strict=True)):
        for k, j in enumerate(columns):
            try:
                X[i, k] = float(row[j])
            except ValueError:
                raise ValueError(f"{path}: line {line}, column {header[j]!r}: {row[j]!r} is "
                                 "not a number") from None
            if not math.isfinite(X[i, k]):
                raise ValueError(f"{path}: line {line}, column {header[j]!r}: {row[j]!r} is "
                                 "not finite")
    return X


def _parse_csv(path: Path, header, body, lines, t) -> tuple[np.ndarray, np.ndarray]:
    feats = [j for j in range(len(header)) if j != t]
    if not feats:
        raise ValueError(f"{path} has no feature columns besides the target {header[t]!r}")
    X = _number_columns(path, header, body, lines, feats)
    col = [r[t] for r in body]
    numbers, bad = [], None
    for v, line in zip(col, lines, strict=True):
        try:
            numbers.append(float(v))
        except ValueError:
            bad = bad or (line, v)
    if bad is None:
        y = np.array(numbers)
        if not np.isfinite(y).all():
            i = int(np.flatnonzero(~np.isfinite(y))[0])
            raise ValueError(f"{path}: line {lines[i]}, target column {header[t]!r}: "
                             f"{col[i]!r} is not finite")
        if (np.all(y == np.round(y)) and np.abs(y).max() < _EXACT_INT
                and _infer_task(y) == "classification"):
            y = y.astype(np.int64)
    elif numbers:  # mostly numbers, some not: a typo or a missing value, not class names
        raise ValueError(f"{path}: line {bad[0]}, target column {header[t]!r}: {bad[1]!r} is "
                         "not a number, while other rows are (string class labels must all "
                         "be strings)")
    else:
        empty = [line for v, line in zip(col, lines, strict=True) if not v.strip()]
        if empty:
            raise ValueError(f"{path}: line {empty[0]}, target column {header[t]!r} is empty")
        y = np.array(col)
    return X, y


def _check_arrays(path: Path, X: np.ndarray, y: np.ndarray,
                  task: str | None) -> tuple[np.ndarray, str]:
    """X and y of a user's file: shapes, kinds and finiteness, naming the row and column."""
    if X.dtype.kind not in "iuf":
        raise ValueError(f"{path}: features must be numbers, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{path}: X must be 2-D (rows, features), got shape {X.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim not in (1, 2) or X.shape[0] != y.shape[0]:
        raise ValueError(f"{path}: X of shape {X.shape} does not match y of shape {y.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{path}: X of shape {X.shape} has no "
                         f"{'rows' if X.shape[0] == 0 else 'feature columns'}")
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        i, j = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(f"{path}: X[{i}, {j}] (row {i}, column {j}) is {X[i, j]}, not finite")
    if y.dtype.kind not in "iubfUS":
        raise ValueError(f"{path}: y must be numbers or strings, got dtype {y.dtype}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        i = np.argwhere(~np.isfinite(y))[0]
        where = f"row {i[0]}" + (f", column {i[1]}" if y.ndim == 2 else "")
        raise ValueError(f"{path}: y {where} is {y[tuple(i)]}, not finite")
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    task = task or _infer_task(y)
    if task == "classification":
        if y.ndim != 1:
            raise ValueError(f"{path}: class labels must be one column, got y of shape "
                             f"{y.shape}")
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            i = int(np.flatnonzero(y != np.round(y))[0])
            raise ValueError(f"{path}: class labels must be integers or strings; row {i} "
                             f"is {y[i]}")
    elif y.dtype.kind in "US":
        raise ValueError(f"{path}: a regression target must be numbers, got strings "
                         f"such as {str(y[0])!r}")
    return y, task


def load_file(path, target: str | int | None = None, test_size: float = 0.2, seed: int = 0,
              task: str | None = None) -> Dataset:
    """A user's .csv (header row; target column by name or index, negative from the end;
    default the last) or .npz (arrays X, y). Values must be finite; a bad cell is named by
    its line and column."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such data file: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a data file")
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    if path.suffix == ".npz":
        if target is not None:
            raise ValueError(f"{path}: target applies to .csv files; an .npz holds X and y")
        X, y = _read_npz(path)
        names: tuple[str, ...] = ()
        target_name = None
    elif path.suffix == ".csv":
        header, body, lines = _read_csv(path)
        t = _target_index(path, header, target)
        X, y = _parse_csv(path, header, body, lines, t)
        names = tuple(h for j, h in enumerate(header) if j != t)
        target_name = header[t]
    else:
        raise ValueError(f"unsupported data file {path}: use .csv or .npz")
    y, task = _check_arrays(path, X, y, task)
    return _finish(path.stem, X, y, task, test_size, seed, feature_names=names,
                   target_name=target_name)


def read_rows(path, width: int, columns=(), target: str | None = None) -> np.ndarray:
    """Raw feature rows (N, width) float64 of a .csv, .npy or .npz to predict on.

    A .csv is matched to the model's input `columns` by name, in any order; the `target`
    column, if present, is ignored, and any other column is refused. Without names its
    columns are taken in order and there must be exactly `width`. A .npy holds a 2-D
    numeric array of `width` columns, and so does an .npz's array X (its y, if there, is
    not read). Every value must be a finite number; a bad cell is named by its line and
    column.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such data file: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a data file")
    if path.suffix in (".npy", ".npz"):
        if path.suffix == ".npz":
            (X,) = _read_npz(path, ("X",))
        else:
            try:
                X = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, EOFError, SyntaxError) as exc:
                raise ValueError(f"{path} is not a readable .npy file ({exc})") from None
        if not isinstance(X, np.ndarray) or X.dtype.kind not in "iuf" or X.ndim != 2:
            raise ValueError(f"{path}: expected a 2-D array of numbers (rows, {width}), got "
                             f"{getattr(X, 'dtype', '?')} of shape {getattr(X, 'shape', '?')}")
        if X.shape[1] != width or X.shape[0] == 0:
            raise ValueError(f"{path}: array of shape {X.shape}; the model takes (rows, "
                             f"{width}) with at least one row")
        X = np.array(X, dtype=np.float64)
        if not np.isfinite(X).all():
            i, j = np.argwhere(~np.isfinite(X))[0]
            raise ValueError(f"{path}: row {i}, column {j} is {X[i, j]}, not finite")
        return X
    if path.suffix != ".csv":
        raise ValueError(f"unsupported data file {path}: use .csv, .npy or .npz")
    header, body, lines = _read_csv(path)
    columns = list(columns)
    if columns:
        for name in header:
            if header.count(name) > 1:
                raise ValueError(f"{path}: column {name!r} appears {header.count(name)} times")
        unknown = [h for h in header if h not in columns and h != target]
        if unknown:
            raise ValueError(f"{path}: column {unknown[0]!r} is not one of the model's inputs "
                             f"({len(columns)} columns: {_short_list(columns)})")
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path} lacks the model's input column {missing[0]!r} "
                             f"({len(missing)} missing of {len(columns)})")
        idx = [header.index(c) for c in columns]
    else:
        if len(header) != width:
            raise ValueError(f"{path} has {len(header)} columns; the model takes {width} "
                             "(its checkpoint names no columns, so they are read in order)")
        idx = list(range(width))
    return _number_columns(path, header, body, lines, idx)


def _short_list(names, limit: int = 5) -> str:
    text = ", ".join(repr(n) for n in names[:limit])
    return text + (", ..." if len(names) > limit else "")


# ------------------------------------------------------------ data larger than memory
MAPPED = (".npy", ".npz")


def _map_npz_member(path: Path, zf: zipfile.ZipFile, name: str) -> np.ndarray:
    """The array `name` of an uncompressed .npz, memory-mapped where it lies in the file."""
    info = next((zf.getinfo(n) for n in zf.namelist() if n in (name, f"{name}.npy")), None)
    if info is None:
        raise _Refused(f"{path} must hold arrays 'X' and 'y'; it has "
                       f"{sorted(Path(n).stem for n in zf.namelist())}")
    if info.compress_type != zipfile.ZIP_STORED:
        raise _Refused(f"{path}: array {name!r} is compressed (np.savez_compressed); "
                       "memory-mapping needs it stored as np.savez writes it")
    with path.open("rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise _Refused(f"{path}: array {name!r} has no zip entry where the index says")
        n_name, n_extra = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + n_name + n_extra
        f.seek(start)
        version = np.lib.format.read_magic(f)
        reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = reader(f)
        offset = f.tell()
    if dtype.hasobject:
        raise _Refused(f"{path}: array {name!r} holds Python objects")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != info.file_size - (offset - start):
        raise _Refused(f"{path}: array {name!r} declares shape {shape} of {dtype} "
                       f"({nbytes:,} bytes) but holds {info.file_size - (offset - start):,}")
    if nbytes == 0:
        return np.empty(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset,
                     order="F" if fortran else "C")


def _map(path: Path, what: str):
    """np.load(path, mmap_mode='r') of a .npy, or X and y of an uncompressed .npz."""
    if not path.exists():
        raise FileNotFoundError(f"no such data file: {path}")
    try:
        if path.suffix == ".npz":
            with zipfile.ZipFile(path) as zf:
                return _map_npz_member(path, zf, "X"), _map_npz_member(path, zf, "y")
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except _Refused as exc:
        raise ValueError(str(exc)) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, struct.error,
            SyntaxError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{what} {path} cannot be memory-mapped ({exc})") from None


def open_mapped(data, target=None, test_size: float = 0.2, task: str | None = None
                ) -> Dataset:
    """A data set larger than memory, memory-mapped, never read whole: `data` an .npy of X
    with `target` an .npy of y, or an uncompressed .npz of X and y (np.savez). The rows are
    used as stored (no standardization: preprocess offline) and the last `test_size` of
    them are the test split (as Keras's validation_split takes the last rows). y of an
    integer dtype is a classification (labels 0..K-1, K = the largest + 1), of floats a
    regression, unless `task` says. Nothing but the label range is read here; fit
    validates the rows block by block."""
    from .stream import CHUNK_BYTES

    path = Path(data)
    if path.suffix not in MAPPED:
        raise ValueError(f"{path}: memory-mapped data are .npy (with --target y.npy) or "
                         "an uncompressed .npz of X and y")
    if path.suffix == ".npz":
        if target is not None:
            raise ValueError(f"{path}: an .npz holds X and y; pass no target")
        X, y = _map(path, "data")
    else:
        if target is None:
            raise ValueError(f"{path} holds X only: pass the targets as --target y.npy "
                             "(target=path)")
        if Path(target).suffix != ".npy":
            raise ValueError(f"target {target}: the targets of an .npy of X are an .npy of y")
        X, y = _map(path, "data"), _map(Path(target), "target")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if X.ndim != 2 or y.ndim not in (1, 2) or X.shape[0] != y.shape[0]:
        raise ValueError(f"{path}: X of shape {X.shape} does not match y of shape {y.shape} "
                         "(the same number of rows, X 2-D)")
    if X.dtype.kind not in "iuf" or y.dtype.kind not in "iuf":
        raise ValueError(f"{path}: X and y must be numbers, got {X.dtype} and {y.dtype}")
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    task = task or ("classification" if y.dtype.kind in "iu" else "regression")
    n_classes = 0
    if task == "classification":
        if y.ndim != 1:
            raise ValueError(f"{path}: class labels must be one column, got y of shape "
                             f"{y.shape}")
        step = max(1, CHUNK_BYTES // y.dtype.itemsize)
        lo = min(int(y[s : s + step].min()) for s in range(0, len(y), step))
        hi = max(int(y[s : s + step].max()) for s in range(0, len(y), step))
        if lo < 0:
            raise ValueError(f"{path}: class labels must be 0..K-1, found {lo}")
        n_classes = hi + 1
    n = X.shape[0]
    k = max(1, int(round(n * test_size))) if 0 < test_size < 1 else 0
    if not 0 < k < n:
        raise ValueError(f"cannot split {n} rows with test_size={test_size}")
    return Dataset(f"{path.stem} (memory-mapped)", X[: n - k], y[: n - k], X[n - k :],
                   y[n - k :], task, n_classes)
