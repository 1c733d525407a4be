"""The training loop: epochs of shuffled minibatches, validation, early stopping.

Each epoch is one backend call (`train_epoch`): the compiled backends run all of its
minibatches without returning to Python. The data set is validated once, before the
first epoch.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import optim as _optim
from ._validate import check_int
from .checkpoint import restore_training, save_training
from .contract import Layer
from .diagnostics import Recorder
from .errors import TrainingDiverged


@dataclass
class EarlyStopping:
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs;
    restore the weights of the best epoch."""

    patience: int = 5
    min_delta: float = 0.0
    monitor: str = "val_loss"
    restore_best: bool = True

    def __post_init__(self) -> None:
        check_int(self.patience, "patience", low=0)
        if self.monitor not in ("val_loss", "loss", "val_accuracy"):
            raise ValueError("monitor must be val_loss, loss or val_accuracy, "
                             f"got {self.monitor!r}")


@dataclass
class History:
    """Per-epoch figures of a fit: `history[name]` is a list with one value per epoch."""

    history: dict[str, list[float]] = field(default_factory=dict)
    epochs_run: int = 0
    best_epoch: int | None = None
    stopped_early: bool = False
    diverged: str | None = None
    diagnostics: list[dict] = field(default_factory=list)

    def record(self, **figures: float) -> None:
        for k, v in figures.items():
            self.history.setdefault(k, []).append(float(v))

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __contains__(self, key: str) -> bool:
        return key in self.history

    def summary(self) -> str:
        last = {k: v[-1] for k, v in self.history.items() if v}
        return ", ".join(f"{k}={v:.4g}" for k, v in last.items())


def _monitor_value(stopper: EarlyStopping, figures: dict[str, float]) -> float:
    v = figures[stopper.monitor]  # present: checked before training
    return -v if stopper.monitor == "val_accuracy" else v


class _Progress:
    """Whether a fit has applied a step yet (set by _fit, read by fit's rollback)."""

    def __init__(self) -> None:
        self.applied = False
        self.optimizer = None
        self.step0 = 0

    def any_applied(self) -> bool:
        # the optimizer's step counter moves with every accepted step on every backend,
        # also if a backend raised partway through an epoch
        moved = self.optimizer is not None and int(self.optimizer.step[0]) != self.step0
        return self.applied or moved


def _full_snapshot(optimizer) -> tuple:
    return optimizer.snapshot(), optimizer.buf1 is None


def _full_restore(optimizer, snap: tuple) -> None:
    state, was_unbound = snap
    if was_unbound:
        optimizer.unbind()
    else:
        optimizer.restore(state)


def fit(model, X, y, epochs: int = 10, batch_size: int = 32,
        optimizer: _optim.Optimizer | None = None, **kwargs) -> History:
    """Train `model` on (X, y); see _fit for the options.

    A fit that raises before any step was applied (bad input, a refused resume file, a
    first step that diverges, an interrupt) leaves the model exactly as it was: weights,
    running statistics and the data-order generator, and the optimizer's state. Once steps
    have been applied, an error (TrainingDiverged with on_divergence='raise', an
    exception from on_epoch, Ctrl-C) leaves the weights, running statistics and optimizer
    state of the last applied step, and the generator as it was after drawing the order
    of the epoch that stopped. Training one model from two threads at once is serialized
    (the model's lock is held for the whole fit).
    """
    with model.lock:
        before = model.state_snapshot()
        opt_before = (_full_snapshot(optimizer) if isinstance(optimizer, _optim.Optimizer)
                      else None)
        tracker = _Progress()
        try:
            return _fit(model, X, y, epochs=epochs, batch_size=batch_size,
                        optimizer=optimizer, _progress=tracker, **kwargs)
        except BaseException:
            if not tracker.any_applied():
                model.restore_snapshot(before)
                if opt_before is not None:
                    _full_restore(optimizer, opt_before)
            raise


def _fit(model, X, y, epochs: int = 10, batch_size: int = 32,
         optimizer: _optim.Optimizer | None = None, shuffle: bool = True,
         validation_data=None, validation_split: float | None = None,
         early_stopping: EarlyStopping | int | None = None,
         progress: bool = True, clip_norm: float | None = None,
         on_divergence: str = "raise", on_epoch=None, diagnostics: bool | int = False,
         checkpoint=None, checkpoint_every: int = 1, resume=None,
         _progress: _Progress | None = None) -> History:
    """Train `model` on (X, y); see Sequential.fit.

    epochs: the total number of epochs (a resumed fit runs the ones still missing).
    validation_split: a fraction f in (0, 1) of the rows held out from training and used
    as validation data (instead of validation_data, not with it); see hold_out.
    early_stopping: an EarlyStopping, or an int patience on val_loss (loss without
    validation data). clip_norm: clip the global gradient norm per step.
    on_divergence: 'raise' stops with TrainingDiverged before a non-finite step is
    applied; 'restore' puts back the weights of the last good epoch and stops with a warning.
    on_epoch: called as on_epoch(epoch, figures) after each epoch (epoch counts from 1).
    diagnostics: True records per-layer figures every epoch, an int N every N steps
    (History.diagnostics; see gradkern.diagnostics).
    checkpoint, checkpoint_every: save weights, optimizer state, the data-order generator,
    epoch and step to this path every N epochs (atomically). resume: continue from such a
    file; training 2N epochs straight and N + resume + N give identical weights.
    batch normalization: batch_size=1 is refused (a batch of one row has no batch
    statistics; torch raises in training mode), and when N % batch_size == 1 the one row
    that would form the last minibatch is left out of that epoch, as DataLoader's
    drop_last would (with shuffle, a different row each epoch; without it, always the
    last one). History records the mean loss over the rows trained.
    """
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every")
    if on_divergence not in ("raise", "restore"):
        raise ValueError(f"on_divergence must be 'raise' or 'restore', got {on_divergence!r}")
    if clip_norm is not None and not (isinstance(clip_norm, (int, float)) and clip_norm > 0):
        raise ValueError(f"clip_norm must be a positive number, got {clip_norm!r}")
    every = _diagnostics_interval(diagnostics)
    if optimizer is None:
        optimizer = _optim.Adam()
    if not isinstance(optimizer, _optim.Optimizer):
        raise TypeError(f"optimizer must be a gk.optim optimizer, got {optimizer!r}")
    Xc, yc = model.check_data(X, y)
    val = None
    if validation_split is not None:
        if validation_data is not None:
            raise ValueError("pass validation_data or validation_split, not both")
        train_rows, val_rows = hold_out(model, yc, validation_split)
        val = Xc[val_rows], yc[val_rows]
        Xc, yc = Xc[train_rows], yc[train_rows]
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        val = model.check_data(*validation_data, what="_val")
    stopper = None
    if early_stopping is not None:
        if isinstance(early_stopping, EarlyStopping):
            stopper = early_stopping
        else:
            stopper = EarlyStopping(patience=check_int(early_stopping, "early_stopping", low=0),
                                    monitor="val_loss" if val is not None else "loss")
        if stopper.monitor.startswith("val_") and val is None:
            raise ValueError(f"early stopping monitors {stopper.monitor!r}: pass validation_data")
        if stopper.monitor == "val_accuracy" and not model.is_classifier:
            raise ValueError("early stopping on val_accuracy needs a classification loss")

    n = Xc.shape[0]
    bs = min(batch_size, n)
    has_bn = any(L.kind == Layer.BATCHNORM for L in model.plan.layers)
    if has_bn and n < 2:
        raise ValueError("batch normalization needs at least 2 training rows")
    if has_bn and bs == 1:
        raise ValueError("batch_size=1 with batch normalization: a batch of one row has no "
                         "batch statistics (its normalized output is 0, so the layers below "
                         "never learn); use batch_size >= 2")
    if _progress is None:
        _progress = _Progress()
    history = History()
    start_epoch = 0
    if resume is not None:
        start_epoch, past = restore_training(model, optimizer, resume)
        history.history = {k: list(v) for k, v in past.items()}
        history.epochs_run = start_epoch
    optimizer.bind(model.plan.n_params, model.dtype)
    _progress.optimizer, _progress.step0 = optimizer, int(optimizer.step[0])
    model.bufs.ensure_capacity(bs)
    best = (math.inf, None)  # (monitored value, snapshot)
    since_best = 0
    last_good = model.state_snapshot(), optimizer.snapshot()
    recorder = None
    if every is not None:
        recorder = Recorder(model)
        probe = Xc[:bs], yc[:bs]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start_epoch, desc="fit", unit="epoch", leave=False)
    try:
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            perm = model.rng.permutation(n) if shuffle else np.arange(n)
            if has_bn and n % bs == 1:
                perm = perm[:-1]  # a 1-row batch has no batch statistics (torch refuses it)
            perm = np.ascontiguousarray(perm, dtype=np.int64)
            n_batches = (perm.shape[0] + bs - 1) // bs
            seeds = model.rng.integers(0, 2**64, size=n_batches, dtype=np.uint64)
            losses = np.zeros(n_batches)
            gnorms = np.zeros(n_batches)
            # one backend call per epoch, or per `every` steps when diagnostics ask for it
            chunk = n_batches if every in (None, 0) else every
            done = 0
            while done < n_batches:
                k = min(chunk, n_batches - done)
                with np.errstate(over="ignore", invalid="ignore"):  # reported below
                    ok = model.backend.train_epoch(
                        model.plan, model.bufs, Xc, yc, perm[done * bs : (done + k) * bs], bs,
                        optimizer, seeds[done : done + k], float(clip_norm or 0.0),
                        losses[done : done + k], gnorms[done : done + k])
                done += ok
                if ok > 0:
                    _progress.applied = True
                if ok < k:
                    break
                if recorder is not None and (every or done == n_batches):
                    history.diagnostics.append(
                        recorder.record(model, *probe, epoch + 1, int(optimizer.step[0])))
            if done < n_batches:
                msg = (f"epoch {epoch + 1}, step {done + 1}: loss {losses[done]}, gradient norm "
                       f"{gnorms[done]}; the step was not applied")
                history.diverged = msg
                if on_divergence == "raise":
                    raise TrainingDiverged(msg + " (lower the learning rate or set clip_norm)")
                model.restore_snapshot(last_good[0])
                optimizer.restore(last_good[1])
                warnings.warn(f"training diverged at {msg}; restored the weights of the last "
                              "good epoch", RuntimeWarning, stacklevel=2)
                break
            sizes = np.minimum(bs, perm.shape[0] - np.arange(n_batches) * bs)
            figures = {"loss": float(np.dot(losses, sizes) / sizes.sum())}
            if val is not None:
                ev = model.evaluate_checked(*val)
                figures["val_loss"] = ev["loss"]
                for key in ("accuracy", "r2"):
                    if key in ev:
                        figures[f"val_{key}"] = ev[key]
            figures["seconds"] = time.perf_counter() - t0
            history.record(**figures)
            history.epochs_run = epoch + 1
            last_good = model.state_snapshot(), optimizer.snapshot()
            if checkpoint is not None and ((epoch + 1) % checkpoint_every == 0
                                           or epoch + 1 == epochs):
                save_training(model, optimizer, checkpoint, epoch + 1, history.history)
            if on_epoch is not None:
                on_epoch(epoch + 1, figures)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in figures.items() if k != "seconds"})
            if stopper is not None:
                value = _monitor_value(stopper, figures)
                if value < best[0] - stopper.min_delta:
                    best = (value, last_good[0] if stopper.restore_best else None)
                    history.best_epoch = epoch + 1
                    since_best = 0
                else:
                    since_best += 1
                    if since_best > stopper.patience:
                        history.stopped_early = True
                        break
    finally:
        if bar is not None:
            bar.close()
    if stopper is not None and stopper.restore_best and best[1] is not None:
        model.restore_snapshot(best[1])
    return history


def hold_out(model, y: np.ndarray, fraction) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows) of fit's validation_split: sorted row indices.

    Classification (cross_entropy labels, one binary_cross_entropy output) is stratified:
    each class gives round(f * its rows) validation rows, and a fraction that would leave a
    class without training rows or without validation rows is refused (ValueError naming
    the class). Regression and multi-label targets hold out round(f * N) rows at random.
    The rows are drawn from the model's generator (`model.rng`, seeded by the model's
    `seed`) when fit starts, before a resume restores it: the same model, seed and data
    hold out the same rows, and a resumed fit the rows of the run it continues. Drawing
    advances the generator; a fit that applies no step puts it back. Nothing is drawn
    before every check has passed.
    """
    if (isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating))
            or not 0 < fraction < 1):
        raise ValueError(f"validation_split must be a fraction in (0, 1), got {fraction!r}")
    f = float(fraction)
    n = y.shape[0]
    labels = None
    if model.loss == "cross_entropy":
        labels = y
    elif model.loss == "binary_cross_entropy" and model.n_outputs == 1:
        labels = y[:, 0] if y.ndim == 2 else y
    if labels is None:
        k = math.floor(n * f + 0.5)
        if not 0 < k < n:
            raise ValueError(f"validation_split={f} of {n} rows leaves "
                             f"{'no validation' if k == 0 else 'no training'} rows")
        perm = model.rng.permutation(n)
        return np.sort(perm[k:]), np.sort(perm[:k])
    classes, counts = np.unique(labels, return_counts=True)
    takes = [math.floor(c * f + 0.5) for c in counts]
    for c, count, k in zip(classes, counts, takes, strict=True):
        if not 0 < k < count:
            raise ValueError(
                f"validation_split={f} leaves class {c.item()!r} ({count} rows) with no "
                f"{'validation' if k == 0 else 'training'} rows (the split is stratified); "
                "use another fraction or pass validation_data")
    val = np.concatenate([model.rng.permutation(np.flatnonzero(labels == c))[:k]
                          for c, k in zip(classes, takes, strict=True)])
    mask = np.zeros(n, dtype=bool)
    mask[val] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _diagnostics_interval(diagnostics) -> int | None:
    """None: off; 0: once per epoch; N: every N steps."""
    if diagnostics is False or diagnostics is None:
        return None
    if diagnostics is True:
        return 0
    return check_int(diagnostics, "diagnostics")
