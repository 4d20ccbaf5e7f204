"""Geometry of a parameter plane: convex potential, Fisher metric, geodesics, boundaries.

- :mod:`.potential`: :class:`Potential` (input-convex network), :func:`fit_potential` (Bregman /
  Jensen–Shannon fit of log Z to gridded posteriors), :func:`model_posterior`.
- :mod:`.coordinates`: :class:`CoordinatePotential` (``Phi(u(t))``, metric ``J^T Hess Phi J``),
  :class:`LearnedCoordinates` (learned Hessian coordinates), :func:`coordinate_potential`.
- :mod:`.metric`: :func:`metric`, :func:`change_coordinates`, :func:`volume_element`,
  :func:`scalar_curvature`, :func:`grid_metric_fn`.
- :mod:`.geodesics`: :func:`geodesic`, :func:`path_length`, :func:`chord_deviation`.
- :mod:`.paths`: :func:`path_analysis` (jumps of the posterior mean along a segment).
- :mod:`.boundaries`: :func:`ridges`, :func:`phases`, :func:`box_counting_dimension`.
- :mod:`.baselines`: :func:`inverse_covariance_metric`, :class:`MLPPotential`,
  :func:`fit_mlp_potential`.
"""

from __future__ import annotations

# Public name -> submodule that defines it (imported on first use).
from .._util import lazy_getattr

_LAZY = {
    "Potential": "potential",
    "PotentialBase": "potential",
    "fit_potential": "potential",
    "model_posterior": "potential",
    "bregman_log_posterior": "potential",
    "grid_points": "potential",
    "smooth": "potential",
    "smoothing_matrix": "potential",
    "js_divergence": "potential",
    "posterior_moments": "potential",
    "CoordinatePotential": "coordinates",
    "LearnedCoordinates": "coordinates",
    "coordinate_potential": "coordinates",
    "metric": "metric",
    "change_coordinates": "metric",
    "volume_element": "metric",
    "scalar_curvature": "metric",
    "grid_metric_fn": "metric",
    "Geodesic": "geodesics",
    "geodesic": "geodesics",
    "path_length": "geodesics",
    "chord_deviation": "geodesics",
    "PathAnalysis": "paths",
    "path_analysis": "paths",
    "flag_jumps": "paths",
    "ridges": "boundaries",
    "phases": "boundaries",
    "box_counting_dimension": "boundaries",
    "inverse_covariance_metric": "baselines",
    "MLPPotential": "baselines",
    "fit_mlp_potential": "baselines",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)
