"""Data filtering for large batches and collapsed (snapshot) ensembles."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from scidl.analysis.ensemble import SnapshotCollector, SnapshotEnsemble
from scidl.data.filtering import filter_by_scores, filter_dataset


def test_filter_by_scores_drops_the_requested_end():
    ds = TensorDataset(torch.arange(10.0))
    scores = torch.tensor([5.0, 1, 9, 3, 7, 0, 8, 2, 6, 4])
    easy = filter_by_scores(ds, scores, 0.3, "easy")
    assert easy.kept.tolist() == [0, 2, 3, 4, 6, 8, 9]  # scores 0, 1, 2 dropped
    hard = filter_by_scores(ds, scores, 0.3, "hard")
    assert hard.kept.tolist() == [0, 1, 3, 5, 7, 8, 9]  # scores 9, 8, 7 dropped
    assert len(hard.dataset) == 7 and hard.dataset[0][0] == 0.0
    with pytest.raises(ValueError):
        filter_by_scores(ds, scores, 1.0)


def test_warmup_loss_finds_mislabelled_samples():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=gen)
    y = (x[:, 0] + x[:, 1] > 0).long()
    flipped = torch.randperm(400, generator=gen)[:40]
    y[flipped] = 1 - y[flipped]
    ds = TensorDataset(x, y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    before = [p.clone() for p in model.parameters()]
    res = filter_dataset(
        model, ds, loss=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]),
        per_sample_loss=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1],
                                                                 reduction="none"),
        fraction=0.1, drop="hard", warmup_epochs=3, batch_size=32, lr=1e-2)
    removed = set(range(400)) - set(res.kept.tolist())
    assert len(removed) == 40
    assert len(removed & set(flipped.tolist())) >= 30  # chance level would be 4
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_snapshot_ensemble_averages_probabilities():
    a, b = nn.Linear(1, 2, bias=False), nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        a.weight.copy_(torch.tensor([[2.0], [0.0]]))
        b.weight.copy_(torch.tensor([[0.0], [1.0]]))
    col = SnapshotCollector(steps=[3, 6])
    for step, m in ((3, a), (5, b), (6, b)):
        col.on_step_end(types.SimpleNamespace(step=step, model=m), {})
    assert col.taken_at == [3, 6]
    ens = SnapshotEnsemble(a, col.snapshots, kind="classification")
    x = torch.tensor([[1.0]])
    expect = (torch.softmax(a(x), -1) + torch.softmax(b(x), -1)) / 2
    assert torch.allclose(ens(x).exp(), expect)
    reg = SnapshotEnsemble(a, col.snapshots, kind="regression")
    assert torch.allclose(reg(x), (a(x) + b(x)) / 2)


class _HasModuleChild(nn.Module):
    """A user model whose child happens to be called ``module`` (no wrapper)."""

    def __init__(self) -> None:
        super().__init__()
        self.module = nn.Linear(2, 2)
        self.head = nn.Linear(2, 1)


def test_snapshots_unwrap_ddp_but_not_a_child_called_module():
    """Before, the ensemble's own ``_unwrap`` took any ``.module`` attribute, so a model with
    a child of that name was snapshotted as the child only (and could not be reloaded)."""
    import torch.distributed as dist

    from scidl.runtime.ddp import DDPModule
    from scidl.runtime.dist import unwrap_model

    model = _HasModuleChild()
    assert unwrap_model(model) is model
    col = SnapshotCollector([1])
    col.take(model, 1)
    assert sorted(col.snapshots[0]) == sorted(model.state_dict())
    SnapshotEnsemble(model, col.snapshots)  # loads every snapshot
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        ddp = DDPModule(model)
        assert unwrap_model(ddp) is model and unwrap_model(nn.DataParallel(ddp)) is model
        col.take(ddp, 2)
        assert sorted(col.snapshots[1]) == sorted(model.state_dict())  # no "module." prefix
    finally:
        dist.destroy_process_group()
