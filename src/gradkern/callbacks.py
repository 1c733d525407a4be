"""Callbacks for fit: `fit(..., callbacks=[...])`.

The protocol (every method optional; subclass `Callback` for the defaults):

- `on_train_begin(model)`: before the first epoch of a fit (of a resumed one too).
- `on_epoch_end(epoch, logs) -> bool | None`: after each epoch (epoch counts from 1; logs
  holds that epoch's figures: loss, val_loss, val_accuracy, lr, seconds ...). True stops
  training after this epoch.
- `on_train_end(history)`: after the last epoch, also when training stopped early.

A callback with state (`state_dict()` -> JSON-able dict, `state_arrays()` -> arrays,
`load_state(state, arrays)`, `check_state(state, arrays)`) has it saved in training
checkpoints, so that a resumed fit continues exactly where the saved one was: 2N epochs
straight and N + resume + N give the same result.

Built in: `EarlyStopping`, `ModelCheckpoint`, `CSVLogger`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._validate import check_int

MONITORS = ("val_loss", "loss", "val_accuracy")


class Callback:
    """The base of the protocol: every hook does nothing."""

    def on_train_begin(self, model) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict) -> bool | None:
        return None

    def on_train_end(self, history) -> None:
        pass


def _check_monitor(monitor) -> str:
    if monitor not in MONITORS:
        raise ValueError(f"monitor must be val_loss, loss or val_accuracy, got {monitor!r}")
    return monitor


def _check_float_state(where: str, v, inf_ok: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{where} is {v!r}, not a number")
    f = float(v)
    if math.isnan(f) or (math.isinf(f) and not inf_ok):
        raise ValueError(f"{where} is {v!r}, not a finite number")
    return f


def _check_count(where: str, v, none_ok: bool = False) -> int | None:
    if v is None and none_ok:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{where} is {v!r}, not a non-negative integer")
    return v


@dataclass
class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by more than `min_delta` for `patience`
    epochs; restore the weights (and running statistics, and the data-order generator) of
    the best epoch at the end. Its position — the best value, the epochs since, the best
    weights — is saved in training checkpoints."""

    patience: int = 5
    min_delta: float = 0.0
    monitor: str = "val_loss"
    restore_best: bool = True
    best: float = field(default=math.inf, init=False, repr=False)
    wait: int = field(default=0, init=False, repr=False)
    best_epoch: int | None = field(default=None, init=False, repr=False)
    stopped_epoch: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_int(self.patience, "patience", low=0)
        _check_monitor(self.monitor)
        v = self.min_delta
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                math.isfinite(v) and v >= 0):
            raise ValueError(f"min_delta must be a finite number >= 0, got {v!r}")
        self._model = None
        self._best_snapshot = None

    def check_model(self, model, has_validation: bool) -> None:
        """What fit refuses before training: a validation figure without validation data,
        accuracy without a classifier."""
        if self.monitor.startswith("val_") and not has_validation:
            raise ValueError(f"early stopping monitors {self.monitor!r}: pass validation_data")
        if self.monitor == "val_accuracy" and not model.is_classifier:
            raise ValueError("early stopping on val_accuracy needs a classification loss")

    def on_train_begin(self, model) -> None:
        self._model = model
        self.best, self.wait, self.best_epoch, self.stopped_epoch = math.inf, 0, None, None
        self._best_snapshot = None

    def _value(self, logs: dict) -> float:
        v = logs[self.monitor]
        return -v if self.monitor == "val_accuracy" else v

    def on_epoch_end(self, epoch: int, logs: dict) -> bool:
        value = self._value(logs)
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self._best_snapshot = self._model.state_snapshot()
            return False
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, history) -> None:
        history.best_epoch = self.best_epoch
        if self.restore_best and self._best_snapshot is not None:
            self._model.restore_snapshot(self._best_snapshot)

    # -------------------------------------------------------- state in checkpoints
    def state_dict(self) -> dict:
        rng = None if self._best_snapshot is None else self._best_snapshot[2]
        return {"name": "EarlyStopping", "best": self.best, "wait": self.wait,
                "best_epoch": self.best_epoch, "stopped_epoch": self.stopped_epoch,
                "best_rng": rng}

    def state_arrays(self) -> dict[str, np.ndarray]:
        if self._best_snapshot is None:
            return {}
        params, state, _ = self._best_snapshot
        return {"params": params, "state": state}

    def expected_arrays(self, state: dict, model) -> dict:
        """name -> (shape, dtype) of the arrays a saved `state` comes with."""
        if state.get("best_rng") is None:
            return {}
        return {"params": (model.bufs.params.shape, model.bufs.params.dtype),
                "state": (model.bufs.state.shape, model.bufs.state.dtype)}

    def check_state(self, state, arrays: dict, model) -> None:
        if not isinstance(state, dict) or state.get("name") != "EarlyStopping":
            raise ValueError(f"the state is not an EarlyStopping's: {str(state)[:80]}")
        keys = {"name", "best", "wait", "best_epoch", "stopped_epoch", "best_rng"}
        if set(state) != keys:
            raise ValueError(f"EarlyStopping state is malformed: keys {sorted(state)}")
        _check_float_state("EarlyStopping state 'best'", state["best"], inf_ok=True)
        _check_count("EarlyStopping state 'wait'", state["wait"])
        _check_count("EarlyStopping state 'best_epoch'", state["best_epoch"], none_ok=True)
        _check_count("EarlyStopping state 'stopped_epoch'", state["stopped_epoch"],
                     none_ok=True)
        if state["best_rng"] is not None:
            try:
                np.random.default_rng().bit_generator.state = state["best_rng"]
            except (TypeError, ValueError, KeyError) as exc:
                raise ValueError(f"EarlyStopping state 'best_rng' is malformed: {exc}") from None
            for name, a in arrays.items():
                if not np.isfinite(a).all():
                    raise ValueError(f"EarlyStopping's best {name} hold NaN or inf")

    def load_state(self, state: dict, arrays: dict, model) -> None:
        self.check_state(state, arrays, model)
        self._model = model
        self.best, self.wait = float(state["best"]), state["wait"]
        self.best_epoch, self.stopped_epoch = state["best_epoch"], state["stopped_epoch"]
        if state["best_rng"] is None:
            self._best_snapshot = None
        else:
            self._best_snapshot = (np.array(arrays["params"]), np.array(arrays["state"]),
                                   state["best_rng"])

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["_model"] = None
        return d


class ModelCheckpoint(Callback):
    """Save the model (`model.save`, weights and architecture) to `path` after an epoch:
    with save_best_only, only when `monitor` improved on the best seen (mode 'min' for
    losses, 'max' for accuracy; 'auto' picks by the name). `path` may hold `{epoch}`."""

    def __init__(self, path, monitor: str = "val_loss", save_best_only: bool = True,
                 mode: str = "auto"):
        self.path = str(path)
        self.monitor = _check_monitor(monitor)
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.mode = ("max" if monitor == "val_accuracy" else "min") if mode == "auto" else mode
        self.save_best_only = bool(save_best_only)
        try:
            self.path.format(epoch=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"path {self.path!r} is not a valid format string: {exc}") from None
        self.best = math.inf if self.mode == "min" else -math.inf
        self._model = None
        self.saved: list[str] = []

    def check_model(self, model, has_validation: bool) -> None:
        if self.monitor.startswith("val_") and not has_validation:
            raise ValueError(f"ModelCheckpoint monitors {self.monitor!r}: pass validation_data")

    def on_train_begin(self, model) -> None:
        self._model = model
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        value = logs[self.monitor]
        better = value < self.best if self.mode == "min" else value > self.best
        if better:
            self.best = value
        if better or not self.save_best_only:
            path = self.path.format(epoch=epoch)
            self._model.save(path)
            self.saved.append(path)

    def state_dict(self) -> dict:
        return {"name": "ModelCheckpoint", "best": self.best}

    def state_arrays(self) -> dict:
        return {}

    def expected_arrays(self, state: dict, model) -> dict:
        return {}

    def check_state(self, state, arrays: dict, model) -> None:
        if not isinstance(state, dict) or set(state) != {"name", "best"} or (
                state["name"] != "ModelCheckpoint"):
            raise ValueError(f"the state is not a ModelCheckpoint's: {str(state)[:80]}")
        _check_float_state("ModelCheckpoint state 'best'", state["best"], inf_ok=True)

    def load_state(self, state: dict, arrays: dict, model) -> None:
        self.check_state(state, arrays, model)
        self._model = model
        self.best = float(state["best"])

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["_model"] = None
        return d


class CSVLogger(Callback):
    """One CSV row per epoch: `epoch` and every figure of the epoch (loss, val_loss, lr,
    seconds ...). A new fit overwrites the file (append=True adds to it); a resumed fit
    appends to it."""

    def __init__(self, path, separator: str = ",", append: bool = False):
        self.path = Path(path)
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"separator must be one character, got {separator!r}")
        self.separator = separator
        self.append = bool(append)
        self._mode = "a" if self.append else "w"
        self._columns: list[str] | None = None

    def on_train_begin(self, model) -> None:
        self._mode = "a" if self.append else "w"
        self._columns = None

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        row = {"epoch": epoch, **logs}
        if self._columns is None:
            self._columns = list(row)
            write_header = self._mode == "w" or not self.path.exists() or (
                self.path.stat().st_size == 0)
            with open(self.path, self._mode, newline="") as f:
                w = csv.writer(f, delimiter=self.separator)
                if write_header:
                    w.writerow(self._columns)
            self._mode = "a"
        with open(self.path, "a", newline="") as f:
            csv.writer(f, delimiter=self.separator).writerow(
                [_fmt(row.get(c, "")) for c in self._columns])

    def state_dict(self) -> dict:
        return {"name": "CSVLogger"}

    def state_arrays(self) -> dict:
        return {}

    def expected_arrays(self, state: dict, model) -> dict:
        return {}

    def check_state(self, state, arrays: dict, model) -> None:
        if state != {"name": "CSVLogger"}:
            raise ValueError(f"the state is not a CSVLogger's: {str(state)[:80]}")

    def load_state(self, state: dict, arrays: dict, model) -> None:
        self.check_state(state, arrays, model)
        self._mode = "a"  # a resumed fit continues the file


def _fmt(v):
    return repr(v) if isinstance(v, float) else v


def has_state(cb) -> bool:
    return all(hasattr(cb, m) for m in ("state_dict", "state_arrays", "expected_arrays",
                                        "check_state", "load_state"))


def check_callbacks(callbacks) -> list:
    """A list of callbacks, each with at least one hook of the protocol."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"callbacks must be a list, got {type(callbacks).__name__}")
    for cb in callbacks:
        if not any(callable(getattr(cb, h, None))
                   for h in ("on_train_begin", "on_epoch_end", "on_train_end")):
            raise TypeError(f"{cb!r} is not a callback: it has none of on_train_begin, "
                            "on_epoch_end, on_train_end")
    return list(callbacks)
