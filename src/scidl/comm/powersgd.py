"""``powersgd``: rank-r PowerSGD with error feedback (Vogels et al., NeurIPS 2019).

For each matrix-shaped gradient M (a parameter reshaped to rows × cols) on every rank:

    M ← g + e                 (error feedback)
    P = allreduce(M·Q) / p    (rows × r; Q is warm-started from the previous step)
    P ← orthonormalise(P)
    Q = allreduce(Mᵀ·P) / p   (cols × r)
    ĝ = P·Qᵀ,   e ← M − ĝ

Vectors (biases) and matrices where r·(rows+cols) ≥ rows·cols are averaged exactly and
ride along in the P allreduce. Unlike ``torch``'s hook, the two allreduces of a bucket
are issued from the hook thread (the first is waited for there), never from a callback,
so every rank issues them in the same order whatever the number of buckets. State (Q,
e) is kept per parameter, so DDP's bucket rebuild does not disturb it.

A NaN/Inf on any rank shows in the reduced P (or Q), which is identical on every rank:
all ranks then return a NaN bucket without touching Q or e, the trainer skips the
step, and ``on_skipped_step`` resets e and Q.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.futures import Future

from scidl.comm.base import CommStrategy, completed
from scidl.comm.buckets import Bucket
from scidl.comm.wire import Collective, Shape, numel_of


def matrix_shape(p: torch.Tensor | Sequence[int], rank: int) -> tuple[int, int] | None:
    """(rows, cols) when compressing ``p`` (a tensor or its shape) at ``rank`` saves bytes,
    else None."""
    shape = tuple(p.shape) if isinstance(p, torch.Tensor) else tuple(p)
    if len(shape) < 2 or shape[0] == 0:
        return None
    rows = shape[0]
    cols = numel_of(shape) // rows
    if rank * (rows + cols) >= rows * cols:
        return None
    return rows, cols


def square_shapes(numel: int) -> list[tuple[int, ...]]:
    """A bucket of ``numel`` entries taken as one square matrix plus a vector of the
    remainder: the shapes used to price a bucket whose parameters are not known."""
    side = max(1, math.isqrt(numel))
    rest = numel - side * (numel // side)
    return [(side, numel // side)] + ([(rest,)] if rest else [])


def orthonormalise(p: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of the columns of ``p`` (reduced QR; same result on all ranks)."""
    return torch.linalg.qr(p, mode="reduced").Q


class PowerSGD(CommStrategy):
    """Rank-r low-rank gradient compression with error feedback and warm start."""

    name = "powersgd"
    description = "PowerSGD rank-r compression with error feedback (ordered collectives)"
    nonfinite_agreed = True
    wire_settings = ("rank",)

    @classmethod
    def wire(cls, cfg: Any, numel: int, world: int,
             shapes: Sequence[Shape] | None = None) -> list[Collective]:
        """Two fp32 allreduces: the vectors plus every P (rows×r), then every Q (cols×r).

        Without shapes the bucket is taken as one square matrix (an estimate)."""
        if shapes is None:
            shapes = square_shapes(numel)
        first = second = 0
        for shape in shapes:
            m = matrix_shape(shape, cfg.rank)
            if m is None:
                first += numel_of(shape)
            else:
                first += m[0] * cfg.rank
                second += m[1] * cfg.rank
        return [Collective("allreduce", 4 * first), Collective("allreduce", 4 * second)]

    @classmethod
    def compression_model(cls, cfg: Any) -> Callable[[], Any] | None:
        """Rank-``rank`` PowerSGD with error feedback, per matrix (vectors whole)."""
        from scidl.comm.fidelity import EFCompressor

        rank = int(cfg.rank)
        return lambda: EFCompressor("powersgd", rank=rank)

    def steady_after(self) -> int:
        return int(self.cfg.warmup_steps)  # dense steps before the first compressed one

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.q: dict[int, torch.Tensor] = {}
        self.err: dict[int, torch.Tensor] = {}
        self.dense_values = 0
        self.compressed_values = 0

    def _q_for(self, p: torch.Tensor, cols: int, key: int, device: torch.device) -> torch.Tensor:
        q = self.q.get(id(p))
        if q is None:  # same seed on every rank: identical initial Q
            gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + key)
            q = torch.randn(cols, self.cfg.rank, generator=gen).to(device)
            self.q[id(p)] = q
        return q

    def reduce(self, bucket: Bucket) -> Future[torch.Tensor]:
        buf = bucket.buffer
        if self.step < self.cfg.warmup_steps or not bucket.layout:
            buf.div_(self.world)
            return self.allreduce(buf)
        plain, mats = [], []
        for j, (p, start, n) in enumerate(bucket.offsets()):
            shape = matrix_shape(p, self.cfg.rank)
            view = buf[start : start + n]
            if shape is None:
                plain.append(view)
                continue
            m = view.view(shape)
            if self.cfg.error_feedback:
                e = self.err.get(id(p))
                if e is not None:
                    m.add_(e)
            mats.append((p, m, self._q_for(p, shape[1], bucket.index * 4096 + j, buf.device)))
        # Allreduce 1: exact values of the small tensors + every P = M·Q.
        ps = [m @ q for _, m, q in mats]
        first = torch.cat([v.reshape(-1) for v in plain] + [x.reshape(-1) for x in ps])
        self.wait(self.allreduce(first, op="allreduce_p"))
        first.div_(self.world)
        if not bool(torch.isfinite(first).all()):
            # Some rank's gradient is NaN/Inf. ``first`` is the same on every rank, so
            # all ranks stop here together; nothing reaches Q or e (the step is skipped).
            return completed(buf.fill_(float("nan")))
        start = 0
        for v in plain:
            v.copy_(first[start : start + v.numel()])
            start += v.numel()
        pbases = []
        for x in ps:
            pbases.append(orthonormalise(first[start : start + x.numel()].view_as(x)))
            start += x.numel()
        # Allreduce 2: every Q = Mᵀ·P; decompression happens in the callback (no collectives).
        qs = [m.t() @ pb for (_, m, _), pb in zip(mats, pbases, strict=True)]
        second = torch.cat([x.reshape(-1) for x in qs]) if qs else buf.new_zeros(0)
        self.dense_values += sum(v.numel() for v in plain) + sum(m.numel() for _, m, _ in mats)
        self.compressed_values += first.numel() + second.numel()

        def decompress(f: Future[torch.Tensor]) -> torch.Tensor:
            flat = f.value().div_(self.world)
            if not bool(torch.isfinite(flat).all()):  # overflow in Mᵀ·P: same on all ranks
                return buf.fill_(float("nan"))
            s = 0
            for (p, m, q), pb in zip(mats, pbases, strict=True):
                qn = flat[s : s + q.numel()].view_as(q)
                s += q.numel()
                q.copy_(qn)  # warm start for the next step
                approx = pb @ qn.t()
                if self.cfg.error_feedback:
                    self.err[id(p)] = m - approx
                m.copy_(approx)
            return buf

        return self.allreduce(second, op="allreduce_q").then(decompress)

    def reset_state(self) -> None:
        """Forget e and the warm-start Q (Q restarts from its seeded draw on every rank)."""
        self.q.clear()
        self.err.clear()

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "q": self._by_position(self.q),
                "err": self._by_position(self.err)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.q = self._by_id(state.get("q", {}))
        self.err = self._by_id(state.get("err", {}))

    def report(self) -> dict[str, Any]:
        out = super().report()
        out["compression_ratio"] = self.dense_values / max(self.compressed_values, 1)
        return out
