"""A study's storage can name only registered objectives, never code to import.

Workers read the objective from the shared storage; before, a storage naming
``os:system`` (or any ``module:Class``) had every worker import and call it. Now the
storage holds a name (``train``, ``toy``, or one registered by an installed package) and
anything else is refused with one clear line, exit status 2, before anything is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest

from scidl.search.objective import (
    ObjectiveError,
    TrainObjective,
    objective_names,
    register_objective,
    resolve_objective,
)
from scidl.search.runner import create_or_load, describe_objective, run_search
from scidl.search.settings import SETTINGS_ATTR, SearchSettings
from scidl.search.storage import STORAGE_ENV, normalize_url, open_storage
from scidl.search.toy import TOY_SPACE, ToyObjective


def _plant(tmp_path, target):
    """A study whose stored settings name ``target``, as someone with write access to the
    database could leave it; and a module that leaves a mark if it is ever imported."""
    (tmp_path / "planted.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_name('IMPORTED').touch()\n"
        "class Obj:\n    def __init__(self, *a, **k): pass\n")
    url = normalize_url(str(tmp_path / "s.db"))
    settings = describe_objective(SearchSettings(
        workload="toy", strategy="random", trials=2, space=TOY_SPACE, out=str(tmp_path / "out"),
        objective="toy"))
    study, _ = create_or_load(open_storage(url), url, "p", settings, False, False)
    stored = json.loads(study.user_attrs[SETTINGS_ATTR]) | {"objective": target}
    study.set_user_attr(SETTINGS_ATTR, json.dumps(stored))
    return url


@pytest.mark.parametrize("target", ["os:system", "planted:Obj"])
def test_worker_refuses_an_unregistered_objective_from_the_storage(tmp_path, target):
    url = _plant(tmp_path, target)
    env = {**os.environ, STORAGE_ENV: url,
           "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "scidl", "search", "--join", "--study", "p",
                           "--quiet", "--no-report"], capture_output=True, text=True,
                          env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"objective {target!r} is not a registered search objective" in lines[0]
    assert "toy" in lines[0] and "train" in lines[0]  # says what is allowed
    assert not (tmp_path / "IMPORTED").exists()  # the named module was never imported
    trials = optuna.load_study(study_name="p", storage=open_storage(url)).get_trials()
    assert trials == []  # nothing ran


def test_in_process_search_refuses_it_too(tmp_path):
    url = _plant(tmp_path, "os:system")
    with pytest.raises(ObjectiveError, match="'os:system' is not a registered"):
        run_search(url, "p", None, resume=True, quiet=True)


def test_registry_names_and_old_studies():
    assert {"train", "toy"} <= set(objective_names())
    assert resolve_objective("toy") is ToyObjective
    # studies made before names stored the built-ins' import paths: still read
    assert resolve_objective("scidl.search.objective:TrainObjective") is TrainObjective
    with pytest.raises(ObjectiveError, match="did you mean toy"):
        resolve_objective("tyo")

    @register_objective("mine-test")
    class Mine(ToyObjective):
        pass

    assert resolve_objective("mine-test") is Mine and "mine-test" in objective_names()
    with pytest.raises(ValueError, match="without ':'"):
        register_objective("pkg:Cls")


@pytest.mark.parametrize("trials", ["0", "-3"])
def test_cli_refuses_a_trial_budget_below_one(tmp_path, capsys, trials):
    """Before, ``--trials 0`` was read as "not given" and ran the default 20 trials."""
    from scidl.cli import main

    code = main(["search", "toy", "--objective", "toy", "--trials", trials,
                 "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--trials must be >= 1" in err[0]
    assert not (tmp_path / "out").exists()


def test_cli_reads_the_storage_from_the_environment_and_hides_it_from_trials(tmp_path, monkeypatch):
    from scidl.cli import main

    seen = {}

    @register_objective("env-test")
    class Sees(ToyObjective):
        def __call__(self, trial, space):
            seen["env"] = os.environ.get(STORAGE_ENV)
            return super().__call__(trial, space)

    url = normalize_url(str(tmp_path / "env.db"))
    monkeypatch.setenv(STORAGE_ENV, url)
    code = main(["search", "toy", "--objective", "env-test", "--trials", "1", "--study", "e",
                 "--out", str(tmp_path / "out"), "--quiet", "--no-report"])
    assert code == 0 and (tmp_path / "env.db").exists()  # the study went where the env said
    assert seen == {"env": None}  # trials (and the processes they start) do not see it
    assert len(optuna.load_study(study_name="e", storage=open_storage(url)).trials) == 1
