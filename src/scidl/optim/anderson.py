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

- history on the parameters' device, stored as differences to the newest iterate (an
  fp32 anchor), so ``history_dtype=bfloat16`` keeps the *small* differences accurately;
  the extrapolation needs only the small Gram matrix and one pass over the history;
- moving average (``ma``): iterates are replaced by the mean of the last ``ma_window`` raw
  iterates before entering the history; ``auto`` switches it on when the relative
  deviation of consecutive steps d_i = x_{i+1} - x_i,
  delta = sqrt(mean ||d_i - mean d||^2) / sqrt(mean ||d_i||^2) in [0, 1]
  (0: every step identical, deterministic drift; 1: steps average to zero, pure noise),
  exceeds ``ma_tol`` and off when it falls below ``ma_tol / 2``; the history restarts at
  each switch. delta is a ratio of norms, never of near-zero components. After an
  extrapolation the averaging window is translated with the jump (its steps are kept);
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

import torch
import torch.distributed as dist

from scidl.optim.config import OptimConfig
from scidl.optim.registry import _REGISTRY, _load_extras, register_optimizer

_CHUNK = 1 << 22  # columns per pass when converting low-precision history to fp32


def anderson_coefficients(gram_y: torch.Tensor, beta: float, reg: float) -> torch.Tensor:
    """Coefficients a with x_AA = x_last + sum_i a_i (x_i - x_last) (i over older iterates).

    Args:
        gram_y: (c-1)x(c-1) Gram matrix of Y_i = x_i - x_last, oldest first (c >= 3).
        beta: relaxation.
        reg: Tikhonov regularisation relative to the mean squared column norm of dR.
    """
    c = gram_y.shape[0] + 1
    dt = torch.float64
    gz = torch.zeros(c, c, dtype=dt, device=gram_y.device)
    gz[: c - 1, : c - 1] = gram_y.to(dt)
    dx = torch.zeros(c - 1, c, dtype=dt, device=gram_y.device)  # dX = dx @ Z
    idx = torch.arange(c - 1, device=gram_y.device)
    dx[idx, idx] = -1.0
    dx[idx, idx + 1] = 1.0
    dr = dx[1:] - dx[:-1]  # dR = dr @ Z
    ef = dx[-1]  # f = dX[-1]
    g_rr = dr @ gz @ dr.T
    rhs = dr @ gz @ ef
    lam = reg * torch.trace(g_rr) / g_rr.shape[0]
    eye = torch.eye(g_rr.shape[0], dtype=dt, device=g_rr.device)
    gamma = torch.linalg.pinv(g_rr + lam * eye, hermitian=True) @ rhs
    alpha = beta * ef - (dx[:-1] + beta * dr).T @ gamma
    alpha[c - 2] += 1.0  # X[-2]
    return alpha[: c - 1]


def relative_deviation(gram_d: torch.Tensor) -> float:
    """delta = sqrt(mean||d_i - mean d||^2) / sqrt(mean||d_i||^2) from the Gram of the d_i."""
    n = gram_d.shape[0]
    ms = torch.trace(gram_d) / n
    if ms <= 0:
        return 0.0
    mean_sq = gram_d.sum() / n**2
    return float(torch.sqrt(torch.clamp(ms - mean_sq, min=0.0) / ms))


class _DiffHistory:
    """Up to ``depth`` vectors stored as a wide ``anchor`` (the newest) + low-precision rows
    ``x_i - anchor`` (ring buffer, oldest first via :meth:`order`)."""

    def __init__(
        self, depth: int, n: int, dtype: torch.dtype, device: torch.device, work: torch.dtype
    ) -> None:
        self.rows = torch.zeros(max(depth - 1, 1), n, dtype=dtype, device=device)
        self.anchor = torch.zeros(n, dtype=work, device=device)
        self.depth, self.count, self.pos = depth, 0, 0

    def push(self, x: torch.Tensor) -> None:
        if self.count == 0 or self.depth == 1:
            self.anchor.copy_(x)
            self.count = 1
            return
        delta = self.anchor - x  # every older row: (x_i - old) + (old - new)
        self.rows.add_(delta.to(self.rows.dtype))
        self.rows[self.pos].copy_(delta)
        self.pos = (self.pos + 1) % self.rows.shape[0]
        self.count = min(self.count + 1, self.depth)
        self.anchor.copy_(x)

    def rebase(self, x: torch.Tensor) -> None:
        """Replace the newest vector by ``x``."""
        self.rows.add_((self.anchor - x).to(self.rows.dtype))
        self.anchor.copy_(x)

    def order(self) -> list[int]:
        k, r = self.count - 1, self.rows.shape[0]
        return [(self.pos - k + i) % r for i in range(k)]

    def gram(self) -> torch.Tensor:
        idx = self.order()
        g = torch.zeros(len(idx), len(idx), dtype=torch.float64, device=self.rows.device)
        for s in range(0, self.rows.shape[1], _CHUNK):
            y = self.rows[idx, s : s + _CHUNK].to(self.anchor.dtype)
            g += (y @ y.T).double()
        return g

    def combine(self, coef: torch.Tensor) -> torch.Tensor:
        """anchor + sum_i coef_i * row_i (rows oldest first)."""
        idx = self.order()
        out = self.anchor.clone()
        c = coef.to(out.dtype)
        for s in range(0, self.rows.shape[1], _CHUNK):
            out[s : s + _CHUNK] += c @ self.rows[idx, s : s + _CHUNK].to(out.dtype)
        return out

    def clear(self) -> None:
        self.count, self.pos = 0, 0

    def state(self) -> dict[str, Any]:
        return {"rows": self.rows.clone(), "anchor": self.anchor.clone(), "count": self.count,
                "pos": self.pos}

    def load(self, s: dict[str, Any]) -> None:
        self.rows.copy_(s["rows"])
        self.anchor.copy_(s["anchor"])
        self.count, self.pos = int(s["count"]), int(s["pos"])


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
        self, base: torch.optim.Optimizer, history: int = 5, every: int = 1,
        store_every: int = 1, wait: int = 0, reg: float = 1e-8, relaxation: float = 1.0,
        safeguard: bool = False, ma: str = "off", ma_window: int = 5, ma_tol: float = 1e-2,
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
        self.opts = dict(history=history, every=every, store_every=store_every, wait=wait,
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
        self.counters = {"steps": 0, "extrapolations": 0, "rejected": 0, "ma_active": ma == "on"}
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
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
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
                k = self._win.count
                x = self._win.combine(torch.full((k - 1,), 1.0 / k, dtype=torch.float64))
        self._hist.push(x)

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
        self._hist.clear()  # restart: keep the window a consistent fixed-point sequence
        self._hist.push(x_aa)
        if self._win is not None and self._win.count > 0:
            self._win.anchor.copy_(self._flat())  # translate the window with the jump
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
    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """Base optimizer state plus the Anderson history and counters."""
        aa = {"counters": dict(self.counters), "history": self._hist.state(),
              "last_deviation": self.last_deviation}
        if self._win is not None:
            aa["window"] = self._win.state()
        return {"base": self.base.state_dict(), "anderson": aa}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
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
    _load_extras()
    if cfg.aa_base == "anderson" or cfg.aa_base not in _REGISTRY:
        raise KeyError(f"optim.aa_base={cfg.aa_base!r} is not a base optimizer; choices: "
                       f"{', '.join(sorted(k for k in _REGISTRY if k != 'anderson'))}")
    base = _REGISTRY[cfg.aa_base](params, cfg)
    return AndersonAcceleration(
        base, history=cfg.aa_history, every=cfg.aa_every, store_every=cfg.aa_store_every,
        wait=cfg.aa_wait, reg=cfg.aa_reg, relaxation=cfg.aa_relaxation,
        safeguard=cfg.aa_safeguard, ma=cfg.aa_ma, ma_window=cfg.aa_ma_window,
        ma_tol=cfg.aa_ma_tol, history_dtype=_DTYPES[cfg.aa_history_dtype],
        state_policy=cfg.aa_state_policy,
    )


register_optimizer("anderson")(anderson_from_config)
