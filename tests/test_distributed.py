"""la.distributed: Ray generation (bit-identical to local, retries a killed worker's chunk) and
DDP training (2 gloo processes under torchrun = 1 process with the same global batch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import latentatlas as la
from latentatlas import distributed as D
from latentatlas.sources import GaussianFamily, Ising2D
from latentatlas.store import SampleStore, grid_params

# ----------------------------------------------------------------------------------------------
# Ray generation
# ----------------------------------------------------------------------------------------------


class DyingOnce(GaussianFamily):
    """GaussianFamily whose process dies (os._exit, like a killed worker) the first time it samples
    a chunk containing point ``victim``; a marker file makes the retry succeed."""

    def __init__(self, marker: str, victim: int = 5, coords: str = "natural") -> None:
        super().__init__(coords=coords)
        self.marker = marker
        self.victim = victim

    def _sample(self, params, n, seed):
        _, _, grid = grid_params(((-1.0, 1.0), (-2.0, -0.5)), 4)
        hit = any(np.allclose(p, grid[self.victim]) for p in params)
        if hit and not os.path.exists(self.marker):
            Path(self.marker).write_text("died once")
            os._exit(1)
        return super()._sample(params, n, seed)


def _arrays(store: SampleStore) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return np.asarray(store.samples[...]), store.diagnostics


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance (2 CPUs) for every Ray test of this module. Starting one costs far
    more than the tests' work: Ray itself starts in ~15 s on a loaded machine and each fresh
    worker imports torch, zarr and latentatlas (measured under load: ~60 s before its first task,
    ~10 s for the same checks on warm workers)."""
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # DyingOnce for the workers
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_backend(tmp_path, ray_session):
    _check_ray_store_is_bit_identical_to_local(tmp_path / "a")
    _check_ray_retries_a_killed_workers_chunk(tmp_path / "b")


def _check_ray_store_is_bit_identical_to_local(tmp_path):
    source = Ising2D(L=4, burn_in=20, thin=2)
    _, _, params = grid_params(((1.5, 3.5), (-0.5, 0.5)), 4)  # 16 points, chunks of 3 -> 6
    local = SampleStore.create(tmp_path / "local", source, params, 5, seed=7, chunk_points=3)
    local.generate(progress=False)
    remote = SampleStore.create(tmp_path / "ray", source, params, 5, seed=7, chunk_points=3)
    D.write_chunk(remote.path, 1, source)  # one chunk done before: resumed, never recomputed
    before = (remote.path / "done" / "1").stat().st_mtime_ns
    out = D.generate(remote, backend="ray", progress=False)
    assert out.complete and (remote.path / "done" / "1").stat().st_mtime_ns == before
    x_local, d_local = _arrays(local)
    x_ray, d_ray = _arrays(out)
    assert x_local.shape == (16, 5, 4, 4) and np.abs(x_local).min() == 1  # spins, all written
    np.testing.assert_array_equal(x_ray, x_local)
    assert sorted(d_ray) == sorted(d_local) and "acceptance" in d_ray
    for name in d_local:  # NaN-free and identical bit for bit
        assert np.isfinite(d_local[name]).all()
        np.testing.assert_array_equal(d_ray[name], d_local[name])


def _check_ray_retries_a_killed_workers_chunk(tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    marker = tmp_path / "died"
    dying = DyingOnce(str(marker))
    _, _, params = grid_params(((-1.0, 1.0), (-2.0, -0.5)), 4)
    ref = SampleStore.create(tmp_path / "ref", GaussianFamily(), params, 6, seed=3, chunk_points=4)
    ref.generate(progress=False)
    store = SampleStore.create(tmp_path / "st", dying, params, 6, seed=3, chunk_points=4)
    out = D.generate(store, backend="ray", workers=2, max_retries=2, progress=False)
    assert marker.read_text() == "died once"  # a worker really died inside chunk 1
    assert out.complete
    np.testing.assert_array_equal(np.asarray(out.samples[...]), np.asarray(ref.samples[...]))


def test_atlas_cli_ray_backend_gives_the_local_store(tmp_path, ray_session) -> None:
    """The CLI's Ray backend on this module's Ray instance (``generate`` uses an initialised
    session as it is)."""
    from click.testing import CliRunner

    import latentatlas as la
    from latentatlas.cli import _load_commands
    from latentatlas.cli.common import main

    _load_commands()
    args = ["atlas", "gaussian", "--resolution", "5", "--samples", "16", "--bundle", "4",
            "--steps", "20", "--potential-steps", "20", "--quiet"]
    runner = CliRunner()
    local = runner.invoke(main, [*args, "--out", str(tmp_path / "local")])
    ray_run = runner.invoke(main, [*args, "--out", str(tmp_path / "ray"), "--backend", "ray",
                                   "--workers", "2"])
    assert local.exit_code == 0, local.output
    assert ray_run.exit_code == 0, ray_run.output
    a = la.store.SampleStore.open(tmp_path / "local" / "store.zarr").samples[...]
    b = la.store.SampleStore.open(tmp_path / "ray" / "store.zarr").samples[...]
    np.testing.assert_array_equal(a, b)  # the backend is not part of the result


def test_generate_arguments(tmp_path):
    _, _, params = grid_params(((-1.0, 1.0), (-2.0, -0.5)), 3)
    store = SampleStore.create(tmp_path / "s", GaussianFamily(), params, 2, seed=0)
    with pytest.raises(ValueError, match="backend: expected 'local' or 'ray', got 'dask'"):
        D.generate(store, backend="dask")
    with pytest.raises(ValueError, match="workers: expected a positive int"):
        D.generate(store, backend="ray", workers=0)
    with pytest.raises(ValueError, match="gpus_per_task"):
        D.generate(store, backend="ray", gpus_per_task=-1)
    out = D.generate(store, backend="local", progress=False)
    assert out.complete


# ----------------------------------------------------------------------------------------------
# DDP training
# ----------------------------------------------------------------------------------------------

_SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    from latentatlas import distributed as D
    from latentatlas.training import DataParallel
    torch.set_num_threads(1)
    rank, world = D.init_from_env()
    assert world == 2, world
    sys.path.insert(0, sys.argv[2])
    import ddp_problems as P
    out = {}
    for name in P.NAMES:
        model, history = P.run(name, DataParallel())
        out[name] = {"loss": history.loss, "val": history.val_loss,
                     "params": [p.detach().reshape(-1).tolist() for p in model.parameters()]}
    with open(f"{sys.argv[1]}/rank{rank}.json", "w") as f:
        json.dump(out, f)
''')

_PROBLEMS = textwrap.dedent('''
    import numpy as np
    import torch
    from torch import nn
    import latentatlas as la
    from latentatlas import distributed as D
    from latentatlas.training import train

    NAMES = ["mlp", "grid", "flow", "potential", "mlp_potential", "classifier"]
    AXIS = np.linspace(-1.0, 1.0, 5)

    def _gaussian_samples(n=20):
        rng = np.random.default_rng(1)
        t = np.stack(np.meshgrid(AXIS, AXIS, indexing="ij"), -1).reshape(-1, 2)
        return t[:, None, :] + rng.standard_normal((25, n, 2))

    def _bregman_posteriors(k=4.0):
        t = np.stack(np.meshgrid(AXIS, AXIS, indexing="ij"), -1).reshape(-1, 2)
        lp = -0.5 * k * ((t[:, None] - t[None]) ** 2).sum(-1)
        p = np.exp(lp - lp.max(1, keepdims=True))
        return (p / p.sum(1, keepdims=True)).reshape(25, 5, 5)

    def run(name, strategy):
        # Train problem `name` with `strategy`: returns (model, History).
        torch.manual_seed(0)
        if name == "mlp":
            # noisy regression, float64, global batch 31 (shares of 15 and 16 samples: the
            # unequal case of the gradient weighting); through the train_ddp shorthand
            rng = np.random.default_rng(0)
            x = torch.as_tensor(rng.standard_normal((256, 3)))
            y = torch.sin(x.sum(1, keepdim=True)) + 0.1 * torch.as_tensor(
                rng.standard_normal((256, 1)))
            model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1)).double()
            kw = dict(steps=40, batch_size=31, lr=1e-2, val_every=10, progress=False, seed=1)
            loss_fn = lambda a, b: ((model(a) - b) ** 2).mean()
            if isinstance(strategy, la.training.DataParallel):
                return model, D.train_ddp(model, loss_fn, (x, y), **kw)
            return model, train(model, loss_fn, (x, y), strategy=strategy, **kw)
        if name == "grid":  # the posterior estimator, float64, on x ~ N(t, I) over a 5 x 5 grid
            post = la.posterior.GridPosterior((2,), (5, 5), embed=8, hidden=16).double()
            post.fit(_gaussian_samples(), AXIS, AXIS, bundle=2, steps=30, batch_size=32, lr=3e-3,
                     val_every=10, progress=False, seed=2, strategy=strategy)
            return post, post.history_
        if name == "flow":  # the flow posterior, float64; through fit_ddp for DataParallel
            post = la.posterior.FlowPosterior((2,), dim=2, embed=4,
                                              flow_options={"transforms": 1, "hidden": (8,)})
            post = post.double()
            kw = dict(bundle=2, steps=30, batch_size=32, lr=3e-3, val_every=10, progress=False,
                      seed=3)
            if isinstance(strategy, la.training.DataParallel):
                assert D.fit_ddp(post, _gaussian_samples(), AXIS, AXIS, **kw) is post
            else:
                post.fit(_gaussian_samples(), AXIS, AXIS, strategy=strategy, **kw)
            return post, post.history_
        if name == "potential":  # the convex potential, float64, 24 points a batch (12 + 12)
            return la.geometry.fit_potential(
                _bregman_posteriors(), AXIS, AXIS, bundle=4, steps=30, batch_points=24,
                lr=1e-2, progress=False, seed=4, dtype=torch.float64, strategy=strategy)
        if name == "mlp_potential":  # without the (random) convexity penalty: deterministic
            return la.geometry.fit_mlp_potential(
                _bregman_posteriors(), AXIS, AXIS, bundle=4, steps=20, batch_points=24,
                hidden=(16,), convexity_weight=0.0, lr=1e-2, progress=False, seed=5,
                dtype=torch.float64, strategy=strategy)
        if name == "classifier":  # random augmentation per share: ranks in sync only
            from latentatlas.features.classifier import Classifier
            model = Classifier.train_new(progress=False, steps=4, strategy=strategy)
            return model, model.history_
        raise ValueError(name)
''')

# fits whose data-parallel run equals the single-process run on the same global batch
_EQUIVALENT = ("mlp", "grid", "flow", "potential", "mlp_potential")


def _problems() -> Any:
    """The problems above as a module (also imported by the torchrun script)."""
    module = types.ModuleType("ddp_problems")
    exec(compile(_PROBLEMS, "ddp_problems.py", "exec"), module.__dict__)
    return module


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ddp")
    (tmp_path / "ddp_problems.py").write_text(_PROBLEMS)
    (tmp_path / "script.py").write_text(_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(tmp_path / "script.py"), str(tmp_path), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("name", _EQUIVALENT)
def test_ddp_two_processes_match_one(ddp_runs, name):
    model, h = _problems().run(name, la.training.SingleProcess())  # one process, same batch
    params = [p.detach().reshape(-1).numpy() for p in model.parameters()]
    for r in ddp_runs:
        got = r[name]
        # float64: the two runs differ only in summation order (shard means combined by an
        # all-reduce vs one mean), ~1e-16 relative per step; 20-40 Adam steps amplify this by
        # far less than 1e6, while any sharding/averaging error (wrong shard, sum instead of
        # mean, unsynced ranks, a fit that ignores its strategy) changes the curve at the 1e-3
        # level.
        np.testing.assert_allclose(got["loss"], h.loss, rtol=1e-9)
        np.testing.assert_allclose(got["val"], h.val_loss, rtol=1e-9)
        for a, b in zip(got["params"], params):
            assert np.linalg.norm(np.asarray(a) - b) <= 1e-6 * np.linalg.norm(b)
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
    assert len(h.loss) >= 3 and h.loss[-1] < h.loss[0]  # it trained (3+ logged losses)
    # both ranks hold the same model, bit for bit (DDP all-reduced gradients)
    assert ddp_runs[0][name]["params"] == ddp_runs[1][name]["params"]


@pytest.mark.slow
def test_ddp_classifier_ranks_stay_in_sync(ddp_runs):
    # losses are global means and the weights stay identical (the augmentation noise is drawn
    # per share, so the run is not the single-process one)
    assert ddp_runs[0]["classifier"] == ddp_runs[1]["classifier"]


class _Spy(la.training.SingleProcess):
    """SingleProcess that counts the training runs it prepares."""

    def __init__(self) -> None:
        self.calls = 0

    def prepare(self, model, loss_fn):
        self.calls += 1
        return super().prepare(model, loss_fn)


def test_every_fit_passes_its_strategy_to_the_loop():
    """Each fit hands ``strategy`` to ``train`` (no module attribute patching)."""
    from latentatlas.features.classifier import Classifier
    from latentatlas.generators.digits import Digits

    P = _problems()
    for name in ("mlp", "grid", "flow", "potential", "mlp_potential"):
        spy = _Spy()
        P.run(name, spy)
        assert spy.calls == 1, name
    spy = _Spy()
    model = Classifier.train_new(progress=False, steps=2, strategy=spy)
    assert spy.calls == 1 and model.history_.steps_done == 2
    spy = _Spy()
    Digits.train_new(progress=False, steps=2, strategy=spy)
    assert spy.calls == 1
    # a default_strategy block: calls without strategy= use it; the deprecated
    # distributed_training() block is such a block with DataParallel
    spy = _Spy()
    with la.training.default_strategy(spy):
        P.run("potential", None)
    assert spy.calls == 1
    with pytest.warns(DeprecationWarning, match="strategy=la.training.DataParallel"):
        with D.distributed_training() as strategy:
            assert isinstance(strategy, la.training.DataParallel)
    with pytest.raises(ValueError, match="strategy: expected None, SingleProcess"):
        P.run("potential", "ddp")


def test_train_ddp_without_process_group_is_train():
    model = torch.nn.Linear(2, 1).double()
    x = torch.randn(64, 2, dtype=torch.float64)
    y = x @ torch.tensor([[1.0], [-2.0]], dtype=torch.float64)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    h = D.train_ddp(model, lambda a, b: ((model(a) - b) ** 2).mean(), (x, y), steps=20,
                    batch_size=16, progress=False, val_fraction=0.0)
    model.load_state_dict(state)
    h2 = la.training.train(model, lambda a, b: ((model(a) - b) ** 2).mean(), (x, y),
                                 steps=20, batch_size=16, progress=False, val_fraction=0.0)
    assert h.loss == h2.loss
    assert not D.is_distributed() and D.init_from_env() == (0, 1)
