"""Sources p(x | t): lattice models, stochastic processes, exponential families, latent planes."""

from __future__ import annotations

from .._util import lazy_getattr
from .base import Source, check_bounds, point_seed_sequence, point_seeds

_LAZY = {
    "Ising2D": "ising",
    "TASEP": "tasep",
    "GaussianFamily": "gaussian",
    "LatentPlane": "latent_plane",
    "LatentPath": "latent_path",
}

__all__ = ["Source", "check_bounds", "point_seed_sequence", "point_seeds", *_LAZY]


__getattr__ = lazy_getattr(__name__, _LAZY)
