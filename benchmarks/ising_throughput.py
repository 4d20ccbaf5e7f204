"""Throughput of the lattice sources against plain vectorised numpy, side by side in one run.

Ising: spin-updates per second of ``Ising2D(...).sample`` (Metropolis, fixed burn-in and thinning,
so every point runs the same number of sweeps) and of a plain numpy checkerboard Metropolis (one
random number per site per half-sweep, ``np.roll`` neighbours, per-lattice (K, H) broadcast) on the
same batch of lattices with the same parameters. TASEP: elementary moves per second of
``TASEP(...).sample`` and of a per-move numpy loop vectorised over the replicas (one Python step per
move, all replicas at once). Repeats alternate between the two sides (after compile/warm-up);
rates are medians, ``ratio`` = ours / numpy of the medians, ``best-of`` the ratio of the fastest
repeats (less sensitive to other processes on a shared machine).

Usage: python benchmarks/ising_throughput.py [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from latentatlas.sources.ising import Ising2D
from latentatlas.sources.tasep import TASEP


def numpy_checkerboard(K: np.ndarray, H: np.ndarray, L: int, sweeps: int, seed: int) -> np.ndarray:
    """Plain numpy checkerboard Metropolis on a batch (P, L, L)."""
    rng = np.random.default_rng(seed)
    P = len(K)
    s = np.ones((P, L, L), dtype=np.int8)
    parity = (np.add.outer(np.arange(L), np.arange(L)) % 2).astype(bool)
    masks = (~parity, parity)
    Kb, Hb = K[:, None, None], H[:, None, None]
    for _ in range(sweeps):
        for m in masks:
            nb = (np.roll(s, 1, 1) + np.roll(s, -1, 1) + np.roll(s, 1, 2) + np.roll(s, -1, 2))
            prob = np.exp(-2.0 * s * (Kb * nb + Hb))
            flip = m & (rng.random(s.shape) < prob)
            s = np.where(flip, -s, s).astype(np.int8)
    return s


def numpy_tasep(alpha: np.ndarray, beta: np.ndarray, L: int, sweeps: int, seed: int) -> np.ndarray:
    """Random-sequential TASEP, one vectorised numpy step per elementary move, (P, L) replicas."""
    rng = np.random.default_rng(seed)
    P = len(alpha)
    c = np.zeros((P, L + 2), dtype=np.uint8)  # padded: column 0 reservoir, L + 1 exit
    rows = np.arange(P)
    for _ in range(sweeps * (L + 1)):
        b = rng.integers(0, L + 1, size=P)  # bond b moves a particle from column b to b + 1
        u = rng.random(P)
        rate = np.where(b == 0, alpha, np.where(b == L, beta, 1.0))
        src = np.where(b == 0, 1, c[rows, b])
        dst = np.where(b == L, 0, c[rows, b + 1])
        fire = (src == 1) & (dst == 0) & (u < rate)
        c[rows[fire], b[fire]] = 0
        c[rows[fire], b[fire] + 1] = 1
    return c[:, 1:-1]


def times_of(fn, repeats: int) -> np.ndarray:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return np.array(times)


def compare(ours_fn, peer_fn, ours_work: float, peer_work: float, repeats: int):
    """Interleaved repeats; returns (ours median rate, peer median rate, best-of ratio)."""
    ours, peer = [], []
    for _ in range(repeats):
        ours.append(times_of(ours_fn, 1)[0])
        peer.append(times_of(peer_fn, 1)[0])
    ours, peer = np.array(ours), np.array(peer)
    return (ours_work / np.median(ours), peer_work / np.median(peer),
            (ours_work / ours.min()) / (peer_work / peer.min()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer sweeps (smoke test)")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    rows = []
    load = os.getloadavg()
    from latentatlas.sources._rng import num_threads

    threads = num_threads()  # the lattice kernels' thread count (NUMBA_NUM_THREADS)
    for P, L in [(256, 16), (64, 32)]:
        side = int(np.sqrt(P))
        T = np.repeat(np.linspace(1.5, 3.5, side), P // side)
        h = np.tile(np.linspace(-0.5, 0.5, P // side), side)
        params = np.stack([T, h], axis=1)
        K, H = 1.0 / T, h / T
        burn, n, thin = int(200 * scale), 4, int(10 * scale)
        sweeps = burn + n * thin
        src = Ising2D(L, burn_in=burn, thin=thin)
        src.sample(params[:2], 1, seed=0)  # compile / load the numba cache
        np_sweeps = max(2, sweeps // 10)
        ours_rate, peer_rate, best = compare(
            lambda src=src, params=params, n=n: src.sample(params, n, seed=1),
            lambda K=K, H=H, L=L, s=np_sweeps: numpy_checkerboard(K, H, L, s, 0),
            P * L * L * sweeps, P * L * L * np_sweeps, args.repeats,
        )
        rows.append((f"Ising2D metropolis {P} x {L}x{L}", "spin-updates/s", ours_rate, peer_rate,
                     best))
    for P, L in [(256, 10), (64, 50)]:
        alpha = np.tile(np.linspace(0.1, 1.0, 16), P // 16)
        beta = np.repeat(np.linspace(0.1, 1.0, P // 16), 16)[:P]
        params = np.stack([alpha, beta], axis=1)
        burn, n, thin = int(2000 * scale), 4, int(20 * scale)
        sweeps = burn + n * thin
        src = TASEP(L, burn_in=burn, thin=thin)
        src.sample(params[:2], 1, seed=0)
        np_sweeps = max(2, sweeps // 200)
        ours_rate, peer_rate, best = compare(
            lambda src=src, params=params, n=n: src.sample(params, n, seed=1),
            lambda a=alpha, b=beta, L=L, s=np_sweeps: numpy_tasep(a, b, L, s, 0),
            P * (L + 1) * sweeps, P * (L + 1) * np_sweeps, args.repeats,
        )
        rows.append((f"TASEP {P} x L={L}", "moves/s", ours_rate, peer_rate, best))
    print(f"cores: {os.cpu_count()}, numba threads: {threads}, repeats: {args.repeats} (medians)")
    print(f"load average at start: {load[0]:.1f}")
    print(f"{'case':<32} {'unit':<15} {'latentatlas':>13} {'numpy':>13} {'ratio':>8} "
          f"{'best-of':>8}")
    for name, unit, ours_rate, peer_rate, best in rows:
        print(f"{name:<32} {unit:<15} {ours_rate / 1e6:>11.1f} M {peer_rate / 1e6:>11.2f} M "
              f"{ours_rate / peer_rate:>7.1f}x {best:>7.1f}x")


if __name__ == "__main__":
    main()
