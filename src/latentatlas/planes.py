"""Image-generator latent planes: the front door of their atlas and analyses.

A :class:`~latentatlas.sources.LatentPlane` is a source like any other: :func:`plane_atlas` and
:func:`analyze` run :func:`latentatlas.atlas.build` on it (stages sample -> images -> posterior ->
potential -> atlas -> planes -> report), so a plane's run folder resumes, refuses another config
and is redrawn by ``latentatlas report DIR`` like every run. The analyses themselves live in
:mod:`latentatlas.analyses.plane_tools` (building blocks) and :mod:`latentatlas.analyses.planes`
(the stage); feature maps and labelers in :mod:`latentatlas.features.factory`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .analyses.plane_tools import (
    Interpolation,
    PhaseAgreement,
    ZoomResult,
    boundary_points,
    decode_grid,
    feature_metric,
    interpolation,
    label_fn,
    metric_ridges,
    phase_agreement,
    plane_lipschitz,
    plane_path,
    plane_zoom,
    refine_boundary,
    smooth_points,
    volume_summary,
    with_eta,
)
from .atlas.container import volume_element
from .features.factory import KMeansLabeler, class_labels, make_features

__all__ = [
    "Interpolation",
    "KMeansLabeler",
    "PhaseAgreement",
    "PlaneRun",
    "ZoomResult",
    "analyze",
    "boundary_points",
    "class_labels",
    "decode_grid",
    "digits_latents",
    "feature_metric",
    "interpolation",
    "label_fn",
    "make_features",
    "metric_ridges",
    "phase_agreement",
    "plane_atlas",
    "plane_lipschitz",
    "plane_path",
    "plane_zoom",
    "refine_boundary",
    "smooth_points",
    "volume_element",
    "volume_summary",
    "with_eta",
]


def digits_latents(n: int = 1000, seed: int = 0) -> np.ndarray:
    """A fixed bank of digits-generator latents, (n, 64) float64 N(0, I) draws (``--anchors i j k``
    of ``latentatlas atlas digits`` index it)."""
    return np.random.default_rng(seed).standard_normal((n, 64))


@dataclass
class PlaneRun:
    """What :func:`plane_atlas` computed besides the :class:`~latentatlas.atlas.Atlas`.

    Attributes:
        images: (G0, G1, *shape) the first image at each grid point.
        posterior: the fitted posterior estimator (a kernel posterior by default).
        tau: kernel width (1.0 for estimators without one).
        images_per_second: generation throughput of the grid.
        feature_metric: (G0, G1, 2, 2) the kernel model's metric straight from the embeddings
            (:func:`feature_metric`), the model-free reference of the fitted metric.
        timings: seconds per stage.
    """

    images: np.ndarray
    posterior: Any
    tau: float
    images_per_second: float
    feature_metric: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


def _named(value: Any, name: str, objects: dict[str, Any]) -> Any:
    """A config name for ``value``: strings pass; a module-level callable becomes
    ``"module:qualname"``; any other object is kept in ``objects`` (in memory only)."""
    from .sources.latent_plane import generator_reference

    if value is None or isinstance(value, str):
        return value
    ref = generator_reference(value)
    if ref is not None:
        return ref
    objects[name] = value
    return f"<{type(value).__qualname__} object>"


def _config_kwargs(plane: Any, features: Any, labeler: Any, objects: dict[str, Any],
                   analyses: Mapping[str, Any]) -> dict[str, Any]:
    features = _named(features, "features", objects)
    labeler = _named("kmeans" if labeler is None else labeler, "labeler", objects)
    images = {"features": features, "labeler": labeler}
    return {"posterior_options": {"init": {"features": features}},
            "analyses": {"images": images, **analyses}}


def plane_atlas(
    plane: Any,
    features: Any = "pixels",
    labeler: Any = None,
    bounds: Sequence[Sequence[float]] | None = None,
    resolution: int | None = None,
    samples: int | None = None,
    bundle: int | None = None,
    seed: int = 0,
    potential_options: Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    force: bool = False,
) -> tuple[Any, PlaneRun]:
    """Atlas of a latent plane: images -> labels -> kernel posterior -> potential -> metric.

    Args:
        plane: a :class:`~latentatlas.sources.LatentPlane` (its ``eta`` decides deterministic or
            stochastic generation; its :meth:`~latentatlas.sources.LatentPlane.atlas_defaults`
            fill the arguments left as None).
        features: E for the kernel posterior and the labels (a name of
            :func:`make_features`, a module-level callable, or an object (in memory only)).
        labeler: classes of the images (``.predict`` or a callable); None: k-means of the
            grid's embeddings (:class:`KMeansLabeler`).
        bounds, resolution, samples, bundle, seed, potential_options: see
            :func:`latentatlas.atlas.build`.
        out: run folder (resumes; refuses another config).
        progress: tqdm bars.
        force: recompute every stage.

    Returns:
        ``(atlas, run)``: the :class:`~latentatlas.atlas.Atlas` (labels set) and a :class:`PlaneRun`.
    """
    from .atlas.config import RunConfig
    from .atlas.pipeline import execute

    objects: dict[str, Any] = {}
    kwargs = _config_kwargs(plane, features, labeler, objects, {})
    config = RunConfig.make(plane, bounds, resolution, samples, bundle, None, seed,
                            kwargs["posterior_options"], potential_options,
                            analyses=kwargs["analyses"])
    if out is not None and objects:
        raise ValueError(f"{', '.join(objects)}: a run folder records its options by name; pass a "
                         "feature/labeler name or a module-level function")
    ctx = execute(plane, config, out=out, force=force, progress=progress, report=False,
                  objects=objects)
    return ctx.result("atlas"), _plane_run(ctx)


def _plane_run(ctx: Any) -> PlaneRun:
    atlas, images = ctx.result("atlas"), ctx.result("images")
    post_model, _ = ctx.result("posterior")
    tau = float(getattr(post_model, "tau", 1.0))
    seconds = ctx.timings.get("sample", float("nan"))
    return PlaneRun(images=images["images"], posterior=post_model, tau=tau,
                    images_per_second=ctx.params.shape[0] * ctx.config.samples_per_point / seconds
                    if seconds else float("nan"),
                    feature_metric=feature_metric(images["embeddings"], atlas.axis0, atlas.axis1,
                                                  tau), timings=dict(ctx.timings))


def analyze(
    plane: Any,
    out: str | os.PathLike,
    features: Any = "pixels",
    labeler: Any = None,
    resolution: int | None = None,
    bundle: int | None = None,
    samples: int | None = None,
    bounds: Sequence[Sequence[float]] | None = None,
    seed: int = 0,
    potential_options: Mapping[str, Any] | None = None,
    report: bool = True,
    progress: bool = True,
    force: bool = False,
    backend: Mapping[str, Any] | None = None,
    **planes_options: Any,
) -> dict[str, Any]:
    """The atlas of ``plane`` and every image-plane analysis, in the run folder ``out``.

    Files: those of every run (``store.zarr``, ``posteriors.npy``, ``atlas.npz`` with ``labels``,
    ``config.json``, ...) plus ``images.npy``, ``labels.npy``, ``embeddings.npy``,
    ``planes.json`` (scalars), ``planes.npz`` (arrays), ``eta/`` (the eta comparison's two runs)
    and ``report/``.

    Args:
        plane, features, labeler, resolution, bundle, samples, bounds, seed, potential_options:
            see :func:`plane_atlas`.
        out: run folder (resumes after an interruption; refuses another config).
        report: write ``report/index.html`` and ``report/images.html``.
        backend: keyword arguments of :func:`latentatlas.distributed.generate` for the sampling
            stage (e.g. Ray).
        **planes_options: options of the ``planes`` stage (``eta_compare``, ``eta_resolution``,
            ``zoom_points``, ``zoom_resolution``, ``zooms``, ``path_points``, ``path_samples``,
            ``path_eta``, ``interpolation``; see :class:`latentatlas.analyses.planes.PlanesStage`).

    Returns:
        dict of the scalar results (what ``planes.json`` holds).
    """
    from .atlas.config import RunConfig
    from .atlas.pipeline import execute

    objects: dict[str, Any] = {}
    kwargs = _config_kwargs(plane, features, labeler, objects, {"planes": planes_options})
    if objects:
        raise ValueError(f"{', '.join(objects)}: a run folder records its options by name; pass a "
                         "feature/labeler name or a module-level function")
    config = RunConfig.make(plane, bounds, resolution, samples, bundle, None, seed,
                            kwargs["posterior_options"], potential_options,
                            analyses=kwargs["analyses"])
    ctx = execute(plane, config, out=out, force=force, progress=progress, report=report,
                  backend=backend)
    return ctx.result("planes")["scalars"]

