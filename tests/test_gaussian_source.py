"""GaussianFamily: closed forms against finite differences, Monte Carlo, and per-point determinism."""

from __future__ import annotations

import numpy as np
import pytest

import latentatlas as la
from latentatlas.sources import GaussianFamily, check_bounds


def _fd(fun, x: np.ndarray, e: float) -> np.ndarray:
    """Central-difference Jacobian of fun: (2,) -> (k,) at x, returned as (k, 2)."""
    cols = [(fun(x + e * np.eye(2)[a]) - fun(x - e * np.eye(2)[a])) / (2 * e) for a in range(2)]
    return np.stack(cols, -1)


@pytest.mark.parametrize("coords", ["natural", "mean_std"])
@pytest.mark.parametrize("dim", [1, 3])
def test_reference_closed_form_and_finite_differences(coords: str, dim: int) -> None:
    src = GaussianFamily(coords, dim=dim)
    pts = (
        np.array([[0.5, -0.6], [-1.2, -0.3]])
        if coords == "natural"
        else np.array([[0.3, 0.7], [-1.0, 1.4]])
    )
    ref = src.reference(pts)
    mu, sigma = src.mean_std(pts)
    if coords == "mean_std":
        # textbook Fisher information of N(mu, sigma^2) per entry: diag(1/sigma^2, 2/sigma^2)
        expected = dim * np.stack([np.diag([1 / s**2, 2 / s**2]) for s in sigma])
        np.testing.assert_allclose(ref["metric"], expected, rtol=1e-13)
    for i, p in enumerate(pts):

        def pot(q: np.ndarray) -> np.ndarray:
            return src.reference(q[None])["potential"]

        def grad(q: np.ndarray) -> np.ndarray:
            return src.reference(q[None])["gradient"][0]

        # step 1e-5: truncation ~1e-10 * third derivative (<~1e2), rounding ~1e-16 * 10 / 1e-5
        np.testing.assert_allclose(_fd(pot, p, 1e-5)[0], ref["gradient"][i], rtol=1e-7, atol=1e-8)
        if coords == "natural":
            np.testing.assert_allclose(_fd(grad, p, 1e-5), ref["metric"][i], rtol=1e-7, atol=1e-8)
        # the natural-coordinate metric also equals the Hessian of log Z by differentiating
        # the potential twice in natural coordinates (independent of the closed-form metric)
        theta = src.natural(p[None])[0]
        nat = GaussianFamily("natural", dim=dim)
        hess = _fd(lambda q, nat=nat: nat.reference(q[None])["gradient"][0], theta, 1e-5)
        mu_i, s_i = mu[i], sigma[i]
        jac = np.array([[1 / s_i**2, -2 * mu_i / s_i**3], [0.0, 1 / s_i**3]])
        if coords == "natural":
            jac = np.eye(2)
        np.testing.assert_allclose(jac.T @ hess @ jac, ref["metric"][i], rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(_fd(src.natural, p[None], 1e-6)[0], jac, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("coords", ["natural", "mean_std"])
def test_metric_equals_monte_carlo_covariance(coords: str) -> None:
    src = GaussianFamily(coords, dim=2)
    pts = np.array([[0.8, -0.7]]) if coords == "natural" else np.array([[0.6, 1.3]])
    n = 200_000
    x = src.sample(pts, n=n, seed=3)[0].astype(np.float64)  # (n, 2)
    f = src.sufficient_statistics(x)
    theta = src.natural(pts)[0]
    mu, sigma = (v[0] for v in src.mean_std(pts))
    ref = src.reference(pts)
    nat = GaussianFamily("natural", dim=2).reference(theta[None])
    # E f = grad log Z and Cov f = Hess log Z (natural metric); standard errors of the estimates
    # are ~ sqrt(var/n) ~ 0.3 % of the entries, 5 sigma tolerances below
    np.testing.assert_allclose(f.mean(0), nat["gradient"][0], rtol=0.02, atol=0.02)
    np.testing.assert_allclose(np.cov(f.T), nat["metric"][0], rtol=0.03, atol=0.03)
    # score covariance in the source's own coordinates = its reference metric
    if coords == "natural":
        score = f - nat["gradient"][0]
    else:
        z = (x - mu) / sigma
        score = np.stack([z.sum(1) / sigma, ((z**2) - 1).sum(1) / sigma], 1)
    np.testing.assert_allclose(score.T @ score / n, ref["metric"][0], rtol=0.03, atol=0.03)


def test_sampling_is_deterministic_per_point() -> None:
    src = GaussianFamily("mean_std", dim=4)
    pts = np.array([[0.0, 1.0], [0.5, 0.8], [-1.0, 1.2]])
    batch = src.sample(pts, n=7, seed=11)
    assert batch.shape == (3, 7, 4) and batch.dtype == np.float32
    for i in range(3):
        np.testing.assert_array_equal(batch[i], src.sample(pts[i : i + 1], n=7, seed=11)[0])
    np.testing.assert_array_equal(batch[1:], src.sample(pts[1:], n=7, seed=11))
    assert not np.array_equal(batch, src.sample(pts, n=7, seed=12))
    # the lazy export resolves to this class
    assert la.sources.GaussianFamily is GaussianFamily


def test_default_bounds_resolve_bundle_posteriors() -> None:
    for coords in ("natural", "mean_std"):
        src = GaussianFamily(coords)
        assert check_bounds(src.bounds, src.domain, src.names) == src.bounds
        (lo0, hi0), (lo1, hi1) = src.bounds
        g0, g1 = np.meshgrid(np.linspace(lo0, hi0, 32), np.linspace(lo1, hi1, 32), indexing="ij")
        pts = np.stack([g0.ravel(), g1.ravel()], 1)
        # posterior std of a bundle of 16 draws ~ sqrt(diag(g^-1) / 16), in grid cells
        cov = np.linalg.inv(src.reference(pts)["metric"]) / 16
        cells = np.sqrt(np.diagonal(cov, axis1=1, axis2=2)) / np.array(
            [(hi0 - lo0) / 31, (hi1 - lo1) / 31]
        )
        assert cells.min() > 1.0 and np.median(cells) < 8.0, (coords, cells.min(), np.median(cells))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="coords"):
        GaussianFamily("polar")
    with pytest.raises(ValueError, match="dim"):
        GaussianFamily(dim=0)
    with pytest.raises(ValueError, match="theta2 < 0"):
        GaussianFamily("natural").sample([[0.0, 0.0]], n=2)
    with pytest.raises(ValueError, match="sigma > 0"):
        GaussianFamily("mean_std").reference([[0.0, 0.0]])
    with pytest.raises(ValueError, match="sigma"):
        GaussianFamily("mean_std").reference([[0.0, -1.0]])
    with pytest.raises(ValueError, match="params"):
        GaussianFamily().sample([[np.nan, -1.0]], n=2)
    with pytest.raises(ValueError, match="bounds"):
        GaussianFamily("natural", bounds=((-1, 1), (-1, 0)))
    with pytest.raises(ValueError, match="x"):
        GaussianFamily(dim=3).sufficient_statistics(np.zeros((4, 2)))


def test_save_load_roundtrip(tmp_path) -> None:
    src = GaussianFamily("mean_std", dim=2, bounds=((-1.0, 1.0), (0.5, 2.0)))
    la.save(src, tmp_path / "g.safetensors")
    back = la.load(tmp_path / "g.safetensors")
    assert isinstance(back, GaussianFamily) and back.bounds == src.bounds
    pts = np.array([[0.2, 0.9]])
    np.testing.assert_array_equal(back.sample(pts, 5, seed=1), src.sample(pts, 5, seed=1))
    np.testing.assert_array_equal(back.reference(pts)["metric"], src.reference(pts)["metric"])
