"""The C backend: hand-written kernels through cffi, a whole training step per call.

The C code (csrc/) holds every kernel of the contract in float32 and float64, our own
blocked GEMM with a register micro-kernel per instruction set (AVX-512, AVX2+FMA,
generic C, chosen at load), and fused drivers that run a forward pass, a training step
or a whole epoch of minibatches in one call. This file is the thin wrapper: it checks
dtype, shape and contiguity, allocates in Python, and passes pointers and int64 sizes.

Pointers to a model's flat buffers and plan arrays are converted once per
(plan, Buffers, capacity) into a `gk_model` struct cached on the Buffers object, and once
per optimizer into a `gk_optim` struct; a step then passes only x, y and the seed.
C checks every index it is handed (class labels, permutation entries, plan offsets) and
returns an error code, which becomes a ValueError here.

Threads: a GEMM uses all OpenMP threads from 96³ multiply-adds up (each thread takes a
contiguous run of column or row tiles and packs its own panels, so no thread waits on
another and every element sums in the same order: results are bit-identical for any
thread count); smaller products, and streaming kernels under 1M elements, run on the
calling thread without entering a parallel region (entering one costs ~0.5 µs even when
it runs serially). $GRADKERN_PAR_MNK moves the GEMM threshold, $GRADKERN_ISA forces
'generic', 'avx2' or 'avx512' (an unknown value is ignored with a warning). The thread
count asked for ($OMP_NUM_THREADS or set_threads) is capped by the processors this process
may run on, and the GEMM workspace is sized for that many threads at most, fewer when the
product would not use them: OMP_NUM_THREADS=100000 costs nothing.

Fork: libgomp's thread pool does not survive fork(); a child that enters any OpenMP
parallel region after its parent used one hangs. As PyTorch does, a fork()ed child (os.fork,
multiprocessing's 'fork' start method) is put into single-threaded mode by an
os.register_at_fork hook: from then on no kernel enters a parallel region, whatever
set_threads asks. Results are bit-identical for any thread count, so the child computes
exactly what the parent would; use the 'spawn' or 'forkserver' start method for
multi-threaded children.

Measured here (AMD EPYC Zen 4, 1 thread, CPU time, float32; the machine was shared, so
2-thread figures were not steady enough to quote): the micro-kernel runs at ~117 GFLOP/s
against a measured FMA peak of 114; GEMMs at the 1024-wide shapes of batch 64 and 256 run
at 0.9-1.3x OpenBLAS's SkylakeX sgemm; a depth-4, batch-64 training step is 5.6x faster
than the plain NumPy loop at width 16, 2x at 64, 1.2x at 256 and 1024
(benchmarks/c_gemm_bench.py, benchmarks/c_step_bench.py, `gradkern bench`).

Legend: B = batch rows, C = input features, OC = output features, K = classes.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
import warnings

import numpy as np

from ..optim import ADAM_KIND, SGD_KIND, Optimizer
from ..plan import Buffers, Plan
from .base import MASK64, Backend, require_elements


def _load_extension():
    """gradkern._gradkern_c, or the build named by $GRADKERN_C_EXT (the sanitizer build)."""
    path = os.environ.get("GRADKERN_C_EXT", "").strip()
    if path:
        spec = importlib.util.spec_from_file_location("gradkern._gradkern_c", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"GRADKERN_C_EXT={path!r} is not a loadable extension")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    try:
        from .. import _gradkern_c
    except ImportError as exc:
        raise ImportError(
            "the C extension gradkern._gradkern_c is not built (no working C compiler at "
            f"install time?): {exc}. Install gcc or clang and reinstall with "
            "`pip install -e .`, or use backend='numba' or 'numpy'"
        ) from exc
    return _gradkern_c


# libgomp spins 300000 rounds in every barrier by default; on a machine shared with other
# work that spinning starves the very thread being waited for (a width-1024 step measured
# 3x slower with 2 threads than with 1 at load 5). A short spin, then sleep, costs little
# when the machine is quiet. libgomp reads this once, when it loads, so it is set before
# the extension loads it, and never over a user's own OpenMP settings.
if not any(k in os.environ for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")):
    os.environ["GOMP_SPINCOUNT"] = "10000"

_ext = _load_extension()
ffi, lib = _ext.ffi, _ext.lib


def _after_fork_in_child() -> None:
    """In a fork()ed child: never enter an OpenMP parallel region again (libgomp's pool of
    the parent is gone; waiting for it would hang)."""
    lib.gk_after_fork_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _check_environment() -> None:
    """Warn about settings C would silently ignore (it never trusts them beyond that)."""
    isa = os.environ.get("GRADKERN_ISA")
    if isa and isa not in ("generic", "avx2", "avx512"):
        warnings.warn(f"GRADKERN_ISA={isa!r} is not one of generic, avx2, avx512; ignored",
                      RuntimeWarning, stacklevel=3)
    par = os.environ.get("GRADKERN_PAR_MNK")
    if par:
        try:
            ok = 0.0 < float(par) < float("inf")
        except ValueError:
            ok = False
        if not ok:
            warnings.warn(f"GRADKERN_PAR_MNK={par!r} is not a positive finite number; ignored",
                          RuntimeWarning, stacklevel=3)


_check_environment()

ISA_NAMES = {0: "generic", 1: "avx2", 2: "avx512"}
ERRORS = {
    -1: "a class label is outside [0, K)",
    -2: "a permutation entry is outside [0, N)",
    -3: "array sizes do not fit the plan or the workspace",
    -4: "the GEMM workspace is too small",
    -5: "unknown kind code",
    -6: "the plan's offsets do not fit its buffers",
}
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _check(rc: int, what: str) -> int:
    """Raise for a negative GK_ERR_* code."""
    if rc < 0:
        raise ValueError(f"{what}: {ERRORS.get(int(rc), f'C error {rc}')}")
    return rc


class _Funcs:
    """The C functions of one dtype, with its pointer type."""

    def __init__(self, suffix: str, ctype: str):
        self.ptr = ctype + " *"
        self.arr = ctype + "[]"
        for name in ("gemm", "gemm_work", "matmul_forward", "matmul_backward",
                     "activation_forward", "activation_backward", "loss_forward_backward",
                     "batchnorm_forward", "batchnorm_backward", "batchnorm_update_running",
                     "dropout_forward", "dropout_backward", "sgd_update", "adam_update",
                     "sum_squares", "scale", "model_check", "model_work", "forward",
                     "gradients", "train_step", "train_epoch"):
            setattr(self, name, getattr(lib, f"gk_{name}_{suffix}"))


FUNCS = {DTYPES[0]: _Funcs("f32", "float"), DTYPES[1]: _Funcs("f64", "double")}
NULL = ffi.NULL


def _ptr(fn: _Funcs, a):
    """A C pointer to the data of a C-contiguous array of fn's dtype, or NULL for None.
    (ffi.from_buffer keeps the array alive as long as the pointer; it is the fastest of
    cffi's ways in, about 0.2 µs against 1.5 µs through __array_interface__.)"""
    return ffi.from_buffer(fn.arr, a) if a is not None else NULL


def _i64ptr(a):
    return ffi.from_buffer("int64_t[]", a)


def _dtype_of(a, what: str) -> np.dtype:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in DTYPES:
        raise TypeError(f"{what} has dtype {a.dtype}; the C kernels take float32 or float64")
    return a.dtype


def _out(a, dtype: np.dtype, shape: tuple, what: str) -> np.ndarray:
    """An output array: exactly this dtype and shape, C-contiguous and writeable."""
    if not isinstance(a, np.ndarray) or a.dtype != dtype:
        got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
        raise TypeError(f"{what} must be a {dtype} array, got {got}")
    if a.shape != shape:
        raise ValueError(f"{what} has shape {a.shape}, expected {shape}")
    if not a.flags.c_contiguous or not a.flags.writeable:
        raise ValueError(f"{what} must be C-contiguous and writeable")
    return a


def _in(a, dtype: np.dtype, shape: tuple, what: str) -> np.ndarray:
    """An input array: converted to a C-contiguous array of dtype when it is not one."""
    a = np.asarray(a)
    if a.dtype != dtype or not a.flags.c_contiguous:
        a = np.ascontiguousarray(a, dtype=dtype)
    if a.shape != shape:
        raise ValueError(f"{what} has shape {a.shape}, expected {shape}")
    return a


def _uint64(seed) -> int:
    return int(seed) & MASK64


class _ModelState:
    """A gk_model struct for one (plan, Buffers, capacity), and the arrays it points into."""

    def __init__(self, plan: Plan, bufs: Buffers):
        dt, fn = plan.dtype, FUNCS[plan.dtype]
        self.plan, self.capacity = plan, bufs.capacity
        self.params, self.grads, self.state = bufs.params, bufs.grads, bufs.state
        self.acts, self.dacts, self.cache = bufs.acts, bufs.dacts, bufs.cache
        self.ops = np.ascontiguousarray(plan.ops, dtype=np.int64)
        self.fargs = np.ascontiguousarray(plan.fargs, dtype=np.float64)
        self.out_off = np.ascontiguousarray(bufs.out_off, dtype=np.int64)
        self.cache_off = np.ascontiguousarray(bufs.cache_off, dtype=np.int64)
        cap = bufs.capacity
        self.xbuf = np.zeros((cap, plan.n_in), dtype=dt)
        self.ybuf = np.zeros((cap, plan.n_out), dtype=dt)
        self.lbuf = np.zeros(cap, dtype=np.int64)
        m = ffi.new("gk_model *")
        m.n_layers = len(plan.layers)
        m.ops, m.fargs = _i64ptr(self.ops), ffi.cast("double *", self.fargs.ctypes.data)
        m.out_off, m.cache_off = _i64ptr(self.out_off), _i64ptr(self.cache_off)
        m.loss, m.capacity = plan.loss_code, cap
        for name in ("params", "grads", "state", "acts", "dacts", "cache"):
            a = getattr(bufs, name)
            setattr(m, name, ffi.cast("void *", a.ctypes.data))
        m.n_params, m.n_state = bufs.params.size, bufs.state.size
        m.n_acts, m.n_cache = min(bufs.acts.size, bufs.dacts.size), bufs.cache.size
        m.xbuf = ffi.cast("void *", self.xbuf.ctypes.data)
        m.ybuf = ffi.cast("void *", self.ybuf.ctypes.data)
        m.lbuf = _i64ptr(self.lbuf)
        _check(fn.model_check(m), f"plan {plan.describe()}")
        self.out = ffi.new("double[2]")  # loss and gradient norm of a step
        self.work = np.zeros(max(int(fn.model_work(m)), 1), dtype=dt)
        m.work, m.work_size = ffi.cast("void *", self.work.ctypes.data), self.work.size
        self.m = m

    def matches(self, plan: Plan, bufs: Buffers) -> bool:
        return (self.plan is plan and self.capacity == bufs.capacity
                and self.params is bufs.params and self.grads is bufs.grads
                and self.state is bufs.state and self.acts is bufs.acts
                and self.dacts is bufs.dacts and self.cache is bufs.cache)


class _OptimState:
    """A gk_optim struct for one optimizer's state arrays."""

    def __init__(self, opt: Optimizer):
        self.buf1, self.buf2, self.hyper, self.step = opt.buf1, opt.buf2, opt.hyper, opt.step
        o = ffi.new("gk_optim *")
        o.kind = opt.kind
        o.hyper = ffi.cast("double *", opt.hyper.ctypes.data)
        o.step = _i64ptr(opt.step)
        o.buf1 = ffi.cast("void *", opt.buf1.ctypes.data)
        o.buf2 = ffi.cast("void *", opt.buf2.ctypes.data) if opt.buf2 is not None else NULL
        self.o = o

    def matches(self, opt: Optimizer) -> bool:
        return (self.buf1 is opt.buf1 and self.buf2 is opt.buf2 and self.hyper is opt.hyper
                and self.step is opt.step)


class CBackend(Backend):
    """C kernels (cffi) with fused step and epoch drivers."""

    name = "c"

    def __init__(self) -> None:
        self._tls = threading.local()

    # ------------------------------------------------------------------ helpers
    def _work(self, dtype: np.dtype, size: int) -> np.ndarray:
        """GEMM scratch for a kernel call, grown as needed, one per Python thread."""
        pool = self._tls.__dict__.setdefault("work", {})
        w = pool.get(dtype)
        if w is None or w.size < size:
            w = np.zeros(max(size, 1), dtype=dtype)
            pool[dtype] = w
        return w

    # ------------------------------------------------------------------ kernels
    # out (B, OC) = inp (B, C) @ weight (C, OC) + bias (OC)
    def matmul_forward(self, out, inp, weight, bias):
        dt = _dtype_of(out, "out")
        B, OC = out.shape
        C = np.shape(weight)[0]
        _out(out, dt, (B, OC), "out")
        inp = _in(inp, dt, (B, C), "inp")
        weight = _in(weight, dt, (C, OC), "weight")
        bias = _in(bias, dt, (OC,), "bias")
        fn = FUNCS[dt]
        w = self._work(dt, fn.gemm_work(B, OC, C))
        _check(fn.matmul_forward(_ptr(fn, out), _ptr(fn, inp), _ptr(fn, weight),
                                 _ptr(fn, bias), B, C, OC, _ptr(fn, w), w.size),
               "matmul_forward")

    # dinp (B, C) = dout @ weight.T (skipped when None); dweight = inp.T @ dout; dbias = Σ dout
    def matmul_backward(self, dinp, dweight, dbias, dout, inp, weight):
        dt = _dtype_of(dweight, "dweight")
        C, OC = dweight.shape
        B = np.shape(dout)[0]
        _out(dweight, dt, (C, OC), "dweight")
        _out(dbias, dt, (OC,), "dbias")
        if dinp is not None:
            _out(dinp, dt, (B, C), "dinp")
        dout = _in(dout, dt, (B, OC), "dout")
        inp = _in(inp, dt, (B, C), "inp")
        weight = _in(weight, dt, (C, OC), "weight")
        fn = FUNCS[dt]
        need = max(fn.gemm_work(B, C, OC), fn.gemm_work(C, OC, B))
        w = self._work(dt, need)
        _check(fn.matmul_backward(_ptr(fn, dinp), _ptr(fn, dweight), _ptr(fn, dbias),
                                  _ptr(fn, dout), _ptr(fn, inp), _ptr(fn, weight), B, C, OC,
                                  _ptr(fn, w), w.size), "matmul_backward")

    # out (B, N) = act(inp)
    def activation_forward(self, kind, out, inp):
        dt = _dtype_of(out, "out")
        _out(out, dt, out.shape, "out")
        inp = _in(inp, dt, out.shape, "inp")
        fn = FUNCS[dt]
        _check(fn.activation_forward(int(kind), _ptr(fn, out), _ptr(fn, inp), out.size),
               f"activation code {kind}")

    # dinp (B, N) = dout * act'(inp); out = act(inp)
    def activation_backward(self, kind, dinp, dout, inp, out):
        dt = _dtype_of(dinp, "dinp")
        shape = dinp.shape
        _out(dinp, dt, shape, "dinp")
        dout, inp = _in(dout, dt, shape, "dout"), _in(inp, dt, shape, "inp")
        out = _in(out, dt, shape, "out")
        fn = FUNCS[dt]
        _check(fn.activation_backward(int(kind), _ptr(fn, dinp), _ptr(fn, dout), _ptr(fn, inp),
                                      _ptr(fn, out), dinp.size), f"activation code {kind}")

    # pred, dpred (B, K); target (B, K) floats or labels (B,) int64
    def loss_forward_backward(self, kind, dpred, pred, target):
        dt = _dtype_of(dpred, "dpred")
        shape = dpred.shape
        if len(shape) != 2:
            raise ValueError(f"dpred has shape {shape}; expected (B, K)")
        B, K = shape
        _out(dpred, dt, shape, "dpred")
        require_elements("the loss", dpred)
        pred = _in(pred, dt, shape, "pred")
        fn = FUNCS[dt]
        loss = ffi.new("double *")
        if int(kind) == 1:
            labels = _in(target, np.dtype(np.int64), (B,), "labels")
            rc = fn.loss_forward_backward(1, _ptr(fn, dpred), loss, _ptr(fn, pred), NULL,
                                          _i64ptr(labels), B, K)
        else:
            target = _in(target, dt, shape, "target")
            rc = fn.loss_forward_backward(int(kind), _ptr(fn, dpred), loss, _ptr(fn, pred),
                                          _ptr(fn, target), NULL, B, K)
        _check(rc, f"loss code {kind}")
        return float(loss[0])

    # out, inp (B, N); mean, var, rstd, gamma, beta, running stats (N)
    def batchnorm_forward(self, out, mean, var, rstd, inp, gamma, beta,
                          running_mean, running_var, training, eps):
        dt = _dtype_of(out, "out")
        B, N = out.shape
        _out(out, dt, (B, N), "out")
        inp = _in(inp, dt, (B, N), "inp")
        gamma, beta = _in(gamma, dt, (N,), "gamma"), _in(beta, dt, (N,), "beta")
        fn = FUNCS[dt]
        if training:
            for a, what in ((mean, "mean"), (var, "var"), (rstd, "rstd")):
                _out(a, dt, (N,), what)
            if B < 1:
                raise ValueError("batch normalization in training needs at least one row")
            rm = rv = NULL
        else:
            rm = _ptr(fn, _in(running_mean, dt, (N,), "running_mean"))
            rv = _ptr(fn, _in(running_var, dt, (N,), "running_var"))
            mean = var = rstd = None
        _check(fn.batchnorm_forward(_ptr(fn, out), _ptr(fn, mean), _ptr(fn, var), _ptr(fn, rstd),
                                    _ptr(fn, inp), _ptr(fn, gamma), _ptr(fn, beta), rm, rv,
                                    int(bool(training)), float(eps), B, N), "batchnorm_forward")

    def batchnorm_backward(self, dinp, dgamma, dbeta, dout, inp, mean, rstd, gamma):
        dt = _dtype_of(dgamma, "dgamma")
        (N,) = dgamma.shape
        B = np.shape(dout)[0]
        _out(dgamma, dt, (N,), "dgamma")
        _out(dbeta, dt, (N,), "dbeta")
        if dinp is not None:
            _out(dinp, dt, (B, N), "dinp")
        dout, inp = _in(dout, dt, (B, N), "dout"), _in(inp, dt, (B, N), "inp")
        mean, rstd = _in(mean, dt, (N,), "mean"), _in(rstd, dt, (N,), "rstd")
        gamma = _in(gamma, dt, (N,), "gamma")
        fn = FUNCS[dt]
        _check(fn.batchnorm_backward(_ptr(fn, dinp), _ptr(fn, dgamma), _ptr(fn, dbeta),
                                     _ptr(fn, dout), _ptr(fn, inp), _ptr(fn, mean),
                                     _ptr(fn, rstd), _ptr(fn, gamma), B, N), "batchnorm_backward")

    def batchnorm_update_running(self, running_mean, running_var, mean, var, rows, momentum):
        dt = _dtype_of(running_mean, "running_mean")
        (N,) = running_mean.shape
        _out(running_mean, dt, (N,), "running_mean")
        _out(running_var, dt, (N,), "running_var")
        mean, var = _in(mean, dt, (N,), "mean"), _in(var, dt, (N,), "var")
        fn = FUNCS[dt]
        _check(fn.batchnorm_update_running(_ptr(fn, running_mean), _ptr(fn, running_var),
                                           _ptr(fn, mean), _ptr(fn, var), int(rows),
                                           float(momentum), N), "batchnorm_update_running")

    def dropout_forward(self, out, mask, inp, p, seed):
        dt = _dtype_of(out, "out")
        _out(out, dt, out.shape, "out")
        _out(mask, dt, out.shape, "mask")
        inp = _in(inp, dt, out.shape, "inp")
        p = float(p)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {p}")
        fn = FUNCS[dt]
        _check(fn.dropout_forward(_ptr(fn, out), _ptr(fn, mask), _ptr(fn, inp), p,
                                  _uint64(seed), out.size), "dropout_forward")

    def dropout_backward(self, dinp, dout, mask):
        dt = _dtype_of(dinp, "dinp")
        _out(dinp, dt, dinp.shape, "dinp")
        dout, mask = _in(dout, dt, dinp.shape, "dout"), _in(mask, dt, dinp.shape, "mask")
        fn = FUNCS[dt]
        _check(fn.dropout_backward(_ptr(fn, dinp), _ptr(fn, dout), _ptr(fn, mask), dinp.size),
               "dropout_backward")

    @staticmethod
    def _hyper(hyper) -> np.ndarray:
        h = np.ascontiguousarray(hyper, dtype=np.float64)
        if h.shape != (9,):
            raise ValueError(f"hyper has shape {h.shape}, expected (9,)")
        return h

    def sgd_update(self, params, grads, buf, hyper, step):
        dt = _dtype_of(params, "params")
        shape = params.shape
        _out(params, dt, shape, "params")
        _out(buf, dt, shape, "buf")
        grads, h = _in(grads, dt, shape, "grads"), self._hyper(hyper)
        fn = FUNCS[dt]
        _check(fn.sgd_update(_ptr(fn, params), _ptr(fn, buf), _ptr(fn, grads),
                             ffi.from_buffer("double[]", h), int(step), params.size),
               "sgd_update")

    def adam_update(self, params, grads, m, v, hyper, step):
        dt = _dtype_of(params, "params")
        shape = params.shape
        _out(params, dt, shape, "params")
        _out(m, dt, shape, "m")
        _out(v, dt, shape, "v")
        grads, h = _in(grads, dt, shape, "grads"), self._hyper(hyper)
        fn = FUNCS[dt]
        _check(fn.adam_update(_ptr(fn, params), _ptr(fn, m), _ptr(fn, v), _ptr(fn, grads),
                              ffi.from_buffer("double[]", h), int(step), params.size),
               "adam_update")

    def sum_squares(self, x) -> float:
        dt = _dtype_of(x, "x")
        x = _in(x, dt, x.shape, "x")
        fn = FUNCS[dt]
        return float(fn.sum_squares(_ptr(fn, x), x.size))

    def scale(self, x, factor) -> None:
        dt = _dtype_of(x, "x")
        _out(x, dt, x.shape, "x")
        fn = FUNCS[dt]
        fn.scale(_ptr(fn, x), float(factor), x.size)

    # ------------------------------------------------------------------ driver helpers
    @staticmethod
    def _model(plan: Plan, bufs: Buffers) -> _ModelState:
        st = bufs.__dict__.get("_gk_c_model")
        if st is None or not st.matches(plan, bufs):
            st = _ModelState(plan, bufs)
            bufs.__dict__["_gk_c_model"] = st
        return st

    @staticmethod
    def _optim(opt: Optimizer, plan: Plan) -> _OptimState:
        st = opt.__dict__.get("_gk_c_optim")
        if st is not None and st.matches(opt) and st.buf1.dtype == plan.dtype \
                and st.buf1.size == plan.n_params:
            return st
        if opt.kind not in (SGD_KIND, ADAM_KIND):
            raise ValueError(f"unknown optimizer kind {opt.kind}")
        if opt.buf1 is None:
            opt.bind(plan.n_params, plan.dtype)
        if opt.buf1.dtype != plan.dtype or opt.buf1.size != plan.n_params:
            raise TypeError(f"optimizer state is {opt.buf1.size} {opt.buf1.dtype}; the plan "
                            f"has {plan.n_params} {plan.dtype}")
        if st is None or not st.matches(opt):
            st = _OptimState(opt)
            opt.__dict__["_gk_c_optim"] = st
        return st

    @staticmethod
    def _x(plan: Plan, bufs: Buffers, x) -> np.ndarray:
        """x as a C-contiguous (rows, n_in) array of the plan's dtype; the workspace grown
        to hold it. (Kept lean: it runs on every step.)"""
        if type(x) is not np.ndarray or x.dtype != plan.dtype or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=plan.dtype)
        if x.ndim != 2 or x.shape[1] != plan.n_in:
            raise ValueError(f"x has shape {x.shape}; the plan takes (rows, {plan.n_in})")
        rows = x.shape[0]
        if rows == 0:
            raise ValueError("x has no rows")
        if rows > bufs.capacity:
            bufs.ensure_capacity(rows)
        return x

    @staticmethod
    def _y(plan: Plan, y, rows: int) -> tuple[object, object]:
        """(target pointer, labels pointer) for the plan's loss; the unused one is NULL.
        The pointers keep their arrays alive."""
        if plan.loss_code == 1:
            labels = y
            if type(y) is not np.ndarray or y.dtype != np.int64 or not y.flags.c_contiguous:
                labels = np.ascontiguousarray(y, dtype=np.int64)
            if labels.ndim != 1:
                labels = labels.reshape(-1)
            if labels.shape[0] != rows:
                raise ValueError(f"labels have shape {np.shape(y)}; expected ({rows},)")
            return NULL, _i64ptr(labels)
        target = y
        if type(y) is not np.ndarray or y.dtype != plan.dtype or not y.flags.c_contiguous:
            target = np.ascontiguousarray(y, dtype=plan.dtype)
        if target.ndim == 1 and plan.n_out == 1:
            target = target.reshape(-1, 1)
        if target.shape != (rows, plan.n_out):
            raise ValueError(f"y has shape {target.shape}; expected ({rows}, {plan.n_out})")
        return _ptr(FUNCS[plan.dtype], target), NULL

    # ------------------------------------------------------------------ drivers
    def forward(self, plan: Plan, bufs: Buffers, x: np.ndarray, training: bool = False,
                seed: int = 0) -> np.ndarray:
        x = self._x(plan, bufs, x)
        st, fn = self._model(plan, bufs), FUNCS[plan.dtype]
        rows = x.shape[0]
        _check(fn.forward(st.m, _ptr(fn, x), rows, int(bool(training)), _uint64(seed)),
               "forward")
        return bufs.out(len(plan.layers) - 1, rows)

    def gradients(self, plan: Plan, bufs: Buffers, x: np.ndarray, y: np.ndarray,
                  seed: int = 0) -> float:
        x = self._x(plan, bufs, x)
        rows = x.shape[0]
        target, labels = self._y(plan, y, rows)
        st, fn = self._model(plan, bufs), FUNCS[plan.dtype]
        out = st.out
        _check(fn.gradients(st.m, out, _ptr(fn, x), target, labels, rows, _uint64(seed)),
               "gradients")
        return float(out[0])

    def train_step(self, plan: Plan, bufs: Buffers, x: np.ndarray, y: np.ndarray,
                   opt: Optimizer, seed: int = 0, clip_norm: float = 0.0) -> tuple[float, float]:
        x = self._x(plan, bufs, x)
        rows = x.shape[0]
        target, labels = self._y(plan, y, rows)
        st, ost, fn = self._model(plan, bufs), self._optim(opt, plan), FUNCS[plan.dtype]
        out = st.out
        _check(fn.train_step(st.m, ost.o, out, out + 1, _ptr(fn, x), target, labels, rows,
                             _uint64(seed), float(clip_norm)), "train_step")
        return float(out[0]), float(out[1])

    def train_epoch(self, plan: Plan, bufs: Buffers, X: np.ndarray, Y: np.ndarray,
                    perm: np.ndarray, batch_size: int, opt: Optimizer, seeds: np.ndarray,
                    clip_norm: float, losses: np.ndarray, gnorms: np.ndarray) -> int:
        X = np.asarray(X)
        if X.dtype != plan.dtype or not X.flags.c_contiguous:
            X = np.ascontiguousarray(X, dtype=plan.dtype)
        if X.ndim != 2 or X.shape[1] != plan.n_in:
            raise ValueError(f"X has shape {X.shape}; the plan takes (rows, {plan.n_in})")
        n_rows = X.shape[0]
        target, labels = self._y(plan, Y, n_rows)
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        perm = np.ascontiguousarray(perm, dtype=np.int64)
        if perm.ndim != 1:
            raise ValueError(f"perm must be a 1-D index array, got shape {perm.shape}")
        n_batches = (perm.shape[0] + batch_size - 1) // batch_size
        seeds = np.ascontiguousarray(seeds, dtype=np.uint64)
        for name, a in (("seeds", seeds), ("losses", losses), ("gnorms", gnorms)):
            if a.ndim != 1 or a.shape[0] < n_batches:
                raise ValueError(f"{name} holds {a.shape} entries for {n_batches} batches")
        for name, a in (("losses", losses), ("gnorms", gnorms)):
            if a.dtype != np.float64 or not a.flags.c_contiguous or not a.flags.writeable:
                raise TypeError(f"{name} must be a writeable contiguous float64 array")
        if n_batches == 0:
            return 0
        bufs.ensure_capacity(min(batch_size, perm.shape[0]))
        st, ost, fn = self._model(plan, bufs), self._optim(opt, plan), FUNCS[plan.dtype]
        done = fn.train_epoch(st.m, ost.o, ffi.from_buffer("double[]", losses),
                              ffi.from_buffer("double[]", gnorms), _ptr(fn, X), target,
                              labels, n_rows, _i64ptr(perm), perm.shape[0], batch_size,
                              ffi.from_buffer("uint64_t[]", seeds), float(clip_norm))
        return _check(int(done), "train_epoch")

    # ------------------------------------------------------------------ threads, report
    def set_threads(self, n: int) -> int:
        """OpenMP threads of the GEMM and the streaming kernels; returns the count in use
        (n capped by the processors here; 1 in a fork()ed child)."""
        n = int(n)
        lib.gk_set_threads(max(1, min(n, 1 << 30)))  # C caps it by the processors anyway
        return int(lib.gk_get_threads())

    def set_isa(self, name: str) -> str:
        """Use this instruction set ('generic', 'avx2', 'avx512') or the best below it."""
        codes = {v: k for k, v in ISA_NAMES.items()}
        if name not in codes:
            raise ValueError(f"unknown instruction set {name!r}; known: {', '.join(codes)}")
        return ISA_NAMES[int(lib.gk_set_isa(codes[name]))]

    def tile(self, dtype) -> tuple[int, int, int]:
        """(MR, NR, KC) of the GEMM in use for this dtype: the edges tests should probe."""
        mr, nr, kc = ffi.new("int64_t *"), ffi.new("int64_t *"), ffi.new("int64_t *")
        f = lib.gk_tile_f32 if np.dtype(dtype) == np.float32 else lib.gk_tile_f64
        f(mr, nr, kc)
        return int(mr[0]), int(nr[0]), int(kc[0])

    def fma_peak(self, dtype="float32", threads: int = 1, seconds: float = 0.2) -> dict:
        """GFLOP/s of independent FMA chains in the ISA in use on `threads` threads: the
        machine's arithmetic ceiling, measured in this run (DESIGN.md §7)."""
        f = lib.gk_fma_loop_f32 if np.dtype(dtype) == np.float32 else lib.gk_fma_loop_f64
        threads = max(1, int(threads))
        f(10000, threads)  # warm-up: threads started, clocks up
        iters, best = 100000, 0.0
        while True:
            t0 = time.perf_counter()
            flops = f(iters, threads)
            dt = time.perf_counter() - t0
            if dt > seconds / 4:
                best = max(best, flops / dt)
                break
            iters *= 4
        for _ in range(3):
            t0 = time.perf_counter()
            flops = f(iters, threads)
            best = max(best, flops / (time.perf_counter() - t0))
        return {"gflops": best / 1e9, "isa": ISA_NAMES[int(lib.gk_isa())], "threads": threads,
                "dtype": str(np.dtype(dtype))}

    def describe(self) -> dict:
        """Instruction set, OpenMP, threads, compiler and flags, register tiles."""
        return {
            "name": self.name,
            "isa": ISA_NAMES[int(lib.gk_isa())],
            "best_isa": ISA_NAMES[int(lib.gk_best_isa())],
            "openmp": bool(lib.gk_openmp()),
            "threads": int(lib.gk_get_threads()),
            "single_threaded_after_fork": bool(lib.gk_single_threaded()),
            "build": ffi.string(lib.gk_build_info()).decode(),
            "sanitized": bool(lib.gk_sanitized()),
            "tile_f32": self.tile(np.float32),
            "tile_f64": self.tile(np.float64),
            "matmul": "own blocked GEMM (packing, cache blocks, register micro-kernel)",
        }


BACKEND = CBackend
