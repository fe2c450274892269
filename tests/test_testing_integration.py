import pytest
import torch
import torch.distributed as dist

from scidl.testing import run_distributed


def _sum_ranks(rank, world):
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    return t.item()


def _boom(rank, world):
    raise ValueError("boom")


@pytest.mark.timeout(120)
def test_run_distributed_allreduce():
    assert run_distributed(_sum_ranks, 2) == [3.0, 3.0]


@pytest.mark.timeout(120)
def test_run_distributed_reports_failure():
    with pytest.raises(RuntimeError, match="boom"):
        run_distributed(_boom, 2)
