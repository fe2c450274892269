"""The communication-strategy contract and the DDP hook adapter.

Every strategy issues its collectives only from the thread that calls the DDP
communication hook, in bucket order; completion callbacks do local work only. DDP calls
the hooks in bucket-index order on every rank, so every rank issues the same collectives
in the same order on every backend — the property ``torch``'s own PowerSGD hook lacks on
gloo when it chains collectives inside callbacks.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import nn
from torch.futures import Future
from torch.nn.parallel import DistributedDataParallel as DDP

from scidl.comm.accounting import (
    CommCounters,
    allgather_bytes,
    reduce_scatter_bytes,
    ring_allreduce_bytes,
)
from scidl.comm.buckets import Bucket, layout_of
from scidl.comm.config import CommConfig
from scidl.comm.sparse_grads import SparseAsDense, ddp_sees_dense
from scidl.comm.wire import Collective, Shape, bytes_sent
from scidl.runtime.ddp import DDPModule


def completed(value: torch.Tensor) -> Future[torch.Tensor]:
    """A future that already holds ``value``."""
    fut: Future[torch.Tensor] = Future()
    fut.set_result(value)
    return fut


class CommStrategy(abc.ABC):
    """How one rank's gradients are combined with the others'.

    Lifecycle: the trainer builds the strategy from the ``comm`` config, wraps the model
    with ``wrap(module, **ddp_kwargs)`` (DDP with ``ddp_kwargs()``, sparse gradients
    prepared, ``install(ddp_model, group)`` done; call on all ranks), calls
    ``on_skipped_step()`` when a step is skipped (non-finite gradients) and
    ``end_step()`` after each step (all ranks). Subclasses implement
    ``reduce(bucket) -> Future[Tensor]``: the averaged gradient of one flat bucket,
    (1/p)·Σ_r g_r or its compressed estimate.

    Non-finite input: a strategy must issue the same collectives on every rank whatever
    the values (a branch that depends on local values is agreed by all ranks first),
    must return a non-finite bucket when any rank's input was non-finite (so the
    trainer skips the step on every rank), and must keep no state from that step:
    ``on_skipped_step()`` resets it.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: True: sparse gradients (``nn.Embedding(sparse=True)``) are reduced as sparse
    #: tensors by the backend (gloo; NCCL has no sparse allreduce); False: they are
    #: handed to DDP (and the strategy) dense.
    native_sparse: ClassVar[bool] = False
    #: True: when any rank's input is NaN/Inf, every rank's reduced gradient is non-finite
    #: (the contract above), so the trainer checks its own reduced gradients and needs no
    #: extra collective to agree on skipping a step. False (the safe default for
    #: strategies registered by users, and ``lag``, which applies last step's result):
    #: the ranks agree on the skip with one small allreduce per step.
    nonfinite_agreed: bool = False  # a class default; a composite (auto) sets it per instance
    #: the optimizer state the strategy applies itself (``momentum``: ``dgc``; ``adam``:
    #: ``topk_adam``): the run's optimizer must then be plain SGD without momentum and
    #: ``train.clip_grad_norm`` unset (checked when the run config is loaded).
    owns_optimizer_state: ClassVar[str | None] = None

    def __init__(self, cfg: CommConfig) -> None:
        self.cfg = cfg
        self.counters = CommCounters()
        self.group: dist.ProcessGroup | None = None
        self.world = 1
        self.rank = 0
        self.backend: str | None = None  # the process group's backend: what bytes it sends
        self.step = 0
        self.param_ids: list[int] = []
        self.sparse: SparseAsDense | None = None
        self._inflight: list[Future[torch.Tensor]] = []
        self._set_up = False

    # ------------------------------------------------------------------ contract
    def ddp_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``DistributedDataParallel``."""
        return {"bucket_cap_mb": self.cfg.bucket_cap_mb}

    def wrap(self, module: nn.Module, group: dist.ProcessGroup | None = None,
             **ddp_kwargs: Any) -> DDP:
        """``DistributedDataParallel(module)`` with this strategy installed (all ranks).

        Strategies without ``native_sparse`` get the gradients of sparse embeddings dense
        (sparse-as-dense); ``ddp_kwargs`` add to/override :meth:`ddp_kwargs`. Calling it
        again (e.g. to change ``find_unused_parameters``) re-wraps the same module.
        """
        kw = {**self.ddp_kwargs(), **ddp_kwargs}
        # NCCL has no sparse allreduce: there every strategy gets sparse gradients dense.
        native = self.native_sparse and dist.get_backend(group) != "nccl"
        if self.sparse is None and not native:
            self.sparse = SparseAsDense(module)
        with ddp_sees_dense(self.sparse):
            ddp = DDPModule(module, process_group=group, **kw)
        if not self._set_up:
            self.install(ddp, group)
        else:  # a re-wrap: same group, same sub-groups; only the hook is new
            self.attach(ddp)
        return ddp

    def install(self, ddp_model: DDP, group: dist.ProcessGroup | None = None) -> None:
        """Register this strategy as the model's communication hook (call on all ranks)."""
        self.setup(ddp_model, group)
        self.attach(ddp_model)

    def attach(self, ddp_model: DDP) -> None:
        """Register the communication hook on ``ddp_model`` (after :meth:`setup`)."""

        def hook(state, bucket):  # DDP rejects string annotations: leave these bare
            return self._ddp_hook(state, bucket)

        ddp_model.register_comm_hook(None, hook)

    def use_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """The run's optimizer, once built (the trainer calls it; a strategy that models
        the optimizer's update, such as ``auto``, keeps what it needs). Default: nothing."""
        return None

    def setup(self, ddp_model: DDP | None, group: dist.ProcessGroup | None) -> None:
        """Learn the process group (subclasses create sub-groups here; all ranks)."""
        self._set_up = True
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.backend = str(dist.get_backend(group))
        if ddp_model is not None:  # stable names of parameters, for checkpoints
            self.param_ids = [id(p) for p in ddp_model.module.parameters()]

    @abc.abstractmethod
    def reduce(self, bucket: Bucket) -> Future[torch.Tensor]:
        """Return a future of the averaged flat gradient of ``bucket`` (all ranks)."""

    def caller_counts_syncs(self) -> None:
        """From now on the caller calls :meth:`count_sync` before every backward pass that
        reduces gradients (the trainer's plans do); a strategy that counted them with a
        module hook drops it. Others ignore it."""
        return None

    def count_sync(self) -> None:
        """A gradient reduction was prepared outside DDP's forward (a pipeline stage does
        it before its last backward). Strategies that count in their hook ignore it."""
        return None

    def steady_after(self) -> int:
        """Steps after which this strategy runs as it will for the rest of the run (its
        warm-ups over): what a measurement of its steady-state cost leaves untimed."""
        return 0

    def end_step(self) -> dict[str, float]:
        """Close the step's accounting and return its counters (bytes, seconds)."""
        self._inflight.clear()
        self.step += 1
        return self.counters.end_step()

    def drain(self) -> None:
        """Wait for every reduction this step started (and its callbacks)."""
        for fut in self._inflight:
            fut.wait()
        self._inflight.clear()

    def on_skipped_step(self) -> None:
        """The trainer skipped this step (non-finite gradients on some rank; all ranks):
        forget the state the step left (residuals, warm starts, lagged results).
        Stateless strategies have nothing to forget."""
        self.drain()
        self.reset_state()

    def reset_state(self) -> None:  # noqa: B027 - stateless strategies keep nothing
        """Drop the per-step state carried from step to step (all ranks at once)."""
        return None

    def report(self) -> dict[str, Any]:
        """Totals for ``comm.json``."""
        return {"strategy": self.name, "world": self.world, **self.counters.summary()}

    def state_dict(self) -> dict[str, Any]:
        """Per-rank state for checkpoints (tensors keyed by parameter position)."""
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output (after ``install``)."""
        self.step = int(state.get("step", 0))

    def _by_position(self, by_id: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        pos = {pid: i for i, pid in enumerate(self.param_ids)}
        return {pos[k]: v.clone() for k, v in by_id.items() if k in pos}

    def _by_id(self, by_pos: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        return {self.param_ids[i]: v for i, v in by_pos.items() if i < len(self.param_ids)}

    # ------------------------------------------------------------------ DDP adapter
    def _ddp_hook(self, state: Any, bucket: dist.GradBucket) -> Future[torch.Tensor]:
        raw = bucket.buffer()
        params = list(bucket.parameters())
        if raw.is_sparse:
            fut = self.reduce_sparse(raw)
        else:
            view = Bucket(raw, bucket.index(), bucket.is_last(), params,
                          layout_of(params, raw.numel()))
            fut = self.reduce(view)
        self._inflight.append(fut)
        self.counters.mark_hook_returned()
        return fut

    def reduce_sparse(self, grad: torch.Tensor) -> Future[torch.Tensor]:
        """Average a sparse gradient with the backend's sparse allreduce (all-gather of
        indices and values, as DDP without a hook). DDP gives every sparse parameter a
        bucket of its own; strategies without ``native_sparse`` never see one when the
        model was wrapped with :meth:`wrap`."""
        grad = grad.coalesce().div_(self.world)
        nnz_bytes = grad._values().numel() * grad.element_size() + grad._indices().numel() * 8
        nbytes = allgather_bytes(nnz_bytes, self.world, self.backend)
        self.counters.record("allreduce_sparse", nbytes, nbytes)
        work = dist.all_reduce(grad, group=self.group, async_op=True)
        start = time.perf_counter()

        def done(f: Future[Any]) -> torch.Tensor:
            out = f.value()
            self.counters.add_seconds("allreduce_sparse", time.perf_counter() - start)
            return out[0] if isinstance(out, list) else out

        return work.get_future().then(done)

    # ------------------------------------------------------------------ collectives
    def _timed(self, work: Any, op: str, value: Any) -> Future[Any]:
        start = time.perf_counter()

        def done(f: Future[Any]) -> Any:
            f.value()  # re-raise a failed collective
            self.counters.add_seconds(op, time.perf_counter() - start)
            return value

        try:
            fut = work.get_future()
        except RuntimeError:  # some gloo collectives have no future: complete it here
            work.wait()
            fut = completed(value)
        return fut.then(done)

    def wait(self, fut: Future[Any]) -> Any:
        """Block the hook thread on ``fut``; the time counts as exposed communication."""
        start = time.perf_counter()
        out = fut.wait()
        self.counters.add_blocked(time.perf_counter() - start)
        return out

    def allreduce(
        self, t: torch.Tensor, group: dist.ProcessGroup | None = None, op: str = "allreduce",
        world: int | None = None,
    ) -> Future[torch.Tensor]:
        """Sum ``t`` in place over ``group`` (default: the strategy's group); async."""
        g = self.group if group is None else group
        p = self.world if world is None else world
        nbytes = ring_allreduce_bytes(t.numel() * t.element_size(), p, self.backend)
        self.counters.record(op, nbytes, nbytes)
        return self._timed(dist.all_reduce(t, group=g, async_op=True), op, t)

    def allgather(
        self, out: torch.Tensor, inp: torch.Tensor, group: dist.ProcessGroup | None = None,
        op: str = "allgather", world: int | None = None,
    ) -> Future[torch.Tensor]:
        """Concatenate every rank's ``inp`` into ``out`` (rank order); async."""
        g = self.group if group is None else group
        p = self.world if world is None else world
        nbytes = allgather_bytes(inp.numel() * inp.element_size(), p, self.backend)
        self.counters.record(op, nbytes, nbytes)
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        return self._timed(gather(out, inp, group=g, async_op=True), op, out)

    def reduce_scatter(
        self, out: torch.Tensor, inp: torch.Tensor, group: dist.ProcessGroup | None = None,
        op: str = "reduce_scatter", world: int | None = None,
    ) -> Future[torch.Tensor]:
        """Sum ``inp`` over ranks and keep this rank's 1/p chunk in ``out``; async."""
        g = self.group if group is None else group
        p = self.world if world is None else world
        nbytes = reduce_scatter_bytes(inp.numel() * inp.element_size(), p, self.backend)
        self.counters.record(op, nbytes, nbytes)
        scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        return self._timed(scatter(out, inp, group=g, async_op=True), op, out)

    # ------------------------------------------------------------------ wire description
    #: comm.* settings that shape this strategy's traffic, for the cost model's
    #: ``--comm`` specs: the first is the ``VALUE`` of ``name:VALUE`` (``topk:0.01``),
    #: any setting can be given as ``name:key=value``.
    wire_settings: ClassVar[tuple[str, ...]] = ()
    #: True: the reduced gradient is applied one step later (overlaps a whole step).
    lagged: ClassVar[bool] = False

    @classmethod
    def wire(cls, cfg: CommConfig, numel: int, world: int,
             shapes: Sequence[Shape] | None = None) -> list[Collective]:
        """The collectives of one bucket of ``numel`` fp32 gradient entries on ``world``
        ranks, in steady state (after any warm-up), from ``cfg`` alone; ``shapes`` are the
        bucket's parameter shapes when known. Default: one fp32 allreduce."""
        return [Collective("allreduce", 4 * numel)]

    @classmethod
    def wire_bytes(cls, cfg: CommConfig, numel: int, world: int,
                   shapes: Sequence[Shape] | None = None, backend: str | None = None) -> float:
        """Bytes one rank sends for that bucket (what :attr:`counters` will record)."""
        return bytes_sent(cls.wire(cfg, numel, world, shapes), world, backend)

    @classmethod
    def sync_points(cls, cfg: CommConfig, numel: int, world: int, per_node: int = 1,
                    shapes: Sequence[Shape] | None = None) -> int:
        """Collectives one bucket waits on in turn, each a point where the ranks taking
        part must all be running, on ``world`` ranks placed ``per_node`` to a node
        (default: those of :meth:`wire`)."""
        return len(cls.wire(cfg, numel, world, shapes)) if world > 1 else 0

    @classmethod
    def compression_model(cls, cfg: CommConfig) -> Callable[[], Any] | None:
        """A factory of models of what this strategy sends for one bucket's gradients,
        with its own error feedback (an object with ``compress(grads) -> list[Tensor]``,
        one tensor per parameter: :class:`scidl.comm.fidelity.EFCompressor` for the
        built-in compressors), from which ``auto`` measures the share of the optimizer's
        update the strategy keeps. None (the default): it sends the gradient whole, or
        its loss is not modelled and ``auto`` prices it by time alone."""
        return None

    @classmethod
    def allreduce_algorithm(cls, cfg: CommConfig) -> str | None:
        """The allreduce algorithm the strategy runs itself (None: the backend's)."""
        return None

    @classmethod
    def fusion_bytes(cls, cfg: CommConfig) -> float | None:
        """Size of the groups the strategy fuses gradients into itself (None: it reduces
        DDP's buckets of ``comm.bucket_cap_mb``)."""
        return None

    @classmethod
    def spec_settings(cls, cfg: CommConfig) -> tuple[str, ...]:
        """The settings a cost-model spec of this strategy carries (see ``wire_settings``)."""
        return cls.wire_settings
