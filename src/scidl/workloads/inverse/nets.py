"""The deblurring network: a U-net with an optional post-processing residual."""

from __future__ import annotations

import torch
from torch import nn

from scidl.workloads.common.unet import UNet
from scidl.workloads.inverse.ops import Tikhonov


class PostProcessed(nn.Module):
    """``Psi(y) = T(y) + U(T(y))`` on images ``[B, n, n]`` (U's last layer starts at zero)."""

    def __init__(self, tikhonov: Tikhonov, unet: UNet) -> None:
        super().__init__()
        self.tikhonov = tikhonov
        self.unet = unet
        # start exactly at the Tikhonov solution: the U-net learns a correction
        nn.init.zeros_(unet.head.weight)
        if unet.head.bias is not None:
            nn.init.zeros_(unet.head.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        x0 = self.tikhonov(y)
        return x0 + self.unet(x0[:, None])[:, 0]
