"""latentatlas.ode.torchdiffeq: torchdiffeq's signatures and defaults, the same results and work
as torchdiffeq on shared methods, typed NotImplementedError for what is not offered."""

from __future__ import annotations

import importlib
import inspect
import math

import pytest
import torch
import torchdiffeq

from latentatlas.ode import METHODS, ODEMaxStepsError
from latentatlas.ode import torchdiffeq as ltd

D64 = torch.float64
A2 = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=D64)
Y2 = torch.tensor([1.0, -0.5], dtype=D64)
SHARED = sorted(set(METHODS) & set(importlib.import_module("torchdiffeq._impl.odeint").SOLVERS))


class _Count:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, t, y):
        self.n += 1
        return y @ A2.T


@pytest.mark.parametrize("name", ["odeint", "odeint_adjoint", "odeint_event"])
def test_signatures_match_torchdiffeq(name: str) -> None:
    ours = inspect.signature(getattr(ltd, name)).parameters
    theirs = inspect.signature(getattr(torchdiffeq, name)).parameters
    assert list(ours) == list(theirs)
    for k in theirs:
        assert ours[k].kind == theirs[k].kind, k
        if theirs[k].default is not inspect.Parameter.empty and k != "odeint_interface":
            assert ours[k].default == theirs[k].default, k


@pytest.mark.parametrize("method", SHARED)
def test_same_results_and_work_as_torchdiffeq(method: str) -> None:
    # rtol 1e-5, atol 1e-7 (adaptive_heun needs 1e5 steps at the defaults). Adaptive: NFE at most
    # 10% above torchdiffeq's (the same tableaux and controller; the initial step and rounding
    # differ slightly; fewer is fine) and both within
    # the accepted-steps bound of the exact solution. Fixed (default grid = t, here 0.01-spaced):
    # the same tableau gives the same numbers up to rounding, rk4 differs (3/8 rule) by O(h^4).
    adaptive = METHODS[method].adaptive
    t = torch.linspace(0.0, 2.0, 3 if adaptive else 201, dtype=D64)
    exact = torch.stack([torch.linalg.matrix_exp(ti * A2) @ Y2 for ti in t])
    fo, ft = _Count(), _Count()
    ours = ltd.odeint(fo, Y2, t, method=method, rtol=1e-5, atol=1e-7)
    theirs = torchdiffeq.odeint(ft, Y2, t, method=method, rtol=1e-5, atol=1e-7)
    if adaptive:
        assert fo.n <= 1.1 * ft.n, (fo.n, ft.n)
        n_steps = fo.n / max(1, METHODS[method].stages - 1)
        bound = 2 * n_steps * 2 * (1e-7 + 1e-5)
        if method != "fehlberg2":  # see test_ode_methods: its estimate underestimates the error
            assert (ours[-1] - exact[-1]).abs().max().item() <= bound
        theirs_err = (theirs[-1] - exact[-1]).abs().max().item()
        ours_err = (ours[-1] - exact[-1]).abs().max().item()
        assert ours_err <= 2 * theirs_err + bound
    elif method == "rk4":
        assert fo.n == ft.n
        assert (ours - theirs).abs().max().item() < 1e-9  # both O(h^4) = 1e-8 off the exact
    else:
        assert fo.n == ft.n
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-13)


def test_zero_dim_and_tuple_states_through_the_adapter() -> None:
    ys = ltd.odeint(lambda t, y: -y, torch.tensor(1.0), torch.tensor([0.0, 1.0]))
    assert ys.shape == (2,) and abs(ys[-1].item() - math.exp(-1)) < 1e-6
    xs, vs = ltd.odeint(lambda t, y: (y[1], -y[0]), (torch.tensor(1.0, dtype=D64),
                        torch.tensor(0.0, dtype=D64)), torch.tensor([0.0, 1.0], dtype=D64))
    assert abs(xs[-1].item() - math.cos(1.0)) < 1e-7 and abs(vs[-1].item() + math.sin(1.0)) < 1e-7


def test_adjoint_gradients_match_torchdiffeq() -> None:
    # Same module, same loss: our adjoint gradients vs torchdiffeq's, both at rtol 1e-7 / atol
    # 1e-9 from the same ODE: they differ by at most the two solves' errors (bound: accepted
    # steps * 2 * (atol + rtol * max|y|), both sides). Seeded.
    torch.manual_seed(0)

    class Field(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(),
                                           torch.nn.Linear(8, 2)).double()

        def forward(self, t, y):
            return self.net(y)

    field = Field()
    y0 = torch.randn(3, 2, dtype=D64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D64)
    grads = []
    for mod in (ltd, torchdiffeq):
        field.zero_grad()
        mod.odeint_adjoint(field, y0, t).square().sum().backward()
        grads.append([p.grad.clone() for p in field.parameters()])
    err = max((a - b).abs().max().item() for a, b in zip(*grads))
    assert err < 1e-6, err


def test_event_matches_torchdiffeq() -> None:
    # Ball from 2 m: both locate the ground at sqrt(2 h / g) and give the same implicit
    # gradients (to the accuracy of torchdiffeq's bisection, which stops at atol = 1e-9).
    class Ball(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.g = torch.nn.Parameter(torch.tensor(9.81, dtype=D64))

        def forward(self, t, y):
            return y[1], -self.g * torch.ones_like(y[1])

    out = []
    for mod in (ltd, torchdiffeq):
        ball = Ball()
        h0 = torch.tensor(2.0, dtype=D64, requires_grad=True)
        t_ev, sol = mod.odeint_event(ball, (h0, torch.tensor(0.0, dtype=D64)),
                                     torch.tensor(0.0, dtype=D64), event_fn=lambda t, y: y[0],
                                     odeint_interface=mod.odeint_adjoint)
        (t_ev + sol[1][-1]).backward()
        out.append((t_ev.item(), h0.grad.item(), ball.g.grad.item()))
    assert abs(out[0][0] - math.sqrt(2 * 2.0 / 9.81)) < 1e-12
    for a, b in zip(*out):
        assert abs(a - b) < 1e-8


def test_per_element_tolerances_like_torchdiffeq() -> None:
    # rtol = atol = (1e-3, 1e-9) per component: the same NFE (within 10%) and results within the
    # looser component's accepted-steps bound of torchdiffeq's.
    tol = torch.tensor([1e-3, 1e-9], dtype=D64)
    t = torch.tensor([0.0, 2.0], dtype=D64)
    fo, ft = _Count(), _Count()
    ours = ltd.odeint(fo, Y2, t, rtol=tol, atol=tol)
    theirs = torchdiffeq.odeint(ft, Y2, t, rtol=tol, atol=tol)
    assert fo.n <= 1.1 * ft.n
    n_steps = fo.n / 6
    assert (ours - theirs).abs().max().item() <= 2 * 2 * n_steps * 2 * 2e-9
    with pytest.raises(ValueError, match="rtol"):
        ltd.odeint(fo, Y2, t, rtol=torch.tensor([1e-3, 1e-4, 1e-5]))


def test_odeint_with_event_fn_direction_from_t() -> None:
    t_ev, ys = ltd.odeint(lambda t, y: torch.ones_like(y), torch.zeros(1, dtype=D64),
                          torch.tensor([0.0, -1.0], dtype=D64), event_fn=lambda t, y: y + 3)
    assert abs(t_ev.item() + 3) < 1e-12
    with pytest.raises(ValueError, match="len"):
        ltd.odeint(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0, 2.0]),
                   event_fn=lambda t, y: y)


def test_options_are_mapped() -> None:
    t = torch.tensor([0.0, 1.0], dtype=D64)
    with pytest.raises(ODEMaxStepsError):
        ltd.odeint(lambda t, y: y @ A2.T, Y2, t, options={"max_num_steps": 3})
    ys = ltd.odeint(lambda t, y: -y, torch.ones(1, dtype=D64), t, method="rk4",
                    options={"step_size": 0.01, "interp": "cubic", "perturb": True})
    assert abs(ys[-1].item() - math.exp(-1)) < 1e-9
    ys = ltd.odeint(lambda t, y: -y, torch.ones(1, dtype=D64), t, method="euler",
                    options={"grid_constructor": lambda f, y0, t: torch.linspace(0, 1, 5,
                                                                                 dtype=D64)})
    assert abs(ys[-1].item() - 0.75**4) < 1e-15  # 4 Euler steps of 0.25


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: ltd.odeint(lambda t, y: -y, Y2, torch.tensor([0.0, 1.0]),
                            method="explicit_adams"), "explicit_adams"),
        (lambda: ltd.odeint(lambda t, y: -y, Y2, torch.tensor([0.0, 1.0]),
                            method="implicit_adams"), "implicit_adams"),
        (lambda: ltd.odeint(lambda t, y: -y, Y2, torch.tensor([0.0, 1.0]),
                            method="scipy_solver"), "scipy_solver"),
        (lambda: ltd.odeint(lambda t, y: -y, Y2, torch.tensor([0.0, 1.0]),
                            options={"solver": "RK45"}), "solver"),
        (lambda: ltd.odeint(lambda t, y: -y, Y2, torch.tensor([0.0, 1.0]),
                            options={"dtype": torch.float32}), "dtype"),
        (lambda: ltd.odeint_adjoint(torch.nn.Identity(), Y2, torch.tensor([0.0, 1.0]),
                                    adjoint_options={"norm": lambda x: 0.0}), "norm"),
    ],
)
def test_not_offered_raises_not_implemented(call, match: str) -> None:
    with pytest.raises(NotImplementedError, match=match):
        call()


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "rk4"])
def test_callbacks_called_like_torchdiffeq(method: str) -> None:
    # Adaptive: "step" before every attempt, then "accept" or "reject" for it; the accepted
    # (t0, dt) tile [0, 1]. Fixed grid: only "step", with the same (t0, dt) as torchdiffeq.
    class F(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[str, float, float]] = []

        def forward(self, t, y):
            return y @ A2.T

        def callback_step(self, t0, y0, dt):
            self.calls.append(("step", float(t0), float(dt)))

        def callback_accept_step(self, t0, y0, dt):
            self.calls.append(("accept", float(t0), float(dt)))

        def callback_reject_step(self, t0, y0, dt):
            self.calls.append(("reject", float(t0), float(dt)))

    t = torch.linspace(0.0, 1.0, 5, dtype=D64)
    f = F()
    ltd.odeint(f, Y2, t, method=method, rtol=1e-6, atol=1e-6)
    if not METHODS[method].adaptive:
        g = F()
        with pytest.warns(UserWarning):  # torchdiffeq: fixed grids support only callback_step
            torchdiffeq.odeint(g, Y2, t, method=method)
        assert f.calls == g.calls and len(f.calls) == 4
        return
    names = [c[0] for c in f.calls]
    assert names[0::2] == ["step"] * (len(names) // 2)
    assert set(names[1::2]) <= {"accept", "reject"} and "accept" in names
    accepted = [c for c in f.calls if c[0] == "accept"]
    assert accepted[0][1] == 0.0
    for a, b in zip(accepted[:-1], accepted[1:]):
        assert abs(a[1] + a[2] - b[1]) < 1e-15
    assert abs(accepted[-1][1] + accepted[-1][2] - 1.0) < 1e-15


def test_adjoint_callbacks_not_offered() -> None:
    class F(torch.nn.Module):
        def forward(self, t, y):
            return -y

        def callback_step_adjoint(self, t0, y0, dt):
            pass

    with pytest.raises(NotImplementedError, match="callback_step_adjoint"):
        ltd.odeint(F(), Y2, torch.tensor([0.0, 1.0], dtype=D64))


def test_adjoint_params_needed_for_plain_functions() -> None:
    with pytest.raises(ValueError, match="adjoint_params"):
        ltd.odeint_adjoint(lambda t, y: -y, Y2, torch.tensor([0.0, 1.0], dtype=D64))
    ys = ltd.odeint_adjoint(lambda t, y: -y, Y2, torch.tensor([0.0, 1.0], dtype=D64),
                            adjoint_params=())
    assert ys.shape == (2, 2)
