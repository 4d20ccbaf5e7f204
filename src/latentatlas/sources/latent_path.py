"""A path between two latents of any generator, as a one-parameter Source p(x | s), s in [0, 1].

``z(s)`` runs from ``z_A`` (s = 0) to ``z_B`` (s = 1):

- ``"linear"``: exactly ``z_A + s (z_B - z_A)`` (no rescaling);
- ``"slerp"`` (the default, for Gaussian latents): the great-circle interpolation of the
  directions with the norm interpolated linearly,
  ``z(s) = ((1 - s)|z_A| + s|z_B|) * slerp(s; z_A/|z_A|, z_B/|z_B|)`` (equal to the textbook slerp
  when ``|z_A| = |z_B|``; linear when the two directions coincide).

The generator is anything a :class:`~latentatlas.sources.LatentPlane` accepts (an object with
``generate(z, eta, seeds)``, a callable ``f(z)``, ``"module:callable"``, the embedded digits model,
a diffusers pipeline). Stochastic samples come from the generator's own noise (``eta > 0``, seeded
per sample from ``(seed, s)``); a deterministic generator decodes once per point and repeats the
image (the kernel estimator's feature kernel then plays the role of the noise, as for planes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._util import check_choice, check_int
from ..io import Configurable
from .base import Source, point_seed_sequence
from .latent_plane import _call_generator, generator_reference, resolve_generator

__all__ = ["INTERPOLATIONS", "LatentPath", "interpolate"]

INTERPOLATIONS = ("slerp", "linear")


def interpolate(z_a: Tensor, z_b: Tensor, s: Tensor, kind: str = "slerp") -> Tensor:
    """Latents along the path: ``z_a``, ``z_b`` (D,) and ``s`` (P,) -> (P, D) (see the module
    docstring for the two kinds)."""
    check_choice(kind, "interpolation", INTERPOLATIONS)
    s = s.reshape(-1, 1).to(z_a.dtype)
    if kind == "linear":
        return z_a + s * (z_b - z_a)
    na, nb = z_a.norm(), z_b.norm()
    ua, ub = z_a / na.clamp_min(1e-300), z_b / nb.clamp_min(1e-300)
    omega = torch.arccos((ua * ub).sum().clamp(-1.0, 1.0))
    if float(omega) < 1e-8:
        direction = ua + s * (ub - ua)
        direction = direction / direction.norm(dim=-1, keepdim=True)
    else:
        so = torch.sin(omega)
        direction = (torch.sin((1 - s) * omega) * ua + torch.sin(s * omega) * ub) / so
    return ((1 - s) * na + s * nb) * direction


class LatentPath(Source):
    """The path ``s -> z(s)`` between two latents of a generator; one parameter ``s``.

    Args:
        generator: see the module docstring of :mod:`latentatlas.sources.latent_plane`.
        endpoints: the two latents (2, D) (array/tensor or a pair of (D,) vectors), or an int
            seed to draw them from N(0, I_D) (then ``latent_dim`` is needed unless the generator
            has a ``latent_dim`` attribute).
        interpolation: ``"slerp"`` (default) or ``"linear"``.
        eta: noise level passed to the generator's stochastic sampler (0 = deterministic).
        latent_dim: D, when ``endpoints`` is a seed and the generator does not say.
        batch_size: latents decoded per generator call.
    """

    names = ("s",)
    domain = ((0.0, 1.0),)
    bounds = ((0.0, 1.0),)
    analyses = ("jumps",)

    def __init__(self, generator: Any, endpoints: Any = 0, interpolation: str = "slerp",
                 eta: float = 0.0, latent_dim: int | None = None, batch_size: int = 1024) -> None:
        self.generator = resolve_generator(generator)
        if not isinstance(generator, str | Configurable) and callable(generator):
            ref = generator_reference(generator)
            if ref is not None:
                self.config["generator"] = ref
        self.interpolation = check_choice(interpolation, "interpolation", INTERPOLATIONS)
        if isinstance(eta, bool) or not isinstance(eta, int | float) or not eta >= 0:
            raise ValueError(f"eta: expected a non-negative number, got {eta!r}")
        self.eta = float(eta)
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        if isinstance(endpoints, int | np.integer) and not isinstance(endpoints, bool):
            dim = latent_dim or getattr(self.generator, "latent_dim", None)
            if not dim:
                raise ValueError("latent_dim: endpoints is a seed, so the latent dimension is "
                                 "needed; pass latent_dim=D or explicit endpoints (2, D)")
            z = np.random.default_rng(int(endpoints)).standard_normal((2, int(dim)))
        else:
            z = endpoints.detach().cpu().numpy() if isinstance(endpoints, Tensor) else endpoints
            z = np.stack([np.asarray(a, dtype=np.float64).ravel() for a in z])
            if z.shape[0] != 2:
                raise ValueError(f"endpoints: expected two latents (2, D), got shape {z.shape}")
        if not np.all(np.isfinite(z)):
            raise ValueError("endpoints: expected finite latents, got NaN/inf entries")
        self.endpoints = torch.as_tensor(z, dtype=torch.float64)
        self.latent_dim = int(z.shape[1])
        probe = self.decode(np.zeros((1, 1)), seeds=np.zeros(1, np.int64))
        self.sample_shape = tuple(probe.shape[1:])
        self.dtype = np.dtype(np.float32)

    def atlas_defaults(self) -> dict[str, Any]:
        """100 points x 50 samples (the users' case), the kernel posterior on pixel features,
        R = 32 bundles of K = 2 samples per point, log-averaged (measured on x = z + eta noise:
        K = 1-2 keeps the reference noise of the kernel small, K = 4 biased the metric 5-7 %
        low), no target smoothing."""
        out = super().atlas_defaults()
        out.update(resolution=100, samples_per_point=50, bundle=2, posterior_repeats=32,
                   sigma=0.0, estimator="kernel", posterior={"init": {"features": "pixels"}},
                   potential={})
        return out

    def latents(self, params: np.ndarray | Tensor) -> Tensor:
        """Positions (P, 1) (or (P,)) -> latents (P, D) float64."""
        s = torch.as_tensor(np.asarray(params, dtype=np.float64)).reshape(-1)
        return interpolate(self.endpoints[0], self.endpoints[1], s, self.interpolation)

    def decode(self, params: np.ndarray | Tensor, seeds: np.ndarray | None = None) -> Tensor:
        """Samples at positions: params (B, 1) -> (B, *sample_shape) (at the source's eta)."""
        z = self.latents(params)
        seeds = np.zeros(len(z), np.int64) if seeds is None else np.asarray(seeds, np.int64)
        outs = [_call_generator(self.generator, z[i:i + self.batch_size], self.eta,
                                seeds[i:i + self.batch_size]).detach().cpu()
                for i in range(0, len(z), self.batch_size)]
        return torch.cat(outs)

    def seeds(self, params: np.ndarray, n: int, seed: int) -> np.ndarray:
        """(P, n) per-sample noise seeds: a function of ``(seed, s_i)`` only."""
        return np.stack([point_seed_sequence(seed, p).generate_state(n, dtype=np.uint32)
                         .astype(np.int64) for p in np.asarray(params, np.float64)])

    def _sample(self, params: np.ndarray, n: int, seed: int) -> np.ndarray:
        if self.eta == 0.0:  # deterministic: decode once per point, repeat
            x = self.decode(params).numpy().astype(np.float32)
            return np.repeat(x[:, None], n, axis=1)
        seeds = self.seeds(params, n, seed)
        x = self.decode(np.repeat(params, n, axis=0), seeds=seeds.reshape(-1))
        return x.numpy().astype(np.float32).reshape(len(params), n, *self.sample_shape)

    def make_decoder(self) -> Callable[[np.ndarray], np.ndarray]:
        """params (B, 1) -> samples (B, *shape) numpy at eta = 0 (for Lipschitz profiles)."""
        eta = self.eta

        def decode(p: np.ndarray) -> np.ndarray:
            self.eta = 0.0
            try:
                return self.decode(np.asarray(p, dtype=np.float64)).numpy()
            finally:
                self.eta = eta

        return decode
