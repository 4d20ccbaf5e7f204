"""Adapter: any diffusers UNet pipeline (Stable Diffusion 1.x/2.x style) as a latent-plane generator.

:class:`Diffusers` turns a text-to-image pipeline into the generator protocol of
:class:`~latentatlas.sources.LatentPlane`: ``generate(z (B, D), eta, seeds) -> (B, 3, H, W)``.
The plane's latent is the initial DDIM latent ``x_T ~ N(0, I)`` flattened, ``D = C * h * w``
(``C`` = the UNet's input channels, ``h = H / f`` with ``f`` the VAE's downsampling factor: SD 1.5 at
128 x 128 pixels has ``D = 4 * 16 * 16 = 1024``). Sampling is DDIM (Song et al. 2021) with
classifier-free guidance ``eps = eps_u + guidance (eps_c - eps_u)``, the prompt encoded once; the
final latent is decoded by the VAE and mapped from [-1, 1] to [0, 1]. ``eta = 0`` is deterministic;
``eta > 0`` adds DDIM's stochastic term with noise drawn from each sample's own seed, so a sample
does not depend on the batch it is computed in. Pipelines without a VAE (pixel-space, e.g.
``DDIMPipeline``) and without a text encoder (unconditional ``UNet2DModel``) work too.

Weights are read from a local folder only (``local_files_only=True``): latentatlas never downloads.
The ``diffusers`` package is imported on first use (``pip install 'latentatlas[diffusers]'``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..io import Configurable

__all__ = ["Diffusers"]

log = logging.getLogger(__name__)

_INSTALL = "pip install 'latentatlas[diffusers]' (or: pip install diffusers transformers)"
_WEIGHTS = (
    "latentatlas never downloads weights: on a machine with internet run e.g. "
    "`huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir PATH` "
    "(or pipe.save_pretrained(PATH)) and copy that folder here"
)
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
           "float64": torch.float64}


def _require_diffusers() -> None:
    if importlib.util.find_spec("diffusers") is None:
        raise ImportError(f"the Diffusers generator needs the 'diffusers' package: {_INSTALL}")


def _dtype_name(dtype: Any) -> str | None:
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        names = {v: k for k, v in _DTYPES.items()}
        if dtype in names:
            return names[dtype]
    elif isinstance(dtype, str) and dtype.removeprefix("torch.") in _DTYPES:
        return dtype.removeprefix("torch.")
    raise ValueError(f"dtype: expected one of {sorted(_DTYPES)} (or the torch dtype), got {dtype!r}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"pipeline: cannot read {str(path)!r} ({err}); {_WEIGHTS}") from None


def _folder_configs(path: Path) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
    """UNet config, VAE config (or None) and whether a text encoder exists, from a saved pipeline's
    JSON files (no weights are read)."""
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"pipeline: no diffusers pipeline at {str(path)!r} (model_index.json missing); {_WEIGHTS}"
        )
    index = _read_json(path / "model_index.json")
    if "unet" not in index or not (path / "unet" / "config.json").is_file():
        raise ValueError(
            f"pipeline: {str(path)!r} has no UNet (unet/config.json); only UNet pipelines "
            "(Stable Diffusion 1.x/2.x style, or unconditional DDIM/DDPM) are supported"
        )
    unet = _read_json(path / "unet" / "config.json")
    vae = _read_json(path / "vae" / "config.json") if "vae" in index else None
    return unet, vae, "text_encoder" in index


class Diffusers(Configurable):
    """A diffusers UNet pipeline with a DDIM sampler, as a generator for ``LatentPlane``.

    Args:
        pipeline: a local folder written by ``pipe.save_pretrained`` (``model_index.json``, ``unet/``,
            ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``) or a pipeline object (anything
            with ``unet`` and ``scheduler``, and optionally ``vae``, ``text_encoder``, ``tokenizer``
            attributes). Only a folder can be saved with :func:`latentatlas.save` (and thus be put
            in a sample store); it is loaded lazily, on first use, on each process that uses it.
        prompt: the text prompt (must be ``""`` for an unconditional pipeline).
        negative_prompt: the unconditional prompt of classifier-free guidance.
        steps: DDIM steps.
        guidance: classifier-free guidance scale (used when > 1 and the pipeline is conditional).
        eta: DDIM's noise level for calls of :meth:`generate` that do not pass one (a
            ``LatentPlane`` always passes its own).
        dtype: "float32", "float16", "bfloat16" or "float64" (default: float16 on GPU, float32 on
            CPU for a folder; the object's own dtype for a pipeline object).
        device: torch device (default: "cuda" when available, else "cpu").
        height, width: image size in pixels, multiples of the VAE factor (default: the UNet's
            sample size times the VAE factor, 512 for SD 1.5; the paper maps SD 1.5 at 128).
        batch_size: images per UNet call (the classifier-free-guidance batch is twice that).

    Attributes:
        latent_dim: ``C * h * w``.
        latent_shape: ``(C, h, w)``.
        sample_shape: ``(3, H, W)``; images are floats in [0, 1].
    """

    def __init__(
        self,
        pipeline: Any,
        prompt: str = "",
        negative_prompt: str = "",
        steps: int = 50,
        guidance: float = 5.0,
        eta: float = 0.0,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        height: int | None = None,
        width: int | None = None,
        batch_size: int = 8,
    ) -> None:
        for value, name in ((prompt, "prompt"), (negative_prompt, "negative_prompt")):
            if not isinstance(value, str):
                raise ValueError(f"{name}: expected a string, got {type(value).__qualname__}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps: expected a positive int, got {steps!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        if not (isinstance(guidance, int | float) and np.isfinite(guidance)):
            raise ValueError(f"guidance: expected a finite number, got {guidance!r}")
        if not (isinstance(eta, int | float) and eta >= 0):
            raise ValueError(f"eta: expected a non-negative number, got {eta!r}")
        self.prompt, self.negative_prompt = prompt, negative_prompt
        self.steps, self.guidance, self.eta = steps, float(guidance), float(eta)
        self.batch_size = batch_size
        self.dtype_name = _dtype_name(dtype)
        self.device_name = None if device is None else str(torch.device(device))
        # keep the config JSON-able (torch dtypes/devices are not)
        self.config["dtype"], self.config["device"] = self.dtype_name, self.device_name
        _require_diffusers()
        if isinstance(pipeline, str | os.PathLike):
            self.path: str | None = os.fspath(pipeline)
            self.config["pipeline"] = self.path
            self._pipe: Any = None
            unet_cfg, vae_cfg, conditional = _folder_configs(Path(self.path))
        else:
            if not hasattr(pipeline, "unet") or not hasattr(pipeline, "scheduler"):
                raise ValueError(
                    "pipeline: expected a local folder or a diffusers pipeline with `unet` and "
                    f"`scheduler`, got {type(pipeline).__qualname__}"
                )
            self.path, self._pipe = None, pipeline
            unet_cfg = dict(pipeline.unet.config)
            vae = getattr(pipeline, "vae", None)
            vae_cfg = None if vae is None else dict(vae.config)
            conditional = getattr(pipeline, "text_encoder", None) is not None
        if getattr(pipeline, "text_encoder_2", None) is not None:
            raise ValueError("pipeline: SDXL-style pipelines (two text encoders) are not supported")
        self.conditional = conditional
        if not conditional and prompt:
            raise ValueError(f"prompt: the pipeline has no text encoder, so the prompt must be '', "
                             f"got {prompt!r}")
        factor = 2 ** (len(vae_cfg["block_out_channels"]) - 1) if vae_cfg else 1
        size = unet_cfg.get("sample_size", 64)
        size = size if isinstance(size, int) else int(size[0])
        channels = int(unet_cfg.get("in_channels", 4))
        self.vae_factor = factor
        H = size * factor if height is None else height
        W = size * factor if width is None else width
        for value, name in ((H, "height"), (W, "width")):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % factor:
                raise ValueError(f"{name}: expected a positive multiple of {factor} (the VAE's "
                                 f"downsampling factor), got {value!r}")
        self.height, self.width = H, W
        self.latent_shape = (channels, H // factor, W // factor)
        self.latent_dim = int(np.prod(self.latent_shape))
        out_channels = int((vae_cfg or unet_cfg).get("out_channels", 3))
        self.sample_shape = (out_channels, H, W)
        self._state: dict[str, Any] | None = None

    # ------------------------------------------------------------------ lazy state
    def __getstate__(self) -> dict[str, Any]:
        """Pickled (e.g. shipped to Ray workers) without loaded weights when built from a folder;
        each process then loads the folder itself, on its own device."""
        state = dict(self.__dict__)
        state["_state"] = None
        if self.path is not None:
            state["_pipe"] = None
        return state

    @property
    def compute_dtype(self) -> str:
        """Name of the dtype the UNet and VAE run in (it sets the rounding level of the images,
        hence the precision floor of Lipschitz profiles): the ``dtype`` given, else float16 on
        GPU / float32 on CPU for a folder, the object's own dtype for a pipeline object."""
        if self.dtype_name is not None:
            return self.dtype_name
        if self._state is not None:
            return str(_dtype_name(self._state["dtype"]))
        if self.path is None:
            return str(_dtype_name(next(self._pipe.unet.parameters()).dtype))
        return "float16" if self._device().type == "cuda" else "float32"

    def _device(self) -> torch.device:
        if self.device_name is not None:
            return torch.device(self.device_name)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _load(self) -> Any:
        import diffusers

        device = self._device()
        dtype = _DTYPES[self.dtype_name] if self.dtype_name else (
            torch.float16 if device.type == "cuda" else torch.float32
        )
        index = _read_json(Path(self.path) / "model_index.json")
        extra = {"safety_checker": None, "requires_safety_checker": False} if (
            "safety_checker" in index) else {}
        try:
            with warnings.catch_warnings():  # newer diffusers renamed torch_dtype to dtype
                warnings.simplefilter("ignore", FutureWarning)
                pipe = diffusers.DiffusionPipeline.from_pretrained(
                    self.path, local_files_only=True, torch_dtype=dtype, **extra
                )
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(
                f"pipeline: cannot load the diffusers pipeline at {self.path!r} ({first}); {_WEIGHTS}"
            ) from None
        log.info("loaded diffusers pipeline %s (%s) on %s", self.path, type(pipe).__name__, device)
        return pipe

    def _ready(self) -> dict[str, Any]:
        """Components on the device, a private DDIM scheduler, the prompt embeddings (cached)."""
        if self._state is not None:
            return self._state
        from diffusers import DDIMScheduler

        if self._pipe is None:
            self._pipe = self._load()
        pipe = self._pipe
        unet = pipe.unet
        anchor = next(unet.parameters())
        device = torch.device(self.device_name) if self.device_name else (
            anchor.device if self.path is None else self._device()
        )
        dtype = _DTYPES[self.dtype_name] if self.dtype_name else anchor.dtype
        parts = {name: getattr(pipe, name, None) for name in ("unet", "vae", "text_encoder")}
        for module in parts.values():
            if module is not None:
                p = next(module.parameters())
                if p.device != device or p.dtype != dtype:
                    module.to(device=device, dtype=dtype)
                module.eval()
        scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        scheduler.set_timesteps(self.steps, device=device)
        cfg = self.conditional and self.guidance > 1.0 and (
            unet.config.get("time_cond_proj_dim") is None
        )
        embeds = None
        if self.conditional:
            prompts = [self.negative_prompt, self.prompt] if cfg else [self.prompt]
            embeds = self._encode(pipe.tokenizer, pipe.text_encoder, prompts, device)
        self._state = {"unet": unet, "vae": parts["vae"], "scheduler": scheduler, "cfg": cfg,
                       "embeds": embeds, "device": device, "dtype": dtype}
        return self._state

    @staticmethod
    @torch.no_grad()
    def _encode(tokenizer: Any, encoder: Any, prompts: list[str], device: torch.device) -> Tensor:
        """Prompts -> (len(prompts), L, E) hidden states of the text encoder (as diffusers does)."""
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt")
        mask = None
        if getattr(encoder.config, "use_attention_mask", False):
            mask = ids.attention_mask.to(device)
        return encoder(ids.input_ids.to(device), attention_mask=mask)[0]

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self, z: Tensor, eta: float | None = None, seeds: np.ndarray | None = None
    ) -> Tensor:
        """Decode initial latents to images with DDIM.

        Args:
            z: (B, latent_dim) initial latents (any float dtype; cast to the pipeline's dtype).
            eta: DDIM noise level (default: the constructor's); 0 is deterministic.
            seeds: (B,) int seeds of each sample's DDIM noise (required when ``eta > 0``).

        Returns:
            (B, 3, H, W) images in [0, 1], on z's device: float32, or float64 when the pipeline
            runs in float64 (so that differences below float32 rounding survive).
        """
        z = torch.as_tensor(z)
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z: expected latents of shape (B, {self.latent_dim}) (C*h*w for "
                             f"{self.latent_shape}), got {tuple(z.shape)}")
        if not bool(torch.isfinite(z).all()):
            raise ValueError("z: expected finite latents, got NaN/inf entries")
        eta = self.eta if eta is None else float(eta)
        if not eta >= 0:
            raise ValueError(f"eta: expected a non-negative number, got {eta!r}")
        if eta > 0:
            if seeds is None or len(seeds) != len(z):
                raise ValueError(f"seeds: expected {len(z)} seeds for eta > 0, got "
                                 f"{None if seeds is None else len(seeds)}")
            seeds = np.asarray(seeds, dtype=np.int64)
        out = [
            self._run(z[i : i + self.batch_size], eta,
                      None if eta == 0 else seeds[i : i + self.batch_size])
            for i in range(0, len(z), self.batch_size)
        ]
        if not out:
            return torch.zeros(0, *self.sample_shape, device=z.device,
                               dtype=torch.float64 if self.compute_dtype == "float64" else None)
        wide = self.compute_dtype == "float64"
        return torch.cat(out).to(device=z.device, dtype=torch.float64 if wide else torch.float32)

    def _run(self, z: Tensor, eta: float, seeds: np.ndarray | None) -> Tensor:
        s = self._ready()
        unet, scheduler, device, dtype = s["unet"], s["scheduler"], s["device"], s["dtype"]
        b = len(z)
        latents = z.to(device=device, dtype=dtype).reshape(b, *self.latent_shape)
        latents = latents * scheduler.init_noise_sigma
        gens = None if seeds is None else [torch.Generator().manual_seed(int(x)) for x in seeds]
        cond = None
        if s["embeds"] is not None:
            e = s["embeds"].to(dtype)
            cond = e.repeat_interleave(b, dim=0)  # (n_prompts * b, L, E), prompt-major
        for t in scheduler.timesteps:
            inp = torch.cat([latents] * 2) if s["cfg"] else latents
            inp = scheduler.scale_model_input(inp, t)
            if cond is None:
                eps = unet(inp, t).sample
            else:
                eps = unet(inp, t, encoder_hidden_states=cond).sample
            if s["cfg"]:
                uncond, text = eps.chunk(2)
                eps = uncond + self.guidance * (text - uncond)
            noise = None
            if gens is not None:
                noise = torch.stack([torch.randn(self.latent_shape, generator=g) for g in gens])
                noise = noise.to(device=device, dtype=dtype)
            latents = scheduler.step(eps, t, latents, eta=eta, variance_noise=noise).prev_sample
        vae = s["vae"]
        if vae is not None:
            factor = getattr(vae.config, "scaling_factor", 1.0)
            shift = getattr(vae.config, "shift_factor", None) or 0.0
            images = vae.decode(latents / factor + shift).sample
        else:
            images = latents
        images = images if images.dtype == torch.float64 else images.float()
        return (images / 2 + 0.5).clamp(0, 1)

    def __repr__(self) -> str:
        where = self.path if self.path is not None else type(self._pipe).__name__
        return (f"Diffusers({where!r}, prompt={self.prompt!r}, steps={self.steps}, "
                f"guidance={self.guidance}, size={self.height}x{self.width})")
