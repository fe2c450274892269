"""Fixtures of the virtual-cluster tests: skip where namespaces cannot be made, a unique
cluster per test (its own state folder), always torn down, and a bounded `scidl` call."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


def netns_unavailable() -> str | None:
    """Why a virtual cluster cannot be built here (None: it can)."""
    from scidl.cluster.net import missing_requirements

    msg = missing_requirements()
    if msg:
        return msg
    probe = f"sd-probe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip() or r.returncode}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True, timeout=20)
    return None


@pytest.fixture(scope="session")
def _netns_reason() -> str | None:
    return netns_unavailable()


@pytest.fixture
def cluster_name(_netns_reason, tmp_path, monkeypatch):
    """A unique cluster name with its own state folder; `cluster down` afterwards even
    when the test failed, so nothing is left behind."""
    if _netns_reason:
        pytest.skip(_netns_reason)
    monkeypatch.setenv("SCIDL_CLUSTER_DIR", str(tmp_path / "clusters"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(SRC), str(HERE),
                                                      os.environ.get("PYTHONPATH", "")]))
    name = "t" + uuid.uuid4().hex[:7]
    try:
        yield name
    finally:
        from scidl.cluster import net

        net.down(name)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, check: bool = True) -> Result:
    """``scidl ARGS`` in this process (the `cluster` commands only run ip and tc)."""
    from scidl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    r = Result(code, out.getvalue(), err.getvalue())
    if check:
        assert code == 0, r.stdout + r.stderr
    return r
