"""Data larger than memory: memory-mapped arrays checked and read block by block.

`fit`, `evaluate` and `predict` accept `np.memmap` arrays (`np.load(path, mmap_mode="r")`,
or any view of one). Such an array is never copied whole: it is validated (dtype, shape,
finiteness, label range) one block of about `CHUNK_BYTES` at a time, and wrapped in a
`Stream`, whose slices and row gathers come back converted to the model's dtype and layout.
The trainer gathers each block of minibatch rows (`take(perm[...])`) into a buffer of its
own and hands it to the backend's fused epoch with an identity permutation: the steps, and
so the weights, are bit-identical to training on the same data in memory, on every backend.
A file of another dtype than the model's (float64 on disk, a float32 model) is converted
block by block, the way PyTorch's and Keras's data loaders convert each batch. In a
distributed fit each rank checks its share of the rows (`check_share`) and gathers only
its own slice of every global batch (gradkern.distributed).

What stays in memory grows with the rows, not with the features: the epoch's permutation
(8 bytes a row), its per-step seeds and figures, and predict's output (the caller asked for
it). Everything else is bounded by a few blocks.
"""

from __future__ import annotations

import contextlib
import contextvars
import mmap

import numpy as np

from ._validate import _check_kind, check_X_shape, check_y

CHUNK_BYTES = 16 << 20  # input bytes per validation / conversion block

# (part, parts): stream_X / stream_y check rows [N·part/parts, N·(part+1)/parts) only
_SHARE = contextvars.ContextVar("gradkern_stream_share", default=(0, 1))


@contextlib.contextmanager
def check_share(part: int, parts: int):
    """Within it, stream_X and stream_y check only share `part` of `parts` equal row ranges
    of a memory-mapped array. A distributed fit (every rank maps the same file) checks the
    file once across its ranks this way: rank r its share, and the ranks agree on the
    outcome (gradkern.distributed's setup agreement) before any step."""
    if not 0 <= part < parts:
        raise ValueError(f"share {part} of {parts} does not exist")
    token = _SHARE.set((int(part), int(parts)))
    try:
        yield
    finally:
        _SHARE.reset(token)


def _share(n: int) -> tuple[int, int]:
    part, parts = _SHARE.get()
    return n * part // parts, n * (part + 1) // parts


def is_mapped(a) -> bool:
    """a is a np.memmap, or an ndarray view of one (its data live in a mapped file)."""
    seen = 0
    while isinstance(a, np.ndarray) and seen < 64:
        if isinstance(a, np.memmap):
            return True
        a, seen = a.base, seen + 1
    return isinstance(a, mmap.mmap)


def is_stream(a) -> bool:
    return isinstance(a, Stream)


def block_rows(a: np.ndarray, itemsize: int) -> int:
    """Rows of `a` per block: about CHUNK_BYTES of input (or of its conversion), at least 1."""
    per_row = max(1, int(np.prod(a.shape[1:], dtype=np.int64))) * max(a.dtype.itemsize, itemsize)
    return max(1, CHUNK_BYTES // per_row)


def _blocks(n: int, rows: int, first: int = 0):
    for start in range(first, n, rows):
        yield start, min(n, start + rows)


class Stream:
    """A checked, memory-mapped array read in converted blocks: `s[a:b]` is rows a..b and
    `s.take(idx)` the rows idx, each as a fresh C-contiguous array in the layout training
    reads (the model's dtype for X; int64 labels or (rows, n_out) targets for y).
    `s[rows]` with an integer array is the Stream of those rows (no data read: fit's
    validation_split holds rows out this way); `np.asarray(s)` reads it all (labels)."""

    def __init__(self, src: np.ndarray, shape: tuple, convert, itemsize: int,
                 rows: np.ndarray | None = None):
        self.src = np.asarray(src)  # a plain ndarray view of the map: no copy
        self.rows = rows  # None: every row of src; else the rows of src this Stream is
        self.shape = shape if rows is None else (len(rows), *shape[1:])
        self._convert = convert
        self._itemsize = itemsize
        self.block = block_rows(self.src, itemsize)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _read(self, key) -> np.ndarray:
        return self._convert(self.src[key if self.rows is None else self.rows[key]])

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self._read(key)
        idx = np.asarray(key)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise TypeError("a Stream is read by row slices (s[a:b]), take(rows), or narrowed "
                            "to the Stream of rows s[int array]")
        rows = idx.astype(np.int64) if self.rows is None else self.rows[idx]
        return Stream(self.src, self.shape, self._convert, self._itemsize, rows)

    def take(self, idx: np.ndarray) -> np.ndarray:
        return self._read(idx)

    def __array__(self, dtype=None, copy=None):
        whole = self._read(slice(None))
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def blocks(self, lo: int = 0, hi: int | None = None):
        """(start, converted block) over rows lo..hi (all rows), one block at a time."""
        for a, b in _blocks(self.shape[0] if hi is None else hi, self.block, lo):
            yield a, self._read(slice(a, b))


def take(a, idx: np.ndarray) -> np.ndarray:
    """Rows idx of a Stream or of an in-memory array."""
    return a.take(idx) if isinstance(a, Stream) else a[idx]


def stream_X(X, n_features: int, dtype: np.dtype, what: str = "X") -> Stream:
    """A memory-mapped X checked as `_validate.check_X` checks an array, block by block."""
    a = np.asarray(X)
    check_X_shape(a, n_features, what)
    dtype = np.dtype(dtype)

    def convert(block: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            return np.ascontiguousarray(block, dtype=dtype)

    s = Stream(a, a.shape, convert, dtype.itemsize)
    for start, block in s.blocks(*_share(a.shape[0])):  # all rows, or a rank's share
        bad = ~np.isfinite(block)
        if bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            raw = a[start + i, j]
            why = ("NaN or inf" if not np.isfinite(raw) else
                   f"{float(raw)!r}, beyond the range of the model's dtype {dtype}")
            raise ValueError(f"{what} contains NaN or inf: {what}[{start + i}, {j}] is {why}")
    return s


def stream_y(y, rows: int, loss: str, n_out: int, dtype: np.dtype, what: str = "y",
             x_shape: tuple | None = None) -> Stream:
    """y checked as `_validate.check_y` checks it, block by block (an error names the rows
    of its block, `y[a:b]`); blocks come back in the layout check_y returns."""
    a = np.asarray(y)
    _check_kind(a, what)
    xs = f" (X has shape {x_shape})" if x_shape is not None else ""
    if a.ndim == 0 or a.ndim > 2:
        raise ValueError(f"{what} must be 1-D or 2-D, got shape {a.shape}")
    if a.shape[0] != rows:
        raise ValueError(f"{what} has shape {a.shape} but X has {rows} rows{xs}")
    dtype = np.dtype(dtype)

    def convert(block: np.ndarray, name: str = what) -> np.ndarray:
        return check_y(block, block.shape[0], loss, n_out, dtype, name)

    if loss == "cross_entropy":
        shape, itemsize = (rows,), 8
    else:
        shape, itemsize = (rows, n_out), dtype.itemsize
    s = Stream(a, shape, convert, itemsize)
    lo, hi = _share(rows)  # all rows, or a rank's share (check_share)
    for start, stop in _blocks(hi, s.block, lo):
        convert(a[start:stop], f"{what}[{start}:{stop}]")
    return s


def total_sum_squares(y) -> float:
    """Σ (y - mean(y, axis=0))² in float64, of in-memory targets or of a Stream in two
    passes over its blocks (the column means first)."""
    if not isinstance(y, Stream):
        y64 = np.asarray(y, dtype=np.float64)
        return float(np.sum((y64 - y64.mean(axis=0)) ** 2))
    total = np.zeros(y.shape[1:])
    for _, block in y.blocks():
        total += block.sum(axis=0, dtype=np.float64)
    mean = total / y.shape[0]
    return float(sum(np.sum((block - mean) ** 2) for _, block in y.blocks()))
