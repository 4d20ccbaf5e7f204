"""The identity embedding: flattened pixels."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..io import Configurable

__all__ = ["Pixels"]


class Pixels(Configurable, nn.Module):
    """E(x) = x flattened. x: (B, *shape) -> (B, prod(shape)), as floating point.

    Args:
        scale: multiplies the pixels (e.g. to express distances in other units).
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"scale: expected a positive number, got {scale!r}")
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.as_tensor(x)
        if not x.is_floating_point():
            x = x.float()
        return self.scale * x.reshape(x.shape[0], -1)
