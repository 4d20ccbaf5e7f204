"""Maximum-likelihood training of flows; the training loop itself lives in
:mod:`latentatlas.training` (re-exported here: ``History``, ``train``, the strategies).

:func:`fit` is maximum-likelihood training of a flow on top of :func:`train`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..training import (
    DataParallel,
    History,
    SingleProcess,
    Strategy,
    Trainer,
    default_strategy,
    train,
)
from .core import Flow, check_context, check_features

__all__ = ["DataParallel", "History", "SingleProcess", "Strategy", "Trainer", "default_strategy",
           "fit", "train"]


def fit(
    flow: Flow,
    data: Tensor,
    context: Tensor | None = None,
    *,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    val_fraction: float = 0.1,
    progress: bool = True,
    **kwargs: object,
) -> History:
    """Maximum-likelihood training of a flow: minimise ``-log_prob(x, context).mean()``.

    Args:
        flow: any :class:`~latentatlas.flows.Flow`.
        data: (N, D) training data.
        context: (N, C) conditioning values, or None for an unconditional flow.
        steps, batch_size, lr, val_fraction, progress: see :func:`train`.
        **kwargs: passed to :func:`train` (``patience``, ``checkpoint``, ``seed``, ``clip``,
            ``ema``, ``strategy``, ...).

    Returns:
        The :class:`History` (losses are NLL in nats per sample).
    """
    if not isinstance(flow, Flow):
        raise ValueError(f"flow: expected a latentatlas Flow, got {type(flow).__qualname__}")
    data = torch.as_tensor(data) if not isinstance(data, Tensor) else data
    check_features(data, flow.features, "data")
    anchor = next(flow.parameters(), None)
    if anchor is not None:
        data = data.to(device=anchor.device, dtype=anchor.dtype)
    if flow.context_features:
        context = check_context(context, flow.context_features, data.shape[0])
        context = context.to(data) if context is not None else None
        return train(
            flow, lambda x, c: -flow.log_prob(x, c).mean(), (data, context),
            names=("data", "context"), steps=steps, batch_size=batch_size, lr=lr,
            val_fraction=val_fraction, progress=progress, desc="fit", **kwargs,
        )
    check_context(context, 0)
    return train(
        flow, lambda x: -flow.log_prob(x).mean(), (data,), names=("data",), steps=steps,
        batch_size=batch_size, lr=lr, val_fraction=val_fraction, progress=progress, desc="fit",
        **kwargs,
    )
