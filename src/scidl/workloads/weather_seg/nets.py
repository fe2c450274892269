"""Segmentation networks of weather_seg: a DeepLab-style atrous net, or the shared U-net."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scidl.workloads.common.unet import conv_block


class AtrousNet(nn.Module):
    """DeepLabv3+-style network: a stride-4 encoder, ASPP with dilations (1, 2, 4, 6) plus
    image pooling, and a decoder that fuses the stride-1 features after upsampling."""

    def __init__(self, in_ch: int, n_classes: int, base: int = 12) -> None:
        super().__init__()
        c1, c2 = base, 2 * base
        self.stem = conv_block(in_ch, c1)  # full-resolution low-level features
        self.enc = nn.Sequential(
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c2, c2, 3, stride=2, padding=1), nn.GroupNorm(4, c2), nn.ReLU(inplace=True),
        )
        self.aspp = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c2, c2, 3 if d > 1 else 1, padding=d if d > 1 else 0,
                                    dilation=d), nn.GroupNorm(4, c2), nn.ReLU(inplace=True))
            for d in (1, 2, 4, 6)
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c2, c2, 1),
                                  nn.ReLU(inplace=True))
        self.project = nn.Sequential(nn.Conv2d(5 * c2, c2, 1), nn.GroupNorm(4, c2),
                                     nn.ReLU(inplace=True))
        self.decode = conv_block(c1 + c2, c1)
        self.head = nn.Conv2d(c1, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.stem(x)
        z = self.enc(low)
        pooled = self.pool(z).expand(-1, -1, *z.shape[-2:])
        z = self.project(torch.cat([b(z) for b in self.aspp] + [pooled], dim=1))
        z = F.interpolate(z, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.decode(torch.cat([z, low], dim=1)))
