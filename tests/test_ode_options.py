"""la.ode step options: first_step, min_step/max_step, grid_constructor, custom norms, perturb,
jump_t/step_t, controller factors, and the adjoint's own method/tolerances/options."""

from __future__ import annotations

import math

import pytest
import torch

from latentatlas.ode import odeint

D64 = torch.float64
A2 = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=D64)
Y2 = torch.tensor([1.0, -0.5], dtype=D64)


def _rot(t, y):
    return y @ A2.T


def _exact(t: float) -> torch.Tensor:
    return torch.linalg.matrix_exp(t * A2) @ Y2


class _Recorder:
    """f that records the times it is called at."""

    def __init__(self, f) -> None:
        self.f, self.times = f, []

    def __call__(self, t, y):
        self.times.append(float(t))
        return self.f(t, y)


def test_first_step() -> None:
    # dopri5's second stage is at t0 + h/5: with first_step=0.5 it is at 0.1 (no initial-step
    # selection evaluation in between).
    rec = _Recorder(_rot)
    odeint(rec, Y2, torch.tensor([0.0, 1.0], dtype=D64), first_step=0.5)
    assert rec.times[:2] == [0.0, 0.1]


def test_max_step_bounds_every_step() -> None:
    rec = _Recorder(_rot)
    ys, st = odeint(rec, Y2, torch.tensor([0.0, 2.0], dtype=D64), rtol=1e-3, atol=1e-3,
                    max_step=0.05, return_stats=True)
    assert st.accepted >= 40
    # FSAL stage times (c = 1) are the step ends: consecutive ones at most max_step apart
    ends = sorted(set(rec.times))
    assert max(b - a for a, b in zip(ends[:-1], ends[1:])) <= 0.05 + 1e-15


def test_min_step_accepts_whatever_the_error() -> None:
    ys, st = odeint(_rot, Y2, torch.tensor([0.0, 1.0], dtype=D64), rtol=1e-13, atol=1e-13,
                    min_step=0.5, return_stats=True)
    assert (st.accepted, st.rejected) == (2, 0)


@pytest.mark.parametrize("method", ["euler", "rk4", "heun3"])
def test_grid_constructor_plus_requested_times(method: str) -> None:
    from latentatlas.ode import METHODS

    t = torch.tensor([0.0, 0.25, 1.0], dtype=D64)
    ys, st = odeint(_rot, Y2, t, method=method, return_stats=True,
                    grid_constructor=lambda f, y0, t: torch.linspace(t[0], t[-1], 11, dtype=D64))
    # grid 0, 0.1, ..., 1 plus 0.25: 11 intervals, each one step
    assert st.accepted == 11 and st.nfe == 11 * METHODS[method].stages
    grid = sorted(set(torch.linspace(0, 1, 11, dtype=D64).tolist()) | {0.25})
    manual = odeint(_rot, Y2, torch.tensor(grid, dtype=D64), method=method)
    torch.testing.assert_close(ys, manual[[0, grid.index(0.25), -1]], rtol=0, atol=1e-15)


def test_zero_norm_accepts_every_step_and_grows_by_ifactor() -> None:
    # Error norm 0: every step accepted and the next is ifactor (10) times larger, so from
    # Hairer's first step h0 the interval [0, 100] takes at most log10(100 / h0) + 2 steps.
    ys, st = odeint(_rot, Y2, torch.tensor([0.0, 100.0], dtype=D64), norm=lambda x: 0.0,
                    return_stats=True, first_step=1e-3)
    assert st.rejected == 0 and st.accepted <= math.log10(100 / 1e-3) + 2


def test_custom_norm_sees_the_state_structure() -> None:
    # Max norm on a tuple state: a stricter norm than the mixed RMS one -> at least as many
    # steps; both within the accepted-steps error bound.
    seen = []

    def linf(x):
        seen.append(type(x))
        return max(xi.abs().max() for xi in x)

    f = lambda t, y: (y[1], -y[0])  # noqa: E731
    y0 = (torch.ones(3, dtype=D64), torch.zeros(3, dtype=D64))
    t = torch.tensor([0.0, 3.0], dtype=D64)
    (xs, _), st = odeint(f, y0, t, rtol=1e-8, atol=1e-8, norm=linf, return_stats=True)
    (_, _), st_rms = odeint(f, y0, t, rtol=1e-8, atol=1e-8, return_stats=True)
    assert seen and all(s is tuple for s in seen)
    assert st.accepted >= st_rms.accepted
    assert (xs[-1] - math.cos(3.0)).abs().max().item() <= 2 * st.accepted * 2e-8


def _step_f(t, y):
    return torch.ones_like(y) * (1.0 if float(t) > 0.5 else 0.0)


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_perturb_evaluates_on_the_right_side_of_grid_times(method: str) -> None:
    # f = 1 for t > 0.5, else 0: y(1) = 0.5. Without perturb euler's step from 0.5 sees f(0.5)=0.
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D64)
    y0 = torch.zeros(1, dtype=D64)
    with_p = odeint(_step_f, y0, t, method=method, perturb=True)
    assert abs(with_p[-1].item() - 0.5) < 1e-15 and with_p[1].item() == 0.0
    if method == "euler":
        assert odeint(_step_f, y0, t, method=method)[-1].item() == 0.0


def _jump_f(t, y):
    return -y if float(t) < 0.5 else y


def test_jump_t_discontinuity() -> None:
    # y' = -y before 0.5, +y after: y(1) = y0. With jump_t the steps land on 0.5 and f is taken on
    # the correct side: error within the accepted-steps bound and fewer evaluations than blind.
    t = torch.tensor([0.0, 1.0], dtype=D64)
    y0 = torch.ones(2, dtype=D64)
    ys, st = odeint(_jump_f, y0, t, rtol=1e-9, atol=1e-9, jump_t=[0.5], return_stats=True)
    blind, st_blind = odeint(_jump_f, y0, t, rtol=1e-9, atol=1e-9, return_stats=True)
    assert (ys[-1] - 1).abs().max().item() <= 2 * st.accepted * 2e-9
    assert st.nfe < st_blind.nfe


def test_step_t_steps_land_there() -> None:
    rec = _Recorder(_rot)
    odeint(rec, Y2, torch.tensor([0.0, 1.0], dtype=D64), step_t=torch.tensor([0.3], dtype=D64),
           first_step=0.2)
    assert any(abs(x - 0.3) < 1e-15 for x in rec.times)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"safety": 0}, "safety"), ({"ifactor": 0.5}, "ifactor"), ({"dfactor": 2.0}, "dfactor"),
     ({"max_step": 0.0}, "max_step"), ({"norm": 3}, "norm"), ({"jump_t": ["a"]}, "jump_t"),
     ({"method": "rk4", "step_size": 0.1, "grid_constructor": lambda f, y, t: t},
      "grid_constructor"),
     ({"adjoint": True, "adjoint_method": "rk45"}, "adjoint_method"),
     ({"adjoint": True, "adjoint_options": {"foo": 1}}, "adjoint_options"),
     ({"adjoint": True, "adjoint_options": {"norm": "l1"}}, "adjoint_options.norm")],
)
def test_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        odeint(_rot, Y2, torch.tensor([0.0, 1.0], dtype=D64), **kwargs)


def test_adjoint_seminorm_and_adjoint_method() -> None:
    # A neural field with many parameters: the seminorm leaves the parameter gradients out of the
    # backward error test, so the backward solve takes no more steps; gradients stay within the
    # accepted-steps bound of the direct (backprop) ones. Seeded.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(),
                              torch.nn.Linear(16, 2)).double()
    f = lambda t, y: net(y)  # noqa: E731
    y0 = torch.randn(4, 2, dtype=D64)
    t = torch.tensor([0.0, 1.0], dtype=D64)
    tol = 1e-8

    def grads(**kw):
        net.zero_grad()
        ys, st = odeint(f, y0, t, rtol=tol, atol=tol, params=list(net.parameters()),
                        return_stats=True, **kw)
        ys[-1].square().sum().backward()
        return [p.grad.clone() for p in net.parameters()], st

    g_direct, st_d = grads()
    g_full, st_full = grads(adjoint=True)
    g_semi, st_semi = grads(adjoint=True, adjoint_options={"norm": "seminorm"})
    g_rk4, _ = grads(adjoint=True, adjoint_method="rk4", adjoint_options={"step_size": 0.01})
    assert st_semi.nfe_backward <= st_full.nfe_backward
    n = st_d.accepted + st_full.accepted_backward
    scale = max(g.abs().max().item() for g in g_direct)
    for gs in (g_full, g_semi):
        err = max((a - b).abs().max().item() for a, b in zip(gs, g_direct))
        assert err <= 2 * n * 2 * tol * max(1.0, scale), err
    # rk4 at h = 0.01 on a smooth field: 4th order, error ~ h^4 = 1e-8 relative
    err = max((a - b).abs().max().item() for a, b in zip(g_rk4, g_direct))
    assert err <= 1e-6 * max(1.0, scale), err


def test_callbacks_see_the_state_structure_and_count_steps() -> None:
    seen: dict[str, list] = {"step": [], "accept_step": [], "reject_step": []}

    def record(name):
        return lambda t0, y0, dt: seen[name].append((float(t0), type(y0), float(dt)))

    y0 = (torch.ones(3, dtype=D64), torch.zeros((), dtype=D64))
    _, st = odeint(lambda t, y: (-y[0], y[0].sum()), y0, torch.tensor([0.0, 2.0], dtype=D64),
                   rtol=1e-8, atol=1e-8, first_step=1.0, return_stats=True,
                   callbacks={k: record(k) for k in seen})
    assert len(seen["accept_step"]) == st.accepted and len(seen["reject_step"]) == st.rejected
    assert len(seen["step"]) == st.accepted + st.rejected and st.rejected >= 1
    assert all(c[1] is tuple for c in seen["step"])
    with pytest.raises(ValueError, match="callbacks"):
        odeint(_rot, Y2, torch.tensor([0.0, 1.0], dtype=D64), callbacks={"end": print})


def test_per_element_tolerances_tuple_and_adjoint() -> None:
    # A tight tolerance on one component and a loose one on the other: more steps than loose
    # everywhere, fewer than tight everywhere; the adjoint accepts them too (the parameter part
    # of the backward state uses the tightest).
    f = lambda t, y: (y[1], -y[0])  # noqa: E731
    y0 = (torch.ones(3, dtype=D64), torch.zeros(3, dtype=D64))
    t = torch.tensor([0.0, 2.0], dtype=D64)
    steps = [odeint(f, y0, t, rtol=r, atol=r, return_stats=True)[1].accepted
             for r in (1e-3, (1e-3, 1e-9), 1e-9)]
    assert steps[0] < steps[1] <= steps[2]
    w = torch.tensor(1.0, dtype=D64, requires_grad=True)
    tol = torch.tensor([1e-6, 1e-9], dtype=D64)
    ys, st = odeint(lambda t, y: w * (y @ A2.T), Y2, t, rtol=tol, atol=tol, adjoint=True,
                    params=[w], return_stats=True)
    (g,) = torch.autograd.grad(ys[-1].sum(), (w,))
    w2 = torch.tensor(1.0, dtype=D64, requires_grad=True)
    (g2,) = torch.autograd.grad(odeint(lambda t, y: w2 * (y @ A2.T), Y2, t, rtol=1e-10,
                                       atol=1e-10)[-1].sum(), (w2,))
    # accepted-steps bound with the loosest tolerance, |y|, |a| <= ~2 (t = 2, |A| ~ 2)
    bound = 2 * (st.accepted + st.accepted_backward) * (1e-6 + 1e-6 * 2) * 2
    assert abs(g.item() - g2.item()) <= bound, (g.item(), g2.item(), bound)
    with pytest.raises(ValueError, match="atol"):
        odeint(f, y0, t, atol=(1e-3,))
