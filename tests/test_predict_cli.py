"""`gradkern train --save` keeps the preprocessing; `gradkern predict` applies it to raw rows
(issue 12 item 5)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import gradkern as gk
from gradkern.checkpoint import CheckpointError, check_preprocessing
from gradkern.cli import main

SPECIES = np.array(["setosa", "versicolor", "virginica"])
QUICK = ["--hidden", "16", "--quiet", "--seed", "0"]


def _write_csv(path, header, rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _read_csv(path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _classification_csv(path, labels=SPECIES, n=240):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n, 3)) * [10.0, 1.0, 100.0] + [50.0, 0.0, -3.0]  # raw units
    y = labels[(X[:, 0] > 50).astype(int) + (X[:, 2] > -3).astype(int)]
    rows = [[str(float(r[0])), str(t), str(float(r[1])), str(float(r[2]))]
            for r, t in zip(X, y, strict=True)]
    _write_csv(path, ["a", "species", "b", "c"], rows)
    return rows


def _reported(out: str, key: str) -> float:
    test_line = next(line for line in out.splitlines() if line.startswith("test: "))
    return float(test_line.split(f"{key} ")[1].split()[0].rstrip(","))


def _test_rows(path, target, rows):
    """The rows of the file that train's test split holds (same seed, same split)."""
    d = gk.datasets.load_file(path, target=target, seed=0)
    return [rows[i] for i in d.test_index]


def test_string_labels_round_trip_with_the_reported_accuracy(tmp_path, capsys):
    f, m = tmp_path / "f.csv", tmp_path / "m.st"
    rows = _classification_csv(f)
    assert main(["train", "--data", str(f), "--target", "species", "--epochs", "40",
                 "--lr", "0.01", "--save", str(m), *QUICK]) == 0
    acc = _reported(capsys.readouterr().out, "accuracy")
    assert acc > 0.8
    test = _test_rows(f, "species", rows)
    _write_csv(tmp_path / "test.csv", ["a", "species", "b", "c"], test)
    assert main(["predict", "--model", str(m), "--data", str(tmp_path / "test.csv"),
                 "--out", str(tmp_path / "p.csv")]) == 0
    header, preds = _read_csv(tmp_path / "p.csv")
    assert header == ["species"]
    labels = [p[0] for p in preds]
    assert set(labels) <= set(SPECIES) and len(labels) == len(test)
    assert np.mean([p == r[1] for p, r in zip(labels, test, strict=True)]) == pytest.approx(
        acc, abs=5e-5)
    # columns matched by name: another order, no target column, to stdout
    _write_csv(tmp_path / "raw.csv", ["c", "a", "b"], [[r[3], r[0], r[2]] for r in test])
    capsys.readouterr()
    assert main(["predict", "--model", str(m), "--data", str(tmp_path / "raw.csv")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "species" and out[1:] == labels
    # probabilities, headed by the class labels
    assert main(["predict", "--model", str(m), "--data", str(tmp_path / "raw.csv"),
                 "--proba"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(",") == list(SPECIES)
    P = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-6)
    assert [SPECIES[i] for i in P.argmax(axis=1)] == labels


def test_integer_labels_and_npy_rows(tmp_path, capsys):
    f, m = tmp_path / "f.csv", tmp_path / "m.st"
    rows = _classification_csv(f, labels=np.array(["3", "7", "-9"]))
    assert main(["train", "--data", str(f), "--target", "species", "--epochs", "5",
                 "--save", str(m), *QUICK]) == 0
    capsys.readouterr()
    raw = np.array([[float(r[0]), float(r[2]), float(r[3])] for r in rows])
    np.save(tmp_path / "x.npy", raw)
    assert main(["predict", "--model", str(m), "--data", str(tmp_path / "x.npy")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "species" and set(out[1:]) <= {"3", "7", "-9"}
    # what the saved preprocessing means, checked in process
    model = gk.load(m)
    pre = gk.model.load_preprocessing(m, model)
    assert pre["classes"] == [-9, 3, 7] and pre["features"] == ["a", "b", "c"]
    Z = (raw - pre["x_mean"]) / pre["x_scale"]
    assert out[1:] == [str(pre["classes"][i]) for i in model.predict(Z)]


def test_regression_in_original_units(tmp_path, capsys):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((200, 2)) * [3.0, 0.5] + [10.0, -1.0]
    y = 1000.0 + 60.0 * X[:, 0] + 150.0 * X[:, 1] + 40.0 * np.tanh(X[:, 0] - 10)  # dollars
    rows = [[str(float(a)), str(float(t)), str(float(b))] for (a, b), t in zip(X, y, strict=True)]
    f, m = tmp_path / "r.csv", tmp_path / "m.st"
    _write_csv(f, ["x1", "price", "x2"], rows)
    assert main(["train", "--data", str(f), "--target", "price", "--epochs", "60",
                 "--lr", "0.01", "--save", str(m), *QUICK]) == 0
    r2 = _reported(capsys.readouterr().out, "r2")
    assert r2 > 0.8
    test = _test_rows(f, "price", rows)
    _write_csv(tmp_path / "t.csv", ["x1", "x2"], [[r[0], r[2]] for r in test])
    assert main(["predict", "--model", str(m), "--data", str(tmp_path / "t.csv")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "price"
    pred = np.array([float(v) for v in lines[1:]])
    truth = np.array([float(r[1]) for r in test])
    r2_units = 1 - np.sum((pred - truth) ** 2) / np.sum((truth - truth.mean()) ** 2)
    assert r2_units == pytest.approx(r2, abs=2e-4)  # R² is the same in any units
    assert abs(pred.mean() - truth.mean()) < 0.5 * truth.std()  # dollars


def test_checkpoint_without_preprocessing_uses_raw_inputs(tmp_path, capsys, backend):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 4))
    model = gk.MLP([4, 8, 3], loss="cross_entropy", backend=backend, seed=0)
    model.fit(X, np.arange(30) % 3, epochs=2, progress=False)
    model.save(tmp_path / "old.st")
    np.save(tmp_path / "x.npy", X)
    assert main(["predict", "--model", str(tmp_path / "old.st"), "--data",
                 str(tmp_path / "x.npy"), "--backend", backend]) == 0
    cap = capsys.readouterr()
    assert "holds no preprocessing" in cap.err and "used as they are" in cap.err
    lines = cap.out.splitlines()
    assert lines[0] == "prediction"
    assert [int(v) for v in lines[1:]] == model.predict(X).tolist()
    # an unnamed CSV is read by position
    _write_csv(tmp_path / "x.csv", ["p", "q", "r", "s"], X.tolist())
    assert main(["predict", "--model", str(tmp_path / "old.st"), "--data",
                 str(tmp_path / "x.csv"), "--proba"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "0,1,2"
    np.testing.assert_allclose([[float(v) for v in s.split(",")] for s in lines[1:]],
                               model.predict_proba(X), rtol=1e-6)


def test_npz_rows_as_train_reads_them(tmp_path, capsys, backend):
    """predict --data FILE.npz: its X (y, if there, is not read), the same predictions as
    the same rows from a .npy, in the original labels; a compressed .npz too."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((150, 3)) * [5.0, 1.0, 20.0] + [1.0, 2.0, -30.0]  # raw units
    y = np.array([3, 7, -9])[(X[:, 0] > 1).astype(int) + (X[:, 2] > -30).astype(int)]
    f, m = tmp_path / "train.npz", tmp_path / "m.st"
    np.savez(f, X=X, y=y)
    assert main(["train", "--data", str(f), "--epochs", "20", "--lr", "0.01", "--save",
                 str(m), "--backend", backend, *QUICK]) == 0
    capsys.readouterr()
    np.save(tmp_path / "x.npy", X)
    np.savez(tmp_path / "x_only.npz", X=X)
    np.savez_compressed(tmp_path / "zipped.npz", X=X, y=np.array(["not", "read"]))
    outs = []
    for name in ("train.npz", "x_only.npz", "zipped.npz", "x.npy"):
        assert main(["predict", "--model", str(m), "--data", str(tmp_path / name),
                     "--backend", backend]) == 0
        outs.append(capsys.readouterr().out.splitlines())
    assert outs[0] == outs[1] == outs[2] == outs[3] and len(outs[0]) == 151
    model = gk.load(m, backend=backend)
    pre = gk.model.load_preprocessing(m, model)
    assert pre["classes"] == [-9, 3, 7]
    Z = (X - pre["x_mean"]) / pre["x_scale"]
    assert outs[0][1:] == [str(pre["classes"][i]) for i in model.predict(Z)]
    assert np.mean([int(v) for v in outs[0][1:]] == y) > 0.8
    assert main(["predict", "--model", str(m), "--data", str(f), "--proba", "--out",
                 str(tmp_path / "p.csv")]) == 0
    header, rows = _read_csv(tmp_path / "p.csv")
    assert header == ["-9", "3", "7"]
    np.testing.assert_allclose(np.array(rows, dtype=float), model.predict_proba(Z),
                               rtol=1e-6)


def _lying_npz(path) -> None:
    """An .npz whose X header claims far more rows than it holds."""
    import io
    import zipfile

    buf = io.BytesIO()
    np.save(buf, np.ones((2, 3)))
    head = buf.getvalue().replace(b"(2, 3)", b"(9999999999, 3)", 1)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("X.npy", head)


def _rewrite_meta(src, dst, **changes) -> None:
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(src), "numpy") as fh:
        meta = dict(fh.metadata())
    meta.update(changes)
    save_file(load_file(str(src)), str(dst), metadata=meta)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    _classification_csv(tmp / "f.csv")
    assert main(["train", "--data", str(tmp / "f.csv"), "--target", "species", "--epochs",
                 "1", "--save", str(tmp / "m.st"), *QUICK]) == 0
    return tmp


def _pre(tmp, **changes) -> str:
    model = gk.load(tmp / "m.st")
    pre = gk.model.load_preprocessing(tmp / "m.st", model)
    pre.update(changes)
    return json.dumps(pre)


BAD = {
    "missing-model": (["--model", "{t}/none.st", "--data", "{t}/f.csv"], "no such checkpoint"),
    "model-not-a-checkpoint": (["--model", "{t}/f.csv", "--data", "{t}/f.csv"],
                               "not a gradkern checkpoint"),
    "missing-data": (["--model", "{t}/m.st", "--data", "{t}/none.csv"], "no such data file"),
    "txt-data": (["--model", "{t}/m.st", "--data", "{t}/d.txt"], "use .csv, .npy or .npz"),
    "npz-without-X": (["--model", "{t}/m.st", "--data", "{t}/noX.npz"],
                      "must hold an array 'X'; it has ['Z', 'y']"),
    "npz-width": (["--model", "{t}/m.st", "--data", "{t}/w.npz"], "the model takes (rows, 3)"),
    "npz-not-a-zip": (["--model", "{t}/m.st", "--data", "{t}/junk.npz"],
                      "not a readable .npz file"),
    "npz-header-lies": (["--model", "{t}/m.st", "--data", "{t}/lie.npz"],
                        "declares shape (9999999999, 3)"),
    "missing-column": (["--model", "{t}/m.st", "--data", "{t}/nob.csv"],
                       "lacks the model's input column 'b'"),
    "unknown-column": (["--model", "{t}/m.st", "--data", "{t}/extra.csv"],
                       "column 'zz' is not one of the model's inputs"),
    "bad-cell": (["--model", "{t}/m.st", "--data", "{t}/cell.csv"],
                 "line 2, column 'b': 'x' is not a number"),
    "nan-cell": (["--model", "{t}/m.st", "--data", "{t}/nan.csv"], "'nan' is not finite"),
    "npy-width": (["--model", "{t}/m.st", "--data", "{t}/w.npy"], "the model takes (rows, 3)"),
    "npy-objects": (["--model", "{t}/m.st", "--data", "{t}/o.npy"], "not a readable .npy"),
    "npy-header-lies": (["--model", "{t}/m.st", "--data", "{t}/lie.npy"], "not a readable"),
    "out-missing-folder": (["--model", "{t}/m.st", "--data", "{t}/f.csv", "--out",
                            "{t}/no/p.csv"], "does not exist"),
    "proba-regression": (["--model", "{t}/reg.st", "--data", "{t}/f.csv", "--proba"],
                         "--proba needs a classifier"),
    "meta-not-json": (["--model", "{t}/m_json.st", "--data", "{t}/f.csv"],
                      "preprocessing is not valid JSON"),
    "meta-classes": (["--model", "{t}/m_classes.st", "--data", "{t}/f.csv"],
                     "classes is not a list of 3 distinct labels"),
    "meta-scale": (["--model", "{t}/m_scale.st", "--data", "{t}/f.csv"],
                   "x_scale holds a value that is not positive"),
    "meta-task": (["--model", "{t}/m_task.st", "--data", "{t}/f.csv"],
                  "describes a regression task"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_give_one_error_line(case, trained, capsys):
    t = trained
    if not (t / "d.txt").exists():
        (t / "d.txt").write_text("a,b,c\n1,2,3\n")
        _write_csv(t / "nob.csv", ["a", "c"], [["1", "2"]])
        _write_csv(t / "extra.csv", ["a", "b", "c", "zz"], [["1", "2", "3", "4"]])
        _write_csv(t / "cell.csv", ["a", "b", "c"], [["1", "x", "3"]])
        _write_csv(t / "nan.csv", ["a", "b", "c"], [["1", "2", "nan"]])
        np.save(t / "w.npy", np.ones((2, 4)))
        np.savez(t / "noX.npz", Z=np.ones((2, 3)), y=np.zeros(2))
        np.savez(t / "w.npz", X=np.ones((2, 4)))
        (t / "junk.npz").write_text("X,y\n1,2\n")
        _lying_npz(t / "lie.npz")
        np.save(t / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        head = (t / "w.npy").read_bytes()
        (t / "lie.npy").write_bytes(head.replace(b"(2, 4)", b"(9999999999, 3)", 1)[:200])
        gk.MLP([3, 4, 1], loss="mse").save(t / "reg.st")
        m = t / "m.st"
        _rewrite_meta(m, t / "m_json.st", preprocessing="{not json")
        _rewrite_meta(m, t / "m_classes.st", preprocessing=_pre(t, classes=["a", "b"]))
        _rewrite_meta(m, t / "m_scale.st", preprocessing=_pre(t, x_scale=[1.0, 0.0, 1.0]))
        _rewrite_meta(m, t / "m_task.st", preprocessing=_pre(t, task="regression"))
    argv, fragment = BAD[case]
    capsys.readouterr()
    rc = main(["predict", *[a.format(t=t) for a in argv]])
    cap = capsys.readouterr()
    lines = [line for line in cap.err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("gradkern: error: "), cap.err
    assert fragment in lines[0], lines[0]
    assert cap.out == ""


def test_save_refuses_preprocessing_that_does_not_fit_the_model(tmp_path):
    model = gk.MLP([3, 4, 2], loss="cross_entropy")
    pre = {"task": "classification", "features": ["a", "b", "c"], "target": "y",
           "x_mean": [0.0] * 3, "x_scale": [1.0] * 3, "classes": ["no", "yes"]}
    assert check_preprocessing("p", pre, 3, 2, "cross_entropy")["classes"] == ["no", "yes"]
    with pytest.raises(ValueError, match="features is not a list of 3 distinct names"):
        model.save(tmp_path / "m.st", preprocessing={**pre, "features": ["a", "a", "b"]})
    with pytest.raises(ValueError, match="x_mean is not a list of 3 numbers"):
        model.save(tmp_path / "m.st", preprocessing={**pre, "x_mean": [0.0, 1.0]})
    with pytest.raises(CheckpointError, match="all strings or all integers"):
        check_preprocessing("p", {**pre, "classes": ["no", 1]}, 3, 2, "cross_entropy")
    assert not (tmp_path / "m.st").exists()
    model.save(tmp_path / "m.st", preprocessing=pre)
    assert gk.model.load_preprocessing(tmp_path / "m.st", gk.load(tmp_path / "m.st")) == pre
