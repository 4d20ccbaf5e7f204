"""Shared test setup: deterministic, single-threaded torch per xdist worker, no display."""

from __future__ import annotations

import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
