"""Checkpoints through torch.distributed.checkpoint: bit-exact same-size resume (also when
written in the background) and resharding resume 4 -> 2 processes, FSDP <-> DDP (gloo). The runs are fsdp_runs.py's, shared with
the parity tests (fixtures in tests/conftest.py)."""

import pytest
from fsdp_runs import ckpt_cfg as _cfg
from fsdp_runs import ckpt_task, diff

from scidl.config import ConfigError
from scidl.train import checkpoint as ck
from scidl.train.preflight import _check_checkpoint, check_resume_world


@pytest.mark.timeout(600)  # the first user starts the shared groups (conftest.py)
def test_fsdp_resume_same_size_is_bit_exact_sync_and_async(fsdp_two):
    root, ranks = fsdp_two
    for r in ranks:
        for name, res in r["same"].items():
            # the background write of step 4 was still pending when step 5 crashed: lost
            at = 4 if name == "sync" else 2
            assert res == {"diff": 0.0, "resumed_at": at, "steps": 6}, (name, res)
    good = ck.latest_good_checkpoint(root / "same" / "async_full" / "checkpoints",
                                     required=ck.TRAINER_FILES)
    assert good.step == 6  # the final background write is published before the run ends
    names = set(ck.json.loads((good.path / ck.MANIFEST).read_text())["files"])
    assert any(n.startswith("dcp/__1_") for n in names) and "dcp/.metadata" in names
    assert good.load()["model"] is None and good.load()["format"] == "dcp"
    whole = ck.model_state(good)  # one process, no group: every shard assembled (scidl infer)
    assert {k: tuple(v.shape) for k, v in whole.items()} == {
        k: tuple(v.shape) for k, v in ckpt_task().model.state_dict().items()}


@pytest.mark.timeout(600)
def test_resume_on_another_process_count_and_layout_continues_from_the_same_weights(
        fsdp_four, fsdp_two):
    # saved on 4 ranks (fsdp_runs.four_ranks), resumed on 2 (fsdp_runs.CASES)
    fsdp4, ddp4 = fsdp_four[1][0]["fsdp4"], fsdp_four[1][0]["ddp4"]
    out = fsdp_two[1][0]["resumed"]
    assert sorted(out) == sorted(["fsdp_to_fsdp", "fsdp_to_ddp", "ddp_to_fsdp", "ddp_to_ddp"])
    for name, res in out.items():
        want = ddp4 if name.startswith("ddp") else fsdp4
        assert res["step"] == 4 and res["end"] == 6, name
        assert diff(want, res["loaded"]) == 0.0, name  # weights and Adam moments, exactly
        assert res["micro"] == 6  # same global batch: the epoch position carries over


def test_world_change_and_format_checks(tmp_path):
    class Good:
        def __init__(self, shared):
            self.path, self.shared = tmp_path, shared

        def load(self, name):
            return self.shared

    prog = {"world_size": 4}
    check_resume_world([Good({"progress": prog, "format": "dcp", "model": None})], 2)
    check_resume_world([Good({"progress": prog, "format": "torch", "model": {"w": 1}})], 2)
    with pytest.raises(ConfigError, match="resume with --nproc 4"):
        check_resume_world([Good({"progress": prog, "format": "torch", "model": None})], 2)
    with pytest.raises(ConfigError, match="resume with --nproc 4"):
        check_resume_world([Good({"progress": prog, "format": "dcp", "model": None})], 2, 2)
    with pytest.raises(ConfigError, match="checkpoint.async_save needs checkpoint.format=dcp"):
        _check_checkpoint(_cfg(tmp_path, 2, "checkpoint.async_save=true"))
    with pytest.raises(ConfigError, match="checkpoint.format=torch does not apply"):
        _check_checkpoint(_cfg(tmp_path, 2, "checkpoint.format=torch", "parallel.shard=full"))
    with pytest.raises(ConfigError, match="checkpoint.format=dcp does not apply"):
        _check_checkpoint(_cfg(tmp_path, 2, "checkpoint.format=dcp", "parallel.pipeline_stages=2"))
