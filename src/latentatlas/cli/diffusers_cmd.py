"""``latentatlas atlas diffusers``: the latent plane of a local diffusers pipeline (Stable Diffusion).

The plane runs through three initial DDIM latents of :class:`~latentatlas.generators.Diffusers`
(renormalised to the Gaussian norm, as Lobashev et al. do for SD 1.5); the rest (labels, kernel
posterior on --features, potential, metric, analyses, report) is shared with ``atlas digits`` /
``atlas custom`` (:mod:`latentatlas.cli.latent_cmd`).
"""

from __future__ import annotations

from typing import Any

import click
import numpy as np

from .atlas_cmd import atlas
from .common import diffusers_options, make_diffusers

try:
    from .latent_cmd import _EPILOG, _check, _options, _pick, _run, load_latents
except ModuleNotFoundError as err:  # the latent-plane commands are not there: no command either
    if err.name != f"{__package__}.latent_cmd":
        raise
    raise ModuleNotFoundError(str(err), name=__name__) from None


@atlas.command(name="diffusers", epilog=_EPILOG)
@diffusers_options
@click.option("--batch-size", "batch_size", type=int, default=8, show_default=True,
              help="Images per UNet call.")
@click.option("--latents", "latents", type=click.Path(dir_okay=False), default=None,
              help="Initial latents (N, C*h*w) .npy/.pt to pick the anchors from "
                   "[default: N(0, I) with --seed].")
@click.option("--features", default="pixels", show_default=True,
              help="Kernel features: pixels or clip:PATH (a local CLIP model, as in the paper).")
@_options
def diffusers_cmd(model: str, prompt: str, negative_prompt: str, ddim_steps: int,
                  guidance: float, image_size: int | None, dtype: str | None, device: str | None,
                  batch_size: int, latents: str | None, features: str, **kw: Any) -> None:
    """A diffusers text-to-image pipeline (DDIM, classifier-free guidance) on a latent plane.

    \b
    Example (Stable Diffusion 1.5 at 128 px, a 64 x 64 grid, CLIP features):
      latentatlas atlas diffusers --model ~/models/sd15 --prompt "a photo of a cat" \\
          --image-size 128 --resolution 64 --features clip:~/models/clip-vit-b32 --out runs/sd
    """
    _check(kw)
    gen = make_diffusers(model, prompt, negative_prompt, ddim_steps, guidance, image_size, dtype,
                         device, batch_size)
    if latents is not None:
        bank = load_latents(latents)
        if bank.shape[1] != gen.latent_dim:
            raise ValueError(f"--latents: expected vectors of length {gen.latent_dim} (latents "
                             f"{gen.latent_shape}), got {bank.shape[1]}")
        anchors: Any = _pick(bank, kw["anchors"], kw["seed"])
    else:
        if kw["anchors"]:
            raise ValueError("--anchors: index a --latents file; without one use --seed")
        anchors = np.random.default_rng(kw["seed"]).standard_normal((3, gen.latent_dim))
    _run(gen, anchors, features, "kmeans", kw)
