"""Atlas container, save/load, compare, run folder; end-to-end on the Gaussian family."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from latentatlas.atlas import ATLAS_KEYS, Atlas, RunFolder, compare, error_maps, load


def _quadratic_atlas(g0: int = 12, g1: int = 9) -> Atlas:
    """Phi = t^T A t / 2 + b.t: gradient A t + b, constant metric A (exact, by hand)."""
    axis0 = np.linspace(-1.0, 2.0, g0)
    axis1 = np.linspace(0.5, 1.5, g1)
    a, b = np.meshgrid(axis0, axis1, indexing="ij")
    A = np.array([[2.0, 0.3], [0.3, 1.0]])
    t = np.stack([a, b], -1)
    phi = 0.5 * np.einsum("...i,ij,...j->...", t, A, t) + 0.1 * a
    grad = t @ A.T + np.array([0.1, 0.0])
    metric = np.broadcast_to(A, (g0, g1, 2, 2)).copy()
    return Atlas(names=("a", "b"), axis0=axis0, axis1=axis1, potential=phi, gradient=grad,
                 metric=metric, config={"note": "quadratic", "nested": {"x": [1, 2]}})


def test_save_load_round_trip_exact_keys_no_pickle(tmp_path):
    atlas = _quadratic_atlas()
    path = atlas.save(tmp_path / "run")
    assert path.name == "atlas.npz"
    with zipfile.ZipFile(path) as zf:
        assert sorted(n[:-4] for n in zf.namelist()) == sorted(ATLAS_KEYS)
    with np.load(path, allow_pickle=False) as data:  # raises if anything needs pickle
        assert data["names"].dtype.kind == "U"
        for key in ATLAS_KEYS:
            assert data[key] is not None
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg == {"note": "quadratic", "nested": {"x": [1, 2]}}
    back = load(tmp_path / "run")
    assert back.names == ("a", "b")
    for key in ("axis0", "axis1", "potential", "gradient", "metric"):
        np.testing.assert_array_equal(getattr(back, key), getattr(atlas, key))
    assert back.config == atlas.config
    assert back.potential_model is None


def test_load_rejects_unexpected_keys(tmp_path):
    atlas = _quadratic_atlas()
    arrays = atlas.arrays()
    arrays["extra"] = np.zeros(3)
    np.savez(tmp_path / "atlas.npz", **arrays)
    with pytest.raises(ValueError, match="unexpected \\['extra'\\]"):
        load(tmp_path)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nowhere")


def test_atlas_validates_shapes():
    atlas = _quadratic_atlas()
    with pytest.raises(ValueError, match="metric: expected shape \\(12, 9, 2, 2\\)"):
        Atlas(names=("a", "b"), axis0=atlas.axis0, axis1=atlas.axis1, potential=atlas.potential,
              gradient=atlas.gradient, metric=atlas.metric[:, :, :1])
    with pytest.raises(ValueError, match="axis0: expected finite, strictly increasing"):
        Atlas(names=("a", "b"), axis0=atlas.axis0[::-1], axis1=atlas.axis1,
              potential=atlas.potential, gradient=atlas.gradient, metric=atlas.metric)
    bad = atlas.metric.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="metric: expected finite values"):
        Atlas(names=("a", "b"), axis0=atlas.axis0, axis1=atlas.axis1, potential=atlas.potential,
              gradient=atlas.gradient, metric=bad)


def test_volume_element_and_metric_at_interpolation():
    atlas = _quadratic_atlas()
    # det A = 2 - 0.09 = 1.91
    np.testing.assert_allclose(atlas.volume_element(), np.sqrt(1.91), rtol=1e-12)
    # bilinear interpolation of a constant field is exact
    g = atlas.metric_at(np.array([[0.3, 0.7], [2.0, 1.5]]))
    np.testing.assert_allclose(g, np.broadcast_to(atlas.metric[0, 0], (2, 2, 2)), rtol=1e-12)
    # a metric linear in t is interpolated exactly too
    a, _ = np.meshgrid(atlas.axis0, atlas.axis1, indexing="ij")
    atlas.metric = atlas.metric * (1.0 + 0.1 * a)[..., None, None]
    g = atlas.metric_at(np.array([0.25, 1.0]))
    np.testing.assert_allclose(g, atlas.metric[0, 0] / (1.0 + 0.1 * atlas.axis0[0]) * 1.025,
                               rtol=1e-12)
    with pytest.raises(ValueError, match="t: expected points inside the atlas bounds"):
        atlas.metric_at(np.array([[3.0, 1.0]]))


def test_boundaries_find_a_metric_ridge():
    atlas = _quadratic_atlas(20, 20)
    a, _ = np.meshgrid(atlas.axis0, atlas.axis1, indexing="ij")
    # the metric jumps by 50x along the line a = 0.5 (a Gaussian ridge 0.1 wide)
    atlas.metric = atlas.metric * (1 + 50 * np.exp(-((a - 0.5) ** 2) / 0.01))[..., None, None]
    mask = atlas.boundaries()
    rows = np.unique(np.nonzero(mask)[0])
    assert rows.size == 1 and abs(atlas.axis0[rows[0]] - 0.5) <= np.diff(atlas.axis0)[0]
    assert mask[rows[0]].sum() == atlas.shape[1]  # the whole line


def test_compare_zero_for_identical_and_known_values():
    atlas = _quadratic_atlas()
    ref = {"potential": atlas.potential.copy(), "gradient": atlas.gradient.copy(),
           "metric": atlas.metric.copy()}
    # the metric is constant, so its range is 0: use a varying one for the metric checks
    a, b = np.meshgrid(atlas.axis0, atlas.axis1, indexing="ij")
    ref["metric"] = ref["metric"] * (1.0 + a**2 + b)[..., None, None]
    atlas.metric = ref["metric"].copy()
    out = compare(atlas, ref)
    for key in ("potential", "gradient", "gradient0", "gradient1", "g00", "g01", "g11"):
        assert out[key] == pytest.approx(0.0, abs=1e-12), key

    # an affine term in Phi and a constant in grad Phi are invisible
    shifted = {"potential": atlas.potential + 3.0 - 2.0 * a + 5.0 * b,
               "gradient": atlas.gradient + np.array([7.0, -1.0]), "metric": atlas.metric}
    out = compare(shifted, ref, axes=(atlas.axis0, atlas.axis1))
    assert out["potential"] == pytest.approx(0.0, abs=1e-10)
    assert out["gradient"] == pytest.approx(0.0, abs=1e-12)

    # a known residual: Phi + eps * r with r orthogonal to affine functions (r = a^2 - fit)
    r = a**2
    design = np.stack([np.ones(a.size), a.ravel(), b.ravel()], 1)
    coef, *_ = np.linalg.lstsq(design, r.ravel(), rcond=None)
    resid = r - (design @ coef).reshape(r.shape)
    eps = 0.05
    out = compare({"potential": atlas.potential + eps * r + 1.0 + a}, ref,
                  axes=(atlas.axis0, atlas.axis1))
    expected = eps * np.sqrt(np.mean(resid**2)) / np.ptp(ref["potential"])
    assert out["potential"] == pytest.approx(expected, rel=1e-10)

    # gradient + constant + a zero-mean bump: only the bump counts, per component
    bump = np.sin(np.pi * (a - a.min()) / np.ptp(a))
    bump = bump - bump.mean()
    grad = atlas.gradient.copy()
    grad[..., 1] += 4.0 + 0.2 * bump
    out = compare({"gradient": grad}, ref)
    assert out["gradient0"] == pytest.approx(0.0, abs=1e-12)
    expected1 = 0.2 * np.sqrt(np.mean(bump**2)) / np.ptp(ref["gradient"][..., 1])
    assert out["gradient1"] == pytest.approx(expected1, rel=1e-10)
    assert out["gradient"] == pytest.approx(expected1 / np.sqrt(2), rel=1e-10)

    # metric: absolute units, no rescaling: 10 % too large everywhere
    out = compare({"metric": 1.1 * ref["metric"]}, ref)
    for i, j in ((0, 0), (0, 1), (1, 1)):
        comp = ref["metric"][..., i, j]
        assert out[f"g{i}{j}"] == pytest.approx(0.1 * np.sqrt(np.mean(comp**2)) / np.ptp(comp),
                                                rel=1e-10)
    maps = error_maps({"metric": 1.1 * ref["metric"]}, ref)
    np.testing.assert_allclose(maps["g00"], 0.1 * np.abs(ref["metric"][..., 0, 0])
                               / np.ptp(ref["metric"][..., 0, 0]))


def test_run_folder_refuses_another_config(tmp_path):
    import latentatlas as la
    from latentatlas.atlas import RunConfig

    src = la.sources.GaussianFamily()
    cfg = RunConfig.make(src, resolution=8, seed=1)
    run = RunFolder(tmp_path / "run", cfg, source=src)
    (tmp_path / "run" / "atlas.npz").write_bytes(b"x")
    assert run.done("atlas", ("atlas.npz",)) and not run.done("sample", ("store.zarr",))
    before = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(ValueError, match="holds a run with another config \\(seed=1 there vs 2 "
                                         "here"):
        RunFolder(tmp_path / "run", cfg.replace(seed=2))
    assert (tmp_path / "run" / "config.json").read_text() == before
    # the package version does not count; force recomputes
    assert not RunFolder(tmp_path / "run", cfg.replace(version="9"), force=True).done(
        "atlas", ("atlas.npz",))
    # a folder with outputs but no config is not adopted
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "store.zarr").mkdir()
    with pytest.raises(ValueError, match="holds run outputs but no config.json"):
        RunFolder(tmp_path / "other", cfg, outputs=("store.zarr",))


def test_run_config_round_trips_and_rebuilds_the_source(tmp_path):
    import latentatlas as la
    from latentatlas.atlas import RunConfig, source_from_config

    src = la.sources.Ising2D(L=6, coords="natural", algorithm="wolff")
    cfg = RunConfig.make(src, resolution=(8, 6), samples_per_point=8, bundle=2, seed=3)
    back = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.differences(cfg) == []
    assert back.bounds == ((0.25, 0.65), (-0.3, 0.3))  # the source's own defaults
    rebuilt = source_from_config(back)
    assert type(rebuilt) is la.sources.Ising2D and rebuilt.fingerprint() == src.fingerprint()
    with pytest.raises(ValueError, match="not a latentatlas source"):
        source_from_config({"source": {"class": "os.system", "config": {}}})


def test_source_posterior_defaults_go_to_their_estimator():
    """``posterior`` is for the source's default estimator, ``posterior_for[name]`` for another;
    the user's options are merged over them, and an estimator in neither gets only the user's."""
    import latentatlas as la
    from latentatlas.atlas import RunConfig

    class Tuned(la.sources.GaussianFamily):
        def atlas_defaults(self):
            out = super().atlas_defaults()
            out["posterior"] = {"fit": {"steps": 7}}
            out["posterior_for"] = {"flow": {"fit": {"steps": 9, "lr": 0.5}}}
            return out

    src = Tuned()
    assert RunConfig.make(src).posterior_options == {"fit": {"steps": 7}}
    assert RunConfig.make(src, estimator="flow").posterior_options == {
        "fit": {"steps": 9, "lr": 0.5}}
    assert RunConfig.make(src, estimator="flow", posterior_options={"fit": {"lr": 0.1}}
                          ).posterior_options == {"fit": {"steps": 9, "lr": 0.1}}
    assert RunConfig.make(src, estimator="kernel").posterior_options == {}


@pytest.mark.slow
def test_end_to_end_gaussian_recovers_closed_form_metric(tmp_path):
    """The pipeline's sanity case: N(mu, sigma^2) in natural coordinates, 16 x 16 grid.

    log Z, its gradient and the metric are known in closed form (GaussianFamily.reference).
    """
    import latentatlas as la
    from latentatlas.atlas import build, exact_reference

    source = la.sources.GaussianFamily(coords="natural")
    atlas = build(source, resolution=16, samples_per_point=256, bundle=16, posterior_repeats=8,
                  seed=0, out=tmp_path, progress=False, analyses=False, report=False,
                  posterior_options={"fit": {"steps": 500}}, potential_options={"steps": 600})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["config.json", "source.safetensors", "store.zarr", "posterior.safetensors",
         "posteriors.npy",
         "potential.safetensors", "potential_history.json", "atlas.npz", "timings.json",
         "posterior.ckpt", "potential.ckpt", "posterior_diagnostics.json"])
    ref = exact_reference(source, atlas.axis0, atlas.axis1)
    acc = compare(atlas, ref)
    print(acc)
    # Tolerances: this config measured gradient 0.024, g00 0.153, g01 0.035, g11 0.087,
    # sqrt(det g) 0.18 (seed 0). The error floor: the posterior centres scatter by
    # sqrt(K / S_eff) ~ 0.5 posterior widths with S = 256, and the grid posterior is truncated at
    # the edge of the box (theta2 -> -0.25, |theta1| -> 2) where the metric is largest; with
    # the exact Bregman posteriors instead of estimated ones the fit reaches g00 0.05, g11 0.05.
    # The bounds are ~2x the measurement (seed-to-seed and BLAS variation); a metric off by a
    # factor 2 (e.g. probability-averaged posteriors, or a wrong K) gives g00 >= 0.33.
    assert acc["gradient"] < 0.06
    assert acc["g01"] < 0.1 and acc["g11"] < 0.2 and acc["g00"] < 0.3
    assert acc["sqrt_det_g"] < 0.35
    # absolute scale (restored from before 64bd4e9): no rescaling anywhere, so the interior median
    # ratio of each diagonal component to the closed form is within 15 % (measured 0.882 / 0.882
    # with held-out maps, seed 0; gradient 0.035, g00 0.140, g01 0.038, g11 0.087)
    for i in (0, 1):
        ratio = np.median(atlas.metric[2:-2, 2:-2, i, i] / ref["metric"][2:-2, 2:-2, i, i])
        assert 0.85 < ratio < 1.15, (i, ratio, acc)
    # the saved atlas reloads with its potential and gives the same metric through metric_at
    back = load(tmp_path)
    assert back.potential_model is not None
    np.testing.assert_allclose(back.metric_at(atlas.params()[:5]),
                               atlas.metric.reshape(-1, 2, 2)[:5], rtol=1e-5, atol=1e-8)


def test_posterior_gap_exact_values():
    from latentatlas.atlas.compare import posterior_gap

    # spacing 0.1 and >= 7.5 std to each edge: the grid covariance of a bump equals s^2 to
    # ~1e-12 (truncation exp(-7.5^2 / 2), discretisation exp(-2 pi^2 s^2 / h^2) with s >= 0.2)
    a0, a1 = np.linspace(-6, 6, 121), np.linspace(-4, 4, 81)
    t0, t1 = np.meshgrid(a0, a1, indexing="ij")

    def bump(s0: float, s1: float) -> np.ndarray:
        p = np.exp(-0.5 * (t0 / s0) ** 2 - 0.5 * (t1 / s1) ** 2)
        return p / p.sum()

    seen = np.stack([bump(0.3, 0.2), bump(0.4, 0.3)])
    gap = posterior_gap(seen, seen, a0, a1)
    assert gap == {"points": 2, "jsd_mean": 0.0, "metric_ratio": 1.0}
    # held-out maps twice as wide on axis 0 and 1.5 times on axis 1: volume ratio 2 * 1.5 = 3
    held = np.stack([bump(0.6, 0.3), bump(0.8, 0.45)])
    gap = posterior_gap(seen, held, a0, a1)
    assert gap["metric_ratio"] == pytest.approx(3.0, rel=1e-6)
    assert 0 < gap["jsd_mean"] < np.log(2)
    with pytest.raises(ValueError, match="held_out"):
        posterior_gap(seen, held[:1], a0, a1)
