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


def tiny_ddim_unet(seed: int = 1):
    """A 3 x 8 x 8 pixel-space ``diffusers.UNet2DModel`` small enough for CI, weights drawn from
    ``seed`` (needs diffusers)."""
    import diffusers
    import torch

    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    )
