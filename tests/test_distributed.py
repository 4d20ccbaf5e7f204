"""la.distributed: Ray generation (bit-identical to local, retries a killed worker's chunk) and
DDP training (2 gloo processes under torchrun = 1 process with the same global batch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

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


@pytest.mark.slow
def test_ray_backend(tmp_path):
    """One local Ray instance (2 CPUs) for both checks: Ray starts in ~10 s on a loaded machine."""
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # DyingOnce for the workers
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        _check_ray_store_is_bit_identical_to_local(tmp_path / "a")
        _check_ray_retries_a_killed_workers_chunk(tmp_path / "b")
    finally:
        ray.shutdown()


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
    import numpy as np
    import torch
    from latentatlas import distributed as D
    torch.set_num_threads(1)
    rank, world = D.init_from_env()
    assert world == 2, world
    out = {}
    sys.path.insert(0, sys.argv[2])
    from ddp_problems import grid_problem, mlp_problem
    model, loss_fn, data, kw = mlp_problem()
    h = D.train_ddp(model, loss_fn, data, **kw)
    out["mlp"] = {"loss": h.loss, "val": h.val_loss,
                  "params": [p.detach().reshape(-1).tolist() for p in model.parameters()]}
    post, args, kw = grid_problem()
    h = D.fit_ddp(post, *args, **kw)
    out["grid"] = {"loss": h.loss, "val": h.val_loss,
                   "params": [p.detach().reshape(-1).tolist() for p in post.parameters()]}
    with open(f"{sys.argv[1]}/rank{rank}.json", "w") as f:
        json.dump(out, f)
''')

_PROBLEMS = textwrap.dedent('''
    import numpy as np
    import torch
    from torch import nn
    import latentatlas as la

    def mlp_problem():
        """Noisy regression, float64, global batch 31 (shares of 15 and 16 samples: the unequal
        case of the gradient weighting)."""
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        x = torch.as_tensor(rng.standard_normal((256, 3)))
        y = torch.sin(x.sum(1, keepdim=True)) + 0.1 * torch.as_tensor(rng.standard_normal((256, 1)))
        model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1)).double()
        loss_fn = lambda a, b: ((model(a) - b) ** 2).mean()
        kw = dict(steps=40, batch_size=31, lr=1e-2, val_every=10, progress=False, seed=1)
        return model, loss_fn, (x, y), kw

    def grid_problem():
        """GridPosterior (float64) on x ~ N(t, I) over a 5 x 5 grid: the posterior estimator."""
        torch.manual_seed(0)
        axis = np.linspace(-1.0, 1.0, 5)
        rng = np.random.default_rng(1)
        t = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
        x = t[:, None, :] + rng.standard_normal((25, 20, 2))
        post = la.posterior.GridPosterior((2,), (5, 5), embed=8, hidden=16).double()
        kw = dict(bundle=2, steps=30, batch_size=32, lr=3e-3, val_every=10, progress=False,
                  seed=2)
        return post, (x, axis, axis), kw
''')


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path):
    (tmp_path / "ddp_problems.py").write_text(_PROBLEMS)
    (tmp_path / "script.py").write_text(_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(tmp_path / "script.py"), str(tmp_path), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    # the same problems in one process, global batch unchanged, plain train / fit
    sys.path.insert(0, str(tmp_path))
    try:
        import ddp_problems as P
    finally:
        sys.path.remove(str(tmp_path))
    from latentatlas.flows.training import train

    model, loss_fn, data, kw = P.mlp_problem()
    h_mlp = train(model, loss_fn, data, **kw)
    post, args, kw = P.grid_problem()
    h_grid = post.fit(*args, **kw)
    single = {
        "mlp": (h_mlp, [p.detach().reshape(-1) for p in model.parameters()]),
        "grid": (h_grid, [p.detach().reshape(-1) for p in post.parameters()]),
    }
    for name, (h, params) in single.items():
        for r in ranks:
            got = r[name]
            # float64: the two runs differ only in summation order (shard means combined by an
            # all-reduce vs one mean), ~1e-16 relative per step; 30-40 Adam steps amplify this by
            # far less than 1e6, while any sharding/averaging error (wrong shard, sum instead of
            # mean, unsynced ranks) changes the curve at the 1e-3 level.
            np.testing.assert_allclose(got["loss"], h.loss, rtol=1e-9)
            np.testing.assert_allclose(got["val"], h.val_loss, rtol=1e-9)
            for a, b in zip(got["params"], params):
                np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-9)
        assert len(h.loss) >= 3 and h.loss[-1] < h.loss[0]  # it trained
        # both ranks hold the same model, bit for bit (DDP all-reduced gradients)
        assert ranks[0][name]["params"] == ranks[1][name]["params"]


def test_train_ddp_without_process_group_is_train():
    model = torch.nn.Linear(2, 1).double()
    x = torch.randn(64, 2, dtype=torch.float64)
    y = x @ torch.tensor([[1.0], [-2.0]], dtype=torch.float64)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    h = D.train_ddp(model, lambda a, b: ((model(a) - b) ** 2).mean(), (x, y), steps=20,
                    batch_size=16, progress=False, val_fraction=0.0)
    model.load_state_dict(state)
    h2 = la.flows.training.train(model, lambda a, b: ((model(a) - b) ** 2).mean(), (x, y),
                                 steps=20, batch_size=16, progress=False, val_fraction=0.0)
    assert h.loss == h2.loss
    assert not D.is_distributed() and D.init_from_env() == (0, 1)


def test_atlas_cli_ray_backend_gives_the_local_store(tmp_path) -> None:
    pytest.importorskip("ray")
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
