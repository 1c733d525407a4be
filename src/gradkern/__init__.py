"""gradkern: train multilayer perceptrons by backpropagation on the CPU."""

from . import backends, optim
from .plan import Buffers, Plan

__version__ = "0.1.0"

__all__ = ["Buffers", "Plan", "backends", "optim"]
