"""Building blocks of the image-plane analyses (library functions returning arrays and
dataclasses; the stage that runs them is :mod:`latentatlas.analyses.planes`).

- :func:`feature_metric`: the kernel model's metric straight from the embeddings;
- :func:`phase_agreement`: the class map against the metric's ridges (fraction of class changes
  within ``tolerance`` cells of a ridge, and the chance level: the area the widened ridges cover);
- :func:`interpolation`: geodesic vs straight interpolation, their lengths in the metric and in
  feature space, the geodesic's deviation from the chord, and the images along both;
- :func:`geodesic_pairs`: geodesics for a pair inside one phase and a pair across a boundary,
  several initialisations, deviation from the chord in metric units;
- :func:`boundary_points` / :func:`refine_boundary` / :func:`plane_zoom`: zoom series around
  boundary points (box-counting dimension of the class boundary per zoom, new structure or not);
- :func:`plane_lipschitz`: ``L(delta)`` at points on and away from class boundaries;
- :func:`plane_path`: posterior means along a segment from stochastic (eta > 0) samples, jumps;
- :func:`volume_summary`: peak / median of ``sqrt(det g)`` (noise smooths the boundaries).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..atlas.container import volume_element
from ..features.factory import class_labels, embed, make_features

__all__ = [
    "GeodesicPair",
    "Interpolation",
    "PhaseAgreement",
    "ZoomResult",
    "boundary_points",
    "decode_grid",
    "feature_metric",
    "generator_dtype",
    "geodesic_pairs",
    "interpolation",
    "label_fn",
    "metric_ridges",
    "phase_agreement",
    "plane_lipschitz",
    "plane_path",
    "plane_zoom",
    "refine_boundary",
    "smooth_points",
    "volume_summary",
    "with_eta",
]


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

    from ..geometry.zoom import boundary_mask

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
        deviation: largest metric length from the chord to the geodesic.
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
    deviation: float = float("nan")


def _frames(points: np.ndarray, frames: int) -> np.ndarray:
    idx = np.round(np.linspace(0, len(points) - 1, frames)).astype(int)
    return points[idx]


def interpolation(plane: Any, atlas: Any, features: Any, a: Sequence[float], b: Sequence[float],
                  n: int = 48, frames: int = 10, starts: int = 1) -> Interpolation:
    """Geodesic (in the atlas's metric) vs straight interpolation from ``a`` to ``b``.

    Args:
        plane: the :class:`~latentatlas.sources.LatentPlane` (images, deterministic decode).
        atlas: its :class:`~latentatlas.atlas.Atlas`.
        features: E for the feature-space lengths.
        a, b: (2,) end points inside the atlas.
        n: path points; frames: images per strip; starts: geodesic initialisations (the
            shortest is kept).
    """
    from .. import geometry

    pa, pb = np.asarray(a, np.float64).reshape(2), np.asarray(b, np.float64).reshape(2)
    fn = geometry.grid_metric_fn(atlas.axis0, atlas.axis1, atlas.metric)
    box = np.array([[atlas.axis0[0], atlas.axis0[-1]], [atlas.axis1[0], atlas.axis1[-1]]])
    geo = geometry.geodesic(fn, pa, pb, n=n, iters=200, bounds=box, starts=starts)
    gpts = np.asarray(geo.points, dtype=np.float64)
    lpts = pa + np.linspace(0, 1, n)[:, None] * (pb - pa)
    decode = plane.make_decoder()
    feats = make_features(features, progress=False)

    def feature_length(pts: np.ndarray) -> float:
        e = embed(feats, torch.as_tensor(decode(pts)))
        return float(np.linalg.norm(np.diff(e, axis=0), axis=1).sum())

    return Interpolation(
        a=pa, b=pb, geodesic=gpts, linear=lpts,
        images_geodesic=decode(_frames(gpts, frames)), images_linear=decode(_frames(lpts, frames)),
        metric_length_geodesic=float(geo.length),
        metric_length_linear=float(geometry.path_length(fn, lpts)),
        feature_length_geodesic=feature_length(gpts), feature_length_linear=feature_length(lpts),
        deviation=float(geo.deviation),
    )


@dataclass
class GeodesicPair:
    """A geodesic of the atlas's metric between two points, against its chord.

    Attributes:
        kind: "inside" (both ends in one connected phase, the chord inside it) or "across" (the
            ends in two different phases).
        a, b: (2,) end points.
        points: (n, 2) the geodesic.
        length, straight_length: metric lengths of the geodesic and of the chord.
        deviation: largest metric length from the chord to the geodesic
            (:func:`latentatlas.geometry.chord_deviation`).
        relative_deviation: ``deviation / length``.
        start_lengths: the length reached from each initialisation (straight line first).
    """

    kind: str
    a: np.ndarray
    b: np.ndarray
    points: np.ndarray
    length: float
    straight_length: float
    deviation: float
    relative_deviation: float
    start_lengths: tuple[float, ...]

    def record(self) -> dict[str, Any]:
        """The scalars, JSON-ready."""
        return {"kind": self.kind, "a": self.a.tolist(), "b": self.b.tolist(),
                "length": self.length, "straight_length": self.straight_length,
                "deviation": self.deviation, "relative_deviation": self.relative_deviation,
                "start_lengths": list(self.start_lengths)}


def _phase_pairs(labels: np.ndarray) -> list[tuple[str, tuple[int, int], tuple[int, int]]]:
    """Grid index pairs: the deepest cell of the largest phase (connected class region) with the
    farthest cell of the same phase that is at least half as deep and whose chord stays in the
    phase ("inside"); and with the deepest cell of the largest phase of another class
    ("across"). Depth: distance to another class or to the grid's edge."""
    from scipy import ndimage

    comps = []
    for c in np.unique(labels):
        lab, k = ndimage.label(labels == c)
        for i in range(1, k + 1):
            mask = lab == i
            depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
            comps.append((int(mask.sum()), c, mask, depth))
    comps.sort(key=lambda t: -t[0])
    out: list[tuple[str, tuple[int, int], tuple[int, int]]] = []
    if not comps:
        return out
    _, c0, mask, depth = comps[0]
    ia = np.unravel_index(int(np.argmax(depth)), depth.shape)
    cand = np.argwhere(depth >= max(2.0, 0.5 * depth.max()))
    order = np.argsort(-np.hypot(*(cand - np.asarray(ia)).T), kind="stable")
    for ib in cand[order]:
        line = np.round(np.asarray(ia)[None] + np.linspace(0, 1, 4 * max(labels.shape))[:, None]
                        * (ib - np.asarray(ia))).astype(int)
        if tuple(ib) != tuple(ia) and mask[line[:, 0], line[:, 1]].all():
            out.append(("inside", (int(ia[0]), int(ia[1])), (int(ib[0]), int(ib[1]))))
            break
    other = [t for t in comps if t[1] != c0]
    if other:
        ib = np.unravel_index(int(np.argmax(other[0][3])), other[0][3].shape)
        out.append(("across", (int(ia[0]), int(ia[1])), (int(ib[0]), int(ib[1]))))
    return out


def geodesic_pairs(atlas: Any, n: int = 48, starts: int = 3) -> list[GeodesicPair]:
    """Geodesics of ``atlas.metric`` (gridded, ``atlas.axis0``, ``atlas.axis1``) for a pair inside
    one phase of ``atlas.labels`` and a pair across a boundary (see :func:`_phase_pairs`), each the
    shortest of ``starts`` initialisations, with their deviation from the chord in metric units.
    Returns [] without labels."""
    from .. import geometry

    if getattr(atlas, "labels", None) is None:
        return []
    a0, a1 = np.asarray(atlas.axis0), np.asarray(atlas.axis1)
    fn = geometry.grid_metric_fn(a0, a1, atlas.metric)
    box = np.array([[a0[0], a0[-1]], [a1[0], a1[-1]]])
    out = []
    for kind, (i0, j0), (i1, j1) in _phase_pairs(np.asarray(atlas.labels)):
        pa, pb = np.array([a0[i0], a1[j0]]), np.array([a0[i1], a1[j1]])
        geo = geometry.geodesic(fn, pa, pb, n=n, iters=200, bounds=box, starts=starts)
        out.append(GeodesicPair(kind, pa, pb, np.asarray(geo.points), float(geo.length),
                                float(geo.straight_length), float(geo.deviation),
                                float(geo.relative_deviation), tuple(geo.start_lengths)))
    return out


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


#: Dimension above which a measurable zoom window counts as new structure: halfway between a
#: smooth curve (1) and the Koch curve (log 4 / log 3 = 1.262), both read within 0.06 by the
#: refined box counting at the pipeline's 32-cell windows (tests/test_zoom_calibration.py).
NEW_STRUCTURE_DIMENSION = 1.13


@dataclass
class ZoomResult:
    """A zoom series around one boundary point.

    Attributes:
        center: (2,).
        levels: the :class:`~latentatlas.geometry.zoom.ZoomLevel` per zoom.
        dimensions: (Z,) box-counting dimension of the class boundary per zoom (NaN where not
            measurable).
        classes: (Z,) classes in the window.
        measurable: (Z,) bool, the window supports a box-counting slope (two classes or more, a
            boundary of at least ``min_boxes`` boxes at the coarsest level).
        new_structure: (Z,) bool, the window shows more than a single smooth curve between two
            classes: more than 2 classes, or a measurable dimension above ``threshold``. A window
            with two classes and no measurable dimension is not counted as new structure (see
            ``measurable``).
        threshold: the dimension threshold used.
    """

    center: np.ndarray
    levels: list
    dimensions: np.ndarray
    classes: np.ndarray
    new_structure: np.ndarray
    measurable: np.ndarray | None = None
    threshold: float = NEW_STRUCTURE_DIMENSION

    @property
    def keeps_appearing(self) -> bool:
        """New structure at the deepest zoom (self-similar switching does not stop)."""
        return bool(self.new_structure[-1])


def plane_zoom(label_fn: Callable[[np.ndarray], np.ndarray], center: Sequence[float], width: float,
               zooms: Sequence[float] = tuple(10.0 ** np.arange(1, 7)), resolution: int = 32,
               scales: Sequence[int] | None = None, refine: int = 3,
               threshold: float = NEW_STRUCTURE_DIMENSION) -> ZoomResult:
    """Zoom series (:func:`latentatlas.geometry.zoom_series`) with the new-structure verdicts.

    ``label_fn`` maps float64 points (B, 2) to labels (B,) (e.g. classifier of the decoded images);
    ``scales``: None for the refined box counting (``refine`` quadtree levels, calibrated at 32-cell
    windows), or box sizes in cells for plain box counting of the mask (powers of 3 suit triadic
    fractals on large windows); ``threshold``: dimension above which a window is new structure.
    """
    from ..geometry.zoom import zoom_series

    if not 1.0 < threshold < 2.0:
        raise ValueError(f"threshold: expected a dimension between 1 and 2, got {threshold!r}")
    levels = zoom_series(label_fn, center, width, zooms, resolution, scales, refine=refine)
    dims = np.array([lv.dimension for lv in levels], dtype=np.float64)
    classes = np.array([lv.classes for lv in levels], dtype=np.int64)
    measurable = np.array([lv.measurable for lv in levels], dtype=bool)
    new = (classes > 2) | (measurable & (np.nan_to_num(dims, nan=0.0) > threshold))
    return ZoomResult(center=np.asarray(center, np.float64), levels=levels, dimensions=dims,
                      classes=classes, new_structure=new, measurable=measurable,
                      threshold=float(threshold))


def smooth_points(labels: np.ndarray, axis0: np.ndarray, axis1: np.ndarray, k: int = 2,
                  seed: int = 0) -> np.ndarray:
    """Up to ``k`` grid points farthest from any class change (inside a phase): (k, 2)."""
    from scipy import ndimage

    from ..geometry.zoom import boundary_mask

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


def generator_dtype(plane: Any) -> str | None:
    """The dtype a plane's generator computes in, when it says (``compute_dtype``, e.g.
    :class:`~latentatlas.generators.Diffusers`); None otherwise."""
    value = getattr(getattr(plane, "generator", None), "compute_dtype", None)
    return None if value is None else str(value).removeprefix("torch.")


def plane_lipschitz(decode: Callable[[np.ndarray], np.ndarray], points: np.ndarray,
                    deltas: np.ndarray | None = None, directions: int = 8,
                    dtype: Any = None) -> list:
    """``L(delta)`` (:func:`latentatlas.geometry.lipschitz_profile`) at each of ``points`` (M, 2).

    ``decode`` works in float64 (``LatentPlane.make_decoder()`` does); ``dtype`` is the dtype the
    generator computes in (:func:`generator_dtype`), whose rounding sets each point's precision
    floor (steps at and below it are excluded and recorded).
    """
    from ..geometry.lipschitz import lipschitz_profile

    deltas = 10.0 ** -np.arange(1, 8) if deltas is None else deltas
    return [lipschitz_profile(decode, p, deltas, directions, dtype=dtype)
            for p in np.asarray(points)]


def plane_path(plane: Any, posterior: Any, a: Sequence[float], b: Sequence[float],
               points: int = 100, samples: int = 50, seed: int = 0) -> Any:
    """The seeds' path analysis: at each of ``points`` points of the segment a -> b draw
    ``samples`` images (the plane's eta; eta > 0 gives different images per seed), take the
    posterior mean of that bundle under ``posterior`` (a fitted kernel posterior), and flag the
    jumps between consecutive means (:func:`latentatlas.geometry.path_analysis`)."""
    from .. import geometry

    def posterior_mean_fn(pts: np.ndarray, samples: int, seed: int) -> np.ndarray:
        x = decode_grid(plane, pts, samples, seed, progress=False)
        return np.asarray(posterior.posterior_mean(x), dtype=np.float64)

    return geometry.path_analysis(posterior_mean_fn, a, b, points=points, samples=samples,
                                  seed=seed)


def metric_ridges(metric: np.ndarray, min_ratio: float = 3.0, smooth: float = 0.0) -> np.ndarray:
    """Boundary mask (G0, G1) of a gridded metric: crest lines of ``log sqrt(det g)``
    (:func:`latentatlas.geometry.ridges`) where the volume element is at least ``min_ratio`` times
    its median.

    The default z-score threshold of ``ridges`` uses the MAD of the whole field, which the smooth
    variation of an image generator's metric inflates (a jump by a factor of 30 can fail it); here
    the threshold is a fixed rise over the median, and no pre-smoothing blurs the one- to two-cell
    wide crests of a discontinuity. A field without such a rise has no boundary.
    """
    from .. import geometry

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
    from ..geometry.zoom import boundary_mask

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


def label_fn(plane: Any, labeler: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Labels of plane points (B, 2) -> (B,): ``labeler`` on the deterministic float64 decode.

    A labeler that is a torch module (e.g. the digits classifier) runs on a float64 copy: rounding
    the images to float32 makes the class boundary rough below ~1e-7 of the image scale, and deep
    zoom windows then read that roughness as new structure (measured, digits plane at zoom 1e6:
    box dimensions 1.37 and 1.51 at two boundary points with the float32 classifier, 1.00 with
    its float64 copy; ``benchmarks/calibration.py --digits``).
    """
    decode = plane.make_decoder()
    if isinstance(labeler, torch.nn.Module):
        import copy

        labeler = copy.deepcopy(labeler).to(torch.float64)
    return lambda p: class_labels(labeler, torch.as_tensor(decode(p)))


def with_eta(plane: Any, eta: float) -> Any:
    """The same plane with another noise level (shares the generator)."""
    from ..sources import LatentPlane

    return LatentPlane(plane.generator, anchors=plane.anchors, renormalize=plane.renormalize,
                       eta=eta, bounds=plane.bounds, batch_size=plane.batch_size)
