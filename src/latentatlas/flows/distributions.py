"""Base distributions of flows."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["StandardNormal"]


class StandardNormal(nn.Module):
    """Standard normal N(0, I_D). Follows the module's device and dtype (``.to()``).

    Args:
        features: D.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: Tensor) -> Tensor:
        """z: (..., D) -> (...)."""
        return -0.5 * (z * z).sum(-1) - 0.5 * self.features * math.log(2 * math.pi)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """-> (n, D) on the module's device and dtype."""
        a = self._anchor
        return torch.randn(n, self.features, device=a.device, dtype=a.dtype, generator=generator)
