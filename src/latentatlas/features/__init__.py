"""Feature embeddings E(x) for kernel posteriors and phase labels.

- :class:`Classifier`: a small CNN trained on scikit-learn's bundled 8x8 digits (the embedded
  default); its penultimate layer is the embedding, its logits label phases.
- :class:`Pixels`: the flattened pixels.
- :class:`CLIP`: image embeddings of a local CLIP model (transformers), when installed.
"""

from __future__ import annotations

from .classifier import Classifier, digits_dataset
from .clip import CLIP
from .pixels import Pixels

__all__ = ["CLIP", "Classifier", "Pixels", "digits_dataset"]
