"""Data sets: bundled, synthetic and a user's files, split and standardized reproducibly."""

from __future__ import annotations

import numpy as np
import pytest

import gradkern as gk


@pytest.mark.parametrize("name,task,n_classes", [
    ("digits", "classification", 10), ("breast_cancer", "classification", 2),
    ("wine", "classification", 3), ("iris", "classification", 3), ("diabetes", "regression", 0),
    ("spirals", "classification", 2), ("regression", "regression", 0)])
def test_load(name, task, n_classes):
    d = gk.datasets.load(name, seed=3)
    assert d.task == task and d.n_classes == n_classes
    assert d.X_train.shape[1] == d.X_test.shape[1]
    np.testing.assert_allclose(d.X_train.mean(0), 0, atol=1e-9)
    assert abs(d.X_test.shape[0] / (d.X_train.shape[0] + d.X_test.shape[0]) - 0.2) < 0.02
    again = gk.datasets.load(name, seed=3)
    np.testing.assert_array_equal(d.X_train, again.X_train)
    other = gk.datasets.load(name, seed=4)
    assert not np.array_equal(d.X_train, other.X_train)
    if task == "classification":  # stratified: every class on both sides
        assert set(np.unique(d.y_test)) == set(range(n_classes))


def test_user_files(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((50, 3)), rng.integers(0, 2, 50)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    d = gk.datasets.load(str(tmp_path / "d.npz"))
    assert d.task == "classification" and d.n_features == 3
    (tmp_path / "d.csv").write_text("x1,x2,x3,label\n" + "\n".join(
        f"{a},{b},{c},{t}" for (a, b, c), t in zip(X, y, strict=True)))
    d2 = gk.datasets.load(str(tmp_path / "d.csv"))
    np.testing.assert_allclose(d2.X_train, d.X_train)
    assert d2.feature_names == ("x1", "x2", "x3")
    np.savez(tmp_path / "bad.npz", A=X)
    with pytest.raises(ValueError, match="'X' and 'y'"):
        gk.datasets.load(str(tmp_path / "bad.npz"))
    with pytest.raises(ValueError, match="not in"):
        gk.datasets.load_file(tmp_path / "d.csv", target="nope")


def test_spirals_are_learnable_by_a_deep_net():
    d = gk.datasets.load("spirals")
    m = gk.MLP([2, 64, 64, 2], loss="cross_entropy", backend="numpy")
    m.fit(d.X_train, d.y_train, epochs=60, batch_size=32, optimizer=gk.optim.Adam(lr=3e-3),
          progress=False)
    assert m.evaluate(d.X_test, d.y_test)["accuracy"] > 0.9


def _csv(path, text):
    path.write_text(text)
    return path


def test_csv_target_index_means_what_python_means(tmp_path):
    rows = "\n".join(f"{i % 2},{i},{(i * 3) % 7}" for i in range(40))
    p = _csv(tmp_path / "t.csv", "label,a,b\n" + rows)
    by_name = gk.datasets.load_file(p, target="label")
    for index in (0, -3):
        d = gk.datasets.load_file(p, target=index)
        assert d.feature_names == ("a", "b") and d.n_features == 2
        np.testing.assert_array_equal(d.X_train, by_name.X_train)
        np.testing.assert_array_equal(d.y_train, by_name.y_train)
    last = gk.datasets.load_file(p, target=-1)  # the last column is the target, not a feature
    assert last.feature_names == ("label", "a") and last.n_features == 2
    np.testing.assert_array_equal(last.X_train, gk.datasets.load_file(p).X_train)
    for bad in (3, -4):
        with pytest.raises(ValueError, match=r"out of range.*3 columns"):
            gk.datasets.load_file(p, target=bad)
    with pytest.raises(TypeError, match="column name or index"):
        gk.datasets.load_file(p, target=True)
    with pytest.raises(ValueError, match="target applies to .csv"):
        np.savez(tmp_path / "d.npz", X=np.ones((4, 2)), y=np.arange(4))
        gk.datasets.load_file(tmp_path / "d.npz", target=0)


@pytest.mark.parametrize("text,match", [
    ("a,b,y\n1,2,0\n3,4,1\n5,6,1e400\n", r"line 4, target column 'y': '1e400' is not finite"),
    ("a,b,y\n1,2,0\n3,nan,1\n", r"line 3, column 'b': 'nan' is not finite"),
    ("a,b,y\n1,-inf,0\n3,4,1\n", r"line 2, column 'b': '-inf' is not finite"),
    ("a,b,y\n1,2,0\n3,x,1\n", r"line 3, column 'b': 'x' is not a number"),
    ("a,b,y\n1,2,0.5\n3,4,oops\n", r"line 3, target column 'y': 'oops' is not a number"),
    ("a,b,y\n1,2,cat\n3,4,\n", r"line 3, target column 'y' is empty"),
    ("a,b,y\n1,2,0\n3,4\n5,6,1\n", r"line 3 has 2 fields, the header has 3"),
    ("a,b,y\n", "header row and at least one data row"),
    ("", "header row and at least one data row"),
    ("\n\n", "header row and at least one data row"),
    ("y\n1\n2\n", "no feature columns"),
    ("a,y,y\n1,2,3\n", "appears 2 times"),
])
def test_csv_bad_values_are_named(tmp_path, text, match):
    p = _csv(tmp_path / "bad.csv", text)
    target = "y" if "y,y" in text else None
    with pytest.raises(ValueError, match=match):
        gk.datasets.load_file(p, target=target)


def test_csv_reading_errors_are_value_errors(tmp_path):
    p = _csv(tmp_path / "huge.csv", "a,y\n" + "1" * 200_000 + ",0\n2,1\n")
    with pytest.raises(ValueError, match="line 2: field larger than field limit"):
        gk.datasets.load(str(p))
    (tmp_path / "bin.csv").write_bytes(b"a,y\n\xff\xfe,1\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        gk.datasets.load(str(tmp_path / "bin.csv"))
    (tmp_path / "x.csv").mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        gk.datasets.load(str(tmp_path / "x.csv"))
    with pytest.raises(FileNotFoundError, match="no such data file"):
        gk.datasets.load(str(tmp_path / "missing.csv"))
    with pytest.raises(ValueError, match="unknown task"):
        gk.datasets.load_file(tmp_path / "huge.csv", task="clustering")


def test_csv_string_labels_and_blank_lines(tmp_path):
    rows = "\n".join(f"{i},{i % 3},{'ab'[i % 2]}" for i in range(20))
    d = gk.datasets.load_file(_csv(tmp_path / "s.csv", "a,b,kind\n" + rows + "\n\n"))
    assert d.task == "classification" and d.n_classes == 2
    assert d.X_train.shape[0] + d.X_test.shape[0] == 20


def _npy(arr, shape=None) -> bytes:
    """An .npy member, its header optionally declaring another shape than the data has."""
    import io

    buf = io.BytesIO()
    header = np.lib.format.header_data_from_array_1_0(arr)
    if shape is not None:
        header["shape"] = shape
    np.lib.format.write_array_header_1_0(buf, header)
    buf.write(arr.tobytes())
    return buf.getvalue()


def test_npz_whose_header_lies_or_is_corrupt(tmp_path):
    import zipfile

    X, y = np.random.default_rng(0).standard_normal((20, 3)), np.arange(20) % 2
    for name, shape in (("huge", (10**12, 3)), ("short", (10, 3))):
        with zipfile.ZipFile(tmp_path / f"{name}.npz", "w") as z:
            z.writestr("X.npy", _npy(X, shape))
            z.writestr("y.npy", _npy(y))
        with pytest.raises(ValueError, match=rf"declares shape \({shape[0]}, 3\)"):
            gk.datasets.load(str(tmp_path / f"{name}.npz"))
    np.savez(tmp_path / "good.npz", X=X, y=y)
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="not a readable .npz"):
        gk.datasets.load(str(tmp_path / "trunc.npz"))
    flipped = bytearray(raw)
    flipped[len(raw) // 3] ^= 0xFF  # inside X's data: the CRC no longer matches
    (tmp_path / "crc.npz").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="not a readable .npz"):
        gk.datasets.load(str(tmp_path / "crc.npz"))
    np.savez(tmp_path / "obj.npz", X=np.array([[1, "a"]], dtype=object), y=np.arange(1))
    with pytest.raises(ValueError, match="Python objects"):
        gk.datasets.load(str(tmp_path / "obj.npz"))


@pytest.mark.parametrize("X,y,match", [
    (np.ones((10, 2)), np.r_[np.arange(9.0), np.inf], r"y row 9 is inf, not finite"),
    (np.where(np.eye(10, 2) > 0, np.nan, 1.0), np.arange(10.0), r"X\[0, 0\].*not finite"),
    (np.ones((0, 2)), np.ones(0), "no rows"),
    (np.ones((10, 0)), np.arange(10), "no feature columns"),
    (np.ones((10, 2)), np.ones((10, 2), dtype=np.int64), "class labels must be one column"),
    (np.ones(10), np.arange(10), "must be 2-D"),
])
def test_npz_bad_arrays(tmp_path, X, y, match):
    np.savez(tmp_path / "d.npz", X=X, y=y)
    with pytest.raises(ValueError, match=match):
        gk.datasets.load(str(tmp_path / "d.npz"))
