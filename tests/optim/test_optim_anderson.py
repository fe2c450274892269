"""Anderson acceleration: formula, linear fixed-point convergence, base equivalence, options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scidl.optim import OptimConfig, build_optimizer
from scidl.optim.anderson import (
    AndersonAcceleration,
    _DiffHistory,
    anderson_coefficients,
    relative_deviation,
)


def _naive_aa(X: torch.Tensor, beta: float, reg: float) -> torch.Tensor:
    """The published formula on a matrix of iterates (columns), for reference."""
    DX = X[:, 1:] - X[:, :-1]
    DR = DX[:, 1:] - DX[:, :-1]
    f = DX[:, -1]
    G = DR.T @ DR
    lam = reg * torch.trace(G) / G.shape[0]
    gam = torch.linalg.solve(G + lam * torch.eye(G.shape[0], dtype=G.dtype), DR.T @ f)
    return X[:, -2] + beta * f - (DX[:, :-1] + beta * DR) @ gam


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
@pytest.mark.parametrize("beta", [1.0, 0.4])
def test_extrapolation_matches_published_formula(dtype, tol, beta):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(30, 6, generator=gen, dtype=torch.float64).cumsum(1)
    h = _DiffHistory(6, 30, dtype, torch.device("cpu"), torch.float64)
    for i in range(6):
        h.push(X[:, i])
    got = h.combine(anderson_coefficients(h.gram(), beta, 1e-6))
    assert torch.allclose(got, _naive_aa(X, beta, 1e-6), atol=tol * X.abs().max())


def _quadratic(n=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    A = Q @ torch.diag(torch.linspace(0.01, 1.0, n, dtype=torch.float64)) @ Q.T
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    return A, b, torch.linalg.solve(A, b)


def _iterations_to(opt_factory, A, b, xs, tol=1e-8, max_iter=3000):
    x = nn.Parameter(torch.zeros(len(b), dtype=torch.float64))
    opt = opt_factory([x])
    for it in range(1, max_iter + 1):
        opt.zero_grad()
        (0.5 * x @ A @ x - b @ x).backward()
        opt.step()
        if (x.detach() - xs).norm() / xs.norm() < tol:
            return it
    return max_iter + 1


def test_linear_fixed_point_converges_far_faster():
    """Gradient descent x <- x - (Ax - b) is a linear fixed-point map (kappa = 100)."""
    A, b, xs = _quadratic()
    # plain needs ~1,830 iterations (rate 1 - lambda_min = 0.99); stop it at 1,000
    plain = _iterations_to(lambda p: torch.optim.SGD(p, lr=1.0), A, b, xs, max_iter=1000)
    aa = _iterations_to(
        lambda p: AndersonAcceleration(torch.optim.SGD(p, lr=1.0), history=10, every=9,
                                       reg=0.0, history_dtype=torch.float64),
        A, b, xs, max_iter=1000)
    assert plain > 1000  # not converged
    assert aa <= 200, aa  # measured: 126


def test_fewer_than_three_iterates_equals_base():
    torch.manual_seed(0)
    m1 = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    m2 = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    m2.load_state_dict(m1.state_dict())
    base = torch.optim.SGD(m1.parameters(), lr=0.05, momentum=0.9)
    aa = AndersonAcceleration(torch.optim.SGD(m2.parameters(), lr=0.05, momentum=0.9),
                              history=2, every=1)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    for _ in range(10):
        for m, o in ((m1, base), (m2, aa)):
            o.zero_grad()
            nn.functional.mse_loss(m(x), y).backward()
            o.step()
    for p, q in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p, q)
    assert aa.counters["extrapolations"] == 0
    # with history 3 the same run does extrapolate (the comparison above is not vacuous)
    aa3 = AndersonAcceleration(torch.optim.SGD(m2.parameters(), lr=0.05), history=3, every=1)
    for _ in range(3):
        aa3.zero_grad()
        nn.functional.mse_loss(m2(x), y).backward()
        aa3.step()
    assert aa3.counters["extrapolations"] == 1


def test_low_precision_history_still_accelerates():
    A, b, xs = _quadratic()
    # plain needs ~915 iterations to 1e-4; stop it at 500
    plain = _iterations_to(lambda p: torch.optim.SGD(p, lr=1.0), A, b, xs, tol=1e-4,
                           max_iter=500)
    aa = _iterations_to(
        lambda p: AndersonAcceleration(torch.optim.SGD(p, lr=1.0), history=10, every=9,
                                       history_dtype=torch.bfloat16), A, b, xs, tol=1e-4,
        max_iter=500)
    assert plain > 500
    assert aa <= 200, aa  # measured: 117


def test_safeguard_rejects_a_worse_point():
    w = nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
    opt = AndersonAcceleration(torch.optim.SGD([w], lr=0.1), history=3, every=1,
                               safeguard=True)
    assert opt.requires_closure
    losses = iter([1.0, 2.0])  # loss at x_k, then (worse) loss at x_AA

    def closure():
        return torch.tensor(next(losses))

    for k in range(3):
        w.grad = torch.tensor([1.0, 2.0 * k], dtype=torch.float64)
        before = w.detach().clone()
        opt.step(closure if k == 2 else None)
    assert opt.counters["rejected"] == 1 and opt.counters["extrapolations"] == 0
    # rejected: the parameters are the plain base step from `before`
    assert torch.allclose(w.detach(), before - 0.1 * torch.tensor([1.0, 4.0], dtype=torch.float64))


def test_relative_deviation_is_bounded_and_scale_free():
    drift = torch.ones(5, 3) * torch.tensor([1.0, 2.0, 3.0])  # identical steps
    noise = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0]] * 2)  # steps cancel
    assert relative_deviation((drift @ drift.T).double()) == pytest.approx(0.0, abs=1e-7)
    assert relative_deviation((noise @ noise.T).double()) == pytest.approx(1.0)
    d = torch.randn(6, 10)
    assert relative_deviation((d @ d.T).double()) == pytest.approx(
        relative_deviation((1e-6 * d @ (1e-6 * d).T).double()), rel=1e-5)
    assert relative_deviation(torch.zeros(3, 3, dtype=torch.float64)) == 0.0


def test_auto_moving_average_switches_on_under_noise_only():
    def run(noise):
        gen = torch.Generator().manual_seed(1)
        w = nn.Parameter(torch.zeros(20))
        opt = build_optimizer(nn.ParameterList([w]), OptimConfig(
            name="anderson", aa_base="sgd", lr=0.1, momentum=0.0, aa_ma="auto", aa_ma_tol=0.5,
            aa_ma_window=6, aa_history=4, aa_every=50))
        for _ in range(12):
            w.grad = (w.detach() - 1.0) + noise * torch.randn(20, generator=gen)
            opt.step()
        return opt.counters["ma_active"], opt.last_deviation

    assert run(0.0) == (False, pytest.approx(0.0, abs=0.3))
    on, dev = run(5.0)
    assert on and dev > 0.5


@pytest.mark.parametrize("policy", ["keep", "reset_momentum", "reset"])
def test_state_policy_after_extrapolation(policy):
    w = nn.Parameter(torch.randn(5, dtype=torch.float64))
    opt = AndersonAcceleration(torch.optim.SGD([w], lr=0.1, momentum=0.9), history=3, every=3,
                               state_policy=policy)
    for _ in range(3):
        w.grad = w.detach().clone()
        opt.step()
    assert opt.counters["extrapolations"] == 1
    st = opt.base.state.get(w, {})
    if policy == "keep":
        assert st["momentum_buffer"] is not None
    else:
        assert st.get("momentum_buffer") is None


def _loss_closure(model, x, y, opt, calls):
    """A trainer-like closure (forward + backward) with a forward-only ``evaluate``."""

    def closure():
        calls["full"] += 1
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss.detach()

    def evaluate():
        calls["forward"] += 1
        assert not torch.is_grad_enabled()  # the safeguard builds no graph
        return nn.functional.mse_loss(model(x), y)

    closure.evaluate = evaluate
    return closure


def _run_safeguarded(mode, steps=24):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = AndersonAcceleration(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                               history=4, every=2, safeguard=True, safeguard_eval=mode)
    gen = torch.Generator().manual_seed(1)
    calls = {"full": 0, "forward": 0}
    for _ in range(steps):
        x, y = torch.randn(16, 4, generator=gen), torch.randn(16, 1, generator=gen)
        closure = _loss_closure(model, x, y, opt, calls)
        closure()  # the step's own forward + backward (as the trainer does)
        opt.step(closure)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return flat, calls, dict(opt.counters)


def test_forward_safeguard_runs_no_backward_and_matches_full_mode():
    """The default safeguard compares two forward-only losses; the earlier mode
    (``safeguard_eval="full"``) re-ran forward + backward twice per extrapolation. Both
    compare the same losses, so they take the same decisions and trajectories."""
    flat_fwd, calls_fwd, c_fwd = _run_safeguarded("forward")
    flat_full, calls_full, c_full = _run_safeguarded("full")
    attempts = c_fwd["extrapolations"] + c_fwd["rejected"]
    assert attempts >= 8 and c_fwd["rejected"] > 0 and c_fwd["extrapolations"] > 0
    assert calls_fwd == {"full": 24, "forward": 2 * attempts}  # one backward per step
    assert calls_full == {"full": 24 + 2 * attempts, "forward": 0}
    assert c_fwd == c_full
    assert torch.allclose(flat_fwd, flat_full, rtol=0, atol=1e-6)


def test_history_and_step_buffers_are_preallocated():
    """Storing and extrapolating write into preallocated buffers (no n-sized allocation
    per step): the flat vector, the extrapolated point and the ring buffer keep their memory."""
    w = nn.Parameter(torch.randn(1000))
    opt = AndersonAcceleration(torch.optim.SGD([w], lr=0.1), history=4, every=3)
    ptrs = (opt._flat().data_ptr(), opt._x_aa.data_ptr(), opt._hist.rows.data_ptr(),
            opt._hist.base.data_ptr())
    for _ in range(12):
        w.grad = w.detach() - 1.0
        opt.step()
    assert opt.counters["extrapolations"] == 4
    assert (opt._flat().data_ptr(), opt._x_aa.data_ptr(), opt._hist.rows.data_ptr(),
            opt._hist.base.data_ptr()) == ptrs
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        for _ in range(6):
            torch.sub(w.detach(), 1.0, out=w.grad)  # the gradient, in place
            opt.step()
    big = [e for e in prof.events() if e.cpu_memory_usage >= w.numel() * 4]
    assert not big, [(e.name, e.cpu_memory_usage) for e in big]


def test_bad_safeguard_eval_is_rejected():
    w = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="safeguard_eval"):
        AndersonAcceleration(torch.optim.SGD([w], lr=0.1), safeguard_eval="twice")


@pytest.mark.parametrize("rows,work", [(torch.float32, torch.float32), (torch.float64, torch.float64),
                                       (torch.float32, torch.float64)])
def test_cached_gram_equals_recomputed_gram(rows, work):
    """The history keeps the rows' Gram matrix up to date by one matrix-vector product per
    push and an O(depth^2) update per rebase (host NumPy views, or torch when the rows'
    dtype differs from the work dtype); it must equal the Gram recomputed from the rows."""
    gen = torch.Generator().manual_seed(3)
    h = _DiffHistory(4, 50, rows, torch.device("cpu"), work)
    x = torch.zeros(50, dtype=work)
    for k in range(23):  # several rebases, a clear in between
        x = x + torch.randn(50, generator=gen, dtype=work) / (k + 1)
        h.push(x)
        if k == 11:
            h.clear()
        g = (h.rows.double() @ h.rows.double().T)
        assert torch.allclose(h._gram_rows(), g, rtol=1e-5, atol=1e-5 * float(g.abs().max()))
    assert h.host == (rows == work)


# ----------------------------------------------------------------------------- deferred decision


def _trajectory(sync, steps=24, seed=2):
    """Per-step parameters and counters of the safeguarded MLP run of
    :func:`_run_safeguarded`, with the decision ``blocking`` or ``deferred`` (seed 2: six
    rejected attempts before the first accepted one)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = AndersonAcceleration(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                               history=4, every=2, safeguard=True, safeguard_sync=sync)
    gen = torch.Generator().manual_seed(1 + seed)
    calls = {"full": 0, "forward": 0}
    flats, counters = [], []
    for _ in range(steps):
        x, y = torch.randn(16, 4, generator=gen), torch.randn(16, 1, generator=gen)
        closure = _loss_closure(model, x, y, opt, calls)
        closure()
        opt.step(closure)
        flats.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
        counters.append(dict(opt.counters))
    return flats, counters, calls


def test_deferred_decision_takes_the_blocking_decisions_one_step_late():
    """Deferred, an attempt's step ends at the base iterate and the decision (on the same
    two losses) lands one step later: until the first accepted extrapolation the run is the
    blocking run exactly, and the first acceptance is the same attempt, one step late."""
    f_blk, c_blk, _ = _trajectory("blocking")
    f_def, c_def, calls = _trajectory("deferred")
    k = next(i for i, c in enumerate(c_blk) if c["extrapolations"] == 1)
    assert c_blk[k]["rejected"] >= 3  # rejections came first: the exact part is tested
    for i in range(k):
        assert torch.equal(f_blk[i], f_def[i]), i
        assert c_def[i]["rejected"] == (c_blk[i - 1]["rejected"] if i else 0), i  # one step late
    assert c_def[k]["extrapolations"] == 0 and not torch.equal(f_blk[k], f_def[k])
    assert c_def[k + 1]["extrapolations"] == 1 and c_def[k + 1]["rejected"] == c_blk[k]["rejected"]
    assert calls["full"] == 24  # still one forward + backward per step


def test_deferred_acceptance_differs_by_the_base_map_over_the_displacement():
    """On a quadratic with plain SGD, g(x) = x - lr (A x - b): accepted one step late,
    the deferred run lands at g(x_b) + d instead of g(x_b + d), i.e. lower by exactly
    g(x_b + d) - g(x_b) - d = -lr A d, with d = x_AA - x_b."""
    A, b, _ = _quadratic(n=20, seed=2)
    lr = 1.0
    runs = {}
    for sync in ("blocking", "deferred"):
        x = nn.Parameter(torch.zeros(20, dtype=torch.float64))
        opt = AndersonAcceleration(torch.optim.SGD([x], lr=lr), history=4, every=4,
                                   safeguard=True, safeguard_sync=sync)

        def closure(x=x, opt=opt):
            opt.zero_grad()
            loss = 0.5 * x @ A @ x - b @ x
            loss.backward()
            return loss.detach()

        closure.evaluate = lambda x=x: 0.5 * x @ A @ x - b @ x
        xs = []
        for _ in range(5):
            closure()
            opt.step(closure)
            xs.append(x.detach().clone())
        runs[sync] = (xs, dict(opt.counters))
    (xb, cb), (xd, cd) = runs["blocking"], runs["deferred"]
    assert cb["extrapolations"] == 1 and cd["extrapolations"] == 1  # step 4, resp. step 5
    assert all(torch.equal(xb[i], xd[i]) for i in range(3))
    d = xb[3] - xd[3]  # step 4: blocking at x_AA, deferred back at x_b
    assert d.norm() > 1e-3
    assert torch.allclose(xb[4] - xd[4], -lr * (A @ d), rtol=0, atol=1e-12)


def test_deferred_safeguard_still_accelerates_a_linear_fixed_point():
    A, b, xs = _quadratic()
    plain = _iterations_to_closure(lambda p: torch.optim.SGD(p, lr=1.0), A, b, xs)
    its = {s: _iterations_to_closure(lambda p, s=s: AndersonAcceleration(
        torch.optim.SGD(p, lr=1.0), history=5, every=4, safeguard=True, safeguard_sync=s),
        A, b, xs) for s in ("blocking", "deferred")}
    assert its["deferred"] < plain / 3 and its["blocking"] < plain / 3, (plain, its)


def _quadratic_closure(opt, x, A, b):
    """The trainer-style closure of ½xᵀAx − bᵀx: backward on call, forward-only
    ``evaluate`` for the safeguard."""

    def closure():
        opt.zero_grad()
        loss = 0.5 * x @ A @ x - b @ x
        loss.backward()
        return loss.detach()

    closure.evaluate = lambda: 0.5 * x @ A @ x - b @ x
    return closure


def _iterations_to_closure(opt_factory, A, b, xs, tol=1e-8, max_iter=3000):
    x = nn.Parameter(torch.zeros(len(b), dtype=torch.float64))
    opt = opt_factory([x])
    closure = _quadratic_closure(opt, x, A, b)
    for it in range(1, max_iter + 1):
        closure()
        opt.step(closure)
        if (x.detach() - xs).norm() / xs.norm() < tol:
            return it
    return max_iter + 1


def test_deferred_decision_survives_a_checkpoint():
    """A state dict taken right after an attempt carries the open decision: a resumed
    optimizer continues bit for bit like the uninterrupted one."""
    A, b, _ = _quadratic(n=10, seed=4)

    def make():
        x = nn.Parameter(torch.zeros(10, dtype=torch.float64))
        opt = AndersonAcceleration(torch.optim.SGD([x], lr=1.0), history=4, every=4,
                                   safeguard=True, safeguard_sync="deferred")
        return x, opt, _quadratic_closure(opt, x, A, b)

    x1, o1, c1 = make()
    for _ in range(4):
        c1()
        o1.step(c1)
    assert o1._pending
    state = o1.state_dict()
    x2, o2, c2 = make()
    with torch.no_grad():
        x2.copy_(x1)
    o2.load_state_dict(state)
    for _ in range(6):
        for c, o in ((c1, o1), (c2, o2)):
            c()
            o.step(c)
    assert o1.counters == o2.counters and o1.counters["extrapolations"] >= 1
    assert torch.equal(x1, x2)


def test_bad_safeguard_sync_is_rejected():
    w = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="safeguard_sync"):
        AndersonAcceleration(torch.optim.SGD([w], lr=0.1), safeguard_sync="later")


@pytest.mark.parametrize("rows", [torch.float32, torch.float64])
def test_ring_extrapolation_equals_the_published_formula(rows):
    """The optimizer's extrapolation (``_DiffHistory.extrapolate``: operators per ring
    position applied to the cached Gram matrix of the rows) equals the published formula
    on the stored iterates at every ring position, through rebases and a restart."""
    gen = torch.Generator().manual_seed(5)
    h = _DiffHistory(5, 40, rows, torch.device("cpu"), rows)
    xs, x = [], torch.zeros(40, dtype=torch.float64)
    out = torch.empty(40, dtype=rows)
    tol = 1e-9 if rows == torch.float64 else 2e-4
    checked = 0
    for k in range(17):
        x = x + torch.randn(40, generator=gen, dtype=torch.float64) / (k + 1)
        h.push(x.to(rows))
        xs.append(x.to(rows).double())
        if k == 8:
            h.clear()
            xs = []
        xs = xs[-5:]
        if len(xs) >= 3:
            want = _naive_aa(torch.stack(xs, 1), 0.7, 1e-6)
            got = h.extrapolate(0.7, 1e-6, out=out).double()
            assert torch.allclose(got, want, atol=tol * float(want.abs().max())), k
            checked += 1
    assert checked >= 10


def test_config_selects_the_deferred_decision():
    model = nn.Linear(3, 1)
    opt = build_optimizer(model, OptimConfig(name="anderson", aa_safeguard_sync="deferred"))
    assert opt.safeguard_sync == "deferred" and opt.requires_closure
    assert build_optimizer(model, OptimConfig(name="anderson")).safeguard_sync == "blocking"
