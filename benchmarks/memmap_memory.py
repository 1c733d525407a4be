"""Peak anonymous memory while training on a memory-mapped file many times larger than one
block (issue 14 item 1; docs/distributed.md, "Data larger than memory").

Writes a float32 X (.npy, --gb gigabytes) and int64 labels to --dir block by block, then
in a fresh child process (so that writing leaves nothing behind) maps them with
np.load(mmap_mode="r") and runs fit (one epoch, validation on the last 10 %), evaluate and
predict, sampling the child's RssAnon (/proc/self/status: the memory the process
allocated, not the file's pages in the page cache) every 2 ms. Prints one Markdown row per
phase and deletes the files.

    .venv/bin/python benchmarks/memmap_memory.py --gb 2 --backend c
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

FEATURES, CLASSES = 64, 8


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class AnonPeak:
    """The largest RssAnon seen by a sampling thread while the block runs."""

    def __init__(self, every: float = 0.002) -> None:
        self.every, self.peak, self._stop = every, 0, threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status_kb("RssAnon"))
            time.sleep(self.every)

    def __enter__(self):
        self.peak = _status_kb("RssAnon")
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _status_kb("RssAnon"))


def write(directory: Path, gb: float) -> tuple[Path, Path, int]:
    rows = int(gb * 2**30) // (FEATURES * 4)
    rng = np.random.default_rng(0)
    w = rng.normal(size=(FEATURES, CLASSES))
    X = np.lib.format.open_memmap(directory / "X.npy", mode="w+", dtype=np.float32,
                                  shape=(rows, FEATURES))
    y = np.lib.format.open_memmap(directory / "y.npy", mode="w+", dtype=np.int64,
                                  shape=(rows,))
    step = 1 << 18
    for s in range(0, rows, step):
        xb = rng.normal(size=(min(step, rows - s), FEATURES)).astype(np.float32)
        X[s : s + len(xb)] = xb
        y[s : s + len(xb)] = (xb @ w).argmax(axis=1)
    X.flush()
    y.flush()
    del X, y
    return directory / "X.npy", directory / "y.npy", rows


def measure(xpath: str, ypath: str, backend: str, batch: int) -> dict:
    import gradkern as gk
    from gradkern import stream

    out = {"anon_start_mb": _status_kb("RssAnon") / 1024}
    X = np.load(xpath, mmap_mode="r")
    y = np.load(ypath, mmap_mode="r")
    n = X.shape[0]
    k = n - n // 10
    model = gk.MLP([FEATURES, 32, CLASSES], loss="cross_entropy", backend=backend, seed=0)
    model.fit(X[:1024], y[:1024], epochs=1, batch_size=batch, progress=False)  # compile
    out["anon_model_mb"] = _status_kb("RssAnon") / 1024
    for name, fn in (
            ("fit", lambda: model.fit(X[:k], y[:k], epochs=1, batch_size=batch,
                                      progress=False, validation_data=(X[k:], y[k:]))),
            ("evaluate", lambda: model.evaluate(X, y)),
            ("predict", lambda: model.predict(X))):
        t0 = time.perf_counter()
        with AnonPeak() as p:
            result = fn()
        out[name] = {"peak_anon_mb": p.peak / 1024, "seconds": time.perf_counter() - t0}
        if name == "evaluate":
            out[name]["figures"] = result
    out.update(rows=n, file_mb=X.nbytes / 2**20, chunk_mb=stream.CHUNK_BYTES / 2**20,
               perm_mb=n * 8 / 2**20, vmhwm_mb=_status_kb("VmHWM") / 1024,
               rss_file_mb=_status_kb("RssFile") / 1024, backend=model.backend_name)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(*args.child, args.backend, args.batch_size)))
        return
    directory = Path(tempfile.mkdtemp(prefix="gradkern-memmap-", dir=args.dir))
    try:
        xp, yp, rows = write(directory, args.gb)
        proc = subprocess.run([sys.executable, __file__, "--backend", args.backend,
                               "--batch-size", str(args.batch_size), "--child", str(xp),
                               str(yp)], capture_output=True, text=True, check=False)
        if proc.returncode:
            sys.exit(proc.stderr)
        r = json.loads(next(ln for ln in proc.stdout.splitlines()
                            if ln.startswith("RESULT "))[7:])
    finally:
        for p in directory.glob("*"):
            p.unlink()
        directory.rmdir()
    print(f"file {r['file_mb']:.0f} MB ({r['rows']:,} rows x {FEATURES} float32), block "
          f"{r['chunk_mb']:.0f} MB, permutation {r['perm_mb']:.0f} MB, backend {r['backend']}; "
          f"RssAnon at start {r['anon_start_mb']:.0f} MB, with the model {r['anon_model_mb']:.0f}"
          f" MB; VmHWM {r['vmhwm_mb']:.0f} MB (file pages included), RssFile at the end "
          f"{r['rss_file_mb']:.0f} MB")
    print("| phase | peak RssAnon MB | above the model MB | seconds |\n|---|---|---|---|")
    for phase in ("fit", "evaluate", "predict"):
        p = r[phase]
        print(f"| {phase} | {p['peak_anon_mb']:.0f} | {p['peak_anon_mb'] - r['anon_model_mb']:.0f}"
              f" | {p['seconds']:.1f} |")
    print(f"evaluate: {r['evaluate']['figures']}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
