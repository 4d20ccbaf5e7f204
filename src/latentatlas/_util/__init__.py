"""Small shared helpers: argument validation (one message style), atomic files, grids, lazy imports.

Everything here depends only on the standard library and NumPy, so any module may import it.
"""

from .files import atomic_write, save_json, save_npy, save_npz
from .grids import grid, grid_axes, grid_points, resolution_pair
from .lazy import lazy_getattr
from .validation import (
    check_choice,
    check_finite_positive,
    check_int,
    check_seed,
    parse_auto_int,
)

__all__ = [
    "atomic_write",
    "check_choice",
    "check_finite_positive",
    "check_int",
    "check_seed",
    "grid",
    "grid_axes",
    "grid_points",
    "lazy_getattr",
    "parse_auto_int",
    "resolution_pair",
    "save_json",
    "save_npy",
    "save_npz",
]
