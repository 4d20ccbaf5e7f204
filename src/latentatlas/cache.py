"""A cache of trained embedded models (the digits generator, the digits classifier).

Models are trained on first use and saved with :func:`latentatlas.save` in the user's cache
directory (``$LATENTATLAS_CACHE``, else ``$XDG_CACHE_HOME/latentatlas``, else
``~/.cache/latentatlas``). Each file records a key (the model config, the training recipe and a hash
of the training data) in a JSON sidecar; a stale key or a corrupt file is detected and the model is
retrained, never silently reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .io import load, save

__all__ = ["cache_dir", "cached", "data_hash"]

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """The directory where trained embedded models are kept."""
    if os.environ.get("LATENTATLAS_CACHE"):
        return Path(os.environ["LATENTATLAS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "latentatlas"


def data_hash(*arrays: Any) -> str:
    """A short SHA-256 of the bytes of numpy arrays / tensors (the training data's identity)."""
    import numpy as np

    digest = hashlib.sha256()
    for a in arrays:
        arr = np.ascontiguousarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a)
        digest.update(str(arr.dtype).encode() + str(arr.shape).encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()[:16]


def cached(name: str, key: dict[str, Any], train: Callable[[], Any], refresh: bool = False) -> Any:
    """Return the model cached under ``name`` if its key matches, else ``train()`` it and cache it.

    Args:
        name: file stem in the cache directory.
        key: JSON-able identity of the model (config, recipe, data hash); a mismatch retrains.
        train: builds and trains the model (a :class:`~latentatlas.io.Configurable`).
        refresh: retrain even if a valid cache exists.
    """
    directory = cache_dir()
    path = directory / f"{name}.safetensors"
    key_path = directory / f"{name}.json"
    key_text = json.dumps(key, sort_keys=True)
    if not refresh and path.is_file() and key_path.is_file():
        try:
            stored = key_path.read_text()
        except OSError:
            stored = ""
        if stored == key_text:
            try:
                return load(path)
            except (ValueError, OSError) as err:
                log.warning("cached %s is corrupt (%s); retraining", path, err)
        else:
            log.warning("cached %s was made with another config or data; retraining", path)
    model = train()
    directory.mkdir(parents=True, exist_ok=True)
    save(model, path)
    tmp = key_path.with_name(key_path.name + ".tmp")
    tmp.write_text(key_text)
    os.replace(tmp, key_path)
    return model
