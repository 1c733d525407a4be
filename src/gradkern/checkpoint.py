"""Checkpoints: safetensors files, written atomically, read without pickle.

A file holds the model's named tensors (as `named_parameters`), optionally the
optimizer state ("optim.*") and the training position, plus string metadata: the
format, its version and the model config as JSON. Loading reads the header first and
checks every declared tensor against the architecture it declares, before anything
of the size it claims is allocated.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

FORMAT = "gradkern"
VERSION = "1"
MAX_HEADER = 16 * 2**20  # bytes; a header larger than this is not ours
_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "U64": np.uint64}


class CheckpointError(ValueError):
    """A file that is not a readable gradkern checkpoint for this model."""


def _atomic_write(path: Path, data: bytes) -> None:
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def save_model(model, path, optimizer=None, training: dict | None = None) -> None:
    """Write the model (and optionally optimizer state and training position)."""
    from safetensors.numpy import save

    tensors = {k: np.ascontiguousarray(v) for k, v in model.named_parameters().items()}
    meta = {"format": FORMAT, "version": VERSION, "model": json.dumps(model.config())}
    if optimizer is not None:
        meta["optimizer"] = json.dumps(optimizer.config())
        for k, v in optimizer.state_arrays().items():
            tensors[f"optim.{k}"] = np.ascontiguousarray(v)
    if training is not None:
        meta["training"] = json.dumps(training)
    _atomic_write(Path(path), save(tensors, metadata=meta))


def read_header(path) -> tuple[dict, dict, int]:
    """(tensor entries, metadata, data start) of a safetensors file, checked for sanity."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is not a gradkern checkpoint (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or n + 8 > size:
            raise CheckpointError(f"{path} is not a gradkern checkpoint (bad header length)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{path} is not a gradkern checkpoint (header is not JSON)"
                                  ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a gradkern checkpoint")
    meta = header.pop("__metadata__", None) or {}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gradkern checkpoint "
                              f"(format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {meta.get('version')!r}; "
                              f"this gradkern reads version {VERSION}")
    data_len = size - 8 - n
    for name, entry in header.items():
        try:
            dtype = _DTYPES[entry["dtype"]]
            shape = tuple(int(s) for s in entry["shape"])
            start, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name!r} has an unreadable entry") from None
        count = int(np.prod(shape, dtype=object)) if shape else 1
        if any(s < 0 for s in shape) or end - start != count * np.dtype(dtype).itemsize \
                or not 0 <= start <= end <= data_len:
            raise CheckpointError(f"{path}: tensor {name!r} is truncated or inconsistent")
    return header, meta, 8 + n


def _model_from_config(cfg: dict, backend: str):
    from . import layers as _layers
    from .model import MLP, Sequential

    try:
        if cfg["class"] == "MLP":
            return MLP(cfg["layer_sizes"], activation=cfg["activation"], loss=cfg["loss"],
                       dtype=cfg["dtype"], backend=backend, seed=cfg["seed"], init=cfg["init"],
                       batchnorm=cfg["batchnorm"], dropout=cfg["dropout"])
        if cfg["class"] == "Sequential":
            return Sequential([_layers.from_config(c) for c in cfg["layers"]],
                              input_size=cfg["input_size"], loss=cfg["loss"], dtype=cfg["dtype"],
                              backend=backend, seed=cfg["seed"], init=cfg["init"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"model config is incomplete: {exc}") from None
    raise CheckpointError(f"unknown model class {cfg.get('class')!r}")


def expected_tensors(model, optimizer=None) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    out = {k: (v.shape, v.dtype) for k, v in model.named_parameters().items()}
    if optimizer is not None:
        n = model.plan.n_params
        out["optim.buf1"] = ((n,), model.dtype)
        out["optim.step"] = ((1,), np.dtype(np.int64))
        if "buf2" in optimizer.state_arrays() or type(optimizer).__name__ in ("Adam", "AdamW"):
            out["optim.buf2"] = ((n,), model.dtype)
    return out


def _check_against(path, header: dict, expected: dict) -> None:
    names = set(header)
    if names != set(expected):
        missing = sorted(set(expected) - names)
        extra = sorted(names - set(expected))
        raise CheckpointError(f"{path} does not match the declared model: missing {missing}, "
                              f"unexpected {extra}")
    for name, (shape, dtype) in expected.items():
        entry = header[name]
        if tuple(entry["shape"]) != tuple(shape) or _DTYPES[entry["dtype"]] != dtype:
            raise CheckpointError(f"{path}: tensor {name!r} is {entry['dtype']} "
                                  f"{tuple(entry['shape'])}, the model declares {dtype} {shape}")


def _read_tensors(path, header: dict, start: int) -> dict[str, np.ndarray]:
    out = {}
    with open(path, "rb") as f:
        for name, entry in header.items():
            a, b = entry["data_offsets"]
            f.seek(start + a)
            raw = f.read(b - a)
            if len(raw) != b - a:
                raise CheckpointError(f"{path}: tensor {name!r} is truncated")
            arr = np.frombuffer(raw, dtype=np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<"))
            out[name] = arr.reshape(entry["shape"])
    return out


def load(path, backend: str = "auto"):
    """A model from a checkpoint written by `model.save` (or by fit's checkpointing)."""
    model, _, _ = load_checkpoint(path, backend=backend)
    return model


def load_checkpoint(path, backend: str = "auto", with_optimizer: bool = False):
    """(model, optimizer or None, training dict or None), every shape checked first."""
    from . import optim as _optim

    header, meta, start = read_header(path)
    try:
        cfg = json.loads(meta["model"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: model config missing or unreadable") from None
    # a declared architecture is built only after its size is seen to match the file
    declared = _declared_sizes(cfg)
    file_bytes = sum(e["data_offsets"][1] - e["data_offsets"][0] for e in header.values())
    if declared is not None and declared > file_bytes:
        raise CheckpointError(f"{path}: the declared model ({declared} bytes of parameters) "
                              f"is larger than the file's tensors ({file_bytes} bytes)")
    model = _model_from_config(cfg, backend)
    optimizer = None
    if with_optimizer and "optimizer" in meta:
        optimizer = _optim.from_config(json.loads(meta["optimizer"]))
    expected = expected_tensors(model, optimizer)
    if not with_optimizer:
        header = {k: v for k, v in header.items() if not k.startswith("optim.")}
    _check_against(path, header, expected)
    tensors = _read_tensors(path, header, start)
    params = model.named_parameters()
    for k, v in params.items():
        if not np.isfinite(tensors[k]).all():
            raise CheckpointError(f"{path}: tensor {k!r} contains NaN or inf")
        v[...] = tensors[k]
    if optimizer is not None:
        optimizer.bind(model.plan.n_params, model.dtype)
        optimizer.load_state_arrays({k[6:]: v for k, v in tensors.items()
                                     if k.startswith("optim.")})
    training = json.loads(meta["training"]) if "training" in meta else None
    return model, optimizer, training


def _declared_sizes(cfg: dict) -> int | None:
    """Bytes of the weights a config declares, computed without allocating anything."""
    try:
        itemsize = np.dtype(cfg["dtype"]).itemsize
        if cfg["class"] == "MLP":
            sizes = [int(s) for s in cfg["layer_sizes"]]
        else:
            sizes = [int(cfg["input_size"])] + [int(c["units"]) for c in cfg["layers"]
                                                if c.get("type") == "Dense"]
        return itemsize * sum(a * b + b for a, b in zip(sizes, sizes[1:], strict=False))
    except (KeyError, TypeError, ValueError):
        return None


# ------------------------------------------------------------- resumable training
def save_training(model, optimizer, path, epoch: int, history: dict) -> None:
    """A checkpoint fit can resume from: model, optimizer state, data order, position."""
    training = {"epoch": int(epoch), "step": int(optimizer.step[0]),
                "rng": model._rng.bit_generator.state, "history": history}
    save_model(model, path, optimizer=optimizer, training=training)


def restore_training(model, optimizer, path) -> tuple[int, dict]:
    """Load a training checkpoint into this model and optimizer; (epochs done, history).

    The file must declare this model's architecture and an optimizer of the same kind;
    nothing changes unless everything checks out.
    """
    header, meta, start = read_header(path)
    if "training" not in meta or "optimizer" not in meta:
        raise CheckpointError(f"{path} holds a model but no training state to resume from")
    try:
        cfg = json.loads(meta["model"])
        opt_cfg = json.loads(meta["optimizer"])
        training = json.loads(meta["training"])
        epoch = int(training["epoch"])
        rng_state = training["rng"]
        history = dict(training.get("history", {}))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: training state unreadable") from None
    if cfg != model.config():
        raise CheckpointError(f"{path} was written for another model: {cfg} != {model.config()}")
    if opt_cfg.get("name") != optimizer.config()["name"]:
        raise CheckpointError(f"{path} holds {opt_cfg.get('name')} state; resuming with "
                              f"{optimizer.config()['name']}")
    optimizer.bind(model.plan.n_params, model.dtype)
    expected = expected_tensors(model, optimizer)
    _check_against(path, header, expected)
    tensors = _read_tensors(path, header, start)
    probe = np.random.default_rng()
    try:
        probe.bit_generator.state = rng_state
    except (TypeError, ValueError, KeyError):
        raise CheckpointError(f"{path}: generator state unreadable") from None
    for k, v in model.named_parameters().items():
        v[...] = tensors[k]
    optimizer.load_state_arrays({k[6:]: v for k, v in tensors.items() if k.startswith("optim.")})
    model._rng.bit_generator.state = rng_state
    return epoch, history
