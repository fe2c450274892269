"""A finished scidl process exits without the garbage collector's passes over every object
(they took seconds per process at the end of each run): the objects alive when the command
or worker is done are frozen; a command called from Python (argv given) freezes nothing."""

import gc
import sys

import pytest

import scidl.train.api as api
from scidl.cli import main


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_the_scidl_command_freezes_before_exit(monkeypatch, unfrozen, capsys):
    assert main(["workloads"]) == 0 and gc.get_freeze_count() == 0  # called from Python
    monkeypatch.setattr(sys, "argv", ["scidl", "workloads"])
    assert main() == 0 and gc.get_freeze_count() > 0
    assert "burgers" in capsys.readouterr().out


def test_a_training_worker_freezes_after_its_run(monkeypatch, unfrozen):
    monkeypatch.setattr(api, "train_process", lambda *a: {"steps": 1})
    assert api._local_worker({}) == {"steps": 1} and gc.get_freeze_count() > 0
