"""Workloads as packages: each registered workload is ``scidl/workloads/<name>/`` with its
docs page ``docs/workloads/<name>.md`` and its tests ``tests/workloads/test_<name>*.py``,
one to one; the library has no research scripts and never sets a matplotlib backend."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import scidl.workloads
from scidl.commands.study import STUDIES
from scidl.workloads import get_workload, workload_names

ROOT = Path(__file__).resolve().parents[2]
PKG = Path(scidl.workloads.__file__).parent
SHARED_TESTS = {"test_all_workloads_integration.py", "test_workload_layout.py", "test_studies.py",
                "test_workload_pictures.py"}


def _builtin() -> list[str]:
    """Workloads shipped with SciDL (not ones registered at run time by users or tests)."""
    return [n for n in workload_names()
            if type(get_workload(n)).__module__.startswith(f"scidl.workloads.{n}.")]


def test_builtin_workloads_are_all_registered_packages():
    names = set(_builtin())
    packages = {d.name for d in PKG.iterdir() if (d / "__init__.py").is_file()} - {"common"}
    assert packages == names
    assert {p.name for p in PKG.glob("*.py")} == {"__init__.py", "base.py", "factory.py", "registry.py"}


def test_each_package_exports_its_workload_and_config():
    for name in _builtin():
        wl = get_workload(name)
        pkg = importlib.import_module(f"scidl.workloads.{name}")
        cls, cfg = type(wl), wl.Config
        assert getattr(pkg, cls.__name__) is cls, name
        assert getattr(pkg, cfg.__name__) is cfg, name
        assert set(pkg.__all__) == {cls.__name__, cfg.__name__}, name


def test_docs_pages_map_one_to_one_to_workloads():
    pages = {p.stem for p in (ROOT / "docs" / "workloads").glob("*.md")}
    assert pages == set(_builtin())


def test_test_files_map_to_workloads():
    names = _builtin()
    files = {p.name for p in (ROOT / "tests" / "workloads").glob("test_*.py")}
    for name in names:
        assert f"test_{name}.py" in files, name
    pattern = re.compile(rf"test_({'|'.join(sorted(names, key=len, reverse=True))})(_\w+)?\.py")
    strays = {f for f in files - SHARED_TESTS if not pattern.fullmatch(f)}
    assert not strays


def test_studies_live_in_their_workload_package():
    for name, (module, _) in STUDIES.items():
        assert name in workload_names() and module == f"scidl.workloads.{name}.study"
        mod = importlib.import_module(module)
        assert callable(mod.add_arguments) and callable(mod.run)
        assert not hasattr(mod, "main")  # no `python -m` script left in the package


def test_library_workloads_never_touch_matplotlib_global_state():
    for path in PKG.rglob("*.py"):
        text = path.read_text()
        assert "matplotlib.use(" not in text, path
        assert "pyplot" not in text, path
