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

:func:`sweep` trains over noise rates × seeds; :func:`knee` finds the knee of the mean curve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from scidl.workloads.base import BuildContext, Task, Workload, WorkloadConfig

TaskKind = Literal["binary", "multiclass", "multilabel"]
_PRIME = np.array([0, 0, 1, 1, 0, 1, 0, 1, 0, 0], dtype=bool)
_LOOP = np.array([1, 0, 0, 0, 0, 0, 1, 0, 1, 1], dtype=bool)


class NoisyLabelsConfig(WorkloadConfig):
    """Settings of the ``noisy_labels`` workload."""

    kind: TaskKind = Field("binary", description="binary (even digit), multiclass, multilabel")
    noise: float = Field(0.0, ge=0.0, le=0.5, description="fraction of corrupted train labels")
    noise_seed: int | None = Field(None, description="seed of the corruption (None: run seed)")
    test_fraction: float = Field(0.3, gt=0.0, lt=1.0, description="held-out clean test share")
    hidden: int = Field(256, ge=1, description="width of the two hidden layers")


def digit_targets(digits: np.ndarray, kind: TaskKind) -> np.ndarray:
    """Labels of a task derived from digit classes: (n,) ints or (n, 4) 0/1 for multilabel."""
    d = np.asarray(digits, dtype=np.int64)
    if kind == "binary":
        return (d % 2 == 0).astype(np.int64)
    if kind == "multiclass":
        return d.copy()
    if kind == "multilabel":
        return np.stack([d % 2 == 0, d >= 5, _PRIME[d], _LOOP[d]], 1).astype(np.int64)
    raise ValueError(f"unknown task kind {kind!r}; choices: binary, multiclass, multilabel")


def n_outputs(kind: TaskKind) -> int:
    """Network outputs: 2 logits (binary), 10 (multiclass), 4 independent logits (multilabel)."""
    return {"binary": 2, "multiclass": 10, "multilabel": 4}[kind]


def inject_noise(
    y: np.ndarray, rate: float, kind: TaskKind, rng: np.random.Generator, n_classes: int = 10
) -> np.ndarray:
    """Corrupt exactly ``round(rate · count)`` labels (entries for multilabel); returns a copy."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must lie in [0, 1], got {rate}")
    y = np.array(y, dtype=np.int64, copy=True)
    flat = y.reshape(-1) if kind == "multilabel" else y
    m = int(round(rate * flat.size))
    idx = rng.choice(flat.size, size=m, replace=False)
    if kind in ("binary", "multilabel"):
        flat[idx] = 1 - flat[idx]
    else:  # a different class, uniformly among the other n_classes - 1
        flat[idx] = (flat[idx] + rng.integers(1, n_classes, size=m)) % n_classes
    return y


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


def load_split(
    kind: TaskKind, seed: int, test_fraction: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardised digits features and clean labels, split by a seeded permutation."""
    from sklearn.datasets import load_digits

    ds = load_digits()
    X = ds.data.astype(np.float32)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(X))
    n_test = int(round(test_fraction * len(X)))
    te, tr = perm[:n_test], perm[n_test:]
    mu, sd = X[tr].mean(0), X[tr].std(0) + 1.0  # +1: several pixels are constant
    X = (X - mu) / sd
    y = digit_targets(ds.target, kind)
    return X[tr], y[tr], X[te], y[te]


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Module:
    """Two hidden ReLU layers (enough capacity to memorise noisy labels)."""
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, n_out),
    )


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
        model = mlp(Xtr.shape[1], cfg.hidden, n_outputs(cfg.kind))
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


def fit_direct(task: Task, epochs: int, batch_size: int = 32, lr: float = 1e-3, seed: int = 0
               ) -> dict[str, float]:
    """Plain single-process Adam loop (tests and quick studies); the CLI path uses the trainer."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(task.model.parameters(), lr=lr)
    x, y = task.train_data.tensors  # type: ignore[attr-defined]
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for s in range(0, len(x) - batch_size + 1, batch_size):
            b = perm[s : s + batch_size]
            opt.zero_grad()
            task.loss(task.model, (x[b], y[b])).backward()
            opt.step()
    task.model.eval()
    return dict(task.evaluate(task.model, task.val_data))


def fit_batched(
    tasks: Sequence[Task], kind: TaskKind, epochs: int, batch_size: int = 32, lr: float = 1e-3,
    seeds: Sequence[int] | None = None,
) -> list[dict[str, float]]:
    """Train M independent copies of :func:`mlp` at once (one ``bmm`` per layer).

    Same result as :func:`fit_direct` on every task (same initial weights, same batch order
    from ``seeds``; Adam is elementwise, so stacking parameters keeps the runs independent),
    but one step serves M runs: a sweep of noise rates × seeds costs about one run's overhead.
    """
    seeds = list(seeds) if seeds is not None else [0] * len(tasks)
    layers = [[m for m in t.model.modules() if isinstance(m, nn.Linear)] for t in tasks]
    W = [torch.stack([ls[i].weight.detach().T for ls in layers]).requires_grad_() for i in range(3)]
    B = [torch.stack([ls[i].bias.detach()[None] for ls in layers]).requires_grad_() for i in range(3)]
    X = torch.stack([t.train_data.tensors[0] for t in tasks])  # type: ignore[attr-defined]
    Y = torch.stack([t.train_data.tensors[1] for t in tasks])  # type: ignore[attr-defined]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    opt = torch.optim.Adam([*W, *B], lr=lr)
    n, m_idx = X.shape[1], torch.arange(len(tasks))[:, None]

    def forward(x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.baddbmm(B[0], x, W[0]))
        h = torch.relu(torch.baddbmm(B[1], h, W[1]))
        return torch.baddbmm(B[2], h, W[2])

    for _ in range(epochs):
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens])
        for s in range(0, n - batch_size + 1, batch_size):
            b = perms[:, s : s + batch_size]
            out, y = forward(X[m_idx, b]), Y[m_idx, b]
            if kind == "multilabel":
                loss = F.binary_cross_entropy_with_logits(out, y.float(), reduction="none")
                per_model = loss.mean(dim=(1, 2))
            else:
                per_model = F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(1)
            opt.zero_grad()
            per_model.sum().backward()  # disjoint parameters: each run gets its own gradient
            opt.step()
    results = []
    for i, t in enumerate(tasks):
        for j, lin in enumerate(layers[i]):
            lin.weight.data.copy_(W[j][i].detach().T)
            lin.bias.data.copy_(B[j][i, 0].detach())
        t.model.eval()
        results.append(dict(t.evaluate(t.model, t.val_data)))
    return results


def knee(x: Sequence[float], y: Sequence[float]) -> float:
    """Knee of a falling curve: the point farthest above the chord (Kneedle, Satopää 2011).

    The curve is normalised to [0, 1] on both axes; returns the x of the largest
    (chord − curve) distance for a concave (plateau then drop) curve.
    """
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    xn = (xa - xa[0]) / (xa[-1] - xa[0])
    span = ya.max() - ya.min()
    yn = (ya - ya.min()) / (span if span > 0 else 1.0)
    chord = yn[0] + (yn[-1] - yn[0]) * xn
    return float(xa[int(np.argmax(yn - chord))])


def tolerated_noise(x: Sequence[float], drop: Sequence[float], max_drop: float = 0.05) -> float:
    """Largest noise rate (linear interpolation) before the F1 drop exceeds ``max_drop``."""
    xa, da = np.asarray(x, float), np.asarray(drop, float)
    above = np.flatnonzero(da > max_drop)
    if len(above) == 0:
        return float(xa[-1])
    i = int(above[0])
    if i == 0:
        return float(xa[0])
    return float(xa[i - 1] + (max_drop - da[i - 1]) * (xa[i] - xa[i - 1]) / (da[i] - da[i - 1]))
