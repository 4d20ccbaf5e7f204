"""latentatlas: Hessian geometry of latent spaces, and normalizing flows.

Subpackages are imported on first use, so ``import latentatlas as la`` is cheap::

    import latentatlas as la
    flow = la.flows.NSF(2)
    la.save(flow, "nsf.safetensors")
    same = la.load("nsf.safetensors")
"""

from __future__ import annotations

from ._util import lazy_getattr
from .io import load, save

__version__ = "0.1.0"

_SUBMODULES = (
    "atlas",
    "cli",
    "datasets",
    "distributed",
    "exact",
    "features",
    "flows",
    "generators",
    "geometry",
    "ode",
    "paths",
    "planes",
    "posterior",
    "report",
    "sources",
    "store",
    "training",
)

__all__ = ["__version__", "load", "save", *_SUBMODULES]


__getattr__ = lazy_getattr(__name__, _SUBMODULES)


def __dir__() -> list[str]:
    return sorted(__all__)
