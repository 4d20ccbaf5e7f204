"""``latentatlas sample``: fill a resumable sample store over a parameter grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import BACKEND_OPTIONS, RESOLUTION, backend_kwargs, main
from .source_options import make_source, source_options

__all__ = ["sample"]


def _common(func: Any) -> Any:
    options = [
        click.option("--resolution", type=RESOLUTION, default=None,
                     help="Grid: G (G x G points) or G0xG1 [default: per source, as for 'atlas']."),
        click.option("--samples", "samples", type=int, default=None,
                     help="Samples per grid point [default: per source, as for 'atlas']."),
        click.option("--seed", type=int, default=0, show_default=True, help="Run seed."),
        click.option("--out", type=click.Path(file_okay=False), required=True,
                     help="Store directory; rerun the same command to resume."),
        click.option("--bounds", type=float, nargs=4, default=None,
                     metavar="LO0 HI0 LO1 HI1",
                     help="Low/high of each axis in the source's coordinates "
                     "[default: per source, as for 'atlas']."),
        click.option("--chunk", type=int, default=None,
                     help="Points per chunk (unit of work and of resumption) [default: 64]."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
        *BACKEND_OPTIONS,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run(source: Any, kind: str, resolution: int | tuple[int, int] | None, samples: int | None, seed: int,
         out: str, bounds: tuple[float, ...] | None, chunk: int | None, quiet: bool,
         backend: str = "local", ray_address: str | None = None, workers: int | None = None,
         gpus_per_task: float = 0.0) -> None:
    from .._util import check_int, check_seed, grid, resolution_pair
    from ..distributed import generate
    from ..sources.base import check_bounds
    from ..store import SampleStore

    defaults = source.atlas_defaults()
    res = resolution_pair(defaults["resolution"] if resolution is None else resolution,
                          minimum=2)
    samples = check_int(defaults["samples_per_point"] if samples is None else samples,
                        "--samples", minimum=1)
    check_seed(seed, "--seed")
    if chunk is not None:
        check_int(chunk, "--chunk", minimum=1)
    box = check_bounds(defaults["bounds"] if not bounds else
                       ((bounds[0], bounds[1]), (bounds[2], bounds[3])), source.domain,
                       source.names)
    axis0, axis1, params = grid(box, res, minimum=2)
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
      latentatlas sample ising --out runs/ising-store     # the defaults of 'atlas ising'
      latentatlas atlas ising --store runs/ising-store --out runs/ising
      latentatlas sample ising --L 16 --coords temperature --bounds 1.5 3.5 -0.5 0.5 \\
          --resolution 64 --samples 16 --out runs/t
      latentatlas sample tasep --L 10 --resolution 32 --samples 64 --out runs/tasep-store

    The options and defaults of each source are those of 'latentatlas atlas SOURCE', so that a
    store filled here is what 'atlas --store' reuses.

    The grid is regular in the source's coordinates, endpoints included (point p = i * G1 + j).
    Interrupting (Ctrl-C, kill) is safe: rerun the same command and it continues where it
    stopped; the result is bit-identical to an uninterrupted run. Rerunning with other settings
    on the same --out is refused.
    """


def _command(kind: str, doc: str) -> None:
    """Register ``latentatlas sample KIND`` with the source's shared options."""

    def command(**kwargs: Any) -> None:
        source = make_source(kind, kwargs)
        _run(source, kind, **kwargs)

    command.__doc__ = doc
    command.__name__ = kind
    sample.command(name=kind)(source_options(kind)(_common(command)))


_command("ising", "2-D Ising model on a periodic L x L lattice, parameters (K, H) or (T, h).")
_command("tasep", "Open-boundary TASEP (random-sequential update), parameters (alpha, beta) in "
                  "(0, 1]^2.")
_command("gaussian", "The normal family N(mu, sigma^2), natural or (mu, sigma) parameters.")
