"""GridPosterior against the exact Bayes posterior of a Gaussian location family.

x ~ N(t, I_2) at the points t of a 12 x 12 grid over [-1, 1]^2 (cell 0.18). For a bundle of K = 4
samples from one point, the exact posterior with a flat prior on the grid is
p(t_j | x_1..x_K) ∝ exp(-Σ_i ||x_i - t_j||^2 / 2): std 1/sqrt(K) = 0.5 = 2.75 cells, so a few cells
wide. Training against bumps of width sigma has as its population optimum the exact posterior
convolved with the (normalised) bump kernel, so that is the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.reference_posteriors import jensen_shannon, log_mean_posteriors

import latentatlas as la
from latentatlas.posterior import bundles as B

G, M, S, K, SIGMA = 12, 2, 200, 4, 1.0
AXIS = np.linspace(-1.0, 1.0, G)
CELL = AXIS[1] - AXIS[0]


def _family(seed: int = 0) -> np.ndarray:
    params = B.grid_params(AXIS, AXIS)
    rng = np.random.default_rng(seed)
    return (params[:, None, :] + rng.standard_normal((len(params), S, M))).astype(np.float32)


def _exact_smoothed(x: np.ndarray, repeats: int, seed: int) -> np.ndarray:
    """Exact posteriors of the same bundles that ``posteriors`` draws, smoothed, averaged."""
    params = B.grid_params(AXIS, AXIS)
    k = B.bump_kernel(G, SIGMA)
    out = np.empty((len(params), G, G))
    for p in range(len(params)):
        idx = B.choose_distinct(np.random.default_rng([seed, p]), repeats, S, K)
        xb = x[p][idx].astype(np.float64)  # (R, K, 2)
        lp = -0.5 * ((xb[:, :, None, :] - params[None, None]) ** 2).sum((-1, 1))  # (R, P)
        pr = np.exp(lp - lp.max(1, keepdims=True))
        pr = (pr / pr.sum(1, keepdims=True)).reshape(repeats, G, G)
        out[p] = np.einsum("rab,ai,bj->ij", pr, k, k) / repeats
    return out


def _means(post: np.ndarray) -> np.ndarray:
    return np.stack([np.einsum("pij,i->p", post, AXIS), np.einsum("pij,j->p", post, AXIS)], -1)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    x = _family()
    model = la.posterior.GridPosterior((M,), (G, G), embed=32, hidden=64)
    fitted = model.fit(x, AXIS, AXIS, bundle=K, sigma=SIGMA, steps=800, batch_size=128, lr=3e-3,
                       progress=False, seed=0)
    assert fitted is model  # fit returns self, the History is in history_
    return model, x, model.history_


def test_matches_exact_smoothed_posterior(trained):
    model, x, history = trained
    assert np.isfinite(history.best_val)
    post = model.posteriors(x, bundle=K, repeats=16, seed=1, progress=False,
                            average="probability")
    assert post.shape == (G * G, G, G) and post.dtype == np.float64
    np.testing.assert_allclose(post.sum((1, 2)), 1.0, atol=1e-12)
    ref = _exact_smoothed(x, 16, 1)
    # Posterior means: RMS error below 0.25 cells (measured ~0.07-0.1). The estimator sees the same
    # bundles as the reference, so this is model error only, not sampling noise.
    err = np.linalg.norm(_means(post) - _means(ref), axis=-1) / CELL
    assert np.sqrt((err**2).mean()) < 0.25, np.sqrt((err**2).mean())
    # JSD: for two 2-D Gaussians of std s ~ 2.9 cells, JSD ~ delta^2 / (8 s^2) for a mean offset
    # delta and ~ (r - 1)^2 / 2 for a width ratio r; 0.005 nats allows an offset of ~0.6 cells or
    # a 10 % width error. Measured mean ~6e-4.
    jsd = jensen_shannon(post, ref)
    assert jsd.mean() < 0.005, jsd.mean()
    # posterior_means draws the same bundles: their average is the map's mean only in expectation,
    # but each bundle's mean must be close to the exact bundle mean (RMS over all < 0.35 cells).
    pm = model.posterior_means(x, bundle=K, repeats=16, seed=1, progress=False)
    assert pm.shape == (G * G, 16, 2)
    params = B.grid_params(AXIS, AXIS)
    kern = B.bump_kernel(G, SIGMA)
    exact = np.empty_like(pm)
    for p in range(G * G):
        idx = B.choose_distinct(np.random.default_rng([1, p]), 16, S, K)
        xb = x[p][idx].astype(np.float64)  # (R, K, 2): the bundles posterior_means draws
        lp = -0.5 * ((xb[:, :, None, :] - params[None, None]) ** 2).sum((-1, 1))  # (R, P)
        pr = np.exp(lp - lp.max(1, keepdims=True))
        pr = (pr / pr.sum(1, keepdims=True)).reshape(16, G, G)
        exact[p] = _means(np.einsum("rab,ai,bj->rij", pr, kern, kern))
    err = np.linalg.norm(pm - exact, axis=-1) / CELL
    assert np.sqrt((err**2).mean()) < 0.35, np.sqrt((err**2).mean())


def test_permutation_invariance_and_predict(trained):
    model, x, _ = trained
    rng = np.random.default_rng(5)
    bundles = x[rng.integers(0, G * G, 64)][:, :K]  # (64, K, 2)
    p1 = model.predict(bundles)
    p2 = model.predict(bundles[:, ::-1].copy())
    p3 = model.predict(bundles[:, rng.permutation(K)])
    assert p1.shape == (64, G, G)
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    np.testing.assert_allclose(p1, p3, atol=1e-6)
    # tensor in -> tensor out, same numbers
    pt = model.predict(torch.as_tensor(bundles))
    assert isinstance(pt, torch.Tensor)
    np.testing.assert_allclose(pt.double().numpy(), p1, atol=1e-6)
    # posterior mean of a bundle vs exact smoothed mean
    mean = model.posterior_mean(bundles)
    params = B.grid_params(AXIS, AXIS)
    lp = -0.5 * ((bundles.astype(np.float64)[:, :, None] - params[None, None]) ** 2).sum((-1, 1))
    pr = np.exp(lp - lp.max(1, keepdims=True))
    pr = (pr / pr.sum(1, keepdims=True)).reshape(-1, G, G)
    k = B.bump_kernel(G, SIGMA)
    ref = _means(np.einsum("bxy,xi,yj->bij", pr, k, k))
    err = np.linalg.norm(mean - ref, axis=-1) / CELL
    assert np.sqrt((err**2).mean()) < 0.35, np.sqrt((err**2).mean())


def test_save_load_round_trip(trained, tmp_path):
    model, x, _ = trained
    path = la.save(model, tmp_path / "grid.safetensors")
    same = la.load(path)
    bundles = x[:10, :K]
    np.testing.assert_array_equal(same.predict(bundles), model.predict(bundles))
    np.testing.assert_array_equal(same.axis0.numpy(), model.axis0.numpy())


def test_lattice_and_chain_encoders_train_and_save(tmp_path):
    # CNN encoders (periodic lattice of int8 spins, open chain of uint8): shapes, invariances, save
    rng = np.random.default_rng(0)
    spins = rng.choice(np.array([-1, 1], dtype=np.int8), size=(9, 6, 8, 8))
    model = la.posterior.GridPosterior((8, 8), (3, 3), embed=8, hidden=16,
                                       encoder_options={"channels": 4})
    model.fit(spins, [0, 1, 2], [0, 1, 2], bundle=2, steps=3, batch_size=4, progress=False)
    b = torch.as_tensor(spins[:2, :2])
    # periodic padding + global pooling: a cyclic shift of every sample changes nothing
    shifted = torch.roll(b, shifts=(3, -2), dims=(2, 3))
    torch.testing.assert_close(model.predict(b), model.predict(shifted), atol=1e-5, rtol=0)
    same = la.load(la.save(model, tmp_path / "lattice.safetensors"))
    torch.testing.assert_close(same.predict(b), model.predict(b), atol=0, rtol=0)
    chain = la.posterior.GridPosterior((32,), (3, 3), embed=8, hidden=16)
    assert isinstance(chain.encoder, la.posterior.CNNEncoder)
    occ = rng.integers(0, 2, size=(9, 4, 32), dtype=np.uint8)
    chain.fit(occ, [0, 1, 2], [0, 1, 2], bundle=2, steps=2, batch_size=4, progress=False)
    assert chain.predict(occ[:3, :2]).shape == (3, 3, 3)


def test_bad_inputs(tmp_path):
    x = _family()[:, :10]
    model = la.posterior.GridPosterior((M,), (G, G), embed=8, hidden=8)
    with pytest.raises(ValueError, match="bundle"):
        model.fit(x, AXIS, AXIS, bundle=11, steps=1, progress=False)
    with pytest.raises(ValueError, match="sigma"):
        model.fit(x, AXIS, AXIS, sigma=0.0, steps=1, progress=False)
    with pytest.raises(ValueError, match="grid mismatch"):
        model.fit(x, AXIS[:-1], AXIS, steps=1, progress=False)
    with pytest.raises(ValueError, match="samples"):
        model.fit(x[:-1], AXIS, AXIS, steps=1, progress=False)
    with pytest.raises(ValueError, match="bundles"):
        model.predict(np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match="bundle"):
        model.posteriors(x, bundle=11, progress=False)
    with pytest.raises(ValueError, match="grid_shape"):
        la.posterior.GridPosterior((M,), (G,))
    with pytest.raises(ValueError, match="encoder"):
        la.posterior.GridPosterior((M,), (G, G), encoder="transformer")
    # a user module that is not a latentatlas building block cannot be saved: io's clear error
    custom = la.posterior.GridPosterior((M,), (G, G), encoder=torch.nn.Linear(M, 64))
    with pytest.raises(ValueError, match="cannot be rebuilt"):
        la.save(custom, tmp_path / "custom.safetensors")


@pytest.mark.slow
def test_periodic_cnn_matches_exact_lattice_posterior():
    """End to end through the lattice CNN: x_ab ~ N(mu, exp(2 s)) iid on an 8 x 8 periodic lattice,
    (mu, s) on an 8 x 8 grid over [-0.3, 0.3]^2. The exact posterior of a bundle (K = 2, 128
    values) is ∝ exp(-Σ (x - mu)^2 / (2 e^{2s}) - 128 s): about 1.3 x 1.0 cells wide, so the
    encoder must learn both sufficient statistics Σx and Σx² through convolutions + pooling."""
    g, s_per, lat, k, sigma = 8, 64, 8, 2, 0.7
    ax = np.linspace(-0.3, 0.3, g)
    params = B.grid_params(ax, ax)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((g * g, s_per, lat, lat))
    x = (params[:, 0, None, None, None] + np.exp(params[:, 1, None, None, None]) * noise)
    x = x.astype(np.float32)
    model = la.posterior.GridPosterior((lat, lat), (g, g), embed=16, hidden=64,
                                       encoder_options={"channels": 16})
    assert isinstance(model.encoder, la.posterior.CNNEncoder)
    model.fit(x, ax, ax, bundle=k, sigma=sigma, steps=600, batch_size=64, lr=3e-3, progress=False)
    post = model.posteriors(x, bundle=k, repeats=8, seed=1, progress=False,
                            average="probability")
    kern = B.bump_kernel(g, sigma)
    ref = np.empty_like(post)
    for p in range(g * g):
        idx = B.choose_distinct(np.random.default_rng([1, p]), 8, s_per, k)
        xb = x[p][idx].astype(np.float64).reshape(8, -1)
        mu, ls = params[:, 0], params[:, 1]
        lp = -((xb[:, :, None] - mu) ** 2).sum(1) / (2 * np.exp(2 * ls)) - xb.shape[1] * ls
        pr = np.exp(lp - lp.max(1, keepdims=True))
        pr = (pr / pr.sum(1, keepdims=True)).reshape(8, g, g)
        ref[p] = np.einsum("rab,ai,bj->ij", pr, kern, kern) / 8
    # measured: mean JSD 0.0017, mean error 0.06 cells per axis; the thresholds allow ~3x that
    jsd = jensen_shannon(post, ref)
    assert jsd.mean() < 0.006, jsd.mean()
    mean = lambda q: np.stack([np.einsum("pij,i->p", q, ax), np.einsum("pij,j->p", q, ax)], -1)  # noqa: E731
    err = np.sqrt(((mean(post) - mean(ref)) ** 2).mean(0)) / (ax[1] - ax[0])
    assert np.all(err < 0.2), err


def test_checkpoint_resume_and_configurable_encoder(tmp_path):
    x = _family()[:, :20]
    enc = la.posterior.MLPEncoder((M,), embed=8, hidden=8, depth=1)
    a = la.posterior.GridPosterior((M,), (G, G), encoder=enc, embed=8, hidden=8)
    ckpt = tmp_path / "ckpt.pt"
    a.fit(x, AXIS, AXIS, steps=6, batch_size=8, progress=False, checkpoint=ckpt, val_every=3)
    assert ckpt.exists()
    # a second run with the same checkpoint finds training complete: identical weights
    torch.manual_seed(123)
    b = la.posterior.GridPosterior((M,), (G, G), encoder=la.posterior.MLPEncoder(
        (M,), embed=8, hidden=8, depth=1), embed=8, hidden=8)
    b.fit(x, AXIS, AXIS, steps=6, batch_size=8, progress=False, checkpoint=ckpt, val_every=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    # a latentatlas encoder passed as a module is saved with the estimator (nested config)
    same = la.load(la.save(a, tmp_path / "a.safetensors"))
    assert isinstance(same.encoder, la.posterior.MLPEncoder)
    np.testing.assert_array_equal(same.predict(x[:4, :3]), a.predict(x[:4, :3]))


def test_posteriors_log_mean_is_the_atlas_average(trained):
    """``average="log"`` (the default) is the pipeline's log-mean bit for bit; "probability" is the
    old mixture; both normalised, and they differ."""
    model, x, _ = trained
    pts = x[::7]
    log = model.posteriors(pts, bundle=K, repeats=5, seed=3, batch_size=64, progress=False)
    assert np.array_equal(model.posteriors(pts, K, 5, 3, 64, False, "log"), log)
    mix = model.posteriors(pts, bundle=K, repeats=5, seed=3, progress=False, average="probability")
    np.testing.assert_allclose(mix.sum((1, 2)), 1.0, atol=1e-12)
    np.testing.assert_allclose(log.sum((1, 2)), 1.0, atol=1e-12)
    assert np.abs(mix - log).max() > 1e-4  # the geometric mean is narrower than the mixture
    with pytest.raises(ValueError, match="average: expected 'log' or 'probability', got 'mean'"):
        model.posteriors(pts, bundle=K, progress=False, average="mean")
    ref = log_mean_posteriors(model, pts, K, 5, 3, batch_size=64, progress=False)
    assert np.array_equal(log, ref)


def _reference_log_mean(model, samples, bundle, repeats, seed, batch_size=1024):
    """The atlas pipeline's log-mean (``log_mean_posteriors``), restated: point p's bundles are
    ``choose_distinct(default_rng([seed, p]), R, S, K)``, mean log-posterior, renormalised."""
    g0, g1 = model.grid_shape
    out = np.empty((samples.shape[0], g0, g1))
    chunk = max(1, batch_size // repeats)
    model.eval()
    for p0 in range(0, samples.shape[0], chunk):
        p1 = min(samples.shape[0], p0 + chunk)
        idx = np.stack([B.choose_distinct(np.random.default_rng([seed, p]), repeats,
                                          samples.shape[1], bundle) for p in range(p0, p1)])
        x = samples[p0:p1][np.arange(p1 - p0)[:, None, None], idx]
        with torch.no_grad():
            logp = model.log_posterior(torch.as_tensor(x.reshape(-1, bundle, *samples.shape[2:])))
        mean = logp.double().numpy().reshape(p1 - p0, repeats, g0 * g1).mean(1)
        prob = np.exp(mean - mean.max(1, keepdims=True))
        out[p0:p1] = (prob / prob.sum(1, keepdims=True)).reshape(p1 - p0, g0, g1)
    return out


def test_posteriors_log_mean_restated(trained):
    model, x, _ = trained
    pts = x[::5]
    log = model.posteriors(pts, bundle=K, repeats=4, seed=2, batch_size=32, progress=False)
    assert np.array_equal(log, _reference_log_mean(model, pts, K, 4, 2, batch_size=32))


def test_cnn_neighbour_products_are_exact_bond_products():
    """``products=True`` feeds x_i x_{i+e} along each axis: checked against explicit loops on a
    periodic lattice and an open chain; the first convolution then sums bonds linearly."""
    rng = np.random.default_rng(5)
    s = torch.as_tensor(rng.choice([-1.0, 1.0], size=(3, 1, 4, 5)))
    enc = la.posterior.CNNEncoder((4, 5), embed=4, channels=4, products=True, blocks=1).double()
    down, right = enc._neighbour_products(s)  # axis 2 (rows), then axis 3 (columns)
    for n in range(3):
        for i in range(4):
            for j in range(5):
                assert down[n, 0, i, j] == s[n, 0, i, j] * s[n, 0, (i + 1) % 4, j]
                assert right[n, 0, i, j] == s[n, 0, i, j] * s[n, 0, i, (j + 1) % 5]
    # the bond sum of each lattice (2 L1 L2 bonds) is the sum of the two product channels
    bonds = (right + down).sum((1, 2, 3)).numpy()
    x = s[:, 0].numpy()
    exact = (x * np.roll(x, -1, 1)).sum((1, 2)) + (x * np.roll(x, -1, 2)).sum((1, 2))
    np.testing.assert_array_equal(bonds, exact)
    assert enc(s[:, 0]).shape == (3, 4)
    chain = la.posterior.CNNEncoder((6,), embed=4, channels=4, periodic=False, products=True)
    occ = torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0, 1.0]])
    (pairs,) = chain._neighbour_products(occ[:, None])
    assert pairs[0, 0].tolist() == [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]  # open: nothing past the edge
    model = la.posterior.GridPosterior((4, 5), (3, 3), embed=4, hidden=8,
                                       encoder_options={"channels": 4, "products": True})
    assert model.encoder.features[0].in_channels == 3


def test_field_head_is_a_smooth_function_of_the_cell(tmp_path):
    """``head="field"``: the logits are w(t) . h + b(t) with [w, b] an MLP of the standardised
    cell coordinates; checked against that formula, and saved / loaded bit-identically."""
    torch.manual_seed(0)
    model = la.posterior.GridPosterior((M,), (G, G), embed=8, hidden=16, pool="features",
                                       head="field", field_hidden=8)
    x = torch.as_tensor(_family()[:4, :3], dtype=torch.float32)  # (B, K, M) bundles
    with torch.no_grad():
        logits = model(x)
        h = model.head(model.embed_samples(x.reshape(12, M))).reshape(4, 3, -1).mean(1)
        u = torch.linspace(-1.0, 1.0, G)  # the axes are standardised onto [-1, 1]
        t = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
        wb = model.field(t)
        torch.testing.assert_close(logits, h @ wb[:, :-1].T + wb[:, -1])
    with pytest.raises(ValueError, match="head: expected one of"):
        la.posterior.GridPosterior((M,), (G, G), head="cell")
    same = la.load(la.save(model, tmp_path / "field.safetensors"))
    torch.testing.assert_close(same(x), model(x), atol=0, rtol=0)
