"""Images/second of the digits generator (our fixed-step RK4 / Euler–Maruyama samplers against
torchdiffeq's rk4 on the same vector field), and optionally the end-to-end
``latentatlas atlas digits`` run.

Usage::

    python benchmarks/digits_atlas.py [--batch 4096] [--repeats 3] [--e2e RESOLUTION]

Prints medians over repeats (wall and CPU seconds of this process; on a loaded machine CPU time
per thread is the better estimate of a quiet machine's wall time) and the ratio ours / peer.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch


def timed(fn, repeats: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--e2e", type=int, default=0, help="also time `atlas digits` at this "
                        "resolution (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import latentatlas as la

    t0 = time.perf_counter()
    gen = la.generators.Digits.pretrained(progress=False)
    print(f"Digits.pretrained (cache or training): {time.perf_counter() - t0:.1f} s wall")
    rows = []
    z32 = torch.randn(args.batch, 64, generator=torch.Generator().manual_seed(0))
    seeds = np.arange(args.batch)
    for name, z, eta in (("float32 eta=0", z32, 0.0), ("float64 eta=0", z32.double(), 0.0),
                         ("float32 eta=0.5", z32, 0.5)):
        wall, cpu = timed(lambda z=z, eta=eta: gen.generate(z, eta=eta, seeds=seeds), args.repeats)
        rows.append((name, wall, cpu, None))
    try:
        from torchdiffeq import odeint

        flow = gen.flow
        ts = torch.tensor([0.0, 1.0])

        def peer() -> None:
            with torch.no_grad():
                odeint(lambda t, x: flow.velocity(x, float(t)), z32, ts, method="rk4",
                       options={"step_size": 1.0 / gen.steps})

        wall, cpu = timed(peer, args.repeats)
        rows.append(("torchdiffeq rk4 float32", wall, cpu, None))
    except ImportError:
        pass
    print(f"\nbatch {args.batch}, {gen.steps} steps, {args.threads} thread(s), median of "
          f"{args.repeats}")
    print(f"{'sampler':<26}{'wall s':>9}{'cpu s':>9}{'img/s wall':>12}{'img/s cpu':>11}")
    for name, wall, cpu, _ in rows:
        print(f"{name:<26}{wall:>9.3f}{cpu:>9.3f}{args.batch / wall:>12.0f}"
              f"{args.batch / cpu:>11.0f}")
    ours = rows[0]
    peer_rows = [r for r in rows if r[0].startswith("torchdiffeq")]
    if peer_rows:
        print(f"ratio ours/torchdiffeq (time, float32 eta=0): wall {ours[1] / peer_rows[0][1]:.2f}"
              f", cpu {ours[2] / peer_rows[0][2]:.2f}")
    if args.e2e:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "latentatlas", "atlas", "digits", "--resolution",
                   str(args.e2e), "--out", f"{tmp}/run", "--quiet"]
            w = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - w
            import resource

            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            print(f"\nend to end `atlas digits --resolution {args.e2e}`: exit {res.returncode}, "
                  f"wall {wall:.0f} s, cpu (all threads) {usage.ru_utime + usage.ru_stime:.0f} s")
            print(res.stdout.strip() or res.stderr.strip()[-2000:])


if __name__ == "__main__":
    main()
