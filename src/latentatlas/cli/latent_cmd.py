"""``latentatlas atlas digits`` and ``latentatlas atlas custom``: latent planes of image generators.

Both run the atlas pipeline (:func:`latentatlas.atlas.build`) on a
:class:`~latentatlas.sources.LatentPlane` through three latents: sample (decode the grid) -> images
(labels) -> kernel posterior -> potential -> atlas -> planes analyses (phase map vs boundary map,
geodesic vs linear strips, zoom series, Lipschitz profiles, the seeds' path analysis, the maps with
eta > 0) -> report. The run folder resumes after an interruption and refuses another config, as
for every atlas.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from .atlas_cmd import atlas
from .common import BACKEND_OPTIONS, backend_kwargs

_EPILOG = """\b
Files in --out: store.zarr (images), images.npy, labels.npy, embeddings.npy, posteriors.npy,
posterior.safetensors, potential.safetensors, atlas.npz (names, axis0, axis1, potential, gradient,
metric, labels), config.json, planes.json (numbers), planes.npz (arrays), eta/ (the eta
comparison's two runs), report/index.html (interactive) and report/images.html (figures).
A rerun of the same command skips finished stages (resume after an interruption); --force
recomputes them. A folder holding another config is refused (exit code 2, nothing overwritten).
"""


def _options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--out", "out", required=True, type=click.Path(file_okay=False),
                     help="Run folder (created if missing; reused to resume)."),
        click.option("--anchors", nargs=3, type=int, default=None, metavar="I J K",
                     help="Indices of the three latents spanning the plane."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed: random anchors (without --anchors), noise, fits."),
        click.option("--bounds", nargs=4, type=float, default=None, metavar="LO0 HI0 LO1 HI1",
                     help="Plane region in (alpha, beta)  [default: -0.5 1.5 -0.5 1.5]."),
        click.option("--resolution", type=int, default=None,
                     help="Grid points per axis of the atlas, the posteriors and the phase map "
                          "[default: 48]."),
        click.option("--eta", type=float, default=0.0, show_default=True,
                     help="Noise level of the sampler for the main atlas (0: deterministic)."),
        click.option("--samples", type=int, default=None,
                     help="Images per grid point (half references, half bundles) [default: 8 "
                          "copies of the one image at eta = 0, 16 at eta > 0]."),
        click.option("--bundle", type=int, default=None,
                     help="K, samples per bundle of the kernel posterior [default: 4]."),
        click.option("--potential-steps", "potential_steps", type=int, default=None,
                     help="Training steps of the potential [default: fit_potential's]."),
        click.option("--eta-compare", "eta_compare", type=float, default=0.5, show_default=True,
                     help="Also map the plane at this eta (0: skip)."),
        click.option("--eta-resolution", "eta_resolution", type=int, default=32,
                     show_default=True, help="Resolution of the eta comparison."),
        click.option("--zoom-points", "zoom_points", type=int, default=2, show_default=True,
                     help="Boundary points to zoom into (zoom 1e1..1e6)."),
        click.option("--zoom-resolution", "zoom_resolution", type=int, default=32,
                     show_default=True, help="Grid points per axis of each zoom window."),
        click.option("--path-points", "path_points", type=int, default=100, show_default=True,
                     help="Points of the seeds' path analysis (0: skip)."),
        click.option("--path-samples", "path_samples", type=int, default=50, show_default=True,
                     help="Samples per point of the path analysis (eta = --path-eta)."),
        click.option("--path-eta", "path_eta", type=float, default=0.5, show_default=True,
                     help="Noise level of the path analysis."),
        click.option("--force", is_flag=True, help="Recompute every stage (same config only)."),
        click.option("--quiet", is_flag=True, help="No progress bars or stage messages."),
        *BACKEND_OPTIONS,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _check(kwargs: dict[str, Any]) -> None:
    for name in ("resolution", "eta_resolution"):
        if kwargs[name] is not None and kwargs[name] < 4:
            raise ValueError(f"--{name.replace('_', '-')}: expected an int >= 4, got "
                             f"{kwargs[name]}")
    for name in ("eta", "eta_compare", "path_eta"):
        if not kwargs[name] >= 0:
            raise ValueError(f"--{name.replace('_', '-')}: expected a number >= 0, got "
                             f"{kwargs[name]}")
    if kwargs["bundle"] is not None and kwargs["bundle"] < 1:
        raise ValueError(f"--bundle: expected a positive int, got {kwargs['bundle']}")
    if kwargs["samples"] is not None and kwargs["samples"] < 1:
        raise ValueError(f"--samples: expected a positive int, got {kwargs['samples']}")
    if kwargs["zoom_resolution"] and kwargs["zoom_resolution"] < 8:
        raise ValueError(f"--zoom-resolution: expected 0 or an int >= 8, got "
                         f"{kwargs['zoom_resolution']}")
    b = kwargs["bounds"]
    if b and not (b[0] < b[1] and b[2] < b[3]):
        raise ValueError(f"--bounds: expected LO0 < HI0 and LO1 < HI1, got {list(b)}")


def _pick(latents: np.ndarray, anchors: tuple[int, int, int] | None, seed: int) -> np.ndarray:
    n = len(latents)
    if anchors:
        bad = [i for i in anchors if not -n <= i < n]
        if bad:
            raise ValueError(f"--anchors: expected indices in [0, {n}) of the {n} latents, got "
                             f"{bad}")
        return latents[list(anchors)]
    if n < 3:
        raise ValueError(f"--latents: expected at least 3 latents, got {n}")
    return latents[np.random.default_rng(seed).choice(n, 3, replace=False)]


def load_latents(path: str | os.PathLike) -> np.ndarray:
    """Latent vectors from ``.npy`` (no pickle) or ``.pt`` (``torch.load(weights_only=True)``):
    (N, D) float64 (other shapes are flattened to (N, -1))."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--latents: no such file {str(p)!r}")
    if p.suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"--latents: cannot read {str(p)!r} as a numeric .npy ({err})") from None
    elif p.suffix in (".pt", ".pth"):
        import torch

        try:
            obj = torch.load(p, weights_only=True, map_location="cpu")
        except Exception as err:  # noqa: BLE001 - any unpickling error is the user's file
            raise ValueError(f"--latents: cannot read {str(p)!r} with torch.load("
                             f"weights_only=True) ({type(err).__name__})") from None
        if not hasattr(obj, "detach"):
            raise ValueError(f"--latents: expected {str(p)!r} to hold one tensor, got "
                             f"{type(obj).__qualname__}")
        arr = obj.detach().cpu().numpy()
    else:
        raise ValueError(f"--latents: expected a .npy or .pt file, got {str(p)!r}")
    arr = np.asarray(arr)
    if arr.ndim < 2 or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"--latents: expected a numeric array (N, D), got {arr.dtype} "
                         f"{arr.shape}")
    return arr.reshape(len(arr), -1).astype(np.float64)


def _run(generator: Any, anchors: Any, features: str, labeler: str | None,
         kw: dict[str, Any]) -> None:
    from .. import planes
    from ..sources import LatentPlane
    from .atlas_cmd import stage_messages

    b = kw["bounds"]
    bounds = ((b[0], b[1]), (b[2], b[3])) if b else ((-0.5, 1.5), (-0.5, 1.5))
    plane = LatentPlane(generator, anchors=anchors, eta=kw["eta"], bounds=bounds)
    pot = {"steps": kw["potential_steps"]} if kw["potential_steps"] else None
    scale = backend_kwargs(kw["backend"], kw["ray_address"], kw["workers"], kw["gpus_per_task"])
    if not kw["quiet"]:
        click.echo(f"latentatlas: plane through latents of dimension {plane.latent_dim} -> "
                   f"{kw['out']}", err=True)
    with stage_messages(kw["quiet"]):
        scalars = planes.analyze(
            plane, kw["out"], features=features, labeler=labeler, resolution=kw["resolution"],
            bundle=kw["bundle"], samples=kw["samples"], bounds=bounds, seed=kw["seed"],
            potential_options=pot, progress=not kw["quiet"], force=kw["force"],
            backend=None if kw["backend"] == "local" else scale,
            eta_compare=kw["eta_compare"] or None, eta_resolution=kw["eta_resolution"],
            zoom_points=kw["zoom_points"], zoom_resolution=kw["zoom_resolution"],
            path_points=kw["path_points"], path_samples=kw["path_samples"],
            path_eta=kw["path_eta"])
    agree = scalars["phase_agreement"]
    click.echo(f"images/second {scalars['images_per_second']:.0f}; classes "
               f"{scalars['classes']}; class changes on metric ridges "
               f"{agree['metric']['fraction']:.2f} (feature metric "
               f"{agree['feature_metric']['fraction']:.2f}); report "
               f"{Path(kw['out']) / 'report' / 'index.html'}")


@atlas.command(epilog=_EPILOG)
@click.option("--features", default="classifier", show_default=True,
              help="Kernel features: classifier, pixels or clip:PATH.")
@_options
def digits(features: str, **kw: Any) -> None:
    """The embedded digits flow-matching generator (trained once, then cached).

    --anchors I J K index a fixed bank of 1000 N(0, I) latents (latentatlas.planes.digits_latents);
    without them three latents are drawn with --seed.
    """
    _check(kw)
    from .. import planes
    from ..generators import Digits

    anchors = _pick(planes.digits_latents(), kw["anchors"], kw["seed"])
    gen = Digits.pretrained(progress=not kw["quiet"])
    _run(gen, anchors, features, "classifier", kw)


@atlas.command(epilog=_EPILOG)
@click.option("--generator", "generator", required=True, metavar="MODULE:CALLABLE",
              help="Your generator: a callable / nn.Module / class (instantiated) f(z) -> x, or an "
                   "object with generate(z, eta, seeds).")
@click.option("--latents", "latents", type=click.Path(dir_okay=False), default=None,
              help="Latent vectors (N, D), .npy or .pt; anchors are picked from them.")
@click.option("--latent-dim", "latent_dim", type=int, default=None,
              help="D, when there is no --latents file (anchors drawn from N(0, I)).")
@click.option("--features", default="pixels", show_default=True,
              help="Kernel features: pixels, classifier (8x8 digits) or clip:PATH.")
@click.option("--labeler", default=None, metavar="MODULE:CALLABLE",
              help="Classes of images (x -> ints) [default: k-means of the features].")
@_options
def custom(generator: str, latents: str | None, latent_dim: int | None, features: str,
           labeler: str | None, **kw: Any) -> None:
    """Your own generator (e.g. a VAE decoder) on a plane through three of your latents."""
    _check(kw)
    from ..sources.latent_plane import resolve_generator

    gen = resolve_generator(generator)
    if latents is not None:
        anchors: Any = _pick(load_latents(latents), kw["anchors"], kw["seed"])
    else:
        if kw["anchors"]:
            raise ValueError("--anchors: index a --latents file; without one use --seed")
        dim = latent_dim or getattr(gen, "latent_dim", None)
        if not dim or dim < 1:
            raise ValueError("--latent-dim: expected the latent dimension (or a --latents file)")
        anchors = np.random.default_rng(kw["seed"]).standard_normal((3, int(dim)))
    _run(generator, anchors, features, labeler or "kmeans", kw)


logging.getLogger(__name__).addHandler(logging.NullHandler())
