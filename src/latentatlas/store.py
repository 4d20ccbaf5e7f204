"""A chunked, resumable store of samples ``x ~ p(x | t)`` over a set of parameter points (zarr v3).

Layout of a store directory::

    meta.json              format, source class + config, seed, samples per point, chunking, ...
    source.safetensors     the source, written by :func:`latentatlas.save` (rebuilt by .source())
    zarr.json, params/     (P, d) float64 parameter points
    samples/               (P, n, *sample_shape), chunked by ``chunk_points`` points
    diagnostics/<name>/    (P,) float64 per-point diagnostics of the source (NaN until computed)
    done/<k>               marker of chunk k, written atomically after its data

Generation goes chunk by chunk: a chunk's samples and diagnostics are computed, written, and only
then is its marker written (temporary file + ``os.replace``). A process stopped at any moment
(Ctrl-C, ``kill -9``) leaves at worst a chunk with data but no marker, which the next
:meth:`SampleStore.generate` recomputes; chunks with a marker are never recomputed. Because a source's
samples at a point depend only on ``(seed, point)``, the resumed store is bit-identical to an
uninterrupted run. One process at a time may generate into a store.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tqdm.auto import tqdm

from ._util import atomic_write, grid
from .io import load, save
from .sources.base import Source

__all__ = ["FORMAT", "SampleStore", "grid_params"]

FORMAT = "latentatlas-store/1"
_CHUNK_BYTES = 16 << 20


def grid_params(
    bounds: Sequence[Sequence[float]], resolution: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A regular 2-D grid of parameter points, endpoints included (:func:`latentatlas._util.grid`).

    Args:
        bounds: ``((lo0, hi0), (lo1, hi1))``.
        resolution: ``G`` (a G x G grid) or ``(G0, G1)``, each >= 2.

    Returns:
        ``axis0`` (G0,), ``axis1`` (G1,) (``np.linspace(lo, hi, G)``) and ``params``
        (G0 * G1, 2) in 'ij' order: point ``p = i * G1 + j`` is ``(axis0[i], axis1[j])``.
    """
    try:
        b = np.asarray(bounds, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"bounds: expected ((lo0, hi0), (lo1, hi1)), got {bounds!r}") from None
    if b.shape != (2, 2):
        raise ValueError(f"bounds: expected ((lo0, hi0), (lo1, hi1)), shape (2, 2), got {b.shape}")
    if not np.all(np.isfinite(b)) or not np.all(b[:, 0] < b[:, 1]):
        raise ValueError(f"bounds: expected finite low < high on each axis, got {b.tolist()}")
    return grid(b, resolution, minimum=2)


def _params_hash(params: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(params, np.float64).tobytes(), digest_size=16).hexdigest()


class SampleStore:
    """Samples of a :class:`~latentatlas.sources.Source` at P parameter points, n per point.

    Build with :meth:`create` (or reopen with :meth:`open`), fill with :meth:`generate`.

    Attributes:
        path: the store directory.
    """

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = Path(path)
        self._meta = meta
        self._group = zarr.open_group(str(self.path), mode="r+")
        self._source: Source | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        source: Source,
        params: np.ndarray,
        samples_per_point: int,
        seed: int = 0,
        chunk_points: int | None = None,
        extra_meta: dict[str, Any] | None = None,
    ) -> SampleStore:
        """Create a store, or reopen an existing one made with the same arguments (to resume).

        Args:
            path: directory of the store (created; must not exist, be empty, or be this store).
            source: any :class:`Source`.
            params: (P, d) parameter points, validated by ``source.check_params``.
            samples_per_point: n.
            seed: the run seed passed to ``source.sample``.
            chunk_points: points per chunk (unit of work and of storage); default 64, fewer if a
                chunk would exceed 16 MiB.
            extra_meta: JSON-able dict kept under ``metadata["extra"]``.

        Raises:
            ValueError: bad arguments, or ``path`` holds a store made with another source config,
                seed, params, n or chunking (nothing is modified then), or something else.
        """
        if not isinstance(source, Source):
            raise ValueError(f"source: expected a latentatlas Source, got {type(source).__name__}")
        params = source.check_params(params)
        n = samples_per_point
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
            raise ValueError(f"samples_per_point: expected a positive int, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
        P = len(params)
        if P == 0:
            raise ValueError("params: expected at least one parameter point, got shape (0, d)")
        shape = tuple(int(s) for s in source.sample_shape)
        dtype = np.dtype(source.dtype)
        if chunk_points is None:
            per_point = max(1, int(n) * math.prod(shape) * dtype.itemsize)
            chunk_points = int(max(1, min(P, 64, _CHUNK_BYTES // per_point)))
        if isinstance(chunk_points, bool) or not isinstance(chunk_points, int | np.integer) or (
            chunk_points <= 0
        ):
            raise ValueError(f"chunk_points: expected a positive int, got {chunk_points!r}")
        chunk_points = int(min(chunk_points, P))
        if extra_meta is not None:
            try:
                json.dumps(extra_meta)
            except (TypeError, ValueError) as err:
                raise ValueError(f"extra_meta: expected a JSON-able dict ({err})") from None
        fingerprint, config = source.fingerprint()
        from . import __version__

        meta = {
            "format": FORMAT,
            "source_class": f"{type(source).__module__}.{type(source).__qualname__}",
            "source_config": config,
            "source_fingerprint": fingerprint,
            "names": list(source.names),
            "sample_shape": list(shape),
            "dtype": dtype.str,
            "seed": int(seed),
            "samples_per_point": int(n),
            "num_points": P,
            "chunk_points": chunk_points,
            "params_hash": _params_hash(params),
            "version": __version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "extra": extra_meta,
        }
        path = Path(path)
        if path.exists():
            if (path / "meta.json").is_file():
                store = cls.open(path)
                store._check_same(meta, params)
                return store
            if not path.is_dir() or any(path.iterdir()):
                raise ValueError(
                    f"path: {str(path)!r} exists and is not a latentatlas sample store; "
                    "choose a new or empty directory"
                )
            path.rmdir()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.creating")
        try:
            group = zarr.open_group(str(tmp), mode="w-")
            group.create_array("params", data=params, chunks=params.shape)
            group.create_array(
                "samples", shape=(P, int(n), *shape), dtype=dtype,
                chunks=(chunk_points, int(n), *shape), fill_value=0,
            )
            group.require_group("diagnostics")
            save(source, tmp / "source.safetensors")
            (tmp / "done").mkdir()
            atomic_write(tmp / "meta.json", json.dumps(meta, indent=1))
            os.rename(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        store = cls(path, meta)
        store._source = source
        return store

    @classmethod
    def open(cls, path: str | os.PathLike) -> SampleStore:
        """Open an existing store.

        Raises:
            FileNotFoundError: no store at ``path``.
            ValueError: ``path`` is not a latentatlas sample store.
        """
        path = Path(path)
        if not (path / "meta.json").is_file():
            raise FileNotFoundError(f"path: no sample store at {str(path)!r} (no meta.json)")
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"path: {str(path)!r} has a corrupt meta.json ({err})") from None
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"path: {str(path)!r} is not a latentatlas sample store (format "
                f"{meta.get('format')!r}, expected {FORMAT!r})"
            )
        return cls(path, meta)

    def check_matches(self, source: Source, params: np.ndarray, samples_per_point: int,
                      seed: int) -> SampleStore:
        """Check that this store holds the samples of ``source`` at ``params`` (P, d) with
        ``samples_per_point`` samples per point and ``seed`` (e.g. a store filled by
        ``latentatlas sample`` reused by ``latentatlas atlas --store``); returns self.

        Raises:
            ValueError: naming what differs (source, grid, samples per point, seed).
        """
        fingerprint, config = source.fingerprint()
        params = np.asarray(params, dtype=np.float64)
        mine = self._meta
        diffs = []
        if mine.get("source_fingerprint") != fingerprint:
            diffs.append(f"source {type(source).__name__} {config} != stored "
                         f"{mine.get('source_class')} {mine.get('source_config')}")
        if mine.get("num_points") != len(params) or mine.get("params_hash") != _params_hash(
                params):
            diffs.append(f"grid of {len(params)} points != the stored grid of "
                         f"{mine.get('num_points')} points (bounds and resolution must match)")
        for key, value in (("samples_per_point", samples_per_point), ("seed", seed)):
            if mine.get(key) != value:
                diffs.append(f"{key} {value!r} != stored {mine.get(key)!r}")
        if diffs:
            raise ValueError(f"store: {str(self.path)!r} holds other samples than this run needs ("
                             + "; ".join(diffs) + ")")
        return self

    def _check_same(self, meta: dict[str, Any], params: np.ndarray) -> None:
        mine = self._meta
        diffs = []
        for key, label in (
            ("source_class", "source class"),
            ("source_fingerprint", "source config"),
            ("seed", "seed"),
            ("samples_per_point", "samples_per_point"),
            ("num_points", "number of params"),
            ("chunk_points", "chunk_points"),
        ):
            if mine.get(key) != meta[key]:
                if key == "source_fingerprint":
                    diffs.append(
                        f"source config {meta['source_config']} != stored {mine.get('source_config')}"
                    )
                else:
                    diffs.append(f"{label} {meta[key]!r} != stored {mine.get(key)!r}")
        if mine.get("num_points") == meta["num_points"] and mine.get("params_hash") != meta[
            "params_hash"
        ]:
            diffs.append("params differ from the stored params")
        if diffs:
            raise ValueError(
                f"path: {str(self.path)!r} holds a sample store made with other settings ("
                + "; ".join(diffs)
                + "); nothing was changed. Use the same settings to resume, or another path"
            )

    # ------------------------------------------------------------------ contents
    @property
    def metadata(self) -> dict[str, Any]:
        """The store's metadata (a copy): source class and config, seed, n, chunking, version,
        creation time, ``extra``."""
        return json.loads(json.dumps(self._meta))

    @property
    def params(self) -> np.ndarray:
        """(P, d) float64 parameter points."""
        return np.asarray(self._group["params"][...])

    @property
    def samples(self) -> zarr.Array:
        """The zarr array (P, n, *sample_shape) of samples (zeros where not generated yet)."""
        return self._group["samples"]

    @property
    def diagnostics(self) -> dict[str, np.ndarray]:
        """Per-point diagnostics of the source: name -> (P,) float64 (NaN where not generated)."""
        group = self._group["diagnostics"]
        return {name: np.asarray(group[name][...]) for name in sorted(group.array_keys())}

    @property
    def num_points(self) -> int:
        return int(self._meta["num_points"])

    @property
    def num_chunks(self) -> int:
        return -(-self.num_points // int(self._meta["chunk_points"]))

    def chunk_done(self, k: int) -> bool:
        """Whether chunk ``k`` has been written completely."""
        return (self.path / "done" / str(k)).is_file()

    @property
    def done_points(self) -> int:
        """Number of points whose chunk is complete."""
        return sum(hi - lo for k, (lo, hi) in enumerate(self._chunks()) if self.chunk_done(k))

    @property
    def complete(self) -> bool:
        """Whether every chunk has been generated."""
        return all(self.chunk_done(k) for k in range(self.num_chunks))

    def source(self) -> Source:
        """The source, rebuilt from ``source.safetensors``."""
        if self._source is None:
            source = load(self.path / "source.safetensors")
            if not isinstance(source, Source):
                raise ValueError(f"path: {str(self.path)!r} holds a {type(source).__name__}, not a Source")
            self._source = source
        return self._source

    def _chunks(self) -> list[tuple[int, int]]:
        c = int(self._meta["chunk_points"])
        P = self.num_points
        return [(lo, min(lo + c, P)) for lo in range(0, P, c)]

    # ------------------------------------------------------------------ generation
    def generate(self, progress: bool = True) -> SampleStore:
        """Compute every chunk that is not marked done (the others are never recomputed).

        Args:
            progress: show a tqdm bar over points.

        Returns:
            self.
        """
        source = self.source()
        params = self.params
        n = int(self._meta["samples_per_point"])
        seed = int(self._meta["seed"])
        shape = tuple(self._meta["sample_shape"])
        chunks = self._chunks()
        todo = [k for k in range(len(chunks)) if not self.chunk_done(k)]
        samples = self.samples
        diag_group = self._group["diagnostics"]
        c = int(self._meta["chunk_points"])
        with tqdm(
            total=self.num_points, initial=self.num_points - sum(
                chunks[k][1] - chunks[k][0] for k in todo
            ), unit="point", disable=not progress, desc=f"sampling {type(source).__name__}",
        ) as bar:
            for k in todo:
                lo, hi = chunks[k]
                x, diag = source.sample_with_diagnostics(params[lo:hi], n, seed)
                x = np.asarray(x)
                if x.shape != (hi - lo, n, *shape):
                    raise ValueError(
                        f"source: {type(source).__name__}.sample returned shape {x.shape}, "
                        f"expected {(hi - lo, n, *shape)}"
                    )
                samples[lo:hi] = x.astype(samples.dtype, copy=False)
                for name, value in diag.items():
                    value = np.asarray(value, dtype=np.float64)
                    if value.shape != (hi - lo,):
                        raise ValueError(
                            f"source: diagnostic {name!r} has shape {value.shape}, expected "
                            f"({hi - lo},)"
                        )
                    arr = diag_group.require_array(
                        name, shape=(self.num_points,), chunks=(c,), dtype="float64",
                        fill_value=np.nan,
                    )
                    arr[lo:hi] = value
                atomic_write(self.path / "done" / str(k), f"{lo} {hi}\n")
                bar.update(hi - lo)
        return self

    def __repr__(self) -> str:
        m = self._meta
        return (
            f"SampleStore({str(self.path)!r}, source={m['source_class'].rsplit('.', 1)[-1]}, "
            f"points={m['num_points']}, n={m['samples_per_point']}, "
            f"done={self.done_points}/{m['num_points']})"
        )
