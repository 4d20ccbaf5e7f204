"""The atlas report: figures from arrays, and the HTML page of a run folder."""

from __future__ import annotations

import json
import re

import numpy as np
from matplotlib.image import imread

from latentatlas.atlas import Atlas, compare
from latentatlas.report.atlas import plot_field, plot_metric, write_report


def _gaussian_like_atlas() -> tuple[Atlas, dict[str, np.ndarray]]:
    """Fields of N(mu, s^2) in natural coordinates t = (mu/s^2, -1/(2 s^2)) (closed form)."""
    axis0 = np.linspace(-1.0, 1.0, 10)
    axis1 = np.linspace(-2.0, -0.5, 8)
    t0, t1 = np.meshgrid(axis0, axis1, indexing="ij")
    phi = -(t0**2) / (4 * t1) + 0.5 * np.log(-np.pi / t1)
    grad = np.stack([-t0 / (2 * t1), t0**2 / (4 * t1**2) - 1 / (2 * t1)], -1)
    g = np.empty((*t0.shape, 2, 2))
    g[..., 0, 0] = -1 / (2 * t1)
    g[..., 0, 1] = g[..., 1, 0] = t0 / (2 * t1**2)
    g[..., 1, 1] = -(t0**2) / (2 * t1**3) + 1 / (2 * t1**2)
    exact = {"potential": phi, "gradient": grad, "metric": g}
    atlas = Atlas(names=("theta1", "theta2"), axis0=axis0, axis1=axis1, potential=phi + 0.3 * t0,
                  gradient=grad * 1.02, metric=g * 1.05,
                  config={"source": {"class": "latentatlas.sources.gaussian.GaussianFamily",
                                     "config": {"coords": "natural"}}})
    return atlas, exact


def _png_ok(path) -> np.ndarray:
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert float(img[..., :3].std()) > 0.01  # not a blank canvas
    return img


def test_plots_from_arrays(tmp_path):
    atlas, _ = _gaussian_like_atlas()
    _png_ok(plot_field(atlas.axis0, atlas.axis1, atlas.potential, tmp_path / "phi.png", "Phi"))
    # log colour scale with a sign-changing off-diagonal component must still draw
    _png_ok(plot_metric(atlas.axis0, atlas.axis1, atlas.metric, tmp_path / "g.png"))


def test_write_report_from_run_folder(tmp_path):
    atlas, exact = _gaussian_like_atlas()
    atlas.save(tmp_path)
    acc = {"ours": compare(atlas, exact)}
    # 5 % too large metric in absolute units: nRMSE = 0.05 * rms(g) / range(g) per component
    g00 = exact["metric"][..., 0, 0]
    assert acc["ours"]["g00"] == np.float64(0.05 * np.sqrt(np.mean(g00**2)) / np.ptp(g00)).item() \
        or abs(acc["ours"]["g00"] - 0.05 * np.sqrt(np.mean(g00**2)) / np.ptp(g00)) < 1e-12
    ridges = np.zeros(atlas.shape, bool)
    ridges[4, :] = True
    phases = np.where(np.arange(atlas.shape[0])[:, None] < 4, 1, 2) * np.ones(atlas.shape, int)
    phases[ridges] = 0
    geo = np.stack([np.linspace(-0.8, 0.8, 20), -1.5 + 0.3 * np.sin(np.linspace(0, np.pi, 20))], 1)
    arrays = {"ridges": ridges, "phases": phases, "geodesic_0": geo,
              "path_s": np.linspace(0, 1, 30), "path_curve_mean0": np.linspace(0, 1, 30) ** 2,
              "path_jumps": np.array([0.5])}
    for key, value in exact.items():
        arrays[f"exact_{key}"] = value
    np.savez(tmp_path / "analyses.npz", **arrays)
    (tmp_path / "analyses.json").write_text(json.dumps(
        {"accuracy": acc, "geodesics": {"lengths": [[1.2, 1.3]]}}))
    index = write_report(tmp_path)
    assert index == tmp_path / "report" / "index.html"
    text = index.read_text()
    images = re.findall(r"<img src='([^']+)'", text)
    assert set(images) == {"potential.png", "gradient.png", "metric.png", "volume.png",
                           "phases.png", "geodesics.png", "path.png",
                           "exact_vs_reconstructed.png"}
    for name in images:
        _png_ok(tmp_path / "report" / name)
    # the accuracy table shows the compare() numbers (4 decimals)
    assert f"<td>{acc['ours']['g00']:.4f}</td>" in text
    assert f"<td>{acc['ours']['gradient']:.4f}</td>" in text
    assert "GaussianFamily(coords=natural)" in text
    # rebuilding overwrites in place, same set of files
    write_report(tmp_path)
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(
        [*images, "index.html"])
