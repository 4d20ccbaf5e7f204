"""``latentatlas path custom|digits|diffusers``: the path between two latents of a generator.

One path (``--from I --to J``): samples at ``--points`` positions, the 1-D posterior, the convex
potential, g(s), the Fisher length, the posterior means, their distances and the jumps, the jump
analysis and the report, in a run folder (resume, refusal of another config). Many paths
(``--pairs FILE``, rows ``I J``): generation batched across paths, a ranking by Fisher length and
jumps (``ranking.csv``, ``ranking.json``). ``--backend ray``: the batches of pairs as Ray tasks
(one path: its sample chunks, as for the stores).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from .common import BACKEND_OPTIONS, backend_kwargs, diffusers_options, main, make_diffusers

_EPILOG = """\b
Files in --out (one path): path.npz (s, metric = g(s) per sample, potential, gradient, means,
distances, jumps, threshold, fisher_length), images.npy (one image per point), path.json,
jumps.json/.npz (images at each jump, Lipschitz profiles), posteriors.npy, potential.npz,
store.zarr, config.json, report/index.html. With --pairs: ranking.csv, ranking.json,
paths/I_J.npz, config.json. A rerun resumes; another config is refused (exit code 2).
"""


@main.group(epilog=_EPILOG)
def path() -> None:
    """Map the path between two latents: g(s), Fisher length, posterior means and jumps.

    \b
    Examples:
      latentatlas path custom --generator mypkg.vae:decoder --latents z.npy --from 3 --to 17 \\
          --eta 0.5 --out runs/path
      latentatlas path digits --from 0 --to 1 --eta 0.3 --out runs/digits-path
      latentatlas path custom --generator mypkg.vae:decoder --latents z.npy --pairs pairs.txt \\
          --out runs/pairs
    """


def _options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--out", "out", required=True, type=click.Path(file_okay=False),
                     help="Run folder (created if missing; reused to resume)."),
        click.option("--from", "from_", type=int, default=None, metavar="I",
                     help="Index of z_A in the latents."),
        click.option("--to", "to", type=int, default=None, metavar="J",
                     help="Index of z_B in the latents."),
        click.option("--pairs", "pairs", type=click.Path(dir_okay=False), default=None,
                     help="Text file of rows 'I J': map and rank all these paths."),
        click.option("--interpolation", type=click.Choice(["slerp", "linear"]), default="slerp",
                     show_default=True, help="slerp (Gaussian latents) or exactly linear."),
        click.option("--points", type=int, default=100, show_default=True,
                     help="Positions s along the path (end points included)."),
        click.option("--samples", type=int, default=50, show_default=True,
                     help="Samples per position."),
        click.option("--eta", type=float, default=0.0, show_default=True,
                     help="Generator noise (0: deterministic; the feature kernel is the noise)."),
        click.option("--bundle", type=int, default=None,
                     help="K, samples per bundle of the posterior [default: 2]."),
        click.option("--repeats", type=int, default=None,
                     help="R, bundles per position [default: 32]."),
        click.option("--estimator", type=click.Choice(["kernel", "grid"]), default="kernel",
                     show_default=True, help="1-D posterior estimator."),
        click.option("--potential-steps", "potential_steps", type=int, default=None,
                     help="At most this many L-BFGS iterations of the potential fit "
                          "[default: 1000]."),
        click.option("--sort", type=click.Choice(["fisher_length", "jumps"]),
                     default="fisher_length", show_default=True,
                     help="--pairs: rank by Fisher length or by number of jumps."),
        click.option("--batch-size", "batch_size", type=int, default=1024, show_default=True,
                     help="Latents per generator call."),
        click.option("--seed", type=int, default=0, show_default=True, help="Run seed."),
        click.option("--force", is_flag=True, help="Recompute every stage (same config only)."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
        *BACKEND_OPTIONS,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def read_pairs(path: str, n: int) -> np.ndarray:
    """Rows ``I J`` of a text file (blank lines and ``#`` comments skipped) -> (M, 2) int64."""
    rows = []
    for k, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].replace(",", " ").split()
        if not line:
            continue
        try:
            i, j = (int(v) for v in line)
        except ValueError:
            raise ValueError(f"--pairs: expected two integer indices 'I J' per line, got "
                             f"{' '.join(line)!r} on line {k}") from None
        rows.append((i, j))
    if not rows:
        raise ValueError(f"--pairs: expected at least one row 'I J' in {path!r}, got none")
    arr = np.asarray(rows, dtype=np.int64)
    bad = arr[(arr < 0) | (arr >= n)]
    if bad.size:
        raise ValueError(f"--pairs: expected indices in [0, {n}) of the {n} latents, got "
                         f"{int(bad[0])}")
    return arr


def _check(kw: dict[str, Any], n: int) -> None:
    if kw["points"] < 4:
        raise ValueError(f"--points: expected an int >= 4, got {kw['points']}")
    if kw["samples"] < 2:
        raise ValueError(f"--samples: expected an int >= 2, got {kw['samples']}")
    if not kw["eta"] >= 0:
        raise ValueError(f"--eta: expected a number >= 0, got {kw['eta']}")
    for name in ("bundle", "repeats", "potential_steps", "batch_size"):
        if kw[name] is not None and kw[name] < 1:
            raise ValueError(f"--{name.replace('_', '-')}: expected a positive int, got "
                             f"{kw[name]}")
    if kw["pairs"] is None:
        if kw["from_"] is None or kw["to"] is None:
            raise ValueError("--from/--to: expected the indices of the two latents (or --pairs)")
        for name, v in (("--from", kw["from_"]), ("--to", kw["to"])):
            if not 0 <= v < n:
                raise ValueError(f"{name}: expected an index in [0, {n}) of the {n} latents, "
                                 f"got {v}")
    elif kw["from_"] is not None or kw["to"] is not None:
        raise ValueError("--pairs: expected either --pairs or --from/--to, got both")


def run(generator: Any, latents: np.ndarray, features: str, kw: dict[str, Any]) -> None:
    """Validate the options, map one path or rank the pairs, and print the summary."""
    from .. import paths

    _check(kw, len(latents))
    backend = backend_kwargs(kw["backend"], kw["ray_address"], kw["workers"],
                             kw["gpus_per_task"])
    pot = {"steps": kw["potential_steps"]} if kw["potential_steps"] else None
    common = dict(interpolation=kw["interpolation"], points=kw["points"],
                  samples=kw["samples"], eta=kw["eta"], bundle=kw["bundle"],
                  estimator=kw["estimator"], features=features, seed=kw["seed"],
                  progress=not kw["quiet"], posterior_repeats=kw["repeats"],
                  potential_options=pot, batch_size=kw["batch_size"])
    out = kw["out"]
    if kw["pairs"] is not None:
        idx = read_pairs(kw["pairs"], len(latents))
        table = paths.rank(generator, latents, idx, sort=kw["sort"], out=out, **backend,
                           **common)
        click.echo(f"ranked {len(idx)} paths by {kw['sort']}: -> {out}/ranking.csv")
        for row in table.rows[:5]:
            click.echo(f"  {row['rank']:>3}. {row['i']} -> {row['j']}: Fisher length "
                       f"{row['fisher_length']:.3g}, {row['jumps']} jumps")
        return
    res = paths.build(generator, latents[kw["from_"]], latents[kw["to"]], out=out,
                      force=kw["force"], backend=backend if kw["backend"] == "ray" else None,
                      **common)
    where = ", ".join(f"{p:.3f}" for p in res.jump_positions) or "none"
    click.echo(f"path {kw['from_']} -> {kw['to']}: {res.s.size} points, Fisher length "
               f"{res.fisher_length:.4g}, jumps at s = {where} (threshold {res.threshold:.3g}) "
               f"-> {out}/path.npz")
    click.echo(f"report: {out}/report/index.html")


@path.command(epilog=_EPILOG)
@click.option("--generator", "generator", required=True, metavar="MODULE:CALLABLE",
              help="Your generator: a callable / nn.Module / class (instantiated) f(z) -> x, or "
                   "an object with generate(z, eta, seeds).")
@click.option("--latents", "latents", required=True, type=click.Path(dir_okay=False),
              help="Latent vectors (N, D), .npy or .pt.")
@click.option("--features", default="pixels", show_default=True,
              help="Kernel features: pixels, classifier (8x8 digits) or clip:PATH.")
@_options
def custom(generator: str, latents: str, features: str, **kw: Any) -> None:
    """Your own generator (e.g. a VAE decoder) between two of your latents."""
    from .latent_cmd import load_latents

    run(generator, load_latents(latents), features, kw)


@path.command(epilog=_EPILOG)
@click.option("--latents", "latents", type=click.Path(dir_okay=False), default=None,
              help="Latents (N, 64) [default: the fixed bank latentatlas.planes.digits_latents()]."
              )
@click.option("--features", default="classifier", show_default=True,
              help="Kernel features: classifier, pixels or clip:PATH.")
@_options
def digits(latents: str | None, features: str, **kw: Any) -> None:
    """The embedded digits flow-matching generator (trained once, then cached)."""
    from .. import planes
    from ..generators import Digits
    from .latent_cmd import load_latents

    bank = load_latents(latents) if latents else planes.digits_latents()
    gen = Digits.pretrained(progress=not kw["quiet"])
    run(gen, bank, features, kw)


@path.command(name="diffusers", epilog=_EPILOG)
@diffusers_options
@click.option("--latents", "latents", type=click.Path(dir_okay=False), default=None,
              help="Initial latents (N, C*h*w) [default: 1000 N(0, I) draws with --seed].")
@click.option("--features", default="pixels", show_default=True,
              help="Kernel features: pixels or clip:PATH.")
@_options
def diffusers_cmd(model: str, prompt: str, negative_prompt: str, ddim_steps: int,
                  guidance: float, image_size: int | None, dtype: str | None,
                  device: str | None, latents: str | None, features: str, **kw: Any) -> None:
    """A diffusers text-to-image pipeline (DDIM, classifier-free guidance) between two initial
    latents (slerp by default, as for Gaussian latents)."""
    from .latent_cmd import load_latents

    gen = make_diffusers(model, prompt, negative_prompt, ddim_steps, guidance, image_size, dtype,
                         device, kw["batch_size"])
    if latents is not None:
        bank = load_latents(latents)
        if bank.shape[1] != gen.latent_dim:
            raise ValueError(f"--latents: expected vectors of length {gen.latent_dim}, got "
                             f"{bank.shape[1]}")
    else:
        bank = np.random.default_rng(kw["seed"]).standard_normal((1000, gen.latent_dim))
    run(gen, bank, features, kw)


logging.getLogger(__name__).addHandler(logging.NullHandler())
