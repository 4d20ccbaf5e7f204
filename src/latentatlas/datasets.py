"""Toy 2-D densities for normalizing flows (as in the FFJORD / NSF papers).

Every sampler draws from its own ``numpy.random.Generator`` seeded by ``seed`` (no global RNG), and
returns a float32 torch tensor of shape (n, 2), roughly standardised (most mass in ``[-4, 4]^2``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["TOY_NAMES", "moons", "toy"]

TOY_NAMES = ("two-moons", "8-gaussians", "checkerboard", "pinwheel", "rings", "2-spirals")

# Population moments of sklearn's make_moons without noise (t uniform on [0, pi]; half the points
# on the outer arc (cos t, sin t), half on the inner arc (1 - cos t, 1/2 - sin t)):
# E[x] = 1/2, E[y] = 1/4, Var[x] = 3/4, Var[y] = 9/16 - 1/pi.
_MOONS_MEAN = (0.5, 0.25)
_MOONS_VAR = (0.75, 9.0 / 16.0 - 1.0 / math.pi)


def moons(n: int, seed: int = 0, noise: float = 0.05) -> torch.Tensor:
    """Two moons: ``sklearn.datasets.make_moons(n, noise=noise, random_state=seed)`` standardised.

    The standardisation uses the population mean and standard deviation of the moons distribution
    (including the noise variance), not the sample moments, so that train and test sets drawn with
    different seeds share one affine map.

    Returns:
        (n, 2) float32 tensor.
    """
    from sklearn.datasets import make_moons

    _check_n_seed(n, seed)
    if not (isinstance(noise, int | float) and noise >= 0):
        raise ValueError(f"noise: expected a non-negative number, got {noise!r}")
    x, _ = make_moons(n_samples=n, noise=noise, random_state=seed)
    mean = np.array(_MOONS_MEAN)
    std = np.sqrt(np.array(_MOONS_VAR) + noise**2)
    return torch.from_numpy(((x - mean) / std).astype(np.float32))


def _check_n_seed(n: int, seed: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")


def _eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    angles = 2 * np.pi * np.arange(8) / 8
    centers = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    idx = rng.integers(0, 8, size=n)
    return centers[idx] + 0.2 * rng.standard_normal((n, 2))


def _checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    # 4x4 board on [-2, 2]^2; points uniform on the squares with floor(x) + floor(y) even.
    x1 = rng.uniform(-2, 2, size=n)
    x2 = rng.uniform(-2, 2, size=n)
    odd = np.mod(np.floor(x1) + np.floor(x2), 2) == 1
    # Move odd-parity points one cell up (cyclically over the 4 rows: parity flips).
    x2 = np.where(odd, np.mod(x2 + 3.0, 4.0) - 2.0, x2)
    return np.stack([x1, x2], axis=1)


def _pinwheel(n: int, rng: np.random.Generator) -> np.ndarray:
    radial_std, tangential_std, arms, rate = 0.3, 0.1, 5, 0.25
    rads = np.linspace(0, 2 * np.pi, arms, endpoint=False)
    feats = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
    feats[:, 0] += 1.0
    labels = rng.integers(0, arms, size=n)
    angles = rads[labels] + rate * np.exp(feats[:, 0])
    c, s = np.cos(angles), np.sin(angles)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (n, 2, 2)
    return 2.0 * np.einsum("ni,nji->nj", feats, rot)


def _rings(n: int, rng: np.random.Generator) -> np.ndarray:
    radii = np.array([0.75, 1.5, 2.25, 3.0])
    idx = rng.integers(0, 4, size=n)
    theta = rng.uniform(0, 2 * np.pi, size=n)
    r = radii[idx] + 0.08 * rng.standard_normal(n)
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def _two_spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.sqrt(rng.uniform(0, 1, size=n)) * 540 * (2 * np.pi) / 360
    sign = np.where(rng.uniform(size=n) < 0.5, 1.0, -1.0)
    d1 = np.stack([-np.cos(t) * t, np.sin(t) * t], axis=1) * sign[:, None]
    return d1 / 3.0 + 0.1 * rng.standard_normal((n, 2))


_SAMPLERS = {
    "8-gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
    "rings": _rings,
    "2-spirals": _two_spirals,
}


def toy(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """Samples of a named toy density.

    Args:
        name: one of ``two-moons``, ``8-gaussians``, ``checkerboard``, ``pinwheel``, ``rings``,
            ``2-spirals``.
        n: number of samples.
        seed: seed of the numpy Generator.

    Returns:
        (n, 2) float32 tensor.
    """
    if name not in TOY_NAMES:
        raise ValueError(f"name: expected one of {', '.join(TOY_NAMES)}, got {name!r}")
    _check_n_seed(n, seed)
    if name == "two-moons":
        return moons(n, seed)
    rng = np.random.default_rng(seed)
    return torch.from_numpy(_SAMPLERS[name](int(n), rng).astype(np.float32))
