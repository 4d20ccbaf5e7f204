"""Small numba helpers shared by the lattice sources: a PCG32 generator and Sokal's windowing.

Each simulated lattice owns one PCG32 stream (O'Neill 2014, XSH-RR output): a 64-bit state and an
odd 64-bit increment that selects the stream. Both are taken from :func:`point_seeds`, so the draws
of a parameter point depend only on ``(seed, point)`` — not on the batch it was computed in, nor on
which thread ran it. Kernels keep ``(state, inc)`` in local variables and call :func:`pcg32`, which
numba inlines; uniforms are compared as 32-bit integers against precomputed integer thresholds.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

__all__ = [
    "TWO32",
    "auto_thin",
    "burn_in_phase",
    "check_steps",
    "integrated_time",
    "num_threads",
    "pcg32",
    "prob_threshold",
    "run_in_threads",
    "seed_streams",
]

_MULT = np.uint64(6364136223846793005)
_M32 = np.uint64(0xFFFFFFFF)
_S18 = np.uint64(18)
_S27 = np.uint64(27)
_S59 = np.uint64(59)
_C31 = np.uint64(31)
_C32 = np.uint64(32)

#: 2**32: a threshold at or above this value means "always accept".
TWO32 = 1 << 32


@njit(cache=True, inline="always")
def pcg32(state: np.uint64, inc: np.uint64) -> tuple[np.uint64, np.uint64]:
    """One PCG32 step. Returns ``(new_state, out)`` with ``out`` uniform in [0, 2**32) (as uint64)."""
    old = state
    state = old * _MULT + inc
    x = (((old >> _S18) ^ old) >> _S27) & _M32
    rot = old >> _S59
    out = ((x >> rot) | (x << ((_C32 - rot) & _C31))) & _M32
    return state, out


def seed_streams(seeds: np.ndarray) -> np.ndarray:
    """PCG32 ``(state, inc)`` pairs from :func:`point_seeds` words.

    Args:
        seeds: (P, >=2) uint64 words.

    Returns:
        (P, 2) uint64 array: column 0 the state, column 1 the (odd) increment.
    """
    seeds = np.asarray(seeds, dtype=np.uint64)
    out = np.empty((len(seeds), 2), dtype=np.uint64)
    out[:, 0] = seeds[:, 0]
    out[:, 1] = seeds[:, 1] | np.uint64(1)
    return out


def prob_threshold(prob: np.ndarray) -> np.ndarray:
    """Integer thresholds for 32-bit uniforms: accept iff ``u32 < threshold``.

    ``prob >= 1`` maps to 2**32 (always true, and kernels skip the draw); the probability is
    represented to 2**-32, far below any statistical error of a simulation.
    """
    prob = np.clip(np.asarray(prob, dtype=np.float64), 0.0, 1.0)
    return np.round(prob * float(TWO32)).astype(np.uint64)


def integrated_time(series: np.ndarray, c: float = 5.0) -> np.ndarray:
    """Integrated autocorrelation time with Sokal's automatic windowing.

    ``tau = 1/2 + sum_{t=1}^{M} rho(t)`` with the smallest window ``M >= c * tau(M)``; in units of
    the series' spacing (so ``tau = 1/2`` for an uncorrelated series, and the variance of the mean of
    ``N`` steps is ``2 tau var / N``). A constant series gets ``tau = 1/2``.

    Args:
        series: (..., N) time series along the last axis.
        c: window constant (Sokal recommends 4-10).

    Returns:
        (...) float64 array of tau.
    """
    x = np.asarray(series, dtype=np.float64)
    n = x.shape[-1]
    if n < 2:
        return np.full(x.shape[:-1], 0.5)
    x = x - x.mean(axis=-1, keepdims=True)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(x, n=size, axis=-1)
    acf = np.fft.irfft(f * np.conj(f), n=size, axis=-1)[..., :n]
    var = acf[..., :1]
    safe = np.where(var > 0, var, 1.0)
    rho = np.where(var > 0, acf / safe, 0.0)
    taus = 0.5 + np.cumsum(rho[..., 1:], axis=-1)  # tau(M) for M = 1 .. n-1
    windows = np.arange(1, n)
    ok = windows >= c * taus
    # first window that satisfies the criterion; the last one if none does (series too short)
    first = np.where(ok.any(axis=-1), np.argmax(ok, axis=-1), n - 2)
    tau = np.take_along_axis(taus, first[..., None], axis=-1)[..., 0]
    return np.maximum(tau, 0.5)


_FIRST_ROUND = 128  # sweeps of pure burn-in before the first measured round
_MAX_PILOT = 4096  # sweeps
_PILOT_FACTOR = 100.0  # a measured round is accepted once it is this many tau long
_BURN_FACTOR = 20.0  # automatic burn-in: at least this many tau
_MAX_RECORD = 4096  # recorded sweeps at the end of a given burn-in


def burn_in_phase(
    record: Callable[[np.ndarray, int], tuple[np.ndarray, ...]],
    advance: Callable[[np.ndarray], None],
    num_points: int,
    burn_in: str | int,
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Burn in a batch of chains and measure their integrated autocorrelation times.

    ``burn_in="auto"``: after ``128`` silent sweeps, measured rounds of doubling length
    (128, 256, ...) run until a round is at least ``100 tau`` long (or the pilot would exceed 4096
    sweeps); tau of each observable comes from that last round; then the chain is advanced to
    ``max(pilot, 20 tau)`` sweeps. An int ``burn_in``: that many sweeps, tau measured on the second
    half of the last ``min(burn_in, 4096)`` of them (NaN when ``burn_in < 4``). Each point's choices
    depend only on its own chain.

    Args:
        record: ``record(sweeps (P,), length)`` advances chain p by ``sweeps[p]`` sweeps (0 or
            ``length``) recording every sweep and returns a tuple of (P,) tau arrays (one per
            observable; rows with 0 sweeps are ignored).
        advance: ``advance(sweeps (P,))`` advances chain p by ``sweeps[p]`` sweeps silently.
        num_points: P.
        burn_in: ``"auto"`` or a number of sweeps.

    Returns:
        (taus, burn): a tuple of (P,) tau arrays (sweeps) and the (P,) int64 burn-in in sweeps.
    """
    P = num_points
    if burn_in != "auto":
        burn = np.full(P, int(burn_in), dtype=np.int64)
        rec = min(int(burn_in), _MAX_RECORD)
        if burn_in > rec:
            advance(burn - rec)
        if rec < 4:
            if rec:
                advance(np.full(P, rec, dtype=np.int64))
            return (np.full(P, np.nan), np.full(P, np.nan)), burn
        half = rec // 2
        advance(np.full(P, rec - half, dtype=np.int64))
        taus = record(np.full(P, half, dtype=np.int64), half)
        return taus, burn
    advance(np.full(P, _FIRST_ROUND, dtype=np.int64))
    total = np.full(P, _FIRST_ROUND, dtype=np.int64)
    todo = np.ones(P, dtype=bool)
    taus: list[np.ndarray] | None = None
    length = _FIRST_ROUND
    while todo.any():
        sweeps = np.where(todo, length, 0).astype(np.int64)
        measured = record(sweeps, length)
        if taus is None:
            taus = [np.full(P, np.nan) for _ in measured]
        for dest, tau in zip(taus, measured):
            dest[todo] = tau[todo]
        total[todo] += length
        tau_max = np.fmax.reduce(np.stack(taus), axis=0)
        done = todo & ((length >= _PILOT_FACTOR * tau_max) | (total + 2 * length > _MAX_PILOT))
        todo &= ~done
        length *= 2
    assert taus is not None
    tau_max = np.fmax.reduce(np.stack(taus), axis=0)
    extra = np.maximum(np.ceil(_BURN_FACTOR * tau_max).astype(np.int64) - total, 0)
    if extra.any():
        advance(extra)
    return tuple(taus), total + extra


def auto_thin(taus: tuple[np.ndarray, ...], thin: str | int, max_thin: int, factor: float = 2.0
              ) -> np.ndarray:
    """Thinning in sweeps: ``ceil(factor * max tau)`` clipped to [1, max_thin], or the given int.

    Returns:
        (P,) int64.
    """
    P = len(taus[0])
    if thin != "auto":
        return np.full(P, int(thin), dtype=np.int64)
    tau = np.fmax.reduce(np.stack(taus), axis=0)
    tau = np.where(np.isfinite(tau), tau, 0.5)
    return np.clip(np.ceil(factor * tau), 1, max_thin).astype(np.int64)


def check_steps(value: str | int, name: str, minimum: int = 0) -> str | int:
    """Validate a ``burn_in`` / ``thin`` argument: ``"auto"`` or an int >= ``minimum``."""
    if isinstance(value, str) and value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}: expected 'auto' or an int >= {minimum}, got {value!r}")
    return int(value)


def num_threads() -> int:
    """Worker threads for the lattice kernels: numba's configured thread count
    (``NUMBA_NUM_THREADS``, default: the number of CPUs).

    Read from ``numba.config``, never through ``numba.get_num_threads()``: that call starts
    numba's OpenMP threading layer, whose start-up calls ``omp_set_num_threads`` on the calling
    thread and so silently resets torch's ``torch.set_num_threads`` (torch's CPU kernels share
    that OpenMP runtime). The kernels are serial ``nogil`` functions run on this module's own
    thread pool, so numba's threading layer is never needed.
    """
    import numba

    return max(1, int(numba.config.NUMBA_NUM_THREADS))


_POOL: dict[int, ThreadPoolExecutor] = {}
_POOL_LOCK = threading.Lock()


def _forget_pools() -> None:
    # a forked child inherits the pools but not their threads: start afresh there
    global _POOL_LOCK
    _POOL.clear()
    _POOL_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools)


def _pool(threads: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``threads`` workers, created once (thread start-up costs ~1 ms)."""
    with _POOL_LOCK:
        pool = _POOL.get(threads)
        if pool is None:
            pool = ThreadPoolExecutor(threads, thread_name_prefix="latentatlas-lattice")
            _POOL[threads] = pool
        return pool


def run_in_threads(count: int, call: Callable[[int, int], None], threads: int | None = None) -> None:
    """Run ``call(lo, hi)`` over contiguous ranges covering ``0 .. count`` on a thread pool.

    The kernels are compiled with ``nogil=True`` (serial code compiles ~3x faster than numba's
    ``parallel=True``), so the threads run them truly in parallel. Each range works on its own
    lattices with their own random streams, so the result does not depend on the split. The
    calling thread runs the first range itself; the others go to a persistent pool.
    """
    threads = min(count, threads or num_threads())
    if threads <= 1 or threading.current_thread().name.startswith("latentatlas-lattice"):
        if count:
            call(0, count)
        return
    edges = np.linspace(0, count, threads + 1).round().astype(int)
    pool = _pool(threads - 1)
    futures = [pool.submit(call, int(lo), int(hi)) for lo, hi in zip(edges[1:-1], edges[2:])]
    try:
        call(int(edges[0]), int(edges[1]))
    finally:
        for future in futures:
            future.result()
