"""la.generators.Diffusers on a tiny, randomly initialised Stable-Diffusion-style pipeline.

Everything is built from configs, offline: a UNet2DConditionModel (latents 4 x 4 x 4), an
AutoencoderKL with one downsampling (images 3 x 8 x 8), a 2-layer CLIPTextModel, a DDIMScheduler
with SD 1.5's beta schedule, and a CLIPTokenizer built from a 56-token vocab/merges pair written by
the test. The independent reference is diffusers' own StableDiffusionPipeline called with the same
initial latents.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from tests._fixtures import tiny_ddim_unet  # noqa: E402

from latentatlas.generators import Diffusers  # noqa: E402
from latentatlas.sources import LatentPlane  # noqa: E402

STEPS = 5
PROMPT = "a cat"


def _tokenizer(tmp):
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": 26 + i for i, c in enumerate(letters)})
    vocab.update({"ca": 52, "cat</w>": 53, "<|startoftext|>": 54, "<|endoftext|>": 55})
    (tmp / "vocab.json").write_text(json.dumps(vocab))
    (tmp / "merges.txt").write_text("#version: 0.2\nc a\nca t</w>\n")
    return transformers.CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"),
                                      model_max_length=8)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tok")
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=4, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=16,
        attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        layers_per_block=1, norm_num_groups=4, sample_size=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=56, hidden_size=16, intermediate_size=32, num_attention_heads=2,
        num_hidden_layers=2, max_position_embeddings=8, bos_token_id=54, eos_token_id=55,
        pad_token_id=55, projection_dim=16,
    ))
    scheduler = diffusers.DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )
    return diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=_tokenizer(tmp), unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


@pytest.fixture(scope="module")
def gen(pipe):
    return Diffusers(pipe, prompt=PROMPT, steps=STEPS, guidance=5.0, batch_size=3)


def _latents(n, seed=0):
    return torch.as_tensor(np.random.default_rng(seed).standard_normal((n, 64)), dtype=torch.float32)


def test_shapes_and_matches_the_diffusers_pipeline(pipe, gen):
    assert gen.latent_dim == 64 and gen.latent_shape == (4, 4, 4)
    assert gen.sample_shape == (3, 8, 8)
    z = _latents(4)
    x = gen.generate(z)
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # not saturated: the comparison below is not trivially 0 == 0 or 1 == 1
    assert float(((x > 0.01) & (x < 0.99)).float().mean()) > 0.5
    # independent reference: diffusers' own SD pipeline (DDIM + CFG + VAE) on the same latents.
    # Same float32 operations in the same order up to batching (3 + 1 vs 4): agreement to 1e-5
    # (float32 eps 1.2e-7 times a few hundred ops of O(1) values).
    ref = pipe([PROMPT] * 4, latents=z.reshape(4, 4, 4, 4), num_inference_steps=STEPS,
               guidance_scale=5.0, eta=0.0, height=8, width=8, output_type="pt").images
    torch.testing.assert_close(x, ref.float(), atol=1e-5, rtol=0)
    # guidance matters (the prompt is used): guidance 1 gives other images
    plain = Diffusers(pipe, prompt=PROMPT, steps=STEPS, guidance=1.0).generate(z)
    assert float((plain - x).abs().max()) > 1e-3


def test_deterministic_at_eta0_and_batch_independent(gen):
    z = _latents(5, seed=1)
    a, b = gen.generate(z), gen.generate(z)
    assert torch.equal(a, b)  # eta = 0: no noise at all, bit-identical reruns
    # a sample does not depend on its batch (batch_size 3 splits 5 as 3 + 2; here 2 alone)
    torch.testing.assert_close(gen.generate(z[3:]), a[3:], atol=1e-5, rtol=0)


def test_eta_uses_per_sample_seeds(gen):
    z = _latents(4, seed=2)
    seeds = np.array([11, 12, 13, 14])
    a = gen.generate(z, eta=1.0, seeds=seeds)
    torch.testing.assert_close(gen.generate(z, eta=1.0, seeds=seeds), a, atol=0, rtol=0)
    # sample 2 alone with its seed = sample 2 in the batch (noise is per sample, not per batch)
    torch.testing.assert_close(gen.generate(z[2:3], eta=1.0, seeds=seeds[2:3]), a[2:3],
                               atol=1e-5, rtol=0)
    other = gen.generate(z, eta=1.0, seeds=seeds + 100)
    assert float((other - a).abs().amax(dim=(1, 2, 3)).min()) > 1e-3
    assert float((gen.generate(z) - a).abs().max()) > 1e-3  # eta > 0 is not the eta = 0 image
    with pytest.raises(ValueError, match="seeds"):
        gen.generate(z, eta=0.5)


def test_plane_corners_reproduce_the_anchors(gen):
    anchors = _latents(3, seed=3).double()
    plane = LatentPlane(gen, anchors=anchors, renormalize=False, bounds=((0, 1), (0, 1)))
    assert plane.sample_shape == (3, 8, 8)
    corners = plane.decode(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    direct = gen.generate(anchors.float())
    # z0 + 1 (z1 - z0) equals z1 up to one float64 ulp, invisible after the cast to float32
    torch.testing.assert_close(corners, direct, atol=1e-5, rtol=0)
    assert float((direct[0] - direct[1]).abs().max()) > 1e-2  # the anchors' images differ
    # stochastic plane: samples are (P, n, 3, 8, 8), reproducible from the run seed
    noisy = LatentPlane(gen, anchors=anchors, renormalize=False, eta=0.5)
    s = noisy.sample(np.array([[0.5, 0.5]]), 2, seed=4)
    assert s.shape == (1, 2, 3, 8, 8)
    np.testing.assert_array_equal(s, noisy.sample(np.array([[0.5, 0.5]]), 2, seed=4))


def test_from_folder_save_load_and_errors(pipe, gen, tmp_path):
    import latentatlas as la

    folder = tmp_path / "tiny-sd"
    pipe.save_pretrained(folder)
    g = Diffusers(folder, prompt=PROMPT, steps=STEPS, guidance=5.0, dtype="float32",
                  device="cpu")
    z = _latents(2, seed=5)
    torch.testing.assert_close(g.generate(z), gen.generate(z), atol=1e-5, rtol=0)
    # a plane on a folder-backed generator saves as config only and rebuilds the same images
    plane = LatentPlane(g, anchors=_latents(3, seed=6), renormalize=False)
    la.save(plane, tmp_path / "plane.safetensors")
    again = la.load(tmp_path / "plane.safetensors")
    t = np.array([[0.25, 0.5]])
    torch.testing.assert_close(again.decode(t), plane.decode(t), atol=1e-5, rtol=0)
    # pickling (Ray ships generators to workers) drops the loaded weights of a folder generator
    import pickle

    clone = pickle.loads(pickle.dumps(g))
    assert clone._pipe is None
    torch.testing.assert_close(clone.generate(z), g.generate(z), atol=1e-5, rtol=0)

    with pytest.raises(FileNotFoundError, match="model_index.json.*never downloads"):
        Diffusers(tmp_path / "nowhere", prompt=PROMPT)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text((folder / "model_index.json").read_text())
    (broken / "unet").mkdir()
    (broken / "unet" / "config.json").write_text((folder / "unet" / "config.json").read_text())
    (broken / "vae").mkdir()
    (broken / "vae" / "config.json").write_text((folder / "vae" / "config.json").read_text())
    bad = Diffusers(broken, prompt=PROMPT, steps=2)
    with pytest.raises(ValueError, match="cannot load the diffusers pipeline") as info:
        bad.generate(z)
    assert "\n" not in str(info.value)


def test_bad_arguments_and_missing_package(pipe, monkeypatch):
    with pytest.raises(ValueError, match="z: expected latents of shape \\(B, 64\\)"):
        Diffusers(pipe, prompt=PROMPT, steps=2).generate(torch.zeros(2, 63))
    with pytest.raises(ValueError, match="steps"):
        Diffusers(pipe, prompt=PROMPT, steps=0)
    with pytest.raises(ValueError, match="height: expected a positive multiple of 2"):
        Diffusers(pipe, prompt=PROMPT, height=7)
    with pytest.raises(ValueError, match="dtype"):
        Diffusers(pipe, prompt=PROMPT, dtype="int8")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "diffusers" else real(name, *a))
    with pytest.raises(ImportError, match="pip install 'latentatlas\\[diffusers\\]'"):
        Diffusers("some/folder", prompt=PROMPT)


def test_unconditional_pixel_space_pipeline():
    """A UNet2DModel + DDIM pipeline (no VAE, no text encoder) vs diffusers' DDIMPipeline."""
    unet = tiny_ddim_unet(seed=1)
    scheduler = diffusers.DDIMScheduler(clip_sample=False)
    pipe = diffusers.DDIMPipeline(unet=unet, scheduler=scheduler)
    g = Diffusers(pipe, steps=STEPS)
    assert g.latent_dim == 3 * 8 * 8 and g.sample_shape == (3, 8, 8)
    z = torch.as_tensor(np.random.default_rng(7).standard_normal((2, 192)), dtype=torch.float32)
    x = g.generate(z)
    # DDIMPipeline draws its own initial noise from a generator: replay that draw as our latents
    gen = torch.Generator().manual_seed(3)
    ref = pipe(batch_size=2, generator=gen, num_inference_steps=STEPS, eta=0.0,
               output_type="np").images
    z_ref = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(3))
    ours = g.generate(z_ref.reshape(2, -1)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert x.shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="no text encoder"):
        Diffusers(pipe, prompt="a cat")


@pytest.mark.slow
def test_cli_atlas_diffusers(pipe, tmp_path, capsys):
    import latentatlas.cli.diffusers_cmd  # noqa: F401  (registers `atlas diffusers`)
    import latentatlas.cli.latent_cmd  # noqa: F401  (our own module: an import error must fail)
    from latentatlas.cli import main

    def run(args):
        try:
            main(args)
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0

    folder = tmp_path / "tiny-sd"
    pipe.save_pretrained(folder)
    out = tmp_path / "run"
    code = run(["atlas", "diffusers", "--model", str(folder), "--prompt", PROMPT,
                "--ddim-steps", "2", "--resolution", "6",
                "--eta-compare", "0", "--zoom-points", "1", "--zoom-resolution", "0",
                "--path-points", "0",
                "--potential-steps", "3", "--quiet", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = np.load(out / "atlas.npz")
    assert data["metric"].shape == (6, 6, 2, 2) and np.isfinite(data["metric"]).all()
    assert np.load(out / "images.npy").shape == (6, 6, 3, 8, 8)
    # missing weights: one line on stderr, exit code 2, says where to put them
    code = run(["atlas", "diffusers", "--model", str(tmp_path / "nowhere"), "--prompt", "x",
                "--out", str(tmp_path / "r2")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "model_index.json" in err and "never downloads" in err
