"""Hessian coordinates: the Fisher metric in any coordinates as ``J^T Hess Phi J``.

``Hess log Z`` is the Fisher metric only in the natural parameters ``eta`` of an exponential
family. In other coordinates ``t`` (temperature, ``(mu, sigma)``, a latent plane) the Bregman
posterior of a bundle drawn at ``t'`` is ``q(t | t') ∝ exp(-K D_Phi(u(t), u(t')))`` with
``u = eta(t)``, and the Fisher metric is the pull-back ``g(t) = J^T Hess Phi(u(t)) J``,
``J = du/dt``. A :class:`CoordinatePotential` holds a convex ``Phi`` on ``u`` and the map
``u(t)``:

- ``"natural"``: ``u`` is the source's natural map (:meth:`latentatlas.sources.Source.natural_map`,
  a fixed torch module), when the source knows it;
- ``"learned"``: ``u = psi(t)``, a learned diffeomorphism (:class:`LearnedCoordinates`: affine
  couplings of :mod:`latentatlas.flows` and smooth monotone elementwise maps, identity at
  initialisation), fitted jointly with ``Phi`` by the same Jensen–Shannon objective. Every
  analytic 2-D metric is locally a Hessian metric in suitable coordinates; the pull-back is PSD by
  construction;
- ``"given"``: ``Phi`` is fitted in ``t`` itself (a plain :class:`Potential`, no pull-back).

:meth:`CoordinatePotential.hessian` returns the METRIC ``J^T Hess Phi J`` (the contract of every
``la.geometry`` potential: ``hessian`` is the Fisher metric in the atlas's coordinates), while
``forward`` and ``gradient`` are ``Phi(u(t))`` and its true ``t``-gradient ``J^T grad Phi``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..flows.core import Transform
from ..flows.coupling import AffineCoupling
from ..io import Configurable
from .potential import (
    Potential,
    PotentialBase,
    _axis,
    _check_bounds,
    _initial_metric_from,
    grid_points,
)

__all__ = ["COORDINATES", "CoordinatePotential", "LearnedCoordinates", "MonotoneElementwise",
           "coordinate_potential", "jacobian"]

COORDINATES = ("given", "natural", "learned")
"""The coordinate models of the potential fit (``potential={"coordinates": ...}``)."""


def jacobian(fn: Any, t: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
    """Values and Jacobian of a map ``fn`` (N, d) -> (N, d) at ``t`` (N, d), by autograd.

    Returns:
        ``(u (N, d), J (N, d, d))`` with ``J[n, a, i] = du_a / dt_i`` (rows are independent).
    """
    with torch.enable_grad():
        x = t if (create_graph and t.requires_grad) else t.detach().requires_grad_(True)
        u = fn(x)
        rows = [torch.autograd.grad(u[:, a].sum(), x, create_graph=create_graph,
                                    retain_graph=True)[0] for a in range(u.shape[1])]
    return u, torch.stack(rows, dim=1)


class MonotoneElementwise(Configurable, Transform):
    """A smooth increasing map of each coordinate, exactly the identity at initialisation.

    ``z_i = x_i + sum_k a_ik tanh(b_ik (x_i - c_ik)) / b_ik`` with ``a_ik = (0.99 / n)
    tanh(r_ik)`` and ``b_ik = exp(beta_ik) > 0``: each term has slope in ``[0, 1]`` and the
    weights sum to less than 1 in absolute value, so ``dz_i / dx_i >= 0.01``: a C-infinity
    diffeomorphism of R (no inverse in closed form; :meth:`inverse` is not provided). At ``r = 0``
    it is the identity. Inputs are expected in about ``[-1, 1]``.

    Args:
        features: D.
        terms: n, tanh terms per coordinate.
        rate: initial ``b`` of every term (the terms' centres ``c`` start evenly in [-1, 1]).

    Shapes: ``x (B, D) -> z (B, D), log|det| (B,)``.
    """

    def __init__(self, features: int = 2, terms: int = 8, rate: float = 2.0) -> None:
        super().__init__()
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValueError(f"features: expected a positive int, got {features!r}")
        if isinstance(terms, bool) or not isinstance(terms, int) or terms < 1:
            raise ValueError(f"terms: expected a positive int, got {terms!r}")
        self.features, self.terms = features, terms
        self.raw = nn.Parameter(torch.zeros(features, terms))
        centres = torch.linspace(-1.0, 1.0, terms) if terms > 1 else torch.zeros(1)
        self.centre = nn.Parameter(centres.repeat(features, 1))
        if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate: expected a positive number, got {rate!r}")
        self.log_rate = nn.Parameter(torch.full((features, terms), math.log(float(rate))))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ValueError(f"x: expected shape (B, {self.features}), got {tuple(x.shape)}")
        a = (0.99 / self.terms) * torch.tanh(self.raw)
        b = torch.exp(self.log_rate)
        arg = b * (x[:, :, None] - self.centre)
        z = x + (a * torch.tanh(arg) / b).sum(-1)
        slope = 1 + (a / torch.cosh(arg) ** 2).sum(-1)
        return z, torch.log(slope).sum(-1)


class LearnedCoordinates(Configurable, nn.Module):
    """A learned diffeomorphism ``psi`` of the plane, identity at initialisation.

    ``u = c + h * f((t - c) / h)`` with ``c``, ``h`` the centre and half-widths of ``bounds`` and
    ``f`` a composition of ``blocks`` blocks ``[affine coupling (transform axis 1 given axis 0),
    affine coupling (axis 0 given axis 1), monotone elementwise map]``. The couplings are those
    of :class:`latentatlas.flows.AffineCoupling` with smooth (tanh) conditioners whose output
    layer starts at zero; the elementwise maps are :class:`MonotoneElementwise`. Every block is
    C-infinity and invertible, so ``psi`` is a diffeomorphism onto its image and ``J_psi`` is
    smooth.

    Args:
        bounds: (2, 2) low/high of each coordinate (the atlas region).
        blocks: number of blocks.
        hidden: widths of the coupling conditioners.
        terms: tanh terms per coordinate of the elementwise maps.
        rate: initial rate of their tanh terms (see :class:`MonotoneElementwise`).
    """

    def __init__(self, bounds: object = None, blocks: int = 3, hidden: Sequence[int] = (32, 32),
                 terms: int = 8, rate: float = 0.7) -> None:
        super().__init__()
        b = _check_bounds([[-1.0, 1.0]] * 2 if bounds is None else bounds, 2)
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
            raise ValueError(f"blocks: expected a positive int, got {blocks!r}")
        self.register_buffer("t_center", (b[:, 0] + b[:, 1]).float() / 2)
        self.register_buffer("t_half", (b[:, 1] - b[:, 0]).float() / 2)
        layers: list[nn.Module] = []
        for _ in range(blocks):
            layers.append(MonotoneElementwise(2, terms, rate))
            for flip in (False, True):
                layer = AffineCoupling(2, hidden=tuple(hidden), flip=flip, activation="tanh")
                layer.net.init_output()  # zero shift and log-scale: the identity
                layers.append(layer)
        self.layers = nn.ModuleList(layers)

    def forward(self, t: Tensor) -> Tensor:
        """u = psi(t): (N, 2) -> (N, 2), in the dtype of the module."""
        s = (t.to(self.t_center.dtype) - self.t_center) / self.t_half
        for layer in self.layers:
            s, _ = layer(s)
        return self.t_center + self.t_half * s


class CoordinatePotential(PotentialBase):
    """``Phi(u(t))`` with ``Phi`` convex on ``u`` and a map ``u(t)``; metric ``J^T Hess Phi J``.

    Args:
        phi: the convex potential on ``u`` (a :class:`Potential`, ``dim`` 2).
        coords: the map ``t -> u``, an ``nn.Module`` (N, 2) -> (N, 2) that ``la.io`` can save
            (a source's natural map, or :class:`LearnedCoordinates`).
        kind: ``"natural"`` or ``"learned"``, recorded with the model.
        bounds: (2, 2) region of ``t``.
    """

    convex = True

    def __init__(self, phi: PotentialBase, coords: nn.Module, kind: str = "learned",
                 bounds: object = None) -> None:
        super().__init__()
        if not isinstance(phi, PotentialBase) or phi.dim != 2:
            raise ValueError(f"phi: expected a 2-D latentatlas Potential, got {phi!r}")
        if not isinstance(coords, nn.Module):
            raise ValueError(f"coords: expected an nn.Module (N, 2) -> (N, 2), got "
                             f"{type(coords).__qualname__}")
        if kind not in ("natural", "learned"):
            raise ValueError(f"kind: expected 'natural' or 'learned', got {kind!r}")
        self._setup(2, bounds, 1.0)
        self.phi = phi
        self.coords = coords
        self.kind = kind

    def to_u(self, t: Tensor) -> Tensor:
        """u(t): (N, 2) -> (N, 2) in the dtype of ``phi``."""
        return self.coords(t.to(self.t_center.dtype)).to(self.phi.t_center.dtype)

    def forward(self, t: Tensor) -> Tensor:
        """Phi(u(t)): (N, 2) -> (N,), in the dtype of ``t``."""
        t = self._check(t)
        return self.phi(self.to_u(t)).to(t.dtype)

    def hessian(self, t: Tensor, create_graph: bool = False) -> Tensor:
        """The Fisher metric ``J^T Hess Phi(u(t)) J``: (N, 2) -> (N, 2, 2) (PSD; NOT the Hessian
        of :meth:`forward`, which has the extra term ``sum_a dPhi/du_a Hess u_a``)."""
        t = self._check(t)
        u, jac = jacobian(self.to_u, t.to(self.t_center.dtype), create_graph=create_graph)
        h = self.phi.hessian(u if create_graph else u.detach(), create_graph=create_graph)
        g = jac.transpose(1, 2) @ h @ jac
        return (0.5 * (g + g.transpose(1, 2))).to(t.dtype)

    def bregman_parts(self, grid: Tensor, idx: Tensor, create_graph: bool
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(Phi on the grid (P,), u(grid) (P, 2), Phi (S,), grad_u Phi (S, 2), u (S, 2))`` at
        the source points ``grid[idx]``, differentiable in the weights of ``Phi`` and ``u``."""
        with torch.enable_grad():
            u = self.to_u(grid)
            if not u.requires_grad:  # a fixed map: differentiate Phi in u only
                u = u.detach().requires_grad_(True)
            phi_grid = self.phi(u)
            (g,) = torch.autograd.grad(phi_grid.sum(), u, create_graph=create_graph)
        return phi_grid, u, phi_grid[idx], g[idx], u[idx]

    @torch.no_grad()
    def init_quadratic(self, matrix: Tensor) -> None:
        self.phi.init_quadratic(matrix)


def coordinate_potential(
    kind: str,
    post: Tensor,
    axis0: object,
    axis1: object,
    *,
    bundle: float,
    sigma: float = 0.0,
    natural_map: nn.Module | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    **options: Any,
) -> PotentialBase | None:
    """The initial potential of a fit in the coordinates ``kind`` (see :data:`COORDINATES`).

    ``Phi`` is an input-convex :class:`Potential` on the box spanned by ``u`` over the grid, with
    its output scale and quadratic term set from the inverse posterior covariances mapped to
    ``u`` (``cov_u = J cov_t J^T`` per point).

    Args:
        kind: ``"given"`` (returns None: :func:`fit_potential` builds its default potential in
            ``t``), ``"natural"`` (needs ``natural_map``) or ``"learned"``.
        post: (P, G0, G1) posteriors; axis0, axis1: (G0,), (G1,); bundle: K; sigma: target width.
        natural_map: the source's natural map (``Source.natural_map()``), for ``"natural"``.
        options: keyword arguments of :class:`LearnedCoordinates` (``"learned"`` only).

    Raises:
        ValueError: an unknown ``kind``, ``"natural"`` without a map, options for a fixed map.
    """
    if kind not in COORDINATES:
        raise ValueError(f"coordinates: expected one of {list(COORDINATES)}, got {kind!r}")
    if options and kind != "learned":
        raise ValueError(f"coordinate_options: only the 'learned' coordinates take options, got "
                         f"{sorted(options)} for {kind!r}")
    if kind == "given":
        return None
    a0, a1 = _axis(axis0, "axis0"), _axis(axis1, "axis1")
    bounds = [[float(a0[0]), float(a0[-1])], [float(a1[0]), float(a1[-1])]]
    if kind == "natural":
        if natural_map is None:
            raise ValueError("coordinates: 'natural' needs a source that knows its natural map "
                             "(Source.natural_map() is None); use 'learned' or 'given'")
        coords = natural_map
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 7)
            coords = LearnedCoordinates(bounds=bounds, **options)
    dt = torch.float32 if dtype is None else dtype
    coords = coords.to(dt)
    grid = grid_points(a0, a1).to(dt)
    u, jac = jacobian(coords, grid)
    u, jac = u.detach().double(), jac.detach().double()
    lo, hi = u.min(0).values, u.max(0).values
    pad = 0.02 * (hi - lo)
    ubounds = torch.stack([lo - pad, hi + pad], 1)
    g_init = _initial_metric_from(torch.as_tensor(post).double(), a0.double(), a1.double(),
                                  float(bundle), float(sigma), jac)
    half = (ubounds[:, 1] - ubounds[:, 0]) / 2
    scale = float(torch.linalg.eigvalsh(g_init * half[:, None] * half[None, :]).mean()
                  .clamp_min(1e-12))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        phi = Potential(dim=2, bounds=ubounds.tolist(), scale=scale)
    phi.init_quadratic(0.5 * g_init)
    pot = CoordinatePotential(phi, coords, kind=kind, bounds=bounds)
    return pot.to(dt)
