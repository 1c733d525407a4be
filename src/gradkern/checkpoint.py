"""Checkpoints: safetensors files, written atomically, read without pickle.

A file holds the model's named tensors (as `named_parameters`), optionally the
optimizer state ("optim.*") and the training position, plus string metadata: the
format, its version and the model config as JSON, and optionally the preprocessing the
model was trained with (`check_preprocessing`; written by `gradkern train`).

Reading trusts nothing it reads. The header is checked first: its length, UTF-8 JSON,
a dict of well-formed entries whose byte ranges are disjoint and tile the data section
exactly (so the bytes it declares are bytes the file holds). The model config is then
checked against those entries — every tensor the declared architecture has, its shape
and dtype — before any model is built, so a small file cannot make the loader allocate a
large model. Every value is checked (finite weights, non-negative running variances and
Adam second moments, a sane training position, a well-formed generator state) before
anything is set on a model or optimizer. Whatever is wrong with a file, the loader
raises `CheckpointError` naming the problem.

Writes go to a temp file `.<name>.tmp-<pid>-<host>-<random>` next to the target (created
with mode 0o666, so the umask applies), fsync, `os.replace`. A temp file left behind by
a writer that was killed is removed by the next save of the same target once its
writer is known dead (or it is older than `STALE_TEMP_SECONDS`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import secrets
import socket
import stat
import struct
import time
from pathlib import Path

import numpy as np

from .contract import OPT_NONNEGATIVE, OPT_SLOTS, OPT_STATE

FORMAT = "gradkern"
VERSION = "1"
MAX_HEADER = 16 * 2**20  # bytes; a header larger than this is not ours
MAX_EPOCH = 2**53  # an epoch count beyond this is not a training position
MAX_STEP = 2**63 - 1  # the step counter is an int64
STALE_TEMP_SECONDS = 24 * 3600  # a temp file this old is litter whoever wrote it
_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "U64": np.uint64}
_ENTRY_KEYS = {"dtype", "shape", "data_offsets"}


class CheckpointError(ValueError):
    """A file that is not a readable gradkern checkpoint for this model."""


def _short(obj, limit: int = 120) -> str:
    """repr(obj), cut to `limit` characters (a hostile value can be huge or deep)."""
    try:
        text = repr(obj)
    except (RecursionError, ValueError):  # ValueError: int too long to print
        text = f"<{type(obj).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# ------------------------------------------------------------------ writing
def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _temp_pattern(name: str) -> re.Pattern:
    return re.compile(rf"\.{re.escape(name)}\.tmp-(\d+)-([0-9a-f]{{8}})-[0-9a-f]+")


def _pid_alive(pid: int) -> bool:
    if pid <= 0 or pid > 2**22:  # 0 would mean our process group; above pid_max: none
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or we cannot tell: keep its file
    return True


def remove_stale_temps(path) -> list[Path]:
    """Remove temp files of `path` left by writers that died; the paths removed.

    A temp file is removed when its writer ran on this host and its pid is not alive,
    or when it is older than STALE_TEMP_SECONDS (a writer on another host, or a pid
    since reused). A live writer's temp file is never touched.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    pattern, host, now = _temp_pattern(path.name), _host_tag(), time.time()
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for entry in names:
        m = pattern.fullmatch(entry)
        if m is None:
            continue
        tmp = directory / entry
        try:
            st = os.lstat(tmp)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        pid, tag = int(m.group(1)), m.group(2)
        dead = tag == host and pid != os.getpid() and not _pid_alive(pid)
        if dead or now - st.st_mtime > STALE_TEMP_SECONDS:
            try:
                os.unlink(tmp)
                removed.append(tmp)
            except OSError:
                pass
    return removed


def _atomic_write(path: Path, data: bytes) -> None:
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    prefix = f".{path.name}.tmp-{os.getpid()}-{_host_tag()}-"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = directory / (prefix + secrets.token_hex(8))
        try:
            fd = os.open(tmp, flags, 0o666)  # 0o666 & ~umask, as any new file
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(errno.EEXIST, "no free temp file name", str(directory))
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
    remove_stale_temps(path)


def save_model(model, path, optimizer=None, training: dict | None = None,
               preprocessing: dict | None = None, extra_tensors: dict | None = None) -> None:
    """Write the model (and optionally optimizer state and training position, and the
    preprocessing of its inputs and outputs: see check_preprocessing)."""
    from safetensors.numpy import save

    if preprocessing is not None:  # checked before anything is written
        preprocessing = check_preprocessing(f"{path}: preprocessing", preprocessing,
                                            model.input_size, model.n_outputs, model.loss,
                                            error=ValueError)
    tensors = {k: np.ascontiguousarray(v) for k, v in model.named_parameters().items()}
    meta = {"format": FORMAT, "version": VERSION, "model": json.dumps(model.config())}
    if optimizer is not None:
        meta["optimizer"] = json.dumps(optimizer.config())
        for k, v in optimizer.state_arrays().items():
            tensors[f"optim.{k}"] = np.ascontiguousarray(v)
    if training is not None:
        meta["training"] = json.dumps(training)
    for k, v in (extra_tensors or {}).items():
        tensors[k] = np.ascontiguousarray(v)
    if preprocessing is not None:
        meta[PREPROCESSING] = json.dumps(preprocessing)
    _atomic_write(Path(path), save(tensors, metadata=meta))


# ------------------------------------------------------------------ preprocessing
PREPROCESSING = "preprocessing"  # the metadata key
_PRE_KEYS = {"classification": {"task", "features", "target", "x_mean", "x_scale", "classes"},
             "regression": {"task", "features", "target", "x_mean", "x_scale", "y_mean",
                            "y_scale"}}


def _numbers(where, v, n: int, positive: bool, error) -> list[float]:
    if not (isinstance(v, list) and len(v) == n
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
        raise error(f"{where} is not a list of {n} numbers: {_short(v)}")
    try:
        out = [float(x) for x in v]
    except OverflowError:
        raise error(f"{where} holds a value that is not finite") from None
    if not all(math.isfinite(x) and (x > 0 or not positive) for x in out):
        raise error(f"{where} holds a value that is not {'positive and ' * positive}finite")
    return out


def check_preprocessing(where, pre, n_in: int, n_out: int, loss: str,
                        error=CheckpointError) -> dict:
    """The preprocessing a model was trained with, every field checked against it.

    {"task": "classification" | "regression", "features": the input columns' names (n_in
    strings, or [] when unnamed), "target": its column name or None, "x_mean", "x_scale":
    n_in numbers (inputs are (raw - x_mean) / x_scale, scales positive), and "classes":
    the original labels (all strings or all integers, distinct; label i of the network is
    classes[i]) or "y_mean", "y_scale": one number per output (predictions in original
    units are out * y_scale + y_mean)}. Anything else is `error` (CheckpointError).
    """
    if not isinstance(pre, dict):
        raise error(f"{where} is {type(pre).__name__}, not an object")
    task = pre.get("task")
    if task not in _PRE_KEYS:
        raise error(f"{where}: task {_short(task)} is not 'classification' or 'regression'")
    classifier = loss in ("cross_entropy", "binary_cross_entropy")
    if classifier != (task == "classification"):
        raise error(f"{where} describes a {task} task; the model's loss is {loss}")
    if set(pre) != _PRE_KEYS[task]:
        missing, extra = sorted(_PRE_KEYS[task] - set(pre)), sorted(set(pre) - _PRE_KEYS[task])
        raise error(f"{where} is malformed: missing {missing}, unexpected {_short(extra)}")
    feats = pre["features"]
    if not (isinstance(feats, list) and all(isinstance(f, str) for f in feats)
            and len(feats) in (0, n_in) and len(set(feats)) == len(feats)):
        raise error(f"{where}: features is not a list of {n_in} distinct names: "
                    f"{_short(feats)}")
    if not (pre["target"] is None or isinstance(pre["target"], str)):
        raise error(f"{where}: target {_short(pre['target'])} is not a name")
    out = {"task": task, "features": list(feats), "target": pre["target"],
           "x_mean": _numbers(f"{where}: x_mean", pre["x_mean"], n_in, False, error),
           "x_scale": _numbers(f"{where}: x_scale", pre["x_scale"], n_in, True, error)}
    if task == "classification":
        classes = pre["classes"]
        k = 2 if loss == "binary_cross_entropy" and n_out == 1 else n_out
        kinds = {str if isinstance(c, str) else int if _is_int(c) else None
                 for c in classes} if isinstance(classes, list) else {None}
        if not (isinstance(classes, list) and len(classes) == k and len(kinds) == 1
                and None not in kinds and len(set(classes)) == k):
            raise error(f"{where}: classes is not a list of {k} distinct labels (all strings "
                        f"or all integers): {_short(classes)}")
        out["classes"] = list(classes)
    else:
        out["y_mean"] = _numbers(f"{where}: y_mean", pre["y_mean"], n_out, False, error)
        out["y_scale"] = _numbers(f"{where}: y_scale", pre["y_scale"], n_out, True, error)
    return out


def read_preprocessing(path, model) -> dict | None:
    """The checked preprocessing saved with `model` in `path`, or None if it has none (a
    checkpoint written without it: inputs are used as they are, labels are 0..K-1)."""
    _, meta, _ = read_header(path)
    if PREPROCESSING not in meta:
        return None
    pre = _parse_json(path, meta[PREPROCESSING], "preprocessing")
    return check_preprocessing(f"{path}: preprocessing", pre, model.input_size,
                               model.n_outputs, model.loss)


# ------------------------------------------------------------------ reading the header
def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {_short(k)}")
        out[k] = v
    return out


def _reject_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def _parse_json(where, text, what: str, allow_nan: bool = False):
    """json.loads whose every failure (depth, huge numbers, duplicate keys) is a
    CheckpointError "<where>: <what> is ..."."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates,
                          parse_constant=None if allow_nan else _reject_constant)
    except RecursionError:
        raise CheckpointError(f"{where}: {what} is nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{where}: {what} is not valid JSON ({_short(str(exc), 200)})"
                              ) from None


def _check_entry(path, name, entry) -> tuple[np.dtype, tuple[int, ...], int, int]:
    where = f"{path}: tensor {_short(name)}"
    if not isinstance(entry, dict):
        raise CheckpointError(f"{where}: entry is {type(entry).__name__}, not an object")
    if set(entry) != _ENTRY_KEYS:
        raise CheckpointError(f"{where}: entry has keys {sorted(entry)}, "
                              f"expected {sorted(_ENTRY_KEYS)}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise CheckpointError(f"{where}: dtype {_short(dtype)} is not one of "
                              f"{', '.join(_DTYPES)}")
    if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
        raise CheckpointError(f"{where}: shape {_short(shape)} is not a list of "
                              "non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))):
        raise CheckpointError(f"{where}: data_offsets {_short(offsets)} are not two integers")
    start, end = offsets
    count = math.prod(shape)
    nbytes = count * np.dtype(_DTYPES[dtype]).itemsize
    if not 0 <= start <= end or end - start != nbytes:
        raise CheckpointError(f"{where}: data_offsets {_short(offsets)} do not hold "
                              f"{dtype} {_short(tuple(shape))} ({nbytes} bytes)")
    return np.dtype(_DTYPES[dtype]), tuple(shape), start, end


def read_header(path) -> tuple[dict, dict, int]:
    """(tensor entries, metadata, data start) of a safetensors file, checked for sanity.

    Every entry is well formed and the entries tile the data section exactly.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"no such checkpoint: {path}", str(path)) from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device could block or never end
        raise CheckpointError(f"{path} is not a regular file")
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())  # the file opened, not the one stat()ed before
            if not stat.S_ISREG(st.st_mode):
                raise CheckpointError(f"{path} is not a regular file")
            size = st.st_size
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path} is not a gradkern checkpoint (too short)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER:
                raise CheckpointError(f"{path} is not a gradkern checkpoint (bad header length "
                                      f"{n}: more than {MAX_HEADER} bytes)")
            if n + 8 > size:
                raise CheckpointError(f"{path} is not a gradkern checkpoint (bad header length "
                                      f"{n}: beyond the end of the {size}-byte file)")
            raw = f.read(n)
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a directory, not a checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({exc.strerror})") from None
    if len(raw) != n:
        raise CheckpointError(f"{path} is truncated (the header ends early)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not a gradkern checkpoint (header is not UTF-8)"
                              ) from None
    header = _parse_json(f"{path} is not a gradkern checkpoint", text, "header")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a gradkern checkpoint (header is "
                              f"{type(header).__name__}, not an object)")
    meta = header.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path} is not a gradkern checkpoint "
                              "(__metadata__ is not an object of strings)")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gradkern checkpoint "
                              f"(format {_short(meta.get('format'))})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {_short(meta.get('version'))}; "
                              f"this gradkern reads version {VERSION}")
    data_len = size - 8 - n
    spans = []
    for name, entry in header.items():
        _, _, start, end = _check_entry(path, name, entry)
        spans.append((start, end, name))
    # disjoint, in bounds, and covering the data exactly: sorted, each starts where the
    # previous ended, the last ends at the end of the file
    spans.sort()
    pos, prev = 0, None
    for start, end, name in spans:
        if start != pos:
            if start < pos:
                raise CheckpointError(f"{path}: tensor {_short(name)} overlaps tensor "
                                      f"{_short(prev)} (bytes {start}..{pos})")
            raise CheckpointError(f"{path}: bytes {pos}..{start} of the data belong to no "
                                  "tensor")
        pos, prev = end, name
    if pos > data_len:
        raise CheckpointError(f"{path} is truncated: its tensors need {pos} bytes of data, "
                              f"the file holds {data_len}")
    if pos < data_len:
        raise CheckpointError(f"{path}: {data_len - pos} bytes after the last tensor belong "
                              "to no tensor")
    return header, meta, 8 + n


# ------------------------------------------------------------------ the declared model
def _declared_tensors(path, cfg) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Every tensor (name, shape, dtype) the config declares, without building anything.

    Mirrors Sequential._named: Dense i -> i.weight (in, out), i.bias (out,); BatchNorm
    i -> i.weight, i.bias, i.running_mean, i.running_var (n,).
    """
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: model config is {type(cfg).__name__}, not an object")
    try:
        dtype = cfg["dtype"]
        cls = cfg["class"]
        if cls == "MLP":
            sizes = cfg["layer_sizes"]
            if not (isinstance(sizes, list) and len(sizes) >= 2
                    and all(_is_int(s) and s >= 1 for s in sizes)):
                raise CheckpointError(f"{path}: model config layer_sizes {_short(sizes)} is "
                                      "not a list of at least two positive integers")
            kinds: list[tuple[str, int]] = []
            for width in sizes[1:-1]:
                kinds.append(("Dense", width))
                if cfg["batchnorm"]:
                    kinds.append(("BatchNorm", 0))
                kinds.append(("Activation", 0))
                if cfg["dropout"]:
                    kinds.append(("Dropout", 0))
            kinds.append(("Dense", sizes[-1]))
            n = sizes[0]
        elif cls == "Sequential":
            layers, n = cfg["layers"], cfg["input_size"]
            if not isinstance(layers, list) or not all(isinstance(c, dict) for c in layers):
                raise CheckpointError(f"{path}: model config layers is not a list of objects")
            kinds = [(c.get("type"), c.get("units")) for c in layers]
        else:
            raise CheckpointError(f"{path}: unknown model class {_short(cls)}")
    except KeyError as exc:
        raise CheckpointError(f"{path}: model config is incomplete: missing {exc}") from None
    if dtype not in ("float32", "float64"):
        raise CheckpointError(f"{path}: model config dtype {_short(dtype)} is not float32 "
                              "or float64")
    if not (_is_int(n) and n >= 1):
        raise CheckpointError(f"{path}: model config input size {_short(n)} is not a "
                              "positive integer")
    dt = np.dtype(dtype)
    out = {}
    for i, (kind, units) in enumerate(kinds):
        if kind == "Dense":
            if not (_is_int(units) and units >= 1):
                raise CheckpointError(f"{path}: model config layer {i}: Dense units "
                                      f"{_short(units)} is not a positive integer")
            out[f"{i}.weight"] = ((n, units), dt)
            out[f"{i}.bias"] = ((units,), dt)
            n = units
        elif kind == "BatchNorm":
            for t in ("weight", "bias", "running_mean", "running_var"):
                out[f"{i}.{t}"] = ((n,), dt)
        elif kind not in ("Activation", "Dropout"):
            raise CheckpointError(f"{path}: model config layer {i} has unknown type "
                                  f"{_short(kind)}")
    return out


def _check_declared(path, header: dict, declared: dict) -> None:
    """The file's model tensors are exactly the declared ones: checked before building."""
    itemsize = {name: np.dtype(dt).itemsize for name, (_, dt) in declared.items()}
    need = sum(math.prod(shape) * itemsize[k] for k, (shape, _) in declared.items())
    have = {k: e for k, e in header.items() if not k.startswith("optim.")}
    held = sum(e["data_offsets"][1] - e["data_offsets"][0] for e in have.values())
    if need > held:
        raise CheckpointError(f"{path}: the declared model ({need} bytes of parameters) "
                              f"is larger than the file's tensors ({held} bytes)")
    if set(have) != set(declared):
        missing = sorted(set(declared) - set(have))
        extra = sorted(set(have) - set(declared))
        raise CheckpointError(f"{path} does not hold the model it declares: missing "
                              f"{_short(missing, 200)}, unexpected {_short(extra, 200)}")
    for name, (shape, dt) in declared.items():
        entry = have[name]
        if tuple(entry["shape"]) != shape or np.dtype(_DTYPES[entry["dtype"]]) != dt:
            raise CheckpointError(f"{path}: tensor {name!r} is {entry['dtype']} "
                                  f"{tuple(entry['shape'])}, the model declares {dt} {shape}")


def _build(build, cfg: dict, path):
    """The model `build(cfg)` makes of a checked config; its errors name the file."""
    try:
        return build(cfg)
    except KeyError as exc:
        raise CheckpointError(f"{path}: model config is incomplete: missing {exc}") from None
    except (TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise CheckpointError(f"{path}: model config is invalid: {_short(str(exc), 300)}"
                              ) from None


def expected_tensors(model, optimizer=None) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    out = {k: (v.shape, v.dtype) for k, v in model.named_parameters().items()}
    if optimizer is not None:
        for name, size in optimizer.state_sizes(model.plan.n_params).items():
            out[f"optim.{name}"] = ((size,), model.dtype)
        out["optim.step"] = ((1,), np.dtype(np.int64))
    return out


def _check_against(path, header: dict, expected: dict) -> None:
    names = set(header)
    if names != set(expected):
        missing = sorted(set(expected) - names)
        extra = sorted(names - set(expected))
        raise CheckpointError(f"{path} does not match the declared model: missing "
                              f"{_short(missing, 200)}, unexpected {_short(extra, 200)}")
    for name, (shape, dtype) in expected.items():
        entry = header[name]
        if tuple(entry["shape"]) != tuple(shape) or _DTYPES[entry["dtype"]] != dtype:
            raise CheckpointError(f"{path}: tensor {name!r} is {entry['dtype']} "
                                  f"{tuple(entry['shape'])}, the model declares {dtype} {shape}")


def _read_tensors(path, header: dict, start: int) -> dict[str, np.ndarray]:
    out = {}
    try:
        with open(path, "rb") as f:
            for name, entry in header.items():
                a, b = entry["data_offsets"]
                f.seek(start + a)
                raw = f.read(b - a)
                if len(raw) != b - a:
                    raise CheckpointError(f"{path}: tensor {name!r} is truncated")
                dt = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
                out[name] = np.frombuffer(raw, dtype=dt).reshape(entry["shape"])
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({exc.strerror})") from None
    return out


# ------------------------------------------------------------------ checking values
def _check_model_values(path, tensors: dict, names) -> None:
    """Finite weights and statistics; running variances not negative."""
    for k in names:
        v = tensors[k]
        if not np.isfinite(v).all():
            raise CheckpointError(f"{path}: tensor {k!r} contains NaN or inf")
        if k.endswith(".running_var") and (v < 0).any():
            raise CheckpointError(f"{path}: tensor {k!r} (a variance) has negative entries")


def _check_optimizer_values(path, tensors: dict, step: int | None = None,
                            kind: int | None = None) -> None:
    """Finite state (momentum, moments, averages, sums: contract.OPT_STATE of `kind`);
    the sums and averages of squares not negative; a sane step."""
    meaning = dict(zip(OPT_SLOTS, OPT_STATE.get(kind, ()), strict=False))
    for slot in OPT_SLOTS:
        v = tensors.get(f"optim.{slot}")
        if v is None:
            continue
        what = meaning.get(slot, "optimizer state")
        if not np.isfinite(v).all():
            raise CheckpointError(f"{path}: optimizer state 'optim.{slot}' ({what}) contains "
                                  "NaN or inf")
        if what in OPT_NONNEGATIVE and (v < 0).any():
            raise CheckpointError(f"{path}: optimizer state 'optim.{slot}' ({what}) has "
                                  "negative entries")
    if "optim.step" in tensors:
        s = int(tensors["optim.step"][0])
        if s < 0:
            raise CheckpointError(f"{path}: optimizer state 'optim.step' is negative ({s})")
        if step is not None and s != step:
            raise CheckpointError(f"{path}: optimizer state 'optim.step' ({s}) disagrees with "
                                  f"the training position's step ({step})")


def _check_rng_state(path, state, like: np.random.Generator) -> dict:
    """A generator state `like`'s bit generator accepts, unchanged, as it was written."""
    where = f"{path}: training state 'rng'"
    name = type(like.bit_generator).__name__
    if not isinstance(state, dict):
        raise CheckpointError(f"{where} is {type(state).__name__}, not an object")
    if state.get("bit_generator") != name:
        raise CheckpointError(f"{where} is for {_short(state.get('bit_generator'))}, "
                              f"the model's generator is {name}")
    if name == "PCG64":
        inner = state.get("state")
        if set(state) != {"bit_generator", "state", "has_uint32", "uinteger"} \
                or not isinstance(inner, dict) or set(inner) != {"state", "inc"}:
            raise CheckpointError(f"{where} is malformed (keys {_short(sorted(state))})")
        for k in ("state", "inc"):
            if not (_is_int(inner[k]) and 0 <= inner[k] < 2**128):
                raise CheckpointError(f"{where}: {k} {_short(inner[k])} is not a 128-bit "
                                      "unsigned integer")
        if inner["inc"] % 2 != 1:
            raise CheckpointError(f"{where}: inc {inner['inc']} is even (PCG64's is odd)")
        if state["has_uint32"] not in (0, 1) or not _is_int(state["has_uint32"]):
            raise CheckpointError(f"{where}: has_uint32 {_short(state['has_uint32'])} is "
                                  "not 0 or 1")
        if not (_is_int(state["uinteger"]) and 0 <= state["uinteger"] < 2**32):
            raise CheckpointError(f"{where}: uinteger {_short(state['uinteger'])} is not a "
                                  "32-bit unsigned integer")
    probe = np.random.Generator(type(like.bit_generator)())
    try:
        probe.bit_generator.state = state
        ok = probe.bit_generator.state == state
    except Exception:  # noqa: BLE001 — any refusal of the bit generator is a bad file
        ok = False
    if not ok:
        raise CheckpointError(f"{where} is malformed")
    return state


def _check_training(path, training, rng_like: np.random.Generator | None) -> tuple:
    """(epoch, step, rng state, history) of a training position, every field checked.

    epoch: an int in [0, 2**53]. An epoch at or beyond the epochs a resumed fit asks for
    is accepted: that fit trains no further epoch and returns the saved history.
    history: a dict of lists of finite-or-NaN numbers, each of `epoch` entries (one per
    epoch, as fit records them).
    """
    if not isinstance(training, dict):
        raise CheckpointError(f"{path}: training state is {type(training).__name__}, "
                              "not an object")
    keys = {"epoch", "step", "rng", "history"} | ({EXTRA, WORLD} & set(training))
    if set(training) != keys:
        missing, extra = sorted(keys - set(training)), sorted(set(training) - keys)
        raise CheckpointError(f"{path}: training state is malformed: missing {missing}, "
                              f"unexpected {_short(extra)}")
    epoch, step, history = training["epoch"], training["step"], training["history"]
    if not (_is_int(epoch) and 0 <= epoch <= MAX_EPOCH):
        raise CheckpointError(f"{path}: training state 'epoch' {_short(epoch)} is not an "
                              f"integer in [0, 2**53]")
    if not (_is_int(step) and 0 <= step <= MAX_STEP):
        raise CheckpointError(f"{path}: training state 'step' {_short(step)} is not a "
                              "non-negative 64-bit integer")
    if not isinstance(history, dict):
        raise CheckpointError(f"{path}: training state 'history' is "
                              f"{type(history).__name__}, not an object of lists")
    clean = {}
    for k, values in history.items():
        where = f"{path}: training state 'history'[{_short(k)}]"
        if not isinstance(values, list):
            raise CheckpointError(f"{where} is {type(values).__name__}, not a list")
        if len(values) != epoch:
            raise CheckpointError(f"{where} has {len(values)} entries for {epoch} epochs")
        out = []
        for v in values:
            if not (isinstance(v, (int, float)) and not isinstance(v, bool)):
                raise CheckpointError(f"{where} holds {_short(v)}, not a number")
            try:
                f = float(v)
            except OverflowError:
                f = math.inf
            if math.isinf(f):
                raise CheckpointError(f"{where} holds {_short(v)}, not a finite number")
            out.append(f)
        clean[k] = out
    if WORLD in training:
        world = training[WORLD]
        if not (isinstance(world, dict) and set(world) == {"ranks", "batch_size"}
                and all(_is_int(v) and 1 <= v <= MAX_STEP for v in world.values())):
            raise CheckpointError(f"{path}: training state {WORLD!r} {_short(world)} is not "
                                  "{'ranks': K, 'batch_size': B} of positive integers")
    rng = training["rng"]
    if rng_like is not None:
        rng = _check_rng_state(path, rng, rng_like)
    return epoch, step, rng, clean


# ------------------------------------------------------------------ loading
def load_checkpoint(path, build, with_optimizer: bool = False, with_training: bool = True):
    """(model, optimizer or None, training dict or None) from a checkpoint, every shape and
    value checked before the model is built or filled.

    build(config) -> model makes the model the file declares (gradkern.model.from_config
    bound to a backend): this module reads and writes tensors and metadata and never
    imports the model. with_training=False ignores (and does not check) the training
    position, which `gk.load` does not return.
    """
    from . import optim as _optim

    header, meta, start = read_header(path)
    if "model" not in meta:
        raise CheckpointError(f"{path}: model config missing")
    cfg = _parse_json(path, meta["model"], "model config")
    # the declared architecture is checked against the file's tensors before it is built
    _check_declared(path, header, _declared_tensors(path, cfg))
    optimizer, opt_cfg, training = None, None, None
    if with_optimizer and "optimizer" in meta:
        opt_cfg = _parse_json(path, meta["optimizer"], "optimizer config")
        if not isinstance(opt_cfg, dict):
            raise CheckpointError(f"{path}: optimizer config is not an object")
        try:
            optimizer = _optim.from_config(opt_cfg)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise CheckpointError(f"{path}: optimizer config is invalid: "
                                  f"{_short(str(exc), 300)}") from None
    if with_training and "training" in meta:
        training = _parse_json(path, meta["training"], "training state", allow_nan=True)
        _check_training(path, training, np.random.default_rng())
    model = _build(build, cfg, path)
    expected = expected_tensors(model, optimizer)
    if not with_optimizer or optimizer is None:
        header = {k: v for k, v in header.items() if not k.startswith("optim.")}
    header = {k: v for k, v in header.items() if not k.startswith("callbacks.")}
    _check_against(path, header, expected)
    tensors = _read_tensors(path, header, start)
    params = model.named_parameters()
    _check_model_values(path, tensors, params)
    if optimizer is not None:
        _check_optimizer_values(path, tensors, None if training is None else training["step"],
                                optimizer.kind)
    for k, v in params.items():
        v[...] = tensors[k]
    if optimizer is not None:
        optimizer.bind(model.plan.n_params, model.dtype)
        optimizer.load_state_arrays({k[6:]: v for k, v in tensors.items()
                                     if k.startswith("optim.")})
    return model, optimizer, training


# ------------------------------------------------------------- resumable training
EXTRA = "scheduler_and_callbacks"  # the training state's key for _TrainState.save()
WORLD = "data_parallel"  # a distributed fit's {"ranks": K, "batch_size": B per rank}


def _world_text(world) -> str:
    if world is None:
        return "a single process (K=1)"
    k, b = world
    return f"K={k} ranks of batch_size {b} (global batches of {k * b})"


def save_training(model, optimizer, path, epoch: int, history: dict, extra=None,
                  world: tuple[int, int] | None = None) -> None:
    """A checkpoint fit can resume from: model, optimizer state, data order, position.
    extra (the trainer's _TrainState): the scheduler's and callbacks' positions, as
    training[EXTRA] and tensors 'callbacks.*'. world: (K ranks, per-rank batch_size) of a
    distributed fit (gradkern.distributed), recorded as training[WORLD]."""
    training = {"epoch": int(epoch), "step": int(optimizer.step[0]),
                "rng": model.rng.bit_generator.state, "history": history}
    if world is not None:
        training[WORLD] = {"ranks": int(world[0]), "batch_size": int(world[1])}
    arrays = None
    if extra is not None:
        training[EXTRA], arrays = extra.save()
    save_model(model, path, optimizer=optimizer, training=training, extra_tensors=arrays)


def restore_training(model, optimizer, path, extra=None,
                     world: tuple[int, int] | None = None) -> tuple[int, dict]:
    """Load a training checkpoint into this model and optimizer; (epochs done, history).

    The file must declare this model's architecture and an optimizer of the same kind.
    Everything is checked first — the header, the configs, the training position
    (`_check_training`), every tensor's values — and nothing on the model or the
    optimizer changes unless all of it checks out. A checkpoint whose epoch is at or
    beyond the epochs fit asks for resumes to that state and trains no further epoch.
    extra (the trainer's _TrainState): checks the saved scheduler and callback positions
    with the rest (`expected`, `check`), and loads them last (`load`).
    world: (K ranks, per-rank batch_size) of a distributed fit, None for one process; a
    file written with another number of ranks (a file without training[WORLD]: one
    process) is refused: its data order and steps are those of K ranks. A different
    batch_size with the same K is accepted, as it is in one process.
    """
    header, meta, start = read_header(path)
    for key in ("model", "optimizer", "training"):
        if key not in meta:
            raise CheckpointError(f"{path} holds a model but no training state to resume from"
                                  if key != "model" else f"{path}: model config missing")
    cfg = _parse_json(path, meta["model"], "model config")
    opt_cfg = _parse_json(path, meta["optimizer"], "optimizer config")
    training = _parse_json(path, meta["training"], "training state", allow_nan=True)
    mine = model.config()
    if cfg != mine:
        raise CheckpointError(f"{path} was written for another model: {_short(cfg, 300)} != "
                              f"{mine}")
    if not isinstance(opt_cfg, dict):
        raise CheckpointError(f"{path}: optimizer config is not an object")
    name = opt_cfg.get("name")
    if name != optimizer.config()["name"]:
        raise CheckpointError(f"{path} holds {name if isinstance(name, str) else _short(name)}"
                              f" state; resuming with {optimizer.config()['name']}")
    epoch, step, rng_state, history = _check_training(path, training, model.rng)
    saved = training.get(WORLD)
    saved = None if saved is None else (saved["ranks"], saved["batch_size"])
    if (1 if saved is None else saved[0]) != (1 if world is None else world[0]):
        raise CheckpointError(f"{path} was written by a fit on {_world_text(saved)}; this fit "
                              f"runs on {_world_text(world)}: resume with the same number of "
                              "ranks (mpiexec -n K ... fit(comm=...)), or start a new fit")
    key = (model.plan.n_params, np.dtype(model.dtype))
    optimizer.check_bindable(*key)  # what bind would refuse, before anything moves
    expected = expected_tensors(model, optimizer)
    saved_extra = training.get(EXTRA)
    if extra is not None:
        try:
            expected.update(extra.expected(saved_extra))
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{path}: {_short(str(exc), 300)}") from None
    else:
        header = {k: v for k, v in header.items() if not k.startswith("callbacks.")}
    _check_against(path, header, expected)
    tensors = _read_tensors(path, header, start)
    params = model.named_parameters()
    _check_model_values(path, tensors, params)
    _check_optimizer_values(path, tensors, step, optimizer.kind)
    extra_tensors = {k: v for k, v in tensors.items() if k.startswith("callbacks.")}
    if extra is not None:
        try:
            extra.check(saved_extra, extra_tensors)
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{path}: {_short(str(exc), 300)}") from None
    # everything checked: now set it
    optimizer.bind(*key)
    for k, v in params.items():
        v[...] = tensors[k]
    optimizer.load_state_arrays({k[6:]: v for k, v in tensors.items() if k.startswith("optim.")})
    model.rng.bit_generator.state = rng_state
    if extra is not None:
        extra.load(saved_extra, extra_tensors)
    return epoch, history
