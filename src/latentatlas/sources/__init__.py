"""Sources p(x | t): lattice models, stochastic processes, exponential families, latent planes."""

from __future__ import annotations

import importlib
from typing import Any

from .base import Source, check_bounds, point_seed_sequence, point_seeds

_LAZY = {
    "Ising2D": "ising",
    "TASEP": "tasep",
    "GaussianFamily": "gaussian",
    "LatentPlane": "latent_plane",
    "LatentPath": "latent_path",
}

__all__ = ["Source", "check_bounds", "point_seed_sequence", "point_seeds", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'latentatlas.sources' has no attribute {name!r}")
