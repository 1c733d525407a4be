"""Data larger than memory (issue 14 item 1): memory-mapped arrays are checked and read block
by block, never copied whole, and train to the same weights as the same data in memory."""

from __future__ import annotations

import gc
import tracemalloc
import zipfile

import numpy as np
import pytest

import gradkern as gk
from gradkern import stream
from gradkern.cli import main


@pytest.fixture
def small_chunks(monkeypatch):
    """Blocks of 8 KiB, so that the small files here span many of them."""
    monkeypatch.setattr(stream, "CHUNK_BYTES", 8 << 10)


def _files(tmp_path, X, y, name="d"):
    np.save(tmp_path / f"{name}_X.npy", X)
    np.save(tmp_path / f"{name}_y.npy", y)
    return (np.load(tmp_path / f"{name}_X.npy", mmap_mode="r"),
            np.load(tmp_path / f"{name}_y.npy", mmap_mode="r"))


def _data(n=700, f=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, f))
    return X, (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)


def _fit(model, X, y, **kw):
    return model.fit(X, y, epochs=2, batch_size=16, progress=False, **kw)


def _figures(h):
    return {k: v for k, v in h.history.items() if k != "seconds"}


def test_is_mapped_sees_np_load_and_its_views(tmp_path):
    X, y = _data()
    Xm, ym = _files(tmp_path, X, y)
    assert stream.is_mapped(Xm) and stream.is_mapped(ym)
    assert stream.is_mapped(Xm[10:20]) and stream.is_mapped(np.asarray(Xm))
    assert not stream.is_mapped(X) and not stream.is_mapped(np.array(Xm))


@pytest.mark.parametrize("disk", ["float32", "float64"])
def test_classifier_on_memmap_trains_the_same_weights_as_in_memory(backend, tmp_path,
                                                                   small_chunks, disk):
    """Every backend; float64 on disk for a float32 model is converted block by block; int32
    labels on disk; validation data and diagnostics from the file too."""
    X, y = _data()
    Xm, ym = _files(tmp_path, X.astype(disk), y.astype(np.int32))
    runs = []
    for XX, yy in ((X.astype(disk), y), (Xm, ym)):
        m = gk.MLP([6, 12, 3], loss="cross_entropy", backend=backend, seed=3, dropout=0.1,
                   batchnorm=True)
        h = _fit(m, XX, yy, validation_data=(XX[:300], yy[:300]), diagnostics=7)
        runs.append((m.bufs.params.copy(), m.bufs.state.copy(), _figures(h),
                     m.evaluate(XX, yy), m.predict(XX), m.predict_proba(XX)))
    mem, mapped = runs
    for a, b in zip(mem, mapped, strict=True):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b
    assert mapped[2]["loss"][-1] < mapped[2]["loss"][0]


def test_regression_and_bce_on_memmap_match_in_memory(backend, tmp_path, small_chunks):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(500, 4))
    targets = {"mse": np.stack([X[:, 0] - X[:, 1], X[:, 2]], axis=1),
               "binary_cross_entropy": (X[:, :2] > 0).astype(np.float64)}
    for loss, Y in targets.items():
        Xm, Ym = _files(tmp_path, X, Y, name=loss)
        runs = []
        for XX, YY in ((X, Y), (Xm, Ym)):
            m = gk.MLP([4, 8, 2], loss=loss, backend=backend, seed=1)
            h = _fit(m, XX, YY)
            runs.append((m.bufs.params.copy(), _figures(h), m.evaluate(XX, YY)))
        np.testing.assert_array_equal(runs[0][0], runs[1][0])
        assert runs[0][1] == runs[1][1]
        for key, v in runs[0][2].items():  # the R² of a stream is summed in blocks
            assert runs[1][2][key] == pytest.approx(v, rel=1e-9, abs=1e-12)


def test_bad_values_late_in_the_file_are_found_before_any_step(backend, tmp_path, small_chunks):
    X, y = _data()
    m = gk.MLP([6, 8, 3], loss="cross_entropy", backend=backend, seed=0)
    before, rng_state = m.bufs.params.copy(), m.rng.bit_generator.state
    Xn = X.copy()
    Xn[650, 4] = np.nan
    cases = [((Xn, y), r"X contains NaN or inf: X\[650, 4\]"),
             ((X, np.where(np.arange(700) == 690, 3, y)),
              r"y\[\d+:\d+\] has labels from 0 to 3"),
             ((np.where(np.arange(700)[:, None] == 600, 1e300, X), y),
              r"X\[600, 0\] is 1e\+300, beyond the range of the model's dtype float32")]
    for i, ((XX, yy), msg) in enumerate(cases):
        Xm, ym = _files(tmp_path, XX, yy, name=f"bad{i}")
        with pytest.raises(ValueError, match=msg):
            _fit(m, Xm, ym)
        with pytest.raises(ValueError, match=msg):
            m.evaluate(Xm, ym)
        np.testing.assert_array_equal(m.bufs.params, before)
        assert m.rng.bit_generator.state == rng_state
    Xm, ym = _files(tmp_path, X, y)
    with pytest.raises(ValueError, match=r"X has shape \(700, 6\) but the model expects"):
        gk.MLP([5, 3], loss="cross_entropy", backend=backend).predict(Xm)
    with pytest.raises(ValueError, match=r"y has shape \(699,\) but X has 700 rows"):
        m.fit(Xm, ym[:699], progress=False)
    with pytest.raises(TypeError, match="float16"):
        m.fit(_files(tmp_path, X.astype(np.float16), y, name="h")[0], ym, progress=False)


def _peak_numpy_bytes(fn) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_training_on_a_memmap_never_copies_it_whole(backend, tmp_path, monkeypatch):
    """NumPy reports its allocations to tracemalloc: the peak while fitting, evaluating and
    predicting on a 16 MiB float64 file (a float32 model, so a full conversion would be 8
    MiB) stays under an eighth of the file, with blocks of 64 KiB and inference chunks of 512 rows.
    The permutation (8 bytes a row of 256) is in it."""
    monkeypatch.setattr(stream, "CHUNK_BYTES", 64 << 10)
    monkeypatch.setattr(gk.model, "PREDICT_CHUNK", 512)  # inference workspace: 512 rows
    n, f = 65536, 32
    rng = np.random.default_rng(0)
    Xm = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float64,
                                   shape=(n, f))
    for s in range(0, n, 4096):
        Xm[s : s + 4096] = rng.normal(size=(4096, f))
    Xm.flush()
    del Xm
    np.save(tmp_path / "y.npy", rng.integers(0, 4, n).astype(np.int32))
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    m = gk.MLP([f, 16, 4], loss="cross_entropy", backend=backend, seed=0)
    _fit(m, Xm[:256], ym[:256])  # compile / load the kernels outside the measurement
    size = Xm.nbytes
    assert _peak_numpy_bytes(lambda: np.ascontiguousarray(Xm, dtype=np.float32)) >= size // 2
    peak = _peak_numpy_bytes(lambda: m.fit(Xm, ym, epochs=1, batch_size=64, progress=False,
                                           validation_data=(Xm[:8192], ym[:8192])))
    assert peak < size // 8, f"fit allocated {peak:,} bytes for a {size:,} byte file"
    peak = _peak_numpy_bytes(lambda: m.evaluate(Xm, ym))
    assert peak < size // 8, f"evaluate allocated {peak:,} bytes"
    peak = _peak_numpy_bytes(lambda: m.predict(Xm))
    assert peak < size // 8 + n * 8, f"predict allocated {peak:,} bytes"  # + its labels


def test_datasets_map_npy_and_uncompressed_npz(tmp_path):
    X, y = _data(n=100)
    Xm, _ = _files(tmp_path, X, y)
    d = gk.datasets.open_mapped(tmp_path / "d_X.npy", tmp_path / "d_y.npy")
    assert stream.is_mapped(d.X_train) and stream.is_mapped(d.y_test)
    assert d.task == "classification" and d.n_classes == 3 and d.n_features == 6
    np.testing.assert_array_equal(d.X_train, X[:80])  # the last 20 % held out, as stored
    np.testing.assert_array_equal(d.y_test, y[80:])
    np.savez(tmp_path / "d.npz", X=X, y=y.astype(np.float64) + 0.5)
    e = gk.datasets.open_mapped(tmp_path / "d.npz")
    assert stream.is_mapped(e.X_train) and e.task == "regression" and e.n_outputs == 1
    np.testing.assert_array_equal(e.X_test, X[80:])
    np.savez_compressed(tmp_path / "c.npz", X=X, y=y)
    with pytest.raises(ValueError, match="compressed"):
        gk.datasets.open_mapped(tmp_path / "c.npz")
    with pytest.raises(ValueError, match="--target|target"):
        gk.datasets.open_mapped(tmp_path / "d_X.npy")
    with pytest.raises(ValueError, match="an .npy of y"):
        gk.datasets.open_mapped(tmp_path / "d_X.npy", tmp_path / "d.npz")
    np.save(tmp_path / "short_y.npy", y[:99])
    with pytest.raises(ValueError, match="does not match"):
        gk.datasets.open_mapped(tmp_path / "d_X.npy", tmp_path / "short_y.npy")
    with zipfile.ZipFile(tmp_path / "lie.npz", "w") as z:  # a header that claims more data
        z.writestr("X.npy", (tmp_path / "d_X.npy").read_bytes()[:200])
        z.writestr("y.npy", (tmp_path / "d_y.npy").read_bytes())
    with pytest.raises(ValueError, match="lie.npz"):
        gk.datasets.open_mapped(tmp_path / "lie.npz")


def test_cli_trains_from_npy_files_and_an_npz(tmp_path, capsys, small_chunks):
    X, y = _data(n=400)
    _files(tmp_path, X.astype(np.float32), y)
    assert main(["train", "--data", str(tmp_path / "d_X.npy"), "--target",
                 str(tmp_path / "d_y.npy"), "--hidden", "16", "--epochs", "3",
                 "--backend", "numpy", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "memory-mapped" in out and "accuracy" in out
    np.savez(tmp_path / "d.npz", X=X, y=y)
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--mmap", "--hidden", "16",
                 "--epochs", "3", "--backend", "numpy", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "memory-mapped" in out and "accuracy" in out
    assert main(["train", "--data", str(tmp_path / "d_X.npy"), "--quiet"]) == 2
    assert "gradkern: error:" in capsys.readouterr().err
