"""The Numba disk cache never crashes or misleads a later process (issue 10, item 1).

numba drops the parallel backend's re-initialisation (`_reload_parfors`) from an entry
compiled over a cached parallel callee (numba issues #8578, #4807), so the process that
loads such an entry first used to die with SIGSEGV; numba_backend starts the threading
layer before any entry loads. Each process here runs in a subprocess with its own fresh
NUMBA_CACHE_DIR under tmp_path, so a regression fails the test instead of killing pytest.
"""

from __future__ import annotations

import enum
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import types

import pytest

numba_backend = pytest.importorskip("gradkern.backends.numba_backend")

if not numba_backend.CACHE:  # NUMBA_BOUNDSCHECK=1 in this environment: nothing is cached
    pytest.skip("the numba disk cache is off under NUMBA_BOUNDSCHECK", allow_module_level=True)

TIMEOUT = 600  # a cold compile of every driver takes ~20 s of CPU; this only bounds a hang


def _run(args: list[str], cache_dir, what: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), PYTHONFAULTHANDLER="1")
    env.pop("GRADKERN_BACKEND", None)
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        rc = proc.returncode
        how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
        pytest.fail(f"{what} ended with {how}\n--- stderr ---\n{proc.stderr[-3000:]}"
                    f"\n--- stdout ---\n{proc.stdout[-1500:]}")
    return proc


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from gradkern.cli import main; "
            "sys.exit(main(sys.argv[1:]))", *argv]


def test_train_then_check_twice_on_one_cache(tmp_path):
    """The issue's sequence, each a separate process on one fresh cache: train, then
    check twice. The second check used to load sgd_update (compiled by the first over
    the _sgd / _sgd_par that train had cached) and die with SIGSEGV."""
    cache = tmp_path / "nbcache"
    train = _run(_cli("train", "--data", "iris", "--epochs", "1", "--backend", "numba",
                      "--quiet"), cache, "gradkern train")
    assert "accuracy" in train.stdout
    for k in (1, 2):
        out = _run(_cli("check", "--quick", "--backends", "numba", "--quiet"), cache,
                   f"gradkern check #{k}").stdout
        assert "kernel/sgd_update" in out and " 0 failed" in out


# One process per call: each mode compiles or loads what it calls and checks its result
# against the NumPy reference backend.
_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import gradkern as gk

    nb, ref = gk.backends.get("numba"), gk.backends.get("numpy")
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((12, 3)), rng.standard_normal((12, 2))

    def model(backend):
        return gk.MLP([3, 5, 2], activation="tanh", loss="mse", dtype="float64",
                      backend=backend, seed=0)

    def step():  # compiles the step driver and, under it, every flat-buffer pass
        a, b = model("numba"), model("numpy")
        for m in (a, b):
            m.train_step(X, Y, gk.optim.SGD(lr=0.1, momentum=0.9))
        for (wa, ba), (wb, bb) in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_allclose(wa, wb, rtol=1e-12, atol=1e-12)

    def epoch():  # the epoch driver over the cached step driver
        a, b = model("numba"), model("numpy")
        for m in (a, b):
            m.fit(X, Y, epochs=1, batch_size=5, optimizer=gk.optim.Adam(lr=1e-2))
        for (wa, ba), (wb, bb) in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_allclose(wa, wb, rtol=1e-10, atol=1e-12)

    def _update(kind):
        n = 37
        p = rng.standard_normal(n)
        outs = []
        for be in (nb, ref):
            opt = gk.optim.SGD(lr=0.1, momentum=0.9) if kind == "sgd" else gk.optim.Adam()
            opt.bind(n, np.dtype(np.float64))
            q = p.copy()
            for s in (1, 2):
                g = np.linspace(-1.0, 1.0, n) * s
                if kind == "sgd":
                    be.sgd_update(q, g, opt.buf1, opt.hyper, s)
                else:
                    be.adam_update(q, g, opt.buf1, opt.buf2, opt.hyper, s)
            outs.append(q)
        np.testing.assert_array_equal(outs[0], outs[1])

    def sgd():  # the kernels over the cached _sgd / _adam / _sum_squares
        _update("sgd")

    def adam():
        _update("adam")

    def sumsq():
        x = rng.standard_normal(1000)
        assert nb.sum_squares(x) == ref.sum_squares(x)

    for name in sys.argv[1].split(","):
        globals()[name]()
    print("ok", sys.argv[1])
""")


def _calls(modes: str, cache_dir) -> None:
    out = _run([sys.executable, "-c", _SCRIPT, modes], cache_dir, f"a process calling {modes}")
    assert out.stdout.strip() == f"ok {modes}"


def test_callers_compiled_over_cached_callees_load_in_a_fresh_process(tmp_path):
    """The general form, and the variant of a cache copied from another run (`make test`
    leaves one behind): a caller compiled in a later process than the parallel pass it
    calls, then loaded first by a fresh process from a copy of that cache."""
    cache = tmp_path / "nbcache"
    _calls("step", cache)                   # caches the drivers with _sgd/_adam/_sum_squares
    _calls("epoch,sgd,adam,sumsq", cache)   # each compiled over cached callees
    copy = tmp_path / "nbcache-copy"
    shutil.copytree(cache, copy)
    for mode in ("sgd", "adam", "sumsq", "epoch"):
        _calls(mode, copy)                  # each loaded first, by a fresh process
    assert not any(p.suffix == ".tmp" for p in copy.rglob("*"))


def test_unreadable_cache_files_are_a_miss_with_a_warning(tmp_path):
    """A corrupt index or a truncated data file is recompiled and rewritten, not raised
    (nor crashed on); the next process loads the rewritten entry silently."""
    cache = tmp_path / "nbcache"
    _calls("sumsq", cache)
    index = sorted(cache.rglob("numba_backend.sum_squares-*.nbi"))
    data = sorted(cache.rglob("numba_backend._sum_squares-*.nbc"))
    assert index and data
    index[0].write_bytes(b"\x80\x04 not a pickle")
    data[0].write_bytes(data[0].read_bytes()[:100])
    out = _run([sys.executable, "-W", "always::RuntimeWarning", "-c", _SCRIPT, "sumsq"],
               cache, "a process on a corrupt cache")
    assert out.stdout.strip() == "ok sumsq"
    assert "CacheWarning" in out.stderr and "could not read" in out.stderr
    again = _run([sys.executable, "-W", "always::RuntimeWarning", "-c", _SCRIPT, "sumsq"],
                 cache, "a process on the rewritten cache")
    assert again.stdout.strip() == "ok sumsq"
    assert "CacheWarning" not in again.stderr


def test_every_cached_function_is_guarded():
    jitted = [v for v in vars(numba_backend).values() if hasattr(v, "_cache")
              and hasattr(v, "py_func")]
    assert jitted and numba_backend.GUARDED == len(jitted)
    assert all(isinstance(v._cache, numba_backend._GuardedCache) for v in jitted)


def test_cache_key_holds_the_constants_a_function_reads(monkeypatch):
    """The contract's columns and codes are frozen into the compiled drivers; numba keys entries
    by this file's source only, so the key adds every constant read, through callees."""
    key = numba_backend._constants_key
    forward = numba_backend._forward.py_func
    before = key(forward)
    assert key(forward) == before  # stable within a process and across processes
    shifted = enum.IntEnum("Ops", {m.name: m.value + 100 for m in numba_backend.Ops})
    monkeypatch.setitem(numba_backend.__dict__, "Ops", shifted)  # ops[i, Ops.KIND]
    assert key(forward) != before  # read by _forward itself
    monkeypatch.undo()
    assert key(forward) == before
    shifted = enum.IntEnum("Layer", {m.name: m.value + 1 for m in numba_backend.Layer})
    monkeypatch.setitem(numba_backend.__dict__, "Layer", shifted)  # kind == Layer.DENSE
    assert key(forward) != before
    monkeypatch.undo()
    before_step = key(numba_backend._train_step.py_func)
    monkeypatch.setitem(numba_backend.__dict__, "CHUNK", numba_backend.CHUNK * 2)
    assert key(numba_backend._train_step.py_func) != before_step  # read by _sum_squares

    def f():
        return SOME_CONSTANT  # noqa: F821

    assert key(types.FunctionType(f.__code__, {"SOME_CONSTANT": 1})) != \
        key(types.FunctionType(f.__code__, {"SOME_CONSTANT": 2}))
