"""Stage ``planes``: the analyses of a latent plane of an image generator (Lobashev et al.,
ICML 2025, section on diffusion latent planes).

On the atlas of a :class:`~latentatlas.sources.LatentPlane` (whose ``images`` stage gave the
class map): phase agreement of the class map with the ridges of the fitted metric and of the
feature metric, geodesic vs linear interpolation with the images along both, geodesics inside one
phase and across a boundary with their deviation from the chord in metric units, zoom series
(refined box counting, ``measurable`` per window) and Lipschitz profiles at boundary points (and
Lipschitz away from them; local slopes, precision floor per point), the seeds' path analysis
with a stochastic sampler, and the same maps again with noise (the eta comparison, two smaller
atlases built by the same pipeline in ``eta/`` sub-folders, resumable like any run).

Outputs: ``planes.json`` (scalars) and ``planes.npz`` (arrays: ``labels``, ``ridges_*``,
``volume_*``, ``interp_*``, ``geodesic_<i>``, ``zoom_<i>_labels``, ``lipschitz*``, ``path_*``,
``eta*``); ``planes.json`` adds ``geodesics`` (kind, ends, lengths, deviation, start lengths).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..atlas.config import jsonable
from ..atlas.container import volume_element
from ..atlas.stages import AnalysisStage, Context
from . import plane_tools as T

__all__ = ["PlanesStage"]


class PlanesStage(AnalysisStage):
    """Stage ``planes`` (see the module docstring). Options (defaults in :meth:`defaults`):
    ``interpolation`` (segment as fractions of the region), ``zoom_points``,
    ``zoom_resolution``, ``zooms``, ``path_points``, ``path_samples``, ``path_eta``,
    ``eta_compare`` (None: skip), ``eta_resolution``, ``geodesic_starts`` (initialisations of
    the inside / across geodesics, the shortest kept), ``zoom_refine`` (quadtree levels of the zoom windows' box
    counting; the 32-cell windows are calibrated at 3)."""

    name = "planes"
    outputs = ("planes.json", "planes.npz")

    @classmethod
    def defaults(cls, source: Any, source_defaults: Mapping[str, Any]) -> dict[str, Any]:
        return {"interpolation": ((0.1, 0.1), (0.9, 0.9)), "zoom_points": 2,
                "zoom_resolution": 32, "zooms": [10.0**k for k in range(1, 7)],
                "path_points": 100, "path_samples": 50, "path_eta": 0.5,
                "eta_compare": 0.5, "eta_resolution": 32, "geodesic_starts": 3, "zoom_refine": 3}

    def compute(self, ctx: Context) -> dict[str, Any]:
        opts = self.options(ctx)
        plane = ctx.source
        atlas = ctx.result("atlas")
        images = ctx.result("images")
        post_model, _ = ctx.result("posterior")
        feats, labeler = images["features"], images["labeler"]
        tau = float(getattr(post_model, "tau", 1.0))
        fmetric = T.feature_metric(images["embeddings"], atlas.axis0, atlas.axis1, tau)
        a0, a1 = atlas.axis0, atlas.axis1
        scalars: dict[str, Any] = {
            "images_per_second": ctx.params.shape[0] * ctx.config.samples_per_point
            / ctx.timings["sample"] if ctx.timings.get("sample") else float("nan"),
            "tau": tau, "classes": np.unique(atlas.labels).tolist()}
        arrays: dict[str, np.ndarray] = {"labels": atlas.labels, "feature_metric": fmetric}
        self._phases(atlas, fmetric, scalars, arrays)

        lo, hi = np.array([a0[0], a1[0]]), np.array([a0[-1], a1[-1]])
        fa, fb = opts["interpolation"]
        pa, pb = lo + np.asarray(fa) * (hi - lo), lo + np.asarray(fb) * (hi - lo)
        interp = T.interpolation(plane, atlas, feats, pa, pb)
        scalars["interpolation"] = {k: v for k, v in dataclasses.asdict(interp).items()
                                    if isinstance(v, float)}
        scalars["interpolation"].update(a=pa.tolist(), b=pb.tolist())
        for key in ("geodesic", "linear", "images_geodesic", "images_linear"):
            arrays[f"interp_{key}"] = np.asarray(getattr(interp, key))

        pairs = T.geodesic_pairs(atlas, starts=int(opts.get("geodesic_starts", 3)))
        scalars["geodesics"] = [p.record() for p in pairs]
        for i, p in enumerate(pairs):
            arrays[f"geodesic_{i}"] = p.points

        det_plane = plane if plane.eta == 0 else T.with_eta(plane, 0.0)
        self._zoom_and_lipschitz(det_plane, labeler, atlas, opts, ctx.config.seed, scalars, arrays)

        if opts["path_points"]:
            noisy = T.with_eta(plane, opts["path_eta"])
            path = T.plane_path(noisy, post_model, pa, pb, opts["path_points"],
                                opts["path_samples"], ctx.config.seed + 5)
            scalars["path"] = {"a": pa.tolist(), "b": pb.tolist(), "eta": opts["path_eta"],
                               "samples": opts["path_samples"],
                               "jump_positions": np.asarray(path.jump_positions).tolist(),
                               "threshold": float(path.threshold)}
            arrays["path_positions"], arrays["path_distances"] = path.positions, path.distances
            arrays["path_means"] = path.means
            arrays["path_jumps"] = np.asarray(path.jumps, dtype=np.int64)

        if opts["eta_compare"]:
            self._eta(ctx, plane, det_plane, opts, scalars, arrays)
        return self.save_results(ctx, jsonable(scalars), arrays)

    # ----------------------------------------------------------------------------------------
    @staticmethod
    def _phases(atlas: Any, fmetric: np.ndarray, scalars: dict[str, Any],
                arrays: dict[str, np.ndarray]) -> None:
        """The class map against the boundary maps of the fitted and of the feature metric."""
        scalars["phase_agreement"] = {}
        for name, metric in (("metric", atlas.metric), ("feature_metric", fmetric)):
            agree = T.phase_agreement(atlas.labels, T.metric_ridges(metric))
            scalars["phase_agreement"][name] = {
                "fraction": agree.fraction, "chance": agree.chance,
                "ridge_fraction": agree.ridge_fraction,
                "class_change_cells": int(agree.changes.sum()),
                "ridge_cells": int(agree.ridges.sum())}
            arrays[f"ridges_{name}"] = agree.ridges
            arrays[f"volume_{name}"] = volume_element(metric)
            arrays["changes"] = agree.changes
        scalars["volume"] = {"metric": T.volume_summary(atlas),
                             "feature_metric": T.volume_summary(atlas, fmetric)}

    @staticmethod
    def _zoom_and_lipschitz(det_plane: Any, labeler: Any, atlas: Any, opts: Mapping[str, Any],
                            seed: int, scalars: dict[str, Any],
                            arrays: dict[str, np.ndarray]) -> None:
        """Zoom series and Lipschitz profiles at boundary points, Lipschitz away from them."""
        a0, a1 = atlas.axis0, atlas.axis1
        label_fn = T.label_fn(det_plane, labeler)
        zooms_out, on_pts = [], []
        width = float(min(a0[-1] - a0[0], a1[-1] - a1[0])) / 4
        for seg in T.boundary_points(atlas.labels, a0, a1, opts["zoom_points"], seed):
            try:
                center = T.refine_boundary(label_fn, seg[0], seg[1])
            except ValueError:  # the grid cells' labels were not reproduced
                continue
            on_pts.append(center)
            if opts["zoom_resolution"]:
                zooms_out.append(T.plane_zoom(label_fn, center, width, tuple(opts["zooms"]),
                                              opts["zoom_resolution"],
                                              refine=int(opts.get("zoom_refine", 3))))
        scalars["zoom"] = [{"center": z.center.tolist(), "zooms": [lv.zoom for lv in z.levels],
                            "dimensions": z.dimensions.tolist(), "classes": z.classes.tolist(),
                            "measurable": z.measurable.tolist(),
                            "new_structure": z.new_structure.tolist(),
                            "keeps_appearing": z.keeps_appearing, "threshold": z.threshold,
                            "boxes": [lv.boxes.tolist() for lv in z.levels],
                            "counts": [lv.counts.tolist() for lv in z.levels],
                            "evaluations": [lv.evaluations for lv in z.levels]}
                           for z in zooms_out]
        for i, z in enumerate(zooms_out):
            arrays[f"zoom_{i}_labels"] = np.stack([lv.labels for lv in z.levels])
        off_pts = T.smooth_points(atlas.labels, a0, a1, 2, seed)
        profiles = T.plane_lipschitz(det_plane.make_decoder(), np.concatenate(
            [np.reshape(on_pts, (-1, 2)), off_pts]), dtype=T.generator_dtype(det_plane))
        kinds = ["boundary"] * len(on_pts) + ["inside"] * len(off_pts)
        scalars["lipschitz"] = [{"point": p.point.tolist(), "where": w, "slope": p.slope,
                                 "lipschitz": p.lipschitz.tolist(),
                                 "local_slopes": p.local_slopes.tolist(),
                                 "fit_slope": p.fit_slope, "floor_delta": p.floor_delta,
                                 "usable": p.usable.tolist(), "dtype": p.dtype,
                                 "rounding": p.rounding}
                                for p, w in zip(profiles, kinds)]
        if profiles:
            arrays["lipschitz_deltas"] = profiles[0].deltas
            arrays["lipschitz"] = np.stack([p.lipschitz for p in profiles])

    @staticmethod
    def _eta(ctx: Context, plane: Any, det_plane: Any, opts: Mapping[str, Any],
             scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """The maps again at ``eta_resolution``, deterministic and with noise: two atlases built
        by the same pipeline (sub-folders ``eta/eta0`` and ``eta/noisy`` of the run)."""
        from ..atlas.pipeline import build

        cfg = ctx.config
        eta = float(opts["eta_compare"])
        img_opts = ctx.config.analyses.get("images", {})
        runs = {}
        for key, src in (("eta0", det_plane), ("noisy", T.with_eta(plane, eta))):
            d = src.atlas_defaults()
            runs[key] = build(
                src, bounds=cfg.bounds, resolution=opts["eta_resolution"],
                bundle=min(cfg.bundle, d["bundle"]), seed=cfg.seed,
                posterior_options=cfg.posterior_options, potential_options=cfg.potential_options,
                analyses={"images": img_opts}, report=False, progress=ctx.progress,
                out=None if ctx.run is None else ctx.file(f"eta/{key}"), force=bool(
                    ctx.run is not None and ctx.run.force))
        feature = {}
        for key, at in runs.items():
            emb = np.load(ctx.file(f"eta/{key}/embeddings.npy")) if ctx.run is not None else None
            if emb is not None:
                feature[key] = T.feature_metric(emb, at.axis0, at.axis1, _tau(ctx, key))
        scalars["eta"] = {
            "eta": eta, "resolution": opts["eta_resolution"],
            "eta0": {"metric": T.volume_summary(runs["eta0"])},
            "eta_noisy": {"metric": T.volume_summary(runs["noisy"])}}
        arrays["eta0_volume"] = runs["eta0"].volume_element()
        arrays["eta_volume"] = runs["noisy"].volume_element()
        arrays["eta0_labels"], arrays["eta_labels"] = runs["eta0"].labels, runs["noisy"].labels
        if feature:
            scalars["eta"]["eta0"]["feature_metric"] = T.volume_summary(runs["eta0"],
                                                                        feature["eta0"])
            scalars["eta"]["eta_noisy"]["feature_metric"] = T.volume_summary(runs["noisy"],
                                                                             feature["noisy"])
            arrays["eta0_feature_volume"] = volume_element(feature["eta0"])
            arrays["eta_feature_volume"] = volume_element(feature["noisy"])


def _tau(ctx: Context, key: str) -> float:
    """The kernel width of a sub-run's posterior (from its safetensors file)."""
    from ..io import load as load_model

    model = load_model(ctx.file(f"eta/{key}/posterior.safetensors"))
    return float(getattr(model, "tau", 1.0))
