"""la.datasets: toy densities are seeded, shaped and placed where their definitions say."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latentatlas.datasets import TOY_NAMES, moons, toy


def test_moons_is_sklearn_make_moons_standardised_with_population_moments():
    from sklearn.datasets import make_moons

    x = moons(1000, seed=4)
    ref, _ = make_moons(n_samples=1000, noise=0.05, random_state=4)
    mean = np.array([0.5, 0.25])
    std = np.sqrt(np.array([0.75, 9 / 16 - 1 / math.pi]) + 0.05**2)
    assert torch.allclose(x, torch.from_numpy(((ref - mean) / std).astype(np.float32)))
    # The population moments are right: a large sample is standardised (sd error ~1/sqrt(n)).
    big = moons(200_000, seed=0).double()
    assert torch.allclose(big.mean(0), torch.zeros(2, dtype=torch.float64), atol=0.01)
    assert torch.allclose(big.std(0), torch.ones(2, dtype=torch.float64), atol=0.01)
    assert torch.equal(toy("two-moons", 500, 3), moons(500, 3))


@pytest.mark.parametrize("name", TOY_NAMES)
def test_toy_shape_dtype_seed(name):
    x = toy(name, 257, seed=5)
    assert x.shape == (257, 2) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x, toy(name, 257, seed=5))
    assert not torch.equal(x, toy(name, 257, seed=6))
    assert x.abs().max() < 6


def test_toy_geometry():
    # 8 gaussians: every point within 5 sd (0.2) of one of the 8 centres on the radius-2 circle.
    x = toy("8-gaussians", 5000, 0).double()
    ang = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    centres = 2 * torch.stack([ang.cos(), ang.sin()], 1)
    assert torch.cdist(x, centres).min(1).values.max() < 1.0
    # Each centre gets ~1/8 of the points (binomial sd ~ 23 for n=5000).
    counts = torch.bincount(torch.cdist(x, centres).argmin(1), minlength=8)
    assert (counts - 625).abs().max() < 120
    # Checkerboard: only cells with even floor(x) + floor(y), inside [-2, 2]^2, all 8 cells used.
    c = toy("checkerboard", 5000, 0).numpy()
    parity = np.mod(np.floor(c[:, 0]) + np.floor(c[:, 1]), 2)
    assert (parity == 0).all() and np.abs(c).max() <= 2
    assert len({(int(a), int(b)) for a, b in np.floor(c)}) == 8
    # Rings: radii near 0.75, 1.5, 2.25, 3.0 (noise sd 0.08).
    r = toy("rings", 5000, 0).norm(dim=1)
    nearest = (r[:, None] - torch.tensor([0.75, 1.5, 2.25, 3.0])).abs().min(1).values
    assert nearest.max() < 0.5 and nearest.mean() < 0.1


def test_bad_names_and_sizes():
    with pytest.raises(ValueError) as err:
        toy("moons", 10)
    msg = str(err.value)
    assert "name: expected one of" in msg and all(n in msg for n in TOY_NAMES) and "'moons'" in msg
    with pytest.raises(ValueError, match="n: expected a positive int, got 0"):
        toy("rings", 0)
    with pytest.raises(ValueError, match="seed: expected a non-negative int, got -1"):
        moons(10, seed=-1)
