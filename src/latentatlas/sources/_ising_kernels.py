"""The numba kernels of :class:`latentatlas.sources.Ising2D`: a scalar Metropolis/Wolff kernel and
the lockstep (SIMD over up to 64 lattices) Metropolis kernel; both draw PCG32 streams and give the
same chains draw for draw (see :mod:`latentatlas.sources.ising`)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._rng import TWO32, pcg32

__all__: list[str] = []


@njit(cache=True, inline="always")
def _nbsum(S: np.ndarray, i: int, j: int, L: int) -> int:
    ip = i + 1 if i + 1 < L else 0
    im = i - 1 if i > 0 else L - 1
    jp = j + 1 if j + 1 < L else 0
    jm = j - 1 if j > 0 else L - 1
    return int(S[ip, j]) + int(S[im, j]) + int(S[i, jp]) + int(S[i, jm])


@njit(cache=True, nogil=True)
def _run(
    spins: np.ndarray,  # (P, L, L) int8, updated in place
    sign: np.ndarray,  # (P,) int8 global-flip sign (only moves where zero_field)
    rng: np.ndarray,  # (P, 2) uint64 PCG32 (state, inc), updated in place
    thr: np.ndarray,  # (P, 10) uint64 Metropolis thresholds
    wthr: np.ndarray,  # (P,) uint64 Wolff bond-activation thresholds
    wolff: np.ndarray,  # (P,) bool: cluster updates at this point
    zero_field: np.ndarray,  # (P,) bool
    field: np.ndarray,  # (P,) float64 H
    nsweeps: np.ndarray,  # (P,) int64 sweeps to run
    every: np.ndarray,  # (P,) int64 record every this many sweeps
    bsum: np.ndarray,  # (P,) int64 running bond sum, updated in place
    msum: np.ndarray,  # (P,) int64 running magnetisation (of the lattice, without sign)
    rec_b: np.ndarray,  # (P, R) int32 recorded bond sums
    rec_m: np.ndarray,  # (P, R) int32 recorded magnetisations (with sign)
    rec_s: np.ndarray,  # (P, R, L, L) int8 recorded lattices (with sign) if store
    store: bool,
    accepted: np.ndarray,  # (P,) int64 accepted Metropolis flips, incremented
    stack: np.ndarray,  # (P, L*L) int32 Wolff stacks (or (P, 1) when unused)
    nclust: np.ndarray,  # (P,) int64 Wolff clusters per sweep
    csize: np.ndarray,  # (P,) int64 total size of the Wolff clusters flipped, incremented
) -> None:
    P = spins.shape[0]
    L = spins.shape[1]
    N = L * L
    R = rec_b.shape[1]
    half = np.uint64(1 << 31)
    two32 = float(TWO32)
    nn = np.uint64(N)
    s32 = np.uint64(32)
    for p in range(P):
        S = spins[p]
        T = thr[p]
        st = rng[p, 0]
        inc = rng[p, 1]
        B = bsum[p]
        M = msum[p]
        sg = sign[p]
        acc = 0
        k = 0
        ev = every[p]
        for sweep in range(nsweeps[p]):
            # checkerboard Metropolis sweep
            for par in range(2):
                for i in range(L):
                    for j in range((i + par) & 1, L, 2):
                        # branchless: one draw per site (cheaper than mispredicted branches)
                        s = np.int64(S[i, j])
                        nb = _nbsum(S, i, j, L)
                        st, r = pcg32(st, inc)
                        f = np.int64(r < T[(5 if s > 0 else 0) + ((nb + 4) >> 1)])
                        S[i, j] = s - 2 * s * f
                        B -= 2 * s * nb * f
                        M -= 2 * s * f
                        acc += f
            if wolff[p]:
                pt = wthr[p]
                flipped = 0
                for _c in range(nclust[p]):
                    st, r = pcg32(st, inc)
                    site = np.int64((r * nn) >> s32)
                    i0 = site // L
                    j0 = site - i0 * L
                    old = S[i0, j0]
                    B -= 2 * old * _nbsum(S, i0, j0, L)
                    S[i0, j0] = -old
                    M -= 2 * old
                    stack[p, 0] = i0 * L + j0
                    sp = 1
                    flipped += 1
                    while sp > 0:
                        sp -= 1
                        x = stack[p, sp]
                        xi = x // L
                        xj = x - xi * L
                        for d in range(4):
                            if d == 0:
                                yi = xi + 1 if xi + 1 < L else 0
                                yj = xj
                            elif d == 1:
                                yi = xi - 1 if xi > 0 else L - 1
                                yj = xj
                            elif d == 2:
                                yi = xi
                                yj = xj + 1 if xj + 1 < L else 0
                            else:
                                yi = xi
                                yj = xj - 1 if xj > 0 else L - 1
                            if S[yi, yj] == old:
                                st, r = pcg32(st, inc)
                                if r < pt:
                                    B -= 2 * old * _nbsum(S, yi, yj, L)
                                    S[yi, yj] = -old
                                    M -= 2 * old
                                    stack[p, sp] = yi * L + yj
                                    sp += 1
                                    flipped += 1
                csize[p] += flipped
            st, r = pcg32(st, inc)
            if zero_field[p]:
                if r < half:
                    sg = -sg
            elif r < np.uint64(two32 * 0.5 * min(1.0, math.exp(-2.0 * field[p] * M))):
                # global flip proposed with probability 1/2, accepted with exp(-2 H M)
                for i in range(L):
                    for j in range(L):
                        S[i, j] = -S[i, j]
                M = -M
            if (sweep + 1) % ev == 0 and k < R:
                rec_b[p, k] = B
                rec_m[p, k] = sg * M
                if store:
                    for i in range(L):
                        for j in range(L):
                            rec_s[p, k, i, j] = sg * S[i, j]
                k += 1
        rng[p, 0] = st
        bsum[p] = B
        msum[p] = M
        sign[p] = sg
        accepted[p] += acc


_MULT = np.uint64(6364136223846793005)
_M32 = np.uint64(0xFFFFFFFF)
_S18 = np.uint64(18)
_S27 = np.uint64(27)
_S59 = np.uint64(59)
_C31 = np.uint64(31)
_C32 = np.uint64(32)


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _run_lanes(
    spins: np.ndarray,  # (G, L, L, B) int8: G blocks of B lattices, lattice index innermost
    st: np.ndarray,  # (G, B) uint64 PCG32 states, updated in place
    inc: np.ndarray,  # (G, B) uint64 PCG32 increments
    thr: np.ndarray,  # (G, 10 * B) uint64 thresholds, entry k of lane p at k * B + p
    field: np.ndarray,  # (G, B) float64 H
    zero_field: np.ndarray,  # (G, B) bool
    sign: np.ndarray,  # (G, B) int8 global-flip sign (zero field)
    nsweeps: np.ndarray,  # (G, B) int64 (0 for padding lanes)
    every: np.ndarray,  # (G, B) int64
    bsum: np.ndarray,  # (G, B) int64
    msum: np.ndarray,  # (G, B) int64
    accepted: np.ndarray,  # (G, B) int64, incremented
    rec_b: np.ndarray,  # (G, B, R) int32
    rec_m: np.ndarray,  # (G, B, R) int32
    rec_s: np.ndarray,  # (G, B, R, L, L) int8 if store
    store: bool,
) -> None:
    """Checkerboard Metropolis on blocks of B lattices advanced in lockstep (SIMD over lattices).

    Lane p of a block follows exactly the chain it would follow alone: its own PCG32 stream, one
    draw per site visit, and lanes past their ``nsweeps`` are frozen (no draw, no flip)."""
    G = spins.shape[0]
    L = spins.shape[1]
    B = spins.shape[3]
    R = rec_b.shape[2]
    half = np.uint64(1 << 31)
    two32 = float(TWO32)
    for g in range(G):
        # per-lane state in thread-private copies: the rows of neighbouring blocks share cache
        # lines, and writing them at every site from two threads made two threads slower than one
        S = spins[g]
        sg = st[g].copy()
        ig = inc[g].copy()
        T = thr[g]
        R0, R1, R2, R3, R4 = T[0:B], T[B : 2 * B], T[2 * B : 3 * B], T[3 * B : 4 * B], T[4 * B : 5 * B]
        R5, R6, R7, R8 = T[5 * B : 6 * B], T[6 * B : 7 * B], T[7 * B : 8 * B], T[8 * B : 9 * B]
        R9 = T[9 * B : 10 * B]
        z = np.uint64(0)
        Bg = bsum[g].copy()
        Mg = msum[g].copy()
        ag = accepted[g].copy()
        sgn = sign[g].copy()
        ns = nsweeps[g]
        rr = np.empty(B, dtype=np.uint64)
        tt = np.empty(B, dtype=np.uint64)
        nbv = np.empty(B, dtype=np.int64)
        act = np.empty(B, dtype=np.int64)
        k = np.zeros(B, dtype=np.int64)
        total = 0
        for p in range(B):
            total = max(total, ns[p])
        for sweep in range(total):
            for p in range(B):
                act[p] = 1 if sweep < ns[p] else 0
            for par in range(2):
                for i in range(L):
                    ip = i + 1 if i + 1 < L else 0
                    im = i - 1 if i > 0 else L - 1
                    for j in range((i + par) & 1, L, 2):
                        jp = j + 1 if j + 1 < L else 0
                        jm = j - 1 if j > 0 else L - 1
                        c = S[i, j]
                        u = S[ip, j]
                        d = S[im, j]
                        e = S[i, jp]
                        w = S[i, jm]
                        for p in range(B):  # PCG32 step of every active lane
                            old = sg[p]
                            new = old * _MULT + ig[p]
                            sg[p] = new if act[p] else old
                            x = (((old >> _S18) ^ old) >> _S27) & _M32
                            rot = old >> _S59
                            rr[p] = ((x >> rot) | (x << ((_C32 - rot) & _C31))) & _M32
                        for p in range(B):  # neighbour sums and table entry
                            nb = np.int64(u[p]) + np.int64(d[p]) + np.int64(e[p]) + np.int64(w[p])
                            nbv[p] = nb
                            kk = (np.int64(c[p]) + 1) * 5 // 2 + ((nb + 4) >> 1)
                            # a masked blend of the 10 table rows vectorises; a gather does not
                            tt[p] = (
                                (R0[p] & (z - np.uint64(kk == 0)))
                                | (R1[p] & (z - np.uint64(kk == 1)))
                                | (R2[p] & (z - np.uint64(kk == 2)))
                                | (R3[p] & (z - np.uint64(kk == 3)))
                                | (R4[p] & (z - np.uint64(kk == 4)))
                                | (R5[p] & (z - np.uint64(kk == 5)))
                                | (R6[p] & (z - np.uint64(kk == 6)))
                                | (R7[p] & (z - np.uint64(kk == 7)))
                                | (R8[p] & (z - np.uint64(kk == 8)))
                                | (R9[p] & (z - np.uint64(kk == 9)))
                            )
                        for p in range(B):  # accept and flip
                            f = np.int64(rr[p] < tt[p]) * act[p]
                            s = np.int64(c[p])
                            c[p] = np.int8(s - 2 * s * f)
                            Bg[p] -= 2 * s * nbv[p] * f
                            Mg[p] -= 2 * s * f
                            ag[p] += f
            for p in range(B):  # global flip move, then recording
                if not act[p]:
                    continue
                old = sg[p]
                sg[p] = old * _MULT + ig[p]
                x = (((old >> _S18) ^ old) >> _S27) & _M32
                rot = old >> _S59
                r = ((x >> rot) | (x << ((_C32 - rot) & _C31))) & _M32
                if zero_field[g, p]:
                    if r < half:
                        sgn[p] = -sgn[p]
                elif r < np.uint64(two32 * 0.5 * min(1.0, math.exp(-2.0 * field[g, p] * Mg[p]))):
                    for i in range(L):
                        for j in range(L):
                            S[i, j, p] = -S[i, j, p]
                    Mg[p] = -Mg[p]
                if (sweep + 1) % every[g, p] == 0 and k[p] < R:
                    sp = sgn[p]
                    rec_b[g, p, k[p]] = Bg[p]
                    rec_m[g, p, k[p]] = sp * Mg[p]
                    if store:
                        for i in range(L):
                            for j in range(L):
                                rec_s[g, p, k[p], i, j] = sp * S[i, j, p]
                    k[p] += 1
        st[g] = sg
        bsum[g] = Bg
        msum[g] = Mg
        accepted[g] = ag
        sign[g] = sgn
