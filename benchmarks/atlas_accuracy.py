"""Accuracy of the atlas pipeline against exact references.

Builds the atlas of each source with the defaults of ``latentatlas atlas`` (or the options below),
then prints the normalized RMSE (RMSE / range of the exact quantity; potential after the best
affine term, gradient after the best constant, metric in absolute units) of our method and of the
two baselines (inverse posterior covariance metric; MLP potential with a midpoint-convexity
penalty), and where the error concentrates.

    python benchmarks/atlas_accuracy.py                       # ising, tasep, gaussian
    python benchmarks/atlas_accuracy.py --sources ising --root runs/bench

Run folders are kept under ``--root`` (a rerun only redoes missing stages; ``--force`` redoes
all). Targets: gradient <= 0.05 and each metric component <= 0.15.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

import latentatlas as la
from latentatlas.atlas import load

SOURCES = {
    "ising": lambda: la.sources.Ising2D(L=8, coords="natural", algorithm="wolff"),
    "tasep": lambda: la.sources.TASEP(L=10),
    "gaussian": lambda: la.sources.GaussianFamily(coords="natural"),
}
COLUMNS = ("potential", "gradient", "gradient0", "gradient1", "g00", "g01", "g11", "sqrt_det_g")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--root", default="runs/bench", help="parent of the run folders")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--bundle", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("latentatlas.atlas").setLevel(logging.INFO)

    rows = []
    for name in args.sources:
        source = SOURCES[name]()
        out = Path(args.root) / name
        start = time.perf_counter()
        la.atlas.build(source, resolution=args.resolution, samples_per_point=args.samples,
                       bundle=args.bundle, seed=args.seed, out=out, force=args.force,
                       progress=False)
        elapsed = time.perf_counter() - start
        atlas = load(out)
        timings = json.loads((out / "timings.json").read_text())
        analyses = json.loads((out / "analyses.json").read_text())
        cfg = atlas.config
        print(f"\n## {name}: {type(source).__name__}({source.config}) bounds {cfg['bounds']} "
              f"grid {cfg['resolution']} S={cfg['samples_per_point']} K={cfg['bundle']} "
              f"seed={cfg['seed']}")
        print("stage times (s, this run; skipped stages absent): "
              + ", ".join(f"{k} {v:.0f}" for k, v in timings["timings_s"].items())
              + f"; wall {elapsed:.0f}")
        acc = analyses.get("accuracy")
        if not acc:
            print("no exact reference")
            continue
        print("| method | " + " | ".join(COLUMNS) + " |")
        print("|---" * (len(COLUMNS) + 1) + "|")
        for method, values in acc.items():
            cells = [f"{values[c]:.3f}" if c in values else "-" for c in COLUMNS]
            print(f"| {method} | " + " | ".join(cells) + " |")
            rows.append((name, method, values))
        conc = analyses.get("error_concentration", {})
        if conc:
            print("where the error of our method concentrates (share of squared error in the "
                  "worst 10% of cells; location of the largest error):")
            for field in ("potential", "gradient0", "gradient1", "g00", "g01", "g11"):
                if field in conc:
                    c = conc[field]
                    loc = ", ".join(f"{v:.3g}" for v in c["argmax"])
                    print(f"  {field:10s} {c['share_of_squared_error_in_worst_10pct']:.2f} "
                          f"of the squared error; max {c['max']:.3f} at ({loc})")
    ours = [(n, v) for n, m, v in rows if m == "ours"]
    if ours:
        print("\ntargets (ours): gradient <= 0.05, metric components <= 0.15")
        for name, v in ours:
            worst = max(v.get(k, np.nan) for k in ("g00", "g01", "g11"))
            grad = (f"{v['gradient']:.3f} ({'ok' if v['gradient'] <= 0.05 else 'MISSED'})"
                    if "gradient" in v else "n/a (no exact potential)")
            print(f"  {name:9s} gradient {grad}, worst metric component {worst:.3f} "
                  f"({'ok' if worst <= 0.15 else 'MISSED'})")


if __name__ == "__main__":
    main()
