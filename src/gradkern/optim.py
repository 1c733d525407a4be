"""Optimizers with the update rules of torch.optim's SGD, Adam, AdamW, RMSprop and Adagrad.

An optimizer holds hyperparameters; its state (momentum buffer, Adam moments, RMSprop's
averages or Adagrad's sum, and the step count) lives in flat arrays laid out like the
parameters (`buf1`, `buf2`, `buf3`: what each holds is `contract.OPT_STATE`), created on
first use for one model. The update itself is a backend kernel: one pass over the flat
buffers.
"""

from __future__ import annotations

import math

import numpy as np

from .contract import HYPER_COLS, OPT_SLOTS, Hyper, Opt
from .plan import aligned_zeros


def _check_number(name: str, value: float, low: float = 0.0, high: float = math.inf,
                  high_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from None
    if not math.isfinite(v) or v < low or v > high or (high_open and v >= high):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value!r}")
    return v


def _check_eps(eps: float) -> float:
    v = _check_number("eps", eps, low=-math.inf)
    if v <= 0:
        raise ValueError(f"eps must be > 0, got {eps!r}: the update divides by "
                         "a square root plus eps, which is 0 for a parameter whose gradient is 0")
    return v


def _check_eps_dtype(hyper: np.ndarray, dtype: np.dtype) -> None:
    tiny = float(np.finfo(dtype).tiny)
    if hyper[Hyper.EPS] < tiny:
        raise ValueError(f"eps={float(hyper[Hyper.EPS])!r} is below the smallest normal "
                         f"{dtype} ({tiny:.3g}); the update, computed in {dtype}, would "
                         "divide by zero where a gradient is 0")


class Optimizer:
    """Base class: hyperparameters in `hyper`, state in `buf1`, `buf2`, `buf3`, `step`."""

    kind: int = -1

    def __init__(self) -> None:
        self.hyper = np.zeros(HYPER_COLS, dtype=np.float64)
        self.buf1: np.ndarray | None = None
        self.buf2: np.ndarray | None = None
        self.buf3: np.ndarray | None = None
        self.step = np.zeros(1, dtype=np.int64)  # an array so compiled drivers update it
        self._owner: tuple[int, np.dtype] | None = None

    def hparams(self) -> dict[str, float]:
        """Every column of `hyper` by its contract name: {'lr': ..., 'momentum': ...}."""
        return {h.name.lower(): float(self.hyper[h]) for h in Hyper}

    @property
    def lr(self) -> float:
        return float(self.hyper[Hyper.LR])

    @lr.setter
    def lr(self, value: float) -> None:
        self.hyper[Hyper.LR] = _check_number("lr", value)

    def state_sizes(self, n_params: int) -> dict[str, int]:
        """The state slots this optimizer uses (of OPT_SLOTS) and their element counts; the
        others are allocated empty. Declared once here: bind, the checkpoints, the
        backends' checks and state_arrays read it (contract.OPT_STATE names them)."""
        return {"buf1": n_params}

    def _initial_state(self) -> None:
        """Fill freshly allocated state (zeros unless an optimizer says otherwise)."""

    def bind(self, n_params: int, dtype: np.dtype) -> None:
        """Allocate state for a parameter buffer of this size, once."""
        key = (n_params, np.dtype(dtype))
        if self._owner == key:
            return
        self.check_bindable(n_params, dtype)
        sizes = self.state_sizes(n_params)
        for name in OPT_SLOTS:
            setattr(self, name, aligned_zeros(sizes.get(name, 0), dtype))
        self._initial_state()
        self._owner = key

    def check_bindable(self, n_params: int, dtype: np.dtype) -> None:
        """What `bind` would refuse, raised without changing anything."""
        key = (n_params, np.dtype(dtype))
        if self._owner not in (None, key):
            raise ValueError(
                "this optimizer already holds state for another model "
                f"({self._owner[0]} {self._owner[1]} parameters); create a new one"
            )
        self._check_dtype(key[1])

    def _check_dtype(self, dtype: np.dtype) -> None:
        """Hyperparameters that the update kernels, computing in `dtype`, cannot represent."""

    def unbind(self) -> None:
        """Forget the state and the model it was for (as a freshly created optimizer)."""
        self.buf1 = self.buf2 = self.buf3 = None
        self.step[...] = 0
        self._owner = None

    # Pickling keeps the hyperparameters, the state and the step (backends keep their own
    # handles, never on this object); the state arrays come back 64-byte aligned.
    def __setstate__(self, d: dict) -> None:
        d = dict(d)
        if d.get("buf3") is None and d.get("buf1") is not None:  # pickled before buf3
            d["buf3"] = aligned_zeros(0, d["buf1"].dtype)
        d.setdefault("buf3", None)
        for name in OPT_SLOTS:
            a = d.get(name)
            if a is not None:
                b = aligned_zeros(a.size, a.dtype)
                b[...] = a.reshape(-1)
                d[name] = b
        self.__dict__.update(d)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The used state slots (state_sizes) and the step, by slot name."""
        if self.buf1 is None:
            return {}
        out = {name: getattr(self, name) for name in self.state_sizes(self.buf1.size)}
        out["step"] = self.step
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if self.buf1 is None:
            raise ValueError("bind the optimizer to a model before loading its state")
        for name in self.state_sizes(self.buf1.size):
            getattr(self, name)[...] = arrays[name]
        self.step[...] = arrays["step"]

    def snapshot(self) -> tuple:
        """A copy of the state, to restore if a step is rejected: (buf1, buf2, step, buf3)
        (the step third, where it was before buf3 existed)."""
        b1, b2, b3 = (None if getattr(self, n) is None else getattr(self, n).copy()
                      for n in OPT_SLOTS)
        return b1, b2, self.step.copy(), b3

    def restore(self, snap: tuple) -> None:
        b1, b2, step, b3 = snap
        for name, b in zip(OPT_SLOTS, (b1, b2, b3), strict=True):
            if b is not None:
                getattr(self, name)[...] = b
        self.step[...] = step

    def config(self) -> dict:
        raise NotImplementedError

    def __repr__(self) -> str:
        c = self.config()
        return f"{c['name']}(" + ", ".join(f"{k}={v}" for k, v in c.items() if k != "name") + ")"


class SGD(Optimizer):
    """torch.optim.SGD: p -= lr * (momentum buffer, Nesterov optional), coupled weight decay."""

    kind = Opt.SGD

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__()
        self.hyper[Hyper.LR] = _check_number("lr", lr)
        self.hyper[Hyper.MOMENTUM] = _check_number("momentum", momentum)
        self.hyper[Hyper.DAMPENING] = _check_number("dampening", dampening, 0.0, 1.0)
        self.hyper[Hyper.WEIGHT_DECAY] = _check_number("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        self.hyper[Hyper.NESTEROV] = 1.0 if nesterov else 0.0

    def config(self) -> dict:
        h = self.hyper
        return {"name": "SGD", "lr": float(h[Hyper.LR]), "momentum": float(h[Hyper.MOMENTUM]),
                "dampening": float(h[Hyper.DAMPENING]), "nesterov": bool(h[Hyper.NESTEROV]),
                "weight_decay": float(h[Hyper.WEIGHT_DECAY])}

    def __repr__(self) -> str:
        c = self.config()
        return "SGD(" + ", ".join(f"{k}={v}" for k, v in c.items() if k != "name") + ")"


class Adam(Optimizer):
    """torch.optim.Adam: bias-corrected moments; weight_decay added to the gradient (L2)."""

    kind = Opt.ADAM
    decoupled = False

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__()
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair, got {betas!r}")
        self.hyper[Hyper.LR] = _check_number("lr", lr)
        self.hyper[Hyper.BETA1] = _check_number("betas[0]", betas[0], 0.0, 1.0, high_open=True)
        self.hyper[Hyper.BETA2] = _check_number("betas[1]", betas[1], 0.0, 1.0, high_open=True)
        self.hyper[Hyper.EPS] = _check_eps(eps)
        self.hyper[Hyper.WEIGHT_DECAY] = _check_number("weight_decay", weight_decay)
        self.hyper[Hyper.DECOUPLED] = 1.0 if self.decoupled else 0.0

    def state_sizes(self, n_params: int) -> dict[str, int]:
        return {"buf1": n_params, "buf2": n_params}  # exp_avg, exp_avg_sq

    def check_bindable(self, n_params: int, dtype: np.dtype) -> None:
        """What `bind` would refuse, raised without changing anything."""
        key = (n_params, np.dtype(dtype))
        if self._owner not in (None, key):
            raise ValueError(
                "this optimizer already holds state for another model "
                f"({self._owner[0]} {self._owner[1]} parameters); create a new one"
            )
        self._check_dtype(key[1])

    def _check_dtype(self, dtype: np.dtype) -> None:
        _check_eps_dtype(self.hyper, dtype)

    def config(self) -> dict:
        h = self.hyper
        return {"name": type(self).__name__, "lr": float(h[Hyper.LR]),
                "betas": (float(h[Hyper.BETA1]), float(h[Hyper.BETA2])), "eps": float(h[Hyper.EPS]),
                "weight_decay": float(h[Hyper.WEIGHT_DECAY])}

    def __repr__(self) -> str:
        c = self.config()
        return f"{c['name']}(" + ", ".join(f"{k}={v}" for k, v in c.items() if k != "name") + ")"


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay p *= 1 - lr * weight_decay."""

    decoupled = True

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


class RMSprop(Optimizer):
    """torch.optim.RMSprop: square_avg = alpha·square_avg + (1 - alpha)·g²; with centered,
    grad_avg moves toward g by 1 - alpha and the variance square_avg - grad_avg² replaces
    square_avg; avg = sqrt(...) + eps; p -= lr·g/avg, or through a momentum buffer
    buf = momentum·buf + g/avg, p -= lr·buf. Weight decay is added to the gradient."""

    kind = Opt.RMSPROP

    def __init__(self, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False):
        super().__init__()
        self.hyper[Hyper.LR] = _check_number("lr", lr)
        self.hyper[Hyper.ALPHA] = _check_number("alpha", alpha, 0.0, 1.0)
        self.hyper[Hyper.EPS] = _check_eps(eps)
        self.hyper[Hyper.WEIGHT_DECAY] = _check_number("weight_decay", weight_decay)
        self.hyper[Hyper.MOMENTUM] = _check_number("momentum", momentum)
        self.hyper[Hyper.CENTERED] = 1.0 if centered else 0.0

    def state_sizes(self, n_params: int) -> dict[str, int]:
        sizes = {"buf1": n_params}                     # square_avg
        if self.hyper[Hyper.MOMENTUM] > 0:
            sizes["buf2"] = n_params                   # momentum_buffer
        if self.hyper[Hyper.CENTERED]:
            sizes["buf3"] = n_params                   # grad_avg
        return sizes

    def _check_dtype(self, dtype: np.dtype) -> None:
        _check_eps_dtype(self.hyper, dtype)

    def config(self) -> dict:
        h = self.hyper
        return {"name": "RMSprop", "lr": float(h[Hyper.LR]), "alpha": float(h[Hyper.ALPHA]),
                "eps": float(h[Hyper.EPS]), "weight_decay": float(h[Hyper.WEIGHT_DECAY]),
                "momentum": float(h[Hyper.MOMENTUM]), "centered": bool(h[Hyper.CENTERED])}


class Adagrad(Optimizer):
    """torch.optim.Adagrad: sum += g²; p -= clr·g/(sqrt(sum) + eps) with
    clr = lr / (1 + (step - 1)·lr_decay); sum starts at initial_accumulator_value. Weight
    decay is added to the gradient."""

    kind = Opt.ADAGRAD

    def __init__(self, lr: float = 0.01, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10):
        super().__init__()
        self.hyper[Hyper.LR] = _check_number("lr", lr)
        self.hyper[Hyper.LR_DECAY] = _check_number("lr_decay", lr_decay)
        self.hyper[Hyper.WEIGHT_DECAY] = _check_number("weight_decay", weight_decay)
        self.hyper[Hyper.INITIAL_ACCUMULATOR_VALUE] = _check_number(
            "initial_accumulator_value", initial_accumulator_value)
        self.hyper[Hyper.EPS] = _check_eps(eps)

    def state_sizes(self, n_params: int) -> dict[str, int]:
        return {"buf1": n_params}                      # sum

    def _initial_state(self) -> None:
        self.buf1[...] = self.hyper[Hyper.INITIAL_ACCUMULATOR_VALUE]

    def _check_dtype(self, dtype: np.dtype) -> None:
        _check_eps_dtype(self.hyper, dtype)
        init = float(self.hyper[Hyper.INITIAL_ACCUMULATOR_VALUE])
        if not math.isfinite(float(np.asarray(init, dtype=dtype))):
            raise ValueError(f"initial_accumulator_value={init!r} overflows {dtype}")

    def config(self) -> dict:
        h = self.hyper
        return {"name": "Adagrad", "lr": float(h[Hyper.LR]),
                "lr_decay": float(h[Hyper.LR_DECAY]),
                "weight_decay": float(h[Hyper.WEIGHT_DECAY]),
                "initial_accumulator_value": float(h[Hyper.INITIAL_ACCUMULATOR_VALUE]),
                "eps": float(h[Hyper.EPS])}


def from_config(cfg: dict) -> Optimizer:
    cfg = dict(cfg)
    name = cfg.pop("name")
    classes = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW, "RMSprop": RMSprop,
               "Adagrad": Adagrad}
    if name not in classes:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(classes)}")
    return classes[name](**cfg)


def make(name: str, lr: float | None = None, **kw) -> Optimizer:
    """An optimizer by its lower-case name, as the command line spells it."""
    table = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}
    key = name.lower()
    if key not in table:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(table)}")
    if lr is not None:
        kw["lr"] = lr
    return table[key](**kw)
