"""Learning-rate schedulers: torch.optim.lr_scheduler's classes, arguments and sequences.

Reached as `gk.optim.lr_scheduler` (`from gradkern.optim.lr_scheduler import OneCycleLR`).
Each is made on an optimizer as in torch (`StepLR(opt, step_size=10, gamma=0.5)`), sets
`opt.lr` when made and at every `step()`, and computes the rates with torch's own
formulas (the recursive "chainable" form where torch uses it), so its sequence is
torch's to the last bit or within a few ulps.

Given to training as `fit(..., scheduler=s)`. `s.interval` says how often fit steps it:
'epoch' (the default for most) after every epoch, or 'step' (OneCycleLR and CyclicLR by
default) after every minibatch — then fit asks for the whole epoch's rates at once
(`rates(n)`) and hands them to the fused epoch driver as one array, so a per-step schedule
costs no Python call per step. ReduceLROnPlateau steps per epoch on `val_loss` (`loss`
without validation data) unless `monitor` says otherwise.

What differs from torch: one parameter group (every list torch keeps per group is a
list of one); `step(epoch)` with an explicit epoch (deprecated in torch) is not offered;
OneCycleLR and CyclicLR take `cycle_momentum=False` by default and refuse True — the
fused epoch drivers take a learning rate per step, not a momentum (torch's default
would also turn plain SGD into momentum SGD). `state_dict()` is plain JSON-able data
(the constructor arguments and the position), saved in training checkpoints.
"""

from __future__ import annotations

import copy
import math
from bisect import bisect_right
from collections import Counter

import numpy as np

from . import optim as _optim
from .contract import Hyper

INTERVALS = ("epoch", "step")


def _check_int(value, name: str, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    v = int(value)
    if low is not None and v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    return v


def _check_float(value, name: str, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    bad = (not math.isfinite(v) or v < low or v > high or (low_open and v <= low)
           or (high_open and v >= high))
    if bad:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be a finite number in {lo}{low}, {high}{hi}, got {value!r}")
    return v


class LRScheduler:
    """Base class, as torch's LRScheduler: `last_epoch` counts the steps taken, `base_lrs`
    the initial rate, `get_last_lr()` the rate set by the last step."""

    default_interval = "epoch"
    _args: tuple[str, ...] = ()  # the constructor arguments, saved in state_dict
    _state: tuple[str, ...] = ()  # further state a subclass advances

    def __init__(self, optimizer, last_epoch: int = -1, interval: str | None = None):
        self.optimizer = _check_optimizer(optimizer)
        self.interval = _check_interval(interval, self.default_interval)
        last_epoch = _check_int(last_epoch, "last_epoch", low=-1)
        if last_epoch == -1:
            if getattr(optimizer, "initial_lr", None) is None:
                optimizer.initial_lr = optimizer.lr  # torch: group.setdefault("initial_lr")
        elif getattr(optimizer, "initial_lr", None) is None:
            raise ValueError("last_epoch >= 0 resumes a schedule, but this optimizer has no "
                             "initial_lr: make the scheduler with last_epoch=-1")
        self.base_lrs = [float(optimizer.initial_lr)]
        self.last_epoch = last_epoch
        self._initial_step()

    # ---------------------------------------------------------------- torch's protocol
    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> float:
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch (or minibatch) and set the optimizer's rate."""
        self._step_count += 1
        self.last_epoch += 1
        self._set(self.get_lr())

    def _set(self, lr: float) -> None:
        # OneCycleLR's linear anneal, stepped to total_steps (after the last step it
        # schedules), extrapolates below 0 as torch's does: get_last_lr() reports torch's
        # value, the optimizer holds 0. NaN and inf are refused.
        lr = float(lr)
        if not math.isfinite(lr):
            raise ValueError(f"{type(self).__name__} scheduled a rate of {lr}")
        self.optimizer.hyper[Hyper.LR] = 0.0 if lr < 0 else lr  # opt.lr, without its checks
        self._last_lr = [lr]

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    @property
    def _lr(self) -> float:
        return self.optimizer.lr

    # ---------------------------------------------------------------- for fit
    def steps_left(self) -> float:
        """How many more steps this schedule can take (inf: any number)."""
        return math.inf

    def rates(self, n: int) -> np.ndarray:
        """The rates of the next n minibatches (float64), stepping n times: rates[0] is the
        current rate, and afterwards the optimizer holds the rate of the step after them.

        A class with a vectorized form (`_rates_at`: OneCycleLR, CyclicLR) computes the n
        rates with NumPy in one go and then sets its state as n steps would; its step()
        uses the same formula, so both give the same bits. Any other steps n times."""
        n = _check_int(n, "n", low=0)
        if n > self.steps_left():
            raise ValueError(f"{type(self).__name__} can take {self.steps_left()} more steps; "
                             f"{n} were asked for")
        if n > 0 and _vectorized(type(self)):
            return self._vector_steps(n)
        out = np.empty(n, dtype=np.float64)
        snap = self.state_dict()
        try:
            hyper = self.optimizer.hyper
            for k in range(n):
                out[k] = hyper[Hyper.LR]
                self.step()
        except BaseException:
            self.load_state_dict(snap)  # a schedule that fails partway moves nothing
            raise
        return out

    def _rates_at(self, epochs: np.ndarray) -> np.ndarray:
        """get_lr() at each of these values of last_epoch (float64, ascending, reachable
        from the current position), as one NumPy computation. A class that has one
        overrides this; its get_lr() is the same formula on Python floats, the same
        operations in the same order and NumPy's function (np.cos, np.power) wherever a
        transcendental one is needed, so both give the same bits (tested) and a resumed
        run continues the vector path's sequence exactly."""
        raise NotImplementedError

    def _vector_steps(self, n: int) -> np.ndarray:
        """rates(n) by _rates_at: every rate checked before the state moves, then the
        position set as n step() calls would leave it."""
        with np.errstate(all="ignore"):  # a NaN or inf rate is refused just below
            lrs = self._rates_at(np.arange(self.last_epoch + 1, self.last_epoch + 1 + n,
                                           dtype=np.float64))
        bad = ~np.isfinite(lrs)
        if bad.any():
            raise ValueError(f"{type(self).__name__} scheduled a rate of {lrs[bad][0]}")
        out = np.empty(n, dtype=np.float64)
        out[0] = self.optimizer.hyper[Hyper.LR]
        out[1:] = np.where(lrs[:-1] < 0, 0.0, lrs[:-1])  # what _set stores
        self._step_count += n
        self.last_epoch += n
        self._set(float(lrs[-1]))
        return out

    def epoch_end(self, figures: dict) -> None:
        """What fit calls after each epoch of an 'epoch' interval."""
        self.step()

    # ---------------------------------------------------------------- state
    def _keys(self) -> tuple[str, ...]:
        return ("interval", "last_epoch", "_step_count", "base_lrs", "_last_lr",
                *self._args, *self._state)

    def state_dict(self) -> dict:
        """JSON-able: the class name, the optimizer's current rate, the constructor
        arguments and the position (torch's state_dict holds the same fields)."""
        d = {"name": type(self).__name__, "lr": self.optimizer.lr}
        for k in self._keys():
            d[k] = copy.deepcopy(_plain(self._get_state(k)))
        return d

    def _get_state(self, key: str):
        return getattr(self, key)

    def load_state_dict(self, state: dict) -> None:
        """Load a state_dict of this class; every field is checked before any is set."""
        values = self._checked_state(state)
        for k, v in values.items():
            if k != "lr":
                setattr(self, k, v)
        self._after_load()
        self.optimizer.lr = values["lr"]

    def check_state_dict(self, state: dict) -> None:
        """What load_state_dict would refuse, raised without changing anything."""
        self._checked_state(state)

    def _after_load(self) -> None:
        pass

    def _checked_state(self, state) -> dict:
        me = type(self).__name__
        if not isinstance(state, dict):
            raise ValueError(f"{me} state must be a dict, got {type(state).__name__}")
        if state.get("name") != me:
            raise ValueError(f"the state is of {_short(state.get('name'))}, not {me}")
        want = {"name", "lr", *self._keys()}
        if set(state) != want:
            raise ValueError(f"{me} state is malformed: missing {sorted(want - set(state))}, "
                             f"unexpected {_short(sorted(set(state) - want, key=str))}")
        out = {"lr": _state_value(me, "lr", state["lr"], self.optimizer.lr)}
        for k in self._keys():
            out[k] = _state_value(me, k, state[k], _plain(self._get_state(k)))
        if out["interval"] not in INTERVALS:
            raise ValueError(f"{me} state: interval {_short(out['interval'])} is not one of "
                             f"{INTERVALS}")
        if out["lr"] < 0:
            raise ValueError(f"{me} state: lr {out['lr']} is negative")
        return self._convert_state(out)

    def _convert_state(self, values: dict) -> dict:
        return values

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_plain(getattr(self, k))!r}" for k in self._args)
        return f"{type(self).__name__}({args}, interval={self.interval!r})"


def _vectorized(cls) -> bool:
    """Whether cls's rates come from its _rates_at: no subclass below the class that
    defines it changes get_lr or step."""
    for k in cls.__mro__:
        if "_rates_at" in vars(k):
            return k is not LRScheduler
        if "get_lr" in vars(k) or "step" in vars(k):
            return False
    return False


def _short(v, limit: int = 80) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[:limit] + "..."


def _plain(v):
    """Lists for tuples and Counters: the JSON shape of a value."""
    if isinstance(v, Counter):
        return sorted(v.elements())
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


_INF_OK = {"best", "mode_worse"}


def _state_value(me: str, key: str, value, like):
    """value checked to have the JSON type of `like` (ints for ints, numbers for floats,
    lists of the same length), finite unless the key may hold an infinity."""
    where = f"{me} state {key!r}"
    if like is None or isinstance(like, str):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{where} is {_short(value)}, not a string")
        return value
    if isinstance(like, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where} is {_short(value)}, not a boolean")
        return value
    if isinstance(like, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} is {_short(value)}, not an integer")
        return value
    if isinstance(like, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} is {_short(value)}, not a number")
        f = float(value)
        if math.isnan(f) or (math.isinf(f) and key not in _INF_OK):
            raise ValueError(f"{where} is {_short(value)}, not a finite number")
        return f
    if isinstance(like, list):
        if not isinstance(value, list):
            raise ValueError(f"{where} is {_short(value)}, not a list")
        if key == "milestones":
            return [_state_value(me, key + "[]", x, 0) for x in value]
        if len(value) != len(like):
            raise ValueError(f"{where} has {len(value)} entries, expected {len(like)}")
        pairs = enumerate(zip(value, like, strict=True))
        return [_state_value(me, f"{key}[{i}]", x, y) for i, (x, y) in pairs]
    if isinstance(like, dict):
        return value  # checked by the owner (SequentialLR's children)
    raise ValueError(f"{where}: unexpected type {type(like).__name__}")


def _check_optimizer(optimizer):
    if not isinstance(optimizer, _optim.Optimizer):
        raise TypeError(f"{type(optimizer).__name__} is not a gk.optim optimizer")
    return optimizer


def _check_interval(interval, default: str) -> str:
    if interval is None:
        return default
    if interval not in INTERVALS:
        raise ValueError(f"interval must be 'epoch' or 'step', got {interval!r}")
    return interval


# ==================================================================== the schedules
class StepLR(LRScheduler):
    """Multiply the rate by gamma every step_size epochs."""

    _args = ("step_size", "gamma")

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1,
                 interval: str | None = None):
        self.step_size = _check_int(step_size, "step_size", low=1)
        self.gamma = _check_float(gamma, "gamma", low=0.0)
        super().__init__(optimizer, last_epoch, interval)

    def get_lr(self) -> float:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._lr
        return self._lr * self.gamma


class MultiStepLR(LRScheduler):
    """Multiply the rate by gamma at each milestone (a milestone given twice: gamma²)."""

    _args = ("milestones", "gamma")

    def __init__(self, optimizer, milestones, gamma: float = 0.1, last_epoch: int = -1,
                 interval: str | None = None):
        try:
            ms = list(milestones)
        except TypeError:
            raise TypeError(f"milestones must be a sequence of ints, got {milestones!r}") from None
        self.milestones = Counter(_check_int(m, "milestones[]", low=0) for m in ms)
        self.gamma = _check_float(gamma, "gamma", low=0.0)
        super().__init__(optimizer, last_epoch, interval)

    def get_lr(self) -> float:
        if self.last_epoch not in self.milestones:
            return self._lr
        return self._lr * self.gamma ** self.milestones[self.last_epoch]

    def _convert_state(self, values: dict) -> dict:
        if any(m < 0 for m in values["milestones"]):
            raise ValueError("MultiStepLR state: a milestone is negative")
        values["milestones"] = Counter(values["milestones"])
        return values


class ExponentialLR(LRScheduler):
    """Multiply the rate by gamma every epoch."""

    _args = ("gamma",)

    def __init__(self, optimizer, gamma: float, last_epoch: int = -1,
                 interval: str | None = None):
        self.gamma = _check_float(gamma, "gamma", low=0.0)
        super().__init__(optimizer, last_epoch, interval)

    def get_lr(self) -> float:
        if self._is_initial:
            return self._lr
        return self._lr * self.gamma


class LinearLR(LRScheduler):
    """The rate's factor goes linearly from start_factor to end_factor over total_iters."""

    _args = ("start_factor", "end_factor", "total_iters")

    def __init__(self, optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1, interval: str | None = None):
        self.start_factor = _check_float(start_factor, "start_factor", 0.0, 1.0, low_open=True)
        self.end_factor = _check_float(end_factor, "end_factor", 0.0, 1.0)
        self.total_iters = _check_int(total_iters, "total_iters", low=1)
        super().__init__(optimizer, last_epoch, interval)

    def get_lr(self) -> float:
        if self.last_epoch == 0:
            return self._lr * self.start_factor
        if self._is_initial or self.last_epoch > self.total_iters:
            return self._lr
        d = self.end_factor - self.start_factor
        return self._lr * (1.0 + d / (self.total_iters * self.start_factor
                                      + (self.last_epoch - 1) * d))


class CosineAnnealingLR(LRScheduler):
    """Cosine from the initial rate down to eta_min over T_max epochs (and back up, as
    torch's recursive form does past T_max)."""

    _args = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1,
                 interval: str | None = None):
        self.T_max = _check_int(T_max, "T_max", low=1)
        self.eta_min = _check_float(eta_min, "eta_min", low=0.0)
        super().__init__(optimizer, last_epoch, interval)

    def get_lr(self) -> float:
        base, e, T = self.base_lrs[0], self.last_epoch, self.T_max
        if self._is_initial:
            return self._lr
        if self._step_count == 1 and e > 0:
            return self.eta_min + (base - self.eta_min) * (1 + math.cos(e * math.pi / T)) / 2
        if (e - 1 - T) % (2 * T) == 0:
            return self._lr + (base - self.eta_min) * (1 - math.cos(math.pi / T)) / 2
        return ((1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T))
                * (self._lr - self.eta_min) + self.eta_min)


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR: cosine over T_0 epochs, then restarts, each period T_mult times longer."""

    _args = ("T_0", "T_mult", "eta_min")
    _state = ("T_i", "T_cur")

    def __init__(self, optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0,
                 last_epoch: int = -1, interval: str | None = None):
        self.T_0 = _check_int(T_0, "T_0", low=1)
        self.T_mult = _check_int(T_mult, "T_mult", low=1)
        self.eta_min = _check_float(eta_min, "eta_min", low=0.0)
        self.T_i = self.T_0
        self.T_cur = _check_int(last_epoch, "last_epoch", low=-1)
        super().__init__(optimizer, last_epoch, interval)

    def get_lr(self) -> float:
        base = self.base_lrs[0]
        return self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * self.T_cur
                                                                    / self.T_i)) / 2

    def step(self) -> None:
        self._step_count += 1
        if self.last_epoch < 0:
            epoch = 0
            self.T_i, self.T_cur = self.T_0, 0
        else:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        self.last_epoch = epoch
        self._set(self.get_lr())

    def _convert_state(self, values: dict) -> dict:
        if values["T_i"] < 1 or not 0 <= values["T_cur"] < values["T_i"]:
            raise ValueError(f"CosineAnnealingWarmRestarts state: T_cur {values['T_cur']} is not "
                             f"in [0, T_i={values['T_i']})")
        return values


def _no_momentum_cycling(cycle_momentum) -> None:
    if cycle_momentum:
        raise ValueError("cycle_momentum=True is not supported: gradkern's fused epoch drivers "
                         "take a learning rate per step, not a momentum; pass "
                         "cycle_momentum=False (the default here)")


class OneCycleLR(LRScheduler):
    """The 1cycle policy: warm up from max_lr/div_factor to max_lr over pct_start of the
    steps, then anneal to max_lr/(div_factor·final_div_factor). Per minibatch by default;
    the optimizer's own lr is replaced by max_lr/div_factor when it is made (as torch)."""

    default_interval = "step"
    _args = ("total_steps", "max_lr", "pct_start", "anneal_strategy", "div_factor",
             "final_div_factor", "three_phase")
    _state = ("initial_lr", "min_lr")

    def __init__(self, optimizer, max_lr: float, total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None,
                 pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = False, base_momentum: float = 0.85,
                 max_momentum: float = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False,
                 last_epoch: int = -1, interval: str | None = None):
        _check_optimizer(optimizer)
        if total_steps is not None:
            self.total_steps = _check_int(total_steps, "total_steps", low=1)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = (_check_int(epochs, "epochs", low=1)
                                * _check_int(steps_per_epoch, "steps_per_epoch", low=1))
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
        if isinstance(pct_start, bool) or not isinstance(pct_start, float):
            raise TypeError(f"pct_start must be a float, got {type(pct_start).__name__}")
        self.pct_start = _check_float(pct_start, "pct_start", 0.0, 1.0)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got "
                             f"{anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        _no_momentum_cycling(cycle_momentum)
        self.max_lr = _check_float(max_lr, "max_lr", low=0.0)
        self.div_factor = _check_float(div_factor, "div_factor", low=0.0, low_open=True)
        self.final_div_factor = _check_float(final_div_factor, "final_div_factor", low=0.0,
                                             low_open=True)
        self.three_phase = bool(three_phase)
        if last_epoch == -1:
            optimizer.initial_lr = self.max_lr / self.div_factor
        self.initial_lr = float(getattr(optimizer, "initial_lr", None) or
                                self.max_lr / self.div_factor)
        self.min_lr = self.initial_lr / self.final_div_factor
        super().__init__(optimizer, last_epoch, interval)

    def _phases(self) -> list[tuple[float, str, str]]:
        n, p = self.total_steps, self.pct_start
        key = (n, p, self.three_phase)
        cached = getattr(self, "_phase_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        if self.three_phase:
            phases = [(float(p * n) - 1, "initial_lr", "max_lr"),
                      (float(2 * p * n) - 2, "max_lr", "initial_lr"),
                      (n - 1, "initial_lr", "min_lr")]
        else:
            phases = [(float(p * n) - 1, "initial_lr", "max_lr"), (n - 1, "max_lr", "min_lr")]
        self._phase_cache = (key, phases)
        return phases

    def _anneal(self, start: float, end: float, pct):
        # pct a float (get_lr) or an array (_rates_at): np.cos either way, the same bits
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (np.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> float:
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError(f"Tried to step {step_num} times. The specified number of total "
                             f"steps is {self.total_steps}")
        start_step = 0.0
        phases = self._phases()
        for i, (end_step, a, b) in enumerate(phases):
            if step_num <= end_step or i == len(phases) - 1:
                if end_step == start_step:
                    raise ValueError(f"OneCycleLR: a phase of zero steps (total_steps="
                                     f"{self.total_steps}, pct_start={self.pct_start})")
                pct = (step_num - start_step) / (end_step - start_step)
                return float(self._anneal(getattr(self, a), getattr(self, b), pct))
            start_step = end_step
        raise AssertionError("unreachable")

    def _rates_at(self, epochs: np.ndarray) -> np.ndarray:
        # torch's get_lr, per step: the first phase whose end_step >= step (else the last),
        # annealed from the previous phase's end_step
        phases = self._phases()
        out = np.empty_like(epochs)
        left = np.ones(epochs.shape, dtype=bool)
        start_step = 0.0
        for i, (end_step, a, b) in enumerate(phases):
            mine = left if i == len(phases) - 1 else left & (epochs <= end_step)
            if mine.any():
                if end_step == start_step:
                    raise ValueError(f"OneCycleLR: a phase of zero steps (total_steps="
                                     f"{self.total_steps}, pct_start={self.pct_start})")
                pct = (epochs[mine] - start_step) / (end_step - start_step)
                out[mine] = self._anneal(getattr(self, a), getattr(self, b), pct)
                left &= ~mine
            start_step = end_step
        return out

    def steps_left(self) -> float:
        return self.total_steps - self.last_epoch

    def _convert_state(self, values: dict) -> dict:
        if values["anneal_strategy"] not in ("cos", "linear") or values["total_steps"] < 1:
            raise ValueError("OneCycleLR state: anneal_strategy or total_steps is invalid")
        return values


class CyclicLR(LRScheduler):
    """Cyclical rates between base_lr and max_lr (triangular, triangular2, exp_range, or a
    scale_fn of the cycle or iteration). Per minibatch by default."""

    default_interval = "step"
    _args = ("max_lrs", "total_size", "step_ratio", "mode", "gamma", "scale_mode")

    def __init__(self, optimizer, base_lr: float, max_lr: float, step_size_up: int = 2000,
                 step_size_down: int | None = None, mode: str = "triangular",
                 gamma: float = 1.0, scale_fn=None, scale_mode: str = "cycle",
                 cycle_momentum: bool = False, base_momentum: float = 0.8,
                 max_momentum: float = 0.9, last_epoch: int = -1,
                 interval: str | None = None):
        _check_optimizer(optimizer)
        base = _check_float(base_lr, "base_lr", low=0.0)
        if last_epoch == -1:
            optimizer.lr = base
        self.max_lrs = [_check_float(max_lr, "max_lr", low=0.0)]
        up = float(_check_int(step_size_up, "step_size_up", low=1))
        down = (float(_check_int(step_size_down, "step_size_down", low=1))
                if step_size_down is not None else up)
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        if scale_fn is not None and not callable(scale_fn):
            raise TypeError("scale_fn must be callable")
        if scale_mode not in ("cycle", "iterations"):
            raise ValueError(f"scale_mode must be 'cycle' or 'iterations', got {scale_mode!r}")
        self.mode = mode
        self.gamma = _check_float(gamma, "gamma", low=0.0)
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()
        _no_momentum_cycling(cycle_momentum)
        super().__init__(optimizer, last_epoch, interval)
        self.base_lrs = [base]

    def _init_scale_fn(self) -> None:
        if self._scale_fn_custom is None:
            self.scale_mode = "iterations" if self.mode == "exp_range" else "cycle"

    def scale_fn(self, x: float) -> float:
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return math.ldexp(1.0, 1 - int(x))  # 1 / 2**(x-1), exactly
        return float(np.power(self.gamma, float(x)))  # as _scales: NumPy's pow

    def _scales(self, x: np.ndarray) -> np.ndarray:
        """scale_fn of each cycle or iteration number in x (whole numbers, float64)."""
        if self._scale_fn_custom is not None:
            fn = self._scale_fn_custom
            return np.array([float(fn(int(v))) for v in x.tolist()], dtype=np.float64)
        if self.mode == "triangular":
            return np.ones_like(x)
        if self.mode == "triangular2":
            return np.ldexp(1.0, (1 - x).astype(np.int64))  # 1 / 2**(x-1), exactly
        return np.power(self.gamma, x)

    def get_lr(self) -> float:
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        if x <= self.step_ratio:
            scale_factor = x / self.step_ratio
        else:
            scale_factor = (x - 1) / (self.step_ratio - 1)
        base_height = (self.max_lrs[0] - self.base_lrs[0]) * scale_factor
        arg = cycle if self.scale_mode == "cycle" else self.last_epoch
        return self.base_lrs[0] + base_height * float(self.scale_fn(arg))

    def _rates_at(self, epochs: np.ndarray) -> np.ndarray:
        cycle = np.floor(1 + epochs / self.total_size)
        x = 1.0 + epochs / self.total_size - cycle
        r = self.step_ratio
        scale_factor = np.where(x <= r, x / r, (x - 1) / (r - 1))
        base_height = (self.max_lrs[0] - self.base_lrs[0]) * scale_factor
        arg = cycle if self.scale_mode == "cycle" else epochs
        return self.base_lrs[0] + base_height * self._scales(arg)

    def _after_load(self) -> None:
        self._init_scale_fn()


class SequentialLR(LRScheduler):
    """schedulers[0] until milestones[0], then schedulers[1] from its start, and so on
    (warm up with LinearLR, then anneal). The children are stepped by this one only."""

    _args = ("_milestones",)

    def __init__(self, optimizer, schedulers, milestones, last_epoch: int = -1,
                 interval: str | None = None):
        _check_optimizer(optimizer)
        schedulers = list(schedulers)
        if len(schedulers) < 1:
            raise ValueError("SequentialLR expects at least one scheduler, but got no scheduler.")
        for i, s in enumerate(schedulers):
            if not isinstance(s, LRScheduler):
                raise TypeError(f"SequentialLR at index {i} is not a scheduler: {s!r}")
            if isinstance(s, (ReduceLROnPlateau, SequentialLR)):
                raise ValueError(f"SequentialLR does not support {type(s).__name__} (index {i})")
            if s.optimizer is not optimizer:
                raise ValueError(f"SequentialLR expects all schedulers to belong to the same "
                                 f"optimizer, but the one at index {i} has another")
        ms = [_check_int(m, "milestones[]", low=1) for m in milestones]
        if len(ms) != len(schedulers) - 1:
            raise ValueError("Sequential Schedulers expects number of schedulers provided to be "
                             "one more than the number of milestone points, but got number of "
                             f"schedulers {len(schedulers)} and the number of milestones to be "
                             f"equal to {len(ms)}")
        if ms != sorted(ms):
            raise ValueError(f"milestones must be increasing, got {ms}")
        self._schedulers = schedulers
        self._milestones = ms
        self.optimizer = optimizer
        self.interval = _check_interval(interval, self.default_interval)
        self.last_epoch = _check_int(last_epoch, "last_epoch", low=-1) + 1
        self._step_count = 0
        self.base_lrs = [float(optimizer.initial_lr)]
        optimizer.lr = optimizer.initial_lr
        for s in schedulers:
            s.last_epoch -= 1
        idx = bisect_right(ms, 0)
        schedulers[idx]._initial_step()
        self._last_lr = schedulers[idx].get_last_lr()

    def step(self) -> None:
        self._step_count += 1
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        s = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            # torch: scheduler._update_lr(0), the closed form at epoch 0 (the base rate for
            # every class offered here but LinearLR, whose factor is start_factor)
            s.last_epoch = 0
            s._set(_closed_form_at_zero(s))
        else:
            s.step()
        self._last_lr = s.get_last_lr()

    def _get_state(self, key: str):
        if key == "_schedulers":
            return [s.state_dict() for s in self._schedulers]
        return getattr(self, key)

    def _keys(self) -> tuple[str, ...]:
        return (*super()._keys(), "_schedulers")

    def _checked_state(self, state) -> dict:
        if isinstance(state, dict) and "_schedulers" in state:
            kids = state["_schedulers"]
            if not isinstance(kids, list) or len(kids) != len(self._schedulers):
                raise ValueError(f"SequentialLR state holds {_short(kids)} as its schedulers; "
                                 f"expected {len(self._schedulers)} states")
            for s, k in zip(self._schedulers, kids, strict=True):
                s.check_state_dict(k)
        return super()._checked_state(state)

    def load_state_dict(self, state: dict) -> None:
        self.check_state_dict(state)
        lr = float(state["lr"])
        for s, k in zip(self._schedulers, state["_schedulers"], strict=True):
            s.load_state_dict(k)
        for k in super()._keys():
            if k != "_milestones":
                setattr(self, k, copy.deepcopy(state[k]))
        self._milestones = list(state["_milestones"])
        self.optimizer.lr = lr


def _closed_form_at_zero(s: LRScheduler) -> float:
    """torch's _update_lr(0): the closed form at epoch 0 where the class has one, else
    get_lr() at last_epoch 0."""
    base = s.base_lrs[0]
    if isinstance(s, LinearLR):
        return base * (s.start_factor + (s.end_factor - s.start_factor) * 0 / s.total_iters)
    if isinstance(s, (StepLR, ExponentialLR)):
        return base * s.gamma ** 0
    if isinstance(s, MultiStepLR):
        return base * s.gamma ** bisect_right(sorted(s.milestones.elements()), 0)
    if isinstance(s, CosineAnnealingLR):
        return s.eta_min + (base - s.eta_min) * (1 + math.cos(0.0)) / 2
    return s.get_lr()


class ReduceLROnPlateau(LRScheduler):
    """Multiply the rate by factor when the monitored figure has not improved for
    patience epochs. `monitor` (gradkern's, not torch's): the figure fit passes to
    step(), 'val_loss' (default; 'loss' without validation data), 'loss' or
    'val_accuracy'."""

    _args = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown",
             "min_lrs", "eps", "monitor")
    _state = ("best", "num_bad_epochs", "cooldown_counter")

    def __init__(self, optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: float = 0.0, eps: float = 1e-8, monitor: str | None = None):
        self.optimizer = _check_optimizer(optimizer)
        self.factor = _check_float(factor, "factor", 0.0, 1.0, high_open=True)
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode!r} is unknown!")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode!r} is unknown!")
        if monitor not in (None, "val_loss", "loss", "val_accuracy"):
            raise ValueError(f"monitor must be val_loss, loss or val_accuracy, got {monitor!r}")
        self.mode, self.threshold_mode, self.monitor = mode, threshold_mode, monitor
        self.threshold = _check_float(threshold, "threshold", low=0.0)
        self.patience = _check_int(patience, "patience", low=0)
        self.cooldown = _check_int(cooldown, "cooldown", low=0)
        self.min_lrs = [_check_float(min_lr, "min_lr", low=0.0)]
        self.eps = _check_float(eps, "eps", low=0.0)
        self.interval = "epoch"
        self.base_lrs = [optimizer.lr]
        self.last_epoch = 0
        self._step_count = 0
        self._last_lr = [optimizer.lr]
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    @property
    def mode_worse(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def step(self, metrics) -> None:  # type: ignore[override]
        current = float(metrics)
        if math.isnan(current):
            raise ValueError("ReduceLROnPlateau.step: the metric is NaN")
        self._step_count += 1
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = self.optimizer.lr
            new = max(old * self.factor, self.min_lrs[0])
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [self.optimizer.lr]

    def key(self, has_validation: bool) -> str:
        """The figure fit passes to step()."""
        if self.monitor is not None:
            return self.monitor
        return "val_loss" if has_validation else "loss"

    def epoch_end(self, figures: dict) -> None:
        self.step(figures[self.key("val_loss" in figures)])

    def rates(self, n: int) -> np.ndarray:
        raise ValueError("ReduceLROnPlateau steps once per epoch, on a metric")

    def _convert_state(self, values: dict) -> dict:
        if values["interval"] != "epoch":
            raise ValueError("ReduceLROnPlateau state: interval must be 'epoch'")
        return values

    def __repr__(self) -> str:
        return "ReduceLROnPlateau(" + ", ".join(
            f"{k}={getattr(self, k)!r}" for k in self._args) + ")"


SCHEDULERS = {c.__name__: c for c in (StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR,
                                      CosineAnnealingWarmRestarts, LinearLR, OneCycleLR,
                                      CyclicLR, SequentialLR, ReduceLROnPlateau)}

__all__ = ["LRScheduler", *SCHEDULERS]
