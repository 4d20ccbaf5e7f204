"""Lipschitz profiles against exact answers: ``|t - t0|**a`` (local slope a - 1 at every step), a
profile that bends (the slope at the smallest steps, not one fit), and precision floors of float32
and float64 generators (reported, never turned into a slope)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latentatlas.geometry.lipschitz import lipschitz_profile

C = np.array([0.3, -0.2])
DELTAS = 10.0 ** -np.arange(1, 8)


@pytest.mark.parametrize("a", [0.25, 0.5, 1.0, 1.5])
def test_power_law_has_local_slope_a_minus_one(a: float) -> None:
    # x(t) = |t - c|**a: every direction moves x by exactly delta**a, so L = delta**(a - 1)
    prof = lipschitz_profile(lambda p: np.linalg.norm(p - C, axis=1)[:, None] ** a, C)
    assert prof.usable.all() and math.isnan(prof.floor_delta)
    np.testing.assert_allclose(prof.lipschitz, DELTAS ** (a - 1), rtol=1e-9)
    np.testing.assert_allclose(prof.local_slopes, a - 1, atol=1e-9)
    assert prof.slope == pytest.approx(a - 1, abs=1e-9)


def test_jump_has_slope_minus_one() -> None:
    prof = lipschitz_profile(lambda p: (p[:, :1] > C[0]).astype(np.float64), C)
    np.testing.assert_allclose(prof.lipschitz, 1 / DELTAS, rtol=1e-12)
    assert prof.slope == pytest.approx(-1.0, abs=1e-12)


def test_the_slope_is_local_at_the_smallest_steps() -> None:
    # x = s + 1e-3 |s|**0.5 with s = t_0 - c_0: L(delta) = 1 + 1e-3 delta**-0.5 (u = e_0), flat at
    # large steps and bending towards -1/2 at small ones; one fit over seven decades hides it
    prof = lipschitz_profile(
        lambda p: ((p[:, 0] - C[0]) + 1e-3 * np.abs(p[:, 0] - C[0]) ** 0.5)[:, None], C)
    exact = 1 + 1e-3 * DELTAS**-0.5
    np.testing.assert_allclose(prof.lipschitz, exact, rtol=1e-9)
    local = np.diff(np.log(exact)) / np.diff(np.log(DELTAS))
    np.testing.assert_allclose(prof.local_slopes, local, atol=1e-9)
    tail = np.polyfit(np.log(DELTAS[-3:]), np.log(exact[-3:]), 1)[0]
    assert prof.slope == pytest.approx(tail, abs=1e-9)  # -0.250 over 1e-5 .. 1e-7
    fit = np.polyfit(np.log(DELTAS), np.log(exact), 1)[0]
    assert prof.fit_slope == pytest.approx(fit, abs=1e-9)  # -0.091 over seven decades
    assert prof.slope < -0.2 and prof.fit_slope > -0.1


def test_float32_generator_reports_its_floor_not_a_fake_slope() -> None:
    # sin(3 t) computed in float32: max_u |J u| = 3 max(|cos 2.1|, |cos 0.6|) = 2.476; the
    # rounding level 100 eps32 |x| = 1.2e-5 is reached below delta = 5e-6
    point = np.array([0.7, 0.2])
    f32 = lipschitz_profile(lambda p: np.sin(3 * p.astype(np.float32)), point)
    exact = 3 * max(abs(math.cos(2.1)), abs(math.cos(0.6)))
    assert f32.dtype == "float32"
    assert f32.floor_delta == pytest.approx(1e-6)
    assert f32.usable.tolist() == [True] * 5 + [False] * 2
    assert np.isnan(f32.lipschitz[5:]).all()
    assert f32.lipschitz[4] == pytest.approx(exact, rel=1e-2)
    assert abs(f32.slope) < 0.01  # smooth: 0 (measured 1e-4), not the fake -1 of rounding noise
    # the same function in float64 has no floor down to 1e-7 and converges to the exact L
    f64 = lipschitz_profile(lambda p: np.sin(3 * p), point)
    assert math.isnan(f64.floor_delta) and f64.dtype == "float64"
    assert f64.lipschitz[-1] == pytest.approx(exact, rel=1e-6)
    # float32 compute with float64 output (a generator that casts its result): only the given
    # dtype can tell; the inputs are quantised to float32 ulps (6e-8 at 0.7)
    cast = lambda p: np.sin(3 * p.astype(np.float32)).astype(np.float64)  # noqa: E731
    told = lipschitz_profile(cast, point, dtype=torch.float32)
    assert told.floor_delta == pytest.approx(1e-6) and abs(told.slope) < 0.01


def test_float32_floor_scales_with_the_output_norm() -> None:
    # 10 + sin(3 t) in float32: ulp(10) = 9.5e-7, so below delta ~ 1e-6 the differences are 0 or
    # one ulp and L reads 3.0 at 1e-6 and 13.5 at 1e-7 (a fake local slope of -0.37 over the 3
    # smallest steps); the rounding level 100 eps32 * 10 = 1.2e-4 puts the floor at 1e-5
    point = np.array([0.7, 0.2])
    prof = lipschitz_profile(lambda p: 10 + np.sin(3 * p.astype(np.float32)), point)
    assert prof.floor_delta == pytest.approx(1e-5) and prof.usable.sum() == 4
    assert abs(prof.slope) < 0.01
    assert prof.rounding == pytest.approx(100 * np.finfo(np.float32).eps
                                          * np.linalg.norm(10 + np.sin(3 * point.astype(np.float32))),
                                          rel=1e-6)


def test_float64_has_a_floor_too_and_constant_output_is_all_floor() -> None:
    # 1 + |t - c|**2: differences delta**2 against the rounding level 100 eps64 = 2.2e-14 of
    # |x| = 1: delta = 1e-7 (1e-14) is at the floor, 1e-6 (1e-12) is not
    prof = lipschitz_profile(lambda p: 1 + np.linalg.norm(p - C, axis=1)[:, None] ** 2, C)
    assert prof.floor_delta == pytest.approx(1e-7) and prof.usable.sum() == 6
    assert prof.slope == pytest.approx(1.0, abs=1e-3)
    flat = lipschitz_profile(lambda p: np.ones((len(p), 3)), C)
    assert flat.floor_delta == pytest.approx(0.1) and not flat.usable.any()
    assert math.isnan(flat.slope) and not flat.measurable


def test_errors() -> None:
    f = lambda p: p  # noqa: E731
    with pytest.raises(ValueError, match="deltas"):
        lipschitz_profile(f, C, deltas=np.array([1e-3, 1e-2]))
    with pytest.raises(ValueError, match="dtype"):
        lipschitz_profile(f, C, dtype="int8")
    with pytest.raises(ValueError, match="tail"):
        lipschitz_profile(f, C, tail=1)
    with pytest.raises(ValueError, match="floor_factor"):
        lipschitz_profile(f, C, floor_factor=0.5)
