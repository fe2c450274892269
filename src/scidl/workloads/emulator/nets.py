"""Networks of the gas-optics emulator: standardised MLPs, one per pressure regime."""

from __future__ import annotations

import math

import torch
from torch import nn

from scidl.workloads.common.nets import mlp
from scidl.workloads.emulator.lbl import INPUT_HIGH, INPUT_LOW


class Standardise(nn.Module):
    """Maps inputs to [-1, 1] with the fixed sampling ranges (no data dependence)."""

    centre: torch.Tensor
    halfwidth: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        lo, hi = torch.tensor(INPUT_LOW), torch.tensor(INPUT_HIGH)
        self.register_buffer("centre", (hi + lo) / 2)
        self.register_buffer("halfwidth", (hi - lo) / 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.centre) / self.halfwidth


class RegimeEmulator(nn.Module):
    """One network per pressure regime; outputs standardised ``log tau_b``.

    ``forward`` returns ``(log tau - mean) / std``; :meth:`predict_tau` undoes the transform.
    Layers with ``p >= split`` (lower atmosphere) go to ``nets[0]``, the others to ``nets[1]``.
    """

    out_mean: torch.Tensor
    out_std: torch.Tensor

    def __init__(
        self, n_bands: int, hidden: list[int], activation: str, split_hpa: float | None,
        out_mean: torch.Tensor, out_std: torch.Tensor,
    ) -> None:
        super().__init__()
        self.norm = Standardise()
        n_nets = 1 if split_hpa is None else 2
        self.nets = nn.ModuleList(mlp(4, hidden, n_bands, activation) for _ in range(n_nets))
        self.split_log_p = None if split_hpa is None else math.log(split_hpa)
        self.register_buffer("out_mean", out_mean.clone())
        self.register_buffer("out_std", out_std.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(x)
        if self.split_log_p is None:
            return self.nets[0](z)
        lower = x[:, 0] >= self.split_log_p
        out = z.new_empty(z.shape[0], self.out_mean.shape[0])
        out[lower] = self.nets[0](z[lower])
        out[~lower] = self.nets[1](z[~lower])
        return out

    def predict_tau(self, x: torch.Tensor) -> torch.Tensor:
        """Band optical depths ``[N, n_bands]`` (physical units)."""
        return torch.exp(self(x) * self.out_std + self.out_mean)
