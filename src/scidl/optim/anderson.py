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
  below the loss at the base iterate; ``requires_closure`` tells the trainer to pass one.

Distributed: the base step sees all-reduced gradients, so every rank holds the same
iterates and computes the same x_AA; the safeguard losses are all-reduced so all ranks
take the same decision. All ranks must call :meth:`step` together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from scidl.optim.config import OptimConfig
from scidl.optim.registry import OPTIMIZERS
from scidl.registry import RegistryError

_CHUNK = 1 << 22  # columns per pass when converting low-precision history to fp32


def anderson_coefficients(gram_y: torch.Tensor, beta: float, reg: float) -> torch.Tensor:
    """Coefficients a with x_AA = x_last + sum_i a_i (x_i - x_last) (i over older iterates).

    Args:
        gram_y: (c-1)x(c-1) Gram matrix of Y_i = x_i - x_last, oldest first (c >= 3).
        beta: relaxation.
        reg: Tikhonov regularisation relative to the mean squared column norm of dR.
    """
    # (c-1)^2 numbers: NumPy float64 is far cheaper than dispatching small torch kernels.
    gy = gram_y.detach().to("cpu", torch.float64).numpy()
    c = gy.shape[0] + 1
    gz = np.zeros((c, c))
    gz[: c - 1, : c - 1] = gy
    dx = np.zeros((c - 1, c))  # dX = dx @ Z, with Z_i = x_i - x_last (Z_last = 0)
    idx = np.arange(c - 1)
    dx[idx, idx], dx[idx, idx + 1] = -1.0, 1.0
    dr = dx[1:] - dx[:-1]  # dR = dr @ Z
    ef = dx[-1]  # f = dX[-1]
    g_rr = dr @ gz @ dr.T
    rhs = dr @ gz @ ef
    lam = reg * np.trace(g_rr) / g_rr.shape[0]
    gamma = np.linalg.lstsq(g_rr + lam * np.eye(g_rr.shape[0]), rhs, rcond=None)[0]
    alpha = beta * ef - (dx[:-1] + beta * dr).T @ gamma
    alpha[c - 2] += 1.0  # X[-2]
    return torch.from_numpy(alpha[: c - 1].copy())


def relative_deviation(gram_d: torch.Tensor) -> float:
    """delta = sqrt(mean||d_i - mean d||^2) / sqrt(mean||d_i||^2) from the Gram of the d_i."""
    g = gram_d.detach().to("cpu", torch.float64).numpy()
    n = g.shape[0]
    ms = float(np.trace(g)) / n
    if ms <= 0:
        return 0.0
    mean_sq = float(g.sum()) / n**2
    return float(np.sqrt(max(ms - mean_sq, 0.0) / ms))


class _DiffHistory:
    """Ring buffer of up to ``depth`` vectors, stored as ``base`` (wide dtype) plus rows
    ``x_i - base`` in the (possibly low-precision) history dtype.

    ``base`` is re-set to the newest vector every ``depth`` pushes (every push for 16-bit
    rows), so the rows stay small differences (accurate in bf16); the fp32 cost is an
    amortised O(n) per push.
    """

    def __init__(
        self, depth: int, n: int, dtype: torch.dtype, device: torch.device, work: torch.dtype
    ) -> None:
        self.rows = torch.zeros(depth, n, dtype=dtype, device=device)
        self.base = torch.zeros(n, dtype=work, device=device)
        self.depth, self.count, self.pos, self.since = depth, 0, 0, 0
        # fp32/fp64 rows: rebase every `depth` pushes (amortised O(n)); 16-bit rows: every
        # push, so each row is a difference to the newest iterate (the accurate choice).
        self.rebase_every = depth if dtype in (torch.float32, torch.float64) else 1

    def push(self, x: torch.Tensor) -> None:
        if self.count == 0:
            self.base.copy_(x)
            self.since = 0
        self.rows[self.pos].copy_(x - self.base)
        newest = self.pos
        self.pos = (self.pos + 1) % self.depth
        self.count = min(self.count + 1, self.depth)
        self.since += 1
        if self.since >= self.rebase_every:  # rebase: rows_i = x_i - x_newest
            shift = self.rows[newest].to(self.base.dtype, copy=True)
            self.rows.sub_(shift.to(self.rows.dtype))
            self.rows[newest].zero_()
            self.base.add_(shift)
            self.since = 0

    def order(self) -> list[int]:
        return [(self.pos - self.count + i) % self.depth for i in range(self.count)]

    def _gram_rows(self) -> torch.Tensor:
        """Gram matrix of all ``depth`` rows (float64)."""
        if self.rows.dtype in (torch.float32, torch.float64):
            return (self.rows @ self.rows.T).double()
        g = torch.zeros(self.depth, self.depth, dtype=torch.float64, device=self.rows.device)
        for s in range(0, self.rows.shape[1], _CHUNK):
            y = self.rows[:, s : s + _CHUNK].float()
            g += (y @ y.T).double()
        return g

    def gram(self) -> torch.Tensor:
        """Gram matrix of Y_i = x_i - x_newest over the older vectors, oldest first."""
        idx = self.order()
        gr = self._gram_rows()[idx][:, idx]
        c = len(idx)
        t = torch.eye(c - 1, c, dtype=torch.float64, device=gr.device)
        t[:, -1] = -1.0
        return t @ gr @ t.T

    def combine(self, coef: torch.Tensor) -> torch.Tensor:
        """x_newest + sum_i coef_i (x_i - x_newest) (older vectors oldest first)."""
        idx = self.order()
        w = torch.zeros(self.depth, dtype=torch.float64)
        w[idx[:-1]] = coef.to(torch.float64).cpu()
        w[idx[-1]] += 1.0 - float(coef.sum())
        out = self.base.clone()
        low = self.rows.dtype not in (torch.float32, torch.float64)
        cdt = torch.float32 if low else self.rows.dtype
        wd = w.to(device=self.rows.device, dtype=cdt)
        for s in range(0, self.rows.shape[1], _CHUNK):
            out[s : s + _CHUNK] += (wd @ self.rows[:, s : s + _CHUNK].to(cdt)).to(out.dtype)
        return out

    def clear(self) -> None:
        self.count, self.pos, self.since = 0, 0, 0
        self.rows.zero_()

    def state(self) -> dict[str, Any]:
        return {"rows": self.rows.clone(), "base": self.base.clone(), "count": self.count,
                "pos": self.pos, "since": self.since}

    def load(self, s: dict[str, Any]) -> None:
        self.rows.copy_(s["rows"])
        self.base.copy_(s["base"])
        self.count, self.pos, self.since = int(s["count"]), int(s["pos"]), int(s["since"])


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
        process_group: Any = None,
    ) -> None:
        if ma not in ("off", "on", "auto") or state_policy not in ("keep", "reset_momentum", "reset"):
            raise ValueError(f"bad ma={ma!r} or state_policy={state_policy!r}")
        if not 0 < relaxation <= 1 or history < 1 or every < 1 or store_every < 1:
            raise ValueError("need 0 < relaxation <= 1 and history, every, store_every >= 1")
        self.base = base
        super().__init__(base.param_groups, dict(base.defaults))
        self.param_groups = base.param_groups
        self.opts: dict[str, Any] = dict(history=history, every=every, store_every=store_every, wait=wait,
                         reg=reg, relaxation=relaxation, ma=ma, ma_window=ma_window,
                         ma_tol=ma_tol, state_policy=state_policy)
        self.requires_closure = safeguard
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
        self.counters: dict[str, Any] = {"steps": 0, "extrapolations": 0, "rejected": 0, "ma_active": ma == "on"}
        self.last_deviation = float("nan")

    # ------------------------------------------------------------------ flat views
    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1).to(self._work) for p in self._params()])

    def _assign(self, vec: torch.Tensor) -> None:
        o = 0
        for p in self._params():
            p.copy_(vec[o : o + p.numel()].view_as(p))
            o += p.numel()

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Base step, then store / average / extrapolate as configured. Call on all ranks."""
        loss = None
        if isinstance(self.base, torch.optim.LBFGS):
            loss = self.base.step(closure)
        else:
            if closure is not None and all(p.grad is None for p in self._params()):
                with torch.enable_grad():
                    loss = closure()  # no gradients yet: the closure computes them
            self.base.step()
        o, c = self.opts, self.counters
        c["steps"] += 1
        if c["steps"] % o["store_every"] == 0:
            self._store(self._flat())
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
        k = self._win.count
        return self._win.combine(torch.full((k - 1,), 1.0 / k, dtype=torch.float64))

    @staticmethod
    def _step_gram(win: _DiffHistory) -> torch.Tensor:
        """Gram matrix of consecutive steps d_i = x_{i+1} - x_i of the window."""
        gy = win.gram()  # of Y_i = x_i - x_last, i oldest..second newest
        k = gy.shape[0] + 1
        gz = torch.zeros(k, k, dtype=torch.float64, device=gy.device)
        gz[: k - 1, : k - 1] = gy
        d = torch.zeros(k - 1, k, dtype=torch.float64, device=gy.device)
        i = torch.arange(k - 1, device=gy.device)
        d[i, i], d[i, i + 1] = -1.0, 1.0
        return d @ gz @ d.T

    def _extrapolate(self, closure: Callable[[], Any] | None) -> None:
        o, c = self.opts, self.counters
        coef = anderson_coefficients(self._hist.gram(), o["relaxation"], o["reg"])
        x_aa = self._hist.combine(coef)
        if not torch.isfinite(x_aa).all():
            c["rejected"] += 1
            return
        if self.requires_closure and closure is not None:
            x_k = self._flat()
            before = self._global_loss(closure)
            self._assign(x_aa)
            after = self._global_loss(closure)
            if not (after < before):  # NaN-safe: reject unless strictly better
                self._assign(x_k)
                c["rejected"] += 1
                return
        else:
            self._assign(x_aa)
        self._hist.clear()  # restart: keep the history a consistent fixed-point sequence
        if self._win is not None:
            self._win.clear()  # averages restart from x_AA too
            self._win.push(x_aa)
        if not c["ma_active"]:
            self._hist.push(x_aa)
        c["extrapolations"] += 1
        self._apply_state_policy()

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
        aa = {"counters": dict(self.counters), "history": self._hist.state(),
              "last_deviation": self.last_deviation}
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
        state_policy=cfg.aa_state_policy,
    )

