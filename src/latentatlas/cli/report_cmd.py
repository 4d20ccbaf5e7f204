"""``latentatlas report DIR``: redraw the report of a run folder."""

from __future__ import annotations

from pathlib import Path

import click

from .common import main


@main.command()
@click.argument("run_dir", metavar="DIR", type=click.Path(file_okay=False))
def report(run_dir: str) -> None:
    """Rebuild DIR/report/index.html (and its PNG figures) from a run folder.

    \b
    Reads DIR/atlas.npz, DIR/config.json and, when present, DIR/analyses.json and
    DIR/analyses.npz (written by `latentatlas atlas ... --out DIR`). Nothing is recomputed.

    \b
    Example:
      latentatlas atlas gaussian --resolution 16 --out runs/gauss
      latentatlas report runs/gauss && xdg-open runs/gauss/report/index.html
    """
    from ..report.atlas import write_report

    if not (Path(run_dir) / "atlas.npz").is_file():
        raise FileNotFoundError(f"DIR: no atlas.npz in {run_dir!r}; run `latentatlas atlas ... "
                                f"--out {run_dir}` first")
    index = write_report(run_dir)
    click.echo(f"report: {index}")
