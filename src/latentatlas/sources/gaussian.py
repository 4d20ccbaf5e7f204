"""The Gaussian family: the sanity case of the pipeline, with closed-form log Z and metric.

One draw is ``x ∈ R^m`` with iid entries ``x_j ~ N(mu, sigma^2)`` (``m = dim``). It is an
exponential family with sufficient statistics ``f(x) = (Σ_j x_j, Σ_j x_j^2)``, natural parameters
``theta = (mu / sigma^2, -1 / (2 sigma^2))``, base measure 1 and

    log Z(theta) = m [ -theta_1^2 / (4 theta_2) + ½ log(π / (-theta_2)) ],

so ``∇ log Z = m (mu, mu^2 + sigma^2)`` and the Fisher metric of one draw is
``m [[sigma^2, 2 mu sigma^2], [2 mu sigma^2, 2 sigma^4 + 4 mu^2 sigma^2]]``. In ``mean_std``
coordinates ``(mu, sigma)`` the metric is the tensor transform ``Jac^T g Jac = m diag(1/sigma^2,
2/sigma^2)`` and the potential is log Z evaluated at theta(mu, sigma).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io import Configurable
from .base import FLOW_RECIPE, Source, check_bounds, point_seed_sequence

__all__ = ["GaussianFamily", "MeanStdToNatural"]

_COORDS = {
    # names, domain, default bounds. A bundle of N = 16 draws (dim = 1) gives a posterior whose
    # standard deviations on a 32 x 32 grid over these bounds are ~1.5-4 cells in mean_std
    # coordinates (std(mu) = sigma/4, std(sigma) ~ sigma/5.7) and ~2-15 cells in natural ones
    # (the relative width of theta_2 is sqrt(2/N) ~ 35 % everywhere); larger dim narrows both.
    "natural": (
        ("theta1", "theta2"),
        ((-math.inf, math.inf), (-math.inf, 0.0)),
        ((-2.0, 2.0), (-1.0, -0.25)),
    ),
    "mean_std": (
        ("mu", "sigma"),
        ((-math.inf, math.inf), (0.0, math.inf)),
        ((-1.5, 1.5), (0.5, 1.5)),
    ),
}


class MeanStdToNatural(Configurable, nn.Module):
    """``(mu, sigma) -> (mu / sigma^2, -1 / (2 sigma^2))``: (N, 2) -> (N, 2) (torch)."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        mu, sigma = t[:, 0], t[:, 1]
        return torch.stack([mu / sigma**2, -0.5 / sigma**2], 1)


class GaussianFamily(Source):
    """x ∈ R^dim with iid N(mu, sigma^2) entries; parameters in natural or (mu, sigma) coordinates.

    Args:
        coords: ``"natural"`` for ``(theta1, theta2) = (mu/sigma^2, -1/(2 sigma^2))`` (theta2 < 0)
            or ``"mean_std"`` for ``(mu, sigma)`` (sigma > 0).
        dim: m, the number of iid entries per draw (sample_shape ``(m,)``, float32).
        bounds: atlas region ``((lo0, hi0), (lo1, hi1))``; ``None`` for the default of ``coords``.

    Example::

        src = GaussianFamily("mean_std")
        x = src.sample([[0.0, 1.0], [0.5, 0.8]], n=16, seed=0)   # (2, 16, 1) float32
        ref = src.reference([[0.0, 1.0]])                       # metric [[1, 0], [0, 2]]
    """

    def __init__(
        self,
        coords: str = "natural",
        dim: int = 1,
        bounds: Sequence[Sequence[float]] | None = None,
    ) -> None:
        if coords not in _COORDS:
            raise ValueError(f"coords: expected one of {sorted(_COORDS)}, got {coords!r}")
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
            raise ValueError(f"dim: expected a positive int, got {dim!r}")
        self.coords = coords
        self.m = int(dim)
        names, domain, default = _COORDS[coords]
        self.names = names
        self.domain = domain
        self.sample_shape = (self.m,)
        self.dtype = np.dtype(np.float32)
        self.bounds = check_bounds(default if bounds is None else bounds, domain, names)
        lo = self.bounds[1][0]
        if (coords == "natural" and self.bounds[1][1] >= 0) or (coords == "mean_std" and lo <= 0):
            raise ValueError(
                f"bounds: {names[1]} must stay strictly inside {domain[1]}, got {self.bounds[1]}"
            )

    # ------------------------------------------------------------------------------------------
    def check_params(self, params: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """(P, 2) float64 parameters with theta2 < 0 (natural) or sigma > 0 (mean_std)."""
        arr = super().check_params(params)
        col = arr[:, 1]
        bad = col >= 0 if self.coords == "natural" else col <= 0
        if np.any(bad):
            i = int(np.argmax(bad))
            rule = "theta2 < 0" if self.coords == "natural" else "sigma > 0"
            raise ValueError(f"params: expected {rule}, got {col[i]} at row {i}")
        return arr

    def mean_std(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mu (P,), sigma (P,)) of parameter points (P, 2)."""
        arr = self.check_params(params)
        if self.coords == "mean_std":
            return arr[:, 0], arr[:, 1]
        sigma2 = -0.5 / arr[:, 1]
        return arr[:, 0] * sigma2, np.sqrt(sigma2)

    def natural(self, params: np.ndarray) -> np.ndarray:
        """(P, 2) -> (P, 2) natural parameters ``(mu / sigma^2, -1 / (2 sigma^2))``."""
        mu, sigma = self.mean_std(params)
        return np.stack([mu / sigma**2, -0.5 / sigma**2], 1)

    def natural_map(self) -> MeanStdToNatural | None:
        """:class:`MeanStdToNatural` in ``mean_std`` coordinates; None in natural ones."""
        return MeanStdToNatural() if self.coords == "mean_std" else None

    @property
    def natural_coordinates(self) -> bool:
        return self.coords == "natural"

    def sufficient_statistics(self, x: np.ndarray) -> np.ndarray:
        """(..., m) -> (..., 2) float64: ``(Σ_j x_j, Σ_j x_j^2)``."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim < 1 or x.shape[-1] != self.m:
            raise ValueError(f"x: expected shape (..., {self.m}), got {x.shape}")
        return np.stack([x.sum(-1), (x * x).sum(-1)], -1)

    def _sample(self, params: np.ndarray, n: int, seed: int) -> np.ndarray:
        mu, sigma = self.mean_std(params)
        out = np.empty((params.shape[0], n, self.m), dtype=self.dtype)
        for i, point in enumerate(params):
            rng = np.random.default_rng(point_seed_sequence(seed, point))
            out[i] = mu[i] + sigma[i] * rng.standard_normal((n, self.m))
        return out

    def atlas_defaults(self) -> dict[str, Any]:
        """Defaults measured on the natural and mean_std coordinates (benchmarks)."""
        out = super().atlas_defaults()
        out.update(resolution=32, samples_per_point=256, bundle=16, posterior_repeats=16,
                   sigma=1.0,
                   posterior={"init": {"pool": "features", "hidden": 64, "embed": 32},
                              "fit": {"steps": 1000, "lr": 3e-3, "batch_size": 512}},
                   # the flow's generic recipe (2000 steps at batch 128, lr 1e-3) gives
                   # interior ratios 0.85 / 0.86 here (natural), FLOW_RECIPE 0.91 / 0.91
                   posterior_for={"flow": FLOW_RECIPE},
                   potential={},
                   path=((0.0, 0.5), (1.0, 0.5)))
        return out

    # ------------------------------------------------------------------------------------------
    def reference(self, params: np.ndarray | Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
        """Closed-form potential, gradient and metric of ONE draw, in the source's coordinates.

        Returns:
            dict with ``potential`` (P,) = log Z, ``gradient`` (P, 2) and ``metric`` (P, 2, 2).
            Natural coords: log Z(theta), ∇ log Z = E f, Hess log Z = Cov f. ``mean_std``: log Z
            as a function of (mu, sigma), its (mu, sigma) gradient, and the Fisher metric
            ``m diag(1/sigma^2, 2/sigma^2)`` (= Jac^T g Jac, not the Hessian of the potential).
        """
        arr = self.check_params(params)
        mu, sigma = self.mean_std(arr)
        m = float(self.m)
        s2 = sigma**2
        potential = m * (mu**2 / (2 * s2) + 0.5 * np.log(2 * np.pi * s2))
        grad = m * np.stack([mu, mu**2 + s2], 1)
        metric = np.empty((arr.shape[0], 2, 2))
        metric[:, 0, 0] = s2
        metric[:, 0, 1] = metric[:, 1, 0] = 2 * mu * s2
        metric[:, 1, 1] = 2 * s2**2 + 4 * mu**2 * s2
        metric *= m
        if self.coords == "natural":
            return {"potential": potential, "gradient": grad, "metric": metric}
        jac = np.zeros((arr.shape[0], 2, 2))  # jac[:, a, i] = ∂theta_a / ∂(mu, sigma)_i
        jac[:, 0, 0] = 1 / s2
        jac[:, 0, 1] = -2 * mu / sigma**3
        jac[:, 1, 1] = 1 / sigma**3
        # Jac^T g Jac = m diag(1/sigma^2, 2/sigma^2), written out so it is exactly diagonal
        metric = np.zeros_like(metric)
        metric[:, 0, 0] = m / s2
        metric[:, 1, 1] = 2 * m / s2
        return {
            "potential": potential,
            "gradient": np.einsum("pai,pa->pi", jac, grad),
            "metric": metric,
        }
