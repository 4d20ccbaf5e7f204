"""Flows as files and across processes: float64 models survive ``la.save``/``la.load`` bit-exactly,
and every flow (continuous ones included) pickles, so ``torch.save(model)`` and spawn-based
multiprocessing work."""

from __future__ import annotations

import io
import multiprocessing as mp

import pytest
import torch

import latentatlas as la
from latentatlas.flows import CNF, MAF, NSF, FlowMatching, RealNVP


def _perturbed(model: torch.nn.Module, seed: int = 3) -> torch.nn.Module:
    """Random (non-identity) weights, so that a rounding to float32 would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


FLOAT64_MODELS = {
    "RealNVP": lambda: RealNVP(2, context=1, transforms=2, hidden=(8,)),
    "NSF": lambda: NSF(2, transforms=2, hidden=(8,)),
    "MAF": lambda: MAF(2, transforms=2, hidden=(8,)),
    "CNF": lambda: CNF(2, hidden=(8,)),
}


@pytest.mark.parametrize("name", sorted(FLOAT64_MODELS))
def test_float64_save_load_keeps_dtype_and_values_bit_exactly(name, tmp_path):
    torch.manual_seed(0)
    model = _perturbed(FLOAT64_MODELS[name]().double()).eval()
    x = torch.randn(7, 2, dtype=torch.float64)
    c = torch.randn(7, 1, dtype=torch.float64) if model.context_features else None
    loaded = la.load(la.save(model, tmp_path / "m.safetensors")).eval()
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert after[key].dtype == before[key].dtype, key
        assert torch.equal(after[key], before[key]), key  # bit-exact: no float32 rounding
    with torch.no_grad():
        # the reloaded model accepts float64 input and computes the very same numbers
        assert torch.equal(loaded.log_prob(x, c), model.log_prob(x, c))
        torch.manual_seed(1)
        s1 = model.sample(3, c[:1] if c is not None else None)
        torch.manual_seed(1)
        s2 = loaded.sample(3, c[:1] if c is not None else None)
    assert s2.dtype == torch.float64 and torch.equal(s1, s2)


def _continuous(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "CNF":
        model = CNF(2, context=1, hidden=(16, 16), activation="tanh")
    else:
        model = FlowMatching(2, context=1, hidden=(16, 16))  # silu field
    return _perturbed(model).eval()


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(6, 2, generator=g), torch.randn(6, 1, generator=g)


@pytest.mark.parametrize("name", ["CNF", "FlowMatching"])
def test_torch_save_of_continuous_flows_round_trips(name):
    model = _continuous(name)
    x, c = _inputs()
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert type(loaded) is type(model)
    with torch.no_grad():
        assert torch.equal(loaded.log_prob(x, c), model.log_prob(x, c))


def _child_log_prob(model: torch.nn.Module, x: torch.Tensor, c: torch.Tensor, queue) -> None:
    torch.set_num_threads(1)
    with torch.no_grad():
        queue.put(model.log_prob(x, c).tolist())  # plain floats: no shared-memory handles


@pytest.mark.slow
def test_continuous_flows_work_in_spawned_processes():
    ctx = mp.get_context("spawn")
    x, c = _inputs()
    for name in ("CNF", "FlowMatching"):
        model = _continuous(name)
        with torch.no_grad():
            expected = model.log_prob(x, c)
        queue = ctx.Queue()
        proc = ctx.Process(target=_child_log_prob, args=(model, x, c, queue))
        proc.start()
        got = queue.get(timeout=120)
        proc.join(timeout=60)
        assert proc.exitcode == 0, name
        assert torch.equal(torch.tensor(got, dtype=expected.dtype), expected), name
