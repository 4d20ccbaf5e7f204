"""The Atlas of a source and the pipeline that builds it.

- :mod:`~latentatlas.atlas.container`: :class:`Atlas`, :func:`load` (``atlas.npz`` + JSON).
- :mod:`~latentatlas.atlas.config`: :class:`RunConfig` (``config.json``), :func:`source_from_config`.
- :mod:`~latentatlas.atlas.runfolder`: :class:`RunFolder` (resume, refusal of another config).
- :mod:`~latentatlas.atlas.compare`: exact references and error measures.
- :mod:`~latentatlas.atlas.estimators`: the posterior estimators by name.
- :mod:`~latentatlas.atlas.stages`: the stages; :mod:`~latentatlas.atlas.pipeline`: :func:`build`.
"""

from __future__ import annotations

from .compare import compare, error_concentration, error_maps, exact_reference, read_accuracy
from .config import FORMAT, RunConfig, jsonable, source_from_config
from .container import ATLAS_KEYS, OPTIONAL_KEYS, RIDGE_C, Atlas, load, volume_element
from .estimators import ESTIMATORS, Estimator
from .pipeline import build, execute, stages_for
from .runfolder import RunFolder
from .stages import ANALYSES, AnalysisStage, Context, Stage, evaluate_potential, register_analysis

__all__ = [
    "ANALYSES",
    "ATLAS_KEYS",
    "ESTIMATORS",
    "FORMAT",
    "OPTIONAL_KEYS",
    "RIDGE_C",
    "AnalysisStage",
    "Atlas",
    "Context",
    "Estimator",
    "RunConfig",
    "RunFolder",
    "Stage",
    "build",
    "compare",
    "error_concentration",
    "error_maps",
    "evaluate_potential",
    "exact_reference",
    "execute",
    "jsonable",
    "load",
    "read_accuracy",
    "register_analysis",
    "source_from_config",
    "stages_for",
    "volume_element",
]
