"""The generator's local Lipschitz constant as a function of the step size.

``L(delta) = max_u ||x(t + delta u) - x(t)|| / delta`` over unit directions ``u``. Inside a phase,
where the generator is smooth, ``L`` tends to a constant as ``delta -> 0`` (slope 0 of ``log L``
against ``log delta``); across a discontinuity ``||x(t + delta u) - x(t)||`` stays finite, so ``L``
grows like ``1 / delta`` (slope -1). Lobashev et al. report the divergence at the phase boundaries
of Stable Diffusion's latent planes.

Decoders must be evaluated in float64 for steps below ~1e-6 (float32 rounding alone produces a
spurious slope of -1); :class:`~latentatlas.sources.LatentPlane` decodes float64 latents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["LipschitzProfile", "lipschitz_profile"]


@dataclass
class LipschitzProfile:
    """``L(delta)`` at one point.

    Attributes:
        point: (2,) the parameter point.
        deltas: (n,) step sizes, decreasing.
        lipschitz: (n,) ``max_u ||x(t + delta u) - x(t)|| / delta``.
        slope: least-squares slope of ``log L`` against ``log delta`` (about -1 at a discontinuity,
            about 0 inside a smooth phase).
    """

    point: np.ndarray
    deltas: np.ndarray
    lipschitz: np.ndarray
    slope: float


def lipschitz_profile(
    decode: Callable[[np.ndarray], np.ndarray],
    point: np.ndarray,
    deltas: np.ndarray | None = None,
    directions: int | np.ndarray = 16,
) -> LipschitzProfile:
    """Measure ``L(delta)`` at ``point`` for a deterministic decoder.

    Args:
        decode: maps parameters (B, 2) float64 to samples (B, ...) (e.g.
            ``LatentPlane.make_decoder()``).
        point: (2,) where to measure.
        deltas: step sizes (default ``10**-1 .. 10**-7``).
        directions: number of evenly spaced unit directions, or an explicit (m, 2) array.

    Returns:
        A :class:`LipschitzProfile`.
    """
    point = np.asarray(point, dtype=np.float64).reshape(-1)
    if point.shape != (2,) or not np.all(np.isfinite(point)):
        raise ValueError(f"point: expected two finite coordinates, got {point}")
    deltas = 10.0 ** -np.arange(1, 8) if deltas is None else np.asarray(deltas, dtype=np.float64)
    if deltas.ndim != 1 or deltas.size < 2 or np.any(deltas <= 0):
        raise ValueError(f"deltas: expected at least two positive step sizes, got {deltas}")
    if isinstance(directions, int | np.integer):
        if directions < 1:
            raise ValueError(f"directions: expected a positive count, got {directions}")
        angles = np.pi * 2 * np.arange(directions) / directions
        units = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    else:
        units = np.asarray(directions, dtype=np.float64)
        if units.ndim != 2 or units.shape[1] != 2:
            raise ValueError(f"directions: expected an (m, 2) array, got shape {units.shape}")
        units = units / np.linalg.norm(units, axis=1, keepdims=True)
    probes = point[None, None] + deltas[:, None, None] * units[None]  # (n, m, 2)
    batch = np.concatenate([point[None], probes.reshape(-1, 2)])
    x = np.asarray(decode(batch), dtype=np.float64).reshape(len(batch), -1)
    diff = np.linalg.norm(x[1:] - x[0], axis=1).reshape(len(deltas), len(units))
    lip = diff.max(axis=1) / deltas
    tiny = np.finfo(np.float64).tiny
    slope = float(np.polyfit(np.log(deltas), np.log(np.maximum(lip, tiny)), 1)[0])
    return LipschitzProfile(point=point, deltas=deltas, lipschitz=lip, slope=slope)
