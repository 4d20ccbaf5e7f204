"""Path analysis: a synthetic jump of the posterior mean is flagged at the right step, and only there."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentatlas.geometry.paths import flag_jumps, path_analysis


def make_mean_fn(jump_at: float | None, noise: float = 0.01):
    """Posterior mean = t + noise (a consistent estimator), shifted by 0.5 past x = jump_at."""

    def fn(points: np.ndarray, samples: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        # the noise of a mean over S samples shrinks like 1 / sqrt(S)
        u = points + rng.normal(0.0, noise / np.sqrt(samples / 16), points.shape)
        if jump_at is not None:
            u[points[:, 0] > jump_at, 1] += 0.5
        return u

    return fn


def test_jump_is_flagged_at_the_right_index() -> None:
    res = path_analysis(make_mean_fn(0.37), (0.0, 0.0), (1.0, 1.0), points=50, samples=16, seed=3)
    pos = np.linspace(0, 1, 50)
    expected = int(np.flatnonzero(pos > 0.37)[0]) - 1  # the step from the last point before
    assert res.jumps.tolist() == [expected]
    assert res.jump_positions[0] == pytest.approx(0.5 * (pos[expected] + pos[expected + 1]))
    assert res.means.shape == (50, 2) and res.distances.shape == (49,)
    assert res.expected_step == pytest.approx(np.sqrt(2) / 49)


@pytest.mark.parametrize("seed", range(5))
def test_no_jump_on_a_smooth_path(seed: int) -> None:
    res = path_analysis(make_mean_fn(None), (0.0, 0.0), (1.0, 1.0), points=50, samples=16, seed=seed)
    assert res.jumps.size == 0
    assert res.threshold > np.median(res.distances)


def test_callable_without_keywords_and_torch_output() -> None:
    calls = []

    def fn(points):
        calls.append(points.shape)
        u = torch.as_tensor(points).clone()
        u[points[:, 1] > 0.5, 0] -= 1.0
        return u

    res = path_analysis(fn, (0.0, 0.0), (0.0, 2.0), points=21)
    assert calls == [(21, 2)]
    assert res.jumps.tolist() == [5]  # y = 0.5 is point 5; y = 0.6 is point 6
    with pytest.raises(ValueError, match="posterior_mean_fn"):
        path_analysis(lambda p: p[:-1], (0.0, 0.0), (1.0, 1.0), points=10)
    with pytest.raises(ValueError, match="points"):
        path_analysis(fn, (0.0, 0.0), (1.0, 1.0), points=2)


def test_flag_jumps_rule() -> None:
    d = np.array([1.0, 1.1, 0.9, 1.0, 5.0, 1.05, 0.95])
    idx, thr = flag_jumps(d, c=6.0)
    # median 1.0, MAD 0.05 -> 1.4826 * 0.05 = 0.074 < floor 0.1: threshold 1 + 6 * 0.1
    assert idx.tolist() == [4]
    assert thr == pytest.approx(1.6)
    with pytest.raises(ValueError, match="distances"):
        flag_jumps(np.array([1.0, np.nan]))
