"""Path analysis: where does the posterior mean jump along a segment of the parameter plane?

Walk ``M`` equally spaced points ``t_i`` from ``a`` to ``b``; at each point draw a bundle of ``S``
samples and estimate the posterior mean ``u_i``. Inside a phase ``u_i`` moves smoothly with ``t_i``;
at a phase boundary (a jump of the generator) the step ``d_i = |u_{i+1} - u_i|`` is an outlier.

Jump rule (robust): ``d_i > median(d) + c * scale`` with
``scale = max(1.4826 * MAD(d), floor * median(d))`` (MAD = median absolute deviation; 1.4826 makes
it the standard deviation for Gaussian noise; the floor keeps a perfectly smooth path, whose MAD is
~0, from flagging rounding noise: with c = 6 and floor = 0.1 a step must exceed 1.6 x the median
step). Steps shorter than ``min_jump * expected_step`` are never flagged, ``expected_step`` being
the spacing of the points themselves (an unbiased posterior mean moves by that much).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PathAnalysis", "flag_jumps", "path_analysis"]


@dataclass
class PathAnalysis:
    """Result of :func:`path_analysis`.

    Attributes:
        positions: (M,) fraction of the way from ``a`` to ``b`` of each point.
        points: (M, 2) the points ``t_i`` on the segment.
        means: (M, 2) estimated posterior means ``u_i``.
        distances: (M - 1,) ``|u_{i+1} - u_i|``.
        jumps: indices ``i`` of flagged steps (between point ``i`` and ``i + 1``).
        threshold: the distance above which a step is flagged.
        expected_step: ``|b - a| / (M - 1)``.
    """

    positions: np.ndarray
    points: np.ndarray
    means: np.ndarray
    distances: np.ndarray
    jumps: np.ndarray
    threshold: float
    expected_step: float

    @property
    def jump_positions(self) -> np.ndarray:
        """(J,) positions (fraction of the segment) halfway across each flagged step."""
        return 0.5 * (self.positions[self.jumps] + self.positions[self.jumps + 1])


def flag_jumps(
    distances: Any, c: float = 6.0, floor: float = 0.1, min_step: float = 0.0
) -> tuple[np.ndarray, float]:
    """Indices of outlier steps and the threshold: ``d > median + c * max(1.4826 MAD, floor * median)``.

    Args:
        distances: (M - 1,) step lengths.
        c: number of robust standard deviations.
        floor: relative floor of the robust scale (see the module docstring).
        min_step: steps shorter than this are never flagged.
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 1 or d.size < 1 or not np.isfinite(d).all():
        raise ValueError(f"distances: expected a 1-D array of finite values, got shape {d.shape}")
    if c <= 0 or floor < 0:
        raise ValueError(f"c, floor: expected c > 0 and floor >= 0, got c={c!r}, floor={floor!r}")
    med = float(np.median(d))
    mad = float(np.median(np.abs(d - med)))
    scale = max(1.4826 * mad, floor * med)
    threshold = max(med + c * scale, float(min_step))
    return np.flatnonzero(d > threshold), threshold


def _call(fn: Callable[..., Any], points: np.ndarray, samples: int, seed: int) -> np.ndarray:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs: dict[str, Any] = {}
    accepts_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "samples" in params or accepts_kw:
        kwargs["samples"] = samples
    if "seed" in params or accepts_kw:
        kwargs["seed"] = seed
    out = fn(points, **kwargs)
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    return np.asarray(out, dtype=np.float64)


def path_analysis(
    posterior_mean_fn: Callable[..., Any],
    a: Any,
    b: Any,
    points: int = 64,
    samples: int = 16,
    seed: int = 0,
    c: float = 6.0,
    floor: float = 0.1,
    min_jump: float = 2.0,
) -> PathAnalysis:
    """Posterior means along the segment ``a -> b`` and the jumps between consecutive points.

    Args:
        posterior_mean_fn: called as ``posterior_mean_fn(points (M, 2), samples=S, seed=seed)``
            (the keywords are passed only if its signature accepts them); it should draw ``S``
            samples at each point (e.g. ``source.sample(points, S, seed)``), estimate the posterior
            from that bundle and return the posterior means (M, 2) (numpy or torch).
        a, b: (2,) end points.
        points: M, the number of points (>= 3).
        samples: S, bundle size per point.
        seed: passed to ``posterior_mean_fn``.
        c, floor: the robust rule of :func:`flag_jumps`.
        min_jump: steps shorter than ``min_jump * expected_step`` are never flagged.

    Returns:
        A :class:`PathAnalysis`.
    """
    pa = np.asarray(a, dtype=np.float64).reshape(-1)
    pb = np.asarray(b, dtype=np.float64).reshape(-1)
    if pa.shape != (2,) or pb.shape != (2,):
        raise ValueError(f"a, b: expected 2 coordinates each, got {pa.tolist()}, {pb.tolist()}")
    if not isinstance(points, int) or points < 3:
        raise ValueError(f"points: expected an int >= 3, got {points!r}")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples: expected a positive int, got {samples!r}")
    pos = np.linspace(0.0, 1.0, points)
    pts = pa + pos[:, None] * (pb - pa)
    means = _call(posterior_mean_fn, pts, samples, seed)
    if means.shape != (points, 2):
        raise ValueError(
            f"posterior_mean_fn: expected it to return shape ({points}, 2), got {means.shape}"
        )
    if not np.isfinite(means).all():
        raise ValueError("posterior_mean_fn: returned non-finite posterior means")
    dist = np.linalg.norm(np.diff(means, axis=0), axis=1)
    expected = float(np.linalg.norm(pb - pa)) / (points - 1)
    jumps, threshold = flag_jumps(dist, c=c, floor=floor, min_step=min_jump * expected)
    return PathAnalysis(
        positions=pos, points=pts, means=means, distances=dist, jumps=jumps,
        threshold=threshold, expected_step=expected,
    )
