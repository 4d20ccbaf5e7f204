"""``flow.distribution(context)``: a flow at a fixed context as a torch Distribution (zuko's
``flow(c)``), checked against exact densities and the flow's own methods."""

from __future__ import annotations

import pytest
import torch

from latentatlas.flows import MAF, NSF, RealNVP


def test_identity_flow_is_the_standard_normal() -> None:
    torch.manual_seed(0)
    flow = NSF(2, transforms=2, hidden=(8,))  # spline couplings start as the exact identity
    dist = flow.distribution()
    assert isinstance(dist, torch.distributions.Distribution)
    assert dist.batch_shape == () and dist.event_shape == (2,)
    x = torch.randn(3, 5, 2)
    exact = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2)).log_prob(x)
    assert torch.allclose(dist.log_prob(x), exact, atol=1e-6)
    assert dist.sample().shape == (2,) and dist.sample((4, 3)).shape == (4, 3, 2)


def test_conditional_distribution_matches_the_flow() -> None:
    torch.manual_seed(1)
    flow = MAF(2, context=3, transforms=2, hidden=(16,))
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    c = torch.randn(4, 3)
    dist = flow.distribution(c)
    assert dist.batch_shape == (4,) and dist.event_shape == (2,)
    x, lp = dist.rsample_and_log_prob((5,))
    assert x.shape == (5, 4, 2) and lp.shape == (5, 4)
    assert torch.allclose(dist.log_prob(x), lp, atol=1e-5)
    for j in range(4):
        assert torch.allclose(lp[:, j], flow.log_prob(x[:, j], c[j].expand(5, 3)), atol=1e-5)
    # one (C,) context: batch shape ()
    single = flow.distribution(c[0])
    y = single.sample((6,))
    assert y.shape == (6, 2) and not y.requires_grad
    assert torch.allclose(single.log_prob(y), flow.log_prob(y, c[0].expand(6, 3)), atol=1e-6)


def test_rsample_is_differentiable() -> None:
    torch.manual_seed(2)
    flow = RealNVP(2, context=1, transforms=2, hidden=(8,))
    c = torch.randn(1, requires_grad=True)
    x = flow.distribution(c).rsample((16,))
    x.square().mean().backward()
    assert c.grad is not None and torch.isfinite(c.grad).all()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in flow.parameters())


def test_bad_context_and_value_raise_value_error() -> None:
    flow = MAF(2, context=3, transforms=1, hidden=(8,))
    with pytest.raises(ValueError, match=r"context: expected shape \(3,\) or \(B, 3\), got \(2,\)"):
        flow.distribution(torch.randn(2))
    with pytest.raises(ValueError, match="context"):
        MAF(2, transforms=1).distribution(torch.randn(3))
    with pytest.raises(ValueError, match=r"value: expected shape \(\*S, 4, 2\), got \(5, 3, 2\)"):
        flow.distribution(torch.randn(4, 3)).log_prob(torch.randn(5, 3, 2))
