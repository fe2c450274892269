"""The real objective: trials run `scidl.run` on a workload; best.yaml reruns with `scidl train`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from scidl.cli import main


@pytest.mark.timeout(240)
def test_search_cli_trains_admissions_and_best_yaml_reruns(tmp_path, capsys):
    out = tmp_path / "search"
    code = main([
        "search", "admissions", "train.epochs=2", "log.tensorboard=false", "--strategy", "random",
        "--trials", "2", "--out", str(out), "--metric", "r2", "--quiet",
    ])
    assert code == 0
    assert "best: trial" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    best = summary["best"]
    run_dir = Path(best["run_dir"])
    assert run_dir.parent == out / "trials"  # each trial is a normal run folder
    run_summary = json.loads((run_dir / "summary.json").read_text())
    assert run_summary["final_eval"]["r2"] == pytest.approx(best["metric"])
    cfg = yaml.safe_load((out / "best.yaml").read_text())
    hidden = [best["params"]["width"]] * best["params"]["depth"]
    assert cfg["task"]["hidden"] == hidden and cfg["optim"]["lr"] == pytest.approx(best["params"]["lr"])
    assert best["n_params"] > 0 and best["latency_ms"] > 0
    # Rerun the best config through the normal CLI: same data, seed and config -> same score.
    rerun = tmp_path / "rerun"
    assert main(["train", "--config", str(out / "best.yaml"), "--run-dir", str(rerun), "--quiet"]) == 0
    again = json.loads((rerun / "summary.json").read_text())["final_eval"]["r2"]
    assert again == pytest.approx(best["metric"], abs=1e-5)
