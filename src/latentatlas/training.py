"""The one training loop of the package, split into its steps.

:func:`train` minimises ``loss_fn(*batch)`` over minibatches (Adam, cosine decay, gradient
clipping, an optional exponential moving average of the weights, validation, early stopping, tqdm
progress, resumable checkpoints written atomically). Every fit of the package (posterior
estimators, potentials, flows, flow matching, the embedded generator and classifier) trains
through it.

The loop is a :class:`Trainer` whose steps are small methods: :meth:`Trainer.resume`,
:meth:`Trainer.step` (one optimisation step), :meth:`Trainer.update_ema`,
:meth:`Trainer.validate`, :meth:`Trainer.log` (logging window, validation, early stopping),
:meth:`Trainer.save_checkpoint` and :meth:`Trainer.finish` (best weights or EMA).

How the steps are distributed is a :class:`Strategy` argument: :class:`SingleProcess` (the
default) or :class:`DataParallel` (``torch.distributed`` DDP: each process computes the loss on
its share of the global minibatch, gradients are all-reduced, rank 0 writes the checkpoint).
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
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .strategies import (  # re-exported
    DataParallel,
    SingleProcess,
    Strategy,
    _resolve_strategy,
    default_strategy,
    is_distributed,
)

__all__ = [
    "DataParallel",
    "History",
    "SingleProcess",
    "Strategy",
    "Trainer",
    "default_strategy",
    "is_distributed",
    "train",
]

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


# --------------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


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


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _split(data: tuple[Tensor, ...], val_data: Sequence[Tensor] | None, val_fraction: float,
           names: Sequence[str], gen: torch.Generator
           ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...] | None]:
    """Training and validation tensors: ``val_data`` if given, else a random ``val_fraction`` of
    ``data`` (permutation drawn from ``gen``), else no validation."""
    n = data[0].shape[0]
    if val_data is not None:
        val = tuple(val_data)
        _check_data(val, [f"val_{nm}" for nm in names])
        return data, val
    if val_fraction > 0 and n >= 2:
        perm = torch.randperm(n, generator=gen)
        n_val = max(1, int(round(val_fraction * n)))
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        return (tuple(t[train_idx.to(t.device)] for t in data),
                tuple(t[val_idx.to(t.device)] for t in data))
    return data, None


@dataclass
class _Options:
    """The validated options of :func:`train` (see there)."""

    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    clip: float | None
    val_every: int
    patience: int | None
    checkpoint_every: int
    progress: bool
    desc: str
    stop_after: int | None
    ema: float | None

    def validate(self, val_fraction: float, checkpoint: Any) -> None:
        _positive(self.steps, "steps", integer=True)
        _positive(self.batch_size, "batch_size", integer=True)
        _positive(self.lr, "lr")
        _positive(self.val_every, "val_every", integer=True)
        if self.clip is not None:
            _positive(self.clip, "clip")
        if self.patience is not None:
            _positive(self.patience, "patience", integer=True)
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction: expected a number in [0, 1), got {val_fraction!r}")
        ema = self.ema
        if ema is not None and (
            isinstance(ema, bool) or not isinstance(ema, int | float) or not 0.0 < ema < 1.0
        ):
            raise ValueError(
                f"ema: expected None or a float decay in (0, 1) such as 0.999, got {ema!r}"
            )
        if self.stop_after is not None:
            _positive(self.stop_after, "stop_after", integer=True)
            if checkpoint is None:
                raise ValueError("stop_after: needs a checkpoint file to resume from, got "
                                 "checkpoint=None")


# --------------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------------


class Trainer:
    """One training run, step by step (built and driven by :func:`train`).

    Attributes:
        model: the module being optimised.
        loss: the loss the loop calls (``loss_fn`` as prepared by the strategy).
        train_set: training tensors (N_train, ...); ``val``: validation tensors or None.
        optimizer, scheduler: Adam and the cosine decay of the learning rate to 0.
        generator: CPU generator of the minibatch indices (its state is checkpointed).
        history: the :class:`History` so far.
        ema_state: name -> averaged tensor (empty before the first step or without EMA).
        best_state: state dict of the best validation so far (None before any validation).
        bad_checks: validations since the last improvement.
        checkpoint: this process's checkpoint file (None: no checkpoints).
    """

    def __init__(self, model: nn.Module, loss: Callable[..., Tensor],
                 train_set: tuple[Tensor, ...], val: tuple[Tensor, ...] | None,
                 generator: torch.Generator, options: _Options, checkpoint: Path | None) -> None:
        self.model, self.loss = model, loss
        self.train_set, self.val = train_set, val
        self.generator = generator
        self.opt = options
        self.checkpoint = checkpoint
        self.n_train = train_set[0].shape[0]
        self.batch_size = min(options.batch_size, self.n_train)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=options.lr,
                                          weight_decay=options.weight_decay)
        steps = options.steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / steps))
        )
        self.ema = None if options.ema is None else float(options.ema)
        self.history = History(ema=self.ema)
        self.ema_state: dict[str, Tensor] = {}
        self.best_state: dict[str, Tensor] | None = None
        self.bad_checks = 0
        self._window: list[float] = []

    @property
    def steps_done(self) -> int:
        return self.history.steps_done

    @property
    def converged(self) -> bool:
        """Whether early stopping has ended training."""
        return self.history.stopped_early

    # -- checkpoints ---------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load the checkpoint file if it exists (returns whether it did)."""
        path = self.checkpoint
        if path is None or not path.exists():
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved_ema = state.get("ema_decay")
        if saved_ema != self.ema:
            raise ValueError(
                f"ema: expected the value the checkpoint {path} was written with "
                f"({saved_ema!r}) to resume it, got {self.opt.ema!r}"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        for key, value in state["history"].items():
            setattr(self.history, key, value)
        self.best_state = state.get("best_state")
        self.bad_checks = int(state["bad_checks"])
        if self.ema is not None:
            current = _float_state(self.model)
            self.ema_state = {k: t.to(current[k]) for k, t in (state.get("ema") or {}).items()}
        log.info("resuming %s from step %d (%s)", self.opt.desc, self.steps_done, path)
        return True

    def save_checkpoint(self) -> None:
        """Write the full training state (atomically) if there is a checkpoint file."""
        if self.checkpoint is None:
            return
        _atomic_torch_save({
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "history": self.history.as_dict(),
            "best_state": self.best_state,
            "bad_checks": self.bad_checks,
            "ema_decay": self.ema,
            "ema": self.ema_state if self.ema is not None else None,
        }, self.checkpoint)

    # -- one step ------------------------------------------------------------------------------
    def next_batch(self) -> tuple[Tensor, ...]:
        """A minibatch drawn with replacement: (batch_size, ...) of each training tensor."""
        idx = torch.randint(self.n_train, (self.batch_size,), generator=self.generator)
        return tuple(t[idx.to(t.device)] for t in self.train_set)

    def step(self) -> float:
        """One optimisation step (loss, backward, clipping, Adam, schedule); returns the loss."""
        loss = self.loss(*self.next_batch())
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{self.opt.desc}: the loss became {float(loss)} at step {self.steps_done}; lower "
                f"lr (now {self.opt.lr}) or check the data scale"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.opt.clip is not None:
            nn.utils.clip_grad_norm_(self.params, self.opt.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.history.steps_done += 1
        self.update_ema()
        value = float(loss.detach())
        self._window.append(value)
        return value

    @torch.no_grad()
    def update_ema(self) -> None:
        """Debiased EMA in interpolation form: the first step copies the weights (w = 1); a weight
        equal to the average leaves it unchanged exactly."""
        if self.ema is None:
            return
        w = (1.0 - self.ema) / (1.0 - self.ema**self.steps_done)
        for k, t in _float_state(self.model).items():
            if k in self.ema_state:
                self.ema_state[k].lerp_(t.detach(), w)
            else:
                self.ema_state[k] = t.detach().clone()

    # -- validation ----------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> float:
        """Mean loss over the validation set (current weights, eval mode)."""
        assert self.val is not None
        self.model.eval()
        total, count = 0.0, 0
        chunk = max(self.batch_size, 1024)
        for i in range(0, self.val[0].shape[0], chunk):
            batch = tuple(t[i : i + chunk] for t in self.val)
            total += float(self.loss(*batch)) * batch[0].shape[0]
            count += batch[0].shape[0]
        self.model.train()
        return total / count

    def check(self) -> dict[str, str]:
        """Close the logging window; validate (EMA weights if any), keep the best weights and
        decide on early stopping. Returns the progress-bar postfix."""
        h = self.history
        h.step.append(self.steps_done)
        h.loss.append(sum(self._window) / len(self._window))
        self._window = []
        postfix = {"loss": f"{h.loss[-1]:.4f}"}
        if self.val is None:
            return postfix
        with _weights_swapped(self.model, self.ema_state) if self.ema is not None else nullcontext():
            v = self.validate()
            h.val_step.append(self.steps_done)
            h.val_loss.append(v)
            postfix["val"] = f"{v:.4f}"
            if not h.val_loss[:-1] or v < h.best_val:
                h.best_val, h.best_step = v, self.steps_done
                self.best_state = {k: t.detach().clone() for k, t in self.model.state_dict().items()}
                self.bad_checks = 0
            else:
                self.bad_checks += 1
                if self.opt.patience is not None and self.bad_checks >= self.opt.patience:
                    h.stopped_early = True
        return postfix

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> History:
        """Resume if possible, step to ``steps`` (or ``stop_after``), then :meth:`finish`."""
        opt = self.opt
        self.resume()
        self.model.train()
        end = opt.steps if opt.stop_after is None else min(opt.steps, opt.stop_after)
        with tqdm(total=opt.steps, initial=self.steps_done, desc=opt.desc,
                  disable=not opt.progress, leave=False) as bar:
            while self.steps_done < end and not self.converged:
                self.step()
                step = self.steps_done
                if step % opt.val_every == 0 or step == opt.steps:
                    bar.set_postfix(self.check())
                if self.checkpoint is not None and step % opt.checkpoint_every == 0:
                    self.save_checkpoint()
                bar.update(1)
        return self.finish()

    def finish(self) -> History:
        """End of the run. Interrupted (``stop_after``): checkpoint the current state and keep the
        current weights. Otherwise: restore the best validation weights (else the EMA), write
        the final checkpoint. The model ends in eval mode."""
        if self.steps_done < self.opt.steps and not self.converged:
            self.save_checkpoint()
            self.model.eval()
            return self.history
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        elif self.ema_state:
            _copy_into(self.model, self.ema_state)
        self.save_checkpoint()
        self.model.eval()
        return self.history


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
    strategy: Strategy | None = None,
) -> History:
    """Minimise ``loss_fn(*batch)`` over minibatches of ``data``.

    Args:
        model: the module whose parameters are optimised (state is saved in checkpoints).
        loss_fn: called as ``loss_fn(*batch)`` with one minibatch of each tensor in ``data``;
            returns a scalar (mean loss over the batch).
        data: tensors with a common first dimension N (e.g. ``(x,)`` or ``(x, context)``).
        names: argument names of ``data`` for error messages (default ``data[0]``, ...).
        steps: total optimisation steps (Adam, cosine decay of the learning rate to 0).
        batch_size: minibatch size (capped at the training-set size); with
            :class:`DataParallel` the GLOBAL batch, shared by the processes.
        lr, weight_decay: Adam settings.
        clip: max gradient norm (None disables clipping).
        val_fraction: fraction of ``data`` held out for validation (ignored if ``val_data`` given;
            0 disables validation).
        val_data: explicit validation tensors.
        val_every: steps between validations.
        patience: stop after this many validations without improvement (None: never stop early).
            The weights of the best validation are restored at the end.
        checkpoint: file to save training state to every ``checkpoint_every`` steps and at the end
            (atomically: temporary file, fsync, rename); if it exists, training resumes from it
            (same seed and data give the same result as an uninterrupted run).
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
        strategy: :class:`SingleProcess` or :class:`DataParallel`; None: the default of the
            enclosing :func:`default_strategy` block, else :class:`SingleProcess`.

    Returns:
        The :class:`History`; with :class:`DataParallel` its losses are global-batch means
        (identical on every process).
    """
    strategy = _resolve_strategy(strategy)
    data = tuple(data)
    names = list(names) if names is not None else [f"data[{i}]" for i in range(len(data))]
    _check_data(data, names)
    options = _Options(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                       clip=clip, val_every=val_every, patience=patience,
                       checkpoint_every=checkpoint_every, progress=progress, desc=desc,
                       stop_after=stop_after, ema=ema)
    options.validate(val_fraction, checkpoint)
    options.progress = strategy.show_progress(progress)
    gen = torch.Generator().manual_seed(seed)
    train_set, val = _split(data, val_data, val_fraction, names, gen)
    path = strategy.checkpoint_path(Path(checkpoint) if checkpoint is not None else None)
    loss = strategy.prepare(model, loss_fn)
    return Trainer(model, loss, train_set, val, gen, options, path).run()
