"""Small network builders shared by workloads (MLPs with a named activation)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


def activation(name: str) -> nn.Module:
    """An activation module by name (choices: ``ACTIVATIONS``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choices: {', '.join(ACTIVATIONS)}") from None


def mlp(
    n_in: int, hidden: Sequence[int], n_out: int, act: str = "relu", dropout: float = 0.0
) -> nn.Sequential:
    """``n_in → hidden[0] → … → n_out`` with ``act`` (and dropout) between layers."""
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), activation(act)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
