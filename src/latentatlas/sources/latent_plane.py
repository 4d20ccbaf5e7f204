"""A 2-D plane through three latents of any generator, as a Source p(x | alpha, beta).

``z(alpha, beta) = z0 + alpha (z1 - z0) + beta (z2 - z0)``, optionally rescaled to the norm that a
standard Gaussian latent has (as Lobashev et al. do for Stable Diffusion), then decoded by the
generator. Latents are float64 so that zooms to windows of width 1e-8 stay meaningful.

A *generator* is anything that maps a latent batch to samples:

- an object with ``generate(z (B, D), eta=0.0, seeds=None) -> (B, *shape)`` (the package's
  generators; ``seeds`` (B,) int seeds the per-sample noise when ``eta > 0``), or
- any callable / ``nn.Module`` ``f(z) -> x`` (a VAE decoder, say); it may accept ``eta`` and
  ``seed`` keyword arguments for its own noise, or
- a string ``"package.module:callable"`` naming one of the above (imported on construction: this is
  the user's own code, run because the user asked for it).
"""

from __future__ import annotations

import inspect
import math
import pkgutil
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy.special import gammaln
from torch import Tensor

from ..io import Configurable
from .base import Source, point_seed_sequence

__all__ = ["LatentPlane", "gaussian_norm", "generator_reference", "resolve_generator"]


def gaussian_norm(dim: int) -> float:
    """E||z|| for z ~ N(0, I_dim): sqrt(2) Gamma((dim + 1) / 2) / Gamma(dim / 2)."""
    return float(math.sqrt(2.0) * math.exp(gammaln((dim + 1) / 2) - gammaln(dim / 2)))


def resolve_generator(spec: Any) -> Any:
    """Turn ``"package.module:callable"`` into the object it names (a class is instantiated with
    no arguments); other values pass through after a check. Uses :func:`pkgutil.resolve_name`."""
    if isinstance(spec, str):
        if ":" not in spec:
            raise ValueError(
                f"generator: expected 'package.module:callable', got {spec!r} (no ':' separator)"
            )
        try:
            obj: Any = pkgutil.resolve_name(spec)
        except ImportError as err:
            raise ValueError(f"generator: cannot import {spec.partition(':')[0]!r} ({err})"
                             ) from None
        except (AttributeError, ValueError) as err:
            raise ValueError(f"generator: cannot resolve {spec!r} ({err})") from None
        if inspect.isclass(obj):
            obj = obj()
        return obj
    if not callable(spec) and not hasattr(spec, "generate"):
        raise ValueError(
            f"generator: expected a callable, an object with .generate, or 'module:callable', got "
            f"{type(spec).__qualname__}"
        )
    return spec


def generator_reference(obj: Any) -> str | None:
    """``"module:qualname"`` when that name resolves back to ``obj`` itself (a module-level
    function or object), else None (a lambda, a closure, a bound method...)."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    name = f"{module}:{qualname}"
    try:
        return name if pkgutil.resolve_name(name) is obj else None
    except (ImportError, AttributeError, ValueError):
        return None


def _call_generator(gen: Any, z: Tensor, eta: float, seeds: np.ndarray) -> Tensor:
    if hasattr(gen, "generate"):
        return gen.generate(z, eta=eta, seeds=seeds)
    try:
        params = inspect.signature(gen).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "seeds" in params:
        kwargs["seeds"] = seeds
    with torch.no_grad():
        out = gen(z, **kwargs)
    return torch.as_tensor(out)


class LatentPlane(Source):
    """The plane through latents (z0, z1, z2) of a generator; parameters t = (alpha, beta).

    Args:
        generator: see the module docstring.
        anchors: three latents (3, D) (array/tensor or a sequence of three (D,) vectors), or an int
            seed to draw them from N(0, I_D) (then ``latent_dim`` is required unless the generator
            has a ``latent_dim`` attribute).
        renormalize: rescale every plane latent to the mean norm of a Gaussian latent.
        eta: noise level passed to the generator's stochastic sampler (0 = deterministic).
        latent_dim: D, when ``anchors`` is a seed and the generator does not say.
        bounds: default atlas region ((alpha_lo, alpha_hi), (beta_lo, beta_hi)).
        batch_size: latents decoded per generator call.
    """

    names = ("alpha", "beta")
    domain = ((-math.inf, math.inf), (-math.inf, math.inf))

    def __init__(
        self,
        generator: Any,
        anchors: Any = 0,
        renormalize: bool = True,
        eta: float = 0.0,
        latent_dim: int | None = None,
        bounds: Sequence[Sequence[float]] = ((-0.5, 1.5), (-0.5, 1.5)),
        batch_size: int = 1024,
    ) -> None:
        self.generator = resolve_generator(generator)
        if not isinstance(generator, str | Configurable) and callable(generator):
            # record a module-level function by its name, so that the config can be written
            # (and the generator found again by a rerun); other callables stay unrecordable
            ref = generator_reference(generator)
            if ref is not None:
                self.config["generator"] = ref
        if not eta >= 0:
            raise ValueError(f"eta: expected a non-negative number, got {eta!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        self.eta = float(eta)
        self.renormalize = bool(renormalize)
        self.batch_size = batch_size
        self.bounds = tuple((float(lo), float(hi)) for lo, hi in bounds)
        if isinstance(anchors, int | np.integer) and not isinstance(anchors, bool):
            dim = latent_dim or getattr(self.generator, "latent_dim", None)
            if not dim:
                raise ValueError(
                    "latent_dim: anchors is a seed, so the latent dimension is needed; pass "
                    "latent_dim=D or explicit anchors (3, D)"
                )
            rng = np.random.default_rng(int(anchors))
            z = rng.standard_normal((3, int(dim)))
        else:
            z = anchors.detach().cpu().numpy() if isinstance(anchors, Tensor) else anchors
            z = np.asarray(np.stack([np.asarray(a, dtype=np.float64).ravel() for a in z]))
            if z.shape[0] != 3:
                raise ValueError(f"anchors: expected three latents (3, D), got shape {z.shape}")
        if not np.all(np.isfinite(z)):
            raise ValueError("anchors: expected finite latents, got NaN/inf entries")
        self.anchors = torch.as_tensor(z, dtype=torch.float64)
        self.latent_dim = int(z.shape[1])
        probe = self.decode(torch.zeros(1, 2, dtype=torch.float64), seeds=np.zeros(1, np.int64))
        self.sample_shape = tuple(probe.shape[1:])
        self.dtype = np.dtype(np.float32)

    analyses = ("images", "planes")

    def atlas_defaults(self) -> dict[str, Any]:
        """Kernel posterior on pixel features over a 48 x 48 grid (the posterior maps are a dense
        (P, G0, G1) array: 2 GB in float64 at 128 x 128). A deterministic plane (eta = 0) decodes
        once per point and repeats the image: a bundle of K copies sharpens the kernel posterior
        like K independent feature-noise draws would, and one bundle per point is exact. With
        noise (eta > 0), 16 images per point: 8 references and 16 bundles of 4 of the other 8,
        log-averaged. Targets and model are smoothed by the same 0.5-cell kernel."""
        out = super().atlas_defaults()
        stochastic = self.eta > 0
        out.update(resolution=48, samples_per_point=16 if stochastic else 8, bundle=4,
                   posterior_repeats=16 if stochastic else 1, sigma=0.5, estimator="kernel",
                   posterior={"init": {"features": "pixels"}}, potential={},
                   path=((0.1, 0.1), (0.9, 0.9)))
        return out

    def latents(self, params: np.ndarray | Tensor) -> Tensor:
        """Plane coordinates (P, 2) -> latents (P, D) in float64 (renormalised if asked)."""
        t = torch.as_tensor(np.asarray(params, dtype=np.float64))
        z0, z1, z2 = self.anchors
        z = z0 + t[:, :1] * (z1 - z0) + t[:, 1:2] * (z2 - z0)
        if self.renormalize:
            norm = z.norm(dim=-1, keepdim=True).clamp_min(1e-300)
            z = z * (gaussian_norm(self.latent_dim) / norm)
        return z

    def decode(self, params: Tensor | np.ndarray, seeds: np.ndarray | None = None) -> Tensor:
        """Images of plane points. params: (B, 2) -> (B, *sample_shape) float tensor."""
        z = self.latents(params)
        seeds = np.zeros(len(z), np.int64) if seeds is None else np.asarray(seeds, np.int64)
        outs = []
        for i in range(0, len(z), self.batch_size):
            outs.append(
                _call_generator(self.generator, z[i : i + self.batch_size], self.eta,
                                seeds[i : i + self.batch_size]).detach().cpu()
            )
        return torch.cat(outs)

    def _sample(self, params: np.ndarray, n: int, seed: int) -> np.ndarray:
        if self.eta == 0.0:  # deterministic: decode once per point, repeat
            x = self.decode(params).numpy().astype(np.float32)
            return np.repeat(x[:, None], n, axis=1)
        seeds = np.stack([
            point_seed_sequence(seed, p).generate_state(n, dtype=np.uint32).astype(np.int64)
            for p in params
        ])
        flat = np.repeat(params, n, axis=0)
        x = self.decode(flat, seeds=seeds.reshape(-1)).numpy().astype(np.float32)
        return x.reshape(len(params), n, *self.sample_shape)

    def make_decoder(self) -> Callable[[np.ndarray], np.ndarray]:
        """A plain function params (B, 2) -> images (B, *shape) numpy (deterministic at eta=0)."""
        return lambda p: self.decode(np.asarray(p, dtype=np.float64)).numpy()
