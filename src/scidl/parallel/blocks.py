"""Science CNNs written as sequences of blocks, so a pipeline can cut them anywhere.

A pipeline stage is a contiguous run of blocks. Plain CNNs and residual networks pass one
tensor from block to block. A U-Net's skip connections are carried *with* the activation:
blocks pass a tuple ``(x, skip_1, ..., skip_k)``; an encoder block appends its output to
the tuple, a decoder block pops the last skip and concatenates it. When the cut falls
between an encoder and its decoder, the pending skips simply travel to the next stage as
extra tensors of the activation message (``torch.distributed.pipelining`` sends tuples).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """Pre-activation basic block: x + conv(act(norm(conv(act(norm(x)))))).

    GroupNorm (per sample) keeps the block independent of how a batch is split into
    microbatches, so pipelined and unpipelined training compute the same function.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, groups: int = 4) -> None:
        super().__init__()
        self.n1 = nn.GroupNorm(min(groups, c_in), c_in)
        self.c1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.n2 = nn.GroupNorm(min(groups, c_out), c_out)
        self.c2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.short = (
            nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.n1(x))
        s = self.short(h) if self.short is not None else x
        h = self.c1(h)
        h = self.c2(torch.relu(self.n2(h)))
        return s + h


def resnet_sequential(depth: int = 20, width: int = 16, in_ch: int = 1, classes: int = 10) -> nn.Sequential:
    """A CIFAR-style ResNet (depth = 6n + 2: ResNet-20, -110, -1001 ...) as a block sequence."""
    if (depth - 2) % 6 != 0 or depth < 8:
        raise ValueError(f"ResNet depth must be 6n+2 (8, 14, 20, 32, 56, 110, ...), got {depth}")
    n = (depth - 2) // 6
    blocks: list[nn.Module] = [nn.Conv2d(in_ch, width, 3, 1, 1, bias=False)]
    c = width
    for stage, mult in enumerate((1, 2, 4)):
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            blocks.append(ResidualBlock(c, width * mult, stride))
            c = width * mult
    blocks.append(nn.Sequential(nn.GroupNorm(4, c), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                nn.Flatten(), nn.Linear(c, classes)))
    return nn.Sequential(OrderedDict((str(i), b) for i, b in enumerate(blocks)))


class _Conv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(min(4, c_out), c_out),
                         nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU())


class UNetStem(nn.Module):
    """First block: lifts the input to ``c`` channels and starts the skip tuple."""

    def __init__(self, c_in: int, c: int) -> None:
        super().__init__()
        self.conv = _Conv(c_in, c)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.conv(x),)


def _as_tuple(state: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    # A 1-tuple that crossed a stage boundary arrives as a plain tensor.
    return (state,) if isinstance(state, torch.Tensor) else tuple(state)


class UNetDown(nn.Module):
    """Encoder block: keeps its input as a skip, pools, convolves."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = _Conv(c_in, c_out)

    def forward(self, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x, *skips = _as_tuple(state)
        return (self.conv(nn.functional.max_pool2d(x, 2)), *skips, x)


class UNetUp(nn.Module):
    """Decoder block: upsamples, concatenates the newest skip, convolves."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_in // 2, 2, stride=2)
        self.conv = _Conv(c_in // 2 + c_skip, c_out)

    def forward(self, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x, *skips = _as_tuple(state)
        skip = skips.pop()
        return (self.conv(torch.cat([self.up(x), skip], dim=1)), *skips)


class UNetHead(nn.Module):
    """Last block: 1x1 convolution to the output channels (the skip tuple is empty here)."""

    def __init__(self, c: int, c_out: int) -> None:
        super().__init__()
        self.out = nn.Conv2d(c, c_out, 1)

    def forward(self, state: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.out(_as_tuple(state)[0])


def unet_sequential(in_ch: int = 1, out_ch: int = 1, width: int = 8, levels: int = 2) -> nn.Sequential:
    """A U-Net with ``levels`` poolings as a block sequence (input size divisible by 2**levels)."""
    blocks: list[nn.Module] = [UNetStem(in_ch, width)]
    c = width
    for _ in range(levels):
        blocks.append(UNetDown(c, 2 * c))
        c *= 2
    for _ in range(levels):
        blocks.append(UNetUp(c, c // 2, c // 2))
        c //= 2
    blocks.append(UNetHead(c, out_ch))
    return nn.Sequential(OrderedDict((str(i), b) for i, b in enumerate(blocks)))
