"""Paths benchmark: the users' case (a 256-dim latent, 20,000 latents, 100 points x 50 samples)
with a small decoder of our own, one path and a batch of pairs; prints a table.

    python benchmarks/paths.py [--pairs 100] [--threads 2] [--backend local|ray]

The decoder: z (256) -> MLP 256-512-1024 -> a 32 x 32 image, plus eta * Gaussian noise per sample
(seeded per sample). Columns: stage, images, seconds, images/second.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

import latentatlas as la

D, SIDE = 256, 32


class Decoder(nn.Module):
    """A small random MLP decoder z (B, 256) -> x (B, 32, 32) with per-sample seeded noise."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(D, 512), nn.Tanh(), nn.Linear(512, 1024), nn.Tanh(),
                                 nn.Linear(1024, SIDE * SIDE))

    @torch.no_grad()
    def generate(self, z: torch.Tensor, eta: float = 0.0, seeds: np.ndarray | None = None
                 ) -> torch.Tensor:
        x = self.net(z.float())
        if eta > 0:
            rng = np.random.default_rng(np.asarray(seeds, dtype=np.uint64))
            x = x + eta * torch.as_tensor(rng.standard_normal(x.shape), dtype=x.dtype)
        return x.reshape(-1, SIDE, SIDE)


def exact_length(gen: Decoder, za: np.ndarray, zb: np.ndarray, eta: float,
                 points: int = 100) -> float:
    """The exact Fisher length of the slerp path: g(s) = |d f(z(s))/ds|^2 / eta^2 (Gaussian
    noise of known eta on the decoder's output), the derivative by forward-mode autodiff."""
    from latentatlas.geometry.line import fisher_length
    from latentatlas.sources.latent_path import interpolate

    net = Decoder().double().net
    net.load_state_dict({k: v.double() for k, v in gen.net.state_dict().items()})
    a, b = torch.as_tensor(za), torch.as_tensor(zb)
    s = torch.linspace(0, 1, points, dtype=torch.float64)
    _, jv = torch.autograd.functional.jvp(lambda t: net(interpolate(a, b, t, "slerp")), (s,),
                                          (torch.ones_like(s),))
    return fisher_length(s.numpy(), ((jv ** 2).sum(-1) / eta ** 2).numpy())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eta", type=float, default=0.3)
    parser.add_argument("--backend", choices=["local", "ray"], default="local")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = Decoder()
    latents = np.random.default_rng(0).standard_normal((20_000, D))
    rows = []

    src = la.paths.make_source(gen, latents[0], latents[1], "slerp", args.eta)
    s = np.linspace(0, 1, 100)
    t = time.perf_counter()
    src.sample(s[:, None], 50, seed=0)
    rows.append(("generate 1 path (100 x 50)", 5000, time.perf_counter() - t))

    t = time.perf_counter()
    res = la.paths.build(gen, latents[0], latents[1], eta=args.eta, progress=False,
                         analyses=False)
    rows.append(("whole pipeline, 1 path", 5000, time.perf_counter() - t))
    ctx = la.atlas.execute(src, la.atlas.RunConfig.make(src, analyses={}), progress=False,
                           report=False)
    rows.append(("  of which: posterior (kernel)", 5000, ctx.timings["posterior"]))
    rows.append(("  of which: potential fit", 5000, ctx.timings["potential"]))

    pairs = np.random.default_rng(1).choice(len(latents), (args.pairs, 2), replace=False)
    srcs = [la.paths.make_source(gen, latents[i], latents[j], "slerp", args.eta)
            for i, j in pairs[:10]]
    t = time.perf_counter()
    la.paths.sample_paths(srcs, s, 50, seed=0)
    rows.append(("generate 10 paths batched", 50_000, time.perf_counter() - t))
    t = time.perf_counter()
    for one in srcs:
        one.sample(s[:, None], 50, seed=0)
    rows.append(("generate 10 paths one by one", 50_000, time.perf_counter() - t))

    t = time.perf_counter()
    table = la.paths.rank(gen, latents, pairs, eta=args.eta, progress=False,
                          backend=args.backend, workers=args.threads)
    rows.append((f"rank {args.pairs} pairs ({args.backend}, batched fits)", args.pairs * 5000,
                 time.perf_counter() - t))

    ratio = np.array([r["fisher_length"] / exact_length(gen, latents[r["i"]], latents[r["j"]],
                                                        args.eta) for r in table.rows])
    print(f"Fisher length / exact over the {len(ratio)} ranked pairs: mean {ratio.mean():.3f}, "
          f"range {ratio.min():.3f}-{ratio.max():.3f}; path 0->1: "
          f"{res.fisher_length / exact_length(gen, latents[0], latents[1], args.eta):.3f}")
    print(f"torch threads {args.threads}; eta {args.eta}; path 0->1: Fisher length "
          f"{res.fisher_length:.3g}, {len(res.jumps)} jumps; best pair "
          f"{table.rows[0]['i']}->{table.rows[0]['j']} (length "
          f"{table.rows[0]['fisher_length']:.3g})")
    print(f"| {'stage':<40} | {'images':>8} | {'seconds':>8} | {'images/s':>9} |")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 10}|{'-' * 11}|")
    for name, n, sec in rows:
        print(f"| {name:<40} | {n:>8} | {sec:>8.2f} | {n / sec:>9.0f} |")


if __name__ == "__main__":
    main()
