"""Shared body of the ``fp16``/``bf16`` strategies: cast for the wire, sum, cast back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch.futures import Future

from scidl.comm.base import CommStrategy
from scidl.comm.buckets import Bucket
from scidl.comm.wire import Collective, Shape


class CastAllreduce(CommStrategy):
    """Allreduce a low-precision copy of each bucket.

    ḡ = cast⁻¹(Σ_r cast(g_r / p)): the division by p happens before the cast and the sum,
    so the summed values stay in range (fp16 overflows above 65504). Half the bytes of
    ``dense``; the error is the dtype's rounding (fp16: 2⁻¹¹ relative, bf16: 2⁻⁸) plus the
    rounding of the p-term sum in that dtype.
    """

    wire_dtype: ClassVar[torch.dtype] = torch.float16
    nonfinite_agreed = True  # a NaN/Inf survives the cast and the sum

    @classmethod
    def wire(cls, cfg: Any, numel: int, world: int,
             shapes: Sequence[Shape] | None = None) -> list[Collective]:
        """One allreduce of the bucket in the wire dtype (2 bytes per entry)."""
        return [Collective("allreduce", cls.wire_dtype.itemsize * numel,
                           dtype=str(cls.wire_dtype).removeprefix("torch."))]

    def reduce(self, bucket: Bucket) -> Future[torch.Tensor]:
        buf = bucket.buffer
        low = buf.div_(self.world).to(self.wire_dtype)  # in place: one n-sized temporary

        def back(f: Future[torch.Tensor]) -> torch.Tensor:
            return buf.copy_(f.value())

        return self.allreduce(low).then(back)
