"""Metrics destinations: the logger registry, CSV, user classes, and MLflow tracking.

Before, rows went only to ``metrics.jsonl`` and TensorBoard, hard-wired in one class;
there was no MLflow and no way to add a destination.
"""

from __future__ import annotations

import csv
import json

import pytest

import scidl
from scidl.config import ConfigError
from scidl.train.loggers import check_loggers, logger_class, logger_names
from scidl.train.loggers.csv import CsvLogger
from scidl.train.loggers.mlflow import metric_key, row_metrics, summary_metrics
from scidl.train.logging import MetricsLogger

ROWS = [{"step": 10, "epoch": 0, "loss": 0.5, "lr": 1e-3},
        {"step": 20, "epoch": 1, "loss": float("nan"), "lr": 1e-3, "eval/mse": 0.25}]


class Recorder:
    """A user's logger: what it was given."""

    seen: list = []

    def __init__(self, run_dir, cfg=None):
        self.run_dir = run_dir

    def log(self, row):
        Recorder.seen.append(("log", dict(row)))

    def close(self, summary=None):
        Recorder.seen.append(("close", summary))


def test_rows_reach_every_logger_cleaned_once_and_csv_has_every_column(tmp_path):
    from scidl.train.loggers.jsonl import JsonlLogger

    Recorder.seen = []
    log = MetricsLogger(tmp_path, loggers=[JsonlLogger(tmp_path), Recorder(tmp_path),
                                           CsvLogger(tmp_path)])
    for r in ROWS:
        log.log(r)
    log.close({"steps": 20})
    assert Recorder.seen[1] == ("log", {**ROWS[1], "loss": "nan"})  # JSON has no NaN
    assert Recorder.seen[-1] == ("close", {"steps": 20})
    table = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert list(table[0]) == ["step", "epoch", "loss", "lr", "eval/mse"]
    assert table[0]["eval/mse"] == "" and table[1]["eval/mse"] == "0.25"


def test_logger_names_resolve_to_classes_and_bad_ones_are_one_line():
    cfg = scidl.load_config("admissions", overrides=[
        "log.tensorboard=false", f"log.loggers=[csv,{__name__}:Recorder]"])
    assert logger_names(cfg) == ["jsonl", "csv", f"{__name__}:Recorder"]
    assert logger_class(f"{__name__}:Recorder") is Recorder
    check_loggers(cfg)
    bad = scidl.load_config("admissions", overrides=["log.loggers=[cvs]"])
    with pytest.raises(ConfigError, match="unknown log.loggers 'cvs' \\(did you mean csv"):
        check_loggers(bad)


def test_mlflow_without_the_package_is_one_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    cfg = scidl.load_config("admissions", overrides=["log.mlflow=true"])
    with pytest.raises(ConfigError, match=r"log.mlflow needs the mlflow package"):
        check_loggers(cfg)


def test_mlflow_names_and_summary_numbers():
    assert metric_key("eval/rel_l2") == "eval/rel_l2" and metric_key("a:b(c)") == "a_b_c_"
    assert row_metrics(ROWS[1])[0] == ("loss", pytest.approx(float("nan"), nan_ok=True), 20)
    got = summary_metrics({"steps": 30, "stopped_early": False, "workload": "x",
                           "best": {"metric": "mse", "value": 0.1, "step": 20},
                           "final": {"metric": "mse", "value": 0.2, "step": 30}})
    assert got == {"summary/steps": 30.0, "summary/best_mse": 0.1, "summary/final_mse": 0.2}


@pytest.mark.timeout(300)
def test_a_run_is_tracked_in_mlflow_and_resume_continues_it(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "runs" / "r"
    over = ["train.max_steps=12", "train.log_every=4", "log.tensorboard=false", "log.progress=false",
            f"log.root={tmp_path / 'runs'}", f"log.run_dir={run_dir}", "log.mlflow=true",
            "checkpoint.every_steps=8"]
    result = scidl.run(scidl.load_config("admissions", overrides=over))
    state = json.loads((run_dir / "mlflow.json").read_text())
    assert state["tracking_uri"] == f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve()}"
    client = MlflowClient(state["tracking_uri"])
    run = client.get_run(state["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "r"
    assert run.data.params["train.max_steps"] == "12"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [(m.step, m.value) for m in client.get_metric_history(state["run_id"], "loss")]
    assert sorted(logged) == [(r["step"], pytest.approx(r["loss"])) for r in rows if "loss" in r]
    headline = result.summary["headline"]
    assert run.data.metrics[f"summary/final_{headline}"] == pytest.approx(result.summary["final"]["value"])
    arts = {a.path for a in client.list_artifacts(state["run_id"])}
    assert {"config.yaml", "summary.json", "comm.json"} <= arts

    more = scidl.load_config("admissions", overrides=[*over, "train.max_steps=16"])
    scidl.run(more, resume=True)
    again = json.loads((run_dir / "mlflow.json").read_text())
    assert again["run_id"] == state["run_id"]  # the same MLflow run goes on
    steps = [m.step for m in client.get_metric_history(state["run_id"], "loss")]
    assert max(steps) == 16
