"""The run config: one dataclass that says everything needed to rerun an atlas.

``config.json`` of a run folder is :meth:`RunConfig.to_dict`; :meth:`RunConfig.from_dict` reads it
back (``from_dict(c.to_dict()) == c``). The source is recorded by class, JSON config and a
fingerprint of its tensors and weights (:meth:`latentatlas.sources.Source.fingerprint`), so a
:class:`~latentatlas.sources.LatentPlane` is recorded with its generator's config and a hash of its
weights; the tensors themselves are kept beside the config in ``source.safetensors``.

Defaults come from the source (:meth:`~latentatlas.sources.Source.atlas_defaults`): the pipeline
never branches on what the source is.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._util import check_choice, check_int, check_seed, resolution_pair

__all__ = ["FORMAT", "RunConfig", "estimators_for", "jsonable", "source_from_config"]

FORMAT = "latentatlas-atlas/2"
AVERAGES = ("log", "probability")


def jsonable(value: Any) -> Any:
    """A JSON-friendly copy (tuples -> lists, numpy scalars/arrays -> Python).

    Raises:
        ValueError: for values JSON cannot hold (naming the type).
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"config: cannot record a {type(value).__qualname__} in config.json")


def merge(defaults: Mapping[str, Any], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """``defaults`` updated by ``given``, one level deep for nested dicts (JSON copies)."""
    out = jsonable(defaults)
    for key, value in dict(given or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **jsonable(value)}
        else:
            out[key] = jsonable(value)
    return out


def _record_source(source: Any) -> dict[str, Any]:
    """The source's entry of the config. A source that cannot be recorded (e.g. a plane whose
    generator is a lambda) is entered with ``fingerprint`` None and the reason: it can be used in
    memory, but a run folder refuses it (a rerun could not know it is the same source)."""
    cls = type(source)
    name = f"{cls.__module__}.{cls.__qualname__}"
    try:
        fingerprint, config = source.fingerprint()
    except ValueError as err:
        return {"class": name, "config": None, "fingerprint": None,
                "unrecorded": f"the {cls.__name__} cannot be recorded in config.json ({err}); for "
                              "a generator pass a 'module:callable' name or a module-level "
                              "function"}
    return {"class": name, "config": jsonable(config), "fingerprint": fingerprint}


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines an atlas run (two runs with equal configs give equal atlases).

    Attributes:
        source: ``{"class", "config", "fingerprint"}`` of the source.
        names: (d,) parameter names (d = 2 for an atlas, 1 for a path); bounds: ((lo0, hi0),
            ...) one pair per parameter; resolution: (G0, G1), or (P,) for a path.
        samples_per_point: S, samples drawn at each grid point.
        bundle: K, samples per bundle of the posterior estimator.
        estimator: a name of :data:`latentatlas.atlas.estimators.ESTIMATORS` (2-D) or of
            :data:`latentatlas.posterior.line.LINE_ESTIMATORS` (1-D paths).
        seed: run seed (sampling, training, bundles).
        posterior_options: ``{"init": {...}, "fit": {...}}`` of the estimator.
        potential_options: keyword arguments of :func:`latentatlas.geometry.fit_potential`, and
            ``coordinates`` (2-D atlases): the model fitted, ``"given"`` (Phi(t), metric Hess Phi),
            ``"natural"`` (Phi(eta(t)) with the source's natural map, metric J^T Hess Phi J) or
            ``"learned"`` (learned Hessian coordinates; ``coordinate_options`` are the keyword
            arguments of :class:`~latentatlas.geometry.coordinates.LearnedCoordinates`). Default:
            :func:`default_coordinates`.
        posterior_repeats: R, bundles per grid point whose posteriors are combined.
        sigma: width (grid cells) of the posterior targets, used again by the potential fit.
        posterior_average: ``"log"`` (geometric mean; the Bregman model) or ``"probability"``.
        analyses: ``{stage name: options}`` of the analysis stages that run.
    """

    source: dict[str, Any]
    names: tuple[str, ...]
    bounds: tuple[tuple[float, float], ...]
    resolution: tuple[int, ...]
    samples_per_point: int
    bundle: int
    estimator: str
    seed: int
    posterior_options: dict[str, Any]
    potential_options: dict[str, Any]
    posterior_repeats: int
    sigma: float
    posterior_average: str = "log"
    analyses: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    version: str = ""

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def make(
        cls,
        source: Any,
        bounds: Sequence[Sequence[float]] | None = None,
        resolution: int | Sequence[int] | None = None,
        samples_per_point: int | None = None,
        bundle: int | None = None,
        estimator: str | None = None,
        seed: int = 0,
        posterior_options: Mapping[str, Any] | None = None,
        potential_options: Mapping[str, Any] | None = None,
        posterior_repeats: int | None = None,
        sigma: float | None = None,
        posterior_average: str = "log",
        analyses: Mapping[str, Any] | None = None,
    ) -> RunConfig:
        """Validate the arguments of :func:`latentatlas.atlas.build` against the source and fill
        in the source's defaults.

        Raises:
            ValueError: a source with other than 1 or 2 parameters, bounds outside its domain,
                resolution < 4, a bundle larger than the samples per point, an unknown estimator
                or analysis, a bad seed.
        """
        from ..sources import Source, check_bounds
        from .stages import ANALYSES

        if not isinstance(source, Source):
            raise ValueError(f"source: expected a latentatlas Source, got "
                             f"{type(source).__qualname__}")
        if len(source.names) not in (1, 2):
            raise ValueError(f"source: an atlas needs 2 parameters (a path 1), "
                             f"{type(source).__name__} has {len(source.names)} "
                             f"{tuple(source.names)}")
        ESTIMATORS = estimators_for(len(source.names))
        d = source.atlas_defaults()
        bounds = check_bounds(d["bounds"] if bounds is None else bounds, source.domain,
                              source.names)
        res = resolution_pair(d["resolution"] if resolution is None else resolution,
                              dims=len(source.names))
        samples = check_int(d["samples_per_point"] if samples_per_point is None
                            else samples_per_point, "samples_per_point", minimum=1)
        bundle = check_int(d["bundle"] if bundle is None else bundle, "bundle", minimum=1)
        estimator = check_choice(d.get("estimator", "grid") if estimator is None else estimator,
                                 "estimator", tuple(ESTIMATORS))
        if bundle > samples:
            raise ValueError(f"bundle: expected at most samples_per_point={samples} samples per "
                             f"bundle (the samples available at each point), got {bundle}")
        ESTIMATORS[estimator].check(samples, bundle)
        seed = check_seed(seed)
        repeats = check_int(d.get("posterior_repeats", 16) if posterior_repeats is None
                            else posterior_repeats, "posterior_repeats", minimum=1)
        sigma = d.get("sigma", 1.0) if sigma is None else sigma
        if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not (
                math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma: expected a non-negative target width in grid cells, got "
                             f"{sigma!r}")
        check_choice(posterior_average, "posterior_average", AVERAGES)
        if analyses is None:
            analyses = {name: {} for name in source.analyses}
        analyses = dict(analyses)
        for name in analyses:
            check_choice(name, "analyses", tuple(ANALYSES))
        defaults_by_stage = {name: ANALYSES[name].defaults(source, d) for name in analyses}
        analyses = {name: merge(defaults_by_stage[name], analyses[name]) for name in analyses}
        from .. import __version__

        return cls(
            source=_record_source(source), names=tuple(source.names),
            bounds=tuple((float(lo), float(hi)) for lo, hi in bounds), resolution=res,
            samples_per_point=samples, bundle=bundle, estimator=estimator, seed=seed,
            # the source's posterior options were measured for its default estimator, and
            # ``posterior_for`` holds those measured for others
            posterior_options=merge(d.get("posterior", {}) if estimator == d.get(
                "estimator", "grid") else d.get("posterior_for", {}).get(estimator, {}),
                posterior_options),
            potential_options=_potential_options(source, merge(d.get("potential", {}),
                                                               potential_options)),
            posterior_repeats=repeats, sigma=float(sigma), posterior_average=posterior_average,
            analyses=analyses, version=__version__)

    # -- JSON -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``config.json``)."""
        return jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Read :meth:`to_dict` back.

        Raises:
            ValueError: another format, or missing/unknown keys.
        """
        data = dict(data)
        if data.get("format") != FORMAT:
            raise ValueError(f"config: expected format {FORMAT!r}, got {data.get('format')!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"config: unknown keys {unknown}")
        data["names"] = tuple(data["names"])
        data["bounds"] = tuple(tuple(float(v) for v in b) for b in data["bounds"])
        data["resolution"] = tuple(int(r) for r in data["resolution"])
        try:
            return cls(**data)
        except TypeError as err:
            raise ValueError(f"config: {err}") from None

    def differences(self, other: RunConfig | Mapping[str, Any]) -> list[str]:
        """Keys whose values differ from ``other`` (the package version is ignored)."""
        mine = self.to_dict()
        theirs = other.to_dict() if isinstance(other, RunConfig) else jsonable(other)
        keys = (set(mine) | set(theirs)) - {"version"}
        return sorted(k for k in keys if mine.get(k) != theirs.get(k))

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def __getitem__(self, key: str) -> Any:
        """Dict-style access to a field (``config["bundle"]``), as the JSON form reads."""
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


COORDINATES = ("given", "natural", "learned")
"""Coordinate models of the potential fit (:mod:`latentatlas.geometry.coordinates`)."""

UNKNOWN_MAP_COORDINATES = "learned"
"""Default coordinates of a source whose natural map is unknown (TASEP, latent planes, a user's
simulator), chosen by measurement (README, "Coordinates"; benchmarks/coordinates.py): TASEP L=6
with exact targets, metric NRMSE 0.045/0.038/0.044 (given) -> 0.007/0.007/0.012 (learned); TASEP
L=10 end to end with the default grid estimator, 0.037/0.035/0.037 -> 0.019/0.015-0.023/
0.017-0.029 (two seeds of the fit)."""


def default_coordinates(source: Any) -> str:
    """``"natural"`` when the source knows its natural map (:meth:`Source.natural_map`),
    ``"given"`` when its coordinates are natural already, else :data:`UNKNOWN_MAP_COORDINATES`."""
    if source.natural_map() is not None:
        return "natural"
    return "given" if source.natural_coordinates else UNKNOWN_MAP_COORDINATES


def _potential_options(source: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The potential options of a 2-D atlas with ``coordinates`` filled in and checked (recorded
    in the config: which model was fitted). Paths (1-D) are left as they are."""
    if len(source.names) != 2:
        return options
    options.setdefault("coordinates", default_coordinates(source))
    kind = check_choice(options["coordinates"], "coordinates", COORDINATES)
    if kind == "natural" and source.natural_map() is None:
        raise ValueError(f"coordinates: 'natural' needs a source that knows its natural map; "
                         f"{type(source).__name__} does not (use 'learned' or 'given')")
    if options.get("coordinate_options") and kind != "learned":
        raise ValueError(f"coordinate_options: only the 'learned' coordinates take options, got "
                         f"{options['coordinate_options']!r} for {kind!r}")
    return options


def estimators_for(dim: int) -> dict[str, Any]:
    """The estimator registry of a source with ``dim`` parameters:
    :data:`latentatlas.atlas.estimators.ESTIMATORS` for a 2-D atlas,
    :data:`latentatlas.posterior.line.LINE_ESTIMATORS` for a 1-D path."""
    if dim == 1:
        from ..posterior.line import LINE_ESTIMATORS

        return LINE_ESTIMATORS
    from .estimators import ESTIMATORS

    return ESTIMATORS


def _user_code(config: Any) -> list[str]:
    """``"module:callable"`` generator names in a source config (loading them imports code)."""
    found: list[str] = []
    if isinstance(config, Mapping):
        for key, value in config.items():
            if key == "generator" and isinstance(value, str) and ":" in value:
                found.append(value)
            else:
                found.extend(_user_code(value))
    elif isinstance(config, list):
        for value in config:
            found.extend(_user_code(value))
    return found


def source_from_config(config: RunConfig | Mapping[str, Any],
                       run_dir: str | os.PathLike | None = None,
                       trust_generator: bool = False) -> Any:
    """Rebuild the source recorded in a run config.

    Only classes of :mod:`latentatlas.sources` are accepted and no code is run from the file: the
    source's tensors and weights come from ``run_dir/source.safetensors`` (safetensors + JSON),
    and a generator recorded as ``"module:callable"`` (user code) is imported only with
    ``trust_generator=True``.

    Args:
        config: a :class:`RunConfig` or its dict (``config.json``), or a ``{"class", "config"}``
            source entry.
        run_dir: the run folder (needed when the source has tensors, e.g. a latent plane).
        trust_generator: allow importing a generator named in the config.

    Raises:
        ValueError: an unknown class, user code without ``trust_generator``, tensors without a
            ``run_dir``, or a file that does not match the fingerprint.
    """
    from .. import sources
    from ..io import load as load_model

    spec = config.source if isinstance(config, RunConfig) else dict(config).get("source", config)
    name = str(spec.get("class", "")).rsplit(".", 1)[-1]
    if name not in sources.__all__ or name in ("Source",):
        raise ValueError(f"config: source class {spec.get('class')!r} is not a latentatlas source")
    user = _user_code(spec.get("config", {}))
    if user and not trust_generator:
        raise ValueError(f"config: the source's generator is user code {user[0]!r}; pass "
                         "trust_generator=True to import it")
    has_tensors = "__tensor__" in json.dumps(spec.get("config", {})) or "__class__" in json.dumps(
        spec.get("config", {}))
    if has_tensors:
        if run_dir is None or not (Path(run_dir) / "source.safetensors").is_file():
            raise ValueError("run_dir: the source has tensors or nested models, expected the run "
                             "folder holding source.safetensors")
        source = load_model(Path(run_dir) / "source.safetensors")
    else:
        source = getattr(sources, name)(**dict(spec.get("config", {})))
    if spec.get("fingerprint") and source.fingerprint()[0] != spec["fingerprint"]:
        raise ValueError("config: the rebuilt source does not match the recorded fingerprint")
    return source
