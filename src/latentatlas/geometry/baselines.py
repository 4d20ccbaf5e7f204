"""Baselines for the metric, reported side by side with the convex potential.

1. :func:`inverse_covariance_metric`: the local Gaussian (Laplace / Cramér–Rao) approximation of a
   posterior from K samples, ``Cov_post ≈ (K g)^-1``, so ``g ≈ (K Cov_post)^-1`` per grid point.
   Posteriors estimated against targets smoothed by a Gaussian kernel of width ``sigma`` cells are
   wider by the kernel's variance (a convolution adds variances), so ``diag((sigma h0)^2,
   (sigma h1)^2)`` (``h`` = mean grid spacing) is subtracted from the covariance first. Where the
   corrected covariance is not positive definite (a posterior narrower than the kernel or than a
   cell), its eigenvalues are clamped to ``h_min^2 / 12`` (the variance of a uniform distribution on
   one cell: the resolution limit of the grid), so the metric stays finite there.
2. :class:`MLPPotential` + :func:`fit_mlp_potential`: the paper's approach — an unconstrained MLP
   potential fitted with the same Bregman / Jensen–Shannon loss (:func:`fit_potential`, not a copy
   of it) plus a midpoint-convexity penalty ``relu(K (Phi(mid) - (Phi(a) + Phi(b)) / 2))``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..training import History, Strategy
from .potential import (
    PotentialBase,
    _axis,
    _check_posteriors,
    fit_potential,
    initial_scale,
    posterior_moments,
)

__all__ = ["MLPPotential", "fit_mlp_potential", "inverse_covariance_metric"]


def inverse_covariance_metric(
    post: Any, axis0: Any, axis1: Any, bundle: float, sigma: float = 0.0
) -> np.ndarray:
    """Metric ``(K Cov_post)^-1`` at every grid point (see the module docstring).

    Args:
        post: (P, G0, G1) posteriors, row p for the source point p = i * G1 + j.
        axis0, axis1: (G0,), (G1,) grid axes.
        bundle: K.
        sigma: target-kernel width in grid cells (its variance is subtracted).

    Returns:
        (G0, G1, 2, 2) metric (numpy, float64).
    """
    a0, a1 = _axis(axis0, "axis0"), _axis(axis1, "axis1")
    g0, g1 = len(a0), len(a1)
    p = _check_posteriors(post, g0, g1).to(torch.float64)
    if not bundle > 0:
        raise ValueError(f"bundle: expected a positive number of samples K, got {bundle!r}")
    if not sigma >= 0:
        raise ValueError(f"sigma: expected a nonnegative width in grid cells, got {sigma!r}")
    _, cov = posterior_moments(p, a0.double(), a1.double())
    h0 = float(a0[-1] - a0[0]) / (g0 - 1)
    h1 = float(a1[-1] - a1[0]) / (g1 - 1)
    cov = cov - torch.diag(torch.tensor([(sigma * h0) ** 2, (sigma * h1) ** 2], dtype=cov.dtype))
    evals, evecs = torch.linalg.eigh(0.5 * (cov + cov.transpose(1, 2)))
    evals = evals.clamp_min(min(h0, h1) ** 2 / 12)
    metric = evecs @ torch.diag_embed(1.0 / (bundle * evals)) @ evecs.transpose(1, 2)
    return metric.reshape(g0, g1, 2, 2).numpy()


class MLPPotential(PotentialBase):
    """Unconstrained potential: an MLP with softplus activations plus a symmetric quadratic term.

    Not convex by construction (``convex = False``), so :func:`fit_potential` adds the midpoint
    convexity penalty. Same input normalisation and output scale as
    :class:`~latentatlas.geometry.potential.Potential`.

    Args:
        dim: dimension d of t.
        hidden: hidden widths.
        bounds: (d, 2) box mapped to [-1, 1]^d.
        scale: output scale.
    """

    convex = False

    def __init__(
        self,
        dim: int = 2,
        hidden: Sequence[int] = (64, 64, 64),
        bounds: object = None,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self._setup(dim, bounds, scale)
        widths = [dim, *[int(h) for h in hidden]]
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"hidden: expected a non-empty list of positive widths, got {hidden!r}")
        self.layers = nn.ModuleList([nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:])])
        self.out = nn.Linear(widths[-1], 1)
        nn.init.normal_(self.out.weight, std=0.1 / widths[-1] ** 0.5)
        self.quad = nn.Parameter(torch.eye(dim) * 0.25)

    def _phi(self, s: Tensor) -> Tensor:
        z = s
        for layer in self.layers:
            z = F.softplus(layer(z))
        a = 0.5 * (self.quad + self.quad.T)
        return self.out(z).squeeze(-1) + 0.5 * torch.einsum("ni,ij,nj->n", s, a, s)

    @torch.no_grad()
    def init_quadratic(self, matrix: Tensor) -> None:
        """Set the quadratic term so that its Hessian is ``matrix`` (d, d) in absolute units."""
        m = torch.as_tensor(matrix, dtype=torch.float64)
        half = self.t_half.double()
        self.quad.copy_((m * half[:, None] * half[None, :] / float(self.scale)).to(self.quad))


def fit_mlp_potential(
    post: Any,
    axis0: Any,
    axis1: Any,
    *,
    bundle: float,
    sigma: float = 0.0,
    hidden: Sequence[int] = (64, 64, 64),
    convexity_weight: float = 1.0,
    steps: int = 600,
    lr: float = 3e-2,
    batch_points: int = 64,
    centroid_weight: float = 0.0,
    progress: bool = True,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    strategy: Strategy | None = None,
    **kwargs: Any,
) -> tuple[MLPPotential, History]:
    """The paper's baseline: an :class:`MLPPotential` fitted by :func:`fit_potential`.

    Same data, loss and initialisation as the convex potential, plus the midpoint-convexity
    penalty with weight ``convexity_weight``. ``strategy`` (``la.training.DataParallel()`` for
    DDP) and ``kwargs`` go to :func:`fit_potential`; with DataParallel each process draws the
    random convexity pairs for its share of the batch, so the run is data-parallel but not
    bit-equivalent to one process.

    Returns:
        ``(potential, history)``.
    """
    a0, a1 = _axis(axis0, "axis0"), _axis(axis1, "axis1")
    p = _check_posteriors(post, len(a0), len(a1))
    scale, g_init = initial_scale(p, a0, a1, float(bundle), float(sigma))
    bounds = [[float(a0[0]), float(a0[-1])], [float(a1[0]), float(a1[-1])]]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLPPotential(dim=2, hidden=hidden, bounds=bounds, scale=scale)
    model.init_quadratic(0.5 * g_init)
    dtype = kwargs.pop("dtype", None)
    if dtype is not None:
        model.to(dtype)
    return fit_potential(
        p, a0, a1, bundle=bundle, sigma=sigma, potential=model, steps=steps, lr=lr,
        batch_points=batch_points, centroid_weight=centroid_weight,
        convexity_weight=convexity_weight, progress=progress, seed=seed, checkpoint=checkpoint,
        strategy=strategy, **kwargs,
    )
