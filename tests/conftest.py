"""Shared test setup: deterministic, single-threaded torch per xdist worker, no display; the
embedded digits models trained once per test run and shared by every xdist worker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import pytest
import torch
from filelock import FileLock  # a dependency of torch

matplotlib.use("Agg")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per worker (two workers on two cores), and the same for every process a test
    # starts (CLI runs, DDP ranks, Ray workers): OpenMP threads that outnumber the cores spin in
    # their barriers and slow both workers many times over
    torch.set_num_threads(1)
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

# The reduced budget of the digits generator in the tests (the full recipe is 12000 steps).
DIGITS_TEST_STEPS = 1500


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``$LATENTATLAS_CACHE`` directory of this test run, the same for every xdist worker
    (``pytest-N/`` is the parent of the workers' ``popen-gwK/`` base directories), so that a
    model is trained once per run and loaded by the other worker."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / "latentatlas-cache"
    path.mkdir(exist_ok=True)
    return path


@contextmanager
def use_cache(path: Path, name: str) -> Iterator[None]:
    """``$LATENTATLAS_CACHE = path`` while holding the lock ``name``: the first worker trains the
    model, the other one waits and then loads it from the cache."""
    mp = pytest.MonkeyPatch()
    try:
        with FileLock(str(path / f"{name}.lock")):
            mp.setenv("LATENTATLAS_CACHE", str(path))
            yield
    finally:
        mp.undo()


def _classifier(path: Path) -> Any:
    import latentatlas as la

    with use_cache(path, "digits-classifier"):
        return la.features.Classifier.pretrained(progress=False)


def _generator(path: Path) -> Any:
    import latentatlas as la
    from latentatlas.cache import cached

    with use_cache(path, "digits-generator"):
        return cached(f"digits-generator-{DIGITS_TEST_STEPS}", {"steps": DIGITS_TEST_STEPS},
                      lambda: la.generators.Digits.train_new(progress=False,
                                                             steps=DIGITS_TEST_STEPS))


@pytest.fixture(scope="session")
def digits_classifier(shared_cache: Path) -> Any:
    """``la.features.Classifier.pretrained()`` (the full recipe), trained once per test run."""
    return _classifier(shared_cache)


@pytest.fixture(scope="session")
def digits_generator(shared_cache: Path) -> Any:
    """The digits generator at the reduced budget ``DIGITS_TEST_STEPS`` (seed 0), trained once
    per test run (``Digits.train_new(steps=DIGITS_TEST_STEPS)``; eval mode)."""
    return _generator(shared_cache)
