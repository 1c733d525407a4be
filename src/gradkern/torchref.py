"""PyTorch as an outside referee: the same model in torch.nn, with the same weights.

Used by the tests and by `gradkern check` when torch is importable; gradkern itself
never needs torch. Dropout masks are the ones gradkern draws (its counter hash), applied
as fixed masks, so that a training step is comparable.
"""

from __future__ import annotations

import numpy as np

from .backends.base import layer_seed
from .backends.numpy_backend import dropout_uniform
from .contract import LEAKY_SLOPE, Act, Layer


def available() -> tuple[bool, str]:
    try:
        import torch  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return False, f"PyTorch not importable ({type(exc).__name__}: {exc})"
    return True, "available"


def build(model, seed: int = 0):
    """(torch.nn.Sequential with the model's weights, loss function) in the model's dtype.

    `seed` is the dropout step seed whose masks the torch model applies in training mode.
    """
    import torch
    from torch import nn

    class FixedMask(nn.Module):
        """Inverted dropout with gradkern's mask for a given batch size."""

        def __init__(self, p: float, layer: int):
            super().__init__()
            self.p, self.layer = p, layer

        def forward(self, x):
            if not self.training or self.p == 0:
                return x
            u = dropout_uniform(layer_seed(seed, self.layer), x.numel()).reshape(tuple(x.shape))
            mask = torch.from_numpy((u >= self.p) / (1.0 - self.p)).to(x.dtype)
            return x * mask

    tdtype = torch.float64 if model.dtype == np.float64 else torch.float32
    acts = {Act.IDENTITY: nn.Identity, Act.RELU: nn.ReLU, Act.SIGMOID: nn.Sigmoid,
            Act.TANH: nn.Tanh, Act.GELU: lambda: nn.GELU(approximate="none"),
            Act.LEAKY_RELU: lambda: nn.LeakyReLU(LEAKY_SLOPE), Act.SILU: nn.SiLU}
    params = model.named_parameters()
    mods = []
    for i, L in enumerate(model.plan.layers):
        if L.kind == Layer.DENSE:
            m = nn.Linear(L.n_in, L.n_out, dtype=tdtype)
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(params[f"{i}.weight"].T.copy()))
                m.bias.copy_(torch.from_numpy(params[f"{i}.bias"].copy()))
        elif L.kind == Layer.ACTIVATION:
            m = acts[Act(L.activation)]()
        elif L.kind == Layer.BATCHNORM:
            m = nn.BatchNorm1d(L.n_out, eps=L.eps, momentum=L.momentum, dtype=tdtype)
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(params[f"{i}.weight"].copy()))
                m.bias.copy_(torch.from_numpy(params[f"{i}.bias"].copy()))
                m.running_mean.copy_(torch.from_numpy(params[f"{i}.running_mean"].copy()))
                m.running_var.copy_(torch.from_numpy(params[f"{i}.running_var"].copy()))
        elif L.kind == Layer.DROPOUT:
            m = FixedMask(L.p, i)
        mods.append(m)
    net = nn.Sequential(*mods).to(tdtype)
    loss_fn = {"mse": nn.MSELoss(), "cross_entropy": nn.CrossEntropyLoss(),
               "binary_cross_entropy": nn.BCEWithLogitsLoss(), "l1": nn.L1Loss(),
               "huber": nn.HuberLoss(delta=model.huber_delta)}[model.loss]
    return net, loss_fn


def torch_optimizer(opt, parameters):
    """The torch.optim twin of a gradkern optimizer."""
    import torch

    cfg = opt.config()
    name = cfg.pop("name")
    return getattr(torch.optim, name)(parameters, **cfg)


def named_state(net) -> dict[str, np.ndarray]:
    """torch parameters and buffers under gradkern's names (W as (in, out))."""
    out = {}
    for k, v in net.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            a = v.detach().cpu().numpy()
            out[k] = a.T.copy() if a.ndim == 2 else a.copy()
    return out


def named_grads(net) -> dict[str, np.ndarray]:
    out = {}
    for k, p in net.named_parameters():
        g = p.grad.detach().cpu().numpy()
        out[k] = g.T.copy() if g.ndim == 2 else g.copy()
    return out


def targets(model, y: np.ndarray):
    import torch

    if model.loss == "cross_entropy":
        return torch.from_numpy(np.asarray(y, dtype=np.int64))
    yy = np.asarray(y, dtype=model.dtype)
    return torch.from_numpy(yy.reshape(yy.shape[0], -1))
