"""Box counting of zoom windows calibrated at the window size the pipeline uses: straight lines
read 1 and Koch-curve windows log 4 / log 3, within 0.06; unmeasurable windows are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
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
from latentatlas.geometry.lipschitz import lipschitz_profile
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


class _Float32Jump:
    """float32 generator: smooth pixels plus a unit jump of the third across alpha = 0.3."""

    latent_dim = 2
    compute_dtype = "float32"

    def generate(self, z, eta=0.0, seeds=None):
        z = torch.as_tensor(z).to(torch.float32)
        a, b = z[:, 0], z[:, 1]
        return torch.stack([0.2 * torch.sin(a), 0.2 * torch.cos(b), (a > 0.3).float()], 1)


def test_planes_stage_records_measurability_and_precision_floors() -> None:
    from types import SimpleNamespace

    from latentatlas.sources import LatentPlane

    eye = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # z = (alpha, beta)
    plane = LatentPlane(_Float32Jump(), anchors=eye, renormalize=False,
                        bounds=((-0.5, 1.5), (-0.5, 1.5)))
    axis = np.linspace(-0.5, 1.5, 17)  # no grid point on the jump
    atlas = SimpleNamespace(axis0=axis, axis1=axis,
                            labels=(axis[:, None] + 0 * axis[None] > 0.3).astype(np.int64))
    opts = dict(PlanesStage.defaults(None, {}), zoom_points=1, zooms=[10.0, 1e3])
    scalars: dict = {}
    arrays: dict = {}
    PlanesStage._zoom_and_lipschitz(plane, lambda x: (torch.as_tensor(x)[:, 2] > 0.5).long(),
                                    atlas, opts, 0, scalars, arrays)
    (zoom,) = scalars["zoom"]
    assert zoom["measurable"] == [True, True] and zoom["new_structure"] == [False, False]
    assert zoom["threshold"] == T.NEW_STRUCTURE_DIMENSION
    np.testing.assert_allclose(zoom["dimensions"], 1.0, atol=0.06)
    assert [len(b) for b in zoom["boxes"]] == [4, 4] and min(zoom["evaluations"]) > 32**2
    on, *inside = scalars["lipschitz"]
    assert on["where"] == "boundary" and inside and all(d["where"] == "inside" for d in inside)
    # the jump (1) is far above float32 rounding at every step: slope -1, no floor
    assert on["slope"] == pytest.approx(-1.0, abs=0.02) and math.isnan(on["floor_delta"])
    for d in inside:
        # smooth, float32: L = 0.2 max(|cos a|, |sin b|) <= 0.08 against |x| ~ 1 (the jump pixel
        # is 1 there), so differences L delta reach the rounding level 100 eps32 |x| = 1.2e-5
        # between delta = 1e-3 (usable) and 1e-4 (the floor)
        assert d["dtype"] == "float32" and d["floor_delta"] == pytest.approx(1e-4)
        assert d["usable"] == [True] * 3 + [False] * 4
        # above the floor: the slope of the exact (float64) profile over the same steps
        a, b = d["point"]
        exact = lipschitz_profile(
            lambda p: np.stack([0.2 * np.sin(p[:, 0]), 0.2 * np.cos(p[:, 1])], 1),
            np.array([a, b]), deltas=np.array([1e-1, 1e-2, 1e-3]), directions=8)
        assert d["slope"] == pytest.approx(exact.slope, abs=0.005)


class _LinearLabeler(torch.nn.Module):
    """argmax of a float32 linear layer on 16 pixels (casts its input to its own dtype)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.as_tensor(x).to(self.lin.weight.dtype)).argmax(1)


def test_torch_labeler_runs_in_float64_so_deep_zooms_stay_smooth() -> None:
    from latentatlas.sources import LatentPlane

    w = torch.randn(2, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    class Smooth:
        latent_dim = 2

        def generate(self, z, eta=0.0, seeds=None):
            return torch.tanh(torch.as_tensor(z) @ w)

    eye = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    plane = LatentPlane(Smooth(), anchors=eye, renormalize=False, bounds=((-1, 1), (-1, 1)))
    labeler = _LinearLabeler()
    lf = T.label_fn(plane, labeler)
    assert labeler.lin.weight.dtype == torch.float32  # the caller's labeler is left alone
    axis = np.linspace(-1, 1, 33)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    labels = lf(grid).reshape(33, 33)
    (seg,) = T.boundary_points(labels, axis, axis, k=1, seed=0)
    centre = T.refine_boundary(lf, seg[0], seg[1])
    # a smooth generator and a linear labeler: the class boundary is a smooth curve, a line at
    # every zoom. Measured 0.995 at 1e3, 1e5, 1e6 in float64; the same labeler in float32 read
    # 0.995 / 1.492 / 1.153 (its rounding, called new structure at 1e5 and 1e6)
    zoom = T.plane_zoom(lf, centre, 0.5, zooms=(1e3, 1e5, 1e6), resolution=PIPELINE_RESOLUTION)
    np.testing.assert_allclose(zoom.dimensions, 1.0, atol=0.06)
    assert not zoom.new_structure.any()
