"""Box counting of zoom windows calibrated at the window size the pipeline uses: straight lines
read 1 and Koch-curve windows log 4 / log 3, within 0.06; unmeasurable windows are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.path import Path

from latentatlas.analyses import plane_tools as T
from latentatlas.analyses.planes import PlanesStage
from latentatlas.geometry.calibration import (
    KOCH_DIMENSION,
    koch_inside,
    koch_polyline,
    koch_zoom_dimensions,
    line_zoom_dimensions,
)
from latentatlas.geometry.zoom import refined_box_counts, zoom_series

PIPELINE_RESOLUTION = PlanesStage.defaults(None, {})["zoom_resolution"]  # 32 today
ANGLES = tuple(np.linspace(0.0, math.pi / 2, 7)) + (2.0, 2.9)


def test_pipeline_window_is_the_calibrated_one() -> None:
    assert PIPELINE_RESOLUTION == 32  # if this changes, the calibration below must cover it


def test_koch_labels_match_the_polygon() -> None:
    # the recursion against point-in-polygon on the explicit level-4 polyline
    q = np.random.default_rng(0).uniform(-0.3, 1.3, (5000, 2))
    expected = Path(koch_polyline(4)).contains_points(q)
    assert np.array_equal(koch_inside(q, depth=4).astype(bool), expected)


@pytest.mark.parametrize("resolution", [PIPELINE_RESOLUTION, 64, 128])
def test_straight_lines_read_one_at_every_angle(resolution: int) -> None:
    dims = line_zoom_dimensions(resolution, ANGLES, seed=resolution)
    # N(n) = a n + O(1) boxes with a n >= 31 at the coarsest level: measured within 0.01
    assert np.isfinite(dims).all()
    np.testing.assert_allclose(dims, 1.0, atol=0.06)


def test_koch_windows_centred_on_the_curve_read_log4_over_log3() -> None:
    # five vertices of the level-3 polyline (on the limit curve), windows of 0.3 and 0.1 of the
    # side, a depth-12 flake (segments of 2e-6, far below the finest box 0.1 / 248 = 4e-4);
    # measured 1.22-1.29 (dyadic boxes against the curve's triadic self-similarity)
    dims = koch_zoom_dimensions(PIPELINE_RESOLUTION, widths=(0.3, 0.1))
    assert np.isfinite(dims).all()
    np.testing.assert_allclose(dims, KOCH_DIMENSION, atol=0.06)


def test_plane_zoom_verdicts_line_smooth_koch_new_structure() -> None:
    line = T.plane_zoom(lambda q: (q @ np.array([-0.4, 1.0]) > 0).astype(int), (0.0, 0.0), 1.0,
                        zooms=(1.0, 1e3, 1e6), resolution=PIPELINE_RESOLUTION)
    assert line.measurable.all() and not line.new_structure.any()
    centre = koch_polyline(3)[5]
    koch = T.plane_zoom(koch_inside, centre, 0.1, zooms=(1.0, 3.0),
                        resolution=PIPELINE_RESOLUTION)
    assert koch.measurable.all() and koch.new_structure.all() and koch.keeps_appearing
    assert line.threshold == T.NEW_STRUCTURE_DIMENSION
    assert 1.0 + 0.06 < T.NEW_STRUCTURE_DIMENSION < KOCH_DIMENSION - 0.06


def test_unmeasurable_windows_are_refused_not_guessed() -> None:
    # a 16-cell window on an axis-parallel line: 15 boundary boxes at the coarsest level (< 16)
    lv = zoom_series(lambda q: (q[:, 1] > 0).astype(int), (0.01, 0.01), 1.0, zooms=(1.0,),
                     resolution=16)[0]
    assert not lv.measurable and math.isnan(lv.dimension) and lv.classes == 2
    # one class in the window
    lv = zoom_series(lambda q: np.zeros(len(q), int), (0.0, 0.0), 1.0, zooms=(1.0,))[0]
    assert not lv.measurable and math.isnan(lv.dimension)
    # the boundary only clips a corner of the window
    lv = zoom_series(lambda q: (q.sum(1) > 0.9).astype(int), (0.0, 0.0), 1.0, zooms=(1.0,))[0]
    assert lv.classes == 2 and not lv.measurable
    # too few refinement levels for a slope
    lv = zoom_series(lambda q: (q[:, 1] > 0).astype(int), (0.01, 0.01), 1.0, zooms=(1.0,),
                     refine=1)[0]
    assert not lv.measurable
    verdict = T.plane_zoom(lambda q: (q[:, 1] > 0).astype(int), (0.01, 0.01), 1.0, zooms=(1.0,),
                           resolution=16)
    assert not verdict.measurable[0] and not verdict.new_structure[0]
    # legacy box sizes that cannot support a slope: boxes of 2 and 4 cells on a 32-cell window
    with pytest.raises(ValueError, match="scales"):
        zoom_series(lambda q: (q[:, 1] > 0).astype(int), (0.0, 0.0), 1.0, resolution=32,
                    scales=(2, 4))
    with pytest.raises(ValueError, match="refine"):
        zoom_series(lambda q: q[:, 0] > 0, (0, 0), 1.0, refine=-1)
    with pytest.raises(ValueError, match="threshold"):
        T.plane_zoom(lambda q: q[:, 0] > 0, (0, 0), 1.0, threshold=0.9)


def test_refined_counts_of_a_line_are_exact_box_crossings() -> None:
    # the line x = 0.37 h through a grid of spacing h: one column of boxes at every level,
    # (R - 1) 2**k boxes tall, and no label outside the refined band
    R, h = 8, 1.0 / 7
    grid = np.arange(R) * h
    labels = (grid[:, None] + 0 * grid[None] > 0.37 * h).astype(int)
    boxes, counts, evals, classes = refined_box_counts(
        lambda q: (q[:, 0] > 0.37 * h).astype(int), (0.0, 0.0), h, labels, refine=3)
    np.testing.assert_array_equal(boxes, [7, 14, 28, 56])
    np.testing.assert_array_equal(counts, [7, 14, 28, 56])
    assert classes == 2 and evals < 3 * 56 * 9
