"""Where a run's networks live: the device and the floating dtypes of the pipeline.

The device is an execution option, like the sampling backend (``build(..., device="cuda")``,
``latentatlas atlas ... --device cuda``): it is not part of the config, so a run started on a GPU
can be resumed on a CPU. The dtypes are part of the config (they change the numbers):
``posterior_options["dtype"]`` for the posterior estimator and ``potential_options["dtype"]`` for
the potential, ``"float32"`` or ``"float64"``; unset, each network keeps the dtypes it is built
with (float32 for the trained networks; the kernel estimator computes distances in float64).

After each fitting stage :func:`check_placement` asserts that every parameter and floating buffer
of the fitted network is on the run's device and in its dtype: a tensor left behind on the CPU (or
in float32 in a float64 run) fails loudly there instead of silently making a GPU run slow.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["DTYPES", "check_device", "check_dtype", "check_placement", "place"]

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
"""The floating dtypes a run's networks can be trained in, by their config name."""


def check_device(device: Any) -> torch.device:
    """``device`` (None, a string such as ``"cpu"``, ``"cuda:1"``, ``"mps"``, or a
    :class:`torch.device`) as an available :class:`torch.device`; None is the CPU.

    Raises:
        ValueError: an unparseable name, or a device this machine does not have (naming what it
            has).
    """
    if device is None:
        return torch.device("cpu")
    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device))
    except (RuntimeError, TypeError):
        raise ValueError(f"device: expected a torch device such as 'cpu', 'cuda' or 'cuda:1', "
                         f"got {device!r}") from None
    have = ["cpu"]
    if torch.cuda.is_available():
        have += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        have.append("mps")
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        index = 0 if dev.index is None else dev.index
        if index < torch.cuda.device_count():
            return torch.device("cuda", index)
    elif dev.type == "mps" and "mps" in have:
        return dev
    raise ValueError(f"device: expected a device this machine has ({', '.join(have)}), got "
                     f"{str(device)!r}")


def check_dtype(value: Any, name: str) -> torch.dtype | None:
    """A dtype option: ``"float32"``, ``"float64"`` (or the torch dtype); None (unset: each
    network keeps the dtypes it is built with, float32 for the trained ones) stays None."""
    if value is None:
        return None
    if isinstance(value, torch.dtype) and value in DTYPES.values():
        return value
    if isinstance(value, str) and value in DTYPES:
        return DTYPES[value]
    raise ValueError(f"{name}: expected one of {tuple(DTYPES)}, got {value!r}")


def place(model: Any, device: torch.device, dtype: torch.dtype | None) -> Any:
    """Move an ``nn.Module`` (in place) to ``device`` and, unless ``dtype`` is None, its floating
    tensors to ``dtype``; anything else is returned as is."""
    if isinstance(model, nn.Module):
        model.to(device=device) if dtype is None else model.to(device=device, dtype=dtype)
    return model


def check_placement(model: Any, device: torch.device, dtype: torch.dtype | None,
                    what: str) -> None:
    """Assert that every parameter and buffer of ``model`` (an ``nn.Module``; anything else
    passes) is on ``device`` and, unless ``dtype`` is None, every floating one in ``dtype``.

    Raises:
        RuntimeError: naming the first tensor found elsewhere (a pipeline bug, not bad input).
    """
    if not isinstance(model, nn.Module):
        return
    tensors = [*model.named_parameters(), *model.named_buffers()]
    for name, tensor in tensors:
        if tensor.device.type != device.type or (
                device.index is not None and tensor.device.index not in (None, device.index)):
            raise RuntimeError(f"{what}: tensor {name!r} is on {tensor.device}, expected the "
                               f"run's device {device}")
        if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
            raise RuntimeError(f"{what}: tensor {name!r} is {tensor.dtype}, expected the run's "
                               f"{dtype}")
