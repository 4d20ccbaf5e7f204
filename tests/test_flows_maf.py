"""MAF against an exact density (issue 11, MAF vs zuko).

The target is autoregressive, ``x0 ~ N(0, 1)``, ``x1 | x0 ~ N(x0^2 / 2 - 1/2, sigma^2)``, so one
affine MAF layer represents it exactly and its log-density is known in closed form: the test NLL
minus the exact NLL of the same test points estimates KL(p || q) >= 0 without sampling noise from
the entropy. Budget: 3 transforms, hidden (32, 32), 300 Adam steps (lr 3e-3, cosine), batch 256.

Measured (seeds 0, 1, 2; the same loop for zuko 1.6's MAF of the same size):
- sigma = 0.3:  ours 0.0010, 0.0018, 0.0016 nats; zuko 0.0021, 0.0021, 0.0042.
- sigma = 0.02 (needs a log-scale of 3.9 per layer, beyond the soft bound 3): ours 0.081, 0.071,
  0.061; zuko 0.037, 0.674, 0.051 (zuko's looser scale bound, ~6.9, diverges on seed 1; ours with
  ``scale_bound=6`` too: 0.34, 2.02, 0.022).
"""

from __future__ import annotations

import pytest
import torch

from latentatlas.flows import MAF


def _data(n: int, sigma: float, g: torch.Generator) -> torch.Tensor:
    x0 = torch.randn(n, generator=g)
    x1 = 0.5 * x0**2 - 0.5 + sigma * torch.randn(n, generator=g)
    return torch.stack([x0, x1], 1)


def _exact_log_prob(x: torch.Tensor, sigma: float) -> torch.Tensor:
    normal = torch.distributions.Normal
    return normal(0.0, 1.0).log_prob(x[:, 0]) + normal(0.5 * x[:, 0] ** 2 - 0.5, sigma).log_prob(
        x[:, 1]
    )


def _excess_nll(sigma: float, seed: int, steps: int = 300) -> float:
    g = torch.Generator().manual_seed(0)
    x_train, x_test = _data(20000, sigma, g), _data(5000, sigma, g)
    torch.manual_seed(seed)
    flow = MAF(2, transforms=3, hidden=(32, 32))
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = x_train[torch.randint(x_train.shape[0], (256,), generator=gen)]
        loss = -flow.log_prob(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        return float((_exact_log_prob(x_test, sigma) - flow.log_prob(x_test)).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_maf_reaches_an_exactly_representable_density(seed: int) -> None:
    # measured 0.0010-0.0018 (zuko: 0.0021-0.0042); 0.01 nats is 5x the worst seed
    assert -0.005 < _excess_nll(0.3, seed) < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_maf_on_a_thin_conditional_is_stable(seed: int) -> None:
    # measured 0.061-0.081 on seeds 0-2 (zuko: 0.037-0.674); the bound is 1.5x our worst seed and
    # would catch a divergence like zuko's seed 1
    assert -0.005 < _excess_nll(0.02, seed) < 0.12
