"""Every package declares its public API with ``__all__``, and every name in it imports."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import scidl

ROOT = Path(scidl.__file__).parent


def _packages() -> list[str]:
    """Every package of the source tree, found on disk (nothing imported to find them)."""
    return [".".join(("scidl", *init.parent.relative_to(ROOT).parts))
            for init in sorted(ROOT.rglob("__init__.py"))]


def _importable(package: str, name: str) -> bool:
    """``from package import name`` works: an attribute, or a submodule of that name."""
    if hasattr(importlib.import_module(package), name):
        return True
    try:
        importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{package}.{name}":
            raise
        return False
    return True


def test_the_scan_finds_the_packages():
    found = _packages()
    assert {"scidl", "scidl.train", "scidl.runtime", "scidl.comm", "scidl.workloads"} <= set(found)


@pytest.mark.parametrize("package", _packages())
def test_package_declares_importable_public_api(package):
    mod = importlib.import_module(package)
    exported = getattr(mod, "__all__", None)
    assert isinstance(exported, list), f"{package}/__init__.py has no __all__ list"
    assert len(set(exported)) == len(exported), f"{package}.__all__ repeats a name"
    missing = [n for n in exported if not _importable(package, n)]
    assert not missing, f"{package}.__all__ names what it cannot import: {missing}"
