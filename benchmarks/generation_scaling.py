"""Images/second of sample generation: local backend vs 1 and 2 local Ray workers.

Source: a LatentPlane of the embedded digits generator (``la.generators.Digits.pretrained()``,
trained on first use and cached) with eta > 0, so every stored sample is one generated image
(24 Euler–Maruyama steps of the flow-matching field). The store is filled with
``la.distributed.generate(store, backend=...)``; each configuration gets a fresh store, repeats
are interleaved (local, ray x1, ray x2, local, ...) so that load on the machine hits all three
alike, and the medians are printed. Ray is started once with 2 CPUs (one worker process per CPU,
one torch thread each) and warmed up (workers import torch and unpickle the generator) before
timing; its start-up time is printed separately. The local backend runs with one torch thread,
so "ray x1 / local" is the per-image overhead of Ray and "ray x2 / ray x1" the scaling.

    python benchmarks/generation_scaling.py [--grid 16] [--samples 8] [--chunk 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import latentatlas.distributed as D
from latentatlas.generators import Digits
from latentatlas.sources import LatentPlane
from latentatlas.store import SampleStore, grid_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, default=16, help="grid points per axis")
    ap.add_argument("--samples", type=int, default=8, help="images per grid point")
    ap.add_argument("--chunk", type=int, default=16, help="points per chunk (one Ray task)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray

    gen = Digits.pretrained(progress=False)
    plane = LatentPlane(gen, anchors=0, eta=0.5, batch_size=256)
    _, _, params = grid_params(plane.bounds, args.grid)
    images = len(params) * args.samples
    root = Path(tempfile.mkdtemp(prefix="la-scaling-"))

    def fresh(name: str) -> SampleStore:
        return SampleStore.create(root / name, plane, params, args.samples, seed=0,
                                  chunk_points=args.chunk)

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()  # warm-up: both workers import torch/latentatlas, get the generator
    warm = SampleStore.create(root / "warm", plane, params[: 4 * args.chunk], args.samples,
                              seed=1, chunk_points=args.chunk)
    D.generate(warm, backend="ray", workers=2, source=plane, progress=False)
    warmup = time.perf_counter() - t0

    configs = {"local": ("local", None), "ray x1": ("ray", 1), "ray x2": ("ray", 2)}
    times: dict[str, list[float]] = {k: [] for k in configs}
    stores: dict[str, SampleStore] = {}
    for rep in range(args.repeats):
        for name, (backend, workers) in configs.items():
            store = fresh(f"{name.replace(' ', '')}-{rep}")
            t = time.perf_counter()
            stores[name] = D.generate(store, backend=backend, workers=workers, source=plane,
                                      progress=False)
            times[name].append(time.perf_counter() - t)
    ray.shutdown()

    ref = np.asarray(stores["local"].samples[...])
    same = all(np.array_equal(np.asarray(s.samples[...]), ref) for s in stores.values())
    chunks = -(-len(params) // args.chunk)
    print(f"digits LatentPlane (eta 0.5): {len(params)} points x {args.samples} samples = "
          f"{images} images per run, {chunks} chunks of {args.chunk} points; "
          f"{args.repeats} interleaved repeats; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    print(f"ray start-up {startup:.1f} s, warm-up {warmup:.1f} s (not in the times below)")
    print(f"{'backend':<10}{'median s':>10}{'images/s':>11}{'vs local':>10}{'vs ray x1':>11}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in configs:
        print(f"{name:<10}{med[name]:>10.2f}{images / med[name]:>11.1f}"
              f"{med['local'] / med[name]:>10.2f}{med['ray x1'] / med[name]:>11.2f}")
    print(f"ratio 2 workers / 1 worker: {med['ray x1'] / med['ray x2']:.2f} (target >= 1.7 on 2 "
          f"idle cores); stores bit-identical to local: {same}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
