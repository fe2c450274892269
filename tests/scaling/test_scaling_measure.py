"""Scaling-point bookkeeping without launching processes."""

from __future__ import annotations

import json

import pytest

from scidl.config import RunConfig
from scidl.scaling.measure import (
    _median_point,
    add_efficiency,
    comm_spec,
    measure_point,
    point_config,
)


def test_point_config_weak_and_strong(tmp_path):
    cfg = RunConfig.model_validate({"workload": "digits", "train": {"batch_size": 32}})
    weak = point_config(cfg, 4, "weak", 32, tmp_path)
    assert weak.dist.nproc == 4 and weak.train.batch_size == 32
    assert weak.train.global_batch_size is None and weak.train.log_every == 1
    assert weak.dist.threads_per_proc == 1 and weak.log.run_dir == str(tmp_path)
    strong = point_config(cfg, 4, "strong", 32, tmp_path)
    assert strong.train.global_batch_size == 32
    with pytest.raises(ValueError, match="divisible"):
        point_config(cfg, 3, "strong", 32, tmp_path)


def test_measure_point_and_efficiency(tmp_path):
    rows = [{"step": 1, "step_time_s": 9.0, "comm_s": 9.0, "comm_exposed_s": 9.0}]
    rows += [{"step": i, "step_time_s": 0.2, "comm_s": 0.08, "comm_exposed_s": 0.05,
              "comm_bytes_sent": 100} for i in range(2, 8)]
    rows.append({"step": 7, "eval/accuracy": 0.5})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pt = measure_point(tmp_path, {"world_size": 2, "global_batch_size": 64,
                                  "batch_size_per_rank": 32})
    assert pt["step_s"] == 0.2 and pt["exposed_comm_s"] == 0.05
    assert pt["compute_s"] == pytest.approx(0.15)
    assert pt["samples_per_s"] == pytest.approx(320)
    assert pt["bytes_sent_per_step"] == 100 and pt["steps"] == 6
    base = {"ranks": 1, "step_s": 0.1}
    weak = [dict(base), {"ranks": 2, "step_s": 0.2}]
    add_efficiency(weak, "weak")
    assert weak[1]["efficiency"] == pytest.approx(0.5)
    strong = [dict(base), {"ranks": 2, "step_s": 0.1}]
    add_efficiency(strong, "strong")
    assert strong[1]["efficiency"] == pytest.approx(0.5)


def test_median_of_repeats_and_comm_spec():
    reps = [{"step_s": t, "run_dir": str(t)} for t in (0.3, 0.1, 0.2)]
    pt = _median_point(reps)
    assert pt["step_s"] == 0.2 and pt["run_dir"] == "0.2"
    assert (pt["step_s_min"], pt["step_s_max"], pt["repeats"]) == (0.1, 0.3, 3)
    cfg = RunConfig.model_validate({"comm": {"strategy": "topk", "density": 0.05}})
    assert comm_spec(cfg) == "topk:0.05"
    assert comm_spec(RunConfig()) == "dense"
