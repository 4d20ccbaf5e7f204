"""Posterior over a parameter grid: per-sample encoder, mean pooling, softmax over G0 x G1 cells.

:class:`GridPosterior` is the estimator of Lobashev et al. (ICML 2025): a bundle of K samples is
encoded sample by sample, the embeddings are averaged (permutation invariant), and a head outputs
logits over the grid; training minimises the cross-entropy against Gaussian-smoothed targets
(:mod:`latentatlas.posterior.bundles`), so the trained network estimates the posterior convolved
with the target kernel.

:class:`PosteriorMap` holds what every grid-valued estimator shares (``predict``, ``posteriors``,
``posterior_mean``, ``posterior_means``); :class:`~latentatlas.posterior.flow.FlowPosterior` and
:class:`~latentatlas.posterior.kernel.KernelPosterior` use it too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..io import Configurable
from ..training import History, Strategy, train
from . import bundles as B
from .encoders import build_encoder, check_encoder_output

__all__ = ["HEADS", "POOLS", "GridPosterior", "PosteriorMap"]

POOLS = ("embedding", "features")
HEADS = ("cells", "field")

_CHUNK_BYTES = 2**28  # posteriors() reads at most ~256 MB of samples at a time


def _nonneg_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
    return int(value)


def _pos_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def as_torch_samples(array: np.ndarray, dtype: torch.dtype) -> Tensor:
    """Samples as a torch tensor in a compact dtype: integers stay integers, floats -> ``dtype``."""
    arr = np.ascontiguousarray(array)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    t = torch.from_numpy(arr)
    return t if not t.is_floating_point() else t.to(dtype)


def _log_mean(logp: np.ndarray) -> np.ndarray:
    """Normalised geometric mean over axis 1: (P, R, G) log-probabilities -> (P, G) probabilities."""
    mean = logp.mean(axis=1)
    mean -= mean.max(axis=1, keepdims=True)
    prob = np.exp(mean)
    return prob / prob.sum(axis=1, keepdims=True)


class PosteriorMap:
    """Mixin for estimators whose output is a posterior over a 2-D parameter grid.

    Subclasses provide ``sample_shape``, ``grid_shape`` (G0, G1), buffers ``axis0`` (G0,) and
    ``axis1`` (G1,), and :meth:`log_posterior` ``(B, K, *sample_shape) -> (B, G0 * G1)``
    (normalised log-probabilities).
    """

    sample_shape: tuple[int, ...]
    grid_shape: tuple[int, int]
    axis0: Tensor
    axis1: Tensor

    # -- to implement ----------------------------------------------------------------------
    def log_posterior(self, bundles: Tensor) -> Tensor:
        """(B, K, *sample_shape) -> (B, G0 * G1) log-probabilities over the grid."""
        raise NotImplementedError

    def _anchor(self) -> Tensor:
        return self.axis0

    def _require_fit(self) -> None:
        """Raise a ValueError if the estimator cannot predict yet (default: it always can)."""

    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        return self.axis0.detach().cpu().double().numpy(), self.axis1.detach().cpu().double().numpy()

    def _check_bundles(self, bundles: Any) -> Tensor:
        x = bundles if isinstance(bundles, Tensor) else torch.as_tensor(np.asarray(bundles))
        if x.dtype == torch.bool:
            x = x.to(torch.uint8)
        shape = tuple(self.sample_shape)
        if x.dim() != 2 + len(shape) or tuple(x.shape[2:]) != shape or x.shape[0] == 0 or x.shape[1] == 0:
            want = "(B, K" + "".join(f", {s}" for s in shape) + ")"
            raise ValueError(f"bundles: expected shape {want}, got {tuple(x.shape)}")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError("bundles: expected finite values, got NaN/inf entries")
        return x

    # -- bundles -> grid posteriors --------------------------------------------------------
    @torch.no_grad()
    def predict(self, bundles: Any, batch_size: int = 1024) -> Any:
        """Posterior over the grid for each bundle.

        Args:
            bundles: (B, K, *sample_shape) tensor or array (any K; samples of one bundle are
                exchangeable, the result is invariant to their order).
            batch_size: bundles per forward pass.

        Returns:
            (B, G0, G1) probabilities summing to 1: a float64 numpy array for numpy input, a tensor
            (model dtype and device) for tensor input.
        """
        self._require_fit()
        x = self._check_bundles(bundles)
        was_training = getattr(self, "training", False)
        if was_training:
            self.eval()  # type: ignore[attr-defined]
        try:
            out = torch.cat([
                self.log_posterior(x[i : i + batch_size]).exp()
                for i in range(0, x.shape[0], batch_size)
            ])
        finally:
            if was_training:
                self.train()  # type: ignore[attr-defined]
        out = out.reshape(-1, *self.grid_shape)
        if isinstance(bundles, Tensor):
            return out
        out = out.double().cpu().numpy()
        return out / out.sum(axis=(1, 2), keepdims=True)

    def posterior_mean(self, bundles: Any, batch_size: int = 1024) -> np.ndarray:
        """Posterior mean of t for each bundle: (B, K, *sample_shape) -> (B, 2) float64."""
        probs = self.predict(np.asarray(bundles) if not isinstance(bundles, Tensor) else bundles,
                             batch_size)
        probs = probs.double().cpu().numpy() if isinstance(probs, Tensor) else probs
        a0, a1 = self._grid()
        return np.stack([np.einsum("bij,i->b", probs, a0), np.einsum("bij,j->b", probs, a1)], -1)

    def _point_bundles(
        self, samples: Any, bundle: int, repeats: int, seed: int, chunk: int, progress: bool,
        desc: str,
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield ``(p0, p1, x)`` with x (c * R, K, *sample_shape): R bundles of each point p0..p1-1.

        Point p's bundles depend only on ``(seed, p)``, not on the chunking.
        """
        p_all, s, shape = B.check_samples(samples, None, self.sample_shape)
        bundle, repeats = _pos_int(bundle, "bundle"), _pos_int(repeats, "repeats")
        itemsize = np.dtype(getattr(samples, "dtype", np.float64)).itemsize
        chunk = max(1, min(chunk, _CHUNK_BYTES // max(1, s * math.prod(shape) * itemsize)))
        seed = _nonneg_int(seed, "seed")
        if bundle > s:
            raise ValueError(f"bundle: expected at most S = {s} (the samples available per point), "
                             f"got {bundle}")
        for p0 in tqdm(range(0, p_all, chunk), desc=desc, disable=not progress, leave=False):
            p1 = min(p_all, p0 + chunk)
            block = np.asarray(samples[p0:p1])  # (c, S, *shape): one point chunk in memory
            idx = np.stack([
                B.choose_distinct(np.random.default_rng([seed, p]), repeats, s, bundle)
                for p in range(p0, p1)
            ])  # (c, R, K)
            rows = np.arange(p1 - p0)[:, None, None]
            yield p0, p1, block[rows, idx].reshape(-1, bundle, *block.shape[2:])

    def posteriors(
        self,
        samples: Any,
        bundle: int,
        repeats: int = 8,
        seed: int = 0,
        batch_size: int = 1024,
        progress: bool = True,
        average: str = "log",
    ) -> np.ndarray:
        """Estimated posterior maps of every grid point, averaged over random bundles.

        For each grid point p, ``repeats`` bundles of ``bundle`` distinct samples are drawn from
        point p only (``choose_distinct(default_rng([seed, p]), repeats, S, bundle)``) and their
        estimated posteriors over the grid are averaged.

        Args:
            samples: (P, S, *sample_shape) numpy or zarr array (read point chunk by point chunk,
                at most ~256 MB at a time). Usually the grid's own samples (P = G0 * G1), but any
                set of points works: row p is the map of the bundles of samples[p].
            bundle: K, samples per bundle (<= S).
            repeats: R, bundles per point.
            seed: point p's bundles depend only on ``(seed, p)``.
            batch_size: bundles per forward pass.
            progress: tqdm progress bar.
            average: ``"log"`` (default): the normalised geometric mean of the R posteriors
                (mean of the log-posteriors, then softmax over the grid) -- the average the
                potential fit's model posterior is built with; ``"probability"``: the mixture
                (arithmetic mean of the R probability maps).

        Returns:
            (P, G0, G1) float64; each map sums to 1.
        """
        if average not in ("log", "probability"):
            raise ValueError(f"average: expected 'log' or 'probability', got {average!r}")
        self._require_fit()
        p_all = B.check_samples(samples, None, self.sample_shape)[0]
        g0, g1 = self.grid_shape
        out = np.empty((p_all, g0, g1), dtype=np.float64)
        repeats_ = _pos_int(repeats, "repeats")
        chunk = max(1, batch_size // repeats_)
        blocks = self._point_bundles(samples, bundle, repeats, seed, chunk, progress, "posteriors")
        if average == "probability":
            for p0, p1, x in blocks:
                probs = self.predict(x, batch_size)  # (c * R, G0, G1) float64
                out[p0:p1] = probs.reshape(p1 - p0, repeats_, g0, g1).mean(axis=1)
            return out / out.sum(axis=(1, 2), keepdims=True)
        was_training = getattr(self, "training", False)
        self.eval()  # type: ignore[attr-defined]
        try:
            for p0, p1, x in blocks:
                with torch.no_grad():  # (c * R, G0 * G1) log-probabilities
                    logp = self.log_posterior(torch.as_tensor(x)).double().cpu().numpy()
                out[p0:p1] = _log_mean(logp.reshape(p1 - p0, repeats_, g0 * g1)).reshape(
                    p1 - p0, g0, g1)
        finally:
            self.train(was_training)  # type: ignore[attr-defined]
        return out

    def posterior_means(
        self, samples: Any, bundle: int, repeats: int = 8, seed: int = 0, batch_size: int = 1024,
        progress: bool = True,
    ) -> np.ndarray:
        """Posterior means of R random bundles at every point: (P, S, ...) -> (P, R, 2) float64.

        Bundles are drawn exactly as in :meth:`posteriors` (same seed, same bundles).
        """
        p_all = B.check_samples(samples, None, self.sample_shape)[0]
        repeats_ = _pos_int(repeats, "repeats")
        out = np.empty((p_all, repeats_, 2), dtype=np.float64)
        chunk = max(1, batch_size // repeats_)
        for p0, p1, x in self._point_bundles(samples, bundle, repeats, seed, chunk, progress,
                                             "posterior means"):
            out[p0:p1] = self.posterior_mean(x, batch_size).reshape(p1 - p0, repeats_, 2)
        return out


class GridPosterior(PosteriorMap, Configurable, nn.Module):
    """Softmax posterior over a G0 x G1 parameter grid from bundles of samples.

    Architecture: per-sample encoder E (``encoder``), then a head -> G0 * G1 logits, with the mean
    over the K samples of a bundle taken at one of two places (``pool``):

    - ``"embedding"``: mean of the K embeddings, then the MLP head (``Linear, GELU, Linear, GELU,
      Linear``);
    - ``"features"``: the head's hidden layers per sample, the mean of the K hidden feature vectors,
      then the last ``Linear``. The logits are then linear in the bundle's mean feature vector,
      which is the form of the exact log-posterior of K i.i.d. samples of an exponential family
      (``K (t . mean_i T(x_i) - log Z(t))``, with T learned): the network only has to learn
      sufficient statistics, not how they combine.

    Mean pooling makes the estimate invariant to the order of a bundle's samples and accepts any
    K; for K different from the training K the logits are scaled by ``K / K_fit``, the N-scaling
    of the log-posterior (``p(t | x_1..x_N)^(1/N) -> exp(-D(t, t'))``; exact for ``"features"``
    on an exponential family).

    Args:
        sample_shape: shape of one sample, e.g. ``(L, L)`` spins, ``(L,)`` TASEP, ``(m,)`` vectors.
        grid_shape: (G0, G1).
        encoder: ``"auto"``, ``"lattice"`` (CNN, periodic padding), ``"chain"`` (1-D CNN, zero
            padding), ``"image"``, ``"mlp"``, or any ``nn.Module`` mapping ``(N, *sample_shape)`` to
            ``(N, embed)``. A user module that is not a latentatlas ``Configurable`` cannot be
            written by ``la.save`` (it raises ValueError: save the ``state_dict`` yourself).
        embed: embedding size.
        hidden: hidden width of the head.
        encoder_options: extra keyword arguments for the built-in encoder (``channels``,
            ``products``, ``hidden``, ``depth``, ``periodic``, ``blocks``).
        pool: ``"embedding"`` or ``"features"`` (where the bundle mean is taken, see above).
        head: the last linear map of the head, ``hidden`` features -> G0 * G1 logits:
            ``"cells"`` (default) learns one weight vector and bias per grid cell; ``"field"``
            makes them a smooth function of the cell's coordinates, ``[w(t), b(t)] = F(t)`` with F
            an MLP (``field_hidden`` wide) of the standardised grid point t, so neighbouring cells
            share what they learn. With ``pool="features"`` the logits are then
            ``w(t) . mean_k h(x_k) + b(t)``, the exponential-family form ``K (eta(t) . T - A(t))``
            with smooth eta and A.
        field_hidden: width of F (``head="field"`` only).

    Buffers (saved by ``la.save``): ``axis0`` (G0,), ``axis1`` (G1,), ``x_loc``/``x_scale``
    (input standardisation), ``fit_bundle`` (K of training, 0 before ``fit``).
    """

    def __init__(
        self,
        sample_shape: Sequence[int],
        grid_shape: Sequence[int],
        encoder: str | nn.Module = "auto",
        embed: int = 64,
        hidden: int = 128,
        encoder_options: dict | None = None,
        pool: str = "embedding",
        head: str = "cells",
        field_hidden: int = 64,
    ) -> None:
        nn.Module.__init__(self)
        if pool not in POOLS:
            raise ValueError(f"pool: expected one of {POOLS}, got {pool!r}")
        if head not in HEADS:
            raise ValueError(f"head: expected one of {HEADS}, got {head!r}")
        self.pool = pool
        self.head_kind = head
        gs = tuple(int(g) for g in grid_shape)
        if len(gs) != 2 or min(gs) < 2:
            raise ValueError(f"grid_shape: expected (G0, G1) with G0, G1 >= 2, got {grid_shape!r}")
        self.grid_shape = gs
        self.embed = _pos_int(embed, "embed")
        self.encoder = build_encoder(encoder, sample_shape, self.embed, encoder_options)
        self.sample_shape = tuple(int(s) for s in sample_shape)
        layers: list[nn.Module] = [nn.Linear(self.embed, hidden), nn.GELU(),
                                   nn.Linear(hidden, hidden), nn.GELU()]
        if head == "cells":
            layers.append(nn.Linear(hidden, gs[0] * gs[1]))
        else:
            fh = _pos_int(field_hidden, "field_hidden")
            self.field = nn.Sequential(nn.Linear(2, fh), nn.GELU(), nn.Linear(fh, fh), nn.GELU(),
                                       nn.Linear(fh, hidden + 1))
        self.head = nn.Sequential(*layers)
        self.register_buffer("axis0", torch.linspace(0.0, 1.0, gs[0]))
        self.register_buffer("axis1", torch.linspace(0.0, 1.0, gs[1]))
        self.register_buffer("x_loc", torch.zeros(()))
        self.register_buffer("x_scale", torch.ones(()))
        self.register_buffer("fit_bundle", torch.zeros((), dtype=torch.long))

    def _anchor(self) -> Tensor:
        return self.head[0].weight

    def embed_samples(self, x: Tensor) -> Tensor:
        """Per-sample embeddings: (N, *sample_shape) -> (N, embed)."""
        w = self._anchor()
        x = (x.to(device=w.device, dtype=w.dtype) - self.x_loc) / self.x_scale
        return check_encoder_output(self.encoder(x), x.shape[0], self.embed)

    def _hidden(self) -> nn.Module:
        """The head's hidden layers: (N, embed) -> (N, hidden)."""
        return self.head[:-1] if self.head_kind == "cells" else self.head

    def _last(self, h: Tensor) -> Tensor:
        """The head's last linear map: (B, hidden) -> (B, G0 * G1) logits."""
        if self.head_kind == "cells":
            return self.head[-1](h)
        a0, a1 = self.axis0.to(h.dtype), self.axis1.to(h.dtype)
        u0 = (2 * a0 - (a0[0] + a0[-1])) / (a0[-1] - a0[0])  # each axis mapped onto [-1, 1]
        u1 = (2 * a1 - (a1[0] + a1[-1])) / (a1[-1] - a1[0])
        t = torch.stack(torch.meshgrid(u0, u1, indexing="ij"), -1).reshape(-1, 2)  # (G, 2)
        wb = self.field(t)  # (G, hidden + 1)
        return h @ wb[:, :-1].T + wb[:, -1]

    def forward(self, bundles: Tensor) -> Tensor:
        """Logits over the grid: (B, K, *sample_shape) -> (B, G0 * G1)."""
        b, k = bundles.shape[:2]
        z = self.embed_samples(bundles.reshape(b * k, *bundles.shape[2:]))
        if self.pool == "features":  # per-sample hidden features, bundle mean, last linear layer
            logits = self._last(self._hidden()(z).reshape(b, k, -1).mean(1))
        else:
            logits = self._last(self._hidden()(z.reshape(b, k, -1).mean(1)))
        fit_k = int(self.fit_bundle)
        return logits * (k / fit_k) if fit_k and k != fit_k else logits

    def log_posterior(self, bundles: Tensor) -> Tensor:
        """(B, K, *sample_shape) -> (B, G0 * G1) log-probabilities."""
        return torch.log_softmax(self(self._check_bundles(bundles)), dim=-1)

    def fit(
        self,
        samples: Any,
        axis0: Any,
        axis1: Any,
        *,
        bundle: int = 4,
        neighbours: int = 1,
        sigma: float = 1.0,
        steps: int = 2000,
        batch_size: int = 128,
        lr: float = 1e-3,
        bundles: int | None = None,
        val_fraction: float = 0.1,
        max_samples: int | None = None,
        progress: bool = True,
        checkpoint: str | None = None,
        seed: int = 0,
        strategy: Strategy | None = None,
        **train_options: Any,
    ) -> GridPosterior:
        """Train on bundles of a grid's samples (cross-entropy against Gaussian-bump targets).

        Args:
            samples: (P, S, *sample_shape), P = G0 * G1 in 'ij' order; numpy or zarr (loaded into
                memory point chunk by point chunk, in its own compact dtype; ``max_samples`` caps
                the samples per point used).
            axis0, axis1: (G0,), (G1,) grid axes (strictly increasing).
            bundle: K, samples per bundle.
            neighbours: K_neib, a bundle's samples come from the K_neib nearest grid points of its
                centre (distance in grid cells; 1 = the centre only, 5 = plus, 9 = 3 x 3 block).
            sigma: width of the target bumps in grid cells (> 0).
            steps, batch_size, lr, checkpoint, seed, progress: see :func:`latentatlas.training.train`.
            bundles: number of distinct training bundles drawn up front (default
                ``min(steps * batch_size, 2**18)``).
            val_fraction: fraction of each point's samples held out for validation bundles
                (early stopping, best weights restored); 0 disables validation.
            strategy: ``la.training.SingleProcess()`` (default) or ``la.training.DataParallel()``
                (DDP over the ``torch.distributed`` group; ``batch_size`` is the global batch).
            **train_options: passed to ``train`` (``patience``, ``val_every``, ``weight_decay``...).

        Returns:
            ``self``; the training ``History`` (losses are KL(target || estimate) in nats per
            bundle) is in ``self.history_``.
        """
        a0, a1 = B.check_axes(axis0, axis1)
        if (a0.size, a1.size) != self.grid_shape:
            raise ValueError(f"axis0, axis1: grid mismatch: the model has grid_shape "
                             f"{self.grid_shape}, got axes of lengths ({a0.size}, {a1.size})")
        p_all, s, _ = B.check_samples(samples, a0.size * a1.size, self.sample_shape)
        bundle = _pos_int(bundle, "bundle")
        kneib = _pos_int(neighbours, "neighbours")
        if not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma: expected a positive bump width in grid cells, got {sigma!r}")
        steps, batch_size = _pos_int(steps, "steps"), _pos_int(batch_size, "batch_size")
        n_bundles = min(steps * batch_size, 2**18) if bundles is None else _pos_int(bundles, "bundles")
        if max_samples is not None:
            s = min(s, _pos_int(max_samples, "max_samples"))
        if bundle > kneib * s:
            raise ValueError(f"bundle: expected at most {kneib * s} (K_neib = {kneib} neighbours x "
                             f"S = {s} samples per point), got {bundle}")

        w = self._anchor()
        data = as_torch_samples(B.load_all(samples, s, progress=progress), w.dtype)
        data = data.reshape(p_all * s, *self.sample_shape)
        params = B.grid_params(a0, a1)
        spacing = np.array([np.diff(a0).mean(), np.diff(a1).mean()])
        neigh = B.neighbours(params, kneib, spacing)
        train_b, val_b = B.training_bundles(s, neigh, bundle, n_bundles, val_fraction, seed)

        with torch.no_grad():
            gen = torch.Generator().manual_seed(seed)
            probe = data[torch.randint(data.shape[0], (min(4096, data.shape[0]),), generator=gen)]
            probe = probe.to(torch.float64)
            loc, scale = float(probe.mean()), float(probe.std())
            self.x_loc.fill_(loc)
            self.x_scale.fill_(scale if scale > 0 and math.isfinite(scale) else 1.0)
            self.axis0.copy_(torch.as_tensor(a0))
            self.axis1.copy_(torch.as_tensor(a1))
            self.fit_bundle.fill_(bundle)
        k0 = torch.as_tensor(B.bump_kernel(a0.size, sigma), dtype=w.dtype, device=w.device)
        k1 = torch.as_tensor(B.bump_kernel(a1.size, sigma), dtype=w.dtype, device=w.device)
        g1 = a1.size

        def loss_fn(flat: Tensor) -> Tensor:
            x = data[flat.cpu()].to(w.device)  # (b, K, *shape)
            point = flat // s
            i, j = (point // g1).to(w.device), (point % g1).to(w.device)
            target = torch.einsum("bki,bkj->bij", k0[i], k1[j]).reshape(flat.shape[0], -1)
            target = target / bundle
            logq = torch.log_softmax(self(x), dim=-1)
            ent = torch.special.xlogy(target, target).sum(-1)
            return (ent - (target * logq).sum(-1)).mean()

        flat_train = torch.as_tensor(train_b.flat(s))
        val = (torch.as_tensor(val_b.flat(s)),) if val_b is not None else None
        self.history_: History = train(
            self, loss_fn, (flat_train,), names=("bundles",), steps=steps, batch_size=batch_size,
            lr=lr, val_fraction=0.0 if val is None else val_fraction, val_data=val,
            checkpoint=checkpoint, progress=progress, seed=seed, desc="GridPosterior.fit",
            strategy=strategy, **train_options,
        )
        return self
