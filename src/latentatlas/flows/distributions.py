"""Base distributions of flows."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["FlowDistribution", "StandardNormal"]


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


class FlowDistribution(torch.distributions.Distribution):
    """A flow with a fixed context as a :class:`torch.distributions.Distribution` (zuko's ``flow(c)``).

    Built by :meth:`latentatlas.flows.Flow.distribution`. The event shape is (D,); the batch shape is
    () without context or for a (C,) context, and (B,) for a (B, C) context.

    - ``log_prob(x)``: x (*S, *batch, D) -> (*S, *batch).
    - ``rsample(sample_shape)`` / ``sample(sample_shape)``: -> (*sample_shape, *batch, D); ``rsample``
      is differentiable with respect to the flow's parameters (and the context).
    - ``rsample_and_log_prob(sample_shape)``: both in one pass.
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, flow: nn.Module, context: Tensor | None = None) -> None:
        self.flow = flow
        self.context = context
        batch = () if context is None or context.dim() == 1 else (context.shape[0],)
        super().__init__(torch.Size(batch), torch.Size((flow.features,)), validate_args=False)

    @property
    def support(self) -> torch.distributions.constraints.Constraint:
        return torch.distributions.constraints.real_vector

    def _context_rows(self, rows: int) -> Tensor | None:
        """The context repeated for ``rows`` flattened samples (rows = n * B) -> (rows, C)."""
        if self.context is None:
            return None
        c = self.context.reshape(-1, self.context.shape[-1])
        return c.repeat(rows // c.shape[0], 1)

    def log_prob(self, value: Tensor) -> Tensor:
        """value (*S, *batch, D) -> (*S, *batch)."""
        d = self.event_shape[0]
        if value.dim() < 1 + len(self.batch_shape) or value.shape[-1] != d or (
            self.batch_shape and value.shape[-2] != self.batch_shape[0]
        ):
            raise ValueError(
                f"value: expected shape (*S, {', '.join(map(str, (*self.batch_shape, d)))}), "
                f"got {tuple(value.shape)}"
            )
        flat = value.reshape(-1, d)
        return self.flow.log_prob(flat, self._context_rows(flat.shape[0])).reshape(value.shape[:-1])

    def rsample_and_log_prob(self, sample_shape: torch.Size | tuple = ()) -> tuple[Tensor, Tensor]:
        """Samples (*sample_shape, *batch, D) and their log-density (*sample_shape, *batch)."""
        shape = torch.Size(sample_shape)
        n = max(shape.numel(), 1)
        if self.context is None:
            x, lp = self.flow.sample_and_log_prob(n)
        else:
            x, lp = self.flow.sample_and_log_prob(n, self.context.reshape(-1, self.context.shape[-1]))
        return x.reshape(shape + self.batch_shape + self.event_shape), lp.reshape(shape + self.batch_shape)

    def rsample(self, sample_shape: torch.Size | tuple = ()) -> Tensor:
        """-> (*sample_shape, *batch, D), differentiable."""
        return self.rsample_and_log_prob(sample_shape)[0]

    def sample(self, sample_shape: torch.Size | tuple = ()) -> Tensor:
        """-> (*sample_shape, *batch, D), without gradients."""
        with torch.no_grad():
            return self.rsample(sample_shape)
