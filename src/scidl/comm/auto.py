"""``auto``: choose a strategy per bucket from the measured link and backward timeline.

For the first ``comm.auto_warmup_steps`` steps every bucket is reduced densely (the
accuracy guard of the compressed strategies: no compression before the model has
settled, and DDP rebuilds its buckets after the first step) while the strategy records,
per DDP bucket, how long the backward pass computed before the bucket's hook fired
(the time between the previous hook returning, or the end of the forward pass, and this
hook being called: compression work done inside hooks is not counted as compute).
Then, on every rank at once:

1. **Link probe.** Two allreduces of ``comm.auto_probe_bytes`` (a small and a large
   message, each timed 3 times, fastest kept), fitted to the ring model
   t = 2(p−1)·α + 2(p−1)/p·n·β (the model of :mod:`scidl.scaling.costmodel`).
   ``comm.auto_link`` gives (α, β) instead of probing.
2. **Agreement.** The probe times, the per-bucket compute times and the compute-only
   step time are combined with one allreduce (MAX: the slowest rank sets the pace), so
   every rank holds the same numbers.
3. **Decision** (:func:`choose`, pure). Each candidate prices a bucket with its own wire
   description (:meth:`CommStrategy.wire`) on the probed link. A simulated backward pass
   issues each bucket's collectives when its gradient is ready, one link, in bucket
   order; collectives before a plan's last one block the backward thread (SciDL's
   ``powersgd`` and ``topk`` wait there for their first collective). Starting from
   ``dense`` everywhere, the bucket whose move one step down the candidate ladder
   (``comm.auto_candidates``, least to most lossy; a step skips candidates that are not
   faster for that bucket) shortens the predicted step most is moved, until the
   exposed communication (blocked + tail after the backward pass) is at most
   ``comm.auto_exposed_fraction`` of the backward pass, or no move shortens the
   predicted step by ``comm.auto_min_gain`` of it (more compression, and so more risk
   to accuracy, is not bought for a few percent of step time).
4. Rank 0's choice is broadcast (one small broadcast), so all ranks use the same
   strategy for the same bucket whatever floating-point differences they have.

Every ``comm.auto_every`` steps (0: never) the probe and the decision are repeated on
steps observed since the last decision. Each candidate runs as its own strategy object
with its own accuracy guard (``topk``/``powersgd`` keep error feedback on, and reduce
densely for the first ``comm.warmup_steps`` steps of the run; residuals and warm
starts are per parameter); a candidate that loses a bucket at a re-decision
forgets its state (its residual would be stale). The choice, the probed link, and the
predicted vs measured step time (median wall time between ``end_step`` calls since the
decision) are in :meth:`report`, i.e. in the run's ``comm.json``.

Non-finite gradients: every rank uses the same candidate for the same bucket, and every
candidate must follow the non-finite contract (``nonfinite_agreed``), so a NaN/Inf on
one rank reaches every rank's bucket and the trainer skips the step everywhere;
``on_skipped_step`` resets every candidate.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.futures import Future
from torch.nn.parallel import DistributedDataParallel as DDP

from scidl.comm.accounting import broadcast_bytes, ring_allreduce_bytes, ring_steps
from scidl.comm.base import CommStrategy
from scidl.comm.buckets import Bucket
from scidl.comm.config import check_candidates
from scidl.comm.registry import get_strategy_class
from scidl.comm.wire import Collective

PROBE_REPEATS = 3


# ----------------------------------------------------------------------------- pure part


@dataclass(frozen=True)
class BucketInfo:
    """One DDP bucket as the decision sees it.

    Attributes:
        numel: fp32 entries.
        compute_s: backward compute before its hook fired (after the previous bucket's).
        shapes: shapes of its parameters (None: unknown).
    """

    numel: int
    compute_s: float
    shapes: tuple[tuple[int, ...], ...] | None = None


@dataclass(frozen=True)
class Link:
    """Probed point-to-point cost: α s per message, β s per byte."""

    alpha: float
    beta: float


@dataclass
class Decision:
    """A per-bucket choice and what the model predicts for it (seconds per step)."""

    choice: list[str]
    backward_s: float
    blocked_s: float
    tail_s: float
    moves: int = 0
    candidates: list[str] = field(default_factory=list)

    @property
    def exposed_s(self) -> float:
        return self.blocked_s + self.tail_s


def fit_link(small_bytes: float, small_s: float, large_bytes: float, large_s: float,
             world: int) -> Link:
    """(α, β) of the ring allreduce model from two timed allreduce sizes (α, β ≥ 0)."""
    if world <= 1:
        return Link(0.0, 0.0)
    a = 2 * ring_steps(world)
    bs, bl = ring_allreduce_bytes(float(small_bytes), world), ring_allreduce_bytes(
        float(large_bytes), world)
    beta = max((large_s - small_s) / max(bl - bs, 1.0), 1e-15)
    alpha = max((small_s - bs * beta) / a, 0.0)
    return Link(alpha, beta)


def collective_seconds(c: Collective, world: int, link: Link) -> float:
    """Seconds of one collective on ``world`` ranks (ring algorithms, α-β model)."""
    from scidl.scaling.costmodel import (
        LinkCost,
        ring_allgather_time,
        ring_allreduce_time,
        ring_reduce_scatter_time,
    )

    lc = LinkCost(link.alpha, link.beta)
    if c.op == "allreduce":
        return ring_allreduce_time(c.nbytes, world, lc)
    if c.op == "allgather":
        return ring_allgather_time(c.nbytes * world, world, lc)
    return ring_reduce_scatter_time(c.nbytes, world, lc)


def plan_seconds(name: str, cfg: Any, info: BucketInfo, world: int, link: Link) -> list[float]:
    """Seconds of each collective candidate ``name`` issues for bucket ``info``."""
    cls = get_strategy_class(name)
    plan = cls.wire(candidate_config(cfg, name), info.numel, world,
                    list(info.shapes) if info.shapes else None)
    return [collective_seconds(c, world, link) for c in plan]


def simulate(buckets: Sequence[BucketInfo], plans: Sequence[Sequence[float]]
             ) -> tuple[float, float, float]:
    """(backward seconds, blocked seconds, tail seconds) of one backward pass.

    Bucket i becomes ready ``compute_s`` after the backward thread got past bucket i−1;
    its collectives run one after another on one link, each starting when both the
    gradient and the link are free; every collective but the plan's last blocks the
    backward thread until it completes. Tail: link busy after the backward pass ended.
    """
    t = link_free = blocked = 0.0
    for info, plan in zip(buckets, plans, strict=True):
        t += max(info.compute_s, 0.0)
        for j, sec in enumerate(plan):
            start = max(t, link_free)
            link_free = start + sec
            if j < len(plan) - 1:
                blocked += link_free - t
                t = link_free
    compute = sum(max(b.compute_s, 0.0) for b in buckets)
    return compute, blocked, max(link_free - t, 0.0)


def choose(buckets: Sequence[BucketInfo], link: Link, world: int, cfg: Any,
           candidates: Sequence[str] | None = None, exposed_fraction: float | None = None,
           floor_s: float = 0.0, min_gain: float | None = None) -> Decision:
    """The per-bucket choice (pure; same inputs → same output on every rank).

    ``candidates``: ladder from least to most lossy (default ``cfg.auto_candidates``);
    the first is where every bucket starts. ``exposed_fraction``: target exposed
    communication as a fraction of the backward pass (default
    ``cfg.auto_exposed_fraction``). A move down the ladder is made only if it shortens
    the predicted step (``floor_s``, the compute-only step, or else the backward pass,
    plus the exposed communication) by at least ``min_gain`` of it (default
    ``cfg.auto_min_gain``): more loss of accuracy for a few percent of time is not taken.
    """
    ladder = list(candidates if candidates is not None else cfg.auto_candidates)
    frac = cfg.auto_exposed_fraction if exposed_fraction is None else exposed_fraction
    need = cfg.auto_min_gain if min_gain is None else min_gain
    cost = [[plan_seconds(name, cfg, b, world, link) for name in ladder] for b in buckets]
    level = [0] * len(buckets)

    def predicted(lv: list[int]) -> tuple[float, float, float]:
        return simulate(buckets, [cost[i][lv[i]] for i in range(len(buckets))])

    bwd, blocked, tail = predicted(level)
    moves = 0
    while world > 1 and blocked + tail > frac * bwd:
        best: tuple[float, int, int] | None = None
        for i in range(len(buckets)):
            now = sum(cost[i][level[i]])
            nxt = next((m for m in range(level[i] + 1, len(ladder))
                        if sum(cost[i][m]) < now), None)
            if nxt is None:
                continue
            trial = list(level)
            trial[i] = nxt
            _, b2, t2 = predicted(trial)
            gain = (blocked + tail) - (b2 + t2)
            step = max(floor_s, bwd) + blocked + tail
            if gain > max(need * step, 1e-12) and (best is None or gain > best[0]):
                best = (gain, i, nxt)
        if best is None:
            break
        level[best[1]] = best[2]
        bwd, blocked, tail = predicted(level)
        moves += 1
    return Decision([ladder[lv] for lv in level], bwd, blocked, tail, moves, ladder)


def candidate_config(cfg: Any, name: str) -> Any:
    """A candidate's settings: the run's ``comm`` section with ``strategy=name`` and error
    feedback on; ``comm.warmup_steps`` stays the compressed candidates' own warm-up
    (dense steps from the start of the run, counted on top of nothing: ``auto``'s own
    dense observation steps are part of them)."""
    return cfg.model_copy(update={"strategy": name, "error_feedback": True})


# ----------------------------------------------------------------------------- strategy


class Auto(CommStrategy):
    """Per-bucket choice among ``comm.auto_candidates`` from a link probe and the
    observed backward timeline (see the module doc)."""

    name = "auto"
    description = "per-bucket choice of dense/fp16/powersgd/topk from a link probe"
    wire_settings = ()

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        check_candidates(cfg.auto_candidates)
        self.inner: dict[str, CommStrategy] = {}
        for name in cfg.auto_candidates:
            s = get_strategy_class(name)(candidate_config(cfg, name))
            s.counters = self.counters  # one set of books
            self.inner[name] = s
        self.nonfinite_agreed = all(s.nonfinite_agreed for s in self.inner.values())
        self.dense_name = "dense" if "dense" in self.inner else cfg.auto_candidates[0]
        # decision state
        self.choice: dict[int, str] = {}  # bucket index → candidate
        self.bucket_keys: dict[int, tuple[int, ...]] = {}  # bucket index → param positions
        self.link: Link | None = None
        self.decisions: list[dict[str, Any]] = []
        # observation of the current window
        self._meta: dict[int, tuple[int, tuple[tuple[int, ...], ...] | None]] = {}
        self._gaps: dict[int, list[float]] = {}
        self._floor: list[float] = []
        self._step_walls: list[float] = []
        self._fwd_end: float | None = None
        self._last_exit: float | None = None
        self._last_end: float | None = None
        self._pos: dict[int, int] = {}
        self._keys_seen: dict[int, tuple[int, ...]] = {}
        self._window_start = 0
        self._unplanned = 0

    # ------------------------------------------------------------------ wiring
    def steady_after(self) -> int:
        """Its dense observation steps, or a candidate's own warm-up if longer."""
        inner = max((s.steady_after() for s in self.inner.values()), default=0)
        return max(int(self.cfg.auto_warmup_steps), inner)

    def setup(self, ddp_model: DDP | None, group: dist.ProcessGroup | None) -> None:
        super().setup(ddp_model, group)
        self._pos = {pid: i for i, pid in enumerate(self.param_ids)}
        for s in self.inner.values():
            s.setup(ddp_model, group)

    def attach(self, ddp_model: DDP) -> None:
        super().attach(ddp_model)

        def forward_done(module: nn.Module, args: Any, out: Any) -> None:
            self._fwd_end = time.perf_counter()
            self._last_exit = None

        # on the wrapped module: a hook on the DDP object itself would send every DDP
        # call down torch's slow path
        ddp_model.module.register_forward_hook(forward_done)

    # ------------------------------------------------------------------ reduction
    def _key(self, bucket: Bucket) -> tuple[int, ...]:
        return tuple(self._pos.get(pid, -1) for pid, _ in bucket.layout)

    def reduce(self, bucket: Bucket) -> Future[torch.Tensor]:
        now = time.perf_counter()
        prev = self._last_exit if bucket.index > 0 and self._last_exit is not None \
            else self._fwd_end
        if prev is not None:
            self._gaps.setdefault(bucket.index, []).append(max(now - prev, 0.0))
        shapes = tuple(tuple(p.shape) for p in bucket.params) if bucket.layout else None
        self._meta[bucket.index] = (bucket.buffer.numel(), shapes)
        self._keys_seen[bucket.index] = self._key(bucket)
        name = self.choice.get(bucket.index, self.dense_name)
        if name != self.dense_name and self.bucket_keys.get(bucket.index) != self._key(bucket):
            name = self.dense_name  # the buckets changed since the decision (same on all ranks)
            self._unplanned += 1
        fut = self.inner[name].reduce(bucket)
        self._last_exit = time.perf_counter()
        return fut

    # ------------------------------------------------------------------ steps
    def end_step(self) -> dict[str, float]:
        step = self.step  # the step being closed
        now = time.perf_counter()
        wall = None if self._last_end is None else now - self._last_end
        for s in self.inner.values():
            s.step += 1
        out = super().end_step()
        if wall is not None and step > 0:  # step 0: DDP builds and rebuilds its buckets
            self._step_walls.append(wall)
            self._floor.append(max(wall - out.get("exposed_s", 0.0), 0.0))
        first = not self.decisions and step + 1 >= self.cfg.auto_warmup_steps
        again = (self.decisions and self.cfg.auto_every
                 and step + 1 - self._window_start >= self.cfg.auto_every)
        if first or again:
            self._decide()
        self._last_end = time.perf_counter()
        return out

    def _observed(self) -> tuple[list[BucketInfo], float]:
        """This rank's buckets (median compute per bucket, steps 1+ of the window) and
        compute-only step time."""
        n = (max(self._meta) + 1) if self._meta else 0
        infos = []
        for i in range(n):
            numel, shapes = self._meta.get(i, (0, None))
            gaps = self._gaps.get(i, [])[1:] or self._gaps.get(i, [])
            infos.append(BucketInfo(numel, statistics.median(gaps) if gaps else 0.0, shapes))
        floor = statistics.median(self._floor) if self._floor else 0.0
        return infos, floor

    def _probe(self) -> tuple[float, float]:
        """(small, large) allreduce seconds on this rank: fastest of PROBE_REPEATS each."""
        out = []
        for nbytes in self.cfg.auto_probe_bytes:
            t = torch.zeros(max(int(nbytes) // 4, 1), dtype=torch.float32)
            dist.all_reduce(t, group=self.group)  # connect / warm the path
            best = math.inf
            for _ in range(PROBE_REPEATS):
                t0 = time.perf_counter()
                dist.all_reduce(t, group=self.group)
                best = min(best, time.perf_counter() - t0)
            sent = ring_allreduce_bytes(t.numel() * 4, self.world, self.backend)
            self.counters.record("probe", sent * (PROBE_REPEATS + 1), sent * (PROBE_REPEATS + 1),
                                 calls=PROBE_REPEATS + 1)
            out.append(best)
        return out[0], out[1]

    def _decide(self) -> None:
        """Probe, agree on the numbers, decide on rank 0, broadcast (all ranks)."""
        self.drain()
        for s in self.inner.values():
            s.drain()
        infos, floor = self._observed()
        probed = self.cfg.auto_link is None and self.world > 1
        small_s, large_s = self._probe() if probed else (0.0, 0.0)
        # Agree: bucket count first (a mismatch would hang the next collective), then MAX.
        count = torch.tensor([len(infos)], dtype=torch.int64)
        dist.all_reduce(count, op=dist.ReduceOp.MAX, group=self.group)
        n = int(count)
        infos += [BucketInfo(0, 0.0, None)] * (n - len(infos))
        nums = torch.tensor([small_s, large_s, floor, *(b.compute_s for b in infos)],
                            dtype=torch.float64)
        dist.all_reduce(nums, op=dist.ReduceOp.MAX, group=self.group)
        self.counters.record("agree", ring_allreduce_bytes(8 * (1 + nums.numel()), self.world,
                                                           self.backend), 0, calls=2)
        vals = nums.tolist()
        small_s, large_s, floor = vals[:3]
        infos = [BucketInfo(b.numel, vals[3 + i], b.shapes) for i, b in enumerate(infos)]
        if probed:
            small_b, large_b = self.cfg.auto_probe_bytes
            link = fit_link(small_b // 4 * 4, small_s, large_b // 4 * 4, large_s, self.world)
        elif self.cfg.auto_link is not None:
            link = Link(*self.cfg.auto_link)
        else:
            link = Link(0.0, 0.0)
        decision = choose(infos, link, self.world, self.cfg, floor_s=floor)
        names = list(self.cfg.auto_candidates)
        codes = torch.tensor([names.index(c) for c in decision.choice], dtype=torch.int64)
        root = 0 if self.group is None else dist.get_global_rank(self.group, 0)
        dist.broadcast(codes, src=root, group=self.group)
        nbytes = codes.numel() * 8
        self.counters.record("broadcast", broadcast_bytes(nbytes, self.world, self.rank, 0,
                                                          self.backend),
                             0 if self.rank == 0 else nbytes)
        choice = [names[int(c)] for c in codes.tolist()]
        self._apply(choice)
        self.link = link
        self._close_window()
        self.decisions.append({
            "step": self.step, "choice": choice, "link": asdict(link),
            "probe_s": [small_s, large_s] if probed else None,
            "bucket_numel": [b.numel for b in infos],
            "bucket_compute_s": [b.compute_s for b in infos],
            "compute_floor_s": floor,
            "predicted_backward_s": decision.backward_s,
            "predicted_exposed_s": decision.exposed_s,
            "predicted_step_s": floor + decision.exposed_s,
            "measured_step_s": None, "measured_steps": 0,
        })

    def _apply(self, choice: list[str]) -> None:
        """Install ``choice``; candidates that lose a bucket forget their state."""
        old = dict(self.choice)
        self.choice = dict(enumerate(choice))
        self.bucket_keys = {}
        for i in range(len(choice)):
            if i in self._keys_seen:
                self.bucket_keys[i] = self._keys_seen[i]
        lost = {name for i, name in old.items() if self.choice.get(i) != name}
        for name in lost:
            self.inner[name].reset_state()

    def _close_window(self) -> None:
        """Start a new observation window (the measured step time of the last decision
        comes from it)."""
        if self.decisions:
            last = self.decisions[-1]
            walls = self._step_walls
            last["measured_step_s"] = statistics.median(walls) if walls else None
            last["measured_steps"] = len(walls)
        self._gaps.clear()
        self._floor.clear()
        self._step_walls.clear()
        self._window_start = self.step

    # ------------------------------------------------------------------ state
    def on_skipped_step(self) -> None:
        self.drain()
        for s in self.inner.values():
            s.drain()
        self.reset_state()

    def reset_state(self) -> None:
        for s in self.inner.values():
            s.reset_state()

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "choice": dict(self.choice),
                "bucket_keys": {i: list(k) for i, k in self.bucket_keys.items()},
                "link": asdict(self.link) if self.link else None,
                "decisions": [dict(d) for d in self.decisions],
                "inner": {name: s.state_dict() for name, s in self.inner.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for name, s in self.inner.items():
            s.load_state_dict(state.get("inner", {}).get(name, {}))
            s.step = self.step
        self.choice = {int(i): str(n) for i, n in state.get("choice", {}).items()
                       if n in self.inner}
        self.bucket_keys = {int(i): tuple(k) for i, k in state.get("bucket_keys", {}).items()}
        link = state.get("link")
        self.link = Link(**link) if link else None
        self.decisions = [dict(d) for d in state.get("decisions", [])]
        self._window_start = self.step

    def report(self) -> dict[str, Any]:
        out = super().report()
        if self.decisions and self.decisions[-1]["measured_steps"] == 0 and self._step_walls:
            last = self.decisions[-1]
            last["measured_step_s"] = statistics.median(self._step_walls)
            last["measured_steps"] = len(self._step_walls)
        names = list(self.choice.values())
        out.update(
            candidates=list(self.cfg.auto_candidates),
            choice=[self.choice[i] for i in sorted(self.choice)],
            choice_counts={n: names.count(n) for n in self.cfg.auto_candidates},
            link=asdict(self.link) if self.link else None,
            decisions=self.decisions,
            unplanned_buckets=self._unplanned,
        )
        last = self.decisions[-1] if self.decisions else {}
        out["predicted_step_s"] = last.get("predicted_step_s")
        out["measured_step_s"] = last.get("measured_step_s")
        return out
