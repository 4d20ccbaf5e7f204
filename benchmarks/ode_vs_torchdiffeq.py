"""latentatlas.ode vs torchdiffeq: dopri5 forward + adjoint backward on the same neural ODE.

Problem: dz/dt = MLP(z, t) (D -> 64 -> 64 -> D, tanh, time as an input), batch 512, t in [0, 1],
rtol = atol = 1e-5 (and 1e-6), float32 on CPU, one thread. For each side we time (median of
repeats, the two sides interleaved so contention hits both) the forward solve alone (``no_grad``)
and forward + adjoint backward, and count function evaluations (NFE) forward and backward.

Peak memory = peak bytes of tensors saved for backward by autograd that are alive at once (counted
with ``torch.autograd.graph.saved_tensors_hooks``; each packed tensor is wrapped in an object whose
finaliser subtracts its size when autograd frees it). It covers the forward graph and the temporary
graphs built inside the adjoint's backward solve. As a sanity check it also reports the same for
plain backprop through our solver (which grows with the number of steps).

First table: every method both libraries have (dopri5, dopri8, bosh3, fehlberg2, adaptive_heun;
euler, midpoint, heun3, rk4 on their default grid t): NFE and median time ratios ours / theirs
(target <= 1.0), forward and forward + adjoint backward.

Run:  python benchmarks/ode_vs_torchdiffeq.py [--dim 8] [--batch 512] [--repeats 7]
      [--method-tol 1e-4] [--fixed-steps 20] [--only-methods]
"""

from __future__ import annotations

import argparse
import functools
import importlib
import statistics
import time

import torch
import torchdiffeq
from torch import nn

import latentatlas as la


class Field(nn.Module):
    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
            nn.Linear(hidden, dim),
        )
        self.nfe = 0

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        tt = t.to(z.dtype).expand(z.shape[0], 1)
        return self.net(torch.cat([z, tt], dim=1))


class SavedBytes:
    """Context manager: live and peak bytes of autograd-saved tensors."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    class _Held:
        def __init__(self, owner: SavedBytes, t: torch.Tensor) -> None:
            self.owner, self.t = owner, t.detach()  # no cycle t -> grad_fn -> saved t
            self.n = t.numel() * t.element_size()
            owner.live += self.n
            owner.peak = max(owner.peak, owner.live)

        def __del__(self) -> None:
            self.owner.live -= self.n

    def _pack(self, t: torch.Tensor) -> object:
        return SavedBytes._Held(self, t)

    @staticmethod
    def _unpack(h: object) -> torch.Tensor:
        return h.t  # type: ignore[attr-defined]

    def __enter__(self) -> SavedBytes:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)


def run_ours(f, z0, t, tol, backward, adjoint=True, method="dopri5"):
    f.nfe = 0
    ys = la.ode.odeint(f, z0, t, rtol=tol, atol=tol, adjoint=adjoint, method=method)
    nfe_f = f.nfe
    if backward:
        ys[-1].square().sum().backward()
    return nfe_f, f.nfe - nfe_f


def run_theirs(f, z0, t, tol, backward, method="dopri5"):
    f.nfe = 0
    solve = torchdiffeq.odeint_adjoint if backward else torchdiffeq.odeint
    ys = solve(f, z0, t, rtol=tol, atol=tol, method=method)
    nfe_f = f.nfe
    if backward:
        ys[-1].square().sum().backward()
    return nfe_f, f.nfe - nfe_f


def run_theirs_backprop(f, z0, t, tol):
    ys = torchdiffeq.odeint(f, z0, t, rtol=tol, atol=tol, method="dopri5")
    ys[-1].square().sum().backward()


def timed(fn, *args, **kw) -> float:
    start = time.perf_counter()
    fn(*args, **kw)
    return time.perf_counter() - start


def shared_methods() -> list[str]:
    """Methods both libraries offer (adaptive first)."""
    theirs = set(importlib.import_module("torchdiffeq._impl.odeint").SOLVERS)
    both = [m for m in la.ode.METHODS if m in theirs]
    return sorted(both, key=lambda m: (not la.ode.METHODS[m].adaptive, m))


def method_table(f, z0, tol: float, steps: int, repeats: int) -> None:
    """NFE and median wall time per shared method, forward (no_grad) and fwd + adjoint bwd.

    Adaptive methods solve over t = [0, 1] at rtol = atol = ``tol``; fixed-grid methods step over
    the default grid t = linspace(0, 1, steps + 1) (one step per interval, both libraries).
    """
    print(f"every shared method: adaptive at rtol=atol={tol:g} on t=[0,1]; fixed-grid on "
          f"{steps} steps (grid t); median of {repeats}, sides interleaved")
    header = (f"{'method':>14} {'phase':>18} {'NFE ours':>10} {'NFE tdq':>10} {'NFE ratio':>9} "
              f"{'ours ms':>9} {'tdq ms':>9} {'time ratio':>10}")
    print(header)
    print("-" * len(header))
    for method in shared_methods():
        adaptive = la.ode.METHODS[method].adaptive
        t = torch.tensor([0.0, 1.0]) if adaptive else torch.linspace(0.0, 1.0, steps + 1)
        for phase, backward in (("forward (no_grad)", False), ("fwd + adjoint bwd", True)):
            ctx = torch.enable_grad if backward else torch.no_grad
            with ctx():
                nfe_o = run_ours(f, z0, t, tol, backward, method=method)
                nfe_t = run_theirs(f, z0, t, tol, backward, method=method)
                t_ours, t_theirs = [], []
                for _ in range(repeats):
                    t_ours.append(timed(run_ours, f, z0, t, tol, backward, method=method))
                    t_theirs.append(timed(run_theirs, f, z0, t, tol, backward, method=method))
            f.zero_grad()
            mo, mt = statistics.median(t_ours), statistics.median(t_theirs)
            no, nt = sum(nfe_o), sum(nfe_t)
            s_o = f"{nfe_o[0]}+{nfe_o[1]}" if backward else f"{nfe_o[0]}"
            s_t = f"{nfe_t[0]}+{nfe_t[1]}" if backward else f"{nfe_t[0]}"
            print(f"{method:>14} {phase:>18} {s_o:>10} {s_t:>10} {no / nt:9.2f} "
                  f"{1e3 * mo:9.1f} {1e3 * mt:9.1f} {mo / mt:10.2f}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tols", type=float, nargs="+", default=[1e-5, 1e-6])
    parser.add_argument("--method-tol", type=float, default=1e-4,
                        help="tolerance of the every-method table (adaptive methods)")
    parser.add_argument("--fixed-steps", type=int, default=20,
                        help="steps of the fixed-grid methods in the every-method table")
    parser.add_argument("--only-methods", action="store_true",
                        help="print only the every-method table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    f = Field(args.dim)
    # A field with some dynamics: scale the last layer up so the solve takes tens of steps.
    with torch.no_grad():
        f.net[-1].weight.mul_(4.0)
    z0 = torch.randn(args.batch, args.dim)
    t = torch.tensor([0.0, 1.0])
    print(f"neural ODE: D={args.dim}, MLP 64x64 tanh, batch {args.batch}, float32, 1 thread, "
          f"t=[0,1], median of {args.repeats}")
    print()
    method_table(f, z0, args.method_tol, args.fixed_steps, args.repeats)
    if args.only_methods:
        return
    print("dopri5 at several tolerances:")
    header = (f"{'tol':>7} {'phase':>18} {'NFE ours':>9} {'NFE tdq':>8} {'ours ms':>9} "
              f"{'tdq ms':>9} {'ratio':>6}")
    print(header)
    print("-" * len(header))
    for tol in args.tols:
        for phase, backward in (("forward (no_grad)", False), ("fwd + adjoint bwd", True)):
            ctx = torch.enable_grad if backward else torch.no_grad
            with ctx():
                nfe_ours = run_ours(f, z0, t, tol, backward)
                nfe_theirs = run_theirs(f, z0, t, tol, backward)
                t_ours, t_theirs = [], []
                for _ in range(args.repeats):
                    t_ours.append(timed(run_ours, f, z0, t, tol, backward))
                    t_theirs.append(timed(run_theirs, f, z0, t, tol, backward))
            mo, mt = statistics.median(t_ours), statistics.median(t_theirs)
            nfe_o = f"{nfe_ours[0]}+{nfe_ours[1]}" if backward else f"{nfe_ours[0]}"
            nfe_t = f"{nfe_theirs[0]}+{nfe_theirs[1]}" if backward else f"{nfe_theirs[0]}"
            print(f"{tol:7.0e} {phase:>18} {nfe_o:>9} {nfe_t:>8} {1e3 * mo:9.1f} "
                  f"{1e3 * mt:9.1f} {mo / mt:6.2f}")
    f.zero_grad()
    print()
    print("accuracy at equal tolerance: max |z(1) - reference| (float64 copy of the problem;")
    print("reference: our dopri5 at rtol=atol=1e-12, checked against torchdiffeq at 1e-12):")
    f64 = Field(args.dim).double()
    f64.load_state_dict(f.state_dict())
    z64 = z0.double()
    t64 = t.double()
    with torch.no_grad():
        ref = la.ode.odeint(f64, z64, t64, rtol=1e-12, atol=1e-12)[-1]
        ref_tdq = torchdiffeq.odeint(f64, z64, t64, rtol=1e-12, atol=1e-12)[-1]
        print(f"  references differ by {(ref - ref_tdq).abs().max().item():.1e}")
        print(f"  {'tol':>7} {'NFE ours':>9} {'err ours':>9} {'NFE tdq':>8} {'err tdq':>9}")
        for tol in (1e-4, 1e-5, 1e-6, 1e-7, 1e-8):
            ours, st = la.ode.odeint(f64, z64, t64, rtol=tol, atol=tol, return_stats=True)
            f64.nfe = 0
            theirs = torchdiffeq.odeint(f64, z64, t64, rtol=tol, atol=tol)
            e_o = (ours[-1] - ref).abs().max().item()
            e_t = (theirs[-1] - ref).abs().max().item()
            print(f"  {tol:7.0e} {st.nfe:9d} {e_o:9.1e} {f64.nfe:8d} {e_t:9.1e}")
    print()
    print("adjoint gradient accuracy: max |dL/dw - reference| / max |reference| over all")
    print("parameters, L = sum z(1)^2 (float64; reference: adjoint at rtol=atol=1e-11):")

    def param_grad(solve, tol):
        f64.zero_grad()
        ys = solve(f64, z64, t64, rtol=tol, atol=tol)
        ys[-1].square().sum().backward()
        return torch.cat([p.grad.reshape(-1) for p in f64.parameters()])

    ours_solve = functools.partial(la.ode.odeint, adjoint=True)
    g_ref = param_grad(ours_solve, 1e-11)
    g_ref_tdq = param_grad(torchdiffeq.odeint_adjoint, 1e-11)
    scale = g_ref.abs().max().item()
    print(f"  references differ by {(g_ref - g_ref_tdq).abs().max().item() / scale:.1e}")
    print(f"  {'tol':>7} {'err ours':>9} {'err tdq':>9}")
    for tol in (1e-5, 1e-6, 1e-7):
        e_o = (param_grad(ours_solve, tol) - g_ref).abs().max().item() / scale
        e_t = (param_grad(torchdiffeq.odeint_adjoint, tol) - g_ref).abs().max().item() / scale
        print(f"  {tol:7.0e} {e_o:9.1e} {e_t:9.1e}")
    print()
    print("plain backprop through the solver (no adjoint), tol=1e-5, median ms:")
    tol = 1e-5
    t_ours, t_theirs = [], []
    for _ in range(args.repeats):
        t_ours.append(timed(run_ours, f, z0, t, tol, True, adjoint=False))
        t_theirs.append(timed(run_theirs_backprop, f, z0, t, tol))
    mo, mt = statistics.median(t_ours), statistics.median(t_theirs)
    print(f"  ours {1e3 * mo:.1f}  torchdiffeq {1e3 * mt:.1f}  ratio {mo / mt:.2f}")
    f.zero_grad()
    print()
    print("peak bytes of autograd-saved tensors (fwd + bwd), tol=1e-5:")
    tol = 1e-5
    rows = []
    for name, fn in (
        ("latentatlas adjoint", lambda: run_ours(f, z0, t, tol, True)),
        ("torchdiffeq adjoint", lambda: run_theirs(f, z0, t, tol, True)),
        ("latentatlas backprop", lambda: run_ours(f, z0, t, tol, True, adjoint=False)),
        ("torchdiffeq backprop", lambda: run_theirs_backprop(f, z0, t, tol)),
    ):
        with SavedBytes() as sb:
            fn()
        rows.append((name, sb.peak))
    for name, peak in rows:
        print(f"  {name:<22} {peak / 2**20:8.2f} MiB")


if __name__ == "__main__":
    main()
