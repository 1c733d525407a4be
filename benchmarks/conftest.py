"""pytest-benchmark suite over backend × depth × width × batch.

    pytest benchmarks                                   # small default grid
    pytest benchmarks --benchmark-json=out.json         # save (pytest-benchmark format)
    pytest benchmarks --benchmark-compare=0001          # compare with a saved run
    pytest benchmarks --bench-depths 1,4,16 --bench-widths 64,1024 --bench-batches 64,256

Every implementation (each gradkern backend that loads, plain NumPy, PyTorch when it
imports) is checked against the NumPy reference before it is timed. Threads are pinned
to all cores unless --bench-threads says otherwise. The environment's OpenBLAS pin, if
any, is kept: only `gradkern bench` may lift it, in its own process.
"""

from __future__ import annotations

import pytest

from gradkern.bench.machine import ThreadPin, all_cores

DEFAULTS = {"depths": "1,4", "widths": "16,256", "batches": "64"}


def pytest_addoption(parser):
    g = parser.getgroup("gradkern bench grid")
    g.addoption("--bench-backends", default="",
                help="gradkern backends, comma-separated (default: every available one)")
    g.addoption("--bench-peers", default="numpy-plain,torch",
                help="peers, comma-separated (default numpy-plain,torch; '' for none)")
    g.addoption("--bench-depths", default=DEFAULTS["depths"], help="hidden layers")
    g.addoption("--bench-widths", default=DEFAULTS["widths"], help="units per hidden layer")
    g.addoption("--bench-batches", default=DEFAULTS["batches"], help="batch sizes")
    g.addoption("--bench-dtype", default="float32", choices=("float32", "float64"))
    g.addoption("--bench-threads", type=int, default=0, help="threads (default: all cores)")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def pytest_generate_tests(metafunc):
    if "impl" not in metafunc.fixturenames:
        return
    import gradkern as gk
    from gradkern.bench.workload import TORCH, torch_available

    opt = metafunc.config.getoption
    impls = _names(opt("--bench-backends")) or gk.backends.available()
    for name in _names(opt("--bench-peers")):
        if name == TORCH and not torch_available():
            impls.append(pytest.param(name, marks=pytest.mark.skip("PyTorch not importable")))
        else:
            impls.append(name)
    metafunc.parametrize("impl", impls)
    metafunc.parametrize("depth", _ints(opt("--bench-depths")), ids=lambda d: f"d{d}")
    metafunc.parametrize("width", _ints(opt("--bench-widths")), ids=lambda w: f"w{w}")
    metafunc.parametrize("batch", _ints(opt("--bench-batches")), ids=lambda b: f"b{b}")


@pytest.fixture(scope="session")
def bench_dtype(pytestconfig) -> str:
    return pytestconfig.getoption("--bench-dtype")


@pytest.fixture(scope="session", autouse=True)
def pinned_threads(pytestconfig) -> dict:
    """Every engine on the same thread count for the whole session, recorded per test."""
    from gradkern.bench.workload import torch_available

    if torch_available():
        import torch  # noqa: F401 -- loaded first, so that its pool is pinned too
    n = pytestconfig.getoption("--bench-threads") or all_cores()
    pin = ThreadPin(n)
    pin.apply()
    return {"threads": n, **ThreadPin.report()}
