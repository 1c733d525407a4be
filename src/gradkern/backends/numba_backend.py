"""The Numba backend: every kernel of the contract jitted, and fused step/epoch drivers.

Each kernel is an `@njit` function with the argument order of the NumPy reference
(outputs first, then inputs, then options); one function serves float32 and float64.
The drivers walk `plan.ops` / `plan.fargs` and the flat `Buffers` arrays inside one
jitted call, so a training step (forward, loss, backward, gradient norm, finiteness
check, clipping, batchnorm commit, optimizer update) costs one Python call, and an
epoch of minibatches costs one too.

Legend: B = batch rows, C = input features of a layer, OC = output features, N = width.

Matrix products: `np.dot` inside jitted code (BLAS, the OpenBLAS that scipy ships) at
every size. Measured with benchmarks/numba_matmul_bench.py, float32, batch 64, square
layers, 2 threads, µs per call (numba loops: the best of plain, 4-row blocked and
prange-blocked loops; BLAS: np.dot in njit):

    width   forward (loops / BLAS)   dinp = dout @ W.T     dW = inp.T @ dout
       16        2.0 / 0.6              1.2 / 0.9            1.5 / 0.6
       64        9.4 / 4.8              8.6 / 6.9           10.4 / 4.9
      256      128   / 55              79   / 56            97   / 54
     1024     3121   / 850           1008   / 1060        3327   / 824

BLAS wins or ties at every size, so there is no crossover to tune; numba's loops fall
back to scalar code on short rows and lose to OpenBLAS's packed kernels on long ones.
BLAS is never called inside a `prange`.

Threads: within a step the parallel work is BLAS's (OpenBLAS pthreads, sized by
gk.set_threads through threadpoolctl). The flat-buffer passes (optimizer update, gradient
norm) can also run as a prange over fixed chunks (`par_min`), but on this 2-core machine
that made steps slower: OpenBLAS's workers spin after each product and numba's OpenMP
workers after each prange, so alternating the two pools oversubscribes the cores. At
width 256, depth 4, batch 64 a step took 10.9 ms with the prange passes against 2.9 ms
for the numpy backend in the same run; benchmarks/numba_par_bench.py (interleaved A/B
runs) found the serial passes as fast or faster in 5 of 6 cells. Those runs were on a
shared, loaded machine; re-measure there before changing this. So by default the passes
run on the calling thread (PAR_MIN = 2**62); the prange path stays, tested bit-identical
to the serial one, for machines with more cores.

fastmath is limited to {'reassoc', 'contract'} and only on the float64 sum of squares,
where it lets the reduction vectorize; never on softmax, exp, log, erf or loss code, and
never 'nnan'/'ninf', which would let the compiler drop the finiteness check.
"""

from __future__ import annotations

import enum
import hashlib
import math
import time
import types
import warnings

import numpy as np

try:
    import numba
    from numba import njit, prange
except ImportError as exc:  # the registry reports this message as the reason
    raise ImportError(
        f"the numba backend needs the 'numba' package, which cannot be imported here ({exc}); "
        "install it with `pip install numba`, or use backend='numpy'"
    ) from exc

try:  # numba's np.dot calls the BLAS that scipy ships
    import scipy.linalg.cython_blas  # noqa: F401
except ImportError as exc:
    raise ImportError(
        f"the numba backend calls BLAS through scipy, which cannot be imported here ({exc}); "
        "install it with `pip install scipy`"
    ) from exc

from ..contract import GOLDEN, LAYER_MIX, LEAKY_SLOPE, Act, Fargs, Hyper, Layer, Loss, Ops, Opt
from ..optim import Optimizer
from ..plan import Buffers, Plan
from .base import Backend

# The on-disk cache is keyed by signature and source, not by compile flags: code cached
# without bounds checks would be reused under NUMBA_BOUNDSCHECK=1. So that run compiles.
CACHE = not numba.config.BOUNDSCHECK

# ---- the disk cache, guarded ----------------------------------------------------------
# Every cached function of this module goes through _GuardedCache (installed by
# _guard_caches below, before any of them runs). It fixes three ways a cache filled by
# earlier processes could crash or mislead a later one:
#
# 1. numba loses the parallel backend's re-initialisation across cache generations
#    (numba issues #8578, #4807, still open in 0.68). An entry compiled with a prange
#    records `_reload_parfors` (start the threading layer, which defines the symbols
#    such as numba_parallel_for that its code links against) and runs it when loaded.
#    Its callers inherit that only from a callee compiled in the same process: a
#    callee loaded from the disk cache has an empty library._reload_init. So a caller
#    compiled after its parallel callee was cached (sgd_update compiled in one process
#    over _sgd / _sgd_par cached by an earlier `gradkern train`) is saved without it,
#    and the next process that loads that caller first calls into the threading layer
#    through a null address on entry: SIGSEGV, though the prange is never reached
#    (par_min is 2**62). The literal `par_min` of the kernels (a second signature of
#    _sgd, _adam, _sum_squares) only made such late compiles likelier; every call site
#    now passes int64. The fix: the threading layer is started before any entry is
#    loaded (a few ms, once per process), which is all `_reload_parfors` does.
# 2. numba keys an entry by signature, this file's source stamp and the function's
#    bytecode, not by the globals it freezes in as constants. The plan columns, layer,
#    activation, loss and optimizer codes and the hash constants come from contract.py:
#    an edit there would reuse code indexing the old layout. The key also holds the
#    values of every constant a function (and every jitted function it calls) reads,
#    every member of an enum it names (`Ops.KIND` reads `Ops`) included.
# 3. An index or data file that cannot be read (truncated, or not a pickle) is a cache
#    miss with a warning: the function compiles again and the entry is rewritten.
#    Files of another numba version are already ignored by numba itself.


class CacheWarning(RuntimeWarning):
    """The numba disk cache could not be read or written; the function was compiled."""


def _start_threading_layer() -> None:
    """Load numba's threading layer (what `_reload_parfors` would do), once per process."""
    numba.get_num_threads()  # calls numba.np.ufunc.parallel._launch_threads()


_CONST_TYPES = (bool, int, float, complex, str, bytes, np.number, np.bool_, tuple, frozenset)


def _constants_key(py_func, seen: set | None = None) -> str:
    """A hash of the values of the global constants py_func reads, and those of the
    jitted functions it calls, transitively (their code is linked into its entry)."""
    seen = set() if seen is None else seen
    seen.add(id(py_func))
    names: set[str] = set()
    codes = [py_func.__code__]
    while codes:
        code = codes.pop()
        names.update(code.co_names)
        codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    g = py_func.__globals__
    parts = []
    for name in sorted(names):
        if name not in g:
            continue
        value = g[name]
        if isinstance(value, _CONST_TYPES):
            parts.append(f"{name}={value!r}")
        elif isinstance(value, type) and issubclass(value, enum.Enum):  # Ops.KIND, Act.RELU
            parts.append(f"{name}={[(m.name, m.value) for m in value]!r}")
        elif isinstance(getattr(value, "py_func", None), types.FunctionType):
            callee = value.py_func
            if id(callee) not in seen:
                parts.append(f"{name}->{_constants_key(callee, seen)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


try:
    from numba.core.caching import FunctionCache
except ImportError:  # a numba whose cache classes moved: plain caching, threads up front
    FunctionCache = None
    _start_threading_layer()
else:

    class _GuardedCache(FunctionCache):
        """numba's FunctionCache with the three guards above."""

        def __init__(self, py_func):
            super().__init__(py_func)
            self._constants = None  # computed on first use, when the module is complete

        def _index_key(self, sig, codegen):
            if self._constants is None:
                self._constants = _constants_key(self._py_func)
            return (*super()._index_key(sig, codegen), self._constants)

        def load_overload(self, sig, target_context):
            _start_threading_layer()
            try:
                return super().load_overload(sig, target_context)
            except Exception as exc:  # unreadable entry: compile instead
                self._warn("read", exc)
                return None

        def save_overload(self, sig, data):
            try:
                super().save_overload(sig, data)
            except Exception:
                try:  # an unreadable index blocks every save: start it afresh
                    self._cache_file.flush()
                    super().save_overload(sig, data)
                except Exception as exc:
                    self._warn("write", exc)

        def _warn(self, what, exc):
            warnings.warn(f"numba disk cache: could not {what} the entry of "
                          f"{self._py_func.__qualname__} in {self._cache_path} "
                          f"({type(exc).__name__}: {exc}); compiled in this process instead",
                          CacheWarning, stacklevel=2)


def _guard_caches(namespace: dict) -> int:
    """Give every disk-cached dispatcher in namespace a _GuardedCache; returns how many."""
    if FunctionCache is None:
        return 0
    n = 0
    for obj in namespace.values():
        cache = getattr(obj, "_cache", None)
        if type(cache) is FunctionCache:
            obj._cache = _GuardedCache(obj.py_func)
            n += 1
    return n

_GOLDEN = np.uint64(GOLDEN)
_LAYER_MIX = np.uint64(LAYER_MIX)
_INV_2_53 = 1.0 / 9007199254740992.0
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_N_ACT = len(Act)  # codes are 0 .. _N_ACT - 1
_FM = {"reassoc", "contract"}  # reductions only: no 'nnan'/'ninf', NaN must survive

# Flat-buffer passes (optimizer, sum of squares) of at least this many elements run as a
# prange; by default never, see the module docstring for why. NumbaBackend.par_min
# overrides it at run time (no recompilation).
PAR_MIN = 1 << 62
# The sum of squares adds fixed chunks in a fixed order, whatever the thread count, so
# the gradient norm is bit-identical on repeat and between the serial and parallel paths.
CHUNK = 1 << 14



# ============================================================================ kernels
# ---- dense layer: forward and backward --------------------------------------------


@njit(cache=CACHE)
def matmul_forward(out, inp, weight, bias):
    # out (B, OC) = inp (B, C) @ weight (C, OC) + bias (OC)
    np.dot(inp, weight, out)
    rows, oc = out.shape
    for i in range(rows):
        for j in range(oc):
            out[i, j] += bias[j]


@njit(cache=CACHE)
def matmul_backward(dinp, dweight, dbias, dout, inp, weight, need_dinp):
    # dinp (B, C) = dout (B, OC) @ weight.T, skipped unless need_dinp (layer 0);
    # dweight (C, OC) = inp.T @ dout; dbias (OC) = Σ_rows dout, rows added in order
    if need_dinp:
        np.dot(dout, weight.T, dinp)
    np.dot(inp.T, dout, dweight)
    rows, oc = dout.shape
    for j in range(oc):
        dbias[j] = 0
    for i in range(rows):
        for j in range(oc):
            dbias[j] += dout[i, j]


# ---- activations --------------------------------------------------------------------


@njit(cache=CACHE)
def activation_forward(kind, out, inp):
    # out (B, N) = act(inp); kind is an Act
    rows, n = inp.shape
    T = out.dtype.type
    zero, one, half = T(0.0), T(1.0), T(0.5)
    slope, sqrt_half = T(LEAKY_SLOPE), T(_SQRT_HALF)
    if kind < 0 or kind >= _N_ACT:
        raise ValueError("unknown activation code")
    for i in range(rows):
        for j in range(n):
            x = inp[i, j]
            if kind == Act.IDENTITY:
                y = x
            elif kind == Act.RELU:  # relu; NaN passes through as in np.maximum
                y = zero if x < zero else x
            elif kind == Act.LEAKY_RELU:  # leaky_relu
                y = x * (one if x > zero else slope)
            elif kind == Act.SIGMOID:  # sigmoid
                e = np.exp(-np.abs(x))
                y = (one if x >= zero else e) / (one + e)
            elif kind == Act.TANH:
                y = np.tanh(x)
            elif kind == Act.GELU:  # erf form: x/2 (1 + erf(x/√2))
                y = (half * x) * (one + T(math.erf(x * sqrt_half)))
            else:  # silu: x σ(x)
                e = np.exp(-np.abs(x))
                y = x * ((one if x >= zero else e) / (one + e))
            out[i, j] = y


@njit(cache=CACHE)
def activation_backward(kind, dinp, dout, inp, out):
    # dinp (B, N) = dout * act'(inp); out = act(inp) (sigmoid and tanh use it)
    rows, n = inp.shape
    T = dinp.dtype.type
    zero, one, half = T(0.0), T(1.0), T(0.5)
    slope, sqrt_half, inv_sqrt_2pi = T(LEAKY_SLOPE), T(_SQRT_HALF), T(_INV_SQRT_2PI)
    if kind < 0 or kind >= _N_ACT:
        raise ValueError("unknown activation code")
    for i in range(rows):
        for j in range(n):
            d = dout[i, j]
            if kind == Act.IDENTITY:
                g = d
            elif kind == Act.RELU:
                g = d * (one if inp[i, j] > zero else zero)
            elif kind == Act.LEAKY_RELU:
                g = d * (one if inp[i, j] > zero else slope)
            elif kind == Act.SIGMOID:  # σ' = σ (1 - σ)
                s = out[i, j]
                g = d * (s * (one - s))
            elif kind == Act.TANH:  # tanh' = 1 - tanh²
                t = out[i, j]
                g = d * (one - t * t)
            elif kind == Act.GELU:  # gelu' = Φ(x) + x φ(x)
                x = inp[i, j]
                cdf = half * (one + T(math.erf(x * sqrt_half)))
                pdf = np.exp(-half * x * x) * inv_sqrt_2pi
                g = d * (cdf + x * pdf)
            else:  # silu' = σ(x) (1 + x (1 - σ(x)))
                x = inp[i, j]
                e = np.exp(-np.abs(x))
                s = (one if x >= zero else e) / (one + e)
                g = d * (s * (one + x * (one - s)))
            dinp[i, j] = g


# ---- losses -------------------------------------------------------------------------


@njit(cache=CACHE)
def loss_forward_backward(kind, dpred, pred, target, labels, weight, delta):
    # pred, dpred (B, K). The regression losses and binary_cross_entropy read target
    # (B, K); cross_entropy reads labels (B,) int64 in [0, K). The other one may be empty.
    # weight (B,) per-row sample weights, or empty: unweighted. delta: huber's.
    # Returns the (weighted) mean loss, summed in float64.
    if weight.shape[0] > 0:
        return _loss_weighted(kind, dpred, pred, target, labels, weight, delta)
    return _loss_mean(kind, dpred, pred, target, labels, delta)


@njit(cache=CACHE)
def _loss_weighted(kind, dpred, pred, target, labels, weight, delta):
    # Σ w_i l_i / Σ w_i over the rows (l_i: the row's mean over K, or its NLL);
    # dpred = w_i / Σw · d l_i / d pred. Weights summing to 0: loss 0, dpred 0.
    rows, k = pred.shape
    T = dpred.dtype.type
    one = T(1.0)
    wsum = 0.0
    for i in range(rows):
        wsum += np.float64(weight[i])
    if not wsum > 0:
        for i in range(rows):
            for j in range(k):
                dpred[i, j] = T(0.0)
        return 0.0
    total = 0.0
    for i in range(rows):
        w = np.float64(weight[i])
        row = 0.0
        if kind == Loss.CROSS_ENTROPY:
            c = labels[i]
            if c < 0 or c >= k:
                raise ValueError("cross_entropy label out of range [0, K)")
            m = pred[i, 0]
            for j in range(1, k):
                if pred[i, j] > m or pred[i, j] != pred[i, j]:
                    m = pred[i, j]
            s = 0.0
            for j in range(k):
                e = np.exp(pred[i, j] - m)
                dpred[i, j] = e
                s += np.float64(e)
            row = math.log(s) - np.float64(pred[i, c] - m)
            st = T(s)
            f = T(w / wsum)
            for j in range(k):
                g = dpred[i, j] / st
                if j == c:
                    g -= one
                dpred[i, j] = g * f
        elif kind == Loss.MSE:
            f = T(2.0 * w / (wsum * k))
            for j in range(k):
                d = pred[i, j] - target[i, j]
                row += np.float64(d) * np.float64(d)
                dpred[i, j] = d * f
            row /= k
        elif kind == Loss.BINARY_CROSS_ENTROPY:
            f = T(w / (wsum * k))
            for j in range(k):
                z = pred[i, j]
                t = target[i, j]
                z64 = np.float64(z)
                row += max(z64, 0.0) - z64 * np.float64(t) + math.log1p(math.exp(-abs(z64)))
                e = np.exp(-np.abs(z))
                s = (one if z >= 0 else e) / (one + e)
                dpred[i, j] = (s - t) * f
            row /= k
        elif kind == Loss.L1 or kind == Loss.HUBER:
            f = T(w / (wsum * k))
            for j in range(k):
                d = pred[i, j] - target[i, j]
                row += _robust1(kind, d, delta)
                dpred[i, j] = _drobust1(kind, d, T(delta), one) * f
            row /= k
        else:
            raise ValueError("unknown loss code")
        total += w * row
    return total / wsum


@njit(cache=CACHE)
def _loss_mean(kind, dpred, pred, target, labels, delta):
    # the unweighted mean (over all elements, or over the rows for cross_entropy)
    rows, k = pred.shape
    T = dpred.dtype.type
    one = T(1.0)
    total = 0.0
    if kind == Loss.MSE:  # mean over all elements
        factor = T(2.0 / (rows * k))
        for i in range(rows):
            for j in range(k):
                d = pred[i, j] - target[i, j]
                total += np.float64(d) * np.float64(d)
                dpred[i, j] = d * factor
        return total / (rows * k)
    if kind == Loss.CROSS_ENTROPY:  # softmax + NLL of integer labels, mean over rows
        factor = T(1.0 / rows)
        for i in range(rows):
            c = labels[i]
            if c < 0 or c >= k:
                raise ValueError("cross_entropy label out of range [0, K)")
            m = pred[i, 0]
            for j in range(1, k):
                if pred[i, j] > m or pred[i, j] != pred[i, j]:
                    m = pred[i, j]
            s = 0.0
            for j in range(k):
                e = np.exp(pred[i, j] - m)
                dpred[i, j] = e
                s += np.float64(e)
            total += math.log(s) - np.float64(pred[i, c] - m)
            st = T(s)
            for j in range(k):  # softmax, minus the one-hot, over the rows: one pass
                g = dpred[i, j] / st
                if j == c:
                    g -= one
                dpred[i, j] = g * factor
        return total / rows
    if kind == Loss.BINARY_CROSS_ENTROPY:  # from logits z: max(z,0) - z y + log1p(e^-|z|)
        factor = T(1.0 / (rows * k))
        for i in range(rows):
            for j in range(k):
                z = pred[i, j]
                t = target[i, j]
                z64 = np.float64(z)
                total += max(z64, 0.0) - z64 * np.float64(t) + math.log1p(math.exp(-abs(z64)))
                e = np.exp(-np.abs(z))
                s = (one if z >= 0 else e) / (one + e)
                dpred[i, j] = (s - t) * factor
        return total / (rows * k)
    if kind == Loss.L1 or kind == Loss.HUBER:  # mean over all elements
        factor = T(1.0 / (rows * k))
        for i in range(rows):
            for j in range(k):
                d = pred[i, j] - target[i, j]
                total += _robust1(kind, d, delta)
                dpred[i, j] = _drobust1(kind, d, T(delta), one) * factor
        return total / (rows * k)
    raise ValueError("unknown loss code")


@njit(cache=CACHE)
def _robust1(kind, d, delta):
    # the l1 / huber loss of one difference d, in float64 (NaN takes huber's linear branch)
    a = abs(np.float64(d))
    if kind == Loss.L1:
        return a
    return 0.5 * a * a if a < delta else delta * (a - 0.5 * delta)


@njit(cache=CACHE)
def _drobust1(kind, d, dl, one):
    # its gradient, in d's dtype (dl = delta and one of that dtype): l1 sign(d) (0 at 0,
    # NaN stays NaN); huber d clipped to [-delta, delta] (NaN stays NaN)
    if kind == Loss.L1:
        return one if d > 0 else (-one if d < 0 else d * (one - one))
    return dl if d > dl else (-dl if d < -dl else d)


# ---- batch normalization --------------------------------------------------------------


@njit(cache=CACHE)
def batchnorm_forward(out, mean, var, rstd, inp, gamma, beta, running_mean, running_var,
                      training, eps):
    # out, inp (B, N); mean, var, rstd, gamma, beta, running stats (N,)
    rows, n = inp.shape
    T = out.dtype.type
    eps_t = T(eps)
    one = T(1.0)
    if training:
        # column sums row by row, as np.mean(axis=0) adds them; biased variance
        for j in range(n):
            mean[j] = 0
            var[j] = 0
        for i in range(rows):
            for j in range(n):
                mean[j] += inp[i, j]
        for j in range(n):
            mean[j] = mean[j] / T(rows)
        for i in range(rows):
            for j in range(n):
                d = inp[i, j] - mean[j]
                out[i, j] = d
                var[j] += d * d
        for j in range(n):
            var[j] = var[j] / T(rows)
            rstd[j] = one / np.sqrt(var[j] + eps_t)
        for i in range(rows):
            for j in range(n):
                out[i, j] = out[i, j] * rstd[j] * gamma[j] + beta[j]
    else:
        for i in range(rows):
            for j in range(n):
                y = (inp[i, j] - running_mean[j]) / np.sqrt(running_var[j] + eps_t)
                out[i, j] = y * gamma[j] + beta[j]


@njit(cache=CACHE)
def batchnorm_backward(dinp, dgamma, dbeta, dout, inp, mean, rstd, gamma, need_dinp):
    # gradients of training-mode batchnorm; dinp (B, N) skipped unless need_dinp
    # dx = rstd/B · (B·dxhat − Σ dxhat − xhat · Σ dxhat·xhat), dxhat = dout·gamma,
    # where Σ dxhat = gamma·dbeta and Σ dxhat·xhat = gamma·dgamma
    rows, n = inp.shape
    T = dout.dtype.type
    for j in range(n):
        dbeta[j] = 0
        dgamma[j] = 0
    for i in range(rows):
        for j in range(n):
            d = dout[i, j]
            dbeta[j] += d
            dgamma[j] += d * ((inp[i, j] - mean[j]) * rstd[j])
    if need_dinp:
        b = T(rows)
        for i in range(rows):
            for j in range(n):
                xhat = (inp[i, j] - mean[j]) * rstd[j]
                g = dout[i, j] * gamma[j] * b - gamma[j] * dbeta[j] - xhat * (gamma[j] * dgamma[j])
                dinp[i, j] = g * (rstd[j] / b)


@njit(cache=CACHE)
def batchnorm_update_running(running_mean, running_var, mean, var, rows, momentum):
    # running = (1 - momentum) running + momentum batch; the variance made unbiased
    T = running_mean.dtype.type
    keep, mom = T(1.0 - momentum), T(momentum)
    unbias = T(rows / (rows - 1)) if rows > 1 else T(1.0)
    for j in range(running_mean.shape[0]):
        running_mean[j] = running_mean[j] * keep + mom * mean[j]
        running_var[j] = running_var[j] * keep + mom * (var[j] * unbias)


# ---- dropout --------------------------------------------------------------------------


@njit(cache=CACHE)
def _splitmix64(x):
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=CACHE)
def dropout_forward(out, mask, inp, p, seed):
    # out, mask, inp (B, N). Element e (row-major) is kept when the top 53 bits of
    # splitmix64(seed + (e+1)·GOLDEN), as a fraction, are >= p; mask = 0 or 1/(1-p)
    rows, n = inp.shape
    T = out.dtype.type
    keep, zero = T(1.0 / (1.0 - p)), T(0.0)
    s = np.uint64(seed)
    e = np.uint64(0)
    for i in range(rows):
        for j in range(n):
            e += np.uint64(1)
            h = _splitmix64(s + e * _GOLDEN)
            u = np.float64(h >> np.uint64(11)) * _INV_2_53
            m = keep if u >= p else zero
            mask[i, j] = m
            out[i, j] = inp[i, j] * m


@njit(cache=CACHE)
def dropout_backward(dinp, dout, mask):
    # dinp (B, N) = dout * mask
    rows, n = dout.shape
    for i in range(rows):
        for j in range(n):
            dinp[i, j] = dout[i, j] * mask[i, j]


# ---- optimizers on flat buffers ---------------------------------------------------------
# Each update is elementwise, so a parallel pass over row ranges gives the same bits as
# a serial one. The expression order follows the NumPy reference, rounding included.
# _ELEMENTWISE: a pass over [lo, hi) slices its arrays first and indexes them from 0. With
# `for e in range(lo, hi)` LLVM cannot prove e >= 0, keeps numba's negative-index
# wraparound on every access, and does not vectorize (4x slower SGD, 13x slower sum of
# squares, 4.2M float32). The divisions of Adam, RMSprop and Adagrad compile with
# error_model="numpy": numba's default ("python") tests every divisor for zero to raise
# ZeroDivisionError, which also stops vectorization (Adam 7x slower); with it x/0 is IEEE
# inf/NaN, as in the NumPy reference (and a NaN step is then refused by the norm check).


@njit(cache=CACHE)
def _sgd_range(params, grads, buf, hyper, step, lo, hi):
    params, grads = params[lo:hi], grads[lo:hi]  # indices from 0: see _ELEMENTWISE
    if buf.shape[0] > 0:
        buf = buf[lo:hi]
    T = params.dtype.type
    lr, momentum = hyper[Hyper.LR], hyper[Hyper.MOMENTUM]
    dampening, wd = hyper[Hyper.DAMPENING], hyper[Hyper.WEIGHT_DECAY]
    nesterov = hyper[Hyper.NESTEROV] != 0.0
    lr_t, mom_t, damp_t, wd_t = T(lr), T(momentum), T(1.0 - dampening), T(wd)
    for e in range(params.shape[0]):
        g = grads[e]
        if wd != 0.0:
            g = g + wd_t * params[e]
        if momentum != 0.0:
            if step == 1:
                b = g
            else:
                b = buf[e] * mom_t + damp_t * g
            buf[e] = b
            g = g + mom_t * b if nesterov else b
        params[e] = params[e] - lr_t * g


@njit(cache=CACHE, error_model="numpy")
def _adam_range(params, grads, m, v, hyper, step, lo, hi):
    params, grads, m, v = params[lo:hi], grads[lo:hi], m[lo:hi], v[lo:hi]
    T = params.dtype.type
    lr, beta1, beta2 = hyper[Hyper.LR], hyper[Hyper.BETA1], hyper[Hyper.BETA2]
    eps, wd = hyper[Hyper.EPS], hyper[Hyper.WEIGHT_DECAY]
    decoupled = hyper[Hyper.DECOUPLED] != 0.0
    bc1 = 1.0 - math.pow(beta1, float(step))
    bc2 = 1.0 - math.pow(beta2, float(step))
    b1, c1, b2, c2 = T(beta1), T(1.0 - beta1), T(beta2), T(1.0 - beta2)
    decay, wd_t = T(1.0 - lr * wd), T(wd)
    sqrt_bc2, eps_t, step_size = T(math.sqrt(bc2)), T(eps), T(lr / bc1)
    for e in range(params.shape[0]):
        g = grads[e]
        if wd != 0.0:
            if decoupled:
                params[e] = params[e] * decay
            else:
                g = g + wd_t * params[e]
        mm = m[e] * b1 + c1 * g
        vv = v[e] * b2 + c2 * (g * g)
        m[e] = mm
        v[e] = vv
        denom = np.sqrt(vv) / sqrt_bc2 + eps_t
        params[e] = params[e] - step_size * (mm / denom)


@njit(cache=CACHE, error_model="numpy")
def _rmsprop_range(params, grads, sq, mb, ga, hyper, step, lo, hi):
    params, grads, sq = params[lo:hi], grads[lo:hi], sq[lo:hi]
    if mb.shape[0] > 0:
        mb = mb[lo:hi]
    if ga.shape[0] > 0:
        ga = ga[lo:hi]
    T = params.dtype.type
    lr, alpha, eps = hyper[Hyper.LR], hyper[Hyper.ALPHA], hyper[Hyper.EPS]
    wd, momentum = hyper[Hyper.WEIGHT_DECAY], hyper[Hyper.MOMENTUM]
    centered = hyper[Hyper.CENTERED] != 0.0
    lr_t, a_t, c_t, eps_t = T(lr), T(alpha), T(1.0 - alpha), T(eps)
    wd_t, mom_t = T(wd), T(momentum)
    for e in range(params.shape[0]):
        g = grads[e]
        if wd != 0.0:
            g = g + wd_t * params[e]
        v = sq[e] * a_t + c_t * (g * g)
        sq[e] = v
        if centered:
            m = ga[e] + c_t * (g - ga[e])
            ga[e] = m
            avg = np.sqrt(v - m * m) + eps_t
        else:
            avg = np.sqrt(v) + eps_t
        if momentum > 0.0:
            b = mb[e] * mom_t + g / avg
            mb[e] = b
            params[e] = params[e] - lr_t * b
        else:
            params[e] = params[e] - lr_t * (g / avg)


@njit(cache=CACHE, error_model="numpy")
def _adagrad_range(params, grads, ssum, hyper, step, lo, hi):
    params, grads, ssum = params[lo:hi], grads[lo:hi], ssum[lo:hi]
    T = params.dtype.type
    lr, lr_decay = hyper[Hyper.LR], hyper[Hyper.LR_DECAY]
    eps, wd = hyper[Hyper.EPS], hyper[Hyper.WEIGHT_DECAY]
    clr_t = T(lr / (1.0 + (step - 1) * lr_decay))
    eps_t, wd_t = T(eps), T(wd)
    for e in range(params.shape[0]):
        g = grads[e]
        if wd != 0.0:
            g = g + wd_t * params[e]
        s = ssum[e] + g * g
        ssum[e] = s
        params[e] = params[e] - clr_t * (g / (np.sqrt(s) + eps_t))


@njit(cache=CACHE, parallel=True)
def _rmsprop_par(params, grads, sq, mb, ga, hyper, step):
    n = params.shape[0]
    nchunks = (n + CHUNK - 1) // CHUNK
    for c in prange(nchunks):
        _rmsprop_range(params, grads, sq, mb, ga, hyper, step, c * CHUNK,
                       min(n, (c + 1) * CHUNK))


@njit(cache=CACHE, parallel=True)
def _adagrad_par(params, grads, ssum, hyper, step):
    n = params.shape[0]
    nchunks = (n + CHUNK - 1) // CHUNK
    for c in prange(nchunks):
        _adagrad_range(params, grads, ssum, hyper, step, c * CHUNK, min(n, (c + 1) * CHUNK))


@njit(cache=CACHE)
def _rmsprop(params, grads, sq, mb, ga, hyper, step, par_min):
    n = params.shape[0]
    if sq.shape[0] != n or (hyper[Hyper.MOMENTUM] > 0.0 and mb.shape[0] != n) or (
            hyper[Hyper.CENTERED] != 0.0 and ga.shape[0] != n):
        raise ValueError("RMSprop needs state buffers as long as params")
    if n >= par_min:
        _rmsprop_par(params, grads, sq, mb, ga, hyper, step)
    else:
        _rmsprop_range(params, grads, sq, mb, ga, hyper, step, np.int64(0), n)


@njit(cache=CACHE)
def _adagrad(params, grads, ssum, hyper, step, par_min):
    n = params.shape[0]
    if ssum.shape[0] != n:
        raise ValueError("Adagrad needs a sum buffer as long as params")
    if n >= par_min:
        _adagrad_par(params, grads, ssum, hyper, step)
    else:
        _adagrad_range(params, grads, ssum, hyper, step, np.int64(0), n)


@njit(cache=CACHE, parallel=True)
def _sgd_par(params, grads, buf, hyper, step):
    n = params.shape[0]
    nchunks = (n + CHUNK - 1) // CHUNK
    for c in prange(nchunks):
        _sgd_range(params, grads, buf, hyper, step, c * CHUNK, min(n, (c + 1) * CHUNK))


@njit(cache=CACHE, parallel=True)
def _adam_par(params, grads, m, v, hyper, step):
    n = params.shape[0]
    nchunks = (n + CHUNK - 1) // CHUNK
    for c in prange(nchunks):
        _adam_range(params, grads, m, v, hyper, step, c * CHUNK, min(n, (c + 1) * CHUNK))


@njit(cache=CACHE)
def _sgd(params, grads, buf, hyper, step, par_min):
    n = params.shape[0]
    if hyper[Hyper.MOMENTUM] != 0.0 and buf.shape[0] != n:
        raise ValueError("SGD with momentum needs a momentum buffer as long as params")
    if n >= par_min:
        _sgd_par(params, grads, buf, hyper, step)
    else:
        _sgd_range(params, grads, buf, hyper, step, np.int64(0), n)


@njit(cache=CACHE)
def _adam(params, grads, m, v, hyper, step, par_min):
    n = params.shape[0]
    if m.shape[0] != n or v.shape[0] != n:
        raise ValueError("Adam needs moment buffers as long as params")
    if n >= par_min:
        _adam_par(params, grads, m, v, hyper, step)
    else:
        _adam_range(params, grads, m, v, hyper, step, np.int64(0), n)


@njit(cache=CACHE, fastmath=_FM)
def _chunk_sum_squares(x, lo, hi):
    y = x[lo:hi]  # indices from 0: see _ELEMENTWISE
    s = 0.0
    for e in range(y.shape[0]):
        f = np.float64(y[e])
        s += f * f
    return s


@njit(cache=CACHE, parallel=True)
def _partial_sums_par(parts, x):
    n = x.shape[0]
    for c in prange(parts.shape[0]):
        parts[c] = _chunk_sum_squares(x, c * CHUNK, min(n, (c + 1) * CHUNK))


@njit(cache=CACHE)
def _sum_squares(x, par_min):
    n = x.shape[0]
    nchunks = (n + CHUNK - 1) // CHUNK
    total = 0.0
    if n >= par_min:
        parts = np.empty(nchunks, np.float64)
        _partial_sums_par(parts, x)
        for c in range(nchunks):
            total += parts[c]
    else:
        for c in range(nchunks):
            total += _chunk_sum_squares(x, c * CHUNK, min(n, (c + 1) * CHUNK))
    return total


@njit(cache=CACHE)
def sgd_update(params, grads, buf, hyper, step):
    # torch.optim.SGD on flat buffers (n,); buf is the momentum buffer; step from 1
    _sgd(params, grads, buf, hyper, step, np.int64(PAR_MIN))


@njit(cache=CACHE)
def adam_update(params, grads, m, v, hyper, step):
    # torch.optim.Adam / AdamW (hyper decoupled) on flat buffers (n,); step from 1
    _adam(params, grads, m, v, hyper, step, np.int64(PAR_MIN))


@njit(cache=CACHE)
def rmsprop_update(params, grads, square_avg, momentum_buffer, grad_avg, hyper, step):
    # torch.optim.RMSprop on flat buffers (n,); the unused buffers may be empty; step from 1
    _rmsprop(params, grads, square_avg, momentum_buffer, grad_avg, hyper, step,
             np.int64(PAR_MIN))


@njit(cache=CACHE)
def adagrad_update(params, grads, state_sum, hyper, step):
    # torch.optim.Adagrad on flat buffers (n,); step from 1
    _adagrad(params, grads, state_sum, hyper, step, np.int64(PAR_MIN))


@njit(cache=CACHE)
def sum_squares(x):
    # Σ x² of a flat array (n,), in float64: chunks of CHUNK, added in chunk order
    return _sum_squares(x, np.int64(PAR_MIN))


@njit(cache=CACHE)
def scale(x, factor):
    # x (n,) *= factor, rounded to x's dtype first as the reference does
    f = x.dtype.type(factor)
    for e in range(x.shape[0]):
        x[e] *= f


# ============================================================================ drivers
# Every driver takes the plan table and the flat buffers; a layer's (rows, N) block is
# a reshaped slice at its offset, as Buffers.out / dout / cache_block give in Python.


@njit(cache=CACHE)
def _block(flat, off, rows, n):
    return flat[off : off + rows * n].reshape(rows, n)


@njit(cache=CACHE)
def _copy2d(dst, src):
    rows, n = src.shape
    for i in range(rows):
        for j in range(n):
            dst[i, j] = src[i, j]


@njit(cache=CACHE)
def _forward(ops, fargs, params, state, acts, cache, out_off, cache_off, x, training, seed):
    # x (B, C0) -> the last layer's block of acts; dropout seeded by seed (uint64)
    rows = x.shape[0]
    inp = x
    for i in range(ops.shape[0]):
        kind, n_in, n = ops[i, Ops.KIND], ops[i, Ops.IN], ops[i, Ops.OUT]
        out = _block(acts, out_off[i], rows, n)
        if kind == Layer.DENSE:
            W = _block(params, ops[i, Ops.PA], n_in, n)
            b = params[ops[i, Ops.PB] : ops[i, Ops.PB] + n]
            matmul_forward(out, inp, W, b)
        elif kind == Layer.ACTIVATION:
            activation_forward(ops[i, Ops.ACT], out, inp)
        elif kind == Layer.BATCHNORM:
            c = cache_off[i]
            pa, pb, sa, sb = ops[i, Ops.PA], ops[i, Ops.PB], ops[i, Ops.SA], ops[i, Ops.SB]
            batchnorm_forward(out, cache[c : c + n], cache[c + n : c + 2 * n],
                              cache[c + 2 * n : c + 3 * n], inp,
                              params[pa : pa + n], params[pb : pb + n],
                              state[sa : sa + n], state[sb : sb + n],
                              training, fargs[i, Fargs.EPS])
        elif kind == Layer.DROPOUT:
            p = fargs[i, Fargs.P]
            if training and p > 0:
                mask = _block(cache, cache_off[i], rows, n)
                layer_seed = seed + np.uint64(i + 1) * _LAYER_MIX
                dropout_forward(out, mask, inp, p, layer_seed)
            else:
                _copy2d(out, inp)
        else:
            raise ValueError("unknown layer kind")
        inp = out


@njit(cache=CACHE)
def _backward(ops, fargs, params, grads, acts, dacts, cache, out_off, cache_off, x):
    # the gradient already in the last block of dacts, down to every parameter
    rows = x.shape[0]
    for i in range(ops.shape[0] - 1, -1, -1):
        kind, n_in, n = ops[i, Ops.KIND], ops[i, Ops.IN], ops[i, Ops.OUT]
        dout = _block(dacts, out_off[i], rows, n)
        has_below = i > 0
        if has_below:
            inp = _block(acts, out_off[i - 1], rows, n_in)
            dinp = _block(dacts, out_off[i - 1], rows, n_in)
        else:
            inp = x
            dinp = x  # never written: need_dinp is False for layer 0
        if kind == Layer.DENSE:
            pa, pb = ops[i, Ops.PA], ops[i, Ops.PB]
            W = _block(params, pa, n_in, n)
            dW = _block(grads, pa, n_in, n)
            matmul_backward(dinp, dW, grads[pb : pb + n], dout, inp, W, has_below)
        elif kind == Layer.BATCHNORM:
            c = cache_off[i]
            pa, pb = ops[i, Ops.PA], ops[i, Ops.PB]
            batchnorm_backward(dinp, grads[pa : pa + n], grads[pb : pb + n], dout, inp,
                               cache[c : c + n], cache[c + 2 * n : c + 3 * n],
                               params[pa : pa + n], has_below)
        elif not has_below:
            continue  # nothing below to receive the gradient
        elif kind == Layer.ACTIVATION:
            out = _block(acts, out_off[i], rows, n)
            activation_backward(ops[i, Ops.ACT], dinp, dout, inp, out)
        elif kind == Layer.DROPOUT:
            if fargs[i, Fargs.P] > 0:
                dropout_backward(dinp, dout, _block(cache, cache_off[i], rows, n))
            else:
                _copy2d(dinp, dout)


@njit(cache=CACHE)
def _gradients(ops, fargs, loss_kind, params, grads, state, acts, dacts, cache, out_off,
               cache_off, x, target, labels, seed, weight, delta):
    # training-mode forward, loss (weight: per-row sample weights, or empty), backward;
    # returns the loss
    rows = x.shape[0]
    last = ops.shape[0] - 1
    k = ops[last, Ops.OUT]
    _forward(ops, fargs, params, state, acts, cache, out_off, cache_off, x, np.bool_(True),
             seed)
    pred = _block(acts, out_off[last], rows, k)
    dpred = _block(dacts, out_off[last], rows, k)
    loss = loss_forward_backward(loss_kind, dpred, pred, target, labels, weight, delta)
    _backward(ops, fargs, params, grads, acts, dacts, cache, out_off, cache_off, x)
    return loss


@njit(cache=CACHE)
def _commit(ops, fargs, params, grads, state, cache, cache_off, rows, opt_kind, hyper,
            buf1, buf2, buf3, step, par_min):
    # an accepted step: batchnorm running statistics, then the optimizer update
    for i in range(ops.shape[0]):
        if ops[i, Ops.KIND] == Layer.BATCHNORM:
            n, c = ops[i, Ops.OUT], cache_off[i]
            sa, sb = ops[i, Ops.SA], ops[i, Ops.SB]
            batchnorm_update_running(state[sa : sa + n], state[sb : sb + n],
                                     cache[c : c + n], cache[c + n : c + 2 * n],
                                     rows, fargs[i, Fargs.MOMENTUM])
    step[0] += 1
    if opt_kind == Opt.SGD:
        _sgd(params, grads, buf1, hyper, step[0], par_min)
    elif opt_kind == Opt.ADAM:
        _adam(params, grads, buf1, buf2, hyper, step[0], par_min)
    elif opt_kind == Opt.RMSPROP:
        _rmsprop(params, grads, buf1, buf2, buf3, hyper, step[0], par_min)
    elif opt_kind == Opt.ADAGRAD:
        _adagrad(params, grads, buf1, hyper, step[0], par_min)
    else:
        raise ValueError("unknown optimizer code")


@njit(cache=CACHE)
def _train_step(ops, fargs, loss_kind, params, grads, state, acts, dacts, cache, out_off,
                cache_off, x, target, labels, seed, opt_kind, hyper, buf1, buf2, buf3, step,
                clip_norm, par_min, weight, delta):
    # one step, as Backend.train_step: returns (loss, gradient norm before clipping);
    # a non-finite loss or norm rejects the step before anything of the model changes;
    # weights summing to 0 make it a no-op
    loss = _gradients(ops, fargs, loss_kind, params, grads, state, acts, dacts, cache,
                      out_off, cache_off, x, target, labels, seed, weight, delta)
    gnorm = math.sqrt(_sum_squares(grads, par_min))
    if not (math.isfinite(loss) and math.isfinite(gnorm)):
        return loss, gnorm
    if weight.shape[0] > 0:
        wsum = 0.0
        for i in range(weight.shape[0]):
            wsum += np.float64(weight[i])
        if not wsum > 0:
            return loss, gnorm
    if clip_norm > 0 and gnorm > clip_norm:
        scale(grads, clip_norm / (gnorm + 1e-6))  # torch.nn.utils.clip_grad_norm_
    _commit(ops, fargs, params, grads, state, cache, cache_off, x.shape[0], opt_kind, hyper,
            buf1, buf2, buf3, step, par_min)
    return loss, gnorm


@njit(cache=CACHE)
def _train_epoch(ops, fargs, loss_kind, params, grads, state, acts, dacts, cache, out_off,
                 cache_off, X, Y, labels, perm, batch_size, seeds, opt_kind, hyper, buf1,
                 buf2, buf3, step, clip_norm, losses, gnorms, par_min, lrs, weights, delta):
    # minibatches X[perm[k·bs : (k+1)·bs]] in order, rows gathered here into xb / yb
    # (and their sample weights into wb; weights empty: unweighted); lrs (n_batches,) the
    # rate of each step (empty: hyper's, constant); returns the number of accepted steps
    # (stops at the first rejected one)
    n = perm.shape[0]
    n_rows = X.shape[0]
    n_batches = (n + batch_size - 1) // batch_size
    use_labels = loss_kind == Loss.CROSS_ENTROPY
    weighted = weights.shape[0] > 0
    wb = np.empty(batch_size if weighted else 0, weights.dtype)
    h = hyper.copy() if lrs.shape[0] > 0 else hyper  # hyper itself is never written
    xb = np.empty((batch_size, X.shape[1]), X.dtype)
    if use_labels:
        yb = np.empty((0, 0), Y.dtype)
        lb = np.empty(batch_size, labels.dtype)
    else:
        yb = np.empty((batch_size, Y.shape[1]), Y.dtype)
        lb = np.empty(0, labels.dtype)
    for k in range(n_batches):
        lo = k * batch_size
        rows = min(batch_size, n - lo)
        for r in range(rows):
            src = perm[lo + r]
            if src < 0 or src >= n_rows:
                raise ValueError("perm holds a row index out of range")
            for j in range(X.shape[1]):
                xb[r, j] = X[src, j]
            if use_labels:
                lb[r] = labels[src]
            else:
                for j in range(Y.shape[1]):
                    yb[r, j] = Y[src, j]
            if weighted:
                wb[r] = weights[src]
        xv = xb[:rows]
        yv = yb[:rows] if not use_labels else yb
        lv = lb[:rows] if use_labels else lb
        wv = wb[:rows] if weighted else wb
        if lrs.shape[0] > 0:
            h[Hyper.LR] = lrs[k]
        loss, gnorm = _train_step(ops, fargs, loss_kind, params, grads, state, acts, dacts,
                                  cache, out_off, cache_off, xv, yv, lv, seeds[k], opt_kind,
                                  h, buf1, buf2, buf3, step, clip_norm, par_min, wv, delta)
        losses[k] = loss
        gnorms[k] = gnorm
        if not (math.isfinite(loss) and math.isfinite(gnorm)):
            return k
    return n_batches


@njit(cache=CACHE, parallel=True)
def _touch_threads(a):
    # a trivial parallel region: starts the threading layer so it can be named
    for i in prange(a.shape[0]):
        a[i] = i


GUARDED = _guard_caches(globals())  # before any function above runs or loads


# ============================================================================ backend


def _blas_info() -> str:
    """The OpenBLAS behind numba's np.dot (scipy's copy): version, kernel, threads."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "scipy's BLAS (threadpoolctl not installed: no details)"
    for lib in threadpool_info():
        if lib.get("user_api") == "blas" and "scipy" in lib.get("filepath", "") and \
                "numpy" not in lib.get("filepath", ""):
            return (f"{lib.get('internal_api')} {lib.get('version')} "
                    f"{lib.get('architecture')} kernel, {lib.get('num_threads')} threads")
    return "scipy's BLAS"


_NO_LRS = np.empty(0, np.float64)  # train_epoch's lrs when the rate is constant


def _own(a: np.ndarray) -> np.ndarray:
    """A writeable array (a read-only one would compile a second signature of each driver)."""
    return a if a.flags.writeable else a.copy()


class NumbaBackend(Backend):
    """Jitted kernels; one compiled call per step (`train_step`) and per epoch. The
    arguments arrive checked (base.Backend); the jitted loops index without bounds checks.
    The jitted loss refuses an out-of-range label itself (before any model state changes),
    so the adapter skips its per-batch label scan."""

    name = "numba"
    checks_labels = True

    def __init__(self) -> None:
        self._empty = {dt: (np.empty((0, 0), dt), np.empty(0, dt))
                       for dt in (np.dtype(np.float32), np.dtype(np.float64))}
        self._no_labels = np.empty(0, np.int64)
        self._first_call: dict[str, float] = {}  # driver/dtype -> seconds of its first call
        self._seen: set[tuple[str, str]] = set()
        self.par_min = PAR_MIN  # flat-buffer passes of at least this many elements use prange

    # ------------------------------------------------------------------ kernels
    def _matmul_forward(self, out, inp, weight, bias):
        matmul_forward(out, inp, weight, bias)

    def _matmul_backward(self, dinp, dweight, dbias, dout, inp, weight):
        need = dinp is not None
        matmul_backward(dinp if need else inp, dweight, dbias, dout, inp, weight, need)

    def _activation_forward(self, kind, out, inp):
        activation_forward(kind, out, inp)

    def _activation_backward(self, kind, dinp, dout, inp, out):
        activation_backward(kind, dinp, dout, inp, out)

    def _loss_forward_backward(self, kind, dpred, pred, target, weight, delta):
        target, labels = self._targets(kind, target, dpred.dtype)
        return float(loss_forward_backward(kind, dpred, pred, target, labels,
                                           self._weights(weight, dpred.dtype), delta))

    def _batchnorm_forward(self, out, mean, var, rstd, inp, gamma, beta, running_mean,
                           running_var, training, eps):
        if training:
            running_mean = running_var = gamma  # not read in training mode
        else:
            mean = var = rstd = out[0] if out.shape[0] else gamma  # not touched in inference
        batchnorm_forward(out, mean, var, rstd, inp, gamma, beta, running_mean, running_var,
                          training, eps)

    def _batchnorm_backward(self, dinp, dgamma, dbeta, dout, inp, mean, rstd, gamma):
        need = dinp is not None
        batchnorm_backward(dinp if need else inp, dgamma, dbeta, dout, inp, mean, rstd, gamma,
                           need)

    def _batchnorm_update_running(self, running_mean, running_var, mean, var, rows, momentum):
        batchnorm_update_running(running_mean, running_var, mean, var, rows, momentum)

    def _dropout_forward(self, out, mask, inp, p, seed):
        dropout_forward(out, mask, inp, p, np.uint64(seed))

    def _dropout_backward(self, dinp, dout, mask):
        dropout_backward(dinp, dout, mask)

    def _sgd_update(self, params, grads, buf, hyper, step):
        if buf is None:  # no momentum: never read
            buf = self._empty[params.dtype][1]
        sgd_update(params, grads, buf, hyper, step)

    def _adam_update(self, params, grads, m, v, hyper, step):
        adam_update(params, grads, m, v, hyper, step)

    def _rmsprop_update(self, params, grads, square_avg, momentum_buffer, grad_avg, hyper,
                        step):
        empty = self._empty[params.dtype][1]  # a buffer the configuration never reads
        rmsprop_update(params, grads, square_avg,
                       empty if momentum_buffer is None else momentum_buffer,
                       empty if grad_avg is None else grad_avg, hyper, step)

    def _adagrad_update(self, params, grads, state_sum, hyper, step):
        adagrad_update(params, grads, state_sum, hyper, step)

    def _sum_squares(self, x):
        return float(sum_squares(x))

    def _scale(self, x, factor):
        scale(x, factor)

    # ------------------------------------------------------------------ helpers
    def _targets(self, kind: int, y: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
        """(target (B, K), labels (B,)): the one the loss reads, the other empty."""
        if kind == Loss.CROSS_ENTROPY:
            return self._empty[dtype][0], _own(y)
        return _own(y), self._no_labels

    def _timed(self, name: str, dtype: np.dtype, fn, *args):
        """Call a driver; its first call per dtype is timed (compile or cache load + run)."""
        key = (name, dtype.char)  # cheaper per step than formatting a string
        if key in self._seen:
            return fn(*args)
        t0 = time.perf_counter()
        result = fn(*args)
        self._seen.add(key)
        self._first_call[f"{name}/{dtype}"] = time.perf_counter() - t0
        return result

    def _weights(self, w, dtype) -> np.ndarray:
        """Sample weights as the jitted code takes them: empty for None."""
        return self._empty[dtype][1] if w is None else _own(w)

    @staticmethod
    def _opt_arrays(opt: Optimizer):
        """buf1, buf2, buf3 (an unused slot is empty: bind allocates every slot)."""
        return opt.buf1, opt.buf2, opt.buf3

    # ------------------------------------------------------------------ drivers
    def _forward(self, plan: Plan, bufs: Buffers, x, training, seed):
        x = _own(x)
        self._timed("forward", plan.dtype, _forward, plan.ops, plan.fargs, bufs.params,
                    bufs.state, bufs.acts, bufs.cache, bufs.out_off, bufs.cache_off, x,
                    training, np.uint64(seed))
        return bufs.out(len(plan.layers) - 1, x.shape[0])

    def _gradients(self, plan: Plan, bufs: Buffers, x, y, seed, weight=None):
        target, labels = self._targets(plan.loss_code, y, plan.dtype)
        return self._timed(
            "gradients", plan.dtype, _gradients, plan.ops, plan.fargs, int(plan.loss_code),
            bufs.params, bufs.grads, bufs.state, bufs.acts, bufs.dacts, bufs.cache,
            bufs.out_off, bufs.cache_off, _own(x), target, labels, np.uint64(seed),
            self._weights(weight, plan.dtype), plan.delta)

    def _train_step(self, plan: Plan, bufs: Buffers, x, y, opt: Optimizer, seed, clip_norm,
                    weight=None):
        target, labels = self._targets(plan.loss_code, y, plan.dtype)
        buf1, buf2, buf3 = self._opt_arrays(opt)
        return self._timed(
            "train_step", plan.dtype, _train_step, plan.ops, plan.fargs, int(plan.loss_code),
            bufs.params, bufs.grads, bufs.state, bufs.acts, bufs.dacts, bufs.cache,
            bufs.out_off, bufs.cache_off, _own(x), target, labels, np.uint64(seed),
            int(opt.kind), opt.hyper, buf1, buf2, buf3, opt.step, clip_norm, self.par_min,
            self._weights(weight, plan.dtype), plan.delta)

    def _train_epoch(self, plan: Plan, bufs: Buffers, X, Y, perm, batch_size, opt: Optimizer,
                     seeds, clip_norm, losses, gnorms, lrs=None, weights=None):
        target, labels = self._targets(plan.loss_code, Y, plan.dtype)
        buf1, buf2, buf3 = self._opt_arrays(opt)
        return self._timed(
            "train_epoch", plan.dtype, _train_epoch, plan.ops, plan.fargs, int(plan.loss_code),
            bufs.params, bufs.grads, bufs.state, bufs.acts, bufs.dacts, bufs.cache,
            bufs.out_off, bufs.cache_off, _own(X), target, labels, _own(perm), batch_size,
            _own(seeds), int(opt.kind), opt.hyper, buf1, buf2, buf3, opt.step, clip_norm,
            losses, gnorms, self.par_min, _NO_LRS if lrs is None else lrs,
            self._weights(weights, plan.dtype), plan.delta)

    # ------------------------------------------------------------------ threads, report
    def set_threads(self, n: int) -> int:
        """Numba's thread count, clamped to [1, NUMBA_NUM_THREADS]; returns what was set."""
        n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
        numba.set_num_threads(n)
        return n

    def describe(self) -> dict:
        """Numba version, threading layer, threads, cache and first-call (compile) times."""
        _touch_threads(np.empty(2, np.int64))  # the layer is chosen on the first parallel run
        layer = numba.threading_layer()
        info = {
            "name": self.name,
            "numba": numba.__version__,
            "threading_layer": layer,
            "threads": numba.get_num_threads(),
            "max_threads": numba.config.NUMBA_NUM_THREADS,
            "matmul": "np.dot in jitted code (scipy's BLAS) at every size",
            "blas": _blas_info(),
            "par_min": self.par_min,
            "disk_cache": CACHE,
            "disk_cache_guarded": GUARDED,  # functions under _GuardedCache
            "boundscheck": bool(numba.config.BOUNDSCHECK),
            # driver/dtype -> seconds of its first call: compile, or load from the disk cache
            "first_call_seconds": dict(self._first_call),
        }
        if layer == "workqueue":
            info["warning"] = ("numba runs on the 'workqueue' threading layer, which is slow to "
                               "start parallel regions; install tbb or use a numba built with "
                               "OpenMP (NUMBA_THREADING_LAYER=omp)")
        return info


BACKEND = NumbaBackend
