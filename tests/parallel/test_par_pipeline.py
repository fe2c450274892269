import pytest
import torch
from torch import nn

from scidl.config import ConfigError
from scidl.parallel.blocks import resnet_sequential, unet_sequential
from scidl.parallel.pipeline import (
    PipelineError,
    balance,
    blocks_of,
    check_sizes,
    measure_block_costs,
    stage_costs,
    stage_find_unused,
)
from scidl.parallel.plan import ParallelDims


def test_layout_grid():
    dims = ParallelDims(world_size=6, pp=2)
    assert (dims.coordinate(4)["pp"], dims.coordinate(4)["dp"], dims.dp) == (0, 2, 3)
    assert dims.group_ranks(4, "pp") == [4, 5] and dims.group_ranks(4, "dp") == [0, 2, 4]
    with pytest.raises(ConfigError, match="does not divide"):
        ParallelDims(world_size=3, pp=2)


def test_balance_minimises_the_slowest_stage():
    costs = [1, 1, 1, 1, 4, 1, 1]
    sizes = balance(costs, 3)
    assert sum(sizes) == 7 and max(stage_costs(costs, sizes)) == 4
    assert balance([1.0] * 8, 4) == [2, 2, 2, 2]
    # brute force agreement on a random case
    import itertools
    c = [0.3, 2.0, 0.7, 1.1, 0.2, 0.9]
    best = min(max(stage_costs(c, [a, b, 6 - a - b])) for a, b in itertools.product(range(1, 5), repeat=2) if a + b < 6)
    assert max(stage_costs(c, balance(c, 3))) == pytest.approx(best)
    with pytest.raises(PipelineError, match="fewer than"):
        balance([1, 2], 3)


def test_unbalanced_explicit_split_is_rejected_with_a_balanced_suggestion():
    costs = [1.0, 1.0, 1.0, 1.0]
    check_sizes([2, 2], costs, 2, 1.5)
    with pytest.raises(PipelineError, match=r"unbalanced.*stage_sizes=\[2, 2\]"):
        check_sizes([3, 1], costs, 2, 1.2)
    with pytest.raises(PipelineError, match="summing"):
        check_sizes([1, 1], costs, 2, 1.5)


def test_model_that_cannot_be_split_gets_a_clear_error():
    class Net(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(PipelineError, match="nn.Sequential of blocks"):
        blocks_of(Net())


def test_unet_blocks_carry_skips_across_any_cut():
    torch.manual_seed(0)
    net = unet_sequential(in_ch=1, out_ch=1, width=4, levels=2)
    x = torch.randn(3, 1, 16, 16)
    full = net(x)
    blocks = list(net.children())
    for cut in range(1, len(blocks)):  # run the two halves separately: same output
        mid = nn.Sequential(*blocks[:cut])(x)
        out = nn.Sequential(*blocks[cut:])(mid)
        assert torch.allclose(out, full, atol=1e-6)
    assert full.shape == x.shape


def test_resnet_family_and_costs():
    net = resnet_sequential(depth=14, width=8)
    assert len(list(net.children())) == 2 + 6 * 2 // 2 + 0 or len(list(net.children())) == 8
    with pytest.raises(ValueError, match="6n\\+2"):
        resnet_sequential(depth=15)
    costs = measure_block_costs(list(net.children()), torch.randn(4, 1, 8, 8), repeats=1)
    assert len(costs) == 8 and all(c.time_s > 0 and c.activation_bytes > 0 for c in costs)
    assert costs[-1].param_bytes > 0


class _WithSpareHead(nn.Module):
    """A block with a parameter its forward never uses."""

    def __init__(self) -> None:
        super().__init__()
        self.used, self.spare = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def test_unused_parameters_are_found_per_block_and_decide_the_stage():
    frozen = nn.Linear(4, 4).requires_grad_(False)  # frozen is not unused
    blocks = [nn.Linear(4, 4), _WithSpareHead(), frozen, nn.Linear(4, 1)]
    costs = measure_block_costs(blocks, torch.randn(3, 4), repeats=1)
    assert [c.unused for c in costs] == [[], ["spare.weight", "spare.bias"], [], []]
    assert all(p.grad is None for b in blocks for p in b.parameters())  # blocks untouched
    assert stage_find_unused("auto", costs[:1]) is False  # the happy path: no search
    assert stage_find_unused("auto", costs[:2]) is True
    assert stage_find_unused(True, costs[:1]) is True and stage_find_unused(False, costs[:2]) is False
