"""Saving and loading models: weights and constructor config in one safe file.

Every model class of the package derives from :class:`Configurable`. Its constructor arguments are
recorded when it is built, so :func:`save` can write them (as JSON) next to the weights (as
safetensors) and :func:`load` can rebuild the object without any code from the user. Nothing in a
file is ever executed or unpickled: the class to build is looked up in a registry of latentatlas
classes, and a file that names anything else is refused.

File layout (one ``.safetensors`` file):

- tensors: the module's ``state_dict`` (parameters *and* buffers, e.g. ActNorm's ``initialized``
  flag), plus tensors that were constructor arguments under ``__config__.<i>``;
- metadata: ``format`` = ``latentatlas-model/1``, ``class``, ``config`` (JSON), ``version``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FORMAT = "latentatlas-model/1"
_CONFIG_PREFIX = "__config__."
_REGISTRY: dict[str, type] = {}


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class Configurable:
    """Mixin that records constructor arguments in ``self.config`` for :func:`save` / :func:`load`.

    Subclasses need do nothing: ``__init__`` is wrapped so that the arguments of the outermost
    constructor call (the most derived class) are bound to its signature, defaults applied, and kept
    as ``self.config`` (a dict). Constructors must not do expensive work (training, downloads) that
    ``load`` would repeat; put that in ``fit`` or a classmethod.
    """

    config: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[_class_name(cls)] = cls
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_la_wrapped", False):
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def wrapped(self: Any, *args: Any, **kw: Any) -> None:
            if "config" not in self.__dict__:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                config = dict(bound.arguments)
                config.pop(next(iter(signature.parameters)))  # self
                for name, param in signature.parameters.items():
                    if param.kind is inspect.Parameter.VAR_KEYWORD and name in config:
                        config.update(config.pop(name))
                    elif param.kind is inspect.Parameter.VAR_POSITIONAL and name in config:
                        config[name] = list(config[name])
                object.__setattr__(self, "config", config)
            init(self, *args, **kw)

        wrapped._la_wrapped = True  # type: ignore[attr-defined]
        cls.__init__ = wrapped  # type: ignore[misc]


def register(cls: type) -> type:
    """Register a class that is not a :class:`Configurable` subclass as loadable (decorator)."""
    _REGISTRY[_class_name(cls)] = cls
    return cls


def _encode(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor | np.ndarray):
        key = f"{_CONFIG_PREFIX}{len(tensors)}"
        tensor = torch.as_tensor(value).detach().cpu().contiguous().clone()
        tensors[key] = tensor
        return {"__tensor__": key, "numpy": isinstance(value, np.ndarray)}
    if isinstance(value, list | tuple):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"cannot save {where}: dict keys must be strings, got {list(value)}")
        return {k: _encode(v, tensors, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, Configurable):
        if _class_name(type(value)) not in _REGISTRY:
            raise ValueError(f"cannot save {where}: class {type(value).__name__} is not registered")
        encoded = {
            "__class__": _class_name(type(value)),
            "config": _encode(value.config, tensors, where),
        }
        if isinstance(value, nn.Module):  # weights of a nested model (e.g. a plane's generator)
            encoded["state"] = {
                key: _encode(t, tensors, f"{where}.{key}") for key, t in value.state_dict().items()
            }
        return encoded
    raise ValueError(
        f"cannot save {where}: a {type(value).__module__}.{type(value).__qualname__} cannot be "
        "rebuilt from a file without running user code; pass latentatlas building blocks, or save "
        "the state_dict yourself with torch.save / safetensors"
    )


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if isinstance(value, dict):
        if "__tensor__" in value:
            tensor = tensors[value["__tensor__"]]
            return tensor.numpy() if value.get("numpy") else tensor
        if "__class__" in value:
            obj = _build(value["__class__"], _decode(value["config"], tensors))
            if "state" in value and isinstance(obj, nn.Module):
                state = {k: torch.as_tensor(_decode(v, tensors)) for k, v in value["state"].items()}
                obj.load_state_dict(state, strict=True)
            return obj
        return {k: _decode(v, tensors) for k, v in value.items()}
    return value


def _lookup(name: str) -> type:
    if name not in _REGISTRY and name.startswith("latentatlas."):
        module = name.rsplit(".", 1)[0]
        while module and name not in _REGISTRY:
            try:
                importlib.import_module(module)
                break
            except ImportError:
                module = module.rsplit(".", 1)[0] if "." in module else ""
    if name not in _REGISTRY:
        raise ValueError(f"the file asks for class {name!r}, which is not a latentatlas model class")
    return _REGISTRY[name]


def _build(name: str, config: dict[str, Any]) -> Any:
    cls = _lookup(name)
    signature = inspect.signature(cls.__init__)
    args: list[Any] = []
    kwargs = dict(config)
    for pname, param in signature.parameters.items():
        if param.kind is inspect.Parameter.VAR_POSITIONAL and pname in kwargs:
            args = list(kwargs.pop(pname))
    if args:
        positional = [
            p for p in list(signature.parameters)[1:]
            if signature.parameters[p].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        ]
        args = [kwargs.pop(p) for p in positional] + args
    return cls(*args, **kwargs)


def save(obj: Configurable, path: str | os.PathLike) -> Path:
    """Write ``obj`` (weights + constructor config) to ``path`` as a safetensors file.

    Args:
        obj: any latentatlas model (a :class:`Configurable`, usually an ``nn.Module``).
        path: destination file; written atomically (temporary file + rename).

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    from . import __version__

    if not isinstance(obj, Configurable):
        raise ValueError(
            f"obj: expected a latentatlas model (a Configurable), got {type(obj).__qualname__}"
        )
    tensors: dict[str, torch.Tensor] = {}
    config = _encode(obj.config, tensors, type(obj).__name__)
    if isinstance(obj, nn.Module):
        for key, value in obj.state_dict().items():
            if key.startswith(_CONFIG_PREFIX):
                raise ValueError(f"state_dict key {key!r} clashes with the config prefix")
            tensors[key] = value.detach().cpu().contiguous().clone()
    metadata = {
        "format": FORMAT,
        "class": _class_name(type(obj)),
        "config": json.dumps(config),
        "version": __version__,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Rebuild a model written by :func:`save`. Never executes code from the file.

    Args:
        path: a file written by :func:`save`.
        map_location: device for the loaded weights.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is corrupt, not a latentatlas model file, or names a class that is
            not a latentatlas model class.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {str(path)!r}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"path: {str(path)!r} is not a readable latentatlas model file ({err})") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"path: {str(path)!r} is a safetensors file but not a latentatlas model "
            f"(format {metadata.get('format')!r}, expected {FORMAT!r})"
        )
    try:
        config = json.loads(metadata["config"])
    except (KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"path: {str(path)!r} has a corrupt config ({err})") from None
    obj = _build(metadata["class"], _decode(config, tensors))
    if isinstance(obj, nn.Module):
        state = {k: v for k, v in tensors.items() if not k.startswith(_CONFIG_PREFIX)}
        # The constructor builds in the default dtype; give the model the saved dtype first, or
        # load_state_dict would round float64 weights silently (per tensor if the dtypes are mixed).
        dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
        if len(dtypes) == 1:
            obj.to(dtypes.pop())
        with torch.no_grad():
            for name, t in [*obj.named_parameters(), *obj.named_buffers()]:
                saved = state.get(name)
                if saved is not None and t.is_floating_point() and saved.dtype != t.dtype:
                    t.data = t.data.to(saved.dtype)
        try:
            obj.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"path: {str(path)!r} weights do not fit the model ({err})") from None
        obj.to(map_location)
    return obj
