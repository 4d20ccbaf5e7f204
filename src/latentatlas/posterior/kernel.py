"""Kernel posterior from a feature map: no training, only reference samples at the grid points.

For a bundle x_1..x_N and references x_j^ref at grid point t_j,

    p(t_j | x_1..x_N) ∝ exp(-(1/(2 tau^2)) Σ_i ||E(x_i) - E(x_j^ref)||^2),

the paper's CLIP posterior for deterministic generators (one reference per point, where it reduces
to ``exp(-(N/2) ||E(x) - E(x_j)||^2 / tau^2)``). It is the exact Bayes posterior (flat prior on the
grid) when ``E(x) ~ N(mu(t), tau^2 I)``. Since ``Σ_i ||e_i - r||^2 = Σ_i ||e_i - ē||^2 + N ||ē - r||^2``
only the bundle's mean embedding ē enters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..io import Configurable
from . import bundles as B
from .grid import PosteriorMap

__all__ = ["KernelPosterior"]


class KernelPosterior(PosteriorMap, Configurable, nn.Module):
    """Posterior over a grid from feature distances to reference samples.

    Args:
        features: E, a callable or ``nn.Module`` mapping a tensor ``(N, *sample_shape)`` to
            ``(N, F)`` (e.g. a ``la.features`` embedding, or ``lambda x: x`` for vectors). Only a
            latentatlas ``Configurable`` module can be written by ``la.save``.
        tau: kernel width; None picks it in :meth:`fit` by a median heuristic.
        average: with R > 1 references per point, True averages their embeddings (one reference
            embedding per point: the Gaussian-feature Bayes posterior); False keeps all R and uses
            ``log mean_r exp(...)`` (a kernel mixture over the references).

    Distances are computed in float64 whatever E returns.
    """

    def __init__(
        self,
        features: Callable[[Tensor], Tensor] | nn.Module,
        tau: float | None = None,
        average: bool = True,
    ) -> None:
        nn.Module.__init__(self)
        if not callable(features):
            raise ValueError(f"features: expected a callable or nn.Module E(x) -> (N, F), got "
                             f"{type(features).__qualname__}")
        if tau is not None and not (isinstance(tau, int | float) and math.isfinite(tau) and tau > 0):
            raise ValueError(f"tau: expected a positive number or None, got {tau!r}")
        if isinstance(features, nn.Module):
            self.features = features
        else:
            object.__setattr__(self, "features", features)
        self.average = bool(average)
        self.register_buffer("axis0", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("axis1", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("reference", torch.zeros(0, dtype=torch.float64))  # (P, [R,] F)
        self.register_buffer("tau", torch.tensor(float(tau) if tau is not None else 0.0,
                                                 dtype=torch.float64))
        self.register_buffer("shape_", torch.zeros(0, dtype=torch.long))

    # buffers whose size is only known after fit: resize them to what a saved file holds
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        for name in ("axis0", "axis1", "reference", "shape_"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def sample_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return tuple(int(s) for s in self.shape_.tolist())

    @property
    def grid_shape(self) -> tuple[int, int]:  # type: ignore[override]
        return (self.axis0.shape[0], self.axis1.shape[0])

    def _require_fit(self) -> None:
        if self.reference.numel() == 0:
            raise ValueError("KernelPosterior: call fit(reference_samples, axis0, axis1) first")

    def embed(self, x: Any, batch_size: int = 1024, progress: bool = False) -> Tensor:
        """E(x) in float64: (N, *sample_shape) -> (N, F)."""
        xt = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
        anchor = None
        if isinstance(self.features, nn.Module):
            anchor = next(self.features.parameters(), None)
        if anchor is not None:
            xt = xt.to(device=anchor.device, dtype=anchor.dtype)
        elif not xt.is_floating_point():
            xt = xt.to(torch.float32)
        out = []
        for i in tqdm(range(0, xt.shape[0], batch_size), desc="embed", disable=not progress,
                      leave=False):
            with torch.no_grad():
                e = self.features(xt[i : i + batch_size])
            e = torch.as_tensor(e)
            if e.dim() != 2 or e.shape[0] != min(batch_size, xt.shape[0] - i):
                raise ValueError(f"features: expected E to map (N, *sample_shape) to (N, F), got "
                                 f"shape {tuple(e.shape)} for N = {min(batch_size, xt.shape[0] - i)}")
            out.append(e.to(torch.float64).cpu())
        return torch.cat(out)

    def fit(
        self,
        reference_samples: Any,
        axis0: Any,
        axis1: Any,
        batch_size: int = 1024,
        progress: bool = True,
    ) -> KernelPosterior:
        """Embed the reference samples and choose tau (when None).

        Args:
            reference_samples: (P, R, *sample_shape), P = G0 * G1 in 'ij' order (numpy or zarr).
            axis0, axis1: (G0,), (G1,) grid axes.

        Median heuristic for tau: with R >= 2, ``tau^2`` is the median over points of the
        per-feature within-point variance of the embeddings (exactly the noise variance for
        Gaussian features, where the kernel posterior is then the Bayes posterior); with R = 1,
        ``tau`` is the median distance between the embeddings of adjacent grid points (a single
        sample's posterior is then about one cell wide).

        Returns:
            self.
        """
        a0, a1 = B.check_axes(axis0, axis1)
        p_all, r, shape = B.check_samples(reference_samples, a0.size * a1.size, None,
                                          "reference_samples")
        emb = []
        for p0 in tqdm(range(0, p_all, max(1, batch_size // r)), desc="embed references",
                       disable=not progress, leave=False):
            block = np.asarray(reference_samples[p0 : p0 + max(1, batch_size // r)])
            emb.append(self.embed(block.reshape(-1, *shape), batch_size).reshape(block.shape[0], r, -1))
        e = torch.cat(emb)  # (P, R, F)
        mean = e.mean(1)
        if float(self.tau) <= 0:
            if r >= 2:
                var = ((e - mean[:, None]) ** 2).sum((1, 2)) / (e.shape[2] * (r - 1))
                tau = float(var.median().sqrt())
            else:
                grid = mean.reshape(a0.size, a1.size, -1)
                d = torch.cat([(grid[1:] - grid[:-1]).norm(dim=-1).ravel(),
                               (grid[:, 1:] - grid[:, :-1]).norm(dim=-1).ravel()])
                tau = float(d.median())
            if not tau > 0:
                raise ValueError("reference_samples: the median heuristic gave tau = 0 (identical "
                                 "embeddings); pass tau explicitly")
            self.tau = torch.tensor(tau, dtype=torch.float64)
        self.axis0 = torch.as_tensor(a0)
        self.axis1 = torch.as_tensor(a1)
        self.reference = mean if self.average else e
        self.shape_ = torch.tensor(shape, dtype=torch.long)
        return self

    def log_posterior(self, bundles: Tensor) -> Tensor:
        """(B, K, *sample_shape) -> (B, G0 * G1) float64 log-probabilities."""
        self._require_fit()
        x = self._check_bundles(bundles)
        b, k = x.shape[:2]
        ebar = self.embed(x.reshape(b * k, *x.shape[2:])).reshape(b, k, -1).mean(1)  # (B, F)
        ref = self.reference
        if ebar.shape[1] != ref.shape[-1]:
            raise ValueError(f"features: E returned {ebar.shape[1]} features for the bundles, but "
                             f"{ref.shape[-1]} for the references")
        coef = k / (2.0 * float(self.tau) ** 2)
        flat = ref.reshape(-1, ref.shape[-1])  # (P or P*R, F)
        d2 = (ebar * ebar).sum(-1, keepdim=True) - 2.0 * ebar @ flat.T + (flat * flat).sum(-1)
        logits = -coef * d2.clamp_min(0.0)
        if ref.dim() == 3:
            r = ref.shape[1]
            logits = torch.logsumexp(logits.reshape(b, ref.shape[0], r), dim=-1) - math.log(r)
        return torch.log_softmax(logits, dim=-1)
