"""cgan_per_label on 2 gloo processes: labels spread over ranks, and one label per DDP group."""

from __future__ import annotations

import pytest

from scidl.testing import run_distributed
from scidl.workloads.cgan_per_label.dist import PerLabelRunConfig, per_label_worker
from scidl.workloads.cgan_per_label.workload import CGANConfig


def _two_layouts(rank: int, world: int) -> tuple[dict, dict]:
    small = dict(z_dim=4, hidden=16)
    spread = PerLabelRunConfig(model=CGANConfig(labels=[0, 1, 2], **small), steps=3, batch_size=8)
    shared = PerLabelRunConfig(model=CGANConfig(labels=[5], **small), steps=3, batch_size=8)
    return (per_label_worker(rank, world, spread.model_dump(mode="json")),
            per_label_worker(rank, world, shared.model_dump(mode="json")))


@pytest.mark.timeout(240)
def test_per_label_pairs_on_two_ranks():
    (a0, b0), (a1, b1) = run_distributed(_two_layouts, 2, timeout=200)
    # labels spread round-robin; every rank trains only its own pairs
    assert a0["labels"] == [0, 2] and a1["labels"] == [1]
    assert sorted(a0["generators"]) == [0, 1, 2] and a1["generators"] is None
    assert a0["checksums"][0] != a0["checksums"][2]  # independently initialised and trained
    # one label on two ranks: DDP over the label's process group keeps the replicas equal
    assert b0["labels"] == b1["labels"] == [5]
    assert b0["checksums"][5] == pytest.approx(b1["checksums"][5], rel=1e-6)
    assert sorted(b0["generators"]) == [5]
