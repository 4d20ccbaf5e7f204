"""Device and dtype of the pipeline's networks (issue 14): options, checks and a float64 run.

No GPU here, so device handling is tested by its checks: an unavailable device is refused before
anything runs, and the placement assertion catches a tensor on another device (the ``meta``
device stands in for a GPU). The dtype path is exercised end to end: a float64 run keeps every
tensor of both networks in float64 and agrees with the float32 run up to training noise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import latentatlas as la
from latentatlas.atlas.config import RunConfig
from latentatlas.atlas.pipeline import execute
from latentatlas.atlas.placement import check_device, check_dtype, check_placement, place


def test_check_device_accepts_the_cpu_and_refuses_what_the_machine_lacks() -> None:
    assert check_device(None) == torch.device("cpu")
    assert check_device("cpu") == torch.device("cpu")
    assert check_device(torch.device("cpu")) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device: expected a device this machine has "
                                             r"\(cpu.*got 'cuda:1'"):
            check_device("cuda:1")
    with pytest.raises(ValueError, match="device: expected a torch device .* got 'gpu0'"):
        check_device("gpu0")


def test_check_dtype() -> None:
    assert check_dtype(None, "x") is None
    assert check_dtype("float64", "x") is torch.float64
    assert check_dtype(torch.float32, "x") is torch.float32
    with pytest.raises(ValueError, match=r"posterior_options\['dtype'\]: expected one of "
                                         r"\('float32', 'float64'\), got 'float16'"):
        check_dtype("float16", "posterior_options['dtype']")


def test_check_placement_names_the_misplaced_tensor() -> None:
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    check_placement(net, torch.device("cpu"), torch.float32, "stage x")
    check_placement(net, torch.device("cpu"), None, "stage x")
    with pytest.raises(RuntimeError, match=r"stage x: tensor '0.weight' is torch.float32, "
                                           r"expected the run's torch.float64"):
        check_placement(net, torch.device("cpu"), torch.float64, "stage x")
    net[1].to("meta")  # a tensor left on another device (a GPU run's bug, simulated)
    with pytest.raises(RuntimeError, match=r"stage x: tensor '1.weight' is on meta, expected "
                                           r"the run's device cpu"):
        check_placement(net, torch.device("cpu"), None, "stage x")
    moved = place(nn.Linear(2, 2), torch.device("cpu"), torch.float64)
    assert moved.weight.dtype is torch.float64
    assert place("not a module", torch.device("cpu"), torch.float64) == "not a module"


def _gaussian_run(dtype: str | None) -> tuple[object, object, object]:
    source = la.sources.GaussianFamily(coords="natural")
    post_opts: dict = {"fit": {"steps": 150}}
    pot_opts: dict = {"steps": 200}
    if dtype is not None:
        post_opts["dtype"] = dtype
        pot_opts["dtype"] = dtype
    config = RunConfig.make(source, resolution=10, samples_per_point=256, bundle=8,
                            posterior_repeats=4, seed=0, analyses={},
                            posterior_options=post_opts, potential_options=pot_opts)
    ctx = execute(source, config, progress=False, report=False, device="cpu")
    model, _ = ctx.result("posterior")
    return model, ctx.result("potential"), ctx.result("atlas")


@pytest.fixture(scope="module")
def runs() -> dict:
    torch.manual_seed(0)
    return {"float32": _gaussian_run(None), "float64": _gaussian_run("float64")}


def test_float64_run_keeps_every_network_tensor_in_float64(runs) -> None:
    model, pot, atlas = runs["float64"]
    for net in (model, pot):
        floats = [t for t in [*net.parameters(), *net.buffers()] if t.is_floating_point()]
        assert floats and all(t.dtype is torch.float64 for t in floats)
    assert np.all(np.isfinite(atlas.metric))
    model32, pot32, _ = runs["float32"]
    assert next(model32.parameters()).dtype is torch.float32
    assert next(pot32.parameters()).dtype is torch.float32


def test_float64_and_float32_runs_agree_up_to_training_noise(runs) -> None:
    # same data, same initial weights (built in float32, then cast), same minibatches: the
    # atlases differ only by float32 rounding (eps 1.2e-7) carried through 150 + 200 training
    # steps; measured relative Frobenius difference of the metric: median 3.5e-7, max 1.5e-6.
    # Bounds 1e-5 / 1e-4: a tensor left in float32, or the fits taking different paths, would
    # show as a difference of order the training noise (1e-2), far above them
    g32, g64 = runs["float32"][2].metric, runs["float64"][2].metric
    diff = np.linalg.norm(g64 - g32, axis=(-1, -2)) / np.linalg.norm(g32, axis=(-1, -2))
    assert float(np.median(diff)) < 1e-5
    assert float(diff.max()) < 1e-4
