"""TensorBoard tags are grouped (train/, comm/, eval/) and the config is logged as hparams.

Before, every ``metrics.jsonl`` key went to TensorBoard as its own top-level tag (``loss``,
``comm_bytes_sent``, ``step_time_s`` side by side with ``eval/rel_l2``) and no
hyperparameters were logged. ``metrics.jsonl`` keeps its flat keys.
"""

from __future__ import annotations

import json

import pytest
import yaml

from scidl.train.logging import MetricsLogger, flat_hparams, tb_tag


def test_tb_tag_groups_keys():
    assert tb_tag("loss") == "train/loss"
    assert tb_tag("lr") == "train/lr"
    assert tb_tag("samples_per_s") == "train/samples_per_s"
    assert tb_tag("comm_bytes_sent") == "comm/bytes_sent"
    assert tb_tag("comm_s") == "comm/s"
    assert tb_tag("eval/rel_l2") == "eval/rel_l2"


def test_flat_hparams_keeps_scalars():
    flat = flat_hparams({"optim": {"lr": 0.01, "name": "adam"}, "train": {"seed": 0, "amp": False},
                         "comm": {"density": None, "ranks": [1, 2]}})
    assert flat == {"optim.lr": 0.01, "optim.name": "adam", "train.seed": 0, "train.amp": False,
                    "comm.density": "None", "comm.ranks": "[1, 2]"}


def test_logger_writes_grouped_tags_and_hparams(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"workload": "toy", "optim": {"name": "adam", "lr": 0.001}, "train": {"batch_size": 32}}))
    log = MetricsLogger(tmp_path, tensorboard=True)
    rows = [{"step": 1, "epoch": 0, "loss": 0.5, "lr": 0.001, "comm_bytes_sent": 100,
             "comm_s": 0.002},
            {"step": 2, "epoch": 0, "eval/rel_l2": 0.1}]
    for r in rows:
        log.log(r)
    log.close()
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == rows

    acc = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert tags == {"train/loss", "train/lr", "comm/bytes_sent", "comm/s", "eval/rel_l2"}
    hp = acc.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hp)
    start = hp["_hparams_/session_start_info"]
    assert b"optim.lr" in start and b"train.batch_size" in start
    assert b"eval/rel_l2" in hp["_hparams_/experiment"]
