"""Timing one training step: warm-up first, then several runs, medians and spreads.

The first call is timed on its own (it includes any compilation) and reported apart.
Then a short warm-up, then `runs` runs of `inner` back-to-back steps each; the figure of a
run is its time divided by `inner`, so that steps of a few microseconds are still timed
well above the clock's resolution. Repeat counts adapt to the step time and to a budget
of seconds per cell.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MIN_RUN_S = 0.005  # each run lasts at least this long (inner steps back to back)
MAX_RUNS = 25
MIN_RUNS = 3
WARMUP_S = 0.05


@dataclass
class Timing:
    first_call_s: float
    warmup_steps: int
    runs: int
    inner: int
    samples_us: list[float]  # µs per step, one figure per run

    @property
    def median_us(self) -> float:
        return float(np.median(self.samples_us))

    def summary(self) -> dict:
        s = np.asarray(self.samples_us)
        q1, q3 = np.percentile(s, [25, 75])
        return {"median_us": float(np.median(s)), "min_us": float(s.min()),
                "max_us": float(s.max()), "q1_us": float(q1), "q3_us": float(q3),
                "first_call_s": self.first_call_s, "warmup_steps": self.warmup_steps,
                "runs": self.runs, "inner": self.inner, "samples_us": [float(x) for x in s]}


def plan_repeats(step_s: float, max_seconds: float) -> tuple[int, int]:
    """(runs, inner) for a step of step_s seconds within about max_seconds."""
    step_s = max(step_s, 1e-7)
    inner = max(1, int(np.ceil(MIN_RUN_S / step_s)))
    runs = MAX_RUNS
    if runs * inner * step_s > max_seconds:
        runs = max(MIN_RUNS, int(max_seconds / (inner * step_s)))
        if runs * inner * step_s > max_seconds and inner > 1:
            inner = max(1, int(max_seconds / (runs * step_s)))
    return runs, inner


def time_steps(step: Callable[[], object], max_seconds: float = 1.0,
               clock: Callable[[], float] = time.perf_counter, settle_s: float = 0.0) -> Timing:
    """Time `step` (one training step) after warm-up; about max_seconds in all.

    settle_s: seconds of sleep first. OpenBLAS's threads (and OpenMP's) busy-wait for a
    while after their last call; on a 2-core machine they would take the cores from the
    threads of whatever is timed next. Sleeping lets them go idle.
    """
    if settle_s > 0:
        time.sleep(settle_s)
    t0 = clock()
    step()
    first = clock() - t0
    # warm-up: at least WARMUP_S of steps, two at least; one when steps are slow (the
    # first call already warmed caches and pools, and a slow step is its own warm-up)
    min_warm = 1 if first > 0.2 * max_seconds else 2
    n_warm, t_warm = 0, 0.0
    while n_warm < min_warm or (t_warm < WARMUP_S and t_warm < 0.1 * max_seconds):
        t0 = clock()
        step()
        t_warm += clock() - t0
        n_warm += 1
    runs, inner = plan_repeats(t_warm / n_warm, max_seconds)
    samples = []
    for _ in range(runs):
        t0 = clock()
        for _ in range(inner):
            step()
        samples.append((clock() - t0) / inner * 1e6)
    return Timing(first, n_warm, runs, inner, samples)
