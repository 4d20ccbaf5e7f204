"""The :class:`Atlas` container and its file format (``atlas.npz`` + ``config.json``).

An atlas holds, on a regular grid ``axis0 x axis1`` of the source's own coordinates, the potential
``Phi ~ log Z`` (up to an affine term), its gradient and its Hessian, the Fisher metric of ONE
sample ``x ~ p(x | t)``. Loading never executes code: arrays come from
``np.load(allow_pickle=False)``, the config from JSON, the potential from a safetensors file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._util import atomic_write, grid_points, save_json

__all__ = ["ATLAS_KEYS", "OPTIONAL_KEYS", "RIDGE_C", "Atlas", "load", "volume_element"]

ATLAS_KEYS = ("names", "axis0", "axis1", "potential", "gradient", "metric")
"""The keys of ``atlas.npz`` (``labels`` may be added for image generators)."""
OPTIONAL_KEYS = ("labels",)
RIDGE_C = 1.5
"""Robust z-score a ridge of log sqrt(det g) must exceed to count as a boundary (measured on the
L = 8 Ising atlas: 3 finds nothing, 1.5 finds the first-order line H = 0, K > K_c)."""


def volume_element(metric: np.ndarray) -> np.ndarray:
    """``sqrt(det g)`` of a field of 2x2 metrics: (..., 2, 2) -> (...); negative determinants
    (from noise) are clipped to 0."""
    g = np.asarray(metric, dtype=np.float64)
    if g.shape[-2:] != (2, 2):
        raise ValueError(f"metric: expected shape (..., 2, 2), got {g.shape}")
    det = g[..., 0, 0] * g[..., 1, 1] - g[..., 0, 1] * g[..., 1, 0]
    return np.sqrt(np.clip(det, 0.0, None))


def _as_axis(values: Any, name: str) -> np.ndarray:
    axis = np.asarray(values, dtype=np.float64)
    if axis.ndim != 1 or axis.size < 2:
        raise ValueError(f"{name}: expected a 1-D array of at least 2 values, got shape {axis.shape}")
    if not np.all(np.isfinite(axis)) or not np.all(np.diff(axis) > 0):
        raise ValueError(f"{name}: expected finite, strictly increasing values, got {axis}")
    return axis


def _as_field(values: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite values, got {int((~np.isfinite(arr)).sum())} "
                         "NaN/inf entries")
    return arr


@dataclass
class Atlas:
    """The geometry of a 2-D parameter region on a regular grid.

    Attributes:
        names: (2,) parameter names, e.g. ``("K", "H")``.
        axis0: (G0,) grid of the first parameter (strictly increasing).
        axis1: (G1,) grid of the second parameter.
        potential: (G0, G1) ``Phi(t) ~ log Z(t)`` up to an affine term.
        gradient: (G0, G1, 2) ``grad Phi``, the mean sufficient statistic up to a constant.
        metric: (G0, G1, 2, 2) Fisher information of ONE sample ``x ~ p(x | t)`` in these
            coordinates (``Hess Phi``).
        config: everything needed to rerun (JSON-serialisable).
        labels: optional (G0, G1) integer labels (image generators).
        potential_model: the fitted potential (a ``la.geometry`` model with ``hessian``), when
            available; not part of ``atlas.npz`` (it lives in ``potential.safetensors``).
    """

    names: tuple[str, str]
    axis0: np.ndarray
    axis1: np.ndarray
    potential: np.ndarray
    gradient: np.ndarray
    metric: np.ndarray
    config: dict[str, Any] = field(default_factory=dict)
    labels: np.ndarray | None = None
    potential_model: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in np.asarray(self.names).tolist())
        if len(names) != 2:
            raise ValueError(f"names: expected 2 parameter names, got {names}")
        self.names = names  # type: ignore[assignment]
        self.axis0 = _as_axis(self.axis0, "axis0")
        self.axis1 = _as_axis(self.axis1, "axis1")
        g = self.shape
        self.potential = _as_field(self.potential, g, "potential")
        self.gradient = _as_field(self.gradient, (*g, 2), "gradient")
        self.metric = _as_field(self.metric, (*g, 2, 2), "metric")
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != g or not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"labels: expected an integer array of shape {g}, got "
                                 f"{labels.dtype} {labels.shape}")
            self.labels = labels
        if not isinstance(self.config, dict):
            raise ValueError(f"config: expected a dict, got {type(self.config).__qualname__}")

    @property
    def shape(self) -> tuple[int, int]:
        """(G0, G1)."""
        return (self.axis0.size, self.axis1.size)

    @property
    def bounds(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((lo0, hi0), (lo1, hi1)) of the grid."""
        return ((float(self.axis0[0]), float(self.axis0[-1])),
                (float(self.axis1[0]), float(self.axis1[-1])))

    def params(self) -> np.ndarray:
        """(G0*G1, 2) grid points in 'ij' order (row ``i*G1 + j`` is ``(axis0[i], axis1[j])``)."""
        return grid_points(self.axis0, self.axis1)

    # -- derived fields ------------------------------------------------------------------------
    def volume_element(self) -> np.ndarray:
        """(G0, G1) ``sqrt(det g)`` (negative determinants, from noise, are clipped to 0)."""
        return volume_element(self.metric)

    def metric_at(self, t: np.ndarray) -> np.ndarray:
        """The metric at arbitrary points inside the grid.

        Through the fitted potential's Hessian when it is available (smooth, exact derivative of
        the saved model), otherwise by bilinear interpolation of the grid metric.

        Args:
            t: (N, 2) points (or (2,)).

        Returns:
            (N, 2, 2) metric (or (2, 2) for one point).
        """
        pts = np.asarray(t, dtype=np.float64)
        single = pts.ndim == 1
        pts = pts.reshape(1, -1) if single else pts
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"t: expected shape (N, 2), got {np.shape(t)}")
        (lo0, hi0), (lo1, hi1) = self.bounds
        tol0, tol1 = 1e-9 * (hi0 - lo0), 1e-9 * (hi1 - lo1)
        inside = ((pts[:, 0] >= lo0 - tol0) & (pts[:, 0] <= hi0 + tol0)
                  & (pts[:, 1] >= lo1 - tol1) & (pts[:, 1] <= hi1 + tol1))
        if not np.all(inside):
            i = int(np.argmin(inside))
            raise ValueError(f"t: expected points inside the atlas bounds {self.bounds}, got "
                             f"{pts[i].tolist()} at row {i}")
        if self.potential_model is not None and hasattr(self.potential_model, "hessian"):
            import torch

            model = self.potential_model
            try:
                ref = next(model.parameters())
                dtype, device = ref.dtype, ref.device
            except (AttributeError, StopIteration):
                dtype, device = torch.float64, torch.device("cpu")
            hess = model.hessian(torch.as_tensor(pts, dtype=dtype, device=device))
            out = hess.detach().cpu().numpy().astype(np.float64)
        else:
            from scipy.interpolate import RegularGridInterpolator

            interp = RegularGridInterpolator((self.axis0, self.axis1), self.metric,
                                             method="linear", bounds_error=False, fill_value=None)
            out = interp(pts)
        return out[0] if single else out

    def boundaries(self, **kwargs: Any) -> np.ndarray:
        """(G0, G1) boolean mask of phase boundaries: ridges of ``log sqrt(det g)``.

        Uses :func:`latentatlas.geometry.ridges` (which takes the log); keyword arguments are
        passed on.
        """
        from .. import geometry

        vol = self.volume_element()
        vol = np.maximum(vol, max(float(vol.max()) * 1e-9, 1e-300))
        kwargs.setdefault("c", RIDGE_C)
        return np.asarray(geometry.ridges(vol, **kwargs), dtype=bool)

    # -- persistence ---------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of ``atlas.npz`` (exactly :data:`ATLAS_KEYS`, plus ``labels`` if set)."""
        out = {
            "names": np.asarray(self.names, dtype=np.str_),
            "axis0": self.axis0,
            "axis1": self.axis1,
            "potential": self.potential,
            "gradient": self.gradient,
            "metric": self.metric,
        }
        if self.labels is not None:
            out["labels"] = self.labels
        return out

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``atlas.npz`` (arrays) and ``config.json`` into ``directory`` (atomically).

        Returns:
            The path of ``atlas.npz``.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "atlas.npz"
        save_json(directory / "config.json", self.config)
        atomic_write(path, lambda handle: np.savez(handle, **self.arrays()))
        return path


def load(directory: str | os.PathLike, potential: bool = True) -> Atlas:
    """Read an atlas written by :meth:`Atlas.save` (or a run folder of :func:`build`).

    Never executes code: ``np.load(allow_pickle=False)``, JSON, and a safetensors potential.

    Args:
        directory: the folder holding ``atlas.npz`` and ``config.json`` (or the npz file itself).
        potential: also load ``potential.safetensors`` beside it, if present, for
            :meth:`Atlas.metric_at`.

    Raises:
        FileNotFoundError: if ``atlas.npz`` is missing.
        ValueError: if the file lacks a key or holds one it should not.
    """
    directory = Path(directory)
    if directory.suffix == ".npz":
        directory = directory.parent
    path = directory / "atlas.npz"
    if not path.is_file():
        raise FileNotFoundError(f"directory: no atlas.npz in {str(directory)!r}")
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
        missing = [k for k in ATLAS_KEYS if k not in keys]
        extra = sorted(keys - set(ATLAS_KEYS) - set(OPTIONAL_KEYS))
        if missing or extra:
            raise ValueError(f"{path}: expected keys {list(ATLAS_KEYS)} (+ optional "
                             f"{list(OPTIONAL_KEYS)}), missing {missing}, unexpected {extra}")
        arrays = {k: data[k] for k in keys}
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    model = None
    pot_path = directory / "potential.safetensors"
    if potential and pot_path.is_file():
        from ..io import load as load_model

        model = load_model(pot_path)
    return Atlas(names=tuple(arrays["names"].tolist()), axis0=arrays["axis0"],
                 axis1=arrays["axis1"], potential=arrays["potential"],
                 gradient=arrays["gradient"], metric=arrays["metric"], config=config,
                 labels=arrays.get("labels"), potential_model=model)

