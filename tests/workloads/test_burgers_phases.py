"""Burgers PINNs under ``train.phases``: the L-BFGS phase gets a fixed objective (RAR
frozen in ``burgers``; ``burgers_hd`` refuses a random Laplacian estimate), and the
defaults train Adam then L-BFGS."""

import pytest

from scidl.config import ConfigError, load_config
from scidl.workloads.burgers.nets import BurgersNet
from scidl.workloads.burgers.workload import RAR, BurgersConfig
from scidl.workloads.burgers_hd.workload import BurgersHDConfig, check_fixed_objective


def test_frozen_rar_adds_no_points():
    cfg = BurgersConfig(rar_every=1, rar_points=3, rar_candidates=20)
    rar, net = RAR(cfg, seed=0), BurgersNet(8, 2, True)
    rar.step(net)
    assert len(rar.points) == 3
    rar.freeze()
    rar.step(net)
    rar.step(net)
    assert len(rar.points) == 3


def test_burgers_hd_lbfgs_needs_the_exact_laplacian():
    check_fixed_objective(BurgersHDConfig(d=2))  # exact for d <= probes: fine
    check_fixed_objective(BurgersHDConfig(d=100, laplacian="exact"))
    with pytest.raises(ConfigError, match="task.laplacian"):
        check_fixed_objective(BurgersHDConfig(d=100))  # auto = sdgd at d = 100


def test_burgers_defaults_are_adam_then_lbfgs():
    phases = load_config("burgers").train.phases
    assert [p.optim for p in phases] == ["adam", "lbfgs"]


@pytest.mark.parametrize("key", ["lbfgs_steps", "lbfgs_max_iter", "lbfgs_history", "lbfgs_lr"])
def test_burgers_lbfgs_settings_live_in_optim_only(key):
    """L-BFGS settings are ``optim.lbfgs_*`` (used by ``train.phases`` and the study); the
    task no longer carries an unused copy that a user could set to no effect."""
    with pytest.raises(ConfigError, match=key):
        load_config("burgers", overrides=[f"task.{key}=5"])
