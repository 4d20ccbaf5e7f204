"""fit / train: resuming from a checkpoint gives bit-identical weights (with and without an EMA of
the weights); the EMA's closed form; ActNorm init in training."""

from __future__ import annotations

import math

import pytest
import torch

from latentatlas.datasets import moons
from latentatlas.flows import MAF, NSF, ActNorm, ComposedTransform, Flow, RealNVP, fit, train


def _weights(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("ema", [None, 0.9])
@pytest.mark.parametrize("make", [lambda: NSF(2, transforms=2, hidden=(16,)),
                                  lambda: MAF(2, context=1, transforms=2, hidden=(16,))])
def test_stopping_and_resuming_equals_an_uninterrupted_run(tmp_path, make, ema):
    x = moons(600, 0)
    c = x[:, :1] ** 2 if make().context_features else None
    common = dict(steps=60, batch_size=64, lr=3e-3, progress=False, val_fraction=0.1,
                  val_every=10, patience=None, seed=3, checkpoint_every=1000, ema=ema)

    torch.manual_seed(0)
    ref = make()
    hist_ref = fit(ref, x, c, checkpoint=tmp_path / "ref.pt", **common)

    torch.manual_seed(0)
    first = make()
    ckpt = tmp_path / "run.pt"
    hist = fit(first, x, c, checkpoint=ckpt, stop_after=25, **common)
    assert hist.steps_done == 25 and ckpt.exists()
    # Resume in a fresh object (as a new process would), from the checkpoint alone.
    torch.manual_seed(123)
    second = make()
    hist = fit(second, x, c, checkpoint=ckpt, **common)
    assert hist.steps_done == 60
    assert hist.val_loss == hist_ref.val_loss and hist.best_step == hist_ref.best_step
    w_ref, w = _weights(ref), _weights(second)
    assert w_ref.keys() == w.keys()
    for k in w_ref:
        assert torch.equal(w_ref[k], w[k]), k
    assert hist.ema == hist_ref.ema == ema
    if ema is not None:  # the EMA really changes the result (it is not silently ignored)
        torch.manual_seed(0)
        plain = make()
        hist_plain = fit(plain, x, c, **dict(common, ema=None))
        assert hist_plain.val_loss != hist_ref.val_loss
        assert not all(torch.equal(v, w_ref[k]) for k, v in _weights(plain).items())


class _Trajectory(torch.nn.Module):
    """A fixed weight trajectory: each training call of ``loss`` sets the frozen parameter ``a`` to
    the call number s (1, 2, ...) and the buffer ``b`` to ``s ** 2``, so after optimiser step s the
    weights are (s, s^2) whatever Adam does. ``c`` is trainable but gets zero gradient (Adam leaves
    it exactly constant). In eval mode ``loss`` returns ``a + 1000 b``, exposing the weights
    validation runs with."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros((), dtype=torch.float64), requires_grad=False)
        self.register_buffer("b", torch.zeros((), dtype=torch.float64))
        self.c = torch.nn.Parameter(torch.tensor([0.3, -1.7, 2.5]))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))  # not averaged

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.a + 1000 * self.b
        with torch.no_grad():
            self.calls += 1
            self.a.fill_(float(self.calls))
            self.b.fill_(float(self.calls) ** 2)
        return (self.c * 0.0).sum() + 0.0 * x.sum()


def _ema_closed_form(values, d):
    """sum_s w_s v_s with w_s = (1 - d) d^(T - s) / (1 - d^T), s = 1 .. T."""
    big_t = len(values)
    return sum((1 - d) * d ** (big_t - s) / (1 - d**big_t) * v for s, v in enumerate(values, 1))


@pytest.mark.parametrize("d", [0.5, 0.9, 0.999])
def test_ema_equals_the_closed_form_weighted_average(d):
    model, x = _Trajectory(), torch.zeros(20, 1)
    c0 = model.c.detach().clone()
    steps = 37
    hist = train(model, model.loss, (x,), steps=steps, batch_size=4, val_fraction=0.0,
                 progress=False, ema=d)
    assert hist.steps_done == steps and hist.ema == d
    s = torch.arange(1, steps + 1, dtype=torch.float64)
    expect_a, expect_b = _ema_closed_form(s.tolist(), d), _ema_closed_form((s**2).tolist(), d)
    assert torch.allclose(model.a, torch.tensor(expect_a, dtype=torch.float64), rtol=1e-13, atol=0)
    assert torch.allclose(model.b, torch.tensor(expect_b, dtype=torch.float64), rtol=1e-13, atol=0)
    assert torch.equal(model.c, c0)  # a constant trajectory: its EMA is the constant, exactly
    assert int(model.calls) == steps  # integer buffers are not averaged


def test_validation_uses_the_ema_weights():
    model, x = _Trajectory(), torch.zeros(20, 1)
    d = 0.8
    hist = train(model, model.loss, (x,), val_data=(x[:3],), steps=20, val_every=5, patience=None,
                 batch_size=4, progress=False, ema=d)
    assert hist.val_step == [5, 10, 15, 20]
    for step, v in zip(hist.val_step, hist.val_loss):
        s = list(range(1, step + 1))
        expect = _ema_closed_form(s, d) + 1000 * _ema_closed_form([k**2 for k in s], d)
        assert v == pytest.approx(expect, rel=1e-13)
    # The val loss grows, so the best is the first validation: its (averaged) weights are restored.
    assert hist.best_step == 5
    assert float(model.a) == pytest.approx(_ema_closed_form([1, 2, 3, 4, 5], d), rel=1e-13)


def test_without_ema_the_last_weights_are_kept():
    # ema=None: the trajectory's last weights are kept as they are (no averaging).
    model, x = _Trajectory(), torch.zeros(20, 1)
    hist = train(model, model.loss, (x,), steps=7, val_fraction=0.0, progress=False)
    assert float(model.a) == 7.0 and float(model.b) == 49.0 and hist.ema is None


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5, -0.1, True, "0.999", 1])
def test_bad_ema_raises(bad):
    with pytest.raises(ValueError, match=r"ema: expected None or a float decay in \(0, 1\)") as err:
        fit(RealNVP(2, transforms=1), moons(100, 0), steps=10, progress=False, ema=bad)
    assert repr(bad) in str(err.value)


def test_resuming_with_a_different_ema_raises(tmp_path):
    ckpt = tmp_path / "run.pt"
    x = moons(200, 0)
    fit(RealNVP(2, transforms=1), x, steps=10, progress=False, checkpoint=ckpt, stop_after=5,
        ema=0.9)
    with pytest.raises(ValueError, match="ema: expected the value the checkpoint"):
        fit(RealNVP(2, transforms=1), x, steps=10, progress=False, checkpoint=ckpt)


def test_stop_after_requires_a_checkpoint():
    with pytest.raises(ValueError, match="stop_after: needs a checkpoint"):
        fit(RealNVP(2, transforms=1), moons(100, 0), steps=10, stop_after=5, progress=False)


def test_fit_initialises_actnorm_from_data_and_learns():
    torch.manual_seed(0)
    x = moons(2000, 0) * 3.0 + 5.0
    layers = RealNVP(2, transforms=4, hidden=(32, 32)).transform.transforms
    flow = Flow(ComposedTransform([ActNorm(2), *layers]), 2)
    actnorm = flow.transform.transforms[0]
    assert not bool(actnorm.initialized)
    hist = fit(flow, x, steps=300, lr=3e-3, progress=False)
    assert bool(actnorm.initialized)
    with torch.no_grad():
        after = -flow.log_prob(x).mean().item()
    # The moons scaled by 3 have NLL about 1.2 + 2 log 3 = 3.4 nats at convergence; without the
    # data-dependent ActNorm start, a 300-step fit on data centred at 5 stays far above that.
    assert after < 4.0 and hist.steps_done == 300


# ----------------------------------------------------------------------------------------------
# the loop as steps (latentatlas.training)
# ----------------------------------------------------------------------------------------------


def _regression(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 3, generator=gen, dtype=torch.float64)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 1)).double()
    return model, (lambda a, b: ((model(a) - b) ** 2).mean()), (x, y)


def test_train_lives_in_latentatlas_training_without_flows():
    import subprocess
    import sys

    from latentatlas import training
    from latentatlas.flows import training as flows_training

    assert flows_training.train is training.train and flows_training.History is training.History
    code = ("import sys, latentatlas.training as t; t.train; "
            "assert not [m for m in sys.modules if m.startswith('latentatlas.flows')]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_trainer_steps_equal_train(tmp_path):
    """Driving the Trainer step by step is train(): same losses, same weights, bit for bit."""
    from latentatlas import training

    model, loss_fn, data = _regression()
    h = training.train(model, loss_fn, data, steps=30, batch_size=16, val_every=10,
                       progress=False, seed=3, ema=0.9)
    want = [p.detach().clone() for p in model.parameters()]

    model, loss_fn, data = _regression()
    opts = training._Options(steps=30, batch_size=16, lr=1e-3, weight_decay=0.0, clip=5.0,
                             val_every=10, patience=10, checkpoint_every=500, progress=False,
                             desc="t", stop_after=None, ema=0.9)
    gen = torch.Generator().manual_seed(3)
    train_set, val = training._split(data, None, 0.1, ["x", "y"], gen)
    trainer = training.Trainer(model, loss_fn, train_set, val, gen, opts, tmp_path / "c.pt")
    assert not trainer.resume()  # no checkpoint yet
    model.train()
    losses = [trainer.step() for _ in range(10)]
    assert trainer.steps_done == 10 and all(math.isfinite(v) for v in losses)
    assert "val" in trainer.check()
    while trainer.steps_done < 30:
        trainer.step()
        if trainer.steps_done % 10 == 0:
            trainer.check()
    hist = trainer.finish()
    assert hist.loss == h.loss and hist.val_loss == h.val_loss and hist.best_step == h.best_step
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), want))
    # the final checkpoint is complete and no temporary file is left behind
    assert (tmp_path / "c.pt").exists() and not list(tmp_path.glob("*.tmp"))
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["history"]["steps_done"] == 30 and state["ema_decay"] == 0.9


def test_strategy_argument():
    from latentatlas import training

    model, loss_fn, data = _regression()
    with pytest.raises(ValueError, match="strategy: expected None, SingleProcess"):
        training.train(model, loss_fn, data, steps=2, progress=False, strategy="ddp")
    with pytest.raises(ValueError, match="strategy: expected a latentatlas.training.Strategy"):
        with training.default_strategy("ddp"):
            pass
    # DataParallel without a process group is SingleProcess, bit for bit
    h1 = training.train(model, loss_fn, data, steps=12, batch_size=8, progress=False,
                        strategy=training.DataParallel())
    w1 = [p.detach().clone() for p in model.parameters()]
    model, loss_fn, data = _regression()
    h2 = training.train(model, loss_fn, data, steps=12, batch_size=8, progress=False)
    assert h1.loss == h2.loss
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), w1))
