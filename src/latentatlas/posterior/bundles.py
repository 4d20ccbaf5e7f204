"""Bundles: the training examples of posterior estimators.

A bundle is K samples drawn from the ``K_neib`` nearest grid points of a centre point t' (from t'
itself when ``K_neib = 1``), without replacement from the pool of ``K_neib * S`` samples of that
neighbourhood. Its soft target on the parameter grid is the average of K Gaussian bumps of width
``sigma`` (in grid cells, each bump normalised on the grid) centred at the grid points the K samples
came from.

Data model (shared with ``la.store`` and ``la.geometry``): a grid ``axis0 (G0,)``, ``axis1 (G1,)``,
``params (P, 2)`` with ``P = G0 * G1`` in 'ij' order (point ``p = i * G1 + j``), and ``samples``
array-like ``(P, S, *sample_shape)`` (a numpy array or a zarr array; only the points needed are
loaded).

Everything here is numpy and seeded (``numpy.random.Generator``); nothing depends on global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .._util import check_int, grid_points

__all__ = [
    "Bundles",
    "bump_kernel",
    "check_axes",
    "check_samples",
    "choose_distinct",
    "draw_bundles",
    "gather",
    "gaussian_targets",
    "grid_params",
    "load_all",
    "load_points",
    "neighbours",
    "sample_split",
    "training_bundles",
]


def check_axes(axis0: Any, axis1: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate grid axes: 1-D, finite, strictly increasing, at least 2 points each.

    Returns:
        ``(axis0 (G0,), axis1 (G1,))`` as float64 arrays.
    """
    out = []
    for name, axis in (("axis0", axis0), ("axis1", axis1)):
        arr = np.asarray(axis, dtype=np.float64)
        if arr.ndim != 1 or arr.shape[0] < 2:
            raise ValueError(f"{name}: expected a 1-D array of at least 2 grid values, got shape "
                             f"{arr.shape}")
        if not np.all(np.isfinite(arr)) or not np.all(np.diff(arr) > 0):
            raise ValueError(f"{name}: expected finite, strictly increasing values, got {arr}")
        out.append(arr)
    return out[0], out[1]


def grid_params(axis0: np.ndarray, axis1: np.ndarray) -> np.ndarray:
    """The grid's points in 'ij' order: (G0 * G1, 2), row ``i * G1 + j`` is ``(axis0[i], axis1[j])``
    (:func:`latentatlas._util.grid_points`)."""
    return grid_points(axis0, axis1)


def check_samples(
    samples: Any, points: int | None, sample_shape: Sequence[int] | None, name: str = "samples"
) -> tuple[int, int, tuple[int, ...]]:
    """Check an array-like ``(P, S, *sample_shape)`` without loading it.

    Args:
        samples: numpy or zarr array (anything with ``shape`` and slicing).
        points: expected P (None: any).
        sample_shape: expected trailing shape (None: any).

    Returns:
        ``(P, S, sample_shape)``.
    """
    shape = getattr(samples, "shape", None)
    if shape is None:
        raise ValueError(f"{name}: expected an array (numpy or zarr) of shape (P, S, *sample_shape), "
                         f"got {type(samples).__qualname__}")
    shape = tuple(int(s) for s in shape)
    want = "(P, S" + "".join(f", {s}" for s in (sample_shape or ())) + ")"
    if len(shape) < 2 or (sample_shape is not None and shape[2:] != tuple(sample_shape)):
        raise ValueError(f"{name}: expected shape {want} (P grid points, S samples per point), "
                         f"got {shape}")
    if points is not None and shape[0] != points:
        raise ValueError(f"{name}: grid mismatch: expected P = {points} grid points (G0 * G1 in 'ij' "
                         f"order), got shape {shape}")
    if shape[1] < 1:
        raise ValueError(f"{name}: expected at least one sample per point, got shape {shape}")
    return shape[0], shape[1], shape[2:]


def neighbours(params: np.ndarray, k: int, scale: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` nearest points of every point (itself first), by scaled distance.

    Args:
        params: (P, d) points.
        k: K_neib, number of neighbours including the point itself (1 <= k <= P).
        scale: (d,) length unit of each axis (grid spacing; default 1), so that distances are
            counted in grid cells. On a regular grid, k = 5 is the point and its 4 axis neighbours
            and k = 9 the 3 x 3 block; other k break ties by point index.

    Returns:
        (P, k) int64 indices; column 0 is the point itself.
    """
    params = np.asarray(params, dtype=np.float64)
    if params.ndim != 2:
        raise ValueError(f"params: expected shape (P, d), got {params.shape}")
    n = params.shape[0]
    k = check_int(k, "neighbours", minimum=1)
    if k > n:
        raise ValueError(f"neighbours: expected at most P = {n} (the number of grid points), got {k}")
    scale = np.ones(params.shape[1]) if scale is None else np.asarray(scale, dtype=np.float64)
    u = params / scale
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, 1024):
        d2 = ((u[start : start + 1024, None, :] - u[None, :, :]) ** 2).sum(-1)
        d2 = np.round(d2, 9)  # grid distances tie exactly; break ties by index (stable sort)
        out[start : start + 1024] = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return out


def bump_kernel(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian bumps on a grid axis of ``size`` points.

    Returns:
        (size, size) float64; row c is ``exp(-(i - c)^2 / (2 sigma^2))`` over i, normalised to sum 1.
        ``sigma`` is in grid cells; ``sigma -> 0`` gives the identity (one-hot targets).
    """
    if not np.isfinite(sigma) or not sigma > 0:
        raise ValueError(f"sigma: expected a positive bump width in grid cells, got {sigma!r}")
    i = np.arange(size, dtype=np.float64)
    logk = -((i[None, :] - i[:, None]) ** 2) / (2.0 * sigma**2)
    logk -= logk.max(axis=1, keepdims=True)
    k = np.exp(logk)
    return k / k.sum(axis=1, keepdims=True)


def gaussian_targets(
    points: np.ndarray, grid_shape: tuple[int, int], sigma: float
) -> np.ndarray:
    """Soft targets: the average of Gaussian bumps at the grid points of a bundle's samples.

    A bump at grid point ``p = i * G1 + j`` is ``exp(-((a - i)^2 + (b - j)^2) / (2 sigma^2))`` over
    grid cells (a, b), normalised on the grid; it factorises, so it is the outer product of two
    normalised 1-D bumps.

    Args:
        points: (B, K) flat grid indices of the samples of each bundle.
        grid_shape: (G0, G1).
        sigma: bump width in grid cells (> 0).

    Returns:
        (B, G0, G1) float64, each target summing to 1.
    """
    g0, g1 = grid_shape
    k0, k1 = bump_kernel(g0, sigma), bump_kernel(g1, sigma)
    points = np.asarray(points)
    if points.ndim == 1:
        points = points[:, None]
    i, j = np.divmod(points, g1)
    return np.einsum("bki,bkj->bij", k0[i], k1[j]) / points.shape[1]


def choose_distinct(rng: np.random.Generator, n: int, pool: int, k: int) -> np.ndarray:
    """``n`` independent uniformly random k-subsets of ``range(pool)``, in random order.

    Vectorised Floyd sampling: O(n k^2) time, O(n k) memory whatever the pool size.

    Returns:
        (n, k) int64.
    """
    if k > pool:
        raise ValueError(f"bundle: expected at most {pool} (the samples available), got {k}")
    chosen = np.empty((n, k), dtype=np.int64)
    for col, top in enumerate(range(pool - k, pool)):
        t = rng.integers(0, top + 1, size=n)
        dup = (chosen[:, :col] == t[:, None]).any(axis=1)
        chosen[:, col] = np.where(dup, top, t)
    order = np.argsort(rng.random((n, k)), axis=1)
    return np.take_along_axis(chosen, order, axis=1)


@dataclass
class Bundles:
    """Index sets of bundles (no sample data).

    Attributes:
        centre: (B,) flat grid index of each bundle's centre t'.
        point: (B, K) flat grid index each sample is drawn from (a neighbour of the centre).
        sample: (B, K) index of each sample within its point's S samples.
    """

    centre: np.ndarray
    point: np.ndarray
    sample: np.ndarray

    def __len__(self) -> int:
        return int(self.centre.shape[0])

    def targets(self, grid_shape: tuple[int, int], sigma: float) -> np.ndarray:
        """(B, G0, G1) Gaussian-bump soft targets (see :func:`gaussian_targets`)."""
        return gaussian_targets(self.point, grid_shape, sigma)

    def flat(self, samples_per_point: int) -> np.ndarray:
        """(B, K) flat indices into ``samples.reshape(P * S, ...)``."""
        return self.point * samples_per_point + self.sample

    def gather(self, samples: Any) -> np.ndarray:
        """(B, K, *sample_shape) sample data (see :func:`gather`)."""
        return gather(samples, self.point, self.sample)


def draw_bundles(
    n: int,
    bundle: int,
    neighbour_index: np.ndarray,
    samples_per_point: int,
    seed: int | np.random.Generator = 0,
    pool: np.ndarray | None = None,
    centres: np.ndarray | None = None,
) -> Bundles:
    """Draw ``n`` bundles of ``bundle`` samples each.

    A centre t' is drawn uniformly among the P points (or taken from ``centres``); the bundle's K
    samples are a uniformly random K-subset (no repeats) of the ``K_neib * len(pool)`` samples of
    the centre's neighbourhood.

    Args:
        n: number of bundles.
        bundle: K, samples per bundle.
        neighbour_index: (P, K_neib) from :func:`neighbours` (``(P, 1)`` = ``arange(P)[:, None]``
            for bundles from the centre only).
        samples_per_point: S.
        seed: int seed or a numpy Generator.
        pool: sample indices allowed at each point (e.g. a training split), default ``arange(S)``.
        centres: (n,) centre indices (default: uniform random).

    Returns:
        :class:`Bundles`.
    """
    n = check_int(n, "n", minimum=1)
    bundle = check_int(bundle, "bundle", minimum=1)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    pool = np.arange(samples_per_point) if pool is None else np.asarray(pool, dtype=np.int64)
    npool, kneib = pool.shape[0], neighbour_index.shape[1]
    if bundle > kneib * npool:
        raise ValueError(
            f"bundle: expected at most {kneib * npool} (K_neib = {kneib} neighbours x {npool} "
            f"samples available per point), got {bundle}"
        )
    if centres is None:
        centres = rng.integers(0, neighbour_index.shape[0], size=n)
    centres = np.asarray(centres, dtype=np.int64)
    q = choose_distinct(rng, n, kneib * npool, bundle)
    slot, s = np.divmod(q, npool)
    point = neighbour_index[centres[:, None], slot]
    return Bundles(centre=centres, point=point, sample=pool[s])


def load_points(samples: Any, points: np.ndarray) -> np.ndarray:
    """Load all samples of the given points: (U,) indices -> (U, S, *sample_shape).

    Works on numpy arrays and on zarr arrays (orthogonal selection, so only the chunks of those
    points are read).
    """
    points = np.asarray(points, dtype=np.int64)
    if isinstance(samples, np.ndarray):
        return samples[points]
    if hasattr(samples, "oindex"):
        return np.asarray(samples.oindex[points])
    return np.stack([np.asarray(samples[int(p)]) for p in points])


def gather(samples: Any, point: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Sample data ``samples[point, sample]`` for index arrays of any common shape.

    Only the distinct points involved are loaded (once each), so this works on a zarr array that
    does not fit in memory.

    Returns:
        ``(*point.shape, *sample_shape)`` array of the samples' dtype.
    """
    point, sample = np.asarray(point, dtype=np.int64), np.asarray(sample, dtype=np.int64)
    if isinstance(samples, np.ndarray):
        return samples[point, sample]
    uniq, inv = np.unique(point, return_inverse=True)
    block = load_points(samples, uniq)
    return block[inv.reshape(point.shape), sample]


def load_all(
    samples: Any, max_samples: int | None = None, chunk: int = 64, progress: bool = True
) -> np.ndarray:
    """Load ``samples[:, :max_samples]`` into memory point-chunk by point-chunk (tqdm progress).

    Returns:
        (P, S', *sample_shape) numpy array of the samples' dtype.
    """
    if isinstance(samples, np.ndarray):
        return samples if max_samples is None else samples[:, :max_samples]
    n = samples.shape[0]
    s = samples.shape[1] if max_samples is None else min(max_samples, samples.shape[1])
    parts = []
    for start in tqdm(range(0, n, chunk), desc="load samples", disable=not progress, leave=False):
        parts.append(np.asarray(samples[start : start + chunk, :s]))
    return np.concatenate(parts, axis=0)


def training_bundles(
    samples_per_point: int,
    neighbour_index: np.ndarray,
    bundle: int,
    n_train: int,
    val_fraction: float,
    seed: int,
) -> tuple[Bundles, Bundles | None]:
    """Training and validation bundles drawn from disjoint samples.

    The S sample indices are split once (the same split at every point): a fraction
    ``val_fraction`` (at least enough for one bundle) is kept for validation bundles, so the
    validation loss measures generalisation to unseen samples, not to unseen combinations.

    Args:
        samples_per_point: S.
        neighbour_index: (P, K_neib) from :func:`neighbours`.
        bundle: K.
        n_train: number of training bundles (validation: ``max(256, val_fraction * n_train)``,
            at most 20000).
        val_fraction: in [0, 1); 0 disables validation.
        seed: seeds the split and the draws.

    Returns:
        ``(train, val)``; ``val`` is None when ``val_fraction == 0``.
    """
    s, kneib = samples_per_point, neighbour_index.shape[1]
    rng = np.random.default_rng(seed)
    train_pool, val_pool = _split(rng, s, bundle, kneib, val_fraction)
    n_val = val_pool.shape[0]
    train = draw_bundles(n_train, bundle, neighbour_index, s, rng, pool=train_pool)
    val = None
    if n_val:
        n_vb = int(min(20000, max(256, round(val_fraction * n_train))))
        val = draw_bundles(n_vb, bundle, neighbour_index, s, rng, pool=val_pool)
    return train, val


def _split(rng: np.random.Generator, s: int, bundle: int, kneib: int, val_fraction: float
           ) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a number in [0, 1), got {val_fraction!r}")
    if bundle > kneib * s:
        raise ValueError(
            f"bundle: expected at most {kneib * s} (K_neib = {kneib} neighbours x S = {s} samples "
            f"per point), got {bundle}"
        )
    need = -(-bundle // kneib)  # samples per point needed for one bundle
    n_val = 0 if val_fraction == 0 else max(need, int(round(val_fraction * s)))
    if n_val and s - n_val < need:
        raise ValueError(
            f"val_fraction: holding out {n_val} of S = {s} samples per point for validation leaves "
            f"{s - n_val}, fewer than the {need} that a bundle of {bundle} from {kneib} neighbours "
            f"needs; use more samples, a smaller bundle or val_fraction=0"
        )
    perm = rng.permutation(s)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def sample_split(samples_per_point: int, bundle: int, neighbours: int, val_fraction: float,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The sample indices :func:`training_bundles` trains and validates on (same arguments).

    Returns:
        ``(train_pool, val_pool)``: sorted int64 indices into the S samples of every point; the
        validation pool is empty when ``val_fraction == 0``. Samples of the validation pool never
        enter a training bundle, so posteriors evaluated on them are held out.
    """
    s = check_int(samples_per_point, "samples_per_point", minimum=1)
    return _split(np.random.default_rng(seed), s, check_int(bundle, "bundle", minimum=1),
                  check_int(neighbours, "neighbours", minimum=1), val_fraction)
