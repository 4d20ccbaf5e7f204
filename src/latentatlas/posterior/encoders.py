"""Per-sample encoders: one sample ``x`` -> an embedding vector, pooled over a bundle by the estimators.

- :class:`CNNEncoder`: convolutions over 1-D chains ``(L,)``, 2-D lattices ``(H, W)`` or images
  ``(C, H, W)``; ``periodic=True`` uses circular padding (spin lattices with periodic boundaries),
  ``periodic=False`` zero padding (open boundaries, e.g. TASEP, or images). Global average pooling at
  the end makes the embedding translation invariant for periodic lattices.
- :class:`MLPEncoder`: flattens the sample and applies an MLP (vectors, small samples).
- :func:`build_encoder`: the ``encoder="auto" | name`` rule used by the posterior estimators.

Both encoders are :class:`~latentatlas.io.Configurable`, so an estimator that holds one can be saved
with ``la.save``. Inputs of any dtype (int8 spins, uint8 occupations, floats) are cast to the
encoder's parameter dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..io import Configurable

__all__ = ["CNNEncoder", "ENCODERS", "MLPEncoder", "build_encoder"]

ENCODERS = ("auto", "lattice", "chain", "image", "mlp")


def _shape(sample_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in sample_shape)
    except TypeError:
        raise ValueError(f"sample_shape: expected a tuple of ints, got {sample_shape!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"sample_shape: expected a non-empty tuple of positive ints, got {shape}")
    return shape


class MLPEncoder(Configurable, nn.Module):
    """Flatten a sample and embed it with an MLP.

    Args:
        sample_shape: shape of one sample.
        embed: embedding size E.
        hidden: hidden width.
        depth: number of hidden layers.

    Shapes: ``(N, *sample_shape) -> (N, E)``.
    """

    def __init__(
        self, sample_shape: Sequence[int], embed: int = 64, hidden: int = 128, depth: int = 2
    ) -> None:
        super().__init__()
        self.sample_shape = _shape(sample_shape)
        n_in = math.prod(self.sample_shape)
        layers: list[nn.Module] = []
        width = n_in
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        layers.append(nn.Linear(width, embed))
        self.net = nn.Sequential(*layers)
        self.embed = embed

    def forward(self, x: Tensor) -> Tensor:
        w = self.net[0].weight
        x = x.to(device=w.device, dtype=w.dtype)
        return self.net(x.reshape(x.shape[0], -1))


class CNNEncoder(Configurable, nn.Module):
    """Convolutional encoder for chains, lattices and images, with global average pooling.

    Blocks of (3-wide conv, GELU, conv, GELU, 2x average-pool) are stacked while the spatial size
    stays >= 4 (at most ``blocks``), then features are averaged over space and mapped to E.

    Args:
        sample_shape: ``(L,)`` chain, ``(H, W)`` single-channel lattice or ``(C, H, W)`` image.
        embed: embedding size E.
        channels: convolution channels.
        periodic: circular padding (periodic boundaries) if True, zero padding if False.
        blocks: maximum number of downsampling blocks.
        products: also feed the product of each site with its next neighbour along every axis
            as input channels (``x_i x_{i+e}``; wrapped when periodic, 0 past the edge when
            open): the nearest-neighbour correlations that the couplings of lattice models act
            on, which a first convolution can then sum linearly instead of building them from
            nonlinearities. For a ``(C, H, W)`` image the products are channel-wise.

    Shapes: ``(N, *sample_shape) -> (N, E)``.
    """

    def __init__(
        self,
        sample_shape: Sequence[int],
        embed: int = 64,
        channels: int = 32,
        periodic: bool = True,
        blocks: int = 3,
        products: bool = False,
    ) -> None:
        super().__init__()
        shape = _shape(sample_shape)
        self.products = bool(products)
        if len(shape) not in (1, 2, 3):
            raise ValueError(f"sample_shape: CNNEncoder takes (L,), (H, W) or (C, H, W), got {shape}")
        self.sample_shape = shape
        self.spatial = 1 if len(shape) == 1 else 2
        self.in_channels = shape[0] if len(shape) == 3 else 1
        self.periodic = periodic
        conv = nn.Conv1d if self.spatial == 1 else nn.Conv2d
        pool = nn.AvgPool1d if self.spatial == 1 else nn.AvgPool2d
        mode = "circular" if periodic else "zeros"
        size = min(shape[-self.spatial :])
        layers: list[nn.Module] = []
        c_in = self.in_channels * (1 + self.spatial if self.products else 1)
        for b in range(max(1, blocks)):
            layers += [
                conv(c_in, channels, 3, padding=1, padding_mode=mode), nn.GELU(),
                conv(channels, channels, 3, padding=1, padding_mode=mode), nn.GELU(),
            ]
            c_in = channels
            if size // 2 >= 4 and b < blocks - 1:
                layers.append(pool(2))
                size //= 2
            else:
                break
        self.features = nn.Sequential(*layers)
        self.out = nn.Sequential(nn.Linear(channels, channels), nn.GELU(), nn.Linear(channels, embed))
        self.embed = embed

    def _neighbour_products(self, x: Tensor) -> list[Tensor]:
        """x times its next neighbour along each spatial axis (periodic: wrapped; open: 0 at
        the far edge): (N, C, *space) -> one (N, C, *space) tensor per axis."""
        out = []
        for axis in range(2, 2 + self.spatial):
            nxt = x.roll(-1, axis)  # a new tensor: zeroing its edge leaves x alone
            if not self.periodic:
                nxt.select(axis, x.shape[axis] - 1).zero_()
            out.append(x * nxt)
        return out

    def forward(self, x: Tensor) -> Tensor:
        w = self.out[0].weight
        x = x.to(device=w.device, dtype=w.dtype)
        if len(self.sample_shape) < 3:
            x = x.unsqueeze(1)
        if self.products:
            x = torch.cat([x, *self._neighbour_products(x)], 1)
        h = self.features(x)
        return self.out(h.flatten(2).mean(-1))


def build_encoder(
    kind: str | nn.Module,
    sample_shape: Sequence[int],
    embed: int,
    options: dict | None = None,
) -> nn.Module:
    """Build the per-sample encoder of an estimator.

    ``"auto"`` picks: ``(H, W)`` -> ``"lattice"`` (CNN, circular padding); ``(C, H, W)`` ->
    ``"image"`` (CNN, zero padding); ``(L,)`` with L > 16 -> ``"chain"`` (1-D CNN, zero padding,
    open boundaries as in TASEP); smaller vectors and anything else -> ``"mlp"``. A given
    ``nn.Module`` is returned as is (it must map ``(N, *sample_shape)`` to ``(N, embed)``).

    Args:
        kind: one of :data:`ENCODERS` or an ``nn.Module``.
        sample_shape: shape of one sample.
        embed: embedding size.
        options: extra keyword arguments of the encoder class (e.g. ``{"channels": 16}``).
    """
    shape = _shape(sample_shape)
    options = dict(options or {})
    if isinstance(kind, nn.Module):
        return kind
    if kind not in ENCODERS:
        raise ValueError(f"encoder: expected one of {ENCODERS} or an nn.Module, got {kind!r}")
    if kind == "auto":
        if len(shape) == 2:
            kind = "lattice"
        elif len(shape) == 3:
            kind = "image"
        elif len(shape) == 1 and shape[0] > 16:
            kind = "chain"
        else:
            kind = "mlp"
    if kind == "mlp":
        return MLPEncoder(shape, embed=embed, **options)
    if kind == "lattice" and len(shape) != 2:
        raise ValueError(f"encoder: 'lattice' takes sample_shape (H, W), got {shape}")
    if kind == "chain" and len(shape) != 1:
        raise ValueError(f"encoder: 'chain' takes sample_shape (L,), got {shape}")
    if kind == "image" and len(shape) != 3:
        raise ValueError(f"encoder: 'image' takes sample_shape (C, H, W), got {shape}")
    options.setdefault("periodic", kind == "lattice")
    return CNNEncoder(shape, embed=embed, **options)


def check_encoder_output(z: Tensor, n: int, embed: int) -> Tensor:
    """Raise a ValueError unless a (user) encoder returned (n, embed)."""
    if not isinstance(z, Tensor) or z.shape != (n, embed):
        got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__qualname__
        raise ValueError(f"encoder: expected the encoder to map N = {n} samples to shape "
                         f"({n}, {embed}) (embed={embed}), got {got}")
    return z
