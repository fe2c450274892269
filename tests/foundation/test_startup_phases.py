"""Start-up feedback: rank 0 says what the run is doing before its first step (one line
per phase outside a terminal, a spinner in one), nothing with --quiet or on other ranks."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from scidl.cli import main
from scidl.train.phases import FIRST_STEP, SETUP, Phases, building_line

SMALL_BURGERS = ["task.n_collocation=64", "task.ref_nx=16", "task.ref_nt=5",
                 "train.max_steps=2", "train.batch_size=32", "log.tensorboard=false",
                 "log.every_s=0.000001", "checkpoint.every_steps=0"]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_outside_a_terminal_none_when_disabled():
    out = io.StringIO()
    with Phases(True, out) as p:
        p.show("a…")
        p.show("b…")
    assert out.getvalue() == "a…\nb…\n"
    quiet = io.StringIO()
    with Phases(False, quiet) as p:
        p.show("a…")
    assert quiet.getvalue() == ""


def test_terminal_spinner_leaves_each_finished_phase_as_a_line():
    out = _Tty()
    with Phases(True, out) as p:
        p.show("building x…")
        p.show(FIRST_STEP)
    text = out.getvalue()
    assert text.index("building x…") < text.rindex(FIRST_STEP)


def test_building_line():
    assert building_line("burgers", "reference solution") == "building burgers (reference solution)…"
    assert building_line("mymodel") == "building mymodel…"


def _train(tmp_path: Path, *extra: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-m", "scidl", "train", "burgers", f"log.root={tmp_path}", *SMALL_BURGERS,
         *extra], capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_phase_lines_in_order_once_before_the_first_progress_line(tmp_path):
    out = _train(tmp_path, "dist.nproc=2")
    phases = ["starting 2 processes…",
              building_line("burgers", "64 collocation points"),
              SETUP, FIRST_STEP]
    first_progress = next(i for i, ln in enumerate(out) if ln.startswith("step "))
    # each once (rank 0 only), in order, all before the first progress line
    at = [out.index(p) for p in phases]
    assert all(out.count(p) == 1 for p in phases), out
    assert at == sorted(at) and at[-1] < first_progress, out
    assert out[0].startswith("run folder: ")


def test_quiet_prints_no_phase_lines(tmp_path, capsys):
    assert main(["train", "burgers", f"log.root={tmp_path}", *SMALL_BURGERS, "dist.nproc=1",
                 "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert not [ln for ln in out if ln.endswith("…")], out
