"""The geometry analyses of an atlas: boundaries and phases (ridges of ``sqrt det g``), geodesics
against straight lines, the path analysis along one segment, baselines (inverse covariance of the
posteriors, an unconstrained MLP potential) and the accuracy against the exact reference.

Stage ``geometry``: ``analyses.json`` (scalars) and ``analyses.npz`` (``ridges``, ``phases``,
``geodesic_<k>``, ``path_*``, ``exact_*``, ``baseline_*``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..atlas.compare import compare, error_concentration, exact_reference
from ..atlas.config import jsonable
from ..atlas.container import Atlas
from ..atlas.stages import AnalysisStage, Context, evaluate_potential

__all__ = ["GeometryStage", "run_analyses"]

log = logging.getLogger(__name__)


class GeometryStage(AnalysisStage):
    """Stage ``geometry`` (see the module docstring)."""

    name = "geometry"
    outputs = ("analyses.json", "analyses.npz")

    @classmethod
    def defaults(cls, source: Any, source_defaults: Mapping[str, Any]) -> dict[str, Any]:
        return {"geodesics": 4, "path": source_defaults.get("path", ((0.75, 0.0), (0.75, 1.0))),
                "baselines": True}

    def compute(self, ctx: Context) -> dict[str, Any]:
        atlas = ctx.result("atlas")
        post_model, posts = ctx.result("posterior")
        scalars, arrays = run_analyses(atlas, posts, ctx.source, post_model,
                                       progress=ctx.progress, options=self.options(ctx))
        return self.save_results(ctx, scalars, arrays)


def run_analyses(
    atlas: Atlas,
    posts: np.ndarray,
    source: Any,
    posterior_model: Any = None,
    progress: bool = True,
    options: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Boundaries, phases, geodesics, path analysis, baselines and accuracy of an atlas.

    Args:
        atlas: the atlas (its ``config`` gives bundle, sigma, seed, options).
        posts: (P, G0, G1) estimated posteriors on the grid (for the baselines).
        source: the source (exact reference; fresh samples along the path-analysis segment).
        posterior_model: the fitted posterior (``posterior_mean`` of bundles), for the path
            analysis; skipped when None.
        options: ``geodesics`` (how many), ``path`` (segment as fractions of the region, or
            None to skip), ``baselines`` (fit the MLP baseline).

    Returns:
        ``(scalars, arrays)``: JSON-able results (``accuracy`` per method when an exact reference
        exists, geodesic lengths, jump positions, box-counting dimension, error concentration)
        and arrays for ``analyses.npz`` (``ridges``, ``phases``, ``geodesic_<k>``, ``path_*``,
        ``exact_*``, ``baseline_*``).
    """
    from .. import geometry

    opts = {**GeometryStage.defaults(source, source.atlas_defaults()), **dict(options or {})}
    cfg = atlas.config
    k = int(cfg.get("bundle", 1))
    sigma = float(cfg.get("sigma", 0.0))
    seed = int(cfg.get("seed", 0))
    a0, a1 = atlas.axis0, atlas.axis1
    g0, g1 = atlas.shape
    scalars: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}

    # boundaries and phases: ridges of sqrt det g
    mask = atlas.boundaries()
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
    n_geo = int(opts["geodesics"])
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
    if (posterior_model is not None and hasattr(posterior_model, "posterior_mean")
            and opts.get("path") is not None):
        fa, fb = opts["path"]
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
    ref = exact_reference(source, a0, a1)
    if ref:
        for key, value in ref.items():
            arrays[f"exact_{key}"] = value
        scalars["accuracy"] = {"ours": compare(atlas, ref)}
        scalars["error_concentration"] = error_concentration(atlas, ref)
    if opts.get("baselines", True):
        inv_cov = np.asarray(geometry.inverse_covariance_metric(posts, a0, a1, bundle=k,
                                                                sigma=sigma))
        arrays["baseline_inverse_covariance_metric"] = inv_cov
        pot_opts = {key: v for key, v in dict(cfg.get("potential_options", {})).items()
                    if key in ("steps", "lr", "batch_points", "centroid_weight")}
        mlp, _ = geometry.fit_mlp_potential(posts, a0, a1, bundle=k, sigma=sigma,
                                            progress=progress, seed=seed + 4, **pot_opts)
        mlp_phi, mlp_grad, mlp_hess = evaluate_potential(mlp, atlas.params())
        mlp_fields = {"potential": mlp_phi.reshape(g0, g1),
                      "gradient": mlp_grad.reshape(g0, g1, 2),
                      "metric": mlp_hess.reshape(g0, g1, 2, 2)}
        for key, value in mlp_fields.items():
            arrays[f"baseline_mlp_{key}"] = value
        if ref:
            scalars["accuracy"]["inverse_covariance"] = compare({"metric": inv_cov}, ref)
            scalars["accuracy"]["mlp_potential"] = compare(mlp_fields, ref, axes=(a0, a1))
    return jsonable(scalars), arrays


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
