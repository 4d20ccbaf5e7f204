"""Flow matching against exact answers and an independent density estimator (NSF).

- ``ot_pairing`` equals the brute-force optimal permutation.
- On Gaussian data the flow-matching CNF's exact log-density approaches the true Gaussian one.
- On two moons its exact-trace test NLL is within 0.1 nats of an NSF trained on the same data.
- OT coupling gives straighter paths (lower path energy, no more dopri5 evaluations).
"""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

import latentatlas as la
from latentatlas.flows.matching import ot_pairing


def test_ot_pairing_is_optimal() -> None:
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(6, 2, generator=gen), torch.randn(6, 2, generator=gen)
    cost = torch.cdist(x0.double(), x1.double()).pow(2)
    best = min(
        itertools.permutations(range(6)), key=lambda p: float(cost[range(6), list(p)].sum())
    )
    perm = ot_pairing(x0, x1)
    assert perm.tolist() == list(best)
    # with an infinite context weight rows are matched only within identical contexts
    ctx = torch.tensor([[0.0], [1.0], [0.0], [1.0], [0.0], [1.0]])
    perm = ot_pairing(x0, x1, ctx)
    assert torch.equal(ctx[perm], ctx)
    assert sorted(perm.tolist()) == list(range(6))


def _gauss_data(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    mean, scale = torch.tensor([1.0, -0.5]), torch.tensor([0.5, 1.5])
    return mean + scale * torch.randn(n, 2, generator=gen), torch.stack([mean, scale])


def test_gaussian_target_log_prob_close_to_truth() -> None:
    """KL(p || q) = E_p[log p - log q] estimated on test samples is small (exact trace)."""
    gen = torch.Generator().manual_seed(1)
    data, (mean, scale) = _gauss_data(4000, gen)
    fm = la.flows.FlowMatching(2, hidden=(64, 64))
    fm.fit(data, steps=600, lr=3e-3, progress=False, val_every=100)
    test, _ = _gauss_data(1000, gen)
    with torch.no_grad():
        lq = fm.log_prob(test)
    lp = torch.distributions.Normal(mean, scale).log_prob(test).sum(-1)
    kl = float((lp - lq).mean())
    se = float((lp - lq).std()) / math.sqrt(1000)
    # A perfect model has KL = 0; a N(0, I) base alone would have KL ~ 1.3 nats.
    assert -3 * se < kl < 0.05 + 3 * se, (kl, se)


def test_conditional_ot_flow_matching() -> None:
    """Two discrete contexts with different Gaussian targets: conditional densities are right."""
    gen = torch.Generator().manual_seed(2)
    n = 4000
    c = torch.randint(2, (n, 1), generator=gen).float()
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])
    x = means[c[:, 0].long()] + 0.5 * torch.randn(n, 2, generator=gen)
    fm = la.flows.FlowMatching(2, context=1, hidden=(64, 64), coupling="ot")
    fm.fit(x, c, steps=600, batch_size=128, lr=3e-3, progress=False)
    torch.manual_seed(3)
    s = fm.sample(2000, torch.tensor([[0.0], [1.0]]))
    assert s.shape == (2000, 2, 2)
    # the mean of 2000 samples of N(m, 0.25 I) has SE 0.011; allow model error 0.1
    assert torch.allclose(s.mean(0), means, atol=0.1)
    test_c = torch.tensor([[0.0]] * 500 + [[1.0]] * 500)
    test_x = means[test_c[:, 0].long()] + 0.5 * torch.randn(1000, 2, generator=gen)
    with torch.no_grad():
        lq = fm.log_prob(test_x, test_c)
    lp = torch.distributions.Normal(means[test_c[:, 0].long()], 0.5).log_prob(test_x).sum(-1)
    assert float((lp - lq).mean()) < 0.08


def _moons(n: int, seed: int) -> torch.Tensor:
    from sklearn.datasets import make_moons

    x, _ = make_moons(n, noise=0.05, random_state=seed)
    return torch.as_tensor(x, dtype=torch.float32)


@pytest.mark.slow
def test_moons_nll_close_to_nsf() -> None:
    """Exact-trace test NLL of flow matching within 0.1 nats of an NSF, same data, same steps."""
    train, test = _moons(4000, 0), _moons(1000, 1)
    mu, sd = train.mean(0), train.std(0)
    train, test = (train - mu) / sd, (test - mu) / sd
    steps = 2000
    torch.manual_seed(0)
    nsf = la.flows.NSF(2)
    la.flows.fit(nsf, train, steps=steps, lr=1e-3, progress=False, patience=None)
    torch.manual_seed(0)
    fm = la.flows.FlowMatching(2, coupling="ot")
    fm.fit(train, steps=steps, lr=1e-2, progress=False, patience=None)
    with torch.no_grad():
        nll_nsf = -float(nsf.log_prob(test).mean())
        nll_fm = -float(fm.log_prob(test).mean())
    # Both far below a Gaussian fit (log(2 pi) + 1 + log|corr| ~ 2.8 nats); the true density
    # is ~ -0.6 nats, neither model reaches it with this budget. Measured (1 thread): flow
    # matching 1.287, NSF 1.222. Seed-to-seed spread of the flow-matching NLL is ~0.05-0.1.
    print(f"two moons test NLL: flow matching (OT) {nll_fm:.3f}, NSF {nll_nsf:.3f}")
    assert nll_nsf < 2.0
    assert nll_fm < nll_nsf + 0.1, (nll_fm, nll_nsf)


@pytest.mark.slow
def test_ot_coupling_gives_straighter_paths() -> None:
    train = _moons(4000, 0)
    train = (train - train.mean(0)) / train.std(0)
    diag = {}
    for coupling in ("independent", "ot"):
        torch.manual_seed(0)
        fm = la.flows.FlowMatching(2, hidden=(64, 64), coupling=coupling)
        fm.fit(train, steps=800, batch_size=128, lr=3e-3, progress=False, patience=None)
        diag[coupling] = fm.path_energy(2000, generator=torch.Generator().manual_seed(0))
    ind, ot = diag["independent"], diag["ot"]
    print("path diagnostics:", diag)
    # straightness = E int ||v||^2 dt - E ||x1 - x0||^2 >= 0 (0 for straight, constant speed)
    assert 0 <= ot["straightness"] < 0.25 * ind["straightness"], diag
    assert ot["energy"] < ind["energy"], diag
    assert ot["nfe"] <= ind["nfe"], diag


def test_save_load_and_bad_input(tmp_path) -> None:
    torch.manual_seed(4)
    fm = la.flows.FlowMatching(2, context=1, hidden=(16, 16), coupling="ot", sigma=0.01)
    fm.fit(torch.randn(300, 2), torch.randn(300, 1), steps=20, progress=False)
    x, c = torch.randn(8, 2), torch.randn(8, 1)
    back = la.load(la.save(fm, tmp_path / "fm.safetensors")).eval()
    assert type(back) is la.flows.FlowMatching and json.dumps(back.config) == json.dumps(fm.config)
    assert torch.equal(back.log_prob(x, c), fm.log_prob(x, c))
    assert torch.equal(back.velocity(x, 0.5, c), fm.velocity(x, 0.5, c))

    with pytest.raises(ValueError, match="sigma"):
        la.flows.FlowMatching(2, sigma=-0.1)
    with pytest.raises(ValueError, match="coupling"):
        la.flows.FlowMatching(2, coupling="sinkhorn")
    with pytest.raises(ValueError, match="data"):
        fm.fit(torch.randn(10, 3), torch.randn(10, 1), steps=1, progress=False)
    with pytest.raises(ValueError, match="context"):
        fm.fit(torch.randn(10, 2), None, steps=1, progress=False)
    with pytest.raises(ValueError, match="context"):
        fm.log_prob(x, torch.randn(8, 3))
    with pytest.raises(ValueError, match="x"):
        fm.velocity(torch.randn(8, 5), 0.5, c)
