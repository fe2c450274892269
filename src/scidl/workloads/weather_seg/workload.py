"""``weather_seg``: extreme-weather segmentation (Kurth et al. 2018), synthetic.

Pixel-wise classification of 3-channel climate fields into background, tropical cyclone
and atmospheric river (:mod:`scidl.workloads.weather_seg.data`), with a U-net or a
DeepLabv3+-style network (atrous spatial pyramid pooling). The classes are heavily
imbalanced, so the loss is a class-weighted cross-entropy with weights
``w_c ~ freq_c^(-power)`` (``power = 0.5``: inverse square root of the frequency, as in
Kurth et al.), normalised so that ``sum_c freq_c w_c = 1``:

    L = - sum_pixels w_{y} log softmax(f_theta(x))_{y} / sum_pixels w_{y}

The weighted loss trains ``softmax(f) ~ w_c p(c | x)`` (up to normalisation), which
moves every decision boundary towards the frequent class; ``decision="prior_corrected"``
undoes that shift, ``argmax_c (f_c - log w_c)``. With the soft Dice term (default on),
which already pulls the rare classes up, the correction can erase a class, so the default
decision is the plain ``argmax``; the other rule is reported next to it.

Metric: per-class IoU over the held-out set; baseline: a threshold heuristic tuned on the
training set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from scidl.workloads.base import BuildContext, Task, Workload, WorkloadConfig
from scidl.workloads.common.unet import UNet
from scidl.workloads.weather_seg.data import (
    CLASSES,
    make_weather,
    per_class_iou,
    threshold_segment,
    tune_thresholds,
)
from scidl.workloads.weather_seg.losses import (
    class_weights,
    segmentation_loss,
    weights_from_counts,
)
from scidl.workloads.weather_seg.nets import AtrousNet

__all__ = ["WeatherSeg", "WeatherSegConfig", "class_weights", "weights_from_counts"]


class WeatherSegConfig(WorkloadConfig):
    """Settings of the ``weather_seg`` workload."""

    size: int = Field(48, ge=16, description="grid side in pixels (divisible by 4)")
    n_train: int = Field(1024, ge=1, description="training samples")
    n_val: int = Field(128, ge=1, description="held-out samples")
    noise: float = Field(0.3, ge=0, description="white-noise std added to every channel")
    arch: Literal["unet", "deeplab"] = Field("unet", description="network")
    base: int = Field(12, ge=4, description="channels at full resolution")
    depth: int = Field(3, ge=1, description="U-net down-sampling steps (size % 2^depth == 0)")
    class_weight_power: float = Field(
        0.5, ge=0, description="w_c ~ freq_c^-power (0: unweighted, 1: inverse frequency)"
    )
    dice_weight: float = Field(
        1.0, ge=0, description="weight of the soft Dice loss of the event classes added to the "
                               "weighted cross-entropy (0: cross-entropy only)")
    decision: Literal["prior_corrected", "argmax"] = Field(
        "argmax", description="class decision: argmax(logits - log w) or argmax"
    )
    data_dir: str | None = Field(
        None, description="train from the 16-channel files in this folder (written by `scidl "
                          "data write-weather DIR`; they fix size, n_train, n_val and noise) "
                          "instead of generating the 3-channel fields in memory")


def predict_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class scores ``[n, classes, h, w]`` of ``x`` (in chunks of 64, no autograd)."""
    with torch.no_grad():
        return torch.cat([model(xb) for xb in torch.split(x, 64)])


def decide(logits: torch.Tensor, weights: torch.Tensor, decision: str) -> torch.Tensor:
    """Masks from class scores: ``argmax`` or ``argmax(logits - log w)`` (``prior_corrected``)."""
    if decision == "argmax":
        return logits.argmax(1)
    return (logits - torch.log(weights.to(logits.device))[None, :, None, None]).argmax(1)


def build_seg_model(cfg: WeatherSegConfig, in_channels: int = 3) -> nn.Module:
    if cfg.arch == "unet":
        return UNet(in_channels, len(CLASSES), base=cfg.base, depth=cfg.depth)
    return AtrousNet(in_channels, len(CLASSES), base=cfg.base)


class WeatherSeg(Workload):
    """Cyclone / atmospheric-river segmentation with U-net or DeepLab-style network."""

    name = "weather_seg"
    description = "extreme-weather segmentation (cyclones, rivers): U-net/DeepLab, IoU"
    Config = WeatherSegConfig
    defaults: ClassVar[dict[str, Any]] = {
        "train": {"epochs": 12, "batch_size": 16},
        "optim": {"name": "adam", "lr": 3e-3, "schedule": "cosine", "min_lr_factor": 0.02},
    }
    smoke: ClassVar[list[str]] = [
        "task.size=16", "task.n_train=16", "task.n_val=8", "task.base=4", "train.batch_size=4",
    ]

    def build(self, cfg: WorkloadConfig, ctx: BuildContext) -> Task:
        assert isinstance(cfg, WeatherSegConfig)
        if cfg.size % 4:
            raise ValueError(f"weather_seg size must be divisible by 4, got {cfg.size}")
        if cfg.arch == "unet" and cfg.size % 2**cfg.depth:
            raise ValueError(f"weather_seg size must be divisible by 2^depth = {2**cfg.depth} "
                             f"for the U-net, got {cfg.size}")
        n_cls = len(CLASSES)
        if cfg.data_dir is not None:  # the files of `scidl data write-weather`
            from scidl.workloads.weather_seg import files

            meta = files.read_meta(cfg.data_dir)
            train_data: Dataset = files.train_dataset(cfg.data_dir)
            x_va, y_va = files.load_split(cfg.data_dir, "val")
            weights = weights_from_counts(torch.tensor(meta["label_counts"]), cfg.class_weight_power)
            th = tuple(meta["thresholds"])
        else:
            x_tr, y_tr = make_weather(cfg.n_train, cfg.size, seed=2 * ctx.seed + 1, noise=cfg.noise)
            x_va, y_va = make_weather(cfg.n_val, cfg.size, seed=2 * ctx.seed + 2, noise=cfg.noise)
            train_data = TensorDataset(x_tr, y_tr)
            weights = class_weights(y_tr, n_cls, cfg.class_weight_power)
            tune_n = min(cfg.n_train, 256)
            th = tune_thresholds(x_tr[:tune_n], y_tr[:tune_n])
        base_iou = per_class_iou(threshold_segment(x_va, th), y_va, n_cls)
        model = build_seg_model(cfg, in_channels=x_va.shape[1])

        def loss(m: nn.Module, batch: Any) -> torch.Tensor:
            x, y = batch
            return segmentation_loss(m(x), y, weights, cfg.dice_weight, range(1, n_cls))

        def evaluate(m: nn.Module, val: Any) -> dict[str, float]:
            x, y = val
            logits = predict_logits(m, x)
            pred_plain, pred_corr = decide(logits, weights, "argmax"), decide(logits, weights, "prior_corrected")
            pred = pred_corr if cfg.decision == "prior_corrected" else pred_plain
            iou = per_class_iou(pred, y, n_cls)
            other = per_class_iou(pred_plain if pred is pred_corr else pred_corr, y, n_cls)
            alt = "argmax" if cfg.decision == "prior_corrected" else "prior_corrected"
            out = {f"iou_{c}": float(iou[i]) for i, c in enumerate(CLASSES)}
            out |= {f"{alt}_iou_{c}": float(other[i]) for i, c in enumerate(CLASSES[1:], 1)}
            out |= {f"heuristic_iou_{c}": float(base_iou[i]) for i, c in enumerate(CLASSES)}
            out["event_miou"] = float((iou[1] + iou[2]) / 2)
            out["pixel_acc"] = float((pred == y).double().mean())
            return out

        return Task(
            model=model, train_data=train_data, loss=loss, evaluate=evaluate,
            val_data=(x_va, y_va), headline="event_miou", higher_is_better=True,
            extras={"class_weights": weights, "thresholds": th, "heuristic_iou": base_iou},
        )

    def pictures(self, cfg: WorkloadConfig, model: nn.Module, task: Task,
                 out_dir: Path) -> list[Path]:
        """A few held-out samples: moisture field, true mask, predicted mask with each
        sample's IoU (``weather_seg_masks.png``)."""
        from scidl.workloads.weather_seg.pictures import masks_picture

        assert isinstance(cfg, WeatherSegConfig)
        x, y = task.val_data
        device = next(model.parameters()).device
        pred = decide(predict_logits(model, x.to(device)), task.extras["class_weights"],
                      cfg.decision).cpu()
        return [masks_picture(x, y, pred, out_dir / "weather_seg_masks.png", cfg.decision)]
