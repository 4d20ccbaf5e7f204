"""One option set per source, shared by ``latentatlas sample SOURCE`` and ``latentatlas atlas
SOURCE`` (same names, same defaults), so that a store filled by ``sample`` is what ``atlas
--store`` expects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from .._util import parse_auto_int

__all__ = ["SOURCES", "make_source", "source_options"]


def _steps(value: str, name: str) -> str | int:
    steps = parse_auto_int(value, name, minimum=0)
    return "auto" if steps is None else steps


def _ising(L: int, coords: str, J: float, algorithm: str, burn_in: str, thin: str) -> Any:
    from ..sources import Ising2D

    return Ising2D(L=L, coords=coords, J=J, burn_in=_steps(burn_in, "--burn-in"),
                   thin=_steps(thin, "--thin"), algorithm=algorithm)


def _tasep(L: int, burn_in: str, thin: str) -> Any:
    from ..sources import TASEP

    return TASEP(L=L, burn_in=_steps(burn_in, "--burn-in"), thin=_steps(thin, "--thin"))


def _gaussian(coords: str, dim: int) -> Any:
    from ..sources import GaussianFamily

    return GaussianFamily(coords=coords, dim=dim)


_MCMC = [
    click.option("--burn-in", "burn_in", default="auto", show_default=True,
                 help="Sweeps before the first sample, or 'auto' (from a pilot run)."),
    click.option("--thin", default="auto", show_default=True,
                 help="Sweeps between samples, or 'auto' (2 x autocorrelation time)."),
]

SOURCES: dict[str, tuple[list[Any], Callable[..., Any]]] = {
    "ising": ([
        click.option("--L", "L", type=int, default=8, show_default=True,
                     help="Linear lattice size (L x L torus)."),
        click.option("--coords", type=click.Choice(["natural", "temperature"]),
                     default="natural", show_default=True,
                     help="Parameters (K, H) = (J/T, h/T), or (T, h)."),
        click.option("--J", "J", type=float, default=1.0, show_default=True,
                     help="Coupling (temperature coordinates only)."),
        click.option("--algorithm", type=click.Choice(["metropolis", "wolff"]), default="wolff",
                     show_default=True, help="MCMC sweep (Wolff adds cluster flips at zero field)."),
        *_MCMC], _ising),
    "tasep": ([
        click.option("--L", "L", type=int, default=10, show_default=True,
                     help="Number of sites."),
        *_MCMC], _tasep),
    "gaussian": ([
        click.option("--coords", type=click.Choice(["natural", "mean_std"]), default="natural",
                     show_default=True, help="Natural parameters, or (mean, standard deviation)."),
        click.option("--dim", type=int, default=1, show_default=True,
                     help="Independent draws per sample.")], _gaussian),
}
"""source name -> (its click options, the factory taking exactly those options)."""


def source_options(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding the options of source ``kind``."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(SOURCES[kind][0]):
            func = option(func)
        return func

    return decorate


def make_source(kind: str, kwargs: dict[str, Any]) -> Any:
    """Build source ``kind`` from the command's keyword arguments, removing its options from
    ``kwargs``."""
    factory = SOURCES[kind][1]
    names = factory.__code__.co_varnames[: factory.__code__.co_argcount]
    return factory(**{name: kwargs.pop(name) for name in names})
