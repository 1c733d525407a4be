"""Tests only the C backend needs: guard bands around every output, every instruction set,
bit-identical results across thread counts and Python threads, errors from C-checked
indices, and the sanitizer canary (a planted out-of-bounds write that `make sanitize`
must catch). The shared suite (test_kernels.py, test_drivers.py) covers agreement with
the NumPy reference.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

import gradkern as gk
from conftest import assert_close
from gradkern import contract
from gradkern.backends.numpy_backend import NumpyBackend
from gradkern.contract import Isa
from gradkern.optim import SGD, Adam

if "c" not in gk.backends.available():
    pytest.skip(f"C backend unavailable: {gk.backends.status()['c']}", allow_module_level=True)

from gradkern.backends import c_backend  # noqa: E402

C = gk.backends.get("c")
REF = NumpyBackend()
SENTINEL = -7777.25  # exactly representable in both dtypes
GUARD = 67           # elements of guard band before and after each output


def isas() -> list[str]:
    best = C.describe()["best_isa"]
    names = ["generic", "avx2", "avx512"]
    return names[: names.index(best) + 1]


@pytest.fixture(params=isas())
def isa(request):
    """Run a test under each instruction set this CPU has, then restore the best."""
    C.set_isa(request.param)
    yield request.param
    C.set_isa("avx512")


class Guarded:
    """An output array of `shape` inside a larger one whose ends hold a sentinel."""

    def __init__(self, shape, dtype, fill=np.nan):
        n = int(np.prod(shape))
        self.full = np.full(n + 2 * GUARD, SENTINEL, dtype=dtype)
        self.a = self.full[GUARD : GUARD + n].reshape(shape)
        self.a[...] = fill

    def intact(self) -> bool:
        ends = np.concatenate([self.full[:GUARD], self.full[-GUARD:]])
        return bool((ends == SENTINEL).all())


def edge_sizes(tile: int) -> list[int]:
    return sorted({0, 1, tile - 1, tile, tile + 1, 2 * tile + 1, 13})


def _rand(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ---------------------------------------------------------------------- GEMM and dense layer

def _matmul_shapes(dtype):
    mr, nr, kc = C.tile(dtype)
    shapes = set()
    for B in edge_sizes(mr):
        for OC in edge_sizes(nr):
            shapes.add((B, 7, OC))          # small products: the no-packing path
    for C_ in edge_sizes(kc):
        shapes.add((2 * mr + 1, C_, 2 * nr + 1))
    for B in (mr + 1, 8 * mr + 1, 97):   # blocked path: packed panels with edges
        for OC in (nr - 1, 2 * nr + 1, 101):
            shapes.add((B, kc + 1, OC))
    shapes.add((5, 3, 0))
    return sorted(shapes)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matmul_guard_bands(isa, dtype):
    rng = np.random.default_rng(0)
    dt = np.dtype(dtype)
    for B, Cin, OC in _matmul_shapes(dt):
        inp, w, b = _rand(rng, (B, Cin), dt), _rand(rng, (Cin, OC), dt), _rand(rng, OC, dt)
        dout = _rand(rng, (B, OC), dt)
        out = Guarded((B, OC), dt)
        C.matmul_forward(out.a, inp, w, b)
        dinp, dw, db = Guarded((B, Cin), dt), Guarded((Cin, OC), dt), Guarded((OC,), dt)
        C.matmul_backward(dinp.a, dw.a, db.a, dout, inp, w)
        what = f"{isa} {dtype} B={B} C={Cin} OC={OC}"
        for g, name in ((out, "out"), (dinp, "dinp"), (dw, "dweight"), (db, "dbias")):
            assert g.intact(), f"{name} guard band overwritten: {what}"
        i64, w64, d64 = (a.astype(np.float64) for a in (inp, w, dout))
        assert_close(out.a, i64 @ w64 + b, np.abs(i64) @ np.abs(w64) + np.abs(b), 16, what)
        assert_close(dinp.a, d64 @ w64.T, np.abs(d64) @ np.abs(w64).T, 16, what)
        assert_close(dw.a, i64.T @ d64, np.abs(i64).T @ np.abs(d64), 16, what)
        assert_close(db.a, d64.sum(0), np.abs(d64).sum(0), 16, what)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gemm_all_transposes_guard_bands(isa, dtype):
    """gk_gemm itself, every (trans_a, trans_b), with a bias and the column sums of op(B)."""
    dt = np.dtype(dtype)
    fn = c_backend.FUNCS[dt]
    mr, nr, kc = C.tile(dt)
    rng = np.random.default_rng(10)
    p = lambda x: c_backend._ptr(fn, x)  # noqa: E731
    for m, n, k in ((1, 1, 1), (mr + 1, nr - 1, 3), (2 * mr + 1, 2 * nr + 1, kc + 1),
                    (8 * mr + 3, nr + 1, 2 * kc + 1), (0, 5, 4), (5, 4, 0)):
        for ta in (0, 1):
            for tb in (0, 1):
                a = _rand(rng, (k, m) if ta else (m, k), dt)
                b = _rand(rng, (n, k) if tb else (k, n), dt)
                bias = _rand(rng, n, dt)
                c, cs = Guarded((m, n), dt), Guarded((n,), dt)
                work = np.zeros(fn.gemm_work(m, n, k), dt)
                rc = fn.gemm(p(c.a), p(cs.a), p(a), p(b), p(bias), m, n, k, ta, tb, p(work),
                             work.size)
                assert rc == 0
                what = f"{isa} {dtype} m={m} n={n} k={k} ta={ta} tb={tb}"
                assert c.intact() and cs.intact(), what
                A = (a.T if ta else a).astype(np.float64)
                B = (b.T if tb else b).astype(np.float64)
                assert_close(c.a, A @ B + bias, np.abs(A) @ np.abs(B) + np.abs(bias), 16, what)
                assert_close(cs.a, B.sum(0), np.abs(B).sum(0), 16, what)


def test_gemm_workspace_too_small_is_an_error():
    fn = c_backend.FUNCS[np.dtype(np.float32)]
    a, b = np.ones((64, 300), np.float32), np.ones((300, 200), np.float32)
    c = np.zeros((64, 200), np.float32)
    work = np.zeros(10, np.float32)
    p = lambda x: c_backend._ptr(fn, x)  # noqa: E731
    rc = fn.gemm(p(c), c_backend.NULL, p(a), p(b), c_backend.NULL, 64, 200, 300, 0, 0, p(work),
                 work.size)
    assert rc == -4
    assert (c == 0).all()


# ---------------------------------------------------------------------- elementwise kernels

SIZES = [0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 61, 127]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_elementwise_guard_bands(isa, dtype):
    rng = np.random.default_rng(1)
    dt = np.dtype(dtype)
    for n in SIZES:
        shape = (n, 3)
        inp = _rand(rng, shape, dt, 3.0)
        dout = _rand(rng, shape, dt)
        for kind in range(6):
            out, dinp = Guarded(shape, dt), Guarded(shape, dt)
            C.activation_forward(kind, out.a, inp)
            C.activation_backward(kind, dinp.a, dout, inp, out.a)
            assert out.intact() and dinp.intact(), f"activation {kind} n={n}"
        out, mask, dinp = Guarded(shape, dt), Guarded(shape, dt), Guarded(shape, dt)
        C.dropout_forward(out.a, mask.a, inp, 0.3, 99)
        C.dropout_backward(dinp.a, dout, mask.a)
        assert out.intact() and mask.intact() and dinp.intact(), f"dropout n={n}"
        x = Guarded((n,), dt, fill=1.5)
        C.scale(x.a, 2.0)
        assert x.intact() and (x.a == 3.0).all()
        assert C.sum_squares(x.a) == 9.0 * n
        for opt in (SGD(lr=0.1, momentum=0.9, weight_decay=0.01), Adam(lr=0.01)):
            opt.bind(n, dt)
            p, g = Guarded((n,), dt, fill=1.0), _rand(rng, n, dt)
            b1, b2 = Guarded((n,), dt, fill=0.0), Guarded((n,), dt, fill=0.0)
            for step in (1, 2):
                if opt.kind == 0:
                    C.sgd_update(p.a, g, b1.a, opt.hyper, step)
                else:
                    C.adam_update(p.a, g, b1.a, b2.a, opt.hyper, step)
            assert p.intact() and b1.intact() and b2.intact(), f"optimizer n={n}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", [0, 1, 2])
def test_loss_guard_bands(dtype, loss):
    rng = np.random.default_rng(2)
    dt = np.dtype(dtype)
    for rows in (1, 2, 7, 17):
        for k in (1, 3, 16, 17):
            pred = _rand(rng, (rows, k), dt, 3.0)
            target = (rng.integers(0, k, rows) if loss == 1
                      else rng.uniform(0, 1, (rows, k)).astype(dt))
            dpred = Guarded((rows, k), dt)
            C.loss_forward_backward(loss, dpred.a, pred, target)
            assert dpred.intact(), f"loss {loss} rows={rows} k={k}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batchnorm_guard_bands(dtype):
    rng = np.random.default_rng(3)
    dt = np.dtype(dtype)
    for rows in (1, 2, 9, 17):
        for n in (1, 15, 16, 17, 33):
            inp, dout = _rand(rng, (rows, n), dt), _rand(rng, (rows, n), dt)
            gamma, beta = _rand(rng, n, dt), _rand(rng, n, dt)
            rm, rv = Guarded((n,), dt, 0.0), Guarded((n,), dt, 1.0)
            out, mean, var, rstd = (Guarded(s, dt) for s in ((rows, n), (n,), (n,), (n,)))
            C.batchnorm_forward(out.a, mean.a, var.a, rstd.a, inp, gamma, beta, rm.a, rv.a,
                                True, 1e-5)
            C.batchnorm_forward(out.a, mean.a, var.a, rstd.a, inp, gamma, beta, rm.a, rv.a,
                                False, 1e-5)
            dinp, dg, dbt = Guarded((rows, n), dt), Guarded((n,), dt), Guarded((n,), dt)
            C.batchnorm_backward(dinp.a, dg.a, dbt.a, dout, inp, mean.a, rstd.a, gamma)
            C.batchnorm_update_running(rm.a, rv.a, mean.a, var.a, rows, 0.1)
            for g in (out, mean, var, rstd, dinp, dg, dbt, rm, rv):
                assert g.intact(), f"batchnorm rows={rows} n={n}"


# ---------------------------------------------------------------------- fused drivers

def _guard_buffers(bufs):
    """Move every flat buffer of bufs into the middle of a sentinel-banded array."""
    guards = {}
    for name in ("params", "grads", "state", "acts", "dacts", "cache"):
        a = getattr(bufs, name)
        g = Guarded(a.shape, a.dtype, 0.0)
        g.a[...] = a
        setattr(bufs, name, g.a)
        guards[name] = g
    return guards


SPECS = [
    ("bn_dropout", lambda: [gk.Dense(33), gk.BatchNorm(), gk.LeakyReLU(), gk.Dropout(0.25),
                            gk.Dense(17), gk.ReLU(), gk.Dense(5)], "cross_entropy"),
    ("wide", lambda: [gk.Dense(70), gk.Tanh(), gk.Dense(65), gk.GELU(), gk.Dense(3)], "mse"),
    # Dense+ReLU and Dense+LeakyReLU run as one GEMM with a fused epilogue, both ways
    ("fused", lambda: [gk.Dense(40), gk.ReLU(), gk.Dense(33), gk.LeakyReLU(), gk.Dense(17),
                       gk.Identity(), gk.Dense(3)], "mse"),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("spec", SPECS, ids=[s[0] for s in SPECS])
def test_driver_guard_bands(isa, dtype, spec):
    _, layers, loss = spec
    model = gk.Sequential(layers(), input_size=11, loss=loss, dtype=dtype, backend="c", seed=0)
    plan, bufs = model.plan, model.bufs
    rng = np.random.default_rng(4)
    for rows in (1, 7, 9, 33, 40):
        bufs.ensure_capacity(40)
        guards = _guard_buffers(bufs)
        X = rng.standard_normal((rows, 11)).astype(dtype)
        y = (rng.integers(0, 5, rows) if loss == "cross_entropy"
             else rng.standard_normal((rows, 3)).astype(dtype))
        opt = Adam(lr=1e-3)
        C.forward(plan, bufs, X, training=False)
        C.forward(plan, bufs, X, training=True, seed=5)
        C.gradients(plan, bufs, X, y, seed=6)
        C.train_step(plan, bufs, X, y, opt, seed=7, clip_norm=1.0)
        perm = rng.permutation(rows)
        nb = (rows + 7) // 8
        losses, gnorms = np.zeros(nb), np.zeros(nb)
        seeds = np.arange(nb, dtype=np.uint64)
        done = C.train_epoch(plan, bufs, X, y, perm, 8, opt, seeds, 0.0, losses, gnorms)
        assert done == nb
        for name, g in guards.items():
            assert g.intact(), f"{name} guard band overwritten, rows={rows}"


def test_bad_indices_raise_and_change_nothing():
    model = gk.Sequential([gk.Dense(8), gk.ReLU(), gk.Dense(4)], input_size=5,
                          loss="cross_entropy", dtype="float32", backend="c", seed=0)
    plan, bufs = model.plan, model.bufs
    X = np.ones((10, 5), np.float32)
    y = np.arange(10) % 4
    opt = SGD(lr=0.1)
    bufs.ensure_capacity(4)
    before = bufs.params.copy()
    losses, gnorms, seeds = np.zeros(3), np.zeros(3), np.zeros(3, np.uint64)
    with pytest.raises(ValueError, match="permutation"):
        C.train_epoch(plan, bufs, X, y, np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 10]), 4, opt,
                      seeds, 0.0, losses, gnorms)
    with pytest.raises(ValueError, match="permutation"):
        C.train_epoch(plan, bufs, X, y, np.array([0, -1]), 4, opt, seeds, 0.0, losses, gnorms)
    bad = y.copy()
    bad[9] = 4
    with pytest.raises(ValueError, match="label"):
        C.train_epoch(plan, bufs, X, bad, np.arange(10), 4, opt, seeds, 0.0, losses, gnorms)
    with pytest.raises(ValueError, match="label"):
        C.train_step(plan, bufs, X[:4], np.array([0, 1, 2, -3]), opt)
    with pytest.raises(ValueError, match="label"):
        C.loss_forward_backward(1, np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32),
                                np.array([1, 4]))
    np.testing.assert_array_equal(bufs.params, before)
    assert int(opt.step[0]) == 0


# ---------------------------------------------------------------------- threads, repeatability

def test_same_result_on_any_thread_count():
    rng = np.random.default_rng(5)
    for dt in (np.float32, np.float64):
        inp, w = _rand(rng, (200, 300), dt), _rand(rng, (300, 257), dt)
        b, dout = _rand(rng, 257, dt), _rand(rng, (200, 257), dt)
        results = []
        for threads in (1, 2, 3):
            C.set_threads(threads)
            out, dinp = np.empty((200, 257), dt), np.empty((200, 300), dt)
            dw, db = np.empty((300, 257), dt), np.empty(257, dt)
            C.matmul_forward(out, inp, w, b)
            C.matmul_backward(dinp, dw, db, dout, inp, w)
            big = _rand(np.random.default_rng(6), (1 << 20) + 37, dt)
            results.append((out, dinp, dw, db, C.sum_squares(big)))
        C.set_threads(gk.get_threads())
        for other in results[1:]:
            for x, y in zip(results[0], other, strict=True):
                np.testing.assert_array_equal(x, y)


def test_training_is_bit_identical_across_threads():
    def run(threads):
        C.set_threads(threads)
        model = gk.Sequential([gk.Dense(160), gk.ReLU(), gk.Dense(130), gk.ReLU(), gk.Dense(10)],
                              input_size=100, loss="cross_entropy", dtype="float32",
                              backend="c", seed=1)
        rng = np.random.default_rng(7)
        X = rng.standard_normal((256, 100)).astype(np.float32)
        y = rng.integers(0, 10, 256)
        model.fit(X, y, epochs=2, batch_size=128, optimizer=Adam(lr=1e-3), progress=False)
        return np.concatenate([p.ravel() for p in model.named_parameters().values()])

    a, b = run(1), run(2)
    C.set_threads(gk.get_threads())
    np.testing.assert_array_equal(a, b)


def test_concurrent_python_threads():
    """cffi releases the GIL: kernels called from several threads at once stay correct."""
    rng = np.random.default_rng(8)
    inp, w = _rand(rng, (96, 200), np.float32), _rand(rng, (200, 150), np.float32)
    b = _rand(rng, 150, np.float32)
    ref = np.empty((96, 150), np.float32)
    C.matmul_forward(ref, inp, w, b)
    errors = []

    def work():
        out = np.empty_like(ref)
        for _ in range(20):
            C.matmul_forward(out, inp, w, b)
            if not np.array_equal(out, ref):
                errors.append("mismatch")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_describe_and_threads():
    info = C.describe()
    assert info["isa"] in ("generic", "avx2", "avx512")
    assert isinstance(info["openmp"], bool)
    assert "-O" in info["build"]
    assert C.set_threads(1) == 1
    C.set_threads(gk.get_threads())


# ---------------------------------------------------------------------- sanitizer canary

def test_sanitizer_canary():
    """In the sanitizer build the planted out-of-bounds write must kill the process with an
    AddressSanitizer report; in a normal build the planted kernel is not compiled in."""
    if not C.describe()["sanitized"]:
        assert c_backend.lib.gk_test_oob_write(8) == -1
        return
    code = ("from gradkern.backends import c_backend as c; "
            "c.lib.gk_test_oob_write(8); print('survived')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)
    assert done.returncode != 0, "the planted out-of-bounds write went unnoticed"
    assert "survived" not in done.stdout
    assert "heap-buffer-overflow" in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_epilogues_match_reference(isa, dtype):
    """Dense+ReLU / LeakyReLU / Identity fused into the GEMMs give the reference gradients."""
    _, layers, loss = SPECS[2]
    model = gk.Sequential(layers(), input_size=11, loss=loss, dtype=dtype, backend="c", seed=0)
    ref = gk.Sequential(layers(), input_size=11, loss=loss, dtype=dtype, backend="numpy", seed=0)
    rng = np.random.default_rng(9)
    X, y = rng.standard_normal((37, 11)), rng.standard_normal((37, 3))
    np.testing.assert_allclose(model.predict_raw(X), ref.predict_raw(X),
                               rtol=0, atol=1e-4 if dtype == "float32" else 1e-12)
    loss_c, grads = model.gradients(X, y)
    loss_r, rgrads = ref.gradients(X, y)
    assert abs(loss_c - loss_r) <= 1e-4 * abs(loss_r)
    scale = max(float(np.abs(g).max()) for pair in rgrads for g in pair)
    tol = 2e-4 if dtype == "float32" else 1e-10
    for (dw, db), (rw, rb) in zip(grads, rgrads, strict=True):
        assert np.abs(dw - rw).max() <= tol * scale
        assert np.abs(db - rb).max() <= tol * scale


# ---------------------------------------------------------------------- structure of the C sources

CSRC = Path(__file__).resolve().parents[1] / "csrc"
ISA_MACROS = ("ISA_NAME", "ISA_SUPPORTED", "MR", "NR", "KC", "MC", "NC", "VEC", "VLEN", "VMASK",
              "MAKE_MASK", "VZERO", "VLOAD", "VLOADM", "VSTOREM", "VBCAST", "VFMA", "VADD")


def _defines(text: str) -> dict[str, list[str]]:
    """name -> the values it is #defined to, in order (one per dtype branch, or one)."""
    found: dict[str, list[str]] = {}
    for m in re.finditer(r"^#define\s+(\w+)(\([^)]*\))?[ \t]*(.*)$", text, re.M):
        found.setdefault(m.group(1), []).append(m.group(3).strip())
    return found


def test_every_isa_is_one_description_and_one_table_row():
    """Each contract.Isa member has exactly one header csrc/isa_<name>.h defining the whole
    description, included once by gradkern.c's instantiation sequence and given one row
    of the dispatch table; nothing else in C dispatches on the ISA."""
    source = (CSRC / "gradkern.c").read_text()
    for isa in Isa:
        name = isa.name.lower()
        header = CSRC / f"isa_{name}.h"
        assert header.is_file(), f"no description {header.name} for Isa.{isa.name}"
        defs = _defines(header.read_text())
        missing = [m for m in ISA_MACROS if m not in defs]
        assert not missing, f"{header.name} lacks {missing}"
        assert defs["ISA_NAME"] == [name]
        assert source.count(f'#define GK_ISA_HEADER "isa_{name}.h"') == 1
        assert source.count(f"[GK_ISA_{isa.name}] = GK_ISA({name}),") == 1
    assert sorted(p.name for p in CSRC.glob("isa_*.h")) == sorted(
        [f"isa_{m.name.lower()}.h" for m in Isa] + ["isa_dtype.h", "isa_instance.h"])
    for path in CSRC.glob("*.[ch]"):
        text = path.read_text()
        assert "case GK_ISA_" not in text and "switch (isa)" not in text, path.name
        if not path.name.startswith("isa_"):  # tile sizes live in the descriptions only
            assert not re.search(r"^#define\s+(MR|NR|KC|MC|NC)\b", text, re.M), path.name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tiles_come_from_the_isa_descriptions(dtype):
    """gk_tile_* reports, for every ISA here, the MR, NR and KC its header declares (NR
    and KC per dtype where the header splits them)."""
    branch = 0 if dtype == "float32" else -1
    try:
        for name in isas():
            defs = _defines((CSRC / f"isa_{name}.h").read_text())
            want = tuple(int(defs[k][branch]) for k in ("MR", "NR", "KC"))
            assert C.set_isa(name) == name
            assert C.tile(dtype) == want, name
    finally:
        C.set_isa("avx512")


def test_gradkern_isa_selects_by_the_table_names():
    """$GRADKERN_ISA is matched against the table's names (each ISA here, in a fresh
    process of the bare extension); an unknown name keeps the best."""
    spec = importlib.util.find_spec("gradkern._gradkern_c")
    ext = os.environ.get("GRADKERN_C_EXT") or (spec.origin if spec else "")
    code = ("import importlib.util, sys\n"
            "s = importlib.util.spec_from_file_location('gradkern._gradkern_c', sys.argv[1])\n"
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m)\n"
            "print(m.lib.gk_isa(), m.lib.gk_best_isa())\n")
    best = int(Isa[C.describe()["best_isa"].upper()])
    for env, want in [*((n, int(Isa[n.upper()])) for n in isas()), ("avx9000", best)]:
        done = subprocess.run([sys.executable, "-c", code, ext], capture_output=True,
                              text=True, timeout=60, env=dict(os.environ, GRADKERN_ISA=env))
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split() == [str(want), str(best)], env


def test_the_contract_header_is_generated_not_written():
    """No contract code is written by hand in csrc; the build writes gk_contract.h from
    contract.py (idempotently: an unchanged header keeps its mtime), and the cdef's enum
    is the same text."""
    spec = importlib.util.spec_from_file_location(
        "_gk_build_c_test", Path(__file__).resolve().parents[1] / "src/gradkern/_build_c.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)  # defines functions only: nothing is built or probed
    for path in CSRC.glob("*"):
        text = path.read_text()
        for name, _ in contract.c_enum_items():
            assert not re.search(rf"\b{name}\s*=(?!=)", text), f"{path.name} defines {name}"
        for name in ("GK_LEAKY", "GK_GOLDEN", "GK_LAYER_MIX"):
            assert not re.search(rf"#define\s+{name}\b", text), f"{path.name} defines {name}"
    with tempfile.TemporaryDirectory() as tmp:
        enum = build.generate(Path(tmp))
        header = Path(tmp) / "gk_contract.h"
        assert enum == contract.c_declarations()
        text = header.read_text()
        assert enum in text and contract.c_constants() in text
        stamp = header.stat().st_mtime_ns
        os.utime(header, ns=(stamp - 10**9, stamp - 10**9))
        build.generate(Path(tmp))
        assert header.stat().st_mtime_ns == stamp - 10**9  # not rewritten
