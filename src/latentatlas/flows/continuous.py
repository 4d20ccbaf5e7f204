"""Continuous normalizing flows (neural ODE flows; Bishop & Bishop ch. 18.3, FFJORD).

Time convention (shared with :mod:`latentatlas.flows.matching`): the state ``z(t)`` follows
``dz/dt = f(z, t, c)`` with **base noise at t = 0 and data at t = 1**. Along a trajectory the
log-density obeys the instantaneous change of variables

    d log p(z(t)) / dt = -Tr(df/dz),

so, with ``z(1) = x``::

    log p_x(x) = log p_0(z(0)) - int_0^1 Tr(df/dz)(z(t), t) dt.

:class:`ContinuousTransform` follows the :class:`~latentatlas.flows.Transform` convention of the
package: ``forward`` maps data to base (integrates t = 1 -> 0) and returns
``log|det dz(0)/dx| = -int_0^1 Tr dt``; ``inverse`` maps base to data (t = 0 -> 1) and returns
``log|det dx/dz(0)| = +int_0^1 Tr dt``. Both solve the augmented ODE for ``(z, l)`` with
``dl/dt = Tr(df/dz)`` by :func:`latentatlas.ode.odeint`.

Traces:

- ``"exact"``: for the built-in :class:`VectorField` the Jacobian is propagated through the MLP in
  forward mode, D tangent directions at once for the whole batch (one batched pass of D tangents,
  no python loop over samples and no double backward); any other field falls back to D batched
  reverse-mode passes (``torch.autograd.grad`` with one-hot cotangents).
- ``"hutchinson"``: the unbiased estimate ``eps^T (df/dz) eps`` with Rademacher or Gaussian probes
  ``eps`` drawn once per solve (FFJORD). Used in training mode only: in ``eval()`` mode the exact
  trace is always used, so ``log_prob`` of a model in eval mode is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .core import Flow, Transform, _check_positive_int, check_context, check_features

__all__ = ["CNF", "ContinuousFlow", "ContinuousTransform", "VectorField"]

TRACES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
NORMS = ("max", "rms")


def max_norm(state: Tensor | tuple[Tensor, ...]) -> float:
    """Error norm of the adaptive solver: the largest scaled error over all entries of the state.

    Every sample (and every log-determinant) of a batch then meets the tolerance on its own, as in
    zuko; the RMS norm over the batch (torchdiffeq's) lets a few samples be far less accurate.
    """
    parts = state if isinstance(state, tuple | list) else (state,)
    return float(torch.stack([p.detach().abs().max() for p in parts if p.numel()]).max())


def _elu_grad(a: Tensor, h: Tensor) -> Tensor:
    # elu'(a) = 1 for a > 0, exp(a) = elu(a) + 1 <= 1 otherwise
    return (h + 1).clamp(max=1)


def _tanh_grad(a: Tensor, h: Tensor) -> Tensor:
    return 1 - h * h


def _silu_grad(a: Tensor, h: Tensor) -> Tensor:
    s = torch.sigmoid(a)
    return s * (1 + a * (1 - s))


def _softplus_grad(a: Tensor, h: Tensor) -> Tensor:
    return torch.sigmoid(a)


# Module-level functions only (no lambdas or closures), so that a VectorField pickles: torch.save of
# a whole model and spawn-based multiprocessing need it.
_ACT_AND_GRAD: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor, Tensor], Tensor]]] = {
    "elu": (torch.nn.functional.elu, _elu_grad),
    "tanh": (torch.tanh, _tanh_grad),
    "silu": (torch.nn.functional.silu, _silu_grad),
    "softplus": (torch.nn.functional.softplus, _softplus_grad),
}


def _act_and_grad(name: str) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor, Tensor], Tensor]]:
    """Activation sigma(a) and its derivative sigma'(a) (given a and sigma(a)); both picklable."""
    if name not in _ACT_AND_GRAD:
        raise ValueError(
            f"activation: expected one of 'elu', 'tanh', 'silu', 'softplus', got {name!r}"
        )
    return _ACT_AND_GRAD[name]


ACTIVATIONS = ("elu", "tanh", "silu", "softplus")


def _check_choice(value: object, choices: Sequence[str], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_positive(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name}: expected a positive number, got {value!r}")


def _check_hidden(hidden: object) -> tuple[int, ...]:
    if not isinstance(hidden, list | tuple) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden
    ):
        raise ValueError(f"hidden: expected a sequence of positive ints, got {hidden!r}")
    return tuple(hidden)


class VectorField(nn.Module):
    """MLP vector field ``f(z, t, c)`` with time and context as input features.

    Input of the first layer: ``[z, t, cos(k pi t), sin(k pi t) (k = 1..freqs), c]``. Besides the
    plain evaluation it computes the divergence ``Tr(df/dz)`` exactly (forward-mode Jacobian, all D
    tangents in one batched pass) or Hutchinson's estimate ``eps^T (df/dz) eps`` (one tangent).

    Args:
        features: D.
        context: C (0 for none).
        hidden: widths of the hidden layers; ``()`` gives an affine field ``f = W [z, t, c] + b``.
        activation: ``"elu"``, ``"tanh"``, ``"silu"`` or ``"softplus"``.
        freqs: number of sinusoidal time frequencies.
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        hidden: Sequence[int] = (64, 64),
        activation: str = "elu",
        freqs: int = 3,
    ) -> None:
        super().__init__()
        _check_positive_int(features, "features")
        if isinstance(context, bool) or not isinstance(context, int) or context < 0:
            raise ValueError(f"context: expected a non-negative int, got {context!r}")
        if isinstance(freqs, bool) or not isinstance(freqs, int) or freqs < 0:
            raise ValueError(f"freqs: expected a non-negative int, got {freqs!r}")
        hidden = _check_hidden(hidden)
        _check_choice(activation, ACTIVATIONS, "activation")
        self.features, self.context, self.activation = features, context, activation
        self.time_features = 1 + 2 * freqs
        dims = [features + self.time_features + context, *hidden, features]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.register_buffer(
            "freqs", math.pi * torch.arange(1, freqs + 1, dtype=torch.get_default_dtype()),
            persistent=False,
        )
        self._act, self._act_grad = _act_and_grad(activation)

    # -- pieces -------------------------------------------------------------------------------
    def embed_time(self, t: Tensor | float, like: Tensor) -> Tensor:
        """Time features: t scalar -> (1, T); t (B,) -> (B, T) (dtype/device of ``like``)."""
        t = torch.as_tensor(t, dtype=like.dtype, device=like.device).reshape(-1, 1)
        angles = t * self.freqs.to(like.dtype)
        return torch.cat((t, angles.cos(), angles.sin()), dim=-1)

    def context_bias(self, context: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Constants of one ODE solve (the context does not change along a trajectory).

        Returns ``(W_c c + b, W_z^T, W_t^T)``: the constant part of the first pre-activation,
        (B, H) or (H,), and contiguous copies of the state and time blocks of the first weight,
        (D, H) and (T, H). Pass the tuple to :meth:`evaluate` / :meth:`evaluate_with_trace`.
        """
        first = self.layers[0]
        d, nt = self.features, self.time_features
        bias = first.bias
        if self.context:
            w_c = first.weight[:, d + nt :]
            bias = bias + context.to(like.dtype) @ w_c.T
        w_z = first.weight[:, :d].T.contiguous()
        w_t = first.weight[:, d : d + nt].T.contiguous()
        return bias, w_z, w_t

    def _pre(self, t: Tensor | float, z: Tensor, prep: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        cbias, w_z, w_t = prep
        return torch.addmm(self.embed_time(t, z) @ w_t + cbias, z, w_z)

    # -- evaluations --------------------------------------------------------------------------
    def forward(self, t: Tensor | float, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Velocity. t: scalar or (B,), z: (B, D), context: (B, C) or None -> (B, D)."""
        return self.evaluate(t, z, self.context_bias(context, z))

    def evaluate(self, t: Tensor | float, z: Tensor, cbias: tuple[Tensor, ...]) -> Tensor:
        """Velocity given a precomputed :meth:`context_bias`. -> (B, D)."""
        a = self._pre(t, z, cbias)
        for layer in self.layers[1:]:
            a = layer(self._act(a))
        return a

    def evaluate_with_trace(
        self, t: Tensor | float, z: Tensor, cbias: tuple[Tensor, ...], probe: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Velocity and divergence in one pass.

        Args:
            t: scalar or (B,) time; z: (B, D); cbias: the constants from :meth:`context_bias`.
            probe: None for the exact trace, or a (B, D) probe ``eps`` for Hutchinson's
                ``eps^T J eps``.

        Returns:
            ``v`` (B, D) and the (estimated) trace of ``dv/dz``, (B,).
        """
        d = self.features
        w_z = cbias[1]  # (D, H) = W_z^T
        a = self._pre(t, z, cbias)
        if len(self.layers) == 1:  # affine field: J = W_z
            if probe is None:
                return a, torch.diagonal(w_z).sum().expand(z.shape[0])
            return a, ((probe @ w_z) * probe).sum(-1)
        # forward-mode tangents: exact -> (D*B, H) (block i = d a / d z_i); probe -> (B, H)
        b = z.shape[0]
        h = self._act(a)
        grad = self._act_grad(a, h)
        if probe is None:
            tangent = (w_z[:, None, :] * grad).reshape(d * b, -1)
        else:
            tangent = (probe @ w_z) * grad
        for layer in self.layers[1:-1]:
            a = layer(h)
            h = self._act(a)
            grad = self._act_grad(a, h)
            tangent = tangent @ layer.weight.T
            tangent = (tangent.view(-1, b, tangent.shape[-1]) * grad).view(tangent.shape)
        last = self.layers[-1]
        v = last(h)
        if probe is None:
            # Tr J = sum_i <tangent_i, W_L[i]>
            trace = torch.bmm(tangent.view(d, b, -1), last.weight[:, :, None]).sum(0)[:, 0]
        else:
            trace = ((tangent @ last.weight.T) * probe).sum(-1)
        return v, trace


def _autograd_trace(
    field: Callable[[Tensor, Tensor, Tensor | None], Tensor],
    t: Tensor,
    z: Tensor,
    context: Tensor | None,
    probe: Tensor | None,
    create_graph: bool,
) -> tuple[Tensor, Tensor]:
    """Velocity and (estimated) divergence of an arbitrary field by reverse-mode autograd.

    Exact: D batched vector-Jacobian products with one-hot cotangents (each pass covers the whole
    batch). Hutchinson: one vector-Jacobian product with the probe.
    """
    with torch.enable_grad():
        zz = z if (z.requires_grad and create_graph) else z.detach().requires_grad_(True)
        v = field(t, zz, context)
        if probe is not None:
            (vjp,) = torch.autograd.grad(v, zz, probe, create_graph=create_graph)
            return v, (vjp * probe).sum(-1)
        trace = torch.zeros_like(v[:, 0])
        d = z.shape[-1]
        for i in range(d):
            onehot = torch.zeros_like(v)
            onehot[:, i] = 1
            (row,) = torch.autograd.grad(
                v, zz, onehot, create_graph=create_graph, retain_graph=create_graph or i < d - 1
            )
            trace = trace + row[:, i]
    if not create_graph:
        v, trace = v.detach(), trace.detach()
    return v, trace


def _odeint(*args: Any, **kwargs: Any) -> Any:
    from ..ode import odeint

    return odeint(*args, **kwargs)


class ContinuousTransform(Transform):
    """Transform defined by an ODE ``dz/dt = f(z, t, c)`` between data (t = 1) and base (t = 0).

    Args:
        field: the vector field: a :class:`VectorField` (fast exact trace) or any module called as
            ``field(t, z, context) -> (B, D)`` (trace by autograd).
        trace: ``"exact"`` or ``"hutchinson"`` (used in training mode; eval mode is always exact).
        probe: Hutchinson probe distribution, ``"rademacher"`` or ``"gaussian"``.
        rtol, atol: tolerances of the adaptive solver.
        norm: error norm of the adaptive solver: ``"max"`` (every entry of the state within
            tolerance: a per-sample guarantee, as zuko) or ``"rms"`` (RMS over all entries of the
            batch, as torchdiffeq: fewer steps, but single samples can be much less accurate).
        method: solver name passed to :func:`latentatlas.ode.odeint` (default ``"dopri5"``).
        adjoint: train with the adjoint method (constant memory) instead of backpropagating
            through the solver steps. With the adjoint no gradient flows into ``context``.
        step_size: step for fixed-step methods (``"rk4"``, ``"euler"``).
        max_steps: solver step budget.

    After every solve ``self.stats`` holds the solver statistics (``nfe``, ``accepted``,
    ``rejected``) of :func:`latentatlas.ode.odeint`.
    """

    def __init__(
        self,
        field: nn.Module,
        trace: str = "exact",
        probe: str = "rademacher",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        method: str = "dopri5",
        adjoint: bool = False,
        step_size: float | None = None,
        max_steps: int = 10_000,
        norm: str = "max",
    ) -> None:
        super().__init__()
        _check_choice(trace, TRACES, "trace")
        _check_choice(norm, NORMS, "norm")
        _check_choice(probe, PROBES, "probe")
        _check_positive(rtol, "rtol")
        _check_positive(atol, "atol")
        from ..ode import METHODS

        _check_choice(method, sorted(METHODS), "method")
        if not isinstance(field, nn.Module):
            raise ValueError(f"field: expected an nn.Module, got {type(field).__qualname__}")
        self.field = field
        self.trace, self.probe = trace, probe
        self.rtol, self.atol, self.method, self.norm = rtol, atol, method, norm
        self.adjoint, self.step_size, self.max_steps = bool(adjoint), step_size, max_steps
        self.stats: Any = None

    # -- building blocks ----------------------------------------------------------------------
    def _make_probe(self, z: Tensor) -> Tensor | None:
        if not self.training or self.trace == "exact":
            return None
        if self.probe == "gaussian":
            return torch.randn_like(z)
        return torch.randint(0, 2, z.shape, device=z.device).to(z.dtype) * 2 - 1

    def velocity_fn(self, context: Tensor | None, like: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
        """``f(t, z) -> (B, D)`` with the context bound (and precomputed where possible)."""
        field = self.field
        if isinstance(field, VectorField):
            cbias = field.context_bias(context, like)
            return lambda t, z: field.evaluate(t, z, cbias)
        return lambda t, z: field(t, z, context)

    def augmented_fn(
        self, context: Tensor | None, like: Tensor
    ) -> Callable[[Tensor, tuple[Tensor, Tensor]], tuple[Tensor, Tensor]]:
        """``f(t, (z, l)) -> (dz/dt, dl/dt = Tr(df/dz))`` with probes fixed for this solve."""
        field = self.field
        probe = self._make_probe(like)
        if isinstance(field, VectorField):
            cbias = field.context_bias(context, like)

            def fast(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
                return field.evaluate_with_trace(t, state[0], cbias, probe)

            return fast

        def generic(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            z = state[0]
            create_graph = torch.is_grad_enabled() and (
                z.requires_grad or any(p.requires_grad for p in field.parameters())
            )
            return _autograd_trace(field, t, z, context, probe, create_graph)

        return generic

    def _solve(self, f: Callable, y0: Any, t0: float, t1: float) -> Any:
        like = y0[0] if isinstance(y0, tuple) else y0
        times = torch.tensor([t0, t1], dtype=like.dtype, device=like.device)
        kwargs: dict[str, Any] = dict(
            method=self.method, rtol=self.rtol, atol=self.atol, max_steps=self.max_steps,
            return_stats=True,
        )
        if self.norm == "max":
            kwargs["norm"] = max_norm
        if self.step_size is not None:
            kwargs["step_size"] = self.step_size
        if self.adjoint and torch.is_grad_enabled():
            kwargs["adjoint"] = True
            kwargs["params"] = [p for p in self.field.parameters() if p.requires_grad]
        ys, self.stats = _odeint(f, y0, times, **kwargs)
        if isinstance(ys, tuple | list):
            return tuple(y[-1] for y in ys)
        return ys[-1]

    def _integrate_with_logdet(
        self, y: Tensor, context: Tensor | None, t0: float, t1: float
    ) -> tuple[Tensor, Tensor]:
        f = self.augmented_fn(context, y)
        l0 = y.new_zeros(y.shape[0])
        out, logdet = self._solve(f, (y, l0), t0, t1)
        return out, logdet

    # -- Transform API ------------------------------------------------------------------------
    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data -> base (t: 1 -> 0). x: (B, D) -> z (B, D), log|det dz/dx| (B,)."""
        return self._integrate_with_logdet(x, context, 1.0, 0.0)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Base -> data (t: 0 -> 1). z: (B, D) -> x (B, D), log|det dx/dz| (B,)."""
        return self._integrate_with_logdet(z, context, 0.0, 1.0)

    def integrate(
        self, y: Tensor, context: Tensor | None = None, t0: float = 0.0, t1: float = 1.0
    ) -> Tensor:
        """Transport ``y`` (B, D) from time t0 to t1 without the log-determinant (cheap)."""
        return self._solve(self.velocity_fn(context, y), y, t0, t1)


class ContinuousFlow(Flow):
    """A :class:`Flow` whose transform is a :class:`ContinuousTransform` (CNF, flow matching).

    Adds trace-free sampling, the velocity field and path diagnostics to the :class:`Flow` API.
    Subclasses build ``self.transform`` and call ``Flow.__init__``.
    """

    transform: ContinuousTransform

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """Samples by integrating the ODE from noise (t = 0 -> 1) without the trace.

        Returns (n, D), or (n, B, D) for a context batch (B, C).
        """
        _check_positive_int(n, "n")
        if self.context_features == 0:
            check_context(context, 0)
            return self.transform.integrate(self.base.sample(n), None)
        context = check_context(context, self.context_features)
        batch = context.shape[0]
        ctx = context.unsqueeze(0).expand(n, batch, -1).reshape(n * batch, -1)
        z = self.base.sample(n * batch)
        return self.transform.integrate(z, ctx.to(z.dtype)).reshape(n, batch, -1)

    def velocity(self, x: Tensor, t: Tensor | float, context: Tensor | None = None) -> Tensor:
        """The vector field. x: (B, D); t: float, scalar or (B,) tensor in [0, 1];
        context: (B, C) or None -> (B, D)."""
        check_features(x, self.features, "x")
        context = check_context(context, self.context_features, x.shape[0])
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, x.shape[0])):
            raise ValueError(f"t: expected a scalar or shape ({x.shape[0]},), got {tuple(t.shape)}")
        return self.transform.field(t, x, context)

    @torch.no_grad()
    def path_energy(
        self, n: int = 1000, context: Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, float]:
        """Straightness diagnostics of the sampling trajectories from ``n`` noise draws.

        Solves the augmented ODE ``(z, e)`` with ``de/dt = ||f(z, t)||^2`` from t = 0 to 1.

        Returns:
            ``energy``: mean of ``int_0^1 ||v||^2 dt`` over trajectories;
            ``displacement``: mean ``||x(1) - z(0)||^2``;
            ``straightness``: ``energy - displacement`` (>= 0 by Cauchy-Schwarz; 0 iff every
            trajectory is a straight line traversed at constant speed);
            ``nfe``: function evaluations of the plain sampling solve (:meth:`sample`) of the same
            noise (from the solver statistics).
        """
        _check_positive_int(n, "n")
        z0 = self.base.sample(n, generator=generator)
        ctx = None
        if self.context_features:
            ctx = check_context(context, self.context_features, n).to(z0.dtype)
        else:
            check_context(context, 0)
        velocity = self.transform.velocity_fn(ctx, z0)

        def energy_fn(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            v = velocity(t, state[0])
            return v, (v * v).sum(-1)

        self.transform.integrate(z0, ctx)
        nfe = getattr(self.transform.stats, "nfe", float("nan"))
        x1, energy = self.transform._solve(energy_fn, (z0, z0.new_zeros(n)), 0.0, 1.0)
        disp = ((x1 - z0) ** 2).sum(-1)
        return {
            "energy": float(energy.mean()),
            "displacement": float(disp.mean()),
            "straightness": float((energy - disp).mean()),
            "nfe": float(nfe),
        }


class CNF(ContinuousFlow):
    """Continuous normalizing flow trained by maximum likelihood (FFJORD-style).

    ``log p(x|c) = log N(z(0); 0, I) - int_0^1 Tr(df/dz) dt`` with ``z(1) = x`` (base at t = 0,
    data at t = 1). Train with :func:`latentatlas.flows.fit`; in training mode the configured
    ``trace`` is used, in eval mode the exact trace.

    Args:
        features: D.
        context: C (0 for an unconditional flow).
        hidden: hidden widths of the :class:`VectorField` MLP (``()``: affine field).
        trace: ``"exact"`` or ``"hutchinson"`` (training-mode trace).
        probe: ``"rademacher"`` or ``"gaussian"`` Hutchinson probes (fixed per solve).
        rtol, atol: dopri5 tolerances (zuko's defaults). With the max error norm a forward-inverse
            round trip of a default-initialised field is exact to ~1e-4 (x and log-determinant).
        norm: error norm of the solver, ``"max"`` (per sample) or ``"rms"`` (over the batch).
        activation: ``"elu"``, ``"tanh"``, ``"silu"`` or ``"softplus"``.
        freqs: sinusoidal time frequencies fed to the MLP.
        adjoint: gradients by the adjoint method instead of backprop through the solver.
        method: ODE solver (see :func:`latentatlas.ode.odeint`).
        step_size: step of a fixed-step ``method`` (``"rk4"``, ...); initial step for dopri5.

    Example:
        >>> flow = CNF(2, hidden=(32, 32))
        >>> flow.log_prob(torch.randn(5, 2)).shape
        torch.Size([5])
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        hidden: Sequence[int] = (64, 64),
        trace: str = "exact",
        probe: str = "rademacher",
        rtol: float = 1e-5,
        atol: float = 1e-6,
        activation: str = "elu",
        freqs: int = 3,
        adjoint: bool = False,
        method: str = "dopri5",
        step_size: float | None = None,
        norm: str = "max",
    ) -> None:
        field = VectorField(features, context, hidden, activation, freqs)
        transform = ContinuousTransform(
            field, trace=trace, probe=probe, rtol=rtol, atol=atol, method=method, adjoint=adjoint,
            step_size=step_size, norm=norm,
        )
        super().__init__(transform, features, context)
