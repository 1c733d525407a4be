"""The command line never prints a traceback for bad input (issue 10, item 11).

Every case gives one line on stderr, `gradkern: error: ...` (or `gradkern: interrupted`), a
non-zero exit, and a destination is checked before any work starts. Cases that could take
the interpreter down (a huge allocation, a signal) run in a subprocess with a timeout.
"""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import gradkern as gk
from gradkern.cli import main

EXE = Path(sys.executable).with_name("gradkern")
TINY = ["--epochs", "1", "--hidden", "4", "--quiet"]


def _npy(arr, shape=None) -> bytes:
    import io

    buf = io.BytesIO()
    header = np.lib.format.header_data_from_array_1_0(arr)
    if shape is not None:
        header["shape"] = shape
    np.lib.format.write_array_header_1_0(buf, header)
    buf.write(arr.tobytes())
    return buf.getvalue()


def _files(tmp: Path) -> dict[str, Path]:
    """The hostile inputs, written once per test."""
    (tmp / "x.csv").mkdir()
    (tmp / "ragged.csv").write_text("a,b,y\n1,2,0\n3,4\n5,6,1\n")
    (tmp / "huge.csv").write_text("a,y\n" + "1" * 200_000 + ",0\n2,1\n")
    (tmp / "inf.csv").write_text("a,b,y\n1,2,0\n3,4,1e400\n5,6,1\n")
    X, y = np.random.default_rng(0).standard_normal((20, 3)), np.arange(20) % 2
    np.savez(tmp / "good.npz", X=X, y=y)
    raw = (tmp / "good.npz").read_bytes()
    (tmp / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    with zipfile.ZipFile(tmp / "lie.npz", "w") as z:
        z.writestr("X.npy", _npy(X, (10**12, 3)))
        z.writestr("y.npy", _npy(y))
    (tmp / "afile").write_text("not a folder")
    return {p.name: p for p in tmp.iterdir()}


# (argv with {tmp} for the test's folder, a fragment the error line must contain)
CASES = {
    "save-into-sys": (["train", "--data", "iris", "--save", "/sys/gk-test.st"], "--save"),
    "save-into-directory": (["train", "--data", "iris", "--save", "{tmp}"], "is a directory"),
    "save-into-missing-folder": (["train", "--data", "iris", "--save", "{tmp}/no/m.st"],
                                 "does not exist"),
    "save-under-a-file": (["train", "--data", "iris", "--save", "{tmp}/afile/m.st"],
                          "is not a folder"),
    "data-directory-named-csv": (["train", "--data", "{tmp}/x.csv"], "is a directory"),
    "data-ragged-csv": (["train", "--data", "{tmp}/ragged.csv"], "line 3 has 2 fields"),
    "data-huge-field": (["train", "--data", "{tmp}/huge.csv"], "field larger than"),
    "data-inf-target": (["train", "--data", "{tmp}/inf.csv"], "'1e400' is not finite"),
    "data-truncated-npz": (["train", "--data", "{tmp}/trunc.npz"], "not a readable .npz"),
    "data-npz-header-lies": (["train", "--data", "{tmp}/lie.npz"], "declares shape"),
    "data-missing-file": (["train", "--data", "{tmp}/missing.csv"], "no such data file"),
    "data-target-missing": (["train", "--data", "{tmp}/inf.csv", "--target", "zz"],
                            "not in"),
    "bench-out-unwritable": (["bench", "--quick", "--out", "/sys/gk-test"], "--out"),
    "bench-out-under-a-file": (["bench", "--quick", "--out", "{tmp}/afile/r"],
                               "is not a folder"),
    "vanishing-out-unwritable": (["vanishing", "--quick", "--out", "/sys/gk-test"], "--out"),
    "vanishing-out-is-a-file": (["vanishing", "--quick", "--out", "{tmp}/afile"],
                                "not a folder"),
    "check-json-unwritable": (["check", "--quick", "--json", "/sys/gk-test.json"], "--json"),
    "check-json-is-a-directory": (["check", "--quick", "--json", "{tmp}"], "is a directory"),
    "check-only-unknown": (["check", "--quick", "--only", "zzz"], "checks are fd/dense"),
}


def _one_error_line(err: str, out: str = "") -> str:
    assert "Traceback" not in err + out, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_command_line_gives_one_line_before_any_work(case, tmp_path, capsys):
    files = _files(tmp_path)
    argv, fragment = CASES[case]
    argv = [a.format(tmp=tmp_path) for a in argv]
    if argv[0] == "train":
        argv += TINY
    rc = main(argv)
    cap = capsys.readouterr()
    line = _one_error_line(cap.err, cap.out)
    assert rc == 2 and line.startswith("gradkern: error: ") and fragment in line, line
    # refused before the work: nothing trained, run or written
    assert cap.out == "", cap.out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)
    assert not list(tmp_path.glob(".gradkern-probe-*"))


def test_divergence_is_one_line(backend, capsys, tmp_path):
    save = tmp_path / "m.st"
    with warnings.catch_warnings(record=True) as caught:  # a warning would be more lines
        warnings.simplefilter("always")
        rc = main(["train", "--data", "iris", "--lr", "1e10", "--optimizer", "sgd",
                   "--epochs", "5", "--hidden", "8", "--backend", backend, "--quiet",
                   "--save", str(save)])
    assert not caught, [str(w.message) for w in caught]
    cap = capsys.readouterr()
    line = _one_error_line(cap.err, cap.out)
    assert rc == 1 and line.startswith("gradkern: error: training diverged: "), line
    assert "not applied" in line and not save.exists()


def test_memory_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 47.7 GiB")

    monkeypatch.setattr(gk, "MLP", no_memory)
    assert main(["train", "--data", "iris", *TINY]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line == "gradkern: error: out of memory: Unable to allocate 47.7 GiB"
    monkeypatch.setenv("GRADKERN_DEBUG", "1")
    with pytest.raises(MemoryError):
        main(["train", "--data", "iris", *TINY])


def test_an_unexpected_exception_keeps_its_traceback(monkeypatch):
    def bug(*args, **kwargs):
        raise RuntimeError("a genuine bug")

    monkeypatch.setattr(gk, "MLP", bug)
    with pytest.raises(RuntimeError, match="genuine bug"):
        main(["train", "--data", "iris", *TINY])


def _child_setup(as_limit: int | None = None):
    def setup():
        # a shell may start background jobs with SIGINT ignored; Python then keeps it so
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if as_limit:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
    return setup


def test_huge_hidden_layer_is_refused_in_a_bounded_process():
    # 8 GiB of address space: if the size check ever goes, the allocation fails here as a
    # MemoryError (which must also be one line) instead of swapping the machine to death
    r = subprocess.run([str(EXE), "train", "--data", "iris", "--hidden", "100000000",
                        "--epochs", "1", "--quiet"], capture_output=True, text=True,
                       timeout=120, preexec_fn=_child_setup(8 * 2**30))
    line = _one_error_line(r.stderr, r.stdout)
    assert r.returncode != 0 and line.startswith("gradkern: error: "), r.stderr
    assert "100000000" in line and ("GiB" in line), line


def test_ctrl_c_during_training_says_interrupted(backend):
    proc = subprocess.Popen([str(EXE), "train", "--data", "iris", "--epochs", "1000000",
                             "--hidden", "8", "--batch-size", "8", "--backend", backend],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_child_setup())
    try:
        deadline = time.monotonic() + 120
        seen = ""
        while "epoch " not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no epoch line in time: {seen!r}"
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                line = proc.stdout.readline()
                assert line, f"exited before its first epoch: {proc.stderr.read()}"
                seen += line
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert _one_error_line(err, out) == "gradkern: interrupted"


def test_check_only_still_accepts_what_matches(capsys):
    rc = main(["check", "--quick", "--quiet", "--backends", "numpy", "--only",
               "kernel/dropout,"])
    cap = capsys.readouterr()
    assert rc == 0 and "kernel/dropout" in cap.out and "fd/dense" not in cap.out, cap.err
