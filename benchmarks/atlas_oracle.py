"""The accuracy floor of a sample budget: the Ising atlas with EXACT bundle posteriors.

The posterior network is the one learned part of the pipeline that an exact answer can replace:
for the Ising model in natural coordinates a bundle's posterior on the grid is exactly

    log p(t | x_1..x_K) = sum_k (K_t E(x_k) + H_t M(x_k)) - K log Z(t) + const,

with E the bond sum, M the magnetisation and log Z the transfer matrix's. The oracle estimator
registered here (``"exact-ising"``) computes it for every bundle; the pipeline does everything else
exactly as for the network (the same held-out draws, R bundles per point, log-averaging, the
target kernel's smoothing, the same potential fit), so the oracle's error is what the method can
reach with that many samples, and the network's excess over it is the estimator's share.

    python benchmarks/atlas_oracle.py                 # defaults, 5 seeds, the budget sweep
    python benchmarks/atlas_oracle.py --network       # also the network at each budget

Accuracy columns as in ``benchmarks/atlas_time.py`` (NRMSE of the gradient and of each metric
component against the transfer matrix, median relative Frobenius error, H -> -H symmetry).
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import latentatlas as la
from latentatlas.atlas import compare, exact_reference
from latentatlas.atlas.estimators import Estimator, register
from latentatlas.posterior.grid import PosteriorMap

__all__ = ["ExactIsingPosterior", "run"]


class ExactIsingPosterior(PosteriorMap, nn.Module):
    """Exact bundle posteriors of the L x L Ising model (natural coordinates, uniform prior on the
    grid): ``(B, K, L, L)`` spins -> ``(B, G0 * G1)`` log-probabilities (float64)."""

    def __init__(self, sample_shape: tuple[int, ...], grid_shape: tuple[int, int]) -> None:
        nn.Module.__init__(self)
        if len(sample_shape) != 2 or sample_shape[0] != sample_shape[1]:
            raise ValueError(f"sample_shape: expected (L, L), got {sample_shape}")
        self.sample_shape = tuple(sample_shape)
        self.grid_shape = tuple(grid_shape)
        self.register_buffer("axis0", torch.zeros(grid_shape[0], dtype=torch.float64))
        self.register_buffer("axis1", torch.zeros(grid_shape[1], dtype=torch.float64))
        self.register_buffer("log_z", torch.zeros(grid_shape[0] * grid_shape[1],
                                                  dtype=torch.float64))

    def fit(self, samples: Any, axis0: np.ndarray, axis1: np.ndarray, **_: Any
            ) -> ExactIsingPosterior:
        """Nothing to learn: store the grid and its transfer-matrix log Z."""
        from latentatlas.exact.ising import IsingExact

        params = la.posterior.bundles.grid_params(np.asarray(axis0), np.asarray(axis1))
        self.axis0.copy_(torch.as_tensor(axis0))
        self.axis1.copy_(torch.as_tensor(axis1))
        self.log_z.copy_(torch.as_tensor(IsingExact(self.sample_shape[0]).log_z(params)))
        return self

    def log_posterior(self, bundles: Tensor) -> Tensor:
        s = self._check_bundles(bundles).to(torch.float64)
        b, k = s.shape[:2]
        bonds = (s * s.roll(1, -1) + s * s.roll(1, -2)).sum((-1, -2)).sum(1)  # (B,)
        magnet = s.sum((-1, -2)).sum(1)
        kk, hh = torch.meshgrid(self.axis0, self.axis1, indexing="ij")
        logits = bonds[:, None] * kk.reshape(1, -1) + magnet[:, None] * hh.reshape(1, -1)
        return torch.log_softmax(logits - k * self.log_z, dim=-1)


def _fit(model: Any, samples: np.ndarray, axis0: np.ndarray, axis1: np.ndarray,
         options: dict[str, Any]) -> Any:
    return model.fit(samples, axis0, axis1)


# the maps are smoothed by the target kernel like the kernel estimator's (exact posteriors are not
# smoothed per bundle); fresh held-out draws, as the trained estimators' maps are
register(Estimator("exact-ising", lambda shape, grid, init: ExactIsingPosterior(shape, grid),
                   _fit, lambda x: x, smooth_posteriors=True, fresh_draws=True,
                   split=lambda x, o: (np.asarray(x), None)))


def run(name: str, estimator: str, seed: int = 0, **options: Any) -> dict[str, Any]:
    """One in-memory atlas (no analyses, no report) and its accuracy row."""
    from atlas_time import ising_symmetry_error, median_relative_frobenius  # a script's import
    from latentatlas.atlas.config import RunConfig
    from latentatlas.atlas.pipeline import execute

    source = la.sources.Ising2D(L=8, coords="natural", algorithm="wolff")
    start = time.perf_counter()
    config = RunConfig.make(source, seed=seed, estimator=estimator, analyses={}, **options)
    ctx = execute(source, config, progress=False, report=False)
    atlas = ctx.result("atlas")
    ref = exact_reference(source, atlas.axis0, atlas.axis1)
    acc = compare(atlas, ref)
    row = {"name": name, "estimator": estimator, "seed": seed,
           "wall": time.perf_counter() - start}
    row.update({k: acc[k] for k in ("gradient", "g00", "g01", "g11")})
    row["frob"] = median_relative_frobenius(atlas.metric, ref["metric"])
    row["symmetry"] = ising_symmetry_error(atlas.metric)
    return row


def print_rows(rows: list[dict[str, Any]]) -> None:
    from atlas_time import ACC
    print("| run | estimator | gradient | g00 | g01 | g11 | median rel. Frobenius | "
          "H->-H symmetry | wall s |")
    print("|---" * 9 + "|")
    for r in rows:
        cells = [f"{r[k]:.3f}" for k in ACC]
        print(f"| {r['name']} (seed {r['seed']}) | {r['estimator']} | " + " | ".join(cells)
              + f" | {r['wall']:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 at the defaults")
    parser.add_argument("--network", action="store_true",
                        help="also run the posterior network (grid estimator) at each budget")
    parser.add_argument("--no-sweep", action="store_true", help="skip the budget sweep")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    from atlas_time import ACC

    estimators = ["exact-ising"] + (["grid"] if args.network else [])

    rows = [run("defaults", est, seed=s) for s in range(args.seeds) for est in estimators]
    print("\n## Ising L = 8 defaults (grid 32, S = 64, K = 2, R = 32)")
    print_rows(rows)
    oracle = [r for r in rows if r["estimator"] == "exact-ising"]
    print("| oracle mean +- std | | " + " | ".join(
        f"{np.mean([r[k] for r in oracle]):.3f} +- {np.std([r[k] for r in oracle]):.3f}"
        for k in ACC) + " | |")
    if args.no_sweep:
        return
    sweep = []
    for samples in (16, 64):
        for bundle in (1, 2, 4, 8):
            for est in estimators:
                sweep.append(run(f"S={samples} K={bundle} grid 24", est, resolution=24,
                                 samples_per_point=samples, bundle=bundle))
    print("\n## Budget sweep (grid 24 x 24, seed 0)")
    print_rows(sweep)


if __name__ == "__main__":
    main()
