"""Image-generator latent planes: the atlas of a :class:`~latentatlas.sources.LatentPlane` and its
analyses (Lobashev et al., ICML 2025, section on diffusion latent planes).

Pipeline (:func:`plane_atlas`): decode the images of a ``resolution x resolution`` grid of the plane
(batched across grid points) -> class labels of the images (``labels``, the phase map) -> kernel
posterior on feature embeddings (``p(t_j | x) ∝ exp(-K ||E(x) - E(x_j)||^2 / (2 tau^2))``, exact for
a deterministic generator with Gaussian feature noise) on a posterior grid of at most
``posterior_resolution`` points per axis -> convex potential fitted to those posteriors
(:func:`latentatlas.geometry.fit_potential`) -> metric ``Hess Phi`` evaluated on the full grid.
The posterior grid is capped because the posteriors are a dense ``(P, G0, G1)`` array (2 GB in
float64 at 128 x 128); the potential is a smooth network, so it is evaluated at any resolution.

Analyses (library functions returning arrays / dataclasses; figures in
:mod:`latentatlas.report.images`):

- :func:`phase_agreement`: the class map against the metric's ridges (fraction of class changes
  within ``tolerance`` cells of a ridge, and the chance level: the area the widened ridges cover);
- :func:`interpolation`: geodesic vs straight interpolation, their lengths in the metric and in
  feature space, and the images along both;
- :func:`boundary_points` / :func:`refine_boundary` / :func:`plane_zoom`: zoom series around
  boundary points (box-counting dimension of the class boundary per zoom, new structure or not);
- :func:`plane_lipschitz`: ``L(delta)`` at points on and away from class boundaries;
- :func:`plane_path`: posterior means along a segment from stochastic (eta > 0) samples, jumps;
- :func:`volume_summary`: peak / median of ``sqrt(det g)`` (noise smooths the boundaries).

:func:`analyze` runs all of them and writes ``planes.json``, ``planes.npz`` and
``report/images.html`` into a run folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = [
    "Interpolation",
    "NearestCentroid",
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
    "make_features",
    "phase_agreement",
    "plane_atlas",
    "plane_lipschitz",
    "plane_path",
    "plane_zoom",
    "refine_boundary",
    "metric_ridges",
    "smooth_points",
    "volume_element",
    "volume_summary",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# features and labels
# --------------------------------------------------------------------------------------------------


def make_features(spec: str | nn.Module | Callable[[Tensor], Tensor], progress: bool = True) -> Any:
    """A feature map E from a name: ``"classifier"`` (the digits CNN, cached), ``"pixels"``, or
    ``"clip:PATH"`` (a local CLIP model); modules and callables pass through."""
    from . import features as F

    if not isinstance(spec, str):
        if not callable(spec):
            raise ValueError(f"features: expected 'classifier', 'pixels', 'clip:PATH' or a "
                             f"callable, got {type(spec).__qualname__}")
        return spec
    if spec == "classifier":
        return F.Classifier.pretrained(progress=progress)
    if spec == "pixels":
        return F.Pixels()
    if spec.startswith("clip:") and len(spec) > 5:
        return F.CLIP(spec[5:])
    raise ValueError(f"features: expected 'classifier', 'pixels' or 'clip:PATH', got {spec!r}")


class NearestCentroid:
    """Labels by the nearest of a set of centroids in feature space (deterministic).

    Used as the class of an image when no classifier exists (a user's generator): the centroids
    are k-means centres of the embeddings of the plane's grid images (:meth:`fit`).

    Args:
        features: E, (B, *shape) -> (B, F).
        centroids: (C, F) or None (then call :meth:`fit`).
    """

    def __init__(self, features: Callable[[Tensor], Tensor], centroids: np.ndarray | None = None):
        self.features = features
        self.centroids = None if centroids is None else np.asarray(centroids, dtype=np.float64)

    def fit(self, images: Tensor, k: int = 10, seed: int = 0) -> NearestCentroid:
        """k-means (scikit-learn) of the embeddings of ``images`` (B, *shape)."""
        from sklearn.cluster import KMeans

        emb = _embed(self.features, images)
        k = int(min(k, len(np.unique(np.round(emb, 9), axis=0))))
        km = KMeans(n_clusters=max(k, 1), n_init=4, random_state=seed).fit(emb)
        self.centroids = km.cluster_centers_.astype(np.float64)
        return self

    def predict(self, images: Tensor) -> Tensor:
        """(B, *shape) -> (B,) int64 index of the nearest centroid."""
        if self.centroids is None:
            raise ValueError("NearestCentroid: call fit(images) first")
        emb = _embed(self.features, images)
        d2 = ((emb[:, None, :] - self.centroids[None]) ** 2).sum(-1)
        return torch.as_tensor(d2.argmin(1), dtype=torch.int64)


def _embed(features: Callable[[Tensor], Tensor], images: Any, batch_size: int = 4096) -> np.ndarray:
    """E(images) as float64 numpy (B, F), in batches, in the feature module's dtype."""
    x = torch.as_tensor(images)
    anchor = next(features.parameters(), None) if isinstance(features, nn.Module) else None
    x = x.to(anchor) if anchor is not None else (x if x.is_floating_point() else x.float())
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            e = torch.as_tensor(features(x[i : i + batch_size]))
            out.append(e.reshape(e.shape[0], -1).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def class_labels(labeler: Any, images: Any, batch_size: int = 4096) -> np.ndarray:
    """Class of each image: ``labeler.predict(images)`` (a classifier) or ``labeler(images)``.

    Args:
        labeler: an object with ``predict`` ((B, *shape) -> (B,) ints) or such a callable.
        images: (B, *shape).

    Returns:
        (B,) int64.
    """
    fn = labeler.predict if hasattr(labeler, "predict") else labeler
    if not callable(fn):
        raise ValueError(f"labeler: expected a classifier with .predict or a callable, got "
                         f"{type(labeler).__qualname__}")
    x = torch.as_tensor(images)
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(np.asarray(torch.as_tensor(fn(x[i : i + batch_size])).cpu()).reshape(-1))
    labels = np.concatenate(out) if out else np.zeros(0, np.int64)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labeler: expected integer classes, got dtype {labels.dtype}")
    return labels.astype(np.int64)


def digits_latents(n: int = 1000, seed: int = 0) -> np.ndarray:
    """A fixed bank of digits-generator latents, (n, 64) float64 N(0, I) draws (``--anchors i j k``
    of ``latentatlas atlas digits`` index it)."""
    return np.random.default_rng(seed).standard_normal((n, 64))


# --------------------------------------------------------------------------------------------------
# the atlas of a plane
# --------------------------------------------------------------------------------------------------


def decode_grid(plane: Any, params: np.ndarray, samples: int = 1, seed: int = 0,
                chunk: int = 4096, progress: bool = True) -> np.ndarray:
    """Images at plane points, batched across points.

    Args:
        plane: a :class:`~latentatlas.sources.LatentPlane`.
        params: (P, 2) plane points.
        samples: S images per point (S > 1 only makes sense for eta > 0).
        seed: seed of the noise (eta > 0; per point, independent of the chunking).

    Returns:
        (P, S, *sample_shape) float32.
    """
    params = np.asarray(params, dtype=np.float64)
    out = np.empty((len(params), samples, *plane.sample_shape), dtype=np.float32)
    step = max(1, chunk // samples)
    for i in tqdm(range(0, len(params), step), desc="generate", disable=not progress,
                  leave=False):
        out[i : i + step] = plane.sample(params[i : i + step], samples, seed=seed)
    return out


@dataclass
class PlaneRun:
    """Everything :func:`plane_atlas` computed besides the :class:`~latentatlas.atlas.Atlas`.

    Attributes:
        images: (G0, G1, *shape) the first image at each grid point.
        posterior: the fitted :class:`~latentatlas.posterior.KernelPosterior` (posterior grid).
        posterior_axes: (axis0, axis1) of the posterior grid.
        tau: kernel width.
        images_per_second: generation throughput of the grid.
        feature_metric: (G0, G1, 2, 2) the kernel model's metric straight from the embeddings
            (:func:`feature_metric`), the model-free reference of the fitted potential's metric.
        timings: seconds per stage.
    """

    images: np.ndarray
    posterior: Any
    posterior_axes: tuple[np.ndarray, np.ndarray]
    tau: float
    images_per_second: float
    feature_metric: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


def feature_metric(embeddings: np.ndarray, axis0: np.ndarray, axis1: np.ndarray,
                   tau: float = 1.0) -> np.ndarray:
    """Fisher metric of the Gaussian feature model ``E(x(t)) ~ N(mu(t), tau^2 I)``:
    ``g = J^T J / tau^2`` with ``J = d mu / dt`` by central differences on the grid.

    This is the metric that the kernel posterior's potential approximates (Bregman fit), computed
    without the fit: at a jump of the generator the difference quotient is ``O(1 / h)``, so the
    ridge is one to two cells wide at any resolution.

    Args:
        embeddings: (G0, G1, F) mean embedding at each grid point.
        axis0, axis1: (G0,), (G1,).
        tau: kernel width.

    Returns:
        (G0, G1, 2, 2) float64.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 3 or e.shape[:2] != (len(axis0), len(axis1)):
        raise ValueError(f"embeddings: expected shape ({len(axis0)}, {len(axis1)}, F), got "
                         f"{e.shape}")
    if not tau > 0:
        raise ValueError(f"tau: expected a positive number, got {tau!r}")
    d0 = np.gradient(e, np.asarray(axis0, np.float64), axis=0)
    d1 = np.gradient(e, np.asarray(axis1, np.float64), axis=1)
    jac = np.stack([d0, d1], axis=-1)  # (G0, G1, F, 2)
    return np.einsum("abfi,abfj->abij", jac, jac) / tau**2


def _describe(obj: Any) -> Any:
    cfg = getattr(obj, "config", None)
    name = type(obj).__module__ + "." + type(obj).__qualname__
    try:
        json.dumps(cfg)
    except (TypeError, ValueError):
        cfg = None
    return {"class": name, "config": cfg} if cfg is not None else {"class": name}


def plane_atlas(
    plane: Any,
    features: Any = "pixels",
    labeler: Any = None,
    bounds: Sequence[Sequence[float]] | None = None,
    resolution: int = 64,
    samples: int | None = None,
    bundle: int = 4,
    posterior_resolution: int = 48,
    tau: float | None = None,
    seed: int = 0,
    potential_options: Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[Any, PlaneRun]:
    """Atlas of a latent plane: images -> labels -> kernel posterior -> potential -> metric.

    Args:
        plane: a :class:`~latentatlas.sources.LatentPlane` (its ``eta`` decides deterministic or
            stochastic generation).
        features: E for the kernel posterior (see :func:`make_features`).
        labeler: classes of the images (``.predict`` or a callable); None: a
            :class:`NearestCentroid` k-means labeler fitted on the grid's embeddings.
        bounds: ((lo0, hi0), (lo1, hi1)) plane region (default ``plane.bounds``).
        resolution: grid points per axis of the atlas and the labels (>= 4).
        samples: images per grid point (default 1 at eta = 0, 8 at eta > 0); at eta > 0 half are
            the kernel's references, half the bundles.
        bundle: K, samples per bundle (at eta = 0 a bundle is K copies of the one image, which
            sharpens the posterior like K independent feature-noise draws would).
        posterior_resolution: grid points per axis of the posterior grid (capped: the posteriors
            are a dense (P, P) array).
        tau: kernel width (None: median heuristic of :class:`~latentatlas.posterior.KernelPosterior`).
        seed: noise, potential fit.
        potential_options: extra keyword arguments of :func:`latentatlas.geometry.fit_potential`.
        out: run folder: ``atlas.npz`` (with ``labels``), ``config.json``, ``potential.safetensors``.
        progress: tqdm bars.

    Returns:
        ``(atlas, run)``: the :class:`~latentatlas.atlas.Atlas` (labels set) and a :class:`PlaneRun`.
    """
    import time

    from . import geometry
    from .atlas import Atlas, evaluate_potential, grid
    from .posterior import KernelPosterior
    from .sources import check_bounds

    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 4:
        raise ValueError(f"resolution: expected an int >= 4, got {resolution!r}")
    if isinstance(bundle, bool) or not isinstance(bundle, int) or bundle < 1:
        raise ValueError(f"bundle: expected a positive int, got {bundle!r}")
    if not isinstance(posterior_resolution, int) or posterior_resolution < 4:
        raise ValueError(f"posterior_resolution: expected an int >= 4, got {posterior_resolution!r}")
    stochastic = plane.eta > 0
    samples = (8 if stochastic else 1) if samples is None else samples
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples: expected a positive int, got {samples!r}")
    if stochastic and samples < 2:
        raise ValueError(f"samples: expected >= 2 images per point at eta > 0 (references and "
                         f"bundles), got {samples}")
    if stochastic and bundle > samples - samples // 2:
        raise ValueError(f"bundle: expected at most {samples - samples // 2} (half of the "
                         f"{samples} samples are references), got {bundle}")
    bounds = check_bounds(plane.bounds if bounds is None else bounds, plane.domain, plane.names)
    feats = make_features(features, progress)
    timings: dict[str, float] = {}

    # images and labels on the full grid
    axis0, axis1, params = grid(bounds, resolution)
    t0 = time.perf_counter()
    imgs = decode_grid(plane, params, samples, seed, progress=progress)
    timings["generate"] = time.perf_counter() - t0
    ips = imgs.shape[0] * imgs.shape[1] / max(timings["generate"], 1e-9)
    first = imgs[:, 0]
    if labeler is None:
        labeler = NearestCentroid(feats).fit(torch.as_tensor(first), seed=seed)
    t0 = time.perf_counter()
    per_sample = class_labels(labeler, imgs.reshape(-1, *imgs.shape[2:])).reshape(len(params), -1)
    labels = np.array([np.bincount(row).argmax() for row in per_sample], dtype=np.int64)
    timings["labels"] = time.perf_counter() - t0

    # kernel posterior on the (capped) posterior grid
    t0 = time.perf_counter()
    pres = min(resolution, posterior_resolution)
    if pres == resolution:
        p0, p1, pimgs = axis0, axis1, imgs
    else:
        p0, p1, pparams = grid(bounds, pres)
        pimgs = decode_grid(plane, pparams, samples, seed + 7, progress=progress)
    if stochastic:
        half = samples // 2
        refs, bund = pimgs[:, :half], pimgs[:, half:]
    else:
        refs, bund = pimgs, pimgs
    post_model = KernelPosterior(feats, tau=tau).fit(refs, p0, p1, progress=progress)
    emb = _embed(feats, torch.as_tensor(imgs.reshape(-1, *imgs.shape[2:])))
    emb = emb.reshape(resolution, resolution, samples, -1).mean(2)
    fmetric = feature_metric(emb, axis0, axis1, float(post_model.tau))
    posts = _kernel_posteriors(post_model, bund, bundle, seed + 1, progress)
    timings["posterior"] = time.perf_counter() - t0

    # potential and metric
    t0 = time.perf_counter()
    # The kernel posterior of a deterministic generator is a delta where neighbouring images
    # differ by >> tau (at class changes); its covariance is then singular. Smooth the posteriors
    # with the potential fit's own target kernel (sigma cells) and fit with the same sigma, as for
    # the grid estimator's smoothed targets: the model posterior is smoothed identically.
    opts = {"sigma": 0.5, **dict(potential_options or {})}
    posts = geometry.smooth(torch.as_tensor(posts), float(opts["sigma"])).numpy()
    pot, _ = geometry.fit_potential(posts, p0, p1, bundle=bundle, progress=progress,
                                    seed=seed + 2, **opts)
    phi, grad, hess = evaluate_potential(pot, params)
    timings["potential"] = time.perf_counter() - t0
    g = (resolution, resolution)
    config = {
        "format": "latentatlas-plane/1",
        "source": {"class": "latentatlas.sources.latent_plane.LatentPlane",
                   "generator": _describe(plane.generator), "eta": plane.eta,
                   "renormalize": plane.renormalize, "anchors": plane.anchors.tolist()},
        "features": features if isinstance(features, str) else _describe(feats),
        "names": list(plane.names), "bounds": [list(b) for b in bounds],
        "resolution": [resolution, resolution], "posterior_resolution": pres,
        "samples_per_point": samples, "bundle": bundle, "estimator": "kernel",
        "tau": float(post_model.tau), "seed": seed, "sigma": float(opts["sigma"]),
        "potential_options": {k: v for k, v in opts.items() if k != "checkpoint"},
    }
    atlas = Atlas(names=tuple(plane.names), axis0=axis0, axis1=axis1, potential=phi.reshape(g),
                  gradient=grad.reshape(*g, 2), metric=hess.reshape(*g, 2, 2), config=config,
                  labels=labels.reshape(g), potential_model=pot)
    if out is not None:
        from .io import save as save_model

        atlas.save(out)
        save_model(pot, Path(out) / "potential.safetensors")
        np.save(Path(out) / "images.npy", first.reshape(*g, *first.shape[1:]), allow_pickle=False)
    run = PlaneRun(images=first.reshape(*g, *first.shape[1:]), posterior=post_model,
                   posterior_axes=(p0, p1), tau=float(post_model.tau), images_per_second=ips,
                   feature_metric=fmetric, timings=timings)
    return atlas, run


def _kernel_posteriors(model: Any, samples: np.ndarray, bundle: int, seed: int, progress: bool,
                       chunk: int = 512) -> np.ndarray:
    """(P, S, *shape) -> (P, G0, G1) posteriors of one bundle per point (K copies when S = 1).

    For S >= K the bundle is K distinct samples of the point (chosen with the point's own RNG);
    the log-posteriors of the kernel are exact, no averaging over repeats is needed at S = 1.
    """
    p_all, s = samples.shape[:2]
    g0, g1 = model.grid_shape
    out = np.empty((p_all, g0, g1), dtype=np.float64)
    for p in tqdm(range(0, p_all, chunk), desc="posteriors", disable=not progress, leave=False):
        block = samples[p : p + chunk]
        if s == 1:
            x = np.repeat(block, bundle, axis=1)
        else:
            idx = np.stack([np.random.default_rng([seed, p + i]).choice(s, bundle, replace=False)
                            for i in range(len(block))])
            x = block[np.arange(len(block))[:, None], idx]
        with torch.no_grad():
            logp = model.log_posterior(torch.as_tensor(x)).double().cpu().numpy()
        out[p : p + chunk] = np.exp(logp).reshape(len(block), g0, g1)
    return out


# --------------------------------------------------------------------------------------------------
# analyses
# --------------------------------------------------------------------------------------------------


@dataclass
class PhaseAgreement:
    """Class map against metric ridges.

    Attributes:
        fraction: fraction of class-change cells within ``tolerance`` cells of a ridge cell.
        chance: fraction of all cells within ``tolerance`` of a ridge (what ``fraction`` would be
            if class changes were placed at random).
        ridge_fraction: fraction of ridge cells within ``tolerance`` of a class change.
        changes: (G0, G1) bool, class-change cells (:func:`~latentatlas.geometry.zoom.boundary_mask`).
        ridges: (G0, G1) bool, metric ridge cells.
    """

    fraction: float
    chance: float
    ridge_fraction: float
    changes: np.ndarray
    ridges: np.ndarray


def phase_agreement(labels: np.ndarray, ridges: np.ndarray, tolerance: int = 1) -> PhaseAgreement:
    """Agreement of the class map ``labels`` (G0, G1) with the metric's boundary mask ``ridges``.

    Returns:
        A :class:`PhaseAgreement` (NaN fractions when there is no class change / no ridge).
    """
    from scipy import ndimage

    from .geometry.zoom import boundary_mask

    labels = np.asarray(labels)
    ridges = np.asarray(ridges, dtype=bool)
    if labels.ndim != 2 or ridges.shape != labels.shape:
        raise ValueError(f"labels, ridges: expected two 2-D arrays of the same shape, got "
                         f"{labels.shape} and {ridges.shape}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance: expected a non-negative int, got {tolerance!r}")
    changes = boundary_mask(labels)
    # a change cell marks the pair (cell, next cell): widen it by one so that either side counts
    change_pairs = changes.copy()
    change_pairs[1:] |= changes[:-1] & (labels[:-1] != labels[1:])
    change_pairs[:, 1:] |= changes[:, :-1] & (labels[:, :-1] != labels[:, 1:])
    structure = np.ones((2 * tolerance + 1,) * 2, dtype=bool)
    near_ridge = ndimage.binary_dilation(ridges, structure) if tolerance else ridges
    near_change = ndimage.binary_dilation(change_pairs, structure) if tolerance else change_pairs
    frac = float(near_ridge[changes].mean()) if changes.any() else math.nan
    rfrac = float(near_change[ridges].mean()) if ridges.any() else math.nan
    return PhaseAgreement(fraction=frac, chance=float(near_ridge.mean()), ridge_fraction=rfrac,
                          changes=changes, ridges=ridges)


@dataclass
class Interpolation:
    """Geodesic against straight interpolation between two plane points.

    Attributes:
        a, b: (2,) end points.
        geodesic: (n, 2) geodesic points (equal metric arc length).
        linear: (n, 2) straight-line points (equal parameter spacing).
        images_geodesic, images_linear: (frames, *shape) images along both.
        metric_length_geodesic, metric_length_linear: lengths in the Fisher metric.
        feature_length_geodesic, feature_length_linear: lengths in feature space (sum of
            ``||E(x_{i+1}) - E(x_i)||`` over the n points).
    """

    a: np.ndarray
    b: np.ndarray
    geodesic: np.ndarray
    linear: np.ndarray
    images_geodesic: np.ndarray
    images_linear: np.ndarray
    metric_length_geodesic: float
    metric_length_linear: float
    feature_length_geodesic: float
    feature_length_linear: float


def _frames(points: np.ndarray, frames: int) -> np.ndarray:
    idx = np.round(np.linspace(0, len(points) - 1, frames)).astype(int)
    return points[idx]


def interpolation(plane: Any, atlas: Any, features: Any, a: Sequence[float], b: Sequence[float],
                  n: int = 48, frames: int = 10) -> Interpolation:
    """Geodesic (in the atlas's metric) vs straight interpolation from ``a`` to ``b``.

    Args:
        plane: the :class:`~latentatlas.sources.LatentPlane` (images, deterministic decode).
        atlas: its :class:`~latentatlas.atlas.Atlas`.
        features: E for the feature-space lengths.
        a, b: (2,) end points inside the atlas.
        n: path points; frames: images per strip.
    """
    from . import geometry

    pa, pb = np.asarray(a, np.float64).reshape(2), np.asarray(b, np.float64).reshape(2)
    fn = geometry.grid_metric_fn(atlas.axis0, atlas.axis1, atlas.metric)
    box = np.array([[atlas.axis0[0], atlas.axis0[-1]], [atlas.axis1[0], atlas.axis1[-1]]])
    geo = geometry.geodesic(fn, pa, pb, n=n, iters=200, bounds=box)
    gpts = np.asarray(geo.points, dtype=np.float64)
    lpts = pa + np.linspace(0, 1, n)[:, None] * (pb - pa)
    decode = plane.make_decoder()
    feats = make_features(features, progress=False)

    def feature_length(pts: np.ndarray) -> float:
        e = _embed(feats, torch.as_tensor(decode(pts)))
        return float(np.linalg.norm(np.diff(e, axis=0), axis=1).sum())

    return Interpolation(
        a=pa, b=pb, geodesic=gpts, linear=lpts,
        images_geodesic=decode(_frames(gpts, frames)), images_linear=decode(_frames(lpts, frames)),
        metric_length_geodesic=float(geo.length),
        metric_length_linear=float(geometry.path_length(fn, lpts)),
        feature_length_geodesic=feature_length(gpts), feature_length_linear=feature_length(lpts),
    )


def boundary_points(labels: np.ndarray, axis0: np.ndarray, axis1: np.ndarray, k: int = 3,
                    seed: int = 0) -> np.ndarray:
    """Up to ``k`` well-separated class-change pairs of the grid, as (k, 2, 2) segments.

    Each segment joins the centres of two neighbouring cells of different classes; spread over
    the plane by farthest-point sampling (first pair chosen at random with ``seed``).
    """
    labels = np.asarray(labels)
    pairs = []
    for di, dj in ((1, 0), (0, 1)):
        diff = labels[: labels.shape[0] - di, : labels.shape[1] - dj] != labels[di:, dj:]
        for i, j in np.argwhere(diff):
            pairs.append(((axis0[i], axis1[j]), (axis0[i + di], axis1[j + dj])))
    if not pairs:
        return np.zeros((0, 2, 2))
    segs = np.asarray(pairs, dtype=np.float64)
    mids = segs.mean(1)
    chosen = [int(np.random.default_rng(seed).integers(len(segs)))]
    dist = np.linalg.norm(mids - mids[chosen[0]], axis=1)
    while len(chosen) < min(k, len(segs)):
        nxt = int(np.argmax(dist))
        if dist[nxt] == 0:
            break
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(mids - mids[nxt], axis=1))
    return segs[chosen]


def refine_boundary(label_fn: Callable[[np.ndarray], np.ndarray], p: Sequence[float],
                    q: Sequence[float], iters: int = 48) -> np.ndarray:
    """Bisect the segment p -> q (labels differ at the ends) to a point where the label changes,
    to ``|q - p| 2**-iters`` (float64). Returns (2,)."""
    p = np.asarray(p, np.float64).reshape(2)
    q = np.asarray(q, np.float64).reshape(2)
    lp, lq = np.asarray(label_fn(np.stack([p, q]))).reshape(2)
    if lp == lq:
        raise ValueError("p, q: expected points with different labels")
    for _ in range(iters):
        m = 0.5 * (p + q)
        if np.all(m == p) or np.all(m == q):
            break
        lm = np.asarray(label_fn(m[None])).reshape(())
        if lm == lp:
            p = m
        else:
            q = m
    return 0.5 * (p + q)


@dataclass
class ZoomResult:
    """A zoom series around one boundary point.

    Attributes:
        center: (2,).
        levels: the :class:`~latentatlas.geometry.zoom.ZoomLevel` per zoom.
        dimensions: (Z,) box-counting dimension of the class boundary per zoom (NaN: < 2 classes).
        classes: (Z,) classes in the window.
        new_structure: (Z,) bool, the window shows more than a single smooth curve between two
            classes (more than 2 classes, or a dimension above 1.15).
    """

    center: np.ndarray
    levels: list
    dimensions: np.ndarray
    classes: np.ndarray
    new_structure: np.ndarray

    @property
    def keeps_appearing(self) -> bool:
        """New structure at the deepest zoom (self-similar switching does not stop)."""
        return bool(self.new_structure[-1])


def plane_zoom(label_fn: Callable[[np.ndarray], np.ndarray], center: Sequence[float], width: float,
               zooms: Sequence[float] = tuple(10.0 ** np.arange(1, 7)), resolution: int = 32,
               scales: Sequence[int] | None = None) -> ZoomResult:
    """Zoom series (:func:`latentatlas.geometry.zoom_series`) with the new-structure verdicts.

    ``label_fn`` maps float64 points (B, 2) to labels (B,) (e.g. classifier of the decoded images);
    ``scales``: box sizes in cells (default of ``zoom_series``; powers of 3 suit triadic fractals).
    """
    from .geometry.zoom import zoom_series

    levels = zoom_series(label_fn, center, width, zooms, resolution, scales)
    dims = np.array([lv.dimension for lv in levels], dtype=np.float64)
    classes = np.array([lv.classes for lv in levels], dtype=np.int64)
    new = (classes > 2) | (np.nan_to_num(dims, nan=0.0) > 1.15)
    return ZoomResult(center=np.asarray(center, np.float64), levels=levels, dimensions=dims,
                      classes=classes, new_structure=new)


def smooth_points(labels: np.ndarray, axis0: np.ndarray, axis1: np.ndarray, k: int = 2,
                  seed: int = 0) -> np.ndarray:
    """Up to ``k`` grid points farthest from any class change (inside a phase): (k, 2)."""
    from scipy import ndimage

    from .geometry.zoom import boundary_mask

    changes = boundary_mask(labels)
    if not changes.any():
        dist = np.full(labels.shape, np.inf)
    else:
        dist = ndimage.distance_transform_edt(~changes)
    order = np.argsort(-dist.ravel(), kind="stable")
    rng = np.random.default_rng(seed)
    top = order[: max(k, min(len(order), 4 * k))]
    pick = rng.choice(top, size=min(k, len(top)), replace=False)
    i, j = np.unravel_index(pick, labels.shape)
    return np.stack([axis0[i], axis1[j]], axis=1)


def plane_lipschitz(decode: Callable[[np.ndarray], np.ndarray], points: np.ndarray,
                    deltas: np.ndarray | None = None, directions: int = 8) -> list:
    """``L(delta)`` (:func:`latentatlas.geometry.lipschitz_profile`) at each of ``points`` (M, 2).

    ``decode`` must work in float64 (``LatentPlane.make_decoder()`` does) for deltas < 1e-6.
    """
    from .geometry.lipschitz import lipschitz_profile

    deltas = 10.0 ** -np.arange(1, 8) if deltas is None else deltas
    return [lipschitz_profile(decode, p, deltas, directions) for p in np.asarray(points)]


def plane_path(plane: Any, posterior: Any, a: Sequence[float], b: Sequence[float],
               points: int = 100, samples: int = 50, seed: int = 0) -> Any:
    """The seeds' path analysis: at each of ``points`` points of the segment a -> b draw
    ``samples`` images (the plane's eta; eta > 0 gives different images per seed), take the
    posterior mean of that bundle under ``posterior`` (a fitted kernel posterior), and flag the
    jumps between consecutive means (:func:`latentatlas.geometry.path_analysis`)."""
    from . import geometry

    def posterior_mean_fn(pts: np.ndarray, samples: int, seed: int) -> np.ndarray:
        x = decode_grid(plane, pts, samples, seed, progress=False)
        return np.asarray(posterior.posterior_mean(x), dtype=np.float64)

    return geometry.path_analysis(posterior_mean_fn, a, b, points=points, samples=samples,
                                  seed=seed)


def volume_element(metric: np.ndarray) -> np.ndarray:
    """``sqrt(det g)`` of (..., 2, 2) metrics (negative determinants clipped to 0)."""
    g = np.asarray(metric, dtype=np.float64)
    return np.sqrt(np.clip(g[..., 0, 0] * g[..., 1, 1] - g[..., 0, 1] * g[..., 1, 0], 0, None))


def metric_ridges(metric: np.ndarray, min_ratio: float = 3.0, smooth: float = 0.0) -> np.ndarray:
    """Boundary mask (G0, G1) of a gridded metric: crest lines of ``log sqrt(det g)``
    (:func:`latentatlas.geometry.ridges`) where the volume element is at least ``min_ratio`` times
    its median.

    The default z-score threshold of ``ridges`` uses the MAD of the whole field, which the smooth
    variation of an image generator's metric inflates (a jump by a factor of 30 can fail it); here
    the threshold is a fixed rise over the median, and no pre-smoothing blurs the one- to two-cell
    wide crests of a discontinuity. A field without such a rise has no boundary.
    """
    from . import geometry

    if not min_ratio > 1:
        raise ValueError(f"min_ratio: expected a number > 1, got {min_ratio!r}")
    vol = volume_element(metric)
    vol = np.maximum(vol, max(float(vol.max()) * 1e-12, 1e-300))
    logv = np.log(vol)
    threshold = float(np.median(logv)) + math.log(min_ratio)
    if logv.max() <= threshold:
        return np.zeros(vol.shape, dtype=bool)
    return np.asarray(geometry.ridges(vol, smooth=smooth, threshold=threshold), dtype=bool)


def volume_summary(atlas: Any, metric: np.ndarray | None = None) -> dict[str, float]:
    """Peak, median and peak/median of ``sqrt(det g)`` (the atlas's metric, or ``metric``), and
    the fraction of class-change cells."""
    from .geometry.zoom import boundary_mask

    vol = atlas.volume_element() if metric is None else volume_element(metric)
    med = float(np.median(vol))
    out = {"peak": float(vol.max()), "median": med,
           "peak_over_median": float(vol.max() / med) if med > 0 else math.inf}
    if atlas.labels is not None:
        out["class_change_fraction"] = float(boundary_mask(atlas.labels).mean())
    return out


# --------------------------------------------------------------------------------------------------
# everything into a run folder
# --------------------------------------------------------------------------------------------------


def _label_fn(plane: Any, labeler: Any) -> Callable[[np.ndarray], np.ndarray]:
    decode = plane.make_decoder()
    return lambda p: class_labels(labeler, torch.as_tensor(decode(p)))


def analyze(
    plane: Any,
    out: str | os.PathLike,
    features: Any = "pixels",
    labeler: Any = None,
    resolution: int = 64,
    bundle: int = 4,
    samples: int | None = None,
    bounds: Sequence[Sequence[float]] | None = None,
    posterior_resolution: int = 48,
    eta_compare: float | None = 0.5,
    eta_resolution: int = 32,
    zoom_points: int = 2,
    zoom_resolution: int = 32,
    zooms: Sequence[float] = tuple(10.0 ** np.arange(1, 7)),
    path_points: int = 100,
    path_samples: int = 50,
    path_eta: float = 0.5,
    seed: int = 0,
    potential_options: Mapping[str, Any] | None = None,
    report: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """The atlas of ``plane`` and every analysis, written into ``out``.

    Files: ``atlas.npz`` (+ ``labels``), ``config.json``, ``potential.safetensors``,
    ``images.npy``, ``planes.json`` (scalars), ``planes.npz`` (arrays), ``report/images.html``.

    Args:
        plane: a :class:`~latentatlas.sources.LatentPlane`.
        out: run folder.
        features, labeler, resolution, bundle, samples, bounds, posterior_resolution, seed,
            potential_options: see :func:`plane_atlas`.
        eta_compare: also build the atlas with this eta (at ``eta_resolution``; None: skip) and
            compare ``sqrt(det g)`` peak / median.
        zoom_points, zoom_resolution, zooms: zoom series around that many boundary points.
        path_points, path_samples, path_eta: the seeds' path analysis (skipped if ``path_points``
            is 0).
        report: write ``report/images.html`` with the figures.

    Returns:
        dict of the scalar results (what ``planes.json`` holds).
    """
    import dataclasses

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    feats = make_features(features, progress)
    atlas, run = plane_atlas(plane, feats, labeler, bounds, resolution, samples, bundle,
                             posterior_resolution, seed=seed, potential_options=potential_options,
                             out=out, progress=progress)
    if labeler is None:
        labeler = NearestCentroid(feats).fit(torch.as_tensor(run.images.reshape(
            -1, *run.images.shape[2:])), seed=seed)
    a0, a1 = atlas.axis0, atlas.axis1
    scalars: dict[str, Any] = {"images_per_second": run.images_per_second, "tau": run.tau,
                               "timings": run.timings, "classes": np.unique(atlas.labels).tolist()}
    arrays: dict[str, np.ndarray] = {"labels": atlas.labels}

    # phase map against the boundary maps of the fitted metric and of the feature metric
    scalars["phase_agreement"] = {}
    for name, metric in (("metric", atlas.metric), ("feature_metric", run.feature_metric)):
        agree = phase_agreement(atlas.labels, metric_ridges(metric))
        scalars["phase_agreement"][name] = {
            "fraction": agree.fraction, "chance": agree.chance,
            "ridge_fraction": agree.ridge_fraction,
            "class_change_cells": int(agree.changes.sum()), "ridge_cells": int(agree.ridges.sum())}
        arrays[f"ridges_{name}"] = agree.ridges
        arrays[f"volume_{name}"] = volume_element(metric)
        arrays["changes"] = agree.changes
    scalars["volume"] = {"metric": volume_summary(atlas),
                         "feature_metric": volume_summary(atlas, run.feature_metric)}

    # geodesic vs linear between the two most distant class-change midpoints (or the diagonal)
    lo = np.array([a0[0], a1[0]])
    hi = np.array([a0[-1], a1[-1]])
    pa, pb = lo + 0.1 * (hi - lo), lo + 0.9 * (hi - lo)
    interp = interpolation(plane, atlas, feats, pa, pb)
    scalars["interpolation"] = {k: v for k, v in dataclasses.asdict(interp).items()
                                if isinstance(v, float)}
    scalars["interpolation"].update(a=pa.tolist(), b=pb.tolist())
    for key in ("geodesic", "linear", "images_geodesic", "images_linear"):
        arrays[f"interp_{key}"] = np.asarray(getattr(interp, key))

    # zoom series and Lipschitz profiles at boundary points, Lipschitz away from them
    det_plane = plane if plane.eta == 0 else _with_eta(plane, 0.0)
    label_fn = _label_fn(det_plane, labeler)
    zooms_out, on_pts = [], []
    width = float(min(hi - lo)) / 4
    for seg in boundary_points(atlas.labels, a0, a1, zoom_points, seed):
        try:
            center = refine_boundary(label_fn, seg[0], seg[1])
        except ValueError:  # the grid cells' labels were not reproduced (should not happen)
            continue
        on_pts.append(center)
        if zoom_resolution:
            zooms_out.append(plane_zoom(label_fn, center, width, zooms, zoom_resolution))
    scalars["zoom"] = [{"center": z.center.tolist(), "zooms": [lv.zoom for lv in z.levels],
                        "dimensions": z.dimensions.tolist(), "classes": z.classes.tolist(),
                        "new_structure": z.new_structure.tolist(),
                        "keeps_appearing": z.keeps_appearing} for z in zooms_out]
    for i, z in enumerate(zooms_out):
        arrays[f"zoom_{i}_labels"] = np.stack([lv.labels for lv in z.levels])
    off_pts = smooth_points(atlas.labels, a0, a1, 2, seed)
    profiles = plane_lipschitz(det_plane.make_decoder(), np.concatenate(
        [np.reshape(on_pts, (-1, 2)), off_pts]))
    kinds = ["boundary"] * len(on_pts) + ["inside"] * len(off_pts)
    scalars["lipschitz"] = [{"point": p.point.tolist(), "where": w, "slope": p.slope,
                             "lipschitz": p.lipschitz.tolist()} for p, w in zip(profiles, kinds)]
    if profiles:
        arrays["lipschitz_deltas"] = profiles[0].deltas
        arrays["lipschitz"] = np.stack([p.lipschitz for p in profiles])

    # the seeds' path analysis (stochastic sampler) across the plane
    if path_points:
        noisy = _with_eta(plane, path_eta)
        path = plane_path(noisy, run.posterior, pa, pb, path_points, path_samples, seed + 5)
        scalars["path"] = {"a": pa.tolist(), "b": pb.tolist(), "eta": path_eta,
                           "samples": path_samples,
                           "jump_positions": np.asarray(path.jump_positions).tolist(),
                           "threshold": float(path.threshold)}
        arrays["path_positions"], arrays["path_distances"] = path.positions, path.distances
        arrays["path_means"] = path.means
        arrays["path_jumps"] = np.asarray(path.jumps, dtype=np.int64)

    # the maps again with noise
    if eta_compare:
        noisy = _with_eta(plane, eta_compare)
        atlas_eta, run_eta = plane_atlas(noisy, feats, labeler, atlas.bounds, eta_resolution,
                                         samples=8, bundle=min(bundle, 4),
                                         posterior_resolution=posterior_resolution, seed=seed,
                                         potential_options=potential_options, progress=progress)
        coarse, run0 = (atlas, run) if eta_resolution == resolution else plane_atlas(
            det_plane, feats, labeler, atlas.bounds, eta_resolution, bundle=min(bundle, 4),
            posterior_resolution=posterior_resolution, seed=seed,
            potential_options=potential_options, progress=progress)
        scalars["eta"] = {
            "eta": eta_compare, "resolution": eta_resolution,
            "eta0": {"metric": volume_summary(coarse),
                     "feature_metric": volume_summary(coarse, run0.feature_metric)},
            "eta_noisy": {"metric": volume_summary(atlas_eta),
                          "feature_metric": volume_summary(atlas_eta, run_eta.feature_metric)}}
        arrays["eta0_volume"] = coarse.volume_element()
        arrays["eta_volume"] = atlas_eta.volume_element()
        arrays["eta0_feature_volume"] = volume_element(run0.feature_metric)
        arrays["eta_feature_volume"] = volume_element(run_eta.feature_metric)
        arrays["eta0_labels"], arrays["eta_labels"] = coarse.labels, atlas_eta.labels
    from .atlas import _jsonable

    scalars = _jsonable(scalars)
    (out / "planes.json").write_text(json.dumps(scalars, indent=2, allow_nan=True) + "\n")
    np.savez(out / "planes.npz", **arrays)
    if report:
        from .report.images import write_images_report

        write_images_report(out, atlas=atlas, images=run.images, scalars=scalars, arrays=arrays)
    return scalars


def _with_eta(plane: Any, eta: float) -> Any:
    """The same plane with another noise level (shares the generator)."""
    from .sources import LatentPlane

    return LatentPlane(plane.generator, anchors=plane.anchors, renormalize=plane.renormalize,
                       eta=eta, bounds=plane.bounds, batch_size=plane.batch_size)
