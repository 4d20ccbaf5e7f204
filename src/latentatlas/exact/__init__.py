"""Exact references: closed forms, transfer matrices and master equations used by tests,
validation and reports.

- :mod:`latentatlas.exact.ising`: Onsager / Yang (infinite lattice), Kaufman (finite torus, H = 0),
  row transfer matrix with field (:class:`~latentatlas.exact.ising.IsingExact`, L <= 10).
- :mod:`latentatlas.exact.tasep`: open TASEP, matrix-product partition function, current and
  density profile, exact stationary law and Fisher metric from the master equation (L <= 12).
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = ("ising", "tasep")

__all__ = list(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'latentatlas.exact' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
