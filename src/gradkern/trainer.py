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
from . import stream as _stream
from ._validate import check_int
from .callbacks import EarlyStopping, check_callbacks, has_state
from .checkpoint import restore_training, save_training
from .contract import Layer
from .diagnostics import Recorder
from .errors import TrainingDiverged
from .lr_scheduler import LRScheduler


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
        sched = kwargs.get("scheduler")
        sched_before = sched.state_dict() if isinstance(sched, LRScheduler) else None
        if optimizer is None and sched_before is not None:
            optimizer = sched.optimizer  # fit trains with the scheduler's optimizer
        opt_before = (_full_snapshot(optimizer) if isinstance(optimizer, _optim.Optimizer)
                      else None)
        tracker = _Progress()
        try:
            if kwargs.get("comm") is not None:  # one rank of a data-parallel fit over MPI
                from . import distributed

                return distributed.fit(_fit, model, X, y, epochs=epochs,
                                       batch_size=batch_size, optimizer=optimizer,
                                       _progress=tracker, **kwargs)
            return _fit(model, X, y, epochs=epochs, batch_size=batch_size,
                        optimizer=optimizer, _progress=tracker, **kwargs)
        except BaseException:
            if not tracker.any_applied():
                model.restore_snapshot(before)
                if opt_before is not None:
                    _full_restore(optimizer, opt_before)
                if sched_before is not None:
                    sched.load_state_dict(sched_before)
            raise


def _fit(model, X, y, epochs: int = 10, batch_size: int = 32,
         optimizer: _optim.Optimizer | None = None, shuffle: bool = True,
         validation_data=None, validation_split: float | None = None,
         early_stopping: EarlyStopping | int | None = None,
         progress: bool = True, clip_norm: float | None = None,
         on_divergence: str = "raise", on_epoch=None, diagnostics: bool | int = False,
         checkpoint=None, checkpoint_every: int = 1, resume=None, comm=None,
         scheduler: LRScheduler | None = None, callbacks=None, sample_weight=None,
         class_weight=None, _progress: _Progress | None = None, _dist=None) -> History:
    """Train `model` on (X, y); see Sequential.fit.

    epochs: the total number of epochs (a resumed fit runs the ones still missing).
    validation_split: a fraction f in (0, 1) of the rows held out from training and used
    as validation data (instead of validation_data, not with it); see hold_out.
    early_stopping: an EarlyStopping, or an int patience on val_loss (loss without
    validation data). clip_norm: clip the global gradient norm per step.
    on_divergence: 'raise' stops with TrainingDiverged before a non-finite step is
    applied; 'restore' puts back the weights of the last good epoch and stops with a warning.
    on_epoch: called as on_epoch(epoch, figures) after each epoch (epoch counts from 1).
    scheduler: a gk.optim.lr_scheduler scheduler made on `optimizer` (optimizer may then be
    omitted); per-step schedules reach the epoch drivers as one array of rates per epoch,
    and History records each epoch's first rate as 'lr'.
    sample_weight: (N,) finite weights >= 0, one per row; class_weight: 'balanced' (as
    scikit-learn's compute_class_weight: n / (n_classes · count)) or a dict label -> weight,
    classification losses only (cross_entropy; binary_cross_entropy with one output); the
    two multiply. Each minibatch's loss is then the weighted mean Σ w·l / Σ w, computed in
    the backend's loss kernel (a minibatch whose weights are all 0 applies no update), and
    History's loss is weighted the same way. See sample_weights.
    callbacks: objects of the gradkern.callbacks protocol (on_train_begin, on_epoch_end ->
    True stops, on_train_end), run in order after each epoch; early_stopping runs last.
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
    if scheduler is not None and not isinstance(scheduler, LRScheduler):
        raise TypeError(f"scheduler must be a gk.optim.lr_scheduler scheduler, got {scheduler!r}")
    if optimizer is None:
        optimizer = _optim.Adam() if scheduler is None else scheduler.optimizer
    if scheduler is not None and scheduler.optimizer is not optimizer:
        raise ValueError("the scheduler was made on another optimizer than the one fit uses")
    cbs = check_callbacks(callbacks)
    if not isinstance(optimizer, _optim.Optimizer):
        raise TypeError(f"optimizer must be a gk.optim optimizer, got {optimizer!r}")
    # memory-mapped data: a Stream each; a distributed fit's ranks check a share each
    share = (0, 1) if _dist is None else (_dist.rank, _dist.size)
    with _stream.check_share(*share):
        Xc, yc = model.check_data(X, y, stream=True)
    sw = sample_weights(model, yc, sample_weight, class_weight)
    if sw is not None and _dist is not None:
        raise ValueError("sample_weight / class_weight are not supported with comm= yet")
    val = None
    if validation_split is not None:
        if validation_data is not None:
            raise ValueError("pass validation_data or validation_split, not both")
        train_rows, val_rows = hold_out(model, yc, validation_split)
        val = Xc[val_rows], yc[val_rows]
        Xc, yc = Xc[train_rows], yc[train_rows]
        if sw is not None:
            sw = sw[train_rows]
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        with _stream.check_share(*share):
            val = model.check_data(*validation_data, what="_val", stream=True)
    stopper = None
    if early_stopping is not None:
        if isinstance(early_stopping, EarlyStopping):
            stopper = early_stopping
        else:
            stopper = EarlyStopping(patience=check_int(early_stopping, "early_stopping", low=0),
                                    monitor="val_loss" if val is not None else "loss")
        if stopper not in cbs:
            cbs.append(stopper)
    for cb in cbs:
        if hasattr(cb, "check_model"):
            cb.check_model(model, val is not None)

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
    extras = _TrainState(model, scheduler, cbs)
    if resume is not None:
        for cb in cbs:  # reset before the saved positions are loaded into them
            if hasattr(cb, "on_train_begin"):
                cb.on_train_begin(model)
        start_epoch, past = restore_training(model, optimizer, resume, extra=extras,
                                             world=None if _dist is None else (_dist.size, bs))
        history.history = {k: list(v) for k, v in past.items()}
        history.epochs_run = start_epoch
    optimizer.bind(model.plan.n_params, model.dtype)
    _progress.optimizer, _progress.step0 = optimizer, int(optimizer.step[0])
    model.bufs.ensure_capacity(bs)
    rank_bs, lead = bs, _dist is None or _dist.is_root  # comm: see gradkern.distributed
    if _dist is not None:  # every rank ready and alike; steps run on global batches
        bs = _dist.start(model, optimizer, Xc, yc, bs, has_bn, start_epoch, epochs)
    if resume is None:
        for cb in cbs:
            if hasattr(cb, "on_train_begin"):
                cb.on_train_begin(model)
    history.stopped_early = extras.stopped
    per_step = scheduler is not None and scheduler.interval == "step"
    if per_step:  # the whole schedule must fit before the first step is taken
        drop = 1 if has_bn and n % bs % rank_bs == 1 else 0
        need = max(0, epochs - start_epoch) * ((n - drop + bs - 1) // bs)
        if need > scheduler.steps_left():
            raise ValueError(f"{type(scheduler).__name__} has {scheduler.steps_left()} steps "
                             f"left; this fit takes {need} ({epochs - start_epoch} epochs of "
                             f"{(n - drop + bs - 1) // bs} minibatches)")
    sched_state = (lambda: None) if scheduler is None else scheduler.state_dict
    last_good = model.state_snapshot(), optimizer.snapshot(), sched_state()
    # memory-mapped data are trained on in blocks of steps (each about stream.CHUNK_BYTES of
    # rows, gathered and converted), with the same steps as one call over the whole epoch
    streamed = _stream.is_stream(Xc) or _stream.is_stream(yc)
    if streamed:
        block = max(1, _stream.block_rows(np.asarray(getattr(Xc, "src", Xc)),
                                          model.dtype.itemsize) // rank_bs)  # rows per rank
        ident = np.arange(block * bs, dtype=np.int64)
    recorder = None
    if every is not None:
        recorder = Recorder(model)
        probe = Xc[:rank_bs], yc[:rank_bs]

    bar = None
    if progress and lead:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start_epoch, desc="fit", unit="epoch", leave=False)
    try:
        for epoch in range(start_epoch if not extras.stopped else epochs, epochs):
            t0 = time.perf_counter()
            perm = model.rng.permutation(n) if shuffle else np.arange(n)
            if has_bn and n % bs % rank_bs == 1:
                perm = perm[:-1]  # a 1-row batch has no batch statistics (torch refuses it)
            perm = np.ascontiguousarray(perm, dtype=np.int64)
            n_batches = (perm.shape[0] + bs - 1) // bs
            seeds = model.rng.integers(0, 2**64, size=n_batches, dtype=np.uint64)
            lr0, lrs = optimizer.lr, None
            if per_step:  # this epoch's rates, one array for the fused driver
                sched_epoch = scheduler.state_dict()
                lrs = scheduler.rates(n_batches)
            losses = np.zeros(n_batches)
            gnorms = np.zeros(n_batches)
            # one backend call per epoch, or per `every` steps when diagnostics ask for it
            chunk = n_batches if every in (None, 0) else every
            done = 0
            while done < n_batches:
                k = min(chunk, n_batches - done)
                Xe, ye, pe, we = Xc, yc, perm[done * bs : (done + k) * bs], sw
                if streamed:  # a block of steps' rows gathered from the file, converted
                    k = min(k, block)
                    rows = perm[done * bs : (done + k) * bs]
                    if _dist is None:
                        Xe, ye = _stream.take(Xc, rows), _stream.take(yc, rows)
                        pe = ident[: len(rows)]
                    else:  # a rank reads only its own slice of each global batch
                        Xe, ye, pe = _dist.gather(Xc, yc, rows, bs)
                    we = None if sw is None else sw[rows]
                with np.errstate(over="ignore", invalid="ignore"):  # reported below
                    ok = (model.backend if _dist is None else _dist).train_epoch(
                        model.plan, model.bufs, Xe, ye, pe, bs,
                        optimizer, seeds[done : done + k], float(clip_norm or 0.0),
                        losses[done : done + k], gnorms[done : done + k],
                        **({} if lrs is None else {"lrs": lrs[done : done + k]}),
                        **({} if we is None else {"weights": we}))
                done += ok
                if ok > 0:
                    _progress.applied = True
                if ok < k:
                    break
                if recorder is not None and (done == n_batches or (every and done % every == 0)):
                    history.diagnostics.append(
                        recorder.record(model, *probe, epoch + 1, int(optimizer.step[0])))
            if _dist is not None:
                _dist.end_steps(model)
            if done < n_batches:
                msg = (f"epoch {epoch + 1}, step {done + 1}: loss {losses[done]}, gradient norm "
                       f"{gnorms[done]}; the step was not applied")
                history.diverged = msg
                if per_step:  # the schedule stands where the steps stopped
                    scheduler.load_state_dict(sched_epoch)
                    scheduler.rates(done)
                if on_divergence == "raise":
                    raise TrainingDiverged(msg + " (lower the learning rate or set clip_norm)")
                model.restore_snapshot(last_good[0])
                optimizer.restore(last_good[1])
                if scheduler is not None:
                    scheduler.load_state_dict(last_good[2])
                if lead:
                    warnings.warn(f"training diverged at {msg}; restored the weights of the "
                                  "last good epoch", RuntimeWarning, stacklevel=2)
                break
            sizes = np.minimum(bs, perm.shape[0] - np.arange(n_batches) * bs)
            if sw is not None:  # each batch's weighted mean, weighted by its weight sum
                sizes = np.add.reduceat(sw[perm].astype(np.float64), np.arange(n_batches) * bs)
            total = sizes.sum()
            figures = {"loss": float(np.dot(losses, sizes) / total) if total > 0 else 0.0}
            if val is not None:
                ev = model.evaluate_checked(*val)
                figures["val_loss"] = ev["loss"]
                for key in ("accuracy", "r2"):
                    if key in ev:
                        figures[f"val_{key}"] = ev[key]
            if scheduler is not None:
                figures["lr"] = lr0 if lrs is None else float(lrs[0])
            figures["seconds"] = time.perf_counter() - t0
            history.record(**figures)
            history.epochs_run = epoch + 1
            if scheduler is not None and not per_step:
                scheduler.epoch_end(figures)
            stop = False
            for cb in cbs:
                if hasattr(cb, "on_epoch_end") and cb.on_epoch_end(epoch + 1, dict(figures)):
                    stop = True
            history.stopped_early = extras.stopped = stop
            last_good = model.state_snapshot(), optimizer.snapshot(), sched_state()
            if checkpoint is not None and lead and ((epoch + 1) % checkpoint_every == 0
                                                    or epoch + 1 == epochs or stop):
                save_training(model, optimizer, checkpoint, epoch + 1, history.history,
                              extra=extras,
                              world=None if _dist is None else (_dist.size, rank_bs))
            if on_epoch is not None:
                on_epoch(epoch + 1, figures)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in figures.items() if k != "seconds"})
            if _dist is not None:
                _dist.end_epoch(epoch + 1)
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
    for cb in cbs:
        if hasattr(cb, "on_train_end"):
            cb.on_train_end(history)
    return history


def sample_weights(model, y, sample_weight=None, class_weight=None):
    """The per-row training weights (float64 (N,)) of sample_weight times class_weight's
    weight of each row's class, or None when both are None. y as check_data returns it.
    Negative, NaN, infinite or wrong-length weights are a ValueError; class_weight needs a
    classification loss with one label per row."""
    if sample_weight is None and class_weight is None:
        return None
    n = y.shape[0]
    w = np.ones(n)
    if sample_weight is not None:
        a = np.asarray(sample_weight)
        if a.dtype.kind not in "fiu" or a.dtype == np.float16:
            raise TypeError(f"sample_weight has dtype {a.dtype}; expected numbers")
        a = a.astype(np.float64)
        if a.ndim == 0:  # scikit-learn's convention: one weight for every row
            a = np.full(n, float(a))
        if a.shape != (n,):
            raise ValueError(f"sample_weight has shape {a.shape}; expected ({n},), one per row")
        if not np.isfinite(a).all():
            raise ValueError("sample_weight holds NaN or inf")
        if (a < 0).any():
            raise ValueError("sample_weight holds negative weights")
        w = a.copy()
    if class_weight is not None:
        if model.loss == "cross_entropy":
            labels, k = np.asarray(y[:], dtype=np.int64), model.n_outputs
        elif model.loss == "binary_cross_entropy" and model.n_outputs == 1:
            labels, k = np.asarray(y[:], dtype=np.float64)[:, 0].astype(np.int64), 2
        else:
            raise ValueError(f"class_weight needs a classification loss with one label per "
                             f"row (cross_entropy, or binary_cross_entropy with one output), "
                             f"not {model.loss!r} with {model.n_outputs} outputs")
        per_class = np.ones(k)
        if isinstance(class_weight, str):
            if class_weight != "balanced":
                raise ValueError(f"class_weight must be 'balanced' or a dict, got "
                                 f"{class_weight!r}")
            counts = np.bincount(labels, minlength=k)
            present = counts > 0  # compute_class_weight: n / (n_classes present · count)
            per_class[present] = n / (present.sum() * counts[present])
        elif isinstance(class_weight, dict):
            for label, value in class_weight.items():
                if isinstance(label, bool) or not isinstance(label, (int, np.integer)) \
                        or not 0 <= int(label) < k:
                    raise ValueError(f"class_weight key {label!r} is not a class label in "
                                     f"[0, {k})")
                v = float(value)
                if not (math.isfinite(v) and v >= 0):
                    raise ValueError(f"class_weight[{label!r}] = {value!r}: weights must be "
                                     "finite and >= 0")
                per_class[int(label)] = v
        else:
            raise TypeError(f"class_weight must be 'balanced' or a dict, got "
                            f"{type(class_weight).__name__}")
        w *= per_class[labels]
    return w


class _TrainState:
    """The scheduler's and the callbacks' positions, saved in training checkpoints
    (checkpoint.save_training / restore_training call these): a JSON-able dict and arrays
    named 'callbacks.<i>.<name>' (i counts the callbacks that have a state)."""

    def __init__(self, model, scheduler, callbacks) -> None:
        self.model, self.scheduler = model, scheduler
        self.stateful = [cb for cb in callbacks if has_state(cb)]
        self.stopped = False

    def save(self) -> tuple[dict, dict]:
        meta = {"scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "callbacks": [cb.state_dict() for cb in self.stateful],
                "stopped": self.stopped}
        arrays = {f"callbacks.{i}.{k}": v for i, cb in enumerate(self.stateful)
                  for k, v in cb.state_arrays().items() if v.size}
        return meta, arrays

    def _saved(self, meta) -> tuple:
        """(scheduler state, callback states, stopped) of a saved meta, or ValueError."""
        if meta is None:  # a file written before schedulers and callbacks had a state
            meta = {"scheduler": None, "callbacks": [], "stopped": False}
        if not isinstance(meta, dict) or set(meta) != {"scheduler", "callbacks", "stopped"}:
            raise ValueError(f"the scheduler and callback state is malformed: {str(meta)[:100]}")
        sched, cbs, stopped = meta["scheduler"], meta["callbacks"], meta["stopped"]
        if (sched is None) != (self.scheduler is None):
            raise ValueError("it was saved with a scheduler; resume with the same scheduler="
                             if self.scheduler is None else "it holds no scheduler state, and "
                             "a schedule cannot be resumed from its start mid-training")
        if not isinstance(cbs, list) or not isinstance(stopped, bool):
            raise ValueError("the callback state is malformed")
        if cbs and len(cbs) != len(self.stateful):
            raise ValueError(f"it holds the state of {len(cbs)} callbacks; this fit has "
                             f"{len(self.stateful)} with a state")
        return sched, cbs, stopped

    def expected(self, meta) -> dict:
        _, cbs, _ = self._saved(meta)
        out = {}
        for i, (cb, st) in enumerate(zip(self.stateful, cbs, strict=False)):
            if isinstance(st, dict):
                for k, (shape, dtype) in cb.expected_arrays(st, self.model).items():
                    if int(np.prod(shape)):
                        out[f"callbacks.{i}.{k}"] = (tuple(shape), np.dtype(dtype))
        return out

    def _arrays(self, i: int, cb, st, tensors: dict) -> dict:
        out = {}
        for k, (shape, dtype) in cb.expected_arrays(st, self.model).items():
            out[k] = tensors.get(f"callbacks.{i}.{k}", np.zeros(shape, dtype))
        return out

    def check(self, meta, tensors: dict) -> None:
        sched, cbs, _ = self._saved(meta)
        if sched is not None:
            self.scheduler.check_state_dict(sched)
        for i, (cb, st) in enumerate(zip(self.stateful, cbs, strict=False)):
            cb.check_state(st, self._arrays(i, cb, st, tensors), self.model)

    def load(self, meta, tensors: dict) -> None:
        sched, cbs, stopped = self._saved(meta)
        if sched is not None:
            self.scheduler.load_state_dict(sched)
        for i, (cb, st) in enumerate(zip(self.stateful, cbs, strict=False)):
            cb.load_state(st, self._arrays(i, cb, st, tensors), self.model)
        self.stopped = stopped


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
