"""The report of a run folder: static figures from arrays, the interactive page's payload, every
kind of run folder (atlas, latent plane, path) and the ``latentatlas report`` command.

The run folders are written here directly in the run-folder contract (``atlas.npz``,
``config.json``, ``posteriors.npy``, ``analyses.*``, ``images.npy``, ``planes.*``, ``path.npz``)
with closed-form fields, so the report is tested without running the pipeline. The helpers are
shared with ``test_browser.py``.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from latentatlas.report.atlas import plot_field, plot_metric, write_report
from latentatlas.report.interactive import write_page

GAUSS_CONFIG = {"names": ["mu", "sigma"], "source": {
    "class": "latentatlas.sources.gaussian.GaussianFamily", "config": {"coords": "mean_std"}}}


# --------------------------------------------------------------------------------------------------
# run folders in the contract, from closed forms
# --------------------------------------------------------------------------------------------------


def gaussian_fields(axis0: np.ndarray, axis1: np.ndarray) -> dict[str, np.ndarray]:
    """N(mu, sigma^2) in (mu, sigma): log Z of the natural parametrisation expressed in (mu,
    sigma), its gradient, and the EXACT Fisher metric of one sample, diag(1/s^2, 2/s^2)."""
    mu, sg = np.meshgrid(axis0, axis1, indexing="ij")
    metric = np.zeros((*mu.shape, 2, 2))
    metric[..., 0, 0] = 1.0 / sg**2
    metric[..., 1, 1] = 2.0 / sg**2
    return {"potential": mu**2 / (2 * sg**2) + np.log(sg),
            "gradient": np.stack([mu / sg**2, -(mu**2) / sg**3 + 1.0 / sg], axis=-1),
            "metric": metric}


def fisher_rao(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Closed-form Fisher-Rao distance between N(mu1, s1^2) and N(mu2, s2^2) (one sample):
    sqrt(2) arccosh(1 + ((mu1 - mu2)^2 / 2 + (s1 - s2)^2) / (2 s1 s2))."""
    (m1, s1), (m2, s2) = a, b
    return math.sqrt(2.0) * math.acosh(1.0 + ((m1 - m2) ** 2 / 2 + (s1 - s2) ** 2) / (2 * s1 * s2))


def gaussian_run(directory: Path, g0: int = 48, g1: int = 48, posteriors: bool = True,
                 bundle: int = 16) -> Path:
    """A run folder of the Gaussian family over [-1, 1] x [0.5, 2] with the exact metric and
    the exact Bregman posteriors exp(-K D) of bundles of K samples (normalised on the grid)."""
    directory.mkdir(parents=True, exist_ok=True)
    a0, a1 = np.linspace(-1.0, 1.0, g0), np.linspace(0.5, 2.0, g1)
    f = gaussian_fields(a0, a1)
    np.savez(directory / "atlas.npz", names=np.array(["mu", "sigma"]), axis0=a0, axis1=a1, **f)
    (directory / "config.json").write_text(json.dumps(GAUSS_CONFIG))
    if posteriors:
        mu, sg = np.meshgrid(a0, a1, indexing="ij")
        m0, s0 = mu.reshape(-1, 1, 1), sg.reshape(-1, 1, 1)
        # KL(N(mu0, s0^2) || N(mu, s^2)) of one sample, times K
        kl = np.log(sg / s0) + (s0**2 + (m0 - mu) ** 2) / (2 * sg**2) - 0.5
        logp = -bundle * kl
        post = np.exp(logp - logp.max(axis=(1, 2), keepdims=True))
        np.save(directory / "posteriors.npy", post / post.sum(axis=(1, 2), keepdims=True))
    return directory


def plane_run(directory: Path, g: int = 20, image_shape: tuple[int, ...] = (1, 8, 8),
              seed: int = 0) -> Path:
    """A latent-plane run folder: Gaussian geometry, a 4-class label map, images.npy whose
    pixel values encode the grid position, planes.json/planes.npz with a ridge map."""
    gaussian_run(directory, g, g, posteriors=True)
    with np.load(directory / "atlas.npz") as data:
        arrays = {k: data[k] for k in data.files}
    mu, sg = np.meshgrid(arrays["axis0"], arrays["axis1"], indexing="ij")
    labels = (mu > 0).astype(np.int64) + 2 * (sg > 1.25)
    np.savez(directory / "atlas.npz", labels=labels, **arrays)
    rng = np.random.default_rng(seed)
    pattern = rng.random(image_shape)
    brightness = np.linspace(0.1, 0.9, g)[:, None] * np.ones((1, g))
    images = brightness.reshape(g, g, *([1] * len(image_shape))) * pattern
    np.save(directory / "images.npy", images.astype(np.float32))
    vol = np.sqrt(2.0) / sg**2
    ridges = np.zeros((g, g), bool)
    ridges[g // 2, :] = True
    np.savez(directory / "planes.npz", labels=labels, volume_metric=vol, ridges_metric=ridges)
    (directory / "planes.json").write_text(json.dumps(
        {"phase_agreement": {"metric": {"fraction": 0.9, "chance": 0.2}},
         "images_per_second": 1000.0, "tau": 0.1}))
    return directory


def path_run(directory: Path, p: int = 40, image_shape: tuple[int, ...] = (8, 8)) -> Path:
    """A 1-D path run folder: path.npz (s, metric, potential, means, distances, jumps) and the
    images along it."""
    directory.mkdir(parents=True, exist_ok=True)
    s = np.linspace(0.0, 1.0, p)
    metric = 1.0 + 50.0 * np.exp(-((s - 0.5) ** 2) / 0.002)
    means = np.tanh((s - 0.5) * 20)
    distances = np.abs(np.diff(means))
    jumps = np.array([int(np.argmax(distances))])
    np.savez(directory / "path.npz", s=s, metric=metric, potential=np.cumsum(metric) / p,
             means=means, distances=distances, jumps=jumps)
    images = (s.reshape(p, *([1] * len(image_shape)))
              * np.random.default_rng(0).random(image_shape))
    np.save(directory / "images.npy", images)
    (directory / "config.json").write_text(json.dumps(
        {"source": {"class": "latentatlas.sources.latent.LatentPath", "config": {"points": p}}}))
    return directory


def page_payload(index: Path) -> dict:
    """The JSON payload embedded in an index.html."""
    text = index.read_text()
    m = re.search(r"<script type='application/json' id='la-data'>(.*?)</script>", text, re.S)
    assert m is not None
    return json.loads(m.group(1).replace("<\\/", "</"))


def decode(packed: dict) -> np.ndarray:
    dtype = {"f32": "<f4", "f64": "<f8", "i32": "<i4"}[packed["dtype"]]
    return np.frombuffer(base64.b64decode(packed["b64"]), dtype=dtype).reshape(packed["shape"])


def sprite_pixels(images: dict) -> np.ndarray:
    from PIL import Image

    raw = base64.b64decode(images["uri"].split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)))


def _png_ok(path) -> np.ndarray:
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert float(img[..., :3].std()) > 0.01  # not a blank canvas
    return img


# --------------------------------------------------------------------------------------------------
# static figures and the atlas page
# --------------------------------------------------------------------------------------------------


def _natural_fields() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
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
    return axis0, axis1, {"potential": phi, "gradient": grad, "metric": g}


def test_plots_from_arrays(tmp_path):
    a0, a1, f = _natural_fields()
    _png_ok(plot_field(a0, a1, f["potential"], tmp_path / "phi.png", "Phi"))
    # log colour scale with a sign-changing off-diagonal component must still draw
    _png_ok(plot_metric(a0, a1, f["metric"], tmp_path / "g.png"))


def _natural_run(directory: Path) -> tuple[dict[str, np.ndarray], dict]:
    a0, a1, exact = _natural_fields()
    np.savez(directory / "atlas.npz", names=np.array(["theta1", "theta2"]), axis0=a0, axis1=a1,
             potential=exact["potential"] + 0.3 * a0[:, None], gradient=exact["gradient"] * 1.02,
             metric=exact["metric"] * 1.05)
    (directory / "config.json").write_text(json.dumps(
        {"source": {"class": "latentatlas.sources.gaussian.GaussianFamily",
                    "config": {"coords": "natural"}}}))
    shape = exact["potential"].shape
    ridges = np.zeros(shape, bool)
    ridges[4, :] = True
    phases = np.where(np.arange(shape[0])[:, None] < 4, 1, 2) * np.ones(shape, int)
    phases[ridges] = 0
    geo = np.stack([np.linspace(-0.8, 0.8, 20), -1.5 + 0.3 * np.sin(np.linspace(0, np.pi, 20))], 1)
    arrays = {"ridges": ridges, "phases": phases, "geodesic_0": geo,
              "path_s": np.linspace(0, 1, 30), "path_curve_mean0": np.linspace(0, 1, 30) ** 2,
              "path_jumps": np.array([0.5])}
    arrays.update({f"exact_{k}": v for k, v in exact.items()})
    np.savez(directory / "analyses.npz", **arrays)
    accuracy = {"ours": {"g00": 0.012345, "gradient": 0.045678}}
    (directory / "analyses.json").write_text(json.dumps(
        {"accuracy": accuracy, "geodesics": {"lengths": [[1.2, 1.3]]}}))
    return exact, accuracy


def test_write_report_from_run_folder(tmp_path):
    exact, accuracy = _natural_run(tmp_path)
    index = write_report(tmp_path)
    assert index == tmp_path / "report" / "index.html"
    text = index.read_text()
    figures = re.findall(r"data-file='([^']+)'", text)
    assert set(figures) == {"potential.png", "gradient.png", "metric.png", "volume.png",
                            "phases.png", "geodesics.png", "path.png",
                            "exact_vs_reconstructed.png"}
    for name in figures:  # the PNGs stay beside the page (papers need them), embedded in it too
        _png_ok(tmp_path / "report" / name)
    assert len(re.findall(r"<img src='data:image/png;base64,", text)) == len(figures)
    assert "<td>0.0123</td>" in text and "<td>0.0457</td>" in text
    assert "GaussianFamily(coords=natural)" in text
    # self-contained: plotly.js inlined once, nothing loaded from elsewhere
    from plotly.offline import get_plotlyjs

    assert text.count(get_plotlyjs()) == 1
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=['\"]?(https?:|//)", text)
    # rebuilding overwrites in place, same set of files
    write_report(tmp_path)
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(
        [*figures, "index.html"])
    # the payload: the metric exactly as stored; the exact reference and the error maps
    payload = page_payload(index)
    assert payload["kind"] == "atlas" and payload["names"] == ["theta1", "theta2"]
    with np.load(tmp_path / "atlas.npz") as data:
        np.testing.assert_array_equal(decode(payload["metric"]), data["metric"])
        np.testing.assert_array_equal(decode(payload["axis0"]), data["axis0"])
    layers = {L["name"]: L for L in payload["layers"]}
    err = decode(layers["error: g[theta1,theta1] reconstructed - exact"]["values"])
    np.testing.assert_allclose(err, 0.05 * exact["metric"][..., 0, 0], rtol=1e-6)
    vol = np.sqrt(exact["metric"][..., 0, 0] * exact["metric"][..., 1, 1]
                  - exact["metric"][..., 0, 1] ** 2)
    np.testing.assert_allclose(decode(layers["exact: log10 sqrt det g"]["values"]),
                               np.log10(vol), rtol=1e-6)
    np.testing.assert_allclose(decode(layers["error: sqrt det g relative"]["values"]), 0.05,
                               rtol=1e-5)
    assert {"phases", "error: potential (best affine term) - exact"} <= set(layers)
    assert set(payload["ridges"]) == {"boundaries"} and len(payload["geodesics"]) == 1


def test_report_does_not_import_the_atlas_module(tmp_path):
    """The report reads run folders with numpy/json: no import of latentatlas.atlas, neither in
    its source nor at run time."""
    import ast

    import latentatlas.report as report_pkg

    for path in Path(report_pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = "." * node.level + (node.module or "")
                assert not re.fullmatch(r"(\.\.|latentatlas\.)atlas(\..*)?", target), path
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("latentatlas.atlas") for a in node.names), path
    gaussian_run(tmp_path, 8, 8)
    code = ("import sys; import latentatlas; before = set(sys.modules); "
            "from latentatlas.report.atlas import write_report; "
            f"write_report({str(tmp_path)!r}); "
            "bad = [m for m in set(sys.modules) - before if m == 'latentatlas.atlas' or "
            "m.startswith('latentatlas.atlas.')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_posteriors_embedded_exactly_or_thinned_to_the_budget(tmp_path):
    small = gaussian_run(tmp_path / "small", 12, 10)
    payload = page_payload(write_page(small))
    post = payload["posteriors"]
    full = np.load(small / "posteriors.npy")
    assert post["pool"] == 1 and post["index0"] == list(range(12))
    np.testing.assert_allclose(decode(post["values"]).reshape(full.shape), full, rtol=1e-6,
                               atol=1e-12)
    big = gaussian_run(tmp_path / "big", 48, 48)
    payload = page_payload(write_page(big, posterior_budget=200_000))
    post = payload["posteriors"]
    values = decode(post["values"])
    assert values.size <= 200_000 and post["pool"] > 1
    full = np.load(big / "posteriors.npy")
    sm = post["pool"]
    for a, b in [(0, 0), (3, 7), (len(post["index0"]) - 1, len(post["index1"]) - 1)]:
        p = full[post["index0"][a] * 48 + post["index1"][b]]
        m = (48 // sm) * sm
        pooled = p[:m, :m].reshape(m // sm, sm, m // sm, sm).sum(axis=(1, 3))
        np.testing.assert_allclose(values[a, b], pooled, rtol=1e-6, atol=1e-12)
    # pooled maps keep almost all of the mass (the posterior is inside the grid)
    assert abs(float(values[3, 7].sum()) - 1.0) < 1e-3


def test_plane_run_report(tmp_path):
    run = plane_run(tmp_path, g=20, image_shape=(3, 96, 80))
    index = write_report(run)
    payload = page_payload(index)
    assert payload["kind"] == "plane"
    assert (run / "report" / "images.html").is_file()
    assert (run / "report" / "plane_phases.png").is_file()
    assert (run / "report" / "plane_montage.png").is_file()
    assert "images.html" in index.read_text()
    images = payload["images"]
    # 96 x 80 colour images block-averaged by 2 (the longest side to at most 64)
    assert images["tile"] == [48, 40] and images["colour"]
    assert images["index0"] == list(range(20)) and images["index1"] == list(range(20))
    sheet = sprite_pixels(images)
    assert sheet.shape == (20 * 48, 20 * 40, 3)
    img = np.moveaxis(np.load(run / "images.npy")[7, 3], 0, -1)
    expected = img.reshape(48, 2, 40, 2, 3).mean(axis=(1, 3))
    tile = sheet[7 * 48:8 * 48, 3 * 40:4 * 40] / 255.0
    assert np.max(np.abs(tile - expected)) <= 0.5 / 255 + 1e-6
    np.testing.assert_array_equal(decode(payload["labels"]),
                                  np.load(run / "atlas.npz")["labels"])
    # a smaller cap for large generators
    payload = page_payload(write_page(run, thumbnail=16))
    assert payload["images"]["tile"] == [16, 13]  # factor 6: 96 // 6, 80 // 6


def test_plane_run_report_has_images_page_and_interactive_page(tmp_path):
    """The pipeline's report stage (``write_report``, as ``planes.analyze`` runs it) draws
    images.html from the run folder's files and the interactive page links to it."""
    from latentatlas.report.atlas import write_report

    run = plane_run(tmp_path, g=8, image_shape=(8, 8))
    write_report(run)
    assert (run / "report" / "images.html").is_file()
    payload = page_payload(run / "report" / "index.html")
    assert payload["kind"] == "plane" and payload["images"]["tile"] == [8, 8]
    assert "href='images.html'" in (run / "report" / "index.html").read_text()


def test_thumbnail_caps_for_large_generators(tmp_path, monkeypatch):
    from latentatlas.report import interactive

    run = gaussian_run(tmp_path, 3, 3, posteriors=False)
    big = np.random.default_rng(0).random((3, 3, 3, 512, 512), dtype=np.float32)  # SD-sized
    np.save(run / "images.npy", big)
    assert page_payload(write_page(run))["images"]["tile"] == [64, 64]  # 512 / 8
    images = page_payload(write_page(run, thumbnail=48))["images"]
    assert images["tile"] == [46, 46]  # block of 11 pixels: 512 // 11
    tile = sprite_pixels(images)[46:92, 0:46] / 255.0
    expected = np.moveaxis(big[1, 0, :, :506, :506], 0, -1).reshape(46, 11, 46, 11, 3)
    assert np.max(np.abs(tile - expected.mean(axis=(1, 3)))) <= 0.5 / 255 + 1e-6
    # the sprite sheet is capped: grid points are thinned to fit SPRITE_SIDE
    small = gaussian_run(tmp_path / "grid", 20, 20, posteriors=False)
    np.save(small / "images.npy", np.zeros((20, 20, 8, 8)))
    monkeypatch.setattr(interactive, "SPRITE_SIDE", 64)
    images = page_payload(write_page(small))["images"]
    assert images["index0"] == images["index1"] == list(range(0, 20, 3))


def test_plane_greyscale_thumbnails_dark_on_light(tmp_path):
    run = plane_run(tmp_path, g=6, image_shape=(1, 8, 8))
    images = page_payload(write_report(run))["images"]
    sheet = sprite_pixels(images)
    assert images["tile"] == [8, 8] and not images["colour"]
    img = np.load(run / "images.npy")[2, 5, 0]
    np.testing.assert_allclose(sheet[16:24, 40:48] / 255.0, 1.0 - img, atol=0.5 / 255 + 1e-6)


def test_path_run_report(tmp_path):
    run = path_run(tmp_path, p=40)
    index = write_report(run)
    payload = page_payload(index)
    assert payload["kind"] == "path"
    with np.load(run / "path.npz") as data:
        np.testing.assert_array_equal(decode(payload["s"]), data["s"])
        np.testing.assert_array_equal(decode(payload["metric"]), data["metric"])
        assert payload["jumps"] == data["jumps"].tolist()
    assert payload["images"]["index1"] == list(range(40)) and payload["images"]["tile"] == [8, 8]
    _png_ok(run / "report" / "path.png")
    assert "data-file='path.png'" in index.read_text()


def test_write_report_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="run_dir"):
        write_report(tmp_path)
    gaussian_run(tmp_path, 6, 6, posteriors=False)
    with pytest.raises(ValueError, match="thumbnail"):
        write_report(tmp_path, thumbnail=0)
    with pytest.raises(ValueError, match="posterior_budget"):
        write_page(tmp_path, posterior_budget=0)
    assert page_payload(write_report(tmp_path))["posteriors"] is None


def test_cli_report(tmp_path, monkeypatch, capsys):
    from latentatlas.cli import main

    def run(*args: str) -> int:
        try:
            main(list(args))
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0

    assert run("report", str(tmp_path / "missing")) == 2
    assert "no folder" in capsys.readouterr().err
    assert run("report", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no atlas.npz or path.npz" in err
    gaussian_run(tmp_path, 6, 6)
    assert run("report", str(tmp_path), "--thumbnail", "0") == 2
    assert "--thumbnail" in capsys.readouterr().err
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url, *a, **k: opened.append(url) or True)
    assert run("report", str(tmp_path)) == 0
    assert opened == [] and "index.html" in capsys.readouterr().out
    assert run("report", str(tmp_path), "--open") == 0
    assert opened == [(tmp_path / "report" / "index.html").resolve().as_uri()]
