"""Paths between two latents: the source, the 1-D posterior/potential, and the validations of
issue 12 against exact answers (x = z + eta noise: g = |z_B - z_A|^2 / eta^2; a sharp switch at a
known s*)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import latentatlas as la
from latentatlas.geometry.line import fisher_length, fit_line_potential, fit_line_potentials
from latentatlas.sources.latent_path import interpolate

S_STAR = 0.37


def gaussian_gen(z: torch.Tensor, eta: float = 0.0, seeds: np.ndarray | None = None
                 ) -> torch.Tensor:
    """x = z + eta * noise; the noise of sample b is seeded by seeds[b] (vectorised: the first
    D draws of a per-sample generator would cost a Python loop, so derive them from one)."""
    if eta == 0:
        return z.clone()
    rng = np.random.default_rng(np.asarray(seeds, dtype=np.uint64))
    noise = rng.standard_normal(z.shape)
    return z + eta * torch.as_tensor(noise, dtype=z.dtype)


def switch_gen(z: torch.Tensor, eta: float = 0.0, seeds: np.ndarray | None = None
               ) -> torch.Tensor:
    """A weak drift 0.5 z plus a jump of 12 along e_1 where z_0 > S_STAR (the path runs from
    z_0 = 0 to z_0 = 1 linearly)."""
    x = 0.5 * z + 12.0 * (z[:, :1] > S_STAR).to(z.dtype) * torch.eye(z.shape[1],
                                                                        dtype=z.dtype)[1]
    return x if eta == 0 else gaussian_gen(x, eta, seeds)


def _seeded(z: torch.Tensor, eta: float, seeds: np.ndarray) -> torch.Tensor:
    out = []
    for sd in np.asarray(seeds):
        out.append(np.random.default_rng(int(sd)).standard_normal(z.shape[1]))
    return z + eta * torch.as_tensor(np.stack(out), dtype=z.dtype)


def noise_gen(z: torch.Tensor, eta: float = 0.0, seeds: np.ndarray | None = None
              ) -> torch.Tensor:
    """x = z + eta * noise, sample b's noise a function of seeds[b] alone."""
    return z.clone() if eta == 0 else _seeded(z, eta, seeds)


# -- the source -------------------------------------------------------------------------------------
def test_interpolations_exact() -> None:
    rng = np.random.default_rng(0)
    za, zb = (torch.as_tensor(rng.standard_normal(16)) for _ in range(2))
    s = torch.linspace(0, 1, 11, dtype=torch.float64)
    lin = interpolate(za, zb, s, "linear")
    assert torch.equal(lin, za + s[:, None] * (zb - za))  # exactly, no rescaling
    sl = interpolate(za, zb, s, "slerp")
    assert torch.allclose(sl[0], za, atol=1e-12) and torch.allclose(sl[-1], zb, atol=1e-12)
    # norm interpolated linearly; the direction on the great circle (equal angle steps)
    assert torch.allclose(sl.norm(dim=1), (1 - s) * za.norm() + s * zb.norm(), atol=1e-12)
    u = sl / sl.norm(dim=1, keepdim=True)
    angles = torch.arccos((u[1:] * u[:-1]).sum(1).clamp(-1, 1))
    assert torch.allclose(angles, angles.mean().expand_as(angles), atol=1e-10)
    # equal norms: the textbook slerp
    zb2 = zb / zb.norm() * za.norm()
    om = torch.arccos((za @ zb2) / za.norm() ** 2)
    text = (torch.sin((1 - s[:, None]) * om) * za + torch.sin(s[:, None] * om) * zb2) / torch.sin(om)
    assert torch.allclose(interpolate(za, zb2, s, "slerp"), text, atol=1e-12)
    with pytest.raises(ValueError, match="interpolation"):
        interpolate(za, zb, s, "cubic")


def test_source_sampling_is_per_point_and_batched_across_paths() -> None:
    rng = np.random.default_rng(1)
    z = rng.standard_normal((4, 6))
    src = la.paths.make_source(noise_gen, z[0], z[1], "linear", eta=0.5)
    assert src.names == ("s",) and src.sample_shape == (6,)
    s = np.linspace(0, 1, 7)[:, None]
    x = src.sample(s, 3, seed=2)
    assert x.shape == (7, 3, 6)
    assert np.array_equal(src.sample(s[3:4], 3, seed=2)[0], x[3])  # a function of (seed, s) only
    assert np.allclose(x.mean(1), src.latents(s).numpy(), atol=3 * 0.5)
    other = la.paths.make_source(noise_gen, z[2], z[3], "linear", eta=0.5)
    both = la.paths.sample_paths([src, other], s[:, 0], 3, seed=2)
    assert np.array_equal(both[0], x) and np.array_equal(both[1], other.sample(s, 3, seed=2))
    det = la.paths.make_source(noise_gen, z[0], z[1], "slerp")
    xd = det.sample(s, 4, seed=0)
    assert np.array_equal(xd[:, 0], xd[:, 3])  # deterministic: one image per point, repeated
    with pytest.raises(ValueError, match="endpoints"):
        la.sources.LatentPath(noise_gen, z[:3])
    with pytest.raises(ValueError, match="z_b"):
        la.paths.make_source(noise_gen, z[0], z[1, :3])
    with pytest.raises(ValueError, match="eta"):
        la.sources.LatentPath(noise_gen, z[:2], eta=-1.0)


# -- the 1-D potential on exact posteriors -------------------------------------------------------------
def test_line_potential_recovers_exact_bregman_posteriors() -> None:
    """Posteriors exp(-K D(s, s_i)) of a known potential with g(s) = 4 + 40 s^2: the fit returns
    g within 2 % (interior) and the Fisher length within 1 %."""
    s = np.linspace(0, 1, 60)
    g_true = 4 + 40 * s ** 2
    phi = 4 * s ** 2 / 2 + 40 * s ** 4 / 12
    dphi = 4 * s + 40 * s ** 3 / 3
    k = 3
    d = phi[None, :] - phi[:, None] - dphi[:, None] * (s[None, :] - s[:, None])
    post = np.exp(-k * d)
    post /= post.sum(1, keepdims=True)
    # the model without nuisance terms (no per-row centres, no penalty) is exact here
    pot = fit_line_potential(post, s, k, smoothness=0.0, shifts=False)
    rel = pot.metric[6:-6] / g_true[6:-6] - 1
    assert np.abs(rel).max() < 0.02, np.abs(rel).max()  # measured 0.0017 (the grid's cells)
    exact = float(np.sum(0.5 * (np.sqrt(g_true[1:]) + np.sqrt(g_true[:-1])) * np.diff(s)))
    assert abs(fisher_length(s, pot.metric) / exact - 1) < 0.01
    assert np.array_equal(pot.centers, s)
    with pytest.raises(ValueError, match="posteriors"):
        fit_line_potential(post[:, :10], s, k)


def test_batched_potential_fits_equal_single_fits() -> None:
    """fit_line_potentials on a stack of two exact-Bregman posterior sets (g = 4 + 40 s^2 and a
    constant g = 25) returns, bit for bit, the single fits (each problem steps and stops on its
    own), and each within 2 % of its exact g (interior)."""
    s = np.linspace(0, 1, 40)
    k = 2
    stack, truth = [], []
    for phi, dphi, g in ((4 * s ** 2 / 2 + 40 * s ** 4 / 12, 4 * s + 40 * s ** 3 / 3,
                          4 + 40 * s ** 2), (12.5 * s ** 2, 25 * s, np.full_like(s, 25.0))):
        d = phi[None, :] - phi[:, None] - dphi[:, None] * (s[None, :] - s[:, None])
        post = np.exp(-k * d)
        stack.append(post / post.sum(1, keepdims=True))
        truth.append(g)
    both = fit_line_potentials(np.stack(stack), s, k, smoothness=0.0, shifts=False)
    for post, g, pot in zip(stack, truth, both):
        one = fit_line_potential(post, s, k, smoothness=0.0, shifts=False)
        assert np.array_equal(one.metric, pot.metric) and np.array_equal(one.cells, pot.cells)
        assert np.abs(pot.metric[4:-4] / g[4:-4] - 1).max() < 0.02
    with pytest.raises(ValueError, match="posteriors"):
        fit_line_potentials(np.stack(stack)[:, :5], s, k)


def test_kernel_distances_debiased_for_reference_noise() -> None:
    """Pure noise (every point the same distribution, D = 4096 features, S = 50, K = 2): a
    bundle's own point, whose reference leaves the bundle out (S - K samples), is expected to
    score like any other point; without the correction for the references' noise it scores
    K D / 2 (1 / (S - K) - 1 / S) = 3.41 nats lower (exact)."""
    from latentatlas.posterior.line import LineKernelPosterior, bundle_indices

    rng = np.random.default_rng(0)
    p, n, d, k, r = 20, 50, 4096, 2, 32
    x = rng.standard_normal((p, n, d)).astype(np.float32)
    bias = -k * d / 2 * (1 / (n - k) - 1 / n)
    for debias, expected in ((True, 0.0), (False, bias)):
        m = LineKernelPosterior(features=lambda a: a.reshape(len(a), -1), debias=debias,
                                project=False)
        m.fit(x, np.linspace(0, 1, p))
        e = m.embed(x)
        idx = torch.as_tensor(bundle_indices(p, n, k, r, 0))
        e_bar = e[torch.arange(p)[:, None, None], idx].mean(2).reshape(p * r, -1)
        own = torch.arange(p).repeat_interleave(r)
        logp = m._log_post(e_bar, k, own)
        mine = logp[torch.arange(p * r), own]
        diff = (mine - (logp.sum(1) - mine) / (p - 1)).numpy()
        se = diff.std() / np.sqrt(p * r)  # measured 0.56 (rows share references: generous)
        assert abs(diff.mean() - expected) < 2 * se, (debias, diff.mean(), expected, se)


# -- validation 1: x = z + eta noise on a linear path ---------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_path_metric_is_exact_and_flat(seed: int) -> None:
    """g(s) = |z_B - z_A|^2 / eta^2 exactly. With 100 points x 200 samples (D = 8, eta = 0.7) the
    fitted metric is within 10 % of it at every point of [0.1, 0.9] and no jump is flagged."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((2, 8))
    eta = 0.7
    exact = float(np.sum((z[1] - z[0]) ** 2)) / eta ** 2
    res = la.paths.build(gaussian_gen, z[0], z[1], interpolation="linear", points=100,
                         samples=200, eta=eta, seed=seed, progress=False, analyses=False)
    inner = res.metric[10:-10] / exact
    print(f"seed {seed}: g/exact in [{inner.min():.3f}, {inner.max():.3f}], mean "
          f"{inner.mean():.3f}; length {res.fisher_length:.3f} vs {np.sqrt(exact):.3f}")
    assert np.all(np.abs(inner - 1) < 0.10)
    assert len(res.jumps) == 0
    assert abs(res.fisher_length / np.sqrt(exact) - 1) < 0.05


def test_gaussian_path_users_budget() -> None:
    """The users' budget, 100 points x 50 samples: the mean of g over [0.1, 0.9] within 5 % of
    the exact value, no jump (pointwise the noise is larger; see the README)."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((2, 8))
    exact = float(np.sum((z[1] - z[0]) ** 2))
    res = la.paths.build(gaussian_gen, z[0], z[1], interpolation="linear", eta=1.0,
                         progress=False, analyses=False)
    inner = res.metric[10:-10] / exact
    print(f"g/exact in [{inner.min():.3f}, {inner.max():.3f}], mean {inner.mean():.3f}")
    assert abs(inner.mean() - 1) < 0.05 and len(res.jumps) == 0


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_gaussian_path_in_256_dims(seed: int) -> None:
    """x = z + eta noise with D = 256 (eta = 2) at the users' budget, 100 x 50: the features
    outnumber the points, so the kernel works in the references' signal subspace (the
    Marchenko-Pastur edge; without it the references' noise in 256 dimensions made g 0.63-1.54
    of exact pointwise). Measured: g/exact in [0.83, 1.08] on [0.1, 0.9], mean and Fisher length
    within 1.7 % (seeds 3-5)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((2, 256))
    exact = float(np.sum((z[1] - z[0]) ** 2)) / 4.0
    res = la.paths.build(gaussian_gen, z[0], z[1], interpolation="linear", eta=2.0,
                         progress=False, analyses=False)
    inner = res.metric[10:-10] / exact
    assert np.all(np.abs(inner - 1) < 0.20), (inner.min(), inner.max())
    assert abs(inner.mean() - 1) < 0.03 and abs(res.fisher_length / np.sqrt(exact) - 1) < 0.03
    assert len(res.jumps) == 0


@pytest.mark.parametrize("seed", [0, 3])
def test_mlp_decoder_path_fisher_length_is_exact(seed: int) -> None:
    """A nonlinear generator with an exact answer: x = f(z) + eta noise, f a random tanh MLP
    32 -> 128 -> 256, on a slerp path: g(s) = |d f(z(s))/ds|^2 / eta^2 (forward-mode autodiff).
    At 100 x 50 (256 features > 100 points: the signal subspace) the Fisher length is within 3 %
    (measured 0.998-1.012 for seeds 0-3), g within 35 % pointwise on [0.1, 0.9] (measured
    0.82-1.30), no jump."""
    from latentatlas.sources.latent_path import interpolate

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.Tanh(),
                              torch.nn.Linear(128, 256)).double()

    def mlp_gen(z: torch.Tensor, eta: float = 0.0, seeds: np.ndarray | None = None
                ) -> torch.Tensor:
        with torch.no_grad():
            x = net(z.double())
        return x if eta == 0 else gaussian_gen(x, eta, seeds)

    z = np.random.default_rng(seed).standard_normal((2, 32))
    a, b = torch.as_tensor(z[0]), torch.as_tensor(z[1])
    s = torch.linspace(0, 1, 100, dtype=torch.float64)
    _, jv = torch.autograd.functional.jvp(lambda t: net(interpolate(a, b, t, "slerp")), (s,),
                                          (torch.ones_like(s),))
    eta = 0.3
    g = ((jv ** 2).sum(-1) / eta ** 2).numpy()
    res = la.paths.build(mlp_gen, z[0], z[1], eta=eta, progress=False, analyses=False)
    assert abs(res.fisher_length / fisher_length(s.numpy(), g) - 1) < 0.03
    assert np.all(np.abs(res.metric[10:-10] / g[10:-10] - 1) < 0.35)
    assert len(res.jumps) == 0


# -- validation 2: a sharp switch at s* ------------------------------------------------------------
def test_switch_gives_one_jump_at_s_star() -> None:
    z = np.zeros((2, 8))
    z[1, 0] = 1.0
    res = la.paths.build(switch_gen, z[0], z[1], interpolation="linear", eta=1.0,
                         progress=False, analyses={"jumps": {}})
    i_star = S_STAR * (len(res.s) - 1)  # the switch lies between points floor and ceil of this
    print("jumps", res.jumps, "argmax g", int(np.argmax(res.metric)), "s* index", i_star)
    assert len(res.jumps) == 1
    assert abs(res.jumps[0] + 0.5 - i_star) <= 1.0
    assert abs(int(np.argmax(res.metric)) - i_star) <= 1.5


def test_switch_jump_analysis_lipschitz() -> None:
    """The jumps stage: images on both sides, the switch located by bisection to 1e-9, and the
    Lipschitz profile with slope -1 there (0 at a smooth point)."""
    z = np.zeros((2, 8))
    z[1, 0] = 1.0
    src = la.paths.make_source(switch_gen, z[0], z[1], "linear", eta=1.0)
    cfg = la.atlas.RunConfig.make(src, resolution=40, samples_per_point=20)
    ctx = la.atlas.execute(src, cfg, progress=False, report=False)
    out = ctx.result("jumps")
    sc, arr = out["scalars"], out["arrays"]
    assert len(sc["jumps"]) == 1
    assert abs(sc["jumps"][0]["switch"] - S_STAR) < 1e-9
    assert abs(sc["jumps"][0]["lipschitz_slope"] + 1) < 0.05
    assert abs(sc["smooth"]["lipschitz_slope"]) < 0.05
    assert arr["before"].shape == (1, 4, 8) and arr["after"].shape == (1, 4, 8)
    assert np.all(arr["before"][..., 1] < 6) and np.all(arr["after"][..., 1] > 6)


# -- many pairs: batched, and on ray ---------------------------------------------------------------
RANK = dict(interpolation="linear", eta=1.0, points=24, samples=16, progress=False)


def test_rank_batches_equal_single_paths() -> None:
    """rank() maps pairs in batches (shared generation, one batched potential fit): each pair's
    metric, means and jumps are bit-identical to la.paths.build of that pair alone, and the
    Fisher lengths rank like the exact ones |z_B - z_A| / eta."""
    lat = np.random.default_rng(0).standard_normal((10, 8))
    pairs = [(0, 1), (2, 3), (4, 5)]
    table = la.paths.rank(noise_gen, lat, pairs, paths_per_batch=2, **RANK)
    for row, res in zip(table.rows, table.results):
        one = la.paths.build(noise_gen, lat[row["i"]], lat[row["j"]], analyses=False, **RANK)
        assert np.array_equal(one.metric, res.metric) and np.array_equal(one.means, res.means)
        assert np.array_equal(one.jumps, res.jumps)
    exact = {p: float(np.linalg.norm(lat[p[1]] - lat[p[0]])) for p in pairs}
    assert [(r["i"], r["j"]) for r in table.rows] == sorted(exact, key=exact.get, reverse=True)
    with pytest.raises(ValueError, match="backend"):
        la.paths.rank(noise_gen, lat, pairs, backend="spark", **RANK)


@pytest.mark.slow
def test_rank_on_ray_equals_local(tmp_path) -> None:
    """--backend ray for pairs: a local Ray instance of 2 CPUs (rank starts it; its workers get
    this process's sys.path, so they import this module's generator), 5 pairs in batches of 2
    (3 tasks): the ranking and every pair's arrays equal the local backend's bit for bit."""
    pytest.importorskip("ray")
    lat = np.random.default_rng(2).standard_normal((12, 8))
    pairs = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    local = la.paths.rank(noise_gen, lat, pairs, paths_per_batch=2, out=tmp_path / "local",
                          **RANK)
    remote = la.paths.rank(noise_gen, lat, pairs, paths_per_batch=2, backend="ray", workers=2,
                           out=tmp_path / "ray", **RANK)
    assert remote.rows == local.rows
    for a, b in zip(local.results, remote.results):
        for key, value in a.arrays().items():
            np.testing.assert_array_equal(b.arrays()[key], value, err_msg=key)
    assert ((tmp_path / "ray" / "ranking.csv").read_text()
            == (tmp_path / "local" / "ranking.csv").read_text())


# -- the grid estimator ----------------------------------------------------------------------------
@pytest.mark.slow
def test_grid_estimator_fisher_length() -> None:
    """The trained 1-D softmax estimator (sigma = 1 cell) on x = z + eta noise: Fisher length
    within 15 % of |z_B - z_A| / eta."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 8))
    res = la.paths.build(gaussian_gen, z[0], z[1], interpolation="linear", eta=1.0,
                         estimator="grid", sigma=1.0, bundle=4, features=None, progress=False,
                         analyses=False, posterior_options={"fit": {"steps": 1500}})
    exact = float(np.linalg.norm(z[1] - z[0]))
    print(f"grid: length {res.fisher_length:.3f} vs {exact:.3f}")
    assert abs(res.fisher_length / exact - 1) < 0.15


# -- validation 3: the digits generator ------------------------------------------------------------
@pytest.fixture(scope="module")
def digits(digits_generator, digits_classifier, shared_cache):
    """The digits generator at a reduced budget (1500 steps) and the classifier, trained once per
    test run into a cache shared by the xdist workers (tests/conftest.py; about 1-2 minutes each
    on one core), with ``$LATENTATLAS_CACHE`` pointing at that cache while this module runs."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LATENTATLAS_CACHE", str(shared_cache))
    yield digits_generator, digits_classifier
    mp.undo()


def _classes(gen, clf, za, zb, points=100):
    src = la.paths.make_source(gen, za, zb, "slerp", 0.0)
    return clf.predict(src.decode(np.linspace(0, 1, points)[:, None]).float()).numpy()


@pytest.mark.slow
def test_digits_same_class_no_jump(digits) -> None:
    """Latents 2 and 17 of the bank (both decoded as 7, the whole path too): no jump."""
    gen, clf = digits
    z = la.planes.digits_latents(200)
    assert len(np.unique(_classes(gen, clf, z[2], z[17]))) == 1
    res = la.paths.build(gen, z[2], z[17], eta=0.5, progress=False, analyses=False)
    assert len(res.jumps) == 0


@pytest.mark.slow
@pytest.mark.xfail(reason="measured: no jump exists to flag. The 1500-step generator is smooth "
                          "through the class change 4 -> 7 (point 57): deterministic pixel steps "
                          "vary only 0.58-1.53x their median, and at eta 0.5 the sampler mixes "
                          "the classes over s = 0.37-0.70 (share of 7s rising 2 % -> 100 %), so "
                          "the posterior means move one grid step per point (g peaks at 60). "
                          "The fully trained generator (12000 steps, too slow for CI) is steep "
                          "there (pixel step 12.5x the median at its change, point 74; g peaks "
                          "at 75) but still continuous: no mean step above the threshold",
                   strict=False)
def test_digits_class_change_is_a_jump(digits) -> None:
    gen, clf = digits
    z = la.planes.digits_latents(200)
    c = _classes(gen, clf, z[0], z[2])
    change = np.flatnonzero(np.diff(c))
    assert len(change) == 1
    res = la.paths.build(gen, z[0], z[2], eta=0.5, progress=False, analyses=False)
    print("class change", change, "jumps", res.jumps, "argmax g", int(np.argmax(res.metric)))
    assert len(res.jumps) == 1 and abs(int(res.jumps[0]) - int(change[0])) <= 1
