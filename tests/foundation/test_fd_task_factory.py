"""A user's task factory named as ``module:attr`` wherever a workload name goes."""

import json
import subprocess
import sys
import textwrap

import pytest
import yaml

import scidl
from scidl.cli import main
from scidl.config import ConfigError, load_config

USER_MODULE = textwrap.dedent('''
    """My science model."""
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    import scidl


    class Settings(scidl.WorkloadConfig):
        hidden: int = 7


    def make_task(cfg: Settings, ctx: scidl.BuildContext) -> scidl.Task:
        g = torch.Generator().manual_seed(ctx.seed)
        x = torch.randn(64, 3, generator=g)
        y = x.sum(1, keepdim=True)
        model = nn.Sequential(nn.Linear(3, cfg.hidden), nn.Tanh(), nn.Linear(cfg.hidden, 1))

        def loss(m, b):
            return nn.functional.mse_loss(m(b[0]), b[1])

        data = TensorDataset(x, y)
        return scidl.Task(model=model, train_data=data, val_data=data, loss=loss,
                          evaluate=lambda m, d: {"mse": loss(m, d.tensors).item()},
                          headline="mse")


    def plain(ctx):
        return make_task(Settings(), ctx)


    class Mine(scidl.Workload):
        name = "mine"
        Config = Settings

        def build(self, cfg, ctx):
            return make_task(cfg, ctx)


    def not_a_task(ctx):
        return 3


    NOT_CALLABLE = 5
''')


def n_params(hidden: int) -> int:
    return 3 * hidden + hidden + hidden + 1


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``scidlusermod<N>.py`` in a fresh current directory (unique name per test)."""
    name = f"scidlusermod{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])
    yield name
    sys.modules.pop(name, None)


def test_module_attr_resolves_with_its_own_name_and_typed_task_settings(user_module):
    cfg = load_config(f"{user_module}:make_task", overrides=["task.hidden=5"])
    assert cfg.workload == f"{user_module}:make_task"
    assert cfg.workload_label() == user_module and cfg.task == {"hidden": 5}
    assert load_config(f"{user_module}:plain").workload_label() == f"{user_module}.plain"
    assert load_config(f"{user_module}:Mine").workload_label() == "mine"
    assert load_config(f"{user_module}.py:make_task").workload_label() == user_module
    task = scidl.workloads.get_workload(f"{user_module}:make_task").build(
        cfg.task_config(), scidl.BuildContext())
    assert sum(p.numel() for p in task.model.parameters()) == n_params(5)


def test_python_api_takes_the_factory_itself(user_module):
    load_config(f"{user_module}:make_task")  # imports the module from the current folder
    mod = sys.modules[user_module]
    cfg = load_config(mod.make_task)
    assert cfg.workload == f"{user_module}:make_task" and cfg.workload_label() == user_module


def test_unknown_task_key_of_a_factory_is_one_line(user_module):
    with pytest.raises(ConfigError, match=r"unknown config key 'task.hiden'.*task.hidden"):
        load_config(f"{user_module}:make_task", overrides=["task.hiden=3"])
    with pytest.raises(ConfigError, match=r"'task' takes no keys"):
        load_config(f"{user_module}:plain", overrides=["task.x=3"])


@pytest.mark.parametrize("ref,message", [
    ("nosuchmodule_xyz:make_task", "module 'nosuchmodule_xyz' not found"),
    ("{mod}:missing", "has no attribute 'missing'"),
    ("{mod}:NOT_CALLABLE", "is not a function returning a scidl.Task"),
    ("nosuchfile.py:make_task", "file nosuchfile.py not found"),
])
def test_bad_reference_is_one_line_exit_2(user_module, capsys, ref, message):
    ref = ref.format(mod=user_module)
    for cmd in (["config", ref], ["train", ref, "--max-steps", "1"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err


def test_factory_returning_no_task_is_one_line_exit_2(user_module, tmp_path, capsys):
    code = main(["train", f"{user_module}:not_a_task", "--max-steps", "1", "--quiet",
                 f"log.root={tmp_path / 'runs'}", "log.tensorboard=false"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.splitlines()[-1].endswith("returned int, not a scidl.Task"), err
    assert not list((tmp_path / "runs").rglob("config.yaml"))  # no run folder left behind


@pytest.mark.timeout(300)
def test_cli_trains_a_factory_on_two_processes_under_its_own_name_and_predict_profiles_it(
        user_module, tmp_path, capsys):
    r = subprocess.run(
        [sys.executable, "-m", "scidl", "train", f"{user_module}:make_task", "--nproc", "2",
         "--max-steps", "3", "--quiet", "task.hidden=6", "train.batch_size=8",
         "log.tensorboard=false", "dist.threads_per_proc=1", f"log.root={tmp_path / 'runs'}"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{user_module}: mse =" in r.stdout and "admissions" not in r.stdout
    (run_dir,) = (tmp_path / "runs" / user_module).iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["workload"] == user_module and summary["world_size"] == 2
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["workload"] == \
        f"{user_module}:make_task"
    # scidl predict rebuilds the user's model from the run folder (not admissions')
    assert main(["predict", "--profile", str(run_dir), "--hardware", "summit", "--ranks", "1,2",
                 "--compute-s", "0.01", "--out", str(tmp_path / "pred")]) == 0
    capsys.readouterr()
    profile = json.loads((tmp_path / "pred" / "prediction.json").read_text())["profile"]
    assert profile["grad_bytes"] == 4 * n_params(6)


def test_unknown_workload_name_points_to_module_attr(capsys):
    assert main(["config", "burgerz"]) == 2
    err = capsys.readouterr().err
    assert "did you mean burgers" in err and "task factory as module:attr" in err
