"""LatentPlane: corners reproduce the anchors, determinism, noise streams per point."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latentatlas.sources import LatentPlane
from latentatlas.sources.latent_plane import gaussian_norm


def identity(z: torch.Tensor) -> torch.Tensor:
    return z


def noisy(z: torch.Tensor, eta: float = 0.0, seeds: np.ndarray | None = None) -> torch.Tensor:
    noise = np.stack([np.random.default_rng(int(s)).standard_normal(z.shape[1]) for s in seeds])
    return z + eta * torch.as_tensor(noise)


def test_gaussian_norm_closed_forms() -> None:
    # E||z|| for D = 1 is sqrt(2/pi), for D = 2 sqrt(pi/2) (Rayleigh mean).
    assert gaussian_norm(1) == pytest.approx(math.sqrt(2 / math.pi), rel=1e-12)
    assert gaussian_norm(2) == pytest.approx(math.sqrt(math.pi / 2), rel=1e-12)
    rng = np.random.default_rng(0)
    mc = np.linalg.norm(rng.standard_normal((200_000, 256)), axis=1).mean()
    assert gaussian_norm(256) == pytest.approx(mc, rel=1e-3)  # MC std error ~ 1.6e-6 relative


def test_corners_are_renormalised_anchors() -> None:
    rng = np.random.default_rng(1)
    anchors = rng.standard_normal((3, 16)) * np.array([[1.0], [2.0], [0.5]])
    plane = LatentPlane(identity, anchors=anchors)
    x = plane.decode(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    expected = anchors * gaussian_norm(16) / np.linalg.norm(anchors, axis=1, keepdims=True)
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-12)
    raw = LatentPlane(identity, anchors=anchors, renormalize=False)
    mid = raw.decode(np.array([[0.25, 0.5]])).numpy()[0]
    np.testing.assert_allclose(mid, anchors[0] + 0.25 * (anchors[1] - anchors[0])
                               + 0.5 * (anchors[2] - anchors[0]), rtol=1e-12)


def test_float64_latents_resolve_tiny_steps() -> None:
    plane = LatentPlane(identity, anchors=0, latent_dim=8, renormalize=False)
    a = plane.decode(np.array([[0.3, 0.3]])).numpy()
    b = plane.decode(np.array([[0.3 + 1e-9, 0.3]])).numpy()
    z0, z1 = plane.anchors[0].numpy(), plane.anchors[1].numpy()
    np.testing.assert_allclose((b - a)[0] / 1e-9, z1 - z0, rtol=1e-5)


def test_deterministic_and_batch_independent_with_noise() -> None:
    plane = LatentPlane(noisy, anchors=0, latent_dim=4, eta=0.1)
    params = np.array([[0.1, 0.2], [0.5, -0.3], [1.0, 1.0]])
    full = plane.sample(params, 3, seed=7)
    assert full.shape == (3, 3, 4) and full.dtype == np.float32
    one = plane.sample(params[1:2], 3, seed=7)
    np.testing.assert_array_equal(full[1], one[0])
    assert not np.allclose(full[:, 0], full[:, 1])  # different noise per sample
    assert not np.allclose(plane.sample(params, 3, seed=8), full)
    det = LatentPlane(noisy, anchors=0, latent_dim=4, eta=0.0).sample(params, 2, seed=0)
    np.testing.assert_array_equal(det[:, 0], det[:, 1])


def test_generator_spec_string_and_errors() -> None:
    plane = LatentPlane("tests.test_latent_plane:identity", anchors=np.eye(3, 5))
    assert plane.sample_shape == (5,)
    with pytest.raises(ValueError, match="generator"):
        LatentPlane("no_separator", anchors=np.eye(3))
    with pytest.raises(ValueError, match="anchors"):
        LatentPlane(identity, anchors=np.eye(2, 4))
    with pytest.raises(ValueError, match="latent_dim"):
        LatentPlane(identity, anchors=3)
    with pytest.raises(ValueError, match="eta"):
        LatentPlane(identity, anchors=np.eye(3), eta=-1.0)


def test_save_load_keeps_the_generator_weights(tmp_path) -> None:
    import latentatlas as la
    from latentatlas.features import Classifier

    torch.manual_seed(3)
    gen = Classifier()  # any latentatlas nn.Module works as a generator: (B, 64) -> (B, 128)
    plane = LatentPlane(gen, anchors=np.random.default_rng(0).standard_normal((3, 64)))
    la.save(plane, tmp_path / "plane.safetensors")
    back = la.load(tmp_path / "plane.safetensors")
    params = np.array([[0.2, 0.3], [1.0, -0.5]])
    np.testing.assert_array_equal(back.sample(params, 1), plane.sample(params, 1))
    torch.manual_seed(4)
    assert not np.allclose(LatentPlane(Classifier(), anchors=plane.anchors).sample(params, 1),
                           plane.sample(params, 1))  # the weights, not the config, made it equal
