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

__all__ = ["Ranking", "build", "make_source", "rank", "sample_paths"]

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
          report: bool = True, batch_size: int = 1024) -> PathResult:
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
                  report=report)


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


def rank(generator: Any, latents: Any, pairs: Any, interpolation: str = "slerp",
         points: int = 100, samples: int = 50, eta: float = 0.0, bundle: int | None = None,
         estimator: str | None = None, features: Any = "pixels", seed: int = 0,
         sort: str = "fisher_length", out: str | os.PathLike | None = None,
         progress: bool = True, posterior_repeats: int | None = None,
         potential_options: Mapping[str, Any] | None = None, batch_size: int = 1024,
         paths_per_batch: int | None = None) -> Ranking:
    """Map many paths of one generator and rank them.

    Generation is batched across paths (:func:`sample_paths`, ``paths_per_batch`` paths at a
    time: default as many as fit in ~64k samples); each path then runs the 1-D pipeline in memory
    (same config as :func:`build`, no jump analysis). With ``out``: ``ranking.csv``,
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
    points = check_int(points, "points", minimum=4)
    samples = check_int(samples, "samples", minimum=1)
    opts, objects = _options(features, estimator, None)
    probe = make_source(generator, bank[idx[0, 0]], bank[idx[0, 1]], interpolation, eta,
                        batch_size)
    config = RunConfig.make(probe, None, points, samples, bundle, estimator, seed, opts,
                            potential_options, posterior_repeats, None, "log", {})
    folder = _rank_folder(out, config, idx, objects)
    per = paths_per_batch or max(1, 65536 // (points * (1 if eta == 0 else samples)))
    results: list[PathResult | None] = [None] * len(idx)
    s = np.linspace(0.0, 1.0, points)
    bar = tqdm(total=len(idx), disable=not progress, desc="paths")
    for start in range(0, len(idx), per):
        chunk = list(range(start, min(len(idx), start + per)))
        todo = [k for k in chunk if not (folder and _pair_file(folder, idx[k]).is_file())]
        for k in set(chunk) - set(todo):
            results[k] = PathResult.from_npz(_pair_file(folder, idx[k]))
        if todo:
            gen = probe.generator
            srcs = [make_source(gen, bank[idx[k, 0]], bank[idx[k, 1]], interpolation, eta,
                                batch_size) for k in todo]
            for k, src, x in zip(todo, srcs, sample_paths(srcs, s, samples, seed)):
                # the batch's config (its source entry is the first pair's: fingerprinting every
                # pair would hash the generator's weights once per path)
                res = execute(src, config, progress=False, report=False,
                              objects={**objects, "samples": x}).result("path")
                results[k] = res
                if folder:
                    save_npz(_pair_file(folder, idx[k]), res.arrays())
        bar.update(len(chunk))
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
