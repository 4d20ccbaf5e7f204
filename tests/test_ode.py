"""la.ode.odeint against exact solutions (exponentials, matrix exponentials), convergence orders,
tuple states, backwards integration, dense output and the error paths. float64 unless stated."""

from __future__ import annotations

import math

import pytest
import torch

import latentatlas as la
from latentatlas.ode import (
    ODEMaxStepsError,
    ODENonFiniteError,
    ODEStats,
    ODEStepSizeError,
    odeint,
)

D64 = torch.float64

# A 3-D linear system with a damped rotation and a coupled decaying mode: y(t) = expm(t A) y0.
A3 = torch.tensor([[-0.5, 2.0, 0.0], [-2.0, -0.5, 0.3], [0.2, 0.0, -1.0]], dtype=D64)
Y3 = torch.tensor([1.0, -0.5, 2.0], dtype=D64)
# Harmonic oscillator x'' = -x as a first-order system.
AH = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=D64)
YH = torch.tensor([1.0, 0.0], dtype=D64)


def _linear(A: torch.Tensor):
    return lambda t, y: y @ A.T


def _exact_linear(A: torch.Tensor, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.linalg.matrix_exp(ti * A) @ y0 for ti in t])


PROBLEMS = {
    "decay": (lambda t, y: -y, torch.ones(4, dtype=D64), lambda t: torch.exp(-t)[:, None].expand(-1, 4)),
    "harmonic": (_linear(AH), YH, lambda t: _exact_linear(AH, YH, t)),
    "linear3": (_linear(A3), Y3, lambda t: _exact_linear(A3, Y3, t)),
}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("tol", [1e-4, 1e-6, 1e-8, 1e-10])
def test_dopri5_global_error_below_ten_tol(name: str, tol: float) -> None:
    # The local error test keeps each step's error below tol * (1 + |y|) (RMS); the global error of
    # these contractive / rotating problems over a few time units stays within a few tol, so
    # 10 * tol is a defensible bound (measured: 0.3-3.5 tol). Interior times use the dense output.
    f, y0, exact = PROBLEMS[name]
    t = torch.linspace(0.0, 5.0, 11, dtype=D64)
    ys = odeint(f, y0, t, rtol=tol, atol=tol)
    assert ys.shape == (11, *y0.shape)
    assert ys.dtype == D64
    err = (ys - exact(t)).abs().max().item()
    assert err < 10 * tol, f"{name}: global error {err:.3g} >= 10 * tol = {10 * tol:.1g}"
    assert torch.equal(ys[0], y0)


def test_dopri5_backward_in_time() -> None:
    # Integrate y' = A y from t=2 back to t=0 (and through interior times): y(t) = expm((t-2) A) y2.
    t = torch.tensor([2.0, 1.3, 0.4, 0.0], dtype=D64)
    y2 = Y3
    ys, stats = odeint(_linear(A3), y2, t, rtol=1e-9, atol=1e-9, return_stats=True)
    exact = torch.stack([torch.linalg.matrix_exp((ti - 2.0) * A3) @ y2 for ti in t])
    assert (ys - exact).abs().max().item() < 1e-8
    assert stats.accepted > 0


def test_tuple_state_matches_joint_state() -> None:
    # The harmonic oscillator as a tuple (x, v) with batch shapes (B,) and a scalar-per-row log
    # term, like a CNF state (z (B, D), logp (B,)): x = cos t, v = -sin t, l' = -x  =>  l = -sin t.
    B = 5
    x0 = torch.ones(B, dtype=D64)
    v0 = torch.zeros(B, dtype=D64)
    l0 = torch.zeros(B, 1, dtype=D64)
    t = torch.linspace(0.0, 3.0, 7, dtype=D64)

    def f(t, y):
        x, v, l = y
        return v, -x, -x[:, None]

    xs, vs, ls = odeint(f, (x0, v0, l0), t, rtol=1e-10, atol=1e-10)
    assert xs.shape == (7, B) and vs.shape == (7, B) and ls.shape == (7, B, 1)
    assert (xs - torch.cos(t)[:, None]).abs().max() < 1e-9
    assert (vs + torch.sin(t)[:, None]).abs().max() < 1e-9
    assert (ls[..., 0] + torch.sin(t)[:, None]).abs().max() < 1e-9


def test_tuple_state_fixed_step_and_backward() -> None:
    t = torch.tensor([1.0, 0.0], dtype=D64)
    xs, vs = odeint(lambda t, y: (y[1], -y[0]), (YH[:1], YH[1:]), t, method="rk4", step_size=0.01)
    # exact: from (x, v)=(1, 0) at t=1 back to t=0: x(0) = cos(-1), v(0) = -sin(-1)
    assert abs(xs[-1].item() - math.cos(1.0)) < 1e-9
    assert abs(vs[-1].item() - math.sin(1.0)) < 1e-9


@pytest.mark.parametrize("method,order", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_fixed_step_convergence_order(method: str, order: int) -> None:
    # Global error ~ C h^p: halving h divides it by 2^p; observed p = log2(e(h) / e(h/2)).
    # Steps chosen in the asymptotic regime and far above round-off (rk4 error ~1e-8 at h=0.05).
    h = {"euler": 0.01, "midpoint": 0.02, "rk4": 0.1}[method]
    t = torch.tensor([0.0, 2.0], dtype=D64)
    exact = _exact_linear(A3, Y3, t)[-1]
    errs = []
    for step in (h, h / 2):
        ys, stats = odeint(_linear(A3), Y3, t, method=method, step_size=step, return_stats=True)
        errs.append((ys[-1] - exact).norm().item())
        n_steps = round(2.0 / step)
        assert stats.accepted == n_steps and stats.rejected == 0
        assert stats.nfe == n_steps * METHOD_STAGES[method]
    observed = math.log2(errs[0] / errs[1])
    assert abs(observed - order) < 0.2, f"{method}: observed order {observed:.3f}"


METHOD_STAGES = {"euler": 1, "midpoint": 2, "rk4": 4}


def test_fixed_step_hits_requested_times_exactly() -> None:
    # Intervals 0.35 and 0.65 with step 0.1: 4 + 7 steps, the last of each clipped. Exactness check
    # with y' = 1 (rk4 is exact for polynomials of degree <= 4): y(t_i) = t_i to round-off.
    t = torch.tensor([0.0, 0.35, 1.0], dtype=D64)
    ys, stats = odeint(lambda t, y: torch.ones_like(y) * (1 + 0 * t), torch.zeros(1, dtype=D64),
                       t, method="rk4", step_size=0.1, return_stats=True)
    assert stats.accepted == 4 + 7
    assert (ys[:, 0] - t).abs().max().item() < 1e-14
    # time-dependent field y' = 3 t^2 -> y = t^3, also exact for rk4
    ys = odeint(lambda t, y: 3 * t**2 * torch.ones_like(y), torch.zeros(1, dtype=D64), t,
                method="rk4", step_size=0.1)
    assert (ys[:, 0] - t**3).abs().max().item() < 1e-14


def test_dense_output_does_not_add_steps() -> None:
    # Requested interior times are served by the continuous extension: the number of function
    # evaluations is the same for 2 and for 200 output times, and the interior values are accurate.
    f, y0, exact = PROBLEMS["linear3"]
    tol = 1e-8
    _, s2 = odeint(f, y0, torch.tensor([0.0, 4.0], dtype=D64), rtol=tol, atol=tol, return_stats=True)
    t = torch.linspace(0.0, 4.0, 200, dtype=D64)
    ys, s200 = odeint(f, y0, t, rtol=tol, atol=tol, return_stats=True)
    assert s2.nfe == s200.nfe
    assert (ys - exact(t)).abs().max().item() < 10 * tol


def test_time_dependent_field_and_float32() -> None:
    # y' = -2 t y  ->  y = exp(-t^2); float32 state and times keep float32.
    t = torch.linspace(0, 2, 5)
    ys, stats = odeint(lambda t, y: -2 * t * y, torch.ones(3), t, rtol=1e-5, atol=1e-6,
                       return_stats=True)
    assert ys.dtype == torch.float32
    assert (ys - torch.exp(-t**2)[:, None]).abs().max().item() < 1e-4
    assert isinstance(stats, ODEStats) and stats.nfe == 2 + 6 * (stats.accepted + stats.rejected)


def test_batch_shares_one_step_size() -> None:
    # B identical rows take exactly the steps of one row (RMS norm over the batch).
    f = _linear(A3)
    _, s1 = odeint(f, Y3[None], torch.tensor([0.0, 3.0], dtype=D64), return_stats=True)
    _, s8 = odeint(f, Y3.expand(8, 3).clone(), torch.tensor([0.0, 3.0], dtype=D64),
                   return_stats=True)
    assert (s1.nfe, s1.accepted) == (s8.nfe, s8.accepted)


def test_times_as_list_and_single_time() -> None:
    ys = odeint(lambda t, y: -y, torch.ones(2, dtype=D64), [0.0, 1.0])
    assert abs(ys[-1, 0].item() - math.exp(-1)) < 1e-6  # default rtol=1e-6
    ys = odeint(lambda t, y: -y, torch.ones(2, dtype=D64), torch.tensor([0.5], dtype=D64))
    assert ys.shape == (1, 2)


def test_neural_ode_layer() -> None:
    torch.manual_seed(1)

    class Field(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 2).double()

        def forward(self, t, z):
            return torch.tanh(self.lin(z))

    field = Field()
    layer = la.flows.NeuralODE(field, t=(0.0, 0.5, 1.0), rtol=1e-9, atol=1e-9)
    x = torch.randn(4, 2, dtype=D64)
    z = layer(x)
    ref = odeint(field, x, torch.tensor([0.0, 0.5, 1.0], dtype=D64), rtol=1e-9, atol=1e-9)
    assert z.shape == (4, 2)
    assert (z - ref[-1]).abs().max().item() < 1e-12  # fused no-grad ops vs autograd ops: rounding
    assert layer.last_stats is not None and layer.last_stats.nfe > 0
    z.square().sum().backward()
    assert layer.last_stats.nfe_backward > 0
    assert field.lin.weight.grad is not None
    traj = la.flows.NeuralODE(field, t=(0.0, 0.5, 1.0), return_trajectory=True)(x)
    assert traj.shape == (3, 4, 2)
    with pytest.raises(ValueError, match="t"):
        la.flows.NeuralODE(field, t=(0.0,))


# -- error paths -------------------------------------------------------------------------------


def test_max_steps_error_says_where() -> None:
    # Stiff-ish fast oscillation with tight tolerance: 20 steps are not enough to reach t=10.
    f = _linear(50 * AH)
    with pytest.raises(ODEMaxStepsError, match=r"max_steps=20 reached at t=0\.\d+") as info:
        odeint(f, YH, torch.tensor([0.0, 10.0], dtype=D64), rtol=1e-10, atol=1e-10, max_steps=20)
    msg = str(info.value)
    assert "[0, 10]" in msg and "step size" in msg
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(ODEMaxStepsError, match="t=0.5"):
        odeint(f, YH, torch.tensor([0.0, 1.0], dtype=D64), method="euler", step_size=0.1,
               max_steps=5)


def test_blow_up_raises_with_time() -> None:
    # y' = y^2, y(0) = 1 blows up at t = 1; integrating to t = 2 must fail near t = 1.
    with pytest.raises((ODEStepSizeError, ODEMaxStepsError, ODENonFiniteError)) as info:
        odeint(lambda t, y: y**2, torch.ones(1, dtype=D64), torch.tensor([0.0, 2.0], dtype=D64))
    reached = float(str(info.value).split("at t=")[1].split()[0])
    assert 0.99 < reached <= 1.0


def test_non_finite_raises_with_time() -> None:
    def f(t, y):
        return torch.where(t > 0.5, torch.full_like(y, float("nan")), -y)

    with pytest.raises(ODENonFiniteError, match=r"t=0\.[56]"):
        odeint(f, torch.ones(2, dtype=D64), torch.tensor([0.0, 1.0], dtype=D64), method="rk4",
               step_size=0.1)
    with pytest.raises(ODENonFiniteError, match="t=0"):
        odeint(lambda t, y: y * float("nan"), torch.ones(2, dtype=D64), [0.0, 1.0])
    # dopri5 shrinks the step on non-finite trial steps, creeps up to t = 0.5, then gives up
    with pytest.raises(ODENonFiniteError, match=r"t=0\.(5|4999)") as info:
        odeint(f, torch.ones(2, dtype=D64), torch.tensor([0.0, 1.0], dtype=D64), max_steps=500)
    assert "NaN" in str(info.value)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"method": "rk45"}, "method"),
        ({"rtol": 0.0}, "rtol"),
        ({"atol": -1e-8}, "atol"),
        ({"method": "rk4", "grid_constructor": lambda f, y0, t: t[:1]}, "grid_constructor"),
        ({"min_step": 2.0, "max_step": 1.0}, "min_step"),
        ({"jump_t": [0.5], "step_t": [0.5]}, "step_t, jump_t"),
        ({"event_fn": 3}, "event_fn"),
        ({"method": "rk4", "step_size": 0.0}, "step_size"),
        ({"max_steps": 0}, "max_steps"),
        ({"t": torch.tensor([0.0, 1.0, 0.5])}, "t: times must be strictly"),
        ({"t": torch.tensor([0.0, 0.0])}, "t: "),
        ({"t": torch.zeros(2, 2)}, "t: expected a 1-D"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"t": torch.tensor([0.0, 1.0])}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        odeint(lambda t, y: -y, torch.ones(3), **args)


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"f: output must have the shape of y0 \(3,\)"):
        odeint(lambda t, y: y[:2], torch.ones(3), [0.0, 1.0])
    with pytest.raises(ValueError, match="tuple of 2 tensors"):
        odeint(lambda t, y: y[0], (torch.ones(3), torch.ones(1)), [0.0, 1.0])
    with pytest.raises(ValueError, match=r"component 1"):
        odeint(lambda t, y: (y[0], y[0]), (torch.ones(3), torch.ones(1)), [0.0, 1.0])
    with pytest.raises(ValueError, match=r"y0\[1\]"):
        odeint(lambda t, y: y, (torch.ones(3), torch.ones(1, dtype=D64)), [0.0, 1.0])
    with pytest.raises(ValueError, match="y0"):
        odeint(lambda t, y: y, torch.ones(3, dtype=torch.long), [0.0, 1.0])
