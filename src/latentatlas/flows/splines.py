"""Monotonic rational-quadratic splines (Durkan, Bekasov, Murray, Papamakarios, 2019).

The spline maps ``[-B, B]`` onto itself through ``K`` bins; outside it is the identity (linear
tails with slope 1, so the derivative is continuous at ``+-B``: the boundary knot derivatives are
fixed to 1). Every input on the real line is valid: values outside the interval are passed through
with a log-determinant of exactly 0, and the spline arithmetic is done on clamped copies so that no
NaN can appear in the values *or* the gradients. The inverse solves the per-bin quadratic in the
cancellation-free form ``theta = 2c / (-b - sqrt(b^2 - 4ac))``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["identity_spline_params", "rational_quadratic_spline", "spline_params"]

DEFAULT_MIN_WIDTH = 1e-3
DEFAULT_MIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3


def spline_params(
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float = 5.0,
    min_width: float = DEFAULT_MIN_WIDTH,
    min_height: float = DEFAULT_MIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor, Tensor]:
    """Knots of the spline from unconstrained parameters.

    Args:
        widths: (..., K) unnormalised bin widths (softmax, floor ``min_width``).
        heights: (..., K) unnormalised bin heights (softmax, floor ``min_height``).
        derivatives: (..., K-1) unnormalised interior knot derivatives
            (``min_derivative + softplus``); the two boundary derivatives are 1.
        bound: B, the spline acts on ``[-B, B]``.

    Returns:
        knot x positions (..., K+1), knot y positions (..., K+1), knot derivatives (..., K+1).
    """
    bins = widths.shape[-1]
    w = F.softmax(widths, dim=-1) * (1 - min_width * bins) + min_width
    h = F.softmax(heights, dim=-1) * (1 - min_height * bins) + min_height
    # Interior knots from the cumulative sums; the end points are exactly -B and B (cumsum
    # rounding must not leave a gap at the bound).
    cw = F.pad(F.pad(torch.cumsum(w[..., :-1], dim=-1) * (2 * bound) - bound, (1, 0), value=-bound),
               (0, 1), value=bound)
    ch = F.pad(F.pad(torch.cumsum(h[..., :-1], dim=-1) * (2 * bound) - bound, (1, 0), value=-bound),
               (0, 1), value=bound)
    d = min_derivative + F.softplus(derivatives)
    d = F.pad(d, (1, 1), value=1.0)
    return cw, ch, d


def rational_quadratic_spline(
    x: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    inverse: bool = False,
    bound: float = 5.0,
    min_width: float = DEFAULT_MIN_WIDTH,
    min_height: float = DEFAULT_MIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    """Elementwise monotonic rational-quadratic spline with identity tails.

    Args:
        x: (...) inputs (any real values).
        widths, heights: (..., K) unnormalised bin widths and heights.
        derivatives: (..., K-1) unnormalised interior knot derivatives.
        inverse: compute the inverse map instead.
        bound: B; outside ``[-B, B]`` the map is the identity.
        min_width, min_height, min_derivative: floors that keep the spline well conditioned.

    Returns:
        y (...) and the elementwise log-derivative ``log|dy/dx|`` (...) of the direction computed.
    """
    _check_spline_shapes(x, widths, heights, derivatives)
    if min_width * widths.shape[-1] >= 1 or min_height * heights.shape[-1] >= 1:
        raise ValueError(
            f"min_width/min_height: expected bins * min < 1, got bins={widths.shape[-1]}, "
            f"min_width={min_width}, min_height={min_height}"
        )
    cw, ch, d = spline_params(
        widths, heights, derivatives, bound, min_width, min_height, min_derivative
    )
    return rqs_from_knots(x, cw, ch, d, inverse, bound)


def _check_spline_shapes(x: Tensor, widths: Tensor, heights: Tensor, derivatives: Tensor) -> None:
    """``ValueError`` unless widths/heights are (*x.shape, K) and derivatives (*x.shape, K-1)."""
    for name, value in (("x", x), ("widths", widths), ("heights", heights),
                        ("derivatives", derivatives)):
        if not isinstance(value, Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    batch = tuple(x.shape)
    if widths.dim() == 0 or widths.shape[-1] < 1:
        raise ValueError(f"widths: expected shape (*x.shape, K) = (*{batch}, K), got {tuple(widths.shape)}")
    k = widths.shape[-1]
    hint = " (one set of parameters per element of x: expand (K,) parameters to (*x.shape, K))"
    for name, value, last in (("widths", widths, k), ("heights", heights, k),
                              ("derivatives", derivatives, k - 1)):
        expected = (*batch, last)
        if tuple(value.shape) != expected:
            raise ValueError(
                f"{name}: expected shape {expected} for x of shape {batch} and K={k} bins{hint}, "
                f"got {tuple(value.shape)}"
            )


def rqs_from_knots(
    x: Tensor, cw: Tensor, ch: Tensor, d: Tensor, inverse: bool, bound: float
) -> tuple[Tensor, Tensor]:
    """The spline given its knots (see :func:`spline_params`): x (...) -> (y (...), logdet (...))."""
    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)
    knots = ch if inverse else cw
    # Bin index: number of interior knots <= x (in 0..K-1).
    idx = torch.searchsorted(knots[..., 1:-1].contiguous(), xc.unsqueeze(-1), right=True)
    # One gather for the 6 per-bin quantities.
    table = torch.stack([cw, ch, d], dim=-1)  # (..., K+1, 3)
    lo = table.gather(-2, idx.unsqueeze(-1).expand(*idx.shape, 3)).squeeze(-2)
    hi = table.gather(-2, (idx + 1).unsqueeze(-1).expand(*idx.shape, 3)).squeeze(-2)
    x0, y0, d0 = lo.unbind(-1)
    x1, y1, d1 = hi.unbind(-1)
    w = x1 - x0
    h = y1 - y0
    s = h / w
    dsum = d0 + d1 - 2 * s
    if not inverse:
        theta = ((xc - x0) / w).clamp(0.0, 1.0)
        t1 = theta * (1 - theta)
        den = s + dsum * t1
        y = y0 + h * (s * theta * theta + d0 * t1) / den
    else:
        dy = xc - y0
        a = h * (s - d0) + dy * dsum
        b = h * d0 - dy * dsum
        c = -s * dy
        disc = (b * b - 4 * a * c).clamp_min(0.0)
        theta = ((2 * c) / (-b - disc.sqrt())).clamp(0.0, 1.0)
        t1 = theta * (1 - theta)
        den = s + dsum * t1
        y = x0 + theta * w
    deriv = s * s * (d1 * theta * theta + 2 * s * t1 + d0 * (1 - theta) ** 2)
    logdet = torch.log(deriv) - 2 * torch.log(den)
    if inverse:
        logdet = -logdet
    y = torch.where(inside, y, x)
    logdet = torch.where(inside, logdet, torch.zeros_like(logdet))
    return y, logdet


def identity_spline_params(bins: int, min_derivative: float = DEFAULT_MIN_DERIVATIVE) -> Tensor:
    """Unnormalised parameters (3K-1,) = (widths, heights, derivatives) of the identity spline:
    equal bins and knot derivatives of exactly 1."""
    d = math.log(math.expm1(1 - min_derivative))
    return torch.cat([torch.zeros(2 * bins), torch.full((bins - 1,), d)])
