"""Run under `mpiexec -n 2`: one rank fails and every rank must stop, never hang.

    faults.py MODE OUT [BACKEND]

MODE: baddata (rank 1's X holds a NaN), stepraise (rank 1's gradients raise at step 8,
in epoch 2), raise (rank 1's on_epoch raises after epoch 2; checkpoints every epoch),
straight (4 epochs, no fault), resume (resume from OUT/ckpt.safetensors to epoch 4),
hang (rank 1 stops answering after epoch 1; the watchdog's timeout of 3 s aborts the job),
kill (rank 1 is SIGKILLed after epoch 2: the MPI launcher ends the job).
Every rank prints one line `rank R: <outcome>` and exits 0 on success, 1 on a failure;
rank 0 writes OUT/<MODE>.npz with the final weights when fit returns."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
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
    ckpt = out / "ckpt.safetensors"
    kwargs = {}
    if mode == "baddata" and rank == 1:
        X = X.copy()
        X[5, 2] = np.nan
    if mode == "stepraise" and rank == 1:
        calls = [0]
        real = type(model.backend).gradients

        def gradients(self, *args, **kw):
            calls[0] += 1
            if calls[0] == 8:
                raise RuntimeError("injected failure in rank 1's step")
            return real(self, *args, **kw)

        type(model.backend).gradients = gradients
    if mode in ("raise", "stepraise", "hang", "kill"):
        kwargs.update(checkpoint=ckpt, checkpoint_every=1)

    def on_epoch(epoch, figures):
        if mode == "raise" and rank == 1 and epoch == 2:
            raise RuntimeError("injected failure in rank 1's on_epoch")
        if mode == "hang" and rank == 1 and epoch == 1:
            time.sleep(120)
        if mode == "kill" and rank == 1 and epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    if mode == "resume":
        kwargs.update(resume=ckpt)
    group = Group(comm, timeout=3.0) if mode in ("hang", "kill") else comm
    try:
        model.fit(X, y, epochs=EPOCHS, batch_size=BATCH, optimizer=optimizer_of("sgd"),
                  progress=False, on_epoch=on_epoch, comm=group, **kwargs)
    except Exception as exc:
        print(f"rank {rank}: {type(exc).__name__}: {exc}", flush=True)
        return 1
    print(f"rank {rank}: done", flush=True)
    if rank == 0:
        np.savez(out / f"{mode}.npz", params=model.bufs.params)
    return 0


if __name__ == "__main__":
    sys.exit(main())
