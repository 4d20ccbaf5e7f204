"""The Fisher metric in non-natural coordinates: potential fitted in the given coordinates, in the
natural ones (pull-back ``J^T Hess Phi J``) and in learned Hessian coordinates.

Targets are exact, noise-free posteriors (the Bregman posterior of the exact log Z, which is the
large-bundle limit of the posterior of K samples), so the errors are the coordinate model's, not
the posterior estimator's. The pipeline is never told the natural map in the "learned" rows.
Prints the normalized RMSE (RMSE / range of exact) of each metric component against the exact
Fisher metric in the source's coordinates.

    python benchmarks/coordinates.py                 # gaussian (mu, sigma), Ising L=4 and L=8 (T, h)
    python benchmarks/coordinates.py --cases gaussian --steps 600
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import latentatlas as la
from latentatlas.atlas import compare
from latentatlas.geometry import bregman_log_posterior, fit_potential, grid_points
from latentatlas.geometry.coordinates import coordinate_potential


def exact_bregman_posteriors(source, axis0: np.ndarray, axis1: np.ndarray, bundle: float
                             ) -> np.ndarray:
    """(P, G0, G1) exact Bregman posteriors ``∝ exp(-K D_logZ(eta(t), eta(t')))`` on the grid of
    ``t``, from the source's exact log Z and its gradient in natural parameters."""
    pts = grid_points(axis0, axis1)
    eta = source.natural(pts)
    config = {**source.config, "coords": "natural"}
    if "bounds" in config:
        config["bounds"] = None  # the default region of the natural coordinates
    nat = type(source)(**config)
    ref = nat.reference(eta)
    a, g, u = (torch.as_tensor(ref["potential"]), torch.as_tensor(ref["gradient"]),
               torch.as_tensor(eta))
    logq = bregman_log_posterior(a, u, a, g, u, float(bundle))
    return logq.exp().reshape(-1, len(axis0), len(axis1)).numpy()


def exact_kl_posteriors(source, axis0: np.ndarray, axis1: np.ndarray, bundle: float) -> np.ndarray:
    """(P, G0, G1) ``∝ exp(-K KL(p(.|t') || p(.|t)))`` on the grid (the large-R limit of the
    log-mean posterior of K samples; the Bregman posterior for an exponential family), for a
    source with a small exact state space (TASEP: the stationary law of all 2^L states)."""
    from latentatlas.exact.tasep import stationary_distribution

    pts = grid_points(axis0, axis1).numpy()
    p = np.stack([stationary_distribution(source.L, a, b) for a, b in pts])
    logp = np.log(np.clip(p, 1e-300, None))
    logq = torch.log_softmax(torch.as_tensor(bundle * (p @ logp.T)), dim=1)
    return logq.exp().reshape(-1, len(axis0), len(axis1)).numpy()


CASES = {
    # name: (source, bounds, resolution, bundle)
    "gaussian": (lambda: la.sources.GaussianFamily("mean_std"), ((-1.5, 1.5), (0.5, 1.5)), 32, 16),
    "ising4": (lambda: la.sources.Ising2D(L=4), ((1.5, 4.0), (-0.5, 0.5)), 32, 2),
    "ising8": (lambda: la.sources.Ising2D(L=8), ((1.6, 3.2), (-0.4, 0.4)), 32, 1),
    "tasep6": (lambda: la.sources.TASEP(L=6), ((0.05, 1.0), (0.05, 1.0)), 32, 4),
}


def run_case(name: str, kinds: tuple[str, ...], steps: int, seed: int) -> list[dict]:
    make, bounds, res, bundle = CASES[name]
    source = make()
    axis0 = np.linspace(*bounds[0], res)
    axis1 = np.linspace(*bounds[1], res)
    targets = exact_kl_posteriors if source.natural_map() is None and not \
        source.natural_coordinates else exact_bregman_posteriors
    post = torch.as_tensor(targets(source, axis0, axis1, bundle))
    exact = la.atlas.exact_reference(source, axis0, axis1)
    rows = []
    for kind in kinds:
        if kind == "natural" and source.natural_map() is None:
            continue
        start = time.perf_counter()
        pot = coordinate_potential(kind, post, axis0, axis1, bundle=bundle,
                                   natural_map=source.natural_map(), seed=seed)
        pot, _ = fit_potential(post, axis0, axis1, bundle=bundle, potential=pot, steps=steps,
                               seed=seed, progress=False)
        t = torch.as_tensor(grid_points(axis0, axis1), dtype=torch.float32)
        g = pot.hessian(t).detach().double().numpy().reshape(res, res, 2, 2)
        err = compare({"metric": g}, {"metric": exact["metric"]})
        if not np.isfinite(err["g01"]):  # exact g01 = 0 (Gaussian): RMSE / mean diagonal range
            rng = 0.5 * (np.ptp(exact["metric"][..., 0, 0]) + np.ptp(exact["metric"][..., 1, 1]))
            err["g01"] = float(np.sqrt(np.mean(g[..., 0, 1] ** 2)) / rng)
        rows.append({"case": name, "coordinates": kind, **err,
                     "seconds": time.perf_counter() - start})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--kinds", nargs="+", default=["given", "natural", "learned"])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| case | coordinates | g00 | g01 | g11 | sqrt det g | s (under load) |")
    print("|---|---|---|---|---|---|---|")
    for name in args.cases:
        for r in run_case(name, tuple(args.kinds), args.steps, args.seed):
            print(f"| {r['case']} | {r['coordinates']} | {r['g00']:.3f} | {r['g01']:.3f} | "
                  f"{r['g11']:.3f} | {r['sqrt_det_g']:.3f} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
