"""Scale-out: sample generation on a Ray cluster, posterior training with DistributedDataParallel.

Generation (:func:`generate`)
    A :class:`~latentatlas.store.SampleStore` is a grid of chunks; each chunk that is not done
    becomes one Ray task (``num_cpus=1``, ``num_gpus=gpus_per_task``) that computes the chunk and
    writes it into the shared store through the store's own code path (samples, diagnostics, then
    the chunk's done-marker, written atomically). Because a source's samples at a point depend only
    on ``(seed, point)``, the store is bit-identical to one generated locally. A task whose worker
    fails or is killed is retried by Ray (``max_retries``); chunk writes are idempotent (a done
    chunk is skipped, a half-written one is overwritten), and chunks still missing at the end are
    resubmitted once. The store's directory must be visible to every node under the same path
    (a shared filesystem) and latentatlas must be installed on every node.

Training (:func:`init_from_env`, :func:`train_ddp`, :func:`fit_ddp`)
    Data parallelism is a strategy of the one training loop: every fit takes
    ``strategy=la.training.DataParallel()`` (``torch.nn.parallel.DistributedDataParallel`` when
    ``torch.distributed`` is initialised, e.g. under ``torchrun``; :func:`init_from_env`). Every
    rank holds the full training set and draws the same global minibatch (same seed); rank r
    computes the loss on its contiguous share and DDP averages the gradients, so each step equals
    the single-process step on the global batch up to floating-point summation order.
    :func:`train_ddp` and :func:`fit_ddp` are shorthands; ``distributed_training()`` is a
    deprecated block that sets the default strategy.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .store import SampleStore
from .training import DataParallel, History, default_strategy, is_distributed, train

__all__ = [
    "DataParallel",
    "distributed_training",
    "fit_ddp",
    "generate",
    "init_from_env",
    "is_distributed",
    "train_ddp",
]

log = logging.getLogger(__name__)

_RAY_INSTALL = "pip install 'latentatlas[ray]' (or: pip install ray)"


# --------------------------------------------------------------------------------------------------
# sample generation
# --------------------------------------------------------------------------------------------------


class _OneChunk(SampleStore):
    """A view of a store in which only chunk ``k`` is missing: :meth:`SampleStore.generate` then
    computes and writes exactly that chunk through the store's own code path (shape check, dtype,
    diagnostics, atomic done-marker)."""

    def __init__(self, store: SampleStore, k: int, source: Any) -> None:
        super().__init__(store.path, store.metadata)
        self._k = k
        self._given = source

    def chunk_done(self, k: int) -> bool:
        return k != self._k or super().chunk_done(k)

    def source(self) -> Any:
        return self._given


def write_chunk(path: str | os.PathLike, k: int, source: Any) -> float:
    """Compute chunk ``k`` of the store at ``path`` and write it (no-op if already done).

    Safe to run concurrently for distinct chunks from several processes or machines, and to
    repeat (idempotent). Returns the seconds spent.
    """
    from zarr.errors import ContainsArrayError

    t0 = time.perf_counter()
    store = SampleStore.open(path)
    if store.chunk_done(k):
        return 0.0
    for attempt in range(3):
        try:
            _OneChunk(store, k, source).generate(progress=False)
            break
        except ContainsArrayError:  # two chunks created the same diagnostics array at once
            if attempt == 2:
                raise
    return time.perf_counter() - t0


def _check_backend_args(backend: str, workers: int | None, gpus_per_task: float,
                        max_retries: int) -> None:
    if backend not in ("local", "ray"):
        raise ValueError(f"backend: expected 'local' or 'ray', got {backend!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers: expected a positive int or None, got {workers!r}")
    if not (isinstance(gpus_per_task, int | float) and gpus_per_task >= 0):
        raise ValueError(f"gpus_per_task: expected a number >= 0, got {gpus_per_task!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries: expected an int >= 0, got {max_retries!r}")


def generate(
    store: SampleStore,
    backend: str = "local",
    address: str | None = None,
    workers: int | None = None,
    gpus_per_task: float = 0,
    *,
    source: Any = None,
    max_retries: int = 3,
    progress: bool = True,
) -> SampleStore:
    """Fill every chunk of ``store`` that is not done, locally or as Ray tasks.

    Args:
        store: a store from :meth:`SampleStore.create` / :meth:`SampleStore.open`.
        backend: "local" (this process, :meth:`SampleStore.generate`) or "ray".
        address: Ray cluster to connect to ("auto", "ray://host:10001", "host:6379"); default:
            ``$RAY_ADDRESS`` if set, else a new local Ray instance with ``workers`` CPUs. An
            already initialised Ray session (``ray.init`` by the caller) is used as it is.
        workers: at most this many chunks in flight (default: a local instance's CPUs, or all
            tasks at once on a cluster, which then schedules them by their resource requests).
        gpus_per_task: GPUs requested by each task (``num_gpus``; fractions share a GPU).
        source: the source object to ship to the workers (default ``store.source()``; pass the
            in-memory source when it holds state that its saved config does not, e.g. trained
            weights inside a generator).
        max_retries: Ray retries of a task whose worker died or raised an OSError.
        progress: tqdm bar over points.

    Returns:
        ``store`` (reopened so that its view of the done chunks is fresh).

    Raises:
        ImportError: backend "ray" without the ray package.
        RuntimeError: a chunk still failed after the retries (names the chunk and the cause).
    """
    _check_backend_args(backend, workers, gpus_per_task, max_retries)
    if not isinstance(store, SampleStore):
        raise ValueError(f"store: expected a SampleStore, got {type(store).__qualname__}")
    if backend == "local":
        if source is not None:
            for k in range(store.num_chunks):
                if not store.chunk_done(k):
                    write_chunk(store.path, k, source)
            return SampleStore.open(store.path)
        return store.generate(progress=progress)
    with ray_session(address, workers) as ray:
        _generate_ray(ray, store, source if source is not None else store.source(), workers,
                      gpus_per_task, max_retries, progress)
    return SampleStore.open(store.path)


@contextlib.contextmanager
def ray_session(address: str | None = None, workers: int | None = None,
                env: dict[str, str] | None = None) -> Iterator[Any]:
    """The ``ray`` module with a session: the caller's if Ray is initialised, else one connected
    to ``address`` (default ``$RAY_ADDRESS``) or a new local instance with ``workers`` CPUs
    (``env``: environment variables of its workers), shut down on exit.

    Raises:
        ImportError: without the ray package.
    """
    try:
        import ray
    except ImportError:
        raise ImportError(f"backend 'ray' needs the 'ray' package: {_RAY_INSTALL}") from None
    started = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                     log_to_driver=False,
                     runtime_env={"env_vars": dict(env)} if env else None)
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _generate_ray(ray: Any, store: SampleStore, source: Any, workers: int | None,
                  gpus_per_task: float, max_retries: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    path = str(Path(store.path).resolve())
    meta = store.metadata
    c, P = int(meta["chunk_points"]), store.num_points
    span = {k: (k * c, min((k + 1) * c, P)) for k in range(store.num_chunks)}
    task = ray.remote(write_chunk).options(
        num_cpus=1, num_gpus=gpus_per_task, max_retries=max_retries, retry_exceptions=[OSError],
        name="latentatlas.write_chunk",
    )
    ref = ray.put(source)
    limit = workers or math.inf
    for attempt in range(2):  # the second pass resubmits chunks that are still missing
        todo = [k for k in span if not store.chunk_done(k)]
        if not todo:
            return
        if attempt:
            log.warning("resubmitting %d chunks whose done-marker is missing", len(todo))
        done_pts = P - sum(span[k][1] - span[k][0] for k in todo)
        bar = tqdm(total=P, initial=done_pts, unit="point", disable=not progress,
                   desc=f"sampling {type(source).__name__} on ray")
        pending: dict[Any, int] = {}
        queue = list(todo)
        try:
            while queue or pending:
                while queue and len(pending) < limit:
                    k = queue.pop(0)
                    pending[task.remote(path, k, ref)] = k
                ready, _ = ray.wait(list(pending), num_returns=1)
                for r in ready:
                    k = pending.pop(r)
                    try:
                        ray.get(r)
                    except Exception as err:  # RayTaskError / WorkerCrashedError after retries
                        cause = getattr(err, "cause", None)
                        if isinstance(cause, ValueError | FileNotFoundError):
                            raise cause from None
                        first = (str(cause or err).strip().splitlines() or [type(err).__name__])
                        raise RuntimeError(
                            f"chunk {k} (points {span[k][0]}..{span[k][1] - 1}) failed after "
                            f"{max_retries} retries: {first[-1]}"
                        ) from None
                    bar.update(span[k][1] - span[k][0])
        finally:
            bar.close()
            for r in pending:
                ray.cancel(r)
    missing = [k for k in span if not store.chunk_done(k)]
    if missing:
        raise RuntimeError(f"chunks {missing} have no done-marker after resubmission; is "
                           f"{path!r} on a filesystem shared by every Ray node?")


# --------------------------------------------------------------------------------------------------
# data-parallel training
# --------------------------------------------------------------------------------------------------


def init_from_env(backend: str | None = None) -> tuple[int, int]:
    """Initialise ``torch.distributed`` from torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``) if it is not initialised yet.

    Args:
        backend: "nccl" or "gloo" (default: nccl when CUDA is available, else gloo). With CUDA the
            current device becomes ``cuda:LOCAL_RANK``.

    Returns:
        ``(rank, world_size)``; ``(0, 1)`` outside torchrun.
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def train_ddp(
    model: nn.Module,
    loss_fn: Callable[..., Tensor],
    data: Sequence[Tensor],
    *,
    find_unused_parameters: bool = False,
    **train_options: Any,
) -> History:
    """:func:`latentatlas.training.train` with ``strategy=DataParallel(find_unused_parameters)``.

    Call it in every process with the same arguments (same data, same seed). Without an initialised
    process group (or with one process) it is exactly ``train``.

    Args:
        model: the module to train (on ``cuda:LOCAL_RANK`` with NCCL, on CPU with gloo).
        loss_fn: ``loss_fn(*batch) -> scalar`` mean loss over a minibatch.
        data: tensors with a common first dimension N; every rank holds all of them.
        find_unused_parameters: passed to ``DistributedDataParallel``.
        **train_options: arguments of ``train``; ``batch_size`` is the GLOBAL batch (each of W
            processes computes ``batch_size / W`` samples). A ``checkpoint`` file is written by
            rank 0; rank r > 0 writes ``<checkpoint>.rank<r>``.

    Returns:
        The ``History``; its losses are the global-batch means (identical on every rank).
    """
    strategy = DataParallel(find_unused_parameters=find_unused_parameters)
    return train(model, loss_fn, data, strategy=strategy, **train_options)


@contextlib.contextmanager
def distributed_training(find_unused_parameters: bool = False) -> Iterator[DataParallel]:
    """Deprecated: pass ``strategy=DataParallel()`` to the fit instead.

    Within the block, training calls that do not pass a ``strategy`` use
    ``DataParallel(find_unused_parameters)`` (:func:`latentatlas.training.default_strategy`; no
    module attribute is patched, so every fit honours it however it imported ``train``).
    """
    warnings.warn("distributed_training() is deprecated: pass strategy=la.training.DataParallel() "
                  "to the fit", DeprecationWarning, stacklevel=3)
    with default_strategy(DataParallel(find_unused_parameters=find_unused_parameters)) as s:
        yield s


def fit_ddp(estimator: Any, *args: Any, **kwargs: Any) -> Any:
    """``estimator.fit(*args, strategy=DataParallel(), **kwargs)``: the fit trained data-parallel.

    Returns what the fit returns (``self`` for the posterior estimators, whose ``history_``
    attribute then holds the training :class:`~latentatlas.training.History`).

    Example (``torchrun --nproc_per_node 4 train_posterior.py``)::

        la.distributed.init_from_env()
        post = la.posterior.GridPosterior(...)
        post.fit(samples, axis0, axis1, bundle=8, batch_size=512,
                 strategy=la.training.DataParallel())
        post.history_.loss  # global-batch means, identical on every rank
    """
    kwargs.setdefault("strategy", DataParallel())
    return estimator.fit(*args, **kwargs)
