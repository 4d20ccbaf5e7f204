"""Coupling flows: RealNVP (affine coupling) and NSF (rational-quadratic spline coupling).

A coupling transform splits ``x`` into a conditioning part ``x_A`` (copied unchanged) and a part
``x_B`` that is mapped elementwise by a monotonic function whose parameters are an MLP of
``(x_A, context)``. Both directions cost one network pass. Consecutive layers swap the roles of the
two halves (``flip``), so every feature is transformed. With one feature there is nothing to
condition on: the transform of the single feature is a function of the context only (or a learned
constant transform for an unconditional flow).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..io import Configurable
from .core import ComposedTransform, Flow, Transform, check_transform_input
from .nets import MLP, check_hidden, check_int, check_positive
from .splines import identity_spline_params, rqs_from_knots, spline_params

__all__ = ["AffineCoupling", "NSF", "RealNVP", "SplineCoupling"]


class _Coupling(Configurable, Transform):
    """Shared split/merge logic. Subclasses define ``params_per_feature`` and ``_map``."""

    params_per_feature: int

    def _setup(
        self, features: int, context: int, hidden: Sequence[int], flip: bool, activation: str
    ) -> None:
        check_int(features, "features")
        check_int(context, "context", 0)
        hidden = check_hidden(hidden)
        self.features, self.context_features = features, context
        half = features // 2
        self.flip = bool(flip) and features > 1
        # Conditioning part A and transformed part B as contiguous slices (views, no gathers).
        if features == 1:
            self.a_slice, self.b_slice = slice(0, 0), slice(0, 1)
        elif not self.flip:
            self.a_slice, self.b_slice = slice(0, half), slice(half, features)
        else:
            self.a_slice, self.b_slice = slice(half, features), slice(0, half)
        n_a = len(range(features)[self.a_slice])
        self.n_b = features - n_a
        self.net = MLP(n_a + context, self.n_b * self.params_per_feature, hidden, activation)
        if self.identity_init:  # start as the identity (zero output layer)
            self.net.init_output(self._identity_params().repeat(self.n_b))

    identity_init = True

    def _identity_params(self) -> Tensor:
        return torch.zeros(self.params_per_feature)

    def _params(self, xa: Tensor, context: Tensor | None) -> Tensor:
        inp = xa if context is None else torch.cat([xa, context], dim=-1)
        return self.net(inp)

    def _merge(self, xa: Tensor, yb: Tensor) -> Tensor:
        return torch.cat([yb, xa] if self.flip else [xa, yb], dim=-1)

    def _map(self, xb: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_transform_input(x, self.features, context, self.context_features, "x")
        xa, xb = x[:, self.a_slice], x[:, self.b_slice]
        zb, logdet = self._map(xb, self._params(xa, context), False)
        return self._merge(xa, zb), logdet

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_transform_input(z, self.features, context, self.context_features, "z")
        za, zb = z[:, self.a_slice], z[:, self.b_slice]
        xb, logdet = self._map(zb, self._params(za, context), True)
        return self._merge(za, xb), logdet


class AffineCoupling(_Coupling):
    """Affine coupling ``z_B = exp(s(x_A, c)) * x_B + t(x_A, c)``, ``z_A = x_A``.

    Written in the data -> noise direction; its inverse is the RealNVP generator
    ``x_B = exp(-s) * (z_B - t)`` (the same family as ``x_B = exp(s') z_B + b'``). The log-scale is
    soft-clamped, ``s = c * tanh(s_raw / c)`` with ``c = scale_bound``, so deep stacks cannot
    overflow.

    Args:
        features: D.
        context: C (0 for none).
        hidden: widths of the conditioner MLP.
        flip: condition on the second half and transform the first (else the reverse).
        scale_bound: c, the bound on ``|s|`` per layer.
        activation: activation of the conditioner.

    Shapes: ``x (B, D), context (B, C) -> z (B, D), logdet (B,)``.
    """

    params_per_feature = 2
    # Default (random) output layer: measured to train better on two-moons than an identity
    # start for affine couplings (1.156/1.176 vs 1.204/1.174 nats, 1500 steps, seeds 0/1).
    identity_init = False

    def __init__(
        self,
        features: int,
        context: int = 0,
        hidden: Sequence[int] = (64, 64),
        flip: bool = False,
        scale_bound: float = 3.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.scale_bound = check_positive(scale_bound, "scale_bound")
        self._setup(features, context, hidden, flip, activation)

    def _map(self, xb: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        shift, raw = params.chunk(2, dim=-1)
        c = self.scale_bound
        s = c * torch.tanh(raw / c)
        if not inverse:
            return xb * torch.exp(s) + shift, s.sum(-1)
        return (xb - shift) * torch.exp(-s), -s.sum(-1)


class SplineCoupling(_Coupling):
    """Rational-quadratic spline coupling (Durkan et al., 2019) with identity tails.

    ``z_B = RQS(x_B; theta(x_A, c))`` elementwise, on ``[-bound, bound]``; identity outside (so
    any real input is valid and its log-determinant contribution outside is exactly 0).

    Args:
        features: D.
        context: C (0 for none).
        hidden: widths of the conditioner MLP.
        flip: condition on the second half and transform the first.
        bins: K, the number of spline bins.
        bound: B.
        activation: activation of the conditioner.

    Shapes: ``x (B, D), context (B, C) -> z (B, D), logdet (B,)``.
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        hidden: Sequence[int] = (64, 64),
        flip: bool = False,
        bins: int = 8,
        bound: float = 5.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.bins = check_int(bins, "bins")
        self.bound = check_positive(bound, "bound")
        self.params_per_feature = 3 * bins - 1
        self._setup(features, context, hidden, flip, activation)

    def _identity_params(self) -> Tensor:
        return identity_spline_params(self.bins)

    def _map(self, xb: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        k = self.bins
        p = params.view(params.shape[0], self.n_b, 3 * k - 1)
        cw, ch, d = spline_params(p[..., :k], p[..., k : 2 * k], p[..., 2 * k :], self.bound)
        y, ld = rqs_from_knots(xb, cw, ch, d, inverse, self.bound)
        return y, ld.sum(-1)


def _check_flow_args(features: int, context: int, transforms: int, hidden: Sequence[int]) -> None:
    check_int(features, "features")
    check_int(context, "context", 0)
    check_int(transforms, "transforms")
    check_hidden(hidden)


class RealNVP(Flow):
    """RealNVP (Dinh et al., 2016): a stack of affine couplings with alternating halves.

    Args:
        features: D.
        context: C, size of the conditioning input (0 for an unconditional flow).
        transforms: number of coupling layers.
        hidden: widths of each conditioner MLP.
        scale_bound: soft bound on each layer's log-scale.
        activation: conditioner activation.

    Example::

        flow = RealNVP(2, transforms=8)
        la.flows.fit(flow, x)            # x: (N, 2)
        flow.log_prob(x)                 # (N,)
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 8,
        hidden: Sequence[int] = (64, 64),
        scale_bound: float = 3.0,
        activation: str = "relu",
    ) -> None:
        _check_flow_args(features, context, transforms, hidden)
        layers = [
            AffineCoupling(features, context, hidden, i % 2 == 1, scale_bound, activation)
            for i in range(transforms)
        ]
        super().__init__(ComposedTransform(layers), features, context)


class NSF(Flow):
    """Neural spline flow (Durkan et al., 2019): rational-quadratic spline couplings.

    Splines act on ``[-bound, bound]`` (identity outside: standardise the data so it mostly lies
    inside). With ``features=1`` each layer is a spline of the single feature whose parameters are
    a function of the context (a conditional 1-D density estimator).

    Args:
        features: D.
        context: C (0 for an unconditional flow).
        transforms: number of coupling layers.
        hidden: widths of each conditioner MLP.
        bins: K, spline bins per feature.
        bound: B.
        activation: conditioner activation.
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] = (64, 64),
        bins: int = 8,
        bound: float = 5.0,
        activation: str = "relu",
    ) -> None:
        _check_flow_args(features, context, transforms, hidden)
        check_int(bins, "bins")
        check_positive(bound, "bound")
        layers = [
            SplineCoupling(features, context, hidden, i % 2 == 1, bins, bound, activation)
            for i in range(transforms)
        ]
        super().__init__(ComposedTransform(layers), features, context)
