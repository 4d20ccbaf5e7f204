"""``latentatlas report DIR``: redraw the report of a run folder."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import click

from .common import main


@main.command()
@click.argument("run_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--open", "open_browser", is_flag=True,
              help="Open the page in the default web browser afterwards.")
@click.option("--thumbnail", type=int, default=None, metavar="PX",
              help="Longest side of the embedded image thumbnails in pixels [default: 64]; "
                   "large generators' images (e.g. Stable Diffusion's) are downscaled to it.")
def report(run_dir: str, open_browser: bool, thumbnail: int | None) -> None:
    """Rebuild DIR/report/index.html (and its PNG figures) from a run folder.

    \b
    index.html is one self-contained file (no server, no network): maps with zoom and pan,
    a hover readout (metric tensor and ellipse, posterior, generated image), geodesics
    between two clicked points, and window.latentatlas.pointAt / geodesic for scripts.
    Reads DIR/atlas.npz, DIR/config.json and, when present, DIR/analyses.json|npz,
    DIR/posteriors.npy, DIR/images.npy, DIR/planes.json|npz (latent planes; also redraws
    report/images.html) or DIR/path.npz (path runs). Nothing is recomputed.

    \b
    Example:
      latentatlas atlas gaussian --resolution 16 --out runs/gauss
      latentatlas report runs/gauss --open
      latentatlas report runs/sd-plane --thumbnail 48
    """
    from ..report.atlas import write_report
    from ..report.interactive import run_kind

    if thumbnail is not None and thumbnail < 1:
        raise ValueError(f"--thumbnail: expected a positive number of pixels, got {thumbnail}")
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"DIR: no folder {run_dir!r} (no atlas.npz or path.npz)")
    try:
        run_kind(run_dir)
    except FileNotFoundError:
        raise FileNotFoundError(f"DIR: no atlas.npz or path.npz in {run_dir!r}; run "
                                f"`latentatlas atlas ... --out {run_dir}` first") from None
    index = write_report(run_dir, thumbnail=thumbnail)
    click.echo(f"report: {index}")
    if open_browser:
        webbrowser.open(index.resolve().as_uri())
