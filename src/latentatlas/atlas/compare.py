"""Exact references and the comparison of reconstructed fields with them.

The reference belongs to the source (:meth:`latentatlas.sources.Source.reference`: the transfer
matrix for small Ising lattices, the master equation for small TASEP systems, closed forms for the
Gaussian family, None otherwise); this module puts it on an atlas grid and measures errors.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._util import grid_points
from .container import Atlas, _as_axis, volume_element

__all__ = ["compare", "error_concentration", "error_maps", "exact_reference", "posterior_gap",
           "read_accuracy"]


def exact_reference(source: Any, axis0: np.ndarray, axis1: np.ndarray
                    ) -> dict[str, np.ndarray] | None:
    """The exact fields of ``source`` on the grid ``axis0 x axis1``, when it has them.

    Returns:
        dict with some of ``potential`` (G0, G1), ``gradient`` (G0, G1, 2) (only when the
        source's coordinates are natural, ``Source.natural_coordinates``),
        ``metric`` (G0, G1, 2, 2) and other exact scalar fields (G0, G1) (e.g. TASEP
        ``current``); ``None`` when the source has no reference (see
        :meth:`latentatlas.sources.Source.reference`).
    """
    axis0 = _as_axis(axis0, "axis0")
    axis1 = _as_axis(axis1, "axis1")
    reference = getattr(source, "reference", None)
    ref = reference(grid_points(axis0, axis1)) if callable(reference) else None
    if ref is None:
        return None
    g0, g1 = axis0.size, axis1.size
    out: dict[str, np.ndarray] = {}
    for key, value in dict(ref).items():
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim >= 1 and arr.shape[0] == g0 * g1:
            out[key] = arr.reshape(g0, g1, *arr.shape[1:])
    if not getattr(source, "natural_coordinates", True):
        # log Z and its gradient are a fitted potential's only in natural parameters (in others
        # the potential is Phi(eta(t)), defined up to an affine term in eta, not in t)
        out.pop("potential", None)
        out.pop("gradient", None)
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
        pts = grid_points(ax0, ax1)
        design = np.concatenate([np.ones((len(pts), 1)), pts], axis=1)
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
        vol_rec = volume_element(rec)
        vol_ex = volume_element(ex)
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


def read_accuracy(run_dir: str | os.PathLike) -> dict[str, float]:
    """Our method's normalized RMSE against the exact reference, from ``analyses.json``
    (``{}`` when the run has none)."""
    path = Path(run_dir) / "analyses.json"
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text()).get("accuracy", {}).get("ours", {}))


def _moments(maps: np.ndarray, axis0: np.ndarray, axis1: np.ndarray) -> np.ndarray:
    """(n, G0, G1) maps -> (n,) determinants of the posterior covariances."""
    t0, t1 = np.meshgrid(axis0, axis1, indexing="ij")
    m0 = np.einsum("nij,ij->n", maps, t0)
    m1 = np.einsum("nij,ij->n", maps, t1)
    c00 = np.einsum("nij,ij->n", maps, t0 * t0) - m0**2
    c11 = np.einsum("nij,ij->n", maps, t1 * t1) - m1**2
    c01 = np.einsum("nij,ij->n", maps, t0 * t1) - m0 * m1
    return c00 * c11 - c01**2


def posterior_gap(seen: np.ndarray, held_out: np.ndarray, axis0: np.ndarray,
                  axis1: np.ndarray) -> dict[str, float]:
    """How much the posterior maps of samples an estimator was fitted on differ from those of
    samples it never saw (overfitting shows as sharper maps on the seen samples).

    Args:
        seen, held_out: (n, G0, G1) posterior maps of the same n grid points.
        axis0, axis1: (G0,), (G1,).

    Returns:
        ``points`` (n), ``jsd_mean`` (mean Jensen-Shannon divergence between the two maps of a
        point, nats) and ``metric_ratio`` (median over points of ``sqrt(det C_held / det C_seen)``
        with C a map's covariance: the factor by which maps of seen samples would scale the
        volume element ``sqrt(det g)``; 1 = no gap).
    """
    p = np.asarray(seen, dtype=np.float64)
    q = np.asarray(held_out, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 3:
        raise ValueError(f"held_out: expected the shape of seen {p.shape} (n, G0, G1), got "
                         f"{q.shape}")
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(p / m), 0.0).sum((1, 2))
        kl_q = np.where(q > 0, q * np.log(q / m), 0.0).sum((1, 2))
    det_p = _moments(p, np.asarray(axis0, float), np.asarray(axis1, float))
    det_q = _moments(q, np.asarray(axis0, float), np.asarray(axis1, float))
    ok = (det_p > 0) & (det_q > 0)
    ratio = float(np.median(np.sqrt(det_q[ok] / det_p[ok]))) if ok.any() else math.nan
    return {"points": int(p.shape[0]), "jsd_mean": float(np.mean(0.5 * (kl_p + kl_q))),
            "metric_ratio": ratio}
