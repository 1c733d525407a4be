"""Property tests (hypothesis) of every kernel on every backend, and of the model entry points.

- edge shapes: 0 and 1 rows/columns and sizes that are no multiple of any block size give
  the reference's answer (or, for a mean over nothing, a clear error or NaN);
- layout: non-contiguous, Fortran-order and read-only inputs give results bitwise equal
  to those of their contiguous copies; an output a kernel cannot write in place is
  refused with a clear error and left untouched;
- sizes: inconsistent shapes are refused before a kernel runs; layer sizes beyond 64-bit
  indexing are refused before anything is allocated, and sizes beyond 32 bits are planned
  with exact 64-bit offsets.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradkern as gk
from gradkern.backends.numpy_backend import NumpyBackend
from gradkern.contract import Layer, Ops
from gradkern.optim import SGD, Adam, AdamW
from gradkern.plan import ACTIVATIONS, LOSSES, LayerSpec, Plan
from gradkern.verify.tolerance import K_MATMUL, K_STATS, assert_close

REF = NumpyBackend()
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

# 0, 1, odd sizes, primes, and sizes one off the C tiles (MR 8; NR 16/32; vectors 8/16)
EDGE = [0, 1, 2, 3, 5, 7, 9, 13, 15, 17, 31, 33]
dim = st.one_of(st.sampled_from(EDGE), st.integers(0, 70))
pos_dim = st.one_of(st.sampled_from([d for d in EDGE if d]), st.integers(1, 70))
dtypes = st.sampled_from([np.float32, np.float64])


def _rand(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ------------------------------------------------------------------- kernel cases
# A case: inputs (a dict of arrays) and a call that allocates fresh C-contiguous outputs
# (NaN-filled), runs the kernel and returns them. In-out arrays (parameters, optimizer
# state, running statistics) are outputs: they are copied from the inputs first.

def _optimizer(name):
    return {"sgd": SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
            "adam": Adam(lr=1e-2, weight_decay=1e-2),
            "adamw": AdamW(lr=1e-2, weight_decay=0.1)}[name]


def make_case(name, dims, dtype, seed):
    """(inputs, call(be, inputs) -> outputs) for kernel `name`."""
    rng = np.random.default_rng(seed)
    nan = lambda shape: np.full(shape, np.nan, dtype=dtype)  # noqa: E731
    if name in ("matmul_forward", "matmul_backward"):
        B, C, OC = dims
        ins = {"inp": _rand(rng, (B, C), dtype), "weight": _rand(rng, (C, OC), dtype),
               "bias": _rand(rng, OC, dtype), "dout": _rand(rng, (B, OC), dtype)}
        if name == "matmul_forward":
            def call(be, a):
                out = nan((B, OC))
                be.matmul_forward(out, a["inp"], a["weight"], a["bias"])
                return {"out": out}
        else:
            def call(be, a):
                dinp, dw, db = nan((B, C)), nan((C, OC)), nan(OC)
                be.matmul_backward(dinp, dw, db, a["dout"], a["inp"], a["weight"])
                return {"dinp": dinp, "dweight": dw, "dbias": db}
        return ins, call
    if name.startswith("activation"):
        B, N, kind = dims
        ins = {"inp": _rand(rng, (B, N), dtype, 3.0), "dout": _rand(rng, (B, N), dtype)}
        ins["out"] = np.empty((B, N), dtype)
        REF.activation_forward(kind, ins["out"], ins["inp"])
        if name == "activation_forward":
            def call(be, a):
                out = nan((B, N))
                be.activation_forward(kind, out, a["inp"])
                return {"out": out}
        else:
            def call(be, a):
                dinp = nan((B, N))
                be.activation_backward(kind, dinp, a["dout"], a["inp"], a["out"])
                return {"dinp": dinp}
        return ins, call
    if name == "loss":
        B, K, kind = dims
        ins = {"pred": _rand(rng, (B, K), dtype, 3.0)}
        if kind == 1:
            ins["target"] = rng.integers(0, max(K, 1), B).astype(np.int64)
        elif kind == 2:
            ins["target"] = rng.uniform(0, 1, (B, K)).astype(dtype)
        else:
            ins["target"] = _rand(rng, (B, K), dtype)

        def call(be, a):
            dpred = nan((B, K))
            loss = be.loss_forward_backward(kind, dpred, a["pred"], a["target"])
            return {"dpred": dpred, "loss": np.array([loss])}
        return ins, call
    if name.startswith("batchnorm"):
        B, N = dims[:2]
        ins = {"inp": _rand(rng, (B, N), dtype, 2.0), "gamma": _rand(rng, N, dtype),
               "beta": _rand(rng, N, dtype), "rmean": _rand(rng, N, dtype),
               "rvar": (rng.uniform(0.5, 2.0, N)).astype(dtype), "dout": _rand(rng, (B, N), dtype),
               "mean": _rand(rng, N, dtype), "rstd": rng.uniform(0.5, 2.0, N).astype(dtype),
               "var": rng.uniform(0.1, 2.0, N).astype(dtype)}
        if name == "batchnorm_train":
            def call(be, a):
                out, mean, var, rstd = nan((B, N)), nan(N), nan(N), nan(N)
                be.batchnorm_forward(out, mean, var, rstd, a["inp"], a["gamma"], a["beta"],
                                     a["rmean"], a["rvar"], True, 1e-5)
                return {"out": out, "mean": mean, "var": var, "rstd": rstd}
        elif name == "batchnorm_eval":
            def call(be, a):
                out, cache = nan((B, N)), nan(N)
                be.batchnorm_forward(out, cache, cache, cache, a["inp"], a["gamma"], a["beta"],
                                     a["rmean"], a["rvar"], False, 1e-5)
                return {"out": out}
        elif name == "batchnorm_backward":
            def call(be, a):
                dinp, dg, db = nan((B, N)), nan(N), nan(N)
                be.batchnorm_backward(dinp, dg, db, a["dout"], a["inp"], a["mean"], a["rstd"],
                                      a["gamma"])
                return {"dinp": dinp, "dgamma": dg, "dbeta": db}
        else:  # batchnorm_update_running
            def call(be, a):
                rm, rv = np.array(a["rmean"], order="C"), np.array(a["rvar"], order="C")
                be.batchnorm_update_running(rm, rv, a["mean"], a["var"], B, 0.1)
                return {"running_mean": rm, "running_var": rv}
        return ins, call
    if name.startswith("dropout"):
        B, N = dims[:2]
        ins = {"inp": _rand(rng, (B, N), dtype), "dout": _rand(rng, (B, N), dtype)}
        ins["mask"] = np.empty((B, N), dtype)
        REF.dropout_forward(np.empty((B, N), dtype), ins["mask"], ins["inp"], 0.3, 99)
        if name == "dropout_forward":
            def call(be, a):
                out, mask = nan((B, N)), nan((B, N))
                be.dropout_forward(out, mask, a["inp"], 0.3, 99)
                return {"out": out, "mask": mask}
        else:
            def call(be, a):
                dinp = nan((B, N))
                be.dropout_backward(dinp, a["dout"], a["mask"])
                return {"dinp": dinp}
        return ins, call
    # optimizers: three steps on flat buffers
    (n,) = dims[:1]
    opt_name = name.split("_")[0]
    ins = {"params": _rand(rng, n, dtype), "grads": _rand(rng, n, dtype)}

    def call(be, a):
        opt = _optimizer(opt_name)
        opt.bind(n, np.dtype(dtype))
        p = np.array(a["params"], order="C")
        for step in (1, 2, 3):
            if opt.kind == 0:
                be.sgd_update(p, a["grads"], opt.buf1, opt.hyper, step)
            else:
                be.adam_update(p, a["grads"], opt.buf1, opt.buf2, opt.hyper, step)
        return {"params": p, "buf1": opt.buf1.copy()}
    return ins, call


KERNELS = ["matmul_forward", "matmul_backward", "activation_forward", "activation_backward",
           "loss", "batchnorm_train", "batchnorm_eval", "batchnorm_backward",
           "batchnorm_update_running", "dropout_forward", "dropout_backward", "sgd_update",
           "adam_update", "adamw_update"]


@st.composite
def kernel_cases(draw, kernels=KERNELS):
    name = draw(st.sampled_from(kernels))
    if name.startswith("matmul"):
        dims = (draw(dim), draw(dim), draw(dim))
    elif name.startswith("activation"):
        dims = (draw(dim), draw(dim), draw(st.integers(0, len(ACTIVATIONS) - 1)))
    elif name == "loss":
        dims = (draw(dim), draw(dim), draw(st.integers(0, len(LOSSES) - 1)))
    elif name.endswith("_update") and not name.startswith("batchnorm"):
        dims = (draw(st.one_of(st.sampled_from(EDGE), st.integers(0, 300))),)
    else:
        dims = (draw(dim), draw(dim))
    return name, dims, draw(dtypes), draw(st.integers(0, 2**31))


def _undefined(name, dims) -> bool:
    """A mean over nothing: the loss of zero elements, batch statistics of zero rows."""
    if name == "loss":
        B, K, kind = dims
        return B * K == 0 or (kind == 1 and K == 0)
    return name == "batchnorm_train" and dims[0] == 0


# ------------------------------------------------------------------- edge shapes
@SETTINGS
@given(case=kernel_cases())
def test_edge_shapes_match_the_reference(backend, case):
    """Every kernel at 0/1/odd sizes agrees with the float64 NumPy reference (k·u·S)."""
    name, dims, dtype, seed = case
    be = gk.backends.get(backend)
    ins, call = make_case(name, dims, dtype, seed)
    if _undefined(name, dims):
        # a mean over nothing: refused with the same clear error on every backend
        with pytest.raises(ValueError, match="empty batch|at least one row|needs"):
            call(be, ins)
        return
    with np.errstate(all="ignore"):
        got = call(be, ins)
    ins64 = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in ins.items()}
    ref_case = make_case(name, dims, np.float64, seed)[1]
    with np.errstate(all="ignore"):
        ref = ref_case(REF, ins64)
    scale = 1.0 + max((float(np.abs(v).max()) for v in ins64.values() if v.size), default=0.0)
    inner = max(dims[1] if len(dims) > 1 else 1, dims[0], 1)  # terms in a sum
    for k, r in ref.items():
        g = got[k]
        assert g.shape == r.shape, (k, g.shape, r.shape)
        if k == "rstd" or k == "dinp" and name == "batchnorm_backward":
            S = np.abs(r) * (1 + scale) ** 3 * inner  # rstd amplifies; sums over the batch
        else:
            S = np.abs(r) + scale * scale * inner
        assert_close(g, r, S, K_STATS, f"{name} {dims} {np.dtype(dtype)} {k}", dtype=dtype)


# ------------------------------------------------------------------- layouts
def _variants(a: np.ndarray) -> dict[str, np.ndarray]:
    """Non-contiguous, Fortran-order and read-only arrays equal to a."""
    out = {}
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],) if a.ndim else (), dtype=a.dtype)
    if a.ndim:
        wide[..., ::2] = a
        out["strided"] = wide[..., ::2]
    if a.ndim == 2:
        out["fortran"] = np.asfortranarray(a)
    ro = a.copy()
    ro.flags.writeable = False
    out["read-only"] = ro
    return out


def _bitwise(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@SETTINGS
@given(case=kernel_cases(), which=st.integers(0, 2**16))
def test_input_layouts_are_bitwise_invariant(backend, case, which):
    """One input at a time replaced by a strided, Fortran-order or read-only equal array."""
    name, dims, dtype, seed = case
    if _undefined(name, dims):
        return
    be = gk.backends.get(backend)
    ins, call = make_case(name, dims, dtype, seed)
    with np.errstate(all="ignore"):
        base = call(be, ins)
    keys = sorted(ins)
    key = keys[which % len(keys)]
    for label, variant in _variants(ins[key]).items():
        assert np.array_equal(variant, ins[key])
        with np.errstate(all="ignore"):
            got = call(be, {**ins, key: variant})
        for k in base:
            assert _bitwise(got[k], base[k]), f"{name} {dims}: {key} {label} changed {k}"


@SETTINGS
@given(B=pos_dim, C=pos_dim, OC=pos_dim, dtype=dtypes,
       layout=st.sampled_from(["fortran", "strided", "read-only"]))
def test_matmul_output_layouts(backend, B, C, OC, dtype, layout):
    """An output that is not C-contiguous and writeable: refused with the output untouched
    (C: ValueError), or a correct result (NumPy writes through any writeable view)."""
    be = gk.backends.get(backend)
    ins, call = make_case("matmul_forward", (B, C, OC), dtype, 5)
    ref = call(be, ins)["out"]
    out = _variants(np.full((B, OC), np.nan, dtype))[layout]
    try:
        be.matmul_forward(out, ins["inp"], ins["weight"], ins["bias"])
    except Exception as exc:  # a refusal: the output must be untouched
        assert np.isnan(out).all(), f"{layout} out refused ({exc!r}) but written"
        if backend != "numba":  # numba's errors here are its own (TypingError, assert)
            assert isinstance(exc, (ValueError, TypeError)), repr(exc)
        return
    assert layout != "read-only", "wrote into a read-only array"
    # outputs outside the contract (C-contiguous) may be computed in another summation
    # order (NumPy's matmul into a Fortran `out` is): correct to 16·u·S, not bitwise
    S = np.abs(ins["inp"].astype(np.float64)) @ np.abs(ins["weight"]) + np.abs(ins["bias"])
    assert_close(out, ref, S, K_MATMUL, f"{layout} out differs", dtype=dtype)


@SETTINGS
@given(B=pos_dim, N=pos_dim, dtype=dtypes, kind=st.integers(0, 5),
       layout=st.sampled_from(["fortran", "strided"]))
def test_elementwise_output_layouts(backend, B, N, dtype, kind, layout):
    """activation_forward into a non-C output: refused with a clear error, or exact."""
    be = gk.backends.get(backend)
    ins, call = make_case("activation_forward", (B, N, kind), dtype, 6)
    ref = call(be, ins)["out"]
    out = _variants(np.full((B, N), np.nan, dtype))[layout]
    try:
        be.activation_forward(kind, out, ins["inp"])
    except ValueError as exc:  # a clear refusal, the output untouched
        assert "contiguous" in str(exc) and np.isnan(out).all()
        return
    assert _bitwise(np.ascontiguousarray(out), ref)


# ------------------------------------------------------------------- model level
def _model(backend, dtype, loss):
    return gk.MLP([7, 13, 9, 3], activation="tanh", loss=loss, dtype=dtype, backend=backend,
                  batchnorm=True, dropout=0.1, seed=2)


@SETTINGS
@given(rows=st.integers(2, 40), dtype=st.sampled_from(["float32", "float64"]),
       loss=st.sampled_from(list(LOSSES)), layout=st.sampled_from(
           ["strided", "fortran", "read-only", "float64-from-int"]),
       seed=st.integers(0, 2**20))
def test_model_entry_points_are_layout_invariant(backend, rows, dtype, loss, layout, seed):
    """predict, gradients and train_step with X and y in any layout: the same bits."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, 7))
    if layout == "float64-from-int":
        X = np.round(X * 3)
    if loss == "cross_entropy":
        y = rng.integers(0, 3, rows)
    elif loss == "binary_cross_entropy":
        y = rng.integers(0, 2, (rows, 3)).astype(float)
    else:
        y = rng.standard_normal((rows, 3))
    if layout == "float64-from-int":
        Xv, yv = X.astype(np.int64), y
    else:
        Xv = _variants(X)[layout]
        yv = _variants(y)[layout] if layout in _variants(y) else y
    assert np.array_equal(Xv, X) and np.array_equal(yv, y)

    def run(Xa, ya):
        m = _model(backend, dtype, loss)
        pred = m.predict_raw(Xa)
        loss_g, grads = m.named_gradients(Xa, ya)
        opt = gk.optim.Adam(lr=1e-2)
        step = [m.train_step(Xa, ya, opt) for _ in range(2)]
        return pred, loss_g, grads, step, m.bufs.params.copy(), m.bufs.state.copy()

    a, b = run(X, y), run(Xv, yv)
    assert _bitwise(a[0], b[0])
    assert a[1] == b[1] and a[3] == b[3]
    for k in a[2]:
        assert _bitwise(a[2][k], b[2][k]), k
    assert _bitwise(a[4], b[4]) and _bitwise(a[5], b[5])
    if layout == "read-only":
        assert not Xv.flags.writeable  # untouched, still read-only


# ------------------------------------------------------------------- sizes
@pytest.mark.parametrize("sizes", [
    [2**31, 2**31, 1],          # 2**62 weights: beyond what int64 offsets may index
    [2**32, 2**32],             # 2**64: overflows int64 itself
    [3, 2**62, 5],
    [2**40, 2**23, 2**20],       # the sum of products crosses 2**62
])
def test_layer_sizes_beyond_64_bit_indexing_are_refused(backend, sizes):
    with pytest.raises(ValueError, match="more parameters than can be indexed"):
        gk.MLP(sizes, backend=backend)


def test_plan_offsets_beyond_32_bits_are_exact():
    """A Plan is plain data: sizes whose products overflow 32 (not 64) bits get exact int64
    offsets, computed without allocating anything."""
    n = 2**16 + 3
    plan = Plan([LayerSpec(Layer.DENSE, n, n), LayerSpec(Layer.DENSE, n, 2**15 + 1)], "mse",
                "float32")
    assert plan.ops.dtype == np.int64
    w0 = n * n  # > 2**32
    assert w0 > 2**32 and plan.ops[0, Ops.PB] == (w0 + 15) // 16 * 16  # 64-byte aligned
    assert plan.ops[1, Ops.PA] >= w0 + n and plan.ops[1, Ops.PA] % 16 == 0
    assert plan.n_params >= plan.ops[1, Ops.PA] + n * (2**15 + 1)
    assert plan.flops_per_step(2**20) == (6 * 2**20 * (n * n + n * (2**15 + 1))
                                          - 2 * 2**20 * n * n)


def _shape_mismatch_script(backend: str) -> str:
    """Kernel calls whose inputs are longer or shorter than the outputs say, each into an
    output inside a guard band; prints one line per call."""
    return textwrap.dedent(f"""
        import numpy as np, gradkern as gk
        from gradkern.optim import SGD, Adam
        be = gk.backends.get({backend!r})
        def guarded(shape):
            g = np.full(int(np.prod(shape)) + 4096, 7.0)
            return g, g[:int(np.prod(shape))].reshape(shape)
        def attempt(label, fn, guard, n):
            try:
                fn()
                intact = bool((guard[n:] == 7.0).all())
                print(label, "computed", "guard-intact" if intact else "GUARD-OVERWRITTEN")
            except (ValueError, TypeError) as e:
                ok = bool((guard == 7.0).all())
                print(label, "refused", "untouched" if ok else "TOUCHED", type(e).__name__)
        big = np.ones((40, 40))
        g, out = guarded((2, 2))
        attempt("activation_forward", lambda: be.activation_forward(1, out, big), g, 4)
        g, out = guarded((2, 2))
        attempt("activation_backward", lambda: be.activation_backward(1, out, big, big, big), g, 4)
        g, out = guarded((2, 2))
        attempt("dropout_backward", lambda: be.dropout_backward(out, big, big), g, 4)
        g, out = guarded((2, 2))
        attempt("matmul_forward", lambda: be.matmul_forward(out, np.ones((2, 3)),
                np.ones((5, 2)), np.ones(2)), g, 4)
        g, p = guarded((4,))
        attempt("sgd_update", lambda: be.sgd_update(p, np.ones(900), np.zeros(4),
                SGD(lr=0.1).hyper, 1), g, 4)
        g, p = guarded((4,))
        o = Adam(); o.bind(4, np.float64)
        attempt("adam_update", lambda: be.adam_update(p, np.ones(3), o.buf1, o.buf2,
                o.hyper, 1), g, 4)
        g, out = guarded((3, 2))
        attempt("batchnorm_backward", lambda: be.batchnorm_backward(out, np.zeros(2),
                np.zeros(2), np.ones((30, 20)), np.ones((30, 20)), np.zeros(2), np.ones(2),
                np.ones(2)), g, 6)
        print("done")
    """)


def _mismatch_report(backend):
    # a cache of its own: Numba's on-disk cache is not safe against two processes
    # compiling into it in turn with different in-memory views of its index
    env = dict(os.environ, NUMBA_CACHE_DIR=tempfile.mkdtemp(prefix="gk-numba-"))
    done = subprocess.run([sys.executable, "-c", _shape_mismatch_script(backend)],
                          capture_output=True, text=True, timeout=300, env=env)
    return done.returncode, done.stdout, done.stderr


def _assert_all_refused(rc, out, err):
    assert rc == 0 and out.rstrip().endswith("done"), f"crashed (rc {rc}): {out}\n{err[-800:]}"
    lines = out.strip().splitlines()[:-1]
    bad = [ln for ln in lines if "refused untouched" not in ln]
    assert not bad, "inconsistent shapes were not refused:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", ["c", "numba", "numpy"])
def test_inconsistent_kernel_shapes_are_refused(name):
    """In a subprocess: a backend that writes out of bounds must not take pytest down.
    (Numba's kernel methods did not check shapes and wrote past `out` until d4887ed.)"""
    if name not in gk.backends.available():
        pytest.skip(f"backend {name} not available")
    _assert_all_refused(*_mismatch_report(name))


def test_model_refuses_mismatched_shapes_before_any_kernel(backend):
    """Widths, rows and 1-D/3-D X are checked by the model; nothing changes on refusal."""
    m = gk.MLP([5, 4, 2], loss="mse", backend=backend, seed=0)
    before = m.bufs.params.copy()
    opt = gk.optim.SGD(lr=0.1)
    for X, y in [(np.ones((3, 4)), np.ones((3, 2))), (np.ones((3, 5)), np.ones((4, 2))),
                 (np.ones(5), np.ones(2)), (np.ones((2, 3, 5)), np.ones((2, 2))),
                 (np.ones((0, 5)), np.ones((0, 2))), (np.ones((3, 5)), np.ones((3, 3)))]:
        with pytest.raises(ValueError):
            m.train_step(X, y, opt)
    assert _bitwise(m.bufs.params, before)
    assert opt.step[0] == 0
