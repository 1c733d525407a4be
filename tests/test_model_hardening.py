"""Issue 10, items 6-8: wrong results refused, threads, pickling — on every backend.

6. fit(batch_size=1) with batch normalization is refused and a 1-row last minibatch left
   out; set_weights casts before its finiteness check; np.matrix (any ndarray subclass)
   is converted; Adam's eps must be > 0 (and normal in the model's dtype); a fit that
   applied no step leaves the model as it was, data-order generator included.
7. Several threads predicting with one model get the single-thread results bit for bit;
   training calls from several threads are serialized.
8. Models, Buffers and optimizers pickle, deep-copy and go through joblib, and carry on
   exactly as the original; a backend that does not load raises BackendUnavailable.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gradkern as gk
from gradkern.plan import ALIGN_BYTES, Buffers

RNG = np.random.default_rng(7)
X = RNG.standard_normal((30, 5))
Y = RNG.integers(0, 3, 30)


def _model(backend, **kw):
    kw.setdefault("batchnorm", True)
    kw.setdefault("dropout", 0.2)
    return gk.MLP([5, 8, 3], loss="cross_entropy", backend=backend, seed=3, **kw)


def _state(model):
    return (model.bufs.params.copy(), model.bufs.state.copy(),
            repr(model._rng.bit_generator.state))


def _assert_same_state(model, state):
    params, st, rng = state
    np.testing.assert_array_equal(model.bufs.params, params)
    np.testing.assert_array_equal(model.bufs.state, st)
    assert repr(model._rng.bit_generator.state) == rng


# ------------------------------------------------------------------------- item 6
def test_fit_refuses_batch_size_1_with_batchnorm(backend):
    model = _model(backend)
    before = _state(model)
    with pytest.raises(ValueError, match="batch_size=1 with batch normalization"):
        model.fit(X, Y, epochs=1, batch_size=1, progress=False)
    _assert_same_state(model, before)
    # without batch normalization a batch of one is an ordinary SGD step
    plain = _model(backend, batchnorm=False)
    h = plain.fit(X[:4], Y[:4], epochs=1, batch_size=1, progress=False)
    assert len(h["loss"]) == 1 and np.isfinite(h["loss"][0])


def test_fit_leaves_out_a_one_row_last_batch_with_batchnorm(backend):
    """N % batch_size == 1: the row that would be a batch of its own is left out (as
    DataLoader's drop_last), not trained as a 1-row batch and not an error."""
    n, bs = 9, 4
    a, b = _model(backend, dropout=0.0), _model(backend, dropout=0.0)
    h = a.fit(X[:n], Y[:n], epochs=1, batch_size=bs, shuffle=False, progress=False,
              optimizer=gk.optim.SGD(lr=0.1))
    opt = gk.optim.SGD(lr=0.1)
    losses = [b.train_step(X[:4], Y[:4], opt), b.train_step(X[4:8], Y[4:8], opt)]
    np.testing.assert_array_equal(a.bufs.params, b.bufs.params)
    np.testing.assert_array_equal(a.bufs.state, b.bufs.state)
    assert h["loss"][0] == pytest.approx(np.mean(losses), rel=1e-6)


def test_set_weights_casts_to_the_model_dtype_before_checking(backend):
    model = gk.MLP([3, 4, 2], backend=backend, dtype="float32")
    ws = model.get_weights()
    bad = [(w.astype(np.float64), b) for w, b in ws]
    bad[1] = (bad[1][0].copy(), bad[1][1])
    bad[1][0][0, 0] = 1e300  # finite in float64, inf in float32
    before = _state(model)
    with pytest.raises(ValueError, match=r"weights\[1\] W.*range.*float32"):
        model.set_weights(bad)
    _assert_same_state(model, before)
    assert np.isfinite(model.bufs.params).all()
    # the same value is fine for a float64 model
    m64 = gk.MLP([3, 4, 2], backend=backend, dtype="float64")
    m64.set_weights(bad)
    assert m64.get_weights()[1][0][0, 0] == 1e300


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_np_matrix_inputs_are_plain_arrays(backend):
    """np.matrix stays 2-D under indexing; it is converted with np.asarray at validation."""
    clf = _model(backend, dropout=0.0)
    loss, grads = clf.gradients(X, Y)
    loss_m, grads_m = clf.gradients(np.matrix(X), np.matrix(Y).T)
    assert loss_m == loss
    for (a, b), (am, bm) in zip(grads, grads_m, strict=True):
        np.testing.assert_array_equal(am, a)
        np.testing.assert_array_equal(bm, b)
    assert clf.evaluate(np.matrix(X), np.matrix(Y).T) == clf.evaluate(X, Y)

    reg = gk.MLP([5, 8, 1], loss="mse", backend=backend, seed=3)
    t = X[:, :1] * 2.0
    ref = reg.evaluate(X, t)
    assert reg.evaluate(np.matrix(X), np.matrix(t)) == ref
    masked = np.ma.array(t, mask=np.zeros_like(t, dtype=bool))
    assert reg.evaluate(X, masked) == ref
    a, b = (gk.MLP([5, 8, 1], loss="mse", backend=backend, seed=3) for _ in range(2))
    a.fit(X, t, epochs=2, batch_size=8, progress=False)
    b.fit(np.matrix(X), np.matrix(t), epochs=2, batch_size=8, progress=False)
    np.testing.assert_array_equal(a.bufs.params, b.bufs.params)


@pytest.mark.parametrize("make", [
    lambda: gk.optim.Adam(eps=0), lambda: gk.optim.Adam(eps=0.0),
    lambda: gk.optim.AdamW(eps=-1e-8), lambda: gk.optim.Adam(eps=-0.0),
])
def test_adam_eps_must_be_positive(make):
    with pytest.raises(ValueError, match="eps must be > 0.*divides"):
        make()


def test_adam_eps_below_the_dtype_is_refused_and_tiny_eps_stays_finite(backend):
    """One behaviour on every backend: an eps the float32 update cannot hold is refused
    before any state changes; the smallest accepted one, with a constant feature (zero
    gradients), leaves every parameter finite."""
    Xc = X.copy()
    Xc[:, 2] = 0.0  # a constant feature: its weights get exactly zero gradients
    model = _model(backend, dropout=0.0)
    before = _state(model)
    opt = gk.optim.Adam(eps=1e-40)
    with pytest.raises(ValueError, match="eps=1e-40 is below the smallest normal float32"):
        model.fit(Xc, Y, epochs=1, batch_size=8, optimizer=opt, progress=False)
    _assert_same_state(model, before)
    assert opt.buf1 is None
    with pytest.raises(ValueError, match="smallest normal float32"):
        model.train_step(Xc, Y, gk.optim.Adam(eps=1e-40))
    _assert_same_state(model, before)
    # float64 holds it
    m64 = _model(backend, dropout=0.0, dtype="float64")
    m64.fit(Xc, Y, epochs=1, batch_size=8, optimizer=gk.optim.Adam(eps=1e-40), progress=False)
    assert np.isfinite(m64.bufs.params).all()
    tiny = float(np.finfo(np.float32).tiny)
    model.fit(Xc, Y, epochs=2, batch_size=8, optimizer=gk.optim.Adam(lr=0.1, eps=tiny),
              progress=False)
    assert np.isfinite(model.bufs.params).all()


def _bound_elsewhere():
    opt = gk.optim.SGD(lr=0.1)
    gk.MLP([2, 1], backend="numpy").train_step(np.ones((2, 2)), np.ones(2), opt)
    return opt


BAD_FITS = {
    "nan X": lambda: {"X": np.where(np.eye(30, 5) > 0, np.nan, X)},
    "labels out of range": lambda: {"y": Y + 5},
    "bad validation_data": lambda: {"validation_data": (X[:, :4], Y)},
    "batch_size=1 with batchnorm": lambda: {"batch_size": 1},
    "optimizer of another model": lambda: {"optimizer": _bound_elsewhere()},
    "Adam eps below float32": lambda: {"optimizer": gk.optim.Adam(eps=1e-45)},
    "missing resume file": lambda: {"resume": "/nonexistent/gradkern/ckpt.safetensors"},
    "first step diverges": lambda: {"X": np.full((30, 5), 3e38)},
}


@pytest.mark.parametrize("case", sorted(BAD_FITS))
def test_rejected_fit_leaves_model_and_generator(backend, case):
    """fit(bad) then fit(good) gives the weights of fit(good) on a fresh model, bit for bit:
    a fit that applied no step leaves weights, statistics and the generator as they were."""
    good = {"X": X, "y": Y, "epochs": 2, "batch_size": 8, "progress": False}
    bad = {**good, "optimizer": gk.optim.Adam(lr=1e-2), **BAD_FITS[case]()}
    model = _model(backend)
    before = _state(model)
    opt = bad["optimizer"]
    opt_before = opt.snapshot()
    with pytest.raises((ValueError, TypeError, OSError, gk.TrainingDiverged)):
        model.fit(bad.pop("X"), bad.pop("y"), **bad)
    _assert_same_state(model, before)
    for a, b in zip(opt.snapshot(), opt_before, strict=True):
        np.testing.assert_array_equal(a, b)
    model.fit(good.pop("X"), good.pop("y"), optimizer=gk.optim.Adam(lr=1e-2), **good)
    fresh = _model(backend)
    fresh.fit(X, Y, epochs=2, batch_size=8, progress=False, optimizer=gk.optim.Adam(lr=1e-2))
    np.testing.assert_array_equal(model.bufs.params, fresh.bufs.params)
    np.testing.assert_array_equal(model.bufs.state, fresh.bufs.state)
    assert repr(model._rng.bit_generator.state) == repr(fresh._rng.bit_generator.state)


def test_divergence_after_accepted_steps_keeps_the_last_good_step(backend):
    """Documented: once steps were applied, TrainingDiverged leaves the weights and the
    optimizer state of the last accepted step (finite), not the start of the fit."""
    model = gk.MLP([5, 8, 1], loss="mse", backend=backend, seed=3)
    start = model.bufs.params.copy()
    opt = gk.optim.SGD(lr=1e12)
    with pytest.raises(gk.TrainingDiverged):
        model.fit(X, X[:, 0] * 1e3, epochs=3, batch_size=4, optimizer=opt, progress=False)
    assert int(opt.step[0]) >= 1
    assert np.isfinite(model.bufs.params).all()
    assert not np.array_equal(model.bufs.params, start)


# ------------------------------------------------------------------------- item 7
def _run_isolated(code: str, timeout: float = 240) -> str:
    """Run `code` in a fresh interpreter (a crash or hang fails the test, not pytest)."""
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", "/tmp/nbcache-test-model-hardening")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


THREADS_SCRIPT = """
import threading
import numpy as np
import gradkern as gk
import gradkern.model as gm

backend = {backend!r}
rng = np.random.default_rng(0)
model = gk.MLP([6, 32, 16, 3], loss="cross_entropy", backend=backend, batchnorm=True,
               dropout=0.1, seed=1)
Xt = rng.standard_normal((64, 6)); yt = rng.integers(0, 3, 64)
model.fit(Xt, yt, epochs=2, batch_size=16, progress=False)
gm.PREDICT_CHUNK = 16  # several chunks per call, so workspaces are reused mid-call
inputs = [rng.standard_normal((int(n), 6)) for n in rng.integers(1, 50, size=40)]
labels = [rng.integers(0, 3, x.shape[0]) for x in inputs]
ref = [model.predict_raw(x) for x in inputs]
ref_eval = [model.evaluate(x, t) for x, t in zip(inputs, labels)]
bad, errors, calls = [0], [], [0]
lock = threading.Lock()
start = threading.Barrier(4)

def work(k):
    try:
        start.wait()
        for rep in range(6):
            for i in range(len(inputs)):
                j = (i * (k + 1) + rep) % len(inputs)  # each thread its own order
                out = model.predict_raw(inputs[j])
                ev = model.evaluate(inputs[j], labels[j])
                with lock:
                    calls[0] += 2
                    bad[0] += (not np.array_equal(out, ref[j])) + (ev != ref_eval[j])
    except Exception as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print("predict", calls[0], bad[0], errors)

# training from two threads is serialized: 2 x 5 train_steps on one batch equal 10 in a row
twin = gk.MLP([6, 32, 16, 3], loss="cross_entropy", backend=backend, batchnorm=True,
              dropout=0.1, seed=1)
twin.set_weights(model.get_weights()); twin.bufs.state[...] = model.bufs.state
twin._rng.bit_generator.state = model._rng.bit_generator.state
opt, opt_twin = gk.optim.SGD(lr=0.05, momentum=0.9), gk.optim.SGD(lr=0.05, momentum=0.9)
go = threading.Barrier(3)

def train():
    go.wait()
    for _ in range(5):
        model.train_step(Xt, yt, opt)

def predict_meanwhile():
    go.wait()
    for _ in range(20):
        assert model.predict_raw(Xt).shape == (64, 3)

ts = [threading.Thread(target=train), threading.Thread(target=train),
      threading.Thread(target=predict_meanwhile)]
for t in ts: t.start()
for t in ts: t.join()
for _ in range(10):
    twin.train_step(Xt, yt, opt_twin)
same = (np.array_equal(model.bufs.params, twin.bufs.params)
        and np.array_equal(model.bufs.state, twin.bufs.state))
print("train", int(opt.step[0]), same)
"""


def test_threads_predict_bit_identical_and_training_serialized(backend):
    out = _run_isolated(THREADS_SCRIPT.format(backend=backend))
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    calls, bad, errors = lines["predict"].split(" ", 2)
    assert errors == "[]", errors
    assert int(calls) == 4 * 6 * 40 * 2
    assert int(bad) == 0, f"{bad} of {calls} concurrent calls differ from one thread's"
    assert lines["train"] == "10 True"


# ------------------------------------------------------------------------- item 8
def _joblib_roundtrip(obj):
    joblib = pytest.importorskip("joblib")
    f = io.BytesIO()
    joblib.dump(obj, f)
    f.seek(0)
    return joblib.load(f)


COPIES = {
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
    "deepcopy": copy.deepcopy,
    "joblib": _joblib_roundtrip,
}


@pytest.mark.parametrize("how", sorted(COPIES))
def test_model_and_optimizer_copies_continue_identically(backend, how):
    model = _model(backend)
    opt = gk.optim.Adam(lr=1e-2)
    model.fit(X, Y, epochs=2, batch_size=8, optimizer=opt, progress=False)
    model.predict(X)  # a per-thread workspace and the backend's cached structs exist
    m2, o2 = COPIES[how]((model, opt))
    assert m2.backend_name == backend and m2.backend is gk.backends.get(backend)
    assert m2.config() == model.config()
    for a in (m2.bufs.params, m2.bufs.grads, m2.bufs.state, m2.bufs.acts, o2.buf1, o2.buf2):
        assert a.ctypes.data % ALIGN_BYTES == 0
    assert not any(k.startswith("_gk") for k in vars(m2.bufs))
    assert not any(k.startswith("_gk") for k in vars(o2))
    # the optimizer kept its moments and step
    for name in ("buf1", "buf2", "step"):
        np.testing.assert_array_equal(getattr(o2, name), getattr(opt, name), err_msg=name)
    np.testing.assert_array_equal(m2.predict_raw(X), model.predict_raw(X))
    assert m2.evaluate(X, Y) == model.evaluate(X, Y)
    # training continues identically (data order and dropout seeds come from the generator)
    model.fit(X, Y, epochs=1, batch_size=8, optimizer=opt, progress=False)
    m2.fit(X, Y, epochs=1, batch_size=8, optimizer=o2, progress=False)
    np.testing.assert_array_equal(m2.bufs.params, model.bufs.params)
    np.testing.assert_array_equal(m2.bufs.state, model.bufs.state)
    np.testing.assert_array_equal(o2.buf2, opt.buf2)
    assert m2.bufs.params.ctypes.data != model.bufs.params.ctypes.data  # a copy, not shared


def test_copy_moves_to_another_backend(backend):
    model = _model(backend)
    model.fit(X, Y, epochs=1, batch_size=8, progress=False)
    twin = pickle.loads(pickle.dumps(model)).to_backend("numpy")
    np.testing.assert_allclose(twin.predict_proba(X), model.predict_proba(X), atol=1e-5)


def test_buffers_and_optimizer_pickle_alone(backend):
    model = _model(backend)
    opt = gk.optim.SGD(lr=0.1, momentum=0.9)
    model.fit(X, Y, epochs=1, batch_size=8, optimizer=opt, progress=False)
    b = pickle.loads(pickle.dumps(model.bufs))
    assert isinstance(b, Buffers) and b.capacity == model.bufs.capacity
    np.testing.assert_array_equal(b.params, model.bufs.params)
    np.testing.assert_array_equal(b.state, model.bufs.state)
    o = pickle.loads(pickle.dumps(opt))
    np.testing.assert_array_equal(o.buf1, opt.buf1)
    assert int(o.step[0]) == int(opt.step[0]) > 0 and o.config() == opt.config()
    # the unpickled optimizer is still bound to a model of this shape, and works there
    twin = pickle.loads(pickle.dumps(model))
    twin.train_step(X, Y, o)
    model.train_step(X, Y, opt)
    np.testing.assert_array_equal(twin.bufs.params, model.bufs.params)


def test_unpickling_where_the_backend_does_not_load_raises(monkeypatch, backend):
    data = pickle.dumps(_model(backend))
    real_get = gk.backends.get

    def get(name="auto"):
        if name == backend:
            raise gk.backends.BackendUnavailable(name, "not built here")
        return real_get(name)

    monkeypatch.setattr(gk.backends, "get", get)
    with pytest.raises(gk.backends.BackendUnavailable,
                       match=rf"'{backend}' is not available: not built here.*pickled"):
        pickle.loads(data)
