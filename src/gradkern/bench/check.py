"""Correct before fast: every implementation is checked against NumPy before it is timed.

Three checks, all on the exact configuration that is then timed:

1. Kernel by kernel (gradkern backends): one `train_step` on fresh buffers, then every
   step of it is recomputed in float64 from the backend's *own* inputs, read back from the
   workspace (activations, their gradients, the gradients, the updated parameters), and
   compared with the policy of gradkern.verify.tolerance (docs/design.md §3):
   |x - ref| <= 16·u·S + 4·u·|ref|, S = |A| @ |B| the natural
   error scale of the matmul (u: the dtype's machine epsilon). Using the backend's own
   inputs keeps the bound per kernel, with no compounding over depth and no ReLU kink
   flips between two correct summation orders.
2. End to end (every implementation, peers too): loss and gradients at the initial weights
   against the NumPy backend in float64. Gradients must agree in relative Frobenius norm
   per tensor within 5e-2 (float32; a ReLU that flips sign between two correct orders
   moves a gradient entry by a whole term) or 1e-8 (float64).
3. The epoch (every implementation): the timed unit itself, one epoch of the first
   shuffle from the initial weights, against the NumPy backend's epoch in float64: the K
   losses and every parameter after the epoch, within the whole-model bound of
   verify.tolerance (DRIVER_RTOL: max |x - ref| <= 2e-4 · max |ref| in float32, the
   parameters as one group).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import backends
from ..contract import Act, Layer
from ..plan import Buffers, Plan
from ..verify.tolerance import (
    DRIVER_RTOL,
    E2E_RTOL,
    K_BENCH,
    K_BENCH_REF,
    excess_inplace,
    group_scale,
    rel_frobenius,
)
from .workload import ADAM_EPS, ADAM_LR, LR, GradkernRunner, Runner, Workload


@dataclass
class CheckResult:
    ok: bool = True
    kernel_check: str = "not run"  # "passed", "failed", "not run", "skipped: <why>"
    worst_kernel: str = ""  # the kernel closest to (or beyond) its bound
    worst_kernel_ratio: float = 0.0  # max |x - ref| / bound over that kernel
    loss: float = float("nan")
    loss_ref: float = float("nan")
    grad_rel_err: float = 0.0  # worst relative Frobenius error of a gradient tensor
    grad_rtol: float = 0.0
    epoch_check: str = "not run"  # "passed", "failed", "not run"
    epoch_ratio: float = 0.0  # worst error / bound of the epoch's losses and parameters
    epoch_rtol: float = 0.0
    messages: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def reference_gradients(wl: Workload) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
    """Loss and gradients of the NumPy backend in float64 at the workload's initial weights."""
    plan64 = Plan(list(wl.plan.layers), wl.plan.loss, np.float64)
    bufs = Buffers(plan64, capacity=wl.batch)
    # tensor by tensor: 64-byte alignment pads float32 and float64 layouts differently
    for (W, b), (W0, b0) in zip(plan64.param_views(bufs.params),
                                wl.plan.param_views(wl.params0), strict=True):
        W[...], b[...] = W0, b0
    ref = backends.get("numpy")
    loss = ref.gradients(plan64, bufs, wl.x.astype(np.float64), wl.y)
    grads = [(dW.copy(), db.copy()) for dW, db in plan64.param_views(bufs.grads)]
    return loss, grads


def reference_epoch(wl: Workload) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """The K losses and the parameters after one epoch of the first shuffle, from the
    initial weights: the NumPy backend in float64."""
    plan64 = Plan(list(wl.plan.layers), wl.plan.loss, np.float64)
    bufs = Buffers(plan64, capacity=wl.batch)
    for (W, b), (W0, b0) in zip(plan64.param_views(bufs.params),
                                wl.plan.param_views(wl.params0), strict=True):
        W[...], b[...] = W0, b0
    opt = wl.make_optimizer()
    opt.bind(plan64.n_params, plan64.dtype)
    k = wl.n_batches
    losses, gnorms = np.zeros(k), np.zeros(k)
    Y = wl.Y.astype(np.float64) if wl.Y.dtype.kind == "f" else wl.Y
    done = backends.get("numpy").train_epoch(
        plan64, bufs, wl.X.astype(np.float64), Y, wl.perms[0], wl.batch, opt,
        np.zeros(k, dtype=np.uint64), 0.0, losses, gnorms)
    if done != k:
        raise FloatingPointError(f"the reference epoch stopped at step {done} of {k}")
    return losses, [(W.copy(), b.copy()) for W, b in plan64.param_views(bufs.params)]


def check_epoch(runner: Runner, wl: Workload, ref: tuple, res: CheckResult) -> CheckResult:
    """One epoch of the first shuffle (the runner at its initial weights): losses and the
    parameters after it against the float64 reference epoch."""
    loss_ref, params_ref = ref
    rtol = DRIVER_RTOL[np.dtype(wl.dtype)]
    res.epoch_rtol = rtol
    try:
        losses = np.asarray(runner.epoch(wl.perms[0]), dtype=np.float64)
        params = runner.params()
    except Exception as exc:  # a rejected step, a peer that broke: not timed
        res.ok, res.epoch_check = False, "failed"
        res.messages.append(f"epoch: {type(exc).__name__}: {exc}")
        return res
    worst, bad = 0.0, []
    groups = [("losses", [(losses, loss_ref)])]
    groups.append(("parameters", [(g, r) for pg, pr in zip(params, params_ref, strict=True)
                                  for g, r in zip(pg, pr, strict=True)]))
    for what, pairs in groups:
        if any(np.shape(g) != np.shape(r) for g, r in pairs) or len(pairs) == 0:
            bad.append(f"epoch {what}: shapes differ from the reference")
            continue
        bound = rtol * max(group_scale(r for _, r in pairs), 1e-30)
        err = max(float(np.abs(np.asarray(g, dtype=np.float64) - r).max(initial=0.0))
                  for g, r in pairs)
        err = err if np.isfinite(err) else np.inf
        worst = max(worst, err / bound)
        if not err <= bound:
            bad.append(f"epoch {what}: max error {err:.3g} > {rtol:g} × {bound / rtol:.3g}")
    res.epoch_ratio = worst
    if len(losses) != wl.n_batches or len(params) != len(params_ref):
        bad.append(f"epoch: {len(losses)} losses and {len(params)} layers, expected "
                   f"{wl.n_batches} and {len(params_ref)}")
    if bad:
        res.ok, res.epoch_check = False, "failed"
        res.messages += bad
    else:
        res.epoch_check = "passed"
    return res


def _scale32(a: np.ndarray) -> np.ndarray:
    # S needs one digit, not sixteen: |A| @ |B| has no cancellation, so float32 is plenty
    return np.abs(a).astype(np.float32, copy=False)


class _Bound:
    """Tracks the worst ratio |x - ref| / bound over the kernels checked."""

    def __init__(self, u: float):
        self.u = u
        self.worst = ("", 0.0)
        self.failed: list[str] = []

    def compare(self, what: str, x: np.ndarray, ref: np.ndarray, scale: np.ndarray) -> None:
        """Elementwise |x - ref| <= 16·u·scale + 4·u·|ref| (verify.tolerance); scale is
        overwritten: these run over every activation and weight of the largest networks."""
        e = excess_inplace(x, ref, scale, self.u, K_BENCH, K_BENCH_REF)
        if e.ratio > self.worst[1]:
            self.worst = (what, e.ratio)
        if e.n_bad or not e.finite:
            i = e.index
            self.failed.append(f"{what}: {e.n_bad} of {x.size} elements beyond "
                               f"{K_BENCH:g}·u·S (finite: {e.finite}), e.g. at {i}: "
                               f"{float(x[i])!r} vs {float(ref[i])!r}")


def check_kernels(runner: GradkernRunner) -> CheckResult:
    """One train_step on fresh buffers; each kernel recomputed from the backend's inputs."""
    wl, plan = runner.wl, runner.plan
    res = CheckResult()
    bufs = Buffers(plan, capacity=wl.batch)
    bufs.params[...] = wl.params0
    opt = wl.make_optimizer()
    opt.bind(plan.n_params, plan.dtype)
    loss, gnorm = runner.backend.train_step(plan, bufs, wl.x, wl.y, opt)
    res.loss = float(loss)
    if not np.any(bufs.acts):
        res.kernel_check = "skipped: the backend keeps its activations outside the Buffers"
        return res
    u = float(np.finfo(plan.dtype).eps)
    B = wl.batch
    chk = _Bound(u)
    params0 = wl.params0
    x = wl.x
    n_layers = len(plan.layers)

    # forward, layer by layer, from the backend's own input to each layer
    for i, L in enumerate(plan.layers):
        inp = x if i == 0 else bufs.out(i - 1, B)
        out = bufs.out(i, B)
        if L.kind == Layer.DENSE:
            W, b = plan.params_of(i, params0).values()
            ref = inp.astype(np.float64) @ W.astype(np.float64) + b
            S = (_scale32(inp) @ _scale32(W)).astype(np.float64) + np.abs(b)
            chk.compare(f"matmul_forward[{i}]", out, ref, S)
        elif L.kind == Layer.ACTIVATION and L.activation == Act.RELU:
            chk.compare(f"relu_forward[{i}]", out, np.maximum(inp, 0).astype(np.float64),
                        np.zeros(out.shape))
        else:
            res.kernel_check = f"skipped: layer {i} is not Dense or ReLU"
            return res

    # loss gradient of the backend's own predictions
    pred = bufs.out(n_layers - 1, B).astype(np.float64)
    if plan.loss == "mse":
        y64 = wl.y.astype(np.float64)
        c = 2.0 / pred.size
        chk.compare("mse_backward", bufs.dout(n_layers - 1, B), c * (pred - y64),
                    c * (np.abs(pred) + np.abs(y64)))
    else:
        z = pred - pred.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        onehot = np.zeros_like(p)
        onehot[np.arange(B), wl.y] = 1
        chk.compare("cross_entropy_backward", bufs.dout(n_layers - 1, B), (p - onehot) / B,
                    (p + onehot) / B)

    # backward, layer by layer, from the backend's own dout
    for i in range(n_layers - 1, -1, -1):
        L = plan.layers[i]
        dout = bufs.dout(i, B)
        inp = x if i == 0 else bufs.out(i - 1, B)
        if L.kind == Layer.DENSE:
            W = plan.params_of(i, params0)["W"]
            dW, db = bufs.grads_of(i).values()
            d64 = dout.astype(np.float64)
            chk.compare(f"matmul_backward.dweight[{i}]", dW, inp.astype(np.float64).T @ d64,
                        (_scale32(inp).T @ _scale32(dout)).astype(np.float64))
            chk.compare(f"matmul_backward.dbias[{i}]", db, d64.sum(axis=0),
                        np.abs(d64).sum(axis=0))
            if i > 0:
                chk.compare(f"matmul_backward.dinp[{i}]", bufs.dout(i - 1, B),
                            d64 @ W.astype(np.float64).T,
                            (_scale32(dout) @ _scale32(W).T).astype(np.float64))
        elif i > 0:  # ReLU: dinp = dout where the input was positive, else 0
            gate = inp > 0
            chk.compare(f"relu_backward[{i}]", bufs.dout(i - 1, B),
                        np.where(gate, dout, 0).astype(np.float64), np.zeros(dout.shape))

    # the update, tensor by tensor (bounded temporaries). SGD: params0 - lr·g. Adam's
    # first step from zero moments: m̂ = g, v̂ = g², so params0 - lr·g / (|g| + eps)
    adam = wl.optimizer == "adam"
    views = zip(plan.param_views(bufs.params), plan.param_views(bufs.grads),
                plan.param_views(params0), strict=True)
    for j, ((W, b), (dW, db), (W0, b0)) in enumerate(views):
        for name, P, G, P0 in (("W", W, dW, W0), ("b", b, db, b0)):
            g64 = G.astype(np.float64)
            if adam:
                step = ADAM_LR * g64 / (np.abs(g64) + ADAM_EPS)
                scale = np.abs(P0) + ADAM_LR
                chk.compare(f"adam_update.{name}[{j}]", P, P0.astype(np.float64) - step, scale)
            else:
                scale = np.abs(g64) * LR + np.abs(P0)
                chk.compare(f"sgd_update.{name}[{j}]", P, P0.astype(np.float64) - LR * g64,
                            scale)
    norm = np.sqrt(sum(float(np.dot(G.ravel().astype(np.float64), G.ravel().astype(np.float64)))
                       for pair in plan.param_views(bufs.grads) for G in pair))
    if not np.isfinite(gnorm) or abs(gnorm - norm) > 1e-3 * norm:
        chk.failed.append(f"gradient norm {gnorm!r} is not the norm of the gradients ({norm!r})")

    res.worst_kernel, res.worst_kernel_ratio = chk.worst
    if chk.failed:
        res.ok = False
        res.kernel_check = "failed"
        res.messages += chk.failed
    else:
        res.kernel_check = "passed"
    return res


def check_end_to_end(runner: Runner, wl: Workload, ref: tuple, res: CheckResult) -> CheckResult:
    """Loss and gradients at the initial weights against the float64 NumPy reference."""
    loss_ref, grads_ref = ref
    loss, grads = runner.gradients()
    rtol = E2E_RTOL[np.dtype(wl.dtype)]
    res.loss, res.loss_ref, res.grad_rtol = float(loss), float(loss_ref), rtol
    if not abs(loss - loss_ref) <= rtol * max(1.0, abs(loss_ref)):
        res.ok = False
        res.messages.append(f"loss {loss!r} differs from the reference {loss_ref!r}")
    worst = 0.0
    for i, ((dW, db), (rW, rb)) in enumerate(zip(grads, grads_ref, strict=True)):
        for name, g, r in (("dW", dW, rW), ("db", db, rb)):
            if g.shape != r.shape:
                res.ok = False
                res.messages.append(f"{name}[{i}] has shape {g.shape}, expected {r.shape}")
                continue
            rel = rel_frobenius(g, r)
            worst = max(worst, rel)
            if rel > rtol:
                res.ok = False
                res.messages.append(f"{name} of dense layer {i}: relative error {rel:.3g} "
                                    f"> {rtol:g}")
    res.grad_rel_err = worst
    return res


def check_runner(runner: Runner, wl: Workload, ref: tuple | None = None,
                 kernels: bool = True, ref_epoch: tuple | None = None,
                 epoch: bool = True) -> CheckResult:
    """Every check for a runner that has not stepped yet (its weights are the initial
    ones); the epoch check last, since it trains."""
    ref = reference_gradients(wl) if ref is None else ref
    res = CheckResult()
    if kernels and isinstance(runner, GradkernRunner):
        res = check_kernels(runner)
    res = check_end_to_end(runner, wl, ref, res)
    if epoch:
        res = check_epoch(runner, wl, reference_epoch(wl) if ref_epoch is None else ref_epoch,
                          res)
    return res
