"""Typed errors, statistics, step-size options and error norms of the ODE solvers
(:mod:`latentatlas.ode.solvers`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Norm", "ODEError", "ODEMaxStepsError", "ODENonFiniteError", "ODEStats",
           "ODEStepSizeError", "StepOptions"]


class ODEError(RuntimeError):
    """Base class of the run-time failures of an ODE solve."""


class ODEMaxStepsError(ODEError):
    """The solver needed more than ``max_steps`` steps (accepted + rejected)."""


class ODENonFiniteError(ODEError):
    """The state or the vector field became NaN or infinite."""


class ODEStepSizeError(ODEError):
    """The adaptive step size underflowed (the solution probably blows up, or the ODE is stiff)."""


@dataclass
class ODEStats:
    """Work done by a solve.

    Attributes:
        nfe: number of evaluations of the vector field in the forward solve.
        accepted: accepted steps (fixed-step methods: all steps).
        rejected: rejected steps (always 0 for fixed-step methods).
        nfe_backward: with ``adjoint=True``, evaluations of the augmented (adjoint) dynamics plus
            the evaluations of ``f`` needed for time gradients, filled in by the backward pass
            (``None`` until then). Accumulates if backward runs more than once.
        accepted_backward: accepted steps of the adjoint solve(s).
        rejected_backward: rejected steps of the adjoint solve(s).
    """

    nfe: int = 0
    accepted: int = 0
    rejected: int = 0
    nfe_backward: int | None = None
    accepted_backward: int | None = None
    rejected_backward: int | None = None



@dataclass
class StepOptions:
    """Step-size options of one solve (validated by :func:`latentatlas.ode.odeint`).

    Attributes:
        step_size: fixed-step methods: the step (default: one step per interval of ``t``, or the
            ``grid``); adaptive methods: the first step (kept for backward compatibility).
        first_step: adaptive methods: the first step (default: Hairer's automatic choice).
        min_step, max_step: adaptive methods: bounds on ``|h|``; a step of ``min_step`` is
            accepted whatever its error (as torchdiffeq).
        max_steps: bound on attempted steps (None: no bound).
        safety, ifactor, dfactor: step-size controller: ``h_new = h * clip(safety *
            err^(-1/order), dfactor, ifactor)``.
        grid: fixed-step methods: the step grid (python floats, monotone, from ``t[0]`` to
            ``t[-1]``); requested times are added to it so that each is hit exactly.
        step_t: adaptive methods: times the steps must land on.
        jump_t: adaptive methods: discontinuities of ``f`` in time: steps land on them, ``f`` is
            evaluated just before (``nextafter`` towards ``t0``) at the end of the step and the
            first stage after a jump is re-evaluated just after it.
        perturb: fixed-step methods: evaluate the first stage of every step just after its start
            time and stages at ``c = 1`` just before its end time (as torchdiffeq's ``perturb``).
        norm: error norm of a flat (N,) vector as a python float (default: RMS, mixed over tuple
            components).
        callbacks: ``{"step" | "accept_step" | "reject_step": fn(t0, y0 (N,), dt)}`` called before
            every step attempt / after an accepted / a rejected adaptive step (``t0``, ``dt``
            0-dim tensors; fixed-grid methods call only ``"step"``), as torchdiffeq's callbacks.
    """

    step_size: float | None = None
    first_step: float | None = None
    min_step: float = 0.0
    max_step: float = math.inf
    max_steps: int | None = None
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    grid: list[float] | None = None
    step_t: tuple[float, ...] = ()
    jump_t: tuple[float, ...] = ()
    perturb: bool = False
    norm: Callable[[Tensor], float] | None = None
    callbacks: dict[str, Callable[[Tensor, Tensor, Tensor], object]] | None = None


class Norm:
    """RMS norm of a flat vector, or the max over segments of their RMS norms (mixed norm).

    Args:
        sizes: lengths of the segments (components of a tuple state), summing to N.
        like: tensor whose device/dtype to use.

    Entries of x beyond N (e.g. the parameter part of an adjoint state) are ignored: a seminorm.
    """

    def __init__(self, sizes: Sequence[int], like: Tensor) -> None:
        sizes = [int(s) for s in sizes if int(s) > 0]
        self.n = sum(sizes)
        self.mixed = len(sizes) > 1
        if self.mixed:
            self.segment = torch.repeat_interleave(
                torch.arange(len(sizes), device=like.device),
                torch.tensor(sizes, device=like.device),
            )
            self.inv_sizes = 1.0 / torch.tensor(sizes, dtype=like.dtype, device=like.device)
            self.zeros = torch.zeros(len(sizes), dtype=like.dtype, device=like.device)

    def __call__(self, x: Tensor) -> float:
        """Norm of x (N,) as a python float (in-place on x allowed: x is a temporary)."""
        if self.n == 0:
            return 0.0
        if not self.mixed:
            return torch.linalg.vector_norm(x[: self.n]).item() / math.sqrt(self.n)
        sums = self.zeros.index_add(0, self.segment, x[: self.n].square())
        return math.sqrt(sums.mul_(self.inv_sizes).max().item())
