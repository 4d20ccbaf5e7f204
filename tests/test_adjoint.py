"""Adjoint gradients of la.ode.odeint against direct backprop and central finite differences, and
the memory of the adjoint backward pass. float64 throughout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latentatlas.ode import odeint

D64 = torch.float64


class MLPField(nn.Module):
    """2-layer tanh MLP vector field f(t, z) = W2 tanh(W1 [z, t] + b1) + b2 (time-dependent)."""

    def __init__(self, dim: int = 2, hidden: int = 8) -> None:
        super().__init__()
        self.l1 = nn.Linear(dim + 1, hidden).double()
        self.l2 = nn.Linear(hidden, dim).double()

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        tt = t.expand(*z.shape[:-1], 1)
        return self.l2(torch.tanh(self.l1(torch.cat([z, tt], dim=-1))))


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    f = MLPField()
    y0 = torch.randn(3, 2, dtype=D64)
    t = torch.tensor([0.0, 0.4, 1.1], dtype=D64)
    w = torch.randn(3, 3, 2, dtype=D64)  # loss weights on all outputs (incl. y(t0))
    return f, y0, t, w


def _grads(f, y0, t, w, **kw):
    y0 = y0.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True)
    f.zero_grad()
    loss = (odeint(f, y0, t, **kw) * w).sum()
    loss.backward()
    return [y0.grad.clone(), t.grad.clone()] + [p.grad.clone() for p in f.parameters()]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference relative to the largest entry of b (entries can be ~0)."""
    return ((a - b).abs().max() / b.abs().max()).item()


def test_adjoint_equals_backprop_and_finite_differences() -> None:
    f, y0, t, w = _setup()
    tol = 1e-10
    adj = _grads(f, y0, t, w, rtol=tol, atol=tol, adjoint=True)
    direct = _grads(f, y0, t, w, rtol=tol, atol=tol, adjoint=False)
    names = ["y0", "t", "l1.weight", "l1.bias", "l2.weight", "l2.bias"]
    for name, a, d in zip(names, adj, direct):
        # both approximate the exact gradient to ~tol; measured differences ~1e-9 relative
        assert _rel(a, d) < 1e-6, f"{name}: adjoint vs backprop {_rel(a, d):.2e}"
    assert adj[1].abs().min() > 1e-3  # time gradients are non-trivial

    # Central differences of the loss computed with a much tighter tolerance (solver noise
    # ~1e-13 / eps = 1e-8, truncation ~eps^2 = 1e-10): coordinates of y0 and t, and directional
    # derivatives of the parameters along three random directions.
    eps = 1e-5
    fd_tol = 1e-12

    def loss(y0_, t_):
        with torch.no_grad():
            return (odeint(f, y0_, t_, rtol=fd_tol, atol=fd_tol) * w).sum().item()

    for which, x, g in (("y0", y0, adj[0]), ("t", t, adj[1])):
        fd = torch.zeros_like(x)
        for i in range(x.numel()):
            e = torch.zeros_like(x).view(-1)
            e[i] = eps
            e = e.view_as(x)
            args_p = (x + e, t) if which == "y0" else (y0, x + e)
            args_m = (x - e, t) if which == "y0" else (y0, x - e)
            fd.view(-1)[i] = (loss(*args_p) - loss(*args_m)) / (2 * eps)
        assert _rel(g, fd) < 1e-4, f"{which}: adjoint vs finite differences {_rel(g, fd):.2e}"

    params = list(f.parameters())
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = [torch.randn(p.shape, generator=gen, dtype=D64) for p in params]
        exact = sum((g * vi).sum() for g, vi in zip(adj[2:], v)).item()
        with torch.no_grad():
            for p, vi in zip(params, v):
                p.add_(eps * vi)
            lp = loss(y0, t)
            for p, vi in zip(params, v):
                p.sub_(2 * eps * vi)
            lm = loss(y0, t)
            for p, vi in zip(params, v):
                p.add_(eps * vi)
        fd = (lp - lm) / (2 * eps)
        assert abs(exact - fd) < 1e-4 * abs(fd), f"params: {exact} vs finite differences {fd}"


def test_adjoint_tuple_state_backward_in_time_and_stats() -> None:
    # CNF-like state (z (B, D), l (B,)) with l' = -|f|^2 summed per row; integrate from t=1 to 0.
    f, y0, _, _ = _setup(2)
    t = torch.tensor([1.0, 0.3, 0.0], dtype=D64)
    w = torch.randn(3, 3, dtype=D64)

    def g(t, state):
        z, _l = state
        dz = f(t, z)
        return dz, -(dz**2).sum(-1)

    def run(adjoint: bool):
        z0 = y0.clone().requires_grad_(True)
        l0 = torch.zeros(3, dtype=D64, requires_grad=True)
        tt = t.clone().requires_grad_(True)
        f.zero_grad()
        (zs, ls), stats = odeint(g, (z0, l0), tt, rtol=1e-10, atol=1e-10, adjoint=adjoint,
                                 params=list(f.parameters()), return_stats=True)
        loss = zs.square().sum() + (ls * w).sum()
        loss.backward()
        grads = [z0.grad, l0.grad, tt.grad] + [p.grad.clone() for p in f.parameters()]
        return grads, stats

    adj, stats = run(True)
    direct, _ = run(False)
    for a, d in zip(adj, direct):
        assert _rel(a, d) < 1e-6
    assert stats.nfe_backward is not None and stats.nfe_backward > stats.nfe
    assert stats.accepted_backward > 0


def test_adjoint_fixed_step_and_closure_params() -> None:
    # A closure field with its weight passed explicitly through params=. With rk4 at h=0.01 both
    # gradients approximate the exact one to O(h^4) ~ 1e-8.
    torch.manual_seed(3)
    W = torch.randn(2, 2, dtype=D64, requires_grad=True)
    y0 = torch.randn(4, 2, dtype=D64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=D64)

    def f(t, y):
        return torch.tanh(y @ W)

    grads = []
    for adjoint in (True, False):
        W.grad = None
        y0.grad = None
        ys = odeint(f, y0, t, method="rk4", step_size=0.01, adjoint=adjoint, params=[W])
        ys[-1].pow(3).sum().backward()
        grads.append((W.grad.clone(), y0.grad.clone()))
    assert _rel(grads[0][0], grads[1][0]) < 1e-6
    assert _rel(grads[0][1], grads[1][1]) < 1e-6
    # without params a closure's tensors get no gradient from the adjoint (documented, warned)
    W.grad = None
    with pytest.warns(UserWarning, match=r"1 tensor\(s\) that require grad but are not in params"):
        odeint(f, y0, t, method="rk4", step_size=0.1, adjoint=True)[-1].sum().backward()
    assert W.grad is None


class _SavedBytes:
    """Peak bytes of tensors saved for backward by autograd that are alive at the same time.

    tracemalloc does not see torch's CPU allocations, so we count what autograd keeps: every
    tensor saved for backward passes through the pack hook, which wraps it in a holder object; the
    holder's finaliser subtracts the size again when autograd releases the saved tensor (after
    backward, or when a temporary graph dies). This covers the forward graph of direct backprop,
    the tensors the adjoint's Function saves, and the temporary one-evaluation graphs built inside
    the adjoint's backward solve. Storage shared between saved tensors is counted once per save
    (an upper bound on the real memory).
    """

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0

    def pack(self, x: torch.Tensor) -> _Held:
        return _Held(self, x)

    @staticmethod
    def unpack(h: _Held) -> torch.Tensor:
        return h.x


class _Held:
    def __init__(self, owner: _SavedBytes, x: torch.Tensor) -> None:
        # Hold a detached alias: holding x itself (or capturing it in a closure) would make a
        # cycle x -> grad_fn -> saved x that Python's gc cannot see through autograd's C++ nodes.
        self.owner, self.x = owner, x.detach()
        self.n = x.numel() * x.element_size()
        owner.live += self.n
        owner.peak = max(owner.peak, owner.live)

    def __del__(self) -> None:
        self.owner.live -= self.n


def _peak_saved_bytes(adjoint: bool, step: float) -> int:
    torch.manual_seed(4)
    f = MLPField(dim=4, hidden=32)
    y0 = torch.randn(64, 4, dtype=D64, requires_grad=True)
    counter = _SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        ys = odeint(f, y0, torch.tensor([0.0, 1.0], dtype=D64), method="rk4", step_size=step,
                    adjoint=adjoint)
        ys[-1].square().sum().backward()
    assert counter.live == 0  # everything saved was released
    return counter.peak


def test_adjoint_memory_does_not_grow_with_steps() -> None:
    # 10 -> 100 rk4 steps (forward and backward): direct backprop keeps every stage of every step
    # (grows ~10x); the adjoint keeps the T outputs plus one f-evaluation graph at a time (flat).
    direct = [_peak_saved_bytes(False, h) for h in (0.1, 0.01)]
    adjoint = [_peak_saved_bytes(True, h) for h in (0.1, 0.01)]
    assert direct[1] / direct[0] > 8, direct
    assert adjoint[1] / adjoint[0] < 1.1, adjoint
    assert adjoint[1] < direct[0]


@pytest.mark.parametrize("adjoint", [True, False])
def test_no_grad_inference(adjoint: bool) -> None:
    f, y0, t, _ = _setup()
    with torch.no_grad():
        ys = odeint(f, y0, t, adjoint=adjoint)
    assert not ys.requires_grad and ys.shape == (3, 3, 2)


def test_adjoint_through_tensor_computed_outside_the_solve() -> None:
    # f uses a bias computed once before the solve by another network (like a context embedding).
    # Its parameters, passed in params, get the gradient of backprop; every backward evaluation
    # reuses the shared outside graph. Leaving them out of params triggers a warning.
    torch.manual_seed(5)
    lin = nn.Linear(2, 2).double()
    net = nn.Linear(3, 2).double()
    bias = net(torch.randn(4, 3, dtype=D64))
    y0 = torch.randn(4, 2, dtype=D64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=D64)

    def f(t, y):
        return torch.tanh(lin(y) + bias)

    grads = []
    for adjoint in (True, False):
        lin.zero_grad()
        net.zero_grad()
        ys = odeint(f, y0, t, rtol=1e-10, atol=1e-10, adjoint=adjoint,
                    params=[*lin.parameters(), *net.parameters()])
        ys[-1].square().sum().backward(retain_graph=True)
        grads.append([p.grad.clone() for p in (*lin.parameters(), *net.parameters())])
    for a, d in zip(*grads):
        assert _rel(a, d) < 1e-6
    with pytest.warns(UserWarning, match="not in params"):
        odeint(f, y0, t, adjoint=True, params=list(lin.parameters()))[-1].sum().backward(
            retain_graph=True
        )
