"""Each rank writes its own checkpoint part; no rank receives another rank's state (gloo, 2 processes)."""

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from scidl.config import load_config
from scidl.runtime.dist import distributed_context
from scidl.runtime.seed import seed_everything
from scidl.testing import run_distributed
from scidl.train import checkpoint as ck
from scidl.train.api import build_task
from scidl.train.trainer import Trainer
from scidl.workloads import BuildContext


def _no_gathering(*args, **kwargs):
    raise AssertionError("checkpoint state must not be all-gathered")


def _train_and_save(rank, world, root):
    """3 top-k steps with error feedback, a checkpoint at the end; all_gather_object forbidden."""
    dist_all_gather_object = dist.all_gather_object
    dist.all_gather_object = _no_gathering
    try:
        cfg = load_config("admissions", overrides=[
            "log.tensorboard=false", "log.progress=false", "train.max_steps=3", "train.batch_size=16",
            "comm.strategy=topk", "comm.density=0.1", "comm.warmup_steps=0", f"log.run_dir={root}"])
        with distributed_context() as dctx:
            task = build_task(cfg, BuildContext(seed=cfg.train.seed), None)
            seed_everything(cfg.train.seed + 1 + dctx.rank)
            tr = Trainer(cfg, task, dctx, Path(root))
            tr.fit()  # the final checkpoint is the last thing that draws or changes state
            return {"torch_rng": torch.get_rng_state(), "strategy": tr.strategy.state_dict()}
    finally:
        dist.all_gather_object = dist_all_gather_object


@pytest.mark.timeout(120)
def test_each_rank_writes_only_its_own_rng_and_strategy_state(tmp_path):
    out = run_distributed(_train_and_save, 2, str(tmp_path), timeout=110)
    good = ck.latest_good_checkpoint(tmp_path / "checkpoints", required=ck.TRAINER_FILES)
    assert good is not None and good.step == 3
    assert sorted(p.name for p in good.path.iterdir()) == [
        "manifest.json", "rank0.pt", "rank1.pt", "state.pt"]
    shared = good.load("state.pt")
    assert "rng" not in shared and "strategy" not in shared and shared["model"] is not None
    parts = [good.load(f"rank{r}.pt") for r in range(2)]
    for part, mine in zip(parts, out, strict=True):
        assert sorted(part) == ["rng", "strategy"]  # nothing of the other rank
        assert torch.equal(part["rng"]["torch"], mine["torch_rng"])
        res, expected = part["strategy"]["residuals"], mine["strategy"]["residuals"]
        assert res.keys() == expected.keys() and all(torch.equal(res[k], expected[k]) for k in res)
    # the ranks' states differ, so the comparison above tells them apart
    assert not torch.equal(parts[0]["rng"]["torch"], parts[1]["rng"]["torch"])
    r0, r1 = parts[0]["strategy"]["residuals"], parts[1]["strategy"]["residuals"]
    assert r0 and any(not torch.equal(r0[k], r1[k]) for k in r0)


def test_manifest_announcing_a_rank_part_it_does_not_list_is_unusable(tmp_path):
    import json

    path = ck.save_checkpoint(tmp_path, 1, {"state.pt": {}, "rank0.pt": {}})
    manifest = json.loads((path / ck.MANIFEST).read_text())
    manifest["ranks"] = 2
    (path / ck.MANIFEST).write_text(json.dumps(manifest))
    assert "does not list rank1.pt" in ck.verify_checkpoint(path, ck.TRAINER_FILES)
