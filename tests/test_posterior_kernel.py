"""KernelPosterior against its closed form for Gaussian features (E = identity on vectors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.reference_posteriors import log_mean_posteriors

import latentatlas as la
from latentatlas.posterior import bundles as B

AXIS0, AXIS1 = np.linspace(-1.0, 1.0, 9), np.linspace(-0.5, 1.5, 7)
PARAMS = B.grid_params(AXIS0, AXIS1)


def _closed_form(x: np.ndarray, refs: np.ndarray, tau: float) -> np.ndarray:
    """p_j ∝ exp(-Σ_i ||x_i - r_j||^2 / (2 tau^2)), direct differences in float64. x (B, K, F)."""
    d2 = ((x[:, :, None, :] - refs[None, None]) ** 2).sum((-1, 1))
    lp = -d2 / (2 * tau**2)
    p = np.exp(lp - lp.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).reshape(-1, len(AXIS0), len(AXIS1))


def test_exact_references_give_bayes_posterior():
    # one reference per point, exactly at t_j, tau = 1: the Bayes posterior of x ~ N(t, I)
    refs = PARAMS[:, None, :].copy()
    model = la.posterior.KernelPosterior(lambda x: x, tau=1.0).fit(refs, AXIS0, AXIS1,
                                                                   progress=False)
    rng = np.random.default_rng(0)
    x = PARAMS[rng.integers(0, len(PARAMS), 50)][:, None] + rng.standard_normal((50, 5, 2))
    got = model.predict(x)
    np.testing.assert_allclose(got, _closed_form(x, PARAMS, 1.0), rtol=0, atol=1e-10)
    # the posterior mean is the grid average of that closed form
    ref = _closed_form(x, PARAMS, 1.0)
    np.testing.assert_allclose(model.posterior_mean(x)[:, 0], np.einsum("bij,i->b", ref, AXIS0),
                               atol=1e-10)


def test_averaged_references_and_median_tau():
    rng = np.random.default_rng(1)
    r = 50
    refs = PARAMS[:, None, :] + 0.7 * rng.standard_normal((len(PARAMS), r, 2))
    model = la.posterior.KernelPosterior(lambda x: x, mode="mean").fit(refs, AXIS0, AXIS1,
                                                                      progress=False)
    # tau^2 = median of within-point variances: chi^2_98 / 98 has median ~0.993 and a median of 63
    # such has relative spread ~0.02, so tau = 0.7 within 5 %.
    assert abs(float(model.tau) - 0.7) < 0.05 * 0.7
    x = refs[[3, 40, 62], :4]
    means = refs.mean(1)
    np.testing.assert_allclose(model.predict(x), _closed_form(x, means, float(model.tau)),
                               rtol=0, atol=1e-10)
    # keep all references: log-mean-exp over the R references of each point
    keep = la.posterior.KernelPosterior(lambda x: x, tau=0.7, average=False, mode="mean").fit(
        refs, AXIS0, AXIS1, progress=False)
    d2 = ((x.mean(1)[:, None, None, :] - refs[None]) ** 2).sum(-1)  # (B, P, R)
    lp = np.log(np.exp(-4 * d2 / (2 * 0.7**2)).mean(-1))
    p = np.exp(lp - lp.max(1, keepdims=True))
    p = (p / p.sum(1, keepdims=True)).reshape(-1, 9, 7)
    np.testing.assert_allclose(keep.predict(x), p, rtol=0, atol=1e-10)


def test_single_reference_tau_is_neighbour_distance():
    model = la.posterior.KernelPosterior(lambda x: 3.0 * x).fit(PARAMS[:, None], AXIS0, AXIS1,
                                                                progress=False)
    # adjacent embeddings differ by 3 * 0.25 (axis0) or 3 * 0.333 (axis1); 56 + 54 pairs
    assert float(model.tau) == pytest.approx(0.75)


def test_posteriors_map_and_save(tmp_path):
    rng = np.random.default_rng(2)
    samples = PARAMS[:, None, :] + rng.standard_normal((len(PARAMS), 6, 2))
    model = la.posterior.KernelPosterior(lambda x: x, tau=1.0).fit(PARAMS[:, None], AXIS0, AXIS1,
                                                                   progress=False)
    post = model.posteriors(samples, bundle=3, repeats=4, seed=0, progress=False,
                            average="probability")
    assert post.shape == (len(PARAMS), 9, 7)
    # the same bundles, by hand
    p = 10
    idx = B.choose_distinct(np.random.default_rng([0, p]), 4, 6, 3)
    np.testing.assert_allclose(post[p], _closed_form(samples[p][idx], PARAMS, 1.0).mean(0),
                               atol=1e-10)
    # a plain function cannot be saved: io's clear error
    with pytest.raises(ValueError, match="cannot"):
        la.save(model, tmp_path / "k.safetensors")


def test_save_load_with_module_features(tmp_path):
    feats = la.posterior.MLPEncoder((2,), embed=3, hidden=4, depth=1)
    model = la.posterior.KernelPosterior(feats).fit(PARAMS[:, None], AXIS0, AXIS1, progress=False)
    same = la.load(la.save(model, tmp_path / "k.safetensors"))
    x = np.random.default_rng(0).standard_normal((5, 2, 2))
    np.testing.assert_allclose(same.predict(x), model.predict(x), atol=1e-12)
    assert float(same.tau) == float(model.tau)


def test_bad_inputs():
    with pytest.raises(ValueError, match="tau"):
        la.posterior.KernelPosterior(lambda x: x, tau=-1.0)
    with pytest.raises(ValueError, match="features"):
        la.posterior.KernelPosterior(3)
    model = la.posterior.KernelPosterior(lambda x: x, tau=1.0)
    with pytest.raises(ValueError, match="fit"):
        model.predict(np.zeros((1, 1, 2)))
    with pytest.raises(ValueError, match="grid mismatch"):
        model.fit(PARAMS[:-1, None], AXIS0, AXIS1, progress=False)
    model.fit(PARAMS[:, None], AXIS0, AXIS1, progress=False)
    with pytest.raises(ValueError, match="bundles"):
        model.predict(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="bundle"):
        model.posteriors(PARAMS[:, None], bundle=2, progress=False)
    with pytest.raises(ValueError, match="features"):
        la.posterior.KernelPosterior(lambda x: x.sum(-1), tau=1.0).fit(
            PARAMS[:, None], AXIS0, AXIS1, progress=False)
    with pytest.raises(ValueError, match="bundles"):
        model.predict(torch.full((2, 1, 2), float("nan")))


def test_posteriors_log_mean_matches_closed_form_and_atlas():
    rng = np.random.default_rng(5)
    samples = PARAMS[:, None, :] + rng.standard_normal((len(PARAMS), 6, 2))
    model = la.posterior.KernelPosterior(lambda x: x, tau=1.0).fit(PARAMS[:, None], AXIS0, AXIS1,
                                                                   progress=False)
    post = model.posteriors(samples, bundle=3, repeats=4, seed=1, progress=False)
    # normalised geometric mean of the closed-form posteriors of the same bundles
    p = 17
    idx = B.choose_distinct(np.random.default_rng([1, p]), 4, 6, 3)
    geo = np.exp(np.log(_closed_form(samples[p][idx], PARAMS, 1.0)).mean(0))
    np.testing.assert_allclose(post[p], geo / geo.sum(), atol=1e-10)
    assert np.array_equal(post, log_mean_posteriors(model, samples, 3, 4, 1, progress=False))




# -- "distribution" mode: random sources -----------------------------------------------------------


def _normal_quantiles(r: int) -> np.ndarray:
    """Stratified standard-normal points z_r = Phi^-1((r + 1/2) / R), standardised to mean 0 and
    variance 1 (symmetric, so every odd moment is 0; the 4th moment is 2.991 for R = 4000)."""
    from statistics import NormalDist

    z = np.array([NormalDist().inv_cdf((i + 0.5) / r) for i in range(r)])
    return (z - z.mean()) / z.std()


def test_distribution_mode_posterior_curvature_is_k_times_the_fisher_metric():
    # References x = mu + s z_r at every point of a tiny grid around t' = (mu', s') in (mu, s)
    # coordinates (common z_r: the references' moments are smooth in t). The bundle {mu' - s',
    # mu' + s'} has exactly the population mean of phi = (x, x^2) at t'. Then -log p(t_j | bundle)
    # = (K/2) d_j^T Lambda_j d_j + 1/2 log det Sigma_j, whose Hessian in t at t' is
    # K J^T Sigma^-1 J (for phi = the sufficient statistics, K times the Fisher metric
    # diag(1/s^2, 2/s^2)) plus that of the normalisation: det Sigma_j = (m4 - 1) s^6 exactly for
    # these references, so 1/2 log det Sigma = 3 log s + const adds -3/s^2 to the ss entry. Error
    # budget: the 4th
    # moment of the z_r (2.991 vs 3: -0.45 % on g_ss), the unbiased-precision factor (R-4)/R
    # (-0.1 %) and the O(h^2) finite-difference error (h = 1e-3: < 1e-5); tolerance 1 %.
    z = _normal_quantiles(4000)
    h, mu0, s0, k = 1e-3, 0.3, 0.8, 2
    a0, a1 = mu0 + h * np.arange(-2, 3), s0 + h * np.arange(-2, 3)
    params = B.grid_params(a0, a1)
    refs = params[:, None, 0:1] + params[:, None, 1:2] * z[None, :, None]  # (25, R, 1)
    model = la.posterior.KernelPosterior(lambda x: x).fit(refs, a0, a1, progress=False)
    assert int(model.mode_) == 1 and float(model.tau) == 1.0  # auto: a random source, calibrated
    bundle = np.array([[[mu0 - s0], [mu0 + s0]]])
    lp = model.log_posterior(torch.as_tensor(bundle))[0].numpy().reshape(5, 5)
    hess = np.empty((2, 2))
    hess[0, 0] = -(lp[3, 2] - 2 * lp[2, 2] + lp[1, 2]) / h**2
    hess[1, 1] = -(lp[2, 3] - 2 * lp[2, 2] + lp[2, 1]) / h**2
    hess[0, 1] = -(lp[3, 3] - lp[3, 1] - lp[1, 3] + lp[1, 1]) / (4 * h**2)
    fisher = np.diag([1 / s0**2, 2 / s0**2])
    normalisation = np.array([0.0, -3 / s0**2])
    np.testing.assert_allclose((hess[[0, 1], [0, 1]] - normalisation) / k, np.diag(fisher),
                               rtol=0.01)
    assert abs(hess[0, 1] / k) < 0.01 * fisher[0, 0]
    # the mean mode sees only the mean: the sigma-curvature vanishes
    mean = la.posterior.KernelPosterior(lambda x: x, mode="mean").fit(refs, a0, a1,
                                                                      progress=False)
    lm = mean.log_posterior(torch.as_tensor(bundle))[0].numpy().reshape(5, 5)
    assert abs(lm[2, 3] - 2 * lm[2, 2] + lm[2, 1]) / h**2 < 1e-6 * fisher[1, 1]


def test_distribution_mode_matches_its_closed_form():
    rng = np.random.default_rng(3)
    refs = PARAMS[:, None, :] + (0.5 + 0.2 * PARAMS[:, None, 1:]) * rng.standard_normal(
        (len(PARAMS), 40, 2))
    model = la.posterior.KernelPosterior(lambda x: x, tau=0.8).fit(refs, AXIS0, AXIS1,
                                                                   progress=False)
    assert int(model.mode_) == 1
    phi = np.concatenate([refs, refs**2], -1)  # (P, R, 4)
    mu = phi.mean(1)
    cov = np.einsum("prf,prg->pfg", phi - mu[:, None], phi - mu[:, None]) / 39
    ridge = 1e-9 * np.diagonal(cov, axis1=1, axis2=2).mean() * np.eye(4)  # the documented ridge
    prec = np.linalg.inv(cov + ridge) * (40 - 4 - 2) / 39
    x = refs[[3, 40, 62], :5]
    pb = np.concatenate([x, x**2], -1).mean(1)  # (B, 4)
    d = pb[:, None] - mu[None]
    lp = (-5 / (2 * 0.8**2) * np.einsum("bpf,pfg,bpg->bp", d, prec, d)
          + 0.5 * np.linalg.slogdet(prec)[1][None])  # the Gaussian normalisation of point j
    p = np.exp(lp - lp.max(1, keepdims=True))
    p = (p / p.sum(1, keepdims=True)).reshape(-1, 9, 7)
    np.testing.assert_allclose(model.predict(x), p, rtol=1e-7, atol=1e-12)
    with pytest.raises(ValueError, match="mode"):
        la.posterior.KernelPosterior(lambda x: x, mode="mmd")
    with pytest.raises(ValueError, match="R = 5"):
        la.posterior.KernelPosterior(lambda x: x, mode="distribution").fit(
            refs[:, :5], AXIS0, AXIS1, progress=False)
