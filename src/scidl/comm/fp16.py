"""``fp16``: allreduce gradients in IEEE half precision (half the bytes of ``dense``)."""

from __future__ import annotations

import torch

from scidl.comm._cast import CastAllreduce


class FP16Allreduce(CastAllreduce):
    """Divide by p, cast to float16, allreduce, cast back (see :class:`CastAllreduce`)."""

    name = "fp16"
    description = "fp16 wire format: divide by p, cast, allreduce, cast back"
    wire_dtype = torch.float16
