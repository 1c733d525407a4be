"""The user-facing models: `Sequential` (a list of layers) and `MLP` (its shortcut).

A model compiles its layers to a Plan once, owns one Buffers (flat params, grads,
state and workspace) and runs on a backend from the registry. It never asks which
backend that is: `to_backend` swaps it, the buffers stay.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence as SequenceABC

import numpy as np

from . import backends as _backends
from . import checkpoint as _checkpoint
from . import layers as _layers
from . import optim as _optim
from . import stream as _stream
from . import trainer as _trainer
from ._validate import check_int, check_sizes, check_X, check_y
from .contract import Layer as LayerKind
from .errors import TrainingDiverged
from .layers import Activation, BatchNorm, Dense, Dropout, Layer
from .plan import ACTIVATIONS, LOSSES, Buffers, Plan

INITS = ("he_normal", "he_uniform", "xavier_normal", "xavier_uniform", "lecun_normal",
         "lecun_uniform", "naive")
_INIT_ALIASES = {"he": "he_normal", "kaiming": "he_normal", "xavier": "xavier_normal",
                 "glorot": "xavier_normal", "lecun": "lecun_normal"}
PREDICT_CHUNK = 4096  # rows per inference call: bounds the workspace predict needs


def default_init(activation: str) -> str:
    """He for the ReLU family, Xavier (Glorot) for sigmoid and tanh, LeCun for identity."""
    if activation in ("relu", "leaky_relu", "gelu", "silu"):
        return "he_normal"
    if activation in ("sigmoid", "tanh"):
        return "xavier_normal"
    return "lecun_normal"


def init_weight(W: np.ndarray, scheme: str, rng: np.random.Generator) -> None:
    """Fill W (fan_in, fan_out) in place by the named scheme."""
    fan_in, fan_out = W.shape
    if scheme == "naive":
        W[...] = rng.normal(0.0, 0.01, size=W.shape)
        return
    family, dist = scheme.split("_")
    var = {"he": 2.0 / fan_in, "xavier": 2.0 / (fan_in + fan_out), "lecun": 1.0 / fan_in}[family]
    if dist == "normal":
        W[...] = rng.normal(0.0, math.sqrt(var), size=W.shape)
    else:
        bound = math.sqrt(3.0 * var)
        W[...] = rng.uniform(-bound, bound, size=W.shape)


def _resolve_init(init: str | None) -> str | None:
    if init is None:
        return None
    if not isinstance(init, str):
        raise TypeError(f"init must be a name, got {init!r}")
    init = _INIT_ALIASES.get(init, init)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; known: {', '.join(INITS)} "
                         f"(and {', '.join(_INIT_ALIASES)})")
    return init


class Sequential:
    """A stack of layers trained by backpropagation on a gradkern backend."""

    huber_delta = 1.0  # the loss 'huber''s delta (set by __init__; models pickled before it)

    def __init__(self, layers: SequenceABC[Layer], input_size: int, loss: str = "mse",
                 dtype: str = "float32", backend: str = "auto", seed: int = 0,
                 init: str | None = None, huber_delta: float = 1.0):
        if not isinstance(layers, SequenceABC) or not layers:
            raise ValueError("Sequential needs a non-empty list of layers")
        for layer in layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"not a gradkern layer: {layer!r}")
        if not any(isinstance(layer, Dense) for layer in layers):
            raise ValueError("a model needs at least one Dense layer")
        input_size = check_int(input_size, "input_size")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")
        dt = np.dtype(dtype) if isinstance(dtype, (str, np.dtype, type)) else None
        if dt is None or dt not in (np.float32, np.float64):
            raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        seed = check_int(seed, "seed", low=0)
        self.layers = list(layers)
        self.input_size = input_size
        self.loss = loss
        self.dtype = dt
        self.seed = seed
        self.init = _resolve_init(init)
        specs, n = [], input_size
        for layer in self.layers:
            spec = layer.spec(n)
            specs.append(spec)
            n = spec.n_out
        if isinstance(huber_delta, bool) or not isinstance(huber_delta, (int, float)):
            raise TypeError(f"huber_delta must be a number, got {huber_delta!r}")
        self.huber_delta = float(huber_delta)  # torch.nn.HuberLoss(delta); > 0 (Plan checks)
        self.plan = Plan(specs, loss, dt, delta=self.huber_delta)
        self.bufs = Buffers(self.plan, capacity=1)
        self.backend = _backends.get(backend)
        self._rng = np.random.default_rng(seed)  # data order and dropout seeds
        self._init_threading()
        self._initialize()

    # ------------------------------------------------------------------ threads
    # Inference (predict, predict_raw, predict_proba, evaluate) runs in a workspace of the
    # calling thread's own, over the shared parameters, so several threads can predict with
    # one model at once. Training (fit, train_step, gradients, set_weights) takes the
    # model's lock: training one model from two threads at once is serialized. A predict
    # running while another thread trains sees the weights of some step of that training.
    def _init_threading(self) -> None:
        self._train_lock = threading.RLock()
        self._infer = threading.local()

    def _inference_buffers(self, rows: int) -> Buffers:
        """This thread's inference workspace over the model's params and state."""
        ws = getattr(self._infer, "bufs", None)
        if ws is None or ws.params is not self.bufs.params or ws.plan is not self.plan:
            ws = self.bufs.shared(rows)
            self._infer.bufs = ws
        else:
            ws.ensure_capacity(rows)
        return ws

    # ----------------------------------------------------------------- pickling
    # A model pickles as its plain data: layers, plan, the flat buffers (params, grads,
    # state), the generator and the backend's NAME; never the backend object, its handles
    # or the per-thread workspaces. Unpickling looks the backend up by name and raises
    # BackendUnavailable if it does not load in that process (no silent fallback: move the
    # weights with save/gk.load(path, backend=...) to choose another one).
    def __getstate__(self) -> dict:
        d = {k: v for k, v in self.__dict__.items()
             if k not in ("backend", "_train_lock", "_infer")}
        d["backend"] = self.backend.name
        return d

    def __setstate__(self, d: dict) -> None:
        d = dict(d)
        name = d.pop("backend")
        try:
            backend = _backends.get(name)
        except _backends.BackendUnavailable as exc:
            raise _backends.BackendUnavailable(
                name, f"{exc.reason} (this model was pickled on backend {name!r}; unpickle "
                "it where that backend loads, or save() it there and gk.load(path, "
                "backend=...) here)") from exc
        self.__dict__.update(d)
        self.backend = backend
        self._init_threading()

    # ---------------------------------------------------------------- structure
    @property
    def n_outputs(self) -> int:
        return self.plan.n_out

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def is_classifier(self) -> bool:
        return self.loss in ("cross_entropy", "binary_cross_entropy")

    def _initialize(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.bufs.params[...] = 0
        layers = self.plan.layers
        for i, L in enumerate(layers):
            if L.kind == LayerKind.DENSE:
                nxt = next((M for M in layers[i + 1:]
                            if M.kind in (LayerKind.DENSE, LayerKind.ACTIVATION)), None)
                follows_act = nxt is not None and nxt.kind == LayerKind.ACTIVATION
                act = ACTIVATIONS[nxt.activation] if follows_act else "identity"
                init_weight(self.bufs.params_of(i)["W"], self.init or default_init(act), rng)
            elif L.kind == LayerKind.BATCHNORM:
                self.bufs.params_of(i)["gamma"][...] = 1.0
                running = self.bufs.state_of(i)
                running["running_mean"][...] = 0.0
                running["running_var"][...] = 1.0

    def _named(self, flat: np.ndarray, state: np.ndarray | None) -> dict[str, np.ndarray]:
        """Views of the flat buffer `flat` (and running statistics from `state`) by the names
        torch gives them: Dense i -> i.weight (in, out), i.bias; BatchNorm i -> i.weight
        (gamma), i.bias (beta), i.running_mean, i.running_var."""
        torch_name = {"W": "weight", "b": "bias", "gamma": "weight", "beta": "bias"}
        out: dict[str, np.ndarray] = {}
        for i in range(len(self.plan.layers)):
            for k, v in self.plan.params_of(i, flat).items():
                out[f"{i}.{torch_name[k]}"] = v
            if state is not None:
                for k, v in self.plan.state_of(i, state).items():
                    out[f"{i}.{k}"] = v
        return out

    def named_parameters(self) -> dict[str, np.ndarray]:
        """Every trainable array and buffer by torch-style name, as views (W is (in, out))."""
        return self._named(self.bufs.params, self.bufs.state)

    def _grad_views(self) -> dict[str, np.ndarray]:
        return self._named(self.bufs.grads, None)

    def get_weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Copies of [(W (in, out), b (out,)), ...] per Dense layer, then (gamma, beta) of
        each BatchNorm, in layer order."""
        return [(a.copy(), b.copy()) for a, b in self.plan.param_views(self.bufs.params)]

    def set_weights(self, weights) -> None:
        """Load [(W, b), ...] as get_weights returns it; all are checked before any is set.
        Values are converted to the model's dtype first, so one beyond its range (1e300 in
        a float32 model) is refused, not stored as inf."""
        with self._train_lock:
            self._set_weights(weights)

    def _set_weights(self, weights) -> None:
        views = self.plan.param_views(self.bufs.params)
        try:
            weights = [tuple(pair) for pair in weights]
        except TypeError:
            raise TypeError("weights must be a list of (W, b) pairs") from None
        if len(weights) != len(views):
            raise ValueError(f"expected {len(views)} (W, b) pairs, got {len(weights)}")
        checked = []
        for k, (pair, (vw, vb)) in enumerate(zip(weights, views, strict=True)):
            if len(pair) != 2:
                raise ValueError(f"weights[{k}] must be a (W, b) pair")
            arrs = []
            for a, v, nm in ((pair[0], vw, "W"), (pair[1], vb, "b")):
                a = np.asarray(a)
                if a.dtype.kind not in "iuf" or a.dtype == np.float16:
                    raise TypeError(f"weights[{k}] {nm} has unsupported dtype {a.dtype}")
                if a.shape != v.shape:
                    raise ValueError(f"weights[{k}] {nm} has shape {a.shape}, expected {v.shape}")
                if a.dtype.kind == "f" and not np.isfinite(a).all():
                    raise ValueError(f"weights[{k}] {nm} contains NaN or inf")
                with np.errstate(over="ignore", invalid="ignore"):
                    c = a.astype(self.dtype)
                if not np.isfinite(c).all():
                    raise ValueError(f"weights[{k}] {nm} has values beyond the range of the "
                                     f"model's dtype {self.dtype} (largest |value| "
                                     f"{float(np.max(np.abs(a.astype(np.float64)))):.3g})")
                arrs.append(c)
            checked.append(arrs)
        for (a, b), (vw, vb) in zip(checked, views, strict=True):
            vw[...] = a
            vb[...] = b

    def to_backend(self, name: str) -> Sequential:
        """Run on another backend from now on; the weights stay as they are. Returns self."""
        self.backend = _backends.get(name)
        return self

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.plan.describe()}, backend={self.backend.name!r}, "
                f"params={self.count_params()})")

    def count_params(self) -> int:
        return int(sum(v.size for v in self._grad_views().values()))

    def config(self) -> dict:
        cfg = {"class": "Sequential", "layers": [layer.config() for layer in self.layers],
               "input_size": self.input_size, "loss": self.loss, "dtype": str(self.dtype),
               "seed": self.seed, "init": self.init}
        if self.loss == "huber":
            cfg["huber_delta"] = self.huber_delta
        return cfg

    # --------------------------------------------------------------- validation
    def _check_X(self, X, what: str = "X") -> np.ndarray:
        return check_X(X, self.input_size, self.dtype, what)

    def check_data(self, X, y, what: str = "", stream: bool = False):
        """(X, y) as training reads them: checked (docs/design.md §4) and converted to this model's
        dtype and layout; `what` is appended to the names in error messages ('_val').
        stream=True: a memory-mapped X or y is checked block by block and returned as a
        gradkern.stream.Stream (read in converted blocks), never copied whole."""
        if stream and (_stream.is_mapped(X) or _stream.is_mapped(y)):
            Xs = (_stream.stream_X(X, self.input_size, self.dtype, f"X{what}")
                  if _stream.is_mapped(X) else self._check_X(X, f"X{what}"))
            ys = _stream.stream_y(y, Xs.shape[0], self.loss, self.n_outputs, self.dtype,
                                  f"y{what}", x_shape=np.shape(X))
            return Xs, ys
        Xc = self._check_X(X, f"X{what}")
        yc = check_y(y, Xc.shape[0], self.loss, self.n_outputs, self.dtype, f"y{what}",
                     x_shape=np.shape(X))
        return Xc, yc

    _check_Xy = check_data

    @property
    def rng(self) -> np.random.Generator:
        """The generator of the data order and the dropout seeds (seeded by `seed`)."""
        return self._rng

    @property
    def lock(self) -> threading.RLock:
        """Held by every training call: one model trains in one thread at a time."""
        return self._train_lock

    def _check_training_batch(self, rows: int) -> None:
        if rows < 2 and any(L.kind == LayerKind.BATCHNORM for L in self.plan.layers):
            raise ValueError("batch normalization needs more than one row per training batch")

    # ---------------------------------------------------------------- inference
    def _forward_chunks(self, X: np.ndarray, labels: bool = False) -> np.ndarray:
        """Outputs (N, K) chunk by chunk; labels=True: cross_entropy's argmax (N,) per chunk,
        so that predict holds no (N, K) logits."""
        if labels:
            out = np.empty(X.shape[0], dtype=np.int64)
        else:
            out = np.empty((X.shape[0], self.n_outputs), dtype=self.dtype)
        chunk = min(PREDICT_CHUNK, X.shape[0])
        bufs = self._inference_buffers(chunk)
        for start in range(0, X.shape[0], chunk):
            part = X[start : start + chunk]
            pred = self.backend.forward(self.plan, bufs, part)
            out[start : start + part.shape[0]] = pred.argmax(axis=1) if labels else pred
        return out

    def predict_raw(self, X) -> np.ndarray:
        """The network's outputs (N, K) in inference mode: logits for classifiers."""
        if _stream.is_mapped(X):  # checked and read block by block, never copied whole
            return self._forward_chunks(_stream.stream_X(X, self.input_size, self.dtype))
        return self._forward_chunks(self._check_X(X))

    def predict(self, X) -> np.ndarray:
        """Class labels (N,) for classifiers; predictions for regression ((N,) for one output)."""
        if self.loss == "cross_entropy":  # per chunk: no (N, K) logits held
            mapped = _stream.is_mapped(X)
            Xc = (_stream.stream_X(X, self.input_size, self.dtype) if mapped
                  else self._check_X(X))
            return self._forward_chunks(Xc, labels=True)
        raw = self.predict_raw(X)
        if self.loss == "binary_cross_entropy":
            labels = (raw > 0).astype(np.int64)
            return labels[:, 0] if self.n_outputs == 1 else labels
        return raw[:, 0] if self.n_outputs == 1 else raw

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities: softmax (N, K) for cross_entropy; for binary_cross_entropy
        (N, 2) with one output (as scikit-learn), else per-output sigmoids (N, K)."""
        if not self.is_classifier:
            raise ValueError(f"predict_proba needs a classification loss, not {self.loss!r}")
        raw = self.predict_raw(X).astype(np.float64)
        if self.loss == "cross_entropy":
            e = np.exp(raw - raw.max(axis=1, keepdims=True))
            return (e / e.sum(axis=1, keepdims=True)).astype(self.dtype)
        p = 0.5 * (1.0 + np.tanh(0.5 * raw))
        if self.n_outputs == 1:
            p = np.hstack([1.0 - p, p])
        return p.astype(self.dtype)

    def evaluate(self, X, y) -> dict[str, float]:
        """Mean loss in inference mode, plus accuracy for classifiers (R² for mse).
        Memory-mapped X / y are read block by block."""
        Xc, yc = self.check_data(X, y, stream=True)
        return self.evaluate_checked(Xc, yc)

    def evaluate_checked(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """evaluate on arrays `check_data` returned (no second validation pass)."""
        chunk = min(PREDICT_CHUNK, X.shape[0])
        bufs = self._inference_buffers(chunk)
        last = len(self.plan.layers) - 1
        # figures accumulated chunk by chunk: nothing of N rows is held (X, y may be Streams)
        total, hits, ss_res = 0.0, 0, 0.0
        for start in range(0, X.shape[0], chunk):
            xs, ys = X[start : start + chunk], y[start : start + chunk]
            pred = self.backend.forward(self.plan, bufs, xs)
            if self.loss == "cross_entropy":
                hits += int(np.count_nonzero(pred.argmax(axis=1) == ys))
            elif self.loss == "binary_cross_entropy":
                hits += int(np.count_nonzero((pred > 0) == (ys > 0.5)))
            else:
                ss_res += float(np.sum((pred.astype(np.float64) - ys) ** 2))
            dpred = bufs.dout(last, xs.shape[0])
            total += xs.shape[0] * self.backend.loss_forward_backward(
                self.plan.loss_code, dpred, pred, ys, delta=self.plan.delta)
        result = {"loss": total / X.shape[0]}
        if self.loss == "cross_entropy":
            result["accuracy"] = hits / X.shape[0]
        elif self.loss == "binary_cross_entropy":
            result["accuracy"] = hits / (X.shape[0] * self.n_outputs)
        else:
            ss_tot = _stream.total_sum_squares(y)
            result["r2"] = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
        return result

    # ----------------------------------------------------------------- training
    def gradients(self, X, y) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
        """Loss and [(dW, db), ...] (training mode, whole X as one batch); nothing changes."""
        Xc, yc = self._check_Xy(X, y)
        self._check_training_batch(Xc.shape[0])
        with self._train_lock:
            loss = self._gradients_checked(Xc, yc)
            return loss, [(a.copy(), b.copy()) for a, b in self.plan.param_views(self.bufs.grads)]

    def named_gradients(self, X, y) -> tuple[float, dict[str, np.ndarray]]:
        """Loss and every gradient by parameter name (as named_parameters)."""
        Xc, yc = self._check_Xy(X, y)
        self._check_training_batch(Xc.shape[0])
        with self._train_lock:
            loss = self._gradients_checked(Xc, yc)
            return loss, {k: v.copy() for k, v in self._grad_views().items()}

    def _gradients_checked(self, X: np.ndarray, y: np.ndarray) -> float:
        self.bufs.ensure_capacity(X.shape[0])
        seed = self._peek_seed()
        return self.backend.gradients(self.plan, self.bufs, X, y, seed)

    def _peek_seed(self) -> int:
        """The dropout seed the next step would draw, without advancing the generator."""
        state = self._rng.bit_generator.state
        seed = int(self._rng.integers(0, 2**64, dtype=np.uint64))
        self._rng.bit_generator.state = state
        return seed

    def train_step(self, X, y, optimizer: _optim.Optimizer, clip_norm: float | None = None
                   ) -> float:
        """One gradient step on this batch; returns its loss (before the update)."""
        if not isinstance(optimizer, _optim.Optimizer):
            raise TypeError(f"optimizer must be a gk.optim optimizer, got {optimizer!r}")
        Xc, yc = self._check_Xy(X, y)
        self._check_training_batch(Xc.shape[0])
        with self._train_lock:
            return self._train_step_checked(Xc, yc, optimizer, clip_norm)

    def _train_step_checked(self, Xc, yc, optimizer, clip_norm) -> float:
        optimizer.bind(self.plan.n_params, self.dtype)
        self.bufs.ensure_capacity(Xc.shape[0])
        state = self._rng.bit_generator.state
        seed = int(self._rng.integers(0, 2**64, dtype=np.uint64))
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below
            loss, gnorm = self.backend.train_step(self.plan, self.bufs, Xc, yc, optimizer, seed,
                                                  float(clip_norm or 0.0))
        if not (math.isfinite(loss) and math.isfinite(gnorm)):
            self._rng.bit_generator.state = state
            raise TrainingDiverged(
                f"step rejected: loss {loss}, gradient norm {gnorm}; the weights were not "
                "updated (lower the learning rate, or clip gradients with clip_norm)")
        return loss

    def fit(self, X, y, epochs: int = 10, batch_size: int = 32,
            optimizer: _optim.Optimizer | None = None, **kwargs):
        """Train by minibatch backpropagation; returns a History. See gradkern.trainer._fit
        for the options and gradkern.trainer.fit for what a failed fit leaves (nothing, if
        no step was applied). With batch normalization batch_size=1 is refused and a
        would-be 1-row last minibatch is left out of its epoch. sample_weight= (N,) and
        class_weight= ('balanced' or {label: weight}) weight the loss (trainer._fit)."""
        return _trainer.fit(self, X, y, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                   **kwargs)

    # -------------------------------------------------------------- persistence
    def save(self, path, preprocessing: dict | None = None) -> None:
        """Write weights and architecture to a safetensors file, atomically; with
        `preprocessing` (gradkern.checkpoint.check_preprocessing: standardization, class
        labels, target scaling) in its metadata, read back by `load_preprocessing`."""
        _checkpoint.save_model(self, path, preprocessing=preprocessing)

    def state_snapshot(self) -> tuple[np.ndarray, np.ndarray, dict]:
        return self.bufs.params.copy(), self.bufs.state.copy(), self._rng.bit_generator.state

    def restore_snapshot(self, snap) -> None:
        params, state, rng_state = snap
        self.bufs.params[...] = params
        self.bufs.state[...] = state
        self._rng.bit_generator.state = rng_state


class MLP(Sequential):
    """Dense layers of the given sizes with one activation between them.

    MLP([64, 128, 10]) is Dense(128) -> act -> Dense(10). batchnorm=True puts a
    BatchNorm after each hidden Dense, before its activation; dropout=p a Dropout
    after each hidden activation.
    """

    def __init__(self, layer_sizes, activation: str = "relu", loss: str = "mse",
                 dtype: str = "float32", backend: str = "auto", seed: int = 0,
                 init: str | None = None, batchnorm: bool = False, dropout: float = 0.0,
                 huber_delta: float = 1.0):
        sizes = check_sizes(layer_sizes)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
        if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
            raise ValueError(f"Dropout rate must be in [0, 1), got {dropout!r}")
        layers: list[Layer] = []
        for width in sizes[1:-1]:
            layers.append(Dense(width))
            if batchnorm:
                layers.append(BatchNorm())
            layers.append(Activation(activation))
            if dropout:
                layers.append(Dropout(dropout))
        layers.append(Dense(sizes[-1]))
        self.layer_sizes = sizes
        self.activation = activation
        self.batchnorm = bool(batchnorm)
        self.dropout = float(dropout)
        super().__init__(layers, input_size=sizes[0], loss=loss, dtype=dtype, backend=backend,
                         seed=seed, init=init, huber_delta=huber_delta)

    def config(self) -> dict:
        cfg = super().config()
        cfg.update({"class": "MLP", "layer_sizes": self.layer_sizes,
                    "activation": self.activation, "batchnorm": self.batchnorm,
                    "dropout": self.dropout})
        return cfg


def from_config(cfg: dict, backend: str = "auto") -> Sequential:
    """The model a `config()` dict describes, freshly initialized, on `backend`."""
    if not isinstance(cfg, dict):
        raise TypeError(f"a model config is a dict, got {type(cfg).__name__}")
    if cfg["class"] == "MLP":
        return MLP(cfg["layer_sizes"], activation=cfg["activation"], loss=cfg["loss"],
                   dtype=cfg["dtype"], backend=backend, seed=cfg["seed"], init=cfg["init"],
                   batchnorm=cfg["batchnorm"], dropout=cfg["dropout"],
                   huber_delta=cfg.get("huber_delta", 1.0))
    if cfg["class"] == "Sequential":
        return Sequential([_layers.from_config(c) for c in cfg["layers"]],
                          input_size=cfg["input_size"], loss=cfg["loss"], dtype=cfg["dtype"],
                          backend=backend, seed=cfg["seed"], init=cfg["init"],
                          huber_delta=cfg.get("huber_delta", 1.0))
    raise ValueError(f"unknown model class {str(cfg['class'])[:80]!r}")


def load(path, backend: str = "auto") -> Sequential:
    """A model from a checkpoint written by `model.save` (or by fit's checkpointing)."""
    _backends.get(backend)  # a bad backend argument is the caller's error, not the file's
    model, _, _ = _checkpoint.load_checkpoint(path, lambda cfg: from_config(cfg, backend),
                                              with_training=False)
    return model


def load_preprocessing(path, model: Sequential) -> dict | None:
    """The preprocessing saved with `model` (as `load(path)` returned it) in `path`, checked
    against the model, or None for a checkpoint written without it."""
    return _checkpoint.read_preprocessing(path, model)


def load_checkpoint(path, backend: str = "auto", with_optimizer: bool = False):
    """(model, optimizer or None, training dict or None) of a checkpoint, all checked first."""
    _backends.get(backend)
    return _checkpoint.load_checkpoint(path, lambda cfg: from_config(cfg, backend),
                                       with_optimizer=with_optimizer)


__all__ = ["INITS", "MLP", "Sequential", "TrainingDiverged", "from_config", "load",
           "load_checkpoint", "load_preprocessing"]
