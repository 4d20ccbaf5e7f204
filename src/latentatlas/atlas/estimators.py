"""The posterior estimators of the pipeline, by name (a registry, not a branch on a string).

An :class:`Estimator` builds a ``la.posterior`` model for a source and a grid, fits it on the
samples of the grid points, and says which samples its bundles come from. Models are constructed
under a seeded RNG (their initial weights are a function of the run seed: two runs of the same
config train the same network). Register a new one with :func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["ESTIMATORS", "HELD_OUT_SEED", "Estimator", "register"]

HELD_OUT_SEED = 1_000_003
"""Offset of the run seed for the fresh held-out draws of the trained estimators."""


@dataclass(frozen=True)
class Estimator:
    """How one posterior estimator runs in the pipeline.

    Attributes:
        name: registry key (the config's ``estimator``).
        make: ``(sample_shape, grid_shape, init_options) -> model``.
        fit: ``(model, samples (P, S, *shape), axis0, axis1, fit_options) -> model``; the options
            hold ``bundle``, ``sigma``, ``seed``, ``checkpoint``, ``progress`` and the config's
            ``posterior_options["fit"]``.
        bundle_samples: the samples (P, S', *shape) whose bundles give the posterior maps.
        smooth_posteriors: the maps must be smoothed by the target kernel (``sigma`` cells)
            before the potential fit, because the estimator was not trained on smoothed targets
            (the fit smooths its model posteriors by the same kernel: targets and model match).
        min_samples: ``(samples_per_point, bundle) -> error message or None``.
        split: ``(samples (P, S, ...), fit_options) -> (seen (P, S1, ...), held_out (P, S2, ...)
            or None)``: the samples the estimator was fitted on and samples it never saw (None:
            the pipeline draws ``samples_per_point`` fresh ones, see ``fresh_draws``). The
            pipeline's posterior maps come from the held-out ones, and the gap between the two
            is recorded (:func:`~latentatlas.atlas.compare.posterior_gap`). Default (None): no
            split, ``bundle_samples`` for both roles.
        fresh_draws: the held-out samples are fresh draws of the source at every grid point
            (seed ``config.seed + HELD_OUT_SEED``), as many as the store has: the trained
            estimators' own validation split (10 %) is too small for maps whose bundle centres
            scatter by ``sqrt(K / S_eff)`` posterior widths (that scatter widens the log-mean
            map and lowers the metric by about ``K / S_eff``).
    """

    name: str
    make: Callable[[tuple[int, ...], tuple[int, int], dict[str, Any]], Any]
    fit: Callable[..., Any]
    bundle_samples: Callable[[np.ndarray], np.ndarray]
    smooth_posteriors: bool = False
    min_samples: Callable[[int, int], str | None] = lambda s, k: None
    split: Callable[[np.ndarray, dict[str, Any]], tuple[np.ndarray, np.ndarray | None]] | None = None
    fresh_draws: bool = False

    def samples_for_maps(self, samples: np.ndarray, fit_options: dict[str, Any]
                         ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(seen, held_out)`` samples (see ``split``); ``held_out`` None when there are none."""
        if self.split is None:
            return self.bundle_samples(samples), None
        return self.split(samples, fit_options)

    def check(self, samples_per_point: int, bundle: int) -> None:
        """Raise :class:`ValueError` if the budget does not suit this estimator."""
        message = self.min_samples(samples_per_point, bundle)
        if message:
            raise ValueError(message)

    def build(self, sample_shape: tuple[int, ...], grid_shape: tuple[int, int],
              init_options: dict[str, Any], seed: int) -> Any:
        """The model, with initial weights drawn from ``seed`` (the global RNG is untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.make(tuple(sample_shape), tuple(grid_shape), dict(init_options))


ESTIMATORS: dict[str, Estimator] = {}


def register(estimator: Estimator) -> Estimator:
    """Add an estimator to :data:`ESTIMATORS` (replacing one of the same name)."""
    ESTIMATORS[estimator.name] = estimator
    return estimator


# -- grid: a network with a softmax over the grid (the paper's estimator) -------------------------
def _make_grid(sample_shape: tuple[int, ...], grid_shape: tuple[int, int],
               init: dict[str, Any]) -> Any:
    from ..posterior import GridPosterior

    return GridPosterior(sample_shape, grid_shape, **init)


def _fit_trained(model: Any, samples: np.ndarray, axis0: np.ndarray, axis1: np.ndarray,
                 options: dict[str, Any]) -> Any:
    model.fit(samples, axis0, axis1, **options)
    return model


def _validation_split(samples: np.ndarray, options: dict[str, Any]
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    # the samples the trained estimators (grid, flow) fitted on: all but their validation split
    # (la.posterior.bundles.training_bundles, recomputed here)
    from ..posterior.bundles import sample_split

    s = samples.shape[1]
    if options.get("max_samples") is not None:
        s = min(s, int(options["max_samples"]))
    val_fraction = float(options.get("val_fraction", 0.1))
    if val_fraction == 0:
        return np.asarray(samples[:, :s]), None
    train, _ = sample_split(s, int(options["bundle"]), int(options.get("neighbours", 1)),
                            val_fraction, int(options.get("seed", 0)))
    return np.asarray(samples[:, train]), None


register(Estimator("grid", _make_grid, _fit_trained, lambda x: x, split=_validation_split,
                   fresh_draws=True))


# -- flow: a conditional normalizing flow p(t | bundle) ------------------------------------------
def _make_flow(sample_shape: tuple[int, ...], grid_shape: tuple[int, int],
               init: dict[str, Any]) -> Any:
    from ..posterior import FlowPosterior

    return FlowPosterior(sample_shape, dim=2, **init)


register(Estimator("flow", _make_flow, _fit_trained, lambda x: x, split=_validation_split,
                   fresh_draws=True))


# -- kernel: feature distances to reference samples (no training) --------------------------------
def _make_kernel(sample_shape: tuple[int, ...], grid_shape: tuple[int, int],
                 init: dict[str, Any]) -> Any:
    from ..features.factory import make_features
    from ..posterior import KernelPosterior

    init = dict(init)
    features = make_features(init.pop("features", "pixels"), progress=False)
    return KernelPosterior(features, **init)


def _fit_kernel(model: Any, samples: np.ndarray, axis0: np.ndarray, axis1: np.ndarray,
                options: dict[str, Any]) -> Any:
    # references: the first half of each point's samples (no training: the trained estimators'
    # options such as steps do not apply)
    refs = np.asarray(samples[:, : samples.shape[1] // 2])
    if np.array_equal(refs, np.broadcast_to(refs[:, :1], refs.shape)):
        # a deterministic source repeats one sample per point: one reference each ("mean" mode;
        # the median heuristic of tau then uses the distances between neighbouring points). A
        # random source keeps all of them: mode "auto" then compares distributions (calibrated,
        # tau = 1) when the features are small enough (la.posterior.kernel)
        refs = refs[:, :1]
    kept = {k: v for k, v in options.items() if k in ("batch_size", "progress")}
    model.fit(refs, axis0, axis1, **kept)
    return model


def _kernel_budget(samples: int, bundle: int) -> str | None:
    if samples < 2:
        return (f"samples_per_point: the kernel estimator keeps half of the samples of each "
                f"point as references and bundles the other half; expected >= 2, got {samples}")
    if bundle > samples - samples // 2:
        return (f"bundle: the kernel estimator keeps half of the {samples} samples per point as "
                f"references; expected at most {samples - samples // 2}, got {bundle}")
    return None


def _kernel_split(samples: np.ndarray, options: dict[str, Any]
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    # references (the first half) are what the kernel "saw"; the second half is held out
    half = samples.shape[1] // 2
    return np.asarray(samples[:, :half]), np.asarray(samples[:, half:])


register(Estimator("kernel", _make_kernel, _fit_kernel,
                   lambda x: x[:, x.shape[1] // 2:], smooth_posteriors=True,
                   min_samples=_kernel_budget, split=_kernel_split))
