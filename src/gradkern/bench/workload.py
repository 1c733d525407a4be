"""The benchmarked network and the implementations that train it, one step at a time.

Depth d means d hidden layers of width w, each Dense + ReLU, then a Dense head:

    x (B, w) -> [Dense(w->w), relu] × d -> Dense(w->10) -> softmax cross-entropy

so a depth-d network has d+1 dense layers. The input has w features, so every hidden
matmul is (B, w) @ (w, w). One step is forward, loss, backward and an SGD update
(lr 0.01, no momentum), on data allocated once before timing.

Implementations (a `Runner` each, same initial weights, data and step):
    gradkern backends  -- Backend.train_step on a Plan and preallocated Buffers
    numpy-plain        -- the training loop a NumPy user writes by hand (the baseline)
    torch              -- torch.nn.Sequential + CrossEntropyLoss + torch.optim.SGD, eager
"""

from __future__ import annotations

import numpy as np

from .. import backends
from ..contract import Layer
from ..optim import SGD
from ..plan import Buffers, LayerSpec, Plan, activation_code

N_OUT = 10
LR = 0.01
PLAIN = "numpy-plain"
TORCH = "torch"
PEERS = (PLAIN, TORCH)


def build_plan(depth: int, width: int, dtype: str = "float32", n_in: int | None = None,
               n_out: int = N_OUT) -> Plan:
    """depth hidden layers of `width` units (Dense + ReLU each), then Dense(width -> n_out)."""
    if depth < 1:
        raise ValueError(f"depth is the number of hidden layers and must be >= 1, got {depth}")
    n_in = width if n_in is None else n_in
    relu = activation_code("relu")
    def hidden(n: int) -> list[LayerSpec]:
        return [LayerSpec(Layer.DENSE, n, width), LayerSpec(Layer.ACTIVATION, width, width, relu)]

    layers = hidden(n_in)
    for _ in range(depth - 1):
        layers += hidden(width)
    layers.append(LayerSpec(Layer.DENSE, width, n_out))
    return Plan(layers, loss="cross_entropy", dtype=dtype)


class Workload:
    """One cell of the grid: the plan, its initial parameters and one batch of data."""

    def __init__(self, depth: int, width: int, batch: int, dtype: str = "float32",
                 seed: int = 0):
        self.depth, self.width, self.batch = depth, width, batch
        self.plan = build_plan(depth, width, dtype)
        self.dtype = self.plan.dtype
        rng = np.random.default_rng([seed, depth, width, batch])
        # He normal weights, zero biases, written through the plan's views of one flat array
        self.params0 = np.zeros(self.plan.n_params, dtype=self.dtype)
        for W, b in self.plan.param_views(self.params0):
            W[...] = rng.standard_normal(W.shape) * np.sqrt(2.0 / W.shape[0])
            b[...] = 0
        self.x = rng.standard_normal((batch, self.plan.n_in)).astype(self.dtype)
        self.y = rng.integers(0, self.plan.n_out, size=batch).astype(np.int64)
        self.flops = self.plan.flops_per_step(batch)

    def weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Copies of the initial (W (in, out), b (out,)) of each dense layer."""
        return [(W.copy(), b.copy()) for W, b in self.plan.param_views(self.params0)]

    def key(self) -> dict:
        return {"depth": self.depth, "width": self.width, "batch": self.batch,
                "dtype": str(self.dtype)}


class Runner:
    """One implementation, set up on one workload. `step()` is what gets timed."""

    name = "?"
    kind = "?"  # "gradkern" or "peer"

    def step(self) -> float:
        raise NotImplementedError

    def gradients(self) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
        """Loss and [(dW, db), ...] at the current weights, without updating them."""
        raise NotImplementedError

    def nbytes(self) -> int:
        return 0


class GradkernRunner(Runner):
    """A registered backend: Backend.train_step on preallocated Buffers."""

    kind = "gradkern"

    def __init__(self, name: str, wl: Workload):
        self.name = name
        self.backend = backends.get(name)
        self.wl = wl
        self.plan = wl.plan
        self.bufs = Buffers(wl.plan, capacity=wl.batch)
        self.bufs.params[...] = wl.params0
        self.opt = SGD(lr=LR)
        self.opt.bind(wl.plan.n_params, wl.plan.dtype)

    def step(self) -> float:
        loss, _ = self.backend.train_step(self.plan, self.bufs, self.wl.x, self.wl.y, self.opt)
        return loss

    def gradients(self):
        loss = self.backend.gradients(self.plan, self.bufs, self.wl.x, self.wl.y)
        grads = [(dW.copy(), db.copy()) for dW, db in self.plan.param_views(self.bufs.grads)]
        return loss, grads

    def nbytes(self) -> int:
        opt = sum(a.nbytes for a in (self.opt.buf1, self.opt.buf2) if a is not None)
        return self.bufs.nbytes() + opt


# ---- the plain NumPy baseline: what a user writes without a framework -------------------

def plain_forward_backward(Ws, bs, X, y):
    """Loss and gradients of the MLP, the textbook way (allocating as it goes)."""
    B = X.shape[0]
    hs = [X]  # inputs of each dense layer
    h = X
    for W, b in zip(Ws[:-1], bs[:-1], strict=True):
        h = np.maximum(h @ W + b, 0)
        hs.append(h)
    logits = h @ Ws[-1] + bs[-1]
    # softmax cross-entropy, shifted by the row max against overflow
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(B), y]).mean()
    d = p
    d[np.arange(B), y] -= 1
    d /= B
    grads = [None] * len(Ws)
    for i in range(len(Ws) - 1, -1, -1):
        dW = hs[i].T @ d
        db = d.sum(axis=0)
        grads[i] = (dW, db)
        if i > 0:
            d = (d @ Ws[i].T) * (hs[i] > 0)  # ReLU gate: h > 0 exactly where its input was
    return float(loss), grads


class PlainNumpyRunner(Runner):
    name = PLAIN
    kind = "peer"

    def __init__(self, wl: Workload):
        self.wl = wl
        ws = wl.weights()
        self.Ws = [W for W, _ in ws]
        self.bs = [b for _, b in ws]

    def step(self) -> float:
        loss, grads = plain_forward_backward(self.Ws, self.bs, self.wl.x, self.wl.y)
        for W, b, (dW, db) in zip(self.Ws, self.bs, grads, strict=True):
            W -= LR * dW
            b -= LR * db
        return loss

    def gradients(self):
        return plain_forward_backward(self.Ws, self.bs, self.wl.x, self.wl.y)


# ---- PyTorch CPU, eager, as its tutorials write it ---------------------------------------

def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    return True


class TorchRunner(Runner):
    name = TORCH
    kind = "peer"

    def __init__(self, wl: Workload):
        import torch

        self.torch = torch
        tdtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}
        dt = tdtype[wl.dtype]
        mods = []
        ws = wl.weights()
        for i, (W, b) in enumerate(ws):
            lin = torch.nn.Linear(W.shape[0], W.shape[1], dtype=dt)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
                lin.bias.copy_(torch.from_numpy(b))
            mods.append(lin)
            if i < len(ws) - 1:
                mods.append(torch.nn.ReLU())
        self.model = torch.nn.Sequential(*mods)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.x = torch.from_numpy(wl.x)
        self.y = torch.from_numpy(wl.y)

    def step(self) -> float:
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss.item()

    def gradients(self):
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(self.x), self.y)
        loss.backward()
        lins = [m for m in self.model if isinstance(m, self.torch.nn.Linear)]
        grads = [(m.weight.grad.numpy().T.copy(), m.bias.grad.numpy().copy()) for m in lins]
        self.opt.zero_grad()
        return loss.item(), grads

    def nbytes(self) -> int:
        return sum(2 * p.numel() * p.element_size() for p in self.model.parameters())


def make_runner(name: str, wl: Workload) -> Runner:
    if name == PLAIN:
        return PlainNumpyRunner(wl)
    if name == TORCH:
        return TorchRunner(wl)
    return GradkernRunner(name, wl)
