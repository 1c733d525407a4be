"""Central finite differences of the loss against the analytic gradient (float64 only).

A parameter passes when |analytic − numeric| ≤ FD_ATOL + FD_RTOL·|numeric| (tolerance.py);
ReLU-family inputs are kept KINK away from 0. Each `fd_*` check builds small models of one
layer kind, activation or loss and accumulates the worst parameter into a `Worst`.
"""

from __future__ import annotations

import numpy as np

from .._validate import check_X
from ..contract import Act, Layer, Loss, names
from .common import Context, NotApplicable
from .tolerance import FD_ATOL, FD_EPS, FD_RTOL, KINK, Worst

KINKED = (Act.RELU, Act.LEAKY_RELU)


def _model(backend: str, layers, n_in: int, loss: str, seed: int = 0):
    from ..model import Sequential

    return Sequential(layers, input_size=n_in, loss=loss, dtype="float64", backend=backend,
                      seed=seed)


def fd_data(rng, rows, n_in, n_out, loss):
    X = rng.standard_normal((rows, n_in))
    if loss == "cross_entropy":
        y = rng.integers(0, n_out, size=rows)
    elif loss == "binary_cross_entropy":
        y = rng.uniform(0, 1, size=(rows, n_out))
    else:
        y = rng.standard_normal((rows, n_out))
    return X, y


def away_from_kinks(model, X, seed: int = 7) -> bool:
    """True when every input of a ReLU-family activation is at least KINK from 0."""
    be, plan, bufs = model.backend, model.plan, model.bufs
    X = check_X(X, model.input_size, model.dtype)
    bufs.ensure_capacity(X.shape[0])
    be.forward(plan, bufs, X, training=True, seed=seed)  # fills bufs
    for i, L in enumerate(plan.layers):
        if L.kind == Layer.ACTIVATION and L.activation in KINKED:
            below = X if i == 0 else bufs.out(i - 1, X.shape[0])
            if np.abs(below).min() < KINK:
                return False
    return True


def finite_differences(model, X, y, seed: int = 7, n_checks: int = 60,
                       rng: np.random.Generator | None = None, worst: Worst | None = None,
                       label: str = "") -> Worst:
    """Analytic gradient of the flat parameter buffer against central differences.

    Returns the worst |numeric − analytic| / (atol + rtol·|numeric|); n_checks parameters
    are drawn at random from the live ones (padding between tensors is skipped)."""
    worst = worst if worst is not None else Worst()
    be, plan, bufs = model.backend, model.plan, model.bufs
    Xc, yc = model.check_data(X, y)
    bufs.ensure_capacity(Xc.shape[0])
    be.gradients(plan, bufs, Xc, yc, seed)
    analytic = bufs.grads.copy()
    base = bufs.params.ctypes.data
    where, live = [], []
    for i in range(len(plan.layers)):
        for name, v in plan.params_of(i, bufs.params).items():
            off = (v.ctypes.data - base) // v.itemsize
            live.append(np.arange(off, off + v.size))
            where += [f"{i}.{name}"] * v.size
    live = np.concatenate(live)
    rng = rng or np.random.default_rng(0)
    picks = rng.choice(live.size, size=min(n_checks, live.size), replace=False)
    for q in picks:
        j = live[q]
        keep = bufs.params[j]
        bufs.params[j] = keep + FD_EPS
        up = be.gradients(plan, bufs, Xc, yc, seed)
        bufs.params[j] = keep - FD_EPS
        down = be.gradients(plan, bufs, Xc, yc, seed)
        bufs.params[j] = keep
        numeric = (up - down) / (2 * FD_EPS)
        worst.add_scalar(analytic[j], numeric, FD_ATOL + FD_RTOL * abs(numeric),
                         f"{label} {where[q]} (flat {j})")
    be.gradients(plan, bufs, Xc, yc, seed)  # leave the buffers as the analytic pass left them
    return worst


def _only_float64(dtype):
    if dtype != "float64":
        raise NotApplicable("n/a (float64 only)")


def _n(ctx):
    return 24 if ctx.quick else 80


def _kink_free(backend, make, rng, what: str, tries: int = 40):
    """A model and data (make(seed) -> layers, n_in, n_out) whose kinked activations see no
    input within KINK of 0."""
    for seed in range(tries):
        layers, n_in, n_out = make(seed)
        model = _model(backend, layers, n_in, "mse", seed)
        X, y = fd_data(rng, 8, n_in, n_out, "mse")
        if away_from_kinks(model, X):
            return model, X, y
    raise RuntimeError(f"no draw kept {what} inputs {KINK} away from the kink")


def fd_dense(ctx: Context, backend: str, dtype: str) -> Worst:
    _only_float64(dtype)
    from ..layers import Dense

    w = Worst()
    rng = ctx.rng("fd dense")
    for sizes in ([5, 7, 3], [1, 1], [4, 9, 6, 2]):
        layers = [Dense(s) for s in sizes[1:]]
        model = _model(backend, layers, sizes[0], "mse")
        X, y = fd_data(rng, 9, sizes[0], sizes[-1], "mse")
        finite_differences(model, X, y, n_checks=_n(ctx), rng=rng, worst=w,
                           label=f"dense {sizes}")
    return w


def fd_activations(ctx: Context, backend: str, dtype: str) -> Worst:
    """Every activation, as the first layer too; and a deep leaky-ReLU stack under a
    sigmoid input layer (full run)."""
    _only_float64(dtype)
    from ..layers import Activation, Dense

    w = Worst()
    for act in names(Act):
        rng = ctx.rng("fd activation", act)
        model, X, y = _kink_free(backend, lambda s, a=act: (
            [Activation(a), Dense(9), Activation(a), Dense(7), Activation(a), Dense(3)], 5, 3),
            rng, act)
        finite_differences(model, X, y, n_checks=_n(ctx), rng=rng, worst=w, label=act)
    if not ctx.quick:
        rng = ctx.rng("fd deep")

        def deep(seed):
            layers = [Activation("sigmoid"), Dense(7)]
            for _ in range(4):
                layers += [Dense(7), Activation("leaky_relu")]
            return layers + [Dense(2)], 4, 2

        model, X, y = _kink_free(backend, deep, rng, "deep leaky_relu")
        finite_differences(model, X, y, n_checks=_n(ctx), rng=rng, worst=w,
                           label="deep leaky_relu")
    return w


def fd_losses(ctx: Context, backend: str, dtype: str) -> Worst:
    _only_float64(dtype)
    from ..layers import Activation, Dense

    w = Worst()
    for loss in names(Loss):
        rng = ctx.rng("fd loss", loss)
        for n_out in (1, 4):
            if loss == "cross_entropy" and n_out == 1:
                n_out = 2
            model = _model(backend, [Dense(6), Activation("tanh"), Dense(n_out)], 3, loss)
            X, y = fd_data(rng, 11, 3, n_out, loss)
            if loss in ("l1", "huber"):  # |pred - y| away from l1's 0 and huber's delta
                size = rng.choice([0.3, 1.6], size=(11, n_out)) + rng.uniform(0, 0.4, (11, n_out))
                y = model.predict_raw(X) + rng.choice([-1.0, 1.0], size=(11, n_out)) * size
            finite_differences(model, X, y, n_checks=_n(ctx), rng=rng, worst=w,
                               label=f"{loss} K={n_out}")
    return w


def fd_batchnorm(ctx: Context, backend: str, dtype: str) -> Worst:
    _only_float64(dtype)
    from ..layers import Activation, BatchNorm, Dense

    w = Worst()
    rng = ctx.rng("fd batchnorm")
    model = _model(backend, [Dense(8), BatchNorm(), Activation("tanh"), Dense(6),
                             BatchNorm(), Activation("sigmoid"), Dense(3)], 4, "cross_entropy")
    for i in range(len(model.plan.layers)):  # gamma, beta away from 1 and 0
        v = model.bufs.params_of(i)
        if "gamma" in v:
            v["gamma"][...] = rng.uniform(0.5, 1.5, v["gamma"].shape)
            v["beta"][...] = rng.normal(0, 0.3, v["beta"].shape)
    X, y = fd_data(rng, 10, 4, 3, "cross_entropy")
    finite_differences(model, X, y, n_checks=_n(ctx) + 20, rng=rng, worst=w,
                       label="batchnorm")
    return w


def fd_dropout(ctx: Context, backend: str, dtype: str) -> Worst:
    """With the seed fixed the mask is fixed: dropout is differentiable like a product."""
    _only_float64(dtype)
    from ..layers import Activation, Dense, Dropout

    w = Worst()
    rng = ctx.rng("fd dropout")
    for p in (0.3, 0.7):
        model = _model(backend, [Dense(16), Activation("tanh"), Dropout(p), Dense(2)], 3,
                       "binary_cross_entropy")
        X, y = fd_data(rng, 9, 3, 2, "binary_cross_entropy")
        finite_differences(model, X, y, seed=12345, n_checks=_n(ctx), rng=rng, worst=w,
                           label=f"dropout p={p}")
    return w


FD_CHECKS = {"dense": fd_dense, "activations": fd_activations, "losses": fd_losses,
             "batchnorm": fd_batchnorm, "dropout": fd_dropout}
