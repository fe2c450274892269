"""scripts/floor_pins.py: every `>=` floor of pyproject.toml becomes an `==` pin for
`make test-floor` (torch left out: it comes from constraints.txt)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("floor_pins", ROOT / "scripts" / "floor_pins.py")
assert _spec and _spec.loader
floor_pins = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(floor_pins)


def test_pins_of_a_project():
    project = {"project": {"dependencies": ["torch>=2.4", "numpy>=1.24", "optuna >= 4.3"],
                           "optional-dependencies": {"dev": ["pytest>=7", "numpy>=1.26"],
                                                     "other": ["h5py>=3.8"]}}}
    assert floor_pins.floor_pins(project) == ["numpy==1.24", "optuna==4.3", "pytest==7"]


@pytest.mark.parametrize("req", ["numpy", "numpy<2", "numpy==1.24"])
def test_a_requirement_without_a_floor_is_an_error(req):
    with pytest.raises(ValueError, match="floor"):
        floor_pins.floor_pin(req)


def test_every_declared_dependency_has_a_floor():
    with (ROOT / "pyproject.toml").open("rb") as f:
        pins = floor_pins.floor_pins(floor_pins.tomllib.load(f))
    assert "optuna==4.3" in pins and not any(p.startswith("torch") for p in pins)
