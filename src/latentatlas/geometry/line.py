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

The fit is :func:`batched_lbfgs`: L-BFGS with a per-problem Armijo line search, vectorised over
paths (:func:`fit_line_potentials` fits N paths of one grid in one optimisation, each path
bit-identical to its own single fit), without ``torch.optim`` (whose first use imports
``torch._dynamo``: 11 s).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .._util import check_int

__all__ = ["LinePotential", "batched_lbfgs", "bregman_matrix", "bregman_rows", "fisher_length",
           "fit_line_potential", "fit_line_potentials"]


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
    """Phi (..., P) and Phi' (..., P) of the piecewise-quadratic potential with cell curvatures
    (..., P-1) on the grid ``s`` (P,)."""
    h = s[1:] - s[:-1]
    zero = cells.new_zeros((*cells.shape[:-1], 1))
    dphi = torch.cat([zero, torch.cumsum(cells * h, -1)], -1)
    phi = torch.cat([zero, torch.cumsum(dphi[..., :-1] * h + 0.5 * cells * h ** 2, -1)], -1)
    return phi, dphi


def bregman_matrix(s: Tensor, cells: Tensor) -> Tensor:
    """D[..., i, j] = D(s_j, s_i) = Phi(s_j) - Phi(s_i) - Phi'(s_i)(s_j - s_i): (..., P, P),
    >= 0 (cells (..., P-1))."""
    phi, dphi = _integrate(s, cells)
    d = phi[..., None, :] - phi[..., :, None] - dphi[..., :, None] * (s[None, :] - s[:, None])
    return d.clamp_min(0.0)


def bregman_rows(s: Tensor, cells: Tensor, centers: Tensor) -> Tensor:
    """D[..., i, j] = D(s_j, c_i) for continuous centres ``c`` (..., M): (..., M, P) >= 0
    (``Phi`` and ``Phi'`` at ``c`` from the piecewise-quadratic potential, exactly; outside the
    grid the end cells' quadratics continue)."""
    phi, dphi = _integrate(s, cells)
    k = torch.searchsorted(s, centers.detach().contiguous()).clamp(1, len(s) - 1) - 1
    u = centers - s[k]
    ck = torch.gather(cells, -1, k)
    dphi_c = torch.gather(dphi, -1, k) + ck * u
    phi_c = torch.gather(phi, -1, k) + (dphi_c - 0.5 * ck * u) * u
    d = phi[..., None, :] - phi_c[..., None] - dphi_c[..., None] * (s - centers[..., None])
    return d.clamp_min(0.0)


def _smoothing(p: int, sigma: float, dtype: torch.dtype) -> Tensor:
    """Row-normalised Gaussian bumps (P, P), ``sigma`` cells wide (identity for 0)."""
    if sigma == 0:
        return torch.eye(p, dtype=dtype)
    idx = torch.arange(p, dtype=torch.float64)
    w = torch.exp(-((idx[:, None] - idx[None]) ** 2) / (2.0 * sigma ** 2))
    return (w / w.sum(1, keepdim=True)).to(dtype)


def _jsd(p: Tensor, q: Tensor) -> Tensor:
    """Jensen-Shannon divergence of rows (..., P) -> (...)."""
    log_m = torch.log(0.5 * (p + q) + 1e-300)
    return 0.5 * ((p * (torch.log(p + 1e-300) - log_m)).sum(-1)
                  + (q * (torch.log(q + 1e-300) - log_m)).sum(-1))


def _initial_cells(posts: np.ndarray, s: np.ndarray, bundle: int) -> np.ndarray:
    """Starting curvatures (..., P-1): ``1 / (K var)`` of the rows, the median over the interior
    rows of each path (the rows near the ends are truncated by the grid)."""
    mean = posts @ s
    var = posts @ s ** 2 - mean ** 2
    p = len(s)
    inner = var[..., p // 5: p - p // 5] if p >= 10 else var
    v = np.nanmedian(np.where(inner > 0, inner, np.nan), axis=-1)
    v = np.where(np.isfinite(v), v, 1.0)
    g0 = np.maximum(1.0 / (bundle * v), 1e-8)
    return np.repeat(g0[..., None], p - 1, axis=-1)


def _softplus_inverse(g: np.ndarray) -> np.ndarray:
    return np.where(g < 30, np.log(np.expm1(np.minimum(g, 30))), g)


def batched_lbfgs(fun: Callable[[Tensor], Tensor], x0: Tensor, max_iter: int = 1000,
                  history: int = 20, gtol: float = 1e-9, ftol: float = 1e-10,
                  max_backtracks: int = 30) -> tuple[Tensor, Tensor, Tensor]:
    """Minimise N independent problems at once: ``fun(x)`` maps (N, n) -> (N,) losses (row k
    depending on ``x[k]`` only), minimised by L-BFGS with a per-problem Armijo backtracking line
    search. Each problem moves, stores its curvature pairs and stops (``|grad|_inf < gtol`` or a
    relative loss change ``< ftol``) on its own, so its trajectory does not depend on the other
    rows of the batch.

    Returns:
        ``x`` (N, n), the final losses (N,), and the iterations each problem took (N,).
    """
    x = x0.detach().clone()
    n_prob = x.shape[0]

    def value_grad(z: Tensor) -> tuple[Tensor, Tensor]:
        z = z.detach().requires_grad_(True)
        f = fun(z)
        (g,) = torch.autograd.grad(f.sum(), z)
        return f.detach(), g

    f, g = value_grad(x)
    active = g.abs().amax(-1) >= gtol
    its = torch.zeros(n_prob, dtype=torch.long)
    s_hist: list[Tensor] = []
    y_hist: list[Tensor] = []
    rho_hist: list[Tensor] = []
    gamma = torch.ones(n_prob, dtype=x.dtype)
    first = torch.ones(n_prob, dtype=torch.bool)
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        # two-loop recursion, every problem with its own (possibly empty) pairs
        q = -g
        alphas = []
        for s_k, y_k, rho_k in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist)):
            a = rho_k * (s_k * q).sum(-1)
            q = q - a[:, None] * y_k
            alphas.append(a)
        d = gamma[:, None] * q
        for (s_k, y_k, rho_k), a in zip(zip(s_hist, y_hist, rho_hist), reversed(alphas)):
            b = rho_k * (y_k * d).sum(-1)
            d = d + (a - b)[:, None] * s_k
        slope = (g * d).sum(-1)
        bad = slope >= 0
        if bool(bad.any()):  # not a descent direction: steepest descent for those rows
            d = torch.where(bad[:, None], -g, d)
            slope = (g * d).sum(-1)
        t = torch.where(first, torch.clamp(1.0 / g.abs().sum(-1).clamp_min(1e-300), max=1.0),
                        torch.ones_like(gamma))
        t = torch.where(active, t, torch.zeros_like(t))
        todo = active.clone()
        x_new, f_new, g_new = x.clone(), f.clone(), g.clone()
        for _ in range(max_backtracks):
            xt = x + t[:, None] * d
            ft, gt = value_grad(xt)
            ok = todo & torch.isfinite(ft) & (ft <= f + 1e-4 * t * slope)
            x_new = torch.where(ok[:, None], xt, x_new)
            f_new = torch.where(ok, ft, f_new)
            g_new = torch.where(ok[:, None], gt, g_new)
            todo = todo & ~ok
            if not bool(todo.any()):
                break
            t = torch.where(todo, 0.5 * t, torch.zeros_like(t))
        moved = active & ~todo  # rows whose line search failed stop where they are
        step, dy = x_new - x, g_new - g
        sy = (step * dy).sum(-1)
        good = moved & (sy > 1e-10 * (step.norm(dim=-1) * dy.norm(dim=-1)).clamp_min(1e-300))
        s_hist.append(torch.where(good[:, None], step, torch.zeros_like(step)))
        y_hist.append(torch.where(good[:, None], dy, torch.zeros_like(dy)))
        rho_hist.append(torch.where(good, 1.0 / sy.where(good, torch.ones_like(sy)),
                                    torch.zeros_like(sy)))
        if len(s_hist) > history:
            s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
        gamma = torch.where(good, sy / (dy * dy).sum(-1).clamp_min(1e-300), gamma)
        first = first & ~good
        change = (f - f_new).abs()
        its = its + moved.long()
        x, f, g = x_new, f_new, g_new
        active = (moved & (g.abs().amax(-1) >= gtol)
                  & (change > ftol * torch.clamp(f.abs(), min=1.0)))
    return x, f, its


def fit_line_potentials(posteriors: np.ndarray, s: np.ndarray, bundle: int, sigma: float = 0.0,
                        steps: int = 1000, smoothness: float = 0.01, shifts: bool = True,
                        seed: int = 0) -> list[LinePotential]:
    """Fit the convex potentials of N paths on one grid at once (one vectorised optimisation;
    each path converges on its own, see :func:`batched_lbfgs`): posteriors (N, P, P) -> N
    :class:`LinePotential` (arguments as :func:`fit_line_potential`)."""
    s = np.asarray(s, dtype=np.float64)
    posts = np.asarray(posteriors, dtype=np.float64)
    p = s.size
    if s.ndim != 1 or p < 4 or not np.all(np.diff(s) > 0):
        raise ValueError(f"s: expected a strictly increasing grid of >= 4 points, got shape "
                         f"{s.shape}")
    if posts.ndim != 3 or posts.shape[1:] != (p, p) or not np.all(np.isfinite(posts)):
        raise ValueError(f"posteriors: expected a finite (N, {p}, {p}) array, got "
                         f"{posts.shape}")
    bundle = check_int(bundle, "bundle", minimum=1)
    steps = check_int(steps, "steps", minimum=0)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma: expected a non-negative number of cells, got {sigma!r}")
    n = len(posts)
    target = torch.as_tensor(posts / posts.sum(-1, keepdims=True))
    st = torch.as_tensor(s)
    smooth = _smoothing(p, sigma, torch.float64)
    h = float(np.mean(np.diff(s)))
    w0 = torch.as_tensor(_softplus_inverse(_initial_cells(posts, s, bundle)))
    x0 = torch.cat([w0, torch.zeros(n, p if shifts else 0, dtype=torch.float64)], -1)
    plogp = 0.5 * (target * torch.log(target + 1e-300)).sum(-1)  # (N, P), constant

    def loss_fn(x: Tensor) -> Tensor:
        cells = torch.nn.functional.softplus(x[:, :p - 1])
        if shifts:  # in grid cells (conditioning); outside the grid Phi extends quadratically
            div = bregman_rows(st, cells, st + x[:, p - 1:] * h)
        else:
            div = bregman_matrix(st, cells)
        log_q = torch.log_softmax(-bundle * div, dim=-1)
        q = log_q.exp()
        if sigma > 0:
            q = q @ smooth
            log_q = torch.log(q + 1e-300)
        # JSD = (sum p log p + sum q log q) / 2 - sum m log m, m = (p + q) / 2: one log
        m = 0.5 * (target + q)
        loss = (plogp + 0.5 * (q * log_q).sum(-1) - (m * torch.log(m + 1e-300)).sum(-1)).mean(-1)
        if smoothness and p > 2:
            dl = torch.diff(torch.log(cells + 1e-300), dim=-1)
            loss = loss + smoothness * torch.sqrt(dl ** 2 + 1e-4).mean(-1)
        return loss

    x, f, its = batched_lbfgs(loss_fn, x0, max_iter=steps) if steps else (
        x0, loss_fn(x0), torch.zeros(n, dtype=torch.long))
    with torch.no_grad():
        cells = torch.nn.functional.softplus(x[:, :p - 1])
        phi, dphi = _integrate(st, cells)
    out = []
    for k in range(n):
        c = cells[k].numpy()
        metric = np.concatenate([[c[0]], 0.5 * (c[1:] + c[:-1]), [c[-1]]])
        shift = x[k, p - 1:].numpy() if shifts else np.zeros(p)
        out.append(LinePotential(s=s, cells=c, potential=phi[k].numpy(),
                                 gradient=dphi[k].numpy(), metric=metric,
                                 history=np.array([float(f[k]), float(its[k])]),
                                 centers=s + shift * h))
    return out


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
        steps: at most this many L-BFGS iterations (:func:`batched_lbfgs`; Armijo backtracking;
            it stops earlier when the loss no longer changes).
        smoothness: weight of the edge-preserving penalty ``mean(sqrt((log g_{c+1} -
            log g_c)^2 + 1e-4))`` (a total variation of ``log g``: flat stretches, sharp jumps).
        shifts: centre row i's model at a fitted ``c_i`` instead of ``s_i``: the combined
            posterior of bundles drawn from one pool of samples is ``exp(-K D(s, s_hat_i))``
            around the pool's own estimate ``s_hat_i``, off ``s_i`` by its sampling error (a
            shift, not a change of width; without ``c_i`` the fit bends ``g`` to move the modes).
        seed: unused by the deterministic optimiser; kept for the pipeline's signature.

    Returns:
        A :class:`LinePotential` (its ``history``: the final loss and the iterations taken).

    Raises:
        ValueError: shapes that do not match, a non-increasing grid, non-finite posteriors.
    """
    posts = np.asarray(posteriors, dtype=np.float64)
    p = np.asarray(s).size
    if posts.shape != (p, p):
        raise ValueError(f"posteriors: expected a finite ({p}, {p}) array, got {posts.shape}")
    return fit_line_potentials(posts[None], s, bundle, sigma, steps, smoothness, shifts,
                               seed)[0]


def fisher_length(s: np.ndarray, metric: np.ndarray) -> float:
    """``int sqrt(g(s)) ds`` by the trapezoid rule: the Fisher length of the path (for one
    sample)."""
    s = np.asarray(s, dtype=np.float64)
    r = np.sqrt(np.clip(np.asarray(metric, dtype=np.float64), 0, None))
    return float(np.sum(0.5 * (r[1:] + r[:-1]) * np.diff(s)))
