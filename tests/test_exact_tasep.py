"""Exact TASEP references: matrix product vs master equation vs explicit matrices, FD, limits."""

from __future__ import annotations

import numpy as np
import pytest

from latentatlas.exact import tasep as T

POINTS = [(0.3, 0.7), (0.2, 0.4), (0.8, 0.6), (0.5, 0.5), (1.0, 0.1), (0.25, 0.25)]


def _explicit_weights(L: int, a: float, b: float) -> np.ndarray:
    """Matrix-product weights with DEHP's explicit (tridiagonal) representation, truncated at
    dimension L + 1 (a word of length L never leaves it): D = 1 + upper shift, E = 1 + lower
    shift, D_00 = 1/b, E_00 = 1/a, D_01 = E_10 = sqrt((a + b - 1)/(a b)), <W| = <V| = e_0."""
    d = L + 1
    c = np.sqrt(complex((a + b - 1) / (a * b)))  # imaginary when a + b < 1: products stay real
    D = (np.eye(d) + np.eye(d, k=1)).astype(complex)
    E = (np.eye(d) + np.eye(d, k=-1)).astype(complex)
    D[0, 0], E[0, 0], D[0, 1], E[1, 0] = 1 / b, 1 / a, c, c
    w = np.empty(2**L)
    for cfg in range(2**L):
        M = np.eye(d, dtype=complex)
        for i in range(L):
            M = M @ (D if (cfg >> i) & 1 else E)
        assert abs(M[0, 0].imag) < 1e-9
        w[cfg] = M[0, 0].real
    return w


def _occupations(L: int) -> np.ndarray:
    return (np.arange(2**L)[:, None] >> np.arange(L)) & 1  # (2^L, L), bit i = site i + 1


@pytest.mark.parametrize("L", [1, 2, 4, 6])
def test_matrix_product_equals_master_equation(L: int) -> None:
    occ = _occupations(L)
    for a, b in POINTS:
        w = _explicit_weights(L, a, b)
        p = T.stationary_distribution(L, a, b)
        f, _ = T.matrix_product_weights(L, a, b)
        np.testing.assert_allclose(f, w, rtol=1e-12)  # same normalisation <W|V> = 1
        np.testing.assert_allclose(
            T.stationary_distribution(L, a, b, "matrix_product"), p, rtol=1e-10
        )
        # three independent routes agree to float64 rounding (sums of <= 64 positive terms)
        assert T.partition_function(L, a, b) == pytest.approx(w.sum(), rel=1e-12)
        np.testing.assert_allclose(p, w / w.sum(), rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(T.density_profile(L, a, b), p @ occ, rtol=1e-11)
        # current through every bond = Z_{L-1}/Z_L
        j = T.current(L, a, b)
        assert j == pytest.approx(b * (p @ occ[:, -1]), rel=1e-11)
        assert j == pytest.approx(a * (p @ (1 - occ[:, 0])), rel=1e-11)
        for i in range(L - 1):
            assert j == pytest.approx(p @ (occ[:, i] * (1 - occ[:, i + 1])), rel=1e-11)


def test_partition_function_closed_form_cases() -> None:
    # Z_1 = 1/a + 1/b (one site), and continuity through the alpha = beta limit
    assert T.partition_function(1, 0.3, 0.6) == pytest.approx(1 / 0.3 + 1 / 0.6, rel=1e-14)
    z_eq = T.partition_function(7, 0.4, 0.4)
    z_near = T.partition_function(7, 0.4, 0.4 * (1 + 1e-9))
    assert z_near == pytest.approx(z_eq, rel=1e-8)  # limit handled without cancellation
    # vectorised with broadcasting
    z = T.partition_function(5, np.array([0.2, 0.5, 0.9]), 0.5)
    assert z.shape == (3,)
    np.testing.assert_allclose(z, [_explicit_weights(5, a, 0.5).sum() for a in (0.2, 0.5, 0.9)])


def test_flat_profile_on_the_line_alpha_plus_beta_one() -> None:
    a = np.array([0.2, 0.35, 0.6, 0.9])
    prof = T.density_profile(40, a, 1 - a)
    np.testing.assert_allclose(prof, np.broadcast_to(a[:, None], prof.shape), rtol=1e-11)
    np.testing.assert_allclose(T.current(40, a, 1 - a), a * (1 - a), rtol=1e-12)


def test_large_systems_approach_the_phase_diagram() -> None:
    a = np.array([0.2, 0.9, 0.7])
    b = np.array([0.6, 0.1, 0.8])
    assert list(T.phase(a, b)) == ["LD", "HD", "MC"]
    np.testing.assert_allclose(T.current_infinite(a, b), [0.16, 0.09, 0.25])
    err = T.current(1000, a, b) - T.current_infinite(a, b)
    # LD/HD: exponentially small corrections; MC: J_L = 1/4 (1 + 3/(2L) + O(L^-2))
    assert abs(err[0]) < 1e-10 and abs(err[1]) < 1e-10
    assert err[2] == pytest.approx(0.25 * 1.5 / 1000, rel=0.01)
    # LD bulk density alpha far from the exit; HD bulk density 1 - beta
    prof = T.density_profile(400, a[:2], b[:2])
    np.testing.assert_allclose(prof[:, 150:250], np.repeat([[0.2], [0.9]], 100, 1), atol=1e-10)


def test_fisher_metric_equals_finite_differences() -> None:
    L, e = 6, 1e-6
    params = np.array([[0.3, 0.6], [0.7, 0.8], [0.45, 0.2]])
    g = T.fisher_metric(L, params)
    ref = T.reference(L, params)
    np.testing.assert_allclose(ref["metric"], g)
    np.testing.assert_allclose(ref["current"], T.current(L, params[:, 0], params[:, 1]))
    for i, (a, b) in enumerate(params):
        p = T.stationary_distribution(L, a, b)
        lp = lambda x, y: np.log(T.stationary_distribution(L, x, y))  # noqa: E731
        score = np.stack(
            [(lp(a + e, b) - lp(a - e, b)) / (2 * e), (lp(a, b + e) - lp(a, b - e)) / (2 * e)], 1
        )
        fd = score.T @ (score * p[:, None])
        # central differences: truncation e^2 ~ 1e-12, rounding 1e-16/e ~ 1e-10 per score entry
        np.testing.assert_allclose(g[i], fd, rtol=1e-7, atol=1e-9)
        assert np.all(np.linalg.eigvalsh(g[i]) > 0)


def test_fisher_metric_routes_agree() -> None:
    # master equation (sparse LU) vs forward-mode matrix product: independent exact routes
    params = np.array([[0.3, 0.6], [0.05, 0.05], [0.9, 0.02], [1.0, 1.0], [0.5, 0.5]])
    for L in (8, 10):
        g_master = T.fisher_metric(L, params, method="master")
        g_mp = T.fisher_metric(L, params)
        np.testing.assert_allclose(g_mp, g_master, rtol=1e-10, atol=1e-12)
    # derivatives of the weights against central differences (polynomials in 1/alpha, 1/beta)
    a, b, e = 0.35, 0.55, 1e-6
    f, df = T.matrix_product_weights(9, a, b)
    fd_a = (T.matrix_product_weights(9, a + e, b)[0] - T.matrix_product_weights(9, a - e, b)[0]) / (
        2 * e
    )
    fd_b = (T.matrix_product_weights(9, a, b + e)[0] - T.matrix_product_weights(9, a, b - e)[0]) / (
        2 * e
    )
    np.testing.assert_allclose(df, np.stack([fd_a, fd_b], 1), rtol=1e-7)
    assert f.sum() == pytest.approx(T.partition_function(9, a, b), rel=1e-13)
    # L = 14 (beyond the master equation): symmetric positive definite, and the particle-hole +
    # reflection symmetry (alpha, beta) -> (beta, alpha) swaps the metric's axes
    g = T.fisher_metric(14, [[0.3, 0.7], [0.7, 0.3]])
    np.testing.assert_allclose(g[1], g[0][::-1, ::-1], rtol=1e-10)
    assert np.all(np.linalg.eigvalsh(g) > 0)


def test_bad_input() -> None:
    for bad in (0.0, -0.1, 1.5, np.nan):
        with pytest.raises(ValueError, match="alpha"):
            T.partition_function(4, bad, 0.5)
        with pytest.raises(ValueError, match="beta"):
            T.current(4, 0.5, bad)
        with pytest.raises(ValueError, match="alpha"):
            T.fisher_metric(4, [[bad, 0.5]])
    with pytest.raises(ValueError, match="L <= 12"):
        T.stationary_distribution(13, 0.5, 0.5)
    with pytest.raises(ValueError, match="L <= 16"):
        T.fisher_metric(17, [[0.5, 0.5]])
    with pytest.raises(ValueError, match="L <= 12"):
        T.fisher_metric(13, [[0.5, 0.5]], method="master")
    with pytest.raises(ValueError, match="method"):
        T.fisher_metric(4, [[0.5, 0.5]], method="exact")
    with pytest.raises(ValueError, match="L"):
        T.density_profile(0, 0.5, 0.5)
    with pytest.raises(ValueError, match=r"\(P, 2\)"):
        T.fisher_metric(4, np.zeros((3, 3)) + 0.5)
