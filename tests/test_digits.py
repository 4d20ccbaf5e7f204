"""The embedded digits generator: reduced-budget training gives recognisable digits; samplers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import latentatlas as la


def test_generate_shapes_determinism_and_errors() -> None:
    torch.manual_seed(0)
    gen = la.generators.Digits(hidden=(32, 32), steps=4)
    z = torch.randn(5, 64, dtype=torch.float64)
    x = gen.generate(z)
    assert x.shape == (5, 8, 8) and x.dtype == torch.float64
    assert torch.equal(x, gen.generate(z))  # eta = 0: deterministic
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    seeds = np.arange(5)
    a, b = gen.generate(z, eta=0.5, seeds=seeds), gen.generate(z, eta=0.5, seeds=seeds)
    assert torch.equal(a, b) and not torch.equal(a, x)  # same seeds, same noise
    # per-sample noise: sample 0 does not depend on the rest of the batch (up to the rounding of
    # batched float64 matmuls)
    assert torch.allclose(gen.generate(z[:1], eta=0.5, seeds=seeds[:1])[0], a[0], atol=1e-12)
    with pytest.raises(ValueError, match="seeds"):
        gen.generate(z, eta=0.5)
    with pytest.raises(ValueError, match="z"):
        gen.generate(torch.zeros(3, 10))
    with pytest.raises(ValueError, match="steps"):
        la.generators.Digits(steps=0)


@pytest.mark.slow
def test_reduced_budget_training_gives_recognisable_digits(digits_generator,
                                                          digits_classifier) -> None:
    # Digits.train_new(steps=1500) and Classifier.pretrained(), trained once per test run and
    # shared with the other tests that need them (tests/conftest.py)
    gen, clf = digits_generator, digits_classifier
    conf, _ = clf.proba(gen.sample(500, seed=1)).max(-1)
    frac = float((conf > 0.9).float().mean())
    print("recognised with confidence > 0.9:", frac)
    # The full recipe (12000 steps) measured 92.4 % on 1000 samples (real test digits: 96.9 %);
    # 1500 steps measured 78.8 % (500 samples, 32 s of one core). Threshold: 0.55, far above
    # untrained noise (~0) and below the measured value by more than 10 binomial standard errors
    # (10 sqrt(.25/500) = 22.4 %).
    assert frac > 0.55
