"""Exact references: closed forms, transfer matrices and master equations used by tests,
validation and reports.

- :mod:`latentatlas.exact.ising`: Onsager / Yang (infinite lattice), Kaufman (finite torus, H = 0),
  row transfer matrix with field (:class:`~latentatlas.exact.ising.IsingExact`, L <= 10).
- :mod:`latentatlas.exact.tasep`: open TASEP, matrix-product partition function, current and
  density profile, exact stationary law and Fisher metric from the master equation (L <= 12).
"""

from __future__ import annotations

from .._util import lazy_getattr

_SUBMODULES = ("ising", "tasep")

__all__ = list(_SUBMODULES)


__getattr__ = lazy_getattr(__name__, _SUBMODULES)


def __dir__() -> list[str]:
    return sorted(__all__)
