"""Models and failures real users bring, under every comm strategy (2 gloo processes).

* a NaN gradient on one rank: no hang, the step is skipped on every rank, training goes
  on with finite losses and no later skips (strategy state reset);
* a run that keeps skipping fails with one message (``train.max_skipped_fraction``);
* a model with a parameter ``forward`` never uses (``find_unused_parameters=auto``);
* ``nn.Embedding(sparse=True)`` with Adam and SGD under ``dense`` and ``topk``;
* a task whose headline metric is called ``loss``, with the progress bar on.

One process group runs all cases (spawning costs seconds; each case is a few steps).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import TensorDataset

from scidl.comm.registry import STRATEGIES as STRATEGY_REGISTRY
from scidl.config import load_config
from scidl.runtime.dist import distributed_context
from scidl.runtime.seed import seed_everything
from scidl.testing import run_distributed
from scidl.train.skips import TrainingDiverged
from scidl.train.trainer import Trainer
from scidl.workloads import Task

# every registered strategy: one added later is covered without editing this list
STRATEGIES = sorted(STRATEGY_REGISTRY.names())
# with a parameter forward never uses: every strategy too (torch_powersgd hung here, in
# about one run of three under load, before its hook was made to finish inside DDP's)
UNUSED_STRATEGIES = STRATEGIES
QUIET = ["log.tensorboard=false", "log.progress=false", "checkpoint.final=false",
         "train.batch_size=8"]


def _cfg(run_dir: Path, *over: str):
    return load_config("admissions", overrides=[*QUIET, f"log.run_dir={run_dir}", *over])


def _optim(name: str) -> list[str]:
    """A strategy that applies the optimizer's momentum or Adam itself runs with plain
    SGD (as ``benchmarks/comm_tta.py`` runs it)."""
    from scidl.comm import get_strategy_class

    owns = get_strategy_class(name).owns_optimizer_state
    return [] if owns is None else ["optim.name=sgd", "optim.momentum=0"]


def _fit(cfg, task, callbacks=()):
    with distributed_context() as dctx:
        seed_everything(cfg.train.seed + 1 + dctx.rank)
        tr = Trainer(cfg, task, dctx, Path(cfg.log.run_dir), callbacks)
        tr.fit()
        return tr


def _weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _same_on_all_ranks(t: torch.Tensor) -> bool:
    both = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(both, t)
    return all(torch.equal(both[0], x) for x in both)


def _data(n: int = 128, d: int = 8) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True))


def _mse(model, batch):
    return nn.functional.mse_loss(model(batch[0]), batch[1])


# ----------------------------------------------------------------- non-finite gradients

def _nan_task(nan_call: int | None, always: bool = False) -> Task:
    """A 641-parameter MLP (topk goes sparse at density 0.01); rank 1's gradient (not its
    loss) is NaN at its ``nan_call``-th loss evaluation; ``always``: every loss is NaN."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 1))
    calls = {"n": 0}

    def loss(m, batch):
        calls["n"] += 1
        out = m(batch[0])
        if dist.get_rank() == 1 and calls["n"] == nan_call:
            out.register_hook(lambda g: g * float("nan"))
        value = nn.functional.mse_loss(out, batch[1])
        return value * float("nan") if always else value

    return Task(model=model, train_data=_data(), loss=loss, evaluate=lambda m, d: {})


def check_nan_one_rank(root: Path) -> dict:
    out = {}
    for name in STRATEGIES:
        cfg = _cfg(root / f"nan-{name}", "train.max_steps=12", f"comm.strategy={name}",
                   "optim.lr=0.01", *_optim(name))
        tr = _fit(cfg, _nan_task(nan_call=3))
        w = _weights(tr.model)
        out[name] = {"skipped": [r["skipped"] for r in tr.history],
                     "losses": [r["loss"] for r in tr.history],
                     "finite": bool(torch.isfinite(w).all()), "same": _same_on_all_ranks(w)}
    return out


def check_all_nan_fails(root: Path) -> dict:
    out = {}
    for frac, steps in (("0.1", 10), ("1.0", 3)):
        cfg = _cfg(root / f"allnan-{frac}", f"train.max_steps={steps}",
                   f"train.max_skipped_fraction={frac}")
        try:
            tr = _fit(cfg, _nan_task(None, always=True))
            out[frac] = ("finished", tr.step)
        except TrainingDiverged as e:
            out[frac] = ("failed", str(e))
    return out


# ------------------------------------------------------------------ unused parameters

class _WithUnused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.head_unused = nn.Linear(16, 16)  # e.g. a head another task would use
        self.b = nn.Linear(16, 1)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def _unused_task() -> Task:
    torch.manual_seed(0)
    return Task(model=_WithUnused(), train_data=_data(), loss=_mse, evaluate=lambda m, d: {})


def check_unused(root: Path) -> dict:
    out = {}
    for name in UNUSED_STRATEGIES:
        cfg = _cfg(root / f"unused-{name}", "train.max_steps=4", f"comm.strategy={name}",
                   *_optim(name))
        tr = _fit(cfg, _unused_task())
        w = _weights(tr.model)
        out[name] = {"finite": bool(torch.isfinite(w).all()), "same": _same_on_all_ranks(w),
                     "w": w, "unused_grad": tr.model.head_unused.weight.grad is None,
                     "skipped": tr.skipped_steps}
    # auto redoes the first step with the search on: identical to find_unused=true
    cfg = _cfg(root / "unused-true", "train.max_steps=4", "parallel.find_unused_parameters=true")
    out["explicit_true"] = _weights(_fit(cfg, _unused_task()).model)
    return out


# ------------------------------------------------------------------ sparse embeddings

class _Bag(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(2000, 32, sparse=True)
        self.out = nn.Linear(32, 1)

    def forward(self, ids):
        return self.out(self.emb(ids).mean(1))


def _sparse_task() -> Task:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 2000, (128, 6), generator=g)
    return Task(model=_Bag(), train_data=TensorDataset(ids, torch.randn(128, 1, generator=g)),
                loss=_mse, evaluate=lambda m, d: {})


class _GradLayout:
    def __init__(self) -> None:
        self.layouts: list[bool] = []

    def on_step_end(self, trainer, row):
        self.layouts.append(bool(trainer.model.emb.weight.grad.is_sparse))


def check_sparse(root: Path) -> dict:
    out = {}
    for strategy in ("dense", "topk"):
        for opt in ("adam", "sgd"):
            cfg = _cfg(root / f"sparse-{strategy}-{opt}", "train.max_steps=4",
                       f"comm.strategy={strategy}", f"optim.name={opt}", "optim.lr=0.05")
            task = _sparse_task()
            before = task.model.emb.weight.detach().clone()
            spy = _GradLayout()
            tr = _fit(cfg, task, [spy])
            w = _weights(tr.model)
            out[(strategy, opt)] = {
                "finite": bool(torch.isfinite(w).all()), "same": _same_on_all_ranks(w),
                "moved": float((tr.model.emb.weight.detach() - before).abs().max()),
                "sparse_grad": spy.layouts, "skipped": tr.skipped_steps,
            }
    return out


# ------------------------------------------------------------------ headline "loss"

def _loss_headline_task() -> Task:
    torch.manual_seed(0)
    data = _data()

    def evaluate(m, d):
        return {"loss": float(_mse(m, d.tensors))}

    return Task(model=nn.Linear(8, 1), train_data=data, loss=_mse, evaluate=evaluate,
                val_data=data, headline="loss")


def check_loss_headline(root: Path) -> dict:
    sys.stdout.isatty = lambda: True  # the bar only draws on a terminal
    cfg = _cfg(root / "headline", "train.max_steps=3", "train.eval_every=1", "log.progress=true")
    tr = _fit(cfg, _loss_headline_task())
    return {"steps": tr.step, "eval": tr.last_eval}


def _all(rank: int, world: int, root: str) -> dict:
    root = Path(root)
    return {"nan": check_nan_one_rank(root), "allnan": check_all_nan_fails(root),
            "unused": check_unused(root), "sparse": check_sparse(root),
            "headline": check_loss_headline(root)}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    # bounded: a strategy that hangs on a NaN fails here instead of waiting for gloo
    return run_distributed(_all, 2, str(tmp_path_factory.mktemp("models")), timeout=240)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", STRATEGIES)
def test_nan_on_one_rank_is_skipped_everywhere_and_training_recovers(results, name):
    for r in results:
        got = r["nan"][name]
        assert got["skipped"] == [0, 0, 1] + [0] * 9, (name, got["skipped"])
        later = got["losses"][3:]
        assert all(torch.isfinite(torch.tensor(later))), (name, later)
        assert later[-1] < got["losses"][0], (name, got["losses"])  # still learning
        assert got["finite"] and got["same"], name


@pytest.mark.timeout(300)
def test_a_run_that_keeps_skipping_fails_with_one_line(results):
    for r in results:
        kind, msg = r["allnan"]["0.1"]
        assert kind == "failed" and "train.max_skipped_fraction=0.1" in msg and "\n" not in msg
        assert "2 of 2 steps so far" in msg  # stops at the 2nd skip of a 10-step budget
        kind, msg = r["allnan"]["1.0"]
        assert kind == "failed" and "every one of its 3 steps" in msg


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", UNUSED_STRATEGIES)
def test_model_with_unused_parameter_trains(results, name):
    for r in results:
        got = r["unused"][name]
        assert got["finite"] and got["same"] and got["unused_grad"] and got["skipped"] == 0
    if name == "dense":
        assert torch.equal(results[0]["unused"]["dense"]["w"], results[0]["unused"]["explicit_true"])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("strategy", ["dense", "topk"])
@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_sparse_embedding_trains(results, strategy, opt):
    for r in results:
        got = r["sparse"][(strategy, opt)]
        assert got["finite"] and got["same"] and got["moved"] > 0 and got["skipped"] == 0
        # dense + SGD: torch's sparse path end to end; otherwise a dense gradient
        want_sparse = strategy == "dense" and opt == "sgd"
        assert got["sparse_grad"] == [want_sparse] * 4, (strategy, opt, got["sparse_grad"])


@pytest.mark.timeout(300)
def test_headline_named_loss_with_progress_bar(results):
    assert results[0]["headline"]["steps"] == 3
    assert "loss" in results[0]["headline"]["eval"]
