"""A small CNN trained on scikit-learn's bundled 8x8 digits: the embedded feature extractor.

Image convention across the package for digits: float images of shape (8, 8) with values in [0, 1]
(scikit-learn's 0..16 grey levels divided by 16).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor, nn

from ..cache import cached, data_hash
from ..io import Configurable
from ..training import Strategy, train

__all__ = ["Classifier", "digits_dataset"]

log = logging.getLogger(__name__)

_RECIPE = {"steps": 1500, "batch_size": 128, "lr": 2e-3, "noise": 0.05, "seed": 0, "version": 1}


def digits_dataset(split: str = "all", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as (images (N, 8, 8) float32 in [0, 1], labels (N,) int64).

    Args:
        split: "all", "train" (80 %) or "test" (20 %), a stratified split fixed by ``seed``.
        seed: seed of the split.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    if split == "all":
        return images, labels
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'all', 'train' or 'test', got {split!r}")
    xtr, xte, ytr, yte = train_test_split(
        images, labels, test_size=0.2, random_state=seed, stratify=labels
    )
    return (xtr, ytr) if split == "train" else (xte, yte)


def _as_images(x: Tensor) -> Tensor:
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.float()
    if x.dim() == 2 and x.shape[-1] == 64:
        x = x.reshape(-1, 8, 8)
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 3 or tuple(x.shape[-2:]) != (8, 8):
        raise ValueError(
            f"x: expected digit images of shape (B, 8, 8), (B, 1, 8, 8) or (B, 64), got "
            f"{tuple(x.shape)}"
        )
    return x[:, None]


class Classifier(Configurable, nn.Module):
    """A CNN over 8x8 digit images; ``forward`` returns the penultimate-layer embedding.

    Use :meth:`pretrained` for the trained, cached default (about 20 s of CPU on first use).

    Args:
        channels: conv channels of the two 3x3 conv blocks.
        embed: embedding width (penultimate layer).
        classes: number of classes.
    """

    def __init__(self, channels: tuple[int, int] = (32, 64), embed: int = 128, classes: int = 10):
        super().__init__()
        c1, c2 = channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.GELU(),
            nn.Conv2d(c1, c1, 3, padding=1), nn.GELU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.GELU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * 4, embed), nn.GELU(),
        )
        self.head = nn.Linear(embed, classes)

    def forward(self, x: Tensor) -> Tensor:
        """Embedding. x: (B, 8, 8) in [0, 1] -> (B, embed)."""
        x = _as_images(x).to(self.head.weight)
        return self.body(x)

    def logits(self, x: Tensor) -> Tensor:
        """x: (B, 8, 8) -> (B, classes)."""
        return self.head(self.forward(x))

    @torch.no_grad()
    def proba(self, x: Tensor) -> Tensor:
        """Class probabilities. x: (B, 8, 8) -> (B, classes)."""
        return torch.softmax(self.logits(x), dim=-1)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Most likely class. x: (B, 8, 8) -> (B,) int64."""
        return self.logits(x).argmax(-1)

    @classmethod
    def train_new(cls, progress: bool = True, steps: int | None = None, seed: int = 0,
                  strategy: Strategy | None = None) -> Classifier:
        """Train a classifier on the training split of the digits (test split held out).

        ``strategy``: ``la.training.SingleProcess()`` (default) or ``la.training.DataParallel()``
        (DDP, the recipe's batch is the global batch; each process draws the augmentation of its
        share, so the run is data-parallel but not bit-equivalent to one process). The training
        ``History`` is in the returned model's ``history_``."""
        recipe = dict(_RECIPE, seed=seed) if steps is None else dict(_RECIPE, steps=steps, seed=seed)
        torch.manual_seed(recipe["seed"])
        model = cls()
        images, labels = digits_dataset("train")
        x = torch.from_numpy(images)
        y = torch.from_numpy(labels)
        gen = torch.Generator().manual_seed(recipe["seed"])

        def loss_fn(xb: Tensor, yb: Tensor) -> Tensor:
            if model.training:  # light augmentation: pixel noise and one-pixel shifts
                xb = xb + recipe["noise"] * torch.randn(xb.shape, generator=gen)
                shift = torch.randint(-1, 2, (2,), generator=gen).tolist()
                xb = torch.roll(xb, shifts=shift, dims=(1, 2))
            return nn.functional.cross_entropy(model.logits(xb), yb)

        model.history_ = train(
            model, loss_fn, (x, y), names=("images", "labels"), steps=recipe["steps"],
            batch_size=recipe["batch_size"], lr=recipe["lr"], val_fraction=0.1, val_every=200,
            patience=None, progress=progress, seed=recipe["seed"], desc="digits classifier",
            strategy=strategy,
        )
        return model

    @classmethod
    def pretrained(cls, progress: bool = True, refresh: bool = False) -> Classifier:
        """The embedded default: trained once on the digits, then loaded from the user's cache."""
        images, labels = digits_dataset("all")
        key = {"model": "Classifier", "config": cls().config, "recipe": _RECIPE,
               "data": data_hash(images, labels)}
        model = cached("digits-classifier", key, lambda: cls.train_new(progress), refresh=refresh)
        return model.eval()

    @torch.no_grad()
    def accuracy(self, images: np.ndarray | Tensor, labels: np.ndarray | Tensor) -> float:
        """Fraction of correctly classified images."""
        pred = self.predict(torch.as_tensor(images))
        return float((pred.cpu() == torch.as_tensor(labels).cpu()).float().mean())
