"""The small CNN of the digits workload (the MLP is scidl.workloads.common.nets)."""

from __future__ import annotations

from torch import nn

from scidl.workloads.common.nets import activation, mlp


def digits_cnn(channels: list[int], hidden: list[int], act: str, dropout: float) -> nn.Module:
    layers: list[nn.Module] = []
    c_in, size = 1, 8
    for i, c in enumerate(channels):
        layers += [nn.Conv2d(c_in, c, 3, padding=1), activation(act)]
        if i < 2:  # 8 → 4 → 2
            layers.append(nn.MaxPool2d(2))
            size //= 2
        c_in = c
    layers.append(nn.Flatten())
    layers.append(mlp(c_in * size * size, hidden, 10, act, dropout))
    return nn.Sequential(*layers)
