"""The best model by the headline metric, best/final in the summary, early stopping on 2
processes, and --extend: what the LR schedule does after a resume with a larger budget."""

import math
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from scidl.commands.train import best_final_line
from scidl.config import load_config
from scidl.optim.schedules import lr_factor_fn
from scidl.runtime.dist import distributed_context
from scidl.runtime.seed import seed_everything
from scidl.testing import run_distributed
from scidl.train import checkpoint as ckpt
from scidl.train.best import BestTracker
from scidl.train.trainer import Trainer
from scidl.workloads import Task

QUIET = ["log.tensorboard=false", "log.progress=false"]


def _cfg(run_dir, *over):
    return load_config("admissions", overrides=[*QUIET, f"log.run_dir={run_dir}",
                                                "train.batch_size=8", *over])


def _scripted_task(values, higher_is_better=False):
    """Linear regression whose evaluation returns ``values`` in turn (then the last one)."""
    torch.manual_seed(0)
    x = torch.randn(64, 7)
    data = TensorDataset(x, x.sum(1, keepdim=True))
    calls = {"n": 0}

    def evaluate(model, val):
        v = values[min(calls["n"], len(values) - 1)]
        calls["n"] += 1
        return {"score": v}

    return Task(model=torch.nn.Linear(7, 1), train_data=data, val_data=data,
                loss=lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1]),
                evaluate=evaluate, headline="score", higher_is_better=higher_is_better)


class _Snapshots:
    """Callback: the model's weights after every step."""

    def __init__(self):
        self.at = {}

    def on_step_end(self, trainer, row):
        self.at[trainer.step] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _fit(cfg, task, callbacks=(), resume=False, extend=False):
    with distributed_context() as dctx:
        seed_everything(cfg.train.seed + 1 + dctx.rank)
        tr = Trainer(cfg, task, dctx, Path(cfg.log.run_dir), callbacks)
        if resume:
            tr.resume(extend=extend)
        summary = tr.fit()
    return tr, summary


# evaluations at steps 2, 4, 6, 8 and the final one (step 8 again)
VALUES = [2.0, 0.5, 3.0, 1.0, 1.0]


@pytest.mark.parametrize("higher, best_step, best_value", [(False, 4, 0.5), (True, 6, 3.0)])
def test_best_model_follows_the_metric_direction_and_survives_rotation(tmp_path, higher, best_step,
                                                                       best_value):
    cfg = _cfg(tmp_path / "run", "train.max_steps=8", "train.eval_every=2",
               "checkpoint.every_steps=2", "checkpoint.keep=1")
    snaps = _Snapshots()
    tr, summary = _fit(cfg, _scripted_task(VALUES, higher), [snaps])
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_00000008"]  # rotation ran
    best = ckpt.latest_best(root)
    assert best is not None and best.step == best_step and best.value == best_value
    assert best.metric == "score" and best.higher_is_better is higher
    assert ckpt.verify_checkpoint(best.path, (ckpt.BEST_MODEL,)) is None
    for k, v in best.load().items():  # the weights of the best step, not the last
        assert torch.equal(v, snaps.at[best_step][k])
    assert not torch.equal(best.load()["weight"], snaps.at[8]["weight"])
    assert [p.name for p in ckpt.list_best(root)] == [f"best_step_{best_step:08d}"]
    # the summary reports best and final
    assert summary["best"]["value"] == best_value and summary["best"]["step"] == best_step
    assert summary["final"] == {"metric": "score", "value": 1.0, "step": 8}
    assert summary["stopped_early"] is False
    assert best_final_line(summary) == (f"best: score {best_value:.4g} at step {best_step} · "
                                        "final: score 1 at step 8")


def test_resume_keeps_the_best_so_far(tmp_path):
    cfg = _cfg(tmp_path / "run", "train.max_steps=8", "train.eval_every=2", "checkpoint.every_steps=2")
    _fit(cfg, _scripted_task(VALUES))
    # resumed with a larger budget, every evaluation is worse than the best (0.5 at step 4)
    cfg2 = _cfg(tmp_path / "run", "train.max_steps=12", "train.eval_every=2", "checkpoint.every_steps=2")
    tr, summary = _fit(cfg2, _scripted_task([0.9, 0.8, 0.7]), resume=True)
    assert tr.step == 12
    assert summary["best"]["value"] == 0.5 and summary["best"]["step"] == 4
    best = ckpt.latest_best(tmp_path / "run" / "checkpoints")
    assert best is not None and best.step == 4


def test_resume_sets_aside_a_best_model_newer_than_the_checkpoint(tmp_path):
    root = tmp_path / "checkpoints"
    ckpt.save_best(root, 6, {"w": torch.ones(1)}, "score", 0.1, False)
    moved = ckpt.set_aside_after(root, 4)
    assert len(moved) == 1 and moved[0].name.startswith("unusable_best_step_00000006")
    assert ckpt.latest_best(root) is None


def test_best_tracker_min_delta_and_nan():
    t = BestTracker("mse", higher_is_better=False, patience=2, min_delta=0.1)
    assert t.update(1.0, 1) == (True, False)
    assert t.update(0.95, 2) == (True, False)  # a new best, but not by more than min_delta
    assert t.update(float("nan"), 3) == (False, True)  # second evaluation without a real gain
    assert t.value == 0.95 and t.step == 2
    t2 = BestTracker("acc", higher_is_better=True)
    t2.load_state_dict(t.state_dict())
    assert t2.value == 0.95 and t2.stale == 2


def _early_stop(rank, world, root):
    cfg = _cfg(Path(root) / "run", "train.max_steps=40", "train.eval_every=2",
               "train.early_stop_patience=2", "checkpoint.every_steps=4")
    # best at step 4 (0.5); steps 6 and 8 do not improve: stop at step 8
    tr, summary = _fit(cfg, _scripted_task([1.0, 0.5, 0.6, 0.7, 0.1]))
    return {"step": tr.step, "stopped": summary["stopped_early"], "at": summary["stopped_at_step"],
            "best": summary["best"], "reason": summary["stop_reason"]}


@pytest.mark.timeout(200)
def test_early_stopping_stops_every_rank_at_the_same_step(tmp_path):
    out = run_distributed(_early_stop, 2, str(tmp_path), timeout=180)
    assert [r["step"] for r in out] == [8, 8]
    assert all(r["stopped"] and r["at"] == 8 for r in out)
    assert out[0]["best"]["step"] == 4 and out[0]["best"]["value"] == 0.5
    assert "early_stop_patience=2" in out[0]["reason"]
    root = tmp_path / "run" / "checkpoints"
    assert ckpt.latest_good_checkpoint(root).step == 8  # the final checkpoint at the stop


def test_early_stopping_without_evaluations_is_a_config_error(tmp_path):
    from scidl.config import ConfigError

    cfg = _cfg(tmp_path / "run", "train.max_steps=4", "train.early_stop_patience=1")
    task = _scripted_task([1.0])
    task.val_data = None
    with pytest.raises(ConfigError, match="early_stop_patience"):
        _fit(cfg, task)


# ------------------------------------------------------------------------------ extend

SCHEDULE = ["optim.name=sgd", "optim.lr=0.1", "optim.schedule=cosine", "optim.min_lr_factor=0.1",
            "train.eval_every=0", "checkpoint.every_steps=4"]


def _lrs(tr):
    return [row["lr"] for row in tr.history]


@pytest.mark.parametrize("extend", [False, True])
def test_extend_stretches_the_schedule_and_plain_resume_keeps_it(tmp_path, extend):
    cfg = _cfg(tmp_path / "run", "train.max_steps=8", *SCHEDULE)
    _fit(cfg, _scripted_task([1.0]))
    cfg2 = _cfg(tmp_path / "run", "train.max_steps=16", *SCHEDULE)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        tr, _ = _fit(cfg2, _scripted_task([1.0]), resume=True, extend=extend)
    stretched = lr_factor_fn(cfg2.optim, 16)
    planned = lr_factor_fn(cfg2.optim, 8)
    want = [0.1 * (stretched if extend else planned)(s) for s in range(8, 16)]
    assert _lrs(tr) == pytest.approx(want, rel=1e-12)
    if extend:  # the LR of a 16-step run from step 8 on: back up to the middle of the cosine
        assert _lrs(tr)[0] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5))
        assert not any("not stretched" in str(w.message) for w in rec)
    else:  # the 8-step schedule has ended: the floor
        assert all(math.isclose(v, 0.01) for v in _lrs(tr))
        assert sum("not stretched" in str(w.message) for w in rec) == 1
    # a later resume continues the schedule the resumed run used
    cfg3 = _cfg(tmp_path / "run", "train.max_steps=16", *SCHEDULE)
    tr3, _ = _fit(cfg3, _scripted_task([1.0]), resume=True)
    assert tr3.schedule_total == (16 if extend else 8)
