"""Storage fixtures of the search tests: SQLite, journal, and PostgreSQL when a server is given.

The PostgreSQL cases need a server: ``export SCIDL_TEST_POSTGRES_URL="$(scripts/ci_postgres.sh)"``.
"""

from __future__ import annotations

import os

import pytest

PG_ENV = "SCIDL_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", "journal", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "study.db")
    if request.param == "journal":
        return "journal:" + str(tmp_path / "study.log")
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL storage tests need {PG_ENV} (start a local server with "
                    f'`export {PG_ENV}="$(scripts/ci_postgres.sh)"`)')
    return url
