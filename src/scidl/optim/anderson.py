"""Anderson acceleration (AA) wrapping any base optimizer, with an adaptive moving average.

Stochastic Anderson mixing after Lupo Pasini et al. (arXiv 2110.14813; reference code
ORNL/AADL). The base optimizer's update x -> g(x) is treated as a fixed-point map. Every
``store_every`` steps the flattened parameters are stored (at most ``history`` iterates
x_0..x_k); every ``every`` steps, with k+1 >= 3 iterates, the parameters are replaced by

    gamma = argmin ||f - dR gamma||^2 + lam ||gamma||^2,   f = dX[-1],
    x_AA  = X[-2] + beta f - (dX[:-1] + beta dR) gamma,

where dX = diff(X) are the residuals g(x_i) - x_i, dR = diff(dX), beta the relaxation and
lam = reg * trace(dR dR^T) / cols (Tikhonov relative to the mean squared column norm, so
``reg`` is scale-free). The history then restarts from x_AA. (The reference code instead
overwrites the newest column with x_AA, which leaves a column pair that is not an
(x, g(x)) pair; with extrapolation every step that diverges on a linear fixed-point
problem where the restarted window converges. With ``every >= history - 1`` both agree.)

Differences from the reference code:

- history on the parameters' device, stored as differences to a recent iterate (a wide
  ``base``, re-set every ``history`` stores, every store for 16-bit rows), so ``history_dtype=bfloat16`` keeps the
  *small* differences accurately; the extrapolation needs only the small Gram matrix
  (solved in float64) and one pass over the history;
- moving average (``ma``): iterates are replaced by the mean of the last ``ma_window`` raw
  iterates before entering the history; ``auto`` switches it on when the relative
  deviation of consecutive steps d_i = x_{i+1} - x_i,
  delta = sqrt(mean ||d_i - mean d||^2) / sqrt(mean ||d_i||^2) in [0, 1]
  (0: every step identical, deterministic drift; 1: steps average to zero, pure noise),
  exceeds ``ma_tol`` and off when it falls below ``ma_tol / 2``; the history restarts at
  each switch. delta is a ratio of norms, never of near-zero components. Only averages
  of a full window enter the history (for a linear map, sliding averages of its iterates
  are again iterates of the same map); after an extrapolation the window restarts at x_AA;
- base optimizer state policy after an accepted extrapolation (``state_policy``): ``keep``
  (momentum / Adam moments continue from x_AA), ``reset_momentum`` (momentum buffers and
  Adam first moments cleared; second moments and step counts kept) or ``reset`` (all
  base state cleared);
- a subclass of ``torch.optim.Optimizer`` sharing the base optimizer's ``param_groups``
  (LR schedulers work), with its own ``state_dict``;
- safeguard: with a closure, keep x_AA only if the loss at x_AA (averaged over ranks) is
  below the loss at the base iterate, both on the step's batch; ``requires_closure`` tells
  the trainer to pass one. By default (``safeguard_eval="forward"``, as in AADL) the two
  losses are forward passes without gradients (``closure.evaluate``) and one scalar-pair
  all-reduce: no backward and no gradient all-reduce; the base step uses the gradient the
  trainer already computed. ``"full"`` calls the closure (forward + backward) twice;
- allocation-free steps: the flat parameter vector, the extrapolated point and the
  history are preallocated; storing an iterate is an in-place row write into a ring
  buffer plus one matrix-vector product that updates the cached Gram matrix of the
  history, the extrapolation a small solve on that cache and one ``addmv`` into a
  preallocated vector (fp32/fp64 history).

Distributed: the base step sees all-reduced gradients, so every rank holds the same
iterates and computes the same x_AA; the safeguard losses are all-reduced so all ranks
take the same decision. All ranks must call :meth:`step` together.

Deferred decision (``safeguard_sync="deferred"``): the blocking all-reduce of the two
losses is a synchronisation point in the middle of the step. Deferred, the attempt's step
evaluates both losses, puts the parameters back at the base iterate x_b, keeps the
displacement d = x_AA - x_b and starts the all-reduce asynchronously; the next step
computes its gradient at x_b (its forward, backward and gradient all-reduce run while the
scalar pair is in flight), takes the base step x_b -> g(x_b), then waits for the pair
(done by then) and, if x_AA was better, moves to g(x_b) + d. Every rank waits for the same
reduced pair, so all take the same decision. A rejected attempt leaves exactly the
blocking trajectory; an accepted one lands at g(x_b) + d instead of g(x_b + d), which
differs by g(x_b + d) - g(x_b) - d = (J_g - I) d + O(|d|^2) (for SGD, J_g - I = -lr H:
small where AA works, the base map being near the identity per step). The history
restarts at the new point. An attempt at the last step of a run is never applied.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from scidl.optim.config import OptimConfig
from scidl.optim.registry import OPTIMIZERS
from scidl.registry import RegistryError

_CHUNK = 1 << 22  # columns per pass when converting low-precision history to fp32


@functools.lru_cache(maxsize=32)
def _difference_operators(c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dr, f) with dX = dx @ Z, dR = dr @ Z, f = dX[-1] for Z_i = x_i - x_last."""
    dx = np.zeros((c - 1, c))
    idx = np.arange(c - 1)
    dx[idx, idx], dx[idx, idx + 1] = -1.0, 1.0
    dr = dx[1:] - dx[:-1]
    for m in (dx, dr):
        m.flags.writeable = False
    return dx, dr, dx[-1]


@functools.lru_cache(maxsize=64)
def _coefficient_operators(c: int, beta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(D, e, P) restricted to the c-1 older iterates (Z_last = 0 drops the last column):
    dR = D Y, f = e Y, and alpha = beta e - P gamma + unit(X[-2]) for the coefficients."""
    dx, dr, ef = _difference_operators(c)
    d = np.ascontiguousarray(dr[:, : c - 1])
    p = np.ascontiguousarray((dx[:-1] + beta * dr).T[: c - 1])
    base = beta * ef[: c - 1]
    base[c - 2] += 1.0  # X[-2]
    for m in (d, p, base):
        m.flags.writeable = False
    return d, p, base


@functools.lru_cache(maxsize=256)
def _ring_operators(depth: int, pos: int, count: int, beta: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(M, u, w0, Pw) for a ring of ``depth`` rows r_j whose ``count`` iterates end before
    slot ``pos``: with S the (c-1) x depth map of the rows to Y_i = r_{idx_i} - r_{idx_last}
    and (D, P, e) of :func:`_coefficient_operators`, M = D S, u = S^T e_{c-2},
    w0 = e_{idx_last} + S^T e and Pw = S^T P, so that for the rows' Gram matrix G the
    extrapolation is dR dR^T = M G M^T, dR f^T = -M G u and x_AA = base + (w0 - Pw gamma) R."""
    c = count
    idx = [(pos - c + i) % depth for i in range(c)]
    sel = np.zeros((c - 1, depth))
    sel[np.arange(c - 1), idx[:-1]] = 1.0
    sel[:, idx[-1]] -= 1.0
    d, p, base = _coefficient_operators(c, float(beta))
    w0 = sel.T @ base
    w0[idx[-1]] += 1.0
    ops = (np.ascontiguousarray(d @ sel), np.ascontiguousarray(sel[c - 2]), w0,
           np.ascontiguousarray(sel.T @ p))
    for m in ops:
        m.flags.writeable = False
    return ops


def _solve_gamma(mat: np.ndarray, rhs: np.ndarray, reg: float) -> np.ndarray:
    """gamma of the regularised normal equations (``mat`` is overwritten)."""
    lam = reg * float(np.trace(mat)) / mat.shape[0]
    if lam > 0:  # regularised: positive definite, a Cholesky-class solve suffices
        mat.flat[:: mat.shape[0] + 1] += lam
        try:
            return np.linalg.solve(mat, rhs)
        except np.linalg.LinAlgError:
            pass
    # unregularised (or singular): the minimum-norm least-squares solution
    return np.linalg.lstsq(mat, rhs, rcond=None)[0]


def anderson_coefficients(gram_y: torch.Tensor | np.ndarray, beta: float, reg: float
                          ) -> torch.Tensor:
    """Coefficients a with x_AA = x_last + sum_i a_i (x_i - x_last) (i over older iterates).

    Args:
        gram_y: (c-1)x(c-1) Gram matrix of Y_i = x_i - x_last, oldest first (c >= 3).
        beta: relaxation.
        reg: Tikhonov regularisation relative to the mean squared column norm of dR.
    """
    return torch.from_numpy(_coefficients_np(_host64(gram_y), beta, reg))


def _host64(g: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(g, np.ndarray):
        return g.astype(np.float64, copy=False)
    return g.detach().to("cpu", torch.float64).numpy()


def _coefficients_np(gy: np.ndarray, beta: float, reg: float) -> np.ndarray:
    """:func:`anderson_coefficients` on a float64 NumPy Gram matrix ((c-1)^2 numbers: a
    few NumPy calls cost microseconds, small torch kernels tens of them)."""
    c = gy.shape[0] + 1
    d, p, base = _coefficient_operators(c, float(beta))
    drz = d @ gy  # D Y Y^T
    mat = drz @ d.T  # dR dR^T
    rhs = -drz[:, c - 2]  # dR f^T: f = x_last - X[-2] = -Y[c-2]
    return base - p @ _solve_gamma(mat, rhs, reg)


def relative_deviation(gram_d: torch.Tensor | np.ndarray) -> float:
    """delta = sqrt(mean||d_i - mean d||^2) / sqrt(mean||d_i||^2) from the Gram of the d_i."""
    g = _host64(gram_d)
    n = g.shape[0]
    ms = float(np.trace(g)) / n
    if ms <= 0:
        return 0.0
    mean_sq = float(g.sum()) / n**2
    return float(np.sqrt(max(ms - mean_sq, 0.0) / ms))


class _DiffHistory:
    """Ring buffer of up to ``depth`` vectors, stored as ``base`` (wide dtype) plus rows
    ``x_i - base`` in the (possibly low-precision) history dtype, with their Gram matrix.

    ``base`` is re-set to the newest vector every ``depth`` pushes (every push for 16-bit
    rows), so the rows stay small differences (accurate in bf16); the fp32 cost is an
    amortised O(n) per push.

    fp32/fp64 rows keep the Gram matrix of the rows cached (``depth`` x ``depth``, float64):
    a push fills the new row and column with one matrix-vector product, a rebase
    ``r_i -> r_i - r_s`` updates it by ``G_ij - G_is - G_sj + G_ss`` without touching the
    rows again, and :meth:`gram` reads it; 16-bit rows compute it at :meth:`gram` (in
    fp32 chunks).
    """

    def __init__(
        self, depth: int, n: int, dtype: torch.dtype, device: torch.device, work: torch.dtype
    ) -> None:
        self.rows = torch.zeros(depth, n, dtype=dtype, device=device)
        self.base = torch.zeros(n, dtype=work, device=device)
        self._shift = torch.zeros(n, dtype=work, device=device)  # rebase scratch
        self.depth, self.count, self.pos, self.since = depth, 0, 0, 0
        # fp32/fp64 rows: rebase every `depth` pushes (amortised O(n)); 16-bit rows: every
        # push, so each row is a difference to the newest iterate (the accurate choice).
        self.wide_rows = dtype in (torch.float32, torch.float64)
        self.rebase_every = depth if self.wide_rows else 1
        # cached Gram matrix of the rows (wide rows), on the rows' device: no host sync per push
        self._g = torch.zeros(depth, depth, dtype=torch.float64, device=device)
        self._v = torch.zeros(depth, dtype=dtype, device=device)  # new Gram column
        # host rows of the work dtype: NumPy views of the same memory (a NumPy call costs
        # microseconds, a small torch kernel tens of them; this matters for small models)
        self.host = device.type == "cpu" and dtype == work
        if self.host:
            self._rows_np, self._base_np = self.rows.numpy(), self.base.numpy()
            self._shift_np, self._g_np = self._shift.numpy(), self._g.numpy()
            self._v_np = self._v.numpy()

    def push(self, x: torch.Tensor) -> None:
        """Append ``x`` (in place: no n-sized allocation for fp32/fp64 rows)."""
        if self.host and x.dtype == self.base.dtype and x.device.type == "cpu":
            self._push_host(x.detach().numpy())
            return
        if self.count == 0:
            self.base.copy_(x)
            self.since = 0
        row = self.rows[self.pos]
        if self.wide_rows and row.dtype == x.dtype == self.base.dtype:
            torch.sub(x, self.base, out=row)
        else:
            row.copy_(x - self.base)
        if self.wide_rows:  # the new row and column of the Gram matrix: one gemv
            torch.mv(self.rows, row, out=self._v)
            self._g[self.pos].copy_(self._v)
            self._g[:, self.pos].copy_(self._v)
        newest = self.pos
        self.pos = (self.pos + 1) % self.depth
        self.count = min(self.count + 1, self.depth)
        self.since += 1
        if self.since >= self.rebase_every:  # rebase: rows_i = x_i - x_newest
            shift = self._shift
            shift.copy_(self.rows[newest])
            if self.wide_rows and shift.dtype == self.rows.dtype:
                self.rows.sub_(shift)
            else:
                self.rows.sub_(shift.to(self.rows.dtype))
            self.rows[newest].zero_()
            self.base.add_(shift)
            self.since = 0
            if self.wide_rows:
                self._rebase_gram(newest)

    def _push_host(self, x: np.ndarray) -> None:
        if self.count == 0:
            np.copyto(self._base_np, x)
            self.since = 0
        row = self._rows_np[self.pos]
        np.subtract(x, self._base_np, out=row)
        # the new Gram row/column: one gemv, in torch (its thread setting; NumPy's BLAS
        # would start its own threads for a gemv this size, whose hand-offs cost more
        # than the product on a small model)
        torch.mv(self.rows, self.rows[self.pos], out=self._v)
        self._g_np[self.pos] = self._v_np
        self._g_np[:, self.pos] = self._v_np
        newest = self.pos
        self.pos = (self.pos + 1) % self.depth
        self.count = min(self.count + 1, self.depth)
        self.since += 1
        if self.since >= self.rebase_every:  # rebase: rows_i = x_i - x_newest
            np.copyto(self._shift_np, self._rows_np[newest])
            self._rows_np -= self._shift_np
            self._rows_np[newest] = 0.0
            self._base_np += self._shift_np
            self.since = 0
            self._rebase_gram(newest)

    def _rebase_gram(self, s: int) -> None:
        """The cached Gram matrix after ``r_i -> r_i - r_s`` (all rows), in O(depth^2)."""
        if self.host:
            gn = self._g_np
            col = gn[:, s].copy()
            gn -= col[None, :]
            gn -= col[:, None]
            gn += col[s]
            gn[s] = 0.0
            gn[:, s] = 0.0
            return
        g = self._g
        col = g[:, s].clone()
        g.sub_(col.unsqueeze(0)).sub_(col.unsqueeze(1)).add_(col[s])
        g[s].zero_()
        g[:, s].zero_()

    def order(self) -> list[int]:
        return [(self.pos - self.count + i) % self.depth for i in range(self.count)]

    def _gram_rows(self) -> torch.Tensor:
        """Gram matrix of all ``depth`` rows (float64): the cache for fp32/fp64 rows."""
        if self.wide_rows:
            return self._g
        g = torch.zeros(self.depth, self.depth, dtype=torch.float64, device=self.rows.device)
        for s in range(0, self.rows.shape[1], _CHUNK):
            y = self.rows[:, s : s + _CHUNK].float()
            g += (y @ y.T).double()
        return g

    def gram_np(self) -> np.ndarray:
        """Gram matrix of Y_i = x_i - x_newest over the older vectors, oldest first
        (float64 NumPy; one device-to-host copy of the small matrix on accelerators)."""
        idx = self.order()
        gr = self._gram_rows()
        g = gr.numpy() if gr.device.type == "cpu" else gr.cpu().numpy()
        gr_np = g[np.ix_(idx, idx)]
        last = gr_np[-1, :-1]  # Y_i.Y_j = r_i.r_j - r_i.r_l - r_l.r_j + r_l.r_l
        gy = gr_np[:-1, :-1] - last[None, :] - last[:, None] + gr_np[-1, -1]
        return gy

    def gram(self) -> torch.Tensor:
        """:meth:`gram_np` as a tensor."""
        return torch.from_numpy(np.ascontiguousarray(self.gram_np()))

    def extrapolate(self, beta: float, reg: float, out: torch.Tensor) -> torch.Tensor:
        """x_AA of the stored iterates into ``out``: ``combine(coefficients(gram))``; for
        host rows of the work dtype straight from the cached Gram matrix of the rows with
        operators cached per ring position (a dozen NumPy calls, no index juggling)."""
        if not (self.host and self.wide_rows and out.dtype == self.base.dtype
                and out.device.type == "cpu" and out.is_contiguous()):
            return self.combine(_coefficients_np(self.gram_np(), beta, reg), out=out)
        m, u, w0, pw = _ring_operators(self.depth, self.pos, self.count, float(beta))
        mg = m @ self._g_np
        gamma = _solve_gamma(mg @ m.T, -(mg @ u), reg)
        w = torch.from_numpy((w0 - pw @ gamma).astype(self._rows_np.dtype, copy=False))
        return torch.addmv(self.base, self.rows.T, w, out=out)  # torch's threads (see push)

    def combine(self, coef: torch.Tensor | np.ndarray, out: torch.Tensor | None = None
                ) -> torch.Tensor:
        """x_newest + sum_i coef_i (x_i - x_newest) (older vectors oldest first), into
        ``out`` when given (no n-sized allocation for fp32/fp64 rows)."""
        idx = self.order()
        cf = _host64(coef)
        w_np = np.zeros(self.depth, dtype=self._rows_np.dtype if self.host else np.float64)
        w_np[idx[:-1]] = cf
        w_np[idx[-1]] += 1.0 - float(cf.sum())
        if out is None:
            out = torch.empty_like(self.base)
        w = torch.from_numpy(w_np)
        if self.host and out.dtype == self.base.dtype and out.device.type == "cpu":
            return torch.addmv(self.base, self.rows.T, w, out=out)  # torch's threads (see push)
        if self.wide_rows and self.rows.dtype == out.dtype == self.base.dtype:
            wd = w.to(device=self.rows.device, dtype=self.rows.dtype)
            return torch.addmv(self.base, self.rows.T, wd, out=out)
        out.copy_(self.base)
        cdt = torch.float32 if not self.wide_rows else self.rows.dtype
        wd = w.to(device=self.rows.device, dtype=cdt)
        for s in range(0, self.rows.shape[1], _CHUNK):
            out[s : s + _CHUNK] += (wd @ self.rows[:, s : s + _CHUNK].to(cdt)).to(out.dtype)
        return out

    def clear(self) -> None:
        self.count, self.pos, self.since = 0, 0, 0
        self.rows.zero_()
        self._g.zero_()

    def state(self) -> dict[str, Any]:
        return {"rows": self.rows.clone(), "base": self.base.clone(), "count": self.count,
                "pos": self.pos, "since": self.since}

    def load(self, s: dict[str, Any]) -> None:
        self.rows.copy_(s["rows"])
        self.base.copy_(s["base"])
        self.count, self.pos, self.since = int(s["count"]), int(s["pos"]), int(s["since"])
        if self.wide_rows:  # the cache is derived state: rebuilt from the rows
            self._g.copy_((self.rows @ self.rows.T).double())


class AndersonAcceleration(torch.optim.Optimizer):
    """Anderson acceleration around ``base`` (see the module docstring).

    Args:
        base: the wrapped optimizer (its ``param_groups`` are shared).
        history: depth m (iterates kept); extrapolation needs at least 3.
        every: extrapolate every k steps.
        store_every: store an iterate every s steps.
        wait: base steps before the first extrapolation.
        reg: relative Tikhonov regularisation.
        relaxation: beta in (0, 1].
        safeguard: keep x_AA only if the loss decreased (needs ``step(closure)``).
        safeguard_eval: ``forward``: the two losses come from ``closure.evaluate()`` (a
            forward pass without gradients; the trainer's closure has one) under
            ``torch.no_grad``, one all-reduce for both; closures without ``evaluate`` are
            called as in ``full``. ``full``: ``closure()`` twice (forward + backward each).
        safeguard_sync: ``blocking``: the losses are all-reduced and the decision taken
            in the attempt's step. ``deferred``: the step returns at the base iterate with
            the all-reduce of the losses in flight; the next step waits for it after its
            base step (by then it has long finished) and, if accepted, adds the
            displacement x_AA - x_base to the new iterate. Rejected attempts give the
            blocking trajectory exactly; accepted ones differ from it by the base map's
            change over the displacement (see the module docstring).
        ma: moving average "off", "on" or "auto".
        ma_window: raw iterates averaged.
        ma_tol: relative-deviation tolerance for ``ma="auto"``.
        history_dtype: storage dtype of the history differences.
        state_policy: "keep", "reset_momentum" or "reset" (base state after extrapolation).
        process_group: group for the safeguard's loss all-reduce (default: world).
    """

    def __init__(
        self, base: torch.optim.Optimizer, history: int = 5, every: int = 4,
        store_every: int = 1, wait: int = 0, reg: float = 1e-8, relaxation: float = 1.0,
        safeguard: bool = False, ma: str = "off", ma_window: int = 5, ma_tol: float = 0.2,
        history_dtype: torch.dtype = torch.float32, state_policy: str = "keep",
        process_group: Any = None, safeguard_eval: str = "forward",
        safeguard_sync: str = "blocking",
    ) -> None:
        if ma not in ("off", "on", "auto") or state_policy not in ("keep", "reset_momentum", "reset"):
            raise ValueError(f"bad ma={ma!r} or state_policy={state_policy!r}")
        if safeguard_eval not in ("forward", "full"):
            raise ValueError(f"bad safeguard_eval={safeguard_eval!r} (forward or full)")
        if safeguard_sync not in ("blocking", "deferred"):
            raise ValueError(f"bad safeguard_sync={safeguard_sync!r} (blocking or deferred)")
        if not 0 < relaxation <= 1 or history < 1 or every < 1 or store_every < 1:
            raise ValueError("need 0 < relaxation <= 1 and history, every, store_every >= 1")
        self.base = base
        super().__init__(base.param_groups, dict(base.defaults))
        self.param_groups = base.param_groups
        self.opts: dict[str, Any] = dict(history=history, every=every, store_every=store_every, wait=wait,
                         reg=reg, relaxation=relaxation, ma=ma, ma_window=ma_window,
                         ma_tol=ma_tol, state_policy=state_policy)
        self.requires_closure = safeguard
        self.safeguard_eval, self.safeguard_sync = safeguard_eval, safeguard_sync
        self.history_dtype, self.process_group = history_dtype, process_group
        params = self._params()
        n = sum(p.numel() for p in params)
        dev = params[0].device if params else torch.device("cpu")
        wide = history_dtype == torch.float64 or any(p.dtype == torch.float64 for p in params)
        self._work = torch.float64 if wide else torch.float32
        self._hist = _DiffHistory(history, n, history_dtype, dev, self._work)
        self._win = (
            _DiffHistory(ma_window, n, history_dtype, dev, self._work) if ma != "off" else None
        )
        # preallocated flat vectors: the per-step path allocates nothing of size n
        self._x = torch.zeros(n, dtype=self._work, device=dev)  # current parameters
        self._x_aa = torch.zeros(n, dtype=self._work, device=dev)  # extrapolated point
        self._x_k = torch.zeros(n, dtype=self._work, device=dev) if safeguard else None
        self._x_mean = torch.zeros(n, dtype=self._work, device=dev) if ma != "off" else None
        self._same_dtype = all(p.dtype == self._work for p in params)
        self._host_flat = self._same_dtype and dev.type == "cpu" and all(
            type(p.detach()) is torch.Tensor and p.device.type == "cpu" and p.is_contiguous()
            for p in params)  # plain host tensors only (not DTensor shards)
        self._x_np = self._x.numpy() if self._host_flat else None
        # cached per-parameter views (NumPy for host parameters, slices of the flat vectors
        # otherwise), rebuilt when a parameter's storage moves (see _views)
        self._view_key: tuple[int, ...] = ()
        self._param_np: list[np.ndarray] = []
        self._param_list: list[torch.Tensor] = []
        self._slices: dict[int, list[torch.Tensor]] = {}
        # the safeguard's two losses, reduced together (preallocated, float64)
        self._pair = torch.zeros(2, dtype=torch.float64, device=dev)
        # deferred safeguard: an attempt whose decision waits for the next step; its
        # displacement x_AA - x_base is kept in self._x_aa, the loss pair's all-reduce in
        # flight (None: no collective, or already waited for)
        self._pending = False
        self._pending_work: Any = None
        self._fresh = False  # self._x holds the current parameters (stored this step)
        self.counters: dict[str, Any] = {"steps": 0, "extrapolations": 0, "rejected": 0, "ma_active": ma == "on"}
        self.last_deviation = float("nan")

    # ------------------------------------------------------------------ flat views
    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _views(self) -> list[torch.Tensor]:
        """The parameters (cached list; rebuilt, with the NumPy views and flat slices,
        if the groups or a parameter's storage changed)."""
        params = self._params()
        key = tuple(p.data_ptr() for p in params) + tuple(id(p) for p in params)
        if key != self._view_key:
            self._view_key, self._param_list, self._slices = key, params, {}
            self._param_np = ([p.detach().numpy().reshape(-1) for p in params]
                              if self._host_flat else [])
        return self._param_list

    def _flat(self, params: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The parameters (``params``: :meth:`_views`, if the caller has them) as one
        vector, written into the preallocated ``self._x``."""
        params = self._views() if params is None else params
        if self._host_flat:  # NumPy views of host parameters: microseconds, not a kernel
            np.concatenate(self._param_np, out=self._x_np)
            return self._x
        if self._same_dtype:
            return torch.cat([p.detach().reshape(-1) for p in params], out=self._x)
        o = 0
        for p in params:
            self._x[o : o + p.numel()].copy_(p.detach().reshape(-1))
            o += p.numel()
        return self._x

    def _assign(self, vec: torch.Tensor) -> None:
        params = self._views()
        views = self._slices.get(vec.data_ptr())
        if views is None:  # vec is one of the preallocated vectors: its slices are kept
            views, o = [], 0
            for p in params:
                views.append(vec[o : o + p.numel()].view_as(p))
                o += p.numel()
            self._slices[vec.data_ptr()] = views
        torch._foreach_copy_(params, views)  # one dispatch for all parameters

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Base step, then store / average / extrapolate as configured. Call on all ranks."""
        loss = None
        params = self._views()
        if isinstance(self.base, torch.optim.LBFGS):
            loss = self.base.step(closure)
        else:
            if closure is not None and all(p.grad is None for p in params):
                with torch.enable_grad():
                    loss = closure()  # no gradients yet: the closure computes them
            self.base.step()
        o, c = self.opts, self.counters
        c["steps"] += 1
        self._fresh = False
        if self._pending:  # the previous step's deferred decision, before this step's store
            self._resolve_pending()
        if c["steps"] % o["store_every"] == 0:
            self._store(self._flat(params))
            self._fresh = True
        if (c["steps"] > o["wait"] and c["steps"] % o["every"] == 0 and self._hist.count >= 3):
            self._extrapolate(closure)
        return loss

    def _store(self, x: torch.Tensor) -> None:
        o, c = self.opts, self.counters
        if self._win is not None:
            self._win.push(x)
            if self._win.count >= 3:
                gd = self._step_gram(self._win)
                self.last_deviation = relative_deviation(gd)
                if o["ma"] == "auto":
                    on = c["ma_active"]
                    if (not on and self.last_deviation > o["ma_tol"]) or (
                        on and self.last_deviation < 0.5 * o["ma_tol"]
                    ):
                        c["ma_active"] = not on
                        self._hist.clear()
            if c["ma_active"]:
                if self._win.count < self._win.depth:
                    return  # only full-window averages form a fixed-point sequence
                x = self._window_mean()
        self._hist.push(x)

    def _window_mean(self) -> torch.Tensor:
        assert self._win is not None
        assert self._x_mean is not None
        k = self._win.count
        return self._win.combine(np.full(k - 1, 1.0 / k),
                                 out=self._x_mean)

    @staticmethod
    def _step_gram(win: _DiffHistory) -> np.ndarray:
        """Gram matrix of consecutive steps d_i = x_{i+1} - x_i of the window."""
        gy = win.gram_np()  # of Y_i = x_i - x_last, i oldest..second newest
        k = gy.shape[0] + 1
        d = _difference_operators(k)[0][:, : k - 1]  # Z_last = 0: its column drops out
        return d @ gy @ d.T

    def _extrapolate(self, closure: Callable[[], Any] | None) -> None:
        o, c = self.opts, self.counters
        x_aa = self._hist.extrapolate(o["relaxation"], o["reg"], out=self._x_aa)
        if not math.isfinite(float(x_aa.sum())):  # any NaN/Inf makes the sum non-finite
            c["rejected"] += 1
            return
        if self.requires_closure and closure is not None:
            assert self._x_k is not None
            x_k = self._x if self._fresh else self._x_k  # _x: this step's parameters
            if not self._fresh:
                x_k.copy_(self._flat())
            if self.safeguard_sync == "deferred":
                self._defer(closure, x_k, x_aa)
                return
            before, after = self._safeguard_losses(closure, x_aa)
            if not (after < before):  # NaN-safe: reject unless strictly better
                self._assign(x_k)
                c["rejected"] += 1
                return
        else:
            self._assign(x_aa)
        self._accepted(x_aa)

    def _accepted(self, x_new: torch.Tensor | None) -> None:
        """Bookkeeping of an accepted extrapolation: the history (and the averaging
        window) restart from ``x_new`` (None: from this step's store), the base state
        policy applies."""
        c = self.counters
        self._hist.clear()  # restart: keep the history a consistent fixed-point sequence
        if self._win is not None:
            self._win.clear()  # averages restart from x_AA too
            if x_new is not None:
                self._win.push(x_new)
        if x_new is not None and not c["ma_active"]:
            self._hist.push(x_new)
        c["extrapolations"] += 1
        self._apply_state_policy()

    # ------------------------------------------------------------------ deferred safeguard
    def _defer(self, closure: Callable[[], Any], x_k: torch.Tensor, x_aa: torch.Tensor) -> None:
        """Deferred safeguard, at the attempt's step: this rank's two losses (at the base
        iterate ``x_k`` and at ``x_aa``) go into the pair, whose all-reduce is started
        without waiting; the parameters return to ``x_k`` and the displacement
        ``x_aa - x_k`` is kept (in ``self._x_aa``) for the next step's decision."""
        t = self._pair
        evaluate = getattr(closure, "evaluate", None)
        if self.safeguard_eval == "full" or evaluate is None:
            t[0] = self._local_loss(closure)
            self._assign(x_aa)
            t[1] = self._local_loss(closure)
        else:
            with torch.no_grad():  # forward only: no backward, no gradient all-reduce
                t[0].copy_(torch.as_tensor(evaluate()).reshape(()))
                self._assign(x_aa)
                t[1].copy_(torch.as_tensor(evaluate()).reshape(()))
        self._assign(x_k)  # the next step's gradient is taken at the base iterate
        x_aa.sub_(x_k)
        world = self._world_size()
        self._pending_work = (dist.all_reduce(t, group=self.process_group, async_op=True)
                              if world > 1 else None)
        self._pending = True

    def _wait_pending(self) -> tuple[float, float]:
        """The pending attempt's rank-mean (before, after) losses (waits for the reduce)."""
        t = self._pair
        if self._pending_work is not None:
            self._pending_work.wait()
            self._pending_work = None
            t /= self._world_size()
        before, after = t.tolist()
        return before, after

    def _resolve_pending(self) -> None:
        """The previous step's deferred decision, after this step's base step: accepted,
        the displacement x_AA - x_base is added to the new base iterate and the history
        restarts there; rejected, nothing changes (the base iterate was kept)."""
        before, after = self._wait_pending()
        self._pending = False
        if not (after < before):  # NaN-safe: reject unless strictly better
            self.counters["rejected"] += 1
            return
        x = self._flat()
        x.add_(self._x_aa)
        self._assign(x)
        self._accepted(None)

    def _local_loss(self, closure: Callable[[], Any]) -> float:
        with torch.enable_grad():
            loss = closure()
        return float(torch.as_tensor(loss, dtype=torch.float64).detach().reshape(()))

    def _safeguard_losses(self, closure: Callable[[], Any], x_aa: torch.Tensor
                          ) -> tuple[float, float]:
        """(loss at the base iterate, loss at ``x_aa``), averaged over ranks; leaves the
        parameters at ``x_aa``."""
        evaluate = getattr(closure, "evaluate", None)
        if self.safeguard_eval == "full" or evaluate is None:
            before = self._global_loss(closure)
            self._assign(x_aa)
            return before, self._global_loss(closure)
        with torch.no_grad():  # forward only: no backward, no gradient all-reduce
            loss_before = evaluate()
            self._assign(x_aa)
            loss_after = evaluate()
        world = self._world_size()
        if world == 1:
            return float(loss_before), float(loss_after)
        t = self._pair  # preallocated on the parameters' device: no host copy until tolist
        t[0].copy_(torch.as_tensor(loss_before).reshape(()))
        t[1].copy_(torch.as_tensor(loss_after).reshape(()))
        # one scalar pair for both losses (gloo/nccl: on the tensor's device)
        dist.all_reduce(t, group=self.process_group)
        t /= world
        before, after = t.tolist()  # the one host sync: the decision needs the values
        return before, after

    def _world_size(self) -> int:
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(self.process_group)
        return 1

    def _global_loss(self, closure: Callable[[], Any]) -> float:
        with torch.enable_grad():
            loss = closure()
        t = torch.as_tensor(loss, dtype=torch.float64).detach().reshape(1).cpu()
        if dist.is_available() and dist.is_initialized():
            world = dist.get_world_size(self.process_group)
            if world > 1:
                dist.all_reduce(t, group=self.process_group)
                t /= world
        return float(t)

    def _apply_state_policy(self) -> None:
        policy = self.opts["state_policy"]
        if policy == "reset":
            self.base.state.clear()
        elif policy == "reset_momentum":
            for st in self.base.state.values():
                st.pop("momentum_buffer", None)
                if "exp_avg" in st:
                    st["exp_avg"].zero_()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Base optimizer state plus the Anderson history and counters."""
        aa: dict[str, Any] = {"counters": dict(self.counters), "history": self._hist.state(),
                              "last_deviation": self.last_deviation}
        if self._pending:  # a deferred decision still open: its reduced losses and displacement
            aa["pending"] = {"pair": list(self._wait_pending()), "delta": self._x_aa.clone()}
        if self._win is not None:
            aa["window"] = self._win.state()
        return {"base": self.base.state_dict(), "anderson": aa}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict["base"])
        self.param_groups = self.base.param_groups  # load_state_dict made new group dicts
        aa = state_dict["anderson"]
        self.counters = dict(aa["counters"])
        self.last_deviation = float(aa["last_deviation"])
        self._hist.load(aa["history"])
        if self._win is not None and "window" in aa:
            self._win.load(aa["window"])
        pending = aa.get("pending")
        self._pending, self._pending_work = pending is not None, None
        if pending is not None:
            self._pair.copy_(torch.as_tensor(pending["pair"], dtype=torch.float64))
            self._x_aa.copy_(pending["delta"])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if getattr(self, "base", None) is not None and hasattr(self, "_hist"):
            raise RuntimeError("AndersonAcceleration: add parameter groups before wrapping")
        super().add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)


_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
           "float16": torch.float16}


def anderson_from_config(params: Iterable[Any], cfg: OptimConfig) -> AndersonAcceleration:
    """Build ``cfg.aa_base`` over ``params`` and wrap it."""
    if cfg.aa_base == "anderson" or cfg.aa_base not in OPTIMIZERS:
        raise RegistryError(f"optim.aa_base={cfg.aa_base!r} is not a base optimizer; choices: "
                       f"{', '.join(n for n in OPTIMIZERS.names() if n != 'anderson')}")
    base = OPTIMIZERS.get(cfg.aa_base)(params, cfg)
    return AndersonAcceleration(
        base, history=cfg.aa_history, every=cfg.aa_every, store_every=cfg.aa_store_every,
        wait=cfg.aa_wait, reg=cfg.aa_reg, relaxation=cfg.aa_relaxation,
        safeguard=cfg.aa_safeguard, ma=cfg.aa_ma, ma_window=cfg.aa_ma_window,
        ma_tol=cfg.aa_ma_tol, history_dtype=_DTYPES[cfg.aa_history_dtype],
        state_policy=cfg.aa_state_policy, safeguard_eval=cfg.aa_safeguard_eval,
        safeguard_sync=cfg.aa_safeguard_sync,
    )

