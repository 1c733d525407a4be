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

from ..optim import ADAM_KIND, HYPER_COLS, SGD_KIND, Optimizer
from ..plan import (
    ACTIVATION,
    BATCHNORM,
    DENSE,
    DROPOUT,
    F_EPS,
    F_MOM,
    F_P,
    K_ACT,
    K_IN,
    K_KIND,
    K_OUT,
    K_PA,
    K_PB,
    K_SA,
    K_SB,
    LEAKY_SLOPE,
    Buffers,
    Plan,
)
from .base import GOLDEN, LAYER_MIX, MASK64, Backend, require_elements

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
#    bytecode, not by the globals it freezes in as constants. The plan columns, layer
#    and optimizer codes and seeds come from plan.py, optim.py and base.py: an edit
#    there would reuse code indexing the old layout. The key also holds the values of
#    every constant a function (and every jitted function it calls) reads.
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
_FM = {"reassoc", "contract"}  # reductions only: no 'nnan'/'ninf', NaN must survive

# Flat-buffer passes (optimizer, sum of squares) of at least this many elements run as a
# prange; by default never, see the module docstring for why. NumbaBackend.par_min
# overrides it at run time (no recompilation).
PAR_MIN = 1 << 62
# The sum of squares adds fixed chunks in a fixed order, whatever the thread count, so
# the gradient norm is bit-identical on repeat and between the serial and parallel paths.
CHUNK = 1 << 14

_OPT_CODES = (SGD_KIND, ADAM_KIND)


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
    # out (B, N) = act(inp); kind indexes plan.ACTIVATIONS
    rows, n = inp.shape
    T = out.dtype.type
    zero, one, half = T(0.0), T(1.0), T(0.5)
    slope, sqrt_half = T(LEAKY_SLOPE), T(_SQRT_HALF)
    if kind < 0 or kind > 5:
        raise ValueError("unknown activation code")
    for i in range(rows):
        for j in range(n):
            x = inp[i, j]
            if kind == 0:
                y = x
            elif kind == 1:  # relu; NaN passes through as in np.maximum
                y = zero if x < zero else x
            elif kind == 2:  # leaky_relu
                y = x * (one if x > zero else slope)
            elif kind == 3:  # sigmoid
                e = np.exp(-np.abs(x))
                y = (one if x >= zero else e) / (one + e)
            elif kind == 4:
                y = np.tanh(x)
            else:  # gelu, erf form: x/2 (1 + erf(x/√2))
                y = (half * x) * (one + T(math.erf(x * sqrt_half)))
            out[i, j] = y


@njit(cache=CACHE)
def activation_backward(kind, dinp, dout, inp, out):
    # dinp (B, N) = dout * act'(inp); out = act(inp) (sigmoid and tanh use it)
    rows, n = inp.shape
    T = dinp.dtype.type
    zero, one, half = T(0.0), T(1.0), T(0.5)
    slope, sqrt_half, inv_sqrt_2pi = T(LEAKY_SLOPE), T(_SQRT_HALF), T(_INV_SQRT_2PI)
    if kind < 0 or kind > 5:
        raise ValueError("unknown activation code")
    for i in range(rows):
        for j in range(n):
            d = dout[i, j]
            if kind == 0:
                g = d
            elif kind == 1:
                g = d * (one if inp[i, j] > zero else zero)
            elif kind == 2:
                g = d * (one if inp[i, j] > zero else slope)
            elif kind == 3:  # σ' = σ (1 - σ)
                s = out[i, j]
                g = d * (s * (one - s))
            elif kind == 4:  # tanh' = 1 - tanh²
                t = out[i, j]
                g = d * (one - t * t)
            else:  # gelu' = Φ(x) + x φ(x)
                x = inp[i, j]
                cdf = half * (one + T(math.erf(x * sqrt_half)))
                pdf = np.exp(-half * x * x) * inv_sqrt_2pi
                g = d * (cdf + x * pdf)
            dinp[i, j] = g


# ---- losses -------------------------------------------------------------------------


@njit(cache=CACHE)
def loss_forward_backward(kind, dpred, pred, target, labels):
    # pred, dpred (B, K). mse and binary_cross_entropy read target (B, K); cross_entropy
    # reads labels (B,) int64 in [0, K). The other one may be empty. Returns the mean
    # loss, summed in float64.
    rows, k = pred.shape
    T = dpred.dtype.type
    one = T(1.0)
    total = 0.0
    if kind == 0:  # mse: mean over all elements
        factor = T(2.0 / (rows * k))
        for i in range(rows):
            for j in range(k):
                d = pred[i, j] - target[i, j]
                total += np.float64(d) * np.float64(d)
                dpred[i, j] = d * factor
        return total / (rows * k)
    if kind == 1:  # cross_entropy: softmax + NLL of integer labels, mean over rows
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
    if kind == 2:  # binary_cross_entropy from logits z: max(z,0) - z y + log(1 + e^-|z|)
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
    raise ValueError("unknown loss code")


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


@njit(cache=CACHE)
def _sgd_range(params, grads, buf, hyper, step, lo, hi):
    T = params.dtype.type
    lr, momentum, dampening, wd = hyper[0], hyper[1], hyper[2], hyper[4]
    nesterov = hyper[3] != 0.0
    lr_t, mom_t, damp_t, wd_t = T(lr), T(momentum), T(1.0 - dampening), T(wd)
    for e in range(lo, hi):
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


@njit(cache=CACHE)
def _adam_range(params, grads, m, v, hyper, step, lo, hi):
    T = params.dtype.type
    lr, beta1, beta2, eps, wd = hyper[0], hyper[5], hyper[6], hyper[7], hyper[4]
    decoupled = hyper[8] != 0.0
    bc1 = 1.0 - math.pow(beta1, float(step))
    bc2 = 1.0 - math.pow(beta2, float(step))
    b1, c1, b2, c2 = T(beta1), T(1.0 - beta1), T(beta2), T(1.0 - beta2)
    decay, wd_t = T(1.0 - lr * wd), T(wd)
    sqrt_bc2, eps_t, step_size = T(math.sqrt(bc2)), T(eps), T(lr / bc1)
    for e in range(lo, hi):
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
    if hyper[1] != 0.0 and buf.shape[0] != n:
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
    s = 0.0
    for e in range(lo, hi):
        f = np.float64(x[e])
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
        kind, n_in, n = ops[i, K_KIND], ops[i, K_IN], ops[i, K_OUT]
        out = _block(acts, out_off[i], rows, n)
        if kind == DENSE:
            W = _block(params, ops[i, K_PA], n_in, n)
            b = params[ops[i, K_PB] : ops[i, K_PB] + n]
            matmul_forward(out, inp, W, b)
        elif kind == ACTIVATION:
            activation_forward(ops[i, K_ACT], out, inp)
        elif kind == BATCHNORM:
            c = cache_off[i]
            pa, pb, sa, sb = ops[i, K_PA], ops[i, K_PB], ops[i, K_SA], ops[i, K_SB]
            batchnorm_forward(out, cache[c : c + n], cache[c + n : c + 2 * n],
                              cache[c + 2 * n : c + 3 * n], inp,
                              params[pa : pa + n], params[pb : pb + n],
                              state[sa : sa + n], state[sb : sb + n],
                              training, fargs[i, F_EPS])
        elif kind == DROPOUT:
            p = fargs[i, F_P]
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
        kind, n_in, n = ops[i, K_KIND], ops[i, K_IN], ops[i, K_OUT]
        dout = _block(dacts, out_off[i], rows, n)
        has_below = i > 0
        if has_below:
            inp = _block(acts, out_off[i - 1], rows, n_in)
            dinp = _block(dacts, out_off[i - 1], rows, n_in)
        else:
            inp = x
            dinp = x  # never written: need_dinp is False for layer 0
        if kind == DENSE:
            pa, pb = ops[i, K_PA], ops[i, K_PB]
            W = _block(params, pa, n_in, n)
            dW = _block(grads, pa, n_in, n)
            matmul_backward(dinp, dW, grads[pb : pb + n], dout, inp, W, has_below)
        elif kind == BATCHNORM:
            c = cache_off[i]
            pa, pb = ops[i, K_PA], ops[i, K_PB]
            batchnorm_backward(dinp, grads[pa : pa + n], grads[pb : pb + n], dout, inp,
                               cache[c : c + n], cache[c + 2 * n : c + 3 * n],
                               params[pa : pa + n], has_below)
        elif not has_below:
            continue  # nothing below to receive the gradient
        elif kind == ACTIVATION:
            out = _block(acts, out_off[i], rows, n)
            activation_backward(ops[i, K_ACT], dinp, dout, inp, out)
        elif kind == DROPOUT:
            if fargs[i, F_P] > 0:
                dropout_backward(dinp, dout, _block(cache, cache_off[i], rows, n))
            else:
                _copy2d(dinp, dout)


@njit(cache=CACHE)
def _gradients(ops, fargs, loss_kind, params, grads, state, acts, dacts, cache, out_off,
               cache_off, x, target, labels, seed):
    # training-mode forward, loss, backward; returns the loss
    rows = x.shape[0]
    last = ops.shape[0] - 1
    k = ops[last, K_OUT]
    _forward(ops, fargs, params, state, acts, cache, out_off, cache_off, x, np.bool_(True),
             seed)
    pred = _block(acts, out_off[last], rows, k)
    dpred = _block(dacts, out_off[last], rows, k)
    loss = loss_forward_backward(loss_kind, dpred, pred, target, labels)
    _backward(ops, fargs, params, grads, acts, dacts, cache, out_off, cache_off, x)
    return loss


@njit(cache=CACHE)
def _commit(ops, fargs, params, grads, state, cache, cache_off, rows, opt_kind, hyper,
            buf1, buf2, step, par_min):
    # an accepted step: batchnorm running statistics, then the optimizer update
    for i in range(ops.shape[0]):
        if ops[i, K_KIND] == BATCHNORM:
            n, c = ops[i, K_OUT], cache_off[i]
            sa, sb = ops[i, K_SA], ops[i, K_SB]
            batchnorm_update_running(state[sa : sa + n], state[sb : sb + n],
                                     cache[c : c + n], cache[c + n : c + 2 * n],
                                     rows, fargs[i, F_MOM])
    step[0] += 1
    if opt_kind == SGD_KIND:
        _sgd(params, grads, buf1, hyper, step[0], par_min)
    else:
        _adam(params, grads, buf1, buf2, hyper, step[0], par_min)


@njit(cache=CACHE)
def _train_step(ops, fargs, loss_kind, params, grads, state, acts, dacts, cache, out_off,
                cache_off, x, target, labels, seed, opt_kind, hyper, buf1, buf2, step,
                clip_norm, par_min):
    # one step, as Backend.train_step: returns (loss, gradient norm before clipping);
    # a non-finite loss or norm rejects the step before anything of the model changes
    loss = _gradients(ops, fargs, loss_kind, params, grads, state, acts, dacts, cache,
                      out_off, cache_off, x, target, labels, seed)
    gnorm = math.sqrt(_sum_squares(grads, par_min))
    if not (math.isfinite(loss) and math.isfinite(gnorm)):
        return loss, gnorm
    if clip_norm > 0 and gnorm > clip_norm:
        scale(grads, clip_norm / (gnorm + 1e-6))  # torch.nn.utils.clip_grad_norm_
    _commit(ops, fargs, params, grads, state, cache, cache_off, x.shape[0], opt_kind, hyper,
            buf1, buf2, step, par_min)
    return loss, gnorm


@njit(cache=CACHE)
def _train_epoch(ops, fargs, loss_kind, params, grads, state, acts, dacts, cache, out_off,
                 cache_off, X, Y, labels, perm, batch_size, seeds, opt_kind, hyper, buf1,
                 buf2, step, clip_norm, losses, gnorms, par_min):
    # minibatches X[perm[k·bs : (k+1)·bs]] in order, rows gathered here into xb / yb;
    # returns the number of accepted steps (stops at the first rejected one)
    n = perm.shape[0]
    n_rows = X.shape[0]
    n_batches = (n + batch_size - 1) // batch_size
    use_labels = loss_kind == 1
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
        xv = xb[:rows]
        yv = yb[:rows] if not use_labels else yb
        lv = lb[:rows] if use_labels else lb
        loss, gnorm = _train_step(ops, fargs, loss_kind, params, grads, state, acts, dacts,
                                  cache, out_off, cache_off, xv, yv, lv, seeds[k], opt_kind,
                                  hyper, buf1, buf2, step, clip_norm, par_min)
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


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _out(a, name, dtype=None, shape=None, flat=False) -> np.ndarray:
    """An output array: float32/64 of `dtype` and `shape`, C-contiguous and writeable."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in _FLOATS or (dtype is not None and a.dtype != dtype):
        raise TypeError(f"{name} is {a.dtype}; expected {dtype or 'float32 or float64'}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}; expected {shape}")
    if not flat and shape is None and a.ndim not in (1, 2):
        raise ValueError(f"{name} has {a.ndim} dimensions")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (a kernel writes it in place)")
    if not a.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return a


def _inp(a, name, dtype, shape) -> np.ndarray:
    """An input array of `dtype` and `shape` (None: any size on that axis), C-contiguous."""
    a = np.asarray(a)
    if a.dtype != dtype:
        raise TypeError(f"{name} is {a.dtype}; expected {dtype}")
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape,
                                                                           strict=True)):
        want = tuple("?" if s is None else s for s in shape)
        raise ValueError(f"{name} has shape {a.shape}; expected {want}")
    return np.ascontiguousarray(a)


def _code(kind, top: int, what: str) -> int:
    k = int(kind)
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


def _uint64(seed) -> np.uint64:
    return np.uint64(int(seed) & MASK64)


class NumbaBackend(Backend):
    """Jitted kernels; one compiled call per step (`train_step`) and per epoch."""

    name = "numba"

    def __init__(self) -> None:
        self._empty = {dt: (np.empty((0, 0), dt), np.empty(0, dt))
                       for dt in (np.dtype(np.float32), np.dtype(np.float64))}
        self._no_labels = np.empty(0, np.int64)
        self._first_call: dict[str, float] = {}  # driver/dtype -> seconds of its first call
        self._seen: set[tuple[str, str]] = set()
        self.par_min = PAR_MIN  # flat-buffer passes of at least this many elements use prange

    # ------------------------------------------------------------------ kernels
    # The methods check every array before the jitted loop runs, which indexes without
    # bounds checks: dtype and shape must agree, outputs must be C-contiguous and
    # writeable (refused untouched otherwise); inputs of another layout are copied.

    def matmul_forward(self, out, inp, weight, bias):
        B, OC = _out(out, "out").shape
        dt = out.dtype
        inp = _inp(inp, "inp", dt, (B, None))
        weight = _inp(weight, "weight", dt, (inp.shape[1], OC))
        matmul_forward(out, inp, weight, _inp(bias, "bias", dt, (OC,)))

    def matmul_backward(self, dinp, dweight, dbias, dout, inp, weight):
        C, OC = _out(dweight, "dweight").shape
        dt = dweight.dtype
        _out(dbias, "dbias", dt, (OC,))
        dout = _inp(dout, "dout", dt, (None, OC))
        B = dout.shape[0]
        inp = _inp(inp, "inp", dt, (B, C))
        weight = _inp(weight, "weight", dt, (C, OC))
        need = dinp is not None
        if need:
            _out(dinp, "dinp", dt, (B, C))
        matmul_backward(dinp if need else inp, dweight, dbias, dout, inp, weight, need)

    def activation_forward(self, kind, out, inp):
        _out(out, "out")
        activation_forward(_code(kind, 5, "activation"), out,
                           _inp(inp, "inp", out.dtype, out.shape))

    def activation_backward(self, kind, dinp, dout, inp, out):
        _out(dinp, "dinp")
        dt, shape = dinp.dtype, dinp.shape
        activation_backward(_code(kind, 5, "activation"), dinp, _inp(dout, "dout", dt, shape),
                            _inp(inp, "inp", dt, shape), _inp(out, "out", dt, shape))

    def loss_forward_backward(self, kind, dpred, pred, target):
        kind = _code(kind, 2, "loss")
        _out(dpred, "dpred")
        require_elements("the loss", dpred)
        pred = _inp(pred, "pred", dpred.dtype, dpred.shape)
        target, labels = self._targets(kind, target, pred.dtype)
        if kind == 1:
            if labels.shape != (pred.shape[0],):
                raise ValueError(f"labels have shape {labels.shape}; expected ({pred.shape[0]},)")
        elif target.shape != pred.shape:
            raise ValueError(f"target has shape {target.shape}; pred {pred.shape}")
        return float(loss_forward_backward(kind, dpred, pred, target, labels))

    def batchnorm_forward(self, out, mean, var, rstd, inp, gamma, beta, running_mean,
                          running_var, training, eps):
        B, N = _out(out, "out").shape
        dt = out.dtype
        inp = _inp(inp, "inp", dt, (B, N))
        gamma, beta = _inp(gamma, "gamma", dt, (N,)), _inp(beta, "beta", dt, (N,))
        if training:
            for name, a in (("mean", mean), ("var", var), ("rstd", rstd)):
                _out(a, name, dt, (N,))
            if B < 1:
                raise ValueError("batchnorm needs at least one row")
            running_mean = running_var = gamma  # not read in training mode
        else:
            running_mean = _inp(running_mean, "running_mean", dt, (N,))
            running_var = _inp(running_var, "running_var", dt, (N,))
            mean = var = rstd = out[0] if B else gamma  # not touched in inference mode
        batchnorm_forward(out, mean, var, rstd, inp, gamma, beta, running_mean, running_var,
                          bool(training), float(eps))

    def batchnorm_backward(self, dinp, dgamma, dbeta, dout, inp, mean, rstd, gamma):
        N = _out(dgamma, "dgamma").shape[0]
        dt = dgamma.dtype
        _out(dbeta, "dbeta", dt, (N,))
        dout = _inp(dout, "dout", dt, (None, N))
        B = dout.shape[0]
        inp = _inp(inp, "inp", dt, (B, N))
        mean, rstd = _inp(mean, "mean", dt, (N,)), _inp(rstd, "rstd", dt, (N,))
        gamma = _inp(gamma, "gamma", dt, (N,))
        need = dinp is not None
        if need:
            _out(dinp, "dinp", dt, (B, N))
        batchnorm_backward(dinp if need else inp, dgamma, dbeta, dout, inp, mean, rstd, gamma,
                           need)

    def batchnorm_update_running(self, running_mean, running_var, mean, var, rows, momentum):
        N = _out(running_mean, "running_mean").shape[0]
        dt = running_mean.dtype
        _out(running_var, "running_var", dt, (N,))
        batchnorm_update_running(running_mean, running_var, _inp(mean, "mean", dt, (N,)),
                                 _inp(var, "var", dt, (N,)), int(rows), float(momentum))

    def dropout_forward(self, out, mask, inp, p, seed):
        _out(out, "out")
        _out(mask, "mask", out.dtype, out.shape)
        p = float(p)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p must be in [0, 1), got {p}")
        dropout_forward(out, mask, _inp(inp, "inp", out.dtype, out.shape), p, _uint64(seed))

    def dropout_backward(self, dinp, dout, mask):
        _out(dinp, "dinp")
        dt, shape = dinp.dtype, dinp.shape
        dropout_backward(dinp, _inp(dout, "dout", dt, shape), _inp(mask, "mask", dt, shape))

    def sgd_update(self, params, grads, buf, hyper, step):
        n = _out(params, "params").shape[0]
        grads = _inp(grads, "grads", params.dtype, (n,))
        hyper = _hyper(hyper)
        if buf is None or buf.size == 0:
            if hyper[1] != 0.0:
                raise ValueError("SGD with momentum needs a momentum buffer")
            buf = self._empty[params.dtype][1]
        else:
            _out(buf, "buf", params.dtype, (n,))
        sgd_update(params, grads, buf, hyper, _step(step))

    def adam_update(self, params, grads, m, v, hyper, step):
        n = _out(params, "params").shape[0]
        _out(m, "m", params.dtype, (n,))
        _out(v, "v", params.dtype, (n,))
        adam_update(params, _inp(grads, "grads", params.dtype, (n,)), m, v, _hyper(hyper),
                    _step(step))

    def sum_squares(self, x):
        x = np.asarray(x)
        if x.dtype not in _FLOATS:
            raise TypeError(f"sum_squares takes float32 or float64, got {x.dtype}")
        return float(sum_squares(np.ascontiguousarray(x).reshape(-1)))

    def scale(self, x, factor):
        _out(x, "x", None, None, flat=True)
        scale(x.reshape(-1), float(factor))

    # ------------------------------------------------------------------ helpers
    def _targets(self, kind: int, y, dtype) -> tuple[np.ndarray, np.ndarray]:
        """(target (B, K) float, labels (B,) int64): the one the loss reads, the other empty."""
        if kind == 1:
            labels = np.asarray(y)
            if labels.dtype != np.int64 or not labels.flags.c_contiguous:
                labels = np.ascontiguousarray(labels, dtype=np.int64)
            return self._empty[np.dtype(dtype)][0], labels.reshape(-1)
        target = self._array(y, dtype)
        if target.ndim == 1:
            target = target.reshape(-1, 1)
        return target, self._no_labels

    @staticmethod
    def _array(a, dtype) -> np.ndarray:
        """a as a writeable C-contiguous array of dtype (one compiled signature)."""
        a = np.asarray(a)
        if a.dtype != dtype or not a.flags.c_contiguous or not a.flags.writeable:
            a = np.array(a, dtype=dtype, order="C", copy=True)
        return a

    def _check_x(self, plan: Plan, bufs: Buffers, x) -> np.ndarray:
        x = self._array(x, plan.dtype)
        if x.ndim != 2 or x.shape[1] != plan.n_in:
            raise ValueError(f"x has shape {x.shape}; the plan takes (rows, {plan.n_in})")
        if x.shape[0] == 0:
            raise ValueError("x has no rows")
        bufs.ensure_capacity(x.shape[0])
        return x

    def _check_y(self, plan: Plan, target, labels, rows: int) -> None:
        if plan.loss_code == 1:
            if labels.shape[0] != rows:
                raise ValueError(f"labels have shape {labels.shape}; expected ({rows},)")
        elif target.shape != (rows, plan.n_out):
            raise ValueError(f"y has shape {target.shape}; expected ({rows}, {plan.n_out})")

    @staticmethod
    def _opt_arrays(opt: Optimizer, plan: Plan):
        if opt.kind not in _OPT_CODES:
            raise ValueError(f"unknown optimizer kind {opt.kind}")
        if opt.buf1 is None:
            opt.bind(plan.n_params, plan.dtype)
        if opt.buf1.dtype != plan.dtype:
            raise TypeError(f"optimizer state is {opt.buf1.dtype}, the plan {plan.dtype}")
        return opt.buf1, opt.buf2 if opt.buf2 is not None else opt.buf1[:0]

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

    # ------------------------------------------------------------------ drivers
    def forward(self, plan: Plan, bufs: Buffers, x: np.ndarray, training: bool = False,
                seed: int = 0) -> np.ndarray:
        x = self._check_x(plan, bufs, x)
        self._timed("forward", plan.dtype, _forward, plan.ops, plan.fargs, bufs.params,
                    bufs.state, bufs.acts, bufs.cache, bufs.out_off, bufs.cache_off, x,
                    bool(training), _uint64(seed))
        return bufs.out(len(plan.layers) - 1, x.shape[0])

    def gradients(self, plan: Plan, bufs: Buffers, x: np.ndarray, y: np.ndarray,
                  seed: int = 0) -> float:
        x = self._check_x(plan, bufs, x)
        target, labels = self._targets(plan.loss_code, y, plan.dtype)
        self._check_y(plan, target, labels, x.shape[0])
        return float(self._timed(
            "gradients", plan.dtype, _gradients, plan.ops, plan.fargs, plan.loss_code,
            bufs.params, bufs.grads, bufs.state, bufs.acts, bufs.dacts, bufs.cache,
            bufs.out_off, bufs.cache_off, x, target, labels, _uint64(seed)))

    def train_step(self, plan: Plan, bufs: Buffers, x: np.ndarray, y: np.ndarray,
                   opt: Optimizer, seed: int = 0, clip_norm: float = 0.0) -> tuple[float, float]:
        x = self._check_x(plan, bufs, x)
        target, labels = self._targets(plan.loss_code, y, plan.dtype)
        self._check_y(plan, target, labels, x.shape[0])
        buf1, buf2 = self._opt_arrays(opt, plan)
        loss, gnorm = self._timed(
            "train_step", plan.dtype, _train_step, plan.ops, plan.fargs, plan.loss_code,
            bufs.params, bufs.grads, bufs.state, bufs.acts, bufs.dacts, bufs.cache,
            bufs.out_off, bufs.cache_off, x, target, labels, _uint64(seed), opt.kind,
            opt.hyper, buf1, buf2, opt.step, float(clip_norm), self.par_min)
        return float(loss), float(gnorm)

    def train_epoch(self, plan: Plan, bufs: Buffers, X: np.ndarray, Y: np.ndarray,
                    perm: np.ndarray, batch_size: int, opt: Optimizer, seeds: np.ndarray,
                    clip_norm: float, losses: np.ndarray, gnorms: np.ndarray) -> int:
        X = self._array(X, plan.dtype)
        if X.ndim != 2 or X.shape[1] != plan.n_in:
            raise ValueError(f"X has shape {X.shape}; the plan takes (rows, {plan.n_in})")
        target, labels = self._targets(plan.loss_code, Y, plan.dtype)
        self._check_y(plan, target, labels, X.shape[0])
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        perm = np.ascontiguousarray(perm, dtype=np.int64)
        n_batches = (perm.shape[0] + batch_size - 1) // batch_size
        if perm.ndim != 1 or n_batches == 0:
            raise ValueError(f"perm must be a non-empty 1-D index array, got {perm.shape}")
        if perm.min() < 0 or perm.max() >= X.shape[0]:  # before any step, not halfway
            raise ValueError(f"perm holds row indices out of range [0, {X.shape[0]})")
        seeds = np.ascontiguousarray(seeds, dtype=np.uint64)
        for name, a in (("seeds", seeds), ("losses", losses), ("gnorms", gnorms)):
            if a.shape[0] < n_batches:
                raise ValueError(f"{name} holds {a.shape[0]} entries for {n_batches} batches")
        for name, a in (("losses", losses), ("gnorms", gnorms)):
            if a.dtype != np.float64 or not a.flags.c_contiguous or not a.flags.writeable:
                raise TypeError(f"{name} must be a writeable contiguous float64 array")
        bufs.ensure_capacity(min(batch_size, perm.shape[0]))
        buf1, buf2 = self._opt_arrays(opt, plan)
        return int(self._timed(
            "train_epoch", plan.dtype, _train_epoch, plan.ops, plan.fargs, plan.loss_code,
            bufs.params, bufs.grads, bufs.state, bufs.acts, bufs.dacts, bufs.cache,
            bufs.out_off, bufs.cache_off, X, target, labels, perm, batch_size, seeds,
            opt.kind, opt.hyper, buf1, buf2, opt.step, float(clip_norm), losses, gnorms,
            self.par_min))

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
