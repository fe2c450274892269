"""A small U-net (Ronneberger et al. 2015) shared by the image workloads.

Encoder: ``depth`` times [two 3x3 conv + norm + ReLU, then 2x2 max-pool], channels doubling
from ``base``; a bottleneck block; decoder: transposed-conv upsampling, concatenation with
the skip connection, two 3x3 convs. Image sides must be divisible by ``2**depth``.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_block(c_in: int, c_out: int, norm: bool = True, dilation: int = 1) -> nn.Sequential:
    """Two ``3x3 conv -> GroupNorm -> ReLU`` layers (GroupNorm: no running statistics)."""
    layers: list[nn.Module] = []
    for a in (c_in, c_out):
        layers.append(nn.Conv2d(a, c_out, 3, padding=dilation, dilation=dilation, bias=not norm))
        if norm:
            layers.append(nn.GroupNorm(min(4, c_out), c_out))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """U-net mapping ``[B, in_ch, H, W]`` to ``[B, out_ch, H, W]``.

    Args:
        in_ch: input channels.
        out_ch: output channels (logits or a residual image; no final activation).
        base: channels of the first level (doubling per level).
        depth: number of down-sampling steps.
        norm: GroupNorm after each conv.
    """

    def __init__(self, in_ch: int, out_ch: int, base: int = 16, depth: int = 2,
                 norm: bool = True) -> None:
        super().__init__()
        chans = [base * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.down = nn.ModuleList()
        c = in_ch
        for ch in chans[:-1]:
            self.down.append(conv_block(c, ch, norm))
            c = ch
        self.bottom = conv_block(c, chans[-1], norm)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for ch in reversed(chans[:-1]):
            self.up.append(nn.ConvTranspose2d(ch * 2, ch, 2, stride=2))
            self.dec.append(conv_block(ch * 2, ch, norm))
        self.head = nn.Conv2d(chans[0], out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2**self.depth or x.shape[-2] % 2**self.depth:
            raise ValueError(f"image sides {tuple(x.shape[-2:])} not divisible by 2^{self.depth}")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2)
        x = self.bottom(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)
