"""``latentatlas atlas SOURCE``: the whole pipeline (sample -> posterior -> metric -> report)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import click

from .common import BACKEND_OPTIONS, backend_kwargs, main

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
        click.option("--resolution", type=int, default=None,
                     help="Grid points per axis (>= 4) [default: per source]."),
        click.option("--samples", "samples", type=int, default=None,
                     help="Samples drawn per grid point [default: per source]."),
        click.option("--bundle", type=int, default=None,
                     help="K, samples per bundle of the posterior (<= --samples) "
                          "[default: per source]."),
        click.option("--estimator", type=click.Choice(["grid", "flow", "kernel"]), default="grid",
                     show_default=True, help="Posterior estimator."),
        click.option("--seed", type=int, default=0, show_default=True, help="Run seed."),
        click.option("--steps", type=int, default=None,
                     help="Training steps of the posterior [default: per source]."),
        click.option("--potential-steps", "potential_steps", type=int, default=None,
                     help="Training steps of the potential (and of the MLP baseline) "
                          "[default: per source]."),
        click.option("--force", is_flag=True, help="Recompute every stage (same config only)."),
        click.option("--quiet", is_flag=True, help="No progress bars or stage messages."),
        *BACKEND_OPTIONS,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run(source: Any, *, out: str, bounds: tuple[float, ...] | None, resolution: int | None,
         samples: int | None, bundle: int | None, estimator: str, seed: int, steps: int | None,
         potential_steps: int | None, force: bool, quiet: bool, backend: str = "local",
         ray_address: str | None = None, workers: int | None = None,
         gpus_per_task: float = 0.0) -> None:
    from .. import atlas as atlas_mod

    scale = backend_kwargs(backend, ray_address, workers, gpus_per_task)
    scale = None if backend == "local" else scale

    logger = logging.getLogger("latentatlas.atlas")
    handler = _EchoHandler()
    saved = logger.level, logger.propagate
    if not quiet:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    pairs = None if not bounds else ((bounds[0], bounds[1]), (bounds[2], bounds[3]))
    posterior_options = {"fit": {"steps": steps}} if steps is not None else None
    potential_options = {"steps": potential_steps} if potential_steps is not None else None
    try:
        atlas = atlas_mod.build(source, bounds=pairs, resolution=resolution,
                                samples_per_point=samples, bundle=bundle, estimator=estimator,
                                seed=seed, out=out, force=force, progress=not quiet,
                                posterior_options=posterior_options,
                                potential_options=potential_options, backend=scale)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
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
      latentatlas atlas ising --out runs/ising          # defaults: L=8, (K, H), < 10 min
      latentatlas atlas ising --L 8 --coords natural --algorithm wolff \\
          --bounds 0.2 0.7 -0.3 0.3 --resolution 32 --out runs/ising
      latentatlas atlas tasep --L 10 --out runs/tasep   # (alpha, beta) in (0, 1]
      latentatlas atlas gaussian --coords natural --resolution 16 --out runs/gauss
      latentatlas report runs/ising                     # redraw the report

    Interrupt any time (Ctrl-C) and rerun the same command to resume.
    """


@atlas.command(epilog=_EPILOG)
@click.option("--L", "L", type=int, default=8, show_default=True, help="Linear lattice size.")
@click.option("--coords", type=click.Choice(["natural", "temperature"]), default="natural",
              show_default=True, help="Parameters (K, H) = (J/T, h/T), or (T, h).")
@click.option("--J", "J", type=float, default=1.0, show_default=True,
              help="Coupling (temperature coordinates only).")
@click.option("--algorithm", type=click.Choice(["metropolis", "wolff"]), default="wolff",
              show_default=True, help="MCMC sweep (Wolff adds cluster flips at zero field).")
@click.option("--burn-in", "burn_in", default="auto", show_default=True,
              help="Sweeps before the first sample, or 'auto'.")
@click.option("--thin", default="auto", show_default=True,
              help="Sweeps between samples, or 'auto'.")
@_common
def ising(L: int, coords: str, J: float, algorithm: str, burn_in: str, thin: str,
          **kwargs: Any) -> None:
    """2-D Ising model on an L x L torus, p(s) ~ exp(K sum s_i s_j + H sum s_i).

    \b
    Default region (natural coordinates): K in [0.25, 0.65] (K_c = 0.4407) and H in [-0.3, 0.3]:
    the critical point and the first-order line H = 0, K > K_c show up as ridges of the metric.
    An exact reference (transfer matrix) is drawn for L <= 10.
    """
    from .. import sources

    source = sources.Ising2D(L=L, coords=coords, J=J, burn_in=_steps(burn_in, "--burn-in"),
                             thin=_steps(thin, "--thin"), algorithm=algorithm)
    _run(source, **kwargs)


@atlas.command(epilog=_EPILOG)
@click.option("--L", "L", type=int, default=10, show_default=True, help="Number of sites.")
@_common
def tasep(L: int, **kwargs: Any) -> None:
    """Open-boundary TASEP with entry rate alpha and exit rate beta in (0, 1].

    \b
    Samples are stationary configurations; the metric shows the low-density, high-density and
    maximal-current phases. An exact reference (master equation) is drawn for L <= 12.
    """
    from .. import sources

    _run(sources.TASEP(L=L), **kwargs)


@atlas.command(epilog=_EPILOG)
@click.option("--coords", type=click.Choice(["natural", "mean_std"]), default="natural",
              show_default=True, help="Natural parameters, or (mean, standard deviation).")
@click.option("--dim", type=int, default=1, show_default=True,
              help="Independent draws per sample.")
@_common
def gaussian(coords: str, dim: int, **kwargs: Any) -> None:
    """The normal family N(mu, sigma^2): closed-form metric, the pipeline's sanity case."""
    from .. import sources

    _run(sources.GaussianFamily(coords=coords, dim=dim), **kwargs)


def _steps(value: str, name: str) -> str | int:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}: expected 'auto' or a positive int, got {value!r}") from None
