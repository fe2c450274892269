"""The weather_seg workload's picture of a trained network: a few held-out samples, each
as its moisture field, the true mask and the predicted mask, with the sample's IoU."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from scidl.runtime.plotting import caption_text, finish, new_figure, provenance
from scidl.workloads.weather_seg.data import CLASSES, per_class_iou

__all__ = ["MASK_COLOURS", "masks_picture", "pick_samples"]

MASK_COLOURS = ("#eeeeee", "#d62728", "#1f77b4")  # background, cyclone, river
MOISTURE = 1  # channel index of the moisture (TMQ-like) field


def pick_samples(label: torch.Tensor, n: int) -> list[int]:
    """Up to ``n`` sample indices, those holding both event classes first, then any events."""
    both = [i for i in range(len(label)) if (label[i] == 1).any() and (label[i] == 2).any()]
    some = [i for i in range(len(label)) if i not in both and bool((label[i] > 0).any())]
    rest = [i for i in range(len(label)) if i not in both and i not in some]
    return (both + some + rest)[:n]


def _num(v: torch.Tensor) -> str:
    return "–" if math.isnan(float(v)) else f"{float(v):.2f}"


def _iou_text(pred: torch.Tensor, label: torch.Tensor) -> str:
    iou = per_class_iou(pred, label, len(CLASSES))
    parts = [f"{CLASSES[c]} {_num(iou[c])}" for c in (1, 2) if not math.isnan(float(iou[c]))]
    return "IoU " + ", ".join(parts) if parts else "no events"


def masks_picture(fields: torch.Tensor, label: torch.Tensor, pred: torch.Tensor, path: Path,
                  decision: str = "", n: int = 3) -> Path:
    """``n`` samples as rows: moisture field, true mask, predicted mask (IoU in its title)."""
    from matplotlib.colors import ListedColormap

    idx = pick_samples(label, n)
    cmap = ListedColormap(list(MASK_COLOURS))
    fig = new_figure((10.5, 3.0 * len(idx) + 0.6))
    axes = fig.subplots(len(idx), 3, squeeze=False)
    field = fields[idx, MOISTURE]
    lim = float(field.abs().max())
    for row, i in zip(axes, idx, strict=True):
        im = row[0].imshow(fields[i, MOISTURE], cmap="viridis", vmin=-lim, vmax=lim)
        fig.colorbar(im, cax=row[0].inset_axes((1.04, 0.0, 0.05, 1.0)))
        row[0].set_title(f"sample {i}: moisture (background σ)", fontsize=9)
        row[1].imshow(label[i], cmap=cmap, vmin=-0.5, vmax=2.5, interpolation="nearest")
        row[1].set_title("true mask", fontsize=9)
        mk = row[2].imshow(pred[i], cmap=cmap, vmin=-0.5, vmax=2.5, interpolation="nearest")
        row[2].set_title(f"predicted: {_iou_text(pred[i], label[i])}", fontsize=9)
        bar = fig.colorbar(mk, cax=row[2].inset_axes((1.04, 0.0, 0.05, 1.0)),
                           ticks=range(len(CLASSES)))
        bar.ax.set_yticklabels(list(CLASSES), fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    total = per_class_iou(pred, label, len(CLASSES))
    how = f", {decision} decision" if decision else ""
    fig.suptitle(f"weather_seg held-out samples{how}: IoU over all {len(label)} — "
                 f"cyclone {_num(total[1])}, river {_num(total[2])}")
    return finish(fig, path, caption_text(provenance(), "trained"))
