"""Resumable training: 2N epochs straight equal N + resume + N, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import gradkern as gk
from gradkern import checkpoint as ck


def _setup(backend, **kw):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((90, 6)), rng.integers(0, 3, 90)
    model = gk.MLP([6, 16, 3], loss="cross_entropy", backend=backend, seed=4, **kw)
    return model, X, y


@pytest.mark.parametrize("kw", [{}, {"batchnorm": True, "dropout": 0.2}])
@pytest.mark.parametrize("make_opt", [lambda: gk.optim.Adam(lr=1e-2),
                                      lambda: gk.optim.SGD(lr=0.05, momentum=0.9)],
                         ids=["adam", "sgd"])
def test_resume_is_bit_identical(backend, tmp_path, kw, make_opt):
    straight, X, y = _setup(backend, **kw)
    h_straight = straight.fit(X, y, epochs=6, batch_size=16, optimizer=make_opt(),
                              progress=False)

    path = tmp_path / "ck.safetensors"
    first, _, _ = _setup(backend, **kw)
    first.fit(X, y, epochs=3, batch_size=16, optimizer=make_opt(), progress=False,
              checkpoint=path, checkpoint_every=3)
    # a new process: a fresh model and optimizer, everything from the file
    second, _, _ = _setup(backend, **kw)
    h = second.fit(X, y, epochs=6, batch_size=16, optimizer=make_opt(), progress=False,
                   resume=path)
    for k, v in straight.named_parameters().items():
        np.testing.assert_array_equal(second.named_parameters()[k], v, err_msg=k)
    assert h["loss"] == h_straight["loss"]
    assert h.epochs_run == 6


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, X, y = _setup("numpy")
    path = tmp_path / "ck.st"
    opt = gk.optim.Adam()
    model.fit(X, y, epochs=2, batch_size=16, optimizer=opt, progress=False, checkpoint=path)
    good = path.read_bytes()
    calls = {"n": 0}
    import os

    real_fsync = os.fsync

    def interrupted(fd):  # the temp file is half written when the interrupt arrives
        calls["n"] += 1
        raise KeyboardInterrupt("injected during save")

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, epochs=4, batch_size=16, optimizer=opt, progress=False, checkpoint=path)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert calls["n"] == 1
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.st"]
    model2, _, _ = _setup("numpy")
    model2.fit(X, y, epochs=3, batch_size=16, optimizer=gk.optim.Adam(), progress=False,
               resume=path)


def test_exception_inside_the_write_leaves_no_temp_file(tmp_path, monkeypatch):
    import os

    model, X, y = _setup("numpy")
    path = tmp_path / "ck.st"
    opt = gk.optim.Adam()
    model.fit(X, y, epochs=1, batch_size=16, optimizer=opt, progress=False, checkpoint=path)
    good = path.read_bytes()
    real_replace = os.replace

    def crash(*a):
        raise RuntimeError("crash before rename (injected)")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(RuntimeError, match="injected"):
        model.fit(X, y, epochs=2, batch_size=16, optimizer=opt, progress=False, checkpoint=path)
    monkeypatch.setattr(os, "replace", real_replace)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.st"]


def test_resume_refuses_mismatches(tmp_path):
    model, X, y = _setup("numpy")
    path = tmp_path / "ck.st"
    model.fit(X, y, epochs=1, batch_size=16, optimizer=gk.optim.Adam(), progress=False,
              checkpoint=path)
    other = gk.MLP([6, 17, 3], loss="cross_entropy", backend="numpy", seed=4)
    before = other.get_weights()
    with pytest.raises(ck.CheckpointError, match="another model"):
        other.fit(X, y, epochs=2, optimizer=gk.optim.Adam(), progress=False, resume=path)
    same, _, _ = _setup("numpy")
    with pytest.raises(ck.CheckpointError, match="Adam state"):
        same.fit(X, y, epochs=2, optimizer=gk.optim.SGD(lr=0.1), progress=False, resume=path)
    for (a, b), (c, d) in zip(other.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    model.save(tmp_path / "plain.st")
    with pytest.raises(ck.CheckpointError, match="no training state"):
        same.fit(X, y, epochs=2, optimizer=gk.optim.Adam(), progress=False,
                 resume=tmp_path / "plain.st")


def test_diagnostics_recorded(backend):
    model, X, y = _setup(backend)
    h = model.fit(X, y, epochs=2, batch_size=16, progress=False, diagnostics=True)
    assert [d["epoch"] for d in h.diagnostics] == [1, 2]
    layers = h.diagnostics[-1]["layers"]
    assert [e["layer"] for e in layers] == [0, 2]
    assert all(e["grad_norm"] > 0 and e["weight_norm"] > 0 for e in layers)
    assert 0 < layers[0]["update_ratio"] < 1
    assert 0 <= layers[0]["dead_fraction"] <= 1
    # every N steps: 90 rows / 16 = 6 steps per epoch, N=4 -> records after steps 4, 6, 10, 12
    model2, _, _ = _setup(backend)
    h2 = model2.fit(X, y, epochs=2, batch_size=16, progress=False, diagnostics=4,
                    optimizer=gk.optim.Adam())
    assert [d["step"] for d in h2.diagnostics] == [4, 6, 10, 12]
    # chunked epochs train exactly as whole ones
    for k, v in model.named_parameters().items():
        np.testing.assert_array_equal(model2.named_parameters()[k], v, err_msg=k)
