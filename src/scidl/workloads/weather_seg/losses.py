"""Losses of ``weather_seg``: class-weighted cross-entropy plus a soft Dice term.

Class weights ``w_c ~ freq_c^(-power)`` follow Kurth et al. (2018) (``power = 0.5``: the
inverse square root of the pixel frequency), normalised to mean weight 1 per pixel.

The soft Dice loss (Milletari et al. 2016, V-Net) replaces the masks of the Dice
coefficient ``2 |P & L| / (|P| + |L|)`` by the softmax probabilities, so that it is
differentiable; it scores the overlap of each event class over the whole batch, the
quantity the IoU measures (``IoU = D / (2 - D)``), where the cross-entropy scores each
pixel alone. Here the denominator is linear in the probabilities (``sum p + sum l``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def weights_from_counts(counts: torch.Tensor, power: float) -> torch.Tensor:
    """``w_c ~ freq_c^-power`` from the pixel count of each class, normalised so that
    ``sum_c freq_c w_c = 1`` (mean weight 1 per pixel)."""
    freq = counts.double() / counts.sum()
    w = freq.clamp_min(1e-6) ** -power
    return (w / (freq * w).sum()).float()


def class_weights(label: torch.Tensor, n_classes: int, power: float) -> torch.Tensor:
    """:func:`weights_from_counts` of the labels ``label``."""
    return weights_from_counts(torch.bincount(label.flatten(), minlength=n_classes), power)


def soft_dice_loss(logits: torch.Tensor, label: torch.Tensor, classes: Sequence[int],
                   smooth: float = 1.0) -> torch.Tensor:
    """``1 - mean_c D_c`` over ``classes``, ``D_c = (2 sum p_c l_c + s) / (sum p_c + sum l_c + s)``
    with ``p = softmax(logits)`` (``[n, C, h, w]``), ``l_c`` the indicator of ``label == c``
    and the sums over every pixel of the batch; ``s = smooth`` keeps an absent class at
    ``D = 1`` when nothing is predicted."""
    prob = logits.softmax(1)
    idx = torch.tensor(list(classes), device=logits.device)
    p = prob.index_select(1, idx)
    t = (label[:, None] == idx[None, :, None, None]).to(p.dtype)
    inter = (p * t).sum((0, 2, 3))
    denom = p.sum((0, 2, 3)) + t.sum((0, 2, 3))
    return 1 - ((2 * inter + smooth) / (denom + smooth)).mean()


def segmentation_loss(logits: torch.Tensor, label: torch.Tensor, weights: torch.Tensor,
                      dice_weight: float, dice_classes: Sequence[int]) -> torch.Tensor:
    """Class-weighted cross-entropy ``+ dice_weight *`` :func:`soft_dice_loss`."""
    loss = F.cross_entropy(logits, label, weight=weights.to(logits.device))
    if dice_weight > 0:
        loss = loss + dice_weight * soft_dice_loss(logits, label, dice_classes)
    return loss
