"""``train.phases`` and ``train.precision=fp64`` in the config: the command-line form,
per-phase settings, errors naming the key, and where fp64 cannot apply."""

import pytest
import torch

from scidl.config import ConfigError, load_config
from scidl.optim.config import OptimConfig, PhaseConfig
from scidl.optim.registry import build_optimizer
from scidl.train.schedule_phases import PhasePlan, cast_batch


def _cfg(*over):
    return load_config("admissions", overrides=list(over))


def test_command_line_form_and_yaml_form_agree():
    short = _cfg("train.phases=adam:100,lbfgs:5").train.phases
    long = _cfg("train.phases=[{optim: adam, steps: 100}, {optim: lbfgs, steps: 5}]").train.phases
    assert [(p.optim, p.steps) for p in short] == [("adam", 100), ("lbfgs", 5)]
    assert short == long
    assert _cfg("train.phases=none").train.phases == []


def test_phase_settings_layer_over_the_optim_section():
    cfg = _cfg("optim.lr=0.003", "optim.schedule=cosine",
               "train.phases=[{optim: adam, steps: 10}, {optim: lbfgs, steps: 5, lbfgs_max_iter: 7}]")
    adam, lbfgs = (p.optim_config(cfg.optim) for p in cfg.train.phases)
    assert (adam.name, adam.lr, adam.schedule) == ("adam", 0.003, "cosine")
    # L-BFGS: unit step, no schedule, unless the phase says otherwise
    assert (lbfgs.name, lbfgs.lr, lbfgs.schedule, lbfgs.lbfgs_max_iter) == ("lbfgs", 1.0, "constant", 7)
    opt = build_optimizer(torch.nn.Linear(2, 1), lbfgs)
    assert isinstance(opt, torch.optim.LBFGS)
    assert opt.defaults["max_iter"] == 7 and opt.defaults["line_search_fn"] == "strong_wolfe"


def test_budget_is_the_phases_steps_capped_by_max_steps():
    plan = PhasePlan(_cfg("train.phases=adam:10,lbfgs:5"))
    assert plan.total_steps() == 15
    assert [plan.index_at(s) for s in (0, 9, 10, 14)] == [0, 0, 1, 1]
    assert plan.ends_at(10) and not plan.ends_at(15) and not plan.ends_at(5)
    assert PhasePlan(_cfg("train.phases=adam:10,lbfgs:5", "train.max_steps=12")).total_steps() == 12


@pytest.mark.parametrize("over, key", [
    (["train.phases=adam:10,lbfgz:5"], "train.phases.1.optim"),
    (["train.phases=adam"], "train.phases"),
    (["train.phases=[{optim: adam, steps: 0}]"], "train.phases.0.steps"),
    (["train.phases=[{optim: adam, steps: 3, lrr: 0.1}]"], "lrr"),
    (["train.phases=[{optim: adam, steps: 3, lr: -1}]"], "lr"),
    (["train.precision=fp64", "comm.strategy=fp16"], "comm.strategy"),
    (["train.precision=fp64", "parallel.pipeline_stages=2"], "parallel.pipeline_stages"),
])
def test_bad_phases_and_fp64_where_it_cannot_apply_name_the_key(over, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _cfg(*over)


def test_phase_config_rejects_its_own_name_key():
    with pytest.raises(ValueError, match="name"):
        PhaseConfig(optim="adam", steps=1, name="sgd")
    assert OptimConfig().lbfgs_line_search == "strong_wolfe"


def test_cast_batch_makes_floating_tensors_float64_only():
    out = cast_batch({"x": torch.zeros(2), "i": torch.arange(2), "t": (torch.ones(1),)})
    assert out["x"].dtype == torch.float64 and out["t"][0].dtype == torch.float64
    assert out["i"].dtype == torch.int64


def test_a_workloads_phases_are_not_silently_overridden():
    # burgers' defaults train in phases: --epochs / another optimizer must not be ignored
    for over in (["train.epochs=5"], ["optim.name=sgd"]):
        with pytest.raises(ConfigError, match="train.phases"):
            load_config("burgers", overrides=over)
    assert load_config("burgers", overrides=["train.phases=none", "train.epochs=5"]).train.epochs == 5
    assert load_config("burgers", overrides=["train.max_steps=5"]).train.phases
