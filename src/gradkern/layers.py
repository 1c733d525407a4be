"""Layers a user lists in `gk.Sequential`; each compiles to one row of a Plan."""

from __future__ import annotations

import math

from .contract import Layer as LayerKind
from .plan import ACTIVATIONS, LayerSpec, activation_code


class Layer:
    """A layer declaration; `spec(n_in)` resolves its sizes."""

    def spec(self, n_in: int) -> LayerSpec:
        raise NotImplementedError

    def config(self) -> dict:
        raise NotImplementedError


class Dense(Layer):
    """out = inp @ W + b, W of shape (in, units)."""

    def __init__(self, units: int):
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"Dense units must be a positive integer, got {units!r}")
        self.units = units

    def spec(self, n_in: int) -> LayerSpec:
        return LayerSpec(LayerKind.DENSE, n_in, self.units)

    def config(self) -> dict:
        return {"type": "Dense", "units": self.units}

    def __repr__(self) -> str:
        return f"Dense({self.units})"


class Activation(Layer):
    """An elementwise activation by name: identity, relu, leaky_relu, sigmoid, tanh, gelu, silu."""

    def __init__(self, name: str):
        activation_code(name)
        self.name = name

    def spec(self, n_in: int) -> LayerSpec:
        return LayerSpec(LayerKind.ACTIVATION, n_in, n_in, activation=activation_code(self.name))

    def config(self) -> dict:
        return {"type": "Activation", "name": self.name}

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"


def ReLU() -> Activation:
    return Activation("relu")


def LeakyReLU() -> Activation:
    return Activation("leaky_relu")


def Sigmoid() -> Activation:
    return Activation("sigmoid")


def Tanh() -> Activation:
    return Activation("tanh")


def GELU() -> Activation:
    return Activation("gelu")


def SiLU() -> Activation:
    """x·sigmoid(x), as torch.nn.SiLU (also called swish)."""
    return Activation("silu")


def Identity() -> Activation:
    return Activation("identity")


class BatchNorm(Layer):
    """torch.nn.BatchNorm1d: batch statistics in training, running ones in inference."""

    def __init__(self, eps: float = 1e-5, momentum: float = 0.1):
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
            raise ValueError(f"BatchNorm eps must be a positive number, got {eps!r}")
        if not (isinstance(momentum, (int, float)) and 0 <= momentum <= 1):
            raise ValueError(f"BatchNorm momentum must be in [0, 1], got {momentum!r}")
        self.eps = float(eps)
        self.momentum = float(momentum)

    def spec(self, n_in: int) -> LayerSpec:
        return LayerSpec(LayerKind.BATCHNORM, n_in, n_in, eps=self.eps, momentum=self.momentum)

    def config(self) -> dict:
        return {"type": "BatchNorm", "eps": self.eps, "momentum": self.momentum}

    def __repr__(self) -> str:
        return f"BatchNorm(eps={self.eps}, momentum={self.momentum})"


class Dropout(Layer):
    """Inverted dropout with rate p (identity in inference)."""

    def __init__(self, p: float = 0.5):
        if not (isinstance(p, (int, float)) and 0 <= p < 1):
            raise ValueError(f"Dropout rate must be in [0, 1), got {p!r}")
        self.p = float(p)

    def spec(self, n_in: int) -> LayerSpec:
        return LayerSpec(LayerKind.DROPOUT, n_in, n_in, p=self.p)

    def config(self) -> dict:
        return {"type": "Dropout", "p": self.p}

    def __repr__(self) -> str:
        return f"Dropout({self.p})"


def from_config(cfg: dict) -> Layer:
    kind = cfg.get("type")
    if kind == "Dense":
        return Dense(int(cfg["units"]))
    if kind == "Activation":
        if cfg.get("name") not in ACTIVATIONS:
            raise ValueError(f"unknown activation in layer config: {cfg!r}")
        return Activation(cfg["name"])
    if kind == "BatchNorm":
        return BatchNorm(float(cfg["eps"]), float(cfg["momentum"]))
    if kind == "Dropout":
        return Dropout(float(cfg["p"]))
    raise ValueError(f"unknown layer config {cfg!r}")
