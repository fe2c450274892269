"""``scripts/ci_postgres.sh`` (run as root by CI): a fresh private folder, no symlink followed.

Before, the cluster lived in the fixed ``/tmp/scidl-postgres``: anyone could plant a
symlink there first, and root then created, ``chown``-ed and wrote through it. Now the
folder comes from ``mktemp -d`` (random name, 0700) and the state file that lets
``stop`` find it is replaced, never written through.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from scidl.search.storage import open_storage

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ci_postgres.sh"
HAVE_PG = bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(os.geteuid() != 0 or not HAVE_PG or not shutil.which("runuser"),
                    reason="needs root and installed PostgreSQL server binaries (as in CI)")
@pytest.mark.timeout(180)
def test_ci_postgres_uses_a_private_folder_and_follows_no_planted_symlink(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="scidl-pgtest-", dir="/tmp"))
    base.chmod(0o711)  # the postgres user must reach its folder inside
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    (base / "scidl-postgres").symlink_to(victim_dir)  # the old fixed path, planted
    victim_file = tmp_path / "victim.txt"
    victim_file.write_text("untouched\n")
    state = tmp_path / "state"
    state.symlink_to(victim_file)  # planted at the state file too
    env = {**os.environ, "TMPDIR": str(base), "SCIDL_PG_STATE": str(state),
           "SCIDL_PG_PORT": str(_free_port())}

    def script(*args):
        return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                              env=env, timeout=120)

    try:
        start = script()
        assert start.returncode == 0, start.stderr
        url = start.stdout.strip()
        assert url.startswith("postgresql://scidl:") and "\n" not in url
        assert not list(victim_dir.iterdir()) and victim_dir.stat().st_uid == 0
        assert victim_file.read_text() == "untouched\n"
        assert state.is_file() and not state.is_symlink()
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        data = Path(state.read_text().splitlines()[0])
        assert data.parent == base and data.name.startswith("scidl-postgres.")
        info = data.lstat()
        assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid != 0  # owned by the postgres user
        open_storage(url).get_all_studies()  # the URL works
        again = script()
        assert again.returncode == 0 and again.stdout.strip() == url  # idempotent
        stop = script("stop")
        assert stop.returncode == 0, stop.stderr
        assert not data.exists() and not state.exists()
    finally:
        if state.is_file() and not state.is_symlink():
            script("stop")
        shutil.rmtree(base, ignore_errors=True)
