"""What the figures were measured on: CPU, threads, BLAS kernel, compilers, versions.

Also the two process-level levers a benchmark must hold still: the thread count of every
engine (pinned and recorded), and the OpenBLAS kernel, which an environment variable
(OPENBLAS_CORETYPE) can pin to an older one. That pin can only be lifted before NumPy is
loaded, so `gradkern bench` re-runs itself in a child process without it (see
`blas_pin_env`); the tests never do.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

# variables that pin or resize the OpenBLAS kernel; lifted together for --native-blas
BLAS_PIN_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
LIFTED_MARK = "GRADKERN_BENCH_LIFTED"  # set in the child: what the parent removed
RECORDED_ENV_PREFIXES = ("OPENBLAS", "OMP_", "MKL", "NUMBA", "GRADKERN", "KMP_", "GOMP",
                         "BLIS", "NVPL")


def blas_pin_env() -> dict[str, str]:
    """The OpenBLAS pinning variables set in this process's environment."""
    return {k: os.environ[k] for k in BLAS_PIN_VARS if k in os.environ}


def all_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_info() -> dict:
    info = {"model": platform.processor() or platform.machine(), "flags": [],
            "logical_cpus": os.cpu_count(), "usable_cpus": all_cores()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and info["model"] in ("", platform.machine(), platform.processor()):
            info["model"] = value.strip()
        elif key == "flags" and not info["flags"]:
            info["flags"] = value.split()
        elif key == "cpu MHz" and "mhz" not in info:
            info["mhz"] = float(value)
    simd = [f for f in info["flags"] if f.startswith(("avx", "fma", "sse4"))]
    info["simd"] = simd
    return info


def blas_info() -> dict:
    """Which BLAS NumPy calls, with what kernel and how many threads."""
    import numpy as np

    out: dict = {"numpy": np.__version__}
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        out["numpy_build_blas"] = {k: blas.get(k) for k in ("name", "version",
                                                             "openblas configuration")}
    except Exception as exc:  # older NumPy has no mode="dicts"
        out["numpy_build_blas"] = f"unavailable: {exc}"
    try:
        from threadpoolctl import threadpool_info

        out["threadpools"] = threadpool_info()
        kernels = [p.get("architecture") for p in out["threadpools"]
                   if p.get("user_api") == "blas"]
        out["kernel"] = ", ".join(k for k in kernels if k) or "unknown"
    except ImportError:
        out["threadpools"] = "threadpoolctl not installed"
        out["kernel"] = "unknown (install threadpoolctl to record it)"
    return out


def numba_info() -> dict:
    try:
        import numba
    except Exception as exc:
        return {"available": False, "reason": str(exc)}
    out = {"available": True, "version": numba.__version__,
           "num_threads": numba.get_num_threads(),
           "configured_layer": numba.config.THREADING_LAYER}
    try:
        out["threading_layer"] = numba.threading_layer()
    except ValueError:  # no parallel function has run yet
        out["threading_layer"] = "not initialized (no parallel kernel ran)"
    return out


def torch_info() -> dict:
    try:
        import torch
    except Exception as exc:
        return {"available": False, "reason": str(exc)}
    return {"available": True, "version": torch.__version__,
            "num_threads": torch.get_num_threads(),
            "parallel_info": torch.__config__.parallel_info()}


def git_commit() -> dict:
    root = Path(__file__).resolve().parents[3]
    out = {}
    for key, cmd in (("commit", ["git", "rev-parse", "HEAD"]),
                     ("dirty", ["git", "status", "--porcelain", "--untracked-files=no"])):
        try:
            r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=10)
            out[key] = r.stdout.strip() if r.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            out[key] = None
    if out.get("dirty") is not None:
        out["dirty"] = bool(out["dirty"])
    return out


def backend_info(names: list[str]) -> dict:
    from .. import backends

    out = {"status": backends.status()}
    for name in names:
        try:
            out[name] = _jsonable(backends.info(name))
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)


def machine_info(gk_names: list[str]) -> dict:
    import gradkern

    return {
        "cpu": cpu_info(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "gradkern": {"version": gradkern.__version__, **git_commit()},
        "blas": blas_info(),
        "numba": numba_info(),
        "torch": torch_info(),
        "backends": backend_info(gk_names),
        "env": {k: v for k, v in sorted(os.environ.items())
                if k.startswith(RECORDED_ENV_PREFIXES)},
        "blas_pin_lifted": _lifted(),
    }


def _lifted() -> dict:
    """What the parent process removed from the environment before starting this one."""
    import json

    raw = os.environ.get(LIFTED_MARK)
    return json.loads(raw) if raw else {}


class ThreadPin:
    """Pins every engine to n threads and records what each one reports back."""

    def __init__(self, n: int):
        self.n = n
        self.limits = None

    def apply(self) -> dict:
        import gradkern

        n = self.n
        done: dict = {"requested": n}
        setter = getattr(gradkern, "set_threads", None)
        if setter is None:
            try:
                from ..threads import set_threads as setter
            except ImportError:
                setter = None
        if setter is not None:
            setter(n)  # gradkern backends (C OpenMP, Numba) and BLAS together
            done["gradkern.set_threads"] = n
        try:
            from threadpoolctl import threadpool_limits

            self.limits = threadpool_limits(limits=n)  # BLAS and OpenMP pools in the process
        except ImportError:
            done["threadpoolctl"] = "not installed: BLAS keeps its own thread count"
        try:
            import numba

            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        except Exception:
            pass
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(n)
        done.update(self.report())
        return done

    @staticmethod
    def report() -> dict:
        out = {}
        try:
            from threadpoolctl import threadpool_info

            out["threadpools"] = {f"{p['internal_api']}:{Path(p['filepath']).name}":
                                  p["num_threads"] for p in threadpool_info()}
        except ImportError:
            pass
        if "numba" in sys.modules:
            out["numba"] = sys.modules["numba"].get_num_threads()
        if "torch" in sys.modules:
            out["torch"] = sys.modules["torch"].get_num_threads()
        return out


class OtherLoad:
    """Share of the machine's CPU time used by *other* processes between start() and
    stop(): busy time from /proc/stat minus this process's own CPU time. A benchmark on a
    shared machine reports it, since neighbours steal cores from multithreaded kernels."""

    def __init__(self):
        self.t0 = None

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                fields = f.readline().split()[1:]
        except OSError:
            return None
        ticks = [int(v) for v in fields]
        hz = os.sysconf("SC_CLK_TCK")
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        total = sum(ticks[:8])  # guest time is already counted in user
        # this process's ticks from the same accounting (os.times() is precise, not
        # sampled, and disagrees with /proc/stat by tens of percent in a VM)
        try:
            with open("/proc/self/stat") as f:
                own = f.read().rsplit(")", 1)[1].split()
            own_ticks = int(own[11]) + int(own[12])  # utime, stime of every thread
        except (OSError, IndexError, ValueError):
            t = os.times()
            own_ticks = (t.user + t.system) * hz
        return (total - idle) / hz, total / hz, own_ticks / hz

    def start(self) -> OtherLoad:
        self.t0 = self._read()
        return self

    def stop(self) -> float | None:
        """Fraction (0..1) of all cores' time that other processes used since start()."""
        t1 = self._read()
        if self.t0 is None or t1 is None:
            return None
        busy, total, own = (b - a for a, b in zip(self.t0, t1, strict=True))
        if total <= 0:
            return None
        # both counts are sampled at each clock tick: allow two ticks per CPU of slack
        slack = 2 * (os.cpu_count() or 1) / os.sysconf("SC_CLK_TCK")
        return max(0.0, min(1.0, (busy - own - slack) / total))


class SpeedProbe:
    """A fixed little workload timed before and after each measurement, to catch the
    machine running slower than it can: a VM's core can lose much of its speed to a
    neighbour on the same physical core, which no process list shows. The probe is a
    single-threaded loop of small NumPy calls (too small for BLAS to wake its threads, so
    the spinning threads of whatever ran before cannot slow it down)."""

    def __init__(self):
        import numpy as np

        rng = np.random.default_rng(0)
        self.np = np
        self.a = rng.standard_normal((64, 16)).astype(np.float32)
        self.w = rng.standard_normal((16, 16)).astype(np.float32)

    def measure(self) -> dict:
        """Best of five, in µs."""
        import time

        np = self.np
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(100):
                np.maximum(self.a @ self.w, 0)
            times.append(time.perf_counter() - t0)
        return {"serial_us": min(times) * 1e6}
