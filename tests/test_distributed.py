"""Data-parallel training over MPI (issue 14 items 2-4): `fit(..., comm=MPI.COMM_WORLD)`.

Each case launches `mpiexec -n 2 python tests/mpi/<script>.py` in a subprocess with a
timeout (a hang fails the test, never the suite) and compares what rank 0 wrote with a
single process trained in this process on the same global batches of 2·B rows. Without
mpi4py or an `mpiexec` next to this interpreter every test skips with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import BACKENDS, DTYPES
from gradkern.distributed import Group
from gradkern.verify import tolerance

HERE = Path(__file__).resolve().parent
MPI_DIR = HERE / "mpi"
sys.path.insert(0, str(MPI_DIR))
from cases import BATCH, EPOCHS, data, model_of, optimizer_of  # noqa: E402


def _mpiexec() -> str | None:
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


try:
    import mpi4py  # noqa: F401

    _REASON = None if _mpiexec() else "no mpiexec next to the interpreter or on PATH"
except ImportError:
    _REASON = "mpi4py is not installed (pip install 'gradkern[dist]', or `make test`)"

pytestmark = pytest.mark.skipif(_REASON is not None, reason=str(_REASON))

CASES = [(b, d, "sgd") for b in BACKENDS for d in DTYPES] + [(b, "float64", "adam")
                                                             for b in BACKENDS]
TIMEOUT = 600  # seconds for one mpiexec launch (the first Numba compile is in it)


def _run(n: int, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "gradkern-numba"))
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run([_mpiexec(), "-n", str(n), sys.executable, *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One launch of 2 ranks over every case (every rank checks the weight hashes after
    every epoch; a difference fails the script)."""
    out = tmp_path_factory.mktemp("mpi2")
    specs = [f"{b}:{d}:{c}" for b, d, c in CASES] + [f"{b}:float32:bn" for b in BACKENDS]
    proc = _run(2, str(MPI_DIR / "equivalence.py"), str(out), *specs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _single(backend: str, dtype: str, case: str, batch_size: int):
    X, y = data(case)
    model = model_of(case, backend, dtype)
    hist = model.fit(X, y, epochs=EPOCHS, batch_size=batch_size, optimizer=optimizer_of(case),
                     progress=False)
    return model, hist


@pytest.mark.parametrize("backend,dtype,case", CASES, ids=[f"{b}-{d}-{c}" for b, d, c in CASES])
def test_two_ranks_match_one_process_on_the_same_global_batches(two_ranks, backend, dtype,
                                                                  case):
    """K=2 ranks of B rows == one process on batches of 2·B (the last, uneven global batch
    of 10 rows gives rank 0 eight rows and rank 1 two): the design's whole-model bound."""
    got = np.load(two_ranks / f"{backend}-{dtype}-{case}.npz")
    ref, hist = _single(backend, dtype, case, 2 * BATCH)
    rtol = tolerance.rtol_of(tolerance.DRIVER_RTOL, dtype)
    tolerance.assert_group_close(got["params"], ref.bufs.params, rtol, what="weights")
    tolerance.assert_group_close(got["loss"], hist["loss"], rtol, what="loss history")
    assert got["params"].dtype == np.dtype(dtype)
    assert len(set(got["hashes"].tolist())) == EPOCHS  # the weights moved every epoch


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_and_dropout_stay_identical_across_ranks(two_ranks, backend):
    """Per-rank batch statistics and dropout masks: the ranks still agree bit for bit
    (hash checked every epoch in the script), the running statistics are averaged, and
    the model trains."""
    got = np.load(two_ranks / f"{backend}-float32-bn.npz")
    assert np.all(np.isfinite(got["params"])) and np.all(np.isfinite(got["state"]))
    assert got["loss"][-1] < got["loss"][0]
    ref, _ = _single(backend, "float32", "bn", 2 * BATCH)  # differs: per-rank statistics
    assert not np.array_equal(got["params"], ref.bufs.params)


def test_one_rank_is_the_single_process_fit(tmp_path):
    """K=1: the distributed path (gradients, Allreduce, apply_gradients) gives what the
    fused single-process epoch gives."""
    backend = BACKENDS[0]
    proc = _run(1, str(MPI_DIR / "equivalence.py"), str(tmp_path), f"{backend}:float64:sgd")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = np.load(tmp_path / f"{backend}-float64-sgd.npz")
    ref, _ = _single(backend, "float64", "sgd", BATCH)
    tolerance.assert_group_close(got["params"], ref.bufs.params,
                                 tolerance.rtol_of(tolerance.DRIVER_RTOL, "float64"))


def _fault(mode: str, out: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return _run(2, str(MPI_DIR / "faults.py"), mode, str(out), BACKENDS[0], timeout=timeout)


def test_bad_data_in_one_shard_stops_every_rank(tmp_path):
    proc = _fault("baddata", tmp_path)
    assert proc.returncode != 0
    assert "rank 1: ValueError: X contains NaN" in proc.stdout
    assert "rank 0: DistributedError: rank 1 of 2 failed at setup: ValueError" in proc.stdout


@pytest.mark.parametrize("mode,where", [("stepraise", "step 8"), ("raise", "the end of epoch 2")])
def test_an_exception_in_one_rank_stops_every_rank_and_resume_works(tmp_path, mode, where):
    """Rank 1 raises (inside a step, or in its epoch-end callback): both ranks stop with
    a message naming rank 1, the last checkpoint is intact and resuming from it with the
    same K gives the weights of an uninterrupted run, bit for bit."""
    proc = _fault(mode, tmp_path)
    assert proc.returncode != 0
    assert "rank 1: RuntimeError: injected failure" in proc.stdout
    assert f"rank 0: DistributedError: rank 1 of 2 failed at {where}" in proc.stdout
    ckpt = tmp_path / "ckpt.safetensors"
    epoch_done = 1 if mode == "stepraise" else 2
    assert ckpt.exists() and not list(tmp_path.glob("*.tmp*"))  # written whole, no litter
    straight = _fault("straight", tmp_path)
    resumed = _fault("resume", tmp_path)
    assert straight.returncode == 0 and resumed.returncode == 0, resumed.stdout + resumed.stderr
    a = np.load(tmp_path / "straight.npz")["params"]
    b = np.load(tmp_path / "resume.npz")["params"]
    assert np.array_equal(a, b), f"resumed from epoch {epoch_done}: weights differ"


def test_a_rank_that_hangs_is_aborted_by_the_watchdog(tmp_path):
    """No Python exception to report (rank 1 sleeps): the others' collective times out
    (Group(timeout=3)) and MPI_Abort ends the whole job with a message."""
    proc = _fault("hang", tmp_path, timeout=90)
    assert proc.returncode != 0
    assert "no answer from the other ranks" in proc.stderr
    assert (tmp_path / "ckpt.safetensors").exists()


def test_a_killed_rank_ends_the_job(tmp_path):
    proc = _fault("kill", tmp_path, timeout=90)
    assert proc.returncode != 0
    assert "rank 0: done" not in proc.stdout


def test_bad_comm_is_refused_before_anything_changes():
    model = model_of("sgd", BACKENDS[0], "float64")
    before = model.bufs.params.copy()
    X, y = data("sgd")
    with pytest.raises(TypeError, match="intracommunicator"):
        model.fit(X, y, epochs=1, comm="COMM_WORLD", progress=False)
    assert np.array_equal(model.bufs.params, before)
    with pytest.raises(ValueError, match="timeout"):
        Group(None, timeout=0)
