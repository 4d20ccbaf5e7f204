"""The run folder: ``config.json``, ``source.safetensors`` and one set of output files per stage.

Opening a folder that holds another config raises :class:`ValueError` before anything is written
(the CLI turns it into exit code 2); ``force`` recomputes every stage of the same config. A stage
is complete when all of its outputs exist; every output is written atomically (temporary file,
fsync, rename), so an interrupted stage is simply redone, and stages that checkpoint (sampling,
training) resume inside.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._util import save_json

if TYPE_CHECKING:
    from .config import RunConfig

__all__ = ["RunFolder"]

log = logging.getLogger("latentatlas.atlas")


class RunFolder:
    """A run folder bound to one :class:`~latentatlas.atlas.config.RunConfig`.

    Args:
        path: the folder (created if missing).
        config: the run's config; refused if the folder holds another one.
        force: recompute every stage (same config only).
        outputs: every file/folder name a stage may write (to refuse a folder that holds run
            outputs but no config).
        source: the source, written to ``source.safetensors`` (its tensors and weights) so that
            :func:`~latentatlas.atlas.config.source_from_config` can rebuild it.
    """

    def __init__(self, path: str | os.PathLike, config: RunConfig, force: bool = False,
                 outputs: Iterable[str] = (), source: Any = None) -> None:
        if config.source.get("fingerprint") is None:
            raise ValueError(f"source: {config.source.get('unrecorded', 'not recordable')}")
        self.path = Path(path)
        self.config = config
        self.force = bool(force)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"out: expected a directory, got the file {str(self.path)!r}")
        cfg_path = self.path / "config.json"
        if cfg_path.is_file():
            try:
                old = json.loads(cfg_path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"out: {str(cfg_path)!r} is not valid JSON ({err}); use another "
                                 "folder") from None
            differ = config.differences(old)
            if differ:
                mine = config.to_dict()
                detail = ", ".join(f"{k}={_short(old.get(k))} there vs {_short(mine.get(k))} here"
                                   for k in differ[:3])
                raise ValueError(f"out: {str(self.path)!r} holds a run with another config "
                                 f"({detail}); use another --out folder or delete it")
        elif self.path.is_dir():
            tops = {o.split("/")[0] for o in outputs}
            if any(p.name in tops for p in self.path.iterdir()):
                raise ValueError(f"out: {str(self.path)!r} holds run outputs but no config.json; "
                                 "use another folder")
        self.path.mkdir(parents=True, exist_ok=True)
        if source is not None and (self.force or not (self.path / "source.safetensors").is_file()):
            from ..io import save as save_model

            save_model(source, self.path / "source.safetensors")
        save_json(cfg_path, config.to_dict())
        self.skipped: list[str] = []
        self.computed: list[str] = []

    def file(self, name: str) -> Path:
        """The path of an output inside the folder."""
        return self.path / name

    def done(self, stage: str, outputs: Iterable[str]) -> bool:
        """Whether ``stage`` can be skipped: its outputs exist and ``force`` is off (or the stage
        was already recomputed in this run)."""
        if self.force and stage not in self.computed:
            return False
        outputs = tuple(outputs)
        return bool(outputs) and all((self.path / out).exists() for out in outputs)

    def fresh(self, name: str) -> Path:
        """The path of a checkpoint ``name``, removed first when ``force`` recomputes."""
        path = self.file(name)
        if self.force and path.exists():
            if path.is_dir():
                import shutil

                shutil.rmtree(path)
            else:
                path.unlink()
        return path

    def mark(self, stage: str, skipped: bool, outputs: Iterable[str] = ()) -> None:
        (self.skipped if skipped else self.computed).append(stage)
        if skipped:
            log.info("stage %s: found %s, skipped", stage, ", ".join(outputs))
        else:
            log.info("stage %s: done", stage)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."
