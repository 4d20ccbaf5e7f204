"""Feature maps and labelers from names, as a run config records them.

- :func:`make_features`: ``"pixels"``, ``"classifier"`` (the embedded digits CNN), ``"clip:PATH"``
  (a local CLIP model) or ``"module:callable"`` (the user's own embedding) -> a callable
  ``E: (B, *shape) -> (B, F)``.
- :func:`make_labeler`: ``"kmeans"`` (k-means of the embeddings, scikit-learn), ``"classifier"``
  (the digits CNN's classes) or ``"module:callable"`` -> an object with ``predict``.
- :func:`embed`, :func:`class_labels`: batched, no-grad evaluation of those.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["KMeansLabeler", "class_labels", "embed", "make_features", "make_labeler"]

_FEATURES = "'pixels', 'classifier', 'clip:PATH' or 'module:callable'"


def _resolve(spec: str, name: str) -> Any:
    try:
        obj = pkgutil.resolve_name(spec)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"{name}: cannot resolve {spec!r} ({err})") from None
    return obj() if isinstance(obj, type) else obj


def make_features(spec: str | nn.Module | Callable[[Tensor], Tensor],
                  progress: bool = True) -> Any:
    """A feature map E from its name; modules and callables pass through.

    Raises:
        ValueError: an unknown name (naming the accepted ones).
    """
    from . import CLIP, Classifier, Pixels

    if not isinstance(spec, str):
        if not callable(spec):
            raise ValueError(f"features: expected {_FEATURES} or a callable, got "
                             f"{type(spec).__qualname__}")
        return spec
    if spec == "classifier":
        return Classifier.pretrained(progress=progress)
    if spec == "pixels":
        return Pixels()
    if spec.startswith("clip:") and len(spec) > 5:
        return CLIP(spec[5:])
    if ":" in spec and not spec.startswith("clip:"):
        return _resolve(spec, "features")
    raise ValueError(f"features: expected {_FEATURES}, got {spec!r}")


def embed(features: Callable[[Tensor], Tensor], images: Any, batch_size: int = 4096
          ) -> np.ndarray:
    """E(images) as float64 numpy (B, F), in batches, in the feature module's dtype."""
    x = torch.as_tensor(images)
    anchor = next(features.parameters(), None) if isinstance(features, nn.Module) else None
    x = x.to(anchor) if anchor is not None else (x if x.is_floating_point() else x.float())
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            e = torch.as_tensor(features(x[i : i + batch_size]))
            out.append(e.reshape(e.shape[0], -1).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


class KMeansLabeler:
    """Classes of images as k-means clusters of their embeddings (scikit-learn's KMeans).

    Used as the class of an image when no classifier exists (a user's generator): the clusters
    are fitted on the embeddings of the plane's grid images (:meth:`fit`).

    Args:
        features: E, (B, *shape) -> (B, F).
        k: number of clusters (at most the number of distinct embeddings).
    """

    def __init__(self, features: Callable[[Tensor], Tensor], k: int = 10) -> None:
        self.features = features
        self.k = int(k)
        self.kmeans_: Any = None

    def fit(self, images: Tensor, seed: int = 0) -> KMeansLabeler:
        """k-means of the embeddings of ``images`` (B, *shape); returns self."""
        from sklearn.cluster import KMeans

        emb = embed(self.features, images)
        k = int(min(self.k, len(np.unique(np.round(emb, 9), axis=0))))
        self.kmeans_ = KMeans(n_clusters=max(k, 1), n_init=4, random_state=seed).fit(emb)
        return self

    @property
    def centroids(self) -> np.ndarray:
        """(C, F) cluster centres."""
        if self.kmeans_ is None:
            raise ValueError("KMeansLabeler: call fit(images) first")
        return self.kmeans_.cluster_centers_

    def predict(self, images: Tensor) -> Tensor:
        """(B, *shape) -> (B,) int64 cluster of each image."""
        if self.kmeans_ is None:
            raise ValueError("KMeansLabeler: call fit(images) first")
        emb = embed(self.features, images)
        return torch.as_tensor(self.kmeans_.predict(emb).astype(np.int64))


def make_labeler(spec: Any, features: Callable[[Tensor], Tensor], images: Tensor,
                 seed: int = 0, progress: bool = True) -> Any:
    """A labeler from its name: ``"kmeans"`` (fitted on ``images``), ``"classifier"`` (the
    embedded digits CNN) or ``"module:callable"``; objects with ``predict`` and callables pass
    through."""
    if not isinstance(spec, str):
        if not (callable(spec) or hasattr(spec, "predict")):
            raise ValueError(f"labeler: expected 'kmeans', 'classifier', 'module:callable' or an "
                             f"object with .predict, got {type(spec).__qualname__}")
        return spec
    if spec == "kmeans":
        return KMeansLabeler(features).fit(images, seed=seed)
    if spec == "classifier":
        from . import Classifier

        return Classifier.pretrained(progress=progress)
    if ":" in spec:
        return _resolve(spec, "labeler")
    raise ValueError(f"labeler: expected 'kmeans', 'classifier' or 'module:callable', got "
                     f"{spec!r}")


def class_labels(labeler: Any, images: Any, batch_size: int = 4096) -> np.ndarray:
    """Class of each image: ``labeler.predict(images)`` (a classifier) or ``labeler(images)``.

    Args:
        labeler: an object with ``predict`` ((B, *shape) -> (B,) ints) or such a callable.
        images: (B, *shape).

    Returns:
        (B,) int64.
    """
    fn = labeler.predict if hasattr(labeler, "predict") else labeler
    if not callable(fn):
        raise ValueError(f"labeler: expected a classifier with .predict or a callable, got "
                         f"{type(labeler).__qualname__}")
    x = torch.as_tensor(images)
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(np.asarray(torch.as_tensor(fn(x[i : i + batch_size])).cpu()).reshape(-1))
    labels = np.concatenate(out) if out else np.zeros(0, np.int64)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labeler: expected integer classes, got dtype {labels.dtype}")
    return labels.astype(np.int64)
