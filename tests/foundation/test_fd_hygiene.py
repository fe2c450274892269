"""Project hygiene: the package version from metadata, group-readable results files."""

from __future__ import annotations

import importlib.metadata
import os
import stat

import pytest

import scidl


def test_version_comes_from_package_metadata():
    """Before, ``__version__`` was a hand-typed string next to pyproject's version."""
    assert scidl.__version__ == importlib.metadata.version("scidl")


def test_version_falls_back_when_not_installed(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert scidl.__version__ == "0+unknown"


def test_other_missing_attributes_still_raise():
    with pytest.raises(AttributeError, match="no_such_name"):
        scidl.no_such_name  # noqa: B018
