"""Closed forms of the 2-D Ising model at zero field (no transfer matrix): the infinite lattice
(Onsager 1944, Yang 1952) and the finite L x L torus (Kaufman 1949); and the argument checks shared
with :mod:`latentatlas.exact.ising`, which re-exports these functions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import integrate, special

__all__ = ["KC", "kaufman_log_z", "onsager_energy", "onsager_log_z", "onsager_specific_heat",
           "yang_magnetization"]

KC: float = 0.5 * float(np.log1p(np.sqrt(2.0)))
"""Critical coupling K_c = ½ log(1 + √2) ≈ 0.4406868 (T_c ≈ 2.2691853 for J = 1)."""


# ----------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------
def _check_finite(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        bad = x[~np.isfinite(x)].ravel()[0]
        raise ValueError(f"{name}: expected finite values, got {bad}")
    return x


def _check_coupling(K: np.ndarray | float, name: str = "K", positive: bool = True) -> np.ndarray:
    K = _check_finite(name, K)
    if positive and np.any(K <= 0):
        raise ValueError(
            f"{name}: expected K > 0 (ferromagnetic coupling), got {K[K <= 0].ravel()[0]}"
        )
    return K


def _check_L(L: int, name: str = "L", max_L: int | None = None) -> int:
    if isinstance(L, bool) or not isinstance(L, int | np.integer):
        raise ValueError(f"{name}: expected an int >= 2, got {L!r}")
    if L < 2:
        raise ValueError(f"{name}: expected an int >= 2, got {L}")
    if max_L is not None and L > max_L:
        raise ValueError(
            f"{name}: the transfer matrix is limited to L <= {max_L} (2^L row states), got {L}; "
            "use kaufman_log_z for larger lattices at H = 0"
        )
    return int(L)


def _check_natural(
    natural: np.ndarray | Sequence[Sequence[float]], name: str = "natural"
) -> np.ndarray:
    arr = np.asarray(natural, dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == 2:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name}: expected shape (P, 2) of (K, H), got {np.shape(natural)}")
    _check_finite(name, arr)
    return arr


# ----------------------------------------------------------------------------------------------
# infinite lattice (Onsager, Yang)
# ----------------------------------------------------------------------------------------------
def _kappa(K: np.ndarray) -> np.ndarray:
    return 2.0 * np.sinh(2.0 * K) / np.cosh(2.0 * K) ** 2


def _onsager_integral(kappa: float) -> float:
    # (1/π) ∫_0^{π/2} log(½ (1 + sqrt(1 - κ² sin² φ))) dφ; the integrand is smooth except for
    # a |cos φ| kink at the end point φ = π/2 when κ = 1, which quad handles to ~1e-15.
    def f(phi: float) -> float:
        return np.log(0.5 * (1.0 + np.sqrt(max(1.0 - (kappa * np.sin(phi)) ** 2, 0.0))))

    val, _ = integrate.quad(f, 0.0, np.pi / 2, epsabs=1e-15, epsrel=1e-13, limit=200)
    return val / np.pi


def onsager_log_z(K: np.ndarray | float) -> np.ndarray:
    """Onsager's free energy: ``-β f = lim (1/N) log Z`` per spin at H = 0 (infinite lattice).

    ``log(2 cosh 2K) + (1/π) ∫_0^{π/2} log ½(1 + sqrt(1 - κ² sin² φ)) dφ``, κ = 2 sinh 2K / cosh² 2K,
    by adaptive quadrature (accurate to ~1e-13). ``onsager_log_z(KC) = 0.9296953983...``.

    Args:
        K: coupling(s), any shape, K > 0.

    Returns:
        array of the same shape.
    """
    K = _check_coupling(K)
    kappa = _kappa(K)
    integral = np.vectorize(_onsager_integral, otypes=[np.float64])(kappa)
    # log(2 cosh 2K) = 2K + log1p(exp(-4K)), stable for large K
    return 2.0 * K + np.log1p(np.exp(-4.0 * K)) + integral


def onsager_energy(K: np.ndarray | float) -> np.ndarray:
    """Internal energy per spin ``u = E[-Σ_<ij> s_i s_j] / N = -d(log z)/dK`` (J = 1), infinite lattice.

    ``u = -coth 2K [1 + (2/π)(2 tanh² 2K - 1) K(κ)]`` with K(κ) the complete elliptic integral of
    the first kind; ``u(K_c) = -√2`` (the K(κ) divergence is cancelled by the vanishing prefactor).

    Args:
        K: coupling(s), any shape, K > 0.
    """
    K = _check_coupling(K)
    t2 = np.tanh(2.0 * K) ** 2
    kappa = _kappa(K)
    pref = 2.0 * t2 - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ek = special.ellipk(kappa**2)
        term = np.where(pref == 0.0, 0.0, pref * ek)
    return -(1.0 / np.tanh(2.0 * K)) * (1.0 + (2.0 / np.pi) * term)


def onsager_specific_heat(K: np.ndarray | float) -> np.ndarray:
    """Specific heat per spin ``c = K² d² log z / dK² = -K² du/dK`` (k_B = 1), infinite lattice.

    Exact derivative of :func:`onsager_energy` (chain rule through the elliptic integral,
    ``dK(κ)/dκ = E(κ)/(κ(1 - κ²)) - K(κ)/κ``); it diverges logarithmically at K_c (``inf`` there).

    Args:
        K: coupling(s), any shape, K > 0.
    """
    K = _check_coupling(K)
    t = np.tanh(2.0 * K)
    q = 2.0 * t * t - 1.0
    sech = 1.0 / np.cosh(2.0 * K)
    kappa = 2.0 * t * sech
    with np.errstate(divide="ignore", invalid="ignore"):
        k1 = special.ellipk(kappa**2)
        e1 = special.ellipe(kappa**2)
        dk1 = e1 / (kappa * (1.0 - kappa**2)) - k1 / kappa
        du = 2.0 * (1.0 - t * t) / t**2 * (1.0 + (2.0 / np.pi) * q * k1) - (1.0 / t) * (
            2.0 / np.pi
        ) * (8.0 * t * (1.0 - t * t) * k1 - 4.0 * sech * q * q * dk1)
        c = -(K**2) * du
    return np.where(kappa >= 1.0, np.inf, c)


def yang_magnetization(K: np.ndarray | float) -> np.ndarray:
    """Spontaneous magnetization per spin, ``(1 - sinh(2K)^-4)^(1/8)`` for K > K_c, else 0.

    Args:
        K: coupling(s), any shape, K > 0.
    """
    K = _check_coupling(K)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inner = 1.0 - np.sinh(2.0 * K) ** -4.0
        return np.where(K > KC, np.clip(inner, 0.0, None) ** 0.125, 0.0)


# ----------------------------------------------------------------------------------------------
# finite torus at H = 0 (Kaufman)
# ----------------------------------------------------------------------------------------------
def _log_2cosh(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return a + np.log1p(np.exp(-2.0 * a))


def _log_abs_2sinh(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.abs(x)
    with np.errstate(divide="ignore"):
        return a + np.log(-np.expm1(-2.0 * a)), np.sign(x)


def kaufman_log_z(L: int, K: np.ndarray | float) -> np.ndarray:
    """Kaufman's exact log Z of the whole periodic L x L lattice at H = 0.

    ``Z = ½ (2 sinh 2K)^{N/2} (Z1 + Z2 + Z3 + Z4)`` with ``Z1,2 = Π_r 2cosh, 2sinh(L γ_{2r+1} / 2)``,
    ``Z3,4 = Π_r 2cosh, 2sinh(L γ_{2r} / 2)``, ``cosh γ_l = cosh 2K coth 2K - cos(π l / L)`` and
    ``γ_0 = 2K + log tanh K`` (negative above T_c). Every product is kept as (log|.|, sign), so
    the result is accurate for any K > 0 (large K included).

    Args:
        L: linear size (>= 2).
        K: coupling(s), any shape, K > 0.

    Returns:
        log Z, same shape as K.
    """
    L = _check_L(L)
    K = _check_coupling(K)
    shape = K.shape
    k = K.reshape(-1, 1)
    ell = np.arange(2 * L)[None, :]
    c = np.cosh(2.0 * k) / np.tanh(2.0 * k) - np.cos(np.pi * ell / L)
    # arccosh(c) for c >= 1, stable: log(c + sqrt(c^2 - 1)); c - 1 computed without cancellation
    gamma = np.arccosh(np.maximum(c, 1.0))
    gamma[:, 0] = 2.0 * k[:, 0] + np.log(np.tanh(k[:, 0]))
    odd = gamma[:, 1::2] * (L / 2.0)
    even = gamma[:, 0::2] * (L / 2.0)
    terms_log = []
    terms_sign = []
    terms_log.append(_log_2cosh(odd).sum(1))
    terms_sign.append(np.ones(len(k)))
    la, sa = _log_abs_2sinh(odd)
    terms_log.append(la.sum(1))
    terms_sign.append(np.prod(sa, axis=1))
    terms_log.append(_log_2cosh(even).sum(1))
    terms_sign.append(np.ones(len(k)))
    la, sa = _log_abs_2sinh(even)
    terms_log.append(la.sum(1))
    terms_sign.append(np.prod(sa, axis=1))
    tl = np.stack(terms_log, 1)
    ts = np.stack(terms_sign, 1)
    top = np.max(tl, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.sum(ts * np.exp(tl - top), axis=1)
    # log(2 sinh 2K) = 2K + log(1 - exp(-4K))
    log_2sinh = 2.0 * k[:, 0] + np.log(-np.expm1(-4.0 * k[:, 0]))
    out = -np.log(2.0) + 0.5 * L * L * log_2sinh + top[:, 0] + np.log(s)
    return out.reshape(shape)
