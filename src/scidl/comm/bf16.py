"""``bf16``: allreduce gradients in bfloat16 (half the bytes, fp32's exponent range)."""

from __future__ import annotations

import torch

from scidl.comm._cast import CastAllreduce


class BF16Allreduce(CastAllreduce):
    """Divide by p, cast to bfloat16, allreduce, cast back (see :class:`CastAllreduce`)."""

    name = "bf16"
    description = "bf16 wire format: divide by p, cast, allreduce, cast back"
    wire_dtype = torch.bfloat16
