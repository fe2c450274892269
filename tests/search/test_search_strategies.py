"""Every strategy runs end to end in-process on SQLite (toy objective) and writes its outputs."""

from __future__ import annotations

import csv

import optuna
import pytest
import yaml

from scidl.search.runner import describe_objective, run_search
from scidl.search.settings import SearchSettings
from scidl.search.toy import TOY_SPACE, toy_accuracy


def toy_settings(tmp_path, strategy, trials, **kw):
    s = SearchSettings(
        workload="toy", strategy=strategy, trials=trials, space=TOY_SPACE, out=str(tmp_path / "out"),
        objective="toy", objective_args=kw.pop("objective_args", {}),
        heartbeat_s=0.5, **kw,
    )
    return describe_objective(s)


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("strategy", ["random", "bayes", "greedy", "evolution"])
def test_strategy_end_to_end_writes_outputs(tmp_path, strategy):
    settings = toy_settings(tmp_path, strategy, 8, per_depth=2, population=4, pruner="none")
    res = run_search(str(tmp_path / "s.db"), "t", settings, quiet=True)
    out = tmp_path / "out"
    rows = read_rows(out / "trials.csv")
    assert len(rows) == 8 and all(r["state"] == "COMPLETE" for r in rows)
    assert (out / "history.png").stat().st_size > 1000
    best = res.summary["best"]
    # the stored metric is the objective's closed form at the trial's parameters
    p = best["params"]
    assert best["metric"] == pytest.approx(toy_accuracy(p["depth"], p["width"], p["lr"]))
    assert yaml.safe_load((out / "best.yaml").read_text()) == {"toy": p}
    if strategy == "evolution":
        front = res.summary["pareto"]
        assert (out / "pareto.png").exists() and len(read_rows(out / "pareto.csv")) == len(front)
        # a Pareto front: sorted by latency, the metric strictly increases
        accs = [t["values"][0] for t in front]
        assert accs == sorted(accs) and len(set(accs)) == len(accs)
    if strategy == "greedy":
        depths = [int(r["param_depth"]) for r in rows]
        assert depths[:2] == [1, 1]  # starts shallow, per_depth=2 trials at depth 1
        assert len(set(depths)) >= 2  # and goes deeper while it helps
        values = [float(r["value"]) for r in rows]
        assert float(best["values"][0]) == min(values)  # ranked by the adjusted error


def test_bayes_prunes_with_median_rule(tmp_path):
    settings = toy_settings(tmp_path, "bayes", 10, pruner="median", objective_args={"steps": 4})
    res = run_search(str(tmp_path / "s.db"), "t", settings, quiet=True)
    states = res.summary["states"]
    assert states.get("PRUNED", 0) >= 1 and states.get("COMPLETE", 0) >= 3
    complete = [t for t in res.study.trials if t.state.name == "COMPLETE"]
    for t in res.study.trials:
        if t.state.name == "PRUNED":  # stopped because it was behind at that step
            step, value = max(t.intermediate_values.items())
            others = [c.intermediate_values[step] for c in complete if step in c.intermediate_values]
            assert value < max(others)  # median rule => behind the best trial at that step


def test_failing_trials_are_recorded_and_do_not_stop_the_search(tmp_path):
    settings = toy_settings(tmp_path, "random", 8, objective_args={"fail_depths": [1]})
    res = run_search(str(tmp_path / "s.db"), "t", settings, quiet=True)
    failed = [t for t in res.study.trials if t.state.name == "FAIL"]
    assert failed and all("toy failure" in t.user_attrs["error"] for t in failed)
    assert len(res.study.trials) == 8


def test_existing_study_needs_resume_and_resume_extends_budget(tmp_path):
    from scidl.search.runner import SearchError

    settings = toy_settings(tmp_path, "random", 3)
    run_search(str(tmp_path / "s.db"), "t", settings, quiet=True)
    with pytest.raises(SearchError, match="--resume"):
        run_search(str(tmp_path / "s.db"), "t", settings, quiet=True)
    with pytest.raises(SearchError, match="cannot resume"):
        run_search(str(tmp_path / "s.db"), "other", None, resume=True, quiet=True)
    res = run_search(str(tmp_path / "s.db"), "t", None, resume=True, budget=5, quiet=True)
    assert len(res.study.trials) == 5


def test_gp_sampler_runs(tmp_path):
    from scidl.search.base import get_strategy
    from scidl.search.space import build_space

    settings = toy_settings(tmp_path, "bayes", 4, sampler="gp", pruner="none")
    sampler = get_strategy("bayes").sampler(settings, build_space(TOY_SPACE), 0)
    assert isinstance(sampler, optuna.samplers.GPSampler)
    res = run_search(str(tmp_path / "s.db"), "t", settings, quiet=True)
    assert res.summary["states"] == {"COMPLETE": 4}
