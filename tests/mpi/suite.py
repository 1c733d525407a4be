"""Run under `mpiexec -n 2`: every distributed case that leaves the job running, in one
launch (tests/test_distributed.py reads what it writes).

    suite.py OUT BACKEND...

Rank 0 writes OUT/<name>.npz (final params, running statistics, per-epoch weight hashes,
loss history); every rank writes OUT/outcomes-<rank>.json: {case: "done" or "<Error>: <msg>"}
and OUT/reads-<rank>.json (rows of the memory-mapped X each rank read). Cases, in order:

- eq-<backend>-<dtype>-<case>: cases.equivalence_cases and bn-<backend> (batch norm and
  dropout) with fit(comm=COMM_WORLD), every rank's weight hash compared after every epoch;
- one-<backend>: K=1 (COMM_SELF) on the first backend;
- mm-<backend>: the eq-<backend>-float64-sgd fit on memory-mapped X and y with small
  stream blocks (each rank counts the rows of X it validated and gathered);
- faults: mm-bad (a NaN in a row of rank 1's share of the file), baddata (a NaN in rank 1's
  in-memory X), stepraise (rank 1's gradients raise at step 8, in epoch 2), raise (rank 1's
  on_epoch raises after epoch 2; checkpoints every epoch), straight (4 epochs), resume-<mode>
  (from each fault's checkpoint to epoch 4), k1-of-k2 (K=1 resume of the straight run's K=2
  checkpoint), k2-of-single (K=2 resume of a single-process checkpoint).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI

import gradkern.stream as stream
from gradkern.distributed import weights_hash

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import (  # noqa: E402
    BATCH,
    EPOCHS,
    bn_dtype,
    data,
    equivalence_cases,
    model_of,
    optimizer_of,
)

COMM = MPI.COMM_WORLD
RANK = COMM.rank
FAULT_EPOCHS = 4
READS = {"validated": 0, "gathered": 0}


def _count_reads() -> None:
    """Count the rows of a memory-mapped X (5 features) each rank reads."""
    blocks, take = stream.Stream.blocks, stream.Stream.take

    def counted_blocks(self, *a, **kw):
        for start, block in blocks(self, *a, **kw):
            if self.ndim == 2 and self.shape[1] == 5:
                READS["validated"] += block.shape[0]
            yield start, block

    def counted_take(self, idx):
        if self.ndim == 2 and self.shape[1] == 5:
            READS["gathered"] += len(idx)
        return take(self, idx)

    stream.Stream.blocks, stream.Stream.take = counted_blocks, counted_take


def train(out: Path, name: str, backend: str, dtype: str, case: str, X=None, y=None,
          comm=COMM, epochs: int = EPOCHS, per_epoch=None, **kw):
    if X is None:
        X, y = data(case)
    model = model_of(case, backend, dtype)
    hashes = []

    def check(epoch, figures):
        every = comm.allgather(weights_hash(model))
        assert len(set(every)) == 1, f"{name} epoch {epoch}: weights differ across ranks {every}"
        hashes.append(every[0])
        if per_epoch is not None:
            per_epoch(epoch)

    hist = model.fit(X, y, epochs=epochs, batch_size=BATCH, optimizer=optimizer_of(case),
                     progress=False, on_epoch=kw.pop("on_epoch", check), comm=comm, **kw)
    if RANK == 0:
        np.savez(out / f"{name}.npz", params=model.bufs.params, state=model.bufs.state,
                 hashes=np.array(hashes), loss=np.array(hist["loss"]))
    return model


def outcome(fn) -> str:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the outcome is the test's to judge
        return f"{type(exc).__name__}: {exc}"
    return "done"


def memmaps(out: Path, name: str, X, y):
    if RANK == 0:
        np.save(out / f"{name}-X.npy", X)
        np.save(out / f"{name}-y.npy", y)
    COMM.Barrier()
    return (np.load(out / f"{name}-X.npy", mmap_mode="r"),
            np.load(out / f"{name}-y.npy", mmap_mode="r"))


def faults(out: Path, backend: str, outcomes: dict) -> None:
    X, y = data("sgd")
    run = dict(backend=backend, dtype="float64", case="sgd", epochs=FAULT_EPOCHS,
               on_epoch=None)

    Xb = X.copy()
    Xb[60, 2] = np.nan  # rows 45..89 are rank 1's share of the file's check
    Xm, ym = memmaps(out, "bad", Xb, y)
    outcomes["mm-bad"] = outcome(lambda: train(out, "mm-bad", X=Xm, y=ym, **run))

    Xr = X.copy()
    if RANK == 1:
        Xr[5, 2] = np.nan
    outcomes["baddata"] = outcome(lambda: train(out, "baddata", X=Xr, y=y, **run))

    backend_cls = type(model_of("sgd", backend, "float64").backend)
    real = backend_cls.gradients
    calls = [0]

    def gradients(self, *args, **kw):
        calls[0] += 1
        if RANK == 1 and calls[0] == 8:
            raise RuntimeError("injected failure in rank 1's step")
        return real(self, *args, **kw)

    backend_cls.gradients = gradients
    try:
        outcomes["stepraise"] = outcome(lambda: train(
            out, "stepraise", X=X, y=y, checkpoint=out / "stepraise.safetensors", **run))
    finally:
        backend_cls.gradients = real

    def on_epoch(epoch, figures):
        if RANK == 1 and epoch == 2:
            raise RuntimeError("injected failure in rank 1's on_epoch")

    outcomes["raise"] = outcome(lambda: train(
        out, "raise", X=X, y=y, checkpoint=out / "raise.safetensors",
        **{**run, "on_epoch": on_epoch}))
    outcomes["straight"] = outcome(lambda: train(
        out, "straight", X=X, y=y, checkpoint=out / "k2.safetensors", **run))
    for mode in ("stepraise", "raise"):
        outcomes[f"resume-{mode}"] = outcome(lambda mode=mode: train(
            out, f"resume-{mode}", X=X, y=y, resume=out / f"{mode}.safetensors", **run))

    outcomes["k1-of-k2"] = outcome(lambda: train(
        out, "k1-of-k2", X=X, y=y, comm=MPI.COMM_SELF, resume=out / "k2.safetensors", **run))
    if RANK == 0:
        model_of("sgd", backend, "float64").fit(
            X, y, epochs=1, batch_size=BATCH, optimizer=optimizer_of("sgd"), progress=False,
            checkpoint=out / "single.safetensors")
    COMM.Barrier()
    outcomes["k2-of-single"] = outcome(lambda: train(
        out, "k2-of-single", X=X, y=y, resume=out / "single.safetensors", **run))


def main() -> int:
    out, backends = Path(sys.argv[1]), sys.argv[2:]
    outcomes: dict[str, str] = {}
    for backend, dtype, case in equivalence_cases(backends):
        train(out, f"eq-{backend}-{dtype}-{case}", backend, dtype, case)
    for backend in backends:
        train(out, f"bn-{backend}", backend, bn_dtype(backend), "bn")
    train(out, f"one-{backends[0]}", backends[0], "float64", "sgd", comm=MPI.COMM_SELF)

    _count_reads()
    stream.CHUNK_BYTES = 256  # 6 rows of X a block: validation and gathers in many blocks
    X, y = data("sgd")
    Xm, ym = memmaps(out, "mm", X, y)
    for backend in backends:
        READS.update(validated=0, gathered=0)
        per_epoch = []
        train(out, f"mm-{backend}", backend, "float64", "sgd", X=Xm, y=ym,
              per_epoch=lambda epoch, per_epoch=per_epoch: per_epoch.append(READS["gathered"]))
        (out / f"reads-{backend}-{RANK}.json").write_text(json.dumps(
            {"validated": READS["validated"], "gathered": per_epoch}))
    faults(out, backends[0], outcomes)
    (out / f"outcomes-{RANK}.json").write_text(json.dumps(outcomes, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
