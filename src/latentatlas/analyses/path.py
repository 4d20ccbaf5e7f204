"""The stages of a path run (a 1-parameter source, e.g. :class:`~latentatlas.sources.LatentPath`)
and its jump analysis.

Core stages (:data:`latentatlas.atlas.stages.CORE_STAGES` ``[1]``), after ``sample``:

- ``posterior`` (:class:`LinePosteriorStage`): a 1-D estimator of
  :data:`~latentatlas.posterior.line.LINE_ESTIMATORS` and its posterior maps (P, P):
  ``posterior.safetensors``, ``posteriors.npy``;
- ``potential`` (:class:`LinePotentialStage`): the 1-D convex potential
  (:func:`~latentatlas.geometry.line.fit_line_potential`): ``potential.npz``;
- ``path`` (:class:`PathStage`): ``path.npz`` (``s``, ``metric`` = g(s), the Fisher information of
  one sample, ``potential``, ``gradient``, ``means`` (posterior means), ``distances``, ``jumps``,
  ``threshold``, ``fisher_length``), ``images.npy`` (P, *shape), ``path.json`` (scalars).

Jump rule (:func:`latentatlas.geometry.paths.flag_jumps`): a step between consecutive posterior
means is a jump when it exceeds ``median + 6 * max(1.4826 MAD, 0.1 median)`` of all steps (six
robust standard deviations: a smooth path whose steps scatter like half-normal noise crosses it
with probability ~3e-5 per step) and at least two grid spacings, AND the two posteriors differ:
their Bhattacharyya overlap ``sum_j sqrt(p_i(s_j) p_{i+1}(s_j))`` is below 0.5 (a smooth path's
consecutive posteriors overlap by ``exp(-h^2 / (8 sigma^2))``, measured >= 0.85 on x = z + eta
noise; at a switch it was 6e-31; a heavy-tailed outlier of the means inside a broad phase, which
the MAD rule alone flagged once in the tests, kept an overlap of 0.98). ``overlap`` (P-1,) is in
``path.npz``.

Analysis stage ``jumps`` (:class:`JumpsStage`): at each jump, the images on both sides, the
switch point located by bisection of the deterministic decoder, and the Lipschitz profile
``L(delta)`` there (slope -1 at a discontinuity; also at the smoothest point, for comparison):
``jumps.npz``, ``jumps.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._util import save_json, save_npy, save_npz
from ..atlas.stages import AnalysisStage, Context, PosteriorStage, Stage

__all__ = ["JumpsStage", "LinePosteriorStage", "LinePotentialStage", "PathResult", "PathStage",
           "path_fields"]

JUMP_C, JUMP_FLOOR, JUMP_MIN_STEPS, JUMP_OVERLAP = 6.0, 0.1, 2.0, 0.5


@dataclass
class PathResult:
    """The fields along a path (what ``path.npz`` holds).

    Attributes:
        s: (P,) positions; metric: (P,) g(s), Fisher information of ONE sample per unit s;
        potential: (P,) Phi(s); gradient: (P,) Phi'(s); means: (P,) posterior means of s;
        distances: (P-1,) |means[i+1] - means[i]|; jumps: (J,) indices i (a jump between s[i]
        and s[i+1]); threshold: the distance above which a step is a jump; fisher_length:
        int sqrt(g) ds; images: (P, *shape) one sample per point (or None); config: the run
        config (dict) or None.
    """

    s: np.ndarray
    metric: np.ndarray
    potential: np.ndarray
    gradient: np.ndarray
    means: np.ndarray
    distances: np.ndarray
    jumps: np.ndarray
    threshold: float
    fisher_length: float
    images: np.ndarray | None = None
    config: dict[str, Any] | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def jump_positions(self) -> np.ndarray:
        """(J,) the positions halfway across each jump."""
        return 0.5 * (self.s[self.jumps] + self.s[self.jumps + 1])

    def arrays(self) -> dict[str, np.ndarray]:
        """The ``path.npz`` arrays."""
        return {"s": self.s, "metric": self.metric, "potential": self.potential,
                "gradient": self.gradient, "means": self.means, "distances": self.distances,
                "jumps": np.asarray(self.jumps, np.int64),
                "threshold": np.asarray(self.threshold),
                "fisher_length": np.asarray(self.fisher_length), **self.extra}

    @classmethod
    def from_npz(cls, path: str | Path, images: np.ndarray | None = None,
                 config: dict[str, Any] | None = None) -> PathResult:
        """Read the arrays of :meth:`arrays` from an ``.npz`` file."""
        with np.load(path, allow_pickle=False) as data:
            a = {k: data[k] for k in data.files}
        keys = ("s", "metric", "potential", "gradient", "means", "distances", "jumps")
        return cls(**{k: a.pop(k) for k in keys}, threshold=float(a.pop("threshold")),
                   fisher_length=float(a.pop("fisher_length")), images=images, config=config,
                   extra=a)

    @classmethod
    def load(cls, run_dir: str | Path) -> PathResult:
        """Read ``path.npz`` (+ ``images.npy``, ``config.json``) of a run folder."""
        run_dir = Path(run_dir)
        images = np.load(run_dir / "images.npy", allow_pickle=False) if (
            run_dir / "images.npy").is_file() else None
        cfg = json.loads((run_dir / "config.json").read_text()) if (
            run_dir / "config.json").is_file() else None
        return cls.from_npz(run_dir / "path.npz", images, cfg)


def path_fields(posteriors: np.ndarray, pot: Any) -> PathResult:
    """Means, distances and jumps from posterior maps (P, P) and a fitted
    :class:`~latentatlas.geometry.line.LinePotential`."""
    from ..geometry.line import fisher_length
    from ..geometry.paths import flag_jumps

    s = pot.s
    posts = np.asarray(posteriors, np.float64)
    means = posts @ s
    dist = np.abs(np.diff(means))
    overlap = np.sqrt(np.clip(posts[1:] * posts[:-1], 0, None)).sum(1)
    step = float(np.median(np.diff(s)))
    flagged, threshold = flag_jumps(dist, c=JUMP_C, floor=JUMP_FLOOR,
                                    min_step=JUMP_MIN_STEPS * step)
    jumps = flagged[overlap[flagged] < JUMP_OVERLAP]
    return PathResult(s=s, metric=pot.metric, potential=pot.potential, gradient=pot.gradient,
                      means=means, distances=dist, jumps=jumps, threshold=float(threshold),
                      fisher_length=fisher_length(s, pot.metric),
                      extra={"cells": pot.cells, "centers": pot.centers, "overlap": overlap})


class LinePosteriorStage(PosteriorStage):
    """The 1-D posterior estimator and its posterior maps: ``posterior.safetensors``,
    ``posteriors.npy`` (P, P)."""

    name = "posterior"
    outputs = ("posterior.safetensors", "posteriors.npy")

    def compute(self, ctx: Context) -> tuple[Any, np.ndarray]:
        from ..atlas.config import estimators_for

        cfg = ctx.config
        est = estimators_for(1)[cfg.estimator]
        samples = ctx.result("sample")
        init = dict(cfg.posterior_options.get("init", {}))
        if "features" in ctx.objects and ctx.run is None:
            init["features"] = ctx.objects["features"]
        model = est.build(tuple(ctx.source.sample_shape), len(ctx.axis0), init, cfg.seed)
        fit_opts = {"bundle": cfg.bundle, "sigma": cfg.sigma, "seed": cfg.seed,
                    **dict(cfg.posterior_options.get("fit", {}))}
        model = est.fit(model, samples, ctx.axis0, fit_opts)
        posts = model.posteriors(est.bundle_samples(samples), bundle=cfg.bundle,
                                 repeats=cfg.posterior_repeats, seed=cfg.seed + 1,
                                 average=cfg.posterior_average)
        return self.keep(ctx, model, np.asarray(posts, dtype=np.float64))


class LinePotentialStage(Stage):
    """The 1-D convex potential fitted to the posterior maps: ``potential.npz``."""

    name = "potential"
    outputs = ("potential.npz",)
    keys = ("s", "cells", "potential", "gradient", "metric", "history", "centers")

    def compute(self, ctx: Context) -> Any:
        from ..atlas.config import estimators_for
        from ..geometry.line import fit_line_potential

        cfg = ctx.config
        if ctx.run is None and "potential" in ctx.objects:  # fitted beforehand, e.g. batched
            return ctx.objects["potential"]                # across paths by la.paths.rank
        _, posts = ctx.result("posterior")
        sigma = cfg.sigma if estimators_for(1)[cfg.estimator].smooth_model else 0.0
        pot = fit_line_potential(posts, ctx.axis0, bundle=cfg.bundle, sigma=sigma,
                                 seed=cfg.seed + 2, **dict(cfg.potential_options))
        if ctx.run is not None:
            save_npz(ctx.file("potential.npz"), {k: getattr(pot, k) for k in self.keys})
        return pot

    def load(self, ctx: Context) -> Any:
        from ..geometry.line import LinePotential

        with np.load(ctx.file("potential.npz"), allow_pickle=False) as data:
            return LinePotential(**{k: data[k] for k in self.keys})


class PathStage(Stage):
    """Means, distances, jumps and the metric along the path: ``path.npz``, ``images.npy``,
    ``path.json`` (the run's result, a :class:`PathResult`)."""

    name = "path"
    outputs = ("path.npz", "images.npy", "path.json")

    def compute(self, ctx: Context) -> PathResult:
        _, posts = ctx.result("posterior")
        result = path_fields(posts, ctx.result("potential"))
        result.images = np.asarray(ctx.result("sample"))[:, 0]
        result.config = ctx.config.to_dict()
        if ctx.run is not None:
            save_npz(ctx.file("path.npz"), result.arrays())
            save_npy(ctx.file("images.npy"), result.images)
            save_json(ctx.file("path.json"), summary(result))
        return result

    def load(self, ctx: Context) -> PathResult:
        return PathResult.load(ctx.run.path)


def summary(result: PathResult) -> dict[str, Any]:
    """The scalars of a path (``path.json``)."""
    inner = result.metric[len(result.s) // 10: len(result.s) - len(result.s) // 10]
    return {"points": int(result.s.size), "fisher_length": result.fisher_length,
            "jumps": int(len(result.jumps)), "jump_indices": result.jumps.tolist(),
            "jump_positions": result.jump_positions.tolist(), "threshold": result.threshold,
            "metric_median": float(np.median(inner)), "metric_max": float(result.metric.max()),
            "metric_argmax": float(result.s[int(np.argmax(result.metric))])}


# -- the jump analysis ------------------------------------------------------------------------------
def locate_switch(decode: Any, a: float, b: float, iterations: int = 40) -> float:
    """The switch point between ``a`` and ``b`` by bisection: the position where the decoded
    sample stops being closer to ``x(a)`` than to ``x(b)``."""
    xa, xb = (np.asarray(decode(np.array([[v]])), np.float64).ravel() for v in (a, b))
    lo, hi = float(a), float(b)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        x = np.asarray(decode(np.array([[mid]])), np.float64).ravel()
        if np.linalg.norm(x - xa) <= np.linalg.norm(x - xb):
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return 0.5 * (lo + hi)


def lipschitz_1d(decode: Any, point: float, deltas: np.ndarray) -> Any:
    """``L(delta)`` at ``point`` along the path (both directions), a
    :class:`~latentatlas.geometry.lipschitz.LipschitzProfile` (its ``point`` is (s, 0))."""
    from ..geometry.lipschitz import lipschitz_profile

    point = float(np.clip(point, deltas.max(), 1 - deltas.max()))
    return lipschitz_profile(lambda p: decode(np.asarray(p)[:, :1]), np.array([point, 0.0]),
                             deltas, directions=np.array([[1.0, 0.0], [-1.0, 0.0]]))


class JumpsStage(AnalysisStage):
    """Stage ``jumps`` (see the module docstring). Options: ``images`` (samples shown on each
    side), ``deltas`` (step sizes of the Lipschitz profiles), ``lipschitz`` (bool)."""

    name = "jumps"
    outputs = ("jumps.npz", "jumps.json")

    @classmethod
    def defaults(cls, source: Any, source_defaults: Mapping[str, Any]) -> dict[str, Any]:
        return {"images": 4, "deltas": [10.0 ** -k for k in range(1, 8)], "lipschitz": True}

    def compute(self, ctx: Context) -> dict[str, Any]:
        opts = self.options(ctx)
        result: PathResult = ctx.result("path")
        samples = np.asarray(ctx.result("sample"))
        n = max(1, min(int(opts["images"]), samples.shape[1]))
        s, jumps = result.s, result.jumps
        arrays: dict[str, np.ndarray] = {
            "jumps": np.asarray(jumps, np.int64),
            "before": samples[jumps, :n] if len(jumps) else np.zeros((0, n, *samples.shape[2:])),
            "after": samples[jumps + 1, :n] if len(jumps) else np.zeros((0, n,
                                                                        *samples.shape[2:]))}
        scalars: dict[str, Any] = {"jumps": [], "smooth": None}
        decode = getattr(ctx.source, "make_decoder", None)
        if opts["lipschitz"] and decode is not None:
            decode = decode()
            deltas = np.asarray(opts["deltas"], np.float64)
            profiles = []
            for i in jumps:
                where = locate_switch(decode, float(s[i]), float(s[i + 1]))
                prof = lipschitz_1d(decode, where, deltas)
                profiles.append(prof.lipschitz)
                scalars["jumps"].append({"index": int(i), "between": [float(s[i]),
                                         float(s[i + 1])], "switch": where,
                                         "lipschitz_slope": prof.slope})
            calm = int(np.argmin(np.abs(result.distances - np.median(result.distances))))
            prof = lipschitz_1d(decode, 0.5 * float(s[calm] + s[calm + 1]), deltas)
            scalars["smooth"] = {"index": calm, "lipschitz_slope": prof.slope}
            arrays["deltas"] = deltas
            arrays["lipschitz"] = np.stack([*profiles, prof.lipschitz])
        else:
            scalars["jumps"] = [{"index": int(i), "between": [float(s[i]), float(s[i + 1])]}
                                for i in jumps]
        if ctx.run is not None:
            save_npz(ctx.file("jumps.npz"), arrays)
            save_json(ctx.file("jumps.json"), scalars)
        return {"scalars": scalars, "arrays": arrays}

    def load(self, ctx: Context) -> dict[str, Any]:
        scalars = json.loads(ctx.file("jumps.json").read_text())
        with np.load(ctx.file("jumps.npz"), allow_pickle=False) as data:
            return {"scalars": scalars, "arrays": {k: data[k] for k in data.files}}
