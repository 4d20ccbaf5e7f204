"""``latentatlas atlas SOURCE``: the whole pipeline (sample -> posterior -> metric -> report)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import click

from .common import BACKEND_OPTIONS, RESOLUTION, backend_kwargs, main
from .source_options import make_source, source_options

_EPILOG = """\b
Stages and the run folder (--out DIR):
  store.zarr            samples at every grid point (chunked; resumes mid-stage)
  posterior.safetensors posterior estimator; posteriors.npy its posteriors on the grid
  potential.safetensors the convex potential Phi ~ log Z (its Hessian is the metric)
  atlas.npz             names, axis0, axis1, potential, gradient, metric (+ config.json)
  analyses.json/.npz    boundaries, phases, geodesics, path analysis, baselines, accuracy
  report/index.html     the report (PNG figures beside it)
A rerun of the same command skips finished stages (resume after an interruption); --force
recomputes them. A folder holding another config is refused (exit code 2, nothing overwritten).
"""


class _EchoHandler(logging.Handler):
    """Stage messages on stderr as ``latentatlas: ...`` (resolves stderr at each message)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"latentatlas: {record.getMessage()}", err=True)


def _common(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by every source."""
    options = [
        click.option("--out", "out", required=True, type=click.Path(file_okay=False),
                     help="Run folder (created if missing; reused to resume)."),
        click.option("--bounds", nargs=4, type=float, default=None,
                     metavar="LO0 HI0 LO1 HI1",
                     help="Region in the source's coordinates [default: per source]."),
        click.option("--resolution", type=RESOLUTION, default=None,
                     help="Grid points per axis (>= 4) [default: per source]."),
        click.option("--samples", "samples", type=int, default=None,
                     help="Samples drawn per grid point [default: per source]."),
        click.option("--bundle", type=int, default=None,
                     help="K, samples per bundle of the posterior (<= --samples) "
                          "[default: per source]."),
        click.option("--estimator", type=click.Choice(["grid", "flow", "kernel"]), default=None,
                     help="Posterior estimator [default: per source, grid for these]."),
        click.option("--seed", type=int, default=0, show_default=True, help="Run seed."),
        click.option("--steps", type=int, default=None,
                     help="Training steps of the posterior [default: per source]."),
        click.option("--potential-steps", "potential_steps", type=int, default=None,
                     help="Training steps of the potential (and of the MLP baseline) "
                          "[default: per source]."),
        click.option("--coordinates", type=click.Choice(["given", "natural", "learned"]),
                     default=None,
                     help="Coordinates of the potential fit: 'given' fits Phi(t) in the source's "
                          "coordinates; 'natural' pulls the metric back through the source's "
                          "natural-parameter map (Ising in (T, h), Gaussian in (mu, sigma)); "
                          "'learned' fits learned Hessian coordinates (any source) [default: "
                          "'given' in natural coordinates, 'natural' when the source knows its "
                          "map, 'learned' otherwise]."),
        click.option("--store", "store", type=click.Path(file_okay=False, exists=True),
                     default=None,
                     help="Reuse a store filled by 'latentatlas sample' with the same source "
                          "options, bounds, resolution, samples and seed (nothing is sampled)."),
        click.option("--device", default="cpu", show_default=True,
                     help="Where the posterior network and the potential are trained: cpu, "
                          "cuda, cuda:1, mps (not part of the config: a run can resume on "
                          "another device)."),
        click.option("--force", is_flag=True, help="Recompute every stage (same config only)."),
        click.option("--quiet", is_flag=True, help="No progress bars or stage messages."),
        *BACKEND_OPTIONS,
    ]
    for option in reversed(options):
        func = option(func)
    return func


@contextlib.contextmanager
def stage_messages(quiet: bool) -> Iterator[None]:
    """Echo the pipeline's stage messages on stderr (unless ``quiet``)."""
    logger = logging.getLogger("latentatlas.atlas")
    handler = _EchoHandler()
    saved = logger.level, logger.propagate
    if not quiet:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _run(source: Any, *, out: str, bounds: tuple[float, ...] | None, resolution: int | None,
         samples: int | None, bundle: int | None, estimator: str | None, seed: int,
         steps: int | None, potential_steps: int | None, force: bool, quiet: bool,
         coordinates: str | None = None, store: str | None = None, backend: str = "local",
         ray_address: str | None = None, workers: int | None = None,
         gpus_per_task: float = 0.0, device: str = "cpu") -> None:
    from .. import atlas as atlas_mod

    scale = backend_kwargs(backend, ray_address, workers, gpus_per_task)
    scale = None if backend == "local" else scale
    pairs = None if not bounds else ((bounds[0], bounds[1]), (bounds[2], bounds[3]))
    posterior_options = {"fit": {"steps": steps}} if steps is not None else None
    potential: dict[str, Any] = {}
    if potential_steps is not None:
        potential["steps"] = potential_steps
    if coordinates is not None:
        potential["coordinates"] = coordinates
    potential_options = potential or None
    with stage_messages(quiet):
        atlas = atlas_mod.build(source, bounds=pairs, resolution=resolution,
                                samples_per_point=samples, bundle=bundle, estimator=estimator,
                                seed=seed, out=out, force=force, progress=not quiet,
                                posterior_options=posterior_options,
                                potential_options=potential_options, backend=scale, store=store,
                                device=device)
    (lo0, hi0), (lo1, hi1) = atlas.bounds
    click.echo(f"atlas: {atlas.names[0]} in [{lo0:.4g}, {hi0:.4g}] x {atlas.names[1]} in "
               f"[{lo1:.4g}, {hi1:.4g}], grid {atlas.shape[0]} x {atlas.shape[1]} -> {out}/atlas.npz")
    acc = atlas_mod.read_accuracy(out)
    if acc:
        keys = [k for k in ("potential", "gradient", "g00", "g01", "g11") if k in acc]
        click.echo("normalized RMSE vs exact: " + ", ".join(f"{k} {acc[k]:.3f}" for k in keys))
    click.echo(f"report: {out}/report/index.html")


@main.group(epilog=_EPILOG)
def atlas() -> None:
    """Build the atlas of a source: sample, learn posteriors, fit log Z, draw the metric.

    \b
    Examples:
      latentatlas atlas ising --out runs/ising          # defaults: L=8, (K, H), ~2 min
      latentatlas atlas ising --L 8 --coords natural --algorithm wolff \\
          --bounds 0.2 0.7 -0.3 0.3 --resolution 32 --out runs/ising
      latentatlas atlas tasep --L 10 --out runs/tasep   # (alpha, beta) in (0, 1]
      latentatlas atlas gaussian --coords natural --resolution 16 --out runs/gauss
      latentatlas atlas gaussian --coords mean_std --coordinates learned --out runs/g2
      latentatlas report runs/ising                     # redraw the report

    Interrupt any time (Ctrl-C) and rerun the same command to resume.
    """


def _command(kind: str, doc: str) -> None:
    """Register ``latentatlas atlas KIND`` with the source's shared options."""

    def command(**kwargs: Any) -> None:
        source = make_source(kind, kwargs)
        _run(source, **kwargs)

    command.__doc__ = doc
    command.__name__ = kind
    atlas.command(name=kind, epilog=_EPILOG)(source_options(kind)(_common(command)))


_command("ising", """2-D Ising model on an L x L torus, p(s) ~ exp(K sum s_i s_j + H sum s_i).

    \b
    Default region (natural coordinates): K in [0.25, 0.65] (K_c = 0.4407) and H in [-0.3, 0.3]:
    the critical point and the first-order line H = 0, K > K_c show up as ridges of the metric.
    An exact reference (transfer matrix) is drawn for L <= 10.
    """)
_command("tasep", """Open-boundary TASEP with entry rate alpha and exit rate beta in (0, 1].

    \b
    Samples are stationary configurations; the metric shows the low-density, high-density and
    maximal-current phases. An exact reference (master equation) is drawn for L <= 12.
    """)
_command("gaussian", """The normal family N(mu, sigma^2): closed-form metric, the pipeline's
    sanity case.""")
