"""Posterior estimators p(t | x_1..x_K) from bundles of samples.

- :class:`GridPosterior`: softmax over a G0 x G1 parameter grid (per-sample encoder, mean pooling,
  cross-entropy against Gaussian-smoothed targets) — the estimator of Lobashev et al. (ICML 2025).
- :class:`FlowPosterior`: the same encoder and pooling, a conditional normalizing flow over
  continuous t (any dimension d), trained by maximum likelihood.
- :class:`KernelPosterior`: ``p(t_j | x_1..x_N) ∝ exp(-Σ_i ||E(x_i) - E(x_j^ref)||^2 / (2 tau^2))``
  from a feature map E and reference samples at the grid points (no training).
- :mod:`.bundles`: drawing bundles and their soft targets; :mod:`.encoders`: per-sample encoders.

Every estimator returns ``posteriors(samples, bundle=K, repeats=R, seed=...) -> (P, G0, G1)``
float64 maps, ``predict(bundles (B, K, *sample_shape)) -> (B, G0, G1)`` and
``posterior_mean(bundles) -> (B, d)``.
"""

from __future__ import annotations

from .._util import lazy_getattr

_LAZY = {
    "GridPosterior": "grid",
    "PosteriorMap": "grid",
    "FlowPosterior": "flow",
    "KernelPosterior": "kernel",
    "CNNEncoder": "encoders",
    "MLPEncoder": "encoders",
    "build_encoder": "encoders",
    "Bundles": "bundles",
    "draw_bundles": "bundles",
    "gaussian_targets": "bundles",
    "neighbours": "bundles",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)
