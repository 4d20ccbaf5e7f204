"""``latentatlas sample``: fill a resumable sample store over a parameter grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import BACKEND_OPTIONS, backend_kwargs, main

__all__ = ["sample"]


def _parse_grid(value: str) -> tuple[int, int]:
    parts = value.lower().replace(",", "x").split("x")
    try:
        res = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--grid: expected G or G0xG1 (ints >= 2), got {value!r}") from None
    if len(res) == 1:
        res = (res[0], res[0])
    if len(res) != 2 or min(res) < 2:
        raise ValueError(f"--grid: expected G or G0xG1 (ints >= 2), got {value!r}")
    return res  # type: ignore[return-value]


def _parse_steps(value: str, name: str) -> str | int:
    if value == "auto":
        return value
    try:
        steps = int(value)
    except ValueError:
        raise ValueError(f"{name}: expected 'auto' or an int, got {value!r}") from None
    return steps


def _common(func: Any) -> Any:
    options = [
        click.option("--grid", default="32", show_default=True,
                     help="Grid resolution: G (G x G points) or G0xG1."),
        click.option("--samples", "samples", type=int, default=16, show_default=True,
                     help="Samples per grid point."),
        click.option("--seed", type=int, default=0, show_default=True, help="Run seed."),
        click.option("--out", type=click.Path(file_okay=False), required=True,
                     help="Store directory; rerun the same command to resume."),
        click.option("--bounds", type=float, nargs=4, default=None,
                     metavar="LO0 HI0 LO1 HI1",
                     help="Low/high of each axis in the source's coordinates "
                     "[default: the source's bounds]."),
        click.option("--chunk", type=int, default=None,
                     help="Points per chunk (unit of work and of resumption) [default: 64]."),
        click.option("--burn-in", "burn_in", default="auto", show_default=True,
                     help="Sweeps before the first sample, or 'auto' (from a pilot run)."),
        click.option("--thin", default="auto", show_default=True,
                     help="Sweeps between samples, or 'auto' (2 x autocorrelation time)."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
        *BACKEND_OPTIONS,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run(source: Any, kind: str, grid: str, samples: int, seed: int, out: str,
         bounds: tuple[float, ...] | None, chunk: int | None, quiet: bool,
         backend: str = "local", ray_address: str | None = None, workers: int | None = None,
         gpus_per_task: float = 0.0) -> None:
    from ..distributed import generate
    from ..sources.base import check_bounds
    from ..store import SampleStore, grid_params

    res = _parse_grid(grid)
    if samples <= 0:
        raise ValueError(f"--samples: expected a positive int, got {samples}")
    if seed < 0:
        raise ValueError(f"--seed: expected a non-negative int, got {seed}")
    if chunk is not None and chunk <= 0:
        raise ValueError(f"--chunk: expected a positive int, got {chunk}")
    if bounds is None or len(bounds) == 0:
        box = source.bounds
    else:
        box = check_bounds(
            ((bounds[0], bounds[1]), (bounds[2], bounds[3])), source.domain, source.names
        )
    axis0, axis1, params = grid_params(box, res)
    try:
        source.check_params(params)
    except ValueError as err:
        raise ValueError(f"--bounds: the grid leaves the source's domain ({err})") from None
    store = SampleStore.create(
        Path(out), source, params, samples, seed=seed, chunk_points=chunk,
        extra_meta={
            "command": f"sample {kind}",
            "bounds": [list(b) for b in box],
            "resolution": list(res),
            "axis0": axis0.tolist(),
            "axis1": axis1.tolist(),
        },
    )
    done = store.done_points
    store = generate(store, progress=not quiet,
                     **backend_kwargs(backend, ray_address, workers, gpus_per_task))
    what = "already complete" if done == store.num_points else (
        f"resumed from {done}/{store.num_points} points" if done else "generated"
    )
    click.echo(
        f"{out}: {store.num_points} points x {samples} samples of {type(source).__name__} "
        f"({', '.join(source.names)}), {what}"
    )


@main.group()
def sample() -> None:
    """Sample a source over a parameter grid into a resumable zarr store.

    \b
    Examples:
      latentatlas sample ising --L 16 --grid 64 --samples 16 --seed 0 --out runs/ising-store
      latentatlas sample ising --L 32 --algorithm wolff --bounds 1.5 3.5 -0.5 0.5 --out runs/w
      latentatlas sample tasep --L 10 --grid 32 --samples 64 --out runs/tasep-store

    The grid is regular in the source's coordinates, endpoints included (point p = i * G1 + j).
    Interrupting (Ctrl-C, kill) is safe: rerun the same command and it continues where it
    stopped; the result is bit-identical to an uninterrupted run. Rerunning with other settings
    on the same --out is refused.
    """


@sample.command()
@click.option("--L", "L", type=int, default=16, show_default=True, help="Lattice size (L x L).")
@click.option("--coords", type=click.Choice(["temperature", "natural"]), default="temperature",
              show_default=True, help="Parameters (T, h) or natural (K, H) = (J/T, h/T).")
@click.option("--algorithm", type=click.Choice(["metropolis", "wolff"]), default="metropolis",
              show_default=True, help="'wolff' adds cluster updates at h = 0 (near T_c).")
@_common
def ising(L: int, coords: str, algorithm: str, grid: str, samples: int, seed: int, out: str,
          bounds: tuple[float, ...] | None, chunk: int | None, burn_in: str, thin: str,
          quiet: bool, **scale: Any) -> None:
    """2-D Ising model on a periodic L x L lattice, parameters (T, h) or (K, H)."""
    from ..sources.ising import Ising2D

    source = Ising2D(L, coords=coords, algorithm=algorithm,
                     burn_in=_parse_steps(burn_in, "--burn-in"), thin=_parse_steps(thin, "--thin"))
    _run(source, "ising", grid, samples, seed, out, bounds, chunk, quiet, **scale)


@sample.command()
@click.option("--L", "L", type=int, default=32, show_default=True, help="Number of sites.")
@_common
def tasep(L: int, grid: str, samples: int, seed: int, out: str,
          bounds: tuple[float, ...] | None, chunk: int | None, burn_in: str, thin: str,
          quiet: bool, **scale: Any) -> None:
    """Open-boundary TASEP (random-sequential update), parameters (alpha, beta) in (0, 1]^2."""
    from ..sources.tasep import TASEP

    source = TASEP(L, burn_in=_parse_steps(burn_in, "--burn-in"), thin=_parse_steps(thin, "--thin"))
    _run(source, "tasep", grid, samples, seed, out, bounds, chunk, quiet, **scale)
