"""Checkpoints: safetensors, atomic writes, every declared shape checked before loading."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

import gradkern as gk
from gradkern import checkpoint as ck


def _trained(backend, **kw):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 5)), rng.integers(0, 3, 40)
    m = gk.MLP([5, 8, 3], loss="cross_entropy", backend=backend, **kw)
    m.fit(X, y, epochs=3, batch_size=8, progress=False)
    return m, X


@pytest.mark.parametrize("kw", [{}, {"batchnorm": True, "dropout": 0.1, "dtype": "float64"}])
def test_save_load_roundtrip(backend, tmp_path, kw):
    m, X = _trained(backend, **kw)
    path = tmp_path / "m.safetensors"
    m.save(path)
    m2 = gk.load(path, backend=backend)
    assert type(m2) is gk.MLP and m2.config() == m.config()
    for k, v in m.named_parameters().items():
        np.testing.assert_array_equal(m2.named_parameters()[k], v)
    np.testing.assert_array_equal(m2.predict_proba(X), m.predict_proba(X))
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp files left


def test_sequential_roundtrip(tmp_path):
    m = gk.Sequential([gk.Dense(6), gk.GELU(), gk.Dropout(0.2), gk.Dense(2)], input_size=3,
                      loss="binary_cross_entropy", backend="numpy")
    m.save(tmp_path / "s.st")
    m2 = gk.load(tmp_path / "s.st")
    assert type(m2) is gk.Sequential and m2.config() == m.config()


def test_the_file_is_plain_safetensors(tmp_path):
    from safetensors.numpy import load_file

    m, _ = _trained("numpy")
    m.save(tmp_path / "m.st")
    tensors = load_file(tmp_path / "m.st")
    np.testing.assert_array_equal(tensors["0.weight"], m.named_parameters()["0.weight"])


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    m, _ = _trained("numpy")
    path = tmp_path / "m.st"
    m.save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="injected"):
        m.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.st"]


def _rewrite_header(path, edit):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    edit(header)
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + data[8 + n :])


def test_load_refuses_bad_files(tmp_path):
    m, _ = _trained("numpy")
    good = tmp_path / "good.st"
    m.save(good)
    data = good.read_bytes()

    (tmp_path / "trunc.st").write_bytes(data[:-10])
    with pytest.raises(ck.CheckpointError, match="truncated"):
        gk.load(tmp_path / "trunc.st")
    (tmp_path / "short.st").write_bytes(b"abc")
    with pytest.raises(ck.CheckpointError, match="too short"):
        gk.load(tmp_path / "short.st")
    (tmp_path / "other.st").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    with pytest.raises(ck.CheckpointError, match="not a gradkern checkpoint"):
        gk.load(tmp_path / "other.st")
    with pytest.raises(FileNotFoundError):
        gk.load(tmp_path / "missing.st")

    # a header that declares a different architecture than its tensors
    p = tmp_path / "arch.st"
    p.write_bytes(data)

    def narrow(h):
        cfg = json.loads(h["__metadata__"]["model"])
        cfg["layer_sizes"][1] = 7
        h["__metadata__"]["model"] = json.dumps(cfg)
    _rewrite_header(p, narrow)
    with pytest.raises(ck.CheckpointError, match="declares"):
        gk.load(p)

    # a header declaring a huge model must fail before anything of that size is allocated
    p = tmp_path / "huge.st"
    p.write_bytes(data)

    def huge(h):
        cfg = json.loads(h["__metadata__"]["model"])
        cfg["layer_sizes"] = [5, 2**20, 2**20, 3]
        h["__metadata__"]["model"] = json.dumps(cfg)
    _rewrite_header(p, huge)
    with pytest.raises(ck.CheckpointError, match="larger than the file"):
        gk.load(p)

    # a tensor whose declared dtype differs
    p = tmp_path / "dtype.st"
    p.write_bytes(data)
    _rewrite_header(p, lambda h: h["0.bias"].update(dtype="F64"))
    with pytest.raises(ck.CheckpointError):
        gk.load(p)
