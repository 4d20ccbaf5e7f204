"""Exact results for the open TASEP (totally asymmetric simple exclusion process).

Model: sites 1..L (array index i = 0..L-1), continuous time (random-sequential update). A particle
enters site 1 at rate ``alpha`` if it is empty, hops from site i to i+1 at rate 1 if i+1 is empty,
and leaves from site L at rate ``beta``. Parameters live in (0, 1] (the region of the phase diagram
covered by the low-density (LD), high-density (HD) and maximal-current (MC) phases).

- Matrix product (Derrida, Evans, Hakim, Pasquier 1993): ``DE = D + E``, ``<W|E = <W|/alpha``,
  ``D|V> = |V>/beta``; the stationary weight of τ is ``<W| Π_i (τ_i D + (1 - τ_i) E) |V>``.
  :func:`partition_function`, :func:`log_partition_function`, :func:`current` (``Z_{L-1}/Z_L``),
  :func:`density_profile` (exact for any L, by reducing words in the algebra), :func:`phase`,
  :func:`current_infinite`.
- Stationary law of every configuration (configuration index = integer whose bit i is the
  occupation of site i+1, i.e. bit 0 = entry site, bit L-1 = exit site):
  :func:`stationary_distribution` from the master equation (sparse LU, L <= 12) or from the
  matrix product with exact derivatives (:func:`matrix_product_weights`, L <= 16);
  :func:`fisher_metric` (exact Fisher information of one configuration from the derivatives of
  the stationary law, by either route) and :func:`reference`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from scipy import sparse
from scipy.sparse import linalg as splinalg
from scipy.special import gammaln, logsumexp
from tqdm.auto import tqdm

from .._util.progress import enabled as progress_enabled

__all__ = [
    "MAX_MASTER_L",
    "MAX_MATRIX_PRODUCT_L",
    "current",
    "current_infinite",
    "density_profile",
    "fisher_metric",
    "log_partition_function",
    "matrix_product_weights",
    "partition_function",
    "phase",
    "reference",
    "stationary_distribution",
]

MAX_MASTER_L = 12
"""Largest L for the master-equation routines (2^L configurations, sparse LU)."""

MAX_MATRIX_PRODUCT_L = 16
"""Largest L for the configuration-resolved matrix-product routines (2^L configurations)."""


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------
def _check_rate(name: str, x: np.ndarray | float) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    bad = ~np.isfinite(arr) | (arr <= 0) | (arr > 1)
    if np.any(bad):
        raise ValueError(f"{name}: expected values in (0, 1], got {arr[bad].ravel()[0]}")
    return arr


def _check_L(L: int, max_L: int | None = None, what: str = "the master equation") -> int:
    if isinstance(L, bool) or not isinstance(L, int | np.integer) or L < 1:
        raise ValueError(f"L: expected a positive int, got {L!r}")
    if max_L is not None and L > max_L:
        raise ValueError(f"L: {what} is limited to L <= {max_L} (2^L configurations), got {L}")
    return int(L)


def _check_params(params: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    arr = np.asarray(params, dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == 2:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"params: expected shape (P, 2) of (alpha, beta), got {np.shape(params)}")
    _check_rate("params (alpha column)", arr[:, 0])
    _check_rate("params (beta column)", arr[:, 1])
    return arr


# ----------------------------------------------------------------------------------------------
# matrix product
# ----------------------------------------------------------------------------------------------
def log_partition_function(
    L: int, alpha: np.ndarray | float, beta: np.ndarray | float
) -> np.ndarray:
    """log Z_L with the normalisation ``<W|V> = 1`` (broadcast over alpha, beta).

    ``Z_L = Σ_{p=1}^{L} p (2L-1-p)! / (L! (L-p)!) Σ_{q=0}^{p} beta^{-q} alpha^{q-p}``, the inner sum
    being ``((1/β)^{p+1} - (1/α)^{p+1}) / (1/β - 1/α)`` (its α = β limit included), evaluated in
    logs so that any L works. ``L = 0`` gives 0 (Z_0 = 1).
    """
    if isinstance(L, bool) or not isinstance(L, int | np.integer) or L < 0:
        raise ValueError(f"L: expected a non-negative int, got {L!r}")
    a = _check_rate("alpha", alpha)
    b = _check_rate("beta", beta)
    a, b = np.broadcast_arrays(a, b)
    if L == 0:
        return np.zeros(a.shape)
    p = np.arange(1, L + 1, dtype=np.float64)
    comb = np.log(p) + gammaln(2 * L - p) - gammaln(L + 1) - gammaln(L - p + 1)  # (L,)
    la = np.log(a)[..., None]
    lr = (np.log(a) - np.log(b))[..., None]  # log(alpha / beta)
    x = np.abs(lr)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_geom = np.maximum(0.0, p * lr) + np.log(-np.expm1(-(p + 1) * x)) - np.log(-np.expm1(-x))
    log_geom = np.where(x == 0.0, np.log(p + 1), log_geom)
    return logsumexp(comb - p * la + log_geom, axis=-1)


def partition_function(L: int, alpha: np.ndarray | float, beta: np.ndarray | float) -> np.ndarray:
    """Matrix-product partition function Z_L (``<W|V> = 1``); overflows to inf for very large L
    (use :func:`log_partition_function`)."""
    return np.exp(log_partition_function(L, alpha, beta))


def current(L: int, alpha: np.ndarray | float, beta: np.ndarray | float) -> np.ndarray:
    """Exact stationary current ``J = Z_{L-1} / Z_L`` (broadcast over alpha, beta)."""
    L = _check_L(L)
    return np.exp(
        log_partition_function(L - 1, alpha, beta) - log_partition_function(L, alpha, beta)
    )


def density_profile(L: int, alpha: np.ndarray | float, beta: np.ndarray | float) -> np.ndarray:
    """Exact mean occupations ``<τ_i>``, i = 1..L, for any L.

    Computed in the algebra: ``<τ_i> = <W|C^{i-1} D C^{L-i}|V> / Z_L`` with ``C = D + E``; left
    vectors are kept as combinations of ``<W|D^k`` (using ``D^k E = D^k + ... + D + E``) and the
    right factors ``R_n[k] = <W|D^k C^n|V>`` obey ``R_n[k] = R_{n-1}[k+1] + Σ_{j=1}^{k} R_{n-1}[j]
    + R_{n-1}[0]/alpha``, ``R_0[k] = beta^{-k}``. All terms are positive (no cancellation) and
    everything is done in logs (no overflow for any L). Cost O(L^2) per (alpha, beta).

    Returns:
        array of shape ``broadcast(alpha, beta).shape + (L,)``.
    """
    L = _check_L(L)
    a = _check_rate("alpha", alpha)
    b = _check_rate("beta", beta)
    a, b = np.broadcast_arrays(a, b)
    shape = a.shape
    a, b = a.ravel(), b.ravel()
    chunk = max(1, (1 << 24) // (L + 1) ** 2)  # the right factors take chunk * (L + 1)^2 floats
    parts = [_profile_chunk(L, a[i : i + chunk], b[i : i + chunk]) for i in range(0, a.size, chunk)]
    out = np.concatenate(parts) if parts else np.zeros((0, L))
    return out.reshape(*shape, L)


def _profile_chunk(L: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    log_a = np.log(a.reshape(-1, 1))
    log_b = np.log(b.reshape(-1, 1))
    n_k = L + 1
    neg_inf = np.full((log_a.shape[0], 1), -np.inf)
    # log R_n[k], n = 0..L-1; R_n[k] is valid for k <= L - n (entries above are never used)
    r = -np.arange(n_k)[None, :] * log_b
    rights = [r]
    for _ in range(1, L):
        cums = np.logaddexp.accumulate(r[:, 1:], axis=1)  # log Σ_{j=1}^{k} R[j], k = 1..L
        shifted = np.concatenate([r[:, 1:], neg_inf], axis=1)  # R[k+1]
        new = np.logaddexp(shifted, np.concatenate([neg_inf, cums], axis=1))
        r = np.logaddexp(new, r[:, :1] - log_a)
        rights.append(r)
    # log l_{i-1}, l_{i-1} = <W|C^{i-1} as coefficients on <W|D^k
    left = np.concatenate([np.zeros_like(log_a), np.full((log_a.shape[0], L), -np.inf)], axis=1)
    log_num = np.empty((log_a.shape[0], L))
    for i in range(1, L + 1):
        ld = np.concatenate([neg_inf, left[:, :-1]], axis=1)  # l . D
        log_num[:, i - 1] = logsumexp(ld + rights[L - i], axis=1)
        # l . C = l . D + l . E with <W|D^j E = Σ_{k=1}^{j} <W|D^k + <W|/alpha
        tail = np.logaddexp.accumulate(left[:, ::-1], axis=1)[:, ::-1]  # log Σ_{j>=k} l[j]
        new = ld.copy()
        new[:, 1:] = np.logaddexp(new[:, 1:], tail[:, 1:])
        new[:, 0] = np.logaddexp(new[:, 0], tail[:, 0] - log_a[:, 0])
        left = new
    log_z = log_partition_function(L, a, b)
    return np.exp(log_num - log_z[:, None])


def phase(alpha: np.ndarray | float, beta: np.ndarray | float) -> np.ndarray:
    """Phase of the infinite system: ``"LD"`` (alpha < 1/2, alpha <= beta), ``"HD"`` (beta < 1/2,
    beta < alpha) or ``"MC"`` (alpha, beta >= 1/2). The coexistence line alpha = beta < 1/2 is
    labelled ``"LD"``. Returns an array of str with the broadcast shape."""
    a = _check_rate("alpha", alpha)
    b = _check_rate("beta", beta)
    a, b = np.broadcast_arrays(a, b)
    out = np.full(a.shape, "MC", dtype="<U2")
    out[(a < 0.5) & (a <= b)] = "LD"
    out[(b < 0.5) & (b < a)] = "HD"
    return out


def current_infinite(alpha: np.ndarray | float, beta: np.ndarray | float) -> np.ndarray:
    """Current of the infinite system: alpha(1 - alpha) (LD), beta(1 - beta) (HD), 1/4 (MC)."""
    a = _check_rate("alpha", alpha)
    b = _check_rate("beta", beta)
    a, b = np.broadcast_arrays(a, b)
    ph = phase(a, b)
    return np.where(ph == "LD", a * (1 - a), np.where(ph == "HD", b * (1 - b), 0.25))


# ----------------------------------------------------------------------------------------------
# master equation
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _generators(L: int) -> tuple[sparse.csc_matrix, sparse.csc_matrix, sparse.csc_matrix]:
    """(Q_alpha, Q_beta, Q_bulk): ``Q = alpha Q_alpha + beta Q_beta + Q_bulk``, ``dp/dt = Q p``."""
    n = 1 << L
    s = np.arange(n)

    def gen(src: np.ndarray, dst: np.ndarray) -> sparse.csc_matrix:
        rows = np.concatenate([dst, src])
        cols = np.concatenate([src, src])
        vals = np.concatenate([np.ones(len(src)), -np.ones(len(src))])
        return sparse.csc_matrix((vals, (rows, cols)), shape=(n, n))

    inj = s[(s & 1) == 0]
    q_alpha = gen(inj, inj | 1)
    top = 1 << (L - 1)
    ext = s[(s & top) != 0]
    q_beta = gen(ext, ext & ~top)
    src, dst = [], []
    for i in range(L - 1):
        ok = s[((s >> i) & 1 == 1) & ((s >> (i + 1)) & 1 == 0)]
        src.append(ok)
        dst.append(ok ^ (1 << i) ^ (1 << (i + 1)))
    q_bulk = gen(np.concatenate(src), np.concatenate(dst)) if L > 1 else sparse.csc_matrix((n, n))
    return q_alpha, q_beta, q_bulk


def _solve(L: int, alpha: float, beta: float, derivatives: bool) -> tuple[np.ndarray, ...]:
    """p (2^L,) and, if asked, dp (2^L, 2) = (∂p/∂alpha, ∂p/∂beta).

    The balance equations ``Q u = 0`` are solved with ``u_0 = 1`` fixed (drop row and column 0:
    the minor of an irreducible generator is non-singular and stays as sparse as Q, unlike a
    dense normalisation row); then ``p = u / Σu``. Derivatives: ``Q ∂u = -(∂Q) u`` with
    ``∂u_0 = 0`` on the same factorisation, and ``∂p = (∂u - p Σ∂u) / Σu``.
    """
    q_alpha, q_beta, q_bulk = _generators(L)
    n = 1 << L
    Q = sparse.csc_matrix(alpha * q_alpha + beta * q_beta + q_bulk)
    u = np.ones(n)
    if n == 2:
        u[1] = -Q[1, 0] / Q[1, 1]
        lu = None
    else:
        lu = splinalg.splu(sparse.csc_matrix(Q[1:, 1:]))
        u[1:] = lu.solve(-Q[1:, 0].toarray()[:, 0])
    total = u.sum()
    p = u / total
    if not derivatives:
        return (p,)
    rhs = -np.stack([q_alpha @ u, q_beta @ u], 1)[1:]
    du = np.zeros((n, 2))
    du[1:] = rhs / Q[1, 1] if lu is None else lu.solve(rhs)
    dp = (du - p[:, None] * du.sum(0)[None, :]) / total
    return p, dp


def matrix_product_weights(L: int, alpha: float, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Unnormalised stationary weights of all configurations and their exact derivatives.

    ``f(τ) = <W| Π_i (τ_i D + (1 - τ_i) E) |V>`` is evaluated for every τ at once, site by site,
    on left vectors written as combinations of ``<W|D^k`` (``<W|D^k E = Σ_{j=1}^{k} <W|D^j +
    <W|/alpha``; ``<W|D^k|V> = beta^{-k}``). Every coefficient is a polynomial in 1/alpha with
    positive coefficients, so there is no cancellation; derivatives are carried along in forward
    mode. ``Σ_τ f(τ) = Z_L``. Cost O(2^L L) per point, L <= 16.

    Returns:
        ``f`` (2^L,) and ``df`` (2^L, 2) = (∂f/∂alpha, ∂f/∂beta); index bit i = site i+1.
    """
    L = _check_L(L, MAX_MATRIX_PRODUCT_L, "the configuration-resolved matrix product")
    inv_a = 1.0 / float(_check_rate("alpha", alpha))
    inv_b = 1.0 / float(_check_rate("beta", beta))
    left = np.zeros((1, L + 1))
    left[0, 0] = 1.0
    d_left = np.zeros_like(left)  # ∂/∂(1/alpha)
    for _ in range(L):
        # site empty (E): new[k] = Σ_{j>=k} l[j] (k >= 1), new[0] = Σ_j l[j] / alpha
        tail = np.cumsum(left[:, ::-1], axis=1)[:, ::-1]
        d_tail = np.cumsum(d_left[:, ::-1], axis=1)[:, ::-1]
        e, d_e = tail, d_tail.copy()
        d_e[:, 0] = tail[:, 0] + inv_a * d_tail[:, 0]
        e[:, 0] = inv_a * tail[:, 0]
        # site occupied (D): shift k -> k + 1
        d = np.zeros_like(left)
        d[:, 1:] = left[:, :-1]
        d_d = np.zeros_like(d_left)
        d_d[:, 1:] = d_left[:, :-1]
        # the new site is the next bit: occupied configurations come after the empty ones
        left = np.concatenate([e, d])
        d_left = np.concatenate([d_e, d_d])
    k = np.arange(L + 1)
    powers = inv_b**k
    f = left @ powers
    df_inv_a = d_left @ powers
    df_inv_b = left @ (k * inv_b ** np.maximum(k - 1, 0))
    # d/d alpha = -(1/alpha)^2 d/d(1/alpha)
    return f, np.stack([-(inv_a**2) * df_inv_a, -(inv_b**2) * df_inv_b], 1)


def stationary_distribution(
    L: int, alpha: float, beta: float, method: str = "master"
) -> np.ndarray:
    """Exact stationary law of all 2^L configurations.

    Configuration ``c`` (0 <= c < 2^L) has site i+1 occupied iff bit i of c is set (bit 0 is the
    entry site, bit L-1 the exit site).

    Args:
        L: number of sites (<= 12 for ``"master"``, <= 16 for ``"matrix_product"``).
        alpha, beta: rates in (0, 1].
        method: ``"master"`` (null space of the master-equation generator, sparse LU) or
            ``"matrix_product"`` (normalised :func:`matrix_product_weights`).

    Returns:
        (2^L,) probabilities summing to 1.
    """
    if method == "matrix_product":
        f, _ = matrix_product_weights(L, alpha, beta)
        return f / f.sum()
    if method != "master":
        raise ValueError(f"method: expected 'master' or 'matrix_product', got {method!r}")
    L = _check_L(L, MAX_MASTER_L)
    a = float(_check_rate("alpha", alpha))
    b = float(_check_rate("beta", beta))
    return _solve(L, a, b, False)[0]


def fisher_metric(
    L: int, params: np.ndarray | Sequence[Sequence[float]], method: str = "matrix_product"
) -> np.ndarray:
    """Exact Fisher information of ONE stationary configuration τ ~ p(τ | alpha, beta).

    ``g_ab = Σ_τ ∂_a p ∂_b p / p``, exact derivatives (no finite differences) by one of two
    independent routes that agree to ~1e-14:

    - ``"matrix_product"`` (default, L <= 16, ~1-20 ms per point at L = 12): forward-mode
      derivatives of the matrix-product weights (:func:`matrix_product_weights`),
      ``∂ log p = ∂ log f - ∂ log Z``;
    - ``"master"`` (L <= 12, ~1 s per point at L = 12): the differentiated master equation
      ``Q ∂_a p = -(∂_a Q) p`` with ``Σ ∂_a p = 0``, on the LU factors of the generator.

    Args:
        L: number of sites.
        params: (P, 2) points (alpha, beta) in (0, 1]^2.
        method: ``"matrix_product"`` or ``"master"``.

    Returns:
        (P, 2, 2) metric in (alpha, beta) coordinates.
    """
    if method not in ("matrix_product", "master"):
        raise ValueError(f"method: expected 'matrix_product' or 'master', got {method!r}")
    if method == "master":
        L = _check_L(L, MAX_MASTER_L)
    else:
        L = _check_L(L, MAX_MATRIX_PRODUCT_L, "the configuration-resolved matrix product")
    arr = _check_params(params)
    out = np.empty((arr.shape[0], 2, 2))
    for i in tqdm(range(arr.shape[0]), desc=f"TASEP Fisher L={L}", disable=arr.shape[0] < 256 or not progress_enabled()):
        if method == "master":
            p, dp = _solve(L, arr[i, 0], arr[i, 1], True)
            out[i] = dp.T @ (dp / p[:, None])
        else:
            f, df = matrix_product_weights(L, arr[i, 0], arr[i, 1])
            z = f.sum()
            score = df / f[:, None] - df.sum(0) / z  # ∂ log p, (2^L, 2)
            out[i] = score.T @ (score * (f / z)[:, None])
    return out


def reference(L: int, params: np.ndarray | Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
    """Exact references on (alpha, beta) points: ``metric`` (P, 2, 2) (Fisher information of one
    configuration, L <= 16, :func:`fisher_metric`) and ``current`` (P,). TASEP is not an
    exponential family in (alpha, beta), so there is no potential."""
    arr = _check_params(params)
    return {"metric": fisher_metric(L, arr), "current": current(L, arr[:, 0], arr[:, 1])}
