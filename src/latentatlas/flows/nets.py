"""Conditioner networks of the flows: a plain :class:`MLP` and a masked autoregressive :class:`MADE`.

Both are lean ``nn.Module`` s (one Python loop over layers, no per-call validation) because they
sit in the hot path of every coupling and autoregressive transform.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MADE", "MLP", "activation_fn", "check_hidden"]

_ACTIVATIONS = {
    "relu": F.relu,
    "elu": F.elu,
    "silu": F.silu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "softplus": F.softplus,
    "leaky_relu": F.leaky_relu,
}


def activation_fn(name: str):
    """The activation function called ``name`` (one of relu, elu, silu, gelu, tanh, softplus,
    leaky_relu)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]


def check_hidden(hidden: Sequence[int], name: str = "hidden") -> tuple[int, ...]:
    """Validate a tuple of hidden-layer widths (each a positive int; may be empty)."""
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        hidden = (hidden,)
    try:
        widths = tuple(hidden)
    except TypeError:
        raise ValueError(f"{name}: expected a tuple of positive ints, got {hidden!r}") from None
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, int) or w <= 0:
            raise ValueError(f"{name}: expected a tuple of positive ints, got {hidden!r}")
    return widths


def check_int(value: object, name: str, minimum: int = 1) -> int:
    """Raise ``ValueError`` unless ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name}: expected {kind}, got {value!r}")
    return value


def check_positive(value: object, name: str) -> float:
    """Raise ``ValueError`` unless ``value`` is a finite positive number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    return float(value)


class MLP(nn.Module):
    """Multi-layer perceptron ``in_features -> hidden... -> out_features``.

    With ``in_features == 0`` (e.g. a one-feature coupling without context) the network is a
    learned constant vector, broadcast to the batch.

    Args:
        in_features: input size I (may be 0).
        out_features: output size O.
        hidden: hidden-layer widths.
        activation: name of the activation (see :func:`activation_fn`).

    Shapes: ``(B, I) -> (B, O)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        check_int(in_features, "in_features", 0)
        check_int(out_features, "out_features")
        hidden = check_hidden(hidden)
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        self._act = activation_fn(activation)
        if in_features == 0:
            self.constant = nn.Parameter(torch.zeros(out_features))
            self.layers = nn.ModuleList()
        else:
            sizes = (in_features, *hidden, out_features)
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    @torch.no_grad()
    def init_output(self, bias: Tensor | None = None) -> None:
        """Zero the output layer's weights and set its bias (default 0): the network then starts
        as a constant, e.g. the parameters of an identity transform."""
        last = self.constant if self.in_features == 0 else self.layers[-1].bias
        if self.in_features:
            self.layers[-1].weight.zero_()
        last.copy_(bias if bias is not None else torch.zeros_like(last))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, I) -> (B, O)."""
        if self.in_features == 0:
            return self.constant.expand(x.shape[0], -1)
        layers = self.layers
        last = len(layers) - 1
        act = self._act
        for i, layer in enumerate(layers):
            x = layer(x)
            if i < last:
                x = act(x)
        return x


def made_masks(
    features: int, context: int, hidden: Sequence[int], order: Sequence[int], out_per_feature: int
) -> list[Tensor]:
    """Connectivity masks of a MADE (Germain et al., 2015) with a context input.

    Input feature ``i`` gets degree ``rank(i) + 1`` in ``order`` (1..D); context inputs degree 0.
    Hidden units get degrees cycling over ``lo..D-1`` (``lo = 0`` if there is a context or D = 1,
    so that some units see the context only, else 1) and connect to inputs of degree <= theirs;
    the ``out_per_feature`` outputs of feature ``i`` connect to hidden units of degree < rank(i)+1.
    Hence output ``i`` depends on the features before it in ``order`` and on the whole context.

    Returns:
        One (out, in) float mask per layer.
    """
    rank = torch.empty(features, dtype=torch.long)
    rank[torch.as_tensor(list(order), dtype=torch.long)] = torch.arange(features)
    deg_in = torch.cat([rank + 1, torch.zeros(context, dtype=torch.long)])
    lo = 0 if (context > 0 or features == 1) else 1
    masks = []
    prev = deg_in
    for width in hidden:
        deg = lo + torch.arange(width) % max(features - lo, 1)
        masks.append((deg[:, None] >= prev[None, :]).float())
        prev = deg
    deg_out = (rank + 1).repeat_interleave(out_per_feature)
    masks.append((deg_out[:, None] > prev[None, :]).float())
    return masks


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation, with a context input.

    Output block ``i`` (``out_per_feature`` values) depends only on the features that come before
    feature ``i`` in ``order`` and on the full context, so the Jacobian of the outputs with respect
    to the features is strictly triangular in that order. The masks are precomputed buffers.

    Args:
        features: D.
        context: C (0 for none).
        hidden: hidden-layer widths.
        out_per_feature: k, outputs per feature.
        order: a permutation of ``range(D)`` (default ``0..D-1``).
        activation: activation name.

    Shapes: ``x (B, D), context (B, C) -> (B, D, k)``.
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        hidden: Sequence[int] = (64, 64),
        out_per_feature: int = 2,
        order: Sequence[int] | None = None,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        check_int(features, "features")
        check_int(context, "context", 0)
        hidden = check_hidden(hidden)
        check_int(out_per_feature, "out_per_feature")
        order = tuple(range(features)) if order is None else tuple(int(i) for i in order)
        if sorted(order) != list(range(features)):
            raise ValueError(
                f"order: expected a permutation of range({features}), got {list(order)}"
            )
        self.features, self.context, self.out_per_feature = features, context, out_per_feature
        self.order = order
        self._act = activation_fn(activation)
        masks = made_masks(features, context, hidden, order, out_per_feature)
        sizes = (features + context, *hidden, features * out_per_feature)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        for i, mask in enumerate(masks):
            self.register_buffer(f"mask{i}", mask)
        self._mask_names = tuple(f"mask{i}" for i in range(len(masks)))
        self._n = len(masks)

    @torch.no_grad()
    def init_output(self, bias: Tensor | None = None) -> None:
        """Zero the output layer's weights; set its bias to ``bias`` (k,) for every feature."""
        layer = self.layers[-1]
        layer.weight.zero_()
        if bias is None:
            layer.bias.zero_()
        else:
            layer.bias.copy_(bias.to(layer.bias).repeat(self.features))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """x: (B, D), context: (B, C) or None -> (B, D, k)."""
        h = x if context is None else torch.cat([x, context], dim=-1)
        last = self._n - 1
        act = self._act
        buffers = self._buffers
        for i, layer in enumerate(self.layers):
            h = F.linear(h, layer.weight * buffers[self._mask_names[i]], layer.bias)
            if i < last:
                h = act(h)
        return h.view(h.shape[0], self.features, self.out_per_feature)
