"""Ising2D: MCMC moments against brute-force enumeration (L = 4) and the exact transfer matrix
(L = 8); determinism across batching; bad input.

Error bars: samples of one chain are split into 20 consecutive batches; the standard error of a mean
is the standard deviation of the batch means / sqrt(20). Variances are estimated as the mean of
(f - E_exact f)^2, which is unbiased for Var f, with the same batch-means error. With thinning at
2 tau the batches are essentially independent, so |estimate - exact| < 4 SE fails with probability
~1e-4 per comparison (t-distribution with 19 dof: ~1e-3); all tests are seeded, hence reproducible.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import latentatlas as la
from latentatlas.exact import ising as exact_ising
from latentatlas.sources import ising as ising_module
from latentatlas.sources._rng import integrated_time
from latentatlas.sources.ising import T_CRITICAL, Ising2D, ising_sufficient_statistics

BATCHES = 20


def batch_mean_se(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, ...) series -> mean and batch-means standard error over axis 0."""
    n = (len(values) // BATCHES) * BATCHES
    b = values[:n].reshape(BATCHES, n // BATCHES, *values.shape[1:]).mean(axis=1)
    return b.mean(axis=0), b.std(axis=0, ddof=1) / math.sqrt(BATCHES)


def enumerate_l4() -> np.ndarray:
    """(2^16, 2) sufficient statistics (bond sum, magnetisation) of all 4x4 periodic lattices."""
    L = 4
    codes = np.arange(1 << (L * L), dtype=np.int64)
    s = (((codes[:, None] >> np.arange(L * L)) & 1) * 2 - 1).reshape(-1, L, L)
    bonds = (s * np.roll(s, -1, axis=1)).sum(axis=(1, 2)) + (s * np.roll(s, -1, axis=2)).sum(
        axis=(1, 2)
    )
    return np.stack([bonds, s.sum(axis=(1, 2))], axis=1).astype(np.float64)


def exact_moments(f: np.ndarray, K: float, H: float) -> tuple[np.ndarray, np.ndarray]:
    logw = f @ np.array([K, H])
    w = np.exp(logw - logw.max())
    w /= w.sum()
    mean = w @ f
    var = w @ (f - mean) ** 2
    return mean, var


def check_moments(f: np.ndarray, mean: np.ndarray, var: np.ndarray, what: str) -> None:
    """f: (n, 2) samples of the sufficient statistics at one point."""
    m, m_se = batch_mean_se(f)
    v, v_se = batch_mean_se((f - mean) ** 2)
    for j, name in enumerate(("bonds", "magnetization")):
        assert abs(m[j] - mean[j]) < 4 * m_se[j] + 1e-12, (what, name, m[j], mean[j], m_se[j])
        assert abs(v[j] - var[j]) < 4 * v_se[j] + 1e-12, (what, name, v[j], var[j], v_se[j])


def test_sufficient_statistics_and_natural() -> None:
    rng = np.random.default_rng(0)
    x = rng.choice(np.array([-1, 1], dtype=np.int8), size=(3, 5, 5))
    src = Ising2D(5)
    f = src.sufficient_statistics(x)
    for b in range(3):
        s = x[b].astype(int)
        bonds = sum(s[i, j] * (s[(i + 1) % 5, j] + s[i, (j + 1) % 5]) for i in range(5) for j in range(5))
        assert f[b, 0] == bonds and f[b, 1] == s.sum()
    np.testing.assert_allclose(Ising2D(4, J=2.0).natural([[4.0, 1.0]]), [[0.5, 0.25]])
    np.testing.assert_allclose(Ising2D(4, coords="natural").natural([[0.3, -0.1]]), [[0.3, -0.1]])


@pytest.mark.parametrize("algorithm", ["metropolis", "wolff"])
def test_l4_against_enumeration(algorithm: str) -> None:
    f_all = enumerate_l4()
    points = np.array([[1.5, 0.0], [2.0, 0.0], [2.3, 0.1], [3.0, -0.3], [1.2, 0.2], [5.0, 0.5]])
    src = Ising2D(4, algorithm=algorithm)
    x, diag = src.sample_with_diagnostics(points, 4000, seed=1)
    assert x.shape == (len(points), 4000, 4, 4) and x.dtype == np.int8
    assert set(np.unique(x)) <= {-1, 1}
    nat = src.natural(points)
    for p in range(len(points)):
        mean, var = exact_moments(f_all, *nat[p])
        check_moments(src.sufficient_statistics(x[p]), mean, var, (algorithm, points[p]))
    for key in ("tau_energy", "tau_magnetization", "acceptance", "burn_in", "thin"):
        assert diag[key].shape == (len(points),) and np.all(np.isfinite(diag[key])), key
    assert np.all(diag["thin"] >= 1) and np.all(diag["burn_in"] >= 256)
    assert np.all((diag["acceptance"] > 0) & (diag["acceptance"] < 1))


def test_l8_against_transfer_matrix() -> None:
    exact = exact_ising
    ex = exact.IsingExact(8)
    points = np.array([[1.8, 0.0], [2.6, 0.05], [3.5, 0.3], [2.0, -0.1]])
    src = Ising2D(8)
    x = src.sample(points, 3000, seed=2)
    nat = src.natural(points)
    grad = ex.gradient(nat)
    hess = ex.hessian(nat)
    N = 64
    for p in range(len(points)):
        f = src.sufficient_statistics(x[p])
        m, m_se = batch_mean_se(f / N)
        # energy and magnetisation per spin (energy = -bond sum / N, J = 1)
        u = ex.energy_per_spin(nat[p : p + 1])[0]
        assert abs(-m[0] - u) < 4 * m_se[0], (points[p], -m[0], u, m_se[0])
        mag = ex.magnetization_per_spin(nat[p : p + 1])[0]
        if points[p, 1] == 0.0:
            # below T_c at H = 0 the exact m is 0 by symmetry; the global flip move restores it
            assert abs(m[1] - mag) < 4 * m_se[1], (points[p], m[1], mag, m_se[1])
        else:
            assert abs(m[1] - mag) < 4 * m_se[1], (points[p], m[1], mag, m_se[1])
        # specific heat c = K^2 Var(bonds) / N and susceptibility chi = K Var(M) / N
        K = nat[p, 0]
        c, c_se = batch_mean_se(K**2 * (f[:, 0] - grad[p, 0]) ** 2 / N)
        chi, chi_se = batch_mean_se(K * (f[:, 1] - grad[p, 1]) ** 2 / N)
        c_exact = ex.specific_heat_per_spin(nat[p : p + 1])[0]
        chi_exact = ex.susceptibility_per_spin(nat[p : p + 1])[0]
        np.testing.assert_allclose(c_exact, K**2 * hess[p, 0, 0] / N, rtol=1e-10)
        assert abs(c - c_exact) < 4 * c_se, (points[p], c, c_exact, c_se)
        assert abs(chi - chi_exact) < 4 * chi_se, (points[p], chi, chi_exact, chi_se)


def test_l8_critical_wolff() -> None:
    exact = exact_ising
    ex = exact.IsingExact(8)
    points = np.array([[T_CRITICAL, 0.0], [2.4, 0.0]])
    src = Ising2D(8, algorithm="wolff")
    x, diag = src.sample_with_diagnostics(points, 3000, seed=3)
    nat = src.natural(points)
    grad = ex.gradient(nat)
    hess = ex.hessian(nat)
    for p in range(len(points)):
        f = src.sufficient_statistics(x[p])
        check_moments(f, grad[p], np.diag(hess[p]), ("wolff", points[p]))
    # cluster updates decorrelate the critical point within a few sweeps at L = 8
    assert np.all(diag["tau_energy"] < 5) and np.all(diag["tau_magnetization"] < 5)


def test_determinism_and_batching() -> None:
    src = Ising2D(6, burn_in=20, thin=2)
    # 9 points run in the lockstep (SIMD) kernel, a point alone in the scalar kernel
    points = np.array([[2.0, 0.0], [3.0, 0.2], [1.0, -0.5], [2.2, 0.0], [2.5, 0.1], [4.0, -0.2],
                       [1.5, 0.05], [2.8, 0.0], [3.3, 0.4]])
    batch = src.sample(points, 5, seed=7)
    for p in range(len(points)):
        alone = src.sample(points[p : p + 1], 5, seed=7)
        np.testing.assert_array_equal(alone[0], batch[p])
    np.testing.assert_array_equal(src.sample(points[::-1], 5, seed=7), batch[::-1])
    other = src.sample(points, 5, seed=8)
    assert not np.array_equal(other[0], batch[0])
    auto = Ising2D(6, algorithm="wolff")
    b2, d2 = auto.sample_with_diagnostics(points, 4, seed=1)
    a2, da = auto.sample_with_diagnostics(points[1:2], 4, seed=1)
    np.testing.assert_array_equal(a2[0], b2[1])
    for key in d2:
        np.testing.assert_array_equal(da[key][0], d2[key][1])


def test_low_temperature_with_field_equilibrates_from_an_anti_aligned_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # T = 1, h = -0.2: the equilibrium magnetisation per spin is ~ -1 (exact L = 16 value within
    # 1e-3 of -1 at K = 1 deep in the ordered phase). The chains are forced to start ordered
    # AGAINST the field (all spins +1), so the test checks that the sampler leaves the metastable
    # sector (here through the global-flip move, accepted with min(1, exp(-2 H M)) = 1), not
    # only that an aligned start stays aligned.
    init = ising_module._Chains.__init__

    def anti_aligned(self, K, H, L, seeds, wolff):  # type: ignore[no-untyped-def]
        init(self, K, H, L, seeds, wolff)
        self.spins *= -1
        self.msum *= -1
        assert np.all(self.spins.mean((1, 2)) * np.sign(H) < 0)  # started against the field

    monkeypatch.setattr(ising_module._Chains, "__init__", anti_aligned)
    x = Ising2D(16).sample([[1.0, -0.2]], 20, seed=0)
    assert x.mean() < -0.99


def test_integrated_time_ar1() -> None:
    # AR(1) x_t = phi x_{t-1} + e_t has tau_int = (1 + phi) / (2 (1 - phi)) = 4.5 for phi = 0.8;
    # with 4 x 2e5 steps the windowed estimate has relative error ~ sqrt(2 (2M+1) / N) ~ 2%
    rng = np.random.default_rng(0)
    phi, n = 0.8, 200_000
    e = rng.normal(size=(4, n))
    x = np.zeros((4, n))
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    tau = integrated_time(x)
    np.testing.assert_allclose(tau, 4.5, rtol=0.08)
    np.testing.assert_allclose(integrated_time(rng.normal(size=(3, 20000))), 0.5, atol=0.05)


def test_save_load_roundtrip(tmp_path) -> None:
    src = Ising2D(8, coords="natural", burn_in=10, thin=3, algorithm="wolff")
    la.save(src, tmp_path / "src.safetensors")
    back = la.load(tmp_path / "src.safetensors")
    assert isinstance(back, Ising2D) and back.config == src.config
    assert back.names == ("K", "H")


@pytest.mark.parametrize(
    ("kwargs", "params", "match"),
    [
        ({}, [[0.0, 0.0]], "params: T must"),
        ({}, [[-1.0, 0.0]], "params: T must"),
        ({}, [[float("nan"), 0.0]], "params"),
        ({}, [[2.0, float("inf")]], "params"),
        ({}, [[2.0, 0.0, 1.0]], "params: expected shape"),
        ({"coords": "natural"}, [[-0.1, 0.0]], "K must lie"),
    ],
)
def test_bad_params(kwargs, params, match) -> None:
    with pytest.raises(ValueError, match=match):
        Ising2D(4, **kwargs).sample(params, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"L": 1}, "L: expected"),
        ({"L": 2.5}, "L: expected"),
        ({"coords": "polar"}, "coords"),
        ({"J": 0.0}, "J: expected"),
        ({"J": float("nan")}, "J: expected"),
        ({"algorithm": "sw"}, "algorithm"),
        ({"burn_in": -1}, "burn_in"),
        ({"thin": 0}, "thin"),
        ({"thin": "sometimes"}, "thin"),
    ],
)
def test_bad_constructor(kwargs, match) -> None:
    args = {"L": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        Ising2D(**args)


def test_bad_n_and_seed() -> None:
    src = Ising2D(4)
    with pytest.raises(ValueError, match="n: expected"):
        src.sample_with_diagnostics([[2.0, 0.0]], 0)
    with pytest.raises(ValueError, match="seed: expected"):
        src.sample_with_diagnostics([[2.0, 0.0]], 1, seed=-1)
    with pytest.raises(ValueError, match="x: expected shape"):
        src.sufficient_statistics(np.ones((2, 3, 3)))


def test_source_registry_name() -> None:
    assert la.sources.Ising2D is Ising2D
    assert Ising2D(4).bounds[0][0] > 0


def test_lockstep_kernel_equals_scalar_kernel() -> None:
    # Metropolis points run in SIMD blocks of lattices; cluster points in the scalar kernel. Both
    # must produce the same chain, draw for draw, whatever the block a lattice falls in.
    from latentatlas.sources.base import point_seeds
    from latentatlas.sources.ising import _Chains

    rng = np.random.default_rng(0)
    P, L = 21, 6
    T = rng.uniform(1.2, 4.0, P)
    h = rng.choice([0.0, 0.1, -0.3], P)
    seeds = point_seeds(0, np.stack([T, h], axis=1))
    a = _Chains(1 / T, h / T, L, seeds, False)
    b = _Chains(1 / T, h / T, L, seeds, False)
    ns, ev = rng.integers(5, 40, P), rng.integers(1, 5, P)
    out_a = a._scalar_run(np.arange(P), ns, ev, 6, True)
    out_b = b._lane_run(np.arange(P), ns, ev, 6, True)
    for x, y in zip(out_a, out_b):
        np.testing.assert_array_equal(x, y)
    for name in ("spins", "rng", "sign", "bsum", "msum", "accepted"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    # the running sums match the lattices
    f = ising_sufficient_statistics(b.spins)
    np.testing.assert_array_equal(f[:, 0], b.bsum)
    np.testing.assert_array_equal(f[:, 1], b.msum)


def test_point_seeds_depend_on_seed_and_point_only() -> None:
    from latentatlas.sources.base import point_seeds

    params = np.array([[1.0, 0.0], [2.0, 0.5], [3.0, -0.5]])
    full = point_seeds(7, params)
    assert full.shape == (3, 4) and full.dtype == np.uint64
    np.testing.assert_array_equal(point_seeds(7, params[1:2]), full[1:2])
    np.testing.assert_array_equal(point_seeds(7, params[::-1]), full[::-1])
    assert not np.any(point_seeds(8, params) == full)  # another seed: unrelated words
    assert len(np.unique(full)) == full.size
    with pytest.raises(ValueError, match="words"):
        point_seeds(0, params, words=9)


def test_threaded_run_equals_single_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # blocks of lattices on two threads (thread-private lane state) give the same chains as one
    import latentatlas.sources.ising as ising_mod
    from latentatlas.sources import _rng
    from latentatlas.sources.base import point_seeds

    rng = np.random.default_rng(1)
    P, L = 40, 6
    T, h = rng.uniform(1.5, 3.5, P), rng.uniform(-0.3, 0.3, P)
    seeds = point_seeds(3, np.stack([T, h], axis=1))
    ns, ev = rng.integers(5, 30, P), rng.integers(1, 4, P)
    outs = []
    for threads in (1, 2):
        monkeypatch.setattr(ising_mod, "num_threads", lambda t=threads: t)
        monkeypatch.setattr(_rng, "num_threads", lambda t=threads: t)
        chains = ising_mod._Chains(1 / T, h / T, L, seeds, False)
        outs.append((chains._lane_run(np.arange(P), ns, ev, 5, True), chains.spins.copy()))
    (a, sa), (b, sb) = outs
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(sa, sb)


def _sample_in_child(queue) -> None:  # runs in a forked child
    src = Ising2D(6, burn_in=20, thin=2)
    queue.put(src.sample(np.array([[2.0, 0.0]] * 16), 2, seed=0))


def test_sampling_works_in_a_forked_child() -> None:
    # the persistent thread pool is process-local: a forked child must not wait on the parent's
    # (absent) worker threads
    import multiprocessing

    src = Ising2D(6, burn_in=20, thin=2)
    parent = src.sample(np.array([[2.0, 0.0]] * 16), 2, seed=0)  # creates the pool
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_sample_in_child, args=(queue,))
    proc.start()
    child = queue.get(timeout=120)
    proc.join(timeout=30)
    np.testing.assert_array_equal(child, parent)


def test_sampling_leaves_torch_thread_count_alone() -> None:
    # numba.get_num_threads() starts numba's OpenMP layer, which calls omp_set_num_threads(ncpu)
    # and so reset torch.set_num_threads(1) to the CPU count (measured: 1 -> 2 here); with two
    # test workers on two cores, the extra spinning OpenMP threads slowed in-process tests ~10x.
    # A fresh interpreter: numba's layer starts once per process.
    import subprocess
    import sys

    code = (
        "import torch; torch.set_num_threads(1)\n"
        "a = torch.randn(300, 300); (a @ a).sum()\n"  # torch's thread pool is started
        "import latentatlas as la\n"
        "la.sources.Ising2D(L=4).sample([[0.4, 0.0], [0.3, 0.1]], n=4, seed=0)\n"
        "la.sources.TASEP(L=6).sample([[0.3, 0.6]], n=4, seed=0)\n"
        "print(torch.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "1", out.stdout + out.stderr
