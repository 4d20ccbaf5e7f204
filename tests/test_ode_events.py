"""Terminal events (la.ode.odeint(event_fn=...), la.ode.odeint_event) against analytic event times
and their gradients (implicit differentiation), direct and adjoint."""

from __future__ import annotations

import math

import pytest
import torch

from latentatlas.ode import ODEError, odeint, odeint_event

D64 = torch.float64
G = 9.81
H = 2.0
METHODS_EV = ["dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2", "rk4", "euler"]


def _ball(g: torch.Tensor):
    return lambda t, y: (y[1], -g * torch.ones_like(y[1]))


@pytest.mark.parametrize("adjoint", [False, True], ids=["direct", "adjoint"])
@pytest.mark.parametrize("method", METHODS_EV)
def test_falling_ball_event_time_and_gradients(method: str, adjoint: bool) -> None:
    # h'' = -g from (h0, v0 = 0): hits the ground at t* = sqrt(2 h0 / g) with v* = -sqrt(2 h0 g).
    # The solution is a quadratic, integrated exactly by every method of order >= 2 (euler: the
    # state at step ends is off by g h t / 2, i.e. first order), and the event is located by
    # bisection on the step's interpolant to the time dtype's precision.
    h0 = torch.tensor(H, dtype=D64, requires_grad=True)
    v0 = torch.tensor(0.0, dtype=D64, requires_grad=True)
    g = torch.tensor(G, dtype=D64, requires_grad=True)
    tol = 1e-6 if method in ("adaptive_heun", "fehlberg2") else 1e-8  # 2nd order: fewer steps
    kw = {"step_size": 0.01} if method in ("rk4", "euler") else {"rtol": tol, "atol": tol}
    t_ev, (hs, vs) = odeint_event(_ball(g), (h0, v0), 0.0, lambda t, y: y[0], method=method,
                                  adjoint=adjoint, params=[g], **kw)
    t_star = math.sqrt(2 * H / G)
    v_star = math.sqrt(2 * H * G)
    if method == "euler":
        # Euler's step ends lie on h(t) = H - g t^2 / 2 + g dt t / 2, which reaches 0 at
        # dt/2 + sqrt(dt^2/4 + t*^2), within dt/2 + dt^2 / (8 t*) of t*.
        assert abs(t_ev.item() - t_star) <= 0.01 / 2 + 0.01**2 / (8 * t_star)
        return
    if method in ("adaptive_heun", "fehlberg2"):
        # Their step ends are exact (2nd order, quadratic solution) but their interpolant uses the
        # derivative at the embedded solution: bound the event time by the accepted-steps bound
        # on the state (2 n 2 tol) divided by |h'(t*)| = v*.
        _, _, st = odeint_event(_ball(g), (h0, v0), 0.0, lambda t, y: y[0], method=method,
                                return_stats=True, **kw)
        assert abs(t_ev.item() - t_star) <= 2 * st.accepted * 2 * tol / v_star
        return
    # The other interpolants reproduce quadratics: exact up to rounding.
    assert abs(t_ev.item() - t_star) < 1e-12
    assert hs.shape == (2,) and abs(hs[-1].item()) < 1e-12
    assert abs(vs[-1].item() + v_star) < 1e-10
    # d t*/d h0 = 1 / sqrt(2 h0 g), d t*/d g = -t* / (2 g), d t*/d v0 = 1 / g at v0 = 0
    dh, dv, dg = torch.autograd.grad(t_ev, (h0, v0, g))
    assert abs(dh.item() - 1 / math.sqrt(2 * H * G)) < 1e-9
    assert abs(dv.item() - 1 / G) < 1e-9
    assert abs(dg.item() + t_star / (2 * G)) < 1e-9
    # d v*/d h0 = -sqrt(g / (2 h0)) (through the state at the event)
    (dvh,) = torch.autograd.grad(odeint_event(_ball(g), (h0, v0), 0.0, lambda t, y: y[0],
                                              method=method, adjoint=adjoint, params=[g],
                                              **kw)[1][1][-1], (h0,))
    assert abs(dvh.item() + math.sqrt(G / (2 * H))) < 1e-9


@pytest.mark.parametrize("method", ["dopri5", "dopri8", "bosh3"])
@pytest.mark.parametrize("dtype", [torch.float32, D64], ids=["f32", "f64"])
def test_exponential_threshold_event(method: str, dtype: torch.dtype) -> None:
    # y' = -y, y0 = 1 reaches 1/4 at t* = ln 4. The state error at the event is <= the dense
    # output's error, ~ accepted * 2 tol (as for step ends) plus the interpolant's own error
    # (4th order in h); t* inherits it divided by |y'(t*)| = 1/4.
    tol = 1e-6 if dtype == torch.float32 else 1e-10
    t_ev, ys, st = odeint_event(lambda t, y: -y, torch.ones(3, dtype=dtype), 0.0,
                                lambda t, y: y[0] - 0.25, rtol=tol, atol=tol, method=method,
                                return_stats=True)
    assert t_ev.dtype == dtype and ys.shape == (2, 3)
    eps = torch.finfo(dtype).eps
    bound = (2 * st.accepted * 2 * tol + 8 * st.accepted * eps) / 0.25
    assert abs(t_ev.item() - math.log(4)) <= bound, (t_ev.item(), bound)


def test_reverse_time_and_first_of_two_events() -> None:
    # Backwards from t0 = 0 with y' = 1 (y = t): components y + 1 (hits at -1) and y + 2 (at -2).
    t_ev, ys = odeint_event(lambda t, y: torch.ones_like(y), torch.zeros(1, dtype=D64), 0.0,
                            lambda t, y: torch.cat([y + 1, y + 2]), reverse_time=True)
    assert abs(t_ev.item() + 1) < 1e-12 and abs(ys[-1].item() + 1) < 1e-12


def test_event_at_t0_and_missing_event() -> None:
    t_ev, ys = odeint(lambda t, y: -y, torch.zeros(2, dtype=D64), torch.tensor([0.5, 1.0],
                      dtype=D64), event_fn=lambda t, y: y[0])
    assert t_ev.item() == 0.5 and torch.equal(ys[0], ys[1])
    with pytest.raises(ODEError, match="no event before t=3"):
        odeint(lambda t, y: -y, torch.ones(2, dtype=D64), torch.tensor([0.0, 3.0], dtype=D64),
               event_fn=lambda t, y: y[0] + 1)


def test_time_dependent_event_and_t0_gradient() -> None:
    # y' = 1 from (t0, y0 = 0): y = t - t0; event g = y - (1 - t) (= 0 at t* = (1 + t0) / 2).
    t0 = torch.tensor(0.2, dtype=D64, requires_grad=True)
    t_ev, _ = odeint_event(lambda t, y: torch.ones_like(y), torch.zeros((), dtype=D64), t0,
                           lambda t, y: y - (1 - t))
    assert abs(t_ev.item() - 0.6) < 1e-12
    (d,) = torch.autograd.grad(t_ev, (t0,))
    assert abs(d.item() - 0.5) < 1e-10


def test_fixed_step_event_needs_step_size() -> None:
    with pytest.raises(ValueError, match="step_size"):
        odeint_event(lambda t, y: -y, torch.ones(1, dtype=D64), 0.0, lambda t, y: y - 0.5,
                     method="rk4")
