"""Data-parallel training over MPI (issue 14): `fit(..., comm=MPI.COMM_WORLD)`.

One launch of `mpiexec -n 2 python tests/mpi/suite.py` (in a subprocess with a timeout: a
hang fails the test, never the suite) runs every case that leaves the job alive: the K=2
fits on every backend, K=1, memory-mapped data, and the faults a rank reports (bad data,
exceptions, resume, a resume with another K). Two more launches end the job on purpose
(a hung rank, a killed rank). The tests compare what the ranks wrote with single
processes trained here on the same global batches of 2·B rows. Without mpi4py or an
`mpiexec` next to this interpreter the MPI tests skip with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import BACKENDS
from gradkern.checkpoint import CheckpointError, restore_training, save_training
from gradkern.distributed import Group, rank_slice
from gradkern.verify import tolerance

HERE = Path(__file__).resolve().parent
MPI_DIR = HERE / "mpi"
sys.path.insert(0, str(MPI_DIR))
from cases import (  # noqa: E402
    BATCH,
    EPOCHS,
    N_ROWS,
    bn_dtype,
    data,
    equivalence_cases,
    model_of,
    optimizer_of,
)


def _mpiexec() -> str | None:
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


try:
    import mpi4py  # noqa: F401

    _REASON = None if _mpiexec() else "no mpiexec next to the interpreter or on PATH"
except ImportError:
    _REASON = "mpi4py is not installed (pip install 'gradkern[dist]', or `make test`)"

needs_mpi = pytest.mark.skipif(_REASON is not None, reason=str(_REASON))

CASES = equivalence_cases(BACKENDS)
TIMEOUT = 600  # seconds for the suite's launch (the first Numba compiles are in it)


def _run(n: int, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "gradkern-numba"))
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run([_mpiexec(), "-n", str(n), sys.executable, *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The one launch of 2 ranks (every rank checks the weight hashes after every epoch of
    every fit but the faults; a difference fails the script)."""
    out = tmp_path_factory.mktemp("mpi2")
    proc = _run(2, str(MPI_DIR / "suite.py"), str(out), *BACKENDS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _outcomes(out: Path) -> list[dict]:
    return [json.loads((out / f"outcomes-{r}.json").read_text()) for r in (0, 1)]


def _single(backend: str, dtype: str, case: str, batch_size: int, **kw):
    X, y = data(case)
    model = model_of(case, backend, dtype)
    hist = model.fit(X, y, epochs=kw.pop("epochs", EPOCHS), batch_size=batch_size,
                     optimizer=optimizer_of(case), progress=False, **kw)
    return model, hist


@needs_mpi
@pytest.mark.parametrize("backend,dtype,case", CASES, ids=[f"{b}-{d}-{c}" for b, d, c in CASES])
def test_two_ranks_match_one_process_on_the_same_global_batches(suite, backend, dtype, case):
    """K=2 ranks of B rows == one process on batches of 2·B (the last, uneven global batch
    of 10 rows gives rank 0 eight rows and rank 1 two): the design's whole-model bound."""
    got = np.load(suite / f"eq-{backend}-{dtype}-{case}.npz")
    ref, hist = _single(backend, dtype, case, 2 * BATCH)
    rtol = tolerance.rtol_of(tolerance.DRIVER_RTOL, dtype)
    tolerance.assert_group_close(got["params"], ref.bufs.params, rtol, what="weights")
    tolerance.assert_group_close(got["loss"], hist["loss"], rtol, what="loss history")
    assert got["params"].dtype == np.dtype(dtype)
    assert len(set(got["hashes"].tolist())) == EPOCHS  # the weights moved every epoch


@needs_mpi
@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_and_dropout_stay_identical_across_ranks(suite, backend):
    """Per-rank batch statistics and dropout masks: the ranks still agree bit for bit
    (hash checked every epoch in the script), the running statistics are averaged, and
    the model trains."""
    got = np.load(suite / f"bn-{backend}.npz")
    assert np.all(np.isfinite(got["params"])) and np.all(np.isfinite(got["state"]))
    assert got["loss"][-1] < got["loss"][0]
    ref, _ = _single(backend, bn_dtype(backend), "bn", 2 * BATCH)  # differs: per-rank stats
    assert not np.array_equal(got["params"], ref.bufs.params)


@needs_mpi
def test_one_rank_is_the_single_process_fit(suite):
    """K=1 (COMM_SELF): the distributed path (gradients, Allreduce, apply_gradients) gives
    what the fused single-process epoch gives."""
    got = np.load(suite / f"one-{BACKENDS[0]}.npz")
    ref, _ = _single(BACKENDS[0], "float64", "sgd", BATCH)
    tolerance.assert_group_close(got["params"], ref.bufs.params,
                                 tolerance.rtol_of(tolerance.DRIVER_RTOL, "float64"))


@needs_mpi
@pytest.mark.parametrize("backend", BACKENDS)
def test_memmap_ranks_read_only_their_slices_and_train_the_in_memory_weights(suite, backend):
    """Memory-mapped X and y (blocks of 6 rows): the K=2 weights are bit-identical to the
    K=2 fit on the same data in memory; each rank checked its half of the file's rows and
    gathered, every epoch, exactly its own slice of every global batch (~N/K rows)."""
    got = np.load(suite / f"mm-{backend}.npz")
    mem = np.load(suite / f"eq-{backend}-float64-sgd.npz")
    assert np.array_equal(got["params"], mem["params"])
    assert got["hashes"].tolist() == mem["hashes"].tolist()
    G = 2 * BATCH
    for rank in (0, 1):
        reads = json.loads((suite / f"reads-{backend}-{rank}.json").read_text())
        assert reads["validated"] == N_ROWS // 2  # rank r checks rows [45r, 45(r+1))
        slices = [rank_slice(min(G, N_ROWS - b), BATCH, rank) for b in range(0, N_ROWS, G)]
        own = sum(hi - lo for lo, hi in slices)
        assert own == (48, 42)[rank]
        per_epoch = np.diff([0, *reads["gathered"]]).tolist()
        assert per_epoch == [own] * EPOCHS, (rank, per_epoch)


@needs_mpi
def test_bad_data_in_one_shard_stops_every_rank(suite):
    """A NaN in rank 1's in-memory X, and in a row of a shared memory-mapped file that rank
    1 checks: both ranks stop at setup, rank 0 naming rank 1 and the row."""
    r0, r1 = _outcomes(suite)
    assert r1["baddata"].startswith("ValueError: X contains NaN")
    assert r0["baddata"].startswith("DistributedError: rank 1 of 2 failed at setup: "
                                    "ValueError: X contains NaN")
    assert r1["mm-bad"].startswith("ValueError: X contains NaN or inf: X[60, 2] is NaN")
    assert r0["mm-bad"].startswith("DistributedError: rank 1 of 2 failed at setup: "
                                   "ValueError: X contains NaN or inf: X[60, 2]")


@needs_mpi
@pytest.mark.parametrize("mode,where", [("stepraise", "step 8"), ("raise", "the end of epoch 2")])
def test_an_exception_in_one_rank_stops_every_rank_and_resume_works(suite, mode, where):
    """Rank 1 raises (inside a step, or in its epoch-end callback): both ranks stop with
    a message naming rank 1, the last checkpoint is intact and resuming from it with the
    same K gives the weights of an uninterrupted run, bit for bit."""
    r0, r1 = _outcomes(suite)
    assert r1[mode].startswith("RuntimeError: injected failure")
    assert r0[mode].startswith(f"DistributedError: rank 1 of 2 failed at {where}")
    assert not list(suite.glob("*.tmp*"))  # checkpoints written whole, no litter
    assert r0["straight"] == r1["straight"] == "done"
    assert r0[f"resume-{mode}"] == r1[f"resume-{mode}"] == "done"
    a = np.load(suite / "straight.npz")["params"]
    b = np.load(suite / f"resume-{mode}.npz")["params"]
    assert np.array_equal(a, b), f"resumed after {where}: weights differ"


@needs_mpi
def test_resume_with_another_number_of_ranks_is_refused(suite):
    """A K=2 checkpoint records K and the per-rank batch: resuming it on K=1 (COMM_SELF, or
    one process without comm) or a single-process checkpoint on K=2 is a CheckpointError
    naming both, raised before anything changes."""
    for got in _outcomes(suite):
        assert got["k1-of-k2"].startswith("CheckpointError: ")
        assert "K=2 ranks of batch_size 8 (global batches of 16)" in got["k1-of-k2"]
        assert "this fit runs on K=1 ranks of batch_size 8" in got["k1-of-k2"]
        assert "CheckpointError: " in got["k2-of-single"]
        assert "written by a fit on a single process (K=1)" in got["k2-of-single"]
        assert "this fit runs on K=2 ranks" in got["k2-of-single"]
    model = model_of("sgd", BACKENDS[0], "float64")
    before = model.state_snapshot()
    with pytest.raises(CheckpointError, match=r"K=2 ranks .* this fit runs on a single "
                                              r"process \(K=1\)"):
        model.fit(*data("sgd"), epochs=6, batch_size=2 * BATCH, optimizer=optimizer_of("sgd"),
                  resume=suite / "k2.safetensors", progress=False)
    after = model.state_snapshot()
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert before[2] == after[2]  # the data-order generator too


def test_checkpoint_world_is_checked(tmp_path):
    """restore_training with the recorded (K, batch) accepts the same K (another per-rank
    batch too, as one process does) and refuses another K; a malformed record is refused."""
    model = model_of("sgd", BACKENDS[0], "float64")
    opt = optimizer_of("sgd")
    opt.bind(model.plan.n_params, model.dtype)
    path = tmp_path / "c.safetensors"
    save_training(model, opt, path, 1, {"loss": [1.0]}, world=(4, 8))
    assert restore_training(model, opt, path, world=(4, 32))[0] == 1
    with pytest.raises(CheckpointError, match=r"K=4 ranks of batch_size 8 .* K=3 ranks"):
        restore_training(model, opt, path, world=(3, 8))
    save_training(model, opt, path, 1, {"loss": [1.0]}, world=(0, 8))
    with pytest.raises(CheckpointError, match="data_parallel.*positive integers"):
        restore_training(model, opt, path, world=(0, 8))


@needs_mpi
def test_a_rank_that_hangs_is_aborted_by_the_watchdog(tmp_path):
    """No Python exception to report (rank 1 sleeps): the others' collective times out
    (Group(timeout=2)) and MPI_Abort ends the whole job with a message."""
    proc = _run(2, str(MPI_DIR / "faults.py"), "hang", str(tmp_path), timeout=90)
    assert proc.returncode != 0
    assert "no answer from the other ranks" in proc.stderr
    assert (tmp_path / "ckpt.safetensors").exists()


@needs_mpi
def test_a_killed_rank_ends_the_job(tmp_path):
    proc = _run(2, str(MPI_DIR / "faults.py"), "kill", str(tmp_path), timeout=90)
    assert proc.returncode != 0
    assert "rank 0: done" not in proc.stdout


@needs_mpi
def test_bad_comm_is_refused_before_anything_changes():
    model = model_of("sgd", BACKENDS[0], "float64")
    before = model.bufs.params.copy()
    X, y = data("sgd")
    with pytest.raises(TypeError, match="intracommunicator"):
        model.fit(X, y, epochs=1, comm="COMM_WORLD", progress=False)
    assert np.array_equal(model.bufs.params, before)
    with pytest.raises(ValueError, match="timeout"):
        Group(None, timeout=0)
