"""Normalizing flows: coupling, autoregressive, continuous, flow matching (Bishop & Bishop ch. 18).

All flows share the :class:`Flow` interface: ``log_prob(x, context)``, ``sample(n, context)``,
``sample_and_log_prob``, ``forward(x, context) -> (z, logdet)``, ``inverse(z, context)``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .core import ComposedTransform, Flow, Transform
from .distributions import StandardNormal

# Public name -> submodule that defines it (imported on first use).
_LAZY = {
    "MLP": "nets",
    "MADE": "nets",
    "AffineCoupling": "coupling",
    "SplineCoupling": "coupling",
    "RealNVP": "coupling",
    "NSF": "coupling",
    "rational_quadratic_spline": "splines",
    "MaskedAutoregressive": "autoregressive",
    "MAF": "autoregressive",
    "IAF": "autoregressive",
    "InverseTransform": "autoregressive",
    "ActNorm": "layers",
    "Permutation": "layers",
    "LULinear": "layers",
    "fit": "training",
    "train": "training",
    "NeuralODE": "neural_ode",
    "CNF": "continuous",
    "ContinuousFlow": "continuous",
    "ContinuousTransform": "continuous",
    "VectorField": "continuous",
    "ot_pairing": "matching",
    "FlowMatching": "matching",
}

__all__ = ["ComposedTransform", "Flow", "StandardNormal", "Transform", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'latentatlas.flows' has no attribute {name!r}")
