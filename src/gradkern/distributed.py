"""Synchronous data-parallel training over MPI (mpi4py): `fit(..., comm=MPI.COMM_WORLD)`.

Every rank runs the same `fit` on the same model (same architecture and seed), optimizer
and data set. Each epoch every rank draws the same global permutation from the model's
generator; a step trains on one *global* minibatch of K·batch_size rows (K ranks,
`batch_size` the per-rank batch): rank r takes rows r·B .. (r+1)·B of it (the last global
batch of an epoch may be short: ranks past its end get fewer rows, or none). Per step:

1. local forward, loss and backward on the rank's rows (`Backend.gradients`);
2. ONE `Allreduce` (sum) of a packed buffer: the flat gradient weighted by
   rows_r / rows_global, the weighted loss, the row count and an error flag, so every rank
   receives the mean gradient (and mean loss) of the global batch;
3. the same update on every rank (`Backend.apply_gradients`): the divergence check on the
   reduced loss and gradient norm, clipping, batch normalization's running statistics, the
   optimizer step. The reduced values are identical on every rank, so every rank accepts
   or rejects the same step, and the weights stay bit-identical.

- **Dropout** masks come from the step's seed and the rank (rank 0 uses the step seed
  itself, so one rank reproduces the single-process masks).
- **Batch normalization** normalizes with per-rank batch statistics, as DDP does by
  default (no SyncBatchNorm here); each rank updates its running statistics from its own
  rows, and at the end of every epoch the running statistics are averaged over the ranks
  (one Allreduce), so validation, checkpoints and the returned model are identical on
  every rank. With batch norm, a global batch that would give a rank exactly one row drops
  that row from the epoch (the distributed form of the single-process rule).
- **Memory-mapped data** (every rank maps the same file): the ranks check the file once
  between them, rank r rows [N·r/K, N·(r+1)/K) (`stream.check_share`), and agree on the
  outcome at setup, so a bad row anywhere stops every rank before any step, the rank that
  found it naming the row; in training each rank gathers only its own slice of every
  global batch (`gather`): about N/K rows of the file per epoch.
- **Rank 0 alone** shows the progress bar, warns, and writes checkpoints; every rank reads
  the same file to resume (a shared file system). Resuming with the same K is
  bit-identical to training straight through. Checkpoints record K and the per-rank
  batch; resuming with another K (one process included) is a CheckpointError.
- **Faults.** A rank whose setup fails (bad data: NaN in its X, a refused resume file),
  whose step raises (in its rows or its kernel) or whose epoch end raises (a checkpoint
  that cannot be written, an `on_epoch` callback) does not leave the others waiting: every
  collective carries an error flag (the step's in its packed buffer; setup and epoch end
  have an agreement Allreduce of their own), so all ranks learn of it at the same
  collective, exchange the messages and stop: the failing rank re-raises its own
  exception, every other rank raises `DistributedError` naming the rank and the error. A
  rank that dies or hangs outside any Python exception (SIGKILL, a stuck kernel) is caught
  by a watchdog: no collective may wait longer than `timeout` seconds (default 600, or
  `$GRADKERN_COMM_TIMEOUT`), after which the job is ended with `MPI_Abort`.

Run under MPI: `mpiexec -n 2 python train.py`, or `mpirun -n 2 gradkern train ...
--distributed`. Costs and when it pays: docs/distributed.md.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from .contract import GOLDEN, MASK64, Hyper, Layer

DEFAULT_TIMEOUT = 600.0

# the packed step buffer: [gradients (n_params) | loss | rows | failed ranks]
_LOSS, _ROWS, _FAIL = 0, 1, 2
_TAIL = 3


class DistributedError(RuntimeError):
    """Another rank of a distributed fit failed; every rank stopped at the same point."""


@dataclass
class Group:
    """An MPI communicator with the options of a distributed fit:
    `fit(..., comm=Group(MPI.COMM_WORLD, timeout=60))`. timeout: the longest any
    collective may wait, in seconds, before the job is aborted (a dead or stuck rank)."""

    comm: object
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.timeout is not None and not (isinstance(self.timeout, (int, float))
                                             and self.timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, "
                             f"got {self.timeout!r}")


def rank_seed(step_seed: int, rank: int) -> int:
    """The dropout seed of `rank` in the step seeded by `step_seed` (rank 0: the seed)."""
    return (int(step_seed) + int(rank) * GOLDEN) & MASK64


def rank_slice(rows: int, batch_size: int, rank: int) -> tuple[int, int]:
    """The [lo, hi) rows of a global batch of `rows` that `rank` trains on."""
    lo = min(rank * batch_size, rows)
    return lo, min(lo + batch_size, rows)


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:  # pragma: no cover - only without mpi4py
        raise ImportError("distributed training needs mpi4py and an MPI library: "
                          "pip install mpich mpi4py (or gradkern[dist])") from exc
    return MPI


def _timeout(value) -> float:
    if value is not None:
        return float(value)
    env = os.environ.get("GRADKERN_COMM_TIMEOUT")
    if env:
        try:
            t = float(env)
        except ValueError:
            raise ValueError(f"GRADKERN_COMM_TIMEOUT must be seconds, got {env!r}") from None
        if t > 0:
            return t
    return DEFAULT_TIMEOUT


class Session:
    """One distributed fit: the communicator, this rank's place, the packed buffer and the
    watchdog. Made by `fit` below; the trainer calls it at its collective points."""

    def __init__(self, comm) -> None:
        MPI = _mpi()
        timeout = None
        if isinstance(comm, Group):
            comm, timeout = comm.comm, comm.timeout
        if not isinstance(comm, MPI.Intracomm):
            raise TypeError(f"comm must be an mpi4py intracommunicator (MPI.COMM_WORLD) or "
                            f"a gradkern.distributed.Group, got {type(comm).__name__}")
        self.MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.is_root = self.rank == 0
        self.timeout = _timeout(timeout)
        self.where = "setup"
        self.failed = False
        self.model = None
        self.batch_size = 0
        self._packed = None
        self._waiting_since: float | None = None
        self._stop = threading.Event()
        self._watchdog = None

    # ---------------------------------------------------------------- the watchdog
    def _start_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                              name="gradkern-mpi-watchdog")
            self._watchdog.start()

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.timeout / 4)):
            since = self._waiting_since
            if since is not None and time.monotonic() - since > self.timeout:
                sys.stderr.write(
                    f"gradkern: rank {self.rank} of {self.size}: no answer from the other "
                    f"ranks for {self.timeout:g} s at {self.where} (a rank died or hangs); "
                    "aborting the job\n")
                sys.stderr.flush()
                if self.MPI.Query_thread() >= self.MPI.THREAD_MULTIPLE:
                    self.comm.Abort(3)
                os._exit(3)

    def close(self) -> None:
        self._stop.set()

    def _allreduce(self, buf) -> None:
        self._waiting_since = time.monotonic()
        try:
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        finally:
            self._waiting_since = None

    # ---------------------------------------------------------------- agreement
    def _raise_failure(self, own: BaseException | None) -> None:
        """Every rank knows a rank failed: exchange the messages and raise."""
        msg = None if own is None else f"{type(own).__name__}: {own}"
        self._waiting_since = time.monotonic()
        try:
            msgs = self.comm.allgather(msg)
        finally:
            self._waiting_since = None
        self.failed = True  # reported: the trainer's exit must not agree a second time
        failed = [(r, m) for r, m in enumerate(msgs) if m is not None]
        text = "; ".join(f"rank {r} of {self.size} failed at {self.where}: {m}"
                         for r, m in failed)
        if own is not None:
            raise own
        raise DistributedError(f"{text} (every rank stopped)")

    def agree(self, own: BaseException | None = None) -> None:
        """A collective checkpoint: returns on every rank if no rank failed, raises on
        every rank otherwise (`own`: this rank's failure, re-raised here)."""
        flag = np.array([0.0 if own is None else 1.0])
        self._allreduce(flag)
        if flag[0] != 0:
            self._raise_failure(own)

    def fail(self, exc: BaseException) -> None:
        """This rank failed outside a step: take part in the agreement the other ranks
        are heading for, then raise."""
        if self.failed or isinstance(exc, DistributedError):
            raise exc  # every rank stopped at the same collective already
        self.agree(exc)

    # ---------------------------------------------------------------- the trainer's hooks
    def start(self, model, optimizer, X, y, batch_size: int, has_bn: bool,
              start_epoch: int, epochs: int) -> int:
        """Before the first epoch (every rank's setup done): agree, check that every rank
        holds the same model, optimizer and data-order state and the same data shape;
        returns the global batch size."""
        self.agree()
        self.where = "the start of training"
        self.model = model
        self.batch_size = int(batch_size)
        dtype = getattr(X, "src", X).dtype  # a Stream (memory-mapped X): the file's dtype
        mine = (_fingerprint(model, optimizer), tuple(X.shape), tuple(y.shape), str(dtype),
                self.batch_size, int(start_epoch), int(epochs))
        self._waiting_since = time.monotonic()
        try:
            theirs = self.comm.allgather(mine)
        finally:
            self._waiting_since = None
        names = ("model, optimizer and data-order state (build it with the same seed on every "
                 "rank)", "X shape", "y shape", "X dtype", "batch_size", "resumed epoch",
                 "epochs")
        for r, t in enumerate(theirs):
            for name, a, b in zip(names, theirs[0], t, strict=True):
                if a != b:
                    self.failed = True
                    raise DistributedError(f"rank {r} differs from rank 0 in its {name}: "
                                           f"{b!r} != {a!r}; every rank must call fit alike")
        if has_bn and self.batch_size == 1:
            raise ValueError("batch_size=1 with batch normalization: each rank's batch of one "
                             "row has no batch statistics; use batch_size >= 2")
        n_params = model.plan.n_params
        self._packed = np.zeros(n_params + _TAIL, dtype=model.dtype)
        self._start_watchdog()
        return min(self.size * self.batch_size, X.shape[0])

    def own_positions(self, n: int, global_bs: int) -> np.ndarray:
        """The positions (into n consecutive rows of whole global batches, the last one
        possibly short) of this rank's slice of every global batch, in order."""
        j = np.arange(n, dtype=np.int64)
        off = j % global_bs
        rows = np.minimum(global_bs, n - (j - off))  # the size of j's global batch
        lo = np.minimum(self.rank * self.batch_size, rows)
        return j[(off >= lo) & (off < np.minimum(lo + self.batch_size, rows))]

    def gather(self, X, Y, rows: np.ndarray, global_bs: int):
        """Memory-mapped data: this rank reads only its own slice of each global batch in
        `rows` (a block of whole global batches of the epoch's order). Returns (X rows, Y
        rows, order) for train_epoch: `order` has one entry per row of the block and maps
        this rank's positions to the rows it gathered (the others' positions, never read
        by this rank, are 0)."""
        from .stream import take

        pos = self.own_positions(rows.shape[0], global_bs)
        order = np.zeros(rows.shape[0], dtype=np.int64)
        order[pos] = np.arange(pos.shape[0])
        mine = rows[pos]
        return take(X, mine), take(Y, mine), order

    def train_epoch(self, plan, bufs, X, Y, perm, global_bs: int, opt, seeds,
                    clip_norm: float, losses, gnorms, lrs=None, weights=None) -> int:
        """`Backend.train_epoch` over the ranks: global batches perm[k·G:(k+1)·G], this
        rank's slice of each; returns the number of accepted steps (as the backend).
        lrs: per-step learning rates; weights: per-row sample weights (a rank's share of
        the global gradient is then its share of the batch's weight)."""
        backend = self.model.backend
        P = plan.n_params
        packed = self._packed
        grads, tail = packed[:P], packed[P:]
        n = perm.shape[0]
        n_batches = (n + global_bs - 1) // global_bs
        lr = opt.hyper[Hyper.LR]
        try:
            for k in range(n_batches):
                self.where = f"step {int(opt.step[0]) + 1}"
                base = k * global_bs
                rows = min(global_bs, n - base)
                lo, hi = rank_slice(rows, self.batch_size, self.rank)
                own = None
                w_all, share = float(rows), float(hi - lo)
                try:
                    idx = perm[base + lo : base + hi]
                    wl = None
                    if weights is not None:
                        w_all = float(np.sum(weights[perm[base : base + rows]],
                                             dtype=np.float64))
                        wl = weights[idx]
                        share = float(np.sum(wl, dtype=np.float64))
                    if share > 0:
                        seed = rank_seed(seeds[k], self.rank)
                        loss = (backend.gradients(plan, bufs, X[idx], Y[idx], seed)
                                if wl is None else
                                backend.gradients(plan, bufs, X[idx], Y[idx], seed, wl))
                        w = share / w_all
                        np.multiply(bufs.grads, w, out=grads)
                        tail[_LOSS] = loss * w
                    else:
                        grads[...] = 0
                        tail[_LOSS] = 0
                    tail[_ROWS] = hi - lo
                    tail[_FAIL] = 0
                except Exception as exc:  # reported to every rank through the flag below
                    own = exc
                    packed[...] = 0
                    tail[_FAIL] = 1
                self._allreduce(packed)
                if tail[_FAIL] != 0:
                    self._raise_failure(own)
                if int(tail[_ROWS]) != rows:  # pragma: no cover - a broken MPI reduction
                    raise DistributedError(f"the ranks trained {int(tail[_ROWS])} rows of a "
                                           f"global batch of {rows}")
                loss = float(tail[_LOSS])
                losses[k] = loss
                bufs.grads[...] = grads
                if not math.isfinite(loss):
                    gnorms[k] = math.sqrt(backend.sum_squares(bufs.grads))
                    return k
                if not w_all > 0:  # weights summing to 0: no update (as Backend.train_step)
                    gnorms[k] = 0.0
                    continue
                if lrs is not None:
                    opt.hyper[Hyper.LR] = lrs[k]
                gnorms[k] = backend.apply_gradients(plan, bufs, opt, clip_norm,
                                                    hi - lo if share > 0 else 0)
                if not math.isfinite(gnorms[k]):
                    return k
        finally:
            opt.hyper[Hyper.LR] = lr
        return n_batches

    def end_steps(self, model) -> None:
        """After an epoch's steps: agree, then average batch norm's running statistics."""
        self.agree()
        if any(L.kind == Layer.BATCHNORM for L in model.plan.layers):
            state = model.bufs.state
            buf = state.astype(np.float64)
            self._allreduce(buf)
            state[...] = buf / self.size

    def end_epoch(self, epoch: int) -> None:
        """After an epoch's validation, checkpoint and callback: every rank got through."""
        self.where = f"the end of epoch {epoch}"
        self.agree()


def _fingerprint(model, optimizer) -> str:
    h = hashlib.sha256()
    for a in (model.bufs.params, model.bufs.state, optimizer.buf1, optimizer.buf2,
              optimizer.step, optimizer.hyper):
        if a is not None:
            h.update(np.ascontiguousarray(a).tobytes())
    h.update(repr(model.rng.bit_generator.state).encode())
    return h.hexdigest()[:16]


def weights_hash(model) -> str:
    """A short hash of the weights and running statistics (equal on every rank)."""
    h = hashlib.sha256(model.bufs.params.tobytes())
    h.update(model.bufs.state.tobytes())
    return h.hexdigest()[:16]


def fit(run, model, X, y, comm, **kwargs):
    """Run the trainer's `run` (trainer._fit) as one rank of a distributed fit."""
    session = Session(comm)
    try:
        return run(model, X, y, _dist=session, **kwargs)
    except BaseException as exc:
        session.fail(exc)
        raise
    finally:
        session.close()


def world(quiet_others: bool = True):
    """MPI.COMM_WORLD for `gradkern train --distributed`; every rank but 0 prints
    nothing to stdout (errors still reach stderr)."""
    comm = _mpi().COMM_WORLD
    if quiet_others and comm.Get_rank() != 0:
        sys.stdout = open(os.devnull, "w")  # for the life of the process
    return comm
