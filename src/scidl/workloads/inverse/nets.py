"""The deblurring network: a residual U-net on a first reconstruction of the data."""

from __future__ import annotations

import torch
from torch import nn

from scidl.workloads.common.unet import UNet


class PostProcessed(nn.Module):
    """``Psi(y) = x0 + U(x0)``, ``x0 = pre(y)``, on images ``[B, n, n]``.

    ``pre`` is the Tikhonov inverse (post-processing, FBPConvNet-style) or the identity
    (the network learns the inverse from the observation itself, as the nDNN/mcDNN of
    Nguyen & Bui-Thanh, arXiv 2105.12033). U's last layer starts at zero, so training
    starts exactly at ``pre(y)``.
    """

    def __init__(self, pre: nn.Module, unet: UNet) -> None:
        super().__init__()
        self.pre = pre
        self.unet = unet
        nn.init.zeros_(unet.head.weight)
        if unet.head.bias is not None:
            nn.init.zeros_(unet.head.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        x0 = self.pre(y)
        return x0 + self.unet(x0[:, None])[:, 0]
