"""The C backend: hand-written kernels through cffi, a whole training step per call.

The C code (csrc/) holds every kernel of the contract in float32 and float64, our own
blocked GEMM with a register micro-kernel per instruction set (AVX-512, AVX2+FMA,
generic C, chosen at load), and fused drivers that run a forward pass, a training step
or a whole epoch of minibatches in one call. This file is the thin wrapper: the
arguments arrive checked by the adapter (base.Backend); it allocates in Python and
passes pointers and int64 sizes.

Pointers to a model's flat buffers and plan arrays are converted once per
(plan, Buffers, capacity) into a `gk_model` struct, and once per optimizer into a
`gk_optim` struct; the backend keeps both itself (keyed weakly by the Buffers and the
Optimizer, nothing stored on them), and a step then passes only x, y and the seed.
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

from ..contract import Err, Isa, Loss, names
from ..optim import Optimizer
from ..plan import Buffers, Plan
from .base import Backend, PerObject


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
    isa, known = os.environ.get("GRADKERN_ISA"), names(Isa)
    if isa and isa not in known:
        warnings.warn(f"GRADKERN_ISA={isa!r} is not one of {', '.join(known)}; ignored",
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

ISA_NAMES = {int(m): m.name.lower() for m in Isa}  # {0: 'generic', 1: 'avx2', 2: 'avx512'}
ERRORS = {
    Err.LABEL: "a class label is outside [0, K)",
    Err.INDEX: "a permutation entry is outside [0, N)",
    Err.SHAPE: "array sizes do not fit the plan or the workspace",
    Err.WORKSPACE: "the GEMM workspace is too small",
    Err.KIND: "unknown kind code",
    Err.PLAN: "the plan's offsets do not fit its buffers",
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
                     "rmsprop_update", "adagrad_update",
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
        self.wbuf = np.zeros(cap, dtype=dt)
        m = ffi.new("gk_model *")
        m.n_layers = len(plan.layers)
        m.ops, m.fargs = _i64ptr(self.ops), ffi.cast("double *", self.fargs.ctypes.data)
        m.out_off, m.cache_off = _i64ptr(self.out_off), _i64ptr(self.cache_off)
        m.loss, m.capacity = int(plan.loss_code), cap
        for name in ("params", "grads", "state", "acts", "dacts", "cache"):
            a = getattr(bufs, name)
            setattr(m, name, ffi.cast("void *", a.ctypes.data))
        m.n_params, m.n_state = bufs.params.size, bufs.state.size
        m.n_acts, m.n_cache = min(bufs.acts.size, bufs.dacts.size), bufs.cache.size
        m.xbuf = ffi.cast("void *", self.xbuf.ctypes.data)
        m.ybuf = ffi.cast("void *", self.ybuf.ctypes.data)
        m.lbuf = _i64ptr(self.lbuf)
        m.wbuf = ffi.cast("void *", self.wbuf.ctypes.data)
        m.delta = float(plan.delta)
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
        self.buf1, self.buf2, self.buf3 = opt.buf1, opt.buf2, opt.buf3
        self.hyper, self.step = opt.hyper, opt.step
        o = ffi.new("gk_optim *")
        o.kind = int(opt.kind)
        o.hyper = ffi.cast("double *", opt.hyper.ctypes.data)
        o.step = _i64ptr(opt.step)
        o.buf1 = ffi.cast("void *", opt.buf1.ctypes.data)
        o.buf2 = _slot(opt.buf2)
        o.buf3 = _slot(opt.buf3)
        self.o = o

    def matches(self, opt: Optimizer) -> bool:
        return (self.buf1 is opt.buf1 and self.buf2 is opt.buf2 and self.buf3 is opt.buf3
                and self.hyper is opt.hyper and self.step is opt.step)


def _slot(a):
    """A state slot for C: NULL when the optimizer does not use it (None or empty)."""
    return ffi.cast("void *", a.ctypes.data) if a is not None and a.size else NULL



class CBackend(Backend):
    """C kernels (cffi) with fused step and epoch drivers. The arguments arrive checked
    (base.Backend); this wrapper turns them into pointers and int64 sizes. C refuses an
    out-of-range label itself (GK_ERR_LABEL) before any model state changes."""

    name = "c"
    checks_labels = True
    lib = lib  # the compiled library: its GK_* values are compared with the contract

    def __init__(self) -> None:
        self._tls = threading.local()
        self._models = PerObject()  # Buffers -> _ModelState
        self._optims = PerObject()  # Optimizer -> _OptimState

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
    def _matmul_forward(self, out, inp, weight, bias):
        fn = FUNCS[out.dtype]
        (B, OC), C = out.shape, inp.shape[1]
        w = self._work(out.dtype, fn.gemm_work(B, OC, C))
        _check(fn.matmul_forward(_ptr(fn, out), _ptr(fn, inp), _ptr(fn, weight),
                                 _ptr(fn, bias), B, C, OC, _ptr(fn, w), w.size),
               "matmul_forward")

    # dinp (B, C) = dout @ weight.T (skipped when None); dweight = inp.T @ dout; dbias = Σ dout
    def _matmul_backward(self, dinp, dweight, dbias, dout, inp, weight):
        fn = FUNCS[dweight.dtype]
        (C, OC), B = dweight.shape, dout.shape[0]
        w = self._work(dweight.dtype, max(fn.gemm_work(B, C, OC), fn.gemm_work(C, OC, B)))
        _check(fn.matmul_backward(_ptr(fn, dinp), _ptr(fn, dweight), _ptr(fn, dbias),
                                  _ptr(fn, dout), _ptr(fn, inp), _ptr(fn, weight), B, C, OC,
                                  _ptr(fn, w), w.size), "matmul_backward")

    # out (B, N) = act(inp)
    def _activation_forward(self, kind, out, inp):
        fn = FUNCS[out.dtype]
        _check(fn.activation_forward(kind, _ptr(fn, out), _ptr(fn, inp), out.size),
               f"activation code {kind}")

    # dinp (B, N) = dout * act'(inp); out = act(inp)
    def _activation_backward(self, kind, dinp, dout, inp, out):
        fn = FUNCS[dinp.dtype]
        _check(fn.activation_backward(kind, _ptr(fn, dinp), _ptr(fn, dout), _ptr(fn, inp),
                                      _ptr(fn, out), dinp.size), f"activation code {kind}")

    # pred, dpred (B, K); target (B, K) floats or labels (B,) int64; weight (B,) or None
    def _loss_forward_backward(self, kind, dpred, pred, target, weight, delta):
        fn = FUNCS[dpred.dtype]
        B, K = dpred.shape
        loss = ffi.new("double *")
        if kind == Loss.CROSS_ENTROPY:
            t, labels = NULL, _i64ptr(target)
        else:
            t, labels = _ptr(fn, target), NULL
        _check(fn.loss_forward_backward(kind, _ptr(fn, dpred), loss, _ptr(fn, pred), t, labels,
                                        _ptr(fn, weight), B, K, delta), f"loss code {kind}")
        return float(loss[0])

    # out, inp (B, N); mean, var, rstd, gamma, beta, running stats (N); None: not read
    def _batchnorm_forward(self, out, mean, var, rstd, inp, gamma, beta,
                           running_mean, running_var, training, eps):
        fn = FUNCS[out.dtype]
        B, N = out.shape
        _check(fn.batchnorm_forward(_ptr(fn, out), _ptr(fn, mean), _ptr(fn, var), _ptr(fn, rstd),
                                    _ptr(fn, inp), _ptr(fn, gamma), _ptr(fn, beta),
                                    _ptr(fn, running_mean), _ptr(fn, running_var),
                                    int(training), eps, B, N), "batchnorm_forward")

    def _batchnorm_backward(self, dinp, dgamma, dbeta, dout, inp, mean, rstd, gamma):
        fn = FUNCS[dgamma.dtype]
        B, N = dout.shape
        _check(fn.batchnorm_backward(_ptr(fn, dinp), _ptr(fn, dgamma), _ptr(fn, dbeta),
                                     _ptr(fn, dout), _ptr(fn, inp), _ptr(fn, mean),
                                     _ptr(fn, rstd), _ptr(fn, gamma), B, N), "batchnorm_backward")

    def _batchnorm_update_running(self, running_mean, running_var, mean, var, rows, momentum):
        fn = FUNCS[running_mean.dtype]
        _check(fn.batchnorm_update_running(_ptr(fn, running_mean), _ptr(fn, running_var),
                                           _ptr(fn, mean), _ptr(fn, var), rows, momentum,
                                           running_mean.size), "batchnorm_update_running")

    def _dropout_forward(self, out, mask, inp, p, seed):
        fn = FUNCS[out.dtype]
        _check(fn.dropout_forward(_ptr(fn, out), _ptr(fn, mask), _ptr(fn, inp), p, seed,
                                  out.size), "dropout_forward")

    def _dropout_backward(self, dinp, dout, mask):
        fn = FUNCS[dinp.dtype]
        _check(fn.dropout_backward(_ptr(fn, dinp), _ptr(fn, dout), _ptr(fn, mask), dinp.size),
               "dropout_backward")

    def _sgd_update(self, params, grads, buf, hyper, step):
        fn = FUNCS[params.dtype]
        if buf is None:  # no momentum: C is still handed a buffer it may not overrun
            buf = self._work(params.dtype, params.size)
        _check(fn.sgd_update(_ptr(fn, params), _ptr(fn, buf), _ptr(fn, grads),
                             ffi.from_buffer("double[]", hyper), step, params.size),
               "sgd_update")

    def _adam_update(self, params, grads, m, v, hyper, step):
        fn = FUNCS[params.dtype]
        _check(fn.adam_update(_ptr(fn, params), _ptr(fn, m), _ptr(fn, v), _ptr(fn, grads),
                              ffi.from_buffer("double[]", hyper), step, params.size),
               "adam_update")

    def _rmsprop_update(self, params, grads, square_avg, momentum_buffer, grad_avg, hyper,
                        step):
        fn = FUNCS[params.dtype]
        _check(fn.rmsprop_update(_ptr(fn, params), _ptr(fn, square_avg),
                                 _ptr(fn, momentum_buffer), _ptr(fn, grad_avg), _ptr(fn, grads),
                                 ffi.from_buffer("double[]", hyper), step, params.size),
               "rmsprop_update")

    def _adagrad_update(self, params, grads, state_sum, hyper, step):
        fn = FUNCS[params.dtype]
        _check(fn.adagrad_update(_ptr(fn, params), _ptr(fn, state_sum), _ptr(fn, grads),
                                 ffi.from_buffer("double[]", hyper), step, params.size),
               "adagrad_update")

    def _sum_squares(self, x) -> float:
        fn = FUNCS[x.dtype]
        return float(fn.sum_squares(_ptr(fn, x), x.size))

    def _scale(self, x, factor) -> None:
        fn = FUNCS[x.dtype]
        fn.scale(_ptr(fn, x), factor, x.size)

    # ------------------------------------------------------------------ driver helpers
    def _model(self, plan: Plan, bufs: Buffers) -> _ModelState:
        st = self._models.get(bufs)
        if st is None or not st.matches(plan, bufs):
            st = _ModelState(plan, bufs)
            self._models.put(bufs, st)
        return st

    def _optim(self, opt: Optimizer) -> _OptimState:
        st = self._optims.get(opt)
        if st is None or not st.matches(opt):
            st = _OptimState(opt)
            self._optims.put(opt, st)
        return st

    @staticmethod
    def _y_ptrs(fn: _Funcs, plan: Plan, y: np.ndarray) -> tuple[object, object]:
        """(target pointer, labels pointer) for the plan's loss; the unused one is NULL."""
        if plan.loss_code == Loss.CROSS_ENTROPY:
            return NULL, _i64ptr(y)
        return _ptr(fn, y), NULL

    # ------------------------------------------------------------------ drivers
    def _forward(self, plan: Plan, bufs: Buffers, x, training, seed):
        st, fn = self._model(plan, bufs), FUNCS[plan.dtype]
        rows = x.shape[0]
        _check(fn.forward(st.m, _ptr(fn, x), rows, int(training), seed), "forward")
        return bufs.out(len(plan.layers) - 1, rows)

    def _gradients(self, plan: Plan, bufs: Buffers, x, y, seed, weight=None):
        st, fn = self._model(plan, bufs), FUNCS[plan.dtype]
        target, labels = self._y_ptrs(fn, plan, y)
        out = st.out
        _check(fn.gradients(st.m, out, _ptr(fn, x), target, labels, _ptr(fn, weight),
                            x.shape[0], seed), "gradients")
        return out[0]

    def _train_step(self, plan: Plan, bufs: Buffers, x, y, opt: Optimizer, seed, clip_norm,
                    weight=None):
        st, ost, fn = self._model(plan, bufs), self._optim(opt), FUNCS[plan.dtype]
        target, labels = self._y_ptrs(fn, plan, y)
        out = st.out
        _check(fn.train_step(st.m, ost.o, out, out + 1, _ptr(fn, x), target, labels,
                             _ptr(fn, weight), x.shape[0], seed, clip_norm), "train_step")
        return out[0], out[1]

    def _train_epoch(self, plan: Plan, bufs: Buffers, X, Y, perm, batch_size, opt: Optimizer,
                     seeds, clip_norm, losses, gnorms, lrs=None, weights=None):
        st, ost, fn = self._model(plan, bufs), self._optim(opt), FUNCS[plan.dtype]
        target, labels = self._y_ptrs(fn, plan, Y)
        done = fn.train_epoch(st.m, ost.o, ffi.from_buffer("double[]", losses),
                              ffi.from_buffer("double[]", gnorms), _ptr(fn, X), target,
                              labels, _ptr(fn, weights), X.shape[0], _i64ptr(perm),
                              perm.shape[0], batch_size, ffi.from_buffer("uint64_t[]", seeds),
                              NULL if lrs is None else ffi.from_buffer("double[]", lrs),
                              clip_norm)
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
        machine's arithmetic ceiling, measured in this run (docs/design.md §5)."""
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

