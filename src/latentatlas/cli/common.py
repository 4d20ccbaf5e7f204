"""The root command group and option helpers shared by the subcommands."""

from __future__ import annotations

from typing import Any

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="latentatlas")
def main() -> None:
    """latentatlas: maps of the geometry of a generative model's parameter or latent space.

    \b
    Typical use:
      latentatlas atlas ising --out runs/ising      # sample -> posterior -> metric -> report
      latentatlas flows train --data two-moons --model nsf --out runs/nsf
      latentatlas sample ising --L 16 --grid 64 --samples 16 --seed 0 --out runs/store
      latentatlas report runs/ising                 # rebuild the report of a run
    """


BACKEND_OPTIONS = [
    click.option("--backend", type=click.Choice(["local", "ray"]), default="local",
                 show_default=True,
                 help="Compute sample chunks in this process or as Ray tasks (pip install ray); "
                      "the store is identical."),
    click.option("--ray-address", "ray_address", default=None,
                 help="Ray cluster address [default: $RAY_ADDRESS, else a local instance]."),
    click.option("--workers", type=int, default=None,
                 help="Ray: chunks in flight (CPUs of a local instance)."),
    click.option("--gpus-per-task", "gpus_per_task", type=float, default=0.0,
                 show_default=True, help="Ray: GPUs requested by each chunk task."),
]
"""Options of the commands that fill a sample store (``sample``, ``atlas``)."""


def backend_kwargs(backend: str, ray_address: str | None, workers: int | None,
                   gpus_per_task: float) -> dict[str, Any]:
    """Validate the backend options; keyword arguments of ``la.distributed.generate``."""
    if workers is not None and workers <= 0:
        raise ValueError(f"--workers: expected a positive int, got {workers}")
    if gpus_per_task < 0:
        raise ValueError(f"--gpus-per-task: expected a number >= 0, got {gpus_per_task}")
    return {"backend": backend, "address": ray_address, "workers": workers,
            "gpus_per_task": gpus_per_task}


class ResolutionType(click.ParamType):
    """``G`` (a G x G grid) or ``G0xG1``."""

    name = "G|G0xG1"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | tuple[int, int]:
        if isinstance(value, int | tuple):
            return value
        parts = str(value).lower().replace(",", "x").split("x")
        try:
            res = tuple(int(p) for p in parts)
        except ValueError:
            self.fail(f"expected G or G0xG1 (ints), got {value!r}", param, ctx)
        if len(res) not in (1, 2):
            self.fail(f"expected G or G0xG1 (ints), got {value!r}", param, ctx)
        return res[0] if len(res) == 1 else (res[0], res[1])


RESOLUTION = ResolutionType()


DIFFUSERS_OPTIONS = [
    click.option("--model", "model", required=True, type=click.Path(file_okay=False),
                 help="Local diffusers pipeline folder (model_index.json, unet/, vae/, "
                      "text_encoder/, tokenizer/, scheduler/); never downloaded."),
    click.option("--prompt", required=True, help="Text prompt."),
    click.option("--negative-prompt", "negative_prompt", default="", help="Negative prompt."),
    click.option("--ddim-steps", "ddim_steps", type=int, default=50, show_default=True,
                 help="DDIM steps per image."),
    click.option("--guidance", type=float, default=5.0, show_default=True,
                 help="Classifier-free guidance scale."),
    click.option("--image-size", "image_size", type=int, default=None,
                 help="Image height = width in pixels [default: the pipeline's, 512 for SD 1.5]."),
    click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16", "float64"]),
                 default=None,
                 help="Model dtype [default: float16 on GPU, float32 on CPU]; float64 (CPU) "
                      "resolves Lipschitz steps below float32 rounding (slower)."),
    click.option("--device", default=None, help="Torch device [default: cuda if available]."),
]
"""The generator options of the diffusers commands (``atlas diffusers``, ``path diffusers``)."""


def diffusers_options(func: Any) -> Any:
    """Decorator adding :data:`DIFFUSERS_OPTIONS`."""
    for option in reversed(DIFFUSERS_OPTIONS):
        func = option(func)
    return func


def make_diffusers(model: str, prompt: str, negative_prompt: str, ddim_steps: int,
                   guidance: float, image_size: int | None, dtype: str | None,
                   device: str | None, batch_size: int) -> Any:
    """The :class:`~latentatlas.generators.Diffusers` generator of :data:`DIFFUSERS_OPTIONS`
    (validated: ``--ddim-steps`` and ``--batch-size`` positive)."""
    from ..generators import Diffusers

    if ddim_steps < 1:
        raise ValueError(f"--ddim-steps: expected a positive int, got {ddim_steps}")
    if batch_size < 1:
        raise ValueError(f"--batch-size: expected a positive int, got {batch_size}")
    return Diffusers(model, prompt=prompt, negative_prompt=negative_prompt, steps=ddim_steps,
                     guidance=guidance, dtype=dtype, device=device, height=image_size,
                     width=image_size, batch_size=batch_size)
