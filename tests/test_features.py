"""Feature embeddings: the digits classifier, pixels, a tiny CLIP built from a config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import latentatlas as la
from latentatlas.features import CLIP, Classifier, Pixels, digits_dataset


@pytest.fixture(scope="module")
def classifier(digits_classifier: Classifier, shared_cache):
    """``Classifier.pretrained()`` trained once per test run (tests/conftest.py), with
    ``$LATENTATLAS_CACHE`` pointing at the cache that holds it while this module runs."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LATENTATLAS_CACHE", str(shared_cache))
    yield digits_classifier
    mp.undo()


def test_classifier_accuracy_and_embedding(classifier: Classifier, tmp_path) -> None:
    x, y = digits_dataset("test")
    assert len(x) == 360 and x.min() >= 0 and x.max() <= 1
    acc = classifier.accuracy(x, y)
    assert acc >= 0.97, acc  # the bar: >= 97 % held-out accuracy
    emb = classifier(torch.from_numpy(x[:5]))
    assert emb.shape == (5, 128)
    same = Classifier.pretrained(progress=False)  # second call: the cached model
    torch.testing.assert_close(same(torch.from_numpy(x[:5])), emb)
    la.save(classifier, tmp_path / "c.safetensors")
    back = la.load(tmp_path / "c.safetensors")
    torch.testing.assert_close(back.logits(torch.from_numpy(x)), classifier.logits(torch.from_numpy(x)))
    flat = classifier.proba(torch.from_numpy(x[:3].reshape(3, 64)))
    torch.testing.assert_close(flat.sum(-1), torch.ones(3))
    with pytest.raises(ValueError, match="x: expected digit images"):
        classifier(torch.zeros(2, 7, 7))


def test_pixels() -> None:
    x = np.arange(24, dtype=np.int8).reshape(2, 3, 4)
    out = Pixels(scale=2.0)(torch.from_numpy(x))
    assert out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), 2.0 * x.reshape(2, 12))
    with pytest.raises(ValueError, match="scale"):
        Pixels(scale=0)


def test_tiny_clip_from_config(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                         num_hidden_layers=2, vocab_size=99, max_position_embeddings=32,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                           num_hidden_layers=2, image_size=16, patch_size=4),
        projection_dim=16,
    )
    torch.manual_seed(0)
    transformers.CLIPModel(cfg).save_pretrained(tmp_path / "clip")
    clip = CLIP(tmp_path / "clip")
    images = torch.rand(5, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = clip(images)
    assert emb.shape == (5, 16)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(clip(images), emb)  # deterministic
    rgb = images[:, None].expand(-1, 3, -1, -1)
    torch.testing.assert_close(clip(rgb), emb)  # grey == replicated RGB
    with pytest.raises(ValueError, match="never downloads"):
        CLIP(tmp_path / "missing")
