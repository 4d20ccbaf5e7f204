"""FlowPosterior against the exact Gaussian posterior of a location family.

x ~ N(t, I_2), t on a 25 x 25 grid over [-3, 3]^2 (cell 0.25), trained with uniform jitter over the
cell, so the training prior on t is uniform on [-3.125, 3.125]^2. For a bundle of K = 4 samples with
mean x̄ well inside (test bundles from t in [-0.5, 0.5]^2, so the box edge is > 4 posterior stds
away), the posterior is N(x̄, I/K) convolved with the cell jitter: mean x̄, std
sqrt(1/K + cell^2/12) = 0.505 per axis.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.reference_posteriors import log_mean_posteriors

import latentatlas as la
from latentatlas.posterior import bundles as B

G, S, K = 25, 64, 4
AXIS = np.linspace(-3.0, 3.0, G)
STD = np.sqrt(1.0 / K + (AXIS[1] - AXIS[0]) ** 2 / 12)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    params = B.grid_params(AXIS, AXIS)
    rng = np.random.default_rng(0)
    x = (params[:, None, :] + rng.standard_normal((len(params), S, 2))).astype(np.float32)
    model = la.posterior.FlowPosterior((2,), dim=2, embed=16, flow="nsf",
                                       flow_options={"transforms": 2, "hidden": (32, 32)})
    fitted = model.fit(x, AXIS, AXIS, bundle=K, steps=600, batch_size=128, lr=2e-3,
                       progress=False, seed=0)
    assert fitted is model  # fit returns self, the History is in history_
    return model, x, model.history_


def _test_bundles(n: int = 200) -> np.ndarray:
    rng = np.random.default_rng(1)
    t = rng.uniform(-0.5, 0.5, (n, 2))
    return (t[:, None, :] + rng.standard_normal((n, K, 2))).astype(np.float32)


@pytest.mark.slow
def test_posterior_mean_and_std(trained):
    model, _, history = trained
    assert np.isfinite(history.best_val)
    xb = _test_bundles()
    t = model.sample_posterior(xb, 2000, seed=0)  # (200, 2000, 2)
    assert t.shape == (200, 2000, 2) and t.dtype == np.float64
    xbar = xb.astype(np.float64).mean(1)
    # Monte-Carlo error of a mean from 2000 draws is 0.5 / sqrt(2000) = 0.011; RMS error of the
    # posterior mean below 0.1 = 0.2 posterior stds (measured ~0.035).
    err = np.sqrt(((t.mean(1) - xbar) ** 2).mean())
    assert err < 0.1, err
    # std per axis, averaged over bundles, within 10 % of 0.505 (measured 2-5 %)
    std = t.std(1)
    np.testing.assert_allclose(std.mean(0), STD, rtol=0.1)
    assert np.sqrt(((std - STD) ** 2).mean()) < 0.1
    # posterior_mean is the same Monte-Carlo mean (same batch, same seed -> same draws)
    np.testing.assert_allclose(model.posterior_mean(xb, n=2000, seed=0), t.mean(1), atol=1e-6)
    # same seed -> same draws; the global RNG is untouched
    state = torch.get_rng_state()
    np.testing.assert_array_equal(model.sample_posterior(xb[:3], 10, seed=4),
                                  model.sample_posterior(xb[:3], 10, seed=4))
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.slow
def test_grid_maps_and_save_load(trained, tmp_path):
    model, x, _ = trained
    pts = np.array([12 * G + 12, 11 * G + 13, 13 * G + 11])  # interior points
    post = model.posteriors(x[pts], bundle=K, repeats=4, seed=2, progress=False,
                            average="probability")
    assert post.shape == (3, G, G)
    np.testing.assert_allclose(post.sum((1, 2)), 1.0, atol=1e-12)
    # exact grid posterior of the same bundles: ∝ exp(-K/2 ||x̄ - t_j||^2); JSD below 0.02 nats
    # (a 10 % width error alone gives ~0.005, a 0.1 offset ~0.005 with std 0.5)
    params = B.grid_params(AXIS, AXIS)
    for row, p in enumerate(pts):
        idx = B.choose_distinct(np.random.default_rng([2, row]), 4, S, K)
        xbar = x[p][idx].astype(np.float64).mean(1)  # (4, 2)
        lp = -0.5 * K * ((xbar[:, None] - params[None]) ** 2).sum(-1)
        ex = np.exp(lp - lp.max(1, keepdims=True))
        ex = (ex / ex.sum(1, keepdims=True)).mean(0).reshape(G, G)
        m = 0.5 * (ex + post[row])
        jsd = 0.5 * (np.sum(ex * np.log(ex / m + 1e-300)) + np.sum(post[row] * np.log(post[row] / m)))
        assert jsd < 0.02, jsd
    # explicit axes: the fitted grid gives the same maps; another grid gives maps of its shape
    again = model.posteriors(x[pts], AXIS, AXIS, bundle=K, repeats=4, seed=2, progress=False,
                             average="probability")
    np.testing.assert_allclose(again, post, atol=1e-12)
    coarse = model.posteriors(x[pts], AXIS[::2], AXIS[::3], bundle=K, repeats=4, seed=2,
                              progress=False)
    assert coarse.shape == (3, 13, 9)
    assert model.axis0.shape == (G,)  # the fitted grid is restored
    same = la.load(la.save(model, tmp_path / "flow.safetensors"))
    xb = _test_bundles(8)
    torch.testing.assert_close(same.log_prob(np.zeros((8, 2)), xb),
                               model.log_prob(np.zeros((8, 2)), xb), atol=1e-6, rtol=0)
    np.testing.assert_allclose(same.posteriors(x[pts], bundle=K, repeats=4, seed=2, progress=False,
                                               average="probability"), post, atol=1e-6)



@pytest.mark.slow
def test_posteriors_log_mean_is_the_atlas_average(trained):
    model, x, _ = trained
    pts = x[[12 * G + 12, 3 * G + 20]]
    log = model.posteriors(pts, bundle=K, repeats=3, seed=4, progress=False)
    assert np.array_equal(log, log_mean_posteriors(model, pts, K, 3, 4, progress=False))
    again = model.posteriors(pts, AXIS, AXIS, bundle=K, repeats=3, seed=4, progress=False)
    np.testing.assert_allclose(again, log, atol=1e-12)

def test_one_dimensional_params_and_bad_inputs(tmp_path):
    # d = 1 on scattered points: x ~ N(t, 1); a few steps, shapes and the save round trip
    t = np.linspace(-1, 1, 11)[:, None]
    x = (t[:, None, :] + np.random.default_rng(0).standard_normal((11, 8, 1))).astype(np.float32)
    model = la.posterior.FlowPosterior((1,), dim=1, embed=4,
                                       flow_options={"transforms": 1, "hidden": (8,)})
    model.fit(x, params=t, spacing=[0.2], bundle=2, neighbours=3, steps=5, batch_size=16,
              progress=False)
    assert model.sample_posterior(x[:3, :2], 7).shape == (3, 7, 1)
    same = la.load(la.save(model, tmp_path / "f1.safetensors"))
    # the other flows of la.flows plug in the same way (d = 2 here; log_prob shapes)
    for name in ("maf", "realnvp"):
        other = la.posterior.FlowPosterior((3,), dim=2, embed=4, flow=name,
                                           flow_options={"transforms": 2, "hidden": (8,)})
        assert other.log_prob(np.zeros((5, 2)), np.zeros((5, 2, 3), np.float32)).shape == (5,)
    np.testing.assert_allclose(same.sample_posterior(x[:3, :2], 7), model.sample_posterior(x[:3, :2], 7))
    with pytest.raises(ValueError, match="2-D grid"):
        model.posteriors(x, bundle=2, progress=False)
    with pytest.raises(ValueError, match="params"):
        model.fit(x, params=np.zeros((11, 2)), steps=1, progress=False)
    with pytest.raises(ValueError, match="dim=2"):
        model.fit(x, [0, 1, 2], [0, 1], steps=1, progress=False)
    with pytest.raises(ValueError, match="bundle"):
        model.fit(x, params=t, bundle=9, steps=1, progress=False)
    with pytest.raises(ValueError, match="grid mismatch"):
        model.fit(x[:-1], params=t, steps=1, progress=False)
    with pytest.raises(ValueError, match="flow"):
        la.posterior.FlowPosterior((1,), dim=1, flow="glow")
    with pytest.raises(ValueError, match="flow"):
        la.posterior.FlowPosterior((1,), dim=2, embed=4, flow=la.flows.NSF(2, context=5))
    with pytest.raises(ValueError, match="sigma"):
        model.fit(x, params=t, spacing=[0.2], sigma=-1.0, steps=1, progress=False)
    with pytest.raises(ValueError, match="sigma"):
        model.fit(x, params=t, sigma=1.0, steps=1, progress=False)
    with pytest.raises(ValueError, match="dim=2"):
        model.posteriors(x, [0.0, 1.0], [0.0, 1.0], bundle=2, progress=False)
    with pytest.raises(ValueError, match="t:"):
        model.log_prob(np.zeros((3, 2)), x[:3, :2])
    with pytest.raises(ValueError, match="bundles"):
        model.sample_posterior(np.zeros((3, 2, 5)), 2)


