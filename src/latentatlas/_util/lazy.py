"""Lazy package attributes (PEP 562): ``__getattr__ = lazy_getattr(__name__, ...)``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, names: Mapping[str, str] | Iterable[str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` importing on first access.

    Args:
        package: the package's ``__name__``.
        names: ``{attribute: submodule}`` (the attribute is taken from the submodule), or an
            iterable of submodule names (the attribute is the submodule itself).

    The value is cached in the package's namespace, so the import happens once; unknown names
    raise :class:`AttributeError` as usual.
    """
    table = dict(names) if isinstance(names, Mapping) else {n: None for n in names}

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        sub = table[name]
        if sub is None:
            value = importlib.import_module(f"{package}.{name}")
        else:
            value = getattr(importlib.import_module(f"{package}.{sub}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
