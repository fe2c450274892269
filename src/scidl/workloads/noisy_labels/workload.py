"""Label-noise study on scikit-learn digits: binary, multiclass and multilabel tasks.

Marini et al. (arXiv 2406.14351) report that classifiers keep their performance up to about
10% noisy training labels. This workload trains an MLP on digits whose *training* labels are
corrupted at a rate ``noise`` and scores macro-F1 on the *clean* test labels,

    F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c),   macro-F1 = mean_c F1_c,

over the classes c (binary, multiclass) or the labels (multilabel). Noise is injected at an
exact rate: ``round(noise · n)`` training samples (``round(noise · n · L)`` label entries for
multilabel) are chosen uniformly and flipped; a multiclass label is replaced by one of the
other classes uniformly. The tasks derived from a digit d:

* ``binary``: d is even;
* ``multiclass``: d itself (10 classes);
* ``multilabel``: [even, d ≥ 5, prime, has a closed loop (0, 6, 8, 9)].

:mod:`~scidl.workloads.noisy_labels.sweep` trains many runs (noise rates × seeds) at once and
summarises the curve (knee, tolerated noise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from scidl.workloads.base import BuildContext, Task, Workload, WorkloadConfig
from scidl.workloads.common.nets import mlp
from scidl.workloads.noisy_labels.data import TaskKind, inject_noise, load_split, n_outputs


class NoisyLabelsConfig(WorkloadConfig):
    """Settings of the ``noisy_labels`` workload."""

    kind: TaskKind = Field("binary", description="binary (even digit), multiclass, multilabel")
    noise: float = Field(0.0, ge=0.0, le=0.5, description="fraction of corrupted train labels")
    noise_seed: int | None = Field(None, description="seed of the corruption (None: run seed)")
    test_fraction: float = Field(0.3, gt=0.0, lt=1.0, description="held-out clean test share")
    hidden: int = Field(256, ge=1, description="width of the two hidden layers")


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, kind: TaskKind, n_classes: int = 10) -> float:
    """Macro-F1 (zero when a class has no true or predicted samples, as scikit-learn's 0)."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if kind == "multilabel":
        tp = np.sum((t == 1) & (p == 1), 0)
        fp = np.sum((t == 0) & (p == 1), 0)
        fn = np.sum((t == 1) & (p == 0), 0)
    else:
        c = 2 if kind == "binary" else n_classes
        cm = np.zeros((c, c), dtype=np.int64)
        np.add.at(cm, (t, p), 1)
        tp = np.diag(cm)
        fp = cm.sum(0) - tp
        fn = cm.sum(1) - tp
    den = 2 * tp + fp + fn
    f1 = np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)
    return float(f1.mean())


def make_loss(kind: TaskKind) -> Callable[[nn.Module, Any], torch.Tensor]:
    """Cross-entropy (binary, multiclass) or per-label binary cross-entropy (multilabel)."""

    def loss(model: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        out = model(x)
        if kind == "multilabel":
            return F.binary_cross_entropy_with_logits(out, y.float())
        return F.cross_entropy(out, y)

    return loss


def predict(model: nn.Module, x: torch.Tensor, kind: TaskKind) -> np.ndarray:
    """Hard predictions: argmax, or logit > 0 per label for multilabel."""
    with torch.no_grad():
        out = model(x)
    return (out > 0).long().numpy() if kind == "multilabel" else out.argmax(1).numpy()


def make_evaluate(kind: TaskKind) -> Callable[[nn.Module, Any], dict[str, float]]:
    def evaluate(model: nn.Module, data: Any) -> dict[str, float]:
        x, y = data
        pred = predict(model, x, kind)
        acc = float(np.mean(np.all(pred.reshape(len(y), -1) == y.reshape(len(y), -1), 1)))
        return {"macro_f1": macro_f1(y, pred, kind), "accuracy": acc}

    return evaluate


class NoisyLabels(Workload):
    """An MLP on digits with corrupted training labels, scored on clean test labels."""

    name = "noisy_labels"
    description = "label-noise robustness: macro-F1 on clean labels vs train-label noise (digits)"
    Config = NoisyLabelsConfig
    defaults = {
        "train": {"epochs": 10, "batch_size": 32, "log_every": 50},
        "optim": {"lr": 1e-3},
    }

    def build(self, cfg: WorkloadConfig, ctx: BuildContext) -> Task:
        assert isinstance(cfg, NoisyLabelsConfig)
        Xtr, ytr, Xte, yte = load_split(cfg.kind, ctx.seed, cfg.test_fraction)
        nseed = ctx.seed if cfg.noise_seed is None else cfg.noise_seed
        noisy = inject_noise(ytr, cfg.noise, cfg.kind, np.random.default_rng([nseed, 1]))
        # two hidden ReLU layers: enough capacity to memorise noisy labels
        model = mlp(Xtr.shape[1], [cfg.hidden, cfg.hidden], n_outputs(cfg.kind))
        train = TensorDataset(torch.from_numpy(Xtr), torch.from_numpy(noisy))
        return Task(
            model=model,
            train_data=train,
            loss=make_loss(cfg.kind),
            evaluate=make_evaluate(cfg.kind),
            val_data=(torch.from_numpy(Xte), yte),
            headline="macro_f1",
            higher_is_better=True,
            extras={"flipped": int(np.sum(noisy != ytr)), "n_train": len(ytr)},
        )


