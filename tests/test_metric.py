"""Metric utilities: curvature against closed forms, coordinate changes, interpolation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from latentatlas.geometry.metric import (
    change_coordinates,
    grid_metric_fn,
    metric,
    scalar_curvature,
    volume_element,
)
from latentatlas.geometry.potential import Potential


def diag_metric(d0, d1):
    z = torch.zeros_like(d0)
    return torch.stack([torch.stack([d0, z], -1), torch.stack([z, d1], -1)], -2)


def half_plane(t):  # R = -2
    y = t[:, 1]
    return diag_metric(1 / y**2, 1 / y**2)


def normal_fisher(t):  # N(mu, s) in (mu, s): diag(1, 2) / s^2, R = -1
    s = t[:, 1]
    return diag_metric(1 / s**2, 2 / s**2)


def sphere(t, r=2.0):  # (polar angle, azimuth) on a sphere of radius r: R = 2 / r^2
    th = t[:, 0]
    return r**2 * diag_metric(torch.ones_like(th), torch.sin(th) ** 2)


def rotated_half_plane(t):  # a non-diagonal metric: the half-plane in rotated coordinates
    c, s = math.cos(0.5), math.sin(0.5)
    rot = torch.tensor([[c, -s], [s, c]], dtype=t.dtype)
    return rot.T @ half_plane(t @ rot.T) @ rot


PTS = torch.tensor([[0.3, 0.7], [1.0, 2.0], [-0.5, 1.5]], dtype=torch.float64)


@pytest.mark.parametrize("method", ["autograd", "fd"])
@pytest.mark.parametrize(
    "fn, expected, pts",
    [
        (half_plane, -2.0, PTS),
        (normal_fisher, -1.0, PTS),
        (sphere, 0.5, PTS),
        (rotated_half_plane, -2.0, torch.tensor([[0.3, 1.7], [1.0, 2.0]], dtype=torch.float64)),
    ],
)
def test_scalar_curvature_closed_forms(fn, expected, pts, method) -> None:
    r = scalar_curvature(fn, pts, method=method)
    # autograd is exact up to round-off; central differences with h = eps^(1/4) ~ 1e-4 have
    # truncation error O(h^2) ~ 1e-8 and round-off eps / h^2 ~ 1e-8 relative
    tol = 1e-10 if method == "autograd" else 1e-5
    torch.testing.assert_close(r, torch.full_like(r, expected), rtol=0, atol=tol)


def test_scalar_curvature_of_a_potential_autograd_matches_fd() -> None:
    torch.manual_seed(0)
    pot = Potential(bounds=[[-1.0, 1.0], [-1.0, 1.0]], hidden=(16, 16)).double()
    pts = torch.rand(10, 2, dtype=torch.float64) - 0.5
    r_ad = scalar_curvature(pot, pts, method="autograd")  # 4th derivatives of Phi by autograd
    r_fd = scalar_curvature(pot, pts, method="fd")
    torch.testing.assert_close(r_ad, r_fd, rtol=1e-4, atol=1e-6)
    r_np = scalar_curvature(pot, pts.numpy())
    assert isinstance(r_np, np.ndarray)
    np.testing.assert_allclose(r_np, r_ad.numpy(), rtol=1e-10)


def test_change_coordinates_natural_to_mean_std() -> None:
    # Fisher metric of N(mu, s) in natural coordinates theta = (mu / s^2, -1 / (2 s^2)) is the
    # Hessian of log Z; pulled back by J = d theta / d(mu, s) it must be diag(1, 2) / s^2
    mu = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    s = torch.tensor([0.5, 1.0, 1.7], dtype=torch.float64)
    a, b = mu / s**2, -1 / (2 * s**2)
    g11, g12 = -1 / (2 * b), a / (2 * b**2)
    g22 = -(a**2) / (2 * b**3) + 1 / (2 * b**2)
    g_nat = torch.stack([torch.stack([g11, g12], -1), torch.stack([g12, g22], -1)], -2)
    jac = torch.zeros(3, 2, 2, dtype=torch.float64)
    jac[:, 0, 0] = 1 / s**2
    jac[:, 0, 1] = -2 * mu / s**3
    jac[:, 1, 1] = 1 / s**3
    g_ms = change_coordinates(g_nat, jac)
    torch.testing.assert_close(g_ms, normal_fisher(torch.stack([mu, s], 1)))
    # numpy in, numpy out; a constant (d, d) Jacobian is broadcast
    out = change_coordinates(np.eye(2)[None].repeat(2, 0), 2 * np.eye(2))
    np.testing.assert_allclose(out, 4 * np.eye(2)[None].repeat(2, 0))
    with pytest.raises(ValueError, match="jacobian"):
        change_coordinates(np.eye(2)[None], np.eye(3))


def test_volume_element() -> None:
    g = torch.tensor([[[4.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 9.0]]], dtype=torch.float64)
    torch.testing.assert_close(volume_element(g), torch.tensor([math.sqrt(3.0), 3.0], dtype=torch.float64))
    assert volume_element(np.array([[1.0, 2.0], [2.0, 1.0]])) == 0.0  # indefinite -> clamped


def test_grid_metric_fn_is_bilinear() -> None:
    a0 = np.array([0.0, 1.0, 3.0])  # non-uniform axis
    a1 = np.array([-1.0, 0.0, 0.5, 2.0])
    u, v = np.meshgrid(a0, a1, indexing="ij")

    def bilinear(x, y):  # each component bilinear in (x, y): reproduced exactly
        comp = [1 + 0.5 * x + 0.2 * y + 0.1 * x * y, 0.3 * x * y, 2 - 0.1 * x + 0.4 * y * x]
        return np.stack([np.stack([comp[0], comp[1]], -1), np.stack([comp[1], comp[2]], -1)], -2)

    fn = grid_metric_fn(a0, a1, bilinear(u, v))
    gen = np.random.default_rng(0)
    pts = np.stack([gen.uniform(0, 1, 50), gen.uniform(-1, 0, 50)], 1)  # within one cell each
    out = fn(torch.as_tensor(pts)).numpy()
    np.testing.assert_allclose(out, bilinear(pts[:, 0], pts[:, 1]), atol=1e-12)
    nodes = np.stack([u.ravel(), v.ravel()], 1)
    np.testing.assert_allclose(fn(torch.as_tensor(nodes)).numpy(), bilinear(u, v).reshape(-1, 2, 2), atol=1e-12)
    # outside the grid: clamped to the border
    far = fn(torch.tensor([[10.0, 10.0]], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(far[0], bilinear(np.array(3.0), np.array(2.0)), atol=1e-12)
    with pytest.raises(ValueError, match="metric"):
        grid_metric_fn(a0, a1, np.zeros((3, 3, 2, 2)))


def test_metric_accepts_potential_atlas_and_callable() -> None:
    torch.manual_seed(0)
    pot = Potential(bounds=[[0.0, 1.0], [0.0, 1.0]], hidden=(8,))
    pts = np.array([[0.2, 0.3], [0.5, 0.9]])
    g = metric(pot, pts)
    assert isinstance(g, np.ndarray) and g.shape == (2, 2, 2)
    np.testing.assert_allclose(g, pot.hessian(torch.as_tensor(pts)).detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(metric(SimpleNamespace(potential=pot), pts), g, rtol=1e-6)
    a0 = np.linspace(0, 1, 5)
    grid = np.broadcast_to(np.array([[2.0, 0.5], [0.5, 1.0]]), (5, 5, 2, 2))
    atlas = SimpleNamespace(axis0=a0, axis1=a0, metric=grid, potential=np.zeros((5, 5)))
    np.testing.assert_allclose(metric(atlas, pts), np.broadcast_to(grid[0, 0], (2, 2, 2)))
    out = metric(half_plane, torch.tensor([[0.0, 2.0]], dtype=torch.float64))
    torch.testing.assert_close(out, torch.eye(2, dtype=torch.float64)[None] / 4)
    with pytest.raises(ValueError, match="obj"):
        metric(3, pts)
    with pytest.raises(ValueError, match="t: expected shape"):
        metric(pot, np.zeros((2, 3)))
