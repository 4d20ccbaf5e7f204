"""CLIP image embeddings (the paper's feature space), from a local model via transformers.

No download ever happens: the model is read with ``local_files_only=True`` from a folder written by
``CLIPModel.save_pretrained`` (or passed in as a ``CLIPModel`` object).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

__all__ = ["CLIP"]

_MEAN = (0.48145466, 0.4578275, 0.40821073)
_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIP(nn.Module):
    """E(x) = the L2-normalised CLIP image embedding of x.

    Args:
        path_or_model: a local folder with a saved ``CLIPModel`` (``config.json`` + weights), or a
            ``transformers.CLIPModel`` instance.
        normalize: L2-normalise the embeddings (CLIP's cosine geometry).

    Input images: (B, H, W) greyscale or (B, 3, H, W) RGB floats in [0, 1]; they are resized to the
    model's image size and normalised with CLIP's channel statistics.
    """

    def __init__(self, path_or_model: str | os.PathLike | nn.Module, normalize: bool = True):
        super().__init__()
        try:
            from transformers import CLIPModel
        except ImportError:
            raise ImportError(
                "CLIP features need the 'transformers' package: pip install transformers"
            ) from None
        if isinstance(path_or_model, nn.Module):
            model = path_or_model
        else:
            path = os.fspath(path_or_model)
            if not os.path.isfile(os.path.join(path, "config.json")):
                raise ValueError(
                    f"path_or_model: expected a local folder with a saved CLIP model (config.json and "
                    f"weights, e.g. from CLIPModel.save_pretrained), got {path!r}; latentatlas never "
                    "downloads weights"
                )
            model = CLIPModel.from_pretrained(path, local_files_only=True)
        self.model = model.eval()
        self.normalize = normalize
        self.image_size = int(model.config.vision_config.image_size)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, x: Tensor) -> Tensor:
        """(B, H, W) or (B, 3, H, W) in [0, 1] -> (B, 3, S, S) normalised."""
        x = torch.as_tensor(x).to(self.mean)
        if x.dim() == 3:
            x = x[:, None].expand(-1, 3, -1, -1)
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"x: expected images (B, H, W) or (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = nn.functional.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        return (x - self.mean) / self.std

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """x: images -> (B, projection_dim) embeddings."""
        out = self.model.get_image_features(pixel_values=self.preprocess(x))
        emb = out if isinstance(out, Tensor) else out.pooler_output
        return nn.functional.normalize(emb, dim=-1) if self.normalize else emb
