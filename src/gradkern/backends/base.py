"""The backend contract: one checked adapter in front of every engine.

`Backend` declares every public kernel and driver method once (docs/design.md §2) and
validates its arguments here, for every backend, before anything is computed: dtypes,
shapes, contiguity and writability of outputs, kind codes, optimizer state against the
plan, train_epoch's perm / seeds / losses / gnorms arrays. Then it calls the engine's
unchecked method of the same name with a leading underscore (`matmul_forward` ->
`_matmul_forward`), which receives arrays it can index without looking:

- kernels: outputs exactly of their shape, C-contiguous and writeable; inputs of the
  outputs' dtype, C-contiguous (other layouts are copied here), of matching shapes;
  kind codes in range; `None` for an output the caller skips (dinp of layer 0) and for
  the arrays a mode does not read (batchnorm's running statistics in training, its
  batch statistics in inference, SGD's momentum buffer without momentum).
- drivers: x (rows, n_in) C-contiguous of the plan's dtype with rows >= 1 and the
  workspace grown to hold them; y as the plan's loss reads it: (rows,) int64 labels for
  cross_entropy, (rows, n_out) targets of the plan's dtype otherwise; the optimizer bound
  to state of the plan's size and dtype; the seed reduced to uint64.

An engine (NumpyBackend, NumbaBackend, CBackend) implements every kernel of `KERNELS`
with its underscore name. The drivers `_forward`, `_gradients`, `_train_step` and
`_train_epoch` are composed here from those kernels, in Python; compiled engines
override them with one call per step or per epoch, and must give the same results.
An engine may keep what is its own (turning arrays into cffi pointers, a copy that gives
Numba one compiled signature), but checks nothing this adapter checks. Class labels are
the one exception, for speed: scanning them costs more than a small C step's overhead,
so an engine that refuses an out-of-range label itself before any model state changes
(C's GK_ERR_LABEL, Numba's jitted loss) sets `checks_labels`, and the adapter scans the
labels of a single batch only for the other engines. train_epoch's labels and
permutation are always scanned here, once per epoch, so a bad entry late in the data is
refused before the first step.

Running statistics of batch normalization are committed after a step has been accepted
(finite loss and gradient norm), together with the optimizer update, so that a rejected
step leaves every buffer of the model as it was. `gradients` changes no model state.

Backend state never lives on user objects: an engine that caches per-Buffers or
per-Optimizer structures keeps them itself, keyed weakly (see c_backend.py).
"""

from __future__ import annotations

import math
import weakref

import numpy as np

from ..contract import HYPER_COLS, LAYER_MIX, MASK64, OPT_SLOTS, Act, Hyper, Layer, Loss, Opt
from ..optim import Optimizer
from ..plan import Buffers, Plan

# the computation methods every engine implements, as `_<name>`
KERNELS = ("matmul_forward", "matmul_backward", "activation_forward", "activation_backward",
           "loss_forward_backward", "batchnorm_forward", "batchnorm_backward",
           "batchnorm_update_running", "dropout_forward", "dropout_backward", "sgd_update",
           "adam_update", "rmsprop_update", "adagrad_update", "sum_squares", "scale")
# the drivers; the adapter composes them from the kernels unless an engine fuses them
DRIVERS = ("forward", "gradients", "train_step", "train_epoch")
# Optional, engine-specific public methods: an engine may define these and no others
# beyond the contract (tests/test_backend_contract.py enforces it). Callers look them up
# with getattr (backends.info, threads.set_threads).
EXTRAS = {
    "describe": "() -> dict: versions, threads, build details (`gradkern backends`)",
    "set_threads": "(n) -> int: the engine's own thread count; returns what was set",
    "set_isa": "(name) -> str: the instruction set to use (C)",
    "tile": "(dtype) -> (MR, NR, KC): the GEMM register tile in use (C)",
    "fma_peak": "(dtype, threads, seconds) -> dict: measured FMA ceiling (C)",
}

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_I64 = np.dtype(np.int64)
_OPT_KINDS = frozenset(Opt)
_MAX_ACT, _MAX_LOSS = max(Act), max(Loss)


def require_elements(what: str, a) -> None:
    """A mean over nothing is refused, the same way on every backend."""
    if a.size == 0:
        raise ValueError(f"{what} of an empty batch (shape {a.shape}) is undefined")


def layer_seed(step_seed: int, layer: int) -> int:
    """The dropout seed of layer `layer` in the step seeded by `step_seed`."""
    return (step_seed + (layer + 1) * LAYER_MIX) & MASK64


def unpack_sgd(hyper) -> tuple[float, float, float, bool, float]:
    return (float(hyper[Hyper.LR]), float(hyper[Hyper.MOMENTUM]),
            float(hyper[Hyper.DAMPENING]), bool(hyper[Hyper.NESTEROV]),
            float(hyper[Hyper.WEIGHT_DECAY]))


def unpack_adam(hyper) -> tuple[float, float, float, float, float, bool]:
    return (float(hyper[Hyper.LR]), float(hyper[Hyper.BETA1]), float(hyper[Hyper.BETA2]),
            float(hyper[Hyper.EPS]), float(hyper[Hyper.WEIGHT_DECAY]),
            bool(hyper[Hyper.DECOUPLED]))


def unpack_rmsprop(hyper) -> tuple[float, float, float, float, float, bool]:
    return (float(hyper[Hyper.LR]), float(hyper[Hyper.ALPHA]), float(hyper[Hyper.EPS]),
            float(hyper[Hyper.WEIGHT_DECAY]), float(hyper[Hyper.MOMENTUM]),
            bool(hyper[Hyper.CENTERED]))


def unpack_adagrad(hyper) -> tuple[float, float, float, float]:
    return (float(hyper[Hyper.LR]), float(hyper[Hyper.LR_DECAY]),
            float(hyper[Hyper.WEIGHT_DECAY]), float(hyper[Hyper.EPS]))


# ============================================================================ checks


def _out(a, name: str, dtype=None, shape=None) -> np.ndarray:
    """An output: an ndarray of float32/64 (of `dtype`), of `shape`, C-contiguous and
    writeable. It is never copied: the kernel writes into it."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in _FLOATS or (dtype is not None and a.dtype != dtype):
        raise TypeError(f"{name} is {a.dtype}; expected {dtype or 'float32 or float64'}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}; expected {shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (a kernel writes it in place)")
    if not a.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return a


def _opt_buf(a, name: str, dtype, n: int, used: bool, who: str):
    """An optional optimizer state buffer: checked as an output when used, else None."""
    if not used:
        return None
    if a is None or (isinstance(a, np.ndarray) and a.size == 0 and n):
        raise ValueError(f"{who} needs a {name} buffer")
    return _out(a, name, dtype, (n,))


def _out2(a, name: str) -> np.ndarray:
    """The first output of a kernel on (rows, columns) blocks: it sets dtype and shape."""
    _out(a, name)
    if a.ndim != 2:
        raise ValueError(f"{name} has shape {a.shape}; expected (rows, columns)")
    return a


def _inp(a, name: str, dtype, shape) -> np.ndarray:
    """An input of `dtype` and `shape` (None: any size on that axis), made C-contiguous."""
    a = np.asarray(a)
    if a.dtype != dtype:
        raise TypeError(f"{name} is {a.dtype}; expected {dtype}")
    if a.ndim != len(shape) or any(s is not None and s != d
                                   for s, d in zip(shape, a.shape, strict=True)):
        want = tuple("?" if s is None else s for s in shape)
        raise ValueError(f"{name} has shape {a.shape}; expected {want}")
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _labels(y, what: str = "labels") -> np.ndarray:
    """Class labels as a C-contiguous int64 array (integer input converted)."""
    if type(y) is np.ndarray and y.dtype == _I64 and y.flags.c_contiguous:
        return y
    a = np.asarray(y)
    if a.dtype.kind not in "iu" and a.size:
        raise TypeError(f"{what} must be integers, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _check_label_range(labels: np.ndarray, k: int) -> None:
    # one pass: a negative int64 is a huge uint64
    if labels.size and int(labels.view(np.uint64).max()) >= k:
        raise ValueError(f"cross_entropy label out of range [0, {k}): a class label is "
                         f"outside the {k} outputs (got {int(labels.min())}..."
                         f"{int(labels.max())})")


def _code(kind, top: int, what: str) -> int:
    try:
        k = int(kind)
    except (TypeError, ValueError):
        raise TypeError(f"the {what} code must be an integer, got {kind!r}") from None
    if not 0 <= k <= top:
        raise ValueError(f"unknown {what} code {kind}")
    return k


def _hyper(hyper) -> np.ndarray:
    h = np.ascontiguousarray(hyper, dtype=np.float64)
    if h.shape != (HYPER_COLS,):
        raise ValueError(f"hyper has shape {h.shape}; expected ({HYPER_COLS},)")
    return h


def _step(step) -> int:
    k = int(step)
    if k < 1:
        raise ValueError(f"optimizer steps count from 1, got {step}")
    return k


def _seed(seed) -> int:
    return int(seed) & MASK64


def _weight(w, dtype, rows: int, name: str = "weight"):
    """Per-row sample weights: None, or a C-contiguous (rows,) array of dtype, finite and
    >= 0 (checked after the conversion: 1e300 is inf in float32)."""
    if w is None:
        return None
    if not (type(w) is np.ndarray and w.dtype == dtype and w.flags.c_contiguous):
        with np.errstate(over="ignore"):  # too large for dtype: inf, refused just below
            w = _floats(w, dtype, name)
    if w.shape != (rows,):
        raise ValueError(f"{name} has shape {w.shape}; expected ({rows},) (one per row)")
    if not np.isfinite(w).all():
        raise ValueError(f"{name} holds NaN or inf (sample weights must be finite)")
    if w.size and w.min() < 0:
        raise ValueError(f"{name} holds negative entries (sample weights must be >= 0)")
    return w


def _delta(delta) -> float:
    d = float(delta)
    if not (d > 0 and math.isfinite(d)):
        raise ValueError(f"the huber delta must be a finite number > 0, got {delta!r}")
    return d


def _lrs(lrs, n_batches: int):
    """Per-step learning rates: None, or float64 (>= n_batches,), finite and >= 0."""
    if lrs is None:
        return None
    a = np.ascontiguousarray(lrs, dtype=np.float64)
    if a.ndim != 1 or a.shape[0] < n_batches:
        raise ValueError(f"lrs has shape {a.shape}: too few entries for {n_batches} batches")
    a = a[:n_batches]
    if not np.isfinite(a).all() or (a.size and a.min() < 0):
        raise ValueError("lrs holds a negative, NaN or infinite learning rate")
    return a if a.flags.writeable else a.copy()


class PerObject:
    """What the backend keeps for one user object (a Buffers, an Optimizer): held here,
    never on the object, so it is not pickled or copied with it; dropped when the object is
    collected (weakref.finalize runs as it is freed, before its id can be reused). A value
    must not refer to its object. One dict lookup by id() per step."""

    def __init__(self) -> None:
        self._d: dict[int, object] = {}

    def get(self, obj):
        return self._d.get(id(obj))

    def put(self, obj, value) -> None:
        key = id(obj)
        if key not in self._d:
            weakref.finalize(obj, self._d.pop, key, None).atexit = False
        self._d[key] = value

    def __len__(self) -> int:
        return len(self._d)


_VIEWS = PerObject()  # Buffers -> the named views of every layer, for the Python driver


def _layer_views(plan: Plan, bufs: Buffers) -> list[tuple[dict, dict, dict]]:
    """[(params_of(i), grads_of(i), state_of(i))] of every layer, cut once per Buffers
    (its params, grads and state never move; the workspace does, and is cut per step)."""
    v = _VIEWS.get(bufs)
    if v is None or v[0] is not bufs.params or v[1] is not bufs.grads or v[2] is not bufs.state:
        views = [(bufs.params_of(i), bufs.grads_of(i), bufs.state_of(i))
                 for i in range(len(plan.layers))]
        v = (bufs.params, bufs.grads, bufs.state, views)
        _VIEWS.put(bufs, v)
    return v[3]


# ============================================================================ contract


class Backend:
    """The contract of every backend: checked public methods over an engine's `_` ones."""

    name = "base"
    checks_labels = False  # see the module docstring

    # ------------------------------------------------------------------ kernels
    def matmul_forward(self, out, inp, weight, bias) -> None:
        """out (B, OC) = inp (B, C) @ weight (C, OC) + bias (OC,)."""
        B, OC = _out2(out, "out").shape
        dt = out.dtype
        inp = _inp(inp, "inp", dt, (B, None))
        weight = _inp(weight, "weight", dt, (inp.shape[1], OC))
        self._matmul_forward(out, inp, weight, _inp(bias, "bias", dt, (OC,)))

    def matmul_backward(self, dinp, dweight, dbias, dout, inp, weight) -> None:
        """dinp (B, C) = dout @ weight.T (skipped when dinp is None);
        dweight (C, OC) = inp.T @ dout; dbias (OC,) = dout.sum(0). All overwritten."""
        C, OC = _out2(dweight, "dweight").shape
        dt = dweight.dtype
        _out(dbias, "dbias", dt, (OC,))
        dout = _inp(dout, "dout", dt, (None, OC))
        B = dout.shape[0]
        inp = _inp(inp, "inp", dt, (B, C))
        weight = _inp(weight, "weight", dt, (C, OC))
        if dinp is not None:
            _out(dinp, "dinp", dt, (B, C))
        self._matmul_backward(dinp, dweight, dbias, dout, inp, weight)

    def activation_forward(self, kind: int, out, inp) -> None:
        """out (B, N) = act(inp); kind is an `Act`."""
        kind = _code(kind, _MAX_ACT, "activation")
        _out2(out, "out")
        self._activation_forward(kind, out, _inp(inp, "inp", out.dtype, out.shape))

    def activation_backward(self, kind: int, dinp, dout, inp, out) -> None:
        """dinp (B, N) = dout * act'(inp); `out` is act(inp), for sigmoid and tanh."""
        kind = _code(kind, _MAX_ACT, "activation")
        _out2(dinp, "dinp")
        dt, shape = dinp.dtype, dinp.shape
        self._activation_backward(kind, dinp, _inp(dout, "dout", dt, shape),
                                  _inp(inp, "inp", dt, shape), _inp(out, "out", dt, shape))

    def loss_forward_backward(self, kind: int, dpred, pred, target, weight=None,
                              delta: float = 1.0) -> float:
        """Mean loss of pred (B, K) against target; dpred (B, K) = d loss / d pred.
        target: (B, K) floats for the regression losses and binary_cross_entropy, (B,)
        integer labels in [0, K) for cross_entropy. weight (B,) of pred's dtype, finite
        and >= 0: the weighted mean Σ w_i·l_i / Σ w_i of the rows' losses l_i (each the
        mean over its K elements; np.average, torch's CrossEntropyLoss(weight=...)); a
        batch whose weights sum to 0 has loss 0 and dpred 0. delta > 0: huber's."""
        kind = _code(kind, _MAX_LOSS, "loss")
        B, K = _out2(dpred, "dpred").shape
        require_elements("the loss", dpred)
        pred = _inp(pred, "pred", dpred.dtype, dpred.shape)
        weight = _weight(weight, dpred.dtype, B)
        delta = _delta(delta)
        if kind == Loss.CROSS_ENTROPY:
            target = _labels(target)
            if target.shape != (B,):
                raise ValueError(f"labels have shape {target.shape}; expected ({B},)")
            if not self.checks_labels:
                _check_label_range(target, K)
        else:
            target = np.asarray(target)
            if target.dtype != dpred.dtype or not target.flags.c_contiguous:
                target = np.ascontiguousarray(target, dtype=dpred.dtype)
            if target.shape != (B, K):
                raise ValueError(f"target has shape {target.shape}; pred {(B, K)}")
        return float(self._loss_forward_backward(kind, dpred, pred, target, weight, delta))

    def batchnorm_forward(self, out, mean, var, rstd, inp, gamma, beta,
                          running_mean, running_var, training: bool, eps: float) -> None:
        """out (B, N) = gamma * (inp - mu) * rstd + beta.
        training: mu, biased var and rstd = 1/sqrt(var + eps) of this batch, written to
        mean, var, rstd (N,). inference: from running_mean and running_var; mean, var,
        rstd untouched."""
        B, N = _out2(out, "out").shape
        dt = out.dtype
        inp = _inp(inp, "inp", dt, (B, N))
        gamma, beta = _inp(gamma, "gamma", dt, (N,)), _inp(beta, "beta", dt, (N,))
        training = bool(training)
        if training:
            for name, a in (("mean", mean), ("var", var), ("rstd", rstd)):
                _out(a, name, dt, (N,))
            if B < 1:
                raise ValueError("batch normalization in training needs at least one row")
            running_mean = running_var = None
        else:
            running_mean = _inp(running_mean, "running_mean", dt, (N,))
            running_var = _inp(running_var, "running_var", dt, (N,))
            mean = var = rstd = None
        self._batchnorm_forward(out, mean, var, rstd, inp, gamma, beta, running_mean,
                                running_var, training, float(eps))

    def batchnorm_backward(self, dinp, dgamma, dbeta, dout, inp, mean, rstd, gamma) -> None:
        """Gradients of training-mode batchnorm; dinp skipped when None."""
        _out(dgamma, "dgamma")
        if dgamma.ndim != 1:
            raise ValueError(f"dgamma has shape {dgamma.shape}; expected (N,)")
        N, dt = dgamma.shape[0], dgamma.dtype
        _out(dbeta, "dbeta", dt, (N,))
        dout = _inp(dout, "dout", dt, (None, N))
        B = dout.shape[0]
        inp = _inp(inp, "inp", dt, (B, N))
        mean, rstd = _inp(mean, "mean", dt, (N,)), _inp(rstd, "rstd", dt, (N,))
        gamma = _inp(gamma, "gamma", dt, (N,))
        if dinp is not None:
            _out(dinp, "dinp", dt, (B, N))
        self._batchnorm_backward(dinp, dgamma, dbeta, dout, inp, mean, rstd, gamma)

    def batchnorm_update_running(self, running_mean, running_var, mean, var,
                                 rows: int, momentum: float) -> None:
        """running = (1 - momentum) * running + momentum * batch, the variance unbiased."""
        _out(running_mean, "running_mean")
        if running_mean.ndim != 1:
            raise ValueError(f"running_mean has shape {running_mean.shape}; expected (N,)")
        N, dt = running_mean.shape[0], running_mean.dtype
        _out(running_var, "running_var", dt, (N,))
        self._batchnorm_update_running(running_mean, running_var,
                                       _inp(mean, "mean", dt, (N,)), _inp(var, "var", dt, (N,)),
                                       int(rows), float(momentum))

    def dropout_forward(self, out, mask, inp, p: float, seed: int) -> None:
        """Inverted dropout: mask (B, N) = 0 or 1/(1-p) from the counter hash
        splitmix64(seed + (e+1)·GOLDEN) of element e (row-major), kept when its top
        53 bits as a fraction are >= p; out = inp * mask."""
        _out2(out, "out")
        _out(mask, "mask", out.dtype, out.shape)
        p = float(p)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p must be in [0, 1), got {p}")
        self._dropout_forward(out, mask, _inp(inp, "inp", out.dtype, out.shape), p,
                              _seed(seed))

    def dropout_backward(self, dinp, dout, mask) -> None:
        """dinp = dout * mask."""
        _out2(dinp, "dinp")
        dt, shape = dinp.dtype, dinp.shape
        self._dropout_backward(dinp, _inp(dout, "dout", dt, shape),
                               _inp(mask, "mask", dt, shape))

    def sgd_update(self, params, grads, buf, hyper, step: int) -> None:
        """torch.optim.SGD on flat buffers; step counts from 1 (1: buf starts as grad).
        buf may be None (or empty) when there is no momentum."""
        _out(params, "params")
        if params.ndim != 1:
            raise ValueError(f"params has shape {params.shape}; expected a flat (n,) buffer")
        n, dt = params.shape[0], params.dtype
        grads = _inp(grads, "grads", dt, (n,))
        hyper = _hyper(hyper)
        if buf is None or (isinstance(buf, np.ndarray) and buf.size == 0 and n):
            if hyper[Hyper.MOMENTUM] != 0.0:
                raise ValueError("SGD with momentum needs a momentum buffer")
            buf = None
        else:
            _out(buf, "buf", dt, (n,))
        self._sgd_update(params, grads, buf, hyper, _step(step))

    def adam_update(self, params, grads, m, v, hyper, step: int) -> None:
        """torch.optim.Adam / AdamW (hyper[Hyper.DECOUPLED]) on flat buffers; step from 1."""
        _out(params, "params")
        if params.ndim != 1:
            raise ValueError(f"params has shape {params.shape}; expected a flat (n,) buffer")
        n, dt = params.shape[0], params.dtype
        _out(m, "m", dt, (n,))
        _out(v, "v", dt, (n,))
        self._adam_update(params, _inp(grads, "grads", dt, (n,)), m, v, _hyper(hyper),
                          _step(step))

    def rmsprop_update(self, params, grads, square_avg, momentum_buffer, grad_avg, hyper,
                       step: int) -> None:
        """torch.optim.RMSprop on flat buffers; step from 1. momentum_buffer may be None
        (or empty) without momentum, grad_avg unless hyper[Hyper.CENTERED]."""
        _out(params, "params")
        if params.ndim != 1:
            raise ValueError(f"params has shape {params.shape}; expected a flat (n,) buffer")
        n, dt = params.shape[0], params.dtype
        hyper = _hyper(hyper)
        _out(square_avg, "square_avg", dt, (n,))
        momentum_buffer = _opt_buf(momentum_buffer, "momentum_buffer", dt, n,
                                   hyper[Hyper.MOMENTUM] > 0, "RMSprop with momentum")
        grad_avg = _opt_buf(grad_avg, "grad_avg", dt, n, hyper[Hyper.CENTERED] != 0,
                            "centered RMSprop")
        self._rmsprop_update(params, _inp(grads, "grads", dt, (n,)), square_avg,
                             momentum_buffer, grad_avg, hyper, _step(step))

    def adagrad_update(self, params, grads, state_sum, hyper, step: int) -> None:
        """torch.optim.Adagrad on flat buffers (state_sum: its running sum of g²); step
        from 1 (the learning rate decays with it)."""
        _out(params, "params")
        if params.ndim != 1:
            raise ValueError(f"params has shape {params.shape}; expected a flat (n,) buffer")
        n, dt = params.shape[0], params.dtype
        _out(state_sum, "state_sum", dt, (n,))
        self._adagrad_update(params, _inp(grads, "grads", dt, (n,)), state_sum, _hyper(hyper),
                             _step(step))

    def sum_squares(self, x) -> float:
        """Σ x² of every element, accumulated in float64 (the gradient norm is its root)."""
        x = np.asarray(x)
        if x.dtype not in _FLOATS:
            raise TypeError(f"sum_squares takes float32 or float64, got {x.dtype}")
        return float(self._sum_squares(np.ascontiguousarray(x).reshape(-1)))

    def scale(self, x, factor: float) -> None:
        """x *= factor, in place (x of any shape)."""
        _out(x, "x")
        self._scale(x.reshape(-1), float(factor))

    # ------------------------------------------------------------------ driver checks
    @staticmethod
    def _x(plan: Plan, bufs: Buffers, x, name: str = "x") -> np.ndarray:
        """x as a C-contiguous (rows >= 1, n_in) array of the plan's dtype, the workspace
        grown to hold it; the buffers checked against the plan. (Lean: once per step.)"""
        if bufs.plan is not plan:
            _same_layout(plan, bufs)
        if type(x) is not np.ndarray or x.dtype != plan.dtype or not x.flags.c_contiguous:
            x = _floats(x, plan.dtype, name)
        if x.ndim != 2 or x.shape[1] != plan.n_in:
            raise ValueError(f"{name} has shape {x.shape}; the plan takes (rows, {plan.n_in})")
        rows = x.shape[0]
        if rows == 0:
            raise ValueError(f"{name} has no rows")
        if rows > bufs.capacity:
            bufs.ensure_capacity(rows)
        return x

    def _y(self, plan: Plan, y, rows: int) -> np.ndarray:
        """y as the plan's loss reads it: (rows,) int64 labels, or (rows, n_out) targets."""
        if plan.loss_code == Loss.CROSS_ENTROPY:
            labels = _labels(y)
            if labels.ndim != 1:
                labels = labels.reshape(-1)
            if labels.shape[0] != rows:
                raise ValueError(f"labels have shape {np.shape(y)}; expected ({rows},)")
            return labels
        target = y
        if type(y) is not np.ndarray or y.dtype != plan.dtype or not y.flags.c_contiguous:
            target = _floats(y, plan.dtype, "y")
        if target.ndim == 1 and plan.n_out == 1:
            target = target.reshape(-1, 1)
        if target.shape != (rows, plan.n_out):
            raise ValueError(f"y has shape {target.shape}; expected ({rows}, {plan.n_out})")
        return target

    @staticmethod
    def _opt(plan: Plan, opt: Optimizer) -> None:
        """The optimizer known, bound to state of the plan's size and dtype."""
        if opt.kind not in _OPT_KINDS:
            raise ValueError(f"unknown optimizer kind {opt.kind}")
        if opt.buf1 is None:
            opt.bind(plan.n_params, plan.dtype)
        b1, sizes = opt.buf1, opt.state_sizes(plan.n_params)
        for name in OPT_SLOTS:  # every slot an array: the used ones of the plan's size
            b = getattr(opt, name)
            if b is None or b.dtype != plan.dtype or b.size != sizes.get(name, 0):
                raise TypeError(f"optimizer state is {b1.size} {b1.dtype}; the plan has "
                                f"{plan.n_params} {plan.dtype}")

    # ------------------------------------------------------------------ drivers
    def forward(self, plan: Plan, bufs: Buffers, x: np.ndarray, training: bool = False,
                seed: int = 0) -> np.ndarray:
        """Run every layer on x (B, C0); returns the view of the last layer's output."""
        x = self._x(plan, bufs, x)
        return self._forward(plan, bufs, x, bool(training), _seed(seed))

    def gradients(self, plan: Plan, bufs: Buffers, x: np.ndarray, y: np.ndarray,
                  seed: int = 0, weight=None) -> float:
        """Training-mode forward, loss and backward: fills bufs.grads, returns the loss.
        weight: the rows' sample weights (see loss_forward_backward), or None."""
        x = self._x(plan, bufs, x)
        y = self._y(plan, y, x.shape[0])
        weight = _weight(weight, plan.dtype, x.shape[0])
        if not self.checks_labels and plan.loss_code == Loss.CROSS_ENTROPY:
            _check_label_range(y, plan.n_out)
        return float(self._gradients(plan, bufs, x, y, _seed(seed), weight))

    def train_step(self, plan: Plan, bufs: Buffers, x: np.ndarray, y: np.ndarray,
                   opt: Optimizer, seed: int = 0, clip_norm: float = 0.0,
                   weight=None) -> tuple[float, float]:
        """One step. Returns (loss, gradient norm before clipping). When either is not
        finite the step is rejected: nothing of the model or optimizer changes.
        weight: the rows' sample weights, or None; weights summing to 0 make the step a
        no-op (loss 0, gradient norm 0, no update, no step counted)."""
        x = self._x(plan, bufs, x)
        y = self._y(plan, y, x.shape[0])
        weight = _weight(weight, plan.dtype, x.shape[0])
        if not self.checks_labels and plan.loss_code == Loss.CROSS_ENTROPY:
            _check_label_range(y, plan.n_out)
        self._opt(plan, opt)
        loss, gnorm = self._train_step(plan, bufs, x, y, opt, _seed(seed), float(clip_norm),
                                       weight)
        return float(loss), float(gnorm)

    def train_epoch(self, plan: Plan, bufs: Buffers, X: np.ndarray, Y: np.ndarray,
                    perm: np.ndarray, batch_size: int, opt: Optimizer, seeds: np.ndarray,
                    clip_norm: float, losses: np.ndarray, gnorms: np.ndarray,
                    lrs=None, weights=None) -> int:
        """Minibatches X[perm[k*bs:(k+1)*bs]] in order, one train_step each.
        seeds (n_batches,) uint64 dropout seeds; losses and gnorms (n_batches,) float64
        receive each step's figures. Returns the number of accepted steps: fewer than
        n_batches means step `returned` was rejected and the epoch stopped there.
        lrs (n_batches,) float64, finite and >= 0: step k uses lrs[k] in place of
        opt.hyper[Hyper.LR], which the epoch leaves as it was (None: the constant rate).
        weights (n_rows,) sample weights of X's rows (see train_step), or None.
        Every permutation entry and every label it selects is checked before the first
        step."""
        if bufs.plan is not plan:
            _same_layout(plan, bufs)
        X = _floats(X, plan.dtype, "X")
        if X.ndim != 2 or X.shape[1] != plan.n_in:
            raise ValueError(f"X has shape {X.shape}; the plan takes (rows, {plan.n_in})")
        n_rows = X.shape[0]
        Y = self._y(plan, Y, n_rows)
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        perm = _labels(perm, "perm")
        if perm.ndim != 1 or perm.shape[0] == 0:
            raise ValueError(f"perm must be a non-empty 1-D index array, got shape {perm.shape}")
        n_batches = (perm.shape[0] + batch_size - 1) // batch_size
        if int(perm.view(np.uint64).max()) >= n_rows:  # negative entries are huge here
            raise ValueError(f"perm holds row indices out of range [0, {n_rows}) "
                             "(a permutation entry outside the data)")
        if plan.loss_code == Loss.CROSS_ENTROPY:
            _check_label_range(Y[perm], plan.n_out)
        seeds = np.ascontiguousarray(seeds, dtype=np.uint64)
        for name, a in (("seeds", seeds), ("losses", losses), ("gnorms", gnorms)):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
            if a.ndim != 1 or a.shape[0] < n_batches:
                raise ValueError(f"{name} has shape {a.shape}: too few entries for "
                                 f"{n_batches} batches")
        for name, a in (("losses", losses), ("gnorms", gnorms)):
            if a.dtype != np.float64 or not a.flags.c_contiguous or not a.flags.writeable:
                raise TypeError(f"{name} must be a writeable contiguous float64 array")
        lrs = _lrs(lrs, n_batches)
        weights = _weight(weights, plan.dtype, n_rows, "weights")
        bufs.ensure_capacity(min(batch_size, perm.shape[0]))
        self._opt(plan, opt)
        return int(self._train_epoch(plan, bufs, X, Y, perm, batch_size, opt, seeds,
                                     float(clip_norm), losses, gnorms, lrs, weights))

    def apply_gradients(self, plan: Plan, bufs: Buffers, opt: Optimizer,
                        clip_norm: float = 0.0, rows: int = 0) -> float:
        """The update half of a step, on the gradients already in bufs.grads (from
        `gradients`, possibly combined across processes: gradkern.distributed). Returns
        their global norm before clipping; when it is not finite nothing changes.
        Otherwise: clipping to clip_norm (0: none), batch normalization's running
        statistics from the batch statistics of the last training forward over `rows`
        rows (0: a process that ran no rows of this step; they are left alone), and the
        optimizer update. Composed of `_sum_squares`, `_scale` and `_commit` on every
        backend."""
        if bufs.plan is not plan:
            _same_layout(plan, bufs)
        rows = int(rows)
        if not 0 <= rows <= bufs.capacity:
            raise ValueError(f"rows must be in [0, {bufs.capacity}] (the workspace's rows), "
                             f"got {rows}")
        self._opt(plan, opt)
        gnorm = math.sqrt(self._sum_squares(bufs.grads))
        if not math.isfinite(gnorm):
            return gnorm
        clip_norm = float(clip_norm)
        if clip_norm > 0 and gnorm > clip_norm:
            self._scale(bufs.grads, clip_norm / (gnorm + 1e-6))  # torch clip_grad_norm_
        self._commit(plan, bufs, opt, rows)
        return gnorm

    # ============================================================ engine methods
    # Every kernel is `_<name>` with the public signature, on checked arguments; an
    # engine implements them all.
    def _matmul_forward(self, out, inp, weight, bias):
        raise NotImplementedError

    def _matmul_backward(self, dinp, dweight, dbias, dout, inp, weight):
        raise NotImplementedError

    def _activation_forward(self, kind, out, inp):
        raise NotImplementedError

    def _activation_backward(self, kind, dinp, dout, inp, out):
        raise NotImplementedError

    def _loss_forward_backward(self, kind, dpred, pred, target, weight, delta) -> float:
        raise NotImplementedError

    def _batchnorm_forward(self, out, mean, var, rstd, inp, gamma, beta, running_mean,
                           running_var, training, eps):
        raise NotImplementedError

    def _batchnorm_backward(self, dinp, dgamma, dbeta, dout, inp, mean, rstd, gamma):
        raise NotImplementedError

    def _batchnorm_update_running(self, running_mean, running_var, mean, var, rows,
                                  momentum):
        raise NotImplementedError

    def _dropout_forward(self, out, mask, inp, p, seed):
        raise NotImplementedError

    def _dropout_backward(self, dinp, dout, mask):
        raise NotImplementedError

    def _sgd_update(self, params, grads, buf, hyper, step):
        raise NotImplementedError

    def _adam_update(self, params, grads, m, v, hyper, step):
        raise NotImplementedError

    def _rmsprop_update(self, params, grads, square_avg, momentum_buffer, grad_avg, hyper,
                        step):
        raise NotImplementedError

    def _adagrad_update(self, params, grads, state_sum, hyper, step):
        raise NotImplementedError

    def _sum_squares(self, x) -> float:
        raise NotImplementedError

    def _scale(self, x, factor):
        raise NotImplementedError

    # ------------------------------------------------------------ the Python plan driver
    # Composed of the engine's kernels; a compiled engine overrides these four.
    def _forward(self, plan: Plan, bufs: Buffers, x, training: bool, seed: int):
        rows = x.shape[0]
        views = _layer_views(plan, bufs)
        inp = x
        for i, L in enumerate(plan.layers):
            out = bufs.out(i, rows)
            p, _, s = views[i]
            if L.kind == Layer.DENSE:
                self._matmul_forward(out, inp, p["W"], p["b"])
            elif L.kind == Layer.ACTIVATION:
                self._activation_forward(int(L.activation), out, inp)
            elif L.kind == Layer.BATCHNORM:
                c = bufs.cache_of(i, rows)
                self._batchnorm_forward(out, c["mean"], c["var"], c["rstd"], inp, p["gamma"],
                                        p["beta"], s["running_mean"], s["running_var"],
                                        training, L.eps)
            elif L.kind == Layer.DROPOUT:
                if training and L.p > 0:
                    self._dropout_forward(out, bufs.cache_of(i, rows)["mask"], inp, L.p,
                                          layer_seed(seed, i))
                else:
                    out[...] = inp
            inp = out
        return inp

    def _backward(self, plan: Plan, bufs: Buffers, x) -> None:
        """Backpropagate the gradient already in dout(last) down to every parameter."""
        rows = x.shape[0]
        views = _layer_views(plan, bufs)
        for i in range(len(plan.layers) - 1, -1, -1):
            L = plan.layers[i]
            p, g, _ = views[i]
            dout = bufs.dout(i, rows)
            inp = x if i == 0 else bufs.out(i - 1, rows)
            dinp = None if i == 0 else bufs.dout(i - 1, rows)
            if L.kind == Layer.DENSE:
                self._matmul_backward(dinp, g["W"], g["b"], dout, inp, p["W"])
            elif dinp is None and L.kind != Layer.BATCHNORM:
                continue  # nothing below to receive the gradient
            elif L.kind == Layer.ACTIVATION:
                self._activation_backward(int(L.activation), dinp, dout, inp,
                                          bufs.out(i, rows))
            elif L.kind == Layer.BATCHNORM:
                c = bufs.cache_of(i, rows)
                self._batchnorm_backward(dinp, g["gamma"], g["beta"], dout, inp, c["mean"],
                                         c["rstd"], p["gamma"])
            elif L.kind == Layer.DROPOUT:
                if L.p > 0:
                    self._dropout_backward(dinp, dout, bufs.cache_of(i, rows)["mask"])
                else:
                    dinp[...] = dout

    def _gradients(self, plan: Plan, bufs: Buffers, x, y, seed: int, weight=None) -> float:
        rows = x.shape[0]
        pred = self._forward(plan, bufs, x, True, seed)
        dpred = bufs.dout(len(plan.layers) - 1, rows)
        require_elements("the loss", dpred)
        loss = self._loss_forward_backward(int(plan.loss_code), dpred, pred, y, weight,
                                           plan.delta)
        self._backward(plan, bufs, x)
        return loss

    def _commit(self, plan: Plan, bufs: Buffers, opt: Optimizer, rows: int) -> None:
        """Apply an accepted step: running statistics, then the optimizer update."""
        views = _layer_views(plan, bufs)
        for i, L in enumerate(plan.layers):
            if L.kind == Layer.BATCHNORM and rows > 0:  # rows 0: see apply_gradients
                s, c = views[i][2], bufs.cache_of(i, rows)
                self._batchnorm_update_running(s["running_mean"], s["running_var"], c["mean"],
                                               c["var"], rows, L.momentum)
        opt.step[0] += 1
        step = int(opt.step[0])
        if opt.kind == Opt.SGD:
            self._sgd_update(bufs.params, bufs.grads, opt.buf1, opt.hyper, step)
        elif opt.kind == Opt.ADAM:
            self._adam_update(bufs.params, bufs.grads, opt.buf1, opt.buf2, opt.hyper, step)
        elif opt.kind == Opt.RMSPROP:  # unused buffers are empty: passed as None
            self._rmsprop_update(bufs.params, bufs.grads, opt.buf1, opt.buf2 if opt.buf2.size
                                 else None, opt.buf3 if opt.buf3.size else None, opt.hyper,
                                 step)
        else:
            self._adagrad_update(bufs.params, bufs.grads, opt.buf1, opt.hyper, step)

    def _train_step(self, plan: Plan, bufs: Buffers, x, y, opt: Optimizer, seed: int,
                    clip_norm: float, weight=None) -> tuple[float, float]:
        loss = self._gradients(plan, bufs, x, y, seed, weight)
        gnorm = math.sqrt(self._sum_squares(bufs.grads))
        if not (math.isfinite(loss) and math.isfinite(gnorm)):
            return loss, gnorm
        if weight is not None and not weight.sum(dtype=np.float64) > 0:
            return loss, gnorm  # weights summing to 0: nothing to learn, no update
        if clip_norm > 0 and gnorm > clip_norm:
            self._scale(bufs.grads, clip_norm / (gnorm + 1e-6))  # torch clip_grad_norm_
        self._commit(plan, bufs, opt, x.shape[0])
        return loss, gnorm

    def _train_epoch(self, plan: Plan, bufs: Buffers, X, Y, perm, batch_size: int,
                     opt: Optimizer, seeds, clip_norm: float, losses, gnorms, lrs=None,
                     weights=None) -> int:
        n = perm.shape[0]
        n_batches = (n + batch_size - 1) // batch_size
        lr = opt.hyper[Hyper.LR]
        try:
            for k in range(n_batches):
                idx = perm[k * batch_size : (k + 1) * batch_size]
                if lrs is not None:  # this step's rate; the constant is put back below
                    opt.hyper[Hyper.LR] = lrs[k]
                loss, gnorm = self._train_step(plan, bufs, X[idx], Y[idx], opt,
                                               int(seeds[k]), clip_norm,
                                               None if weights is None else weights[idx])
                losses[k], gnorms[k] = loss, gnorm
                if not (math.isfinite(loss) and math.isfinite(gnorm)):
                    return k
        finally:
            opt.hyper[Hyper.LR] = lr
        return n_batches


def _floats(a, dtype, name: str) -> np.ndarray:
    """Array-like data as a C-contiguous array of dtype (ints and other floats converted)."""
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name} has dtype {a.dtype}; expected numbers")
    return np.ascontiguousarray(a, dtype=dtype)


def _same_layout(plan: Plan, bufs: Buffers) -> None:
    """Buffers made for another Plan object are accepted only when it lays out the same."""
    other = bufs.plan
    if (other.dtype != plan.dtype or other.ops.shape != plan.ops.shape
            or not np.array_equal(other.ops, plan.ops)
            or not np.array_equal(other.fargs, plan.fargs)
            or other.loss_code != plan.loss_code or other.delta != plan.delta):
        raise ValueError(f"the buffers were allocated for another plan "
                         f"({other.describe()}), not {plan.describe()}")
