"""Boundaries: ridge detection, phase labelling, box-counting dimension against known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latentatlas.geometry.boundaries import box_counting_dimension, phases, ridges


def koch_curve(level: int) -> np.ndarray:
    """Vertices of the Koch curve on [0, 1] after ``level`` refinements: (4**level + 1, 2)."""
    pts = np.array([[0.0, 0.0], [1.0, 0.0]])
    c, s = 0.5, math.sqrt(3) / 2
    rot = np.array([[c, -s], [s, c]])
    for _ in range(level):
        a, b = pts[:-1], pts[1:]
        d = (b - a) / 3
        p1, p3 = a + d, a + 2 * d
        p2 = p1 + d @ rot.T
        pts = np.vstack([np.stack([a, p1, p2, p3], 1).reshape(-1, 2), pts[-1:]])
    return pts


def test_box_counting_line_points_and_mask() -> None:
    t = np.linspace(0, 1, 20000)
    dim, (sizes, counts) = box_counting_dimension(np.stack([t, 0.3 * t + 0.1], 1))
    assert abs(dim - 1.0) < 0.05, (dim, counts)
    assert len(sizes) == len(counts) >= 4
    n = 512
    mask = np.zeros((n, n), bool)
    s = np.linspace(0, 1, 10 * n)
    mask[(s * (n - 1)).astype(int), ((0.6 * s + 0.1) * (n - 1)).astype(int)] = True
    assert abs(box_counting_dimension(mask)[0] - 1.0) < 0.05
    # a filled square has dimension 2 (boxes aligned with it: shifted grids would add a row and
    # a column of boxes, i.e. the +1 edge bias that shrinks as boxes get smaller)
    full = np.ones((256, 256), bool)
    assert abs(box_counting_dimension(full, offsets=1)[0] - 2.0) < 1e-12


def test_box_counting_koch_curve() -> None:
    expected = math.log(4) / math.log(3)  # 1.2619
    dim, _ = box_counting_dimension(koch_curve(8))  # 65537 vertices, segments of 3**-8
    assert abs(dim - expected) < 0.05, dim  # measured 1.255
    # rasterised on a 1024 x 1024 mask (segments densified to 4 points)
    pts = koch_curve(7)
    w = np.linspace(0, 1, 4)[:, None, None]
    dense = (pts[:-1][None] * (1 - w) + pts[1:][None] * w).reshape(-1, 2)
    mask = np.zeros((1024, 1024), bool)
    ij = np.floor(dense * 1023).astype(int)
    mask[ij[:, 0], ij[:, 1]] = True
    assert abs(box_counting_dimension(mask)[0] - expected) < 0.05  # measured 1.257
    with pytest.raises(ValueError, match="scales"):
        box_counting_dimension(pts, scales=[0.1])
    with pytest.raises(ValueError, match="empty"):
        box_counting_dimension(np.zeros((8, 8), bool))


def test_ridges_found_on_a_known_ridge_line() -> None:
    # metric-like field: flat 1 inside phases, a peak of height 50 along the line j = 0.5 i + 15
    g0, g1 = 64, 64
    i, j = np.meshgrid(np.arange(g0), np.arange(g1), indexing="ij")
    dist = (j - 0.5 * i - 15) / math.sqrt(1 + 0.25)  # signed distance (pixels) to the line
    rng = np.random.default_rng(0)
    field = 1 + 50 * np.exp(-(dist**2) / (2 * 2.0**2)) + 0.05 * rng.random((g0, g1))
    mask = ridges(field)
    assert mask.sum() > 0
    # every ridge pixel lies within 1 pixel of the line ...
    assert np.abs(dist[mask]).max() <= 1.0
    # ... and the line is covered: a ridge pixel within 1 pixel in (almost) every row
    rows = [np.any(mask[r] & (np.abs(dist[r]) <= 1.0)) for r in range(g0)]
    assert np.mean(rows) >= 0.9
    # a flat noisy field has no salient ridges
    assert ridges(1 + 0.05 * rng.random((g0, g1))).sum() <= 0.02 * g0 * g1
    with pytest.raises(ValueError, match="positive"):
        ridges(field - 10)


def test_phases_two_regions_split_by_a_line() -> None:
    mask = np.zeros((40, 30), bool)
    for r in range(40):  # an 8-connected diagonal-ish line from top to bottom
        mask[r, 5 + r // 2] = True
    labels = phases(mask)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert (labels[mask] == 0).all()
    assert labels[0, 0] != labels[0, -1]
    assert (labels == 1).sum() >= (labels == 2).sum()  # largest region first
    # ridges -> phases on the synthetic field
    i, j = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    dist = (j - 0.5 * i - 15) / math.sqrt(1.25)
    field = 1 + 50 * np.exp(-(dist**2) / 8.0)
    lab = phases(ridges(field, smooth=0.0), min_size=20)
    assert lab.max() == 2
    # small specks are merged into the boundary with min_size
    speck = np.zeros((10, 10), bool)
    speck[4:6, 4:6] = True
    speck[2, :] = True
    assert phases(speck, min_size=5).max() == 2
