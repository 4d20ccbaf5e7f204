"""``latentatlas sample``: the store it writes equals direct sampling on the grid; rerunning resumes
(also after SIGKILL, bit-identical); bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from latentatlas.cli import main
from latentatlas.sources.ising import Ising2D
from latentatlas.sources.tasep import TASEP
from latentatlas.store import SampleStore, grid_params


def run(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ising_store_matches_source(tmp_path, capsys) -> None:
    out = tmp_path / "ising"
    args = ["sample", "ising", "--L", "6", "--coords", "temperature", "--algorithm", "metropolis",
            "--resolution", "3x4", "--samples", "4", "--seed", "5",
            "--bounds", "1.5", "3.5", "-0.2", "0.4", "--chunk", "5", "--out", str(out), "--quiet"]
    code, stdout, _ = run(args, capsys)
    assert code == 0 and "generated" in stdout
    store = SampleStore.open(out)
    axis0, axis1, params = grid_params(((1.5, 3.5), (-0.2, 0.4)), (3, 4))
    np.testing.assert_array_equal(store.params, params)
    np.testing.assert_array_equal(store.samples[...], Ising2D(6).sample(params, 4, seed=5))
    meta = store.metadata
    assert meta["extra"]["resolution"] == [3, 4]
    np.testing.assert_allclose(meta["extra"]["axis1"], axis1)
    code, stdout, _ = run(args, capsys)  # rerun: nothing left to do
    assert code == 0 and "already complete" in stdout


def test_tasep_and_options(tmp_path, capsys) -> None:
    out = tmp_path / "tasep"
    code, _, _ = run(["sample", "tasep", "--L", "5", "--resolution", "3", "--samples", "2", "--thin",
                      "2", "--burn-in", "20", "--out", str(out), "--quiet"], capsys)
    assert code == 0
    store = SampleStore.open(out)
    _, _, params = grid_params(TASEP.bounds, 3)
    np.testing.assert_array_equal(
        store.samples[...], TASEP(5, burn_in=20, thin=2).sample(params, 2, seed=0)
    )
    code, _, _ = run(["sample", "ising", "--L", "4", "--resolution", "2", "--samples", "2", "--coords",
                      "natural", "--algorithm", "wolff", "--out", str(tmp_path / "n"), "--quiet"],
                     capsys)
    assert code == 0
    src = SampleStore.open(tmp_path / "n").source()
    assert src.config["coords"] == "natural" and src.config["algorithm"] == "wolff"


def test_help(capsys) -> None:
    code, stdout, _ = run(["sample", "--help"], capsys)
    assert code == 0 and "rerun the same command" in stdout and "ising" in stdout and "tasep" in stdout
    code, stdout, _ = run(["sample", "ising", "--help"], capsys)
    assert code == 0 and "--bounds" in stdout and "--algorithm" in stdout


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--L", "1"], "L: expected"),
        (["--resolution", "1"], "resolution"),
        (["--resolution", "abc"], "resolution"),
        (["--samples", "0"], "--samples"),
        (["--seed", "-3"], "--seed"),
        (["--chunk", "0"], "--chunk"),
        (["--bounds", "0", "2", "0", "1"], "--bounds"),
        (["--bounds", "3", "2", "0", "1"], "bounds"),
        (["--thin", "often"], "--thin"),
        (["--burn-in", "-5"], "--burn-in"),
        (["--algorithm", "sw"], "algorithm"),
    ],
)
def test_bad_input_exit_2(tmp_path, capsys, extra, match) -> None:
    # (temperature coordinates: the sample command's defaults are now those of 'atlas ising')
    code, _, err = run(["sample", "ising", "--coords", "temperature", "--algorithm", "metropolis",
                        "--out", str(tmp_path / "x"), "--quiet", *extra], capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert match in err, err
    assert len(lines) <= 3, err  # click usage errors print usage + hint + the error
    assert not (tmp_path / "x").exists()


def test_other_settings_on_same_out(tmp_path, capsys) -> None:
    base = ["sample", "tasep", "--L", "4", "--resolution", "2", "--samples", "2", "--thin", "1",
            "--burn-in", "5", "--out", str(tmp_path / "t"), "--quiet"]
    assert run(base, capsys)[0] == 0
    code, _, err = run([*base, "--seed", "1"], capsys)
    assert code == 2 and err.startswith("latentatlas: error:") and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_resume_after_sigkill(tmp_path) -> None:
    out = tmp_path / "k"
    args = ["-m", "latentatlas", "sample", "ising", "--L", "8", "--coords", "temperature",
            "--algorithm", "metropolis", "--resolution", "8x6", "--samples", "8",
            "--thin", "1000", "--burn-in", "400", "--chunk", "2", "--seed", "2", "--out", str(out),
            "--quiet"]
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, *args], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "done").is_dir() and len(list((out / "done").glob("[0-9]*"))) >= 2:
                break
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    store = SampleStore.open(out)
    n_done = sum(store.chunk_done(k) for k in range(store.num_chunks))
    assert 2 <= n_done < store.num_chunks, n_done  # killed mid-way
    main(args[2:])  # rerun the same command (in-process) to resume
    assert store.complete
    _, _, params = grid_params(Ising2D(8).bounds, (8, 6))
    expected = Ising2D(8, burn_in=400, thin=1000).sample(params, 8, seed=2)
    np.testing.assert_array_equal(SampleStore.open(out).samples[...], expected)
