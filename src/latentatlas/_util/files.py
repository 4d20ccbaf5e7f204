"""Atomic file writes: write a temporary file beside the target, fsync it, rename it into place,
fsync the directory. A reader (or a rerun after a crash) sees the old file or the new one, never a
torn one."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["atomic_write", "atomic_path", "save_json", "save_npy", "save_npz"]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to (by any library); on success it is fsynced and renamed
    onto ``path``; on failure it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any] | bytes | str) -> Path:
    """Write ``path`` atomically.

    Args:
        path: target file.
        write: the bytes or text to write, or a function that writes into a binary file handle.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        if callable(write):
            write(handle)
        else:
            handle.write(write.encode() if isinstance(write, str) else write)
    return path


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented, key-sorted JSON (NaN allowed)."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Atomically write one array (``allow_pickle=False``)."""
    return atomic_write(path, lambda h: np.save(h, np.asarray(array), allow_pickle=False))


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """Atomically write a ``.npz`` of plain arrays (object arrays are refused on load)."""
    return atomic_write(path, lambda h: np.savez(h, **{k: np.asarray(v)
                                                       for k, v in arrays.items()}))
