"""``NeuralODE``: a layer ``x -> z(t1)`` with ``dz/dt = f(t, z)``, ``z(t0) = x`` (Chen et al., 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..io import Configurable
from ..ode import ODEStats, odeint

__all__ = ["NeuralODE"]


class NeuralODE(Configurable, nn.Module):
    """Neural ODE layer: integrates ``dz/dt = f(t, z)`` from ``t[0]`` with ``z(t[0]) = x``.

    Args:
        f: the vector field, an ``nn.Module`` called as ``f(t, z)`` with ``t`` a 0-dim tensor and
            ``z`` shaped like the input ``x`` (e.g. (B, D)); returns the same shape.
        t: the times (at least two, strictly monotone); the output is the state at ``t[-1]``.
        method, rtol, atol, step_size, max_steps: passed to :func:`latentatlas.ode.odeint`.
        adjoint: gradients by the adjoint method (memory independent of the number of steps).
        return_trajectory: if True, ``forward`` returns the states at all times (T, *x.shape).

    After each call, ``last_stats`` holds the :class:`~latentatlas.ode.ODEStats` of the solve
    (with adjoint, the backward counts appear once backward has run).

    ``la.save`` works when ``f`` is itself a latentatlas (``Configurable``) module.
    """

    def __init__(
        self,
        f: nn.Module,
        t: Sequence[float] | Tensor = (0.0, 1.0),
        method: str = "dopri5",
        rtol: float = 1e-6,
        atol: float = 1e-8,
        adjoint: bool = True,
        step_size: float | None = None,
        max_steps: int = 10_000,
        return_trajectory: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(f, nn.Module):
            raise ValueError(f"f: expected an nn.Module called as f(t, z), got {type(f).__name__}")
        times = torch.as_tensor(t, dtype=torch.float64).detach().clone()
        if times.dim() != 1 or times.numel() < 2:
            raise ValueError(
                f"t: expected at least two times (t0, ..., t1), got shape {tuple(times.shape)}"
            )
        self.f = f
        self.register_buffer("t", times, persistent=False)
        self.method = method
        self.rtol = rtol
        self.atol = atol
        self.adjoint = adjoint
        self.step_size = step_size
        self.max_steps = max_steps
        self.return_trajectory = return_trajectory
        self.last_stats: ODEStats | None = None

    def forward(self, x: Tensor) -> Tensor:
        """Integrate from ``x`` (any shape, e.g. (B, D)).

        Returns:
            z(t[-1]) shaped like ``x``, or (T, *x.shape) if ``return_trajectory``.
        """
        if not isinstance(x, Tensor):
            raise ValueError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        t = self.t.to(device=x.device, dtype=x.dtype)
        ys, stats = odeint(
            self.f,
            x,
            t,
            method=self.method,
            rtol=self.rtol,
            atol=self.atol,
            adjoint=self.adjoint,
            step_size=self.step_size,
            max_steps=self.max_steps,
            return_stats=True,
        )
        self.last_stats = stats
        return ys if self.return_trajectory else ys[-1]
