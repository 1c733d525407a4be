"""Hardening of the C backend (issue 10, items 2, 3 and 10): a fork()ed child does not hang
on libgomp's pool, NaN propagates through every activation on every instruction set as in
the NumPy reference, and the workspace is not sized by whatever thread count the
environment asks for. The cases that could hang or exhaust memory run in a subprocess
with a timeout, so that a regression fails a test instead of killing pytest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gradkern as gk
from gradkern.backends.numpy_backend import NumpyBackend
from gradkern.optim import SGD, Adam

if "c" not in gk.backends.available():
    pytest.skip(f"C backend unavailable: {gk.backends.status()['c']}", allow_module_level=True)

from gradkern.backends import c_backend  # noqa: E402

C = gk.backends.get("c")
REF = NumpyBackend()
ACTIVATIONS = ["identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu"]


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


def _run(code: str, env: dict | None = None, timeout: float = 120) -> dict:
    """Run code in a fresh interpreter (own Numba cache, own process group, so that a hung
    fork()ed grandchild is killed with it); its last stdout line is JSON."""
    full = dict(os.environ)
    full.setdefault("NUMBA_CACHE_DIR", "/tmp/nbcache-c-hardening")
    full.update(env or {})
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the subprocess hung (no exit within {timeout} s): {stderr[-2000:]}")
    finally:
        try:  # whatever it forked and left behind
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    assert proc.returncode == 0, f"exit {proc.returncode}\n{stdout}\n{stderr[-3000:]}"
    return json.loads(stdout.strip().splitlines()[-1]) | {"stderr": stderr}


# ---------------------------------------------------------------------- 2. fork

FORK_SCRIPT = """
import hashlib, json, multiprocessing, os, select, signal, sys, time
import numpy as np
import gradkern as gk
from gradkern.backends import c_backend

C = gk.backends.get("c")
rng = np.random.default_rng(0)
X = rng.standard_normal((256, 64)).astype(np.float32)
y = rng.integers(0, 10, 256)

def fit():
    model = gk.MLP([64, 256, 256, 10], activation="relu", loss="cross_entropy",
                   dtype="float32", backend="c", seed=3)
    hist = model.fit(X, y, epochs=2, batch_size=64, optimizer=gk.optim.Adam(lr=1e-3),
                     progress=False)
    flat = np.concatenate([p.ravel() for p in model.named_parameters().values()])
    return {"loss": [float(v).hex() for v in hist.history["loss"]],
            "params": hashlib.sha256(flat.tobytes()).hexdigest()}

def in_child():
    return {"fit": fit(), "single": int(c_backend.lib.gk_single_threaded()),
            "threads": C.set_threads(2)}

threads_parent = C.set_threads(2)
parent2 = fit()                  # the parent's OpenMP pool now has its threads
r, w = os.pipe()
pid = os.fork()
if pid == 0:                     # the child: fit, report, exit without cleanup
    os.close(r)
    try:
        os.write(w, json.dumps(in_child()).encode())
        os._exit(0)
    except BaseException as exc:
        os.write(w, json.dumps({"error": repr(exc)}).encode())
        os._exit(3)
os.close(w)
chunks, deadline = [], time.monotonic() + 60
while time.monotonic() < deadline:
    if select.select([r], [], [], 1.0)[0]:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
else:
    os.kill(pid, signal.SIGKILL)
    sys.exit("the forked child hung")
_, status = os.waitpid(pid, 0)
child = json.loads(b"".join(chunks) or b"{}")
with multiprocessing.get_context("fork").Pool(1) as pool:
    pooled = pool.apply_async(in_child).get(timeout=60)
C.set_threads(1)
parent1 = fit()
print(json.dumps({"status": os.waitstatus_to_exitcode(status), "child": child,
                  "pooled": pooled, "parent1": parent1, "parent2": parent2,
                  "threads_parent": threads_parent,
                  "single_parent": int(c_backend.lib.gk_single_threaded())}))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork here")
def test_forked_child_trains_single_threaded_and_matches_parent():
    """Item 2: parent trains on 2 threads, forks; the child (os.fork and a 'fork' Pool)
    fits without hanging, in single-threaded mode, and gets bit for bit what the parent
    gets on 1 thread and on 2."""
    out = _run(FORK_SCRIPT, timeout=120)
    assert out["status"] == 0, out
    assert out["threads_parent"] == min(2, os.cpu_count() or 1)
    assert out["single_parent"] == 0
    for who in ("child", "pooled"):
        res = out[who]
        assert "error" not in res, res
        assert res["single"] == 1 and res["threads"] == 1, res
        assert res["fit"] == out["parent1"], f"{who} differs from the 1-thread fit"
    # the project's guarantee: the same result for any thread count
    assert out["parent2"] == out["parent1"]


def test_single_threaded_mode_is_not_set_in_the_parent():
    assert c_backend.lib.gk_single_threaded() == 0
    assert C.describe()["single_threaded_after_fork"] is False


# ---------------------------------------------------------------------- 3. NaN

SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.0, 1e30, -1e30, 0.25, -1e-3, 3.0, -7.0]


def _specials(dtype, n: int = 45) -> np.ndarray:
    """Specials and ordinary values over n elements (vector bodies and tails)."""
    reps = -(-n // len(SPECIALS))
    return np.array((SPECIALS * reps)[:n], dtype=dtype).reshape(-1, 3 if n % 3 == 0 else 1)


def _assert_same(got, ref, what: str):
    """Same NaN positions as the reference, the other elements close (infinities equal)."""
    got, ref = np.asarray(got), np.asarray(ref)
    nan_got, nan_ref = np.isnan(got), np.isnan(ref)
    bad = np.flatnonzero(nan_got != nan_ref)
    assert bad.size == 0, (f"{what}: NaN at other places than the reference, e.g. flat index "
                           f"{bad[:5]}: got {got.ravel()[bad[:5]]}, ref {ref.ravel()[bad[:5]]}")
    rtol = 1e-5 if got.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got[~nan_got], ref[~nan_ref], rtol=rtol, atol=rtol, err_msg=what)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_activation_kernels_propagate_nan(isa, dtype):
    """Item 3, kernel level: every activation, forward and backward, with NaN, ±inf and ±0
    in the input and NaN in the incoming gradient, gives NaN exactly where NumPy does."""
    dt = np.dtype(dtype)
    inp = _specials(dt)
    dout = np.roll(_specials(dt), 2).astype(dt)  # NaN in dout at other rows than in inp
    dout[np.isinf(dout)] = 0.5
    for kind, name in enumerate(ACTIVATIONS):
        out, ref = np.empty_like(inp), np.empty_like(inp)
        C.activation_forward(kind, out, inp)
        REF.activation_forward(kind, ref, inp)
        _assert_same(out, ref, f"{isa} {dtype} {name} forward")
        assert np.isnan(out[np.isnan(inp)]).all(), f"{name}: NaN input lost"
        dinp, dref = np.empty_like(inp), np.empty_like(inp)
        C.activation_backward(kind, dinp, dout, inp, ref)
        REF.activation_backward(kind, dref, dout, inp, ref)
        _assert_same(dinp, dref, f"{isa} {dtype} {name} backward")
        assert np.isnan(dinp[np.isnan(dout)]).all(), f"{name}: NaN gradient lost"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_optimizer_kernels_keep_nan(dtype):
    """No update kernel drops a NaN (Adam with eps=0 on a zero gradient is 0/0 on every
    backend alike)."""
    dt = np.dtype(dtype)
    g = _specials(dt, 39).ravel()
    g[np.isinf(g)] = 1.0
    g[3] = 0.0
    adam0 = Adam(lr=0.01).hyper.copy()
    adam0[7] = 0.0  # eps = 0 straight into the kernels (Adam itself may refuse it)
    for name, kind, hyper in (("sgd", 0, SGD(lr=0.1, momentum=0.9, weight_decay=0.01).hyper),
                              ("adam", 1, Adam(lr=0.01).hyper), ("adam eps=0", 1, adam0)):
        p, pr = np.ones(g.size, dt), np.ones(g.size, dt)
        b1, b2, r1, r2 = (np.zeros(g.size, dt) for _ in range(4))
        if kind == 0:
            C.sgd_update(p, g, b1, hyper, 1)
            REF.sgd_update(pr, g, r1, hyper, 1)
        else:
            C.adam_update(p, g, b1, b2, hyper, 1)
            REF.adam_update(pr, g, r1, r2, hyper, 1)
        _assert_same(p, pr, f"{name} params")
        _assert_same(b1, r1, f"{name} state")
        assert np.isnan(p[np.isnan(g)]).all()
    assert np.isnan(C.sum_squares(g))


DRIVER_SPECS = [
    # Dense+ReLU, Dense+LeakyReLU and Dense+Identity run as one GEMM with a fused
    # epilogue per instruction set, forward and backward
    ("fused", lambda: [gk.Dense(40), gk.ReLU(), gk.Dense(33), gk.LeakyReLU(), gk.Dense(17),
                       gk.Identity(), gk.Dense(3)]),
    ("transcendental", lambda: [gk.Dense(20), gk.Sigmoid(), gk.Dense(19), gk.Tanh(),
                                gk.Dense(18), gk.GELU(), gk.Dense(3)]),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("spec", DRIVER_SPECS, ids=[s[0] for s in DRIVER_SPECS])
def test_fused_drivers_propagate_nan(isa, dtype, spec):
    """Item 3, through the C drivers: a NaN row of x stays NaN through every layer (the
    fused Dense+ReLU turned it into 0), and a NaN target row reaches every layer's
    gradient, exactly where the NumPy reference has NaN."""
    _, layers = spec
    rows = 37
    rng = np.random.default_rng(11)
    X = rng.standard_normal((rows, 11)).astype(dtype)
    Y = rng.standard_normal((rows, 3)).astype(dtype)
    X[[2, 30], 4] = np.nan
    Yn = Y.copy()
    Yn[[5, 33], 1] = np.nan
    mods = [gk.Sequential(layers(), input_size=11, loss="mse", dtype=dtype, backend="c",
                          seed=0) for _ in range(2)]
    (pc, bc), (pr, br) = ((m.plan, m.bufs) for m in mods)
    bc.ensure_capacity(rows)
    br.ensure_capacity(rows)
    n = len(pc.layers)
    for training in (False, True):
        C.forward(pc, bc, X, training=training)
        REF.forward(pr, br, X, training=training)
        for i in range(n):
            _assert_same(bc.out(i, rows), br.out(i, rows), f"{isa} forward layer {i}")
        assert np.isnan(bc.out(n - 1, rows)[[2, 30]]).all()
        assert not np.isnan(bc.out(n - 1, rows)[[0, 1, 3]]).any()
    for x, y, what in ((X, Y, "NaN input"), (X[[0, 1, 3]], Yn[[0, 1, 3]], "finite"),
                       (np.nan_to_num(X), Yn, "NaN target")):
        k = x.shape[0]
        lc, lr_ = C.gradients(pc, bc, x, y), REF.gradients(pr, br, x, y)
        assert np.isnan(lc) == np.isnan(lr_), what
        for i in range(1, n):
            _assert_same(bc.dout(i, k), br.dout(i, k), f"{isa} {what} dout of layer {i}")
        for (dw, db), (rw, rb) in zip(pc.param_views(bc.grads), pr.param_views(br.grads),
                                      strict=True):
            assert np.array_equal(np.isnan(dw), np.isnan(rw)), what
            assert np.array_equal(np.isnan(db), np.isnan(rb)), what
    assert np.isnan(bc.dout(0, rows)[[5, 33]]).all()


def _nan_weight_fit(backend: str, activation: str):
    """fit on a model whose first weight is NaN: the exception, and whether the model was
    left exactly as it was."""
    rng = np.random.default_rng(12)
    X = rng.standard_normal((64, 8)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model = gk.MLP([8, 16, 12, 3], activation=activation, loss="cross_entropy",
                   dtype="float32", backend=backend, seed=0)
    model.plan.param_views(model.bufs.params)[0][0][2, 5] = np.nan
    before = (model.bufs.params.copy(), model.bufs.state.copy())
    with pytest.raises(gk.TrainingDiverged) as exc:
        model.fit(X, y, epochs=2, batch_size=16, optimizer=Adam(lr=1e-3), progress=False)
    np.testing.assert_array_equal(model.bufs.params, before[0])  # NaN == NaN here
    np.testing.assert_array_equal(model.bufs.state, before[1])
    return str(exc.value)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "gelu", "sigmoid", "tanh"])
def test_nan_weight_raises_training_diverged_on_every_isa(isa, activation):
    """Item 3, end to end: a NaN weight stops fit on c, under every instruction set, with
    the TrainingDiverged numpy raises, and leaves the model as it was."""
    assert _nan_weight_fit("c", activation) == _nan_weight_fit("numpy", activation)


def test_nan_weight_raises_training_diverged_on_every_backend(backend):
    assert "step 1" in _nan_weight_fit(backend, "relu")


def test_nan_propagates_under_gradkern_isa_generic():
    """The GRADKERN_ISA=generic path as a user selects it (the environment, not set_isa)."""
    out = _run("""
        import json, numpy as np, gradkern as gk
        from gradkern.backends import c_backend
        m = gk.MLP([4, 8, 2], activation="relu", loss="mse", backend="c", seed=0)
        x = np.ones((3, 4), np.float32)
        x[1, 0] = np.nan  # past the model's checks: the backend's fused Dense+ReLU itself
        p = gk.backends.get("c").forward(m.plan, m.bufs, x)
        print(json.dumps({"isa": c_backend.ISA_NAMES[int(c_backend.lib.gk_isa())],
                          "nan_rows": np.isnan(p).any(axis=1).tolist()}))
    """, env={"GRADKERN_ISA": "generic"}, timeout=60)
    assert out["isa"] == "generic"
    assert out["nan_rows"] == [False, True, False]


# ---------------------------------------------------------------------- 10. thread count

WORKSPACE_SCRIPT = """
import json, os
import numpy as np
import gradkern as gk
from gradkern.backends import c_backend

rng = np.random.default_rng(0)
X = rng.standard_normal((256, 64)).astype(np.float32)
y = rng.integers(0, 10, 256)
model = gk.MLP([64, 256, 256, 10], activation="relu", loss="cross_entropy",
               dtype="float32", backend="c", seed=0)
hist = model.fit(X, y, epochs=1, batch_size=64, progress=False)
st = gk.backends.get("c")._models.get(model.bufs)  # kept by the backend, not on bufs
# this process's own peak (VmHWM): ru_maxrss would also count the parent's resident pages
# at fork/exec time (Linux keeps the larger of the two), i.e. pytest's own size
with open("/proc/self/status") as f:
    rss = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024
print(json.dumps({"threads": int(c_backend.lib.gk_get_threads()), "work": int(st.work.size),
                  "set_big": gk.backends.get("c").set_threads(10**12),
                  "loss": float(hist.history["loss"][0]).hex(), "maxrss": rss}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM in /proc/self/status")
def test_huge_omp_num_threads_neither_starts_nor_sizes_for_them():
    """Item 10: OMP_NUM_THREADS=100000 (it asked for 62.6 GiB of workspace): fit works,
    uses at most the processors here, sizes the workspace as for them, stays small."""
    procs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    huge = _run(WORKSPACE_SCRIPT, env={"OMP_NUM_THREADS": "100000"}, timeout=120)
    plain = _run(WORKSPACE_SCRIPT, env={"OMP_NUM_THREADS": str(procs)}, timeout=120)
    assert 1 <= huge["threads"] <= procs
    assert huge["set_big"] <= procs
    assert huge["work"] == plain["work"]
    assert huge["loss"] == plain["loss"]
    assert huge["maxrss"] < 1 << 30, f"peak RSS {huge['maxrss'] / 2**20:.0f} MiB"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_workspace_is_capped_by_the_cores_and_the_work():
    """The GEMM scratch is sized for the processors this process may use, not the count the
    environment asks for, and for one thread when the product would not use more (below
    the parallel threshold, or a single tile to split)."""
    shapes = [(8, 8, 20000), (60, 60, 60), (256, 256, 256), (64, 1024, 512)]
    code = f"""
        import json, os
        os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}})  # one processor
        from gradkern.backends import c_backend
        fn = c_backend.FUNCS[c_backend.DTYPES[0]]
        print(json.dumps([int(fn.gemm_work(*s)) for s in {shapes!r}]))
    """
    one = _run(code.replace("print(json.dumps(", "print(json.dumps({'w': ").replace(
        "]))", "]}))"), env={"OMP_NUM_THREADS": "100000"}, timeout=60)["w"]
    fn = c_backend.FUNCS[np.dtype(np.float32)]
    here = [int(fn.gemm_work(*s)) for s in shapes]
    assert here[0] == one[0] and here[1] == one[1]  # one thread's scratch, any core count
    if len(os.sched_getaffinity(0)) >= 2:
        assert here[2] >= 2 * one[2] and here[3] >= 2 * one[3]  # one share per core
    assert C.set_threads(10**12) <= (os.cpu_count() or 1)
    C.set_threads(gk.get_threads())


def test_bad_environment_values_are_ignored_with_a_warning():
    out = _run("""
        import json, warnings
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            from gradkern.backends import c_backend
        import gradkern as gk
        print(json.dumps({"warnings": [str(x.message) for x in w],
                          "isa": c_backend.ISA_NAMES[int(c_backend.lib.gk_isa())],
                          "best": c_backend.ISA_NAMES[int(c_backend.lib.gk_best_isa())]}))
    """, env={"GRADKERN_ISA": "avx9000", "GRADKERN_PAR_MNK": "inf"}, timeout=60)
    text = " ".join(out["warnings"])
    assert "GRADKERN_ISA='avx9000'" in text and "GRADKERN_PAR_MNK='inf'" in text
    assert out["isa"] == out["best"]
