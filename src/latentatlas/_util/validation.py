"""Argument validation with one message style: ``"<name>: expected <what>, got <value>"``.

Every check raises :class:`ValueError` naming the argument, what was expected and what was
received, so that the CLI can print the message as is (one line, exit code 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["check_choice", "check_finite_positive", "check_int", "check_seed", "parse_auto_int"]


def check_int(value: Any, name: str, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """``value`` as a Python int, refusing bools, floats and out-of-range values.

    Args:
        value: the argument.
        name: its name, used in the message.
        minimum, maximum: inclusive bounds (None: unbounded).

    Raises:
        ValueError: ``"<name>: expected an int >= <minimum>, got <value>"``.
    """
    if minimum is not None and maximum is not None:
        what = f"an int in [{minimum}, {maximum}]"
    elif minimum == 1:
        what = "a positive int"
    elif minimum == 0:
        what = "a non-negative int"
    elif minimum is not None:
        what = f"an int >= {minimum}"
    elif maximum is not None:
        what = f"an int <= {maximum}"
    else:
        what = "an int"
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return int(value)


def check_seed(value: Any, name: str = "seed") -> int:
    """A non-negative int seed."""
    return check_int(value, name, minimum=0)


def check_finite_positive(value: Any, name: str, allow_zero: bool = False) -> float:
    """A finite float > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name}: expected a {'non-negative' if allow_zero else 'positive'}"
                         f" number, got {value!r}")
    out = float(value)
    if not math.isfinite(out) or out < 0 or (out == 0 and not allow_zero):
        raise ValueError(f"{name}: expected a {'non-negative' if allow_zero else 'positive'}"
                         f" number, got {value!r}")
    return out


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """One of ``choices``."""
    if value not in tuple(choices):
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    return str(value)


def parse_auto_int(value: Any, name: str, minimum: int = 1) -> int | None:
    """``"auto"`` / None -> None, otherwise an int >= ``minimum`` (strings of digits accepted, as
    from a command line)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"{name}: expected 'auto' or an int >= {minimum}, got {value!r}"
                             ) from None
    try:
        return check_int(value, name, minimum=minimum)
    except ValueError:
        raise ValueError(f"{name}: expected 'auto' or an int >= {minimum}, got {value!r}") from None
