"""Transforms and flows: the core abstractions of ``la.flows``.

Convention (as in Bishop & Bishop, ch. 18, and DESIGN.md): a flow maps data ``x`` to base noise
``z`` with ``forward`` and back with ``inverse``. Every transform returns the log-absolute
determinant of the Jacobian of the direction it computes, so

    log p(x | c) = log p_z(z) + log|det dz/dx|,    (z, logdet) = forward(x, c).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..io import Configurable
from .distributions import FlowDistribution, StandardNormal

__all__ = [
    "ComposedTransform", "Flow", "Transform", "check_context", "check_features", "check_transform_input",
]


def check_features(x: Tensor, features: int, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` has shape (B, features)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape (B, {features}), got {type(x)}")
    if x.dim() != 2 or x.shape[-1] != features:
        raise ValueError(
            f"{name}: expected shape (B, {features}) (features={features}), got {tuple(x.shape)}"
        )


def check_context(context: Tensor | None, dim: int, batch: int | None = None) -> Tensor | None:
    """Validate a context batch against the flow's context size ``dim``.

    Args:
        context: (B, C) or (C,) tensor, or None.
        dim: expected C (0 means the flow is unconditional).
        batch: if given, B must equal it (a (C,) context is broadcast to (batch, C)).

    Returns:
        The context as (B, C), or None.
    """
    if dim == 0:
        if context is not None:
            raise ValueError(
                f"context: this flow is unconditional (context=0), got a tensor of shape "
                f"{tuple(context.shape)}"
            )
        return None
    if context is None:
        raise ValueError(f"context: this flow needs a context of shape (B, {dim}), got None")
    if not isinstance(context, Tensor):
        raise ValueError(f"context: expected a torch.Tensor of shape (B, {dim}), got {type(context)}")
    if context.dim() == 1:
        context = context.unsqueeze(0) if batch is None else context.expand(batch, -1)
    if context.dim() != 2 or context.shape[-1] != dim:
        raise ValueError(f"context: expected shape (B, {dim}), got {tuple(context.shape)}")
    if batch is not None and context.shape[0] != batch:
        if context.shape[0] == 1:
            context = context.expand(batch, -1)
        else:
            raise ValueError(
                f"context: expected {batch} rows to match x, got shape {tuple(context.shape)}"
            )
    return context


def check_transform_input(
    x: Tensor, features: int, context: Tensor | None, context_features: int, name: str = "x"
) -> None:
    """Strict shape check of a transform's arguments (no broadcasting, unlike :func:`check_context`).

    Raises ``ValueError`` naming the argument, the expected shape and the received one unless
    ``x`` is (B, features) and ``context`` is None (``context_features == 0``) or (B, C) with
    ``C == context_features``.
    """
    check_features(x, features, name)
    if context_features == 0:
        if context is not None:
            raise ValueError(
                f"context: this transform is unconditional (context=0), got "
                f"{type(context).__name__ if not isinstance(context, Tensor) else tuple(context.shape)}"
            )
        return
    expected = f"({x.shape[0]}, {context_features})"
    if not isinstance(context, Tensor):
        raise ValueError(f"context: expected a torch.Tensor of shape {expected}, got {context!r}")
    if context.dim() != 2 or context.shape[0] != x.shape[0] or context.shape[1] != context_features:
        raise ValueError(
            f"context: expected shape {expected} (one row per row of {name}; a transform does "
            f"not broadcast a (C,) context, a Flow does), got {tuple(context.shape)}"
        )


class Transform(nn.Module):
    """An invertible map with exact log-determinants in both directions.

    Subclasses implement :meth:`forward` (x -> z) and :meth:`inverse` (z -> x). Both take
    ``x``/``z`` of shape (B, D) and an optional ``context`` of shape (B, C), and return the mapped
    tensor (B, D) and ``log|det J|`` of the direction computed, shape (B,).
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class ComposedTransform(Transform):
    """Composition ``t_n o ... o t_1`` of transforms (``forward`` applies ``t_1`` first)."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for t in self.transforms:
            x, ld = t(x, context)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logdet = z.new_zeros(z.shape[0])
        for t in reversed(self.transforms):
            z, ld = t.inverse(z, context)
            logdet = logdet + ld
        return z, logdet


class Flow(Configurable, nn.Module):
    """A normalizing flow: a transform x -> z and a base distribution over z.

    Subclasses (RealNVP, NSF, MAF, IAF, CNF, ...) build ``self.transform`` and ``self.base`` in their
    constructor and call ``Flow.__init__(self, transform, features, context)``; the generic class can
    also be used directly with ``Flow(ComposedTransform([...]), features, context)``.

    Args:
        transform: a :class:`Transform` from data to base space.
        features: D, the data dimension.
        context: C, the context dimension (0 for an unconditional flow).
        base: base distribution (default: standard normal over D).
    """

    def __init__(
        self,
        transform: Transform,
        features: int,
        context: int = 0,
        base: nn.Module | None = None,
    ) -> None:
        nn.Module.__init__(self)
        _check_positive_int(features, "features")
        if not isinstance(context, int) or context < 0:
            raise ValueError(f"context: expected a non-negative int, got {context!r}")
        self.features = features
        self.context_features = context
        self.transform = transform
        self.base = base if base is not None else StandardNormal(features)

    # -- the two directions -------------------------------------------------------------------
    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data to base space. x: (B, D), context: (B, C) -> z: (B, D), logdet: (B,)."""
        check_features(x, self.features, "x")
        context = check_context(context, self.context_features, x.shape[0])
        return self.transform(x, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map base samples to data. z: (B, D), context: (B, C) -> x: (B, D), logdet: (B,)."""
        check_features(z, self.features, "z")
        context = check_context(context, self.context_features, z.shape[0])
        return self.transform.inverse(z, context)

    # -- densities and samples ----------------------------------------------------------------
    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of data. x: (B, D), context: (B, C) or None -> (B,)."""
        z, logdet = self.forward(x, context)
        return self.base.log_prob(z) + logdet

    def distribution(self, context: Tensor | None = None) -> FlowDistribution:
        """This flow at a fixed context as a ``torch.distributions.Distribution`` (like zuko's
        ``flow(c)``): ``log_prob``, ``sample``, ``rsample`` (see :class:`FlowDistribution`).

        Args:
            context: None (unconditional flow), (C,) (batch shape ()) or (B, C) (batch shape (B,)).
        """
        if self.context_features == 0:
            check_context(context, 0)
        elif not isinstance(context, Tensor) or context.dim() not in (1, 2) or (
            context.shape[-1] != self.context_features
        ):
            got = tuple(context.shape) if isinstance(context, Tensor) else context
            raise ValueError(
                f"context: expected shape ({self.context_features},) or (B, {self.context_features}),"
                f" got {got}"
            )
        return FlowDistribution(self, context)

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """Draw samples: (n, D) without context; (n, B, D) for a context batch (B, C)."""
        return self.sample_and_log_prob(n, context)[0]

    def sample_and_log_prob(self, n: int, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Samples and their log-density in one pass: ((n, D), (n,)) or ((n, B, D), (n, B))."""
        _check_positive_int(n, "n")
        if self.context_features == 0:
            check_context(context, 0)
            z = self.base.sample(n)
            base_lp = self.base.log_prob(z)
            x, logdet = self.transform.inverse(z, None)
            return x, base_lp - logdet
        context = check_context(context, self.context_features)
        batch = context.shape[0]
        ctx = context.unsqueeze(0).expand(n, batch, -1).reshape(n * batch, -1)
        z = self.base.sample(n * batch)
        base_lp = self.base.log_prob(z)
        x, logdet = self.transform.inverse(z, ctx)
        return x.reshape(n, batch, -1), (base_lp - logdet).reshape(n, batch)


def _check_positive_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
