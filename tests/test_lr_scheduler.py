"""gk.optim.lr_scheduler: torch's sequences for every class (edge arguments too), the
state_dict round trip, bad arguments refused."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

import gradkern as gk
from gradkern.optim import lr_scheduler as S

torch = pytest.importorskip("torch", reason="PyTorch is not installed")

LR = 0.1
METRICS = [1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.4, 0.41, 0.42, 0.43,
           0.44, 0.45, 0.46, 0.47, 0.48]


def _make(name, kw, opt):
    """(ours, theirs) of class `name`; kw may hold callables of the optimizer (children)."""
    return getattr(S, name)(opt, **kw)


def _torch_make(name, kw, topt):
    cls = getattr(torch.optim.lr_scheduler, name)
    kw = dict(kw)
    if name in ("OneCycleLR", "CyclicLR"):
        kw["cycle_momentum"] = False
    kw.pop("monitor", None)
    return cls(topt, **kw)


def _seq_children(make_child, opt):
    return [make_child(n, k, opt) for n, k in (("LinearLR", {"start_factor": 0.1,
                                                              "total_iters": 3}),
                                                ("CosineAnnealingLR", {"T_max": 6}))]


CASES = [
    ("StepLR", {"step_size": 3, "gamma": 0.5}, 12),
    ("StepLR", {"step_size": 1}, 6),  # edge: every epoch, default gamma
    ("MultiStepLR", {"milestones": [2, 5, 5, 9], "gamma": 0.3}, 12),  # a repeated milestone
    ("MultiStepLR", {"milestones": [0, 1]}, 4),  # edge: milestone 0
    ("ExponentialLR", {"gamma": 0.9}, 10),
    ("ExponentialLR", {"gamma": 1.0}, 3),
    ("CosineAnnealingLR", {"T_max": 5, "eta_min": 0.001}, 17),  # past T_max: torch's form
    ("CosineAnnealingLR", {"T_max": 1}, 5),
    ("CosineAnnealingWarmRestarts", {"T_0": 3, "T_mult": 2, "eta_min": 0.01}, 20),
    ("CosineAnnealingWarmRestarts", {"T_0": 1}, 4),
    ("LinearLR", {"start_factor": 0.25, "end_factor": 1.0, "total_iters": 4}, 8),
    ("LinearLR", {"start_factor": 1.0, "end_factor": 0.0, "total_iters": 1}, 4),
    ("OneCycleLR", {"max_lr": 1.0, "total_steps": 20}, 20),
    ("OneCycleLR", {"max_lr": 0.5, "epochs": 3, "steps_per_epoch": 7, "pct_start": 0.25,
                    "anneal_strategy": "linear", "three_phase": True}, 21),
    ("OneCycleLR", {"max_lr": 0.5, "total_steps": 5, "pct_start": 0.0}, 5),
    ("OneCycleLR", {"max_lr": 0.2, "total_steps": 1}, 1),
    ("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 3}, 15),
    ("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 2, "step_size_down": 5,
                  "mode": "triangular2"}, 20),
    ("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 4, "mode": "exp_range",
                  "gamma": 0.9}, 20),
    ("ReduceLROnPlateau", {"patience": 1, "factor": 0.5}, 20),
    ("ReduceLROnPlateau", {"mode": "max", "patience": 0, "threshold": 0.01,
                           "threshold_mode": "abs", "cooldown": 2, "min_lr": 0.02}, 20),
    ("SequentialLR", {"milestones": [3]}, 12),
]


def _pair(name, kw, opt_kind="sgd"):
    opt = gk.optim.SGD(lr=LR) if opt_kind == "sgd" else gk.optim.Adam(lr=LR)
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    topt = (torch.optim.SGD([p], lr=LR) if opt_kind == "sgd"
            else torch.optim.Adam([p], lr=LR))
    if name == "SequentialLR":
        ours = S.SequentialLR(opt, _seq_children(lambda n, k, o: getattr(S, n)(o, **k), opt),
                              **kw)
        theirs = torch.optim.lr_scheduler.SequentialLR(
            topt, _seq_children(lambda n, k, o: _torch_make(n, k, o), topt), **kw)
    else:
        ours, theirs = _make(name, kw, opt), _torch_make(name, kw, topt)
    return opt, ours, topt, theirs


def _run(opt, sched, n, torch_side=None):
    out = [opt.lr]
    for k in range(n):
        if torch_side is not None:
            torch_side.step()
        if isinstance(sched, (S.ReduceLROnPlateau, torch.optim.lr_scheduler.ReduceLROnPlateau)):
            sched.step(METRICS[k])
        else:
            sched.step()
        out.append(sched.get_last_lr()[0] if not isinstance(sched, S.LRScheduler) else opt.lr)
    return out


@pytest.mark.parametrize("name,kw,n", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("opt_kind", ["sgd", "adam"])
def test_sequence_is_torchs(name, kw, n, opt_kind):
    opt, ours, topt, theirs = _pair(name, kw, opt_kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs_lrs = [topt.param_groups[0]["lr"]]
        for k in range(n):
            topt.step()
            theirs.step(METRICS[k]) if name == "ReduceLROnPlateau" else theirs.step()
            theirs_lrs.append(topt.param_groups[0]["lr"])
    ours_lrs = [opt.lr]
    for k in range(n):
        ours.step(METRICS[k]) if name == "ReduceLROnPlateau" else ours.step()
        ours_lrs.append(ours.get_last_lr()[0])
        assert opt.lr == max(0.0, ours.get_last_lr()[0])
    np.testing.assert_allclose(ours_lrs, theirs_lrs, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name,kw,n", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rates_are_the_stepped_sequence(name, kw, n):
    if name == "ReduceLROnPlateau":
        opt = gk.optim.SGD(lr=LR)
        with pytest.raises(ValueError, match="per epoch"):
            S.ReduceLROnPlateau(opt, **kw).rates(3)
        return
    opt, ours, *_ = _pair(name, kw)
    opt2, ours2, *_ = _pair(name, kw)
    k = n // 2
    r = np.concatenate([ours.rates(k), ours.rates(n - k)])
    stepped = []
    for _ in range(n):
        stepped.append(opt2.lr)
        ours2.step()
    assert r.dtype == np.float64 and r.tolist() == stepped
    assert opt.lr == opt2.lr


@pytest.mark.parametrize("name,kw,n", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_state_dict_round_trip(name, kw, n):
    """Half-way state through JSON into a fresh scheduler (whose optimizer has another lr):
    the rest of the sequence is bit-identical."""
    opt, ours, *_ = _pair(name, kw)
    step = (lambda s, k: s.step(METRICS[k])) if name == "ReduceLROnPlateau" else (
        lambda s, k: s.step())
    half = n // 2
    for k in range(half):
        step(ours, k)
    sd = json.loads(json.dumps(ours.state_dict()))
    opt2, fresh, *_ = _pair(name, kw)
    opt2.lr = 0.777
    fresh.load_state_dict(sd)
    assert opt2.lr == opt.lr and fresh.get_last_lr() == ours.get_last_lr()
    for k in range(half, n):
        step(ours, k)
        step(fresh, k)
        assert opt2.lr == opt.lr


def test_bad_state_refused_and_nothing_changes():
    opt = gk.optim.SGD(lr=LR)
    s = S.StepLR(opt, step_size=2)
    s.step()
    before = s.state_dict()
    bad = [dict(before, name="ExponentialLR"), dict(before, last_epoch=1.5),
           dict(before, lr=float("nan")), dict(before, lr=-1.0), dict(before, gamma="x"),
           {k: v for k, v in before.items() if k != "gamma"}, dict(before, extra=1),
           dict(before, interval="daily"), "not a dict", dict(before, base_lrs=[0.1, 0.2])]
    for b in bad:
        with pytest.raises(ValueError):
            s.load_state_dict(b)
        assert s.state_dict() == before and opt.lr == before["lr"]
    w = S.CosineAnnealingWarmRestarts(gk.optim.SGD(lr=LR), T_0=3)
    with pytest.raises(ValueError, match="T_cur"):
        w.load_state_dict(dict(w.state_dict(), T_cur=7))


def _opt():
    return gk.optim.SGD(lr=LR)


@pytest.mark.parametrize("make,exc,match", [
    (lambda: S.StepLR(_opt(), step_size=0), ValueError, "step_size"),
    (lambda: S.StepLR(_opt(), step_size=2.5), TypeError, "step_size"),
    (lambda: S.StepLR(_opt(), step_size=2, gamma=float("nan")), ValueError, "gamma"),
    (lambda: S.StepLR("sgd", step_size=2), TypeError, "not a gk.optim optimizer"),
    (lambda: S.StepLR(_opt(), step_size=2, interval="batch"), ValueError, "interval"),
    (lambda: S.MultiStepLR(_opt(), milestones=[-1]), ValueError, "milestones"),
    (lambda: S.MultiStepLR(_opt(), milestones=3), TypeError, "milestones"),
    (lambda: S.ExponentialLR(_opt(), gamma=-0.5), ValueError, "gamma"),
    (lambda: S.CosineAnnealingLR(_opt(), T_max=0), ValueError, "T_max"),
    (lambda: S.CosineAnnealingLR(_opt(), T_max=3, eta_min=-1.0), ValueError, "eta_min"),
    (lambda: S.CosineAnnealingWarmRestarts(_opt(), T_0=0), ValueError, "T_0"),
    (lambda: S.CosineAnnealingWarmRestarts(_opt(), T_0=2, T_mult=0), ValueError, "T_mult"),
    (lambda: S.LinearLR(_opt(), start_factor=0.0), ValueError, "start_factor"),
    (lambda: S.LinearLR(_opt(), end_factor=1.5), ValueError, "end_factor"),
    (lambda: S.LinearLR(_opt(), total_iters=0), ValueError, "total_iters"),
    (lambda: S.OneCycleLR(_opt(), max_lr=1.0), ValueError, "total_steps"),
    (lambda: S.OneCycleLR(_opt(), max_lr=1.0, total_steps=0), ValueError, "total_steps"),
    (lambda: S.OneCycleLR(_opt(), max_lr=1.0, total_steps=5, pct_start=1), TypeError,
     "pct_start"),
    (lambda: S.OneCycleLR(_opt(), max_lr=1.0, total_steps=5, pct_start=1.5), ValueError,
     "pct_start"),
    (lambda: S.OneCycleLR(_opt(), max_lr=1.0, total_steps=5, anneal_strategy="exp"),
     ValueError, "anneal_strategy"),
    (lambda: S.OneCycleLR(_opt(), max_lr=1.0, total_steps=5, cycle_momentum=True),
     ValueError, "cycle_momentum"),
    (lambda: S.OneCycleLR(_opt(), max_lr=float("inf"), total_steps=5), ValueError, "max_lr"),
    (lambda: S.OneCycleLR(_opt(), max_lr=1.0, total_steps=5, div_factor=0), ValueError,
     "div_factor"),
    (lambda: S.CyclicLR(_opt(), base_lr=0.1, max_lr=1.0, mode="sine"), ValueError, "mode"),
    (lambda: S.CyclicLR(_opt(), base_lr=0.1, max_lr=1.0, step_size_up=0), ValueError,
     "step_size_up"),
    (lambda: S.ReduceLROnPlateau(_opt(), factor=1.0), ValueError, "factor"),
    (lambda: S.ReduceLROnPlateau(_opt(), mode="up"), ValueError, "mode"),
    (lambda: S.ReduceLROnPlateau(_opt(), threshold_mode="pct"), ValueError, "threshold"),
    (lambda: S.ReduceLROnPlateau(_opt(), monitor="accuracy"), ValueError, "monitor"),
    (lambda: S.SequentialLR(_opt(), [], []), ValueError, "at least one"),
    (lambda: S.SequentialLR(_opt(), [S.StepLR(_opt(), step_size=2)], []), ValueError,
     "same optimizer"),
])
def test_bad_arguments_refused(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_sequential_refuses_plateau_and_milestone_count():
    o = _opt()
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        S.SequentialLR(o, [S.ReduceLROnPlateau(o), S.StepLR(o, step_size=2)], [2])
    o = _opt()
    with pytest.raises(ValueError, match="milestone"):
        S.SequentialLR(o, [S.StepLR(o, step_size=2), S.StepLR(o, step_size=3)], [])


def test_one_cycle_past_its_steps_refused_without_moving():
    o = _opt()
    s = S.OneCycleLR(o, max_lr=1.0, total_steps=4)
    s.rates(3)
    before = s.state_dict()
    with pytest.raises(ValueError, match="more steps"):
        s.rates(2)
    assert s.state_dict() == before
    s.rates(1)  # the 4th step is still there
    with pytest.raises(ValueError, match="Tried to step"):
        s.step()


def test_plateau_nan_metric_refused():
    s = S.ReduceLROnPlateau(_opt())
    with pytest.raises(ValueError, match="NaN"):
        s.step(math.nan)


def test_importable_both_ways_and_intervals():
    from gradkern.optim.lr_scheduler import OneCycleLR, StepLR

    assert gk.optim.lr_scheduler.StepLR is StepLR
    assert OneCycleLR(_opt(), max_lr=1.0, total_steps=3).interval == "step"
    assert S.CyclicLR(_opt(), base_lr=0.1, max_lr=1.0).interval == "step"
    assert StepLR(_opt(), step_size=2).interval == "epoch"
    assert StepLR(_opt(), step_size=2, interval="step").interval == "step"
    assert OneCycleLR(_opt(), max_lr=1.0, total_steps=3, interval="epoch").interval == "epoch"
    assert "StepLR(step_size=2, gamma=0.1" in repr(StepLR(_opt(), step_size=2))


def test_check_rows_against_torch(backend, dtype):
    """gradkern check's torch/scheduler-* rows: every scheduler's rates over 3 epochs, and
    the weights after 3 epochs of fit(..., scheduler=) on this backend, within the bounds."""
    from gradkern.verify.common import Context
    from gradkern.verify.schedulers import scheduler_epochs, scheduler_rates

    ctx = Context(quick=False)
    for check in (scheduler_rates, scheduler_epochs):
        w = check(ctx, backend, dtype)
        assert w.ok, (check.__name__, w.ratio, w.where)


VECTOR_CASES = [
    ("OneCycleLR", {"max_lr": 0.3, "total_steps": 1000}),
    ("OneCycleLR", {"max_lr": 0.3, "total_steps": 999, "anneal_strategy": "linear"}),
    ("OneCycleLR", {"max_lr": 0.3, "total_steps": 997, "pct_start": 0.7, "three_phase": True}),
    ("OneCycleLR", {"max_lr": 0.3, "total_steps": 1000, "pct_start": 0.0}),
    ("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 7, "step_size_down": 3}),
    ("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 5, "mode": "triangular2"}),
    ("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 9, "mode": "exp_range",
                  "gamma": 0.997}),
    ("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 4,
                  "scale_fn": lambda x: 1.0 / (1 + x), "scale_mode": "iterations"}),
]


@pytest.mark.parametrize("name,kw", VECTOR_CASES, ids=[f"{c[0]}-{i}" for i, c in
                                                       enumerate(VECTOR_CASES)])
def test_vector_rates_are_the_stepped_bits(name, kw, monkeypatch):
    """OneCycleLR / CyclicLR compute rates(n) in one NumPy pass (no step() call): the same
    bits as n step() calls, in chunks of any size, and the same state afterwards."""
    stepped_opt = gk.optim.SGD(lr=LR)
    stepped = getattr(S, name)(stepped_opt, **kw)
    want = []
    for _ in range(990):
        want.append(stepped_opt.lr)
        stepped.step()
    opt = gk.optim.SGD(lr=LR)
    s = getattr(S, name)(opt, **kw)
    monkeypatch.setattr(type(s), "step", lambda self: pytest.fail("rates() stepped"))
    got = np.concatenate([s.rates(k) for k in (1, 2, 64, 3, 128, 500, 292)])
    assert got.dtype == np.float64 and got.tolist() == want
    assert s.state_dict() == stepped.state_dict() and opt.lr == stepped_opt.lr
    assert s.get_last_lr() == stepped.get_last_lr()


def test_vector_rates_match_torch_over_long_runs():
    for name, kw in VECTOR_CASES[:3] + VECTOR_CASES[4:7]:
        opt, ours, topt, theirs = _pair(name, kw)
        want = [topt.param_groups[0]["lr"]]
        for _ in range(989):
            topt.step()
            theirs.step()
            want.append(topt.param_groups[0]["lr"])
        np.testing.assert_allclose(ours.rates(990), want, rtol=1e-12, atol=0, err_msg=name)


def test_vector_rates_refuse_a_non_finite_rate_without_moving():
    opt = gk.optim.SGD(lr=LR)
    s = S.CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=2,
                   scale_fn=lambda c: math.inf if c >= 3 else 1.0)
    s.rates(3)
    before = s.state_dict()
    with pytest.raises(ValueError, match="scheduled a rate of (inf|nan)"):
        s.rates(20)
    assert s.state_dict() == before and opt.lr == before["lr"]


def test_subclass_changing_get_lr_steps_one_by_one():
    class Halved(S.OneCycleLR):
        def get_lr(self):
            return super().get_lr() / 2

    opt, opt2 = gk.optim.SGD(lr=LR), gk.optim.SGD(lr=LR)
    a, b = Halved(opt, max_lr=1.0, total_steps=10), Halved(opt2, max_lr=1.0, total_steps=10)
    want = []
    for _ in range(6):
        want.append(opt2.lr)
        b.step()
    assert a.rates(6).tolist() == want
