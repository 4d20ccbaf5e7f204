"""Convex potentials Phi(t) ~ log Z(t) and their Bregman / Jensen–Shannon fit to posteriors.

For an exponential family ``p(x|t) = h(x) exp(<f(x), t> - log Z(t))`` the posterior of a bundle of
K samples drawn at ``t'`` behaves like ``exp(-K D(t, t'))`` where
``D(t, t') = log Z(t) - log Z(t') - <grad log Z(t'), t - t'>`` is the Bregman divergence of
``log Z`` (Lobashev et al., ICML 2025). :func:`fit_potential` fits a potential ``Phi`` so that the
model posterior

    q(t | t') ∝ exp(-K D_Phi(t, t')),   evaluated on the grid, then smoothed by the target kernel,

matches estimated posteriors in Jensen–Shannon divergence. Because the bundle size K is explicit,
``Hess Phi`` is the Fisher information of ONE sample, in the atlas's own (absolute) coordinates.

Grid convention: points ``p = i * G1 + j`` ('ij' order) for ``axis0[i], axis1[j]``.

Kernel smoothing convention (same as the posterior targets: "average of normalised Gaussian bumps at
the bundle's points"): a unit mass at grid point ``k`` is spread over the grid as the bump
``B_k(t_j) = exp(-|j - k|^2 / (2 sigma^2)) / sum_j' exp(-|j' - k|^2 / (2 sigma^2))`` (distances in
grid cells, normalised over the grid, so mass is preserved and bumps near the border are truncated
and renormalised). The 2-D bump factorises over the axes, normalisation included, so the smoothing
is two 1-D matrix products: ``q_s(t_j) = sum_k q(t_k) B_k(t_j)``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io import Configurable
from ..training import History, Strategy, train

__all__ = [
    "Potential",
    "PotentialBase",
    "bregman_log_posterior",
    "fit_potential",
    "grid_points",
    "initial_scale",
    "js_divergence",
    "model_posterior",
    "posterior_moments",
    "smooth",
    "smoothing_matrix",
]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# potentials
# ----------------------------------------------------------------------------------------------


def _check_bounds(bounds: object, dim: int) -> Tensor:
    b = torch.as_tensor(np.asarray(bounds, dtype=np.float64))
    if b.shape != (dim, 2):
        raise ValueError(f"bounds: expected shape ({dim}, 2) (low, high per axis), got {tuple(b.shape)}")
    if not bool(torch.isfinite(b).all()) or not bool((b[:, 1] > b[:, 0]).all()):
        raise ValueError(f"bounds: expected finite low < high on every axis, got {b.tolist()}")
    return b


def _inverse_softplus(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x))


class PotentialBase(Configurable, nn.Module):
    """A scalar potential ``Phi(t)`` on ``R^d`` in absolute coordinates, with autograd derivatives.

    Subclasses implement :meth:`_phi` on normalised inputs ``s = (t - center) / half`` in
    ``[-1, 1]^d`` (for ``t`` inside ``bounds``). ``Phi(t) = scale * _phi(s)``; the chain rule is
    applied by autograd, so :meth:`gradient` and :meth:`hessian` are in absolute units.

    Attributes:
        convex: whether ``Hess Phi`` is positive semi-definite by construction.
    """

    convex: bool = False

    def _setup(self, dim: int, bounds: object, scale: float) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim: expected a positive int, got {dim!r}")
        if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale: expected a positive finite number, got {scale!r}")
        if bounds is None:
            bounds = [[-1.0, 1.0]] * dim
        b = _check_bounds(bounds, dim)
        self.dim = dim
        self.register_buffer("t_center", (b[:, 0] + b[:, 1]).float() / 2)
        self.register_buffer("t_half", (b[:, 1] - b[:, 0]).float() / 2)
        self.register_buffer("scale", torch.tensor(float(scale)))

    def _phi(self, s: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self, t: Tensor, name: str = "t") -> Tensor:
        if not isinstance(t, Tensor):
            t = torch.as_tensor(np.asarray(t), dtype=self.t_center.dtype)
        if t.ndim != 2 or t.shape[1] != self.dim:
            raise ValueError(f"{name}: expected shape (N, {self.dim}), got {tuple(t.shape)}")
        return t

    def forward(self, t: Tensor) -> Tensor:
        """Phi at ``t`` (N, d) -> (N,), in the dtype of ``t`` (computed in the module's dtype)."""
        t = self._check(t)
        x = t.to(self.t_center.dtype)
        s = (x - self.t_center) / self.t_half
        return (self.scale * self._phi(s)).to(t.dtype)

    def gradient(self, t: Tensor, create_graph: bool = False) -> Tensor:
        """grad Phi at ``t`` (N, d) -> (N, d), absolute units (rows are independent)."""
        t = self._check(t)
        with torch.enable_grad():
            x = t if (create_graph and t.requires_grad) else t.detach().requires_grad_(True)
            phi = self(x)
            (g,) = torch.autograd.grad(phi.sum(), x, create_graph=create_graph)
        return g

    def hessian(self, t: Tensor, create_graph: bool = False) -> Tensor:
        """Hess Phi at ``t`` (N, d) -> (N, d, d), absolute units; d batched backward passes."""
        t = self._check(t)
        with torch.enable_grad():
            x = t if (create_graph and t.requires_grad) else t.detach().requires_grad_(True)
            phi = self(x)
            (g,) = torch.autograd.grad(phi.sum(), x, create_graph=True)
            rows = [
                torch.autograd.grad(
                    g[:, i].sum(), x, create_graph=create_graph, retain_graph=True
                )[0]
                for i in range(self.dim)
            ]
        h = torch.stack(rows, dim=1)
        return 0.5 * (h + h.transpose(1, 2))

    def init_quadratic(self, matrix: Tensor) -> None:  # pragma: no cover - overridden
        """Set the quadratic part so that ``Hess Phi ≈ matrix`` (d, d) (absolute units)."""

    def bregman_parts(self, grid: Tensor, idx: Tensor, create_graph: bool
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """What the Bregman posterior needs, in the coordinates ``u`` where Phi is a Bregman
        potential (here ``u = t``; :class:`~latentatlas.geometry.coordinates.CoordinatePotential`
        maps them): ``(Phi on the grid (P,), u(grid) (P, d), Phi (S,), grad_u Phi (S, d),
        u (S, d))`` at the source points ``grid[idx]``."""
        phi_grid = self(grid)
        src = grid[idx]
        phi_src, grad_src = _phi_and_grad(self, src, create_graph=create_graph)
        return phi_grid, grid, phi_src, grad_src, src


class Potential(PotentialBase):
    """Input-convex neural network potential (Amos, Xu & Kolter, 2017).

    ``z_1 = softplus(W_0 s + b_0)``, ``z_{k+1} = softplus(U_k z_k + W_k s + b_k)`` with
    ``U_k = softplus(raw_k) >= 0`` (hidden-to-hidden weights nonnegative), skip connections ``W_k s``
    from the input, output ``a^T z_L + c^T s`` with ``a = softplus(raw_a) >= 0``, plus the quadratic
    term ``1/2 |L^T s|^2`` (PSD). Softplus is convex and non-decreasing, so Phi is convex in ``s``
    and hence in ``t`` (``s`` is an affine function of ``t``): ``Hess Phi`` is PSD everywhere.

    Args:
        dim: dimension d of t.
        hidden: widths of the hidden layers.
        bounds: (d, 2) low/high of each coordinate, mapped to [-1, 1] internally.
        scale: output scale (Phi = scale * network); :func:`fit_potential` sets it from the data.
        quadratic: include the quadratic term.
    """

    convex = True

    def __init__(
        self,
        dim: int = 2,
        hidden: Sequence[int] = (64, 64, 64),
        bounds: object = None,
        scale: float = 1.0,
        quadratic: bool = True,
    ) -> None:
        super().__init__()
        self._setup(dim, bounds, scale)
        hidden = [int(h) for h in hidden]
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden: expected a non-empty list of positive widths, got {hidden!r}")
        self.skips = nn.ModuleList([nn.Linear(dim, h) for h in hidden])
        self.raw_u = nn.ParameterList()
        for h_in, h_out in zip(hidden[:-1], hidden[1:]):
            # nonnegative weights of mean ~1/h_in keep the activations O(1) with depth
            w = torch.rand(h_out, h_in) * (2.0 / h_in) + 1e-3
            self.raw_u.append(nn.Parameter(_inverse_softplus(w)))
        self.raw_a = nn.Parameter(_inverse_softplus(torch.rand(hidden[-1]) * (0.8 / hidden[-1]) + 1e-4))
        self.linear = nn.Linear(dim, 1)
        for layer in self.skips:
            nn.init.normal_(layer.weight, std=2.0)
            nn.init.uniform_(layer.bias, -2.0, 2.0)
        self.quadratic = bool(quadratic)
        if self.quadratic:
            self.chol = nn.Parameter(torch.eye(dim) * 0.5)

    def _phi(self, s: Tensor) -> Tensor:
        z = F.softplus(self.skips[0](s))
        for raw, skip in zip(self.raw_u, self.skips[1:]):
            z = F.softplus(F.linear(z, F.softplus(raw)) + skip(s))
        out = z @ F.softplus(self.raw_a) + self.linear(s).squeeze(-1)
        if self.quadratic:
            lower = torch.tril(self.chol)
            out = out + 0.5 * ((s @ lower) ** 2).sum(-1)
        return out

    @torch.no_grad()
    def init_quadratic(self, matrix: Tensor) -> None:
        """Set ``L`` so the quadratic term's Hessian is ``matrix`` (d, d) in absolute units."""
        if not self.quadratic:
            return
        m = torch.as_tensor(matrix, dtype=torch.float64)
        half = self.t_half.double()
        ms = m * half[:, None] * half[None, :] / float(self.scale)
        evals, evecs = torch.linalg.eigh(0.5 * (ms + ms.T))
        ms = evecs @ torch.diag(evals.clamp_min(1e-6 * evals.abs().max())) @ evecs.T
        self.chol.copy_(torch.linalg.cholesky(ms).to(self.chol))


# ----------------------------------------------------------------------------------------------
# grid, smoothing, Bregman posterior
# ----------------------------------------------------------------------------------------------


def _axis(axis: object, name: str) -> Tensor:
    a = torch.as_tensor(np.asarray(axis, dtype=np.float64)) if not isinstance(axis, Tensor) else axis
    if a.ndim != 1 or a.shape[0] < 2:
        raise ValueError(f"{name}: expected a 1-D array of at least 2 values, got shape {tuple(a.shape)}")
    if not bool(torch.isfinite(a).all()) or not bool((a[1:] > a[:-1]).all()):
        raise ValueError(f"{name}: expected finite, strictly increasing values")
    return a


def grid_points(axis0: object, axis1: object) -> Tensor:
    """Grid points in 'ij' order: (G0 * G1, 2), row ``p = i * G1 + j`` is ``(axis0[i], axis1[j])``."""
    a0, a1 = _axis(axis0, "axis0"), _axis(axis1, "axis1")
    u, v = torch.meshgrid(a0, a1.to(a0), indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=1)


def smoothing_matrix(n: int, sigma: float, dtype: torch.dtype = torch.float32,
                     device: torch.device | str | None = None) -> Tensor:
    """Row-normalised Gaussian bumps on an axis of ``n`` cells: (n, n), row k = bump at cell k.

    ``sigma`` is in grid cells; ``sigma = 0`` gives the identity.
    """
    if not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma: expected a nonnegative number of grid cells, got {sigma!r}")
    if sigma == 0:
        return torch.eye(n, dtype=dtype, device=device)
    idx = torch.arange(n, dtype=torch.float64)
    w = torch.exp(-((idx[:, None] - idx[None, :]) ** 2) / (2.0 * sigma**2))
    w = w / w.sum(dim=1, keepdim=True)
    w[w < 1e-30] = 0.0  # no float32 denormals (slow); relative change < 1e-30
    return w.to(dtype=dtype, device=device)


def smooth(q: Tensor, sigma: float, matrices: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Smooth distributions on the grid with the target kernel: (B, G0, G1) -> (B, G0, G1).

    ``out[b, i, j] = sum_{k,l} q[b, k, l] B0[k, i] B1[l, j]`` (mass preserving).
    """
    if q.ndim != 3:
        raise ValueError(f"q: expected shape (B, G0, G1), got {tuple(q.shape)}")
    if matrices is None:
        if sigma == 0:
            return q
        matrices = (
            smoothing_matrix(q.shape[1], sigma, q.dtype, q.device),
            smoothing_matrix(q.shape[2], sigma, q.dtype, q.device),
        )
    b0, b1 = matrices
    return torch.matmul(b0.T, torch.matmul(q, b1))


def bregman_log_posterior(
    phi_grid: Tensor, grid: Tensor, phi_src: Tensor, grad_src: Tensor, src: Tensor, bundle: float
) -> Tensor:
    """log q(t | t') for q ∝ exp(-K D(t, t')) normalised over the grid: (S, P).

    Args:
        phi_grid: (P,) potential on the grid points ``grid`` (P, d).
        phi_src, grad_src: (S,), (S, d) potential and gradient at the source points ``src`` (S, d).
        bundle: K.
    """
    # <grad(t'), t - t'> as one (S, d) x (d, P) product (no (S, P, d) intermediate)
    offset = phi_src - (src * grad_src).sum(-1)  # (S,)
    div = phi_grid[None, :] - offset[:, None] - grad_src @ grid.T
    return torch.log_softmax(-bundle * div, dim=1)


def _phi_and_grad(phi: Callable[[Tensor], Tensor], t: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        x = t.detach().requires_grad_(True)
        value = phi(x)
        (g,) = torch.autograd.grad(value.sum(), x, create_graph=create_graph)
    return value, g


def model_posterior(
    phi: Callable[[Tensor], Tensor],
    axis0: object,
    axis1: object,
    bundle: float,
    sigma: float = 0.0,
    sources: Tensor | None = None,
    batch: int = 256,
) -> Tensor:
    """Bregman model posteriors of a potential on the grid, smoothed by the target kernel.

    Args:
        phi: a :class:`Potential` or any differentiable callable (N, 2) -> (N,) (e.g. an analytic
            log Z written in torch).
        axis0, axis1: (G0,), (G1,) grid axes.
        bundle: K.
        sigma: target-kernel width in grid cells (0: no smoothing).
        sources: (S,) indices of source grid points (default: all P points).
        batch: source points per chunk (memory ~ 3 * batch * P numbers).

    Returns:
        (S, G0, G1) posteriors, each summing to 1 (dtype of the axes).
    """
    grid = grid_points(axis0, axis1)
    if isinstance(phi, nn.Module):
        anchor = next(iter(phi.buffers()), None)
        if anchor is not None:
            grid = grid.to(device=anchor.device, dtype=anchor.dtype)
    g0, g1 = len(axis0), len(axis1)
    idx = torch.arange(grid.shape[0], device=grid.device) if sources is None else torch.as_tensor(sources)
    if not (isinstance(batch, int) and batch > 0):
        raise ValueError(f"batch: expected a positive int, got {batch!r}")
    parts = getattr(phi, "bregman_parts", None) if hasattr(phi, "to_u") else None
    with torch.no_grad():
        phi_grid = phi(grid) if parts is None else None
    mats = None
    if sigma > 0:
        mats = (
            smoothing_matrix(g0, sigma, grid.dtype, grid.device),
            smoothing_matrix(g1, sigma, grid.dtype, grid.device),
        )
    out = []
    for chunk in idx.split(batch):
        if parts is None:
            src = grid[chunk]
            phi_src, grad_src = _phi_and_grad(phi, src, create_graph=False)
            logq = bregman_log_posterior(phi_grid, grid, phi_src.detach(), grad_src, src, bundle)
        else:  # a potential in other coordinates u(t): the Bregman divergence is taken in u
            pg, ug, ps, gs, us = (x.detach() for x in parts(grid, chunk, False))
            logq = bregman_log_posterior(pg, ug, ps, gs, us, bundle)
        q = logq.exp().reshape(-1, g0, g1)
        out.append(smooth(q, sigma, mats).detach() if mats is not None else q.detach())
    return torch.cat(out)


def js_divergence(p: Tensor, q: Tensor, tiny: float = 1e-30) -> Tensor:
    """Jensen–Shannon divergence (nats) between distributions over the last two dims: (B,)."""
    m = 0.5 * (p + q)
    logm = torch.log(m.clamp_min(tiny))
    kl_p = (torch.xlogy(p, p) - p * logm).flatten(1).sum(-1)
    kl_q = (q * torch.log(q.clamp_min(tiny)) - q * logm).flatten(1).sum(-1)
    return 0.5 * (kl_p + kl_q)


# ----------------------------------------------------------------------------------------------
# fitting
# ----------------------------------------------------------------------------------------------


def _check_posteriors(post: object, g0: int, g1: int) -> Tensor:
    p = post if isinstance(post, Tensor) else torch.as_tensor(np.asarray(post))
    if p.ndim != 3 or p.shape != (g0 * g1, g0, g1):
        raise ValueError(
            f"post: expected shape (P, G0, G1) = ({g0 * g1}, {g0}, {g1}), got {tuple(p.shape)}"
        )
    if not p.is_floating_point() or not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
        raise ValueError("post: expected finite nonnegative probabilities")
    sums = p.sum(dim=(1, 2))
    if not bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-3)):
        raise ValueError(
            f"post: expected every row to sum to 1, got sums in [{float(sums.min()):.4g}, "
            f"{float(sums.max()):.4g}]"
        )
    return p


def posterior_moments(post: Tensor, axis0: Tensor, axis1: Tensor) -> tuple[Tensor, Tensor]:
    """Means (P, 2) and covariances (P, 2, 2) of gridded posteriors ``post`` (P, G0, G1)."""
    grid = grid_points(axis0, axis1).to(post)
    w = post.reshape(post.shape[0], -1)
    mean = w @ grid
    d = grid[None, :, :] - mean[:, None, :]
    cov = torch.einsum("pn,pni,pnj->pij", w, d, d)
    return mean, cov


def _initial_metric(post: Tensor, axis0: Tensor, axis1: Tensor, bundle: float, sigma: float) -> Tensor:
    """Median metric (2, 2) from the inverse posterior covariance (see baselines)."""
    return _initial_metric_from(post, axis0, axis1, bundle, sigma)


def _initial_metric_from(post: Tensor, axis0: Tensor, axis1: Tensor, bundle: float, sigma: float,
                         jac: Tensor | None = None) -> Tensor:
    """Median (over grid points) metric (2, 2) from the inverse posterior covariance, in the
    coordinates ``u(t)`` whose Jacobian at the grid points is ``jac`` (P, 2, 2) (delta method:
    ``cov_u = J cov_t J^T``; default ``u = t``)."""
    _, cov = posterior_moments(post.double(), axis0.double(), axis1.double())
    h0 = float(axis0[1] - axis0[0]) if len(axis0) > 1 else 1.0
    h1 = float(axis1[1] - axis1[0]) if len(axis1) > 1 else 1.0
    kernel = torch.diag(torch.tensor([(sigma * h0) ** 2, (sigma * h1) ** 2], dtype=cov.dtype))
    if jac is not None:
        j = jac.to(cov)
        cov = j @ cov @ j.transpose(1, 2)
        kernel = j @ kernel @ j.transpose(1, 2)
    cov = cov - kernel
    # keep only well-posed covariances; fall back to the raw ones if none is
    evals = torch.linalg.eigvalsh(cov)
    ok = evals[:, 0] > 0
    if int(ok.sum()) < max(1, cov.shape[0] // 10):
        cov = cov + kernel
        ok = torch.linalg.eigvalsh(cov)[:, 0] > 0
    metric = torch.linalg.inv(bundle * cov[ok])
    return metric.median(dim=0).values


def initial_scale(
    post: Tensor, axis0: Tensor, axis1: Tensor, bundle: float, sigma: float
) -> tuple[float, Tensor]:
    """Output scale for a potential on the grid box, and the median metric (2, 2) it is based on.

    The median (over grid points) of the inverse posterior covariance metric, expressed in the
    normalised coordinates ``s`` in [-1, 1]^2 of the grid box; the scale is its mean eigenvalue, so
    that a network with O(1) curvature in ``s`` starts with roughly the right metric.
    """
    a0, a1 = _axis(axis0, "axis0"), _axis(axis1, "axis1")
    g_init = _initial_metric(post, a0, a1, float(bundle), float(sigma))
    hs = torch.tensor([float(a0[-1] - a0[0]), float(a1[-1] - a1[0])], dtype=torch.float64) / 2
    gs = g_init * hs[:, None] * hs[None, :]
    scale = float(torch.linalg.eigvalsh(gs).mean().clamp_min(1e-12))
    return scale, g_init


def fit_potential(
    post: object,
    axis0: object,
    axis1: object,
    *,
    bundle: float,
    sigma: float = 0.0,
    potential: PotentialBase | None = None,
    steps: int = 600,
    lr: float = 3e-2,
    batch_points: int = 64,
    centroid_weight: float = 0.0,
    convexity_weight: float | None = None,
    val_fraction: float = 0.1,
    patience: int | None = None,
    progress: bool = True,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    dtype: torch.dtype | None = None,
    strategy: Strategy | None = None,
    device: torch.device | str | None = None,
) -> tuple[PotentialBase, History]:
    """Fit a potential whose Bregman posteriors match estimated posteriors (Jensen–Shannon).

    Loss per source point ``p`` (minibatches of ``batch_points`` source points, via
    :func:`latentatlas.training.train` on the index tensor of the points)::

        JS(post[p], smooth(q_Phi(. | t_p)))
        + centroid_weight * |(mean(smooth(q)) - mean(post[p])) / half_width|^2
        + convexity_weight * mean relu(K (Phi(mid) - (Phi(a) + Phi(b)) / 2))   (non-convex nets)

    with ``q_Phi(t | t') ∝ exp(-K D_Phi(t, t'))`` over the grid. The convexity penalty (random
    pairs a, b in the box, midpoint ``mid``) is only used for potentials that are not convex by
    construction (``potential.convex`` False), e.g. the MLP baseline.

    Args:
        post: (P, G0, G1) estimated posteriors, row p for the source point p = i * G1 + j.
        axis0, axis1: (G0,), (G1,) grid axes (absolute coordinates).
        bundle: K, the number of samples per bundle the posteriors were estimated from.
        sigma: width (grid cells) of the Gaussian target kernel (0: none).
        potential: the network to fit; default a :class:`Potential` with bounds = the grid box,
            output scale and quadratic term initialised from the inverse posterior covariance.
            A :class:`~latentatlas.geometry.coordinates.CoordinatePotential` (from
            :func:`~latentatlas.geometry.coordinates.coordinate_potential`) is fitted in its
            coordinates ``u(t)``: the Bregman divergence is taken in ``u`` (and a learned ``u``
            is trained with Phi).
        steps, lr, val_fraction, patience, progress, seed, checkpoint: see ``train``.
        batch_points: source points per minibatch.
        centroid_weight: weight of the centroid term (default 0: off; on exact or unbiased
            noisy posteriors of the Gaussian family it slightly increases the metric error,
            e.g. 0.036 -> 0.040 at weight 1; it can help when the estimated posteriors are
            miscalibrated in width but not in location).
        convexity_weight: weight of the midpoint-convexity penalty (default 1 for non-convex
            potentials, 0 otherwise).
        dtype: computation dtype (default: float32, or the given potential's dtype).
        device: where to fit (default: the given potential's device, else the CPU); a given
            potential is moved there.
        strategy: ``la.training.SingleProcess()`` (default) or ``la.training.DataParallel()``
            (DDP: ``batch_points`` is the global batch of source points, shared by the processes).

    Returns:
        ``(potential, history)``; the potential is in eval mode, its Hessian is the metric.
    """
    a0, a1 = _axis(axis0, "axis0"), _axis(axis1, "axis1")
    g0, g1 = a0.shape[0], a1.shape[0]
    p = _check_posteriors(post, g0, g1)
    if not (isinstance(bundle, int | float) and bundle > 0 and math.isfinite(bundle)):
        raise ValueError(f"bundle: expected a positive number of samples K, got {bundle!r}")
    if not (isinstance(sigma, int | float) and sigma >= 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma: expected a nonnegative width in grid cells, got {sigma!r}")
    if not (isinstance(batch_points, int) and batch_points > 0):
        raise ValueError(f"batch_points: expected a positive int, got {batch_points!r}")
    if centroid_weight < 0:
        raise ValueError(f"centroid_weight: expected >= 0, got {centroid_weight!r}")

    bounds = [[float(a0[0]), float(a0[-1])], [float(a1[0]), float(a1[-1])]]
    if potential is None:
        scale, g_init = initial_scale(p, a0, a1, float(bundle), float(sigma))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            potential = Potential(dim=2, bounds=bounds, scale=scale)
        potential.init_quadratic(0.5 * g_init)
        if dtype is not None:
            potential.to(dtype)
    elif not isinstance(potential, PotentialBase):
        raise ValueError(
            f"potential: expected a latentatlas Potential, got {type(potential).__qualname__}"
        )
    elif potential.dim != 2:
        raise ValueError(f"potential: expected dim 2, got dim {potential.dim}")
    if device is not None:
        potential.to(device=device)
    anchor = next(iter(potential.buffers()))
    dtype = anchor.dtype
    device = anchor.device
    if convexity_weight is None:
        convexity_weight = 0.0 if potential.convex else 1.0

    p = p.to(device=device, dtype=dtype)
    grid = grid_points(a0, a1).to(device=device, dtype=dtype)
    mats = (
        smoothing_matrix(g0, sigma, dtype, device),
        smoothing_matrix(g1, sigma, dtype, device),
    )
    half = torch.tensor([(b[1] - b[0]) / 2 for b in bounds], dtype=dtype, device=device)
    low = torch.tensor([b[0] for b in bounds], dtype=dtype, device=device)
    target_mean = (p.reshape(p.shape[0], -1) @ grid)
    K = float(bundle)
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)

    def loss_fn(idx: Tensor) -> Tensor:
        with torch.enable_grad():
            phi_grid, u_grid, phi_src, grad_src, src = potential.bregman_parts(grid, idx, True)
            logq = bregman_log_posterior(phi_grid, u_grid, phi_src, grad_src, src, K)
            q = smooth(logq.exp().reshape(-1, g0, g1), sigma, mats if sigma > 0 else None)
            target = p[idx]
            loss = js_divergence(target, q).mean()
            if centroid_weight > 0:
                mean_q = q.reshape(q.shape[0], -1) @ grid
                loss = loss + centroid_weight * (
                    ((mean_q - target_mean[idx]) / half) ** 2
                ).sum(-1).mean()
            if convexity_weight > 0 and potential.training:
                n = 4 * idx.shape[0]
                ab = torch.rand(2, n, 2, generator=gen).to(device=device, dtype=dtype)
                ab = low + 2 * half * ab
                both = potential(torch.cat([ab[0], ab[1], 0.5 * (ab[0] + ab[1])]))
                fa, fb, fm = both[:n], both[n : 2 * n], both[2 * n :]
                loss = loss + convexity_weight * torch.relu(K * (fm - 0.5 * (fa + fb))).mean()
        return loss

    index = torch.arange(g0 * g1, device=device)
    history = train(
        potential,
        loss_fn,
        (index,),
        names=("points",),
        steps=steps,
        batch_size=batch_points,
        lr=lr,
        val_fraction=val_fraction,
        val_every=max(1, min(100, steps // 10)),
        patience=patience,
        checkpoint=checkpoint,
        progress=progress,
        seed=seed,
        desc="fit_potential",
        strategy=strategy,
    )
    return potential, history
