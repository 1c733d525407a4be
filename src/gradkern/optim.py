"""Optimizers with the update rules of torch.optim's SGD, Adam and AdamW.

An optimizer holds hyperparameters; its state (momentum buffer or Adam moments and the
step count) lives in flat arrays laid out like the parameters, created on first use for
one model. The update itself is a backend kernel: one pass over the flat buffers.
"""

from __future__ import annotations

import math

import numpy as np

from .contract import HYPER_COLS, Hyper, Opt
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


class Optimizer:
    """Base class: hyperparameters in `hyper`, state in `buf1`, `buf2`, `step`."""

    kind: int = -1

    def __init__(self) -> None:
        self.hyper = np.zeros(HYPER_COLS, dtype=np.float64)
        self.buf1: np.ndarray | None = None
        self.buf2: np.ndarray | None = None
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

    def bind(self, n_params: int, dtype: np.dtype) -> None:
        """Allocate state for a parameter buffer of this size, once."""
        key = (n_params, np.dtype(dtype))
        if self._owner == key:
            return
        self.check_bindable(n_params, dtype)
        self.buf1 = aligned_zeros(n_params, dtype)
        self.buf2 = aligned_zeros(n_params if self.kind == Opt.ADAM else 0, dtype)
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
        self.buf1 = self.buf2 = None
        self.step[...] = 0
        self._owner = None

    # Pickling keeps the hyperparameters, the state and the step (backends keep their own
    # handles, never on this object); the state arrays come back 64-byte aligned.
    def __setstate__(self, d: dict) -> None:
        d = dict(d)
        for name in ("buf1", "buf2"):
            a = d.get(name)
            if a is not None:
                b = aligned_zeros(a.size, a.dtype)
                b[...] = a.reshape(-1)
                d[name] = b
        self.__dict__.update(d)

    def state_arrays(self) -> dict[str, np.ndarray]:
        if self.buf1 is None:
            return {}
        out = {"buf1": self.buf1, "step": self.step}
        if self.kind == Opt.ADAM:
            out["buf2"] = self.buf2
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if self.buf1 is None:
            raise ValueError("bind the optimizer to a model before loading its state")
        self.buf1[...] = arrays["buf1"]
        if self.kind == Opt.ADAM:
            self.buf2[...] = arrays["buf2"]
        self.step[...] = arrays["step"]

    def snapshot(self) -> tuple:
        """A copy of the state, to restore if a step is rejected."""
        return (
            None if self.buf1 is None else self.buf1.copy(),
            None if self.buf2 is None else self.buf2.copy(),
            self.step.copy(),
        )

    def restore(self, snap: tuple) -> None:
        b1, b2, step = snap
        if b1 is not None:
            self.buf1[...] = b1
        if b2 is not None:
            self.buf2[...] = b2
        self.step[...] = step

    def config(self) -> dict:
        raise NotImplementedError


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
        eps_v = _check_number("eps", eps, low=-math.inf)
        if eps_v <= 0:
            raise ValueError(f"eps must be > 0, got {eps!r}: the update divides by "
                             "sqrt(v) + eps, and v is 0 for a parameter whose gradient is 0")
        self.hyper[Hyper.EPS] = eps_v
        self.hyper[Hyper.WEIGHT_DECAY] = _check_number("weight_decay", weight_decay)
        self.hyper[Hyper.DECOUPLED] = 1.0 if self.decoupled else 0.0

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
        tiny = float(np.finfo(dtype).tiny)
        if self.hyper[Hyper.EPS] < tiny:
            raise ValueError(f"eps={float(self.hyper[Hyper.EPS])!r} is below the smallest normal "
                             f"{dtype} ({tiny:.3g}); the update, computed in {dtype}, would "
                             "divide by zero where a gradient is 0")

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


def from_config(cfg: dict) -> Optimizer:
    cfg = dict(cfg)
    name = cfg.pop("name")
    classes = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}
    if name not in classes:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(classes)}")
    return classes[name](**cfg)


def make(name: str, lr: float | None = None, **kw) -> Optimizer:
    """An optimizer by its lower-case name, as the command line spells it."""
    table = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
    key = name.lower()
    if key not in table:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(table)}")
    if lr is not None:
        kw["lr"] = lr
    return table[key](**kw)
