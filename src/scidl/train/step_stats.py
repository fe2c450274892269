"""What a step reports without costing a collective: the NaN/Inf check and the logged loss.

Non-finite steps. When the comm strategy guarantees that a NaN/Inf on any rank reaches
every rank's reduced gradient (``CommStrategy.nonfinite_agreed``: a NaN in a sum stays a
NaN), every rank finds the same answer by checking its own reduced gradients, so no
collective is needed to agree on skipping a step. A rank whose loss is NaN/Inf while its
gradients are finite backpropagates a NaN seed (:func:`backward_seed`), so the reduced
gradients carry that too.

Loss. Each step's loss stays on the device; :class:`PendingLosses` averages the losses of
all steps since the last logged row over the ranks in one allreduce, started without
waiting when a row is due (every ``train.log_every`` steps, at evaluations and at the
last step; the decision is the same on every rank). Its result is read at the next
due row, long after it has arrived, so no step waits for it; the last one is waited
for at the end of training. Rows get their loss then, so ``metrics.jsonl`` and
``trainer.history`` hold the same values as a per-step allreduce would give, written
one logging interval later.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist


def backward_seed(loss: torch.Tensor) -> torch.Tensor | None:
    """The gradient to start ``loss.backward`` with: 1 (None on CPU), or NaN when ``loss``
    is NaN/Inf, so every gradient of this rank, and of the reduction, is NaN.

    On CPU one read of the value; on an accelerator two scalar ops (0·NaN = 0·Inf = NaN),
    no host sync.
    """
    if loss.is_cpu:
        return None if math.isfinite(loss.item()) else torch.full_like(loss, math.nan)
    return loss.detach() * 0.0 + 1.0


def step_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """``scheduler.step()``; when no group's learning rate changes (a constant stretch
    of the schedule) only its step counters move, which leaves the same state."""
    if scheduler._step_count > 1:  # torch checks the call order at the first step
        nxt = scheduler.last_epoch + 1
        last = scheduler._last_lr
        groups = scheduler.optimizer.param_groups
        if len(groups) == 1:  # the usual case, without building lists
            lr, f = groups[0]["lr"], scheduler.lr_lambdas[0]
            # past the point where the schedule stops changing (its constant_from),
            # the last rate it set is the next one: no need to evaluate it again
            start = getattr(f, "constant_from", None)
            same: bool = type(lr) is float and lr == last[0]
            if same and (start is None or nxt <= start):
                same = lr == scheduler.base_lrs[0] * f(nxt)
        else:
            values = [base * f(nxt) for f, base in zip(scheduler.lr_lambdas, scheduler.base_lrs, strict=True)]
            current = [g["lr"] for g in groups]
            same = all(type(v) is float for v in current) and values == current == last
        if same:
            scheduler._step_count += 1
            scheduler.last_epoch = nxt
            return
    scheduler.step()


_GRAD = operator.attrgetter("grad")


class GradCheck:
    """``check()``: whether any gradient of ``params`` holds a NaN/Inf.

    One sum per gradient buffer (a NaN or ±Inf anywhere makes the sum non-finite, and a
    sum overflows later than a norm): when the gradients tile a shared buffer exactly
    (DDP's buckets with ``gradient_as_bucket_view``), one sum over the whole bucket;
    otherwise one per gradient (sparse ones: their values).

    Bucket views are remembered: DDP hands the same view objects back every step once its
    buckets are built, so while every parameter's gradient is the object it was at the
    last check, the step costs one identity comparison per parameter, the sums and one
    scalar read. Gradients with storage of their own are not held between checks (their
    memory is freed by ``zero_grad(set_to_none=True)`` as usual).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter]) -> None:
        self.params = list(params)  # frozen ones have no gradient and are passed over
        self._key: tuple[int, ...] = ()
        self._flats: list[torch.Tensor] = []
        self._views: list[torch.Tensor | None] | None = None  # bucket views of the last check
        self._buckets_only = False  # every flat is a shared buffer, none a gradient itself

    def check(self) -> bool:
        grads = list(map(_GRAD, self.params))
        views = self._views
        if views is None or len(views) != len(grads) or not all(map(operator.is_, grads, views)):
            parts = self._parts([g for g in grads if g is not None])
            self._views = grads if parts and parts is self._flats and self._buckets_only else None
        else:
            parts = self._flats
        if len(parts) == 1:  # one flat bucket (or gradient)
            total = parts[0].sum()
            return not math.isfinite(total.item()) if total.is_cpu \
                else not bool(torch.isfinite(total))
        if not parts:
            return False
        sums = [g.sum() for g in parts]
        if sums[0].device.type == "cpu":  # reading a CPU scalar costs less than an op
            return not math.isfinite(sum(x.item() for x in sums))
        return not bool(torch.isfinite(torch.stack(sums).sum()))

    def _parts(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """The non-empty tensors whose sums cover ``grads``: sparse gradients' values, else
        the flat buffers the gradients tile (kept while the gradients' addresses stay)."""
        if any(g.is_sparse for g in grads):
            return [v for v in (g._values() if g.is_sparse else g for g in grads) if v.numel()]
        key = tuple(g.data_ptr() for g in grads)
        if key != self._key:
            self._key = key
            self._flats = [g for g in _buckets_or_grads(grads) if g.numel()]
            own = {id(g) for g in grads}
            self._buckets_only = not any(id(f) in own for f in self._flats)
        return self._flats


def _buckets_or_grads(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """The flat buffers the gradients tile exactly (one tensor each), else the gradients.

    Only buffers shared by several gradients are returned whole (they are DDP's buckets,
    alive anyway); a gradient with a storage of its own is returned as itself, so
    nothing here keeps an old gradient's memory alive.
    """
    groups: dict[int, list[torch.Tensor]] = {}
    for g in grads:
        groups.setdefault(g.untyped_storage().data_ptr(), []).append(g)
    out: list[torch.Tensor] = []
    for gs in groups.values():
        st, dtype = gs[0].untyped_storage(), gs[0].dtype
        n = st.nbytes() // gs[0].element_size()
        tiles = (len(gs) > 1 and all(g.dtype == dtype and g.is_contiguous() for g in gs)
                 and sum(g.numel() for g in gs) == n
                 and sorted(g.storage_offset() for g in gs) == _offsets(gs))
        if tiles:
            out.append(torch.empty(0, dtype=dtype, device=gs[0].device).set_(st, 0, (n,), (1,)))
        else:
            out.extend(gs)
    return out


def _offsets(gs: list[torch.Tensor]) -> list[int]:
    """Where each gradient starts if they are laid end to end in storage order."""
    sizes = [g.numel() for g in sorted(gs, key=lambda g: g.storage_offset())]
    return [sum(sizes[:i]) for i in range(len(sizes))]


class PendingLosses:
    """Rows whose rank-mean loss is still to be computed, and their local losses.

    :meth:`launch` starts one allreduce for the losses added since the last launch and
    returns at once; :meth:`collect` fills in the rows of finished reductions, oldest
    first. Call :meth:`launch` on all ranks at the same steps.

    Pacing (:meth:`due`): a collective costs a fixed time to start (a thread hand-off and
    a meeting of the ranks), which on steps of a few milliseconds is a visible share if
    paid at every logged row. Each reduction also carries every rank's seconds per step
    since the previous one, so all ranks learn the same rank-mean step time when they
    collect it, and from it the same number of steps to wait before the next launch
    (about ``min_interval_s`` worth, and never fewer than asked for). The ranks therefore
    launch at the same steps without exchanging anything else.

    Args:
        replicas: the number of ranks whose losses are summed (the data-parallel size).
        group: the process group to reduce over (default: the world).
        min_interval_s: the least time between two launches on fast steps (0: every time).
    """

    def __init__(self, replicas: int, group: dist.ProcessGroup | None = None,
                 min_interval_s: float = 0.25) -> None:
        self.replicas = replicas
        self.group = group
        self.min_interval_s = min_interval_s
        self._rows: list[dict[str, Any]] = []
        self._losses: list[torch.Tensor] = []
        self._flights: list[tuple[list[dict[str, Any]], torch.Tensor, Any]] = []
        self._next_step = 0  # the first step at which :meth:`due` says yes (agreed)
        self._last: tuple[int, float] | None = None  # (step, time) of the last launch

    def __len__(self) -> int:
        """Rows still without their loss (added or in flight)."""
        return len(self._rows) + sum(len(rows) for rows, _, _ in self._flights)

    def add(self, row: dict[str, Any], loss: torch.Tensor) -> None:
        """Fill ``row["loss"]`` with the rank mean of ``loss`` (a detached float32 scalar)
        once its reduction has been launched and collected."""
        self._rows.append(row)
        self._losses.append(loss)

    def due(self, step: int) -> bool:
        """Whether a launch at ``step`` keeps to the pacing (the same answer on every rank)."""
        return step >= self._next_step

    def launch(self, step: int | None = None) -> None:
        """Start one allreduce for every row added since the last launch (no waiting);
        ``step``: the trainer's step count now, for the pacing (None: no pacing)."""
        if not self._rows:
            return
        per_step = 0.0
        now = time.perf_counter()
        if step is not None and self._last is not None and step > self._last[0]:
            per_step = (now - self._last[1]) / (step - self._last[0])
        self._last = (step, now) if step is not None else None
        sums = torch.stack([*self._losses, torch.tensor(per_step, device=self._losses[0].device)])
        work = dist.all_reduce(sums, group=self.group, async_op=True) \
            if dist.is_initialized() else None
        self._flights.append((self._rows, sums, work))
        self._rows, self._losses = [], []

    def collect(self, wait: bool = False) -> int:
        """Fill in the rows of the reductions launched before the latest one (all of them
        with ``wait``), waiting for each; returns how many rows got their loss."""
        keep = 0 if wait else 1
        filled = 0
        while len(self._flights) > keep:
            rows, sums, work = self._flights.pop(0)
            if work is not None:
                work.wait()
            values = sums.tolist()
            for row, total in zip(rows, values, strict=False):
                row["loss"] = total / self.replicas
            filled += len(rows)
            self._pace(values[-1] / self.replicas)
        return filled

    def _pace(self, per_step: float) -> None:
        """The next launch's earliest step: about ``min_interval_s`` after the latest launch
        (its step is the same on every rank), from an agreed rank-mean seconds per step."""
        if per_step > 0 and self.min_interval_s > 0 and self._last is not None:
            self._next_step = self._last[0] + math.ceil(self.min_interval_s / per_step)

    def resolve(self) -> None:
        """Launch what is pending and wait for everything (call on all ranks together)."""
        self.launch()
        self.collect(wait=True)
