"""``torch_fp16`` / ``torch_powersgd``: torch's own DDP communication hooks as strategies.

These run ``torch.distributed.algorithms.ddp_comm_hooks`` unchanged —
``default_hooks.fp16_compress_hook`` and ``powerSGD_hook.powerSGD_hook`` (Vogels, Karimireddy
& Jaggi, NeurIPS 2019) — so that a run of ``scidl train`` can compare SciDL's strategies
with the reference implementations under the same trainer, data and byte accounting.
The hook is registered exactly as a user would (``ddp.register_comm_hook(state, hook)``);
SciDL only wraps it to count the bytes it sends and to time its future.

Bytes per bucket of n fp32 entries (p ranks, ring formula of :mod:`scidl.comm.accounting`):

* ``torch_fp16``: one allreduce of the bucket in float16, 2·n bytes of payload;
* ``torch_powersgd``: one fp32 allreduce of the bucket for the first
  ``start_powerSGD_iter`` steps, then three allreduces — the tensors torch does not
  compress (its ``_should_compress`` rule: (rows+cols)·r·``min_compression_rate`` <
  rows·cols, with every gradient viewed as shape[0] × rest), every P (rows×r), every Q
  (cols×r) — counted with torch's own rule on the bucket's gradients.

Settings: ``torch_powersgd`` takes ``comm.rank`` (``matrix_approximation_rank``),
``comm.error_feedback`` (``use_error_feedback``), ``comm.seed`` (``random_seed``) and
``start_powerSGD_iter = max(2, comm.warmup_steps)`` (torch requires ≥ 2 with error
feedback or warm start); ``min_compression_rate`` stays at torch's default 2 and
``warm_start`` on.

One bucket for ``torch_powersgd``: torch's hook issues the P and Q allreduces from
completion callbacks; with several buckets the ranks can issue them in different
orders and gloo then mismatches collectives, so the strategy asks DDP for one bucket
(``bucket_cap_mb`` is ignored). There is no overlap of communication with the backward
pass then, the price of the reference implementation on gloo. For the same reason the
hook runs to its end before DDP goes on: DDP's own next collective (the used-parameter
map it allreduces with ``find_unused_parameters``) would otherwise race the callbacks'
allreduces for its place in gloo's order, and the ranks could hang on mismatched pairs.

Non-finite gradients: a NaN/Inf survives both hooks' sums (fp16 cast and sum; P = M·Q
and the uncompressed allreduce), so every rank's bucket is non-finite and the trainer
skips the step everywhere; ``on_skipped_step`` clears torch's error feedback and warm
start memories. These strategies are not candidates of ``auto`` nor inner strategies of
``lag`` (those call :meth:`CommStrategy.reduce` per bucket, outside DDP's hook).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.futures import Future
from torch.nn.parallel import DistributedDataParallel as DDP

from scidl.comm.base import CommStrategy
from scidl.comm.buckets import Bucket
from scidl.comm.powersgd import square_shapes
from scidl.comm.wire import Collective, Shape, numel_of

#: torch's default ``min_compression_rate`` of ``PowerSGDState``
MIN_COMPRESSION_RATE = 2.0
#: one bucket for ``torch_powersgd`` (MiB): larger than any model SciDL trains
ONE_BUCKET_MB = 1 << 20


def powersgd_split(shapes: Sequence[Shape], rank: int,
                   min_rate: float = MIN_COMPRESSION_RATE) -> tuple[int, int, int]:
    """(uncompressed entries, P entries, Q entries) of torch's PowerSGD hook for gradients
    of ``shapes``: each viewed as shape[0] × rest, compressed at rank min(rows, cols, r)
    when (rows + cols)·r·``min_rate`` < rows·cols (torch's ``_should_compress``)."""
    plain = ps = qs = 0
    for shape in shapes:
        n = numel_of(shape)
        rows = int(shape[0]) if len(shape) else 1
        cols = n // rows if rows else 0
        r = min(rows, cols, rank)
        if (rows + cols) * r * min_rate < rows * cols:
            ps += rows * r
            qs += cols * r
        else:
            plain += n
    return plain, ps, qs


#: one bucket's parameters in bucket order: (parameter position in the model, shape)
Layout = list[tuple[int, tuple[int, ...]]]


def powersgd_segments(layout: Layout, rank: int, min_rate: float = MIN_COMPRESSION_RATE,
                      ) -> tuple[dict[int, tuple[int, int]], dict[int, tuple[int, int]],
                                 dict[int, tuple[int, int]]]:
    """Where each parameter of a bucket sits in torch's PowerSGD state of that bucket:
    ``(start, length)`` per parameter position in the error (the flat bucket), in the P
    memory and in the Q memory (compressed tensors only, grouped by matrix shape in order
    of first appearance, as torch lays them out)."""
    err: dict[int, tuple[int, int]] = {}
    groups: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    start = 0
    for pos, shape in layout:
        n = numel_of(shape)
        err[pos] = (start, n)
        start += n
        rows = int(shape[0]) if len(shape) else 1
        cols = n // rows if rows else 0
        r = min(rows, cols, rank)
        if (rows + cols) * r * min_rate < rows * cols:
            groups.setdefault((rows, cols), []).append((pos, rows * r, cols * r))
    p_seg: dict[int, tuple[int, int]] = {}
    q_seg: dict[int, tuple[int, int]] = {}
    p_at = q_at = 0
    for members in groups.values():
        for pos, np_, nq in members:
            p_seg[pos], q_seg[pos] = (p_at, np_), (q_at, nq)
            p_at += np_
            q_at += nq
    return err, p_seg, q_seg


def move_segments(flat: torch.Tensor, old: dict[int, tuple[int, int]],
                  new: dict[int, tuple[int, int]]) -> torch.Tensor:
    """``flat`` laid out by ``old`` (key → (start, length)), rewritten in ``new``'s order."""
    out = flat.new_empty(sum(n for _, n in new.values()))
    for key, (start, n) in new.items():
        o_start, o_n = old[key]
        out[start : start + n] = flat[o_start : o_start + o_n]
    return out


def _rng_to_tensors(state: tuple[Any, ...]) -> dict[str, Any]:
    """numpy's ``RandomState`` state in types ``torch.load(weights_only=True)`` reads."""
    return {"kind": str(state[0]), "keys": torch.from_numpy(state[1].copy()),
            "pos": int(state[2]), "has_gauss": int(state[3]), "cached": float(state[4])}


def _rng_from_tensors(s: dict[str, Any]) -> tuple[Any, ...]:
    return (s["kind"], s["keys"].numpy(), s["pos"], s["has_gauss"], s["cached"])


class TorchHook(CommStrategy):
    """Base of the strategies that install one of torch's DDP communication hooks."""

    nonfinite_agreed = True
    #: torch's hook issues collectives from its futures' callbacks (gloo runs those on its
    #: own threads): the hook then finishes before DDP goes on (see :meth:`attach`)
    callback_collectives = False

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.hook_state: Any = None

    def make_state(self, group: dist.ProcessGroup | None) -> Any:
        """The first argument torch's hook gets (default: the process group)."""
        return group

    def setup(self, ddp_model: DDP | None, group: dist.ProcessGroup | None) -> None:
        super().setup(ddp_model, group)
        self.hook_state = self.make_state(group)

    def call_hook(self, state: Any, bucket: dist.GradBucket) -> Future[Any]:
        """Call torch's hook (subclasses name it)."""
        raise TypeError(f"{type(self).__name__} names no torch hook")

    def attach(self, ddp_model: DDP) -> None:
        def counted(state, bucket):  # DDP rejects string annotations: leave these bare
            self.before_hook(bucket)
            self.count(bucket)
            start = time.perf_counter()

            def done(f: Future[Any]) -> Any:
                out = f.value()
                self.counters.add_seconds(self.name, time.perf_counter() - start)
                return out[0] if isinstance(out, list) else out

            fut = self.call_hook(state, bucket).then(done)
            if self.callback_collectives:
                # A collective issued from a callback thread races with the next one DDP
                # issues on the main thread (with find_unused_parameters, its used-map
                # allreduce right after this hook): ranks could issue the two in
                # different orders and gloo would pair mismatched collectives (a hang).
                # Waiting here keeps one order on every rank; with the one bucket these
                # hooks use there is no overlap to lose (NCCL runs the chain inline).
                fut.wait()
            self._inflight.append(fut)
            self.counters.mark_hook_returned()
            return fut

        ddp_model.register_comm_hook(self.hook_state, counted)

    def before_hook(self, bucket: dist.GradBucket) -> None:  # noqa: B027 - optional
        """Called on the hook thread before torch's hook runs (default: nothing)."""

    def count(self, bucket: dist.GradBucket) -> None:
        """Record the collectives torch's hook is about to issue for ``bucket``."""
        shapes = [tuple(g.shape) for g in bucket.gradients()]
        for c in self.bucket_wire(bucket.buffer().numel(), shapes):
            nbytes = int(c.bytes_sent(self.world, self.backend))
            self.counters.record(self.name, nbytes, nbytes)

    def bucket_wire(self, numel: int, shapes: Sequence[Shape]) -> list[Collective]:
        """The collectives of this step for one bucket (default: the steady state)."""
        return type(self).wire(self.cfg, numel, self.world, shapes)

    def reduce(self, bucket: Bucket) -> Future[torch.Tensor]:
        raise TypeError(f"comm.strategy={self.name} runs torch's hook inside DDP only "
                        "(wrap the model with strategy.wrap); it has no per-bucket reduce")


class TorchFP16Hook(TorchHook):
    """torch's ``fp16_compress_hook``: divide by p, cast to float16, allreduce, cast back."""

    name = "torch_fp16"
    description = "torch's fp16_compress_hook (reference peer of fp16)"

    def call_hook(self, state: Any, bucket: dist.GradBucket) -> Future[Any]:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        return default_hooks.fp16_compress_hook(state, bucket)

    @classmethod
    def wire(cls, cfg: Any, numel: int, world: int,
             shapes: Sequence[Shape] | None = None) -> list[Collective]:
        """One allreduce of the bucket in float16 (2 bytes per entry)."""
        return [Collective("allreduce", 2 * numel, dtype="float16")]


class TorchPowerSGDHook(TorchHook):
    """torch's ``powerSGD_hook`` with ``PowerSGDState`` from ``comm.*``, one DDP bucket."""

    name = "torch_powersgd"
    description = "torch's powerSGD_hook, one bucket (reference peer of powersgd)"
    wire_settings = ("rank",)
    callback_collectives = True  # its P and Q allreduces

    def call_hook(self, state: Any, bucket: dist.GradBucket) -> Future[Any]:
        from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook

        return powerSGD_hook.powerSGD_hook(state, bucket)

    def ddp_kwargs(self) -> dict[str, Any]:
        return {"bucket_cap_mb": ONE_BUCKET_MB}

    def make_state(self, group: dist.ProcessGroup | None) -> Any:
        from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook

        return powerSGD_hook.PowerSGDState(
            process_group=group, matrix_approximation_rank=self.cfg.rank,
            start_powerSGD_iter=self.start_iter(self.cfg),
            min_compression_rate=MIN_COMPRESSION_RATE,
            use_error_feedback=self.cfg.error_feedback, warm_start=True,
            random_seed=self.cfg.seed)

    def steady_after(self) -> int:
        return self.start_iter(self.cfg)

    @staticmethod
    def start_iter(cfg: Any) -> int:
        """torch's ``start_powerSGD_iter``: ``comm.warmup_steps``, at least 2."""
        return max(2, int(cfg.warmup_steps))

    @classmethod
    def fusion_bytes(cls, cfg: Any) -> float | None:
        return float(ONE_BUCKET_MB) * 2**20

    @classmethod
    def wire(cls, cfg: Any, numel: int, world: int,
             shapes: Sequence[Shape] | None = None) -> list[Collective]:
        """Three fp32 allreduces: the uncompressed tensors, every P, every Q. Without shapes
        the bucket is taken as one square matrix (an estimate, as ``powersgd``)."""
        if shapes is None:
            shapes = square_shapes(numel)
        plain, ps, qs = powersgd_split(shapes, cfg.rank)
        return [Collective("allreduce", 4 * plain), Collective("allreduce", 4 * ps),
                Collective("allreduce", 4 * qs)]

    def bucket_wire(self, numel: int, shapes: Sequence[Shape]) -> list[Collective]:
        st = self.hook_state
        if st is not None and st.iter < st.start_powerSGD_iter:  # torch's vanilla allreduce
            return [Collective("allreduce", 4 * numel)]
        return super().bucket_wire(numel, shapes)

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.layouts: dict[int, Layout] = {}  # bucket index → its parameters, last seen

    def before_hook(self, bucket: dist.GradBucket) -> None:
        """torch keys its state by bucket index, laid out in the bucket's parameter order;
        DDP reorders its buckets after the first step (and a resumed run starts from the
        initial order again): move the state to the bucket's current order first."""
        pos = {pid: i for i, pid in enumerate(self.param_ids)}
        layout = [(pos.get(id(p), -1), tuple(p.shape)) for p in bucket.parameters()]
        b = bucket.index()
        old = self.layouts.get(b)
        if old is not None and old != layout:
            self.relayout(b, old, layout)
        self.layouts[b] = layout

    def relayout(self, b: int, old: Layout, new: Layout) -> None:
        """Rewrite bucket ``b``'s error and P/Q memories from ``old`` to ``new`` order
        (dropped when the bucket now holds other parameters)."""
        st = self.hook_state
        if st is None:
            return
        if sorted(old) != sorted(new):
            for d in (st.error_dict, st.p_memory_dict, st.q_memory_dict):
                d.pop(b, None)
            return
        o, n = powersgd_segments(old, self.cfg.rank), powersgd_segments(new, self.cfg.rank)
        for d, o_seg, n_seg in zip((st.error_dict, st.p_memory_dict, st.q_memory_dict), o, n,
                                   strict=True):
            if b in d:
                d[b] = move_segments(d[b], o_seg, n_seg)

    def reset_state(self) -> None:
        """Forget torch's error feedback and warm-start P/Q memories (all ranks: the
        re-drawn Q comes from the same generator state everywhere)."""
        st = self.hook_state
        if st is not None:
            st.error_dict.clear()
            st.p_memory_dict.clear()
            st.q_memory_dict.clear()

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        st = self.hook_state
        if st is not None:
            out["torch_powersgd"] = {
                "iter": st.iter,
                "error": {k: v.clone() for k, v in st.error_dict.items()},
                "p": {k: v.clone() for k, v in st.p_memory_dict.items()},
                "q": {k: v.clone() for k, v in st.q_memory_dict.items()},
                "rng": _rng_to_tensors(st.rng.get_state()),
                "layouts": {k: list(v) for k, v in self.layouts.items()},
            }
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        saved, st = state.get("torch_powersgd"), self.hook_state
        if saved is None or st is None:
            return
        st.iter = int(saved["iter"])
        st.error_dict = dict(saved["error"])
        st.p_memory_dict = dict(saved["p"])
        st.q_memory_dict = dict(saved["q"])
        st.rng.set_state(_rng_from_tensors(saved["rng"]))
        self.layouts = {int(k): [(int(i), tuple(sh)) for i, sh in v]
                        for k, v in saved.get("layouts", {}).items()}

    def report(self) -> dict[str, Any]:
        out = super().report()
        if self.hook_state is not None:
            rate, before, after = self.hook_state.compression_stats()
            out["torch_compression_stats"] = {"rate": rate, "numel_before": before,
                                              "numel_after": after}
        return out
