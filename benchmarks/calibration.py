"""Calibration of the estimators behind the paper's claims, against exact answers; prints tables.

    python benchmarks/calibration.py

1. Box counting of zoom windows (boundary dimension) at the window sizes the pipeline uses:
   straight lines at 9 angles (exact 1) and Koch-snowflake windows centred on the curve (exact
   log 4 / log 3 = 1.2619), with the refined (quadtree) estimator of ``latentatlas.geometry.zoom``
   and, for comparison, plain box counting of the window's mask with the default box sizes (the
   estimator the pipeline used before: boxes of 2 and 4 cells on a 32-cell window).
2. Lipschitz profiles: ``c + sin(3 t)`` computed in float32 and in float64 (the float32 floor,
   and the slopes read without it); a profile that bends
   (``L = 1 + 1e-3 delta**-0.5``): the slope at the smallest steps against one fit over 7 decades.
3. Geodesic deviation from the chord in metric units: a flat metric (0), the Poincare half-plane
   (``log(R / y0)``), the Gaussian (mu, sigma) Fisher metric (``sqrt 2 log(R / s0)``), and a
   symmetric bump that a straight start cannot leave (1 start against 3).

Everything is deterministic (seed 0 for the random sub-cell offsets of the line windows).

    python benchmarks/calibration.py --digits [--steps 1500]

4. The digits plane (anchors ``digits_latents()[:3]``, a generator trained for ``--steps`` steps,
   cached in ``$LATENTATLAS_CACHE``; the tests use 1500): zoom dimensions at two boundary points
   with the float32 classifier and with its float64 copy, and Lipschitz slopes there.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from latentatlas.geometry.boundaries import box_counting_dimension
from latentatlas.geometry.calibration import (
    KOCH_DIMENSION,
    koch_inside,
    koch_polyline,
    koch_zoom_dimensions,
    line_zoom_dimensions,
)
from latentatlas.geometry.geodesics import geodesic
from latentatlas.geometry.lipschitz import lipschitz_profile
from latentatlas.geometry.zoom import boundary_mask, zoom_series

ANGLES = tuple(np.linspace(0.0, math.pi / 2, 7)) + (2.0, 2.9)
CENTRES = (1, 2, 5, 22, 37)
WIDTHS = (0.3, 0.1, 0.03)


def _plain(label_fn, centre, width: float, resolution: int) -> float:
    """The old estimator: default box sizes on the window's (R, R) boundary mask."""
    offsets = (np.arange(resolution) + 0.5) / resolution - 0.5
    a0, a1 = centre[0] + width * offsets, centre[1] + width * offsets
    grid = np.stack(np.meshgrid(a0, a1, indexing="ij"), -1).reshape(-1, 2)
    mask = boundary_mask(np.asarray(label_fn(grid)).reshape(resolution, resolution))
    return float(box_counting_dimension(mask)[0])


def box_counting() -> None:
    print("## Box counting of zoom windows (refined = quadtree, 3 levels; plain = old default)")
    print(f"{'window':>7} {'set':>28} {'refined min..max':>18} {'max |err|':>9} "
          f"{'unmeasurable':>12} {'plain min..max':>15} {'labels/window':>13}")
    verts = koch_polyline(3)
    rng = np.random.default_rng(0)
    for res in (16, 32, 64, 128):
        lines = line_zoom_dimensions(res, ANGLES, seed=0)
        ok = lines[np.isfinite(lines)]
        plain = []
        for theta in ANGLES:
            nrm = np.array([-math.sin(theta), math.cos(theta)])
            plain.append(_plain(lambda q, n=nrm: (q @ n > 0).astype(int),
                                rng.uniform(-0.5, 0.5, 2) / res, 1.0, res))
        ev = zoom_series(lambda q: (q @ np.array([-0.3, 1.0]) > 0).astype(int), (1e-3, 0.0), 1.0,
                         zooms=(1.0,), resolution=res)[0].evaluations
        rng_txt = f"{ok.min():.3f}..{ok.max():.3f}" if ok.size else "-"
        err = f"{np.abs(ok - 1).max():.3f}" if ok.size else "-"
        print(f"{res:>7} {'lines, 9 angles (exact 1)':>28} {rng_txt:>18} {err:>9} "
              f"{int((~np.isfinite(lines)).sum()):>12} "
              f"{min(plain):.3f}..{max(plain):.3f} {ev:>13}")
        koch = koch_zoom_dimensions(res, CENTRES, WIDTHS)
        ok = koch[np.isfinite(koch)]
        plain = [_plain(koch_inside, verts[c], w, res) for c in CENTRES for w in WIDTHS]
        ev = zoom_series(koch_inside, verts[5], 1.0, zooms=(10.0,), resolution=res)[0].evaluations
        rng_txt = f"{ok.min():.3f}..{ok.max():.3f}" if ok.size else "-"
        err = f"{np.abs(ok - KOCH_DIMENSION).max():.3f}" if ok.size else "-"
        print(f"{res:>7} {'Koch, 5 centres x 3 widths':>28} {rng_txt:>18} {err:>9} "
              f"{int((~np.isfinite(koch)).sum()):>12} "
              f"{min(plain):.3f}..{max(plain):.3f} {ev:>13}")
    print()


def _naive(f, point: np.ndarray, deltas: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Without a floor: L at every step (16 directions), the slope at the 3 smallest steps and the
    old single fit over every step with zero differences clamped to tiny."""
    units = np.stack([np.cos(2 * np.pi * np.arange(16) / 16),
                      np.sin(2 * np.pi * np.arange(16) / 16)], 1)
    probes = (point + deltas[:, None, None] * units[None]).reshape(-1, 2)
    x = np.asarray(f(np.concatenate([point[None], probes])), dtype=np.float64)
    lip = np.linalg.norm(x[1:] - x[0], axis=1).reshape(len(deltas), 16).max(1) / deltas
    logl = np.log(np.maximum(lip, np.finfo(np.float64).tiny))
    tail = np.polyfit(np.log(deltas[-3:]), logl[-3:], 1)[0]
    return lip, float(tail), float(np.polyfit(np.log(deltas), logl, 1)[0])


def lipschitz() -> None:
    print("## Lipschitz profiles (16 directions, floor at 100 eps |x|)")
    point = np.array([0.7, 0.2])
    exact = 3 * max(abs(math.cos(2.1)), abs(math.cos(0.6)))
    print(f"x = c + sin(3 t) at t = (0.7, 0.2): exact L = {exact:.6f} (c shifts |x|, not L)")
    for c in (0.0, 10.0):
        f32 = lambda p, c=c: c + np.sin(3 * p.astype(np.float32))  # noqa: E731
        f64 = lambda p, c=c: c + np.sin(3 * p)  # noqa: E731
        p32, p64 = lipschitz_profile(f32, point), lipschitz_profile(f64, point)
        raw, tail, old = _naive(f32, point, p32.deltas)
        print(f"c = {c:g}")
        print(f"{'delta':>8} {'float32 raw':>12} {'float32':>12} {'float64':>12}")
        for d, r, a, b in zip(p32.deltas, raw, p32.lipschitz, p64.lipschitz):
            print(f"{d:>8.0e} {r:>12.6f} {a:>12.6f} {b:>12.6f}")
        print(f"  float32: floor at delta = {p32.floor_delta:.0e}, slope at the smallest usable "
              f"steps {p32.slope:+.4f}; without the floor: slope at the 3 smallest steps "
              f"{tail:+.4f}, old single clamped fit {old:+.4f}")
        print(f"  float64: floor {p64.floor_delta}, slope {p64.slope:+.2e}")
    cc = np.array([0.3, -0.2])
    bend = lipschitz_profile(
        lambda p: ((p[:, 0] - cc[0]) + 1e-3 * np.abs(p[:, 0] - cc[0]) ** 0.5)[:, None], cc)
    print(f"L = 1 + 1e-3 delta^-0.5: local slopes {np.round(bend.local_slopes, 3).tolist()}; "
          f"slope at the 3 smallest steps {bend.slope:+.3f}, one fit over 7 decades "
          f"{bend.fit_slope:+.3f}")
    print()


def _diag(d0: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
    z = torch.zeros_like(d0)
    return torch.stack([torch.stack([d0, z], -1), torch.stack([z, d1], -1)], -2)


def geodesics() -> None:
    print("## Geodesic deviation from the chord (metric units), 64 points, 3 starts")
    print(f"{'metric':>34} {'deviation':>10} {'exact':>10} {'length':>8} {'exact':>8}")

    def row(name, fn, a, b, dev, length, starts=3):
        g = geodesic(fn, a, b, n=64, starts=starts)
        print(f"{name:>34} {g.deviation:>10.5f} {dev:>10.5f} {g.length:>8.4f} {length:>8.4f}")

    gflat = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=torch.float64)
    d = np.array([3.0, 1.0])
    row("flat (2, .6; .6, 1)", lambda t: gflat.expand(len(t), 2, 2), (-1.0, 0.5), (2.0, 1.5),
        0.0, math.sqrt(d @ gflat.numpy() @ d))
    row("half-plane (-1,.5)-(1,.5)", lambda t: _diag(1 / t[:, 1] ** 2, 1 / t[:, 1] ** 2),
        (-1.0, 0.5), (1.0, 0.5), math.log(math.hypot(1, 0.5) / 0.5), 2 * math.asinh(2.0))
    s0, dmu = 0.6, 2.4
    radius = math.sqrt((dmu / math.sqrt(2) / 2) ** 2 + s0**2)
    row("Gaussian (mu,s) (-1.2,.6)-(1.2,.6)",
        lambda t: _diag(1 / t[:, 1] ** 2, 2 / t[:, 1] ** 2), (-dmu / 2, s0), (dmu / 2, s0),
        math.sqrt(2) * math.log(radius / s0),
        math.sqrt(2) * 2 * math.asinh(dmu / math.sqrt(2) / (2 * s0)))

    def bump(t: torch.Tensor) -> torch.Tensor:
        w = 1 + 8 * torch.exp(-(t**2).sum(1) / 0.1)
        return _diag(w, w)

    for starts in (1, 3):
        g = geodesic(bump, (-1.0, 0.0), (1.0, 0.0), n=48, starts=starts)
        print(f"{'bump, ' + str(starts) + ' start(s)':>34} {g.deviation:>10.5f} {'':>10} "
              f"{g.length:>8.4f} {'':>8}  starts: {np.round(g.start_lengths, 4).tolist()}")


def digits(steps: int) -> None:
    import latentatlas as la
    from latentatlas import planes
    from latentatlas.analyses import plane_tools as T
    from latentatlas.cache import cached
    from latentatlas.features.factory import class_labels

    print(f"## Digits plane (generator trained {steps} steps), 32-cell zoom windows")
    gen = cached(f"digits-generator-{steps}", {"steps": steps},
                 lambda: la.generators.Digits.train_new(progress=False, steps=steps))
    clf = la.features.Classifier.pretrained(progress=False)
    plane = la.sources.LatentPlane(gen, anchors=planes.digits_latents()[:3])
    decode = plane.make_decoder()
    label32 = lambda p: class_labels(clf, torch.as_tensor(decode(p)))  # noqa: E731
    label64 = T.label_fn(plane, clf)  # a float64 copy of the classifier
    (lo0, hi0), (lo1, hi1) = plane.bounds
    a0, a1 = np.linspace(lo0, hi0, 32), np.linspace(lo1, hi1, 32)
    grid = np.stack(np.meshgrid(a0, a1, indexing="ij"), -1).reshape(-1, 2)
    labels = label32(grid).reshape(32, 32)
    width = float(min(hi0 - lo0, hi1 - lo1)) / 4
    zooms = tuple(10.0 ** np.arange(1, 7))
    centres = []
    for seg in T.boundary_points(labels, a0, a1, 2, 0):
        centre = None
        for name, fn in (("float32 classifier", label32), ("float64 classifier", label64)):
            try:
                centre = T.refine_boundary(fn, seg[0], seg[1])
            except ValueError:
                print(f"{name}: no class change on {seg.tolist()}")
                continue
            z = T.plane_zoom(fn, centre, width, zooms, 32)
            print(f"{name} at {np.round(centre, 6).tolist()}: dimensions "
                  f"{np.round(z.dimensions, 3).tolist()} at zooms 1e1..1e6, new structure "
                  f"{z.new_structure.astype(int).tolist()}")
        if centre is not None:  # the float64 labeler's point (else the float32 one)
            centres.append(centre)
    for prof in T.plane_lipschitz(decode, np.reshape(centres, (-1, 2))):
        print(f"Lipschitz at {np.round(prof.point, 6).tolist()}: slope {prof.slope:+.3f}, floor "
              f"{prof.floor_delta}, local slopes {np.round(prof.local_slopes, 3).tolist()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", action="store_true", help="only the digits-plane section")
    parser.add_argument("--steps", type=int, default=1500, help="digits generator training steps")
    args = parser.parse_args()
    if args.digits:
        digits(args.steps)
    else:
        box_counting()
        lipschitz()
        geodesics()
