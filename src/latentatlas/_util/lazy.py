"""Lazy submodule attributes (PEP 562): ``__getattr__ = lazy_getattr(__name__, {...})``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``names[attr]`` (a submodule, relative to
    ``package``) on first access and returns its attribute ``attr`` (or the submodule itself when
    the attribute is the submodule's own name), caching it in the package's namespace."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{names[name]}")
        value = module if names[name].rsplit(".", 1)[-1] == name and not hasattr(
            module, name) else getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
