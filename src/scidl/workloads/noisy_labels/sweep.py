"""Noise sweeps: many small runs trained at once, and the summaries of the F1-vs-noise curve."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from scidl.workloads.base import Task
from scidl.workloads.noisy_labels.data import TaskKind


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
    """Train M independent copies of the workload's MLP at once (one ``bmm`` per layer).

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
