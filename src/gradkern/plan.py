"""A compiled model: layer kinds, sizes and offsets into flat buffers.

A `Plan` is what every backend runs. It is plain data: one int64 row per layer in
`ops` and one float64 row in `fargs`, so that the C and Numba drivers can walk it
without touching Python objects. `Buffers` holds every array a step touches.

Legend: B = batch rows, C = input features of a layer, OC = output features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .contract import (
    ALIGN_BYTES,
    FARGS_COLS,
    LEAKY_SLOPE,
    OPS_COLS,
    Act,
    Fargs,
    Layer,
    Loss,
    Ops,
    code,
    names,
)

# the public spellings, in code order (gradkern.contract declares the codes)
ACTIVATIONS = names(Act)
LOSSES = names(Loss)

__all__ = ["ACTIVATIONS", "ALIGN_BYTES", "FARGS_COLS", "LEAKY_SLOPE", "LOSSES", "OPS_COLS",
           "Buffers", "LayerSpec", "Plan", "activation_code", "aligned_zeros", "loss_code"]


def activation_code(name: str) -> int:
    return code(Act, name, "activation")


def loss_code(name: str) -> int:
    return code(Loss, name, "loss")


def _round_up(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


def aligned_zeros(n: int, dtype: np.dtype) -> np.ndarray:
    """A zeroed 1-D array of n elements whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    pad = ALIGN_BYTES // dtype.itemsize
    raw = np.zeros(n + pad, dtype=dtype)
    shift = (-raw.ctypes.data % ALIGN_BYTES) // dtype.itemsize
    return raw[shift : shift + n]


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a plan, as the user declared it (sizes resolved)."""

    kind: int
    n_in: int
    n_out: int
    activation: int = 0
    p: float = 0.0  # dropout rate
    eps: float = 1e-5  # batchnorm
    momentum: float = 0.1  # batchnorm


class Plan:
    """Layer table plus the offsets of every tensor in the flat buffers.

    params: W (C, OC) and b (OC,) of each dense layer, gamma/beta of each batchnorm,
            each tensor starting on a 64-byte boundary.
    state:  running mean / running var of each batchnorm (not trained).
    acts:   one (B, OC) output block per layer, for B up to the workspace capacity;
            dacts mirrors it for the gradients.
    cache:  per batchnorm layer the batch mean, biased variance and rstd (3·OC);
            per dropout layer its (B, OC) mask of 0 or 1/(1-p).
    """

    delta = 1.0  # the huber loss's delta (a plan float the loss kernels read)

    def __init__(self, layers: list[LayerSpec], loss: str, dtype: str | np.dtype,
                 delta: float = 1.0):
        if not layers:
            raise ValueError("a plan needs at least one layer")
        self.layers = tuple(layers)
        self.loss = loss
        self.loss_code = loss_code(loss)
        self.delta = float(delta)
        if not (self.delta > 0 and np.isfinite(self.delta)):
            raise ValueError(f"the huber delta must be a finite number > 0, got {delta!r}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self.n_in = layers[0].n_in
        self.n_out = layers[-1].n_out
        for prev, cur in zip(layers, layers[1:], strict=False):
            if prev.n_out != cur.n_in:
                raise ValueError(f"layer widths do not chain: {prev.n_out} -> {cur.n_in}")

        align = ALIGN_BYTES // self.dtype.itemsize
        ops = np.full((len(layers), OPS_COLS), -1, dtype=np.int64)  # -1: column unused
        fargs = np.zeros((len(layers), FARGS_COLS), dtype=np.float64)
        p_off = s_off = a_off = 0  # params, state, per-row acts
        c_fixed = c_row = 0  # cache entries: fixed-size blocks, and blocks per batch row
        for i, L in enumerate(layers):
            row = ops[i]
            row[Ops.KIND], row[Ops.IN], row[Ops.OUT] = L.kind, L.n_in, L.n_out
            row[Ops.ACT] = L.activation
            if L.kind == Layer.DENSE:
                row[Ops.PA] = p_off
                p_off = _round_up(p_off + L.n_in * L.n_out, align)
                row[Ops.PB] = p_off
                p_off = _round_up(p_off + L.n_out, align)
            elif L.kind == Layer.BATCHNORM:
                row[Ops.PA] = p_off
                p_off = _round_up(p_off + L.n_out, align)
                row[Ops.PB] = p_off
                p_off = _round_up(p_off + L.n_out, align)
                row[Ops.SA], row[Ops.SB] = s_off, s_off + L.n_out
                s_off += 2 * L.n_out
                row[Ops.CACHE] = c_fixed  # batch mean, biased var, rstd: 3*OC entries
                c_fixed += 3 * L.n_out
                fargs[i, Fargs.EPS], fargs[i, Fargs.MOMENTUM] = L.eps, L.momentum
            elif L.kind == Layer.DROPOUT:
                row[Ops.CACHE_ROW] = c_row  # the (B, OC) mask, scaled by the capacity
                c_row += L.n_out
                fargs[i, Fargs.P] = L.p
            row[Ops.OUTOFF] = a_off  # scaled by the capacity in Buffers
            a_off += L.n_out
        self.ops = ops
        self.fargs = fargs
        self.n_params = p_off
        self.n_state = s_off
        self.acts_per_row = a_off
        self.cache_fixed = c_fixed
        self.cache_per_row = c_row

    # -- layout: every view into the flat buffers is cut here ------------------
    def params_of(self, i: int, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Named views of layer i's tensors in a params-shaped flat array (params, grads,
        optimizer state): {'W' (C, OC), 'b' (OC,)} for a dense layer, {'gamma', 'beta'}
        (OC,) for a batchnorm, {} for a layer without parameters."""
        L, r = self.layers[i], self.ops[i]
        if L.kind == Layer.DENSE:
            k = L.n_in * L.n_out
            return {"W": flat[r[Ops.PA] : r[Ops.PA] + k].reshape(L.n_in, L.n_out),
                    "b": flat[r[Ops.PB] : r[Ops.PB] + L.n_out]}
        if L.kind == Layer.BATCHNORM:
            return {"gamma": flat[r[Ops.PA] : r[Ops.PA] + L.n_out],
                    "beta": flat[r[Ops.PB] : r[Ops.PB] + L.n_out]}
        return {}

    def state_of(self, i: int, state: np.ndarray) -> dict[str, np.ndarray]:
        """{'running_mean', 'running_var'} (OC,) of a batchnorm layer, {} otherwise."""
        L, r = self.layers[i], self.ops[i]
        if L.kind == Layer.BATCHNORM:
            return {"running_mean": state[r[Ops.SA] : r[Ops.SA] + L.n_out],
                    "running_var": state[r[Ops.SB] : r[Ops.SB] + L.n_out]}
        return {}

    def param_views(self, flat: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(W, b) views of each dense layer, (gamma, beta) of each batchnorm, in order."""
        return [tuple(v.values()) for i in range(len(self.layers))
                if (v := self.params_of(i, flat))]

    def flops_per_step(self, batch: int) -> int:
        """docs/design.md §5: 6·B·Σ C·OC − 2·B·C0·OC0 (no input gradient for the first layer)."""
        dense = [L for L in self.layers if L.kind == Layer.DENSE]
        total = sum(6 * batch * L.n_in * L.n_out for L in dense)
        return total - 2 * batch * dense[0].n_in * dense[0].n_out

    def describe(self) -> str:
        parts = []
        for L in self.layers:
            if L.kind == Layer.DENSE:
                parts.append(f"Dense({L.n_in}->{L.n_out})")
            elif L.kind == Layer.ACTIVATION:
                parts.append(ACTIVATIONS[L.activation])
            elif L.kind == Layer.BATCHNORM:
                parts.append(f"BatchNorm({L.n_out})")
            else:
                parts.append(f"Dropout({L.p})")
        return " -> ".join(parts) + f" | loss={self.loss} dtype={self.dtype}"


def _aligned_copy(a, n: int, dtype: np.dtype) -> np.ndarray:
    """A 64-byte aligned copy of the flat array a (n elements of dtype), or a clear error."""
    a = np.asarray(a)
    if a.dtype != dtype or a.shape != (n,):
        raise ValueError(f"a pickled buffer holds {a.shape} {a.dtype}; the plan needs "
                         f"({n},) {dtype}")
    out = aligned_zeros(n, dtype)
    out[...] = a
    return out


class Buffers:
    """Every array a step touches, allocated once: params, grads, state, workspace.

    `shared(capacity)` gives another Buffers over the same params, grads and state with a
    workspace of its own (acts, dacts, cache): what one thread's inference runs in, so
    that threads predicting with one model never share a workspace.

    Pickling keeps the plan, params, grads, state and the capacity; the workspace is
    allocated again (aligned) on loading. Backends keep their handles (the C backend's
    gk_model structs) themselves, never on this object.
    """

    def __init__(self, plan: Plan, capacity: int = 0, share: Buffers | None = None):
        self.plan = plan
        dt = plan.dtype
        if share is None:
            self.params = aligned_zeros(plan.n_params, dt)
            self.grads = aligned_zeros(plan.n_params, dt)
            self.state = aligned_zeros(plan.n_state, dt)
        else:
            if share.plan is not plan:
                raise ValueError("a shared workspace must use the plan of the buffers it shares")
            self.params, self.grads, self.state = share.params, share.grads, share.state
        self.capacity = 0
        self.acts = self.dacts = self.cache = aligned_zeros(0, dt)
        self.ensure_capacity(max(capacity, 1))

    def shared(self, capacity: int = 1) -> Buffers:
        """A Buffers with its own workspace over these params, grads and state (no copy)."""
        return Buffers(self.plan, capacity, share=self)

    def __getstate__(self) -> dict:
        return {"plan": self.plan, "params": self.params, "grads": self.grads,
                "state": self.state, "capacity": self.capacity}

    def __setstate__(self, d: dict) -> None:
        plan = d["plan"]
        dt = plan.dtype
        self.plan = plan
        self.params = _aligned_copy(d["params"], plan.n_params, dt)
        self.grads = _aligned_copy(d["grads"], plan.n_params, dt)
        self.state = _aligned_copy(d["state"], plan.n_state, dt)
        self.capacity = 0
        self.acts = self.dacts = self.cache = aligned_zeros(0, dt)
        self.ensure_capacity(max(int(d["capacity"]), 1))

    def ensure_capacity(self, rows: int) -> None:
        """Grow the workspace to hold `rows` batch rows (the only place it allocates)."""
        if rows <= self.capacity:
            return
        p, dt = self.plan, self.plan.dtype
        self.acts = aligned_zeros(p.acts_per_row * rows, dt)
        self.dacts = aligned_zeros(p.acts_per_row * rows, dt)
        self.cache = aligned_zeros(p.cache_fixed + p.cache_per_row * rows, dt)
        self.capacity = rows
        # offsets in elements, for the compiled drivers: out_off[i] and cache_off[i]
        ops = p.ops
        self.out_off = ops[:, Ops.OUTOFF] * rows
        self.cache_off = np.where(ops[:, Ops.CACHE_ROW] >= 0,
                                  p.cache_fixed + ops[:, Ops.CACHE_ROW] * rows,
                                  np.maximum(ops[:, Ops.CACHE], 0)).astype(np.int64)

    # -- named views ------------------------------------------------------------
    def params_of(self, i: int) -> dict[str, np.ndarray]:
        return self.plan.params_of(i, self.params)

    def grads_of(self, i: int) -> dict[str, np.ndarray]:
        return self.plan.params_of(i, self.grads)

    def state_of(self, i: int) -> dict[str, np.ndarray]:
        return self.plan.state_of(i, self.state)

    def out(self, i: int, rows: int) -> np.ndarray:
        """Layer i's output (rows, OC) in acts."""
        n = self.plan.layers[i].n_out
        o = self.out_off[i]
        return self.acts[o : o + rows * n].reshape(rows, n)

    def dout(self, i: int, rows: int) -> np.ndarray:
        """The gradient of the loss with respect to layer i's output (rows, OC)."""
        n = self.plan.layers[i].n_out
        o = self.out_off[i]
        return self.dacts[o : o + rows * n].reshape(rows, n)

    def cache_of(self, i: int, rows: int) -> dict[str, np.ndarray]:
        """{'mean', 'var', 'rstd'} (OC,) of a batchnorm layer's batch, {'mask'} (rows, OC)
        of a dropout layer, {} otherwise."""
        L, o = self.plan.layers[i], self.cache_off[i]
        n = L.n_out
        if L.kind == Layer.BATCHNORM:
            return {"mean": self.cache[o : o + n], "var": self.cache[o + n : o + 2 * n],
                    "rstd": self.cache[o + 2 * n : o + 3 * n]}
        if L.kind == Layer.DROPOUT:
            return {"mask": self.cache[o : o + rows * n].reshape(rows, n)}
        return {}

    def cache_block(self, i: int, size: int) -> np.ndarray:
        o = self.cache_off[i]
        return self.cache[o : o + size]

    def nbytes(self) -> int:
        arrays = (self.params, self.grads, self.state, self.acts, self.dacts, self.cache)
        return int(sum(a.nbytes for a in arrays))
