"""fit(..., scheduler=, callbacks=): per-step schedules through the fused epoch drivers,
the callback protocol and its built-ins, and resume bit-identical with a per-step and a
per-epoch scheduler and with early stopping, on every backend."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import gradkern as gk
from gradkern.checkpoint import CheckpointError
from gradkern.optim import lr_scheduler as S


def _data(rows=40, seed=0):
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((rows, 4)), rng.integers(0, 3, rows)
    Xv, yv = rng.standard_normal((30, 4)), rng.integers(0, 3, 30)
    return X, y, (Xv, yv)


def _model(backend, dtype="float64", bn=False):
    return gk.MLP([4, 16, 3], loss="cross_entropy", backend=backend, dtype=dtype, seed=1,
                  batchnorm=bn)


def _state(model, opt, sched=None):
    return (model.bufs.params.copy(), model.bufs.state.copy(),
            {k: v.copy() for k, v in opt.state_arrays().items()}, opt.lr,
            None if sched is None else sched.state_dict())


def _same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2].keys() == b[2].keys()
    for k in a[2]:
        np.testing.assert_array_equal(a[2][k], b[2][k])
    assert a[3] == b[3] and a[4] == b[4]


# ------------------------------------------------------------------ schedules in fit
def test_per_step_rates_reach_the_fused_epoch(backend):
    """A OneCycleLR fit == the same minibatches one train_step at a time, opt.lr set by
    hand to torch's sequence; afterwards opt.lr is the scheduler's current rate."""
    X, y, _ = _data()
    model, opt = _model(backend), gk.optim.SGD(lr=0.1, momentum=0.9)
    sched = S.OneCycleLR(opt, max_lr=0.5, total_steps=15)
    hist = model.fit(X, y, epochs=3, batch_size=8, optimizer=opt, scheduler=sched,
                     shuffle=False, progress=False)
    ref, ropt = _model(backend), gk.optim.SGD(lr=0.1, momentum=0.9)
    rates = S.OneCycleLR(gk.optim.SGD(lr=0.1), max_lr=0.5, total_steps=15).rates(15)
    k = 0
    for _ in range(3):
        for i in range(0, 40, 8):
            ropt.lr = rates[k]
            ref.train_step(X[i:i + 8], y[i:i + 8], ropt)
            k += 1
    np.testing.assert_array_equal(model.bufs.params, ref.bufs.params)
    assert hist["lr"] == [rates[0], rates[5], rates[10]]
    assert sched.last_epoch == 15 and opt.lr == sched.get_last_lr()[0]
    assert int(opt.step[0]) == 15


def test_per_epoch_schedule_and_plateau(backend):
    X, y, val = _data()
    model, opt = _model(backend), gk.optim.SGD(lr=0.2)
    sched = S.StepLR(opt, step_size=2, gamma=0.5)
    h = model.fit(X, y, epochs=5, batch_size=8, scheduler=sched, progress=False)
    assert h["lr"] == [0.2, 0.2, 0.1, 0.1, 0.05] and opt.lr == 0.05
    model, opt = _model(backend), gk.optim.Adam(lr=0.05)
    plateau = S.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    h = model.fit(X, y, epochs=6, batch_size=8, optimizer=opt, scheduler=plateau,
                  validation_data=val, progress=False)
    ref = S.ReduceLROnPlateau(gk.optim.Adam(lr=0.05), patience=0, factor=0.5)
    lrs = []
    for v in h["val_loss"]:
        lrs.append(ref.optimizer.lr)
        ref.step(v)  # stepped on val_loss
    assert h["lr"] == lrs and opt.lr == ref.optimizer.lr and lrs[-1] < 0.05


def test_schedule_past_its_steps_refused_before_training(backend):
    X, y, _ = _data()
    model, opt = _model(backend), gk.optim.SGD(lr=0.1)
    sched = S.OneCycleLR(opt, max_lr=0.5, total_steps=14)
    before = _state(model, opt, sched)
    rng_before = model.rng.bit_generator.state
    with pytest.raises(ValueError, match="OneCycleLR has 14 steps left; this fit takes 15"):
        model.fit(X, y, epochs=3, batch_size=8, scheduler=sched, progress=False)
    _same(_state(model, opt, sched), before)
    assert model.rng.bit_generator.state == rng_before


def test_scheduler_arguments_refused():
    X, y, _ = _data()
    model, opt = _model("numpy"), gk.optim.SGD(lr=0.1)
    with pytest.raises(TypeError, match="scheduler"):
        model.fit(X, y, epochs=1, scheduler="cosine", progress=False)
    with pytest.raises(ValueError, match="another optimizer"):
        model.fit(X, y, epochs=1, optimizer=gk.optim.SGD(), progress=False,
                  scheduler=S.StepLR(opt, step_size=1))
    with pytest.raises(TypeError, match="not a callback"):
        model.fit(X, y, epochs=1, callbacks=[object()], progress=False)
    with pytest.raises(TypeError, match="callbacks must be a list"):
        model.fit(X, y, epochs=1, callbacks=gk.CSVLogger("x.csv"), progress=False)
    with pytest.raises(ValueError, match="validation_data"):
        model.fit(X, y, epochs=1, callbacks=[gk.ModelCheckpoint("m.st")], progress=False)


def test_divergence_leaves_the_schedule_where_the_steps_stopped(backend):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 5)), rng.standard_normal((40, 1))
    model, opt = gk.MLP([5, 8, 1], loss="mse", backend=backend, seed=3), gk.optim.SGD()
    sched = S.OneCycleLR(opt, max_lr=1e13, total_steps=50)
    with pytest.raises(gk.TrainingDiverged):
        model.fit(X, y, epochs=5, batch_size=4, scheduler=sched, progress=False)
    done = int(opt.step[0])
    assert 0 < done < 50 and sched.last_epoch == done
    ref = S.OneCycleLR(gk.optim.SGD(), max_lr=1e13, total_steps=50)
    ref.rates(done)
    assert opt.lr == ref.optimizer.lr


def test_divergence_restore_puts_the_schedule_back_too(backend):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 5)), rng.standard_normal((40, 1))
    model, opt = gk.MLP([5, 8, 1], loss="mse", backend=backend, seed=3), gk.optim.SGD()
    sched = S.CyclicLR(opt, base_lr=1e-3, max_lr=1e13, step_size_up=15)
    with pytest.warns(RuntimeWarning, match="diverged"):
        h = model.fit(X, y, epochs=5, batch_size=4, scheduler=sched, progress=False,
                      on_divergence="restore")
    good = h.epochs_run * 10  # the steps of the epochs kept
    assert sched.last_epoch == good and int(opt.step[0]) == good


def test_per_step_schedule_with_diagnostics_chunks(backend):
    X, y, _ = _data()
    out = []
    for diag in (False, 2):
        model, opt = _model(backend), gk.optim.Adam(lr=0.01)
        sched = S.OneCycleLR(opt, max_lr=0.05, total_steps=10)
        model.fit(X, y, epochs=2, batch_size=8, scheduler=sched, diagnostics=diag,
                  progress=False)
        out.append(model.bufs.params.copy())
    np.testing.assert_array_equal(out[0], out[1])


# ------------------------------------------------------------------ callbacks
class Recorder(gk.Callback):
    def __init__(self, stop_at=None):
        self.calls, self.stop_at = [], stop_at

    def on_train_begin(self, model):
        self.calls.append(("begin", type(model).__name__))

    def on_epoch_end(self, epoch, logs):
        self.calls.append(("epoch", epoch, sorted(logs)))
        return epoch == self.stop_at

    def on_train_end(self, history):
        self.calls.append(("end", history.epochs_run))


def test_protocol_order_and_stop(backend):
    X, y, val = _data()
    rec, seen = Recorder(stop_at=2), []
    h = _model(backend).fit(X, y, epochs=5, batch_size=8, callbacks=[rec], progress=False,
                            validation_data=val, on_epoch=lambda e, f: seen.append(e))
    keys = sorted(["loss", "val_loss", "val_accuracy", "seconds"])
    assert rec.calls == [("begin", "MLP"), ("epoch", 1, keys), ("epoch", 2, keys), ("end", 2)]
    assert h.epochs_run == 2 and h.stopped_early and seen == [1, 2]


def test_model_checkpoint_keeps_the_best(backend, tmp_path):
    X, y, val = _data()
    model = _model(backend)
    best = {}

    def remember(epoch, figures):
        if not best or figures["val_loss"] < best["v"]:
            best.update(v=figures["val_loss"], w=model.bufs.params.copy(), e=epoch)

    mc = gk.ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_loss")
    every = gk.ModelCheckpoint(tmp_path / "e{epoch}.safetensors", save_best_only=False,
                               monitor="loss")
    model.fit(X, y, epochs=5, batch_size=8, optimizer=gk.optim.Adam(lr=0.05),
              validation_data=val, callbacks=[mc, every], on_epoch=remember, progress=False)
    loaded = gk.load(tmp_path / "best.safetensors", backend=backend)
    np.testing.assert_array_equal(loaded.bufs.params, best["w"])
    assert len(every.saved) == 5 and all((tmp_path / f"e{i}.safetensors").exists()
                                         for i in range(1, 6))
    assert 1 <= len(mc.saved) <= 5
    with pytest.raises(ValueError, match="mode"):
        gk.ModelCheckpoint("x", mode="best")
    with pytest.raises(ValueError, match="monitor"):
        gk.ModelCheckpoint("x", monitor="acc")


def test_csv_logger(backend, tmp_path):
    X, y, val = _data()
    path = tmp_path / "log.csv"
    opt = gk.optim.SGD(lr=0.1)
    h = _model(backend).fit(X, y, epochs=3, batch_size=8, validation_data=val,
                            scheduler=S.ExponentialLR(opt, gamma=0.5),
                            callbacks=[gk.CSVLogger(path)], progress=False)
    rows = list(csv.DictReader(open(path)))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert [float(r["val_loss"]) for r in rows] == h["val_loss"]
    assert [float(r["lr"]) for r in rows] == [0.1, 0.05, 0.025]
    _model(backend).fit(X, y, epochs=1, batch_size=8, callbacks=[gk.CSVLogger(path)],
                        progress=False)
    assert len(list(csv.DictReader(open(path)))) == 1  # a new fit overwrites


def test_early_stopping_is_a_callback(backend):
    X, y, val = _data()
    a, b = _model(backend), _model(backend)
    ha = a.fit(X, y, epochs=20, batch_size=8, optimizer=gk.optim.Adam(lr=0.05),
               validation_data=val, early_stopping=gk.EarlyStopping(patience=3),
               progress=False)
    hb = b.fit(X, y, epochs=20, batch_size=8, optimizer=gk.optim.Adam(lr=0.05),
               validation_data=val, callbacks=[gk.EarlyStopping(patience=3)], progress=False)
    assert ha.stopped_early and ha.epochs_run < 20 and ha.best_epoch == hb.best_epoch
    assert ha.history == hb.history or ha.history.keys() == hb.history.keys()
    np.testing.assert_array_equal(a.bufs.params, b.bufs.params)
    with pytest.raises(ValueError, match="min_delta"):
        gk.EarlyStopping(min_delta=-1.0)


# ------------------------------------------------------------------ resume
def _sched(kind, opt):
    if kind == "onecycle":
        return S.OneCycleLR(opt, max_lr=0.3, total_steps=30, anneal_strategy="linear")
    if kind == "step":
        return S.StepLR(opt, step_size=1, gamma=0.7)
    if kind == "plateau":
        return S.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    if kind == "warmup-cosine":
        return S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.2, total_iters=2),
                                    S.CosineAnnealingLR(opt, T_max=4)], milestones=[2])
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["onecycle", "step", "plateau", "warmup-cosine"])
def test_resume_with_a_scheduler_is_bit_identical(backend, kind, tmp_path):
    X, y, val = _data()
    N = 3
    straight, opt = _model(backend, bn=True), gk.optim.Adam(lr=0.05)
    s = _sched(kind, opt)
    hs = straight.fit(X, y, epochs=2 * N, batch_size=8, scheduler=s, validation_data=val,
                      progress=False)
    ck = tmp_path / "ck.safetensors"
    first, opt1 = _model(backend, bn=True), gk.optim.Adam(lr=0.05)
    first.fit(X, y, epochs=N, batch_size=8, scheduler=_sched(kind, opt1), validation_data=val,
              checkpoint=ck, progress=False)
    resumed, opt2 = _model(backend, bn=True), gk.optim.Adam(lr=0.05)
    s2 = _sched(kind, opt2)
    hr = resumed.fit(X, y, epochs=2 * N, batch_size=8, scheduler=s2, validation_data=val,
                     resume=ck, progress=False)
    _same(_state(straight, opt, s), _state(resumed, opt2, s2))
    assert {k: v for k, v in hs.history.items() if k != "seconds"} == {
        k: v for k, v in hr.history.items() if k != "seconds"}


def test_resume_refuses_a_scheduler_mismatch(tmp_path):
    X, y, _ = _data()
    ck = tmp_path / "ck.safetensors"
    opt = gk.optim.SGD(lr=0.1)
    _model("numpy").fit(X, y, epochs=1, batch_size=8, scheduler=S.StepLR(opt, step_size=1),
                        checkpoint=ck, progress=False)
    for make, match in [(lambda o: None, "saved with a scheduler"),
                        (lambda o: S.ExponentialLR(o, gamma=0.5), "not ExponentialLR")]:
        model, o = _model("numpy"), gk.optim.SGD(lr=0.1)
        sched = make(o)
        before = _state(model, o, sched)
        with pytest.raises(CheckpointError, match=match):
            model.fit(X, y, epochs=2, batch_size=8, optimizer=o, scheduler=sched, resume=ck,
                      progress=False)
        _same(_state(model, o, sched), before)
    plain = tmp_path / "plain.safetensors"
    _model("numpy").fit(X, y, epochs=1, batch_size=8, optimizer=gk.optim.SGD(lr=0.1),
                        checkpoint=plain, progress=False)
    o = gk.optim.SGD(lr=0.1)
    with pytest.raises(CheckpointError, match="no scheduler state"):
        _model("numpy").fit(X, y, epochs=2, batch_size=8, scheduler=S.StepLR(o, step_size=1),
                            resume=plain, progress=False)
    assert gk.load(ck).config() == _model("numpy").config()  # a plain load ignores it


@pytest.mark.parametrize("N", [3, 5])  # stopping after the checkpoint, and at it
def test_resume_with_early_stopping_is_bit_identical(backend, N, tmp_path):
    """Best epoch 1, stop at epoch 5 of 2N. Before the early-stopping state was saved, the
    resumed fit started with no best, so it stopped elsewhere and restored other weights."""
    X, y, val = _data()

    def run(epochs, **kw):
        model, opt = _model(backend), gk.optim.Adam(lr=0.05)
        es = gk.EarlyStopping(patience=3)
        h = model.fit(X, y, epochs=epochs, batch_size=8, optimizer=opt, validation_data=val,
                      early_stopping=es, progress=False, **kw)
        return model, opt, h

    straight, opt, hs = run(2 * N)
    assert hs.stopped_early and hs.best_epoch == 1 and hs.epochs_run == 5
    ck = tmp_path / "ck.safetensors"
    run(N, checkpoint=ck)
    resumed, opt2, hr = run(2 * N, resume=ck)
    _same(_state(straight, opt), _state(resumed, opt2))
    assert hr.stopped_early and hr.best_epoch == 1 and hr.epochs_run == 5
    assert straight.rng.bit_generator.state == resumed.rng.bit_generator.state


def test_resume_with_callbacks_appends_the_log_and_refuses_a_damaged_state(tmp_path):
    X, y, val = _data()
    ck, log = tmp_path / "ck.safetensors", tmp_path / "log.csv"
    _model("numpy").fit(X, y, epochs=2, batch_size=8, validation_data=val, checkpoint=ck,
                        callbacks=[gk.CSVLogger(log), gk.EarlyStopping(patience=9)],
                        progress=False)
    _model("numpy").fit(X, y, epochs=4, batch_size=8, validation_data=val, resume=ck,
                        callbacks=[gk.CSVLogger(log), gk.EarlyStopping(patience=9)],
                        progress=False)
    assert [r["epoch"] for r in csv.DictReader(open(log))] == ["1", "2", "3", "4"]
    with pytest.raises(CheckpointError, match="2 callbacks"):
        _model("numpy").fit(X, y, epochs=4, batch_size=8, validation_data=val, resume=ck,
                            callbacks=[gk.EarlyStopping(patience=9)], progress=False)


# ------------------------------------------------------------------ command line
@pytest.mark.parametrize("sched", [["onecycle", "--max-lr", "0.05"], ["cosine", "--warmup", "1"],
                                   ["step", "--step-size", "1", "--gamma", "0.5"],
                                   ["exponential"], ["plateau"]])
def test_cli_train_scheduler_and_log(sched, tmp_path, capsys):
    from gradkern.cli import main

    log = tmp_path / "log.csv"
    rc = main(["train", "--data", "iris", "--hidden", "8", "--epochs", "3", "--backend",
               "numpy", "--optimizer", "sgd", "--lr", "0.01", "--quiet", "--scheduler", *sched,
               "--log", str(log)])
    assert rc == 0
    rows = list(csv.DictReader(open(log)))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and "lr" in rows[0]
    lrs = [float(r["lr"]) for r in rows]
    if sched[0] == "step":
        assert lrs == [0.01, 0.005, 0.0025]
    if sched[0] == "onecycle":
        assert lrs[0] == pytest.approx(0.05 / 25) and max(lrs) <= 0.05
    assert "scheduler:" in capsys.readouterr().out


def test_cli_bad_scheduler_arguments(tmp_path):
    from gradkern.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--data", "iris", "--scheduler", "linear"])
    for extra in (["--warmup", "2"], ["--scheduler", "onecycle", "--warmup", "1"]):
        assert main(["train", "--data", "iris", "--epochs", "1", "--quiet", *extra]) != 0
