"""Hostile and broken checkpoints (issue 10, items 4, 5, 9, 12).

4: resume checks every field before anything is set (model and optimizer bit-identical).
5: header entries tile the data exactly; the declared architecture is checked against the
   file before a model is built; running statistics are checked.
9: whatever is wrong with a file, the loader raises CheckpointError naming it.
12: stale temp files of a target are removed on its next save; saved files honour the umask.
Cases that could crash, hang or exhaust memory on a regression run in a subprocess.
"""

from __future__ import annotations

import json
import math
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradkern as gk
from gradkern import checkpoint as ck

TIMEOUT = 120  # seconds for a subprocess; each takes about one import of gradkern


# ------------------------------------------------------------------ helpers
def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((24, 4)), rng.integers(0, 3, 24)


def _model(backend, **kw):
    return gk.MLP([4, 5, 3], loss="cross_entropy", backend=backend, seed=1, batchnorm=True,
                  **kw)


def _training_file(tmp_path, backend, make_opt=lambda: gk.optim.Adam(lr=1e-2), name="ck.st"):
    X, y = _data()
    path = tmp_path / name
    _model(backend).fit(X, y, epochs=2, batch_size=8, optimizer=make_opt(), progress=False,
                        checkpoint=path)
    return path


def _split(path):
    """(header without metadata, metadata, data bytes) of a safetensors file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__")
    return header, meta, raw[8 + n :]


def _join(path, header, meta, data: bytes, raw_header: bytes | None = None):
    """Write a file from parts, as given (no checks: the point is to write bad files)."""
    if raw_header is None:
        h = dict(header)
        if meta is not None:
            h["__metadata__"] = meta
        raw_header = json.dumps(h).encode()
    path.write_bytes(struct.pack("<Q", len(raw_header)) + raw_header + data)


def _tensors(path):
    from safetensors.numpy import load_file

    return {k: v.copy() for k, v in load_file(path).items()}


def _save_tensors(path, tensors, meta):
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata=meta)


def _state(model, opt):
    """Every bit of model and optimizer state fit(resume=...) could touch."""
    def b(a):
        return None if a is None else (a.dtype.str, a.shape, a.tobytes())
    return (b(model.bufs.params), b(model.bufs.state),
            json.dumps(model._rng.bit_generator.state), b(opt.buf1), b(opt.buf2),
            b(opt.step), opt._owner)


def _run(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                          capture_output=True, text=True, timeout=TIMEOUT,
                          env=dict(os.environ, GRADKERN_BACKEND="numpy"))


# ================================================================== item 4: resume
def _set(name, value):
    def edit(tensors, training):
        tensors[name] = np.full_like(tensors[name], value)
    return edit


def _poke(name, value, at=0):
    def edit(tensors, training):
        tensors[name].reshape(-1)[at] = value
    return edit


def _train(key, value):
    def edit(tensors, training):
        training[key] = value(training) if callable(value) else value
    return edit


def _rng(mutate):
    def edit(tensors, training):
        mutate(training["rng"])
    return edit


def _history(value):
    return _train("history", value)


RESUME_CASES = {
    # weights and statistics
    "weight_nan": (_poke("0.weight", np.nan), "'0.weight'"),
    "bias_inf": (_poke("3.bias", np.inf), "'3.bias'"),
    "gamma_ninf": (_poke("1.weight", -np.inf, at=2), "'1.weight'"),
    "running_mean_nan": (_poke("1.running_mean", np.nan), "'1.running_mean'"),
    "running_var_negative": (_poke("1.running_var", -0.5), "'1.running_var'"),
    "running_var_inf": (_poke("1.running_var", np.inf), "'1.running_var'"),
    # Adam moments and step
    "m_nan": (_poke("optim.buf1", np.nan, at=7), "'optim.buf1'"),
    "m_inf": (_poke("optim.buf1", np.inf), "'optim.buf1'"),
    "v_nan": (_poke("optim.buf2", np.nan, at=3), "'optim.buf2'"),
    "v_inf": (_poke("optim.buf2", np.inf), "'optim.buf2'"),
    "v_negative": (_poke("optim.buf2", -1e-3, at=5), "'optim.buf2'"),
    "step_tensor_negative": (_set("optim.step", -4), "'optim.step' is negative"),
    "step_tensor_disagrees": (_set("optim.step", 99), "'optim.step'.*disagrees"),
    # training position
    "step_negative": (_train("step", -1), "'step'"),
    "step_float": (_train("step", 6.5), "'step'"),
    "step_string": (_train("step", "6"), "'step'"),
    "step_huge": (_train("step", 2**70), "'step'"),
    "epoch_negative": (_train("epoch", -1), "'epoch'"),
    "epoch_1e18_float": (_train("epoch", 1e18), "'epoch'"),
    "epoch_beyond_2_53": (_train("epoch", 2**53 + 1), "'epoch'"),
    "epoch_10_18": (_train("epoch", 10**18), "'epoch'"),
    "epoch_float": (_train("epoch", 2.0), "'epoch'"),
    "epoch_bool": (_train("epoch", True), "'epoch'"),
    "epoch_null": (_train("epoch", None), "'epoch'"),
    "training_missing_rng": (lambda t, tr: tr.pop("rng"), "missing \\['rng'\\]"),
    "training_extra_key": (_train("extra", 1), "unexpected"),
    # history
    "history_list": (_history([1.0, 2.0]), "'history'"),
    "history_string": (_history("loss"), "'history'"),
    "history_values_not_lists": (_history(lambda tr: {"loss": 0.5}), "'history'\\['loss'\\]"),
    "history_dict_values": (_history(lambda tr: {"loss": {"a": 1}}), "'history'\\['loss'\\]"),
    "history_strings": (_history(lambda tr: {"loss": ["x", "y"]}), "'history'\\['loss'\\]"),
    "history_bools": (_history(lambda tr: {"loss": [True, False]}), "'history'\\['loss'\\]"),
    "history_nested": (_history(lambda tr: {"loss": [[1.0], [2.0]]}), "'history'\\['loss'\\]"),
    "history_inf": (_history(lambda tr: {"loss": [1.0, math.inf]}), "'history'\\['loss'\\]"),
    "history_huge_int": (_history(lambda tr: {"loss": [1.0, 10**400]}),
                         "'history'\\['loss'\\]"),
    "history_ragged": (_history(lambda tr: dict(tr["history"], loss=[1.0])),
                       "'history'\\['loss'\\]"),
    "history_too_long": (_history(lambda tr: {k: v * 2 for k, v in tr["history"].items()}),
                         "'history'"),
    # the data-order generator
    "rng_string": (_train("rng", "PCG64"), "'rng'"),
    "rng_other_generator": (_rng(lambda s: s.update(bit_generator="MT19937")), "'rng'"),
    "rng_state_negative": (_rng(lambda s: s["state"].update(state=-1)), "'rng'"),
    "rng_state_too_big": (_rng(lambda s: s["state"].update(inc=2**200 + 1)), "'rng'"),
    "rng_state_float": (_rng(lambda s: s["state"].update(state=1.5)), "'rng'"),
    "rng_inc_even": (_rng(lambda s: s["state"].update(inc=2)), "'rng'"),
    "rng_has_uint32": (_rng(lambda s: s.update(has_uint32=5)), "'rng'"),
    "rng_uinteger": (_rng(lambda s: s.update(uinteger=-3)), "'rng'"),
    "rng_missing_key": (_rng(lambda s: s.pop("uinteger")), "'rng'"),
    "rng_extra_key": (_rng(lambda s: s.update(extra=0)), "'rng'"),
    "rng_inner_not_dict": (_rng(lambda s: s.update(state=[1, 2])), "'rng'"),
}


def _corrupt(path, edit):
    tensors = _tensors(path)
    _, meta, _ = _split(path)
    training = json.loads(meta["training"])
    result = edit(tensors, training)
    if isinstance(result, dict) and set(result) == {"replace"}:
        training = result["replace"]
    meta["training"] = json.dumps(training)
    _save_tensors(path, tensors, meta)


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resume_refuses_and_changes_nothing(backend, tmp_path, case):
    edit, field = RESUME_CASES[case]
    path = _training_file(tmp_path, backend)
    _corrupt(path, edit)
    X, y = _data()
    model, opt = _model(backend), gk.optim.Adam(lr=1e-2)
    model.fit(X, y, epochs=1, batch_size=8, optimizer=opt, progress=False)  # some state
    before = _state(model, opt)
    with pytest.raises(ck.CheckpointError, match=field):
        model.fit(X, y, epochs=4, batch_size=8, optimizer=opt, progress=False, resume=path)
    assert _state(model, opt) == before


@pytest.mark.parametrize("case", ["weight_nan", "v_negative", "epoch_10_18", "rng_state_negative",
                                  "history_ragged"])
def test_resume_leaves_a_fresh_optimizer_unbound(tmp_path, case):
    path = _training_file(tmp_path, "numpy")
    _corrupt(path, RESUME_CASES[case][0])
    X, y = _data()
    model, opt = _model("numpy"), gk.optim.Adam(lr=1e-2)
    before = _state(model, opt)
    with pytest.raises(ck.CheckpointError):
        model.fit(X, y, epochs=4, batch_size=8, optimizer=opt, progress=False, resume=path)
    assert _state(model, opt) == before
    assert opt.buf1 is None and opt.state_arrays() == {}


@pytest.mark.parametrize("edit,field", [(_poke("optim.buf1", np.nan), "'optim.buf1'"),
                                        (_poke("optim.buf1", -np.inf, at=4), "'optim.buf1'")],
                         ids=["nan", "ninf"])
def test_resume_refuses_a_bad_momentum_buffer(backend, tmp_path, edit, field):
    sgd = lambda: gk.optim.SGD(lr=0.05, momentum=0.9)  # noqa: E731
    path = _training_file(tmp_path, backend, make_opt=sgd)
    _corrupt(path, edit)
    X, y = _data()
    model, opt = _model(backend), sgd()
    model.fit(X, y, epochs=1, batch_size=8, optimizer=opt, progress=False)
    before = _state(model, opt)
    with pytest.raises(ck.CheckpointError, match=field):
        model.fit(X, y, epochs=4, batch_size=8, optimizer=opt, progress=False, resume=path)
    assert _state(model, opt) == before


def test_resume_refuses_a_training_state_that_is_not_an_object(tmp_path):
    path = _training_file(tmp_path, "numpy")
    _, meta, _ = _split(path)
    tensors = _tensors(path)
    X, y = _data()
    for training, field in (("[1, 2]", "training state is list"),
                            ('"x"', "training state is str"),
                            ("{", "training state is not valid JSON"),
                            ('{"epoch": NaN}', "training state is malformed")):
        meta["training"] = training
        _save_tensors(path, tensors, meta)
        model, opt = _model("numpy"), gk.optim.Adam(lr=1e-2)
        before = _state(model, opt)
        with pytest.raises(ck.CheckpointError, match=field):
            model.fit(X, y, epochs=4, batch_size=8, optimizer=opt, progress=False, resume=path)
        assert _state(model, opt) == before


def test_resume_accepts_nan_in_history(tmp_path):
    """History figures are finite or NaN (NaN is a legitimate "no value")."""
    path = _training_file(tmp_path, "numpy")
    _corrupt(path, _history(lambda tr: dict(tr["history"], loss=[math.nan, 0.5])))
    X, y = _data()
    h = _model("numpy").fit(X, y, epochs=3, batch_size=8, optimizer=gk.optim.Adam(lr=1e-2),
                            progress=False, resume=path)
    assert math.isnan(h["loss"][0]) and h["loss"][1] == 0.5 and len(h["loss"]) == 3


def test_resume_at_or_beyond_the_requested_epochs_trains_nothing(backend, tmp_path):
    """Defined behaviour: a checkpoint at epoch E resumed by fit(epochs <= E) loads that
    state and runs no epoch; the history is the saved one (E entries)."""
    path = _training_file(tmp_path, backend)  # epoch 2
    saved = _tensors(path)
    X, y = _data()
    model = _model(backend)
    h = model.fit(X, y, epochs=1, batch_size=8, optimizer=gk.optim.Adam(lr=1e-2),
                  progress=False, resume=path)
    assert h.epochs_run == 2 and len(h["loss"]) == 2
    for k, v in model.named_parameters().items():
        np.testing.assert_array_equal(v, saved[k], err_msg=k)


# ================================================================== item 5: size guard
def test_declared_tensors_match_the_built_model():
    """The pre-build check derives tensors from the config; it must agree with the model."""
    models = [gk.MLP([3, 2]), gk.MLP([4, 6, 5, 2], batchnorm=True, dropout=0.1),
              gk.MLP([4, 6, 2], dropout=0.3, dtype="float64"),
              gk.Sequential([gk.Dense(5), gk.BatchNorm(), gk.GELU(), gk.Dropout(0.2),
                             gk.Dense(4), gk.BatchNorm(), gk.Dense(2)], input_size=3)]
    for m in models:
        got = ck._declared_tensors("p", json.loads(json.dumps(m.config())))
        want = {k: (tuple(s), np.dtype(d)) for k, (s, d) in ck.expected_tensors(m).items()}
        assert got == want, m


def _entries_file(tmp_path, name, layer_sizes, entries, data_len):
    """A file whose metadata declares an MLP of `layer_sizes` and whose header lists
    `entries` (name -> (shape, [start, end])) over `data_len` zero bytes."""
    cfg = gk.MLP([4, 1], backend="numpy").config()
    cfg.update(layer_sizes=layer_sizes, input_size=layer_sizes[0],
               layers=[{"type": "Dense", "units": layer_sizes[-1]}])
    meta = {"format": "gradkern", "version": "1", "model": json.dumps(cfg)}
    header = {k: {"dtype": "F32", "shape": s, "data_offsets": o} for k, (s, o) in entries.items()}
    path = tmp_path / name
    _join(path, header, meta, bytes(data_len))
    return path


MB4 = 4_000_000
HUGE_CASES = {
    # the issue's bypass: overlapping entries inflate the byte count past the declared size
    "overlapping": ({"0.weight": ([MB4 // 4, 1], [0, MB4]), "0.bias": ([1], [MB4, MB4 + 4]),
                     **{f"pad{i}": ([MB4 // 4], [0, MB4]) for i in range(260)}},
                    "overlaps"),
    # honest entries of a 4 MB model: the declared 1 GB one is larger than the file
    "honest": ({"0.weight": ([MB4 // 4, 1], [0, MB4]), "0.bias": ([1], [MB4, MB4 + 4])},
               "larger than the file"),
    # entries of the declared shapes, pointing past the end of a 4 MB file
    "lying_offsets": ({"0.weight": ([250_000_000, 1], [0, 10**9]),
                       "0.bias": ([1], [10**9, 10**9 + 4])}, "truncated"),
}


@pytest.mark.parametrize("case", sorted(HUGE_CASES))
def test_small_file_declaring_a_huge_model_fails_fast_without_allocating(tmp_path, case):
    entries, message = HUGE_CASES[case]
    path = _entries_file(tmp_path, "huge.st", [250_000_000, 1], entries, MB4 + 4)
    assert path.stat().st_size < 5 * 2**20
    # in a subprocess whose address space is capped ~600 MB above what imports use, so a
    # regression that builds the 1 GB model fails there instead of exhausting the machine
    done = _run("""
        import json, resource, sys, tracemalloc
        import gradkern as gk
        vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize"))
        cap = vm * 1024 + 600 * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
        tracemalloc.start()
        try:
            gk.load(sys.argv[1], backend="numpy")
            out = {"type": None, "msg": ""}
        except BaseException as exc:
            out = {"type": type(exc).__name__, "msg": str(exc)}
        out["peak"] = tracemalloc.get_traced_memory()[1]
        print(json.dumps(out))
    """, path)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["type"] == "CheckpointError", out
    assert message in out["msg"]
    assert out["peak"] < 50 * 2**20, f"{out['peak'] / 2**20:.1f} MiB traced while refusing"


def _good_file(tmp_path, name="good.st", backend="numpy"):
    X, y = _data()
    m = _model(backend)
    m.fit(X, y, epochs=1, batch_size=8, progress=False)
    path = tmp_path / name
    m.save(path)
    return path


def _edit_entries(src, dst, edit, data_edit=None):
    header, meta, data = _split(src)
    edit(header)
    _join(dst, header, meta, data if data_edit is None else data_edit(data))
    return dst


def _shift_all(header, by):
    for e in header.values():
        e["data_offsets"] = [e["data_offsets"][0] + by, e["data_offsets"][1] + by]


@pytest.mark.parametrize("edit,data_edit,message", [
    (lambda h: h.update(extra={"dtype": "F32", "shape": [2],
                               "data_offsets": h["0.bias"]["data_offsets"][:1]
                               + [h["0.bias"]["data_offsets"][0] + 8]}), None, "overlaps"),
    (lambda h: _shift_all(h, 8), lambda d: bytes(8) + d, "belong to no tensor"),
    (lambda h: None, lambda d: d + bytes(12), "after the last tensor"),
    (lambda h: None, lambda d: d[:-4], "truncated"),
    (lambda h: h["0.bias"].update(data_offsets=[10**12, 10**12 + 20]), None, "overlaps|no tensor"),
], ids=["overlap", "gap", "trailing", "short", "far"])
def test_entries_must_tile_the_data(tmp_path, edit, data_edit, message):
    src = _good_file(tmp_path)
    gk.load(src)
    bad = _edit_entries(src, tmp_path / "bad.st", edit, data_edit)
    with pytest.raises(ck.CheckpointError, match=message):
        gk.load(bad)


@pytest.mark.parametrize("name,value,message", [
    ("1.running_var", -1.0, "'1.running_var'.*negative"),
    ("1.running_var", np.inf, "'1.running_var'.*NaN or inf"),
    ("1.running_var", np.nan, "'1.running_var'.*NaN or inf"),
    ("1.running_mean", np.nan, "'1.running_mean'.*NaN or inf"),
    ("1.running_mean", -np.inf, "'1.running_mean'.*NaN or inf"),
])
def test_load_refuses_bad_running_statistics(backend, tmp_path, name, value, message):
    path = _good_file(tmp_path, backend=backend)
    tensors = _tensors(path)
    tensors[name][1] = value
    _save_tensors(path, tensors, _split(path)[1])
    with pytest.raises(ck.CheckpointError, match=message):
        gk.load(path, backend=backend)


# ================================================================== item 9: clear errors
def _meta_model_edit(fn):
    def edit(h, meta):
        cfg = json.loads(meta["model"])
        meta["model"] = json.dumps(fn(cfg))
    return edit


def _raw_header(text: bytes):
    return lambda h, meta: text


HEADER_CASES = {
    "metadata_string": (lambda h, m: {**h, "__metadata__": "gradkern"}, "__metadata__"),
    "metadata_list": (lambda h, m: {**h, "__metadata__": [1]}, "__metadata__"),
    "metadata_values_not_strings": (lambda h, m: {**h, "__metadata__": {**m, "model": {}}},
                                    "__metadata__"),
    "header_list": (lambda h, m: [h], "header is list"),
    "entry_string": (lambda h, m: {**h, "__metadata__": m, "0.bias": "x"}, "'0.bias'.*entry"),
    "entry_extra_key": (lambda h, m: {**h, "__metadata__": m,
                                      "0.bias": {**h["0.bias"], "x": 1}}, "'0.bias'.*keys"),
    "float_offsets": (lambda h, m: {**h, "__metadata__": m, "0.bias": {
        **h["0.bias"], "data_offsets": [float(o) for o in h["0.bias"]["data_offsets"]]}},
        "'0.bias'.*data_offsets"),
    "three_offsets": (lambda h, m: {**h, "__metadata__": m, "0.bias": {
        **h["0.bias"], "data_offsets": [0, 1, 2]}}, "'0.bias'.*data_offsets"),
    "string_shape": (lambda h, m: {**h, "__metadata__": m, "0.bias": {
        **h["0.bias"], "shape": "5"}}, "'0.bias'.*shape"),
    "negative_shape": (lambda h, m: {**h, "__metadata__": m, "0.bias": {
        **h["0.bias"], "shape": [-5]}}, "'0.bias'.*shape"),
    "float_shape": (lambda h, m: {**h, "__metadata__": m, "0.bias": {
        **h["0.bias"], "shape": [5.0]}}, "'0.bias'.*shape"),
    "unknown_dtype": (lambda h, m: {**h, "__metadata__": m, "0.bias": {
        **h["0.bias"], "dtype": "F16"}}, "'0.bias'.*dtype"),
    "list_dtype": (lambda h, m: {**h, "__metadata__": m, "0.bias": {
        **h["0.bias"], "dtype": ["F32"]}}, "'0.bias'.*dtype"),
    "huge_shape": (lambda h, m: {**h, "__metadata__": m, "0.bias": {
        **h["0.bias"], "shape": [2**80]}}, "'0.bias'.*data_offsets"),
    "model_not_json": (lambda h, m: {**h, "__metadata__": {**m, "model": "{"}},
                       "model config is not valid JSON"),
    "model_a_string": (lambda h, m: {**h, "__metadata__": {**m, "model": '"MLP"'}},
                       "model config is str"),
    "model_missing": (lambda h, m: {**h, "__metadata__": {k: v for k, v in m.items()
                                                          if k != "model"}}, "model config"),
    "model_no_class": (_meta_model_edit(lambda c: {k: v for k, v in c.items() if k != "class"}),
                       "missing 'class'"),
    "model_unknown_class": (_meta_model_edit(lambda c: {**c, "class": "CNN"}), "CNN"),
    "model_bad_sizes": (_meta_model_edit(lambda c: {**c, "layer_sizes": "4,5,3"}),
                        "layer_sizes"),
    "model_float_sizes": (_meta_model_edit(lambda c: {**c, "layer_sizes": [4.0, 5, 3]}),
                          "layer_sizes"),
    "model_huge_size": (_meta_model_edit(lambda c: {**c, "layer_sizes": [4, 10**300, 3]}),
                        "larger than the file"),
    "model_bad_dtype": (_meta_model_edit(lambda c: {**c, "dtype": "float16"}), "dtype"),
    "model_bad_activation": (_meta_model_edit(lambda c: {**c, "activation": "swish"}),
                             "model config is invalid.*swish"),
    "model_bad_loss": (_meta_model_edit(lambda c: {**c, "loss": 7}), "model config is invalid"),
    "model_nan": (lambda h, m: {**h, "__metadata__": {
        **m, "model": m["model"].replace('"dropout": 0.0', '"dropout": NaN')}},
        "model config is not valid JSON.*NaN"),
    "duplicate_key": (_raw_header(None), "duplicate"),  # built in the test
    "not_utf8": (_raw_header(b'{"__metadata__": {"format": "gradkern\xff\xfe"}}'), "UTF-8"),
    "not_json": (_raw_header(b"{not json at all}"), "header is not valid JSON"),
    "huge_integer": (_raw_header(b'{"a": ' + b"9" * 5000 + b"}"), "header is not valid JSON"),
    "huge_float": (_raw_header(b'{"__metadata__": {"format": "gradkern", "version": "1"}, '
                               b'"x": {"dtype": "F32", "shape": [1e400], '
                               b'"data_offsets": [0, 4]}}'), "'x'.*shape"),
    "huge_offset_float": (_raw_header(b'{"__metadata__": {"format": "gradkern", "version": "1"},'
                                      b' "x": {"dtype": "F32", "shape": [1], '
                                      b'"data_offsets": [0, 1e400]}}'), "'x'.*data_offsets"),
    "empty_header": (_raw_header(b""), "header is not valid JSON"),
    "wrong_format": (lambda h, m: {**h, "__metadata__": {**m, "format": "pytorch"}},
                     "format 'pytorch'"),
    "wrong_version": (lambda h, m: {**h, "__metadata__": {**m, "version": "99"}},
                      "version '99'"),
}


def _header_case_file(tmp_path, case):
    src = _good_file(tmp_path)
    header, meta, data = _split(src)
    edit = HEADER_CASES[case][0]
    if case == "duplicate_key":
        text = json.dumps({"__metadata__": meta, **header})
        first = next(iter(header))
        raw = text[:-1] + f', "{first}": ' + json.dumps(header[first]) + "}"
        new = raw.encode()
    else:
        result = edit(header, meta)
        if isinstance(result, bytes):
            new = result
        elif result is None:  # edited in place
            new = json.dumps({**header, "__metadata__": meta}).encode()
        else:
            new = json.dumps(result).encode()
    path = tmp_path / "bad.st"
    _join(path, None, None, data, raw_header=new)
    return path


@pytest.mark.parametrize("case", sorted(HEADER_CASES))
def test_bad_headers_are_checkpoint_errors(tmp_path, case):
    path = _header_case_file(tmp_path, case)
    message = HEADER_CASES[case][1]
    with pytest.raises(ck.CheckpointError, match=message):
        gk.load(path)
    with pytest.raises(ck.CheckpointError):
        gk.load_checkpoint(path, with_optimizer=True)


def test_bad_files_name_the_problem(tmp_path):
    src = _good_file(tmp_path)
    raw = src.read_bytes()
    with pytest.raises(ck.CheckpointError, match="is a directory"):
        gk.load(tmp_path)
    beyond = tmp_path / "beyond.st"
    beyond.write_bytes(struct.pack("<Q", len(raw)) + raw[8:])
    with pytest.raises(ck.CheckpointError, match="beyond the end"):
        gk.load(beyond)
    big = tmp_path / "big.st"
    big.write_bytes(struct.pack("<Q", 2**63) + raw[8:])
    with pytest.raises(ck.CheckpointError, match="bad header length"):
        gk.load(big)
    empty = tmp_path / "empty.st"
    empty.write_bytes(b"")
    with pytest.raises(ck.CheckpointError, match="too short"):
        gk.load(empty)
    with pytest.raises(FileNotFoundError):
        gk.load(tmp_path / "missing.st")


def test_bad_optimizer_config_is_a_checkpoint_error(tmp_path):
    path = _training_file(tmp_path, "numpy")
    tensors = _tensors(path)
    _, meta, _ = _split(path)
    for opt, message in (('"Adam"', "optimizer config is not an object"),
                         ('{"name": "Adam", "lr": -1}', "optimizer config is invalid"),
                         ('{"name": "Adam", "warp": 9}', "optimizer config is invalid"),
                         ('{"name": "Rprop"}', "optimizer config is invalid"),
                         ('{"lr": 1}', "optimizer config is invalid")):
        meta["optimizer"] = opt
        _save_tensors(path, tensors, meta)
        with pytest.raises(ck.CheckpointError, match=message):
            gk.load_checkpoint(path, with_optimizer=True)


def test_load_checkpoint_checks_optimizer_values(tmp_path):
    path = _training_file(tmp_path, "numpy")
    _corrupt(path, _poke("optim.buf2", -1.0))
    gk.load(path)  # the model itself is fine
    with pytest.raises(ck.CheckpointError, match="'optim.buf2'"):
        gk.load_checkpoint(path, with_optimizer=True)
    path = _training_file(tmp_path, "numpy", name="ck2.st")
    model, opt, training = gk.load_checkpoint(path, with_optimizer=True)
    assert type(opt) is gk.optim.Adam and training["epoch"] == 2
    assert int(opt.step[0]) == training["step"] > 0


_CRASHY = """
    import json, sys
    import gradkern as gk
    from gradkern import checkpoint as ck
    results = {}
    for path in sys.argv[1:]:
        try:
            gk.load(path, backend="numpy")
            gk.load_checkpoint(path, backend="numpy", with_optimizer=True)
            results[path] = "loaded"
        except ck.CheckpointError as exc:
            results[path] = "CheckpointError: " + str(exc)[-300:]
        except BaseException as exc:
            results[path] = type(exc).__name__ + ": " + str(exc)[-300:]
    print(json.dumps(results))
"""


def test_crash_prone_files_in_a_subprocess(tmp_path):
    """Deep nesting (RecursionError in the parser or any later repr), a FIFO (an open()
    that blocks forever): each must be a CheckpointError, and a regression must fail this
    test rather than take pytest down."""
    src = _good_file(tmp_path)
    header, meta, data = _split(src)
    cases = {}
    deep = b"[" * 200_000 + b"]" * 200_000
    cases["deep_header"] = (b'{"a": ' + deep + b"}", "nested too deeply")
    cases["deep_header_900"] = (b'{"a": ' + b"[" * 900 + b"]" * 900 + b"}", "")
    for depth in (900, 200_000):
        m = dict(meta, model="[" * depth + "]" * depth)
        cases[f"deep_model_{depth}"] = (json.dumps({**header, "__metadata__": m}).encode(),
                                        "model config")
        cfg = json.loads(meta["model"])
        deep_cfg = json.dumps(cfg)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
        m = dict(meta, model=deep_cfg)
        cases[f"deep_in_config_{depth}"] = (json.dumps({**header, "__metadata__": m}).encode(),
                                            None if depth == 900 else "nested too deeply")
        m = dict(meta, training="{" * depth + "}" * depth)
        cases[f"deep_training_{depth}"] = (json.dumps({**header, "__metadata__": m}).encode(),
                                           "training state")
    paths = []
    for name, (raw_header, _) in cases.items():
        p = tmp_path / f"{name}.st"
        _join(p, None, None, data, raw_header=raw_header)
        paths.append(str(p))
    fifo = tmp_path / "fifo.st"
    os.mkfifo(fifo)
    paths.append(str(fifo))
    done = _run(_CRASHY, *paths)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for name, (_, message) in cases.items():
        got = results[str(tmp_path / f"{name}.st")]
        if message is None:  # an unknown key in the model config may load; it must not crash
            assert got == "loaded" or got.startswith("CheckpointError: "), (name, got)
            continue
        assert got.startswith("CheckpointError: "), (name, got)
        assert message in got, (name, got)
    assert results[str(fifo)].startswith("CheckpointError: ")
    assert "not a regular file" in results[str(fifo)]


_FUZZ = {}


def _fuzz_base(tmp_path_factory):
    if "raw" not in _FUZZ:
        d = tmp_path_factory.mktemp("fuzz")
        path = _training_file(d, "numpy")
        _FUZZ["raw"] = path.read_bytes()
        _FUZZ["dir"] = d
    return _FUZZ["raw"], _FUZZ["dir"]


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_checkpoints_give_checkpoint_error_or_load(tmp_path_factory, data):
    """Random byte edits (mostly in the header), insertions, deletions and truncations of
    a valid training checkpoint: every loader either succeeds or raises CheckpointError;
    a refused resume leaves the model and optimizer as they were."""
    raw, d = _fuzz_base(tmp_path_factory)
    (n,) = struct.unpack("<Q", raw[:8])
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 6), label="edits")):
        kind = data.draw(st.sampled_from(["byte", "byte", "byte", "insert", "delete"]))
        hi = 8 + n if data.draw(st.booleans(), label="in header") else len(buf)
        at = data.draw(st.integers(0, max(0, min(hi, len(buf)) - 1)), label="at")
        if kind == "byte" and buf:
            buf[at] = data.draw(st.sampled_from(
                list(b'{}[]",:0123456789-.eE ntfa\\\x00\xff') + [data.draw(st.integers(0, 255))]))
        elif kind == "insert":
            buf[at:at] = data.draw(st.sampled_from([b"[", b"{", b'"', b",", b"9" * 30, b"-",
                                                    b"1e400", b"NaN", b" "]))
        elif buf:
            del buf[at : at + data.draw(st.integers(1, 8))]
    if data.draw(st.booleans(), label="truncate"):
        buf = buf[: data.draw(st.integers(0, len(buf)))]
    path = d / "fuzz.st"
    path.write_bytes(bytes(buf))
    for load in (lambda: gk.load(path, backend="numpy"),
                 lambda: gk.load_checkpoint(path, backend="numpy", with_optimizer=True)):
        try:
            load()
        except ck.CheckpointError:
            pass
    X, y = _data()
    model, opt = _model("numpy"), gk.optim.Adam(lr=1e-2)
    before = _state(model, opt)
    try:
        model.fit(X, y, epochs=3, batch_size=8, optimizer=opt, progress=False, resume=path)
    except ck.CheckpointError:
        assert _state(model, opt) == before
    except gk.TrainingDiverged:  # weights edited to huge but finite values: a valid file
        pass


# ================================================================== item 12: litter, mode
def _temps(directory, target="m.st"):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(f".{target}.tmp-"))


_KILL_DURING_SAVE = """
    import os, signal, sys
    import gradkern as gk
    m = gk.MLP([4, 64, 3], backend="numpy", seed=2)
    m.save(sys.argv[1])                      # a good file first
    print(os.getpid(), flush=True)
    def die(*a, **k):                        # after the temp file is written and fsynced,
        os.kill(os.getpid(), signal.SIGKILL)  # before os.replace: the worst moment
    os.replace = die
    gk.MLP([4, 64, 3], backend="numpy", seed=3).save(sys.argv[1])
    print("not reached", flush=True)
"""


def test_kill_9_during_save_leaves_a_temp_file_the_next_save_removes(tmp_path):
    path = tmp_path / "m.st"
    done = _run(_KILL_DURING_SAVE, path)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    child = int(done.stdout.split()[0])
    assert "not reached" not in done.stdout
    # the interrupted write left its temp file (named after the target and its writer)...
    temps = _temps(tmp_path)
    assert len(temps) == 1 and temps[0].startswith(f".m.st.tmp-{child}-"), temps
    assert (tmp_path / temps[0]).stat().st_size > 0
    # ...and the previous file intact
    old = gk.load(path, backend="numpy")
    ref = gk.MLP([4, 64, 3], backend="numpy", seed=2)
    for k, v in ref.named_parameters().items():
        np.testing.assert_array_equal(old.named_parameters()[k], v)
    other = tmp_path / f".other.st.tmp-{child}-{ck._host_tag()}-00000000"
    other.write_bytes(b"another target's temp file")
    gk.MLP([4, 3], backend="numpy").save(path)  # the next save of the same target
    assert _temps(tmp_path) == []
    assert other.exists()  # not this target's: left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "m.st"]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temp_cleanup_spares_live_writers(tmp_path):
    host = ck._host_tag()
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _check_cleanup(tmp_path, host, _dead_pid(), writer.pid)
    finally:
        writer.kill()
        writer.wait()


def _check_cleanup(tmp_path, host, dead, live):
    old = time.time() - ck.STALE_TEMP_SECONDS - 60
    files = {
        f".m.st.tmp-{dead}-{host}-1a2b3c4d": ("fresh", False),      # dead writer: removed
        f".m.st.tmp-{live}-{host}-1a2b3c4d": ("fresh", True),       # live writer: kept
        f".m.st.tmp-{os.getpid()}-{host}-99": ("fresh", True),      # this process: kept
        f".m.st.tmp-{live}-{host}-5e6f7a8b": ("old", False),        # too old: removed
        f".m.st.tmp-{dead}-0badc0de-1a2b3c4d": ("fresh", True),     # another host: kept
        f".m.st.tmp-{dead}-0badc0de-5e6f7a8b": ("old", False),      # another host, old
        f".m.st.tmp-0-{host}-1a2b3c4d": ("fresh", False),           # pid 0: no writer
        f".mm.st.tmp-{dead}-{host}-1a2b3c4d": ("fresh", True),      # other target
        f".m.st.tmp-{dead}-{host}-1a2b3c4d.keep": ("fresh", True),  # not our pattern
        f".m.st.tmp-x-{host}-1a2b3c4d": ("old", True),              # not our pattern
        ".m.st.abc123.tmp": ("old", True),                          # not ours
    }
    for name, (age, _) in files.items():
        p = tmp_path / name
        p.write_bytes(b"x")
        if age == "old":
            os.utime(p, (old, old))
    live_dir = tmp_path / f".m.st.tmp-{dead}-{host}-abcdef01"
    live_dir.mkdir()  # a directory is never removed
    gk.MLP([4, 3], backend="numpy").save(tmp_path / "m.st")
    left = {p.name for p in tmp_path.iterdir()}
    for name, (_, kept) in files.items():
        assert (name in left) == kept, name
    assert live_dir.name in left and "m.st" in left


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o027])
def test_saved_files_honour_the_umask(tmp_path, umask):
    path = tmp_path / "m.st"
    path.write_bytes(b"an older file with another mode")
    os.chmod(path, 0o600)
    m = gk.MLP([4, 3], backend="numpy")
    previous = os.umask(umask)
    try:
        m.save(path)
        m.save(tmp_path / "new.st")
        X, y = _data()
        gk.MLP([4, 3], loss="cross_entropy", backend="numpy").fit(
            X, y, epochs=1, progress=False, checkpoint=tmp_path / "ck.st")
    finally:
        os.umask(previous)
    for name in ("m.st", "new.st", "ck.st"):
        mode = (tmp_path / name).stat().st_mode & 0o777
        assert mode == 0o666 & ~umask, f"{name}: {oct(mode)} under umask {oct(umask)}"
