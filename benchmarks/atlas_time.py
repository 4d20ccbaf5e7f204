"""Time and accuracy of the default atlas, per stage, old and new defaults side by side.

For each configuration the whole pipeline runs as ``latentatlas atlas SOURCE`` does (every stage,
analyses and the report) in this process, on the threads torch is given (``--threads``, default
2). Printed:

1. per stage: wall seconds and CPU-seconds (``time.process_time`` of the process: all its
   threads), and the totals;
2. accuracy against the exact reference: the range-normalised RMSE of ``la.atlas.compare``
   (gradient, each metric component), the pointwise median relative Frobenius error of the
   metric ``median |g - g_exact|_F / |g_exact|_F``, and for Ising the H -> -H symmetry error
   ``median |g(K, -H) - S g(K, H) S|_F / |g(K, H)|_F`` with ``S = diag(1, -1)`` (0 for the
   exact metric);
3. ``--seeds N``: mean and spread over seeds 0..N-1 of the new Ising defaults;
4. ``--sweep``: Ising budgets a user would choose (samples per point x bundle size, grid 24).

    python benchmarks/atlas_time.py                        # old vs new Ising, TASEP, Gaussian
    python benchmarks/atlas_time.py --seeds 5 --sweep      # plus the seed spread and the sweep
    python benchmarks/atlas_time.py --only new             # the new defaults only

Targets (issue 14): Ising default <= 120 s wall and <= 240 CPU-s on 2 idle cores; TASEP and
Gaussian <= 60 s each; gradient NRMSE <= 0.03, every metric component <= 0.08, median relative
Frobenius error <= 0.15.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import latentatlas as la
from latentatlas.atlas import compare, exact_reference, load

# The Ising defaults before issue 14 (32-channel CNN, embedding pooling, 8000 steps at lr 3e-3,
# potential 2500 steps): what `latentatlas atlas ising` ran until then.
OLD_ISING = {
    "posterior_options": {"init": {"embed": 64, "hidden": 128, "pool": "embedding",
                                   "encoder_options": {"channels": 32}},
                          "fit": {"steps": 8000, "lr": 3e-3, "batch_size": 128,
                                  "patience": None}},
    "potential_options": {"steps": 2500},
}


def sources() -> dict[str, Any]:
    return {
        "ising": lambda: la.sources.Ising2D(L=8, coords="natural", algorithm="wolff"),
        "tasep": lambda: la.sources.TASEP(L=10),
        "gaussian": lambda: la.sources.GaussianFamily(coords="natural"),
    }


def median_relative_frobenius(metric: np.ndarray, exact: np.ndarray) -> float:
    """``median_p |g_p - g*_p|_F / |g*_p|_F`` over the grid points p."""
    num = np.linalg.norm(metric - exact, axis=(-1, -2))
    den = np.linalg.norm(exact, axis=(-1, -2))
    return float(np.median(num / den))


def ising_symmetry_error(metric: np.ndarray) -> float:
    """``median_p |g(K, -H) - S g(K, H) S|_F / |g(K, H)|_F`` with ``S = diag(1, -1)``, on a grid
    symmetric in H (axis 1); 0 for the exact metric."""
    mirrored = metric[:, ::-1] * np.array([[1.0, -1.0], [-1.0, 1.0]])
    num = np.linalg.norm(metric - mirrored, axis=(-1, -2))
    return float(np.median(num / np.linalg.norm(metric, axis=(-1, -2))))


def run(name: str, source: Any, root: Path, seed: int = 0, **options: Any) -> dict[str, Any]:
    out = root / f"{name}-seed{seed}"
    start, cpu = time.perf_counter(), time.process_time()
    la.atlas.build(source, seed=seed, out=out, force=True, progress=False, **options)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    timings = json.loads((out / "timings.json").read_text())
    atlas = load(out)
    ref = exact_reference(source, atlas.axis0, atlas.axis1)
    row: dict[str, Any] = {"name": name, "seed": seed, "wall": wall, "cpu": cpu,
                           "stages": timings["timings_s"], "stages_cpu": timings.get("cpu_s", {})}
    if ref is not None:
        acc = compare(atlas, ref)
        row.update({k: acc[k] for k in ("gradient", "g00", "g01", "g11") if k in acc})
        row["frob"] = median_relative_frobenius(atlas.metric, ref["metric"])
        if isinstance(source, la.sources.Ising2D):
            row["symmetry"] = ising_symmetry_error(atlas.metric)
            row["symmetry_exact"] = ising_symmetry_error(ref["metric"])
    analyses = json.loads((out / "analyses.json").read_text()) if (
        out / "analyses.json").exists() else {}
    row["phases"] = analyses.get("boundaries", {}).get("phases")
    return row


def print_times(rows: list[dict[str, Any]]) -> None:
    stages = [s for s in ("sample", "posterior", "potential", "atlas", "geometry", "report")
              if any(s in r["stages"] for r in rows)]
    print("| run | " + " | ".join(f"{s} s (CPU s)" for s in stages) + " | total wall s | total CPU s |")
    print("|---" * (len(stages) + 3) + "|")
    for r in rows:
        cells = [f"{r['stages'].get(s, 0):.1f} ({r['stages_cpu'].get(s, 0):.1f})" for s in stages]
        print(f"| {r['name']} | " + " | ".join(cells) + f" | {r['wall']:.0f} | {r['cpu']:.0f} |")


ACC = ("gradient", "g00", "g01", "g11", "frob", "symmetry")


def print_accuracy(rows: list[dict[str, Any]]) -> None:
    print("| run | gradient | g00 | g01 | g11 | median rel. Frobenius | H->-H symmetry | phases |")
    print("|---" * 8 + "|")
    for r in rows:
        cells = [f"{r[k]:.3f}" if k in r else "-" for k in ACC]
        print(f"| {r['name']} (seed {r['seed']}) | " + " | ".join(cells) + f" | {r['phases']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/atlas_time", help="parent of the run folders")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("old", "new"), default=None)
    parser.add_argument("--sources", nargs="+", default=["ising", "tasep", "gaussian"])
    parser.add_argument("--seeds", type=int, default=1, help="Ising seeds 0..N-1 (new defaults)")
    parser.add_argument("--sweep", action="store_true", help="Ising budget sweep (grid 24)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.root)
    make = sources()

    rows: list[dict[str, Any]] = []
    if "ising" in args.sources:
        if args.only != "new":
            rows.append(run("ising old defaults", make["ising"](), root, **OLD_ISING))
        if args.only != "old":
            rows.append(run("ising", make["ising"](), root))
    if args.only != "old":
        for name in args.sources:
            if name != "ising":
                rows.append(run(name, make[name](), root))
    print(f"\n## Defaults, per stage (torch threads {args.threads})")
    print_times(rows)
    print("\n## Accuracy against the exact reference")
    print_accuracy(rows)

    if args.seeds > 1:
        seeded = [r for r in rows if r["name"] == "ising"]
        seeded += [run("ising", make["ising"](), root, seed=s) for s in range(1, args.seeds)]
        print(f"\n## Ising defaults over seeds 0..{args.seeds - 1}")
        print_accuracy(seeded)
        print("| mean +- std | " + " | ".join(
            f"{np.mean([r[k] for r in seeded]):.3f} +- {np.std([r[k] for r in seeded]):.3f}"
            for k in ACC) + " | |")
        print("wall s: " + ", ".join(f"{r['wall']:.0f}" for r in seeded))

    if args.sweep:
        sweep = []
        for samples in (16, 64):
            for bundle in (1, 2, 4, 8):
                sweep.append(run(f"ising S={samples} K={bundle} grid 24", make["ising"](), root,
                                 resolution=24, samples_per_point=samples, bundle=bundle,
                                 analyses=False, report=False))
        print("\n## Ising budget sweep (grid 24 x 24, seed 0)")
        print_accuracy(sweep)
        print_times(sweep)


if __name__ == "__main__":
    main()
