"""Baselines: inverse posterior covariance metric and the unconstrained-MLP potential."""

from __future__ import annotations

import pytest
import torch

import latentatlas as la
from latentatlas.geometry.baselines import (
    MLPPotential,
    fit_mlp_potential,
    inverse_covariance_metric,
)
from latentatlas.geometry.potential import grid_points, model_posterior
from test_potential import AXIS0, AXIS1, check_recovery, exact_metric, logz

G = 48
A0 = torch.linspace(-1.0, 1.0, G, dtype=torch.float64)
A1 = torch.linspace(-1.5, -0.5, G, dtype=torch.float64)


def _relative_errors(metric, bundle: float) -> torch.Tensor:
    """Max-entry error over the largest diagonal entry, on the middle half of the grid."""
    exact = exact_metric(grid_points(A0, A1)).reshape(G, G, 2, 2)
    sl = slice(G // 4, 3 * G // 4)
    err = (torch.as_tensor(metric) - exact)[sl, sl].abs().amax((-1, -2))
    return err / exact[sl, sl].diagonal(dim1=2, dim2=3).amax(-1)


@pytest.mark.parametrize("sigma", [0.0, 1.5])
def test_inverse_covariance_recovers_the_metric(sigma: float) -> None:
    # K = 800: posterior std 1-3 cells; the Gaussian (Laplace) approximation error is O(1 / K)
    bundle = 800.0
    post = model_posterior(logz, A0, A1, bundle, sigma)
    metric = inverse_covariance_metric(post, A0, A1, bundle, sigma)
    assert metric.shape == (G, G, 2, 2)
    rel = _relative_errors(metric, bundle)
    assert float(rel.max()) < 0.02, float(rel.max())  # measured 0.0037 (both sigmas)
    if sigma > 0:
        # without the kernel-variance correction the metric is badly underestimated (~57%)
        raw = _relative_errors(inverse_covariance_metric(post, A0, A1, bundle, 0.0), bundle)
        assert float(raw.median()) > 0.3
    # at K = 200 the approximation still holds in the bulk (median measured 0.015)
    post = model_posterior(logz, A0, A1, 200.0, sigma)
    rel = _relative_errors(inverse_covariance_metric(post, A0, A1, 200.0, sigma), 200.0)
    assert float(rel.median()) < 0.05


def test_inverse_covariance_bad_input() -> None:
    post = torch.full((4, 2, 2), 0.25, dtype=torch.float64)
    with pytest.raises(ValueError, match="post"):
        inverse_covariance_metric(post[:, :1], [0.0, 1.0], [0.0, 1.0], 4)
    with pytest.raises(ValueError, match="bundle"):
        inverse_covariance_metric(post, [0.0, 1.0], [0.0, 1.0], -1)
    # uniform posteriors on a 2 x 2 grid: covariance 1/4 per axis -> metric 1 / (K / 4)
    g = inverse_covariance_metric(post, [0.0, 1.0], [0.0, 1.0], 4)
    torch.testing.assert_close(torch.as_tensor(g), torch.eye(2, dtype=torch.float64).expand(2, 2, 2, 2))


@pytest.mark.slow
def test_mlp_baseline_recovers_the_metric(tmp_path) -> None:
    bundle = 30.0
    post = model_posterior(logz, AXIS0, AXIS1, bundle)
    pot, history = fit_mlp_potential(
        post, AXIS0, AXIS1, bundle=bundle, steps=300, progress=False, seed=0
    )
    assert isinstance(pot, MLPPotential) and not pot.convex
    errs = check_recovery(pot, 0.0)
    # measured (300 steps): grad <= 0.004, metric <= 0.029; same tolerances as the convex potential
    assert errs["grad0"] <= 0.05 and errs["grad1"] <= 0.05, errs
    assert max(errs["g00"], errs["g01"], errs["g11"]) <= 0.15, errs
    # the convexity penalty keeps the fitted Hessian PSD on the grid
    hess = pot.hessian(grid_points(AXIS0, AXIS1))
    assert float((torch.linalg.eigvalsh(hess)[:, 0] >= 0).float().mean()) >= 0.99
    same = la.load(la.save(pot, tmp_path / "mlp.safetensors"))
    t = grid_points(AXIS0, AXIS1)[:5]
    torch.testing.assert_close(same(t), pot(t))
