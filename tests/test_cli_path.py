"""``latentatlas path custom`` end to end: one path (files, report, resume, refusal), --pairs
(ranking CSV/JSON, batched), bad inputs -> one line and exit code 2."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from tests._fixtures import module_fixture, run

GEN = textwrap.dedent('''
    import numpy as np
    import torch

    def decoder(z, eta=0.0, seeds=None):
        """x = z + eta * noise (4 x 4 images of a 16-dim latent), noise seeded per sample."""
        z = torch.as_tensor(z, dtype=torch.float64)
        if eta > 0:
            rng = np.random.default_rng(np.asarray(seeds, dtype=np.uint64))
            z = z + eta * torch.as_tensor(rng.standard_normal(z.shape))
        return z.reshape(-1, 4, 4)
''')

FAST = ["--points", "24", "--samples", "20", "--potential-steps", "200", "--quiet",
        "--interpolation", "linear", "--eta", "1.0"]


genmod = module_fixture("tinygen_path", GEN)


@pytest.fixture()
def latents(tmp_path):
    path = tmp_path / "lat.npy"
    np.save(path, np.random.default_rng(1).standard_normal((12, 16)) * 0.3)
    return str(path)


def test_one_path_run_folder_resume_refusal(tmp_path, genmod, latents, capsys) -> None:
    out = tmp_path / "run"
    args = ["path", "custom", "--generator", f"{genmod}:decoder", "--latents", latents,
            "--from", "0", "--to", "3", "--out", str(out), *FAST]
    assert run(args) == 0, capsys.readouterr().err
    assert "Fisher length" in capsys.readouterr().out
    with np.load(out / "path.npz", allow_pickle=False) as data:
        for key, shape in (("s", (24,)), ("metric", (24,)), ("potential", (24,)),
                           ("means", (24,)), ("distances", (23,))):
            assert data[key].shape == shape and np.isfinite(data[key]).all(), key
        assert data["jumps"].ndim == 1
        lat = np.load(latents)
        exact = float(np.linalg.norm(lat[3] - lat[0]))  # |z_B - z_A| / eta
        assert abs(float(data["fisher_length"]) / exact - 1) < 0.15
    assert np.load(out / "images.npy").shape == (24, 4, 4)
    assert (out / "report" / "index.html").is_file()
    assert (out / "jumps.json").is_file()
    # resume: every stage but sampling (the store checks its own chunks) is skipped
    assert run(args) == 0
    timings = json.loads((out / "timings.json").read_text())
    assert timings["computed"] == ["sample"] and "report" in timings["skipped"]
    # another config: refused, exit 2, one line, nothing touched
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code = run([*args[:-len(FAST)], *FAST[:-1], "0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "another config" in err and err.count("\n") == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_pairs_ranking(tmp_path, genmod, latents, capsys) -> None:
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("0 1\n2 3  # a comment\n\n4 5\n0 6\n")
    out = tmp_path / "rank"
    args = ["path", "custom", "--generator", f"{genmod}:decoder", "--latents", latents,
            "--pairs", str(pairs), "--out", str(out), *FAST]
    assert run(args) == 0, capsys.readouterr().err
    rows = json.loads((out / "ranking.json").read_text())
    csv = (out / "ranking.csv").read_text().splitlines()
    assert len(rows) == 4 and len(csv) == 5 and csv[0].startswith("rank,i,j,fisher_length")
    lengths = [r["fisher_length"] for r in rows]
    assert lengths == sorted(lengths, reverse=True)
    lat = np.load(latents)
    exact = {(i, j): float(np.linalg.norm(lat[j] - lat[i])) for i, j in
             ((0, 1), (2, 3), (4, 5), (0, 6))}
    order = sorted(exact, key=exact.get, reverse=True)
    assert [(r["i"], r["j"]) for r in rows] == order  # the exact ranking
    assert sorted(p.name for p in (out / "paths").iterdir()) == ["0_1.npz", "0_6.npz", "2_3.npz",
                                                                 "4_5.npz"]
    assert run(args) == 0  # resume: the pairs are read back
    assert json.loads((out / "ranking.json").read_text()) == rows
    assert run([*args[:-len(FAST)], *FAST[:-1], "0.5"]) == 2


@pytest.mark.parametrize("extra, message", [
    (["--from", "0"], "--from/--to"),
    (["--from", "0", "--to", "99"], "--to"),
    (["--from", "0", "--to", "1", "--points", "2"], "--points"),
    (["--from", "0", "--to", "1", "--eta", "-1"], "--eta"),
    (["--from", "0", "--to", "1", "--bundle", "0"], "--bundle"),
    (["--from", "0", "--to", "1", "--workers", "0"], "--workers"),
])
def test_bad_inputs_exit_2(tmp_path, genmod, latents, capsys, extra, message) -> None:
    code = run(["path", "custom", "--generator", f"{genmod}:decoder", "--latents", latents,
                "--out", str(tmp_path / "x"), "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_bad_pairs_file(tmp_path, genmod, latents, capsys) -> None:
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("0 1\n2 x\n")
    code = run(["path", "custom", "--generator", f"{genmod}:decoder", "--latents", latents,
                "--pairs", str(pairs), "--out", str(tmp_path / "x"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "line 2" in err
