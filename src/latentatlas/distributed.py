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

Training (:func:`train_ddp`, :func:`distributed_training`, :func:`fit_ddp`)
    Data-parallel training with ``torch.nn.parallel.DistributedDataParallel`` when
    ``torch.distributed`` is initialised (e.g. under ``torchrun``; :func:`init_from_env`). Every
    rank holds the full training set and draws the same global minibatch (same seed); rank r
    computes the loss on its contiguous share and DDP averages the gradients, so each step equals
    the single-process step on the global batch up to floating-point summation order. Any of the
    package's estimators trains this way inside ``with distributed_training():``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .store import SampleStore

__all__ = [
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
                     log_to_driver=False)
        started = True
    try:
        _generate_ray(ray, store, source if source is not None else store.source(), workers,
                      gpus_per_task, max_retries, progress)
    finally:
        if started:
            ray.shutdown()
    return SampleStore.open(store.path)


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


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is initialised with more than one process."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


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


class _LossModule(nn.Module):
    """Routes ``loss_fn(*batch)`` through ``forward`` so that DDP sees (and syncs) the gradients."""

    def __init__(self, model: nn.Module, loss_fn: Callable[..., Tensor]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, *batch: Tensor) -> Tensor:
        return self.loss_fn(*batch)


def _train_ddp(base_train: Callable[..., Any], model: nn.Module, loss_fn: Callable[..., Tensor],
               data: Sequence[Tensor], ddp_options: dict[str, Any], **kwargs: Any) -> Any:
    if not is_distributed():
        return base_train(model, loss_fn, data, **kwargs)
    from torch.nn.parallel import DistributedDataParallel

    dist = torch.distributed
    rank, world = dist.get_rank(), dist.get_world_size()
    anchor = next(model.parameters())
    device_ids = [anchor.device] if anchor.device.type == "cuda" else None
    ddp = DistributedDataParallel(_LossModule(model, loss_fn), device_ids=device_ids,
                                  **ddp_options)

    def sharded(*batch: Tensor) -> Tensor:
        if not torch.is_grad_enabled():  # validation: every rank evaluates the whole batch
            return loss_fn(*batch)
        n = batch[0].shape[0]
        if n < world:
            raise ValueError(f"batch_size: expected at least one sample per process ({world} "
                             f"processes), got a batch of {n}")
        lo, hi = rank * n // world, (rank + 1) * n // world
        local = ddp(*(t[lo:hi] for t in batch))
        # DDP averages gradients over ranks; weight the shares so the result is the gradient of
        # the global mean even for unequal shares (the factor is exactly 1 for equal shares)
        scaled = local * ((hi - lo) * world / n) if (hi - lo) * world != n else local
        total = (local.detach() * (hi - lo)).reshape(1)
        dist.all_reduce(total)
        return scaled + (total[0] / n - scaled.detach())  # value: global mean; gradient: local

    if kwargs.get("checkpoint") is not None and rank > 0:
        path = Path(kwargs["checkpoint"])
        kwargs["checkpoint"] = path.with_name(f"{path.name}.rank{rank}")
    if rank > 0:
        kwargs["progress"] = False
    return base_train(model, sharded, data, **kwargs)


def train_ddp(
    model: nn.Module,
    loss_fn: Callable[..., Tensor],
    data: Sequence[Tensor],
    *,
    find_unused_parameters: bool = False,
    **train_options: Any,
) -> Any:
    """:func:`latentatlas.flows.training.train` data-parallel over the ``torch.distributed`` group.

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
    from .flows import training

    return _train_ddp(training.train, model, loss_fn, data,
                      {"find_unused_parameters": find_unused_parameters}, **train_options)


@contextlib.contextmanager
def distributed_training(find_unused_parameters: bool = False) -> Iterator[None]:
    """Inside this block every call of ``latentatlas.flows.training.train`` (and so
    ``GridPosterior.fit``, ``FlowPosterior.fit``, ``la.flows.fit``, ...) trains data-parallel
    with DDP when ``torch.distributed`` is initialised. Not thread-safe (it swaps a module
    attribute for the duration of the block)."""
    from .flows import training

    original = training.train

    def patched(model: nn.Module, loss_fn: Callable[..., Tensor], data: Sequence[Tensor],
                **kwargs: Any) -> Any:
        return _train_ddp(original, model, loss_fn, data,
                          {"find_unused_parameters": find_unused_parameters}, **kwargs)

    training.train = patched
    try:
        yield
    finally:
        training.train = original


def fit_ddp(estimator: Any, *args: Any, **kwargs: Any) -> Any:
    """``estimator.fit(*args, **kwargs)`` trained data-parallel (see :func:`distributed_training`).

    Example (``torchrun --nproc_per_node 4 train_posterior.py``)::

        la.distributed.init_from_env()
        post = la.posterior.GridPosterior(...)
        history = la.distributed.fit_ddp(post, samples, axis0, axis1, bundle=8, batch_size=512)
    """
    with distributed_training():
        return estimator.fit(*args, **kwargs)
