"""The Atlas of a source, and :func:`build`: the whole pipeline from samples to maps.

An :class:`Atlas` holds, on a regular grid ``axis0 x axis1`` of the source's own coordinates, the
potential ``Phi ~ log Z`` (up to an affine term), its gradient and its Hessian, the Fisher metric of
ONE sample ``x ~ p(x | t)``. :func:`build` runs the stages

    sample (store.zarr) -> posterior (posterior.safetensors, posteriors.npy)
      -> potential (potential.safetensors) -> atlas (atlas.npz, config.json)
      -> analyses (analyses.json, analyses.npz) -> report (report/index.html)

and, with ``out=DIR``, keeps every stage's output in ``DIR`` so that a rerun skips the finished
stages (and resumes inside the sampling stage through the chunked store). Loading an atlas never
executes code: arrays come from ``np.load(allow_pickle=False)``, the config from JSON, the potential
from a safetensors file.

Example::

    import latentatlas as la
    atlas = la.atlas.build(la.sources.GaussianFamily(), resolution=16, out="runs/gauss")
    same = la.atlas.load("runs/gauss")
    la.atlas.compare(same, la.atlas.exact_reference(la.sources.GaussianFamily(), same.axis0,
                                                    same.axis1))
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ATLAS_KEYS",
    "DEFAULTS",
    "ESTIMATORS",
    "Atlas",
    "build",
    "compare",
    "defaults_for",
    "error_maps",
    "exact_reference",
    "load",
    "run_config",
    "source_from_config",
]

log = logging.getLogger(__name__)

ATLAS_KEYS = ("names", "axis0", "axis1", "potential", "gradient", "metric")
"""The keys of ``atlas.npz`` (``labels`` may be added for image generators)."""
OPTIONAL_KEYS = ("labels",)
ESTIMATORS = ("grid", "flow", "kernel")
FORMAT = "latentatlas-atlas/1"

# Default run settings per source class, chosen by measurement (see benchmarks/atlas_accuracy.py).
# "bounds" maps the source's ``coords`` (or None) to a region; missing: the source's own bounds.
DEFAULTS: dict[str, dict[str, Any]] = {
    # L = 8 Ising: the Fisher information of one lattice is large (Var of the bond sum ~ 300,
    # of the magnetisation up to ~1100 on the first-order line), so bundles of K = 2 lattices keep
    # the posterior 2-4 grid cells wide at 32 x 32 over this region; R = 32 bundles per point.
    # The posterior network needs the long training: the logit spans of sharp low-temperature
    # posteriors (~70 nats across H) are slow to learn, and an under-trained network gives wider
    # posteriors, hence a smaller metric (gradient NRMSE 0.075 at 1500 steps, lr 1e-3; 0.052 at
    # 4000, lr 3e-3; 0.038 at 8000, lr 3e-3; with exact posteriors of the same samples 0.024).
    # With early stopping (patience 10 validations) the noisy validation loss at lr 3e-3 stopped
    # trainings at different points: 0.038, 0.070, 0.088 over three runs. Without it (all 8000
    # steps, best-validation weights kept): 0.018, worst metric component 0.077. The potential fit
    # at 600 steps was seed-dependent (0.038 / 0.051 on one posterior map); 2500 steps: 0.023.
    "Ising2D": {"bounds": {"natural": ((0.25, 0.65), (-0.3, 0.3))},
                "resolution": 32, "samples_per_point": 64, "bundle": 2, "posterior_repeats": 32,
                "sigma": 1.0, "posterior": {"fit": {"steps": 8000, "lr": 3e-3, "patience": None}},
                "potential": {"steps": 2500}},
    "TASEP": {"resolution": 32, "samples_per_point": 64, "bundle": 4, "posterior_repeats": 16,
              "sigma": 1.0, "posterior": {"fit": {"steps": 1500}}, "potential": {},
              "path": ((0.05, 0.4), (0.4, 0.05))},
    "GaussianFamily": {"resolution": 32, "samples_per_point": 256, "bundle": 16,
                       "posterior_repeats": 16, "sigma": 1.0,
                       "posterior": {"fit": {"steps": 1000}}, "potential": {},
                       "path": ((0.0, 0.5), (1.0, 0.5))},
}
_FALLBACK_DEFAULTS: dict[str, Any] = {"resolution": 32, "samples_per_point": 64, "bundle": 4,
                                      "posterior_repeats": 16, "sigma": 1.0, "posterior": {},
                                      "potential": {}}


def defaults_for(source: Any) -> dict[str, Any]:
    """The default run settings of a source (see :data:`DEFAULTS`): bounds, resolution,
    samples_per_point, bundle, posterior and potential options."""
    base = DEFAULTS.get(type(source).__name__, _FALLBACK_DEFAULTS)
    out = {k: v for k, v in base.items() if k != "bounds"}
    coords = (getattr(source, "config", {}) or {}).get("coords")
    out["bounds"] = base.get("bounds", {}).get(coords, tuple(source.bounds))
    return json.loads(json.dumps(out))


def _merge(defaults: Mapping[str, Any], given: Mapping[str, Any] | None) -> dict[str, Any]:
    out = json.loads(json.dumps(defaults))
    for key, value in dict(given or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------------------------------
# The Atlas container
# --------------------------------------------------------------------------------------------------


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
        a, b = np.meshgrid(self.axis0, self.axis1, indexing="ij")
        return np.stack([a.ravel(), b.ravel()], axis=1)

    # -- derived fields ------------------------------------------------------------------------
    def volume_element(self) -> np.ndarray:
        """(G0, G1) ``sqrt(det g)`` (negative determinants, from noise, are clipped to 0)."""
        g = self.metric
        det = g[..., 0, 0] * g[..., 1, 1] - g[..., 0, 1] * g[..., 1, 0]
        return np.sqrt(np.clip(det, 0.0, None))

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
        from . import geometry

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
        tmp = directory / "atlas.npz.tmp"
        with open(tmp, "wb") as handle:
            np.savez(handle, **self.arrays())
        _write_json(directory / "config.json", self.config)
        os.replace(tmp, path)
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
        from .io import load as load_model

        model = load_model(pot_path)
    return Atlas(names=tuple(arrays["names"].tolist()), axis0=arrays["axis0"],
                 axis1=arrays["axis1"], potential=arrays["potential"],
                 gradient=arrays["gradient"], metric=arrays["metric"], config=config,
                 labels=arrays.get("labels"), potential_model=model)


# --------------------------------------------------------------------------------------------------
# Exact references and the comparison of fields
# --------------------------------------------------------------------------------------------------

RIDGE_C = 1.5
"""Robust z-score a ridge of log sqrt(det g) must exceed to count as a boundary (measured on the
L = 8 Ising atlas: 3 finds nothing, 1.5 finds the first-order line H = 0, K > K_c)."""

EXACT_LIMITS = {"Ising2D": 10, "TASEP": 12}
"""Largest L for which an exact reference is computed (transfer matrix / master equation)."""


def exact_reference(source: Any, axis0: np.ndarray, axis1: np.ndarray) -> dict[str, np.ndarray] | None:
    """The exact potential/gradient/metric of ``source`` on the grid, when one is available.

    Ising (L <= 10, transfer matrix), TASEP (L <= 12, master equation; metric and current only),
    and the Gaussian family (closed form). ``None`` otherwise.

    Returns:
        dict with some of ``potential`` (G0, G1), ``gradient`` (G0, G1, 2),
        ``metric`` (G0, G1, 2, 2) and other exact scalar fields (G0, G1) (e.g. TASEP ``current``).
    """
    axis0 = _as_axis(axis0, "axis0")
    axis1 = _as_axis(axis1, "axis1")
    a, b = np.meshgrid(axis0, axis1, indexing="ij")
    params = np.stack([a.ravel(), b.ravel()], axis=1)
    g0, g1 = axis0.size, axis1.size
    kind = type(source).__name__
    cfg = getattr(source, "config", {}) or {}
    if kind == "Ising2D":
        L = int(cfg.get("L"))
        if L > EXACT_LIMITS["Ising2D"]:
            return None
        from .exact import ising

        ref = ising.reference(L, params, coords=cfg.get("coords", "temperature"),
                              J=float(cfg.get("J", 1.0)))
    elif kind == "TASEP":
        L = int(cfg.get("L"))
        if L > EXACT_LIMITS["TASEP"]:
            return None
        from .exact import tasep

        ref = tasep.reference(L, params)
    elif hasattr(source, "reference"):
        ref = source.reference(params)
    else:
        return None
    out: dict[str, np.ndarray] = {}
    for key, value in dict(ref).items():
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim >= 1 and arr.shape[0] == g0 * g1:
            out[key] = arr.reshape(g0, g1, *arr.shape[1:])
    return out


def _fields(obj: Atlas | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if isinstance(obj, Atlas):
        return {"potential": obj.potential, "gradient": obj.gradient, "metric": obj.metric}
    return {k: np.asarray(v, dtype=np.float64) for k, v in obj.items() if v is not None}


def _grid_from(atlas: Any, shape: tuple[int, int], axes: tuple[np.ndarray, np.ndarray] | None):
    if axes is not None:
        return np.asarray(axes[0], float), np.asarray(axes[1], float)
    if isinstance(atlas, Atlas):
        return atlas.axis0, atlas.axis1
    # Without axes an index grid is used: the affine term is then affine in the indices, which is
    # the same thing for a regular grid.
    return np.arange(shape[0], dtype=float), np.arange(shape[1], dtype=float)


def _residuals(
    atlas: Atlas | Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    axes: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, tuple[np.ndarray, float]]:
    """name -> (residual field (G0, G1), range of the exact quantity)."""
    mine = _fields(atlas)
    out: dict[str, tuple[np.ndarray, float]] = {}
    if "potential" in mine and "potential" in reference:
        rec = np.asarray(mine["potential"], float)
        ex = np.asarray(reference["potential"], float)
        if rec.shape != ex.shape:
            raise ValueError(f"potential: expected shape {ex.shape} like the reference, got {rec.shape}")
        ax0, ax1 = _grid_from(atlas, ex.shape, axes)
        a, b = np.meshgrid(ax0, ax1, indexing="ij")
        design = np.stack([np.ones(a.size), a.ravel(), b.ravel()], axis=1)
        diff = (rec - ex).ravel()
        coef, *_ = np.linalg.lstsq(design, diff, rcond=None)
        out["potential"] = ((diff - design @ coef).reshape(ex.shape), float(np.ptp(ex)))
    if "gradient" in mine and "gradient" in reference:
        rec = np.asarray(mine["gradient"], float)
        ex = np.asarray(reference["gradient"], float)
        if rec.shape != ex.shape:
            raise ValueError(f"gradient: expected shape {ex.shape} like the reference, got {rec.shape}")
        for c in range(ex.shape[-1]):
            diff = rec[..., c] - ex[..., c]
            out[f"gradient{c}"] = (diff - diff.mean(), float(np.ptp(ex[..., c])))
    if "metric" in mine and "metric" in reference:
        rec = np.asarray(mine["metric"], float)
        ex = np.asarray(reference["metric"], float)
        if rec.shape != ex.shape:
            raise ValueError(f"metric: expected shape {ex.shape} like the reference, got {rec.shape}")
        for i, j in ((0, 0), (0, 1), (1, 1)):
            out[f"g{i}{j}"] = (rec[..., i, j] - ex[..., i, j], float(np.ptp(ex[..., i, j])))
        vol_rec = np.sqrt(np.clip(np.linalg.det(rec), 0, None))
        vol_ex = np.sqrt(np.clip(np.linalg.det(ex), 0, None))
        out["sqrt_det_g"] = (vol_rec - vol_ex, float(np.ptp(vol_ex)))
    return out


def compare(
    atlas: Atlas | Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    axes: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """Normalized RMSE of reconstructed fields against exact ones: ``RMSE / range(exact)``.

    - ``potential``: after removing the best (least-squares) affine term ``c + a t0 + b t1`` from
      ``Phi_rec - Phi_exact`` (the potential is only defined up to one);
    - ``gradient0``, ``gradient1``: each component after removing its best constant (the mean
      difference); ``gradient`` = root mean square of the two normalized values;
    - ``g00``, ``g01``, ``g11``: metric components, in absolute units (no rescaling);
      ``sqrt_det_g``: the volume element.

    A key is reported only if both sides have the field.

    Args:
        atlas: an :class:`Atlas`, or a mapping with some of ``potential`` (G0, G1),
            ``gradient`` (G0, G1, 2), ``metric`` (G0, G1, 2, 2) (e.g. a baseline).
        reference: same layout (e.g. from :func:`exact_reference`).
        axes: (axis0, axis1) for the affine fit when ``atlas`` is a mapping (default: the atlas's
            own axes, or an index grid, which is equivalent on a regular grid).

    Returns:
        dict name -> normalized RMSE (``inf`` when the exact field is constant and the error not 0).
    """
    out: dict[str, float] = {}
    for name, (resid, rng) in _residuals(atlas, reference, axes).items():
        rmse = float(np.sqrt(np.mean(resid**2)))
        out[name] = rmse / rng if rng > 0 else (0.0 if rmse == 0 else math.inf)
    if "gradient0" in out and "gradient1" in out:
        out["gradient"] = float(np.sqrt(0.5 * (out["gradient0"] ** 2 + out["gradient1"] ** 2)))
    return out


def error_maps(
    atlas: Atlas | Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    axes: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Where the error is: ``|residual| / range(exact)`` per field, each (G0, G1) (same residuals
    as :func:`compare`)."""
    return {name: np.abs(resid) / (rng if rng > 0 else 1.0)
            for name, (resid, rng) in _residuals(atlas, reference, axes).items()}


# --------------------------------------------------------------------------------------------------
# Run configuration and the run folder
# --------------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """A JSON-friendly copy (tuples -> lists, numpy scalars/arrays -> Python)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"config: cannot record a {type(value).__qualname__} in config.json")


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=True, allow_nan=True) + "\n")
    os.replace(tmp, path)


def source_from_config(config: Mapping[str, Any]) -> Any:
    """Rebuild the source recorded in a run config (``{"class": name, "config": {...}}``).

    Only classes of :mod:`latentatlas.sources` are accepted (no code is run from the file).
    """
    from . import sources

    spec = config.get("source", config)
    name = str(spec.get("class", "")).rsplit(".", 1)[-1]
    if name not in getattr(sources, "_LAZY", {}):
        raise ValueError(f"config: source class {spec.get('class')!r} is not a latentatlas source")
    return getattr(sources, name)(**dict(spec.get("config", {})))


def _resolution(resolution: int | Sequence[int]) -> tuple[int, int]:
    res = (resolution, resolution) if isinstance(resolution, int | np.integer) else tuple(resolution)
    if len(res) != 2 or not all(isinstance(r, int | np.integer) and not isinstance(r, bool)
                                for r in res):
        raise ValueError(f"resolution: expected an int or two ints (G0, G1), got {resolution!r}")
    if min(res) < 4:
        raise ValueError(f"resolution: expected at least 4 grid points per axis, got {resolution!r}")
    return int(res[0]), int(res[1])


def run_config(
    source: Any,
    bounds: Sequence[Sequence[float]] | None = None,
    resolution: int | Sequence[int] | None = None,
    samples_per_point: int | None = None,
    bundle: int | None = None,
    estimator: str = "grid",
    seed: int = 0,
    posterior_options: Mapping[str, Any] | None = None,
    potential_options: Mapping[str, Any] | None = None,
    posterior_repeats: int | None = None,
    geodesics: int = 4,
    sigma: float | None = None,
    posterior_average: str = "log",
) -> dict[str, Any]:
    """Validate the arguments of :func:`build` and return the run config (what ``config.json``
    records; two runs with equal configs give equal atlases).

    Raises:
        ValueError: bounds outside the source's domain, resolution < 4, a bundle larger than the
            samples per point, an unknown estimator, a bad seed.
    """
    from .sources import Source, check_bounds

    if not isinstance(source, Source):
        raise ValueError(f"source: expected a latentatlas Source, got {type(source).__qualname__}")
    if len(source.names) != 2:
        raise ValueError(f"source: an atlas needs 2 parameters, {type(source).__name__} has "
                         f"{len(source.names)} {tuple(source.names)}")
    defaults = defaults_for(source)
    bounds = check_bounds(defaults["bounds"] if bounds is None else bounds, source.domain,
                          source.names)
    res = _resolution(defaults["resolution"] if resolution is None else resolution)
    samples = defaults["samples_per_point"] if samples_per_point is None else samples_per_point
    bundle = defaults["bundle"] if bundle is None else bundle
    for value, name in ((samples, "samples_per_point"), (bundle, "bundle")):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if bundle > samples:
        raise ValueError(f"bundle: expected at most samples_per_point={samples} samples per "
                         f"bundle (the samples available at each point), got {bundle}")
    if estimator == "kernel" and bundle > samples - samples // 2:
        raise ValueError(f"bundle: the kernel estimator keeps half of the {samples} samples per "
                         f"point as references; expected at most {samples - samples // 2}, got "
                         f"{bundle}")
    if posterior_average not in ("log", "probability"):
        raise ValueError(f"posterior_average: expected 'log' or 'probability', got "
                         f"{posterior_average!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: expected one of {ESTIMATORS}, got {estimator!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    if posterior_repeats is None:
        posterior_repeats = defaults.get("posterior_repeats", 16)
    if not isinstance(posterior_repeats, int) or posterior_repeats < 1:
        raise ValueError(f"posterior_repeats: expected a positive int, got {posterior_repeats!r}")
    sigma = defaults.get("sigma", 1.0) if sigma is None else sigma
    if not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma: expected a positive target width in grid cells, got {sigma!r}")
    if not isinstance(geodesics, int) or geodesics < 0:
        raise ValueError(f"geodesics: expected a non-negative int, got {geodesics!r}")
    from . import __version__

    cls = type(source)
    return _jsonable({
        "format": FORMAT,
        "version": __version__,
        "source": {"class": f"{cls.__module__}.{cls.__qualname__}", "config": source.config},
        "names": list(source.names),
        "bounds": [list(b) for b in bounds],
        "resolution": list(res),
        "samples_per_point": int(samples),
        "bundle": int(bundle),
        "estimator": estimator,
        "seed": int(seed),
        "posterior_options": _merge(defaults["posterior"], posterior_options),
        "potential_options": _merge(defaults["potential"], potential_options),
        "posterior_repeats": int(posterior_repeats),
        "geodesics": int(geodesics),
        "sigma": float(sigma),
        "posterior_average": posterior_average,
    })


_UNCOMPARED = ("version",)


def _same_config(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ (ignoring the package version)."""
    keys = (set(a) | set(b)) - set(_UNCOMPARED)
    return sorted(k for k in keys if _jsonable(a.get(k)) != _jsonable(b.get(k)))


STAGES = ("sample", "posterior", "potential", "atlas", "analyses", "report")
_OUTPUTS = {
    "sample": ("store.zarr",),
    "posterior": ("posterior.safetensors", "posteriors.npy"),
    "potential": ("potential.safetensors",),
    "atlas": ("atlas.npz",),
    "analyses": ("analyses.json", "analyses.npz"),
    "report": ("report/index.html",),
}


class RunFolder:
    """A run folder: ``config.json`` plus one set of output files per stage.

    Opening a folder that holds another config raises (nothing is written); ``force`` recomputes
    every stage of the same config. Stage completion is the presence of the stage's outputs, all of
    which are written atomically (temporary file + rename), so an interrupted stage is redone.
    """

    def __init__(self, path: str | os.PathLike, config: Mapping[str, Any], force: bool = False):
        self.path = Path(path)
        self.config = dict(config)
        self.force = bool(force)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"out: expected a directory, got the file {str(self.path)!r}")
        cfg_path = self.path / "config.json"
        if cfg_path.is_file():
            try:
                old = json.loads(cfg_path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"out: {str(cfg_path)!r} is not valid JSON ({err}); use another "
                                 "folder") from None
            differ = _same_config(old, self.config)
            if differ:
                detail = ", ".join(f"{k}={_jsonable(old.get(k))!r} there vs "
                                   f"{_jsonable(self.config.get(k))!r} here" for k in differ[:3])
                raise ValueError(f"out: {str(self.path)!r} holds a run with another config "
                                 f"({detail}); use another --out folder or delete it")
        elif self.path.is_dir() and any(p.name in {o.split('/')[0] for outs in _OUTPUTS.values()
                                                    for o in outs} for p in self.path.iterdir()):
            raise ValueError(f"out: {str(self.path)!r} holds run outputs but no config.json; use "
                             "another folder")
        self.path.mkdir(parents=True, exist_ok=True)
        _write_json(cfg_path, self.config)
        self.skipped: list[str] = []
        self.computed: list[str] = []

    def file(self, name: str) -> Path:
        return self.path / name

    def done(self, stage: str) -> bool:
        """Whether ``stage`` must be skipped (its outputs exist and ``force`` is off). The
        sampling stage is never skipped as a whole: the store resumes chunk by chunk."""
        if stage == "sample" or (self.force and stage not in self.computed):
            return False
        return all((self.path / out).exists() for out in _OUTPUTS[stage])

    def mark(self, stage: str, skipped: bool) -> None:
        (self.skipped if skipped else self.computed).append(stage)
        if skipped:
            log.info("stage %s: found %s, skipped", stage, ", ".join(_OUTPUTS[stage]))
        else:
            log.info("stage %s: done", stage)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, arr, allow_pickle=False)
    os.replace(tmp, path)


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------


def build(
    source: Any,
    bounds: Sequence[Sequence[float]] | None = None,
    resolution: int | Sequence[int] | None = None,
    samples_per_point: int | None = None,
    bundle: int | None = None,
    estimator: str = "grid",
    seed: int = 0,
    out: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = True,
    posterior_options: Mapping[str, Any] | None = None,
    potential_options: Mapping[str, Any] | None = None,
    posterior_repeats: int | None = None,
    geodesics: int = 4,
    sigma: float | None = None,
    posterior_average: str = "log",
    analyses: bool = True,
    report: bool = True,
    backend: Mapping[str, Any] | None = None,
) -> Atlas:
    """Build the atlas of ``source`` over ``bounds``: sample -> posterior -> potential -> metric.

    Args:
        source: a 2-parameter :class:`latentatlas.sources.Source`.
        bounds: ((lo0, hi0), (lo1, hi1)) in the source's coordinates (default ``source.bounds``).
        resolution: grid points per axis (int or (G0, G1), at least 4); default per source
            (:data:`DEFAULTS`).
        samples_per_point: samples drawn at each grid point (default per source).
        bundle: K, samples per bundle of the posterior estimator (at most ``samples_per_point``).
        estimator: ``"grid"`` (softmax over the grid), ``"flow"`` (conditional flow) or
            ``"kernel"`` (feature-distance kernel on the source's sufficient statistics).
        seed: run seed (sampling, training, bundles); equal configs give equal atlases.
        out: run folder; every stage's output is kept there and a rerun skips finished stages.
        force: recompute every stage (the run folder must still hold the same config).
        progress: tqdm bars.
        posterior_options: extra keyword arguments of the posterior's constructor / ``fit``
            (``{"init": {...}, "fit": {...}}``).
        potential_options: extra keyword arguments of ``la.geometry.fit_potential``.
        posterior_repeats: R, bundles per grid point whose posteriors are combined (default per
            source).
        geodesics: number of geodesics drawn against straight lines in the analyses.
        sigma: width (grid cells) of the Gaussian targets of the posterior, used again by the
            potential fit (the two must agree); default per source.
        posterior_average: how the ``posterior_repeats`` bundle posteriors of a point are
            combined: ``"log"`` (geometric mean, renormalised; default) or ``"probability"``.
        backend: how the sampling stage runs: keyword arguments of
            :func:`latentatlas.distributed.generate` (e.g. ``{"backend": "ray", "workers": 2}``);
            None computes locally. Not part of the config: the store is identical either way.
            For an exponential family the bundle posterior is ``exp(-K D(t, t_hat))`` centred
            at the bundle's own estimate ``t_hat``; the mean of the log-posteriors over bundles
            drawn at ``t'`` is exactly ``-K D(t, t') + const``, the Bregman model that the
            potential is fitted to, while the mean in probability is a mixture that is wider
            by the scatter of ``t_hat`` (about twice the covariance: a metric too small by ~2).
        analyses: run the analyses stage (boundaries, phases, geodesics, baselines).
        report: write ``report/index.html`` (only with ``out``).

    Returns:
        The :class:`Atlas`, with ``config`` = the run config and ``potential_model`` set.

    Raises:
        ValueError: bad inputs (see :func:`run_config`), or ``out`` holding another config.
    """
    config = run_config(source, bounds, resolution, samples_per_point, bundle, estimator, seed,
                        posterior_options, potential_options, posterior_repeats, geodesics,
                        sigma, posterior_average)
    run = RunFolder(out, config, force) if out is not None else None
    ctx = _Pipeline(source, config, run, progress, backend)
    atlas = ctx.run(analyses=analyses, report=report and run is not None)
    return atlas


class _Pipeline:
    """The stages of :func:`build`, each kept in the run folder when there is one."""

    def __init__(self, source: Any, config: dict[str, Any], run: RunFolder | None, progress: bool,
                 backend: Mapping[str, Any] | None = None):
        self.backend = dict(backend) if backend else None
        self.source = source
        self.config = config
        self.run_folder = run
        self.progress = progress
        self.timings: dict[str, float] = {}
        self.axis0, self.axis1, self.params = grid(config["bounds"], tuple(config["resolution"]))
        self.grid_shape = (self.axis0.size, self.axis1.size)

    # ----------------------------------------------------------------------------------------
    def run(self, analyses: bool, report: bool) -> Atlas:
        samples = self._stage("sample", self.sample)
        post_model, posts = self._stage("posterior", lambda: self.posterior(samples))
        pot = self._stage("potential", lambda: self.potential(posts))
        atlas = self._stage("atlas", lambda: self.atlas(pot))
        if analyses:
            self.analyses_result = self._stage("analyses",
                                               lambda: self.analyses(atlas, posts, post_model))
        if report and self.run_folder is not None:
            self._stage("report", lambda: self.report())
        if self.run_folder is not None:
            _write_json(self.run_folder.file("timings.json"),
                        {"timings_s": self.timings, "skipped": self.run_folder.skipped,
                         "computed": self.run_folder.computed})
        return atlas

    def _stage(self, name: str, compute: Callable[[], Any]) -> Any:
        run = self.run_folder
        if run is not None and run.done(name):
            run.mark(name, skipped=True)
            return getattr(self, f"load_{name}")()  # earlier stages are never recomputed
        start = time.perf_counter()
        log.info("stage %s: running", name)
        result = compute()
        self.timings[name] = time.perf_counter() - start
        if run is not None:
            run.mark(name, skipped=False)
        return result

    # -- sample ------------------------------------------------------------------------------
    def sample(self) -> np.ndarray:
        cfg = self.config
        if self.run_folder is None:
            return self.source.sample(self.params, cfg["samples_per_point"], seed=cfg["seed"])
        from .store import SampleStore

        path = self.run_folder.file("store.zarr")
        if self.run_folder.force and "sample" not in self.run_folder.computed and path.exists():
            shutil.rmtree(path)
        # create() reopens a store made with the same arguments; generate() only computes the
        # chunks not marked done, so an interrupted sampling stage resumes where it stopped.
        store = SampleStore.create(path, self.source, self.params, cfg["samples_per_point"],
                                   cfg["seed"])
        done = sum(store.chunk_done(c) for c in range(store.num_chunks))
        if done == store.num_chunks:
            log.info("stage sample: found store.zarr complete, nothing to sample")
        elif done:
            log.info("stage sample: resuming store.zarr (%d of %d chunks done)", done,
                     store.num_chunks)
        if self.backend:
            from .distributed import generate

            store = generate(store, progress=self.progress, **self.backend)
        else:
            store.generate(progress=self.progress)
        return np.asarray(store.samples[...])

    # -- posterior ---------------------------------------------------------------------------
    def posterior(self, samples: np.ndarray) -> tuple[Any, np.ndarray]:
        from . import posterior as posterior_mod

        cfg = self.config
        opts = cfg["posterior_options"]
        init_opts = dict(opts.get("init", {}))
        fit_opts = dict(opts.get("fit", {}))
        k = cfg["bundle"]
        seed = cfg["seed"]
        ckpt = None
        if self.run_folder is not None:
            ckpt = self.run_folder.file("posterior.ckpt")
            if self.run_folder.force and ckpt.exists():
                ckpt.unlink()
        grid = samples  # (P, S, *sample_shape), P in 'ij' order
        repeats = cfg["posterior_repeats"]
        average = cfg["posterior_average"]
        if cfg["estimator"] == "grid":
            fit_opts.setdefault("sigma", cfg["sigma"])
            model = posterior_mod.GridPosterior(tuple(self.source.sample_shape), self.grid_shape,
                                                **init_opts)
            model.fit(grid, self.axis0, self.axis1, bundle=k, checkpoint=ckpt,
                      progress=self.progress, seed=seed, **fit_opts)
            bundles_from = grid
        elif cfg["estimator"] == "flow":
            fit_opts.setdefault("sigma", cfg["sigma"])
            model = posterior_mod.FlowPosterior(tuple(self.source.sample_shape), dim=2, **init_opts)
            model.fit(grid, self.axis0, self.axis1, bundle=k, checkpoint=ckpt,
                      progress=self.progress, seed=seed, **fit_opts)
            bundles_from = grid
        else:
            from .features import Pixels

            # references: the first half of each point's samples; bundles: the other half
            half = grid.shape[1] // 2
            model = posterior_mod.KernelPosterior(Pixels(), **init_opts)
            # no training: the per-source training options (steps, ...) do not apply
            fit_opts = {k: v for k, v in fit_opts.items() if k in ("batch_size",)}
            model.fit(grid[:, :half], self.axis0, self.axis1, progress=self.progress, **fit_opts)
            bundles_from = grid[:, half:]
        if average == "log":
            posts = log_mean_posteriors(model, bundles_from, k, repeats, seed + 1,
                                        progress=self.progress)
        else:
            posts = model.posteriors(bundles_from, bundle=k, repeats=repeats, seed=seed + 1,
                                     progress=self.progress)
        posts = np.asarray(posts, dtype=np.float64)
        expected = (self.params.shape[0], *self.grid_shape)
        if posts.shape != expected:
            raise ValueError(f"posteriors: expected shape {expected} from the {cfg['estimator']} "
                             f"estimator, got {posts.shape}")
        if self.run_folder is not None:
            from .io import save as save_model

            _save_npy(self.run_folder.file("posteriors.npy"), posts)
            save_model(model, self.run_folder.file("posterior.safetensors"))
        return model, posts

    def load_posterior(self) -> tuple[Any, np.ndarray]:
        from .io import load as load_model

        posts = np.load(self.run_folder.file("posteriors.npy"), allow_pickle=False)
        return load_model(self.run_folder.file("posterior.safetensors")), posts

    # -- potential ---------------------------------------------------------------------------
    def potential(self, posts: np.ndarray) -> Any:
        from . import geometry

        cfg = self.config
        opts = dict(cfg["potential_options"])
        ckpt = None
        if self.run_folder is not None:
            ckpt = self.run_folder.file("potential.ckpt")
            if self.run_folder.force and ckpt.exists():
                ckpt.unlink()
            opts.setdefault("checkpoint", ckpt)
        post = posts  # (P, G0, G1)
        opts.setdefault("sigma", cfg["sigma"])
        pot, history = geometry.fit_potential(post, self.axis0, self.axis1, bundle=cfg["bundle"],
                                              progress=self.progress, seed=cfg["seed"] + 2,
                                              **opts)
        if self.run_folder is not None:
            from .io import save as save_model

            save_model(pot, self.run_folder.file("potential.safetensors"))
            hist = history.as_dict() if hasattr(history, "as_dict") else {}
            _write_json(self.run_folder.file("potential_history.json"), hist)
        return pot

    def load_potential(self) -> Any:
        from .io import load as load_model

        return load_model(self.run_folder.file("potential.safetensors"))

    # -- atlas -------------------------------------------------------------------------------
    def atlas(self, pot: Any) -> Atlas:
        phi, grad, hess = evaluate_potential(pot, self.params)
        g = self.grid_shape
        atlas = Atlas(names=tuple(self.config["names"]), axis0=self.axis0, axis1=self.axis1,
                      potential=phi.reshape(g), gradient=grad.reshape(*g, 2),
                      metric=hess.reshape(*g, 2, 2), config=self.config, potential_model=pot)
        if self.run_folder is not None:
            atlas.save(self.run_folder.path)
        return atlas

    def load_atlas(self) -> Atlas:
        return load(self.run_folder.path)

    # -- analyses ----------------------------------------------------------------------------
    def analyses(self, atlas: Atlas, posts: np.ndarray, post_model: Any) -> dict[str, Any]:
        scalars, arrays = run_analyses(atlas, posts, self.source, post_model,
                                       progress=self.progress)
        if self.run_folder is not None:
            _save_npz(self.run_folder.file("analyses.npz"), arrays)
            _write_json(self.run_folder.file("analyses.json"), scalars)
        return {"scalars": scalars, "arrays": arrays}

    def load_analyses(self) -> dict[str, Any]:
        scalars = json.loads(self.run_folder.file("analyses.json").read_text())
        with np.load(self.run_folder.file("analyses.npz"), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        return {"scalars": scalars, "arrays": arrays}

    # -- report ------------------------------------------------------------------------------
    def report(self) -> Path:
        from .report.atlas import write_report

        return write_report(self.run_folder.path)

    def load_report(self) -> Path:
        return self.run_folder.file("report/index.html")


def run_analyses(
    atlas: Atlas,
    posts: np.ndarray,
    source: Any,
    posterior_model: Any = None,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Boundaries, phases, geodesics, path analysis, baselines and accuracy of an atlas.

    Args:
        atlas: the atlas (its ``config`` gives bundle, sigma, seed, options).
        posts: (P, G0, G1) estimated posteriors on the grid (for the baselines).
        source: the source (exact reference; fresh samples along the path-analysis segment).
        posterior_model: the fitted posterior (``posterior_mean`` of bundles), for the path
            analysis; skipped when None.

    Returns:
        ``(scalars, arrays)``: JSON-able results (``accuracy`` per method when an exact reference
        exists, geodesic lengths, jump positions, box-counting dimension, error concentration)
        and arrays for ``analyses.npz`` (``ridges``, ``phases``, ``geodesic_<k>``, ``path_*``,
        ``exact_*``, ``baseline_*``).
    """
    from . import geometry

    cfg = atlas.config
    k = int(cfg.get("bundle", 1))
    sigma = float(cfg.get("sigma", 0.0))
    seed = int(cfg.get("seed", 0))
    a0, a1 = atlas.axis0, atlas.axis1
    g0, g1 = atlas.shape
    scalars: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}

    # boundaries and phases: ridges of sqrt det g
    vol = atlas.volume_element()
    vol_pos = np.maximum(vol, max(float(vol.max()) * 1e-9, 1e-300))
    mask = np.asarray(geometry.ridges(vol_pos, c=RIDGE_C), dtype=bool)
    labels = np.asarray(geometry.phases(mask, min_size=max(2, (g0 * g1) // 100)))
    arrays["ridges"] = mask
    arrays["phases"] = labels.astype(np.int64)
    scalars["boundaries"] = {"pixels": int(mask.sum()), "phases": int(labels.max())}
    if mask.sum() >= 8 and min(g0, g1) >= 32:
        try:
            dim, _ = geometry.box_counting_dimension(mask)
            scalars["boundaries"]["box_counting_dimension"] = float(dim)
        except ValueError as err:  # too few boxes at this resolution
            log.info("box counting skipped: %s", err)

    # geodesics against straight lines
    n_geo = int(cfg.get("geodesics", 4))
    if n_geo:
        metric_fn = geometry.grid_metric_fn(a0, a1, atlas.metric)
        box = np.array([[a0[0], a0[-1]], [a1[0], a1[-1]]])
        lo, hi = box[:, 0], box[:, 1]
        frac = [((0.1, 0.1), (0.9, 0.9)), ((0.1, 0.9), (0.9, 0.1)), ((0.1, 0.5), (0.9, 0.5)),
                ((0.5, 0.1), (0.5, 0.9)), ((0.1, 0.3), (0.9, 0.7)), ((0.3, 0.1), (0.7, 0.9))]
        lengths = []
        ends = []
        for idx, (fa, fb) in enumerate(frac[:n_geo]):
            pa = lo + np.asarray(fa) * (hi - lo)
            pb = lo + np.asarray(fb) * (hi - lo)
            geo = geometry.geodesic(metric_fn, pa, pb, n=48, iters=200, bounds=box)
            arrays[f"geodesic_{idx}"] = np.asarray(geo.points, dtype=np.float64)
            lengths.append([float(geo.length), float(geo.straight_length)])
            ends.append([pa.tolist(), pb.tolist()])
        scalars["geodesics"] = {"lengths": lengths, "ends": ends,
                                "straightness": [s / g if g > 0 else 1.0 for g, s in lengths]}

    # path analysis on one segment (fresh samples, the fitted posterior's means)
    if posterior_model is not None and hasattr(posterior_model, "posterior_mean"):
        defaults = DEFAULTS.get(type(source).__name__, _FALLBACK_DEFAULTS)
        fa, fb = defaults.get("path", ((0.75, 0.0), (0.75, 1.0)))
        lo = np.array([a0[0], a1[0]])
        hi = np.array([a0[-1], a1[-1]])
        pa, pb = lo + np.asarray(fa) * (hi - lo), lo + np.asarray(fb) * (hi - lo)

        def posterior_mean_fn(points: np.ndarray, samples: int, seed: int) -> np.ndarray:
            x = source.sample(points, samples, seed=seed)
            return np.asarray(posterior_model.posterior_mean(x), dtype=np.float64)

        path = geometry.path_analysis(posterior_mean_fn, pa, pb, points=48, samples=k,
                                      seed=seed + 3)
        speed = _fisher_speed(atlas, path.points)
        arrays["path_s"] = np.asarray(path.positions, dtype=np.float64)
        arrays[f"path_curve_posterior mean {atlas.names[0]}"] = path.means[:, 0]
        arrays[f"path_curve_posterior mean {atlas.names[1]}"] = path.means[:, 1]
        arrays["path_curve_Fisher speed"] = speed
        arrays["path_jumps"] = np.asarray(path.jump_positions, dtype=np.float64)
        scalars["path"] = {"segment": [pa.tolist(), pb.tolist()], "samples": k,
                           "jump_positions": np.asarray(path.jump_positions).tolist(),
                           "threshold": float(path.threshold)}

    # baselines
    inv_cov = np.asarray(geometry.inverse_covariance_metric(posts, a0, a1, bundle=k, sigma=sigma))
    arrays["baseline_inverse_covariance_metric"] = inv_cov
    pot_opts = {key: v for key, v in dict(cfg.get("potential_options", {})).items()
                if key in ("steps", "lr", "batch_points", "centroid_weight")}
    mlp, _ = geometry.fit_mlp_potential(posts, a0, a1, bundle=k, sigma=sigma, progress=progress,
                                        seed=seed + 4, **pot_opts)
    mlp_phi, mlp_grad, mlp_hess = evaluate_potential(mlp, atlas.params())
    mlp_fields = {"potential": mlp_phi.reshape(g0, g1), "gradient": mlp_grad.reshape(g0, g1, 2),
                  "metric": mlp_hess.reshape(g0, g1, 2, 2)}
    for key, value in mlp_fields.items():
        arrays[f"baseline_mlp_{key}"] = value

    # accuracy against the exact reference
    ref = exact_reference(source, a0, a1)
    if ref:
        for key, value in ref.items():
            arrays[f"exact_{key}"] = value
        scalars["accuracy"] = {
            "ours": compare(atlas, ref),
            "inverse_covariance": compare({"metric": inv_cov}, ref),
            "mlp_potential": compare(mlp_fields, ref, axes=(a0, a1)),
        }
        scalars["error_concentration"] = error_concentration(atlas, ref)
    return _jsonable(scalars), arrays


def _fisher_speed(atlas: Atlas, points: np.ndarray) -> np.ndarray:
    """sqrt(dt^T g dt) per unit of the segment's parameter, at each point: (M,)."""
    d = (points[-1] - points[0])
    g = atlas.metric_at(points) if atlas.potential_model is None else _grid_metric_at(atlas, points)
    return np.sqrt(np.clip(np.einsum("i,mij,j->m", d, g, d), 0, None))


def _grid_metric_at(atlas: Atlas, points: np.ndarray) -> np.ndarray:
    model, atlas.potential_model = atlas.potential_model, None
    try:
        return atlas.metric_at(points)
    finally:
        atlas.potential_model = model


def error_concentration(atlas: Atlas, reference: Mapping[str, np.ndarray],
                        top: float = 0.1) -> dict[str, Any]:
    """Where the error is: per field, the share of the squared error carried by the worst
    ``top`` fraction of grid cells, and the grid point of the largest error."""
    out: dict[str, Any] = {}
    for name, err in error_maps(atlas, reference).items():
        sq = np.sort((err**2).ravel())[::-1]
        n_top = max(1, int(round(top * sq.size)))
        i, j = np.unravel_index(int(np.argmax(err)), err.shape)
        out[name] = {"share_of_squared_error_in_worst_10pct": float(sq[:n_top].sum() / sq.sum())
                     if sq.sum() > 0 else 0.0,
                     "argmax": [float(atlas.axis0[i]), float(atlas.axis1[j])],
                     "max": float(err[i, j])}
    return out


def log_mean_posteriors(
    model: Any,
    samples: np.ndarray,
    bundle: int,
    repeats: int,
    seed: int,
    batch_size: int = 1024,
    progress: bool = True,
) -> np.ndarray:
    """Posterior maps of every grid point: the normalised geometric mean over ``repeats`` bundles.

    Bundles are drawn as in the estimators' own ``posteriors`` (point p's bundles depend only on
    ``(seed, p)``: ``choose_distinct(default_rng([seed, p]), repeats, S, bundle)``), but the
    log-posteriors are averaged instead of the probabilities (see :func:`build`).

    Args:
        model: a ``la.posterior`` estimator with ``log_posterior(bundles (B, K, *shape)) ->
            (B, G0 * G1)`` and ``grid_shape``.
        samples: (P, S, *sample_shape).
        bundle: K; repeats: R; seed: bundle seed.

    Returns:
        (P, G0, G1) float64 maps, each summing to 1.
    """
    import torch
    from tqdm.auto import tqdm

    from .posterior.bundles import choose_distinct

    samples = np.asarray(samples)
    p_all, s = samples.shape[:2]
    g0, g1 = model.grid_shape
    if bundle > s:
        raise ValueError(f"bundle: expected at most {s} (the samples available per point), got "
                         f"{bundle}")
    out = np.empty((p_all, g0, g1), dtype=np.float64)
    chunk = max(1, batch_size // repeats)
    was_training = model.training
    model.eval()
    try:
        for p0 in tqdm(range(0, p_all, chunk), desc="posteriors", disable=not progress,
                       leave=False):
            p1 = min(p_all, p0 + chunk)
            idx = np.stack([choose_distinct(np.random.default_rng([seed, p]), repeats, s, bundle)
                            for p in range(p0, p1)])
            rows = np.arange(p1 - p0)[:, None, None]
            x = samples[p0:p1][rows, idx].reshape(-1, bundle, *samples.shape[2:])
            with torch.no_grad():
                logp = model.log_posterior(torch.as_tensor(x)).double().cpu().numpy()
            mean = logp.reshape(p1 - p0, repeats, g0 * g1).mean(axis=1)
            mean -= mean.max(axis=1, keepdims=True)
            prob = np.exp(mean)
            out[p0:p1] = (prob / prob.sum(axis=1, keepdims=True)).reshape(p1 - p0, g0, g1)
    finally:
        model.train(was_training)
    return out


def grid(bounds: Sequence[Sequence[float]], resolution: int | Sequence[int]
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The atlas grid: ``axis0`` (G0,), ``axis1`` (G1,) (end points included) and the points
    (G0*G1, 2) in 'ij' order (row ``i*G1 + j`` is ``(axis0[i], axis1[j])``)."""
    g0, g1 = _resolution(resolution)
    (lo0, hi0), (lo1, hi1) = bounds
    axis0 = np.linspace(float(lo0), float(hi0), g0)
    axis1 = np.linspace(float(lo1), float(hi1), g1)
    a, b = np.meshgrid(axis0, axis1, indexing="ij")
    return axis0, axis1, np.stack([a.ravel(), b.ravel()], axis=1)


def _kernel_posterior(source: Any, init_opts: Mapping[str, Any]) -> Any:
    from . import posterior as posterior_mod

    return posterior_mod.KernelPosterior(**init_opts)


def evaluate_potential(pot: Any, params: np.ndarray, batch: int = 4096
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phi, grad Phi and Hess Phi of a fitted potential at points.

    Args:
        pot: a ``la.geometry`` potential (``forward``, ``gradient``, ``hessian`` on (N, 2) tensors).
        params: (N, 2) points.

    Returns:
        (N,), (N, 2), (N, 2, 2) float64 arrays.
    """
    import torch

    try:
        ref = next(pot.parameters())
        dtype, device = ref.dtype, ref.device
    except (AttributeError, StopIteration):
        dtype, device = torch.float64, torch.device("cpu")
    phis, grads, hesss = [], [], []
    for start in range(0, len(params), batch):
        t = torch.as_tensor(params[start:start + batch], dtype=dtype, device=device)
        with torch.no_grad():
            phi = pot.forward(t)
        grad = pot.gradient(t)
        hess = pot.hessian(t)
        phis.append(phi.detach().cpu().double().numpy().reshape(-1))
        grads.append(grad.detach().cpu().double().numpy().reshape(-1, 2))
        hesss.append(hess.detach().cpu().double().numpy().reshape(-1, 2, 2))
    return np.concatenate(phis), np.concatenate(grads), np.concatenate(hesss)


def read_accuracy(run_dir: str | os.PathLike) -> dict[str, float]:
    """Our method's normalized RMSE against the exact reference, from ``analyses.json``
    (``{}`` when the run has none)."""
    path = Path(run_dir) / "analyses.json"
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text()).get("accuracy", {}).get("ours", {}))
