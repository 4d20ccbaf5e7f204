"""Bundles and their Gaussian-bump targets (la.posterior.bundles), checked by construction."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from latentatlas.posterior import bundles as B


def _coded_samples(p: int, s: int) -> np.ndarray:
    """(P, S, 2) samples that encode their own (point, sample) index."""
    pts, smp = np.meshgrid(np.arange(p), np.arange(s), indexing="ij")
    return np.stack([pts, smp], axis=-1).astype(np.int32)


def test_targets_sum_to_one_and_mean_is_centre():
    g0, g1, sigma = 21, 17, 1.2
    # interior centres (>= 7 cells = 5.8 sigma from the edges: truncation moves the mean by ~1e-8)
    centres = np.array([10 * g1 + 8, 9 * g1 + 8, 11 * g1 + 9])
    t = B.gaussian_targets(centres[:, None], (g0, g1), sigma)
    np.testing.assert_allclose(t.sum(axis=(1, 2)), 1.0, atol=1e-12)
    i, j = np.arange(g0), np.arange(g1)
    m0, m1 = np.einsum("bij,i->b", t, i), np.einsum("bij,j->b", t, j)
    np.testing.assert_allclose(m0, centres // g1, atol=1e-5)
    np.testing.assert_allclose(m1, centres % g1, atol=1e-5)
    # variance of the normalised bump on the grid equals sigma^2 (discrete Gaussian, to 1e-6)
    var0 = np.einsum("bij,i->b", t, i**2) - m0**2
    np.testing.assert_allclose(var0, sigma**2, rtol=1e-6)
    # a bundle's target is the average of its bumps: its mean is the mean of the centres
    both = B.gaussian_targets(centres[None, :2], (g0, g1), sigma)[0]
    np.testing.assert_allclose(both, t[:2].mean(0), atol=1e-15)
    assert abs(np.einsum("ij,i->", both, i) - (centres[:2] // g1).mean()) < 1e-5


def test_tiny_sigma_one_hot_with_single_neighbour():
    g0, g1 = 6, 5
    neigh = B.neighbours(B.grid_params(np.arange(g0), np.arange(g1)), 1)
    np.testing.assert_array_equal(neigh[:, 0], np.arange(g0 * g1))
    b = B.draw_bundles(200, 3, neigh, samples_per_point=10, seed=1)
    t = b.targets((g0, g1), sigma=1e-3)
    onehot = np.zeros((200, g0 * g1))
    onehot[np.arange(200), b.centre] = 1.0
    np.testing.assert_allclose(t.reshape(200, -1), onehot, atol=1e-12)


def test_neighbourhoods_on_a_grid():
    a0, a1 = np.linspace(0, 1, 5), np.linspace(-2, 2, 9)  # unequal spacings: cells, not units
    params = B.grid_params(a0, a1)
    neigh = B.neighbours(params, 9, scale=[a0[1] - a0[0], a1[1] - a1[0]])
    p = 2 * 9 + 4  # interior point (2, 4): its 3 x 3 block
    rows, cols = np.divmod(neigh[p], 9)
    assert neigh[p, 0] == p
    assert set(zip(rows.tolist(), cols.tolist())) == {(r, c) for r in (1, 2, 3) for c in (3, 4, 5)}
    plus = B.neighbours(params, 5, scale=[a0[1] - a0[0], a1[1] - a1[0]])[p]
    rows, cols = np.divmod(plus, 9)
    assert set(zip(rows.tolist(), cols.tolist())) == {(2, 4), (1, 4), (3, 4), (2, 3), (2, 5)}


@pytest.mark.parametrize("kneib", [1, 5, 9])
def test_samples_come_from_the_stated_points(kneib):
    g0, g1, s, k = 7, 6, 5, 8
    samples = _coded_samples(g0 * g1, s)
    params = B.grid_params(np.arange(g0), np.arange(g1))
    neigh = B.neighbours(params, kneib)
    if k > kneib * s:  # K_neib = 1: only S = 5 samples available
        with pytest.raises(ValueError, match="bundle"):
            B.draw_bundles(500, k, neigh, s, seed=3)
        k = s
    b = B.draw_bundles(500, k, neigh, s, seed=3)
    x = b.gather(samples)  # (n, K, 2)
    assert x.shape == (500, k, 2)
    np.testing.assert_array_equal(x[..., 0], b.point)
    np.testing.assert_array_equal(x[..., 1], b.sample)
    for c, pts in zip(b.centre, b.point):
        assert set(pts.tolist()) <= set(neigh[c].tolist())
    # no sample twice in one bundle
    flat = b.flat(s)
    assert all(len(set(row.tolist())) == k for row in flat)
    # same seed, same bundles
    b2 = B.draw_bundles(500, k, neigh, s, seed=3)
    np.testing.assert_array_equal(b2.flat(s), flat)


def test_zarr_gather_matches_numpy(tmp_path):
    samples = _coded_samples(30, 4)
    z = zarr.create_array(str(tmp_path / "s.zarr"), shape=samples.shape, chunks=(4, 4, 2),
                          dtype=samples.dtype)
    z[:] = samples
    neigh = B.neighbours(B.grid_params(np.arange(6), np.arange(5)), 5)
    b = B.draw_bundles(100, 6, neigh, 4, seed=0)
    np.testing.assert_array_equal(b.gather(z), b.gather(samples))
    np.testing.assert_array_equal(B.load_all(z, 3, chunk=7, progress=False), samples[:, :3])


def test_uniform_subsets():
    # choose_distinct: every element of the pool equally likely (chi-square-free check: 5 sigma)
    rng = np.random.default_rng(0)
    c = B.choose_distinct(rng, 20000, 10, 3)
    counts = np.bincount(c.ravel(), minlength=10)
    expected = 20000 * 3 / 10
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    assert all(len(set(r)) == 3 for r in c[:500].tolist())


def test_training_split_is_disjoint():
    neigh = B.neighbours(B.grid_params(np.arange(4), np.arange(4)), 1)
    tr, va = B.training_bundles(20, neigh, 4, 1000, 0.25, seed=0)
    assert va is not None
    assert not set(tr.sample.ravel().tolist()) & set(va.sample.ravel().tolist())
    assert len(set(va.sample.ravel().tolist())) == 5


def test_bad_inputs():
    neigh = B.neighbours(B.grid_params(np.arange(3), np.arange(3)), 1)
    with pytest.raises(ValueError, match="bundle"):
        B.draw_bundles(10, 6, neigh, samples_per_point=5)
    with pytest.raises(ValueError, match="sigma"):
        B.gaussian_targets(np.zeros((2, 1), int), (3, 3), 0.0)
    with pytest.raises(ValueError, match="neighbours"):
        B.neighbours(np.zeros((4, 2)), 5)
    with pytest.raises(ValueError, match="axis1"):
        B.check_axes([0, 1, 2], [0, 2, 1])
    with pytest.raises(ValueError, match="grid mismatch"):
        B.check_samples(np.zeros((8, 3, 2)), 9, (2,))
    with pytest.raises(ValueError, match="samples"):
        B.check_samples(np.zeros((9, 3, 2)), 9, (3,))
    with pytest.raises(ValueError, match="val_fraction"):
        B.training_bundles(4, neigh, 4, 100, 0.5, 0)
