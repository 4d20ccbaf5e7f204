"""One switch for the progress bars of code that has no ``progress`` argument of its own.

Deep helpers (the Ising transfer matrix, the TASEP master equation) are reached through
``Source.reference`` and other APIs without a ``progress`` flag; they ask :func:`enabled`, and
:func:`latentatlas.atlas.pipeline.execute` runs a ``progress=False`` atlas inside :func:`quiet`.
A context variable, so concurrent contexts (threads started with a copied context, asyncio
tasks) each keep their own setting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["enabled", "quiet"]

_ENABLED: ContextVar[bool] = ContextVar("latentatlas_progress", default=True)


def enabled() -> bool:
    """Whether progress bars may be shown here (False inside :func:`quiet`)."""
    return _ENABLED.get()


@contextlib.contextmanager
def quiet(active: bool = True) -> Iterator[None]:
    """Hide the progress bars of the helpers that ask :func:`enabled` (``active=False``: no-op).

    Example::

        with quiet():
            la.sources.Ising2D(L=8).reference(params)   # no transfer-matrix bar
    """
    if not active:
        yield
        return
    token = _ENABLED.set(False)
    try:
        yield
    finally:
        _ENABLED.reset(token)
