"""PyTorch as referee: same model, same weights; loss, every gradient, ten optimizer steps,
batch normalization in training and inference mode. Skipped when torch is not installed."""

from __future__ import annotations

import numpy as np
import pytest

import gradkern as gk
from gradkern import torchref
from gradkern.contract import Layer
from gradkern.verify.tolerance import TORCH_TEST_RTOL, assert_group_close, group_scale
from gradkern.verify.torch_ref import torch_data, torch_model

torch = pytest.importorskip("torch", reason="PyTorch is not installed: its cross-checks skip")

# relative to the tensor group's scale (verify.tolerance): float64 1e-7, float32 2e-4
TOL = {str(k): v for k, v in TORCH_TEST_RTOL.items()}


def _compare(ours: dict, theirs: dict, dtype: str, what: str):
    scale = max(group_scale(theirs.values()), 1e-12)
    for k, v in theirs.items():
        assert_group_close(ours[k], v, TOL[dtype], scale, f"{what} {k}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss", gk.LOSSES)
@pytest.mark.parametrize("act", gk.ACTIVATIONS)
def test_loss_and_gradients_match_torch(backend, dtype, loss, act):
    rng = np.random.default_rng(0)
    model = torch_model(backend, dtype, loss, act=act, dropout=0.2)
    X, y = torch_data(loss, rng)
    seed = model._peek_seed()  # the dropout masks gradients() will draw
    loss_ours, grads = model.named_gradients(X, y)
    net, loss_fn = torchref.build(model, seed=seed)
    net.train()
    out = net(torch.from_numpy(X.astype(dtype)))
    loss_t = loss_fn(out, torchref.targets(model, y))
    loss_t.backward()
    assert loss_ours == pytest.approx(loss_t.item(), rel=TOL[dtype] * 10)
    _compare(grads, torchref.named_grads(net), dtype, "grad")


OPTIMIZERS = [
    ("sgd_momentum", lambda: gk.optim.SGD(lr=0.05, momentum=0.9, weight_decay=1e-2)),
    ("sgd_nesterov", lambda: gk.optim.SGD(lr=0.05, momentum=0.9, nesterov=True,
                                          weight_decay=1e-3)),
    ("sgd_dampening", lambda: gk.optim.SGD(lr=0.1, momentum=0.5, dampening=0.3)),
    ("adam", lambda: gk.optim.Adam(lr=1e-2, weight_decay=1e-2)),
    ("adamw", lambda: gk.optim.AdamW(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1)),
]


@pytest.mark.parametrize("bn", [False, True], ids=["plain", "batchnorm"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,make", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_ten_optimizer_steps_match_torch(backend, dtype, name, make, bn):
    """Ten steps: weights, running statistics, then inference-mode outputs.

    The bias of a Dense layer that feeds a BatchNorm has a gradient that is zero up to
    rounding; Adam divides that noise by its own root mean square and takes full steps,
    so under Adam those biases, and the running means they shift, follow the noise of
    each implementation. They are left out there; SGD keeps them comparable.
    """
    rng = np.random.default_rng(1)
    model = torch_model(backend, dtype, bn=bn)
    net, loss_fn = torchref.build(model)
    opt = make()
    topt = torchref.torch_optimizer(opt, net.parameters())
    for _ in range(10):
        X, y = torch_data("cross_entropy", rng)
        model.train_step(X, y, opt)
        net.train()
        topt.zero_grad()
        loss_fn(net(torch.from_numpy(X.astype(dtype))), torchref.targets(model, y)).backward()
        topt.step()
    theirs = torchref.named_state(net)
    noisy = bn and isinstance(opt, gk.optim.Adam)
    if noisy:
        layers = model.plan.layers
        for i in range(len(layers) - 1):  # the Dense layers feeding a BatchNorm
            if layers[i].kind == Layer.DENSE and layers[i + 1].kind == Layer.BATCHNORM:
                del theirs[f"{i}.bias"], theirs[f"{i + 1}.running_mean"]
    _compare(model.named_parameters(), theirs, dtype, f"{name} state")
    if noisy:
        return
    X, _ = torch_data("cross_entropy", rng)
    net.eval()
    with torch.no_grad():
        ref = net(torch.from_numpy(X.astype(dtype))).numpy()
    assert_group_close(model.predict_raw(X), ref, TOL[dtype] * 10, float(np.abs(ref).max()),
                       f"{name} inference outputs")
