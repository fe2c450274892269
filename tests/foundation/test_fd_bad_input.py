"""Bad input ends as one line (exit 2, no traceback, nothing left behind); runs are never
written into by anything but --resume.

The malformed-input table itself lives in ``benchmarks/malformed_inputs.py`` (the same
table renders docs/reliability.md); every case runs here. Most fail at validation inside
this process; the few raised in worker processes run ``python -m scidl``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import pytest

import scidl
from scidl.cli import main
from scidl.config import ConfigError, load_config
from scidl.runtime import worker_errors as we
from scidl.train import api, preflight, rundir

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "malformed_inputs.py"
_spec = importlib.util.spec_from_file_location("malformed_inputs", _PATH)
table = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("malformed_inputs", table)
_spec.loader.exec_module(table)

FAST = ["-q", "log.tensorboard=true", "train.max_steps=2"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return table.make_finished_run(tmp_path_factory.mktemp("shared"))


def test_table_has_at_least_60_cases_with_unique_ids():
    ids = [c.id for c in table.CASES]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)
    assert sum(c.subprocess for c in table.CASES) <= 3  # keep the table fast


@pytest.mark.timeout(400)
@pytest.mark.parametrize("case", table.CASES, ids=[c.id for c in table.CASES])
def test_malformed_input_is_one_line_exit_2(case, tmp_path, finished_run):
    reason = table.skip_reason(case)
    if reason:
        pytest.skip(reason)
    result = table.run_case(case, tmp_path, finished_run)
    assert table.verdict(result) == [], result


def test_render_lists_counts_and_every_case():
    data = {"total": 2, "passed": 1, "tracebacks": 0, "silently_accepted": 0,
            "leftover_folders": 0, "in_worker_processes": 1, "skipped": [], "cases": [
                {"argv": "train a|b", "files": {"c.yaml": ""}, "env": {"X": "1"},
                 "message": "scidl: error: bad 'k'", "problems": []},
                {"argv": "train x", "files": {}, "env": {}, "message": "m", "problems": ["exit 0"]}]}
    md = table.render(data)
    assert "tracebacks: 0; silently accepted: 0" in md and "(left out below)" in md
    assert "| 1 | `scidl train a\\|b` | c.yaml: ''; X=1 | bad 'k' |" in md
    assert "**(fails: exit 0)**" in md


# ---------------------------------------------------------------- a saved config's old run


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()
            and (p.name == "metrics.jsonl" or "tensorboard" in p.parts)}


def test_rerunning_a_saved_config_makes_a_new_run_and_leaves_the_old_one(tmp_path, capsys):
    root = tmp_path / "runs"
    assert main(["train", "admissions", f"log.root={root}", *FAST]) == 0
    (first,) = (root / "admissions").iterdir()
    before = _files(first)
    assert any("tensorboard" in k for k in before) and "metrics.jsonl" in before
    assert load_config(path=first / "config.yaml").log.run_dir is None  # recorded, not reused
    capsys.readouterr()
    assert main(["train", "--config", str(first / "config.yaml"), "-q"]) == 0
    out = capsys.readouterr().out
    runs = sorted((root / "admissions").iterdir())
    assert len(runs) == 2 and f"run folder: {first}" not in out
    assert _files(first) == before  # metrics rows and TensorBoard files untouched
    second = next(r for r in runs if r != first)
    assert (second / "metrics.jsonl").is_file()
    # config.yaml still records where it lives
    assert load_config(path=second / "config.yaml", overrides=[]).log.run_dir is None
    assert f"run_dir: {second}" in (second / "config.yaml").read_text()


def test_python_run_of_a_loaded_config_makes_a_new_run(tmp_path):
    root = tmp_path / "runs"
    cfg = load_config("admissions", overrides=[f"log.root={root}", "train.max_steps=2",
                                               "log.tensorboard=false", "log.progress=false"])
    first = scidl.run(cfg).run_dir
    rows = (first / "metrics.jsonl").read_text()
    again = scidl.run(load_config(path=first / "config.yaml")).run_dir
    assert again != first and (first / "metrics.jsonl").read_text() == rows
    # a config naming a used folder explicitly is refused unless resumed
    explicit = cfg.model_copy(update={"log": cfg.log.model_copy(update={"run_dir": str(first)})})
    with pytest.raises(ConfigError, match="already holds a run"):
        scidl.run(explicit)
    assert (first / "metrics.jsonl").read_text() == rows


def test_saved_run_dir_that_is_new_or_empty_is_used(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (empty, tmp_path / "new" / "run"):
        f = tmp_path / "best.yaml"
        f.write_text(f"workload: admissions\nlog: {{run_dir: {target}}}\n")
        assert load_config(path=f).log.run_dir == str(target)


# ---------------------------------------------------------------- run folders of failed starts


def test_failed_start_keeps_a_folder_that_holds_results(tmp_path):
    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("x")
    rundir.discard_unused_run_dir(run, tmp_path / "r")
    assert not run.exists()  # only config.yaml and empty folders: removed
    run.mkdir()
    (run / "config.yaml").write_text("x")
    (run / "metrics.jsonl").write_text("{}\n")
    rundir.discard_unused_run_dir(run, run)
    assert (run / "metrics.jsonl").is_file() and (run / "config.yaml").is_file()


def test_failed_start_in_an_existing_empty_folder_removes_only_its_files(tmp_path):
    (tmp_path / "config.yaml").write_text("x")
    rundir.discard_unused_run_dir(tmp_path, None)
    assert tmp_path.is_dir() and not any(tmp_path.iterdir())


# ---------------------------------------------------------------- oversubscription, workers


def test_more_processes_than_cores_warns_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(preflight.os, "cpu_count", lambda: 1)

    def fake_launch(cfg, resume, task_factory, callbacks, *rest):
        return {"run_dir": cfg.log.run_dir, "headline": "mse", "headline_value": 1.0, "steps": 2,
                "world_size": 2, "backend": "gloo", "wall_s": 0.1, "samples_per_s": 1.0}

    monkeypatch.setattr(api, "_launch_local", fake_launch)
    assert main(["train", "admissions", "--nproc", "2", f"log.root={tmp_path}", *FAST]) == 0
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert err == ["scidl: warning: dist.nproc=2 processes on 1 CPU core(s): oversubscribed, "
                   "each gets 1 thread and steps will be slow"]


class _Failure:
    def __init__(self, exitcode, message):
        self.exitcode, self.message = exitcode, message


class _ChildFailed(Exception):
    def __init__(self, failures):
        self.failures = failures


def test_user_error_message_is_read_from_a_worker_that_exited_2():
    tagged = we.USER_ERROR_TAG + "bad 'train.batch_size'"

    def message(err):
        return we.tagged_message(err, we.USER_ERROR_EXIT, we.USER_ERROR_TAG)

    assert message(_ChildFailed({0: _Failure(2, tagged)})) == "bad 'train.batch_size'"
    assert message(_ChildFailed({0: _Failure(1, tagged)})) is None
    assert message(_ChildFailed({1: _Failure(2, "Segfault")})) is None


def test_worker_writes_the_message_to_its_error_file_and_exits_2(tmp_path, monkeypatch):
    path = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(path))
    with pytest.raises(SystemExit) as e:
        we.exit_with_user_error(ConfigError("invalid value for 'x'"))
    assert e.value.code == 2
    assert json.loads(path.read_text())["message"] == we.USER_ERROR_TAG + "invalid value for 'x'"


def test_agent_log_of_a_user_error_exit_is_held_back_others_pass():
    from torch.multiprocessing.spawn import ProcessExitedException

    filt = we.AgentLogFilter((we.USER_ERROR_EXIT,))

    def rec(msg, exc=None):
        r = logging.LogRecord("torch.x", logging.ERROR, "f", 1, msg, (), None)
        if exc is not None:
            r.exc_info = (type(exc), exc, None)
        return r

    assert not filt.filter(rec("Terminating process 1 via signal SIGTERM"))
    assert not filt.filter(rec("failed", ProcessExitedException("x", 0, 1, 2, None)))
    assert filt.held == []  # the user error's warnings are dropped with it
    assert filt.filter(rec("failed", ProcessExitedException("x", 0, 1, 1, None)))


def test_python_run_checks_a_config_built_in_python_before_making_a_folder(tmp_path):
    cfg = load_config("admissions", overrides=[f"log.root={tmp_path}", "train.max_steps=2"])
    cfg.optim.lr = float("inf")  # assignment skips load_config's checks
    with pytest.raises(ConfigError, match="'optim.lr': must be a finite number"):
        scidl.run(cfg)
    cfg.optim.lr = 0.1
    cfg.parallel.pipeline_stages = 3
    with pytest.raises(ConfigError, match="pipeline_stages=3 does not divide"):
        scidl.run(cfg)
    assert not any(tmp_path.iterdir())
