"""``latentatlas atlas custom`` end to end on a tiny synthetic generator; bad inputs -> exit 2."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from tests._fixtures import module_fixture, run

GEN = textwrap.dedent('''
    import numpy as np
    import torch

    W = torch.tensor(np.random.default_rng(0).standard_normal((4, 16)))

    def decoder(z, eta=0.0, seeds=None):
        """A 'VAE decoder' with a 4-dim latent: a 4x4 image, with a jump where z.W[:, 0] > 0."""
        z = torch.as_tensor(z, dtype=torch.float64)
        h = z @ W
        x = torch.sigmoid(h) + (h[:, :1] > 0).to(h.dtype)
        if eta > 0:
            noise = np.stack([np.random.default_rng(int(s)).standard_normal(16) for s in seeds])
            x = x + 0.05 * eta * torch.as_tensor(noise)
        return x.reshape(-1, 4, 4) / 2

    def labeler(x):
        return (torch.as_tensor(x).reshape(len(x), -1).mean(1) > 0.5).long()
''')

FAST = ["--resolution", "10", "--eta-resolution", "6",
        "--zoom-points", "1", "--zoom-resolution", "8", "--path-points", "6",
        "--path-samples", "2", "--potential-steps", "2", "--quiet"]


genmod = module_fixture("tinygen_cli", GEN)


def test_custom_end_to_end(tmp_path, genmod, capsys) -> None:
    lat = np.random.default_rng(1).standard_normal((20, 4))
    np.save(tmp_path / "lat.npy", lat)
    out = tmp_path / "run"
    code = run(["atlas", "custom", "--generator", f"{genmod}:decoder", "--latents",
                str(tmp_path / "lat.npy"), "--anchors", "0", "5", "7",
                "--labeler", f"{genmod}:labeler", "--out", str(out), *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    with np.load(out / "atlas.npz", allow_pickle=False) as data:
        assert data["labels"].shape == (10, 10) and data["metric"].shape == (10, 10, 2, 2)
        assert np.isfinite(data["metric"]).all()
    cfg = json.loads((out / "config.json").read_text())
    # the anchors recorded (in source.safetensors, referenced by config.json) are rows 0, 5, 7
    from latentatlas.atlas import source_from_config

    assert cfg["source"]["config"]["generator"] == f"{genmod}:decoder"
    with pytest.raises(ValueError, match="user code"):
        source_from_config(cfg, out)
    plane = source_from_config(cfg, out, trust_generator=True)
    assert np.allclose(plane.anchors.numpy(), lat[[0, 5, 7]])
    scalars = json.loads((out / "planes.json").read_text())
    for key in ("phase_agreement", "interpolation", "zoom", "lipschitz", "path", "eta"):
        assert key in scalars
    assert len(scalars["path"]) and (out / "report" / "images.html").is_file()
    assert "images/second" in captured.out


def test_load_latents_npy_and_pt_agree(tmp_path) -> None:
    from latentatlas.cli.latent_cmd import _pick, load_latents

    lat = np.random.default_rng(1).standard_normal((20, 2, 2))
    np.save(tmp_path / "lat.npy", lat)
    torch.save(torch.as_tensor(lat), tmp_path / "lat.pt")
    a, b = load_latents(tmp_path / "lat.npy"), load_latents(tmp_path / "lat.pt")
    assert a.shape == (20, 4) and np.array_equal(a, b)
    # --seed picks 3 distinct rows reproducibly; --anchors picks the rows asked for
    assert np.array_equal(_pick(a, None, 3), _pick(a, None, 3))
    assert len({tuple(r) for r in _pick(a, None, 3)}) == 3
    assert np.array_equal(_pick(a, (1, 2, 3), 0), a[[1, 2, 3]])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--generator", "no_colon_here"], "generator"),
        (["--generator", "tinygen_cli:missing"], "no attribute"),
        (["--generator", "tinygen_cli:decoder", "--latents", "nope.npy"], "--latents"),
        (["--generator", "tinygen_cli:decoder", "--latents", "LAT", "--anchors", "0", "1", "99"],
         "--anchors"),
        (["--generator", "tinygen_cli:decoder", "--latents", "LAT", "--resolution", "2"],
         "--resolution"),
        (["--generator", "tinygen_cli:decoder", "--latents", "BAD"], "--latents"),
        (["--generator", "tinygen_cli:decoder", "--latents", "LAT", "--features", "what"],
         "features"),
        (["--generator", "tinygen_cli:decoder"], "--latent-dim"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(tmp_path, genmod, capsys, extra, message) -> None:
    np.save(tmp_path / "lat.npy", np.zeros((5, 4)))
    torch.save({"not": "a tensor"}, tmp_path / "bad.pt")
    extra = [str(tmp_path / "lat.npy") if a == "LAT" else str(tmp_path / "bad.pt") if a == "BAD"
             else a for a in extra]
    code = run(["atlas", "custom", *extra, "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err
