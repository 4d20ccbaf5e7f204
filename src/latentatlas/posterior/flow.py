"""Posterior over continuous parameters: encoder + mean pooling + a conditional normalizing flow.

:class:`FlowPosterior` encodes the K samples of a bundle one by one, averages the embeddings (the
context), and models ``p(t | x_1..x_K)`` with a conditional flow of ``la.flows`` over t in any
dimension d >= 1, standardised by the training parameters' bounding box. Training maximises the
likelihood of the bundle's parameter: t' itself, jittered uniformly over its grid cell (K_neib = 1)
or over the cells of its neighbourhood (K_neib > 1) so that the flow sees a continuous prior.
On a 2-D grid, :meth:`~FlowPosterior.posteriors` evaluates the density at the grid points and
normalises it, giving the same maps as the other estimators.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..io import Configurable
from ..training import History, Strategy, train
from . import bundles as B
from .encoders import build_encoder, check_encoder_output
from .grid import PosteriorMap, _nonneg_int, _pos_int, as_torch_samples

__all__ = ["FLOWS", "FlowPosterior"]

log = logging.getLogger(__name__)

FLOWS = {"nsf": "NSF", "maf": "MAF", "realnvp": "RealNVP"}


class FlowPosterior(PosteriorMap, Configurable, nn.Module):
    """Conditional-flow posterior ``p(t | x_1..x_K)`` over continuous t in R^d.

    Args:
        sample_shape: shape of one sample.
        dim: d, the number of parameters.
        encoder: as in :class:`~latentatlas.posterior.GridPosterior` (``"auto"``, a name, or an
            ``nn.Module`` mapping ``(N, *sample_shape)`` to ``(N, embed)``; a user module that is
            not a latentatlas ``Configurable`` cannot be written by ``la.save``).
        embed: embedding (= flow context) size.
        flow: ``"nsf"`` (``la.flows.NSF``), ``"maf"``, ``"realnvp"``, or a ``la.flows.Flow`` with
            ``features == dim`` and ``context == embed``.
        flow_options: keyword arguments of the flow class (``transforms``, ``hidden``, ...).
        encoder_options: keyword arguments of the built-in encoder.

    The flow is calibrated for the bundle size it was trained with (the mean embedding of K
    samples carries no K); use the same K for prediction.

    Buffers (saved by ``la.save``): ``t_loc``/``t_scale`` (d,) standardisation of t, ``x_loc``/
    ``x_scale`` input standardisation, ``fit_bundle``, and ``axis0``/``axis1`` (the grid of
    :meth:`posteriors`; empty when fitted on scattered ``params``).
    """

    def __init__(
        self,
        sample_shape: Sequence[int],
        dim: int = 2,
        encoder: str | nn.Module = "auto",
        embed: int = 64,
        flow: str | nn.Module = "nsf",
        flow_options: dict | None = None,
        encoder_options: dict | None = None,
    ) -> None:
        nn.Module.__init__(self)
        from .. import flows as F

        self.dim = _pos_int(dim, "dim")
        self.embed = _pos_int(embed, "embed")
        self.encoder = build_encoder(encoder, sample_shape, self.embed, encoder_options)
        self.sample_shape = tuple(int(s) for s in sample_shape)
        if isinstance(flow, str):
            if flow not in FLOWS:
                raise ValueError(f"flow: expected one of {sorted(FLOWS)} or a la.flows.Flow, got "
                                 f"{flow!r}")
            flow = getattr(F, FLOWS[flow])(features=self.dim, context=self.embed,
                                           **dict(flow_options or {}))
        if not isinstance(flow, F.Flow):
            raise ValueError(f"flow: expected a name or a la.flows.Flow, got {type(flow).__qualname__}")
        if flow.features != self.dim or flow.context_features != self.embed:
            raise ValueError(f"flow: expected features={self.dim}, context={self.embed}, got "
                             f"features={flow.features}, context={flow.context_features}")
        self.flow = flow
        self.register_buffer("t_loc", torch.zeros(self.dim))
        self.register_buffer("t_scale", torch.ones(self.dim))
        self.register_buffer("x_loc", torch.zeros(()))
        self.register_buffer("x_scale", torch.ones(()))
        self.register_buffer("fit_bundle", torch.zeros((), dtype=torch.long))
        self.register_buffer("axis0", torch.zeros(0))
        self.register_buffer("axis1", torch.zeros(0))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        for name in ("axis0", "axis1"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def grid_shape(self) -> tuple[int, int]:  # type: ignore[override]
        return (self.axis0.shape[0], self.axis1.shape[0])

    def _anchor(self) -> Tensor:
        return self.t_loc

    def _param(self) -> Tensor:
        return next(p for p in self.parameters())

    def _require_fit(self) -> None:
        if self.axis0.numel() == 0:
            raise ValueError("FlowPosterior: posterior maps need a 2-D grid; fit with axis0, axis1 "
                             "(fitted on scattered params, use log_prob / sample_posterior)")

    # -- the model -----------------------------------------------------------------------------
    def context(self, bundles: Any) -> Tensor:
        """Mean embedding of each bundle: (B, K, *sample_shape) -> (B, embed)."""
        x = self._check_bundles(bundles)
        w = self._param()
        b, k = x.shape[:2]
        fit_k = int(self.fit_bundle)
        if fit_k and k != fit_k and not self.training and not getattr(self, "_warned_k", False):
            log.warning("FlowPosterior was trained on bundles of %d samples, got %d: the posterior "
                        "is calibrated for K = %d", fit_k, k, fit_k)
            self._warned_k = True
        flat = (x.reshape(b * k, *x.shape[2:]).to(device=w.device, dtype=w.dtype) - self.x_loc)
        z = check_encoder_output(self.encoder(flat / self.x_scale), b * k, self.embed)
        return z.reshape(b, k, -1).mean(1)

    def _standardise(self, t: Tensor) -> Tensor:
        return (t - self.t_loc) / self.t_scale

    def log_prob(self, t: Any, bundles: Any) -> Tensor:
        """Log posterior density of t (original units): t (B, d), bundles (B, K, ...) -> (B,)."""
        w = self._param()
        t = torch.as_tensor(t).to(device=w.device, dtype=w.dtype)
        if t.dim() != 2 or t.shape[1] != self.dim:
            raise ValueError(f"t: expected shape (B, {self.dim}), got {tuple(t.shape)}")
        ctx = self.context(bundles)
        if ctx.shape[0] != t.shape[0]:
            raise ValueError(f"t: expected {ctx.shape[0]} rows (one per bundle), got {t.shape[0]}")
        return self.flow.log_prob(self._standardise(t), ctx) - self.t_scale.log().sum()

    def forward(self, t: Tensor, bundles: Tensor) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(t, bundles)

    @torch.no_grad()
    def sample_posterior(self, bundles: Any, n: int, seed: int | None = 0) -> Any:
        """Draw n posterior samples of t per bundle.

        Args:
            bundles: (B, K, *sample_shape) (or (K, *sample_shape) for one bundle).
            n: samples per bundle.
            seed: seeds torch's generator locally (global RNG state is left untouched); None uses
                the global generator.

        Returns:
            (B, n, d) in original units: float64 numpy for numpy input, a tensor for tensor input.
        """
        n = _pos_int(n, "n")
        x = bundles if isinstance(bundles, Tensor) else torch.as_tensor(np.asarray(bundles))
        if x.dim() == len(self.sample_shape) + 1:
            x = x.unsqueeze(0)
        self.eval()
        ctx = self.context(x)
        if seed is None:
            z = self.flow.sample(n, ctx)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_nonneg_int(seed, "seed"))
                z = self.flow.sample(n, ctx)  # (n, B, d)
        t = z.transpose(0, 1) * self.t_scale + self.t_loc
        return t if isinstance(bundles, Tensor) else t.double().cpu().numpy()

    def posterior_mean(self, bundles: Any, batch_size: int = 1024, n: int = 1000,
                       seed: int = 0) -> np.ndarray:
        """Monte-Carlo posterior mean of t (n flow samples per bundle): (B, K, ...) -> (B, d)."""
        x = np.asarray(bundles) if not isinstance(bundles, Tensor) else bundles
        out = [self.sample_posterior(x[i : i + batch_size], n, seed)
               for i in range(0, x.shape[0], batch_size)]
        out = [o.double().cpu().numpy() if isinstance(o, Tensor) else o for o in out]
        return np.concatenate(out).mean(1)

    def log_posterior(self, bundles: Tensor) -> Tensor:
        """Density at the grid points, normalised over the grid: (B, K, ...) -> (B, G0 * G1)."""
        self._require_fit()
        ctx = self.context(bundles)
        a, b = torch.meshgrid(self.axis0, self.axis1, indexing="ij")
        grid = self._standardise(torch.stack([a.ravel(), b.ravel()], -1).to(ctx))  # (G, 2)
        g = grid.shape[0]
        out = []
        step = max(1, 65536 // g)
        for i in range(0, ctx.shape[0], step):
            c = ctx[i : i + step]
            lp = self.flow.log_prob(grid.repeat(c.shape[0], 1), c.repeat_interleave(g, dim=0))
            out.append(lp.reshape(c.shape[0], g))
        return torch.log_softmax(torch.cat(out), dim=-1)

    def posteriors(  # type: ignore[override]
        self,
        samples: Any,
        axis0: Any = None,
        axis1: Any = None,
        *,
        bundle: int,
        repeats: int = 8,
        seed: int = 0,
        batch_size: int = 1024,
        progress: bool = True,
        average: str = "log",
    ) -> np.ndarray:
        """Posterior maps on a grid (the fitted one, or ``axis0``, ``axis1`` if given).

        As :meth:`PosteriorMap.posteriors`: (P, S, *sample_shape) -> (P, G0, G1) float64, each
        map the flow density at the grid points normalised over the grid, averaged over
        ``repeats`` bundles of ``bundle`` samples per point (``average="log"``: normalised
        geometric mean, the default; ``"probability"``: mixture).
        """
        if (axis0 is None) != (axis1 is None):
            raise ValueError("axis0, axis1: pass both grid axes or neither")
        if axis0 is None:
            return super().posteriors(samples, bundle, repeats, seed, batch_size, progress,
                                      average)
        if self.dim != 2:
            raise ValueError(f"axis0, axis1: a 2-D grid needs dim=2, the model has dim={self.dim}")
        a0, a1 = B.check_axes(axis0, axis1)
        saved = self.axis0, self.axis1
        w = self._param()
        try:
            self.axis0 = torch.as_tensor(a0, dtype=w.dtype, device=w.device)
            self.axis1 = torch.as_tensor(a1, dtype=w.dtype, device=w.device)
            return super().posteriors(samples, bundle, repeats, seed, batch_size, progress,
                                      average)
        finally:
            self.axis0, self.axis1 = saved

    # -- training ------------------------------------------------------------------------------
    def fit(
        self,
        samples: Any,
        axis0: Any = None,
        axis1: Any = None,
        *,
        params: Any = None,
        spacing: Any = None,
        bundle: int = 4,
        neighbours: int = 1,
        jitter: bool | None = None,
        sigma: float | None = None,
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
    ) -> FlowPosterior:
        """Maximum-likelihood training on bundles.

        Args:
            samples: (P, S, *sample_shape), numpy or zarr (loaded point chunk by point chunk).
            axis0, axis1: the 2-D grid (P = G0 * G1 in 'ij' order); or None with ``params``.
            params: (P, d) parameter points (any d, scattered or gridded) instead of axes.
            spacing: (d,) cell size per axis for ``params`` (jitter width and the distance unit of
                neighbourhoods); default: the grid spacing for axes, none for ``params`` (then
                neighbours are counted in units of each axis's range and no jitter is applied).
            bundle: K.
            neighbours: K_neib (samples from the K_neib nearest points of the centre t').
            jitter: add uniform noise over the cell to the target t' (it makes the targets
                continuous). It widens the learned posterior by the variance ``h^2 / 12`` per axis
                (h: the cell), which the potential fit does not model, so None (default) jitters
                only when ``sigma`` is 0: with ``sigma > 0`` the Gaussian smoothing already makes
                the targets continuous and is exactly the kernel the fit's model is smoothed by.
            sigma: optional Gaussian smoothing of the targets, std ``sigma`` grid cells (needs a
                cell size): the flow then estimates the posterior convolved with that Gaussian,
                like :class:`GridPosterior`'s bump targets. None or 0: no smoothing.
            steps, batch_size, lr, bundles, val_fraction, max_samples, progress, checkpoint,
            seed, strategy, **train_options: as in :meth:`GridPosterior.fit`.

        Returns:
            ``self``; the training ``History`` (losses: negative log-likelihood of standardised t)
            is in ``self.history_``.
        """
        if params is None:
            if axis0 is None or axis1 is None:
                raise ValueError("axis0, axis1: expected the grid axes, or params=(P, d) points")
            a0, a1 = B.check_axes(axis0, axis1)
            if self.dim != 2:
                raise ValueError(f"axis0, axis1: a 2-D grid needs dim=2, the model has dim={self.dim}")
            pts = B.grid_params(a0, a1)
            cell = np.array([np.diff(a0).mean(), np.diff(a1).mean()])
        else:
            if axis0 is not None or axis1 is not None:
                raise ValueError("params: pass either axis0, axis1 or params, not both")
            pts = np.asarray(params, dtype=np.float64)
            if pts.ndim != 2 or pts.shape[1] != self.dim or not np.all(np.isfinite(pts)):
                raise ValueError(f"params: expected finite values of shape (P, {self.dim}), got "
                                 f"{np.shape(params)}")
            a0 = a1 = None
            cell = None if spacing is None else np.asarray(spacing, dtype=np.float64)
            if cell is not None and (cell.shape != (self.dim,) or not np.all(cell > 0)):
                raise ValueError(f"spacing: expected {self.dim} positive cell sizes, got {spacing!r}")
        p_all, s, _ = B.check_samples(samples, pts.shape[0], self.sample_shape)
        bundle, kneib = _pos_int(bundle, "bundle"), _pos_int(neighbours, "neighbours")
        steps, batch_size = _pos_int(steps, "steps"), _pos_int(batch_size, "batch_size")
        n_bundles = min(steps * batch_size, 2**18) if bundles is None else _pos_int(bundles, "bundles")
        if max_samples is not None:
            s = min(s, _pos_int(max_samples, "max_samples"))
        if bundle > kneib * s:
            raise ValueError(f"bundle: expected at most {kneib * s} (K_neib = {kneib} neighbours x "
                             f"S = {s} samples per point), got {bundle}")

        w = self._param()
        data = as_torch_samples(B.load_all(samples, s, progress=progress), w.dtype)
        data = data.reshape(p_all * s, *self.sample_shape)
        lo, hi = pts.min(0), pts.max(0)
        unit = cell if cell is not None else np.where(hi > lo, hi - lo, 1.0)
        neigh = B.neighbours(pts, kneib, unit)
        train_b, val_b = B.training_bundles(s, neigh, bundle, n_bundles, val_fraction, seed)
        if sigma is not None and not (isinstance(sigma, int | float) and math.isfinite(sigma)
                                      and sigma >= 0):
            raise ValueError(f"sigma: expected a non-negative width in grid cells or None, got "
                             f"{sigma!r}")
        if sigma and cell is None:
            raise ValueError("sigma: target smoothing in grid cells needs a cell size; pass "
                             "spacing=(d,) with params")
        rng = np.random.default_rng([seed, 1])
        if jitter is None:
            jitter = not sigma
        width = cell if (jitter and cell is not None) else np.zeros(self.dim)
        smooth = float(sigma or 0.0) * (cell if cell is not None else np.zeros(self.dim))

        def targets(b: B.Bundles) -> Tensor:
            pick = neigh[b.centre, rng.integers(0, kneib, len(b))] if kneib > 1 else b.centre
            t = pts[pick] + (rng.random((len(b), self.dim)) - 0.5) * width
            if smooth.any():
                t = t + rng.standard_normal((len(b), self.dim)) * smooth
            return torch.as_tensor(t, dtype=w.dtype)

        with torch.no_grad():
            half = 0.5 * (hi - lo) + 0.5 * width + 2.0 * smooth
            half = np.where(half > 0, half, 1.0)
            self.t_loc.copy_(torch.as_tensor(0.5 * (lo + hi)))
            self.t_scale.copy_(torch.as_tensor(half / 2.0))  # standardised t in [-2, 2]
            gen = torch.Generator().manual_seed(seed)
            probe = data[torch.randint(data.shape[0], (min(4096, data.shape[0]),), generator=gen)]
            probe = probe.to(torch.float64)
            scale = float(probe.std())
            self.x_loc.fill_(float(probe.mean()))
            self.x_scale.fill_(scale if scale > 0 and math.isfinite(scale) else 1.0)
            self.fit_bundle.fill_(bundle)
            if a0 is not None:
                self.axis0 = torch.as_tensor(a0, dtype=w.dtype, device=w.device)
                self.axis1 = torch.as_tensor(a1, dtype=w.dtype, device=w.device)
            else:
                self.axis0 = torch.zeros(0, dtype=w.dtype, device=w.device)
                self.axis1 = torch.zeros(0, dtype=w.dtype, device=w.device)

        def loss_fn(flat: Tensor, t: Tensor) -> Tensor:
            x = data[flat.cpu()].to(w.device)
            ctx = self.context(x)
            return -self.flow.log_prob(self._standardise(t.to(w.device)), ctx).mean()

        train_data = (torch.as_tensor(train_b.flat(s)), targets(train_b))
        val = (torch.as_tensor(val_b.flat(s)), targets(val_b)) if val_b is not None else None
        self.history_: History = train(
            self, loss_fn, train_data, names=("bundles", "targets"), steps=steps,
            batch_size=batch_size, lr=lr, val_fraction=0.0 if val is None else val_fraction,
            val_data=val, checkpoint=checkpoint, progress=progress, seed=seed,
            desc="FlowPosterior.fit", strategy=strategy, **train_options,
        )
        return self
