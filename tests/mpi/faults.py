"""Run under `mpiexec -n 2`: a rank dies or hangs, and the job must end, never hang.

    faults.py MODE OUT [BACKEND]

MODE: hang (rank 1 stops answering after epoch 1; the watchdog's timeout of 2 s aborts the
job), kill (rank 1 is SIGKILLed after epoch 2: the MPI launcher ends the job). Both write
checkpoints every epoch. The faults a rank reports (bad data, exceptions) and resume run in
one launch of suite.py. Every rank prints `rank R: <outcome>`; exit 0 only if fit returns."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from mpi4py import MPI

from gradkern.distributed import Group

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import BATCH, data, model_of, optimizer_of  # noqa: E402

EPOCHS = 4


def main() -> int:
    mode, out = sys.argv[1], Path(sys.argv[2])
    backend = sys.argv[3] if len(sys.argv) > 3 else "numpy"
    comm = MPI.COMM_WORLD
    rank = comm.rank
    X, y = data("sgd")
    model = model_of("sgd", backend, "float64")

    def on_epoch(epoch, figures):
        if mode == "hang" and rank == 1 and epoch == 1:
            time.sleep(120)
        if mode == "kill" and rank == 1 and epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    try:
        model.fit(X, y, epochs=EPOCHS, batch_size=BATCH, optimizer=optimizer_of("sgd"),
                  progress=False, on_epoch=on_epoch, comm=Group(comm, timeout=2.0),
                  checkpoint=out / "ckpt.safetensors", checkpoint_every=1)
    except Exception as exc:
        print(f"rank {rank}: {type(exc).__name__}: {exc}", flush=True)
        return 1
    print(f"rank {rank}: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
