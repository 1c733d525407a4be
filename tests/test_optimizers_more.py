"""RMSprop and Adagrad (issue 13 item 2): torch.optim's update rules on every backend and
dtype, the fused epoch against single steps, rejected steps, argument checks, checkpoint
resume and pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import gradkern as gk
from gradkern import checkpoint as ck
from gradkern.contract import OPT_SLOTS, OPT_STATE, Opt
from gradkern.verify import Context, c_tiles
from gradkern.verify.kernels import KERNELS
from gradkern.verify.torch_ref import torch_adagrad, torch_rmsprop

RMSprop, Adagrad = gk.optim.RMSprop, gk.optim.Adagrad

# every configuration: plain, weight decay, momentum, centered, all of them at once
MAKERS = {
    "rmsprop": lambda: RMSprop(lr=1e-2),
    "rmsprop_momentum_wd": lambda: RMSprop(lr=1e-2, alpha=0.9, momentum=0.9, weight_decay=1e-2),
    "rmsprop_centered": lambda: RMSprop(lr=1e-2, centered=True),
    "rmsprop_all": lambda: RMSprop(lr=5e-3, alpha=0.95, eps=1e-6, weight_decay=0.1,
                                   momentum=0.5, centered=True),
    "adagrad": lambda: Adagrad(lr=0.1),
    "adagrad_all": lambda: Adagrad(lr=0.1, lr_decay=0.05, weight_decay=1e-2,
                                   initial_accumulator_value=0.1, eps=1e-8),
}
IDS = list(MAKERS)


def _model(backend, dtype="float64", **kw):
    return gk.MLP([6, 12, 3], activation="tanh", loss="cross_entropy", dtype=dtype,
                  backend=backend, seed=2, **kw)


def _data(rows=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, 6)), rng.integers(0, 3, rows)


def _state(opt):
    return {n: getattr(opt, n).copy() for n in OPT_SLOTS} | {"step": opt.step.copy()}


# ------------------------------------------------------------------ against torch.optim
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("check", [torch_rmsprop, torch_adagrad], ids=["rmsprop", "adagrad"])
def test_ten_steps_match_torch(backend, dtype, check):
    """gradkern check's rows: 10 steps against torch.optim (with and without batch norm),
    weights, running statistics and inference outputs within the design's bound."""
    pytest.importorskip("torch", reason="PyTorch is not installed: its cross-checks skip")
    with np.errstate(all="ignore"):  # quick: RMSprop plain and with every option at once
        w = check(Context(quick=True, tiles=c_tiles()), backend, dtype)
    assert w.compared > 0
    assert w.ratio <= 1.0, f"{backend} {dtype}: {w.n_bad} beyond bound; {w.where}"


@pytest.mark.parametrize("name", ["rmsprop_update", "adagrad_update"])
def test_kernel_cases_exist(name):
    """The flat-buffer kernels are in verify's kernel cases (run by test_kernels.py)."""
    assert name in {k.name for k in KERNELS}


def test_a_wrong_rule_fails_the_torch_check():
    """The bound catches an RMSprop whose smoothing constant is off by 1 %."""
    pytest.importorskip("torch", reason="PyTorch is not installed: its cross-checks skip")
    import gradkern.verify.torch_ref as tr

    class Off(RMSprop):  # updates with alpha 0.98 while torch is told 0.99
        def config(self):
            return super().config() | {"alpha": 0.99}

    orig = tr.RMSPROP_CASES
    try:
        tr.RMSPROP_CASES = (("off", {"lr": 1e-2, "alpha": 0.98}),)
        import gradkern.optim as go

        real = go.RMSprop
        go.RMSprop = Off
        try:
            w = tr.torch_rmsprop(Context(quick=False, tiles=c_tiles()), "numpy", "float64")
        finally:
            go.RMSprop = real
    finally:
        tr.RMSPROP_CASES = orig
    assert w.ratio > 1.0


# ------------------------------------------------------------------ fused epoch == steps
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", IDS)
def test_fused_epoch_equals_step_by_step(backend, dtype, name):
    """One train_epoch call (fused in C and Numba) gives, bit for bit, what the same
    minibatches give one train_step at a time; optimizer state and step included."""
    X, y = _data(40)
    a, b = _model(backend, dtype, batchnorm=True), _model(backend, dtype, batchnorm=True)
    oa, ob = MAKERS[name](), MAKERS[name]()
    be = a.backend
    Xc, yc = a._check_Xy(X, y)
    perm = np.random.default_rng(3).permutation(40).astype(np.int64)
    seeds = np.arange(1, 4, dtype=np.uint64)
    losses, gnorms = np.zeros(3), np.zeros(3)
    assert be.train_epoch(a.plan, a.bufs, Xc, yc, perm, 16, oa, seeds, 0.0, losses,
                          gnorms) == 3
    ob.bind(b.plan.n_params, b.dtype)
    b.bufs.ensure_capacity(16)
    for k in range(3):
        idx = perm[16 * k : 16 * k + 16]
        loss, _ = b.backend.train_step(b.plan, b.bufs, Xc[idx], yc[idx], ob, int(seeds[k]),
                                       0.0)
        assert loss == losses[k]
    for k, v in a.named_parameters().items():
        np.testing.assert_array_equal(v, b.named_parameters()[k], err_msg=k)
    sa, sb = _state(oa), _state(ob)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    assert int(oa.step[0]) == 3
    assert np.abs(oa.buf1).max() > 0  # the state moved


@pytest.mark.parametrize("name", IDS)
def test_every_backend_agrees_with_the_reference(backend, name):
    """fit on this backend (its fused epochs) against the NumPy reference, float64."""
    X, y = _data(48)
    m, ref = _model(backend), _model("numpy")
    m.fit(X, y, epochs=2, batch_size=16, optimizer=MAKERS[name](), progress=False)
    ref.fit(X, y, epochs=2, batch_size=16, optimizer=MAKERS[name](), progress=False)
    for k, v in ref.named_parameters().items():
        np.testing.assert_allclose(m.named_parameters()[k], v, rtol=1e-9, atol=1e-11,
                                   err_msg=k)


# ------------------------------------------------------------------ rejected steps
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", IDS)
def test_nonfinite_step_is_rejected(backend, dtype, name):
    """A step whose loss and gradient are not finite reaches neither the weights nor the
    optimizer's state (train_step, and fit's fused epoch)."""
    X, y = _data(16)
    model, opt = _model(backend, dtype), MAKERS[name]()
    model.train_step(X, y, opt)  # one good step: the state is non-trivial
    model.named_parameters()["2.weight"][:, 0] = np.inf  # logits inf: the loss is NaN
    before = {k: v.copy() for k, v in model.named_parameters().items()}
    state = _state(opt)
    with pytest.raises(gk.TrainingDiverged):
        model.train_step(X, y, opt)
    with pytest.raises(gk.TrainingDiverged):
        model.fit(X, y, epochs=1, batch_size=8, optimizer=opt, progress=False)
    for k, v in model.named_parameters().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    for k, v in _state(opt).items():
        np.testing.assert_array_equal(v, state[k], err_msg=k)
    assert int(opt.step[0]) == 1


def test_nan_propagates_through_the_kernels(backend):
    """A NaN gradient handed to the kernel directly is not swallowed: it reaches the
    parameter and the state (the drivers reject such a step before the kernel)."""
    be = gk.backends.get(backend)
    for opt in (RMSprop(momentum=0.9, centered=True), Adagrad()):
        opt.bind(5, np.float64)
        p, g = np.ones(5), np.ones(5)
        g[2] = np.nan
        if opt.kind == Opt.RMSPROP:
            be.rmsprop_update(p, g, opt.buf1, opt.buf2, opt.buf3, opt.hyper, 1)
        else:
            be.adagrad_update(p, g, opt.buf1, opt.hyper, 1)
        assert np.isnan(p[2]) and np.isnan(opt.buf1[2])
        assert np.isfinite(np.delete(p, 2)).all()


# ------------------------------------------------------------------ arguments
@pytest.mark.parametrize("make,match", [
    (lambda: RMSprop(lr=-1), "lr"),
    (lambda: RMSprop(alpha=-0.1), "alpha"),
    (lambda: RMSprop(alpha=1.5), "alpha"),
    (lambda: RMSprop(eps=0), "eps"),
    (lambda: RMSprop(eps=-1e-8), "eps"),
    (lambda: RMSprop(momentum=-0.5), "momentum"),
    (lambda: RMSprop(weight_decay=-1), "weight_decay"),
    (lambda: RMSprop(lr=float("nan")), "lr"),
    (lambda: Adagrad(lr=-0.1), "lr"),
    (lambda: Adagrad(lr_decay=-1), "lr_decay"),
    (lambda: Adagrad(weight_decay=-1), "weight_decay"),
    (lambda: Adagrad(initial_accumulator_value=-1), "initial_accumulator_value"),
    (lambda: Adagrad(eps=0), "eps"),
    (lambda: Adagrad(eps=float("inf")), "eps"),
])
def test_bad_arguments_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_argument_types_are_refused():
    with pytest.raises(TypeError, match="lr"):
        RMSprop(lr="fast")
    with pytest.raises(TypeError, match="eps"):
        Adagrad(eps=None)


def test_eps_below_float32_tiny_is_refused_before_training():
    X, y = _data(16)
    model = _model("numpy", "float32")
    before = {k: v.copy() for k, v in model.named_parameters().items()}
    with pytest.raises(ValueError, match="smallest normal"):
        model.train_step(X, y, Adagrad(eps=1e-40))
    for k, v in model.named_parameters().items():
        np.testing.assert_array_equal(v, before[k])


def test_defaults_are_torchs():
    assert RMSprop().config() == {"name": "RMSprop", "lr": 0.01, "alpha": 0.99, "eps": 1e-8,
                                  "weight_decay": 0.0, "momentum": 0.0, "centered": False}
    assert Adagrad().config() == {"name": "Adagrad", "lr": 0.01, "lr_decay": 0.0,
                                  "weight_decay": 0.0, "initial_accumulator_value": 0.0,
                                  "eps": 1e-10}
    for o in (RMSprop(momentum=0.9, centered=True), Adagrad(lr_decay=0.1)):
        assert gk.optim.from_config(o.config()).config() == o.config()
        assert repr(gk.optim.from_config(o.config())) == repr(o)
    assert isinstance(gk.optim.make("rmsprop", lr=0.1), RMSprop)
    assert isinstance(gk.optim.make("adagrad"), Adagrad)


def test_state_slots_follow_the_configuration():
    """buf1/buf2/buf3 hold contract.OPT_STATE; what a configuration does not use is empty."""
    assert OPT_STATE[Opt.RMSPROP] == ("square_avg", "momentum_buffer", "grad_avg")
    assert OPT_STATE[Opt.ADAGRAD] == ("sum",)
    for opt, used in [(RMSprop(), {"buf1"}), (RMSprop(momentum=0.1), {"buf1", "buf2"}),
                      (RMSprop(centered=True), {"buf1", "buf3"}),
                      (RMSprop(momentum=0.1, centered=True), {"buf1", "buf2", "buf3"}),
                      (Adagrad(initial_accumulator_value=0.5), {"buf1"})]:
        opt.bind(7, np.float32)
        assert set(opt.state_arrays()) == used | {"step"}
        for n in OPT_SLOTS:
            assert getattr(opt, n).size == (7 if n in used else 0)
            assert n not in used or getattr(opt, n).ctypes.data % 64 == 0
    assert (opt.buf1 == np.float32(0.5)).all()  # Adagrad's sum starts at the given value


def test_adagrad_lr_decays_with_the_step(backend):
    """clr = lr / (1 + (step - 1)·lr_decay), from the step counter."""
    be = gk.backends.get(backend)
    opt = Adagrad(lr=1.0, lr_decay=1.0, initial_accumulator_value=0.0, eps=1e-10)
    opt.bind(1, np.float64)
    p = np.zeros(1)
    be.adagrad_update(p, np.ones(1), opt.buf1, opt.hyper, 4)  # clr = 1/4, sum = 1
    assert p[0] == pytest.approx(-0.25, rel=1e-9)


# ------------------------------------------------------------------ checkpoints, pickle
@pytest.mark.parametrize("name", ["rmsprop_all", "rmsprop_momentum_wd", "adagrad_all"])
def test_resume_is_bit_identical(backend, tmp_path, name):
    X, y = _data(60)
    kw = {"batchnorm": True, "dropout": 0.2}
    straight = _model(backend, **kw)
    h_straight = straight.fit(X, y, epochs=4, batch_size=16, optimizer=MAKERS[name](),
                              progress=False)
    path = tmp_path / "ck.safetensors"
    first = _model(backend, **kw)
    first.fit(X, y, epochs=2, batch_size=16, optimizer=MAKERS[name](), progress=False,
              checkpoint=path, checkpoint_every=2)
    second = _model(backend, **kw)
    h = second.fit(X, y, epochs=4, batch_size=16, optimizer=MAKERS[name](), progress=False,
                   resume=path)
    for k, v in straight.named_parameters().items():
        np.testing.assert_array_equal(second.named_parameters()[k], v, err_msg=k)
    assert h["loss"] == h_straight["loss"]


def test_checkpoint_holds_the_used_slots_and_is_checked(tmp_path):
    X, y = _data(32)
    model, opt = _model("numpy"), RMSprop(momentum=0.9, centered=True)
    model.fit(X, y, epochs=1, batch_size=16, optimizer=opt, progress=False)
    path = tmp_path / "m.safetensors"
    ck.save_model(model, path, optimizer=opt)
    _, opt2, _ = gk.load_checkpoint(path, with_optimizer=True)
    for k, v in opt.state_arrays().items():
        np.testing.assert_array_equal(opt2.state_arrays()[k], v, err_msg=k)
    assert set(opt2.state_arrays()) == {"buf1", "buf2", "buf3", "step"}
    # a negative square_avg is refused; a negative momentum buffer or grad_avg is fine
    opt.buf2[0] = opt.buf3[0] = -1.0
    ck.save_model(model, path, optimizer=opt)
    gk.load_checkpoint(path, with_optimizer=True)
    opt.buf1[0] = -1.0
    ck.save_model(model, path, optimizer=opt)
    with pytest.raises(ck.CheckpointError, match="square_avg"):
        gk.load_checkpoint(path, with_optimizer=True)


def test_pickle_round_trip_trains_identically(backend):
    X, y = _data(32)
    for name in ("rmsprop_all", "adagrad_all"):
        model, opt = _model(backend), MAKERS[name]()
        model.fit(X, y, epochs=1, batch_size=16, optimizer=opt, progress=False)
        m2, o2 = pickle.loads(pickle.dumps((model, opt)))
        assert o2.config() == opt.config()
        for k, v in opt.state_arrays().items():
            np.testing.assert_array_equal(o2.state_arrays()[k], v)
        for n in OPT_SLOTS:
            assert getattr(o2, n).size == 0 or getattr(o2, n).ctypes.data % 64 == 0
        model.train_step(X, y, opt)
        m2.train_step(X, y, o2)
        for k, v in model.named_parameters().items():
            np.testing.assert_array_equal(m2.named_parameters()[k], v, err_msg=k)


# ------------------------------------------------------------------ command line
@pytest.mark.parametrize("name,cls", [("rmsprop", "RMSprop"), ("adagrad", "Adagrad")])
def test_train_command_takes_the_optimizers(capsys, name, cls):
    from gradkern.cli import main

    assert main(["train", "--data", "iris", "--hidden", "8", "--epochs", "3", "--quiet",
                 "--backend", "numpy", "--optimizer", name, "--momentum", "0.5"]
                + (["--lr", "0.05"] if name == "adagrad" else [])) == 0
    out = capsys.readouterr().out
    assert f"optimizer: {cls}(lr={0.05 if name == 'adagrad' else 0.01}" in out
    if name == "rmsprop":
        assert "momentum=0.5" in out
