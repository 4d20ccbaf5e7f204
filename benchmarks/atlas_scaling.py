"""How the cost and the accuracy of the Ising atlas grow with the lattice and the grid.

Each configuration runs the whole default pipeline (``latentatlas atlas ising`` with ``--L`` and
``--resolution`` changed, every stage, analyses and report) in a fresh subprocess, so that its
peak memory (``ru_maxrss``) is its own. Printed per configuration: wall and CPU seconds per stage,
peak resident memory, and the error against the best reference available:

- L <= 10: the transfer matrix, on the whole grid (``la.atlas.compare``: range-normalised RMSE of
  the gradient and of each metric component; the median relative Frobenius error of the metric);
- any L, along H = 0: Kaufman's exact log Z of the finite torus (its K-derivatives by central
  differences), against the fitted potential's gradient and Hessian evaluated on that line
  (``g_KK`` and ``dPhi/dK``; ``g_HH`` at H = 0 is not in Kaufman's solution);
- L > 10, off the line: Monte Carlo, the covariance of the sufficient statistics (bond sum,
  magnetisation) of ``--mc-samples`` lattices at every ``--mc-stride``-th grid point (the Fisher
  metric in natural coordinates), with its standard error by batch means over 16 blocks; the
  median relative Frobenius error of the atlas against it and the median relative standard
  error of the reference itself (the error floor the comparison can see).

    python benchmarks/atlas_scaling.py                          # L = 8, 12, 16, 32 and grids 16, 32, 64
    python benchmarks/atlas_scaling.py --configs 8x32 12x32     # some of them (LxG)

The pipeline is the one of the README (``la.atlas.build``), on the torch threads given
(``--threads``, default 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from atlas_time import median_relative_frobenius  # run as a script: benchmarks/ is on sys.path

DEFAULT_CONFIGS = ("8x32", "12x32", "16x32", "32x32", "8x16", "8x64")
STAGES = ("sample", "posterior", "potential", "atlas", "geometry", "report")


def _kaufman_line(L: int, K: np.ndarray, h: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """(dlogZ/dK, d2logZ/dK2) of the periodic L x L lattice at H = 0, by central differences of
    Kaufman's exact log Z (step h; the truncation error h^2 f''''/12 is < 1e-5 relative here)."""
    from latentatlas.exact.ising_closed_form import kaufman_log_z

    f0, fp, fm = kaufman_log_z(L, K), kaufman_log_z(L, K + h), kaufman_log_z(L, K - h)
    return (fp - fm) / (2 * h), (fp - 2 * f0 + fm) / h**2


def _potential_line(atlas: Any, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fitted potential's dPhi/dK and d2Phi/dK2 at (K, 0)."""
    import torch

    model = atlas.potential_model
    ref = next(model.parameters())
    t = torch.as_tensor(np.stack([K, np.zeros_like(K)], 1), dtype=ref.dtype, device=ref.device)
    t.requires_grad_(True)
    grad = torch.autograd.grad(model(t).sum(), t)[0][:, 0]
    return grad.detach().cpu().numpy(), atlas.metric_at(np.stack([K, np.zeros_like(K)], 1))[:, 0, 0]


def _mc_metric(source: Any, params: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Covariance of (bond sum, magnetisation) of n lattices per point: (P, 2, 2), and its
    standard error by batch means over 16 blocks: (P, 2, 2)."""
    from latentatlas.sources.ising import ising_sufficient_statistics

    x = source.sample(params, n=n, seed=seed)  # (P, n, L, L)
    phi = ising_sufficient_statistics(np.asarray(x).reshape(-1, *np.shape(x)[-2:]))
    phi = np.asarray(phi, dtype=np.float64).reshape(len(params), n, 2)
    centred = phi - phi.mean(1, keepdims=True)
    prod = centred[..., :, None] * centred[..., None, :]  # (P, n, 2, 2)
    cov = prod.mean(1)
    blocks = prod.reshape(len(params), 16, n // 16, 2, 2).mean(2)
    return cov, blocks.std(1, ddof=1) / np.sqrt(16)


def one(L: int, G: int, root: Path, seed: int, threads: int, mc_samples: int,
        mc_stride: int) -> dict[str, Any]:
    """Run one configuration in this process and measure it."""
    import torch

    import latentatlas as la
    from latentatlas.atlas import compare, exact_reference, load

    torch.set_num_threads(threads)
    source = la.sources.Ising2D(L=L, coords="natural", algorithm="wolff")
    out = root / f"L{L}-G{G}-seed{seed}"
    start, cpu = time.perf_counter(), time.process_time()
    la.atlas.build(source, seed=seed, out=out, force=True, progress=False, resolution=G)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    timings = json.loads((out / "timings.json").read_text())
    row: dict[str, Any] = {"L": L, "G": G, "seed": seed, "wall": wall, "cpu": cpu,
                           "stages": timings["timings_s"], "stages_cpu": timings.get("cpu_s", {}),
                           "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    atlas = load(out)
    K = atlas.axis0
    dk_exact, gkk_exact = _kaufman_line(L, K)
    dk, gkk = _potential_line(atlas, K)
    resid = (dk - dk_exact) - np.mean(dk - dk_exact)  # the gradient up to a constant
    row["line_grad"] = float(np.sqrt(np.mean(resid**2)) / np.ptp(dk_exact))
    row["line_gkk"] = float(np.sqrt(np.mean((gkk - gkk_exact) ** 2)) / np.ptp(gkk_exact))
    row["line_gkk_rel"] = float(np.median(np.abs(gkk - gkk_exact) / gkk_exact))
    ref = exact_reference(source, atlas.axis0, atlas.axis1)
    if ref is not None:
        acc = compare(atlas, ref)
        row.update({k: acc[k] for k in ("gradient", "g00", "g01", "g11")})
        row["frob"] = median_relative_frobenius(atlas.metric, ref["metric"])
        row["reference"] = "transfer matrix"
    else:
        idx = np.arange(mc_stride // 2, G, mc_stride)
        i0, i1 = np.meshgrid(idx, idx, indexing="ij")
        params = np.stack([atlas.axis0[i0.ravel()], atlas.axis1[i1.ravel()]], 1)
        cov, se = _mc_metric(source, params, mc_samples, seed + 7919)
        mine = atlas.metric[i0.ravel(), i1.ravel()]
        row["frob"] = median_relative_frobenius(mine, cov)
        row["mc_rel_se"] = float(np.median(np.linalg.norm(se, axis=(-1, -2))
                                           / np.linalg.norm(cov, axis=(-1, -2))))
        row["reference"] = f"Monte Carlo ({len(params)} points x {mc_samples})"
    return row


def print_rows(rows: list[dict[str, Any]]) -> None:
    print("| L | grid | " + " | ".join(f"{s} s (CPU s)" for s in STAGES)
          + " | wall s | CPU s | peak MB |")
    print("|---" * (len(STAGES) + 5) + "|")
    for r in rows:
        cells = [f"{r['stages'].get(s, 0):.1f} ({r['stages_cpu'].get(s, 0):.1f})" for s in STAGES]
        print(f"| {r['L']} | {r['G']} | " + " | ".join(cells)
              + f" | {r['wall']:.0f} | {r['cpu']:.0f} | {r['max_rss_mb']:.0f} |")
    print()
    print("| L | grid | reference | gradient | g00 | g01 | g11 | median rel. Frobenius "
          "| (MC rel. SE) | H=0: dPhi/dK | H=0: g_KK | H=0: g_KK median rel. |")
    print("|---" * 12 + "|")
    for r in rows:
        acc = [f"{r[k]:.3f}" if k in r else "-" for k in ("gradient", "g00", "g01", "g11", "frob",
                                                         "mc_rel_se", "line_grad", "line_gkk",
                                                         "line_gkk_rel")]
        print(f"| {r['L']} | {r['G']} | {r['reference']} | " + " | ".join(acc) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS),
                        help="LxG: lattice size x grid resolution")
    parser.add_argument("--root", default="runs/atlas_scaling", help="parent of the run folders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mc-samples", type=int, default=1024)
    parser.add_argument("--mc-stride", type=int, default=4)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.root)
    if args.one:
        L, G = (int(v) for v in args.one.split("x"))
        row = one(L, G, root, args.seed, args.threads, args.mc_samples, args.mc_stride)
        print(json.dumps(row))
        return
    rows = []
    for config in args.configs:
        cmd = [sys.executable, __file__, "--one", config, "--root", str(root),
               "--seed", str(args.seed), "--threads", str(args.threads),
               "--mc-samples", str(args.mc_samples), "--mc-stride", str(args.mc_stride)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{config}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{config}: {rows[-1]['wall']:.0f} s", file=sys.stderr, flush=True)
    print_rows(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
