"""End-to-end atlases against exact Fisher metrics, every source x coordinates x estimator.

One in-memory atlas per case at the small CI setting of ``benchmarks/estimator_table.py`` (the
script that prints the same table; seeded, so a rerun gives the same numbers), each built once and
shared by its checks. References: the transfer matrix (Ising L = 4), the master equation (TASEP
L = 6), closed forms (Gaussian family). Targets (issue 15): interior median ratio metric / exact of
each diagonal component within [0.9, 1.1], and normalized RMSE <= 0.10 for every component (in
absolute units, no rescaling). A case that misses is kept as an xfail that names the measured
numbers (never a looser bound); the measured table is in the README.

``g01`` of the Gaussian family in (mu, sigma) is 0 exactly, so its RMSE is normalised by the mean
range of the two diagonal components instead of its own (zero) range.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from benchmarks.estimator_table import run_case

RATIO = (0.9, 1.1)
NRMSE = 0.10

# measured at the CI setting, seed 0 (benchmarks/estimator_table.py --setting ci); a case listed
# here misses a target and runs as a non-strict xfail that records the numbers
MEASURED_MISSES: dict[tuple[str, str], str] = {
    ("gaussian-natural", "grid"): "measured ratio00 1.091, g00 0.163, g11 0.102 (exact posteriors: "
                                  "g00 0.101, g11 0.107: below this setting's floor)",
    ("gaussian-natural", "flow"): "measured ratio00 0.747, ratio11 0.747, g00 0.195, g11 0.129",
    ("gaussian-natural", "kernel"): "measured ratio00 1.125, ratio11 1.137, g00 0.151, g11 0.112",
    ("gaussian-mean_std", "grid"): "measured ratio00 0.775, ratio11 0.827, g00 0.199, g11 0.181 "
                                   "(exact posteriors: g00 0.239, g11 0.330)",
    ("gaussian-mean_std", "flow"): "measured ratio00 0.763, g00 0.173, g11 0.111",
    ("gaussian-mean_std", "kernel"): "measured ratio00 0.876, ratio11 0.847, g00 0.159, g11 0.151",
    ("ising4-natural", "flow"): "measured ratio00 0.732, ratio11 0.697, g00 0.221, g01 0.104, g11 0.120",
    ("ising4-natural", "kernel"): "measured ratio00 6.006, ratio11 1.797, g00 3.612, g01 1.688, g11 0.690",
    ("ising4-temperature", "grid"): "measured ratio00 0.808, ratio11 0.804, g00 0.144 (exact "
                                    "posteriors: g00 0.137, ratio00 0.838: below this setting's "
                                    "floor)",
    ("ising4-temperature", "flow"): "measured ratio00 0.680, ratio11 0.689, g00 0.193, g01 0.112, g11 0.130",
    ("ising4-temperature", "kernel"): "measured ratio00 1.111, ratio11 1.411, g00 3.485, g01 1.090, g11 0.688",
    ("tasep6", "grid"): "measured ratio00 0.837",
    ("tasep6", "flow"): "measured ratio00 0.720",
    ("tasep6", "kernel"): "measured ratio00 0.763",
}


@functools.cache
def _run(case: str, estimator: str) -> dict:
    return run_case(case, estimator, "ci", seed=0)


CI_CASES = {case: ("grid", "flow", "kernel") for case in (
    "gaussian-natural", "gaussian-mean_std", "ising4-natural", "ising4-temperature", "tasep6")}


def _params(cases: dict[str, tuple[str, ...]], misses: dict[tuple[str, str], str]) -> list:
    """One pytest param per (case, estimator); a listed miss is a non-strict xfail with its
    measured numbers as the reason."""
    out = []
    for case, estimators in cases.items():
        for est in estimators:
            reason = misses.get((case, est))
            marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
            out.append(pytest.param(case, est, marks=marks, id=f"{case}-{est}"))
    return out


def _assert_targets(row: dict) -> None:
    """Interior median ratios within RATIO, every component's NRMSE <= NRMSE."""
    for key in ("ratio00", "ratio11"):
        assert RATIO[0] <= row[key] <= RATIO[1], (key, row)
    for key in ("g00", "g01", "g11"):
        value = row["g01_diag"] if key == "g01" and not np.isfinite(row["g01"]) else row[key]
        assert value <= NRMSE, (key, row)


@pytest.mark.parametrize(("case", "estimator"), _params(CI_CASES, MEASURED_MISSES))
def test_metric_matches_exact_reference(case: str, estimator: str) -> None:
    row = _run(case, estimator)
    _assert_targets(row)
    held = row["heldout"]
    assert held is not None and held["maps_from"] == "held_out", row


# measured at the feasible setting, seed 0 (benchmarks/estimator_table.py --setting ci-feasible);
# the exact-posterior rows show the setting itself can meet the targets (TASEP has none)
FEASIBLE_MISSES: dict[tuple[str, str], str] = {
    ("gaussian-natural", "flow"): "measured ratio00 0.885, ratio11 0.893, g00 0.108",
    ("gaussian-natural", "kernel"): "measured ratio00 1.303, ratio11 1.334, g00 0.293 (the "
                                    "central-limit normalisation's O(1) curvature, ~1/K)",
    ("gaussian-mean_std", "kernel"): "measured ratio00 1.127, g00 0.115, g11 0.152",
    ("ising4-temperature", "flow"): "measured ratio00 0.856, ratio11 0.881",
    ("ising4-temperature", "kernel"): "measured ratio00 1.125, ratio11 1.664, g00 1.284, g01 0.168 "
                                      "(phi = (s, s^2) does not span the bond sum)",
    ("tasep6", "flow"): "measured ratio00 0.858, ratio11 0.885",
    ("tasep6", "kernel"): "measured ratio00 0.840, ratio11 0.882",
}
FEASIBLE_CASES = {"gaussian-natural": ("exact", "grid", "flow", "kernel"),
                  "gaussian-mean_std": ("exact", "grid", "flow", "kernel"),
                  "ising4-temperature": ("exact", "grid", "flow", "kernel"),
                  "tasep6": ("grid", "flow", "kernel")}


@pytest.mark.parametrize(("case", "estimator"), _params(FEASIBLE_CASES, FEASIBLE_MISSES))
def test_metric_matches_exact_at_feasible_budget(case: str, estimator: str) -> None:
    """The Gaussian family and Ising L = 4 in (T, h), whose exact posteriors miss the targets at
    the CI setting, at a budget where they meet them (16 x 16, 16 bundles per point; bundles of 8
    for the Gaussian, 4 for Ising), and TASEP L = 6 (no exact posteriors) at Ising's budget: the
    same bounds as above, for the exact posteriors and each estimator."""
    _assert_targets(run_case(case, estimator, "ci-feasible", seed=0))


@pytest.mark.parametrize("coords", ["natural", "mean_std"])
def test_exact_posterior_is_the_bundle_likelihood(coords: str) -> None:
    """estimator_table.ExactPosterior against sum_k log N(x_k; mu_j, sigma_j^2) (scipy), normalised
    over the grid: the oracle the feasible setting rests on."""
    import torch
    from benchmarks.estimator_table import ExactPosterior
    from scipy.stats import norm

    import latentatlas as la

    source = la.sources.GaussianFamily(coords=coords)
    (lo0, hi0), (lo1, hi1) = source.bounds
    a0, a1 = np.linspace(lo0, hi0, 7), np.linspace(lo1, hi1, 5)
    params = la.posterior.bundles.grid_params(a0, a1)
    model = ExactPosterior(source, (1,), (7, 5)).fit(None, a0, a1)
    rng = np.random.default_rng(3)
    bundles = rng.normal(0.3, 0.9, (6, 4, 1))
    got = model.log_posterior(torch.as_tensor(bundles)).numpy()
    mu, sigma = source.mean_std(params)
    logp = norm.logpdf(bundles[:, :, 0][:, :, None], mu[None, None], sigma[None, None]).sum(1)
    want = logp - np.logaddexp.reduce(logp, axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-9)
