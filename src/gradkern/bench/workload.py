"""The benchmarked networks and the implementations that train them, an epoch at a time.

The grid: depth d means d hidden layers of width w, each Dense + ReLU, then a Dense head:

    x (B, w) -> [Dense(w->w), relu] × d -> Dense(w->10) -> MSE against float targets

so a depth-d network has d+1 dense layers and every hidden matmul is (B, w) @ (w, w).
Training is plain SGD (lr 0.01). The MNIST-shaped workload is its own row:
784-512-256-10, ReLU, softmax cross-entropy, Adam (lr 1e-3), B = 128.

Every implementation gets the same data: N = K·B rows, and a few permutations of them
drawn once; the timed unit is one epoch of the K shuffled minibatches (the next
permutation each time), and µs per step is the epoch's time over K. Same initial weights
everywhere.

Implementations (a `Runner` each):
    gradkern backends  -- Backend.train_epoch on a Plan and preallocated Buffers (the C and
                          Numba backends run the whole epoch in one compiled call)
    numpy-plain        -- the training loop a NumPy user writes by hand (the baseline)
    torch              -- torch.nn.Sequential + MSELoss/CrossEntropyLoss + torch.optim, eager
    jax                -- the whole epoch jitted: jax.lax.scan over the minibatches, optax
"""

from __future__ import annotations

import os

import numpy as np

from .. import backends
from ..contract import Layer
from ..optim import SGD, Adam
from ..plan import Buffers, LayerSpec, Plan, activation_code

N_OUT = 10
LR = 0.01  # SGD on the grid
ADAM_LR = 1e-3  # Adam on the MNIST-shaped workload; betas (0.9, 0.999), eps 1e-8 everywhere
BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
EPOCH_BATCHES = 8  # K: minibatches per timed epoch
N_PERMS = 3  # distinct shuffles, cycled
PLAIN = "numpy-plain"
TORCH = "torch"
JAX = "jax"
PEERS = (PLAIN, TORCH, JAX)
GRID = "grid"
MNIST = "mnist"
MNIST_SIZES = (784, 512, 256, 10)
MNIST_BATCH = 128


def grid_sizes(depth: int, width: int, n_out: int = N_OUT) -> list[int]:
    if depth < 1:
        raise ValueError(f"depth is the number of hidden layers and must be >= 1, got {depth}")
    return [width] * (depth + 1) + [n_out]


def build_plan(depth: int, width: int, dtype: str = "float32", n_in: int | None = None,
               n_out: int = N_OUT, loss: str = "mse") -> Plan:
    """depth hidden layers of `width` units (Dense + ReLU each), then Dense(width -> n_out)."""
    sizes = grid_sizes(depth, width, n_out)
    if n_in is not None:
        sizes[0] = n_in
    return sizes_plan(sizes, loss, dtype)


def sizes_plan(sizes, loss: str, dtype: str = "float32") -> Plan:
    """Dense(n_i -> n_i+1) + ReLU for every layer but the last, which is Dense alone."""
    relu = activation_code("relu")
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(LayerSpec(Layer.DENSE, a, b))
        if i < len(sizes) - 2:
            layers.append(LayerSpec(Layer.ACTIVATION, b, b, relu))
    return Plan(layers, loss=loss, dtype=dtype)


class Workload:
    """One cell: the plan, its initial parameters, the data, its shuffles, the optimizer.

    `workload` names the row: GRID (depth × width, MSE, SGD) or MNIST (784-512-256-10,
    cross-entropy, Adam); `sizes` overrides the layer sizes (the tests use a tiny MNIST)."""

    def __init__(self, depth: int, width: int, batch: int, dtype: str = "float32",
                 seed: int = 0, *, workload: str = GRID, sizes=None,
                 n_batches: int = EPOCH_BATCHES):
        if workload not in (GRID, MNIST):
            raise ValueError(f"unknown workload {workload!r}; expected {GRID!r} or {MNIST!r}")
        if n_batches < 1:
            raise ValueError(f"an epoch needs at least one minibatch, got {n_batches}")
        self.workload = workload
        if workload == MNIST:
            self.sizes = list(sizes or MNIST_SIZES)
            self.loss, self.optimizer = "cross_entropy", "adam"
            depth, width = len(self.sizes) - 2, self.sizes[1]
        else:
            self.sizes = list(sizes or grid_sizes(depth, width))
            self.loss, self.optimizer = "mse", "sgd"
        self.depth, self.width, self.batch = depth, width, batch
        self.n_batches = n_batches
        self.plan = sizes_plan(self.sizes, self.loss, dtype)
        self.dtype = self.plan.dtype
        rng = np.random.default_rng([seed, depth, width, batch, workload == MNIST])
        # He normal weights, zero biases, written through the plan's views of one flat array
        self.params0 = np.zeros(self.plan.n_params, dtype=self.dtype)
        for W, b in self.plan.param_views(self.params0):
            W[...] = rng.standard_normal(W.shape) * np.sqrt(2.0 / W.shape[0])
            b[...] = 0
        n = batch * n_batches
        self.X = rng.standard_normal((n, self.plan.n_in)).astype(self.dtype)
        if self.loss == "mse":
            self.Y = rng.standard_normal((n, self.plan.n_out)).astype(self.dtype)
        else:
            self.Y = rng.integers(0, self.plan.n_out, size=n).astype(np.int64)
        self.perms = [rng.permutation(n).astype(np.int64) for _ in range(N_PERMS)]
        # the first minibatch of the first epoch: what the gradient checks look at
        idx = self.perms[0][:batch]
        self.x, self.y = self.X[idx], self.Y[idx]
        self.flops = self.plan.flops_per_step(batch)
        self.bytes_min = min_bytes(self.sizes, batch, self.dtype.itemsize,
                                   adam=self.optimizer == "adam")

    def make_optimizer(self):
        if self.optimizer == "adam":
            return Adam(lr=ADAM_LR, betas=BETAS, eps=ADAM_EPS)
        return SGD(lr=LR)

    def weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Copies of the initial (W (in, out), b (out,)) of each dense layer."""
        return [(W.copy(), b.copy()) for W, b in self.plan.param_views(self.params0)]

    def describe(self) -> str:
        sizes = "-".join(map(str, self.sizes))
        opt = f"Adam(lr={ADAM_LR:g})" if self.optimizer == "adam" else f"SGD(lr={LR:g})"
        return f"{sizes}, ReLU, {self.loss}, {opt}, batch {self.batch}"

    def key(self) -> dict:
        return {"workload": self.workload, "depth": self.depth, "width": self.width,
                "batch": self.batch, "dtype": str(self.dtype)}


def min_bytes(sizes, batch: int, itemsize: int, adam: bool = False) -> int:
    """The fewest bytes one training step must move between the cores and memory, when
    nothing stays in cache between its passes (docs/performance.md, "Roofline"):

        s · [ (5 + 4·adam)·P + Σ_{i≥1} n_i·n_{i+1} + B·(2·n_0 + 4·Σ_{0<i<L} n_i + 5·n_L) ]

    P = Σ n_i·n_{i+1} + n_{i+1} the parameters: read by the forward product, written as
    gradients, read (parameters and gradients) and written by the update (5P; Adam also
    reads and writes its two moments, 4P more); the weights of every layer but the first
    are read again by the backward product that forms the input gradient. Activations:
    the input is read by the forward and by the first weight gradient (2·n_0 per row); a
    hidden activation is written by the forward, read by its weight gradient, and its
    gradient is written and read (4·n_i); the output is written, read with the targets by
    the loss, its gradient written and read (5·n_L)."""
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    P = sum(a * b + b for a, b in pairs)
    w_in = sum(a * b for a, b in pairs[1:])
    acts = 2 * sizes[0] + 4 * sum(sizes[1:-1]) + 5 * sizes[-1]
    return int(itemsize * ((5 + 4 * adam) * P + w_in + batch * acts))


class Runner:
    """One implementation, set up on one workload. `run()` (one epoch of K minibatches,
    the next shuffle) is what gets timed; `steps_per_run` converts to µs per step."""

    name = "?"
    kind = "?"  # "gradkern" or "peer"

    def __init__(self, wl: Workload):
        self.wl = wl
        self.steps_per_run = wl.n_batches
        self._next = 0

    def run(self) -> None:
        perm = self.wl.perms[self._next % len(self.wl.perms)]
        self._next += 1
        self.epoch(perm)

    def epoch(self, perm: np.ndarray) -> np.ndarray:
        """One epoch over the minibatches X[perm[k·B:(k+1)·B]]; the K losses."""
        raise NotImplementedError

    def params(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The current [(W (in, out), b), ...] as NumPy arrays."""
        raise NotImplementedError

    def gradients(self) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
        """Loss and [(dW, db), ...] on wl.x, wl.y at the current weights, no update."""
        raise NotImplementedError

    def nbytes(self) -> int:
        return 0


class GradkernRunner(Runner):
    """A registered backend: Backend.train_epoch on preallocated Buffers."""

    kind = "gradkern"

    def __init__(self, name: str, wl: Workload):
        super().__init__(wl)
        self.name = name
        self.backend = backends.get(name)
        self.plan = wl.plan
        self.bufs = Buffers(wl.plan, capacity=wl.batch)
        self.bufs.params[...] = wl.params0
        self.opt = wl.make_optimizer()
        self.opt.bind(wl.plan.n_params, wl.plan.dtype)
        k = wl.n_batches
        self.seeds = np.zeros(k, dtype=np.uint64)
        self.losses = np.zeros(k, dtype=np.float64)
        self.gnorms = np.zeros(k, dtype=np.float64)

    def epoch(self, perm):
        wl = self.wl
        done = self.backend.train_epoch(self.plan, self.bufs, wl.X, wl.Y, perm, wl.batch,
                                        self.opt, self.seeds, 0.0, self.losses, self.gnorms)
        if done != wl.n_batches:
            raise FloatingPointError(f"{self.name}: step {done} of the epoch was rejected "
                                     "(loss or gradient norm not finite)")
        return self.losses.copy()

    def params(self):
        return [(W.copy(), b.copy()) for W, b in self.plan.param_views(self.bufs.params)]

    def gradients(self):
        loss = self.backend.gradients(self.plan, self.bufs, self.wl.x, self.wl.y)
        grads = [(dW.copy(), db.copy()) for dW, db in self.plan.param_views(self.bufs.grads)]
        return loss, grads

    def nbytes(self) -> int:
        opt = sum(a.nbytes for a in (getattr(self.opt, f"buf{i}", None) for i in (1, 2, 3))
                  if a is not None)
        return self.bufs.nbytes() + opt


# ---- the plain NumPy baseline: what a user writes without a framework -------------------

def plain_forward_backward(Ws, bs, X, y, loss: str = "mse"):
    """Loss and gradients of the MLP, the textbook way (allocating as it goes)."""
    B = X.shape[0]
    hs = [X]  # inputs of each dense layer
    h = X
    for W, b in zip(Ws[:-1], bs[:-1], strict=True):
        h = np.maximum(h @ W + b, 0)
        hs.append(h)
    out = h @ Ws[-1] + bs[-1]
    if loss == "mse":
        diff = out - y
        value = float(np.mean(diff * diff))
        d = diff * (2.0 / diff.size)
    else:  # softmax cross-entropy, shifted by the row max against overflow
        logits = out - out.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        value = float(-np.log(p[np.arange(B), y]).mean())
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
    return value, grads


class PlainNumpyRunner(Runner):
    name = PLAIN
    kind = "peer"

    def __init__(self, wl: Workload):
        super().__init__(wl)
        ws = wl.weights()
        self.Ws = [W for W, _ in ws]
        self.bs = [b for _, b in ws]
        self.adam = wl.optimizer == "adam"
        if self.adam:
            self.t = 0
            self.m = [np.zeros_like(p) for p in self.Ws + self.bs]
            self.v = [np.zeros_like(p) for p in self.Ws + self.bs]

    def _update(self, grads):
        ps = self.Ws + self.bs
        gs = [dW for dW, _ in grads] + [db for _, db in grads]
        if not self.adam:
            for p, g in zip(ps, gs, strict=True):
                p -= LR * g
            return
        self.t += 1
        b1, b2 = BETAS
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, g, m, v in zip(ps, gs, self.m, self.v, strict=True):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= ADAM_LR * (m / c1) / (np.sqrt(v / c2) + ADAM_EPS)

    def epoch(self, perm):
        wl = self.wl
        B = wl.batch
        losses = np.empty(wl.n_batches)
        for k in range(wl.n_batches):
            idx = perm[k * B:(k + 1) * B]
            losses[k], grads = plain_forward_backward(self.Ws, self.bs, wl.X[idx], wl.Y[idx],
                                                      wl.loss)
            self._update(grads)
        return losses

    def params(self):
        return [(W.copy(), b.copy()) for W, b in zip(self.Ws, self.bs, strict=True)]

    def gradients(self):
        return plain_forward_backward(self.Ws, self.bs, self.wl.x, self.wl.y, self.wl.loss)


# ---- PyTorch CPU, eager, as its tutorials write it ---------------------------------------

def torch_available() -> bool:
    return peer_missing(TORCH) is None


class TorchRunner(Runner):
    name = TORCH
    kind = "peer"

    def __init__(self, wl: Workload):
        super().__init__(wl)
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
        self.loss_fn = torch.nn.MSELoss() if wl.loss == "mse" else torch.nn.CrossEntropyLoss()
        if wl.optimizer == "adam":
            self.opt = torch.optim.Adam(self.model.parameters(), lr=ADAM_LR, betas=BETAS,
                                        eps=ADAM_EPS)
        else:
            self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.X = torch.from_numpy(wl.X)
        self.Y = torch.from_numpy(wl.Y)
        self.x = torch.from_numpy(wl.x)
        self.y = torch.from_numpy(wl.y)
        self._perms = {}  # id of a permutation -> its minibatch index tensors

    def _batches(self, perm):
        got = self._perms.get(id(perm))
        if got is None or got[0] is not perm:
            B = self.wl.batch
            idx = [self.torch.from_numpy(np.ascontiguousarray(perm[k * B:(k + 1) * B]))
                   for k in range(self.wl.n_batches)]
            got = self._perms[id(perm)] = (perm, idx)
        return got[1]

    def epoch(self, perm):
        losses = []
        for idx in self._batches(perm):
            self.opt.zero_grad()
            loss = self.loss_fn(self.model(self.X[idx]), self.Y[idx])
            loss.backward()
            self.opt.step()
            losses.append(loss.detach())
        return self.torch.stack(losses).numpy().astype(np.float64)

    def params(self):
        lins = [m for m in self.model if isinstance(m, self.torch.nn.Linear)]
        return [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy())
                for m in lins]

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


# ---- JAX: the whole epoch jitted, lax.scan over the minibatches --------------------------

_JAX_THREADS: dict = {}  # what XLA's CPU thread pool was sized to, once per process


def peer_missing(name: str) -> str | None:
    """Why a peer cannot run here, or None when it can."""
    mods = {TORCH: ("torch",), JAX: ("jax", "optax")}.get(name, ())
    for mod in mods:
        try:
            __import__(mod)
        except Exception as exc:
            return (f"{mod} is not importable here ({type(exc).__name__}: {exc}); "
                    "install the optional peers: pip install 'gradkern[peers]'")
    return None


def init_jax(threads: int, dtype: str = "float32") -> dict:
    """Import JAX and start its CPU backend with a pool of `threads` threads, once.

    XLA's CPU client sizes its intra-op thread pool from the CPU affinity of the process
    when the backend starts; this jaxlib ignores XLA_FLAGS' intra_op_parallelism_threads.
    So the affinity is narrowed to `threads` cores while the backend starts, then put back
    (threads started meanwhile keep the narrow mask). Returns what was used."""
    if _JAX_THREADS:
        return dict(_JAX_THREADS)
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    narrow = 0 < threads < len(allowed)
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        flags = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
        os.environ["XLA_FLAGS"] = flags
    if narrow:
        os.sched_setaffinity(0, allowed[:threads])
    try:
        import jax

        if np.dtype(dtype) == np.float64:
            jax.config.update("jax_enable_x64", True)
        devices = jax.devices("cpu")
    finally:
        if narrow:
            os.sched_setaffinity(0, allowed)
    how = (f"CPU affinity narrowed to {threads} of {len(allowed)} cores while XLA's CPU "
           "backend started" if narrow else f"all {len(allowed) or threads} cores")
    _JAX_THREADS.update({"threads": threads, "how": how, "XLA_FLAGS": flags,
                         "jax": jax.__version__, "devices": [str(d) for d in devices],
                         "x64": bool(jax.config.jax_enable_x64)})
    return dict(_JAX_THREADS)


def jax_threads() -> int | None:
    """The thread count JAX was started with in this process (None: not started)."""
    return _JAX_THREADS.get("threads")


def _jax_functions(loss_kind: str, optimizer: str):
    import jax
    import jax.numpy as jnp
    import optax

    def forward(params, x):
        h = x
        for W, b in params[:-1]:
            h = jax.nn.relu(h @ W + b)
        W, b = params[-1]
        return h @ W + b

    def loss_fn(params, x, y):
        out = forward(params, x)
        if loss_kind == "mse":
            return jnp.mean((out - y) ** 2)
        logp = jax.nn.log_softmax(out, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    if optimizer == "adam":
        tx = optax.adam(ADAM_LR, b1=BETAS[0], b2=BETAS[1], eps=ADAM_EPS)
    else:
        tx = optax.sgd(LR)
    grad_fn = jax.value_and_grad(loss_fn)

    def epoch(params, state, X, Y, idx):
        def step(carry, rows):
            params, state = carry
            loss, g = grad_fn(params, X[rows], Y[rows])
            updates, state = tx.update(g, state, params)
            return (optax.apply_updates(params, updates), state), loss

        (params, state), losses = jax.lax.scan(step, (params, state), idx)
        return params, state, losses

    return tx, jax.jit(epoch, donate_argnums=(0, 1)), jax.jit(grad_fn)


class JaxRunner(Runner):
    """The fairest peer of a fused epoch: one jitted call per epoch, `jax.lax.scan` over
    the minibatches, the rows gathered inside; optax.sgd / optax.adam. Compilation
    happens on the first call (timed apart and excluded, like every first call)."""

    name = JAX
    kind = "peer"

    def __init__(self, wl: Workload):
        super().__init__(wl)
        import jax
        import jax.numpy as jnp

        self.jax = jax
        if jax_threads() is None:
            raise RuntimeError("JAX was not started: call workload.init_jax(threads) first")
        tx, self.fn, self.grad_fn = _jax_functions(wl.loss, wl.optimizer)
        self.p = [(jnp.asarray(W), jnp.asarray(b)) for W, b in wl.weights()]
        self.state = tx.init(self.p)
        self.X, self.Y = jnp.asarray(wl.X), jnp.asarray(wl.Y)
        B, K = wl.batch, wl.n_batches
        self.idx = {id(p): (p, jnp.asarray(p[:K * B].reshape(K, B).astype(np.int32)))
                    for p in wl.perms}

    def _rows(self, perm):
        got = self.idx.get(id(perm))
        if got is None or got[0] is not perm:
            B, K = self.wl.batch, self.wl.n_batches
            got = self.idx[id(perm)] = (perm, self.jax.numpy.asarray(
                np.asarray(perm)[:K * B].reshape(K, B).astype(np.int32)))
        return got[1]

    def epoch(self, perm):
        self.p, self.state, losses = self.fn(self.p, self.state, self.X, self.Y,
                                             self._rows(perm))
        losses.block_until_ready()
        return np.asarray(losses, dtype=np.float64)

    def params(self):
        return [(np.array(W), np.array(b)) for W, b in self.p]

    def gradients(self):
        loss, g = self.grad_fn(self.p, self.jax.numpy.asarray(self.wl.x),
                               self.jax.numpy.asarray(self.wl.y))
        return float(loss), [(np.array(dW), np.array(db)) for dW, db in g]

    def nbytes(self) -> int:
        return sum(2 * W.nbytes + 2 * b.nbytes for W, b in self.p)


def make_runner(name: str, wl: Workload) -> Runner:
    if name == PLAIN:
        return PlainNumpyRunner(wl)
    if name == TORCH:
        return TorchRunner(wl)
    if name == JAX:
        return JaxRunner(wl)
    return GradkernRunner(name, wl)
