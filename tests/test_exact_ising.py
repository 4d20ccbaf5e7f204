"""Exact Ising references against brute-force enumeration, Kaufman, Onsager and finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from latentatlas.exact import ising as I


def _configs(L: int) -> np.ndarray:
    N = L * L
    return (((np.arange(2**N)[:, None] >> np.arange(N)) & 1) * 2 - 1).reshape(-1, L, L)


def _stats(L: int) -> np.ndarray:
    s = _configs(L)
    bonds = (s * np.roll(s, 1, 1)).sum((1, 2)) + (s * np.roll(s, 1, 2)).sum((1, 2))
    return np.stack([bonds, s.sum((1, 2))], 1).astype(np.float64)  # (2^N, 2)


def _brute(f: np.ndarray, K: float, H: float) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    lw = f @ np.array([K, H])
    top = lw.max()
    w = np.exp(lw - top)
    p = w / w.sum()
    mean = p @ f
    cov = (f - mean).T @ ((f - mean) * p[:, None])
    return float(np.log(w.sum()) + top), mean, cov, p


POINTS = [(0.2, 0.0), (0.44, 0.1), (1.0, -0.3), (0.7, 0.02), (-0.3, 0.2)]


@pytest.mark.parametrize("L", [2, 3, 4])
def test_transfer_matrix_equals_enumeration(L: int) -> None:
    f = _stats(L)
    ex = I.IsingExact(L)
    log_z, grad, hess = ex.all(np.array(POINTS))
    for i, (K, H) in enumerate(POINTS):
        b_log_z, b_mean, b_cov, _ = _brute(f, K, H)
        # both are double-precision sums of <= 65536 positive terms: agreement to ~1e-12 relative
        assert log_z[i] == pytest.approx(b_log_z, rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(grad[i], b_mean, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(hess[i], b_cov, rtol=1e-9, atol=1e-9)
    # the single-quantity methods agree with the joint pass, and batching does not matter
    np.testing.assert_allclose(ex.log_z(np.array(POINTS)), log_z, rtol=1e-14)
    np.testing.assert_allclose(ex.hessian(np.array(POINTS[1])), hess[1:2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("L", [3, 4])
def test_magnetization_distribution_equals_enumeration(L: int) -> None:
    s = _configs(L)
    f = _stats(L)
    mags = s.sum((1, 2))
    ex = I.IsingExact(L)
    pts = np.array([(0.3, 0.0), (0.6, 0.1), (1.0, -0.2)])
    law = ex.magnetization_distribution(pts)
    absm = ex.abs_magnetization_per_spin(pts)
    for i, (K, H) in enumerate(pts):
        p = _brute(f, K, H)[3]
        exact = np.bincount((mags + L * L) // 2, weights=p, minlength=L * L + 1)
        # DFT of N + 1 bounded terms: absolute round-off ~ N * 1e-16
        np.testing.assert_allclose(law[i], exact, atol=1e-13)
        assert absm[i] == pytest.approx(p @ np.abs(mags) / L**2, abs=1e-13)


def test_magnetization_distribution_is_consistent_at_l8() -> None:
    ex = I.IsingExact(8)
    pts = np.array([[0.6, 0.05], [0.5, 0.0], [0.3, 0.0]])
    law = ex.magnetization_distribution(pts)
    values = np.arange(-64, 65, 2)
    np.testing.assert_allclose(law.sum(1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(law @ values, ex.gradient(pts)[:, 1], rtol=1e-10, atol=1e-10)
    var = law @ values**2 - (law @ values) ** 2
    np.testing.assert_allclose(var, ex.hessian(pts)[:, 1, 1], rtol=1e-10)
    # symmetric at H = 0; ordered phase: E|m| within 1 % of Yang's m at L = 8 (K = 0.5)
    np.testing.assert_allclose(law[1], law[1][::-1], atol=1e-14)
    assert ex.abs_magnetization_per_spin(pts[1:2])[0] == pytest.approx(
        float(I.yang_magnetization(0.5)), rel=0.01
    )


@pytest.mark.parametrize("L", list(range(3, 11)))
def test_transfer_matrix_equals_kaufman(L: int) -> None:
    K = np.array([0.1, 0.3, I.KC, 0.6, 1.5])  # both sides of K_c
    tm = I.transfer_matrix_log_z(L, K, 0.0)
    kf = I.kaufman_log_z(L, K)
    # two unrelated exact methods; log Z <= 2 N K + N log 2 <= 300, float64 rounding ~1e-13
    np.testing.assert_allclose(tm, kf, rtol=1e-13, atol=1e-12)


def test_large_coupling_is_stable() -> None:
    # K = 50: only the two ground states count, log Z = 2 N K + log 2 (corrections ~ e^{-16 K})
    for L in (4, 7):
        expected = 2 * L * L * 50.0 + np.log(2.0)
        assert I.kaufman_log_z(L, 50.0) == pytest.approx(expected, rel=1e-15)
        assert I.transfer_matrix_log_z(L, 50.0, 0.0) == pytest.approx(expected, rel=1e-15)


def test_hessian_and_gradient_equal_finite_differences() -> None:
    ex = I.IsingExact(5)
    x = np.array([[0.35, 0.08], [0.6, -0.2]])
    log_z, grad, hess = ex.all(x)
    e = 1e-4
    eye = np.eye(2) * e
    for i in range(len(x)):

        def f(d: np.ndarray, i: int = i) -> float:
            return ex.log_z(x[i : i + 1] + d)[0]

        fd_grad = np.array([(f(eye[a]) - f(-eye[a])) / (2 * e) for a in range(2)])
        fd_hess = np.array(
            [
                [
                    (
                        f(eye[a] + eye[b])
                        - f(eye[a] - eye[b])
                        - f(-eye[a] + eye[b])
                        + f(-eye[a] - eye[b])
                    )
                    / (4 * e * e)
                    for b in range(2)
                ]
                for a in range(2)
            ]
        )
        # truncation e^2/6 * (3rd/4th cumulants ~ 2e3..1e4) ~ 1e-5; rounding 1e-16 * 50 / e^2 ~ 5e-7
        np.testing.assert_allclose(grad[i], fd_grad, rtol=1e-6)
        np.testing.assert_allclose(hess[i], fd_hess, rtol=1e-5, atol=1e-5)


def test_per_spin_observables_match_kaufman_derivatives() -> None:
    L, K, e = 10, np.array([0.3, 0.5]), 1e-4
    ex = I.IsingExact(L)
    nat = np.stack([K, np.zeros(2)], 1)
    kf = lambda k: I.kaufman_log_z(L, k)  # noqa: E731
    u_fd = -(kf(K + e) - kf(K - e)) / (2 * e) / L**2
    c_fd = K**2 * (kf(K + e) - 2 * kf(K) + kf(K - e)) / e**2 / L**2
    np.testing.assert_allclose(ex.energy_per_spin(nat), u_fd, rtol=1e-7)
    np.testing.assert_allclose(ex.specific_heat_per_spin(nat), c_fd, rtol=1e-4)
    np.testing.assert_allclose(ex.magnetization_per_spin(nat), 0.0, atol=1e-10)
    chi = ex.susceptibility_per_spin(nat)
    np.testing.assert_allclose(chi, K * ex.hessian(nat)[:, 1, 1] / L**2, rtol=1e-14)
    # above T_c the finite-lattice susceptibility is close to its infinite value (chi ~ 0.4 at
    # K = 0.3); deep below, Var(M)/N ~ N m^2 with m the spontaneous magnetization
    m0 = I.yang_magnetization(0.5)
    assert chi[1] / K[1] == pytest.approx(L**2 * m0**2, rel=0.05)


def test_onsager_values() -> None:
    assert I.KC == pytest.approx(0.44068679350977151, rel=1e-15)
    assert float(I.onsager_log_z(I.KC)) == pytest.approx(0.9296953983416102, abs=1e-10)
    assert float(I.onsager_energy(I.KC)) == pytest.approx(-np.sqrt(2.0), abs=1e-12)
    # Yang at T = 2 (K = 0.5): m = 0.911319...; known low-T limit m -> 1
    np.testing.assert_allclose(
        I.yang_magnetization([0.3, 0.5, 3.0]), [0.0, 0.9113193, 1.0], atol=1e-7
    )
    # high-temperature limit: log z -> log 2 + 2 log cosh K + O(K^4)
    assert float(I.onsager_log_z(1e-3)) == pytest.approx(
        np.log(2) + 2 * np.log(np.cosh(1e-3)), abs=1e-11
    )


def test_onsager_derivatives_match_finite_differences() -> None:
    K = np.array([0.2, 0.4, 0.47, 0.8])
    e = 1e-5
    u_fd = -(I.onsager_log_z(K + e) - I.onsager_log_z(K - e)) / (2 * e)
    np.testing.assert_allclose(I.onsager_energy(K), u_fd, rtol=1e-8)  # quad error 1e-13 / e
    c_fd = -(K**2) * (I.onsager_energy(K + e) - I.onsager_energy(K - e)) / (2 * e)
    np.testing.assert_allclose(I.onsager_specific_heat(K), c_fd, rtol=1e-6)
    assert np.isinf(I.onsager_specific_heat(I.KC))


def test_kaufman_approaches_onsager() -> None:
    K = np.array([0.3, I.KC, 0.6])
    diffs = np.array(
        [np.abs(I.kaufman_log_z(L, K) / L**2 - I.onsager_log_z(K)) for L in (8, 16, 32, 64, 128)]
    )
    # monotone convergence at every K (at K = 0.3 it reaches float64 rounding by L = 64)
    assert np.all(np.diff(diffs[:, 1:], axis=0) < 0) and np.all(np.diff(diffs[:4, 0]) < 0)
    assert diffs[-1, 0] < 1e-14  # off-critical: exponentially fast
    # critical and ordered: O(1/N) corrections (log 2 / N from the two ground states below T_c)
    assert diffs[-1, 1] < 1e-4 and diffs[-1, 2] == pytest.approx(np.log(2) / 128**2, rel=1e-3)


def test_temperature_coordinates_equal_brute_force_fisher() -> None:
    L, J = 3, 1.3
    f = _stats(L)
    params = np.array([[2.0, 0.1], [3.5, -0.4]])
    ref = I.reference(L, params, coords="temperature", J=J)
    for i, (T, h) in enumerate(params):
        log_z, mean, _, p = _brute(f, J / T, h / T)
        # score in (T, h): d log p / dt = (f - E f) . d theta / dt, theta = (J/T, h/T)
        dtheta = np.array([[-J / T**2, -h / T**2], [0.0, 1.0 / T]])  # rows: d/dT, d/dh
        score = (f - mean) @ dtheta.T
        fisher = score.T @ (score * p[:, None])
        np.testing.assert_allclose(ref["metric"][i], fisher, rtol=1e-10, atol=1e-12)
        assert ref["potential"][i] == pytest.approx(log_z, rel=1e-12)
        np.testing.assert_allclose(ref["gradient"][i], dtheta @ mean, rtol=1e-10, atol=1e-12)
    nat = I.reference(L, params[:, ::-1] * 0 + [[0.3, 0.1]], coords="natural")
    assert nat["metric"].shape == (2, 2, 2) and nat["gradient"].shape == (2, 2)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="L"):
        I.IsingExact(1)
    with pytest.raises(ValueError, match="L <= 10"):
        I.IsingExact(11)
    with pytest.raises(ValueError, match="L <= 10"):
        I.transfer_matrix_log_z(12, 0.3)
    with pytest.raises(ValueError, match="natural"):
        I.IsingExact(3).log_z([[np.nan, 0.0]])
    with pytest.raises(ValueError, match=r"\(P, 2\)"):
        I.IsingExact(3).log_z(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="K"):
        I.onsager_log_z(-0.1)
    with pytest.raises(ValueError, match="K"):
        I.kaufman_log_z(4, np.nan)
    with pytest.raises(ValueError, match="coords"):
        I.reference(3, [[1.0, 0.0]], coords="polar")
    with pytest.raises(ValueError, match="T > 0"):
        I.reference(3, [[-1.0, 0.0]], coords="temperature")
