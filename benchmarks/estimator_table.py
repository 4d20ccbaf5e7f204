"""Every source x coordinate system x estimator against its exact Fisher metric.

Builds one atlas per case (in memory, seeded) and prints the normalized RMSE of each metric
component (RMSE / range of the exact component, absolute units, no rescaling) and the interior
median ratio metric / exact of the diagonal components (the border two cells excluded), plus the
train/held-out gap of the posteriors the potential was fitted to, when the run recorded it.

    python benchmarks/estimator_table.py --setting ci        # the small settings of the CI tests
    python benchmarks/estimator_table.py --setting defaults  # each source's atlas defaults
    python benchmarks/estimator_table.py --cases gaussian-natural gaussian-mean_std \\
        --estimators kernel --json table.json

    python benchmarks/estimator_table.py --setting ci-feasible --cases gaussian-natural \
        gaussian-mean_std ising4-temperature --estimators exact grid flow kernel
    python benchmarks/estimator_table.py --setting ci-feasible --cases tasep6

Cases: Ising L = 4 (transfer matrix) in natural (K, H) and temperature (T, h) coordinates, TASEP
L = 6 (master equation), the Gaussian family in natural and (mu, sigma) coordinates. Targets
(issue 15): interior median ratio in [0.9, 1.1], every component's NRMSE <= 0.10.

Estimator ``exact`` (exponential families: Gaussian, Ising) replaces the posterior network by the
exact bundle posterior ``theta(t) . sum_k T(x_k) - K log Z(t)`` on the grid and leaves every other
stage as it is: its row is the floor of a setting, what the method reaches with that many samples
when the posteriors are perfect. Setting ``ci-feasible`` is a budget for the Gaussian family and
Ising L = 4 in (T, h) at which that floor meets the targets (the ``ci`` setting's does not: NRMSE
0.10-0.24 and 0.137), with TASEP L = 6 at the same budget as Ising.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import latentatlas as la
from latentatlas.atlas import compare, exact_reference
from latentatlas.atlas.estimators import Estimator, register
from latentatlas.posterior.grid import PosteriorMap

CASES: dict[str, Callable[[], Any]] = {
    "gaussian-natural": lambda: la.sources.GaussianFamily(coords="natural"),
    "gaussian-mean_std": lambda: la.sources.GaussianFamily(coords="mean_std"),
    "ising4-natural": lambda: la.sources.Ising2D(L=4, coords="natural"),
    "ising4-temperature": lambda: la.sources.Ising2D(L=4, coords="temperature"),
    "tasep6": lambda: la.sources.TASEP(L=6),
}
ESTIMATORS = ("grid", "flow", "kernel", "exact")


class ExactPosterior(PosteriorMap, torch.nn.Module):
    """Exact bundle posteriors of an exponential-family source on the grid (uniform prior):
    ``log p(t_j | x_1..x_K) = theta(t_j) . sum_k T(x_k) - K log Z(t_j) + const`` with the source's
    ``natural``, ``sufficient_statistics`` and exact ``reference()["potential"]`` (log Z).
    ``(B, K, *sample_shape) -> (B, G0 * G1)`` float64 log-probabilities."""

    def __init__(self, source: Any, sample_shape: tuple[int, ...], grid: tuple[int, int]) -> None:
        torch.nn.Module.__init__(self)
        self.source = source
        self.sample_shape = tuple(sample_shape)
        self.grid_shape = tuple(grid)
        self.register_buffer("axis0", torch.zeros(grid[0], dtype=torch.float64))
        self.register_buffer("axis1", torch.zeros(grid[1], dtype=torch.float64))
        self.register_buffer("theta", torch.zeros(grid[0] * grid[1], 2, dtype=torch.float64))
        self.register_buffer("log_z", torch.zeros(grid[0] * grid[1], dtype=torch.float64))

    def fit(self, samples: Any, axis0: np.ndarray, axis1: np.ndarray, **_: Any) -> ExactPosterior:
        """Nothing to learn: the grid's natural parameters and exact log Z."""
        params = la.posterior.bundles.grid_params(np.asarray(axis0), np.asarray(axis1))
        self.axis0.copy_(torch.as_tensor(axis0))
        self.axis1.copy_(torch.as_tensor(axis1))
        self.theta.copy_(torch.as_tensor(self.source.natural(params)))
        self.log_z.copy_(torch.as_tensor(self.source.reference(params)["potential"]))
        return self

    def log_posterior(self, bundles: torch.Tensor) -> torch.Tensor:
        x = self._check_bundles(bundles)
        stats = self.source.sufficient_statistics(x.detach().cpu().numpy())  # (B, K, 2)
        total = torch.as_tensor(stats.sum(1), dtype=torch.float64)  # (B, 2)
        return torch.log_softmax(total @ self.theta.T - x.shape[1] * self.log_z, dim=-1)


def _register_exact(source: Any) -> None:
    """Register ``exact`` for ``source`` (the estimator is built per run from the registry)."""
    # maps smoothed by the target kernel like the kernel estimator's; fresh held-out draws like
    # the trained estimators'
    register(Estimator("exact", lambda shape, grid, init: ExactPosterior(source, shape, grid),
                       lambda model, samples, a0, a1, opts: model.fit(samples, a0, a1),
                       lambda x: x, smooth_posteriors=True, fresh_draws=True,
                       split=lambda x, o: (np.asarray(x), None)))

# The CI setting: small grids and short training (the tests in tests/test_exact_e2e.py use these).
CI: dict[str, dict[str, Any]] = {
    # Gaussian: sampling is free, so S = 1024 keeps the bundle-centre scatter (which widens the
    # log-mean maps by ~K / S_eff in variance) at a few per cent
    "gaussian-natural": dict(resolution=12, samples_per_point=1024, bundle=16,
                             posterior_repeats=8),
    "gaussian-mean_std": dict(resolution=12, samples_per_point=1024, bundle=16,
                              posterior_repeats=8),
    "ising4-natural": dict(resolution=10, samples_per_point=128, bundle=2, posterior_repeats=8),
    "ising4-temperature": dict(resolution=10, samples_per_point=128, bundle=2,
                               posterior_repeats=8),
    "tasep6": dict(resolution=10, samples_per_point=128, bundle=4, posterior_repeats=8),
}
CI_TRAINING = {"grid": {"fit": {"steps": 200}}, "flow": {"fit": {"steps": 100}},
               "kernel": {"init": {"features": "pixels"}}, "exact": None}
CI_POTENTIAL = {"steps": 300}

# The feasible CI setting: 16 x 16 grids, 16 bundles per point, potential 600 steps, where the
# exact posteriors meet the targets (seed 0: Gaussian NRMSE <= 0.08, bundles of 8; Ising L = 4 in
# (T, h) 0.059, bundles of 4 -- at the CI setting above its floor is g00 0.137), so a miss is the
# estimator's. TASEP L = 6 (no exact posteriors) runs at the Ising budget. Flow trained 300 steps
# at batch 512 (100 at batch 128 leaves its maps ~30 % wide); the grid estimator 200 steps on the
# Gaussian, 1000 on Ising and TASEP (their encoders learn the statistics from raw configurations).
CI_FEASIBLE: dict[str, dict[str, Any]] = {
    "gaussian-natural": dict(resolution=16, samples_per_point=1024, bundle=8, posterior_repeats=16),
    "gaussian-mean_std": dict(resolution=16, samples_per_point=1024, bundle=8,
                              posterior_repeats=16),
    "ising4-temperature": dict(resolution=16, samples_per_point=128, bundle=4,
                               posterior_repeats=16),
    "tasep6": dict(resolution=16, samples_per_point=128, bundle=4, posterior_repeats=16),
}
CI_FEASIBLE_TRAINING = {"grid": {"fit": {"steps": 200}},
                        "flow": {"fit": {"steps": 300, "batch_size": 512, "lr": 3e-3}},
                        "kernel": {"init": {"features": "pixels"}}, "exact": None}
CI_FEASIBLE_TRAINING_CASE: dict[str, dict[str, Any]] = {
    "ising4-temperature": {"grid": {"fit": {"steps": 1000}}},
    "tasep6": {"grid": {"fit": {"steps": 1000}}},
}
CI_FEASIBLE_POTENTIAL = {"steps": 600}


def interior_ratio(metric: np.ndarray, exact: np.ndarray, border: int = 2) -> dict[str, float]:
    """Median of metric / exact over the interior grid cells, per diagonal component.

    Args:
        metric, exact: (G0, G1, 2, 2).
        border: cells dropped at each edge.

    Returns:
        ``{"ratio00": ..., "ratio11": ...}``.
    """
    inner = (slice(border, -border), slice(border, -border))
    return {f"ratio{i}{i}": float(np.median(metric[inner][..., i, i] / exact[inner][..., i, i]))
            for i in (0, 1)}


def options(case: str, estimator: str, setting: str) -> dict[str, Any]:
    """The ``build`` keyword arguments of one case."""
    if setting == "defaults":
        return {"estimator": estimator,
                "posterior_options": {"init": {"features": "pixels"}} if estimator == "kernel"
                else None}
    if setting == "ci-feasible":
        if case not in CI_FEASIBLE:
            raise ValueError(f"case: setting 'ci-feasible' has {sorted(CI_FEASIBLE)}, got {case!r}")
        training = CI_FEASIBLE_TRAINING_CASE.get(case, {}).get(estimator,
                                                               CI_FEASIBLE_TRAINING[estimator])
        return dict(CI_FEASIBLE[case], estimator=estimator, posterior_options=training,
                    potential_options=CI_FEASIBLE_POTENTIAL)
    return dict(CI[case], estimator=estimator, posterior_options=CI_TRAINING[estimator],
                potential_options=CI_POTENTIAL)


def has_exact_posteriors(source: Any) -> bool:
    """Whether estimator ``exact`` can run on ``source``: an exponential family in its natural
    coordinates or with a known natural map."""
    return source.natural_map() is not None or source.natural_coordinates


def run_case(case: str, estimator: str, setting: str = "ci", seed: int = 0) -> dict[str, Any]:
    """Build one atlas and measure it against the exact reference.

    Returns:
        dict with ``g00``, ``g01``, ``g11`` (NRMSE), ``g01_diag`` (g01's RMSE over the mean
        range of the diagonal components), ``ratio00``, ``ratio11``, ``heldout`` (the
        posterior stage's train/held-out diagnostics, or None) and ``seconds``.
    """
    from latentatlas.atlas.config import RunConfig
    from latentatlas.atlas.pipeline import execute

    source = CASES[case]()
    if estimator == "exact":
        if not has_exact_posteriors(source):
            raise ValueError(f"estimator: 'exact' needs an exponential-family source (natural "
                             f"parameters and sufficient statistics), got case {case!r}")
        _register_exact(source)
    start = time.perf_counter()
    config = RunConfig.make(source, seed=seed, analyses={}, **options(case, estimator, setting))
    ctx = execute(source, config, progress=False, report=False)
    atlas = ctx.result("atlas")
    seconds = time.perf_counter() - start
    ref = exact_reference(source, atlas.axis0, atlas.axis1)
    acc = compare({"metric": atlas.metric}, {"metric": ref["metric"]},
                  axes=(atlas.axis0, atlas.axis1))
    out = {k: acc[k] for k in ("g00", "g01", "g11")}
    # g01 normalised by the mean range of the diagonal components (for a g01 that is 0 exactly)
    ex = ref["metric"]
    diag_range = 0.5 * (np.ptp(ex[..., 0, 0]) + np.ptp(ex[..., 1, 1]))
    out["g01_diag"] = float(np.sqrt(np.mean((atlas.metric[..., 0, 1] - ex[..., 0, 1]) ** 2))
                            / diag_range)
    out.update(interior_ratio(atlas.metric, ref["metric"]))
    out["heldout"] = ctx.diagnostics.get("posterior")
    out["seconds"] = seconds
    return out


def unsupported(case: str, estimator: str, setting: str) -> str | None:
    """Why ``run_case(case, estimator, setting)`` cannot run, or None when it can."""
    if setting == "ci-feasible" and case not in CI_FEASIBLE:
        return f"setting 'ci-feasible' has no case {case!r}"
    if estimator == "exact" and not has_exact_posteriors(CASES[case]()):
        return "no exact posteriors (not an exponential family with known statistics)"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=("ci", "ci-feasible", "defaults"), default="ci")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES),
                        help="default: every case (pairs a setting cannot run are skipped and "
                             "listed at the end)")
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=ESTIMATORS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    head = f"{'case':20s} {'estimator':9s} {'g00':>6s} {'g01':>6s} {'g11':>6s} " \
           f"{'r00':>6s} {'r11':>6s} {'gap':>7s} {'s':>6s}"
    print(head)  # noqa: T201
    rows, skipped = [], []
    for case in args.cases:
        for est in args.estimators:
            why = unsupported(case, est, args.setting)
            if why:
                skipped.append(f"{case} {est}: {why}")
                continue
            row = run_case(case, est, args.setting, args.seed)
            gap = (row["heldout"] or {}).get("metric_ratio", float("nan"))
            # g01 = 0 exactly ((mu, sigma)): its RMSE over the diagonal's mean range, marked *
            g01 = f"{row['g01']:6.3f}" if np.isfinite(row["g01"]) else f"{row['g01_diag']:5.3f}*"
            print(f"{case:20s} {est:9s} {row['g00']:6.3f} {g01} {row['g11']:6.3f} "  # noqa: T201
                  f"{row['ratio00']:6.3f} {row['ratio11']:6.3f} {gap:7.4f} {row['seconds']:6.1f}",
                  flush=True)
            rows.append({"case": case, "estimator": est, **row})
    for line in skipped:
        print(f"skipped {line}")  # noqa: T201
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
