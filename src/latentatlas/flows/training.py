"""Training loops shared by every model of the package.

:func:`train` is the generic loop (Adam, cosine decay, gradient clipping, an optional exponential
moving average of the weights, validation, early stopping, tqdm progress, resumable checkpoints);
:func:`fit` is maximum-likelihood training of a flow on top of it. Posterior estimators, flow
matching and the embedded generators use :func:`train` too.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .core import Flow, check_context, check_features

__all__ = ["History", "fit", "train"]

log = logging.getLogger(__name__)


@dataclass
class History:
    """What happened during training.

    Attributes:
        step: steps at which the training loss was logged.
        loss: mean training loss over each logging window.
        val_step: steps at which validation ran.
        val_loss: validation loss at those steps.
        best_step: step of the best validation loss (its weights are restored at the end).
        best_val: best validation loss (``nan`` without validation).
        stopped_early: whether early stopping ended training.
        steps_done: number of optimisation steps performed in total (across resumes).
        ema: decay of the exponential moving average of the weights (None: no EMA); with an EMA,
            ``val_loss`` and ``best_val`` are losses of the averaged weights.
    """

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_step: int = 0
    best_val: float = math.nan
    stopped_early: bool = False
    steps_done: int = 0
    ema: float | None = None

    def as_dict(self) -> dict:
        return {k: copy.copy(v) for k, v in self.__dict__.items()}


def _check_data(data: Sequence[Tensor], names: Sequence[str]) -> int:
    n = None
    for tensor, name in zip(data, names):
        if not isinstance(tensor, Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(tensor).__qualname__}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"{name}: expected finite values, got {bad} NaN/inf entries")
        if n is None:
            n = tensor.shape[0]
        elif tensor.shape[0] != n:
            raise ValueError(
                f"{name}: expected {n} rows to match {names[0]}, got shape {tuple(tensor.shape)}"
            )
    if not n:
        raise ValueError(f"{names[0]}: expected at least one row, got an empty tensor")
    return n


def _positive(value: float, name: str, integer: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) if integer else True
    if not ok or not value > 0:
        kind = "a positive int" if integer else "a positive number"
        raise ValueError(f"{name}: expected {kind}, got {value!r}")


def _float_state(model: nn.Module) -> dict[str, Tensor]:
    """The floating-point entries of ``model.state_dict()``: parameters and buffers, sharing their
    storage (writing into them writes into the model)."""
    return {k: t for k, t in model.state_dict().items() if t.is_floating_point()}


def _copy_into(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy ``state`` (name -> tensor, floating entries) into ``model``'s tensors in place."""
    current = _float_state(model)
    with torch.no_grad():
        for k, t in state.items():
            current[k].copy_(t)


@contextmanager
def _weights_swapped(model: nn.Module, state: dict[str, Tensor]) -> Iterator[None]:
    """Temporarily copy ``state`` (name -> tensor, floating entries) into ``model`` in place.

    The model's own values are restored bit-exactly on exit (the optimiser keeps referring to the
    same parameter tensors).
    """
    current = _float_state(model)
    saved = {k: current[k].detach().clone() for k in state}
    _copy_into(model, state)
    try:
        yield
    finally:
        _copy_into(model, saved)


def train(
    model: nn.Module,
    loss_fn: Callable[..., Tensor],
    data: Sequence[Tensor],
    *,
    names: Sequence[str] | None = None,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    clip: float | None = 5.0,
    val_fraction: float = 0.1,
    val_data: Sequence[Tensor] | None = None,
    val_every: int = 100,
    patience: int | None = 10,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    progress: bool = True,
    seed: int = 0,
    desc: str = "train",
    stop_after: int | None = None,
    ema: float | None = None,
) -> History:
    """Minimise ``loss_fn(*batch)`` over minibatches of ``data``.

    Args:
        model: the module whose parameters are optimised (state is saved in checkpoints).
        loss_fn: called as ``loss_fn(*batch)`` with one minibatch of each tensor in ``data``;
            returns a scalar (mean loss over the batch).
        data: tensors with a common first dimension N (e.g. ``(x,)`` or ``(x, context)``).
        names: argument names of ``data`` for error messages (default ``data[0]``, ...).
        steps: total optimisation steps (Adam, cosine decay of the learning rate to 0).
        batch_size: minibatch size (capped at the training-set size).
        lr, weight_decay: Adam settings.
        clip: max gradient norm (None disables clipping).
        val_fraction: fraction of ``data`` held out for validation (ignored if ``val_data`` given;
            0 disables validation).
        val_data: explicit validation tensors.
        val_every: steps between validations.
        patience: stop after this many validations without improvement (None: never stop early).
            The weights of the best validation are restored at the end.
        checkpoint: file to save training state to every ``checkpoint_every`` steps and at the end;
            if it exists, training resumes from it (same seed and data give the same result as an
            uninterrupted run).
        progress: show a tqdm progress bar.
        seed: seeds the train/validation split and the minibatch order.
        desc: progress-bar label.
        stop_after: interrupt after this many steps in total (``< steps``) as if the run had been
            stopped there: the checkpoint then holds the *current* state (not the best weights),
            the model keeps its current weights, and calling ``train`` again with the same
            arguments (without ``stop_after``) resumes to ``steps`` with exactly the result of an
            uninterrupted run. Requires ``checkpoint``.
        ema: decay ``d`` in (0, 1) of an exponential moving average of the weights (every floating
            entry of ``model.state_dict()``: parameters and floating buffers), updated after every
            optimiser step; None disables it. The average is debiased: after T steps it is
            ``sum_s w_s theta_s`` over the weights ``theta_1 .. theta_T`` after each step, with
            ``w_s = (1 - d) d^(T - s) / (1 - d^T)`` (weights summing to 1; constant weights are
            reproduced exactly), i.e. roughly the last ``1 / (1 - d)`` steps. Validation losses are
            those of the averaged weights (so the best-validation weights restored at the end are
            averaged weights too); without validation the model ends with the average. The average
            is saved in checkpoints, so resuming stays bit-identical.

    Returns:
        The :class:`History`.
    """
    data = tuple(data)
    names = list(names) if names is not None else [f"data[{i}]" for i in range(len(data))]
    n = _check_data(data, names)
    _positive(steps, "steps", integer=True)
    _positive(batch_size, "batch_size", integer=True)
    _positive(lr, "lr")
    _positive(val_every, "val_every", integer=True)
    if clip is not None:
        _positive(clip, "clip")
    if patience is not None:
        _positive(patience, "patience", integer=True)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a number in [0, 1), got {val_fraction!r}")
    if ema is not None and (
        isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0.0 < ema < 1.0
    ):
        raise ValueError(
            f"ema: expected None or a float decay in (0, 1) such as 0.999, got {ema!r}"
        )
    if stop_after is not None:
        _positive(stop_after, "stop_after", integer=True)
        if checkpoint is None:
            raise ValueError("stop_after: needs a checkpoint file to resume from, got checkpoint=None")

    gen = torch.Generator().manual_seed(seed)
    if val_data is not None:
        val = tuple(val_data)
        _check_data(val, [f"val_{nm}" for nm in names])
        train_set = data
    elif val_fraction > 0 and n >= 2:
        perm = torch.randperm(n, generator=gen)
        n_val = max(1, int(round(val_fraction * n)))
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        val = tuple(t[val_idx.to(t.device)] for t in data)
        train_set = tuple(t[train_idx.to(t.device)] for t in data)
    else:
        val, train_set = None, data
    n_train = train_set[0].shape[0]
    batch_size = min(batch_size, n_train)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / steps))
    )
    history = History(ema=None if ema is None else float(ema))
    ema_state: dict[str, Tensor] = {}  # name -> averaged tensor (empty before the first step)
    best_state: dict[str, Tensor] | None = None
    bad_checks = 0
    start = 0

    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        saved_ema = state.get("ema_decay")
        if saved_ema != (None if ema is None else float(ema)):
            raise ValueError(
                f"ema: expected the value the checkpoint {ckpt_path} was written with "
                f"({saved_ema!r}) to resume it, got {ema!r}"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        for key, value in state["history"].items():
            setattr(history, key, value)
        best_state = state.get("best_state")
        bad_checks = int(state["bad_checks"])
        if ema is not None:
            float_state = _float_state(model)
            ema_state = {k: t.to(float_state[k]) for k, t in (state.get("ema") or {}).items()}
        start = history.steps_done
        log.info("resuming %s from step %d (%s)", desc, start, ckpt_path)

    def save_checkpoint() -> None:
        if ckpt_path is None:
            return
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt_path.with_name(ckpt_path.name + ".tmp")
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": gen.get_state(),
                "history": history.as_dict(),
                "best_state": best_state,
                "bad_checks": bad_checks,
                "ema_decay": None if ema is None else float(ema),
                "ema": ema_state if ema is not None else None,
            },
            tmp,
        )
        os.replace(tmp, ckpt_path)

    @torch.no_grad()
    def evaluate() -> float:
        model.eval()
        total, count = 0.0, 0
        m = val[0].shape[0]
        for i in range(0, m, max(batch_size, 1024)):
            batch = tuple(t[i : i + max(batch_size, 1024)] for t in val)
            total += float(loss_fn(*batch)) * batch[0].shape[0]
            count += batch[0].shape[0]
        model.train()
        return total / count

    model.train()
    window: list[float] = []
    bar = tqdm(total=steps, initial=start, desc=desc, disable=not progress, leave=False)
    step = start
    end = steps if stop_after is None else min(steps, stop_after)
    while step < end and not history.stopped_early:
        idx = torch.randint(n_train, (batch_size,), generator=gen)
        batch = tuple(t[idx.to(t.device)] for t in train_set)
        loss = loss_fn(*batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{desc}: the loss became {float(loss)} at step {step}; lower lr (now {lr}) or "
                "check the data scale"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        scheduler.step()
        step += 1
        history.steps_done = step
        if ema is not None:
            # debiased EMA in interpolation form: the first step copies the weights (w = 1); a
            # weight equal to the average leaves it unchanged exactly
            w = (1.0 - ema) / (1.0 - ema**step)
            with torch.no_grad():
                for k, t in _float_state(model).items():
                    if k in ema_state:
                        ema_state[k].lerp_(t.detach(), w)
                    else:
                        ema_state[k] = t.detach().clone()
        window.append(float(loss.detach()))
        if step % val_every == 0 or step == steps:
            history.step.append(step)
            history.loss.append(sum(window) / len(window))
            window = []
            postfix = {"loss": f"{history.loss[-1]:.4f}"}
            if val is not None:
                with _weights_swapped(model, ema_state) if ema is not None else nullcontext():
                    v = evaluate()
                    history.val_step.append(step)
                    history.val_loss.append(v)
                    postfix["val"] = f"{v:.4f}"
                    if not history.val_loss[:-1] or v < history.best_val:
                        history.best_val, history.best_step = v, step
                        best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
                        bad_checks = 0
                    else:
                        bad_checks += 1
                        if patience is not None and bad_checks >= patience:
                            history.stopped_early = True
            bar.set_postfix(postfix)
        if ckpt_path is not None and (step % checkpoint_every == 0):
            save_checkpoint()
        bar.update(1)
    bar.close()
    if step < steps and not history.stopped_early:  # interrupted by stop_after: keep the state
        save_checkpoint()
        model.eval()
        return history
    if best_state is not None:
        model.load_state_dict(best_state)
    elif ema_state:
        _copy_into(model, ema_state)
    save_checkpoint()
    model.eval()
    return history


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
            ``ema``, ...).

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
