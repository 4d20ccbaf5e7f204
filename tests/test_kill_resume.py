"""``latentatlas atlas`` killed (SIGKILL) at several moments and rerun: the same atlas as an
uninterrupted run, bit for bit (same machine, same thread count: every random draw is seeded,
model weights included, and training resumes from its checkpoint with its RNG state).

One run folder is killed during sampling, posterior training, the potential fit and the
analyses, each time rerun with the same command; the final ``atlas.npz`` must equal the one of an
uninterrupted run in another folder. For a physics source (Ising, L = 4) and for a latent plane
of the digits generator (the reduced-budget generator that tests/conftest.py trains once per test
run, so that CI does not train the full recipe).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
       "MPLBACKEND": "Agg"}


def _cmd(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "latentatlas", *args]


def _run(args: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(_cmd(args), env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _kill_when(args: list[str], env: dict[str, str], ready: Callable[[], bool],
               timeout: float = 600) -> bool:
    """Start the command, SIGKILL it as soon as ``ready()``; True if it was killed (False if it
    finished first)."""
    proc = subprocess.Popen(_cmd(args), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.01)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _same_atlas(a: Path, b: Path) -> None:
    with np.load(a / "atlas.npz", allow_pickle=False) as x, \
            np.load(b / "atlas.npz", allow_pickle=False) as y:
        assert sorted(x.files) == sorted(y.files)
        for key in x.files:
            assert np.array_equal(x[key], y[key]), key


def _moments(out: Path, analyses: str, trained: bool) -> list[tuple[str, Callable[[], bool]]]:
    posterior = (("posterior training", lambda: (out / "posterior.ckpt").exists()
                  and not (out / "posteriors.npy").exists()) if trained else
                 # the kernel posterior is not trained: caught between the images and the maps
                 ("posterior maps", lambda: (out / "embeddings.npy").exists()
                  and not (out / "posteriors.npy").exists()))
    return [
        ("sampling", lambda: (out / "store.zarr").is_dir()
         and not (out / "posteriors.npy").exists()),
        posterior,
        ("potential fit", lambda: (out / "potential.ckpt").exists()
         and not (out / "potential.safetensors").exists()),
        ("analyses", lambda: (out / "atlas.npz").exists() and not (out / analyses).exists()),
    ]


def _kill_and_resume(args: list[str], out: Path, reference: Path, analyses: str,
                     env: dict[str, str], trained: bool = True) -> list[str]:
    killed = []
    for name, ready in _moments(out, analyses, trained):
        if _kill_when([*args, "--out", str(out)], env, ready):
            killed.append(name)
    _run([*args, "--out", str(out)], env)  # the last rerun completes the run
    _same_atlas(out, reference)
    timings = json.loads((out / "timings.json").read_text())
    assert "atlas" in timings["skipped"] or "atlas" in timings["computed"]
    return killed


@pytest.mark.slow
def test_ising_atlas_killed_four_times_equals_uninterrupted(tmp_path) -> None:
    args = ["atlas", "ising", "--L", "4", "--resolution", "8", "--samples", "16", "--bundle", "2",
            "--burn-in", "200", "--thin", "20", "--steps", "1200", "--potential-steps", "1200",
            "--seed", "1", "--quiet"]
    _run([*args, "--out", str(tmp_path / "ref")], ENV)
    killed = _kill_and_resume(args, tmp_path / "run", tmp_path / "ref", "analyses.json", ENV)
    # checkpoints every 500 steps: training is caught after its first checkpoint
    assert {"posterior training", "potential fit"} <= set(killed), killed
    assert len(killed) >= 3, killed
    ref = json.loads((tmp_path / "ref" / "analyses.json").read_text())
    assert json.loads((tmp_path / "run" / "analyses.json").read_text()) == ref


TINY_DIGITS = textwrap.dedent('''
    """The digits generator at a reduced budget, saved by the test (trained once per test run)."""
    import os

    import latentatlas as la

    GEN = la.load(os.environ["TINYDIGITS_KILL_GENERATOR"])
''')


@pytest.mark.slow
def test_digits_plane_killed_and_resumed_equals_uninterrupted(tmp_path, digits_generator) -> None:
    import latentatlas as la

    (tmp_path / "tinydigits_kill.py").write_text(TINY_DIGITS)
    # the reduced-budget generator of tests/conftest.py, shared with the other digits tests
    la.save(digits_generator, tmp_path / "generator.safetensors")
    env = {**ENV, "TINYDIGITS_KILL_GENERATOR": str(tmp_path / "generator.safetensors"),
           "LATENTATLAS_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    np.save(tmp_path / "lat.npy", np.random.default_rng(0).standard_normal((10, 64)))
    args = ["atlas", "custom", "--generator", "tinydigits_kill:GEN", "--latents",
            str(tmp_path / "lat.npy"), "--anchors", "0", "1", "2", "--features", "pixels",
            "--resolution", "16", "--potential-steps", "1200", "--eta-compare", "0.5",
            "--eta-resolution", "8", "--zoom-points", "1", "--zoom-resolution", "8",
            "--path-points", "8", "--path-samples", "4", "--quiet"]
    _run([*args, "--out", str(tmp_path / "ref")], env)
    killed = _kill_and_resume(args, tmp_path / "run", tmp_path / "ref", "planes.json", env,
                              trained=False)
    assert "potential fit" in killed and len(killed) >= 3, killed
    for name in ("labels.npy", "images.npy"):
        assert np.array_equal(np.load(tmp_path / "run" / name), np.load(tmp_path / "ref" / name))
    ref = json.loads((tmp_path / "ref" / "planes.json").read_text())
    mine = json.loads((tmp_path / "run" / "planes.json").read_text())
    ref.pop("images_per_second"), mine.pop("images_per_second")  # wall-clock throughput
    assert mine == ref
