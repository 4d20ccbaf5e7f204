"""Transforms of la.flows: exact inverses and log-determinants against autograd Jacobians.

Everything runs in float64, where inverse round trips are exact to ~1e-15 and the autograd
Jacobian's slogdet agrees with the analytic log-determinant to ~1e-13; the 1e-9 / 1e-10
tolerances leave a wide margin while still catching any wrong term (a missing factor is O(1)).
"""

from __future__ import annotations

import math

import pytest
import torch

from latentatlas.flows.autoregressive import InverseTransform, MaskedAutoregressive
from latentatlas.flows.coupling import NSF, AffineCoupling, SplineCoupling
from latentatlas.flows.layers import ActNorm, LULinear, Permutation
from latentatlas.flows.nets import MADE, MLP
from latentatlas.flows.splines import rational_quadratic_spline, spline_params

FACTORIES = {
    "affine": lambda d, c: AffineCoupling(d, c, (16, 16)),
    "affine-flip": lambda d, c: AffineCoupling(d, c, (16, 16), flip=True),
    "spline": lambda d, c: SplineCoupling(d, c, (16, 16), bins=6, bound=2.0),
    "spline-flip": lambda d, c: SplineCoupling(d, c, (16, 16), flip=True, bins=6, bound=2.0),
    "made-affine": lambda d, c: MaskedAutoregressive(d, c, (16, 16)),
    "made-spline": lambda d, c: MaskedAutoregressive(
        d, c, (16, 16), order="reverse", univariate="spline", bins=5, bound=2.0
    ),
    "iaf": lambda d, c: InverseTransform(MaskedAutoregressive(d, c, (16, 16))),
    "actnorm": lambda d, c: ActNorm(d),
    "permutation": lambda d, c: Permutation(d, "random", seed=3),
    "lulinear": lambda d, c: LULinear(d, identity_init=False),
    "lulinear-exp": lambda d, c: LULinear(d, positive="exp", identity_init=False),
}


def _randomize(t: torch.nn.Module) -> None:
    """Move every parameter away from its (often trivial) initial value, reproducibly."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _jacobian_logdets(t, x, c):
    """log|det dz_b/dx_b| per row. Rows are mapped independently, so the Jacobian of the
    batch-summed output, d(sum_b z_b)/dx_b', holds every row's (D, D) block."""
    jac = torch.autograd.functional.jacobian(lambda v: t(v, c)[0].sum(0), x, vectorize=True)
    return torch.linalg.slogdet(jac.permute(1, 0, 2))[1]


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("features", [1, 3])
@pytest.mark.parametrize("context", [0, 2])
def test_inverse_and_logdet_match_autograd(name, features, context):
    torch.manual_seed(features * 10 + context)
    t = FACTORIES[name](features, context).double()
    x = 1.5 * torch.randn(6, features, dtype=torch.float64)  # some points beyond bound=2
    c = torch.randn(6, context, dtype=torch.float64) if context else None
    t(x, c)  # ActNorm's data-dependent initialisation happens here
    _randomize(t)
    z, ld = t(x, c)
    x_back, ld_inv = t.inverse(z, c)
    assert z.shape == x.shape and ld.shape == (6,)
    # Round-off is amplified by the inverse slope, which the randomised weights make as small as
    # ~1e-4 for splines: 1e-8 is still 8 orders below any real error.
    assert torch.allclose(x_back, x, atol=1e-8, rtol=0)
    assert torch.allclose(ld_inv, -ld, atol=1e-8, rtol=0)
    assert torch.allclose(ld, _jacobian_logdets(t, x, c), atol=1e-8, rtol=0)
    # The inverse direction's logdet is log|det| of the inverse map's Jacobian too.
    assert torch.allclose(ld_inv, _jacobian_logdets(InverseTransform(t), z, c), atol=1e-8, rtol=0)


def test_context_changes_the_map():
    torch.manual_seed(0)
    for t in (SplineCoupling(2, 3, (16,)), MaskedAutoregressive(2, 3, (16,)), AffineCoupling(1, 3)):
        _randomize(t)  # the output layers start at zero (identity transforms)
        x = torch.randn(5, t.features)
        z1, _ = t(x, torch.zeros(5, 3))
        z2, _ = t(x, torch.ones(5, 3))
        assert (z1 - z2).abs().max() > 1e-3


def test_made_is_autoregressive_in_its_order_and_sees_all_context():
    torch.manual_seed(0)
    order = (2, 0, 3, 1)
    made = MADE(4, context=2, hidden=(32, 32), out_per_feature=3, order=order).double()
    x = torch.randn(4, dtype=torch.float64)
    c = torch.randn(2, dtype=torch.float64)
    jac_x = torch.autograd.functional.jacobian(lambda v: made(v[None], c[None])[0], x)  # (4,3,4)
    jac_c = torch.autograd.functional.jacobian(lambda v: made(x[None], v[None])[0], c)
    rank = {f: r for r, f in enumerate(order)}
    for i in range(4):
        for j in range(4):
            dep = jac_x[i, :, j].abs().max()
            if rank[j] >= rank[i]:
                assert dep == 0.0  # exactly zero by construction of the masks
            else:
                assert dep > 0.0
        assert jac_c[i].abs().max() > 0.0
    assert "mask0" in made.state_dict()  # masks are buffers


def test_transforms_start_as_the_identity():
    torch.manual_seed(0)
    x = 3 * torch.randn(8, 3)
    for t in (SplineCoupling(3, 2, bins=5), MaskedAutoregressive(3, 2, univariate="spline"),
              MaskedAutoregressive(3, 2)):
        z, ld = t(x, torch.randn(8, 2))
        assert torch.allclose(z, x, atol=1e-5) and ld.abs().max() < 1e-5


def test_mlp_without_inputs_is_a_learned_constant():
    net = MLP(0, 5)
    out = net(torch.zeros(7, 0))
    assert out.shape == (7, 5) and torch.equal(out, torch.zeros(7, 5))
    assert sum(p.numel() for p in net.parameters()) == 5


# -- splines -----------------------------------------------------------------------------------


def _random_spline(bins=7, n=2000, seed=0, scale=2.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    w = scale * torch.randn(n, bins, generator=g, dtype=dtype)
    h = scale * torch.randn(n, bins, generator=g, dtype=dtype)
    d = scale * torch.randn(n, bins - 1, generator=g, dtype=dtype)
    return w, h, d


def test_spline_interpolates_knots_with_given_derivatives():
    w, h, d = _random_spline(n=50)
    cw, ch, dk = spline_params(w, h, d, bound=3.0)
    assert torch.allclose(cw[:, 0], torch.full((50,), -3.0, dtype=torch.float64))
    assert torch.equal(cw[:, -1], torch.full((50,), 3.0, dtype=torch.float64))
    assert torch.equal(dk[:, 0], torch.ones(50, dtype=torch.float64))
    for k in range(1, 7):  # interior knots: y(x_k) = y_k and dy/dx(x_k) = d_k
        y, ld = rational_quadratic_spline(cw[:, k], w, h, d, bound=3.0)
        assert torch.allclose(y, ch[:, k], atol=1e-12)
        assert torch.allclose(ld.exp(), dk[:, k], rtol=1e-9)


def test_spline_inverse_and_derivative_by_finite_differences():
    w, h, d = _random_spline()
    x = torch.empty(2000, dtype=torch.float64).uniform_(-6, 6)
    y, ld = rational_quadratic_spline(x, w, h, d, bound=4.0)
    x_back, ld_inv = rational_quadratic_spline(y, w, h, d, inverse=True, bound=4.0)
    # Backward error of the inverse: the round-trip error measured in y (times the slope) is at
    # machine precision even where the slope is ~1e-6 and the error in x is ~1e-10.
    assert ((x_back - x).abs() * ld.exp()).max() < 1e-13
    assert (x_back - x).abs().median() < 1e-14
    assert torch.allclose(ld_inv, -ld, atol=1e-9, rtol=0)
    eps = 1e-6  # central differences: error O(eps^2 * y''') << 1e-6
    y_plus, _ = rational_quadratic_spline(x + eps, w, h, d, bound=4.0)
    y_minus, _ = rational_quadratic_spline(x - eps, w, h, d, bound=4.0)
    fd = (y_plus - y_minus) / (2 * eps)
    inner = (x.abs() < 4.0 - 2 * eps)
    assert torch.allclose(ld.exp()[inner], fd[inner], rtol=1e-5, atol=1e-7)
    assert bool((y_plus > y_minus).all())  # increasing


def test_spline_tails_are_exact_identity():
    w, h, d = _random_spline(n=6)
    x = torch.tensor([-1e6, -1e3, -5.0001, 5.0001, 1e3, 1e6], dtype=torch.float64)
    for inverse in (False, True):
        y, ld = rational_quadratic_spline(x, w, h, d, inverse=inverse, bound=5.0)
        assert torch.equal(y, x) and torch.equal(ld, torch.zeros(6, dtype=torch.float64))
    # Continuity at the bound: slope 1 on both sides.
    edge = torch.full((6,), 5.0, dtype=torch.float64)
    _, ld = rational_quadratic_spline(edge - 1e-9, w, h, d, bound=5.0)
    assert torch.allclose(ld, torch.zeros(6, dtype=torch.float64), atol=1e-6)


def test_spline_inverse_is_stable_in_float32_for_extreme_bins():
    # Very uneven bins (logits up to +-20) and tiny derivatives: the stable root keeps the
    # float32 round trip at the level of float32 rounding times the local slope ratio.
    w, h, d = _random_spline(bins=8, n=4000, seed=2, scale=8.0, dtype=torch.float32)
    x = torch.empty(4000).uniform_(-3, 3)
    y, ld = rational_quadratic_spline(x, w, h, d, bound=3.0)
    x_back, _ = rational_quadratic_spline(y, w, h, d, inverse=True, bound=3.0)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    # Backward error (round-trip error times the slope, i.e. measured in y): median at float32
    # rounding of values of size ~3 (3.6e-7), worst case 1e-4 for bins with slopes down to e^-16
    # (measured: 5.8e-8 median, 3.6e-5 max). Errors in x itself are large where the slope is tiny,
    # which is conditioning, not instability.
    backward = (x_back - x).abs() * ld.exp()
    assert backward.median() < 3.6e-7 and backward.max() < 1e-4


@pytest.mark.parametrize("magnitude", [1e3, 1e6])
def test_spline_flows_are_finite_far_outside_the_bound(magnitude):
    torch.manual_seed(0)
    for context in (0, 2):
        flow = NSF(2, context=context, transforms=3, hidden=(16,))
        x = torch.tensor([[magnitude, -magnitude], [magnitude, 0.3], [-0.2, magnitude]])
        x.requires_grad_(True)
        c = torch.randn(3, context) if context else None
        lp = flow.log_prob(x, c)
        assert torch.isfinite(lp).all()
        lp.sum().backward()
        assert torch.isfinite(x.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in flow.parameters() if p.grad is not None)
        # Outside the bound every layer is the identity: log p = log N(x; 0, I) exactly when both
        # coordinates are out of range (layer inputs never re-enter [-5, 5]).
        expected = -0.5 * (x[0] ** 2).sum() - math.log(2 * math.pi)
        assert torch.isclose(lp[0], expected, rtol=1e-6)


def test_spline_coupling_logdet_is_zero_outside_the_bound():
    torch.manual_seed(0)
    layer = SplineCoupling(2, 0, (16,), bins=4, bound=1.0)
    x = torch.tensor([[0.3, 1.5], [0.3, -7.0], [-2.0, 1.0001]])
    z, ld = layer(x)
    assert torch.equal(z, x) and torch.equal(ld, torch.zeros(3))


# -- bad arguments: ValueError naming the argument, the expected and the received shape --------
def test_spline_with_unbatched_parameters_raises_value_error() -> None:
    x = torch.randn(5)
    w, h, d = torch.randn(8), torch.randn(8), torch.randn(7)  # (K,): not one set per element of x
    with pytest.raises(ValueError, match=r"widths: expected shape \(5, 8\).*got \(8,\)"):
        rational_quadratic_spline(x, w, h, d)
    with pytest.raises(ValueError, match=r"derivatives: expected shape \(5, 7\).*got \(5, 8\)"):
        rational_quadratic_spline(x, w.expand(5, 8), h.expand(5, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match=r"heights: expected shape \(5, 8\).*got \(5, 6\)"):
        rational_quadratic_spline(x, w.expand(5, 8), torch.randn(5, 6), d.expand(5, 7))
    # the expanded parameters are valid and give the same values as row-wise calls
    y, ld = rational_quadratic_spline(x, w.expand(5, 8), h.expand(5, 8), d.expand(5, 7))
    y1, ld1 = rational_quadratic_spline(x[:1], w[None], h[None], d[None])
    assert y.shape == ld.shape == (5,) and y[0] == y1[0] and ld[0] == ld1[0]


CONDITIONAL = ["affine", "affine-flip", "spline", "spline-flip", "made-affine", "made-spline", "iaf"]


@pytest.mark.parametrize("name", CONDITIONAL)
def test_transform_with_unbatched_context_raises_value_error(name: str) -> None:
    torch.manual_seed(0)
    t = FACTORIES[name](3, 2)
    x = torch.randn(4, 3)
    for call in (t.forward, t.inverse):
        with pytest.raises(ValueError, match=r"context: expected shape \(4, 2\).*got \(2,\)"):
            call(x, torch.randn(2))
        with pytest.raises(ValueError, match=r"context: expected shape \(4, 2\).*got \(3, 2\)"):
            call(x, torch.randn(3, 2))
        with pytest.raises(ValueError, match="context: expected a torch.Tensor"):
            call(x, None)
    with pytest.raises(ValueError, match=r"[xz]: expected shape \(B, 3\).*got \(4, 2\)"):
        t(torch.randn(4, 2), torch.randn(4, 2))
