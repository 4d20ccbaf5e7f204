"""Helpers shared by the CLI tests: run a command and read its exit code; a fixture that makes a
generator module (source text) importable for one test."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from latentatlas.cli import main


def run(args: list[str]) -> int:
    """Run ``latentatlas ARGS`` in process; the exit code (0 when it returns)."""
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def module_fixture(name: str, source: str) -> Callable[..., Any]:
    """A function-scoped fixture writing ``source`` as module ``name`` into the test's tmp_path,
    on ``sys.path`` for the test (and out of ``sys.modules`` after it); its value is ``name``."""

    @pytest.fixture()
    def fixture(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))
        yield name
        sys.modules.pop(name, None)

    return fixture
