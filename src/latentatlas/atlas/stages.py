"""The stages of the pipeline: each one names its outputs, computes them, and loads them back.

A :class:`Stage` subclass sets ``name`` and ``outputs`` and implements ``compute(ctx)`` (which
writes the outputs into the run folder when there is one and returns the stage's value) and
``load(ctx)`` (which reads that value back from the outputs). :func:`latentatlas.atlas.build` runs
the core stages (sample, posterior, potential, atlas), then the analysis stages the config names
(:data:`ANALYSES`, looked up by name), then the report; a finished stage is skipped and its value
loaded only when a later stage asks for it (:meth:`Context.result`). Adding a stage means writing
one class and registering it: no other stage changes.
"""

from __future__ import annotations

import json
import logging
import pkgutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .._util import grid, save_json, save_npy, save_npz
from .container import Atlas
from .container import load as load_atlas
from .estimators import ESTIMATORS
from .placement import check_device, check_dtype, check_placement, place
from .runfolder import RunFolder

if TYPE_CHECKING:
    from .config import RunConfig

__all__ = ["ANALYSES", "CORE_STAGES", "AnalysisStage", "Context", "Stage", "core_stages",
           "evaluate_potential", "register_analysis"]

log = logging.getLogger("latentatlas.atlas")


@dataclass
class Context:
    """What the stages of one run share.

    Attributes:
        source: the source; config: the :class:`RunConfig`; run: the run folder or None.
        progress: tqdm bars; backend: keyword arguments of
            :func:`latentatlas.distributed.generate` for the sampling stage, or None (local).
        store: an existing sample store to read instead of sampling (``--store DIR``), or None.
        axis0 (G0,), axis1 (G1,), params (G0*G1, 2): the grid ('ij' order); for a 1-D source
            (a path) axis0 (P,), axis1 None and params (P, 1).
        strategy: the data-parallel strategy passed to every fit (None: single process).
        device: the :class:`torch.device` the networks are fitted on (not recorded in the config;
            :mod:`latentatlas.atlas.placement`).
        objects: Python objects standing in for named options (``"features"``, ``"labeler"``)
            in memory; not recorded in the config.
    """

    source: Any
    config: RunConfig
    run: RunFolder | None = None
    progress: bool = True
    backend: dict[str, Any] | None = None
    store: str | None = None
    strategy: Any = None
    objects: dict[str, Any] = field(default_factory=dict)
    device: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    cpu_timings: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    _values: dict[str, Any] = field(default_factory=dict)
    _stages: dict[str, Stage] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.device = check_device(self.device)
        *axes, self.params = grid(self.config.bounds, self.config.resolution)
        self.axis0 = axes[0]
        self.axis1 = axes[1] if len(axes) > 1 else None

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """(G0, G1), or (P,) for a 1-D source."""
        return tuple(a.size for a in (self.axis0, self.axis1) if a is not None)

    def file(self, name: str) -> Path | None:
        """``run/name``, or None without a run folder."""
        return None if self.run is None else self.run.file(name)

    def fresh(self, name: str) -> Path | None:
        """A checkpoint path in the run folder (removed first under ``force``), or None."""
        return None if self.run is None else self.run.fresh(name)

    def result(self, name: str) -> Any:
        """The value of stage ``name`` (computed in this run, or loaded from its outputs)."""
        if name not in self._values:
            if name not in self._stages or self.run is None:
                raise ValueError(f"stage {name!r} has no value in this run")
            self._values[name] = self._stages[name].load(self)
        return self._values[name]

    def run_stage(self, stage: Stage) -> None:
        """Skip ``stage`` if its outputs exist (its value is loaded lazily), else compute it."""
        self._stages[stage.name] = stage
        if self.run is not None and stage.skippable and self.run.done(stage.name, stage.outputs):
            self.run.mark(stage.name, skipped=True, outputs=stage.outputs)
            return
        log.info("stage %s: running", stage.name)
        start, cpu_start = time.perf_counter(), time.process_time()
        self._values[stage.name] = stage.compute(self)
        self.timings[stage.name] = time.perf_counter() - start
        self.cpu_timings[stage.name] = time.process_time() - cpu_start
        if self.run is not None:
            self.run.mark(stage.name, skipped=False)


class Stage:
    """One step of the pipeline (see the module docstring)."""

    name: ClassVar[str]
    outputs: ClassVar[tuple[str, ...]] = ()
    skippable: ClassVar[bool] = True

    def compute(self, ctx: Context) -> Any:
        raise NotImplementedError

    def load(self, ctx: Context) -> Any:
        raise NotImplementedError


class AnalysisStage(Stage):
    """An analysis stage; ``defaults`` gives its options for a source (recorded in the config's
    ``analyses``). ``before_atlas`` stages run right after sampling (e.g. images and class labels
    that go into ``atlas.npz``: ``provides_labels``); the others after the atlas."""

    before_atlas: ClassVar[bool] = False
    provides_labels: ClassVar[bool] = False

    @classmethod
    def defaults(cls, source: Any, source_defaults: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def options(self, ctx: Context) -> dict[str, Any]:
        return dict(ctx.config.analyses.get(self.name, {}))

    def _files(self) -> tuple[str, str]:
        json_name = next(o for o in self.outputs if o.endswith(".json"))
        return json_name, next(o for o in self.outputs if o.endswith(".npz"))

    def save_results(self, ctx: Context, scalars: dict[str, Any],
                     arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        """Write the stage's scalars (its ``.json`` output) and arrays (its ``.npz`` output)
        when there is a run folder; return ``{"scalars", "arrays"}``."""
        if ctx.run is not None:
            json_name, npz_name = self._files()
            save_npz(ctx.file(npz_name), arrays)
            save_json(ctx.file(json_name), scalars)
        return {"scalars": scalars, "arrays": arrays}

    def load(self, ctx: Context) -> dict[str, Any]:
        """Read what :meth:`save_results` wrote."""
        json_name, npz_name = self._files()
        scalars = json.loads(ctx.file(json_name).read_text())
        with np.load(ctx.file(npz_name), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        return {"scalars": scalars, "arrays": arrays}


class _Lazy(dict):
    """name -> stage class, resolved from ``"module:Class"`` on first use (the analysis modules
    come after the atlas package in the layout, so they are referenced by name)."""

    def __getitem__(self, key: str) -> type[AnalysisStage]:
        value = super().__getitem__(key)
        if isinstance(value, str):
            value = pkgutil.resolve_name(value)
            super().__setitem__(key, value)
        return value


ANALYSES: dict[str, type[AnalysisStage]] = _Lazy({
    "images": "latentatlas.analyses.images:ImagesStage",
    "geometry": "latentatlas.analyses.geometry:GeometryStage",
    "planes": "latentatlas.analyses.planes:PlanesStage",
    "jumps": "latentatlas.analyses.path:JumpsStage",
})
"""The analysis stages by name (``Source.analyses`` and ``build(analyses=...)`` use the names)."""


def register_analysis(name: str, stage: type[AnalysisStage] | str) -> None:
    """Register an analysis stage class (or its ``"module:Class"`` name) under ``name``."""
    dict.__setitem__(ANALYSES, name, stage)


# --------------------------------------------------------------------------------------------------
# core stages
# --------------------------------------------------------------------------------------------------


class SampleStage(Stage):
    """Samples at every grid point: ``store.zarr`` (chunked; resumes chunk by chunk), or an
    existing store given by ``ctx.store``."""

    name = "sample"
    outputs = ("store.zarr",)
    skippable = False  # the store itself knows which chunks are done

    def _store(self, ctx: Context) -> Any:
        from ..store import SampleStore

        cfg = ctx.config
        if ctx.store is not None:
            return SampleStore.open(ctx.store).check_matches(
                ctx.source, ctx.params, cfg.samples_per_point, cfg.seed)
        path = ctx.file("store.zarr")
        if ctx.run is not None and ctx.run.force and "sample" not in ctx.run.computed:
            ctx.run.fresh("store.zarr")
        return SampleStore.create(path, ctx.source, ctx.params, cfg.samples_per_point, cfg.seed)

    def compute(self, ctx: Context) -> np.ndarray:
        cfg = ctx.config
        if ctx.run is None and ctx.store is None and "samples" in ctx.objects:
            # samples generated beforehand, e.g. batched across the paths of
            # :func:`latentatlas.paths.rank` (they must be ``source.sample(params, S, seed)``)
            samples = np.asarray(ctx.objects["samples"])
            expected = (len(ctx.params), cfg.samples_per_point, *ctx.source.sample_shape)
            if samples.shape != expected:
                raise ValueError(f"samples: expected shape {expected}, got {samples.shape}")
            return samples
        if ctx.run is None and ctx.store is None:
            return ctx.source.sample(ctx.params, cfg.samples_per_point, seed=cfg.seed)
        store = self._store(ctx)
        done = sum(store.chunk_done(c) for c in range(store.num_chunks))
        if done == store.num_chunks:
            log.info("stage sample: found store.zarr complete, nothing to sample")
        elif done:
            log.info("stage sample: resuming the store (%d of %d chunks done)", done,
                     store.num_chunks)
        if ctx.backend:
            from ..distributed import generate

            store = generate(store, progress=ctx.progress, **ctx.backend)
        else:
            store.generate(progress=ctx.progress)
        return np.asarray(store.samples[...])


def _posteriors(model: Any, samples: np.ndarray, config: RunConfig, progress: bool) -> np.ndarray:
    """(P, G0, G1) posterior maps, R bundles per point combined as the config says (the one
    averaging path of ``la.posterior``: :meth:`~latentatlas.posterior.grid.PosteriorMap.posteriors`).
    """
    return model.posteriors(samples, bundle=config.bundle, repeats=config.posterior_repeats,
                            seed=config.seed + 1, progress=progress,
                            average=config.posterior_average)


class PosteriorStage(Stage):
    """The posterior estimator and its posterior maps of every grid point:
    ``posterior.safetensors``, ``posteriors.npy`` (P, G0, G1).

    The maps fed to the potential come from samples the estimator never saw: the kernel's
    second half (its first half are the references), fresh draws for the trained estimators
    (:attr:`~latentatlas.atlas.estimators.Estimator.fresh_draws`). The gap to the maps of the
    samples it was fitted on (on up to 64 grid points) goes to ``ctx.diagnostics["posterior"]``
    and ``posterior_diagnostics.json``."""

    name = "posterior"
    outputs = ("posterior.safetensors", "posteriors.npy")

    def compute(self, ctx: Context) -> tuple[Any, np.ndarray]:
        cfg = ctx.config
        est = ESTIMATORS[cfg.estimator]
        samples = ctx.result("sample")
        opts = cfg.posterior_options
        init = dict(opts.get("init", {}))
        if "features" in ctx.objects and "features" in init:
            init["features"] = ctx.objects["features"]
        dtype = check_dtype(opts.get("dtype"), "posterior_options['dtype']")
        model = place(est.build(tuple(ctx.source.sample_shape), ctx.grid_shape, init, cfg.seed),
                      ctx.device, dtype)
        fit_opts = {"bundle": cfg.bundle, "sigma": cfg.sigma, "seed": cfg.seed,
                    "progress": ctx.progress, "checkpoint": ctx.fresh("posterior.ckpt"),
                    **dict(opts.get("fit", {}))}
        if ctx.strategy is not None:
            fit_opts["strategy"] = ctx.strategy
        model = est.fit(model, samples, ctx.axis0, ctx.axis1, fit_opts)
        check_placement(model, ctx.device, dtype, "stage posterior")
        # the maps come from samples the estimator never saw when there are enough for a bundle
        seen, held = est.samples_for_maps(samples, fit_opts)
        if held is None and est.fresh_draws:
            held = self.fresh_draws(ctx, samples.shape[1])
        if held is not None and held.shape[1] < cfg.bundle:
            log.warning("stage posterior: %d held-out samples per point, fewer than a bundle of "
                        "%d: the posterior maps use samples the estimator was fitted on",
                        held.shape[1], cfg.bundle)
            held = None
        posts = self._maps(model, est, held if held is not None else seen, cfg, ctx.progress)
        expected = (ctx.params.shape[0], *ctx.grid_shape)
        if posts.shape != expected:
            raise ValueError(f"posteriors: expected shape {expected} from the {cfg.estimator} "
                             f"estimator, got {posts.shape}")
        self.record_gap(ctx, model, est, seen, held, posts)
        return self.keep(ctx, model, posts)

    @staticmethod
    def fresh_draws(ctx: Context, n: int) -> np.ndarray:
        """(P, n, *sample_shape) new samples at every grid point, seeded by
        ``config.seed + HELD_OUT_SEED`` (independent of the store's samples)."""
        from .estimators import HELD_OUT_SEED

        return np.asarray(ctx.source.sample(ctx.params, n, seed=ctx.config.seed + HELD_OUT_SEED))

    @staticmethod
    def _maps(model: Any, est: Any, samples: np.ndarray, cfg: RunConfig,
              progress: bool) -> np.ndarray:
        posts = np.asarray(_posteriors(model, samples, cfg, progress), dtype=np.float64)
        if est.smooth_posteriors and cfg.sigma > 0 and posts.ndim == 3:
            import torch

            from ..geometry import smooth

            posts = smooth(torch.as_tensor(posts), cfg.sigma).double().numpy()
        return posts

    def record_gap(self, ctx: Context, model: Any, est: Any, seen: np.ndarray,
                   held: np.ndarray | None, posts: np.ndarray, points: int = 64) -> None:
        """``ctx.diagnostics["posterior"]`` (and ``posterior_diagnostics.json``): which samples
        the maps came from and the seen / held-out gap on up to ``points`` grid points."""
        from .compare import posterior_gap

        diag: dict[str, Any] = {"maps_from": "held_out" if held is not None else "seen",
                                "held_out_per_point": 0 if held is None else int(held.shape[1])}
        if held is not None and seen.shape[1] >= ctx.config.bundle:
            idx = np.unique(np.linspace(0, len(posts) - 1, min(points, len(posts))).round()
                            ).astype(np.int64)
            mine = self._maps(model, est, seen[idx], ctx.config, False)
            diag.update(posterior_gap(mine, posts[idx], ctx.axis0, ctx.axis1))
        ctx.diagnostics["posterior"] = diag
        if ctx.run is not None:
            save_json(ctx.file("posterior_diagnostics.json"), diag)

    @staticmethod
    def keep(ctx: Context, model: Any, posts: np.ndarray) -> tuple[Any, np.ndarray]:
        """Write the estimator and its maps into the run folder (if any); return both."""
        if ctx.run is not None:
            from ..io import save as save_model

            save_model(model, ctx.file("posterior.safetensors"))
            save_npy(ctx.file("posteriors.npy"), posts)
        return model, posts

    def load(self, ctx: Context) -> tuple[Any, np.ndarray]:
        from ..io import load as load_model

        posts = np.load(ctx.file("posteriors.npy"), allow_pickle=False)
        return load_model(ctx.file("posterior.safetensors")), posts


class PotentialStage(Stage):
    """The convex potential ``Phi ~ log Z`` fitted to the posterior maps, in the coordinates the
    config names (``potential_options["coordinates"]``): ``potential.safetensors``
    (+ ``potential_history.json``)."""

    name = "potential"
    outputs = ("potential.safetensors",)

    def compute(self, ctx: Context) -> Any:
        from .. import geometry

        cfg = ctx.config
        _, posts = ctx.result("posterior")
        opts = {"sigma": cfg.sigma, "checkpoint": ctx.fresh("potential.ckpt"),
                **dict(cfg.potential_options)}
        # the coordinates of the Bregman potential (geometry.coordinates): "given" fits Phi(t);
        # "natural" / "learned" fit Phi(u(t)) and the metric is J^T Hess Phi J
        kind = opts.pop("coordinates", "given")
        dtype = opts["dtype"] = check_dtype(opts.get("dtype"), "potential_options['dtype']")
        start = geometry.coordinate_potential(
            kind, posts, ctx.axis0, ctx.axis1, bundle=cfg.bundle, sigma=cfg.sigma,
            natural_map=ctx.source.natural_map() if kind == "natural" else None,
            seed=cfg.seed + 2, **dict(opts.pop("coordinate_options", {})))
        if start is not None:
            opts["potential"] = place(start, ctx.device, dtype)
        if ctx.strategy is not None:
            opts["strategy"] = ctx.strategy
        pot, history = geometry.fit_potential(posts, ctx.axis0, ctx.axis1, bundle=cfg.bundle,
                                              progress=ctx.progress, seed=cfg.seed + 2,
                                              device=ctx.device, **opts)
        check_placement(pot, ctx.device, dtype, "stage potential")
        if ctx.run is not None:
            from ..io import save as save_model

            save_model(pot, ctx.file("potential.safetensors"))
            hist = history.as_dict() if hasattr(history, "as_dict") else {}
            save_json(ctx.file("potential_history.json"), hist)
        return pot

    def load(self, ctx: Context) -> Any:
        from ..io import load as load_model

        return load_model(ctx.file("potential.safetensors"))


def evaluate_potential(pot: Any, params: np.ndarray, batch: int = 4096
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phi, grad Phi and Hess Phi of a fitted potential at points.

    Args:
        pot: a ``la.geometry`` potential (``forward``, ``gradient``, ``hessian`` on (N, 2)
            tensors), on any device and dtype.
        params: (N, 2) points.

    Returns:
        (N,), (N, 2), (N, 2, 2) float64 arrays.
    """
    import torch

    try:
        ref = next(pot.parameters())
        dtype, device = ref.dtype, ref.device
    except (AttributeError, StopIteration):
        dtype, device = torch.float64, torch.device("cpu")
    phis, grads, hesss = [], [], []
    for start in range(0, len(params), batch):
        t = torch.as_tensor(params[start:start + batch], dtype=dtype, device=device)
        with torch.no_grad():
            phi = pot.forward(t)
        phis.append(phi.detach().cpu().double().numpy().reshape(-1))
        grads.append(pot.gradient(t).detach().cpu().double().numpy().reshape(-1, 2))
        hesss.append(pot.hessian(t).detach().cpu().double().numpy().reshape(-1, 2, 2))
    return np.concatenate(phis), np.concatenate(grads), np.concatenate(hesss)


class AtlasStage(Stage):
    """The fields on the grid: ``atlas.npz`` (with ``labels`` when an analysis stage
    ``provides_labels``), ``config.json``."""

    name = "atlas"
    outputs = ("atlas.npz",)

    def compute(self, ctx: Context) -> Atlas:
        pot = ctx.result("potential")
        phi, grad, hess = evaluate_potential(pot, ctx.params)
        g = ctx.grid_shape
        labels = None
        for stage in list(ctx._stages.values()):
            if getattr(stage, "provides_labels", False):
                labels = ctx.result(stage.name)["labels"]
        atlas = Atlas(names=tuple(ctx.config.names), axis0=ctx.axis0, axis1=ctx.axis1,
                      potential=phi.reshape(g), gradient=grad.reshape(*g, 2),
                      metric=hess.reshape(*g, 2, 2), config=ctx.config.to_dict(),
                      labels=None if labels is None else np.asarray(labels).reshape(g),
                      potential_model=pot)
        if ctx.run is not None:
            atlas.save(ctx.run.path)
        return atlas

    def load(self, ctx: Context) -> Atlas:
        return load_atlas(ctx.run.path)


class ReportStage(Stage):
    """``report/index.html`` (and the figures beside it), drawn from the run folder's files."""

    name = "report"
    outputs = ("report/index.html",)

    def compute(self, ctx: Context) -> Path:
        from ..report.atlas import write_report

        return write_report(ctx.run.path)

    def load(self, ctx: Context) -> Path:
        return ctx.file("report/index.html")


CORE_STAGES: dict[int, tuple[type[Stage] | str, ...]] = {
    2: (SampleStage, PosteriorStage, PotentialStage, AtlasStage),
    1: (SampleStage, "latentatlas.analyses.path:LinePosteriorStage",
        "latentatlas.analyses.path:LinePotentialStage", "latentatlas.analyses.path:PathStage"),
}
"""The core stages by the source's number of parameters: a 2-D atlas (``atlas.npz``) or a 1-D
path (``path.npz``); classes or ``"module:Class"`` names (modules that come after the atlas
package in the layout)."""


def core_stages(dim: int = 2) -> list[Stage]:
    """The stages every run of a ``dim``-parameter source has, in order (analyses and the report
    come after); the last one gives the run's result (the atlas, or the path)."""
    if dim not in CORE_STAGES:
        raise ValueError(f"source: expected {sorted(CORE_STAGES)} parameters, got {dim}")
    return [pkgutil.resolve_name(c)() if isinstance(c, str) else c() for c in CORE_STAGES[dim]]

