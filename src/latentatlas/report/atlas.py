"""Figures of an atlas and the HTML report of a run folder.

Every figure is drawn from plain arrays (the functions take ``axis0``, ``axis1`` and fields) and
saved as a PNG, so the figures are usable without the HTML page. :func:`write_report` reads a run
folder (``atlas.npz``, ``config.json``, ``analyses.json``/``analyses.npz``) and writes
``report/index.html`` with the PNGs beside it. Drawing uses matplotlib's object interface
(``matplotlib.figure.Figure``): no pyplot state, no display needed.

Conventions: ``axis0`` is drawn horizontally, ``axis1`` vertically; fields are (G0, G1) arrays.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colors, ticker
from matplotlib.figure import Figure

from .._util import atomic_write

__all__ = [
    "plot_comparison",
    "plot_field",
    "plot_fields",
    "plot_geodesics",
    "plot_metric",
    "plot_path_analysis",
    "plot_phases",
    "write_index",
    "write_report",
]

_DPI = 110


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=_DPI,
                                                         bbox_inches="tight"))


def _colorbar(fig: Figure, mesh: Any, ax: Any) -> Any:
    """A colour bar with plain number labels (no mathtext: much faster to lay out)."""
    cbar = fig.colorbar(mesh, ax=ax, fraction=0.046, pad=0.04,
                        format=ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    cbar.ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    return cbar


def _norm(field: np.ndarray, log: bool) -> colors.Normalize | None:
    finite = field[np.isfinite(field)]
    if not log or finite.size == 0:
        return None
    if np.all(finite > 0):
        lo, hi = float(finite.min()), float(finite.max())
        return colors.LogNorm(vmin=lo, vmax=hi if hi > lo else lo * 1.0001)
    scale = float(np.max(np.abs(finite))) or 1.0
    linthresh = max(scale * 1e-3, float(np.percentile(np.abs(finite), 10)) or scale * 1e-3)
    return colors.SymLogNorm(linthresh=linthresh, vmin=-scale, vmax=scale, base=10)


def _draw(ax: Any, axis0: np.ndarray, axis1: np.ndarray, field: np.ndarray, title: str,
          names: Sequence[str], log: bool = False, cmap: str = "viridis") -> Any:
    field = np.asarray(field, dtype=float)
    norm = _norm(field, log)
    if log and norm is not None and isinstance(norm, colors.LogNorm):
        field = np.where(field > 0, field, np.nan)
    mesh = ax.pcolormesh(axis0, axis1, field.T, shading="nearest", cmap=cmap, norm=norm)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    _colorbar(ax.figure, mesh, ax)
    return mesh


def plot_field(axis0: np.ndarray, axis1: np.ndarray, field: np.ndarray, path: str | os.PathLike,
               title: str = "", names: Sequence[str] = ("t0", "t1"), log: bool = False,
               cmap: str = "viridis") -> Path:
    """One (G0, G1) field as a colour map (log colour scale with ``log``); returns the PNG path."""
    fig = Figure(figsize=(5, 4))
    _draw(fig.add_subplot(1, 1, 1), axis0, axis1, field, title, names, log, cmap)
    return _save(fig, path)


def plot_fields(axis0: np.ndarray, axis1: np.ndarray, fields: Mapping[str, np.ndarray],
                path: str | os.PathLike, names: Sequence[str] = ("t0", "t1"),
                log: bool | Sequence[bool] = False, cmap: str = "viridis",
                suptitle: str = "") -> Path:
    """Several (G0, G1) fields side by side (``fields``: title -> array); returns the PNG path."""
    n = len(fields)
    logs = [log] * n if isinstance(log, bool) else list(log)
    fig = Figure(figsize=(4.6 * n, 4))
    for k, (title, field) in enumerate(fields.items()):
        _draw(fig.add_subplot(1, n, k + 1), axis0, axis1, field, title, names, logs[k], cmap)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return _save(fig, path)


def plot_metric(axis0: np.ndarray, axis1: np.ndarray, metric: np.ndarray, path: str | os.PathLike,
                names: Sequence[str] = ("t0", "t1")) -> Path:
    """The three metric components (G0, G1, 2, 2) on log colour scales (symmetric-log for the
    off-diagonal one)."""
    fields = {f"g[{names[0]},{names[0]}]": metric[..., 0, 0],
              f"g[{names[0]},{names[1]}]": metric[..., 0, 1],
              f"g[{names[1]},{names[1]}]": metric[..., 1, 1]}
    return plot_fields(axis0, axis1, fields, path, names, log=True, cmap="magma",
                       suptitle="Fisher metric of one sample (log colour scale)")


def plot_phases(axis0: np.ndarray, axis1: np.ndarray, volume: np.ndarray, ridges: np.ndarray | None,
                labels: np.ndarray | None, path: str | os.PathLike,
                names: Sequence[str] = ("t0", "t1")) -> Path:
    """Boundaries (ridges of sqrt det g) over log sqrt det g, and the phase labels."""
    fig = Figure(figsize=(9.5, 4))
    ax = fig.add_subplot(1, 2, 1)
    _draw(ax, axis0, axis1, volume, "sqrt det g and boundaries", names, log=True, cmap="magma")
    if ridges is not None and np.any(ridges):
        a, b = np.meshgrid(axis0, axis1, indexing="ij")
        ax.scatter(a[ridges], b[ridges], s=6, c="cyan", marker="s", linewidths=0,
                   label="boundary")
        ax.legend(loc="upper right", fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    if labels is not None:
        _draw(ax2, axis0, axis1, np.asarray(labels, float), "phases (connected regions)", names,
              cmap="tab10")
    else:
        ax2.set_axis_off()
    fig.tight_layout()
    return _save(fig, path)


def plot_geodesics(axis0: np.ndarray, axis1: np.ndarray, volume: np.ndarray,
                   geodesics: Sequence[np.ndarray], path: str | os.PathLike,
                   names: Sequence[str] = ("t0", "t1"),
                   lengths: Sequence[tuple[float, float]] | None = None) -> Path:
    """Geodesics (each (n, 2)) against the straight lines between their end points, drawn over
    sqrt det g. ``lengths``: (geodesic length, straight-line length) per curve, for the legend."""
    fig = Figure(figsize=(5.6, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    _draw(ax, axis0, axis1, volume, "geodesics (solid) vs straight lines (dashed)", names,
          log=True, cmap="magma")
    cycle = ["#00e5ff", "#7CFC00", "#ff4df0", "#ffffff", "#ffa500", "#1e90ff"]
    for k, pts in enumerate(geodesics):
        pts = np.asarray(pts, float)
        c = cycle[k % len(cycle)]
        label = None
        if lengths is not None and k < len(lengths):
            geo, straight = lengths[k]
            label = f"{geo:.3g} vs {straight:.3g}"
        ax.plot(pts[:, 0], pts[:, 1], "-", color=c, lw=1.8, label=label)
        ax.plot([pts[0, 0], pts[-1, 0]], [pts[0, 1], pts[-1, 1]], "--", color=c, lw=1.0)
        ax.plot([pts[0, 0], pts[-1, 0]], [pts[0, 1], pts[-1, 1]], "o", color=c, ms=3)
    if lengths is not None:
        ax.legend(loc="lower right", fontsize=7, title="length: geodesic vs line",
                  title_fontsize=7)
    ax.set_xlim(axis0[0], axis0[-1])
    ax.set_ylim(axis1[0], axis1[-1])
    return _save(fig, path)


def plot_path_analysis(s: np.ndarray, curves: Mapping[str, np.ndarray], path: str | os.PathLike,
                       title: str = "", jumps: np.ndarray | None = None,
                       xlabel: str = "position along the segment") -> Path:
    """Quantities along a segment (``s`` (n,), ``curves``: name -> (n,)), one panel each, with
    flagged jumps marked."""
    n = max(1, len(curves))
    fig = Figure(figsize=(6, 1.9 * n + 0.6))
    for k, (name, values) in enumerate(curves.items()):
        ax = fig.add_subplot(n, 1, k + 1)
        ax.plot(s, np.asarray(values, float), "-", lw=1.4)
        ax.set_ylabel(name, fontsize=8)
        if jumps is not None:
            for x in np.asarray(jumps, float).ravel():
                ax.axvline(x, color="red", lw=0.8, ls=":")
        if k == n - 1:
            ax.set_xlabel(xlabel)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_comparison(axis0: np.ndarray, axis1: np.ndarray, exact: Mapping[str, np.ndarray],
                    reconstructed: Mapping[str, np.ndarray], path: str | os.PathLike,
                    names: Sequence[str] = ("t0", "t1"), log: Mapping[str, bool] | None = None
                    ) -> Path:
    """Exact vs reconstructed side by side, one row per field (both (G0, G1)), same colour scale
    per row; a third column shows the difference."""
    keys = [k for k in exact if k in reconstructed]
    log = dict(log or {})
    fig = Figure(figsize=(13.5, 3.3 * max(1, len(keys))))
    for r, key in enumerate(keys):
        ex = np.asarray(exact[key], float)
        rec = np.asarray(reconstructed[key], float)
        lo = float(np.nanmin(np.concatenate([ex.ravel(), rec.ravel()])))
        hi = float(np.nanmax(np.concatenate([ex.ravel(), rec.ravel()])))
        use_log = log.get(key, False)
        for c, (title, field) in enumerate(((f"{key}: exact", ex), (f"{key}: reconstructed", rec))):
            ax = fig.add_subplot(len(keys), 3, 3 * r + c + 1)
            if use_log and lo > 0:
                norm = colors.LogNorm(vmin=lo, vmax=hi)
            elif use_log:
                scale = max(abs(lo), abs(hi)) or 1.0
                norm = colors.SymLogNorm(linthresh=scale * 1e-2, vmin=-scale, vmax=scale)
            else:
                norm = colors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-12)
            mesh = ax.pcolormesh(axis0, axis1, field.T, shading="nearest", cmap="viridis", norm=norm)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel(names[0])
            ax.set_ylabel(names[1])
            _colorbar(fig, mesh, ax)
        ax = fig.add_subplot(len(keys), 3, 3 * r + 3)
        diff = rec - ex
        scale = float(np.max(np.abs(diff))) or 1.0
        mesh = ax.pcolormesh(axis0, axis1, diff.T, shading="nearest", cmap="RdBu_r",
                             vmin=-scale, vmax=scale)
        ax.set_title(f"{key}: reconstructed - exact", fontsize=9)
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        _colorbar(fig, mesh, ax)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------------------------------
# The HTML report of a run folder
# --------------------------------------------------------------------------------------------------


def _detrend(field: np.ndarray, axis0: np.ndarray, axis1: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``field`` plus the affine term that best matches ``ref`` (for drawing potentials)."""
    a, b = np.meshgrid(axis0, axis1, indexing="ij")
    design = np.stack([np.ones(a.size), a.ravel(), b.ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(design, (ref - field).ravel(), rcond=None)
    return field + (design @ coef).reshape(field.shape)


def _table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for name, values in rows.items():
        cells = "".join(
            f"<td>{values[c]:.4f}</td>" if isinstance(values.get(c), int | float) else "<td>-</td>"
            for c in columns)
        body.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return (f"<table><tr><th>method</th>{head}</tr>" + "".join(body) + "</table>")




def write_report(run_dir: str | os.PathLike, thumbnail: int | None = None) -> Path:
    """(Re)write ``run_dir/report/index.html`` and its static PNG figures from a run folder.

    Works for every kind of run folder (detected by the files present): an atlas
    (``atlas.npz``, ``config.json`` and, when there, ``analyses.json``/``analyses.npz``,
    ``posteriors.npy``), a latent plane (also ``images.npy``, ``planes.json``/``planes.npz``;
    ``report/images.html`` is redrawn too) or a path (``path.npz``, ``images.npy``). Reads files
    only (numpy, json): nothing is recomputed. ``index.html`` is the interactive page of
    :mod:`latentatlas.report.interactive` with the PNG figures embedded below the maps (and
    written beside it for papers).

    Args:
        run_dir: the run folder.
        thumbnail: longest side in pixels of the embedded image thumbnails (default
            :data:`latentatlas.report.interactive.THUMBNAIL`); lower it for large generators.

    Returns:
        Path of ``index.html``.

    Raises:
        FileNotFoundError: ``run_dir`` holds neither ``atlas.npz`` nor ``path.npz``.
        ValueError: ``thumbnail`` is not a positive int.
    """
    from . import interactive

    run_dir = Path(run_dir)
    if thumbnail is None:
        thumbnail = interactive.THUMBNAIL
    if isinstance(thumbnail, bool) or not isinstance(thumbnail, int) or thumbnail < 1:
        raise ValueError(f"thumbnail: expected a positive int (pixels), got {thumbnail!r}")
    if interactive.run_kind(run_dir) == "plane":
        _write_plane_page(run_dir)
    return write_index(run_dir, thumbnail)


def write_index(run_dir: str | os.PathLike, thumbnail: int | None = None) -> Path:
    """``run_dir/report/index.html`` and its static PNGs only (what :func:`write_report` does
    except redrawing a plane's ``images.html``, which the page links to when it exists).

    Returns:
        Path of ``index.html``.
    """
    from . import interactive

    run_dir = Path(run_dir)
    thumbnail = interactive.THUMBNAIL if thumbnail is None else thumbnail
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    if interactive.run_kind(run_dir) == "path":
        figures, extra = _path_figures(run_dir, out)
    else:
        figures, extra = _atlas_figures(run_dir, out)
        if (out / "images.html").is_file():
            extra = ("<h2>Latent-plane analyses</h2><p><a href='images.html'>images.html</a>: "
                     "phase maps against metric ridges, image strips, zoom series, Lipschitz "
                     "profiles, path and noise analyses (static figures).</p>" + extra)
    return interactive.write_page(run_dir, out / "index.html", figures, extra, thumbnail)


def _atlas_figures(run_dir: Path, out: Path) -> tuple[list[tuple[Path, str, str]], str]:
    """The static figures of a 2-D run (PNGs into ``out``) and the HTML of its tables."""
    from .interactive import read_atlas, volume_element

    atlas = read_atlas(run_dir)
    scalars: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    if (run_dir / "analyses.json").is_file():
        scalars = json.loads((run_dir / "analyses.json").read_text())
    if (run_dir / "analyses.npz").is_file():
        with np.load(run_dir / "analyses.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    a0 = np.asarray(atlas["axis0"], np.float64)
    a1 = np.asarray(atlas["axis1"], np.float64)
    names = atlas["names"]
    potential = np.asarray(atlas["potential"], np.float64)
    gradient = np.asarray(atlas["gradient"], np.float64)
    metric = np.asarray(atlas["metric"], np.float64)
    vol = volume_element(metric)
    figures: list[tuple[Path, str, str]] = []  # (file, title, caption)

    def add(path: Path, title: str, caption: str = "") -> None:
        figures.append((path, title, caption))

    add(plot_field(a0, a1, potential, out / "potential.png",
                   "potential Phi (log Z up to an affine term)", names),
        "Potential", "The fitted convex potential Phi ~ log Z (defined up to an affine term).")
    add(plot_fields(a0, a1, {f"dPhi/d{names[0]}": gradient[..., 0],
                             f"dPhi/d{names[1]}": gradient[..., 1]},
                    out / "gradient.png", names, suptitle="gradient of Phi (mean statistics)"),
        "Gradient", "grad Phi = E[f(x)], the mean sufficient statistics, up to a constant.")
    add(plot_metric(a0, a1, metric, out / "metric.png", names),
        "Metric", "Components of the Fisher metric of one sample (Hess Phi), log colour scale.")
    add(plot_field(a0, a1, vol, out / "volume.png", "sqrt det g (log scale)", names, log=True,
                   cmap="magma"),
        "Volume element", "sqrt(det g): large where the distribution changes fast with t.")
    if "ridges" in arrays or "phases" in arrays:
        add(plot_phases(a0, a1, vol, arrays.get("ridges"), arrays.get("phases"),
                        out / "phases.png", names),
            "Boundaries and phases",
            "Boundaries are ridges of sqrt det g; phases are the connected regions between them.")
    geos = [arrays[k] for k in sorted(arrays) if k.startswith("geodesic_")]
    if geos:
        lengths = [tuple(x) for x in scalars.get("geodesics", {}).get("lengths", [])] or None
        add(plot_geodesics(a0, a1, vol, geos, out / "geodesics.png", names, lengths),
            "Geodesics", "Geodesics of the metric (solid) against straight lines (dashed); "
            "legend: Fisher length of the geodesic vs of the straight line.")
    if "path_s" in arrays:
        curves = {k[len("path_curve_"):]: arrays[k] for k in sorted(arrays)
                  if k.startswith("path_curve_")}
        seg = scalars.get("path", {}).get("segment")
        title = f"path analysis along {seg}" if seg else "path analysis"
        add(plot_path_analysis(arrays["path_s"], curves, out / "path.png", title,
                               arrays.get("path_jumps")),
            "Path analysis", "Posterior mean and Fisher speed along one segment; dotted lines: "
            "flagged jumps.")
    exact = {k[len("exact_"):]: arrays[k] for k in arrays if k.startswith("exact_")}
    if exact:
        ex_fields: dict[str, np.ndarray] = {}
        rec_fields: dict[str, np.ndarray] = {}
        logs: dict[str, bool] = {}
        if "potential" in exact:
            ex_fields["Phi"] = exact["potential"]
            rec_fields["Phi"] = _detrend(potential, a0, a1, exact["potential"])
        if "gradient" in exact:
            for c in range(2):
                d = gradient[..., c]
                ex = exact["gradient"][..., c]
                ex_fields[f"dPhi/d{names[c]}"] = ex
                rec_fields[f"dPhi/d{names[c]}"] = d - (d - ex).mean()
        if "metric" in exact:
            for i, j in ((0, 0), (0, 1), (1, 1)):
                key = f"g[{names[i]},{names[j]}]"
                ex_fields[key] = exact["metric"][..., i, j]
                rec_fields[key] = metric[..., i, j]
                logs[key] = True
        if ex_fields:
            add(plot_comparison(a0, a1, ex_fields, rec_fields, out / "exact_vs_reconstructed.png",
                                names, logs),
                "Exact vs reconstructed", "Potential after the best affine term, gradient after "
                "the best constant, metric in absolute units.")
    cfg = atlas["config"]
    parts = [f"<h2>Run</h2><p>Parameters ({html.escape(names[0])}, {html.escape(names[1])}) over "
             f"[{a0[0]:.4g}, {a0[-1]:.4g}] x [{a1[0]:.4g}, {a1[-1]:.4g}], grid {a0.size} x "
             f"{a1.size}. The metric is the Fisher information of one sample.</p>"]
    accuracy = scalars.get("accuracy", {})
    if accuracy:
        cols = ["potential", "gradient", "gradient0", "gradient1", "g00", "g01", "g11",
                "sqrt_det_g"]
        parts.append("<h2>Accuracy against the exact reference</h2><p>Normalized RMSE = RMSE / "
                     "range of the exact quantity (potential after the best affine term, gradient "
                     "components after the best constant, metric in absolute units).</p>")
        parts.append(_table(accuracy, cols))
    tail = []
    extra = {k: v for k, v in scalars.items() if k not in ("accuracy",)}
    if extra:
        tail.append("<h2>Analyses</h2><pre>" + html.escape(json.dumps(extra, indent=1)[:20000])
                    + "</pre>")
    tail.append("<h2>Config</h2><pre>" + html.escape(json.dumps(cfg, indent=1)) + "</pre>")
    return figures, "".join(parts) + "".join(tail)


def _path_figures(run_dir: Path, out: Path) -> tuple[list[tuple[Path, str, str]], str]:
    """The static figure of a path run (quantities along s, jumps marked) and its config."""
    with np.load(run_dir / "path.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    s = np.asarray(arrays["s"], np.float64)
    curves: dict[str, np.ndarray] = {"g(s)": arrays["metric"]}
    if "potential" in arrays:
        curves["potential"] = arrays["potential"]
    means = np.asarray(arrays.get("means", np.empty(0)))
    if means.shape[:1] == s.shape:
        for c, column in enumerate(means.reshape(s.size, -1).T):
            curves[f"posterior mean {c}"] = column
    if "distances" in arrays and np.size(arrays["distances"]) == s.size - 1:
        d = np.asarray(arrays["distances"], np.float64)
        curves["distance to the next point"] = np.append(d, np.nan)
    jumps = np.asarray(arrays.get("jumps", np.empty(0)), dtype=np.int64).ravel()
    jumps = jumps[(jumps >= 0) & (jumps < s.size - 1)]
    positions = 0.5 * (s[jumps] + s[jumps + 1]) if jumps.size else None
    fig = plot_path_analysis(s, curves, out / "path.png", "quantities along the path", positions,
                             xlabel="s (position along the path)")
    cfg = json.loads((run_dir / "config.json").read_text()) if (
        run_dir / "config.json").is_file() else {}
    tail = "<h2>Config</h2><pre>" + html.escape(json.dumps(cfg, indent=1)) + "</pre>"
    return [(fig, "Along the path", "Fisher metric g(s), potential, posterior means and the "
             "distance between consecutive posterior means; dotted red lines: jumps.")], tail


class _PlaneFields:
    """What :func:`~latentatlas.report.images.write_images_report` reads of an atlas: axes,
    labels (G0, G1) and bounds."""

    def __init__(self, axis0: np.ndarray, axis1: np.ndarray, labels: np.ndarray) -> None:
        self.axis0, self.axis1, self.labels = axis0, axis1, labels
        self.bounds = ((float(axis0[0]), float(axis0[-1])), (float(axis1[0]), float(axis1[-1])))


def _write_plane_page(run_dir: Path) -> Path | None:
    """Redraw ``report/images.html`` from ``planes.json``/``planes.npz``/``images.npy`` (None
    when the folder lacks the plane analyses or a class map)."""
    from .images import write_images_report
    from .interactive import read_atlas

    if not (run_dir / "planes.npz").is_file():
        return None
    atlas = read_atlas(run_dir)
    with np.load(run_dir / "planes.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    labels = atlas.get("labels", arrays.get("labels"))
    if labels is None:
        return None
    scalars = json.loads((run_dir / "planes.json").read_text()) if (
        run_dir / "planes.json").is_file() else {}
    images = np.load(run_dir / "images.npy", mmap_mode="r", allow_pickle=False) if (
        run_dir / "images.npy").is_file() else None
    fields = _PlaneFields(np.asarray(atlas["axis0"], np.float64),
                          np.asarray(atlas["axis1"], np.float64), labels)
    return write_images_report(run_dir, fields, images, scalars, arrays)
