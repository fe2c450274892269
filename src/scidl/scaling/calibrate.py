"""One-node calibration of the step terms: ``scidl profile``.

Runs a workload's training step on this machine (one process, no process group) and
measures what :mod:`scidl.scaling.predict` needs besides the collectives:

* compute per step and its per-step spread (``step_cv`` = 1.4826·MAD / median: the
  straggler term's σ relative to the step);
* the bucket timeline: when each gradient bucket is complete in the backward pass
  (per-parameter ``register_post_accumulate_grad_hook`` times, grouped into the DDP
  buckets of ``comm.bucket_cap_mb``), as fractions of the backward pass;
* the batch-efficiency curve: compute per step at a few local batch sizes;
* data-loader time and input bytes per step;
* interference: the backward pass timed with and without a concurrent allreduce of
  the gradient's size running between this process and a helper process (gloo).

Every function returns plain numbers; :func:`measure_profile` assembles a
:class:`~scidl.scaling.predict.StepProfile`.
"""

from __future__ import annotations

import datetime
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from scidl.scaling.predict import StepProfile
from scidl.scaling.profile import bucketize_shapes, fp32_bytes


def robust_cv(values: list[float]) -> float:
    """1.4826·MAD / median: the normal σ of ``values`` relative to their median, robust
    to the odd slow step."""
    if len(values) < 3:
        return 0.0
    med = statistics.median(values)
    mad = statistics.median(abs(v - med) for v in values)
    return 1.4826 * mad / med if med > 0 else 0.0


def batch_bytes(batch: Any) -> int:
    """Bytes of the tensors in a batch (nested tuples, lists, dicts)."""
    if isinstance(batch, torch.Tensor):
        return batch.numel() * batch.element_size()
    if isinstance(batch, dict):
        return sum(batch_bytes(v) for v in batch.values())
    if isinstance(batch, (list, tuple)):
        return sum(batch_bytes(v) for v in batch)
    return 0


def _cycle(loader: Any) -> Iterator[Any]:
    while True:
        yield from loader


class BackwardTimeline:
    """Per-parameter gradient-ready times during one backward pass."""

    def __init__(self, model: nn.Module) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad][::-1]
        self.ready: dict[int, float] = {}
        self._handles = [p.register_post_accumulate_grad_hook(self._hook(i))
                         for i, p in enumerate(self.params)]

    def _hook(self, i: int) -> Callable[[torch.Tensor], None]:
        def hook(_: torch.Tensor) -> None:
            self.ready[i] = time.perf_counter()
        return hook

    def bucket_fractions(self, t0: float, t1: float, cap: float) -> list[float]:
        """Ready time of each bucket (its last parameter) as a fraction of [t0, t1]."""
        shapes = [list(p.shape) for p in self.params]
        out, i = [], 0
        span = max(t1 - t0, 1e-12)
        for bucket in bucketize_shapes(shapes, cap):
            idx = range(i, i + len(bucket))
            i += len(bucket)
            last = max(self.ready.get(j, t1) for j in idx)
            out.append(min(max((last - t0) / span, 0.0), 1.0))
        return out

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def time_steps(model: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor],
               batches: Iterator[Any], steps: int, cap: float | None = None,
               concurrent: Callable[[], Any] | None = None,
               make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
               ) -> dict[str, Any]:
    """Time ``steps`` training steps (after one warm-up): per step the loader, forward,
    backward and update seconds; with ``cap`` the bucket timeline of each backward.
    ``concurrent``: a context manager factory run around each backward pass.
    ``make_optimizer``: the run's optimizer (its update is part of the step's compute:
    Adam's costs several times SGD's); None: plain SGD."""
    opt = make_optimizer(model) if make_optimizer else torch.optim.SGD(model.parameters(), lr=1e-6)
    tl = BackwardTimeline(model) if cap else None
    rows: list[dict[str, float]] = []
    fractions: list[list[float]] = []
    try:
        for k in range(steps + 1):
            t0 = time.perf_counter()
            batch = next(batches)
            t1 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            t2 = time.perf_counter()
            if tl:
                tl.ready.clear()
            if concurrent is not None:
                with concurrent():
                    t2 = time.perf_counter()
                    loss.backward()
                    t3 = time.perf_counter()
            else:
                loss.backward()
                t3 = time.perf_counter()
            opt.step()
            t4 = time.perf_counter()
            if k == 0:
                continue
            rows.append({"loader_s": t1 - t0, "fwd_s": t2 - t1, "bwd_s": t3 - t2,
                         "opt_s": t4 - t3, "in_bytes": float(batch_bytes(batch))})
            if tl and cap:
                fractions.append(tl.bucket_fractions(t2, t3, cap))
    finally:
        if tl:
            tl.close()
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    compute = [r["fwd_s"] + r["bwd_s"] + r["opt_s"] for r in rows]
    out: dict[str, Any] = {**med, "compute_s": statistics.median(compute),
                           "step_cv": robust_cv(compute)}
    if fractions:
        out["bucket_ready"] = [statistics.median(col) for col in zip(*fractions, strict=True)]
    return out


# ----------------------------------------------------------------------- interference

_TIMEOUT = datetime.timedelta(seconds=120)  # a partner that died: an error, not a hang

def _partner(addr: str, port: int, numel: int) -> None:  # pragma: no cover - subprocess
    torch.set_num_threads(1)
    store = torch.distributed.TCPStore(addr, port, 2, False)
    pg = torch.distributed.ProcessGroupGloo(store, 1, 2, _TIMEOUT)
    buf = torch.zeros(numel)
    while True:
        buf[0] = 0.0
        pg.allreduce([buf]).wait()  # type: ignore[attr-defined]
        if buf[0] > 0.5:
            return


class ConcurrentAllreduce:
    """Allreduces of ``numel`` fp32 between this process and a helper process, looping in
    a background thread while the context is open (gloo, no default process group)."""

    def __init__(self, numel: int) -> None:
        import multiprocessing as mp
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.store = torch.distributed.TCPStore("127.0.0.1", port, 2, True, wait_for_workers=False)
        self.proc = mp.get_context("spawn").Process(
            target=_partner, args=("127.0.0.1", port, numel), daemon=True)
        self.proc.start()
        self.pg = torch.distributed.ProcessGroupGloo(self.store, 0, 2, _TIMEOUT)
        self.buf = torch.zeros(numel)
        self._run = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            self._run.wait()
            # read the flag once: a close() during an allreduce must not end the loop
            # without the partner having seen the stop mark (it would wait for ever)
            stop = self._stop
            self.buf[0] = 1.0 if stop else 0.0
            self.pg.allreduce([self.buf]).wait()  # type: ignore[attr-defined]
            if stop:
                return

    def __call__(self) -> ConcurrentAllreduce:
        return self

    def __enter__(self) -> None:
        self._run.set()

    def __exit__(self, *exc: object) -> None:
        self._run.clear()

    def close(self) -> None:
        self._stop = True
        self._run.set()
        self._thread.join(timeout=30)
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()


def measure_interference(model: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor],
                         batches: Iterator[Any], steps: int) -> tuple[float, float, float]:
    """(backward s alone, backward s with a concurrent gradient-sized allreduce,
    slowdown ≥ 1). Alone and concurrent steps alternate in rounds, so a change of the
    machine's load hits both."""
    numel = sum(p.numel() for p in model.parameters() if p.requires_grad)
    conc = ConcurrentAllreduce(max(numel, 1))
    alone, busy = [], []
    try:
        for _ in range(max(1, steps // 2)):
            alone.append(time_steps(model, loss_fn, batches, 2)["bwd_s"])
            busy.append(time_steps(model, loss_fn, batches, 2, concurrent=conc)["bwd_s"])
    finally:
        conc.close()
    a, b = statistics.median(alone), statistics.median(busy)
    return a, b, max(1.0, b / a) if a > 0 else 1.0


# ----------------------------------------------------------------------- assembly

def run_optimizer(cfg: Any) -> Callable[[nn.Module], torch.optim.Optimizer] | None:
    """A factory of the run's optimizer (``optim.*``), or None (plain SGD) for one that
    needs a closure (L-BFGS): its step re-evaluates the loss, which the timing loop does
    not give it."""
    from scidl.optim import build_optimizer
    from scidl.train.schedule_phases import needs_closure

    def make(model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(model, cfg.optim)

    probe = make(nn.Linear(1, 1))
    return None if needs_closure(probe) else make


def measure_profile(cfg: Any, steps: int = 10, batches: list[int] | None = None,
                    interference: bool = True, comms: list[str] | None = None
                    ) -> tuple[StepProfile, dict[str, Any]]:
    """Measure a workload's step profile on this machine (one process, one thread).

    ``batches``: local batch sizes of the batch-efficiency curve (default: b/4, b/2, b
    of the run's ``train.batch_size``); ``comms``: comm specs whose own computation is
    measured (:func:`measure_codec`). Returns the profile and the raw measurements.
    """
    from torch.utils.data import DataLoader, Subset

    from scidl.runtime.seed import seed_everything
    from scidl.workloads import get_workload
    from scidl.workloads.base import BuildContext

    torch.set_num_threads(1)
    seed_everything(cfg.train.seed)
    task = get_workload(cfg.workload).build(cfg.task_config(), BuildContext(seed=cfg.train.seed))
    model = task.model
    model.train()
    n_data = len(task.train_data)  # type: ignore[arg-type]
    b = n_data if task.full_batch else int(cfg.train.batch_size)
    sizes = sorted({max(1, x) for x in (batches or [b // 4, b // 2, b])} | {b})
    cap = float(cfg.comm.bucket_cap_mb) * 2**20

    def loader(bs: int) -> Iterator[Any]:
        data = Subset(task.train_data, range(min(bs, n_data))) if task.full_batch else task.train_data
        return _cycle(DataLoader(data, batch_size=min(bs, n_data), shuffle=not task.full_batch,
                                 collate_fn=task.collate_fn, drop_last=True,
                                 generator=torch.Generator().manual_seed(cfg.train.seed)))

    make_opt = run_optimizer(cfg)
    main = time_steps(model, task.loss, loader(b), steps, cap=cap, make_optimizer=make_opt)
    curve = [(float(b), main["compute_s"])]
    for bs in sizes:
        if bs != b:
            curve.append((float(bs), time_steps(model, task.loss, loader(bs), max(3, steps // 2),
                                                make_optimizer=make_opt)["compute_s"]))
    curve.sort()
    raw: dict[str, Any] = {"main": main, "batch_curve": curve}
    slow = None
    if interference:
        alone, busy, slow = measure_interference(model, task.loss, loader(b), max(4, steps // 2))
        raw["interference"] = {"backward_alone_s": alone, "backward_with_allreduce_s": busy}
    codec = measure_codec(cfg, comms, max(10, steps)) if comms else None
    if codec is not None:
        raw["codec_fraction"] = codec
    shapes = [list(p.shape) for p in model.parameters() if p.requires_grad][::-1]
    buckets = bucketize_shapes(shapes, cap)
    compute = main["compute_s"]
    prof = StepProfile(
        compute_s=compute,
        grad_bytes=float(sum(fp32_bytes(s) for s in shapes)),
        bucket_bytes=[float(sum(fp32_bytes(s) for s in g)) for g in buckets],
        bucket_shapes=buckets,
        backward_fraction=min(1.0, max(1e-3, main["bwd_s"] / compute)),
        samples_per_step=b,
        measured_here=True,
        source=f"scidl profile {cfg.workload_label()}",
        step_cv=main["step_cv"],
        batch_curve=curve,
        interference=slow,
        loader_s=main["loader_s"],
        input_bytes_per_step=main["in_bytes"],
        bucket_ready=main.get("bucket_ready"),
        codec_fraction=codec,
    )
    return prof, raw


# ----------------------------------------------------------------------- codec time

#: steps every strategy runs untimed before its codec is timed, at the least: DDP rebuilds
#: its buckets after the first step, and first calls allocate buffers and build lazy state
MIN_UNTIMED_STEPS = 3


def steady_step(cfg: Any) -> int:
    """The steps a run with these ``comm`` settings takes before its strategy runs as it
    does for the rest of the run (the steady state the cost model's ``wire`` prices):
    the strategy's own :meth:`~scidl.comm.base.CommStrategy.steady_after` (dense
    warm-up, DGC's density warm-up, ``topk_adam``'s freeze, ``auto``'s observation), at
    least :data:`MIN_UNTIMED_STEPS`.

    Example: ``warmup_steps=2, density_warmup_steps=5, density=0.01``: 2 dense steps,
    then 25 %, 6.25 %, 1.5625 % for 5 steps each, 1 % from step 2 + 15 = 17."""
    from scidl.comm.registry import build_strategy

    return max(MIN_UNTIMED_STEPS, build_strategy(cfg).steady_after())


def interleaved_step_times(steppers: Mapping[str, Callable[[Any], object]],
                           untimed: Mapping[str, int], steps: int, batches: Iterator[Any],
                           clock: Callable[[], float] = time.perf_counter,
                           ) -> dict[str, list[float]]:
    """Times of ``steps`` steps of each stepper (a whole training step on the batch it
    is given), the steppers taking turns on the same batch each round, so a change of
    the machine's load hits all of them.

    Each stepper first runs its own ``untimed[name]`` steps (its warm-up, which the run
    leaves behind): it joins ``max(untimed) − untimed[name]`` rounds in, and every
    stepper is timed over the same last ``steps`` rounds."""
    lead = max(untimed.values(), default=0)
    out: dict[str, list[float]] = {name: [] for name in steppers}
    for k in range(lead + steps):
        batch = next(batches)
        for name, step in steppers.items():
            if k < lead - untimed.get(name, 0):
                continue
            t0 = clock()
            step(batch)
            dt = clock() - t0
            if k >= lead:
                out[name].append(dt)
    return out


def codec_fractions(times: Mapping[str, list[float]], base: str = "dense") -> dict[str, float]:
    """Each stepper's own computation as a fraction of the ``base`` step: the median over
    rounds of (its step ÷ the base's step of the same round) − 1, at least 0."""
    ref = times[base]
    return {name: max(0.0, statistics.median(t / b for t, b in zip(ts, ref, strict=True)) - 1.0)
            for name, ts in times.items() if name != base}


def strategy_stepper(strategy: Any, ddp: nn.Module, opt: torch.optim.Optimizer,
                     loss_fn: Callable[[nn.Module, Any], torch.Tensor]
                     ) -> Callable[[Any], None]:
    """One training step as the trainer takes it: zero the gradients, forward and backward
    (the strategy's hook reduces the buckets), the update, and ``end_step`` (the
    strategy's step count advances: its warm-ups end as in a run)."""
    def step(batch: Any) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(ddp, batch).backward()
        opt.step()
        strategy.end_step()
    return step


def codec_worker(rank: int, world: int, cfg_dict: dict[str, Any], specs: list[str],
                 steps: int) -> dict[str, Any]:  # pragma: no cover - subprocess
    """In a one-process group: per comm spec (and ``dense``), the step times of the
    workload's model wrapped by that strategy, the specs taking turns each step, each
    timed past its warm-up (:func:`steady_step`). Returns ``times`` and, per spec, the
    strategy's step count at the end (``steps_run``) and its untimed steps."""
    import copy

    from scidl.comm.registry import build_strategy
    from scidl.config import RunConfig
    from scidl.runtime.seed import seed_everything
    from scidl.scaling.costmodel import parse_comm
    from scidl.workloads import get_workload
    from scidl.workloads.base import BuildContext

    cfg = RunConfig.model_validate(cfg_dict)
    seed_everything(cfg.train.seed)
    task = get_workload(cfg.workload).build(cfg.task_config(), BuildContext(seed=cfg.train.seed))
    make_opt = run_optimizer(cfg)
    from torch.utils.data import DataLoader

    batches = _cycle(DataLoader(task.train_data, batch_size=int(cfg.train.batch_size),
                                shuffle=True, collate_fn=task.collate_fn, drop_last=True))
    strategies, steppers, untimed = {}, {}, {}
    for spec in ["dense", *specs]:
        comm = parse_comm(spec)[0].config
        strategy = build_strategy(comm)
        ddp = strategy.wrap(copy.deepcopy(task.model))
        opt = make_opt(ddp) if make_opt else torch.optim.SGD(ddp.parameters(), lr=1e-6)
        strategies[spec] = strategy
        steppers[spec] = strategy_stepper(strategy, ddp, opt, task.loss)
        untimed[spec] = max(MIN_UNTIMED_STEPS, strategy.steady_after())
    times = interleaved_step_times(steppers, untimed, steps, batches)
    return {"times": times, "untimed": untimed,
            "steps_run": {spec: s.step for spec, s in strategies.items()}}


def measure_codec(cfg: Any, specs: list[str], steps: int = 10, timeout: float = 300.0
                  ) -> dict[str, float]:
    """The compute each comm strategy adds to a step (compression, decompression, error
    feedback: top-k selection, PowerSGD's products and orthogonalisation), as a fraction
    of the plain step's compute, measured on one process: the step with the strategy
    installed in a one-process group (its collectives cost next to nothing there)
    against the same step with ``dense`` (:func:`codec_fractions` over ``steps``
    interleaved steps). Every strategy is stepped as the trainer steps it (``end_step``
    after each step) and timed only past its warm-up (:func:`steady_step`): the codec of
    the steady state, which the run's timed steps see. A ratio of two times taken
    together holds when the machine's load scales both. Keys: the canonical spec of each
    strategy (:func:`scidl.scaling.costmodel.spec_of`)."""
    from scidl.runtime.launch import run_distributed
    from scidl.scaling.costmodel import parse_comm, spec_of

    res = run_distributed(codec_worker, 1, cfg.model_dump(mode="json"), list(specs), steps,
                          timeout=timeout)[0]
    fractions = codec_fractions(res["times"])
    return {spec_of(parse_comm(s)[0].config): fractions.get(s, 0.0) for s in specs}
