"""gradkern: train multilayer perceptrons by backpropagation on the CPU.

    import gradkern as gk
    model = gk.MLP([64, 128, 10], activation="relu", loss="cross_entropy", backend="auto")
    history = model.fit(X, y, epochs=20, batch_size=64, optimizer=gk.optim.Adam(lr=1e-3))
"""

import sys as _sys

from . import backends, datasets, lr_scheduler, optim
from .callbacks import Callback, CSVLogger, ModelCheckpoint
from .checkpoint import CheckpointError
from .errors import TrainingDiverged
from .layers import (
    GELU,
    Activation,
    BatchNorm,
    Dense,
    Dropout,
    Identity,
    LeakyReLU,
    ReLU,
    Sigmoid,
    SiLU,
    Tanh,
)
from .model import MLP, Sequential, load, load_checkpoint
from .plan import ACTIVATIONS, LOSSES, Buffers, Plan
from .threads import get_threads, set_threads
from .trainer import EarlyStopping, History

# gk.optim.lr_scheduler, importable as gradkern.optim.lr_scheduler (optim is a module)
optim.lr_scheduler = lr_scheduler
_sys.modules[__name__ + ".optim.lr_scheduler"] = lr_scheduler

__version__ = "0.1.0"


def __getattr__(name):  # MLPClassifier, MLPRegressor: import scikit-learn (~1 s) on first use
    if name in ("MLPClassifier", "MLPRegressor"):
        from . import sklearn

        return getattr(sklearn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ACTIVATIONS", "LOSSES", "Activation", "BatchNorm", "Buffers", "CSVLogger", "Callback",
    "CheckpointError", "Dense", "ModelCheckpoint",
    "Dropout", "EarlyStopping", "GELU", "History", "Identity", "LeakyReLU", "MLP", "MLPClassifier",
    "MLPRegressor", "Plan", "ReLU", "Sequential", "SiLU", "Sigmoid", "Tanh", "TrainingDiverged",
    "backends", "datasets", "get_threads", "load", "load_checkpoint", "optim", "set_threads",
]
