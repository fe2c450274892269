"""Unit tests of the search machinery: spaces, storage strings, adjusted score, greedy plan."""

from __future__ import annotations

import math

import optuna
import pytest

from scidl.search.greedy import adjusted_error, greedy_plan, size_penalty, width_stratum
from scidl.search.heartbeat import RETRY_OF, budget_used, fail_stale_trials
from scidl.search.space import (
    DEFAULT_SPACES,
    SpaceError,
    build_space,
    load_space,
    merge_space,
)
from scidl.search.storage import driver_url, kind_of, normalize_url, redact


def test_space_overrides_map_onto_run_config_keys():
    space = build_space({
        "params": {
            "depth": {"type": "int", "low": 1, "high": 3, "role": "depth"},
            "width": {"type": "int", "low": 4, "high": 64, "log": True, "role": "width"},
            "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True, "target": "optim.lr"},
        },
        "layers": {"task.hidden": {"depth": "depth", "width": "width", "growth": 2.0}},
        "fixed": {"train.epochs": 3},
    })
    ov = space.overrides({"depth": 3, "width": 8, "lr": 0.001})
    assert ov == {"train": {"epochs": 3}, "optim": {"lr": 0.001}, "task": {"hidden": [8, 16, 32]}}
    assert space.param_with_role("depth") == "depth"


def test_space_errors_name_the_entry():
    with pytest.raises(SpaceError, match="params.lr"):
        build_space({"params": {"lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}})
    with pytest.raises(SpaceError, match="layers"):
        build_space({"params": {}, "layers": {"task.hidden": {"depth": "d", "width": "w"}}})
    with pytest.raises(SpaceError, match="no default search space"):
        load_space("no-such-workload")


def test_space_file_merges_over_default(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("params:\n  optimizer: null\n  lr: {type: float, low: 0.001, high: 0.01, target: optim.lr}\n"
                 "fixed:\n  train.epochs: 2\n")
    space = load_space("admissions", f)
    assert "optimizer" not in space["params"]
    assert space["params"]["lr"]["high"] == 0.01
    assert space["fixed"]["train.epochs"] == 2
    assert list(space["params"])[:2] == list(DEFAULT_SPACES["admissions"]["params"])[:2]
    with pytest.raises(SpaceError, match="unknown search-space section"):
        merge_space({}, {"parms": {}})


@pytest.mark.parametrize("workload", sorted(DEFAULT_SPACES))
def test_default_spaces_resolve_to_valid_run_configs(workload):
    """Every default space's extreme points are valid run configs of its workload."""
    from scidl.config import load_config

    space = build_space(load_space(workload))
    for pick in (0, -1):
        params = {}
        for name, p in space.params.items():
            if p.type == "categorical":
                params[name] = p.choices[pick]
            else:
                params[name] = (p.low, p.high)[pick]
                params[name] = int(params[name]) if p.type == "int" else params[name]
        cfg = load_config(workload.split("-")[0], extra=space.overrides(params))
        cfg.task_config()


def test_storage_strings(tmp_path):
    assert normalize_url(str(tmp_path / "s.db")) == f"sqlite:///{tmp_path}/s.db"
    assert normalize_url("journal:" + str(tmp_path / "j.log")).startswith("journal:/")
    assert kind_of("journal:/x") == "journal" and kind_of("postgresql+psycopg2://h/d") == "postgresql"
    assert redact("postgresql://u:secret@h:1/d") == "postgresql://u:***@h:1/d"
    assert driver_url("sqlite:///x.db") == "sqlite:///x.db"
    assert driver_url("postgresql://u@h/d").endswith("://u@h/d")


def test_adjusted_score_matches_adjusted_r2_for_few_parameters_and_stays_finite():
    n, r2 = 10_000, 0.8
    for p in (1, 10, 50):
        classic = 1 - (1 - r2) * (n - 1) / (n - p - 1)
        ours = 1 - adjusted_error(r2, True, p, n)
        assert ours == pytest.approx(classic, abs=2e-5)
    # defined, finite and increasing in p when p exceeds n (the classic form diverges at p=n-1)
    pens = [size_penalty(p, 100) for p in (0, 99, 100, 1_000, 100_000)]
    assert all(math.isfinite(x) for x in pens) and pens == sorted(pens) and pens[0] == 1.0
    # at equal accuracy the smaller network ranks better; a much better big one still wins
    assert adjusted_error(0.95, True, 100, 1000) < adjusted_error(0.95, True, 10_000, 1000)
    assert adjusted_error(0.99, True, 10_000, 1000) < adjusted_error(0.90, True, 100, 1000)
    assert adjusted_error(0.004, False, 10, None) == pytest.approx(0.004)


def test_greedy_plan_goes_deeper_while_it_improves():
    depths, k = [1, 2, 3, 4], 2
    assert greedy_plan([], depths, k, 0.01).depth == 1
    assert greedy_plan([(1, 0.5), (1, None)], depths, k, 0.01).depth == 1  # wait for depth 1
    recs = [(1, 0.5), (1, 0.4)]
    assert greedy_plan(recs, depths, k, 0.01).depth == 2
    recs += [(2, 0.3), (2, 0.35)]  # improved: go to 3
    plan = greedy_plan(recs, depths, k, 0.01)
    assert (plan.depth, plan.converged) == (3, False)
    recs += [(3, 0.299), (3, 0.6)]  # < 1 % better: converge on the best depth (3 is best)
    plan = greedy_plan(recs, depths, k, 0.01)
    assert plan.converged and plan.depth == 3 and plan.best_by_depth[2] == 0.3


def test_width_strata_cover_the_range():
    bins = [width_stratum(4, 65, True, i, 4) for i in range(4)]
    assert bins[0][0] == pytest.approx(4) and bins[-1][1] == pytest.approx(65)
    assert all(a[1] == pytest.approx(b[0]) for a, b in zip(bins[:-1], bins[1:], strict=True))


def test_stale_trial_is_failed_and_requeued_once(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, study_name="s")
    t = study.ask()
    t.suggest_int("depth", 1, 4)
    done = study.ask()
    study.tell(done, 1.0)
    assert fail_stale_trials(study, storage, grace=3600, max_retries=1) == []  # still fresh
    assert fail_stale_trials(study, storage, grace=1.0, max_retries=1, now=1e12) == [t.number]
    trials = study.get_trials()
    assert trials[t.number].state.name == "FAIL" and trials[done.number].state.name == "COMPLETE"
    waiting = [x for x in trials if x.state.name == "WAITING"]
    assert len(waiting) == 1 and waiting[0].user_attrs[RETRY_OF] == t.number
    assert budget_used(trials) == 2  # the failed one is replaced by its re-queued copy
    again = study.ask()  # the re-queued copy runs with the same depth
    assert again.suggest_int("depth", 1, 4) == trials[t.number].params["depth"]
    assert fail_stale_trials(study, storage, grace=1.0, max_retries=1, now=1e12) == [again.number]
    assert not [x for x in study.get_trials() if x.state.name == "WAITING"]  # retries used up


def test_trials_of_a_worker_started_by_srun_train_as_single_jobs(monkeypatch):
    """`srun -n 4 scidl search --join` starts 4 independent workers, not one 4-rank job."""
    from scidl.runtime.env import detect_launch
    from scidl.search.worker import isolated_launch_env, launcher_index

    for k, v in {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "7"}.items():
        monkeypatch.setenv(k, v)
    assert launcher_index() == 3 and detect_launch().world_size == 4
    with isolated_launch_env():
        assert detect_launch().launcher == "single"
    assert detect_launch().world_size == 4  # restored


def test_history_plot_has_whole_trial_numbers():
    """Trial numbers are integers: the x axis no longer shows 0.5, 1.5, 2.5 ..."""
    from types import SimpleNamespace

    from scidl.search.report import history_figure

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    for i, v in enumerate([0.5, 0.3, 0.4, 0.2]):
        study.add_trial(optuna.trial.create_trial(value=v, user_attrs={"result": {"value": v}},
                                                  params={"i": i},
                                                  distributions={"i": optuna.distributions.IntDistribution(0, 9)}))
    settings = SimpleNamespace(metric="loss", workload="toy", strategy="random", direction="minimize")
    ax = history_figure(study, settings).axes[0]  # type: ignore[arg-type]
    ticks = [t for t in ax.get_xticks() if 0 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert ax.get_xlabel() == "trial number"
    assert "lower is better" in ax.get_ylabel()
