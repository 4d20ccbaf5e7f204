"""la.save / la.load with the flows: exact round trips of weights and buffers, and safe refusal of
anything that is not a latentatlas model file."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

import latentatlas as la
from latentatlas.flows import IAF, MAF, NSF, ActNorm, LULinear, Permutation, RealNVP


def _perturb(module: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))


def test_actnorm_initialisation_survives_save_and_load(tmp_path):
    torch.manual_seed(0)
    layer = ActNorm(3)
    data = 4.0 + 2.5 * torch.randn(500, 3)
    z, _ = layer(data)  # data-dependent initialisation
    assert bool(layer.initialized)
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(0), torch.ones(3), atol=1e-5)
    path = la.save(layer, tmp_path / "actnorm.safetensors")
    loaded = la.load(path)
    assert isinstance(loaded, ActNorm) and bool(loaded.initialized)
    # A fresh batch with other statistics must NOT re-initialise the loaded layer.
    other = -3.0 + 0.1 * torch.randn(50, 3)
    z1, ld1 = layer(other)
    z2, ld2 = loaded(other)
    assert torch.equal(z1, z2) and torch.equal(ld1, ld2)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Permutation(5, "random", seed=11),
        lambda: Permutation(4, (2, 0, 3, 1)),
        lambda: LULinear(4, identity_init=False),
        lambda: LULinear(4, positive="exp"),
    ],
)
def test_layer_state_survives_save_and_load(tmp_path, make):
    torch.manual_seed(0)
    layer = make()
    _perturb(layer)
    loaded = la.load(la.save(layer, tmp_path / "layer.safetensors"))
    x = torch.randn(9, layer.features)
    for a, b in zip(layer(x), loaded(x)):
        assert torch.equal(a, b)
    for a, b in zip(layer.inverse(x), loaded.inverse(x)):
        assert torch.equal(a, b)


def test_random_permutation_is_seeded():
    assert torch.equal(Permutation(8, "random", seed=3).perm, Permutation(8, "random", seed=3).perm)
    assert not torch.equal(Permutation(8, "random", seed=3).perm, Permutation(8, "random", 4).perm)
    assert Permutation(3).perm.tolist() == [2, 1, 0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: RealNVP(2, transforms=3, hidden=(16,)),
        lambda: RealNVP(3, context=2, transforms=2, hidden=(8, 8), scale_bound=2.0),
        lambda: NSF(2, transforms=2, hidden=(16,), bins=4, bound=3.0),
        lambda: NSF(1, context=4, transforms=2),
        lambda: MAF(3, context=1, transforms=2, hidden=(16,)),
        lambda: MAF(2, transforms=2, univariate="spline", bins=6),
        lambda: IAF(2, context=2, transforms=2, hidden=(16,)),
    ],
)
def test_every_model_round_trips_with_identical_log_prob(tmp_path, make):
    torch.manual_seed(0)
    flow = make()
    _perturb(flow)
    loaded = la.load(la.save(flow, tmp_path / "flow.safetensors"))
    assert type(loaded) is type(flow)
    assert json.dumps(loaded.config) == json.dumps(flow.config)  # tuples come back as lists
    x = torch.randn(20, flow.features)
    c = torch.randn(20, flow.context_features) if flow.context_features else None
    with torch.no_grad():
        assert torch.equal(flow.log_prob(x, c), loaded.log_prob(x, c))
    for k, v in flow.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_load_refuses_corrupt_files(tmp_path):
    flow = RealNVP(2, transforms=2, hidden=(8,))
    path = la.save(flow, tmp_path / "flow.safetensors")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable latentatlas model file"):
        la.load(truncated)
    garbage = tmp_path / "random.safetensors"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match="not a readable latentatlas model file"):
        la.load(garbage)
    header_broken = tmp_path / "header.safetensors"
    header_broken.write_bytes(data[:8] + b"{" * 16 + data[24:])
    with pytest.raises(ValueError):
        la.load(header_broken)
    with pytest.raises(FileNotFoundError):
        la.load(tmp_path / "missing.safetensors")


def test_load_refuses_foreign_safetensors(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.randn(3, 3)}, str(foreign))
    with pytest.raises(ValueError, match="not a latentatlas model"):
        la.load(foreign)
    # Right format tag, but a class outside latentatlas: refused, nothing imported or built.
    sneaky = tmp_path / "sneaky.safetensors"
    save_file(
        {"weight": torch.randn(1)},
        str(sneaky),
        metadata={"format": "latentatlas-model/1", "class": "os.system", "config": '{"command": "true"}'},
    )
    with pytest.raises(ValueError, match="not a latentatlas model class"):
        la.load(sneaky)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # creating the marker file proves the code ran


def test_load_never_unpickles(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.safetensors"
    with open(evil, "wb") as fh:
        pickle.dump(_Payload(str(marker)), fh)
    # Sanity check of the payload itself: unpickling it would create the marker.
    assert not marker.exists()
    with pytest.raises(ValueError):
        la.load(evil)
    assert not marker.exists()
    # The same payload in a torch.save file (zip + pickle).
    evil_pt = tmp_path / "evil.pt"
    torch.save({"x": _Payload(str(marker))}, evil_pt)
    with pytest.raises(ValueError):
        la.load(evil_pt)
    assert not marker.exists()
