"""The totally asymmetric simple exclusion process (TASEP) with open boundaries.

Particles on sites ``0 .. L-1`` hop to the right with rate 1 onto an empty site; they enter at
site 0 with rate ``alpha`` (when it is empty) and leave from site ``L-1`` with rate ``beta``.
Dynamics: random-sequential update, i.e. the continuous-time Markov chain sampled by uniformisation:
each elementary move picks one of the ``L + 1`` bonds (entry, the ``L - 1`` bulk bonds, exit)
uniformly and fires it with its rate; ``L + 1`` moves make one unit of time (a "sweep"). Its
stationary state is the matrix-product state of Derrida, Evans, Hakim & Pasquier (1993); a parallel
update would be a different model.

One chain per parameter point, started empty; chains are spread over ``NUMBA_NUM_THREADS`` threads
(a ``nogil`` numba kernel), each with its own PCG32 stream seeded from ``(seed, point)``. Burn-in and thinning are given or chosen
from the integrated autocorrelation time of the particle number measured in a pilot run (see
:func:`latentatlas.sources._rng.burn_in_phase`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numba import njit

from ._rng import (
    TWO32,
    auto_thin,
    burn_in_phase,
    check_steps,
    integrated_time,
    pcg32,
    prob_threshold,
    run_in_threads,
    seed_streams,
)
from .base import FLOW_RECIPE, Source, point_seeds

__all__ = ["TASEP"]

logger = logging.getLogger(__name__)


@njit(cache=True, nogil=True)
def _run(
    conf: np.ndarray,  # (P, L) uint8 occupations, updated in place
    rng: np.ndarray,  # (P, 2) uint64 PCG32 (state, inc), updated in place
    athr: np.ndarray,  # (P,) uint64 entry thresholds (alpha)
    bthr: np.ndarray,  # (P,) uint64 exit thresholds (beta)
    nsweeps: np.ndarray,  # (P,) int64
    every: np.ndarray,  # (P,) int64 record every this many sweeps
    count: np.ndarray,  # (P,) int64 particle number, updated in place
    exits: np.ndarray,  # (P,) int64 particles that left, incremented
    rec_n: np.ndarray,  # (P, R) int32 recorded particle numbers
    rec_x: np.ndarray,  # (P, R) int64 recorded cumulative exits
    rec_s: np.ndarray,  # (P, R, L) uint8 recorded configurations if store
    store: bool,
) -> None:
    P = conf.shape[0]
    L = conf.shape[1]
    R = rec_n.shape[1]
    bonds = np.uint64(L + 1)
    s32 = np.uint64(32)
    always = np.uint64(TWO32)
    for p in range(P):
        C = conf[p]
        st = rng[p, 0]
        inc = rng[p, 1]
        ta = athr[p]
        tb = bthr[p]
        nn = count[p]
        ex = exits[p]
        k = 0
        ev = every[p]
        for sweep in range(nsweeps[p]):
            for _ in range(L + 1):
                st, r = pcg32(st, inc)
                b = np.int64((r * bonds) >> s32)
                if b == 0:
                    if C[0] == 0:
                        fire = True
                        if ta < always:
                            st, r = pcg32(st, inc)
                            fire = r < ta
                        if fire:
                            C[0] = 1
                            nn += 1
                elif b == L:
                    if C[L - 1] == 1:
                        fire = True
                        if tb < always:
                            st, r = pcg32(st, inc)
                            fire = r < tb
                        if fire:
                            C[L - 1] = 0
                            nn -= 1
                            ex += 1
                else:  # bulk hop b-1 -> b, branchless
                    x = C[b - 1] & (np.uint8(1) - C[b])
                    C[b - 1] -= x
                    C[b] += x
            if (sweep + 1) % ev == 0 and k < R:
                rec_n[p, k] = nn
                rec_x[p, k] = ex
                if store:
                    for i in range(L):
                        rec_s[p, k, i] = C[i]
                k += 1
        rng[p, 0] = st
        count[p] = nn
        exits[p] = ex


class _Chains:
    def __init__(self, alpha: np.ndarray, beta: np.ndarray, L: int, seeds: np.ndarray):
        self.P = len(alpha)
        self.L = L
        self.athr = prob_threshold(alpha)
        self.bthr = prob_threshold(beta)
        self.rng = seed_streams(seeds)
        self.conf = np.zeros((self.P, L), dtype=np.uint8)
        self.count = np.zeros(self.P, dtype=np.int64)
        self.exits = np.zeros(self.P, dtype=np.int64)

    def run(
        self, nsweeps: np.ndarray, every: np.ndarray, records: int, store: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        P, L = self.P, self.L
        rec_n = np.zeros((P, records), dtype=np.int32)
        rec_x = np.zeros((P, records), dtype=np.int64)
        rec_s = np.zeros((P, records if store else 0, L), dtype=np.uint8)
        nsweeps = np.asarray(nsweeps, dtype=np.int64)
        every = np.maximum(np.asarray(every, dtype=np.int64), 1)

        def call(lo: int, hi: int) -> None:
            _run(
                self.conf[lo:hi], self.rng[lo:hi], self.athr[lo:hi], self.bthr[lo:hi],
                nsweeps[lo:hi], every[lo:hi], self.count[lo:hi], self.exits[lo:hi],
                rec_n[lo:hi], rec_x[lo:hi], rec_s[lo:hi], store,
            )

        run_in_threads(P, call)
        return rec_n, rec_x, rec_s

    def advance(self, sweeps: np.ndarray) -> None:
        self.run(sweeps, np.full(self.P, 1 << 62), 0, False)

    def record(self, sweeps: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        """tau of the particle number and of the exit count per sweep."""
        x0 = self.exits.copy()
        rec_n, rec_x, _ = self.run(sweeps, np.ones(self.P), length, False)
        flux = np.diff(np.concatenate([x0[:, None], rec_x], axis=1), axis=1)
        return integrated_time(rec_n), integrated_time(flux)


class TASEP(Source):
    """Open-boundary TASEP on ``L`` sites, random-sequential update; samples are uint8 occupation
    vectors of shape (L,), taken every ``thin`` units of time.

    Args:
        L: number of sites (>= 1).
        burn_in: time units (sweeps of ``L + 1`` moves) before the first sample, or ``"auto"``.
        thin: time units between samples (>= 1), or ``"auto"`` (``ceil(2 tau)``, tau the larger
            integrated autocorrelation time of the particle number and of the exit flux).
        max_thin: cap of the automatic thinning.

    Parameters: ``(alpha, beta)`` in (0, 1] x (0, 1]. The phases for large L: low density
    (alpha < beta, alpha < 1/2), high density (beta < alpha, beta < 1/2), maximal current
    (alpha, beta >= 1/2).
    """

    names = ("alpha", "beta")
    domain = ((0.0, 1.0), (0.0, 1.0))
    bounds = ((0.05, 1.0), (0.05, 1.0))
    dtype = np.dtype(np.uint8)

    def __init__(
        self, L: int = 32, burn_in: str | int = "auto", thin: str | int = "auto",
        max_thin: int = 1000,
    ) -> None:
        if isinstance(L, bool) or not isinstance(L, int | np.integer) or L < 1:
            raise ValueError(f"L: expected an int >= 1, got {L!r}")
        if isinstance(max_thin, bool) or not isinstance(max_thin, int | np.integer) or max_thin < 1:
            raise ValueError(f"max_thin: expected an int >= 1, got {max_thin!r}")
        self.L = int(L)
        self.burn_in = check_steps(burn_in, "burn_in")
        self.thin = check_steps(thin, "thin", minimum=1)
        self.max_thin = int(max_thin)
        self.sample_shape = (self.L,)

    EXACT_MAX_L = 12
    """Largest L whose exact reference (master equation) :meth:`reference` computes."""

    def atlas_defaults(self) -> dict[str, Any]:
        """Defaults measured on L = 10 (benchmarks/atlas_accuracy.py)."""
        out = super().atlas_defaults()
        out.update(resolution=32, samples_per_point=64, bundle=4, posterior_repeats=16,
                   sigma=1.0,
                   # pool="features": the bundle mean of per-sample hidden features, then one
                   # linear map to the logits (L = 6, seeds 0 / 1: interior ratios 0.98 / 0.95
                   # and 0.95 / 0.91 against 0.90 / 0.89 and 0.89 / 0.84 with embedding pooling)
                   posterior={"init": {"pool": "features"}, "fit": {"steps": 1500}},
                   posterior_for={"flow": FLOW_RECIPE}, potential={},
                   path=((0.05, 0.4), (0.4, 0.05)))
        return out

    def reference(self, params: np.ndarray) -> dict[str, np.ndarray] | None:
        """Exact Fisher metric of one configuration and the current (master equation,
        :func:`latentatlas.exact.tasep.reference`) for L <= :attr:`EXACT_MAX_L`; None for larger
        systems. TASEP is not an exponential family in (alpha, beta): there is no potential."""
        if self.L > self.EXACT_MAX_L:
            return None
        from ..exact import tasep as exact_tasep

        return exact_tasep.reference(self.L, self.check_params(params))

    def check_params(self, params: np.ndarray) -> np.ndarray:
        arr = super().check_params(params)
        for j, name in enumerate(self.names):
            bad = arr[:, j] <= 0
            if np.any(bad):
                i = int(np.argmax(bad))
                raise ValueError(
                    f"params: {name} must lie in (0, 1] for TASEP, got {arr[i, j]} at row {i}"
                )
        return arr

    def _sample(self, params: np.ndarray, n: int, seed: int) -> np.ndarray:
        return self._simulate(params, n, seed)[0]

    def sample_with_diagnostics(
        self, params: np.ndarray, n: int, seed: int = 0
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Samples (P, n, L) and per-point (P,) diagnostics: ``current`` (particles leaving per unit
        time over the production run), ``current_stderr`` (its standard error from the ``n``
        inter-sample intervals), ``density`` (mean occupation over the samples), ``tau_density``,
        ``tau_current`` (integrated autocorrelation times of the particle number and of the exit
        flux, in time units), ``burn_in``, ``thin``."""
        params = self.check_params(params)
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
        return self._simulate(params, int(n), int(seed))

    def _simulate(
        self, params: np.ndarray, n: int, seed: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        P = len(params)
        chains = _Chains(params[:, 0], params[:, 1], self.L, point_seeds(seed, params))
        taus, burn = burn_in_phase(chains.record, chains.advance, P, self.burn_in)
        thin = auto_thin(taus, self.thin, self.max_thin)
        x0 = chains.exits.copy()
        rec_n, rec_x, samples = chains.run(n * thin, thin, n, True)
        per_interval = np.diff(np.concatenate([x0[:, None], rec_x], axis=1), axis=1) / thin[:, None]
        current = per_interval.mean(axis=1)
        stderr = (
            per_interval.std(axis=1, ddof=1) / np.sqrt(n) if n > 1 else np.full(P, np.nan)
        )
        diagnostics = {
            "current": current,
            "current_stderr": stderr,
            "density": rec_n.mean(axis=1) / self.L,
            "tau_density": taus[0],
            "tau_current": taus[1],
            "burn_in": burn.astype(np.float64),
            "thin": thin.astype(np.float64),
        }
        return samples, diagnostics
