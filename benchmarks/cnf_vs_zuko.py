"""latentatlas CNF vs zuko CNF: the same vector field, log_prob and sampling wall time.

Both flows use an MLP (features + time [+ context]) -> 64 -> 64 -> features with ELU, 3 sinusoidal
time frequencies, dopri5 with rtol = 1e-5 and atol = 1e-6 (zuko's defaults), the exact trace, eval
mode, no autograd. Our field is given zuko's weights (zuko integrates data at t = 0 -> base at
t = 1, we integrate base at t = 0 -> data at t = 1, so our field is f(z, s) = -f_zuko(z, 1 - s)): both
compute the same density, and the script checks that their log-densities agree.

Differences that remain: the error norm of the adaptive step (zuko: max over entries, with the
log-determinant scaled by 1e-2; ours: ``--norm max`` (CNF's default since issue 11), max over all
entries, log-determinant unscaled, or ``--norm rms``, RMS per state component, max over
components, the norm before issue 11 and of the README numbers up to then), and how the
exact trace is computed (zuko: a vmapped reverse-mode Jacobian; ours: a forward-mode Jacobian pass
through the MLP). NFE = vector-field evaluations of one solve; ratio/NFE = ratio of the wall time
per vector-field evaluation (separates the solver's step count from the cost of one evaluation).

Run: python benchmarks/cnf_vs_zuko.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import zuko

import latentatlas as la


def build(
    features: int, context: int, seed: int, norm: str = "max"
) -> tuple[zuko.flows.CNF, la.flows.CNF]:
    torch.manual_seed(seed)
    zf = zuko.flows.CNF(features, context, freqs=3, rtol=1e-5, atol=1e-6, hidden_features=(64, 64))
    with torch.no_grad():  # a less trivial field than the default init
        for p in zf.parameters():
            p.mul_(2.0)
    ours = la.flows.CNF(features, context, hidden=(64, 64), activation="elu", freqs=3,
                        rtol=1e-5, atol=1e-6, norm=norm)
    zl = [m for m in zf.transform.ode if hasattr(m, "weight")]
    ol = list(ours.transform.field.layers)
    f, d = 3, features
    k = torch.arange(1, f + 1)
    sign_cos = (-1.0) ** k  # cos(k pi (1 - s)) = (-1)^k cos(k pi s)
    sign_sin = -((-1.0) ** k)  # sin(k pi (1 - s)) = -(-1)^k sin(k pi s)
    with torch.no_grad():
        w = zl[0].weight  # zuko columns: [cos (f), sin (f), x (d), c]
        o = ol[0].weight  # ours: [z (d), t, cos (f), sin (f), c]
        o.zero_()
        o[:, :d] = w[:, 2 * f : 2 * f + d]
        o[:, d + 1 : d + 1 + f] = w[:, :f] * sign_cos
        o[:, d + 1 + f : d + 1 + 2 * f] = w[:, f : 2 * f] * sign_sin
        o[:, d + 1 + 2 * f :] = w[:, 2 * f + d :]
        ol[0].bias.copy_(zl[0].bias)
        for a, b in zip(zl[1:], ol[1:]):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
        ol[-1].weight.neg_()
        ol[-1].bias.neg_()
    return zf.eval(), ours.eval()


def count_zuko_nfe(zf: zuko.flows.CNF) -> list[int]:
    counter = [0]
    transform = zf.transform
    original = transform.f

    def counted(*args, **kwargs):
        counter[0] += 1
        return original(*args, **kwargs)

    transform.f = counted
    return counter


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_case(
    features: int, context: int, batch: int, repeats: int, norm: str = "max"
) -> list[tuple]:
    """Time log_prob and sampling of both flows for one (D, C); returns table rows."""
    rows = []
    zf, ours = build(features, context, seed=features + context, norm=norm)
    counter = count_zuko_nfe(zf)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, features, generator=gen)
    c = torch.randn(batch, context, generator=gen) if context else None
    with torch.no_grad():
        lp_z = (zf(c) if c is not None else zf()).log_prob(x)
        lp_o = ours.log_prob(x, c)
    agree = float((lp_z - lp_o).abs().max())

    def z_lp():
        with torch.no_grad():
            (zf(c) if c is not None else zf()).log_prob(x)

    def o_lp():
        with torch.no_grad():
            ours.log_prob(x, c)

    def z_sample():
        with torch.no_grad():
            if c is None:
                zf().sample((batch,))
            else:
                zf(c[:1]).sample((batch,))

    def o_sample():
        with torch.no_grad():
            ours.sample(batch, c[:1] if c is not None else None)

    for name, zfn, ofn in (("log_prob", z_lp, o_lp), ("sample", z_sample, o_sample)):
        zfn(), ofn()  # warm up
        counter[0] = 0
        zfn()
        nfe_z = counter[0]
        ofn()
        nfe_o = ours.transform.stats.nfe
        tz = timed(zfn, repeats)
        to = timed(ofn, repeats)
        rows.append((f"D={features} C={context}", name, to, tz, to / tz, nfe_o, nfe_z, agree))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--norm", default="max", choices=["max", "rms"], help="our error norm")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for features, context in ((2, 0), (8, 0), (2, 3)):
        rows += run_case(features, context, args.batch, args.repeats, args.norm)

    print(f"CNF: latentatlas vs zuko {zuko.__version__} (batch {args.batch}, MLP 64-64 ELU, "
          f"dopri5 rtol 1e-5 atol 1e-6, exact trace, {args.threads} thread(s), "
          f"median of {args.repeats})")
    head = f"{'case':<11} {'op':<9} {'ours [s]':>9} {'zuko [s]':>9} {'ratio':>6} " \
           f"{'NFE ours':>8} {'NFE zuko':>8} {'ratio/NFE':>9} {'max|dlogp|':>10}"
    print(head)
    print("-" * len(head))
    for case, op, to, tz, ratio, nfe_o, nfe_z, agree in rows:
        per_nfe = (to / nfe_o) / (tz / nfe_z)
        print(f"{case:<11} {op:<9} {to:9.4f} {tz:9.4f} {ratio:6.2f} {nfe_o:8d} {nfe_z:8d} "
              f"{per_nfe:9.2f} {agree:10.1e}")


if __name__ == "__main__":
    main()
