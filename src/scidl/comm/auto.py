"""``auto``: choose a strategy per bucket from the measured link and backward timeline.

The strategy records, per DDP bucket, how long the backward pass computed before the
bucket's hook fired (the time between the previous hook returning, or the end of the
forward pass, and this hook being called: compression work done inside hooks is not
counted as compute, so the timeline does not depend on which strategy reduces the
bucket).

**Provisional choice** (``comm.auto_provisional``, on by default): in step 0's first
hook, before any gradient is sent, all ranks probe the link and choose one candidate
for every parameter (:func:`choose_uniform`) from a prior of the backward pass:
``BACKWARD_PER_FORWARD`` times the forward pass just timed, spread over DDP's first
buckets by entries (:func:`prior_buckets`). Step 0's forward pass is slower than a
steady one (first-call allocations), so the prior sees more compute to hide
communication behind and errs towards less compression. When the update kept is
measured (below), rank 0, whose choice is broadcast, also prices the compressed
candidates there by the share of the first bucket's gradients each keeps and by its
compression time per entry (:func:`scidl.comm.fidelity.first_look`): a compressor that
would lose much of the update does not run while it is measured. If the forward pass
was not timed, every bucket of step 0 is reduced densely and the provisional choice is made
after it from step 0's timeline. Steps up to ``comm.auto_warmup_steps`` run under the
provisional choice while they are observed. DDP rebuilds its buckets after step 0; a
bucket whose parameters all have the same candidate gets it, any other is reduced
densely (counted as unplanned). **Refined choice**: after ``comm.auto_warmup_steps``
steps, per bucket from their timeline (:func:`choose`; step 0 is left out of it), on
the provisional choice's link. With ``comm.auto_provisional=false`` every bucket is
reduced densely until one choice after ``comm.auto_warmup_steps`` steps.

**The update kept** (``comm.auto_fidelity_steps`` > 0, an optimizer handed over by
:meth:`use_optimizer`: SGD, Adam, AdamW): from step 1 until the refined choice, which
then waits for ``comm.auto_fidelity_steps``, rank 0 passes its own gradients, in each
bucket's hook, through a model of every compressed candidate with its own error
feedback and through shadows of the optimizer (:mod:`scidl.comm.fidelity`; a copy of
the observed tensors, measured after the bucket's reduction is launched, so the work
overlaps what of it runs in the background); the
refined choice and every later one are judged by step time ÷ δ, δ the share of the
optimizer's update the assignment keeps, and each compressed candidate's compression
time per bucket, timed in the same steps, occupies the backward thread before the
bucket's collectives in the simulated pass. Besides that, each compressed candidate keeps
its own guard (``comm.warmup_steps``, error feedback).

Each choice, on every rank at once:

1. **Link probe.** Two allreduces, a small and a large message, each timed 3 times
   (fastest kept), fitted to the ring model t = 2(p−1)·α + 2(p−1)/p·n·β (the model of
   :mod:`scidl.scaling.costmodel`). The small one is ``comm.auto_probe_bytes``' first
   size; the large one is its second, or less on a slow link: the bytes the small
   message's agreed rate moves in ``PROBE_LARGE_S`` (:func:`probe_large_bytes`), so
   a slow link is not held up by a large message timed several times. A large message
   that took less than ``PROBE_BANDWIDTH_RATIO`` times the small one (mostly latency: a
   fast link sized from a latency-bound small message) is replaced by one four times
   larger, up to that bound (:func:`grow_probe_bytes`).
   ``comm.auto_link`` gives (α, β) instead of probing. The refined choice reuses the
   provisional choice's link.
2. **Agreement.** The probe times, the per-bucket compute times and the compute-only
   step time are combined with one allreduce (MAX: the slowest rank sets the pace), so
   every rank holds the same numbers.
3. **Decision** (:func:`choose`, pure). Each candidate prices a bucket with its own wire
   description (:meth:`CommStrategy.wire`) on the probed link. A simulated backward pass
   issues each bucket's collectives when its gradient is ready, one link, in bucket
   order; collectives before a plan's last one block the backward thread (SciDL's
   ``powersgd`` and ``topk`` wait there for their first collective). Starting from
   ``dense`` everywhere, the bucket whose move one step down the candidate ladder
   (``comm.auto_candidates``, least to most lossy, each a strategy name or
   ``name:field=value`` with settings of its own, :func:`candidate_config`; a step skips
   candidates that are not faster for that bucket, and with δ priced may go to any
   faster one) shortens the predicted step most is moved, until the
   exposed communication (blocked + tail after the backward pass) is at most
   ``comm.auto_exposed_fraction`` of the backward pass, or no move shortens the
   predicted step by ``comm.auto_min_gain`` of it (more compression, and so more risk
   to accuracy, is not bought for a few percent of step time).
4. Rank 0's choice is broadcast (one small broadcast), so all ranks use the same
   strategy for the same bucket whatever floating-point differences they have.

Every ``comm.auto_every`` steps (0: never) after the last choice the probe and the
decision are repeated on the steps observed since it. Each candidate runs as its own strategy object
with its own accuracy guard (``topk``, ``powersgd`` and ``quant`` keep error feedback on, and reduce
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
from collections import deque
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
from scidl.comm.config import check_candidates, split_candidate
from scidl.comm.fidelity import (
    FidelityTracker,
    Sums,
    first_look,
    kept_share,
    sample_tensors,
    update_rule,
)
from scidl.comm.registry import get_strategy_class
from scidl.comm.wire import Collective

PROBE_REPEATS = 3
PROBE_LARGE_S = 0.025  # about how long one large probe message should take, at most
PROBE_BANDWIDTH_RATIO = 2.0  # the large message must take this many times the small one
WALLS_KEPT = 1000  # step times behind a choice's measured step time (the latest)
# Backward ÷ forward time before any backward pass is seen: the backward pass computes
# gradients for both activations and weights, about twice the forward's arithmetic
# (Kaplan et al. 2020, "Scaling laws for neural language models": 6N vs 2N per token).
BACKWARD_PER_FORWARD = 2.0


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
    kept: float = 1.0  # δ: the share of the optimizer's update the choice keeps (1: not priced)

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


def probe_large_bytes(small_bytes: int, small_s: float, max_bytes: int,
                      target_s: float = PROBE_LARGE_S) -> int:
    """The large probe message: the bytes moved in ``target_s`` at the small message's
    rate (``small_bytes / small_s``, an upper bound on the time per byte since it
    includes the latency), between 8 × ``small_bytes`` and ``max_bytes``, a multiple of 4.
    A fast link gets ``max_bytes``; a slow one is not held up by a message that would take
    seconds. The same on every rank when ``small_s`` is agreed."""
    floor = min(8 * int(small_bytes), int(max_bytes))
    want = int(max_bytes) if small_s <= 0 else int(small_bytes * target_s / small_s)
    return max(floor, min(want, int(max_bytes))) // 4 * 4


def grow_probe_bytes(large_bytes: int, small_s: float, large_s: float, max_bytes: int,
                     ratio: float = PROBE_BANDWIDTH_RATIO) -> int | None:
    """The next large probe message, or None when ``large_bytes`` will do: a large message
    that took less than ``ratio`` times the small one is mostly latency (and scheduling),
    so its difference from the small one says little about the cost per byte (on a fast
    link sized from a latency-bound small message it can even read the link as free).
    Then four times the bytes, up to ``max_bytes``. The same on every rank when the times
    are agreed."""
    if large_s >= ratio * small_s or large_bytes >= int(max_bytes):
        return None
    return min(4 * int(large_bytes), int(max_bytes)) // 4 * 4


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


def candidate_class(spec: str) -> type[CommStrategy]:
    """The strategy class of a ``comm.auto_candidates`` entry (``quant:quant_bits=4`` →
    ``quant``)."""
    return get_strategy_class(split_candidate(spec)[0])


def plan_seconds(name: str, cfg: Any, info: BucketInfo, world: int, link: Link) -> list[float]:
    """Seconds of each collective candidate ``name`` issues for bucket ``info``."""
    cls = candidate_class(name)
    plan = cls.wire(candidate_config(cfg, name), info.numel, world,
                    list(info.shapes) if info.shapes else None)
    return [collective_seconds(c, world, link) for c in plan]


def simulate(buckets: Sequence[BucketInfo], plans: Sequence[Sequence[float]],
             codec: Sequence[float] | None = None) -> tuple[float, float, float]:
    """(backward seconds, blocked seconds, tail seconds) of one backward pass.

    Bucket i becomes ready ``compute_s`` after the backward thread got past bucket i−1;
    its compression takes ``codec[i]`` seconds of the backward thread (counted as
    blocked) before its collectives run one after another on one link, each starting
    when both the gradient and the link are free; every collective but the plan's last
    blocks the backward thread until it completes. Tail: link busy after the backward
    pass ended.
    """
    t = link_free = blocked = 0.0
    for i, (info, plan) in enumerate(zip(buckets, plans, strict=True)):
        t += max(info.compute_s, 0.0)
        if codec is not None and codec[i] > 0:
            blocked += codec[i]
            t += codec[i]
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
           floor_s: float = 0.0, min_gain: float | None = None,
           fidelity: Sequence[dict[str, Sums]] | None = None,
           codec: Sequence[dict[str, float]] | None = None) -> Decision:
    """The per-bucket choice (pure; same inputs → same output on every rank).

    ``candidates``: ladder from least to most lossy (default ``cfg.auto_candidates``);
    the first is where every bucket starts. ``exposed_fraction``: target exposed
    communication as a fraction of the backward pass (default
    ``cfg.auto_exposed_fraction``). A move down the ladder is made only if it shortens
    the predicted step (``floor_s``, the compute-only step, or else the backward pass,
    plus the exposed communication) by at least ``min_gain`` of it (default
    ``cfg.auto_min_gain``): more loss of accuracy for a few percent of time is not taken.

    ``fidelity`` (per bucket, the sums of :class:`scidl.comm.fidelity.FidelityTracker`):
    a move is then judged by the predicted time to accuracy, step time ÷ δ, where δ
    (:func:`scidl.comm.fidelity.kept_share`) is the share of the optimizer's update the
    whole assignment keeps; a compressor that saves link time but gives up more of the
    update is not taken. Each bucket may then move to any candidate further down the
    ladder that is faster for it (without δ only to the next faster one: the ladder's
    order is then the only measure of what a move risks).

    ``codec`` (per bucket, candidate → seconds of compression work on the backward
    thread, measured by the same tracker): added to the candidate's cost of the bucket
    (:func:`simulate`); candidates it does not name cost none.
    """
    ladder = list(candidates if candidates is not None else cfg.auto_candidates)
    frac = cfg.auto_exposed_fraction if exposed_fraction is None else exposed_fraction
    need = cfg.auto_min_gain if min_gain is None else min_gain
    cost = [[plan_seconds(name, cfg, b, world, link) for name in ladder] for b in buckets]
    work = [[(codec[i].get(name, 0.0) if codec is not None and i < len(codec) else 0.0)
             for name in ladder] for i in range(len(buckets))]
    level = [0] * len(buckets)

    def seconds(i: int, m: int) -> float:
        return sum(cost[i][m]) + work[i][m]

    def predicted(lv: list[int]) -> tuple[float, float, float]:
        return simulate(buckets, [cost[i][lv[i]] for i in range(len(buckets))],
                        [work[i][lv[i]] for i in range(len(buckets))])

    def share(lv: list[int]) -> float:
        return kept_share([ladder[x] for x in lv], fidelity) if fidelity else 1.0

    def objective(lv: list[int], blocked: float, tail: float) -> float:
        """Predicted step time, divided by δ when the update kept is priced."""
        step = max(floor_s, bwd) + blocked + tail
        kept = share(lv)
        return step / kept if kept > 0 else math.inf

    bwd, blocked, tail = predicted(level)
    moves = 0
    while world > 1 and blocked + tail > frac * bwd:
        best: tuple[float, int, int] | None = None
        now_obj = objective(level, blocked, tail)
        for i in range(len(buckets)):
            now = seconds(i, level[i])
            faster = [m for m in range(level[i] + 1, len(ladder)) if seconds(i, m) < now]
            for nxt in faster if fidelity else faster[:1]:
                trial = list(level)
                trial[i] = nxt
                _, b2, t2 = predicted(trial)
                gain = now_obj - objective(trial, b2, t2)
                if gain > max(need * now_obj, 1e-12) and (best is None or gain > best[0]):
                    best = (gain, i, nxt)
        if best is None:
            break
        level[best[1]] = best[2]
        bwd, blocked, tail = predicted(level)
        moves += 1
    return Decision([ladder[lv] for lv in level], bwd, blocked, tail, moves, ladder,
                    kept=share(level))


def candidate_config(cfg: Any, spec: str) -> Any:
    """A candidate's settings: the run's ``comm`` section with the candidate's own
    settings (``quant:quant_bits=4``), ``strategy`` its name and error feedback on;
    ``comm.warmup_steps`` stays the compressed candidates' own warm-up (dense steps from
    the start of the run, counted on top of nothing: ``auto``'s own dense observation
    steps are part of them)."""
    name, settings = split_candidate(spec)
    if not settings:
        return cfg.model_copy(update={"strategy": name, "error_feedback": True})
    return type(cfg).model_validate({**cfg.model_dump(), **settings, "strategy": name,
                                     "error_feedback": True})


def prior_buckets(shapes: Sequence[tuple[int, ...]], cap_bytes: float, backward_s: float
                  ) -> list[BucketInfo]:
    """Buckets as DDP first forms them, before any backward pass was seen: the parameters
    (``shapes``, in registration order) taken last to first and grouped up to
    ``cap_bytes`` of fp32 gradients; ``backward_s`` spread over them by entries."""
    groups: list[list[tuple[int, ...]]] = []
    size = 0.0
    for shape in reversed(shapes):
        nbytes = 4.0 * math.prod(shape)
        if not groups or size + nbytes > cap_bytes:
            groups.append([])
            size = 0.0
        groups[-1].append(tuple(shape))
        size += nbytes
    total = sum(math.prod(sh) for g in groups for sh in g) or 1
    out = []
    for g in groups:
        n = sum(math.prod(sh) for sh in g)
        out.append(BucketInfo(n, backward_s * n / total, tuple(g)))
    return out


def choose_uniform(buckets: Sequence[BucketInfo], link: Link, world: int, cfg: Any,
                   kept: dict[str, float] | None = None,
                   codec_per_entry: dict[str, float] | None = None) -> Decision:
    """One candidate for every bucket (pure): from the first of the ladder, move to a
    candidate that exposes less communication while the exposed communication is above
    ``comm.auto_exposed_fraction`` of the backward pass and the move shortens the
    predicted step by more than ``comm.auto_min_gain`` of it (the rules of
    :func:`choose`, applied to all buckets at once).

    ``kept`` (candidate → δ, absent: 1) prices the moves by step time ÷ δ, and a move
    may then go to any faster candidate; without it only to the next faster one.
    ``codec_per_entry`` (candidate → seconds per gradient entry of compression work)
    adds each bucket's compression to the backward thread."""
    ladder = list(cfg.auto_candidates)
    per = codec_per_entry or {}
    sims = [simulate(buckets, [plan_seconds(name, cfg, b, world, link) for b in buckets],
                     [per.get(name, 0.0) * b.numel for b in buckets])
            for name in ladder]
    share = [(kept or {}).get(name, 1.0) for name in ladder]
    bwd = sims[0][0]

    def exposed(m: int) -> float:
        return sims[m][1] + sims[m][2]

    def objective(m: int) -> float:
        return (bwd + exposed(m)) / share[m] if share[m] > 0 else math.inf

    cur, moves = 0, 0
    while world > 1 and exposed(cur) > cfg.auto_exposed_fraction * bwd:
        faster = [m for m in range(cur + 1, len(ladder)) if exposed(m) < exposed(cur)]
        if not faster:
            break
        nxt = min(faster if kept else faster[:1], key=objective)
        gain = objective(cur) - objective(nxt)
        if gain <= max(cfg.auto_min_gain * objective(cur), 1e-12):
            break
        cur, moves = nxt, moves + 1
    _, blocked, tail = sims[cur]
    return Decision([ladder[cur]] * len(buckets), bwd, blocked, tail, moves, ladder,
                    kept=share[cur])


def by_parameter(choice: dict[int, str], keys: dict[int, tuple[int, ...]]) -> dict[int, str]:
    """Parameter position → candidate, from a per-bucket choice and each bucket's
    parameter positions (unknown positions, −1, are left out)."""
    return {pos: choice[i] for i, key in keys.items() if i in choice for pos in key
            if pos >= 0}


def planned(index: int, key: tuple[int, ...], choice: dict[int, str],
            keys: dict[int, tuple[int, ...]], params: dict[int, str],
            default: str) -> tuple[str, bool]:
    """(candidate, unplanned) for bucket ``index`` holding parameter positions ``key``.

    The decided bucket's candidate if its parameters are the decided ones; else (DDP
    rebuilt its buckets, or the choice was made per parameter) the candidate all its
    parameters have, if they agree; else ``default`` (dense), flagged unplanned. Before
    any choice: ``default``."""
    if index in choice and keys.get(index) == key:
        return choice[index], False
    if not params:
        return default, False
    names = {params.get(pos) for pos in key}
    if len(names) == 1 and None not in names:
        return str(names.pop()), False
    return default, True


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
            s = candidate_class(name)(candidate_config(cfg, name))
            s.counters = self.counters  # one set of books
            self.inner[name] = s
        self.nonfinite_agreed = all(s.nonfinite_agreed for s in self.inner.values())
        self.dense_name = "dense" if "dense" in self.inner else cfg.auto_candidates[0]
        # decision state
        self.choice: dict[int, str] = {}  # bucket index → candidate
        self.bucket_keys: dict[int, tuple[int, ...]] = {}  # bucket index → param positions
        self.param_choice: dict[int, str] = {}  # param position → candidate
        self.link: Link | None = None
        self.decisions: list[dict[str, Any]] = []
        # observation of the current window
        self._meta: dict[int, tuple[int, tuple[tuple[int, ...], ...] | None]] = {}
        self._gaps: dict[int, list[tuple[int, float]]] = {}  # bucket → (step, seconds)
        self._floor: list[float] = []
        self._step_walls: deque[float] = deque(maxlen=WALLS_KEPT)
        self._observing = True  # another choice will come: keep the timeline
        self._fwd_start: float | None = None
        self._fwd_end: float | None = None
        self._shapes: list[tuple[int, ...]] = []  # parameters that get gradients, in order
        self._device = torch.device("cpu")  # of the probe and agreement tensors (NCCL: GPU)
        self._last_exit: float | None = None
        self._last_end: float | None = None
        self._pos: dict[int, int] = {}
        self._keys_seen: dict[int, tuple[int, ...]] = {}
        self._window_start = 0
        self._unplanned = 0
        # the update each compressed candidate keeps (rank 0, before the refined choice)
        self._fidelity: FidelityTracker | None = None
        self._fidelity_s = 0.0  # seconds spent on it in the current step
        self._kept_sums: list[dict[str, Sums]] | None = None  # what it measured (rank 0)
        self._kept_codec: list[dict[str, float]] | None = None  # compression s per bucket

    # ------------------------------------------------------------------ wiring
    def steady_after(self) -> int:
        """Its observation steps (the refined choice), or a candidate's own warm-up if
        longer."""
        inner = max((s.steady_after() for s in self.inner.values()), default=0)
        return max(self._refine_at(), inner)

    def _refine_at(self) -> int:
        """Steps observed before the refined (or the one) choice: ``comm.auto_warmup_steps``,
        or ``comm.auto_fidelity_steps`` when the update kept is measured and that is longer."""
        warm = int(self.cfg.auto_warmup_steps)
        return max(warm, int(self.cfg.auto_fidelity_steps)) if self._fidelity else warm

    def use_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Measure, before the refined choice, the share of ``optimizer``'s update each
        compressed candidate keeps (``comm.auto_fidelity_steps`` > 0; SGD, Adam, AdamW)."""
        steps = int(self.cfg.auto_fidelity_steps)
        rule = update_rule(optimizer)
        makers = {name: self._compressor_maker(name) for name in self.inner}
        models = {n: m for n, m in makers.items() if m is not None}
        if steps <= 0 or rule is None or not models:
            self._fidelity = None
            return
        self._fidelity = FidelityTracker(rule, models, count_from=max(1, steps // 2),
                                         max_entries=int(self.cfg.auto_fidelity_max_entries))

    def _compressor_maker(self, name: str) -> Any:
        """The model of candidate ``name``'s compression, as the candidate describes it
        (:meth:`CommStrategy.compression_model`; None: it keeps the update whole, or has
        no model and is priced by time alone)."""
        inner = self.inner[name]
        return type(inner).compression_model(inner.cfg)

    def setup(self, ddp_model: DDP | None, group: dist.ProcessGroup | None) -> None:
        super().setup(ddp_model, group)
        self._pos = {pid: i for i, pid in enumerate(self.param_ids)}
        if ddp_model is not None:
            self._shapes = [tuple(p.shape) for p in ddp_model.module.parameters()
                            if p.requires_grad]
            first = next(ddp_model.module.parameters(), None)
            if first is not None:
                self._device = first.device
        for s in self.inner.values():
            s.setup(ddp_model, group)

    def attach(self, ddp_model: DDP) -> None:
        super().attach(ddp_model)

        def forward_start(module: nn.Module, args: Any) -> None:
            self._fwd_start = time.perf_counter()

        def forward_done(module: nn.Module, args: Any, out: Any) -> None:
            self._fwd_end = time.perf_counter()
            self._last_exit = None

        # on the wrapped module: a hook on the DDP object itself would send every DDP
        # call down torch's slow path
        ddp_model.module.register_forward_pre_hook(forward_start)
        ddp_model.module.register_forward_hook(forward_done)

    # ------------------------------------------------------------------ reduction
    def _key(self, bucket: Bucket) -> tuple[int, ...]:
        return tuple(self._pos.get(pid, -1) for pid, _ in bucket.layout)

    def reduce(self, bucket: Bucket) -> Future[torch.Tensor]:
        now = time.perf_counter()
        prev = self._last_exit if bucket.index > 0 and self._last_exit is not None \
            else self._fwd_end
        if self._prior_due(bucket):  # step 0's first bucket, on every rank
            self._decide_prior(bucket)
        if prev is not None and self._observing:
            self._gaps.setdefault(bucket.index, []).append((self.step, max(now - prev, 0.0)))
        shapes = tuple(tuple(p.shape) for p in bucket.params) if bucket.layout else None
        self._meta[bucket.index] = (bucket.buffer.numel(), shapes)
        key = self._key(bucket)
        self._keys_seen[bucket.index] = key
        # the same on every rank: DDP's (rebuilt) buckets and the choice are rank 0's
        name, unplanned = planned(bucket.index, key, self.choice, self.bucket_keys,
                                  self.param_choice, self.dense_name)
        self._unplanned += unplanned
        taken = None
        if self._measuring_fidelity() and bucket.layout:
            t0 = time.perf_counter()
            grads = [bucket.buffer[s:s + n].view(p.shape) for p, s, n in bucket.offsets()]
            assert self._fidelity is not None
            taken = self._fidelity.take(bucket.index, key, grads)
            self._fidelity_s += time.perf_counter() - t0
        fut = self.inner[name].reduce(bucket)
        if taken is not None:  # measured while the bucket is on the wire
            assert self._fidelity is not None
            t0 = time.perf_counter()
            self._fidelity.measure(bucket.index, taken, self.step)
            self._fidelity_s += time.perf_counter() - t0
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
            if self._observing:  # (the measuring of the update kept is not compute)
                self._floor.append(max(wall - out.get("exposed_s", 0.0) - self._fidelity_s, 0.0))
        self._fidelity_s = 0.0
        due = self._due(step)
        if due:
            self._decide(probe=due != "refined", kind=due)
        self._last_end = time.perf_counter()
        return out

    def _due(self, step: int) -> str | None:
        """Which choice the close of ``step`` makes: "provisional", "refined",
        "final" (the one choice without a provisional one), "again" (every
        ``comm.auto_every``), or None."""
        warm = self._refine_at()
        if not self.decisions:
            if self.cfg.auto_provisional:
                return "provisional"
            return "final" if step + 1 >= warm else None
        if self.decisions[-1].get("kind") == "provisional":
            return "refined" if step + 1 >= warm else None
        every = self.cfg.auto_every
        return "again" if every and step + 1 - self._window_start >= every else None

    def _measuring_fidelity(self) -> bool:
        """Whether this hook measures the update kept: rank 0 decides, from step 1 (DDP's
        buckets are rebuilt after step 0) until the refined (or the one) choice."""
        return (self._fidelity is not None and self.rank == 0 and self.step >= 1
                and not any(d.get("kind") in ("refined", "final") for d in self.decisions))

    def _observed(self) -> tuple[list[BucketInfo], float]:
        """This rank's buckets (median compute per bucket over the window; step 0 only
        where the window holds nothing else: DDP builds its buckets there) and
        compute-only step time (the window's fastest)."""
        n = (max(self._meta) + 1) if self._meta else 0
        infos = []
        for i in range(n):
            numel, shapes = self._meta.get(i, (0, None))
            seen = self._gaps.get(i, [])
            gaps = [g for st, g in seen if st > 0] or [g for _, g in seen]
            infos.append(BucketInfo(numel, statistics.median(gaps) if gaps else 0.0, shapes))
        # the fastest step: its noise only adds (a new candidate's first step allocates)
        floor = min(self._floor) if self._floor else 0.0
        return infos, floor

    def _probe(self) -> tuple[float, float, int]:
        """(small, large) allreduce seconds on this rank, fastest of PROBE_REPEATS each,
        and the large message's bytes (:func:`probe_large_bytes` from the small
        message's agreed time: one 8-byte allreduce, all ranks)."""
        small_b = int(self.cfg.auto_probe_bytes[0])
        t = torch.zeros(max(small_b // 4, 1), dtype=torch.float32, device=self._device)
        dist.all_reduce(t, group=self.group)  # connect / warm the path
        small_s = self._time_allreduce(t)
        sent = ring_allreduce_bytes(t.numel() * 4, self.world, self.backend) * (PROBE_REPEATS + 1)
        self.counters.record("probe", sent, sent, calls=PROBE_REPEATS + 1)
        (agreed,) = self._agree([small_s])
        bound = int(self.cfg.auto_probe_bytes[1])
        large_b: int | None = probe_large_bytes(t.numel() * 4, agreed, bound)
        while large_b is not None:  # until the large message is mostly bandwidth
            t = torch.zeros(max(large_b // 4, 1), dtype=torch.float32, device=self._device)
            large_s = self._time_allreduce(t)
            sent = ring_allreduce_bytes(t.numel() * 4, self.world, self.backend) * PROBE_REPEATS
            self.counters.record("probe", sent, sent, calls=PROBE_REPEATS)
            (agreed_large,) = self._agree([large_s])
            large_b = grow_probe_bytes(t.numel() * 4, agreed, agreed_large, bound)
        return small_s, large_s, t.numel() * 4

    def _time_allreduce(self, t: torch.Tensor) -> float:
        """The fastest of PROBE_REPEATS allreduces of ``t``."""
        best = math.inf
        for _ in range(PROBE_REPEATS):
            t0 = time.perf_counter()
            dist.all_reduce(t, group=self.group)
            best = min(best, time.perf_counter() - t0)
        return best

    def _prior_due(self, bucket: Bucket) -> bool:
        """Whether this hook makes the provisional choice: step 0's first bucket, no
        choice yet, the forward pass timed (the same answer on every rank)."""
        return bool(self.cfg.auto_provisional and not self.decisions and self.step == 0
                    and bucket.index == 0 and self.world > 1 and self._shapes
                    and self._fwd_start is not None and self._fwd_end is not None)

    def _decide_prior(self, bucket: Bucket) -> None:
        """The provisional choice, inside step 0's first hook (all ranks): one candidate
        for every parameter, from the link probe and the forward pass's time (the
        backward pass taken as ``BACKWARD_PER_FORWARD`` times it, spread over DDP's first
        buckets by entries). When the update kept is measured later, rank 0 (whose
        choice is broadcast) prices the compressed candidates already here by the share
        of this first bucket's gradients each keeps and by its compression time
        (:func:`scidl.comm.fidelity.first_look`): a compressor that would lose much of
        the update does not run before it is measured."""
        assert self._fwd_start is not None and self._fwd_end is not None
        fwd = max(self._fwd_end - self._fwd_start, 0.0)
        probed = self.cfg.auto_link is None
        small_s, large_s, large_b = self._probe() if probed else (0.0, 0.0, 0)
        small_s, large_s, fwd = self._agree([small_s, large_s, fwd])
        link = self._link(probed, small_s, large_s, large_b)
        infos = prior_buckets(self._shapes, self.cfg.bucket_cap_mb * 2**20,
                              BACKWARD_PER_FORWARD * fwd)
        kept = per_entry = None
        if self._fidelity is not None and self.rank == 0 and bucket.layout:
            grads = [bucket.buffer[s:s + n].view(p.shape) for p, s, n in bucket.offsets()]
            picked = sample_tensors([g.numel() for g in grads], self._fidelity.max_entries,
                                    seed=bucket.index)
            kept, per_entry = first_look([grads[i] for i in picked], self._fidelity.compressors)
        decision = choose_uniform(infos, link, self.world, self.cfg, kept=kept,
                                  codec_per_entry=per_entry)
        (name,) = self._broadcast([decision.choice[0]])
        self._install({pos: name for pos in range(len(self.param_ids))}, {}, {})
        self.link = link
        self._close_window()
        extra: dict[str, Any] = {"forward_s": fwd}
        if probed:
            extra["probe_bytes"] = [self._small_bytes(), large_b]
        if kept is not None:
            extra.update(gradient_kept=kept, codec_s_per_entry=per_entry)
        self._record("provisional", [name], link, [small_s, large_s] if probed else None,
                     infos, fwd + decision.backward_s, decision, **extra)

    def _decide(self, probe: bool = True, kind: str = "final") -> None:
        """Probe (unless ``probe`` is false and a link is known), agree on the numbers,
        decide on rank 0, broadcast (all ranks)."""
        self.drain()
        for s in self.inner.values():
            s.drain()
        infos, floor = self._observed()
        known = None if probe else self.link  # the refined choice keeps the link
        probed = self.cfg.auto_link is None and self.world > 1 and known is None
        small_s, large_s, large_b = self._probe() if probed else (0.0, 0.0, 0)
        # Agree: bucket count first (a mismatch would hang the next collective), then MAX.
        count = torch.tensor([len(infos)], dtype=torch.int64, device=self._device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX, group=self.group)
        self.counters.record("agree", ring_allreduce_bytes(8, self.world, self.backend), 0)
        infos += [BucketInfo(0, 0.0, None)] * (int(count) - len(infos))
        vals = self._agree([small_s, large_s, floor, *(b.compute_s for b in infos)])
        small_s, large_s, floor = vals[:3]
        infos = [BucketInfo(b.numel, vals[3 + i], b.shapes) for i, b in enumerate(infos)]
        link = known if known is not None else self._link(probed, small_s, large_s, large_b)
        if self._fidelity is not None and kind in ("refined", "final"):
            if self.rank == 0:  # rank 0's choice is broadcast
                self._kept_sums = self._fidelity.sums(len(infos))
                self._kept_codec = self._fidelity.codec(len(infos))
            self._fidelity = None  # measured once; the shadows are freed, the sums kept
        fidelity, codec = self._kept_sums, self._kept_codec
        if fidelity is not None and len(fidelity) != len(infos):  # DDP's buckets changed
            fidelity = codec = None
        decision = choose(infos, link, self.world, self.cfg, floor_s=floor, fidelity=fidelity,
                          codec=codec)
        choice = self._broadcast(decision.choice)
        keys = {i: self._keys_seen[i] for i in range(len(choice)) if i in self._keys_seen}
        by_index = dict(enumerate(choice))
        self._install(by_parameter(by_index, keys), by_index, keys)
        self.link = link
        self._close_window()
        extra: dict[str, Any] = {"probe_bytes": [self._small_bytes(), large_b]} if probed else {}
        if fidelity is not None:
            extra |= {"update_kept": decision.kept,
                     "update_kept_per_bucket": [{n: kept_share([n], [f]) for n in f if n}
                                                for f in fidelity],
                     "codec_s_per_bucket": codec}
        self._record(kind, choice, link, [small_s, large_s] if probed else None, infos,
                     floor, decision, **extra)

    def _agree(self, vals: list[float]) -> list[float]:
        """Every rank's ``vals`` combined by MAX (the slowest rank sets the pace)."""
        nums = torch.tensor(vals, dtype=torch.float64, device=self._device)
        dist.all_reduce(nums, op=dist.ReduceOp.MAX, group=self.group)
        self.counters.record("agree", ring_allreduce_bytes(8 * nums.numel(), self.world,
                                                           self.backend), 0, calls=1)
        return [float(v) for v in nums.tolist()]

    def _small_bytes(self) -> int:
        return max(int(self.cfg.auto_probe_bytes[0]) // 4, 1) * 4

    def _link(self, probed: bool, small_s: float, large_s: float, large_b: int) -> Link:
        """The link from the agreed probe times, else ``comm.auto_link``, else free."""
        if probed:
            return fit_link(self._small_bytes(), small_s, large_b, large_s, self.world)
        if self.cfg.auto_link is not None:
            return Link(*self.cfg.auto_link)
        return Link(0.0, 0.0)

    def _broadcast(self, choice: Sequence[str]) -> list[str]:
        """Rank 0's ``choice`` on every rank (one small broadcast)."""
        names = list(self.cfg.auto_candidates)
        codes = torch.tensor([names.index(c) for c in choice], dtype=torch.int64,
                             device=self._device)
        root = 0 if self.group is None else dist.get_global_rank(self.group, 0)
        dist.broadcast(codes, src=root, group=self.group)
        nbytes = codes.numel() * 8
        self.counters.record("broadcast", broadcast_bytes(nbytes, self.world, self.rank, 0,
                                                          self.backend),
                             0 if self.rank == 0 else nbytes)
        return [names[int(c)] for c in codes.tolist()]

    def _record(self, kind: str, choice: list[str], link: Link, probe_s: list[float] | None,
                infos: Sequence[BucketInfo], floor: float, decision: Decision,
                **extra: Any) -> None:
        self.decisions.append({
            "step": self.step, "kind": kind, "choice": choice, "link": asdict(link),
            "probe_s": probe_s, **extra,
            "bucket_numel": [b.numel for b in infos],
            "bucket_compute_s": [b.compute_s for b in infos],
            "compute_floor_s": floor,
            "predicted_backward_s": decision.backward_s,
            "predicted_exposed_s": decision.exposed_s,
            # no compute-only step is known after step 0: the backward pass stands in
            "predicted_step_s": max(floor, decision.backward_s) + decision.exposed_s,
            "measured_step_s": None, "measured_steps": 0,
        })
        self._observing = self._more_to_come()

    def _install(self, params: dict[int, str], choice: dict[int, str],
                 keys: dict[int, tuple[int, ...]]) -> None:
        """Install a choice (per parameter; per bucket where ``choice`` and ``keys``
        name the buckets); a candidate that loses a parameter forgets its state."""
        lost = {name for pos, name in self.param_choice.items() if params.get(pos) != name}
        self.param_choice, self.choice, self.bucket_keys = params, choice, keys
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

    def _more_to_come(self) -> bool:
        """Whether another choice will be made (a provisional one stands, or
        ``comm.auto_every``): only then is the timeline kept."""
        last = self.decisions[-1] if self.decisions else None
        return last is None or last.get("kind") == "provisional" or bool(self.cfg.auto_every)

    # ------------------------------------------------------------------ state
    def on_skipped_step(self) -> None:
        self.drain()
        for s in self.inner.values():
            s.drain()
        self.reset_state()
        if self._fidelity is not None:  # its shadows saw the non-finite gradients
            self._fidelity.reset()

    def reset_state(self) -> None:
        for s in self.inner.values():
            s.reset_state()

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "choice": dict(self.choice),
                "bucket_keys": {i: list(k) for i, k in self.bucket_keys.items()},
                "param_choice": dict(self.param_choice),
                "link": asdict(self.link) if self.link else None,
                "decisions": [dict(d) for d in self.decisions],
                "kept_sums": self._kept_sums,
                "kept_codec": self._kept_codec,
                "inner": {name: s.state_dict() for name, s in self.inner.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for name, s in self.inner.items():
            s.load_state_dict(state.get("inner", {}).get(name, {}))
            s.step = self.step
        self.choice = {int(i): str(n) for i, n in state.get("choice", {}).items()
                       if n in self.inner}
        self.bucket_keys = {int(i): tuple(k) for i, k in state.get("bucket_keys", {}).items()}
        saved = state.get("param_choice")
        self.param_choice = ({int(i): str(n) for i, n in saved.items() if n in self.inner}
                             if saved is not None else by_parameter(self.choice, self.bucket_keys))
        link = state.get("link")
        self.link = Link(**link) if link else None
        self.decisions = [dict(d) for d in state.get("decisions", [])]
        sums = state.get("kept_sums")
        self._kept_sums = None if sums is None else [
            {str(k): (float(v[0]), float(v[1]), float(v[2])) for k, v in f.items()} for f in sums]
        codec = state.get("kept_codec")
        self._kept_codec = None if codec is None else [
            {str(k): float(v) for k, v in f.items()} for f in codec]
        if any(d.get("kind") in ("refined", "final") for d in self.decisions):
            self._fidelity = None  # measured before the checkpoint
        self._window_start = self.step
        self._observing = self._more_to_come()

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
