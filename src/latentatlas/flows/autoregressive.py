"""Autoregressive flows: MAF and IAF (Papamakarios et al., 2017; Kingma et al., 2016).

:class:`MaskedAutoregressive` maps ``x -> z`` with ``z_i = f(x_i; theta_i(x_<i, c))`` where the
parameters of all features come from one :class:`~latentatlas.flows.nets.MADE` pass. Hence its
``forward`` (density direction) costs one pass, and its ``inverse`` (sampling) costs D sequential
passes. ``f`` is affine (soft-clamped log-scale) or a rational-quadratic spline.

:class:`MAF` stacks these transforms as they are (fast density, sequential sampling); :class:`IAF`
uses the inverses of the same transforms (one-pass sampling, sequential density). Both expose both
directions exactly, and :meth:`IAF.from_maf` builds the IAF whose forward map is the MAF's inverse
map, from the very same weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..io import Configurable
from .core import ComposedTransform, Flow, Transform, check_transform_input
from .nets import MADE, check_hidden, check_int, check_positive
from .splines import identity_spline_params, rqs_from_knots, spline_params

__all__ = ["IAF", "MAF", "InverseTransform", "MaskedAutoregressive"]


class MaskedAutoregressive(Configurable, Transform):
    """Masked autoregressive transform (affine or spline), ``z_i = f(x_i; theta_i(x_<i, c))``.

    Args:
        features: D.
        context: C (0 for none).
        hidden: MADE hidden widths.
        order: autoregressive order, a permutation of ``range(D)`` (default ``0..D-1``);
            ``"reverse"`` for ``D-1..0``.
        univariate: ``"affine"`` (``z = exp(s) x + t``, ``s`` soft-clamped to ``|s| < scale_bound``)
            or ``"spline"`` (rational-quadratic spline on ``[-bound, bound]``, identity outside).
        bins: spline bins (spline only).
        bound: spline bound (spline only).
        scale_bound: bound on the affine log-scale (affine only).
        activation: MADE activation.

    Shapes: ``x (B, D), context (B, C) -> z (B, D), logdet (B,)``. ``forward`` is one MADE pass,
    ``inverse`` is D passes.
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        hidden: Sequence[int] = (64, 64),
        order: Sequence[int] | str | None = None,
        univariate: str = "affine",
        bins: int = 8,
        bound: float = 5.0,
        scale_bound: float = 3.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        check_int(features, "features")
        check_int(context, "context", 0)
        hidden = check_hidden(hidden)
        if univariate not in ("affine", "spline"):
            raise ValueError(f"univariate: expected 'affine' or 'spline', got {univariate!r}")
        self.bins = check_int(bins, "bins")
        self.bound = check_positive(bound, "bound")
        self.scale_bound = check_positive(scale_bound, "scale_bound")
        if isinstance(order, str):
            if order != "reverse":
                raise ValueError(f"order: expected 'reverse' or a permutation, got {order!r}")
            order = tuple(range(features - 1, -1, -1))
        self.features, self.context_features, self.univariate = features, context, univariate
        k = 2 if univariate == "affine" else 3 * bins - 1
        self.made = MADE(features, context, hidden, k, order, activation)
        # Start as the identity (zero output layer): stable deep stacks, faster training.
        self.made.init_output(torch.zeros(2) if univariate == "affine" else identity_spline_params(bins))

    def _map(self, x: Tensor, p: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        """Elementwise map of x (B, D) with parameters p (B, D, k) -> (y, logdet (B,))."""
        if self.univariate == "affine":
            shift, raw = p[..., 0], p[..., 1]
            c = self.scale_bound
            s = c * torch.tanh(raw / c)
            if not inverse:
                return x * torch.exp(s) + shift, s.sum(-1)
            return (x - shift) * torch.exp(-s), -s.sum(-1)
        k = self.bins
        cw, ch, d = spline_params(p[..., :k], p[..., k : 2 * k], p[..., 2 * k :], self.bound)
        y, ld = rqs_from_knots(x, cw, ch, d, inverse, self.bound)
        return y, ld.sum(-1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_transform_input(x, self.features, context, self.context_features, "x")
        return self._map(x, self.made(x, context), False)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # After pass i the first i+1 features (in the autoregressive order) are exact; the
        # parameters of pass D depend only on exact values, so x and logdet are exact.
        check_transform_input(z, self.features, context, self.context_features, "z")
        x = torch.zeros_like(z)
        logdet = z.new_zeros(z.shape[0])
        for _ in range(self.features):
            x, logdet = self._map(z, self.made(x, context), True)
        return x, logdet


class InverseTransform(Transform):
    """The inverse of a transform: ``forward`` is ``inner.inverse`` and vice versa."""

    def __init__(self, inner: Transform) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.inner.inverse(x, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.inner(z, context)


def _layers(
    features: int,
    context: int,
    transforms: int,
    hidden: Sequence[int],
    univariate: str,
    bins: int,
    bound: float,
    scale_bound: float,
    activation: str,
) -> list[MaskedAutoregressive]:
    check_int(features, "features")
    check_int(context, "context", 0)
    check_int(transforms, "transforms")
    check_hidden(hidden)
    fwd, rev = tuple(range(features)), tuple(range(features - 1, -1, -1))
    return [
        MaskedAutoregressive(
            features, context, hidden, fwd if i % 2 == 0 else rev, univariate, bins, bound,
            scale_bound, activation,
        )
        for i in range(transforms)
    ]


class MAF(Flow):
    """Masked autoregressive flow: density in one pass per layer, sampling in D passes per layer.

    Layers alternate the autoregressive order (ascending, descending).

    Args:
        features: D.
        context: C (0 for an unconditional flow).
        transforms: number of autoregressive layers.
        hidden: MADE hidden widths.
        univariate: ``"affine"`` (MAF proper) or ``"spline"`` (autoregressive neural spline flow).
        bins, bound: spline settings.
        scale_bound: soft bound on the affine log-scales.
        activation: MADE activation.
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] = (64, 64),
        univariate: str = "affine",
        bins: int = 8,
        bound: float = 5.0,
        scale_bound: float = 3.0,
        activation: str = "relu",
    ) -> None:
        layers = _layers(features, context, transforms, hidden, univariate, bins, bound,
                         scale_bound, activation)
        super().__init__(ComposedTransform(layers), features, context)


class IAF(Flow):
    """Inverse autoregressive flow: sampling in one pass per layer, density in D passes per layer.

    Its transform (data -> noise) is the inverse of a MAF transform with the same arguments, so
    ``IAF.from_maf(maf)`` is the exact inverse map of ``maf`` (same weights).

    Args: as :class:`MAF`.
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 5,
        hidden: Sequence[int] = (64, 64),
        univariate: str = "affine",
        bins: int = 8,
        bound: float = 5.0,
        scale_bound: float = 3.0,
        activation: str = "relu",
    ) -> None:
        layers = _layers(features, context, transforms, hidden, univariate, bins, bound,
                         scale_bound, activation)
        super().__init__(InverseTransform(ComposedTransform(layers)), features, context)

    @classmethod
    def from_maf(cls, maf: MAF) -> IAF:
        """The IAF with ``maf``'s weights: ``iaf.forward(x) == maf.inverse(x)`` and vice versa.

        Hence ``iaf.forward(maf.forward(x)[0])[0] == x`` and the log-determinants cancel; the
        IAF's one-pass direction (sampling) is the MAF's one-pass direction (density).
        """
        if not isinstance(maf, MAF):
            raise ValueError(f"maf: expected a MAF, got {type(maf).__qualname__}")
        anchor = next(maf.parameters())
        # Move to the MAF's dtype first: loading float64 weights into float32 would round them.
        iaf = cls(**maf.config).to(device=anchor.device, dtype=anchor.dtype)
        iaf.transform.inner.load_state_dict(maf.transform.state_dict())
        return iaf
