"""Paths between two latents: the front door (``la.paths.build``, ``la.paths.rank``).

A path ``s in [0, 1] -> z(s)`` from ``z_A`` to ``z_B`` (:class:`~latentatlas.sources.LatentPath`)
through any generator runs through the same staged pipeline as every atlas
(:func:`latentatlas.atlas.build`) in one dimension: samples at P points, the posterior
``p(s | x_1..x_K)`` on the 1-D grid, the convex potential, ``g(s)`` (Fisher information of one
sample), the Fisher length, the posterior means, the distances between consecutive means and the
jumps. Example::

    import latentatlas as la
    res = la.paths.build(my_decoder, z[3], z[17], eta=0.5, out="runs/path")
    res.fisher_length, res.jump_positions
    table = la.paths.rank(my_decoder, z, [(3, 17), (4, 9)], eta=0.5, out="runs/pairs")
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._util import check_choice, check_int, save_json, save_npz
from .analyses.path import PathResult, summary
from .atlas.config import RunConfig
from .atlas.pipeline import build as _build
from .atlas.pipeline import execute
from .sources.latent_path import LatentPath

__all__ = ["Ranking", "build", "make_source", "map_paths", "rank", "sample_paths"]

RANK_KEYS = ("fisher_length", "jumps")


def _options(features: Any, estimator: str | None, posterior_options: Mapping[str, Any] | None
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Posterior options with the feature name, and in-memory objects for a callable."""
    opts = {k: dict(v) for k, v in dict(posterior_options or {}).items()}
    objects: dict[str, Any] = {}
    if estimator in (None, "kernel") and features is not None:
        if isinstance(features, str):
            opts.setdefault("init", {})["features"] = features
        else:
            objects["features"] = features
    return opts, objects


def make_source(generator: Any, z_a: Any, z_b: Any, interpolation: str = "slerp",
                eta: float = 0.0, batch_size: int = 1024) -> LatentPath:
    """The :class:`~latentatlas.sources.LatentPath` from ``z_a`` (D,) to ``z_b`` (D,)."""
    za = torch.as_tensor(np.asarray(z_a, dtype=np.float64)).reshape(-1)
    zb = torch.as_tensor(np.asarray(z_b, dtype=np.float64)).reshape(-1)
    if za.shape != zb.shape:
        raise ValueError(f"z_b: expected a latent of the shape of z_a {tuple(za.shape)}, got "
                         f"{tuple(zb.shape)}")
    return LatentPath(generator, torch.stack([za, zb]), interpolation=interpolation, eta=eta,
                      batch_size=batch_size)


def build(generator: Any, z_a: Any, z_b: Any, interpolation: str = "slerp", points: int = 100,
          samples: int = 50, eta: float = 0.0, bundle: int | None = None,
          estimator: str | None = None, features: Any = "pixels", seed: int = 0,
          out: str | os.PathLike | None = None, force: bool = False, progress: bool = True,
          posterior_repeats: int | None = None, sigma: float | None = None,
          posterior_options: Mapping[str, Any] | None = None,
          potential_options: Mapping[str, Any] | None = None,
          analyses: Mapping[str, Any] | Sequence[str] | bool | None = None,
          report: bool = True, batch_size: int = 1024,
          backend: Mapping[str, Any] | None = None) -> PathResult:
    """The path from ``z_a`` to ``z_b`` through ``generator``, mapped (see the module docstring).

    Args:
        generator: an object with ``generate(z, eta, seeds)``, a callable ``f(z)``,
            ``"module:callable"``, ``la.generators.Digits``, ``la.generators.Diffusers``.
        z_a, z_b: (D,) the end latents.
        interpolation: ``"slerp"`` (default, for Gaussian latents) or ``"linear"`` (exactly
            ``z_a + s (z_b - z_a)``).
        points: P, positions ``s`` (end points included); samples: S per point.
        eta: the generator's noise level (0: deterministic; the feature kernel plays the noise).
        bundle: K, samples per bundle [default 2]; estimator: ``"kernel"`` (default) or
            ``"grid"`` (:data:`~latentatlas.posterior.line.LINE_ESTIMATORS`).
        features: kernel features: ``"pixels"``, ``"classifier"``, ``"clip:PATH"`` or a callable
            (in memory only: a run folder needs a name).
        seed: run seed (noise, bundles, training); out: run folder (resume, refusal of another
            config, ``report/index.html``); force: recompute every stage.
        posterior_repeats: R bundles per point; sigma: target width (cells) of the grid
            estimator; posterior_options, potential_options: see :func:`latentatlas.atlas.build`
            (``potential_options`` go to :func:`~latentatlas.geometry.line.fit_line_potential`).
        analyses: the analysis stages (default ``("jumps",)``); report: write the report.
        batch_size: latents per generator call.
        backend: keyword arguments of :func:`latentatlas.distributed.generate` for the sampling
            stage (``{"backend": "ray", ...}``; a run folder's store), or None (in process).

    Returns:
        A :class:`~latentatlas.analyses.path.PathResult`.
    """
    source = make_source(generator, z_a, z_b, interpolation, eta, batch_size)
    opts, objects = _options(features, estimator, posterior_options)
    if objects and out is not None:
        raise ValueError("features: a run folder records features by name ('pixels', "
                         "'classifier', 'clip:PATH'), got a callable")
    if objects:
        config = RunConfig.make(source, None, points, samples, bundle, estimator, seed, opts,
                                potential_options, posterior_repeats, sigma, "log",
                                _analyses(analyses, source))
        return execute(source, config, progress=progress, report=False,
                       objects=objects).result("path")
    return _build(source, resolution=points, samples_per_point=samples, bundle=bundle,
                  estimator=estimator, seed=seed, out=out, force=force, progress=progress,
                  posterior_options=opts, potential_options=potential_options,
                  posterior_repeats=posterior_repeats, sigma=sigma, analyses=analyses,
                  report=report, backend=backend)


def _analyses(analyses: Any, source: Any) -> dict[str, Any] | None:
    if analyses is False:
        return {}
    if analyses is None or isinstance(analyses, Mapping):
        return analyses
    return {name: {} for name in analyses}


# -- many pairs -----------------------------------------------------------------------------------
def sample_paths(sources: Sequence[LatentPath], s: np.ndarray, n: int, seed: int
                 ) -> list[np.ndarray]:
    """Samples of several paths of ONE generator, generated in shared batches: equal to
    ``[src.sample(s[:, None], n, seed) for src in sources]``, but the generator sees batches of
    ``batch_size`` latents drawn from all paths at once.

    Returns:
        a list of (P, n, *shape) float32 arrays.
    """
    params = np.asarray(s, np.float64).reshape(-1, 1)
    first = sources[0]
    eta = first.eta
    reps = 1 if eta == 0 else n
    z = torch.cat([src.latents(params).repeat_interleave(reps, 0) for src in sources])
    seeds = (np.zeros(len(params) * reps, np.int64) if eta == 0
             else first.seeds(params, n, seed).reshape(-1))
    seeds = np.tile(seeds, len(sources))
    from .sources.latent_plane import _call_generator

    bs = first.batch_size
    x = torch.cat([_call_generator(first.generator, z[i:i + bs], eta, seeds[i:i + bs])
                   .detach().cpu() for i in range(0, len(z), bs)]).numpy().astype(np.float32)
    x = x.reshape(len(sources), len(params), reps, *first.sample_shape)
    if eta == 0:
        x = np.repeat(x, n, axis=2)
    return list(x)


@dataclass
class Ranking:
    """The table of :func:`rank`: one row per pair, best first.

    Attributes:
        rows: dicts with ``rank``, ``i``, ``j``, ``fisher_length``, ``jumps``,
            ``jump_positions``, ``metric_max``, ``metric_argmax``.
        results: the :class:`~latentatlas.analyses.path.PathResult` of each row (in memory).
    """

    rows: list[dict[str, Any]]
    results: list[PathResult]

    def to_csv(self) -> str:
        """The table as CSV text (``jump_positions`` joined by ``;``)."""
        buf = io.StringIO()
        keys = ["rank", "i", "j", "fisher_length", "jumps", "jump_positions", "metric_max",
                "metric_argmax"]
        w = csv.DictWriter(buf, keys, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for row in self.rows:
            w.writerow({**row, "jump_positions": ";".join(f"{p:.4f}"
                                                          for p in row["jump_positions"])})
        return buf.getvalue()

    def to_json(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.rows]


def _pairs(latents: np.ndarray, pairs: Any) -> np.ndarray:
    arr = np.asarray(pairs)
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"pairs: expected rows of two latent indices (N, 2), got "
                         f"{arr.dtype} {arr.shape}")
    n = len(latents)
    bad = arr[(arr < 0) | (arr >= n)]
    if bad.size:
        raise ValueError(f"pairs: expected indices in [0, {n}) of the {n} latents, got "
                         f"{int(bad[0])}")
    return arr.astype(np.int64)


def map_paths(generator: Any, ends: Any, interpolation: str, eta: float, batch_size: int,
              config: RunConfig, objects: Mapping[str, Any] | None = None) -> list[PathResult]:
    """Map M paths of one generator with one config, in memory: generation batched across the
    paths (:func:`sample_paths`), the 1-D posterior of each path, ONE batched potential fit for
    all of them (:func:`~latentatlas.geometry.line.fit_line_potentials`), then the means,
    distances and jumps. Each path's result is bit-identical to mapping it alone (what one Ray
    task of :func:`rank` computes).

    Args:
        ends: (M, 2, D) the end latents of each path; config: the run config (no analyses).

    Returns:
        M :class:`~latentatlas.analyses.path.PathResult`.
    """
    from .atlas.config import estimators_for
    from .atlas.pipeline import stages_for
    from .atlas.stages import Context
    from .geometry.line import fit_line_potentials

    ends = np.asarray(ends, dtype=np.float64)
    srcs = [make_source(generator, a, b, interpolation, eta, batch_size) for a, b in ends]
    stages = stages_for(config, report=False)
    cut = [st.name for st in stages].index("potential")
    s = Context(srcs[0], config).axis0
    ctxs = []
    for src, x in zip(srcs, sample_paths(srcs, s, config.samples_per_point, config.seed)):
        ctx = Context(src, config, None, False, objects={**dict(objects or {}), "samples": x})
        for stage in stages[:cut]:
            ctx.run_stage(stage)
        ctxs.append(ctx)
    posts = np.stack([ctx.result("posterior")[1] for ctx in ctxs])
    sigma = config.sigma if estimators_for(1)[config.estimator].smooth_model else 0.0
    pots = fit_line_potentials(posts, s, bundle=config.bundle, sigma=sigma, seed=config.seed + 2,
                               **dict(config.potential_options))
    out = []
    for ctx, pot in zip(ctxs, pots):
        ctx.objects["potential"] = pot
        for stage in stages[cut:]:
            ctx.run_stage(stage)
        out.append(ctx.result("path"))
    return out


def rank(generator: Any, latents: Any, pairs: Any, interpolation: str = "slerp",
         points: int = 100, samples: int = 50, eta: float = 0.0, bundle: int | None = None,
         estimator: str | None = None, features: Any = "pixels", seed: int = 0,
         sort: str = "fisher_length", out: str | os.PathLike | None = None,
         progress: bool = True, posterior_repeats: int | None = None,
         potential_options: Mapping[str, Any] | None = None, batch_size: int = 1024,
         paths_per_batch: int | None = None, backend: str = "local",
         address: str | None = None, workers: int | None = None,
         gpus_per_task: float = 0.0) -> Ranking:
    """Map many paths of one generator and rank them.

    The pairs run in batches of ``paths_per_batch`` paths (default: as many as fit in ~64k
    samples): :func:`map_paths` generates each batch's samples in shared generator calls and fits
    its potentials in one vectorised optimisation (same config as :func:`build`, no jump
    analysis). ``backend="ray"``: each batch is one Ray task (``num_cpus=1``,
    ``num_gpus=gpus_per_task``; ``address``/``workers`` as for the stores,
    :func:`latentatlas.distributed.generate`; a local instance's workers get this process's
    ``sys.path``); the table is identical to the local one. With ``out``: ``ranking.csv``,
    ``ranking.json``, ``paths/I_J.npz`` (the ``path.npz`` arrays of each pair) and
    ``config.json``; a rerun skips the pairs already written, another config is refused.

    Args:
        latents: (N, D) latent bank; pairs: (M, 2) int rows ``I J`` indexing it.
        sort: ``"fisher_length"`` (longest first, ties by jumps) or ``"jumps"`` (most first,
            ties by Fisher length).
        Others: see :func:`build`.

    Returns:
        A :class:`Ranking`.
    """
    from tqdm.auto import tqdm

    bank = np.asarray(latents, dtype=np.float64).reshape(len(latents), -1)
    idx = _pairs(bank, pairs)
    check_choice(sort, "sort", RANK_KEYS)
    check_choice(backend, "backend", ("local", "ray"))
    points = check_int(points, "points", minimum=4)
    samples = check_int(samples, "samples", minimum=1)
    opts, objects = _options(features, estimator, None)
    probe = make_source(generator, bank[idx[0, 0]], bank[idx[0, 1]], interpolation, eta,
                        batch_size)
    # the batch's config (its source entry is the first pair's: fingerprinting every pair would
    # hash the generator's weights once per path)
    config = RunConfig.make(probe, None, points, samples, bundle, estimator, seed, opts,
                            potential_options, posterior_repeats, None, "log", {})
    folder = _rank_folder(out, config, idx, objects)
    per = check_int(paths_per_batch or max(1, 65536 // (points * (1 if eta == 0 else samples))),
                    "paths_per_batch", minimum=1)
    results: list[PathResult | None] = [None] * len(idx)
    for k in range(len(idx)):
        if folder and _pair_file(folder, idx[k]).is_file():
            results[k] = PathResult.from_npz(_pair_file(folder, idx[k]))
    todo = [k for k in range(len(idx)) if results[k] is None]
    batches = [todo[a:a + per] for a in range(0, len(todo), per)]
    bar = tqdm(total=len(idx), initial=len(idx) - len(todo), disable=not progress, desc="paths")
    args = (probe.generator, interpolation, eta, batch_size, config, objects)

    def done(batch: list[int], mapped: list[PathResult]) -> None:
        for k, res in zip(batch, mapped):
            results[k] = res
            if folder:
                save_npz(_pair_file(folder, idx[k]), res.arrays())
        bar.update(len(batch))

    try:
        if backend == "local":
            for batch in batches:
                done(batch, map_paths(args[0], bank[idx[batch]], *args[1:]))
        elif batches:
            _rank_ray(args, bank, idx, batches, done, address, workers, gpus_per_task)
    finally:
        bar.close()
    rows = []
    for (i, j), res in zip(idx, results):
        row = {"i": int(i), "j": int(j), **summary(res)}
        row["jumps"], row["jump_positions"] = row.pop("jumps"), row.pop("jump_positions")
        rows.append(row)
    key = ((lambda r: (-r["fisher_length"], -r["jumps"])) if sort == "fisher_length"
           else (lambda r: (-r["jumps"], -r["fisher_length"])))
    order = sorted(range(len(rows)), key=lambda k: key(rows[k]))
    ranked = [{"rank": n + 1, **rows[k]} for n, k in enumerate(order)]
    table = Ranking(ranked, [results[k] for k in order])
    if folder:
        from ._util import atomic_write

        atomic_write(folder / "ranking.csv", table.to_csv())
        save_json(folder / "ranking.json", table.to_json())
    return table


def _rank_ray(args: tuple[Any, ...], bank: np.ndarray, idx: np.ndarray,
              batches: list[list[int]], done: Any, address: str | None, workers: int | None,
              gpus_per_task: float) -> None:
    """Each batch of pairs as one Ray task of :func:`map_paths`; ``done(batch, results)`` as
    they finish (at most ``workers`` in flight)."""
    import sys

    from .distributed import ray_session

    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers: expected a positive int or None, got {workers!r}")
    if not (isinstance(gpus_per_task, int | float) and gpus_per_task >= 0):
        raise ValueError(f"gpus_per_task: expected a number >= 0, got {gpus_per_task!r}")
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    with ray_session(address, workers, env) as ray:
        task = ray.remote(map_paths).options(num_cpus=1, num_gpus=gpus_per_task,
                                             name="latentatlas.map_paths")
        generator = ray.put(args[0])
        queue, pending = list(batches), {}
        limit = workers or len(batches)
        while queue or pending:
            while queue and len(pending) < limit:
                batch = queue.pop(0)
                pending[task.remote(generator, bank[idx[batch]], *args[1:])] = batch
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                batch = pending.pop(ref)
                try:
                    mapped = ray.get(ref)
                except Exception as err:  # RayTaskError: the task's own error, if a ValueError
                    cause = getattr(err, "cause", None)
                    if isinstance(cause, ValueError):
                        raise cause from None
                    first = str(cause or err).strip().splitlines() or [type(err).__name__]
                    raise RuntimeError(f"pairs {idx[batch].tolist()} failed on ray: "
                                       f"{first[-1]}") from None
                done(batch, mapped)


def _pair_file(folder: Path, pair: np.ndarray) -> Path:
    return folder / "paths" / f"{int(pair[0])}_{int(pair[1])}.npz"


def _rank_folder(out: Any, config: RunConfig, idx: np.ndarray, objects: Mapping[str, Any]
                 ) -> Path | None:
    """The batch's folder: ``config.json`` holds the config (generator, options) and the pairs;
    another config is refused before anything is written."""
    if out is None:
        return None
    if objects:
        raise ValueError("features: a run folder records features by name ('pixels', "
                         "'classifier', 'clip:PATH'), got a callable")
    if config.source.get("fingerprint") is None:
        raise ValueError(f"generator: {config.source.get('unrecorded', 'not recordable')}")
    folder = Path(out)
    cfg = config.to_dict()
    spec = cfg.pop("source")
    record = {"format": "latentatlas-paths/1", "generator": spec["config"].get("generator"),
              "interpolation": spec["config"].get("interpolation"),
              "eta": spec["config"].get("eta"), "run": {k: v for k, v in cfg.items()
                                                        if k != "version"},
              "pairs": idx.tolist()}
    path = folder / "config.json"
    if path.is_file():
        old = json.loads(path.read_text())
        differ = sorted(k for k in record if old.get(k) != json.loads(json.dumps(record[k])))
        if differ:
            raise ValueError(f"out: {str(folder)!r} holds a ranking with another config "
                             f"({', '.join(differ)}); use another --out folder or delete it")
    elif folder.is_dir() and any(folder.iterdir()):
        raise ValueError(f"out: {str(folder)!r} is not empty and holds no ranking config; use "
                         "another folder")
    (folder / "paths").mkdir(parents=True, exist_ok=True)
    save_json(path, record)
    return folder
