"""PyTorch as referee for the learning-rate schedulers (`gk.optim.lr_scheduler`).

- torch/scheduler-rates: for every scheduler, the rate of every step over 3 epochs (3
  minibatches each) equals torch.optim.lr_scheduler's within SCHED_LR_RTOL·|torch|.
- torch/scheduler-3-epochs: `fit(..., scheduler=)` for 3 epochs on the backend (per-step
  schedules through the fused epoch driver) against torch training the same model on the
  same minibatches with its scheduler stepped at the same interval: every weight within
  the PyTorch bounds (float64 1e-7·S, float32 K_TORCH·u·S, S from `Magnitudes` carried
  along the same rates).

torch's cycle_momentum is switched off for OneCycleLR and CyclicLR (gradkern schedules
the rate only; see gradkern.lr_scheduler).
"""

from __future__ import annotations

import warnings

import numpy as np

from .magnitudes import Magnitudes
from .tolerance import SCHED_LR_RTOL, Worst, eps_of
from .torch_ref import _tol, _torch, _twin64, torch_data, torch_model

EPOCHS, ROWS, BATCH = 3, 24, 8
STEPS = ROWS // BATCH  # minibatches per epoch
PLATEAU_METRICS = (1.0, 1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)

# (label, optimizer, class, kwargs); "children" of SequentialLR are (class, kwargs) pairs
CASES = (
    ("StepLR", "sgd", "StepLR", {"step_size": 1, "gamma": 0.5}),
    ("StepLR per step", "sgd", "StepLR", {"step_size": 2, "gamma": 0.7, "interval": "step"}),
    ("MultiStepLR", "sgd", "MultiStepLR", {"milestones": [1, 2], "gamma": 0.3}),
    ("ExponentialLR", "adam", "ExponentialLR", {"gamma": 0.8}),
    ("CosineAnnealingLR", "sgd", "CosineAnnealingLR", {"T_max": 2, "eta_min": 0.01}),
    ("CosineAnnealingWarmRestarts", "adam", "CosineAnnealingWarmRestarts",
     {"T_0": 1, "T_mult": 2, "eta_min": 1e-3, "interval": "step"}),
    ("LinearLR", "sgd", "LinearLR", {"start_factor": 0.25, "total_iters": 2}),
    ("OneCycleLR", "adam", "OneCycleLR", {"max_lr": 0.05, "total_steps": EPOCHS * STEPS}),
    ("OneCycleLR linear 3-phase", "sgd", "OneCycleLR",
     {"max_lr": 0.2, "epochs": EPOCHS, "steps_per_epoch": STEPS, "anneal_strategy": "linear",
      "three_phase": True}),
    ("CyclicLR", "sgd", "CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 2,
                                     "mode": "triangular2"}),
    ("SequentialLR", "sgd", "SequentialLR",
     {"children": [("LinearLR", {"start_factor": 0.1, "total_iters": 1}),
                   ("ExponentialLR", {"gamma": 0.5})], "milestones": [1]}),
    ("ReduceLROnPlateau", "adam", "ReduceLROnPlateau", {"patience": 0, "factor": 0.5}),
)


def _optimizer(kind: str):
    from ..optim import SGD, Adam

    return SGD(lr=0.1, momentum=0.9) if kind == "sgd" else Adam(lr=1e-2)


def _ours(cls: str, kw: dict, opt):
    from .. import lr_scheduler as S

    kw = dict(kw)
    if cls == "SequentialLR":
        kids = [getattr(S, c)(opt, **k) for c, k in kw.pop("children")]
        return S.SequentialLR(opt, kids, **kw)
    return getattr(S, cls)(opt, **kw)


def _theirs(torch, cls: str, kw: dict, topt):
    L = torch.optim.lr_scheduler
    kw = {k: v for k, v in kw.items() if k != "interval"}
    if cls in ("OneCycleLR", "CyclicLR"):
        kw["cycle_momentum"] = False
    if cls == "SequentialLR":
        kids = [_theirs(torch, c, k, topt) for c, k in kw.pop("children")]
        return L.SequentialLR(topt, kids, **kw)
    return getattr(L, cls)(topt, **kw)


def _per_step(cls: str, kw: dict) -> bool:
    return kw.get("interval", "step" if cls in ("OneCycleLR", "CyclicLR") else "epoch") == "step"


def _torch_opt(torch, opt, params):
    from .. import torchref

    return torchref.torch_optimizer(opt, params)


def scheduler_rates(ctx, backend, dtype):
    """The rate of each of the EPOCHS·STEPS steps, ours against torch's."""
    torch, _ = _torch()
    w = Worst()
    for label, okind, cls, kw in CASES:
        opt = _optimizer(okind)
        p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
        topt = _torch_opt(torch, opt, [p])
        ours, theirs = _ours(cls, kw, opt), _theirs(torch, cls, kw, topt)
        got, ref = [], []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's "step before optimizer.step" notice
            for e in range(EPOCHS):
                if _per_step(cls, kw):
                    got.extend(ours.rates(STEPS))
                    for _ in range(STEPS):
                        ref.append(topt.param_groups[0]["lr"])
                        theirs.step()
                    continue
                got.extend([opt.lr] * STEPS)
                ref.extend([topt.param_groups[0]["lr"]] * STEPS)
                if cls == "ReduceLROnPlateau":
                    ours.step(PLATEAU_METRICS[e])
                    theirs.step(PLATEAU_METRICS[e])
                else:
                    ours.step()
                    theirs.step()
        got.append(ours.get_last_lr()[0])  # after the last step (torch's, even below 0)
        ref.append(topt.param_groups[0]["lr"])
        ref_a = np.asarray(ref)
        w.add(np.asarray(got), ref_a, SCHED_LR_RTOL * np.abs(ref_a), f"{label} rates")
    return w


def scheduler_epochs(ctx, backend, dtype):
    """Weights after EPOCHS epochs of fit(..., scheduler=) against torch's."""
    torch, torchref = _torch()
    u = eps_of(dtype)
    tol = _tol(dtype, u)
    w = Worst()
    cases = CASES[::3] if ctx.quick else CASES
    for label, okind, cls, kw in cases:
        rng = ctx.rng("torch scheduler", label, dtype)
        model = torch_model(backend, dtype, "cross_entropy", "tanh", bn=False, dropout=0.0)
        X, y = torch_data("cross_entropy", rng, rows=ROWS)
        X = X.astype(dtype)
        net, loss_fn = torchref.build(model)
        mag = Magnitudes(_twin64(model), u)
        opt, opt64 = _optimizer(okind), _optimizer(okind)
        topt = _torch_opt(torch, opt, net.parameters())
        sched = _ours(cls, kw, opt)
        tsched = _theirs(torch, cls, kw, topt)
        model.fit(X, y, epochs=EPOCHS, batch_size=BATCH, optimizer=opt, scheduler=sched,
                  shuffle=False, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(EPOCHS):
                losses = []
                for b in range(STEPS):
                    Xb, yb = X[b * BATCH:(b + 1) * BATCH], y[b * BATCH:(b + 1) * BATCH]
                    opt64.lr = topt.param_groups[0]["lr"]
                    net.train()
                    topt.zero_grad()
                    loss = loss_fn(net(torch.from_numpy(Xb)), torchref.targets(model, yb))
                    loss.backward()
                    topt.step()
                    losses.append(loss.item())
                    mag.train_step(Xb, yb, opt64)
                    if _per_step(cls, kw):
                        tsched.step()
                if cls == "ReduceLROnPlateau":
                    tsched.step(float(np.mean(losses)))
                elif not _per_step(cls, kw):
                    tsched.step()
        theirs = torchref.named_state(net)
        ours = model.named_parameters()
        for k, v in theirs.items():
            w.add(ours[k], v, tol * mag.S[k], f"{label} {k} after {EPOCHS} epochs")
        w.add(np.asarray(sched.get_last_lr()), np.asarray([topt.param_groups[0]["lr"]]),
              SCHED_LR_RTOL * abs(topt.param_groups[0]["lr"]), f"{label} rate after")
    return w
