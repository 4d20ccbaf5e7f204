"""The 1-D convex potential of a path, fitted to posterior maps by the Bregman/JSD objective.

On the grid ``s_1 < ... < s_P`` the potential ``Phi`` is convex and piecewise quadratic: its
second derivative is a constant ``g_c = softplus(w_c) >= 0`` on each cell ``[s_c, s_{c+1}]``, so
``Phi'`` is piecewise linear and non-decreasing and the Bregman divergence
``D(s, s') = Phi(s) - Phi(s') - Phi'(s') (s - s')`` is exactly >= 0. The model posterior of a
bundle of K samples drawn at ``s_i`` is ``q_i(s_j) ∝ exp(-K D(s_j, s_i))`` on the grid (smoothed
by the estimator's target kernel when there is one), and ``w`` minimises the mean Jensen–Shannon
divergence between ``q_i`` and the estimated posteriors (plus a weak total-variation penalty
on ``log g``: noise in the posteriors does not become wiggles in the metric, a real jump stays). ``g(s) = Phi''(s)`` is then the Fisher information of ONE sample in
the path's coordinate ``s`` (the posterior of K samples is ``exp(-K D)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .._util import check_int

__all__ = ["LinePotential", "bregman_matrix", "fit_line_potential", "fisher_length"]


@dataclass
class LinePotential:
    """A fitted 1-D potential.

    Attributes:
        s: (P,) grid; cells: (P - 1,) ``Phi''`` on each cell; potential: (P,) ``Phi(s)``
        (``Phi(s_0) = 0``, ``Phi'(s_0) = 0``); gradient: (P,) ``Phi'(s)``; metric: (P,) ``g(s)``
        at the points (the mean of the adjacent cells); history: the loss per evaluation;
        centers: (P,) the fitted centres ``c_i`` of the rows (``s`` without ``shifts``).
    """

    s: np.ndarray
    cells: np.ndarray
    potential: np.ndarray
    gradient: np.ndarray
    metric: np.ndarray
    history: np.ndarray
    centers: np.ndarray


def _integrate(s: Tensor, cells: Tensor) -> tuple[Tensor, Tensor]:
    """Phi (P,) and Phi' (P,) of the piecewise-quadratic potential with cell curvatures (P-1,)."""
    h = s[1:] - s[:-1]
    dphi = torch.cat([s.new_zeros(1), torch.cumsum(cells * h, 0)])
    phi = torch.cat([s.new_zeros(1), torch.cumsum(dphi[:-1] * h + 0.5 * cells * h ** 2, 0)])
    return phi, dphi


def bregman_matrix(s: Tensor, cells: Tensor) -> Tensor:
    """D[i, j] = D(s_j, s_i) = Phi(s_j) - Phi(s_i) - Phi'(s_i)(s_j - s_i): (P, P), >= 0."""
    phi, dphi = _integrate(s, cells)
    d = phi[None, :] - phi[:, None] - dphi[:, None] * (s[None, :] - s[:, None])
    return d.clamp_min(0.0)


def bregman_rows(s: Tensor, cells: Tensor, centers: Tensor) -> Tensor:
    """D[i, j] = D(s_j, c_i) for continuous centres ``c`` (M,): (M, P) >= 0 (``Phi`` and
    ``Phi'`` at ``c`` from the piecewise-quadratic potential, exactly; outside the grid the end
    cells' quadratics continue)."""
    phi, dphi = _integrate(s, cells)
    k = torch.searchsorted(s, centers.detach()).clamp(1, len(s) - 1) - 1
    u = centers - s[k]
    phi_c = phi[k] + dphi[k] * u + 0.5 * cells[k] * u ** 2
    dphi_c = dphi[k] + cells[k] * u
    d = phi[None, :] - phi_c[:, None] - dphi_c[:, None] * (s[None, :] - centers[:, None])
    return d.clamp_min(0.0)


def _smoothing(p: int, sigma: float, dtype: torch.dtype) -> Tensor:
    """Row-normalised Gaussian bumps (P, P), ``sigma`` cells wide (identity for 0)."""
    if sigma == 0:
        return torch.eye(p, dtype=dtype)
    idx = torch.arange(p, dtype=torch.float64)
    w = torch.exp(-((idx[:, None] - idx[None]) ** 2) / (2.0 * sigma ** 2))
    return (w / w.sum(1, keepdim=True)).to(dtype)


def _jsd(p: Tensor, q: Tensor) -> Tensor:
    """Jensen-Shannon divergence of rows (M, P) -> (M,)."""
    log_m = torch.log(0.5 * (p + q) + 1e-300)
    return 0.5 * ((p * (torch.log(p + 1e-300) - log_m)).sum(-1)
                  + (q * (torch.log(q + 1e-300) - log_m)).sum(-1))


def _initial_cells(posts: np.ndarray, s: np.ndarray, bundle: int) -> float:
    """A starting curvature: the median over interior rows of 1 / (K var_i)."""
    mean = posts @ s
    var = posts @ s ** 2 - mean ** 2
    p = len(s)
    inner = var[p // 5: p - p // 5] if p >= 10 else var
    v = float(np.median(inner[inner > 0])) if np.any(inner > 0) else 1.0
    return 1.0 / (bundle * v)


def fit_line_potential(posteriors: np.ndarray, s: np.ndarray, bundle: int, sigma: float = 0.0,
                       steps: int = 1000, smoothness: float = 0.01, shifts: bool = True,
                       seed: int = 0) -> LinePotential:
    """Fit the convex potential of a path to its posterior maps (see the module docstring).

    Args:
        posteriors: (P, P) row i = the (combined) posterior over the grid of bundles drawn at
            ``s_i``; rows sum to 1.
        s: (P,) strictly increasing grid.
        bundle: K, samples per bundle of the posteriors.
        sigma: width (cells) of the estimator's target kernel (0: none); the model posteriors are
            smoothed by it too.
        steps: L-BFGS iterations (strong Wolfe line search) on the cell parameters.
        smoothness: weight of the edge-preserving penalty ``mean(sqrt((log g_{c+1} -
            log g_c)^2 + 1e-4))`` (a total variation of ``log g``: flat stretches, sharp jumps).
        shifts: centre row i's model at a fitted ``c_i`` instead of ``s_i``: the combined
            posterior of bundles drawn from one pool of samples is ``exp(-K D(s, s_hat_i))``
            around the pool's own estimate ``s_hat_i``, off ``s_i`` by its sampling error (a
            shift, not a change of width; without ``c_i`` the fit bends ``g`` to move the modes).
        seed: unused by the deterministic optimiser; kept for the pipeline's signature.

    Returns:
        A :class:`LinePotential`.

    Raises:
        ValueError: shapes that do not match, a non-increasing grid, non-finite posteriors.
    """
    s = np.asarray(s, dtype=np.float64)
    posts = np.asarray(posteriors, dtype=np.float64)
    p = s.size
    if s.ndim != 1 or p < 4 or not np.all(np.diff(s) > 0):
        raise ValueError(f"s: expected a strictly increasing grid of >= 4 points, got shape "
                         f"{s.shape}")
    if posts.shape != (p, p) or not np.all(np.isfinite(posts)):
        raise ValueError(f"posteriors: expected a finite ({p}, {p}) array, got {posts.shape}")
    bundle = check_int(bundle, "bundle", minimum=1)
    steps = check_int(steps, "steps", minimum=0)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma: expected a non-negative number of cells, got {sigma!r}")
    target = torch.as_tensor(posts / posts.sum(1, keepdims=True))
    st = torch.as_tensor(s)
    smooth = _smoothing(p, sigma, torch.float64)
    g0 = max(_initial_cells(posts, s, bundle), 1e-8)
    w = torch.full((p - 1,), math.log(math.expm1(g0)) if g0 < 30 else g0, dtype=torch.float64,
                   requires_grad=True)
    shift = torch.zeros(p, dtype=torch.float64, requires_grad=shifts)
    h = float(np.mean(np.diff(s)))
    history: list[float] = []

    def loss_fn() -> Tensor:
        cells = torch.nn.functional.softplus(w)
        if shifts:  # in grid cells (conditioning); outside the grid Phi extends quadratically
            div = bregman_rows(st, cells, st + shift * h)
        else:
            div = bregman_matrix(st, cells)
        q = torch.softmax(-bundle * div, dim=-1)
        if sigma > 0:
            q = q @ smooth
        loss = _jsd(target, q).mean()
        if smoothness and p > 2:
            dl = torch.diff(torch.log(cells + 1e-300))
            loss = loss + smoothness * torch.sqrt(dl ** 2 + 1e-4).mean()
        return loss

    opt = torch.optim.LBFGS([w, shift] if shifts else [w], lr=1.0, max_iter=max(steps, 1), history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-10,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        history.append(float(loss.detach()))
        return loss

    if steps:
        opt.step(closure)
    with torch.no_grad():
        cells = torch.nn.functional.softplus(w)
        phi, dphi = _integrate(st, cells)
    c = cells.numpy()
    metric = np.concatenate([[c[0]], 0.5 * (c[1:] + c[:-1]), [c[-1]]])
    return LinePotential(s=s, cells=c, potential=phi.numpy(), gradient=dphi.numpy(),
                         metric=metric, history=np.asarray(history),
                         centers=s + shift.detach().numpy() * h)


def fisher_length(s: np.ndarray, metric: np.ndarray) -> float:
    """``int sqrt(g(s)) ds`` by the trapezoid rule: the Fisher length of the path (for one
    sample)."""
    s = np.asarray(s, dtype=np.float64)
    r = np.sqrt(np.clip(np.asarray(metric, dtype=np.float64), 0, None))
    return float(np.sum(0.5 * (r[1:] + r[:-1]) * np.diff(s)))
