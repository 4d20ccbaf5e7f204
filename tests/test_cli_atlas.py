"""The `latentatlas atlas` / `latentatlas report` commands: bad inputs, resume after interruption."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from latentatlas.atlas import RunConfig, load
from latentatlas.cli import main


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _snapshot(path) -> dict[str, tuple[int, bytes]]:
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(path.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("extra, message", [
    (["--bounds", "-0.1", "0.5", "-0.3", "0.3"], "bounds: K must lie in the source's domain"),
    (["--resolution", "3"], "resolution: expected at least 4 grid points per axis, got 3"),
    (["--samples", "8", "--bundle", "16"], "bundle: expected at most samples_per_point=8"),
    (["--bounds", "0.5", "0.2", "-0.3", "0.3"], "bounds: expected finite low < high for K"),
    (["--coordinates", "natural"], "coordinates: 'natural' needs a source that knows its"),
])
def test_bad_inputs_exit_2_one_line_nothing_written(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    code, stdout, err = _run(["atlas", "ising", "--L", "4", "--out", str(out), *extra], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latentatlas: error: "), err
    assert message in lines[0]
    assert not out.exists()


def test_run_folder_of_another_config_is_refused(tmp_path, capsys):
    import latentatlas as la

    out = tmp_path / "run"
    out.mkdir()
    cfg = RunConfig.make(la.sources.Ising2D(L=4, coords="natural", algorithm="wolff"),
                         resolution=8, samples_per_point=8, bundle=4, seed=1)
    (out / "config.json").write_text(json.dumps(cfg.to_dict()))
    (out / "atlas.npz").write_bytes(b"not touched")
    before = _snapshot(out)
    time.sleep(0.01)
    code, _, err = _run(["atlas", "ising", "--L", "4", "--resolution", "8", "--samples", "8",
                         "--bundle", "4", "--seed", "2", "--out", str(out)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "holds a run with another config (seed=1 there vs 2 here)" in lines[0]
    assert _snapshot(out) == before


def test_report_of_missing_run_exits_2(tmp_path, capsys):
    code, _, err = _run(["report", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "no atlas.npz" in err and len(err.strip().splitlines()) == 1


def test_help_has_examples(capsys):
    code, out, _ = _run(["atlas", "--help"], capsys)
    assert code == 0 and "latentatlas atlas ising --out runs/ising" in out
    code, out, _ = _run(["atlas", "ising", "--help"], capsys)
    assert code == 0 and "--bounds LO0 HI0 LO1 HI1" in out and "--algorithm" in out


_TINY = ["atlas", "gaussian", "--resolution", "8", "--samples", "16", "--bundle", "8",
         "--steps", "60", "--potential-steps", "60", "--seed", "3"]


@pytest.mark.slow
def test_interrupted_run_resumes_without_recomputing(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = _run([*_TINY, "--out", str(out)], capsys)
    assert code == 0, err
    assert "report:" in stdout
    first = load(out)
    assert (out / "report" / "index.html").is_file()
    kept = [out / "posterior.safetensors", out / "posteriors.npy"]
    kept += [p for p in (out / "store.zarr").rglob("*") if p.is_file()]
    mtimes = {p: p.stat().st_mtime_ns for p in kept}
    # an interruption during the potential stage: its output and everything after it is missing
    for name in ("potential.safetensors", "atlas.npz", "analyses.json", "analyses.npz"):
        (out / name).unlink()
    shutil.rmtree(out / "report")
    time.sleep(0.02)
    code, _, err = _run([*_TINY, "--out", str(out)], capsys)
    assert code == 0, err
    assert "stage sample: found store.zarr complete, nothing to sample" in err
    assert "stage posterior: found posterior.safetensors, posteriors.npy, skipped" in err
    assert "stage potential: done" in err
    assert {p: p.stat().st_mtime_ns for p in kept} == mtimes  # earlier stages untouched
    second = load(out)
    # same seed, same saved posteriors -> the refitted potential is the same (deterministic
    # single-threaded CPU training from the same seed: bit-identical; allow float32 round-off)
    for key in ("potential", "gradient", "metric"):
        np.testing.assert_allclose(getattr(second, key), getattr(first, key), rtol=1e-5,
                                   atol=1e-6 * np.abs(getattr(first, key)).max())
    assert (out / "report" / "index.html").is_file()
    # a complete run is not recomputed at all
    code, _, err = _run([*_TINY, "--out", str(out)], capsys)
    assert code == 0 and "stage report: found report/index.html, skipped" in err
    assert [line for line in err.splitlines() if "running" in line] == [
        "latentatlas: stage sample: running"]


def test_atlas_reuses_a_store_filled_by_sample(tmp_path, capsys):
    """`sample gaussian` and `atlas gaussian` share options and defaults: the atlas built on the
    store equals the one that samples itself, bit for bit; a store of other samples is refused."""
    opts = ["--resolution", "6", "--samples", "16", "--seed", "4"]
    fit = ["--bundle", "8", "--steps", "30", "--potential-steps", "30", "--quiet"]
    store = tmp_path / "store"
    assert _run(["sample", "gaussian", *opts, "--out", str(store), "--quiet"], capsys)[0] == 0
    code, _, err = _run(["atlas", "gaussian", *opts, *fit, "--store", str(store), "--out",
                         str(tmp_path / "a")], capsys)
    assert code == 0, err
    assert not (tmp_path / "a" / "store.zarr").exists()  # nothing sampled
    code, _, err = _run(["atlas", "gaussian", *opts, *fit, "--out", str(tmp_path / "b")], capsys)
    assert code == 0, err
    a, b = load(tmp_path / "a"), load(tmp_path / "b")
    assert np.array_equal(a.metric, b.metric) and np.array_equal(a.potential, b.potential)
    code, _, err = _run(["atlas", "gaussian", "--resolution", "6", "--samples", "16", "--seed",
                         "5", *fit, "--store", str(store), "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "seed 5 != stored 4" in err and len(err.strip().splitlines()) == 1


def test_coordinates_option_is_recorded_and_used(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _run([*_TINY, "--coords", "mean_std", "--coordinates", "natural",
                         "--quiet", "--out", str(out)], capsys)
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["potential_options"]["coordinates"] == "natural"
    atlas = load(out)
    # the pull-back J^T Hess(Phi) J of a convex Phi through the (mu, sigma) -> natural map:
    # positive definite at every grid point
    assert np.all(np.linalg.eigvalsh(atlas.metric)[..., 0] > 0)
    # the same folder with other coordinates is another config: refused
    code, _, err = _run([*_TINY, "--coords", "mean_std", "--coordinates", "learned",
                         "--quiet", "--out", str(out)], capsys)
    assert code == 2 and "another config" in err
