"""scidl.registry.Registry: lazy built-ins, registration, did-you-mean, entry points."""

import subprocess
import sys
import types
from importlib.metadata import EntryPoint

import pytest

import scidl.registry as reg
from scidl.registry import Registry, RegistryError

MOD = "scidl_fake_registry_target"


@pytest.fixture
def fake_module(monkeypatch):
    """A module ``MOD`` with two attributes; records whether it was imported."""
    mod = types.ModuleType(MOD)
    mod.Alpha = type("Alpha", (), {})
    mod.Beta = type("Beta", (), {})
    monkeypatch.setitem(sys.modules, MOD, mod)
    return mod


def _plugins(monkeypatch, *eps):
    """Make ``entry_points(group=G)`` return ``eps`` for G == 'scidl.test'."""
    monkeypatch.setattr(reg, "entry_points",
                        lambda group: [e for e in eps if e.group == group])


def test_names_do_not_import_lazy_entries():
    r = Registry("thing", {"a": "scidl_not_imported_by_names:Missing"})
    assert r.names() == ["a"] and "a" in r and "b" not in r
    assert "scidl_not_imported_by_names" not in sys.modules
    with pytest.raises(RegistryError, match="cannot be loaded from built-in"):
        r.get("a")  # only get() imports (and here the module does not exist)


def test_lazy_entry_loads_on_get(fake_module):
    r = Registry("thing", {"alpha": f"{MOD}:Alpha"})
    assert r.get("alpha") is fake_module.Alpha


def test_unknown_name_suggests_and_lists_choices():
    r = Registry("comm.strategy", {"topk": "x:Y", "dense": "x:Z"})
    with pytest.raises(RegistryError) as e:
        r.get("topkk")
    msg = str(e.value)
    assert msg == "unknown comm.strategy 'topkk' (did you mean topk?); choices: dense, topk"
    assert isinstance(e.value, KeyError)  # the CLI maps KeyError to exit 2, one line
    with pytest.raises(RegistryError, match="choices: dense, topk$"):
        r.check("zzz")


def test_register_as_call_and_decorator_and_duplicates(fake_module):
    r: Registry[type] = Registry("thing", {"alpha": f"{MOD}:Alpha"})

    @r.register("gamma")
    class Gamma:
        pass

    assert r.register("beta", fake_module.Beta) is fake_module.Beta
    assert r.get("gamma") is Gamma and r.names() == ["alpha", "beta", "gamma"]
    r.register("beta", fake_module.Beta)  # the same object again: a no-op
    with pytest.raises(ValueError, match="'beta' is already registered"):
        r.register("beta", Gamma)
    with pytest.raises(ValueError, match="'alpha' is already registered .*built-in"):
        r.register("alpha", Gamma)  # a built-in is not silently shadowed
    with pytest.raises(ValueError, match="non-empty"):
        r.register("", Gamma)


def test_entry_points_are_listed_lazily_and_loaded(monkeypatch, fake_module):
    calls = []

    def fake_entry_points(group):
        calls.append(group)
        return [EntryPoint("beta", f"{MOD}:Beta", "scidl.test"),
                EntryPoint("alpha", f"{MOD}:Alpha", "scidl.test")]

    monkeypatch.setattr(reg, "entry_points", fake_entry_points)
    r = Registry("thing", {"alpha": f"{MOD}:Beta"}, group="scidl.test")
    assert calls == []  # nothing read at construction
    with pytest.warns(UserWarning, match="entry point alpha .* is ignored"):
        names = r.names()
    assert names == ["alpha", "beta"] and calls == ["scidl.test"]
    assert r.get("beta") is fake_module.Beta
    assert r.get("alpha") is fake_module.Beta  # the built-in wins over the plugin
    r.names()
    assert calls == ["scidl.test"]  # read once


def test_broken_entry_point_names_the_entry_point(monkeypatch):
    _plugins(monkeypatch, EntryPoint("bad", "scidl_no_such_plugin:Thing", "scidl.test"))
    r = Registry("optim.name", group="scidl.test")
    assert r.names() == ["bad"]
    with pytest.raises(RegistryError) as e:
        r.get("bad")
    msg = str(e.value)
    assert "optim.name 'bad'" in msg and "entry point bad = scidl_no_such_plugin:Thing" in msg
    assert "scidl.test" in msg and "ModuleNotFoundError" in msg and "\n" not in msg


def test_builtin_registries_take_plugins_from_their_groups():
    from scidl.comm.registry import STRATEGIES
    from scidl.optim.registry import OPTIMIZERS
    from scidl.search.base import SEARCHERS
    from scidl.search.objective import OBJECTIVES
    from scidl.workloads.registry import WORKLOADS

    regs = (STRATEGIES, OPTIMIZERS, SEARCHERS, WORKLOADS, OBJECTIVES)
    assert all(isinstance(r, Registry) for r in regs)
    assert {r.group for r in regs} == {"scidl.comm", "scidl.optim", "scidl.search",
                                       "scidl.workloads", "scidl.search_objectives"}


def test_comm_plugin_is_a_valid_comm_strategy(monkeypatch):
    """An installed strategy (entry point) is accepted by the config and built by name."""
    import scidl.comm.registry as creg
    from scidl.comm import CommConfig, build_strategy
    from scidl.comm.dense import DenseAllreduce

    _plugins(monkeypatch, EntryPoint("mydense", "scidl.comm.dense:DenseAllreduce", "scidl.comm"))
    fresh = Registry("comm.strategy", creg.STRATEGIES._paths, group="scidl.comm")
    monkeypatch.setattr(creg, "STRATEGIES", fresh)
    cfg = CommConfig(strategy="mydense")
    assert isinstance(build_strategy(cfg), DenseAllreduce)


def test_comm_config_validates_names_without_importing_strategies():
    """CommConfig asks the registry (no cycle through comm/base.py, no strategy import)."""
    import ast

    import scidl.comm.config as cc

    tree = ast.parse(open(cc.__file__).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "scidl.comm.registry" in imported and "scidl.comm.base" not in imported
    code = ("import sys; from scidl.comm.config import CommConfig; "
            "CommConfig(strategy='topk', lag_inner='powersgd'); "
            "print('scidl.comm.topk' in sys.modules, 'scidl.comm.powersgd' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]
