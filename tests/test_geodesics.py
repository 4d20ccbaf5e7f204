"""Geodesics against closed forms: the hyperbolic half-plane and the Fisher metric of N(mu, s)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latentatlas.geometry.geodesics import geodesic, path_length
from latentatlas.geometry.metric import grid_metric_fn


def diag_metric(d0, d1):
    z = torch.zeros_like(d0)
    return torch.stack([torch.stack([d0, z], -1), torch.stack([z, d1], -1)], -2)


def half_plane(t):
    y = t[:, 1]
    return diag_metric(1 / y**2, 1 / y**2)


def normal_fisher(t):  # N(mu, s) in (mu, s)
    s = t[:, 1]
    return diag_metric(1 / s**2, 2 / s**2)


def hyperbolic_distance(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.arccosh(1 + ((a - b) ** 2).sum() / (2 * a[1] * b[1])))


def semicircle_deviation(points: np.ndarray, a, b) -> float:
    """Max distance of points from the geodesic semicircle through a and b, relative to its radius."""
    (x1, y1), (x2, y2) = a, b
    c = ((x2**2 + y2**2) - (x1**2 + y1**2)) / (2 * (x2 - x1))  # centre on the x-axis
    r = math.hypot(x1 - c, y1)
    return float(np.abs(np.hypot(points[:, 0] - c, points[:, 1]) - r).max() / r)


@pytest.mark.parametrize("a, b", [((-1.0, 1.0), (1.0, 1.0)), ((0.0, 0.2), (2.0, 1.5))])
def test_half_plane_geodesic_is_a_semicircle(a, b) -> None:
    geo = geodesic(half_plane, a, b, n=64)
    exact = hyperbolic_distance(a, b)
    # measured: relative length error ~4e-5, deviation from the circle ~1e-4 of its radius
    assert abs(geo.length / exact - 1) < 0.01
    assert semicircle_deviation(geo.points, a, b) < 0.005
    np.testing.assert_allclose(geo.points[0], a)
    np.testing.assert_allclose(geo.points[-1], b)
    # equal metric arc length between consecutive points
    seg = [path_length(half_plane, geo.points[i : i + 2]) for i in range(63)]
    assert np.std(seg) / np.mean(seg) < 0.01
    assert geo.straight_length > geo.length  # the straight segment is longer


def test_vertical_geodesic_is_straight() -> None:
    geo = geodesic(half_plane, (0.0, 0.5), (0.0, 3.0), n=32)
    assert abs(geo.length - math.log(6.0)) < 1e-4
    assert np.abs(geo.points[:, 0]).max() < 1e-6
    assert abs(geo.straightness - 1.0) < 1e-4


def test_normal_fisher_geodesic() -> None:
    # d mu^2 + 2 d s^2 over s^2 = 2 (dx^2 + ds^2) / s^2 with x = mu / sqrt(2): a scaled half-plane
    a, b = (-1.0, 1.0), (1.5, 0.6)
    geo = geodesic(normal_fisher, a, b, n=64)
    a2, b2 = (a[0] / math.sqrt(2), a[1]), (b[0] / math.sqrt(2), b[1])
    exact = math.sqrt(2) * hyperbolic_distance(a2, b2)
    assert abs(geo.length / exact - 1) < 0.01
    scaled = geo.points / np.array([math.sqrt(2), 1.0])
    assert semicircle_deviation(scaled, a2, b2) < 0.005


def test_geodesic_on_a_gridded_metric() -> None:
    # bilinear interpolation of the half-plane metric on a 101 x 101 grid
    a0 = np.linspace(-1.5, 1.5, 101)
    a1 = np.linspace(0.5, 2.0, 101)
    u, v = np.meshgrid(a0, a1, indexing="ij")
    g = half_plane(torch.as_tensor(np.stack([u.ravel(), v.ravel()], 1))).numpy().reshape(101, 101, 2, 2)
    fn = grid_metric_fn(a0, a1, g)
    a, b = (-1.0, 1.0), (1.0, 1.0)
    geo = geodesic(fn, a, b, n=48, bounds=[[-1.5, 1.5], [0.5, 2.0]])
    # interpolation error of 1/y^2 over cells of 0.015: < 1e-3 relative
    assert abs(geo.length / hyperbolic_distance(a, b) - 1) < 0.01
    assert semicircle_deviation(geo.points, a, b) < 0.01


def test_path_length_and_euclidean() -> None:
    def euclid(t):
        return torch.eye(2, dtype=t.dtype).expand(t.shape[0], 2, 2)

    geo = geodesic(euclid, (0.0, 0.0), (3.0, 4.0), n=10)
    assert abs(geo.length - 5.0) < 1e-9
    np.testing.assert_allclose(geo.points, np.linspace(0, 1, 10)[:, None] * [3.0, 4.0], atol=1e-7)
    # straight vertical path in the half-plane: length log(y2 / y1) (Simpson's rule, 20 segments)
    pts = np.stack([np.zeros(21), np.linspace(1.0, 4.0, 21)], 1)
    assert abs(path_length(half_plane, pts) - math.log(4.0)) < 1e-5
    with pytest.raises(ValueError, match="a: expected 2"):
        geodesic(euclid, (0.0, 0.0, 1.0), (1.0, 1.0))
    with pytest.raises(ValueError, match="n: expected"):
        geodesic(euclid, (0.0, 0.0), (1.0, 1.0), n=2)
    with pytest.raises(ValueError, match="points"):
        path_length(euclid, np.zeros((1, 2)))
