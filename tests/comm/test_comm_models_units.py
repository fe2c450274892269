"""Pure pieces behind the model/failure fixes: skip rule, progress fields, sparse grads."""

import pytest
import torch
from torch import nn

from scidl.comm.sparse_grads import densify, densify_grads, optimizer_takes_sparse, sparse_modules
from scidl.config import ConfigError, load_config
from scidl.train.progress import Progress, progress_fields
from scidl.train.skips import TrainingDiverged, check_skipped


def test_skip_rule():
    assert check_skipped(1, 20, 20, 0.1) is None  # 5 % of the budget
    assert check_skipped(2, 10, 20, 0.1) is None  # exactly 10 %: allowed
    msg = check_skipped(3, 10, 20, 0.1)  # > 10 % of the budget: fail now
    assert msg and "train.max_skipped_fraction=0.1" in msg and "3 of 10" in msg
    assert "every one of its 5 steps" in check_skipped(5, 5, 5, 1.0)  # all skipped
    assert check_skipped(4, 4, 5, 1.0) is None  # not at the end yet
    assert issubclass(TrainingDiverged, ConfigError)  # the CLI prints it as one line


def test_max_skipped_fraction_and_find_unused_config():
    cfg = load_config("admissions", overrides=["parallel.find_unused_parameters=true"])
    assert cfg.train.max_skipped_fraction == 0.1
    assert cfg.parallel.find_unused_parameters is True
    assert load_config("admissions").parallel.find_unused_parameters == "auto"
    with pytest.raises(ConfigError, match="find_unused_parameters"):
        load_config("admissions", overrides=["parallel.find_unused_parameters=sometimes"])
    with pytest.raises(ConfigError, match="max_skipped_fraction"):
        load_config("admissions", overrides=["train.max_skipped_fraction=2"])


def test_progress_fields_with_headline_named_loss():
    row = {"loss": 0.5, "eval/loss": 0.25, "eval/acc": 0.9}
    assert progress_fields(row, "loss") == {"loss": 0.5, "eval_loss": 0.25}
    assert progress_fields(row, "acc") == {"loss": 0.5, "acc": 0.9}
    assert progress_fields({"loss": 1.0}, "acc") == {"loss": 1.0}
    Progress(3, enabled=False).update(1, progress_fields(row, "loss"))  # no TypeError


def test_densify_sums_duplicate_rows_into_the_buffer():
    emb = nn.Embedding(50, 4, sparse=True)
    emb(torch.tensor([[1, 2, 2, 7], [7, 7, 0, 1]])).pow(2).sum().backward()
    g = emb.weight.grad
    assert g.is_sparse and not g.is_coalesced()
    buf = torch.full((50, 4), 9.0)
    out = densify(g, buf)
    assert out is buf and torch.allclose(out, g.to_dense())
    model = nn.Sequential(emb, nn.Linear(4, 1))
    assert sparse_modules(model) == [emb]
    densify_grads(model.parameters())
    assert not emb.weight.grad.is_sparse


def test_which_optimizers_take_sparse_gradients():
    p = [nn.Parameter(torch.zeros(2))]
    assert optimizer_takes_sparse(torch.optim.SGD(p, lr=0.1, momentum=0.9))
    assert not optimizer_takes_sparse(torch.optim.SGD(p, lr=0.1, weight_decay=1e-4))
    assert not optimizer_takes_sparse(torch.optim.SGD(p, lr=0.1), clip=1.0)
    assert not optimizer_takes_sparse(torch.optim.Adam(p))
