"""Flow models of la.flows: RealNVP, NSF, MAF, IAF — shapes, consistency, normalisation, accuracy
against zuko, bad input."""

from __future__ import annotations

import math

import pytest
import torch

import latentatlas as la
from latentatlas.datasets import moons
from latentatlas.flows import IAF, MAF, NSF, RealNVP, fit

MODELS = {
    "realnvp": lambda d, c: RealNVP(d, c, transforms=4, hidden=(16, 16)),
    "nsf": lambda d, c: NSF(d, c, transforms=3, hidden=(16, 16), bins=5),
    "maf": lambda d, c: MAF(d, c, transforms=3, hidden=(16, 16)),
    "maf-spline": lambda d, c: MAF(d, c, transforms=2, hidden=(16,), univariate="spline"),
    "iaf": lambda d, c: IAF(d, c, transforms=3, hidden=(16, 16)),
}


def _perturb(flow: torch.nn.Module, scale: float = 0.3) -> None:
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("features,context", [(1, 0), (1, 3), (2, 0), (2, 3), (3, 2)])
def test_sample_and_log_prob_are_consistent(name, features, context):
    torch.manual_seed(0)
    flow = MODELS[name](features, context)
    _perturb(flow)
    with torch.no_grad():
        if context:
            c = torch.randn(4, context)
            x, lp = flow.sample_and_log_prob(7, c)
            assert x.shape == (7, 4, features) and lp.shape == (7, 4)
            lp2 = flow.log_prob(x.reshape(28, features), c.repeat(7, 1))
            assert torch.allclose(lp2, lp.reshape(28), atol=1e-4)
        else:
            x, lp = flow.sample_and_log_prob(7)
            assert x.shape == (7, features) and lp.shape == (7,)
            assert torch.allclose(flow.log_prob(x), lp, atol=1e-4)
        z, ld = flow.forward(x.reshape(-1, features), c.repeat(7, 1) if context else None)
        assert torch.isfinite(z).all() and torch.isfinite(ld).all()


def _grid_mass(flow, lim=6.0, n=301, context=None):
    """Trapezoid rule for the integral of exp(log p) over [-lim, lim]^2 (h = 0.04)."""
    t = torch.linspace(-lim, lim, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(t, t, indexing="ij")
    pts = torch.stack([xx.ravel(), yy.ravel()], 1)
    with torch.no_grad():
        c = None if context is None else context.expand(pts.shape[0], -1)
        p = flow.double().log_prob(pts, c).exp().reshape(n, n)
    h = float(t[1] - t[0])
    return float(torch.trapezoid(torch.trapezoid(p, dx=h), dx=h))


@pytest.mark.parametrize("name", ["nsf", "realnvp", "maf"])
def test_trained_density_integrates_to_one(name):
    torch.manual_seed(0)
    flow = MODELS[name](2, 0)
    fit(flow, moons(2000, 0), steps=150, lr=3e-3, progress=False, val_fraction=0)
    # Grid h = 0.04 over [-6, 6]^2: after 150 steps the ridges are wider than the data's (0.06),
    # and the trapezoid error for smooth ridges of width >= 0.1 is far below 1e-3; the mass outside [-6, 6]^2 of a flow whose
    # tails are those of N(0, I) (identity tails, bounded scales) is ~1e-7.
    mass = _grid_mass(flow)
    assert abs(mass - 1.0) < 0.01


def test_conditional_density_integrates_to_one_for_every_context():
    torch.manual_seed(1)
    flow = NSF(2, context=2, transforms=2, hidden=(16,))
    _perturb(flow, 0.2)
    for c in (torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, -2.0]])):
        assert abs(_grid_mass(flow, context=c.double()) - 1.0) < 0.01
        flow.float()


def test_maf_and_iaf_from_the_same_weights_are_exact_inverses():
    torch.manual_seed(0)
    for context in (0, 2):
        maf = MAF(3, context, transforms=3, hidden=(16, 16)).double()
        _perturb(maf)
        iaf = IAF.from_maf(maf)
        x = torch.randn(10, 3, dtype=torch.float64)
        c = torch.randn(10, context, dtype=torch.float64) if context else None
        z, ld = maf.forward(x, c)
        x_back, ld_back = iaf.forward(z, c)
        assert torch.allclose(x_back, x, atol=1e-10) and torch.allclose(ld_back, -ld, atol=1e-10)
        # The IAF samples in one pass per layer what the MAF computes densities with.
        x2, ld2 = iaf.inverse(x, c)
        assert torch.allclose(x2, z, atol=1e-10) and torch.allclose(ld2, ld, atol=1e-10)
        # And the IAF's density is the pushforward: log q(z) = log N(x) + log|dx/dz|.
        lp = iaf.log_prob(z, c)
        expected = -0.5 * (x**2).sum(-1) - 1.5 * math.log(2 * math.pi) - ld
        assert torch.allclose(lp, expected, atol=1e-10)


def test_conditional_nsf_learns_a_gaussian_posterior_in_one_and_two_dimensions():
    # x | c ~ N(A c, 0.3^2 I): exact conditional NLL = d/2 log(2 pi e 0.09).
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    for d in (1, 2):
        c = torch.rand(6000, 3, generator=g) * 2 - 1
        a = torch.tensor([[1.0, -0.5, 0.2], [0.3, 0.8, -1.0]])[:d]
        x = c @ a.T + 0.3 * torch.randn(6000, d, generator=g)
        flow = NSF(d, context=3, transforms=2, hidden=(32,))
        fit(flow, x[:5000], c[:5000], steps=400, lr=5e-3, progress=False, val_fraction=0)
        with torch.no_grad():
            nll = -flow.log_prob(x[5000:], c[5000:]).mean().item()
        exact = 0.5 * d * math.log(2 * math.pi * math.e * 0.09)
        # Sampling error of the 1000-point test mean ~0.03 d^0.5; allow 0.06 nats per dim.
        assert nll - exact < 0.06 * d and nll - exact > -0.06 * d


# -- two moons against zuko ----------------------------------------------------------------------


def _train_same_budget(log_prob, params, x, steps, seed):
    """The same loop for both libraries: Adam lr 3e-3, cosine decay, batch 256, seeded batches."""
    opt = torch.optim.Adam(params, lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = x[torch.randint(x.shape[0], (256,), generator=gen)]
        loss = -log_prob(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["realnvp", "maf", "nsf"])
def test_two_moons_nll_matches_zuko(name):
    zuko = pytest.importorskip("zuko")
    x_train, x_test = moons(20000, 0), moons(10000, 1)
    ours_cls = {"realnvp": RealNVP, "maf": MAF, "nsf": NSF}[name]
    theirs_cls = {"realnvp": zuko.flows.RealNVP, "maf": zuko.flows.MAF, "nsf": zuko.flows.NSF}[name]
    transforms = 8 if name == "realnvp" else 5
    steps = 1500
    torch.manual_seed(0)
    ours = ours_cls(2, transforms=transforms, hidden=(64, 64))
    torch.manual_seed(0)
    theirs = theirs_cls(2, transforms=transforms, hidden_features=(64, 64))
    _train_same_budget(ours.log_prob, ours.parameters(), x_train, steps, 0)
    _train_same_budget(lambda v: theirs().log_prob(v), theirs.parameters(), x_train, steps, 0)
    with torch.no_grad():
        nll_ours = -ours.log_prob(x_test).mean().item()
        nll_theirs = -theirs().log_prob(x_test).mean().item()
    # The test-set mean has a standard error of ~0.01 nats; 0.05 is the tolerance.
    assert nll_ours < nll_theirs + 0.05, (nll_ours, nll_theirs)
    assert nll_ours < 1.35  # and both actually learned the moons (N(0, I) gives 2.84)


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [RealNVP, NSF, MAF, IAF])
@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"transforms": 0}, "transforms: expected a positive int, got 0"),
        ({"hidden": (0,)}, "hidden: expected a tuple of positive ints, got (0,)"),
        ({"hidden": (64, -1)}, "hidden: expected a tuple of positive ints"),
        ({"context": -1}, "context: expected an int >= 0, got -1"),
        ({"features": 0}, "features: expected a positive int, got 0"),
        ({"activation": "swish"}, "activation: expected one of"),
    ],
)
def test_bad_hyperparameters_name_the_argument(cls, kwargs, needle):
    args = {"features": 2, **kwargs}
    with pytest.raises(ValueError) as err:
        cls(**args)
    assert needle in str(err.value)


@pytest.mark.parametrize("cls", [NSF, MAF])
def test_bad_spline_hyperparameters(cls):
    extra = {"univariate": "spline"} if cls is MAF else {}
    with pytest.raises(ValueError, match=r"bins: expected a positive int, got 0"):
        cls(2, bins=0, **extra)
    with pytest.raises(ValueError, match=r"bound: expected a positive number, got -1.0"):
        cls(2, bound=-1.0, **extra)
    if cls is MAF:
        with pytest.raises(ValueError, match=r"univariate: expected 'affine' or 'spline'"):
            cls(2, univariate="cubic")


def test_wrong_shapes_and_non_finite_data_raise():
    flow = NSF(2, context=3, transforms=1, hidden=(8,))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 2\) \(features=2\), got \(5, 3\)"):
        flow.log_prob(torch.randn(5, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"context: expected shape \(B, 3\), got \(5, 2\)"):
        flow.log_prob(torch.randn(5, 2), torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"context: expected 5 rows to match x, got shape \(4, 3\)"):
        flow.log_prob(torch.randn(5, 2), torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"context: this flow needs a context"):
        flow.log_prob(torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"context: this flow is unconditional"):
        RealNVP(2).log_prob(torch.randn(5, 2), torch.randn(5, 1))
    x = torch.randn(50, 2)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"data: expected finite values, got 1 NaN/inf entries"):
        fit(flow, x, torch.randn(50, 3), steps=1, progress=False)
    c = torch.randn(50, 3)
    c[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"context: expected finite values, got 1 NaN/inf"):
        fit(flow, torch.randn(50, 2), c, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"data: expected shape \(B, 2\)"):
        fit(flow, torch.randn(50, 4), torch.randn(50, 3), steps=1, progress=False)


def test_flows_follow_dtype():
    flow = NSF(2, 1, transforms=2, hidden=(8,)).double()
    x = flow.sample(5, torch.zeros(1, 1, dtype=torch.float64))
    assert x.dtype == torch.float64 and x.shape == (5, 1, 2)
    assert la.flows.MAF(2).double().sample(3).dtype == torch.float64
