"""The tolerance policy (docs/design.md §5), in one place for the tests, `gradkern check`
and the benchmarks' agreement checks.

Elementwise, the rule everywhere: a result x agrees with its float64 reference when

    |x − ref| ≤ k·u·S

u the machine epsilon of x's dtype, S the error scale of the computation (|A|·|B| for a
matmul, the magnitudes of the terms for elementwise steps, the running-error magnitude of
`magnitudes.Magnitudes` for whole passes) and k a small constant named below. `Worst`
accumulates the worst ratio |x − ref| / bound over many comparisons; `assert_close` is
the same test as an assertion.

Coarser whole-tensor bounds, for quantities that compound many steps (whole-model
driver results, the PyTorch tests' ten-step trajectories, the benchmark's end-to-end
gradients), are named here too, so that no other module carries a tolerance of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TINY = float(np.finfo(np.float64).tiny)

# ---- k of k·u·S
K_MATMUL = 16.0     # matrix products, bias sums, elementwise gradients
K_ACT = 8.0         # activation outputs: a few ulps of the result
K_STATS = 64.0      # batch statistics, losses, ten optimizer steps
K_TORCH = 16.0      # the PyTorch referee in float32, against Magnitudes' S
K_BENCH = 16.0      # the benchmark's kernel-by-kernel check: K_BENCH·u·S + K_BENCH_REF·u·|ref|
K_BENCH_REF = 4.0
TORCH_RTOL64 = 1e-7  # the PyTorch referee in float64: |ours − torch| ≤ 1e-7·S
SCHED_LR_RTOL = 1e-12  # a scheduler's rate against torch's: |ours − torch| ≤ 1e-12·|torch|

# ---- finite differences (float64, central): |analytic − numeric| ≤ atol + rtol·|numeric|
FD_EPS, FD_ATOL, FD_RTOL = 1e-6, 1e-5, 1e-3
KINK = 1e-3  # ReLU-family inputs are kept this far from 0

# ---- whole-tensor bounds: max |x − ref| ≤ rtol · max |ref| over a group of tensors
DRIVER_RTOL = {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-10}  # driver vs reference
TORCH_TEST_RTOL = {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-7}  # tests vs torch
# the benchmark's end to end check: relative Frobenius error of each gradient tensor (float32
# admits a ReLU flipping between two correct summation orders, a whole term)
E2E_RTOL = {np.dtype(np.float32): 5e-2, np.dtype(np.float64): 1e-8}


def eps_of(dtype) -> float:
    """u: the machine epsilon of a dtype."""
    return float(np.finfo(np.dtype(dtype)).eps)


def rtol_of(table: dict, dtype) -> float:
    return table[np.dtype(dtype)]


# ============================================================================ elementwise
@dataclass
class Worst:
    """The worst comparison seen: error / bound, the error, where it was, how many elements
    were compared and how many exceeded their bound."""

    ratio: float = 0.0
    err: float = 0.0
    where: str = ""
    compared: int = 0
    n_bad: int = 0

    @property
    def ok(self) -> bool:
        return self.compared > 0 and self.ratio <= 1.0

    def add(self, got, ref, bound, where: str) -> None:
        """Compare arrays elementwise: |got − ref| against bound (broadcast to ref's shape).
        Equal values (equal infinities, NaN against NaN) agree; any other NaN or inf is an
        infinite error."""
        got = np.asarray(got, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        if got.shape != ref.shape:
            self._set(math.inf, math.inf, f"{where}: shape {got.shape} != {ref.shape}")
            self.n_bad += 1
            return
        bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), ref.shape)
        self.compared += ref.size
        if ref.size == 0:
            return
        with np.errstate(invalid="ignore", over="ignore"):
            err = np.abs(got - ref)
        same = (got == ref) | (np.isnan(got) & np.isnan(ref))
        err = np.where(same, 0.0, np.where(np.isnan(err), np.inf, err))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ratio = np.where(err == 0, 0.0, err / np.maximum(bound, TINY))
        self.n_bad += int(np.count_nonzero(ratio > 1.0))
        i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        if ratio[i] > self.ratio or self.where == "":
            idx = ",".join(map(str, i))
            self._set(float(ratio[i]), float(err[i]),
                      f"{where} [{idx}]: got {got[i]:.9g}, ref {ref[i]:.9g}, "
                      f"bound {bound[i]:.3g}")

    def add_scalar(self, got: float, ref: float, bound: float, where: str) -> None:
        self.add(np.array([got]), np.array([ref]), np.array([bound]), where)

    def require(self, ok: bool, where: str) -> None:
        """An exact property (bit-identical, untouched): counts as one comparison."""
        self.add_scalar(0.0 if ok else math.inf, 0.0, 1.0, where)

    def _set(self, ratio: float, err: float, where: str) -> None:
        if ratio >= self.ratio:
            self.ratio, self.err, self.where = ratio, err, where


def assert_close(x, ref, scale, k: float = K_MATMUL, what: str = "", dtype=None) -> None:
    """|x − ref| ≤ k·u·scale elementwise, u the epsilon of `dtype` (default x's dtype, or
    float64 for integers); an AssertionError names the worst element otherwise."""
    x = np.asarray(x)
    if dtype is None:
        dtype = x.dtype if x.dtype.kind == "f" else np.float64
    u = eps_of(dtype)
    ref = np.asarray(ref, dtype=np.float64)
    assert x.shape == ref.shape, f"{what}: shape {x.shape} != {ref.shape}"
    w = Worst()
    w.add(x, ref, k * u * np.asarray(scale, dtype=np.float64) + TINY, what)
    if w.ratio > 1.0:
        raise AssertionError(f"{what}: {w.n_bad} of {ref.size} elements beyond {k:g}·u·S; "
                             f"worst (error/bound {w.ratio:.3g}) at {w.where}")


def assert_group_close(x, ref, rtol: float, scale: float | None = None,
                       what: str = "") -> None:
    """max |x − ref| ≤ rtol·scale, scale defaulting to max |ref| (a whole-tensor bound:
    pass the scale of the tensor group for tensors that are mathematically zero)."""
    ref = np.asarray(ref, dtype=np.float64)
    if scale is None:
        scale = max(float(np.abs(ref).max(initial=0.0)), 1e-30)
    assert np.shape(x) == ref.shape, f"{what}: shape {np.shape(x)} != {ref.shape}"
    err = float(np.abs(np.asarray(x, dtype=np.float64) - ref).max(initial=0.0))
    assert err <= rtol * scale, f"{what}: max error {err:.3g} > {rtol:g} × scale {scale:.3g}"


def group_scale(tensors) -> float:
    """max |t| over a group of tensors: the scale of `assert_group_close`."""
    return max(float(np.abs(np.asarray(t)).max(initial=0.0)) for t in tensors)


def rel_frobenius(got, ref) -> float:
    """‖got − ref‖ / ‖ref‖ (‖got − ref‖ when ref is zero; inf when not finite)."""
    ref = np.asarray(ref, dtype=np.float64)
    norm = float(np.linalg.norm(ref))
    err = float(np.linalg.norm(np.asarray(got, dtype=np.float64) - ref))
    rel = err / norm if norm > 0 else err
    return rel if math.isfinite(rel) else math.inf


@dataclass
class Excess:
    """The result of `excess_inplace`: the worst ratio, elements beyond their bound, and
    whether every error was finite; `index` is the element furthest beyond."""

    ratio: float
    n_bad: int
    finite: bool
    index: tuple


def excess_inplace(x: np.ndarray, ref: np.ndarray, scale: np.ndarray, u: float,
                   k: float = K_BENCH, k_ref: float = K_BENCH_REF) -> Excess:
    """|x − ref| ≤ k·u·scale + k_ref·u·|ref| over arrays too large for temporaries: `scale`
    (float64) is overwritten. Unlike `Worst`, a NaN anywhere is a failure."""
    bound = np.abs(ref)
    bound *= k_ref * u
    scale *= k * u
    bound += scale
    err = x.astype(np.float64)
    err -= ref
    np.abs(err, out=err)
    finite = bool(np.all(np.isfinite(err)))
    excess = np.subtract(err, bound, out=scale)  # reuse scale's memory
    worst = int(np.argmax(excess))
    n_bad = int(np.count_nonzero(excess > 0)) if excess.flat[worst] > 0 else 0
    np.maximum(bound, TINY, out=bound)
    np.divide(err, bound, out=err)
    ratio = float(err.max(initial=0.0))
    index = tuple(int(i) for i in np.unravel_index(worst, x.shape))
    return Excess(ratio, n_bad, finite, index)
