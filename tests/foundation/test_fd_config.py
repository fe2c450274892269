import subprocess
import sys

import pytest

from scidl.config import ConfigError, load_config, overrides_to_dict, parse_value


def test_defaults_resolve_with_workload_defaults():
    cfg = load_config("admissions")
    assert cfg.workload == "admissions"
    assert cfg.train.epochs == 100 and cfg.train.batch_size == 40  # workload defaults
    assert cfg.task["hidden"] == [64, 64]  # the task section is filled in completely


def test_overrides_are_typed_and_nested():
    cfg = load_config("admissions", overrides=["train.batch_size=8", "optim.lr=3e-4", "task.hidden=[16,16,16]"])
    assert cfg.train.batch_size == 8
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.task["hidden"] == [16, 16, 16]
    assert overrides_to_dict(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}
    assert parse_value("none") is None and parse_value("1e-3") == pytest.approx(1e-3)


def test_unknown_key_names_key_and_close_choices():
    with pytest.raises(ConfigError) as e:
        load_config("admissions", overrides=["train.batch_sise=8"])
    msg = str(e.value)
    assert "train.batch_sise" in msg and "train.batch_size" in msg


def test_unknown_task_key_lists_task_keys():
    with pytest.raises(ConfigError) as e:
        load_config("admissions", overrides=["task.hiden=[4]"])
    assert "task.hiden" in str(e.value) and "task.hidden" in str(e.value)


def test_invalid_value_names_field_and_constraint():
    with pytest.raises(ConfigError) as e:
        load_config("admissions", overrides=["train.batch_size=0"])
    assert "train.batch_size" in str(e.value) and "greater than or equal to 1" in str(e.value)


def test_unknown_workload_suggests():
    with pytest.raises(ConfigError) as e:
        load_config("admisions")
    assert "admissions" in str(e.value)


def test_yaml_file_and_roundtrip(tmp_path):
    cfg = load_config("digits", overrides=["train.epochs=3"])
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    again = load_config(path=p)
    assert again == cfg
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path=bad)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "scidl", *args], capture_output=True, text=True, timeout=120)


def test_cli_bad_key_exits_nonzero_one_line_no_traceback():
    r = _cli("config", "admissions", "train.lrr=1")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "unknown config key 'train.lrr'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_config_prints_full_yaml():
    import yaml

    r = _cli("config", "digits", "train.epochs=2")
    assert r.returncode == 0, r.stderr
    data = yaml.safe_load(r.stdout)
    assert data["workload"] == "digits" and data["train"]["epochs"] == 2
    assert {"optim", "comm", "dist", "checkpoint", "log", "task"} <= set(data)


def test_cli_workloads_lists_names():
    r = _cli("workloads")
    assert r.returncode == 0, r.stderr
    names = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    assert {"admissions", "digits", "burgers"} <= set(names)


def test_registry_names_are_checked_at_load_time():
    with pytest.raises(ConfigError, match=r"'optim.name'.*choices:.*sgd"):
        load_config("admissions", overrides=["optim.name=sgdd"])
    with pytest.raises(ConfigError, match=r"'comm.strategy'.*choices:.*dense"):
        load_config("admissions", overrides=["comm.strategy=nope"])
