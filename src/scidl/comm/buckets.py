"""A strategy's view of one DDP gradient bucket, and state that survives bucket rebuilds.

DDP may re-assign parameters to buckets once (after the first iteration, in the order
gradients became ready on rank 0). State a strategy keeps per bucket (error-feedback
residuals, the lagged result) is therefore stored with the bucket's *layout* — which
parameter occupies which slice — and re-mapped parameter by parameter when the layout
changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# (id(param), numel) for each parameter of the bucket, in buffer order.
Layout = tuple[tuple[int, int], ...]


@dataclass
class Bucket:
    """One flat, dense gradient bucket handed to a strategy.

    Attributes:
        buffer: 1-D dense tensor holding the local gradients; strategies reduce it in
            place or return another tensor of the same size.
        index: DDP bucket index (buckets are reduced in index order on every rank).
        is_last: whether this is the last bucket of the backward pass.
        params: the parameters whose gradients the buffer holds, in buffer order.
        layout: ``(id(param), numel)`` per parameter; empty when unknown.
    """

    buffer: torch.Tensor
    index: int
    is_last: bool
    params: list[torch.Tensor] = field(default_factory=list)
    layout: Layout = ()

    def offsets(self) -> list[tuple[torch.Tensor, int, int]]:
        """``(param, start, numel)`` for each parameter slice of the buffer."""
        out, start = [], 0
        for p, (_, n) in zip(self.params, self.layout, strict=False):
            out.append((p, start, n))
            start += n
        return out

    def with_buffer(self, buffer: torch.Tensor) -> Bucket:
        """The same bucket description around another buffer (e.g. a private copy)."""
        return Bucket(buffer, self.index, self.is_last, self.params, self.layout)


def layout_of(params: list[torch.Tensor], numel: int) -> Layout:
    """The layout of a bucket; empty if the parameters do not tile the buffer exactly."""
    lay = tuple((id(p), p.numel()) for p in params)
    return lay if sum(n for _, n in lay) == numel else ()


class FlatStore:
    """Per-bucket flat tensors (e.g. residuals) keyed by bucket index and layout.

    ``get`` returns the stored tensor for a bucket. When DDP rebuilt its buckets (a
    layout changed), every stored tensor is split into per-parameter pieces and each
    new bucket is assembled from them, so no parameter's state is lost or misplaced.
    """

    def __init__(self) -> None:
        self._data: dict[int, tuple[Layout, torch.Tensor]] = {}
        self._pieces: dict[int, torch.Tensor] = {}

    def get(self, bucket: Bucket, like: torch.Tensor | None = None) -> torch.Tensor:
        like = bucket.buffer if like is None else like
        hit = self._data.get(bucket.index)
        if hit is not None and hit[0] == bucket.layout and hit[1].numel() == like.numel():
            return hit[1]
        if hit is not None:  # a rebuild: explode everything into per-parameter pieces
            self._explode()
        fresh = torch.zeros(like.numel(), dtype=torch.float32, device=like.device)
        start = 0
        for pid, n in bucket.layout:
            piece = self._pieces.pop(pid, None)
            if piece is not None and piece.numel() == n:
                fresh[start : start + n] = piece
            start += n
        self._data[bucket.index] = (bucket.layout, fresh)
        return fresh

    def _explode(self) -> None:
        for lay, t in self._data.values():
            start = 0
            for pid, n in lay:
                self._pieces[pid] = t[start : start + n].clone()
                start += n
        self._data.clear()

    def pieces(self) -> dict[int, torch.Tensor]:
        """Every stored value split per parameter: ``{id(param): tensor}``."""
        out = dict(self._pieces)
        for lay, t in self._data.values():
            start = 0
            for pid, n in lay:
                out[pid] = t[start : start + n]
                start += n
        return out

    def load_pieces(self, pieces: dict[int, torch.Tensor]) -> None:
        """Replace the state by per-parameter pieces (assembled on the next ``get``)."""
        self._data.clear()
        self._pieces = {k: v.clone() for k, v in pieces.items()}

    def tensors(self) -> dict[int, torch.Tensor]:
        """Current tensors by bucket index (for tests and diagnostics)."""
        return {i: t for i, (_, t) in self._data.items()}

    def clear(self) -> None:
        self._data.clear()
        self._pieces.clear()
