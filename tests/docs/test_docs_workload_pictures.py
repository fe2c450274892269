"""The docs' pictures of trained runs come from scripts/workload_pictures.py: it trains a
workload briefly and copies the pictures its run folder gets; each docs page that shows
one names the command and the budget."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("workload_pictures", ROOT / "scripts" / "workload_pictures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


wp = _load()


@pytest.mark.timeout(300)
def test_script_copies_the_run_pictures(tmp_path):
    small = ["task.n_collocation=64", "task.ref_nx=16", "task.ref_nt=5", "train.batch_size=32"]
    (copy,) = wp.draw("burgers", 2, tmp_path, small)
    assert copy == tmp_path / "run_burgers_solution.png" and copy.stat().st_size > 10_000


def test_pages_showing_run_pictures_name_the_command_and_budget():
    shown = 0
    for page in sorted((ROOT / "docs").rglob("*.md")):
        text = page.read_text()
        for name in re.findall(r"\(\.\./img/run_([a-z_]+?)_[a-z]+\.png\)", text):
            shown += 1
            assert any((ROOT / "docs" / "img").glob(f"run_{name}_*.png")), page
            assert f"python scripts/workload_pictures.py {name}" in text, page
            assert f"{wp.STEPS[name]} steps" in text, page
    assert shown >= 2
