"""Simple invertible layers: :class:`ActNorm`, :class:`Permutation`, :class:`LULinear`.

All are :class:`~latentatlas.flows.core.Transform` s (``forward``: data -> base) that ignore the
context, and :class:`~latentatlas.io.Configurable`, so each can be saved with ``la.save`` on its own.
Every piece of state (including ActNorm's ``initialized`` flag and the permutations) is a buffer or
a parameter, hence part of the ``state_dict`` and of saved files.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io import Configurable
from .core import Transform
from .nets import check_int

__all__ = ["ActNorm", "LULinear", "Permutation"]


class ActNorm(Configurable, Transform):
    """Per-feature affine layer ``z = (x - loc) * exp(-log_scale)`` (Kingma & Dhariwal, 2018).

    Data-dependent initialisation: the first ``forward`` call on a batch of at least two rows sets
    ``loc`` and ``log_scale`` to the batch mean and log standard deviation, so that the output is
    standardised. The ``initialized`` flag is a buffer: a saved and reloaded layer is not
    re-initialised.

    Args:
        features: D.

    Shapes: ``(B, D) -> (B, D)``, logdet ``(B,)``.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        check_int(features, "features")
        self.features = features
        self.loc = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        self.loc.copy_(x.mean(0))
        self.log_scale.copy_(torch.log(x.std(0).clamp_min(1e-6)))
        self.initialized.fill_(True)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if not bool(self.initialized) and x.shape[0] > 1:
            self._initialize(x.detach())
        z = (x - self.loc) * torch.exp(-self.log_scale)
        return z, (-self.log_scale.sum()).expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = z * torch.exp(self.log_scale) + self.loc
        return x, self.log_scale.sum().expand(z.shape[0])


class Permutation(Configurable, Transform):
    """Fixed permutation of the features (log-determinant 0).

    Args:
        features: D.
        order: ``"reverse"``, ``"random"`` (drawn from ``seed``), or an explicit permutation of
            ``range(D)`` (a tuple of ints): ``z[:, i] = x[:, order[i]]``.
        seed: seed of the ``"random"`` order.

    The permutation is stored as a buffer.
    """

    def __init__(self, features: int, order: str | Sequence[int] = "reverse", seed: int = 0) -> None:
        super().__init__()
        check_int(features, "features")
        if isinstance(order, str):
            if order == "reverse":
                perm = list(range(features - 1, -1, -1))
            elif order == "random":
                perm = np.random.default_rng(seed).permutation(features).tolist()
            else:
                raise ValueError(
                    f"order: expected 'reverse', 'random' or a permutation of range({features}), "
                    f"got {order!r}"
                )
        else:
            perm = [int(i) for i in (order.tolist() if hasattr(order, "tolist") else order)]
            if sorted(perm) != list(range(features)):
                raise ValueError(
                    f"order: expected a permutation of range({features}), got {perm}"
                )
        perm_t = torch.tensor(perm, dtype=torch.long)
        self.features = features
        self.register_buffer("perm", perm_t)
        self.register_buffer("inverse_perm", torch.argsort(perm_t))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z[:, self.inverse_perm], z.new_zeros(z.shape[0])


class LULinear(Configurable, Transform):
    """Invertible linear layer ``z = L U x + b`` with an LU parametrisation.

    ``L`` is unit lower triangular, ``U`` upper triangular with a positive diagonal
    (``exp`` or ``softplus`` of a free parameter, plus ``eps``), so the map is always invertible and
    ``log|det| = sum log diag U`` exactly. The inverse uses two triangular solves.

    Args:
        features: D.
        positive: ``"exp"`` or ``"softplus"``, the map that makes the diagonal positive.
        identity_init: start at the identity (else a random orthogonal-like start, seeded by
            torch's global generator).
        eps: floor added to the diagonal of ``U`` (softplus only).
    """

    def __init__(
        self,
        features: int,
        positive: str = "softplus",
        identity_init: bool = True,
        eps: float = 1e-3,
    ) -> None:
        super().__init__()
        check_int(features, "features")
        if positive not in ("exp", "softplus"):
            raise ValueError(f"positive: expected 'exp' or 'softplus', got {positive!r}")
        self.features, self.positive, self.eps = features, positive, float(eps)
        d = features
        self.lower = nn.Parameter(torch.zeros(d, d))
        self.upper = nn.Parameter(torch.zeros(d, d))
        self.raw_diag = nn.Parameter(torch.zeros(d))
        self.bias = nn.Parameter(torch.zeros(d))
        self.register_buffer("tril_mask", torch.tril(torch.ones(d, d), -1))
        self.register_buffer("eye", torch.eye(d))
        with torch.no_grad():
            one = 0.0 if positive == "exp" else float(np.log(np.expm1(1.0 - self.eps)))
            self.raw_diag.fill_(one)
            if not identity_init:
                bound = 1.0 / np.sqrt(d)
                self.lower.uniform_(-bound, bound)
                self.upper.uniform_(-bound, bound)

    def _diag(self) -> Tensor:
        if self.positive == "exp":
            return torch.exp(self.raw_diag)
        return F.softplus(self.raw_diag) + self.eps

    def _lu(self) -> tuple[Tensor, Tensor, Tensor]:
        diag = self._diag()
        lower = self.lower * self.tril_mask + self.eye
        upper = self.upper * self.tril_mask.t() + torch.diag(diag)
        return lower, upper, diag

    def weight(self) -> Tensor:
        """The matrix ``W = L U`` (D, D)."""
        lower, upper, _ = self._lu()
        return lower @ upper

    def logabsdet(self) -> Tensor:
        """``log|det W|`` (scalar)."""
        return torch.log(self._diag()).sum()

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        lower, upper, diag = self._lu()
        z = F.linear(x, lower @ upper, self.bias)
        return z, torch.log(diag).sum().expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        lower, upper, diag = self._lu()
        rhs = (z - self.bias).t()
        y = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, y, upper=True).t()
        return x, (-torch.log(diag).sum()).expand(z.shape[0])
