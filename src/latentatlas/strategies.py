"""Training strategies of :mod:`latentatlas.training`: one process (:class:`SingleProcess`) or
data-parallel over a ``torch.distributed`` group (:class:`DataParallel`: the batch is sharded, the
gradients all-reduced, rank 0 writes the checkpoints), chosen by the ``strategy=`` argument that
every fit passes to :func:`latentatlas.training.train`."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["DataParallel", "SingleProcess", "Strategy", "default_strategy", "is_distributed"]


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is initialised with more than one process."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class Strategy:
    """How the training steps are distributed. Subclasses override the three hooks below."""

    def prepare(self, model: nn.Module, loss_fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        """The loss the loop calls: ``loss(*batch) -> scalar`` (value: the mean over the global
        batch; gradient: what this process contributes)."""
        return loss_fn

    def checkpoint_path(self, path: Path | None) -> Path | None:
        """The file this process writes its checkpoint to (None: no checkpoint)."""
        return path

    def show_progress(self, progress: bool) -> bool:
        """Whether this process shows a progress bar."""
        return progress


class SingleProcess(Strategy):
    """Train in this process only (the default)."""

    def __repr__(self) -> str:
        return "SingleProcess()"


class _LossModule(nn.Module):
    """Routes ``loss_fn(*batch)`` through ``forward`` so that DDP sees (and syncs) the gradients."""

    def __init__(self, model: nn.Module, loss_fn: Callable[..., Tensor]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, *batch: Tensor) -> Tensor:
        return self.loss_fn(*batch)


class DataParallel(Strategy):
    """Data-parallel training over the ``torch.distributed`` process group (DDP).

    Every process holds the full training set and draws the same global minibatch (same seed); the
    process of rank r computes the loss on its contiguous share ``[r n / W, (r + 1) n / W)`` and
    ``DistributedDataParallel`` all-reduces the gradients, weighted so that each step equals the
    single-process step on the global batch up to floating-point summation order (also for
    unequal shares). Validation runs on the whole validation set in every process. Rank 0 writes
    ``checkpoint``, rank r > 0 writes ``<checkpoint>.rank<r>``; only rank 0 shows progress.

    Without an initialised process group (or with one process) it is :class:`SingleProcess`.
    Loss functions that draw random numbers draw them per share (same generator state on every
    rank), so such fits are data-parallel but not bit-equivalent to one process.

    Args:
        find_unused_parameters: passed to ``DistributedDataParallel``.
        **ddp_options: further ``DistributedDataParallel`` keyword arguments.
    """

    def __init__(self, find_unused_parameters: bool = False, **ddp_options: Any) -> None:
        self.ddp_options = {"find_unused_parameters": bool(find_unused_parameters), **ddp_options}

    def __repr__(self) -> str:
        return f"DataParallel({', '.join(f'{k}={v!r}' for k, v in self.ddp_options.items())})"

    @staticmethod
    def _rank_world() -> tuple[int, int]:
        if not is_distributed():
            return 0, 1
        return torch.distributed.get_rank(), torch.distributed.get_world_size()

    def prepare(self, model: nn.Module, loss_fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        rank, world = self._rank_world()
        if world == 1:
            return loss_fn
        from torch.nn.parallel import DistributedDataParallel

        anchor = next(model.parameters())
        device_ids = [anchor.device] if anchor.device.type == "cuda" else None
        ddp = DistributedDataParallel(_LossModule(model, loss_fn), device_ids=device_ids,
                                      **self.ddp_options)

        def sharded(*batch: Tensor) -> Tensor:
            if not torch.is_grad_enabled():  # validation: every rank evaluates the whole batch
                return loss_fn(*batch)
            n = batch[0].shape[0]
            if n < world:
                raise ValueError(f"batch_size: expected at least one sample per process ({world} "
                                 f"processes), got a batch of {n}")
            lo, hi = rank * n // world, (rank + 1) * n // world
            local = ddp(*(t[lo:hi] for t in batch))
            # DDP averages gradients over ranks; weight the shares so that the result is the
            # gradient of the global mean even for unequal shares (factor 1 for equal shares)
            scaled = local * ((hi - lo) * world / n) if (hi - lo) * world != n else local
            total = (local.detach() * (hi - lo)).reshape(1)
            torch.distributed.all_reduce(total)
            return scaled + (total[0] / n - scaled.detach())  # value: global mean; grad: local

        return sharded

    def checkpoint_path(self, path: Path | None) -> Path | None:
        rank = self._rank_world()[0]
        return path if path is None or rank == 0 else path.with_name(f"{path.name}.rank{rank}")

    def show_progress(self, progress: bool) -> bool:
        return progress and self._rank_world()[0] == 0


_DEFAULT: contextvars.ContextVar[Strategy | None] = contextvars.ContextVar(
    "latentatlas_training_strategy", default=None
)


@contextlib.contextmanager
def default_strategy(strategy: Strategy) -> Iterator[Strategy]:
    """Within this block, :func:`train` calls without an explicit ``strategy`` use ``strategy``
    (a context variable: per thread and per asyncio task)."""
    if not isinstance(strategy, Strategy):
        raise ValueError(f"strategy: expected a latentatlas.training.Strategy, got "
                         f"{type(strategy).__qualname__}")
    token = _DEFAULT.set(strategy)
    try:
        yield strategy
    finally:
        _DEFAULT.reset(token)


def _resolve_strategy(strategy: Strategy | None) -> Strategy:
    if strategy is None:
        return _DEFAULT.get() or SingleProcess()
    if not isinstance(strategy, Strategy):
        raise ValueError(f"strategy: expected None, SingleProcess() or DataParallel(), got "
                         f"{type(strategy).__qualname__}")
    return strategy
