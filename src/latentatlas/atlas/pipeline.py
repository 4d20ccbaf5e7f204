""":func:`build`: the whole pipeline from samples to maps, for every source.

    sample (store.zarr) -> [analyses before the atlas, e.g. images.npy + labels]
      -> posterior (posterior.safetensors, posteriors.npy)
      -> potential (potential.safetensors) -> atlas (atlas.npz, config.json)
      -> analyses (analyses.json/.npz, planes.json/.npz, ...) -> report (report/index.html)

With ``out=DIR`` every stage's output is kept in ``DIR``: a rerun skips the finished stages and
resumes inside the unfinished one (the chunked store, the training checkpoints); a folder holding
another config is refused before anything is written.

Example::

    import latentatlas as la
    atlas = la.atlas.build(la.sources.GaussianFamily(), resolution=16, out="runs/gauss")
    same = la.atlas.load("runs/gauss")
    la.atlas.compare(same, la.atlas.exact_reference(la.sources.GaussianFamily(), same.axis0,
                                                    same.axis1))
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from .._util import save_json
from .._util.progress import quiet
from .config import RunConfig
from .container import Atlas
from .placement import check_device
from .runfolder import RunFolder
from .stages import ANALYSES, Context, ReportStage, Stage, core_stages

__all__ = ["build", "execute", "stages_for"]


def stages_for(config: RunConfig, report: bool) -> list[Stage]:
    """The stages of a run, in order: sample, the analyses that feed the atlas, posterior,
    potential, atlas, the other analyses, the report."""
    sample, *rest = core_stages(len(config.names))
    analyses = [ANALYSES[name]() for name in config.analyses]
    before = [a for a in analyses if a.before_atlas]
    after = [a for a in analyses if not a.before_atlas]
    return [sample, *before, *rest, *after, *([ReportStage()] if report else [])]


def build(
    source: Any,
    bounds: Sequence[Sequence[float]] | None = None,
    resolution: int | Sequence[int] | None = None,
    samples_per_point: int | None = None,
    bundle: int | None = None,
    estimator: str | None = None,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = True,
    posterior_options: Mapping[str, Any] | None = None,
    potential_options: Mapping[str, Any] | None = None,
    posterior_repeats: int | None = None,
    sigma: float | None = None,
    posterior_average: str = "log",
    analyses: Mapping[str, Any] | Sequence[str] | bool | None = None,
    report: bool = True,
    backend: Mapping[str, Any] | None = None,
    store: str | os.PathLike | None = None,
    strategy: Any = None,
    geodesics: int | None = None,
    device: Any = None,
) -> Atlas:
    """Build the atlas of ``source`` over ``bounds``: sample -> posterior -> potential -> metric.

    Args:
        source: a 2-parameter :class:`latentatlas.sources.Source` (a physics model, a latent
            plane, a user's simulator); its defaults fill every argument left as None
            (:meth:`~latentatlas.sources.Source.atlas_defaults`).
        bounds: ((lo0, hi0), (lo1, hi1)) in the source's coordinates.
        resolution: grid points per axis (int or (G0, G1), at least 4).
        samples_per_point: samples drawn at each grid point.
        bundle: K, samples per bundle of the posterior estimator (at most ``samples_per_point``).
        estimator: ``"grid"`` (softmax over the grid), ``"flow"`` (conditional flow) or
            ``"kernel"`` (feature-distance kernel; ``posterior_options={"init": {"features":
            "pixels"}}``), or any name registered in :data:`latentatlas.atlas.ESTIMATORS`.
        seed: run seed (sampling, initial weights, training, bundles): equal configs give equal
            atlases (bit-identical on one machine with one thread count).
        out: run folder; every stage's output is kept there and a rerun skips finished stages.
        force: recompute every stage (the run folder must still hold the same config).
        progress: tqdm bars.
        posterior_options: ``{"init": {...}, "fit": {...}}`` of the estimator.
        potential_options: keyword arguments of :func:`latentatlas.geometry.fit_potential`.
        posterior_repeats: R, bundles per grid point whose posteriors are combined.
        sigma: width (grid cells) of the posterior targets, used again by the potential fit.
        posterior_average: ``"log"`` (default): the geometric mean of the R bundle posteriors of
            a point, renormalised. For an exponential family the bundle posterior is
            ``exp(-K D(t, t_hat))`` centred at the bundle's own estimate; the mean of the
            log-posteriors over bundles drawn at ``t'`` is exactly ``-K D(t, t') + const``, the
            Bregman model the potential is fitted to. ``"probability"``: their mixture (wider by
            the scatter of ``t_hat``: a metric too small by about 2).
        analyses: the analysis stages to run: None (the source's own, ``source.analyses``),
            False (none), names, or ``{name: options}`` (see :data:`~latentatlas.atlas.ANALYSES`).
        report: write ``report/index.html`` (only with ``out``).
        backend: how the sampling stage runs: keyword arguments of
            :func:`latentatlas.distributed.generate` (e.g. ``{"backend": "ray", "workers": 2}``);
            not part of the config (the store is identical either way).
        store: read the samples from this existing store (e.g. filled by ``latentatlas sample``)
            instead of sampling; it must hold the same source, grid, samples and seed.
        strategy: data-parallel strategy passed to every fit (see :mod:`latentatlas.training`);
            None trains in one process.
        geodesics: shorthand for ``analyses={"geometry": {"geodesics": n}}``.
        device: where the posterior estimator and the potential are fitted (``"cpu"``,
            ``"cuda"``, ``"cuda:1"``, ``"mps"``, a :class:`torch.device`; default the CPU); not
            part of the config, so a run can resume on another device. The networks' dtypes are
            config options: ``posterior_options={"dtype": "float64"}``,
            ``potential_options={"dtype": "float64"}`` (default float32).

    Returns:
        The :class:`Atlas`, with ``config`` = the run config and ``potential_model`` set; for a
        1-parameter source (a :class:`~latentatlas.sources.LatentPath`) the
        :class:`~latentatlas.analyses.path.PathResult` (``path.npz``) instead.

    Raises:
        ValueError: bad inputs (see :meth:`RunConfig.make`), or ``out`` holding another config.
    """
    if analyses is False:
        analyses = {}
    elif analyses is not None and not isinstance(analyses, Mapping):
        analyses = {name: {} for name in analyses}
    if geodesics is not None:
        names = analyses if analyses is not None else {n: {} for n in source.analyses}
        analyses = {k: dict(v) for k, v in dict(names).items()}
        if "geometry" in analyses:
            analyses["geometry"]["geodesics"] = geodesics
    config = RunConfig.make(source, bounds, resolution, samples_per_point, bundle, estimator,
                            seed, posterior_options, potential_options, posterior_repeats, sigma,
                            posterior_average, analyses)
    ctx = execute(source, config, out=out, force=force, progress=progress, report=report,
                  backend=backend, store=store, strategy=strategy, device=device)
    return ctx.result(core_stages(len(config.names))[-1].name)


def execute(source: Any, config: RunConfig, out: str | os.PathLike | None = None,
            force: bool = False, progress: bool = True, report: bool = True,
            backend: Mapping[str, Any] | None = None, store: str | os.PathLike | None = None,
            strategy: Any = None, objects: Mapping[str, Any] | None = None,
            device: Any = None) -> Context:
    """Run every stage of ``config`` (see :func:`build`) and return the :class:`Context`, whose
    :meth:`~Context.result` gives any stage's value (e.g. ``"images"``, ``"posterior"``).
    ``objects`` stand in for named options in memory (``{"features": module, "labeler": obj}``);
    a run folder refuses them unless the config names them too. ``device``: see :func:`build`
    (a ValueError before anything runs if this machine does not have it)."""
    device = check_device(device)
    stages = stages_for(config, report=report and out is not None)
    run = None
    if out is not None:
        outputs = [o for s in stages for o in s.outputs]
        run = RunFolder(out, config, force, outputs=outputs, source=source)
    ctx = Context(source, config, run, progress, dict(backend) if backend else None,
                  None if store is None else str(store), strategy, dict(objects or {}), device)
    with quiet(not progress):  # also the bars of helpers without a progress flag
        for stage in stages:
            ctx.run_stage(stage)
    if run is not None:
        save_json(run.file("timings.json"), {"timings_s": ctx.timings,
                                             "cpu_s": ctx.cpu_timings, "skipped": run.skipped,
                                             "computed": run.computed})
    return ctx
