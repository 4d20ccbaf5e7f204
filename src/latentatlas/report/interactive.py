"""The interactive page of a run folder: one self-contained, offline HTML file.

:func:`write_page` reads a run folder with numpy and json only (``atlas.npz``, ``config.json``,
``posteriors.npy`` [+ ``posterior_axes.npz``], ``analyses.json``/``analyses.npz``, ``images.npy``,
``planes.json``/``planes.npz``, ``path.npz``), packs what the browser needs into one JSON payload
(large arrays as little-endian base64: float64 for the metric and the axes, float32 for the drawn
fields and posteriors, one PNG sprite sheet of image thumbnails) and writes one HTML file with
plotly.js inlined (``plotly.offline.get_plotlyjs()``) and our script (``static/atlas.js``: maps,
hover readout, metric ellipses, posterior heat maps, geodesics by Dijkstra on the 16-neighbour
grid graph followed by discrete geodesic shortening). No request leaves the page: no CDN, fonts or
images from elsewhere (the static PNG figures are embedded as data URIs).

Run-folder kinds (detected by the files present): ``"atlas"`` (``atlas.npz``), ``"plane"``
(``atlas.npz`` and ``images.npy``), ``"path"`` (``path.npz``, 1-D).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .._util import atomic_write

__all__ = ["read_atlas", "run_kind", "write_page"]

#: thumbnails: longest side in pixels (images are block-averaged down to at most this).
THUMBNAIL = 64
#: the thumbnail sprite sheet holds at most this many pixels per side.
SPRITE_SIDE = 2048
#: the posteriors embedded: at most this many float32 values (points are thinned and maps
#: block-summed to fit).
POSTERIOR_BUDGET = 600_000

_ATLAS_KEYS = ("names", "axis0", "axis1", "potential", "gradient", "metric")


# --------------------------------------------------------------------------------------------------
# reading a run folder
# --------------------------------------------------------------------------------------------------


def run_kind(run_dir: str | os.PathLike) -> str:
    """``"plane"``, ``"atlas"`` or ``"path"`` from the files present in ``run_dir``.

    Raises:
        FileNotFoundError: if ``run_dir`` holds neither ``atlas.npz`` nor ``path.npz``.
    """
    run_dir = Path(run_dir)
    if (run_dir / "atlas.npz").is_file():
        return "plane" if (run_dir / "images.npy").is_file() else "atlas"
    if (run_dir / "path.npz").is_file():
        return "path"
    raise FileNotFoundError(f"run_dir: neither atlas.npz nor path.npz in {str(run_dir)!r}")


def read_atlas(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The arrays of ``run_dir/atlas.npz`` (names as a tuple of str) and ``config`` (a dict).

    Raises:
        FileNotFoundError: no ``atlas.npz``.
        ValueError: a required key is missing.
    """
    run_dir = Path(run_dir)
    path = run_dir / "atlas.npz"
    if not path.is_file():
        raise FileNotFoundError(f"run_dir: no atlas.npz in {str(run_dir)!r}")
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in _ATLAS_KEYS if k not in data.files]
        if missing:
            raise ValueError(f"run_dir: {path} lacks the keys {missing}")
        out: dict[str, Any] = {k: data[k] for k in data.files}
    out["names"] = tuple(str(n) for n in out["names"].tolist())
    out["config"] = _read_json(run_dir / "config.json")
    return out


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def volume_element(metric: np.ndarray) -> np.ndarray:
    """(G0, G1) ``sqrt(det g)`` of a (G0, G1, 2, 2) metric (negative determinants clipped to 0)."""
    det = metric[..., 0, 0] * metric[..., 1, 1] - metric[..., 0, 1] * metric[..., 1, 0]
    return np.sqrt(np.clip(det, 0.0, None))


# --------------------------------------------------------------------------------------------------
# encoding
# --------------------------------------------------------------------------------------------------


def _pack(array: np.ndarray, dtype: str = "f32") -> dict[str, Any]:
    """Little-endian base64 of ``array`` as float32 (``"f32"``), float64 (``"f64"``) or int32
    (``"i32"``), with its shape; decoded by ``decode()`` in atlas.js."""
    np_dtype = {"f32": "<f4", "f64": "<f8", "i32": "<i4"}[dtype]
    a = np.ascontiguousarray(np.asarray(array), dtype=np_dtype)
    return {"dtype": dtype, "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode()}


def _log10(field: np.ndarray) -> np.ndarray:
    """log10 of a positive field; non-positive values become NaN (blank on the map)."""
    field = np.asarray(field, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(field > 0, np.log10(np.where(field > 0, field, 1.0)), np.nan)


def _layer(name: str, values: np.ndarray, kind: str = "linear", colorscale: str = "Viridis",
           note: str = "") -> dict[str, Any]:
    """One map layer: (G0, G1) ``values``; ``kind`` ``"linear"``, ``"signed"`` (symmetric colour
    range) or ``"categorical"``."""
    return {"name": name, "kind": kind, "colorscale": colorscale, "note": note,
            "values": _pack(values)}


def _as_image(x: np.ndarray) -> np.ndarray:
    """One image as (H, W) or (H, W, 3) float in [0, 1] (from (C, H, W), (H, W, C), (H, W) or a
    flat square)."""
    from .images import _as_image as as_image

    img = as_image(x)
    if img.ndim == 3 and img.shape[-1] not in (1, 3):
        img = img[..., :3]
    return np.clip(np.nan_to_num(img), 0.0, 1.0)


def _downscale(img: np.ndarray, side: int) -> np.ndarray:
    """Block-average (H, W[, 3]) so that its longest side is at most ``side``."""
    factor = max(1, math.ceil(max(img.shape[:2]) / side))
    if factor == 1:
        return img
    h, w = (img.shape[0] // factor) * factor, (img.shape[1] // factor) * factor
    img = img[:h, :w]
    return img.reshape(h // factor, factor, w // factor, factor, *img.shape[2:]).mean(axis=(1, 3))


def _png_data_uri(pixels: np.ndarray) -> str:
    """A PNG data URI of uint8 (H, W) or (H, W, 3) pixels."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _stride(n: int, limit: int) -> int:
    return max(1, math.ceil(n / max(1, limit)))


def _sprite(tile_at: Callable[[int, int], np.ndarray], n0: int, n1: int,
            thumbnail: int) -> dict[str, Any]:
    """A sprite sheet of n0 x n1 thumbnails: tile (a, b) = ``tile_at(a, b)`` (one image, read
    one at a time so a memory-mapped images.npy is never loaded whole) at row a, column b.

    Greyscale images are drawn dark-on-light (value 1 -> black), as the static figures do
    (``cmap="gray_r"``); colour images as they are.
    """
    first = _downscale(_as_image(tile_at(0, 0)), thumbnail)
    h, w = first.shape[:2]
    colour = first.ndim == 3
    sheet = np.zeros((n0 * h, n1 * w, 3) if colour else (n0 * h, n1 * w), dtype=np.float64)
    for a in range(n0):
        for b in range(n1):
            tile = _downscale(_as_image(tile_at(a, b)), thumbnail)
            if tile.ndim == 3 and not colour:
                tile = tile.mean(axis=-1)
            if tile.ndim == 2 and colour:
                tile = np.repeat(tile[..., None], 3, axis=-1)
            sheet[a * h:(a + 1) * h, b * w:(b + 1) * w] = tile[:h, :w]
    if not colour:
        sheet = 1.0 - sheet
    pixels = np.round(sheet * 255).astype(np.uint8)
    return {"uri": _png_data_uri(pixels), "tile": [int(h), int(w)], "rows": int(n0),
            "cols": int(n1), "colour": bool(colour)}


def _grid_images(images: np.ndarray, thumbnail: int) -> dict[str, Any]:
    """Thumbnails of (G0, G1, *shape) grid images, thinned to fit :data:`SPRITE_SIDE`."""
    g0, g1 = images.shape[:2]
    side = _downscale(_as_image(images[0, 0]), thumbnail).shape[:2]
    s0 = _stride(g0, SPRITE_SIDE // side[0])
    s1 = _stride(g1, SPRITE_SIDE // side[1])
    idx0, idx1 = np.arange(0, g0, s0), np.arange(0, g1, s1)
    out = _sprite(lambda a, b: np.asarray(images[idx0[a], idx1[b]]), idx0.size, idx1.size,
                  thumbnail)
    out.update(index0=idx0.tolist(), index1=idx1.tolist())
    return out


def _posteriors(run_dir: Path, axis0: np.ndarray, axis1: np.ndarray,
                budget: int) -> dict[str, Any] | None:
    """The run's posterior maps, thinned to at most ``budget`` float32 values.

    ``posteriors.npy`` is (P, Q0, Q1) with P = Q0 * Q1 posterior-grid points in 'ij' order; the
    posterior grid is ``posterior_axes.npz`` (axis0, axis1) or else the atlas grid. Points are
    taken every ``sp``-th along each axis and maps are block-summed by ``sm`` (both as small as
    the budget allows).
    """
    path = run_dir / "posteriors.npy"
    if not path.is_file():
        return None
    posts = np.load(path, mmap_mode="r", allow_pickle=False)
    axes = _read_npz(run_dir / "posterior_axes.npz")
    q0, q1 = (axes["axis0"], axes["axis1"]) if axes else (axis0, axis1)
    if posts.ndim != 3 or posts.shape[1:] != (q0.size, q1.size) or posts.shape[0] != q0.size * q1.size:
        return None
    sp, sm = 1, 1
    while True:
        n_points = math.ceil(q0.size / sp) * math.ceil(q1.size / sp)
        n_values = (q0.size // sm) * (q1.size // sm)
        smallest, largest = min(q0.size, q1.size), max(q0.size, q1.size)
        if n_points * n_values <= budget or (sp >= largest and sm >= smallest):
            break
        if sp <= sm or sm >= smallest:
            sp += 1
        else:
            sm += 1
    p0, p1 = np.arange(0, q0.size, sp), np.arange(0, q1.size, sp)
    flat = (p0[:, None] * q1.size + p1[None, :]).ravel()
    maps = np.asarray(posts[flat], dtype=np.float64)
    m0, m1 = (q0.size // sm) * sm, (q1.size // sm) * sm
    maps = maps[:, :m0, :m1].reshape(len(flat), m0 // sm, sm, m1 // sm, sm).sum(axis=(2, 4))
    ax0 = q0[:m0].reshape(-1, sm).mean(axis=1)
    ax1 = q1[:m1].reshape(-1, sm).mean(axis=1)
    return {"axis0": ax0.tolist(), "axis1": ax1.tolist(), "index0": p0.tolist(),
            "index1": p1.tolist(), "points0": q0[p0].tolist(), "points1": q1[p1].tolist(),
            "pool": sm, "values": _pack(maps.reshape(p0.size, p1.size, *maps.shape[1:]))}


# --------------------------------------------------------------------------------------------------
# payloads
# --------------------------------------------------------------------------------------------------


def _detrend(field: np.ndarray, axis0: np.ndarray, axis1: np.ndarray, ref: np.ndarray) -> np.ndarray:
    a, b = np.meshgrid(axis0, axis1, indexing="ij")
    design = np.stack([np.ones(a.size), a.ravel(), b.ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(design, (ref - field).ravel(), rcond=None)
    return field + (design @ coef).reshape(field.shape)


def _metric_layers(metric: np.ndarray, names: Sequence[str], prefix: str = "") -> list[dict]:
    out = []
    for i, j in ((0, 0), (0, 1), (1, 1)):
        comp = metric[..., i, j]
        label = f"{prefix}g[{names[i]},{names[j]}]"
        if i != j or not np.all(comp[np.isfinite(comp)] > 0):
            out.append(_layer(label, comp, "signed", "RdBu"))
        else:
            out.append(_layer(f"{label} (log10)", _log10(comp), colorscale="Electric"))
    return out


def _atlas_payload(run_dir: Path, thumbnail: int, posterior_budget: int) -> dict[str, Any]:
    atlas = read_atlas(run_dir)
    a0, a1 = np.asarray(atlas["axis0"], np.float64), np.asarray(atlas["axis1"], np.float64)
    names = atlas["names"]
    metric = np.asarray(atlas["metric"], np.float64)
    vol = volume_element(metric)
    arrays = _read_npz(run_dir / "analyses.npz")
    scalars = _read_json(run_dir / "analyses.json")
    plane_arrays = _read_npz(run_dir / "planes.npz")
    layers = [_layer("log10 sqrt det g", _log10(vol), colorscale="Electric",
                     note="volume element of the Fisher metric of one sample"),
              _layer("potential Phi", atlas["potential"], note="log Z up to an affine term")]
    layers += _metric_layers(metric, names)
    labels = atlas.get("labels", plane_arrays.get("labels"))
    if labels is not None:
        layers.append(_layer("class of the generated image", labels, "categorical"))
    if "phases" in arrays:
        layers.append(_layer("phases", arrays["phases"], "categorical",
                             note="connected regions between the boundaries (0: boundary)"))
    for key in sorted(plane_arrays):
        if key.startswith("volume_") and np.shape(plane_arrays[key]) == vol.shape:
            layers.append(_layer(f"log10 sqrt det g ({key[len('volume_'):]})",
                                 _log10(plane_arrays[key]), colorscale="Electric"))
    exact = {k[len("exact_"):]: np.asarray(v, np.float64) for k, v in arrays.items()
             if k.startswith("exact_")}
    if "potential" in exact:
        rec = _detrend(np.asarray(atlas["potential"], np.float64), a0, a1, exact["potential"])
        layers.append(_layer("exact: potential", exact["potential"]))
        layers.append(_layer("error: potential (best affine term) - exact",
                             rec - exact["potential"], "signed", "RdBu"))
    if "gradient" in exact:
        for c in range(2):
            d = np.asarray(atlas["gradient"][..., c], np.float64)
            ex = exact["gradient"][..., c]
            layers.append(_layer(f"exact: dPhi/d{names[c]}", ex))
            layers.append(_layer(f"error: dPhi/d{names[c]} (best constant) - exact",
                                 d - (d - ex).mean() - ex, "signed", "RdBu"))
    if "metric" in exact:
        layers.append(_layer("exact: log10 sqrt det g", _log10(volume_element(exact["metric"])),
                             colorscale="Electric"))
        layers += _metric_layers(exact["metric"], names, "exact: ")
        for i, j in ((0, 0), (0, 1), (1, 1)):
            layers.append(_layer(f"error: g[{names[i]},{names[j]}] reconstructed - exact",
                                 metric[..., i, j] - exact["metric"][..., i, j], "signed",
                                 "RdBu"))
        ex_vol = volume_element(exact["metric"])
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(ex_vol > 0, vol / ex_vol - 1.0, np.nan)
        layers.append(_layer("error: sqrt det g relative", rel, "signed", "RdBu"))
    ridges: dict[str, list[list[float]]] = {}
    masks = {"boundaries": arrays.get("ridges")}
    masks.update({f"ridges ({k[len('ridges_'):]})": v for k, v in plane_arrays.items()
                  if k.startswith("ridges_")})
    for name, mask in masks.items():
        if mask is not None and np.shape(mask) == vol.shape and np.any(mask):
            ii, jj = np.nonzero(np.asarray(mask, bool))
            ridges[name] = [a0[ii].tolist(), a1[jj].tolist()]
    geodesics = [np.asarray(arrays[k], np.float64).tolist() for k in sorted(arrays)
                 if k.startswith("geodesic_")]
    payload: dict[str, Any] = {
        "kind": "atlas", "names": list(names), "title": _title(atlas["config"]),
        "axis0": _pack(a0, "f64"), "axis1": _pack(a1, "f64"), "metric": _pack(metric, "f64"),
        "layers": layers, "ridges": ridges, "geodesics": geodesics,
        "posteriors": _posteriors(run_dir, a0, a1, posterior_budget),
        "accuracy": scalars.get("accuracy", {}),
        "labels": None if labels is None else _pack(labels, "i32"),
    }
    images_path = run_dir / "images.npy"
    if images_path.is_file():
        images = np.load(images_path, mmap_mode="r", allow_pickle=False)
        if images.shape[:2] == vol.shape:
            payload["kind"] = "plane"
            payload["images"] = _grid_images(images, thumbnail)
    return payload


def _path_payload(run_dir: Path, thumbnail: int) -> dict[str, Any]:
    data = _read_npz(run_dir / "path.npz")
    missing = [k for k in ("s", "metric") if k not in data]
    if missing:
        raise ValueError(f"run_dir: {run_dir / 'path.npz'} lacks the keys {missing}")
    s = np.asarray(data["s"], np.float64)
    payload: dict[str, Any] = {
        "kind": "path", "title": _title(_read_json(run_dir / "config.json")),
        "s": _pack(s, "f64"), "metric": _pack(np.asarray(data["metric"], np.float64), "f64"),
        "potential": None if "potential" not in data else _pack(data["potential"], "f64"),
        "distances": None if "distances" not in data else _pack(data["distances"], "f64"),
        "jumps": [] if "jumps" not in data else np.asarray(data["jumps"]).astype(int).ravel().tolist(),
    }
    images_path = run_dir / "images.npy"
    if images_path.is_file():
        images = np.load(images_path, mmap_mode="r", allow_pickle=False)
        if images.shape[0] == s.size:
            side = _downscale(_as_image(images[0]), thumbnail).shape[1]
            step = _stride(s.size, SPRITE_SIDE // side)
            idx = np.arange(0, s.size, step)
            sprite = _sprite(lambda a, b: np.asarray(images[idx[b]]), 1, idx.size, thumbnail)
            sprite.update(index0=[0], index1=idx.tolist())
            payload["images"] = sprite
    return payload


def _title(cfg: Mapping[str, Any]) -> str:
    src = cfg.get("source", {}) if isinstance(cfg, Mapping) else {}
    name = str(src.get("class", "a source")).rsplit(".", 1)[-1]
    args = ", ".join(f"{k}={v}" for k, v in sorted(dict(src.get("config", {})).items())
                     if not isinstance(v, dict | list))
    return f"{name}({args})" if args else name


# --------------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: sans-serif; max-width: 1280px; margin: 1.5em auto; color: #222; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #bbb; padding: 0.3em 0.7em; text-align: right; }
code, pre { background: #f4f4f4; }
#la-app { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
#la-map { width: 680px; height: 600px; border: 1px solid #ddd; }
#la-side { width: 420px; font-size: 0.9em; }
#la-readout { min-height: 8em; white-space: pre; font-family: monospace; background: #f7f7f7;
  padding: 0.5em; }
#la-posterior { width: 400px; height: 320px; }
#la-image, .la-strip canvas { image-rendering: pixelated; border: 1px solid #ccc; }
#la-geodesic { font-family: monospace; white-space: pre; margin: 0.5em 0; }
.la-strip { display: flex; gap: 2px; align-items: center; margin: 2px 0; }
.la-strip span { width: 9em; font-size: 0.85em; }
#la-controls { margin: 0.5em 0; }
"""


def _script() -> str:
    return resources.files("latentatlas.report").joinpath("static/atlas.js").read_text()


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _json_for_script(payload: Mapping[str, Any]) -> str:
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False,
                      default=_json_default)
    return text.replace("</", "<\\/")


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _clean(obj: Any) -> Any:
    """NaN and infinities (JSON has none) -> None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def write_page(run_dir: str | os.PathLike, path: str | os.PathLike | None = None,
               figures: Sequence[tuple[str | os.PathLike, str, str]] = (),
               extra_html: str = "", thumbnail: int = THUMBNAIL,
               posterior_budget: int = POSTERIOR_BUDGET) -> Path:
    """Write the interactive page of a run folder.

    Args:
        run_dir: the run folder (see the module docstring for what is read).
        path: where to write (default ``run_dir/report/index.html``).
        figures: static figures embedded under the maps: (PNG path, title, caption) each.
        extra_html: trusted HTML appended after the figures (tables, notes).
        thumbnail: longest side of the embedded image thumbnails in pixels (large generators'
            images, e.g. Stable Diffusion's 512 x 512, are block-averaged down to it).
        posterior_budget: at most this many posterior values are embedded.

    Returns:
        The path of the page.

    Raises:
        ValueError: ``thumbnail`` or ``posterior_budget`` below 1.
        FileNotFoundError: ``run_dir`` is not a run folder.
    """
    if isinstance(thumbnail, bool) or not isinstance(thumbnail, int) or thumbnail < 1:
        raise ValueError(f"thumbnail: expected a positive int (pixels), got {thumbnail!r}")
    if isinstance(posterior_budget, bool) or not isinstance(posterior_budget, int) \
            or posterior_budget < 1:
        raise ValueError(f"posterior_budget: expected a positive int, got {posterior_budget!r}")
    run_dir = Path(run_dir)
    kind = run_kind(run_dir)
    if kind == "path":
        payload = _path_payload(run_dir, thumbnail)
    else:
        payload = _atlas_payload(run_dir, thumbnail, posterior_budget)
    payload = _clean(payload)
    path = Path(path) if path is not None else run_dir / "report" / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    title = html.escape(payload["title"])
    kind_text = {"atlas": "Atlas", "plane": "Latent plane", "path": "Path"}[payload["kind"]]
    if payload["kind"] == "path":
        help_text = ("Hover over a curve to see the image generated at that position along the "
                     "path; the strip below shows the images along the whole path (jumps in "
                     "red).")
    else:
        help_text = ("Hover over the map: coordinates, the metric tensor and its ellipse (a "
                     "small Fisher ball), the posterior at the nearest posterior-grid point"
                     + (" and the generated image" if payload["kind"] == "plane" else "")
                     + ". Click two points: the geodesic (solid) against the straight line "
                     "(dashed), with both Fisher lengths of one sample. Drag to zoom, "
                     "double-click to reset.")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>latentatlas: {title}</title><style>{_CSS}</style>",
        f"<script>{_plotly_js()}</script></head><body>",
        f"<h1>{kind_text} of {title}</h1><p>{html.escape(help_text)}</p>",
        "<div id='la-controls'></div>",
        "<div id='la-app'><div id='la-map'></div><div id='la-side'>"
        "<div id='la-readout'>hover over the map</div>"
        "<canvas id='la-image' width='128' height='128' style='display:none'></canvas>"
        "<div id='la-posterior'></div></div></div>",
        "<div id='la-geodesic'></div><div id='la-strips'></div>",
        f"<script type='application/json' id='la-data'>{_json_for_script(payload)}</script>",
        f"<script>{_script()}</script>",
    ]
    for png, fig_title, caption in figures:
        png = Path(png)
        uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(fig_title)}</h2><p>{html.escape(caption)}</p>"
                     f"<a href='{html.escape(png.name)}'><img src='{uri}' "
                     f"alt='{html.escape(fig_title)}' data-file='{html.escape(png.name)}'></a>")
    parts.append(extra_html)
    parts.append("</body></html>")
    return atomic_write(path, "\n".join(parts).encode("utf-8"))
