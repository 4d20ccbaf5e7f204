"""Figures of image-generator latent planes (see :mod:`latentatlas.planes`) and their HTML page.

Each ``plot_*`` function returns a matplotlib ``Figure``; :func:`write_images_report` draws all of
them from the arrays of :func:`latentatlas.planes.analyze` into ``DIR/report/`` and writes
``DIR/report/images.html``.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._util import atomic_write

__all__ = [
    "plot_eta",
    "plot_image_strips",
    "plot_lipschitz",
    "plot_path",
    "plot_phase_maps",
    "plot_zoom",
    "write_images_report",
]


def _figure(nrows: int, ncols: int, size: tuple[float, float]) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _extent(axis0: np.ndarray, axis1: np.ndarray) -> list[float]:
    return [float(axis0[0]), float(axis0[-1]), float(axis1[0]), float(axis1[-1])]


def _show(ax: Any, field: np.ndarray, axis0: np.ndarray, axis1: np.ndarray, **kw: Any) -> Any:
    # field is (G0, G1) in 'ij' order: axis0 horizontal, axis1 vertical
    return ax.imshow(np.asarray(field).T, origin="lower", extent=_extent(axis0, axis1),
                     aspect="auto", interpolation="nearest", **kw)


def _as_image(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        side = int(round(math.sqrt(x.size)))
        x = x.reshape(side, side) if side * side == x.size else x[None]
    if x.ndim == 3 and x.shape[0] in (1, 3):
        x = np.moveaxis(x, 0, -1)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    return x


def plot_phase_maps(labels: np.ndarray, volumes: Mapping[str, np.ndarray],
                    ridges: Mapping[str, np.ndarray], axis0: np.ndarray, axis1: np.ndarray,
                    agreement: Mapping[str, Any] | None = None) -> Any:
    """Phase map (class per grid point) beside ``log sqrt(det g)`` with ridges, per metric.

    Args:
        labels: (G0, G1) classes; volumes / ridges: name -> (G0, G1) volume element / bool mask.
        agreement: name -> dict with ``fraction`` and ``chance`` (shown in the titles).
    """
    names = list(volumes)
    fig, axes = _figure(1, 1 + len(names), (4.2 * (1 + len(names)), 3.8))
    im = _show(axes[0, 0], labels, axis0, axis1, cmap="tab10", vmin=-0.5, vmax=9.5)
    axes[0, 0].set_title("class of the generated image")
    fig.colorbar(im, ax=axes[0, 0], ticks=range(10))
    for ax, name in zip(axes[0, 1:], names):
        vol = np.asarray(volumes[name], dtype=np.float64)
        im = _show(ax, np.log10(np.maximum(vol, vol.max() * 1e-12 + 1e-300)), axis0, axis1,
                   cmap="magma")
        fig.colorbar(im, ax=ax, label="log10 sqrt(det g)")
        mask = np.asarray(ridges.get(name, np.zeros_like(vol, bool)))
        ii, jj = np.nonzero(mask)
        ax.plot(axis0[ii], axis1[jj], "c.", ms=2)
        title = f"{name}: ridges (cyan)"
        if agreement and name in agreement:
            a = agreement[name]
            title += f"\nclass changes on ridges {a['fraction']:.2f} (chance {a['chance']:.2f})"
        ax.set_title(title, fontsize=9)
    for ax in axes[0]:
        ax.set_xlabel("alpha")
        ax.set_ylabel("beta")
    return fig


def plot_image_strips(images_geodesic: np.ndarray, images_linear: np.ndarray,
                      lengths: Mapping[str, float] | None = None) -> Any:
    """Two rows of images: along the geodesic and along the straight line (frames, *shape)."""
    n = len(images_geodesic)
    fig, axes = _figure(2, n, (1.1 * n + 1, 2.8))
    for row, (imgs, name) in enumerate(((images_geodesic, "geodesic"),
                                        (images_linear, "linear"))):
        for k in range(n):
            ax = axes[row, k]
            ax.imshow(_as_image(imgs[k]), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        label = name
        if lengths:
            label += (f"\nmetric {lengths.get(f'metric_length_{name}', math.nan):.3g}"
                      f"\nfeature {lengths.get(f'feature_length_{name}', math.nan):.3g}")
        axes[row, 0].set_ylabel(label, fontsize=8)
    return fig


def plot_zoom(levels_labels: np.ndarray, zooms: Sequence[float], dimensions: Sequence[float],
              classes: Sequence[int]) -> Any:
    """Zoom series panels: (Z, R, R) labels per zoom with the box dimension and class count."""
    z = len(levels_labels)
    fig, axes = _figure(1, z, (2.2 * z, 2.6))
    for k in range(z):
        ax = axes[0, k]
        ax.imshow(np.asarray(levels_labels[k]).T, origin="lower", cmap="tab10", vmin=-0.5,
                  vmax=9.5, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        dim = dimensions[k]
        ax.set_title(f"zoom {zooms[k]:.0e}\nD={dim:.2f}, {classes[k]} cl." if np.isfinite(dim)
                     else f"zoom {zooms[k]:.0e}\n{classes[k]} class", fontsize=8)
    return fig


def plot_lipschitz(deltas: np.ndarray, lipschitz: np.ndarray, labels: Sequence[str]) -> Any:
    """log-log ``L(delta)`` curves (M, n) with their slopes in the legend labels."""
    fig, axes = _figure(1, 1, (5.0, 3.8))
    ax = axes[0, 0]
    for curve, label in zip(np.asarray(lipschitz), labels):
        ax.loglog(deltas, np.maximum(curve, 1e-300), "o-", ms=3, label=label)
    ax.set_xlabel("delta")
    ax.set_ylabel("L(delta) = max ||x(t + delta u) - x(t)|| / delta")
    ax.invert_xaxis()
    ax.legend(fontsize=7)
    return fig


def plot_path(positions: np.ndarray, distances: np.ndarray, jumps: np.ndarray,
              threshold: float | None = None) -> Any:
    """Distances between consecutive posterior means along the segment, jumps marked."""
    fig, axes = _figure(1, 1, (6.0, 3.2))
    ax = axes[0, 0]
    mid = 0.5 * (positions[1:] + positions[:-1])
    ax.plot(mid, distances, "k.-", ms=3)
    jumps = np.asarray(jumps, dtype=np.int64)
    if jumps.size:
        ax.plot(mid[jumps], distances[jumps], "rv", ms=7, label="jump")
        ax.legend()
    if threshold is not None and np.isfinite(threshold):
        ax.axhline(threshold, color="r", ls=":", lw=1)
    ax.set_xlabel("position along the segment")
    ax.set_ylabel("|mean_{i+1} - mean_i|")
    return fig


def plot_eta(volumes: Mapping[str, np.ndarray], axis0: np.ndarray, axis1: np.ndarray) -> Any:
    """``log10 sqrt(det g)`` maps side by side (e.g. eta = 0 and eta > 0) on a common scale."""
    names = list(volumes)
    logs = {k: np.log10(np.maximum(v, np.max(v) * 1e-12 + 1e-300)) for k, v in volumes.items()}
    lo = min(float(v.min()) for v in logs.values())
    hi = max(float(v.max()) for v in logs.values())
    fig, axes = _figure(1, len(names), (4.2 * len(names), 3.6))
    for ax, name in zip(axes[0], names):
        im = _show(ax, logs[name], axis0, axis1, cmap="magma", vmin=lo, vmax=hi)
        ax.set_title(name, fontsize=9)
        fig.colorbar(im, ax=ax, label="log10 sqrt(det g)")
    return fig


def _save(fig: Any, path: Path) -> str:
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=90))
    return path.name


def write_images_report(directory: str | os.PathLike, atlas: Any, images: np.ndarray | None,
                        scalars: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Path:
    """Draw every latent-plane figure into ``directory/report/`` and write ``images.html``.

    Args:
        directory: the run folder.
        atlas: the plane's :class:`~latentatlas.atlas.Atlas` (labels set), or anything with
            ``axis0``, ``axis1``, ``labels`` and ``bounds``.
        images: (G0, G1, *shape) grid images (a thinned montage is drawn) or None.
        scalars, arrays: what :func:`latentatlas.planes.analyze` computed.

    Returns:
        The path of ``images.html``.
    """
    rep = Path(directory) / "report"
    rep.mkdir(parents=True, exist_ok=True)
    a0, a1 = atlas.axis0, atlas.axis1
    parts: list[tuple[str, str, str]] = []  # (title, png, caption)

    vols = {k[len("volume_"):]: v for k, v in arrays.items() if k.startswith("volume_")}
    rid = {k[len("ridges_"):]: v for k, v in arrays.items() if k.startswith("ridges_")}
    agree = scalars.get("phase_agreement", {})
    fig = plot_phase_maps(atlas.labels, vols, rid, a0, a1, agree)
    parts.append(("Phase map and metric boundary maps", _save(fig, rep / "plane_phases.png"),
                  "Fraction of class changes within one cell of a ridge, against chance: "
                  + html.escape(json.dumps(agree))))

    if images is not None:
        g0, g1 = images.shape[:2]
        step = max(1, math.ceil(max(g0, g1) / 12))  # at most 12 x 12 thumbnails
        sub = np.asarray(images[::step, ::step])
        fig, axes = _figure(sub.shape[1], sub.shape[0], (0.6 * sub.shape[0], 0.6 * sub.shape[1]))
        for i in range(sub.shape[0]):
            for j in range(sub.shape[1]):
                ax = axes[sub.shape[1] - 1 - j, i]
                ax.imshow(_as_image(sub[i, j]), cmap="gray_r", vmin=0, vmax=1)
                ax.set_axis_off()
        parts.append(("Images over the plane", _save(fig, rep / "plane_montage.png"),
                      "alpha to the right, beta up."))

    if "interp_images_geodesic" in arrays:
        interp = scalars.get("interpolation", {})
        fig = plot_image_strips(arrays["interp_images_geodesic"], arrays["interp_images_linear"],
                                interp)
        parts.append(("Geodesic vs linear interpolation", _save(fig, rep / "plane_strips.png"),
                      html.escape(json.dumps(interp))))

    for i, z in enumerate(scalars.get("zoom", [])):
        key = f"zoom_{i}_labels"
        if key in arrays:
            fig = plot_zoom(arrays[key], z["zooms"], z["dimensions"], z["classes"])
            parts.append((f"Zoom series {i} around {np.round(z['center'], 6).tolist()}",
                          _save(fig, rep / f"plane_zoom_{i}.png"),
                          f"new structure per zoom: {z['new_structure']}; keeps appearing at the "
                          f"deepest zoom: {z['keeps_appearing']}"))

    if "lipschitz" in arrays:
        lip = scalars.get("lipschitz", [])
        labels = [f"{d['where']} {np.round(d['point'], 4).tolist()} slope {d['slope']:.2f}"
                  for d in lip]
        fig = plot_lipschitz(arrays["lipschitz_deltas"], arrays["lipschitz"], labels)
        parts.append(("Lipschitz constant against the step", _save(fig, rep / "plane_lipschitz.png"),
                      "Slope about -1: discontinuity; about 0: smooth."))

    if "path_distances" in arrays:
        path = scalars.get("path", {})
        fig = plot_path(arrays["path_positions"], arrays["path_distances"], arrays["path_jumps"],
                        path.get("threshold"))
        parts.append(("Seeds' path analysis", _save(fig, rep / "plane_path.png"),
                      html.escape(json.dumps(path))))

    if "eta_volume" in arrays:
        eta = scalars.get("eta", {})
        res = int(eta.get("resolution", arrays["eta_volume"].shape[0]))
        lo0, hi0 = atlas.bounds[0]
        lo1, hi1 = atlas.bounds[1]
        e0, e1 = np.linspace(lo0, hi0, res), np.linspace(lo1, hi1, res)
        maps = {"fitted metric, eta = 0": arrays["eta0_volume"],
                f"fitted metric, eta = {eta.get('eta')}": arrays["eta_volume"]}
        if "eta_feature_volume" in arrays:
            maps["feature metric, eta = 0"] = arrays["eta0_feature_volume"]
            maps[f"feature metric, eta = {eta.get('eta')}"] = arrays["eta_feature_volume"]
        fig = plot_eta(maps, e0, e1)
        parts.append(("Noise smooths the boundaries", _save(fig, rep / "plane_eta.png"),
                      html.escape(json.dumps(eta))))

    body = [f"<h2>{html.escape(t)}</h2><img src='{png}'><p>{cap}</p>" for t, png, cap in parts]
    html_page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>latent plane</title></head>"
        "<body><h1>Latent plane of an image generator</h1><p><a href='index.html'>interactive "
        "atlas</a></p>"
        f"<p>images/second of generation: {scalars.get('images_per_second', math.nan):.0f}; "
        f"kernel tau {scalars.get('tau', math.nan):.4g}</p>" + "".join(body)
        + "<h2>All numbers</h2><pre>" + html.escape(json.dumps(scalars, indent=1)) + "</pre>"
        "</body></html>")
    return atomic_write(rep / "images.html", html_page)
