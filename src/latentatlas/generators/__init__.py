"""Image generators to be mapped: the embedded digits flow-matching model (and adapters)."""

from __future__ import annotations

from .diffusers import Diffusers
from .digits import Digits

__all__ = ["Diffusers", "Digits"]
