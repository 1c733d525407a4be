"""Run under `mpiexec -n K`: train the same tiny models with fit(comm=MPI.COMM_WORLD) on
every backend and dtype given; after every epoch every rank's weight hash is gathered and
must agree. Rank 0 writes OUT/<backend>-<dtype>.npz: final params, running statistics, the
per-epoch hashes and the loss history (tests/test_distributed.py compares them with a
single process on the same global batches)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI

from gradkern.distributed import weights_hash

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import BATCH, EPOCHS, data, model_of, optimizer_of  # noqa: E402


def main() -> int:
    out = Path(sys.argv[1])
    comm = MPI.COMM_WORLD
    for spec in sys.argv[2:]:
        backend, dtype, case = spec.split(":")
        X, y = data(case)
        model = model_of(case, backend, dtype)
        hashes = []

        def check(epoch, figures, model=model, hashes=hashes):
            every = comm.allgather(weights_hash(model))
            assert len(set(every)) == 1, f"epoch {epoch}: weights differ across ranks {every}"
            hashes.append(every[0])

        hist = model.fit(X, y, epochs=EPOCHS, batch_size=BATCH, optimizer=optimizer_of(case),
                         progress=False, on_epoch=check, comm=comm)
        if comm.rank == 0:
            np.savez(out / f"{backend}-{dtype}-{case}.npz", params=model.bufs.params,
                     state=model.bufs.state, hashes=np.array(hashes),
                     loss=np.array(hist["loss"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
