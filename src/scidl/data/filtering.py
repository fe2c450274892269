"""Data optimisation for large batches: score samples during a short warm-up, drop a fraction.

After Gahlot, Yin, Shankar 2020 (arXiv 2012.09272): a model scores the training samples and
those least useful to feature learning are filtered out before large-batch training. Here
a copy of the model is trained for ``warmup_epochs`` small-batch epochs; after each epoch
every sample's loss is recorded and its score is the mean over the warm-up,

    s_i = (1/E) sum_e loss_i(theta_e).

``drop="easy"`` removes the ``fraction`` of samples with the lowest scores (learned at once,
little gradient signal: the "unforgettable" samples of Toneva et al. 2019); ``drop="hard"``
removes the highest (noisy or mislabelled points that roughen the loss landscape). The
result is a ``torch.utils.data.Subset``: a map-style dataset the trainer's distributed
sampler shards as usual. Use it through a ``task_factory`` that swaps ``train_data``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

PerSampleLoss = Callable[[nn.Module, Any], torch.Tensor]


@dataclass
class FilterResult:
    """A filtered dataset and how it was chosen.

    Attributes:
        dataset: the kept samples (a ``Subset`` of the original dataset).
        kept: indices of the kept samples in the original dataset (sorted).
        scores: per-sample score (mean warm-up loss) of every original sample.
    """

    dataset: Subset
    kept: torch.Tensor
    scores: torch.Tensor


@torch.no_grad()
def per_sample_losses(
    model: nn.Module, dataset: Dataset, loss_fn: PerSampleLoss, batch_size: int = 512,
    collate_fn: Callable[..., Any] | None = None,
) -> torch.Tensor:
    """``loss_fn(model, batch) -> [B]`` over the dataset in order (eval mode)."""
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    out = torch.cat([loss_fn(model, b).detach().float().reshape(-1).cpu() for b in loader])
    model.train(was_training)
    return out


def warmup_scores(
    model: nn.Module, dataset: Dataset, loss: Callable[[nn.Module, Any], torch.Tensor],
    per_sample_loss: PerSampleLoss, warmup_epochs: int = 2, batch_size: int = 32,
    lr: float = 1e-3, seed: int = 0, collate_fn: Callable[..., Any] | None = None,
) -> torch.Tensor:
    """Mean per-sample loss over ``warmup_epochs`` epochs of Adam on a copy of ``model``.

    The caller's model is not modified; the result depends only on ``seed`` and the inputs.
    """
    net = copy.deepcopy(model)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=gen,
                        collate_fn=collate_fn)
    total = torch.zeros(len(dataset))  # type: ignore[arg-type]
    for _ in range(max(warmup_epochs, 1)):
        net.train()
        for batch in loader:
            opt.zero_grad(set_to_none=True)
            loss(net, batch).backward()
            opt.step()
        total += per_sample_losses(net, dataset, per_sample_loss, collate_fn=collate_fn)
    return total / max(warmup_epochs, 1)


def filter_by_scores(
    dataset: Dataset, scores: torch.Tensor, fraction: float,
    drop: Literal["easy", "hard"] = "easy",
) -> FilterResult:
    """Drop ``fraction`` of the samples: the lowest scores (``easy``) or the highest (``hard``)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    n = len(scores)
    n_drop = int(round(fraction * n))
    order = torch.argsort(scores, descending=(drop == "hard"), stable=True)
    kept = torch.sort(order[n_drop:]).values
    return FilterResult(Subset(dataset, kept.tolist()), kept, scores)


def filter_dataset(
    model: nn.Module, dataset: Dataset, loss: Callable[[nn.Module, Any], torch.Tensor],
    per_sample_loss: PerSampleLoss, fraction: float = 0.2,
    drop: Literal["easy", "hard"] = "easy", warmup_epochs: int = 2, batch_size: int = 32,
    lr: float = 1e-3, seed: int = 0, collate_fn: Callable[..., Any] | None = None,
) -> FilterResult:
    """Score by warm-up loss (:func:`warmup_scores`), then :func:`filter_by_scores`."""
    scores = warmup_scores(model, dataset, loss, per_sample_loss, warmup_epochs, batch_size,
                           lr, seed, collate_fn)
    return filter_by_scores(dataset, scores, fraction, drop)
