"""The generator's local Lipschitz constant as a function of the step size.

``L(delta) = max_u ||x(t + delta u) - x(t)|| / delta`` over unit directions ``u``. Inside a phase,
where the generator is smooth, ``L`` tends to a constant as ``delta -> 0`` (slope 0 of ``log L``
against ``log delta``); across a discontinuity ``||x(t + delta u) - x(t)||`` stays finite, so ``L``
grows like ``1 / delta`` (slope -1); ``|t - t0|**a`` gives slope ``a - 1``. Lobashev et al. report
the divergence at the phase boundaries of Stable Diffusion's latent planes.

One slope over seven decades hides where the curve bends, so the profile reports the local slopes
between consecutive steps and ``slope``, the fit over the ``tail`` smallest usable steps.

Precision floor. A generator that computes in float32 (or float16) cannot resolve differences
below its rounding: ``||x(t + delta u) - x(t)||`` becomes zero or rounding noise, and ``L ~ noise /
delta`` fakes a slope of -1. Each step is checked against the rounding level
``floor_factor * eps(dtype) * ||x(t)||`` (``eps`` of the coarser of the generator's compute dtype
and the decoded array's dtype); the first step whose largest difference is at or below it, and
every smaller step, are excluded (``usable`` False, ``lipschitz`` NaN) and recorded
(``floor_delta``). Use a float64 generator (``--dtype float64`` on CPU for diffusers) to go
deeper; :class:`~latentatlas.sources.LatentPlane` decodes float64 latents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["LipschitzProfile", "lipschitz_profile"]

_EPS = {"float16": float(np.finfo(np.float16).eps), "bfloat16": 2.0**-7,
        "float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


@dataclass
class LipschitzProfile:
    """``L(delta)`` at one point.

    Attributes:
        point: (2,) the parameter point.
        deltas: (n,) step sizes, decreasing.
        lipschitz: (n,) ``max_u ||x(t + delta u) - x(t)|| / delta`` (NaN at and below the floor).
        slope: least-squares slope of ``log L`` against ``log delta`` over the ``tail`` smallest
            usable steps (about -1 at a discontinuity, about 0 inside a smooth phase; NaN with
            fewer than two usable steps).
        local_slopes: (n - 1,) slopes between consecutive steps (NaN where a step is unusable).
        usable: (n,) bool, the step is above the precision floor.
        floor_delta: the largest step that hit the precision floor (NaN: none did).
        rounding: the rounding level ``floor_factor * eps * ||x(t)||`` the differences were
            compared with.
        dtype: the dtype whose ``eps`` set the rounding level.
        fit_slope: least-squares slope over every usable step (the old single number).
    """

    point: np.ndarray
    deltas: np.ndarray
    lipschitz: np.ndarray
    slope: float
    local_slopes: np.ndarray | None = None
    usable: np.ndarray | None = None
    floor_delta: float = float("nan")
    rounding: float = 0.0
    dtype: str = "float64"
    fit_slope: float = float("nan")

    @property
    def measurable(self) -> bool:
        """At least two usable steps (a slope exists)."""
        return bool(np.isfinite(self.slope))


def _dtype_name(dtype: object) -> str:
    if isinstance(dtype, str) or type(dtype).__module__ == "torch":
        name = str(dtype).removeprefix("torch.")
    else:
        try:
            name = np.dtype(dtype).name  # type: ignore[arg-type]
        except TypeError:
            name = repr(dtype)
    if name not in _EPS:
        raise ValueError(f"dtype: expected one of {sorted(_EPS)} (or the numpy/torch dtype), "
                         f"got {dtype!r}")
    return name


def lipschitz_profile(
    decode: Callable[[np.ndarray], np.ndarray],
    point: np.ndarray,
    deltas: np.ndarray | None = None,
    directions: int | np.ndarray = 16,
    dtype: object = None,
    floor_factor: float = 100.0,
    tail: int = 3,
) -> LipschitzProfile:
    """Measure ``L(delta)`` at ``point`` for a deterministic decoder.

    Args:
        decode: maps parameters (B, 2) float64 to samples (B, ...) (e.g.
            ``LatentPlane.make_decoder()``).
        point: (2,) where to measure.
        deltas: step sizes (default ``10**-1 .. 10**-7``).
        directions: number of evenly spaced unit directions, or an explicit (m, 2) array.
        dtype: the dtype the generator computes in ("float16", "bfloat16", "float32", "float64"
            or a numpy/torch dtype); None: the decoded array's (float64 for non-float arrays).
            The coarser of this and the decoded array's dtype sets the rounding level.
        floor_factor: rounding level in units of ``eps * ||x(t)||`` (a network accumulates many
            roundings; 100 leaves a factor 100 between the floor and the first usable step).
        tail: number of smallest usable steps that ``slope`` is fitted on (>= 2).

    Returns:
        A :class:`LipschitzProfile`.
    """
    point = np.asarray(point, dtype=np.float64).reshape(-1)
    if point.shape != (2,) or not np.all(np.isfinite(point)):
        raise ValueError(f"point: expected two finite coordinates, got {point}")
    deltas = 10.0 ** -np.arange(1, 8) if deltas is None else np.asarray(deltas, dtype=np.float64)
    if deltas.ndim != 1 or deltas.size < 2 or np.any(deltas <= 0):
        raise ValueError(f"deltas: expected at least two positive step sizes, got {deltas}")
    if np.any(np.diff(deltas) >= 0):
        raise ValueError(f"deltas: expected decreasing step sizes, got {deltas}")
    if not floor_factor >= 1:
        raise ValueError(f"floor_factor: expected a number >= 1, got {floor_factor!r}")
    if isinstance(tail, bool) or not isinstance(tail, int) or tail < 2:
        raise ValueError(f"tail: expected an int >= 2, got {tail!r}")
    names = [] if dtype is None else [_dtype_name(dtype)]
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
    raw = np.asarray(decode(batch))
    if raw.dtype.kind == "f":
        names.append(raw.dtype.name)
    name = max(names, key=lambda k: _EPS[k]) if names else "float64"
    x = raw.astype(np.float64).reshape(len(batch), -1)
    diff = np.linalg.norm(x[1:] - x[0], axis=1).reshape(len(deltas), len(units)).max(axis=1)
    rounding = floor_factor * _EPS[name] * float(np.linalg.norm(x[0]))
    at_floor = diff <= rounding  # zero differences always count
    first = int(np.argmax(at_floor)) if at_floor.any() else len(deltas)
    usable = np.arange(len(deltas)) < first
    lip = np.where(usable, diff / deltas, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        local = np.diff(np.log(lip)) / np.diff(np.log(deltas))
    slope = fit = float("nan")
    if first >= 2:
        logd, logl = np.log(deltas[:first]), np.log(lip[:first])
        slope = float(np.polyfit(logd[-tail:], logl[-tail:], 1)[0])
        fit = float(np.polyfit(logd, logl, 1)[0])
    return LipschitzProfile(point=point, deltas=deltas, lipschitz=lip, slope=slope,
                            local_slopes=local, usable=usable,
                            floor_delta=float(deltas[first]) if first < len(deltas) else float("nan"),
                            rounding=rounding, dtype=name, fit_slope=fit)
