"""Convex potential: convexity, autograd derivatives, Bregman posteriors, recovery of a known metric.

Reference family: the normal distribution N(mu, s^2) in natural coordinates
theta = (mu / s^2, -1 / (2 s^2)), log Z(theta) = -theta1^2 / (4 theta2) + 1/2 log(pi / -theta2),
whose gradient (E[x], E[x^2]) and Hessian (the Fisher metric) are closed-form. On the grid
theta1 in [-1, 1], theta2 in [-1.5, -0.5] the metric varies by a factor ~9 (curved, not flat).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import latentatlas as la
from latentatlas.geometry.potential import (
    Potential,
    bregman_log_posterior,
    fit_potential,
    grid_points,
    js_divergence,
    model_posterior,
    posterior_moments,
    smooth,
    smoothing_matrix,
)


def logz(t: torch.Tensor) -> torch.Tensor:
    a, b = t[:, 0], t[:, 1]
    return -(a**2) / (4 * b) + 0.5 * torch.log(math.pi / (-b))


def exact_gradient(t: torch.Tensor) -> torch.Tensor:
    a, b = t[:, 0], t[:, 1]
    return torch.stack([-a / (2 * b), a**2 / (4 * b**2) - 1 / (2 * b)], -1)


def exact_metric(t: torch.Tensor) -> torch.Tensor:
    a, b = t[:, 0], t[:, 1]
    g11, g12 = -1 / (2 * b), a / (2 * b**2)
    g22 = -(a**2) / (2 * b**3) + 1 / (2 * b**2)
    return torch.stack([torch.stack([g11, g12], -1), torch.stack([g12, g22], -1)], -2)


AXIS0 = torch.linspace(-1.0, 1.0, 24, dtype=torch.float64)
AXIS1 = torch.linspace(-1.5, -0.5, 24, dtype=torch.float64)


def _random_potential(seed: int) -> Potential:
    torch.manual_seed(seed)
    pot = Potential(bounds=[[-1.0, 1.0], [-1.5, -0.5]], scale=2.0).double()
    with torch.no_grad():  # move far from the initialisation, as training would
        for p in pot.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return pot


def test_icnn_is_convex_along_random_lines() -> None:
    pot = _random_potential(1)
    gen = torch.Generator().manual_seed(0)
    n = 5000
    # points inside and well outside the box: convexity holds everywhere by construction
    x = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 6 - 3
    v = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    v = v / v.norm(dim=1, keepdim=True)
    h = 0.05
    with torch.no_grad():
        second = pot(x + h * v) - 2 * pot(x) + pot(x - h * v)
    # float64 round-off on Phi values of size ~10 is ~1e-14; the spec allows -1e-6
    assert float(second.min()) >= -1e-6
    hess = pot.hessian(x)
    assert float(torch.linalg.eigvalsh(hess).min()) >= -1e-9


def test_hessian_and_gradient_match_finite_differences() -> None:
    pot = _random_potential(2)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(200, 2, generator=gen, dtype=torch.float64) * torch.tensor([2.0, 1.0]) - torch.tensor([1.0, 1.5])
    grad = pot.gradient(x)
    hess = pot.hessian(x)
    eps = 1e-5
    fd_grad = torch.zeros_like(grad)
    fd_hess = torch.zeros_like(hess)
    for i in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[i] = eps
        with torch.no_grad():
            fd_grad[:, i] = (pot(x + e) - pot(x - e)) / (2 * eps)
        fd_hess[:, :, i] = (pot.gradient(x + e) - pot.gradient(x - e)) / (2 * eps)
    # central differences: truncation O(eps^2) ~ 1e-10 relative; round-off ~1e-16 / 1e-5
    torch.testing.assert_close(grad, fd_grad, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(hess, fd_hess, rtol=1e-6, atol=1e-7)
    # absolute coordinates: Phi(t) = scale * net((t - c) / h), so the chain rule gives 1 / h^2
    assert torch.allclose(hess, hess.transpose(1, 2))


def test_float64_input_on_float32_potential_and_save_load(tmp_path) -> None:
    torch.manual_seed(0)
    pot = Potential(bounds=[[0.0, 4.0], [-1.0, 1.0]], hidden=(16, 16), scale=3.0)
    t = torch.tensor([[1.0, 0.2], [3.0, -0.5]], dtype=torch.float64)
    assert pot(t).dtype == torch.float64
    assert pot.hessian(t).shape == (2, 2, 2)
    path = la.save(pot, tmp_path / "pot.safetensors")
    same = la.load(path)
    assert same.config["hidden"] == (16, 16) or list(same.config["hidden"]) == [16, 16]
    torch.testing.assert_close(same(t), pot(t))
    torch.testing.assert_close(same.hessian(t), pot.hessian(t))


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="bounds"):
        Potential(bounds=[[1.0, 0.0], [0.0, 1.0]])
    pot = Potential()
    with pytest.raises(ValueError, match="t: expected shape"):
        pot(torch.zeros(3, 3))
    post = torch.full((4, 2, 2), 0.25)
    with pytest.raises(ValueError, match="post"):
        fit_potential(post[:3], [0.0, 1.0], [0.0, 1.0], bundle=4, steps=1, progress=False)
    with pytest.raises(ValueError, match="bundle"):
        fit_potential(post, [0.0, 1.0], [0.0, 1.0], bundle=0, steps=1, progress=False)
    with pytest.raises(ValueError, match="sigma"):
        smoothing_matrix(4, -1.0)
    with pytest.raises(ValueError, match="axis0"):
        grid_points([1.0, 0.0], [0.0, 1.0])


def test_smoothing_is_the_average_of_normalised_bumps() -> None:
    g0, g1, sigma = 7, 5, 1.3
    q = torch.rand(3, g0, g1, dtype=torch.float64)
    q = q / q.sum(dim=(1, 2), keepdim=True)
    out = smooth(q, sigma)
    # brute force: a normalised 2-D Gaussian bump (in cells) at every grid point, weighted by q
    ii, jj = torch.meshgrid(torch.arange(g0.__int__()), torch.arange(g1), indexing="ij")
    ref = torch.zeros_like(q)
    for k in range(g0):
        for m in range(g1):
            bump = torch.exp(-((ii - k) ** 2 + (jj - m) ** 2) / (2 * sigma**2)).double()
            ref += q[:, k, m, None, None] * (bump / bump.sum())
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out.sum(dim=(1, 2)), torch.ones(3, dtype=torch.float64))


def test_js_divergence_values() -> None:
    p = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    q = torch.tensor([[[0.0, 1.0]]], dtype=torch.float64)
    torch.testing.assert_close(js_divergence(p, q), torch.tensor([math.log(2)], dtype=torch.float64))
    torch.testing.assert_close(js_divergence(p, p), torch.tensor([0.0], dtype=torch.float64))


def test_bregman_posterior_concentrates_like_inverse_fisher() -> None:
    # Fine grid, large K: the posterior exp(-K D) is a Gaussian of covariance (K g)^-1 to O(K^-1/2)
    a0 = torch.linspace(-1.0, 1.0, 81, dtype=torch.float64)
    a1 = torch.linspace(-1.5, -0.5, 81, dtype=torch.float64)
    grid = grid_points(a0, a1)
    interior = [i * 81 + j for i in (20, 40, 60) for j in (25, 40, 55)]
    for bundle in (400.0, 1600.0):
        post = model_posterior(logz, a0, a1, bundle, sources=torch.tensor(interior))
        _, cov = posterior_moments(post, a0, a1)
        want = torch.linalg.inv(bundle * exact_metric(grid[interior]))
        rel = (cov - want).abs().amax(dim=(1, 2)) / want.diagonal(dim1=1, dim2=2).amax(-1)
        assert float(rel.max()) < (0.2 if bundle == 400.0 else 0.1), rel
    # and the model posterior is the normalised exp(-K D)
    phi = logz(grid)
    logq = bregman_log_posterior(phi, grid, phi[:1], exact_gradient(grid[:1]), grid[:1], 3.0)
    torch.testing.assert_close(logq.exp().sum(), torch.tensor(1.0, dtype=torch.float64))


def _nrmse(est: torch.Tensor, exact: torch.Tensor) -> float:
    return float((est - exact).pow(2).mean().sqrt() / (exact.max() - exact.min()))


def check_recovery(pot, sigma: float) -> dict[str, float]:
    grid = grid_points(AXIS0, AXIS1)
    grad = pot.gradient(grid).double()
    ge = exact_gradient(grid)
    diff = grad - ge
    diff = diff - diff.mean(0)  # Phi is determined up to an affine term: remove the constant
    errs = {f"grad{k}": _nrmse(ge[:, k] + diff[:, k], ge[:, k]) for k in range(2)}
    hess = pot.hessian(grid).double()
    he = exact_metric(grid)
    for i, j in ((0, 0), (0, 1), (1, 1)):
        errs[f"g{i}{j}"] = _nrmse(hess[:, i, j], he[:, i, j])
    return errs


def sampled_exact_posteriors(bundle: int, sigma: float, samples: int = 2048, repeats: int = 16,
                             seed: int = 0) -> torch.Tensor:
    """Targets from DATA, not from the model under test: at every grid point theta, draw
    ``samples`` x ~ N(mu, s^2), take ``repeats`` random bundles of ``bundle`` of them (the
    pipeline's bundles), evaluate each bundle's exact posterior on the grid from the closed-form
    likelihood (flat prior), log-average the bundles (the pipeline's average) and smooth by the
    target kernel. (P, G0, G1) float64.

    The bundles' centres scatter around theta by ~sqrt(K / S_eff) posterior widths (S_eff: the
    distinct samples the R bundles cover), which widens the log-mean map by ~K / S_eff in
    variance: 2048 samples keep that below ~2 %."""
    rng = np.random.default_rng(seed)
    grid = grid_points(AXIS0, AXIS1).numpy()
    var = -0.5 / grid[:, 1]
    mean = grid[:, 0] * var
    x = mean[:, None] + np.sqrt(var)[:, None] * rng.standard_normal((len(grid), samples))
    out = np.empty((len(grid), len(AXIS0) * len(AXIS1)))
    for p in range(len(grid)):
        idx = np.stack([rng.choice(samples, bundle, replace=False) for _ in range(repeats)])
        xb = x[p][idx]  # (R, K)
        f1, f2 = xb.sum(1), (xb**2).sum(1)  # sufficient statistics of each bundle
        t = torch.as_tensor(grid)
        loglik = (np.outer(f1, grid[:, 0]) + np.outer(f2, grid[:, 1])
                  - bundle * logz(t).numpy()[None])  # (R, P) exact log-likelihoods
        lp = loglik.mean(0)
        e = np.exp(lp - lp.max())
        out[p] = e / e.sum()
    post = torch.as_tensor(out.reshape(len(grid), len(AXIS0), len(AXIS1)))
    return smooth(post, sigma) if sigma > 0 else post


@pytest.mark.slow
@pytest.mark.parametrize("sigma", [0.0, 1.5])
def test_fit_recovers_the_gaussian_family_metric(sigma: float) -> None:
    bundle = 30  # posterior std ~ 2-4 cells on this 24 x 24 grid
    post = sampled_exact_posteriors(bundle, sigma)
    pot, history = fit_potential(
        post, AXIS0, AXIS1, bundle=bundle, sigma=sigma, steps=300, progress=False, seed=0
    )
    errs = check_recovery(pot, sigma)
    # spec tolerances: gradient NRMSE 0.05, metric components 0.15; absolute scale: interior
    # median ratio Hess Phi / exact metric within 10 %. Measured (seed 0): sigma 0: grad 0.010 /
    # 0.007, g00 0.061, g01 0.018, g11 0.037, ratios 0.925 / 0.969; sigma 1.5: grad 0.010 /
    # 0.015, g00 0.090, g01 0.035, g11 0.070, ratios 0.942 / 1.008 (with targets built by
    # model_posterior, the code under test, it measured metric <= 0.035: the gap is the data)
    assert errs["grad0"] <= 0.05 and errs["grad1"] <= 0.05, errs
    assert max(errs["g00"], errs["g01"], errs["g11"]) <= 0.15, errs
    grid = grid_points(AXIS0, AXIS1)
    hess = pot.hessian(grid).double().reshape(24, 24, 2, 2)[3:-3, 3:-3]
    exact = exact_metric(grid).reshape(24, 24, 2, 2)[3:-3, 3:-3]
    for i in (0, 1):
        ratio = float((hess[..., i, i] / exact[..., i, i]).median())
        assert 0.9 <= ratio <= 1.1, (i, ratio, errs)
    assert history.loss[-1] < history.loss[0]
    assert np.isfinite(history.best_val)


def test_fit_checkpoint_resumes(tmp_path) -> None:
    a0 = torch.linspace(-1.0, 1.0, 6, dtype=torch.float64)
    a1 = torch.linspace(-1.5, -0.5, 6, dtype=torch.float64)
    post = model_posterior(logz, a0, a1, 10.0)
    ckpt = tmp_path / "pot.ckpt"
    opts = dict(bundle=10, steps=6, progress=False, checkpoint=ckpt, centroid_weight=1.0)
    pot, hist = fit_potential(post, a0, a1, **opts)
    assert ckpt.exists() and hist.steps_done == 6
    # same call again: resumes at the end, nothing left to do, same weights
    again, hist2 = fit_potential(post, a0, a1, **opts)
    assert hist2.steps_done == 6
    t = grid_points(a0, a1)
    torch.testing.assert_close(again(t), pot(t))
    assert pot.config["bounds"] == [[-1.0, 1.0], [-1.5, -0.5]]
