"""SampleStore: grid layout, equality with direct sampling, resumption after SIGKILL bit-identical to
an uninterrupted run, refusal to reuse a store with other settings (files untouched)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import latentatlas as la
from latentatlas.sources.ising import Ising2D
from latentatlas.store import SampleStore, grid_params

SLOW_SOURCE = '''
import time

import numpy as np

from latentatlas.sources.base import Source, point_seed_sequence


class SlowSource(Source):
    """Gaussian float32 samples around the point; sleeps ``delay`` seconds per point."""

    names = ("a", "b")
    domain = ((-10.0, 10.0), (-10.0, 10.0))
    bounds = ((-1.0, 1.0), (-1.0, 1.0))
    dtype = np.dtype(np.float32)

    def __init__(self, delay: float = 0.0, width: int = 3) -> None:
        self.delay = delay
        self.sample_shape = (width,)

    def _sample(self, params, n, seed):
        return self.sample_with_diagnostics(params, n, seed)[0]

    def sample_with_diagnostics(self, params, n, seed=0):
        params = self.check_params(params)
        out = np.empty((len(params), n, *self.sample_shape), dtype=np.float32)
        for i, p in enumerate(params):
            rng = np.random.default_rng(point_seed_sequence(seed, p))
            out[i] = rng.normal(size=(n, *self.sample_shape)) + p[0] - p[1]
            time.sleep(self.delay)
        return out, {"spread": out.std(axis=(1, 2)).astype(np.float64)}
'''


@pytest.fixture
def slow_source(tmp_path, monkeypatch):
    folder = tmp_path / "mods"
    folder.mkdir()
    (folder / "slow_source_mod.py").write_text(SLOW_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    import importlib

    module = importlib.import_module("slow_source_mod")
    return module.SlowSource, folder


def snapshot(path: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(path)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_grid_params_layout() -> None:
    axis0, axis1, params = grid_params(((1.0, 3.0), (-1.0, 1.0)), (3, 5))
    np.testing.assert_allclose(axis0, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(axis1, [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert params.shape == (15, 2)
    for i in range(3):
        for j in range(5):
            np.testing.assert_array_equal(params[i * 5 + j], [axis0[i], axis1[j]])
    a0, a1, sq = grid_params([[0, 1], [0, 2]], 4)
    assert sq.shape == (16, 2) and len(a0) == len(a1) == 4


@pytest.mark.parametrize(
    ("bounds", "resolution", "match"),
    [
        (((1.0, 0.0), (0.0, 1.0)), 4, "bounds"),
        (((0.0, 1.0),), 4, "bounds"),
        (((0.0, float("nan")), (0.0, 1.0)), 4, "bounds"),
        (((0.0, 1.0), (0.0, 1.0)), 1, "resolution"),
        (((0.0, 1.0), (0.0, 1.0)), (4, 4, 4), "resolution"),
        (((0.0, 1.0), (0.0, 1.0)), 2.5, "resolution"),
    ],
)
def test_grid_params_bad_input(bounds, resolution, match) -> None:
    with pytest.raises(ValueError, match=match):
        grid_params(bounds, resolution)


def test_store_equals_direct_sampling(tmp_path) -> None:
    src = Ising2D(6)
    _, _, params = grid_params(((1.5, 3.5), (-0.3, 0.3)), (3, 4))
    store = SampleStore.create(tmp_path / "s", src, params, 5, seed=3, chunk_points=5,
                               extra_meta={"note": "test"})
    assert not store.complete and store.done_points == 0
    store.generate(progress=False)
    assert store.complete and store.num_chunks == 3
    x, diag = src.sample_with_diagnostics(params, 5, seed=3)
    np.testing.assert_array_equal(store.samples[...], x)
    np.testing.assert_array_equal(store.params, params)
    assert store.samples.chunks == (5, 5, 6, 6)
    for key, value in diag.items():
        np.testing.assert_array_equal(store.diagnostics[key], value)
    again = SampleStore.open(tmp_path / "s")
    meta = again.metadata
    assert meta["seed"] == 3 and meta["samples_per_point"] == 5 and meta["extra"] == {"note": "test"}
    assert meta["source_class"] == "latentatlas.sources.ising.Ising2D"
    assert meta["version"] == la.__version__ and meta["created"]
    assert again.source().config == src.config
    # create() with identical settings reopens (nothing to do)
    before = snapshot(tmp_path / "s")
    SampleStore.create(tmp_path / "s", Ising2D(6), params, 5, seed=3, chunk_points=5).generate(
        progress=False
    )
    assert snapshot(tmp_path / "s") == before


def test_resume_after_sigkill_is_bit_identical(tmp_path, slow_source) -> None:
    SlowSource, folder = slow_source
    _, _, params = grid_params(((-1.0, 1.0), (-1.0, 1.0)), (6, 5))  # 30 points, 15 chunks
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(folder)!r})
        from slow_source_mod import SlowSource
        from latentatlas.store import SampleStore, grid_params
        _, _, params = grid_params(((-1.0, 1.0), (-1.0, 1.0)), (6, 5))
        store = SampleStore.create({str(tmp_path / "killed")!r}, SlowSource(delay=0.1), params, 4,
                                   seed=9, chunk_points=2)
        store.generate(progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    done_dir = tmp_path / "killed" / "done"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if done_dir.is_dir() and len(list(done_dir.glob("[0-9]*"))) >= 3:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    store = SampleStore.open(tmp_path / "killed")
    done = [k for k in range(store.num_chunks) if store.chunk_done(k)]
    assert 3 <= len(done) < store.num_chunks, done  # interrupted mid-way
    chunk_files = {k: tmp_path / "killed" / "samples" / "c" / str(k) / "0" / "0" for k in done}
    stamps = {k: f.stat().st_mtime_ns for k, f in chunk_files.items()}

    store.generate(progress=False)  # resume (rebuilds SlowSource(delay=0.1) from the store)
    assert store.complete
    assert {k: f.stat().st_mtime_ns for k, f in chunk_files.items()} == stamps  # not recomputed

    full = SampleStore.create(tmp_path / "full", SlowSource(delay=0.0), params, 4, seed=9,
                              chunk_points=2).generate(progress=False)
    resumed = SampleStore.open(tmp_path / "killed")
    # bit-identical (the delay changes the config, not the samples)
    np.testing.assert_array_equal(resumed.samples[...], full.samples[...])
    assert resumed.samples.dtype == np.float32
    assert resumed.diagnostics.keys() == full.diagnostics.keys() == {"spread"}
    np.testing.assert_array_equal(resumed.diagnostics["spread"], full.diagnostics["spread"])


def test_other_settings_are_refused_untouched(tmp_path) -> None:
    src = Ising2D(4, burn_in=10, thin=2)
    _, _, params = grid_params(((2.0, 3.0), (0.0, 0.5)), 3)
    path = tmp_path / "s"
    SampleStore.create(path, src, params, 3, seed=1, chunk_points=4).generate(progress=False)
    before = snapshot(path)
    cases = [
        (dict(source=Ising2D(4, burn_in=10, thin=3)), "source config"),
        (dict(source=Ising2D(5, burn_in=10, thin=2)), "source config"),
        (dict(seed=2), "seed"),
        (dict(params=params + 0.01), "params differ"),
        (dict(params=params[:5]), "number of params"),
        (dict(samples_per_point=4), "samples_per_point"),
        (dict(chunk_points=3), "chunk_points"),
    ]
    for change, match in cases:
        kwargs = dict(source=src, params=params, samples_per_point=3, seed=1, chunk_points=4)
        kwargs.update(change)
        with pytest.raises(ValueError, match=match):
            SampleStore.create(path, **kwargs)
    assert snapshot(path) == before


def test_bad_paths_and_arguments(tmp_path) -> None:
    src = Ising2D(4)
    params = np.array([[2.0, 0.0]])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a latentatlas sample store"):
        SampleStore.create(tmp_path / "busy", src, params, 2)
    assert (tmp_path / "busy" / "file.txt").read_text() == "mine"
    with pytest.raises(FileNotFoundError, match="no sample store"):
        SampleStore.open(tmp_path / "nothing")
    with pytest.raises(ValueError, match="samples_per_point"):
        SampleStore.create(tmp_path / "a", src, params, 0)
    with pytest.raises(ValueError, match="seed"):
        SampleStore.create(tmp_path / "a", src, params, 2, seed=-1)
    with pytest.raises(ValueError, match="chunk_points"):
        SampleStore.create(tmp_path / "a", src, params, 2, chunk_points=0)
    with pytest.raises(ValueError, match="params"):
        SampleStore.create(tmp_path / "a", src, [[0.0, 0.0]], 2)
    with pytest.raises(ValueError, match="source"):
        SampleStore.create(tmp_path / "a", object(), params, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="extra_meta"):
        SampleStore.create(tmp_path / "a", src, params, 2, extra_meta={"x": object()})
    assert not (tmp_path / "a").exists()
    # an empty directory is fine
    (tmp_path / "empty").mkdir()
    SampleStore.create(tmp_path / "empty", src, params, 2)
    assert SampleStore.open(tmp_path / "empty").num_points == 1
