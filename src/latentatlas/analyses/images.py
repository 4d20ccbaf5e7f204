"""Stage ``images``: the image at every grid point of a latent plane, its class and its embedding.

Outputs: ``images.npy`` (G0, G1, *shape) (the first sample at each point), ``labels.npy``
(G0, G1) int64 (the majority class of the point's samples: the phase map, stored again as
``labels`` in ``atlas.npz``) and ``embeddings.npy`` (G0, G1, F) (the mean feature embedding of the
point's samples, for the feature metric). Runs before the posterior, on the sampling stage's
samples: no image is generated twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .._util import save_npy
from ..atlas.stages import AnalysisStage, Context
from ..features.factory import class_labels, embed, make_features, make_labeler

__all__ = ["ImagesStage"]


class ImagesStage(AnalysisStage):
    """Stage ``images`` (see the module docstring). Options: ``features`` (a feature name, see
    :func:`~latentatlas.features.factory.make_features`), ``labeler`` (``"kmeans"``,
    ``"classifier"`` or ``"module:callable"``)."""

    name = "images"
    outputs = ("images.npy", "labels.npy", "embeddings.npy")
    before_atlas = True
    provides_labels = True

    @classmethod
    def defaults(cls, source: Any, source_defaults: Mapping[str, Any]) -> dict[str, Any]:
        init = dict(source_defaults.get("posterior", {}).get("init", {}))
        return {"features": init.get("features", "pixels"), "labeler": "kmeans"}

    def tools(self, ctx: Context, images: np.ndarray) -> tuple[Any, Any]:
        """The feature map and the labeler (a k-means labeler is fitted on ``images``
        (N, *shape) with the run seed: the same clusters when the stage is loaded again)."""
        opts = self.options(ctx)
        feats = ctx.objects.get("features") or make_features(opts["features"],
                                                              progress=ctx.progress)
        labeler = ctx.objects.get("labeler") or make_labeler(
            opts["labeler"], feats, torch.as_tensor(images), seed=ctx.config.seed,
            progress=ctx.progress)
        return feats, labeler

    def compute(self, ctx: Context) -> dict[str, Any]:
        samples = np.asarray(ctx.result("sample"))  # (P, S, *shape)
        p, s = samples.shape[:2]
        g = ctx.grid_shape
        first = samples[:, 0]
        feats, labeler = self.tools(ctx, first)
        flat = samples.reshape(p * s, *samples.shape[2:])
        per_sample = class_labels(labeler, flat).reshape(p, s)
        labels = np.array([np.bincount(row).argmax() for row in per_sample], dtype=np.int64)
        emb = embed(feats, torch.as_tensor(flat)).reshape(p, s, -1).mean(1)
        out = {"images": first.reshape(*g, *first.shape[1:]), "labels": labels.reshape(g),
               "embeddings": emb.reshape(*g, -1), "features": feats, "labeler": labeler}
        if ctx.run is not None:
            for key in ("images", "labels", "embeddings"):
                save_npy(ctx.file(f"{key}.npy"), out[key])
        return out

    def load(self, ctx: Context) -> dict[str, Any]:
        out = {key: np.load(ctx.file(f"{key}.npy"), allow_pickle=False)
               for key in ("images", "labels", "embeddings")}
        images = out["images"].reshape(-1, *out["images"].shape[2:])
        out["features"], out["labeler"] = self.tools(ctx, images)
        return out
