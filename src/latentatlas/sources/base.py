"""The Source protocol: anything that turns parameters ``t`` into random samples ``x ~ p(x | t)``.

A source is deterministic per parameter point given the seed, whatever the batching: the random
stream of point ``t`` is derived from ``(seed, t)`` alone (:func:`point_seed_sequence`), so
``sample(params, n, seed)[i]`` equals ``sample(params[i:i+1], n, seed)[0]``. This is what makes a
chunked, resumable sample store bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..io import Configurable

__all__ = ["FLOW_RECIPE", "Source", "check_bounds", "point_seed_sequence", "point_seeds"]

FLOW_RECIPE: dict[str, Any] = {"fit": {"steps": 1500, "batch_size": 512, "lr": 1e-2}}
"""The flow estimator's training recipe measured on the Gaussian family, Ising L = 4 and TASEP
L = 6 at their atlas defaults (``benchmarks/estimator_table.py --setting defaults``), which
those sources give as ``atlas_defaults()["posterior_for"]["flow"]``: interior median metric
ratios within [0.90, 1.03] on each (seed 0), against 0.85-0.93 with ``FlowPosterior.fit``'s
generic 2000 steps at batch 128 and lr 1e-3, for 1.2-1.4x its time. Not measured on image
planes."""


def point_seed_sequence(seed: int, point: np.ndarray) -> np.random.SeedSequence:
    """The seed sequence of one parameter point: a function of ``seed`` and the point's float64 bytes.

    Args:
        seed: the run's seed (non-negative int).
        point: (d,) parameter vector.
    """
    digest = hashlib.blake2b(np.ascontiguousarray(point, dtype=np.float64).tobytes(), digest_size=16)
    words = np.frombuffer(digest.digest(), dtype=np.uint32)
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32, *words.tolist()])


def point_seeds(seed: int, params: np.ndarray, words: int = 4) -> np.ndarray:
    """Independent 64-bit seeds for each parameter point, e.g. to seed per-lattice RNGs in numba.

    Row i is the keyed BLAKE2b hash (key: the seed's 8 bytes) of the point's float64 bytes, read
    as ``words`` little-endian uint64 words: a function of ``(seed, params[i])`` alone, about
    1 us per point (a ``SeedSequence`` per point costs ~20 us, which showed up in short runs).

    Args:
        seed: the run's seed (non-negative int below 2**64).
        params: (P, d) parameter points.
        words: number of uint64 words per point (1 .. 8).

    Returns:
        (P, words) uint64 array; row i depends only on ``(seed, params[i])``.
    """
    if not 1 <= words <= 8:
        raise ValueError(f"words: expected an int in [1, 8], got {words!r}")
    params = np.ascontiguousarray(np.asarray(params, dtype=np.float64))
    key = (int(seed) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
    out = np.empty((len(params), words), dtype="<u8")
    for i, p in enumerate(params):
        digest = hashlib.blake2b(p.tobytes(), digest_size=8 * words, key=key).digest()
        out[i] = np.frombuffer(digest, dtype="<u8")
    return out.astype(np.uint64)


def check_bounds(
    bounds: Sequence[Sequence[float]], domain: Sequence[Sequence[float]], names: Sequence[str]
) -> tuple[tuple[float, float], ...]:
    """Validate atlas bounds ((lo0, hi0), (lo1, hi1), ...) against a source's domain.

    Raises:
        ValueError: naming the axis, the expected interval and what was received.
    """
    bounds = tuple((float(lo), float(hi)) for lo, hi in bounds)
    if len(bounds) != len(domain):
        raise ValueError(f"bounds: expected {len(domain)} (low, high) pairs, got {len(bounds)}")
    for (lo, hi), (dlo, dhi), name in zip(bounds, domain, names):
        if not (np.isfinite(lo) and np.isfinite(hi)) or not lo < hi:
            raise ValueError(f"bounds: expected finite low < high for {name}, got ({lo}, {hi})")
        if lo < dlo or hi > dhi:
            raise ValueError(
                f"bounds: {name} must lie in the source's domain [{dlo}, {dhi}], got ({lo}, {hi})"
            )
    return bounds


class Source(Configurable):
    """Base class of sources p(x | t). Subclasses set the attributes and implement ``_sample``.

    Attributes:
        names: parameter names, length d (e.g. ``("T", "h")``).
        domain: ((lo, hi), ...) where parameters are valid (may be infinite); used to validate.
        bounds: ((lo, hi), ...) a sensible default region for an atlas.
        sample_shape: shape of one sample (e.g. ``(L, L)``).
        dtype: numpy dtype of samples (e.g. ``np.int8`` spins).
    """

    names: tuple[str, ...]
    domain: tuple[tuple[float, float], ...]
    bounds: tuple[tuple[float, float], ...]
    sample_shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def dim(self) -> int:
        """d, the number of parameters."""
        return len(self.names)

    def check_params(self, params: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """Validate parameters: (P, d) float64, finite, inside the domain (open ends stay open).

        Raises:
            ValueError: naming ``params``, the expected shape/domain and what was received.
        """
        arr = np.asarray(params, dtype=np.float64)
        if arr.ndim == 1 and arr.shape[0] == self.dim:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValueError(
                f"params: expected shape (P, {self.dim}) for parameters {self.names}, "
                f"got {np.shape(params)}"
            )
        if not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise ValueError(f"params: expected finite values, got {arr[bad[0]]} at row {bad[0]}")
        for j, ((lo, hi), name) in enumerate(zip(self.domain, self.names)):
            col = arr[:, j]
            outside = (col < lo) | (col > hi)
            if np.any(outside):
                i = int(np.argmax(outside))
                raise ValueError(
                    f"params: {name} must lie in [{lo}, {hi}] for {type(self).__name__}, got "
                    f"{col[i]} at row {i}"
                )
        return arr

    def sample(self, params: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
        """Draw ``n`` samples at each parameter point.

        Args:
            params: (P, d) parameter points (or (d,) for one point).
            n: samples per point.
            seed: run seed; point i's samples depend only on ``(seed, params[i])``.

        Returns:
            (P, n, *sample_shape) array of ``self.dtype``.
        """
        params = self.check_params(params)
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
        return self._sample(params, int(n), int(seed))

    def _sample(self, params: np.ndarray, n: int, seed: int) -> np.ndarray:
        raise NotImplementedError

    # -- what the source knows, for the atlas pipeline (overridden by sources that know more) --------
    analyses: tuple[str, ...] = ("geometry",)
    """Names of the analysis stages that apply to this source (see
    :data:`latentatlas.atlas.stages.ANALYSES`)."""

    def atlas_defaults(self) -> dict[str, Any]:
        """Default atlas settings chosen for this source (by measurement where stated).

        Keys: ``bounds``, ``resolution``, ``samples_per_point``, ``bundle``, ``posterior_repeats``,
        ``sigma``, ``estimator``, ``posterior`` (``{"init": {...}, "fit": {...}}`` of the default
        ``estimator``), ``posterior_for`` (``{name: {"init": ..., "fit": ...}}``: options measured
        for other estimators; an estimator in neither starts from its own defaults),
        ``potential`` (options of :func:`latentatlas.geometry.fit_potential`), ``path`` (the
        segment of the path analysis as fractions of the region: ((a0, a1), (b0, b1))).
        """
        return {"bounds": tuple(self.bounds), "resolution": 32, "samples_per_point": 64,
                "bundle": 4, "posterior_repeats": 16, "sigma": 1.0, "estimator": "grid",
                "posterior": {}, "posterior_for": {}, "potential": {},
                "path": ((0.75, 0.0), (0.75, 1.0))}

    def reference(self, params: np.ndarray) -> dict[str, np.ndarray] | None:
        """Exact fields at points, when the source has them: some of ``potential`` (P,),
        ``gradient`` (P, d), ``metric`` (P, d, d) (Fisher information of one sample in the
        source's coordinates) and other exact scalar fields (P,). ``None`` when there is no exact
        reference (the default)."""
        return None

    # Exponential families override these two.
    def natural(self, params: np.ndarray) -> np.ndarray:
        """Natural parameters theta(t): (P, d) -> (P, k). Only for exponential families."""
        raise NotImplementedError(f"{type(self).__name__} is not an exponential family")

    def sufficient_statistics(self, x: np.ndarray) -> np.ndarray:
        """Sufficient statistics f(x): (..., *sample_shape) -> (..., k)."""
        raise NotImplementedError(f"{type(self).__name__} is not an exponential family")

    def natural_map(self) -> Any:
        """The map ``t -> eta(t)`` to natural parameters as a savable torch module
        ((N, d) -> (N, d), differentiable), when the source's coordinates are not natural but
        it knows the map; None otherwise (the default: natural coordinates already, or unknown).
        The atlas pipeline then fits the potential in ``eta`` and pulls the metric back,
        ``g = J^T Hess Phi J`` (``potential={"coordinates": "natural"}``)."""
        return None

    @property
    def natural_coordinates(self) -> bool:
        """Whether the source's own coordinates are natural parameters of an exponential family
        (then the exact potential log Z and its gradient are comparable with a fitted potential;
        otherwise only the metric is)."""
        return False

    def natural_jacobian(self, params: np.ndarray) -> np.ndarray:
        """``J[p, a, i] = d eta_a / d t_i`` of :meth:`natural_map` at points (P, d) -> (P, d, d)
        (float64, by autograd).

        Raises:
            ValueError: when the source has no natural map.
        """
        import torch

        fn = self.natural_map()
        if fn is None:
            raise ValueError(f"{type(self).__name__} has no natural map (its coordinates are "
                             "natural already, or the map is unknown)")
        arr = self.check_params(params)
        t = torch.as_tensor(arr, dtype=torch.float64).requires_grad_(True)
        u = fn.double()(t)
        rows = [torch.autograd.grad(u[:, a].sum(), t, retain_graph=True)[0]
                for a in range(u.shape[1])]
        return torch.stack(rows, 1).numpy()

    def fingerprint(self) -> tuple[str, dict[str, Any]]:
        """A hash of the source's class, config (tensor arguments included) and weights, and its
        config as JSON-able data (tensors as references): what a store or a run folder records to
        recognise the same source.

        Returns:
            ``(hex digest, config)``.
        """
        import json

        import torch

        from ..io import _encode

        tensors: dict[str, torch.Tensor] = {}
        config = _encode(self.config, tensors, type(self).__name__)
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{type(self).__module__}.{type(self).__qualname__}".encode())
        h.update(json.dumps(config, sort_keys=True).encode())
        state = self.state_dict() if isinstance(self, torch.nn.Module) else {}
        for key, value in sorted({**tensors, **{f"state.{k}": v for k, v in state.items()}}.items()):
            t = value.detach().cpu().contiguous()
            h.update(key.encode())
            h.update(str(t.dtype).encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return h.hexdigest(), config

    def sample_with_diagnostics(
        self, params: np.ndarray, n: int, seed: int = 0
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Like :meth:`sample`, plus per-point diagnostics as (P,) arrays (e.g. acceptance rate,
        integrated autocorrelation times); ``{}`` for sources that have none."""
        return self.sample(params, n, seed), {}
