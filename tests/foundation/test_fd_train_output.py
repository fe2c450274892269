"""What `scidl train` prints: the run folder first, the summary from rank 0 only, plain
progress lines when stdout is not a terminal."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from scidl.cli import main
from scidl.commands.train import reports
from scidl.train import api
from scidl.train.progress import Progress, format_duration, format_progress_line


def test_progress_line_format():
    line = format_progress_line(120, 3000, {"loss": 0.0123, "rel_l2": 0.04123}, 1234.4, 1e-3, 312)
    assert line == "step 120/3000 (4%) loss 1.2e-02 rel_l2 0.0412 1234 samples/s lr 1.0e-03 ETA 5m12s"
    # unknown parts are left out, not printed as n/a
    assert format_progress_line(1, 10, {"loss": 2.0}) == "step 1/10 (10%) loss 2.0e+00"


@pytest.mark.parametrize("s, text", [(0, "0s"), (42.4, "42s"), (312, "5m12s"), (7500, "2h05m"),
                                     (float("inf"), "?"), (-1, "?")])
def test_duration_format(s, text):
    assert format_duration(s) == text


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_plain_lines_every_s_with_throughput_eta_and_latest_eval():
    out, clock = io.StringIO(), _Clock()  # StringIO is not a TTY
    p = Progress(100, True, every_s=10, samples_per_step=32, stream=out, clock=clock)
    p.update(0)
    for step in range(1, 101):
        clock.t = step * 1.0  # one step a second
        fields = {"loss": 1.0 / step, **({"rel_l2": 0.5} if step == 30 else {})}
        p.update(step, fields, lr=1e-3)
    p.close()
    lines = out.getvalue().splitlines()
    assert [ln.split()[1] for ln in lines] == [f"{s}/100" for s in (1, 11, 21, 31, 41, 51, 61, 71, 81, 91, 100)]
    assert "32 samples/s" in lines[1] and "ETA 1m29s" in lines[1]
    assert "rel_l2" not in lines[2] and "rel_l2 0.5" in lines[3] and "rel_l2 0.5" in lines[-1]


def test_no_lines_when_quiet_or_every_s_zero():
    for enabled, every in ((False, 1.0), (True, 0.0)):
        out = io.StringIO()
        p = Progress(5, enabled, every_s=every, stream=out, clock=_Clock())
        p.update(1, {"loss": 1.0})
        p.close()
        assert out.getvalue() == ""


@pytest.mark.parametrize("env, expected", [
    ({}, True),
    ({"RANK": "0", "WORLD_SIZE": "2"}, True),
    ({"RANK": "1", "WORLD_SIZE": "2"}, False),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}, True),
    ({"SLURM_PROCID": "3", "SLURM_NTASKS": "4"}, False),
    ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4", "MASTER_ADDR": "h0"}, False),
    ({"PMI_RANK": "0", "PMI_SIZE": "2", "MASTER_ADDR": "h0"}, True),
])
def test_only_global_rank_0_reports(env, expected):
    assert reports(env) is expected


def _fake_run(cfg, *, resume, restart_from_scratch, on_run_dir, **_):
    run_dir = Path("/tmp/fake-run")
    if reports(os.environ):
        on_run_dir(run_dir)  # what api.run does on rank 0
    summary = {"headline": "mse", "headline_value": None, "steps": 2, "world_size": 2,
               "backend": "gloo", "wall_s": 1.0, "samples_per_s": 10.0}
    return api.RunResult(run_dir, summary)


@pytest.mark.parametrize("rank", ["0", "1"])
def test_summary_printed_by_rank_0_only_under_a_launcher(rank, monkeypatch, capsys):
    # under torchrun every rank runs `scidl train`; before, each printed a summary and the
    # ranks other than 0 (which hold no evaluation) printed "mse = n/a"
    for k, v in {"RANK": rank, "WORLD_SIZE": "2", "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(api, "run", _fake_run)
    assert main(["train", "admissions", "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    if rank == "0":
        assert out[0] == "run folder: /tmp/fake-run" and out[-2].startswith("admissions: mse =")
        # the folder is named once at the start; the last line points into it
        assert out.count("run folder: /tmp/fake-run") == 1
        assert out[-1] == "results: /tmp/fake-run/summary.json · report: scidl report /tmp/fake-run"
    else:
        assert out == []


def test_run_outside_a_terminal_prints_folder_first_then_progress_lines(tmp_path, capsys):
    assert main(["train", "admissions", f"log.root={tmp_path}", "train.max_steps=3",
                 "log.every_s=0.000001", "log.tensorboard=false", "dist.nproc=1"]) == 0
    out = capsys.readouterr().out.splitlines()
    (run_dir,) = (tmp_path / "admissions").iterdir()
    assert out[0] == f"run folder: {run_dir}"
    steps = [ln.split()[1] for ln in out if ln.startswith("step ")]
    assert steps == ["1/3", "2/3", "3/3"]
    assert all("samples/s" in ln and "lr " in ln for ln in out if ln.startswith("step 2"))
    assert out[-3].startswith("admissions: mse =") and out[-2].startswith("best: mse ")
    assert [ln for ln in out if ln.startswith("run folder:")] == [out[0]]
    assert out[-1] == f"results: {run_dir / 'summary.json'} · report: scidl report {run_dir}"


def test_first_progress_line_shows_the_loss(tmp_path, capsys):
    # the loss is averaged over ranks at logged steps only; before, the lines until step
    # train.log_every (the demo's first one, at step 1) showed no loss
    assert main(["train", "admissions", f"log.root={tmp_path}", "train.max_steps=3",
                 "train.log_every=50", "log.every_s=0.000001", "log.tensorboard=false",
                 "dist.nproc=1"]) == 0
    first = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step 1/3"))
    assert " loss " in first, first
