"""Experiment: Numba loops (serial, blocked, prange) vs np.dot (BLAS) inside jitted code.

Times the three matmuls of a dense layer (forward, input gradient, weight gradient) at
batch 64 for square layers, float32, in one process. The winner per size is what
numba_backend.py uses; its comment quotes the figures this prints.
Run: .venv/bin/python benchmarks/numba_matmul_bench.py
"""

import time

import numba
import numpy as np
from numba import njit, prange

FM = {"reassoc", "contract"}


@njit(fastmath=FM)
def fwd_loop(out, inp, w):
    B, C = inp.shape
    OC = w.shape[1]
    for i in range(B):
        for j in range(OC):
            out[i, j] = 0
        for k in range(C):
            a = inp[i, k]
            for j in range(OC):
                out[i, j] += a * w[k, j]


@njit(fastmath=FM)
def _fwd_block(out, inp, w, i0, i1):
    C = inp.shape[1]
    OC = w.shape[1]
    i = i0
    while i + 4 <= i1:
        for j in range(OC):
            out[i, j] = 0
            out[i + 1, j] = 0
            out[i + 2, j] = 0
            out[i + 3, j] = 0
        for k in range(C):
            a0 = inp[i, k]
            a1 = inp[i + 1, k]
            a2 = inp[i + 2, k]
            a3 = inp[i + 3, k]
            for j in range(OC):
                wk = w[k, j]
                out[i, j] += a0 * wk
                out[i + 1, j] += a1 * wk
                out[i + 2, j] += a2 * wk
                out[i + 3, j] += a3 * wk
        i += 4
    while i < i1:
        for j in range(OC):
            out[i, j] = 0
        for k in range(C):
            a = inp[i, k]
            for j in range(OC):
                out[i, j] += a * w[k, j]
        i += 1


@njit(fastmath=FM)
def fwd_blocked(out, inp, w):
    _fwd_block(out, inp, w, 0, inp.shape[0])


@njit(fastmath=FM, parallel=True)
def fwd_par(out, inp, w):
    B = inp.shape[0]
    nb = (B + 15) // 16
    for t in prange(nb):
        _fwd_block(out, inp, w, t * 16, min(B, t * 16 + 16))


@njit
def fwd_blas(out, inp, w):
    np.dot(inp, w, out)


# dinp (B, C) = dout (B, OC) @ w (C, OC).T
@njit(fastmath=FM)
def dinp_loop(dinp, dout, w):
    B, OC = dout.shape
    C = w.shape[0]
    for i in range(B):
        for k in range(C):
            s = dout.dtype.type(0)
            for j in range(OC):
                s += dout[i, j] * w[k, j]
            dinp[i, k] = s


@njit(fastmath=FM)
def _dinp_block(dinp, dout, w, i0, i1):
    OC = dout.shape[1]
    C = w.shape[0]
    i = i0
    while i + 4 <= i1:
        for k in range(C):
            s0 = s1 = s2 = s3 = dout.dtype.type(0)
            for j in range(OC):
                wk = w[k, j]
                s0 += dout[i, j] * wk
                s1 += dout[i + 1, j] * wk
                s2 += dout[i + 2, j] * wk
                s3 += dout[i + 3, j] * wk
            dinp[i, k] = s0
            dinp[i + 1, k] = s1
            dinp[i + 2, k] = s2
            dinp[i + 3, k] = s3
        i += 4
    while i < i1:
        for k in range(C):
            s = dout.dtype.type(0)
            for j in range(OC):
                s += dout[i, j] * w[k, j]
            dinp[i, k] = s
        i += 1


@njit(fastmath=FM)
def dinp_blocked(dinp, dout, w):
    _dinp_block(dinp, dout, w, 0, dout.shape[0])


@njit(fastmath=FM, parallel=True)
def dinp_par(dinp, dout, w):
    B = dout.shape[0]
    nb = (B + 15) // 16
    for t in prange(nb):
        _dinp_block(dinp, dout, w, t * 16, min(B, t * 16 + 16))


@njit
def dinp_blas(dinp, dout, w):
    np.dot(dout, w.T, dinp)


# dw (C, OC) = inp (B, C).T @ dout (B, OC)
@njit(fastmath=FM)
def _dw_block(dw, inp, dout, k0, k1):
    B = inp.shape[0]
    OC = dout.shape[1]
    k = k0
    while k + 4 <= k1:
        for j in range(OC):
            dw[k, j] = 0
            dw[k + 1, j] = 0
            dw[k + 2, j] = 0
            dw[k + 3, j] = 0
        for i in range(B):
            a0 = inp[i, k]
            a1 = inp[i, k + 1]
            a2 = inp[i, k + 2]
            a3 = inp[i, k + 3]
            for j in range(OC):
                d = dout[i, j]
                dw[k, j] += a0 * d
                dw[k + 1, j] += a1 * d
                dw[k + 2, j] += a2 * d
                dw[k + 3, j] += a3 * d
        k += 4
    while k < k1:
        for j in range(OC):
            dw[k, j] = 0
        for i in range(B):
            a = inp[i, k]
            for j in range(OC):
                dw[k, j] += a * dout[i, j]
        k += 1


@njit(fastmath=FM)
def dw_loop(dw, inp, dout):
    B, C = inp.shape
    OC = dout.shape[1]
    for k in range(C):
        for j in range(OC):
            dw[k, j] = 0
        for i in range(B):
            a = inp[i, k]
            for j in range(OC):
                dw[k, j] += a * dout[i, j]


@njit(fastmath=FM)
def dw_blocked(dw, inp, dout):
    _dw_block(dw, inp, dout, 0, inp.shape[1])


@njit(fastmath=FM, parallel=True)
def dw_par(dw, inp, dout):
    C = inp.shape[1]
    nb = (C + 15) // 16
    for t in prange(nb):
        _dw_block(dw, inp, dout, t * 16, min(C, t * 16 + 16))


@njit
def dw_blas(dw, inp, dout):
    np.dot(inp.T, dout, dw)


def timeit(f, *args, reps=None):
    f(*args)
    best = []
    n = reps or 50
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(n):
            f(*args)
        best.append((time.perf_counter() - t) / n)
    return float(np.median(best)) * 1e6


def main():
    rng = np.random.default_rng(0)
    B = 64
    dt = np.float32
    print(f"numba {numba.__version__}, threads {numba.get_num_threads()}, float32, batch {B}")
    print("us per call (median of 7)")
    for n in (16, 32, 64, 128, 256, 512, 1024):
        reps = max(3, int(2e7 / (B * n * n + 1e4)))
        x = rng.standard_normal((B, n)).astype(dt)
        w = rng.standard_normal((n, n)).astype(dt)
        d = rng.standard_normal((B, n)).astype(dt)
        out = np.empty((B, n), dt)
        dw = np.empty((n, n), dt)
        row = [f"n={n:5d}"]
        for name, fns, args, ref in (
            ("fwd", (fwd_loop, fwd_blocked, fwd_par, fwd_blas), (out, x, w), x @ w),
            ("dinp", (dinp_loop, dinp_blocked, dinp_par, dinp_blas), (out, d, w), d @ w.T),
            ("dW", (dw_loop, dw_blocked, dw_par, dw_blas), (dw, x, d), x.T @ d),
        ):
            ts = []
            for f in fns:
                ts.append(timeit(f, *args, reps=reps))
                err = np.abs(args[0] - ref).max() / (np.abs(ref).max() + 1)
                assert err < 1e-4, (name, f, err)
            row.append(f"{name}: loop {ts[0]:8.1f} blk {ts[1]:8.1f} par {ts[2]:8.1f} "
                       f"blas {ts[3]:8.1f}")
        print(" | ".join(row))


if __name__ == "__main__":
    main()
