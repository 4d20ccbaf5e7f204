"""Lipschitz blow-up and zoom series on synthetic generators with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.path import Path

from latentatlas.geometry.calibration import koch_polyline
from latentatlas.geometry.lipschitz import lipschitz_profile
from latentatlas.geometry.zoom import boundary_mask, zoom_series


def switching(p: np.ndarray) -> np.ndarray:
    """Smooth in both coordinates plus a unit jump across the line alpha = 0.3."""
    return np.stack([np.sin(p[:, 0]), np.cos(p[:, 1]), (p[:, 0] > 0.3).astype(float)], axis=1)


def test_lipschitz_slope_minus_one_on_a_jump_and_zero_away() -> None:
    on = lipschitz_profile(switching, np.array([0.3, 0.1]))
    # ||x(t + d u) - x(t)|| -> 1 as d -> 0, so log L = -log d + O(d): slope -1 to ~1e-2.
    assert on.slope == pytest.approx(-1.0, abs=0.02)
    away = lipschitz_profile(switching, np.array([-0.5, 0.4]))
    # Smooth: J = diag(cos a, -sin b) (third row 0), so max_u ||J u|| = max(|cos a|, |sin b|),
    # attained at u = e_0, one of the 16 directions; O(d) corrections at d = 1e-7.
    assert away.slope == pytest.approx(0.0, abs=0.05)
    assert away.lipschitz[-1] == pytest.approx(max(math.cos(-0.5), math.sin(0.4)), rel=1e-4)


def test_smooth_generator_has_no_blow_up_anywhere() -> None:
    rng = np.random.default_rng(0)
    for point in rng.uniform(-2, 2, size=(5, 2)):
        prof = lipschitz_profile(lambda p: np.tanh(p @ np.array([[1.0, 2.0], [-0.5, 0.3]])), point)
        assert abs(prof.slope) < 0.05


def test_zoom_series_of_a_straight_boundary_and_a_koch_boundary() -> None:
    # Box sizes 3, 9, 27 cells: powers of 3 match the Koch curve's triadic self-similarity (with
    # powers of 2 the counts oscillate log-periodically and the fit drifts by ~0.05).
    line = zoom_series(lambda p: (p[:, 0] + 0.5 * p[:, 1] > 0).astype(int), (0.0, 0.0), 1.0,
                       zooms=(1, 1e3, 1e6), resolution=243, scales=(3, 9, 27))
    for level in line:  # a straight boundary stays a line at every zoom (float64 windows)
        assert level.classes == 2
        # A digitised segment has counts N(s) ~ a / s + b (boxes cut by the window's edge), which
        # biases a fit over 3..27 cells of a 243-cell window low by ~0.07 (measured 0.928).
        assert level.dimension == pytest.approx(1.0, abs=0.1)
    path = Path(koch_polyline(6))  # segments of 1/729 of a side: finer than a cell
    inside = lambda p: path.contains_points(p).astype(int)  # noqa: E731
    center = (0.5, math.sqrt(3) / 6)  # centre of the flake; the window holds all of it
    koch = zoom_series(inside, center, 1.3, zooms=(1.0,), resolution=243, scales=(3, 9, 27))
    assert koch[0].classes == 2
    assert koch[0].dimension == pytest.approx(math.log(4) / math.log(3), abs=0.05)


def test_boundary_mask_and_errors() -> None:
    labels = np.zeros((4, 4), int)
    labels[:, 2:] = 1
    mask = boundary_mask(labels)
    assert mask.sum() == 4 and mask[:, 1].all()
    with pytest.raises(ValueError, match="point"):
        lipschitz_profile(switching, np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="resolution"):
        zoom_series(lambda p: p[:, 0] > 0, (0, 0), 1.0, resolution=4)
