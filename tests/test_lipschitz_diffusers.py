"""The precision floor of a diffusers generator (tiny random DDIM pipeline, CPU): float32 reports
its floor, float64 resolves the steps below it and agrees with float32 above it."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from tests._fixtures import tiny_ddim_unet  # noqa: E402

from latentatlas.analyses import plane_tools as T  # noqa: E402
from latentatlas.generators import Diffusers  # noqa: E402
from latentatlas.sources import LatentPlane  # noqa: E402


@pytest.fixture(scope="module")
def pipe():
    unet = tiny_ddim_unet(seed=1)
    return diffusers.DDIMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler(clip_sample=False))


def test_float32_floor_and_float64_below_it(pipe) -> None:
    anchors = np.random.default_rng(0).standard_normal((3, 192))
    point = np.array([[0.3, 0.4]])
    prof = {}
    for name in ("float32", "float64"):
        gen = Diffusers(copy.deepcopy(pipe), steps=5, dtype=name)  # own copy: _ready casts it
        plane = LatentPlane(gen, anchors=anchors)
        assert gen.compute_dtype == name == T.generator_dtype(plane)
        assert gen.generate(torch.zeros(1, 192)).dtype == getattr(torch, name)
        (prof[name],) = T.plane_lipschitz(plane.make_decoder(), point,
                                          dtype=T.generator_dtype(plane))
    f32, f64 = prof["float32"], prof["float64"]
    # float32: differences reach 100 eps32 |x| below delta = 1e-5 (measured floor at 1e-6)
    assert f32.dtype == "float32" and 1e-7 <= f32.floor_delta <= 1e-5
    assert not f32.usable[-1] and np.isnan(f32.lipschitz[~f32.usable]).all()
    # float64 has no floor down to 1e-7, and L has converged (smooth point: slope 0)
    assert f64.dtype == "float64" and math.isnan(f64.floor_delta) and f64.usable.all()
    assert f64.lipschitz[-1] == pytest.approx(f64.lipschitz[-3], rel=1e-4)
    assert abs(f64.slope) < 1e-3
    # where float32 is usable it agrees with float64 (measured within 7e-4)
    ok = f32.usable
    np.testing.assert_allclose(f32.lipschitz[ok], f64.lipschitz[ok], rtol=5e-3)


def test_default_compute_dtype_on_cpu(pipe) -> None:
    assert Diffusers(pipe, steps=2).compute_dtype == "float32"


@pytest.mark.parametrize("group", ["atlas", "path"])
def test_cli_offers_float64(group, capsys) -> None:
    from latentatlas.cli import main

    try:
        main([group, "diffusers", "--help"])
    except SystemExit as exc:
        assert not exc.code
    out = capsys.readouterr().out
    assert "float64" in out and "--dtype" in out
