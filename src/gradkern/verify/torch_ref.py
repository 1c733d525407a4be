"""PyTorch as referee: the same model in torch.nn with the same weights (`gradkern.torchref`
builds it): loss, every gradient, ten optimizer steps, batch normalization in training and
inference mode. Bounds: float64 1e-7·S, float32 K_TORCH·u·S, S from `Magnitudes`.
Without torch every check raises `Skipped` with the reason.
"""

from __future__ import annotations

from ..contract import Act, Loss, names
from .common import Skipped
from .magnitudes import Magnitudes
from .tolerance import K_TORCH, TORCH_RTOL64, Worst, eps_of

TORCH_STEPS = 10


def _torch():
    from .. import torchref

    ok, reason = torchref.available()
    if not ok:
        raise Skipped(f"skipped: {reason}")
    import torch

    return torch, torchref


def _twin64(model):
    """A float64 copy of `model` on the NumPy backend, with the same weights and state."""
    from ..model import Sequential

    twin = Sequential(model.layers, input_size=model.input_size, loss=model.loss,
                      dtype="float64", backend="numpy", seed=model.seed)
    src = model.named_parameters()
    for k, v in twin.named_parameters().items():
        v[...] = src[k]
    twin._rng.bit_generator.state = model._rng.bit_generator.state
    return twin


def _tol(dtype: str, u: float) -> float:
    """The factor of S: 1e-7 in float64, K_TORCH·u in float32 (tolerance.py)."""
    return TORCH_RTOL64 if dtype == "float64" else K_TORCH * u


def torch_model(backend, dtype, loss="cross_entropy", act="tanh", bn=True, dropout=0.0,
                seed=3):
    """The small MLP every PyTorch comparison uses (6 inputs, hidden 12 and 9)."""
    from ..model import MLP

    return MLP([6, 12, 9, 4 if loss == "cross_entropy" else 2], activation=act, loss=loss,
               dtype=dtype, backend=backend, batchnorm=bn, dropout=dropout, seed=seed)


def torch_data(loss, rng, rows=24):
    X = rng.standard_normal((rows, 6))
    if loss == "cross_entropy":
        return X, rng.integers(0, 4, rows)
    if loss == "binary_cross_entropy":
        return X, rng.integers(0, 2, (rows, 2)).astype(float)
    return X, rng.standard_normal((rows, 2))


def _perturb_bn(model, rng):
    """gamma, beta and running statistics away from 1, 0, 0, 1."""
    for i in range(len(model.plan.layers)):
        p, s = model.bufs.params_of(i), model.bufs.state_of(i)
        if "gamma" not in p:
            continue
        p["gamma"][...] = rng.uniform(0.5, 1.5, p["gamma"].shape)
        p["beta"][...] = rng.normal(0, 0.3, p["beta"].shape)
        s["running_mean"][...] = rng.normal(0, 0.5, s["running_mean"].shape)
        s["running_var"][...] = rng.uniform(0.5, 2.0, s["running_var"].shape)


def _torch_gradients(ctx, backend, dtype, bn: bool) -> Worst:
    torch, torchref = _torch()
    w, u = Worst(), eps_of(dtype)
    tol = _tol(dtype, u)
    acts = ("tanh", "relu", "gelu") if ctx.quick else names(Act)
    for loss in names(Loss):
        for act in acts:
            rng = ctx.rng("torch gradients", loss, act, bn)
            model = torch_model(backend, dtype, loss, act, bn, dropout=0.0 if bn else 0.2)
            if bn:
                _perturb_bn(model, rng)
            X, y = torch_data(loss, rng)
            X = X.astype(dtype)
            seed = model._peek_seed()  # the dropout masks gradients() draws
            loss_ours, grads = model.named_gradients(X, y)
            mag = Magnitudes(_twin64(model), u).pass_(X, y, seed)
            net, loss_fn = torchref.build(model, seed=seed)
            net.train()
            out = net(torch.from_numpy(X))
            loss_t = loss_fn(out, torchref.targets(model, y))
            loss_t.backward()
            tag = f"{loss}/{act}"
            w.add_scalar(loss_ours, loss_t.item(), tol * mag["loss"], f"{tag} loss")
            for k, g in torchref.named_grads(net).items():
                w.add(grads[k], g, tol * mag[k], f"{tag} grad {k}")
    return w


def torch_weighted(ctx, backend, dtype):
    """Weighted losses (issue 12 item 3): per-row sample weights against torch's
    reduction='none' weighted by hand (Σ w·l / Σ w, l a row's mean over its outputs), and
    cross_entropy's class weights against CrossEntropyLoss(weight=...); loss and every
    gradient, within K_TORCH·u·S of the magnitude model."""
    torch, torchref = _torch()
    nn = torch.nn
    w, u = Worst(), eps_of(dtype)
    tol = _tol(dtype, u)
    for loss in names(Loss):
        for kind in (("sample", "class") if loss == "cross_entropy" else ("sample",)):
            rng = ctx.rng("torch weighted", loss, kind)
            model = torch_model(backend, dtype, loss, "tanh", False)
            X, y = torch_data(loss, rng)
            X = X.astype(dtype)
            if kind == "class":
                cw = rng.uniform(0.2, 3.0, 4)
                sw = cw[y]
            else:
                sw = rng.uniform(0.0, 2.0, X.shape[0])
                sw[0] = 0.0
            be, plan, bufs = model.backend, model.plan, model.bufs
            bufs.ensure_capacity(X.shape[0])
            yc = model.check_data(X, y)[1]
            loss_ours = be.gradients(plan, bufs, X, yc, 0, weight=sw.astype(dtype))
            grads = {k: v.copy() for k, v in model._grad_views().items()}
            mag = Magnitudes(_twin64(model), u).pass_(X, y, 0)
            net, _ = torchref.build(model)
            net.train()
            out = net(torch.from_numpy(X))
            t = torchref.targets(model, y)
            tw = torch.from_numpy(sw.astype(dtype))
            if kind == "class":
                lt = nn.CrossEntropyLoss(weight=torch.from_numpy(cw.astype(dtype)))(out, t)
            elif loss == "cross_entropy":
                lt = (nn.CrossEntropyLoss(reduction="none")(out, t) * tw).sum() / tw.sum()
            else:
                fn = {"mse": nn.MSELoss, "binary_cross_entropy": nn.BCEWithLogitsLoss,
                      "l1": nn.L1Loss}.get(loss)
                per = (fn(reduction="none") if fn else
                       nn.HuberLoss(reduction="none", delta=model.huber_delta))(out, t)
                lt = (per.mean(dim=1) * tw).sum() / tw.sum()
            lt.backward()
            tag = f"{loss} {kind}-weighted"
            scale = X.shape[0] * float(sw.max()) / float(sw.sum())  # w_i / Σw against 1/B
            w.add_scalar(loss_ours, lt.item(), tol * scale * mag["loss"], f"{tag} loss")
            for k, g in torchref.named_grads(net).items():
                w.add(grads[k], g, tol * scale * mag[k], f"{tag} grad {k}")
    return w


def torch_gradients(ctx, backend, dtype):
    return _torch_gradients(ctx, backend, dtype, bn=False)


def torch_batchnorm_train(ctx, backend, dtype):
    """Training mode: loss and every gradient through batch statistics (gamma, beta and
    running statistics perturbed). Running statistics after training steps are compared
    in the torch/*-10-steps rows."""
    return _torch_gradients(ctx, backend, dtype, bn=True)


def _trajectory(ctx, backend, dtype, label, make, bn, w: Worst, eval_after: bool = True):
    """TORCH_STEPS steps of ours, of torch and of the float64 twin carrying S; then the
    weights, running statistics and inference-mode outputs are compared."""
    torch, torchref = _torch()
    u = eps_of(dtype)
    tol = _tol(dtype, u)
    rng = ctx.rng("torch steps", label, bn, dtype)
    model = torch_model(backend, dtype, "cross_entropy", "tanh", bn, dropout=0.0)
    if bn:
        _perturb_bn(model, rng)
    net, loss_fn = torchref.build(model)
    mag = Magnitudes(_twin64(model), u)
    opt, topt = make(), None
    opt64 = make()
    topt = torchref.torch_optimizer(opt, net.parameters())
    for _ in range(TORCH_STEPS):
        X, y = torch_data("cross_entropy", rng)
        X = X.astype(dtype)
        model.train_step(X, y, opt)
        net.train()
        topt.zero_grad()
        loss_fn(net(torch.from_numpy(X)), torchref.targets(model, y)).backward()
        topt.step()
        mag.train_step(X, y, opt64)
    theirs = torchref.named_state(net)
    ours = model.named_parameters()
    kind = "bn" if bn else "plain"
    for k, v in theirs.items():
        w.add(ours[k], v, tol * mag.S[k], f"{label} {kind} {k} after {TORCH_STEPS} steps")
    if eval_after:
        X, _ = torch_data("cross_entropy", rng)
        X = X.astype(dtype)
        net.eval()
        with torch.no_grad():
            ref = net(torch.from_numpy(X)).numpy()
        Sout = mag.pass_(X, None, 0, training=False)["out"]
        w.add(model.predict_raw(X), ref, tol * Sout, f"{label} {kind} inference outputs")
    return w


def torch_sgd(ctx, backend, dtype):
    from ..optim import SGD

    w = Worst()
    cases = [("sgd momentum+wd", lambda: SGD(lr=0.05, momentum=0.9, weight_decay=1e-2)),
             ("sgd nesterov+wd", lambda: SGD(lr=0.05, momentum=0.9, nesterov=True,
                                             weight_decay=1e-3)),
             ("sgd dampening", lambda: SGD(lr=0.1, momentum=0.5, dampening=0.3))]
    for label, make in cases[:2] if ctx.quick else cases:
        for bn in (False, True):
            _trajectory(ctx, backend, dtype, label, make, bn, w)
    return w


def torch_adam(ctx, backend, dtype):
    from ..optim import Adam

    w = Worst()
    for bn in (False, True):
        _trajectory(ctx, backend, dtype, "adam+wd", lambda: Adam(lr=1e-2, weight_decay=1e-2),
                    bn, w)
    return w


def torch_adamw(ctx, backend, dtype):
    from ..optim import AdamW

    w = Worst()
    for bn in (False, True):
        _trajectory(ctx, backend, dtype, "adamw",
                    lambda: AdamW(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1), bn, w)
    return w


# every configuration of the two: plain, weight decay, momentum, centered (and together)
RMSPROP_CASES = (
    ("rmsprop", dict(lr=1e-2)),
    ("rmsprop wd+momentum", dict(lr=1e-2, alpha=0.9, weight_decay=1e-2, momentum=0.9)),
    ("rmsprop centered", dict(lr=1e-2, centered=True)),
    ("rmsprop centered+momentum+wd", dict(lr=5e-3, alpha=0.95, eps=1e-6, weight_decay=0.1,
                                          momentum=0.5, centered=True)),
)
ADAGRAD_CASES = (
    ("adagrad", dict(lr=0.1)),
    ("adagrad lr_decay+wd+init", dict(lr=0.1, lr_decay=0.05, weight_decay=1e-2,
                                      initial_accumulator_value=0.1, eps=1e-8)),
)


def torch_rmsprop(ctx, backend, dtype):
    from ..optim import RMSprop

    w = Worst()
    for label, kw in RMSPROP_CASES[::3] if ctx.quick else RMSPROP_CASES:
        for bn in (False, True):
            _trajectory(ctx, backend, dtype, label, lambda kw=kw: RMSprop(**kw), bn, w)
    return w


def torch_adagrad(ctx, backend, dtype):
    from ..optim import Adagrad

    w = Worst()
    for label, kw in ADAGRAD_CASES:
        for bn in (False, True):
            _trajectory(ctx, backend, dtype, label, lambda kw=kw: Adagrad(**kw), bn, w)
    return w


def torch_batchnorm_eval(ctx, backend, dtype):
    """Inference mode with non-trivial running statistics, before any training."""
    torch, torchref = _torch()
    w, u = Worst(), eps_of(dtype)
    tol = _tol(dtype, u)
    for act in ("tanh", "relu", "sigmoid"):
        rng = ctx.rng("torch bn eval", act, dtype)
        model = torch_model(backend, dtype, "mse", act, True, dropout=0.0)
        _perturb_bn(model, rng)
        X = rng.standard_normal((31, 6)).astype(dtype)
        net, _ = torchref.build(model)
        net.eval()
        with torch.no_grad():
            ref = net(torch.from_numpy(X)).numpy()
        Sout = Magnitudes(_twin64(model), u).pass_(X, None, 0, training=False)["out"]
        w.add(model.predict_raw(X), ref, tol * Sout, f"{act} inference outputs")
    return w
