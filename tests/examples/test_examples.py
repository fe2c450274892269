"""The examples in examples/ run as documented (tiny sizes, a few steps, 2 processes)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scidl.train.checkpoint import latest_good_checkpoint

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
QUIET = ["--quiet", "log.tensorboard=false", "dist.threads_per_proc=1"]


def _run(cmd, cwd, timeout=240):
    r = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, cwd=cwd,
                       timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def _only_run(root: Path, name: str) -> Path:
    (run_dir,) = (root / name).iterdir()
    return run_dir


@pytest.mark.timeout(300)
def test_hf_gpt2_trains_by_module_name_on_two_processes(tmp_path):
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed (pip install -e '.[dev]')")
    r = _run(["-m", "scidl", "train", "examples.hf_gpt2:make_task", "--nproc", "2",
              "--max-steps", "3", "task.seq_len=8", "task.n_train=64", "train.batch_size=4",
              f"log.root={tmp_path}", *QUIET], cwd=ROOT)
    assert "hf_gpt2: loss =" in r.stdout
    assert "transformers" not in r.stderr and "warn" not in r.stderr.lower(), r.stderr
    summary = json.loads((_only_run(tmp_path, "hf_gpt2") / "summary.json").read_text())
    assert summary["workload"] == "hf_gpt2" and summary["steps"] == 3
    assert summary["world_size"] == 2 and summary["headline_value"] < 10


@pytest.mark.timeout(300)
def test_frozen_backbone_keeps_its_weights_and_trains_the_head(tmp_path):
    r = _run(["-m", "scidl", "train", f"{EXAMPLES / 'frozen_backbone.py'}:make_task",
              "--nproc", "2", "--max-steps", "4", "train.batch_size=16", f"log.root={tmp_path}",
              *QUIET], cwd=tmp_path)
    assert "frozen_backbone: accuracy =" in r.stdout
    assert "got no gradient" not in r.stderr, r.stderr  # DDP needs no unused-parameter search
    run_dir = _only_run(tmp_path, "frozen_backbone")
    trained = latest_good_checkpoint(run_dir / "checkpoints").load()["model"]
    from scidl.config import load_config
    from scidl.runtime.seed import seed_everything
    from scidl.workloads import get_workload
    from scidl.workloads.base import BuildContext

    cfg = load_config(f"{EXAMPLES / 'frozen_backbone.py'}:make_task")
    seed_everything(cfg.train.seed)  # as the trainer builds it
    fresh = get_workload(cfg.workload).build(cfg.task_config(), BuildContext()).model.state_dict()
    for k, v in fresh.items():
        same = torch.equal(trained[k], v)
        assert same if k.startswith("backbone.") else not same, k


@pytest.mark.timeout(200)
def test_own_loop_with_scidl_setup_under_torchrun(tmp_path):
    r = _run(["-m", "torch.distributed.run", "--nproc-per-node", "2",
              str(EXAMPLES / "own_loop.py"), "2"], cwd=tmp_path, timeout=150)
    lines = [x for x in r.stdout.splitlines() if x.startswith("epoch")]
    assert lines == [x for x in lines if x.endswith("on 2 process(es)")] and len(lines) == 2
    first, last = (float(x.split("loss ")[1].split()[0]) for x in (lines[0], lines[-1]))
    assert last < first


@pytest.mark.timeout(200)
def test_byo_model_script_files_the_run_under_its_own_name(tmp_path):
    r = _run([str(EXAMPLES / "byo_model.py"), f"log.root={tmp_path}", "train.epochs=1",
              "log.progress=false", "dist.threads_per_proc=1"], cwd=tmp_path, timeout=150)
    run_dir = _only_run(tmp_path, "byo_model")
    assert str(run_dir) in r.stdout and not (tmp_path / "admissions").exists()
    assert json.loads((run_dir / "summary.json").read_text())["workload"] == "byo_model"


@pytest.mark.timeout(300)
def test_lightning_module_trains_through_scidl_with_its_validation_logs_as_metrics(tmp_path):
    pytest.importorskip("lightning")
    import scidl

    spec = importlib.util.spec_from_file_location("lightning_module", EXAMPLES / "lightning_module.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = scidl.load_config(f"{EXAMPLES / 'lightning_module.py'}:make_task", overrides=[
        "train.max_steps=40", "optim.lr=3e-3", "log.tensorboard=false", "log.progress=false",
        f"log.root={tmp_path}", "dist.nproc=1"])
    result = scidl.run(cfg)
    s = result.summary
    assert s["headline"] == "val_rel_l2" and set(s["final_eval"]) == {"val_loss", "val_rel_l2"}
    # the metrics are the module's own validation_step on the final weights
    model = mod.Heat1D()
    state = torch.load(latest_good_checkpoint(result.run_dir / "checkpoints").path / "state.pt",
                       weights_only=False)["model"]
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    data = mod.HeatData(cfg.train.seed)
    data.setup()
    x, u = data.val.tensors
    with torch.no_grad():
        pred = model.net(x)
    assert s["final_eval"]["val_loss"] == pytest.approx(torch.nn.functional.mse_loss(pred, u).item(), rel=1e-5)
    assert s["final_eval"]["val_rel_l2"] < 0.9  # it trained: an untrained net is near 1


def test_lightning_adapter_refuses_manual_optimisation_and_a_step_without_loss():
    L = pytest.importorskip("lightning")
    from scidl.adapters.lightning import TrainingStep, lightning_task
    from scidl.config import ConfigError

    class Manual(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

    with pytest.raises(ConfigError, match="manual optimisation"):
        lightning_task(Manual(), train_data=[0])

    class NoLoss(L.LightningModule):
        def training_step(self, batch, batch_idx):
            return {"acc": 1.0}

    with pytest.raises(ConfigError, match="not a loss tensor"):
        TrainingStep(NoLoss())(torch.zeros(1))
