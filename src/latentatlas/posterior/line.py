"""Posteriors on a 1-D grid: p(s | x_1..x_K) for the points s_1..s_P of a path.

Two estimators, registered by name in :data:`LINE_ESTIMATORS` (the 1-D counterpart of
:data:`latentatlas.atlas.estimators.ESTIMATORS`):

- ``"kernel"`` (:class:`LineKernelPosterior`, no training): feature distances to the reference
  embedding ``r_j`` of each point (the mean embedding of its reference samples),
  ``log p(s_j | x_1..x_K) = -(K / (2 tau^2)) ||e_bar - r_j||^2 + const``, the exact Bayes posterior
  (flat prior on the grid) when ``E(x) ~ N(mu(s), tau^2 I)``. With a stochastic generator ``tau^2``
  is the pooled within-point variance of the features (so the posterior, and the metric fitted to
  it, is in absolute units); with a deterministic one (every sample of a point identical) ``tau`` is
  the median distance between neighbouring references (the feature-noise kernel of the planes).
  With noise the squared distances are debiased for the references' own sampling noise
  (``E ||e_bar - r_j||^2 = ||mu_i - mu_j||^2 + tr/K + tr/n_j``, ``tr`` the pooled within-point
  feature variance summed over features, ``n_j`` the samples of reference j: ``tr/n_j`` is
  subtracted; otherwise a bundle's own point, whose reference leaves the bundle out, scores
  ``K tr / (2 tau^2) (1/(n-K) - 1/n)`` nats too low: 0.85 nats for 1024 pixels, n = 50).
- ``"grid"`` (:class:`LineGridPosterior`): the paper's estimator in 1-D, a network
  (per-sample MLP encoder, mean over the bundle, linear softmax head over the P points) trained by
  cross-entropy against Gaussian targets ``sigma`` cells wide.

Every posterior map is a (P, P) array: row i is the combined posterior of R bundles of K samples
drawn at point i (``"log"``: geometric mean renormalised, the Bregman model; ``"probability"``:
the mixture).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._util import check_choice, check_int
from ..io import Configurable

__all__ = ["LINE_ESTIMATORS", "LineEstimator", "LineGridPosterior", "LineKernelPosterior",
           "bundle_indices", "combine"]


def bundle_indices(points: int, pool: int, bundle: int, repeats: int, seed: int) -> np.ndarray:
    """(P, R, K) indices of R bundles of K distinct samples out of ``pool`` at each point."""
    rng = np.random.default_rng(seed)
    keys = rng.random((points, repeats, pool))
    return np.argsort(keys, axis=-1)[..., :bundle]


def combine(logp: Tensor, average: str = "log") -> Tensor:
    """Combine R bundle log-posteriors (P, R, G) into posteriors (P, G) (rows sum to 1)."""
    check_choice(average, "average", ("log", "probability"))
    if average == "log":
        return torch.softmax(logp.mean(1), dim=-1)
    return torch.softmax(logp, dim=-1).mean(1)


class _LineMap:
    """Shared part of the 1-D posteriors: bundles -> (B, P) log-posteriors -> posterior maps."""

    def log_posterior(self, bundles: Tensor) -> Tensor:  # (B, K, *shape) -> (B, P)
        raise NotImplementedError

    def posteriors(self, samples: Any, bundle: int, repeats: int = 1, seed: int = 0,
                   average: str = "log", batch: int = 256) -> np.ndarray:
        """Posterior maps (P', P) of ``samples`` (P', S, *shape): row i combines R bundles of
        ``bundle`` samples of point i (:func:`combine`)."""
        x = torch.as_tensor(np.asarray(samples))
        p, s = x.shape[:2]
        bundle = check_int(bundle, "bundle", minimum=1, maximum=s)
        idx = torch.as_tensor(bundle_indices(p, s, bundle, repeats, seed))
        rows = []
        for start in range(0, p, max(1, batch // repeats)):
            stop = min(p, start + max(1, batch // repeats))
            pts = torch.arange(start, stop)[:, None, None]
            b = x[pts, idx[start:stop]]  # (n, R, K, *shape)
            logp = self.log_posterior(b.reshape(-1, bundle, *x.shape[2:]))
            rows.append(combine(logp.reshape(stop - start, repeats, -1), average))
        return torch.cat(rows).double().numpy()


class LineKernelPosterior(_LineMap, Configurable, nn.Module):
    """The kernel posterior on a 1-D grid (see the module docstring).

    Args:
        features: a feature name of :func:`latentatlas.features.factory.make_features`
            (``"pixels"``, ``"classifier"``, ``"clip:PATH"``) or a callable (N, *shape) -> (N, F)
            (a callable cannot be written to a run folder).
        tau: kernel width; None: estimated in :meth:`fit` (see the module docstring).
        debias: subtract the references' noise from the squared distances (module docstring).
    """

    def __init__(self, features: Any = "pixels", tau: float | None = None,
                 debias: bool = True, project: bool | str = "auto") -> None:
        nn.Module.__init__(self)
        self.debias = bool(debias)
        if project not in (True, False, "auto"):
            raise ValueError(f"project: expected True, False or 'auto', got {project!r}")
        self.project = project
        if isinstance(features, str):
            from ..features.factory import make_features

            features = make_features(features, progress=False)
        if not callable(features):
            raise ValueError(f"features: expected a feature name or a callable E(x) -> (N, F), "
                             f"got {type(features).__qualname__}")
        if tau is not None and not (isinstance(tau, int | float) and math.isfinite(tau)
                                    and tau > 0):
            raise ValueError(f"tau: expected a positive number or None, got {tau!r}")
        object.__setattr__(self, "features", features)
        self.register_buffer("s", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("reference", torch.zeros(0, dtype=torch.float64))  # (P, F)
        self.register_buffer("tau", torch.tensor(float(tau or 0.0), dtype=torch.float64))
        self.register_buffer("noise", torch.tensor(False))
        self.register_buffer("count", torch.tensor(0))
        self.register_buffer("trace", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("basis", torch.zeros(0, dtype=torch.float64))  # (F, m) or empty
        self.register_buffer("center", torch.zeros(0, dtype=torch.float64))  # (F,)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        for name in ("s", "reference", "basis", "center"):
            state_dict.setdefault(prefix + name, torch.zeros(0, dtype=torch.float64))
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        if prefix + "trace" not in state_dict:  # saved before the debiasing: none
            state_dict[prefix + "trace"] = torch.tensor(0.0, dtype=torch.float64)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def embed(self, x: Any, batch: int = 2048) -> Tensor:
        """Features of samples (A, B, *shape) -> (A, B, F) float64."""
        x = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
        flat = x.reshape(-1, *x.shape[2:])
        outs = []
        with torch.no_grad():
            for i in range(0, len(flat), batch):
                chunk = flat[i:i + batch]
                outs.append(torch.as_tensor(self.features(chunk.float())).double()
                            .reshape(len(chunk), -1))
        e = torch.cat(outs)
        if self.basis.numel():
            e = (e - self.center) @ self.basis
        return e.reshape(x.shape[0], x.shape[1], -1)

    def fit(self, samples: Any, s: Any) -> LineKernelPosterior:
        """Reference embeddings: the mean embedding of each point's samples (P, S, *shape) at the
        points ``s`` (P,)."""
        x = np.asarray(samples)
        s = np.asarray(s, dtype=np.float64)
        if x.ndim < 3 or x.shape[0] != s.size:
            raise ValueError(f"samples: expected (P={s.size}, S, *sample_shape), got {x.shape}")
        self.basis = torch.zeros(0, dtype=torch.float64)
        e = self.embed(x)  # (P, S, F)
        self.s = torch.as_tensor(s)
        self.reference = e.mean(1)
        self.count = torch.tensor(e.shape[1])
        if float(self.tau) == 0.0:
            within = e.var(1, unbiased=True).mean() if e.shape[1] > 1 else torch.tensor(0.0)
            project = self.project if self.project != "auto" else e.shape[-1] > e.shape[0]
            if float(within) > 1e-12 * float(e.var() + 1e-300) and project:
                e = self._signal_subspace(e, float(within))
                self.reference = e.mean(1)
                within = e.var(1, unbiased=True).mean()
            if float(within) > 1e-12 * float(e.var() + 1e-300):
                self.tau = within.sqrt().double()
                self.noise = torch.tensor(True)
                self.trace = (within * e.shape[-1]).double()
            else:  # deterministic: median distance between neighbouring references
                step = (self.reference[1:] - self.reference[:-1]).norm(dim=-1)
                pos = step[step > 0]
                self.tau = (pos.median() if pos.numel() else torch.tensor(1.0)).double()
        return self

    def _signal_subspace(self, e: Tensor, within: float) -> Tensor:
        """Keep the principal directions of the references (P, F) whose singular values exceed
        the largest one of pure reference noise, ``sqrt(within / S) (sqrt(P) + sqrt(F))`` (the
        Marchenko-Pastur edge); sets ``basis``/``center`` and returns ``e`` projected (P, S, m)."""
        ref = e.mean(1)
        center = ref.mean(0)
        _, sv, vh = torch.linalg.svd(ref - center, full_matrices=False)
        p, n, f = e.shape
        edge = math.sqrt(within / n) * (math.sqrt(p) + math.sqrt(f))
        m = max(1, int((sv > edge).sum()))
        self.center, self.basis = center, vh[:m].T.contiguous()
        return (e - center) @ self.basis

    def _log_post(self, e_bar: Tensor, k: int, own: Tensor | None = None) -> Tensor:
        """(B, F) bundle mean embeddings -> (B, P) log-posteriors; ``own`` (B,) the point each
        bundle was drawn at, whose reference then leaves the bundle's samples out."""
        d2 = torch.cdist(e_bar, self.reference).pow(2)
        n = int(self.count)
        if own is not None and n > k:
            ref = (n * self.reference[own] - k * e_bar) / (n - k)
            d2[torch.arange(len(own)), own] = (e_bar - ref).pow(2).sum(-1)
        if bool(self.noise) and self.debias:  # E d2_j = |mu_i - mu_j|^2 + tr/K + tr/n_j
            d2 = d2 - float(self.trace) / n
            if own is not None and n > k:
                d2[torch.arange(len(own)), own] -= float(self.trace) * (1 / (n - k) - 1 / n)
        return torch.log_softmax(-k * d2 / (2 * self.tau ** 2), dim=-1)

    def log_posterior(self, bundles: Tensor) -> Tensor:
        """(B, K, *shape) new bundles -> (B, P) normalised log-posteriors."""
        if self.reference.numel() == 0:
            raise ValueError("LineKernelPosterior: call fit(samples, s) first")
        return self._log_post(self.embed(bundles).mean(1), bundles.shape[1])

    def posteriors(self, samples: Any, bundle: int, repeats: int = 1, seed: int = 0,
                   average: str = "log", batch: int = 256) -> np.ndarray:
        """Posterior maps (P, P) of bundles of the samples the references came from (P, S,
        *shape): each bundle's own point uses the mean of the point's other S - K samples as its
        reference (leave the bundle out: no sample is compared with itself, and the reference
        noise is that of S samples instead of S/2). Other sample sets: see
        :meth:`_LineMap.posteriors`."""
        x = np.asarray(samples)
        if self.reference.numel() == 0:
            raise ValueError("LineKernelPosterior: call fit(samples, s) first")
        if x.shape[:2] != (self.reference.shape[0], int(self.count)):
            return super().posteriors(x, bundle, repeats, seed, average, batch)
        p, n = x.shape[:2]
        bundle = check_int(bundle, "bundle", minimum=1, maximum=n)
        e = self.embed(x)  # (P, S, F)
        idx = torch.as_tensor(bundle_indices(p, n, bundle, repeats, seed))  # (P, R, K)
        e_bar = e[torch.arange(p)[:, None, None], idx].mean(2).reshape(p * repeats, -1)
        own = torch.arange(p).repeat_interleave(repeats)
        logp = self._log_post(e_bar, bundle, own)
        return combine(logp.reshape(p, repeats, -1), average).numpy()


class LineGridPosterior(_LineMap, Configurable, nn.Module):
    """A softmax over the P points of a path, trained on bundles (see the module docstring).

    Args:
        sample_shape: shape of one sample; points: P; hidden: encoder widths; embed: F.
    """

    def __init__(self, sample_shape: tuple[int, ...], points: int,
                 hidden: tuple[int, ...] = (128, 128), embed: int = 64) -> None:
        nn.Module.__init__(self)
        d = int(np.prod(sample_shape))
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(d, h), nn.SiLU()]
            d = h
        self.encoder = nn.Sequential(*layers, nn.Linear(d, embed))
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(embed, int(points)))
        self.register_buffer("center", torch.zeros(int(np.prod(sample_shape))))
        self.register_buffer("scale", torch.ones(()))

    def log_posterior(self, bundles: Tensor) -> Tensor:
        """(B, K, *shape) -> (B, P) normalised log-posteriors."""
        ref = self.center
        x = bundles.reshape(*bundles.shape[:2], -1).to(ref.dtype)
        h = self.encoder((x - ref) / self.scale).mean(1)
        return torch.log_softmax(self.head(h), dim=-1)

    def fit(self, samples: Any, s: Any, bundle: int, sigma: float = 1.0, steps: int = 1500,
            batch: int = 128, lr: float = 2e-3, seed: int = 0) -> LineGridPosterior:
        """Cross-entropy training on bundles of ``bundle`` samples of ``samples`` (P, S, *shape)
        against Gaussian targets ``sigma`` cells wide centred on each bundle's point."""
        x = torch.as_tensor(np.asarray(samples)).float()
        p, n = x.shape[:2]
        flat = x.reshape(p, n, -1)
        self.center = flat.mean((0, 1))
        self.scale = (flat.std() + 1e-8).reshape(())
        idx = torch.arange(p, dtype=torch.float64)
        if sigma > 0:
            t = torch.exp(-(idx[:, None] - idx[None]) ** 2 / (2 * sigma ** 2))
        else:
            t = torch.eye(p, dtype=torch.float64)
        targets = (t / t.sum(1, keepdim=True)).float()
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
        self.train()
        for _ in range(steps):
            pts = torch.randint(p, (batch,), generator=gen)
            pick = torch.argsort(torch.rand(batch, n, generator=gen), dim=1)[:, :bundle]
            b = flat[pts[:, None], pick]
            loss = -(targets[pts] * self.log_posterior(b)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        self.eval()
        return self

    def posteriors(self, *args: Any, **kwargs: Any) -> np.ndarray:  # no autograd
        with torch.no_grad():
            return super().posteriors(*args, **kwargs)


# -- the registry -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LineEstimator:
    """How one 1-D posterior estimator runs in the path pipeline.

    Attributes:
        name: registry key (the config's ``estimator``).
        make: ``(sample_shape, points, init_options) -> model``.
        fit: ``(model, samples (P, S, *shape), s (P,), fit_options) -> model``; the options hold
            ``bundle``, ``sigma``, ``seed`` and the config's ``posterior_options["fit"]``.
        bundle_samples: the samples (P, S', *shape) whose bundles give the posterior maps.
        smooth_model: the potential fit smooths its model posteriors by ``sigma`` cells (the
            estimator was trained on targets that wide).
        min_samples: ``(samples_per_point, bundle) -> error message or None``.
    """

    name: str
    make: Callable[[tuple[int, ...], int, dict[str, Any]], Any]
    fit: Callable[..., Any]
    bundle_samples: Callable[[np.ndarray], np.ndarray]
    smooth_model: bool = False
    min_samples: Callable[[int, int], str | None] = lambda s, k: None

    def check(self, samples_per_point: int, bundle: int) -> None:
        """Raise :class:`ValueError` if the budget does not suit this estimator."""
        message = self.min_samples(samples_per_point, bundle)
        if message:
            raise ValueError(message)

    def build(self, sample_shape: tuple[int, ...], points: int, init: dict[str, Any],
              seed: int) -> Any:
        """The model, with initial weights drawn from ``seed`` (the global RNG is untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.make(tuple(sample_shape), int(points), dict(init))


def _fit_kernel(model: Any, samples: np.ndarray, s: np.ndarray, options: dict[str, Any]) -> Any:
    return model.fit(np.asarray(samples), s)


def _kernel_budget(samples: int, bundle: int) -> str | None:
    if samples >= 2 and bundle > samples - 1:
        return (f"bundle: the kernel estimator compares each bundle with the point's other "
                f"samples; expected at most samples_per_point - 1 = {samples - 1}, got {bundle}")
    return None


def _fit_grid(model: Any, samples: np.ndarray, s: np.ndarray, options: dict[str, Any]) -> Any:
    keep = {k: v for k, v in options.items() if k in ("bundle", "sigma", "steps", "batch", "lr",
                                                       "seed")}
    return model.fit(samples, s, **keep)


LINE_ESTIMATORS: dict[str, LineEstimator] = {
    "kernel": LineEstimator("kernel", lambda shape, p, init: LineKernelPosterior(**init),
                            _fit_kernel, lambda x: x, min_samples=_kernel_budget),
    "grid": LineEstimator("grid", lambda shape, p, init: LineGridPosterior(
        shape, p, **{k: v for k, v in init.items() if k != "features"}),
                          _fit_grid, lambda x: x, smooth_model=True),
}
"""The 1-D posterior estimators by name (``"flow"`` is not available for paths)."""
