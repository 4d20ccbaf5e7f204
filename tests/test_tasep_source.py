"""TASEP: simulated current and density profile against the exact stationary state (L = 10).

Reference: the stationary distribution of the 2^10-state master equation (random-sequential
update = continuous time), solved directly here; cross-checked against the DEHP formula
J = Z_{L-1} / Z_L. Error bars: batch means over 20 consecutive batches of one chain (see
test_ising_source.py); |estimate - exact| < 4 SE fails with probability < 1e-3 per comparison for a
correct sampler, and the tests are seeded.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

import latentatlas as la
from latentatlas.exact import tasep as exact_tasep
from latentatlas.sources.tasep import TASEP

L = 10
BATCHES = 20


def batch_mean_se(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = (len(values) // BATCHES) * BATCHES
    b = values[:n].reshape(BATCHES, n // BATCHES, *values.shape[1:]).mean(axis=1)
    return b.mean(axis=0), b.std(axis=0, ddof=1) / math.sqrt(BATCHES)


def master_equation(L: int, alpha: float, beta: float) -> tuple[float, np.ndarray]:
    """Exact stationary current and density profile (L,) from the generator's null vector."""
    return _master_equation(int(L), float(alpha), float(beta))


@functools.cache
def _master_equation(L: int, alpha: float, beta: float) -> tuple[float, np.ndarray]:
    S = 1 << L
    occ = (np.arange(S)[:, None] >> np.arange(L)) & 1  # bit i = site i
    Q = np.zeros((S, S))
    for s in range(S):
        o = occ[s]
        if o[0] == 0:
            Q[s, s | 1] += alpha
        if o[L - 1] == 1:
            Q[s, s & ~(1 << (L - 1))] += beta
        for i in range(L - 1):
            if o[i] == 1 and o[i + 1] == 0:
                Q[s, s ^ (1 << i) ^ (1 << (i + 1))] += 1.0
    Q -= np.diag(Q.sum(axis=1))
    A = Q.T.copy()
    A[0] = 1.0  # replace one balance equation by the normalisation
    rhs = np.zeros(S)
    rhs[0] = 1.0
    pi = np.linalg.solve(A, rhs)
    profile = pi @ occ
    return float(beta * profile[L - 1]), profile


def dehp_current(L: int, alpha: float, beta: float) -> float:
    """Derrida-Evans-Hakim-Pasquier: Z_N = sum_p p (2N-1-p)! / (N! (N-p)!) *
    (b^-(p+1) - a^-(p+1)) / (b^-1 - a^-1); J = Z_{L-1} / Z_L (alpha != beta)."""

    def Z(N: int) -> float:
        a, b = 1 / alpha, 1 / beta
        return sum(
            p * math.factorial(2 * N - 1 - p) / (math.factorial(N) * math.factorial(N - p))
            * (b ** (p + 1) - a ** (p + 1)) / (b - a)
            for p in range(1, N + 1)
        )

    return Z(L - 1) / Z(L)


POINTS = np.array(
    [
        [0.2, 0.7],  # low density
        [0.8, 0.2],  # high density
        [0.8, 0.9],  # maximal current
        [0.6, 0.6],  # maximal current, alpha = beta
        [0.3, 0.7],  # alpha + beta = 1: flat profile at alpha
        [0.65, 0.35],  # alpha + beta = 1, high-density side
    ]
)


@pytest.fixture(scope="module")
def simulation():
    src = TASEP(L)
    x, diag = src.sample_with_diagnostics(POINTS, 4000, seed=11)
    return x, diag


def test_master_equation_matches_dehp() -> None:
    for alpha, beta in [(0.2, 0.7), (0.8, 0.3), (0.9, 0.6)]:
        J, _ = master_equation(L, alpha, beta)
        np.testing.assert_allclose(J, dehp_current(L, alpha, beta), rtol=1e-10)


def test_current_in_every_phase(simulation) -> None:
    x, diag = simulation
    assert x.shape == (len(POINTS), 4000, L) and x.dtype == np.uint8
    for p, (alpha, beta) in enumerate(POINTS):
        J, profile = master_equation(L, alpha, beta)
        # estimator from the samples: J = beta <tau_{L-1}>, batch-means error
        j_hat, j_se = batch_mean_se(beta * x[p, :, L - 1].astype(np.float64))
        assert abs(j_hat - J) < 4 * j_se, (alpha, beta, j_hat, J, j_se)
        # measured flux of particles leaving per unit time, with its own standard error
        assert abs(diag["current"][p] - J) < 4 * diag["current_stderr"][p], (
            alpha, beta, diag["current"][p], J, diag["current_stderr"][p],
        )
        # and the full density profile
        rho, rho_se = batch_mean_se(x[p].astype(np.float64))
        assert np.all(np.abs(rho - profile) < 4 * rho_se), (alpha, beta, rho, profile, rho_se)
        np.testing.assert_allclose(diag["density"][p], x[p].mean(), rtol=1e-12)


def test_exact_module_agrees() -> None:
    exact = exact_tasep
    for alpha, beta in POINTS:
        J, _ = master_equation(L, alpha, beta)
        np.testing.assert_allclose(exact.current(L, alpha, beta), J, rtol=1e-8)


def test_flat_profile_on_the_line(simulation) -> None:
    x, _ = simulation
    for p, (alpha, beta) in enumerate(POINTS):
        if abs(alpha + beta - 1) > 1e-12:
            continue
        _, profile = master_equation(L, alpha, beta)
        np.testing.assert_allclose(profile, alpha, atol=1e-10)  # Bernoulli product measure
        rho, se = batch_mean_se(x[p].astype(np.float64))
        assert np.all(np.abs(rho - alpha) < 4 * se), (alpha, rho, se)


def test_diagnostics(simulation) -> None:
    _, diag = simulation
    for key in ("current", "current_stderr", "density", "tau_density", "tau_current",
                "burn_in", "thin"):
        assert diag[key].shape == (len(POINTS),) and np.all(np.isfinite(diag[key])), key
    assert np.all(diag["thin"] >= np.ceil(2 * diag["tau_density"]) - 1e-9)
    assert np.all(diag["burn_in"] >= 20 * diag["tau_density"])


def test_determinism_and_batching() -> None:
    src = TASEP(7, burn_in=30, thin=3)
    batch = src.sample(POINTS, 6, seed=4)
    for p in range(len(POINTS)):
        np.testing.assert_array_equal(src.sample(POINTS[p], 6, seed=4)[0], batch[p])
    assert not np.array_equal(src.sample(POINTS, 6, seed=5), batch)
    auto = TASEP(7)
    b, db = auto.sample_with_diagnostics(POINTS[:3], 3, seed=0)
    a, da = auto.sample_with_diagnostics(POINTS[2:3], 3, seed=0)
    np.testing.assert_array_equal(a[0], b[2])
    assert da["thin"][0] == db["thin"][2] and da["burn_in"][0] == db["burn_in"][2]


def test_alpha_one_fills_the_entrance() -> None:
    # with alpha = 1 and beta = 1 the MC phase density at the entrance exceeds 1/2, exit below
    x = TASEP(L).sample([[1.0, 1.0]], 2000, seed=0)[0]
    J, profile = master_equation(L, 1.0, 1.0)
    rho, se = batch_mean_se(x.astype(np.float64))
    assert np.all(np.abs(rho - profile) < 4 * se)
    assert profile[0] > 0.5 > profile[-1]


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ([[0.0, 0.5]], "alpha must lie in \\(0, 1\\]"),
        ([[0.5, 0.0]], "beta must lie in \\(0, 1\\]"),
        ([[1.5, 0.5]], "alpha must lie"),
        ([[0.5, -0.1]], "beta must lie"),
        ([[float("nan"), 0.5]], "params: expected finite"),
        ([[0.5]], "params: expected shape"),
    ],
)
def test_bad_params(params, match) -> None:
    with pytest.raises(ValueError, match=match):
        TASEP(5).sample(params, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"L": 0}, "L: expected"), ({"L": 3.0}, "L: expected"), ({"burn_in": "x"}, "burn_in"),
     ({"thin": 0}, "thin"), ({"max_thin": 0}, "max_thin")],
)
def test_bad_constructor(kwargs, match) -> None:
    args = {"L": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        TASEP(**args)


def test_lazy_name_and_roundtrip(tmp_path) -> None:
    assert la.sources.TASEP is TASEP
    la.save(TASEP(12, thin=4), tmp_path / "t.safetensors")
    assert la.load(tmp_path / "t.safetensors").config == TASEP(12, thin=4).config
