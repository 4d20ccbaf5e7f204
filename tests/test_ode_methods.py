"""Every la.ode method against closed-form solutions, in float32 and float64; gradients (gradcheck,
adjoint vs the exact gradient); tuple, 0-dim and backwards-in-time states; the issue-11 defects.

Error bounds. An adaptive step is accepted when its local error estimate is below
``atol + rtol * |y|`` (RMS), so after ``n`` accepted steps the global error of a non-expanding
problem (the rotations and decays below: ``|expm(tA)| <= 1``) is at most about
``n * (atol + rtol * max|y|)``; we allow 2x that (the estimate is of the embedded solution, the
propagated one is at least as accurate, the factor covers estimate-vs-true slack) plus, in
float32, ``n * 8 * eps * max|y|`` of rounding (a few roundings per stage). Fixed-step methods are
checked by their convergence order.
"""

from __future__ import annotations

import math

import pytest
import torch

import latentatlas as la
from latentatlas.ode import METHODS, odeint

D64 = torch.float64
ADAPTIVE = sorted(m for m, tab in METHODS.items() if tab.adaptive)
FIXED = sorted(m for m, tab in METHODS.items() if not tab.adaptive)
# Tolerances per method/dtype chosen so every solve takes well under a second.
TOL = {
    D64: {"adaptive_heun": 1e-6, "fehlberg2": 1e-7, "bosh3": 1e-8, "dopri5": 1e-9, "dopri8": 1e-10},
    torch.float32: {m: 1e-5 for m in ADAPTIVE},
}
# Damped rotation: y(t) = expm(t A) y0 with |expm(t A)| <= 1.
A2 = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=D64)
Y2 = torch.tensor([1.0, -0.5], dtype=D64)


def _bound(stats: la.ode.ODEStats, tol: float, ymax: float, dtype: torch.dtype) -> float:
    n = stats.accepted
    return 2 * n * (tol + tol * ymax) + n * 8 * torch.finfo(dtype).eps * ymax


def _problems(dtype: torch.dtype):
    A = A2.to(dtype)
    y0 = Y2.to(dtype)
    return {
        # linear system: expm
        "rotation": (
            lambda t, y: y @ A.T, y0,
            lambda t: torch.stack([torch.linalg.matrix_exp(ti * A2) @ Y2 for ti in t]).to(dtype),
        ),
        # time-dependent scalar field on a batch: y' = cos(t) y  =>  y = y0 exp(sin t)
        "sine": (
            lambda t, y: torch.cos(t) * y, torch.tensor([0.5, -1.0, 2.0], dtype=dtype),
            lambda t: torch.exp(torch.sin(t.to(D64)))[:, None].to(dtype)
            * torch.tensor([0.5, -1.0, 2.0], dtype=dtype),
        ),
    }


# Fehlberg's 2(1) pair estimates the error of its 1st-order solution, whose error constant is tiny
# (1/512): the propagated 2nd-order solution's local error is ~15x the estimate at these step sizes,
# so the accepted-steps bound does not hold (measured on the rotation: 8.7e-3 at tol 1e-5 with 60
# steps, bound 2.5e-3; torchdiffeq: 8.8e-3). Parity with torchdiffeq is tested in
# test_ode_torchdiffeq.py instead.
_FEHLBERG_XFAIL = pytest.mark.xfail(
    reason="fehlberg2's error estimate underestimates the propagated solution's error "
    "(measured 8.7e-3 vs bound 2.5e-3 at tol 1e-5, same as torchdiffeq)", strict=False,
)
ADAPTIVE_MARKED = [pytest.param(m, marks=_FEHLBERG_XFAIL) if m == "fehlberg2" else m
                   for m in ADAPTIVE]


@pytest.mark.parametrize("dtype", [torch.float32, D64], ids=["f32", "f64"])
@pytest.mark.parametrize("method", ADAPTIVE_MARKED)
@pytest.mark.parametrize("problem", ["rotation", "sine"])
def test_adaptive_closed_form(method: str, dtype: torch.dtype, problem: str) -> None:
    f, y0, exact = _problems(dtype)[problem]
    tol = TOL[dtype][method]
    t = torch.tensor([0.0, 1.5, 3.0], dtype=dtype)  # t[-1] is a step end; t[1] dense output
    ys, stats = odeint(f, y0, t, method=method, rtol=tol, atol=tol, return_stats=True)
    assert ys.dtype == dtype and ys.shape == (3, *y0.shape)
    ref = exact(t)
    ymax = ref.abs().max().item()
    err_end = (ys[-1] - ref[-1]).abs().max().item()
    assert err_end <= _bound(stats, tol, ymax, dtype), (method, err_end, stats)
    assert stats.nfe > 0 and stats.accepted > 0


@pytest.mark.parametrize("dtype", [torch.float32, D64], ids=["f32", "f64"])
@pytest.mark.parametrize("method", FIXED)
def test_fixed_float32_matches_float64(method: str, dtype: torch.dtype) -> None:
    # The same grid in float32 and float64: they differ only by rounding (n * 8 eps * max|y|).
    f32, y32, _ = _problems(dtype)["rotation"]
    f64, y64, exact = _problems(D64)["rotation"]
    t = torch.linspace(0.0, 2.0, 5, dtype=D64)
    ys64, st = odeint(f64, y64, t, method=method, step_size=0.01, return_stats=True)
    ys = odeint(f32, y32, t.to(dtype), method=method, step_size=0.01)
    assert ys.dtype == dtype
    ymax = exact(t).abs().max().item()
    diff = (ys.double() - ys64).abs().max().item()
    assert diff <= st.accepted * 8 * torch.finfo(dtype).eps * ymax + 1e-15


@pytest.mark.parametrize("method,order", [(m, METHODS[m].order) for m in FIXED])
def test_fixed_convergence_order(method: str, order: int) -> None:
    f, y0, exact = _problems(D64)["rotation"]
    t = torch.tensor([0.0, 2.0], dtype=D64)
    hs = [0.1, 0.05] if order < 4 else [0.2, 0.1]
    errs = [(odeint(f, y0, t, method=method, step_size=h)[-1] - exact(t)[-1]).norm().item()
            for h in hs]
    measured = math.log(errs[0] / errs[1], 2)
    assert abs(measured - order) < 0.15, (method, measured)


# Tolerances of the gradchecks: the step sizes depend on the inputs but are not differentiated
# (as torchdiffeq); finite differences see that dependence, an O(global error / 1e-6) effect, so
# the solve must be accurate enough - but not so tight that the error estimate is rounding noise
# (dopri8 at 1e-9: step sizes jitter by 1e-3 relative and its quartic dense output with them).
GRADCHECK_TOL = {"adaptive_heun": 1e-7, "fehlberg2": 1e-8, "bosh3": 1e-9, "dopri5": 1e-9,
                 "dopri8": 1e-7}


@pytest.mark.parametrize(
    "method",
    [pytest.param(m, marks=pytest.mark.slow) if m == "adaptive_heun" else
     pytest.param(m, marks=pytest.mark.xfail(
         reason="fehlberg2: the undifferentiated step-size dependence is larger than gradcheck's "
         "tolerance at tol 1e-8 (measured dL/dw -0.1911 backprop vs -0.1910 finite differences): "
         "its error estimate underestimates the propagated error", strict=False))
     if m == "fehlberg2" else m
     for m in ADAPTIVE + FIXED],
)
def test_gradcheck_direct(method: str) -> None:
    # Backprop through the solver's operations w.r.t. y0, the times and a parameter of f, against
    # finite differences (gradcheck's own tolerances). Fixed steps: step 0.07, so that no
    # interval is close to a multiple of it (the number of steps would jump under perturbation).
    w = torch.tensor(0.7, dtype=D64, requires_grad=True)
    y0 = torch.tensor([1.0, -0.5], dtype=D64, requires_grad=True)
    t = torch.tensor([0.0, 0.3, 0.5], dtype=D64, requires_grad=True)
    tol = GRADCHECK_TOL.get(method)
    kw = {"rtol": tol, "atol": tol} if tol else {"step_size": 0.07}

    def fn(y0, t, w):
        return odeint(lambda s, y: torch.stack([w * y[1], -y[0] * torch.cos(s)]), y0, t,
                      method=method, **kw)

    assert torch.autograd.gradcheck(fn, (y0, t, w))


_DOPRI8_DENSE = pytest.mark.xfail(
    reason="dopri8's dense output is a 4th-order quartic (as torchdiffeq), not tol-bounded: "
    "measured gradient error 4.6e-8 vs bound 1.1e-8 with an interior output time", strict=False,
)


@pytest.mark.parametrize(
    "method,times",
    [(pytest.param(m, (0.0, 0.8, 1.5), marks=_DOPRI8_DENSE) if m == "dopri8"
      else pytest.param(m, (0.0, 0.8, 1.5), marks=_FEHLBERG_XFAIL) if m == "fehlberg2"
      else (m, (0.0, 0.8, 1.5))) for m in ADAPTIVE] + [("dopri8", (0.0, 1.5))],
)
def test_adjoint_and_direct_equal_exact_gradient(method: str, times: tuple) -> None:
    # Loss sum_i <g_i, y(t_i)> of y' = A(w) y; the exact gradient comes from autograd through
    # torch.linalg.matrix_exp. The gradients solve linear ODEs of the same kind (the sensitivity /
    # adjoint equations), so the same accepted-steps bound applies, with max|y| ~ max(|y|, |g|).
    torch.manual_seed(1)
    tol = TOL[D64][method]
    g = torch.rand(len(times), 2, dtype=D64)

    def exact_loss(y0, t, w):  # y(t_i) = expm((t_i - t_0) A) y0
        A = torch.stack([torch.stack([-0.1 * w, 2.0 * w]), torch.stack([-2.0 + 0 * w, -0.1 + 0 * w])])
        return sum((torch.linalg.matrix_exp((ti - t[0]) * A) @ y0 * gi).sum()
                   for ti, gi in zip(t, g))

    def make():
        return (Y2.clone().requires_grad_(), torch.tensor(times, dtype=D64, requires_grad=True),
                torch.tensor(1.0, dtype=D64, requires_grad=True))

    y0, t, w = make()
    exact = torch.autograd.grad(exact_loss(y0, t, w), (y0, t, w))
    for adjoint in (False, True):
        y0, t, w = make()

        def f(s, y, w=w):
            A = torch.stack([torch.stack([-0.1 * w, 2.0 * w]),
                             torch.stack([-2.0 + 0 * w, -0.1 + 0 * w])])
            return y @ A.T

        ys, st = odeint(f, y0, t, method=method, rtol=tol, atol=tol, adjoint=adjoint,
                        params=[w], return_stats=True)
        grads = torch.autograd.grad((ys * g).sum(), (y0, t, w))
        n = st.accepted + (st.accepted_backward or 0)
        bound = 2 * n * 2 * tol * 3  # 3 output times' worth of |g|, max|y| <= ~1.2 -> 2 tol
        for name, a, b in zip(("y0", "t", "w"), grads, exact):
            err = (a - b).abs().max().item()
            assert err <= bound, (method, adjoint, name, err, bound)


@pytest.mark.parametrize("method", ADAPTIVE_MARKED)
def test_backwards_in_time(method: str) -> None:
    f, _, exact = _problems(D64)["rotation"]
    t = torch.tensor([3.0, 2.0, 0.5], dtype=D64)
    y3 = exact(t)[0]
    tol = TOL[D64][method]
    ys, st = odeint(f, y3, t, method=method, return_stats=True, rtol=tol, atol=tol)
    # expm runs backwards here, |expm(-tA)| <= e^{0.1 * 2.5}: amplification 1.3
    err = (ys[-1] - exact(t)[-1]).abs().max().item()
    bound = 1.3 * _bound(st, tol, 1.3, D64)
    assert err <= bound, (method, err, bound)


@pytest.mark.parametrize("method,order", [(m, METHODS[m].order) for m in FIXED])
def test_backwards_in_time_fixed_order(method: str, order: int) -> None:
    f, _, exact = _problems(D64)["rotation"]
    t = torch.tensor([3.0, 0.5], dtype=D64)
    y3 = exact(t)[0]
    hs = [0.02, 0.01] if order == 1 else [0.1, 0.05] if order < 4 else [0.2, 0.1]
    errs = [(odeint(f, y3, t, method=method, step_size=h)[-1] - exact(t)[-1]).norm().item()
            for h in hs]
    measured = math.log(errs[0] / errs[1], 2)
    assert abs(measured - order) < 0.15, (method, measured)


@pytest.mark.parametrize("method", ADAPTIVE_MARKED + FIXED)
def test_tuple_state_equals_joint_state(method: str) -> None:
    # (x, v) as a tuple of (3,) and (3, 1) tensors vs one (3, 2) tensor: identical arithmetic for
    # fixed steps; adaptive: the mixed norm (max over components) differs from the joint RMS, so
    # compare each with the exact solution instead.
    x0 = torch.tensor([1.0, 0.5, -1.0], dtype=D64)
    v0 = torch.zeros(3, 1, dtype=D64)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=D64)
    kw = {"rtol": 1e-9, "atol": 1e-9} if METHODS[method].adaptive else {"step_size": 0.01}
    tol = TOL[D64].get(method, 1e-9)
    if METHODS[method].adaptive:
        kw = {"rtol": tol, "atol": tol}
    xs, vs = odeint(lambda s, y: (y[1][:, 0], -y[0][:, None]), (x0, v0), t, method=method, **kw)
    assert xs.shape == (3, 3) and vs.shape == (3, 3, 1)
    if METHODS[method].adaptive:  # the last time is a step end (interior: dense output)
        ex = torch.cos(t[-1]) * x0
        _, st = odeint(lambda s, y: (y[1][:, 0], -y[0][:, None]), (x0, v0), t, method=method,
                       return_stats=True, **kw)
        assert (xs[-1] - ex).abs().max().item() <= _bound(st, tol, 1.0, D64)
    else:
        joint = odeint(lambda s, y: torch.stack([y[:, 1], -y[:, 0]], 1),
                       torch.stack([x0, v0[:, 0]], 1), t, method=method, **kw)
        torch.testing.assert_close(xs, joint[..., 0], rtol=0, atol=1e-14)
        torch.testing.assert_close(vs[..., 0], joint[..., 1], rtol=0, atol=1e-14)


# -- the defects of issue 11 ----------------------------------------------------------------------

@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_zero_dim_state(method: str) -> None:
    y0 = torch.tensor(1.0, dtype=D64)
    t = torch.tensor([0.0, 1.0], dtype=D64)
    ys = odeint(lambda t, y: -y, y0, t, method=method, rtol=1e-10, atol=1e-10,
                step_size=0.01 if method == "rk4" else None)
    assert ys.shape == (2,)
    assert abs(ys[-1].item() - math.exp(-1)) < 1e-9
    # and with the adjoint: the gradient d y(1) / d y0 = e^-1
    y0 = y0.clone().requires_grad_()
    odeint(lambda t, y: -y, y0, t, method=method, adjoint=True, rtol=1e-10, atol=1e-10,
           step_size=0.01 if method == "rk4" else None)[-1].backward()
    assert abs(y0.grad.item() - math.exp(-1)) < 1e-8


def test_zero_dim_member_of_tuple_state() -> None:
    # (x 0-dim, v (2,)): x' = -x, v' = x  =>  x = e^-t, v = v0 + 1 - e^-t
    x0, v0 = torch.tensor(1.0, dtype=D64), torch.zeros(2, dtype=D64)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=D64)
    xs, vs = odeint(lambda t, y: (-y[0], y[0].expand(2)), (x0, v0), t, rtol=1e-10, atol=1e-10)
    assert xs.shape == (3,) and vs.shape == (3, 2)
    torch.testing.assert_close(xs, torch.exp(-t), rtol=0, atol=1e-9)
    torch.testing.assert_close(vs, (1 - torch.exp(-t))[:, None].expand(3, 2), rtol=0, atol=1e-9)
    # adjoint: d(x(1) + sum v(1)) / d x0 = e^-1 + 2 (1 - e^-1), / d v0 = 1
    x0, v0 = x0.clone().requires_grad_(), v0.clone().requires_grad_()
    xs, vs = odeint(lambda t, y: (-y[0], y[0].expand(2)), (x0, v0), t[:2], rtol=1e-10,
                    atol=1e-10, adjoint=True)
    (xs[-1] + vs[-1].sum()).backward()
    assert abs(x0.grad.item() - (math.exp(-1) + 2 * (1 - math.exp(-1)))) < 1e-8
    torch.testing.assert_close(v0.grad, torch.ones(2, dtype=D64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("grad", [False, True])
def test_f_output_dtype_is_cast(grad: bool) -> None:
    # f returns float64 for a float32 state: cast to float32 (as torchdiffeq), with and without
    # autograd (before: an addmv dtype error with grad, a silent cast without).
    y0 = torch.tensor([1.0, 2.0], requires_grad=grad)
    t = torch.tensor([0.0, 1.0])
    with torch.set_grad_enabled(grad):
        ys = odeint(lambda t, y: (-y).double(), y0, t, rtol=1e-6, atol=1e-6)
    assert ys.dtype == torch.float32
    torch.testing.assert_close(ys[-1], y0.detach() * math.exp(-1), rtol=1e-5, atol=1e-5)
    if grad:
        ys[-1].sum().backward()
        torch.testing.assert_close(y0.grad, torch.full((2,), math.exp(-1)), rtol=1e-5, atol=1e-5)


def test_default_max_steps_solves_long_oscillator() -> None:
    # x'' = -x over [0, 1500] at torchdiffeq's default tolerances needs > 10,000 steps (the old
    # default bound); now there is no bound by default. Bound: accepted * 2 (atol + rtol).
    t = torch.tensor([0.0, 1500.0], dtype=D64)
    ys, st = odeint(lambda t, y: torch.stack([y[1], -y[0]]), torch.tensor([1.0, 0.0], dtype=D64),
                    t, rtol=1e-7, atol=1e-9, return_stats=True)
    assert st.accepted + st.rejected > 10_000
    err = (ys[-1] - torch.tensor([math.cos(1500.0), -math.sin(1500.0)], dtype=D64)).abs().max()
    assert err.item() <= 2 * st.accepted * (1e-9 + 1e-7)


@pytest.mark.parametrize("method", FIXED)
def test_fixed_step_defaults_to_the_grid_t(method: str) -> None:
    # No step_size: one step per interval of t, as torchdiffeq; = step_size = interval length.
    t = torch.tensor([0.0, 0.1, 0.3, 0.35], dtype=D64)
    f = lambda t, y: -y  # noqa: E731
    ys, st = odeint(f, torch.ones(2, dtype=D64), t, method=method, return_stats=True)
    assert st.accepted == 3
    assert st.nfe == 3 * METHODS[method].stages
    by_hand = [torch.ones(2, dtype=D64)]
    for a, b in zip(t[:-1], t[1:]):
        by_hand.append(odeint(f, by_hand[-1], torch.stack([a, b]), method=method,
                              step_size=float(b - a) * (1 + 1e-12))[-1])
    torch.testing.assert_close(ys, torch.stack(by_hand), rtol=0, atol=1e-15)
