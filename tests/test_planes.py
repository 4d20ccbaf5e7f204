"""Latent-plane analyses on synthetic generators with known answers (no digits training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.path import Path

import latentatlas as la
from latentatlas import planes
from latentatlas.geometry.calibration import koch_polyline

EYE = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # z = (alpha, beta) with renormalize=False
BOUNDS = ((-0.5, 1.5), (-0.5, 1.5))


class LineGenerator:
    """Smooth in both coordinates plus a unit jump of the third pixel across alpha = 0.3;
    eta > 0 adds seeded pixel noise."""

    latent_dim = 2

    def generate(self, z, eta=0.0, seeds=None):
        z = torch.as_tensor(z)
        a, b = z[:, 0], z[:, 1]
        x = torch.stack([0.2 * torch.sin(a), 0.2 * torch.cos(b), (a > 0.3).to(z.dtype)], 1)
        if eta > 0:
            noise = np.stack([np.random.default_rng(int(s)).standard_normal(3) for s in seeds])
            x = x + 0.1 * eta * torch.as_tensor(noise, dtype=z.dtype)
        return x


def line_label(x):
    return (torch.as_tensor(x)[:, 2] > 0.5).long()


@pytest.fixture(scope="module")
def line_run():
    plane = la.sources.LatentPlane(LineGenerator(), anchors=EYE, renormalize=False, bounds=BOUNDS)
    atlas, run = planes.plane_atlas(plane, "pixels", line_label, resolution=24, bundle=4,
                                    potential_options={"steps": 3}, progress=False)
    return plane, atlas, run


def test_line_boundary_found_at_the_right_place(line_run) -> None:
    plane, atlas, run = line_run
    h = atlas.axis0[1] - atlas.axis0[0]
    # labels: exactly the cells with alpha > 0.3 are class 1
    assert np.array_equal(atlas.labels, np.broadcast_to((atlas.axis0 > 0.3)[:, None], (24, 24)))
    # the feature metric's ridge: the cells next to alpha = 0.3 (central differences straddle it)
    ridges = planes.metric_ridges(run.feature_metric)
    rows = np.unique(np.nonzero(ridges)[0])
    assert np.all(np.abs(atlas.axis0[rows] - 0.3) < h)
    # one ridge cell per row (the rule allows missing at most a couple of rows on a 24-cell line)
    assert ridges.sum() >= 22
    agree = planes.phase_agreement(atlas.labels, ridges)
    assert agree.fraction >= 0.9 and agree.chance < 0.2  # 3 columns of 24 are near the ridge
    # the jump is O(1 / (tau h))^2 times the smooth part: peak / median of sqrt det g >> 1
    vol = planes.volume_element(run.feature_metric)
    assert vol.max() / np.median(vol) > 10


def test_line_boundary_refined_zoom_dimension_one_and_lipschitz(line_run) -> None:
    plane, atlas, _ = line_run
    label_fn = planes.label_fn(plane, line_label)
    seg = planes.boundary_points(atlas.labels, atlas.axis0, atlas.axis1, k=2, seed=0)
    assert seg.shape == (2, 2, 2)
    center = planes.refine_boundary(label_fn, seg[0, 0], seg[0, 1])
    # bisection over 48 halvings of a 0.087-long segment: the boundary to ~1e-15
    assert center[0] == pytest.approx(0.3, abs=1e-12)
    zoom = planes.plane_zoom(label_fn, center, 0.5, zooms=(10.0, 1e3, 1e6), resolution=128)
    assert list(zoom.classes) == [2, 2, 2]
    # a straight line rasterised on 128 cells (boxes 2..16): dimension 1 within 0.05
    assert np.allclose(zoom.dimensions, 1.0, atol=0.05)
    assert not zoom.new_structure.any() and not zoom.keeps_appearing
    on, away = planes.plane_lipschitz(plane.make_decoder(), np.array([center, [1.0, 0.5]]))
    # on the jump ||x(t + d u) - x(t)|| -> 1 so L ~ 1/d: slope -1 (smooth part O(d) corrections)
    assert on.slope == pytest.approx(-1.0, abs=0.02)
    # away: L -> max_u |J u| with J = diag(0.2 cos 1, -0.2 sin 0.5) (separate pixels): the largest
    # singular value 0.2 cos 1, reached by the direction u = (1, 0) (one of the 8); O(d) terms
    assert away.slope == pytest.approx(0.0, abs=0.05)
    assert away.lipschitz[-1] == pytest.approx(0.2 * math.cos(1.0), rel=1e-5)


def test_koch_boundary_dimension() -> None:
    path = Path(koch_polyline(6))

    def koch(z):
        inside = path.contains_points(np.asarray(z, dtype=np.float64)[:, :2])
        return torch.as_tensor(np.stack([inside, ~inside], 1).astype(np.float64))

    plane = la.sources.LatentPlane(koch, anchors=EYE, renormalize=False)
    label_fn = planes.label_fn(plane, lambda x: torch.as_tensor(x).argmax(1))
    center = (0.5, math.sqrt(3) / 6)  # the flake's centre: the 1.3-wide window holds all of it
    zoom = planes.plane_zoom(label_fn, center, 1.3, zooms=(1.0,), resolution=243,
                             scales=(3, 9, 27))
    # boxes of 3, 9, 27 cells on 243 cells (powers of 3: the flake's own scale factor) of a
    # level-6 flake (segments of 1/729 of a side, below one cell). Measured 1.237 against
    # log 4 / log 3 = 1.262 (a window on one side only, holding part of the flake and the
    # window's straight cut, measured 1.210)
    assert zoom.dimensions[0] == pytest.approx(math.log(4) / math.log(3), abs=0.05)
    assert zoom.dimensions[0] > 1.15  # clearly not a smooth curve (1 within 0.05 above)
    assert zoom.new_structure[0]


def test_smooth_generator_has_no_boundary() -> None:
    w = torch.tensor([[1.0, 2.0, -0.3], [-0.5, 0.3, 0.8]], dtype=torch.float64)
    plane = la.sources.LatentPlane(lambda z: torch.tanh(torch.as_tensor(z) @ w), anchors=EYE,
                                   renormalize=False, bounds=((-1, 1), (-1, 1)))
    atlas, run = planes.plane_atlas(plane, "pixels", lambda x: torch.zeros(len(x), dtype=int),
                                    resolution=16, potential_options={"steps": 10},
                                    progress=False)
    assert not planes.metric_ridges(run.feature_metric).any()
    assert planes.boundary_points(atlas.labels, atlas.axis0, atlas.axis1).shape == (0, 2, 2)
    assert math.isnan(planes.phase_agreement(atlas.labels, np.zeros((16, 16), bool)).fraction)
    for p in np.random.default_rng(0).uniform(-0.8, 0.8, (3, 2)):
        (prof,) = planes.plane_lipschitz(plane.make_decoder(), p[None])
        assert abs(prof.slope) < 0.05


def test_feature_metric_is_exact_for_linear_embeddings() -> None:
    a0, a1 = np.linspace(-1, 1, 7), np.linspace(0, 2, 5)
    A = np.array([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]])  # E(t) = A t (3 features)
    t = np.stack(np.meshgrid(a0, a1, indexing="ij"), -1)
    g = planes.feature_metric(t @ A.T, a0, a1, tau=0.5)
    # differences of a linear field are exact (central and one-sided): g = A^T A / tau^2
    assert np.allclose(g, A.T @ A / 0.25, rtol=1e-12)
    with pytest.raises(ValueError, match="embeddings"):
        planes.feature_metric(t[:, :4] @ A.T, a0, a1)


def test_phase_agreement_against_hand_counts() -> None:
    labels = np.zeros((20, 10), dtype=int)
    labels[8:] = 1  # change between rows 7 and 8: changes marked on row 7
    on = np.zeros((20, 10), bool)
    on[8] = True  # one cell beside the change
    far = np.zeros((20, 10), bool)
    far[15] = True
    a = planes.phase_agreement(labels, on, tolerance=1)
    assert a.fraction == 1.0 and a.ridge_fraction == 1.0
    assert a.chance == pytest.approx(30 / 200)  # rows 7, 8, 9 are within one cell of row 8
    b = planes.phase_agreement(labels, far, tolerance=1)
    assert b.fraction == 0.0 and b.ridge_fraction == 0.0
    with pytest.raises(ValueError, match="tolerance"):
        planes.phase_agreement(labels, on, tolerance=-1)
    with pytest.raises(ValueError, match="same shape"):
        planes.phase_agreement(labels, on[:5])


def test_interpolation_in_a_flat_metric_is_straight() -> None:
    A = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
    plane = la.sources.LatentPlane(lambda z: torch.as_tensor(z) @ A, anchors=EYE,
                                   renormalize=False, bounds=((0, 1), (0, 1)))
    from latentatlas.atlas import Atlas

    ax = np.linspace(0, 1, 9)
    metric = np.broadcast_to(np.eye(2), (9, 9, 2, 2))
    atlas = Atlas(("alpha", "beta"), ax, ax, np.zeros((9, 9)), np.zeros((9, 9, 2)), metric)
    res = planes.interpolation(plane, atlas, "pixels", (0.1, 0.2), (0.9, 0.6), n=16, frames=4)
    d = np.array([0.8, 0.4])
    # Euclidean metric: geodesic = the segment, both lengths |b - a|; features E = A^T t linear:
    # feature length |A^T (b - a)| along either path
    assert res.metric_length_linear == pytest.approx(np.linalg.norm(d), rel=1e-9)
    assert res.metric_length_geodesic == pytest.approx(np.linalg.norm(d), rel=1e-6)
    assert np.abs(res.geodesic - res.linear).max() < 1e-4
    assert res.feature_length_linear == pytest.approx(np.linalg.norm(A.numpy().T @ d), rel=1e-6)
    assert res.images_geodesic.shape == (4, 3) and res.images_linear.shape == (4, 3)


def test_bad_inputs() -> None:
    plane = la.sources.LatentPlane(LineGenerator(), anchors=EYE, renormalize=False)
    with pytest.raises(ValueError, match="resolution"):
        planes.plane_atlas(plane, resolution=2)
    with pytest.raises(ValueError, match="features"):
        planes.make_features("nonsense")
    with pytest.raises(ValueError, match="different labels"):
        planes.refine_boundary(lambda p: np.zeros(len(p), int), (0, 0), (1, 1))
    with pytest.raises(ValueError, match="min_ratio"):
        planes.metric_ridges(np.broadcast_to(np.eye(2), (4, 4, 2, 2)), min_ratio=1.0)
