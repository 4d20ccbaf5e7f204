"""The atlas pipeline's log-mean of bundle posteriors as it was written before the estimators
computed it themselves (commit b2ddf98, ``latentatlas.atlas.log_mean_posteriors``): kept here as an
independent reference for ``PosteriorMap.posteriors(average="log")``."""

from __future__ import annotations

from typing import Any

import numpy as np


def log_mean_posteriors(
    model: Any,
    samples: np.ndarray,
    bundle: int,
    repeats: int,
    seed: int,
    batch_size: int = 1024,
    progress: bool = True,
) -> np.ndarray:
    """Posterior maps of every grid point: the normalised geometric mean over ``repeats`` bundles.

    Bundles are drawn as in the estimators' own ``posteriors`` (point p's bundles depend only on
    ``(seed, p)``: ``choose_distinct(default_rng([seed, p]), repeats, S, bundle)``), but the
    log-posteriors are averaged instead of the probabilities (see :func:`build`).

    Args:
        model: a ``la.posterior`` estimator with ``log_posterior(bundles (B, K, *shape)) ->
            (B, G0 * G1)`` and ``grid_shape``.
        samples: (P, S, *sample_shape).
        bundle: K; repeats: R; seed: bundle seed.

    Returns:
        (P, G0, G1) float64 maps, each summing to 1.
    """
    import torch
    from tqdm.auto import tqdm

    from latentatlas.posterior.bundles import choose_distinct

    samples = np.asarray(samples)
    p_all, s = samples.shape[:2]
    g0, g1 = model.grid_shape
    if bundle > s:
        raise ValueError(f"bundle: expected at most {s} (the samples available per point), got "
                         f"{bundle}")
    out = np.empty((p_all, g0, g1), dtype=np.float64)
    chunk = max(1, batch_size // repeats)
    was_training = model.training
    model.eval()
    try:
        for p0 in tqdm(range(0, p_all, chunk), desc="posteriors", disable=not progress,
                       leave=False):
            p1 = min(p_all, p0 + chunk)
            idx = np.stack([choose_distinct(np.random.default_rng([seed, p]), repeats, s, bundle)
                            for p in range(p0, p1)])
            rows = np.arange(p1 - p0)[:, None, None]
            x = samples[p0:p1][rows, idx].reshape(-1, bundle, *samples.shape[2:])
            with torch.no_grad():
                logp = model.log_posterior(torch.as_tensor(x)).double().cpu().numpy()
            mean = logp.reshape(p1 - p0, repeats, g0 * g1).mean(axis=1)
            mean -= mean.max(axis=1, keepdims=True)
            prob = np.exp(mean)
            out[p0:p1] = (prob / prob.sum(axis=1, keepdims=True)).reshape(p1 - p0, g0, g1)
    finally:
        model.train(was_training)
    return out


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in nats of maps (B, G0, G1) -> (B,) (0 log 0 = 0)."""
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> np.ndarray:
        return np.sum(np.where(a > 0, a * np.log(np.where(a > 0, a, 1) / m), 0), (1, 2))

    return 0.5 * kl(p) + 0.5 * kl(q)
