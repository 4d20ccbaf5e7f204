"""Deviation of geodesics from the chord in metric units, against closed forms: 0 for a flat
metric, ``log(R / y0)`` on the Poincare half-plane (semicircle of radius R over a chord at height
y0), ``sqrt(2) log(R / s0)`` for the Gaussian (mu, sigma) Fisher metric; several starts find the
path around a bump that a straight start cannot leave."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latentatlas.analyses import plane_tools as T
from latentatlas.geometry.geodesics import chord_deviation, geodesic


def diag_metric(d0: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
    z = torch.zeros_like(d0)
    return torch.stack([torch.stack([d0, z], -1), torch.stack([z, d1], -1)], -2)


def half_plane(t: torch.Tensor) -> torch.Tensor:
    return diag_metric(1 / t[:, 1] ** 2, 1 / t[:, 1] ** 2)


def normal_fisher(t: torch.Tensor) -> torch.Tensor:  # N(mu, s) in (mu, s)
    return diag_metric(1 / t[:, 1] ** 2, 2 / t[:, 1] ** 2)


def flat(t: torch.Tensor) -> torch.Tensor:
    g = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=t.dtype)
    return g.expand(len(t), 2, 2)


def half_plane_segment(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Exact half-plane length of straight segments p -> q (rows): |dp| = |dy| sqrt(1 + (dx/dy)^2)
    integrates to sqrt(1 + (dx/dy)^2) |log(y1 / y0)|; horizontal: |dx| / y."""
    dx, dy = q[:, 0] - p[:, 0], q[:, 1] - p[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        slanted = np.sqrt(1 + (dx / dy) ** 2) * np.abs(np.log(q[:, 1] / p[:, 1]))
    return np.where(np.abs(dy) > 1e-12, slanted, np.abs(dx) / p[:, 1])


def exact_half_plane_deviation(a, b, m: int = 200_001) -> float:
    """Brute force on the exact semicircle: largest exact metric length from the chord."""
    (x1, y1), (x2, y2) = a, b
    c = ((x2**2 + y2**2) - (x1**2 + y1**2)) / (2 * (x2 - x1))
    r = math.hypot(x1 - c, y1)
    t1, t2 = math.atan2(y1, x1 - c), math.atan2(y2, x2 - c)
    th = np.linspace(t1, t2, m)
    pts = np.stack([c + r * np.cos(th), r * np.sin(th)], 1)
    pa, ab = np.asarray(a, float), np.subtract(b, a)
    s = np.clip((pts - pa) @ ab / (ab @ ab), 0, 1)
    return float(half_plane_segment(pa + s[:, None] * ab, pts).max())


@pytest.mark.parametrize("a, b", [((-1.0, 0.5), (2.0, 1.5)), ((0.0, 0.0), (1.0, -3.0))])
def test_flat_metric_geodesic_has_zero_deviation(a, b) -> None:
    geo = geodesic(flat, a, b, n=32, starts=3)
    assert geo.deviation < 1e-6 and geo.relative_deviation < 1e-6
    np.testing.assert_allclose(geo.start_lengths, geo.straight_length, rtol=1e-6)
    g = np.array([[2.0, 0.6], [0.6, 1.0]])
    d = np.subtract(b, a)
    assert geo.length == pytest.approx(math.sqrt(d @ g @ d), rel=1e-6)


def test_half_plane_deviation_at_equal_heights_is_log_radius_over_height() -> None:
    a, b = (-1.0, 0.5), (1.0, 0.5)
    geo = geodesic(half_plane, a, b, n=64, starts=3)
    exact = math.log(math.hypot(1.0, 0.5) / 0.5)  # R = sqrt(1 + y0^2): log(sqrt 5) = 0.805
    assert geo.deviation == pytest.approx(exact, rel=1e-3)
    assert geo.length == pytest.approx(2 * math.asinh(2 / (2 * 0.5)), rel=1e-3)


def test_half_plane_deviation_for_unequal_heights_matches_brute_force() -> None:
    a, b = (0.0, 0.2), (2.0, 1.5)
    geo = geodesic(half_plane, a, b, n=64, starts=3)
    exact = exact_half_plane_deviation(a, b)
    assert geo.deviation == pytest.approx(exact, rel=5e-3)
    # chord_deviation on the exact semicircle reproduces the closed-form segment lengths
    (x1, y1), (x2, y2) = a, b
    c = ((x2**2 + y2**2) - (x1**2 + y1**2)) / (2 * (x2 - x1))
    r = math.hypot(x1 - c, y1)
    th = np.linspace(math.atan2(y1, x1 - c), math.atan2(y2, x2 - c), 2001)
    arc = np.stack([c + r * np.cos(th), r * np.sin(th)], 1)
    dev, _ = chord_deviation(half_plane, arc)
    assert dev == pytest.approx(exact_half_plane_deviation(a, b, 2001), rel=1e-6)


def test_gaussian_fisher_deviation() -> None:
    # dmu^2 / s^2 + 2 ds^2 / s^2 = 2 (du^2 + ds^2) / s^2 with u = mu / sqrt 2: semicircles in
    # (u, s) of radius R^2 = (du / 2)^2 + s0^2; the vertical at the apex has length sqrt2 log(R/s0)
    s0, dmu = 0.6, 2.4
    geo = geodesic(normal_fisher, (-dmu / 2, s0), (dmu / 2, s0), n=64, starts=3)
    radius = math.sqrt((dmu / math.sqrt(2) / 2) ** 2 + s0**2)
    assert geo.deviation == pytest.approx(math.sqrt(2) * math.log(radius / s0), rel=1e-3)
    exact_length = math.sqrt(2) * 2 * math.asinh(dmu / math.sqrt(2) / (2 * s0))
    assert geo.length == pytest.approx(exact_length, rel=1e-3)


def bump(t: torch.Tensor) -> torch.Tensor:
    """(1 + 8 exp(-|t|^2 / 0.1)) I: a costly disc at the origin, symmetric about the x-axis."""
    w = 1 + 8 * torch.exp(-(t**2).sum(1) / 0.1)
    return diag_metric(w, w)


def test_several_starts_leave_a_symmetric_critical_path() -> None:
    a, b = (-1.0, 0.0), (1.0, 0.0)
    straight = geodesic(bump, a, b, n=48)
    # the straight start stays on the axis: by symmetry the energy gradient has no y-component
    assert straight.deviation < 1e-8
    assert straight.length == pytest.approx(straight.straight_length, rel=1e-6)
    multi = geodesic(bump, a, b, n=48, starts=3)
    assert multi.start_lengths[0] == pytest.approx(straight.length, rel=1e-9)
    # the bent starts go round the disc, one on each side, with equal lengths (mirror images)
    assert multi.start_lengths[1] == pytest.approx(multi.start_lengths[2], rel=1e-4)
    assert multi.length == min(multi.start_lengths) < 0.8 * straight.length
    assert multi.deviation > 0.2


def test_errors() -> None:
    with pytest.raises(ValueError, match="starts"):
        geodesic(flat, (0, 0), (1, 1), starts=0)
    with pytest.raises(ValueError, match="points"):
        chord_deviation(flat, np.zeros((1, 2)))
    with pytest.raises(ValueError, match="pieces"):
        chord_deviation(flat, np.zeros((3, 2)), pieces=0)


class _Atlas:
    """Two phases left / right of alpha = 0 on a 24 x 16 grid; a flat metric inside each phase
    and a ridge along the boundary."""

    def __init__(self) -> None:
        self.axis0, self.axis1 = np.linspace(-1, 1, 24), np.linspace(-0.6, 0.6, 16)
        a0 = self.axis0[:, None] + 0 * self.axis1[None]
        self.labels = (a0 > 0).astype(np.int64)
        w = 1 + 20 * np.exp(-(a0 / 0.1) ** 2)
        self.metric = np.zeros((24, 16, 2, 2))
        self.metric[..., 0, 0] = self.metric[..., 1, 1] = w


def test_geodesic_pairs_inside_and_across() -> None:
    atlas = _Atlas()
    pairs = T.geodesic_pairs(atlas, n=32, starts=2)
    kinds = [p.kind for p in pairs]
    assert kinds == ["inside", "across"]
    inside, across = pairs

    def label(p):
        i = np.abs(atlas.axis0 - p[0]).argmin()
        j = np.abs(atlas.axis1 - p[1]).argmin()
        return atlas.labels[i, j]

    assert label(inside.a) == label(inside.b) and label(across.a) != label(across.b)
    # inside a phase the metric is (nearly) flat: the geodesic is the chord
    assert inside.deviation < 0.05 * inside.length
    assert across.length <= across.straight_length + 1e-9
    rec = inside.record()
    assert set(rec) >= {"kind", "a", "b", "length", "straight_length", "deviation",
                        "relative_deviation", "start_lengths"}
